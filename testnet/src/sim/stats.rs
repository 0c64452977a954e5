//! Percentile summaries of measured samples, as they appear in reports.

use serde::Serialize;

/// p50, p99 and max of a set of samples (nearest-rank percentiles), in the
/// unit of the samples. `None` when there were no samples, which JSON shows
/// as `null`, so that the keys exist whatever happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
    /// Number of samples.
    pub samples: usize,
}

impl Summary {
    /// Summarises `samples` (any order).
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Summary {
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            max: sorted.last().copied().map(round),
            samples: sorted.len(),
        }
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample such that
/// at least `p` of the samples are at most it.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(round(sorted[rank.clamp(1, sorted.len()) - 1]))
}

/// Reports show a tenth of a millisecond at most: more digits are noise.
pub(crate) fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.p50, Some(50.0));
        assert_eq!(s.p99, Some(99.0));
        assert_eq!(s.max, Some(100.0));
        assert_eq!(s.samples, 100);
    }

    #[test]
    fn no_samples_give_nulls() {
        let s = Summary::of(&[]);
        assert_eq!((s.p50, s.p99, s.max, s.samples), (None, None, None, 0));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = Summary::of(&[7.25]);
        assert_eq!((s.p50, s.p99, s.max), (Some(7.3), Some(7.3), Some(7.3)));
    }
}
