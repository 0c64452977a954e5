//! The libp2p side of a node: the swarm (QUIC and TCP+Noise+Yamux,
//! identify, mDNS, Kademlia, connection limits, raw streams), how its
//! events become inputs of the protocol `Node`, and how the node's dial,
//! disconnect and walk actions are carried out. Connections are opened on
//! demand (admission, anti-entropy, discovery) and closed when idle: SWIM
//! itself runs on the datagram socket, so no connection is kept per member.

use std::time::{Duration, Instant};

use baton_protocol::NodeId;
use baton_protocol::node::Action;
use libp2p::metrics::{Recorder, Registry};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify,
    identity::Keypair, kad, mdns, multiaddr::Protocol as Part, noise, tcp, yamux,
};

use super::Driver;

/// Kademlia, under Baton's own protocol name so that Baton nodes only form a
/// DHT with each other.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/baton/kad/1");
/// Identify's protocol version string.
pub const IDENTIFY_VERSION: &str = "/baton/2";

/// A connection that carries no stream is closed after this: admission
/// and anti-entropy open one when they need it.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(5);

/// The node's network behaviour.
#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Caps on connections.
    pub limits: connection_limits::Behaviour,
    /// Learns peers' listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// LAN discovery; off with `--no-mdns`.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Wide-area discovery.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Raw streams for the node's exchanges.
    pub stream: libp2p_stream::Behaviour,
}

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A transport or behaviour failed to initialise.
    #[error("cannot start libp2p: {0}")]
    Init(String),
}

/// Builds the swarm. `max_members` bounds connections. The transport counts
/// its bytes into `registry` (`libp2p_bandwidth_bytes_total`).
pub fn build(
    key: Keypair,
    mdns: bool,
    max_members: usize,
    registry: &mut Registry,
) -> Result<Swarm<Behaviour>, NetError> {
    let init = |e: &dyn std::fmt::Display| NetError::Init(e.to_string());
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| init(&e))?
        // Connections live only as long as an exchange needs them (the
        // swarm closes idle ones), so QUIC's own keep-alive never has to
        // speak: its period is longer than any connection lives idle.
        .with_quic_config(|mut config| {
            config.max_idle_timeout = 30_000;
            config.keep_alive_interval = Duration::from_secs(60);
            config
        })
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(4))
                .with_max_established(Some(
                    (max_members as u32).saturating_mul(2).saturating_add(64),
                ))
                .with_max_pending_incoming(Some(128));
            // Identify runs once per connection; connections are short, so
            // its periodic re-identification never fires in practice.
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.to_string(), key.public())
                    .with_agent_version(format!("batond/{}", env!("CARGO_PKG_VERSION")))
                    // No cache: a peer's addresses reach dials through
                    // Kademlia, which gets them filtered (`dialable`).
                    .with_cache_size(0),
            );
            let mdns = if mdns {
                // A response to anyone's query resets every node's timer, so
                // a group sends about one query per interval, however large.
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
            // Walks are the node's decision (alone: often; in a group:
            // rarely), not a timer of Kademlia's own. (Kademlia still
            // walks by itself when a new peer enters a routing table of
            // fewer than 20: joining, not steady state.)
            kad_config.set_periodic_bootstrap_interval(None);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            // Every node serves the DHT: providers are few and all equal.
            kad.set_mode(Some(kad::Mode::Server));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify,
                mdns: mdns.into(),
                kad,
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| init(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
        .build();
    Ok(swarm)
}

/// The node id of a libp2p peer.
pub fn node_id(peer: &PeerId) -> NodeId {
    NodeId::new(&peer.to_bytes()).expect("a peer id fits a node id")
}

/// The libp2p peer of a node id, if it is one.
pub fn peer_id(id: &NodeId) -> Option<PeerId> {
    PeerId::from_bytes(id.as_bytes()).ok()
}

/// Whether the multiaddr `addr` is a loopback address (`/ip4/127.…`,
/// `/ip6/::1`, `/dns…/localhost`).
pub fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Part::Ip4(ip)) => ip.is_loopback(),
        Some(Part::Ip6(ip)) => ip.is_loopback(),
        Some(Part::Dns(host) | Part::Dns4(host) | Part::Dns6(host)) => {
            host.eq_ignore_ascii_case("localhost")
        }
        _ => false,
    }
}

/// [`is_loopback`] of text; text that is no multiaddr is not.
pub fn is_loopback_text(addr: &str) -> bool {
    addr.parse::<Multiaddr>().is_ok_and(|a| is_loopback(&a))
}

/// The addresses of one remote peer worth dialling: its loopback ones go
/// when it has any other. A node listening on every interface announces
/// `127.0.0.1` too, which from another host (or network namespace) reaches
/// whatever listens there, another node; and libp2p dials a peer's
/// addresses at once and takes the first connection up, so the loopback
/// one, answering first with the wrong peer id, failed the whole dial
/// (found in CI: two nodes that learnt of each other through a third
/// could not agree keys for 7-20 s, and when the third was cut off, each
/// heard nobody and no backup claimed). On a single-host overlay loopback
/// is all there is, and is kept.
pub fn dialable(addrs: impl IntoIterator<Item = Multiaddr>) -> Vec<Multiaddr> {
    let addrs: Vec<Multiaddr> = addrs.into_iter().collect();
    if addrs.iter().all(is_loopback) {
        return addrs;
    }
    addrs.into_iter().filter(|a| !is_loopback(a)).collect()
}

/// The IP address a multiaddr starts with.
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Part::Ip4(ip) => Some(ip.into()),
        Part::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

impl Driver {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        let libp2p = &self.shared.metrics.libp2p;
        libp2p.record(&event);
        match &event {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => libp2p.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => libp2p.record(e),
            _ => {}
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs_changed(now, Some(address.to_string()), None);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs_changed(now, None, Some(address.to_string()));
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(error = %error, "a listener failed");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                self.shared.metrics.connections().inc();
                self.peers_dirty = true;
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, remote.clone()));
                self.node.handle_connected(
                    now,
                    node_id(&peer_id),
                    ip_of(&remote),
                    endpoint.is_dialer(),
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.shared.metrics.connections().dec();
                self.peers_dirty = true;
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|(id, _)| *id != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if num_established == 0 {
                    self.node.handle_disconnected(now, node_id(&peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                // A bootstrap address that fails is worth a warning every
                // time: a node that stays alone must say why.
                let bootstrap = peer_id.is_none_or(|p| self.bootstrap_peers.contains(&p));
                if bootstrap {
                    tracing::warn!(peer = ?peer_id, %error, "cannot reach a bootstrap address");
                } else {
                    tracing::debug!(peer = ?peer_id, %error, "dial failed");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocol_version == IDENTIFY_VERSION {
                    for addr in dialable(info.listen_addrs) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                } else {
                    tracing::debug!(%peer_id, version = %info.protocol_version, "not a Baton peer of this version");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.node
                        .handle_discovered(now, node_id(&peer), vec![addr.to_string()]);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(now, event),
            _ => {}
        }
    }

    fn on_kad(&mut self, now: Instant, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                let addrs = addresses.iter().map(ToString::to_string).collect();
                self.node.handle_discovered(now, node_id(&peer), addrs);
            }
            kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })),
                ..
            } => {
                for peer in providers {
                    self.node.handle_discovered(now, node_id(&peer), Vec::new());
                }
            }
            _ => {}
        }
    }

    /// Carries out a discovery action of the node.
    pub(super) fn on_discovery_action(&mut self, action: Action) {
        match action {
            Action::Dial { peer, addrs } => {
                let addrs = dialable(addrs.iter().filter_map(|a| a.parse().ok()));
                let result = match peer.as_ref().and_then(peer_id) {
                    Some(peer) => {
                        for addr in &addrs {
                            self.swarm
                                .behaviour_mut()
                                .kad
                                .add_address(&peer, addr.clone());
                        }
                        let opts = DialOpts::peer_id(peer)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .addresses(addrs.clone())
                            .extend_addresses_through_behaviour()
                            .build();
                        self.swarm.dial(opts)
                    }
                    None => match addrs.first() {
                        Some(addr) => self.dial_bootstrap(addr.clone()),
                        None => return,
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(?addrs, error = %e, "dial failed");
                }
            }
            Action::Disconnect { peer } => {
                if let Some(peer) = peer_id(&peer) {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            Action::Walk => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                if kad.bootstrap().is_ok() {
                    kad.get_providers(self.overlay_key.clone());
                }
            }
            Action::Start(_)
            | Action::Warm(_)
            | Action::Stop { .. }
            | Action::Pause { .. }
            | Action::Resume { .. } => {}
        }
    }

    /// Dials a bootstrap address, teaching Kademlia its peer id when the
    /// address names one.
    fn dial_bootstrap(&mut self, addr: Multiaddr) -> Result<(), libp2p::swarm::DialError> {
        if let Some(Part::P2p(peer)) = addr.iter().last() {
            if peer == self.me || self.swarm.is_connected(&peer) {
                return Ok(());
            }
            let bare: Multiaddr = addr.iter().filter(|p| !matches!(p, Part::P2p(_))).collect();
            self.swarm.behaviour_mut().kad.add_address(&peer, bare);
        }
        self.swarm.dial(addr)
    }

    fn listen_addrs_changed(
        &mut self,
        now: Instant,
        added: Option<String>,
        removed: Option<String>,
    ) {
        let addrs = {
            let mut addrs = self.shared.listen_addrs.write().expect("not poisoned");
            if let Some(a) = added
                && !addrs.contains(&a)
            {
                addrs.push(a);
            }
            if let Some(r) = removed {
                addrs.retain(|a| *a != r);
            }
            addrs.clone()
        };
        self.node.set_listen_addrs(now, addrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Vec<Multiaddr> {
        list.iter()
            .map(|a| a.parse().expect("a multiaddr"))
            .collect()
    }

    #[test]
    fn a_remote_peers_loopback_addresses_are_not_dialled_unless_they_are_all_it_has() {
        let announced = parse(&[
            "/ip4/127.0.0.1/udp/7701/quic-v1",
            "/ip4/198.18.2.2/udp/7701/quic-v1",
            "/ip6/::1/udp/7701/quic-v1",
            "/dns4/localhost/tcp/7701",
            "/ip4/198.18.3.2/tcp/7701",
        ]);
        assert_eq!(
            dialable(announced),
            parse(&[
                "/ip4/198.18.2.2/udp/7701/quic-v1",
                "/ip4/198.18.3.2/tcp/7701"
            ])
        );
        // A single-host overlay: loopback is all there is.
        let local = parse(&["/ip4/127.0.0.1/udp/7711/quic-v1", "/ip4/127.0.0.1/tcp/7711"]);
        assert_eq!(dialable(local.clone()), local);
        assert!(dialable(Vec::new()).is_empty());
        assert!(!is_loopback_text("not an address"));
        assert!(is_loopback_text("/ip6/::1/tcp/1"));
    }
}
