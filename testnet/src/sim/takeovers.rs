//! Takeover time: from a primary's crash until every live node's map names
//! another primary for each session it hosted alone, i.e. until a backup's
//! claim has reached the whole group (`takeover_ms` in the report).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::ownership::Sid;

#[derive(Debug, Clone)]
struct Open {
    crashed: u32,
    at: Duration,
    /// Live nodes whose map still names the crashed primary.
    waiting: BTreeSet<u32>,
    /// When a backup's claim was written (its first takeover start).
    claimed: Option<Duration>,
    /// The backups the crashed primary's record named that still run.
    backups: BTreeSet<u32>,
}

/// Open takeovers and finished ones.
#[derive(Debug, Clone, Default)]
pub struct TakeoverTimes {
    open: BTreeMap<Sid, Open>,
    samples: Vec<Duration>,
    claims: Vec<Duration>,
    spread: Vec<Duration>,
    superseded: usize,
    without_replica: usize,
}

impl TakeoverTimes {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `crashed`, the only host of `sid`, crashed at `now`; `waiting` are
    /// the live nodes whose map names it as the primary, `backups` the
    /// running backups its record names. Without one, nobody can take the
    /// session over (it resumes when a replica restarts): that is counted
    /// apart, not timed.
    pub fn on_crash(
        &mut self,
        sid: Sid,
        crashed: u32,
        now: Duration,
        waiting: BTreeSet<u32>,
        backups: BTreeSet<u32>,
    ) {
        if self.open.remove(&sid).is_some() {
            // Its claimer crashed before the claim reached everyone.
            self.superseded += 1;
        }
        if backups.is_empty() {
            self.without_replica += 1;
            return;
        }
        self.open.insert(
            sid,
            Open {
                crashed,
                at: now,
                waiting,
                claimed: None,
                backups,
            },
        );
        self.settle(sid, now);
    }

    /// Takeovers that had no running backup to claim them: every replica
    /// of the session was down (a correlated crash).
    pub fn without_replica(&self) -> usize {
        self.without_replica
    }

    /// The node whose crash `sid` waits on, if it does.
    pub fn crashed(&self, sid: Sid) -> Option<u32> {
        self.open.get(&sid).map(|o| o.crashed)
    }

    /// Node `node`'s map names another primary for `sid` now.
    pub fn on_seen(&mut self, sid: Sid, node: u32, now: Duration) {
        if let Some(o) = self.open.get_mut(&sid) {
            if o.waiting.remove(&node)
                && let Some(claimed) = o.claimed
            {
                self.spread.push(now.saturating_sub(claimed));
            }
            self.settle(sid, now);
        }
    }

    /// A backup started `sid` as a takeover at `now`: the first such start
    /// of an open takeover is its claim time (crash until the claim is
    /// written at the claimer, before it spreads).
    pub fn on_claimed(&mut self, sid: Sid, now: Duration) {
        if let Some(o) = self.open.get_mut(&sid)
            && o.claimed.is_none()
        {
            o.claimed = Some(now);
            self.claims.push(now.saturating_sub(o.at));
        }
    }

    /// Crash until claim, one per takeover that was claimed.
    pub fn claims(&self) -> &[Duration] {
        &self.claims
    }

    /// Claim until one waiting node's map names the claimer, one sample
    /// per node and takeover: how the claim spreads.
    pub fn spread(&self) -> &[Duration] {
        &self.spread
    }

    /// Node `node` stopped: it is not waited for, and a takeover not
    /// claimed yet whose every backup is now down has nobody left to claim
    /// it (counted apart, not timed).
    pub fn on_gone(&mut self, node: u32, now: Duration) {
        let sids: Vec<Sid> = self
            .open
            .iter_mut()
            .filter_map(|(sid, o)| o.waiting.remove(&node).then_some(*sid))
            .collect();
        for sid in sids {
            self.settle(sid, now);
        }
        let mut orphaned = Vec::new();
        for (sid, o) in &mut self.open {
            if o.claimed.is_none() && o.backups.remove(&node) && o.backups.is_empty() {
                orphaned.push(*sid);
            }
        }
        for sid in orphaned {
            self.open.remove(&sid);
            self.without_replica += 1;
        }
    }

    fn settle(&mut self, sid: Sid, now: Duration) {
        if self.open.get(&sid).is_some_and(|o| o.waiting.is_empty()) {
            let o = self.open.remove(&sid).expect("checked");
            self.samples.push(now.saturating_sub(o.at));
        }
    }

    /// Takeovers that reached every live node.
    pub fn samples(&self) -> &[Duration] {
        &self.samples
    }

    /// Takeovers still waiting (incomplete at the end of a run).
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Takeovers cut short by a crash of their claimer.
    pub fn superseded(&self) -> usize {
        self.superseded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_takeover_ends_when_the_last_live_node_knows() {
        let mut t = TakeoverTimes::new();
        t.on_crash(4, 9, 100 * MS, [1, 2, 3].into(), [2].into());
        assert_eq!(t.crashed(4), Some(9));
        t.on_claimed(4, 800 * MS);
        t.on_seen(4, 1, 900 * MS);
        t.on_claimed(4, 900 * MS);
        t.on_gone(3, 950 * MS);
        assert!(t.samples().is_empty());
        t.on_seen(4, 2, 1100 * MS);
        assert_eq!(t.samples(), [1000 * MS]);
        assert_eq!(t.claims(), [700 * MS], "the first claim only");
        assert_eq!(
            t.spread(),
            [100 * MS, 300 * MS],
            "nodes 1 and 2, from the first claim"
        );
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn a_takeover_with_no_backup_running_is_counted_apart_not_timed() {
        let mut t = TakeoverTimes::new();
        t.on_crash(4, 9, 100 * MS, [1, 2].into(), BTreeSet::new());
        assert_eq!((t.open_count(), t.without_replica()), (0, 1));
        // Its backups crash after it, in the same burst.
        t.on_crash(5, 9, 100 * MS, [7, 8].into(), [1, 2].into());
        t.on_gone(1, 100 * MS);
        assert_eq!(t.open_count(), 1, "backup 2 still runs");
        t.on_gone(2, 100 * MS);
        assert_eq!((t.open_count(), t.without_replica()), (0, 2));
        // A claimed takeover is timed to its end whatever its backups do.
        t.on_crash(6, 9, 100 * MS, [1].into(), [3].into());
        t.on_claimed(6, 500 * MS);
        t.on_gone(3, 600 * MS);
        t.on_seen(6, 1, 700 * MS);
        assert_eq!(t.samples(), [600 * MS]);
        assert!(t.samples().iter().all(|s| *s < 86 * 1000 * MS));
    }
}
