//! The datagram plane's sealing: SWIM messages travel as single UDP
//! datagrams, each encrypted and authenticated with ChaCha20-Poly1305 under
//! a key of the sending direction of one pair of nodes.
//!
//! Keys come from the admission handshake (`peering`), which runs inside a
//! libp2p connection (Noise-authenticated, encrypted): both sides contribute
//! 32 fresh random bytes and HKDF-SHA256 binds them to the overlay, the
//! network key and both peer ids. A datagram is
//!
//! ```text
//! receiver's key index (24 bits BE) | counter (24 bits BE) | ciphertext | 16-byte tag
//! ```
//!
//! with the 6-byte header as associated data and the counter as the nonce.
//! Three bytes each are plenty (an index among a node's few thousand keys;
//! 16 million datagrams, nine days of probing, before the pair agrees new
//! keys) and save two bytes on each of the twenty datagrams a node sends a
//! second.
//! The receiver looks the index up, rejects counters its sliding window has
//! seen or left behind (RFC 6479, as WireGuard and IPsec do), then checks
//! the tag; only then does the window move. Threat model and rationale:
//! `docs/protocol.md`, "The datagram plane".

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::NodeId;

/// The largest datagram a node sends or accepts: under the IPv6 minimum
/// MTU with room for tunnels, so that no path fragments it.
pub const MAX_DATAGRAM: usize = 1200;

/// Bytes of the header (key index and counter, 3 each).
pub const HEADER_LEN: usize = 6;

/// Key indices are below this (24 bits).
pub const INDEX_LIMIT: u32 = 1 << 24;

/// Counters are below this (24 bits): a sealer stops there, and the pair
/// must agree new keys.
pub const COUNTER_LIMIT: u32 = 1 << 24;

/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// The largest plaintext (encoded message) that fits one datagram.
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;

/// Counters a receiver remembers behind the highest one it accepted.
pub const WINDOW: u32 = 64;

/// Bytes each side contributes to the key material.
pub const NONCE_LEN: usize = 32;

const KDF_SALT: &[u8] = b"baton datagram plane v1";

/// The two direction keys of a pair, derived from an admission handshake.
pub struct Keys {
    /// Seals what the initiator of the handshake sends.
    pub initiator_to_responder: [u8; 32],
    /// Seals what the responder sends.
    pub responder_to_initiator: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<secret>)")
    }
}

/// What a handshake binds its keys to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The overlay's name.
    pub overlay: &'a str,
    /// The overlay's network key, if it has one.
    pub network_key: Option<&'a [u8]>,
    /// The node that started the handshake.
    pub initiator: &'a NodeId,
    /// The node that answered.
    pub responder: &'a NodeId,
    /// The initiator's fresh random bytes.
    pub initiator_nonce: &'a [u8],
    /// The responder's fresh random bytes.
    pub responder_nonce: &'a [u8],
}

/// HKDF-SHA256: both nonces (and the network key) are the input key
/// material; the overlay and both ids, each length-prefixed, the info. A
/// key pair is therefore fresh per handshake and useless to any other pair
/// or overlay.
pub fn derive(binding: &Binding<'_>) -> Keys {
    let mut ikm = Vec::with_capacity(2 * NONCE_LEN + 64);
    for part in [
        binding.initiator_nonce,
        binding.responder_nonce,
        binding.network_key.unwrap_or_default(),
    ] {
        ikm.extend_from_slice(&(part.len() as u32).to_be_bytes());
        ikm.extend_from_slice(part);
    }
    let mut info = Vec::with_capacity(160);
    for part in [
        binding.overlay.as_bytes(),
        binding.initiator.as_bytes(),
        binding.responder.as_bytes(),
    ] {
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part);
    }
    let kdf = Hkdf::<Sha256>::new(Some(KDF_SALT), &ikm);
    let mut okm = [0u8; 64];
    kdf.expand(&info, &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 output length");
    let mut keys = Keys {
        initiator_to_responder: [0; 32],
        responder_to_initiator: [0; 32],
    };
    keys.initiator_to_responder.copy_from_slice(&okm[..32]);
    keys.responder_to_initiator.copy_from_slice(&okm[32..]);
    keys
}

fn nonce(counter: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&u64::from(counter).to_le_bytes());
    Nonce::from(n)
}

/// Seals datagrams towards one peer.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// The peer's index for the matching [`Opener`].
    remote_index: u32,
    next: u32,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("remote_index", &self.remote_index)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `key`, addressing the peer's opener `remote_index`
    /// (below [`INDEX_LIMIT`]).
    pub fn new(key: &[u8; 32], remote_index: u32) -> Self {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            remote_index: remote_index % INDEX_LIMIT,
            next: 0,
        }
    }

    /// Seals `plaintext` into a datagram, or `None` when the counter is
    /// exhausted ([`COUNTER_LIMIT`] datagrams: the pair must handshake
    /// again).
    pub fn seal(&mut self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let counter = self.next;
        if counter >= COUNTER_LIMIT {
            return None;
        }
        self.next += 1;
        let mut header = [0u8; HEADER_LEN];
        header[..3].copy_from_slice(&self.remote_index.to_be_bytes()[1..]);
        header[3..].copy_from_slice(&counter.to_be_bytes()[1..]);
        let sealed = self
            .cipher
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: plaintext,
                    aad: &header,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Datagrams sealed so far.
    pub fn sent(&self) -> u32 {
        self.next
    }
}

/// The key index a datagram is addressed to, and its counter; `None` when
/// it is too short to hold a header and a tag.
pub fn header(datagram: &[u8]) -> Option<(u32, u32)> {
    if datagram.len() < HEADER_LEN + TAG_LEN {
        return None;
    }
    let word = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    Some((word(&datagram[..3]), word(&datagram[3..6])))
}

/// Why a datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than a header and a tag, or longer than [`MAX_DATAGRAM`].
    BadSize,
    /// A counter already seen, or too far behind the window.
    Replayed,
    /// The tag does not verify: forged, corrupted, or sealed under another
    /// key.
    BadTag,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::BadSize => "datagram of impossible size",
            OpenError::Replayed => "replayed or too old counter",
            OpenError::BadTag => "authentication tag does not verify",
        })
    }
}

impl std::error::Error for OpenError {}

/// Opens datagrams from one peer.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    window: ReplayWindow,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener with `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Opener {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            window: ReplayWindow::default(),
        }
    }

    /// Checks and decrypts a datagram addressed to this opener. The replay
    /// window moves only once the tag has verified, so forged datagrams can
    /// neither replay nor push genuine ones out of the window.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(OpenError::BadSize);
        }
        let (_, counter) = header(datagram).ok_or(OpenError::BadSize)?;
        if !self.window.fresh(counter) {
            return Err(OpenError::Replayed);
        }
        let plain = self
            .cipher
            .decrypt(
                &nonce(counter),
                Payload {
                    msg: &datagram[HEADER_LEN..],
                    aad: &datagram[..HEADER_LEN],
                },
            )
            .map_err(|_| OpenError::BadTag)?;
        self.window.accept(counter);
        Ok(plain)
    }
}

/// A sliding window over datagram counters (RFC 6479's bitmap, one word):
/// the highest counter accepted, and which of the [`WINDOW`] before it were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest counter accepted, once one was.
    highest: Option<u32>,
    /// Bit `i` set: counter `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `counter` could be accepted: newer than the highest, or
    /// within the window and not seen.
    pub fn fresh(&self, counter: u32) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if counter > highest {
            return true;
        }
        let behind = highest - counter;
        behind < WINDOW && self.seen & (1u64 << behind) == 0
    }

    /// Records `counter` as accepted (after [`fresh`](Self::fresh) said yes
    /// and the datagram authenticated).
    pub fn accept(&mut self, counter: u32) {
        match self.highest {
            None => {
                self.highest = Some(counter);
                self.seen = 1;
            }
            Some(highest) if counter > highest => {
                let shift = counter - highest;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(counter);
            }
            Some(highest) => {
                let behind = highest - counter;
                if behind < WINDOW {
                    self.seen |= 1u64 << behind;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        derive(&Binding {
            overlay: "demo",
            network_key: Some(b"secret"),
            initiator: &NodeId::synthetic(1),
            responder: &NodeId::synthetic(2),
            initiator_nonce: &[1; 32],
            responder_nonce: &[2; 32],
        })
    }

    #[test]
    fn a_sealed_datagram_opens_once() {
        let k = keys();
        let mut sealer = Sealer::new(&k.initiator_to_responder, 77);
        let mut opener = Opener::new(&k.initiator_to_responder);
        let d = sealer.seal(b"ping").unwrap();
        assert_eq!(d.len(), HEADER_LEN + 4 + TAG_LEN);
        assert_eq!(header(&d), Some((77, 0)));
        assert_eq!(opener.open(&d).unwrap(), b"ping");
        assert_eq!(opener.open(&d), Err(OpenError::Replayed));
    }

    /// MAX_PLAINTEXT is exactly what fills a datagram: the largest message
    /// a node sends is one the receiver accepts, and one byte more is not.
    #[test]
    fn the_largest_plaintext_fills_the_largest_datagram_and_opens() {
        let k = keys();
        let mut sealer = Sealer::new(&k.initiator_to_responder, 1);
        let mut opener = Opener::new(&k.initiator_to_responder);
        let full = sealer.seal(&[0xab; MAX_PLAINTEXT]).unwrap();
        assert_eq!(full.len(), MAX_DATAGRAM);
        assert_eq!(opener.open(&full).unwrap().len(), MAX_PLAINTEXT);
        let over = sealer.seal(&[0xab; MAX_PLAINTEXT + 1]).unwrap();
        assert_eq!(opener.open(&over), Err(OpenError::BadSize));
    }

    #[test]
    fn keys_differ_per_direction_binding_and_nonce() {
        let k = keys();
        assert_ne!(k.initiator_to_responder, k.responder_to_initiator);
        let other_overlay = derive(&Binding {
            overlay: "other",
            network_key: Some(b"secret"),
            initiator: &NodeId::synthetic(1),
            responder: &NodeId::synthetic(2),
            initiator_nonce: &[1; 32],
            responder_nonce: &[2; 32],
        });
        assert_ne!(
            k.initiator_to_responder,
            other_overlay.initiator_to_responder
        );
        let swapped = derive(&Binding {
            overlay: "demo",
            network_key: Some(b"secret"),
            initiator: &NodeId::synthetic(2),
            responder: &NodeId::synthetic(1),
            initiator_nonce: &[1; 32],
            responder_nonce: &[2; 32],
        });
        assert_ne!(k.initiator_to_responder, swapped.initiator_to_responder);
        let no_key = derive(&Binding {
            overlay: "demo",
            network_key: None,
            initiator: &NodeId::synthetic(1),
            responder: &NodeId::synthetic(2),
            initiator_nonce: &[1; 32],
            responder_nonce: &[2; 32],
        });
        assert_ne!(k.initiator_to_responder, no_key.initiator_to_responder);
    }

    #[test]
    fn forged_wrong_key_and_corrupted_datagrams_fail_the_tag() {
        let k = keys();
        let mut sealer = Sealer::new(&k.initiator_to_responder, 1);
        let mut wrong = Opener::new(&k.responder_to_initiator);
        let d = sealer.seal(b"hello").unwrap();
        assert_eq!(wrong.open(&d), Err(OpenError::BadTag));
        let mut opener = Opener::new(&k.initiator_to_responder);
        for at in 0..d.len() {
            let mut bad = d.clone();
            bad[at] ^= 1;
            // Flipping the counter may land on a fresh counter: still a bad tag.
            assert!(opener.open(&bad).is_err(), "flip at {at} accepted");
        }
        // Forgeries did not move the window: the genuine one still opens.
        assert_eq!(opener.open(&d).unwrap(), b"hello");
        assert_eq!(opener.open(&[0; 10]), Err(OpenError::BadSize));
        assert_eq!(
            opener.open(&vec![0; MAX_DATAGRAM + 1]),
            Err(OpenError::BadSize)
        );
    }

    #[test]
    fn reordered_datagrams_within_the_window_open() {
        let k = keys();
        let mut sealer = Sealer::new(&k.responder_to_initiator, 3);
        let mut opener = Opener::new(&k.responder_to_initiator);
        let ds: Vec<Vec<u8>> = (0..5).map(|i| sealer.seal(&[i]).unwrap()).collect();
        for i in [4, 0, 2, 1, 3] {
            assert_eq!(opener.open(&ds[i]).unwrap(), vec![i as u8]);
        }
        for d in &ds {
            assert_eq!(opener.open(d), Err(OpenError::Replayed));
        }
    }

    #[test]
    fn the_replay_window_edges() {
        let mut w = ReplayWindow::default();
        assert!(w.fresh(0) && w.fresh(u32::MAX));
        w.accept(100);
        assert!(!w.fresh(100));
        // The oldest counter still inside the window, and the first outside.
        assert!(w.fresh(100 - (WINDOW - 1)));
        assert!(!w.fresh(100 - WINDOW));
        w.accept(100 - (WINDOW - 1));
        assert!(!w.fresh(100 - (WINDOW - 1)));
        // Moving by exactly WINDOW forgets everything behind.
        w.accept(100 + WINDOW);
        assert!(!w.fresh(100));
        assert!(w.fresh(101));
        assert!(!w.fresh(100 + WINDOW));
        // A jump by one keeps the previous highest as seen.
        w.accept(100 + WINDOW + 1);
        assert!(!w.fresh(100 + WINDOW));
        assert!(w.fresh(100 + WINDOW - 1));
        // A jump far beyond the window clears the bitmap.
        let last = COUNTER_LIMIT - 1;
        w.accept(last);
        assert!(!w.fresh(last) && w.fresh(last - 1));
        assert!(!w.fresh(last - WINDOW));
    }

    #[test]
    fn sent_counts_the_datagrams_sealed_and_not_a_refused_one() {
        let k = keys();
        let mut sealer = Sealer::new(&k.initiator_to_responder, 1);
        assert_eq!(sealer.sent(), 0);
        for _ in 0..3 {
            sealer.seal(b"x").unwrap();
        }
        assert_eq!(sealer.sent(), 3);
        sealer.next = COUNTER_LIMIT - 1;
        assert!(sealer.seal(b"x").is_some());
        assert!(sealer.seal(b"x").is_none());
        assert_eq!(sealer.sent(), COUNTER_LIMIT);
    }

    #[test]
    fn an_exhausted_counter_stops_sealing() {
        let k = keys();
        let mut sealer = Sealer::new(&k.initiator_to_responder, 1);
        sealer.next = COUNTER_LIMIT - 1;
        assert!(sealer.seal(b"x").is_some());
        assert!(sealer.seal(b"x").is_none());
    }
}
