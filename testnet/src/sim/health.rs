//! Which nodes the simulator has made faulty, and when, so that the accuracy
//! invariant can tell a false "dead" from a late echo of a real fault.
//!
//! A node is faulty while it is not running (not started yet, or crashed),
//! paused, or cut from at least one other node. When a faulty period ends,
//! the incarnations the node held during it stay "tainted" for a grace
//! period: a suspicion raised during the fault may still time out, and its
//! death notice may still be spreading, shortly after the fault is over.
//! The node refutes it with a higher incarnation, which is not tainted.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
struct NodeHealth {
    started: bool,
    running: bool,
    paused: bool,
    cut: bool,
    /// Highest incarnation held during the current faulty period.
    max_incarnation: u32,
    /// Recent faulty periods: `(end, highest incarnation held)`.
    recent: Vec<(Duration, u32)>,
}

impl NodeHealth {
    fn faulty(&self) -> bool {
        !self.running || self.paused || self.cut
    }
}

/// The fault history of every node.
#[derive(Debug, Clone)]
pub struct Health {
    nodes: Vec<NodeHealth>,
    grace: Duration,
}

impl Health {
    /// `n` nodes, none running yet. Incarnations held during a fault stay
    /// tainted for `grace` after it ends.
    pub fn new(n: usize, grace: Duration) -> Self {
        Health {
            nodes: vec![NodeHealth::default(); n],
            grace,
        }
    }

    /// How long incarnations held during a fault stay tainted after it.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Whether node `i` runs, unpaused, with every link up.
    pub fn is_healthy(&self, i: usize) -> bool {
        !self.nodes[i].faulty()
    }

    /// Whether node `i`'s process exists and is not paused.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].running && !self.nodes[i].paused
    }

    /// Whether node `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Node `i` started or stopped; `incarnation` is the one it has (had).
    pub fn set_running(&mut self, i: usize, running: bool, incarnation: u32, now: Duration) {
        let h = &mut self.nodes[i];
        if running && !h.started {
            // Nobody can hold a notice about a node that never ran.
            h.started = true;
            h.running = true;
            return;
        }
        self.change(i, incarnation, now, |h| h.running = running);
    }

    /// Node `i` was paused or resumed.
    pub fn set_paused(&mut self, i: usize, paused: bool, incarnation: u32, now: Duration) {
        self.change(i, incarnation, now, |h| h.paused = paused);
    }

    /// Node `i` got or lost cut links.
    pub fn set_cut(&mut self, i: usize, cut: bool, incarnation: u32, now: Duration) {
        self.change(i, incarnation, now, |h| h.cut = cut);
    }

    /// Node `i` now holds `incarnation` (it refuted something).
    pub fn note_incarnation(&mut self, i: usize, incarnation: u32) {
        let h = &mut self.nodes[i];
        if h.faulty() {
            h.max_incarnation = h.max_incarnation.max(incarnation);
        }
    }

    fn change(
        &mut self,
        i: usize,
        incarnation: u32,
        now: Duration,
        f: impl FnOnce(&mut NodeHealth),
    ) {
        let grace = self.grace;
        let h = &mut self.nodes[i];
        let was_faulty = h.faulty();
        if was_faulty {
            h.max_incarnation = h.max_incarnation.max(incarnation);
        }
        f(h);
        match (was_faulty, h.faulty()) {
            (false, true) => h.max_incarnation = incarnation,
            (true, false) => {
                h.recent.retain(|(end, _)| *end + grace >= now);
                h.recent.push((now, h.max_incarnation));
            }
            _ => {}
        }
    }

    /// Whether a notice about node `i` at `incarnation`, seen at `now`, may
    /// stem from a fault that is over: the node held that incarnation (or a
    /// later one) during a faulty period that ended at most the grace ago.
    pub fn tainted(&self, i: usize, incarnation: u32, now: Duration) -> bool {
        self.nodes[i]
            .recent
            .iter()
            .any(|&(end, max)| end + self.grace >= now && incarnation <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn incarnations_of_a_fault_stay_tainted_for_the_grace_only() {
        let mut h = Health::new(2, 5 * S);
        h.set_running(0, true, 0, Duration::ZERO);
        assert!(h.is_healthy(0));
        h.set_paused(0, true, 3, 10 * S);
        assert!(!h.is_healthy(0) && h.is_paused(0));
        h.set_paused(0, false, 3, 12 * S);
        assert!(
            h.tainted(0, 3, 13 * S),
            "the paused incarnation, just after"
        );
        assert!(
            !h.tainted(0, 4, 13 * S),
            "the refuting incarnation is clean"
        );
        assert!(!h.tainted(0, 3, 18 * S), "and the grace expires");
    }

    #[test]
    fn the_first_start_is_no_fault() {
        let mut h = Health::new(1, 5 * S);
        h.set_running(0, true, 0, S);
        assert!(h.is_healthy(0));
        assert!(!h.tainted(0, 0, 2 * S));
    }

    #[test]
    fn a_crash_taints_the_old_life_after_the_restart() {
        let mut h = Health::new(1, 5 * S);
        h.set_running(0, true, 0, Duration::ZERO);
        h.set_running(0, false, 7, 10 * S);
        h.set_running(0, true, 0, 12 * S);
        assert!(h.tainted(0, 7, 13 * S), "death notices about the old life");
        assert!(!h.tainted(0, 8, 13 * S), "the refutation after the restart");
    }
}
