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
use super::swarm::{is_loopback_text, peer_id};
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

/// The most nodes whose compact ids [`Driver::node_keys`] remembers.
const MAX_NODE_KEYS: usize = 4096;

/// A node as reasons name it for people: `name (…tail)`, the tail being the
/// last 8 characters of its peer id as `baton members` and `baton watch`
/// show it; the tail alone when the name is not known.
pub(crate) fn node_label(key: &str, name: &str) -> String {
    let chars = key.chars().count();
    let tail: String = key.chars().skip(chars.saturating_sub(8)).collect();
    if name.is_empty() {
        format!("…{tail}")
    } else {
        format!("{name} (…{tail})")
    }
}

/// `text` (a session's reason, a protocol message) with every compact node
/// id (the 12 hex digits the protocol writes into records) of a node in
/// `labels` replaced by how people know that node.
pub(crate) fn name_nodes<'a>(
    text: &str,
    labels: impl IntoIterator<Item = (&'a str, String)>,
) -> String {
    let mut text = text.to_string();
    for (compact, label) in labels {
        if text.contains(compact) {
            text = text.replace(compact, &label);
        }
    }
    text
}

/// `view` after its member announced `meta` at `incarnation`: a member
/// re-announces its metadata (its load, its tags) at a new incarnation
/// without changing state, and the view shows the incarnation last heard.
/// The member is remote: its addresses beyond loopback come first (it
/// announces its loopback ones too, which only reach it from its own
/// host), the loopback ones after them (on a single-host overlay they are
/// all there is).
fn apply_meta(view: &mut views::Member, meta: NodeMeta, incarnation: u32) {
    let mut addrs = meta.addrs;
    addrs.sort_by_key(|a| is_loopback_text(a));
    view.name = meta.name;
    view.addrs = addrs;
    view.capacity = meta.capacity;
    view.load = meta.load;
    view.tags = meta.tags;
    view.incarnation = incarnation;
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
                let detail = self.readable(&detail);
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
                    Some(to) => format!("failed here ({why}): handed to {to}"),
                    None => format!("failed here ({why})"),
                };
                let reason = self.readable(&reason);
                tracing::error!(session = %id, %reason, "session failed");
                self.publish_session_event(&id, "failed", epoch, &reason);
                self.publish_session(&id);
            }
            Event::SessionPaused { id, reason } => {
                let reason = self.readable(&reason);
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
                tracing::info!(session = %id, reason = %self.readable(&reason), "stopping session");
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
                self.remember(&id);
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
                if self.check_name(&key, &name) {
                    self.republish_sessions();
                }
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
                    applied: Vec::new(),
                    restart: Vec::new(),
                });
                self.peers_dirty = true;
            }
            swim::Event::MemberMeta {
                id,
                meta,
                incarnation,
            } => {
                let Ok(meta) = NodeMeta::decode(&meta) else {
                    tracing::debug!(peer = %show(&id), "unreadable member metadata");
                    return;
                };
                self.remember(&id);
                let twice = self.check_name(&show(&id), &meta.name);
                if let Some(mut view) = self.shared.members.get_mut(&show(&id)) {
                    apply_meta(&mut view, meta, incarnation);
                }
                if twice {
                    self.republish_sessions();
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
                    applied: Vec::new(),
                    restart: Vec::new(),
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
    /// True when it warned: the session views, which may name the first
    /// node of that name bare, are then to be published again.
    fn check_name(&mut self, key: &str, name: &str) -> bool {
        if name.is_empty() || self.named_twice.contains(key) {
            return false;
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
            return true;
        }
        false
    }

    /// Publishes every session's view again (after names changed).
    fn republish_sessions(&mut self) {
        let ids: Vec<String> = self
            .node
            .engine()
            .map()
            .iter()
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            self.publish_session(&id);
        }
    }

    /// Remembers the peer id behind `id`'s compact form.
    fn remember(&mut self, id: &NodeId) {
        if self.node_keys.len() < MAX_NODE_KEYS {
            self.node_keys.insert(id.to_string(), show(id));
        }
    }

    /// `text` with the compact ids of the nodes met named as people know
    /// them (see [`name_nodes`]): reasons and protocol messages show the
    /// name and the end of the peer id that `baton members` shows.
    pub(super) fn readable(&self, text: &str) -> String {
        let me = self.node.id().to_string();
        let mine = (
            me.as_str(),
            node_label(&self.shared.local.id, &self.shared.local.name),
        );
        let others = self.node_keys.iter().map(|(compact, key)| {
            let name = self
                .shared
                .members
                .get(key)
                .map(|m| m.name.clone())
                .unwrap_or_default();
            (compact.as_str(), node_label(key, &name))
        });
        name_nodes(text, std::iter::once(mine).chain(others))
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
            reason: Some(self.readable(reason)),
            applied: Vec::new(),
            restart: Vec::new(),
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
            reason: self.readable(&record.reason),
            history: engine
                .history(id)
                .iter()
                .map(|m| views::Move {
                    epoch: m.epoch,
                    primary: show(&m.primary),
                    reason: self.readable(&m.reason),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_metadata_shows_the_incarnation_it_came_at() {
        let mut view = views::Member {
            id: "12D3KooWBravo".to_string(),
            state: "alive".to_string(),
            incarnation: 3,
            ..views::Member::default()
        };
        let meta = NodeMeta {
            name: "bravo".to_string(),
            load: 1,
            capacity: 10,
            ..NodeMeta::default()
        };
        apply_meta(&mut view, meta, 4);
        assert_eq!(
            (
                view.incarnation,
                view.load,
                view.name.as_str(),
                view.state.as_str()
            ),
            (4, 1, "bravo", "alive")
        );
    }

    #[test]
    fn a_remote_member_shows_its_addresses_beyond_loopback_first() {
        let addrs = |list: &[&str]| list.iter().map(|a| (*a).to_string()).collect::<Vec<_>>();
        let mut view = views::Member::default();
        let meta = |list: &[&str]| NodeMeta {
            addrs: addrs(list),
            ..NodeMeta::default()
        };
        apply_meta(
            &mut view,
            meta(&[
                "/ip4/127.0.0.1/udp/7701/quic-v1",
                "/ip4/198.18.0.2/udp/7701/quic-v1",
                "/ip6/::1/udp/7701/quic-v1",
                "/ip4/198.18.1.2/tcp/7701",
                "/dns4/localhost/tcp/7701",
            ]),
            1,
        );
        // Loopback ones kept, after the others; each group in its order.
        assert_eq!(
            view.addrs,
            addrs(&[
                "/ip4/198.18.0.2/udp/7701/quic-v1",
                "/ip4/198.18.1.2/tcp/7701",
                "/ip4/127.0.0.1/udp/7701/quic-v1",
                "/ip6/::1/udp/7701/quic-v1",
                "/dns4/localhost/tcp/7701",
            ])
        );
        // On a single-host overlay, loopback is all there is.
        let local = ["/ip4/127.0.0.1/udp/7711/quic-v1", "/ip4/127.0.0.1/tcp/7711"];
        apply_meta(&mut view, meta(&local), 2);
        assert_eq!(view.addrs, addrs(&local));
        // Text that is no multiaddr is kept where it was.
        assert!(!is_loopback_text("not an address"));
    }

    #[test]
    fn reasons_name_nodes_as_people_know_them() {
        let labels = [
            ("2397b6044c96", node_label("12D3KooWAbcdefghdT6ZLqVt", "b")),
            ("8066af3cd502", node_label("12D3KooWXyz00000QQQQRRRR", "")),
        ];
        assert_eq!(
            name_nodes("takeover: primary 2397b6044c96 is down", labels.clone()),
            "takeover: primary b (…dT6ZLqVt) is down"
        );
        assert_eq!(
            name_nodes(
                "failed: the service would not run on 8066af3cd502: exit status: 3",
                labels.clone()
            ),
            "failed: the service would not run on …QQQQRRRR: exit status: 3"
        );
        // Ids of nodes not met stay as they are.
        assert_eq!(
            name_nodes("service failed on 0123456789ab: x", labels),
            "service failed on 0123456789ab: x"
        );
    }
}
