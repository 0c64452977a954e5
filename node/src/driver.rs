//! The node's driver: one loop that feeds the SWIM state machine with what
//! the network and the clock bring, executes what it asks for, and keeps the
//! shared state of the API current. Everything that decides lives in
//! `baton-protocol`; this is the shell around it (quinn's endpoint driver).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_protocol::meta::NodeMeta;
use baton_protocol::peering::{self, Policy};
use baton_protocol::swim::{Event, Swim};
use baton_protocol::{NodeId, wire};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns, multiaddr::Protocol};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::net::{self, Behaviour, BehaviourEvent, HelloOutcome, Inbound};
use crate::state::{ApiEvent, MemberView, PeerView, Shared, wall_clock};

/// How long a refused peer is left alone before discovery may propose it again.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);
/// How often discovery runs its periodic work (bootstrap redials, DHT walks).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// How long a leaving node keeps running so that its farewell goes out.
const LEAVE_GRACE: Duration = Duration::from_millis(300);

/// What the rest of the process may ask of the driver.
#[derive(Debug)]
pub enum Command {
    /// Leave the overlay gracefully, then stop; the sender hears when done.
    Leave(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
enum Admission {
    Pending,
    Admitted,
    Refused { reason: String, at: Instant },
}

/// The driver's state. Built by [`crate::node::Node::start`].
pub struct Driver {
    swarm: Swarm<Behaviour>,
    swim: Swim<StdRng>,
    control: libp2p_stream::Control,
    tasks: JoinSet<()>,
    senders: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    inbound_rx: mpsc::Receiver<Inbound>,
    hello_tx: mpsc::Sender<HelloOutcome>,
    hello_rx: mpsc::Receiver<HelloOutcome>,
    commands: mpsc::Receiver<Command>,
    policy: Policy,
    admission: HashMap<PeerId, Admission>,
    shared: Arc<Shared>,
    me: PeerId,
    meta: NodeMeta,
    overlay_key: kad::RecordKey,
    bootstrap: Vec<Multiaddr>,
    rng: StdRng,
    /// Remote addresses of the open connections, per peer.
    connections: HashMap<PeerId, Vec<(libp2p::swarm::ConnectionId, Multiaddr)>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Everything needed to build a [`Driver`] besides the swarm.
pub(crate) struct Parts {
    pub swarm: Swarm<Behaviour>,
    pub swim_config: baton_protocol::swim::Config,
    pub policy: Policy,
    pub shared: Arc<Shared>,
    pub meta: NodeMeta,
    pub bootstrap: Vec<Multiaddr>,
    pub commands: mpsc::Receiver<Command>,
}

impl Driver {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            swarm,
            swim_config,
            policy,
            shared,
            meta,
            bootstrap,
            commands,
        } = parts;
        let me = *swarm.local_peer_id();
        let node_id = NodeId::new(&me.to_bytes()).expect("a peer id fits a node id");
        let mut rng = StdRng::from_os_rng();
        let swim_rng = StdRng::from_rng(&mut rng);
        let swim = Swim::new(
            node_id,
            meta.encode(),
            swim_config,
            swim_rng,
            Instant::now(),
        );
        let control = swarm.behaviour().stream.new_control();
        let mut tasks = JoinSet::new();
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (hello_tx, hello_rx) = mpsc::channel(64);
        net::spawn_swim_acceptor(&mut tasks, control.clone(), inbound_tx);
        net::spawn_hello_responder(&mut tasks, control.clone(), policy.clone(), me);
        let overlay_key = kad::RecordKey::new(&format!("/baton/overlay/{}", policy.overlay));
        Driver {
            swarm,
            swim,
            control,
            tasks,
            senders: HashMap::new(),
            inbound_rx,
            hello_tx,
            hello_rx,
            commands,
            policy,
            admission: HashMap::new(),
            shared,
            me,
            meta,
            overlay_key,
            bootstrap,
            rng,
            connections: HashMap::new(),
        }
    }

    /// Runs until a [`Command::Leave`] completes or every handle is dropped.
    pub async fn run(mut self) {
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(self.overlay_key.clone())
        {
            tracing::warn!(error = %e, "cannot announce the overlay in the DHT");
        }
        self.dial_bootstrap();
        let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaving: Option<(tokio::time::Instant, oneshot::Sender<()>)> = None;
        loop {
            let wake = self
                .swim
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let leave_at = leaving
                .as_ref()
                .map(|(at, _)| *at)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                command = self.commands.recv(), if leaving.is_none() => match command {
                    Some(Command::Leave(done)) => {
                        tracing::info!("leaving the overlay");
                        self.swim.leave(Instant::now());
                        leaving = Some((tokio::time::Instant::now() + LEAVE_GRACE, done));
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(leave_at), if leaving.is_some() => break,
                Some(inbound) = self.inbound_rx.recv() => {
                    // Drain the backlog before the timers: a node that was
                    // starved must see the acks waiting for it before it
                    // concludes that its probes failed.
                    self.on_inbound(inbound);
                    while let Ok(more) = self.inbound_rx.try_recv() {
                        self.on_inbound(more);
                    }
                }
                Some(outcome) = self.hello_rx.recv() => self.on_hello(outcome),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tokio::time::sleep_until(wake) => self.swim.handle_timeout(Instant::now()),
                _ = discovery.tick() => self.discover(),
                _ = housekeeping.tick() => self.housekeeping(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
            self.flush();
        }
        self.flush();
        if let Some((_, done)) = leaving {
            let _ = done.send(());
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let Inbound {
            peer,
            envelope,
            bytes,
        } = inbound;
        crate::state::Metrics::add(&self.shared.metrics.bytes_in, bytes as u64);
        if !matches!(self.admission.get(&peer), Some(Admission::Admitted)) {
            crate::state::Metrics::add(&self.shared.metrics.dropped, 1);
            return;
        }
        let mut message = match envelope {
            Ok(envelope) => envelope.message,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "undecodable SWIM message");
                crate::state::Metrics::add(&self.shared.metrics.dropped, 1);
                return;
            }
        };
        // News about refused peers is not taken from anyone.
        if let Some(updates) = message.updates_mut() {
            updates.retain(|u| !self.is_refused_id(u.id()));
        }
        let Ok(from) = NodeId::new(&peer.to_bytes()) else {
            return;
        };
        self.swim.handle_message(Instant::now(), from, message);
    }

    fn is_refused_id(&self, id: &NodeId) -> bool {
        PeerId::from_bytes(id.as_bytes())
            .map(|p| matches!(self.admission.get(&p), Some(Admission::Refused { .. })))
            .unwrap_or(true)
    }

    fn on_hello(&mut self, outcome: HelloOutcome) {
        let HelloOutcome {
            peer,
            challenge,
            response,
        } = outcome;
        let members = self.swim.num_active();
        let verdict = response.map_err(peering::Refusal::Malformed).and_then(|r| {
            self.policy.admit(
                &self.me.to_bytes(),
                &peer.to_bytes(),
                &challenge,
                &r,
                members,
            )
        });
        match verdict {
            Ok(()) => {
                tracing::info!(%peer, "peer admitted");
                self.admission.insert(peer, Admission::Admitted);
                self.update_peer_view(peer);
                let id = NodeId::new(&peer.to_bytes()).expect("a peer id fits a node id");
                let known = self.swim.member(&id).is_some_and(|m| m.state.is_active());
                if !known {
                    self.swim.join(Instant::now(), [id]);
                }
            }
            Err(refusal) => {
                // A peer that cannot be reached for the handshake is not
                // refused, only not admitted yet.
                if let peering::Refusal::Malformed(why) = &refusal {
                    tracing::debug!(%peer, %why, "handshake failed");
                    self.admission.remove(&peer);
                    return;
                }
                tracing::warn!(%peer, reason = %refusal, "peer refused");
                crate::state::Metrics::add(&self.shared.metrics.refused, 1);
                self.admission.insert(
                    peer,
                    Admission::Refused {
                        reason: refusal.to_string(),
                        at: Instant::now(),
                    },
                );
                self.senders.remove(&peer);
                self.shared.members.remove(&peer.to_base58());
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                // The disconnect waits a moment (see `housekeeping`), so that
                // the peer's own handshake completes and it learns why too.
                self.update_peer_view(peer);
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let addr = address.to_string();
                {
                    let mut addrs = self.shared.listen_addrs.write().expect("not poisoned");
                    if !addrs.contains(&addr) {
                        addrs.push(addr.clone());
                    }
                }
                if !self.meta.addrs.contains(&addr) {
                    self.meta.addrs.push(addr);
                    self.swim.set_meta(Instant::now(), self.meta.encode());
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let addr = address.to_string();
                self.shared
                    .listen_addrs
                    .write()
                    .expect("not poisoned")
                    .retain(|a| *a != addr);
                self.meta.addrs.retain(|a| *a != addr);
                self.swim.set_meta(Instant::now(), self.meta.encode());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, endpoint.get_remote_address().clone()));
                match self.admission.get(&peer_id) {
                    Some(Admission::Refused { at, .. }) if at.elapsed() < REFUSAL_MEMORY => {
                        let _ = self.swarm.disconnect_peer_id(peer_id);
                    }
                    Some(Admission::Admitted | Admission::Pending) => {}
                    _ => self.start_hello(peer_id),
                }
                self.update_peer_view(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|(id, _)| *id != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if num_established == 0 {
                    // A peer that comes back proves itself again.
                    if !matches!(
                        self.admission.get(&peer_id),
                        Some(Admission::Refused { .. })
                    ) {
                        self.admission.remove(&peer_id);
                    }
                }
                self.update_peer_view(peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version == net::IDENTIFY_VERSION
                && !self.refused_recently(&peer_id) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.propose(peer, Some(addr));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            _ => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, .. } => self.propose(peer, None),
            kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })),
                ..
            } => {
                for peer in providers {
                    self.propose(peer, None);
                }
            }
            _ => {}
        }
    }

    /// Discovery proposes a peer: dial it unless it is connected, us, or was
    /// refused recently. The policy decides after the handshake.
    fn propose(&mut self, peer: PeerId, addr: Option<Multiaddr>) {
        if peer == self.me || self.refused_recently(&peer) || self.swarm.is_connected(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing);
        let opts = match addr {
            Some(addr) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
                opts.addresses(vec![addr])
                    .extend_addresses_through_behaviour()
                    .build()
            }
            None => opts.build(),
        };
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial failed");
        }
    }

    fn refused_recently(&self, peer: &PeerId) -> bool {
        matches!(self.admission.get(peer), Some(Admission::Refused { at, .. }) if at.elapsed() < REFUSAL_MEMORY)
    }

    fn start_hello(&mut self, peer: PeerId) {
        self.admission.insert(peer, Admission::Pending);
        let mut nonce = vec![0u8; 32];
        self.rng.fill(&mut nonce[..]);
        let challenge = self.policy.challenge(nonce);
        net::spawn_hello(
            &mut self.tasks,
            self.control.clone(),
            peer,
            challenge,
            self.hello_tx.clone(),
        );
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                if peer == self.me || self.swarm.is_connected(&peer) {
                    continue;
                }
                let bare: Multiaddr = addr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.swarm.behaviour_mut().kad.add_address(&peer, bare);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    /// Disconnects peers refused at least a second ago.
    fn housekeeping(&mut self) {
        let refused: Vec<PeerId> = self
            .admission
            .iter()
            .filter(|(_, a)| matches!(a, Admission::Refused { at, .. } if at.elapsed() >= Duration::from_secs(1)))
            .map(|(p, _)| *p)
            .filter(|p| self.swarm.is_connected(p))
            .collect();
        for peer in refused {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn discover(&mut self) {
        let admitted = self
            .admission
            .values()
            .any(|a| matches!(a, Admission::Admitted));
        if !admitted {
            self.dial_bootstrap();
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.bootstrap().is_ok() {
            kad.get_providers(self.overlay_key.clone());
        }
        // Forget refusals after a while: the peer may have been reconfigured.
        self.admission.retain(
            |_, a| !matches!(a, Admission::Refused { at, .. } if at.elapsed() >= REFUSAL_MEMORY),
        );
    }

    /// Executes what the state machine asked for and publishes what changed.
    fn flush(&mut self) {
        while let Some(transmit) = self.swim.poll_transmit() {
            let Ok(peer) = PeerId::from_bytes(transmit.to.as_bytes()) else {
                crate::state::Metrics::add(&self.shared.metrics.dropped, 1);
                continue;
            };
            if self.refused_recently(&peer) {
                continue;
            }
            let bytes = wire::encode_with_app(&transmit.message, &transmit.app);
            let len = bytes.len() as u64;
            let sender = self.senders.entry(peer).or_insert_with(|| {
                net::spawn_peer_sender(&mut self.tasks, self.control.clone(), peer)
            });
            if sender.try_send(bytes).is_ok() {
                crate::state::Metrics::add(&self.shared.metrics.bytes_out, len);
                crate::state::Metrics::add(&self.shared.metrics.messages_out, 1);
            } else {
                crate::state::Metrics::add(&self.shared.metrics.dropped, 1);
            }
        }
        while let Some(event) = self.swim.poll_event() {
            self.on_swim_event(event);
        }
        let stats = self.swim.stats();
        let m = &self.shared.metrics;
        use std::sync::atomic::Ordering::Relaxed;
        m.probes.store(stats.probes, Relaxed);
        m.failed_probes.store(stats.failed_probes, Relaxed);
        m.suspicions.store(stats.suspicions, Relaxed);
        m.refutations.store(stats.refutations, Relaxed);
        m.declared_dead.store(stats.declared_dead, Relaxed);
        m.messages_in.store(stats.messages_in, Relaxed);
        m.incarnation.store(self.swim.incarnation(), Relaxed);
        m.local_health.store(self.swim.local_health(), Relaxed);
    }

    fn on_swim_event(&mut self, event: Event) {
        let peer_of = |id: &NodeId| PeerId::from_bytes(id.as_bytes()).ok();
        match event {
            Event::MemberState {
                id,
                state,
                previous,
                incarnation,
            } => {
                let Some(peer) = peer_of(&id) else { return };
                if self.refused_recently(&peer) {
                    return;
                }
                let key = peer.to_base58();
                let (at, at_ms) = wall_clock();
                let name = {
                    let mut view =
                        self.shared
                            .members
                            .entry(key.clone())
                            .or_insert_with(|| MemberView {
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
                            });
                    view.state = state.as_str().to_string();
                    view.incarnation = incarnation;
                    view.since = at.clone();
                    view.name.clone()
                };
                tracing::info!(
                    peer = %peer, name = %name, state = state.as_str(),
                    previous = previous.map(|p| p.as_str()).unwrap_or("-"), incarnation,
                    "member state"
                );
                if !state.is_active() {
                    self.senders.remove(&peer);
                }
                self.shared.publish(ApiEvent {
                    kind: "member".to_string(),
                    at,
                    at_ms,
                    id: key,
                    name,
                    state: state.as_str().to_string(),
                    previous: previous.map(|p| p.as_str().to_string()),
                    incarnation,
                });
            }
            Event::MemberMeta { id, meta } => {
                let Some(peer) = peer_of(&id) else { return };
                let meta = match NodeMeta::decode(&meta) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "unreadable member metadata");
                        return;
                    }
                };
                for addr in &meta.addrs {
                    if let Ok(addr) = addr.parse::<Multiaddr>() {
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                }
                if let Some(mut view) = self.shared.members.get_mut(&peer.to_base58()) {
                    view.name = meta.name;
                    view.addrs = meta.addrs;
                    view.capacity = meta.capacity;
                    view.load = meta.load;
                }
            }
            Event::ProbeRtt { id, .. } => {
                let Some(peer) = peer_of(&id) else { return };
                let Some(member) = self.swim.member(&id) else {
                    return;
                };
                let rtt_ms = member.srtt.map(|d| d.as_secs_f64() * 1e3);
                let distance_ms = member
                    .coord
                    .as_ref()
                    .map(|c| self.swim.coordinate().distance_to(c).as_secs_f64() * 1e3);
                if let Some(mut view) = self.shared.members.get_mut(&peer.to_base58()) {
                    view.rtt_ms = rtt_ms;
                    view.distance_ms = distance_ms;
                }
            }
            Event::Refuted { incarnation } => {
                let (at, at_ms) = wall_clock();
                tracing::warn!(incarnation, "refuted a suspicion about this node");
                self.shared.publish(ApiEvent {
                    kind: "refuted".to_string(),
                    at,
                    at_ms,
                    id: self.me.to_base58(),
                    name: self.shared.local.name.clone(),
                    state: "alive".to_string(),
                    previous: None,
                    incarnation,
                });
            }
            Event::Removed { id } => {
                if let Some(peer) = peer_of(&id) {
                    self.shared.members.remove(&peer.to_base58());
                    self.senders.remove(&peer);
                }
            }
        }
    }

    fn update_peer_view(&mut self, peer: PeerId) {
        let key = peer.to_base58();
        let connected = self.swarm.is_connected(&peer);
        let (admission, reason) = match self.admission.get(&peer) {
            Some(Admission::Admitted) => ("admitted", None),
            Some(Admission::Pending) => ("pending", None),
            Some(Admission::Refused { reason, .. }) => ("refused", Some(reason.clone())),
            None => ("none", None),
        };
        if !connected && admission != "refused" {
            self.shared.peers.remove(&key);
            return;
        }
        self.shared.peers.insert(
            key.clone(),
            PeerView {
                id: key,
                addrs: self
                    .connections
                    .get(&peer)
                    .map(|list| list.iter().map(|(_, a)| a.to_string()).collect())
                    .unwrap_or_default(),
                connections: self.connections.get(&peer).map_or(0, |l| l.len() as u32),
                admission: admission.to_string(),
                reason,
            },
        );
    }
}
