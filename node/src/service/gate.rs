//! The RTP gate of an `exec` session (RFC 3550 §7, a translator): the
//! command sends RTP to a loopback socket of the node (`{gate}`), and the
//! node forwards it to the client as the session's one continuous stream,
//! the one `rtp-audio` sends ([`super::rtp`]): SSRC, sequence number and
//! timestamp are rewritten onto the derivation from the session id and
//! start time, so a takeover by another cluster continues the numbering,
//! and two clusters forwarding at the same moment agree on every header.
//!
//! Which packet index `k` a packet gets: the 20 ms slot nearest to its
//! arrival (counted from the session's `started_ms`), unless this gate
//! already sent that slot or a later one, then the slot after the last one
//! it sent: indices never go backwards nor repeat, and follow wall time
//! rather than the count of packets the command emitted. A packet is sent
//! when its slot is the nearest one (up to 10 ms early); one given a later
//! slot (a command that sends in bursts, as `ffmpeg -re` does) is held
//! until then, at most [`MAX_HELD`] of them (beyond, the newest are
//! dropped). A command that sends slower than 50 packets a second leaves
//! gaps in the sequence, as loss would. The header sent: V=2, no padding,
//! extension or CSRC, M=1 for `k = 0` only, the command's payload type,
//! sequence `seq0 + k`, timestamp `ts0 + 160 k` (an 8 kHz clock: commands
//! should send 20 ms of 8 kHz audio per packet, such as PCMU), the
//! session's SSRC; the payload is the command's, padding removed.
//!
//! Who may send: only the command. The gate is bound on 127.0.0.1, takes
//! only loopback sources, and latches the source port of the first packet
//! after each (re)start of the command; packets from any other source, and
//! datagrams that are not RTP version 2 with consistent lengths, are
//! dropped and counted (`packets_dropped`); only a valid RTP packet (not
//! RTCP) takes the latch. A local process that sends RTP before the command
//! does could take it: the gate's port is ephemeral, but local users can
//! read it (`/proc/net/udp`, the command line), so run nodes where local
//! users are trusted. Templates should keep the command's own RTCP away
//! (`-rtpflags skip_rtcp` for ffmpeg): the gate sends the session's.
//!
//! The gate forwards while the instance is neither paused for want of
//! consent (then one packet a second goes out, a probe the client can
//! answer) nor standing by warm (the command runs, the gate is closed;
//! promotion opens it). A closed gate still gives each packet its slot and holds it, and
//! drops it when the slot comes instead of sending it: commands send in
//! bursts (ffmpeg reading a WAV file sends 256 ms of packets at once), so
//! a gate that dropped what came while closed would, once opened, wait
//! for the command's next burst (128 ms on average) where a held burst
//! has the packet of the very next slot ready. RTCP is `rtp-audio`'s: the stream goes out from an even port with
//! an RTCP socket above it, receiver reports from the client reach the node,
//! sender reports go out.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use baton_protocol::stream::{self, PACKET_US};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::rtp::{Clock, HEADER_LEN, SR_INTERVAL, Sender, recv_rtcp};
use super::{Error, Outlet, ProbeBudget, Reports, SessionSpec, SharedStatus, lock};

/// Most packets held for a later slot (500 ms).
pub const MAX_HELD: usize = 25;
/// Largest datagram taken from the command; longer ones are dropped.
pub const MAX_DATAGRAM: usize = 1500;

/// Why the gate did not take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not from the command.
    Foreign,
    /// Not RTP version 2 with consistent lengths, or empty.
    Malformed,
    /// Too many packets held already.
    Overflow,
}

/// The payload type and payload of a datagram the gate takes: RTP
/// ([`super::rtp::payload`]), of at most [`MAX_DATAGRAM`] octets, with a
/// payload.
pub fn rtp_payload(datagram: &[u8]) -> Option<(u8, &[u8])> {
    if datagram.len() > MAX_DATAGRAM {
        return None;
    }
    let payload = super::rtp::payload(datagram).filter(|p| !p.is_empty())?;
    Some((datagram[1] & 0x7F, payload))
}

/// The gate's decisions, without sockets or clocks: packets in, with the
/// time they arrived, rewritten packets out when their slot comes.
#[derive(Debug, Clone)]
pub struct Translator {
    ids: stream::Ids,
    started_ms: u64,
    /// The slot after the last one given out.
    next: u64,
    /// The command's run whose source is latched, and that source.
    latched: Option<(u32, SocketAddr)>,
    held: VecDeque<(u64, Vec<u8>)>,
}

impl Translator {
    /// A gate onto the stream `ids` of a session started at `started_ms`.
    pub fn new(ids: stream::Ids, started_ms: u64) -> Self {
        Translator {
            ids,
            started_ms,
            next: 0,
            latched: None,
            held: VecDeque::new(),
        }
    }

    /// Takes `datagram` from `from`, arrived at `unix_us` during the
    /// command's run number `run`. Taken packets come out of
    /// [`ready`](Self::ready) when their slot comes (or are dropped then by
    /// [`discard_ready`](Self::discard_ready) while the gate is closed).
    pub fn accept(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        run: u32,
        unix_us: u64,
    ) -> Result<(), Refusal> {
        if !from.ip().to_canonical().is_loopback() {
            return Err(Refusal::Foreign);
        }
        // Only an RTP packet may take the latch: not garbage, nor an RTCP
        // packet (payload types 72-76 read as RTP, RFC 5761), which an
        // RTP sender sends from another socket to the port above.
        let (pt, payload) = rtp_payload(datagram)
            .filter(|(pt, _)| !(72..=76).contains(pt))
            .ok_or(Refusal::Malformed)?;
        match self.latched {
            Some((latched_run, source)) if latched_run == run => {
                if source != from {
                    return Err(Refusal::Foreign);
                }
            }
            _ => self.latched = Some((run, from)),
        }
        if self.held.len() >= MAX_HELD {
            return Err(Refusal::Overflow);
        }
        let k = self.next.max(self.nearest_slot(unix_us));
        self.next = k + 1;
        let mut packet = Vec::with_capacity(HEADER_LEN + payload.len());
        packet.push(0x80);
        packet.push((u8::from(k == 0) << 7) | pt);
        packet.extend_from_slice(&self.ids.seq(k).to_be_bytes());
        packet.extend_from_slice(&self.ids.timestamp(k).to_be_bytes());
        packet.extend_from_slice(&self.ids.ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        self.held.push_back((k, packet));
        Ok(())
    }

    /// The slot nearest to `unix_us` (0 before the start).
    fn nearest_slot(&self, unix_us: u64) -> u64 {
        stream::last_due_at_or_before(self.started_ms, unix_us + PACKET_US / 2).unwrap_or(0)
    }

    /// The packets whose slot is the nearest one to `unix_us`, or past.
    pub fn ready(&mut self, unix_us: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((k, _)) = self.held.front()
            && self.release_us(*k) <= unix_us
        {
            out.extend(self.held.pop_front().map(|(_, p)| p));
        }
        out
    }

    /// When the next held packet may go (Unix µs), if one is held.
    pub fn next_release_us(&self) -> Option<u64> {
        self.held.front().map(|(k, _)| self.release_us(*k))
    }

    fn release_us(&self, k: u64) -> u64 {
        stream::due_us(self.started_ms, k).saturating_sub(PACKET_US / 2)
    }

    /// Drops the packets [`ready`](Self::ready) would send now (the gate
    /// is closed); returns how many. Later ones stay held, so that a gate
    /// opened in the middle of a burst sends the next slot's packet on
    /// time.
    pub fn discard_ready(&mut self, unix_us: u64) -> usize {
        self.ready(unix_us).len()
    }
}

/// A session instance's gate: its loopback socket, and the sockets towards
/// the client, until [`run`](Gate::run) takes them.
#[derive(Debug)]
pub struct Gate {
    socket: UdpSocket,
    addr: SocketAddr,
    sender: Sender,
    ids: stream::Ids,
    started_ms: u64,
    runs: Arc<AtomicU32>,
    outlet: Outlet,
}

impl Gate {
    /// Opens the gate of session `spec` towards `client`, handing its
    /// client's reports to `reports`; its consent probes are taken from
    /// `probes`.
    pub fn open(
        spec: &SessionSpec,
        client: SocketAddr,
        reports: Option<Reports>,
        probes: ProbeBudget,
    ) -> Result<Self, Error> {
        let ids = super::rtp::ids_for_session(spec)?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| Error::io("open the RTP gate on 127.0.0.1", e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| Error::io("read the RTP gate's address", e))?;
        let sender = Sender::open(client, ids, &spec.id, reports, "exec")?;
        Ok(Gate {
            socket,
            addr,
            sender,
            ids,
            started_ms: spec.started_ms,
            runs: Arc::default(),
            outlet: Outlet::new(probes, client.ip()),
        })
    }

    /// Where the command sends its RTP (`{gate}`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counter of the command's runs: the supervisor adds one before
    /// each restart, so that the gate latches the new run's source.
    pub fn runs(&self) -> Arc<AtomicU32> {
        self.runs.clone()
    }

    /// The stream's identifiers.
    pub fn ids(&self) -> stream::Ids {
        self.ids
    }

    /// Forwards until `stop` resolves (or its sender is dropped), telling
    /// `first_sent` when the first packet went out.
    pub async fn run(
        self,
        status: SharedStatus,
        first_sent: oneshot::Sender<std::time::Instant>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let clock = Clock::now();
        let mut first_sent = Some(first_sent);
        let registered = tokio::net::UdpSocket::from_std(self.socket)
            .map_err(|e| format!("cannot register the RTP gate: {e}"))
            .and_then(|gate| self.sender.register().map(|sender| (gate, sender)));
        let (gate, super::rtp::Sender { socket, mut rtcp }) = match registered {
            Ok(sockets) => sockets,
            Err(e) => {
                lock(&status).last_error = Some(e);
                return;
            }
        };
        let mut translator = Translator::new(self.ids, self.started_ms);
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut octets = 0u64;
        let mut next_report = Instant::now() + SR_INTERVAL / 10;
        let mut outlet = self.outlet;
        loop {
            let release = translator.next_release_us().map(|us| clock.instant(us));
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = tokio::time::sleep_until(release.unwrap_or(next_report)), if release.is_some() => {}
                () = tokio::time::sleep_until(next_report), if rtcp.is_some() => {
                    let (quiet, sent) = {
                        let s = lock(&status);
                        (s.paused || s.standby, s.packets_sent)
                    };
                    if let (false, Some(rtcp)) = (quiet, &rtcp) {
                        let ids = (self.ids, self.started_ms);
                        rtcp.send_report(ids, clock.unix_us(), sent, octets).await;
                    }
                    next_report = Instant::now() + SR_INTERVAL;
                }
                got = recv_rtcp(rtcp.as_ref()) => {
                    if let (Ok((datagram, from)), Some(rtcp)) = (got, &mut rtcp) {
                        rtcp.received(&datagram, from, clock.unix_us());
                    }
                }
                // Last: a flood on the gate must not starve the reports.
                got = gate.recv_from(&mut buf) => {
                    // Errors of an unconnected UDP socket are transient.
                    let Ok((n, from)) = got else { continue };
                    let run = self.runs.load(Ordering::Acquire);
                    match translator.accept(&buf[..n], from, run, clock.unix_us()) {
                        Ok(()) => {}
                        Err(why) => {
                            lock(&status).packets_dropped += 1;
                            tracing::trace!(?why, %from, "gate dropped a datagram");
                        }
                    }
                }
            }
            let (paused, standby) = {
                let s = lock(&status);
                (s.paused, s.standby)
            };
            if standby {
                translator.discard_ready(clock.unix_us());
                continue;
            }
            // Paused for want of consent: one packet a second goes out, the
            // others are dropped in their slots.
            let now = std::time::Instant::now();
            for packet in translator
                .ready(clock.unix_us())
                .into_iter()
                .filter(|_| outlet.admits(paused, false, now))
            {
                let result = socket.send(&packet).await;
                let mut s = lock(&status);
                match result {
                    Ok(_) => {
                        s.packets_sent += 1;
                        octets += (packet.len() - HEADER_LEN) as u64;
                        if let Some(first) = first_sent.take() {
                            let _ = first.send(std::time::Instant::now());
                        }
                    }
                    // Kept going: the receiver may not be up yet.
                    Err(e) => s.last_error = Some(format!("send to the client: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    const STARTED_MS: u64 = 1_700_000_000_000;
    const COMMAND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        40_000,
    ));

    /// An RTP packet as a command would send it: its own numbering.
    fn from_command(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x80, 0, 0, 0, 0, 0x12, 0x34, 0xCA, 0xFE, 0xBA, 0xBE];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn due(k: u64) -> u64 {
        stream::due_us(STARTED_MS, k)
    }

    fn header(p: &[u8]) -> (bool, u8, u16, u32, u32) {
        let be32 = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        (
            p[1] & 0x80 != 0,
            p[1] & 0x7F,
            u16::from_be_bytes([p[2], p[3]]),
            be32(4),
            be32(8),
        )
    }

    /// The header packet `k` of the session's stream has.
    fn expected(ids: stream::Ids, k: u64) -> (bool, u8, u16, u32, u32) {
        (k == 0, 0, ids.seq(k), ids.timestamp(k), ids.ssrc)
    }

    #[test]
    fn headers_are_rewritten_onto_the_sessions_stream_by_arrival_time() {
        let ids = stream::Ids::derive("call-7");
        let mut gate = Translator::new(ids, STARTED_MS);
        // The command numbers from 9000 and has its own SSRC: irrelevant.
        gate.accept(&from_command(9000, &[1; 160]), COMMAND, 0, due(50) + 3_000)
            .unwrap();
        let sent = gate.ready(due(50) + 3_000);
        assert_eq!(sent.len(), 1);
        assert_eq!(header(&sent[0]), expected(ids, 50));
        assert_eq!(sent[0][HEADER_LEN..], [1; 160], "the command's payload");
        // 8 ms before slot 51 is nearest to it: sent at once, as 51.
        gate.accept(&from_command(9001, &[2; 160]), COMMAND, 0, due(51) - 8_000)
            .unwrap();
        assert_eq!(header(&gate.ready(due(51) - 8_000)[0]), expected(ids, 51));
        // A burst of three at slot 53 (slot 52 went unsent: a gap): each
        // gets the slot after the last, and waits for it.
        for seq in 9002..9005 {
            gate.accept(&from_command(seq, &[3; 160]), COMMAND, 0, due(53))
                .unwrap();
        }
        let now = gate.ready(due(53));
        assert_eq!(now.len(), 1);
        assert_eq!(header(&now[0]), expected(ids, 53));
        assert_eq!(gate.next_release_us(), Some(due(54) - 10_000));
        assert!(gate.ready(due(54) - 10_001).is_empty(), "held for its slot");
        assert_eq!(header(&gate.ready(due(54) - 10_000)[0]), expected(ids, 54));
        assert_eq!(header(&gate.ready(due(60))[0]), expected(ids, 55));
        assert_eq!(gate.next_release_us(), None);
        // A late packet never goes back nor repeats: after 55 comes 56.
        gate.accept(&from_command(1, &[4; 160]), COMMAND, 0, due(40))
            .unwrap();
        assert_eq!(header(&gate.ready(due(60))[0]), expected(ids, 56));
    }

    #[test]
    fn the_first_packet_of_the_stream_has_the_marker_and_the_payload_type_stays() {
        let ids = stream::Ids::derive("s");
        let mut gate = Translator::new(ids, STARTED_MS);
        let mut p = from_command(7, &[9; 160]);
        p[1] = 8; // PCMA, no marker
        gate.accept(&p, COMMAND, 0, due(0)).unwrap();
        gate.accept(&p, COMMAND, 0, due(0)).unwrap();
        let sent = gate.ready(due(1));
        assert_eq!(header(&sent[0]), (true, 8, ids.seq(0), ids.ts0, ids.ssrc));
        assert_eq!(
            header(&sent[1]),
            (false, 8, ids.seq(1), ids.timestamp(1), ids.ssrc)
        );
    }

    #[test]
    fn two_clusters_forwarding_at_the_same_moment_send_the_same_headers() {
        let ids = stream::Ids::derive("call-7");
        // Two clusters' gates: their commands number differently, start
        // at different times; the second took over later.
        let (mut a, mut b) = (
            Translator::new(ids, STARTED_MS),
            Translator::new(ids, STARTED_MS),
        );
        a.accept(&from_command(1, &[1; 160]), COMMAND, 0, due(100))
            .unwrap();
        a.ready(due(100));
        for k in 101..110 {
            let jitter = (k % 3) * 4_000; // 0, 4 or 8 ms late
            let (pa, pb) = (
                from_command(k as u16, &[1; 160]),
                from_command(7, &[2; 160]),
            );
            a.accept(&pa, COMMAND, 3, due(k) + jitter).unwrap();
            b.accept(&pb, COMMAND, 0, due(k) + jitter).unwrap();
            let (sa, sb) = (a.ready(due(k) + jitter), b.ready(due(k) + jitter));
            assert_eq!(header(&sa[0]), header(&sb[0]), "packet {k}");
            assert_eq!(header(&sb[0]), expected(ids, k));
        }
    }

    #[test]
    fn packets_from_anyone_but_the_command_are_dropped() {
        let mut gate = Translator::new(stream::Ids::derive("s"), STARTED_MS);
        let p = from_command(1, &[0; 160]);
        // An RTCP sender report (V=2, PT 200) from another local socket,
        // as an RTP muxer sends to the port above its target, neither
        // passes nor takes the latch.
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&[0; 24]);
        let muxer_rtcp: SocketAddr = "127.0.0.1:40009".parse().unwrap();
        assert_eq!(
            gate.accept(&sr, muxer_rtcp, 0, due(1)),
            Err(Refusal::Malformed)
        );
        let remote: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        assert_eq!(gate.accept(&p, remote, 0, due(1)), Err(Refusal::Foreign));
        // The first loopback source of the run is latched...
        gate.accept(&p, COMMAND, 0, due(1)).unwrap();
        let other: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        assert_eq!(gate.accept(&p, other, 0, due(2)), Err(Refusal::Foreign));
        let v6: SocketAddr = "[::1]:40000".parse().unwrap();
        assert_eq!(gate.accept(&p, v6, 0, due(2)), Err(Refusal::Foreign));
        // ...until the command runs again, from another port.
        gate.accept(&p, other, 1, due(3)).unwrap();
        assert_eq!(gate.accept(&p, COMMAND, 1, due(4)), Err(Refusal::Foreign));
        assert_eq!(gate.ready(due(10)).len(), 2);
    }

    #[test]
    fn malformed_datagrams_are_dropped_never_a_panic() {
        let mut gate = Translator::new(stream::Ids::derive("s"), STARTED_MS);
        let good = from_command(1, &[0; 160]);
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            good[..11].to_vec(),
            good[..12].to_vec(), // no payload
            vec![0x80; MAX_DATAGRAM + 1],
        ];
        let mut version1 = good.clone();
        version1[0] = 0x40;
        let mut rtcp = good.clone();
        rtcp[1] = 200;
        let mut csrcs = good.clone();
        csrcs[0] |= 0x0F; // 60 bytes of CSRC, then nothing left
        csrcs.truncate(12 + 60);
        let mut extension = from_command(1, &[0, 0, 0xFF, 0xFF]);
        extension[0] |= 0x10;
        let mut padding = good.clone();
        padding[0] |= 0x20;
        *padding.last_mut().unwrap() = 200;
        cases.extend([version1, rtcp, csrcs, extension, padding]);
        for case in &cases {
            assert_eq!(
                gate.accept(case, COMMAND, 0, due(1)),
                Err(Refusal::Malformed),
                "{case:?}"
            );
        }
        assert!(gate.ready(due(100)).is_empty());
        // CSRCs, an extension and padding are taken off the payload.
        let mut full = vec![0xA1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        full.extend([0, 0, 0, 5]); // one CSRC
        full.extend([0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // one word of extension
        full.extend([7; 10]);
        full.extend([0, 0, 3]); // three octets of padding
        full[0] |= 0x10;
        assert_eq!(rtp_payload(&full), Some((0, &[7u8; 10][..])));
        // Deterministic noise: never a panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut p = [0u8; 48];
            for byte in &mut p {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            p[0] = 0x80 | (p[0] & 0x3F);
            let _ = gate.accept(&p[..(x % 49) as usize], COMMAND, 0, due(1));
        }
    }

    #[test]
    fn a_closed_gate_drops_each_packet_at_its_slot_and_opens_with_the_next_one_ready() {
        let ids = stream::Ids::derive("s");
        let mut gate = Translator::new(ids, STARTED_MS);
        let p = from_command(1, &[0; 160]);
        // A burst of 13 packets (ffmpeg reads 256 ms of a WAV file at
        // once) arrives at slot 10 while the gate is closed: slots 10-22.
        for _ in 0..13 {
            gate.accept(&p, COMMAND, 0, due(10)).unwrap();
        }
        // Closed until slot 15: what was due goes nowhere.
        assert_eq!(gate.discard_ready(due(15)), 6);
        // Opened then: slot 16's packet is held, ready on time, not a
        // burst (256 ms) later.
        assert_eq!(gate.next_release_us(), Some(due(16) - PACKET_US / 2));
        let sent = gate.ready(due(16));
        assert_eq!(sent.len(), 1);
        assert_eq!(header(&sent[0]), expected(ids, 16));
        // A packet after a long closed spell takes the slot of its moment.
        assert_eq!(gate.discard_ready(due(400)), 6);
        gate.accept(&p, COMMAND, 0, due(500)).unwrap();
        assert_eq!(header(&gate.ready(due(500))[0]), expected(ids, 500));
    }

    #[test]
    fn the_gate_holds_at_most_max_held_packets() {
        let mut gate = Translator::new(stream::Ids::derive("s"), STARTED_MS);
        let p = from_command(1, &[0; 160]);
        for _ in 0..MAX_HELD {
            gate.accept(&p, COMMAND, 0, due(10) - 15_000).unwrap();
        }
        assert_eq!(
            gate.accept(&p, COMMAND, 0, due(10) - 15_000),
            Err(Refusal::Overflow)
        );
        assert_eq!(gate.ready(due(10 + MAX_HELD as u64)).len(), MAX_HELD);
    }

    fn spec(id: &str) -> SessionSpec {
        SessionSpec {
            id: id.into(),
            service: "exec".into(),
            params: BTreeMap::new(),
            client: String::new(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        }
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(2), f)
            .await
            .expect("within 2 s")
    }

    #[tokio::test]
    async fn a_gate_forwards_its_commands_packets_to_the_client_while_open() {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = spec("gated");
        let gate = Gate::open(
            &s,
            client.local_addr().unwrap(),
            None,
            ProbeBudget::default(),
        )
        .unwrap();
        let (addr, ids) = (gate.addr(), gate.ids());
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let status = SharedStatus::default();
        lock(&status).standby = true; // a warm standby
        let (first_sent, mut first) = oneshot::channel();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(gate.run(status.clone(), first_sent, stopped));
        let command = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let intruder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 2048];

        // Closed: nothing reaches the client.
        command
            .send_to(&from_command(1, &[5; 160]), addr)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(client.try_recv(&mut buf).is_err());
        assert!(first.try_recv().is_err(), "nothing sent yet");

        // Opened: the command's packets go out on the session's stream.
        lock(&status).standby = false;
        command
            .send_to(&from_command(2, &[6; 160]), addr)
            .await
            .unwrap();
        let n = within(client.recv(&mut buf)).await.unwrap();
        let (_, pt, _, _, ssrc) = header(&buf[..n]);
        assert_eq!((pt, ssrc, &buf[12..n]), (0, ids.ssrc, &[6u8; 160][..]));
        within(&mut first).await.expect("the first packet is told");

        // Anyone else's packets, and garbage, are dropped and counted.
        intruder
            .send_to(&from_command(3, &[7; 160]), addr)
            .await
            .unwrap();
        command.send_to(b"not rtp", addr).await.unwrap();
        command
            .send_to(&from_command(4, &[8; 160]), addr)
            .await
            .unwrap();
        let n = within(client.recv(&mut buf)).await.unwrap();
        assert_eq!(&buf[12..n], &[8u8; 160][..], "the intruder's never came");
        let s = lock(&status).clone();
        assert_eq!((s.packets_sent, s.packets_dropped), (2, 2));

        // Paused for want of consent: one packet a second goes out (a
        // probe the client can answer), the others are dropped.
        lock(&status).paused = true;
        for seq in 5..15 {
            command
                .send_to(&from_command(seq, &[9; 160]), addr)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut forwarded = 0;
        while client.try_recv(&mut buf).is_ok() {
            forwarded += 1;
        }
        assert_eq!(forwarded, 1, "one probe in 0.4 s paused");
        drop(stop);
        within(task).await.unwrap();
    }
}
