//! WAV files as `rtp-audio` sources: RIFF/WAVE with 16-bit PCM, mono or
//! stereo, at any rate from 1 kHz to 384 kHz, converted once to 8 kHz mono
//! with integer arithmetic only, so that every node derives the very same
//! samples from the same file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The rate G.711 streams run at.
pub const RATE: u32 = 8000;

/// Largest `data` chunk read (bytes): 256 MiB, about 23 minutes of 48 kHz
/// stereo. Longer files are cut there.
pub const MAX_DATA: u64 = 256 << 20;

const FORMAT_PCM: u16 = 1;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
const HOW_TO_CONVERT: &str =
    "convert it with: ffmpeg -i IN -ac 1 -ar 8000 -sample_fmt s16 -c:a pcm_s16le OUT.wav";

/// What the header of a WAV file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub channels: u16,
    /// Samples per second per channel.
    pub rate: u32,
    /// Where the sample data starts in the file.
    pub data_offset: u64,
    /// Bytes of whole frames of sample data present in the file.
    pub data_len: u64,
}

impl Header {
    /// Frames (one sample per channel) in the data.
    pub fn frames(&self) -> u64 {
        self.data_len / (2 * u64::from(self.channels))
    }
}

/// Reads the header of the file at `path`. Errors say what is wrong in
/// words meant for the person who picked the file.
pub fn probe(path: &Path) -> Result<Header, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    read_header(&mut file)
}

/// Reads the file at `path` and converts it to 8 kHz mono.
pub fn load(path: &Path) -> Result<Vec<i16>, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let header = read_header(&mut file)?;
    file.seek(SeekFrom::Start(header.data_offset))
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut data = Vec::new();
    file.take(header.data_len.min(MAX_DATA))
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    convert(&data, header)
}

/// Parses a whole WAV file held in memory and converts it to 8 kHz mono.
pub fn decode(bytes: &[u8]) -> Result<Vec<i16>, String> {
    let mut cursor = io::Cursor::new(bytes);
    let header = read_header(&mut cursor)?;
    let start = usize::try_from(header.data_offset).map_err(|_| "too large".to_string())?;
    let len = usize::try_from(header.data_len.min(MAX_DATA)).map_err(|_| "too large")?;
    convert(&bytes[start..start + len], header)
}

/// Walks the RIFF chunks up to `data`, skipping those it does not need
/// (LIST, fact, cue, ...).
pub fn read_header<R: Read + Seek>(r: &mut R) -> Result<Header, String> {
    let file_len = r
        .seek(SeekFrom::End(0))
        .and_then(|len| r.seek(SeekFrom::Start(0)).map(|_| len))
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut riff = [0u8; 12];
    read_exact(r, &mut riff, "the RIFF header")?;
    match &riff[0..4] {
        b"RIFF" => {}
        b"RIFX" => {
            return Err(format!(
                "big-endian WAV (RIFX) is not supported; {HOW_TO_CONVERT}"
            ));
        }
        b"RF64" => return Err(format!("RF64 WAV is not supported; {HOW_TO_CONVERT}")),
        _ => return Err("not a WAV file (no RIFF header)".into()),
    }
    if &riff[8..12] != b"WAVE" {
        return Err("a RIFF file, but not WAVE".into());
    }
    let mut format: Option<(u16, u32)> = None;
    loop {
        let mut chunk = [0u8; 8];
        read_exact(r, &mut chunk, "a chunk header (no data chunk in the file)")?;
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let body = r
            .stream_position()
            .map_err(|e| format!("cannot read: {e}"))?;
        match &chunk[0..4] {
            b"fmt " => format = Some(read_format(r, size)?),
            b"data" => {
                let (channels, rate) = format.ok_or("the data chunk comes before the fmt chunk")?;
                let block = 2 * u64::from(channels);
                // Streamed WAVs carry a size of 0xFFFFFFFF or too large: use
                // what the file holds.
                let len = size.min(file_len.saturating_sub(body));
                let header = Header {
                    channels,
                    rate,
                    data_offset: body,
                    data_len: len - len % block,
                };
                if header.frames() == 0 {
                    return Err("the data chunk holds no samples".into());
                }
                return Ok(header);
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        r.seek(SeekFrom::Start(body + size + (size & 1)))
            .map_err(|e| format!("cannot read: {e}"))?;
    }
}

fn read_format<R: Read>(r: &mut R, size: u64) -> Result<(u16, u32), String> {
    if size < 16 {
        return Err(format!("fmt chunk too short ({size} bytes)"));
    }
    let mut fmt = [0u8; 40];
    let n = size.min(40) as usize;
    read_exact(r, &mut fmt[..n], "the fmt chunk")?;
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let mut tag = u16_at(0);
    if tag == FORMAT_EXTENSIBLE {
        if n < 26 {
            return Err("WAVE_FORMAT_EXTENSIBLE fmt chunk too short".into());
        }
        // The sub-format GUID starts with the plain format tag.
        tag = u16_at(24);
    }
    let channels = u16_at(2);
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag != FORMAT_PCM {
        return Err(format!(
            "format tag {tag:#06x} is not PCM (compressed or float WAV); {HOW_TO_CONVERT}"
        ));
    }
    if bits != 16 {
        return Err(format!(
            "{bits}-bit samples; only 16-bit PCM is supported; {HOW_TO_CONVERT}"
        ));
    }
    if channels != 1 && channels != 2 {
        return Err(format!(
            "{channels} channels; only mono and stereo are supported; {HOW_TO_CONVERT}"
        ));
    }
    if !(1000..=384_000).contains(&rate) {
        return Err(format!(
            "sample rate {rate} Hz out of range 1000..384000; {HOW_TO_CONVERT}"
        ));
    }
    if block_align != 2 * channels {
        return Err(format!(
            "block align {block_align} does not match {channels} channel(s) of 16 bits"
        ));
    }
    Ok((channels, rate))
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("file ends inside {what}"),
        _ => format!("cannot read {what}: {e}"),
    })
}

/// Interleaved little-endian 16-bit frames to 8 kHz mono.
fn convert(data: &[u8], header: Header) -> Result<Vec<i16>, String> {
    let channels = usize::from(header.channels);
    let mono: Vec<i32> = data
        .chunks_exact(2 * channels)
        .map(|frame| {
            let sum: i32 = frame
                .chunks_exact(2)
                .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                .sum();
            sum >> (channels - 1)
        })
        .collect();
    let out = resample(&mono, header.rate);
    if out.is_empty() {
        return Err("too short: less than one sample at 8 kHz".into());
    }
    Ok(out)
}

/// Resamples to 8 kHz: identity at 8 kHz; above it, each output sample is
/// the mean of the input samples in its interval (a box filter, a crude
/// anti-alias); below it, linear interpolation, wrapping to the start so the
/// loop stays seamless. Integer arithmetic only, so that it is exact and
/// the same on every machine.
pub fn resample(input: &[i32], rate: u32) -> Vec<i16> {
    let n = input.len() as u64;
    let rate = u64::from(rate);
    let out_len = n * u64::from(RATE) / rate;
    let clamp = |v: i64| v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
    (0..out_len)
        .map(|j| {
            if rate == u64::from(RATE) {
                clamp(i64::from(input[j as usize]))
            } else if rate > u64::from(RATE) {
                let a = j * rate / u64::from(RATE);
                let b = ((j + 1) * rate / u64::from(RATE)).clamp(a + 1, n);
                let sum: i64 = input[a as usize..b as usize]
                    .iter()
                    .map(|&s| i64::from(s))
                    .sum();
                clamp(sum / (b - a) as i64)
            } else {
                let pos = j * rate;
                let i = pos / u64::from(RATE);
                let frac = (pos % u64::from(RATE)) as i64;
                let a = i64::from(input[i as usize]);
                let b = i64::from(input[((i + 1) % n) as usize]);
                clamp((a * (i64::from(RATE) - frac) + b * frac) / i64::from(RATE))
            }
        })
        .collect()
}

/// Builds a WAV file (16-bit PCM), for tests and for tools that make
/// test media.
pub fn encode(channels: u16, rate: u32, interleaved: &[i16]) -> Vec<u8> {
    let data_len = (interleaved.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + interleaved.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    out.extend_from_slice(&(2 * channels).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in interleaved {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces the fmt chunk's u16 at `offset` (from the start of the file).
    fn patch_u16(mut wav: Vec<u8>, offset: usize, value: u16) -> Vec<u8> {
        wav[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        wav
    }

    #[test]
    fn mono_8k_is_taken_as_is() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 37 - 10_000) as i16).collect();
        assert_eq!(decode(&encode(1, 8000, &samples)).unwrap(), samples);
    }

    #[test]
    fn stereo_48k_is_mixed_and_averaged_down() {
        // Left i, right -i + 600: mono is 300 everywhere; 6 frames per output sample.
        let frames = 4800;
        let interleaved: Vec<i16> = (0..frames)
            .flat_map(|i| [i as i16, (600 - i) as i16])
            .collect();
        let out = decode(&encode(2, 48_000, &interleaved)).unwrap();
        assert_eq!(out.len(), 800);
        assert!(out.iter().all(|&s| s == 300), "{:?}", &out[..8]);
    }

    #[test]
    fn box_filter_averages_each_interval() {
        let input: Vec<i32> = (0..12).collect();
        assert_eq!(resample(&input, 16_000), vec![0, 2, 4, 6, 8, 10]);
        // 44.1 kHz: intervals of 5 or 6 input samples.
        let input: Vec<i32> = (0..441).collect();
        let out = resample(&input, 44_100);
        assert_eq!(out.len(), 80);
        assert_eq!(out[0], 2); // mean of 0..5
        assert_eq!(out[1], 7); // mean of 5..11 = 7.5, truncated
    }

    #[test]
    fn slow_rates_interpolate_linearly_and_wrap_for_the_loop() {
        let input = [0, 400, 800, 1200];
        // 4 kHz: every other output sample lies half way, the last between
        // the end and the start of the loop.
        assert_eq!(
            resample(&input, 4000),
            vec![0, 200, 400, 600, 800, 1000, 1200, 600]
        );
    }

    #[test]
    fn unneeded_chunks_and_padding_are_skipped() {
        let samples = [1i16, 2, 3, 4];
        let plain = encode(1, 8000, &samples);
        // RIFF header + fmt chunk, then a LIST chunk of odd size (padded), then data.
        let mut wav = plain[..36].to_vec();
        wav.extend_from_slice(b"LIST");
        wav.extend_from_slice(&3u32.to_le_bytes());
        wav.extend_from_slice(b"abc\0");
        wav.extend_from_slice(&plain[36..]);
        assert_eq!(decode(&wav).unwrap(), samples);
    }

    #[test]
    fn a_data_size_beyond_the_file_uses_what_is_there() {
        let mut wav = encode(1, 8000, &[5, 6, 7]);
        wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        wav.push(0xAA); // half a sample: dropped
        assert_eq!(decode(&wav).unwrap(), [5, 6, 7]);
    }

    #[test]
    fn extensible_pcm_is_accepted() {
        let plain = encode(1, 8000, &[9, 8]);
        let mut wav = plain[..20].to_vec();
        wav[16..20].copy_from_slice(&40u32.to_le_bytes());
        wav.extend_from_slice(&FORMAT_EXTENSIBLE.to_le_bytes());
        wav.extend_from_slice(&plain[22..36]);
        wav.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        wav.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        wav.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        wav.extend_from_slice(&FORMAT_PCM.to_le_bytes()); // sub-format GUID...
        wav.extend_from_slice(&[0; 14]);
        wav.extend_from_slice(&plain[36..]);
        assert_eq!(decode(&wav).unwrap(), [9, 8]);
    }

    #[test]
    fn unsupported_files_say_what_is_wrong() {
        let good = encode(1, 8000, &[0; 16]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello world, not a wav".to_vec(), "no RIFF header"),
            (good[..30].to_vec(), "file ends inside the fmt chunk"),
            (good[..36].to_vec(), "no data chunk"),
            (patch_u16(good.clone(), 20, 3), "is not PCM"),
            (patch_u16(good.clone(), 34, 8), "8-bit samples"),
            (patch_u16(good.clone(), 22, 6), "6 channels"),
            (patch_u16(good.clone(), 32, 4), "block align 4"),
            ([b"RIFX", &good[4..]].concat(), "big-endian"),
        ];
        for (bytes, expected) in cases {
            let err = decode(&bytes).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let mut no_rate = good.clone();
        no_rate[24..28].copy_from_slice(&500u32.to_le_bytes());
        assert!(decode(&no_rate).unwrap_err().contains("500 Hz"));
        let mut empty = encode(1, 8000, &[]);
        empty.truncate(44);
        assert!(decode(&empty).unwrap_err().contains("no samples"));
    }

    #[test]
    fn load_reads_a_file() {
        let dir = std::env::temp_dir().join(format!("baton-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.wav");
        std::fs::write(&path, encode(1, 16_000, &[100, 300, -100, -300])).unwrap();
        let header = probe(&path).unwrap();
        assert_eq!(
            (header.channels, header.rate, header.frames()),
            (1, 16_000, 4)
        );
        assert_eq!(load(&path).unwrap(), [200, -200]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
