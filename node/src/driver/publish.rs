//! What the API shows, kept current from the protocol `Node`'s events and
//! state: members, peers, sessions, counters, the event stream, and the
//! log lines an operator reads. Nothing here decides anything.

use std::time::{Duration, Instant};

use baton_protocol::NodeId;
use baton_protocol::coords::Coordinate;
use baton_protocol::meta::NodeMeta;
use baton_protocol::node::Event;
use baton_protocol::session::SessionState;
use baton_protocol::swim;

use super::Driver;
use super::swarm::peer_id;
use crate::state::wall_clock;
use crate::views;

/// A Vivaldi coordinate as the API shows it, in milliseconds.
pub fn coordinate_view(c: &Coordinate) -> views::Coordinate {
    views::Coordinate {
        vec_ms: c.vec.iter().map(|x| x * 1e3).collect(),
        height_ms: c.height * 1e3,
        adjustment_ms: c.adjustment * 1e3,
        error: c.error,
    }
}

/// A node id as the API shows it: its base58 peer id.
pub fn show(id: &NodeId) -> String {
    peer_id(id).map_or_else(|| id.to_string(), |p| p.to_base58())
}

impl Driver {
    /// Mirrors one event of the node into the views, the event stream and
    /// the log.
    pub(super) fn on_node_event(&mut self, event: Event) {
        match event {
            Event::Member(e) => self.on_member_event(e),
            Event::Admitted { peer } => {
                tracing::info!(peer = %show(&peer), "peer admitted: datagram keys agreed");
                self.peers_dirty = true;
            }
            Event::Refused { peer, reason } => {
                tracing::warn!(peer = %show(&peer), %reason, "refused a peer");
                self.shared.members.remove(&show(&peer));
                self.peers_dirty = true;
            }
            Event::RefusedBy { peer, reason } => {
                tracing::warn!(peer = %show(&peer), %reason, "a peer refused this node");
                self.peers_dirty = true;
            }
            Event::HandshakeFailed { peer, why } => {
                tracing::debug!(peer = %show(&peer), %why, "handshake failed");
                self.peers_dirty = true;
            }
            Event::DuplicateIdentity { peer, detail } => {
                if peer == *self.node.id() {
                    tracing::error!(%detail, "THIS NODE'S IDENTITY RUNS TWICE");
                } else {
                    tracing::error!(peer = %show(&peer), %detail, "a peer's identity runs twice");
                }
                self.shared.metrics.duplicate_identity();
            }
            Event::ServicesDiffer { peer, ours, theirs } => {
                let id = show(&peer);
                let name = self
                    .shared
                    .members
                    .get(&id)
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                tracing::warn!(
                    peer = %id,
                    name = %self.display_name(&id, &name),
                    ours = %format!("{ours:016x}"),
                    theirs = %format!("{theirs:016x}"),
                    "a member's [services.exec] templates differ from this node's: a session \
                     one of you takes over from the other may run another command or fail to \
                     start; give every node the same templates"
                );
                self.shared.metrics.services_differ();
            }
            Event::Fenced { fenced: true } => {
                tracing::warn!(
                    "this node hears nothing from the overlay (every probe fails): it stops \
                     serving its sessions, which its peers take over, until it hears them again"
                );
            }
            Event::Fenced { fenced: false } => {
                tracing::info!(
                    "this node hears the overlay again: it resumes once its map is current"
                );
            }
            Event::SessionChanged { id } => self.publish_session(&id),
            Event::SessionStarted { id, epoch, reason } => {
                self.publish_session_event(&id, "started", epoch, &reason);
            }
            Event::SessionFailed { id, why, moved_to } => {
                let epoch = self.node.engine().map().get(&id).map_or(0, |r| r.epoch);
                let reason = match &moved_to {
                    Some(to) => format!("failed here ({why}): handed to {}", show(to)),
                    None => format!("failed here ({why})"),
                };
                tracing::error!(session = %id, %reason, "session failed");
                self.publish_session_event(&id, "failed", epoch, &reason);
                self.publish_session(&id);
            }
            Event::SessionPaused { id, reason } => {
                tracing::warn!(session = %id, %reason, "stream paused");
                let epoch = self.node.engine().map().get(&id).map_or(0, |r| r.epoch);
                self.publish_session_event(&id, "paused", epoch, &reason);
                self.publish_session(&id);
            }
            Event::SessionResumed { id } => {
                tracing::info!(session = %id, "stream resumed: the client consents");
                let epoch = self.node.engine().map().get(&id).map_or(0, |r| r.epoch);
                self.publish_session_event(&id, "resumed", epoch, "the client consents again");
                self.publish_session(&id);
            }
            Event::SessionStopped { id, epoch, reason } => {
                tracing::info!(session = %id, %reason, "stopping session");
                self.publish_session_event(&id, "stopped", epoch, &reason);
            }
        }
    }

    fn on_member_event(&mut self, event: swim::Event) {
        match event {
            swim::Event::MemberState {
                id,
                state,
                previous,
                incarnation,
            } => {
                if let Some(took) = self.suspected.on_state(&id, state, Instant::now()) {
                    let took = took.as_secs_f64();
                    self.shared.metrics.suspicion_to_dead.observe(took);
                }
                let key = show(&id);
                let (at, at_ms) = wall_clock();
                let name = {
                    let mut view =
                        self.shared
                            .members
                            .entry(key.clone())
                            .or_insert_with(|| views::Member {
                                id: key.clone(),
                                name: String::new(),
                                state: state.as_str().to_string(),
                                incarnation,
                                rtt_ms: None,
                                distance_ms: None,
                                addrs: Vec::new(),
                                capacity: 0,
                                load: 0,
                                since: at.clone(),
                                ..views::Member::default()
                            });
                    if view.name.is_empty()
                        && let Some(meta) = self
                            .node
                            .swim()
                            .member(&id)
                            .and_then(|m| NodeMeta::decode(&m.meta).ok())
                    {
                        view.name = meta.name;
                        view.tags = meta.tags;
                    }
                    view.state = state.as_str().to_string();
                    view.incarnation = incarnation;
                    view.since = at.clone();
                    view.name.clone()
                };
                self.check_name(&key, &name);
                tracing::info!(
                    peer = %key, name = %name, state = state.as_str(),
                    previous = previous.map(|p| p.as_str()).unwrap_or("-"), incarnation,
                    "member state"
                );
                self.shared.publish(views::Event {
                    kind: "member".to_string(),
                    at,
                    at_ms,
                    id: key,
                    name,
                    state: state.as_str().to_string(),
                    previous: previous.map(|p| p.as_str().to_string()),
                    incarnation,
                    reason: None,
                });
                self.peers_dirty = true;
            }
            swim::Event::MemberMeta { id, meta } => {
                let Ok(meta) = NodeMeta::decode(&meta) else {
                    tracing::debug!(peer = %show(&id), "unreadable member metadata");
                    return;
                };
                self.check_name(&show(&id), &meta.name);
                if let Some(mut view) = self.shared.members.get_mut(&show(&id)) {
                    view.name = meta.name;
                    view.addrs = meta.addrs;
                    view.capacity = meta.capacity;
                    view.load = meta.load;
                    view.tags = meta.tags;
                }
            }
            swim::Event::ProbeRtt { id, rtt } => {
                self.shared.metrics.probe_rtt.observe(rtt.as_secs_f64());
                let swim = self.node.swim();
                let Some(member) = swim.member(&id) else {
                    return;
                };
                let rtt_ms = member.srtt.map(|d| d.as_secs_f64() * 1e3);
                let distance_ms = member
                    .coord
                    .as_ref()
                    .map(|c| swim.coordinate().distance_to(c).as_secs_f64() * 1e3);
                let coordinate = member.coord.as_ref().map(coordinate_view);
                if let Some(mut view) = self.shared.members.get_mut(&show(&id)) {
                    view.rtt_ms = rtt_ms;
                    view.distance_ms = distance_ms;
                    view.coordinate = coordinate;
                }
                // Every RTT sample moves this node's own coordinate too.
                let own = coordinate_view(swim.coordinate());
                match self.shared.coordinate.write() {
                    Ok(mut c) => *c = Some(own),
                    Err(poisoned) => *poisoned.into_inner() = Some(own),
                }
            }
            swim::Event::Refuted { incarnation } => {
                let (at, at_ms) = wall_clock();
                tracing::warn!(incarnation, "refuted a suspicion about this node");
                self.shared.publish(views::Event {
                    kind: "refuted".to_string(),
                    at,
                    at_ms,
                    id: self.me.to_base58(),
                    name: self.shared.local.name.clone(),
                    state: "alive".to_string(),
                    previous: None,
                    incarnation,
                    reason: None,
                });
            }
            swim::Event::Removed { id } => {
                self.suspected.forget(&id);
                self.shared.members.remove(&show(&id));
                self.peers_dirty = true;
            }
        }
    }

    /// Warns, once per peer, when a member's name is this node's or another
    /// member's: names are for people, and two alike make `baton sessions`
    /// ambiguous (the views then add the peer id, see [`Self::display_name`]).
    fn check_name(&mut self, key: &str, name: &str) {
        if name.is_empty() || self.named_twice.contains(key) {
            return;
        }
        let mine = *name == self.shared.local.name;
        let other = self
            .shared
            .members
            .iter()
            .find(|m| m.id != key && m.name == name)
            .map(|m| m.id.clone());
        if mine || other.is_some() {
            self.named_twice.insert(key.to_string());
            let with = if mine {
                "this node".to_string()
            } else {
                other.unwrap_or_default()
            };
            tracing::warn!(
                peer = %key, name = %name, same_as = %with,
                "two nodes of the overlay share a name: give each node a name of its own \
                 (--name); until then views show the peer id beside it"
            );
        }
    }

    /// How a node is named in views: its name, with the end of its peer id
    /// when another node has the same name.
    fn display_name(&self, key: &str, name: &str) -> String {
        let shared = *name == self.shared.local.name && key != self.shared.local.id
            || self
                .shared
                .members
                .iter()
                .any(|m| m.id != key && m.name == name);
        if shared && !name.is_empty() {
            let tail: String = key
                .chars()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{name} (…{tail})")
        } else {
            name.to_string()
        }
    }

    pub(super) fn publish_session_event(&self, id: &str, state: &str, epoch: u64, reason: &str) {
        let (at, at_ms) = wall_clock();
        self.shared.publish(views::Event {
            kind: "session".to_string(),
            at,
            at_ms,
            id: id.to_string(),
            name: self.shared.local.name.clone(),
            state: state.to_string(),
            previous: None,
            incarnation: u32::try_from(epoch).unwrap_or(u32::MAX),
            reason: Some(reason.to_string()),
        });
    }

    /// The primary a client report was sent on to, as the API names it.
    pub(super) fn forwarded(&self, primary: &NodeId) -> views::Forwarded {
        let id = show(primary);
        let name = self
            .shared
            .members
            .get(&id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        views::Forwarded {
            forwarded_to_name: self.display_name(&id, &name),
            forwarded_to: id,
        }
    }

    /// Mirrors one session of the map into the API's view.
    pub(super) fn publish_session(&mut self, id: &str) {
        let engine = self.node.engine();
        let Some(record) = engine.map().get(id) else {
            self.shared.sessions.remove(id);
            self.services.forget(id);
            return;
        };
        let primary = show(&record.primary);
        let primary_name = if record.primary == *self.node.id() {
            self.shared.local.name.clone()
        } else {
            self.shared
                .members
                .get(&primary)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        let primary_name = self.display_name(&primary, &primary_name);
        let view = views::Session {
            id: record.id.clone(),
            service: record.service.clone(),
            primary,
            primary_name,
            backups: record.backups.iter().map(show).collect(),
            epoch: record.epoch,
            version: record.version,
            state: match record.state {
                SessionState::Active => "active",
                SessionState::Closed => "closed",
            }
            .to_string(),
            client: record.client.clone(),
            location: record.location.clone(),
            params: record.params.clone(),
            started_ms: record.started_ms,
            updated_ms: record.updated_ms,
            reason: record.reason.clone(),
            history: engine
                .history(id)
                .iter()
                .map(|m| views::Move {
                    epoch: m.epoch,
                    primary: show(&m.primary),
                    reason: m.reason.clone(),
                    at_ms: m.at_ms,
                })
                .collect(),
            hosted_here: self.services.hosts(id),
            standby_here: self.services.is_warm(id),
            paused: engine.is_paused(id),
            instance: self.services.view(id),
        };
        self.shared.sessions.insert(id.to_string(), view);
    }

    /// Rebuilds the peer view: every peer the node tracks, with the
    /// addresses of its open connections.
    pub(super) fn publish_peers(&mut self) {
        if !self.peers_dirty {
            return;
        }
        self.peers_dirty = false;
        let mut seen = Vec::new();
        for (id, info) in self.node.peers() {
            let Some(peer) = peer_id(&id) else { continue };
            let key = peer.to_base58();
            let conns = self.connections.get(&peer);
            let mut addrs: Vec<String> = conns
                .map(|l| l.iter().map(|(_, a)| a.to_string()).collect())
                .unwrap_or_default();
            addrs.sort();
            addrs.dedup();
            let admission = if info.refused.is_some() {
                "refused"
            } else if info.admitted {
                "admitted"
            } else if info.handshaking {
                "pending"
            } else {
                "none"
            };
            self.shared.peers.insert(
                key.clone(),
                views::Peer {
                    id: key.clone(),
                    addrs,
                    connections: conns.map_or(0, |l| l.len() as u32),
                    admission: admission.to_string(),
                    reason: info.refused,
                },
            );
            seen.push(key);
        }
        self.shared.peers.retain(|k, _| seen.contains(k));
    }

    /// Every 10 s: drops the views of sessions the map no longer holds (their
    /// tombstones were collected), so that the API's view stays as bounded
    /// as the map.
    pub(super) fn sweep_views(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.views_swept) < Duration::from_secs(10) {
            return;
        }
        self.views_swept = now;
        let map = self.node.engine().map();
        self.shared.sessions.retain(|id, _| map.get(id).is_some());
    }

    /// At most every 500 ms: this node's own member view (`local`) gets
    /// its metadata, incarnation and coordinate.
    pub(super) fn publish_me(&mut self) {
        let now = Instant::now();
        if self
            .me_published
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(500))
        {
            return;
        }
        self.me_published = Some(now);
        let meta = self.node.meta();
        let swim = self.node.swim();
        let state = if self.node.is_leaving() {
            "left"
        } else {
            "alive"
        };
        let mut me = match self.shared.me.write() {
            Ok(me) => me,
            Err(poisoned) => poisoned.into_inner(),
        };
        me.state = state.to_owned();
        me.incarnation = swim.incarnation();
        me.addrs.clone_from(&meta.addrs);
        me.capacity = meta.capacity;
        me.load = meta.load;
        me.tags.clone_from(&meta.tags);
        me.coordinate = Some(coordinate_view(swim.coordinate()));
    }

    /// Copies the node's counters into the metrics: atomic stores, no
    /// allocation, as this runs after every flush.
    pub(super) fn publish_metrics(&self) {
        let m = &self.shared.metrics;
        let swim = self.node.swim();
        m.copy_stats(self.node.stats(), &swim.stats());
        m.set_swim_self(swim.incarnation(), swim.local_health());
        m.copy_engine(self.node.engine());
    }
}
