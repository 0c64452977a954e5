//! A graceful transfer never leaves its session without an owner.
//!
//! Raman & Katz §4 (fast session transfer when a client is served badly)
//! and DESIGN.md ("transfer (make-before-break) when client reports show
//! poor service"; "gap during a performance-triggered (graceful) transfer:
//! 0 packets lost"): the old primary keeps hosting a handed-over session
//! until the new primary confirms it started. So when a node stops a
//! session because it handed it over, another live node must host it at
//! that moment; if none does, the client's stream has a gap.

use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;

/// The invariant's name.
pub const NAME: &str = "transfer_keeps_owner";
/// Where it comes from.
pub const SOURCE: &str = "Raman & Katz §4 (session transfer) / DESIGN.md: make-before-break \
transfer, 0 packets lost — a handed-over session is hosted elsewhere when its old primary stops";

/// Whether a stop's reason (the engine's `Action::Stop`) ends a handover
/// this node wrote.
pub fn is_graceful(reason: &str) -> bool {
    reason.starts_with("handed over")
}

/// Checks a stop of `session` by `node` at `now`, after which `owners`
/// live nodes still host it.
pub fn check(
    session: &str,
    node: &str,
    reason: &str,
    owners: usize,
    now: Duration,
) -> Option<Violation> {
    if !is_graceful(reason) || owners > 0 {
        return None;
    }
    Some(Violation {
        invariant: NAME,
        source: SOURCE,
        at_ms: ms(now),
        details: format!(
            "{node} stopped session {session} ({reason}) while no other live node hosted it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_handover_that_leaves_nobody_hosting_is_flagged() {
        let v = check("s", "n1", "handed over (no confirmation in time)", 0, S).unwrap();
        assert_eq!(v.invariant, NAME);
        assert!(v.details.contains("n1 stopped session s"), "{}", v.details);
    }

    #[test]
    fn a_confirmed_handover_or_another_stop_passes() {
        assert!(check("s", "n1", "handed over: the new primary confirmed", 1, S).is_none());
        assert!(check("s", "n1", "closed", 0, S).is_none());
        assert!(check("s", "n1", "moved to n2 (takeover)", 0, S).is_none());
    }
}
