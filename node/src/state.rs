//! What the driver knows that the API and the CLI show: the member table, the
//! connected peers, counters and the event stream. The driver writes it; API
//! handlers only read it, so they never touch the protocol state machine.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

/// Capacity of the event stream: a subscriber that falls further behind
/// misses events (and is told so) rather than growing memory.
pub const EVENT_BUFFER: usize = 1024;

/// State shared between the driver (writer) and the API (readers).
#[derive(Debug)]
pub struct Shared {
    /// This node.
    pub local: LocalInfo,
    /// Members by peer id (base58), this node excluded.
    pub members: DashMap<String, MemberView>,
    /// libp2p peers currently connected or recently refused, by peer id.
    pub peers: DashMap<String, PeerView>,
    /// Counters for `/metrics` and `/v1/status`.
    pub metrics: Metrics,
    /// Member state changes and other events, for `/v1/events`.
    pub events: broadcast::Sender<ApiEvent>,
    /// Addresses this node listens on, as reported by libp2p.
    pub listen_addrs: RwLock<Vec<String>>,
}

/// Facts about this node that do not change while it runs.
#[derive(Debug, Clone, Serialize)]
pub struct LocalInfo {
    /// Peer id, base58.
    pub id: String,
    /// Human name (`--name`).
    pub name: String,
    /// Overlay name: only nodes of the same overlay are admitted.
    pub overlay: String,
    /// `lan` or `wan`.
    pub profile: String,
    /// Sessions this node will host.
    pub capacity: u32,
    /// Software version.
    pub version: String,
    /// When the node started.
    #[serde(skip)]
    pub started: SystemTime,
}

/// One member as shown by `GET /v1/members` and `baton members`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberView {
    /// Peer id, base58.
    pub id: String,
    /// The name it announced.
    pub name: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// Incarnation of that state.
    pub incarnation: u32,
    /// Smoothed RTT of direct probes, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// RTT estimated from Vivaldi coordinates, in milliseconds.
    pub distance_ms: Option<f64>,
    /// Addresses it announced.
    pub addrs: Vec<String>,
    /// Sessions it will host.
    pub capacity: u32,
    /// Sessions it hosts.
    pub load: u32,
    /// Wall-clock time of its last state change, RFC 3339.
    pub since: String,
}

/// A libp2p peer as shown by `baton peers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerView {
    /// Peer id, base58.
    pub id: String,
    /// Remote addresses of its open connections.
    pub addrs: Vec<String>,
    /// Open connections.
    pub connections: u32,
    /// `pending` (handshake running), `admitted` or `refused`.
    pub admission: String,
    /// Why it was refused, when it was.
    pub reason: Option<String>,
}

/// An event of `GET /v1/events`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiEvent {
    /// `member` (a member changed state) or `refuted` (this node refuted a
    /// suspicion about itself).
    pub kind: String,
    /// Wall-clock time, RFC 3339 with milliseconds.
    pub at: String,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The member concerned (this node for `refuted`).
    pub id: String,
    /// Its name, when known.
    pub name: String,
    /// Its new state.
    pub state: String,
    /// Its previous state, if it had one.
    pub previous: Option<String>,
    /// The incarnation of the new state.
    pub incarnation: u32,
}

/// Monotonic counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Probes started.
    pub probes: AtomicU64,
    /// Probes that failed (direct and indirect).
    pub failed_probes: AtomicU64,
    /// Suspicions this node raised.
    pub suspicions: AtomicU64,
    /// Refutations of suspicions about this node.
    pub refutations: AtomicU64,
    /// Members this node declared dead.
    pub declared_dead: AtomicU64,
    /// SWIM messages received.
    pub messages_in: AtomicU64,
    /// SWIM messages sent.
    pub messages_out: AtomicU64,
    /// SWIM bytes received (payload, without libp2p framing).
    pub bytes_in: AtomicU64,
    /// SWIM bytes sent (payload, without libp2p framing).
    pub bytes_out: AtomicU64,
    /// Messages dropped: undecodable, from refused peers, or queues full.
    pub dropped: AtomicU64,
    /// Peers refused by the peering policy.
    pub refused: AtomicU64,
    /// This node's incarnation.
    pub incarnation: AtomicU32,
    /// Lifeguard's local health multiplier.
    pub local_health: AtomicU32,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Empty state for a node.
    pub fn new(local: LocalInfo) -> Self {
        Shared {
            local,
            members: DashMap::new(),
            peers: DashMap::new(),
            metrics: Metrics::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            listen_addrs: RwLock::new(Vec::new()),
        }
    }

    /// Members sorted by name then id, for stable output.
    pub fn members_sorted(&self) -> Vec<MemberView> {
        let mut out: Vec<MemberView> = self.members.iter().map(|m| m.value().clone()).collect();
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        out
    }

    /// Peers sorted by id.
    pub fn peers_sorted(&self) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self.peers.iter().map(|p| p.value().clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Counts members by state name.
    pub fn members_by_state(&self) -> [(&'static str, usize); 4] {
        let mut counts = [("alive", 0), ("suspect", 0), ("dead", 0), ("left", 0)];
        for m in self.members.iter() {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == m.state) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// Publishes an event to every `/v1/events` subscriber (none is fine).
    pub fn publish(&self, event: ApiEvent) {
        let _ = self.events.send(event);
    }
}

/// Wall-clock `now` as (RFC 3339 with milliseconds, Unix milliseconds).
pub fn wall_clock() -> (String, u64) {
    let now = SystemTime::now();
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (humantime::format_rfc3339_millis(now).to_string(), ms)
}
