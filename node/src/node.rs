//! Starting and stopping a node: identity, swarm, driver and API, wired
//! together. `batond` is a thin `main` around [`Node::start`]; tests start
//! several nodes in one process the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use baton_protocol::node as proto;
use baton_protocol::peering::Policy;
use libp2p::{Multiaddr, PeerId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, Profile};
use crate::driver::services::Services;
use crate::driver::swarm::{self, node_id};
use crate::driver::{Command, Driver, Parts};
use crate::identity::KeySigner;
use crate::metrics::Metrics;
use crate::state::{LocalInfo, Shared};
use crate::{api, identity};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// libp2p could not start.
    #[error(transparent)]
    Net(#[from] swarm::NetError),
    /// The datagram socket could not be bound.
    #[error("cannot bind the datagram socket {addr}: {source} (choose another with --swim-listen)")]
    Datagram {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {why}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        why: String,
    },
    /// The service configuration is invalid.
    #[error("services: {0}")]
    Services(#[from] crate::service::Error),
    /// The API address could not be bound.
    #[error("cannot serve the API on {addr}: {source} (choose another with --api)")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Where its API listens (the bound address, also when port 0 was asked).
    pub api_addr: SocketAddr,
    /// Its shared state, as the API sees it.
    pub shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    driver: JoinHandle<()>,
    api: JoinHandle<()>,
    api_stop: Option<oneshot::Sender<()>>,
}

impl Node {
    /// Starts a node. Must be called within a tokio runtime.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        let key = identity::load_or_create(&config.data_dir)?;
        let peer_id = key.public().to_peer_id();
        // Client reports that services receive (RTCP) reach the driver here.
        let (client_reports, client_reports_rx) = mpsc::channel(256);
        let registry =
            crate::service::Registry::builtin(&config.services)?.with_reports(client_reports);
        let mut metrics_registry = prometheus_client::registry::Registry::default();
        let mut swarm = swarm::build(
            key.clone(),
            config.mdns,
            config.max_members,
            &mut metrics_registry,
        )?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| StartError::Listen {
                    addr: addr.clone(),
                    why: e.to_string(),
                })?;
        }
        let udp = crate::driver::datagram::bind(config.swim_listen).map_err(|source| {
            StartError::Datagram {
                addr: config.swim_listen,
                source,
            }
        })?;
        let datagram = udp.local_addr().map_err(|source| StartError::Datagram {
            addr: config.swim_listen,
            source,
        })?;
        let listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| StartError::Api {
                addr: config.api,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| StartError::Api {
            addr: config.api,
            source,
        })?;
        let (session_commands, session_rx) = mpsc::channel(64);
        let started = SystemTime::now();
        let shared = Arc::new(Shared::with_metrics(
            LocalInfo {
                id: peer_id.to_base58(),
                name: config.name.clone(),
                overlay: config.overlay.clone(),
                profile: match config.profile {
                    Profile::Lan => "lan",
                    Profile::Wan => "wan",
                }
                .to_string(),
                capacity: config.capacity,
                version: env!("CARGO_PKG_VERSION").to_string(),
                started,
            },
            session_commands,
            Metrics::new(metrics_registry, started),
        ));
        let policy = Policy {
            overlay: config.overlay.clone(),
            network_key: config.network_key.clone(),
            allowlist: config
                .allowlist
                .as_ref()
                .map(|set| set.iter().map(node_id).collect()),
            max_members: config.max_members,
        };
        let node = proto::Node::new(
            proto::Config {
                name: config.name.clone(),
                policy,
                capacity: config.capacity,
                swim: config.swim.clone(),
                sessions: config.sessions.clone(),
                datagram: Some(datagram),
                bootstrap: config.bootstrap.iter().map(ToString::to_string).collect(),
                timing: proto::Timing::default(),
                clients: config.clients.clone(),
            },
            KeySigner::new(key),
            StdRng::from_os_rng(),
            Instant::now(),
            crate::state::wall_clock().1,
        );
        let (commands, command_rx) = mpsc::channel(8);
        let driver = Driver::new(Parts {
            node,
            swarm,
            udp,
            shared: shared.clone(),
            bootstrap: config.bootstrap.clone(),
            services: Services::new(registry),
            commands: command_rx,
            session_commands: session_rx,
            client_reports: client_reports_rx,
        });
        let driver = tokio::spawn(driver.run());
        let (api_stop, stopped) = oneshot::channel::<()>();
        let token = if api_addr.ip().is_loopback() {
            None
        } else {
            config.api_token.clone()
        };
        let api = tokio::spawn({
            let shared = shared.clone();
            async move {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = api::serve(listener, shared, token, shutdown).await {
                    tracing::error!(error = %e, "API server failed");
                }
            }
        });
        tracing::info!(%peer_id, %api_addr, %datagram, name = %config.name, overlay = %config.overlay, "node started");
        Ok(Node {
            peer_id,
            api_addr,
            shared,
            commands,
            driver,
            api,
            api_stop: Some(api_stop),
        })
    }

    /// The addresses libp2p listens on, waiting up to `timeout` for the first.
    pub async fn listen_addrs(&self, timeout: Duration) -> Vec<Multiaddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let addrs: Vec<Multiaddr> = self
                .shared
                .listen_addrs
                .read()
                .expect("not poisoned")
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            if !addrs.is_empty() || tokio::time::Instant::now() >= deadline {
                return addrs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves the overlay gracefully and stops.
    pub async fn shutdown(mut self) {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), left).await;
        }
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.api).await;
        self.driver.abort();
    }

    /// Stops at once, without telling anyone: what a crash looks like to peers.
    pub fn kill(self) {
        self.driver.abort();
        self.api.abort();
    }

    /// Waits until the node stops by itself (it does not, short of a
    /// shutdown from another task); used by `batond` to run forever.
    pub async fn wait(&mut self) {
        let _ = (&mut self.driver).await;
    }
}
