//! Network namespaces for end-to-end tests: a "switch" namespace holding a
//! bridge, and one namespace per host joined to it by a veth pair, addressed
//! in 198.18.0.0/15 (the benchmarking range). Everything is removed on drop,
//! also when the test panics; processes started in a host are killed first.

use std::process::{Child, Command, Stdio};

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bridged set of namespaces.
#[derive(Debug)]
pub struct Lan {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
    children: Vec<Child>,
}

impl Lan {
    /// Creates `n` hosts `198.18.<subnet>.1..=n`/24 on one bridge.
    pub fn new(label: &str, n: usize, subnet: u8) -> Result<Lan, String> {
        // Names must be short (15 bytes for links); the pid keeps parallel
        // runs apart.
        let prefix = format!("b{}{}", label, std::process::id() % 100_000);
        let switch = format!("{prefix}s");
        let mut lan = Lan {
            prefix: prefix.clone(),
            switch: switch.clone(),
            hosts: Vec::new(),
            children: Vec::new(),
        };
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let host = format!("{prefix}h{i}");
            ip(&["netns", "add", &host])?;
            lan.hosts.push(host.clone());
            let (inner, outer) = (format!("{prefix}i{i}"), format!("{prefix}o{i}"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &host])?;
            ip(&["link", "set", &outer, "netns", &switch])?;
            ip(&["-n", &switch, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &outer, "up"])?;
            ip(&["-n", &host, "link", "set", &inner, "name", "eth0"])?;
            let addr = format!("198.18.{subnet}.{}/24", i + 1);
            ip(&["-n", &host, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            // mDNS multicasts to 224.0.0.251: route it to the LAN.
            ip(&["-n", &host, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    /// The namespace name of host `i`.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Starts `program args` inside host `i`; it is killed when the LAN drops.
    pub fn spawn(
        &mut self,
        i: usize,
        program: &std::path::Path,
        args: &[String],
        log: &std::path::Path,
    ) -> Result<u32, String> {
        let log = std::fs::File::create(log).map_err(|e| format!("log file: {e}"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i]])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Runs `program args` inside host `i` to completion; returns stdout.
    pub fn run(
        &self,
        i: usize,
        program: &std::path::Path,
        args: &[&str],
    ) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i]])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Cuts host `i` off the LAN (its port on the bridge goes down): a
    /// partition of that host from all others.
    pub fn cut(&self, i: usize) -> Result<(), String> {
        let outer = format!("{}o{i}", self.prefix);
        ip(&["-n", &self.switch, "link", "set", &outer, "down"])
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        let outer = format!("{}o{i}", self.prefix);
        ip(&["-n", &self.switch, "link", "set", &outer, "up"])
    }

    /// Names of every namespace this LAN made (to check cleanup).
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch.clone())
            .chain(self.hosts.iter().cloned())
            .collect()
    }

    /// The prefix shared by its namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            let _ = ip(&["netns", "del", host]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// Namespaces currently present whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}
