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
use crate::data_dir::{DataDir, DataDirError};
use crate::driver::services::Services;
use crate::driver::swarm::{self, node_id};
use crate::driver::{Command, Driver, Parts};
use crate::hooks::Hooks;
use crate::identity::KeySigner;
use crate::metrics::Metrics;
use crate::service::exec;
use crate::service::groups::Groups;
use crate::state::{LocalInfo, Shared};
use crate::{api, identity};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be used (another node holds it).
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The record of `exec` process groups could not be started.
    #[error(
        "cannot record exec process groups in {path}: {source} (the data directory must be \
         writable)"
    )]
    Groups {
        /// The record file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
    #[error("cannot listen on {addr}: {why} (choose another with --listen)")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why, with the operating system's reason.
        why: String,
    },
    /// The service configuration is invalid.
    #[error("[services] {0}")]
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

/// Checks `config` as a start would, without its side effects (nothing is
/// bound, locked or created): the identity key when there is one, the
/// services. Returns a one-line summary.
pub fn check(config: &Config) -> Result<String, StartError> {
    let identity = match identity::check(&config.data_dir)? {
        Some(id) => format!("peer id {id}"),
        None => format!("a new identity in {}", config.data_dir.display()),
    };
    crate::service::Registry::builtin(&config.services, None)?;
    let allow = match &config.allowlist {
        Some(set) => format!("{} allowed peers", set.len()),
        None => "any peer of the overlay".to_string(),
    };
    let tags = if config.tags.is_empty() {
        "no tags".to_string()
    } else {
        let set: Vec<String> = config
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("tags {}", set.join(","))
    };
    Ok(format!(
        "configuration OK: node {:?} ({identity}), overlay {:?}{}, {allow}, api {}, listen {}, \
         mDNS {}, {tags}, {} exec templates, {} hook handlers",
        config.name,
        config.overlay,
        if config.network_key.is_some() {
            " with a network key"
        } else {
            ""
        },
        config.api,
        config
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        if config.mdns { "on" } else { "off" },
        config.services.exec.len(),
        config.hooks.handlers.len(),
    ))
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Reloadable fields that changed and are in effect now.
    pub applied: Vec<&'static str>,
    /// Fields that changed but need a restart.
    pub restart: Vec<&'static str>,
    /// Members the new allowlist refused (peer ids).
    pub refused: Vec<String>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The services could not be built from the new `[services]`.
    #[error("[services] {0}")]
    Services(crate::service::Error),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
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
    /// The configuration it started with (what a reload cannot change) and
    /// the one last applied.
    started_with: Box<Config>,
    applied: Box<Config>,
    hooks: Hooks,
    groups: Arc<Groups>,
    driver: JoinHandle<()>,
    api: JoinHandle<()>,
    api_stop: Option<oneshot::Sender<()>>,
    /// Held while the node runs: no other node starts on its data directory.
    _data_dir: DataDir,
}

impl Node {
    /// Starts a node. Must be called within a tokio runtime.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        let data_dir = DataDir::open(&config.data_dir)?;
        let key = identity::load_or_create(data_dir.path())?;
        crate::data_dir::warn_if_exposed(
            &data_dir.path().join(identity::KEY_FILE),
            crate::data_dir::Secret::IdentityKey,
        );
        if let Some(path) = &config.network_key_file {
            crate::data_dir::warn_if_exposed(path, crate::data_dir::Secret::NetworkKey);
        }
        let peer_id = key.public().to_peer_id();
        // Before anything binds: a held port should be the only complaint.
        for addr in &config.listen {
            probe_listen(addr).map_err(|e| StartError::Listen {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        }
        let bootstrap = crate::config::others(&config.bootstrap, &config.listen, &peer_id);
        if bootstrap.is_empty() && !config.bootstrap.is_empty() {
            tracing::warn!(
                "every bootstrap address is this node itself: it waits for others to dial it, \
                 and after a restart it rejoins only when one does; list other nodes in \
                 bootstrap too (one list can serve every node: each skips itself)"
            );
        } else if bootstrap.len() < config.bootstrap.len() {
            tracing::info!(
                skipped = config.bootstrap.len() - bootstrap.len(),
                "bootstrap addresses of this node itself are skipped"
            );
        }
        let (groups, _) = Groups::reap_and_open(data_dir.path(), exec::STOP_GRACE)
            .await
            .map_err(|source| StartError::Groups {
                path: data_dir.path().join(crate::service::groups::FILE),
                source,
            })?;
        let groups = Arc::new(groups);
        // Client reports that services receive (RTCP), and what instances
        // tell of themselves (restarts, failures), reach the driver here.
        let (client_reports, client_reports_rx) = mpsc::channel(256);
        let (service_events, service_events_rx) = mpsc::channel(256);
        let registry = crate::service::Registry::builtin(&config.services, Some(groups.clone()))?
            .with_reports(client_reports)
            .with_events(service_events);
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
                    why: with_sources(&e),
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
                bootstrap: bootstrap.iter().map(ToString::to_string).collect(),
                timing: proto::Timing::default(),
                clients: config.clients.clone(),
                services: config.services.digest(),
                tags: config.tags.clone(),
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
            bootstrap,
            services: Services::new(registry),
            commands: command_rx,
            session_commands: session_rx,
            client_reports: client_reports_rx,
            service_events: service_events_rx,
        });
        // Subscribed before the driver publishes its first event.
        let hooks = Hooks::start(config.hooks.clone(), shared.clone());
        let driver = tokio::spawn(driver.run());
        let (api_stop, stopped) = oneshot::channel::<()>();
        // A token is enforced wherever the API listens: on loopback too,
        // where every local user and every web page the operator visits
        // can reach it.
        let access = api::Access {
            token: config.api_token.clone(),
            read_token: config.api_read_token.clone(),
            hosts: config.api_hosts.clone(),
            max_sessions_per_caller: config.services.max_sessions_per_caller,
        };
        let api = tokio::spawn({
            let shared = shared.clone();
            async move {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = api::serve(listener, shared, access, shutdown).await {
                    tracing::error!(error = %e, "API server failed");
                }
            }
        });
        tracing::info!(%peer_id, %api_addr, %datagram, name = %config.name, overlay = %config.overlay, "node started");
        if !config.hooks.handlers.is_empty() {
            tracing::info!(
                handlers = config.hooks.handlers.len(),
                "hooks run on events"
            );
        }
        for program in config.hooks.missing_programs() {
            tracing::warn!(%program, "a [hooks] command is not found (not executable, not in PATH)");
        }
        Ok(Node {
            peer_id,
            api_addr,
            shared,
            commands,
            started_with: Box::new(config.clone()),
            applied: Box::new(config),
            hooks,
            groups,
            driver,
            api,
            api_stop: Some(api_stop),
            _data_dir: data_dir,
        })
    }

    /// Applies a reloaded configuration (SIGHUP): what may change at run
    /// time is applied at once (log filter, allowlist, member limit,
    /// services, session policy values, hooks); each changed field that
    /// needs a restart is named in a warning and in the answer. Counted in
    /// `baton_config_reloads_total` and published as a `reload` event of
    /// `/v1/events`.
    pub async fn reload(&mut self, new: Config) -> Result<Reloaded, ReloadError> {
        let services =
            match crate::service::Registry::builtin(&new.services, Some(self.groups.clone())) {
                Ok(s) => s,
                Err(e) => return Err(self.reload_failed(ReloadError::Services(e))),
            };
        let restart = crate::reload::restart_fields(&self.started_with, &new);
        let applied = crate::reload::applied_fields(&self.applied, &new);
        let (reply, refused) = oneshot::channel();
        let command = Command::Reload {
            core: Box::new(crate::reload::update(&new)),
            services,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return Err(self.reload_failed(ReloadError::Stopped));
        }
        let Ok(refused) = refused.await else {
            return Err(self.reload_failed(ReloadError::Stopped));
        };
        self.hooks.reload(new.hooks.clone());
        for program in new.hooks.missing_programs() {
            tracing::warn!(%program, "a [hooks] command is not found (not executable, not in PATH)");
        }
        let log_filter = crate::logging::set_level(new.log_level.as_deref());
        for field in &restart {
            tracing::warn!(
                field,
                "reload: {field} changed, but it takes effect only at a restart; the node runs \
                 on with the old value"
            );
        }
        for peer in &refused {
            tracing::warn!(%peer, "reload: a member no longer on the allowlist is refused");
        }
        tracing::info!(
            applied = %applied.join(","),
            needs_restart = %restart.join(","),
            log_filter = log_filter.as_deref().unwrap_or("-"),
            "configuration reloaded"
        );
        self.shared.metrics.config_reloaded(true);
        // After the hooks took the new configuration: its handlers run on
        // this event.
        self.publish_reload("applied", &applied, &restart, None);
        *self.applied = new;
        Ok(Reloaded {
            applied,
            restart,
            refused,
        })
    }

    /// A reload that could not be applied (the file did not load or
    /// check): logged, counted, published as a `reload` event; the node
    /// runs on with what it had.
    pub fn reload_failed<E: std::fmt::Display>(&self, error: E) -> E {
        tracing::error!(
            error = %error,
            "reload refused: the configuration is invalid; the node runs on with the previous one"
        );
        self.shared.metrics.config_reloaded(false);
        self.publish_reload("refused", &[], &[], Some(error.to_string()));
        error
    }

    /// The `reload` event of `/v1/events` (and of hooks: `reload-applied`,
    /// `reload-refused`).
    fn publish_reload(
        &self,
        state: &str,
        applied: &[&str],
        restart: &[&str],
        reason: Option<String>,
    ) {
        let (at, at_ms) = crate::state::wall_clock();
        self.shared.publish(crate::views::Event {
            kind: "reload".to_string(),
            at,
            at_ms,
            id: self.shared.local.id.clone(),
            name: self.shared.local.name.clone(),
            state: state.to_string(),
            previous: None,
            incarnation: 0,
            reason,
            applied: applied.iter().map(ToString::to_string).collect(),
            restart: restart.iter().map(ToString::to_string).collect(),
        });
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

/// An error and its sources, `: `-separated: libp2p's transport errors
/// keep the operating system's reason in their source, not their message.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.dedup();
    parts.join(": ")
}

/// Binds a listen address's port and lets it go, so that a port in use
/// stops the node with the OS's reason. libp2p alone does not: its TCP
/// listeners set SO_REUSEPORT (so that dials can leave from the listening
/// port), and two nodes then share one port. The probe sets SO_REUSEADDR as
/// libp2p-tcp does (a port in TIME_WAIT after a restart is no clash) but
/// not SO_REUSEPORT, so any listener of the port makes it fail; IPv6
/// sockets are IPv6-only, as in libp2p-tcp and libp2p-quic. Port 0 needs
/// no check.
fn probe_listen(addr: &Multiaddr) -> std::io::Result<()> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => probe(SocketAddr::new(ip, port), true),
        Some(Protocol::Udp(port)) if port != 0 => probe(SocketAddr::new(ip, port), false),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn probe(addr: SocketAddr, tcp: bool) -> std::io::Result<()> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let kind = if tcp {
        SockType::Stream
    } else {
        SockType::Datagram
    };
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if tcp {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    if tcp {
        listen(&fd, Backlog::new(1).map_err(std::io::Error::from)?)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn probe(addr: SocketAddr, tcp: bool) -> std::io::Result<()> {
    if tcp {
        std::net::TcpListener::bind(addr).map(drop)
    } else {
        std::net::UdpSocket::bind(addr).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Flags;

    #[test]
    fn the_config_check_says_whether_mdns_is_on_and_which_tags_are_set() {
        // A data directory that does not exist: the check creates nothing.
        let dir = std::env::temp_dir().join(format!("baton-check-{}", std::process::id()));
        let dir = dir.to_str().unwrap();
        let summary = |args: &[&str]| {
            let base = ["batond", "--name", "a", "--data-dir", dir];
            let flags = Flags::try_parse_from(base.iter().chain(args)).unwrap();
            check(&Config::load(flags).unwrap()).unwrap()
        };
        let plain = summary(&[]);
        assert!(plain.contains(", mDNS on, no tags, "), "{plain}");
        let tagged = summary(&["--mdns=off", "--tag", "zone=b", "--tag", "region=eu"]);
        assert!(
            tagged.contains(", mDNS off, tags region=eu,zone=b, "),
            "{tagged}"
        );
        assert!(!std::path::Path::new(dir).exists());
    }
}
