//! A small RTP receiver for tests and measurements: a thread records every
//! datagram that reaches a UDP socket, and [`GapReport`] says what a
//! listener got: loss, duplicates, reordering, the longest silence, the
//! streams (SSRCs) and senders seen.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Most arrivals kept; later ones are counted in [`GapReport::unrecorded`]
/// only. 200 000 is 66 minutes of a 50 packet/s stream.
pub const CAPACITY: usize = 200_000;

/// How often the receiving thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(20);

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
        // RFC 5761 §4: a second byte of 192-223 is RTCP, not media.
        if datagram.len() < 12 || datagram[0] >> 6 != 2 || (192..=223).contains(&datagram[1]) {
            return None;
        }
        let csrcs = usize::from(datagram[0] & 0x0F);
        let mut start = 12 + 4 * csrcs;
        if datagram[0] & 0x10 != 0 {
            let words = datagram.get(start + 2..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = datagram.len();
        if datagram[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*datagram.last()?))?;
        }
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
            payload: datagram.get(start..end)?.to_vec(),
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
}

impl RtpReceiver {
    /// Binds a UDP socket (`127.0.0.1:0` for any free port) and starts
    /// recording.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_read_timeout(Some(POLL))?;
        let addr = socket.local_addr()?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("rtp-receiver {addr}"))
            .spawn({
                let recorded = recorded.clone();
                let stop = stop.clone();
                move || receive(&socket, &recorded, &stop)
            })?;
        Ok(RtpReceiver {
            addr,
            recorded,
            stop,
            thread: Some(thread),
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
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn receive(socket: &UdpSocket, recorded: &Mutex<Recorded>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
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
}
