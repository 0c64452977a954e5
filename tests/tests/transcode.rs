//! In-process, with ffmpeg as the source: three real nodes run the
//! `transcode` template of docs/operations.md (ffmpeg behind the RTP gate)
//! for a session whose source is a slow frequency sweep, so that the audio
//! a client hears tells the position in the source. Its primary is killed,
//! with a warm standby on the first backup (its ffmpeg runs, its gate
//! closed) or cold (ffmpeg starts at the takeover, seeking to
//! `{elapsed_s}`); the client must hear one SSRC throughout, and the audio
//! must go on from the session's position, not start the source again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use baton_node::Node;
use baton_node::service::{g711, wav};
use baton_node::state::SessionCommand;
use baton_protocol::stream::Ids;
use baton_testnet::rtp_receiver::{Arrival, RtpReceiver};
use baton_tests::{TempDir, dial_addr, eventually, loopback_config};
use tokio::sync::oneshot;

/// The sweep: `F0 + RATE t` Hz at `t` seconds into the source.
const F0: f64 = 300.0;
const RATE: f64 = 50.0;
/// Long enough for the test, short of 4 kHz at its end (3 300 Hz).
const SOURCE_S: u32 = 60;
/// Packets per window in which a frequency is measured (200 ms).
const WINDOW: usize = 10;

/// Whether ffmpeg runs here; in CI its absence fails the test.
fn ffmpeg_available() -> bool {
    let ok = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("ffmpeg is missing: CI installs it (.ci/run, Debian package ffmpeg)");
    }
    if !ok {
        eprintln!("skipped: ffmpeg is not installed (apt-get install ffmpeg)");
    }
    ok
}

/// The sweep, 8 kHz mono.
fn sweep() -> Vec<i16> {
    (0..SOURCE_S * 8000)
        .map(|n| {
            let t = f64::from(n) / 8000.0;
            let phase = std::f64::consts::TAU * (F0 * t + RATE * t * t / 2.0);
            (phase.sin() * 12_000.0) as i16
        })
        .collect()
}

/// The position in the source (s) whose sweep frequency is that of
/// `samples`, by counting their zero crossings.
fn position_of(samples: &[i16]) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    let hz = crossings as f64 / 2.0 / (samples.len() as f64 / 8000.0);
    (hz - F0) / RATE
}

/// The `transcode` template as docs/operations.md ships it.
fn shipped_template() -> String {
    let doc = include_str!("../../docs/operations.md");
    let start = doc
        .find("[services.exec.transcode]\n")
        .expect("docs/operations.md ships a transcode template");
    let block = &doc[start..];
    let end = block
        .find("\n\n")
        .expect("the template ends with a blank line");
    block[..end].to_string()
}

async fn start(
    name: &str,
    dir: &TempDir,
    media: &std::path::Path,
    standby: &str,
    extra: &[&str],
) -> Node {
    let config = dir.0.join("batond.toml");
    std::fs::write(
        &config,
        format!(
            "[services]\nmedia_dir = {:?}\n{}\n[sessions]\nstandby = {standby:?}\n",
            media.display().to_string(),
            shipped_template()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut flags = vec!["--config", &config];
    flags.extend(extra);
    Node::start(loopback_config(name, &dir.0.join("data"), &flags))
        .await
        .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcoded_session_goes_on_from_its_position_after_its_primary_is_killed_warm() {
    kill_the_primary("warm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcoded_session_goes_on_from_its_position_after_its_primary_is_killed_cold() {
    kill_the_primary("cold").await;
}

async fn kill_the_primary(standby: &str) {
    if !ffmpeg_available() {
        return;
    }
    let media = TempDir::new("transcode-media");
    std::fs::write(media.0.join("sweep.wav"), wav::encode(1, 8000, &sweep())).unwrap();
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("transcode-{i}")))
        .collect();
    let first = start("t0", &dirs[0], &media.0, standby, &[]).await;
    let seed = dial_addr(&first).await;
    let mut nodes = vec![first];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let name = format!("t{i}");
        nodes.push(start(&name, dir, &media.0, standby, &["--bootstrap", &seed]).await);
    }
    let converged = eventually(Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            n.shared
                .members
                .iter()
                .filter(|m| m.state == "alive")
                .count()
                == 2
        })
    })
    .await;
    assert!(converged, "membership converges");

    let receiver = RtpReceiver::bind("127.0.0.1:0").expect("bind receiver");
    let (reply, answer) = oneshot::channel();
    nodes[0]
        .shared
        .commands
        .send(SessionCommand::Open {
            service: "exec".into(),
            client: receiver.local_addr().to_string(),
            params: BTreeMap::from([
                ("template".to_string(), "transcode".to_string()),
                ("input".to_string(), "sweep.wav".to_string()),
            ]),
            reply,
        })
        .await
        .expect("driver runs");
    let view = answer
        .await
        .expect("driver answers")
        .expect("session opens");
    let id = view.id.clone();
    let record = |n: &Node| {
        n.shared
            .sessions
            .get(&id)
            .map(|s| (s.primary.clone(), s.epoch))
    };
    assert!(
        eventually(Duration::from_secs(10), || nodes
            .iter()
            .all(|n| record(n).is_some()))
        .await,
        "the session reaches every node"
    );
    let (primary, epoch) = record(&nodes[0]).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || receiver.len() >= 200).await,
        "the primary's ffmpeg streams through its gate"
    );
    let backup = nodes[0].shared.sessions.get(&id).unwrap().backups[0].clone();
    let warm = nodes
        .iter()
        .find(|n| n.peer_id.to_base58() == backup)
        .expect("the first backup is one of ours");
    assert_eq!(
        eventually(Duration::from_secs(5), || warm
            .shared
            .sessions
            .get(&id)
            .is_some_and(|s| s.standby_here))
        .await,
        standby == "warm",
        "the first backup stands by warm, if asked to"
    );

    let victim = nodes
        .iter()
        .position(|n| n.peer_id.to_base58() == primary)
        .expect("the primary is one of ours");
    let killed_at = Instant::now();
    nodes.remove(victim).kill();
    let taken_over = eventually(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| record(n).is_some_and(|(p, e)| p != primary && e > epoch))
    })
    .await;
    assert!(taken_over, "a survivor takes the session over");
    let before = receiver.len();
    assert!(
        eventually(Duration::from_secs(10), || receiver.len() >= before + 200).await,
        "the stream resumes from the new primary"
    );

    let report = receiver.report(..);
    eprintln!(
        "transcode takeover, {standby}: gap {:.0} ms, lost {}, ssrcs {:?}, sources {:?}, {:?} after the kill",
        report.longest_gap_ms,
        report.lost,
        report.ssrcs,
        report.sources,
        killed_at.elapsed()
    );
    let ids = Ids::derive(&id);
    assert_eq!(report.ssrcs, [ids.ssrc], "one stream, the session's SSRC");
    assert_eq!(report.sources.len(), 2, "sent by two clusters");
    assert_eq!(report.mismatched_duplicates, 0);

    // The position the audio tells, against the time its sequence number
    // says, window by window of consecutive packets, on each side of the
    // takeover.
    let arrivals = receiver.arrivals();
    let first_source = arrivals[0].from;
    let mut by_k: BTreeMap<u64, &Arrival> = BTreeMap::new();
    for a in &arrivals {
        by_k.entry(u64::from(a.seq.wrapping_sub(ids.seq0)))
            .or_insert(a);
    }
    let mut offsets: HashMap<bool, Vec<(u64, f64)>> = HashMap::new();
    let ks: Vec<u64> = by_k.keys().copied().collect();
    for run in ks.chunks_exact(WINDOW) {
        let contiguous = run.windows(2).all(|w| w[1] == w[0] + 1);
        let one_source = run.iter().all(|k| by_k[k].from == by_k[&run[0]].from);
        if !contiguous || !one_source {
            continue;
        }
        let samples: Vec<i16> = run
            .iter()
            .flat_map(|k| by_k[k].payload.iter().map(|&c| g711::decode(c)))
            .collect();
        let heard = position_of(&samples);
        let due = (run[0] as f64 + WINDOW as f64 / 2.0) * 0.02;
        let taken_over = by_k[&run[0]].from != first_source;
        offsets
            .entry(taken_over)
            .or_default()
            .push((run[0], heard - due));
    }
    for taken_over in [false, true] {
        let side = offsets.get(&taken_over).map_or(&[][..], Vec::as_slice);
        eprintln!("taken over {taken_over}: (k, position - time) {side:.2?}");
        assert!(side.len() >= 10, "enough audio on each side: {side:?}");
        // The audio lags the session's time by the command's start-up and
        // pipeline (a few hundred ms); a restart would lag by all of it.
        for &(k, offset) in side {
            assert!(
                (-1.5..=0.5).contains(&offset),
                "packet {k}: the audio is {offset:.2} s off the session's position"
            );
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
}
