//! Which region each port sits in, and the one-way delay between ports.

use std::time::Duration;

use crate::sim::RttMatrix;

/// The built-in wide-area matrix: median RTTs between 16 Azure regions
/// (Microsoft, "Azure network round-trip latency statistics", P50 of the 30
/// days ending 2026-07-30, CC BY 4.0; see docs/evaluation.md).
pub const WAN_RTT_CSV: &str = include_str!("../../data/wan-rtt.csv");

/// [`WAN_RTT_CSV`] parsed.
pub fn builtin_matrix() -> RttMatrix {
    RttMatrix::parse(WAN_RTT_CSV).expect("the built-in matrix parses (tested)")
}

/// One-way delays between the switch's ports.
#[derive(Debug, Clone, PartialEq)]
pub struct Delays {
    /// Region name of each port.
    pub regions: Vec<String>,
    /// `one_way[p][q]`: delay of a frame from port p to port q.
    one_way: Vec<Vec<Duration>>,
}

impl Delays {
    /// No delay anywhere: a LAN of `ports` ports.
    pub fn lan(ports: usize) -> Delays {
        Delays {
            regions: vec!["lan".into(); ports],
            one_way: vec![vec![Duration::ZERO; ports]; ports],
        }
    }

    /// Ports placed on the matrix's regions: `regions[p]` is the index of
    /// port p's region. Two ports of one region are `intra_rtt` apart
    /// unless the matrix gives that region's own RTT.
    pub fn from_matrix(matrix: &RttMatrix, regions: &[usize], intra_rtt: Duration) -> Delays {
        let one_way = regions
            .iter()
            .map(|&a| {
                regions
                    .iter()
                    .map(|&b| matrix.rtt(a, b).unwrap_or(intra_rtt) / 2)
                    .collect()
            })
            .collect();
        Delays {
            regions: regions
                .iter()
                .map(|&r| matrix.regions()[r].clone())
                .collect(),
            one_way,
        }
    }

    /// Ports.
    pub fn len(&self) -> usize {
        self.one_way.len()
    }

    /// Whether there are no ports.
    pub fn is_empty(&self) -> bool {
        self.one_way.is_empty()
    }

    /// The one-way delay from port `from` to port `to`.
    pub fn one_way(&self, from: usize, to: usize) -> Duration {
        self.one_way[from][to]
    }

    /// The RTT the emulator imposes between two ports.
    pub fn rtt(&self, a: usize, b: usize) -> Duration {
        self.one_way[a][b] + self.one_way[b][a]
    }
}

/// The matrix restricted to its first `k` regions (at least 2, at most all
/// of them), in their order: fewer regions for as many nodes, so that a
/// region holds several (`--regions`).
pub fn first_regions(matrix: &RttMatrix, k: usize) -> Result<RttMatrix, String> {
    let all = matrix.regions().len();
    if !(2..=all).contains(&k) {
        return Err(format!(
            "--regions {k}: the matrix has {all} regions; give 2 to {all}"
        ));
    }
    let mut csv = String::from("a,b,rtt_ms\n");
    for a in 0..k {
        for b in 0..k {
            if let Some(rtt) = matrix.rtt(a, b) {
                let r = &matrix.regions();
                csv.push_str(&format!(
                    "{},{},{}\n",
                    r[a],
                    r[b],
                    rtt.as_nanos() as f64 / 1e6
                ));
            }
        }
    }
    RttMatrix::parse(&csv).map_err(|e| e.to_string())
}

/// Round-robin placement: node `i` (0-based) in region `i mod regions`.
pub fn round_robin(nodes: usize, regions: usize) -> Vec<usize> {
    (0..nodes).map(|i| i % regions.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matrix_has_the_sixteen_regions_and_their_rtts() {
        let m = builtin_matrix();
        assert_eq!(m.regions().len(), 16);
        assert_eq!(m.regions()[0], "westus");
        let uks = m.regions().iter().position(|r| r == "uksouth").unwrap();
        let weu = m.regions().iter().position(|r| r == "westeurope").unwrap();
        assert_eq!(m.rtt(uks, weu), Some(Duration::from_millis(11)));
        assert_eq!(m.rtt(weu, uks), Some(Duration::from_millis(11)));
    }

    #[test]
    fn the_first_regions_keep_their_rtts() {
        let m = builtin_matrix();
        let three = first_regions(&m, 3).unwrap();
        assert_eq!(three.regions(), &m.regions()[..3]);
        for a in 0..3 {
            for b in 0..3 {
                assert_eq!(three.rtt(a, b), m.rtt(a, b), "{a} {b}");
            }
        }
        assert!(first_regions(&m, 1).is_err());
        assert!(first_regions(&m, 17).is_err());
        assert_eq!(first_regions(&m, 16).unwrap().regions(), m.regions());
    }

    #[test]
    fn delays_are_half_the_rtt_and_intra_region_uses_the_default() {
        let m = builtin_matrix();
        let placement = round_robin(18, m.regions().len());
        assert_eq!(placement[16], 0, "round robin wraps");
        let d = Delays::from_matrix(&m, &placement, Duration::from_millis(2));
        // westus -> centralus is 39 ms.
        assert_eq!(d.one_way(0, 1), Duration::from_micros(19_500));
        assert_eq!(d.rtt(0, 1), Duration::from_millis(39));
        // Ports 0 and 16 are both in westus.
        assert_eq!(d.rtt(0, 16), Duration::from_millis(2));
        assert_eq!(d.regions[16], "westus");
        assert_eq!(Delays::lan(3).rtt(0, 2), Duration::ZERO);
    }
}
