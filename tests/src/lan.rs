//! A LAN of network namespaces for end-to-end tests: hosts on one bridge,
//! so multicast (mDNS) reaches them all, made of testnet's namespaces and
//! removed on drop (their processes first), also when the test panics.

use std::io;
use std::path::Path;
use std::process::{Child, Stdio};

use baton_testnet::netns::{self, Netns};

/// A bridged set of namespaces: a "switch" holding the bridge, and hosts
/// `198.18.<subnet>.1..=n`/24 (the benchmarking range).
#[derive(Debug)]
pub struct Lan {
    prefix: String,
    // Declared before the namespaces: Drop kills them, then the fields drop.
    children: Vec<Child>,
    hosts: Vec<Netns>,
    switch: Netns,
}

impl Lan {
    /// Creates `n` hosts `198.18.<subnet>.1..=n`/24 on one bridge.
    pub fn new(label: &str, n: usize, subnet: u8) -> io::Result<Lan> {
        // Names must be short (15 bytes for links); the pid keeps parallel
        // runs apart.
        let prefix = format!("b{}{}", label, std::process::id() % 100_000);
        let switch = Netns::create(&format!("{prefix}s"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut lan = Lan {
            prefix,
            children: Vec::new(),
            hosts: Vec::new(),
            switch,
        };
        for i in 0..n {
            let host = Netns::create(&format!("{}h{i}", lan.prefix))?;
            let (inner, outer) = (format!("{}i{i}", lan.prefix), lan.outer(i));
            netns::ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            netns::ip(&["link", "set", &inner, "netns", host.name()])?;
            netns::ip(&["link", "set", &outer, "netns", lan.switch.name()])?;
            lan.switch.ip(&["link", "set", &outer, "master", "br0"])?;
            lan.switch.ip(&["link", "set", &outer, "up"])?;
            host.ip(&["link", "set", &inner, "name", "eth0"])?;
            let addr = format!("198.18.{subnet}.{}/24", i + 1);
            host.ip(&["addr", "add", &addr, "dev", "eth0"])?;
            host.ip(&["link", "set", "eth0", "up"])?;
            // mDNS multicasts to 224.0.0.251: route it to the LAN.
            host.ip(&["route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            lan.hosts.push(host);
        }
        Ok(lan)
    }

    /// Starts `program args` inside host `i`, its output to `log`; it is
    /// killed when the LAN drops.
    pub fn spawn(
        &mut self,
        i: usize,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> io::Result<u32> {
        let log = std::fs::File::create(log)?;
        let child = self.hosts[i]
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
            })?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Runs `program args` inside host `i` to completion; returns stdout.
    pub fn run(&self, i: usize, program: &Path, args: &[&str]) -> io::Result<String> {
        let out = self.hosts[i]
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot run {}: {e}", program.display()))
            })?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Cuts host `i` off the LAN (its port on the bridge goes down): a
    /// partition of that host from all others.
    pub fn cut(&self, i: usize) -> io::Result<()> {
        self.switch.ip(&["link", "set", &self.outer(i), "down"])
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) -> io::Result<()> {
        self.switch.ip(&["link", "set", &self.outer(i), "up"])
    }

    /// The prefix shared by its namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Host `i`'s port on the bridge.
    fn outer(&self, i: usize) -> String {
        format!("{}o{i}", self.prefix)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
