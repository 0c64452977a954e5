//! Real `batond` processes on loopback: started, killed, restarted and
//! queried through their HTTP API. The overlay benchmark and the demo run on
//! this; nothing here needs root, and only 127.0.0.1 is ever addressed.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_node::views::{Event, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a local cluster could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The `batond` binary is missing.
    #[error("{0} not found: build it first with `cargo build --release -p baton-node`")]
    MissingBinary(PathBuf),
    /// A process could not be started.
    #[error("cannot start {what}: {why}")]
    Spawn {
        /// Which process.
        what: String,
        /// Why.
        why: String,
    },
    /// A node's API did not answer as expected.
    #[error("node {node}: {why}")]
    Api {
        /// The node's name.
        node: String,
        /// What went wrong.
        why: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A file system operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One `batond` process.
#[derive(Debug)]
pub struct LocalNode {
    /// Its name (`n0`, `n1`, ...).
    pub name: String,
    /// Its API address.
    pub api: SocketAddr,
    /// Its QUIC port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its QUIC listen address.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/udp/{}/quic-v1", self.port)
    }
}

/// A set of `batond` processes on loopback, bootstrapped from the first.
/// Dropping it kills every process and removes its directory.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, by index.
    pub nodes: Vec<LocalNode>,
    batond: PathBuf,
    root: PathBuf,
    extra: Vec<String>,
}

/// The directory holding the binaries next to the running executable
/// (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().map(Path::to_path_buf).unwrap_or(d)
            } else {
                d
            }
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    /// Starts `n` nodes; node 0 first, the others bootstrapped from it.
    /// `extra` are more `batond` flags for every node.
    pub fn start(n: usize, extra: &[String]) -> Result<LocalCluster, LocalError> {
        let batond = bin_dir().join("batond");
        if !batond.exists() {
            return Err(LocalError::MissingBinary(batond));
        }
        let root = std::env::temp_dir().join(format!("baton-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            batond,
            root,
            extra: extra.to_vec(),
        };
        for i in 0..n {
            let name = format!("n{i}");
            let data_dir = cluster.root.join(&name);
            let node = LocalNode {
                log: cluster.root.join(format!("{name}.log")),
                name,
                api: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
                port: free_udp_port()?,
                data_dir,
                child: None,
            };
            cluster.nodes.push(node);
            cluster.spawn(i)?;
            if i == 0 {
                cluster.wait_api(0, Duration::from_secs(10))?;
            }
        }
        Ok(cluster)
    }

    /// The directory holding data dirs and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn spawn(&mut self, i: usize) -> Result<(), LocalError> {
        let bootstrap = self.nodes[0].multiaddr();
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(&self.batond);
        cmd.args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.multiaddr()])
            .args(["--api", &node.api.to_string()])
            .arg("--no-mdns");
        if i != 0 {
            cmd.args(["--bootstrap", &bootstrap]);
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| LocalError::Spawn {
            what: format!("batond {}", node.name),
            why: e.to_string(),
        })?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Kills node `i` with SIGKILL: no goodbye, as a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts node `i` with the same data directory (same identity).
    pub fn restart(&mut self, i: usize) -> Result<(), LocalError> {
        self.kill(i);
        self.spawn(i)
    }

    /// Waits until node `i` answers `/v1/status`.
    pub fn wait_api(&self, i: usize, timeout: Duration) -> Result<(), LocalError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.get::<Status>(i, "/v1/status").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(LocalError::Timeout(format!(
            "{} API did not come up",
            self.nodes[i].name
        )))
    }

    /// GETs `path` from node `i`'s API, decoded.
    pub fn get<T: DeserializeOwned>(&self, i: usize, path: &str) -> Result<T, LocalError> {
        crate::http::get(&self.nodes[i].api.to_string(), path).map_err(|why| self.api_error(i, why))
    }

    /// POSTs `body` as JSON to node `i`'s API; answers the decoded reply.
    pub fn post<T: DeserializeOwned>(
        &self,
        i: usize,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, LocalError> {
        crate::http::post(&self.nodes[i].api.to_string(), path, body)
            .map_err(|why| self.api_error(i, why))
    }

    fn api_error(&self, i: usize, why: String) -> LocalError {
        LocalError::Api {
            node: self.nodes[i].name.clone(),
            why,
        }
    }

    /// Member states node `i` holds, by name.
    pub fn member_states(&self, i: usize) -> Result<Vec<(String, String)>, LocalError> {
        Ok(crate::http::member_states(self.get(i, "/v1/members")?))
    }

    /// Waits until every running node sees every other running node alive.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, LocalError> {
        let started = Instant::now();
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect();
        while started.elapsed() < timeout {
            let done = running.iter().all(|i| {
                self.member_states(*i).is_ok_and(|states| {
                    running.iter().filter(|j| *j != i).all(|j| {
                        states
                            .iter()
                            .any(|(name, state)| *name == self.nodes[*j].name && state == "alive")
                    })
                })
            });
            if done {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(LocalError::Timeout("membership did not converge".into()))
    }

    /// Follows node `i`'s event stream on a thread; every event is sent on
    /// the returned channel until the stream or the receiver ends.
    pub fn follow_events(&self, i: usize) -> std::sync::mpsc::Receiver<Event> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let api = self.nodes[i].api.to_string();
        std::thread::spawn(move || crate::http::follow_events(&api, &tx));
        rx
    }

    /// Resident memory (kB) and CPU time (clock ticks) of node `i` from /proc.
    pub fn proc_usage(&self, i: usize) -> Option<(u64, u64)> {
        crate::http::proc_usage(self.nodes[i].pid()?)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Bytes received on the loopback interface so far (from /proc/net/dev):
/// with only our nodes talking on it, the traffic they cause, all headers
/// included.
pub fn loopback_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    dev.lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|b| b.parse().ok())
}
