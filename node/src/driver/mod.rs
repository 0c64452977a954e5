//! The node's driver: one loop that reads the datagram socket, the libp2p
//! swarm and its streams, the API's commands and the clock, feeds the
//! protocol [`Node`](baton_protocol::node::Node), and executes what it asks
//! (send, open, dial, start or stop a service instance) and shows what it
//! reports. Everything that decides lives in `baton-protocol`; this is the
//! shell around it (quinn's endpoint driver), split by IO concern:
//! [`swarm`] (libp2p), [`streams`] (stream IO), [`services`] (instances),
//! [`publish`] (what the API shows).
//!
//! One probe, end to end: `Node::handle_timeout` queues a sealed ping as a
//! `Transmit::Datagram`, [`Driver::flush`] sends it on the UDP socket; the
//! ack comes back through the `recv_from` branch of [`Driver::run`] into
//! `Node::handle_datagram`, which opens and decodes it and hands it to SWIM;
//! the RTT shows up as an `Event::Member(ProbeRtt)` in [`publish`].

pub mod datagram;
pub(crate) mod publish;
pub mod services;
pub mod streams;
pub mod swarm;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_protocol::node::{self as proto, CommandError as NodeError, Transmit};
use baton_protocol::sessions::Report;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, Swarm, kad};
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};

use crate::identity::KeySigner;
use crate::metrics::SuspicionClock;
use crate::service::{self, SessionSpec};
use crate::state::{Closed, CommandError, SessionCommand, Shared};
use crate::views;
use services::Services;
use streams::{StreamEvent, Streams};
use swarm::{Behaviour, node_id, peer_id};

/// How long a leaving node keeps running so that its farewell goes out.
const LEAVE_GRACE: Duration = Duration::from_millis(300);

/// Datagrams read in one turn of the loop before other work gets a turn.
const DATAGRAM_BURST: usize = 256;
/// How often the node re-reads the wall clock for the shared probe schedule.
const WALL_CLOCK_EVERY: Duration = Duration::from_secs(60);

/// The protocol node as the driver runs it.
pub type ProtoNode = proto::Node<KeySigner, StdRng>;

/// What the rest of the process may ask of the driver.
#[derive(Debug)]
pub enum Command {
    /// Leave the overlay gracefully, then stop; the sender hears when done.
    Leave(oneshot::Sender<()>),
    /// Take a reloaded configuration: the protocol node's part and the
    /// services; the sender hears the peers the new allowlist refused.
    Reload {
        /// For the protocol node.
        core: Box<proto::Reconfigure>,
        /// The services built from the new `[services]`.
        services: service::Registry,
        /// The answer.
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// The driver's state. Built by [`crate::node::Node::start`].
pub struct Driver {
    node: ProtoNode,
    swarm: Swarm<Behaviour>,
    streams: Streams,
    stream_events: mpsc::Receiver<StreamEvent>,
    udp: tokio::net::UdpSocket,
    shared: Arc<Shared>,
    me: PeerId,
    overlay_key: kad::RecordKey,
    /// Peers named by bootstrap addresses: a failed dial to one is a warning.
    bootstrap_peers: HashSet<PeerId>,
    services: Services,
    commands: mpsc::Receiver<Command>,
    session_commands: mpsc::Receiver<SessionCommand>,
    client_reports: mpsc::Receiver<(String, views::Report)>,
    service_events: mpsc::Receiver<(String, service::Event)>,
    /// Sessions whose instance here sent its first packet (the signal that
    /// confirms a handover to this node).
    first_packets: mpsc::UnboundedReceiver<String>,
    first_packets_tx: mpsc::UnboundedSender<String>,
    /// Remote addresses of the open connections, per peer.
    connections: HashMap<PeerId, Vec<(libp2p::swarm::ConnectionId, Multiaddr)>>,
    /// Whether the peer view needs rebuilding.
    peers_dirty: bool,
    /// When the session views were last checked against the map.
    views_swept: Instant,
    /// When this node's own member view was last published.
    me_published: Option<Instant>,
    /// Peers already warned about for sharing a name.
    named_twice: std::collections::BTreeSet<String>,
    /// The peer id of every node met, by the compact id that session
    /// records and protocol messages name nodes by (12 hex digits), so that
    /// views say `name (…peer id tail)` instead (see `publish::name_nodes`).
    node_keys: HashMap<String, String>,
    /// When each member now suspect was first suspected, for the
    /// suspicion-to-death histogram.
    suspected: SuspicionClock,
    /// The session an open request is creating, and why its service failed
    /// to start, if it did.
    opening: Option<(String, Option<String>)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Everything a [`Driver`] is built from.
pub(crate) struct Parts {
    pub node: ProtoNode,
    pub swarm: Swarm<Behaviour>,
    pub udp: tokio::net::UdpSocket,
    pub shared: Arc<Shared>,
    pub bootstrap: Vec<Multiaddr>,
    pub services: Services,
    pub commands: mpsc::Receiver<Command>,
    pub session_commands: mpsc::Receiver<SessionCommand>,
    pub client_reports: mpsc::Receiver<(String, views::Report)>,
    pub service_events: mpsc::Receiver<(String, service::Event)>,
}

impl Driver {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            node,
            swarm,
            udp,
            shared,
            bootstrap,
            services,
            commands,
            session_commands,
            client_reports,
            service_events,
        } = parts;
        let me = *swarm.local_peer_id();
        let (events_tx, stream_events) = mpsc::channel(1024);
        let (first_packets_tx, first_packets) = mpsc::unbounded_channel();
        let streams = Streams::new(swarm.behaviour().stream.new_control(), events_tx);
        let overlay_key =
            kad::RecordKey::new(&format!("/baton/overlay/{}", node.config().policy.overlay));
        let bootstrap_peers = bootstrap
            .iter()
            .filter_map(|a| match a.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(p)) => Some(p),
                _ => None,
            })
            .collect();
        Driver {
            node,
            swarm,
            streams,
            stream_events,
            udp,
            shared,
            me,
            overlay_key,
            bootstrap_peers,
            services,
            commands,
            session_commands,
            client_reports,
            service_events,
            first_packets,
            first_packets_tx,
            connections: HashMap::new(),
            peers_dirty: true,
            views_swept: Instant::now(),
            me_published: None,
            named_twice: std::collections::BTreeSet::new(),
            node_keys: HashMap::new(),
            suspected: SuspicionClock::default(),
            opening: None,
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
        self.node.handle_timeout(Instant::now());
        self.flush();
        let mut buf = vec![0u8; 2048];
        let mut leaving: Option<(tokio::time::Instant, oneshot::Sender<()>)> = None;
        // The shared probe schedule numbers its periods on the wall clock:
        // follow its corrections (an NTP step) without waiting for a restart.
        let mut wall_clock = tokio::time::interval(WALL_CLOCK_EVERY);
        wall_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let wake = self
                .node
                .poll_timeout()
                .map_or(far, tokio::time::Instant::from_std);
            let leave_at = leaving.as_ref().map_or(far, |(at, _)| *at);
            tokio::select! {
                biased;
                command = self.commands.recv(), if leaving.is_none() => match command {
                    Some(Command::Leave(done)) => {
                        tracing::info!("leaving the overlay");
                        self.node.leave(Instant::now());
                        leaving = Some((tokio::time::Instant::now() + LEAVE_GRACE, done));
                    }
                    Some(Command::Reload { core, services, reply }) => {
                        self.services.adopt(services);
                        let refused = self.node.handle_reconfigure(Instant::now(), *core);
                        self.peers_dirty = true;
                        let _ = reply.send(refused.iter().map(publish::show).collect());
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(leave_at), if leaving.is_some() => break,
                received = self.udp.recv_from(&mut buf) => {
                    // Drain the backlog before the timers: a node that was
                    // starved must see the acks waiting for it before it
                    // concludes that its probes failed.
                    if let Ok((n, from)) = received {
                        self.node.handle_datagram(Instant::now(), from, &buf[..n]);
                    }
                    for _ in 0..DATAGRAM_BURST {
                        match self.udp.try_recv_from(&mut buf) {
                            Ok((n, from)) => self.node.handle_datagram(Instant::now(), from, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                Some(event) = self.stream_events.recv() => self.on_stream_event(event),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tokio::time::sleep_until(wake) => self.node.handle_timeout(Instant::now()),
                Some(command) = self.session_commands.recv() => self.on_session_command(command),
                Some((id, report)) = self.client_reports.recv() => {
                    let _ = self.node.report(Instant::now(), &id, report_of(&report));
                }
                Some((id, event)) = self.service_events.recv() => self.on_service_event(&id, event),
                Some(id) = self.first_packets.recv() => self.node.handle_service_started(Instant::now(), &id),
                () = self.streams.reap() => {}
                _ = wall_clock.tick() => {
                    self.node.handle_wall_clock(Instant::now(), crate::state::wall_clock().1);
                }
            }
            self.flush();
        }
        self.flush();
        if let Some((_, done)) = leaving {
            let _ = done.send(());
        }
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        let now = Instant::now();
        match event {
            StreamEvent::Incoming {
                peer,
                protocol,
                stream,
            } => match self
                .node
                .handle_stream_accepted(now, node_id(&peer), protocol)
            {
                Some((id, first, rest)) => self.streams.accept(id, stream, first, rest),
                // Dropped unread: a stranger gets nothing but a reset.
                None => drop(stream),
            },
            StreamEvent::Frame { id, bytes } => self.node.handle_frame(now, id, &bytes),
            StreamEvent::Closed { id, error } => {
                self.streams.closed(id);
                self.node.handle_stream_closed(now, id, error);
            }
        }
    }

    /// Executes what the node asked for and shows what it reported.
    fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.node.poll_transmit() {
                moved = true;
                self.transmit(t);
            }
            while let Some(action) = self.node.poll_action() {
                moved = true;
                self.act(action);
            }
            while let Some(event) = self.node.poll_event() {
                moved = true;
                self.on_node_event(event);
            }
            if !moved {
                break;
            }
        }
        self.publish_peers();
        self.publish_metrics();
        self.publish_me();
        self.sweep_views();
    }

    fn transmit(&mut self, t: Transmit) {
        match t {
            Transmit::Datagram { to, bytes, confirm } => {
                if let Err(e) = datagram::send(&self.udp, &bytes, to, confirm) {
                    // SWIM tolerates loss: a full socket buffer is loss.
                    tracing::trace!(%to, error = %e, "datagram not sent");
                    self.shared.metrics.send_failed();
                }
            }
            Transmit::Open {
                stream,
                peer,
                protocol,
                addrs,
                max_frame,
            } => {
                let Some(peer) = peer_id(&peer) else {
                    self.node.handle_stream_closed(
                        Instant::now(),
                        stream,
                        Some("not a peer id".into()),
                    );
                    return;
                };
                for addr in swarm::dialable(addrs.iter().filter_map(|a| a.parse().ok())) {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
                self.streams.open(stream, peer, protocol, max_frame);
            }
            Transmit::Frame { stream, bytes } => self.streams.frame(stream, bytes),
            Transmit::Finish { stream } => self.streams.finish(stream),
            Transmit::Reset { stream } => self.streams.reset(stream),
        }
    }

    fn act(&mut self, action: proto::Action) {
        match action {
            proto::Action::Start(record) => {
                // The claim: the protocol node has just made this node the
                // session's primary (open, takeover, or the end of a transfer).
                let claimed = Instant::now();
                match self.services.start(&record) {
                    Ok(Some(first)) => {
                        let histogram = self.shared.metrics.first_packet(&record.reason).clone();
                        // Ends with the instance at the latest: a stopped
                        // instance drops its end, and nothing is observed.
                        // A warm instance that slipped a packet out before
                        // its pause took hold has no first packet to time.
                        let started = self.first_packets_tx.clone();
                        let id = record.id.clone();
                        tokio::spawn(async move {
                            if let Ok(sent) = first.await {
                                if let Some(took) = sent.checked_duration_since(claimed) {
                                    histogram.observe(took.as_secs_f64());
                                }
                                // The client hears this node now: a handover
                                // to it may be confirmed.
                                let _ = started.send(id);
                            }
                        });
                    }
                    // Nothing tells when it sends (an exec child): the
                    // handover is confirmed at the start, as it goes.
                    Ok(None) => self.node.handle_service_started(Instant::now(), &record.id),
                    Err(e) => {
                        tracing::error!(session = %record.id, error = %e, "cannot start session");
                        self.shared.metrics.service_failed();
                        match &mut self.opening {
                            // Opened by this very request: the caller hears why.
                            Some((id, failed)) if *id == record.id => {
                                *failed = Some(e.to_string());
                            }
                            // The next cluster tries: the node hands it over.
                            _ => self.node.handle_service_failed(
                                Instant::now(),
                                &record.id,
                                &e.to_string(),
                            ),
                        }
                    }
                }
                self.publish_session(&record.id);
            }
            proto::Action::Stop { id, .. } => {
                self.services.stop(&id);
                self.publish_session(&id);
            }
            proto::Action::Warm(record) => {
                if let Err(e) = self.services.warm(&record) {
                    tracing::warn!(session = %record.id, error = %e, "cannot stand by warm");
                    self.shared.metrics.service_failed();
                }
                self.publish_session(&record.id);
            }
            proto::Action::Pause { id } => self.services.pause(&id, true),
            proto::Action::Resume { id } => self.services.pause(&id, false),
            other => self.on_discovery_action(other),
        }
    }

    fn on_session_command(&mut self, command: SessionCommand) {
        let now = Instant::now();
        match command {
            SessionCommand::Open {
                service,
                client,
                params,
                reply,
            } => {
                // The service checks the request first: its parameters, its
                // template, its sources.
                let spec = SessionSpec {
                    id: "0".repeat(32),
                    service: service.clone(),
                    params: params.clone(),
                    client: client.clone(),
                    started_ms: 0,
                };
                let checked = self
                    .services
                    .registry()
                    .validate(&spec)
                    .map_err(|e| CommandError {
                        status: if e.is_request_error() { 400 } else { 500 },
                        message: e.to_string(),
                    });
                let result = checked.and_then(|()| {
                    self.node
                        .open(now, service, client, params)
                        .map_err(command_error)
                });
                let answer = result.and_then(|record| {
                    self.opening = Some((record.id.clone(), None));
                    self.flush();
                    // A service that failed to start here answers 5xx and
                    // leaves no active record behind.
                    if let Some((id, Some(why))) = self.opening.take() {
                        // Shown as a failure in /v1/events, then closed.
                        let epoch = self.node.engine().map().get(&id).map_or(0, |r| r.epoch);
                        let reason = format!("the service did not start: {why}");
                        self.publish_session_event(&id, "failed", epoch, &reason);
                        let _ = self.node.close(Instant::now(), &id);
                        self.flush();
                        return Err(CommandError {
                            status: 500,
                            message: format!("the session's service did not start: {why}"),
                        });
                    }
                    self.publish_session(&record.id);
                    self.shared
                        .sessions
                        .get(&record.id)
                        .map(|v| v.clone())
                        .ok_or_else(|| CommandError {
                            status: 500,
                            message: "session vanished right after opening".into(),
                        })
                });
                let _ = reply.send(answer);
            }
            SessionCommand::Close { id, reply } => {
                let answer = self
                    .node
                    .close(now, &id)
                    .map_err(command_error)
                    .and_then(|closed| {
                        self.flush();
                        self.publish_session(&id);
                        if let proto::Closed::Forwarded { primary } = &closed {
                            let to = self.forwarded(primary);
                            tracing::info!(
                                session = %id, primary = %to.forwarded_to,
                                name = %to.forwarded_to_name,
                                "close sent on to the session's primary"
                            );
                            return Ok(Closed::Forwarded(to));
                        }
                        self.shared
                            .sessions
                            .get(&id)
                            .map(|v| Closed::Here(Box::new(v.clone())))
                            .ok_or_else(|| CommandError {
                                status: 404,
                                message: format!("no session {id:?} on this node"),
                            })
                    });
                let _ = reply.send(answer);
            }
            SessionCommand::Report { id, report, reply } => {
                let answer = self
                    .node
                    .report(now, &id, report_of(&report))
                    .map(|primary| primary.map(|p| self.forwarded(&p)))
                    .map_err(command_error);
                let _ = reply.send(answer);
            }
            SessionCommand::Ping { reply } => {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

fn report_of(report: &views::Report) -> Report {
    let ms = |v: f64| Duration::from_secs_f64((v / 1e3).clamp(0.0, 3600.0));
    Report {
        loss: report.loss.clamp(0.0, 1.0),
        jitter: ms(report.jitter_ms),
        rtt: ms(report.rtt_ms),
        packets: report.packets,
    }
}

fn command_error(e: NodeError) -> CommandError {
    let status = match &e {
        NodeError::Invalid(_) => 400,
        NodeError::NotFound(_) => 404,
        NodeError::NotPrimary { .. } | NodeError::Conflict(_) => 409,
        NodeError::Unavailable(_) => 503,
    };
    let message = match &e {
        NodeError::NotPrimary { id, primary } => format!(
            "this node is not the primary of {id}: ask its primary {}",
            publish::show(primary)
        ),
        other => other.to_string(),
    };
    CommandError { status, message }
}
