//! What the nodes sent over the measurement window, by the classes of the
//! node's own counters (`Stats.sent`: probe, gossip, deltas on datagrams;
//! admission, swim_bulk, map_sync on streams), across crashes and restarts
//! (a new process counts from zero).
//!
//! Counted: sealed datagrams (their 24 bytes of seal included) and stream
//! frame payloads, as the node counts them; plus [`HEADER_BYTES`] of
//! Ethernet, IPv4 and UDP headers per datagram. Not counted: the streams'
//! own overhead (4-byte frame lengths, QUIC/Noise/yamux headers, acks).

use baton_protocol::node::{Class, Flow, Stats};

/// Ethernet (14) + IPv4 (20) + UDP (8) header bytes of one datagram.
pub const HEADER_BYTES: u64 = 42;

/// The classes carried on datagrams (the others ride on streams).
pub const DATAGRAM_CLASSES: [Class; 3] = [Class::Probe, Class::Gossip, Class::Deltas];

const CLASSES: usize = Class::ALL.len();

fn slot(class: Class) -> usize {
    Class::ALL
        .iter()
        .position(|c| *c == class)
        .expect("every class is in ALL")
}

/// Per class, what one node sent.
pub type ByClass = [Flow; CLASSES];

fn of(stats: &Stats) -> ByClass {
    let mut out = ByClass::default();
    for (class, flow) in &stats.sent {
        out[slot(*class)] = *flow;
    }
    out
}

/// What one process has counted since it started: what it sent by class,
/// and its acks that carried its coordinate, asked and unasked
/// (`swim::Stats::coords_{asked,unasked}`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Sent, by class.
    pub sent: ByClass,
    /// Acks that carried the coordinate: `[asked, unasked]`.
    pub coords: [u64; 2],
}

impl Counts {
    /// A node's counters now.
    pub fn of(stats: &Stats, swim: &baton_protocol::swim::Stats) -> Counts {
        Counts {
            sent: of(stats),
            coords: [swim.coords_asked, swim.coords_unasked],
        }
    }

    /// Adds what `now` counted past `base` (a process's counters only grow).
    fn add_since(&mut self, now: &Counts, base: &Counts) {
        for k in 0..CLASSES {
            self.sent[k].packets += now.sent[k].packets.saturating_sub(base.sent[k].packets);
            self.sent[k].bytes += now.sent[k].bytes.saturating_sub(base.sent[k].bytes);
        }
        for k in 0..2 {
            self.coords[k] += now.coords[k].saturating_sub(base.coords[k]);
        }
    }
}

/// Traffic of every node over the window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    open: bool,
    /// Per node: counted by finished lives (and the current one, once
    /// closed).
    total: Vec<Counts>,
    /// Per node: the current life's counts when the window opened (zero
    /// for a life that began inside it).
    base: Vec<Counts>,
}

impl Window {
    /// Opens the window for `n` nodes; `counts(i)` are node `i`'s counters
    /// now, if it runs.
    pub fn open(&mut self, n: usize, counts: impl Fn(usize) -> Option<Counts>) {
        self.open = true;
        self.total = vec![Counts::default(); n];
        self.base = (0..n).map(|i| counts(i).unwrap_or_default()).collect();
    }

    /// Node `i`'s process ends (crash) with these counters.
    pub fn retire(&mut self, i: usize, counts: Counts) {
        if self.open {
            let base = self.base[i];
            self.total[i].add_since(&counts, &base);
            self.base[i] = Counts::default();
        }
    }

    /// Node `i` starts a new process (its counters start at zero).
    pub fn restart(&mut self, i: usize) {
        if self.open {
            self.base[i] = Counts::default();
        }
    }

    /// Closes the window; `counts(i)` as for [`open`](Self::open).
    pub fn close(&mut self, counts: impl Fn(usize) -> Option<Counts>) {
        if !self.open {
            return;
        }
        for i in 0..self.total.len() {
            if let Some(now) = counts(i) {
                let base = self.base[i];
                self.total[i].add_since(&now, &base);
                self.base[i] = now;
            }
        }
        self.open = false;
    }

    /// What each node sent, by class (the window must be closed, or the
    /// current lives are left out).
    pub fn per_node(&self) -> Vec<ByClass> {
        self.total.iter().map(|c| c.sent).collect()
    }

    /// Acks that carried a coordinate over the window, all nodes together:
    /// `[asked, unasked]` (closed window, as for [`per_node`](Self::per_node)).
    pub fn coords(&self) -> [u64; 2] {
        self.total
            .iter()
            .fold([0, 0], |[a, u], c| [a + c.coords[0], u + c.coords[1]])
    }
}

/// Rates over a window, per node and second.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// `(bytes, packets)` per node per second, by class (in [`Class::ALL`]
    /// order).
    pub by_class: Vec<(Class, f64, f64)>,
    /// Header bytes per node per second ([`HEADER_BYTES`] per datagram).
    pub header_bytes: f64,
    /// Everything counted, per node per second.
    pub bytes: f64,
    /// Datagrams and frames per node per second.
    pub packets: f64,
    /// Bytes per second (headers included) of the busiest node.
    pub max_bytes: f64,
}

impl Rates {
    /// Rates of `per_node` over `secs` seconds.
    pub fn of(per_node: &[ByClass], secs: f64) -> Rates {
        let n = per_node.len().max(1) as f64;
        let secs = secs.max(1e-9);
        let datagram = |k: usize| DATAGRAM_CLASSES.contains(&Class::ALL[k]);
        let node_bytes = |flows: &ByClass| -> u64 {
            (0..CLASSES)
                .map(|k| {
                    let headers = if datagram(k) {
                        flows[k].packets * HEADER_BYTES
                    } else {
                        0
                    };
                    flows[k].bytes + headers
                })
                .sum()
        };
        let mut by_class = Vec::new();
        let mut headers = 0u64;
        let mut packets = 0u64;
        for (k, class) in Class::ALL.iter().enumerate() {
            let (b, p): (u64, u64) = per_node
                .iter()
                .map(|f| (f[k].bytes, f[k].packets))
                .fold((0, 0), |(b, p), (x, y)| (b + x, p + y));
            if datagram(k) {
                headers += p * HEADER_BYTES;
            }
            packets += p;
            by_class.push((*class, b as f64 / n / secs, p as f64 / n / secs));
        }
        let total: u64 = per_node.iter().map(node_bytes).sum();
        let max = per_node.iter().map(node_bytes).max().unwrap_or(0);
        Rates {
            by_class,
            header_bytes: headers as f64 / n / secs,
            bytes: total as f64 / n / secs,
            packets: packets as f64 / n / secs,
            max_bytes: max as f64 / secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(probe: (u64, u64), sync: (u64, u64)) -> Stats {
        let mut s = Stats::default();
        s.sent.insert(
            Class::Probe,
            Flow {
                packets: probe.0,
                bytes: probe.1,
            },
        );
        s.sent.insert(
            Class::MapSync,
            Flow {
                packets: sync.0,
                bytes: sync.1,
            },
        );
        s
    }

    fn counts(probe: (u64, u64), sync: (u64, u64), coords: [u64; 2]) -> Counts {
        let swim = baton_protocol::swim::Stats {
            coords_asked: coords[0],
            coords_unasked: coords[1],
            ..Default::default()
        };
        Counts::of(&stats(probe, sync), &swim)
    }

    #[test]
    fn a_crashed_life_counts_up_to_its_crash_and_a_new_one_from_zero() {
        let mut w = Window::default();
        let before = counts((10, 1000), (0, 0), [3, 5]);
        w.open(2, |i| (i == 0).then_some(before));
        w.retire(0, counts((15, 1500), (1, 100), [4, 9]));
        w.restart(0);
        let new_life = counts((2, 200), (0, 0), [1, 2]);
        w.close(|i| (i == 0).then_some(new_life));
        let per_node = w.per_node();
        let n0 = &per_node[0];
        assert_eq!((n0[0].packets, n0[0].bytes), (7, 700));
        assert_eq!(n0[slot(Class::MapSync)].bytes, 100);
        // Coordinates likewise: 1 + 4 before the crash, 1 + 2 after.
        assert_eq!(w.coords(), [2, 6]);
        let r = Rates::of(&per_node, 1.0);
        // Two nodes; headers only on the 7 datagrams.
        assert_eq!(r.header_bytes, 7.0 * 42.0 / 2.0);
        assert_eq!(r.bytes, (800.0 + 7.0 * 42.0) / 2.0);
        assert_eq!(r.max_bytes, 800.0 + 7.0 * 42.0);
    }
}
