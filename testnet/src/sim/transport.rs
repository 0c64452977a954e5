//! The simulated libp2p side of the nodes: connections made on demand and
//! closed when idle, and reliable, ordered streams over them, run the way
//! the node's driver runs them (`node/src/driver/{streams,swarm}.rs`).
//!
//! - A connection comes up one RTT after a node dials, or after the first
//!   stream to a peer it is not connected to; both nodes are told
//!   (`handle_connected`, the dialler as outbound). It closes when a
//!   partition or a crash cuts it (both survivors are told
//!   `handle_disconnected`) and after [`IDLE_CONNECTION`] without streams.
//! - A stream's items (its opening, frames, finish, reset) travel in order
//!   with the link's latency and jitter, and are never lost: a cut or a
//!   crash breaks the stream instead, and both ends still running are told
//!   `handle_stream_closed` with an error.
//! - Each end reads through its caps, as the driver does: the opener
//!   through `max_frame`, the acceptor through the `first` and `rest` its
//!   node chose before reading; a longer frame breaks the stream.
//! - A node that was told its end is closed writes nothing more on it (the
//!   driver drops its writer).
//!
//! Deliveries come out of [`Transport::take`] with their time; the
//! simulator routes each to its node (or to a paused node's backlog) and
//! resolves it there with [`Transport::resolve`], so that the ends' state
//! changes when the node actually reads.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use baton_protocol::node::{Protocol, StreamId};
use rand::rngs::SmallRng;

use super::network::Network;

/// Time allowed to open a stream, dialling included (the driver's
/// `OPEN_TIMEOUT`): a dial into a cut fails after it.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection without streams closes after this (the swarm's
/// `IDLE_CONNECTION`).
pub const IDLE_CONNECTION: Duration = Duration::from_secs(5);

/// Which end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The node that opened it.
    Opener = 0,
    /// The node it was opened to.
    Acceptor = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Opener => Side::Acceptor,
            Side::Acceptor => Side::Opener,
        }
    }
}

/// Something that reaches a node, at the time [`Transport::take`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A stream arrives at its acceptor.
    Accept {
        /// The stream.
        pipe: u64,
    },
    /// A frame arrives at one end.
    Frame {
        /// The stream.
        pipe: u64,
        /// The end it reaches.
        to: Side,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The other end finished (`None`) or the stream broke.
    Closed {
        /// The stream.
        pipe: u64,
        /// The end told.
        to: Side,
        /// Why it broke.
        error: Option<String>,
    },
    /// A stream the node asked for could not be opened.
    OpenFailed {
        /// The node.
        node: u32,
        /// Which of its processes asked.
        life: u32,
        /// Its name for the stream.
        stream: StreamId,
        /// Why.
        error: String,
    },
    /// A connection is up.
    Connected {
        /// The connection.
        conn: u64,
        /// The node told.
        node: u32,
        /// The peer.
        peer: u32,
        /// Whether `node` dialled.
        outbound: bool,
    },
    /// A connection is gone.
    Disconnected {
        /// The node told.
        node: u32,
        /// The peer.
        peer: u32,
    },
}

impl Delivery {
    /// The stream the delivery is about, if any.
    pub fn pipe(&self) -> Option<u64> {
        match self {
            Delivery::Accept { pipe }
            | Delivery::Frame { pipe, .. }
            | Delivery::Closed { pipe, .. } => Some(*pipe),
            _ => None,
        }
    }
}

/// A delivery as its node must handle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Call `handle_stream_accepted` with the opener and protocol, then
    /// [`Transport::accepted`] with the answer.
    Accept {
        /// The opener.
        from: u32,
        /// The protocol.
        protocol: Protocol,
    },
    /// Call `handle_frame`.
    Frame {
        /// The node's stream.
        stream: StreamId,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// Call `handle_stream_closed`.
    Closed {
        /// The node's stream.
        stream: StreamId,
        /// Why, when it broke.
        error: Option<String>,
    },
    /// Call `handle_connected`.
    Connected {
        /// The peer.
        peer: u32,
        /// Whether the node dialled.
        outbound: bool,
    },
    /// Call `handle_disconnected`.
    Disconnected {
        /// The peer.
        peer: u32,
    },
    /// Nothing to do: the stream or connection is gone, or the node's end
    /// was closed already.
    Nothing,
}

/// What happened to streams and connections, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Streams opened by nodes.
    pub opened: u64,
    /// Streams the acceptor refused (its node returned `None`).
    pub refused: u64,
    /// Streams that could not be opened (peer down or cut off).
    pub open_failed: u64,
    /// Streams broken by a cut, a crash or a closed connection.
    pub broken: u64,
    /// Streams broken because a frame exceeded its reader's cap.
    pub over_cap: u64,
    /// Frames delivered to a node.
    pub frames: u64,
    /// Connections made.
    pub connections: u64,
    /// Connections closed for being idle.
    pub idle_closed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndState {
    /// Not accepted yet (the acceptor's end only).
    Pending,
    Open(StreamId),
    Done,
}

#[derive(Debug)]
struct Pipe {
    nodes: [u32; 2],
    protocol: Protocol,
    conn: (u32, u32),
    ends: [EndState; 2],
    /// `(first frame's cap, later frames' cap, frames read)` per reader.
    caps: [(usize, usize, u64); 2],
    /// When the last item towards each end arrives: items never overtake.
    last_at: [u64; 2],
    /// A node that finished or reset its end writes nothing more.
    writing: [bool; 2],
    broken: bool,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    up_at: u64,
    /// Whether each side (low, high) was told it is up.
    announced: [bool; 2],
    pipes: BTreeSet<u64>,
    idle_since: Option<u64>,
}

/// Every connection and stream of the simulation.
#[derive(Debug, Default)]
pub struct Transport {
    pipes: BTreeMap<u64, Pipe>,
    /// Open ends by (node, the node's stream id).
    ends: BTreeMap<(u32, StreamId), (u64, Side)>,
    conns: BTreeMap<(u32, u32), Conn>,
    next_id: u64,
    out: Vec<(u64, Delivery)>,
    counters: StreamCounters,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn key(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

impl Transport {
    /// No connections, no streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts so far.
    pub fn counters(&self) -> StreamCounters {
        self.counters
    }

    /// Streams not yet closed at both ends.
    pub fn open_streams(&self) -> usize {
        self.pipes.len()
    }

    /// Connections up or coming up.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The node a delivery is for, `None` if its stream is gone.
    pub fn node_of(&self, d: &Delivery) -> Option<u32> {
        match d {
            Delivery::Accept { pipe } => self
                .pipes
                .get(pipe)
                .map(|p| p.nodes[Side::Acceptor as usize]),
            Delivery::Frame { pipe, to, .. } | Delivery::Closed { pipe, to, .. } => {
                self.pipes.get(pipe).map(|p| p.nodes[*to as usize])
            }
            Delivery::OpenFailed { node, .. }
            | Delivery::Connected { node, .. }
            | Delivery::Disconnected { node, .. } => Some(*node),
        }
    }

    /// Deliveries produced since the last call, with their times (ns).
    pub fn take(&mut self) -> std::vec::Drain<'_, (u64, Delivery)> {
        self.out.drain(..)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn delay(net: &Network, rng: &mut SmallRng, from: u32, to: u32) -> u64 {
        ns(net.delay(from as usize, to as usize, rng))
    }

    /// Makes sure a connection between `a` (dialling) and `b` is up or
    /// coming up; returns when it is up.
    fn connect(&mut self, now: u64, net: &Network, rng: &mut SmallRng, a: u32, b: u32) -> u64 {
        if let Some(c) = self.conns.get(&key(a, b)) {
            return c.up_at;
        }
        let up_at = now + Self::delay(net, rng, a, b) + Self::delay(net, rng, b, a);
        let id = self.id();
        self.conns.insert(
            key(a, b),
            Conn {
                id,
                up_at,
                announced: [false; 2],
                pipes: BTreeSet::new(),
                idle_since: Some(up_at),
            },
        );
        self.counters.connections += 1;
        for (node, peer) in [(a, b), (b, a)] {
            self.out.push((
                up_at,
                Delivery::Connected {
                    conn: id,
                    node,
                    peer,
                    outbound: node == a,
                },
            ));
        }
        up_at
    }

    /// Node `a` dials `b` (an `Action::Dial`): a connection comes up unless
    /// `b` is down or cut off, which the node is not told (it gives up on
    /// its own).
    pub fn dial(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        a: u32,
        b: u32,
        b_running: bool,
    ) {
        if a != b && b_running && !net.is_cut_between(a as usize, b as usize) {
            self.connect(now, net, rng, a, b);
        }
    }

    /// Node `node` (its process `life`) opens `stream` of `protocol` to
    /// `peer`, reading through `max_frame`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        (node, life, stream): (u32, u32, StreamId),
        peer: Option<u32>,
        peer_running: bool,
        protocol: Protocol,
        max_frame: usize,
    ) {
        self.counters.opened += 1;
        let failed = |error: &str, at: u64| {
            (
                at,
                Delivery::OpenFailed {
                    node,
                    life,
                    stream,
                    error: format!("cannot open {}: {error}", protocol.name()),
                },
            )
        };
        let Some(peer) = peer.filter(|&p| p != node) else {
            self.counters.open_failed += 1;
            self.out.push(failed("unknown peer", now));
            return;
        };
        if !peer_running {
            // The host answers for a dead process: refused within an RTT.
            let rtt = Self::delay(net, rng, node, peer) + Self::delay(net, rng, peer, node);
            self.counters.open_failed += 1;
            self.out.push(failed("connection refused", now + rtt));
            return;
        }
        if net.is_cut_between(node as usize, peer as usize) {
            self.counters.open_failed += 1;
            self.out.push(failed("timed out", now + ns(OPEN_TIMEOUT)));
            return;
        }
        let up_at = self.connect(now, net, rng, node, peer);
        let pipe = self.id();
        let conn = self
            .conns
            .get_mut(&key(node, peer))
            .expect("connected above");
        conn.pipes.insert(pipe);
        conn.idle_since = None;
        let at = up_at.max(now) + Self::delay(net, rng, node, peer);
        self.pipes.insert(
            pipe,
            Pipe {
                nodes: [node, peer],
                protocol,
                conn: key(node, peer),
                ends: [EndState::Open(stream), EndState::Pending],
                caps: [(max_frame, max_frame, 0), (0, 0, 0)],
                last_at: [now, at],
                writing: [true, true],
                broken: false,
            },
        );
        self.ends.insert((node, stream), (pipe, Side::Opener));
        self.out.push((at, Delivery::Accept { pipe }));
    }

    /// Sends an item from one end to the other, after what it sent before.
    fn send(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        pipe: u64,
        from: Side,
        item: Delivery,
    ) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let to = from.other();
        let delay = Self::delay(net, rng, p.nodes[from as usize], p.nodes[to as usize]);
        let at = (now + delay).max(p.last_at[to as usize]);
        p.last_at[to as usize] = at;
        self.out.push((at, item));
    }

    fn writable(&self, node: u32, stream: StreamId) -> Option<(u64, Side)> {
        let &(pipe, side) = self.ends.get(&(node, stream))?;
        let p = self.pipes.get(&pipe)?;
        (p.writing[side as usize] && !p.broken).then_some((pipe, side))
    }

    /// A node writes a frame on its stream.
    pub fn frame(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        node: u32,
        stream: StreamId,
        bytes: Vec<u8>,
    ) {
        if let Some((pipe, side)) = self.writable(node, stream) {
            let to = side.other();
            self.send(
                now,
                net,
                rng,
                pipe,
                side,
                Delivery::Frame { pipe, to, bytes },
            );
        }
    }

    /// A node finishes its writing half: the other end reads to the end.
    pub fn finish(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        node: u32,
        stream: StreamId,
    ) {
        if let Some((pipe, side)) = self.writable(node, stream) {
            if let Some(p) = self.pipes.get_mut(&pipe) {
                p.writing[side as usize] = false;
            }
            let to = side.other();
            let item = Delivery::Closed {
                pipe,
                to,
                error: None,
            };
            self.send(now, net, rng, pipe, side, item);
        }
    }

    /// A node aborts its stream: it forgets it, the other end is told.
    pub fn reset(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        node: u32,
        stream: StreamId,
    ) {
        let Some((pipe, side)) = self.ends.get(&(node, stream)).copied() else {
            return;
        };
        let broken = self.pipes.get(&pipe).is_none_or(|p| p.broken);
        if !broken {
            let to = side.other();
            let item = Delivery::Closed {
                pipe,
                to,
                error: Some("reset by the peer".into()),
            };
            self.send(now, net, rng, pipe, side, item);
        }
        self.end_done(pipe, side);
    }

    /// Marks one end done; a stream done at both ends is forgotten.
    fn end_done(&mut self, pipe: u64, side: Side) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if let EndState::Open(stream) = p.ends[side as usize] {
            self.ends.remove(&(p.nodes[side as usize], stream));
        }
        p.ends[side as usize] = EndState::Done;
        p.writing[side as usize] = false;
        if p.ends.iter().all(|e| *e == EndState::Done) {
            let conn = p.conn;
            self.pipes.remove(&pipe);
            self.release(conn, pipe, None);
        }
    }

    /// A stream leaves its connection, which may become idle.
    fn release(&mut self, conn: (u32, u32), pipe: u64, now: Option<u64>) {
        if let Some(c) = self.conns.get_mut(&conn)
            && c.pipes.remove(&pipe)
            && c.pipes.is_empty()
        {
            c.idle_since = Some(now.unwrap_or(c.up_at).max(c.up_at));
        }
    }

    /// Breaks a stream: each end still open is told, with `error`.
    fn break_pipe(&mut self, now: u64, pipe: u64, error: &str) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.broken {
            return;
        }
        p.broken = true;
        self.counters.broken += 1;
        for side in [Side::Opener, Side::Acceptor] {
            if p.ends[side as usize] != EndState::Done {
                self.out.push((
                    now,
                    Delivery::Closed {
                        pipe,
                        to: side,
                        error: Some(error.to_owned()),
                    },
                ));
            }
        }
    }

    /// Resolves a delivery for its node, which reads it now (a running
    /// node at once, a paused one when it resumes). `Accept` is answered
    /// with [`accepted`](Self::accepted).
    pub fn resolve(&mut self, now: u64, delivery: Delivery) -> Resolved {
        match delivery {
            Delivery::Accept { pipe } => match self.pipes.get(&pipe) {
                Some(p) if p.ends[Side::Acceptor as usize] == EndState::Pending && !p.broken => {
                    Resolved::Accept {
                        from: p.nodes[Side::Opener as usize],
                        protocol: p.protocol,
                    }
                }
                _ => Resolved::Nothing,
            },
            Delivery::Frame { pipe, to, bytes } => {
                let Some(p) = self.pipes.get_mut(&pipe) else {
                    return Resolved::Nothing;
                };
                let EndState::Open(stream) = p.ends[to as usize] else {
                    return Resolved::Nothing;
                };
                let (first, rest, read) = &mut p.caps[to as usize];
                let cap = if *read == 0 { *first } else { *rest };
                *read += 1;
                if bytes.len() > cap {
                    self.counters.over_cap += 1;
                    let error =
                        format!("frame of {} bytes exceeds the limit of {cap}", bytes.len());
                    self.break_pipe(now, pipe, &error);
                    return Resolved::Nothing;
                }
                self.counters.frames += 1;
                Resolved::Frame { stream, bytes }
            }
            Delivery::Closed { pipe, to, error } => {
                let Some(p) = self.pipes.get(&pipe) else {
                    return Resolved::Nothing;
                };
                // An error reaches an end whose other end is done already
                // (it reset or refused the stream) or told as well (the
                // stream broke): nothing more to send.
                let state = p.ends[to as usize];
                self.end_done(pipe, to);
                match state {
                    EndState::Open(stream) => Resolved::Closed { stream, error },
                    _ => Resolved::Nothing,
                }
            }
            Delivery::OpenFailed { stream, error, .. } => Resolved::Closed {
                stream,
                error: Some(error),
            },
            Delivery::Connected {
                conn,
                node,
                peer,
                outbound,
            } => {
                let Some(c) = self.conns.get_mut(&key(node, peer)) else {
                    return Resolved::Nothing;
                };
                if c.id != conn {
                    return Resolved::Nothing;
                }
                c.announced[usize::from(node > peer)] = true;
                Resolved::Connected { peer, outbound }
            }
            Delivery::Disconnected { peer, .. } => Resolved::Disconnected { peer },
        }
    }

    /// The acceptor's node answered an [`Resolved::Accept`]: `Some` with its
    /// stream id and caps, or `None` (reset unread; the opener is told).
    pub fn accepted(
        &mut self,
        now: u64,
        net: &Network,
        rng: &mut SmallRng,
        pipe: u64,
        answer: Option<(StreamId, usize, usize)>,
    ) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let acceptor = p.nodes[Side::Acceptor as usize];
        match answer {
            Some((stream, first, rest)) => {
                p.ends[Side::Acceptor as usize] = EndState::Open(stream);
                p.caps[Side::Acceptor as usize] = (first, rest, 0);
                self.ends.insert((acceptor, stream), (pipe, Side::Acceptor));
            }
            None => {
                self.counters.refused += 1;
                let item = Delivery::Closed {
                    pipe,
                    to: Side::Opener,
                    error: Some("stream refused".into()),
                };
                self.send(now, net, rng, pipe, Side::Acceptor, item);
                self.end_done(pipe, Side::Acceptor);
            }
        }
    }

    /// Breaks the stream of a delivery that cannot be queued (a paused
    /// node's backlog is full).
    pub fn overflow(&mut self, now: u64, pipe: u64) {
        self.break_pipe(now, pipe, "the peer stopped reading");
    }

    /// Closes the connection between `a` and `b`: its streams break, and
    /// the nodes that knew it was up are told it is gone.
    pub fn disconnect(&mut self, now: u64, a: u32, b: u32, error: &str) {
        let Some(conn) = self.conns.remove(&key(a, b)) else {
            return;
        };
        for pipe in &conn.pipes {
            self.break_pipe(now, *pipe, error);
        }
        let (low, high) = key(a, b);
        for (side, (node, peer)) in [(low, high), (high, low)].into_iter().enumerate() {
            if conn.announced[side] {
                self.out.push((now, Delivery::Disconnected { node, peer }));
            }
        }
    }

    /// Node `node` crashed: its connections close (the survivors are told),
    /// its ends are gone.
    pub fn crash(&mut self, now: u64, node: u32) {
        let peers: Vec<(u32, u32)> = self
            .conns
            .keys()
            .filter(|(a, b)| *a == node || *b == node)
            .copied()
            .collect();
        for (a, b) in peers {
            self.disconnect(now, a, b, "connection closed: the peer's process died");
        }
        let ends: Vec<(u64, Side)> = self
            .ends
            .range((node, StreamId(0))..=(node, StreamId(u64::MAX)))
            .map(|(_, v)| *v)
            .collect();
        for (pipe, side) in ends {
            self.end_done(pipe, side);
        }
        // Streams to it that it never accepted.
        let pending: Vec<u64> = self
            .pipes
            .iter()
            .filter(|(_, p)| {
                p.nodes[Side::Acceptor as usize] == node
                    && p.ends[Side::Acceptor as usize] == EndState::Pending
            })
            .map(|(id, _)| *id)
            .collect();
        for pipe in pending {
            self.end_done(pipe, Side::Acceptor);
        }
    }

    /// The cuts changed: connections across a cut (either way: a connection
    /// needs both) break.
    pub fn cuts_changed(&mut self, now: u64, net: &Network) {
        let cut: Vec<(u32, u32)> = self
            .conns
            .keys()
            .filter(|(a, b)| net.is_cut_between(*a as usize, *b as usize))
            .copied()
            .collect();
        for (a, b) in cut {
            self.disconnect(now, a, b, "connection lost");
        }
    }

    /// Closes connections idle for [`IDLE_CONNECTION`].
    pub fn sweep(&mut self, now: u64) {
        let idle: Vec<(u32, u32)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.pipes.is_empty() && c.idle_since.is_some_and(|t| t + ns(IDLE_CONNECTION) <= now)
            })
            .map(|(k, _)| *k)
            .collect();
        for (a, b) in idle {
            self.counters.idle_closed += 1;
            self.disconnect(now, a, b, "idle");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::network::Latency;
    use rand::SeedableRng;

    const MS: u64 = 1_000_000;

    struct T {
        t: Transport,
        net: Network,
        rng: SmallRng,
    }

    impl T {
        fn new() -> Self {
            T {
                t: Transport::new(),
                net: Network::new(4, 1, Latency::lan(), 0.5),
                rng: SmallRng::seed_from_u64(1),
            }
        }
        fn take(&mut self) -> Vec<(u64, Delivery)> {
            let mut out: Vec<_> = self.t.take().collect();
            out.sort_by_key(|(at, _)| *at);
            out
        }
        fn open(&mut self, now: u64, from: u32, stream: u64, to: u32) {
            let (net, rng) = (&self.net, &mut self.rng);
            self.t.open(
                now,
                net,
                rng,
                (from, 1, StreamId(stream)),
                Some(to),
                true,
                Protocol::Sync,
                100,
            );
        }
    }

    #[test]
    fn a_first_stream_connects_both_nodes_then_arrives_and_frames_keep_their_order() {
        let mut t = T::new();
        t.open(0, 0, 1, 1);
        let out = t.take();
        assert!(matches!(
            out[0].1,
            Delivery::Connected {
                node: 0,
                outbound: true,
                ..
            }
        ));
        assert!(matches!(
            out[1].1,
            Delivery::Connected {
                node: 1,
                outbound: false,
                ..
            }
        ));
        assert_eq!(out[2].1, Delivery::Accept { pipe: 2 });
        assert!(
            out[2].0 > out[0].0,
            "the stream arrives after the connection"
        );
        for (_, d) in out.iter().take(2) {
            assert!(matches!(
                t.t.resolve(0, d.clone()),
                Resolved::Connected { .. }
            ));
        }
        assert_eq!(
            t.t.resolve(out[2].0, out[2].1.clone()),
            Resolved::Accept {
                from: 0,
                protocol: Protocol::Sync
            }
        );
        let (net, rng) = (&t.net, &mut t.rng);
        t.t.accepted(out[2].0, net, rng, 2, Some((StreamId(7), 10, 50)));
        for k in 0..20u8 {
            t.t.frame(out[2].0, net, rng, 0, StreamId(1), vec![k; 5]);
        }
        t.t.finish(out[2].0, net, rng, 0, StreamId(1));
        let out = t.take();
        let mut got = Vec::new();
        for (at, d) in out {
            match t.t.resolve(at, d) {
                Resolved::Frame { stream, bytes } => {
                    assert_eq!(stream, StreamId(7));
                    got.push(bytes[0]);
                }
                Resolved::Closed { error: None, .. } => got.push(u8::MAX),
                other => panic!("{other:?}"),
            }
        }
        let mut expected: Vec<u8> = (0..20).collect();
        expected.push(u8::MAX);
        assert_eq!(got, expected, "in order, the finish last");
    }

    #[test]
    fn a_frame_over_the_readers_cap_breaks_the_stream_for_both_ends() {
        let mut t = T::new();
        t.open(0, 0, 1, 1);
        let out = t.take();
        t.t.resolve(out[2].0, out[2].1.clone());
        let (net, rng) = (&t.net, &mut t.rng);
        t.t.accepted(0, net, rng, 2, Some((StreamId(7), 10, 50)));
        t.t.frame(0, net, rng, 0, StreamId(1), vec![0; 11]);
        let (at, frame) = t.take().remove(0);
        assert_eq!(t.t.resolve(at, frame), Resolved::Nothing);
        assert_eq!(t.t.counters().over_cap, 1);
        let closes: Vec<Resolved> = t
            .take()
            .into_iter()
            .map(|(at, d)| t.t.resolve(at, d))
            .collect();
        assert_eq!(closes.len(), 2);
        for c in closes {
            assert!(
                matches!(c, Resolved::Closed { error: Some(ref e), .. } if e.contains("exceeds"))
            );
        }
        assert_eq!(t.t.open_streams(), 0);
    }

    #[test]
    fn a_crash_breaks_the_survivors_streams_and_connections() {
        let mut t = T::new();
        t.open(0, 0, 1, 1);
        let out = t.take();
        for (at, d) in out.iter().take(2) {
            t.t.resolve(*at, d.clone());
        }
        t.t.resolve(out[2].0, out[2].1.clone());
        let (net, rng) = (&t.net, &mut t.rng);
        t.t.accepted(0, net, rng, 2, Some((StreamId(7), 10, 50)));
        t.t.crash(5 * MS, 1);
        let out: Vec<Resolved> = t
            .take()
            .into_iter()
            .map(|(at, d)| t.t.resolve(at, d))
            .collect();
        assert!(out.contains(&Resolved::Disconnected { peer: 1 }), "{out:?}");
        assert!(out.iter().any(|r| matches!(
            r,
            Resolved::Closed {
                stream: StreamId(1),
                error: Some(_)
            }
        )));
        assert_eq!((t.t.open_streams(), t.t.connections()), (0, 0));
    }

    #[test]
    fn opening_into_a_cut_times_out_and_a_cut_breaks_open_streams() {
        let mut t = T::new();
        t.net.cut(0, 2);
        t.open(0, 0, 1, 2);
        let out = t.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, ns(OPEN_TIMEOUT));
        assert!(
            matches!(&out[0].1, Delivery::OpenFailed { error, .. } if error.contains("timed out"))
        );
        t.open(0, 0, 2, 3);
        let out = t.take();
        for (at, d) in out {
            t.t.resolve(at, d);
        }
        t.net.cut_one_way(3, 0);
        t.t.cuts_changed(MS, &t.net);
        let out: Vec<Resolved> = t
            .take()
            .into_iter()
            .map(|(at, d)| t.t.resolve(at, d))
            .collect();
        assert!(out.iter().any(|r| matches!(
            r,
            Resolved::Closed {
                stream: StreamId(2),
                error: Some(_)
            }
        )));
        assert_eq!(t.t.connections(), 0);
    }

    #[test]
    fn a_connection_without_streams_closes_when_idle() {
        let mut t = T::new();
        let (net, rng) = (&t.net, &mut t.rng);
        t.t.dial(0, net, rng, 0, 1, true);
        for (at, d) in t.take() {
            t.t.resolve(at, d);
        }
        t.t.sweep(ns(IDLE_CONNECTION));
        assert_eq!(t.t.connections(), 1, "not idle long enough yet");
        t.t.sweep(ns(IDLE_CONNECTION) + 2 * MS);
        assert_eq!(t.t.connections(), 0);
        let out: Vec<Resolved> = t
            .take()
            .into_iter()
            .map(|(at, d)| t.t.resolve(at, d))
            .collect();
        assert_eq!(out.len(), 2);
    }
}
