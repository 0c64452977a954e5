//! How long an update takes to reach 99.9% of the group.
//!
//! A sample starts when a node announces new metadata; it ends when
//! `ceil(0.999 × m)` of the `m` other nodes that were live at the start (and
//! stay live) have emitted the `MemberMeta` event carrying it.

use std::time::Duration;

/// The fraction of the other live nodes an update must reach.
pub const QUORUM: f64 = 0.999;

#[derive(Debug, Clone)]
struct Sample {
    origin: usize,
    meta: Vec<u8>,
    started: Duration,
    /// Per node: 0 = not counted, 1 = still to receive, 2 = received.
    state: Vec<u8>,
    eligible: usize,
    received: usize,
}

impl Sample {
    fn target(&self) -> usize {
        (QUORUM * self.eligible as f64).ceil() as usize
    }
}

/// Open dissemination samples and finished ones.
#[derive(Debug, Clone)]
pub struct Dissemination {
    timeout: Duration,
    open: Vec<Sample>,
    samples: Vec<Duration>,
    incomplete: usize,
}

impl Dissemination {
    /// Samples that have not finished after `timeout` count as incomplete.
    pub fn new(timeout: Duration) -> Self {
        Dissemination {
            timeout,
            open: Vec::new(),
            samples: Vec::new(),
            incomplete: 0,
        }
    }

    /// `origin` announced `meta` at `now`; `live` are the other live nodes.
    pub fn start(
        &mut self,
        origin: usize,
        meta: Vec<u8>,
        now: Duration,
        n: usize,
        live: impl IntoIterator<Item = usize>,
    ) {
        // A newer announcement by the same node supersedes the old one.
        self.open.retain(|s| s.origin != origin);
        let mut state = vec![0; n];
        let mut eligible = 0;
        for i in live {
            if i != origin && state[i] == 0 {
                state[i] = 1;
                eligible += 1;
            }
        }
        self.open.push(Sample {
            origin,
            meta,
            started: now,
            state,
            eligible,
            received: 0,
        });
        self.settle(now);
    }

    /// `observer` learnt that `member` announced `meta`.
    pub fn on_meta(&mut self, observer: usize, member: usize, meta: &[u8], now: Duration) {
        let Some(sample) = self
            .open
            .iter_mut()
            .find(|s| s.origin == member && s.meta == meta)
        else {
            return;
        };
        if sample.state[observer] == 1 {
            sample.state[observer] = 2;
            sample.received += 1;
            self.settle(now);
        }
    }

    /// Node `i` stopped: it is no longer waited for, and its own samples are
    /// dropped (an update whose origin crashed may legitimately die out).
    pub fn on_stop(&mut self, i: usize, now: Duration) {
        self.open.retain(|s| s.origin != i);
        self.excuse(i, now);
    }

    /// Node `i` can no longer receive updates for a while (it was paused):
    /// open samples stop waiting for it.
    pub fn excuse(&mut self, i: usize, now: Duration) {
        for sample in &mut self.open {
            if sample.state[i] == 1 {
                sample.state[i] = 0;
                sample.eligible -= 1;
            }
        }
        self.settle(now);
    }

    /// Drops open samples without counting them (a fault began that keeps
    /// them from finishing, on purpose).
    pub fn interrupt(&mut self) {
        self.open.clear();
    }

    /// Closes finished and timed-out samples.
    pub fn settle(&mut self, now: Duration) {
        let (samples, incomplete, timeout) =
            (&mut self.samples, &mut self.incomplete, self.timeout);
        self.open.retain(|s| {
            if s.received >= s.target() {
                samples.push(now.saturating_sub(s.started));
                false
            } else if now >= s.started + timeout {
                *incomplete += 1;
                false
            } else {
                true
            }
        });
    }

    /// Whether a sample about `origin`'s announcement is open.
    pub fn is_open_for(&self, origin: usize) -> bool {
        self.open.iter().any(|s| s.origin == origin)
    }

    /// Whether any sample is open.
    pub fn any_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Durations of the finished samples.
    pub fn samples(&self) -> &[Duration] {
        &self.samples
    }

    /// Samples that did not finish within the timeout.
    pub fn incomplete(&self) -> usize {
        self.incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_sample_ends_when_every_other_live_node_has_it_below_1000() {
        let mut d = Dissemination::new(1000 * MS);
        d.start(0, vec![1], Duration::ZERO, 4, [0, 1, 2, 3]);
        d.on_meta(1, 0, &[1], 10 * MS);
        d.on_meta(2, 0, &[9], 20 * MS);
        d.on_meta(2, 0, &[1], 30 * MS);
        assert!(d.any_open(), "ceil(0.999 × 3) = 3");
        d.on_meta(3, 0, &[1], 40 * MS);
        assert_eq!(d.samples(), [40 * MS]);
    }

    #[test]
    fn a_stopped_observer_is_not_waited_for() {
        let mut d = Dissemination::new(1000 * MS);
        d.start(0, vec![1], Duration::ZERO, 3, [1, 2]);
        d.on_meta(1, 0, &[1], 10 * MS);
        d.on_stop(2, 50 * MS);
        assert_eq!(d.samples(), [50 * MS]);
    }

    #[test]
    fn slow_samples_time_out() {
        let mut d = Dissemination::new(1000 * MS);
        d.start(0, vec![1], Duration::ZERO, 3, [1, 2]);
        d.settle(1000 * MS);
        assert_eq!((d.samples().len(), d.incomplete()), (0, 1));
    }
}
