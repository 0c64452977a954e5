//! A hostile member with a valid key lies about the others' liveness: with
//! made-up incarnations (a little ahead, far ahead, `u32::MAX`), with death
//! and departure notices, with alive notices carrying other metadata. Honest
//! nodes never adopt an incarnation further ahead of what its member
//! announced than an honest relay could carry, every victim refutes, and the
//! honest nodes converge on the truth once the lies stop.

use std::time::Duration;

use proptest::prelude::*;

use super::harness::Net;
use crate::swim::{self, State};
use crate::wire::{self, Gossip, Message, Update};

/// Honest nodes 0..LIAR, the liar is node LIAR.
const LIAR: usize = 4;

#[derive(Debug, Clone)]
struct Lie {
    /// The honest node told.
    to: usize,
    /// The honest node lied about.
    about: usize,
    kind: u8,
    /// How far ahead of the victim's own incarnation the lie claims.
    lead: u32,
}

fn arb_lie() -> impl Strategy<Value = Lie> {
    (
        0..LIAR,
        0..LIAR,
        0u8..4,
        prop_oneof![
            0u32..4,
            Just(64),
            Just(65),
            Just(1000),
            Just(1 << 30),
            Just((1 << 31) - 1),
            Just(1 << 31),
            any::<u32>(),
        ],
    )
        .prop_map(|(to, about, kind, lead)| Lie {
            to,
            about,
            kind,
            lead,
        })
}

/// The incarnation honest node `i` holds of honest node `j`, and `j`'s own.
fn held(net: &Net, i: usize, j: usize) -> (Option<u32>, u32) {
    let own = net.node(j).swim().incarnation();
    let held = net
        .node(i)
        .swim()
        .member(&net.ids[j])
        .map(|m| m.incarnation);
    (held, own)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn honest_members_never_adopt_a_liars_incarnations_and_converge(
        lies in proptest::collection::vec((arb_lie(), 0u64..300), 1..24),
        seed in any::<u64>(),
    ) {
        let mut net = Net::new(LIAR + 1, seed);
        net.join_all();
        prop_assert!(net.converge(Duration::from_secs(20)).is_some(), "the group forms");
        let liar = net.ids[LIAR].clone();
        for (lie, pause) in lies {
            let own = net.node(lie.about).swim().incarnation();
            let incarnation = own.wrapping_add(lie.lead);
            let id = net.ids[lie.about].clone();
            let update = match lie.kind {
                0 => Update::Alive { id, incarnation, meta: vec![0xba, 0xd0] },
                1 => Update::Suspect { id, incarnation, from: liar.clone() },
                2 => Update::Dead { id, incarnation, from: liar.clone() },
                _ => Update::Left { id, incarnation },
            };
            let now = net.now;
            net.node_mut(lie.to).deliver(
                now,
                liar.clone(),
                wire::Decoded {
                    message: Message::Gossip(Gossip { updates: vec![update] }),
                    app: Vec::new(),
                },
            );
            net.after(lie.to);
            net.run_for(Duration::from_millis(pause));
            // Whatever an honest node holds of another, the other announced
            // it or it lies within the lead an honest relay could carry.
            for i in 0..LIAR {
                for j in (0..LIAR).filter(|&j| j != i) {
                    let (held, own) = held(&net, i, j);
                    let Some(held) = held else { continue };
                    prop_assert!(
                        !swim::newer(held, own.wrapping_add(swim::PLAUSIBLE_LEAD)),
                        "node {i} holds incarnation {held} of node {j}, whose own is {own}"
                    );
                }
            }
        }
        // The lies stop: every victim has refuted, and the honest nodes
        // agree on every honest member's own incarnation, alive.
        net.run_for(Duration::from_secs(30));
        for i in 0..LIAR {
            for j in (0..LIAR).filter(|&j| j != i) {
                prop_assert_eq!(net.state(i, j), Some(State::Alive), "node {} of node {}", i, j);
                let (held, own) = held(&net, i, j);
                prop_assert_eq!(held, Some(own), "node {} of node {}", i, j);
            }
        }
    }
}
