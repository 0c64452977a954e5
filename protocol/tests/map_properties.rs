//! Property tests of the session map's merge (`baton_protocol::map`): a random
//! history of writes by a few nodes (creations, updates, claims, handovers,
//! closes, with concurrent forks from stale versions), mixed with forged and
//! unauthorized deltas and with the lies of a Byzantine member holding a
//! valid key (made-up predecessors, epoch jumps, hand-overs to honest nodes,
//! second creations, re-paired credentials), delivered to several replicas
//! in random orders, with duplicates and in random groupings, then repaired
//! by anti-entropy: every replica ends equal, on the greatest honest version
//! of each session, and no forged, unauthorized or made-up version ever
//! becomes current. Plus the anti-entropy exchange of 10 000 sessions.

use std::collections::BTreeMap;

use baton_protocol::NodeId;
use baton_protocol::map::{self, Config, Delta, LocalKey, Map, NewSession, SyncMessage};
use baton_protocol::session::{Record, SessionState, Signer};
use proptest::prelude::*;
use proptest::sample::Index;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const NODES: usize = 5;
const SESSIONS: usize = 3;

fn keys() -> Vec<LocalKey> {
    (1..=NODES as u8)
        .map(|n| LocalKey::from_seed([n; 32]))
        .collect()
}

/// M: an admitted member with a valid key, never named by an honest version.
fn mallory() -> LocalKey {
    LocalKey::from_seed([66; 32])
}

fn key_of<'a>(keys: &'a [LocalKey], id: &NodeId) -> Option<&'a LocalKey> {
    keys.iter().find(|k| k.id() == id)
}

/// The nodes whose bit is set in `mask`, except `except`.
fn nodes(keys: &[LocalKey], mask: u8, except: &NodeId) -> Vec<NodeId> {
    keys.iter()
        .enumerate()
        .filter(|(i, k)| mask & (1 << i) != 0 && k.id() != except)
        .map(|(_, k)| k.id().clone())
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    /// Node `by` creates session `session` (if nobody did yet: honest ids
    /// are 128 random bits, they do not collide).
    Open {
        session: usize,
        by: usize,
        backups: u8,
    },
    /// The primary of an earlier version (any: forks) replaces the backups.
    Update { base: Index, backups: u8 },
    /// The primary of an earlier version closes it.
    Close { base: Index },
    /// A backup of an earlier version claims it.
    Claim {
        base: Index,
        which: usize,
        backups: u8,
    },
    /// The primary of an earlier version hands it to node `to`.
    Handover { base: Index, to: usize, backups: u8 },
    /// A genuinely signed successor that breaks an authority rule.
    Unauthorized { base: Index, by: usize, kind: u8 },
    /// A delta whose signatures do not match its content.
    Forged { base: Index, kind: u8 },
    /// Byzantine: M lies about an earlier version, with a valid key and
    /// deltas that pass the one-hop check.
    Lie {
        base: Index,
        kind: u8,
        to: usize,
        jump: u8,
    },
}

/// A history that starts with a session open with every other node as backup.
fn arb_history() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(arb_op(), 1..48).prop_map(|mut ops| {
        ops.insert(
            0,
            Op::Open {
                session: 0,
                by: 0,
                backups: u8::MAX,
            },
        );
        ops
    })
}

fn arb_op() -> impl Strategy<Value = Op> {
    let node = || 0..NODES;
    prop_oneof![
        2 => (0..SESSIONS, node(), any::<u8>())
            .prop_map(|(session, by, backups)| Op::Open { session, by, backups }),
        4 => (any::<Index>(), any::<u8>()).prop_map(|(base, backups)| Op::Update { base, backups }),
        1 => any::<Index>().prop_map(|base| Op::Close { base }),
        4 => (any::<Index>(), 0..8usize, any::<u8>())
            .prop_map(|(base, which, backups)| Op::Claim { base, which, backups }),
        3 => (any::<Index>(), node(), any::<u8>())
            .prop_map(|(base, to, backups)| Op::Handover { base, to, backups }),
        3 => (any::<Index>(), node(), 0..6u8)
            .prop_map(|(base, by, kind)| Op::Unauthorized { base, by, kind }),
        2 => (any::<Index>(), 0..3u8).prop_map(|(base, kind)| Op::Forged { base, kind }),
        4 => (any::<Index>(), 0..LIES, node(), 1..6u8)
            .prop_map(|(base, kind, to, jump)| Op::Lie { base, kind, to, jump }),
    ]
}

#[derive(Debug, Default)]
struct History {
    /// Legitimate writes by nodes with authority, in the order written.
    honest: Vec<Delta>,
    /// Forged or unauthorized: must never become current.
    hostile: Vec<Delta>,
    /// M's lies: they pass the one-hop check, and must never become current.
    byzantine: Vec<Delta>,
}

/// Runs the operations, each writer working from its own map holding only
/// the base version it writes on.
fn build(ops: &[Op]) -> History {
    let keys = keys();
    let mut h = History::default();
    for (step, op) in ops.iter().enumerate() {
        let now = 1_000 + step as u64 * 10;
        let base = |index: &Index, h: &History| -> Option<Delta> {
            (!h.honest.is_empty()).then(|| h.honest[index.index(h.honest.len())].clone())
        };
        let writer_map = |base: &Delta| {
            let mut m = Map::new(Config::default());
            m.apply(base.clone(), now).expect("honest base");
            m
        };
        match op {
            Op::Open {
                session,
                by,
                backups,
            } => {
                let id = format!("s{session}");
                if h.honest.iter().any(|d| d.id() == id) {
                    continue;
                }
                let k = &keys[*by];
                let s = NewSession {
                    id,
                    service: "rtp-audio".into(),
                    params: BTreeMap::new(),
                    client: format!("198.18.0.{by}:5004"),
                    location: "198.18.0.0/24".into(),
                    backups: nodes(&keys, *backups, k.id()),
                };
                let d = Map::new(Config::default()).open(k, s, now).unwrap();
                h.honest.push(d);
            }
            Op::Update { base: b, backups } => {
                let Some(b) = base(b, &h) else { continue };
                let k = key_of(&keys, &b.record.primary).unwrap();
                let new = nodes(&keys, *backups, k.id());
                if let Ok(d) = writer_map(&b).update_backups(k, b.id(), new, now) {
                    h.honest.push(d);
                }
            }
            Op::Close { base: b } => {
                let Some(b) = base(b, &h) else { continue };
                let k = key_of(&keys, &b.record.primary).unwrap();
                if let Ok(d) = writer_map(&b).close(k, b.id(), now) {
                    h.honest.push(d);
                }
            }
            Op::Claim {
                base: b,
                which,
                backups,
            } => {
                let Some(b) = base(b, &h) else { continue };
                if b.record.backups.is_empty() {
                    continue;
                }
                let claimer = &b.record.backups[which % b.record.backups.len()];
                let k = key_of(&keys, claimer).unwrap();
                let new = nodes(&keys, *backups, k.id());
                if let Ok(d) = writer_map(&b).claim(k, b.id(), "takeover", new, now) {
                    h.honest.push(d);
                }
            }
            Op::Handover {
                base: b,
                to,
                backups,
            } => {
                let Some(b) = base(b, &h) else { continue };
                let k = key_of(&keys, &b.record.primary).unwrap();
                let to = keys[*to].id().clone();
                if to == *k.id() {
                    continue;
                }
                let new = nodes(&keys, *backups, &to);
                if let Ok(d) = writer_map(&b).handover(k, b.id(), to, "transfer", new, now) {
                    h.honest.push(d);
                }
            }
            Op::Unauthorized { base: b, by, kind } => {
                let Some(b) = base(b, &h) else { continue };
                if let Some(d) = unauthorized(&keys, &b.record, *by, *kind, now) {
                    h.hostile.push(d);
                }
            }
            Op::Forged { base: b, kind } => {
                let Some(b) = base(b, &h) else { continue };
                h.hostile.push(forged(&keys, &b, *kind, now));
            }
            Op::Lie {
                base: b,
                kind,
                to,
                jump,
            } => {
                let Some(b) = base(b, &h) else { continue };
                if let Some(d) = lie(&b.record, *kind, keys[*to].id(), *jump, now) {
                    assert_eq!(
                        map::check(&d),
                        Ok(()),
                        "a lie that passes the one-hop check"
                    );
                    h.byzantine.push(d);
                }
            }
        }
    }
    h
}

/// The kinds of [`lie`].
const LIES: u8 = 6;

/// A lie of M's about `base`, signed with M's valid key, that passes the
/// one-hop check (`map::check`): `to` is an honest node, `jump` a number of
/// epochs skipped. None where the kind does not apply to `base`.
fn lie(base: &Record, kind: u8, to: &NodeId, jump: u8, now: u64) -> Option<Delta> {
    let m = mallory();
    let me = m.id().clone();
    let sign = |mut r: Record| {
        r.updated_ms = now;
        r.reason = "lie".into();
        r.sign(&m);
        r
    };
    // A made-up predecessor, and the version M writes on it.
    let chain = |prev: Record, next: &dyn Fn(&mut Record)| {
        let prev = sign(prev);
        let mut record = prev.clone();
        next(&mut record);
        Delta {
            record: sign(record),
            prev: Some(prev),
        }
    };
    let mut prev = base.clone();
    prev.state = SessionState::Active;
    let delta = match kind {
        // A made-up backup list naming M, then M's claim.
        0 => {
            prev.version += 1;
            prev.backups = vec![me.clone()];
            chain(prev, &|r| {
                r.epoch += 1;
                r.version = 0;
                r.primary = me.clone();
                r.backups = vec![];
            })
        }
        // M as a made-up primary, updating (a new client).
        1 => {
            prev.primary = me.clone();
            prev.backups.clear();
            chain(prev, &|r| {
                r.version += 1;
                r.client = "203.0.113.66:5004".into();
            })
        }
        // M as a made-up primary hands the session to an honest node; with
        // an epoch jump, as primary of a made-up later epoch.
        2 | 3 => {
            if kind == 3 {
                prev.epoch += u64::from(jump);
            }
            prev.primary = me.clone();
            prev.backups.clear();
            chain(prev, &|r| {
                r.epoch += 1;
                r.version = 0;
                r.primary = to.clone();
                r.backups = vec![me.clone()];
            })
        }
        // A second creation of the session by M, with the real one's
        // service and start time, or another start.
        4 => {
            let mut record = base.clone();
            record.epoch = 1;
            record.version = 0;
            record.state = SessionState::Active;
            record.primary = me.clone();
            record.backups.retain(|b| *b != me);
            record.started_ms += u64::from(jump % 2);
            sign(record).into()
        }
        // An honest version re-paired with a predecessor M made up, which
        // authorizes it.
        _ => {
            if base.version > 0 {
                prev.version = base.version - 1;
            } else if base.epoch > 1 {
                prev.epoch -= 1;
                prev.version = 7;
                if base.writer == base.primary {
                    // A claim: the claimer must be a backup of `prev`.
                    prev.primary = me;
                    prev.backups = vec![base.writer.clone()];
                } else {
                    // A handover: `prev` names the writer primary.
                    prev.primary = base.writer.clone();
                    prev.backups = vec![];
                }
            } else {
                return None;
            }
            Delta {
                record: base.clone(),
                prev: Some(sign(prev)),
            }
        }
    };
    Some(delta)
}

/// A genuinely signed successor of `base` that breaks a rule, or None when
/// node `by` happens to hold the authority that `kind` needs it to lack.
fn unauthorized(keys: &[LocalKey], base: &Record, by: usize, kind: u8, now: u64) -> Option<Delta> {
    let k = &keys[by];
    let member = *k.id() == base.primary || base.backups.contains(k.id());
    let mut r = base.clone();
    r.updated_ms = now;
    let mut prev = Some(base.clone());
    let signer = match kind {
        // A non-member claims.
        0 if !member => {
            r.epoch += 1;
            r.version = 0;
            r.primary = k.id().clone();
            r.backups.retain(|b| b != k.id());
            k
        }
        // A backup claims without raising the epoch.
        1 if !base.backups.is_empty() => {
            let b = key_of(keys, &base.backups[by % base.backups.len()]).unwrap();
            r.version += 1;
            r.primary = b.id().clone();
            r.backups.retain(|x| x != b.id());
            b
        }
        // A non-primary updates within the epoch.
        2 if *k.id() != base.primary => {
            r.version += 1;
            r.client = "203.0.113.7:5004".into();
            k
        }
        // The primary skips an epoch.
        3 => {
            let p = key_of(keys, &base.primary).unwrap();
            r.epoch += 2;
            r.version = 0;
            r.primary = keys[(by + 1) % NODES].id().clone();
            if r.primary == base.primary {
                r.primary = keys[(by + 2) % NODES].id().clone();
            }
            r.backups.retain(|x| *x != r.primary);
            p
        }
        // A claim travelling without its credential.
        4 if base.backups.contains(k.id()) => {
            r.epoch += 1;
            r.version = 0;
            r.primary = k.id().clone();
            r.backups.retain(|x| x != k.id());
            prev = None;
            k
        }
        // The primary reopens a closed session.
        5 if base.state == SessionState::Closed => {
            r.version += 1;
            r.state = SessionState::Active;
            key_of(keys, &base.primary).unwrap()
        }
        _ => return None,
    };
    r.sign(signer);
    Some(Delta { record: r, prev })
}

/// A delta whose signatures do not cover what it says.
fn forged(keys: &[LocalKey], base: &Delta, kind: u8, now: u64) -> Delta {
    let mut d = base.clone();
    match kind {
        // Altered after signing.
        0 => {
            d.record.client = "203.0.113.66:5004".into();
            d.record.version += 1;
        }
        // A genuine successor with an altered credential.
        1 => {
            let mut r = base.record.clone();
            r.version += 1;
            r.updated_ms = now;
            r.sign(key_of(keys, &base.record.primary).unwrap());
            let mut prev = base.record.clone();
            prev.client = "203.0.113.99:5004".into();
            d = Delta {
                record: r,
                prev: Some(prev),
            };
        }
        // Signed by someone else in the primary's name.
        _ => {
            let mut r = base.record.clone();
            r.version += 1;
            r.updated_ms = now;
            let impostor = keys
                .iter()
                .find(|k| *k.id() != base.record.primary)
                .unwrap();
            r.sign(impostor);
            r.writer = base.record.primary.clone();
            d = Delta {
                record: r,
                prev: Some(base.record.clone()),
            };
        }
    }
    d
}

fn state(map: &Map) -> Vec<Delta> {
    map.deltas().cloned().collect()
}

/// Everything `from` would send `into` for every session it holds, as
/// anti-entropy of whole buckets does: each session's chain.
fn merge(into: &mut Map, from: &Map) {
    let all: Vec<u8> = (0..=u8::MAX).collect();
    for d in from.records_in(&all) {
        let _ = into.apply(d, 10_000);
    }
}

/// One anti-entropy exchange as the node runs it (`/baton/sync`): B lists
/// its versions in the buckets that differ, A sends the chains B lacks and
/// asks for those it lacks, B answers.
fn sync(a: &mut Map, b: &mut Map, now: u64) {
    let buckets = b.diff(&a.digest());
    if buckets.is_empty() {
        return;
    }
    let (send, want) = a.reconcile(&b.versions_in(&buckets));
    for d in send {
        let _ = b.apply(d, now);
    }
    for d in b.records_named(&want) {
        let _ = a.apply(d, now);
    }
}

/// Rounds of anti-entropy between every pair of replicas until their
/// digests agree; `check` runs after every exchange. Returns the rounds run.
fn anti_entropy(
    replicas: &mut [(String, Map)],
    mut check: impl FnMut(&Map) -> Result<(), TestCaseError>,
) -> Result<usize, TestCaseError> {
    for round in 0..4 {
        let root = replicas[0].1.digest().root();
        if replicas.iter().all(|(_, m)| m.digest().root() == root) {
            return Ok(round);
        }
        for i in 0..replicas.len() {
            for j in 0..replicas.len() {
                if i == j {
                    continue;
                }
                let (lo, hi) = replicas.split_at_mut(i.max(j));
                let (a, b) = if i < j {
                    (&mut lo[i].1, &mut hi[0].1)
                } else {
                    (&mut hi[0].1, &mut lo[j].1)
                };
                sync(a, b, 20_000 + round as u64);
                check(a)?;
                check(b)?;
            }
        }
    }
    Ok(4)
}

fn deliver(deltas: &[Delta], now: u64) -> Map {
    let mut m = Map::new(Config::default());
    for d in deltas {
        let _ = m.apply(d.clone(), now);
    }
    m
}

/// Replicas of `deltas` delivered in various orders and groupings, after
/// `first` (delivered first, in order, to each). The first replica receives
/// `deltas` in order: it stands for the writers, who hold what they wrote.
fn replicas(first: &[Delta], deltas: &[Delta], seed: u64) -> Vec<(String, Map)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let with_first = |rest: &[Delta]| -> Vec<Delta> {
        first.iter().chain(rest).cloned().collect::<Vec<Delta>>()
    };
    let mut out = Vec::new();
    out.push(("in order".to_owned(), deliver(&with_first(deltas), 5_000)));
    let reversed: Vec<Delta> = deltas.iter().rev().cloned().collect();
    out.push((
        "reversed".to_owned(),
        deliver(&with_first(&reversed), 5_000),
    ));

    let mut shuffled: Vec<Delta> = deltas
        .iter()
        .flat_map(|d| std::iter::repeat_n(d.clone(), rng.random_range(1..=3)))
        .collect();
    shuffled.shuffle(&mut rng);
    out.push((
        "shuffled with duplicates".to_owned(),
        deliver(&with_first(&shuffled), 5_000),
    ));

    // Three replicas each see a random part, then merge in two groupings:
    // (X into Y) into Z, and X into (Z into Y).
    let mut parts = [Vec::new(), Vec::new(), Vec::new()];
    for d in &shuffled {
        parts[rng.random_range(0..3)].push(d.clone());
    }
    let [x, y, z] = parts.map(|p| deliver(&with_first(&p), 5_000));
    let mut left_y = y.clone();
    merge(&mut left_y, &x);
    let mut left = z.clone();
    merge(&mut left, &left_y);
    out.push(("(X into Y) into Z".to_owned(), left));
    let mut right_y = y;
    merge(&mut right_y, &z);
    let mut right = x;
    merge(&mut right, &right_y);
    out.push(("X into (Z into Y)".to_owned(), right));
    out
}

fn assert_all_equal(replicas: &[(String, Map)]) -> Result<(), TestCaseError> {
    let (first_name, first) = &replicas[0];
    for (name, m) in &replicas[1..] {
        prop_assert_eq!(state(first), state(m), "{} and {} differ", first_name, name);
        prop_assert_eq!(first.digest(), m.digest());
    }
    Ok(())
}

/// The greatest honest version of each session.
fn greatest(honest: &[Delta]) -> BTreeMap<&str, &Record> {
    let mut expected: BTreeMap<&str, &Record> = BTreeMap::new();
    for r in honest.iter().map(|d| &d.record) {
        let slot = expected.entry(r.id.as_str()).or_insert(r);
        if map::precedence(r, slot).is_gt() {
            *slot = r;
        }
    }
    expected
}

/// Every current version is honest, and so is the credential held with it.
fn only_honest(m: &Map, honest: &[&Record]) -> Result<(), TestCaseError> {
    for d in m.deltas() {
        prop_assert!(honest.contains(&&d.record), "{:?} became current", d.record);
        if let Some(prev) = &d.prev {
            prop_assert!(honest.contains(&prev), "{:?} is held as a credential", prev);
        }
        prop_assert!(map::check(d).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn replicas_converge_and_only_authorized_versions_become_current(
        ops in arb_history(),
        seed in any::<u64>(),
    ) {
        let h = build(&ops);
        let honest: Vec<&Record> = h.honest.iter().map(|d| &d.record).collect();
        // The history as written, hostile deltas interleaved.
        let mut all: Vec<Delta> = h.honest.clone();
        let mut rng = SmallRng::seed_from_u64(seed ^ 1);
        for d in &h.hostile {
            let at = rng.random_range(0..=all.len());
            all.insert(at, d.clone());
        }

        // Delivered one at a time, in any order: nothing hostile is ever
        // current.
        let mut shuffled = all.clone();
        shuffled.shuffle(&mut rng);
        let mut m = Map::new(Config::default());
        for d in &shuffled {
            let result = m.apply(d.clone(), 5_000);
            if h.hostile.contains(d) {
                prop_assert!(
                    !matches!(result, Ok(map::Applied::New | map::Applied::Superseded { .. })),
                    "hostile delta accepted: {:?}", d
                );
            }
            only_honest(&m, &honest)?;
        }

        // Every replica ends, after anti-entropy, with the greatest honest
        // version of each session.
        let mut replicas = replicas(&[], &all, seed);
        anti_entropy(&mut replicas, |m| only_honest(m, &honest))?;
        assert_all_equal(&replicas)?;
        let held: BTreeMap<&str, &Record> =
            replicas[0].1.iter().map(|r| (r.id.as_str(), r)).collect();
        prop_assert_eq!(held, greatest(&h.honest));

        // Idempotence: a replica merged with itself, or fed everything again,
        // does not change.
        let (_, mut again) = replicas[0].clone();
        let before = state(&again);
        let copy = again.clone();
        merge(&mut again, &copy);
        for d in &all {
            let _ = again.apply(d.clone(), 9_000);
        }
        prop_assert_eq!(state(&again), before);
    }

    #[test]
    fn a_byzantine_member_never_takes_a_session_and_honest_replicas_converge(
        ops in arb_history(),
        seed in any::<u64>(),
    ) {
        let h = build(&ops);
        let honest: Vec<&Record> = h.honest.iter().map(|d| &d.record).collect();
        // Each replica hears of every session first from its creation: what
        // comes first about a session never heard of is trusted.
        let creations: Vec<Delta> =
            h.honest.iter().filter(|d| d.prev.is_none()).cloned().collect();
        let mut rest: Vec<Delta> = h.honest.iter().filter(|d| d.prev.is_some()).cloned().collect();
        // The lies interleave with the honest history, in its order.
        let mut rng = SmallRng::seed_from_u64(seed);
        for lie in h.byzantine.iter().chain(&h.hostile) {
            let at = rng.random_range(0..=rest.len());
            rest.insert(at, lie.clone());
        }
        let mut replicas = replicas(&creations, &rest, seed);
        for (name, m) in &replicas {
            only_honest(m, &honest).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
        let rounds = anti_entropy(&mut replicas, |m| only_honest(m, &honest))?;
        prop_assert!(rounds < 4, "anti-entropy did not settle");
        assert_all_equal(&replicas)?;
        let held: BTreeMap<&str, &Record> =
            replicas[0].1.iter().map(|r| (r.id.as_str(), r)).collect();
        prop_assert_eq!(held, greatest(&h.honest));

        // Told every lie again, a converged replica adopts none: what M
        // wrote does not link, and an honest version M re-paired changes
        // nothing.
        let (_, mut m) = replicas[0].clone();
        for lie in &h.byzantine {
            let result = m.apply(lie.clone(), 30_000);
            if lie.record.writer == *mallory().id() {
                prop_assert!(
                    matches!(result, Err(map::Rejection::Unlinked { .. })),
                    "{:?}: {:?}", lie, result
                );
            } else {
                prop_assert!(
                    !matches!(result, Ok(map::Applied::New | map::Applied::Superseded { .. })),
                    "lie adopted: {:?}", lie
                );
            }
        }
        only_honest(&m, &honest)?;
    }
}

proptest! {
    /// Untrusted bytes: arbitrary input and bit flips of valid messages are
    /// refused or decoded, never a panic, and whatever decodes is safe to
    /// apply.
    #[test]
    fn decoding_and_applying_hostile_bytes_never_panics(
        noise in proptest::collection::vec(any::<u8>(), 0..600),
        flips in proptest::collection::vec((any::<Index>(), 0..8u8), 1..6),
    ) {
        let keys = keys();
        let mut writer = Map::new(Config::default());
        let created = writer
            .open(
                &keys[0],
                NewSession {
                    id: "s0".into(),
                    service: "rtp-audio".into(),
                    client: "198.18.0.1:5004".into(),
                    backups: vec![keys[1].id().clone()],
                    ..NewSession::default()
                },
                0,
            )
            .unwrap();
        let claim = {
            let mut b = writer.clone();
            b.claim(&keys[1], "s0", "takeover", vec![], 1).unwrap()
        };
        let valid = [
            claim.encode(),
            SyncMessage::Records(vec![created, claim]).encode(),
            SyncMessage::Versions(writer.versions_in(&[map::bucket_of("s0")])).encode(),
        ];
        let mut inputs = vec![noise];
        for v in valid {
            let mut flipped = v.clone();
            for (at, bit) in &flips {
                let i = at.index(flipped.len());
                flipped[i] ^= 1 << bit;
            }
            inputs.push(flipped);
        }
        let mut m = writer.clone();
        for bytes in inputs {
            if let Ok(d) = Delta::decode(&bytes) {
                let _ = m.apply(d, 2);
            }
            if let Ok(SyncMessage::Records(deltas)) = SyncMessage::decode(&bytes) {
                for d in deltas {
                    let _ = m.apply(d, 2);
                }
            }
        }
        for d in m.deltas() {
            prop_assert!(map::check(d).is_ok());
        }
    }
}

/// 10 000 sessions across 8 nodes; two replicas differ in 1% of them (40
/// updated and 10 opened on one side, 40 taken over and 10 closed on the
/// other). One digest exchange repairs both.
#[test]
fn ten_thousand_sessions_converge_in_one_anti_entropy_round() {
    const N: usize = 10_000;
    let keys: Vec<LocalKey> = (1..=8).map(|n| LocalKey::from_seed([n; 32])).collect();
    let mut a = Map::new(Config::default());
    for i in 0..N {
        let primary = &keys[i % 8];
        let backups = vec![
            keys[(i + 1) % 8].id().clone(),
            keys[(i + 2) % 8].id().clone(),
        ];
        a.open(
            primary,
            NewSession {
                id: format!("sess-{i:05}-{:08x}", i * 2_654_435_761 % (1 << 32)),
                service: "rtp-audio".into(),
                params: BTreeMap::from([("codec".into(), "pcmu".into())]),
                client: format!("198.18.{}.{}:5004", i / 250, i % 250),
                location: format!("198.18.{}.0/24", i / 250),
                backups,
            },
            1_000,
        )
        .unwrap();
    }
    let mut b = a.clone();
    let ids: Vec<(String, usize)> = a.iter().map(|r| r.id.clone()).zip(0..).collect();
    let key_of = |id: &NodeId| keys.iter().find(|k| k.id() == id).unwrap();
    for (id, n) in ids.iter().take(90) {
        let r = a.get(id).unwrap().clone();
        match n % 9 {
            0..4 => {
                a.update_backups(key_of(&r.primary), id, vec![r.backups[1].clone()], 2_000)
                    .unwrap();
            }
            4..8 => {
                b.claim(key_of(&r.backups[0]), id, "takeover", vec![], 2_000)
                    .unwrap();
            }
            _ => {
                b.close(key_of(&r.primary), id, 2_000).unwrap();
            }
        }
    }
    for i in 0..10 {
        a.open(
            &keys[i % 8],
            NewSession {
                id: format!("late-{i}"),
                service: "rtp-audio".into(),
                client: "198.18.200.1:5004".into(),
                location: "198.18.200.0/24".into(),
                ..NewSession::default()
            },
            2_000,
        )
        .unwrap();
    }
    assert_ne!(state(&a), state(&b));

    let by_buckets = exchange(a.clone(), b.clone(), false);
    let by_versions = exchange(a.clone(), b.clone(), true);
    let full: usize = SyncMessage::records(a.deltas().cloned().collect())
        .iter()
        .map(|m| m.encode().len())
        .sum();
    for (mode, report) in [("buckets", &by_buckets), ("versions", &by_versions)] {
        eprintln!(
            "anti-entropy by {mode}, {} sessions, 100 differing: {} of 256 buckets differ; \
             A->B {} bytes in {} messages, B->A {} bytes in {} messages, {} deltas sent; \
             total {} bytes (a full copy of the map: {full} bytes)",
            report.merged.len(),
            report.buckets,
            report.a_to_b.iter().sum::<usize>(),
            report.a_to_b.len(),
            report.b_to_a.iter().sum::<usize>(),
            report.b_to_a.len(),
            report.deltas,
            report.a_to_b.iter().chain(&report.b_to_a).sum::<usize>(),
        );
    }
    assert_eq!(state(&by_buckets.merged), state(&by_buckets.other));
    assert_eq!(state(&by_buckets.merged), state(&by_versions.merged));
    let (a, b) = (by_versions.merged, by_versions.other);
    assert_eq!(state(&a), state(&b));
    assert_eq!(a.digest(), b.digest());
    assert!(a.diff(&b.digest()).is_empty());
    assert_eq!(a.len(), N + 10);
    assert_eq!(a.active().count(), N + 10 - 10);
}

#[derive(Debug)]
struct Exchange {
    /// A after the exchange, and B.
    merged: Map,
    other: Map,
    /// Differing buckets.
    buckets: usize,
    /// Encoded size of each message.
    a_to_b: Vec<usize>,
    b_to_a: Vec<usize>,
    /// Deltas sent, both ways.
    deltas: usize,
}

/// One anti-entropy exchange initiated by A, through encoded messages, as
/// `SyncMessage` documents it.
fn exchange(mut a: Map, mut b: Map, by_versions: bool) -> Exchange {
    let mut ex = Exchange {
        merged: Map::new(Config::default()),
        other: Map::new(Config::default()),
        buckets: 0,
        a_to_b: Vec::new(),
        b_to_a: Vec::new(),
        deltas: 0,
    };
    let mut to_b: Vec<Vec<u8>> = vec![SyncMessage::Digest(a.digest()).encode()];
    let mut to_a: Vec<Vec<u8>> = Vec::new();
    // Until both sides are quiet; answers depend only on received messages.
    while !to_b.is_empty() || !to_a.is_empty() {
        let mut replies = Vec::new();
        for bytes in to_b.drain(..) {
            ex.a_to_b.push(bytes.len());
            match SyncMessage::decode(&bytes).unwrap() {
                SyncMessage::Digest(remote) => {
                    let differing = b.diff(&remote);
                    ex.buckets = differing.len();
                    if differing.is_empty() {
                        continue;
                    }
                    if by_versions {
                        replies.push(SyncMessage::Versions(b.versions_in(&differing)));
                    } else {
                        replies.push(SyncMessage::Want(differing.clone()));
                        replies.extend(SyncMessage::records(b.records_in(&differing)));
                    }
                }
                SyncMessage::Records(deltas) => {
                    ex.deltas += deltas.len();
                    for d in deltas {
                        b.apply(d, 3_000).unwrap();
                    }
                }
                SyncMessage::WantIds(ids) => {
                    replies.extend(SyncMessage::records(b.records_named(&ids)));
                }
                other => panic!("B did not expect {other:?}"),
            }
        }
        to_a.extend(replies.iter().map(SyncMessage::encode));
        let mut replies = Vec::new();
        for bytes in to_a.drain(..) {
            ex.b_to_a.push(bytes.len());
            match SyncMessage::decode(&bytes).unwrap() {
                SyncMessage::Want(buckets) => {
                    replies.extend(SyncMessage::records(a.records_in(&buckets)));
                }
                SyncMessage::Versions(versions) => {
                    let (send, want) = a.reconcile(&versions);
                    replies.extend(SyncMessage::records(send));
                    if !want.is_empty() {
                        replies.push(SyncMessage::WantIds(want));
                    }
                }
                SyncMessage::Records(deltas) => {
                    ex.deltas += deltas.len();
                    for d in deltas {
                        a.apply(d, 3_000).unwrap();
                    }
                }
                other => panic!("A did not expect {other:?}"),
            }
        }
        to_b.extend(replies.iter().map(SyncMessage::encode));
    }
    ex.merged = a;
    ex.other = b;
    ex
}
