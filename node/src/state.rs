//! What the driver knows that the API and the CLI show: the member table, the
//! connected peers, counters and the event stream. The driver writes it; API
//! handlers only read it, so they never touch the protocol state machine.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use baton_protocol::meta::{MAX_TAG_KEY, MAX_TAG_VALUE};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::views;

/// Capacity of the event stream: a subscriber that falls further behind
/// misses events (and is told so) rather than growing memory.
pub const EVENT_BUFFER: usize = 1024;

/// State shared between the driver (writer) and the API (readers).
#[derive(Debug)]
pub struct Shared {
    /// This node.
    pub local: LocalInfo,
    /// Members by peer id (base58), this node excluded.
    pub members: DashMap<String, views::Member>,
    /// This node as a member (`local` set): its load, tags and coordinate
    /// as the driver last published them.
    pub me: RwLock<views::Member>,
    /// libp2p peers currently connected or recently refused, by peer id.
    pub peers: DashMap<String, views::Peer>,
    /// The Prometheus metrics (`/metrics`), also read by `/v1/status`.
    pub metrics: Metrics,
    /// Member state changes and other events, for `/v1/events`.
    pub events: broadcast::Sender<views::Event>,
    /// Addresses this node listens on, as reported by libp2p.
    pub listen_addrs: RwLock<Vec<String>>,
    /// This node's Vivaldi coordinate, once it has one.
    pub coordinate: RwLock<Option<views::Coordinate>>,
    /// Sessions of the replicated map, by id (closed ones while their
    /// tombstone lives).
    pub sessions: DashMap<String, views::Session>,
    /// Requests the API makes of the driver (open, close, report).
    pub commands: mpsc::Sender<SessionCommand>,
}

/// Why the driver refused a session request; maps to an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    /// HTTP status to answer with (400, 404, 409, 503...).
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}

/// A request of the API to the driver, answered on `reply`.
#[derive(Debug)]
pub enum SessionCommand {
    /// Open a session: `{"service", "client", "params"}`.
    Open {
        /// Service name.
        service: String,
        /// Client locator (`ip:port` for RTP).
        client: String,
        /// Parameters.
        params: std::collections::BTreeMap<String, String>,
        /// The answer.
        reply: oneshot::Sender<Result<views::Session, CommandError>>,
    },
    /// Close a session: its primary closes it, any other node sends the
    /// request on to the primary.
    Close {
        /// Session id.
        id: String,
        /// The answer.
        reply: oneshot::Sender<Result<Closed, CommandError>>,
    },
    /// A client's report on a session.
    Report {
        /// Session id.
        id: String,
        /// The report.
        report: views::Report,
        /// The answer: `None` when this node, the primary, took it; the
        /// primary it was sent on to otherwise.
        reply: oneshot::Sender<Result<Option<views::Forwarded>, CommandError>>,
    },
    /// Whether the driver answers at all (`GET /v1/health`): it replies
    /// `Ok` at once.
    Ping {
        /// The answer.
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
}

/// What a close request did on the node asked.
#[derive(Debug, Clone)]
pub enum Closed {
    /// This node, the primary, closed the session: the session as it is now
    /// (a session closed before is answered the same way).
    Here(Box<views::Session>),
    /// This node is not the primary: it sent the request on to it.
    Forwarded(views::Forwarded),
}

/// Facts about this node that do not change while it runs.
#[derive(Debug, Clone, Serialize)]
pub struct LocalInfo {
    /// Peer id, base58.
    pub id: String,
    /// Human name (`--name`).
    pub name: String,
    /// Overlay name: only nodes of the same overlay are admitted.
    pub overlay: String,
    /// `lan` or `wan`.
    pub profile: String,
    /// Sessions this node will host.
    pub capacity: u32,
    /// Software version.
    pub version: String,
    /// When the node started.
    #[serde(skip)]
    pub started: SystemTime,
}

impl Shared {
    /// Empty state for a node, with metrics of its own; the driver reads
    /// `commands`' receiver.
    pub fn new(local: LocalInfo, commands: mpsc::Sender<SessionCommand>) -> Self {
        let metrics = Metrics::new(Default::default(), local.started);
        Shared::with_metrics(local, commands, metrics)
    }

    /// Empty state for a node whose metrics were set up with its swarm.
    pub fn with_metrics(
        local: LocalInfo,
        commands: mpsc::Sender<SessionCommand>,
        metrics: Metrics,
    ) -> Self {
        let me = views::Member {
            id: local.id.clone(),
            name: local.name.clone(),
            state: "alive".to_owned(),
            capacity: local.capacity,
            since: humantime::format_rfc3339_millis(local.started).to_string(),
            local: true,
            ..views::Member::default()
        };
        Shared {
            sessions: DashMap::new(),
            commands,
            local,
            me: RwLock::new(me),
            members: DashMap::new(),
            peers: DashMap::new(),
            metrics,
            events: broadcast::channel(EVENT_BUFFER).0,
            listen_addrs: RwLock::new(Vec::new()),
            coordinate: RwLock::new(None),
        }
    }

    /// Members sorted by name then id, for stable output.
    pub fn members_sorted(&self) -> Vec<views::Member> {
        let mut out: Vec<views::Member> = self.members.iter().map(|m| m.value().clone()).collect();
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        out
    }

    /// This node as a member, as last published.
    pub fn me(&self) -> views::Member {
        match self.me.read() {
            Ok(me) => me.clone(),
            // A writer panicked mid-update; the view is still worth showing.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The members this node knows and itself, sorted by name then id,
    /// that pass `filter`: what `GET /v1/members` answers.
    pub fn members_with_me(&self, filter: &MemberFilter) -> Vec<views::Member> {
        let mut out: Vec<views::Member> = self
            .members
            .iter()
            .map(|m| m.value().clone())
            .chain(std::iter::once(self.me()))
            .filter(|m| filter.matches(m))
            .collect();
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        out
    }

    /// Sessions sorted by id.
    pub fn sessions_sorted(&self) -> Vec<views::Session> {
        let mut out: Vec<views::Session> =
            self.sessions.iter().map(|s| s.value().clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Peers sorted by id.
    pub fn peers_sorted(&self) -> Vec<views::Peer> {
        let mut out: Vec<views::Peer> = self.peers.iter().map(|p| p.value().clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Counts members by state name.
    pub fn members_by_state(&self) -> [(&'static str, usize); 4] {
        let mut counts = [("alive", 0), ("suspect", 0), ("dead", 0), ("left", 0)];
        for m in self.members.iter() {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == m.state) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// Publishes an event to every `/v1/events` subscriber (none is fine).
    pub fn publish(&self, event: views::Event) {
        let _ = self.events.send(event);
    }
}

/// Which members a listing keeps: all of its tags (same values), and one
/// of its states when any is given (`?tag=region=eu&state=alive`,
/// `baton members --tag region=eu --state alive`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberFilter {
    /// Tags a member must have, with these values.
    pub tags: BTreeMap<String, String>,
    /// States of which a member must be in one; any when empty.
    pub states: Vec<String>,
}

/// The states a member can be in, as the API spells them.
pub const MEMBER_STATES: [&str; 4] = ["alive", "suspect", "dead", "left"];

impl MemberFilter {
    /// Reads query parameters (`tag=KEY=VALUE`, `state=STATE`, each
    /// repeatable); the error says which one is wrong and what works.
    pub fn from_query(pairs: &[(String, String)]) -> Result<MemberFilter, String> {
        let mut filter = MemberFilter::default();
        for (key, value) in pairs {
            match key.as_str() {
                "tag" => {
                    let longest = MAX_TAG_KEY + 1 + MAX_TAG_VALUE;
                    if value.len() > longest {
                        return Err(format!(
                            "tag: {} bytes, longer than any KEY=VALUE tag ({longest})",
                            value.len()
                        ));
                    }
                    let (k, v) = baton_protocol::meta::parse_tag(value)
                        .map_err(|why| format!("tag: {why}"))?;
                    if filter.tags.get(&k).is_some_and(|have| *have != v) {
                        return Err(format!(
                            "tag: {k} is asked with two values; a member has one"
                        ));
                    }
                    filter.tags.insert(k, v);
                }
                "state" => {
                    if !MEMBER_STATES.contains(&value.as_str()) {
                        let shown: String = value.chars().take(40).collect();
                        return Err(format!(
                            "state {shown:?}: expected one of {}",
                            MEMBER_STATES.join(", ")
                        ));
                    }
                    filter.states.push(value.clone());
                }
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(format!(
                        "unknown query parameter {shown:?}: this path takes tag=KEY=VALUE \
                         and state=alive|suspect|dead|left (each repeatable)"
                    ));
                }
            }
        }
        Ok(filter)
    }

    /// Whether `member` passes.
    pub fn matches(&self, member: &views::Member) -> bool {
        (self.states.is_empty() || self.states.contains(&member.state))
            && self
                .tags
                .iter()
                .all(|(k, v)| member.tags.get(k).is_some_and(|have| have == v))
    }
}

/// Wall-clock `now` as (RFC 3339 with milliseconds, Unix milliseconds).
pub fn wall_clock() -> (String, u64) {
    let now = SystemTime::now();
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (humantime::format_rfc3339_millis(now).to_string(), ms)
}
