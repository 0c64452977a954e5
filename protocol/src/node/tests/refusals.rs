//! What a node keeps per remote peer stays bounded whatever ids peers come
//! with: driven by a stream of fresh, never-repeating peer ids over
//! simulated time, the refusal memory stays within [`MAX_REFUSED`] and
//! forgets each refusal within a second of `refusal_memory`, whether or not
//! the peer comes back, and the strangers tracked stay within
//! [`MAX_STRANGERS`].

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::harness::{Net, TestNode, addr};
use crate::NodeId;
use crate::node::{Action, MAX_REFUSED, MAX_STRANGERS, Protocol};
use crate::peering::{self, Challenge, Hello, NONCE_LEN};

/// Drains the node's outputs, acting on its disconnects as a driver does.
fn drain(node: &mut TestNode, now: Instant) {
    while node.poll_transmit().is_some() {}
    let gone: Vec<NodeId> = std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Disconnect { peer } => Some(peer),
            _ => None,
        })
        .collect();
    for peer in gone {
        node.handle_disconnected(now, peer);
    }
    while node.poll_event().is_some() {}
}

/// Fires the node's timers up to `until`.
fn run_until(node: &mut TestNode, now: &mut Instant, until: Instant) {
    while let Some(at) = node.poll_timeout() {
        if at > until {
            break;
        }
        *now = (*now).max(at);
        node.handle_timeout(*now);
        drain(node, *now);
    }
    *now = until;
    node.handle_timeout(until);
    drain(node, until);
}

/// A stranger of another overlay connects and says hello: it is refused.
fn stranger_says_hello(node: &mut TestNode, now: Instant, peer: NodeId, k: u32) {
    node.handle_connected(now, peer.clone(), Some(addr(9).ip()), false);
    drain(node, now);
    if let Some((stream, _, _)) = node.handle_stream_accepted(now, peer, Protocol::Hello) {
        let hello = Hello::Challenge(Challenge {
            overlay: "another overlay".into(),
            nonce: vec![7; NONCE_LEN],
            index: k,
            boot: u64::from(k),
            datagram: String::new(),
        });
        node.handle_frame(now, stream, &peering::encode(&hello));
        node.handle_stream_closed(now, stream, None);
    }
    drain(node, now);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn refusals_of_fresh_peer_ids_stay_capped_and_expire(
        steps in proptest::collection::vec((0u32..400, 0u64..90_000), 1..24),
        burst in 1u32..300,
        seed in any::<u64>(),
    ) {
        let mut net = Net::new(1, seed);
        let mut now = net.now;
        let node = net.node_mut(0);
        drain(node, now);
        let memory = node.config().timing.refusal_memory;
        let mut next = 1_000_000u32;
        // A burst past the cap, within one refusal memory: the cap holds.
        for _ in 0..MAX_REFUSED as u32 + burst {
            stranger_says_hello(node, now, NodeId::synthetic(next), next);
            next += 1;
            now += Duration::from_millis(10);
            node.handle_timeout(now);
            drain(node, now);
        }
        prop_assert_eq!(node.refused.len(), MAX_REFUSED);
        for (fresh, advance_ms) in steps {
            let mut last = None;
            for _ in 0..fresh {
                let peer = NodeId::synthetic(next);
                stranger_says_hello(node, now, peer.clone(), next);
                last = Some(peer);
                next += 1;
            }
            // The newest is always remembered: the cap drops the oldest.
            if let Some(peer) = &last {
                prop_assert!(
                    node.peer(peer).is_some_and(|p| p.refused.is_some()),
                    "the newest stranger is refused and remembered"
                );
            }
            let until = now + Duration::from_millis(advance_ms);
            run_until(node, &mut now, until);
            prop_assert!(node.refused.len() <= MAX_REFUSED, "{} refusals", node.refused.len());
            for r in node.refused.values() {
                prop_assert!(
                    r.until + Duration::from_secs(1) > now,
                    "a refusal outlived refusal_memory by more than a second"
                );
            }
            prop_assert!(node.tracked_peers() <= MAX_STRANGERS);
            prop_assert!(node.peers().len() <= MAX_REFUSED + MAX_STRANGERS);
        }
        // Nobody new: everything is forgotten, in `peers()` too.
        let until = now + memory + Duration::from_secs(2);
        run_until(node, &mut now, until);
        prop_assert_eq!(node.refused.len(), 0);
        prop_assert_eq!(node.peers().len(), 0, "{:?}", node.peers());
    }
}
