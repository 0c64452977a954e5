//! Property tests of the SWIM state machine under arbitrary input: whatever a
//! peer sends, in whatever order, the node does not panic and its views only
//! move forward (SWIM §4.2: incarnations are monotonic).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use baton_protocol::NodeId;
use baton_protocol::swim::{Config, Event, Swim};
use baton_protocol::wire::{Ack, Gossip, Message, Nack, Ping, PingReq, Sync, Update};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn id(n: u8) -> NodeId {
    NodeId::synthetic(u32::from(n % 6))
}

fn arb_update() -> impl Strategy<Value = Update> {
    (
        0u8..4,
        any::<u8>(),
        prop_oneof![0u32..6, Just(u32::MAX - 1), Just(u32::MAX)],
        any::<u8>(),
    )
        .prop_map(|(kind, who, incarnation, by)| match kind {
            0 => Update::Alive {
                id: id(who),
                incarnation,
                meta: vec![who],
            },
            1 => Update::Suspect {
                id: id(who),
                incarnation,
                from: id(by),
            },
            2 => Update::Dead {
                id: id(who),
                incarnation,
                from: id(by),
            },
            _ => Update::Left {
                id: id(who),
                incarnation,
            },
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let updates = || proptest::collection::vec(arb_update(), 0..5);
    prop_oneof![
        (0u16..8, updates()).prop_map(|(seq, updates)| Message::Ping(Ping {
            seq,
            want_coord: seq % 2 == 0,
            updates
        })),
        (0u16..8, any::<u8>(), updates()).prop_map(|(seq, t, updates)| Message::PingReq(PingReq {
            seq,
            target: id(t),
            updates
        })),
        (0u16..8, updates()).prop_map(|(seq, updates)| Message::Ack(Ack {
            seq,
            coord: None,
            updates
        })),
        (0u16..8).prop_map(|seq| Message::Nack(Nack { seq })),
        updates().prop_map(|updates| Message::Gossip(Gossip { updates })),
        (any::<u64>(), updates(), any::<bool>()).prop_map(
            |(digest, updates, reply)| Message::Sync(Sync {
                digest,
                updates,
                reply
            })
        ),
    ]
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics_and_incarnations_only_grow(
        inputs in proptest::collection::vec((any::<u8>(), 0u64..400, arb_message()), 1..60),
        seed in any::<u64>(),
    ) {
        let mut now = Instant::now();
        let me = NodeId::synthetic(0);
        let mut swim = Swim::new(me.clone(), Vec::new(), Config::lan(), SmallRng::seed_from_u64(seed), now);
        let mut seen: HashMap<NodeId, u32> = HashMap::new();
        let mut own = swim.incarnation();
        for (from, advance, message) in inputs {
            now += Duration::from_millis(advance);
            swim.handle_timeout(now);
            swim.handle_message(now, id(from), message);
            while let Some(t) = swim.poll_transmit() {
                prop_assert!(t.to != me, "never sends to itself");
            }
            while let Some(event) = swim.poll_event() {
                if let Event::MemberState { id, incarnation, .. } = event {
                    let last = seen.entry(id.clone()).or_insert(incarnation);
                    prop_assert!(!baton_protocol::swim::newer(*last, incarnation), "incarnation of {} went back", id);
                    *last = incarnation;
                }
            }
            prop_assert!(!baton_protocol::swim::newer(own, swim.incarnation()), "own incarnation went back");
            own = swim.incarnation();
            prop_assert!(swim.member(&me).is_none(), "a node is never its own member");
            prop_assert!(swim.poll_timeout().is_some(), "the probe round is always armed");
        }
    }
}
