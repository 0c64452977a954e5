//! The libp2p side of a node: the swarm (QUIC and TCP+Noise+Yamux, identify,
//! mDNS, Kademlia, connection limits, raw streams) and the stream protocols
//! that carry SWIM messages (`/baton/swim/1`) and the admission handshake
//! (`/baton/hello/1`) as length-prefixed frames.

use std::time::Duration;

use baton_protocol::{peering, wire};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, identity::Keypair,
    kad, mdns, noise, tcp, yamux,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// SWIM messages.
pub const SWIM_PROTOCOL: StreamProtocol = StreamProtocol::new("/baton/swim/1");
/// The admission handshake.
pub const HELLO_PROTOCOL: StreamProtocol = StreamProtocol::new(peering::PROTOCOL);
/// Kademlia, under Baton's own protocol name so that Baton nodes only form a
/// DHT with each other.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/baton/kad/1");
/// Identify's protocol version string.
pub const IDENTIFY_VERSION: &str = "/baton/1";

/// Time allowed to open a stream or finish a handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages queued towards one peer before new ones are dropped (SWIM
/// tolerates loss; an unbounded queue towards a slow peer would not).
pub const PEER_QUEUE: usize = 256;

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
    /// Raw streams for SWIM and the handshake.
    pub stream: libp2p_stream::Behaviour,
}

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A transport or behaviour failed to initialise.
    #[error("cannot start libp2p: {0}")]
    Init(String),
}

/// Builds the swarm. `max_members` bounds connections.
pub fn build_swarm(
    key: Keypair,
    mdns: bool,
    max_members: usize,
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
        // Connections of dead members are closed by the driver (see
        // `on_swim_event`), so that a restarted peer is reached over a fresh
        // one; QUIC's own idle timeout only reaps what nothing uses. A long
        // keep-alive keeps that cost off the wire: SWIM traffic already keeps
        // member connections busy.
        .with_quic_config(|mut config| {
            config.max_idle_timeout = 10_000;
            config.keep_alive_interval = Duration::from_secs(4);
            config
        })
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(4))
                .with_max_established(Some(
                    (max_members as u32).saturating_mul(2).saturating_add(64),
                ))
                .with_max_pending_incoming(Some(128));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.to_string(), key.public())
                    .with_agent_version(format!("batond/{}", env!("CARGO_PKG_VERSION")))
                    .with_cache_size(256),
            );
            let mdns = if mdns {
                let config = mdns::Config {
                    query_interval: Duration::from_secs(15),
                    ..mdns::Config::default()
                };
                Some(mdns::tokio::Behaviour::new(config, peer_id)?)
            } else {
                None
            };
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
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
        // Member connections carry a long-lived SWIM stream, which keeps them
        // open; this only reaps connections that carry nothing.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    Ok(swarm)
}

/// Writes one frame: a 4-byte big-endian length, then the bytes.
pub async fn write_frame<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await
}

/// Reads one frame of at most `max` bytes; a longer one is an error before
/// anything is allocated for it. `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: futures::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// A SWIM message received from a peer, already decoded.
#[derive(Debug)]
pub struct Inbound {
    /// The sender, as authenticated by Noise/TLS.
    pub peer: PeerId,
    /// The envelope (message and application payloads), or why it could
    /// not be decoded.
    pub envelope: Result<wire::Envelope, wire::DecodeError>,
    /// Its size on the wire (payload only).
    pub bytes: usize,
}

/// Accepts the inbound streams of `protocol`, running `handle` on each in a
/// task of its own (all of them dropped with the returned task).
fn spawn_acceptor<F, Fut>(
    tasks: &mut JoinSet<()>,
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    handle: F,
) where
    F: Fn(PeerId, libp2p::Stream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(mut incoming) = control.accept(protocol.clone()) else {
        tracing::error!(%protocol, "protocol registered twice");
        return;
    };
    tasks.spawn(async move {
        let mut handlers = JoinSet::new();
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    handlers.spawn(handle(peer, stream));
                }
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
            }
        }
    });
}

/// Accepts SWIM streams and forwards their decoded frames to `tx`.
pub fn spawn_swim_acceptor(
    tasks: &mut JoinSet<()>,
    control: libp2p_stream::Control,
    tx: mpsc::Sender<Inbound>,
) {
    spawn_acceptor(tasks, control, SWIM_PROTOCOL, move |peer, mut stream| {
        let tx = tx.clone();
        async move {
            loop {
                match read_frame(&mut stream, wire::MAX_MESSAGE_BYTES).await {
                    Ok(Some(bytes)) => {
                        let envelope = wire::decode(&bytes);
                        let inbound = Inbound {
                            peer,
                            envelope,
                            bytes: bytes.len(),
                        };
                        if tx.send(inbound).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "SWIM stream closed");
                        return;
                    }
                }
            }
        }
    });
}

/// Starts the sender towards one peer: it keeps one SWIM stream open (which
/// also keeps the connection warm, so probe timing never includes a
/// connection set-up) and writes the frames queued on the returned channel.
pub fn spawn_peer_sender(
    tasks: &mut JoinSet<()>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE);
    tasks.spawn(async move {
        let mut stream = None;
        let mut failures = 0u32;
        loop {
            if stream.is_none() {
                match tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    control.open_stream(peer, SWIM_PROTOCOL),
                )
                .await
                {
                    Ok(Ok(s)) => {
                        stream = Some(s);
                        failures = 0;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "cannot open SWIM stream"),
                    Err(_) => tracing::debug!(%peer, "timed out opening SWIM stream"),
                }
            }
            if stream.is_none() {
                // Frames queued meanwhile are stale: SWIM will retry by itself.
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                let deadline = tokio::time::sleep(backoff);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        frame = rx.recv() => if frame.is_none() { return },
                    }
                }
                continue;
            }
            let Some(frame) = rx.recv().await else { return };
            if let Some(s) = stream.as_mut()
                && let Err(e) = write_frame(s, &frame).await
            {
                tracing::debug!(%peer, error = %e, "SWIM stream broke");
                stream = None;
            }
        }
    });
    tx
}

/// The outcome of an admission handshake this node started.
#[derive(Debug)]
pub struct HelloOutcome {
    /// The peer challenged.
    pub peer: PeerId,
    /// The challenge sent.
    pub challenge: peering::Challenge,
    /// Its answer, or why there was none.
    pub response: Result<peering::Response, String>,
}

/// Challenges `peer` and reports the outcome on `tx`.
pub fn spawn_hello(
    tasks: &mut JoinSet<()>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    challenge: peering::Challenge,
    tx: mpsc::Sender<HelloOutcome>,
) {
    tasks.spawn(async move {
        let exchange = async {
            let mut stream = control
                .open_stream(peer, HELLO_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            let hello = peering::encode(&peering::Hello::Challenge(challenge.clone()));
            write_frame(&mut stream, &hello)
                .await
                .map_err(|e| e.to_string())?;
            let bytes = read_frame(&mut stream, peering::MAX_HELLO_BYTES)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("peer closed the handshake")?;
            match peering::decode(&bytes).map_err(|e| e.to_string())? {
                peering::Hello::Response(r) => Ok(r),
                peering::Hello::Challenge(_) => {
                    Err("peer answered a challenge with a challenge".to_string())
                }
            }
        };
        let response = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err("handshake timed out".to_string()),
        };
        let _ = tx
            .send(HelloOutcome {
                peer,
                challenge,
                response,
            })
            .await;
    });
}

/// Answers the challenges of peers that want to admit this node.
pub fn spawn_hello_responder(
    tasks: &mut JoinSet<()>,
    control: libp2p_stream::Control,
    policy: peering::Policy,
    me: PeerId,
) {
    spawn_acceptor(tasks, control, HELLO_PROTOCOL, move |peer, mut stream| {
        let policy = policy.clone();
        async move {
            let answer = async {
                let bytes = read_frame(&mut stream, peering::MAX_HELLO_BYTES)
                    .await
                    .ok()??;
                let peering::Hello::Challenge(challenge) = peering::decode(&bytes).ok()? else {
                    return None;
                };
                let response = policy.respond(&challenge, &me.to_bytes(), &peer.to_bytes());
                let out = peering::encode(&peering::Hello::Response(response));
                write_frame(&mut stream, &out).await.ok()?;
                let _ = stream.close().await;
                Some(())
            };
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, answer).await;
        }
    });
}

/// Anti-entropy of the session map.
pub const MAP_SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/baton/sync/1");

/// What the map-sync tasks need from the driver, which owns the map.
#[derive(Debug)]
pub enum MapWork {
    /// Deltas a peer sent: apply them.
    Apply {
        /// The peer.
        peer: PeerId,
        /// Its deltas.
        deltas: Vec<baton_protocol::map::Delta>,
    },
    /// A peer's digest: answer with our records in the buckets that differ
    /// and the list of those buckets (which we want theirs of).
    Diff {
        /// The peer.
        peer: PeerId,
        /// Its digest.
        remote: baton_protocol::map::Digest,
        /// The answer (nothing for a peer that is not admitted).
        reply: tokio::sync::oneshot::Sender<(Vec<baton_protocol::map::Delta>, Vec<u8>)>,
    },
    /// Our digest (nothing for a peer that is not admitted).
    Digest {
        /// The peer asking.
        peer: PeerId,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<baton_protocol::map::Digest>,
    },
    /// Our records in these buckets.
    Records {
        /// The buckets.
        buckets: Vec<u8>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Vec<baton_protocol::map::Delta>>,
    },
}

async fn send_sync<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    message: &baton_protocol::map::SyncMessage,
) -> std::io::Result<()> {
    write_frame(w, &message.encode()).await
}

async fn recv_sync<R: futures::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<baton_protocol::map::SyncMessage>> {
    let Some(bytes) = read_frame(r, baton_protocol::map::MAX_SYNC_BYTES).await? else {
        return Ok(None);
    };
    baton_protocol::map::SyncMessage::decode(&bytes)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Asks the driver (which owns the map) and waits for its answer; `None`
/// when the driver is gone or refused (peer not admitted).
async fn ask<T>(
    work: &mpsc::Sender<MapWork>,
    make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> MapWork,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    work.send(make(tx)).await.ok()?;
    rx.await.ok()
}

/// Sends our records of `buckets` in chunks.
async fn send_records<S: futures::AsyncWrite + Unpin>(
    stream: &mut S,
    work: &mpsc::Sender<MapWork>,
    buckets: Vec<u8>,
) -> std::io::Result<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let Some(ours) = ask(work, |reply| MapWork::Records { buckets, reply }).await else {
        return Ok(());
    };
    for message in baton_protocol::map::SyncMessage::records(ours) {
        send_sync(stream, &message).await?;
    }
    Ok(())
}

/// The tail both sides share: apply the records that arrive, and answer a
/// `Want` with ours (which ends the exchange).
async fn apply_records_until_want<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    stream: &mut S,
    work: &mpsc::Sender<MapWork>,
    peer: PeerId,
) -> std::io::Result<()> {
    use baton_protocol::map::SyncMessage;
    while let Some(message) = recv_sync(stream).await? {
        match message {
            SyncMessage::Records(deltas) => {
                let _ = work.send(MapWork::Apply { peer, deltas }).await;
            }
            SyncMessage::Want(buckets) => return send_records(stream, work, buckets).await,
            _ => break,
        }
    }
    Ok(())
}

/// Answers map-sync exchanges started by peers. The exchange (initiator I,
/// responder R): I sends the root of its digest; R answers `Want([])` when
/// its root is the same (done), else its full digest; I sends its records
/// in the buckets that differ, then `Want(those buckets)`; R answers with its
/// records there.
pub fn spawn_map_sync_responder(
    tasks: &mut JoinSet<()>,
    control: libp2p_stream::Control,
    work: mpsc::Sender<MapWork>,
) {
    use baton_protocol::map::SyncMessage;
    spawn_acceptor(
        tasks,
        control,
        MAP_SYNC_PROTOCOL,
        move |peer, mut stream| {
            let work = work.clone();
            async move {
                let exchange = async {
                    let Some(SyncMessage::Root(root)) = recv_sync(&mut stream).await? else {
                        return Ok(());
                    };
                    let Some(ours) = ask(&work, |reply| MapWork::Digest { peer, reply }).await
                    else {
                        return Ok(());
                    };
                    if ours.root() == root {
                        send_sync(&mut stream, &SyncMessage::Want(Vec::new())).await?;
                    } else {
                        send_sync(&mut stream, &SyncMessage::Digest(ours)).await?;
                        apply_records_until_want(&mut stream, &work, peer).await?;
                    }
                    let _ = stream.close().await;
                    Ok::<(), std::io::Error>(())
                };
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), exchange).await {
                    tracing::debug!(%peer, error = %e, "map sync failed");
                }
            }
        },
    );
}

/// Starts one map-sync exchange with `peer` (see
/// [`spawn_map_sync_responder`]), offering the root of `digest` first.
pub fn spawn_map_sync(
    tasks: &mut JoinSet<()>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    digest: baton_protocol::map::Digest,
    work: mpsc::Sender<MapWork>,
) {
    use baton_protocol::map::SyncMessage;
    tasks.spawn(async move {
        let exchange = async {
            let mut stream = control
                .open_stream(peer, MAP_SYNC_PROTOCOL)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            send_sync(&mut stream, &SyncMessage::Root(digest.root())).await?;
            if let Some(SyncMessage::Digest(remote)) = recv_sync(&mut stream).await? {
                // Send what the peer lacks, ask for what we lack, apply it.
                let query = |reply| MapWork::Diff {
                    peer,
                    remote,
                    reply,
                };
                if let Some((ours, want)) = ask(&work, query).await {
                    for message in SyncMessage::records(ours) {
                        send_sync(&mut stream, &message).await?;
                    }
                    send_sync(&mut stream, &SyncMessage::Want(want)).await?;
                    while let Some(SyncMessage::Records(deltas)) = recv_sync(&mut stream).await? {
                        let _ = work.send(MapWork::Apply { peer, deltas }).await;
                    }
                }
            }
            let _ = stream.close().await;
            Ok::<(), std::io::Error>(())
        };
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), exchange).await {
            tracing::debug!(%peer, error = %e, "map sync failed");
        }
    });
}
