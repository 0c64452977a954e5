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
