//! What every node believes of every other, rebuilt from the events the
//! state machines emit, with O(1) upkeep per event.
//!
//! Convergence ("every live node sees every other live node alive") is a
//! counter comparison, so the simulator can test it after every event
//! instead of scanning an `n × n` table.

use baton_protocol::swim::State;

/// One node's belief about another, one byte per pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Seen {
    /// Not in its membership table.
    Unknown,
    /// Alive.
    Alive,
    /// Suspect.
    Suspect,
    /// Dead.
    Dead,
    /// Left.
    Left,
}

impl From<State> for Seen {
    fn from(state: State) -> Self {
        match state {
            State::Alive => Seen::Alive,
            State::Suspect => Seen::Suspect,
            State::Dead => Seen::Dead,
            State::Left => Seen::Left,
        }
    }
}

impl Seen {
    /// Alive or suspect: the member is still probed.
    pub fn is_active(self) -> bool {
        matches!(self, Seen::Alive | Seen::Suspect)
    }
}

/// The `n × n` table of beliefs, plus counters that make convergence O(1).
#[derive(Debug, Clone)]
pub struct Views {
    n: usize,
    seen: Vec<Seen>,
    live: Vec<bool>,
    live_count: usize,
    /// For each member, how many live nodes see it alive.
    alive_in: Vec<usize>,
    /// Pairs `(observer, member)` of distinct live nodes where the observer
    /// sees the member alive.
    good_pairs: usize,
}

impl Views {
    /// `n` nodes, none of them running yet.
    pub fn new(n: usize) -> Self {
        Views {
            n,
            seen: vec![Seen::Unknown; n * n],
            live: vec![false; n],
            live_count: 0,
            alive_in: vec![0; n],
            good_pairs: 0,
        }
    }

    /// What `observer` believes of `member`.
    pub fn get(&self, observer: usize, member: usize) -> Seen {
        self.seen[observer * self.n + member]
    }

    /// Whether the node's process exists (running or paused).
    pub fn is_live(&self, i: usize) -> bool {
        self.live[i]
    }

    /// Number of live nodes.
    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// How many live nodes other than `member` see it alive.
    pub fn alive_in(&self, member: usize) -> usize {
        self.alive_in[member]
    }

    /// Records a belief of a live observer.
    pub fn set(&mut self, observer: usize, member: usize, now: Seen) {
        if observer == member {
            return;
        }
        let slot = observer * self.n + member;
        let before = self.seen[slot];
        self.seen[slot] = now;
        if !self.live[observer] || (before == Seen::Alive) == (now == Seen::Alive) {
            return;
        }
        if now == Seen::Alive {
            self.alive_in[member] += 1;
            if self.live[member] {
                self.good_pairs += 1;
            }
        } else {
            self.alive_in[member] -= 1;
            if self.live[member] {
                self.good_pairs -= 1;
            }
        }
    }

    /// A node's process started, with an empty membership table.
    pub fn start(&mut self, i: usize) {
        if self.live[i] {
            return;
        }
        self.live[i] = true;
        self.live_count += 1;
        // Others may still hold beliefs about a previous life of this node.
        self.good_pairs += self.alive_in[i];
    }

    /// A node's process is gone, and its table with it.
    pub fn stop(&mut self, i: usize) {
        if !self.live[i] {
            return;
        }
        self.good_pairs -= self.alive_in[i];
        for m in 0..self.n {
            if m != i && self.seen[i * self.n + m] == Seen::Alive {
                self.alive_in[m] -= 1;
                if self.live[m] {
                    self.good_pairs -= 1;
                }
            }
        }
        self.seen[i * self.n..(i + 1) * self.n].fill(Seen::Unknown);
        self.live[i] = false;
        self.live_count -= 1;
    }

    /// Whether every live node sees every other live node alive.
    pub fn converged(&self) -> bool {
        self.good_pairs == self.live_count * self.live_count.saturating_sub(1)
    }

    /// Up to `limit` pairs `(observer, member, belief)` of live nodes that
    /// keep the views from converging. O(n²): for reports only.
    pub fn disagreements(&self, limit: usize) -> Vec<(usize, usize, Seen)> {
        let mut out = Vec::new();
        for o in (0..self.n).filter(|&o| self.live[o]) {
            for m in (0..self.n).filter(|&m| m != o && self.live[m]) {
                let seen = self.get(o, m);
                if seen != Seen::Alive {
                    out.push((o, m, seen));
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Number of pairs of live nodes where one does not see the other alive.
    pub fn disagreement_count(&self) -> usize {
        self.live_count * self.live_count.saturating_sub(1) - self.good_pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(n: usize) -> Views {
        let mut v = Views::new(n);
        for i in 0..n {
            v.start(i);
        }
        for o in 0..n {
            for m in 0..n {
                v.set(o, m, Seen::Alive);
            }
        }
        v
    }

    #[test]
    fn converges_when_every_live_pair_is_alive() {
        let mut v = full(4);
        assert!(v.converged());
        v.set(1, 2, Seen::Suspect);
        assert!(!v.converged());
        assert_eq!(v.disagreements(10), vec![(1, 2, Seen::Suspect)]);
        v.set(1, 2, Seen::Alive);
        assert!(v.converged());
    }

    #[test]
    fn a_stopped_node_leaves_the_count_and_its_table() {
        let mut v = full(4);
        v.stop(3);
        assert!(v.converged(), "convergence is about live members only");
        assert_eq!(v.alive_in(3), 3, "even if the others still see 3 alive");
        for o in 0..3 {
            v.set(o, 3, Seen::Dead);
        }
        assert!(v.converged());
        v.start(3);
        assert!(!v.converged(), "a restarted node knows nobody yet");
        for m in 0..4 {
            v.set(3, m, Seen::Alive);
        }
        assert!(!v.converged(), "and the others see it dead");
        for o in 0..3 {
            v.set(o, 3, Seen::Alive);
        }
        assert!(v.converged());
    }
}
