//! WAV files as `rtp-audio` sources: RIFF/WAVE with PCM samples of 8, 16,
//! 24 or 32 bits or 32-bit float (also as WAVE_FORMAT_EXTENSIBLE), mono or
//! stereo, at any rate from 1 kHz to 384 kHz, converted once to 8 kHz mono
//! with a deterministic resampler (integer arithmetic), so that every node
//! derives the very same samples from the same file.
//!
//! The `hound` crate reads the format (the fmt chunk: format tags,
//! WAVE_FORMAT_EXTENSIBLE sub-formats, sample sizes and containers) and
//! decodes the samples. What hound 3.5 does not do is done here: finding
//! the chunks, where chunks of odd size are padded to an even one (hound
//! skips no pad byte) and a streamed file's `data` size may be 0xFFFFFFFF or
//! larger than the file (hound refuses such a size, or fails at its end).
//! Hound is then given the fmt chunk as it is and the `data` chunk with the
//! length the file really holds.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use hound::SampleFormat;

/// The rate G.711 streams run at.
pub const RATE: u32 = 8000;

/// Largest `data` chunk read (bytes): 256 MiB, about 23 minutes of 48 kHz
/// stereo. Longer files are cut there.
pub const MAX_DATA: u64 = 256 << 20;

/// The longest fmt chunk read (WAVE_FORMAT_EXTENSIBLE's is 40 bytes).
const MAX_FMT: u64 = 1024;

const FORMAT_PCM: u16 = 1;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
const HOW_TO_CONVERT: &str =
    "convert it with: ffmpeg -i IN -ac 1 -ar 8000 -sample_fmt s16 -c:a pcm_s16le OUT.wav";

/// What the header of a WAV file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub channels: u16,
    /// Samples per second per channel.
    pub rate: u32,
    /// Bits of each sample (8, 16, 24 or 32; 32 for float).
    pub bits: u16,
    /// Whether the samples are IEEE floats (else integers).
    pub float: bool,
    /// Bytes of one frame (one sample of each channel, containers included).
    pub block_align: u16,
    /// Where the sample data starts in the file.
    pub data_offset: u64,
    /// Bytes of whole frames of sample data present in the file.
    pub data_len: u64,
    /// The fmt chunk's body, as the file holds it (for hound).
    fmt: Vec<u8>,
}

impl Header {
    /// Frames (one sample per channel) in the data.
    pub fn frames(&self) -> u64 {
        self.data_len / u64::from(self.block_align)
    }

    /// A WAV file's beginning that hound reads: RIFF and WAVE, the fmt
    /// chunk as it was, and a `data` chunk header of `data_len` bytes
    /// (whole frames, so that hound takes it).
    fn canonical(&self, data_len: u32) -> Vec<u8> {
        let fmt_len = u32::try_from(self.fmt.len()).unwrap_or(u32::MAX);
        let pad = self.fmt.len() % 2;
        let mut out = Vec::with_capacity(28 + self.fmt.len());
        out.extend_from_slice(b"RIFF");
        let riff_len = 4u32
            .saturating_add(8 + fmt_len + pad as u32)
            .saturating_add(8)
            .saturating_add(data_len);
        out.extend_from_slice(&riff_len.to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&fmt_len.to_le_bytes());
        out.extend_from_slice(&self.fmt);
        out.resize(out.len() + pad, 0);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out
    }

    /// The format tag of the fmt chunk, for messages.
    fn tag(&self) -> u16 {
        u16_at(&self.fmt, 0)
    }
}

fn u16_at(bytes: &[u8], i: usize) -> u16 {
    match bytes.get(i..i + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
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
    convert(io::BufReader::new(file), &header)
}

/// Parses a whole WAV file held in memory and converts it to 8 kHz mono.
pub fn decode(bytes: &[u8]) -> Result<Vec<i16>, String> {
    let mut cursor = io::Cursor::new(bytes);
    let header = read_header(&mut cursor)?;
    let start = usize::try_from(header.data_offset).map_err(|_| "too large".to_string())?;
    convert(bytes.get(start..).unwrap_or_default(), &header)
}

/// Walks the RIFF chunks up to `data`, skipping those it does not need
/// (LIST, fact, cue, ...); hound reads the fmt chunk.
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
    let mut format: Option<Header> = None;
    loop {
        let mut chunk = [0u8; 8];
        read_exact(r, &mut chunk, "a chunk header (no data chunk in the file)")?;
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let body = r
            .stream_position()
            .map_err(|e| format!("cannot read: {e}"))?;
        match &chunk[0..4] {
            b"fmt " => {
                if size > MAX_FMT {
                    return Err(format!("fmt chunk too long ({size} bytes)"));
                }
                let mut bytes = vec![0; size as usize];
                read_exact(r, &mut bytes, "the fmt chunk")?;
                format = Some(read_format(bytes)?);
            }
            b"data" => {
                let mut header = format.ok_or("the data chunk comes before the fmt chunk")?;
                // Streamed WAVs carry a size of 0xFFFFFFFF or too large: use
                // what the file holds.
                let len = size.min(file_len.saturating_sub(body));
                header.data_offset = body;
                header.data_len = len - len % u64::from(header.block_align);
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

/// Has hound read the body of the fmt chunk, and checks that the format
/// is one this node plays; the data's place is left for the caller.
fn read_format(fmt: Vec<u8>) -> Result<Header, String> {
    let mut header = Header {
        channels: 0,
        rate: 0,
        bits: 0,
        float: false,
        block_align: 0,
        data_offset: 0,
        data_len: 0,
        fmt,
    };
    let spec = hound::WavReader::new(io::Cursor::new(header.canonical(0)))
        .map_err(|e| hound_error(e, header.tag()))?
        .spec();
    // hound checked that the chunk holds at least 16 bytes and that the
    // block align is consistent with the channels and sample size.
    header.block_align = u16_at(&header.fmt, 12);
    header.channels = spec.channels;
    header.rate = spec.sample_rate;
    header.bits = spec.bits_per_sample;
    header.float = spec.sample_format == SampleFormat::Float;
    let channels = spec.channels;
    let rate = spec.sample_rate;
    if channels != 1 && channels != 2 {
        return Err(format!(
            "{channels} channels; only mono and stereo are supported; {HOW_TO_CONVERT}"
        ));
    }
    let bits_known = if header.float {
        header.bits == 32
    } else {
        matches!(header.bits, 8 | 16 | 24 | 32)
    };
    if !bits_known {
        return Err(format!(
            "{}-bit {} samples; PCM of 8, 16, 24 or 32 bits and 32-bit float are supported; \
             {HOW_TO_CONVERT}",
            header.bits,
            if header.float { "float" } else { "integer" }
        ));
    }
    if !(1000..=384_000).contains(&rate) {
        return Err(format!(
            "sample rate {rate} Hz out of range 1000..384000; {HOW_TO_CONVERT}"
        ));
    }
    if header.block_align == 0 {
        return Err(format!("block align 0; {HOW_TO_CONVERT}"));
    }
    Ok(header)
}

/// A hound error in words for the person who picked the file; `tag` is the
/// fmt chunk's format tag.
fn hound_error(error: hound::Error, tag: u16) -> String {
    match error {
        hound::Error::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            "file ends inside a sample".into()
        }
        hound::Error::IoError(e) => format!("cannot read: {e}"),
        hound::Error::FormatError(why) => {
            format!("not a valid WAV file: {why}; {HOW_TO_CONVERT}")
        }
        hound::Error::Unsupported if tag == FORMAT_EXTENSIBLE => format!(
            "WAVE_FORMAT_EXTENSIBLE with a sub-format other than PCM or float, or a sample \
             size other than 8, 16, 24 or 32 bits; {HOW_TO_CONVERT}"
        ),
        hound::Error::Unsupported if tag == FORMAT_PCM => {
            format!("a sample size other than 8, 16, 24 or 32 bits; {HOW_TO_CONVERT}")
        }
        hound::Error::Unsupported => format!(
            "format tag {tag:#06x} is not supported (compressed WAV; PCM and float are); \
             {HOW_TO_CONVERT}"
        ),
        other => format!("{other}; {HOW_TO_CONVERT}"),
    }
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("file ends inside {what}"),
        _ => format!("cannot read {what}: {e}"),
    })
}

/// The sample data (from the start of the `data` chunk) to 8 kHz mono:
/// hound decodes the samples, each is brought to 16 bits (integers by a
/// shift, floats scaled by 32768 and rounded), the channels are mixed, then
/// [`resample`]d.
fn convert<R: Read>(data: R, header: &Header) -> Result<Vec<i16>, String> {
    let block = u64::from(header.block_align);
    let len = header.data_len.min(MAX_DATA - MAX_DATA % block);
    let len32 = u32::try_from(len).map_err(|_| "too large".to_string())?;
    let stream = io::Cursor::new(header.canonical(len32)).chain(data.take(len));
    let mut reader = hound::WavReader::new(stream).map_err(|e| hound_error(e, header.tag()))?;
    let err = |e| hound_error(e, header.tag());
    let samples: Vec<i32> = if header.float {
        reader
            .samples::<f32>()
            .map(|s| s.map(float_to_16))
            .collect::<Result<_, _>>()
            .map_err(err)?
    } else {
        let bits = header.bits;
        reader
            .samples::<i32>()
            .map(|s| s.map(|v| int_to_16(v, bits)))
            .collect::<Result<_, _>>()
            .map_err(err)?
    };
    let channels = usize::from(header.channels);
    let mono: Vec<i32> = samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<i32>() >> (channels - 1))
        .collect();
    let out = resample(&mono, header.rate);
    if out.is_empty() {
        return Err("too short: less than one sample at 8 kHz".into());
    }
    Ok(out)
}

/// An integer sample of `bits` bits at 16 bits: the top 16 bits of wider
/// ones (an arithmetic shift), narrower ones shifted up.
fn int_to_16(v: i32, bits: u16) -> i32 {
    if bits >= 16 {
        v >> (bits - 16)
    } else {
        v << (16 - bits)
    }
}

/// A float sample (full scale ±1.0) at 16 bits, rounded to nearest and
/// clamped; NaN is 0. IEEE arithmetic: the same on every machine.
fn float_to_16(v: f32) -> i32 {
    if v.is_nan() {
        return 0;
    }
    (f64::from(v) * 32768.0)
        .round()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i32
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

    /// The sub-format GUID of WAVE_FORMAT_EXTENSIBLE for a format tag (PCM:
    /// 1, float: 3).
    fn guid(tag: u16) -> [u8; 16] {
        let mut g = [
            0, 0, 0, 0, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71,
        ];
        g[..2].copy_from_slice(&tag.to_le_bytes());
        g
    }

    /// A WAV file of any format: `extensible` wraps `tag` in
    /// WAVE_FORMAT_EXTENSIBLE; `container` is the bytes of one sample.
    fn wav(
        tag: u16,
        extensible: bool,
        channels: u16,
        bits: u16,
        container: u16,
        data: &[u8],
    ) -> Vec<u8> {
        let rate = 8000u32;
        let block = container * channels;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&(if extensible { FORMAT_EXTENSIBLE } else { tag }).to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&(container * 8).to_le_bytes());
        if extensible {
            fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
            fmt.extend_from_slice(&bits.to_le_bytes()); // valid bits
            fmt.extend_from_slice(&4u32.to_le_bytes()); // channel mask
            fmt.extend_from_slice(&guid(tag));
        }
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&((20 + fmt.len() + data.len()) as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(&fmt);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

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
    fn every_sample_format_gives_the_same_16_bit_samples() {
        // Full scale, zero, and values whose low bits the wider formats
        // carry beyond 16 bits (cut off by the shift, never rounded up).
        let expected: [i16; 5] = [i16::MIN, -256, 0, 256, i16::MAX - 255];
        let bytes =
            |f: &dyn Fn(i16) -> Vec<u8>| expected.iter().flat_map(|&s| f(s)).collect::<Vec<u8>>();
        let u8_pcm = bytes(&|s| vec![((s >> 8) as i8 as u8) ^ 0x80]);
        let i16_pcm = bytes(&|s| s.to_le_bytes().to_vec());
        let i24_pcm = bytes(&|s| ((i32::from(s) << 8) | 0x7f).to_le_bytes()[..3].to_vec());
        let i32_pcm = bytes(&|s| ((i32::from(s) << 16) | 0x7fff).to_le_bytes().to_vec());
        let i24_in_32 = bytes(&|s| ((i32::from(s) << 8) | 0x7f).to_le_bytes().to_vec());
        let float = bytes(&|s| (f32::from(s) / 32768.0).to_le_bytes().to_vec());
        let cases = [
            ("8-bit", wav(1, false, 1, 8, 1, &u8_pcm)),
            ("16-bit", wav(1, false, 1, 16, 2, &i16_pcm)),
            ("24-bit", wav(1, false, 1, 24, 3, &i24_pcm)),
            ("32-bit", wav(1, false, 1, 32, 4, &i32_pcm)),
            ("float", wav(3, false, 1, 32, 4, &float)),
            ("extensible 16-bit", wav(1, true, 1, 16, 2, &i16_pcm)),
            ("extensible 24-bit", wav(1, true, 1, 24, 3, &i24_pcm)),
            ("extensible 24 in 32", wav(1, true, 1, 24, 4, &i24_in_32)),
            ("extensible float", wav(3, true, 1, 32, 4, &float)),
        ];
        for (what, file) in cases {
            let header = read_header(&mut io::Cursor::new(&file)).unwrap();
            assert_eq!(header.frames(), 5, "{what}");
            assert_eq!(decode(&file).unwrap(), expected, "{what}");
        }
        // Floats beyond full scale are clamped, rounded to nearest, NaN is 0.
        let loud: Vec<u8> = [2.0f32, -2.0, 0.5 / 32768.0, f32::NAN]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert_eq!(
            decode(&wav(3, false, 1, 32, 4, &loud)).unwrap(),
            [i16::MAX, i16::MIN, 1, 0]
        );
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
        // Stereo: half a frame is dropped too.
        let mut wav = encode(2, 8000, &[5, 7, 9, 11, 13]);
        wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&wav).unwrap(), [6, 10]);
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
        wav.extend_from_slice(&guid(FORMAT_PCM)); // sub-format
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
            (
                patch_u16(good.clone(), 20, 0x55),
                "format tag 0x0055 is not supported",
            ),
            (
                patch_u16(good.clone(), 20, 2),
                "format tag 0x0002 is not supported",
            ),
            (
                patch_u16(good.clone(), 34, 12),
                "bits per sample is not a multiple of 8",
            ),
            (encode(6, 8000, &[0; 12]), "6 channels"),
            (patch_u16(good.clone(), 32, 4), "inconsistent fmt chunk"),
            ([b"RIFX", &good[4..]].concat(), "big-endian"),
            (encode(1, 500, &[0; 16]), "500 Hz"),
            (
                patch_u16(wav(3, false, 1, 32, 4, &[0; 8]), 34, 64),
                "sample bits exceeds size of sample",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode(&bytes).unwrap_err();
            assert!(
                err.to_lowercase().contains(&expected.to_lowercase()),
                "{err:?} lacks {expected:?}"
            );
        }
        let mut empty = encode(1, 8000, &[]);
        empty.truncate(44);
        assert!(decode(&empty).unwrap_err().contains("no samples"));
    }

    #[test]
    fn headers_hound_rejects_are_errors_that_say_so() {
        let good = wav(1, true, 1, 16, 2, &[0; 32]);
        let fmt_len = |mut w: Vec<u8>, len: u32| {
            w[16..20].copy_from_slice(&len.to_le_bytes());
            w
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // An extensible fmt chunk cut to a plain one's 18 bytes: the
            // rest reads as chunks, but hound refuses the size first.
            (
                fmt_len(good.clone(), 18),
                "not a valid WAV file: unexpected fmt chunk size",
            ),
            // A fmt chunk shorter than any format's.
            (
                fmt_len(good.clone(), 14),
                "not a valid WAV file: invalid fmt chunk size",
            ),
            (
                patch_u16(good.clone(), 22, 0),
                "not a valid WAV file: file contains zero channels",
            ),
            // cbSize other than 22.
            (
                patch_u16(good.clone(), 36, 20),
                "unexpected WAVEFORMATEXTENSIBLE size",
            ),
            // A sub-format that is neither PCM nor float (A-law).
            (
                {
                    let mut w = good.clone();
                    w[44..46].copy_from_slice(&6u16.to_le_bytes());
                    w
                },
                "sub-format other than PCM or float",
            ),
            // 20 valid bits in a 3-byte container.
            (patch_u16(good.clone(), 38, 20), "20-bit integer samples"),
            // A float that is not 32 bits.
            (
                patch_u16(wav(3, false, 1, 32, 4, &[0; 8]), 34, 16),
                "bits per sample is not 32",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode(&bytes).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        // Every truncation of a valid file is an error or, once some
        // samples are there, what they give; never a panic.
        let file = wav(1, true, 2, 24, 3, &[7; 60]);
        for len in 0..file.len() {
            match decode(&file[..len]) {
                Ok(samples) => assert!(len > 68 && !samples.is_empty(), "{len}"),
                Err(e) => assert!(!e.is_empty(), "{len}"),
            }
        }
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
