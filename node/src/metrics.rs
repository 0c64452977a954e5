//! The node's Prometheus metrics: one `prometheus-client` registry with
//! Baton's own families and libp2p's (swarm, identify, Kademlia, and the
//! bandwidth the swarm's transport counts). The driver writes them, the
//! `/metrics` handler encodes them. Every family has a fixed set of label
//! values (no peer ids, no session ids), so memory is bounded.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use baton_protocol::NodeId;
use baton_protocol::node::{Class, Drops, Flow, Stats};
use baton_protocol::swim;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the probe RTT histogram (seconds): 0.25 ms to 2 s,
/// doubling, from loopback to the far side of the planet.
const RTT_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
    2.048,
];

/// Upper bounds of the suspicion-to-death histogram (seconds): dense around
/// the one-second detection target, then out to Lifeguard's longest
/// suspicion timeouts.
const SUSPICION_BUCKETS: [f64; 14] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0,
];

/// Upper bounds of the claim-to-first-packet histogram (seconds): an RTP
/// instance sends on a 20 ms grid, so little happens under 5 ms; a WAV
/// source loads first, which can take a second or more.
const FIRST_PACKET_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Directions, in the order of the `[_; 2]` arrays below.
const DIRECTIONS: [&str; 2] = ["in", "out"];

/// Member states, in the order of [`crate::state::Shared::members_by_state`].
pub const MEMBER_STATES: [&str; 4] = ["alive", "suspect", "dead", "left"];

/// Session states as the map holds them.
pub const SESSION_STATES: [&str; 2] = ["active", "closed"];

/// Why datagrams were dropped: the fields of [`Drops`], then the driver's
/// own `send_failed` (a full socket buffer on the way out).
pub const DROP_REASONS: [&str; 7] = [
    "bad_size",
    "unknown_key",
    "replayed",
    "bad_tag",
    "undecodable",
    "no_session",
    "send_failed",
];

/// Why a node started a session instance: the label of the
/// claim-to-first-packet histogram.
pub const START_REASONS: [&str; 4] = ["open", "takeover", "transfer", "other"];

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Counters copied from the protocol node's stats after each flush.
///
/// The node keeps running totals, so the driver stores them into the
/// counters' atomics ([`Counter::inner`]) rather than adding deltas: a
/// copy that is skipped or repeated cannot make a counter drift.
#[derive(Debug, Default, Clone)]
struct Copied {
    probes: Counter,
    indirect_probes: Counter,
    failed_probes: Counter,
    expedited_probes: Counter,
    suspicions: Counter,
    refutations: Counter,
    declared_dead: Counter,
    implausible: Counter,
    coords_asked: Counter,
    coords_unasked: Counter,
    /// SWIM messages, in and out.
    messages: [Counter; 2],
    /// Payload bytes of every class, in and out.
    bytes: [Counter; 2],
    /// Every datagram dropped, whatever the reason.
    dropped: Counter,
    refused: Counter,
    refused_by: Counter,
    handshakes: Counter,
    handshake_failures: Counter,
    syncs: Counter,
    claim_pulls: Counter,
    walks: Counter,
    unlinked_pulls: Counter,
    bad_payloads: Counter,
    duplicate_deltas: Counter,
    rejected_records: Counter,
    perf_dropped: Counter,
    over_capacity: Counter,
}

/// The node's metrics and the registry that exposes them.
///
/// Help texts have no final period: `prometheus-client` adds one.
pub struct Metrics {
    registry: Registry,
    /// libp2p's swarm, identify and Kademlia metrics: the driver records
    /// swarm events into it.
    pub libp2p: libp2p::metrics::Metrics,
    copied: Copied,
    /// Per [`Class::ALL`], in and out.
    traffic_bytes: Vec<[Counter; 2]>,
    traffic_packets: Vec<[Counter; 2]>,
    /// Per [`DROP_REASONS`].
    drops: [Counter; 7],
    incarnation: Gauge,
    local_health: Gauge,
    fenced: Gauge,
    duplicate_identity: Counter,
    services_differ: Counter,
    connections: Gauge,
    members: [Gauge; 4],
    sessions: [Gauge; 2],
    sessions_hosted: Gauge,
    sessions_standby: Gauge,
    sessions_paused: Gauge,
    service_restarts: Counter,
    service_failures: Counter,
    peers: Gauge,
    /// Direct probes answered, by round-trip time.
    pub probe_rtt: Histogram,
    /// Members this node saw go from suspect to dead, by how long that took.
    pub suspicion_to_dead: Histogram,
    first_packet: [Histogram; 4],
    /// Per [`RELOAD_RESULTS`].
    config_reloads: [Counter; 2],
    /// Per [`HOOK_RESULTS`].
    hook_runs: [Counter; 3],
    hook_dropped: Counter,
}

/// The `result` of a configuration reload (SIGHUP).
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

/// How a hook's run ended (see [`crate::hooks::Outcome`]).
pub const HOOK_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // libp2p's metrics are not Debug; the counters say enough.
        f.debug_struct("Metrics")
            .field("copied", &self.copied)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    /// Metrics in a registry of their own (tests, and nodes whose swarm
    /// reports no bandwidth).
    fn default() -> Self {
        Metrics::new(Registry::default(), SystemTime::now())
    }
}

impl Metrics {
    /// Registers Baton's and libp2p's families in `registry`, which may
    /// already hold libp2p's bandwidth counters (see
    /// [`crate::driver::swarm::build`]). `started` is when the node started.
    pub fn new(mut registry: Registry, started: SystemTime) -> Self {
        let libp2p = libp2p::metrics::Metrics::new(&mut registry);
        let r = registry.sub_registry_with_prefix("baton");

        let build_info = Family::<Labels2, Gauge>::default();
        r.register(
            "build_info",
            "Always 1; the labels say which build of batond runs",
            build_info.clone(),
        );
        build_info
            .get_or_create(&[
                ("version", env!("CARGO_PKG_VERSION")),
                // Set by the build (the container recipe passes the commit).
                (
                    "revision",
                    option_env!("BATON_REVISION").unwrap_or("unknown"),
                ),
            ])
            .set(1);
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        r.register_with_unit(
            "start_time",
            "When this node started, in seconds since the Unix epoch",
            Unit::Seconds,
            start_time,
        );

        let mut copied = Copied::default();
        let counters: [(&str, &str, &Counter); 24] = [
            ("probes", "SWIM probes started", &copied.probes),
            (
                "indirect_probes",
                "SWIM probes that needed the indirect stage (ping-req)",
                &copied.indirect_probes,
            ),
            (
                "failed_probes",
                "SWIM probes that failed, direct and indirect",
                &copied.failed_probes,
            ),
            (
                "expedited_probes",
                "SWIM probes started early because another member suspected the target",
                &copied.expedited_probes,
            ),
            (
                "suspicions",
                "Suspicions this node raised or confirmed",
                &copied.suspicions,
            ),
            (
                "refutations",
                "Suspicions or death notices about this node that it refuted",
                &copied.refutations,
            ),
            (
                "declared_dead",
                "Members this node declared dead",
                &copied.declared_dead,
            ),
            (
                "implausible_rumours",
                "SWIM rumours ignored because their incarnation was implausibly far ahead \
                 (a member lying about others, or about this node)",
                &copied.implausible,
            ),
            (
                "coordinates_asked",
                "Acks that carried this node's Vivaldi coordinate because the prober asked",
                &copied.coords_asked,
            ),
            (
                "coordinates_unasked",
                "Acks that carried this node's Vivaldi coordinate unasked, because it moved \
                 by more than a fifth of the distance since that prober last got it",
                &copied.coords_unasked,
            ),
            (
                "dropped_messages",
                "Datagrams dropped, every reason together (see baton_datagram_drops_total)",
                &copied.dropped,
            ),
            (
                "refused_peers",
                "Peers this node's peering policy refused",
                &copied.refused,
            ),
            (
                "refused_by_peers",
                "Times a peer refused this node (wrong overlay, network key or allowlist)",
                &copied.refused_by,
            ),
            (
                "handshakes",
                "Admission handshakes that ended with datagram keys",
                &copied.handshakes,
            ),
            (
                "handshake_failures",
                "Admission handshakes that failed (timeouts, broken streams; not refusals)",
                &copied.handshake_failures,
            ),
            (
                "map_syncs",
                "Session-map anti-entropy exchanges completed",
                &copied.syncs,
            ),
            (
                "discovery_walks",
                "Discovery walks (a Kademlia lookup of the overlay's providers) this node made",
                &copied.walks,
            ),
            (
                "claim_pulls",
                "Session-map syncs started because a down member still led sessions here after the claims were due",
                &copied.claim_pulls,
            ),
            (
                "unlinked_pulls",
                "Session-map syncs started because a peer's delta cited history this node lacked",
                &copied.unlinked_pulls,
            ),
            (
                "bad_payloads",
                "Authentic application payloads that could not be decoded",
                &copied.bad_payloads,
            ),
            (
                "duplicate_deltas",
                "Copies of session-map deltas dropped unread because the same bytes were taken in before",
                &copied.duplicate_deltas,
            ),
            (
                "rejected_records",
                "Session-map records rejected: bad signature, no authority, invalid, undecodable",
                &copied.rejected_records,
            ),
            (
                "dropped_perf_summaries",
                "Performance summaries dropped: from non-members, not signed by the node they \
                 speak for, or not newer than the one held",
                &copied.perf_dropped,
            ),
            (
                "takeovers_over_capacity",
                "Sessions this node took over beyond its capacity, because no later backup \
                 had room",
                &copied.over_capacity,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        let messages = Family::<Labels, Counter>::default();
        r.register("messages", "SWIM messages by direction", messages.clone());
        let bytes = Family::<Labels, Counter>::default();
        r.register(
            "bytes",
            "Payload bytes of every traffic class by direction (sealed datagrams, stream \
             frames; no UDP, QUIC or libp2p framing)",
            bytes.clone(),
        );
        // The driver writes the families' own series.
        copied.messages = DIRECTIONS.map(|d| messages.get_or_create(&[("direction", d)]).clone());
        copied.bytes = DIRECTIONS.map(|d| bytes.get_or_create(&[("direction", d)]).clone());

        let traffic_bytes = Family::<Labels2, Counter>::default();
        r.register_with_unit(
            "traffic",
            "Payload bytes by traffic class and direction: probe, gossip and deltas are \
             SWIM datagrams; admission, swim_bulk and map_sync are libp2p streams",
            Unit::Bytes,
            traffic_bytes.clone(),
        );
        let traffic_packets = Family::<Labels2, Counter>::default();
        r.register(
            "traffic_packets",
            "Datagrams or stream frames by traffic class and direction",
            traffic_packets.clone(),
        );
        let per_class = |family: &Family<Labels2, Counter>| -> Vec<[Counter; 2]> {
            Class::ALL
                .iter()
                .map(|class| {
                    DIRECTIONS.map(|direction| {
                        family
                            .get_or_create(&[("class", class.as_str()), ("direction", direction)])
                            .clone()
                    })
                })
                .collect()
        };
        let (traffic_bytes, traffic_packets) =
            (per_class(&traffic_bytes), per_class(&traffic_packets));

        let drops = Family::<Labels, Counter>::default();
        r.register(
            "datagram_drops",
            "Datagrams dropped by reason: bad_tag, replayed or unknown_key in numbers mean \
             an attack or a peer with another network key; send_failed is a full socket \
             buffer",
            drops.clone(),
        );
        let drops = DROP_REASONS.map(|reason| drops.get_or_create(&[("reason", reason)]).clone());

        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            r.register(name, help, gauge.clone());
            gauge
        };
        let incarnation = gauge(r, "incarnation", "This node's SWIM incarnation");
        let local_health = gauge(
            r,
            "local_health",
            "Lifeguard local health multiplier: 0 is healthy; higher means this node \
             misses acks it should get (it is slow, or its network is)",
        );
        let fenced = gauge(
            r,
            "fenced",
            "1 while this node hears nothing from the overlay (every probe fails): it serves \
             no session and claims none until it hears its peers again",
        );
        let duplicate_identity = Counter::default();
        r.register(
            "duplicate_identity",
            "Times two live processes were seen holding one peer id (this node's or a \
             peer's): an operator must stop one",
            duplicate_identity.clone(),
        );
        let services_differ = Counter::default();
        r.register(
            "service_config_mismatches",
            "Times a member was seen announcing other [services.exec] templates than this \
             node's (a digest in its metadata): takeovers between the two may run another \
             command",
            services_differ.clone(),
        );
        let connections = gauge(
            r,
            "connections",
            "Open libp2p connections. Probes travel as datagrams, so this stays small \
             in steady state, whatever the number of members",
        );
        let sessions_hosted = gauge(r, "sessions_hosted", "Sessions this node hosts now");
        let sessions_standby = gauge(
            r,
            "sessions_standby",
            "Sessions this node stands by for warm (an instance running, sending nothing)",
        );
        let sessions_paused = gauge(
            r,
            "sessions_paused",
            "Sessions whose stream this node has paused for want of the client's consent",
        );
        let service_restarts = Counter::default();
        r.register(
            "service_restarts",
            "Times a session's exec command ended by itself and was started again on this node",
            service_restarts.clone(),
        );
        let service_failures = Counter::default();
        r.register(
            "service_failures",
            "Session service instances that failed on this node: would not start, or gave up \
             after quick restarts (the session moves to a backup)",
            service_failures.clone(),
        );
        let peers = gauge(
            r,
            "peers",
            "libp2p peers this node tracks: members, strangers being admitted, refused",
        );
        let members = Family::<Labels, Gauge>::default();
        r.register(
            "members",
            "Members known to this node by state, this node excluded",
            members.clone(),
        );
        let members = MEMBER_STATES.map(|state| members.get_or_create(&[("state", state)]).clone());
        let sessions = Family::<Labels, Gauge>::default();
        r.register(
            "sessions",
            "Sessions in this node's copy of the session map by state (closed: tombstones \
             not yet collected)",
            sessions.clone(),
        );
        let sessions =
            SESSION_STATES.map(|state| sessions.get_or_create(&[("state", state)]).clone());

        let probe_rtt = Histogram::new(RTT_BUCKETS);
        r.register_with_unit(
            "probe_rtt",
            "Round-trip time of direct SWIM probes that were answered",
            Unit::Seconds,
            probe_rtt.clone(),
        );
        let suspicion_to_dead = Histogram::new(SUSPICION_BUCKETS);
        r.register_with_unit(
            "suspicion_to_dead",
            "For members this node saw die: time from the first suspicion it knew of to \
             the member's confirmation as dead",
            Unit::Seconds,
            suspicion_to_dead.clone(),
        );
        let first_packet: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(FIRST_PACKET_BUCKETS));
        r.register_with_unit(
            "session_first_packet",
            "Time from this node's claim of a session (open, takeover or transfer) to the \
             first packet its rtp-audio instance sent the client",
            Unit::Seconds,
            first_packet.clone(),
        );
        let first_packet =
            START_REASONS.map(|reason| first_packet.get_or_create(&[("reason", reason)]).clone());

        let config_reloads = Family::<Labels, Counter>::default();
        r.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result: ok (applied; fields that need a restart \
             are logged), error (the new file was refused as a whole; the old one stays)",
            config_reloads.clone(),
        );
        let config_reloads = RELOAD_RESULTS
            .map(|result| config_reloads.get_or_create(&[("result", result)]).clone());
        let hook_runs = Family::<Labels, Counter>::default();
        r.register(
            "hook_runs",
            "Runs of [hooks] handlers by result: ok (exit status 0), failed (did not start, or \
             exited otherwise), timeout (killed after its timeout)",
            hook_runs.clone(),
        );
        let hook_runs =
            HOOK_RESULTS.map(|result| hook_runs.get_or_create(&[("result", result)]).clone());
        let hook_dropped = Counter::default();
        r.register(
            "hook_events_dropped",
            "Hook runs not made because hooks.concurrency runs and hooks.queue waiting ones were \
             already under way, or the runner fell behind the event stream",
            hook_dropped.clone(),
        );

        Metrics {
            config_reloads,
            hook_runs,
            hook_dropped,
            registry,
            libp2p,
            copied,
            traffic_bytes,
            traffic_packets,
            drops,
            incarnation,
            local_health,
            fenced,
            duplicate_identity,
            services_differ,
            connections,
            members,
            sessions,
            sessions_hosted,
            sessions_standby,
            sessions_paused,
            service_restarts,
            service_failures,
            peers,
            probe_rtt,
            suspicion_to_dead,
            first_packet,
        }
    }

    /// The registry, for encoding.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Copies the protocol node's counters. Atomic stores only: this runs
    /// after every flush of the driver.
    pub fn copy_stats(&self, stats: &Stats, swim: &swim::Stats) {
        let c = &self.copied;
        set(&c.probes, swim.probes);
        set(&c.indirect_probes, swim.indirect_probes);
        set(&c.failed_probes, swim.failed_probes);
        set(&c.expedited_probes, swim.expedited_probes);
        set(&c.suspicions, swim.suspicions);
        set(&c.refutations, swim.refutations);
        set(&c.declared_dead, swim.declared_dead);
        set(&c.implausible, swim.implausible);
        set(&c.coords_asked, swim.coords_asked);
        set(&c.coords_unasked, swim.coords_unasked);
        set(&c.messages[0], swim.messages_in);
        set(&c.messages[1], swim.messages_out);
        let mut totals = [0u64; 2];
        for (i, flows) in [&stats.received, &stats.sent].into_iter().enumerate() {
            for (class, flow) in flows {
                let Flow { packets, bytes } = *flow;
                let k = class_index(*class);
                set(&self.traffic_bytes[k][i], bytes);
                set(&self.traffic_packets[k][i], packets);
                totals[i] += bytes;
            }
        }
        set(&c.bytes[0], totals[0]);
        set(&c.bytes[1], totals[1]);
        let Drops {
            bad_size,
            unknown_key,
            replayed,
            bad_tag,
            undecodable,
            no_session,
        } = stats.drops;
        let protocol = [
            bad_size,
            unknown_key,
            replayed,
            bad_tag,
            undecodable,
            no_session,
        ];
        for (counter, n) in self.drops.iter().zip(protocol) {
            set(counter, n);
        }
        set(
            &c.dropped,
            protocol.iter().sum::<u64>() + self.drops[6].get(),
        );
        set(&c.refused, stats.refusals);
        set(&c.refused_by, stats.refused_by);
        set(&c.handshakes, stats.handshakes);
        set(&c.handshake_failures, stats.handshakes_failed);
        set(&c.syncs, stats.syncs);
        set(&c.claim_pulls, stats.claim_pulls);
        set(&c.walks, stats.walks);
        set(&c.unlinked_pulls, stats.unlinked_pulls);
        set(&c.bad_payloads, stats.bad_payloads);
        set(&c.duplicate_deltas, stats.duplicate_deltas);
    }

    /// What the session engine says of itself: whether this node is fenced,
    /// how many records it rejected.
    pub fn copy_engine(
        &self,
        engine: &baton_protocol::sessions::Engine<impl baton_protocol::session::Signer>,
    ) {
        self.fenced.set(i64::from(engine.is_fenced()));
        set(&self.copied.rejected_records, engine.rejected());
        set(&self.copied.perf_dropped, engine.perf_dropped());
        set(&self.copied.over_capacity, engine.over_capacity());
    }

    /// Counts a peer id seen held by two live processes.
    pub fn duplicate_identity(&self) {
        self.duplicate_identity.inc();
    }

    /// Counts a member seen with other service templates.
    pub fn services_differ(&self) {
        self.services_differ.inc();
    }

    /// Counts a configuration reload: `ok` or not.
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].inc();
    }

    /// Counts a hook's run.
    pub fn hook_ran(&self, outcome: crate::hooks::Outcome) {
        let i = HOOK_RESULTS
            .iter()
            .position(|r| *r == outcome.as_str())
            .unwrap_or(1);
        self.hook_runs[i].inc();
    }

    /// Counts `n` hook runs not made.
    pub fn hook_dropped(&self, n: u64) {
        self.hook_dropped.inc_by(n);
    }

    /// Counts a restart of a session's command.
    pub fn service_restarted(&self) {
        self.service_restarts.inc();
    }

    /// Counts a service instance that failed: would not start, or gave up.
    pub fn service_failed(&self) {
        self.service_failures.inc();
    }

    /// Counts a datagram the socket would not take.
    pub fn send_failed(&self) {
        self.drops[6].inc();
    }

    /// SWIM's incarnation and Lifeguard's local health of this node.
    pub fn set_swim_self(&self, incarnation: u32, local_health: u32) {
        self.incarnation.set(i64::from(incarnation));
        self.local_health.set(i64::from(local_health));
    }

    /// This node's SWIM incarnation, as last copied.
    pub fn incarnation(&self) -> u32 {
        u32::try_from(self.incarnation.get()).unwrap_or(0)
    }

    /// Lifeguard's local health multiplier, as last copied.
    pub fn local_health(&self) -> u32 {
        u32::try_from(self.local_health.get()).unwrap_or(0)
    }

    /// The open libp2p connections gauge.
    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// The claim-to-first-packet histogram for a session started for
    /// `reason` (the record's reason, such as `takeover: primary ... is down`).
    pub fn first_packet(&self, reason: &str) -> &Histogram {
        let kind = reason.split(':').next().unwrap_or_default().trim();
        let i = START_REASONS
            .iter()
            .position(|r| *r == kind)
            .unwrap_or(START_REASONS.len() - 1);
        &self.first_packet[i]
    }

    /// Sets the gauges read from the API's views, just before an encoding.
    pub fn set_views(&self, views: &Counts) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        for (gauge, v) in self.members.iter().zip(views.members) {
            gauge.set(n(v));
        }
        for (gauge, v) in self.sessions.iter().zip(views.sessions) {
            gauge.set(n(v));
        }
        self.sessions_hosted.set(n(views.hosted));
        self.sessions_standby.set(n(views.standby));
        self.sessions_paused.set(n(views.paused));
        self.peers.set(n(views.peers));
    }
}

/// What the API's views count, for [`Metrics::set_views`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Members by state, in [`MEMBER_STATES`] order.
    pub members: [usize; 4],
    /// Sessions by state, in [`SESSION_STATES`] order.
    pub sessions: [usize; 2],
    /// Sessions hosted here.
    pub hosted: usize,
    /// Sessions this node stands by for warm.
    pub standby: usize,
    /// Sessions hosted here whose stream is paused.
    pub paused: usize,
    /// libp2p peers tracked.
    pub peers: usize,
}

/// When each member now suspect was first suspected, to time its way to
/// death. Only suspect members are held, so it is bounded by the member
/// count.
#[derive(Debug, Default)]
pub struct SuspicionClock {
    since: HashMap<NodeId, Instant>,
}

impl SuspicionClock {
    /// Notes that `id` entered `state` at `now`; answers how long it was
    /// suspect when `state` is its death. A new suspicion at a higher
    /// incarnation does not restart the clock (the member never looked
    /// alive in between); a refutation or a departure stops it unread; a
    /// death that no suspicion preceded here (heard as news) is not timed.
    pub fn on_state(&mut self, id: &NodeId, state: swim::State, now: Instant) -> Option<Duration> {
        match state {
            swim::State::Suspect => {
                self.since.entry(id.clone()).or_insert(now);
                None
            }
            swim::State::Dead => self
                .since
                .remove(id)
                .map(|since| now.saturating_duration_since(since)),
            swim::State::Alive | swim::State::Left => {
                self.since.remove(id);
                None
            }
        }
    }

    /// Forgets a member that was removed from the table.
    pub fn forget(&mut self, id: &NodeId) {
        self.since.remove(id);
    }
}

/// Stores a running total into a counter.
fn set(counter: &Counter, total: u64) {
    counter.inner().store(total, Ordering::Relaxed);
}

/// The position of `class` in [`Class::ALL`].
fn class_index(class: Class) -> usize {
    Class::ALL.iter().position(|c| *c == class).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::new(&[n; 8]).unwrap()
    }

    #[test]
    fn death_is_timed_from_the_first_suspicion() {
        let mut clock = SuspicionClock::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(clock.on_state(&id(1), swim::State::Alive, t0), None);
        assert_eq!(clock.on_state(&id(1), swim::State::Suspect, ms(100)), None);
        // Suspected again at a higher incarnation: still the first clock.
        assert_eq!(clock.on_state(&id(1), swim::State::Suspect, ms(400)), None);
        assert_eq!(
            clock.on_state(&id(1), swim::State::Dead, ms(900)),
            Some(Duration::from_millis(800))
        );
        // Dead again (news from another member): nothing left to time.
        assert_eq!(clock.on_state(&id(1), swim::State::Dead, ms(950)), None);
    }

    #[test]
    fn a_refuted_or_departed_suspect_is_not_timed() {
        let mut clock = SuspicionClock::default();
        let t0 = Instant::now();
        for end in [swim::State::Alive, swim::State::Left] {
            clock.on_state(&id(2), swim::State::Suspect, t0);
            clock.on_state(&id(2), end, t0);
            assert_eq!(
                clock.on_state(&id(2), swim::State::Dead, t0),
                None,
                "{end:?}"
            );
        }
        clock.on_state(&id(3), swim::State::Suspect, t0);
        clock.forget(&id(3));
        assert_eq!(clock.on_state(&id(3), swim::State::Dead, t0), None);
        assert!(
            clock.since.is_empty(),
            "nothing held for members not suspect"
        );
    }

    #[test]
    fn a_session_start_is_labelled_by_the_kind_of_its_reason() {
        for (reason, label) in [
            ("open", "open"),
            ("takeover: primary 12D3 is down", "takeover"),
            ("transfer: client loss 5.0%", "transfer"),
            ("restore", "other"),
            ("", "other"),
        ] {
            let m = Metrics::default();
            m.first_packet(reason).observe(0.1);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, m.registry()).unwrap();
            let counts: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("baton_session_first_packet_seconds_count"))
                .filter(|l| l.ends_with(" 1"))
                .collect();
            assert_eq!(
                counts,
                [format!(
                    "baton_session_first_packet_seconds_count{{reason=\"{label}\"}} 1"
                )],
                "{reason:?}"
            );
        }
    }

    #[test]
    fn copying_totals_twice_does_not_count_twice() {
        let m = Metrics::default();
        let stats = Stats {
            sent: [(
                Class::Gossip,
                Flow {
                    packets: 3,
                    bytes: 300,
                },
            )]
            .into(),
            received: [(
                Class::Deltas,
                Flow {
                    packets: 1,
                    bytes: 50,
                },
            )]
            .into(),
            drops: Drops {
                unknown_key: 2,
                ..Drops::default()
            },
            ..Stats::default()
        };
        let swim = swim::Stats {
            probes: 5,
            ..swim::Stats::default()
        };
        m.send_failed();
        m.copy_stats(&stats, &swim);
        m.copy_stats(&stats, &swim);
        let gossip = class_index(Class::Gossip);
        let deltas = class_index(Class::Deltas);
        assert_eq!(m.traffic_bytes[gossip][1].get(), 300);
        assert_eq!(m.traffic_packets[gossip][1].get(), 3);
        assert_eq!(m.traffic_bytes[deltas][0].get(), 50);
        assert_eq!(m.traffic_bytes[gossip][0].get(), 0);
        assert_eq!(m.copied.bytes.each_ref().map(Counter::get), [50, 300]);
        assert_eq!(m.copied.probes.get(), 5);
        assert_eq!(m.drops[1].get(), 2, "unknown_key");
        assert_eq!(m.copied.dropped.get(), 3, "unknown_key and send_failed");
    }
}
