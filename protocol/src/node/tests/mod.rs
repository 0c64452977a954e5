//! Tests of the whole node: exact outputs for single inputs (admission, a
//! takeover, a map sync), and small overlays run in the harness.

mod harness;

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
    assert!(matches!(hello(&confirm), Hello::Confirm { ref proof } if proof.len() == 32));
    assert!(!a.peer(&b_id).unwrap().admitted, "not before Done");

    // B admits A: Done, finish, keys, and a join (A is new to B's SWIM).
    b.handle_frame(now, sb, &confirm);
    let (t, _, e) = drain(&mut b);
    assert_eq!(hello(&frames_of(&t)[0].1), Hello::Done);
    assert!(matches!(t[1], Transmit::Finish { stream } if stream == sb));
    let Transmit::Datagram { to, bytes } = &t[2] else {
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
    let mut net = Net::new(4, 7);
    net.join_all();
    assert!(net.converge(Duration::from_secs(5)).is_some());
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
    let mut net = Net::new(4, 8);
    net.join_all();
    assert!(net.converge(Duration::from_secs(5)).is_some());
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
    }
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
    let mut net = Net::new(2, 10);
    net.join_all();
    assert!(net.converge(Duration::from_secs(5)).is_some());
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
    assert_eq!(
        a.engine().map().digest().root(),
        b.engine().map().digest().root()
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
    }
    let hosts = |id: &str| (0..6).filter(|&i| net.hosting[i].contains(id)).count();
    assert_eq!((hosts(&a.id), hosts(&b.id)), (1, 1));
}
