//! A small multi-node harness inside the crate: real `Node`s, a network of
//! datagrams (lost, never retransmitted), reliable ordered streams and
//! connections, in virtual time. The testnet's simulator does the same at
//! scale with faults; this one lets the core prove itself on its own.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::NodeId;
use crate::map::LocalKey;
use crate::node::{Action, Config, Event, Node, Protocol, StreamId, Timing, Transmit};
use crate::peering::Policy;
use crate::session::Signer;
use crate::swim::{self, State};

pub type TestNode = Node<LocalKey, SmallRng>;

/// The datagram socket of node `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, i as u8 + 1)), 7702)
}

pub fn key(i: usize) -> LocalKey {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    LocalKey::from_seed(seed)
}

pub fn config(i: usize) -> Config {
    Config {
        name: format!("n{i}"),
        policy: Policy {
            overlay: "test".into(),
            network_key: Some(b"key".to_vec()),
            allowlist: None,
            max_members: 64,
        },
        capacity: 10,
        swim: swim::Config::lan(),
        sessions: crate::sessions::Config::default(),
        datagram: Some(addr(i)),
        bootstrap: Vec::new(),
        timing: Timing::default(),
        clients: crate::node::ClientPolicy::default(),
        services: 0,
        tags: Default::default(),
    }
}

#[derive(Debug)]
enum What {
    Datagram {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Accept {
        to: usize,
        from: usize,
        stream: StreamId,
        protocol: Protocol,
    },
    Frame {
        from: usize,
        stream: StreamId,
        bytes: Vec<u8>,
    },
    Closed {
        to: usize,
        from: usize,
        stream: StreamId,
        error: Option<String>,
    },
    Wake(usize),
}

#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    what: What,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One end of a stream: (node, its id for the stream).
type End = (usize, StreamId);

#[derive(Debug)]
pub struct Net {
    pub now: Instant,
    pub nodes: Vec<Option<TestNode>>,
    pub ids: Vec<NodeId>,
    pub latency: Duration,
    pub loss: f64,
    rng: SmallRng,
    queue: BinaryHeap<Queued>,
    seq: u64,
    /// Directed cuts: nothing from a to b.
    pub cuts: BTreeSet<(usize, usize)>,
    /// Stream ends, each to its peer end (None: refused by the peer).
    ends: BTreeMap<End, Option<End>>,
    /// Frame caps of each end: (first, rest, frames read so far).
    caps: BTreeMap<End, (usize, usize, u64)>,
    connected: BTreeSet<(usize, usize)>,
    /// Sessions each node hosts (Start/Stop applied).
    pub hosting: Vec<BTreeSet<String>>,
    pub actions: Vec<Vec<Action>>,
    pub events: Vec<Vec<Event>>,
    /// Datagrams delivered (all nodes).
    pub datagrams: u64,
    /// FNV-1a over every transmit, in order: equal runs hash equal.
    pub trace_hash: u64,
    restarts: u64,
}

impl Net {
    /// `n` nodes, started now, none knowing another.
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, config)
    }

    pub fn with_config(n: usize, seed: u64, make: impl Fn(usize) -> Config) -> Self {
        Self::with_keys(n, seed, make, |i| i)
    }

    /// Node `i` holds the key of index `key_of(i)`: two nodes with the same
    /// index are one identity run twice.
    pub fn with_keys(
        n: usize,
        seed: u64,
        make: impl Fn(usize) -> Config,
        key_of: impl Fn(usize) -> usize,
    ) -> Self {
        let now = Instant::now();
        let mut net = Net {
            now,
            nodes: Vec::new(),
            ids: (0..n).map(|i| key(key_of(i)).id().clone()).collect(),
            latency: Duration::from_micros(500),
            loss: 0.0,
            rng: SmallRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            cuts: BTreeSet::new(),
            ends: BTreeMap::new(),
            caps: BTreeMap::new(),
            connected: BTreeSet::new(),
            hosting: vec![BTreeSet::new(); n],
            actions: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            datagrams: 0,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            restarts: 0,
        };
        for i in 0..n {
            let node = Node::new(
                make(i),
                key(key_of(i)),
                SmallRng::seed_from_u64(seed ^ ((i as u64 + 1) * 0x9e37)),
                now,
                1_700_000_000_000,
            );
            net.nodes.push(Some(node));
        }
        for i in 0..n {
            net.after(i);
        }
        net
    }

    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node runs")
    }

    pub fn node_mut(&mut self, i: usize) -> &mut TestNode {
        self.nodes[i].as_mut().expect("node runs")
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.ids.iter().position(|x| x == id)
    }

    fn push(&mut self, at: Instant, what: What) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            what,
        });
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        self.nodes[to].is_some() && !self.cuts.contains(&(from, to))
    }

    /// Node `i` learns of node `j` as discovery would (mDNS).
    pub fn discover(&mut self, i: usize, j: usize) {
        let now = self.now;
        let id = self.ids[j].clone();
        self.node_mut(i)
            .handle_discovered(now, id, vec![format!("/mem/{j}")]);
        self.after(i);
    }

    /// Every node discovers node 0, as a LAN's mDNS would let it.
    pub fn join_all(&mut self) {
        for i in 1..self.nodes.len() {
            self.discover(i, 0);
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        if self.connected.contains(&(a.min(b), a.max(b))) || !self.reachable(a, b) {
            return;
        }
        self.connected.insert((a.min(b), a.max(b)));
        let now = self.now;
        let (ida, idb) = (self.ids[a].clone(), self.ids[b].clone());
        let ip = |i: usize| Some(addr(i).ip());
        self.node_mut(a).handle_connected(now, idb, ip(b), true);
        self.node_mut(b).handle_connected(now, ida, ip(a), false);
        self.after(a);
        self.after(b);
    }

    /// Drains node `i`'s outputs and schedules its next wake-up.
    pub fn after(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut transmits = Vec::new();
        while let Some(t) = node.poll_transmit() {
            transmits.push(t);
        }
        let mut actions = Vec::new();
        while let Some(a) = node.poll_action() {
            actions.push(a);
        }
        while let Some(e) = node.poll_event() {
            self.events[i].push(e);
        }
        let wake = node.poll_timeout();
        for t in transmits {
            self.transmit(i, t);
        }
        for a in actions {
            match &a {
                Action::Start(r) => {
                    self.hosting[i].insert(r.id.clone());
                }
                Action::Stop { id, .. } => {
                    self.hosting[i].remove(id);
                }
                Action::Dial {
                    peer: Some(peer), ..
                } => {
                    if let Some(j) = self.index_of(peer) {
                        self.connect(i, j);
                    }
                }
                Action::Disconnect { peer } => {
                    if let Some(j) = self.index_of(peer) {
                        self.connected.remove(&(i.min(j), i.max(j)));
                        let now = self.now;
                        let id_i = self.ids[i].clone();
                        if let Some(n) = self.nodes[i].as_mut() {
                            n.handle_disconnected(now, peer.clone());
                        }
                        if let Some(n) = self.nodes[j].as_mut() {
                            n.handle_disconnected(now, id_i);
                        }
                    }
                }
                _ => {}
            }
            self.actions[i].push(a);
        }
        if let Some(at) = wake {
            self.push(at.max(self.now), What::Wake(i));
        }
    }

    fn transmit(&mut self, from: usize, t: Transmit) {
        for b in format!("{from}{t:?}").bytes() {
            self.trace_hash = (self.trace_hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let at = self.now + self.latency;
        match t {
            Transmit::Datagram { to, bytes, .. } => {
                let Some(to) = (0..self.nodes.len()).find(|&j| addr(j) == to) else {
                    return;
                };
                if !self.reachable(from, to) || self.rng.random::<f64>() < self.loss {
                    return;
                }
                self.push(at, What::Datagram { to, from, bytes });
            }
            Transmit::Open {
                stream,
                peer,
                protocol,
                max_frame,
                ..
            } => {
                self.caps.insert((from, stream), (max_frame, max_frame, 0));
                let Some(to) = self.index_of(&peer) else {
                    self.push(
                        at,
                        What::Closed {
                            to: from,
                            from,
                            stream,
                            error: Some("unknown peer".into()),
                        },
                    );
                    return;
                };
                if !self.reachable(from, to) {
                    self.ends.insert((from, stream), None);
                    self.push(
                        at + Duration::from_millis(5),
                        What::Closed {
                            to: from,
                            from: to,
                            stream,
                            error: Some("dial failed".into()),
                        },
                    );
                    return;
                }
                self.connect(from, to);
                self.push(
                    at,
                    What::Accept {
                        to,
                        from,
                        stream,
                        protocol,
                    },
                );
            }
            Transmit::Frame { stream, bytes } => {
                self.push(
                    at,
                    What::Frame {
                        from,
                        stream,
                        bytes,
                    },
                );
            }
            Transmit::Finish { stream } => self.push(
                at,
                What::Closed {
                    to: usize::MAX,
                    from,
                    stream,
                    error: None,
                },
            ),
            Transmit::Reset { stream } => self.push(
                at,
                What::Closed {
                    to: usize::MAX,
                    from,
                    stream,
                    error: Some("reset".into()),
                },
            ),
        }
    }

    /// Processes everything due up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while self.queue.peek().is_some_and(|q| q.at <= until) {
            let q = self.queue.pop().expect("peeked");
            self.now = self.now.max(q.at);
            self.process(q.what);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn process(&mut self, what: What) {
        let now = self.now;
        match what {
            What::Wake(i) => {
                if let Some(n) = self.nodes[i].as_mut()
                    && n.poll_timeout().is_some_and(|t| t <= now)
                {
                    n.handle_timeout(now);
                    self.after(i);
                }
            }
            What::Datagram { to, from, bytes } => {
                if let Some(n) = self.nodes[to].as_mut() {
                    self.datagrams += 1;
                    n.handle_datagram(now, addr(from), &bytes);
                    self.after(to);
                }
            }
            What::Accept {
                to,
                from,
                stream,
                protocol,
            } => {
                let id = self.ids[from].clone();
                let accepted = self.nodes[to]
                    .as_mut()
                    .and_then(|n| n.handle_stream_accepted(now, id, protocol));
                match accepted {
                    Some((theirs, first, rest)) => {
                        self.ends.insert((from, stream), Some((to, theirs)));
                        self.ends.insert((to, theirs), Some((from, stream)));
                        self.caps.insert((to, theirs), (first, rest, 0));
                    }
                    None => {
                        self.ends.insert((from, stream), None);
                        self.push(
                            now + self.latency,
                            What::Closed {
                                to: from,
                                from: to,
                                stream,
                                error: Some("refused".into()),
                            },
                        );
                    }
                }
                self.after(to);
            }
            What::Frame {
                from,
                stream,
                bytes,
            } => {
                let Some(Some((to, theirs))) = self.ends.get(&(from, stream)).cloned() else {
                    return;
                };
                let Some(cap) = self.caps.get_mut(&(to, theirs)) else {
                    return;
                };
                let limit = if cap.2 == 0 { cap.0 } else { cap.1 };
                cap.2 += 1;
                if bytes.len() > limit || !self.reachable(from, to) {
                    self.break_stream((from, stream), (to, theirs));
                    return;
                }
                if let Some(n) = self.nodes[to].as_mut() {
                    n.handle_frame(now, theirs, &bytes);
                    self.after(to);
                }
            }
            What::Closed {
                to,
                from,
                stream,
                error,
            } => {
                if to != usize::MAX {
                    // Addressed to the opener itself (a failed dial).
                    if let Some(n) = self.nodes[to].as_mut() {
                        n.handle_stream_closed(now, stream, error);
                        self.after(to);
                    }
                    return;
                }
                let Some(Some((to, theirs))) = self.ends.get(&(from, stream)).cloned() else {
                    return;
                };
                if let Some(n) = self.nodes[to].as_mut() {
                    n.handle_stream_closed(now, theirs, error);
                    self.after(to);
                }
            }
        }
    }

    fn break_stream(&mut self, a: End, b: End) {
        let now = self.now;
        for (i, s) in [a, b] {
            self.ends.insert((i, s), None);
            if let Some(n) = self.nodes[i].as_mut() {
                n.handle_stream_closed(now, s, Some("frame too large".into()));
                self.after(i);
            }
        }
    }

    /// Makes every running node part of one warm group (see
    /// [`crate::node::warm_start`]).
    pub fn warm(&mut self) {
        let now = self.now;
        let mut nodes: Vec<&mut TestNode> = self.nodes.iter_mut().flatten().collect();
        crate::node::warm_start(&mut nodes, now);
        for i in 0..self.nodes.len() {
            self.after(i);
        }
    }

    /// Kills node `i` at once.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.hosting[i].clear();
        self.connected.retain(|&(a, b)| a != i && b != i);
    }

    /// Starts node `i` again after a crash: same key, a new process (new
    /// RNG, so a new boot number).
    pub fn restart(&mut self, i: usize) {
        let now = self.now;
        let life = self.restarts;
        self.restarts += 1;
        let node = Node::new(
            config(i),
            key(i),
            SmallRng::seed_from_u64(0xdead ^ ((i as u64) << 8) ^ life),
            now,
            1_700_000_000_000,
        );
        self.nodes[i] = Some(node);
        self.after(i);
    }

    /// Whether every live node sees every other live node alive.
    pub fn converged(&self) -> bool {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        live.iter().all(|&i| {
            live.iter().all(|&j| {
                i == j
                    || self
                        .node(i)
                        .swim()
                        .member(&self.ids[j])
                        .is_some_and(|m| m.state == State::Alive)
            })
        })
    }

    /// The state node `i` holds of node `j`.
    pub fn state(&self, i: usize, j: usize) -> Option<State> {
        self.node(i).swim().member(&self.ids[j]).map(|m| m.state)
    }

    /// `n` nodes (seed `seed`) joined and converged within 5 s.
    pub fn joined(n: usize, seed: u64) -> Self {
        let mut net = Net::new(n, seed);
        net.join_all();
        assert!(net.converge(Duration::from_secs(5)).is_some(), "converges");
        net
    }

    /// Runs until converged, at most `limit`; returns how long it took.
    pub fn converge(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now < start + limit {
            self.run_for(Duration::from_millis(10));
            if self.converged() {
                return Some(self.now - start);
            }
        }
        None
    }
}
