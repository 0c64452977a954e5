//! Strong completeness: every crashed member is eventually declared dead by
//! every live member.
//!
//! SWIM (Das, Gupta, Motivala 2002) §1 lists strong completeness among the
//! properties a failure detector must have, and §4.3 makes it time-bounded
//! with round-robin probe target selection. Here "eventually" means within a
//! bound (10 s by default, many times the detection target), and "every live
//! member" means every node that was running when the member crashed, knew
//! it as alive or suspect, and stayed running until it declared it dead.
//!
//! The same bookkeeping yields the detection latency samples: crash until
//! the last of those nodes marks the member dead.

use std::collections::HashMap;
use std::time::Duration;

use super::Violation;
use super::healthy_not_dead::ms;

/// The invariant's name.
pub const NAME: &str = "crashed_declared_dead";
/// Where it comes from.
pub const SOURCE: &str = "SWIM (Das et al. 2002) §1, §4.3: strong completeness — every crashed \
member is declared dead by every live member (here: within a bound)";

#[derive(Debug, Clone)]
struct Episode {
    member: usize,
    at: Duration,
    /// Observers that have yet to declare the member dead.
    waiting: Vec<bool>,
    remaining: usize,
    /// When the latest observer declared it.
    last: Option<Duration>,
}

/// A crash that every observer has now declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The crashed node.
    pub member: usize,
    /// Crash until the last observer declared it dead, if any did.
    pub latency: Option<Duration>,
}

/// Open crashes, and the detection latencies of closed ones.
#[derive(Debug, Clone)]
pub struct Completeness {
    bound: Duration,
    open: HashMap<usize, Episode>,
    samples: Vec<Duration>,
}

impl Completeness {
    /// Crashes must be declared by every observer within `bound`.
    pub fn new(bound: Duration) -> Self {
        Completeness {
            bound,
            open: HashMap::new(),
            samples: Vec::new(),
        }
    }

    /// The bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// `member` crashed at `at`; `observers` are the live nodes that saw it
    /// alive or suspect. Returns the crash if nobody has to declare it.
    pub fn on_crash(
        &mut self,
        member: usize,
        at: Duration,
        n: usize,
        observers: impl IntoIterator<Item = usize>,
    ) -> Option<Detected> {
        let mut waiting = vec![false; n];
        let mut remaining = 0;
        for o in observers {
            if o != member && !waiting[o] {
                waiting[o] = true;
                remaining += 1;
            }
        }
        if remaining == 0 {
            return Some(Detected {
                member,
                latency: None,
            });
        }
        self.open.insert(
            member,
            Episode {
                member,
                at,
                waiting,
                remaining,
                last: None,
            },
        );
        None
    }

    /// Whether `member` crashed and is not yet declared dead by everyone.
    pub fn is_open(&self, member: usize) -> bool {
        self.open.contains_key(&member)
    }

    /// When `member` crashed, if its crash is open.
    pub fn crashed_at(&self, member: usize) -> Option<Duration> {
        self.open.get(&member).map(|e| e.at)
    }

    /// `observer` declared `member` dead at `now`.
    pub fn on_dead(&mut self, observer: usize, member: usize, now: Duration) -> Option<Detected> {
        let episode = self.open.get_mut(&member)?;
        if !std::mem::replace(&mut episode.waiting[observer], false) {
            return None;
        }
        episode.remaining -= 1;
        episode.last = Some(now);
        self.close_if_done(member)
    }

    /// `observer` stopped (crashed or restarted): it no longer has to
    /// declare anything. Returns the crashes this completes.
    pub fn on_observer_gone(&mut self, observer: usize) -> Vec<Detected> {
        let mut members: Vec<usize> = Vec::new();
        for episode in self.open.values_mut() {
            if std::mem::replace(&mut episode.waiting[observer], false) {
                episode.remaining -= 1;
                if episode.remaining == 0 {
                    members.push(episode.member);
                }
            }
        }
        members.sort_unstable();
        members
            .into_iter()
            .filter_map(|m| self.close_if_done(m))
            .collect()
    }

    fn close_if_done(&mut self, member: usize) -> Option<Detected> {
        if self.open.get(&member)?.remaining > 0 {
            return None;
        }
        let episode = self.open.remove(&member)?;
        let latency = episode.last.map(|t| t.saturating_sub(episode.at));
        if let Some(latency) = latency {
            self.samples.push(latency);
        }
        Some(Detected { member, latency })
    }

    /// Forgets the crash of `member` without a verdict (it was restarted on
    /// purpose before everyone declared it).
    pub fn abandon(&mut self, member: usize) {
        self.open.remove(&member);
    }

    /// Checks `member`'s crash against the bound at `now`: if some observer
    /// still has not declared it, the crash is closed with a violation.
    pub fn check_deadline(
        &mut self,
        member: usize,
        now: Duration,
        name: impl Fn(usize) -> String,
    ) -> Option<Violation> {
        let episode = self.open.get(&member)?;
        if now < episode.at + self.bound {
            return None;
        }
        let laggards: Vec<usize> = (0..episode.waiting.len())
            .filter(|&o| episode.waiting[o])
            .collect();
        let shown: Vec<String> = laggards.iter().take(5).map(|&o| name(o)).collect();
        let details = format!(
            "node {} crashed at {:.1} ms; {} live node(s) had not declared it dead {:?} later: {}{}",
            name(member),
            ms(episode.at),
            laggards.len(),
            self.bound,
            shown.join(", "),
            if laggards.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
        self.open.remove(&member);
        Some(Violation {
            invariant: NAME,
            source: SOURCE,
            at_ms: ms(now),
            details,
        })
    }

    /// Members whose crash is still open.
    pub fn open_members(&self) -> Vec<usize> {
        let mut members: Vec<usize> = self.open.keys().copied().collect();
        members.sort_unstable();
        members
    }

    /// Detection latencies of the crashes closed so far.
    pub fn samples(&self) -> &[Duration] {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn detection_is_when_the_last_observer_declares() {
        let mut c = Completeness::new(1000 * MS);
        assert_eq!(c.on_crash(3, 100 * MS, 4, [0, 1, 2]), None);
        assert_eq!(c.on_dead(0, 3, 400 * MS), None);
        assert_eq!(c.on_dead(0, 3, 450 * MS), None, "a repeat does not count");
        assert_eq!(c.on_dead(2, 3, 500 * MS), None);
        let done = c.on_dead(1, 3, 700 * MS);
        assert_eq!(
            done,
            Some(Detected {
                member: 3,
                latency: Some(600 * MS)
            })
        );
        assert_eq!(c.samples(), [600 * MS]);
        assert!(!c.is_open(3));
    }

    #[test]
    fn an_observer_that_crashes_is_not_waited_for() {
        let mut c = Completeness::new(1000 * MS);
        c.on_crash(3, Duration::ZERO, 4, [0, 1, 2]);
        c.on_dead(0, 3, 300 * MS);
        c.on_dead(1, 3, 350 * MS);
        let done = c.on_observer_gone(2);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].latency, Some(350 * MS));
    }

    #[test]
    fn a_silent_observer_breaks_completeness_at_the_bound() {
        let mut c = Completeness::new(1000 * MS);
        c.on_crash(3, Duration::ZERO, 4, [0, 1, 2]);
        c.on_dead(0, 3, 300 * MS);
        c.on_dead(1, 3, 300 * MS);
        assert_eq!(c.check_deadline(3, 999 * MS, |i| i.to_string()), None);
        let v = c.check_deadline(3, 1000 * MS, |i| i.to_string()).unwrap();
        assert_eq!(v.invariant, NAME);
        assert!(
            v.details.contains("1 live node(s)") && v.details.ends_with(": 2"),
            "{}",
            v.details
        );
        assert!(!c.is_open(3));
        assert!(c.samples().is_empty());
    }
}
