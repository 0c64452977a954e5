//! Tests for decisions a mutation sample (cargo-mutants, shard 19/25 of
//! 1612591) found no test pinning; each names the behaviour it protects.

use std::time::Duration;

use super::harness::{Net, addr};
use super::*;

/// A peer that connected to this node (its handshake not started yet: the
/// inbound side waits a grace) is not dialled again when discovery
/// proposes it.
#[test]
fn a_connected_peer_waiting_for_its_handshake_is_not_dialled_again() {
    let mut net = Net::new(2, 3);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    a.handle_connected(now, b.clone(), Some(addr(1).ip()), false);
    drain(a);
    a.handle_discovered(now, b.clone(), vec!["/mem/1".into()]);
    let (_, actions, _) = drain(a);
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Dial { .. })),
        "{actions:?}"
    );
    // Once its connection is gone, discovery dials it.
    a.handle_disconnected(now, b.clone());
    drain(a);
    a.handle_discovered(
        now + Duration::from_millis(1),
        b.clone(),
        vec!["/mem/1".into()],
    );
    let (_, actions, _) = drain(a);
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Dial { peer: Some(p), .. } if *p == b)),
        "{actions:?}"
    );
}

/// A handshake with a stranger (not a member, nothing waiting for it)
/// that failed is not started again by the retry timer: discovery
/// proposes the peer again if it is still around. (A member's is retried:
/// `a_failed_handshake_with_a_member_is_retried_when_its_backoff_ends`.)
#[test]
fn a_failed_handshake_with_a_stranger_is_not_retried_by_its_timer() {
    let mut net = Net::new(2, 5);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    a.handle_discovered(now, b.clone(), vec!["/mem/1".into()]);
    a.handle_connected(now, b.clone(), Some(addr(1).ip()), true);
    let (t, _, _) = drain(a);
    let stream = t
        .iter()
        .find_map(|t| match t {
            Transmit::Open { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("the dialler opens a hello stream");
    a.handle_stream_closed(now, stream, Some("reset by peer".into()));
    let (_, _, events) = drain(a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed { .. })),
        "{events:?}"
    );
    // Well past the longest backoff: the retry fires and does nothing.
    a.handle_timeout(now + Duration::from_secs(300));
    let (t, actions, _) = drain(a);
    assert!(
        !t.iter().any(|t| matches!(t, Transmit::Open { .. })),
        "{t:?}"
    );
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Dial { .. })),
        "{actions:?}"
    );
}

/// Rumours about a peer this node refused are dropped before SWIM reads
/// them: a member that admitted it cannot make this node take it in.
#[test]
fn news_of_a_refused_peer_from_a_member_is_not_taken() {
    let allowed = harness::key(1).id().clone();
    let mut net = Net::with_config(3, 9, |i| {
        let mut c = harness::config(i);
        if i == 0 {
            c.policy.allowlist = Some([allowed.clone()].into());
        }
        c
    });
    net.join_all();
    net.discover(2, 1);
    net.run_for(Duration::from_secs(3));
    let (b, c) = (net.ids[1].clone(), net.ids[2].clone());
    // Node 1 took node 2 in; node 0 refused it and never holds it.
    assert!(
        net.node(1)
            .swim()
            .member(&c)
            .is_some_and(|m| m.state.is_active())
    );
    assert!(net.node(0).swim().member(&b).is_some());
    assert!(net.node(0).swim().member(&c).is_none());
    // It tracks its one member (and the refused peer it remembers), not
    // nothing.
    assert!(net.node(0).tracked_peers() >= 1);
}

/// What a node held for a member while their handshake ran, and cannot
/// seal once admitted (the hello named no datagram socket), is counted
/// as dropped.
#[test]
fn datagrams_held_for_a_peer_without_a_datagram_socket_are_counted_as_dropped() {
    let mut net = Net::with_config(3, 11, |i| {
        let mut c = harness::config(i);
        if i == 2 {
            c.datagram = None;
        }
        c
    });
    net.discover(1, 0);
    net.run_for(Duration::from_secs(1));
    let c = net.ids[2].clone();
    // Node 2 joins through node 1; node 0 learns of it by gossip and
    // holds its probe while it handshakes.
    net.discover(2, 1);
    let admitted = |net: &Net| {
        net.events[0]
            .iter()
            .any(|e| matches!(e, Event::Admitted { peer } if *peer == c))
    };
    let deadline = net.now + Duration::from_secs(5);
    let mut before = 0;
    while !admitted(&net) {
        assert!(net.now < deadline, "node 0 never admitted node 2");
        before = net.node(0).stats().drops.no_session;
        net.run_for(Duration::from_micros(100));
    }
    let info = net.node(0).peer(&c).expect("tracked");
    assert!(info.admitted && info.endpoint.is_none(), "{info:?}");
    // Counted up, by at most what it may hold for a peer.
    let cap = net.node(0).config().timing.pending_per_peer as u64;
    let after = net.node(0).stats().drops.no_session;
    assert!(
        (before + 1..=before + cap).contains(&after),
        "{before} -> {after}"
    );
}

/// A map sync this node answered counts as done only when the initiator
/// ends it cleanly, not when the stream breaks after the answer.
#[test]
fn an_answered_map_sync_that_breaks_is_not_counted_as_done() {
    let mut net = Net::joined(2, 12);
    let now = net.now;
    let a = net.ids[0].clone();
    let digest = SyncMessage::Digest(net.node(0).engine().map().digest()).encode();
    let b = net.node_mut(1);
    drain(b);
    let syncs = b.stats().syncs;
    // The responder answers each digest (nothing differs: it finishes),
    // then the initiator's end breaks on one and ends on the other.
    for (error, counted) in [(Some("reset".to_string()), 0), (None, 1)] {
        let (s, _, _) = b
            .handle_stream_accepted(now, a.clone(), Protocol::Sync)
            .expect("an admitted member may sync");
        b.handle_frame(now, s, &digest);
        let (t, _, _) = drain(b);
        assert!(
            t.iter()
                .any(|t| matches!(t, Transmit::Finish { stream } if *stream == s)),
            "{t:?}"
        );
        b.handle_stream_closed(now, s, error);
        assert_eq!(b.stats().syncs, syncs + counted);
    }
}

/// A node that fenced itself (it heard nothing) pulls the map from its
/// members the moment the fence lifts, for what it missed; not when the
/// fence goes up.
#[test]
fn a_node_pulls_the_map_when_its_fence_lifts_not_when_it_fences() {
    let mut net = Net::new(4, 13);
    net.warm();
    net.run_for(Duration::from_secs(2));
    let syncs_sent = |net: &Net| {
        let sent = &net.node(0).stats().sent;
        sent.get(&Class::MapSync).map_or(0, |f| f.packets)
    };
    // Runs 1 ms steps until node 0 reports `fenced`; answers whether it
    // sent map-sync frames in that step.
    let step_to = |net: &mut Net, fenced: bool| {
        let deadline = net.now + Duration::from_secs(5);
        loop {
            assert!(net.now < deadline, "never fenced: {fenced}");
            let before = syncs_sent(net);
            net.run_for(Duration::from_millis(1));
            if net.events[0].contains(&Event::Fenced { fenced }) {
                return syncs_sent(net) > before;
            }
        }
    };
    for j in 1..4 {
        net.cuts.insert((j, 0));
    }
    assert!(!step_to(&mut net, true), "pulled as it fenced");
    net.cuts.clear();
    assert!(step_to(&mut net, false), "did not pull as the fence lifted");
}

/// A receive index offered by a handshake still running is not drawn
/// again for another: two keys installed under one index would hand the
/// earlier peer's datagrams to the later one's key (dropped as forged).
#[test]
fn a_running_handshakes_receive_index_is_not_drawn_again() {
    use crate::node::streams::{Kind, Stream};
    use rand::Rng;
    let mut net = Net::new(2, 7);
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    let rng = a.rng.clone();
    let next = a.rng.clone().random::<u32>() % datagram::INDEX_LIMIT;
    assert_eq!(a.new_index(), next, "nothing holds it: drawn");
    let offer = |index| crate::peering::Challenge {
        overlay: String::new(),
        nonce: Vec::new(),
        index,
        boot: 0,
        datagram: String::new(),
    };
    let running = [
        Kind::HelloOut {
            nonce: Vec::new(),
            index: next,
            keys: None,
        },
        Kind::HelloIn {
            offer: Some(Box::new((offer(1), Vec::new(), next))),
        },
    ];
    for kind in running {
        a.rng = rng.clone();
        let stream = StreamId(u64::MAX);
        a.streams.insert(
            stream,
            Stream {
                peer: b.clone(),
                kind,
                held: Vec::new(),
            },
        );
        let drawn = a.new_index();
        assert_ne!(drawn, next, "{:?}", a.streams[&stream].kind);
        a.streams.remove(&stream);
    }
}

/// Discovery's addresses are kept for later dials (a handshake's stream,
/// a rekey): each once, at most eight.
#[test]
fn discovered_addresses_are_kept_once_each_and_at_most_eight() {
    let mut net = Net::new(2, 9);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    a.handle_discovered(now, b.clone(), vec!["/mem/1".into(), "/mem/2".into()]);
    a.handle_discovered(now, b.clone(), vec!["/mem/2".into(), "/mem/3".into()]);
    assert_eq!(a.peers[&b].addrs, ["/mem/1", "/mem/2", "/mem/3"]);
    let many: Vec<String> = (0..20).map(|i| format!("/mem/x{i}")).collect();
    a.handle_discovered(now, b.clone(), many);
    assert_eq!(a.peers[&b].addrs.len(), 8);
    assert_eq!(a.peers[&b].addrs[..3], ["/mem/1", "/mem/2", "/mem/3"]);
}

/// A datagram for a peer whose keys are agreed but whose socket is not
/// known cannot be sealed: it is dropped and counted as having no session.
#[test]
fn a_datagram_that_cannot_be_sealed_is_counted_as_dropped() {
    let mut net = Net::joined(2, 11);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    a.peers.get_mut(&b).unwrap().endpoint = None;
    for n in 1..=2 {
        a.send_datagram(now, &b, vec![0], Class::Gossip, None);
        assert_eq!(a.stats.drops.no_session, n);
    }
    assert!(drain(a).0.is_empty(), "nothing sent");
}

// ---- the sixth sample (shard 3/25 on 0601c22) ----

/// A map sync this node started counts as done when the responder ends it
/// cleanly after this node answered; not when it breaks.
#[test]
fn an_answered_map_sync_this_node_started_counts_when_it_ends_cleanly() {
    use crate::node::streams::{Kind, Stream};
    let mut net = Net::new(2, 14);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    let syncs = a.stats().syncs;
    for (n, (error, counted)) in [(Some("reset".to_string()), 0), (None, 1)]
        .into_iter()
        .enumerate()
    {
        let stream = StreamId(u64::MAX - n as u64);
        a.streams.insert(
            stream,
            Stream {
                peer: b.clone(),
                kind: Kind::SyncOut { answered: true },
                held: Vec::new(),
            },
        );
        a.handle_stream_closed(now, stream, error);
        assert_eq!(a.stats().syncs, syncs + counted);
        assert!(!a.streams.contains_key(&stream));
    }
}

/// A datagram to a peer heard from within [`CONFIRM_WINDOW`] tells the
/// driver the path is confirmed; to one silent longer, not.
#[test]
fn a_datagram_is_confirmed_only_to_a_peer_heard_from_lately() {
    let mut net = Net::joined(2, 15);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    for (heard, confirmed) in [
        (now, true),
        (now - CONFIRM_WINDOW + Duration::from_millis(1), true),
        (now - CONFIRM_WINDOW, false),
    ] {
        a.peers.get_mut(&b).unwrap().heard = Some(heard);
        a.send_datagram(now, &b, vec![0], Class::Gossip, None);
        let (t, _, _) = drain(a);
        assert!(
            matches!(t[..], [Transmit::Datagram { confirm, .. }] if confirm == confirmed),
            "{t:?}"
        );
    }
}

/// A datagram under an index that names a peer but none of its keys (a
/// key dropped since) is dropped as an unknown key, unread.
#[test]
fn a_datagram_under_an_index_none_of_the_peers_keys_holds_is_an_unknown_key() {
    let mut net = Net::joined(2, 16);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    drain(a);
    let index = a.new_index();
    a.indices.insert(index, b.clone());
    let mut bytes = vec![0u8; datagram::HEADER_LEN + datagram::TAG_LEN + 8];
    bytes[..3].copy_from_slice(&index.to_be_bytes()[1..]);
    let before = a.stats().drops;
    a.handle_datagram(now, addr(1), &bytes);
    let after = a.stats().drops;
    assert_eq!(after.unknown_key, before.unknown_key + 1);
    assert!(drain(a).2.is_empty(), "nothing read");
}

/// `is_leaving` says whether `leave` was called.
#[test]
fn a_node_is_leaving_once_it_was_told_to_leave() {
    let mut net = Net::new(2, 17);
    let now = net.now;
    let a = net.node_mut(0);
    assert!(!a.is_leaving() && !a.swim().is_leaving());
    a.leave(now);
    assert!(a.is_leaving() && a.swim().is_leaving());
}

/// A node that is leaving dials nobody discovery proposes.
#[test]
fn a_leaving_node_does_not_dial_what_discovery_proposes() {
    let mut net = Net::new(2, 18);
    let now = net.now;
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    a.leave(now);
    drain(a);
    a.handle_discovered(now, b.clone(), vec!["/mem/1".into()]);
    let (_, actions, _) = drain(a);
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Dial { .. })),
        "{actions:?}"
    );
}

/// The node's timer heap: two timers are equal only when due at the same
/// instant in the same order (what `Ord` says), so the heap keeps both.
#[test]
fn the_node_timer_heaps_eq_agrees_with_its_ord() {
    let now = Instant::now();
    let a = Scheduled {
        at: now,
        order: 1,
        timer: Timer::Rekey,
    };
    let b = Scheduled {
        at: now,
        order: 2,
        timer: Timer::Rekey,
    };
    assert_ne!(a, b);
    assert_eq!(a.cmp(&b) == std::cmp::Ordering::Equal, a == b);
    assert_eq!(
        a,
        Scheduled {
            at: now,
            order: 1,
            timer: Timer::Rekey
        }
    );
}

/// A peer's receive indices are those of its keys, the ones the node
/// holds for it: what is removed when its keys are dropped.
#[test]
fn a_peers_receive_indices_are_those_of_its_keys() {
    let mut net = Net::joined(2, 19);
    let b = net.ids[1].clone();
    let a = net.node_mut(0);
    let held: Vec<u32> = a
        .indices
        .iter()
        .filter(|(_, p)| **p == b)
        .map(|(i, _)| *i)
        .collect();
    assert!(!held.is_empty() && held != [0], "{held:?}");
    let mut listed = a.peers[&b].indices();
    listed.sort_unstable();
    assert_eq!(listed, held);
}

/// A refusal reason is cut to at most `MAX_REASON_LEN` bytes on a
/// character boundary; one of exactly that many is kept whole.
#[test]
fn a_refusal_reason_is_cut_to_the_cap_on_a_character_boundary() {
    use crate::peering::MAX_REASON_LEN;
    let exact = "r".repeat(MAX_REASON_LEN);
    assert_eq!(super::super::peers::truncate(&exact), exact);
    let long = format!("{exact}s");
    assert_eq!(super::super::peers::truncate(&long), exact);
    let wide = "é".repeat(MAX_REASON_LEN);
    let cut = super::super::peers::truncate(&wide);
    assert_eq!(cut.len(), MAX_REASON_LEN);
    assert!(cut.chars().all(|c| c == 'é'));
}
