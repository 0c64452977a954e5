//! The placement policy: pure functions that choose a session's primary and
//! backups, decide which backup takes over, and when a session should move
//! to a peer that serves its client's location better. No IO, no clock: the
//! session engine feeds them what it knows.
//!
//! Backups are pre-provisioned as in Raman & Katz: the sessions of one
//! primary are spread over its backups so that, if the primary fails, no
//! backup receives more sessions than its spare capacity.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::NodeId;

/// What the policy knows of one candidate node.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node.
    pub id: NodeId,
    /// Estimated RTT from the deciding node (Vivaldi), if known.
    pub distance: Option<Duration>,
    /// Sessions it will host.
    pub capacity: u32,
    /// Sessions it hosts now.
    pub load: u32,
    /// What is known of its service at the client's location.
    pub perf: Option<Perf>,
}

impl Candidate {
    /// Sessions it could still take.
    pub fn spare(&self) -> u32 {
        self.capacity.saturating_sub(self.load)
    }
}

/// Client performance aggregated over a location (loss fraction, jitter and
/// RTT as reported by clients, RFC 3550 style).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perf {
    /// Fraction of packets lost, 0..=1.
    pub loss: f64,
    /// Interarrival jitter.
    pub jitter: Duration,
    /// Round-trip time to the client.
    pub rtt: Duration,
    /// Reports aggregated.
    pub samples: u32,
}

/// Thresholds of the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Backups per session.
    pub backups: usize,
    /// Service is poor above this loss fraction...
    pub max_loss: f64,
    /// ...or this jitter...
    pub max_jitter: Duration,
    /// ...or this RTT.
    pub max_rtt: Duration,
    /// Poor service must last this long before a transfer.
    pub poor_for: Duration,
    /// A session that moved is not moved again before this.
    pub min_dwell: Duration,
    /// Reports a location summary needs before it is trusted.
    pub min_samples: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backups: 2,
            max_loss: 0.03,
            max_jitter: Duration::from_millis(40),
            max_rtt: Duration::from_millis(300),
            poor_for: Duration::from_secs(10),
            min_dwell: Duration::from_secs(60),
            min_samples: 3,
        }
    }
}

impl Config {
    /// Whether `perf` is poor service.
    pub fn is_poor(&self, perf: &Perf) -> bool {
        perf.loss > self.max_loss || perf.jitter > self.max_jitter || perf.rtt > self.max_rtt
    }
}

/// A comparable badness of a candidate: lower is better. Known poor service
/// at the location dominates, then measured performance, then distance.
fn score(c: &Candidate, config: &Config) -> f64 {
    let distance_ms = c.distance.map_or(500.0, |d| d.as_secs_f64() * 1e3);
    let perf = match c.perf {
        Some(p) if p.samples >= config.min_samples => {
            let poor = if config.is_poor(&p) { 10_000.0 } else { 0.0 };
            poor + p.loss * 5_000.0 + p.jitter.as_secs_f64() * 1e3 + p.rtt.as_secs_f64() * 1e3 / 2.0
        }
        _ => 0.0,
    };
    perf + distance_ms
}

fn by_score<'a>(candidates: &'a [Candidate], config: &Config) -> Vec<&'a Candidate> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| {
        score(a, config)
            .total_cmp(&score(b, config))
            .then_with(|| a.id.cmp(&b.id))
    });
    sorted
}

/// Chooses the primary of a new session among `candidates` (the deciding
/// node included): the best-scoring one with spare capacity.
pub fn choose_primary(candidates: &[Candidate], config: &Config) -> Option<NodeId> {
    by_score(candidates, config)
        .into_iter()
        .find(|c| c.spare() > 0)
        .map(|c| c.id.clone())
}

/// Chooses the ordered backups of a session of `primary`.
///
/// `first_backup_of` counts, for each node, the sessions of this primary it
/// is already first backup of: those are the sessions it receives if the
/// primary fails, so a node is a first backup only while that count stays
/// below its spare capacity (backup pre-provisioning). Later backups are the
/// best remaining candidates with any spare capacity.
pub fn choose_backups(
    primary: &NodeId,
    candidates: &[Candidate],
    first_backup_of: &BTreeMap<NodeId, u32>,
    config: &Config,
) -> Vec<NodeId> {
    let ranked: Vec<&Candidate> = by_score(candidates, config)
        .into_iter()
        .filter(|c| c.id != *primary && c.spare() > 0)
        .collect();
    let mut out: Vec<NodeId> = Vec::with_capacity(config.backups);
    // Among nodes whose pre-provisioned share is not exhausted, prefer the
    // least loaded by that share, then the best score, so that one primary's
    // sessions spread over its backups.
    let first = ranked
        .iter()
        .filter(|c| first_backup_of.get(&c.id).copied().unwrap_or(0) < c.spare())
        .min_by_key(|c| {
            let taken = first_backup_of.get(&c.id).copied().unwrap_or(0);
            // Fraction of the spare capacity already promised, in per mille.
            u64::from(taken) * 1000 / u64::from(c.spare().max(1))
        });
    if let Some(first) = first {
        out.push(first.id.clone());
    }
    for c in ranked {
        if out.len() >= config.backups {
            break;
        }
        if !out.contains(&c.id) {
            out.push(c.id.clone());
        }
    }
    out
}

/// Who takes a session over when its primary is dead or gone: the first
/// backup, in order, that `is_alive` says is alive.
pub fn takeover_by(backups: &[NodeId], is_alive: impl Fn(&NodeId) -> bool) -> Option<&NodeId> {
    backups.iter().find(|b| is_alive(b))
}

/// Decides whether a session should move: its client has had poor service
/// for at least `poor_for`, the session has not moved in `min_dwell`, and a
/// peer is clearly better at the client's location (not poor itself, and at
/// most half the loss and jitter). Returns the peer to move to.
pub fn transfer_to(
    current: &Perf,
    poor_since: Option<Duration>,
    since_last_move: Duration,
    peers: &[Candidate],
    config: &Config,
) -> Option<NodeId> {
    let poor_long_enough = poor_since.is_some_and(|d| d >= config.poor_for);
    if !config.is_poor(current) || !poor_long_enough || since_last_move < config.min_dwell {
        return None;
    }
    by_score(peers, config)
        .into_iter()
        .filter(|c| c.spare() > 0)
        .find(|c| match c.perf {
            Some(p) if p.samples >= config.min_samples => {
                !config.is_poor(&p)
                    && p.loss <= current.loss / 2.0
                    && p.jitter <= current.jitter / 2 + Duration::from_millis(5)
            }
            _ => false,
        })
        .map(|c| c.id.clone())
}

/// The location key of a client address: its /24 for IPv4, its /48 for IPv6.
pub fn location_key(client: &std::net::SocketAddr) -> String {
    match client.ip() {
        std::net::IpAddr::V4(ip) => {
            let o = ip.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(ip) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> NodeId {
        NodeId::synthetic(n)
    }

    fn cand(n: u32, distance_ms: u64, capacity: u32, load: u32) -> Candidate {
        Candidate {
            id: id(n),
            distance: Some(Duration::from_millis(distance_ms)),
            capacity,
            load,
            perf: None,
        }
    }

    fn perf(loss: f64, jitter_ms: u64) -> Perf {
        Perf {
            loss,
            jitter: Duration::from_millis(jitter_ms),
            rtt: Duration::from_millis(20),
            samples: 10,
        }
    }

    #[test]
    fn primary_is_the_nearest_with_spare_capacity() {
        let c = [cand(1, 5, 10, 10), cand(2, 10, 10, 0), cand(3, 50, 10, 0)];
        assert_eq!(choose_primary(&c, &Config::default()), Some(id(2)));
    }

    #[test]
    fn backups_exclude_the_primary_and_are_ordered_by_distance() {
        let c = [
            cand(0, 0, 10, 0),
            cand(1, 30, 10, 0),
            cand(2, 10, 10, 0),
            cand(3, 20, 10, 0),
        ];
        let b = choose_backups(&id(0), &c, &BTreeMap::new(), &Config::default());
        assert_eq!(b, vec![id(2), id(3)]);
    }

    #[test]
    fn one_primarys_sessions_spread_within_backup_spare_capacity() {
        // Node 0 hosts 12 sessions; nodes 1-3 have 5 spare each. If node 0
        // fails, no node may receive more than its spare capacity.
        let c = [cand(1, 10, 10, 5), cand(2, 20, 10, 5), cand(3, 30, 10, 5)];
        let mut first_of: BTreeMap<NodeId, u32> = BTreeMap::new();
        for _ in 0..12 {
            let b = choose_backups(&id(0), &c, &first_of, &Config::default());
            *first_of.entry(b[0].clone()).or_default() += 1;
        }
        for (node, n) in &first_of {
            assert!(*n <= 5, "{node} would receive {n} sessions");
        }
        assert_eq!(first_of.values().sum::<u32>(), 12);
    }

    #[test]
    fn known_poor_service_at_the_location_is_avoided() {
        let mut near = cand(1, 5, 10, 0);
        near.perf = Some(perf(0.2, 80));
        let far = cand(2, 40, 10, 0);
        assert_eq!(
            choose_primary(&[near, far], &Config::default()),
            Some(id(2))
        );
    }

    #[test]
    fn takeover_goes_to_the_first_live_backup() {
        let backups = [id(1), id(2), id(3)];
        assert_eq!(takeover_by(&backups, |b| *b != id(1)), Some(&id(2)));
        assert_eq!(takeover_by(&backups, |_| false), None);
    }

    #[test]
    fn transfer_needs_sustained_poor_service_a_clearly_better_peer_and_dwell() {
        let config = Config::default();
        let bad = perf(0.10, 60);
        let mut good = cand(2, 30, 10, 0);
        good.perf = Some(perf(0.0, 5));
        let peers = [good];
        let long = Some(Duration::from_secs(15));
        let dwell = Duration::from_secs(120);
        assert_eq!(transfer_to(&bad, long, dwell, &peers, &config), Some(id(2)));
        // Not long enough, or moved recently: hysteresis.
        assert_eq!(
            transfer_to(&bad, Some(Duration::from_secs(2)), dwell, &peers, &config),
            None
        );
        assert_eq!(
            transfer_to(&bad, long, Duration::from_secs(5), &peers, &config),
            None
        );
        // Good service: stay.
        assert_eq!(
            transfer_to(&perf(0.0, 5), long, dwell, &peers, &config),
            None
        );
        // A peer only slightly better is not worth a move.
        let mut meh = cand(3, 30, 10, 0);
        meh.perf = Some(perf(0.08, 50));
        assert_eq!(transfer_to(&bad, long, dwell, &[meh], &config), None);
    }

    #[test]
    fn location_keys() {
        assert_eq!(
            location_key(&"198.18.3.7:5004".parse().unwrap()),
            "198.18.3.0/24"
        );
        assert_eq!(
            location_key(&"[2001:db8:1:2::5]:5004".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }
}
