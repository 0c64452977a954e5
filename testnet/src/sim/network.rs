//! The simulated network: per-link latency, jitter, random loss and cuts,
//! as datagrams see them (the streams of [`super::transport`] ride on the
//! same links).
//!
//! Every link has a stable base RTT derived from the seed (so a run is
//! reproducible and a pair of nodes keeps its distance, as Vivaldi expects);
//! each message adds jitter on top of half of it. Cuts are directed, so a
//! partition can be asymmetric: `a` hears `b` while `b` does not hear `a`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;

/// How the base RTT of a link is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Latency {
    /// Every pair of nodes gets an RTT drawn uniformly from
    /// `min_rtt..=max_rtt`, fixed for the run.
    Uniform {
        /// Shortest RTT.
        min_rtt: Duration,
        /// Longest RTT.
        max_rtt: Duration,
    },
    /// Nodes sit in regions (round-robin: node `i` in region `i % regions`)
    /// whose RTTs come from a matrix.
    Matrix(RttMatrix),
}

impl Latency {
    /// The LAN of the targets: 0.1 to 1 ms RTT.
    pub fn lan() -> Self {
        Latency::Uniform {
            min_rtt: Duration::from_micros(100),
            max_rtt: Duration::from_millis(1),
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self {
            Latency::Uniform { min_rtt, max_rtt } => {
                format!("uniform rtt {:?}..{:?}", min_rtt, max_rtt)
            }
            Latency::Matrix(m) => format!(
                "matrix of {} regions, rtt {:?}..{:?}",
                m.regions.len(),
                m.min_rtt(),
                m.max_rtt()
            ),
        }
    }
}

/// RTTs between regions, loaded from a CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct RttMatrix {
    regions: Vec<String>,
    /// Directed RTTs, `rtt[a * regions + b]`; the diagonal holds the RTT
    /// inside a region when the file gives one.
    rtt: Vec<Option<Duration>>,
    /// RTTs inside a region the file says nothing about are drawn from this
    /// range, as on a LAN.
    intra: (Duration, Duration),
}

/// Why an RTT matrix could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The file could not be read.
    #[error("cannot read RTT matrix {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `a,b,rtt_ms`.
    #[error("line {line}: {why} (expected `region_a,region_b,rtt_ms`)")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Fewer than two regions.
    #[error("the RTT matrix names {0} region(s); at least 2 are needed")]
    TooFewRegions(usize),
    /// Some pair of regions has no RTT in either direction.
    #[error("no RTT between regions `{0}` and `{1}`: add a line `{0},{1},<rtt_ms>`")]
    Missing(String, String),
}

impl RttMatrix {
    /// Reads a CSV file of `a,b,rtt_ms` lines after a header line (the
    /// format of `wan-rtt.csv`; `wan-rtt.directed.csv` works too). A pair
    /// given in one direction only is taken to be symmetric; a line `a,a,x`
    /// sets the RTT inside region `a`.
    pub fn load(path: &Path) -> Result<Self, MatrixError> {
        let text = std::fs::read_to_string(path).map_err(|source| MatrixError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the CSV text of [`load`](Self::load).
    pub fn parse(text: &str) -> Result<Self, MatrixError> {
        let mut regions: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut given: HashMap<(usize, usize), Duration> = HashMap::new();
        let mut header_seen = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !header_seen {
                header_seen = true;
                continue;
            }
            let bad = |why: String| MatrixError::BadLine { line: n + 1, why };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [a, b, ms] = fields[..] else {
                return Err(bad(format!("{} fields", fields.len())));
            };
            if a.is_empty() || b.is_empty() {
                return Err(bad("empty region name".into()));
            }
            let ms: f64 = ms
                .parse()
                .map_err(|_| bad(format!("`{ms}` is not a number of milliseconds")))?;
            if !(ms.is_finite() && ms > 0.0 && ms < 60_000.0) {
                return Err(bad(format!("{ms} ms is not a plausible RTT")));
            }
            let mut id = |name: &str| {
                *index.entry(name.to_owned()).or_insert_with(|| {
                    regions.push(name.to_owned());
                    regions.len() - 1
                })
            };
            let (a, b) = (id(a), id(b));
            given.insert((a, b), Duration::from_secs_f64(ms / 1000.0));
        }
        let r = regions.len();
        if r < 2 {
            return Err(MatrixError::TooFewRegions(r));
        }
        let mut rtt = vec![None; r * r];
        for a in 0..r {
            for b in 0..r {
                let value = given.get(&(a, b)).or_else(|| given.get(&(b, a))).copied();
                if value.is_none() && a != b {
                    return Err(MatrixError::Missing(regions[a].clone(), regions[b].clone()));
                }
                rtt[a * r + b] = value;
            }
        }
        Ok(RttMatrix {
            regions,
            rtt,
            intra: (Duration::from_micros(100), Duration::from_millis(1)),
        })
    }

    /// The region names, in the order nodes are assigned to them.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The RTT from region `a` to region `b`, `None` inside a region whose
    /// RTT the file did not give.
    pub fn rtt(&self, a: usize, b: usize) -> Option<Duration> {
        self.rtt[a * self.regions.len() + b]
    }

    fn min_rtt(&self) -> Duration {
        self.rtt.iter().flatten().min().copied().unwrap_or_default()
    }

    fn max_rtt(&self) -> Duration {
        self.rtt.iter().flatten().max().copied().unwrap_or_default()
    }
}

/// Why a message did not arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Random loss.
    Lost,
    /// The link is cut in this direction.
    Cut,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dropped::Lost => "lost",
            Dropped::Cut => "cut",
        })
    }
}

/// Links between `n` nodes, numbered `0..n`.
#[derive(Debug, Clone)]
pub struct Network {
    n: usize,
    seed: u64,
    latency: Latency,
    jitter: f64,
    loss: f64,
    /// Directed cuts as an `n * n` bit set: an O(1) check per message.
    blocked: Vec<u64>,
    blocked_count: usize,
    /// For every node, how many others it is cut from in either direction.
    cut_degree: Vec<u32>,
}

impl Network {
    /// A network of `n` nodes with no loss and no cuts. `jitter` is the
    /// largest extra delay of a message as a fraction of the link's one-way
    /// delay (0.1 = up to 10% more).
    pub fn new(n: usize, seed: u64, latency: Latency, jitter: f64) -> Self {
        Network {
            n,
            seed,
            latency,
            jitter: jitter.max(0.0),
            loss: 0.0,
            blocked: Vec::new(),
            blocked_count: 0,
            cut_degree: vec![0; n],
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The latency model.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// The base RTT between `a` and `b`, the same in both directions unless
    /// a directed matrix says otherwise.
    pub fn rtt(&self, a: usize, b: usize) -> Duration {
        match &self.latency {
            Latency::Uniform { min_rtt, max_rtt } => self.draw(a, b, *min_rtt, *max_rtt),
            Latency::Matrix(m) => {
                let r = m.regions.len();
                match m.rtt(a % r, b % r) {
                    Some(rtt) => rtt,
                    None => self.draw(a, b, m.intra.0, m.intra.1),
                }
            }
        }
    }

    /// The base one-way delay from `from` to `to`: half the link's RTT.
    pub fn one_way(&self, from: usize, to: usize) -> Duration {
        self.rtt(from, to) / 2
    }

    /// A stable draw from `min..=max` for the unordered pair `{a, b}`.
    fn draw(&self, a: usize, b: usize, min: Duration, max: Duration) -> Duration {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let h = mix(self.seed ^ 0x6c69_6e6b ^ ((lo as u64) << 32 | hi as u64));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        min + max.saturating_sub(min).mul_f64(u)
    }

    /// The probability that a message is lost.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Sets the loss probability of every link (clamped to `0..=1`).
    pub fn set_loss(&mut self, p: f64) {
        self.loss = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.0
        };
    }

    /// When a message sent now from `from` reaches `to`, or why it does not.
    pub fn transit(&self, from: usize, to: usize, rng: &mut impl Rng) -> Result<Duration, Dropped> {
        if self.is_blocked(from, to) {
            return Err(Dropped::Cut);
        }
        if self.loss > 0.0 && rng.random::<f64>() < self.loss {
            return Err(Dropped::Lost);
        }
        Ok(self.delay(from, to, rng))
    }

    /// The delay of one packet from `from` to `to`: the link's one-way
    /// delay plus jitter, whatever the loss and cuts (streams retransmit
    /// what is lost, and a cut breaks them instead).
    pub fn delay(&self, from: usize, to: usize, rng: &mut impl Rng) -> Duration {
        let base = self.one_way(from, to);
        let jitter = if self.jitter > 0.0 {
            base.mul_f64(self.jitter * rng.random::<f64>())
        } else {
            Duration::ZERO
        };
        base + jitter
    }

    /// Whether messages from `from` to `to` are cut.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        if self.blocked_count == 0 {
            return false;
        }
        let bit = from * self.n + to;
        self.blocked[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Whether `a` and `b` are cut from each other in either direction.
    pub fn is_cut_between(&self, a: usize, b: usize) -> bool {
        self.is_blocked(a, b) || self.is_blocked(b, a)
    }

    /// How many other nodes `i` is cut from, in either direction.
    pub fn cut_degree(&self, i: usize) -> u32 {
        self.cut_degree[i]
    }

    /// Whether any link is cut.
    pub fn has_cuts(&self) -> bool {
        self.blocked_count > 0
    }

    /// Cuts messages from `from` to `to` (not the other way).
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        if from == to || from >= self.n || to >= self.n || self.is_blocked(from, to) {
            return;
        }
        if self.blocked.is_empty() {
            self.blocked = vec![0; (self.n * self.n).div_ceil(64)];
        }
        if !self.is_blocked(to, from) {
            self.cut_degree[from] += 1;
            self.cut_degree[to] += 1;
        }
        let bit = from * self.n + to;
        self.blocked[bit / 64] |= 1 << (bit % 64);
        self.blocked_count += 1;
    }

    /// Cuts `a` and `b` from each other in both directions.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts every node of each group from every node of the other groups, in
    /// both directions. Nodes in no group keep their links.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        for (g, group) in groups.iter().enumerate() {
            for other in &groups[g + 1..] {
                for &a in group {
                    for &b in other {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.blocked_count = 0;
        self.cut_degree.iter_mut().for_each(|d| *d = 0);
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed hash of one word, used to
/// derive stable per-link and per-node values from the seed.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn link_rtt_is_stable_symmetric_and_in_range() {
        let net = Network::new(50, 7, Latency::lan(), 0.1);
        for a in 0..50 {
            for b in 0..50 {
                let rtt = net.rtt(a, b);
                assert_eq!(rtt, net.rtt(b, a));
                assert!(rtt >= Duration::from_micros(100) && rtt <= Duration::from_millis(1));
            }
        }
        let other_seed = Network::new(50, 8, Latency::lan(), 0.1);
        assert!((0..50).any(|b| net.rtt(0, b) != other_seed.rtt(0, b)));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let net = Network::new(4, 1, Latency::lan(), 0.1);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = net.transit(1, 2, &mut rng).unwrap();
            let base = net.one_way(1, 2);
            assert!(d >= base && d <= base.mul_f64(1.1));
        }
    }

    #[test]
    fn one_way_cut_blocks_one_direction_only() {
        let mut net = Network::new(3, 1, Latency::lan(), 0.0);
        let mut rng = SmallRng::seed_from_u64(1);
        net.cut_one_way(0, 1);
        assert_eq!(net.transit(0, 1, &mut rng), Err(Dropped::Cut));
        assert!(net.transit(1, 0, &mut rng).is_ok());
        assert_eq!(
            (net.cut_degree(0), net.cut_degree(1), net.cut_degree(2)),
            (1, 1, 0)
        );
        net.cut_one_way(1, 0);
        assert_eq!(net.cut_degree(0), 1, "a pair cut both ways counts once");
        net.heal();
        assert!(net.transit(0, 1, &mut rng).is_ok());
        assert_eq!(net.cut_degree(0), 0);
    }

    #[test]
    fn partition_cuts_between_groups_only() {
        let mut net = Network::new(5, 1, Latency::lan(), 0.0);
        net.partition(&[vec![0, 1, 2], vec![3, 4]]);
        assert!(!net.is_cut_between(0, 1));
        assert!(!net.is_cut_between(3, 4));
        assert!(net.is_blocked(0, 3) && net.is_blocked(4, 2));
        assert_eq!(net.cut_degree(0), 2);
        assert_eq!(net.cut_degree(3), 3);
    }

    #[test]
    fn loss_drops_about_that_fraction() {
        let mut net = Network::new(2, 1, Latency::lan(), 0.0);
        net.set_loss(0.05);
        let mut rng = SmallRng::seed_from_u64(3);
        let lost = (0..100_000)
            .filter(|_| net.transit(0, 1, &mut rng) == Err(Dropped::Lost))
            .count();
        assert!((4_000..6_000).contains(&lost), "{lost} lost");
    }

    #[test]
    fn matrix_loads_the_shipped_csv_shape() {
        let csv = "a,b,rtt_ms\nx,y,40\ny,z,10\nx,z,30\nz,x,34\n";
        let m = RttMatrix::parse(csv).unwrap();
        assert_eq!(m.regions(), ["x", "y", "z"]);
        assert_eq!(
            m.rtt(1, 0),
            Some(Duration::from_millis(40)),
            "symmetric if one way only"
        );
        assert_eq!(m.rtt(0, 2), Some(Duration::from_millis(30)));
        assert_eq!(
            m.rtt(2, 0),
            Some(Duration::from_millis(34)),
            "directed when both given"
        );
        let net = Network::new(6, 1, Latency::Matrix(m), 0.0);
        assert_eq!(net.rtt(0, 1), Duration::from_millis(40));
        assert_eq!(
            net.rtt(3, 4),
            Duration::from_millis(40),
            "round-robin onto regions"
        );
        assert!(
            net.rtt(0, 3) <= Duration::from_millis(1),
            "same region is a LAN"
        );
    }

    #[test]
    fn matrix_errors_say_what_to_fix() {
        let missing = RttMatrix::parse("a,b,rtt_ms\nx,y,1\ny,z,2\n").unwrap_err();
        assert!(missing.to_string().contains("`x` and `z`"), "{missing}");
        let bad = RttMatrix::parse("a,b,rtt_ms\nx,y,fast\n").unwrap_err();
        assert!(bad.to_string().starts_with("line 2"), "{bad}");
        assert!(matches!(
            RttMatrix::parse("a,b,rtt_ms\n"),
            Err(MatrixError::TooFewRegions(0))
        ));
    }
}
