//! Fuzzing entry points: each takes arbitrary bytes, drives one decoder or
//! state machine that handles untrusted input with them, and panics only if
//! that code breaks a rule it promises (it may never panic by itself).
//!
//! Two harnesses run them. `protocol/fuzz` wraps each in a libFuzzer target
//! for coverage-guided runs on a nightly toolchain (`cargo +nightly fuzz run
//! <target>`); [`run_bounded`] is a small mutational fuzzer on the stable
//! toolchain that CI runs for a bounded time against seed inputs, so that the
//! targets themselves never rot. docs/evaluation.md records exec counts.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::NodeId;
use crate::datagram::{Opener, Sealer};
use crate::map::{self, LocalKey, Map};
use crate::meta::NodeMeta;
use crate::session::Signer as _;
use crate::sessions::{self, AppMessage, Engine};
use crate::swim::{self, State, Swim};
use crate::{peering, wire};

/// Splits `data` into frames: `[len, bytes...]` repeated, each up to 255
/// bytes, plus a leading control byte per frame handed to `each`.
fn frames(data: &[u8], mut each: impl FnMut(u8, &[u8])) {
    let mut rest = data;
    while rest.len() >= 2 {
        let (control, len) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let frame = &rest[..len.min(rest.len())];
        rest = &rest[frame.len()..];
        each(control, frame);
    }
}

/// The compact SWIM codec: whatever decodes re-encodes to bytes that decode
/// to the same message (short references resolved alike).
pub fn wire_decode(data: &[u8]) {
    let known = NodeId::synthetic(1);
    let short = known.short();
    let resolve = move |s: u64| (s == short).then(|| NodeId::synthetic(1));
    if let Ok(decoded) = wire::decode(data, &resolve) {
        let again = wire::encode(&decoded.message, &decoded.app);
        let back = wire::decode(&again, &resolve).expect("a re-encoded message decodes");
        assert_eq!(back.message, decoded.message, "round trip");
        assert_eq!(back.app, decoded.app, "round trip of payloads");
    }
}

/// Every other decoder of peer bytes: the admission handshake, metadata,
/// deltas, map-sync messages and application payloads. None may panic.
pub fn decoders(data: &[u8]) {
    let _ = peering::decode(data);
    let _ = NodeMeta::decode(data);
    let _ = map::Delta::decode(data);
    let _ = map::SyncMessage::decode(data);
    let _ = AppMessage::decode(data);
}

/// One node's SWIM state machine fed decoded messages from a handful of
/// senders, time advancing between them: no panic, never a message to
/// itself, never itself a member, the probe round always armed.
pub fn swim_input(data: &[u8]) {
    let mut now = Instant::now();
    let me = NodeId::synthetic(0);
    let mut swim = Swim::new(
        me.clone(),
        Vec::new(),
        swim::Config::lan(),
        SmallRng::seed_from_u64(0),
        now,
    );
    let resolve = |s: u64| (1..8).map(NodeId::synthetic).find(|id| id.short() == s);
    frames(data, |control, frame| {
        now += Duration::from_millis(u64::from(control) * 4);
        swim.handle_timeout(now);
        if let Ok(decoded) = wire::decode(frame, &resolve) {
            let from = NodeId::synthetic(u32::from(control % 7) + 1);
            swim.handle_message(now, from, decoded.message);
        }
        while let Some(t) = swim.poll_transmit() {
            assert_ne!(t.to, me, "a node never sends to itself");
        }
        while swim.poll_event().is_some() {}
        assert!(swim.member(&me).is_none(), "a node is never its own member");
        assert!(swim.poll_timeout().is_some(), "the probe round is armed");
    });
}

/// The session map fed decoded deltas and sync records: no panic, and
/// whatever becomes current passes the one-hop check.
pub fn map_apply(data: &[u8]) {
    let mut map = Map::new(map::Config::default());
    let mut now_ms = 1_000;
    frames(data, |control, frame| {
        now_ms += u64::from(control) * 1_000;
        let deltas = match map::SyncMessage::decode(frame) {
            Ok(map::SyncMessage::Records(deltas)) => deltas,
            _ => map::Delta::decode(frame).into_iter().collect(),
        };
        for delta in deltas {
            let _ = map.apply(delta, now_ms);
        }
        if control & 0x80 != 0 {
            map.gc(now_ms);
        }
    });
    for d in map.deltas() {
        assert!(map::check(d).is_ok(), "only legitimate versions are held");
    }
}

/// A session engine with two live members fed application payloads (deltas,
/// performance summaries, reports, closes) and membership changes.
pub fn engine_app(data: &[u8]) {
    let now = Instant::now();
    let key = LocalKey::from_seed([1; 32]);
    let mut engine = Engine::new(key, 10, sessions::Config::default(), now, 0);
    let peers: Vec<NodeId> = (2..4)
        .map(|i| LocalKey::from_seed([i; 32]).id().clone())
        .collect();
    let meta = NodeMeta {
        capacity: 10,
        ..NodeMeta::default()
    };
    for p in &peers {
        engine.handle_member(now, p.clone(), State::Alive, Some(&meta), None);
    }
    let mut at = now;
    let mut now_ms = 1_700_000_000_000;
    frames(data, |control, frame| {
        at += Duration::from_millis(u64::from(control) * 8);
        now_ms += u64::from(control) * 8;
        match control % 16 {
            0 => {
                let p = &peers[usize::from(control >> 4) % peers.len()];
                engine.handle_member(at, p.clone(), State::Dead, None, None);
            }
            1 => {
                let p = &peers[usize::from(control >> 4) % peers.len()];
                engine.handle_member(at, p.clone(), State::Alive, Some(&meta), None);
            }
            _ => {
                if let Ok(message) = AppMessage::decode(frame) {
                    engine.handle_app_message(at, now_ms, message, frame);
                }
            }
        }
        engine.handle_timeout(at, now_ms);
        while engine.poll_action().is_some() {}
    });
}

/// Sealed datagrams: an opener never accepts what its sealer did not seal,
/// never accepts one twice, and whatever it opens is what was sealed.
pub fn datagram_open(data: &[u8]) {
    let key = [7u8; 32];
    let mut sealer = Sealer::new(&key, 9);
    let mut opener = Opener::new(&key);
    let mut sealed = Vec::new();
    frames(data, |control, frame| match control % 4 {
        0 => {
            if let Some(d) = sealer.seal(frame) {
                sealed.push((d, frame.to_vec()));
            }
        }
        1 => {
            // A genuine datagram, perhaps delivered again.
            if let Some((d, plain)) = sealed.get(usize::from(control >> 2) % sealed.len().max(1))
                && let Ok(opened) = opener.open(d)
            {
                assert_eq!(&opened, plain, "opened what was sealed");
            }
        }
        2 => {
            // A genuine datagram with bytes flipped: never accepted.
            if let Some((d, _)) = sealed.last() {
                let mut bad = d.clone();
                for (i, b) in frame.iter().enumerate() {
                    let at = i % bad.len();
                    bad[at] ^= b;
                }
                if bad != *d {
                    assert!(opener.open(&bad).is_err(), "a forged datagram opened");
                }
            }
        }
        _ => assert!(
            sealed.iter().any(|(d, _)| d == frame) || opener.open(frame).is_err(),
            "bytes nobody sealed opened"
        ),
    });
    // Nothing opens twice.
    let mut seen = std::collections::BTreeSet::new();
    for (d, _) in &sealed {
        if seen.insert(d.clone()) && opener.open(d).is_ok() {
            assert!(opener.open(d).is_err(), "a replay opened");
        }
    }
}

/// Runs `target` for `budget` on mutations of `seeds` (and on random bytes):
/// bit flips, byte changes, insertions, deletions, truncations, splices and
/// duplicated runs, the mutations of AFL's havoc stage without coverage
/// feedback. Returns how many inputs ran. A panic in `target` propagates,
/// after the failing input is printed in hex so it can be replayed.
pub fn run_bounded(target: fn(&[u8]), seeds: &[Vec<u8>], budget: Duration, seed: u64) -> u64 {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut execs = 0u64;
    let mut input = Vec::new();
    while start.elapsed() < budget {
        input.clear();
        if seeds.is_empty() || rng.random_ratio(1, 16) {
            let len = rng.random_range(0..512);
            input.extend((0..len).map(|_| rng.random::<u8>()));
        } else {
            input.extend_from_slice(&seeds[rng.random_range(0..seeds.len())]);
            for _ in 0..rng.random_range(1..=8) {
                mutate(&mut rng, &mut input, seeds);
            }
        }
        let result = std::panic::catch_unwind(|| target(&input));
        if let Err(panic) = result {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("fuzz input that failed ({} bytes): {hex}", input.len());
            std::panic::resume_unwind(panic);
        }
        execs += 1;
    }
    execs
}

fn mutate(rng: &mut SmallRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xfe, 0xff, 0x10, 0x40];
    let len = input.len();
    match rng.random_range(0..8) {
        0 if len > 0 => {
            let at = rng.random_range(0..len);
            input[at] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let at = rng.random_range(0..len);
            input[at] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        2 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..16);
            for _ in 0..n {
                input.insert(at, rng.random());
            }
        }
        3 if len > 0 => {
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - at).min(16));
            input.drain(at..at + n);
        }
        4 if len > 0 => input.truncate(rng.random_range(0..len)),
        5 if !seeds.is_empty() => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() {
                let from = rng.random_range(0..other.len());
                let at = rng.random_range(0..=len);
                let tail: Vec<u8> = input.split_off(at);
                input.extend_from_slice(&other[from..]);
                input.extend_from_slice(&tail[..tail.len().min(64)]);
            }
        }
        6 if len > 0 => {
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - at).min(32));
            let run = input[at..at + n].to_vec();
            let to = rng.random_range(0..=input.len());
            input.splice(to..to, run);
        }
        _ if len >= 2 => {
            let at = rng.random_range(0..len - 1);
            let word = rng.random::<u16>().to_be_bytes();
            input[at..at + 2].copy_from_slice(&word);
        }
        _ => input.push(rng.random()),
    }
    input.truncate(4096);
}
