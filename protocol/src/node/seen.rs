//! Session-map deltas this node has already taken in, named by a digest of
//! their bytes. Gossip brings each delta to every node many times (the
//! eager push of every node that learns it, then its piggybacked
//! retransmissions); a copy whose bytes were taken in before is dropped
//! before it is decoded, verified and compared with the map again.
//!
//! Only deltas that were news here are remembered: a copy of one is stale
//! by construction, whereas a delta refused or found stale now (one that
//! cites a version not seen yet, or a credential this node cannot link yet)
//! may be taken when it comes again. The set is bounded: past
//! [`CAPACITY`] digests the oldest is forgotten, and a copy of it is then
//! handled in full, as it would be without this set.

use std::collections::{BTreeSet, VecDeque};

use sha2::{Digest as _, Sha256};

/// Digests remembered, about 64 bytes each with the index.
pub(crate) const CAPACITY: usize = 8192;

/// A payload's name: the first 16 bytes of its SHA-256 (a peer cannot make
/// a delta it did not write collide with one it has not seen).
pub(crate) type Name = [u8; 16];

/// The name of `payload`.
pub(crate) fn name(payload: &[u8]) -> Name {
    let hash = Sha256::digest(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

/// The bounded set of names, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    names: BTreeSet<Name>,
    order: VecDeque<Name>,
}

impl Seen {
    /// Whether `name` was taken in (and not forgotten yet).
    pub(crate) fn contains(&self, name: &Name) -> bool {
        self.names.contains(name)
    }

    /// Remembers `name`, forgetting the oldest past [`CAPACITY`].
    pub(crate) fn insert(&mut self, name: Name) {
        if !self.names.insert(name) {
            return;
        }
        self.order.push_back(name);
        if self.order.len() > CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.names.remove(&oldest);
        }
    }

    /// Names held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_remembered_up_to_the_capacity_and_the_oldest_go_first() {
        let mut seen = Seen::default();
        let first = name(b"delta 0");
        seen.insert(first);
        seen.insert(first);
        assert_eq!(seen.len(), 1);
        for i in 1..CAPACITY as u32 {
            seen.insert(name(&i.to_be_bytes()));
        }
        assert_eq!(seen.len(), CAPACITY);
        assert!(seen.contains(&first));
        seen.insert(name(b"one more"));
        assert_eq!(seen.len(), CAPACITY);
        assert!(!seen.contains(&first), "the oldest is forgotten");
        assert!(seen.contains(&name(b"one more")));
        assert_ne!(name(b"a"), name(b"b"));
    }
}
