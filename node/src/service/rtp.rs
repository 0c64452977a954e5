//! `rtp-audio`: an RTP stream (RFC 3550) of G.711 mu-law audio (payload
//! type 0, PCMU, RFC 3551), 8 kHz, one packet of 160 samples every 20 ms,
//! sent to the client's UDP address.
//!
//! Every byte of every packet is a function of the session alone (its id,
//! parameters and start time) and of the packet's index `k`, so a cluster
//! that takes over continues the very same stream: same SSRC, sequence
//! numbers and timestamps that carry on from where the failed cluster
//! stopped, with a gap the length of the outage. A receiver sees one stream
//! with missing packets, not a new stream; during a make-before-break
//! transfer two clusters send byte-identical duplicates that it discards.
//!
//! The derivation (part of the protocol: all nodes must agree on it):
//!
//! - SSRC, `seq0` and `ts0` follow from the session id as
//!   [`baton_protocol::stream`] derives them, unless the parameters `ssrc`,
//!   `seq0`, `ts0` give them (decimal or `0x` hex).
//! - Packet `k = 0, 1, 2, ...` is due at Unix time `started_ms + 20 k` ms.
//!   Its header: V=2, P=0, X=0, CC=0, M=1 for `k = 0` only, PT=0,
//!   sequence `(seq0 + k) mod 2^16`, timestamp `(ts0 + 160 k) mod 2^32`,
//!   the SSRC. Its payload: samples `160 k .. 160 k + 160` of the source,
//!   mu-law encoded.
//! - An instance reads the wall clock once when it starts and schedules on
//!   the monotonic clock from there. It starts with the first packet due at
//!   or after that moment: missed packets are not replayed, the gap is what
//!   the user hears. Packets found late when the instance wakes (a stall)
//!   are sent at once, up to [`MAX_CATCH_UP`] of them; older ones are
//!   skipped. Stopping sends every packet already due, so a stop never
//!   drops the packet of the moment.
//! - Nodes' clocks must agree (NTP; one clock in tests): a node whose clock
//!   is ahead by `d` resumes `d` later in the stream, one behind resends
//!   packets the receiver already had. A make-before-break transfer loses
//!   nothing when the old instance runs on until the new one has started
//!   plus the clock offset between them.
//!
//! Sources (the `source` parameter): `tone` (the default: 440 Hz) or
//! `tone:HZ`, a sine computed with `+ - * /` only, so it is bit-identical on
//! every IEEE 754 machine; or `wav:NAME`, a file in the node's media
//! directory ([`super::wav`] formats), looped. Every node must hold the same
//! file under the same name.
//!
//! RTCP (RFC 3550 §6, [`super::rtcp`]): the stream is sent from an even
//! port P and an RTCP socket is bound on P + 1 (§11; if no such pair can be
//! had the session goes on without RTCP). Receiver reports on the stream's
//! SSRC, in RR or SR packets of a compound packet, that come to P + 1 from
//! the client's IP address become [`crate::views::Report`]s handed to
//! the node (see [`super::Reports`]); anything else is ignored. Every
//! [`SR_INTERVAL`] the instance sends a sender report (with an SDES CNAME
//! derived from the session id) to the client's RTCP port (its even RTP
//! port + 1), so that reports echoing it carry a round-trip time. Clients
//! may also report their service quality through the node's API.

use std::f64::consts::TAU;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_protocol::stream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::rtcp::{self, Reporter};
use super::{
    Channels, Error, Instance, Reports, Service, SessionSpec, SharedStatus, Status, TaskInstance,
};
use super::{Outlet, g711, lock, wav};

/// RTP clock rate of PCMU (Hz).
pub use baton_protocol::stream::CLOCK_RATE;
/// Samples per packet.
pub const SAMPLES: usize = stream::SAMPLES_PER_PACKET as usize;
/// RTP fixed header length.
pub const HEADER_LEN: usize = 12;
/// Whole packet length.
pub const PACKET_LEN: usize = HEADER_LEN + SAMPLES;
/// RTP payload type of G.711 mu-law (RFC 3551).
pub const PAYLOAD_TYPE_PCMU: u8 = 0;
/// Most late packets sent at once when an instance wakes late (200 ms).
pub const MAX_CATCH_UP: u64 = 10;
/// Frequency of the `tone` source.
pub const DEFAULT_TONE_HZ: u32 = 440;
/// Peak of the `tone` source: about -10 dBFS.
pub const TONE_AMPLITUDE: f64 = 10_000.0;

/// Time between the sender reports of an instance.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);
/// How many ephemeral ports are tried for an even RTP port with a free
/// RTCP port above it.
const PORT_PAIR_ATTEMPTS: usize = 16;

/// The parameters rtp-audio takes (`standby` is the node's: how the first
/// backup stands by).
const PARAMS: &str = "source, ssrc, seq0, ts0, standby";

/// The stream's identifiers as the session gives them: derived from its id,
/// unless its parameters `ssrc`, `seq0`, `ts0` override them.
pub fn ids_for_session(spec: &SessionSpec) -> Result<stream::Ids, Error> {
    let mut ids = stream::Ids::derive(&spec.id);
    if let Some(v) = spec.params.get("ssrc") {
        ids.ssrc = parse_int(v).ok_or_else(|| number_error("ssrc", "u32"))?;
    }
    if let Some(v) = spec.params.get("seq0") {
        ids.seq0 = parse_int(v).ok_or_else(|| number_error("seq0", "0..65535"))?;
    }
    if let Some(v) = spec.params.get("ts0") {
        ids.ts0 = parse_int(v).ok_or_else(|| number_error("ts0", "u32"))?;
    }
    Ok(ids)
}

/// The payload of an RTP packet (after its CSRCs and header extension,
/// without padding), if `datagram` is one: version 2, not RTCP (RFC 5761
/// §4: a second octet of 192 to 223), every length inside the datagram.
pub fn payload(datagram: &[u8]) -> Option<&[u8]> {
    if datagram.len() < HEADER_LEN || datagram[0] >> 6 != 2 || (192..=223).contains(&datagram[1]) {
        return None;
    }
    let mut start = HEADER_LEN + 4 * usize::from(datagram[0] & 0x0F);
    if datagram[0] & 0x10 != 0 {
        let words = datagram.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = datagram.len();
    if datagram[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*datagram.last()?))?;
    }
    datagram.get(start..end)
}

fn parse_int<T: TryFrom<u64>>(v: &str) -> Option<T> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => v.parse().ok()?,
    };
    T::try_from(n).ok()
}

fn number_error(key: &str, range: &str) -> Error {
    Error::param(
        key,
        format!("expected an integer in {range}, decimal or 0x hex"),
    )
}

/// Where a stream's samples come from, at 8 kHz.
#[derive(Debug, Clone)]
pub enum Source {
    /// A sine of this many Hz.
    Tone {
        /// Frequency, 1..=3999.
        hz: u32,
    },
    /// Samples played in a loop.
    Samples(Arc<[i16]>),
}

impl Source {
    /// Fills `out` with the samples from index `first` on.
    pub fn fill(&self, first: u64, out: &mut [i16]) {
        match self {
            Source::Tone { hz } => {
                for (n, o) in (first..).zip(out.iter_mut()) {
                    *o = tone_sample(*hz, n);
                }
            }
            Source::Samples(samples) => {
                let len = samples.len() as u64;
                for (n, o) in (first..).zip(out.iter_mut()) {
                    *o = samples[(n % len) as usize];
                }
            }
        }
    }
}

/// Sample `n` of a sine of `hz` Hz at 8 kHz. Reduced to the first quarter
/// wave in integers, then a Taylor series to x^13 (error below 1e-9): only
/// correctly rounded IEEE operations, so the same on every machine.
pub fn tone_sample(hz: u32, n: u64) -> i16 {
    let rate = u64::from(CLOCK_RATE);
    let phase = (u64::from(hz) * (n % rate)) % rate;
    let (phase, sign) = if phase < rate / 2 {
        (phase, 1.0)
    } else {
        (phase - rate / 2, -1.0)
    };
    let phase = if phase > rate / 4 {
        rate / 2 - phase
    } else {
        phase
    };
    let x = phase as f64 * (TAU / 8000.0);
    let x2 = x * x;
    let s = x
        * (1.0
            - x2 / 6.0
                * (1.0
                    - x2 / 20.0
                        * (1.0
                            - x2 / 42.0
                                * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0 * (1.0 - x2 / 156.0))))));
    (sign * s * TONE_AMPLITUDE).round() as i16
}

/// The packets of one session's stream, as a function of their index.
#[derive(Debug, Clone)]
pub struct Stream {
    /// SSRC, initial sequence number and timestamp.
    pub ids: stream::Ids,
    /// When packet 0 is due (Unix ms).
    pub started_ms: u64,
    /// The audio.
    pub source: Source,
}

impl Stream {
    /// When packet `k` is due (Unix µs).
    pub fn due_us(&self, k: u64) -> u64 {
        stream::due_us(self.started_ms, k)
    }

    /// The last packet due at or before `unix_us`, if any is.
    pub fn last_due_at_or_before(&self, unix_us: u64) -> Option<u64> {
        stream::last_due_at_or_before(self.started_ms, unix_us)
    }

    /// RTP sequence number of packet `k`.
    pub fn seq(&self, k: u64) -> u16 {
        self.ids.seq(k)
    }

    /// RTP timestamp of packet `k`.
    pub fn timestamp(&self, k: u64) -> u32 {
        self.ids.timestamp(k)
    }

    /// Packet `k`, header and payload.
    pub fn packet(&self, k: u64) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = 0x80; // V=2, no padding, no extension, no CSRC
        p[1] = (u8::from(k == 0) << 7) | PAYLOAD_TYPE_PCMU;
        p[2..4].copy_from_slice(&self.seq(k).to_be_bytes());
        p[4..8].copy_from_slice(&self.timestamp(k).to_be_bytes());
        p[8..12].copy_from_slice(&self.ids.ssrc.to_be_bytes());
        let mut samples = [0i16; SAMPLES];
        self.source.fill(k * SAMPLES as u64, &mut samples);
        g711::encode_into(&samples, &mut p[HEADER_LEN..]);
        p
    }
}

/// Paces a stream: which packets to send when the instance wakes.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// The next packet not yet sent or skipped.
    pub next: u64,
}

impl Pacer {
    /// The packets due by `now_us` and not sent yet, at most
    /// [`MAX_CATCH_UP`] of them, and how many older ones are skipped.
    pub fn take_due(&mut self, stream: &Stream, now_us: u64) -> (std::ops::Range<u64>, u64) {
        match stream.last_due_at_or_before(now_us) {
            Some(last) if last >= self.next => {
                let first = self.next.max((last + 1).saturating_sub(MAX_CATCH_UP));
                let skipped = first - self.next;
                self.next = last + 1;
                (first..last + 1, skipped)
            }
            _ => (self.next..self.next, 0),
        }
    }
}

/// The wall clock read once, carried on by the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    anchor: Instant,
    anchor_us: u64,
}

impl Clock {
    pub(super) fn now() -> Self {
        let anchor = Instant::now();
        let anchor_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock { anchor, anchor_us }
    }

    pub(super) fn unix_us(&self) -> u64 {
        self.anchor_us + self.anchor.elapsed().as_micros() as u64
    }

    pub(super) fn instant(&self, unix_us: u64) -> Instant {
        self.anchor + Duration::from_micros(unix_us.saturating_sub(self.anchor_us))
    }
}

/// What a session asks of `rtp-audio`, checked.
#[derive(Debug, Clone)]
struct Plan {
    client: SocketAddr,
    ids: stream::Ids,
    source: SourceSpec,
}

#[derive(Debug, Clone)]
enum SourceSpec {
    Tone(u32),
    Wav(PathBuf),
}

/// The `rtp-audio` service.
#[derive(Debug, Clone, Default)]
pub struct RtpAudio {
    media_dir: Option<PathBuf>,
}

impl RtpAudio {
    /// The service, reading `wav:` sources from `media_dir` (none: refused).
    pub fn new(media_dir: Option<PathBuf>) -> Self {
        RtpAudio { media_dir }
    }

    /// The SSRC, initial sequence number and timestamp of a session's
    /// stream, for tools that check what a receiver got.
    pub fn stream_ids(&self, spec: &SessionSpec) -> Result<stream::Ids, Error> {
        Ok(self.plan(spec)?.ids)
    }

    fn plan(&self, spec: &SessionSpec) -> Result<Plan, Error> {
        if let Some(key) = spec
            .params
            .keys()
            .find(|k| !PARAMS.split(", ").any(|p| p == k.as_str()))
        {
            return Err(Error::param(
                key,
                format!("unknown to rtp-audio, which takes {PARAMS}"),
            ));
        }
        let client = parse_client(&spec.client)?;
        let ids = ids_for_session(spec)?;
        let source = match spec.params.get("source").map(String::as_str) {
            None | Some("tone") => SourceSpec::Tone(DEFAULT_TONE_HZ),
            Some(s) if s.starts_with("tone:") => {
                let hz = s["tone:".len()..]
                    .parse()
                    .ok()
                    .filter(|hz| (1..CLOCK_RATE / 2).contains(hz))
                    .ok_or_else(|| {
                        Error::param("source", "tone:HZ takes a whole frequency of 1 to 3999 Hz")
                    })?;
                SourceSpec::Tone(hz)
            }
            Some(s) if s.starts_with("wav:") => {
                SourceSpec::Wav(resolve_wav(self.media_dir.as_deref(), s)?)
            }
            Some(_) => {
                return Err(Error::param(
                    "source",
                    "expected tone, tone:HZ or wav:NAME (a file in the node's media directory)",
                ));
            }
        };
        Ok(Plan {
            client,
            ids,
            source,
        })
    }
}

pub(super) fn parse_client(client: &str) -> Result<SocketAddr, Error> {
    let bad = |reason: &str| Error::Client {
        client: client.to_string(),
        reason: reason.to_string(),
    };
    let addr: SocketAddr = client.parse().map_err(|_| {
        bad("expected the UDP address of the receiver, ip:port, such as 127.0.0.1:5004 or [::1]:5004")
    })?;
    if addr.port() == 0 {
        return Err(bad("port 0 cannot receive: give the receiver's port"));
    }
    if addr.ip().is_unspecified() {
        return Err(bad(
            "an unspecified address (0.0.0.0 or ::) cannot receive: give the receiver's address",
        ));
    }
    Ok(addr)
}

fn resolve_wav(media_dir: Option<&Path>, source: &str) -> Result<PathBuf, Error> {
    let bad = |reason: String| Error::Source {
        what: source.to_string(),
        reason,
    };
    let name = &source["wav:".len()..];
    let dir = media_dir.ok_or_else(|| {
        bad(
            "WAV sources are disabled on this node (its operator sets media_dir in the \
             [services] config)"
                .into(),
        )
    })?;
    let dir = dir
        .canonicalize()
        .map_err(|e| bad(format!("the node's media_dir {}: {e}", dir.display())))?;
    // `join` keeps an absolute name as it is; the check below then decides.
    let path = dir
        .join(name)
        .canonicalize()
        .map_err(|_| bad("no such file in the node's media directory".into()))?;
    if !path.starts_with(&dir) {
        return Err(bad("outside the node's media directory".into()));
    }
    let header = wav::probe(&path).map_err(bad)?;
    if header.frames() * u64::from(wav::RATE) / u64::from(header.rate) == 0 {
        return Err(bad("too short: less than one sample at 8 kHz".into()));
    }
    Ok(path)
}

impl Service for RtpAudio {
    /// The stream is a function of time: a paused instance keeps its place
    /// and, unpaused, sends what is due, as a fresh one would.
    fn can_stand_by(&self, _spec: &SessionSpec) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "rtp-audio"
    }

    fn validate(&self, spec: &SessionSpec) -> Result<(), Error> {
        self.plan(spec).map(drop)
    }

    fn start(&self, spec: SessionSpec) -> Result<Box<dyn Instance>, Error> {
        self.start_with(spec, Channels::default())
    }

    fn start_with(&self, spec: SessionSpec, to: Channels) -> Result<Box<dyn Instance>, Error> {
        let plan = self.plan(&spec)?;
        let clock = Clock::now();
        let outlet = Outlet::new(to.probes, plan.client.ip());
        let sender = Sender::open(plan.client, plan.ids, &spec.id, to.reports, "rtp-audio")?;
        let status: SharedStatus = Arc::new(Mutex::new(Status {
            ssrc: Some(plan.ids.ssrc),
            ..Status::default()
        }));
        let pacer = Pacer {
            next: stream::first_due_at_or_after(spec.started_ms, clock.unix_us()),
        };
        let task_status = status.clone();
        let (first_sent, first_packet) = oneshot::channel();
        TaskInstance::spawn_with(status, Some(first_packet), move |stop| {
            run(
                plan,
                spec.started_ms,
                sender,
                clock,
                pacer,
                task_status,
                outlet,
                (stop, first_sent),
            )
        })
    }
}

/// The sending side of a session's stream: its RTP socket, connected to the
/// client, and its RTCP side on the port above, if it could be had. Shared
/// by `rtp-audio` and the `exec` gate ([`super::gate`]).
#[derive(Debug)]
pub(super) struct Sender<S = UdpSocket> {
    pub(super) socket: S,
    pub(super) rtcp: Option<RtcpSide<S>>,
}

impl Sender {
    /// Opens the sockets towards `client` for the stream `ids` of session
    /// `id`; `service` names the stream in the CNAME of its sender reports.
    pub(super) fn open(
        client: SocketAddr,
        ids: stream::Ids,
        id: &str,
        reports: Option<Reports>,
        service: &str,
    ) -> Result<Self, Error> {
        let local: IpAddr = match client {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let (socket, rtcp_socket) = bind_pair(local, id)
            .and_then(|(s, rtcp)| s.connect(client).map(|()| (s, rtcp)))
            .and_then(|(s, rtcp)| s.set_nonblocking(true).map(|()| (s, rtcp)))
            .map_err(|e| Error::io(format!("open a UDP socket to {client}"), e))?;
        let rtcp = rtcp_socket.map(|socket| RtcpSide {
            socket,
            client_ip: client.ip().to_canonical(),
            // RFC 3550 §11: an odd RTP port stands for the even one below.
            peer: SocketAddr::new(client.ip(), (client.port() & !1) + 1),
            client_rtp_port: client.port(),
            reporter: Reporter::new(ids.ssrc),
            reports,
            id: id.to_string(),
            cname: format!("{service}@baton/{id}"),
        });
        Ok(Sender { socket, rtcp })
    }

    /// Registers the sockets with the runtime; going on without RTCP if
    /// only its socket cannot be.
    pub(super) fn register(self) -> Result<Sender<tokio::net::UdpSocket>, String> {
        let socket = tokio::net::UdpSocket::from_std(self.socket)
            .map_err(|e| format!("cannot register the UDP socket: {e}"))?;
        let rtcp = self.rtcp.and_then(|side| {
            let id = side.id.clone();
            side.register()
                .map_err(|e| {
                    tracing::warn!(session = %id, error = %e,
                        "cannot register the RTCP socket; going on without RTCP");
                })
                .ok()
        });
        Ok(Sender { socket, rtcp })
    }
}

/// Binds the RTP socket on an even ephemeral port P and the RTCP socket on
/// P + 1. Without such a pair after a few tries: an RTP socket alone.
fn bind_pair(local: IpAddr, id: &str) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    let mut why = String::from("only odd ports were offered");
    for _ in 0..PORT_PAIR_ATTEMPTS {
        let rtp = UdpSocket::bind((local, 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 {
            continue;
        }
        match UdpSocket::bind((local, port + 1)).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(rtcp) => return Ok((rtp, Some(rtcp))),
            Err(e) => why = format!("port {} above RTP port {port}: {e}", port + 1),
        }
    }
    tracing::warn!(session = %id, %why, "no RTCP port pair; the stream goes on without RTCP");
    Ok((UdpSocket::bind((local, 0))?, None))
}

/// The RTCP side of an instance (std socket until the task registers it).
#[derive(Debug)]
pub(super) struct RtcpSide<S = UdpSocket> {
    socket: S,
    /// Only the client's reports count.
    client_ip: IpAddr,
    /// Where sender reports go: the client's RTCP port.
    peer: SocketAddr,
    client_rtp_port: u16,
    reporter: Reporter,
    reports: Option<Reports>,
    id: String,
    /// SDES CNAME of the sender reports.
    cname: String,
}

impl RtcpSide {
    fn register(self) -> std::io::Result<RtcpSide<tokio::net::UdpSocket>> {
        Ok(RtcpSide {
            socket: tokio::net::UdpSocket::from_std(self.socket)?,
            client_ip: self.client_ip,
            peer: self.peer,
            client_rtp_port: self.client_rtp_port,
            reporter: self.reporter,
            reports: self.reports,
            id: self.id,
            cname: self.cname,
        })
    }
}

impl RtcpSide<tokio::net::UdpSocket> {
    /// Hands the reports on the stream in `datagram` to the node.
    pub(super) fn received(&mut self, datagram: &[u8], from: SocketAddr, unix_us: u64) {
        if from.ip().to_canonical() != self.client_ip {
            return;
        }
        let bodies = self.reporter.reports(datagram, unix_us);
        let Some(reports) = &self.reports else {
            return;
        };
        for body in bodies {
            if reports.try_send((self.id.clone(), body)).is_err() {
                tracing::debug!(session = %self.id, "RTCP report dropped: the node is busy");
            }
        }
    }

    /// Sends a sender report on the stream `ids` of a session started at
    /// `started_ms`, as of `unix_us`, having sent `packets` packets of
    /// `octets` payload octets; nothing before the first packet.
    pub(super) async fn send_report(
        &self,
        (ids, started_ms): (stream::Ids, u64),
        unix_us: u64,
        packets: u64,
        octets: u64,
    ) {
        if packets == 0 {
            return;
        }
        let rtp_ts = ids.timestamp_at(started_ms, unix_us);
        let report = rtcp::sender_report(
            ids.ssrc,
            unix_us,
            rtp_ts,
            packets as u32,
            octets as u32,
            &self.cname,
        );
        // RFC 3550 §11 maps an odd RTP port to the pair below it, whose RTCP
        // port is the client's RTP port itself: an SR there would land in the
        // media stream. Such clients get no SR (their reports still count).
        if self.peer.port() == self.client_rtp_port {
            return;
        }
        // Best effort: a lost SR only means a report without RTT.
        let _ = self.socket.send_to(&report, self.peer).await;
    }
}

/// Receives a datagram on `rtcp`, if there is one; pending forever if not.
pub(super) async fn recv_rtcp(
    rtcp: Option<&RtcpSide<tokio::net::UdpSocket>>,
) -> std::io::Result<(Vec<u8>, SocketAddr)> {
    let Some(rtcp) = rtcp else {
        return std::future::pending().await;
    };
    let mut buf = vec![0u8; 1500];
    let (n, from) = rtcp.socket.recv_from(&mut buf).await?;
    buf.truncate(n);
    Ok((buf, from))
}

/// What woke the instance.
enum Wake {
    Stop,
    Due,
    SenderReport,
    Rtcp(std::io::Result<(Vec<u8>, SocketAddr)>),
}

#[allow(clippy::too_many_arguments)]
async fn run(
    plan: Plan,
    started_ms: u64,
    sender: Sender,
    clock: Clock,
    mut pacer: Pacer,
    status: SharedStatus,
    mut outlet: Outlet,
    (mut stop, first_sent): (oneshot::Receiver<()>, oneshot::Sender<std::time::Instant>),
) {
    let mut first_sent = Some(first_sent);
    let fail = |error: String| {
        let mut s = lock(&status);
        s.last_error = Some(error);
        s.running = false;
    };
    let Sender { socket, mut rtcp } = match sender.register() {
        Ok(sender) => sender,
        Err(e) => return fail(e),
    };
    let source = match plan.source {
        SourceSpec::Tone(hz) => Source::Tone { hz },
        SourceSpec::Wav(path) => {
            let load = tokio::task::spawn_blocking(move || wav::load(&path));
            tokio::select! {
                biased;
                _ = &mut stop => {
                    lock(&status).running = false;
                    return;
                }
                loaded = load => match loaded {
                    Ok(Ok(samples)) => Source::Samples(samples.into()),
                    Ok(Err(e)) => return fail(format!("cannot load the WAV source: {e}")),
                    Err(e) => return fail(format!("cannot load the WAV source: {e}")),
                },
            }
        }
    };
    let stream = Stream {
        ids: plan.ids,
        started_ms,
        source,
    };
    let mut next_report = Instant::now() + SR_INTERVAL / 10;
    loop {
        let due = clock.instant(stream.due_us(pacer.next));
        let wake = tokio::select! {
            biased;
            _ = &mut stop => Wake::Stop,
            () = tokio::time::sleep_until(due) => Wake::Due,
            () = tokio::time::sleep_until(next_report), if rtcp.is_some() => Wake::SenderReport,
            got = recv_rtcp(rtcp.as_ref()) => Wake::Rtcp(got),
        };
        let stopping = match (wake, &mut rtcp) {
            (Wake::Rtcp(Ok((datagram, from))), Some(rtcp)) => {
                rtcp.received(&datagram, from, clock.unix_us());
                continue;
            }
            // Errors of an unconnected UDP socket are transient (an ICMP
            // error after a sender report): ignored.
            (Wake::Rtcp(_), _) => continue,
            (Wake::SenderReport, Some(rtcp)) => {
                let (quiet, sent) = {
                    let s = lock(&status);
                    (s.paused || s.standby, s.packets_sent)
                };
                if !quiet {
                    let ids = (stream.ids, stream.started_ms);
                    let octets = sent * SAMPLES as u64;
                    rtcp.send_report(ids, clock.unix_us(), sent, octets).await;
                }
                next_report = Instant::now() + SR_INTERVAL;
                continue;
            }
            (Wake::SenderReport, None) => continue,
            (Wake::Due, _) => false,
            (Wake::Stop, _) => true,
        };
        let (packets, skipped) = pacer.take_due(&stream, clock.unix_us());
        let (paused, standby) = {
            let mut s = lock(&status);
            s.packets_skipped += skipped;
            (s.paused, s.standby)
        };
        // Paused or standing by, the stream keeps its place: what is due is
        // not sent (but for a consent probe a second while paused), and
        // resuming sends what is due then, as a takeover would.
        let now = std::time::Instant::now();
        for k in packets
            .into_iter()
            .filter(|_| outlet.admits(paused, standby, now))
        {
            let result = socket.send(&stream.packet(k)).await;
            let mut s = lock(&status);
            match result {
                Ok(_) => {
                    s.packets_sent += 1;
                    if let Some(first) = first_sent.take() {
                        let _ = first.send(std::time::Instant::now());
                    }
                }
                // Kept going: an ICMP unreachable from a receiver that is
                // not up yet must not end the session.
                Err(e) => s.last_error = Some(format!("send to {}: {e}", plan.client)),
            }
        }
        if stopping {
            break;
        }
    }
    lock(&status).running = false;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn spec(id: &str, client: &str, params: &[(&str, &str)]) -> SessionSpec {
        SessionSpec {
            id: id.into(),
            service: "rtp-audio".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            client: client.into(),
            started_ms: now_ms(),
        }
    }

    fn tone_stream(ids: stream::Ids) -> Stream {
        Stream {
            ids,
            started_ms: 1_000,
            source: Source::Tone { hz: 440 },
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-rtp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn params_override_the_derived_ids() {
        let s = spec(
            "s1",
            "127.0.0.1:5004",
            &[("ssrc", "0xDEADBEEF"), ("seq0", "65535"), ("ts0", "7")],
        );
        let ids = ids_for_session(&s).unwrap();
        assert_eq!((ids.ssrc, ids.seq0, ids.ts0), (0xDEAD_BEEF, 65535, 7));
        for (key, value) in [("seq0", "65536"), ("ssrc", "-1"), ("ts0", "0x1_0000_0000")] {
            let err = ids_for_session(&spec("s1", "127.0.0.1:5004", &[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn header_is_laid_out_as_rfc_3550_says() {
        let stream = tone_stream(stream::Ids {
            ssrc: 0x1122_3344,
            seq0: 0xFFFE,
            ts0: 0xFFFF_FF00,
        });
        let p0 = stream.packet(0);
        assert_eq!(p0.len(), 172);
        assert_eq!(
            p0[..12],
            [
                0x80, 0x80, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0x00, 0x11, 0x22, 0x33, 0x44
            ]
        );
        // No marker after the first packet; sequence and timestamp wrap.
        let p1 = stream.packet(1);
        assert_eq!(
            p1[..12],
            [
                0x80, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xA0, 0x11, 0x22, 0x33, 0x44
            ]
        );
        let p2 = stream.packet(2);
        assert_eq!(
            p2[..12],
            [
                0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x22, 0x33, 0x44
            ]
        );
        // The payload is the tone from sample 320 on, mu-law encoded.
        let expected: Vec<u8> = (320..480)
            .map(|n| g711::encode(tone_sample(440, n)))
            .collect();
        assert_eq!(p2[12..], expected[..]);
    }

    #[test]
    fn tone_is_a_sine_repeating_every_five_packets() {
        for n in 0..400u64 {
            let exact = (TAU * 440.0 * n as f64 / 8000.0).sin() * TONE_AMPLITUDE;
            assert!(
                (f64::from(tone_sample(440, n)) - exact).abs() <= 0.5 + 1e-6,
                "{n}"
            );
        }
        let stream = tone_stream(stream::Ids::derive("x"));
        assert_eq!(stream.packet(3)[12..], stream.packet(8)[12..]);
        assert_ne!(stream.packet(3)[12..], stream.packet(4)[12..]);
    }

    #[test]
    fn streams_built_apart_produce_identical_packets() {
        // What makes takeover seamless: two nodes build the stream from the
        // record alone, at different times, and agree on every byte.
        let service = RtpAudio::new(None);
        let a = spec("call-7", "127.0.0.1:5004", &[]);
        let mut b = a.clone();
        b.client = "127.0.0.1:6000".into(); // another node's view, same session
        let (ia, ib) = (
            service.stream_ids(&a).unwrap(),
            service.stream_ids(&b).unwrap(),
        );
        let samples: Arc<[i16]> = (0..1234).map(|i| (i * 53) as i16).collect();
        for source in [Source::Tone { hz: 440 }, Source::Samples(samples)] {
            let sa = Stream {
                ids: ia,
                started_ms: a.started_ms,
                source: source.clone(),
            };
            let sb = Stream {
                ids: ib,
                started_ms: b.started_ms,
                source,
            };
            for k in (0..200)
                .chain(65_530..65_560)
                .chain([u64::from(u32::MAX) + 5])
            {
                assert_eq!(sa.packet(k), sb.packet(k), "packet {k}");
            }
        }
    }

    #[test]
    fn pacer_sends_what_is_due_and_skips_beyond_the_catch_up_window() {
        let stream = tone_stream(stream::Ids::derive("x"));
        let mut pacer = Pacer { next: 5 };
        assert_eq!(pacer.take_due(&stream, stream.due_us(5) - 1), (5..5, 0));
        assert_eq!(pacer.take_due(&stream, stream.due_us(5)), (5..6, 0));
        // Woken late by 2.5 packets: the three due ones go out together.
        assert_eq!(
            pacer.take_due(&stream, stream.due_us(8) + 10_000),
            (6..9, 0)
        );
        // A stall of a second: the last MAX_CATCH_UP go out, the rest are skipped.
        assert_eq!(pacer.take_due(&stream, stream.due_us(59)), (50..60, 41));
        assert_eq!(pacer.next, 60);
    }

    #[test]
    fn bad_sessions_are_refused_with_the_reason() {
        let service = RtpAudio::new(None);
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 8] = [
            ("nope", &[], "expected the UDP address"),
            ("127.0.0.1:0", &[], "port 0"),
            ("0.0.0.0:5004", &[], "unspecified"),
            (
                "127.0.0.1:5004",
                &[("source", "mp3:song")],
                "expected tone, tone:HZ or wav:NAME",
            ),
            ("127.0.0.1:5004", &[("source", "tone:0")], "1 to 3999 Hz"),
            ("127.0.0.1:5004", &[("source", "tone:4000")], "1 to 3999 Hz"),
            (
                "127.0.0.1:5004",
                &[("source", "wav:a.wav")],
                "WAV sources are disabled",
            ),
            (
                "127.0.0.1:5004",
                &[("volume", "11")],
                "takes source, ssrc, seq0, ts0",
            ),
        ];
        for (client, params, expected) in cases {
            let err = service.validate(&spec("s", client, params)).unwrap_err();
            assert!(err.is_request_error());
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn wav_sources_stay_inside_the_media_directory() {
        let dir = temp_dir("media");
        std::fs::write(dir.join("a.wav"), wav::encode(1, 8000, &[1; 400])).unwrap();
        std::fs::write(dir.join("junk.wav"), b"this is not audio at all").unwrap();
        let service = RtpAudio::new(Some(dir.clone()));
        let ok =
            |source: &str| service.validate(&spec("s", "127.0.0.1:5004", &[("source", source)]));
        ok("wav:a.wav").unwrap();
        ok(&format!("wav:{}", dir.join("a.wav").display())).unwrap();
        for (source, expected) in [
            ("wav:missing.wav", "no such file"),
            ("wav:../../../../../../etc/hostname", "outside"),
            ("wav:/etc/hostname", "outside"),
            ("wav:junk.wav", "no RIFF header"),
        ] {
            let err = ok(source).unwrap_err();
            assert!(err.to_string().contains(expected), "{source}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn first_packet_resolves_when_the_first_packet_is_sent() {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let registry =
            crate::service::Registry::builtin(&crate::service::Config::default(), None).unwrap();
        let before = std::time::Instant::now();
        let mut instance = registry
            .start(spec(
                "first",
                &client.local_addr().unwrap().to_string(),
                &[],
            ))
            .unwrap();
        let first = instance.first_packet().expect("rtp-audio tells");
        assert!(instance.first_packet().is_none(), "taken once");
        let sent = tokio::time::timeout(Duration::from_secs(2), first)
            .await
            .expect("within 2 s")
            .expect("sent, not dropped");
        let mut buf = [0u8; 2048];
        let n = client.recv(&mut buf).await.unwrap();
        assert_eq!(n, PACKET_LEN);
        assert!(sent >= before);
        assert!(instance.status().packets_sent >= 1);
        instance.stop().await;
    }

    /// Paused for want of consent, a stream sends one packet a second, so
    /// that a client that reports only to the sources it hears can consent
    /// again; standing by warm, it sends nothing; resumed, all of it.
    #[tokio::test]
    async fn a_paused_stream_probes_once_a_second_and_a_standby_is_silent() {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let registry =
            crate::service::Registry::builtin(&crate::service::Config::default(), None).unwrap();
        let instance = registry
            .start(spec(
                "probe",
                &client.local_addr().unwrap().to_string(),
                &[],
            ))
            .unwrap();
        let mut buf = [0u8; 2048];
        // Counts what reaches the client over `d`.
        async fn count(client: &tokio::net::UdpSocket, buf: &mut [u8], d: Duration) -> usize {
            let end = tokio::time::Instant::now() + d;
            let mut n = 0;
            while let Ok(Ok(_)) = tokio::time::timeout_at(end, client.recv(buf)).await {
                n += 1;
            }
            n
        }
        assert!(count(&client, &mut buf, Duration::from_millis(500)).await >= 20);
        instance.stand_by(true);
        count(&client, &mut buf, Duration::from_millis(100)).await; // in flight
        assert_eq!(
            count(&client, &mut buf, Duration::from_millis(2500)).await,
            0
        );
        instance.stand_by(false);
        instance.pause(true);
        count(&client, &mut buf, Duration::from_millis(100)).await; // in flight
        let probes = count(&client, &mut buf, Duration::from_millis(3500)).await;
        assert!(
            (3..=4).contains(&probes),
            "{probes} packets in 3.5 s paused"
        );
        instance.pause(false);
        assert!(count(&client, &mut buf, Duration::from_millis(500)).await >= 20);
        instance.stop().await;
    }

    /// Streams aimed at one address, all paused (a caller without consent
    /// aiming sessions at a victim), share the node's probe budget for
    /// that address: at most `PROBES_PER_ADDRESS` a second in all, not
    /// one a second each.
    #[tokio::test]
    async fn paused_streams_to_one_address_share_its_probe_budget() {
        use crate::service::PROBES_PER_ADDRESS;
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let registry =
            crate::service::Registry::builtin(&crate::service::Config::default(), None).unwrap();
        let to = client.local_addr().unwrap().to_string();
        let instances: Vec<_> = (0..10)
            .map(|k| {
                registry
                    .start(spec(&format!("victim{k}"), &to, &[]))
                    .unwrap()
            })
            .collect();
        for i in &instances {
            i.pause(true);
        }
        let mut buf = [0u8; 2048];
        // What was sent before the pause took effect.
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(100), client.recv(&mut buf)).await
        {}
        let end = tokio::time::Instant::now() + Duration::from_millis(3500);
        let mut probes = 0;
        while let Ok(Ok(_)) = tokio::time::timeout_at(end, client.recv(&mut buf)).await {
            probes += 1;
        }
        // Four windows of a second begin in 3.5 s; ten streams alone would
        // have sent 30-40.
        let most = 4 * PROBES_PER_ADDRESS as usize;
        assert!((1..=most).contains(&probes), "{probes} probes in 3.5 s");
        for i in instances {
            i.stop().await;
        }
    }

    #[tokio::test]
    async fn receiver_reports_from_the_client_reach_the_node() {
        use crate::service::rtcp::{ReportBlock, tests::report};
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = spec("rtcp", &client.local_addr().unwrap().to_string(), &[]);
        let ssrc = stream::Ids::derive(&s.id).ssrc;
        let (tx, mut reports) = tokio::sync::mpsc::channel(8);
        let registry = crate::service::Registry::builtin(&crate::service::Config::default(), None)
            .unwrap()
            .with_reports(tx);
        let instance = registry.start(s).unwrap();
        async fn within<T>(f: impl Future<Output = T>) -> T {
            tokio::time::timeout(Duration::from_secs(2), f)
                .await
                .expect("within 2 s")
        }
        let mut buf = [0u8; 2048];
        let (_, sender) = within(client.recv_from(&mut buf)).await.unwrap();
        assert_eq!(sender.port() % 2, 0, "RTP from an even port");
        let rtcp_port: SocketAddr = (Ipv4Addr::LOCALHOST, sender.port() + 1).into();
        let block = |ssrc, fraction_lost, jitter| ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: 0,
            highest_seq: 100,
            jitter,
            lsr: 0,
            dlsr: 0,
        };
        // Ignored: garbage, another stream, another host (where 127.0.0.2
        // is loopback too).
        let noise = [
            b"garbage".to_vec(),
            report(false, 9, &[block(ssrc ^ 1, 255, 8)]),
        ];
        for n in &noise {
            client.send_to(n, rtcp_port).await.unwrap();
        }
        if let Ok(other) = tokio::net::UdpSocket::bind("127.0.0.2:0").await {
            let rr = report(false, 9, &[block(ssrc, 255, 8)]);
            other.send_to(&rr, rtcp_port).await.unwrap();
        }
        // A compound SR + RR: the RR's block on our stream counts.
        let mut compound = report(true, 9, &[]);
        compound.extend(report(false, 9, &[block(ssrc, 64, 160)]));
        client.send_to(&compound, rtcp_port).await.unwrap();
        let (id, body) = within(reports.recv()).await.unwrap();
        assert_eq!(id, "rtcp");
        assert_eq!(
            body,
            crate::views::Report {
                loss: 0.25,
                jitter_ms: 20.0,
                rtt_ms: 0.0,
                packets: 0
            }
        );
        drop(instance);
        assert!(reports.try_recv().is_err(), "only the one report");
    }

    #[tokio::test]
    async fn sender_reports_let_the_client_report_a_round_trip_time() {
        use crate::service::rtcp::{ReportBlock, tests::report};
        // A client with an RTP port and its RTCP port above it.
        let (rtp, rtcp) = loop {
            let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = rtp.local_addr().unwrap().port();
            if port % 2 == 0
                && let Ok(rtcp) = tokio::net::UdpSocket::bind(("127.0.0.1", port + 1)).await
            {
                break (rtp, rtcp);
            }
        };
        let s = spec("sr", &rtp.local_addr().unwrap().to_string(), &[]);
        let ssrc = stream::Ids::derive(&s.id).ssrc;
        let (tx, mut reports) = tokio::sync::mpsc::channel(8);
        let instance = RtpAudio::new(None)
            .start_with(
                s,
                Channels {
                    reports: Some(tx),
                    ..Channels::default()
                },
            )
            .unwrap();
        let mut buf = [0u8; 2048];
        let timeout = |f| tokio::time::timeout(Duration::from_secs(2), f);
        let (n, from) = timeout(rtcp.recv_from(&mut buf)).await.unwrap().unwrap();
        let sr = &buf[..n];
        assert_eq!((sr[0], sr[1]), (0x80, 200), "{sr:?}");
        assert_eq!(sr[4..8], ssrc.to_be_bytes());
        assert_eq!(sr.get(29), Some(&202), "SDES follows");
        // Echo it after 100 ms of "processing", as a receiver would.
        let lsr = u32::from_be_bytes([sr[10], sr[11], sr[12], sr[13]]);
        let rr = report(
            false,
            9,
            &[ReportBlock {
                ssrc,
                fraction_lost: 0,
                cumulative_lost: 0,
                highest_seq: 1,
                jitter: 0,
                lsr,
                dlsr: 65536 / 20, // says it held it 50 ms of the 100
            }],
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        rtcp.send_to(&rr, from).await.unwrap();
        let (_, body) = tokio::time::timeout(Duration::from_secs(2), reports.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(body.rtt_ms > 45.0 && body.rtt_ms < 500.0, "{body:?}");
        drop(instance);
    }
}
