//! `testnet`: runs many Baton nodes. `testnet demo` shows real nodes keeping
//! sessions alive on loopback, `testnet bench` measures them, `testnet sim`
//! runs the deterministic simulator of the protocol core.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use baton_protocol::swim;
use baton_testnet::control::{self, Request};
use baton_testnet::scenarios::{self, Options, Scenario, SessionService, Standby};
use baton_testnet::sim::{self, Latency, RttMatrix, ScenarioConfig};
use baton_testnet::sys;
use baton_testnet::testbed::TestbedConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "testnet",
    version,
    about = "Run many Baton nodes: a deterministic simulator of the protocol core and a local demo and measurements of real nodes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate N whole Baton nodes (the protocol core's `Node`: SWIM +
    /// Lifeguard, admission, sealed datagrams, streams, the session engine and
    /// its map) in virtual time over simulated datagrams, connections and
    /// streams; inject faults, open sessions, check invariants and report
    /// detection latency, false positives, dissemination time, takeovers,
    /// lost and doubly owned sessions and traffic by class.
    ///
    /// Groups of up to 256 nodes start cold (discovery, handshakes, joins),
    /// larger ones warm (keys, tables and maps in place); --warm-start and
    /// --cold-start choose. Sessions replicate by gossip and anti-entropy in a
    /// cold group opening at most 64, by import otherwise (the report says
    /// which). One seed replays a run exactly. Exit status: 0
    /// when every invariant held, 1 when one broke (the report names it and
    /// prints the replay command), 2 on bad arguments.
    #[command(after_help = "EXAMPLES:\n  \
        testnet sim --nodes 32 --seed 1 --scenario crash\n  \
        testnet sim --nodes 1000 --seed 1 --scenario crash --sessions 2000 --json\n  \
        testnet sim --nodes 200 --scenario partition --sessions 400\n  \
        testnet sim --nodes 32 --scenario loss --duration 30min\n  \
        testnet sim --nodes 64 --scenario partition --asymmetric\n  \
        testnet sim --nodes 32 --scenario pause --loss 0.05 --duration 30min\n  \
        testnet sim --nodes 32 --scenario crash --wan testnet/data/wan-rtt.csv")]
    Sim(Box<SimArgs>),
    /// The local demo (no root needed): starts real `batond` processes on
    /// 127.0.0.1, opens rtp-audio sessions towards local RTP receivers, kills
    /// the primary of one and shows who detected it, which backup took over
    /// and the gap each client heard; then `baton members` and `baton
    /// sessions`. Everything it started is stopped at the end.
    #[command(
        after_help = "Build first: cargo build --release -p baton-node -p baton-testnet\n\nEXAMPLE:\n  testnet demo"
    )]
    Demo {
        /// Nodes to start (at least 3).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Sessions to open.
        #[arg(long, default_value_t = 3)]
        sessions: usize,
    },
    /// Measures real `batond` processes on 127.0.0.1: idle memory and CPU per
    /// node, monitoring traffic per node (loopback counters and SWIM
    /// payload), and the time from `kill -9` until every survivor reports the
    /// node dead (from /v1/events timestamps).
    #[command(after_help = "EXAMPLE:\n  testnet bench --nodes 5 --idle 60s --kills 10 --json")]
    Bench {
        /// Nodes to start.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Time between convergence and the idle measurement, so that
        /// start-up work is not counted as idle.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Length of the idle measurement (CPU is also sampled every 10 s
        /// for the report's time series).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        idle: Duration,
        /// Kills to time (each victim is restarted).
        #[arg(long, default_value_t = 5)]
        kills: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// How far the replicated session map goes: per session count, what one
    /// node holds (heap per session, from the allocator), receives (a
    /// delta, a whole map pulled after a restart, the CPU to verify and
    /// apply it) and exchanges in anti-entropy with a replica differing in
    /// 1 session, 1 % and 10 % of them; on the real map and session engine.
    #[command(
        name = "map-scale",
        after_help = "EXAMPLES:\n  testnet map-scale --json\n  testnet map-scale --sessions 1000,10000"
    )]
    MapScale {
        /// Session counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = baton_testnet::mapscale::DEFAULT_SESSIONS)]
        sessions: Vec<usize>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Brings up a testnet that stays up (root): one network namespace per
    /// node (198.18.1.N/16, a TAP device as eth0) and a client namespace
    /// (198.18.2.1), joined by the userspace WAN emulator, which delays each
    /// frame by half its pair's RTT (plus jitter), drops the configured loss
    /// and cuts links on demand. Nodes run `batond` with their API on
    /// 127.0.0.1:7700 inside their namespace: `ip netns exec NS baton members`.
    #[command(after_help = "EXAMPLES:\n  \
        testnet up --nodes 8 --wan\n  \
        testnet cut n2 n3        # partition n2, n3 from the rest\n  \
        testnet cut n2 --one-way # n2 can hear but not send\n  \
        testnet cut n2 --inbound # n2 can send but not hear\n  \
        testnet heal\n  \
        testnet kill n4; testnet restart n4\n  \
        testnet status\n  \
        testnet down")]
    Up(NetArgs),
    /// Removes the testnet: its nodes, namespaces, TAP devices and state
    /// (also what a testnet that died left behind).
    Down,
    /// Shows the testnet's nodes, regions, processes, loss and cuts.
    Status,
    /// SIGKILLs nodes of the running testnet (`n3` or `3`).
    Kill {
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// SIGSTOPs nodes: they keep their sockets but answer nothing.
    Pause {
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// SIGCONTs paused nodes.
    Resume {
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Restarts nodes (killed or running) with the same identity.
    Restart {
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Cuts nodes away from every other node and the client namespace.
    Cut {
        /// Nodes forming one side of the partition.
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Drop only what the group sends (an asymmetric partition: the group
        /// still hears the rest).
        #[arg(long)]
        one_way: bool,
        /// Drop only what the group receives (the other asymmetric
        /// partition: the group cannot hear, the rest still hears it).
        #[arg(long, conflicts_with = "one_way")]
        inbound: bool,
    },
    /// Restores the links of the nodes given, or every link.
    Heal {
        /// Nodes (all links when none).
        nodes: Vec<String>,
    },
    /// Sets the random loss of every link of the running testnet.
    Loss {
        /// Probability 0 to 1 (0.05 = 5%).
        #[arg(value_parser = probability)]
        loss: f64,
    },
    #[command(hide = true)]
    Serve(NetArgs),
    /// Runs every measurement behind docs/evaluation.md (each scenario on a
    /// LAN and on the emulated WAN, the simulator runs, the loopback bench),
    /// keeps the reports under DOCS/eval/ and writes DOCS/evaluation.md.
    /// About 45 minutes; root; run from the repository root.
    #[command(after_help = "EXAMPLES:\n  \
        cargo build --release --workspace --bins\n  \
        sudo ./target/release/testnet evaluate --docs docs\n  \
        sudo ./target/release/testnet evaluate --docs docs --only kill   # re-run kill-lan, kill-wan only")]
    Evaluate {
        /// The docs directory.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Small sizes and short runs (minutes, not the documented
        /// configuration): to check the pipeline.
        #[arg(long)]
        quick: bool,
        /// Re-run only the steps whose key starts with this (kill, scale-wan,
        /// sim-, bench, ...); the other reports are kept.
        #[arg(long)]
        only: Option<String>,
    },
    /// Runs the trade-off study's sweep (SWIM's probe interval 50-1000 ms x
    /// loss 0 / 5% x N = 100 / 1000, in the simulator: detection, bytes on
    /// the wire, healthy members declared dead), keeps each point's reports
    /// under DOCS/eval/ and rewrites DOCS/evaluation.md with the study's
    /// table and plot (the other sections from the reports kept). The same
    /// as `evaluate --only study-`. Use a release build: the N=1000 points
    /// take most of an hour.
    #[command(after_help = "EXAMPLES:\n  \
        cargo build --release -p baton-testnet\n  \
        ./target/release/testnet study --docs docs\n  \
        ./target/release/testnet study --docs docs --quick   # two points, to check the pipeline")]
    Study {
        /// The docs directory.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Two points of 100 nodes, short runs: to check the pipeline.
        #[arg(long)]
        quick: bool,
    },
    /// Runs a fault scenario on a fresh testnet (root) and writes
    /// report.json, report.md and SVG plots to --out. Everything the run
    /// creates is removed when it ends, fails or is interrupted.
    ///
    /// Exit status: 0 when every target the scenario speaks to was met, 1
    /// when one was not (the report says which), 2 when the run could not be
    /// made.
    #[command(after_help = "SCENARIOS:\n  \
        kill       SIGKILL the primary of a session, restart it; detection, client gap\n  \
        partition  cut a minority away (--cut-for, 10 s), heal; owners after the heal\n  \
        loss       5% loss on every link for --duration; false positives\n  \
        pause      one node SIGSTOPped 0.5-2.5 s every 3-6 s; only it may be suspected\n  \
        churn      rolling restarts (SIGTERM + start) of every node; sessions lost\n  \
        scale      idle overlays of 8, 16, 32, 64 nodes (up to --nodes); traffic, CPU, RSS\n  \
        degrade    a primary's path to the client degrades (10% loss, +150 ms); transfer_ms\n  \
        cut        a primary cut one way (cannot hear, then cannot send) for 8 s, heal; fencing\n  \
        outage     every node of a region killed at once (--cut: cut off) for 10 s (WAN only)\n\n\
        EXAMPLES:\n  \
        testnet run kill --nodes 8 --wan --out /tmp/kill-wan\n  \
        testnet run partition --nodes 5 --out /tmp/partition\n  \
        testnet run loss --nodes 8 --duration 30min --out /tmp/loss\n  \
        testnet run scale --nodes 64 --wan --out /tmp/scale\n  \
        testnet run outage --nodes 6 --wan --regions 3 --sessions 6 --faults 1 --out /tmp/outage\n  \
        testnet run outage --nodes 12 --wan --regions 4 --region eastus --cut --out /tmp/outage-cut")]
    Run(Box<RunArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServiceName {
    /// The built-in generator.
    RtpAudio,
    /// ffmpeg behind the RTP gate (docs/operations.md's template).
    Transcode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StandbyName {
    /// The instance starts on takeover.
    Cold,
    /// The first backup runs it too, its gate closed.
    Warm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioName {
    Kill,
    Partition,
    Loss,
    Pause,
    Churn,
    Scale,
    /// Serf (Debian package `serf`) and Baton side by side: idle traffic
    /// and kill detection on the same testnet.
    Compare,
    /// A stranger floods the nodes' datagram sockets with garbage.
    Spray,
    /// The path from a session's primary to the client degrades (10% loss,
    /// +150 ms each way, that pair only); the session must move.
    Degrade,
    /// A primary cut one way, alternately so that it cannot hear and so
    /// that it cannot send: it must fence itself within the fence bound.
    Cut,
    /// Every node of one region killed at once (with --cut: cut off from
    /// the rest and the client, both ways) for 10 s, then restarted
    /// (healed); sessions with a backup outside the region must survive.
    /// WAN only.
    Outage,
}

/// How the testnet is built (`up` and `run`).
#[derive(Debug, Clone, Args)]
struct NetArgs {
    /// Nodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=250))]
    nodes: u16,
    /// Spread the nodes round-robin over the regions of an RTT matrix (CSV
    /// `a,b,rtt_ms`); without FILE the built-in one: median RTTs between 16
    /// Azure regions. Without --wan: a LAN, no added delay.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "builtin")]
    wan: Option<String>,
    /// Use only the first K regions of the matrix (2 to all), so that a
    /// region holds several nodes (with --wan).
    #[arg(long, value_name = "K", requires = "wan")]
    regions: Option<usize>,
    /// Random loss on every link, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    loss: f64,
    /// Each frame waits up to this fraction of its pair's delay longer
    /// (frames of one pair keep their order).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05, value_parser = jitter)]
    jitter: f64,
    /// RTT between two nodes of one region.
    #[arg(long, value_name = "DURATION", default_value = "2ms", value_parser = duration)]
    intra_rtt: Duration,
    /// Discover by bootstrap from n1 only, not mDNS as well.
    #[arg(long)]
    no_mdns: bool,
    /// Discover by mDNS only: no node is given n1's address.
    #[arg(long, conflicts_with = "no_mdns")]
    no_bootstrap: bool,
    /// Seed of the emulator's loss and jitter and of the fault choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario.
    #[arg(value_enum)]
    scenario: ScenarioName,
    /// Where report.json, report.md, the plots and the node logs go.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    net: NetArgs,
    /// Sessions to open.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Faults to inject (kills, partitions; restarts for churn: 0 = every node once).
    #[arg(long, default_value_t = 5)]
    faults: usize,
    /// Measured time of `loss` and `pause`, and of each step of `scale`.
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    duration: Duration,
    /// Time for membership and coordinates to settle before the faults.
    #[arg(long, default_value = "15s", value_parser = duration)]
    settle: Duration,
    /// outage: the region that fails, by its name in the matrix (default:
    /// the one holding the primaries of the most sessions, another one at
    /// each fault while there is one).
    #[arg(long, value_name = "NAME")]
    region: Option<String>,
    /// What the sessions run: the built-in generator, or the `transcode`
    /// template of docs/operations.md (ffmpeg re-encoding a file to G.711
    /// behind the node's RTP gate; needs ffmpeg).
    #[arg(long, value_enum, default_value_t = ServiceName::RtpAudio)]
    service: ServiceName,
    /// The sessions' standby mode: `warm` runs the instance on the first
    /// backup too, its gate closed (default: the node's, cold).
    #[arg(long, value_enum)]
    standby: Option<StandbyName>,
    /// outage: cut the region off from the other nodes and the client
    /// (both ways) instead of killing its nodes; heal instead of restart.
    #[arg(long)]
    cut: bool,
    /// partition: how long each cut lasts before the heal. Past the
    /// consent interval (30 s), a session claimed on the side its client
    /// cannot reach has paused for want of consent by the heal.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    cut_for: Duration,
    /// SWIM's probe interval on every node (`batond --probe-interval`;
    /// default: the profile's, 100 ms). Timeouts and suspicion scale with
    /// it: the knob of the trade-off between detection and traffic.
    #[arg(long, value_parser = positive_duration, value_name = "DURATION")]
    probe_interval: Option<Duration>,
    /// kill: before the first kill, measure what the idle nodes cost (bytes
    /// on the wire, CPU, RSS) over this window (0s: not measured).
    #[arg(long, default_value = "0s", value_parser = duration, value_name = "DURATION")]
    idle: Duration,
}

impl NetArgs {
    fn matrix(&self) -> Result<Option<(RttMatrix, String)>, String> {
        let full = self.full_matrix()?;
        match (full, self.regions) {
            (Some((m, label)), Some(k)) => Ok(Some((
                baton_testnet::emu::first_regions(&m, k)?,
                format!("{label}, first {k} regions"),
            ))),
            (full, _) => Ok(full),
        }
    }

    fn full_matrix(&self) -> Result<Option<(RttMatrix, String)>, String> {
        match self.wan.as_deref() {
            None => Ok(None),
            Some("builtin") => Ok(Some((
                baton_testnet::emu::builtin_matrix(),
                "built-in (16 Azure regions, P50)".into(),
            ))),
            Some(path) => RttMatrix::load(std::path::Path::new(path))
                .map(|m| Some((m, path.to_owned())))
                .map_err(|e| e.to_string()),
        }
    }

    fn testbed(&self) -> Result<TestbedConfig, String> {
        let mut config = TestbedConfig::new(usize::from(self.nodes), std::path::Path::new("."));
        config.wan = self.matrix()?.map(|(m, _)| m);
        config.loss = self.loss;
        config.jitter = self.jitter;
        config.intra_rtt = self.intra_rtt;
        config.mdns = !self.no_mdns;
        config.bootstrap = !self.no_bootstrap;
        config.seed = self.seed;
        Ok(config)
    }
}

fn control(req: Request) -> ExitCode {
    match control::request(&req) {
        Ok(reply) => {
            println!("{}", reply.message.trim_end());
            if reply.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("testnet: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_scenario(args: &RunArgs) -> ExitCode {
    sys::catch_interrupts();
    let wan = match args.net.matrix() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("testnet: {e}");
            return ExitCode::from(2);
        }
    };
    let scenario = match args.scenario {
        ScenarioName::Kill => Scenario::Kill,
        ScenarioName::Partition => Scenario::Partition,
        ScenarioName::Loss => Scenario::Loss,
        ScenarioName::Pause => Scenario::Pause,
        ScenarioName::Churn => Scenario::Churn,
        ScenarioName::Scale => Scenario::Scale,
        ScenarioName::Compare => Scenario::Compare,
        ScenarioName::Spray => Scenario::Spray,
        ScenarioName::Degrade => Scenario::Degrade,
        ScenarioName::Cut => Scenario::Cut,
        ScenarioName::Outage => Scenario::Outage,
    };
    if args.service == ServiceName::Transcode && scenario == Scenario::Degrade {
        eprintln!(
            "testnet: --service transcode: degrade sets the nodes' config itself; use rtp-audio"
        );
        return ExitCode::from(2);
    }
    if let Some(interval) = args.probe_interval
        && !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&interval)
    {
        eprintln!("testnet: --probe-interval {interval:?}: batond takes 10ms to 60s");
        return ExitCode::from(2);
    }
    if !args.idle.is_zero() && scenario != Scenario::Kill {
        eprintln!("testnet: --idle is an option of `testnet run kill`");
        return ExitCode::from(2);
    }
    if args.cut_for != Duration::from_secs(10) && scenario != Scenario::Partition {
        eprintln!("testnet: --cut-for is an option of `testnet run partition`");
        return ExitCode::from(2);
    }
    if (args.region.is_some() || args.cut) && scenario != Scenario::Outage {
        eprintln!("testnet: --region and --cut are options of `testnet run outage`");
        return ExitCode::from(2);
    }
    if usize::from(args.net.nodes) < 3 && scenario != Scenario::Scale {
        eprintln!(
            "testnet: --nodes {}: scenarios need at least 3 nodes",
            args.net.nodes
        );
        return ExitCode::from(2);
    }
    let opts = Options {
        nodes: usize::from(args.net.nodes),
        wan,
        loss: args.net.loss,
        sessions: args.sessions,
        faults: args.faults,
        duration: args.duration,
        settle: args.settle,
        mdns: !args.net.no_mdns,
        bootstrap: !args.net.no_bootstrap,
        seed: args.net.seed,
        out: args.out.clone(),
        region: args.region.clone(),
        cut: args.cut,
        service: match args.service {
            ServiceName::RtpAudio => SessionService::RtpAudio,
            ServiceName::Transcode => SessionService::Transcode,
        },
        standby: args.standby.map(|s| match s {
            StandbyName::Cold => Standby::Cold,
            StandbyName::Warm => Standby::Warm,
        }),
        cut_for: args.cut_for,
        probe_interval: args.probe_interval,
        idle: args.idle,
    };
    match scenarios::run(scenario, &opts) {
        Ok(report) => {
            print!("{}", report.markdown());
            eprintln!("\nwrote {}", args.out.join("report.md").display());
            if report.all_met() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("testnet run {}: {e}", scenario.name());
            eprintln!("node logs: {}", args.out.join("nodes").display());
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    /// A random node crashes every ~3 s and restarts (same id) ~2.5 s later.
    Crash,
    /// Random loss (--loss, 5%) on every link, no crashes; no node may be declared dead.
    Loss,
    /// About 20% of the nodes are cut away for 10 s every 20 s.
    Partition,
    /// One node is paused (CPU-starved) in bursts of 0.2-2.5 s; only it may be declared dead.
    Pause,
}

impl From<ScenarioArg> for sim::Scenario {
    fn from(s: ScenarioArg) -> Self {
        match s {
            ScenarioArg::Crash => sim::Scenario::Crash,
            ScenarioArg::Loss => sim::Scenario::Loss,
            ScenarioArg::Partition => sim::Scenario::Partition,
            ScenarioArg::Pause => sim::Scenario::Pause,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    /// swim::Config::lan(): RTTs below ~5 ms.
    Lan,
    /// swim::Config::wan(): longer probe timeouts for RTTs of 20-300 ms.
    Wan,
}

#[derive(Debug, Args)]
struct SimArgs {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=20_000))]
    nodes: u32,

    /// Seed of every random choice: the same seed replays the same run.
    /// Random (and printed) when omitted.
    #[arg(long)]
    seed: Option<u64>,

    /// The faults to inject.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Crash)]
    scenario: ScenarioArg,

    /// Length of the measurement window, e.g. 60s or 10min
    /// [default: 30min for loss, 60s otherwise].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    duration: Option<Duration>,

    /// Probability that a message is lost, on every link, during the
    /// measurement window [default: 0.05 in the loss scenario, 0 otherwise].
    #[arg(long, value_name = "P", value_parser = probability)]
    loss: Option<f64>,

    /// Cut the partitioned minority one way only: it still hears the
    /// majority but cannot answer (partition scenario).
    #[arg(long)]
    asymmetric: bool,

    /// Share of the nodes cut away in each partition, over 0 and at most
    /// 0.5 (partition scenario) [default: 0.2].
    #[arg(long, value_name = "F", value_parser = minority_share)]
    minority: Option<f64>,

    /// Protocol profile [default: wan with --wan, lan otherwise].
    #[arg(long, value_enum)]
    profile: Option<Profile>,

    /// Shortest link RTT; each pair of nodes gets a fixed RTT drawn
    /// uniformly between --min-rtt and --max-rtt [default: 100us].
    #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "wan")]
    min_rtt: Option<Duration>,

    /// Longest link RTT [default: 1ms].
    #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "wan")]
    max_rtt: Option<Duration>,

    /// Take RTTs from a region matrix, a CSV file of `a,b,rtt_ms` lines after a
    /// header (e.g. testnet/data/wan-rtt.csv); nodes are placed in the
    /// regions round-robin, links inside a region have LAN RTTs.
    #[arg(long, value_name = "FILE")]
    wan: Option<PathBuf>,

    /// Largest extra delay of a message, as a fraction of its link's one-way delay.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1, value_parser = jitter)]
    jitter: f64,

    /// Minimum time between the first node's start and the measurement; the
    /// measurement also waits until the membership has converged and the
    /// join announcements have drained (at most 120 s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    warmup: Duration,

    /// Start every node at once, a group that has run for a while (keys agreed,
    /// membership tables full, maps shared), instead of discovering and joining
    /// one by one over 2 s: skips ~n²/2 handshakes and the wave of join
    /// announcements, which takes ~50 s of virtual time to drain at 1000
    /// nodes [default: above 256 nodes].
    #[arg(long, conflicts_with = "cold_start")]
    warm_start: bool,

    /// Start cold whatever the group size (see --warm-start).
    #[arg(long)]
    cold_start: bool,

    /// Sessions to open (through each node's API command, on random nodes,
    /// clients spread over four /24s) before the measurement window; the
    /// report then gives sessions_lost, double_owned and takeover_ms. Up to 64
    /// in a cold group spread by gossip over 2 s; more are opened at one
    /// instant and imported into every map (as after anti-entropy).
    #[arg(long, value_name = "S", default_value_t = 0)]
    sessions: usize,

    /// Correlated crashes: each crash takes down K distinct random nodes at
    /// the same instant (1 to nodes/2; crash scenario only). The report
    /// counts sessions_all_replicas_crashed, sessions whose primary and
    /// every backup were in one burst [default: 1].
    #[arg(long, value_name = "K")]
    crash_together: Option<usize>,

    /// Backups each session gets, 1 to 8 (the placement policy's `backups`)
    /// [default: the policy's, 2].
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u8).range(1..=8))]
    backups: Option<u8>,

    /// Length of the final phase without faults, after which the membership
    /// must have converged.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = positive_duration)]
    settle: Duration,

    /// Mean time between two metadata updates by random nodes (each one is a
    /// dissemination sample). Raise it (e.g. 1h) to measure monitoring
    /// traffic without application updates.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = positive_duration)]
    update_every: Duration,

    /// Wall clocks of the nodes disagree by up to this much (each node
    /// gets a fixed offset in [0, SKEW)): the shared probe schedule numbers
    /// its periods on them [default: 0s].
    #[arg(long, value_name = "SKEW", default_value = "0s", value_parser = duration)]
    clock_skew: Duration,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    tuning: Tuning,
}

/// How each node chooses whom to probe (`--probe-schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProbeSchedule {
    /// The overlay's shared schedule: every member probed by exactly one
    /// other in every protocol period (the default).
    Shared,
    /// Each node's own random permutation (SWIM 4.3).
    Random,
}

/// Overrides of the protocol profile, for experiments.
#[derive(Debug, Args)]
#[command(next_help_heading = "Protocol tuning (overrides of the profile)")]
struct Tuning {
    /// SWIM's protocol period.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    probe_interval: Option<Duration>,

    /// Direct-probe timeout before a member's RTT is known.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    probe_timeout: Option<Duration>,

    /// Lower bound of the adaptive direct-probe timeout.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    min_probe_timeout: Option<Duration>,

    /// Members asked to probe indirectly (k).
    #[arg(long, value_name = "K")]
    indirect_probes: Option<usize>,

    /// Lifeguard's alpha: minimum suspicion timeout in probe intervals (times log10 n).
    #[arg(long, value_name = "ALPHA", value_parser = positive_number)]
    suspicion_min_mult: Option<f64>,

    /// Lifeguard's beta: maximum suspicion timeout as a multiple of the minimum.
    #[arg(long, value_name = "BETA", value_parser = positive_number)]
    suspicion_max_mult: Option<f64>,

    /// An update is piggybacked this many times ceil(log10(n + 1)).
    #[arg(long, value_name = "N")]
    retransmit_mult: Option<u32>,

    /// A session-map delta is piggybacked this many times ceil(log10(n + 1)).
    #[arg(long, value_name = "N")]
    app_retransmit_mult: Option<u32>,

    /// Members a fresh update is pushed to at once.
    #[arg(long, value_name = "N")]
    gossip_fanout: Option<usize>,

    /// Most updates piggybacked on one message.
    #[arg(long, value_name = "N")]
    max_piggyback: Option<usize>,

    /// Time between two anti-entropy exchanges.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    sync_interval: Option<Duration>,

    /// Acks a second that may carry a node's coordinate unasked (0: only
    /// when asked).
    #[arg(long, value_name = "RATE", value_parser = non_negative_number)]
    coord_resend_per_s: Option<f64>,

    /// Whom each node probes in a protocol period.
    #[arg(long, value_enum, value_name = "SCHEDULE")]
    probe_schedule: Option<ProbeSchedule>,
}

impl Tuning {
    fn apply(&self, c: &mut swim::Config) {
        let Tuning {
            probe_interval,
            probe_timeout,
            min_probe_timeout,
            indirect_probes,
            suspicion_min_mult,
            suspicion_max_mult,
            retransmit_mult,
            app_retransmit_mult,
            gossip_fanout,
            max_piggyback,
            sync_interval,
            coord_resend_per_s,
            probe_schedule,
        } = *self;
        set(&mut c.probe_interval, probe_interval);
        set(&mut c.probe_timeout, probe_timeout);
        set(&mut c.min_probe_timeout, min_probe_timeout);
        set(&mut c.indirect_probes, indirect_probes);
        set(&mut c.suspicion_min_mult, suspicion_min_mult);
        set(&mut c.suspicion_max_mult, suspicion_max_mult);
        set(&mut c.retransmit_mult, retransmit_mult);
        set(&mut c.app_retransmit_mult, app_retransmit_mult);
        set(&mut c.gossip_fanout, gossip_fanout);
        set(&mut c.max_piggyback, max_piggyback);
        set(&mut c.sync_interval, sync_interval);
        set(&mut c.coord_resend_per_s, coord_resend_per_s);
        set(
            &mut c.shared_probe_schedule,
            probe_schedule.map(|s| s == ProbeSchedule::Shared),
        );
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("--min-rtt ({min:?}) is longer than --max-rtt ({max:?}): swap them")]
    RttRange { min: Duration, max: Duration },
    #[error(transparent)]
    Matrix(#[from] sim::MatrixError),
    #[error("--crash-together {k} is out of range: 1 to {max} (half of --nodes {nodes})")]
    CrashTogether { k: usize, max: usize, nodes: u32 },
    #[error("--crash-together only applies to --scenario crash, not {0}")]
    CrashTogetherScenario(sim::Scenario),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => match run_sim(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Demo { nodes, sessions } => {
            match baton_testnet::demo::run(&baton_testnet::demo::DemoConfig { nodes, sessions }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::MapScale { sessions, json } => match baton_testnet::mapscale::run(&sessions) {
            Ok(report) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(report) => {
                print!("{}", baton_testnet::mapscale::table(&report));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("testnet map-scale: {e}");
                ExitCode::from(2)
            }
        },
        Command::Bench {
            nodes,
            settle,
            idle,
            kills,
            json,
        } => {
            let config = baton_testnet::bench::BenchConfig {
                nodes,
                settle,
                idle,
                kills,
            };
            match baton_testnet::bench::run(&config) {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        );
                    } else {
                        println!("{report:#?}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => run_net(other),
    }
}

fn run_net(command: Command) -> ExitCode {
    match command {
        Command::Up(args) => {
            if let Err(e) = args.testbed() {
                eprintln!("testnet: {e}");
                return ExitCode::from(2);
            }
            let raw: Vec<String> = std::env::args().skip(2).collect();
            match control::up(&raw) {
                Ok(table) => {
                    println!("{}", table.trim_end());
                    println!(
                        "\ninspect a node: ip netns exec <namespace> baton members\n\
                         remove it all: testnet down"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("testnet: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(args) => {
            let config = match args.testbed() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("testnet: {e}");
                    return ExitCode::from(2);
                }
            };
            match control::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("testnet: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Down => {
            println!("{}", control::down());
            ExitCode::SUCCESS
        }
        Command::Status => control(Request::Status),
        Command::Kill { nodes } => control(Request::Kill { nodes }),
        Command::Pause { nodes } => control(Request::Pause { nodes }),
        Command::Resume { nodes } => control(Request::Resume { nodes }),
        Command::Restart { nodes } => control(Request::Restart { nodes }),
        Command::Cut {
            nodes,
            one_way,
            inbound,
        } => control(Request::Cut {
            nodes,
            one_way,
            inbound,
        }),
        Command::Heal { nodes } => control(Request::Heal { nodes }),
        Command::Loss { loss } => control(Request::Loss { loss }),
        Command::Run(args) => run_scenario(&args),
        Command::Study { docs, quick } => evaluate(&docs, quick, Some("study-")),
        Command::Evaluate { docs, quick, only } => evaluate(&docs, quick, only.as_deref()),
        Command::Sim(_)
        | Command::Demo { .. }
        | Command::Bench { .. }
        | Command::MapScale { .. } => ExitCode::from(2),
    }
}

fn evaluate(docs: &std::path::Path, quick: bool, only: Option<&str>) -> ExitCode {
    sys::catch_interrupts();
    match baton_testnet::evaluate::evaluate(docs, quick, only) {
        Ok(path) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("testnet evaluate: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_sim(args: &SimArgs) -> Result<ExitCode, CliError> {
    let seed = args.seed.unwrap_or_else(random_seed);
    let scenario = sim::Scenario::from(args.scenario);
    let mut cfg = ScenarioConfig::new(scenario, args.nodes as usize, seed);
    let profile = args.profile.unwrap_or(if args.wan.is_some() {
        Profile::Wan
    } else {
        Profile::Lan
    });
    let (mut protocol, profile_name) = match profile {
        Profile::Lan => (swim::Config::lan(), "lan"),
        Profile::Wan => (swim::Config::wan(), "wan"),
    };
    args.tuning.apply(&mut protocol);
    cfg.sim.protocol = protocol;
    cfg.profile = profile_name.to_owned();
    cfg.sim.latency = match &args.wan {
        Some(path) => Latency::Matrix(RttMatrix::load(path)?),
        None => {
            // One bound alone moves the other default out of its way.
            let (min, max) = match (args.min_rtt, args.max_rtt) {
                (Some(min), Some(max)) => (min, max),
                (Some(min), None) => (min, min.max(Duration::from_millis(1))),
                (None, Some(max)) => (max.min(Duration::from_micros(100)), max),
                (None, None) => (Duration::from_micros(100), Duration::from_millis(1)),
            };
            if min > max {
                return Err(CliError::RttRange { min, max });
            }
            Latency::Uniform {
                min_rtt: min,
                max_rtt: max,
            }
        }
    };
    cfg.sim.jitter = args.jitter;
    cfg.update_every = args.update_every;
    if let Some(d) = args.duration {
        cfg.duration = d;
    }
    if let Some(loss) = args.loss {
        cfg.loss = loss;
    }
    cfg.asymmetric = args.asymmetric;
    if let Some(f) = args.minority {
        cfg.partition_fraction = f;
    }
    cfg.warmup = args.warmup;
    if args.warm_start || args.cold_start {
        cfg.warm_start = args.warm_start;
    }
    cfg.sessions = args.sessions;
    if let Some(b) = args.backups {
        cfg.sim.sessions.policy.backups = usize::from(b);
    }
    if let Some(k) = args.crash_together {
        if scenario != sim::Scenario::Crash {
            return Err(CliError::CrashTogetherScenario(scenario));
        }
        let max = args.nodes as usize / 2;
        if !(1..=max).contains(&k) {
            return Err(CliError::CrashTogether {
                k,
                max,
                nodes: args.nodes,
            });
        }
        cfg.crash_together = k;
    }
    cfg.settle = args.settle;
    cfg.sim.clock_skew = args.clock_skew;
    cfg.replay = replay_command(seed);

    let report = sim::run(&cfg);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The command line that replays this run: the flags as given, with the
/// seed made explicit.
fn replay_command(seed: u64) -> String {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let sim_at = args.iter().position(|a| a == "sim").map_or(0, |p| p + 1);
    let mut flags = args.split_off(sim_at);
    let mut i = 0;
    while i < flags.len() {
        if flags[i] == "--seed" {
            flags.drain(i..(i + 2).min(flags.len()));
        } else if flags[i].starts_with("--seed=") {
            flags.remove(i);
        } else {
            i += 1;
        }
    }
    flags.push("--seed".to_owned());
    flags.push(seed.to_string());
    let quoted: Vec<String> = flags.iter().map(|f| shell_quote(f)).collect();
    format!(
        "cargo run --release -p baton-testnet --bin testnet -- sim {}",
        quoted.join(" ")
    )
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
}

/// A humantime duration (`250ms`, `1m 30s`, `10min`), or a decimal number
/// with one unit (`0.1ms`, `1.5s`), which humantime does not read.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .or_else(|e| decimal_duration(s.trim()).ok_or(e))
        .map_err(|e| {
            format!("`{s}` is not a duration ({e}); write e.g. 0.1ms, 250ms, 30s or 10min")
        })
}

fn decimal_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * seconds).ok()
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err("must be at most a week".to_owned());
    }
    Ok(d)
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("`{s}` is not a number"))
}

fn probability(s: &str) -> Result<f64, String> {
    let p = number(s)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!(
            "{p} is not a probability: use a value from 0 to 1, e.g. 0.05"
        ))
    }
}

fn minority_share(s: &str) -> Result<f64, String> {
    let f = number(s)?;
    if f > 0.0 && f <= 0.5 {
        Ok(f)
    } else {
        Err(format!(
            "{f} is not a minority's share: use a value over 0 and at most 0.5, e.g. 0.44"
        ))
    }
}

fn jitter(s: &str) -> Result<f64, String> {
    let j = number(s)?;
    if (0.0..=10.0).contains(&j) {
        Ok(j)
    } else {
        Err(format!(
            "{j} is out of range: use a fraction from 0 to 10, e.g. 0.1 for 10%"
        ))
    }
}

fn non_negative_number(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be zero or more"))
    }
}

fn positive_number(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be greater than zero"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flags_are_errors_not_panics() {
        for bad in [
            &["testnet", "sim", "--nodes", "1"][..],
            &["testnet", "sim", "--loss", "1.5"],
            &["testnet", "sim", "--duration", "soon"],
            &["testnet", "sim", "--scenario", "meteor"],
            &["testnet", "sim", "--wan", "x.csv", "--min-rtt", "1ms"],
            &["testnet", "sim", "--minority", "0"],
            &["testnet", "sim", "--minority", "0.6"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outage_flags_parse_and_regions_restrict_the_matrix() {
        let cli = Cli::try_parse_from([
            "testnet",
            "run",
            "outage",
            "--out",
            "/tmp/x",
            "--nodes",
            "6",
            "--wan",
            "--regions",
            "3",
            "--region",
            "centralus",
            "--cut",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.scenario, ScenarioName::Outage);
        assert_eq!(args.region.as_deref(), Some("centralus"));
        assert!(args.cut);
        let (m, label) = args.net.matrix().unwrap().unwrap();
        assert_eq!(m.regions(), ["westus", "centralus", "eastus"]);
        assert!(label.ends_with("first 3 regions"), "{label}");
        // --regions needs --wan, and 2 to 16 of them.
        assert!(
            Cli::try_parse_from(["testnet", "run", "outage", "--out", "x", "--regions", "3"])
                .is_err()
        );
        let cli = Cli::try_parse_from([
            "testnet",
            "run",
            "outage",
            "--out",
            "x",
            "--wan",
            "--regions",
            "1",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(args.net.matrix().unwrap_err().contains("--regions 1"));
    }

    #[test]
    fn run_takes_a_probe_interval_and_a_cut_length() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["testnet", "run", "partition", "--out", "/tmp/x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let Command::Run(args) = parse(&[]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(args.probe_interval, None);
        assert_eq!(args.cut_for, Duration::from_secs(10));
        let cli = parse(&["--probe-interval", "250ms", "--cut-for", "40s"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.probe_interval, Some(Duration::from_millis(250)));
        assert_eq!(args.cut_for, Duration::from_secs(40));
        assert_eq!(args.idle, Duration::ZERO);
        let cli = parse(&["--idle", "30s"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.idle, Duration::from_secs(30));
        assert!(parse(&["--idle", "soon"]).is_err());
        assert!(parse(&["--probe-interval", "0s"]).is_err());
        assert!(parse(&["--probe-interval", "fast"]).is_err());
    }

    #[test]
    fn a_minority_share_up_to_half_is_taken() {
        assert_eq!(minority_share("0.44"), Ok(0.44));
        assert_eq!(minority_share("0.5"), Ok(0.5));
        assert!(minority_share("0.51").is_err());
        assert!(minority_share("-0.1").is_err());
    }

    #[test]
    fn durations_read_as_humantime() {
        assert_eq!(duration("30min"), Ok(Duration::from_secs(1800)));
        assert_eq!(duration("0.1ms"), Ok(Duration::from_micros(100)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("100us"), Ok(Duration::from_micros(100)));
        assert!(duration("1.5 parsecs").is_err());
        assert!(duration("-1s").is_err());
    }

    #[test]
    fn quoting_keeps_plain_flags_plain() {
        assert_eq!(shell_quote("--nodes"), "--nodes");
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
