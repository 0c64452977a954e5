use super::*;

/// The key of node `n`; node ids grow with `n`, so tests can say which
/// node wins a tie.
fn key(n: u8) -> LocalKey {
    static SEEDS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let mut seeds: Vec<u8> = (1..=40).collect();
        seeds.sort_by_key(|&s| LocalKey::from_seed([s; 32]).id().clone());
        seeds
    });
    LocalKey::from_seed([seeds[usize::from(n)]; 32])
}

fn id_of(n: u8) -> NodeId {
    key(n).id().clone()
}

fn new_map() -> Map {
    Map::new(Config::default())
}

fn new_session(id: &str, backups: Vec<NodeId>) -> NewSession {
    NewSession {
        id: id.to_owned(),
        service: "rtp-audio".to_owned(),
        params: BTreeMap::from([("codec".to_owned(), "pcmu".to_owned())]),
        client: "198.18.0.5:5004".to_owned(),
        location: "198.18.0.0/24".to_owned(),
        backups,
    }
}

/// A signed record of `id` written by `writer`, for hand-crafted deltas.
fn signed(mut record: Record, writer: &LocalKey) -> Record {
    record.sign(writer);
    record
}

/// A: primary of "s1" with backups B and C, opened on a map of A's.
fn opened() -> (Map, Delta) {
    let mut map = new_map();
    let created = map
        .open(&key(1), new_session("s1", vec![id_of(2), id_of(3)]), 1_000)
        .unwrap();
    (map, created)
}

fn replica_with(deltas: &[&Delta]) -> Map {
    let mut map = new_map();
    for d in deltas {
        map.apply((*d).clone(), 5_000).unwrap();
    }
    map
}

// -- Keys and signatures ------------------------------------------------------

#[test]
fn local_key_ids_are_libp2p_ed25519_peer_ids() {
    let k = key(7);
    let bytes = k.id().as_bytes();
    assert_eq!(bytes.len(), 38);
    assert_eq!(&bytes[..6], &ED25519_PEER_ID_PREFIX);
    assert_eq!(&bytes[6..], &k.public_key());
    assert_eq!(public_key_of(k.id()), Some(k.public_key()));
    assert_eq!(node_id_of(&k.public_key()), *k.id());
}

#[test]
fn public_key_of_refuses_other_id_forms() {
    assert_eq!(public_key_of(&NodeId::new(&[1, 2, 3]).unwrap()), None);
    let mut long = key(1).id().as_bytes().to_vec();
    long.push(0);
    assert_eq!(public_key_of(&NodeId::new(&long).unwrap()), None);
    let mut other_type = key(1).id().as_bytes().to_vec();
    other_type[3] = 0x02; // secp256k1 key type
    assert_eq!(public_key_of(&NodeId::new(&other_type).unwrap()), None);
}

#[test]
fn test_node_ids_grow_with_their_number() {
    assert!((1..20).all(|n| id_of(n) < id_of(n + 1)));
}

#[test]
fn signatures_are_plain_ed25519_as_in_rfc_8032() {
    // RFC 8032, section 7.1, TEST 1: what libp2p's ed25519 Keypair::sign
    // produces too, so a node's libp2p signer and LocalKey interoperate.
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let secret: [u8; 32] = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
        .try_into()
        .unwrap();
    let k = LocalKey::from_seed(secret);
    assert_eq!(
        k.public_key().to_vec(),
        hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    );
    assert_eq!(
        Signer::sign(&k, b""),
        hex(concat!(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155",
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ))
    );
}

#[test]
fn verify_accepts_the_writers_signature_only() {
    let (_, created) = opened();
    assert!(verify(&created.record));
    let mut other = created.record.clone();
    other.writer = id_of(2);
    assert!(!verify(&other));
}

#[test]
fn verify_never_panics_on_garbage() {
    let (_, created) = opened();
    let mut r = created.record;
    for signature in [vec![], vec![0; 63], vec![0xff; 64], vec![1; 65]] {
        r.signature = signature;
        assert!(!verify(&r));
    }
    for writer in [NodeId::synthetic(3), NodeId::new(&[0]).unwrap()] {
        r.writer = writer;
        assert!(!verify(&r));
    }
}

// -- Validation ---------------------------------------------------------------

#[test]
fn validate_rejects_records_that_break_formats_or_limits() {
    let (_, created) = opened();
    let good = created.record;
    assert_eq!(validate(&good), Ok(()));
    let mut cases: Vec<(&str, Record)> = Vec::new();
    let mut add = |name, f: &dyn Fn(&mut Record)| {
        let mut r = good.clone();
        f(&mut r);
        cases.push((name, r));
    };
    add("empty id", &|r| r.id.clear());
    add("id with a space", &|r| r.id = "a b".into());
    add("id with a slash", &|r| r.id = "../etc".into());
    add("long id", &|r| r.id = "x".repeat(65));
    add("empty service", &|r| r.service.clear());
    add("long service", &|r| r.service = "s".repeat(33));
    add("too many params", &|r| {
        r.params = (0..33).map(|i| (i.to_string(), String::new())).collect();
    });
    add("long param name", &|r| {
        r.params.insert("k".repeat(65), String::new());
    });
    add("long param value", &|r| {
        r.params.insert("k".into(), "v".repeat(1025));
    });
    add("long client", &|r| r.client = "c".repeat(129));
    add("long location", &|r| r.location = "l".repeat(65));
    add("too many backups", &|r| {
        r.backups = (10..19).map(id_of).collect();
    });
    add("primary among backups", &|r| {
        r.backups.push(r.primary.clone())
    });
    add("duplicate backup", &|r| r.backups.push(id_of(2)));
    add("long reason", &|r| r.reason = "r".repeat(257));
    add("epoch 0", &|r| r.epoch = 0);
    add("unsigned", &|r| r.signature.clear());
    for (name, record) in cases {
        assert!(
            matches!(validate(&record), Err(Rejection::Invalid(_))),
            "{name} passed validation"
        );
    }
    let mut at_limits = good;
    at_limits.id = "A-z_9".repeat(12);
    at_limits.service = "s".repeat(32);
    at_limits.params = (0..32)
        .map(|i| (format!("{i:064}"), "v".repeat(1024)))
        .collect();
    at_limits.client = "c".repeat(128);
    at_limits.location = "l".repeat(64);
    at_limits.backups = (10..18).map(id_of).collect();
    at_limits.reason = "r".repeat(256);
    assert_eq!(validate(&at_limits), Ok(()));
}

#[test]
fn rejection_messages_quote_untrusted_text_safely() {
    let (_, created) = opened();
    let mut r = created.record;
    r.id = format!("\u{1b}[2J{}", "x".repeat(500));
    let message = validate(&r).unwrap_err().to_string();
    assert!(message.len() < 300, "{message}");
    assert!(!message.contains('\u{1b}'));
}

// -- Authority ----------------------------------------------------------------

#[test]
fn forged_record_is_rejected_and_counted() {
    let (_, created) = opened();
    let mut replica = new_map();

    // Altered after signing: another client address.
    let mut altered = created.clone();
    altered.record.client = "203.0.113.9:5004".into();
    assert!(matches!(
        replica.apply(altered, 2_000),
        Err(Rejection::BadSignature { .. })
    ));

    // Signed by C, but claiming to be written by A.
    let mut impersonation = created.record.clone();
    impersonation.sign(&key(3));
    impersonation.writer = id_of(1);
    assert!(matches!(
        replica.apply(impersonation.into(), 2_000),
        Err(Rejection::BadSignature { .. })
    ));

    // A genuine record carried with a forged predecessor.
    let (mut a, _) = opened();
    let mut update = a
        .update_backups(&key(1), "s1", vec![id_of(4)], 2_000)
        .unwrap();
    if let Some(prev) = update.prev.as_mut() {
        prev.backups = vec![id_of(9)];
    }
    assert!(matches!(
        replica.apply(update, 2_000),
        Err(Rejection::BadSignature { .. })
    ));

    assert_eq!(replica.len(), 0);
    assert_eq!(replica.stats().rejected_signature, 3);
    assert_eq!(replica.stats().accepted, 0);
}

#[test]
fn claim_by_a_node_that_is_not_a_backup_is_rejected() {
    let (a, created) = opened();
    let mut replica = replica_with(&[&created]);
    let mut grab = created.record.clone();
    grab.epoch = 2;
    grab.primary = id_of(4);
    let grab = signed(grab, &key(4));
    let result = replica.apply(
        Delta {
            record: grab,
            prev: Some(created.record.clone()),
        },
        2_000,
    );
    assert!(
        matches!(result, Err(Rejection::NoAuthority { ref writer, .. }) if *writer == id_of(4))
    );
    assert_eq!(replica.stats().rejected_authority, 1);
    assert_eq!(replica.get("s1"), a.get("s1"));

    // The write helper refuses too.
    let mut d = replica_with(&[&created]);
    assert_eq!(
        d.claim(&key(4), "s1", "takeover", vec![], 2_000),
        Err(WriteError::NotBackup { id: "s1".into() })
    );
}

#[test]
fn backup_claiming_without_raising_the_epoch_is_rejected() {
    let (_, created) = opened();
    let mut replica = replica_with(&[&created]);
    let mut same_epoch = created.record.clone();
    same_epoch.version = 1;
    same_epoch.primary = id_of(2);
    same_epoch.backups = vec![id_of(3)];
    let same_epoch = signed(same_epoch, &key(2));
    assert!(matches!(
        replica.apply(
            Delta {
                record: same_epoch,
                prev: Some(created.record.clone())
            },
            2_000
        ),
        Err(Rejection::NoAuthority { .. })
    ));
    assert_eq!(replica.get("s1").unwrap().primary, id_of(1));
}

#[test]
fn bare_record_other_than_a_creation_is_rejected() {
    let (_, created) = opened();
    let mut replica = new_map();
    // B names itself primary at epoch 2 with no credential.
    let mut bare = created.record.clone();
    bare.epoch = 2;
    bare.primary = id_of(2);
    bare.backups = vec![];
    let bare = signed(bare, &key(2));
    assert!(matches!(
        replica.apply(bare.into(), 2_000),
        Err(Rejection::NoAuthority { .. })
    ));
    // A "creation" written by someone else than its primary.
    let mut foreign = created.record.clone();
    foreign.id = "s2".into();
    let foreign = signed(foreign, &key(4));
    assert!(matches!(
        replica.apply(foreign.into(), 2_000),
        Err(Rejection::NoAuthority { .. })
    ));
    assert!(replica.is_empty());
}

#[test]
fn valid_takeover_is_accepted_and_tells_the_old_primary_it_lost() {
    let (mut a, created) = opened();
    let mut b = replica_with(&[&created]);
    let claim = b
        .claim(
            &key(2),
            "s1",
            "takeover: primary dead",
            vec![id_of(3)],
            3_000,
        )
        .unwrap();
    assert_eq!(claim.record.epoch, 2);
    assert_eq!(claim.record.version, 0);
    assert_eq!(claim.record.primary, id_of(2));

    match a.apply(claim.clone(), 3_100).unwrap() {
        Applied::Superseded { previous } => assert_eq!(previous.primary, id_of(1)),
        other => panic!("expected Superseded, got {other:?}"),
    }
    assert_eq!(a.get("s1").unwrap().primary, id_of(2));
    assert_eq!(a.stats().accepted, 1);
}

#[test]
fn old_primary_writing_after_a_takeover_is_rejected() {
    let (_, created) = opened();
    let mut b = replica_with(&[&created]);
    let claim = b
        .claim(&key(2), "s1", "takeover", vec![id_of(3)], 3_000)
        .unwrap();
    let mut replica = replica_with(&[&created, &claim]);

    // A writes on top of the takeover: it is no longer primary nor backup.
    let mut on_top = claim.record.clone();
    on_top.version = 1;
    let on_top = signed(on_top, &key(1));
    assert!(matches!(
        replica.apply(
            Delta {
                record: on_top,
                prev: Some(claim.record.clone())
            },
            4_000
        ),
        Err(Rejection::NoAuthority { .. })
    ));

    // A grabs it back at a higher epoch, citing its own old version.
    let mut grab = created.record.clone();
    grab.epoch = 3;
    grab.version = 0;
    let grab = signed(grab, &key(1));
    assert!(matches!(
        replica.apply(
            Delta {
                record: grab.clone(),
                prev: Some(created.record.clone())
            },
            4_000
        ),
        Err(Rejection::NoAuthority { .. })
    ));
    // ... or citing the takeover.
    assert!(matches!(
        replica.apply(
            Delta {
                record: grab,
                prev: Some(claim.record.clone())
            },
            4_000
        ),
        Err(Rejection::NoAuthority { .. })
    ));

    // And A's own write helpers refuse once it knows.
    let mut a = replica_with(&[&created, &claim]);
    assert!(matches!(
        a.update_backups(&key(1), "s1", vec![], 4_000),
        Err(WriteError::NotPrimary { .. })
    ));
    assert_eq!(replica.get("s1"), Some(&claim.record));
    assert_eq!(replica.stats().rejected_authority, 3);
}

#[test]
fn stale_versions_of_a_deposed_primary_lose_without_error() {
    let (mut a, created) = opened();
    let mut b = replica_with(&[&created]);
    let claim = b.claim(&key(2), "s1", "takeover", vec![], 3_000).unwrap();
    // A, cut off, keeps updating its epoch-1 version.
    let stale = a
        .update_backups(&key(1), "s1", vec![id_of(2)], 3_500)
        .unwrap();
    assert_eq!(b.apply(stale, 4_000), Ok(Applied::Stale));
    assert_eq!(b.get("s1"), Some(&claim.record));
    assert_eq!(b.stats().stale, 1);
}

#[test]
fn concurrent_claims_converge_to_the_higher_id_in_every_order() {
    let (_, created) = opened();
    let mut b = replica_with(&[&created]);
    let mut c = replica_with(&[&created]);
    let claim_b = b
        .claim(&key(2), "s1", "takeover", vec![id_of(3)], 3_000)
        .unwrap();
    // B also updates its branch before hearing of C: it still loses, C has
    // the higher id.
    let update_b = b.update_backups(&key(2), "s1", vec![], 3_100).unwrap();
    let claim_c = c
        .claim(&key(3), "s1", "takeover", vec![id_of(2)], 3_000)
        .unwrap();
    let winner = id_of(3);

    let all = [&created, &claim_b, &update_b, &claim_c];
    let orders: [[usize; 4]; 6] = [
        [0, 1, 2, 3],
        [0, 3, 1, 2],
        [3, 2, 1, 0],
        [2, 3, 0, 1],
        [1, 0, 3, 2],
        [3, 0, 2, 1],
    ];
    let mut finals = Vec::new();
    for order in orders {
        let mut replica = new_map();
        for i in order {
            // B's update before B's claim waits for it.
            let result = replica.apply(all[i].clone(), 4_000);
            assert!(
                result.is_ok() || matches!(result, Err(Rejection::Unlinked { .. })),
                "{result:?}"
            );
        }
        assert_eq!(replica.pending(), 0, "everything links in the end");
        finals.push(replica.get("s1").unwrap().clone());
    }
    assert!(finals.iter().all(|r| r.primary == winner), "{finals:#?}");
    assert!(finals.windows(2).all(|w| w[0] == w[1]));

    // The loser sees it lost; the winner ignores the losing branch.
    match b.apply(claim_c.clone(), 4_000).unwrap() {
        Applied::Superseded { previous } => assert_eq!(previous.primary, id_of(2)),
        other => panic!("the loser must see it lost, got {other:?}"),
    }
    // (C cannot vouch for B's update before it saw B's claim.)
    assert!(matches!(
        c.apply(update_b.clone(), 4_000),
        Err(Rejection::Unlinked { .. })
    ));
    assert_eq!(c.apply(claim_b.clone(), 4_000), Ok(Applied::Stale));
    assert_eq!(c.pending(), 0);
    assert_eq!(b.get("s1"), Some(&claim_c.record));
    assert_eq!(c.get("s1"), Some(&finals[0]));
}

/// Epoch 2: B claims and names D as its only backup. Epoch 3: D claims.
/// Returns the creation, B's claim and D's claim.
fn two_takeovers() -> (Delta, Delta, Delta) {
    let (_, created) = opened();
    let mut b = replica_with(&[&created]);
    let claim_b = b
        .claim(&key(2), "s1", "takeover", vec![id_of(4)], 3_000)
        .unwrap();
    let mut d = replica_with(&[&claim_b]);
    let claim_d = d.claim(&key(4), "s1", "takeover", vec![], 4_000).unwrap();
    (created, claim_b, claim_d)
}

#[test]
fn honest_delta_ahead_of_its_predecessor_waits_and_is_adopted_when_it_arrives() {
    // A replica that only saw epoch 1 (where D is nobody) cannot tell D's
    // claim from a made-up one until it sees B's claim naming D.
    let (created, claim_b, claim_d) = two_takeovers();
    let mut behind = replica_with(&[&created]);
    assert!(matches!(
        behind.apply(claim_d.clone(), 5_000),
        Err(Rejection::Unlinked { ref writer, .. }) if *writer == id_of(4)
    ));
    assert_eq!(behind.get("s1"), Some(&created.record));
    assert_eq!(behind.pending(), 1);
    assert_eq!(behind.stats().rejected_unlinked, 1);

    match behind.apply(claim_b.clone(), 5_100) {
        Ok(Applied::Superseded { previous }) => assert_eq!(*previous, created.record),
        other => panic!("B's claim must unlock D's, got {other:?}"),
    }
    assert_eq!(behind.delta("s1"), Some(&claim_d));
    assert_eq!(behind.pending(), 0);
    assert_eq!(
        behind.stats().accepted,
        3,
        "the creation, B's claim and D's, once each"
    );
    assert_eq!(behind.apply(claim_b, 5_200), Ok(Applied::Stale));
    assert_eq!(behind.apply(claim_d, 5_200), Ok(Applied::Stale));
}

#[test]
fn anti_entropy_serves_the_chain_that_links_a_missed_epoch() {
    let (created, claim_b, claim_d) = two_takeovers();
    let ahead = replica_with(&[&created, &claim_b, &claim_d]);
    assert_eq!(
        ahead.chain("s1"),
        vec![created.clone(), claim_b.clone(), claim_d.clone()]
    );
    let mut behind = replica_with(&[&created]);
    let sent = ahead.records_in(&[bucket_of("s1")]);
    assert_eq!(sent, ahead.chain("s1"));
    for d in sent {
        behind.apply(d, 5_000).unwrap();
    }
    assert_eq!(behind.digest(), ahead.digest());
    assert_eq!(behind.stats().rejected_unlinked, 0);
    // Both ways of the version exchange serve chains too.
    let mut behind = replica_with(&[&created]);
    let (send, _) = ahead.reconcile(&behind.versions_in(&[bucket_of("s1")]));
    assert_eq!(send, ahead.chain("s1"));
    assert_eq!(ahead.records_named(&[id_hash("s1")]), ahead.chain("s1"));
    for d in send {
        behind.apply(d, 5_000).unwrap();
    }
    assert_eq!(behind.delta("s1"), Some(&claim_d));
    // A session that never changed is served alone.
    let (fresh, only) = opened();
    assert_eq!(fresh.chain("s1"), vec![only]);
    assert!(fresh.chain("nothing").is_empty());
}

#[test]
fn handover_names_a_new_primary_and_only_the_primary_may_do_it() {
    let (mut a, created) = opened();
    let mut b = replica_with(&[&created]);
    assert!(matches!(
        b.handover(&key(2), "s1", id_of(5), "transfer", vec![], 2_000),
        Err(WriteError::NotPrimary { .. })
    ));
    let handover = a
        .handover(
            &key(1),
            "s1",
            id_of(5),
            "transfer: better rtt",
            vec![id_of(1)],
            2_000,
        )
        .unwrap();
    assert_eq!(handover.record.epoch, 2);
    assert_eq!(handover.record.primary, id_of(5));
    assert_eq!(handover.record.writer, id_of(1));
    assert!(matches!(
        b.apply(handover, 2_100),
        Ok(Applied::Superseded { .. })
    ));
    // The new primary now updates the session, the old one cannot.
    let mut e = b.clone();
    e.update_backups(&key(5), "s1", vec![id_of(2)], 2_200)
        .unwrap();
    assert!(matches!(
        b.update_backups(&key(1), "s1", vec![], 2_200),
        Err(WriteError::NotPrimary { .. })
    ));
    // Handing over to oneself is no handover.
    let (mut a2, _) = opened();
    assert!(matches!(
        a2.handover(&key(1), "s1", id_of(1), "x", vec![], 2_000),
        Err(WriteError::Rejected(Rejection::NoAuthority { .. }))
    ));
}

#[test]
fn service_and_start_time_never_change() {
    let (_, created) = opened();
    let mut replica = replica_with(&[&created]);
    let mut other_service = created.record.clone();
    other_service.version = 1;
    other_service.service = "exec".into();
    let other_service = signed(other_service, &key(1));
    assert!(matches!(
        replica.apply(
            Delta {
                record: other_service,
                prev: Some(created.record.clone())
            },
            2_000
        ),
        Err(Rejection::NoAuthority { .. })
    ));
}

#[test]
fn predecessor_of_another_session_is_invalid() {
    let (mut a, created) = opened();
    let other = a.open(&key(1), new_session("s2", vec![]), 1_000).unwrap();
    let mut update = a.update_backups(&key(1), "s1", vec![], 2_000).unwrap();
    update.prev = Some(other.record);
    let mut replica = replica_with(&[&created]);
    assert!(matches!(
        replica.apply(update, 2_000),
        Err(Rejection::Invalid(_))
    ));
    assert_eq!(replica.stats().rejected_invalid, 1);
}

// -- The chain rule: members that lie --------------------------------------------

/// M, an admitted member with a valid key that has no part in "s1".
fn mallory() -> LocalKey {
    key(9)
}

/// A record M made up from `base`, signed by M.
fn made_up(base: &Record, edit: impl FnOnce(&mut Record)) -> Record {
    let mut r = base.clone();
    edit(&mut r);
    signed(r, &mallory())
}

/// M's lies about "s1" as created by A (backups B and C): each passes the
/// one-hop check, citing a predecessor M signed itself.
fn lies(created: &Record) -> Vec<(&'static str, Delta)> {
    let m = id_of(9);
    let mut out = Vec::new();
    // M names itself a backup of a version of A's, then claims.
    let prev = made_up(created, |r| {
        r.version = 5;
        r.backups = vec![m.clone()];
    });
    let record = made_up(&prev, |r| {
        r.epoch = 2;
        r.version = 0;
        r.primary = m.clone();
        r.backups = vec![];
    });
    out.push(("claim on a made-up backup list", record, prev));
    // M names itself primary of epoch 1 and updates (its id is higher than
    // A's, so the update outranks A's version).
    let prev = made_up(created, |r| r.primary = m.clone());
    let record = made_up(&prev, |r| {
        r.version = 1;
        r.client = "203.0.113.66:5004".into();
    });
    out.push(("update as a made-up primary", record, prev));
    // M hands the session to D, an honest node.
    let prev = made_up(created, |r| {
        r.primary = m.clone();
        r.version = 2;
    });
    let record = made_up(&prev, |r| {
        r.epoch = 2;
        r.version = 0;
        r.primary = id_of(4);
        r.backups = vec![m.clone()];
    });
    out.push(("handover to an honest node", record, prev));
    // M jumps epochs: a made-up epoch 7, handed to D at epoch 8.
    let prev = made_up(created, |r| {
        r.epoch = 7;
        r.primary = m.clone();
    });
    let record = made_up(&prev, |r| {
        r.epoch = 8;
        r.primary = id_of(4);
        r.backups = vec![m.clone()];
    });
    out.push(("epoch jump", record, prev));
    out.into_iter()
        .map(|(name, record, prev)| {
            (
                name,
                Delta {
                    record,
                    prev: Some(prev),
                },
            )
        })
        .collect()
}

#[test]
fn made_up_predecessors_are_rejected_counted_and_kept_aside() {
    let (_, created) = opened();
    let mut replica = replica_with(&[&created]);
    let lies = lies(&created.record);
    for (name, lie) in &lies {
        assert_eq!(check(lie), Ok(()), "{name}: passes the one-hop check");
        assert!(
            map_order_above(&lie.record, &created.record),
            "{name}: outranks the current version"
        );
        assert!(
            matches!(
                replica.apply(lie.clone(), 2_000),
                Err(Rejection::Unlinked { ref writer, .. }) if *writer == id_of(9)
            ),
            "{name} was not refused"
        );
        assert_eq!(replica.delta("s1"), Some(&created), "{name}");
    }
    let stats = replica.stats();
    assert_eq!(stats.rejected_unlinked, lies.len() as u64);
    assert_eq!(stats.accepted, 1, "the creation only");
    assert_eq!(replica.pending(), lies.len());
    // The honest history that follows is adopted; the lies never are.
    let mut a = replica_with(&[&created]);
    let update = a
        .update_backups(&key(1), "s1", vec![id_of(2)], 3_000)
        .unwrap();
    assert!(matches!(
        replica.apply(update.clone(), 3_000),
        Ok(Applied::Superseded { .. })
    ));
    assert_eq!(replica.delta("s1"), Some(&update));
    assert_eq!(replica.pending(), lies.len());
    for (_, lie) in &lies {
        let again = replica.apply(lie.clone(), 3_500);
        assert!(
            matches!(again, Err(Rejection::Unlinked { .. })),
            "{again:?}"
        );
    }
    assert_eq!(replica.pending(), lies.len(), "a copy is not kept twice");
    assert_eq!(replica.gc(3_000 + PENDING_TTL_MS), 0);
    assert_eq!(replica.pending(), 0);
}

fn map_order_above(a: &Record, b: &Record) -> bool {
    precedence(a, b) == Ordering::Greater
}

#[test]
fn a_second_creation_of_a_held_session_is_refused() {
    let (_, created) = opened();
    let mut replica = replica_with(&[&created]);
    // M "creates" s1 itself, same service and start: its id is higher than
    // A's, so under the merge order alone it would win.
    let mut other = created.record.clone();
    other.primary = id_of(9);
    let other = signed(other, &mallory());
    assert_eq!(check(&other.clone().into()), Ok(()));
    assert!(map_order_above(&other, &created.record));
    assert!(matches!(
        replica.apply(other.into(), 2_000),
        Err(Rejection::Unlinked { .. })
    ));
    assert_eq!(replica.delta("s1"), Some(&created));
    assert_eq!(replica.pending(), 0, "a creation never links later");
    assert_eq!(replica.apply(created, 2_000), Ok(Applied::Stale));
}

/// The map refuses a second creation before it reaches the history (see
/// `Map::root`), and every bare delta it checks is a creation: the history
/// holds its own rule all the same.
#[test]
fn a_history_keeps_its_first_creation_as_root_and_roots_nothing_else() {
    let learn = |history: &mut History, delta: &Delta| {
        let delta = Arc::new(delta.clone());
        history.learn(
            &delta,
            short(&fingerprint(&delta.record)),
            None,
            &delta.record,
        );
    };
    let (_, created) = opened();
    let mut other = created.record.clone();
    other.primary = id_of(9);
    let other: Delta = signed(other, &mallory()).into();
    let mut history = History::default();
    learn(&mut history, &created);
    learn(&mut history, &other);
    assert_eq!(history.root().map(|d| &**d), Some(&created));
    // A bare version other than a creation roots nothing.
    let mut update = created.record.clone();
    update.version = 1;
    let update: Delta = signed(update, &key(1)).into();
    let mut history = History::default();
    learn(&mut history, &update);
    assert!(history.root().is_none());
}

#[test]
fn a_creation_roots_a_session_trusted_on_first_use() {
    let (created, claim_b, claim_d) = two_takeovers();
    // Heard of first through D's claim: trusted on first use, unrooted.
    let mut replica = new_map();
    assert_eq!(replica.apply(claim_d.clone(), 5_000), Ok(Applied::New));
    assert_eq!(replica.chain("s1"), vec![claim_d.clone()]);
    // A creation with another service or start time does not root it.
    for edit in [
        &(|r: &mut Record| r.service = "exec".into()) as &dyn Fn(&mut Record),
        &|r| r.started_ms += 1,
    ] {
        let mut wrong = created.record.clone();
        edit(&mut wrong);
        let wrong = signed(wrong, &key(1));
        assert!(matches!(
            replica.apply(wrong.into(), 5_000),
            Err(Rejection::Unlinked { .. })
        ));
    }
    // The creation roots it, without changing the current version.
    assert_eq!(replica.apply(created.clone(), 5_000), Ok(Applied::Stale));
    assert_eq!(replica.delta("s1"), Some(&claim_d));
    assert_eq!(replica.chain("s1"), vec![created.clone(), claim_d.clone()]);
    // Rooted, another creation is refused.
    let mut other = created.record.clone();
    other.primary = id_of(9);
    let other = signed(other, &mallory());
    assert!(matches!(
        replica.apply(other.clone().into(), 5_000),
        Err(Rejection::Unlinked { .. })
    ));
    // Where the versions held show who created the session (B's claim cites
    // A's epoch 1), a creation by anyone else is refused even unrooted.
    let mut tofu = new_map();
    tofu.apply(claim_b.clone(), 5_000).unwrap();
    assert!(matches!(
        tofu.apply(other.into(), 5_000),
        Err(Rejection::Unlinked { .. })
    ));
    assert_eq!(tofu.stats().rejected_unlinked, 1);
    // And the real one roots it, though its version was known already (B's
    // claim carries it).
    assert_eq!(tofu.chain("s1"), vec![claim_b.clone()]);
    assert_eq!(tofu.apply(created.clone(), 5_000), Ok(Applied::Stale));
    assert_eq!(tofu.chain("s1"), vec![created, claim_b]);
}

#[test]
fn an_opener_whose_version_is_known_is_still_kept_to_serve() {
    // Heard of first through D's update, which carries D's claim as its
    // credential: the claim's version is known, but not how D came to be
    // primary, which a peer behind needs.
    let (created, claim_b, claim_d) = two_takeovers();
    let mut d = replica_with(&[&claim_d]);
    let update_d = d.update_backups(&key(4), "s1", vec![], 6_000).unwrap();
    let mut replica = replica_with(&[&update_d]);
    for delta in [&created, &claim_b, &claim_d] {
        assert_eq!(replica.apply(delta.clone(), 6_000), Ok(Applied::Stale));
    }
    let chain = replica.chain("s1");
    assert_eq!(
        chain,
        vec![created.clone(), claim_b, claim_d, update_d.clone()]
    );
    let mut behind = replica_with(&[&created]);
    for delta in chain {
        behind.apply(delta, 7_000).unwrap();
    }
    assert_eq!(behind.delta("s1"), Some(&update_d));
}

#[test]
fn the_update_after_a_handover_stands_in_for_it_until_it_arrives() {
    let (mut a, created) = opened();
    let handover = a
        .handover(&key(1), "s1", id_of(5), "transfer", vec![], 2_000)
        .unwrap();
    let mut e = replica_with(&[&handover]);
    let by_e = e
        .update_backups(&key(5), "s1", vec![id_of(1)], 2_100)
        .unwrap();
    // Linked through the handover it carries; served as the epoch's opener.
    let mut replica = replica_with(&[&created, &by_e]);
    assert_eq!(replica.chain("s1"), vec![created.clone(), by_e.clone()]);
    let mut behind = replica_with(&[&created]);
    for delta in replica.chain("s1") {
        behind.apply(delta, 3_000).unwrap();
    }
    assert_eq!(behind.delta("s1"), Some(&by_e));
    // The handover itself replaces the stand-in.
    assert_eq!(replica.apply(handover.clone(), 3_000), Ok(Applied::Stale));
    assert_eq!(replica.chain("s1"), vec![created, handover, by_e]);
}

#[test]
fn versions_by_a_known_primary_link_across_missed_versions() {
    let (mut a, created) = opened();
    let mut replica = replica_with(&[&created]);
    // A's third update cites its second, which the replica never saw: A is
    // the primary of epoch 1 it knows.
    a.update_backups(&key(1), "s1", vec![id_of(2)], 2_000)
        .unwrap();
    a.update_backups(&key(1), "s1", vec![id_of(3)], 2_100)
        .unwrap();
    let third = a.update_backups(&key(1), "s1", vec![], 2_200).unwrap();
    assert!(matches!(
        replica.apply(third.clone(), 3_000),
        Ok(Applied::Superseded { .. })
    ));
    // A hands over to E, who updates: E's update cites the handover A
    // wrote, the first version of an epoch by the known primary of the one
    // before.
    let handover = a
        .handover(&key(1), "s1", id_of(5), "transfer", vec![], 2_300)
        .unwrap();
    let mut e = replica_with(&[&handover]);
    let by_e = e
        .update_backups(&key(5), "s1", vec![id_of(1)], 2_400)
        .unwrap();
    assert!(matches!(
        replica.apply(by_e.clone(), 3_000),
        Ok(Applied::Superseded { .. })
    ));
    assert_eq!(replica.delta("s1"), Some(&by_e));
    assert_eq!(replica.stats().rejected_unlinked, 0);
}

#[test]
fn a_handover_trusted_on_first_use_links_by_its_fingerprint() {
    // First heard of through E's update, whose credential is A's handover
    // to E (naming C backup): this replica knows nothing of epoch 1, yet a
    // claim by C citing that handover cites a version it knows.
    let (mut a, _) = opened();
    let handover = a
        .handover(&key(1), "s1", id_of(5), "transfer", vec![id_of(3)], 2_000)
        .unwrap();
    let mut e = replica_with(&[&handover]);
    let by_e = e
        .update_backups(&key(5), "s1", vec![id_of(3)], 2_100)
        .unwrap();
    let mut c = replica_with(&[&handover]);
    let claim_c = c.claim(&key(3), "s1", "takeover", vec![], 2_200).unwrap();
    let mut replica = replica_with(&[&by_e]);
    assert!(matches!(
        replica.apply(claim_c.clone(), 3_000),
        Ok(Applied::Superseded { .. })
    ));
    assert_eq!(replica.delta("s1"), Some(&claim_c));
}

/// "s1" handed back and forth between A and B `epochs - 1` times, and C's
/// losing claim at epoch 2 (not applied). Returns A's map, the creation and
/// C's claim.
fn long_history(epochs: u64) -> (Map, Delta, Delta) {
    let (mut a, created) = opened();
    let mut c = replica_with(&[&created]);
    let losing = c.claim(&key(3), "s1", "takeover", vec![], 1_500).unwrap();
    for e in 1..epochs {
        let (from, to) = if e % 2 == 1 { (1, 2) } else { (2, 1) };
        a.handover(
            &key(from),
            "s1",
            id_of(to),
            "transfer",
            vec![id_of(from)],
            2_000 + e,
        )
        .unwrap();
    }
    (a, created, losing)
}

#[test]
fn openers_on_the_current_chain_are_the_last_forgotten() {
    let epochs = MAX_OPENERS as u64 + 1;
    let (mut a, created, losing) = long_history(epochs);
    assert_eq!(a.get("s1").unwrap().epoch, epochs);
    // C's claim comes late: stale, learned as an opener of epoch 2 off the
    // current chain, one beyond the cap. It goes, though B's opener of
    // epoch 2 sorts lower.
    assert_eq!(a.chain("s1").len(), 1 + MAX_OPENERS);
    assert_eq!(a.apply(losing.clone(), 9_000), Ok(Applied::Stale));
    let chain = a.chain("s1");
    assert_eq!(chain.len(), 1 + MAX_OPENERS);
    assert!(!chain.contains(&losing), "the opener off the chain went");
    // The whole chain is there: a replica that only saw the creation links
    // the current version through it.
    let mut behind = replica_with(&[&created]);
    for d in chain {
        behind.apply(d, 9_000).unwrap();
    }
    assert_eq!(behind.delta("s1"), a.delta("s1"));
}

#[test]
fn a_second_creation_is_refused_after_its_creators_epoch_is_forgotten() {
    // Past MAX_PRIMARIES epochs, A's epoch 1 is no longer among the
    // primaries remembered: the root alone still tells M's creation apart.
    let (mut a, created, _) = long_history(MAX_PRIMARIES as u64 + 2);
    let mut other = created.record.clone();
    other.primary = id_of(9);
    let other = signed(other, &mallory());
    assert!(matches!(
        a.apply(other.into(), 9_000),
        Err(Rejection::Unlinked { .. })
    ));
    assert_eq!(a.apply(created, 9_000), Ok(Applied::Stale));
}

#[test]
fn a_credential_that_does_not_link_is_not_kept() {
    // The current version re-paired with a predecessor M made up: a greater
    // credential by the merge order, but not one to forward.
    let (mut a, created) = opened();
    let update = a.update_backups(&key(1), "s1", vec![], 2_000).unwrap();
    let mut replica = replica_with(&[&created, &update]);
    let fake_prev = made_up(&update.record, |r| {
        r.version = 0;
        r.reason = "made up".into();
        r.updated_ms = 9_999;
    });
    let repaired = Delta {
        record: update.record.clone(),
        prev: Some(fake_prev.clone()),
    };
    assert_eq!(check(&repaired), Ok(()));
    assert_eq!(
        prev_precedence(Some(&fake_prev), update.prev.as_ref()),
        Ordering::Greater
    );
    assert_eq!(replica.apply(repaired, 3_000), Ok(Applied::Stale));
    assert_eq!(replica.delta("s1"), Some(&update));
}

#[test]
fn the_pool_keeps_the_newest_eight_per_session_and_512_in_all() {
    let k = key(1);
    let mut source = new_map();
    let mut replica = new_map();
    let sessions = MAX_PENDING / MAX_PENDING_PER_SESSION + 1;
    let mut per_session: Vec<Vec<Delta>> = Vec::new();
    for s in 0..sessions {
        let id = format!("p{s}");
        let created = source.open(&k, new_session(&id, vec![]), 0).unwrap();
        replica.apply(created.clone(), 0).unwrap();
        // Distinct lies: M's made-up epoch-1 versions, handed to D.
        let lies: Vec<Delta> = (0..MAX_PENDING_PER_SESSION as u64 + 2)
            .map(|n| {
                let prev = made_up(&created.record, |r| {
                    r.primary = id_of(9);
                    r.version = n;
                });
                let record = made_up(&prev, |r| {
                    r.epoch = 2;
                    r.version = 0;
                    r.primary = id_of(4);
                });
                Delta {
                    record,
                    prev: Some(prev),
                }
            })
            .collect();
        per_session.push(lies);
    }
    // First session: ten lies, the newest eight wait.
    for (n, lie) in per_session[0].iter().enumerate() {
        assert!(replica.apply(lie.clone(), 1_000 + n as u64).is_err());
    }
    let waiting: Vec<&Delta> = replica.pending_of("p0").collect();
    assert_eq!(waiting.len(), MAX_PENDING_PER_SESSION);
    assert_eq!(
        waiting,
        per_session[0][2..].iter().collect::<Vec<_>>(),
        "the oldest go first"
    );
    // Eight in each further session: the pool fills to 512, then the oldest
    // of all go.
    for lies in &per_session[1..] {
        for lie in &lies[..MAX_PENDING_PER_SESSION] {
            let _ = replica.apply(lie.clone(), 2_000);
        }
    }
    assert_eq!(replica.pending(), MAX_PENDING);
    assert_eq!(replica.pending_of("p0").count(), 0, "p0's were the oldest");
    let last = format!("p{}", sessions - 1);
    assert_eq!(replica.pending_of(&last).count(), MAX_PENDING_PER_SESSION);
    assert_eq!(
        replica.stats().rejected_unlinked,
        (MAX_PENDING_PER_SESSION + 2 + (sessions - 1) * MAX_PENDING_PER_SESSION) as u64
    );
    for s in 0..sessions {
        assert_eq!(replica.get(&format!("p{s}")).unwrap().epoch, 1);
    }
}

#[test]
fn waiting_versions_expire_after_their_ttl() {
    let (created, claim_b, claim_d) = two_takeovers();
    let mut replica = replica_with(&[&created]);
    assert!(replica.apply(claim_d.clone(), 10_000).is_err());
    assert_eq!(replica.gc(10_000 + PENDING_TTL_MS - 1), 0);
    assert_eq!(replica.pending(), 1);
    replica.gc(10_000 + PENDING_TTL_MS);
    assert_eq!(replica.pending(), 0);
    // Too late: B's claim is adopted alone, D's must come again.
    replica.apply(claim_b.clone(), 80_000).unwrap();
    assert_eq!(replica.delta("s1"), Some(&claim_b));
    assert!(matches!(
        replica.apply(claim_d.clone(), 80_000),
        Ok(Applied::Superseded { .. })
    ));
}

#[test]
fn collecting_a_tombstone_drops_what_waits_for_it() {
    let ttl = 1_000;
    let mut map = Map::new(Config {
        tombstone_ttl_ms: ttl,
        ..Config::default()
    });
    let created = map
        .open(&key(1), new_session("s1", vec![id_of(2)]), 0)
        .unwrap();
    let lie = lies(&created.record).remove(0).1;
    map.close(&key(1), "s1", 0).unwrap();
    assert!(map.apply(lie, 0).is_err());
    assert_eq!(map.pending(), 1);
    assert_eq!(map.gc(ttl), 1);
    assert_eq!(map.pending(), 0);
}

// -- Tombstones ---------------------------------------------------------------

#[test]
fn closed_sessions_stay_closed() {
    let (mut a, created) = opened();
    let update = a
        .update_backups(&key(1), "s1", vec![id_of(2)], 1_500)
        .unwrap();
    let closed = a.close(&key(1), "s1", 2_000).unwrap();
    assert_eq!(closed.record.state, SessionState::Closed);
    assert_eq!(a.active().count(), 0);
    assert_eq!(a.len(), 1);

    // Every delivery order ends closed.
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let all = [&created, &update, &closed];
        let mut replica = new_map();
        for i in order {
            replica.apply(all[i].clone(), 3_000).unwrap();
        }
        assert_eq!(replica.get("s1"), Some(&closed.record));
    }

    // No successor of a tombstone: not the primary, not a backup's claim.
    assert_eq!(
        a.update_backups(&key(1), "s1", vec![], 3_000),
        Err(WriteError::Closed { id: "s1".into() })
    );
    let mut b = replica_with(&[&closed]);
    assert_eq!(
        b.claim(&key(2), "s1", "takeover", vec![], 3_000),
        Err(WriteError::Closed { id: "s1".into() })
    );
    let mut reopen = closed.record.clone();
    reopen.version += 1;
    reopen.state = SessionState::Active;
    let reopen = signed(reopen, &key(1));
    let mut claim = closed.record.clone();
    claim.epoch += 1;
    claim.version = 0;
    claim.state = SessionState::Active;
    claim.primary = id_of(2);
    claim.backups = vec![];
    let claim = signed(claim, &key(2));
    for record in [reopen, claim] {
        assert!(matches!(
            b.apply(
                Delta {
                    record,
                    prev: Some(closed.record.clone())
                },
                3_000
            ),
            Err(Rejection::NoAuthority { .. })
        ));
    }
    assert_eq!(b.get("s1"), Some(&closed.record));
}

#[test]
fn gc_collects_old_tombstones_only() {
    let ttl = 60_000;
    let mut map = Map::new(Config {
        tombstone_ttl_ms: ttl,
        ..Config::default()
    });
    let k = key(1);
    let old = map.open(&k, new_session("old", vec![]), 0).unwrap();
    map.close(&k, "old", 1_000).unwrap();
    map.open(&k, new_session("young", vec![]), 0).unwrap();
    map.close(&k, "young", 30_000).unwrap();
    map.open(&k, new_session("running", vec![]), 0).unwrap();

    assert_eq!(map.gc(60_999), 0);
    let before = map.digest();
    assert_eq!(map.gc(61_000), 1);
    assert_eq!(map.get("old"), None);
    assert!(map.get("young").is_some());
    assert!(map.get("running").is_some());
    // A peer that still holds the tombstone sees no difference.
    assert_eq!(map.diff(&before), Vec::<u8>::new());

    // The creation still in flight does not resurrect the session.
    assert_eq!(map.apply(old.clone(), 62_000), Ok(Applied::Stale));
    assert_eq!(map.get("old"), None);
    assert!(matches!(
        map.open(&k, new_session("old", vec![]), 62_000),
        Err(WriteError::Exists { .. })
    ));

    assert_eq!(map.gc(90_000), 1);
    assert_eq!(map.get("young"), None);
    assert!(map.get("running").is_some());
    assert_eq!(map.gc(10_000_000), 0);
    assert_eq!(map.len(), 1);
    // Once the rank is forgotten too, the digest no longer counts it.
    let mut fresh = Map::new(Config {
        tombstone_ttl_ms: ttl,
        ..Config::default()
    });
    fresh
        .apply(map.delta("running").unwrap().clone(), 0)
        .unwrap();
    assert_eq!(map.diff(&fresh.digest()), Vec::<u8>::new());
}

// -- Merge determinism --------------------------------------------------------

#[test]
fn same_version_with_another_credential_keeps_the_greater_one() {
    // A writes version 2 citing version 1; the same version 2 could be
    // carried citing the creation (A skipped nothing, but a relay may pair it
    // differently): every replica keeps the same pair.
    let (mut a, created) = opened();
    let v1 = a
        .update_backups(&key(1), "s1", vec![id_of(2)], 1_500)
        .unwrap();
    let v2 = a
        .update_backups(&key(1), "s1", vec![id_of(3)], 2_000)
        .unwrap();
    let other = Delta {
        record: v2.record.clone(),
        prev: Some(created.record.clone()),
    };
    let mut x = replica_with(&[&v2, &other]);
    let mut y = replica_with(&[&other, &v2]);
    assert_eq!(x.delta("s1"), y.delta("s1"));
    assert_eq!(x.apply(v1.clone(), 3_000), Ok(Applied::Stale));
    assert_eq!(y.apply(v1, 3_000), Ok(Applied::Stale));
    assert_eq!(x.delta("s1"), y.delta("s1"));
}

#[test]
fn duplicates_are_stale_and_not_errors() {
    let (_, created) = opened();
    let mut replica = new_map();
    assert_eq!(replica.apply(created.clone(), 1), Ok(Applied::New));
    assert_eq!(replica.apply(created.clone(), 2), Ok(Applied::Stale));
    assert_eq!(replica.apply(created, 3), Ok(Applied::Stale));
    let stats = replica.stats();
    assert_eq!((stats.accepted, stats.stale), (1, 2));
}

#[test]
fn open_refuses_a_known_id_and_bad_arguments() {
    let (mut a, _) = opened();
    assert!(matches!(
        a.open(&key(1), new_session("s1", vec![]), 2_000),
        Err(WriteError::Exists { .. })
    ));
    assert!(matches!(
        a.open(&key(1), new_session("bad id", vec![]), 2_000),
        Err(WriteError::Rejected(Rejection::Invalid(_)))
    ));
    assert!(matches!(
        a.open(&key(1), new_session("s3", vec![id_of(1)]), 2_000),
        Err(WriteError::Rejected(Rejection::Invalid(_)))
    ));
    assert_eq!(a.len(), 1);
    assert_eq!(a.stats(), Stats::default());
}

#[test]
fn a_signer_whose_key_does_not_match_its_id_cannot_write() {
    #[derive(Debug)]
    struct Liar(LocalKey, NodeId);
    impl Signer for Liar {
        fn id(&self) -> &NodeId {
            &self.1
        }
        fn sign(&self, bytes: &[u8]) -> Vec<u8> {
            Signer::sign(&self.0, bytes)
        }
    }
    let mut map = new_map();
    let liar = Liar(key(1), id_of(2));
    assert!(matches!(
        map.open(&liar, new_session("s1", vec![]), 0),
        Err(WriteError::Rejected(Rejection::BadSignature { .. }))
    ));
    assert!(map.is_empty());
}

// -- Anti-entropy -------------------------------------------------------------

#[test]
fn digests_depend_on_content_not_on_order() {
    let k = key(1);
    let mut source = new_map();
    let deltas: Vec<Delta> = (0..40)
        .map(|i| {
            source
                .open(&k, new_session(&format!("s{i}"), vec![]), i)
                .unwrap()
        })
        .collect();
    let mut forward = new_map();
    let mut backward = new_map();
    for d in &deltas {
        forward.apply(d.clone(), 0).unwrap();
    }
    for d in deltas.iter().rev() {
        backward.apply(d.clone(), 0).unwrap();
    }
    assert_eq!(forward.digest(), backward.digest());
    assert_eq!(forward.digest(), source.digest());
    assert!(forward.diff(&backward.digest()).is_empty());

    let update = source
        .update_backups(&k, "s7", vec![id_of(2)], 100)
        .unwrap();
    assert_eq!(forward.diff(&source.digest()), vec![bucket_of("s7")]);
    let sent = source.records_in(&[bucket_of("s7")]);
    assert!(sent.contains(&update));
    assert!(sent.iter().all(|d| bucket_of(d.id()) == bucket_of("s7")));
    for d in sent {
        forward.apply(d, 200).unwrap();
    }
    assert_eq!(forward.digest(), source.digest());
}

#[test]
fn delta_and_sync_messages_round_trip() {
    let (mut a, created) = opened();
    let update = a
        .update_backups(&key(1), "s1", vec![id_of(2)], 1_500)
        .unwrap();
    for d in [&created, &update] {
        assert_eq!(Delta::decode(&d.encode()).as_ref(), Ok(d));
    }
    let messages = [
        SyncMessage::Digest(a.digest()),
        SyncMessage::Want(vec![0, 7, 255]),
        SyncMessage::Records(vec![created, update]),
    ];
    for m in messages {
        assert_eq!(SyncMessage::decode(&m.encode()), Ok(m));
    }
}

#[test]
fn decoders_refuse_oversized_trailing_and_malformed_input() {
    assert!(matches!(
        SyncMessage::decode(&vec![0; MAX_SYNC_BYTES + 1]),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        Delta::decode(&vec![0; MAX_DELTA_BYTES + 1]),
        Err(DecodeError::TooLarge { .. })
    ));
    let mut trailing = SyncMessage::Want(vec![1]).encode();
    trailing.push(0);
    assert!(matches!(
        SyncMessage::decode(&trailing),
        Err(DecodeError::Malformed(_))
    ));
    for garbage in [&[][..], &[0xff], &[0xa1, 0x61, 0x64, 0x41, 0]] {
        assert!(SyncMessage::decode(garbage).is_err());
        assert!(Delta::decode(garbage).is_err());
    }
    let too_many = SyncMessage::Want(vec![0; BUCKETS + 1]).encode();
    assert!(matches!(
        SyncMessage::decode(&too_many),
        Err(DecodeError::Limit(_))
    ));
    let (_, created) = opened();
    let too_many = SyncMessage::Records(vec![created; MAX_RECORDS_PER_MESSAGE + 1]).encode();
    assert!(matches!(
        SyncMessage::decode(&too_many),
        Err(DecodeError::Limit(_))
    ));
}

#[test]
fn records_are_sent_in_bounded_chunks() {
    let (_, created) = opened();
    let deltas = vec![created; MAX_RECORDS_PER_MESSAGE * 2 + 3];
    let messages = SyncMessage::records(deltas);
    let sizes: Vec<usize> = messages
        .iter()
        .map(|m| match m {
            SyncMessage::Records(d) => d.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(
        sizes,
        vec![MAX_RECORDS_PER_MESSAGE, MAX_RECORDS_PER_MESSAGE, 3]
    );
    for m in &messages {
        assert!(SyncMessage::decode(&m.encode()).is_ok());
    }

    // Large records: the byte cap splits before the count does.
    let mut big = new_map();
    let params: BTreeMap<String, String> = (0..32)
        .map(|i| (format!("{i:064}"), "v".repeat(1024)))
        .collect();
    let deltas: Vec<Delta> = (0..200)
        .map(|i| {
            let mut s = new_session(&format!("big{i}"), vec![]);
            s.params = params.clone();
            big.open(&key(1), s, 0).unwrap()
        })
        .collect();
    let messages = SyncMessage::records(deltas);
    assert!(messages.len() >= 2);
    for m in &messages {
        let bytes = m.encode();
        assert!(bytes.len() <= MAX_SYNC_BYTES);
        assert!(SyncMessage::decode(&bytes).is_ok());
    }
}

/// Deltas whose encodings add up to exactly the byte budget go in one
/// message; one byte more starts a second.
#[test]
fn records_filling_the_byte_budget_exactly_go_in_one_message() {
    let mut big = new_map();
    let value = "v".repeat(MAX_PARAM_VALUE_BYTES);
    let mut n = 0;
    let mut delta = |map: &mut Map, full: usize, last: usize| {
        let mut s = new_session(&format!("big{n:05}"), vec![]);
        n += 1;
        s.params = (0..full)
            .map(|i| (format!("{i:02}"), value.clone()))
            .collect();
        s.params.insert("zz".into(), "v".repeat(last));
        map.open(&key(1), s, 0).unwrap()
    };
    let full = delta(&mut big, MAX_PARAMS - 1, MAX_PARAM_VALUE_BYTES);
    let size = full.encode().len();
    let count = RECORDS_BUDGET / size;
    let mut deltas: Vec<Delta> = (0..count - 1)
        .map(|_| delta(&mut big, MAX_PARAMS - 1, MAX_PARAM_VALUE_BYTES))
        .collect();
    deltas.push(full);
    let used: usize = deltas.iter().map(|d| d.encode().len()).sum();
    // A last delta of exactly `want` bytes (and one of `want + 1`): some
    // full parameters and one whose value is cut to fit.
    let mut exactly = |map: &mut Map, want: usize| {
        let scratch = &mut new_map();
        for full in 0..MAX_PARAMS {
            let (mut lo, mut hi) = (0, MAX_PARAM_VALUE_BYTES);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if delta(scratch, full, mid).encode().len() < want {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let d = delta(map, full, lo);
            if d.encode().len() == want {
                return d;
            }
        }
        panic!("no delta of {want} bytes");
    };
    let rest = RECORDS_BUDGET - used;
    let fits = exactly(&mut big, rest);
    let over = exactly(&mut big, rest + 1);
    let chunks = |last: Delta| {
        let mut all = deltas.clone();
        all.push(last);
        SyncMessage::records(all)
    };
    let one = chunks(fits);
    assert_eq!(one.len(), 1, "exactly the budget: one message");
    assert!(one[0].encode().len() <= MAX_SYNC_BYTES);
    assert_eq!(chunks(over).len(), 2, "a byte over: two");
}

#[test]
fn reconcile_sends_only_differing_versions_both_ways() {
    let k = key(1);
    let mut a = new_map();
    for i in 0..30 {
        a.open(&k, new_session(&format!("s{i}"), vec![id_of(2)]), 0)
            .unwrap();
    }
    let mut b = a.clone();
    let newer_on_a = a.update_backups(&k, "s3", vec![], 10).unwrap();
    let only_on_a = a.open(&k, new_session("a-only", vec![]), 10).unwrap();
    let newer_on_b = b.claim(&key(2), "s5", "takeover", vec![], 10).unwrap();
    let only_on_b = b.open(&k, new_session("b-only", vec![]), 10).unwrap();

    let differing = b.diff(&a.digest());
    let versions = b.versions_in(&differing);
    let encoded = SyncMessage::Versions(versions.clone()).encode();
    assert_eq!(
        SyncMessage::decode(&encoded),
        Ok(SyncMessage::Versions(versions.clone()))
    );
    let (send, want) = a.reconcile(&versions);
    // A sends what B lacks (its newer s3, a-only, and its older s5).
    let sent: BTreeSet<&str> = send.iter().map(Delta::id).collect();
    assert_eq!(sent, BTreeSet::from(["s3", "a-only", "s5"]));
    assert!(send.contains(&newer_on_a) && send.contains(&only_on_a));
    // And asks for what it lacks.
    let wanted: BTreeSet<u64> = want.iter().copied().collect();
    assert_eq!(
        wanted,
        BTreeSet::from([id_hash("s3"), id_hash("s5"), id_hash("b-only")])
    );
    let back = b.records_named(&want);
    assert!(back.contains(&newer_on_b) && back.contains(&only_on_b));

    for d in send {
        b.apply(d, 20).unwrap();
    }
    for d in back {
        a.apply(d, 20).unwrap();
    }
    assert_eq!(a.digest(), b.digest());
    assert!(a.deltas().eq(b.deltas()));
}

#[test]
fn reconcile_treats_a_collected_tombstone_as_held() {
    let ttl = 1_000;
    let k = key(1);
    let mut a = Map::new(Config {
        tombstone_ttl_ms: ttl,
        ..Config::default()
    });
    a.open(&k, new_session("s1", vec![]), 0).unwrap();
    a.close(&k, "s1", 0).unwrap();
    let b = a.clone();
    a.gc(ttl);
    assert_eq!(a.get("s1"), None);
    assert_eq!(a.digest(), b.digest());
    let (send, want) = a.reconcile(&b.versions_in(&[bucket_of("s1")]));
    assert!(send.is_empty());
    assert!(want.is_empty());
}

#[test]
fn check_enforces_each_step_rule_on_its_own() {
    let (_, created) = opened();
    let base = &created.record;
    let with = |f: &dyn Fn(&mut Record), by: u8| {
        let mut r = base.clone();
        f(&mut r);
        check(&Delta {
            record: signed(r, &key(by)),
            prev: Some(base.clone()),
        })
    };
    let denied =
        |result: Result<(), Rejection>| matches!(result, Err(Rejection::NoAuthority { .. }));
    // The primary rewriting its version without raising it (equivocation).
    assert!(denied(with(&|r| r.client = "198.18.0.9:5004".into(), 1)));
    // An update by the primary is fine.
    assert_eq!(with(&|r| r.version = 1, 1), Ok(()));
    // Changing the primary within the epoch.
    assert!(denied(with(
        &|r| {
            r.version = 1;
            r.primary = id_of(4);
        },
        1
    )));
    // A new epoch that does not start at version 0.
    assert!(denied(with(
        &|r| {
            r.epoch = 2;
            r.version = 3;
            r.primary = id_of(2);
            r.backups = vec![];
        },
        2
    )));
    // A backup claiming for someone else.
    assert!(denied(with(
        &|r| {
            r.epoch = 2;
            r.primary = id_of(4);
            r.backups = vec![];
        },
        2
    )));
    // A claim that closes the session at once.
    assert!(denied(with(
        &|r| {
            r.epoch = 2;
            r.primary = id_of(2);
            r.backups = vec![];
            r.state = SessionState::Closed;
        },
        2
    )));
    // A primary bumping the epoch for itself.
    assert!(denied(with(&|r| r.epoch = 2, 1)));
    // A creation at epoch 2, or closed, or with a version.
    for f in [
        &(|r: &mut Record| r.epoch = 2) as &dyn Fn(&mut Record),
        &|r| r.version = 1,
        &|r| r.state = SessionState::Closed,
    ] {
        let mut r = base.clone();
        f(&mut r);
        assert!(denied(check(&signed(r, &key(1)).into())));
    }
}

#[test]
fn digest_roots_tell_equal_maps_from_different_ones() {
    let key = LocalKey::from_seed([9; 32]);
    let mut a = Map::new(Config::default());
    let b = Map::new(Config::default());
    assert_eq!(a.digest().root(), b.digest().root());
    a.open(
        &key,
        NewSession {
            id: "root-test".into(),
            service: "rtp-audio".into(),
            client: "127.0.0.1:5004".into(),
            location: "127.0.0.0/24".into(),
            ..NewSession::default()
        },
        1,
    )
    .unwrap();
    assert_ne!(a.digest().root(), b.digest().root());
    let message = SyncMessage::Root(a.digest().root());
    assert_eq!(SyncMessage::decode(&message.encode()).unwrap(), message);
}

/// Bounded state driven by fresh session ids: however many never-repeating
/// sessions come, with versions that wait for their history and with
/// closes, the pool stays within [`MAX_PENDING`] ([`MAX_PENDING_PER_SESSION`]
/// each) and forgets what waited [`PENDING_TTL_MS`], tombstones are
/// collected a TTL after they were stored, and their graves one TTL later.
mod bounded {
    use super::*;
    use proptest::prelude::*;

    /// How often the engine calls [`Map::gc`] (its `gc_interval`), ms.
    const GC_EVERY: u64 = 10_000;

    /// `n` distinct versions of `created`'s session that cite a made-up
    /// predecessor: each passes the one-hop check and waits.
    fn unlinked(created: &Record, n: usize) -> Vec<Delta> {
        (0..n as u64)
            .map(|v| {
                let prev = made_up(created, |r| {
                    r.primary = id_of(9);
                    r.version = v;
                });
                let record = made_up(&prev, |r| {
                    r.epoch = 2;
                    r.version = 0;
                    r.primary = id_of(4);
                });
                Delta {
                    record,
                    prev: Some(prev),
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn the_pool_and_the_tombstones_of_fresh_sessions_stay_capped_and_expire(
            burst in 1usize..16,
            steps in proptest::collection::vec((0u8..2, 1usize..40, 1usize..12, 0u64..400_000), 1..24),
        ) {
            let k = key(1);
            let mut source = new_map();
            let mut replica = new_map();
            let ttl = Config::default().tombstone_ttl_ms;
            let mut now = 1_000u64;
            let mut next = 0u64;
            // When each waiting version arrived, and each tombstone was stored.
            let mut waited: Vec<u64> = Vec::new();
            let mut closed: Vec<u64> = Vec::new();
            let mut active = 0usize;
            // A burst past the cap at one moment: the pool holds MAX_PENDING.
            let steps = std::iter::once((0u8, MAX_PENDING / MAX_PENDING_PER_SESSION + burst, MAX_PENDING_PER_SESSION + 1, 0u64))
                .chain(steps);
            let mut first = true;
            for (kind, sessions, versions, advance) in steps {
                for _ in 0..sessions {
                    let id = format!("f{next}");
                    next += 1;
                    let created = source.open(&k, new_session(&id, vec![]), now).unwrap();
                    replica.apply(created.clone(), now).unwrap();
                    if kind == 0 {
                        active += 1;
                        for lie in unlinked(&created.record, versions) {
                            let refused = replica.apply(lie, now);
                            prop_assert!(
                                matches!(refused, Err(Rejection::Unlinked { .. })),
                                "{refused:?}"
                            );
                            waited.push(now);
                        }
                        prop_assert!(replica.pending_of(&id).count() <= MAX_PENDING_PER_SESSION);
                    } else {
                        let close = source.close(&k, &id, now).unwrap();
                        replica.apply(close, now).unwrap();
                        closed.push(now);
                    }
                    prop_assert!(replica.pending() <= MAX_PENDING);
                }
                if std::mem::take(&mut first) {
                    prop_assert_eq!(replica.pending(), MAX_PENDING);
                }
                // The engine collects every `gc_interval` (10 s).
                let end = now + advance;
                while now < end {
                    now = (now + GC_EVERY).min(end);
                    replica.gc(now);
                }
                let young = |since: &[u64], age: u64| {
                    since.iter().filter(|t| now < **t + age).count()
                };
                prop_assert!(replica.pending() <= MAX_PENDING);
                prop_assert!(
                    replica.pending() <= young(&waited, PENDING_TTL_MS),
                    "a version waited past PENDING_TTL_MS"
                );
                // Tombstones a TTL old are collected; graves a TTL later.
                let tombstones = replica.len() - active;
                prop_assert!(tombstones <= young(&closed, ttl), "{tombstones} tombstones");
                prop_assert!(
                    tombstones + replica.graves() <= young(&closed, 2 * ttl + GC_EVERY),
                    "graves outlive a second TTL"
                );
            }
            // Nothing new for two TTLs: only the active sessions remain.
            let end = now + 2 * ttl + 2 * GC_EVERY;
            while now < end {
                now += GC_EVERY;
                replica.gc(now);
            }
            prop_assert_eq!(replica.pending(), 0);
            prop_assert_eq!(replica.graves(), 0);
            prop_assert_eq!(replica.len(), active);
        }
    }
}

#[test]
fn reasons_are_kept_whole_up_to_the_cap_and_a_cut_shows() {
    // A failure reason of 100 characters is kept whole (a closing reason
    // was once cut at 64 characters, mid-sentence).
    let (mut map, _) = opened();
    let why = format!(
        "failed: the service would not run on {}: {}",
        id_of(1),
        "x".repeat(50)
    );
    assert!(why.len() > 64 && why.len() <= MAX_REASON_BYTES);
    map.close_because(&key(1), "s1", &why, 2_000).unwrap();
    assert_eq!(map.get("s1").unwrap().reason, why);
    // Longer than the cap: cut at a character boundary, marked, valid.
    let long = "é".repeat(200);
    let fitted = fit_reason(&long);
    assert!(fitted.len() <= MAX_REASON_BYTES, "{}", fitted.len());
    assert!(fitted.ends_with('…') && long.starts_with(fitted.trim_end_matches('…')));
    assert_eq!(fit_reason("short"), "short");
    // A claim or handover with a long reason is written, cut, not refused.
    let (mut a, created) = opened();
    let mut b = replica_with(&[&created]);
    let claimed = b
        .claim(
            &key(2),
            "s1",
            &"takeover ".repeat(40),
            vec![id_of(3)],
            3_000,
        )
        .unwrap();
    assert!(claimed.record.reason.ends_with('…'));
    a.apply(claimed, 4_000).unwrap();
    assert_eq!(a.get("s1").unwrap().primary, id_of(2));
}

#[test]
fn untrusted_text_is_shown_quoted_and_cut_at_64_characters_with_an_ellipsis() {
    assert_eq!(shown("abc"), "\"abc\"");
    let exactly = "x".repeat(64);
    assert_eq!(shown(&exactly), format!("{exactly:?}"));
    let longer = "y".repeat(65);
    assert_eq!(shown(&longer), format!("{:?}...", "y".repeat(64)));
    // Characters, not bytes: 64 two-byte letters are not cut.
    let wide = "é".repeat(64);
    assert_eq!(shown(&wide), format!("{wide:?}"));
}

/// A version 0 opens an epoch only over a version of an earlier epoch: one
/// whose predecessor is of its own epoch opens nothing.
#[test]
fn a_first_version_opens_an_epoch_only_over_an_earlier_one() {
    let (_, created) = opened();
    let mut prev = created.record.clone();
    let mut next = created.record.clone();
    next.epoch = prev.epoch + 1;
    let over_earlier = Delta {
        record: next.clone(),
        prev: Some(prev.clone()),
    };
    assert_eq!(
        super::link::Opening::of(&over_earlier),
        super::link::Opening::Opener
    );
    prev.epoch = next.epoch;
    let over_same = Delta {
        record: next,
        prev: Some(prev),
    };
    assert_eq!(
        super::link::Opening::of(&over_same),
        super::link::Opening::No
    );
}
