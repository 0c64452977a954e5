//! No session stays unhosted while one of its backups lives.
//!
//! Raman & Katz §3: backup clusters are pre-provisioned per session so that
//! a session survives the failure of its primary; it is lost only if every
//! cluster able to run it is gone. DESIGN.md's targets: "sessions lost ...
//! 10 s after any single fault or partition heal: 0" and, in the simulator,
//! "N=1000, 2000 sessions, crashes: 0 lost". So a session hosted by no live
//! node for longer than the bound (10 s), while at least one of the backups
//! its last record named has a live process, is lost. While none has, the
//! clock waits (nobody could take it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;
use crate::sim::ownership::Sid;

/// The invariant's name.
pub const NAME: &str = "not_lost";
/// Where it comes from.
pub const SOURCE: &str = "Raman & Katz §3 (pre-provisioned backups keep sessions alive) / \
DESIGN.md targets: sessions lost 10 s after any single fault: 0";

#[derive(Debug, Clone)]
struct Unhosted {
    since: Duration,
    backups: Vec<u32>,
    reported: bool,
}

/// Sessions hosted nowhere, and those that stayed so too long.
#[derive(Debug, Clone)]
pub struct Lost {
    bound: Duration,
    unhosted: BTreeMap<Sid, Unhosted>,
    flagged: BTreeSet<Sid>,
}

impl Lost {
    /// A session with a live backup must be hosted again within `bound`.
    pub fn new(bound: Duration) -> Self {
        Lost {
            bound,
            unhosted: BTreeMap::new(),
            flagged: BTreeSet::new(),
        }
    }

    /// `sid` is hosted somewhere again.
    pub fn hosted(&mut self, sid: Sid) {
        self.unhosted.remove(&sid);
    }

    /// `sid` is hosted nowhere since `now`; `backups` are those of its last
    /// record.
    pub fn unhosted(&mut self, sid: Sid, backups: Vec<u32>, now: Duration) {
        self.unhosted.insert(
            sid,
            Unhosted {
                since: now,
                backups,
                reported: false,
            },
        );
    }

    /// Sessions hosted nowhere now.
    pub fn count_unhosted(&self) -> usize {
        self.unhosted.len()
    }

    /// Judges every unhosted session at `now`; `live` says whether a node's
    /// process exists.
    pub fn check(
        &mut self,
        now: Duration,
        live: impl Fn(u32) -> bool,
        name: impl Fn(u32) -> String,
        session: impl Fn(Sid) -> String,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for (sid, u) in &mut self.unhosted {
            if !u.backups.iter().any(|&b| live(b)) {
                u.since = now;
                continue;
            }
            if u.reported || now < u.since + self.bound {
                continue;
            }
            u.reported = true;
            self.flagged.insert(*sid);
            let backups: Vec<String> = u.backups.iter().map(|&b| name(b)).collect();
            out.push(Violation {
                invariant: NAME,
                source: SOURCE,
                at_ms: ms(now),
                details: format!(
                    "session {} hosted by no live node since {:.1} ms although a backup lives \
                     (backups: {})",
                    session(*sid),
                    ms(u.since),
                    backups.join(", ")
                ),
            });
        }
        out
    }

    /// Distinct sessions lost.
    pub fn flagged(&self) -> usize {
        self.flagged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn name(n: u32) -> String {
        format!("n{n}")
    }

    #[test]
    fn unhosted_beyond_the_bound_with_a_live_backup_is_lost() {
        let mut l = Lost::new(10 * S);
        l.unhosted(3, vec![1, 2], S);
        assert!(l.check(10 * S, |_| true, name, |_| "s".into()).is_empty());
        let v = l.check(11 * S, |b| b == 2, name, |_| "s".into());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].invariant, NAME);
        assert!(v[0].details.contains("backups: n1, n2"), "{}", v[0].details);
        assert_eq!(l.flagged(), 1);
        assert!(
            l.check(12 * S, |_| true, name, |_| "s".into()).is_empty(),
            "once"
        );
    }

    #[test]
    fn hosted_again_in_time_is_not_lost() {
        let mut l = Lost::new(10 * S);
        l.unhosted(3, vec![1], S);
        l.hosted(3);
        assert!(l.check(20 * S, |_| true, name, |_| "s".into()).is_empty());
        assert_eq!(l.count_unhosted(), 0);
    }

    #[test]
    fn the_clock_waits_while_no_backup_lives() {
        let mut l = Lost::new(10 * S);
        l.unhosted(3, vec![1], S);
        assert!(l.check(15 * S, |_| false, name, |_| "s".into()).is_empty());
        // Its backup restarts at 15 s: it has 10 s from then.
        assert!(l.check(24 * S, |_| true, name, |_| "s".into()).is_empty());
        assert_eq!(l.check(25 * S, |_| true, name, |_| "s".into()).len(), 1);
    }
}
