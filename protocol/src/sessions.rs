//! The session engine: decides, from the replicated map, the membership view
//! and client reports, which sessions this node must host, and when it must
//! claim, repair, hand over or stop one. Sans-IO like `swim`: feed it with
//! `handle_*`, drain [`Engine::poll_action`], wake it at [`Engine::poll_timeout`].
//!
//! - Open: the policy picks the primary; if it is another node, this node
//!   creates the session and hands it over at once (only a primary writes).
//! - Takeover: when a primary is dead or has left in this node's view, its
//!   first live backup claims the session and starts it; the next live backup
//!   does so after a stagger if the first one did not.
//! - Repair: a primary replaces dead backups.
//! - Transfer: a primary whose client reports poor service, while a peer is
//!   clearly better at the client's location, hands the session over
//!   make-before-break: it keeps sending until the new primary confirms it
//!   started (or a timeout passes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::map::{self, Applied, Delta, Map, NewSession, Rejection, WriteError};
use crate::meta::{NodeMeta, Tags};
use crate::policy::{self, Candidate, Perf};
use crate::session::{Record, SessionState, Signer};
use crate::swim::State;

/// How the reason of a handover after a service failure begins (`service
/// failed on NODE: why`); its writer is the node the service failed on.
const SERVICE_FAILED: &str = "service failed on";

/// The most bytes of a service's error that a reason quotes: with the
/// longest words around it (`failed: the service would not run on` and a
/// node id) the reason stays within [`crate::map::MAX_REASON_BYTES`].
const MAX_WHY_BYTES: usize = 180;

/// `why` cut to [`MAX_WHY_BYTES`] at a character boundary, ended with `…`
/// when cut.
fn short_why(why: &str) -> String {
    if why.len() <= MAX_WHY_BYTES {
        return why.to_owned();
    }
    let mut end = MAX_WHY_BYTES - '…'.len_utf8();
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &why[..end])
}

/// Engine parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Placement and transfer thresholds.
    pub policy: policy::Config,
    /// Delay between the claims of successive live backups.
    pub claim_stagger: Duration,
    /// How often the engine re-examines every session.
    pub check_interval: Duration,
    /// How long an old primary keeps a handed-over session running while it
    /// waits for the new primary to confirm that it started.
    pub handover_timeout: Duration,
    /// How often this node's client-performance summary is shared when it
    /// changed.
    pub perf_interval: Duration,
    /// An unchanged summary is still shared this often.
    pub perf_repeat: Duration,
    /// How often collected tombstones are looked for.
    pub gc_interval: Duration,
    /// After a fence lifts, and after the engine starts, how long this node
    /// waits (while anti-entropy brings it what it missed) before it serves
    /// the sessions its map says it is primary of. Sessions it opens itself
    /// are served at once.
    pub resume_grace: Duration,
    /// How long a session this node's previous process (or this process
    /// before a fence) left it primary of waits, at most, for the map
    /// comparisons with its live backups (see [`Action::Compare`]) before
    /// it is served all the same.
    pub compare_timeout: Duration,
    /// The map's parameters.
    pub map: map::Config,
    /// Whether clients must show they want their stream.
    pub consent: ConsentConfig,
    /// How a session's first backup stands by, unless the session's
    /// `standby` parameter says otherwise.
    pub standby: Standby,
    /// Sessions older than this are closed by their primary (none when
    /// `None`): a forgotten session does not stream for ever.
    pub max_lifetime: Option<Duration>,
}

/// How a session's first backup stands by (the session parameter
/// `standby=cold|warm`, or [`Config::standby`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Standby {
    /// Nothing runs on the backup: a takeover starts the service (today's
    /// re-instantiation: detection, claim, then the service's start-up).
    #[default]
    Cold,
    /// The service runs on the first backup too, sending nothing (its gate
    /// closed): a takeover only opens it. Costs an instance per session
    /// (counted against the backup's capacity) to save the start-up.
    Warm,
}

impl Standby {
    /// The parameter's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Standby::Cold => "cold",
            Standby::Warm => "warm",
        }
    }

    /// Parses the parameter.
    pub fn parse(s: &str) -> Option<Standby> {
        match s {
            "cold" => Some(Standby::Cold),
            "warm" => Some(Standby::Warm),
            _ => None,
        }
    }

    /// Checks a session's `standby` parameter, if it has one: the engine
    /// reads it, whatever the service; a value it cannot read is refused
    /// at open rather than silently taken as the configured default.
    pub fn check_param(params: &BTreeMap<String, String>) -> Result<(), String> {
        match params.get("standby") {
            Some(v) if Standby::parse(v).is_none() => {
                Err(format!("{v:?} is not a standby mode: cold or warm"))
            }
            _ => Ok(()),
        }
    }
}

/// Consent before streaming (RFC 7675 in spirit, as SIP and WebRTC media
/// servers do): a session's stream goes on only while its client shows it
/// wants it, so that nobody can aim a stream at an address that did not
/// ask for it. Consent is an RTCP receiver report on the stream from the
/// client's address, or a report on the session through any node's API (a
/// provider's front end vouching for a client that sends no RTCP).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentConfig {
    /// Whether streams need consent at all.
    pub required: bool,
    /// A new session's client must consent within this.
    pub first: Duration,
    /// ...then at least this often. A node that takes a session over (or
    /// receives it by transfer) grants a full interval from then: consent
    /// survives moves.
    pub interval: Duration,
    /// A stream without consent pauses; its session is closed after this.
    pub grace: Duration,
    /// Clients in these networks (address, prefix length) need no consent.
    pub exempt: Vec<(std::net::IpAddr, u8)>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            required: true,
            first: Duration::from_secs(10),
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            exempt: Vec::new(),
        }
    }
}

impl ConsentConfig {
    /// Whether a session whose client is at `client` (`ip:port`) needs
    /// consent.
    pub fn applies_to(&self, client: &str) -> bool {
        if !self.required {
            return false;
        }
        let Ok(addr) = client.parse::<std::net::SocketAddr>() else {
            return true;
        };
        !self
            .exempt
            .iter()
            .any(|(net, prefix)| in_network(addr.ip(), *net, *prefix))
    }
}

/// Whether `ip` is in `net/prefix`.
pub fn in_network(ip: std::net::IpAddr, net: std::net::IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(n)) => {
            let bits = u32::from(prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(n)) => {
            let bits = u32::from(prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Where a hosted session's consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Consent {
    /// The stream may go on until then.
    until: Instant,
    /// Since when it is paused for want of consent.
    paused_since: Option<Instant>,
    /// When the client last consented, or, when it has not here, when this
    /// node began to host the session (the open, a takeover or transfer).
    since: Instant,
    /// When the client last consented here (a report, or a member's
    /// word); `None` while it has not.
    heard: Option<Instant>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: policy::Config::default(),
            claim_stagger: Duration::from_millis(500),
            check_interval: Duration::from_millis(200),
            handover_timeout: Duration::from_secs(5),
            perf_interval: Duration::from_secs(2),
            perf_repeat: Duration::from_secs(30),
            gc_interval: Duration::from_secs(10),
            resume_grace: Duration::from_secs(2),
            compare_timeout: Duration::from_secs(3),
            consent: ConsentConfig::default(),
            standby: Standby::Cold,
            max_lifetime: None,
            map: map::Config::default(),
        }
    }
}

/// What the engine asks the node to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start hosting this session (this node is its primary now).
    Start(Box<Record>),
    /// Stop hosting the session `id`.
    Stop {
        /// The session.
        id: String,
        /// Why (moved, closed, lost a concurrent claim).
        reason: String,
    },
    /// Stop sending the session's stream for now (its client gave no
    /// consent), keeping the instance.
    Pause {
        /// The session.
        id: String,
        /// Why.
        reason: String,
    },
    /// Send the session's stream again (consent came back).
    Resume {
        /// The session.
        id: String,
    },
    /// Start the session's service in warm standby: running, sending
    /// nothing. A later [`Action::Start`] of the same session promotes it;
    /// an [`Action::Stop`] ends it.
    Warm(Box<Record>),
    /// Compare maps with these members now (a map sync), and tell the
    /// engine when each comparison ends, done or failed
    /// ([`Engine::handle_compared`]): a session this node was primary of
    /// before it restarted (or was fenced) waits for them, as one of them
    /// may have taken it over meanwhile.
    Compare {
        /// The members.
        peers: Vec<NodeId>,
    },
    /// Send `to` this node's word that the client of session `id`
    /// consented to its stream here lately ([`AppMessage::Vouch`]): this
    /// node stops hosting it, superseded by `to`'s version.
    Vouch {
        /// The session.
        id: String,
        /// Its primary now.
        to: NodeId,
        /// How long ago the client last consented (ms).
        age_ms: u32,
    },
    /// Spread this payload to every member (piggybacked on SWIM); `key`
    /// identifies what a newer payload replaces.
    Broadcast {
        /// Replacement key.
        key: Vec<u8>,
        /// Encoded [`AppMessage`].
        payload: Vec<u8>,
    },
}

/// Application messages carried on SWIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AppMessage {
    /// A new version of a session.
    #[serde(rename = "d")]
    Delta(Box<Delta>),
    /// A node's client-performance summary by location.
    #[serde(rename = "p")]
    Perf(PerfSummary),
    /// The root of the sender's map digest ([`crate::map::Digest::root`]),
    /// offered with membership anti-entropy: a receiver whose root differs
    /// starts a map sync with the sender. The node handles it, not the engine.
    #[serde(rename = "r")]
    Root(u64),
    /// A client's report on a session, sent by the node whose API took it
    /// to the session's primary (unicast; a report is also consent).
    #[serde(rename = "q")]
    Report {
        /// The session.
        #[serde(rename = "i")]
        id: String,
        /// Loss, per mille.
        #[serde(rename = "l")]
        loss_permille: u16,
        /// Jitter, ms.
        #[serde(rename = "j")]
        jitter_ms: u32,
        /// Round-trip time, ms.
        #[serde(rename = "t")]
        rtt_ms: u32,
        /// Packets the client received over the span the loss is about
        /// ([`Report::packets`]); left out when 0 (unknown).
        #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
        packets: u32,
    },
    /// A request to close a session, sent by the node whose API took it to
    /// the session's primary (unicast).
    #[serde(rename = "c")]
    Close {
        /// The session.
        #[serde(rename = "i")]
        id: String,
    },
    /// The sender hosted session `id` until a newer version made another
    /// node its primary, and its client consented to the stream there
    /// within the consent interval: the primary takes it as the client's
    /// consent (unicast to the primary). After a partition healed, the
    /// version that wins may be one claimed on the side the client could
    /// not reach, whose stream paused for want of consent; the client
    /// reports only to the sources it hears, so without this word the
    /// winner stayed silent and the session was closed (testnet
    /// partition-wan, partitions of 31 s).
    #[serde(rename = "v")]
    Vouch {
        /// The session.
        #[serde(rename = "i")]
        id: String,
        /// How long before the sending the client last consented (ms): the
        /// consent counts from then, so that it is never stretched by
        /// being passed on.
        #[serde(rename = "a")]
        age_ms: u32,
    },
}

/// A node's view of its clients' service, by location key, signed by that
/// node: summaries travel by gossip, so a relay is not their author, and
/// only the author's signature binds one to the node it speaks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfSummary {
    /// The node that served those clients.
    #[serde(rename = "n")]
    pub node: NodeId,
    /// Location key -> (loss in per mille, jitter ms, rtt ms, samples).
    #[serde(rename = "l")]
    pub locations: BTreeMap<String, (u32, u32, u32, u32)>,
    /// When the node wrote it (Unix ms): a newer summary replaces an older
    /// one, and an older one (replayed) changes nothing.
    #[serde(rename = "t", default)]
    pub at_ms: u64,
    /// `node`'s ed25519 signature of [`PerfSummary::signing_bytes`].
    #[serde(rename = "g", with = "serde_bytes", default)]
    pub signature: Vec<u8>,
}

impl PerfSummary {
    /// What the signature covers: a domain tag, then the CBOR encoding of
    /// the summary with an empty signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let unsigned = PerfSummary {
            signature: Vec::new(),
            ..self.clone()
        };
        let mut out = b"baton perf summary 1\0".to_vec();
        ciborium::into_writer(&unsigned, &mut out).expect("CBOR encoding into a Vec cannot fail");
        out
    }
}

/// Location key -> (loss in per mille, jitter ms, rtt ms, samples).
type Locations = BTreeMap<String, (u32, u32, u32, u32)>;

/// Most peers' summaries kept: one per member, and members are bounded by
/// admission; this also bounds a flood that races a member's departure.
pub const MAX_PEER_SUMMARIES: usize = 4096;

/// A peer's summary not renewed for this many `perf_repeat`s (90 s by
/// default) is dropped: its author shares an unchanged one every
/// `perf_repeat`, so a summary this old is one it no longer stands by (it
/// serves no client now, or went away and is not forgotten yet).
pub const PERF_SUMMARY_TTL_REPEATS: u32 = 3;

/// Most locations in a summary, so most this node keeps of its own clients
/// (the least recently reported goes first): a summary with more would be
/// refused by every peer.
pub const MAX_SUMMARY_LOCATIONS: usize = 256;

/// A location of this node's own clients with no report for this long is
/// forgotten: its average describes clients that are gone.
pub const OWN_LOCATION_TTL: Duration = Duration::from_secs(10 * 60);

impl AppMessage {
    /// Encodes for SWIM.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).expect("CBOR encoding into a Vec cannot fail");
        out
    }

    /// A report to send to a session's primary.
    pub fn report(id: &str, report: &Report) -> AppMessage {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        AppMessage::Report {
            id: id.to_string(),
            loss_permille: (report.loss.clamp(0.0, 1.0) * 1000.0).round() as u16,
            jitter_ms: ms(report.jitter),
            rtt_ms: ms(report.rtt),
            packets: u32::try_from(report.packets).unwrap_or(u32::MAX),
        }
    }

    /// Decodes bytes from a peer (at most one SWIM message's worth).
    pub fn decode(bytes: &[u8]) -> Result<AppMessage, String> {
        if bytes.len() > crate::wire::MAX_MESSAGE_BYTES {
            return Err(format!("application payload of {} bytes", bytes.len()));
        }
        let mut reader = bytes;
        let message: AppMessage = ciborium::from_reader(&mut reader).map_err(|e| e.to_string())?;
        if !reader.is_empty() {
            return Err("trailing bytes after the application payload".into());
        }
        if let AppMessage::Perf(p) = &message
            && p.locations.len() > MAX_SUMMARY_LOCATIONS
        {
            return Err("too many locations in a performance summary".into());
        }
        Ok(message)
    }
}

/// The broadcast key of a node's performance summary: a newer summary of
/// the same node replaces the queued one, others' stay.
fn perf_key(node: &NodeId) -> Vec<u8> {
    [b"perf/".as_slice(), node.as_bytes()].concat()
}

/// A client's report about its session (from the API or RTCP).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Fraction of packets lost since the last report.
    pub loss: f64,
    /// Interarrival jitter.
    pub jitter: Duration,
    /// Round-trip time.
    pub rtt: Duration,
    /// Packets the client received over the span `loss` is about (RTCP:
    /// since its previous report that reached this node), 0 when the
    /// client did not say: the loss then weighs as [`NOMINAL_PACKET_RATE`]
    /// packets a second of the span the report covers.
    pub packets: u64,
}

impl Report {
    /// The packets expected and lost over a report's span: from the
    /// packets received and the loss fraction, or at the nominal rate
    /// over `span` when the count is unknown (or nothing came through).
    fn counts(&self, span: Duration) -> (f64, f64) {
        let loss = if self.loss.is_nan() {
            0.0
        } else {
            self.loss.clamp(0.0, 1.0)
        };
        let expected = if self.packets > 0 && loss < 1.0 {
            (self.packets as f64 / (1.0 - loss)).min(MAX_REPORT_PACKETS)
        } else {
            NOMINAL_PACKET_RATE * span.as_secs_f64()
        };
        (expected, expected * loss)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One change of primary, as this node saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    /// The epoch that began.
    pub epoch: u64,
    /// The new primary.
    pub primary: NodeId,
    /// Who wrote it.
    pub writer: NodeId,
    /// Why.
    pub reason: String,
    /// When it was written (writer's Unix ms).
    pub at_ms: u64,
}

/// What opening a session needs (validated by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// A fresh session id.
    pub id: String,
    /// The service.
    pub service: String,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
    /// The client's locator.
    pub client: String,
    /// The client's location key ([`policy::location_key`]).
    pub location: String,
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No node has spare capacity.
    NoCapacity,
    /// The map refused the write.
    Write(WriteError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoCapacity => write!(f, "no node of the overlay has spare capacity"),
            OpenError::Write(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

#[derive(Debug, Clone)]
struct MemberInfo {
    state: State,
    capacity: u32,
    load: u32,
    distance: Option<Duration>,
    /// When it entered a down state (dead or left), in this node's view.
    down_since: Option<Instant>,
    /// Its tags (placement by region and `require_tags`).
    tags: Arc<Tags>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Aggregate {
    loss: f64,
    jitter_s: f64,
    rtt_s: f64,
    samples: u32,
    /// When the latest report came (a session's aggregate only).
    last_at: Option<Instant>,
}

/// The longest span one client report is taken to cover. A receiver
/// report's loss and jitter are about the time since the receiver's
/// previous report (RFC 3550 6.4.1), so poor service that a report shows
/// began no later than the previous report came: poor service is counted
/// from there, not from the report, or every transfer would wait one
/// report interval more than `poor_for`. After a longer silence the report
/// is taken to cover this much, RFC 3550's minimum report interval (or
/// half of `poor_for`, if that is less: one report alone never makes
/// `poor_for`).
pub const MAX_REPORT_SPAN: Duration = Duration::from_secs(5);

/// Packets a second a report is taken to be about when it does not say
/// how many it counted (a 20 ms packetization, the usual for voice).
pub const NOMINAL_PACKET_RATE: f64 = 50.0;

/// The most packets one report is taken to count.
const MAX_REPORT_PACKETS: f64 = 1e7;

/// How long a client's latest report stands for its service when the next
/// has not come: one report interval (RTP clients of a session report
/// about once a second to a few seconds; the testnet's once a second). The
/// report due next may be lost on the very path that is poor: waiting for
/// the one after it put a decision off by a second each time (a `testnet
/// run degrade` on the WAN, 77 moves, decided one 6.9 s after the
/// degradation, poor_for 2 s). Only a report whose own loss is poor, in a
/// run of two or more, stands: one report never makes `poor_for`. (Letting
/// the first report of a run stand too decided the seeded degradations of
/// `lossy_service_is_decided_about_poor_for_after_it_began` after 4.9 s in
/// 0.08% instead of 0.26%, but then, with `poor_for` 2 s, a single report
/// covering one second and the next one lost moved a session.)
pub const REPORT_STANDS: Duration = Duration::from_secs(1);

/// A run of reports with poor loss: it begins with a report whose own loss
/// is over the threshold (at the start of the span that report covers),
/// and lasts while the packets lost since, pooled, stay over it.
///
/// Pooling counts, not averaging fractions, is what makes the decision
/// come on time: one report of a 50-packet second at 10% loss shows
/// anything from 0 to 20%, and an average that a report must pull over
/// the threshold on its own (the exponentially weighted one this
/// replaced, where a first poor report counted half) missed many first
/// poor reports and restarted on noise: it decided after more than 3 s in
/// 10 of 18 degradations of a `testnet run degrade` on the LAN (poor_for
/// 2 s). With the run, 11.6% of 5,000 seeded degradations are decided
/// after 3 s, 0.26% after 4.9 s (the test
/// `lossy_service_is_decided_about_poor_for_after_it_began`; 13.1% and
/// 0.5% while "poor still" was the latest report's own loss alone).
#[derive(Debug, Clone, Copy)]
struct LossRun {
    since: Instant,
    expected: f64,
    lost: f64,
    /// Reports in the run.
    reports: u32,
}

/// What this node knows of one of its sessions' service: the average its
/// location summary uses (jitter and RTT decide from it too), since when
/// that average's jitter or RTT is over its threshold, the run of poor
/// loss, whether loss is poor still (the latest two reports' counts,
/// pooled), and the latest report's counts (expected, lost).
#[derive(Debug, Default)]
struct SessionPerf {
    aggregate: Aggregate,
    slow_since: Option<Instant>,
    run: Option<LossRun>,
    latest_lossy: bool,
    /// Whether the latest report's own loss was over the threshold.
    latest_own_lossy: bool,
    latest: (f64, f64),
}

impl SessionPerf {
    /// Takes a client's report that came at `now`, covering the time since
    /// the previous report, at most `span`.
    fn add(&mut self, now: Instant, report: &Report, span: Duration, policy: &policy::Config) {
        let covers_from = self
            .aggregate
            .last_at
            .map_or(now, |last| last.max(now.checked_sub(span).unwrap_or(last)));
        self.aggregate.last_at = Some(now);
        self.aggregate.add(report);
        let perf = self.aggregate.perf();
        if perf.jitter > policy.max_jitter || perf.rtt > policy.max_rtt {
            self.slow_since.get_or_insert(covers_from);
        } else {
            self.slow_since = None;
        }
        self.add_loss(covers_from, now, report, policy.max_loss);
    }

    /// Since when service is poor (the earlier of slow and lossy), and the
    /// loss to judge it by: the run's pooled loss while loss is poor, else
    /// the average's.
    fn poor(&self) -> (Option<Instant>, Perf) {
        let mut perf = self.aggregate.perf();
        let lossy = self.lossy_since();
        if let Some((_, pooled)) = lossy {
            perf.loss = pooled;
        }
        let since = lossy
            .map(|(t, _)| t)
            .into_iter()
            .chain(self.slow_since)
            .min();
        (since, perf)
    }

    /// Adds a report covering `from..to` to the run of poor loss.
    ///
    /// Loss is poor still while the latest two reports' counts, pooled,
    /// are over the threshold: one report of a 50-packet second at 10%
    /// loss shows one packet lost or none in 3.4% of seconds, and judged
    /// alone it put off the decision by a report each time (a `testnet
    /// run degrade` with 30 moves had one decided 5.9 s after the
    /// degradation, poor_for 2 s); two such reports pooled show three or
    /// fewer of 100 in 0.8%. A path that recovered shows it one report
    /// later.
    fn add_loss(&mut self, from: Instant, to: Instant, report: &Report, max_loss: f64) {
        let poor = |expected: f64, lost: f64| expected > 0.0 && lost > max_loss * expected;
        let (expected, lost) = report.counts(to.saturating_duration_since(from));
        let own = poor(expected, lost);
        self.latest_own_lossy = own;
        let (before_expected, before_lost) = std::mem::replace(&mut self.latest, (expected, lost));
        self.latest_lossy = own || poor(expected + before_expected, lost + before_lost);
        if let Some(run) = &mut self.run {
            run.expected += expected;
            run.lost += lost;
            run.reports += 1;
            if !poor(run.expected, run.lost) {
                self.run = None;
            }
        }
        if self.run.is_none() && own {
            self.run = Some(LossRun {
                since: from,
                expected,
                lost,
                reports: 1,
            });
        }
    }

    /// Whether the latest report stands for [`REPORT_STANDS`] more: only a
    /// report whose own loss is poor, in a run of two or more (so that one
    /// report never makes `poor_for`, and a clean report, poor only pooled
    /// with the one before, does not lengthen the evidence).
    fn latest_stands(&self) -> bool {
        self.latest_own_lossy && self.run.is_some_and(|run| run.reports >= 2)
    }

    /// Since when, and how much, loss is poor: the run's start and pooled
    /// loss while the latest report is lossy too (service that is poor
    /// still).
    fn lossy_since(&self) -> Option<(Instant, f64)> {
        let run = self.run.filter(|_| self.latest_lossy)?;
        Some((run.since, run.lost / run.expected))
    }
}

/// Weight of a report that is worse than the average (fast attack).
const WORSE_WEIGHT: f64 = 0.5;
/// Weight of a report that is better (slow release).
const BETTER_WEIGHT: f64 = 0.25;

impl Aggregate {
    /// Exponentially weighted, so that old reports fade; a report worse
    /// than the average weighs twice what a better one does (fast attack,
    /// slow release). Location summaries share these averages; a session's
    /// own jitter and RTT decide from them, its loss from a
    /// [`LossRun`].
    fn add(&mut self, r: &Report) {
        fn ewma(avg: &mut f64, x: f64, first: bool) {
            let w = if first {
                1.0
            } else if x > *avg {
                WORSE_WEIGHT
            } else {
                BETTER_WEIGHT
            };
            *avg += w * (x - *avg);
        }
        let first = self.samples == 0;
        ewma(&mut self.loss, r.loss, first);
        ewma(&mut self.jitter_s, r.jitter.as_secs_f64(), first);
        ewma(&mut self.rtt_s, r.rtt.as_secs_f64(), first);
        self.samples = self.samples.saturating_add(1);
    }

    fn perf(&self) -> Perf {
        Perf {
            loss: self.loss,
            jitter: Duration::from_secs_f64(self.jitter_s.max(0.0)),
            rtt: Duration::from_secs_f64(self.rtt_s.max(0.0)),
            samples: self.samples,
        }
    }
}

/// The session engine of one node.
#[derive(Debug)]
pub struct Engine<S> {
    me: NodeId,
    signer: S,
    config: Config,
    map: Map,
    capacity: u32,
    /// This node's own tags.
    tags: Arc<Tags>,
    members: BTreeMap<NodeId, MemberInfo>,
    hosting: BTreeSet<String>,
    /// Handovers this node wrote and still serves until confirmed:
    /// session -> (epoch of the handover, deadline).
    handing_over: BTreeMap<String, (u64, Instant)>,
    /// Handovers to this node it has not confirmed yet: it confirms once
    /// its instance sent its first packet ([`Engine::handle_started`]), so
    /// that the old primary never stops before the new one sends; or at
    /// the deadline, should that signal never come.
    confirming: BTreeMap<String, Instant>,
    /// Reports per session (this node's clients), and per location.
    session_perf: BTreeMap<String, SessionPerf>,
    last_move: BTreeMap<String, Instant>,
    /// Per location of this node's clients: their average, and when the
    /// last report came ([`MAX_SUMMARY_LOCATIONS`], [`OWN_LOCATION_TTL`]).
    own_locations: BTreeMap<String, (Aggregate, Instant)>,
    peer_perf: BTreeMap<(String, NodeId), Perf>,
    /// Takeovers claimed beyond this node's capacity.
    over_capacity: u64,
    /// The time and the locations of the newest summary taken from each
    /// peer (so that the next one replaces exactly those), and when it was
    /// taken ([`PERF_SUMMARY_TTL_REPEATS`]).
    peer_perf_at: BTreeMap<NodeId, (u64, Vec<String>, Instant)>,
    /// Performance summaries dropped: from non-members, badly signed, or
    /// older than one already held.
    perf_dropped: u64,
    history: BTreeMap<String, Vec<Move>>,
    /// Sessions whose version naming this node a backup it learnt when
    /// their primary was dead in its view already, and when: the other
    /// backups' staggers may have run meanwhile ([`Engine::examine`]).
    learnt_late: BTreeMap<String, Instant>,
    /// Sessions of a down primary this node, full, left to a later backup
    /// with room ([`Engine::examine`]).
    left_to_later: BTreeSet<String>,
    /// Active sessions by primary, so that a check looks only at this
    /// node's own sessions and those of down primaries, not at the whole
    /// map.
    by_primary: BTreeMap<NodeId, BTreeSet<String>>,
    /// The primary each active session is indexed under.
    primary_of: BTreeMap<String, NodeId>,
    /// Members dead or departed in this node's view.
    down: BTreeSet<NodeId>,
    actions: VecDeque<Action>,
    next_check: Instant,
    next_gc: Instant,
    /// While fenced this node serves nothing and writes nothing.
    fenced: bool,
    /// When a lifted fence lets this node serve again.
    resume_at: Option<Instant>,
    /// When this node could last begin to act on its map: the end of its
    /// start grace, or of the grace after its fence lifted. Takeover
    /// staggers count from there for primaries that went down before it.
    serving_since: Instant,
    /// When (Unix ms, this node's clock) this process began, or its last
    /// fence lifted: a version of its own written before is inherited.
    life_ms: u64,
    /// Members whose maps this node compared with its own since `life_ms`
    /// (the comparison done or failed).
    compared: BTreeSet<NodeId>,
    /// Members a comparison was asked of since `life_ms`.
    compare_asked: BTreeSet<NodeId>,
    /// Inherited sessions waiting for comparisons before they are served,
    /// with when they are served all the same.
    comparing: BTreeMap<String, Instant>,
    /// Consent of the hosted sessions that need it.
    consent: BTreeMap<String, Consent>,
    /// Sessions this node stopped hosting (superseded, or fenced) while
    /// its client's consent here was fresh, and what it vouched
    /// ([`Action::Vouch`]). A later version naming another primary
    /// (concurrent claims, learnt one by one) is vouched to as well, while
    /// the consent is within its interval.
    vouched: BTreeMap<String, Vouched>,
    /// Sessions this node stands by for, warm (it is their first backup).
    warm: BTreeSet<String>,
    /// When the summary was last shared, and what it said.
    last_perf: Option<(Instant, Locations)>,
    next_perf: Instant,
    rejected: u64,
}

/// A client's consent this node passes on ([`Engine`]'s `vouched`).
#[derive(Debug, Clone)]
struct Vouched {
    /// When the client last consented here.
    heard: Instant,
    /// The primary last vouched to (this node itself until it learns of
    /// another).
    to: NodeId,
    /// Vouches sent to `to` so far, and when the next is due.
    sent: u8,
    next: Instant,
}

/// A vouch is one datagram: sent this many times to each new primary, a
/// [`VOUCH_RESEND`] apart, so that one lost datagram does not lose the
/// client's word (the receiver counts the consent from the client's
/// report, however often it hears of it).
const VOUCH_SENDS: u8 = 3;
const VOUCH_RESEND: Duration = Duration::from_secs(1);

impl<S: Signer> Engine<S> {
    /// An engine for the node `signer` speaks for, hosting up to `capacity`;
    /// `now` and `now_ms` are the same moment on the monotonic and the wall
    /// clock.
    pub fn new(signer: S, capacity: u32, config: Config, now: Instant, now_ms: u64) -> Self {
        let resume_at = now + config.resume_grace;
        Engine {
            serving_since: resume_at,
            learnt_late: BTreeMap::new(),
            left_to_later: BTreeSet::new(),
            life_ms: now_ms,
            compared: BTreeSet::new(),
            compare_asked: BTreeSet::new(),
            comparing: BTreeMap::new(),
            me: signer.id().clone(),
            map: Map::new(config.map.clone()),
            signer,
            config,
            capacity,
            tags: Arc::default(),
            members: BTreeMap::new(),
            hosting: BTreeSet::new(),
            handing_over: BTreeMap::new(),
            confirming: BTreeMap::new(),
            session_perf: BTreeMap::new(),
            last_move: BTreeMap::new(),
            own_locations: BTreeMap::new(),
            peer_perf: BTreeMap::new(),
            peer_perf_at: BTreeMap::new(),
            over_capacity: 0,
            perf_dropped: 0,
            history: BTreeMap::new(),
            by_primary: BTreeMap::new(),
            primary_of: BTreeMap::new(),
            down: BTreeSet::new(),
            actions: VecDeque::new(),
            next_check: now,
            next_gc: now,
            fenced: false,
            // A process that just started serves nothing its map names it
            // primary of before the grace: what it learns first may be an
            // old version (its previous process's, before a backup took
            // the session over) that anti-entropy has not yet superseded.
            resume_at: Some(resume_at),
            consent: BTreeMap::new(),
            vouched: BTreeMap::new(),
            warm: BTreeSet::new(),
            last_perf: None,
            next_perf: now,
            rejected: 0,
        }
    }

    /// Sets this node's own tags, as it announces them: placement reads
    /// them as it reads the members'.
    pub fn set_tags(&mut self, tags: Tags) {
        self.tags = Arc::new(tags);
    }

    /// The replicated map as this node holds it.
    pub fn map(&self) -> &Map {
        &self.map
    }

    /// Sessions this node hosts.
    pub fn hosting(&self) -> impl Iterator<Item = &String> {
        self.hosting.iter()
    }

    /// Sessions this node hosts or stands by for warm, counted: a warm
    /// instance holds the resources of a hosted one.
    pub fn load(&self) -> u32 {
        (self.hosting.len() + self.warm.len()) as u32
    }

    /// Whether this node stands by for session `id` warm.
    pub fn is_warm(&self, id: &str) -> bool {
        self.warm.contains(id)
    }

    /// How many active sessions this node's map names `primary` the
    /// primary of.
    pub fn sessions_led_by(&self, primary: &NodeId) -> usize {
        self.by_primary.get(primary).map_or(0, BTreeSet::len)
    }

    /// How `record`'s first backup stands by.
    pub fn standby_of(&self, record: &Record) -> Standby {
        record
            .params
            .get("standby")
            .and_then(|s| Standby::parse(s))
            .unwrap_or(self.config.standby)
    }

    /// Records rejected (bad signature, no authority, invalid, undecodable).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Whether this node is fenced (see [`set_fenced`](Self::set_fenced)).
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Replaces the parameters an operator may change while the node runs:
    /// placement and transfer thresholds, the default standby and the
    /// lifetime cap. They apply from the engine's next decision on;
    /// sessions placed already keep their backups until a repair moves them.
    pub fn reconfigure(
        &mut self,
        policy: policy::Config,
        standby: Standby,
        max_lifetime: Option<Duration>,
    ) {
        self.config.policy = policy;
        self.config.standby = standby;
        self.config.max_lifetime = max_lifetime;
    }

    /// Fences this node (it hears nothing from the overlay, so the others
    /// are taking its sessions over): it stops every session it hosts and
    /// claims, repairs, transfers and starts nothing. Unfenced, it serves
    /// again what its map still names it primary of, after
    /// [`Config::resume_grace`].
    pub fn set_fenced(&mut self, now: Instant, now_ms: u64, fenced: bool) {
        if fenced == self.fenced {
            return;
        }
        self.fenced = fenced;
        if fenced {
            self.handing_over.clear();
            self.confirming.clear();
            let hosted: Vec<String> = self.hosting.iter().cloned().collect();
            for id in hosted {
                // The client may hear this node and not the one that
                // claims the session meanwhile: its word is passed on once
                // the fence lifts and the claim is learnt.
                self.remember_consent(now, &id);
                self.stop(&id, "fenced: this node hears nothing from the overlay");
            }
            for id in std::mem::take(&mut self.warm) {
                self.actions.push_back(Action::Stop {
                    id,
                    reason: "fenced: warm standby stopped".into(),
                });
            }
        } else {
            self.resume_at = Some(now + self.config.resume_grace);
            self.serving_since = now + self.config.resume_grace;
            // What it wrote before the fence may have been superseded by a
            // backup's claim it has not heard of yet.
            self.life_ms = now_ms;
            self.compared.clear();
            self.compare_asked.clear();
            self.comparing.clear();
            self.next_check = self.next_check.min(now + self.config.resume_grace);
        }
    }

    /// The moves of a session this node saw.
    pub fn history(&self, id: &str) -> &[Move] {
        self.history.get(id).map_or(&[], Vec::as_slice)
    }

    /// Membership news from SWIM: a member's state, and its metadata and
    /// distance when known.
    pub fn handle_member(
        &mut self,
        now: Instant,
        id: NodeId,
        state: State,
        meta: Option<&NodeMeta>,
        distance: Option<Duration>,
    ) {
        let info = self.members.entry(id.clone()).or_insert(MemberInfo {
            state,
            capacity: 0,
            load: 0,
            distance: None,
            down_since: None,
            tags: Arc::default(),
        });
        if info.state != state || info.down_since.is_none() {
            info.down_since = (!state.is_active()).then_some(now);
        }
        info.state = state;
        if state.is_active() {
            self.down.remove(&id);
        } else {
            self.down.insert(id.clone());
        }
        if let Some(meta) = meta {
            info.capacity = meta.capacity;
            info.load = meta.load;
            if *info.tags != meta.tags {
                info.tags = Arc::new(meta.tags.clone());
            }
        }
        if distance.is_some() {
            info.distance = distance;
        }
        if !state.is_active() {
            // Act on a death at once rather than at the next check.
            self.next_check = now;
            // A session waiting to compare with it waits no more for it.
            self.recheck_comparing(now, false);
        }
    }

    /// A map comparison with `peer` asked for by [`Action::Compare`] (or
    /// one the peer started) ended, done or failed: what it brought has
    /// been handled, and the inherited sessions that waited only for it are
    /// served now.
    pub fn handle_compared(&mut self, now: Instant, peer: &NodeId) {
        if self.compared.insert(peer.clone()) {
            self.recheck_comparing(now, false);
        }
    }

    /// An application payload from a peer (a delta or a perf summary).
    /// News is spread further (an [`Action::Broadcast`]); returns whether it
    /// was news.
    pub fn handle_app(&mut self, now: Instant, now_ms: u64, payload: &[u8]) -> bool {
        match AppMessage::decode(payload) {
            Ok(message) => self.handle_app_message(now, now_ms, message, payload),
            Err(_) => {
                self.rejected += 1;
                false
            }
        }
    }

    /// A decoded application message; `payload` is its encoding, forwarded
    /// as it is when it is news.
    pub fn handle_app_message(
        &mut self,
        now: Instant,
        now_ms: u64,
        message: AppMessage,
        payload: &[u8],
    ) -> bool {
        match message {
            AppMessage::Delta(delta) => self.handle_delta(now, now_ms, *delta).unwrap_or(false),
            AppMessage::Root(_) => false,
            AppMessage::Report {
                id,
                loss_permille,
                jitter_ms,
                rtt_ms,
                packets,
            } => {
                // Only the host acts on it: a stale sender's is dropped, not
                // passed on, so nothing loops.
                if self.hosting.contains(&id) {
                    let report = Report {
                        loss: f64::from(loss_permille.min(1000)) / 1000.0,
                        jitter: Duration::from_millis(u64::from(jitter_ms)),
                        rtt: Duration::from_millis(u64::from(rtt_ms)),
                        packets: u64::from(packets),
                    };
                    self.report(now, &id, report);
                }
                false
            }
            AppMessage::Vouch { id, age_ms } => {
                // Only the host acts on it, as on a forwarded report.
                if self.hosting.contains(&id) {
                    let age = Duration::from_millis(u64::from(age_ms));
                    self.consent_as_of(now, &id, age);
                }
                false
            }
            AppMessage::Close { id } => {
                if self.map.get(&id).is_some_and(|r| r.primary == self.me) {
                    let _ = self.close(now, now_ms, &id);
                }
                false
            }
            AppMessage::Perf(summary) => {
                if summary.node == self.me {
                    return false;
                }
                let Some(before) = self.accept_summary(now, &summary) else {
                    return false;
                };
                // Replace what the node said before: a location it no
                // longer serves is gone from its summary.
                for location in before {
                    self.peer_perf.remove(&(location, summary.node.clone()));
                }
                for (location, (loss, jitter, rtt, samples)) in summary.locations {
                    let perf = Perf {
                        loss: f64::from(loss) / 1000.0,
                        jitter: Duration::from_millis(u64::from(jitter)),
                        rtt: Duration::from_millis(u64::from(rtt)),
                        samples,
                    };
                    self.peer_perf
                        .insert((location, summary.node.clone()), perf);
                }
                // Accepted summaries are news (newer than the one held).
                self.actions.push_back(Action::Broadcast {
                    key: perf_key(&summary.node),
                    payload: payload.to_vec(),
                });
                true
            }
        }
    }

    /// Whether a peer's summary may be taken: its author is a live member,
    /// it is newer than the one held, it is the author's own (signature),
    /// and there is room. Answers the locations of the summary it replaces,
    /// or `None` (counted) when it is not taken.
    fn accept_summary(&mut self, now: Instant, summary: &PerfSummary) -> Option<Vec<String>> {
        let member = self
            .members
            .get(&summary.node)
            .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect));
        let newer = self
            .peer_perf_at
            .get(&summary.node)
            .is_none_or(|(at, _, _)| summary.at_ms > *at);
        let room = self.peer_perf_at.contains_key(&summary.node)
            || self.peer_perf_at.len() < MAX_PEER_SUMMARIES;
        let ok = member
            && newer
            && room
            && self.config.map.verifier.verify_message(
                &summary.node,
                &summary.signature,
                &summary.signing_bytes(),
            );
        if !ok {
            self.perf_dropped += 1;
            return None;
        }
        let locations = summary.locations.keys().cloned().collect();
        let before = self
            .peer_perf_at
            .insert(summary.node.clone(), (summary.at_ms, locations, now));
        Some(before.map(|(_, l, _)| l).unwrap_or_default())
    }

    /// Drops peers' summaries not renewed for
    /// [`PERF_SUMMARY_TTL_REPEATS`] × `perf_repeat`, and the locations of
    /// this node's own clients not reported for [`OWN_LOCATION_TTL`].
    fn expire_perf(&mut self, now: Instant) {
        let ttl = self.config.perf_repeat * PERF_SUMMARY_TTL_REPEATS;
        let stale: Vec<NodeId> = self
            .peer_perf_at
            .iter()
            .filter(|(_, (_, _, taken))| now.saturating_duration_since(*taken) >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some((_, locations, _)) = self.peer_perf_at.remove(&id) {
                for location in locations {
                    self.peer_perf.remove(&(location, id.clone()));
                }
            }
        }
        self.own_locations
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < OWN_LOCATION_TTL);
    }

    /// How many peers' summaries this node holds, and how many (location,
    /// peer) figures they gave; for tests of their bounds.
    pub fn peer_summaries(&self) -> (usize, usize) {
        (self.peer_perf_at.len(), self.peer_perf.len())
    }

    /// How many locations of its own clients this node keeps figures for.
    pub fn own_locations(&self) -> usize {
        self.own_locations.len()
    }

    /// Performance summaries dropped so far: from non-members, badly
    /// signed, or not newer than the one held.
    pub fn perf_dropped(&self) -> u64 {
        self.perf_dropped
    }

    /// Counts an application payload that could not be decoded.
    pub fn note_rejected(&mut self) {
        self.rejected += 1;
    }

    /// Forgets a member SWIM forgot (dead or departed long enough), with
    /// what it said of its clients: what is keyed by peers stays bounded by
    /// the membership.
    pub fn forget(&mut self, id: &NodeId) {
        self.members.remove(id);
        self.down.remove(id);
        self.peer_perf.retain(|(_, node), _| node != id);
        self.peer_perf_at.remove(id);
        self.compared.remove(id);
        self.compare_asked.remove(id);
    }

    /// A session version from a peer, gossiped. Returns whether it changed
    /// the map (and so should be spread further).
    pub fn handle_delta(
        &mut self,
        now: Instant,
        now_ms: u64,
        delta: Delta,
    ) -> Result<bool, Rejection> {
        let id = delta.id().to_string();
        match self.map.apply(delta, now_ms) {
            Ok(Applied::Stale) => Ok(false),
            Ok(_) => {
                self.after_change(now, &id);
                if let Some(delta) = self.map.delta(&id).cloned() {
                    // Spread on: the epidemic needs every node that learns.
                    self.broadcast_delta(&delta);
                }
                Ok(true)
            }
            Err(e) => {
                self.rejected += 1;
                Err(e)
            }
        }
    }

    /// Opens a session; the policy picks its primary among the live members
    /// and this node. Returns the record as written.
    pub fn open(
        &mut self,
        now: Instant,
        now_ms: u64,
        request: OpenRequest,
    ) -> Result<Record, OpenError> {
        let OpenRequest {
            id,
            service,
            params,
            client,
            location,
        } = request;
        let candidates = self.candidates(&location, None);
        let primary = policy::choose_primary(&candidates, &self.config.policy)
            .ok_or(OpenError::NoCapacity)?;
        let backups_for = |engine: &Self, primary: &NodeId| {
            let first_of = engine.first_backup_counts(primary);
            policy::choose_backups(primary, &candidates, &first_of, &engine.config.policy)
        };
        let own_backups = backups_for(self, &self.me.clone());
        let delta = self
            .map
            .open(
                &self.signer,
                NewSession {
                    id: id.clone(),
                    service,
                    params,
                    client,
                    location,
                    backups: own_backups,
                },
                now_ms,
            )
            .map_err(OpenError::Write)?;
        self.broadcast_delta(&delta);
        if primary != self.me {
            let backups = backups_for(self, &primary);
            let delta = self
                .map
                .handover(
                    &self.signer,
                    &id,
                    primary,
                    "open: placed by policy",
                    backups,
                    now_ms,
                )
                .map_err(OpenError::Write)?;
            self.broadcast_delta(&delta);
        }
        // Written here and now: served at once, grace or not.
        self.reconcile(now, &id, true);
        Ok(self.map.get(&id).cloned().expect("just written"))
    }

    /// The client of `id` consents to its stream (a report from it or
    /// vouching for it).
    pub fn consent_given(&mut self, now: Instant, id: &str) {
        if let Some(c) = self.consent.get_mut(id) {
            c.since = now;
        }
        self.consent_as_of(now, id, Duration::ZERO);
    }

    /// The client of `id` consented `age` ago: a report (`age` 0) or a
    /// member's word ([`AppMessage::Vouch`]). The consent counts from then,
    /// a full interval and no more, however often it is passed on; a paused
    /// stream resumes.
    fn consent_as_of(&mut self, now: Instant, id: &str, age: Duration) {
        let interval = self.config.consent.interval;
        let (Some(heard), Some(c)) = (now.checked_sub(age), self.consent.get_mut(id)) else {
            return;
        };
        c.until = c.until.max(heard + interval);
        c.heard = Some(c.heard.map_or(heard, |h| h.max(heard)));
        if now < c.until && c.paused_since.take().is_some() {
            self.actions
                .push_back(Action::Resume { id: id.to_string() });
        }
    }

    /// Whether the stream of hosted session `id` is paused for want of
    /// consent.
    pub fn is_paused(&self, id: &str) -> bool {
        self.consent
            .get(id)
            .is_some_and(|c| c.paused_since.is_some())
    }

    /// Pauses streams whose consent ran out, closes sessions paused for
    /// longer than the grace.
    fn check_consent(&mut self, now: Instant, now_ms: u64) {
        let grace = self.config.consent.grace;
        let interval = self.config.consent.interval;
        self.vouched
            .retain(|_, v| now.saturating_duration_since(v.heard) < interval);
        let again: Vec<String> = self
            .vouched
            .iter()
            .filter(|(_, v)| v.to != self.me && v.sent < VOUCH_SENDS && now >= v.next)
            .map(|(id, _)| id.clone())
            .collect();
        for id in again {
            self.send_vouch(now, &id);
        }
        let mut pause = Vec::new();
        let mut close = Vec::new();
        for (id, c) in &self.consent {
            match c.paused_since {
                None if now >= c.until => pause.push(id.clone()),
                Some(paused) if now >= paused + grace => {
                    close.push((id.clone(), now.saturating_duration_since(c.since)));
                }
                _ => {}
            }
        }
        for id in pause {
            if let Some(c) = self.consent.get_mut(&id) {
                c.paused_since = Some(now);
            }
            self.actions.push_back(Action::Pause {
                id,
                reason: "paused: the client shows no consent (no RTCP receiver report, no \
                         report through the API)"
                    .into(),
            });
        }
        for (id, without) in close {
            // The true time without consent: `first` + grace for a client
            // that never consented, interval + grace after a report.
            let reason = format!(
                "closed: no consent from the client for {} s",
                without.as_secs()
            );
            match self.map.close_because(&self.signer, &id, &reason, now_ms) {
                Ok(delta) => {
                    self.broadcast_delta(&delta);
                    self.after_change(now, &id);
                }
                Err(_) => {
                    // Not ours to close any more: it moved meanwhile.
                    self.consent.remove(&id);
                }
            }
        }
    }

    /// Closes a session this node is primary of.
    pub fn close(&mut self, now: Instant, now_ms: u64, id: &str) -> Result<Record, WriteError> {
        let delta = self.map.close(&self.signer, id, now_ms)?;
        self.broadcast_delta(&delta);
        self.after_change(now, id);
        Ok(delta.record)
    }

    /// A client's report about session `id` (served by this node). It is
    /// also the client's consent to the stream.
    pub fn report(&mut self, now: Instant, id: &str, report: Report) {
        self.consent_given(now, id);
        let Some(record) = self.map.get(id) else {
            return;
        };
        let location = record.location.clone();
        let session = self.session_perf.entry(id.to_string()).or_default();
        // At most half of poor_for, so that one report never makes it.
        let span = MAX_REPORT_SPAN.min(self.config.policy.poor_for / 2);
        session.add(now, &report, span, &self.config.policy);
        if !self.own_locations.contains_key(&location)
            && self.own_locations.len() >= MAX_SUMMARY_LOCATIONS
            && let Some(oldest) = self
                .own_locations
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(l, _)| l.clone())
        {
            self.own_locations.remove(&oldest);
        }
        let (aggregate, last) = self
            .own_locations
            .entry(location)
            .or_insert_with(|| (Aggregate::default(), now));
        aggregate.add(&report);
        *last = now;
    }

    /// This node's performance summary by location, as shared with peers:
    /// written at `now_ms` and signed.
    pub fn perf_summary(&self, now_ms: u64) -> AppMessage {
        let mut summary = PerfSummary {
            node: self.me.clone(),
            locations: self.perf_locations(),
            at_ms: now_ms,
            signature: Vec::new(),
        };
        summary.signature = self.signer.sign(&summary.signing_bytes());
        AppMessage::Perf(summary)
    }

    fn perf_locations(&self) -> Locations {
        let ms = |d: f64| (d * 1e3).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        self.own_locations
            .iter()
            .map(|(l, (a, _))| {
                let p = a.perf();
                (
                    l.clone(),
                    (
                        (p.loss * 1000.0).round().clamp(0.0, 1000.0) as u32,
                        ms(a.jitter_s),
                        ms(a.rtt_s),
                        p.samples,
                    ),
                )
            })
            .collect()
    }

    /// The instance of session `id` this node started has sent its first
    /// packet: a handover to this node is confirmed now, so that the old
    /// primary, which keeps sending until then, stops only once the client
    /// receives from here (make-before-break). Harmless for any other
    /// session.
    pub fn handle_started(&mut self, now_ms: u64, id: &str) {
        if self.confirming.remove(id).is_some() {
            self.confirm(now_ms, id);
        }
    }

    /// Writes the version of its own that confirms a handover to this node,
    /// if the session is still this node's.
    fn confirm(&mut self, now_ms: u64, id: &str) {
        let Some(record) = self.map.get(id) else {
            return;
        };
        if record.primary != self.me
            || record.state != SessionState::Active
            || record.writer == self.me
            || !self.hosting.contains(id)
        {
            return;
        }
        let backups = record.backups.clone();
        if let Ok(delta) = self.map.update_backups(&self.signer, id, backups, now_ms) {
            self.broadcast_delta(&delta);
        }
    }

    /// Re-examines every session: takeovers, repairs, transfers, handover
    /// deadlines, tombstone collection. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant, now_ms: u64) {
        if now >= self.next_perf {
            self.next_perf = now + self.config.perf_interval;
            self.share_perf(now, now_ms);
        }
        // Inherited sessions whose comparisons ran out of time are served
        // all the same: a backup that cannot be reached cannot be serving
        // one either, or its claim will win.
        self.recheck_comparing(now, true);
        let unconfirmed: Vec<String> = self
            .confirming
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in unconfirmed {
            // No first packet was seen (a service that sends nothing the
            // node watches, or it lags): confirm anyway, before the old
            // primary's own deadline ends its instance unconfirmed.
            self.confirming.remove(&id);
            self.confirm(now_ms, &id);
        }
        if now < self.next_check {
            return;
        }
        self.next_check = now + self.config.check_interval;
        if self.resume_at.is_some_and(|at| now >= at) {
            self.resume_at = None;
            let mine: Vec<String> = self
                .by_primary
                .get(&self.me)
                .into_iter()
                .flatten()
                .filter(|id| !self.hosting.contains(*id))
                .cloned()
                .collect();
            for id in mine {
                self.after_change(now, &id);
            }
        }
        if !self.fenced && self.resume_at.is_none() {
            self.check_consent(now, now_ms);
            // Only this node's sessions (repairs, transfers) and those of
            // down primaries (takeovers) can need anything from it.
            let mut ids: Vec<String> = Vec::new();
            for primary in std::iter::once(&self.me).chain(self.down.iter()) {
                if let Some(set) = self.by_primary.get(primary) {
                    ids.extend(set.iter().cloned());
                }
            }
            for id in ids {
                self.examine(now, now_ms, &id);
            }
        }
        let expired: Vec<String> = self
            .handing_over
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.handing_over.remove(&id);
            let still_mine = self.map.get(&id).is_some_and(|r| r.primary == self.me);
            if !still_mine {
                self.stop(&id, "handed over (no confirmation in time)");
            }
        }
        if now >= self.next_gc {
            self.next_gc = now + self.config.gc_interval;
            self.expire_perf(now);
            if self.map.gc(now_ms) > 0 {
                // What is kept per session goes with its tombstone.
                let map = &self.map;
                self.history.retain(|id, _| map.get(id).is_some());
                self.last_move.retain(|id, _| map.get(id).is_some());
                self.learnt_late.retain(|id, _| map.get(id).is_some());
                self.left_to_later.retain(|id| map.get(id).is_some());
                self.session_perf.retain(|id, _| map.get(id).is_some());
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let confirm = self
            .confirming
            .values()
            .chain(self.comparing.values())
            .min()
            .copied();
        let next = self.next_check.min(self.next_perf);
        Some(confirm.map_or(next, |c| c.min(next)))
    }

    /// Shares this node's summary when it changed, or when it was last
    /// shared `perf_repeat` ago.
    fn share_perf(&mut self, now: Instant, now_ms: u64) {
        if self.own_locations.is_empty() {
            return;
        }
        let locations = self.perf_locations();
        let due = self.last_perf.as_ref().is_none_or(|(at, last)| {
            *last != locations || now.saturating_duration_since(*at) >= self.config.perf_repeat
        });
        if due {
            self.actions.push_back(Action::Broadcast {
                key: perf_key(&self.me),
                payload: self.perf_summary(now_ms).encode(),
            });
            self.last_perf = Some((now, locations));
        }
    }

    /// The next action. Call after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- decisions ----

    fn is_alive(&self, id: &NodeId) -> bool {
        *id == self.me || self.members.get(id).is_some_and(|m| m.state.is_active())
    }

    fn is_down(&self, id: &NodeId) -> Option<Instant> {
        self.members
            .get(id)
            .filter(|m| matches!(m.state, State::Dead | State::Left))
            .and_then(|m| m.down_since)
    }

    fn examine(&mut self, now: Instant, now_ms: u64, id: &str) {
        let Some(record) = self.map.get(id).cloned() else {
            return;
        };
        if record.primary == self.me {
            if let Some(limit) = self.config.max_lifetime
                && now_ms.saturating_sub(record.started_ms) >= limit.as_millis() as u64
            {
                let reason = format!(
                    "closed: the session reached its maximum lifetime of {} s",
                    limit.as_secs()
                );
                if let Ok(delta) = self.map.close_because(&self.signer, id, &reason, now_ms) {
                    self.broadcast_delta(&delta);
                    self.after_change(now, id);
                }
                return;
            }
            self.repair_backups(now, now_ms, &record);
            self.consider_transfer(now, now_ms, &record);
            return;
        }
        // Takeover: the primary is down in this node's view and this node is
        // the first live backup, or the next one once the stagger passed.
        let Some(down_since) = self.is_down(&record.primary) else {
            return;
        };
        let live: Vec<&NodeId> = record.backups.iter().filter(|b| self.is_alive(b)).collect();
        let Some(rank) = live.iter().position(|b| **b == self.me) else {
            return;
        };
        // Its rank counts from the latest death that moved it up: when a
        // backup ranked ahead of it died after the primary (or its death
        // was learnt later), the backup now ranked first claims only once
        // it learns of that death, and this one's stagger must leave that
        // claim its time to arrive.
        let down_since = record
            .backups
            .iter()
            .take_while(|b| **b != self.me)
            .filter_map(|b| self.is_down(b))
            .fold(down_since, Instant::max);
        // The primary went down while this node could not act (its start
        // or resume grace), or before this node learnt the version that
        // names it a backup: the other backups' staggers ran meanwhile and
        // one of them may have claimed already, unheard of here. It waits
        // behind every live backup, from when it could act, keeping its
        // rank among the late (found in CI: two backups both in their
        // start grace claimed at its end, as their staggers had passed).
        // The same holds for a version learnt late: a primary that named a
        // new first backup just before it crashed, the second claiming
        // after its stagger, and the first learning the version from a
        // peer that had not heard that claim.
        let could_act = match self.learnt_late.get(id) {
            Some(&learnt) => learnt.max(self.serving_since),
            None => self.serving_since,
        };
        let (from, wait) = if down_since >= could_act {
            (down_since, rank)
        } else {
            (could_act, live.len() + rank)
        };
        if now < from + self.config.claim_stagger * wait as u32 {
            return;
        }
        // A full node leaves the session to a later live backup with room
        // (it claims after its own stagger); when none has room, it claims
        // all the same, as losing the session is worse, and says so. One
        // that left it to a later backup claims only once every live
        // backup's stagger has passed, and one more for a claim to arrive
        // (keeping its rank among those that do the same): the backup it
        // left it to may be full now because it claimed (simulator, ten
        // crashes at once: the first backup, full, left a session to the
        // second, which claimed it with others and announced its load, and
        // the first, seeing no room left behind it, claimed 200 ms later,
        // before it heard).
        let full = self.load() >= self.capacity;
        if full {
            let roomier = live[rank + 1..].iter().any(|b| {
                self.members
                    .get(*b)
                    .is_some_and(|m| m.capacity > 0 && m.load < m.capacity)
            });
            if roomier {
                self.left_to_later.insert(id.to_string());
                return;
            }
        }
        // (Full or not by now: its load may have dropped since.)
        let behind_all = wait + live.len();
        if self.left_to_later.contains(id)
            && now < from + self.config.claim_stagger * behind_all as u32
        {
            return;
        }
        let candidates = self.candidates(&record.location, Some(&record.primary));
        let first_of = self.first_backup_counts(&self.me.clone());
        let backups = policy::choose_backups(&self.me, &candidates, &first_of, &self.config.policy);
        let reason = format!("takeover: primary {} is down", record.primary);
        if let Ok(delta) = self.map.claim(&self.signer, id, &reason, backups, now_ms) {
            if full {
                self.over_capacity += 1;
            }
            self.broadcast_delta(&delta);
            self.last_move.insert(id.to_string(), now);
            self.after_change(now, id);
        }
    }

    /// Sessions this node took over although it was full, because no later
    /// backup had room.
    pub fn over_capacity(&self) -> u64 {
        self.over_capacity
    }

    fn repair_backups(&mut self, now: Instant, now_ms: u64, record: &Record) {
        let wanted = self.config.policy.backups;
        let healthy = record.backups.iter().filter(|b| self.is_alive(b)).count();
        if healthy == record.backups.len() && record.backups.len() >= wanted.min(self.members.len())
        {
            return;
        }
        let candidates = self.candidates(&record.location, None);
        let mut first_of = self.first_backup_counts(&self.me.clone());
        if let Some(first) = record.backups.first() {
            // This session's own share does not count against its backup.
            if let Some(n) = first_of.get_mut(first) {
                *n = n.saturating_sub(1);
            }
        }
        // Keep live backups in their order, fill up with the policy's
        // choice (over the regions they do not hold yet).
        let live: Vec<NodeId> = record
            .backups
            .iter()
            .filter(|b| self.is_alive(b))
            .cloned()
            .collect();
        let backups =
            policy::extend_backups(&self.me, &live, &candidates, &first_of, &self.config.policy);
        if backups != record.backups
            && let Ok(delta) = self
                .map
                .update_backups(&self.signer, &record.id, backups, now_ms)
        {
            self.broadcast_delta(&delta);
            self.after_change(now, &record.id);
        }
    }

    /// The service of session `id` failed to run here (it would not start,
    /// or its command kept dying): the session goes to the next cluster,
    /// its first live backup, at once (nothing runs here to keep running);
    /// this node leaves its backups. Nodes the session's history shows it
    /// failed on already are skipped, so that a session that fails
    /// everywhere goes round once, not forever. With no live backup left,
    /// the session is closed, saying why. Returns where it went, if
    /// anywhere.
    pub fn service_failed(
        &mut self,
        now: Instant,
        now_ms: u64,
        id: &str,
        why: &str,
    ) -> Option<NodeId> {
        let record = self.map.get(id).cloned()?;
        if record.primary != self.me || record.state != SessionState::Active {
            // A warm instance that failed: the takeover will start it cold.
            if self.warm.remove(id) {
                self.actions.push_back(Action::Stop {
                    id: id.to_string(),
                    reason: format!("warm standby failed: {why}"),
                });
            }
            return None;
        }
        // The reason that carries `why` must fit a record whole (256 bytes,
        // with the node id and words around it): a long message is cut here,
        // visibly, rather than the sentence around it.
        let why = short_why(why);
        // As far as this node saw: a history it missed a move of may send
        // the session round once more.
        let failed: BTreeSet<NodeId> = self
            .history(id)
            .iter()
            .filter(|m| m.reason.starts_with(SERVICE_FAILED))
            .map(|m| m.writer.clone())
            .collect();
        let next = record
            .backups
            .iter()
            .find(|b| self.is_alive(b) && !failed.contains(*b))
            .cloned();
        let Some(to) = next else {
            let reason = format!("failed: the service would not run on {}: {why}", self.me);
            if let Ok(delta) = self.map.close_because(&self.signer, id, &reason, now_ms) {
                self.broadcast_delta(&delta);
                self.after_change(now, id);
            }
            return None;
        };
        let peers = self.candidates(&record.location, Some(&self.me.clone()));
        let first_of = self.first_backup_counts(&to);
        let mut backups = policy::choose_backups(&to, &peers, &first_of, &self.config.policy);
        backups.retain(|b| *b != self.me && !failed.contains(b));
        let reason = format!("{SERVICE_FAILED} {}: {why}", self.me);
        let delta = self
            .map
            .handover(&self.signer, id, to.clone(), &reason, backups, now_ms)
            .ok()?;
        self.last_move.insert(id.to_string(), now);
        self.broadcast_delta(&delta);
        self.stop(id, &reason);
        self.after_change(now, id);
        Some(to)
    }

    fn consider_transfer(&mut self, now: Instant, now_ms: u64, record: &Record) {
        if self.handing_over.contains_key(&record.id) {
            return;
        }
        let Some(session) = self.session_perf.get(&record.id) else {
            return;
        };
        let (since, perf) = session.poor();
        // How long the reports show poor service: from the start of the
        // span the first poor report covered to the latest report, which
        // stands for one report interval more when it is lossy itself in a
        // run of two or more (a client that went quiet is not evidence of
        // more than that).
        let stands = if session.latest_stands() {
            REPORT_STANDS
        } else {
            Duration::ZERO
        };
        let evidence_to = session
            .aggregate
            .last_at
            .map_or(now, |last| now.min(last + stands));
        let poor_for = since.map(|t| evidence_to.saturating_duration_since(t));
        let since_move = self
            .last_move
            .get(&record.id)
            .map_or(Duration::MAX, |t| now.saturating_duration_since(*t));
        let peers = self.candidates(&record.location, Some(&self.me.clone()));
        let Some(to) =
            policy::transfer_to(&perf, poor_for, since_move, &peers, &self.config.policy)
        else {
            return;
        };
        let first_of = self.first_backup_counts(&to);
        let mut backups = policy::choose_backups(&to, &peers, &first_of, &self.config.policy);
        // This node stays a backup: it serves the session until the handover
        // is confirmed and can take it back if the new primary fails.
        backups.retain(|b| *b != self.me);
        backups.insert(0, self.me.clone());
        backups.truncate(self.config.policy.backups.max(1));
        let reason = format!(
            "transfer: client loss {:.1}% jitter {} ms rtt {} ms",
            perf.loss * 100.0,
            perf.jitter.as_millis(),
            perf.rtt.as_millis()
        );
        if let Ok(delta) = self
            .map
            .handover(&self.signer, &record.id, to, &reason, backups, now_ms)
        {
            let epoch = delta.record.epoch;
            self.handing_over.insert(
                record.id.clone(),
                (epoch, now + self.config.handover_timeout),
            );
            self.last_move.insert(record.id.clone(), now);
            self.session_perf.remove(&record.id);
            self.broadcast_delta(&delta);
            self.after_change(now, &record.id);
        }
    }

    /// Keeps the primary index in step with the map for session `id`.
    fn reindex(&mut self, id: &str) {
        let new = self
            .map
            .get(id)
            .filter(|r| r.state == SessionState::Active)
            .map(|r| r.primary.clone());
        let old = self.primary_of.get(id).cloned();
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(set) = self.by_primary.get_mut(&old) {
                set.remove(id);
                if set.is_empty() {
                    self.by_primary.remove(&old);
                }
            }
            self.primary_of.remove(id);
        }
        if let Some(new) = new {
            self.by_primary
                .entry(new.clone())
                .or_default()
                .insert(id.to_string());
            self.primary_of.insert(id.to_string(), new);
        }
    }

    /// Versions from a peer's anti-entropy: sessions' chains, each oldest
    /// first. All go into the map before this node acts, so that it acts on
    /// where each session ends and not on the steps in between: a node that
    /// restarted must not start a session it claimed two takeovers ago just
    /// because the chain passes through that claim. Returns the sessions
    /// that changed, which are spread further.
    pub fn handle_deltas(
        &mut self,
        now: Instant,
        now_ms: u64,
        deltas: impl IntoIterator<Item = Delta>,
    ) -> BTreeSet<String> {
        let changed = self.import(now, now_ms, deltas);
        for id in &changed {
            if let Some(delta) = self.map.delta(id).cloned() {
                self.broadcast_delta(&delta);
            }
        }
        changed
    }

    /// Versions learnt in bulk (a simulator's warm start, as if anti-entropy
    /// had brought them): stored like [`handle_deltas`](Self::handle_deltas)
    /// stores them, but not spread further. Returns the sessions that
    /// changed.
    pub fn import(
        &mut self,
        now: Instant,
        now_ms: u64,
        deltas: impl IntoIterator<Item = Delta>,
    ) -> BTreeSet<String> {
        let changed = self.apply_all(deltas, now_ms);
        for id in &changed {
            self.after_change(now, id);
        }
        changed
    }

    fn apply_all(
        &mut self,
        deltas: impl IntoIterator<Item = Delta>,
        now_ms: u64,
    ) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        for delta in deltas {
            let id = delta.id().to_string();
            match self.map.apply(delta, now_ms) {
                Ok(Applied::Stale) => {}
                Ok(_) => {
                    changed.insert(id);
                }
                Err(_) => self.rejected += 1,
            }
        }
        changed
    }

    /// Reconciles what this node hosts with the map after `id` changed.
    fn after_change(&mut self, now: Instant, id: &str) {
        self.reconcile(now, id, false);
    }

    /// [`after_change`](Self::after_change); `fresh` for a session this
    /// node just opened, which it serves during the resume grace too.
    fn reconcile(&mut self, now: Instant, id: &str, fresh: bool) {
        self.reindex(id);
        let Some(record) = self.map.get(id).cloned() else {
            return;
        };
        self.note_move(&record);
        if record.state == SessionState::Active
            && record.backups.contains(&self.me)
            && self.is_down(&record.primary).is_some()
        {
            self.learnt_late.insert(id.to_string(), now);
        } else {
            self.learnt_late.remove(id);
            self.left_to_later.remove(id);
        }
        let mine = record.primary == self.me && record.state == SessionState::Active;
        self.keep_standby(&record, mine);
        if mine && (self.fenced || (self.resume_at.is_some() && !fresh)) {
            // Served again when the fence lifts and the grace has passed.
            return;
        }
        if !mine || self.hosting.contains(id) {
            self.comparing.remove(id);
        } else if !fresh && self.awaits_comparison(now, &record) {
            return;
        }
        if mine {
            // Primary again (a transfer whose new primary died before it
            // confirmed came back here): no handover is pending any more.
            self.handing_over.remove(id);
            if !self.hosting.contains(id) {
                self.hosting.insert(id.to_string());
                // min_dwell counts from when this node starts hosting it,
                // also when it comes back (not from when it left).
                self.last_move.insert(id.to_string(), now);
                if self.config.consent.applies_to(&record.client) {
                    // A new session's client consents within `first`; one
                    // that moved here keeps the consent it had.
                    let window = if record.reason.starts_with("open") {
                        self.config.consent.first
                    } else {
                        self.config.consent.interval
                    };
                    self.consent.insert(
                        id.to_string(),
                        Consent {
                            until: now + window,
                            paused_since: None,
                            since: now,
                            heard: None,
                        },
                    );
                }
                self.actions
                    .push_back(Action::Start(Box::new(record.clone())));
                // A handover to this node is confirmed with a version of
                // its own, which tells the old primary that it may stop:
                // once the new instance sends (make-before-break).
                if record.writer != self.me && record.version == 0 {
                    self.confirming
                        .insert(id.to_string(), now + self.config.handover_timeout / 2);
                }
            }
            return;
        }
        if !self.hosting.contains(id) {
            self.vouch(now, &record);
            return;
        }
        // Make-before-break: a handover this node wrote keeps running until
        // the new primary confirms (a newer version of that epoch by it).
        if let Some((epoch, _)) = self.handing_over.get(id).copied()
            && record.state == SessionState::Active
        {
            let confirmed =
                record.epoch > epoch || (record.epoch == epoch && record.writer == record.primary);
            if !confirmed {
                return;
            }
            self.handing_over.remove(id);
            self.stop(id, "handed over: the new primary confirmed");
            return;
        }
        let reason = if record.state == SessionState::Closed {
            "closed".to_string()
        } else {
            format!("moved to {} ({})", record.primary, record.reason)
        };
        // The client's word here is passed on to the new primary: it may
        // be one the client could not reach, and so could not consent to.
        if record.state == SessionState::Active {
            self.remember_consent(now, id);
        }
        self.stop(id, &reason);
        self.vouch(now, &record);
    }

    /// Keeps the consent of hosted session `id`, when its client's word is
    /// fresh, to vouch for it to the primaries that follow this node.
    fn remember_consent(&mut self, now: Instant, id: &str) {
        if let Some(heard) = self.consent.get(id).and_then(|c| c.heard)
            && now.saturating_duration_since(heard) < self.config.consent.interval
        {
            self.vouched.insert(
                id.to_string(),
                Vouched {
                    heard,
                    to: self.me.clone(),
                    sent: 0,
                    next: now,
                },
            );
        }
    }

    /// Passes on the client's consent to `record`'s primary when this node
    /// stopped hosting the session with the consent fresh and has not
    /// vouched to that primary yet (see `vouched`).
    fn vouch(&mut self, now: Instant, record: &Record) {
        let Some(v) = self.vouched.get_mut(&record.id) else {
            return;
        };
        let stale = now.saturating_duration_since(v.heard) >= self.config.consent.interval;
        if stale || record.state != SessionState::Active {
            self.vouched.remove(&record.id);
            return;
        }
        if record.primary == self.me {
            // Back here: nobody to vouch to (and no repeats to the last).
            v.to = self.me.clone();
            return;
        }
        if record.primary == v.to {
            return;
        }
        v.to = record.primary.clone();
        v.sent = 0;
        self.send_vouch(now, &record.id);
    }

    /// Sends vouched session `id`'s word to its primary (again).
    fn send_vouch(&mut self, now: Instant, id: &str) {
        let Some(v) = self.vouched.get_mut(id) else {
            return;
        };
        v.sent += 1;
        v.next = now + VOUCH_RESEND;
        let age = now.saturating_duration_since(v.heard);
        self.actions.push_back(Action::Vouch {
            id: id.to_string(),
            to: v.to.clone(),
            age_ms: u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
        });
    }

    /// Starts or stops this node's warm instance of `record` as it is or
    /// stops being its first backup. A warm instance that becomes primary
    /// is promoted by the `Start` that follows, not stopped.
    fn keep_standby(&mut self, record: &Record, mine: bool) {
        let id = &record.id;
        let should = !self.fenced
            && record.state == SessionState::Active
            && !mine
            && record.backups.first() == Some(&self.me)
            && self.standby_of(record) == Standby::Warm;
        if should && !self.warm.contains(id) && !self.hosting.contains(id) {
            self.warm.insert(id.clone());
            self.actions
                .push_back(Action::Warm(Box::new(record.clone())));
        } else if !should && self.warm.remove(id) && !mine {
            self.actions.push_back(Action::Stop {
                id: id.clone(),
                reason: if record.state == SessionState::Closed {
                    "closed: warm standby stopped".into()
                } else {
                    "no longer its first backup: warm standby stopped".into()
                },
            });
        }
    }

    fn stop(&mut self, id: &str, reason: &str) {
        self.consent.remove(id);
        self.confirming.remove(id);
        // What this node's clients said of the session is over with it: a
        // session that comes back starts its reports afresh, not from the
        // poor ones that sent it away.
        self.session_perf.remove(id);
        if self.hosting.remove(id) {
            self.actions.push_back(Action::Stop {
                id: id.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    /// Whether `record`, which names this node primary of a session it
    /// does not host, waits for map comparisons before it is served: a
    /// version this node wrote before its process started (or its fence
    /// lifted) may have been superseded by a backup's claim, and that claim
    /// may not have reached this node yet (the peers it synced with may not
    /// hold it, and the gossip spreading it may be over). Every live backup
    /// the version lists is asked; the claimer is one of them, so once each
    /// has been compared with, the claim would be here. Found in the
    /// simulator (100 nodes, five crashing at once, two backups): a
    /// restarted primary learnt its old version after its grace, served
    /// it, and learnt the backup's claim half a second later.
    fn awaits_comparison(&mut self, now: Instant, record: &Record) -> bool {
        let inherited = record.writer == self.me && record.updated_ms < self.life_ms;
        if !inherited {
            return false;
        }
        let until = *self
            .comparing
            .entry(record.id.clone())
            .or_insert(now + self.config.compare_timeout);
        let missing: Vec<NodeId> = record
            .backups
            .iter()
            .filter(|b| **b != self.me && self.is_alive(b) && !self.compared.contains(*b))
            .cloned()
            .collect();
        if now >= until || missing.is_empty() {
            self.comparing.remove(&record.id);
            return false;
        }
        let ask: Vec<NodeId> = missing
            .into_iter()
            .filter(|b| self.compare_asked.insert(b.clone()))
            .collect();
        if !ask.is_empty() {
            self.actions.push_back(Action::Compare { peers: ask });
        }
        true
    }

    /// Reconciles again the inherited sessions waiting for comparisons:
    /// every one, or (`expired_only`) those whose wait ran out by `now`.
    fn recheck_comparing(&mut self, now: Instant, expired_only: bool) {
        let ids: Vec<String> = self
            .comparing
            .iter()
            .filter(|(_, until)| !expired_only || now >= **until)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.after_change(now, &id);
        }
    }

    fn note_move(&mut self, record: &Record) {
        let history = self.history.entry(record.id.clone()).or_default();
        if history.last().is_some_and(|m| m.epoch >= record.epoch) {
            return;
        }
        history.push(Move {
            epoch: record.epoch,
            primary: record.primary.clone(),
            writer: record.writer.clone(),
            reason: record.reason.clone(),
            at_ms: record.updated_ms,
        });
        if history.len() > 32 {
            history.remove(0);
        }
    }

    fn broadcast_delta(&mut self, delta: &Delta) {
        self.actions.push_back(Action::Broadcast {
            key: format!("session/{}", delta.id()).into_bytes(),
            payload: AppMessage::Delta(Box::new(delta.clone())).encode(),
        });
    }

    /// Live members and this node as placement candidates for `location`.
    fn candidates(&self, location: &str, exclude: Option<&NodeId>) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = self
            .members
            .iter()
            .filter(|(id, m)| m.state == State::Alive && Some(*id) != exclude)
            .map(|(id, m)| Candidate {
                id: id.clone(),
                distance: m.distance,
                capacity: m.capacity,
                load: m.load,
                perf: self
                    .peer_perf
                    .get(&(location.to_string(), id.clone()))
                    .copied(),
                tags: m.tags.clone(),
            })
            .collect();
        if exclude != Some(&self.me) {
            out.push(Candidate {
                id: self.me.clone(),
                distance: Some(Duration::ZERO),
                capacity: self.capacity,
                load: self.load(),
                perf: self.own_locations.get(location).map(|(a, _)| a.perf()),
                tags: self.tags.clone(),
            });
        }
        out
    }

    /// For each node, how many sessions of `primary` it is first backup of.
    fn first_backup_counts(&self, primary: &NodeId) -> BTreeMap<NodeId, u32> {
        let mut counts = BTreeMap::new();
        let ids = self.by_primary.get(primary).into_iter().flatten();
        for record in ids.filter_map(|id| self.map.get(id)) {
            if let Some(first) = record.backups.first() {
                *counts.entry(first.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests;
