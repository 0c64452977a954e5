//! `exec`: runs one of the operator's command templates per session, with
//! the session's values filled in, and keeps it running: a command that
//! exits is started again after an exponential backoff (the intra-cluster
//! process-failure handling of Raman & Katz), up to [`MAX_QUICK_EXITS`]
//! quick exits in a row; then the instance fails and the session moves on
//! to its next backup. Stopping the session ends the command.
//!
//! Security boundary: the operator writes the templates (the node's
//! config); a client only names one (`template` parameter) and supplies
//! values. A template is split into argv once, shell-like, when the config
//! is read; each value is substituted inside one argv item and the program
//! is started directly, never through a shell. Each value must pass its
//! placeholder's rule ([`rules`]: `name`, `number`, `media`, `regex`, or a
//! conservative character set), and no value may climb out of a directory
//! (`..`), be an absolute path, read as a URL (`file:`, `http:`) unless its
//! template opts in, or begin with `-`: values stay harmless even where a
//! program would open whatever path or URL it is given.
//!
//! Template syntax: words separated by blanks; `'...'` keeps everything
//! literally, `"..."` too except `\"`, `\\`, `\$` and `` \` ``; a backslash
//! outside quotes escapes the next character. Placeholders `{name}` are
//! replaced everywhere, inside quotes too; `{{` and `}}` stand for braces.
//! Names: `id`, `client`, `client_host`, `client_port` (the client's
//! `ip:port` and its parts), `gate` (the instance's RTP gate, a loopback
//! `ip:port`: see [`super::gate`]), `elapsed_ms` and `elapsed_s` (time
//! since the session started, as of each (re)start of the command, in
//! milliseconds or in seconds with three decimals, so that a command can
//! seek: `-ss {elapsed_s}`), and any parameter of the session. The program
//! (first word) takes no placeholder.
//!
//! A template with `{gate}` gets a gate per instance: the node forwards
//! what the command sends there to the client as the session's one
//! continuous stream, only while it serves the session; such a session can
//! stand by warm (the command runs, the gate is closed).
//!
//! The client's address is exempt from the rules: the node renders it from
//! a parsed socket address, so it is an address and nothing else, and the
//! refusals would misread some (`fe80::1` begins like a URL scheme). A
//! template writes the scheme around it in its own text
//! (`rtp://{client}`), where no value can change it.

mod rules;
mod template;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::gate::Gate;
use super::groups::Groups;
use super::{
    Channels, Error, Event, Events, Instance, Service, SessionSpec, SharedStatus, Status,
    TaskInstance, lock,
};
use rules::{BUILTINS, Rules};
pub use rules::{MAX_VALUE_LEN, RuleConfig, TemplateConfig};
pub use template::Template;

/// Wait before the first restart; it doubles with each quick exit (100,
/// 200, 400, 800 ms, then [`MAX_QUICK_EXITS`] ends it).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// A command that ran this long was healthy: its next restart is quick
/// again, and its exit does not count towards [`MAX_QUICK_EXITS`].
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Exits in a row, each before [`HEALTHY_RUN`], after which the instance
/// gives up: a command that cannot run here goes to the next backup rather
/// than crash here forever. With the backoff, the fifth exit comes about
/// 1.5 s after the first start when the command exits at once.
pub const MAX_QUICK_EXITS: u32 = 5;
/// Time a command has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Stderr lines kept in the status, the last ones.
pub const OUTPUT_LINES: usize = 10;
/// Longest stderr line kept in the status (bytes; longer ones are cut).
const MAX_OUTPUT_LINE: usize = 256;
/// How long an exited command's stderr may take to reach its end (a
/// grandchild that escaped the group kill may hold the pipe open).
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);

/// Waits between restarts: doubling from [`INITIAL_BACKOFF`], back to the
/// start after a run of [`HEALTHY_RUN`]; none after [`MAX_QUICK_EXITS`]
/// quick exits in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    quick: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
            quick: 0,
        }
    }
}

impl Backoff {
    /// The wait before starting again a command that exited after `ran`;
    /// `None`: give up, it exited quickly too often.
    pub fn after_exit(&mut self, ran: Duration) -> Option<Duration> {
        if ran >= HEALTHY_RUN {
            *self = Backoff::default();
        } else {
            self.quick += 1;
            if self.quick >= MAX_QUICK_EXITS {
                return None;
            }
        }
        let wait = self.next;
        self.next *= 2;
        Some(wait)
    }
}

/// A configured template: its argv and the rules of its values.
#[derive(Debug, Clone)]
struct Entry {
    template: Template,
    rules: Rules,
}

impl Entry {
    /// Whether its command sends to a gate (`{gate}`).
    fn gated(&self) -> bool {
        self.template.placeholders().any(|p| p == "gate")
    }
}

/// The `exec` service.
#[derive(Debug, Clone)]
pub struct Exec {
    templates: BTreeMap<String, Entry>,
    media_dir: Option<PathBuf>,
    stop_grace: Duration,
    groups: Option<Arc<Groups>>,
}

impl Exec {
    /// The service with the operator's templates, by name; `media` rules
    /// resolve files in `media_dir`.
    pub fn new(
        templates: &BTreeMap<String, TemplateConfig>,
        media_dir: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let templates = templates
            .iter()
            .map(|(name, config)| {
                let bad = |reason: String| Error::Template {
                    name: name.clone(),
                    reason,
                };
                // Clients send the name as a parameter value: it must pass as one.
                if name.is_empty()
                    || name.len() > 64
                    || name.starts_with('-')
                    || rules::default_charset(name).is_err()
                {
                    return Err(bad(
                        "names are 1 to 64 letters, digits and . _ : / @ % + = , - not \
                         beginning with -"
                            .into(),
                    ));
                }
                let template = Template::parse(&config.command).map_err(&bad)?;
                let rules = Rules::new(config, &template, media_dir.as_deref()).map_err(bad)?;
                Ok((name.clone(), Entry { template, rules }))
            })
            .collect::<Result<_, _>>()?;
        Ok(Exec {
            templates,
            media_dir,
            stop_grace: STOP_GRACE,
            groups: None,
        })
    }

    /// The same service, recording the process groups of its commands in
    /// `groups`.
    #[must_use]
    pub fn recording(self, groups: Option<Arc<Groups>>) -> Self {
        Exec { groups, ..self }
    }

    /// The argv a session runs: its template with its values filled in,
    /// as of now (`{gate}` stands for an address the instance would bind).
    pub fn command(&self, spec: &SessionSpec) -> Result<Vec<String>, Error> {
        Ok(self
            .prepare(spec, Some(UNBOUND_GATE))?
            .argv(elapsed_ms(spec.started_ms, unix_ms())))
    }

    /// The session's template, if it names a configured one.
    fn entry(&self, spec: &SessionSpec) -> Option<&Entry> {
        self.templates.get(spec.params.get("template")?)
    }

    /// The session's command with every value checked and filled in but
    /// the position (`{elapsed_ms}`, `{elapsed_s}`), which each (re)start
    /// renders anew. `gate`: the instance's gate, for `{gate}`.
    fn prepare(&self, spec: &SessionSpec, gate: Option<SocketAddr>) -> Result<Prepared, Error> {
        let names = || {
            let names: Vec<&str> = self.templates.keys().map(String::as_str).collect();
            if names.is_empty() {
                "none are configured on this node".to_string()
            } else {
                format!("configured: {}", names.join(", "))
            }
        };
        let name = spec.params.get("template").ok_or_else(|| {
            Error::param(
                "template",
                format!(
                    "missing: exec runs a template of the node, by name; {}",
                    names()
                ),
            )
        })?;
        let Entry { template, rules } = self.templates.get(name).ok_or_else(|| {
            Error::param("template", format!("no template {name:?}; {}", names()))
        })?;
        let media_dir = self.media_dir.as_deref();
        // Every value is checked, also those the template does not use:
        // they are replicated with the session.
        let mut values = BTreeMap::new();
        for (key, value) in &spec.params {
            if BUILTINS.contains(&key.as_str()) {
                return Err(Error::param(
                    key,
                    "reserved: the node fills it in from the session",
                ));
            }
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::param(key, "names are letters, digits and _"));
            }
            // A configured template's name (checked above).
            if key != "template" {
                values.insert(key.clone(), rules.value(key, value, media_dir)?);
            }
        }
        let client: Option<SocketAddr> = spec.client.parse().ok();
        let address = |part: fn(SocketAddr) -> String| {
            client.map(part).ok_or_else(|| Error::Client {
                client: spec.client.clone(),
                reason: "the template needs the client's address: give ip:port".to_string(),
            })
        };
        let mut filled = BTreeMap::new();
        for var in template.placeholders() {
            let value = match var {
                "id" => rules::refusals(&spec.id, false, false)
                    .and_then(|()| rules::default_charset(&spec.id).map_err(Into::into))
                    .map(|()| spec.id.clone())
                    .map_err(|why| Error::param("id", why))?,
                // Rendered from a parsed address: exempt from the rules
                // (see the module docs).
                "client" => address(|a| a.to_string())?,
                "client_host" => address(|a| a.ip().to_string())?,
                "client_port" => address(|a| a.port().to_string())?,
                "gate" => {
                    // The gate forwards to the client: it needs an address
                    // it can send to, as rtp-audio does.
                    address(|a| a.to_string())?;
                    super::rtp::parse_client(&spec.client)?;
                    gate.map_or_else(|| UNBOUND_GATE.to_string(), |g| g.to_string())
                }
                // Rendered at each (re)start.
                "elapsed_ms" | "elapsed_s" => continue,
                key => match values.get(key) {
                    Some(value) => value.clone(),
                    None if key == "template" => name.clone(),
                    None => {
                        return Err(Error::param(
                            key,
                            format!("missing: template {name:?} needs a value for it"),
                        ));
                    }
                },
            };
            filled.insert(var.to_string(), value);
        }
        Ok(Prepared {
            template: template.clone(),
            values: filled,
        })
    }
}

/// Where `{gate}` points when no instance runs (validation, [`Exec::command`]).
const UNBOUND_GATE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// A session's command, checked, but for its position.
#[derive(Debug, Clone)]
struct Prepared {
    template: Template,
    /// The value of every placeholder but the position's.
    values: BTreeMap<String, String>,
}

impl Prepared {
    /// The argv to run, `elapsed_ms` into the session.
    fn argv(&self, elapsed_ms: u64) -> Vec<String> {
        let rendered = self.template.render(|var| {
            Ok(match var {
                "elapsed_ms" => elapsed_ms.to_string(),
                "elapsed_s" => format!("{}.{:03}", elapsed_ms / 1000, elapsed_ms % 1000),
                // Every other placeholder was filled by `prepare`.
                var => self.values.get(var).cloned().unwrap_or_default(),
            })
        });
        rendered.unwrap_or_default()
    }
}

/// Time since the session started, as of `now_ms` (0 before its start).
pub fn elapsed_ms(started_ms: u64, now_ms: u64) -> u64 {
    now_ms.saturating_sub(started_ms)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Service for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn validate(&self, spec: &SessionSpec) -> Result<(), Error> {
        self.command(spec).map(drop)
    }

    /// With a gate, the command runs while the gate stays closed: a
    /// promotion only opens it. Without one, nothing could hold its
    /// packets back.
    fn can_stand_by(&self, spec: &SessionSpec) -> bool {
        self.entry(spec).is_some_and(Entry::gated)
    }

    fn start(&self, spec: SessionSpec) -> Result<Box<dyn Instance>, Error> {
        self.start_with(spec, Channels::default())
    }

    fn start_with(&self, spec: SessionSpec, to: Channels) -> Result<Box<dyn Instance>, Error> {
        // Checked before a gate is opened for it.
        self.command(&spec)?;
        // Child processes are reaped by the runtime: it must exist first.
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let gate = match self.entry(&spec).filter(|e| e.gated()) {
            Some(_) => {
                let client = super::rtp::parse_client(&spec.client)?;
                Some(Gate::open(&spec, client, to.reports, to.probes.clone())?)
            }
            None => None,
        };
        let command = self.prepare(&spec, gate.as_ref().map(Gate::addr))?;
        let argv = command.argv(elapsed_ms(spec.started_ms, unix_ms()));
        let groups = self.groups.clone();
        let child = spawn(&argv, groups.as_deref())
            .map_err(|e| Error::io(format!("start {:?}", argv[0]), e))?;
        // The pid now, for the view the driver publishes as this returns.
        let status: SharedStatus = Arc::new(Mutex::new(Status {
            pid: child.id(),
            ssrc: gate.as_ref().map(|g| g.ids().ssrc),
            ..Status::default()
        }));
        let supervisor = Supervisor {
            id: spec.id,
            program: argv[0].clone(),
            command,
            started_ms: spec.started_ms,
            runs: gate.as_ref().map(Gate::runs),
            status: status.clone(),
            grace: self.stop_grace,
            groups,
            events: to.events,
        };
        let Some(gate) = gate else {
            return TaskInstance::spawn(status, move |stop| supervisor.run(child, stop));
        };
        let (first_sent, first_packet) = oneshot::channel();
        let gate_status = status.clone();
        TaskInstance::spawn_with(status, Some(first_packet), move |stop| async move {
            // The gate closes at once when the instance stops (the command
            // may take its grace to end), or when supervision gives up.
            let (close, closed) = oneshot::channel::<()>();
            let (halt, halted) = oneshot::channel::<()>();
            let control = async move {
                let supervised = supervisor.run(child, halted);
                tokio::pin!(supervised);
                tokio::select! {
                    biased;
                    _ = stop => {
                        drop((close, halt));
                        supervised.await;
                    }
                    () = &mut supervised => drop(close),
                }
            };
            tokio::join!(control, gate.run(gate_status, first_sent, closed));
        })
    }
}

/// Starts a command in a process group of its own (so that stopping
/// reaches whatever it started), recorded in `groups`.
fn spawn(argv: &[String], groups: Option<&Groups>) -> std::io::Result<Child> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(target_os = "linux")]
    die_with_this_process(&mut command);
    if let Some(groups) = groups {
        let (key, value) = groups.marker();
        command.env(key, value);
    }
    let child = command.spawn()?;
    if let (Some(groups), Some(pid)) = (groups, child.id()) {
        groups.add(pid);
    }
    Ok(child)
}

/// Makes the kernel SIGKILL the command when the thread that forks it
/// exits: the node's runtime threads live as long as the node, so in effect
/// when the node dies, `kill -9` included. (Spawning from a thread that
/// ends sooner, such as a blocking-pool thread, would kill the command
/// then: spawn from runtime tasks only.)
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_this_process(command: &mut Command) {
    let parent = nix::unistd::getpid();
    let in_child = move || {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        // The node may have died between fork and prctl: then the signal
        // will never come, and the command must not start at all.
        if nix::unistd::getppid() != parent {
            return Err(nix::errno::Errno::ESRCH.into());
        }
        Ok(())
    };
    // SAFETY: `pre_exec` runs the closure in the forked child, where only
    // async-signal-safe work is sound. It makes two system calls (prctl,
    // getppid) and builds its error from an errno, without allocating or
    // taking a lock.
    unsafe {
        command.pre_exec(in_child);
    }
}

/// Watches one session's command: starts it again when it exits, keeps
/// its status, and tells the driver when it restarted and when it gave up.
struct Supervisor {
    id: String,
    /// The program run, for messages.
    program: String,
    /// The command, rendered anew at each restart (its position moves on).
    command: Prepared,
    /// The session's start (Unix ms), for the position.
    started_ms: u64,
    /// The gate's count of runs, if the command sends to one.
    runs: Option<Arc<AtomicU32>>,
    status: SharedStatus,
    grace: Duration,
    groups: Option<Arc<Groups>>,
    events: Option<Events>,
}

impl Supervisor {
    async fn run(self, first: Child, mut stop: oneshot::Receiver<()>) {
        let mut child = Some(first);
        let mut backoff = Backoff::default();
        // How the last attempt ended: an exit status, or why it did not run.
        let mut ended = String::new();
        loop {
            let mut ran = Duration::ZERO;
            if let Some(mut running) = child.take() {
                let started = Instant::now();
                let pid = running.id();
                lock(&self.status).pid = pid;
                let output = running
                    .stderr
                    .take()
                    .map(|stderr| tokio::spawn(keep_output(stderr, self.status.clone())));
                let exited = tokio::select! {
                    biased;
                    _ = &mut stop => {
                        let exit = terminate(&mut running, self.grace).await;
                        self.forget(pid);
                        let mut s = lock(&self.status);
                        s.last_exit = exit.map(|e| e.to_string());
                        s.pid = None;
                        break;
                    }
                    exited = running.wait() => exited,
                };
                // Whatever it left behind in its group goes with it.
                signal_group(pid, Signal::Kill);
                self.forget(pid);
                ran = started.elapsed();
                // Its last words say why it ended: read them before telling.
                if let Some(output) = output {
                    let _ = tokio::time::timeout(OUTPUT_DRAIN, output).await;
                }
                let mut s = lock(&self.status);
                s.pid = None;
                match exited {
                    Ok(exit) => {
                        ended = exit.to_string();
                        s.last_exit = Some(ended.clone());
                    }
                    Err(e) => {
                        ended = format!("cannot wait for {:?}: {e}", self.program);
                        s.last_error = Some(ended.clone());
                    }
                }
            }
            let exit = ended.clone();
            let program = &self.program;
            let Some(wait) = backoff.after_exit(ran) else {
                let why = format!(
                    "gave up after {MAX_QUICK_EXITS} quick exits in a row (each within {} of \
                     its start); last: {exit}",
                    humantime::format_duration(HEALTHY_RUN)
                );
                tracing::error!(session = %self.id, %program, %exit, "session command keeps ending; giving up");
                {
                    let mut s = lock(&self.status);
                    s.failed = Some(why.clone());
                    s.running = false;
                }
                if let Some(events) = &self.events {
                    // Waits for room rather than lose it (the session hangs
                    // on it), but not past a stop.
                    tokio::select! {
                        biased;
                        _ = &mut stop => {}
                        _ = events.send((self.id.clone(), Event::Failed { why })) => {}
                    }
                }
                break;
            };
            tracing::warn!(session = %self.id, %program, %exit, ?wait, "session command ended; restarting");
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = tokio::time::sleep(wait) => {}
            }
            let restarts = {
                let mut s = lock(&self.status);
                s.restarts += 1;
                if let Some(runs) = &self.runs {
                    // Before the new run can send: the gate latches its source.
                    runs.fetch_add(1, Ordering::AcqRel);
                }
                let argv = self.command.argv(elapsed_ms(self.started_ms, unix_ms()));
                match spawn(&argv, self.groups.as_deref()) {
                    Ok(c) => child = Some(c),
                    Err(e) => {
                        ended = format!("cannot start {program:?}: {e}");
                        s.last_error = Some(ended.clone());
                    }
                }
                s.restarts
            };
            if let Some(events) = &self.events {
                // Shown and counted, nothing decided on it: dropped when
                // the driver is that far behind.
                let _ = events.try_send((self.id.clone(), Event::Restarted { restarts, exit }));
            }
        }
        lock(&self.status).running = false;
    }

    /// Forgets the process group of a command that ended.
    fn forget(&self, pid: Option<u32>) {
        if let (Some(groups), Some(pid)) = (&self.groups, pid) {
            groups.remove(pid);
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    signal_group(pid, Signal::Term);
    let exit = match tokio::time::timeout(grace, child.wait()).await {
        Ok(exit) => exit.ok(),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    signal_group(pid, Signal::Kill);
    exit
}

/// The signals sent to a command's group.
#[derive(Debug, Clone, Copy)]
pub(super) enum Signal {
    /// Asks to stop.
    Term,
    /// Stops.
    Kill,
}

/// Sends `signal` to process group `pgid`, if any.
#[cfg(unix)]
pub(super) fn signal_group(pgid: Option<u32>, signal: Signal) {
    use nix::sys::signal::{Signal as Sig, killpg};
    use nix::unistd::Pid;
    let signal = match signal {
        Signal::Term => Sig::SIGTERM,
        Signal::Kill => Sig::SIGKILL,
    };
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH: the group is gone already, as it should be.
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

#[cfg(not(unix))]
pub(super) fn signal_group(_pgid: Option<u32>, _signal: Signal) {}

/// Keeps the last [`OUTPUT_LINES`] lines the child writes to stderr, each
/// cut at [`MAX_OUTPUT_LINE`] bytes, bounded however much it writes. A line
/// ended by `\r` (ffmpeg's progress) gives way to the next, as on a
/// terminal, so that progress does not push the errors out.
async fn keep_output(mut stderr: ChildStderr, status: SharedStatus) {
    let mut buf = [0u8; 4096];
    let mut line = Vec::with_capacity(MAX_OUTPUT_LINE);
    let mut overwrite = false;
    let mut flush = |line: &mut Vec<u8>, by_cr: bool| {
        if line.is_empty() {
            // The `\n` of a `\r\n` ends the line the `\r` ended.
            overwrite &= by_cr;
            return;
        }
        let mut s = lock(&status);
        if overwrite {
            s.stderr.pop();
        }
        s.stderr.push(String::from_utf8_lossy(line).into_owned());
        if s.stderr.len() > OUTPUT_LINES {
            s.stderr.remove(0);
        }
        overwrite = by_cr;
        line.clear();
    };
    while let Ok(n @ 1..) = stderr.read(&mut buf).await {
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                flush(&mut line, b == b'\r');
            } else if line.len() < MAX_OUTPUT_LINE {
                line.push(b);
            }
        }
    }
    flush(&mut line, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(templates: &[(&str, &str)]) -> BTreeMap<String, TemplateConfig> {
        templates
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string().into()))
            .collect()
    }

    fn exec(templates: &[(&str, &str)]) -> Exec {
        Exec::new(&configs(templates), None).unwrap()
    }

    fn spec(client: &str, params: &[(&str, &str)]) -> SessionSpec {
        SessionSpec {
            id: "s1".into(),
            service: "exec".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client: client.into(),
            started_ms: 0,
        }
    }

    #[test]
    fn values_fill_placeholders_inside_single_argv_items() {
        let e = exec(&[(
            "rtp",
            "ffmpeg -re -i {input} -f rtp 'rtp://{client}?pkt_size=1200' -metadata title={id} \
             {{literal}} {client_host} {client_port}",
        )]);
        let argv = e
            .command(&spec(
                "127.0.0.1:5004",
                &[("template", "rtp"), ("input", "a.wav")],
            ))
            .unwrap();
        assert_eq!(
            argv,
            [
                "ffmpeg",
                "-re",
                "-i",
                "a.wav",
                "-f",
                "rtp",
                "rtp://127.0.0.1:5004?pkt_size=1200",
                "-metadata",
                "title=s1",
                "{literal}",
                "127.0.0.1",
                "5004"
            ]
        );
        let argv = e
            .command(&spec("[::1]:5004", &[("template", "rtp"), ("input", "a")]))
            .unwrap();
        assert_eq!(argv[6], "rtp://[::1]:5004?pkt_size=1200");
        assert_eq!(argv[10], "::1");
    }

    #[test]
    fn injection_attempts_are_refused() {
        let e = exec(&[("play", "player {input}")]);
        for evil in [
            "; rm -rf /",
            "$(x)",
            "`id`",
            "a b",
            "a\nb",
            "-o/etc/passwd",
            "--output=x",
            "a|b",
            "a&&b",
            "a>b",
            "'q'",
            "",
        ] {
            let err = e
                .command(&spec(
                    "127.0.0.1:5004",
                    &[("template", "play"), ("input", evil)],
                ))
                .unwrap_err();
            assert!(err.is_request_error(), "{evil:?}");
            assert!(err.to_string().contains("\"input\""), "{evil:?}: {err}");
        }
        // Not even in a parameter the template does not use.
        let err = e
            .command(&spec(
                "127.0.0.1:5004",
                &[("template", "play"), ("input", "a"), ("x", "$(reboot)")],
            ))
            .unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
        // Nor as a client that is not an address.
        let e = exec(&[("play", "player {client}")]);
        for client in ["x;reboot", "file:/etc/passwd", "/dev/sda"] {
            let err = e
                .command(&spec(client, &[("template", "play")]))
                .unwrap_err();
            assert!(matches!(err, Error::Client { .. }), "{err}");
        }
    }

    #[test]
    fn values_may_not_climb_out_or_name_a_file_or_url() {
        let e = exec(&[("play", "player -i {input} --out=x/{name}")]);
        for evil in [
            "..",
            "../../etc/passwd",
            "a/../b",
            "/etc/passwd",
            "file:/x",
            "http://x",
        ] {
            for key in ["input", "name"] {
                let mut params = vec![("template", "play"), ("input", "a"), ("name", "b")];
                params.retain(|(k, _)| *k != key);
                params.push((key, evil));
                let err = e.command(&spec("127.0.0.1:5004", &params)).unwrap_err();
                assert!(err.is_request_error(), "{key}={evil:?}: {err}");
                assert!(err.to_string().contains(&format!("{key:?}")), "{err}");
            }
        }
    }

    #[test]
    fn the_client_address_is_rendered_whatever_it_looks_like() {
        // fe80::... begins like a URL scheme, but the node rendered it.
        let e = exec(&[("a", "send rtp://{client} {client_host}")]);
        let argv = e
            .command(&spec("[fe80::1]:5004", &[("template", "a")]))
            .unwrap();
        assert_eq!(argv, ["send", "rtp://[fe80::1]:5004", "fe80::1"]);
    }

    #[test]
    fn media_placeholders_become_paths_inside_the_media_directory() {
        let dir = std::env::temp_dir().join(format!("baton-exec-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wav"), b"x").unwrap();
        let mut config =
            TemplateConfig::from("ffmpeg -i {input} -f rtp rtp://{client}".to_string());
        config
            .params
            .insert("input".into(), RuleConfig::from("media".to_string()));
        let e = Exec::new(
            &BTreeMap::from([("t".to_string(), config)]),
            Some(dir.clone()),
        )
        .unwrap();
        let argv = e
            .command(&spec(
                "127.0.0.1:5004",
                &[("template", "t"), ("input", "a.wav")],
            ))
            .unwrap();
        let path = dir.canonicalize().unwrap().join("a.wav");
        assert_eq!(argv[2], path.display().to_string());
        let err = e
            .command(&spec(
                "127.0.0.1:5004",
                &[("template", "t"), ("input", "b.wav")],
            ))
            .unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_node_renders_the_gate_and_the_position() {
        let e = exec(&[(
            "t",
            "ffmpeg -ss {elapsed_s} -x {elapsed_ms} -f rtp rtp://{gate}?pkt_size=172",
        )]);
        let mut session = spec("127.0.0.1:5004", &[("template", "t")]);
        let prepared = e.prepare(&session, Some("127.0.0.1:4321".parse().unwrap()));
        let argv = prepared.unwrap().argv(12_345);
        assert_eq!(
            argv,
            [
                "ffmpeg",
                "-ss",
                "12.345",
                "-x",
                "12345",
                "-f",
                "rtp",
                "rtp://127.0.0.1:4321?pkt_size=172"
            ]
        );
        let prepared = e.prepare(&session, None).unwrap();
        assert_eq!(prepared.argv(7)[2], "0.007");
        assert_eq!(prepared.argv(60_000)[2], "60.000");
        assert_eq!(elapsed_ms(5_000, 4_000), 0, "a clock behind the start");
        assert_eq!(elapsed_ms(5_000, 17_345), 12_345);
        // Validation renders the position as of now.
        session.started_ms = unix_ms() - 3_000;
        let secs: f64 = e.command(&session).unwrap()[2].parse().unwrap();
        assert!((3.0..4.0).contains(&secs), "{secs}");
        // Callers give none of them.
        for key in ["gate", "elapsed_ms", "elapsed_s"] {
            let err = e
                .validate(&spec("127.0.0.1:5004", &[("template", "t"), (key, "1")]))
                .unwrap_err();
            assert!(err.to_string().contains("reserved"), "{key}: {err}");
        }
        // A gate forwards to the client: it needs an address.
        let err = e
            .validate(&spec("somewhere", &[("template", "t")]))
            .unwrap_err();
        assert!(err.to_string().contains("give ip:port"), "{err}");
    }

    #[test]
    fn only_commands_behind_a_gate_can_stand_by() {
        let e = exec(&[("gated", "send {gate}"), ("direct", "send {client}")]);
        let can = |t: &str| e.can_stand_by(&spec("127.0.0.1:5004", &[("template", t)]));
        assert!(can("gated"));
        assert!(!can("direct"));
        assert!(!can("missing"));
    }

    /// A command that sends RTP to its gate from one socket, every 20 ms.
    /// It ignores SIGTERM, so that a stop takes the grace.
    const SENDER: &str = r#"bash -c 'trap "" TERM; g={gate}; exec 3>/dev/udp/${{g%:*}}/${{g##*:}};
        while :; do printf "\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01abcd" >&3;
        sleep 0.02; done'"#;

    #[tokio::test]
    async fn a_command_behind_a_gate_reaches_the_client_once_promoted() {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut e = exec(&[("send", SENDER)]);
        e.stop_grace = Duration::from_millis(1_000);
        let mut session = spec(
            &client.local_addr().unwrap().to_string(),
            &[("template", "send")],
        );
        session.started_ms = unix_ms();
        let ssrc = baton_protocol::stream::Ids::derive(&session.id).ssrc;
        // Warm: the command runs, the gate is closed.
        let mut instance = e.start(session).unwrap();
        instance.stand_by(true);
        let mut first = instance.first_packet().expect("a gate tells");
        wait_until(instance.as_ref(), |s| s.pid.is_some()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut buf = [0u8; 256];
        assert!(client.try_recv(&mut buf).is_err(), "nothing while closed");
        assert!(first.try_recv().is_err());
        // Promoted: the gate opens.
        instance.stand_by(false);
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("a packet within 2 s")
            .unwrap();
        assert_eq!(&buf[8..12], ssrc.to_be_bytes(), "the session's SSRC");
        assert_eq!(&buf[12..n], b"abcd", "the command's payload");
        tokio::time::timeout(Duration::from_secs(2), first)
            .await
            .unwrap()
            .expect("the first packet is told");
        // Stopped: the gate closes at once, while the command takes its grace.
        let stopping = tokio::spawn(instance.stop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        while client.try_recv(&mut buf).is_ok() {}
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(client.try_recv(&mut buf).is_err(), "nothing after the stop");
        let status = stopping.await.unwrap();
        assert_eq!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
        assert_eq!(status.ssrc, Some(ssrc));
        assert!(status.packets_sent >= 1 && !status.running);
    }

    #[test]
    fn clients_choose_among_configured_templates_only() {
        let e = exec(&[("a", "true"), ("b", "true {x}")]);
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[],
                "missing: exec runs a template of the node, by name; configured: a, b",
            ),
            (
                &[("template", "ffmpeg -i x")],
                "no template \"ffmpeg -i x\"; configured: a, b",
            ),
            (
                &[("template", "b")],
                "missing: template \"b\" needs a value",
            ),
            (&[("template", "a"), ("id", "x")], "reserved"),
            (&[("template", "a"), ("a-b", "x")], "letters, digits and _"),
        ];
        for (params, expected) in cases {
            let err = e.validate(&spec("127.0.0.1:5004", params)).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
        let none = exec(&[]);
        let err = none.validate(&spec("127.0.0.1:5004", &[("template", "a")]));
        assert!(err.unwrap_err().to_string().contains("none are configured"));
        let e = exec(&[("c", "true {client_port}")]);
        let err = e
            .validate(&spec("somewhere", &[("template", "c")]))
            .unwrap_err();
        assert!(err.to_string().contains("give ip:port"), "{err}");
    }

    #[test]
    fn malformed_templates_are_configuration_errors() {
        for (text, expected) in [
            ("", "empty"),
            ("   ", "empty"),
            ("\"\" -x", "empty"),
            ("{prog} -x", "takes no placeholder"),
            ("a {unclosed", "unclosed placeholder"),
            ("a {bad-name}", "names are letters"),
            ("a {bad name}", "unclosed placeholder"),
            ("a {}", "names are letters"),
            ("a b}", "unmatched }"),
            ("a 'b", "single quote"),
        ] {
            let err = Exec::new(&configs(&[("t", text)]), None).unwrap_err();
            assert!(matches!(err, Error::Template { .. }));
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
        }
        for name in ["", "my template", "-x", "a;b"] {
            let err = Exec::new(&configs(&[(name, "true")]), None).unwrap_err();
            assert!(
                err.to_string().contains("names are 1 to 64"),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_gives_up_at_the_fifth_quick_exit_in_a_row() {
        let mut b = Backoff::default();
        let quick = HEALTHY_RUN - Duration::from_millis(1);
        let waits: Vec<Option<u64>> = (0..5)
            .map(|_| b.after_exit(quick).map(|w| w.as_millis() as u64))
            .collect();
        assert_eq!(waits, [Some(100), Some(200), Some(400), Some(800), None]);
    }

    #[test]
    fn a_healthy_run_resets_the_backoff_and_the_count() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        for _ in 0..MAX_QUICK_EXITS - 1 {
            assert!(b.after_exit(quick).is_some());
        }
        assert_eq!(b.after_exit(HEALTHY_RUN), Some(INITIAL_BACKOFF));
        for n in 1..MAX_QUICK_EXITS {
            assert!(
                b.after_exit(quick).is_some(),
                "quick exit {n} after a healthy run"
            );
        }
        assert_eq!(b.after_exit(quick), None);
    }

    async fn wait_until(instance: &dyn Instance, what: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let status = instance.status();
            if what(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {status:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_command_that_exits_is_restarted() {
        let e = exec(&[("crash", "false")]);
        let instance = e
            .start(spec("127.0.0.1:5004", &[("template", "crash")]))
            .unwrap();
        // Exits at once: restarts after 100 ms, then 200 ms.
        let status = wait_until(instance.as_ref(), |s| s.restarts >= 2).await;
        assert!(status.running);
        assert_eq!(status.last_exit.as_deref(), Some("exit status: 1"));
        let status = instance.stop().await;
        assert!(!status.running);
    }

    #[tokio::test]
    async fn stop_terminates_the_command_and_its_group() {
        let e = exec(&[("wait", "sleep 30")]);
        let instance = e
            .start(spec("127.0.0.1:5004", &[("template", "wait")]))
            .unwrap();
        let pid = wait_until(instance.as_ref(), |s| s.pid.is_some())
            .await
            .pid
            .unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        let status = instance.stop().await;
        assert_eq!(status.last_exit.as_deref(), Some("signal: 15 (SIGTERM)"));
        assert_eq!(
            (status.pid, status.restarts, status.running),
            (None, 0, false)
        );
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn a_command_ignoring_sigterm_is_killed_after_the_grace() {
        let mut e = exec(&[(
            "stubborn",
            "sh -c \"trap '' TERM; echo ready >&2; sleep 30; true\"",
        )]);
        e.stop_grace = Duration::from_millis(200);
        let instance = e
            .start(spec("127.0.0.1:5004", &[("template", "stubborn")]))
            .unwrap();
        wait_until(instance.as_ref(), |s| {
            s.stderr.last().map(String::as_str) == Some("ready")
        })
        .await;
        let status = instance.stop().await;
        assert_eq!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    }

    #[tokio::test]
    async fn the_last_stderr_lines_are_kept_progress_lines_give_way() {
        let e = exec(&[(
            "say",
            "sh -c 'echo one >&2; printf \"two\\rthree\\r\\nfour\\n\" >&2; sleep 30'",
        )]);
        let instance = e
            .start(spec("127.0.0.1:5004", &[("template", "say")]))
            .unwrap();
        let status = wait_until(instance.as_ref(), |s| s.stderr.len() >= 3).await;
        assert_eq!(status.stderr, ["one", "three", "four"]);
        assert_eq!(status.restarts, 0);
        instance.stop().await;
    }

    #[tokio::test]
    async fn stderr_keeps_the_last_ten_lines_each_cut() {
        let e = exec(&[(
            "say",
            "sh -c 'for i in $(seq 1 15); do echo line$i >&2; done; \
             head -c 1000 /dev/zero | tr \"\\0\" x >&2; echo >&2; sleep 30'",
        )]);
        let instance = e
            .start(spec("127.0.0.1:5004", &[("template", "say")]))
            .unwrap();
        let long = "x".repeat(MAX_OUTPUT_LINE);
        let status = wait_until(instance.as_ref(), |s| s.stderr.last() == Some(&long)).await;
        let expected: Vec<String> = (7..=15).map(|i| format!("line{i}")).chain([long]).collect();
        assert_eq!(status.stderr, expected);
        assert_eq!(status.stderr.len(), OUTPUT_LINES);
        instance.stop().await;
    }

    #[tokio::test]
    async fn a_command_that_keeps_exiting_gives_up_and_tells_the_driver() {
        let config = crate::service::Config {
            exec: configs(&[("crash", "false")]),
            ..crate::service::Config::default()
        };
        let (events, mut driver) = tokio::sync::mpsc::channel(8);
        let registry = crate::service::Registry::builtin(&config, None)
            .unwrap()
            .with_events(events);
        let mut session = spec("127.0.0.1:5004", &[("template", "crash")]);
        session.id = "s-crash".into();
        let instance = registry.start(session).unwrap();
        let mut restarts = Vec::new();
        let why = loop {
            let next = tokio::time::timeout(Duration::from_secs(5), driver.recv());
            let (id, event) = next.await.expect("an event within 5 s").expect("an event");
            assert_eq!(id, "s-crash");
            match event {
                Event::Restarted { restarts: n, exit } => {
                    assert_eq!(exit, "exit status: 1");
                    restarts.push(n);
                }
                Event::Failed { why } => break why,
            }
        };
        assert_eq!(
            restarts,
            [1, 2, 3, 4],
            "restarted until the fifth quick exit"
        );
        assert!(
            why.starts_with("gave up after 5 quick exits in a row"),
            "{why}"
        );
        assert!(why.ends_with("last: exit status: 1"), "{why}");
        let status = instance.status();
        assert_eq!(status.failed.as_deref(), Some(why.as_str()));
        assert_eq!(
            (status.running, status.restarts, status.pid),
            (false, 4, None)
        );
        // Nothing more: it will not run again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(driver.try_recv().is_err());
        assert_eq!(instance.status().restarts, 4);
        instance.stop().await;
    }

    #[tokio::test]
    async fn a_program_gone_between_restarts_counts_as_quick_exits() {
        let dir = std::env::temp_dir().join(format!("baton-exec-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("run.sh");
        std::fs::write(&program, "#!/bin/sh\nrm \"$0\"\nexit 2\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut e = Exec::new(&configs(&[("gone", &program.display().to_string())]), None).unwrap();
        e.stop_grace = Duration::from_millis(100);
        let (events, mut driver) = tokio::sync::mpsc::channel(8);
        let to = Channels {
            events: Some(events),
            ..Channels::default()
        };
        let instance = e
            .start_with(spec("127.0.0.1:5004", &[("template", "gone")]), to)
            .unwrap();
        let why = loop {
            let next = tokio::time::timeout(Duration::from_secs(5), driver.recv());
            if let (_, Event::Failed { why }) = next.await.unwrap().unwrap() {
                break why;
            }
        };
        assert!(why.contains("last: cannot start"), "{why}");
        let status = instance.stop().await;
        assert_eq!(status.last_exit.as_deref(), Some("exit status: 2"));
        assert!(status.last_error.unwrap().contains("cannot start"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `/proc/PID/stat`'s state letter, `None` once the process is gone.
    #[cfg(target_os = "linux")]
    fn state_of(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_command_dies_with_the_thread_that_started_it() {
        // As batond's runtime threads end when batond dies, kill -9 included.
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let child = spawn(&["sleep".to_string(), "1000".to_string()], None).unwrap();
                let pid = child.id().unwrap();
                // Without kill_on_drop, only the parent-death signal ends it.
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state_of(pid).is_some_and(|s| s != 'Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let state = state_of(pid);
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        if state.is_some_and(|s| s != 'Z') {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = nix::sys::wait::waitpid(pid, None);
        assert!(
            matches!(state, None | Some('Z')),
            "the command outlived the thread that started it: state {state:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_fails_the_start() {
        let e = exec(&[("none", "/nonexistent/baton-test-program")]);
        let err = e
            .start(spec("127.0.0.1:5004", &[("template", "none")]))
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("nonexistent"), "{err}");
    }
}
