//! A real `batond` process for end-to-end tests: its stderr collected line
//! by line, killed with SIGKILL (and waited for) on drop, so that a failing
//! test leaves none behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_node::cli::client::ApiClient;

use crate::workspace_bin;

/// A running `batond` (see the module's doc).
#[derive(Debug)]
pub struct Batond {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Batond {
    /// Starts `batond` with `args`, without the caller's `RUST_LOG` and
    /// `NO_COLOR`.
    pub fn start(args: &[&str]) -> Batond {
        let mut child = Command::new(workspace_bin("batond"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start batond");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Batond { child, log }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// How many lines it logged so far.
    pub fn lines(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Log lines from number `from` on.
    pub fn log_since(&self, from: usize) -> String {
        self.log.lock().unwrap()[from..].join("\n")
    }

    /// Waits until a log line contains `text`; returns that line.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> String {
        self.wait_for_since(0, text, timeout)
    }

    /// Waits until a log line from number `from` on contains `text`.
    pub fn wait_for_since(&self, from: usize, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log.lock().unwrap()[from..]
                .iter()
                .find(|l| l.contains(text))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "batond did not log {text:?} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The API address of a node started with `--log-format json`, from
    /// its "node started" line.
    pub fn api_addr(&self) -> String {
        let line = self.wait_for("\"node started\"", Duration::from_secs(30));
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        json["fields"]["api_addr"]
            .as_str()
            .expect("node started names api_addr")
            .to_string()
    }

    /// A client of that API.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.api_addr(), None).unwrap()
    }

    /// Sends it SIGHUP.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its exit status, if it exits within `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for batond") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and waits for it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Batond {
    fn drop(&mut self) {
        self.kill_9();
    }
}
