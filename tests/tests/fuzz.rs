//! Bounded fuzzing on the stable toolchain: every fuzz target of the
//! protocol and the node runs for `BATON_FUZZ_SECS` seconds (3 by default)
//! on mutations of valid inputs, so that a decoder or state machine that
//! panics on hostile bytes fails CI. Longer, coverage-guided runs use the
//! libFuzzer targets in `protocol/fuzz` (docs/evaluation.md has their exec
//! counts).

use std::collections::BTreeMap;
use std::time::Duration;

use baton_protocol::NodeId;
use baton_protocol::fuzz::{self, run_bounded};
use baton_protocol::map::{self, LocalKey, Map, NewSession};
use baton_protocol::meta::NodeMeta;
use baton_protocol::peering::{self, Hello};
use baton_protocol::sessions::AppMessage;
use baton_protocol::wire::{self, Ack, Gossip, Message, Ping, PingReq, Sync, Update};

fn budget() -> Duration {
    let secs = std::env::var("BATON_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

fn run(name: &str, target: fn(&[u8]), seeds: &[Vec<u8>]) {
    let execs = run_bounded(target, seeds, budget(), 0x5eed);
    println!("fuzz {name}: {execs} inputs in {:?}", budget());
    assert!(execs > 100, "the target ran only {execs} times");
}

/// Frames as the stateful targets read them: `[control, len, bytes...]`.
fn framed(parts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (control, bytes) in parts {
        let bytes = &bytes[..bytes.len().min(255)];
        out.push(*control);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out
}

fn messages() -> Vec<Vec<u8>> {
    let a = NodeId::synthetic(1);
    let b = NodeId::synthetic(2);
    let updates = vec![
        Update::Alive {
            id: a.clone(),
            incarnation: 3,
            meta: NodeMeta::default().encode(),
        },
        Update::Suspect {
            id: b.clone(),
            incarnation: 1,
            from: a.clone(),
        },
        Update::Dead {
            id: b.clone(),
            incarnation: 2,
            from: a.clone(),
        },
        Update::Left {
            id: a.clone(),
            incarnation: 4,
        },
    ];
    let messages = [
        Message::Ping(Ping {
            seq: 7,
            want_coord: true,
            updates: updates.clone(),
        }),
        Message::PingReq(PingReq {
            seq: 8,
            target: b.clone(),
            updates: vec![],
        }),
        Message::Ack(Ack {
            seq: 7,
            coord: None,
            updates: updates.clone(),
        }),
        Message::Gossip(Gossip { updates }),
        Message::Sync(Sync {
            digest: 42,
            updates: vec![],
            reply: true,
        }),
    ];
    let app = vec![AppMessage::Root(9).encode()];
    messages
        .iter()
        .flat_map(|m| [wire::encode(m, &[]), wire::encode(m, &app)])
        .collect()
}

fn deltas() -> Vec<map::Delta> {
    let a = LocalKey::from_seed([1; 32]);
    let b = LocalKey::from_seed([2; 32]);
    let mut m = Map::new(map::Config::default());
    let open = m
        .open(
            &a,
            NewSession {
                id: "s1".into(),
                service: "rtp-audio".into(),
                params: BTreeMap::from([("source".into(), "tone:440".into())]),
                client: "198.18.2.1:5004".into(),
                location: "198.18.2.0/24".into(),
                backups: vec![baton_protocol::session::Signer::id(&b).clone()],
            },
            1_000,
        )
        .expect("open");
    let mut backup = Map::new(map::Config::default());
    backup.apply(open.clone(), 1_000).expect("apply");
    let claim = backup
        .claim(&b, "s1", "takeover", vec![], 2_000)
        .expect("claim");
    let close = backup.close(&b, "s1", 3_000).expect("close");
    vec![open, claim, close]
}

#[test]
fn wire_decode() {
    run("wire_decode", fuzz::wire_decode, &messages());
}

#[test]
fn decoders() {
    let mut seeds: Vec<Vec<u8>> = deltas().iter().map(|d| d.encode()).collect();
    seeds.extend(
        map::SyncMessage::records(deltas())
            .iter()
            .map(|m| m.encode()),
    );
    seeds.push(map::SyncMessage::Digest(Map::new(map::Config::default()).digest()).encode());
    seeds.push(NodeMeta::default().encode());
    seeds.push(peering::encode(&Hello::Done));
    seeds.push(peering::encode(&Hello::Refused {
        reason: "no".into(),
    }));
    seeds.extend(
        deltas()
            .into_iter()
            .map(|d| AppMessage::Delta(Box::new(d)).encode()),
    );
    run("decoders", fuzz::decoders, &seeds);
}

#[test]
fn swim_input() {
    let m = messages();
    let seeds: Vec<Vec<u8>> = (0..4u8)
        .map(|i| framed(&m.iter().map(|b| (i * 37, b.clone())).collect::<Vec<_>>()))
        .collect();
    run("swim_input", fuzz::swim_input, &seeds);
}

#[test]
fn map_apply() {
    let d = deltas();
    let seeds = vec![
        framed(&d.iter().map(|d| (1, d.encode())).collect::<Vec<_>>()),
        framed(
            &d.iter()
                .rev()
                .map(|d| (0x81, d.encode()))
                .collect::<Vec<_>>(),
        ),
        framed(
            &map::SyncMessage::records(d)
                .iter()
                .map(|m| (2, m.encode()))
                .collect::<Vec<_>>(),
        ),
    ];
    run("map_apply", fuzz::map_apply, &seeds);
}

#[test]
fn engine_app() {
    let d = deltas();
    let mut parts: Vec<(u8, Vec<u8>)> = d
        .into_iter()
        .map(|d| (2, AppMessage::Delta(Box::new(d)).encode()))
        .collect();
    parts.push((
        3,
        AppMessage::Report {
            id: "s1".into(),
            loss_permille: 100,
            jitter_ms: 5,
            rtt_ms: 40,
            packets: 45,
        }
        .encode(),
    ));
    parts.push((
        3,
        AppMessage::Vouch {
            id: "s1".into(),
            age_ms: 1200,
        }
        .encode(),
    ));
    parts.push((0x10, Vec::new()));
    parts.push((0x11, Vec::new()));
    run("engine_app", fuzz::engine_app, &[framed(&parts)]);
}

#[test]
fn datagram_open() {
    let seeds = vec![
        framed(&[
            (0, b"hello".to_vec()),
            (1, vec![]),
            (5, vec![]),
            (2, vec![1]),
            (3, vec![0; 30]),
        ]),
        framed(&[
            (0, vec![9; 100]),
            (0, vec![8; 3]),
            (9, vec![]),
            (13, vec![]),
        ]),
    ];
    run("datagram_open", fuzz::datagram_open, &seeds);
}

#[test]
fn rtcp() {
    // A receiver report (PT 201) with one block, and an SR (PT 200) with one.
    let block = [
        0, 0, 0, 1, // ssrc
        25, 0, 0, 3, // fraction lost, cumulative lost
        0, 0, 1, 0, // highest seq
        0, 0, 0, 40, // jitter
        0x12, 0x34, 0x56, 0x78, // lsr
        0, 1, 0, 0, // dlsr
    ];
    let mut rr = vec![0x81, 201, 0, 7, 0xde, 0xad, 0xbe, 0xef];
    rr.extend_from_slice(&block);
    let mut sr = vec![0x81, 200, 0, 12, 0xde, 0xad, 0xbe, 0xef];
    sr.extend_from_slice(&[0; 20]);
    sr.extend_from_slice(&block);
    let compound = [rr.clone(), sr.clone()].concat();
    run("rtcp", baton_node::fuzz::rtcp, &[rr, sr, compound]);
}

#[test]
fn api_request() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"service": "rtp-audio", "client": "198.18.2.1:5004", "params": {"source": "tone:440"}}"#,
        r#"{"loss": 0.02, "jitter_ms": 4.0, "rtt_ms": 30.0, "packets": 500}"#,
        r#"{"service": "", "params": {"a": 1}}"#,
        r#"[1, 2, {"x": null}]"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("api_request", baton_node::fuzz::api_request, &seeds);
}

#[test]
fn template() {
    let seeds: Vec<Vec<u8>> = [
        "ffmpeg -re -i {input} -f rtp 'rtp://{client_host}:{client_port}'\nin.wav\n198.18.2.1\n5004",
        "sh -c \"echo {session}\" x{a}y{b}\n..\n/etc\nhttp://x",
        "prog \\{x\\} \"{y}\"\n\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("template", baton_node::fuzz::template, &seeds);
}

#[test]
fn exec_values() {
    let seeds: Vec<Vec<u8>> = [
        "clip-1\n64\nfr\nx=1",
        "..\n/1\nfile:/etc/passwd\n-x",
        "a.b\n0\nhttp://x/y\nC:x",
        ".h\n99999999999999999999\nrtp://1.2.3.4:5\nab/../c",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("exec_values", baton_node::fuzz::exec_values, &seeds);
}

/// The harness finds what it should: a planted bug two mutations away from
/// a seed makes it fail, so a green run means something.
#[test]
fn the_harness_finds_a_planted_bug() {
    fn planted(data: &[u8]) {
        assert!(
            !data.windows(3).any(|w| w == [0xba, 0x70, 0x4e]),
            "planted bug"
        );
    }
    let found = std::panic::catch_unwind(|| {
        run_bounded(
            planted,
            &[vec![0xba, 0x70, 0x00, 1, 2, 3]],
            Duration::from_secs(20),
            1,
        )
    });
    assert!(found.is_err(), "the planted bug was not found in 20 s");
}
