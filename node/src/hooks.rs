//! Hooks: the operator's commands, run on the events of `/v1/events`
//! (member state changes, session takeovers, transfers, failures,
//! configuration reloads), as Serf
//! runs its event handlers. Each run gets the event as one JSON object on
//! stdin and as `BATON_*` environment variables (see [`environment`]).
//!
//! The runner taps the same broadcast stream the API's `/v1/events` reads
//! ([`crate::state::Shared::events`]), so the driver's loop never waits for
//! a hook: a run is a task of its own, at most `concurrency` run at once,
//! at most `queue` wait, and events beyond that are dropped and counted
//! (`baton_hook_events_dropped_total`). A run that outlives its `timeout`
//! is killed with its whole process group.
//!
//! Commands are argv lists, run without a shell: an event's values (member
//! names, reasons) reach the command as data, never as shell code. An
//! operator who wants a shell writes `command = ["sh", "-c", "..."]`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::state::Shared;
use crate::views;

/// Default time a hook may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default hooks running at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default runs waiting for a slot.
pub const DEFAULT_QUEUE: usize = 64;

/// The event names a handler may list (besides `*` and `member-*`,
/// `session-*`, `reload-*`).
pub const EVENTS: [&str; 15] = [
    "member-alive",
    "member-suspect",
    "member-dead",
    "member-left",
    "member-refuted",
    "session-started",
    "session-takeover",
    "session-transfer",
    "session-failed",
    "session-stopped",
    "session-restarted",
    "session-paused",
    "session-resumed",
    "reload-applied",
    "reload-refused",
];

/// The patterns a handler may list besides the names of [`EVENTS`].
pub const PATTERNS: [&str; 4] = ["*", "member-*", "session-*", "reload-*"];

/// How much of a failing hook's stderr is logged.
const STDERR_LOGGED: usize = 512;

/// `[hooks]` in the config file.
///
/// ```toml
/// [hooks]
/// concurrency = 4
/// queue = 64
/// [[hooks.handler]]
/// events = ["member-dead", "session-takeover"]
/// command = ["/usr/local/bin/notify", "--channel", "ops"]
/// timeout = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Hooks running at once (default 4).
    pub concurrency: Option<usize>,
    /// Runs waiting for a slot before events are dropped (default 64).
    pub queue: Option<usize>,
    /// The handlers.
    #[serde(default)]
    pub handler: Vec<HandlerFile>,
}

/// One `[[hooks.handler]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerFile {
    /// Event names ([`EVENTS`]) or patterns ([`PATTERNS`]).
    pub events: Vec<String>,
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// How long it may run (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// The hooks, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Hooks running at once.
    pub concurrency: usize,
    /// Runs waiting for a slot.
    pub queue: usize,
    /// The handlers, in file order.
    pub handlers: Vec<Handler>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: DEFAULT_CONCURRENCY,
            queue: DEFAULT_QUEUE,
            handlers: Vec::new(),
        }
    }
}

/// A handler, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Event patterns.
    pub events: Vec<String>,
    /// argv.
    pub command: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

impl Handler {
    /// Whether this handler runs for the event named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|p| matches(p, name))
    }
}

/// Whether pattern `p` (an event name, `member-*`, `session-*`,
/// `reload-*`, `*`) matches `name`.
fn matches(p: &str, name: &str) -> bool {
    match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    }
}

impl File {
    /// Checks the table: every handler lists known events and a command,
    /// timeouts and bounds are sensible. Errors name the field.
    pub fn check(self) -> Result<Config, String> {
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=64).contains(&concurrency) {
            return Err(format!("hooks.concurrency {concurrency}: expected 1 to 64"));
        }
        let queue = self.queue.unwrap_or(DEFAULT_QUEUE);
        if queue > 4096 {
            return Err(format!("hooks.queue {queue}: expected 0 to 4096"));
        }
        let mut handlers = Vec::new();
        for (i, h) in self.handler.into_iter().enumerate() {
            let at = format!("hooks.handler[{i}]");
            if h.events.is_empty() {
                return Err(format!(
                    "{at}.events is empty: list event names such as \"member-dead\", or \"*\""
                ));
            }
            for e in &h.events {
                let known = PATTERNS.contains(&e.as_str()) || EVENTS.contains(&e.as_str());
                if !known {
                    return Err(format!(
                        "{at}.events: unknown event {e:?}: expected one of {}, member-*, \
                         session-*, reload-* or *",
                        EVENTS.join(", ")
                    ));
                }
            }
            match h.command.first() {
                None => {
                    return Err(format!(
                        "{at}.command is empty: give the program and its arguments, such as \
                         [\"/usr/local/bin/notify\", \"--channel\", \"ops\"]"
                    ));
                }
                Some(program) if program.trim().is_empty() => {
                    return Err(format!("{at}.command: the program name is empty"));
                }
                Some(program) if program.contains(' ') && h.command.len() == 1 => {
                    return Err(format!(
                        "{at}.command {program:?}: commands are argv lists run without a shell; \
                         split the words ([\"prog\", \"arg\"]) or write [\"sh\", \"-c\", \"...\"]"
                    ));
                }
                Some(_) => {}
            }
            if h.command.iter().any(|a| a.contains('\0')) {
                return Err(format!("{at}.command: an argument holds a NUL byte"));
            }
            let timeout = h.timeout.unwrap_or(DEFAULT_TIMEOUT);
            if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(3600) {
                return Err(format!(
                    "{at}.timeout {}: expected between 10ms and 1h",
                    humantime::format_duration(timeout)
                ));
            }
            handlers.push(Handler {
                events: h.events,
                command: h.command,
                timeout,
            });
        }
        Ok(Config {
            concurrency,
            queue,
            handlers,
        })
    }
}

impl Config {
    /// The programs of handlers that cannot be found (neither a path to an
    /// executable nor found in `PATH`): worth a warning, not a refusal,
    /// since a script may be installed after the node starts.
    pub fn missing_programs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .handlers
            .iter()
            .map(|h| h.command[0].clone())
            .filter(|p| !findable(p))
            .collect();
        out.dedup();
        out
    }
}

fn findable(program: &str) -> bool {
    let executable = |path: &std::path::Path| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        path.is_file()
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| executable(&d.join(program))))
}

/// The hook name of an event of `/v1/events`: `member-<state>`,
/// `member-refuted`, `session-takeover` / `session-transfer` (a session
/// started here for that reason), `session-started` (opened here, or
/// another reason), `session-<state>` otherwise; `reload-applied` or
/// `reload-refused` for a configuration reload (SIGHUP).
pub fn event_name(event: &views::Event) -> Option<String> {
    match event.kind.as_str() {
        "member" => Some(format!("member-{}", event.state)),
        "refuted" => Some("member-refuted".to_string()),
        "session" => {
            let reason = event.reason.as_deref().unwrap_or("");
            if event.state == "started" {
                if reason.starts_with("takeover") {
                    return Some("session-takeover".to_string());
                }
                if reason.starts_with("transfer") {
                    return Some("session-transfer".to_string());
                }
            }
            Some(format!("session-{}", event.state))
        }
        "reload" => Some(format!("reload-{}", event.state)),
        _ => None,
    }
}

/// This node, as hooks are told of it.
#[derive(Debug, Clone)]
pub struct Local {
    /// Peer id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Overlay.
    pub overlay: String,
}

/// The environment a hook runs with (besides batond's own):
///
/// | variable | value |
/// |---|---|
/// | `BATON_EVENT` | the event name (`member-dead`, `session-takeover`, ...) |
/// | `BATON_NODE`, `BATON_NODE_ID`, `BATON_OVERLAY` | this node's name, peer id, overlay |
/// | `BATON_AT`, `BATON_AT_MS` | when (RFC 3339; Unix ms) |
/// | `BATON_MEMBER`, `BATON_MEMBER_ID` | member events: the member's name and peer id |
/// | `BATON_SESSION` | session events: the session id |
/// | `BATON_STATE`, `BATON_PREVIOUS` | the new and previous state (previous may be empty) |
/// | `BATON_INCARNATION` | member events: the incarnation |
/// | `BATON_EPOCH` | session events: the session's epoch |
/// | `BATON_REASON` | session events: why (`takeover: primary ... is down`); `reload-refused`: the error |
/// | `BATON_APPLIED`, `BATON_RESTART` | reload events: the fields applied, and those that need a restart (comma-separated, may be empty) |
pub fn environment(name: &str, event: &views::Event, local: &Local) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("BATON_EVENT", name.to_string());
    set("BATON_NODE", local.name.clone());
    set("BATON_NODE_ID", local.id.clone());
    set("BATON_OVERLAY", local.overlay.clone());
    set("BATON_AT", event.at.clone());
    set("BATON_AT_MS", event.at_ms.to_string());
    set("BATON_STATE", event.state.clone());
    set("BATON_PREVIOUS", event.previous.clone().unwrap_or_default());
    if event.kind == "session" {
        set("BATON_SESSION", event.id.clone());
        set("BATON_EPOCH", event.incarnation.to_string());
        set("BATON_REASON", event.reason.clone().unwrap_or_default());
    } else if event.kind == "reload" {
        set("BATON_APPLIED", event.applied.join(","));
        set("BATON_RESTART", event.restart.join(","));
        set("BATON_REASON", event.reason.clone().unwrap_or_default());
    } else {
        set("BATON_MEMBER", event.name.clone());
        set("BATON_MEMBER_ID", event.id.clone());
        set("BATON_INCARNATION", event.incarnation.to_string());
    }
    env
}

/// The JSON object a hook reads on stdin: the event as `/v1/events` sends
/// it, with `event` (its hook name) and `node` (`{id, name, overlay}` of
/// this node) added.
pub fn payload(name: &str, event: &views::Event, local: &Local) -> Vec<u8> {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("event".into(), name.into());
        map.insert(
            "node".into(),
            serde_json::json!({"id": local.id, "name": local.name, "overlay": local.overlay}),
        );
    }
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The running hooks: holds the configuration that SIGHUP replaces.
#[derive(Debug)]
pub struct Hooks {
    config: watch::Sender<Arc<Config>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hooks {
    /// Starts the runner on `shared`'s event stream. Must be called within
    /// a tokio runtime.
    pub fn start(config: Config, shared: Arc<Shared>) -> Hooks {
        let (tx, rx) = watch::channel(Arc::new(config));
        let events = shared.events.subscribe();
        let task = tokio::spawn(run(rx, events, shared));
        Hooks { config: tx, task }
    }

    /// Replaces the handlers and bounds; runs under way finish as they were.
    pub fn reload(&self, config: Config) {
        self.config.send_replace(Arc::new(config));
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the runner shares with its runs.
struct Runner {
    shared: Arc<Shared>,
    local: Local,
    /// Runs started or waiting.
    pending: AtomicUsize,
    /// Slots: resized when the configuration changes.
    slots: std::sync::Mutex<(usize, Arc<Semaphore>)>,
}

async fn run(
    config: watch::Receiver<Arc<Config>>,
    mut events: broadcast::Receiver<views::Event>,
    shared: Arc<Shared>,
) {
    let local = Local {
        id: shared.local.id.clone(),
        name: shared.local.name.clone(),
        overlay: shared.local.overlay.clone(),
    };
    let runner = Arc::new(Runner {
        shared: shared.clone(),
        local,
        pending: AtomicUsize::new(0),
        slots: std::sync::Mutex::new((0, Arc::new(Semaphore::new(0)))),
    });
    drop(shared);
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "hooks fell behind the event stream: events dropped");
                runner.shared.metrics.hook_dropped(missed);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let config = config.borrow().clone();
        if config.handlers.is_empty() {
            continue;
        }
        let Some(name) = event_name(&event) else {
            continue;
        };
        let slots = {
            let mut slots = runner.slots.lock().expect("not poisoned");
            if slots.0 != config.concurrency {
                *slots = (
                    config.concurrency,
                    Arc::new(Semaphore::new(config.concurrency)),
                );
            }
            slots.1.clone()
        };
        for handler in config.handlers.iter().filter(|h| h.wants(&name)) {
            let limit = config.concurrency + config.queue;
            if runner.pending.fetch_add(1, Ordering::SeqCst) >= limit {
                runner.pending.fetch_sub(1, Ordering::SeqCst);
                runner.shared.metrics.hook_dropped(1);
                tracing::warn!(
                    event = %name, command = %handler.command[0],
                    "hook not run: {limit} runs already started or waiting (hooks.concurrency, hooks.queue)"
                );
                continue;
            }
            let runner = runner.clone();
            let handler = handler.clone();
            let slots = slots.clone();
            let event = event.clone();
            let name = name.clone();
            tokio::spawn(async move {
                if let Ok(_permit) = slots.acquire_owned().await {
                    run_one(&runner, &handler, &name, &event).await;
                }
                runner.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Ok,
    /// Could not start, or exited non-zero or by a signal.
    Failed,
    /// Killed after its timeout.
    Timeout,
}

impl Outcome {
    /// The `result` label of `baton_hook_runs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

async fn run_one(runner: &Runner, handler: &Handler, name: &str, event: &views::Event) {
    let outcome = execute(handler, name, event, &runner.local).await;
    runner.shared.metrics.hook_ran(outcome);
}

/// Runs `handler` for one event and waits for it (or its timeout).
pub async fn execute(
    handler: &Handler,
    name: &str,
    event: &views::Event,
    local: &Local,
) -> Outcome {
    let program = &handler.command[0];
    let mut command = tokio::process::Command::new(program);
    command
        .args(&handler.command[1..])
        .envs(environment(name, event, local))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(event = %name, command = %program, error = %e, "hook did not start");
            return Outcome::Failed;
        }
    };
    let pid = child.id();
    let input = payload(name, event, local);
    let stdin = child.stdin.take();
    // Read apart from the wait: a command's own children may hold stderr
    // open after it exits.
    let stderr = child.stderr.take().map(|mut err| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = (&mut err).take(64 * 1024).read_to_end(&mut text).await;
            text
        })
    });
    let work = async {
        if let Some(mut stdin) = stdin {
            // A hook that does not read its stdin is fine.
            let _ = stdin.write_all(&input).await;
        }
        let status = child.wait().await;
        let text = match stderr {
            Some(task) => tokio::time::timeout(Duration::from_millis(200), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        (status, text)
    };
    let result = tokio::time::timeout(handler.timeout, work).await;
    match result {
        Ok((Ok(status), _)) if status.success() => {
            tracing::debug!(event = %name, command = %program, "hook ran");
            Outcome::Ok
        }
        Ok((Ok(status), text)) => {
            let mut text = String::from_utf8_lossy(&text).trim().to_string();
            if text.len() > STDERR_LOGGED {
                let mut cut = STDERR_LOGGED;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            tracing::warn!(event = %name, command = %program, %status, stderr = %text, "hook failed");
            Outcome::Failed
        }
        Ok((Err(e), _)) => {
            tracing::warn!(event = %name, command = %program, error = %e, "hook failed");
            Outcome::Failed
        }
        Err(_) => {
            kill_group(pid);
            // Reap it: kill_on_drop would leave a zombie until then.
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            tracing::warn!(
                event = %name, command = %program,
                timeout = %humantime::format_duration(handler.timeout),
                "hook timed out: killed with its process group"
            );
            Outcome::Timeout
        }
    }
}

/// SIGKILL to the process group the hook leads (its children too).
fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Config, String> {
        toml::from_str::<File>(text)
            .map_err(|e| e.to_string())?
            .check()
    }

    fn member(state: &str, previous: Option<&str>) -> views::Event {
        views::Event {
            kind: "member".into(),
            at: "2026-12-02T00:00:00.000Z".into(),
            at_ms: 1_796_169_600_000,
            id: "12D3KooWpeer".into(),
            name: "berkeley".into(),
            state: state.into(),
            previous: previous.map(Into::into),
            incarnation: 3,
            reason: None,
            ..Default::default()
        }
    }

    fn session(state: &str, reason: &str) -> views::Event {
        views::Event {
            kind: "session".into(),
            at: "2026-12-02T00:00:01.000Z".into(),
            at_ms: 1_796_169_601_000,
            id: "0123abcd".into(),
            name: "here".into(),
            state: state.into(),
            previous: None,
            incarnation: 7,
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    fn reload(state: &str) -> views::Event {
        views::Event {
            kind: "reload".into(),
            at: "2026-12-02T00:00:02.000Z".into(),
            at_ms: 1_796_169_602_000,
            id: "12D3KooWme".into(),
            name: "here".into(),
            state: state.into(),
            reason: (state == "refused").then(|| "invalid capacity".into()),
            applied: if state == "applied" {
                vec!["log_level".into(), "allow".into()]
            } else {
                Vec::new()
            },
            restart: if state == "applied" {
                vec!["capacity".into()]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    fn local() -> Local {
        Local {
            id: "12D3KooWme".into(),
            name: "here".into(),
            overlay: "baton".into(),
        }
    }

    #[test]
    fn events_are_named_for_hooks() {
        let name = |e: &views::Event| event_name(e).unwrap();
        assert_eq!(name(&member("dead", Some("suspect"))), "member-dead");
        assert_eq!(name(&member("alive", None)), "member-alive");
        assert_eq!(
            name(&session("started", "takeover: primary x is down")),
            "session-takeover"
        );
        assert_eq!(
            name(&session("started", "transfer: client loss 9.0%")),
            "session-transfer"
        );
        assert_eq!(name(&session("started", "open")), "session-started");
        assert_eq!(
            name(&session("failed", "failed here (x)")),
            "session-failed"
        );
        let mut refuted = member("alive", None);
        refuted.kind = "refuted".into();
        assert_eq!(name(&refuted), "member-refuted");
        let mut other = member("alive", None);
        other.kind = "lagged".into();
        assert_eq!(event_name(&other), None);
        assert_eq!(name(&reload("applied")), "reload-applied");
        assert_eq!(name(&reload("refused")), "reload-refused");
        for e in [
            member("suspect", None),
            member("left", None),
            session("stopped", ""),
            session("restarted", ""),
            session("paused", ""),
            session("resumed", ""),
            reload("applied"),
            reload("refused"),
        ] {
            assert!(EVENTS.contains(&name(&e).as_str()), "{}", name(&e));
        }
    }

    #[test]
    fn handlers_filter_by_name_and_prefix() {
        let c = file(
            "[[handler]]\nevents = [\"member-dead\", \"session-takeover\"]\ncommand = [\"a\"]\n\
             [[handler]]\nevents = [\"member-*\"]\ncommand = [\"b\"]\n\
             [[handler]]\nevents = [\"*\"]\ncommand = [\"c\"]\ntimeout = \"2s\"\n\
             [[handler]]\nevents = [\"reload-*\"]\ncommand = [\"d\"]\n",
        )
        .unwrap();
        let run = |name: &str| -> Vec<&str> {
            c.handlers
                .iter()
                .filter(|h| h.wants(name))
                .map(|h| h.command[0].as_str())
                .collect()
        };
        assert_eq!(run("member-dead"), ["a", "b", "c"]);
        assert_eq!(run("member-alive"), ["b", "c"]);
        assert_eq!(run("session-takeover"), ["a", "c"]);
        assert_eq!(run("session-transfer"), ["c"]);
        assert_eq!(run("reload-refused"), ["c", "d"]);
        assert_eq!(c.handlers[0].timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.handlers[2].timeout, Duration::from_secs(2));
        assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
    }

    #[test]
    fn mistakes_name_the_field() {
        for (bad, expected) in [
            (
                "[[handler]]\nevents = [\"member-gone\"]\ncommand = [\"a\"]\n",
                "hooks.handler[0].events: unknown event \"member-gone\"",
            ),
            (
                "[[handler]]\nevents = []\ncommand = [\"a\"]\n",
                "hooks.handler[0].events is empty",
            ),
            (
                "[[handler]]\nevents = [\"*\"]\ncommand = []\n",
                "hooks.handler[0].command is empty",
            ),
            (
                "[[handler]]\nevents = [\"*\"]\ncommand = [\"notify --all\"]\n",
                "argv lists run without a shell",
            ),
            (
                "[[handler]]\nevents = [\"*\"]\ncommand = [\"a\"]\ntimeout = \"1ms\"\n",
                "hooks.handler[0].timeout 1ms",
            ),
            ("concurrency = 0\n", "hooks.concurrency 0"),
        ] {
            let err = file(bad).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
        }
        let err =
            file("[[handler]]\nevents = [\"*\"]\ncommand = [\"a\"]\nshell = true\n").unwrap_err();
        assert!(err.contains("shell"), "{err}");
    }

    #[test]
    fn the_environment_and_stdin_describe_the_event() {
        let env = environment("member-dead", &member("dead", Some("suspect")), &local());
        assert_eq!(env["BATON_EVENT"], "member-dead");
        assert_eq!(env["BATON_NODE"], "here");
        assert_eq!(env["BATON_NODE_ID"], "12D3KooWme");
        assert_eq!(env["BATON_OVERLAY"], "baton");
        assert_eq!(env["BATON_MEMBER"], "berkeley");
        assert_eq!(env["BATON_MEMBER_ID"], "12D3KooWpeer");
        assert_eq!(env["BATON_STATE"], "dead");
        assert_eq!(env["BATON_PREVIOUS"], "suspect");
        assert_eq!(env["BATON_INCARNATION"], "3");
        assert!(!env.contains_key("BATON_SESSION"));
        let e = session("started", "takeover: primary x is down");
        let env = environment("session-takeover", &e, &local());
        assert_eq!(env["BATON_SESSION"], "0123abcd");
        assert_eq!(env["BATON_EPOCH"], "7");
        assert_eq!(env["BATON_REASON"], "takeover: primary x is down");
        assert_eq!(env["BATON_PREVIOUS"], "");
        assert!(!env.contains_key("BATON_MEMBER"));
        let json: serde_json::Value =
            serde_json::from_slice(&payload("session-takeover", &e, &local())).unwrap();
        assert_eq!(json["event"], "session-takeover");
        assert_eq!(json["kind"], "session");
        assert_eq!(json["id"], "0123abcd");
        assert_eq!(json["reason"], "takeover: primary x is down");
        assert_eq!(json["node"]["name"], "here");
        assert_eq!(json["node"]["id"], "12D3KooWme");

        let env = environment("reload-applied", &reload("applied"), &local());
        assert_eq!(env["BATON_EVENT"], "reload-applied");
        assert_eq!(env["BATON_STATE"], "applied");
        assert_eq!(env["BATON_APPLIED"], "log_level,allow");
        assert_eq!(env["BATON_RESTART"], "capacity");
        assert_eq!(env["BATON_REASON"], "");
        assert!(!env.contains_key("BATON_MEMBER") && !env.contains_key("BATON_SESSION"));
        let env = environment("reload-refused", &reload("refused"), &local());
        assert_eq!(env["BATON_REASON"], "invalid capacity");
        assert_eq!(env["BATON_APPLIED"], "");
        let json: serde_json::Value =
            serde_json::from_slice(&payload("reload-applied", &reload("applied"), &local()))
                .unwrap();
        assert_eq!(json["event"], "reload-applied");
        assert_eq!(json["applied"], serde_json::json!(["log_level", "allow"]));
        assert_eq!(json["restart"], serde_json::json!(["capacity"]));
    }

    #[tokio::test]
    async fn a_run_gets_stdin_and_env_and_a_hung_one_is_killed_with_its_group() {
        let dir = std::env::temp_dir().join(format!("baton-hooks-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let handler = Handler {
            events: vec!["*".into()],
            command: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "cat > {0}; echo \"$BATON_EVENT $BATON_MEMBER\" >> {0}",
                    out.display()
                ),
            ],
            timeout: Duration::from_secs(5),
        };
        let e = member("dead", Some("suspect"));
        assert_eq!(
            execute(&handler, "member-dead", &e, &local()).await,
            Outcome::Ok
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let (json, env) = text.trim_end().split_once('\n').unwrap();
        let json: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(json["event"], "member-dead");
        assert_eq!(env, "member-dead berkeley");

        let failing = Handler {
            command: vec!["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()],
            ..handler.clone()
        };
        assert_eq!(
            execute(&failing, "member-dead", &e, &local()).await,
            Outcome::Failed
        );
        let missing = Handler {
            command: vec![dir.join("nope").display().to_string()],
            ..handler.clone()
        };
        assert_eq!(
            execute(&missing, "member-dead", &e, &local()).await,
            Outcome::Failed
        );

        // A hook whose child hangs too: both go when the timeout passes.
        let pidfile = dir.join("child.pid");
        let hung = Handler {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
            ],
            timeout: Duration::from_millis(500),
            ..handler
        };
        let started = std::time::Instant::now();
        assert_eq!(
            execute(&hung, "member-dead", &e, &local()).await,
            Outcome::Timeout
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let state = state
            .rsplit_once(')')
            .map(|(_, s)| s.trim_start().chars().next());
        assert!(
            matches!(state, None | Some(Some('Z'))),
            "the hook's child {child} survived its timeout: {state:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
