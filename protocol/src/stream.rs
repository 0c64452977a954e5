//! A session's one continuous RTP stream (RFC 3550): its SSRC, and the
//! sequence number and timestamp due at any instant, as pure functions of
//! the session id and start time (docs/protocol.md, section 21).

use serde::Serialize;

/// RTP clock rate of the stream (Hz): PCMU's 8 kHz (RFC 3551).
pub const CLOCK_RATE: u32 = 8000;
/// Time between packets (µs).
pub const PACKET_US: u64 = 20_000;
/// RTP timestamp units per packet: 20 ms at 8 kHz.
pub const SAMPLES_PER_PACKET: u32 = 160;

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher,
/// because every node must derive the same identifiers: that is what lets a
/// backup continue the stream a receiver plays instead of starting another.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `fold(fnv(label + ":" + session_id))`, where `fold` XORs the two halves
/// so that every bit of the hash counts.
fn hash(label: &str, session_id: &str) -> u32 {
    let h = fnv1a64(format!("{label}:{session_id}").as_bytes());
    (h as u32) ^ ((h >> 32) as u32)
}

/// The SSRC of the session's stream, as [`Ids::derive`] gives it.
pub fn ssrc(session_id: &str) -> u32 {
    hash("ssrc", session_id)
}

/// The identifiers that place a stream: SSRC and the initial sequence
/// number and timestamp. RFC 3550 §5.1 asks for random initial values;
/// derived ones are as unpredictable as the session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Ids {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Sequence number of packet 0.
    pub seq0: u16,
    /// Timestamp of packet 0.
    pub ts0: u32,
}

impl Ids {
    /// Derives them from the session id alone. (A session's parameters may
    /// override them; the service that reads the parameters applies that.)
    pub fn derive(session_id: &str) -> Self {
        Ids {
            ssrc: ssrc(session_id),
            seq0: hash("seq0", session_id) as u16,
            ts0: hash("ts0", session_id),
        }
    }

    /// RTP sequence number of packet `k`: it wraps, as RFC 3550 expects.
    pub fn seq(&self, k: u64) -> u16 {
        self.seq0.wrapping_add(k as u16)
    }

    /// RTP timestamp of packet `k` (its first sample).
    pub fn timestamp(&self, k: u64) -> u32 {
        self.ts0
            .wrapping_add(k.wrapping_mul(u64::from(SAMPLES_PER_PACKET)) as u32)
    }

    /// RTP timestamp of the instant `unix_us`, to the sample: what a sender
    /// report carries (RFC 3550 §6.4.1), or a packet not on the 20 ms grid.
    /// Instants before the start give `ts0`.
    pub fn timestamp_at(&self, started_ms: u64, unix_us: u64) -> u32 {
        let elapsed_us = unix_us.saturating_sub(start_us(started_ms));
        // u128: 8000 × a u64 of µs overflows u64 after 73 years of session.
        let samples = u128::from(elapsed_us) * u128::from(CLOCK_RATE) / 1_000_000;
        self.ts0.wrapping_add(samples as u32)
    }
}

/// Unix µs of packet 0. Instants are Unix µs against the record's
/// `started_ms` because the wall clock is the one clock nodes share;
/// saturating so that no start time panics.
fn start_us(started_ms: u64) -> u64 {
    started_ms.saturating_mul(1000)
}

/// When packet `k` of a session started at `started_ms` is due (Unix µs).
pub fn due_us(started_ms: u64, k: u64) -> u64 {
    start_us(started_ms).saturating_add(k.saturating_mul(PACKET_US))
}

/// The first packet due at or after `unix_us`: where a sender that starts
/// then begins (packets missed are not replayed). 0 before the start.
pub fn first_due_at_or_after(started_ms: u64, unix_us: u64) -> u64 {
    unix_us
        .saturating_sub(start_us(started_ms))
        .div_ceil(PACKET_US)
}

/// The packet due at `unix_us`: the last one due at or before it, or
/// `None` before the session started. The inverse of [`due_us`].
pub fn last_due_at_or_before(started_ms: u64, unix_us: u64) -> Option<u64> {
    unix_us
        .checked_sub(start_us(started_ms))
        .map(|elapsed| elapsed / PACKET_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like [`hash`], written out again from the protocol document.
    fn documented(label: &str, id: &str) -> u32 {
        let h = fnv1a64(format!("{label}:{id}").as_bytes());
        (h as u32) ^ ((h >> 32) as u32)
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn ids_follow_from_the_session_id_as_documented() {
        let ids = Ids::derive("s1");
        assert_eq!(ids.ssrc, documented("ssrc", "s1"));
        assert_eq!(ids.seq0, documented("seq0", "s1") as u16);
        assert_eq!(ids.ts0, documented("ts0", "s1"));
        assert_eq!(ssrc("s1"), ids.ssrc);
        assert_ne!(Ids::derive("s2"), ids);
        assert_eq!(Ids::derive("s1"), ids);
    }

    #[test]
    fn the_derivation_gives_the_values_every_node_has_used() {
        // Pinned from the code as it was in baton-node before it moved
        // here: nodes of different builds must go on agreeing.
        for (id, ssrc, seq0, ts0) in [
            ("s1", 0x6CDF_5F1F, 0xB429, 0xFBCB_B2C6),
            ("call-7", 0xB134_D6CB, 0x4A3E, 0xAC74_6319),
            ("", 0x9752_874D, 0xB18A, 0x1A2A_CB21),
            ("A-session_ID-0123456789", 0x3232_ED97, 0x820F, 0x2CEA_0134),
        ] {
            assert_eq!(Ids::derive(id), Ids { ssrc, seq0, ts0 }, "{id:?}");
        }
        let ids = Ids::derive("call-7");
        let started_ms = 1_700_000_000_123;
        for (k, seq, ts, due) in [
            (0, 0x4A3E, 0xAC74_6319, 1_700_000_000_123_000),
            (1, 0x4A3F, 0xAC74_63B9, 1_700_000_000_143_000),
            (65_535, 0x4A3D, 0xAD14_6279, 1_700_001_310_823_000),
            (65_536, 0x4A3E, 0xAD14_6319, 1_700_001_310_843_000),
            (26_843_545, 0xE3D7, 0xAC74_62B9, 1_700_536_871_023_000),
            (
                u64::from(u32::MAX) + 5,
                0x4A42,
                0xAC74_6599,
                1_785_899_346_123_000,
            ),
        ] {
            assert_eq!(
                (ids.seq(k), ids.timestamp(k), due_us(started_ms, k)),
                (seq, ts, due),
                "packet {k}"
            );
        }
        for (unix_us, first, last) in [
            (0, 0, None),
            (1_700_000_000_122_999, 0, None),
            (1_700_000_000_123_000, 0, Some(0)),
            (1_700_000_000_123_001, 1, Some(0)),
            (1_700_000_000_143_000, 1, Some(1)),
            (1_700_000_060_135_345, 3001, Some(3000)),
        ] {
            assert_eq!(
                (
                    first_due_at_or_after(started_ms, unix_us),
                    last_due_at_or_before(started_ms, unix_us)
                ),
                (first, last),
                "at {unix_us}"
            );
        }
    }

    #[test]
    fn a_takeover_begins_at_the_first_packet_due_at_or_after_now() {
        let started_ms = 1_000;
        let start = 1_000_000;
        assert_eq!(first_due_at_or_after(started_ms, 0), 0);
        assert_eq!(first_due_at_or_after(started_ms, start), 0);
        assert_eq!(first_due_at_or_after(started_ms, start + 1), 1);
        assert_eq!(first_due_at_or_after(started_ms, start + 20_000), 1);
        assert_eq!(first_due_at_or_after(started_ms, start + 20_001), 2);
        assert_eq!(last_due_at_or_before(started_ms, start - 1), None);
        assert_eq!(last_due_at_or_before(started_ms, start + 39_999), Some(1));
        assert_eq!(due_us(started_ms, 3), start + 60_000);
    }

    #[test]
    fn the_packet_due_at_its_own_due_time_is_itself() {
        let started_ms = 1_700_000_000_123;
        for k in [0, 1, 2, 49, 50, 65_536, 1 << 40] {
            let due = due_us(started_ms, k);
            assert_eq!(last_due_at_or_before(started_ms, due), Some(k));
            assert_eq!(last_due_at_or_before(started_ms, due + 19_999), Some(k));
            assert_eq!(first_due_at_or_after(started_ms, due), k);
            assert_eq!(first_due_at_or_after(started_ms, due - 1), k);
        }
    }

    #[test]
    fn far_off_times_saturate_instead_of_panicking() {
        assert_eq!(due_us(u64::MAX, 0), u64::MAX);
        assert_eq!(due_us(0, u64::MAX), u64::MAX);
        assert_eq!(first_due_at_or_after(u64::MAX, 5), 0);
        assert_eq!(last_due_at_or_before(u64::MAX, u64::MAX - 1), None);
        let ids = Ids::derive("x");
        assert_eq!(ids.timestamp_at(u64::MAX, 0), ids.ts0);
        // 2^64 - 1 µs (584 000 years) is 2^64 × 0.008 samples, mod 2^32.
        let samples = (u128::from(u64::MAX) * 8000 / 1_000_000) as u32;
        assert_eq!(ids.timestamp_at(0, u64::MAX), ids.ts0.wrapping_add(samples));
    }

    #[test]
    fn the_media_clock_runs_at_8_khz_and_meets_each_packet_timestamp() {
        let ids = Ids {
            ssrc: 1,
            seq0: 0,
            ts0: 0xFFFF_FF00,
        };
        let started_ms = 1_000;
        for k in [0, 1, 2, 1 << 20] {
            let due = due_us(started_ms, k);
            assert_eq!(ids.timestamp_at(started_ms, due), ids.timestamp(k), "{k}");
        }
        // 125 µs is one sample; parts of a sample round down.
        let due = due_us(started_ms, 1);
        assert_eq!(ids.timestamp_at(started_ms, due + 124), 0xFFFF_FFA0);
        assert_eq!(ids.timestamp_at(started_ms, due + 125), 0xFFFF_FFA1);
        assert_eq!(ids.timestamp_at(started_ms, due + 2_000), 0xFFFF_FFB0);
        assert_eq!(ids.timestamp_at(started_ms, 0), ids.ts0);
    }
}
