//! What a node holds per peer (admission, the datagram plane's keys, the
//! peer's datagram socket, messages waiting for keys) and the admission
//! handshake of `peering` run as a state machine over a stream.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::streams::{Kind, Protocol, Stream, StreamId};
use super::{Class, Event, MAX_REFUSED, Node, Refused, Timer, Transmit, resolve_datagram};
use crate::NodeId;
use crate::datagram::{self, Opener, Sealer};
use crate::peering::{self, Challenge, Hello, Response, Role};
use crate::session::Signer;

/// Key pairs kept per peer: the newest seals, both open, so that two
/// handshakes that crossed (each side started one) still interoperate.
const SESSIONS_PER_PEER: usize = 2;

/// One handshake's keys.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) local_index: u32,
    pub(super) sealer: Sealer,
    pub(super) opener: Opener,
}

/// A message waiting for keys with its peer.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) plain: Vec<u8>,
    pub(super) class: Class,
    /// The probe a ping belongs to.
    pub(super) probe: Option<u16>,
}

/// A peer as this node knows it.
#[derive(Debug, Default)]
pub(super) struct Peer {
    /// Newest first.
    sessions: Vec<Session>,
    /// Where its datagrams come from (and ours go).
    pub(super) endpoint: Option<SocketAddr>,
    /// The boot number of the process the keys were agreed with.
    pub(super) boot: Option<u64>,
    /// The handshake this node started with it, while it runs.
    pub(super) handshake: Option<StreamId>,
    /// No new handshake before this (after a failure).
    pub(super) retry_at: Option<Instant>,
    backoff: Duration,
    /// Encoded SWIM messages waiting for keys, with the sequence number of
    /// the probe a ping belongs to (SWIM times it from its release).
    pub(super) pending: VecDeque<Pending>,
    /// Whether a libp2p connection to it is up.
    pub(super) connected: bool,
    /// The IP its connection comes from.
    pub(super) remote_ip: Option<IpAddr>,
    /// Where it may be dialled (libp2p multiaddrs).
    pub(super) addrs: Vec<String>,
    /// When its last authentic datagram arrived.
    pub(super) heard: Option<Instant>,
    /// Pings and ping-reqs sent to it since then.
    pub(super) unanswered: u32,
    /// The boot numbers its processes announced, the latest last.
    boots: Vec<u64>,
    /// Whether they alternated: two processes hold its identity.
    pub(super) twinned: bool,
    /// The digest of its service configuration it announced last.
    pub(super) services: u64,
    /// When discovery, a connection or a stream last named it.
    pub(super) seen: Option<Instant>,
}

/// A peer's admission and keys, for views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Keys are agreed: datagrams flow.
    pub admitted: bool,
    /// Why this node refused it, while it remembers.
    pub refused: Option<String>,
    /// Its datagram socket.
    pub endpoint: Option<SocketAddr>,
    /// Whether a libp2p connection to it is up.
    pub connected: bool,
    /// Whether a handshake this node started runs.
    pub handshaking: bool,
    /// The boot number of its process, once a handshake told it.
    pub boot: Option<u64>,
}

impl PeerInfo {
    pub(super) fn refused(reason: String) -> Self {
        PeerInfo {
            admitted: false,
            refused: Some(reason),
            endpoint: None,
            connected: false,
            handshaking: false,
            boot: None,
        }
    }
}

impl Peer {
    /// Records a boot number the peer announced (in a handshake or its
    /// metadata). A process never returns to an older boot number: one that
    /// comes back means two processes run with this peer's identity, and the
    /// answer says so.
    pub(super) fn note_boot(&mut self, boot: u64) -> Option<String> {
        if self.boots.last() == Some(&boot) {
            return None;
        }
        let back = self.boots.contains(&boot);
        self.boots.retain(|b| *b != boot);
        self.boots.push(boot);
        if self.boots.len() > 4 {
            self.boots.remove(0);
        }
        self.twinned |= back;
        back.then(|| {
            format!(
                "two live processes announce this peer id (boot numbers {:x?} alternate, \
                 latest from {:?}): one identity runs twice; its operator must stop one",
                self.boots, self.endpoint
            )
        })
    }

    /// The other processes' boot numbers, when two hold its identity and
    /// one of them announced `boot`: what a handshake tells it.
    pub(super) fn twins_of(&self, boot: u64) -> Vec<u64> {
        if !self.twinned {
            return Vec::new();
        }
        self.boots
            .iter()
            .copied()
            .filter(|b| *b != boot)
            .take(peering::MAX_TWINS)
            .collect()
    }

    /// Whether keys are agreed with it.
    pub(super) fn has_session(&self) -> bool {
        !self.sessions.is_empty()
    }

    pub(super) fn info(&self, refused: Option<String>) -> PeerInfo {
        PeerInfo {
            admitted: self.has_session(),
            refused,
            endpoint: self.endpoint,
            connected: self.connected,
            handshaking: self.handshake.is_some(),
            boot: self.boot,
        }
    }

    /// The receive indices of its keys.
    pub(super) fn indices(&self) -> Vec<u32> {
        self.sessions.iter().map(|s| s.local_index).collect()
    }

    /// Forgets its keys; returns their receive indices.
    pub(super) fn drop_sessions(&mut self) -> Vec<u32> {
        let indices = self.indices();
        self.sessions.clear();
        indices
    }

    /// Seals a message under the newest keys, if there are keys and a
    /// socket to send to.
    pub(super) fn seal(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        self.endpoint?;
        self.sessions.first_mut()?.sealer.seal(plain)
    }
}

impl<S: Signer, R: Rng + SeedableRng> Node<S, R> {
    /// Checks a datagram and opens it; returns its sender and plaintext, or
    /// counts why it was dropped.
    pub(super) fn open_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<(NodeId, Vec<u8>)> {
        let drops = &mut self.stats.drops;
        if bytes.len() > datagram::MAX_DATAGRAM {
            drops.bad_size += 1;
            return None;
        }
        let Some((index, _)) = datagram::header(bytes) else {
            drops.bad_size += 1;
            return None;
        };
        let Some(peer) = self.indices.get(&index) else {
            drops.unknown_key += 1;
            return None;
        };
        let Some(p) = self.peers.get_mut(peer) else {
            drops.unknown_key += 1;
            return None;
        };
        let Some(session) = p.sessions.iter_mut().find(|s| s.local_index == index) else {
            drops.unknown_key += 1;
            return None;
        };
        match session.opener.open(bytes) {
            Ok(plain) => {
                // Like WireGuard, a peer is wherever its authentic datagrams
                // come from: a new address (NAT rebinding) just works.
                p.endpoint = Some(from);
                p.heard = Some(now);
                p.unanswered = 0;
                Some((peer.clone(), plain))
            }
            Err(datagram::OpenError::Replayed) => {
                drops.replayed += 1;
                None
            }
            Err(datagram::OpenError::BadTag) => {
                drops.bad_tag += 1;
                None
            }
            Err(datagram::OpenError::BadSize) => {
                drops.bad_size += 1;
                None
            }
        }
    }

    /// A fresh receive index, unused by any key this node holds and by
    /// any handshake still running: two handshakes that drew the same
    /// index would install two keys under it, and the later would take
    /// the earlier peer's datagrams.
    pub(super) fn new_index(&mut self) -> u32 {
        loop {
            let index = self.rng.random::<u32>() % datagram::INDEX_LIMIT;
            if !self.indices.contains_key(&index) && !self.handshake_holds(index) {
                return index;
            }
        }
    }

    /// Whether a running handshake offered `index` as this node's.
    fn handshake_holds(&self, index: u32) -> bool {
        self.streams.values().any(|s| match &s.kind {
            Kind::HelloOut { index: held, .. } => *held == index,
            Kind::HelloIn { offer: Some(offer) } => offer.2 == index,
            _ => false,
        })
    }

    pub(super) fn nonce(&mut self) -> Vec<u8> {
        let mut nonce = vec![0u8; peering::NONCE_LEN];
        self.rng.fill(&mut nonce[..]);
        nonce
    }

    pub(super) fn datagram_str(&self) -> String {
        self.config
            .datagram
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Members this node has, `peer` excluded: what the member limit counts.
    fn members_besides(&self, peer: &NodeId) -> usize {
        let active = self.swim.num_active();
        let is_member = self.swim.member(peer).is_some_and(|m| m.state.is_active());
        active - usize::from(is_member)
    }

    /// Challenges `peer`: the first frame of a handshake this node starts.
    pub(super) fn start_handshake(&mut self, now: Instant, peer: &NodeId) {
        let running = self
            .peers
            .values()
            .filter(|p| p.handshake.is_some())
            .count();
        if running >= self.config.timing.max_handshakes {
            // Try again shortly: handshakes end within their timeout.
            let at = now + self.config.timing.handshake_backoff;
            if let Some(p) = self.peers.get_mut(peer) {
                p.retry_at = Some(at);
            }
            self.schedule(at, Timer::Retry(peer.clone()));
            return;
        }
        let nonce = self.nonce();
        let index = self.new_index();
        let challenge = Hello::Challenge(Challenge {
            overlay: self.config.policy.overlay.clone(),
            nonce: nonce.clone(),
            index,
            boot: self.boot,
            datagram: self.datagram_str(),
        });
        let addrs = self
            .peers
            .get(peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        let stream = self.open_stream(
            now,
            peer,
            Protocol::Hello,
            addrs,
            Kind::HelloOut {
                nonce,
                index,
                keys: None,
            },
        );
        self.send_frame(stream, peering::encode(&challenge));
        if let Some(p) = self.peers.get_mut(peer) {
            p.handshake = Some(stream);
        }
    }

    /// A frame of a handshake this node started.
    pub(super) fn hello_out_frame(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        let Some(Stream {
            peer,
            kind: Kind::HelloOut { nonce, index, keys },
            ..
        }) = self.streams.get(&stream)
        else {
            return;
        };
        let (peer, nonce, index, waiting_done) =
            (peer.clone(), nonce.clone(), *index, keys.is_some());
        match (peering::decode(bytes), waiting_done) {
            (Ok(Hello::Response(r)), false) => {
                self.hello_response(now, stream, &peer, &nonce, index, r)
            }
            (Ok(Hello::Done), true) => {
                let Some(Stream {
                    kind: Kind::HelloOut { keys, .. },
                    ..
                }) = self.streams.get_mut(&stream)
                else {
                    return;
                };
                let Some((session, boot, datagram)) = keys.take() else {
                    return;
                };
                self.finish(stream);
                self.install(now, &peer, session, boot, &datagram);
            }
            (Ok(Hello::Refused { reason }), _) => {
                self.refused_by(now, stream, &peer, reason);
            }
            (Ok(other), _) => self.handshake_failed(
                now,
                stream,
                &peer,
                format!("unexpected {} in the handshake", hello_name(&other)),
            ),
            (Err(e), _) => self.handshake_failed(now, stream, &peer, e.to_string()),
        }
    }

    fn hello_response(
        &mut self,
        now: Instant,
        stream: StreamId,
        peer: &NodeId,
        nonce: &[u8],
        index: u32,
        r: Response,
    ) {
        let policy = &self.config.policy;
        let verdict = policy
            .check_overlay(&r.overlay)
            .and_then(|()| policy.check_proof(Role::Responder, nonce, &self.me, peer, &r.proof))
            .and_then(|()| policy.check_admission(peer, self.members_besides(peer)));
        if let Err(refusal) = verdict {
            self.refuse(now, stream, peer, refusal.to_string());
            return;
        }
        let keys = datagram::derive(&datagram::Binding {
            overlay: &self.config.policy.overlay,
            network_key: self.config.policy.network_key.as_deref(),
            initiator: &self.me,
            responder: peer,
            initiator_nonce: nonce,
            responder_nonce: &r.nonce,
        });
        let session = Session {
            local_index: index,
            sealer: Sealer::new(&keys.initiator_to_responder, r.index),
            opener: Opener::new(&keys.responder_to_initiator),
        };
        let proof = self
            .config
            .policy
            .prove(Role::Initiator, &r.nonce, &self.me, peer);
        self.told_of_twins(peer, &r.twins);
        let twins = self
            .peers
            .get(peer)
            .map(|p| p.twins_of(r.boot))
            .unwrap_or_default();
        self.send_frame(stream, peering::encode(&Hello::Confirm { proof, twins }));
        if let Some(Stream {
            kind: Kind::HelloOut { keys, .. },
            ..
        }) = self.streams.get_mut(&stream)
        {
            *keys = Some((session, r.boot, r.datagram));
        }
    }

    /// A frame of a handshake a peer started.
    pub(super) fn hello_in_frame(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        let Some(Stream {
            peer,
            kind: Kind::HelloIn { offer },
            ..
        }) = self.streams.get(&stream)
        else {
            return;
        };
        let peer = peer.clone();
        let answered = offer.is_some();
        match (peering::decode(bytes), answered) {
            (Ok(Hello::Challenge(c)), false) => self.hello_challenge(now, stream, &peer, c),
            (Ok(Hello::Confirm { proof, twins }), true) => {
                self.told_of_twins(&peer, &twins);
                self.hello_confirm(now, stream, &peer, &proof);
            }
            (Ok(Hello::Refused { reason }), _) => self.refused_by(now, stream, &peer, reason),
            (Ok(other), _) => {
                let why = format!("unexpected {} in the handshake", hello_name(&other));
                self.reset(stream);
                self.events.push_back(Event::HandshakeFailed { peer, why });
                self.stats.handshakes_failed += 1;
            }
            (Err(e), _) => {
                self.reset(stream);
                self.stats.handshakes_failed += 1;
                self.events.push_back(Event::HandshakeFailed {
                    peer,
                    why: e.to_string(),
                });
            }
        }
    }

    fn hello_challenge(&mut self, now: Instant, stream: StreamId, peer: &NodeId, c: Challenge) {
        if let Err(refusal) = self.config.policy.check_overlay(&c.overlay) {
            self.refuse(now, stream, peer, refusal.to_string());
            return;
        }
        let nonce = self.nonce();
        let index = self.new_index();
        let proof = self
            .config
            .policy
            .prove(Role::Responder, &c.nonce, &self.me, peer);
        let twins = self
            .peers
            .get(peer)
            .map(|p| p.twins_of(c.boot))
            .unwrap_or_default();
        let response = Hello::Response(Response {
            overlay: self.config.policy.overlay.clone(),
            proof,
            nonce: nonce.clone(),
            index,
            boot: self.boot,
            datagram: self.datagram_str(),
            twins,
        });
        self.send_frame(stream, peering::encode(&response));
        if let Some(Stream {
            kind: Kind::HelloIn { offer },
            ..
        }) = self.streams.get_mut(&stream)
        {
            *offer = Some(Box::new((c, nonce, index)));
        }
    }

    fn hello_confirm(&mut self, now: Instant, stream: StreamId, peer: &NodeId, proof: &[u8]) {
        let Some(Stream {
            kind: Kind::HelloIn { offer },
            ..
        }) = self.streams.get_mut(&stream)
        else {
            return;
        };
        let Some(offer) = offer.take() else {
            return;
        };
        let (challenge, nonce, index) = *offer;
        let policy = &self.config.policy;
        let verdict = policy
            .check_proof(Role::Initiator, &nonce, &self.me, peer, proof)
            .and_then(|()| policy.check_admission(peer, self.members_besides(peer)));
        if let Err(refusal) = verdict {
            self.refuse(now, stream, peer, refusal.to_string());
            return;
        }
        let keys = datagram::derive(&datagram::Binding {
            overlay: &self.config.policy.overlay,
            network_key: self.config.policy.network_key.as_deref(),
            initiator: peer,
            responder: &self.me,
            initiator_nonce: &challenge.nonce,
            responder_nonce: &nonce,
        });
        let session = Session {
            local_index: index,
            sealer: Sealer::new(&keys.responder_to_initiator, challenge.index),
            opener: Opener::new(&keys.initiator_to_responder),
        };
        self.send_frame(stream, peering::encode(&Hello::Done));
        self.finish(stream);
        self.install(now, peer, session, challenge.boot, &challenge.datagram);
    }

    /// A peer saw other live processes announce this node's peer id.
    fn told_of_twins(&mut self, peer: &NodeId, twins: &[u64]) {
        let others: Vec<u64> = twins.iter().copied().filter(|b| *b != self.boot).collect();
        if others.is_empty() {
            return;
        }
        self.events.push_back(Event::DuplicateIdentity {
            peer: self.me.clone(),
            detail: format!(
                "peer {peer} sees other live processes with this node's peer id (boot numbers \
                 {others:x?}, this one's {:x}): two nodes run with one identity; stop one, or \
                 give it a data directory of its own",
                self.boot
            ),
        });
    }

    /// Admits `peer` with fresh keys: messages waiting for them go out, and a
    /// peer SWIM does not know yet is joined.
    pub(super) fn install(
        &mut self,
        now: Instant,
        peer: &NodeId,
        session: Session,
        boot: u64,
        datagram: &str,
    ) {
        self.install_keys(now, peer, session, boot, datagram, true);
    }

    /// [`install`](Self::install); `join` is false for a warm start, where
    /// the tables come separately.
    pub(super) fn install_keys(
        &mut self,
        now: Instant,
        peer: &NodeId,
        session: Session,
        boot: u64,
        datagram: &str,
        join: bool,
    ) {
        let p = self.peers.entry(peer.clone()).or_default();
        if let Some(detail) = p.note_boot(boot) {
            self.events.push_back(Event::DuplicateIdentity {
                peer: peer.clone(),
                detail,
            });
        }
        let mut void = Vec::new();
        if p.boot.is_some_and(|b| b != boot) {
            void = p.drop_sessions();
        }
        p.boot = Some(boot);
        p.heard = Some(now);
        self.indices.insert(session.local_index, peer.clone());
        p.sessions.insert(0, session);
        while p.sessions.len() > SESSIONS_PER_PEER {
            if let Some(old) = p.sessions.pop() {
                void.push(old.local_index);
            }
        }
        if let Some(addr) = resolve_datagram(datagram, p.remote_ip) {
            p.endpoint = Some(addr);
        }
        p.backoff = Duration::ZERO;
        p.retry_at = None;
        // A handshake of ours that crossed this one may still end: it adds
        // a second key pair, which the peer holds too.
        p.handshake = None;
        let pending: Vec<Pending> = p.pending.drain(..).collect();
        for index in void {
            self.indices.remove(&index);
        }
        for Pending {
            plain,
            class,
            probe,
        } in pending
        {
            let p = self.peers.get_mut(peer).expect("inserted above");
            match p.seal(&plain) {
                Some(bytes) => {
                    let to = p.endpoint.expect("seal needs an endpoint");
                    self.stats.sent.entry(class).or_default().add(bytes.len());
                    self.transmits.push_back(Transmit::Datagram {
                        to,
                        bytes,
                        confirm: false,
                    });
                    if let Some(seq) = probe {
                        self.swim.probe_released(now, seq);
                    }
                }
                None => self.stats.drops.no_session += 1,
            }
        }
        self.stats.handshakes += 1;
        self.events
            .push_back(Event::Admitted { peer: peer.clone() });
        if self.compare_wanted.remove(peer) && !self.open_sync(now, peer, false) {
            self.engine.handle_compared(now, peer);
        }
        let known = self.swim.member(peer).is_some_and(|m| m.state.is_active());
        if join && !known && !self.leaving {
            self.swim.join(now, [peer.clone()]);
        }
    }

    /// This node refuses `peer`: says why on the stream, remembers it, and
    /// closes its connections a moment later.
    fn refuse(&mut self, now: Instant, stream: StreamId, peer: &NodeId, reason: String) {
        self.send_frame(
            stream,
            peering::encode(&Hello::Refused {
                reason: truncate(&reason),
            }),
        );
        self.finish(stream);
        self.end_handshake(stream, peer);
        self.remember_refusal(now, peer, reason.clone());
        self.stats.refusals += 1;
        self.events.push_back(Event::Refused {
            peer: peer.clone(),
            reason,
        });
        let at = now + self.config.timing.refusal_linger;
        self.schedule(at, Timer::Disconnect(peer.clone()));
    }

    /// After the allowlist changed: refuses the peers it leaves out that
    /// are admitted, connected or being admitted, and forgets the earlier
    /// refusals for not being on it of those it now names.
    pub(super) fn apply_allowlist(&mut self, now: Instant) -> Vec<NodeId> {
        let not_allowed = peering::Refusal::NotAllowed.to_string();
        let Some(allowed) = self.config.policy.allowlist.clone() else {
            self.refused.retain(|_, r| r.reason != not_allowed);
            return Vec::new();
        };
        self.refused
            .retain(|id, r| r.reason != not_allowed || !allowed.contains(id));
        let out: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !allowed.contains(id) && (p.has_session() || p.connected || p.handshake.is_some())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for peer in &out {
            self.remember_refusal(now, peer, not_allowed.clone());
            self.stats.refusals += 1;
            self.events.push_back(Event::Refused {
                peer: peer.clone(),
                reason: not_allowed.clone(),
            });
            if self.peers.get(peer).is_some_and(|p| p.connected) {
                self.actions
                    .push_back(super::Action::Disconnect { peer: peer.clone() });
            }
        }
        out
    }

    /// `peer` refused this node: neither side can admit the other, so it is
    /// refused here too (not tried again, its news not taken) for the
    /// refusal memory, with its reason.
    fn refused_by(&mut self, now: Instant, stream: StreamId, peer: &NodeId, reason: String) {
        self.reset(stream);
        self.end_handshake(stream, peer);
        let reason = truncate(&reason);
        self.remember_refusal(now, peer, format!("it refused this node: {reason}"));
        self.stats.refused_by += 1;
        self.events.push_back(Event::RefusedBy {
            peer: peer.clone(),
            reason,
        });
    }

    fn remember_refusal(&mut self, now: Instant, peer: &NodeId, reason: String) {
        if self.refused.len() >= MAX_REFUSED
            && let Some(oldest) = self
                .refused
                .iter()
                .min_by_key(|(_, r)| r.until)
                .map(|(id, _)| id.clone())
        {
            self.refused.remove(&oldest);
        }
        self.refused.insert(
            peer.clone(),
            Refused {
                until: now + self.config.timing.refusal_memory,
                reason,
            },
        );
        if let Some(p) = self.peers.get_mut(peer) {
            for index in p.drop_sessions() {
                self.indices.remove(&index);
            }
            p.pending.clear();
        }
    }

    /// A handshake this node started failed: it is tried again after a
    /// growing pause.
    pub(super) fn handshake_failed(
        &mut self,
        now: Instant,
        stream: StreamId,
        peer: &NodeId,
        why: String,
    ) {
        self.reset(stream);
        self.end_handshake(stream, peer);
        let timing = &self.config.timing;
        let (base, max) = (timing.handshake_backoff, timing.max_handshake_backoff);
        let mut retry = None;
        if let Some(p) = self.peers.get_mut(peer) {
            p.backoff = (p.backoff * 2).clamp(base, max);
            let at = now + p.backoff;
            p.retry_at = Some(at);
            retry = Some(at);
        }
        if let Some(at) = retry {
            self.schedule(at, Timer::Retry(peer.clone()));
        }
        self.stats.handshakes_failed += 1;
        self.events.push_back(Event::HandshakeFailed {
            peer: peer.clone(),
            why,
        });
        if self.compare_wanted.remove(peer) {
            self.engine.handle_compared(now, peer);
        }
    }

    fn end_handshake(&mut self, stream: StreamId, peer: &NodeId) {
        self.streams.remove(&stream);
        if let Some(p) = self.peers.get_mut(peer)
            && p.handshake == Some(stream)
        {
            p.handshake = None;
        }
    }
}

fn hello_name(hello: &Hello) -> &'static str {
    match hello {
        Hello::Challenge(_) => "challenge",
        Hello::Response(_) => "response",
        Hello::Confirm { .. } => "confirmation",
        Hello::Done => "done",
        Hello::Refused { .. } => "refusal",
    }
}

pub(super) fn truncate(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > peering::MAX_REASON_LEN {
            break;
        }
        out.push(c);
    }
    out
}

impl Kind {
    /// The traffic class of a stream of this kind.
    pub(super) fn class(&self) -> Class {
        match self {
            Kind::HelloOut { .. } | Kind::HelloIn { .. } => Class::Admission,
            Kind::SwimOut | Kind::SwimIn => Class::SwimBulk,
            Kind::SyncOut { .. } | Kind::SyncIn { .. } => Class::MapSync,
            Kind::Done(class) => *class,
        }
    }
}
