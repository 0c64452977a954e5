//! The switch's event loop: one thread polls every TAP, queues each frame
//! for each port it goes to with that pair's delay, and writes frames out
//! when their time comes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::Delays;
use crate::sys;

/// Longest Ethernet frame a TAP hands us (MTU 1500 plus header, with room).
const FRAME_MAX: usize = 65_536;
/// Frames read from one port before the others get their turn.
const BURST: usize = 256;
/// Frames waiting in the delay line before new ones are dropped: bounds
/// memory when a port floods.
const QUEUE_MAX: usize = 200_000;

/// Counters of one port, as seen from the switch: `rx` is what the host
/// behind the port sent, `tx` what the switch delivered to it.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames the host sent.
    pub rx_frames: AtomicU64,
    /// Bytes the host sent (Ethernet frames).
    pub rx_bytes: AtomicU64,
    /// Frames delivered to the host.
    pub tx_frames: AtomicU64,
    /// Bytes delivered to the host.
    pub tx_bytes: AtomicU64,
    /// Frames towards this host dropped by random loss.
    pub lost: AtomicU64,
    /// Frames towards this host dropped by a cut link.
    pub cut: AtomicU64,
    /// Frames towards this host dropped because the delay line was full or
    /// the TAP refused them.
    pub overflow: AtomicU64,
    /// Bytes the host sent, by [`Class`] (index [`Class::index`]).
    pub rx_class_bytes: [AtomicU64; Class::ALL.len()],
    /// Frames the host sent, by [`Class`].
    pub rx_class_frames: [AtomicU64; Class::ALL.len()],
}

/// What a frame carries, told from its headers alone (the testnet's
/// well-known ports): so that a report names where every byte went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Baton's sealed SWIM datagrams (UDP, the port after libp2p's).
    Swim,
    /// libp2p over QUIC or TCP (the testnet's libp2p port): admission, anti-entropy,
    /// Kademlia, identify, and QUIC's own handshakes and acks.
    Libp2p,
    /// mDNS (UDP port 5353).
    Mdns,
    /// Serf's gossip and push-pull (port 7946), in the side-by-side run.
    Serf,
    /// ARP.
    Arp,
    /// Anything else (RTP to clients, IPv6 neighbour discovery, ...).
    Other,
}

impl Class {
    /// Every class, in index order.
    pub const ALL: [Class; 6] = [
        Class::Swim,
        Class::Libp2p,
        Class::Mdns,
        Class::Serf,
        Class::Arp,
        Class::Other,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::Swim => "swim_datagrams",
            Class::Libp2p => "libp2p",
            Class::Mdns => "mdns",
            Class::Serf => "serf",
            Class::Arp => "arp",
            Class::Other => "other",
        }
    }

    /// Its index in the counters.
    pub fn index(self) -> usize {
        Class::ALL.iter().position(|c| *c == self).unwrap_or(5)
    }

    /// The class of an Ethernet frame.
    pub fn of(frame: &[u8]) -> Class {
        let ethertype = frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
        match ethertype {
            Some(0x0806) => return Class::Arp,
            Some(0x0800) => {}
            _ => return Class::Other,
        }
        let Some(ip) = frame.get(14..) else {
            return Class::Other;
        };
        let (Some(&vihl), Some(&proto)) = (ip.first(), ip.get(9)) else {
            return Class::Other;
        };
        let header = usize::from(vihl & 0x0f) * 4;
        let ports = ip.get(header..header + 4).map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
        let Some((src, dst)) = ports else {
            return Class::Other;
        };
        let either = |port: u16| src == port || dst == port;
        let libp2p = crate::testbed::QUIC_PORT;
        match proto {
            17 if either(libp2p + 1) => Class::Swim,
            17 if either(5353) => Class::Mdns,
            6 | 17 if either(libp2p) => Class::Libp2p,
            6 | 17 if either(crate::testbed::SERF_PORT) => Class::Serf,
            _ => Class::Other,
        }
    }
}

/// A directed link made worse than the rest: a path that degraded.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Probability of dropping a frame on this link, on top of the
    /// switch's loss (0 to 1).
    pub loss: f64,
    /// Delay added to the link's one-way delay (its jitter does not grow).
    pub delay: Duration,
}

/// What can change while the switch runs.
#[derive(Debug)]
struct Rules {
    /// Probability of dropping a frame, per frame and port it goes to.
    loss: f64,
    /// Directed links that drop everything: (from port, to port).
    blocked: HashSet<(usize, usize)>,
    /// Directed links with more loss or delay than the others.
    impaired: HashMap<(usize, usize), Impairment>,
}

/// The fate of frames on one directed link under the current rules.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Link {
    cut: bool,
    /// Probability of dropping a frame: the switch's and the link's own,
    /// independent.
    loss: f64,
    /// Delay beyond the pair's one-way delay and jitter.
    extra: Duration,
}

impl Rules {
    fn link(&self, from: usize, to: usize) -> Link {
        let own = self.impaired.get(&(from, to)).copied().unwrap_or_default();
        Link {
            cut: self.blocked.contains(&(from, to)),
            loss: 1.0 - (1.0 - self.loss) * (1.0 - own.loss),
            extra: own.delay,
        }
    }
}

#[derive(Debug)]
struct Shared {
    rules: Mutex<Rules>,
    counters: Vec<PortCounters>,
    stop: AtomicBool,
    delays: Delays,
}

/// Changes the running switch's rules and reads its counters; cheap to
/// clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct SwitchHandle {
    shared: Arc<Shared>,
}

impl SwitchHandle {
    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Ports of the switch.
    pub fn ports(&self) -> usize {
        self.shared.counters.len()
    }

    /// Drops everything from port `from` to port `to` (one direction).
    pub fn block(&self, from: usize, to: usize) {
        self.rules().blocked.insert((from, to));
    }

    /// Restores the link from `from` to `to`.
    pub fn unblock(&self, from: usize, to: usize) {
        self.rules().blocked.remove(&(from, to));
    }

    /// Restores every link of `port`, both directions.
    pub fn heal_port(&self, port: usize) {
        self.rules()
            .blocked
            .retain(|(a, b)| *a != port && *b != port);
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        self.rules().blocked.clear();
    }

    /// Directed links cut now.
    pub fn blocked(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self.rules().blocked.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Makes the link from `from` to `to` (one direction) lose and delay
    /// frames as `impairment` says, replacing what it had.
    pub fn impair(&self, from: usize, to: usize, impairment: Impairment) {
        let impairment = Impairment {
            loss: impairment.loss.clamp(0.0, 1.0),
            ..impairment
        };
        self.rules().impaired.insert((from, to), impairment);
    }

    /// Gives the link from `from` to `to` back its ordinary loss and delay.
    pub fn restore(&self, from: usize, to: usize) {
        self.rules().impaired.remove(&(from, to));
    }

    /// Impaired directed links now.
    pub fn impaired(&self) -> Vec<((usize, usize), Impairment)> {
        let mut v: Vec<_> = self
            .rules()
            .impaired
            .iter()
            .map(|(k, i)| (*k, *i))
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Sets the random loss of every link (0 to 1).
    pub fn set_loss(&self, loss: f64) {
        self.rules().loss = loss.clamp(0.0, 1.0);
    }

    /// The random loss of every link.
    pub fn loss(&self) -> f64 {
        self.rules().loss
    }

    /// Counters of `port`.
    pub fn counters(&self, port: usize) -> &PortCounters {
        &self.shared.counters[port]
    }

    /// The delays the switch imposes.
    pub fn delays(&self) -> &Delays {
        &self.shared.delays
    }
}

/// A running switch. Dropping it stops the thread and closes the TAPs,
/// which removes them.
#[derive(Debug)]
pub struct Switch {
    handle: SwitchHandle,
    thread: Option<JoinHandle<()>>,
}

impl Switch {
    /// Starts forwarding between `taps` (port p = `taps[p]`) with `delays`
    /// between them, `jitter` (a fraction: each frame waits up to that much
    /// longer than its pair's delay, frames of one pair never overtake each
    /// other) and random `loss`.
    pub fn start(
        taps: Vec<File>,
        delays: Delays,
        jitter: f64,
        loss: f64,
        seed: u64,
    ) -> io::Result<Switch> {
        assert_eq!(taps.len(), delays.len(), "one delay row per port");
        let shared = Arc::new(Shared {
            rules: Mutex::new(Rules {
                loss: loss.clamp(0.0, 1.0),
                blocked: HashSet::new(),
                impaired: HashMap::new(),
            }),
            counters: (0..taps.len()).map(|_| PortCounters::default()).collect(),
            stop: AtomicBool::new(false),
            delays,
        });
        let handle = SwitchHandle { shared };
        let thread = std::thread::Builder::new()
            .name("wan-switch".into())
            .spawn({
                let handle = handle.clone();
                move || {
                    // Not starved by the nodes it carries (best effort: needs
                    // root, which the testnet has anyway).
                    let _ = sys::raise_thread_priority();
                    let mut core = Core::new(taps, handle, jitter.max(0.0), seed);
                    if let Err(e) = core.run() {
                        eprintln!("wan switch stopped: {e}");
                    }
                }
            })?;
        Ok(Switch {
            handle,
            thread: Some(thread),
        })
    }

    /// The handle that changes rules and reads counters.
    pub fn handle(&self) -> SwitchHandle {
        self.handle.clone()
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A frame waiting for its time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at: Instant,
    seq: u64,
    port: usize,
    frame: Vec<u8>,
}

struct Core {
    taps: Vec<File>,
    handle: SwitchHandle,
    jitter: f64,
    rng: SmallRng,
    /// Where each MAC address was last seen sending.
    macs: HashMap<[u8; 6], usize>,
    queue: BinaryHeap<Reverse<Pending>>,
    /// Latest delivery time per (from, to), so frames keep their order.
    last: Vec<Instant>,
    /// Ports whose device failed: no longer polled.
    gone: Vec<bool>,
    seq: u64,
}

impl Core {
    fn new(taps: Vec<File>, handle: SwitchHandle, jitter: f64, seed: u64) -> Core {
        let n = taps.len();
        Core {
            taps,
            handle,
            jitter,
            rng: SmallRng::seed_from_u64(seed),
            macs: HashMap::new(),
            queue: BinaryHeap::new(),
            last: vec![Instant::now(); n * n],
            gone: vec![false; n],
            seq: 0,
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; FRAME_MAX];
        while !self.handle.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = self
                .queue
                .peek()
                .map(|Reverse(p)| p.at.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            let live: Vec<usize> = (0..self.taps.len()).filter(|p| !self.gone[*p]).collect();
            let ready = {
                let fds: Vec<_> = live.iter().map(|p| self.taps[*p].as_fd()).collect();
                sys::poll_readable(&fds, wait)?
            };
            for (port, readable) in live.into_iter().zip(ready) {
                if readable {
                    self.read_port(port, &mut buf);
                }
            }
            self.deliver_due();
        }
        Ok(())
    }

    fn read_port(&mut self, port: usize, buf: &mut [u8]) {
        for _ in 0..BURST {
            match (&self.taps[port]).read(buf) {
                Ok(0) => return,
                Ok(n) => self.route(port, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The device went away (its namespace was deleted): nothing
                // more will come from it, and polling it again would only
                // report the error again.
                Err(_) => {
                    self.gone[port] = true;
                    return;
                }
            }
        }
    }

    fn route(&mut self, from: usize, frame: &[u8]) {
        if frame.len() < 14 {
            return;
        }
        let counters = &self.handle.shared.counters[from];
        counters.rx_frames.fetch_add(1, Ordering::Relaxed);
        counters
            .rx_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        let class = Class::of(frame).index();
        counters.rx_class_bytes[class].fetch_add(frame.len() as u64, Ordering::Relaxed);
        counters.rx_class_frames[class].fetch_add(1, Ordering::Relaxed);
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        src.copy_from_slice(&frame[6..12]);
        if src[0] & 1 == 0 {
            self.macs.insert(src, from);
        }
        let targets: Vec<usize> = match (dst[0] & 1 == 0)
            .then(|| self.macs.get(&dst).copied())
            .flatten()
        {
            Some(to) if to != from => vec![to],
            Some(_) => Vec::new(),
            None => (0..self.taps.len()).filter(|p| *p != from).collect(),
        };
        let now = Instant::now();
        let links: Vec<Link> = {
            let rules = self
                .handle
                .shared
                .rules
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            targets.iter().map(|to| rules.link(from, *to)).collect()
        };
        let n = self.taps.len();
        for (to, link) in targets.into_iter().zip(links) {
            let counters = &self.handle.shared.counters[to];
            if link.cut {
                counters.cut.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if link.loss > 0.0 && self.rng.random::<f64>() < link.loss {
                counters.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.queue.len() >= QUEUE_MAX {
                counters.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let base = self.handle.shared.delays.one_way(from, to);
            let jitter = if self.jitter > 0.0 && !base.is_zero() {
                base.mul_f64(self.jitter * self.rng.random::<f64>())
            } else {
                Duration::ZERO
            };
            let slot = &mut self.last[from * n + to];
            let at = (now + base + jitter + link.extra).max(*slot);
            *slot = at;
            self.seq += 1;
            self.queue.push(Reverse(Pending {
                at,
                seq: self.seq,
                port: to,
                frame: frame.to_vec(),
            }));
        }
    }

    fn deliver_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = self.queue.pop() else {
                break;
            };
            let counters = &self.handle.shared.counters[p.port];
            // A TAP takes a frame whole or not at all.
            match (&self.taps[p.port]).write(&p.frame) {
                Ok(n) if n == p.frame.len() => {
                    counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                    counters
                        .tx_bytes
                        .fetch_add(p.frame.len() as u64, Ordering::Relaxed);
                }
                // The device is down or gone, or its queue is full: the
                // frame is lost, as on a real link.
                Ok(_) | Err(_) => {
                    counters.overflow.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod class_tests {
    use super::Class;

    /// An Ethernet + IPv4 frame of `proto` between the two ports.
    fn frame(proto: u8, src: u16, dst: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[34..36].copy_from_slice(&src.to_be_bytes());
        f[36..38].copy_from_slice(&dst.to_be_bytes());
        f
    }

    #[test]
    fn frames_are_classed_by_their_well_known_ports() {
        let libp2p = crate::testbed::QUIC_PORT;
        assert_eq!(Class::of(&frame(17, 40000, libp2p + 1)), Class::Swim);
        assert_eq!(Class::of(&frame(17, libp2p + 1, libp2p + 1)), Class::Swim);
        assert_eq!(Class::of(&frame(17, libp2p, libp2p)), Class::Libp2p);
        assert_eq!(Class::of(&frame(6, 51000, libp2p)), Class::Libp2p);
        assert_eq!(Class::of(&frame(17, 5353, 5353)), Class::Mdns);
        assert_eq!(Class::of(&frame(6, 7946, 40000)), Class::Serf);
        assert_eq!(Class::of(&frame(17, 40000, 5004)), Class::Other);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(Class::of(&arp), Class::Arp);
        assert_eq!(Class::of(&[0u8; 10]), Class::Other);
    }
}

#[cfg(test)]
mod impair_tests {
    use super::*;

    /// A switch core on `ports` ports writing nowhere, not running: frames
    /// are routed by hand and its delay line inspected.
    fn core(ports: usize, loss: f64) -> Core {
        let shared = Arc::new(Shared {
            rules: Mutex::new(Rules {
                loss,
                blocked: HashSet::new(),
                impaired: HashMap::new(),
            }),
            counters: (0..ports).map(|_| PortCounters::default()).collect(),
            stop: AtomicBool::new(false),
            delays: Delays::lan(ports),
        });
        let taps = (0..ports)
            .map(|_| File::options().write(true).open("/dev/null").unwrap())
            .collect();
        Core::new(taps, SwitchHandle { shared }, 0.0, 7)
    }

    /// A broadcast frame from the host behind port `from`: flooded.
    fn broadcast(from: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, from]);
        f
    }

    /// Queued frames to `port`, by when they are due.
    fn due_to(core: &Core, port: usize) -> Vec<Instant> {
        let mut v: Vec<Instant> = core
            .queue
            .iter()
            .filter(|Reverse(p)| p.port == port)
            .map(|Reverse(p)| p.at)
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn link_loss_adds_to_the_switch_loss_and_cuts_win() {
        let mut rules = Rules {
            loss: 0.5,
            blocked: HashSet::new(),
            impaired: HashMap::new(),
        };
        let slow = Impairment {
            loss: 0.5,
            delay: Duration::from_millis(150),
        };
        rules.impaired.insert((0, 1), slow);
        let l = rules.link(0, 1);
        assert_eq!((l.cut, l.loss, l.extra), (false, 0.75, slow.delay));
        let back = rules.link(1, 0);
        assert_eq!(
            (back.loss, back.extra),
            (0.5, Duration::ZERO),
            "one direction"
        );
        rules.blocked.insert((0, 1));
        assert!(rules.link(0, 1).cut);
    }

    #[test]
    fn a_degraded_pair_loses_and_delays_only_its_own_frames() {
        let mut c = core(3, 0.0);
        let handle = c.handle.clone();
        let slow = Impairment {
            loss: 0.1,
            delay: Duration::from_millis(150),
        };
        handle.impair(0, 1, slow);
        handle.impair(
            2,
            0,
            Impairment {
                loss: 7.0, // clamped to 1
                delay: Duration::ZERO,
            },
        );
        assert_eq!(handle.impaired()[0], ((0, 1), slow));
        assert_eq!(handle.impaired()[1].1.loss, 1.0);
        let before = Instant::now();
        for _ in 0..2000 {
            c.route(0, &broadcast(0));
        }
        let after = Instant::now();
        let to_1 = due_to(&c, 1);
        let to_2 = due_to(&c, 2);
        let lost = handle.counters(1).lost.load(Ordering::Relaxed);
        assert_eq!(to_1.len() as u64 + lost, 2000);
        assert!((120..=280).contains(&lost), "about 10% of 2000: {lost}");
        assert_eq!(to_2.len(), 2000, "the other port is not degraded");
        assert_eq!(handle.counters(2).lost.load(Ordering::Relaxed), 0);
        assert!(to_1.iter().all(|at| *at >= before + slow.delay));
        assert!(to_2.iter().all(|at| *at <= after));
        // The way back is untouched; from port 2 nothing reaches port 0.
        c.route(1, &broadcast(1));
        c.route(2, &broadcast(2));
        assert_eq!(due_to(&c, 0).len(), 1);
        assert!(due_to(&c, 0)[0] <= Instant::now());
        // Restored: no more loss, and frames already delayed are not
        // overtaken by the ones sent after.
        handle.restore(0, 1);
        assert_eq!(handle.impaired().len(), 1);
        let last_slow = *to_1.last().unwrap();
        for _ in 0..100 {
            c.route(0, &broadcast(0));
        }
        let to_1 = due_to(&c, 1);
        assert_eq!(handle.counters(1).lost.load(Ordering::Relaxed), lost);
        assert_eq!(to_1.len() as u64 + lost, 2101, "and one from port 2");
        assert!(to_1.iter().rev().take(100).all(|at| *at >= last_slow));
    }
}
