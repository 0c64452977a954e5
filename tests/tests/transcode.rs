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
use baton_testnet::scenarios::shipped_transcode_template;
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

async fn start(
    name: &str,
    dir: &TempDir,
    media: &std::path::Path,
    sessions: &str,
    extra: &[&str],
) -> Node {
    let config = dir.0.join("batond.toml");
    std::fs::write(
        &config,
        format!(
            "[services]\nmedia_dir = {:?}\n{}\n[sessions]\n{sessions}\n",
            media.display().to_string(),
            shipped_transcode_template().expect("docs/operations.md ships a transcode template")
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

/// Three nodes running the shipped template over a media directory that
/// holds the sweep, converged.
struct Cluster {
    _media: TempDir,
    _dirs: Vec<TempDir>,
    nodes: Vec<Node>,
}

/// `sessions`: the `[sessions]` lines of the nodes' config.
async fn cluster(sessions: &str) -> Cluster {
    let media = TempDir::new("transcode-media");
    std::fs::write(media.0.join("sweep.wav"), wav::encode(1, 8000, &sweep())).unwrap();
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("transcode-{i}")))
        .collect();
    let first = start("t0", &dirs[0], &media.0, sessions, &[]).await;
    let seed = dial_addr(&first).await;
    let mut nodes = vec![first];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let name = format!("t{i}");
        nodes.push(start(&name, dir, &media.0, sessions, &["--bootstrap", &seed]).await);
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
    Cluster {
        _media: media,
        _dirs: dirs,
        nodes,
    }
}

/// Opens a `transcode` session of the sweep for `client` through node 0
/// and waits until every node has its record: its id.
async fn open_sweep(nodes: &[Node], client: &str) -> String {
    let (reply, answer) = oneshot::channel();
    nodes[0]
        .shared
        .commands
        .send(SessionCommand::Open {
            service: "exec".into(),
            client: client.to_string(),
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
    assert!(
        eventually(Duration::from_secs(10), || nodes.iter().all(|n| n
            .shared
            .sessions
            .get(&id)
            .is_some()))
        .await,
        "the session reaches every node"
    );
    id
}

/// The session's primary and epoch as `n` holds them.
fn record_at(n: &Node, id: &str) -> Option<(String, u64)> {
    n.shared
        .sessions
        .get(id)
        .map(|s| (s.primary.clone(), s.epoch))
}

/// Kills `id`'s primary (an in-process node stopped dead, no leave) and
/// waits until both survivors name a new primary at a newer epoch.
async fn kill_primary_of(nodes: &mut Vec<Node>, id: &str) -> Instant {
    let (primary, epoch) = record_at(&nodes[0], id).unwrap();
    let victim = nodes
        .iter()
        .position(|n| n.peer_id.to_base58() == primary)
        .expect("the primary is one of ours");
    let killed_at = Instant::now();
    nodes.remove(victim).kill();
    let taken_over = eventually(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| record_at(n, id).is_some_and(|(p, e)| p != primary && e > epoch))
    })
    .await;
    assert!(taken_over, "a survivor takes the session over");
    killed_at
}

async fn kill_the_primary(standby: &str) {
    if !ffmpeg_available() {
        return;
    }
    let Cluster {
        _media,
        _dirs,
        mut nodes,
    } = cluster(&format!("standby = {standby:?}")).await;
    let receiver = RtpReceiver::bind("127.0.0.1:0").expect("bind receiver");
    let id = open_sweep(&nodes, &receiver.local_addr().to_string()).await;
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
    let killed_at = kill_primary_of(&mut nodes, &id).await;
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

/// ffmpeg 5.1 receiving from an SDP file sent no RTCP receiver report in
/// 45 s of 64 kb/s PCMU on loopback, with or without sender reports and
/// `-sdp_flags rtcp_to_source` (measured 2026-12-02): as a client it never
/// shows consent by RTCP, so its network is exempted, as docs/operations.md
/// tells operators to do for such clients.
const CONSENT_FOR_FFMPEG: &str = "standby = \"cold\"\nconsent_exempt = [\"127.0.0.0/8\"]";

/// A free pair of loopback UDP ports `p`, `p + 1` (RTP and RTCP), `p`
/// even as RFC 3550 asks; free when this returns, for ffmpeg to take.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        if p >= 1024
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free pair of UDP ports on loopback");
}

/// A real client: ffmpeg receives the session from an SDP file (PCMU on
/// loopback) and decodes what it hears to 16-bit PCM. The session's
/// primary is killed half-way; the audio ffmpeg decoded must tell
/// positions in the source that go on from before the kill, never
/// starting the source again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_as_the_client_hears_the_transcoded_source_go_on_across_a_takeover() {
    if !ffmpeg_available() {
        return;
    }
    let Cluster {
        _media,
        _dirs,
        mut nodes,
    } = cluster(CONSENT_FOR_FFMPEG).await;
    let client = TempDir::new("transcode-client");
    let port = free_port_pair();
    let sdp = client.0.join("session.sdp");
    std::fs::write(
        &sdp,
        format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=baton\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        ),
    )
    .unwrap();
    let pcm = client.0.join("heard.raw");
    // 16 s of decoded audio, then ffmpeg stops by itself.
    const HEARD_S: u64 = 16;
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,udp,rtp"])
        .arg("-i")
        .arg(&sdp)
        .args(["-t", &HEARD_S.to_string()])
        .args(["-f", "s16le", "-ar", "8000", "-ac", "1", "-y"])
        .arg(&pcm)
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts");
    // ffmpeg binds its ports as it opens the SDP.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = open_sweep(&nodes, &format!("127.0.0.1:{port}")).await;
    let opened_at = Instant::now();
    // ffmpeg writes its output in large blocks, so the file's size says
    // little while it runs: the kill comes 6 s into the session, and what
    // it decoded is judged once it is done.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(opened_at.elapsed())).await;
    assert!(
        ffmpeg.try_wait().expect("ffmpeg runs").is_none(),
        "ffmpeg still listens when the primary is killed"
    );
    let killed_at = kill_primary_of(&mut nodes, &id).await;
    let status = tokio::time::timeout(Duration::from_secs(30), ffmpeg.wait())
        .await
        .expect("ffmpeg ends once it decoded its seconds")
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg: {status}");
    let bytes = std::fs::read(&pcm).unwrap();
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    // Where the audio is in the source, window by window (200 ms), where
    // there is audio (not silence).
    let positions: Vec<f64> = samples
        .chunks_exact(1600)
        .filter(|w| w.iter().any(|s| s.unsigned_abs() > 2000))
        .map(position_of)
        .collect();
    assert!(
        positions.len() >= 50,
        "{} windows of audio",
        positions.len()
    );
    let since_open = opened_at.elapsed().as_secs_f64();
    eprintln!(
        "ffmpeg heard {:.1} s; killed {:.1} s after the open; positions {positions:.2?}",
        samples.len() as f64 / 8000.0,
        (killed_at - opened_at).as_secs_f64()
    );
    // `-t` counts the stream's time, the takeover's silence included.
    assert!(
        samples.len() as u64 >= (HEARD_S - 3) * 8000,
        "ffmpeg decoded {} samples",
        samples.len()
    );
    // The source never starts again: each window is at most a little
    // behind the furthest position heard before it (a restart would fall
    // back by the ~6 s heard before the kill), and the last one is near
    // the session's position now, not near where a restart would be. The
    // kill came 6 s in, ffmpeg stopped after 16 s of stream time: the
    // windows past 7 s came from the new primary.
    let mut furthest = f64::MIN;
    for (w, &p) in positions.iter().enumerate() {
        assert!(
            p >= furthest - 0.6,
            "window {w}: position {p:.2} s after {furthest:.2} s: the source started again"
        );
        furthest = furthest.max(p);
    }
    let last = *positions.last().unwrap();
    assert!(
        last >= since_open - 4.0 && last <= since_open + 1.5,
        "the last audio is at {last:.2} s of the source, the session at {since_open:.2} s"
    );
    for node in nodes {
        node.shutdown().await;
    }
}
