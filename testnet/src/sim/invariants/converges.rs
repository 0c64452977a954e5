//! Liveness: membership converges once faults stop.
//!
//! SWIM (Das, Gupta, Motivala 2002) §4.1 spreads every membership change to
//! every member by infection-style dissemination, and anti-entropy (the
//! push-pull state exchange of HashiCorp memberlist, `Sync` here) repairs
//! what gossip missed, a healed partition included. So once the network is
//! whole again and every node runs, every live node must see every other
//! live node alive, within a bound (the settle phase of a run).

use std::time::Duration;

use crate::sim::views::Views;

use super::Violation;
use super::healthy_not_dead::ms;

/// The invariant's name.
pub const NAME: &str = "converges";
/// Where it comes from.
pub const SOURCE: &str = "SWIM (Das et al. 2002) §4.1 / memberlist push-pull anti-entropy: \
membership converges once faults stop — every live node sees every other live node alive";

/// Checks convergence at `now`, `since` the faults stopped.
pub fn check(
    views: &Views,
    since: Duration,
    now: Duration,
    name: impl Fn(usize) -> String,
) -> Result<(), Violation> {
    if views.converged() {
        return Ok(());
    }
    let shown: Vec<String> = views
        .disagreements(5)
        .into_iter()
        .map(|(o, m, seen)| format!("{} sees {} as {:?}", name(o), name(m), seen))
        .collect();
    Err(Violation {
        invariant: NAME,
        source: SOURCE,
        at_ms: ms(now),
        details: format!(
            "{:?} after faults stopped, {} of {} pairs of live nodes disagree: {}",
            now.saturating_sub(since),
            views.disagreement_count(),
            views.live_count() * views.live_count().saturating_sub(1),
            shown.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::views::Seen;

    #[test]
    fn one_stale_belief_is_a_violation_naming_the_pair() {
        let mut v = Views::new(3);
        for i in 0..3 {
            v.start(i);
            for m in 0..3 {
                v.set(i, m, Seen::Alive);
            }
        }
        assert!(
            check(&v, Duration::ZERO, Duration::from_secs(1), |i| i
                .to_string())
            .is_ok()
        );
        v.set(2, 0, Seen::Dead);
        let err = check(&v, Duration::ZERO, Duration::from_secs(1), |i| {
            i.to_string()
        })
        .unwrap_err();
        assert!(err.details.contains("2 sees 0 as Dead"), "{}", err.details);
    }
}
