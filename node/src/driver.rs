//! The node's driver: one loop that feeds the SWIM state machine with what
//! the network and the clock bring, executes what it asks for, and keeps the
//! shared state of the API current. Everything that decides lives in
//! `baton-protocol`; this is the shell around it (quinn's endpoint driver).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_protocol::meta::NodeMeta;
use baton_protocol::peering::{self, Policy};
use baton_protocol::policy::location_key;
use baton_protocol::session::{Record, SessionState, Signer};
use baton_protocol::sessions::{self, Action, Engine, OpenRequest, Report};
use baton_protocol::swim::{Event, State, Swim};
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
use crate::service::{Instance, Registry, SessionSpec};
use crate::state::{
    ApiEvent, CommandError, MemberView, MoveView, PeerView, SessionCommand, SessionView, Shared,
    wall_clock,
};

/// How long a refused peer is left alone before discovery may propose it again.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);
/// How often discovery runs its periodic work (bootstrap redials, DHT walks).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// How long a leaving node keeps running so that its farewell goes out.
const LEAVE_GRACE: Duration = Duration::from_millis(300);

/// How often this node runs anti-entropy of the session map with a peer.
const MAP_SYNC_INTERVAL: Duration = Duration::from_secs(3);

/// Signs session records with the node's libp2p ed25519 key.
pub struct KeySigner {
    id: NodeId,
    key: libp2p::identity::Keypair,
}

impl KeySigner {
    /// A signer for `key`.
    pub fn new(key: libp2p::identity::Keypair) -> Self {
        let id =
            NodeId::new(&key.public().to_peer_id().to_bytes()).expect("a peer id fits a node id");
        KeySigner { id, key }
    }
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner").field("id", &self.id).finish()
    }
}

impl Signer for KeySigner {
    fn id(&self) -> &NodeId {
        &self.id
    }
    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        // ed25519 signing cannot fail; other key types are never built here.
        self.key.sign(bytes).unwrap_or_default()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
    engine: Engine<KeySigner>,
    registry: Registry,
    instances: HashMap<String, Box<dyn Instance>>,
    session_commands: mpsc::Receiver<SessionCommand>,
    client_reports: mpsc::Receiver<(String, crate::state::ReportBody)>,
    map_sync_tx: mpsc::Sender<net::MapWork>,
    map_sync_rx: mpsc::Receiver<net::MapWork>,
    /// The load last announced in the node's metadata.
    announced_load: u32,
    /// Discovery ticks so far.
    discover_rounds: u32,
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
    pub key: libp2p::identity::Keypair,
    pub registry: Registry,
    pub capacity: u32,
    pub sessions: sessions::Config,
    pub client_reports: mpsc::Receiver<(String, crate::state::ReportBody)>,
    pub session_commands: mpsc::Receiver<SessionCommand>,
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
            key,
            registry,
            capacity,
            sessions: sessions_config,
            client_reports,
            session_commands,
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
        let engine = Engine::new(
            KeySigner::new(key),
            capacity,
            sessions_config,
            Instant::now(),
        );
        let (map_sync_tx, map_sync_rx) = mpsc::channel(64);
        net::spawn_map_sync_responder(&mut tasks, control.clone(), map_sync_tx.clone());
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
            engine,
            registry,
            instances: HashMap::new(),
            session_commands,
            client_reports,
            map_sync_tx,
            map_sync_rx,
            announced_load: 0,
            discover_rounds: 0,
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
        let mut map_sync_tick = tokio::time::interval(MAP_SYNC_INTERVAL);
        map_sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaving: Option<(tokio::time::Instant, oneshot::Sender<()>)> = None;
        loop {
            let next = match (self.swim.poll_timeout(), self.engine.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = next
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
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    self.swim.handle_timeout(now);
                    self.engine.handle_timeout(now, unix_ms());
                }
                Some(command) = self.session_commands.recv() => self.on_session_command(command),
                Some((id, report)) = self.client_reports.recv() => self.on_client_report(&id, report),
                Some(work) = self.map_sync_rx.recv() => self.on_map_work(work),
                _ = map_sync_tick.tick() => self.start_map_sync(),
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
            Ok(envelope) => {
                let (now, now_ms) = (Instant::now(), unix_ms());
                for payload in &envelope.app {
                    // The engine spreads on what was news (Action::Broadcast).
                    self.engine.handle_app(now, now_ms, payload);
                }
                envelope.message
            }
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
        // The peer itself does not count against the limit when it is
        // already a member (it reconnected).
        let id = NodeId::new(&peer.to_bytes()).expect("a peer id fits a node id");
        let already = self.swim.member(&id).is_some_and(|m| m.state.is_active());
        let members = self.swim.num_active() - usize::from(already);
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
        // A handshake that failed (timeout, stream error) is retried while
        // the connection stays up.
        let unproven: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| !self.admission.contains_key(p))
            .copied()
            .collect();
        for peer in unproven {
            self.start_hello(peer);
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
        // DHT walks find providers that SWIM cannot know of yet (another
        // partition, a new LAN); once in a group, once a minute is plenty.
        self.discover_rounds = self.discover_rounds.wrapping_add(1);
        if !admitted || self.discover_rounds % 6 == 1 {
            let kad = &mut self.swarm.behaviour_mut().kad;
            if kad.bootstrap().is_ok() {
                kad.get_providers(self.overlay_key.clone());
            }
        }
        // Forget refusals after a while: the peer may have been reconfigured.
        self.admission.retain(
            |_, a| !matches!(a, Admission::Refused { at, .. } if at.elapsed() >= REFUSAL_MEMORY),
        );
    }

    /// Executes what the state machine asked for and publishes what changed.
    fn flush(&mut self) {
        // Events feed the engine, the engine's broadcasts become SWIM
        // transmits: drain in that order so nothing waits for the next wake.
        while let Some(event) = self.swim.poll_event() {
            self.on_swim_event(event);
        }
        self.drain_engine();
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
                    // Whatever connection remains is stale: a restarted peer
                    // must be reached over a new one.
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                self.feed_engine(&id, true);
                self.shared.publish(ApiEvent {
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
                self.feed_engine(&id, true);
                if let Some(mut view) = self.shared.members.get_mut(&peer.to_base58()) {
                    view.name = meta.name;
                    view.addrs = meta.addrs;
                    view.capacity = meta.capacity;
                    view.load = meta.load;
                }
            }
            Event::ProbeRtt { id, .. } => {
                self.feed_engine(&id, false);
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
                    reason: None,
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

    /// Feeds SWIM's view of a member to the session engine.
    /// `with_meta` is false on the hot path (every probe RTT), where only the
    /// distance changed.
    fn feed_engine(&mut self, id: &NodeId, with_meta: bool) {
        let Some(member) = self.swim.member(id) else {
            return;
        };
        let state = member.state;
        let meta = with_meta
            .then(|| NodeMeta::decode(&member.meta).ok())
            .flatten();
        let distance = member
            .coord
            .as_ref()
            .map(|c| self.swim.coordinate().distance_to(c));
        self.engine
            .handle_member(Instant::now(), id.clone(), state, meta.as_ref(), distance);
    }

    /// Executes the session engine's actions.
    fn drain_engine(&mut self) {
        let mut changed: Vec<String> = Vec::new();
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Broadcast { key, payload } => {
                    if let Ok(sessions::AppMessage::Delta(d)) =
                        sessions::AppMessage::decode(&payload)
                    {
                        changed.push(d.id().to_string());
                    }
                    self.swim.broadcast_app(key, payload);
                }
                Action::Start(record) => {
                    changed.push(record.id.clone());
                    self.start_instance(&record);
                    self.publish_session_event(&record.id, "started", record.epoch, &record.reason);
                }
                Action::Stop { id, reason } => {
                    changed.push(id.clone());
                    tracing::info!(session = %id, %reason, "stopping session");
                    let epoch = self.engine.map().get(&id).map_or(0, |r| r.epoch);
                    self.publish_session_event(&id, "stopped", epoch, &reason);
                    if let Some(instance) = self.instances.remove(&id) {
                        tokio::spawn(instance.stop());
                    }
                }
            }
        }
        changed.sort();
        changed.dedup();
        for id in changed {
            self.publish_session(&id);
        }
        let load = self.engine.load();
        if load != self.announced_load {
            self.announced_load = load;
            self.meta.load = load;
            self.swim.set_meta(Instant::now(), self.meta.encode());
        }
    }

    fn publish_session_event(&self, id: &str, state: &str, epoch: u64, reason: &str) {
        let (at, at_ms) = wall_clock();
        self.shared.publish(ApiEvent {
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

    fn start_instance(&mut self, record: &Record) {
        let spec = SessionSpec {
            id: record.id.clone(),
            service: record.service.clone(),
            params: record.params.clone(),
            client: record.client.clone(),
            started_ms: record.started_ms,
        };
        match self.registry.start(spec) {
            Ok(instance) => {
                tracing::info!(session = %record.id, epoch = record.epoch, reason = %record.reason, "hosting session");
                if let Some(old) = self.instances.insert(record.id.clone(), instance) {
                    tokio::spawn(old.stop());
                }
            }
            Err(e) => tracing::error!(session = %record.id, error = %e, "cannot start session"),
        }
    }

    /// Mirrors one session of the map into the API's view.
    fn publish_session(&mut self, id: &str) {
        let Some(record) = self.engine.map().get(id) else {
            self.shared.sessions.remove(id);
            return;
        };
        let peer_str = |n: &NodeId| {
            PeerId::from_bytes(n.as_bytes())
                .map(|p| p.to_base58())
                .unwrap_or_else(|_| n.to_string())
        };
        let primary = peer_str(&record.primary);
        let primary_name = if record.primary == *self.swim.local_id() {
            self.shared.local.name.clone()
        } else {
            self.shared
                .members
                .get(&primary)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        let view = SessionView {
            id: record.id.clone(),
            service: record.service.clone(),
            primary,
            primary_name,
            backups: record.backups.iter().map(peer_str).collect(),
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
            history: self
                .engine
                .history(id)
                .iter()
                .map(|m| MoveView {
                    epoch: m.epoch,
                    primary: peer_str(&m.primary),
                    reason: m.reason.clone(),
                    at_ms: m.at_ms,
                })
                .collect(),
            hosted_here: self.instances.contains_key(id),
        };
        self.shared.sessions.insert(id.to_string(), view);
    }

    fn on_session_command(&mut self, command: SessionCommand) {
        let err = |status: u16, message: String| CommandError { status, message };
        match command {
            SessionCommand::Open {
                service,
                client,
                params,
                reply,
            } => {
                let result = (|| {
                    let addr: std::net::SocketAddr = client.parse().map_err(|_| {
                        err(
                            400,
                            format!("client {client:?} is not an address such as 127.0.0.1:5004"),
                        )
                    })?;
                    let id = {
                        let mut bytes = [0u8; 16];
                        self.rng.fill(&mut bytes);
                        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    };
                    let spec = SessionSpec {
                        id: id.clone(),
                        service: service.clone(),
                        params: params.clone(),
                        client: client.clone(),
                        started_ms: unix_ms(),
                    };
                    self.registry.validate(&spec).map_err(|e| {
                        err(if e.is_request_error() { 400 } else { 500 }, e.to_string())
                    })?;
                    let request = OpenRequest {
                        id: id.clone(),
                        service,
                        params,
                        client,
                        location: location_key(&addr),
                    };
                    self.engine
                        .open(Instant::now(), unix_ms(), request)
                        .map_err(|e| err(503, e.to_string()))?;
                    Ok(id)
                })();
                let answer = result.map(|id| {
                    self.drain_engine();
                    self.publish_session(&id);
                    self.shared.sessions.get(&id).map(|v| v.clone())
                });
                let _ = reply.send(match answer {
                    Ok(Some(view)) => Ok(view),
                    Ok(None) => Err(err(500, "session vanished right after opening".into())),
                    Err(e) => Err(e),
                });
            }
            SessionCommand::Close { id, reply } => {
                let result = match self.engine.map().get(&id) {
                    None => Err(err(404, format!("no session {id:?} on this node"))),
                    Some(r) if r.primary != *self.swim.local_id() => {
                        let primary = PeerId::from_bytes(r.primary.as_bytes())
                            .map(|p| p.to_base58())
                            .unwrap_or_default();
                        Err(err(
                            409,
                            format!(
                                "this node is not the primary of {id}: ask its primary {primary}"
                            ),
                        ))
                    }
                    Some(_) => self
                        .engine
                        .close(Instant::now(), unix_ms(), &id)
                        .map(|_| ())
                        .map_err(|e| err(409, e.to_string())),
                };
                let answer = result.map(|()| {
                    self.drain_engine();
                    self.publish_session(&id);
                    self.shared.sessions.get(&id).map(|v| v.clone())
                });
                let _ = reply.send(match answer {
                    Ok(Some(view)) => Ok(view),
                    Ok(None) => Err(err(404, format!("no session {id:?} on this node"))),
                    Err(e) => Err(e),
                });
            }
            SessionCommand::Report { id, report, reply } => {
                let result = if self.engine.map().get(&id).is_none() {
                    Err(err(404, format!("no session {id:?} on this node")))
                } else {
                    self.on_client_report(&id, report);
                    Ok(())
                };
                let _ = reply.send(result);
            }
        }
    }

    /// A client's report, from the API or from RTCP.
    fn on_client_report(&mut self, id: &str, report: crate::state::ReportBody) {
        let ms = |v: f64| Duration::from_secs_f64((v / 1e3).clamp(0.0, 3600.0));
        self.engine.report(
            Instant::now(),
            id,
            Report {
                loss: report.loss.clamp(0.0, 1.0),
                jitter: ms(report.jitter_ms),
                rtt: ms(report.rtt_ms),
            },
        );
    }

    fn on_map_work(&mut self, work: net::MapWork) {
        let admitted =
            |d: &Self, p: &PeerId| matches!(d.admission.get(p), Some(Admission::Admitted));
        match work {
            net::MapWork::Apply { peer, deltas } => {
                if !admitted(self, &peer) {
                    return;
                }
                let (now, now_ms) = (Instant::now(), unix_ms());
                for delta in deltas {
                    let _ = self.engine.handle_delta(now, now_ms, delta);
                }
            }
            net::MapWork::Diff {
                peer,
                remote,
                reply,
            } => {
                if !admitted(self, &peer) {
                    return;
                }
                let map = self.engine.map();
                let buckets = map.diff(&remote);
                let _ = reply.send((map.records_in(&buckets), buckets));
            }
            net::MapWork::Digest { peer, reply } => {
                if admitted(self, &peer) {
                    let _ = reply.send(self.engine.map().digest());
                }
            }
            net::MapWork::Records { buckets, reply } => {
                let _ = reply.send(self.engine.map().records_in(&buckets));
            }
        }
    }

    /// Anti-entropy of the session map with one random live member.
    fn start_map_sync(&mut self) {
        let alive: Vec<PeerId> = self
            .swim
            .members()
            .filter(|m| m.state == State::Alive)
            .filter_map(|m| PeerId::from_bytes(m.id.as_bytes()).ok())
            .filter(|p| matches!(self.admission.get(p), Some(Admission::Admitted)))
            .collect();
        if alive.is_empty() {
            return;
        }
        let peer = alive[self.rng.random_range(0..alive.len())];
        let digest = self.engine.map().digest();
        net::spawn_map_sync(
            &mut self.tasks,
            self.control.clone(),
            peer,
            digest,
            self.map_sync_tx.clone(),
        );
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
