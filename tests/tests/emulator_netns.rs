//! End-to-end: the userspace WAN emulator with real kernels on both sides.
//! Namespaces sit behind TAPs on one `Switch` and exchange UDP; each test
//! checks one promise of the switch (the matrix's RTT per pair, jitter that
//! never reorders, one-way cuts, random loss, flooding of broadcast and
//! multicast) by what the hosts receive. Needs root; runs in CI. Threads,
//! TAPs and namespaces are removed after, also when a test fails.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use baton_testnet::emu::{Delays, Switch, SwitchHandle};
use baton_testnet::netns::{self, Netns};
use baton_testnet::sim::RttMatrix;
use baton_testnet::sys;
use baton_tests::require_netns;

/// RTTs of three regions, all different: pairs (a,b) and (b,c) are
/// measured, so a delay taken from the wrong pair, or from port 0's row,
/// shows.
const MATRIX: &str = "a,b,rtt_ms\na,b,40\na,c,100\nb,c,160\n";
/// How much a measured RTT may exceed the emulated one: two passes through
/// the switch thread, two kernels and an echo thread, on a busy CI runner.
const SLACK: Duration = Duration::from_millis(8);
/// How long to wait for stragglers on a LAN before calling a datagram lost.
const SETTLE: Duration = Duration::from_millis(300);
/// Port of every test's receiving or echoing socket.
const PORT: u16 = 7000;

/// Hosts behind one switch: host `i` is namespace `bt<pid>-<tag><a+i>`, at
/// 198.18.<subnet>.<i+1>/16 on its `eth0`, switch port `i`.
struct Net {
    // Dropped first: closing the TAPs removes them before the namespaces go.
    switch: Switch,
    hosts: Vec<Netns>,
    addrs: Vec<Ipv4Addr>,
}

impl Net {
    /// Builds the hosts the way `Testbed::up` does: each TAP is made here,
    /// moved into its namespace and renamed `eth0`.
    fn up(tag: &str, subnet: u8, delays: Delays, jitter: f64) -> Net {
        let pid = std::process::id();
        let prefix = netns::prefix_of(pid);
        let mut hosts = Vec::new();
        for i in 0..delays.len() {
            let name = format!("{prefix}{tag}{}", char::from(b'a' + i as u8));
            hosts.push(Netns::create(&name).expect("create namespace"));
        }
        let mut taps = Vec::new();
        let mut addrs = Vec::new();
        for (i, ns) in hosts.iter().enumerate() {
            let tap_name = format!("bt{pid}{tag}t{i}");
            let tap = sys::open_tap(&tap_name).expect("create TAP");
            let addr = Ipv4Addr::new(198, 18, subnet, i as u8 + 1);
            let setup = [
                netns::ip(&["link", "set", &tap_name, "netns", ns.name()]),
                ns.ip(&["link", "set", &tap_name, "name", "eth0"]),
                // `brd +`: 198.18.255.255 is this LAN's broadcast address.
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{addr}/16"),
                    "brd",
                    "+",
                    "dev",
                    "eth0",
                ]),
                ns.ip(&["link", "set", "eth0", "up"]),
                ns.ip(&["route", "add", "224.0.0.0/4", "dev", "eth0"]),
            ];
            for step in setup {
                step.expect("set up eth0");
            }
            taps.push(tap);
            addrs.push(addr);
        }
        let switch = Switch::start(taps, delays, jitter, 0.0, 7).expect("start the switch");
        Net {
            switch,
            hosts,
            addrs,
        }
    }

    fn handle(&self) -> SwitchHandle {
        self.switch.handle()
    }

    fn addr(&self, host: usize, port: u16) -> SocketAddr {
        SocketAddr::from((self.addrs[host], port))
    }

    /// A UDP socket of `host` bound to `ip:port`; reads time out quickly so
    /// that loops can check their deadlines.
    fn bind(&self, host: usize, ip: Ipv4Addr, port: u16) -> UdpSocket {
        let socket = self.hosts[host]
            .run(move || UdpSocket::bind((ip, port)))
            .expect("enter namespace")
            .expect("bind UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set read timeout");
        socket
    }

    /// `bind` at the host's own address.
    fn bind_own(&self, host: usize, port: u16) -> UdpSocket {
        self.bind(host, self.addrs[host], port)
    }
}

/// Asserts that nothing of the test tagged `tag` is left: no namespace, no
/// TAP in this namespace.
fn assert_cleaned_up(tag: &str) {
    let pid = std::process::id();
    let ns_prefix = format!("{}{tag}", netns::prefix_of(pid));
    let left = netns::with_prefix(&ns_prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let links = netns::ip_output(&["-o", "link", "show"]).expect("ip link show");
    let tap_prefix = format!("bt{pid}{tag}t");
    assert!(
        !links.contains(&tap_prefix),
        "TAPs {tap_prefix}* left behind:\n{links}"
    );
}

fn encode(tag: u32, seq: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&tag.to_be_bytes());
    b[4..].copy_from_slice(&seq.to_be_bytes());
    b
}

/// The next datagram (tag, seq) on `rx`, or `None` after its read timeout.
fn recv(rx: &UdpSocket) -> Option<(u32, u32)> {
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).ok()?;
    let b: [u8; 8] = buf[..n].try_into().ok()?;
    Some((
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// Sends `n` datagrams tagged `tag` from `tx` to `to` while a thread counts
/// the distinct ones `rx` gets, until all came or none came for `SETTLE`
/// after the last was sent. Sends are paced (4 per ms) so that no kernel
/// queue on the way overflows: whatever is missing, the switch dropped.
fn send_and_count(tx: &UdpSocket, to: SocketAddr, rx: &UdpSocket, tag: u32, n: u32) -> usize {
    let sent: OnceLock<Instant> = OnceLock::new();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut seen = HashSet::new();
            let hard_stop = Instant::now() + Duration::from_secs(10);
            while seen.len() < n as usize
                && Instant::now() < hard_stop
                && sent.get().is_none_or(|t| t.elapsed() <= SETTLE)
            {
                if let Some((t, seq)) = recv(rx)
                    && t == tag
                {
                    seen.insert(seq);
                }
            }
            seen.len()
        });
        let mut failed = None;
        for seq in 0..n {
            if let Err(e) = tx.send_to(&encode(tag, seq), to) {
                failed = Some(e);
                break;
            }
            if seq % 4 == 3 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Set before any panic, or the receiver would wait for ever.
        let _ = sent.set(Instant::now());
        let count = receiver.join().expect("receiver thread");
        if let Some(e) = failed {
            panic!("send to {to}: {e}");
        }
        count
    })
}

/// A UDP echo server on its own thread; stopped and joined on drop.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(socket: UdpSocket) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `samples` round trips from `socket` to the echo at `to`, one at a time.
fn round_trips(socket: &UdpSocket, to: SocketAddr, tag: u32, samples: u32) -> Vec<Duration> {
    (0..samples)
        .map(|seq| {
            let sent = Instant::now();
            socket.send_to(&encode(tag, seq), to).expect("send");
            loop {
                if recv(socket) == Some((tag, seq)) {
                    break sent.elapsed();
                }
                assert!(
                    sent.elapsed() < Duration::from_secs(2),
                    "no echo from {to} for datagram {seq}"
                );
            }
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn round_trips_take_the_matrix_rtt_of_each_pair() {
    if !require_netns("round_trips_take_the_matrix_rtt_of_each_pair") {
        return;
    }
    {
        let matrix = RttMatrix::parse(MATRIX).expect("test matrix parses");
        let delays = Delays::from_matrix(&matrix, &[0, 1, 2], Duration::from_millis(2));
        let net = Net::up("e1", 1, delays.clone(), 0.0);
        let _echo_b = Echo::start(net.bind_own(1, PORT));
        let _echo_c = Echo::start(net.bind_own(2, PORT));
        for (from, to, want_ms) in [(0, 1, 40), (1, 2, 160)] {
            let rtt = delays.rtt(from, to);
            assert_eq!(rtt, Duration::from_millis(want_ms));
            let socket = net.bind_own(from, 0);
            // The first round trip waits for ARP as well.
            round_trips(&socket, net.addr(to, PORT), 0, 2);
            let mut samples = round_trips(&socket, net.addr(to, PORT), 1, 20);
            samples.sort_unstable();
            let median = samples[samples.len() / 2];
            eprintln!(
                "port {from} <-> {to}: emulated rtt {} ms, measured min {:.2} median {:.2} max {:.2} ms",
                ms(rtt),
                ms(samples[0]),
                ms(median),
                ms(samples[samples.len() - 1])
            );
            assert!(
                samples[0] >= rtt,
                "a round trip {from} <-> {to} took {:.2} ms, less than the emulated {} ms",
                ms(samples[0]),
                ms(rtt)
            );
            assert!(
                median <= rtt + SLACK,
                "median round trip {from} <-> {to} is {:.2} ms, more than {} ms + {} ms",
                ms(median),
                ms(rtt),
                ms(SLACK)
            );
        }
    }
    assert_cleaned_up("e1");
}

#[test]
fn jitter_never_reorders_frames_of_one_pair() {
    if !require_netns("jitter_never_reorders_frames_of_one_pair") {
        return;
    }
    {
        let matrix = RttMatrix::parse(MATRIX).expect("test matrix parses");
        let delays = Delays::from_matrix(&matrix, &[0, 1], Duration::from_millis(2));
        // 20 ms one way, up to 2 ms more per frame: far more than the gap
        // between back-to-back datagrams, so any reordering would show.
        let net = Net::up("e2", 2, delays, 0.1);
        let tx = net.bind_own(0, 0);
        let rx = net.bind_own(1, PORT);
        assert_eq!(
            send_and_count(&tx, net.addr(1, PORT), &rx, 0, 3),
            3,
            "warm-up (ARP) datagrams did not arrive"
        );
        let n = 50;
        for seq in 0..n {
            tx.send_to(&encode(1, seq), net.addr(1, PORT))
                .expect("send");
        }
        let mut order = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while order.len() < n as usize && Instant::now() < deadline {
            if let Some((1, seq)) = recv(&rx) {
                order.push(seq);
            }
        }
        eprintln!("{} of {n} back-to-back datagrams arrived", order.len());
        assert_eq!(
            order,
            (0..n).collect::<Vec<_>>(),
            "datagrams of one pair arrived out of order or not at all"
        );
    }
    assert_cleaned_up("e2");
}

#[test]
fn a_one_way_cut_drops_one_direction_until_healed() {
    if !require_netns("a_one_way_cut_drops_one_direction_until_healed") {
        return;
    }
    {
        let net = Net::up("e3", 3, Delays::lan(3), 0.0);
        let switch = net.handle();
        let s: Vec<UdpSocket> = (0..3).map(|i| net.bind_own(i, PORT)).collect();
        let count = |from: usize, to: usize, tag, n| {
            send_and_count(&s[from], net.addr(to, PORT), &s[to], tag, n)
        };
        // Traffic both ways first: every host knows the others' MACs, so
        // the reverse direction needs no ARP through the cut.
        for (tag, (from, to)) in [(0, 1), (1, 0), (0, 2), (2, 0)].into_iter().enumerate() {
            assert_eq!(count(from, to, tag as u32, 3), 3, "warm-up {from} -> {to}");
        }
        let cut_before = switch.counters(1).cut.load(Ordering::Relaxed);
        switch.block(0, 1);
        assert_eq!(switch.blocked(), vec![(0, 1)]);
        let a_to_b = count(0, 1, 10, 10);
        let b_to_a = count(1, 0, 11, 10);
        let a_to_c = count(0, 2, 12, 10);
        let cut = switch.counters(1).cut.load(Ordering::Relaxed) - cut_before;
        eprintln!(
            "cut 0 -> 1: 0->1 {a_to_b}/10, 1->0 {b_to_a}/10, 0->2 {a_to_c}/10, cut counter +{cut}"
        );
        assert_eq!(a_to_b, 0, "datagrams crossed the cut 0 -> 1");
        assert_eq!(b_to_a, 10, "the cut 0 -> 1 also stopped 1 -> 0");
        assert_eq!(a_to_c, 10, "the cut 0 -> 1 also stopped 0 -> 2");
        assert!(
            cut >= 10,
            "port 1 counted {cut} cut frames, expected at least 10"
        );

        switch.heal_all();
        assert!(switch.blocked().is_empty());
        let healed = count(0, 1, 13, 10);
        eprintln!("healed: 0->1 {healed}/10");
        assert_eq!(healed, 10, "heal_all did not restore 0 -> 1");
    }
    assert_cleaned_up("e3");
}

#[test]
fn random_loss_drops_the_configured_share_of_frames() {
    if !require_netns("random_loss_drops_the_configured_share_of_frames") {
        return;
    }
    {
        let net = Net::up("e4", 4, Delays::lan(2), 0.0);
        let switch = net.handle();
        let tx = net.bind_own(0, 0);
        let rx = net.bind_own(1, PORT);
        let to = net.addr(1, PORT);
        assert_eq!(send_and_count(&tx, to, &rx, 0, 3), 3, "warm-up (ARP)");

        switch.set_loss(1.0);
        let lost_before = switch.counters(1).lost.load(Ordering::Relaxed);
        let all_lost = send_and_count(&tx, to, &rx, 1, 50);
        let lost = switch.counters(1).lost.load(Ordering::Relaxed) - lost_before;
        eprintln!("loss 1.0: {all_lost}/50 arrived, lost counter +{lost}");
        assert_eq!(all_lost, 0, "datagrams arrived through loss 1.0");
        assert!(
            lost >= 50,
            "port 1 counted {lost} lost frames, expected at least 50"
        );

        // Each frame is dropped with probability 0.3: 700 of 1000 arrive on
        // average, with a standard deviation of about 14.
        switch.set_loss(0.3);
        let some = send_and_count(&tx, to, &rx, 2, 1000);
        eprintln!("loss 0.3: {some}/1000 arrived");
        assert!(
            (550..=850).contains(&some),
            "{some} of 1000 datagrams arrived through loss 0.3; expected 550 to 850"
        );

        switch.set_loss(0.0);
        let overflow_before = switch.counters(1).overflow.load(Ordering::Relaxed);
        let all = send_and_count(&tx, to, &rx, 3, 1000);
        let overflow = switch.counters(1).overflow.load(Ordering::Relaxed) - overflow_before;
        eprintln!("loss 0: {all}/1000 arrived, overflow counter +{overflow}");
        assert_eq!(all, 1000, "datagrams went missing without loss");
    }
    assert_cleaned_up("e4");
}

#[test]
fn broadcast_and_multicast_reach_every_other_port() {
    if !require_netns("broadcast_and_multicast_reach_every_other_port") {
        return;
    }
    {
        let net = Net::up("e5", 5, Delays::lan(3), 0.0);
        let group = Ipv4Addr::new(239, 18, 0, 1);
        let tx = net.bind_own(0, 0);
        tx.set_broadcast(true).expect("SO_BROADCAST");
        // Receivers bind the wildcard address: a socket bound to its unicast
        // address does not get broadcasts or multicasts.
        let bcast: Vec<UdpSocket> = (1..3)
            .map(|i| net.bind(i, Ipv4Addr::UNSPECIFIED, PORT))
            .collect();
        let mcast: Vec<UdpSocket> = (1..3)
            .map(|i| {
                let socket = net.bind(i, Ipv4Addr::UNSPECIFIED, PORT + 1);
                socket
                    .join_multicast_v4(&group, &net.addrs[i])
                    .expect("join multicast group");
                socket
            })
            .collect();

        let broadcast = SocketAddr::from((Ipv4Addr::new(198, 18, 255, 255), PORT));
        let multicast = SocketAddr::from((group, PORT + 1));
        for (tag, to, receivers) in [(1, broadcast, &bcast), (2, multicast, &mcast)] {
            for seq in 0..3 {
                tx.send_to(&encode(tag, seq), to).expect("send");
            }
            for (i, rx) in receivers.iter().enumerate() {
                let mut seen = HashSet::new();
                let deadline = Instant::now() + Duration::from_secs(2);
                while seen.len() < 3 && Instant::now() < deadline {
                    if let Some((t, seq)) = recv(rx)
                        && t == tag
                    {
                        seen.insert(seq);
                    }
                }
                eprintln!("{to}: host {} got {}/3", i + 1, seen.len());
                assert_eq!(seen.len(), 3, "host {} missed datagrams to {to}", i + 1);
            }
        }
    }
    assert_cleaned_up("e5");
}
