//! RTCP (RFC 3550 §6) for `rtp-audio`: parsing the receiver report blocks a
//! client sends about the stream (in RR packets, PT 201, or in the SR, PT
//! 200, that opens a compound packet), turning them into a
//! [`crate::views::Report`], and building the sender report (SR + SDES CNAME) that
//! lets a client's report carry a round-trip time. The client's side (a
//! receiver report, the LSR of a sender report) is here too, for the
//! testnet's receivers.
//!
//! Parsing never panics: a datagram that is not a well-formed compound
//! packet (version 2, every length in 32-bit words inside the datagram,
//! report blocks inside their packet) yields no report at all.

/// Packet type of a sender report.
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// Packet type of source description.
pub const PT_SDES: u8 = 202;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

const BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;

/// One report block (RFC 3550 §6.4.1), as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received, or 0.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The report blocks of a compound RTCP packet (in SR and RR packets;
/// other packet types are skipped). Empty if the datagram is malformed.
pub fn report_blocks(datagram: &[u8]) -> Vec<ReportBlock> {
    parse(datagram).unwrap_or_default()
}

fn parse(datagram: &[u8]) -> Option<Vec<ReportBlock>> {
    let mut blocks = Vec::new();
    walk(datagram, |pt, packet| {
        let first_block = match pt {
            PT_SR => 8 + SENDER_INFO_LEN,
            PT_RR => 8,
            _ => return Some(()),
        };
        let count = usize::from(packet[0] & 0x1F);
        let end = first_block + count * BLOCK_LEN;
        let body = packet.get(first_block..end)?;
        blocks.extend(body.chunks_exact(BLOCK_LEN).map(|b| ReportBlock {
            ssrc: be32(&b[0..4]),
            fraction_lost: b[4],
            // Sign-extend the 24-bit field.
            cumulative_lost: (be32(&b[4..8]) << 8) as i32 >> 8,
            highest_seq: be32(&b[8..12]),
            jitter: be32(&b[12..16]),
            lsr: be32(&b[16..20]),
            dlsr: be32(&b[20..24]),
        }));
        Some(())
    })?;
    Some(blocks)
}

/// Calls `each(packet type, packet without its padding)` for every packet
/// of a compound RTCP datagram; `None` (and no more calls) as soon as the
/// datagram or `each` finds it malformed: version 2, every length in
/// 32-bit words inside the datagram, padding inside its packet.
fn walk(mut rest: &[u8], mut each: impl FnMut(u8, &[u8]) -> Option<()>) -> Option<()> {
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let header = rest.get(..4)?;
        if header[0] >> 6 != 2 {
            return None;
        }
        let padded = header[0] & 0x20 != 0;
        let pt = header[1];
        let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let packet = rest.get(..len)?;
        rest = &rest[len..];
        // Padding (RFC 3550 §6.4.1): the last octet counts the padding octets.
        let body_end = if padded {
            let pad = usize::from(packet[len - 1]);
            if pad == 0 || pad > len - 4 {
                return None;
            }
            len - pad
        } else {
            len
        };
        each(pt, &packet[..body_end])?;
    }
    Some(())
}

impl ReportBlock {
    /// Appends the block's 24 octets (RFC 3550 §6.4.1) to `p`.
    fn encode(&self, p: &mut Vec<u8>) {
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        p.extend_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        for w in [self.highest_seq, self.jitter, self.lsr, self.dlsr] {
            p.extend_from_slice(&w.to_be_bytes());
        }
    }
}

/// A compound RTCP packet as a receiver sends it (RFC 3550 §6.1): a
/// receiver report (§6.4.2, PT 201) from `reporter` carrying `blocks` (at
/// most 31, the count field's limit; more are left out), then SDES with its
/// CNAME.
pub fn receiver_report(reporter: u32, blocks: &[ReportBlock], cname: &str) -> Vec<u8> {
    let mut p = rr_packet(reporter, blocks);
    push_sdes_cname(&mut p, reporter, cname);
    p
}

/// The RR packet alone.
fn rr_packet(reporter: u32, blocks: &[ReportBlock]) -> Vec<u8> {
    let blocks = &blocks[..blocks.len().min(31)];
    let mut p = Vec::with_capacity(8 + blocks.len() * BLOCK_LEN);
    p.extend_from_slice(&[0x80 | blocks.len() as u8, PT_RR, 0, 0]);
    p.extend_from_slice(&reporter.to_be_bytes());
    for b in blocks {
        b.encode(&mut p);
    }
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

/// Appends an SDES packet with one chunk: `ssrc`'s CNAME (up to 255
/// octets), then a null octet and padding to a word.
fn push_sdes_cname(p: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + cname.len() + 1;
    let chunk_words = chunk.div_ceil(4);
    let end = p.len() + 4 + chunk_words * 4;
    p.extend_from_slice(&[0x81, PT_SDES]);
    p.extend_from_slice(&(chunk_words as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, cname.len() as u8]);
    p.extend_from_slice(cname);
    p.resize(end, 0);
}

/// The sender of the first sender report (PT 200) in a compound RTCP
/// packet and the middle 32 bits of its NTP timestamp: what a receiver
/// echoes as LSR (RFC 3550 §6.4.1). `None` if there is none or the
/// datagram is malformed.
pub fn sender_report_lsr(datagram: &[u8]) -> Option<(u32, u32)> {
    let mut found = None;
    walk(datagram, |pt, packet| {
        if pt == PT_SR && found.is_none() {
            let info = packet.get(4..16)?;
            found = Some((be32(&info[0..4]), be32(&info[6..10])));
        }
        Some(())
    })?;
    found
}

/// The middle 32 bits of the NTP timestamp of `unix_us` (the unit of LSR:
/// 1/65536 s).
pub fn ntp_middle(unix_us: u64) -> u32 {
    let (secs, frac) = ntp(unix_us);
    (secs << 16) | (frac >> 16)
}

/// The 64-bit NTP timestamp of `unix_us`: seconds and fraction.
fn ntp(unix_us: u64) -> (u32, u32) {
    let secs = (unix_us / 1_000_000 + NTP_UNIX_OFFSET) as u32;
    let frac = (((unix_us % 1_000_000) << 32) / 1_000_000) as u32;
    (secs, frac)
}

/// Turns the reports on one stream into [`crate::views::Report`]s, at 8 kHz.
#[derive(Debug, Clone)]
pub struct Reporter {
    ssrc: u32,
    /// Extended highest sequence number and cumulative loss of the last
    /// report, to count the packets received in between.
    last: Option<(u32, i32)>,
}

impl Reporter {
    /// Reports on the stream `ssrc`.
    pub fn new(ssrc: u32) -> Self {
        Reporter { ssrc, last: None }
    }

    /// The reports on this stream in `datagram`, received at `unix_us`.
    ///
    /// `rtt_ms` is now - LSR - DLSR when the client echoes one of our SRs
    /// (LSR not 0), else 0. `packets` is the packets received since the
    /// previous report (0 for the first one) and `loss` the fraction lost
    /// since then, from the cumulative counters (the first report's, and
    /// one whose counters went backwards: the block's fraction lost).
    pub fn reports(&mut self, datagram: &[u8], unix_us: u64) -> Vec<crate::views::Report> {
        let now = ntp_middle(unix_us);
        report_blocks(datagram)
            .into_iter()
            .filter(|b| b.ssrc == self.ssrc)
            .map(|b| {
                let rtt_ms = if b.lsr == 0 {
                    0.0
                } else {
                    let rtt = now.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                    // A "negative" RTT (clock step, bogus DLSR) is unknown.
                    if rtt < 1 << 31 {
                        f64::from(rtt) * 1000.0 / 65536.0
                    } else {
                        0.0
                    }
                };
                // Since the previous report that reached us, from the
                // cumulative counters: also over the span of reports lost
                // on the way, which the fraction (since the receiver's
                // previous report) leaves out.
                let fraction = f64::from(b.fraction_lost) / 256.0;
                let (loss, packets) = match self.last {
                    Some((seq, lost)) => {
                        let expected = i64::from(b.highest_seq.wrapping_sub(seq));
                        let lost = (i64::from(b.cumulative_lost) - i64::from(lost)).max(0);
                        let received = (expected - lost).clamp(0, i64::from(u32::MAX)) as u64;
                        let counted = expected > 0 && expected < 1 << 31 && lost <= expected;
                        let loss = if counted {
                            lost as f64 / expected as f64
                        } else {
                            fraction
                        };
                        (loss, received)
                    }
                    None => (fraction, 0),
                };
                self.last = Some((b.highest_seq, b.cumulative_lost));
                crate::views::Report {
                    loss,
                    jitter_ms: f64::from(b.jitter) * 1000.0 / 8000.0,
                    rtt_ms,
                    packets,
                }
            })
            .collect()
    }
}

/// A compound RTCP packet: an SR without report blocks, then SDES with the
/// CNAME (RFC 3550 §6.1 asks for both).
pub fn sender_report(
    ssrc: u32,
    unix_us: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    cname: &str,
) -> Vec<u8> {
    let (secs, frac) = ntp(unix_us);
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&[0x80, PT_SR, 0, 6]);
    for word in [ssrc, secs, frac, rtp_ts, packets, octets] {
        p.extend_from_slice(&word.to_be_bytes());
    }
    push_sdes_cname(&mut p, ssrc, cname);
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An RR (or, with `sr`, an SR) from `reporter` carrying `blocks`.
    pub(crate) fn report(sr: bool, reporter: u32, blocks: &[ReportBlock]) -> Vec<u8> {
        let mut p = rr_packet(reporter, blocks);
        if sr {
            p[1] = PT_SR;
            p.splice(8..8, [7; SENDER_INFO_LEN]);
            let words = (p.len() / 4 - 1) as u16;
            p[2..4].copy_from_slice(&words.to_be_bytes());
        }
        p
    }

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 64,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 160,
            lsr: 0,
            dlsr: 0,
        }
    }

    #[test]
    fn an_rr_yields_its_blocks() {
        let rr = report(false, 9, &[block(0xAABB_CCDD)]);
        assert_eq!(rr.len(), 32);
        assert_eq!(rr[..4], [0x81, 201, 0, 7]);
        assert_eq!(report_blocks(&rr), [block(0xAABB_CCDD)]);
        let mut r = Reporter::new(0xAABB_CCDD);
        assert_eq!(
            r.reports(&rr, 0),
            [crate::views::Report {
                loss: 0.25,
                jitter_ms: 20.0,
                rtt_ms: 0.0,
                packets: 0
            }]
        );
        assert!(Reporter::new(1).reports(&rr, 0).is_empty(), "other SSRC");
    }

    #[test]
    fn a_compound_sr_rr_sdes_yields_the_blocks_of_both() {
        let mut b2 = block(5);
        b2.highest_seq += 100;
        b2.cumulative_lost += 10;
        b2.fraction_lost = 0;
        let mut p = report(true, 9, &[block(4), block(5)]);
        p.extend(report(false, 9, &[b2]));
        p.extend(sender_report(9, 0, 0, 0, 0, "x@y"));
        assert_eq!(report_blocks(&p), [block(4), block(5), b2]);
        // Packets between two reports: 100 more expected, 10 more lost.
        let bodies = Reporter::new(5).reports(&p, 0);
        assert_eq!(bodies.len(), 2);
        // The loss since the previous report that reached us is 10 of 100,
        // from the counters; the block's fraction (0) is about the
        // receiver's interval only, whose earlier reports may have been
        // lost on the way.
        assert_eq!((bodies[1].loss, bodies[1].packets), (0.1, 90));
    }

    /// Counters that went backwards (a receiver that restarted) say
    /// nothing about the span: the block's fraction is taken.
    #[test]
    fn counters_that_went_backwards_give_the_blocks_fraction() {
        let mut r = Reporter::new(5);
        let first = block(5);
        r.reports(&report(false, 9, &[first]), 0);
        let mut back = first;
        back.highest_seq -= 40;
        back.fraction_lost = 32;
        assert_eq!(r.reports(&report(false, 9, &[back]), 0)[0].loss, 0.125);
        let mut fewer_lost = back;
        fewer_lost.highest_seq += 20;
        fewer_lost.cumulative_lost -= 30;
        fewer_lost.fraction_lost = 0;
        let body = r.reports(&report(false, 9, &[fewer_lost]), 0)[0];
        assert_eq!((body.loss, body.packets), (0.0, 20));
    }

    #[test]
    fn rtt_is_now_minus_lsr_minus_dlsr() {
        let sent_us = 1_700_000_000_000_000;
        let mut b = block(5);
        b.lsr = ntp_middle(sent_us);
        b.dlsr = 65536 / 2; // the client held it 500 ms
        let now = sent_us + 540_000;
        let body = Reporter::new(5).reports(&report(false, 9, &[b]), now)[0];
        assert!((body.rtt_ms - 40.0).abs() < 0.1, "{body:?}");
        // DLSR beyond now - LSR: unknown, not 2^32 ms.
        b.dlsr = 65536;
        let body = Reporter::new(5).reports(&report(false, 9, &[b]), now)[0];
        assert_eq!(body.rtt_ms, 0.0);
    }

    #[test]
    fn a_receiver_report_round_trips_and_an_sr_gives_its_lsr() {
        let mut far = block(6);
        far.cumulative_lost = -0x90_0000; // beyond 24 bits: clamped
        let rr = receiver_report(9, &[block(5), far], "me@client");
        assert_eq!(rr[..4], [0x82, PT_RR, 0, 13]);
        // Then SDES: header, SSRC, CNAME item (2 + 9 octets), null, padding.
        assert_eq!(rr[56..60], [0x81, PT_SDES, 0, 4]);
        assert_eq!(rr[60..64], 9u32.to_be_bytes());
        assert_eq!(&rr[64..75], b"\x01\x09me@client");
        assert_eq!((rr.len(), rr[75]), (76, 0));
        far.cumulative_lost = -0x80_0000;
        assert_eq!(report_blocks(&rr), [block(5), far]);
        assert!(parse(&rr).is_some(), "well formed");
        assert_eq!(
            receiver_report(9, &[], "")[..12],
            [0x80, PT_RR, 0, 1, 0, 0, 0, 9, 0x81, PT_SDES, 0, 2]
        );
        assert_eq!(sender_report_lsr(&rr), None, "no SR in it");
        let at = 1_700_000_000_250_000;
        let mut compound = rr.clone();
        compound.extend(sender_report(0x1234, at, 0, 1, 160, "c"));
        assert_eq!(sender_report_lsr(&compound), Some((0x1234, ntp_middle(at))));
        assert_eq!(sender_report_lsr(&compound[..compound.len() - 1]), None);
    }

    #[test]
    fn our_sender_report_parses_and_is_whole_words() {
        let sr = sender_report(0x1234, 1_000_000, 77, 3, 480, "rtp-audio/abc");
        assert_eq!(sr.len() % 4, 0);
        assert_eq!(sr[..4], [0x80, 200, 0, 6]);
        assert_eq!(report_blocks(&sr), []);
        assert!(parse(&sr).is_some(), "well formed");
        let long = "n".repeat(300);
        let sr = sender_report(1, 0, 0, 0, 0, &long);
        assert!(parse(&sr).is_some() && sr.len().is_multiple_of(4));
    }

    #[test]
    fn garbage_and_truncations_yield_nothing() {
        let good = {
            let mut p = report(true, 9, &[block(5)]);
            p.extend(report(false, 9, &[block(5), block(6)]));
            p
        };
        assert_eq!(report_blocks(&good).len(), 3);
        let sr_len = 8 + SENDER_INFO_LEN + BLOCK_LEN;
        for cut in (0..good.len()).filter(|&cut| cut != sr_len) {
            assert!(report_blocks(&good[..cut]).is_empty(), "cut at {cut}");
        }
        let mut bad_version = good.clone();
        bad_version[0] = 0x41;
        let mut too_many_blocks = good.clone();
        too_many_blocks[0] = 0x9F;
        let mut too_long = good.clone();
        too_long[3] = 0xFF;
        let mut bad_padding = report(false, 9, &[block(5)]);
        bad_padding[0] |= 0x20;
        *bad_padding.last_mut().unwrap() = 200;
        let rtp = [0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4];
        for p in [
            &bad_version[..],
            &too_many_blocks,
            &too_long,
            &bad_padding,
            &rtp,
            &[0xFF; 3],
            &[],
        ] {
            assert!(report_blocks(p).is_empty(), "{p:?}");
        }
        // Deterministic noise: never a panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut p = [0u8; 64];
            for byte in &mut p {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            p[0] = 0x80 | (p[0] & 0x3F);
            let len = (x % 65) as usize;
            let _ = Reporter::new(5).reports(&p[..len], x);
        }
    }
}
