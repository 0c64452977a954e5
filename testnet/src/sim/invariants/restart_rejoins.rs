//! A restarted member is alive again in every view within a bound.
//!
//! A restarted process comes back with the same id but incarnation 0, so the
//! group ignores its announcements until it learns of its own death notice
//! and refutes it with a higher incarnation: SWIM (Das, Gupta, Motivala
//! 2002) §4.2's refutation, which HashiCorp memberlist also uses for a
//! restarted node (`refute`). The bound is 5 s by default.

use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;

/// The invariant's name.
pub const NAME: &str = "restart_rejoins";
/// Where it comes from.
pub const SOURCE: &str = "SWIM (Das et al. 2002) §4.2 refutation / memberlist refute: a restarted \
member (same id, incarnation 0) is alive again in every live member's view within a bound";

#[derive(Debug, Clone, Copy)]
struct Pending {
    node: usize,
    life: u32,
    since: Duration,
}

/// Restarted nodes not yet alive everywhere, and how long rejoining took.
#[derive(Debug, Clone)]
pub struct Rejoins {
    bound: Duration,
    pending: Vec<Pending>,
    samples: Vec<Duration>,
}

impl Rejoins {
    /// Restarted nodes must be alive in every view within `bound`.
    pub fn new(bound: Duration) -> Self {
        Rejoins {
            bound,
            pending: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// The bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// `node` restarted (its `life`-th process) at `now`.
    pub fn on_restart(&mut self, node: usize, life: u32, now: Duration) {
        self.pending.retain(|p| p.node != node);
        self.pending.push(Pending {
            node,
            life,
            since: now,
        });
    }

    /// Whether `node` restarted and is not yet alive everywhere.
    pub fn is_pending(&self, node: usize) -> bool {
        self.pending.iter().any(|p| p.node == node)
    }

    /// `node` stopped again before rejoining: no verdict.
    pub fn on_stop(&mut self, node: usize) {
        self.pending.retain(|p| p.node != node);
    }

    /// Call when something changed that may complete rejoins: `alive_everywhere`
    /// says whether a node is seen alive by every other live node.
    pub fn poll(&mut self, now: Duration, alive_everywhere: impl Fn(usize) -> bool) {
        let samples = &mut self.samples;
        self.pending.retain(|p| {
            if alive_everywhere(p.node) {
                samples.push(now.saturating_sub(p.since));
                false
            } else {
                true
            }
        });
    }

    /// Whether anything is pending (so that [`poll`](Self::poll) may be skipped).
    pub fn any_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Checks the bound for `node`'s `life`-th process at `now`.
    pub fn check_deadline(
        &mut self,
        node: usize,
        life: u32,
        now: Duration,
        missing: usize,
        name: &str,
    ) -> Option<Violation> {
        let at = self
            .pending
            .iter()
            .position(|p| p.node == node && p.life == life && now >= p.since + self.bound)?;
        let p = self.pending.remove(at);
        Some(Violation {
            invariant: NAME,
            source: SOURCE,
            at_ms: ms(now),
            details: format!(
                "node {name} restarted at {:.1} ms and is still not alive for {missing} live \
                 node(s) {:?} later",
                ms(p.since),
                self.bound
            ),
        })
    }

    /// How long restarted nodes took to be alive in every view.
    pub fn samples(&self) -> &[Duration] {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn rejoin_time_is_measured_and_the_bound_enforced() {
        let mut r = Rejoins::new(5 * S);
        r.on_restart(1, 1, 10 * S);
        r.on_restart(2, 1, 10 * S);
        r.poll(11 * S, |n| n == 1);
        assert_eq!(r.samples(), [S]);
        assert!(r.check_deadline(2, 1, 14 * S, 3, "2").is_none());
        let v = r.check_deadline(2, 1, 15 * S, 3, "2").unwrap();
        assert!(v.details.contains("for 3 live node(s)"), "{}", v.details);
        assert!(!r.any_pending());
    }
}
