//! What every scenario does: bring a testnet up, follow every node's
//! events, open sessions towards receivers in the client namespace, and
//! measure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::rtp_receiver::{Arrival, GapReport, RtpReceiver};
use baton_node::views::{Member, OpenRequest, Session};

use super::report::ClientStats;

use crate::sim::RttMatrix;
use crate::sys;
use crate::testbed::{CLIENT_ADDR, Testbed, TestbedConfig, TestbedError, unix_ms};

/// How a scenario runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes (the largest N for `scale`).
    pub nodes: usize,
    /// The WAN matrix and its label, or `None` for a LAN.
    pub wan: Option<(RttMatrix, String)>,
    /// Background loss on every link (the `loss` scenario uses 5% when 0).
    pub loss: f64,
    /// Sessions to open.
    pub sessions: usize,
    /// Faults to inject (kills, partitions, restarts).
    pub faults: usize,
    /// Length of the measured run for `loss`, `pause` and each `scale` step.
    pub duration: Duration,
    /// Time given to membership and Vivaldi coordinates before faults.
    pub settle: Duration,
    /// Whether nodes use mDNS too.
    pub mdns: bool,
    /// Whether nodes are given n1's address to join (else mDNS alone).
    pub bootstrap: bool,
    /// Seed of the emulator and the fault choices.
    pub seed: u64,
    /// Where reports go; node data and logs under `out/nodes`.
    pub out: std::path::PathBuf,
    /// `outage`: the region that fails (else the one holding the primaries
    /// of the most sessions, a fresh one each fault while there is one).
    pub region: Option<String>,
    /// `outage`: cut the region off (both ways, from the other nodes and
    /// the client) instead of killing its nodes; heal instead of restart.
    pub cut: bool,
    /// What the sessions run.
    pub service: SessionService,
    /// The `standby` parameter of every session (else the node's default,
    /// `cold`).
    pub standby: Option<Standby>,
    /// `partition`: how long each cut lasts before the heal.
    pub cut_for: Duration,
    /// SWIM's probe interval on every node (`batond --probe-interval`),
    /// else the profile's (100 ms): the trade-off study's knob.
    pub probe_interval: Option<Duration>,
    /// `kill`: the window over which the idle nodes' cost is measured
    /// before the first kill (zero: not measured).
    pub idle: Duration,
}

/// The service of the sessions a scenario opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionService {
    /// The built-in generator (`rtp-audio`).
    #[default]
    RtpAudio,
    /// The `transcode` template docs/operations.md ships: ffmpeg
    /// re-encoding a WAV file of the run's media directory to G.711 behind
    /// the node's RTP gate.
    Transcode,
}

impl SessionService {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            SessionService::RtpAudio => "rtp-audio",
            SessionService::Transcode => "transcode",
        }
    }
}

/// A session's standby mode (the `standby` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// The instance starts on takeover.
    Cold,
    /// The first backup runs the instance too, its gate closed.
    Warm,
}

impl Standby {
    /// The parameter's value.
    pub fn name(self) -> &'static str {
        match self {
            Standby::Cold => "cold",
            Standby::Warm => "warm",
        }
    }
}

/// Sessions one client address may have by default (`[services]
/// max_sessions_per_client`).
const CLIENT_SESSIONS_DEFAULT: usize = 16;

/// Every client of a run lives in the one client namespace, behind one
/// address: a run of more sessions than a client address may have by
/// default lets that address have them all, in the `--config` the
/// scenario passes (or one of its own).
fn client_sessions_config(opts: &Options, flags: &mut Vec<String>) -> Result<(), TestbedError> {
    let line = format!("max_sessions_per_client = {}\n", opts.sessions);
    let given = flags
        .iter()
        .position(|f| f == "--config")
        .and_then(|i| flags.get(i + 1))
        .map(std::path::PathBuf::from);
    let path = match given {
        Some(path) => path,
        None => {
            std::fs::create_dir_all(&opts.out)?;
            let path = opts.out.join("clients.toml");
            std::fs::write(&path, "")?;
            flags.extend(["--config".to_owned(), path.display().to_string()]);
            path
        }
    };
    let text = std::fs::read_to_string(&path)?;
    let text = match text.find("[services]\n") {
        Some(at) => {
            let after = at + "[services]\n".len();
            format!("{}{line}{}", &text[..after], &text[after..])
        }
        None => format!("{text}\n[services]\n{line}"),
    };
    std::fs::write(&path, text)?;
    Ok(())
}

/// The source every `transcode` session plays, in the run's media
/// directory.
pub const TRANSCODE_SOURCE: &str = "source.wav";

/// The `[services.exec.transcode]` block of docs/operations.md, as it
/// ships (the e2e tests run the same text).
pub fn shipped_transcode_template() -> Result<String, TestbedError> {
    let doc = include_str!("../../../docs/operations.md");
    let start = doc.find("[services.exec.transcode]\n").ok_or_else(|| {
        TestbedError::Invalid("docs/operations.md ships no transcode template".into())
    })?;
    let block = &doc[start..];
    let end = block.find("\n\n").unwrap_or(block.len());
    Ok(block[..end].to_string())
}

/// Writes the media (a tone of `seconds`, 8 kHz mono, made by ffmpeg) and
/// a node config that serves the shipped `transcode` template from it;
/// returns the config's path.
pub fn transcode_config(
    out: &std::path::Path,
    seconds: u64,
) -> Result<std::path::PathBuf, TestbedError> {
    let media = out.join("media");
    std::fs::create_dir_all(&media)?;
    let source = media.join(TRANSCODE_SOURCE);
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "sine=frequency=440:sample_rate=8000:duration={seconds}"
        ))
        .args(["-ac", "1", "-acodec", "pcm_s16le"])
        .arg(&source)
        .status()
        .map_err(|e| TestbedError::Invalid(format!("--service transcode needs ffmpeg: {e}")))?;
    if !status.success() {
        return Err(TestbedError::Invalid(format!(
            "ffmpeg could not write {}: {status}",
            source.display()
        )));
    }
    let media = std::fs::canonicalize(&media)?;
    let config = out.join("transcode.toml");
    std::fs::write(
        &config,
        format!(
            "[services]\nmedia_dir = {:?}\n\n{}\n",
            media.display().to_string(),
            shipped_transcode_template()?
        ),
    )?;
    Ok(config)
}

/// One event as a node reported it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The node that reported it.
    pub observer: usize,
    /// `member`, `refuted`, `session`.
    pub kind: String,
    /// Member or session id.
    pub id: String,
    /// New state.
    pub state: String,
    /// When, Unix ms (the observer's clock: the machine's).
    pub at_ms: f64,
}

/// One session and its client.
#[derive(Debug)]
pub struct Sess {
    /// Session id.
    pub id: String,
    /// The receiver hearing it.
    pub receiver: RtpReceiver,
}

/// A testnet with its measurement around it.
#[derive(Debug)]
pub struct Harness {
    /// The testnet.
    pub tb: Testbed,
    /// Peer ids by node index.
    pub ids: Vec<String>,
    /// Every event every node reported.
    pub events: Arc<Mutex<Vec<Seen>>>,
    /// The sessions.
    pub sessions: Vec<Sess>,
    /// When the run began (Unix ms), for timelines.
    pub t0_ms: f64,
    /// What sessions are opened with (their client aside).
    pub open: OpenRequest,
}

impl Harness {
    /// Brings up `n` nodes as `opts` says and waits for membership.
    pub fn up(opts: &Options, n: usize) -> Result<Harness, TestbedError> {
        Harness::up_with(opts, n, Vec::new())
    }

    /// [`up`](Self::up), with more `batond` flags for every node.
    pub fn up_with(
        opts: &Options,
        n: usize,
        mut flags: Vec<String>,
    ) -> Result<Harness, TestbedError> {
        let mut open = OpenRequest {
            service: "rtp-audio".to_owned(),
            client: String::new(),
            params: Default::default(),
        };
        if opts.service == SessionService::Transcode {
            if flags.iter().any(|f| f == "--config") {
                return Err(TestbedError::Invalid(
                    "--service transcode: this scenario sets the nodes' config itself".into(),
                ));
            }
            std::fs::create_dir_all(&opts.out)?;
            // Long enough for the run: the source plays in real time.
            let seconds = (900 + 60 * opts.faults as u64).min(3600);
            let config = transcode_config(&opts.out, seconds)?;
            flags.extend(["--config".to_owned(), config.display().to_string()]);
            open.service = "exec".to_owned();
            open.params
                .insert("template".to_owned(), "transcode".to_owned());
            open.params
                .insert("input".to_owned(), TRANSCODE_SOURCE.to_owned());
        }
        if let Some(standby) = opts.standby {
            open.params
                .insert("standby".to_owned(), standby.name().to_owned());
        }
        if let Some(interval) = opts.probe_interval {
            flags.extend([
                "--probe-interval".to_owned(),
                format!("{}ms", interval.as_millis()),
            ]);
        }
        if opts.sessions > CLIENT_SESSIONS_DEFAULT {
            client_sessions_config(opts, &mut flags)?;
        }
        let mut config = TestbedConfig::new(n, &opts.out.join("nodes"));
        config.extra_flags = flags;
        config.bootstrap = opts.bootstrap;
        config.wan = opts.wan.as_ref().map(|(m, _)| m.clone());
        config.loss = opts.loss;
        config.mdns = opts.mdns;
        config.seed = opts.seed;
        eprintln!(
            "bringing up {n} nodes in namespaces ({}) ...",
            opts.wan
                .as_ref()
                .map(|(_, l)| format!("WAN matrix {l}"))
                .unwrap_or_else(|| "LAN".into())
        );
        let tb = Testbed::up(config)?;
        let took = tb.wait_converged(Duration::from_secs(60 + n as u64))?;
        eprintln!("membership converged after {:.1} s", took.as_secs_f64());
        let ids = (0..n).map(|i| tb.peer_id(i)).collect::<Result<_, _>>()?;
        let harness = Harness {
            tb,
            ids,
            events: Arc::new(Mutex::new(Vec::new())),
            sessions: Vec::new(),
            t0_ms: unix_ms(),
            open,
        };
        for i in 0..n {
            harness.follow(i)?;
        }
        Ok(harness)
    }

    /// Follows node `i`'s events (again, after a restart).
    pub fn follow(&self, i: usize) -> Result<(), TestbedError> {
        let rx = self.tb.follow_events(i)?;
        let events = self.events.clone();
        std::thread::spawn(move || {
            while let Ok(e) = rx.recv() {
                let seen = Seen {
                    observer: i,
                    kind: e.kind,
                    id: e.id,
                    state: e.state,
                    at_ms: e.at_ms as f64,
                };
                events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(seen);
            }
        });
        Ok(())
    }

    /// Events so far that match `f`.
    pub fn events_where(&self, f: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| f(e))
            .cloned()
            .collect()
    }

    /// Opens `count` sessions, asking the nodes in turn; waits
    /// until every receiver hears its stream.
    pub fn open_sessions(&mut self, count: usize) -> Result<(), TestbedError> {
        let n = self.tb.nodes.len();
        let on: Vec<usize> = (0..count).map(|k| k % n).collect();
        self.open_sessions_on(&on)
    }

    /// Opens one session asking each node of `on` in turn (the
    /// node asked usually becomes its primary: it is nearest to itself);
    /// waits until every receiver hears its stream.
    pub fn open_sessions_on(&mut self, on: &[usize]) -> Result<(), TestbedError> {
        let count = on.len();
        for &i in on {
            let receiver = self.tb.receiver()?;
            let client = receiver.local_addr();
            let body = OpenRequest {
                client: client.to_string(),
                ..self.open.clone()
            };
            let session = self.open_on(i, &body)?;
            self.sessions.push(Sess {
                id: session.id,
                receiver,
            });
        }
        for s in &self.sessions {
            if !s.receiver.wait_for_packets(10, Duration::from_secs(15)) {
                return Err(TestbedError::Timeout(format!(
                    "session {} does not stream to its client",
                    s.id
                )));
            }
        }
        if count > 0 {
            eprintln!(
                "{count} {} sessions{} streaming to {CLIENT_ADDR}",
                self.open
                    .params
                    .get("template")
                    .map_or(self.open.service.as_str(), String::as_str),
                self.open
                    .params
                    .get("standby")
                    .map(|s| format!(" ({s} standby)"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Opens a session on node `i`. A node that has not heard its peers
    /// yet answers 503 (it would not serve a session it could lose): on a
    /// WAN, right after membership converged, probes to far regions may
    /// still be failing. It is asked again for up to 15 s.
    fn open_on(&self, i: usize, body: &OpenRequest) -> Result<Session, TestbedError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.tb.post(i, "/v1/sessions", body) {
                Err(TestbedError::Api { why, .. })
                    if why.contains("HTTP 503") && Instant::now() < deadline =>
                {
                    sleep(Duration::from_millis(500))?;
                }
                other => return other,
            }
        }
    }

    /// Which running nodes host each session now (from their APIs).
    pub fn hosts(&self) -> HashMap<String, Vec<usize>> {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for i in 0..self.tb.nodes.len() {
            if !self.tb.nodes[i].is_running() || self.tb.nodes[i].paused {
                continue;
            }
            let Ok(list) = self.tb.get::<Vec<Session>>(i, "/v1/sessions") else {
                continue;
            };
            for s in list {
                if s.hosted_here && s.state == "active" {
                    map.entry(s.id).or_default().push(i);
                }
            }
        }
        map
    }

    /// The primary of session `k` as node `observer` sees it.
    pub fn primary_of(&self, k: usize, observer: usize) -> Option<usize> {
        let list: Vec<Session> = self.tb.get(observer, "/v1/sessions").ok()?;
        let session = list.into_iter().find(|s| s.id == self.sessions[k].id)?;
        self.ids.iter().position(|id| *id == session.primary)
    }

    /// Sessions lost (hosted by no node, or silent for the last 2 s) and
    /// doubly owned (hosted by more than one node, or heard from two
    /// sources in the last 2 s), with a note on each.
    pub fn ownership(&self) -> (usize, usize, Vec<String>) {
        let hosts = self.hosts();
        let since = Instant::now() - Duration::from_secs(2);
        let (mut lost, mut double) = (0, 0);
        let mut notes = Vec::new();
        for s in &self.sessions {
            let owners = hosts.get(&s.id).map_or(0, Vec::len);
            let recent = s.receiver.report(since..);
            if owners == 0 || recent.packets == 0 {
                lost += 1;
                notes.push(format!(
                    "{}: lost ({owners} hosts, {} packets in 2 s)",
                    s.id, recent.packets
                ));
            } else if owners > 1 || recent.sources.len() > 1 {
                double += 1;
                notes.push(format!(
                    "{}: doubly owned ({owners} hosts, {} sources)",
                    s.id,
                    recent.sources.len()
                ));
            }
        }
        (lost, double, notes)
    }

    /// Every session as its client heard it so far.
    pub fn clients(&self) -> Vec<ClientStats> {
        self.sessions
            .iter()
            .map(|s| {
                let arrivals = s.receiver.arrivals();
                let r = GapReport::from_arrivals(&arrivals);
                ClientStats {
                    id: s.id.clone(),
                    packets: r.packets,
                    lost: r.lost,
                    duplicates: r.duplicates,
                    mismatched_duplicates: r.mismatched_duplicates,
                    out_of_order: r.out_of_order,
                    longest_gap_ms: (r.longest_gap_ms * 10.0).round() / 10.0,
                    ssrcs: r.ssrcs.len(),
                    sources: r.sources.iter().map(node_of).collect(),
                    two_source_bins: two_source_bins(&arrivals),
                }
            })
            .collect()
    }

    /// The gap report of session `k` over a window.
    pub fn gap(&self, k: usize, from: Instant, to: Instant) -> GapReport {
        self.sessions[k].receiver.report(from..to)
    }

    /// Vivaldi's relative errors: for every ordered pair of running nodes,
    /// how far the coordinate distance one reports is from the RTT the
    /// emulator imposes, in percent of it.
    pub fn vivaldi_errors(&self) -> Vec<f64> {
        let mut errors = Vec::new();
        let names: HashMap<String, usize> = self
            .tb
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for i in 0..self.tb.nodes.len() {
            let Ok(members) = self.tb.get::<Vec<Member>>(i, "/v1/members") else {
                continue;
            };
            for m in members {
                let (Some(j), Some(est)) = (names.get(&m.name), m.distance_ms) else {
                    continue;
                };
                let truth = self.tb.true_rtt(i, *j).as_secs_f64() * 1e3;
                if truth > 0.0 {
                    errors.push((est - truth).abs() / truth * 100.0);
                }
            }
        }
        errors
    }

    /// CPU (percent of a core) and RSS (MB) per running node, and bytes
    /// sent per node per second (eth0 counters), over `d`.
    pub fn usage_over(&self, d: Duration) -> Result<Usage, TestbedError> {
        let n = self.tb.nodes.len();
        let before: Vec<_> = (0..n).map(|i| self.tb.proc_usage(i)).collect();
        let ifaces_before: Vec<_> = (0..n).map(|i| self.tb.iface_counters(i).ok()).collect();
        let started = Instant::now();
        sleep(d)?;
        let secs = started.elapsed().as_secs_f64();
        let after: Vec<_> = (0..n).map(|i| self.tb.proc_usage(i)).collect();
        let ifaces_after: Vec<_> = (0..n).map(|i| self.tb.iface_counters(i).ok()).collect();
        let mut usage = Usage::default();
        for (b, a) in before.iter().zip(&after) {
            if let (Some((_, t0)), Some((kb, t1))) = (b, a) {
                // USER_HZ is 100 on Linux.
                usage
                    .cpu_pct
                    .push(t1.saturating_sub(*t0) as f64 / 100.0 / secs * 100.0);
                usage.rss_mb.push(*kb as f64 / 1024.0);
            }
        }
        for (b, a) in ifaces_before.iter().zip(&ifaces_after) {
            if let (Some(b), Some(a)) = (b, a) {
                usage
                    .bytes_per_s
                    .push(a.tx_bytes.saturating_sub(b.tx_bytes) as f64 / secs);
            }
        }
        Ok(usage)
    }

    /// What the nodes' child processes (the `exec` instances) used over
    /// `d`: CPU from /proc/PID/stat, bytes read (the source) from
    /// /proc/PID/io `rchar`, per instance on average.
    pub fn instance_usage_over(&self, d: Duration) -> Result<InstanceUsage, TestbedError> {
        let parents: Vec<u32> = (0..self.tb.nodes.len())
            .filter_map(|i| self.tb.nodes[i].pid())
            .collect();
        let before = children_usage(&parents);
        let started = Instant::now();
        sleep(d)?;
        let secs = started.elapsed().as_secs_f64();
        let after = children_usage(&parents);
        // Only instances that ran the whole interval.
        let (mut ticks, mut read, mut count) = (0u64, 0u64, 0usize);
        for (pid, (t1, r1)) in &after {
            if let Some((t0, r0)) = before.get(pid) {
                ticks += t1.saturating_sub(*t0);
                read += r1.saturating_sub(*r0);
                count += 1;
            }
        }
        let per = |x: u64| x as f64 / count.max(1) as f64 / secs;
        Ok(InstanceUsage {
            instances: count,
            // USER_HZ is 100 on Linux.
            cpu_pct_per_instance: per(ticks),
            read_bytes_per_s_per_instance: per(read),
        })
    }

    /// Open libp2p connections of each node (from `/v1/peers`): with SWIM
    /// on datagrams, a small number whatever N.
    pub fn connections(&self) -> Vec<f64> {
        (0..self.tb.nodes.len())
            .filter_map(|i| {
                let peers: Vec<baton_node::views::Peer> = self.tb.get(i, "/v1/peers").ok()?;
                Some(peers.iter().map(|p| f64::from(p.connections)).sum())
            })
            .collect()
    }

    /// Seconds since the run began.
    pub fn t(&self, at_ms: f64) -> f64 {
        (at_ms - self.t0_ms) / 1e3
    }
}

/// What the sessions' instances (the nodes' child processes) used over
/// an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InstanceUsage {
    /// Instances that ran through the interval.
    pub instances: usize,
    /// CPU per instance, percent of one core.
    pub cpu_pct_per_instance: f64,
    /// Bytes each instance read per second (its source).
    pub read_bytes_per_s_per_instance: f64,
}

/// CPU ticks and bytes read (`rchar`) of every child of `parents`, by pid.
fn children_usage(parents: &[u32]) -> HashMap<u32, (u64, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((ppid, ticks)) = crate::http::parse_stat(&stat) else {
            continue;
        };
        if !parents.contains(&ppid) {
            continue;
        }
        let rchar = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| parse_rchar(&io))
            .unwrap_or(0);
        out.insert(pid, (ticks, rchar));
    }
    out
}

/// `rchar` of a /proc/PID/io text.
fn parse_rchar(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// What nodes used over an interval.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// CPU per node, percent of one core.
    pub cpu_pct: Vec<f64>,
    /// Resident memory per node at the end, MB.
    pub rss_mb: Vec<f64>,
    /// Bytes each node sent per second on its eth0 (Ethernet frames).
    pub bytes_per_s: Vec<f64>,
}

impl Usage {
    /// Mean bytes per node per second.
    pub fn mean_bytes(&self) -> f64 {
        if self.bytes_per_s.is_empty() {
            return f64::NAN;
        }
        self.bytes_per_s.iter().sum::<f64>() / self.bytes_per_s.len() as f64
    }
}

/// The node an RTP source address belongs to (`n3` for 198.18.1.3).
pub(super) fn node_of(addr: &std::net::SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.octets()[..3] == [198, 18, 1] => {
            format!("n{}", ip.octets()[3])
        }
        _ => addr.to_string(),
    }
}

/// 100 ms intervals (from the first arrival) with packets from two or more
/// senders.
pub fn two_source_bins(arrivals: &[Arrival]) -> u64 {
    arrivals
        .first()
        .map_or(0, |first| two_sender_bins(arrivals, first.at).len() as u64)
}

/// The 100 ms intervals, counted from `from`, in which packets arrived from
/// two senders or more (arrivals before `from` left out).
pub fn two_sender_bins(arrivals: &[Arrival], from: Instant) -> std::collections::BTreeSet<u128> {
    let mut bins: std::collections::BTreeMap<u128, Vec<std::net::SocketAddr>> = Default::default();
    for a in arrivals.iter().filter(|a| a.at >= from) {
        let bin = a.at.duration_since(from).as_millis() / 100;
        let senders = bins.entry(bin).or_default();
        if !senders.contains(&a.from) {
            senders.push(a.from);
        }
    }
    bins.into_iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(bin, _)| bin)
        .collect()
}

/// Sleeps `d` in small steps, failing at Ctrl-C.
pub fn sleep(d: Duration) -> Result<(), TestbedError> {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if sys::interrupted() {
            return Err(TestbedError::Interrupted);
        }
        std::thread::sleep(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Instant;

    #[test]
    fn a_stat_line_gives_its_parent_and_cpu_ticks_and_io_its_bytes_read() {
        // A command name with spaces and a parenthesis, as /proc shows it.
        let stat = "4242 (ff mpeg)) S 77 4242 77 0 -1 4194304 900 0 0 0 31 9 0 0 20 0 1 0 5 0 0";
        assert_eq!(crate::http::parse_stat(stat), Some((77, 40)));
        assert_eq!(crate::http::parse_stat("4242 (x) S"), None);
        let io = "rchar: 160044\nwchar: 99\nsyscr: 10\n";
        assert_eq!(parse_rchar(io), Some(160_044));
        assert_eq!(parse_rchar("wchar: 1\n"), None);
    }

    #[test]
    fn the_transcode_template_is_the_one_docs_ship_and_sends_to_the_gate() {
        let t = shipped_transcode_template().unwrap();
        assert!(
            t.starts_with("[services.exec.transcode]\ncommand = "),
            "{t}"
        );
        assert!(t.contains("rtp://{gate}"), "{t}");
        assert!(t.contains("-ss {elapsed_s}"), "{t}");
        assert!(!t.contains("\n\n"), "one block: {t}");
    }

    fn arrival(at: Instant, from: SocketAddr) -> Arrival {
        Arrival {
            at,
            unix_us: 0,
            from,
            seq: 0,
            ts: 0,
            ssrc: 1,
            marker: false,
            payload_type: 0,
            len: 12,
            hash: 0,
            payload: Vec::new(),
        }
    }

    #[test]
    fn two_senders_in_one_interval_are_counted_once_per_interval() {
        let t0 = Instant::now();
        let a: SocketAddr = "198.18.1.2:9".parse().unwrap();
        let b: SocketAddr = "198.18.1.3:9".parse().unwrap();
        let ms = |m| t0 + Duration::from_millis(m);
        // A clean handover: a until 120 ms, b from 140 ms: one shared bin.
        let clean: Vec<Arrival> = [(0, a), (60, a), (120, a), (140, b), (200, b), (260, b)]
            .into_iter()
            .map(|(m, f)| arrival(ms(m), f))
            .collect();
        assert_eq!(two_source_bins(&clean), 1);
        // Both streaming for 300 ms: three bins.
        let double: Vec<Arrival> = (0..15)
            .map(|k| arrival(ms(k * 20), if k % 2 == 0 { a } else { b }))
            .collect();
        assert_eq!(two_source_bins(&double), 3);
        assert_eq!(two_source_bins(&[]), 0);
        assert_eq!(node_of(&a), "n2");
    }
}

/// What the nodes of a testnet sent over an interval, from the switch's
/// per-port counters (every Ethernet frame a node sent, classed by its
/// well-known ports) sampled every `step`.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Mean bytes per node per second over the whole interval.
    pub mean: f64,
    /// (seconds since the start, mean bytes per node per second) per step:
    /// the time series, so that periodic work shows.
    pub series: Vec<(f64, f64)>,
    /// Mean bytes per node per second by class ([`crate::emu::Class`]).
    pub by_class: Vec<(&'static str, f64)>,
    /// Mean frames per node per second by class.
    pub frames_by_class: Vec<(&'static str, f64)>,
}

/// Watches the first `nodes` ports of `tb`'s switch for `d`, sampling every
/// `step`.
pub fn traffic_over(
    tb: &Testbed,
    nodes: usize,
    d: Duration,
    step: Duration,
) -> Result<Traffic, TestbedError> {
    use crate::emu::Class;
    use std::sync::atomic::Ordering::Relaxed;
    let switch = tb.switch();
    let total = |c: &crate::emu::PortCounters| c.rx_bytes.load(Relaxed);
    let sample = || -> (u64, Vec<u64>, Vec<u64>) {
        let mut bytes = 0;
        let mut classes = vec![0u64; Class::ALL.len()];
        let mut frames = vec![0u64; Class::ALL.len()];
        for port in 0..nodes {
            let c = switch.counters(port);
            bytes += total(c);
            for k in 0..Class::ALL.len() {
                classes[k] += c.rx_class_bytes[k].load(Relaxed);
                frames[k] += c.rx_class_frames[k].load(Relaxed);
            }
        }
        (bytes, classes, frames)
    };
    let started = Instant::now();
    let first = sample();
    let mut last = (started, first.0);
    let mut series = Vec::new();
    while started.elapsed() < d {
        sleep(step.min(d.saturating_sub(started.elapsed())))?;
        let now = Instant::now();
        let (bytes, _, _) = sample();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        series.push((
            now.duration_since(started).as_secs_f64(),
            bytes.saturating_sub(last.1) as f64 / secs / nodes as f64,
        ));
        last = (now, bytes);
    }
    let end = sample();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs / nodes as f64;
    Ok(Traffic {
        mean: per(first.0, end.0),
        series,
        by_class: Class::ALL
            .iter()
            .map(|c| (c.name(), per(first.1[c.index()], end.1[c.index()])))
            .collect(),
        frames_by_class: Class::ALL
            .iter()
            .map(|c| (c.name(), per(first.2[c.index()], end.2[c.index()])))
            .collect(),
    })
}
