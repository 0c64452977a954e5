//! The chain rule's memory: what a replica remembers of each session's
//! history, so that it adopts a new version only when the version it
//! supersedes is one the replica can vouch for, and the bounded pool of
//! versions waiting for the history they cite. See the map's "Chain rule".

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Delta;
use crate::NodeId;
use crate::session::Record;

/// The most fingerprints of versions remembered per session.
pub const MAX_KNOWN: usize = 64;
/// The most `(epoch, primary)` pairs remembered per session.
pub const MAX_PRIMARIES: usize = 16;
/// The most epoch openers (claims, handovers) kept per session, besides
/// its creation.
pub const MAX_OPENERS: usize = 16;
/// The most versions waiting for their history, per session.
pub const MAX_PENDING_PER_SESSION: usize = 8;
/// The most versions waiting for their history, in all.
pub const MAX_PENDING: usize = 512;
/// How long a version waits for its history before [`super::Map::gc`]
/// drops it, in milliseconds.
pub const PENDING_TTL_MS: u64 = 60_000;

/// The first 16 bytes of a record's fingerprint: 128 bits, so that nobody
/// can make a second record with the short fingerprint of a known one.
pub(super) type Short = [u8; 16];

pub(super) fn short(fingerprint: &[u8; 32]) -> Short {
    let mut out = [0u8; 16];
    out.copy_from_slice(&fingerprint[..16]);
    out
}

/// How well a delta shows how its record's primary became primary of its
/// epoch, to a replica that knows the epoch before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Opening {
    /// It does not (a creation, or an update citing its own primary).
    No,
    /// The first update after a handover: it carries the handover as its
    /// credential, which links by the handover rule of [`History::links`].
    /// Kept when the handover's own delta is not at hand.
    Standin,
    /// The claim or handover that opened the epoch, with the version of
    /// the epoch before it superseded.
    Opener,
}

impl Opening {
    pub(super) fn of(delta: &Delta) -> Opening {
        let record = &delta.record;
        match &delta.prev {
            Some(prev) if record.version == 0 && prev.epoch < record.epoch => Opening::Opener,
            Some(prev)
                if record.version > 0
                    && prev.epoch == record.epoch
                    && prev.version == 0
                    && prev.writer != prev.primary =>
            {
                Opening::Standin
            }
            _ => Opening::No,
        }
    }
}

/// What one replica knows of one session's history, all bounded. Small
/// sorted vectors rather than trees: a simulator holds a thousand replicas
/// of thousands of sessions, most with two or three versions to remember.
#[derive(Debug, Clone, Default)]
pub(super) struct History {
    /// The creation, once seen: served to peers, and the proof that the
    /// entry is rooted rather than trusted on first use.
    root: Option<Arc<Delta>>,
    /// Per `(epoch, primary)` of epochs 2 and up, the delta that shows how
    /// that node became primary of that epoch ([`Opening`]), sorted by that
    /// pair: with the root, the chain a peer that missed epochs needs to
    /// link the current version.
    openers: Vec<Arc<Delta>>,
    /// Short fingerprints of the versions this replica accepted or
    /// verified, oldest first.
    known: Vec<Short>,
    /// The `(epoch, primary)` of those versions, sorted: a version written
    /// by the primary of an epoch listed here is that primary's to write.
    primaries: Vec<(u64, NodeId)>,
}

/// The pair an opener is filed under.
fn pair(delta: &Delta) -> (u64, &NodeId) {
    (delta.record.epoch, &delta.record.primary)
}

impl History {
    /// The creation, if this replica has it.
    pub(super) fn root(&self) -> Option<&Arc<Delta>> {
        self.root.as_ref()
    }

    /// Whether `delta` would show this replica's peers more of how its
    /// epoch (or the session) began than what it keeps: worth verifying
    /// even when its version is known.
    pub(super) fn wants(&self, delta: &Delta) -> bool {
        if delta.prev.is_none() {
            return self.root.is_none();
        }
        let opening = Opening::of(delta);
        opening != Opening::No
            && self
                .opener(pair(delta))
                .is_none_or(|at| Opening::of(&self.openers[at]) < opening)
    }

    /// Where the opener filed under `key` is.
    fn opener(&self, key: (u64, &NodeId)) -> Option<usize> {
        self.openers.binary_search_by(|d| pair(d).cmp(&key)).ok()
    }

    fn is_primary(&self, epoch: u64, primary: &NodeId) -> bool {
        self.primaries
            .binary_search_by(|(e, p)| (*e, p).cmp(&(epoch, primary)))
            .is_ok()
    }

    /// Whether this replica accepted or verified the version with this
    /// short fingerprint.
    pub(super) fn knows(&self, fingerprint: &Short) -> bool {
        self.known.contains(fingerprint)
    }

    /// Whether `prev`, the version a delta supersedes, is one this replica
    /// can vouch for: one it knows, or one written by the known primary of
    /// its epoch (an update or a claim of that primary's), or the first
    /// version of an epoch written by the known primary of the epoch before
    /// (a handover). Anything else may have been made up by its writer.
    pub(super) fn links(&self, prev: &Record, prev_fingerprint: &Short) -> bool {
        if self.knows(prev_fingerprint) {
            return true;
        }
        if prev.writer == prev.primary {
            return self.is_primary(prev.epoch, &prev.primary);
        }
        prev.version == 0
            && prev
                .epoch
                .checked_sub(1)
                .is_some_and(|epoch| self.is_primary(epoch, &prev.writer))
    }

    /// The epoch 1 primary this replica knows of other than `creator`, if
    /// any: a creation by `creator` would contradict it.
    pub(super) fn other_creator(&self, creator: &NodeId) -> Option<&NodeId> {
        self.primaries
            .iter()
            .take_while(|(epoch, _)| *epoch <= 1)
            .find(|(_, primary)| primary != creator)
            .map(|(_, primary)| primary)
    }

    /// Remembers a delta this replica adopted or verified, whose record has
    /// short fingerprint `record_fp` and predecessor `prev_fp`. `current`
    /// is the session's current version (after adoption, if adopted): the
    /// openers on its chain are the last to be forgotten.
    pub(super) fn learn(
        &mut self,
        delta: &Arc<Delta>,
        record_fp: Short,
        prev_fp: Option<Short>,
        current: &Record,
    ) {
        let record = &delta.record;
        self.remember(record_fp);
        self.note_primary(record.epoch, &record.primary);
        if let (Some(prev), Some(fp)) = (&delta.prev, prev_fp) {
            self.remember(fp);
            self.note_primary(prev.epoch, &prev.primary);
        }
        if delta.prev.is_none() {
            if record.version == 0 && self.root.is_none() {
                self.root = Some(Arc::clone(delta));
            }
            return;
        }
        if self.wants(delta) {
            match self.openers.binary_search_by(|d| pair(d).cmp(&pair(delta))) {
                Ok(at) => self.openers[at] = Arc::clone(delta),
                Err(at) => self.openers.insert(at, Arc::clone(delta)),
            }
            if self.openers.len() > MAX_OPENERS {
                self.forget_an_opener(current);
            }
        }
    }

    fn remember(&mut self, fingerprint: Short) {
        if self.knows(&fingerprint) {
            return;
        }
        if self.known.len() == MAX_KNOWN {
            self.known.remove(0);
        }
        self.known.push(fingerprint);
    }

    fn note_primary(&mut self, epoch: u64, primary: &NodeId) {
        let Err(at) = self
            .primaries
            .binary_search_by(|(e, p)| (*e, p).cmp(&(epoch, primary)))
        else {
            return;
        };
        self.primaries.insert(at, (epoch, primary.clone()));
        if self.primaries.len() > MAX_PRIMARIES {
            // The oldest epoch goes: the current version's pair is the
            // greatest one (it outranks every version linked here).
            self.primaries.remove(0);
        }
    }

    /// Drops the lowest opener that is not on the current version's chain
    /// (or the lowest of all when the chain fills the cap).
    fn forget_an_opener(&mut self, current: &Record) {
        let mut chain = vec![false; self.openers.len()];
        let mut key = (current.epoch, &current.primary);
        // Each step goes down an epoch, so this ends.
        while let Some(at) = self.opener(key) {
            chain[at] = true;
            let opener = &self.openers[at];
            let Some(prev) = &opener.prev else { break };
            key = match Opening::of(opener) {
                Opening::Opener => (prev.epoch, &prev.primary),
                // The handover's writer was primary of the epoch before.
                Opening::Standin => match key.0.checked_sub(1) {
                    Some(epoch) => (epoch, &prev.writer),
                    None => break,
                },
                Opening::No => break,
            };
        }
        let victim = chain.iter().position(|on| !on).unwrap_or(0);
        self.openers.remove(victim);
    }

    /// What a peer needs besides the current version to link it: the root,
    /// then the openers by epoch.
    pub(super) fn chain(&self) -> impl Iterator<Item = &Arc<Delta>> {
        self.root.iter().chain(self.openers.iter())
    }
}

/// Versions that passed the one-hop check but cite a predecessor this
/// replica cannot vouch for yet, kept a while in case the history they cite
/// arrives (an honest delta overtaking its predecessor). Bounded per session
/// and in all; the oldest goes first.
#[derive(Debug, Clone, Default)]
pub(super) struct Pool {
    sessions: BTreeMap<String, Vec<Waiting>>,
    /// Arrival number -> session: the order in which they are dropped.
    order: BTreeMap<u64, String>,
    next: u64,
}

#[derive(Debug, Clone)]
struct Waiting {
    delta: Delta,
    prev_fp: Short,
    seq: u64,
    since_ms: u64,
}

impl Pool {
    /// How many versions wait, in all.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// The versions of `id` that wait, oldest first.
    pub(super) fn of(&self, id: &str) -> impl Iterator<Item = &Delta> {
        self.sessions
            .get(id)
            .into_iter()
            .flatten()
            .map(|w| &w.delta)
    }

    /// Keeps a checked delta whose predecessor has short fingerprint
    /// `prev_fp` (a copy of one already waiting is ignored, and keeps its
    /// arrival time).
    pub(super) fn add(&mut self, delta: Delta, prev_fp: Short, now_ms: u64) {
        let id = delta.record.id.clone();
        let waiting = self.sessions.entry(id.clone()).or_default();
        if waiting.iter().any(|w| w.delta == delta) {
            return;
        }
        if waiting.len() >= MAX_PENDING_PER_SESSION {
            let oldest = waiting.remove(0);
            self.order.remove(&oldest.seq);
        }
        let seq = self.next;
        self.next += 1;
        waiting.push(Waiting {
            delta,
            prev_fp,
            seq,
            since_ms: now_ms,
        });
        self.order.insert(seq, id);
        while self.order.len() > MAX_PENDING {
            let Some((seq, id)) = self.order.pop_first() else {
                break;
            };
            self.remove(&id, |w| w.seq == seq);
        }
    }

    /// Takes out the first waiting version of `id` that `history` now links.
    pub(super) fn take_linked(&mut self, id: &str, history: &History) -> Option<(Delta, Short)> {
        let waiting = self.sessions.get_mut(id)?;
        let at = waiting.iter().position(|w| match &w.delta.prev {
            Some(prev) => history.links(prev, &w.prev_fp),
            None => false,
        })?;
        let taken = waiting.remove(at);
        if waiting.is_empty() {
            self.sessions.remove(id);
        }
        self.order.remove(&taken.seq);
        Some((taken.delta, taken.prev_fp))
    }

    /// Forgets every version of `id`.
    pub(super) fn drop_session(&mut self, id: &str) {
        if let Some(waiting) = self.sessions.remove(id) {
            for w in waiting {
                self.order.remove(&w.seq);
            }
        }
    }

    /// Drops what has waited [`PENDING_TTL_MS`] or longer; returns how many.
    pub(super) fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.len();
        let order = &mut self.order;
        self.sessions.retain(|_, waiting| {
            waiting.retain(|w| {
                let keep = now_ms < w.since_ms.saturating_add(PENDING_TTL_MS);
                if !keep {
                    order.remove(&w.seq);
                }
                keep
            });
            !waiting.is_empty()
        });
        before - self.len()
    }

    fn remove(&mut self, id: &str, which: impl Fn(&Waiting) -> bool) {
        if let Some(waiting) = self.sessions.get_mut(id) {
            waiting.retain(|w| !which(w));
            if waiting.is_empty() {
                self.sessions.remove(id);
            }
        }
    }
}
