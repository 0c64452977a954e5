//! Network namespaces: made with `ip netns`, entered per thread, removed on
//! drop. Names carry the pid of the process that made them
//! (`bt<pid>-...`), so leftovers of a process that died without cleaning up
//! are recognised and removed by the next run.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::process::Command;

use crate::sys;

/// Runs `ip args...`; the error carries ip's own message.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        io::Error::new(e.kind(), format!("cannot run `ip` (install iproute2): {e}"))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `ip args...` and answers its standard output.
pub fn ip_output(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Names of the namespaces that exist now.
pub fn list() -> Vec<String> {
    ip_output(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Names of the namespaces that exist now and start with `prefix`.
pub fn with_prefix(prefix: &str) -> Vec<String> {
    list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The prefix of every namespace a testnet made in process `pid`.
pub fn prefix_of(pid: u32) -> String {
    format!("bt{pid}-")
}

/// Removes the namespaces of testnets whose process is gone (a run killed
/// with SIGKILL cannot clean up after itself); answers their names.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in list() {
        let Some(pid) = name
            .strip_prefix("bt")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !sys::process_exists(pid) && ip(&["netns", "delete", &name]).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// A namespace this process made; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes namespace `name` with its loopback up.
    pub fn create(name: &str) -> io::Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file under /run/netns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside this namespace (`ip netns
    /// exec`), for processes that must live there, such as `batond`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside this namespace and answers its result:
    /// sockets `f` opens belong to the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let path = self.path();
        std::thread::spawn(move || -> io::Result<T> {
            sys::enter_netns(&path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("a thread inside a namespace panicked"))?
    }

    /// Starts `f` on a thread inside this namespace and returns at once.
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let path = self.path();
        std::thread::Builder::new()
            .name(format!("in {}", self.name))
            .spawn(move || {
                if sys::enter_netns(&path).is_ok() {
                    f();
                }
            })?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}
