//! Every session of a crashed primary is claimed by exactly one of its live
//! backups, or resumed by its primary once that restarted.
//!
//! Raman & Katz ("A Framework for Highly-Available Session-Oriented
//! Internet Services", §3: peer clusters as mutual backups, backups
//! pre-provisioned per session) make a backup cluster re-instantiate each
//! session of a failed cluster; DESIGN.md's target for the simulator is
//! "N=1000, 2000 sessions, crashes: 0 lost, 0 doubly owned". A session
//! whose primary crashed while it alone hosted it must be started again by
//! one node named in its backups (the claim is `Action::Start` with a
//! `takeover` reason), not by two (two clusters would stream to the client
//! at once), and not by none while a backup lives, within the bound (10 s
//! by default). A later crash of the claimer starts a new episode.
//!
//! The primary itself, restarted before any backup claimed (all of them
//! crashed with it, or it came back within the detection time), resumes
//! the session from the map: that start is the episode's one claim too (the
//! session survives; the paper re-instantiates a session wherever a replica
//! can), and a backup claiming as well is two claims. Until 2026-12-03 such
//! a resumption counted as a claim only when the resumed record's reason
//! happened to say `takeover` (an earlier episode's), and then as one by a
//! node that is no backup: the correlated-crash sweep's violations.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;
use crate::sim::ownership::Sid;

/// The invariant's name.
pub const NAME: &str = "takeover_by_one_backup";
/// Where it comes from.
pub const SOURCE: &str = "Raman & Katz §3 (peer clusters as pre-provisioned backups) / DESIGN.md \
targets: every session of a crashed primary is claimed by exactly one live backup (or resumed by \
its restarted primary)";

#[derive(Debug, Clone)]
struct Episode {
    primary: u32,
    at: Duration,
    backups: Vec<u32>,
    claimers: Vec<u32>,
}

/// Open takeover episodes, one per session whose primary crashed.
#[derive(Debug, Clone)]
pub struct Takeovers {
    bound: Duration,
    open: BTreeMap<Sid, Episode>,
}

impl Takeovers {
    /// Claims are judged `bound` after the crash.
    pub fn new(bound: Duration) -> Self {
        Takeovers {
            bound,
            open: BTreeMap::new(),
        }
    }

    /// The primary of `sid`, its only host, crashed at `now`; `backups` are
    /// the backups its record named.
    pub fn on_crash(&mut self, sid: Sid, primary: u32, backups: Vec<u32>, now: Duration) {
        self.open.insert(
            sid,
            Episode {
                primary,
                at: now,
                backups,
                claimers: Vec::new(),
            },
        );
    }

    /// `node` started `sid` with a takeover reason.
    pub fn on_claim(
        &mut self,
        sid: Sid,
        node: u32,
        now: Duration,
        name: impl Fn(u32) -> String,
        session: &str,
    ) -> Option<Violation> {
        let e = self.open.get_mut(&sid)?;
        if e.claimers.contains(&node) {
            return None;
        }
        e.claimers.push(node);
        let why = if !e.backups.contains(&node) && node != e.primary {
            format!(
                "claimed by {}, which is not among its backups ({})",
                name(node),
                names(&e.backups, &name)
            )
        } else if e.claimers.len() > 1 {
            format!(
                "claimed by {} nodes: {}",
                e.claimers.len(),
                names(&e.claimers, &name)
            )
        } else {
            return None;
        };
        Some(violation(session, e, now, &why, &name))
    }

    /// Closes the episodes older than the bound: one without a claim while
    /// a backup lives is a violation.
    pub fn check(
        &mut self,
        now: Duration,
        live: impl Fn(u32) -> bool,
        name: impl Fn(u32) -> String,
        session: impl Fn(Sid) -> String,
    ) -> Vec<Violation> {
        let due: Vec<Sid> = self
            .open
            .iter()
            .filter(|(_, e)| now >= e.at + self.bound)
            .map(|(sid, _)| *sid)
            .collect();
        let mut out = Vec::new();
        for sid in due {
            let e = self.open.remove(&sid).expect("listed above");
            if e.claimers.is_empty() && e.backups.iter().any(|&b| live(b)) {
                let why = format!(
                    "not claimed {:?} after the crash although a backup lives ({})",
                    self.bound,
                    names(&e.backups, &name)
                );
                out.push(violation(&session(sid), &e, now, &why, &name));
            }
        }
        out
    }

    /// The crashed primary of `sid`'s open episode.
    pub fn primary_of(&self, sid: Sid) -> Option<u32> {
        self.open.get(&sid).map(|e| e.primary)
    }

    /// Whether an episode is open for `sid`.
    pub fn is_open(&self, sid: Sid) -> bool {
        self.open.contains_key(&sid)
    }
}

fn names(nodes: &[u32], name: &impl Fn(u32) -> String) -> String {
    nodes
        .iter()
        .map(|&n| name(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn violation(
    session: &str,
    e: &Episode,
    now: Duration,
    why: &str,
    name: &impl Fn(u32) -> String,
) -> Violation {
    Violation {
        invariant: NAME,
        source: SOURCE,
        at_ms: ms(now),
        details: format!(
            "session {session} of {} (crashed at {:.1} ms): {why}",
            name(e.primary),
            ms(e.at)
        ),
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
    fn one_claim_by_a_backup_passes() {
        let mut t = Takeovers::new(10 * S);
        t.on_crash(0, 1, vec![2, 3], S);
        assert!(t.on_claim(0, 2, 2 * S, name, "s").is_none());
        assert!(t.check(11 * S, |_| true, name, |_| "s".into()).is_empty());
        assert!(!t.is_open(0));
    }

    #[test]
    fn a_second_claimer_is_flagged() {
        let mut t = Takeovers::new(10 * S);
        t.on_crash(0, 1, vec![2, 3], S);
        assert!(t.on_claim(0, 2, 2 * S, name, "s").is_none());
        let v = t.on_claim(0, 3, 3 * S, name, "s").expect("a violation");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.details.contains("claimed by 2 nodes: n2, n3"),
            "{}",
            v.details
        );
    }

    #[test]
    fn a_claim_by_a_node_that_is_no_backup_is_flagged() {
        let mut t = Takeovers::new(10 * S);
        t.on_crash(0, 1, vec![2, 3], S);
        let v = t.on_claim(0, 4, 2 * S, name, "s").expect("a violation");
        assert!(
            v.details.contains("n4, which is not among"),
            "{}",
            v.details
        );
    }

    #[test]
    fn the_restarted_primary_resuming_is_the_claim_and_a_backup_as_well_is_two() {
        let mut t = Takeovers::new(10 * S);
        t.on_crash(0, 1, vec![2, 3], S);
        assert_eq!(t.primary_of(0), Some(1));
        assert!(t.on_claim(0, 1, 4 * S, name, "s").is_none(), "resumed");
        assert!(t.check(11 * S, |_| true, name, |_| "s".into()).is_empty());
        t.on_crash(1, 1, vec![2, 3], S);
        assert!(t.on_claim(1, 1, 4 * S, name, "s").is_none());
        let v = t.on_claim(1, 2, 5 * S, name, "s").expect("two claims");
        assert!(
            v.details.contains("claimed by 2 nodes: n1, n2"),
            "{}",
            v.details
        );
    }

    #[test]
    fn no_claim_while_a_backup_lives_is_flagged_at_the_bound_only() {
        let mut t = Takeovers::new(10 * S);
        t.on_crash(0, 1, vec![2, 3], S);
        assert!(t.check(10 * S, |_| true, name, |_| "s".into()).is_empty());
        let v = t.check(11 * S, |b| b == 3, name, |_| "s".into());
        assert_eq!(v.len(), 1);
        assert!(v[0].details.contains("not claimed"), "{}", v[0].details);
        // With every backup dead, nobody can claim it: no violation.
        t.on_crash(1, 1, vec![2], S);
        assert!(t.check(20 * S, |_| false, name, |_| "s".into()).is_empty());
    }
}
