//! `exec`: runs one of the operator's command templates per session, with
//! the session's values filled in, and keeps it running: a command that
//! exits is started again after an exponential backoff (the intra-cluster
//! process-failure handling of Raman & Katz); stopping the session ends it.
//!
//! Security boundary: the operator writes the templates (the node's
//! config); a client only names one (`template` parameter) and supplies
//! values. A template is split into argv once, shell-like, when the config
//! is read; each value is substituted inside one argv item and the program
//! is started directly, never through a shell. Values are further limited
//! to letters, digits and `. _ : / @ % + = , -`, and may not begin with `-`,
//! so that they stay harmless even where a template hands them to a shell
//! or to an option parser.
//!
//! Template syntax: words separated by blanks; `'...'` keeps everything
//! literally, `"..."` too except `\"`, `\\`, `\$` and `` \` ``; a backslash
//! outside quotes escapes the next character. Placeholders `{name}` are
//! replaced everywhere, inside quotes too; `{{` and `}}` stand for braces.
//! Names: `id`, `client`, `client_host`, `client_port` (the latter two when
//! the client is `ip:port`), and any parameter of the session. The program
//! (first word) takes no placeholder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::groups::Groups;
use super::{Error, Instance, Service, SessionSpec, SharedStatus, Status, TaskInstance, lock};

/// Wait before the first restart; it doubles with each quick exit.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A command that ran this long was healthy: its next restart is quick again.
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Time a command has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest value substituted.
pub const MAX_VALUE_LEN: usize = 512;
/// Longest stderr line kept in the status.
const MAX_OUTPUT_LINE: usize = 256;

const BUILTINS: [&str; 4] = ["id", "client", "client_host", "client_port"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A parsed command template: argv items made of text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    argv: Vec<Vec<Piece>>,
}

impl Template {
    /// Parses a template (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<Self, String> {
        let words = split(text)?;
        if words.first().is_none_or(|w| w.is_empty()) {
            return Err("empty: give at least the program".into());
        }
        let argv = words
            .iter()
            .map(|w| pieces(w))
            .collect::<Result<Vec<_>, _>>()?;
        if argv[0].iter().any(|p| matches!(p, Piece::Var(_))) {
            return Err(format!(
                "the program {:?} takes no placeholder: the template fixes what runs",
                words[0]
            ));
        }
        Ok(Template { argv })
    }

    /// The placeholder names used, in order, with repetitions.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.argv.iter().flatten().filter_map(|p| match p {
            Piece::Var(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The argv with each placeholder replaced by `value(name)`.
    pub fn render(
        &self,
        mut value: impl FnMut(&str) -> Result<String, Error>,
    ) -> Result<Vec<String>, Error> {
        self.argv
            .iter()
            .map(|item| {
                item.iter().try_fold(String::new(), |mut arg, piece| {
                    match piece {
                        Piece::Text(text) => arg.push_str(text),
                        Piece::Var(name) => arg.push_str(&value(name)?),
                    }
                    Ok(arg)
                })
            })
            .collect()
    }
}

/// Splits shell-like into words, honouring quotes and backslashes.
fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("a backslash ends the template")?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Cuts a word into text and `{name}` placeholders.
fn pieces(word: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{{") {
            text.push('{');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            text.push('}');
            rest = after;
        } else if c == '{' {
            let end = rest.find('}').ok_or_else(|| {
                format!("unclosed placeholder in {word:?} (write {{{{ for a brace)")
            })?;
            let name = &rest[1..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "placeholder {{{name}}} in {word:?}: names are letters, digits and _"
                ));
            }
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Var(name.to_string()));
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(format!("unmatched }} in {word:?} (write }}}} for a brace)"));
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Checks a value before it goes into a command.
fn check_value(key: &str, value: &str) -> Result<(), Error> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._:/@%+=,-".contains(c);
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(Error::param(
            key,
            format!("expected 1 to {MAX_VALUE_LEN} characters"),
        ));
    }
    if !value.chars().all(safe) || value.starts_with('-') {
        return Err(Error::param(
            key,
            "values may hold only letters, digits and . _ : / @ % + = , - (no blanks or shell \
             characters) and may not begin with -",
        ));
    }
    Ok(())
}

/// Waits between restarts: doubling from [`INITIAL_BACKOFF`] to
/// [`MAX_BACKOFF`], back to the start after a run of [`HEALTHY_RUN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }
}

impl Backoff {
    /// The wait before starting again a command that exited after `ran`.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_RUN {
            self.next = INITIAL_BACKOFF;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

/// The `exec` service.
#[derive(Debug, Clone)]
pub struct Exec {
    templates: BTreeMap<String, Template>,
    stop_grace: Duration,
    groups: Option<Arc<Groups>>,
}

impl Exec {
    /// The service with the operator's templates, by name.
    pub fn new(templates: &BTreeMap<String, String>) -> Result<Self, Error> {
        let templates = templates
            .iter()
            .map(|(name, text)| {
                let bad = |reason: String| Error::Template {
                    name: name.clone(),
                    reason,
                };
                // Clients send the name as a parameter value: it must pass as one.
                if name.len() > 64 || check_value("template", name).is_err() {
                    return Err(bad(
                        "names are 1 to 64 letters, digits and . _ : / @ % + = , - not \
                         beginning with -"
                            .into(),
                    ));
                }
                Ok((name.clone(), Template::parse(text).map_err(bad)?))
            })
            .collect::<Result<_, _>>()?;
        Ok(Exec {
            templates,
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

    /// The argv a session runs: its template with its values filled in.
    pub fn command(&self, spec: &SessionSpec) -> Result<Vec<String>, Error> {
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
        let template = self.templates.get(name).ok_or_else(|| {
            Error::param("template", format!("no template {name:?}; {}", names()))
        })?;
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
            check_value(key, value)?;
        }
        let client: Option<SocketAddr> = spec.client.parse().ok();
        let client_error = |reason: &str| Error::Client {
            client: spec.client.clone(),
            reason: reason.to_string(),
        };
        template.render(|var| match var {
            "id" => check_value("id", &spec.id).map(|()| spec.id.clone()),
            "client" => match client {
                Some(addr) => Ok(addr.to_string()),
                None => check_value("client", &spec.client)
                    .map(|()| spec.client.clone())
                    .map_err(|_| client_error("not ip:port, and holds unsafe characters")),
            },
            "client_host" => client
                .map(|a| a.ip().to_string())
                .ok_or_else(|| client_error("the template needs {client_host}: give ip:port")),
            "client_port" => client
                .map(|a| a.port().to_string())
                .ok_or_else(|| client_error("the template needs {client_port}: give ip:port")),
            key => spec.params.get(key).cloned().ok_or_else(|| {
                Error::param(
                    key,
                    format!("missing: template {name:?} needs a value for it"),
                )
            }),
        })
    }
}

impl Service for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn validate(&self, spec: &SessionSpec) -> Result<(), Error> {
        self.command(spec).map(drop)
    }

    fn start(&self, spec: SessionSpec) -> Result<Box<dyn Instance>, Error> {
        let argv = self.command(&spec)?;
        // Child processes are reaped by the runtime: it must exist first.
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let groups = self.groups.clone();
        let child = spawn(&argv, groups.as_deref())
            .map_err(|e| Error::io(format!("start {:?}", argv[0]), e))?;
        let status: SharedStatus = Arc::new(Mutex::new(Status::default()));
        let task_status = status.clone();
        let grace = self.stop_grace;
        TaskInstance::spawn(status, move |stop| {
            supervise(spec.id, argv, child, task_status, stop, grace, groups)
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

async fn supervise(
    id: String,
    argv: Vec<String>,
    first: Child,
    status: SharedStatus,
    mut stop: oneshot::Receiver<()>,
    grace: Duration,
    groups: Option<Arc<Groups>>,
) {
    let forget = |pid: Option<u32>| {
        if let (Some(groups), Some(pid)) = (&groups, pid) {
            groups.remove(pid);
        }
    };
    let mut child = Some(first);
    let mut backoff = Backoff::default();
    loop {
        let mut ran = Duration::ZERO;
        if let Some(mut running) = child.take() {
            let started = Instant::now();
            let pid = running.id();
            lock(&status).pid = pid;
            if let Some(stderr) = running.stderr.take() {
                tokio::spawn(keep_last_line(stderr, status.clone()));
            }
            let exited = tokio::select! {
                biased;
                _ = &mut stop => {
                    let exit = terminate(&mut running, grace).await;
                    forget(pid);
                    let mut s = lock(&status);
                    s.last_exit = exit.map(|e| e.to_string());
                    s.pid = None;
                    break;
                }
                exited = running.wait() => exited,
            };
            // Whatever it left behind in its group goes with it.
            signal_group(pid, Signal::Kill);
            forget(pid);
            ran = started.elapsed();
            let mut s = lock(&status);
            s.pid = None;
            match exited {
                Ok(exit) => s.last_exit = Some(exit.to_string()),
                Err(e) => s.last_error = Some(format!("cannot wait for {:?}: {e}", argv[0])),
            }
        }
        let wait = backoff.after_exit(ran);
        let exit = lock(&status).last_exit.clone().unwrap_or_default();
        tracing::warn!(session = %id, program = %argv[0], %exit, ?wait, "session command ended; restarting");
        tokio::select! {
            biased;
            _ = &mut stop => break,
            () = tokio::time::sleep(wait) => {}
        }
        let mut s = lock(&status);
        s.restarts += 1;
        match spawn(&argv, groups.as_deref()) {
            Ok(c) => child = Some(c),
            Err(e) => s.last_error = Some(format!("cannot start {:?}: {e}", argv[0])),
        }
    }
    lock(&status).running = false;
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

/// Keeps the last line the child writes to stderr (ffmpeg ends progress
/// lines with `\r`), bounded however much it writes.
async fn keep_last_line(mut stderr: ChildStderr, status: SharedStatus) {
    let mut buf = [0u8; 4096];
    let mut line = Vec::with_capacity(MAX_OUTPUT_LINE);
    let flush = |line: &mut Vec<u8>| {
        if !line.is_empty() {
            lock(&status).last_output = Some(String::from_utf8_lossy(line).into_owned());
            line.clear();
        }
    };
    while let Ok(n @ 1..) = stderr.read(&mut buf).await {
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                flush(&mut line);
            } else if line.len() < MAX_OUTPUT_LINE {
                line.push(b);
            }
        }
    }
    flush(&mut line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(templates: &[(&str, &str)]) -> Exec {
        Exec::new(
            &templates
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
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
    fn templates_split_like_a_shell_without_one() {
        assert_eq!(
            split(r#"ffmpeg  -i 'a b' "c \"d\" \x" e\ f ''"#).unwrap(),
            ["ffmpeg", "-i", "a b", r#"c "d" \x"#, "e f", ""]
        );
        // Shell syntax is just text: no operator means anything.
        assert_eq!(split("a;b | c $(d)").unwrap(), ["a;b", "|", "c", "$(d)"]);
        for (bad, expected) in [
            ("a 'b", "single quote"),
            ("a \"b", "double quote"),
            ("a \\", "backslash"),
        ] {
            assert!(split(bad).unwrap_err().contains(expected), "{bad}");
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
                &[("template", "rtp"), ("input", "/srv/a.wav")],
            ))
            .unwrap();
        assert_eq!(
            argv,
            [
                "ffmpeg",
                "-re",
                "-i",
                "/srv/a.wav",
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
        let err = e
            .command(&spec("x;reboot", &[("template", "play")]))
            .unwrap_err();
        assert!(matches!(err, Error::Client { .. }), "{err}");
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
            let templates = BTreeMap::from([("t".to_string(), text.to_string())]);
            let err = Exec::new(&templates).unwrap_err();
            assert!(matches!(err, Error::Template { .. }));
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
        }
        for name in ["", "my template", "-x", "a;b"] {
            let templates = BTreeMap::from([(name.to_string(), "true".to_string())]);
            let err = Exec::new(&templates).unwrap_err();
            assert!(
                err.to_string().contains("names are 1 to 64"),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets_after_a_healthy_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let waits: Vec<u64> = (0..10)
            .map(|_| b.after_exit(quick).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(b.after_exit(HEALTHY_RUN), INITIAL_BACKOFF);
        assert_eq!(b.after_exit(quick), INITIAL_BACKOFF * 2);
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
            s.last_output.as_deref() == Some("ready")
        })
        .await;
        let status = instance.stop().await;
        assert_eq!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    }

    #[tokio::test]
    async fn the_last_stderr_line_is_reported() {
        let e = exec(&[(
            "say",
            "sh -c 'echo one >&2; printf \"two\\rthree\\n\" >&2; sleep 30'",
        )]);
        let instance = e
            .start(spec("127.0.0.1:5004", &[("template", "say")]))
            .unwrap();
        let status = wait_until(instance.as_ref(), |s| {
            s.last_output.as_deref() == Some("three")
        })
        .await;
        assert_eq!(status.restarts, 0);
        instance.stop().await;
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
