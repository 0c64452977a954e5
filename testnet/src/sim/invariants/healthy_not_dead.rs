//! Accuracy: a healthy, reachable member is not declared dead.
//!
//! Lifeguard (Dadgar, Phillips, Currey 2018) exists for this property: its
//! local health awareness (LHA-Probe, LHA-Suspicion) and buddy system keep
//! slow or message-starved members from declaring healthy ones dead; SWIM
//! (Das, Gupta, Motivala 2002) §4.2 gives a suspected member the chance to
//! refute before it is declared dead.
//!
//! "Healthy" is judged per declaration: a member that is crashed, paused,
//! cut from the declaring node, or cut from most of the group may be
//! declared dead; so may an incarnation it held during a fault that ended
//! less than the grace period ago (see [`Health`]). Everything else is a
//! false positive.

use std::time::Duration;

use crate::sim::health::Health;
use crate::sim::network::Network;

use super::Violation;

/// The invariant's name.
pub const NAME: &str = "healthy_not_dead";
/// Where it comes from.
pub const SOURCE: &str = "Lifeguard (Dadgar et al. 2018) / SWIM (Das et al. 2002) §4.2: \
a healthy, reachable member is not declared dead";

/// Whether a declaration about a member was to be expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The member was faulty, or the declaration is a late echo of a fault.
    Expected(&'static str),
    /// The member was healthy and reachable.
    FalsePositive,
}

/// Judges `observer`'s declaration (or suspicion) of `member` at
/// `incarnation`, made at `now`.
pub fn judge(
    health: &Health,
    net: &Network,
    observer: usize,
    member: usize,
    incarnation: u32,
    now: Duration,
) -> Verdict {
    if !health.is_running(member) && !health.is_paused(member) {
        return Verdict::Expected("member not running");
    }
    if health.is_paused(member) {
        return Verdict::Expected("member paused");
    }
    if net.is_cut_between(observer, member) {
        return Verdict::Expected("declared across a cut");
    }
    if net.cut_degree(member) as usize * 2 > net.len().saturating_sub(1) {
        return Verdict::Expected("member cut from most of the group");
    }
    if health.tainted(member, incarnation, now) {
        return Verdict::Expected("incarnation held during a recent fault");
    }
    Verdict::FalsePositive
}

/// The violation for a false positive: `observer` marked `member` dead on
/// the word of `declarer` (itself, or the node whose notice reached it).
pub fn violation(
    observer: &str,
    member: &str,
    incarnation: u32,
    at: Duration,
    declarer: &str,
) -> Violation {
    Violation {
        invariant: NAME,
        source: SOURCE,
        at_ms: ms(at),
        details: format!(
            "node {observer} marked healthy node {member} dead (incarnation {incarnation}, \
             declared by {declarer})"
        ),
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    crate::sim::stats::round(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::network::Latency;

    const S: Duration = Duration::from_secs(1);

    fn running(n: usize) -> Health {
        let mut h = Health::new(n, 5 * S);
        for i in 0..n {
            h.set_running(i, true, 0, Duration::ZERO);
        }
        h
    }

    #[test]
    fn declaring_a_healthy_member_is_a_false_positive() {
        let h = running(4);
        let net = Network::new(4, 1, Latency::lan(), 0.1);
        assert_eq!(judge(&h, &net, 0, 1, 0, 10 * S), Verdict::FalsePositive);
    }

    #[test]
    fn crashed_and_paused_members_may_be_declared() {
        let mut h = running(4);
        let net = Network::new(4, 1, Latency::lan(), 0.1);
        h.set_running(1, false, 0, S);
        h.set_paused(2, true, 0, S);
        assert!(matches!(
            judge(&h, &net, 0, 1, 0, 2 * S),
            Verdict::Expected(_)
        ));
        assert!(matches!(
            judge(&h, &net, 0, 2, 0, 2 * S),
            Verdict::Expected(_)
        ));
    }

    #[test]
    fn declarations_across_a_cut_are_expected_but_not_inside_a_side() {
        let h = running(5);
        let mut net = Network::new(5, 1, Latency::lan(), 0.1);
        net.partition(&[vec![0, 1, 2], vec![3, 4]]);
        assert!(matches!(judge(&h, &net, 0, 3, 0, S), Verdict::Expected(_)));
        assert!(matches!(judge(&h, &net, 3, 0, 0, S), Verdict::Expected(_)));
        assert_eq!(judge(&h, &net, 0, 1, 0, S), Verdict::FalsePositive);
    }

    #[test]
    fn a_refuted_incarnation_is_not_excused_by_an_old_fault() {
        let mut h = running(3);
        let net = Network::new(3, 1, Latency::lan(), 0.1);
        h.set_paused(1, true, 2, S);
        h.set_paused(1, false, 2, 2 * S);
        assert!(matches!(
            judge(&h, &net, 0, 1, 2, 3 * S),
            Verdict::Expected(_)
        ));
        assert_eq!(judge(&h, &net, 0, 1, 3, 3 * S), Verdict::FalsePositive);
    }
}
