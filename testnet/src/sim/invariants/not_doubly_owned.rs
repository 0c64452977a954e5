//! No session stays hosted by two live nodes once they can hear each other
//! again.
//!
//! Raman & Katz §3 give each session one primary cluster at a time; the
//! session map settles concurrent claims deterministically (higher epoch,
//! then primary id), so both claimants learn who won and the loser stops.
//! A fault may create two owners on purpose: a partition lets each side
//! claim, a paused primary is declared dead and taken over. DESIGN.md's
//! target is "sessions lost or doubly owned 10 s after any single fault or
//! partition heal: 0". So a session is doubly owned when two live nodes
//! host it, and that is a violation once it has lasted the bound (10 s)
//! past the moment its owners were all running and mutually reachable
//! (the heal, the resume).
//!
//! A graceful transfer is make-before-break by design: the old primary
//! keeps sending until the new one confirms it started (or a timeout), two
//! senders of identical packets. The caller leaves such a host out of the
//! owners: a host whose own record names another primary and was written
//! by itself (its handover, unconfirmed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;
use crate::sim::ownership::Sid;

/// The invariant's name.
pub const NAME: &str = "not_doubly_owned";
/// Where it comes from.
pub const SOURCE: &str = "Raman & Katz §3 (one primary cluster per session) / DESIGN.md targets: \
sessions doubly owned 10 s after any single fault or partition heal: 0";

#[derive(Debug, Clone)]
struct Double {
    since: Duration,
    owners: Vec<u32>,
    /// Since when every owner has been running and reachable from the
    /// others (as of the last check).
    clear_since: Option<Duration>,
    reported: bool,
}

/// Sessions with two owners or more, and those that broke the bound.
#[derive(Debug, Clone)]
pub struct DoubleOwnership {
    bound: Duration,
    open: BTreeMap<Sid, Double>,
    flagged: BTreeSet<Sid>,
}

impl DoubleOwnership {
    /// Two owners that can hear each other must be one within `bound`.
    pub fn new(bound: Duration) -> Self {
        DoubleOwnership {
            bound,
            open: BTreeMap::new(),
            flagged: BTreeSet::new(),
        }
    }

    /// The owners of `sid` at `now` (live hosts, make-before-break hosts
    /// left out).
    pub fn set_owners(&mut self, sid: Sid, owners: &[u32], now: Duration) {
        if owners.len() < 2 {
            self.open.remove(&sid);
            return;
        }
        let d = self.open.entry(sid).or_insert_with(|| Double {
            since: now,
            owners: Vec::new(),
            clear_since: None,
            reported: false,
        });
        d.owners = owners.to_vec();
    }

    /// Sessions doubly owned now, ascending.
    pub fn open(&self) -> impl Iterator<Item = Sid> + '_ {
        self.open.keys().copied()
    }

    /// Judges every doubly owned session at `now`; `clear` says whether a
    /// set of owners are all running and can all reach one another.
    pub fn check(
        &mut self,
        now: Duration,
        clear: impl Fn(&[u32]) -> bool,
        name: impl Fn(u32) -> String,
        session: impl Fn(Sid) -> String,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for (sid, d) in &mut self.open {
            if !clear(&d.owners) {
                d.clear_since = None;
                continue;
            }
            let clear_since = *d.clear_since.get_or_insert(now);
            let from = clear_since.max(d.since);
            if d.reported || now < from + self.bound {
                continue;
            }
            d.reported = true;
            self.flagged.insert(*sid);
            let owners: Vec<String> = d.owners.iter().map(|&o| name(o)).collect();
            out.push(Violation {
                invariant: NAME,
                source: SOURCE,
                at_ms: ms(now),
                details: format!(
                    "session {} hosted by {} since {:.1} ms, {:?} after they could all hear \
                     each other",
                    session(*sid),
                    owners.join(" and "),
                    ms(d.since),
                    now.saturating_sub(from)
                ),
            });
        }
        out
    }

    /// Distinct sessions that broke the bound.
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
    fn two_owners_that_hear_each_other_for_the_bound_are_flagged_once() {
        let mut d = DoubleOwnership::new(10 * S);
        d.set_owners(7, &[1, 2], S);
        assert!(d.check(S, |_| true, name, |_| "s".into()).is_empty());
        assert!(d.check(10 * S, |_| true, name, |_| "s".into()).is_empty());
        let v = d.check(11 * S, |_| true, name, |_| "s".into());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].invariant, NAME);
        assert!(
            v[0].details.contains("hosted by n1 and n2"),
            "{}",
            v[0].details
        );
        assert!(d.check(12 * S, |_| true, name, |_| "s".into()).is_empty());
        assert_eq!(d.flagged(), 1);
    }

    #[test]
    fn the_clock_starts_when_the_owners_can_hear_each_other() {
        let mut d = DoubleOwnership::new(10 * S);
        d.set_owners(7, &[1, 2], S);
        // Partitioned until 20 s: by design both sides own it.
        for t in 2..20 {
            assert!(d.check(t * S, |_| false, name, |_| "s".into()).is_empty());
        }
        assert!(d.check(20 * S, |_| true, name, |_| "s".into()).is_empty());
        assert!(d.check(29 * S, |_| true, name, |_| "s".into()).is_empty());
        assert_eq!(d.check(30 * S, |_| true, name, |_| "s".into()).len(), 1);
    }

    #[test]
    fn one_owner_left_ends_the_episode() {
        let mut d = DoubleOwnership::new(10 * S);
        d.set_owners(7, &[1, 2], S);
        d.set_owners(7, &[2], 5 * S);
        assert!(d.check(20 * S, |_| true, name, |_| "s".into()).is_empty());
        assert_eq!(d.open().count(), 0);
        assert_eq!(d.flagged(), 0);
    }
}
