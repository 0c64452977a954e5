//! A small RTP receiver for tests and measurements: a thread records every
//! datagram that reaches a UDP socket, and [`GapReport`] says what a
//! listener got: loss, duplicates, reordering, the longest silence, the
//! streams (SSRCs) and senders seen.
//!
//! Like a real client (RFC 3550 §6), it sends RTCP receiver reports
//! (compound packets: RR, then SDES with its CNAME; built by
//! `baton_node::service::rtcp`) to each source it hears, every [`RR_INTERVAL`], from its RTCP port (its RTP
//! port + 1) to the source's RTCP port (the source's port + 1): fraction
//! and cumulative loss, extended highest sequence number, interarrival
//! jitter (§A.8), and LSR/DLSR from the sender reports that reach its RTCP
//! port. To a Baton node those reports are the client's consent to the
//! stream and its view of the service. [`RtpReceiver::bind_silent`] makes
//! one that never reports: a victim of reflection, not a client.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_node::service::rtcp;
use serde::Serialize;

/// Most arrivals kept; later ones are counted in [`GapReport::unrecorded`]
/// only. 200 000 is 66 minutes of a 50 packet/s stream.
pub const CAPACITY: usize = 200_000;

/// How often the receiving thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(20);

/// How often a receiver reports to each source it hears. RFC 3550 §6.2
/// would space reports of a 64 kb/s session out to seconds with a random
/// factor; a fixed second is simpler, and what lets a node see poor service
/// within a few seconds.
pub const RR_INTERVAL: Duration = Duration::from_secs(1);

/// RTP clock rate of the streams measured (PCMU).
const CLOCK_HZ: u64 = 8000;

/// One RTP packet as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrived (monotonic).
    pub at: Instant,
    /// When it arrived (Unix µs), to line up with events of other processes.
    pub unix_us: u64,
    /// Who sent it.
    pub from: SocketAddr,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Datagram length.
    pub len: usize,
    /// 64-bit FNV-1a of the whole datagram: duplicates with different
    /// hashes come from senders that disagree.
    pub hash: u64,
    /// The payload (after CSRCs and header extension, without padding).
    pub payload: Vec<u8>,
}

impl Arrival {
    /// Parses a datagram; `None` unless it is RTP version 2 with consistent
    /// lengths.
    pub fn parse(datagram: &[u8], from: SocketAddr, at: Instant, unix_us: u64) -> Option<Self> {
        let payload = baton_node::service::rtp::payload(datagram)?;
        let be32 = |i: usize| {
            u32::from_be_bytes([
                datagram[i],
                datagram[i + 1],
                datagram[i + 2],
                datagram[i + 3],
            ])
        };
        Some(Arrival {
            at,
            unix_us,
            from,
            seq: u16::from_be_bytes([datagram[2], datagram[3]]),
            ts: be32(4),
            ssrc: be32(8),
            marker: datagram[1] & 0x80 != 0,
            payload_type: datagram[1] & 0x7F,
            len: datagram.len(),
            hash: baton_protocol::stream::fnv1a64(datagram),
            payload: payload.to_vec(),
        })
    }
}

/// What a listener got.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GapReport {
    /// RTP packets received.
    pub packets: u64,
    /// Distinct sequence numbers among them.
    pub unique: u64,
    /// Packets whose sequence number had been received already.
    pub duplicates: u64,
    /// Duplicates whose bytes differ from the first copy: the senders of a
    /// make-before-break transfer disagree. Must be 0.
    pub mismatched_duplicates: u64,
    /// Sequence numbers between the first and the last received that never
    /// arrived.
    pub lost: u64,
    /// Longest run of consecutive sequence numbers that never arrived.
    pub longest_missing_run: u64,
    /// Packets older than one received before them (duplicates excluded).
    pub out_of_order: u64,
    /// Longest time between two consecutive arrivals: the silence a
    /// listener heard.
    pub longest_gap_ms: f64,
    /// When that silence began: arrival of the packet before it (Unix µs).
    pub longest_gap_start_unix_us: Option<u64>,
    /// First and last extended sequence numbers (RFC 3550 A.1: the 16-bit
    /// number plus 65536 per wrap; may start below 65536 by reordering).
    pub first_seq: Option<i64>,
    /// See `first_seq`.
    pub last_seq: Option<i64>,
    /// SSRCs seen, in order of first appearance: one for one stream.
    pub ssrcs: Vec<u32>,
    /// Sender addresses seen, in order of first appearance.
    pub sources: Vec<SocketAddr>,
    /// Datagrams that were not RTP (receiver only).
    pub malformed: u64,
    /// Packets received beyond [`CAPACITY`], not in this report (receiver only).
    pub unrecorded: u64,
}

impl GapReport {
    /// Reports on arrivals in the order they came. Sequence numbers are
    /// extended as RFC 3550 A.1 does: each is placed at the distance from
    /// the highest so far that is shortest modulo 2^16, so wraps count and
    /// late packets fall behind; streams are taken as one, check `ssrcs`.
    pub fn from_arrivals<'a>(arrivals: impl IntoIterator<Item = &'a Arrival>) -> Self {
        let mut report = GapReport::default();
        let mut seen: HashMap<i64, u64> = HashMap::new();
        let mut highest: Option<i64> = None;
        let mut lowest: Option<i64> = None;
        let mut previous: Option<&Arrival> = None;
        for a in arrivals {
            report.packets += 1;
            let ext = match highest {
                None => i64::from(a.seq) + (1 << 16),
                Some(h) => h + i64::from(a.seq.wrapping_sub(h as u16) as i16),
            };
            match seen.entry(ext) {
                Entry::Occupied(first) => {
                    report.duplicates += 1;
                    if *first.get() != a.hash {
                        report.mismatched_duplicates += 1;
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(a.hash);
                    if highest.is_some_and(|h| ext < h) {
                        report.out_of_order += 1;
                    }
                }
            }
            highest = Some(highest.map_or(ext, |h| h.max(ext)));
            lowest = Some(lowest.map_or(ext, |l| l.min(ext)));
            if let Some(p) = previous {
                let gap = a.at.saturating_duration_since(p.at).as_secs_f64() * 1000.0;
                if gap > report.longest_gap_ms {
                    report.longest_gap_ms = gap;
                    report.longest_gap_start_unix_us = Some(p.unix_us);
                }
            }
            previous = Some(a);
            if !report.ssrcs.contains(&a.ssrc) {
                report.ssrcs.push(a.ssrc);
            }
            if !report.sources.contains(&a.from) {
                report.sources.push(a.from);
            }
        }
        report.unique = seen.len() as u64;
        if let (Some(l), Some(h)) = (lowest, highest) {
            report.first_seq = Some(l - (1 << 16));
            report.last_seq = Some(h - (1 << 16));
            report.lost = (h - l + 1) as u64 - report.unique;
            let mut received: Vec<i64> = seen.into_keys().collect();
            received.sort_unstable();
            report.longest_missing_run = received
                .windows(2)
                .map(|w| (w[1] - w[0] - 1) as u64)
                .max()
                .unwrap_or(0);
        }
        report
    }
}

#[derive(Debug, Default)]
struct Recorded {
    arrivals: Vec<Arrival>,
    malformed: u64,
    unrecorded: u64,
}

/// Records every RTP packet that reaches its socket, on a thread of its
/// own (so it works with or without an async runtime). Dropping it stops
/// the thread.
#[derive(Debug)]
pub struct RtpReceiver {
    addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    rtcp_thread: Option<JoinHandle<()>>,
}

impl RtpReceiver {
    /// Binds a UDP socket (`127.0.0.1:0` for a free even port, with the
    /// next one for RTCP) and starts recording and reporting.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::start(addr, true)
    }

    /// Like [`bind`](Self::bind), but sends no RTCP: an address that
    /// receives a stream it never asked for.
    pub fn bind_silent(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::start(addr, false)
    }

    fn start(addr: impl ToSocketAddrs, report: bool) -> io::Result<Self> {
        let want: SocketAddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let (socket, rtcp) = if report {
            let (s, r) = bind_pair(want)?;
            (s, Some(r))
        } else {
            (UdpSocket::bind(want)?, None)
        };
        socket.set_read_timeout(Some(POLL))?;
        let addr = socket.local_addr()?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let last_srs: Arc<Mutex<HashMap<u32, (u32, Instant)>>> = Arc::default();
        let rtcp_thread = match &rtcp {
            Some(r) => {
                let r = r.try_clone()?;
                r.set_read_timeout(Some(POLL))?;
                let stop = stop.clone();
                let last_srs = last_srs.clone();
                Some(
                    std::thread::Builder::new()
                        .name(format!("rtcp-receiver {addr}"))
                        .spawn(move || receive_sender_reports(&r, &last_srs, &stop))?,
                )
            }
            None => None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("rtp-receiver {addr}"))
            .spawn({
                let recorded = recorded.clone();
                let stop = stop.clone();
                move || {
                    let mut reports = rtcp.map(|socket| Reports {
                        socket,
                        own_ssrc: 0x4241_544e ^ u32::from(addr.port()),
                        cname: format!("rtp-receiver@{addr}"),
                        sources: HashMap::new(),
                        last_srs,
                    });
                    receive(&socket, &recorded, &stop, reports.as_mut())
                }
            })?;
        Ok(RtpReceiver {
            addr,
            recorded,
            stop,
            thread: Some(thread),
            rtcp_thread,
        })
    }

    /// The address senders should send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// RTP packets recorded so far.
    pub fn len(&self) -> usize {
        self.lock().arrivals.len()
    }

    /// Whether no RTP packet was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the packets recorded so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.lock().arrivals.clone()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        *self.lock() = Recorded::default();
    }

    /// Reports on the packets that arrived within `window` (`..` for all,
    /// `t0..` for those since `t0`).
    pub fn report(&self, window: impl RangeBounds<Instant>) -> GapReport {
        let recorded = self.lock();
        let mut report =
            GapReport::from_arrivals(recorded.arrivals.iter().filter(|a| window.contains(&a.at)));
        report.malformed = recorded.malformed;
        report.unrecorded = recorded.unrecorded;
        report
    }

    /// Blocks the calling thread until `n` packets are recorded or
    /// `timeout` passes; true if they were. From async code, poll
    /// [`len`](Self::len) with the runtime's sleep instead.
    pub fn wait_for_packets(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for RtpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in [self.thread.take(), self.rtcp_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

/// Binds an even port and the odd one after it (RFC 3550 §11), on `want`'s
/// IP; `want`'s port if it is not 0.
fn bind_pair(want: SocketAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    if want.port() != 0 {
        let rtcp = SocketAddr::new(want.ip(), want.port().wrapping_add(1));
        return Ok((UdpSocket::bind(want)?, UdpSocket::bind(rtcp)?));
    }
    for _ in 0..100 {
        let rtp = UdpSocket::bind(SocketAddr::new(want.ip(), 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(want.ip(), port + 1)) {
            return Ok((rtp, rtcp));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free even/odd port pair for RTP and RTCP",
    ))
}

/// What a receiver knows of one source (RFC 3550 §A.1, §A.3, §A.8).
#[derive(Debug)]
struct Source {
    /// Where its RTCP goes: its address, port + 1.
    rtcp: SocketAddr,
    base_seq: u32,
    /// Extended highest sequence number.
    max_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter, in timestamp units.
    jitter: f64,
    transit: Option<i64>,
    next_report: Instant,
    /// When its last packet came: a source silent for five intervals is
    /// dropped (RFC 3550 §6.3.5), so reports do not outlive a stream.
    last_packet: Instant,
}

/// The reporting side of a receiver.
struct Reports {
    socket: UdpSocket,
    own_ssrc: u32,
    /// SDES CNAME of its reports (RFC 3550 §6.5.1: user@host).
    cname: String,
    sources: HashMap<u32, Source>,
    /// Per source SSRC: LSR (middle 32 bits of its last SR's NTP time) and
    /// when that SR arrived.
    last_srs: Arc<Mutex<HashMap<u32, (u32, Instant)>>>,
}

impl Reports {
    fn arrived(&mut self, a: &Arrival) {
        let now = Instant::now();
        let arrival_ts = (a.unix_us * CLOCK_HZ / 1_000_000) as i64;
        let s = self.sources.entry(a.ssrc).or_insert_with(|| Source {
            rtcp: SocketAddr::new(a.from.ip(), a.from.port().wrapping_add(1)),
            base_seq: u32::from(a.seq),
            max_seq: u32::from(a.seq),
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            transit: None,
            next_report: now + RR_INTERVAL,
            last_packet: now,
        });
        s.last_packet = now;
        // The source's address may change (a takeover): reports follow it.
        s.rtcp = SocketAddr::new(a.from.ip(), a.from.port().wrapping_add(1));
        s.received += 1;
        let cycles = s.max_seq & 0xffff_0000;
        let low = s.max_seq as u16;
        let delta = a.seq.wrapping_sub(low);
        if delta < 0x8000 {
            let wrapped = if a.seq < low {
                cycles + 0x1_0000
            } else {
                cycles
            };
            s.max_seq = wrapped | u32::from(a.seq);
        }
        let transit = arrival_ts - i64::from(a.ts);
        if let Some(prev) = s.transit {
            let d = (transit - prev).abs() as f64;
            s.jitter += (d - s.jitter) / 16.0;
        }
        s.transit = Some(transit);
    }

    /// Sends the reports that are due.
    fn send_due(&mut self) {
        let now = Instant::now();
        self.sources
            .retain(|_, s| now.duration_since(s.last_packet) < RR_INTERVAL * 5);
        let srs = self
            .last_srs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (ssrc, s) in &mut self.sources {
            if now < s.next_report {
                continue;
            }
            s.next_report = now + RR_INTERVAL;
            let expected = u64::from(s.max_seq.wrapping_sub(s.base_seq)) + 1;
            let lost = expected as i64 - s.received as i64;
            let expected_interval = expected.saturating_sub(s.expected_prior);
            let received_interval = s.received.saturating_sub(s.received_prior);
            s.expected_prior = expected;
            s.received_prior = s.received;
            let lost_interval = expected_interval as i64 - received_interval as i64;
            let fraction = if expected_interval == 0 || lost_interval <= 0 {
                0
            } else {
                ((lost_interval << 8) / expected_interval as i64).min(255) as u8
            };
            let (lsr, dlsr) = match srs.get(ssrc) {
                Some((lsr, at)) => (
                    *lsr,
                    (now.duration_since(*at).as_secs_f64() * 65536.0) as u32,
                ),
                None => (0, 0),
            };
            let block = rtcp::ReportBlock {
                ssrc: *ssrc,
                fraction_lost: fraction,
                cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
                highest_seq: s.max_seq,
                jitter: s.jitter as u32,
                lsr,
                dlsr,
            };
            let rr = rtcp::receiver_report(self.own_ssrc, &[block], &self.cname);
            let _ = self.socket.send_to(&rr, s.rtcp);
        }
    }
}

/// Notes the sender reports (PT 200) that reach the RTCP port: LSR/DLSR.
fn receive_sender_reports(
    socket: &UdpSocket,
    last: &Mutex<HashMap<u32, (u32, Instant)>>,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some((ssrc, lsr)) = rtcp::sender_report_lsr(&buf[..n]) {
            last.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(ssrc, (lsr, Instant::now()));
        }
    }
}

fn receive(
    socket: &UdpSocket,
    recorded: &Mutex<Recorded>,
    stop: &AtomicBool,
    mut reports: Option<&mut Reports>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if let Some(r) = reports.as_deref_mut() {
            r.send_due();
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // Nothing else is expected of an unconnected UDP socket; do not spin on it.
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let arrival = Arrival::parse(&buf[..n], from, Instant::now(), unix_us);
        if let (Some(r), Some(a)) = (reports.as_deref_mut(), &arrival) {
            r.arrived(a);
        }
        let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
        match arrival {
            None => recorded.malformed += 1,
            Some(_) if recorded.arrivals.len() >= CAPACITY => recorded.unrecorded += 1,
            Some(a) => recorded.arrivals.push(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, fill, fill];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    /// Arrivals of `seqs`, 20 ms apart from one sender.
    fn arrivals(seqs: &[u16]) -> Vec<Arrival> {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        seqs.iter()
            .enumerate()
            .map(|(i, &seq)| {
                let at = t0 + Duration::from_millis(20 * i as u64);
                Arrival::parse(&packet(seq, 7, 1), from, at, 20_000 * i as u64).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_clean_stream_reports_nothing_missing() {
        let report = GapReport::from_arrivals(&arrivals(&[10, 11, 12, 13]));
        assert_eq!((report.packets, report.unique, report.lost), (4, 4, 0));
        assert_eq!((report.duplicates, report.out_of_order), (0, 0));
        assert_eq!((report.first_seq, report.last_seq), (Some(10), Some(13)));
        assert!((report.longest_gap_ms - 20.0).abs() < 1e-6);
        assert_eq!(report.ssrcs, [7]);
    }

    #[test]
    fn sequence_numbers_are_extended_across_the_wrap() {
        let report = GapReport::from_arrivals(&arrivals(&[65_534, 65_535, 0, 2, 1]));
        assert_eq!((report.lost, report.out_of_order), (0, 1));
        assert_eq!(
            (report.first_seq, report.last_seq),
            (Some(65_534), Some(65_538))
        );
        let report = GapReport::from_arrivals(&arrivals(&[65_530, 3]));
        assert_eq!((report.lost, report.longest_missing_run), (8, 8));
    }

    #[test]
    fn duplicates_count_once_and_differing_copies_are_flagged() {
        let mut a = arrivals(&[1, 2, 3, 2, 3, 4]);
        let from = a[0].from;
        a[4] = Arrival::parse(&packet(3, 7, 9), from, a[4].at, 0).unwrap();
        let report = GapReport::from_arrivals(&a);
        assert_eq!((report.unique, report.duplicates, report.lost), (4, 2, 0));
        assert_eq!(report.mismatched_duplicates, 1);
        assert_eq!(report.out_of_order, 0);
    }

    #[test]
    fn a_gap_is_measured_in_packets_and_in_time() {
        let mut a = arrivals(&[1, 2, 3, 9, 10]);
        a[3].at += Duration::from_millis(200);
        a[4].at += Duration::from_millis(200);
        let report = GapReport::from_arrivals(&a);
        assert_eq!((report.lost, report.longest_missing_run), (5, 5));
        assert!((report.longest_gap_ms - 220.0).abs() < 1e-6);
        assert_eq!(report.longest_gap_start_unix_us, Some(40_000));
    }

    #[test]
    fn headers_with_csrcs_extension_and_padding_parse() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut p = vec![0xB1, 0x80, 0, 5, 0, 0, 0, 1, 0, 0, 0, 2]; // P, X, CC=1, M
        p.extend_from_slice(&[0, 0, 0, 3]); // CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension, one word
        p.extend_from_slice(&[0xAA, 0xBB, 0, 2]); // payload, then 2 bytes of padding
        let a = Arrival::parse(&p, from, Instant::now(), 0).unwrap();
        assert_eq!((a.seq, a.ts, a.ssrc, a.marker), (5, 1, 2, true));
        assert_eq!(a.payload, [0xAA, 0xBB]);
        for bad in [
            &p[..11],
            &[0x40; 12][..],
            &[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert_eq!(Arrival::parse(bad, from, Instant::now(), 0), None);
        }
        let mut overpadded = packet(1, 1, 1);
        overpadded[0] |= 0x20;
        *overpadded.last_mut().unwrap() = 200;
        assert_eq!(Arrival::parse(&overpadded, from, Instant::now(), 0), None);
    }

    #[test]
    fn the_receiver_records_what_reaches_its_socket() {
        let rx = RtpReceiver::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        for seq in [100u16, 101, 103] {
            tx.send_to(&packet(seq, 42, 0), rx.local_addr()).unwrap();
        }
        tx.send_to(b"not rtp", rx.local_addr()).unwrap();
        assert!(rx.wait_for_packets(3, Duration::from_secs(2)));
        // The malformed datagram came last: wait for it too.
        let deadline = Instant::now() + Duration::from_secs(2);
        while rx.report(..).malformed == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let report = rx.report(t0..);
        assert_eq!((report.packets, report.lost, report.malformed), (3, 1, 1));
        assert_eq!(report.sources, [tx.local_addr().unwrap()]);
        assert_eq!(rx.report(Instant::now()..).packets, 0);
        rx.clear();
        assert!(rx.is_empty());
    }

    /// An RTP packet of the stream `ssrc`, sequence `seq`.
    fn rtp(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn a_receiver_reports_loss_and_echoes_sender_reports_like_a_client() {
        let rx = RtpReceiver::bind("127.0.0.1:0").unwrap();
        assert_eq!(rx.local_addr().port() % 2, 0, "RTP on an even port");
        let (sender, sender_rtcp) = bind_pair("127.0.0.1:0".parse().unwrap()).unwrap();
        sender_rtcp.set_read_timeout(Some(RR_INTERVAL * 3)).unwrap();
        let to = rx.local_addr();
        // A sender report to the receiver's RTCP port: echoed as LSR.
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&7u32.to_be_bytes());
        sr.extend_from_slice(&[0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0]);
        sr.extend_from_slice(&[0; 12]);
        sender_rtcp
            .send_to(&sr, SocketAddr::new(to.ip(), to.port() + 1))
            .unwrap();
        // 20 packets with sequence numbers 100..120, 5 of them lost.
        for seq in 100u16..120 {
            if (105..110).contains(&seq) {
                continue;
            }
            sender
                .send_to(&rtp(7, seq, u32::from(seq) * 160), to)
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut buf = [0u8; 256];
        let (n, from) = sender_rtcp.recv_from(&mut buf).expect("a receiver report");
        assert_eq!(from.port(), to.port() + 1, "from the receiver's RTCP port");
        let rr = &buf[..n];
        assert_eq!((rr[0], rr[1]), (0x81, 201));
        assert_eq!(rr[32..34], [0x81, 202], "a compound packet: RR, then SDES");
        let word = |at: usize| u32::from_be_bytes([rr[at], rr[at + 1], rr[at + 2], rr[at + 3]]);
        assert_eq!(word(8), 7, "on the stream");
        assert_eq!(word(12) & 0xff_ffff, 5, "cumulative loss");
        assert_eq!(u32::from(rr[12]), 5 * 256 / 20, "fraction lost");
        assert_eq!(word(16), 119, "extended highest sequence number");
        assert_eq!(word(24), 0x3456_7800 >> 8 | 0x1200_0000, "LSR from the SR");
        drop(rx);
        // Silent receivers never report.
        let silent = RtpReceiver::bind_silent("127.0.0.1:0").unwrap();
        sender
            .send_to(&rtp(8, 1, 160), silent.local_addr())
            .unwrap();
        sender_rtcp
            .set_read_timeout(Some(RR_INTERVAL + RR_INTERVAL / 2))
            .unwrap();
        // Drain reports of the first receiver; none from the silent one.
        while let Ok((_, from)) = sender_rtcp.recv_from(&mut buf) {
            assert_ne!(from.port(), silent.local_addr().port() + 1);
        }
    }
}
