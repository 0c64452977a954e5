//! Putting nodes in the state of a group that has run for a while, for
//! simulators and tests: what a thousand handshakes and anti-entropy
//! exchanges would leave behind, without running them.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};

use super::Node;
use super::peers::Session;
use crate::datagram::{self, Opener, Sealer};
use crate::map::{self, Delta};
use crate::session::Signer;
use crate::wire::{Message, Sync, Update};

/// Makes `nodes` a group that has been running for a while: every pair has
/// agreed keys (derived as a handshake derives them, from fresh bytes of
/// both nodes' RNGs), every node knows every other's announcement (as after
/// an anti-entropy exchange), and every map holds every session any of them
/// holds. Handshakes themselves are exercised by the tests that start cold.
pub fn warm_start<S: Signer, R: Rng + SeedableRng>(nodes: &mut [&mut Node<S, R>], now: Instant) {
    warm_keys(nodes, now);
    warm_tables(nodes, now);
    warm_maps(nodes, now);
}

/// Gives every pair of `nodes` agreed keys, as a handshake would.
fn warm_keys<S: Signer, R: Rng + SeedableRng>(nodes: &mut [&mut Node<S, R>], now: Instant) {
    let n = nodes.len();
    for i in 0..n {
        for j in i + 1..n {
            let (left, right) = nodes.split_at_mut(j);
            let (a, b) = (&mut *left[i], &mut *right[0]);
            let (nonce_a, nonce_b) = (a.nonce(), b.nonce());
            let (index_a, index_b) = (a.new_index(), b.new_index());
            let keys = datagram::derive(&datagram::Binding {
                overlay: &a.config.policy.overlay,
                network_key: a.config.policy.network_key.as_deref(),
                initiator: &a.me,
                responder: &b.me,
                initiator_nonce: &nonce_a,
                responder_nonce: &nonce_b,
            });
            let for_a = Session {
                local_index: index_a,
                sealer: Sealer::new(&keys.initiator_to_responder, index_b),
                opener: Opener::new(&keys.responder_to_initiator),
            };
            let for_b = Session {
                local_index: index_b,
                sealer: Sealer::new(&keys.responder_to_initiator, index_a),
                opener: Opener::new(&keys.initiator_to_responder),
            };
            let (id_a, id_b) = (a.me.clone(), b.me.clone());
            let (boot_a, boot_b) = (a.boot, b.boot);
            let (dg_a, dg_b) = (a.datagram_str(), b.datagram_str());
            a.install_keys(now, &id_b, for_a, boot_b, &dg_b, false);
            b.install_keys(now, &id_a, for_b, boot_a, &dg_a, false);
        }
    }
}

/// Makes every node of `nodes` know every other's current announcement
/// (incarnation and metadata), as after an anti-entropy exchange: quietly,
/// so that the announcements already on their way arrive as old news and
/// are not spread again. A simulator that opened thousands of sessions at
/// once (each opener announcing its new load) calls it so as not to start
/// measuring with a thousand announcements in every piggyback queue.
pub fn warm_tables<S: Signer, R: Rng + SeedableRng>(nodes: &mut [&mut Node<S, R>], now: Instant) {
    let n = nodes.len();
    let table: Vec<Update> = nodes
        .iter()
        .map(|node| Update::Alive {
            id: node.me.clone(),
            incarnation: node.swim.incarnation(),
            meta: node.meta.encode(),
        })
        .collect();
    for i in 0..n {
        let from = table[(i + 1) % n].id().clone();
        let updates: Vec<Update> = table
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != i)
            .map(|(_, u)| u.clone())
            .collect();
        if updates.is_empty() {
            continue;
        }
        let node = &mut *nodes[i];
        node.swim.handle_message(
            now,
            from,
            Message::Sync(Sync {
                digest: 0,
                updates,
                reply: false,
            }),
        );
        node.pump(now);
    }
}

/// Makes every map of `nodes` hold every session any of them holds (its
/// newest version), as anti-entropy would, without spreading anything:
/// what a simulator needs when sessions are opened in a group that already
/// runs, and replicating thousands of them by gossip would take minutes of
/// virtual time. A node that never heard of a session imports its newest
/// delta alone (trusted on first use, as the first delta of a session is);
/// one that holds an older version imports the session's chain, so that it
/// can link the newest to what it holds (the map's chain rule).
pub fn warm_maps<S: Signer, R: Rng + SeedableRng>(nodes: &mut [&mut Node<S, R>], now: Instant) {
    // Per session, the newest delta and the node holding it.
    let mut newest: BTreeMap<&str, (&Delta, usize)> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for delta in node.engine.map().deltas() {
            let slot = newest.entry(delta.id()).or_insert((delta, i));
            // The rank alone: equal ranks are the same version (an honest
            // writer signs one record per rank), and comparing their
            // fingerprints would hash every copy.
            if map::rank(&delta.record) > map::rank(&slot.0.record) {
                *slot = (delta, i);
            }
        }
    }
    let sessions: Vec<(Delta, Vec<Delta>)> = newest
        .into_iter()
        .map(|(id, (delta, i))| (delta.clone(), nodes[i].engine.map().chain(id)))
        .collect();
    for node in nodes.iter_mut() {
        let now_ms = node.unix_ms(now);
        for (delta, chain) in &sessions {
            let held = node.engine.map().get(delta.id()).is_some();
            let import = if held {
                chain.as_slice()
            } else {
                std::slice::from_ref(delta)
            };
            node.engine.import(now, now_ms, import.iter().cloned());
        }
        node.pump(now);
    }
}
