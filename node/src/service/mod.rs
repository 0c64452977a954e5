//! Session services: a session is an instance of a stateless service, started
//! from its replicated parameters alone, so that any cluster can start it
//! again after a failure. Built in: `rtp-audio` ([`rtp`]) and `exec`
//! ([`exec`]); [`Registry`] maps a session's service name to its service.

pub mod exec;
pub mod g711;
pub mod gate;
pub mod groups;
pub mod rtcp;
pub mod rtp;
pub mod wav;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a service needs to know of a session: the node-side mirror of the
/// replicated session record (`baton_protocol::session::Record`), without
/// the fields that only the overlay cares about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// Session id. Services derive their stream from it (see [`rtp`]).
    pub id: String,
    /// Service name, such as `rtp-audio` or `exec`.
    pub service: String,
    /// Service parameters, as the client gave them.
    pub params: BTreeMap<String, String>,
    /// Where the client is: for `rtp-audio` its UDP address `ip:port`.
    pub client: String,
    /// When the session started (Unix ms). Every node that runs the session
    /// derives the same stream position from it.
    pub started_ms: u64,
}

/// Configuration of the built-in services (the `[services]` table of the
/// node's config file).
///
/// ```toml
/// [services]
/// media_dir = "/var/lib/baton/media"
/// [services.exec]
/// announce = "/usr/local/bin/announce --to {client} --clip {clip}"
/// [services.exec.transcode]
/// command = "ffmpeg -nostdin -re -ss {elapsed_s} -i {input} -vn -af aresample=8000,asetnsamples=n=160 -ac 1 -ar 8000 -acodec pcm_mulaw -f rtp -rtpflags skip_rtcp rtp://{gate}?pkt_size=172"
/// params = { input = "media" }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Command templates of the `exec` service, by name: a command line,
    /// or a table with the command and the rules of its placeholders
    /// ([`exec::TemplateConfig`]).
    ///
    /// This is a security boundary: a client picks a template by name (the
    /// `template` parameter) and supplies values for its placeholders; it
    /// never sends a command line. Only the operator, through this file,
    /// decides which programs run, and which values they take.
    pub exec: BTreeMap<String, exec::TemplateConfig>,
    /// Directory that `wav:` sources of `rtp-audio` and `media`
    /// placeholders of `exec` are read from. Without it, both are refused,
    /// so that clients cannot make the node read arbitrary files.
    pub media_dir: Option<PathBuf>,
    /// Networks (CIDR) clients must be in; empty: any unicast address that
    /// can be a client (never multicast, broadcast, link-local, reserved).
    pub allowed_clients: Vec<String>,
    /// Active sessions one client IP address may have (default 16).
    pub max_sessions_per_client: Option<usize>,
    /// Active sessions one API caller (client IP address of the API) may
    /// have opened through this node; none: no cap.
    pub max_sessions_per_caller: Option<usize>,
}

impl Config {
    /// A digest of what decides the command a session runs: every `exec`
    /// template with its rules, by name. Two nodes with the same templates
    /// have the same digest whatever the order or layout of their files;
    /// `media_dir` and the client limits are left out (they may differ
    /// from host to host without a session running differently). Never 0,
    /// which means "unknown" in a node's metadata.
    pub fn digest(&self) -> u64 {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        // Length-prefixed fields: no two configurations encode alike.
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"baton services v1");
        for (name, t) in &self.exec {
            field(name.as_bytes());
            field(t.command.as_bytes());
            field(&[u8::from(t.allow_urls), u8::from(t.allow_paths)]);
            for (param, rule) in &t.params {
                field(param.as_bytes());
                field(rule.kind.as_bytes());
                field(format!("{:?} {:?}", rule.min, rule.max).as_bytes());
                field(rule.pattern.as_deref().unwrap_or("").as_bytes());
                for prefix in rule.prefixes.iter().flatten() {
                    field(prefix.as_bytes());
                }
                field(b"");
            }
            field(b"");
        }
        let out = h.finalize();
        let digest = u64::from_be_bytes(out[..8].try_into().expect("8 of 32 bytes"));
        digest.max(1)
    }
}

/// Why a session cannot be validated or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No service of that name on this node.
    #[error("unknown service {name:?}: this node offers {offered}")]
    UnknownService {
        /// The requested name.
        name: String,
        /// The names offered, comma-separated.
        offered: String,
    },
    /// The client locator is unusable for the service.
    #[error("invalid client {client:?}: {reason}")]
    Client {
        /// The locator given.
        client: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A parameter is missing, unknown, or has a value the service refuses.
    #[error("invalid parameter {key:?}: {reason}")]
    Param {
        /// The parameter.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The audio source cannot be used.
    #[error("audio source {what}: {reason}")]
    Source {
        /// The source as given (`wav:...`).
        what: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A configured `exec` template is malformed (a configuration error).
    #[error("exec template {name:?}: {reason}")]
    Template {
        /// The template's name in the config.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The operating system refused something (socket, process).
    #[error("cannot {action}: {error}")]
    Io {
        /// What was attempted.
        action: String,
        /// The OS error.
        #[source]
        error: std::io::Error,
    },
    /// `start` was called outside a tokio runtime.
    #[error("session services run on a tokio runtime: call start from within one")]
    NoRuntime,
}

impl Error {
    /// Whether the request is at fault (an HTTP 4xx), rather than the node.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            Error::UnknownService { .. }
                | Error::Client { .. }
                | Error::Param { .. }
                | Error::Source { .. }
        )
    }

    pub(crate) fn param(key: &str, reason: impl Into<String>) -> Self {
        Error::Param {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(action: impl Into<String>, error: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            error,
        }
    }
}

/// A stateless session service.
pub trait Service: Send + Sync + fmt::Debug {
    /// The name sessions use to ask for it (`rtp-audio`, `exec`).
    fn name(&self) -> &'static str;

    /// Checks a session's parameters and client without starting anything.
    /// A node calls it before accepting a session, and a backup before it
    /// agrees to back one up.
    fn validate(&self, spec: &SessionSpec) -> Result<(), Error>;

    /// Starts an instance of the session, running as a tokio task; must be
    /// called within a tokio runtime. It returns once the instance is
    /// running (its socket bound, its first process spawned).
    fn start(&self, spec: SessionSpec) -> Result<Box<dyn Instance>, Error>;

    /// Whether an instance of this session can stand by warm: run without
    /// sending to the client until told to (see [`Instance::pause`]).
    /// Services that cannot are started cold at a takeover instead.
    fn can_stand_by(&self, spec: &SessionSpec) -> bool {
        let _ = spec;
        false
    }

    /// Like [`start`](Service::start), handing what the driver must hear
    /// to `to`: the client's reports, if the service receives any, and the
    /// instance's own [`Event`]s (by default, neither).
    fn start_with(&self, spec: SessionSpec, to: Channels) -> Result<Box<dyn Instance>, Error> {
        let _ = to;
        self.start(spec)
    }
}

/// A running session instance. Dropping it stops it too, without waiting.
pub trait Instance: Send + fmt::Debug {
    /// Stops the instance. The stop is signalled before this returns, so
    /// the instance stops even if the future is dropped; the future
    /// resolves once it has stopped (an `exec` child may take its grace
    /// period to exit), with the final status.
    fn stop(self: Box<Self>) -> BoxFuture<'static, Status>;

    /// What the instance is doing.
    fn status(&self) -> Status;

    /// Resolves to the moment the instance first sent its client a packet
    /// (the takeover-time histogram). Taken once; `None` when the service
    /// cannot tell cheaply (the packets of an `exec` command without a
    /// gate never pass through the node).
    fn first_packet(&mut self) -> Option<FirstPacket> {
        None
    }

    /// Holds the stream back for now (`true`: its client gave no consent)
    /// or sends it all again (`false`); the instance keeps running. Paused,
    /// a stream still sends one packet every [`CONSENT_PROBE`], so that a
    /// client that reports only to the sources it hears (as RTP clients
    /// do) can consent again: after a partition that cut the client off
    /// for longer than the consent interval, the stream had paused and the
    /// client, hearing nothing, never reported again. Services that cannot
    /// pause ignore it (the session is closed if consent does not come
    /// back).
    fn pause(&self, paused: bool) {
        let _ = paused;
    }

    /// Holds the whole stream back while the instance stands by warm
    /// (`true`), and sends it when promoted (`false`).
    fn stand_by(&self, standby: bool) {
        let _ = standby;
    }
}

/// How often a stream paused for want of consent sends one packet (see
/// [`Instance::pause`]). A victim of a session aimed at it gets at most
/// one a second for the consent grace (30 s by default), then nothing:
/// the session is closed.
pub const CONSENT_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// Consent probes one address gets per [`CONSENT_PROBE`] from all of a
/// node's paused streams together. Each stream probes once a second, so a
/// caller that aimed N sessions at one victim would have it sent N packets
/// a second for the grace; the budget caps that at this. A client with
/// more paused sessions than this has only this many probed each second:
/// which ones is left to the order their packet slots come in (not a
/// fair rotation; a session never probed within the grace is closed).
pub const PROBES_PER_ADDRESS: u32 = 4;

/// Addresses a [`ProbeBudget`] tracks before it forgets those whose
/// window is over.
const PROBE_BUDGET_ADDRESSES: usize = 4096;

/// The consent probes a node's paused streams sent, per client address
/// and [`CONSENT_PROBE`] window; shared by every instance of a node
/// ([`Channels`]).
#[derive(Debug, Clone, Default)]
pub struct ProbeBudget(
    Arc<Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>>,
);

impl ProbeBudget {
    /// Takes one probe to `to` at `now`, if the address's window has one
    /// left.
    pub fn take(&self, to: std::net::IpAddr, now: std::time::Instant) -> bool {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let over =
            |start: std::time::Instant| now.saturating_duration_since(start) >= CONSENT_PROBE;
        if windows.len() >= PROBE_BUDGET_ADDRESSES {
            windows.retain(|_, (start, _)| !over(*start));
        }
        let window = windows.entry(to).or_insert((now, 0));
        if over(window.0) {
            *window = (now, 0);
        }
        if window.1 >= PROBES_PER_ADDRESS {
            return false;
        }
        window.1 += 1;
        true
    }
}

/// Which packets of a stream go out, as its status says: all of them, one
/// every [`CONSENT_PROBE`] while paused for want of consent (within the
/// node's [`ProbeBudget`] for the client's address), none while standing
/// by warm.
#[derive(Debug)]
pub(crate) struct Outlet {
    last_probe: Option<std::time::Instant>,
    budget: ProbeBudget,
    to: std::net::IpAddr,
}

impl Outlet {
    /// The outlet of a stream to `to`, its probes taken from `budget`.
    pub(crate) fn new(budget: ProbeBudget, to: std::net::IpAddr) -> Self {
        Outlet {
            last_probe: None,
            budget,
            to,
        }
    }

    /// Whether a packet due at `now` goes out.
    pub(crate) fn admits(&mut self, paused: bool, standby: bool, now: std::time::Instant) -> bool {
        if standby {
            return false;
        }
        if !paused {
            return true;
        }
        if self
            .last_probe
            .is_some_and(|at| now.saturating_duration_since(at) < CONSENT_PROBE)
            || !self.budget.take(self.to, now)
        {
            return false;
        }
        self.last_probe = Some(now);
        true
    }
}

/// When an instance sent its first packet; see [`Instance::first_packet`].
/// Dropped unsent if the instance stops before sending anything.
pub type FirstPacket = oneshot::Receiver<std::time::Instant>;

/// What an instance reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Still running (an `exec` instance between restarts counts as running).
    pub running: bool,
    /// Why the instance gave up by itself, when it did (an `exec` command
    /// that kept exiting): it will not run again, the driver hears of it
    /// as an [`Event::Failed`].
    pub failed: Option<String>,
    /// Sending one packet every [`CONSENT_PROBE`] only: the client gave no
    /// consent.
    pub paused: bool,
    /// Sending nothing: a warm standby, not promoted yet.
    pub standby: bool,
    /// `exec`: how many times the command was started again.
    pub restarts: u32,
    /// `exec`: process id of the current child.
    pub pid: Option<u32>,
    /// `exec`: how the last child ended (`exit status: 1`, `signal: 9`).
    pub last_exit: Option<String>,
    /// `exec`: the last lines its commands wrote to stderr, oldest first
    /// (at most [`exec::OUTPUT_LINES`], each cut at 256 bytes).
    pub stderr: Vec<String>,
    /// `rtp-audio`, `exec` with a gate: the stream's SSRC.
    pub ssrc: Option<u32>,
    /// `rtp-audio`, `exec` with a gate: packets sent.
    pub packets_sent: u64,
    /// `rtp-audio`: packets not sent because they were already late by
    /// more than the catch-up window when the instance got to them.
    pub packets_skipped: u64,
    /// `exec` with a gate: datagrams the gate dropped: not from the
    /// command, not RTP, or more than it may hold ([`gate`]).
    pub packets_dropped: u64,
    /// The last error (send failure, spawn failure, source failure).
    pub last_error: Option<String>,
}

/// Where instances hand the reports their clients send over the media
/// path (RTCP receiver reports of `rtp-audio`): the session id and the
/// report. Instances `try_send`: when the channel is full, reports are
/// dropped, never waited for.
pub type Reports = tokio::sync::mpsc::Sender<(String, crate::views::Report)>;

/// What an instance tells the driver about itself, with its session id, on
/// [`Events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its command ended by itself and was started again, the `restarts`th
    /// time; `exit` says how the previous run ended.
    Restarted {
        /// Restarts so far.
        restarts: u32,
        /// `exit status: 1`, `signal: 9 (SIGKILL)`, or why it would not start.
        exit: String,
    },
    /// It gave up: it stopped by itself and will not run again. The driver
    /// hands the session to its next backup
    /// (`Node::handle_service_failed`).
    Failed {
        /// Why, for the session's record and the operator.
        why: String,
    },
}

/// Where instances tell the driver of their [`Event`]s. A restart is
/// `try_send` (shown, counted, nothing decided on it); a failure waits for
/// room, since the session depends on it.
pub type Events = tokio::sync::mpsc::Sender<(String, Event)>;

/// The channels an instance hands things to the driver on, and what the
/// node's instances share.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// Its client's reports.
    pub reports: Option<Reports>,
    /// Its own events.
    pub events: Option<Events>,
    /// The consent probes of all the node's paused streams.
    pub probes: ProbeBudget,
}

/// The services a node offers, by name.
#[derive(Clone, Default)]
pub struct Registry {
    services: BTreeMap<&'static str, Arc<dyn Service>>,
    channels: Channels,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.services.keys()).finish()
    }
}

impl Registry {
    /// The built-in services, `rtp-audio` and `exec`, configured by
    /// `config`; `exec` records its process groups in `groups` if given.
    /// Fails if an `exec` template does not parse.
    pub fn builtin(config: &Config, groups: Option<Arc<groups::Groups>>) -> Result<Self, Error> {
        let mut registry = Registry::default();
        registry.insert(Arc::new(rtp::RtpAudio::new(config.media_dir.clone())));
        registry.insert(Arc::new(
            exec::Exec::new(&config.exec, config.media_dir.clone())?.recording(groups),
        ));
        Ok(registry)
    }

    /// Hands the instances it starts from now on `reports`, for the
    /// reports their clients send (see [`Reports`]).
    pub fn with_reports(mut self, reports: Reports) -> Self {
        self.channels.reports = Some(reports);
        self
    }

    /// Has the instances it starts from now on tell their [`Event`]s on
    /// `events`.
    pub fn with_events(mut self, events: Events) -> Self {
        self.channels.events = Some(events);
        self
    }

    /// Takes the services of `other` (a registry built from a reloaded
    /// configuration), keeping its own channels. Instances running keep
    /// the service that started them; instances started from now on use
    /// the new ones.
    pub fn adopt(&mut self, other: Registry) {
        self.services = other.services;
    }

    /// Adds a service, replacing one of the same name.
    pub fn insert(&mut self, service: Arc<dyn Service>) {
        self.services.insert(service.name(), service);
    }

    /// The names of the services offered.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.services.keys().copied()
    }

    /// The service of that name.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Service>, Error> {
        self.services
            .get(name)
            .ok_or_else(|| Error::UnknownService {
                name: name.to_string(),
                offered: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Validates a session with the service it names, and the parameters
    /// the node itself reads (`standby`).
    pub fn validate(&self, spec: &SessionSpec) -> Result<(), Error> {
        baton_protocol::sessions::Standby::check_param(&spec.params)
            .map_err(|why| Error::param("standby", why))?;
        self.get(&spec.service)?.validate(spec)
    }

    /// Whether the session's service can run it in warm standby.
    pub fn can_stand_by(&self, spec: &SessionSpec) -> bool {
        self.get(&spec.service)
            .is_ok_and(|service| service.can_stand_by(spec))
    }

    /// Starts a session with the service it names.
    pub fn start(&self, spec: SessionSpec) -> Result<Box<dyn Instance>, Error> {
        self.get(&spec.service)?
            .start_with(spec, self.channels.clone())
    }
}

/// Status shared between an instance's task and its handle.
pub(crate) type SharedStatus = Arc<Mutex<Status>>;

pub(crate) fn lock(status: &SharedStatus) -> MutexGuard<'_, Status> {
    // A panic while holding the lock leaves plain counters behind: keep them.
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An instance that is one tokio task, stopped through a oneshot channel
/// (sending on it, or dropping the sender, both stop the task).
#[derive(Debug)]
struct TaskInstance {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    status: SharedStatus,
    first_packet: Option<FirstPacket>,
}

impl TaskInstance {
    /// Spawns `run(stop)` on the current runtime.
    fn spawn<F>(
        status: SharedStatus,
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Result<Box<dyn Instance>, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self::spawn_with(status, None, run)
    }

    /// [`spawn`](Self::spawn), for a task that tells `first_packet`.
    fn spawn_with<F>(
        status: SharedStatus,
        first_packet: Option<FirstPacket>,
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Result<Box<dyn Instance>, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (stop, stopped) = oneshot::channel();
        lock(&status).running = true;
        let task = handle.spawn(run(stopped));
        Ok(Box::new(TaskInstance {
            stop: Some(stop),
            task: Some(task),
            status,
            first_packet,
        }))
    }
}

impl Instance for TaskInstance {
    fn pause(&self, paused: bool) {
        lock(&self.status).paused = paused;
    }

    fn stand_by(&self, standby: bool) {
        lock(&self.status).standby = standby;
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, Status> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take();
        let status = self.status.clone();
        Box::pin(async move {
            if let Some(task) = task {
                // A panicked task has stopped too; its status says how far it got.
                let _ = task.await;
            }
            let mut status = lock(&status).clone();
            status.running = false;
            status
        })
    }

    fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    fn first_packet(&mut self) -> Option<FirstPacket> {
        self.first_packet.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_budget_gives_each_address_its_probes_per_window() {
        let budget = ProbeBudget::default();
        let victim: std::net::IpAddr = [198, 18, 0, 9].into();
        let other: std::net::IpAddr = [198, 18, 0, 10].into();
        let t = std::time::Instant::now();
        for _ in 0..PROBES_PER_ADDRESS {
            assert!(budget.take(victim, t));
        }
        assert!(!budget.take(victim, t + CONSENT_PROBE / 2));
        assert!(budget.take(other, t), "each address has its own");
        assert!(!budget.take(
            victim,
            t + CONSENT_PROBE - std::time::Duration::from_millis(1)
        ));
        assert!(budget.take(victim, t + CONSENT_PROBE), "a new window");
        // An outlet takes from it only for its probes: a stream that is
        // not paused sends everything, a standby nothing.
        let mut outlet = Outlet::new(budget.clone(), other);
        for _ in 0..100 {
            assert!(outlet.admits(false, false, t));
        }
        assert!(!outlet.admits(false, true, t));
        let later = t + CONSENT_PROBE * 3;
        assert!(outlet.admits(true, false, later));
        assert!(!outlet.admits(true, false, later), "once a second");
        let mut others: Vec<Outlet> = (0..PROBES_PER_ADDRESS)
            .map(|_| Outlet::new(budget.clone(), other))
            .collect();
        let admitted = others
            .iter_mut()
            .map(|o| o.admits(true, false, later))
            .filter(|admitted| *admitted)
            .count();
        assert_eq!(
            admitted as u32,
            PROBES_PER_ADDRESS - 1,
            "the budget is shared"
        );
    }

    fn spec(service: &str) -> SessionSpec {
        SessionSpec {
            id: "s1".into(),
            service: service.into(),
            params: BTreeMap::new(),
            client: "127.0.0.1:5004".into(),
            started_ms: 0,
        }
    }

    #[test]
    fn builtin_registry_offers_rtp_audio_and_exec() {
        let registry = Registry::builtin(&Config::default(), None).unwrap();
        assert_eq!(registry.names().collect::<Vec<_>>(), ["exec", "rtp-audio"]);
        assert!(registry.validate(&spec("rtp-audio")).is_ok());
    }

    #[test]
    fn a_session_may_ask_for_a_standby_mode_and_a_wrong_one_is_named() {
        let registry = Registry::builtin(&Config::default(), None).unwrap();
        let mut warm = spec("rtp-audio");
        warm.params.insert("standby".into(), "warm".into());
        assert!(
            registry.validate(&warm).is_ok(),
            "{:?}",
            registry.validate(&warm)
        );
        warm.params.insert("standby".into(), "hot".into());
        let err = registry.validate(&warm).unwrap_err();
        assert!(err.is_request_error());
        assert!(err.to_string().contains("cold or warm"), "{err}");
    }

    #[test]
    fn unknown_service_names_the_offered_ones() {
        let registry = Registry::builtin(&Config::default(), None).unwrap();
        let err = registry.validate(&spec("video")).unwrap_err();
        assert!(err.is_request_error());
        assert_eq!(
            err.to_string(),
            "unknown service \"video\": this node offers exec, rtp-audio"
        );
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_not_a_panic() {
        let registry = Registry::builtin(&Config::default(), None).unwrap();
        let err = registry.start(spec("rtp-audio")).unwrap_err();
        assert!(matches!(err, Error::NoRuntime), "{err}");
    }

    #[test]
    fn the_digest_follows_the_templates_and_their_rules_not_the_file_layout() {
        let read = |text: &str| toml::from_str::<Config>(text).unwrap().digest();
        let base = read(
            "[exec]\nplay = \"ffplay -i {input}\"\n\
             announce = { command = \"say {n}\", params = { n = \"number\" } }\n",
        );
        // The same templates, written in another order and layout, with
        // another media directory and client limits.
        assert_eq!(
            base,
            read(
                "media_dir = \"/srv/elsewhere\"\nmax_sessions_per_client = 3\n\
                 [exec.announce]\ncommand = \"say {n}\"\nparams = { n = \"number\" }\n\
                 [exec.play]\ncommand = \"ffplay -i {input}\"\n"
            )
        );
        for other in [
            "[exec]\nplay = \"ffplay -i {input}\"\n",
            "[exec]\nplay = \"ffplay -re -i {input}\"\n\
             announce = { command = \"say {n}\", params = { n = \"number\" } }\n",
            "[exec]\nplay = \"ffplay -i {input}\"\n\
             announce = { command = \"say {n}\", params = { n = \"name\" } }\n",
            "[exec]\nplay = { command = \"ffplay -i {input}\", allow_urls = true }\n\
             announce = { command = \"say {n}\", params = { n = \"number\" } }\n",
        ] {
            assert_ne!(read(other), base, "{other}");
        }
        assert_ne!(Config::default().digest(), 0, "0 means unknown");
    }

    #[test]
    fn config_reads_the_services_table() {
        let config: Config =
            toml::from_str("media_dir = \"/srv/media\"\n[exec]\nplay = \"ffplay -i {input}\"\n")
                .unwrap();
        assert_eq!(config.media_dir, Some(PathBuf::from("/srv/media")));
        assert_eq!(config.exec["play"].command, "ffplay -i {input}");
        assert!(toml::from_str::<Config>("media = 1").is_err());
    }

    #[test]
    fn a_malformed_template_fails_the_registry() {
        let config = Config {
            exec: BTreeMap::from([("bad".to_string(), "ffmpeg '{x}".to_string().into())]),
            ..Config::default()
        };
        let err = Registry::builtin(&config, None).unwrap_err();
        assert!(matches!(err, Error::Template { .. }), "{err}");
    }
}
