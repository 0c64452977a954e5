//! Tests of the whole node: exact outputs for single inputs (admission, a
//! takeover, a map sync), and small overlays run in the harness.

mod byzantine;
mod harness;
mod mutants;
mod refusals;

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::datagram;
use crate::map::SyncMessage;
use crate::peering::{self, Hello};
use harness::{Net, addr};

fn frames_of(out: &[Transmit]) -> Vec<(StreamId, Vec<u8>)> {
    out.iter()
        .filter_map(|t| match t {
            Transmit::Frame { stream, bytes } => Some((*stream, bytes.clone())),
            _ => None,
        })
        .collect()
}

fn drain(node: &mut harness::TestNode) -> (Vec<Transmit>, Vec<Action>, Vec<Event>) {
    let t = std::iter::from_fn(|| node.poll_transmit()).collect();
    let a = std::iter::from_fn(|| node.poll_action()).collect();
    let e = std::iter::from_fn(|| node.poll_event()).collect();
    (t, a, e)
}

fn hello(bytes: &[u8]) -> Hello {
    peering::decode(bytes).expect("a hello frame")
}

#[test]
fn a_discovered_peer_is_dialled_and_the_dialler_challenges_it() {
    let mut net = Net::new(2, 1);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    a.handle_discovered(now, b.clone(), vec!["/mem/1".into()]);
    let (t, actions, _) = drain(a);
    assert!(t.is_empty());
    assert_eq!(
        actions,
        vec![Action::Dial {
            peer: Some(b.clone()),
            addrs: vec!["/mem/1".into()]
        }]
    );
    a.handle_connected(now, b.clone(), Some(addr(1).ip()), true);
    let (t, _, _) = drain(a);
    assert_eq!(t.len(), 2, "{t:?}");
    let Transmit::Open {
        stream,
        peer,
        protocol,
        max_frame,
        ..
    } = &t[0]
    else {
        panic!("{t:?}")
    };
    assert_eq!(
        (peer, *protocol, *max_frame),
        (&b, Protocol::Hello, peering::MAX_HELLO_BYTES)
    );
    let frames = frames_of(&t);
    assert_eq!(frames[0].0, *stream);
    let Hello::Challenge(c) = hello(&frames[0].1) else {
        panic!()
    };
    assert_eq!(c.overlay, "test");
    assert_eq!(c.nonce.len(), peering::NONCE_LEN);
    assert_eq!(c.datagram, addr(0).to_string());
    assert_eq!(c.boot, net.node(0).boot());
}

/// A member whose keys are gone and whose handshake failed is tried again
/// when the backoff ends: exactly then, not a moment before, and without
/// waiting for something else to need the peer.
#[test]
fn a_failed_handshake_with_a_member_is_retried_when_its_backoff_ends() {
    let mut net = Net::new(2, 1);
    net.join_all();
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    let backoff = harness::config(0).timing.handshake_backoff;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    // B's keys are void (as after its restart): A challenges it again.
    for index in a.peers.get_mut(&b).unwrap().drop_sessions() {
        a.indices.remove(&index);
    }
    a.start_handshake(now, &b);
    let (t, _, _) = drain(a);
    let Some(Transmit::Open { stream, .. }) = t.first() else {
        panic!("{t:?}")
    };
    a.handle_stream_closed(now, *stream, Some("reset by peer".into()));
    let (_, _, events) = drain(a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed { .. })),
        "{events:?}"
    );
    let opens = |t: &[Transmit]| {
        t.iter()
            .filter(|t| {
                matches!(
                    t,
                    Transmit::Open {
                        protocol: Protocol::Hello,
                        ..
                    }
                )
            })
            .count()
    };
    a.handle_timeout(now + backoff - Duration::from_millis(1));
    assert_eq!(opens(&drain(a).0), 0, "not before the backoff ends");
    a.handle_timeout(now + backoff);
    assert_eq!(opens(&drain(a).0), 1, "a new challenge when it ends");
}

/// The side that was dialled waits for the dialler's challenge, and after
/// the grace challenges it itself (a dialler that never speaks first, such
/// as a peer that connected for the DHT only).
#[test]
fn an_inbound_peer_that_never_challenges_is_challenged_after_the_grace() {
    let mut net = Net::new(2, 1);
    let now = net.now;
    let grace = harness::config(1).timing.inbound_grace;
    let a = net.ids[0].clone();
    let b = net.node_mut(1);
    drain(b);
    b.handle_connected(now, a.clone(), Some(addr(0).ip()), false);
    assert!(drain(b).0.is_empty(), "the dialled side waits");
    b.handle_timeout(now + grace - Duration::from_millis(1));
    assert!(drain(b).0.is_empty());
    b.handle_timeout(now + grace);
    let (t, _, _) = drain(b);
    let frames = frames_of(&t);
    assert_eq!(frames.len(), 1, "{t:?}");
    assert!(matches!(hello(&frames[0].1), Hello::Challenge(_)));
}

/// Runs a handshake between nodes 0 (initiator) and 1 by hand, asserting
/// each step's exact output.
#[test]
fn admission_is_four_frames_and_both_sides_get_keys() {
    let mut net = Net::new(2, 2);
    let now = net.now;
    let (a_id, b_id) = (net.ids[0].clone(), net.ids[1].clone());
    let mut a = net.nodes[0].take().unwrap();
    let mut b = net.nodes[1].take().unwrap();
    drain(&mut a);
    drain(&mut b);
    a.handle_connected(now, b_id.clone(), Some(addr(1).ip()), true);
    let (t, _, _) = drain(&mut a);
    let (sa, challenge) = frames_of(&t).remove(0);

    // B accepts the stream: hello frames only, capped.
    let (sb, first, rest) = b
        .handle_stream_accepted(now, a_id.clone(), Protocol::Hello)
        .unwrap();
    assert_eq!(
        (first, rest),
        (peering::MAX_HELLO_BYTES, peering::MAX_HELLO_BYTES)
    );
    b.handle_frame(now, sb, &challenge);
    let (t, _, e) = drain(&mut b);
    assert!(e.is_empty());
    assert_eq!(t.len(), 1);
    let Hello::Response(r) = hello(&frames_of(&t)[0].1) else {
        panic!()
    };
    assert_eq!(r.proof.len(), 32);
    assert_eq!(r.boot, b.boot());
    let response = frames_of(&t).remove(0).1;

    // A checks the proof and confirms with its own.
    a.handle_frame(now, sa, &response);
    let (t, _, e) = drain(&mut a);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 1);
    let confirm = frames_of(&t).remove(0).1;
    assert!(matches!(hello(&confirm), Hello::Confirm { ref proof, .. } if proof.len() == 32));
    assert!(!a.peer(&b_id).unwrap().admitted, "not before Done");

    // B admits A: Done, finish, keys, and a join (A is new to B's SWIM).
    b.handle_frame(now, sb, &confirm);
    let (t, _, e) = drain(&mut b);
    assert_eq!(hello(&frames_of(&t)[0].1), Hello::Done);
    assert!(matches!(t[1], Transmit::Finish { stream } if stream == sb));
    let Transmit::Datagram { to, bytes, .. } = &t[2] else {
        panic!("{t:?}")
    };
    assert_eq!(*to, addr(0), "the announced datagram socket");
    assert!(bytes.len() <= datagram::MAX_DATAGRAM);
    assert_eq!(t.len(), 3);
    assert_eq!(e, vec![Event::Admitted { peer: a_id.clone() }]);
    assert!(b.peer(&a_id).unwrap().admitted);
    let join = bytes.clone();

    // A gets Done: admitted too; and B's join datagram opens under A's keys.
    a.handle_frame(now, sa, &hello_done());
    let (t, _, e) = drain(&mut a);
    assert!(matches!(t[0], Transmit::Finish { stream } if stream == sa));
    assert!(e.contains(&Event::Admitted { peer: b_id.clone() }));
    a.handle_datagram(now, addr(1), &join);
    assert_eq!(a.stats().drops, Drops::default());
    let (_, _, e) = drain(&mut a);
    assert!(
        e.iter().any(|e| matches!(e, Event::Member(swim::Event::MemberState { id, state: State::Alive, .. }) if *id == b_id)),
        "{e:?}"
    );
    // The same datagram again is a replay.
    a.handle_datagram(now, addr(1), &join);
    assert_eq!(a.stats().drops.replayed, 1);
}

fn hello_done() -> Vec<u8> {
    peering::encode(&Hello::Done)
}

#[test]
fn a_peer_with_another_network_key_is_refused_and_told_why() {
    let mut net = Net::with_config(2, 3, |i| {
        let mut c = harness::config(i);
        if i == 1 {
            c.policy.network_key = Some(b"other".to_vec());
        }
        c
    });
    net.discover(0, 1);
    net.run_for(Duration::from_secs(2));
    let refused =
        |e: &Event| matches!(e, Event::Refused { reason, .. } if reason.contains("network key"));
    let refused_by =
        |e: &Event| matches!(e, Event::RefusedBy { reason, .. } if reason.contains("network key"));
    assert!(net.events[0].iter().any(refused), "{:?}", net.events[0]);
    assert!(net.events[1].iter().any(refused_by), "{:?}", net.events[1]);
    assert!(!net.node(0).peer(&net.ids[1].clone()).unwrap().admitted);
    assert_eq!(net.node(0).stats().refusals, 1);
    assert_eq!(net.node(1).stats().refused_by, 1);
    // The refused peer's connection is closed once it heard why.
    assert!(net.actions[0].contains(&Action::Disconnect {
        peer: net.ids[1].clone()
    }));
}

#[test]
fn a_peer_without_the_key_is_refused_by_the_side_that_has_one() {
    let mut net = Net::with_config(2, 4, |i| {
        let mut c = harness::config(i);
        if i == 0 {
            c.policy.network_key = None;
        }
        c
    });
    net.discover(0, 1);
    net.run_for(Duration::from_secs(1));
    assert!(
        net.events[1].iter().any(
            |e| matches!(e, Event::Refused { reason, .. } if reason.contains("no network key"))
        ),
        "{:?}",
        net.events[1]
    );
    assert!(
        net.events[0]
            .iter()
            .any(|e| matches!(e, Event::RefusedBy { .. }))
    );
}

/// Sender and receiver classify each datagram on their own: over a run
/// without loss no class is received more often than it was sent, and the
/// session deltas that travel alone are counted as deltas at both ends.
#[test]
fn both_ends_count_every_datagram_in_the_same_class() {
    let mut net = Net::new(4, 6);
    net.join_all();
    net.run_for(Duration::from_secs(2));
    for at in 0..4 {
        open(&mut net, at);
    }
    net.run_for(Duration::from_secs(3));
    let total = |net: &Net, sent: bool| {
        let mut by: BTreeMap<Class, u64> = BTreeMap::new();
        for i in 0..4 {
            let s = net.node(i).stats();
            for (class, flow) in if sent { &s.sent } else { &s.received } {
                *by.entry(*class).or_default() += flow.packets;
            }
        }
        by
    };
    let (sent, received) = (total(&net, true), total(&net, false));
    assert!(
        received.get(&Class::Deltas).copied().unwrap_or(0) > 0,
        "{received:?}"
    );
    for (class, n) in &received {
        assert!(
            sent.get(class).copied().unwrap_or(0) >= *n,
            "{class:?}: sent {sent:?}, received {received:?}"
        );
    }
}

#[test]
fn datagrams_from_strangers_forgeries_and_garbage_are_dropped_and_counted() {
    let mut net = Net::new(2, 5);
    net.discover(1, 0);
    net.run_for(Duration::from_secs(1));
    assert!(net.converged());
    let now = net.now;
    let a = net.node_mut(0);
    let before = a.stats().drops;
    a.handle_datagram(now, addr(9), &[1, 2, 3]);
    a.handle_datagram(now, addr(9), &vec![0u8; datagram::MAX_DATAGRAM + 1]);
    a.handle_datagram(now, addr(9), &[0u8; 40]);
    let after = a.stats().drops;
    assert_eq!(after.bad_size, before.bad_size + 2);
    assert_eq!(after.unknown_key, before.unknown_key + 1);
}

#[test]
fn three_nodes_find_each_other_through_one_and_probe_over_datagrams() {
    let mut net = Net::new(3, 6);
    net.join_all();
    let took = net.converge(Duration::from_secs(5));
    assert!(took.is_some(), "not converged");
    let probes_before = net
        .node(0)
        .stats()
        .sent
        .get(&Class::Probe)
        .copied()
        .unwrap_or_default();
    net.run_for(Duration::from_secs(2));
    let probes = net.node(0).stats().sent[&Class::Probe];
    // Ten probes a second and the acks of the others' probes.
    let per_s = (probes.packets - probes_before.packets) as f64 / 2.0;
    assert!((15.0..=25.0).contains(&per_s), "{per_s} probe datagrams/s");
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                assert!(net.node(i).peer(&net.ids[j].clone()).unwrap().admitted);
            }
        }
    }
}

#[test]
fn a_crashed_node_is_declared_dead_by_every_survivor() {
    let mut net = Net::joined(4, 7);
    net.crash(3);
    net.run_for(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(net.state(i, 3), Some(State::Dead), "node {i}");
    }
}

/// Opens a session on node `at` and returns its record.
fn open(net: &mut Net, at: usize) -> Record {
    let now = net.now;
    let r = net
        .node_mut(at)
        .open(
            now,
            "rtp-audio".into(),
            "198.18.5.7:5004".into(),
            BTreeMap::new(),
        )
        .unwrap();
    net.after(at);
    r
}

#[test]
fn when_the_primary_crashes_its_first_live_backup_takes_over_once() {
    let mut net = Net::joined(4, 8);
    net.run_for(Duration::from_secs(2));
    let record = open(&mut net, 0);
    net.run_for(Duration::from_secs(1));
    let primary = net.ids.iter().position(|x| *x == record.primary).unwrap();
    assert!(net.hosting[primary].contains(&record.id));
    let first = net
        .ids
        .iter()
        .position(|x| *x == net.node(0).engine().map().get(&record.id).unwrap().backups[0])
        .unwrap();
    for i in 0..4 {
        net.actions[i].clear();
    }
    net.crash(primary);
    net.run_for(Duration::from_secs(4));
    let starts: Vec<usize> = (0..4)
        .filter(|&i| {
            net.actions[i]
                .iter()
                .any(|a| matches!(a, Action::Start(r) if r.id == record.id))
        })
        .collect();
    assert_eq!(starts, vec![first], "exactly the first backup starts it");
    let Some(Action::Start(r)) = net.actions[first]
        .iter()
        .find(|a| matches!(a, Action::Start(r) if r.id == record.id))
    else {
        unreachable!()
    };
    assert_eq!(r.epoch, record.epoch + 1);
    assert!(r.reason.starts_with("takeover"), "{}", r.reason);
    for i in (0..4).filter(|&i| i != primary) {
        let seen = net.node(i).engine().map().get(&record.id).unwrap();
        assert_eq!(seen.primary, net.ids[first], "node {i} agrees");
        // The claim came by gossip in time: nobody had to pull the map.
        assert_eq!(net.node(i).stats().claim_pulls, 0, "node {i}");
    }
}

/// A group with sessions, in which the primary of a session and all its
/// backups crash at once: the group, that primary and every crashed node.
fn crash_a_session_and_its_backups(seed: u64) -> (Net, usize, Vec<usize>) {
    let (mut net, victim, ids) = group_with_sessions(seed);
    let record = net
        .node(victim)
        .engine()
        .map()
        .get(&ids[0])
        .unwrap()
        .clone();
    let mut gone = vec![victim];
    for b in &record.backups {
        gone.push(net.ids.iter().position(|x| x == b).unwrap());
    }
    for &i in &gone {
        net.crash(i);
    }
    (net, victim, gone)
}

#[test]
fn a_node_still_naming_a_down_primary_pulls_the_map_a_bounded_number_of_times() {
    // The primary and every backup of the session go at once: no claim
    // can come, and the survivors' maps keep naming the dead primary.
    let (mut net, victim, gone) = crash_a_session_and_its_backups(31);
    let survivors: Vec<usize> = (0..6).filter(|i| !gone.contains(i)).collect();
    net.run_for(Duration::from_secs(6));
    for &i in &survivors {
        assert_eq!(net.state(i, victim), Some(State::Dead), "node {i}");
        let pulls = net.node(i).stats().claim_pulls;
        assert!(
            (1..=u64::from(CLAIM_CHECKS)).contains(&pulls),
            "node {i} pulled {pulls} times"
        );
    }
}

#[test]
fn the_claim_checks_go_on_when_a_newer_alive_rumour_revives_the_down_primary() {
    let (mut net, victim, gone) = crash_a_session_and_its_backups(31);
    let watcher = (0..6).find(|i| !gone.contains(i)).unwrap();
    let relay = (0..6)
        .find(|&i| !gone.contains(&i) && i != watcher)
        .unwrap();
    // Until the watcher declares the victim dead.
    let mut waited = Duration::ZERO;
    while net.state(watcher, victim) != Some(State::Dead) {
        net.run_for(Duration::from_millis(10));
        waited += Duration::from_millis(10);
        assert!(waited < Duration::from_secs(10), "never declared dead");
    }
    // Then an older piece of news it had missed arrives: the victim alive
    // at a newer incarnation (it had refuted some suspicion before it
    // crashed). The victim is a zombie in the watcher's view for a while.
    let incarnation = net
        .node(watcher)
        .swim()
        .member(&net.ids[victim])
        .unwrap()
        .incarnation
        + 1;
    let now = net.now;
    let from = net.ids[relay].clone();
    let update = wire::Update::Alive {
        id: net.ids[victim].clone(),
        incarnation,
        meta: net
            .node(watcher)
            .swim()
            .member(&net.ids[victim])
            .unwrap()
            .meta
            .clone(),
    };
    net.node_mut(watcher).deliver(
        now,
        from,
        wire::Decoded {
            message: wire::Message::Gossip(wire::Gossip {
                updates: vec![update],
            }),
            app: Vec::new(),
        },
    );
    net.after(watcher);
    assert_eq!(net.state(watcher, victim), Some(State::Alive));
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.state(watcher, victim), Some(State::Dead), "dead again");
    // Its sessions still named the victim: the first series of checks went
    // on pulling through the zombie spell, and a second one followed the
    // second death (before, the first series stopped at its first look,
    // the victim looking alive: only the second series pulled).
    let pulls = net.node(watcher).stats().claim_pulls;
    assert!(
        (u64::from(CLAIM_CHECKS) + 1..=2 * u64::from(CLAIM_CHECKS)).contains(&pulls),
        "pulled {pulls} times"
    );
}

#[test]
fn session_ids_come_from_the_seeded_rng() {
    let run = || {
        let mut net = Net::new(2, 9);
        net.join_all();
        net.converge(Duration::from_secs(5));
        open(&mut net, 1).id
    };
    assert_eq!(run(), run());
}

#[test]
fn a_map_sync_exchange_carries_only_what_differs() {
    let mut net = Net::joined(2, 10);
    // Node 1 writes sessions while cut off from node 0's datagrams.
    net.cuts.insert((1, 0));
    net.cuts.insert((0, 1));
    for _ in 0..3 {
        open(&mut net, 1);
    }
    net.cuts.clear();
    let now = net.now;
    // Node 0 hears node 1's root, different from its own: it starts a sync.
    let root = net.node(1).engine().map().digest().root();
    let (a_id, b_id) = (net.ids[0].clone(), net.ids[1].clone());
    let mut a = net.nodes[0].take().unwrap();
    let mut b = net.nodes[1].take().unwrap();
    drain(&mut a);
    drain(&mut b);
    a.on_root(now, &b_id, root);
    let (t, _, _) = drain(&mut a);
    let Transmit::Open {
        stream: sa,
        protocol: Protocol::Sync,
        ..
    } = t[0]
    else {
        panic!("{t:?}")
    };
    let frames = frames_of(&t);
    assert_eq!(frames.len(), 1);
    assert!(matches!(
        SyncMessage::decode(&frames[0].1),
        Ok(SyncMessage::Digest(_))
    ));
    let (sb, first, _) = b
        .handle_stream_accepted(now, a_id.clone(), Protocol::Sync)
        .unwrap();
    assert!(
        frames[0].1.len() <= first,
        "a digest fits the first-frame cap"
    );
    b.handle_frame(now, sb, &frames[0].1);
    let (t, _, _) = drain(&mut b);
    let Ok(SyncMessage::Versions(v)) = SyncMessage::decode(&frames_of(&t)[0].1) else {
        panic!()
    };
    assert_eq!(v.versions.len(), 3, "only the differing buckets' sessions");
    a.handle_frame(now, sa, &frames_of(&t)[0].1);
    let (t, _, _) = drain(&mut a);
    let out = frames_of(&t);
    assert_eq!(out.len(), 1, "nothing to send it, only what it wants");
    let Ok(SyncMessage::WantIds(want)) = SyncMessage::decode(&out[out.len() - 1].1) else {
        panic!()
    };
    assert_eq!(want.len(), 3);
    b.handle_frame(now, sb, &out[out.len() - 1].1);
    let (t, _, _) = drain(&mut b);
    let records = frames_of(&t);
    let Ok(SyncMessage::Records(deltas)) = SyncMessage::decode(&records[0].1) else {
        panic!()
    };
    assert_eq!(deltas.len(), 3);
    a.handle_frame(now, sa, &records[0].1);
    // The last session's chain may go on in a next frame: it is applied
    // when the responder ends the stream.
    assert_eq!(a.engine().map().len(), b.engine().map().len() - 1);
    a.handle_stream_closed(now, sa, None);
    assert_eq!(
        a.engine().map().digest().root(),
        b.engine().map().digest().root()
    );
}

/// A map in which node 0 (key 0) opened session `id` with `backups` at
/// `at_ms`, as in an earlier life of its process, and that version.
fn opened_earlier(
    id: &str,
    backups: Vec<NodeId>,
    at_ms: u64,
) -> (crate::map::Map, crate::map::Delta) {
    let mut old = crate::map::Map::new(crate::map::Config::default());
    let created = old
        .open(
            &harness::key(0),
            crate::map::NewSession {
                id: id.into(),
                service: "rtp-audio".into(),
                params: BTreeMap::new(),
                client: "198.18.5.7:5004".into(),
                location: "198.18.5.0/24".into(),
                backups,
            },
            at_ms,
        )
        .unwrap();
    (old, created)
}

#[test]
fn a_chain_split_over_two_sync_frames_is_acted_on_whole() {
    // Node 0 created a session in an earlier life (epoch 1, it primary,
    // node 1 its backup) and node 1 has since claimed it (epoch 2); node 0,
    // past its grace, never saw either. A sync brings it the chain, split
    // by the responder over two frames: creation, then claim.
    let mut net = Net::joined(3, 14);
    net.run_for(Duration::from_secs(3));
    let now_ms = net.node(0).unix_ms(net.now);
    let (mut old, created) = opened_earlier("split-chain", vec![net.ids[1].clone()], now_ms - 5000);
    let claimed = old
        .claim(
            &harness::key(1),
            "split-chain",
            "takeover: test",
            Vec::new(),
            now_ms - 1000,
        )
        .unwrap();
    let now = net.now;
    let b_id = net.ids[1].clone();
    let mut a = net.nodes[0].take().unwrap();
    let mut b = net.nodes[1].take().unwrap();
    b.engine
        .handle_deltas(now, now_ms, vec![created.clone(), claimed.clone()]);
    drain(&mut a);
    drain(&mut b);
    a.on_root(now, &b_id, b.engine().map().digest().root());
    let (t, _, _) = drain(&mut a);
    let (sa, digest) = frames_of(&t)[0].clone();
    let (sb, _, _) = b
        .handle_stream_accepted(now, net.ids[0].clone(), Protocol::Sync)
        .unwrap();
    b.handle_frame(now, sb, &digest);
    let (t, _, _) = drain(&mut b);
    a.handle_frame(now, sa, &frames_of(&t)[0].1);
    let (t, _, _) = drain(&mut a);
    b.handle_frame(now, sb, &frames_of(&t)[0].1);
    let (t, _, _) = drain(&mut b);
    let records = frames_of(&t);
    let Ok(SyncMessage::Records(whole)) = SyncMessage::decode(&records[0].1) else {
        panic!("{records:?}")
    };
    assert_eq!(whole, vec![created.clone(), claimed.clone()]);
    a.handle_frame(now, sa, &SyncMessage::Records(vec![created]).encode());
    let (_, actions, _) = drain(&mut a);
    assert!(actions.is_empty(), "acted on half a chain: {actions:?}");
    assert!(a.engine().map().get("split-chain").is_none());
    a.handle_frame(now, sa, &SyncMessage::Records(vec![claimed]).encode());
    a.handle_stream_closed(now, sa, None);
    let (_, actions, _) = drain(&mut a);
    assert!(actions.is_empty(), "node 0 serves nothing: {actions:?}");
    let record = a.engine().map().get("split-chain").unwrap();
    assert_eq!((record.epoch, &record.primary), (2, &b_id));
    assert!(a.engine().hosting().all(|id| id != "split-chain"));
}

/// A session node 0 inherited (a version it wrote before its process
/// started) is served only once it has compared maps with each live
/// backup the version lists: the node opens a map sync with each, beyond
/// its sync cap, and the engine serves the session when they have ended
/// (here: failed, which counts, as an unreachable backup cannot serve it).
#[test]
fn an_inherited_session_waits_for_map_syncs_with_its_live_backups() {
    let mut net = Net::joined(3, 15);
    net.run_for(Duration::from_secs(3));
    let now = net.now;
    let now_ms = net.node(0).unix_ms(now);
    let backups = vec![net.ids[1].clone(), net.ids[2].clone()];
    let (_, created) = opened_earlier("inherited", backups.clone(), now_ms - 60_000);
    let a = net.node_mut(0);
    a.config.timing.max_syncs = 0;
    drain(a);
    a.engine.handle_deltas(now, now_ms, vec![created]);
    a.pump(now);
    let (t, actions, _) = drain(a);
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Start(_))),
        "served before comparing: {actions:?}"
    );
    let synced: BTreeMap<NodeId, StreamId> = t
        .iter()
        .filter_map(|x| match x {
            Transmit::Open {
                stream,
                peer,
                protocol: Protocol::Sync,
                ..
            } => Some((peer.clone(), *stream)),
            _ => None,
        })
        .collect();
    assert_eq!(
        synced
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        backups.iter().cloned().collect(),
        "a sync with each live backup, past the cap of 0"
    );
    let synced: Vec<StreamId> = synced.into_values().collect();
    a.handle_stream_closed(now, synced[0], Some("unreachable".into()));
    let (_, actions, _) = drain(a);
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Start(_))),
        "served with a backup still to compare: {actions:?}"
    );
    a.handle_stream_closed(now, synced[1], Some("unreachable".into()));
    let (_, actions, _) = drain(a);
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Start(r) if r.id == "inherited")),
        "both compared: served: {actions:?}"
    );
}

#[test]
fn a_warm_started_group_is_converged_keyed_and_shares_its_maps() {
    let mut net = Net::new(12, 11);
    let r = open(&mut net, 3);
    net.warm();
    assert!(net.converged());
    for i in 0..12 {
        assert!(net.node(i).engine().map().get(&r.id).is_some(), "node {i}");
        for j in 0..12 {
            if i != j {
                assert!(net.node(i).peer(&net.ids[j].clone()).unwrap().admitted);
            }
        }
    }
    // No handshake runs: the keys are in place.
    let before = net.node(0).stats().handshakes;
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.node(0).stats().handshakes, before);
    assert!(net.converged());
    assert_eq!(net.node(5).stats().drops, Drops::default());
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let run = |seed| {
        let mut net = Net::new(5, seed);
        net.join_all();
        net.run_for(Duration::from_secs(3));
        open(&mut net, 2);
        net.crash(4);
        net.run_for(Duration::from_secs(3));
        net.trace_hash
    };
    assert_eq!(run(12), run(12));
    assert_ne!(run(12), run(13));
}

/// Runs `net` for `d` in 10 ms steps; answers, per session, the longest
/// stretch during which two nodes or more hosted it.
fn longest_double_serving(net: &mut Net, d: Duration) -> BTreeMap<String, Duration> {
    let mut since: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut longest: BTreeMap<String, Duration> = BTreeMap::new();
    let end = net.now + d;
    while net.now < end {
        net.run_for(Duration::from_millis(10));
        let mut hosts: BTreeMap<String, usize> = BTreeMap::new();
        for set in &net.hosting {
            for id in set {
                *hosts.entry(id.clone()).or_default() += 1;
            }
        }
        for (id, n) in &hosts {
            if *n > 1 {
                let start = *since.entry(id.clone()).or_insert(net.now);
                let l = longest.entry(id.clone()).or_default();
                *l = (*l).max(net.now - start);
            } else {
                since.remove(id);
            }
        }
        since.retain(|id, _| hosts.get(id).is_some_and(|n| *n > 1));
    }
    longest
}

/// A warm group of 6 with sessions; answers the node that is primary of
/// the most of them, and their ids.
fn group_with_sessions(seed: u64) -> (Net, usize, Vec<String>) {
    let mut net = Net::new(6, seed);
    net.warm();
    net.run_for(Duration::from_secs(2));
    for k in 0..12 {
        open(&mut net, k % 6);
    }
    net.run_for(Duration::from_secs(2));
    let victim = (0..6)
        .max_by_key(|&i| net.hosting[i].len())
        .expect("six nodes");
    let ids: Vec<String> = net.hosting[victim].iter().cloned().collect();
    assert!(!ids.is_empty());
    (net, victim, ids)
}

fn hosts_of(net: &Net, id: &str) -> Vec<usize> {
    (0..net.nodes.len())
        .filter(|&i| net.hosting[i].contains(id))
        .collect()
}

#[test]
fn a_node_that_cannot_hear_fences_itself_and_declares_nobody_dead() {
    let (mut net, victim, ids) = group_with_sessions(21);
    for j in 0..6 {
        if j != victim {
            net.cuts.insert((j, victim));
        }
    }
    let double = longest_double_serving(&mut net, Duration::from_secs(5));
    assert!(net.hosting[victim].is_empty(), "it stopped serving");
    assert!(
        net.events[victim].contains(&Event::Fenced { fenced: true }),
        "{:?}",
        net.events[victim].iter().rev().take(5).collect::<Vec<_>>()
    );
    for j in (0..6).filter(|&j| j != victim) {
        assert_ne!(
            net.state(victim, j),
            Some(State::Dead),
            "it declared {j} dead"
        );
    }
    for id in &ids {
        assert_eq!(hosts_of(&net, id).len(), 1, "session {id} has one host");
        let d = double.get(id).copied().unwrap_or_default();
        assert!(
            d <= Duration::from_millis(1500),
            "{id} served twice for {d:?}"
        );
    }
    net.cuts.clear();
    net.run_for(Duration::from_secs(6));
    assert!(net.events[victim].contains(&Event::Fenced { fenced: false }));
    for id in &ids {
        assert_eq!(
            hosts_of(&net, id).len(),
            1,
            "after the heal, {id} has one host"
        );
    }
}

#[test]
fn a_node_that_cannot_send_fences_itself_within_the_bound() {
    let (mut net, victim, ids) = group_with_sessions(22);
    for j in 0..6 {
        if j != victim {
            net.cuts.insert((victim, j));
        }
    }
    let double = longest_double_serving(&mut net, Duration::from_secs(5));
    assert!(net.hosting[victim].is_empty(), "it stopped serving");
    for id in &ids {
        assert_eq!(hosts_of(&net, id).len(), 1, "session {id} has one host");
        let d = double.get(id).copied().unwrap_or_default();
        assert!(
            d <= Duration::from_millis(1500),
            "{id} served twice for {d:?}"
        );
    }
    net.cuts.clear();
    net.run_for(Duration::from_secs(8));
    for id in &ids {
        assert_eq!(
            hosts_of(&net, id).len(),
            1,
            "after the heal, {id} has one host"
        );
    }
    assert!(net.converged());
}

#[test]
fn two_processes_with_one_identity_are_noticed_by_both_and_by_their_peers() {
    // Node 3 runs with node 2's key: a copied data directory.
    let mut net = Net::with_keys(4, 23, harness::config, |i| if i == 3 { 2 } else { i });
    net.join_all();
    net.run_for(Duration::from_secs(20));
    let twin = net.ids[2].clone();
    let said = |i: usize| {
        net.events[i]
            .iter()
            .any(|e| matches!(e, Event::DuplicateIdentity { peer, .. } if *peer == twin))
    };
    assert!(said(2) && said(3), "both processes say so");
    assert!(said(0) || said(1), "and a peer does");
    // A plain restart is not mistaken for a twin.
    let mut net = Net::new(4, 24);
    net.join_all();
    net.run_for(Duration::from_secs(3));
    net.crash(2);
    net.run_for(Duration::from_secs(1));
    net.restart(2);
    net.discover(2, 0);
    net.run_for(Duration::from_secs(8));
    for i in 0..4 {
        assert!(
            !net.events[i]
                .iter()
                .any(|e| matches!(e, Event::DuplicateIdentity { .. })),
            "node {i}: {:?}",
            net.events[i]
        );
    }
}

/// Four processes that share one identity and take turns are still
/// noticed: a peer remembers the last four boot numbers it was told.
#[test]
fn a_boot_number_among_the_last_four_that_comes_back_names_a_twin() {
    let mut peer = Peer::default();
    for boot in 1..=4 {
        assert_eq!(peer.note_boot(boot), None, "boot {boot} is new");
    }
    assert!(peer.note_boot(1).is_some(), "boot 1 came back");
    assert!(peer.twinned);
    assert_eq!(peer.twins_of(1), vec![2, 3, 4]);
    // A boot number five boots old is forgotten: a plain restart.
    let mut peer = Peer::default();
    for boot in 1..=5 {
        assert_eq!(peer.note_boot(boot), None);
    }
    assert_eq!(peer.note_boot(1), None);
    assert!(!peer.twinned);
}

/// The rule in `watch_for_impostor`, one announcement at a time: another
/// boot is a twin once it is heard raising its incarnation (a replayed or
/// stale announcement is not), and a third boot replaces the one watched.
#[test]
fn a_twin_is_named_once_it_raises_its_incarnation_and_a_new_boot_is_watched_instead() {
    let mut net = Net::new(1, 31);
    let node = net.node_mut(0);
    let me = node.id().clone();
    let announce = |boot: u64, incarnation: u32| {
        let meta = NodeMeta {
            boot,
            ..node.meta().clone()
        };
        Message::Gossip(wire::Gossip {
            updates: vec![wire::Update::Alive {
                id: me.clone(),
                incarnation,
                meta: meta.encode(),
            }],
        })
    };
    let (own, a, b) = (node.boot(), 0xa, 0xb);
    let twins = |node: &mut harness::TestNode| {
        drain(node)
            .2
            .into_iter()
            .filter(|e| matches!(e, Event::DuplicateIdentity { .. }))
            .count()
    };
    let (first_a, again_a, first_b, up_b, mine) = (
        announce(a, 5),
        announce(a, 5),
        announce(b, 3),
        announce(b, 4),
        announce(own, 9),
    );
    node.watch_for_impostor(&mine);
    node.watch_for_impostor(&first_a);
    node.watch_for_impostor(&again_a);
    assert_eq!(twins(node), 0, "its own boot, a first sighting, a repeat");
    // Boot b is watched from now on: its own raise names it.
    node.watch_for_impostor(&first_b);
    assert_eq!(twins(node), 0);
    node.watch_for_impostor(&up_b);
    assert_eq!(twins(node), 1);
    assert_eq!(node.impostor, Some((b, 4)));
}

#[test]
fn members_with_other_service_templates_are_named_once_and_again_after_a_reload() {
    // Nodes 0 and 1 share a service configuration; node 2's differs.
    let digest = |i: usize| if i == 2 { 0xbbbb } else { 0xaaaa };
    let mut net = Net::with_config(3, 31, |i| Config {
        services: digest(i),
        ..harness::config(i)
    });
    net.join_all();
    assert!(net.converge(Duration::from_secs(5)).is_some());
    net.run_for(Duration::from_secs(5));
    let told = |net: &Net, i: usize| -> Vec<(usize, u64, u64)> {
        net.events[i]
            .iter()
            .filter_map(|e| match e {
                Event::ServicesDiffer { peer, ours, theirs } => Some((
                    net.ids.iter().position(|id| id == peer).unwrap(),
                    *ours,
                    *theirs,
                )),
                _ => None,
            })
            .collect()
    };
    // Each side hears of the other once, not on every announcement.
    assert_eq!(told(&net, 0), [(2, 0xaaaa, 0xbbbb)]);
    assert_eq!(told(&net, 1), [(2, 0xaaaa, 0xbbbb)]);
    let mut first = told(&net, 2);
    first.sort();
    assert_eq!(first, [(0, 0xbbbb, 0xaaaa), (1, 0xbbbb, 0xaaaa)]);
    // Node 2 reloads the others' templates: nobody is told anything more;
    // node 0 then reloads other ones, and is told about both peers.
    let now = net.now;
    net.node_mut(2).handle_services_changed(now, 0xaaaa);
    net.after(2);
    net.run_for(Duration::from_secs(5));
    assert_eq!(told(&net, 1).len(), 1);
    let now = net.now;
    net.node_mut(0).handle_services_changed(now, 0xcccc);
    net.after(0);
    net.run_for(Duration::from_secs(5));
    let mut again = told(&net, 0)[1..].to_vec();
    again.sort();
    assert_eq!(again, [(1, 0xcccc, 0xaaaa), (2, 0xcccc, 0xaaaa)]);
    assert_eq!(told(&net, 1)[1..], [(0, 0xaaaa, 0xcccc)]);
    assert_eq!(told(&net, 2)[2..], [(0, 0xaaaa, 0xcccc)]);
}

#[test]
fn any_node_takes_a_report_or_a_close_and_the_primary_carries_it_out() {
    let mut net = Net::new(4, 25);
    net.warm();
    net.run_for(Duration::from_secs(1));
    let r = open(&mut net, 0);
    net.run_for(Duration::from_secs(1));
    let primary = net.ids.iter().position(|x| *x == r.primary).unwrap();
    let other = (0..4).find(|&i| i != primary).unwrap();
    // Reports through another node keep the stream going past the first
    // consent window.
    for _ in 0..4 {
        net.run_for(Duration::from_secs(5));
        let now = net.now;
        let report = crate::sessions::Report {
            loss: 0.0,
            jitter: Duration::from_millis(1),
            rtt: Duration::from_millis(1),
            packets: 0,
        };
        let went = net.node_mut(other).report(now, &r.id, report).unwrap();
        assert_eq!(went, Some(r.primary.clone()));
        net.after(other);
    }
    net.run_for(Duration::from_millis(100));
    assert!(
        !net.actions[primary]
            .iter()
            .any(|a| matches!(a, Action::Pause { id } if *id == r.id)),
        "consent came through the other node"
    );
    let now = net.now;
    let closed = net.node_mut(other).close(now, &r.id).unwrap();
    assert_eq!(
        closed,
        Closed::Forwarded {
            primary: r.primary.clone()
        }
    );
    net.after(other);
    net.run_for(Duration::from_secs(1));
    for i in 0..4 {
        let seen = net.node(i).engine().map().get(&r.id).unwrap();
        assert_eq!(seen.state, crate::session::SessionState::Closed, "node {i}");
    }
    assert!(net.hosting[primary].is_empty());
}

#[test]
fn a_quiet_group_of_sixty_never_handshakes_again() {
    // Each member is probed once per round of N: pairs hear from each
    // other every few seconds only, which must not look like void keys.
    let mut net = Net::new(60, 26);
    net.warm();
    let before: u64 = (0..60).map(|i| net.node(i).stats().handshakes).sum();
    net.run_for(Duration::from_secs(20));
    let after: u64 = (0..60).map(|i| net.node(i).stats().handshakes).sum();
    assert_eq!(after, before, "no re-handshake in a healthy group");
    assert!(net.converged());
}

#[test]
fn streams_go_only_to_one_clients_unicast_address() {
    let policy = ClientPolicy::default();
    for bad in [
        "0.0.0.0:5004",
        "224.0.0.251:5353",
        "239.1.2.3:5004",
        "255.255.255.255:5004",
        "198.18.5.255:5004",
        "169.254.1.1:5004",
        "240.0.0.1:5004",
        "192.0.2.1:5004",
        "[::]:5004",
        "[ff02::1]:5004",
        "[fe80::1]:5004",
        "[::ffff:224.0.0.1]:5004",
        "198.18.5.7:0",
    ] {
        let addr: SocketAddr = bad.parse().unwrap();
        assert!(policy.check(&addr).is_err(), "{bad} accepted");
    }
    for good in ["198.18.5.7:5004", "127.0.0.1:5004", "[2001:db9::1]:5004"] {
        assert_eq!(policy.check(&good.parse().unwrap()), Ok(()), "{good}");
    }
    let only = ClientPolicy {
        allowed: vec![("198.18.2.0".parse().unwrap(), 24)],
        ..ClientPolicy::default()
    };
    assert!(only.check(&"198.18.2.9:5004".parse().unwrap()).is_ok());
    let err = only.check(&"198.18.3.9:5004".parse().unwrap()).unwrap_err();
    assert!(err.contains("allowed_clients"), "{err}");
}

#[test]
fn one_client_address_gets_a_bounded_number_of_sessions() {
    let mut net = Net::with_config(2, 27, |i| {
        let mut c = harness::config(i);
        c.clients.max_per_ip = 3;
        c
    });
    net.join_all();
    net.converge(Duration::from_secs(5));
    let now = net.now;
    let node = net.node_mut(0);
    for port in 0..3 {
        node.open(
            now,
            "rtp-audio".into(),
            format!("198.18.5.7:{}", 6000 + port),
            BTreeMap::new(),
        )
        .unwrap();
    }
    let err = node
        .open(
            now,
            "rtp-audio".into(),
            "198.18.5.7:7000".into(),
            BTreeMap::new(),
        )
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Unavailable(ref m) if m.contains("198.18.5.7")),
        "{err:?}"
    );
    assert!(
        node.open(
            now,
            "rtp-audio".into(),
            "198.18.5.8:7000".into(),
            BTreeMap::new()
        )
        .is_ok()
    );
    let err = node
        .open(
            now,
            "rtp-audio".into(),
            "224.0.0.1:7000".into(),
            BTreeMap::new(),
        )
        .unwrap_err();
    assert!(matches!(err, CommandError::Invalid(ref m) if m.contains("multicast")));
}

#[test]
fn warm_tables_and_maps_spread_sessions_opened_in_a_running_group_quietly() {
    let mut net = Net::new(6, 14);
    net.warm();
    let a = open(&mut net, 2);
    let b = open(&mut net, 4);
    let now = net.now;
    let announced = net.node(2).swim().incarnation();
    assert!(announced > 0, "hosting a session announces a new load");
    let mut nodes: Vec<&mut harness::TestNode> = net.nodes.iter_mut().flatten().collect();
    warm_tables(&mut nodes, now);
    warm_maps(&mut nodes, now);
    for i in (0..6).filter(|&i| i != 2) {
        let seen = net.node(i).swim().member(&net.ids[2].clone()).unwrap();
        assert_eq!(seen.incarnation, announced, "node {i}");
    }
    let queued = |net: &Net| -> Vec<usize> {
        (0..6)
            .map(|i| net.node(i).swim().queued_updates())
            .collect()
    };
    let before = queued(&net);
    // The announcements pushed when the sessions started arrive now: old
    // news, spread no further.
    net.run_for(Duration::from_millis(2));
    let after = queued(&net);
    for i in [0, 1, 3, 5] {
        assert!(after[i] <= before[i], "node {i}: {before:?} -> {after:?}");
    }
    for i in 0..6 {
        net.after(i);
    }
    for i in 0..6 {
        let map = net.node(i).engine().map();
        assert_eq!(map.get(&a.id), Some(&a), "node {i}");
        assert_eq!(map.get(&b.id), Some(&b), "node {i}");
        assert_eq!(map.stats().rejected_unlinked, 0, "node {i}");
    }
    let hosts = |id: &str| (0..6).filter(|&i| net.hosting[i].contains(id)).count();
    assert_eq!((hosts(&a.id), hosts(&b.id)), (1, 1));
}

mod bounded {
    //! What remote input can make a node remember stays bounded, however
    //! many fresh ids it comes from, and idle strangers make room for new
    //! peers.
    use proptest::prelude::*;

    use super::harness::{Net, key};
    use super::*;
    use crate::node::streams::Protocol;

    /// A peer id nobody runs: what a LAN attacker announces by mDNS.
    fn fresh(i: u64) -> NodeId {
        key(100_000 + i as usize).id().clone()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn fresh_ids_never_grow_the_peer_table_past_its_cap(
            steps in proptest::collection::vec((0u8..4, 0u16..400), 1..24),
        ) {
            let mut net = Net::new(2, 31);
            net.join_all();
            net.converge(Duration::from_secs(5));
            let mut next = 0u64;
            for (kind, n) in steps {
                let now = net.now;
                let node = net.node_mut(0);
                for _ in 0..n {
                    next += 1;
                    let id = fresh(next);
                    match kind {
                        0 => node.handle_discovered(now, id, vec!["/ip4/198.18.9.9/udp/1/quic-v1".into()]),
                        1 => node.handle_connected(now, id, None, false),
                        2 => {
                            if let Some((stream, _, _)) = node.handle_stream_accepted(now, id, Protocol::Hello) {
                                node.handle_frame(now, stream, b"not a hello");
                            }
                        }
                        _ => {
                            let from = SocketAddr::from(([198, 18, 7, (next % 250) as u8], 7702));
                            node.handle_datagram(now, from, &[0u8; 64]);
                        }
                    }
                    while node.poll_transmit().is_some() {}
                    while node.poll_action().is_some() {}
                    while node.poll_event().is_some() {}
                }
                prop_assert!(node.tracked_peers() <= MAX_STRANGERS + 2);
                net.run_for(Duration::from_secs(3));
            }
            // A full table keeps a newcomer out while its strangers are
            // fresh, and makes room once they idled past their TTL.
            let now = net.now;
            let node = net.node_mut(0);
            for stranger in 0..MAX_STRANGERS as u64 {
                node.handle_discovered(now, fresh(1_000_000 + stranger), vec![]);
            }
            prop_assert!(node.tracked_peers() <= MAX_STRANGERS + 2);
            while node.poll_action().is_some() {}
            let newcomer = key(7).id().clone();
            let addrs = vec!["/ip4/198.18.0.8/udp/7701/quic-v1".to_string()];
            node.handle_discovered(now, newcomer.clone(), addrs.clone());
            let dialled = std::iter::from_fn(|| node.poll_action())
                .any(|a| matches!(a, Action::Dial { peer: Some(p), .. } if p == newcomer));
            prop_assert!(!dialled, "the table of strangers is not capped");
            net.run_for(STRANGER_TTL);
            let now = net.now;
            let node = net.node_mut(0);
            node.handle_discovered(now, newcomer.clone(), addrs);
            let dialled = std::iter::from_fn(|| node.poll_action())
                .any(|a| matches!(a, Action::Dial { peer: Some(p), .. } if p == newcomer));
            prop_assert!(dialled, "a full table of idle strangers keeps a real peer out");
        }
    }
}

#[test]
fn a_restarted_node_rejoins_without_suspecting_healthy_members() {
    // A restarted node has keys with nobody: its first probes wait for
    // handshakes (SWIM times them from their release), and its members
    // agree new keys with it over a window, not all at once. (The
    // mechanism itself: swim's `a_held_ping_is_timed_from_its_release`.)
    let n = 40;
    let r = n - 1;
    let mut net = Net::new(n, 12);
    net.latency = Duration::from_millis(20);
    net.warm();
    net.run_for(Duration::from_secs(2));
    assert!(net.converged());
    net.crash(r);
    net.run_for(Duration::from_millis(500));
    net.restart(r);
    net.discover(r, 0);
    for events in &mut net.events {
        events.clear();
    }
    net.run_for(Duration::from_secs(8));
    assert!(net.converged(), "the restarted node is back in every view");
    let healthy: Vec<NodeId> = net.ids[..r].to_vec();
    let suspected: Vec<&NodeId> = net.events[r]
        .iter()
        .filter_map(|e| match e {
            Event::Member(swim::Event::MemberState {
                id,
                state: State::Suspect,
                ..
            }) if healthy.contains(id) => Some(id),
            _ => None,
        })
        .collect();
    assert!(
        suspected.is_empty(),
        "suspected healthy members: {suspected:?}"
    );
    let probes = net.node(r).swim().stats().probes;
    assert!(probes > 20, "it probed ({probes} probes)");
}

/// A node restarted with an empty map learns the map's root in the reply
/// to its join and syncs at once, instead of at its first periodic
/// membership sync (every 5 s, jittered to at least 3.75 s): its
/// sessions' takeovers and resumptions depend on what it holds.
#[test]
fn a_node_restarted_empty_pulls_the_map_from_its_first_peer_at_once() {
    let mut net = Net::new(5, 21);
    net.warm();
    for at in 0..3 {
        open(&mut net, at);
    }
    net.run_for(Duration::from_secs(2));
    let held = |net: &Net, i: usize| net.node(i).engine().map().len();
    assert_eq!(held(&net, 0), 3);
    let r = 4;
    net.crash(r);
    net.run_for(Duration::from_millis(200));
    net.restart(r);
    assert_eq!(held(&net, r), 0);
    net.discover(r, 0);
    net.run_for(Duration::from_millis(1500));
    assert_eq!(
        held(&net, r),
        3,
        "the restarted node holds {} of the 3 sessions 1.5 s after it started",
        held(&net, r)
    );
    assert!(net.node(r).stats().syncs >= 1);
}

/// Members known before any keys are agreed with them (as after an
/// anti-entropy exchange) are probed before their handshakes end, which
/// are throttled here to one at a time: their pings wait for the keys,
/// and SWIM times each from when it leaves. Nobody goes indirect, nobody
/// is suspected, and every round trip measured is the network's, not the
/// handshake's.
#[test]
fn pings_held_for_keys_are_timed_from_their_release() {
    let n = 5;
    let mut net = Net::with_config(n, 61, |i| {
        let mut config = harness::config(i);
        config.timing.max_handshakes = 1;
        config.timing.handshake_backoff = Duration::from_millis(200);
        config
    });
    net.latency = Duration::from_millis(2);
    let now = net.now;
    let mut nodes: Vec<&mut harness::TestNode> = net.nodes.iter_mut().flatten().collect();
    warm_tables(&mut nodes, now);
    for i in 0..n {
        net.after(i);
    }
    // Some pings do wait for keys.
    let mut held = 0;
    for _ in 0..100 {
        net.run_for(Duration::from_millis(10));
        held += (0..n)
            .flat_map(|i| net.node(i).peers.values())
            .flat_map(|p| &p.pending)
            .filter(|m| m.plain.first().map(|h| h & 0x0f) == Some(wire::KIND_PING))
            .count();
    }
    assert!(held > 0, "no ping waited for keys");
    net.run_for(Duration::from_secs(2));
    assert!(net.converged());
    let network_rtt = net.latency * 2;
    for i in 0..n {
        let stats = net.node(i).swim().stats();
        assert!(stats.probes > 20, "node {i} probed: {stats:?}");
        assert_eq!(stats.indirect_probes, 0, "node {i}: {stats:?}");
        assert_eq!(stats.suspicions, 0, "node {i}: {stats:?}");
        for e in &net.events[i] {
            if let Event::Member(swim::Event::ProbeRtt { id, rtt }) = e {
                assert!(*rtt <= network_rtt, "node {i} measured {rtt:?} to {id}");
            }
        }
    }
}

/// The tags node `j` announced, as node `i` holds them.
fn tags_seen(net: &Net, i: usize, j: usize) -> Option<crate::meta::Tags> {
    let member = net.node(i).swim().member(&net.ids[j].clone())?;
    Some(NodeMeta::decode(&member.meta).ok()?.tags)
}

#[test]
fn tags_travel_with_the_metadata_and_a_change_is_announced() {
    let region = |i: usize| if i == 0 { "eu" } else { "us" };
    let mut net = Net::with_config(3, 41, |i| Config {
        tags: [("region".to_owned(), region(i).to_owned())].into(),
        ..harness::config(i)
    });
    net.join_all();
    assert!(net.converge(Duration::from_secs(10)).is_some());
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let tags = tags_seen(&net, i, j).expect("a member with metadata");
            assert_eq!(tags["region"], region(j), "node {i} about {j}");
        }
    }
    let now = net.now;
    let before = net.node(0).swim().incarnation();
    let retag: crate::meta::Tags = [("region".to_owned(), "ap".to_owned())].into();
    net.node_mut(0).set_tags(now, retag.clone()).unwrap();
    net.after(0);
    assert_eq!(net.node(0).meta().tags, retag);
    assert!(net.node(0).swim().incarnation() > before);
    net.run_for(Duration::from_secs(2));
    for i in 1..3 {
        assert_eq!(tags_seen(&net, i, 0), Some(retag.clone()), "node {i}");
    }
    // Tags beyond the caps are refused; nothing changes.
    let at = net.node(0).swim().incarnation();
    let bad: crate::meta::Tags = [("bad key".to_owned(), "x".to_owned())].into();
    let now = net.now;
    assert!(net.node_mut(0).set_tags(now, bad).is_err());
    assert_eq!(net.node(0).swim().incarnation(), at);
    assert_eq!(net.node(0).meta().tags, retag);
    // A library caller's bad tags at start are left out, not announced.
    let node = Node::new(
        Config {
            tags: [("region".to_owned(), "a b".to_owned())].into(),
            ..harness::config(5)
        },
        harness::key(5),
        rand::rngs::SmallRng::seed_from_u64(5),
        net.now,
        1_700_000_000_000,
    );
    assert!(node.meta().tags.is_empty());
}

#[test]
fn a_reconfigured_allowlist_refuses_a_member_it_leaves_out_and_policy_values_change() {
    let mut net = Net::joined(3, 21);
    let now = net.now;
    let (b, c) = (net.ids[1].clone(), net.ids[2].clone());
    let mut update = Reconfigure {
        allowlist: Some([b.clone()].into()),
        max_members: 8,
        clients: ClientPolicy::default(),
        placement: crate::policy::Config {
            backups: 1,
            ..net.node(0).config().sessions.policy.clone()
        },
        standby: sessions::Standby::Warm,
        max_lifetime: Some(Duration::from_secs(600)),
        tags: [("region".to_owned(), "eu".to_owned())].into(),
        services: 0x77,
    };
    let a = net.node_mut(0);
    drain(a);
    let refusals = a.stats().refusals;
    let refused = a.handle_reconfigure(now, update.clone());
    assert_eq!(refused, vec![c.clone()]);
    assert_eq!(a.stats().refusals, refusals + 1, "counted");
    let (_, actions, events) = drain(a);
    assert!(
        actions.contains(&Action::Disconnect { peer: c.clone() }),
        "{actions:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Refused { peer, .. } if *peer == c)),
        "{events:?}"
    );
    let config = a.config();
    assert_eq!(config.policy.max_members, 8);
    assert_eq!(config.sessions.policy.backups, 1);
    assert_eq!(config.sessions.standby, sessions::Standby::Warm);
    assert_eq!(config.sessions.max_lifetime, Some(Duration::from_secs(600)));
    assert!(!a.peer(&c).unwrap().admitted);
    assert!(a.peer(&c).unwrap().refused.is_some());
    assert!(a.peer(&b).unwrap().admitted);
    // As if a had started with this allowlist: c gets no keys with a
    // again (b, which admits it, may still vouch for it in SWIM).
    net.run_for(Duration::from_secs(5));
    assert!(!net.node(0).peer(&c).unwrap().admitted);
    assert!(net.node(0).peer(&b).unwrap().admitted);
    assert_eq!(net.state(0, 1), Some(State::Alive));
    // The new tags and service digest are announced.
    assert_eq!(net.node(0).meta().services, 0x77);
    let seen = tags_seen(&net, 1, 0).expect("b holds a's metadata");
    assert_eq!(seen["region"], "eu");
    // Named again: the refusal is forgotten.
    update.allowlist = None;
    let now = net.now;
    let a = net.node_mut(0);
    assert!(a.handle_reconfigure(now, update).is_empty());
    assert!(a.peer(&c).is_none_or(|p| p.refused.is_none()));
}

/// A new allowlist also drops a peer that is merely connected (it has no
/// keys and no handshake yet: a dialled side waiting for the challenge),
/// and map syncs go to admitted members only.
#[test]
fn a_new_allowlist_drops_a_connected_stranger_and_syncs_need_admission() {
    let mut net = Net::joined(2, 22);
    let now = net.now;
    let b = net.ids[1].clone();
    let stranger = NodeId::synthetic(77);
    let a = net.node_mut(0);
    assert!(!a.start_sync(now, &stranger), "not admitted: no sync");
    assert!(a.start_sync(now, &b), "a member: a sync");
    a.handle_connected(now, stranger.clone(), Some(addr(7).ip()), false);
    drain(a);
    let update = Reconfigure {
        allowlist: Some([b.clone()].into()),
        max_members: 8,
        clients: ClientPolicy::default(),
        placement: a.config().sessions.policy.clone(),
        standby: a.config().sessions.standby,
        max_lifetime: None,
        tags: Default::default(),
        services: 0,
    };
    assert_eq!(a.handle_reconfigure(now, update), vec![stranger.clone()]);
    let (_, actions, _) = drain(a);
    assert!(
        actions.contains(&Action::Disconnect { peer: stranger }),
        "{actions:?}"
    );
}

/// A delta citing history a node lacks (an epoch opened while it was cut
/// off) makes it pull the map from the carrier if the history has not come
/// [`HISTORY_CHECK`] later; at most once per [`UNLINKED_PULL_EVERY`] per
/// carrier; not at all when the predecessor, overtaken on the way, arrives
/// in time.
#[test]
fn a_delta_citing_unknown_history_pulls_the_map_from_its_carrier() {
    let mut net = Net::new(4, 41);
    net.join_all();
    assert!(net.converge(Duration::from_secs(20)).is_some());
    let (k0, k1) = (harness::key(0), harness::key(1));
    let ids = net.ids.clone();
    let now_ms = net.node(2).unix_ms(net.now);
    // Two sessions' histories, as node 1 and then node 0 wrote them
    // elsewhere: node 1 opens, hands over to node 0 (epoch 2), node 0
    // changes the backups twice.
    let mut m = crate::map::Map::new(net.node(2).engine().map().config().clone());
    let mut history = |id: &str| {
        let created = m
            .open(
                &k1,
                crate::map::NewSession {
                    id: id.into(),
                    service: "rtp-audio".into(),
                    params: BTreeMap::new(),
                    client: "198.18.5.7:5004".into(),
                    location: "198.18.5.0/24".into(),
                    backups: vec![ids[2].clone()],
                },
                now_ms,
            )
            .unwrap();
        let handover = m
            .handover(
                &k1,
                id,
                ids[0].clone(),
                "test",
                vec![ids[1].clone()],
                now_ms + 1,
            )
            .unwrap();
        let middle = m
            .update_backups(&k0, id, vec![ids[2].clone()], now_ms + 2)
            .unwrap();
        let latest = m
            .update_backups(&k0, id, vec![ids[1].clone()], now_ms + 3)
            .unwrap();
        [created, handover, middle, latest]
    };
    let [created, _, _, latest] = history("s1");
    let gossip = |delta: &crate::map::Delta| wire::Decoded {
        message: Message::Gossip(wire::Gossip { updates: vec![] }),
        app: vec![AppMessage::Delta(Box::new(delta.clone())).encode()],
    };
    let syncing = |net: &Net, peer: usize| {
        net.node(2)
            .streams
            .values()
            .any(|s| s.peer == ids[peer] && matches!(s.kind, streams::Kind::SyncOut { .. }))
    };
    let now = net.now;
    net.node_mut(2)
        .deliver(now, ids[1].clone(), gossip(&created));
    net.after(2);
    assert_eq!(net.node(2).engine().map().get("s1").unwrap().epoch, 1);
    // Node 2 hears only the latest version: it cites a version written by
    // a primary node 2 does not know of. Nothing yet: it may have been
    // overtaken on the way.
    net.node_mut(2)
        .deliver(now, ids[0].clone(), gossip(&latest));
    net.after(2);
    assert!(!syncing(&net, 0));
    // The history does not come: node 2 asks node 0 for the chain.
    net.run_for(HISTORY_CHECK);
    assert_eq!(net.node(2).stats().unlinked_pulls, 1);
    assert!(syncing(&net, 0), "a map sync with the carrier was started");
    // Copies from the same carrier do not make it pull again at once; a
    // copy from another carrier does.
    let now = net.now;
    net.node_mut(2)
        .deliver(now, ids[0].clone(), gossip(&latest));
    net.after(2);
    net.node_mut(2)
        .deliver(now, ids[3].clone(), gossip(&latest));
    net.after(2);
    net.run_for(HISTORY_CHECK);
    assert!(syncing(&net, 3), "the other carrier was asked too");
    assert_eq!(net.node(2).stats().unlinked_pulls, 2);
    // A predecessor that arrives in time makes no pull: the second
    // session's versions arrive out of order.
    let [created, handover, middle, latest] = history("s2");
    let now = net.now;
    for delta in [&created, &latest, &middle, &handover] {
        net.node_mut(2).deliver(now, ids[1].clone(), gossip(delta));
        net.after(2);
    }
    assert_eq!(net.node(2).engine().map().get("s2").unwrap().version, 2);
    net.run_for(HISTORY_CHECK);
    assert_eq!(net.node(2).stats().unlinked_pulls, 2);
    assert!(!syncing(&net, 1));
}

/// An undecodable frame on a member's SWIM stream resets the stream: the
/// peer is told (a reset, not a finish) and the node forgets the stream.
#[test]
fn a_garbled_swim_stream_is_reset_and_forgotten() {
    let mut net = Net::joined(2, 51);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    let (stream, _, _) = a
        .handle_stream_accepted(now, b, Protocol::Swim)
        .expect("a member may open a SWIM stream");
    let undecodable = a.stats().drops.undecodable;
    a.handle_frame(now, stream, &[0xff; 8]);
    let (t, _, _) = drain(a);
    assert_eq!(a.stats().drops.undecodable, undecodable + 1);
    assert!(
        t.iter()
            .any(|t| matches!(t, Transmit::Reset { stream: s } if *s == stream)),
        "{t:?}"
    );
    assert!(!a.streams.contains_key(&stream), "the stream is forgotten");
}

/// The member limit counts the members a node has: with `max_members`
/// of 2, the first two peers are admitted one after the other and the
/// third is refused as the overlay being full.
#[test]
fn a_node_with_max_members_refuses_the_next_peer_as_full() {
    let mut net = Net::with_config(4, 52, |i| {
        let mut c = harness::config(i);
        c.policy.max_members = 2;
        c
    });
    for i in 1..4 {
        net.discover(i, 0);
        net.run_for(Duration::from_secs(2));
    }
    let (a, ids) = (net.node(0), &net.ids);
    assert_eq!(a.swim().num_active(), 2);
    assert!(a.peer(&ids[1]).unwrap().admitted);
    assert!(a.peer(&ids[2]).unwrap().admitted);
    assert!(!a.peer(&ids[3]).is_some_and(|p| p.admitted));
    assert!(
        net.events[0].iter().any(|e| matches!(e,
            Event::Refused { peer, reason } if *peer == ids[3] && reason.contains("full"))),
        "{:?}",
        net.events[0]
    );
}

/// Probes unanswered [`REKEY_UNANSWERED`] times make a member with keys
/// suspect of holding other keys, but it gets a new handshake only once
/// nothing at all came from it for [`REKEY_AFTER`], and only one.
#[test]
fn a_member_missing_probes_is_rekeyed_only_once_silent_for_rekey_after() {
    let mut net = Net::joined(2, 53);
    // Past the first rekey check: one runs every second from now on.
    net.run_for(REKEY_AFTER);
    let b = net.ids[1].clone();
    let start = net.now;
    let a = net.node_mut(0);
    drain(a);
    let hello_opens = |t: &[Transmit]| {
        t.iter()
            .filter(|t| {
                matches!(
                    t,
                    Transmit::Open {
                        protocol: Protocol::Hello,
                        ..
                    }
                )
            })
            .count()
    };
    let missed = |a: &mut harness::TestNode, at: Instant, heard: Instant, retry_at| {
        let p = a.peers.get_mut(&b).unwrap();
        p.unanswered = REKEY_UNANSWERED;
        p.heard = Some(heard);
        p.retry_at = retry_at;
        a.unanswered.insert(b.clone());
        // The rekey check runs once a second.
        a.handle_timeout(at);
        hello_opens(&drain(a).0)
    };
    let at = start + Duration::from_secs(1);
    let recently = at - REKEY_AFTER + Duration::from_millis(100);
    assert_eq!(
        missed(a, at, recently, None),
        0,
        "heard from lately: keys kept"
    );
    let at = at + Duration::from_secs(1);
    let backing_off = Some(at + Duration::from_millis(1));
    assert_eq!(
        missed(a, at, at - REKEY_AFTER, backing_off),
        0,
        "silent, but a failed handshake's backoff runs: not yet"
    );
    let at = at + Duration::from_secs(1);
    assert_eq!(
        missed(a, at, at - REKEY_AFTER, Some(at)),
        1,
        "silent and the backoff over: a new handshake"
    );
    let at = at + Duration::from_secs(1);
    assert_eq!(
        missed(a, at, at - REKEY_AFTER, None),
        0,
        "one handshake at a time"
    );
}

/// At most `max_syncs` map syncs run at once as initiator: one with a
/// further peer waits.
#[test]
fn map_syncs_beyond_max_syncs_are_not_started() {
    let mut net = Net::joined(4, 54);
    let now = net.now;
    let ids = net.ids.clone();
    let a = net.node_mut(0);
    drain(a);
    assert_eq!(a.config().timing.max_syncs, 2);
    let syncs_out = |a: &harness::TestNode| {
        a.streams
            .values()
            .filter(|s| matches!(s.kind, streams::Kind::SyncOut { .. }))
            .count()
    };
    assert_eq!(syncs_out(a), 0);
    assert!(a.start_sync(now, &ids[1]));
    assert!(a.start_sync(now, &ids[2]));
    assert!(!a.start_sync(now, &ids[3]), "two run already");
    assert_eq!(syncs_out(a), 2);
}

/// Discovery walks each node made during `d` (its `Action::Walk`s).
fn walks_during(net: &mut Net, d: Duration) -> Vec<usize> {
    let before: Vec<usize> = net.actions.iter().map(|a| walks_in(a)).collect();
    net.run_for(d);
    net.actions
        .iter()
        .zip(before)
        .map(|(a, b)| walks_in(a) - b)
        .collect()
}

fn walks_in(actions: &[Action]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::Walk)).count()
}

/// `n` nodes whose walks come fast: the timer every 1 s, a group walking
/// twice per 20 s in all (each member every `20 s * m / 2`).
fn fast_walking(n: usize, seed: u64) -> Net {
    let timing = Timing {
        alone_walk: Duration::from_secs(1),
        group_walk: Duration::from_secs(20),
        group_walkers: 2,
        ..Timing::default()
    };
    Net::with_config(n, seed, |i| Config {
        timing: timing.clone(),
        ..harness::config(i)
    })
}

#[test]
fn the_walk_interval_is_the_groups_share_and_short_alone() {
    let t = Timing {
        alone_walk: Duration::from_secs(10),
        group_walk: Duration::from_secs(600),
        group_walkers: 2,
        ..Timing::default()
    };
    assert_eq!(walk_interval(&t, 0), Duration::from_secs(10));
    // Two members: each walks once a period, the group twice.
    assert_eq!(walk_interval(&t, 1), Duration::from_secs(600));
    assert_eq!(walk_interval(&t, 15), Duration::from_secs(600 * 8));
    assert_eq!(walk_interval(&t, 999), Duration::from_secs(600 * 500));
    let none = Timing {
        group_walkers: 0,
        ..t.clone()
    };
    assert_eq!(walk_interval(&none, 3), Duration::from_secs(600 * 4));
}

#[test]
fn a_group_walks_about_its_walkers_per_period_whatever_its_size() {
    // group_walk 20 s, 2 walkers: 16 nodes walk about twice per 20 s in
    // all (20 in 200 s), not each once (160).
    let mut net = fast_walking(16, 41);
    net.warm();
    let counted = |net: &Net| -> u64 { (0..16).map(|i| net.node(i).stats().walks).sum() };
    let before = counted(&net);
    let walks: usize = walks_during(&mut net, Duration::from_secs(200))
        .iter()
        .sum();
    assert!((8..=40).contains(&walks), "{walks} walks in 200 s");
    assert_eq!(
        counted(&net) - before,
        walks as u64,
        "stats count each walk"
    );
    assert!(net.converged());
}

#[test]
fn the_side_a_partition_leaves_small_walks_at_its_own_share_at_once() {
    // 12 nodes, group_walk 20 s, 2 walkers: each walks every 120 s. Cut
    // {0, 1} off: once they hold the other ten dead, the pair is a group of
    // two and each walks every 20 s from then on (about 12 walks between
    // them in 120 s), not at the share it drew as one of twelve (2).
    let mut net = fast_walking(12, 42);
    net.warm();
    net.run_for(Duration::from_secs(5));
    for a in 0..2 {
        for b in 2..12 {
            net.cuts.insert((a, b));
            net.cuts.insert((b, a));
        }
    }
    let until = net.now + Duration::from_secs(60);
    while (0..2).any(|i| net.node(i).swim().num_active() > 1) && net.now < until {
        net.run_for(Duration::from_millis(100));
    }
    for i in 0..2 {
        assert_eq!(net.node(i).swim().num_active(), 1, "node {i} sees the cut");
    }
    let walks = walks_during(&mut net, Duration::from_secs(120));
    assert!(walks[0] + walks[1] >= 9, "{walks:?}");
}
