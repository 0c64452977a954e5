//! How long a partition's majority takes to declare the whole cut-off
//! minority dead: from the cut until every node of the majority has marked
//! every node of the minority dead (`cut_detection_ms` in the report). The
//! testnet's partition scenario measures the same ("whole minority dead at
//! every majority node"); a takeover of the minority's sessions waits for
//! it, so it bounds the client's gap in a partition.

use std::collections::BTreeSet;
use std::time::Duration;

/// The cut being watched, if any, and the samples of the ones before.
#[derive(Debug, Clone, Default)]
pub struct CutDetection {
    open: Option<Open>,
    samples: Vec<Duration>,
    undetected: usize,
}

#[derive(Debug, Clone)]
struct Open {
    at: Duration,
    /// (observer in the majority, member of the minority) not declared yet.
    pairs: BTreeSet<(usize, usize)>,
}

impl CutDetection {
    /// None watched.
    pub fn new() -> Self {
        Self::default()
    }

    /// `minority` was cut from `majority` at `now`; `dead(o, m)` says
    /// whether `o` holds `m` dead already (such a pair has nothing left to
    /// detect). A cut still open is counted undetected.
    pub fn on_cut(
        &mut self,
        now: Duration,
        minority: &[usize],
        majority: &[usize],
        dead: impl Fn(usize, usize) -> bool,
    ) {
        self.close();
        let pairs: BTreeSet<(usize, usize)> = majority
            .iter()
            .flat_map(|&o| minority.iter().map(move |&m| (o, m)))
            .filter(|&(o, m)| !dead(o, m))
            .collect();
        self.open = Some(Open { at: now, pairs });
        self.settle(now);
    }

    /// `observer` marked `member` dead at `now`.
    pub fn on_dead(&mut self, observer: usize, member: usize, now: Duration) {
        if let Some(open) = &mut self.open {
            open.pairs.remove(&(observer, member));
            self.settle(now);
        }
    }

    /// `observer` stopped (crashed): it is not waited for.
    pub fn on_gone(&mut self, observer: usize, now: Duration) {
        if let Some(open) = &mut self.open {
            open.pairs.retain(|(o, _)| *o != observer);
            self.settle(now);
        }
    }

    /// The open cut is detected once no pair is left.
    fn settle(&mut self, now: Duration) {
        if let Some(open) = self.open.take_if(|o| o.pairs.is_empty()) {
            self.samples.push(now.saturating_sub(open.at));
        }
    }

    /// The cut healed: one not fully declared by then is undetected.
    pub fn close(&mut self) {
        if self.open.take().is_some() {
            self.undetected += 1;
        }
    }

    /// Cut until the last majority node declared the last minority node.
    pub fn samples(&self) -> &[Duration] {
        &self.samples
    }

    /// Cuts healed before the majority had declared the whole minority.
    pub fn undetected(&self) -> usize {
        self.undetected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_cut_is_detected_when_every_majority_node_declared_every_minority_node() {
        let mut c = CutDetection::new();
        c.on_cut(100 * MS, &[0, 1], &[2, 3], |_, _| false);
        c.on_dead(2, 0, 300 * MS);
        c.on_dead(2, 1, 400 * MS);
        c.on_dead(0, 2, 450 * MS); // the minority's view does not count
        c.on_dead(3, 0, 500 * MS);
        assert!(c.samples().is_empty());
        c.on_dead(3, 1, 900 * MS);
        assert_eq!(c.samples(), [800 * MS]);
        c.on_cut(1000 * MS, &[0], &[1, 2], |_, _| false);
        c.on_dead(1, 0, 1100 * MS);
        c.on_gone(2, 1200 * MS);
        assert_eq!(c.samples(), [800 * MS, 200 * MS]);
        c.on_cut(2000 * MS, &[0], &[1], |_, _| false);
        c.close();
        assert_eq!(c.undetected(), 1);
        c.close();
        assert_eq!(c.undetected(), 1, "closing twice counts once");
        // A pair already dead at the cut waits for nothing.
        c.on_cut(3000 * MS, &[0, 1], &[2], |_, m| m == 1);
        c.on_dead(2, 0, 3200 * MS);
        assert_eq!(c.samples(), [800 * MS, 200 * MS, 200 * MS]);
        assert_eq!(c.undetected(), 1);
    }
}
