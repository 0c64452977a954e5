//! Vivaldi network coordinates, computed the way HashiCorp Serf does it: every
//! node keeps a point in a small Euclidean space plus a height and an adjustment,
//! so that the distance between two coordinates estimates their round-trip time.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::NodeId;

/// The most dimensions a coordinate received from the wire may have.
pub const MAX_DIMENSIONALITY: usize = 16;

/// The largest absolute value, in seconds, any component of a coordinate
/// received from the wire may have.
pub const MAX_COMPONENT_SECS: f64 = 1.0e4;

/// The longest round-trip time [`Client::update`] accepts.
pub const MAX_RTT: Duration = Duration::from_secs(10);

/// Below this distance (in seconds) two coordinates are taken to coincide.
const ZERO_THRESHOLD: f64 = 1.0e-6;

/// Tuning of the Vivaldi algorithm. The defaults are Serf's.
///
/// References: \[1\] Dabek et al., "Vivaldi: A Decentralized Network Coordinate
/// System", SIGCOMM 2004; \[2\] Ledlie, Gardner, Seltzer, "Network Coordinates
/// in the Wild", NSDI 2007; \[3\] Lee et al., "On Suitability of Euclidean
/// Embedding for Host-Based Network Coordinate Systems", ToN 2010.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of Euclidean dimensions. Accuracy stops improving beyond about 7
    /// \[2\]. Coordinates with more than [`MAX_DIMENSIONALITY`] (or zero)
    /// dimensions are refused by the wire decoder.
    pub dimensionality: usize,
    /// Error estimate of a node that has made no observation yet, and the upper
    /// bound of the error estimate afterwards (dimensionless).
    pub vivaldi_error_max: f64,
    /// How much one observation may change the error estimate, `c_e` in \[1\].
    pub vivaldi_ce: f64,
    /// How much one observation may move the coordinate, `c_c` in \[1\].
    pub vivaldi_cc: f64,
    /// Number of recent observations averaged into the adjustment term \[3\];
    /// zero disables the adjustment.
    pub adjustment_window_size: usize,
    /// Lowest height, in seconds. The height models the access link of a node,
    /// which every path to it crosses.
    pub height_min: f64,
    /// Number of RTT samples per peer whose median feeds the update (a moving
    /// median filter, \[2\]); it drops the occasional slow sample.
    pub latency_filter_size: usize,
    /// Strength of the pull toward the origin that keeps the whole coordinate
    /// system from drifting away \[2\]; larger means weaker. In seconds.
    pub gravity_rho: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dimensionality: 8,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

/// A network coordinate. All distances are in seconds.
///
/// On the wire every value is narrowed to an `f32` (see [`Coordinate`]'s
/// `Serialize` implementation); an 8-dimensional coordinate takes 58 bytes of
/// CBOR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireCoordinate", try_from = "WireCoordinate")]
pub struct Coordinate {
    /// The Euclidean part, in seconds.
    pub vec: Vec<f64>,
    /// Confidence in the coordinate: small means confident. Dimensionless.
    pub error: f64,
    /// Offset added to distances, learnt from how far off recent estimates
    /// were, in seconds. May be negative.
    pub adjustment: f64,
    /// Non-Euclidean offset modelling the node's access link, in seconds.
    pub height: f64,
}

impl Coordinate {
    /// A coordinate at the origin, with the largest error and the lowest height.
    pub fn new(config: &Config) -> Self {
        Coordinate {
            vec: vec![0.0; config.dimensionality],
            error: config.vivaldi_error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Whether every component is finite (no NaN, no infinity).
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|x| x.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    /// Whether both coordinates have the same number of dimensions.
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// The estimated round-trip time to `other`: the Euclidean distance plus
    /// both heights, plus both adjustments unless that would make the result
    /// non-positive.
    ///
    /// Never panics: if the dimensionalities differ (check with
    /// [`is_compatible_with`](Self::is_compatible_with)), missing components
    /// count as zero; a negative or NaN result becomes zero.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        secs_to_duration(self.distance_secs(other))
    }

    /// Distance in seconds, adjustments included when the result stays positive.
    fn distance_secs(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance_secs(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        if adjusted > 0.0 { adjusted } else { raw }
    }

    /// How far this coordinate moved from `before`, in seconds: the
    /// Euclidean shift plus the changes of height and adjustment, the most
    /// that any distance estimate made with it can have changed.
    pub fn moved_since(&self, before: &Coordinate) -> f64 {
        let moved = self.euclidean(before)
            + (self.height - before.height).abs()
            + (self.adjustment - before.adjustment).abs();
        if moved.is_finite() { moved } else { f64::MAX }
    }

    /// Distance in seconds without the adjustments.
    fn raw_distance_secs(&self, other: &Coordinate) -> f64 {
        self.euclidean(other) + self.height + other.height
    }

    /// The Euclidean distance of the two vectors, in seconds; a missing
    /// component counts as zero.
    fn euclidean(&self, other: &Coordinate) -> f64 {
        let (a, b) = (&self.vec, &other.vec);
        let squares: f64 = (0..a.len().max(b.len()))
            .map(|i| {
                let d = a.get(i).copied().unwrap_or(0.0) - b.get(i).copied().unwrap_or(0.0);
                d * d
            })
            .sum();
        squares.sqrt()
    }
}

/// The estimated round-trip time between two coordinates, see
/// [`Coordinate::distance_to`].
pub fn distance(a: &Coordinate, b: &Coordinate) -> Duration {
    a.distance_to(b)
}

/// Converts seconds to a duration, mapping negative and NaN to zero and
/// saturating on overflow.
fn secs_to_duration(secs: f64) -> Duration {
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

/// Why [`Client::update`] refused an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The other coordinate does not have as many dimensions as ours.
    DimensionalityMismatch {
        /// Our number of dimensions.
        local: usize,
        /// The other coordinate's number of dimensions.
        remote: usize,
    },
    /// The other coordinate holds a NaN or an infinity.
    InvalidCoordinate,
    /// The round-trip time is zero or longer than [`MAX_RTT`].
    RttOutOfRange(Duration),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::DimensionalityMismatch { local, remote } => write!(
                f,
                "coordinate has {remote} dimensions but the local coordinate has {local}"
            ),
            Error::InvalidCoordinate => {
                write!(f, "coordinate has a non-finite component (NaN or infinity)")
            }
            Error::RttOutOfRange(rtt) => write!(
                f,
                "round-trip time {rtt:?} is out of range: it must be positive and at most {MAX_RTT:?}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Maintains the local node's coordinate from observed round-trip times
/// (Serf's `coordinate.Client`).
#[derive(Debug, Clone)]
pub struct Client {
    /// The current estimate of our own coordinate.
    coord: Coordinate,
    /// The origin, which gravity pulls toward.
    origin: Coordinate,
    config: Config,
    /// Ring buffer of `rtt - raw distance` samples feeding the adjustment.
    adjustment_samples: Vec<f64>,
    /// Where the next adjustment sample goes.
    adjustment_index: usize,
    /// The last `latency_filter_size` RTT samples (seconds) of every peer,
    /// oldest first.
    latency_samples: BTreeMap<NodeId, Vec<f64>>,
    /// How often the coordinate went invalid and was reset to the origin.
    resets: u64,
}

impl Client {
    /// A client whose coordinate starts at the origin.
    pub fn new(config: Config) -> Self {
        Client {
            coord: Coordinate::new(&config),
            origin: Coordinate::new(&config),
            adjustment_samples: vec![0.0; config.adjustment_window_size],
            adjustment_index: 0,
            latency_samples: BTreeMap::new(),
            resets: 0,
            config,
        }
    }

    /// Our current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// How many times the coordinate became invalid (NaN) and was reset to
    /// the origin.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// The estimated round-trip time from us to `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        self.coord.distance_to(other)
    }

    /// Drops the RTT samples kept for `node` (call it when the node leaves).
    pub fn forget(&mut self, node: &NodeId) {
        self.latency_samples.remove(node);
    }

    /// Folds in one observation: `node`, whose coordinate is `other`, answered
    /// after `rtt`. `rng` picks a direction when both coordinates coincide.
    ///
    /// Refuses, changing nothing, a coordinate that is invalid or of another
    /// dimensionality, and an RTT that is zero or above [`MAX_RTT`].
    pub fn update(
        &mut self,
        node: &NodeId,
        other: &Coordinate,
        rtt: Duration,
        rng: &mut impl Rng,
    ) -> Result<&Coordinate, Error> {
        if !self.coord.is_compatible_with(other) {
            return Err(Error::DimensionalityMismatch {
                local: self.coord.vec.len(),
                remote: other.vec.len(),
            });
        }
        if !other.is_valid() {
            return Err(Error::InvalidCoordinate);
        }
        if rtt.is_zero() || rtt > MAX_RTT {
            return Err(Error::RttOutOfRange(rtt));
        }

        let rtt_secs = self.latency_filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt_secs, rng);
        self.update_adjustment(other, rtt_secs);
        self.update_gravity(rng);
        if !self.coord.is_valid() {
            // Serf resets the coordinate only; we also clear the adjustment
            // window, which would otherwise hold the NaN sample and poison the
            // next `adjustment_window_size` updates.
            self.resets += 1;
            self.coord = Coordinate::new(&self.config);
            self.adjustment_samples.fill(0.0);
        }
        Ok(&self.coord)
    }

    /// Records an RTT sample of `node` and returns the median of its recent
    /// samples (the upper median when there is an even number of them).
    fn latency_filter(&mut self, node: &NodeId, rtt_secs: f64) -> f64 {
        let size = self.config.latency_filter_size.max(1);
        let samples = self.latency_samples.entry(node.clone()).or_default();
        samples.push(rtt_secs);
        samples.drain(..samples.len().saturating_sub(size));
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    /// The Vivaldi step proper: updates the error estimate and moves the
    /// coordinate along the line to `other`, by an amount weighted by how
    /// confident we are relative to the other node.
    fn update_vivaldi(&mut self, other: &Coordinate, rtt_secs: f64, rng: &mut impl Rng) {
        let dist = self.coord.distance_secs(other);
        let rtt = if rtt_secs < ZERO_THRESHOLD {
            ZERO_THRESHOLD
        } else {
            rtt_secs
        };
        let wrongness = (dist - rtt).abs() / rtt;

        let mut total_error = self.coord.error + other.error;
        if total_error < ZERO_THRESHOLD {
            total_error = ZERO_THRESHOLD;
        }
        let weight = self.coord.error / total_error;

        let ce = self.config.vivaldi_ce * weight;
        self.coord.error = ce * wrongness + self.coord.error * (1.0 - ce);
        if self.coord.error > self.config.vivaldi_error_max {
            self.coord.error = self.config.vivaldi_error_max;
        }

        let force = self.config.vivaldi_cc * weight * (rtt - dist);
        apply_force(&mut self.coord, self.config.height_min, force, other, rng);
    }

    /// Records how far off the raw distance was and sets the adjustment to
    /// half the mean of the window.
    fn update_adjustment(&mut self, other: &Coordinate, rtt_secs: f64) {
        let window = self.adjustment_samples.len();
        if window == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] =
            rtt_secs - self.coord.raw_distance_secs(other);
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * window as f64);
    }

    /// Pulls the coordinate toward the origin, quadratically in its distance.
    fn update_gravity(&mut self, rng: &mut impl Rng) {
        let dist = self.origin.distance_secs(&self.coord);
        let force = -(dist / self.config.gravity_rho).powi(2);
        apply_force(
            &mut self.coord,
            self.config.height_min,
            force,
            &self.origin,
            rng,
        );
    }
}

/// Moves `coord` by `force` seconds away from `other` (toward it if `force` is
/// negative), and scales the height the same way, floored at `height_min`.
fn apply_force(
    coord: &mut Coordinate,
    height_min: f64,
    force: f64,
    other: &Coordinate,
    rng: &mut impl Rng,
) {
    let (unit, mag) = unit_vector_at(&coord.vec, &other.vec, rng);
    for (x, u) in coord.vec.iter_mut().zip(&unit) {
        *x += u * force;
    }
    if mag > ZERO_THRESHOLD {
        let height = (coord.height + other.height) * force / mag + coord.height;
        // Written out rather than `f64::max` so that a NaN stays a NaN and
        // the caller's validity check sees it, as in Serf.
        coord.height = if height < height_min {
            height_min
        } else {
            height
        };
    }
}

/// The unit vector pointing from `from` to `at` (the way `at` moves when
/// repelled by `from`), and the distance between them. When they coincide the
/// direction is random and the distance is reported as zero.
fn unit_vector_at(at: &[f64], from: &[f64], rng: &mut impl Rng) -> (Vec<f64>, f64) {
    let mut unit: Vec<f64> = at.iter().zip(from).map(|(a, b)| a - b).collect();
    let mag = magnitude(&unit);
    if mag > ZERO_THRESHOLD {
        unit.iter_mut().for_each(|x| *x /= mag);
        return (unit, mag);
    }

    unit.iter_mut().for_each(|x| *x = rng.random::<f64>() - 0.5);
    let random_mag = magnitude(&unit);
    if random_mag > ZERO_THRESHOLD {
        unit.iter_mut().for_each(|x| *x /= random_mag);
        return (unit, 0.0);
    }

    // Vanishingly unlikely: fall back to the first axis.
    unit.fill(0.0);
    if let Some(first) = unit.first_mut() {
        *first = 1.0;
    }
    (unit, 0.0)
}

fn magnitude(vec: &[f64]) -> f64 {
    vec.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The wire form of a [`Coordinate`]: single-letter keys, `f32` values, and the
/// vector packed as a byte string of little-endian `f32`s.
///
/// Packing the vector saves a byte per component over a CBOR array of floats
/// (which spends 5 bytes on each `f32`): 8 dimensions take 58 bytes in all
/// instead of 65.
#[derive(Serialize, Deserialize)]
struct WireCoordinate {
    #[serde(rename = "v")]
    vec: ByteBuf,
    #[serde(rename = "e")]
    error: f32,
    #[serde(rename = "a")]
    adjustment: f32,
    #[serde(rename = "h")]
    height: f32,
}

impl From<Coordinate> for WireCoordinate {
    fn from(c: Coordinate) -> Self {
        let bytes: Vec<u8> = c
            .vec
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect();
        WireCoordinate {
            vec: ByteBuf::from(bytes),
            error: c.error as f32,
            adjustment: c.adjustment as f32,
            height: c.height as f32,
        }
    }
}

/// Why a coordinate from the wire was refused.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The vector's byte length is not a whole number of `f32`s.
    Ragged(usize),
    /// Zero or more than [`MAX_DIMENSIONALITY`] dimensions.
    Dimensionality(usize),
    /// A NaN or an infinity in the named field.
    NotFinite(&'static str),
    /// A value in the named field beyond [`MAX_COMPONENT_SECS`].
    TooLarge(&'static str),
    /// A negative value in the named field.
    Negative(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Ragged(len) => {
                write!(f, "coordinate vector is {len} bytes, not a multiple of 4")
            }
            WireError::Dimensionality(dims) => write!(
                f,
                "coordinate has {dims} dimensions, expected 1 to {MAX_DIMENSIONALITY}"
            ),
            WireError::NotFinite(field) => write!(f, "coordinate {field} is not finite"),
            WireError::TooLarge(field) => {
                write!(f, "coordinate {field} exceeds {MAX_COMPONENT_SECS} seconds")
            }
            WireError::Negative(field) => write!(f, "coordinate {field} is negative"),
        }
    }
}

/// Checks one wire value and widens it.
pub(crate) fn checked(value: f32, field: &'static str) -> Result<f64, WireError> {
    if !value.is_finite() {
        return Err(WireError::NotFinite(field));
    }
    let value = f64::from(value);
    if value.abs() > MAX_COMPONENT_SECS {
        return Err(WireError::TooLarge(field));
    }
    Ok(value)
}

pub(crate) fn checked_non_negative(value: f32, field: &'static str) -> Result<f64, WireError> {
    let value = checked(value, field)?;
    if value < 0.0 {
        return Err(WireError::Negative(field));
    }
    Ok(value)
}

impl TryFrom<WireCoordinate> for Coordinate {
    type Error = WireError;

    fn try_from(wire: WireCoordinate) -> Result<Self, WireError> {
        if !wire.vec.len().is_multiple_of(4) {
            return Err(WireError::Ragged(wire.vec.len()));
        }
        let dims = wire.vec.len() / 4;
        if dims == 0 || dims > MAX_DIMENSIONALITY {
            return Err(WireError::Dimensionality(dims));
        }
        let vec = wire
            .vec
            .chunks_exact(4)
            .map(|b| {
                checked(
                    f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    "vector component",
                )
            })
            .collect::<Result<Vec<f64>, _>>()?;
        Ok(Coordinate {
            vec,
            error: checked_non_negative(wire.error, "error")?,
            adjustment: checked(wire.adjustment, "adjustment")?,
            height: checked_non_negative(wire.height, "height")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;
    use proptest::prelude::{
        Just, Strategy, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const MS: Duration = Duration::from_millis(1);

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    fn encode(c: &Coordinate) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(c, &mut out).unwrap();
        out
    }

    fn decode(bytes: &[u8]) -> Result<Coordinate, ciborium::de::Error<std::io::Error>> {
        ciborium::from_reader(bytes)
    }

    fn coordinate(vec: &[f64], error: f64, adjustment: f64, height: f64) -> Coordinate {
        Coordinate {
            vec: vec.to_vec(),
            error,
            adjustment,
            height,
        }
    }

    // ---- distances ----

    #[test]
    fn distance_between_origins_is_twice_height_min_and_symmetric() {
        let config = Config::default();
        let a = Coordinate::new(&config);
        let b = Coordinate::new(&config);
        let d = a.distance_to(&b);
        assert!((secs(d) - 2.0 * config.height_min).abs() < 1e-9, "{d:?}");
        assert_eq!(d, b.distance_to(&a));
        assert_eq!(d, distance(&a, &b));
    }

    #[test]
    fn distance_is_euclidean_plus_heights_and_symmetric() {
        let a = coordinate(&[-0.5, -4.0, 3.0], 0.5, 0.0, 0.7);
        let b = coordinate(&[1.0, 2.0, 3.0], 0.5, 0.0, 0.1);
        let expected = (1.5f64 * 1.5 + 6.0 * 6.0).sqrt() + 0.8;
        assert!((secs(a.distance_to(&b)) - expected).abs() < 1e-9);
        assert_eq!(a.distance_to(&b), b.distance_to(&a));
    }

    #[test]
    fn distance_adds_adjustments_only_while_the_result_stays_positive() {
        let mut a = coordinate(&[-0.5, -4.0, 3.0], 0.5, 0.2, 0.7);
        let mut b = coordinate(&[1.0, 2.0, 3.0], 0.5, 0.3, 0.1);
        let raw = (1.5f64 * 1.5 + 6.0 * 6.0).sqrt() + 0.8;
        assert!((secs(a.distance_to(&b)) - (raw + 0.5)).abs() < 1e-9);

        // Negative adjustments that keep the sum positive still apply.
        a.adjustment = -1.0;
        b.adjustment = -2.0;
        assert!((secs(a.distance_to(&b)) - (raw - 3.0)).abs() < 1e-9);

        // Adjustments that would make it non-positive are ignored.
        a.adjustment = -10.0;
        b.adjustment = -10.0;
        assert!((secs(a.distance_to(&b)) - raw).abs() < 1e-9);
    }

    #[test]
    fn distance_never_panics_on_odd_inputs() {
        let a = coordinate(&[1.0], 0.5, 0.0, 0.0);
        let b = coordinate(&[1.0, 2.0], 0.5, 0.0, 0.0);
        // Missing components count as zero.
        assert!((secs(a.distance_to(&b)) - 2.0).abs() < 1e-9);
        let nan = coordinate(&[f64::NAN], 0.5, 0.0, 0.0);
        assert_eq!(a.distance_to(&nan), Duration::ZERO);
        let negative = coordinate(&[0.0], 0.5, -5.0, -1.0);
        assert_eq!(negative.distance_to(&negative), Duration::ZERO);
        let huge = coordinate(&[1e300], 0.5, 0.0, 0.0);
        assert_eq!(huge.distance_to(&a), Duration::MAX);
    }

    #[test]
    fn client_distance_to_matches_coordinate_distance() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut client = Client::new(Config::default());
        let mut other = Coordinate::new(&Config::default());
        other.vec[0] = 0.01;
        client
            .update(&NodeId::synthetic(1), &other, 30 * MS, &mut rng)
            .unwrap();
        assert_eq!(
            client.distance_to(&other),
            client.coordinate().distance_to(&other)
        );
    }

    // ---- simulations ----

    /// Runs Serf's simulation: each cycle, every node measures the true RTT to
    /// a random other node and updates. With `via_wire`, coordinates travel
    /// through CBOR, as they do in SWIM acks.
    fn simulate(
        config: &Config,
        truth: &[Vec<Duration>],
        cycles: usize,
        seed: u64,
        via_wire: bool,
    ) -> Vec<Client> {
        let n = truth.len();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut clients: Vec<Client> = (0..n).map(|_| Client::new(config.clone())).collect();
        for _ in 0..cycles {
            for i in 0..n {
                let j = (i + rng.random_range(1..n)) % n;
                let other = if via_wire {
                    decode(&encode(clients[j].coordinate())).unwrap()
                } else {
                    clients[j].coordinate().clone()
                };
                let id = NodeId::synthetic(j as u32);
                clients[i]
                    .update(&id, &other, truth[i][j], &mut rng)
                    .unwrap();
            }
        }
        clients
    }

    /// Relative error of the estimate for every ordered pair of distinct nodes.
    fn relative_errors(clients: &[Client], truth: &[Vec<Duration>]) -> Vec<f64> {
        let mut errors = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            for (j, other) in clients.iter().enumerate() {
                if i != j {
                    let estimate = secs(client.distance_to(other.coordinate()));
                    let actual = secs(truth[i][j]);
                    errors.push((estimate - actual).abs() / actual);
                }
            }
        }
        errors
    }

    fn truth_from_points(points: &[(f64, f64)]) -> Vec<Vec<Duration>> {
        points
            .iter()
            .map(|&(x1, y1)| {
                points
                    .iter()
                    .map(|&(x2, y2)| MS.mul_f64(((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn four_nodes_on_a_line_converge_within_ten_percent() {
        // Gaps of 10, 20 and 50 ms.
        let truth = truth_from_points(&[(0.0, 0.0), (10.0, 0.0), (30.0, 0.0), (80.0, 0.0)]);
        let clients = simulate(&Config::default(), &truth, 1000, 1, false);
        let errors = relative_errors(&clients, &truth);
        let worst = errors.iter().copied().fold(0.0, f64::max);
        assert!(worst < 0.10, "worst relative error {worst}");
        assert!(clients.iter().all(|c| c.resets() == 0));
    }

    #[test]
    fn four_nodes_on_a_square_converge_within_ten_percent() {
        // Tiny symmetric layouts converge slowly: height and adjustment can
        // trade off against each other for a while (after 1000 cycles the
        // worst pair is off by up to 30% depending on the seed; after 5000,
        // under 9% for each of 40 seeds tried).
        let truth = truth_from_points(&[(0.0, 0.0), (20.0, 0.0), (0.0, 20.0), (20.0, 20.0)]);
        let clients = simulate(&Config::default(), &truth, 5000, 2, false);
        let errors = relative_errors(&clients, &truth);
        let worst = errors.iter().copied().fold(0.0, f64::max);
        assert!(worst < 0.10, "worst relative error {worst}");
    }

    #[test]
    fn node_equidistant_from_a_circle_rises_in_height() {
        // Serf's height test: 24 nodes on a circle of radius 100 ms in two
        // dimensions, and node 0 at 200 ms from all of them. Node 0 can only be
        // placed by giving it a large height.
        let radius = 100.0;
        let n = 25;
        let on_circle = |i: usize| {
            let t = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
            (radius * t.cos(), radius * t.sin())
        };
        let mut truth = truth_from_points(&(0..n).map(on_circle).collect::<Vec<_>>());
        let centre = MS.mul_f64(2.0 * radius);
        truth[0][1..].fill(centre);
        for row in &mut truth[1..] {
            row[0] = centre;
        }
        let config = Config {
            dimensionality: 2,
            ..Config::default()
        };
        let clients = simulate(&config, &truth, 1000, 4, false);
        let radius_secs = radius / 1000.0;
        let height0 = clients[0].coordinate().height;
        assert!(height0 > 0.97 * radius_secs, "centre height {height0}");
        for (i, client) in clients.iter().enumerate().skip(1) {
            let height = client.coordinate().height;
            assert!(height < 0.03 * radius_secs, "node {i} height {height}");
        }
        let errors = relative_errors(&clients, &truth);
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        let worst = errors.iter().copied().fold(0.0, f64::max);
        assert!(mean < 0.01 && worst < 0.10, "mean {mean} worst {worst}");
    }

    #[test]
    fn grid_of_25_nodes_exchanging_coordinates_over_cbor_has_median_error_under_ten_percent() {
        let points: Vec<(f64, f64)> = (0..25)
            .map(|i| (10.0 * (i % 5) as f64, 10.0 * (i / 5) as f64))
            .collect();
        let truth = truth_from_points(&points);
        let clients = simulate(&Config::default(), &truth, 1000, 3, true);
        let mut errors = relative_errors(&clients, &truth);
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        let worst = errors[errors.len() - 1];
        assert!(median < 0.10, "median relative error {median}");
        // Not part of the contract, but catches gross regressions.
        assert!(worst < 0.50, "worst relative error {worst}");
    }

    // ---- client internals and input checks ----

    #[test]
    fn latency_filter_returns_median_of_last_samples() {
        let mut client = Client::new(Config::default());
        let node = NodeId::synthetic(1);
        assert_eq!(client.latency_filter(&node, 0.010), 0.010);
        // With two samples the upper one is taken, as in Serf.
        assert_eq!(client.latency_filter(&node, 0.100), 0.100);
        // The outlier is outvoted once there are three.
        assert_eq!(client.latency_filter(&node, 0.012), 0.012);
        // Only the last three count: [0.100, 0.012, 0.011].
        assert_eq!(client.latency_filter(&node, 0.011), 0.012);
        assert_eq!(client.latency_filter(&node, 0.013), 0.012);
        // Other nodes have their own filter.
        assert_eq!(client.latency_filter(&NodeId::synthetic(2), 0.050), 0.050);
    }

    #[test]
    fn forget_drops_the_latency_filter_of_the_node() {
        let mut rng = SmallRng::seed_from_u64(0);
        let mut client = Client::new(Config::default());
        let (a, b) = (NodeId::synthetic(1), NodeId::synthetic(2));
        let other = Coordinate::new(&Config::default());
        client.update(&a, &other, 10 * MS, &mut rng).unwrap();
        client.update(&b, &other, 10 * MS, &mut rng).unwrap();
        client.forget(&a);
        assert!(!client.latency_samples.contains_key(&a));
        assert!(client.latency_samples.contains_key(&b));
        assert_eq!(client.latency_filter(&a, 0.5), 0.5);
    }

    /// Coincident coordinates part in a random direction of unit length:
    /// any direction, so every axis is taken both ways.
    #[test]
    fn coincident_coordinates_part_both_ways_along_every_axis() {
        let mut rng = SmallRng::seed_from_u64(11);
        let at = [0.02; 8];
        let (mut up, mut down) = ([false; 8], [false; 8]);
        for _ in 0..100 {
            let (unit, mag) = unit_vector_at(&at, &at, &mut rng);
            assert_eq!(mag, 0.0);
            assert!((magnitude(&unit) - 1.0).abs() < 1e-9, "{unit:?}");
            for (axis, x) in unit.iter().enumerate() {
                up[axis] |= *x > 0.0;
                down[axis] |= *x < 0.0;
            }
        }
        assert_eq!((up, down), ([true; 8], [true; 8]));
    }

    #[test]
    fn update_rejects_invalid_input_and_changes_nothing() {
        let config = Config::default();
        let mut rng = SmallRng::seed_from_u64(0);
        let mut client = Client::new(config.clone());
        let node = NodeId::synthetic(1);
        let mut good = Coordinate::new(&config);
        good.vec[0] = 0.02;
        client.update(&node, &good, 25 * MS, &mut rng).unwrap();
        let before = client.clone();

        let mut nan = good.clone();
        nan.vec[3] = f64::NAN;
        let mut infinite_height = good.clone();
        infinite_height.height = f64::INFINITY;
        let wrong_dims = Coordinate::new(&Config {
            dimensionality: 3,
            ..config.clone()
        });

        assert_eq!(
            client.update(&node, &nan, 10 * MS, &mut rng),
            Err(Error::InvalidCoordinate)
        );
        assert_eq!(
            client.update(&node, &infinite_height, 10 * MS, &mut rng),
            Err(Error::InvalidCoordinate)
        );
        assert_eq!(
            client.update(&node, &wrong_dims, 10 * MS, &mut rng),
            Err(Error::DimensionalityMismatch {
                local: 8,
                remote: 3
            })
        );
        // `Duration` cannot be negative; zero and too long are the bad cases.
        for rtt in [
            Duration::ZERO,
            MAX_RTT + Duration::from_nanos(1),
            Duration::from_secs(3600),
        ] {
            assert_eq!(
                client.update(&node, &good, rtt, &mut rng),
                Err(Error::RttOutOfRange(rtt))
            );
        }

        assert_eq!(client.coordinate(), before.coordinate());
        assert_eq!(client.latency_samples, before.latency_samples);
        assert_eq!(client.adjustment_samples, before.adjustment_samples);
        // The longest allowed RTT is accepted.
        assert!(client.update(&node, &good, MAX_RTT, &mut rng).is_ok());
    }

    #[test]
    fn error_messages_say_what_was_wrong() {
        let mismatch = Error::DimensionalityMismatch {
            local: 8,
            remote: 3,
        }
        .to_string();
        assert!(
            mismatch.contains('8') && mismatch.contains('3'),
            "{mismatch}"
        );
        assert!(Error::InvalidCoordinate.to_string().contains("NaN"));
        assert!(
            Error::RttOutOfRange(Duration::ZERO)
                .to_string()
                .contains("0ns")
        );
    }

    #[test]
    fn poisoned_coordinate_is_reset_to_origin_and_counted() {
        let config = Config::default();
        let mut rng = SmallRng::seed_from_u64(0);
        let mut client = Client::new(config.clone());
        client.coord.vec[0] = f64::NAN;
        let other = Coordinate::new(&config);
        let after = client
            .update(&NodeId::synthetic(1), &other, 10 * MS, &mut rng)
            .unwrap();
        assert_eq!(after, &Coordinate::new(&config));
        assert_eq!(client.resets(), 1);
        // The next update is healthy again.
        let after = client
            .update(&NodeId::synthetic(1), &other, 10 * MS, &mut rng)
            .unwrap();
        assert!(after.is_valid());
        assert_ne!(after, &Coordinate::new(&config));
        assert_eq!(client.resets(), 1);
    }

    #[test]
    fn update_from_a_coinciding_coordinate_moves_in_a_seeded_random_direction() {
        let config = Config::default();
        let origin = Coordinate::new(&config);
        let run = |seed| {
            let mut client = Client::new(config.clone());
            let mut rng = SmallRng::seed_from_u64(seed);
            client
                .update(&NodeId::synthetic(1), &origin, 100 * MS, &mut rng)
                .unwrap()
                .clone()
        };
        let (a, b, c) = (run(1), run(1), run(2));
        assert_eq!(a, b);
        assert_ne!(a.vec, c.vec);
        // Pushed apart: the estimate grew from 20 µs toward the 100 ms measured.
        assert!(a.distance_to(&origin) > 10 * MS);
    }

    #[test]
    fn disabled_adjustment_window_keeps_adjustment_zero() {
        let config = Config {
            adjustment_window_size: 0,
            ..Config::default()
        };
        let mut rng = SmallRng::seed_from_u64(0);
        let mut client = Client::new(config.clone());
        let mut other = Coordinate::new(&config);
        other.vec[1] = 0.005;
        for _ in 0..10 {
            client
                .update(&NodeId::synthetic(1), &other, 40 * MS, &mut rng)
                .unwrap();
        }
        assert_eq!(client.coordinate().adjustment, 0.0);
    }

    // ---- wire form ----

    fn sample_coordinate() -> Coordinate {
        coordinate(
            &[
                0.0123, -0.0456, 0.00789, -0.1011, 0.01213, -0.001415, 0.1617, -0.01819,
            ],
            0.2021,
            -0.002223,
            0.0002425,
        )
    }

    #[test]
    fn cbor_round_trip_keeps_values_within_f32_precision() {
        let original = sample_coordinate();
        let decoded = decode(&encode(&original)).unwrap();
        let close = |a: f64, b: f64| {
            assert_eq!(b, f64::from(a as f32));
            assert!((a - b).abs() <= a.abs() * 1e-7, "{a} vs {b}");
        };
        assert_eq!(decoded.vec.len(), original.vec.len());
        for (&a, &b) in original.vec.iter().zip(&decoded.vec) {
            close(a, b);
        }
        close(original.error, decoded.error);
        close(original.adjustment, decoded.adjustment);
        close(original.height, decoded.height);
        // A decoded coordinate re-encodes to the same bytes.
        assert_eq!(encode(&decoded), encode(&original));
    }

    #[test]
    fn eight_dimensional_coordinate_encodes_in_58_bytes() {
        // Map header 1 + "v" 2 + byte-string header 2 + 8 * 4 + three times
        // ("e"/"a"/"h" 2 + f32 5) = 58. A CBOR array of f32s would take 65.
        let bytes = encode(&sample_coordinate());
        assert_eq!(bytes.len(), 58);
        assert!(bytes.len() < 64);
        // A fresh coordinate is smaller still.
        assert!(encode(&Coordinate::new(&Config::default())).len() <= 58);
    }

    fn wire_value(vec: &[f32], error: f64, adjustment: f64, height: f64) -> Vec<u8> {
        let bytes: Vec<u8> = vec.iter().flat_map(|x| x.to_le_bytes()).collect();
        wire_value_raw(Value::Bytes(bytes), error, adjustment, height)
    }

    fn wire_value_raw(v: Value, error: f64, adjustment: f64, height: f64) -> Vec<u8> {
        let map = Value::Map(vec![
            (Value::Text("v".into()), v),
            (Value::Text("e".into()), Value::Float(error)),
            (Value::Text("a".into()), Value::Float(adjustment)),
            (Value::Text("h".into()), Value::Float(height)),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out).unwrap();
        out
    }

    #[test]
    fn hand_built_wire_value_decodes() {
        let c = decode(&wire_value(&[0.5, -0.25], 1.0, -0.5, 0.125)).unwrap();
        assert_eq!(c, coordinate(&[0.5, -0.25], 1.0, -0.5, 0.125));
    }

    #[test]
    fn hostile_decodes_are_errors() {
        let ok = [0.01f32; 8];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("NaN component", wire_value(&[0.0, f32::NAN], 0.5, 0.0, 0.0)),
            (
                "infinite component",
                wire_value(&[f32::INFINITY], 0.5, 0.0, 0.0),
            ),
            ("NaN error", wire_value(&ok, f64::NAN, 0.0, 0.0)),
            ("NaN adjustment", wire_value(&ok, 0.5, f64::NAN, 0.0)),
            ("infinite height", wire_value(&ok, 0.5, 0.0, f64::INFINITY)),
            ("f64 overflowing f32", wire_value(&ok, 1e300, 0.0, 0.0)),
            ("1000 dimensions", wire_value(&[0.0; 1000], 0.5, 0.0, 0.0)),
            ("17 dimensions", wire_value(&[0.0; 17], 0.5, 0.0, 0.0)),
            ("0 dimensions", wire_value(&[], 0.5, 0.0, 0.0)),
            (
                "ragged vector",
                wire_value_raw(Value::Bytes(vec![0; 7]), 0.5, 0.0, 0.0),
            ),
            ("negative error", wire_value(&ok, -0.5, 0.0, 0.0)),
            ("negative height", wire_value(&ok, 0.5, 0.0, -1e-5)),
            ("huge component", wire_value(&[0.0, 2e4], 0.5, 0.0, 0.0)),
            ("huge adjustment", wire_value(&ok, 0.5, -2e4, 0.0)),
            ("huge error", wire_value(&ok, 2e4, 0.0, 0.0)),
            (
                "vector as text",
                wire_value_raw(Value::Text("x".into()), 0.5, 0.0, 0.0),
            ),
            ("truncated", wire_value(&ok, 0.5, 0.0, 0.0)[..20].to_vec()),
            ("empty input", Vec::new()),
        ];
        for (what, bytes) in cases {
            assert!(decode(&bytes).is_err(), "{what} was accepted");
        }
        // Still fine at the limits.
        assert!(decode(&wire_value(&[1e4; 16], 0.0, -1e4, 0.0)).is_ok());
    }

    #[test]
    fn decode_error_names_the_problem() {
        let err = decode(&wire_value(&[0.0], -1.0, 0.0, 0.0)).unwrap_err();
        assert!(err.to_string().contains("error is negative"), "{err}");
        let err = decode(&wire_value(&[0.0; 1000], 0.5, 0.0, 0.0)).unwrap_err();
        assert!(err.to_string().contains("1000 dimensions"), "{err}");
    }

    fn any_float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            -2e4..2e4f64,
            -1.0..1.0f64,
        ]
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoding_accepts_exactly_the_sane_coordinates(
            vec in proptest::collection::vec(any_float(), 0..20),
            error in any_float(),
            adjustment in any_float(),
            height in any_float(),
        ) {
            let vec32: Vec<f32> = vec.iter().map(|&x| x as f32).collect();
            let sane = |x: f32| x.is_finite() && f64::from(x).abs() <= MAX_COMPONENT_SECS;
            let expected = (1..=MAX_DIMENSIONALITY).contains(&vec32.len())
                && vec32.iter().all(|&x| sane(x))
                && sane(error as f32) && error as f32 >= 0.0
                && sane(adjustment as f32)
                && sane(height as f32) && height as f32 >= 0.0;
            let decoded = decode(&wire_value(&vec32, error, adjustment, height));
            prop_assert_eq!(decoded.is_ok(), expected);
            if let Ok(c) = decoded {
                prop_assert!(c.is_valid());
                // A decoded coordinate survives another round trip unchanged.
                prop_assert_eq!(decode(&encode(&c)).unwrap(), c);
            }
        }
    }
}
