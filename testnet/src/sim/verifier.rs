//! One signature verifier for every replica in the process. A thousand
//! simulated nodes receive the same signed records; ed25519 verification
//! (~50 µs) of each copy would dominate the run. The first sight of a
//! record is verified for real; copies equal to it, signature and signed
//! fields alike, are accepted from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_protocol::id::NodeId;
use baton_protocol::map::{self, Verifier};
use baton_protocol::session::Record;

/// Records remembered before the memory starts over (a few per session
/// and change; forgetting only costs a real verification again).
const MAX_REMEMBERED: usize = 1 << 17;

/// What the verifier did, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifierStats {
    /// Real ed25519 verifications.
    pub verified: u64,
    /// Copies accepted from memory.
    pub remembered: u64,
}

#[derive(Debug, Default)]
struct Memory {
    /// Verified records by signature: a hit must also equal the record in
    /// every signed field, so it stands for the same signed bytes.
    records: HashMap<Vec<u8>, Record>,
    /// Verified messages (performance summaries) by signature, with the
    /// signer and the message, all of which a hit must equal.
    messages: HashMap<Vec<u8>, (NodeId, Vec<u8>)>,
    stats: VerifierStats,
}

/// A verifier that remembers what it verified, and a handle on its counts.
#[derive(Debug, Clone, Default)]
pub struct Memoized(Arc<Mutex<Memory>>);

impl Memoized {
    /// A verifier with an empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The verifier to put in every node's `map::Config`.
    pub fn verifier(&self) -> Verifier {
        let memory = Arc::clone(&self.0);
        let messages = Arc::clone(&self.0);
        Verifier::new(move |record: &Record| {
            let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
            if m.records.get(&record.signature) == Some(record) {
                m.stats.remembered += 1;
                return true;
            }
            m.stats.verified += 1;
            let ok = map::verify(record);
            if ok {
                if m.records.len() >= MAX_REMEMBERED {
                    m.records.clear();
                }
                m.records.insert(record.signature.clone(), record.clone());
            }
            ok
        })
        .with_signed(move |signer: &NodeId, signature: &[u8], message: &[u8]| {
            let mut m = messages.lock().unwrap_or_else(|e| e.into_inner());
            if m.messages
                .get(signature)
                .is_some_and(|(s, msg)| s == signer && msg.as_slice() == message)
            {
                m.stats.remembered += 1;
                return true;
            }
            m.stats.verified += 1;
            let ok = map::verify_signed(signer, signature, message);
            if ok {
                if m.messages.len() >= MAX_REMEMBERED {
                    m.messages.clear();
                }
                m.messages
                    .insert(signature.to_vec(), (signer.clone(), message.to_vec()));
            }
            ok
        })
    }

    /// What it did so far.
    pub fn stats(&self) -> VerifierStats {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_protocol::map::LocalKey;
    use baton_protocol::session::{SessionState, Signer};

    fn record(key: &LocalKey) -> Record {
        let mut r = Record {
            id: "s1".into(),
            service: "rtp-audio".into(),
            params: Default::default(),
            client: "198.19.0.1:5004".into(),
            location: "198.19.0.0/24".into(),
            primary: key.id().clone(),
            backups: Vec::new(),
            epoch: 1,
            version: 0,
            state: SessionState::Active,
            started_ms: 1,
            updated_ms: 1,
            reason: "open".into(),
            writer: key.id().clone(),
            signature: Vec::new(),
        };
        r.sign(key);
        r
    }

    #[test]
    fn copies_are_verified_once_and_forgeries_never_pass() {
        let m = Memoized::new();
        let v = m.verifier();
        let key = LocalKey::from_seed([3; 32]);
        let good = record(&key);
        assert!(v.verify(&good) && v.verify(&good.clone()));
        assert_eq!(
            m.stats(),
            VerifierStats {
                verified: 1,
                remembered: 1
            }
        );
        // The remembered signature on other content is checked for real.
        let mut forged = good.clone();
        forged.epoch = 9;
        assert!(!v.verify(&forged));
        assert_eq!(m.stats().verified, 2);
    }
}
