//! G.711 mu-law (ITU-T G.711, the PCMU payload of RFC 3551): 16-bit linear
//! PCM to 8-bit codes and back, bit-exact with ITU-T's reference code
//! (G.191 Software Tool Library, `ulaw_compress` / `ulaw_expand`), which
//! works on the 14 most significant bits.

/// Encodes one 16-bit linear sample as a mu-law code.
///
/// Silence (0) is 0xFF, full scale positive is 0x80, full scale negative is
/// 0x00; the code is stored inverted, as G.711 prescribes. Negative samples
/// are taken as their one's complement, as in G.191: -1 is negative zero
/// (0x7F), and `x` and `-1 - x` encode symmetrically.
pub fn encode(sample: i16) -> u8 {
    let x = i32::from(sample);
    let (magnitude, sign) = if x < 0 {
        (!x >> 2, 0x00)
    } else {
        (x >> 2, 0x80)
    };
    // 33 moves the segment thresholds to mu-law's; 0x1FFF clips.
    let biased = (magnitude + 33).min(0x1FFF);
    // Segment 1..=8: one more than the bit length of biased >> 6.
    let segment = 33 - (biased >> 6).leading_zeros() as i32;
    let high = 8 - segment;
    let low = 15 - ((biased >> segment) & 0x0F);
    ((high << 4) | low) as u8 | sign
}

/// Decodes a mu-law code to a 16-bit linear sample (the centre of its
/// quantisation interval).
pub fn decode(code: u8) -> i16 {
    let u = !code;
    let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// Encodes a block of samples into `out` (same length).
pub fn encode_into(samples: &[i16], out: &mut [u8]) {
    for (o, s) in out.iter_mut().zip(samples) {
        *o = encode(*s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_values_of_the_g711_tables() {
        // Zero is 0xFF; negative zero 0x7F; the extremes clip to the end codes.
        assert_eq!(encode(0), 0xFF);
        assert_eq!(encode(1), 0xFF);
        assert_eq!(encode(-1), 0x7F);
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        // Segment 3, step 1: (1000 >> 2) + 33 = 283 = 0b1_0001_1011.
        assert_eq!(encode(1000), 0xCE);
        assert_eq!(encode(-1000), 0x4E);
        // One's complement for negatives: -4 and 3 share a magnitude.
        assert_eq!(encode(-4), 0x7F);
        assert_eq!(encode(-5), 0x7E);
        assert_eq!(encode(3), 0xFF);
        // Segment boundaries of the 14-bit table (biased magnitudes 0x3F/0x40).
        assert_eq!(encode(120), 0xF0);
        assert_eq!(encode(124), 0xEF);
    }

    #[test]
    fn decodes_values_of_the_g711_tables() {
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0xCE), 988);
        assert_eq!(decode(0x4E), -988);
        assert_eq!(decode(0xFE), 8);
        assert_eq!(decode(0x7E), -8);
    }

    #[test]
    fn every_code_but_negative_zero_survives_decode_then_encode() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(encode(decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn round_trip_error_stays_within_half_a_quantisation_step() {
        for s in i16::MIN..=i16::MAX {
            let code = encode(s);
            let back = i32::from(decode(code));
            let segment = i32::from((!code & 0x70) >> 4);
            // Step in the 16-bit domain: 8 << segment; reference encoding
            // truncates the 2 low bits first, hence the +4 of slack.
            let bound = (4 << segment) + 4;
            let err = (back - i32::from(s)).abs();
            if i32::from(s).abs() <= 32124 {
                assert!(err <= bound, "sample {s}: decoded {back}, err {err}");
            } else {
                assert_eq!(back.abs(), 32124, "sample {s} clips");
            }
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut last = decode(encode(i16::MIN));
        for s in i16::MIN..=i16::MAX {
            let v = decode(encode(s));
            assert!(v >= last, "{s}");
            last = v;
        }
    }
}
