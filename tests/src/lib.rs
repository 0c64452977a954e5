//! Helpers shared by Baton's integration and end-to-end tests; the tests
//! themselves live in `tests/tests/`.

pub mod batond;

use std::path::PathBuf;
use std::time::Duration;

use baton_node::Node;
use baton_node::config::{Config, Flags};
use clap_free::parse_flags;

mod clap_free {
    use baton_node::config::Flags;

    /// Parses `batond` flags the way the binary does.
    pub fn parse_flags(args: &[String]) -> Flags {
        use clap::Parser;
        Flags::try_parse_from(std::iter::once("batond".to_string()).chain(args.iter().cloned()))
            .expect("test flags parse")
    }
}

/// A temporary directory removed on drop, even when the test fails (its
/// logs' tails are printed then); `BATON_TEST_KEEP=1` keeps it.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `label`.
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("baton-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(&self.0);
        }
        if std::env::var_os("BATON_TEST_KEEP").is_some() {
            eprintln!("kept {} (BATON_TEST_KEEP)", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines of each log kept in a failed test's output.
const LOG_TAIL: usize = 80;

/// Prints the tail of every `*.log` directly under `dir` to stderr, so a
/// test that fails in CI shows what its nodes said before the directory
/// goes.
fn dump_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL);
        eprintln!(
            "---- {} (last {} of {} lines) ----",
            log.display(),
            lines.len() - from,
            lines.len()
        );
        for line in &lines[from..] {
            eprintln!("{line}");
        }
    }
}

/// Configuration of an in-process test node on 127.0.0.1: QUIC on a free
/// port, API on a free port, mDNS off. `extra` are more `batond` flags.
pub fn loopback_config(name: &str, data_dir: &std::path::Path, extra: &[&str]) -> Config {
    let mut args: Vec<String> = [
        "--name",
        name,
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--no-mdns",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let flags: Flags = parse_flags(&args);
    Config::load(flags).expect("test config is valid")
}

/// The first listen address of `node`, with `/p2p/<peer id>`.
pub async fn dial_addr(node: &Node) -> String {
    let addrs = node.listen_addrs(Duration::from_secs(5)).await;
    let addr = addrs.first().expect("node listens");
    format!("{addr}/p2p/{}", node.peer_id)
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns
/// whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state `observer` holds of `member`, if it knows it.
pub fn state_of(observer: &Node, member: &Node) -> Option<(String, u32)> {
    observer
        .shared
        .members
        .get(&member.peer_id.to_base58())
        .map(|m| (m.state.clone(), m.incarnation))
}

/// Path of a binary of this workspace (`batond`, `baton`, `testnet`), built
/// on first use so that tests of this crate can run real processes.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test runs from target/<profile>/deps")
        .to_path_buf();
    let profile_is_release = dir.file_name().is_some_and(|n| n == "release");
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "baton-node",
            "-p",
            "baton-testnet",
            "--bins",
        ]);
        if profile_is_release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the workspace binaries failed");
    });
    dir.join(name)
}

/// Whether this process may create network namespaces: root, with `ip`.
/// In CI (`CI=true`) a test that needs them must fail rather than skip.
pub fn can_use_netns() -> Result<(), String> {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    let ip = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    if !ip.status.success() {
        return Err(format!(
            "ip netns fails: {}",
            String::from_utf8_lossy(&ip.stderr)
        ));
    }
    Ok(())
}

/// Whether the program `tool` runs here. Outside CI a missing tool skips
/// the test (false, with a message); in CI (`CI=true`), where `.ci/run`
/// installs the Debian package `package`, it fails it.
pub fn require_tool(test: &str, tool: &str, package: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs {tool}, and CI must run it: .ci/run installs the package {package}");
    }
    eprintln!("skipping {test}: {tool} is not installed (apt-get install {package})");
    false
}

/// The repository's root (where `deploy/` and `docs/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Runs `program args` with `input` on its standard input; answers whether
/// it succeeded and what it printed (stdout, then stderr).
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_owned();
    // Written from a thread: a program that answers before reading all of
    // its input must not deadlock the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().expect("wait for the program");
    let _ = writer.join();
    let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

/// Skips (returns false) outside CI when namespaces are unavailable, and
/// panics in CI, where end-to-end tests must run.
pub fn require_netns(test: &str) -> bool {
    match can_use_netns() {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test} needs network namespaces (root and iproute2) and CI must run it: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why} (it runs in CI as root)");
            false
        }
    }
}

pub mod lan;
