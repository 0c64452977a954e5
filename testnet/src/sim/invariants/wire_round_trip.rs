//! Every message a node sends decodes at its receiver.
//!
//! The codec's contract (`protocol/src/wire.rs`, `map::SyncMessage`, and
//! the round-trip property tests the conventions ask for): `decode` accepts
//! whatever `encode` produced, within the size caps and the limits. A
//! message that a correct peer cannot decode is lost on every attempt,
//! silently, so the simulator watches each node's count of authentic
//! datagrams and stream messages it could not decode
//! (`Stats.drops.undecodable`) and of application payloads it could not
//! read (`Stats.bad_payloads`), and fails the run when one grows: every
//! peer in a simulation is correct.

use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;

/// The invariant's name.
pub const NAME: &str = "wire_round_trip";
/// Where it comes from.
pub const SOURCE: &str = "protocol/src/wire.rs and map::SyncMessage codec contract: decode \
accepts what encode produced (size caps and limits included)";

/// Checks node `node`'s counts of undecodable messages and unreadable
/// payloads against those seen before.
pub fn check(
    node: &str,
    before: (u64, u64),
    now_counts: (u64, u64),
    at: Duration,
) -> Option<Violation> {
    if now_counts.0 <= before.0 && now_counts.1 <= before.1 {
        return None;
    }
    Some(Violation {
        invariant: NAME,
        source: SOURCE,
        at_ms: ms(at),
        details: format!(
            "{node} could not decode {} message(s) and {} application payload(s) from its peers",
            now_counts.0.saturating_sub(before.0),
            now_counts.1.saturating_sub(before.1)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_that_does_not_decode_is_a_violation() {
        let at = Duration::from_secs(1);
        assert!(check("n1", (2, 0), (2, 0), at).is_none());
        let v = check("n1", (2, 0), (3, 0), at).unwrap();
        assert_eq!(v.invariant, NAME);
        assert!(v.details.contains("decode 1 message"), "{}", v.details);
        assert!(check("n1", (0, 0), (0, 1), at).is_some());
    }
}
