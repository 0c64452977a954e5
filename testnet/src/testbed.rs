//! The testnet proper: `batond` processes in network namespaces, one per
//! node, each behind a TAP device of the userspace WAN emulator, plus one
//! client namespace for the RTP receivers. Needs root. Dropping a
//! [`Testbed`] kills its processes, stops the switch (which removes the
//! TAPs) and deletes its namespaces, also when a run fails or panics.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::rtp_receiver::RtpReceiver;
use baton_node::views::{Event, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::emu::{Delays, Switch, SwitchHandle, round_robin};
use crate::local::bin_dir;
use crate::netns::{self, Netns};
use crate::sim::RttMatrix;
use crate::sys::{self, Signal};

/// Port of every node's QUIC listener (each node has its own address).
pub const QUIC_PORT: u16 = 7000;
/// Where every node's API listens, inside its namespace: `baton`'s default,
/// so `ip netns exec NS baton members` needs no flag.
pub const API_ADDR: &str = "127.0.0.1:7700";
/// The client namespace's address: RTP receivers listen here.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// Most nodes a testnet holds (addresses 198.18.1.1 to .250).
pub const MAX_NODES: usize = 250;

/// Why the testnet could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// Not root, or no /dev/net/tun, or no `ip`.
    #[error("the testnet needs root, /dev/net/tun and iproute2: {0}")]
    Unsupported(String),
    /// A binary is missing.
    #[error("{0} not found: build first with `cargo build --release --workspace --bins`")]
    MissingBinary(PathBuf),
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// A node's API did not answer as expected.
    #[error("node {node}: {why}")]
    Api {
        /// Node name.
        node: String,
        /// What went wrong.
        why: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// A system call or `ip` failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What runs in each node's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Program {
    /// `batond`.
    #[default]
    Batond,
    /// HashiCorp Serf's agent (Debian package `serf`, LAN profile): the
    /// anchor Baton's detection and traffic are compared with.
    Serf,
}

/// Serf's gossip port (TCP and UDP) on every node.
pub const SERF_PORT: u16 = 7946;
/// Serf's RPC address inside each namespace.
pub const SERF_RPC: &str = "127.0.0.1:7373";

/// How to build a testnet.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// What runs on the nodes.
    pub program: Program,
    /// Nodes (1 to [`MAX_NODES`]).
    pub nodes: usize,
    /// The RTT matrix whose regions the nodes are spread over, round-robin;
    /// `None` for a LAN without delay.
    pub wan: Option<RttMatrix>,
    /// RTT between two nodes of one region.
    pub intra_rtt: Duration,
    /// Jitter: each frame waits up to this fraction of its delay longer.
    pub jitter: f64,
    /// Random loss on every link, 0 to 1.
    pub loss: f64,
    /// Region of the client namespace (index into the matrix).
    pub client_region: usize,
    /// Whether nodes discover each other by mDNS.
    pub mdns: bool,
    /// Whether nodes 2..N are given node 1's address to join through.
    pub bootstrap: bool,
    /// More `batond` flags for every node.
    pub extra_flags: Vec<String>,
    /// Where data directories and logs go.
    pub work_dir: PathBuf,
    /// Seed of the emulator's loss and jitter.
    pub seed: u64,
}

impl TestbedConfig {
    /// `nodes` on a LAN, data under `work_dir`.
    pub fn new(nodes: usize, work_dir: &Path) -> TestbedConfig {
        TestbedConfig {
            program: Program::Batond,
            nodes,
            wan: None,
            intra_rtt: Duration::from_millis(2),
            jitter: 0.05,
            loss: 0.0,
            client_region: 0,
            mdns: true,
            bootstrap: true,
            extra_flags: Vec::new(),
            work_dir: work_dir.to_owned(),
            seed: 1,
        }
    }
}

/// One node of the testnet.
#[derive(Debug)]
pub struct TbNode {
    /// `n1`, `n2`, ...
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its region.
    pub region: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Whether it is stopped by SIGSTOP.
    pub paused: bool,
    child: Option<Child>,
    ns: Netns,
}

impl TbNode {
    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process runs (paused counts as running).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its namespace.
    pub fn netns(&self) -> &str {
        self.ns.name()
    }

    /// Its QUIC address.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/{}/udp/{QUIC_PORT}/quic-v1", self.addr)
    }
}

/// Interface counters of a node's `eth0`, from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IfaceCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// A running testnet.
#[derive(Debug)]
pub struct Testbed {
    // Dropped first: the switch closes the TAPs.
    switch: Switch,
    /// The nodes, by index (node `i` is named `n{i+1}`).
    pub nodes: Vec<TbNode>,
    client: Netns,
    delays: Delays,
    batond: PathBuf,
    config: TestbedConfig,
    prefix: String,
}

/// Checks that this process can make namespaces and TAP devices.
pub fn check_supported() -> Result<(), TestbedError> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err(TestbedError::Unsupported(format!(
            "running as uid {uid}; run as root (sudo)"
        )));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(TestbedError::Unsupported("/dev/net/tun is missing".into()));
    }
    netns::ip_output(&["-V"]).map_err(|e| TestbedError::Unsupported(e.to_string()))?;
    Ok(())
}

impl Testbed {
    /// Builds the testnet and starts every node (node 1 first, the others
    /// bootstrapped from it); answers once every API answers.
    pub fn up(config: TestbedConfig) -> Result<Testbed, TestbedError> {
        check_supported()?;
        if config.nodes == 0 || config.nodes > MAX_NODES {
            return Err(TestbedError::Invalid(format!(
                "--nodes {}: a testnet has 1 to {MAX_NODES} nodes",
                config.nodes
            )));
        }
        if !config.mdns && !config.bootstrap {
            return Err(TestbedError::Invalid(
                "--no-mdns with --no-bootstrap: the nodes would have no way to find each other"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.loss) {
            return Err(TestbedError::Invalid(format!(
                "--loss {}: a probability from 0 to 1",
                config.loss
            )));
        }
        let batond = match config.program {
            Program::Batond => bin_dir().join("batond"),
            Program::Serf => serf_binary()?,
        };
        if !batond.exists() {
            return Err(TestbedError::MissingBinary(batond));
        }
        netns::remove_stale();
        ensure_neighbour_table(config.nodes + 1)?;
        let pid = std::process::id();
        let prefix = netns::prefix_of(pid);
        std::fs::create_dir_all(&config.work_dir)?;

        let n = config.nodes;
        let regions: Vec<usize> = match &config.wan {
            Some(m) => {
                let mut r = round_robin(n, m.regions().len());
                r.push(config.client_region.min(m.regions().len() - 1));
                r
            }
            None => vec![0; n + 1],
        };
        let delays = match &config.wan {
            Some(m) => Delays::from_matrix(m, &regions, config.intra_rtt),
            None => Delays::lan(n + 1),
        };

        // Namespaces first (dropped, hence removed, if anything below fails),
        // then the TAPs: made here, moved into their namespace, renamed eth0.
        let mut namespaces = Vec::with_capacity(n + 1);
        for i in 0..n {
            namespaces.push(Netns::create(&format!("{prefix}n{}", i + 1))?);
        }
        let client = Netns::create(&format!("{prefix}c"))?;
        let mut taps = Vec::with_capacity(n + 1);
        for (i, ns) in namespaces.iter().chain([&client]).enumerate() {
            let tap_name = format!("bt{pid}t{i}");
            let tap = sys::open_tap(&tap_name)?;
            netns::ip(&["link", "set", &tap_name, "netns", ns.name()])?;
            ns.ip(&["link", "set", &tap_name, "name", "eth0"])?;
            let addr = if i < n { node_addr(i) } else { CLIENT_ADDR };
            ns.ip(&["addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            // mDNS multicasts to 224.0.0.251: route multicast to the LAN.
            ns.ip(&["route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            taps.push(tap);
        }
        let switch = Switch::start(
            taps,
            delays.clone(),
            config.jitter,
            config.loss,
            config.seed,
        )?;

        let mut nodes = Vec::with_capacity(n);
        for (i, ns) in namespaces.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let data_dir = config.work_dir.join(&name);
            std::fs::create_dir_all(&data_dir)?;
            nodes.push(TbNode {
                log: config.work_dir.join(format!("{name}.log")),
                addr: node_addr(i),
                region: delays.regions[i].clone(),
                name,
                data_dir,
                paused: false,
                child: None,
                ns,
            });
        }
        let mut testbed = Testbed {
            switch,
            nodes,
            client,
            delays,
            batond,
            config,
            prefix,
        };
        for i in 0..n {
            testbed.spawn(i)?;
            if i == 0 {
                testbed.wait_api(0, Duration::from_secs(15))?;
            }
        }
        for i in 1..n {
            testbed.wait_api(i, Duration::from_secs(15))?;
        }
        Ok(testbed)
    }

    /// Starts Serf's agent as node `i`: LAN profile, joining node 1, and an
    /// event handler that appends the Unix time (ns) of every member-failed
    /// event it sees to `failed` in its data directory.
    fn spawn_serf(&mut self, i: usize) -> Result<(), TestbedError> {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let failed = node.data_dir.join("failed");
        let mut cmd = node.ns.command(&self.batond);
        cmd.args(["agent", "-node", &node.name, "-profile", "lan"])
            .args(["-bind", &format!("{}:{SERF_PORT}", node.addr)])
            .args(["-rpc-addr", SERF_RPC, "-log-level", "warn"])
            .arg("-event-handler")
            .arg(format!("member-failed=date +%s%N >> {}", failed.display()));
        if i != 0 {
            cmd.args(["-join", &format!("{}:{SERF_PORT}", self.nodes[0].addr)]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        sys::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            TestbedError::Unsupported(format!("cannot start serf {}: {e}", self.nodes[i].name))
        })?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Serf's view of the members from node `i`: (name, status) pairs.
    pub fn serf_members(&self, i: usize) -> Result<Vec<(String, String)>, TestbedError> {
        let out = self.nodes[i]
            .ns
            .command(&self.batond)
            .args(["members", "-rpc-addr", SERF_RPC, "-format", "json"])
            .output()?;
        if !out.status.success() {
            return Err(TestbedError::Invalid(format!(
                "serf members on {}: {}",
                self.nodes[i].name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| TestbedError::Invalid(format!("serf members -format json: {e}")))?;
        Ok(value["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_string(),
                    m["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// The Unix times (ms) at which Serf on node `i` saw members fail.
    pub fn serf_failures(&self, i: usize) -> Vec<f64> {
        std::fs::read_to_string(self.nodes[i].data_dir.join("failed"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|ns| ns / 1e6)
            .collect()
    }

    /// The prefix of its namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How it was built.
    pub fn config(&self) -> &TestbedConfig {
        &self.config
    }

    /// The emulator's rules and counters (port `i` is node `i`, the last
    /// port the client namespace).
    pub fn switch(&self) -> SwitchHandle {
        self.switch.handle()
    }

    /// The client namespace's name.
    pub fn client_netns(&self) -> &str {
        self.client.name()
    }

    /// Runs `f` on a thread inside the client namespace (a host that is no
    /// member of the overlay).
    pub fn in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TestbedError> {
        Ok(self.client.run(f)?)
    }

    /// The switch port of the client namespace.
    pub fn client_port(&self) -> usize {
        self.nodes.len()
    }

    /// The mean RTT the emulator imposes between nodes `a` and `b`: the
    /// matrix's RTT plus the mean jitter (each way waits up to `jitter`
    /// of its delay longer, half of that on average).
    pub fn true_rtt(&self, a: usize, b: usize) -> Duration {
        self.delays
            .rtt(a, b)
            .mul_f64(1.0 + self.config.jitter / 2.0)
    }

    /// Node index by name (`n3`) or 1-based number (`3`).
    pub fn find(&self, name: &str) -> Result<usize, TestbedError> {
        let number = name.strip_prefix('n').unwrap_or(name);
        number
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=self.nodes.len()).contains(k))
            .map(|k| k - 1)
            .ok_or_else(|| {
                TestbedError::Invalid(format!(
                    "no node `{name}`: the nodes are n1 to n{} (or 1 to {})",
                    self.nodes.len(),
                    self.nodes.len()
                ))
            })
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestbedError> {
        if self.config.program == Program::Serf {
            return self.spawn_serf(i);
        }
        // n1's address, or, while n1 is down (a region outage took it too),
        // the first other node that runs: a node restarted then still finds
        // the survivors without mDNS.
        let bootstrap = if i != 0 && self.nodes[0].is_running() {
            Some(self.nodes[0].multiaddr())
        } else {
            self.nodes
                .iter()
                .enumerate()
                .find(|(j, n)| *j != i && n.is_running())
                .map(|(_, n)| n.multiaddr())
        };
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = node.ns.command(&self.batond);
        cmd.args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.multiaddr()])
            .args(["--api", API_ADDR]);
        if let Some(bootstrap) = bootstrap.filter(|_| self.config.bootstrap) {
            cmd.args(["--bootstrap", &bootstrap]);
        }
        // On a WAN each node announces its region, so that placement spreads
        // backups over regions (docs/operations.md, "Placement across
        // failure domains").
        if self.config.wan.is_some() {
            cmd.args([
                "--tag",
                &format!("region={}", region_tag_value(&node.region)),
            ]);
        }
        if !self.config.mdns {
            cmd.arg("--no-mdns");
        }
        if self.config.wan.is_some() {
            cmd.args(["--profile", "wan"]);
        }
        cmd.args(&self.config.extra_flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Killed with us, even by SIGKILL: no node outlives its testnet.
        sys::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            TestbedError::Unsupported(format!("cannot start batond {}: {e}", node.name))
        })?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Starts node `i` again after [`kill`](Self::kill) or
    /// [`stop`](Self::stop) (same data directory, same identity).
    pub fn start(&mut self, i: usize) -> Result<(), TestbedError> {
        if self.nodes[i].is_running() {
            return Err(TestbedError::Invalid(format!(
                "{} is running already",
                self.nodes[i].name
            )));
        }
        self.spawn(i)
    }

    /// Stops node `i` politely (SIGTERM: it says goodbye), killing it if it
    /// has not exited within `timeout`.
    pub fn stop(&mut self, i: usize, timeout: Duration) {
        if let Some(mut child) = self.nodes[i].child.take() {
            if self.nodes[i].paused {
                let _ = sys::signal(child.id(), Signal::Cont);
            }
            let _ = sys::signal(child.id(), Signal::Term);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Kills node `i` with SIGKILL: a crash, no goodbye.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Kills the nodes of `group` with SIGKILL together: every signal is
    /// sent before any of them is reaped (a region outage).
    pub fn kill_many(&mut self, group: &[usize]) {
        let mut children = Vec::new();
        for &i in group {
            if let Some(mut child) = self.nodes[i].child.take() {
                let _ = child.kill();
                children.push(child);
            }
            self.nodes[i].paused = false;
        }
        for mut child in children {
            let _ = child.wait();
        }
    }

    /// Restarts node `i` with its data directory (same identity).
    pub fn restart(&mut self, i: usize) -> Result<(), TestbedError> {
        self.kill(i);
        self.spawn(i)
    }

    /// Stops node `i` with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> Result<(), TestbedError> {
        let pid = self.running_pid(i)?;
        sys::signal(pid, Signal::Stop)?;
        self.nodes[i].paused = true;
        Ok(())
    }

    /// Resumes node `i` with SIGCONT.
    pub fn resume(&mut self, i: usize) -> Result<(), TestbedError> {
        let pid = self.running_pid(i)?;
        sys::signal(pid, Signal::Cont)?;
        self.nodes[i].paused = false;
        Ok(())
    }

    fn running_pid(&self, i: usize) -> Result<u32, TestbedError> {
        self.nodes[i]
            .pid()
            .ok_or_else(|| TestbedError::Invalid(format!("{} is not running", self.nodes[i].name)))
    }

    /// Cuts `group` away from every other node and the client: nothing
    /// crosses, in both directions, or only out of the group when `one_way`
    /// (an asymmetric partition: the group hears the rest, the rest never
    /// hears the group).
    pub fn cut(&self, group: &[usize], one_way: bool) {
        let switch = self.switch.handle();
        for &a in group {
            for b in 0..switch.ports() {
                if group.contains(&b) {
                    continue;
                }
                switch.block(a, b);
                if !one_way {
                    switch.block(b, a);
                }
            }
        }
    }

    /// Cuts everything sent to `group` from every other node and the
    /// client, leaving what the group sends: the group cannot hear, the
    /// rest still hears it (the other asymmetric partition).
    pub fn cut_inbound(&self, group: &[usize]) {
        let switch = self.switch.handle();
        for &a in group {
            for b in 0..switch.ports() {
                if !group.contains(&b) {
                    switch.block(b, a);
                }
            }
        }
    }

    /// Restores every link of the nodes in `group`.
    pub fn heal(&self, group: &[usize]) {
        let switch = self.switch.handle();
        for &a in group {
            switch.heal_port(a);
        }
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        self.switch.handle().heal_all();
    }

    /// Waits until node `i` answers `/v1/status` (Serf: its RPC).
    pub fn wait_api(&self, i: usize, timeout: Duration) -> Result<(), TestbedError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if sys::interrupted() {
                return Err(TestbedError::Interrupted);
            }
            let up = match self.config.program {
                Program::Batond => self.get::<Status>(i, "/v1/status").is_ok(),
                Program::Serf => self.serf_members(i).is_ok(),
            };
            if up {
                return Ok(());
            }
            if let Some(child) = &self.nodes[i].child
                && !sys::process_exists(child.id())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestbedError::Timeout(format!(
            "{} API did not come up (see {})",
            self.nodes[i].name,
            self.nodes[i].log.display()
        )))
    }

    /// GETs `path` from node `i`'s API, decoded (from inside its namespace).
    pub fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        i: usize,
        path: &str,
    ) -> Result<T, TestbedError> {
        let path_owned = path.to_owned();
        self.nodes[i]
            .ns
            .run(move || crate::http::get(API_ADDR, &path_owned))?
            .map_err(|why| self.api_error(i, why))
    }

    /// GETs `path` from node `i`'s API as text.
    pub fn get_text(&self, i: usize, path: &str) -> Result<String, TestbedError> {
        let path_owned = path.to_owned();
        self.nodes[i]
            .ns
            .run(move || crate::http::get_text(API_ADDR, &path_owned))?
            .map_err(|why| self.api_error(i, why))
    }

    /// POSTs `body` to node `i`'s API; answers the decoded reply.
    pub fn post<T: DeserializeOwned + Send + 'static>(
        &self,
        i: usize,
        path: &str,
        body: &(impl Serialize + Clone + Send + 'static),
    ) -> Result<T, TestbedError> {
        let (path_owned, body) = (path.to_owned(), body.clone());
        self.nodes[i]
            .ns
            .run(move || crate::http::post(API_ADDR, &path_owned, &body))?
            .map_err(|why| self.api_error(i, why))
    }

    fn api_error(&self, i: usize, why: String) -> TestbedError {
        TestbedError::Api {
            node: self.nodes[i].name.clone(),
            why,
        }
    }

    /// Node `i`'s peer id.
    pub fn peer_id(&self, i: usize) -> Result<String, TestbedError> {
        Ok(self.get::<Status>(i, "/v1/status")?.id)
    }

    /// Follows node `i`'s event stream on a thread inside its namespace.
    pub fn follow_events(&self, i: usize) -> Result<mpsc::Receiver<Event>, TestbedError> {
        let (tx, rx) = mpsc::sync_channel(4096);
        self.nodes[i]
            .ns
            .spawn(move || crate::http::follow_events(API_ADDR, &tx))?;
        Ok(rx)
    }

    /// Member (name, state) pairs node `i` holds.
    pub fn member_states(&self, i: usize) -> Result<Vec<(String, String)>, TestbedError> {
        if self.config.program == Program::Serf {
            return self.serf_members(i);
        }
        Ok(crate::http::member_states(self.get(i, "/v1/members")?))
    }

    /// Waits until every running, unpaused node sees every other one alive.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, TestbedError> {
        let started = Instant::now();
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running() && !self.nodes[*i].paused)
            .collect();
        while started.elapsed() < timeout {
            if sys::interrupted() {
                return Err(TestbedError::Interrupted);
            }
            let done = up.iter().all(|i| {
                self.member_states(*i).is_ok_and(|states| {
                    up.iter().filter(|j| *j != i).all(|j| {
                        states
                            .iter()
                            .any(|(name, state)| *name == self.nodes[*j].name && state == "alive")
                    })
                })
            });
            if done {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(TestbedError::Timeout(format!(
            "membership of {} nodes did not converge in {timeout:?}",
            up.len()
        )))
    }

    /// An RTP receiver in the client namespace, on a free port.
    pub fn receiver(&self) -> Result<RtpReceiver, TestbedError> {
        Ok(self
            .client
            .run(|| RtpReceiver::bind(SocketAddr::from((CLIENT_ADDR, 0))))??)
    }

    /// Resident memory (kB) and CPU time (ticks) of node `i`.
    pub fn proc_usage(&self, i: usize) -> Option<(u64, u64)> {
        crate::http::proc_usage(self.nodes[i].pid()?)
    }

    /// The kernel's counters of node `i`'s `eth0`.
    pub fn iface_counters(&self, i: usize) -> Result<IfaceCounters, TestbedError> {
        let json = netns::ip_output(&[
            "-n",
            self.nodes[i].ns.name(),
            "-s",
            "-j",
            "link",
            "show",
            "eth0",
        ])?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| TestbedError::Invalid(format!("ip -j link: {e}")))?;
        let stats = &value[0]["stats64"];
        let field = |dir: &str, what: &str| stats[dir][what].as_u64().unwrap_or(0);
        Ok(IfaceCounters {
            rx_bytes: field("rx", "bytes"),
            tx_bytes: field("tx", "bytes"),
            rx_packets: field("rx", "packets"),
            tx_packets: field("tx", "packets"),
        })
    }

    /// A table of the nodes: name, address, region, pid, state.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{:<5} {:<14} {:<20} {:<18} {:>8}  {}\n",
            "NODE", "ADDRESS", "REGION", "NAMESPACE", "PID", "STATE"
        );
        for node in &self.nodes {
            let state = match (node.is_running(), node.paused) {
                (false, _) => "killed",
                (true, true) => "paused",
                (true, false) => "running",
            };
            out.push_str(&format!(
                "{:<5} {:<14} {:<20} {:<18} {:>8}  {}\n",
                node.name,
                node.addr.to_string(),
                node.region,
                node.ns.name(),
                node.pid()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                state
            ));
        }
        let port_name = |p: usize| {
            self.nodes
                .get(p)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| "client".into())
        };
        let cuts: Vec<String> = self
            .switch
            .handle()
            .blocked()
            .into_iter()
            .map(|(a, b)| format!("{}->{}", port_name(a), port_name(b)))
            .collect();
        out.push_str(&format!(
            "client namespace {} at {CLIENT_ADDR} ({}); loss {}; cut links: {}\n",
            self.client.name(),
            self.delays.regions[self.nodes.len()],
            self.switch.handle().loss(),
            if cuts.is_empty() {
                "none".into()
            } else {
                cuts.join(" ")
            }
        ));
        out
    }
}

/// The kernel's ARP table is one for all namespaces, and by default holds
/// 1024 entries (`gc_thresh3`), garbage-collecting above 128: `hosts`
/// namespaces that all talk to each other need hosts² entries, so 64 nodes
/// overflow it ("neighbor table overflow!"), new neighbours cannot be
/// resolved, and sends fail with ENOBUFS. Raises the thresholds (never
/// lowers them) so that the testnet's entries are neither refused nor
/// collected.
fn ensure_neighbour_table(hosts: usize) -> Result<(), TestbedError> {
    let needed = hosts * hosts + 1024;
    let dir = Path::new("/proc/sys/net/ipv4/neigh/default");
    for (file, want) in [
        ("gc_thresh1", needed),
        ("gc_thresh2", needed * 2),
        ("gc_thresh3", needed * 4),
    ] {
        let path = dir.join(file);
        let now: usize = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if now < want {
            std::fs::write(&path, want.to_string()).map_err(|e| {
                TestbedError::Unsupported(format!(
                    "cannot raise {} to {want} for {hosts} hosts: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// Whether Serf's agent is on the PATH (`testnet evaluate` installs the
/// Debian package when it is not).
pub fn serf_installed() -> bool {
    serf_binary().is_ok()
}

/// Serf's agent: `serf` on the PATH (Debian package `serf`).
fn serf_binary() -> Result<PathBuf, TestbedError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("serf"))
        .find(|p| p.exists())
        .ok_or_else(|| {
            TestbedError::Unsupported(
                "serf is not installed: apt-get install serf (the comparison runs Serf beside Baton)"
                    .into(),
            )
        })
}

/// A region's name as a tag value: at most 64 characters of letters,
/// digits and `_ - . : / @ +` (batond refuses others), anything else
/// replaced by `-`.
pub fn region_tag_value(region: &str) -> String {
    let v: String = region
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.:/@+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// Address of node `i` (0-based).
pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, (i + 1) as u8)
}

/// Milliseconds since the Unix epoch, as the nodes stamp their events.
pub fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused
                && let Some(pid) = self.nodes[i].pid()
            {
                let _ = sys::signal(pid, Signal::Cont);
            }
            self.kill(i);
        }
        // Then the fields drop: the switch (closing the TAPs) and the
        // namespaces.
    }
}

#[cfg(test)]
mod tests {
    use super::region_tag_value;

    #[test]
    fn region_names_become_tag_values_batond_accepts() {
        assert_eq!(region_tag_value("westus"), "westus");
        assert_eq!(region_tag_value("eu west=1,x"), "eu-west-1-x");
        assert_eq!(region_tag_value(""), "-");
        assert_eq!(region_tag_value(&"a".repeat(80)).len(), 64);
        for v in ["westus", "eu-west-1-x", "-"] {
            baton_protocol::meta::parse_tag(&format!("region={v}")).expect(v);
        }
    }
}
