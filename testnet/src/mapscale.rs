//! How far the replicated session map goes: what one node holds, receives
//! and sends as the overlay's session count grows, measured on the real
//! map and session engine of `baton-protocol` (no simulation of them).
//!
//! For each session count it builds the sessions as their primaries write
//! them (ed25519-signed opens, two backups each, the record shapes the node
//! mints), then measures
//!
//! - on the wire: a session's delta (a record with its signature, CBOR) and
//!   a whole map pulled by a node that restarted empty ([`SyncMessage`]
//!   `Records` frames);
//! - in memory: the heap a node's session engine (its map, its indices)
//!   holds once it has decoded and applied every delta, read from the
//!   allocator (glibc's `mallinfo2`), and the CPU that took (decoding and
//!   verifying each signature: what a node that restarts empty pays);
//! - anti-entropy: the bytes of the `/baton/sync/2` exchange the node runs
//!   (digest, versions of the buckets that differ, the records each lacks,
//!   the ids it wants) between two replicas that differ in 1 session, in
//!   1 % and in 10 % of them (a healed partition's takeovers), checked to
//!   leave both replicas equal.
//!
//! Idle anti-entropy costs nothing that grows: the map's 8-byte digest root
//! rides on SWIM's periodic membership sync. What grows with the sessions
//! is this module's figures; what grows with churn is one delta per change
//! at every node, which [`Figures::per_change_bytes`] holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_protocol::NodeId;
use baton_protocol::map::{Delta, LocalKey, NewSession, SyncMessage};
use baton_protocol::session::{Record, Signer};
use baton_protocol::sessions::{self, Engine};
use serde::Serialize;

use crate::sys::heap_in_use;

/// Writers (primaries) the sessions are spread over.
const WRITERS: usize = 100;

/// The session counts measured by default.
pub const DEFAULT_SESSIONS: [usize; 3] = [1_000, 10_000, 100_000];

/// What one session count costs a node.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub sessions: usize,
    /// Mean encoded size of one session's delta (its signed record).
    pub delta_bytes: f64,
    /// Heap held by a node's session engine per session, after applying
    /// every delta (allocator figures: record, signature, chain, indices).
    pub memory_bytes_per_session: f64,
    /// The whole engine's heap.
    pub memory_mb: f64,
    /// Decoding, verifying and applying one delta, mean.
    pub apply_us_per_session: f64,
    /// Decoding, verifying and applying the whole map (a node restarted
    /// empty).
    pub apply_s: f64,
    /// The map as a restarted node pulls it: `Records` frames, bytes.
    pub full_pull_bytes: usize,
    pub full_pull_frames: usize,
    /// One change (a backup replaced) as it spreads to every node: its
    /// delta, on every node's wire at least once.
    pub per_change_bytes: usize,
    /// The `/baton/sync/2` exchange between two replicas differing in that
    /// many sessions.
    pub sync: Vec<SyncCost>,
}

/// One anti-entropy exchange between two replicas.
#[derive(Debug, Clone, Serialize)]
pub struct SyncCost {
    /// Sessions that differ (updated on one replica only).
    pub differing: usize,
    /// Buckets that differ (of 256).
    pub buckets: usize,
    /// Bytes both ways, frame payloads: digest, versions, records, ids.
    pub bytes: usize,
    /// Of which the `Versions` frame (16 bytes per session of a differing
    /// bucket).
    pub versions_bytes: usize,
    /// Of which records.
    pub records_bytes: usize,
    /// CPU for the whole exchange's computations on both sides (diff,
    /// versions, reconcile, records, applying them), ms.
    pub cpu_ms: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub writers: usize,
    pub record: String,
    pub points: Vec<Figures>,
    pub wall_s: f64,
}

fn session(i: usize, backups: Vec<NodeId>) -> NewSession {
    let mut id = [0u8; 16];
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in id.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let (a, b) = ((i >> 8) % 256, i % 256);
    NewSession {
        id: id.iter().map(|b| format!("{b:02x}")).collect(),
        service: "rtp-audio".into(),
        params: BTreeMap::new(),
        client: format!("198.18.{a}.{b}:5004"),
        location: format!("198.18.{a}.0/24"),
        backups,
    }
}

/// Measures one session count.
pub fn measure(sessions: usize) -> Result<Figures, String> {
    let keys: Vec<LocalKey> = (0..WRITERS)
        .map(|i| LocalKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let now_ms = 1_000_000;
    // The sessions as their primaries wrote them.
    let mut source = baton_protocol::map::Map::new(Default::default());
    for i in 0..sessions {
        let primary = &keys[i % WRITERS];
        let backups = vec![
            keys[(i + 1) % WRITERS].id().clone(),
            keys[(i + 2) % WRITERS].id().clone(),
        ];
        source
            .open(primary, session(i, backups), now_ms)
            .map_err(|e| format!("open: {e}"))?;
    }
    let deltas: Vec<Delta> = source.deltas().cloned().collect();
    let encoded: Vec<Vec<u8>> = deltas.iter().map(Delta::encode).collect();
    let delta_bytes = encoded.iter().map(Vec::len).sum::<usize>() as f64 / sessions as f64;

    // A node's engine applying all of them, as a restarted node does.
    let node_key = LocalKey::from_seed([0xee; 32]);
    let started = Instant::now();
    let before = heap_in_use();
    let mut engine = Engine::new(
        node_key,
        10,
        sessions::Config::default(),
        started,
        now_ms - 1,
    );
    let apply = Instant::now();
    for bytes in &encoded {
        let delta = Delta::decode(bytes).map_err(|e| format!("decode: {e}"))?;
        engine.import(started, now_ms, [delta]);
    }
    let apply_s = apply.elapsed().as_secs_f64();
    let held = heap_in_use().saturating_sub(before);
    if engine.map().len() != sessions {
        return Err(format!(
            "the engine holds {} of {sessions} sessions",
            engine.map().len()
        ));
    }
    std::iter::from_fn(|| engine.poll_action()).for_each(drop);

    let pull = SyncMessage::records(deltas.clone());
    let full_pull_bytes = pull.iter().map(|m| m.encode().len()).sum();

    // One change as it spreads: a backup replaced by the primary.
    let change = {
        let mut m = source.clone();
        let record = &deltas[0].record;
        let primary = key_of(&keys, record)?;
        let backups = others(&keys, record, 3, 2);
        m.update_backups(primary, &record.id, backups, now_ms + 1)
            .map_err(|e| format!("update: {e}"))?
            .encode()
            .len()
    };

    let mut sync = Vec::new();
    let mut counts = vec![1, sessions / 100, sessions / 10];
    counts.retain(|&d| d > 0);
    counts.dedup();
    for differing in counts {
        sync.push(sync_cost(&source, &keys, &deltas, differing, now_ms)?);
    }
    drop(engine);
    Ok(Figures {
        sessions,
        delta_bytes,
        memory_bytes_per_session: held as f64 / sessions as f64,
        memory_mb: held as f64 / 1e6,
        apply_us_per_session: apply_s * 1e6 / sessions as f64,
        apply_s,
        full_pull_bytes,
        full_pull_frames: pull.len(),
        per_change_bytes: change,
        sync,
    })
}

/// The key of `record`'s primary among `keys`.
fn key_of<'k>(keys: &'k [LocalKey], record: &Record) -> Result<&'k LocalKey, String> {
    keys.iter()
        .find(|key| *key.id() == record.primary)
        .ok_or_else(|| format!("no key for the primary of {}", record.id))
}

/// `n` node ids from `keys`, from index `from` on, none of them `record`'s
/// primary or one of its backups: a new set of backups.
fn others(keys: &[LocalKey], record: &Record, from: usize, n: usize) -> Vec<NodeId> {
    (0..keys.len())
        .map(|k| keys[(from + k) % keys.len()].id())
        .filter(|id| **id != record.primary && !record.backups.contains(id))
        .take(n)
        .cloned()
        .collect()
}

/// The `/baton/sync/2` exchange as the node runs it (protocol/src/node/
/// streams.rs): the initiator `b` sends its digest; the responder `a`
/// answers with its versions of the differing buckets; `b` sends the
/// records `a` lacks and the ids it wants; `a` sends those.
fn sync_cost(
    source: &baton_protocol::map::Map,
    keys: &[LocalKey],
    deltas: &[Delta],
    differing: usize,
    now_ms: u64,
) -> Result<SyncCost, String> {
    let mut a = source.clone();
    let mut b = source.clone();
    // `a` learnt `differing` changes `b` did not (spread over the sessions).
    let step = (deltas.len() / differing.max(1)).max(1);
    for (k, delta) in deltas.iter().step_by(step).take(differing).enumerate() {
        let writer = key_of(keys, &delta.record)?;
        let backups = others(keys, &delta.record, k + 5, 1);
        a.update_backups(writer, delta.id(), backups, now_ms + 1)
            .map_err(|e| format!("update: {e}"))?;
    }
    let cpu = Instant::now();
    let mut bytes = 0;
    let digest = SyncMessage::Digest(b.digest()).encode();
    bytes += digest.len();
    let buckets = a.diff(&b.digest());
    let versions = SyncMessage::Versions(a.versions_in(&buckets)).encode();
    bytes += versions.len();
    let SyncMessage::Versions(remote) =
        SyncMessage::decode(&versions).map_err(|e| format!("versions: {e}"))?
    else {
        return Err("versions did not decode as versions".into());
    };
    let (send, want) = b.reconcile(&remote);
    let mut records_bytes = 0;
    for m in SyncMessage::records(send) {
        let n = m.encode().len();
        records_bytes += n;
        if let SyncMessage::Records(ds) = m {
            for d in ds {
                let _ = a.apply(d, now_ms + 2);
            }
        }
    }
    let ids = SyncMessage::WantIds(want.clone()).encode();
    bytes += ids.len();
    for m in SyncMessage::records(a.records_named(&want)) {
        records_bytes += m.encode().len();
        if let SyncMessage::Records(ds) = m {
            for d in ds {
                let _ = b.apply(d, now_ms + 2);
            }
        }
    }
    let cpu_ms = cpu.elapsed().as_secs_f64() * 1e3;
    bytes += records_bytes;
    if a.digest() != b.digest() {
        return Err(format!(
            "the replicas still differ after syncing {differing} sessions"
        ));
    }
    Ok(SyncCost {
        differing,
        buckets: buckets.len(),
        bytes,
        versions_bytes: versions.len(),
        records_bytes,
        cpu_ms,
    })
}

/// Measures every session count in `sessions`.
pub fn run(sessions: &[usize]) -> Result<Report, String> {
    let wall = Instant::now();
    let mut points = Vec::new();
    for &s in sessions {
        if s == 0 {
            return Err("a session count must be at least 1".into());
        }
        points.push(measure(s)?);
    }
    Ok(Report {
        writers: WRITERS,
        record: "rtp-audio, no parameters, an IPv4 client, two backups, 32-hex-digit id, \
                 one version (an open); measured on this machine's allocator (glibc)"
            .into(),
        points,
        wall_s: round(wall.elapsed(), 1),
    })
}

/// The report as a table, one row per session count.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "{:>8} {:>7} {:>10} {:>9} {:>9} {:>10} {:>12} {:>12} {:>12}\n",
        "sessions",
        "delta B",
        "heap B/ses",
        "heap MB",
        "apply s",
        "pull MB",
        "sync 1 KB",
        "sync 1% KB",
        "sync 10% KB"
    );
    for p in &report.points {
        let sync = |k: usize| {
            p.sync
                .get(k)
                .map(|s| format!("{:.1}", s.bytes as f64 / 1e3))
                .unwrap_or_else(|| "-".into())
        };
        out += &format!(
            "{:>8} {:>7.0} {:>10.0} {:>9.1} {:>9.2} {:>10.2} {:>12} {:>12} {:>12}\n",
            p.sessions,
            p.delta_bytes,
            p.memory_bytes_per_session,
            p.memory_mb,
            p.apply_s,
            p.full_pull_bytes as f64 / 1e6,
            sync(0),
            sync(1),
            sync(2)
        );
    }
    out
}

fn round(d: Duration, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (d.as_secs_f64() * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_grow_with_the_sessions_and_syncs_leave_replicas_equal() {
        let small = measure(200).expect("200");
        let large = measure(2000).expect("2000");
        assert!(small.delta_bytes > 200.0, "{}", small.delta_bytes);
        assert!((small.delta_bytes - large.delta_bytes).abs() < 8.0);
        // (The heap figures are not checked here: the allocator's counters
        // are the process's, and the other tests run in parallel threads.)
        assert!(large.full_pull_bytes > 9 * small.full_pull_bytes);
        // One differing session: one bucket, its versions grow with the
        // sessions (16 bytes each), one record each way at most.
        assert_eq!(small.sync[0].buckets, 1);
        assert!(large.sync[0].versions_bytes > small.sync[0].versions_bytes);
        // A tenth differing (200 sessions): about half the 256 buckets
        // (1 - e^(-200/256) of them, 139 expected).
        assert!(large.sync[2].buckets > 100, "{}", large.sync[2].buckets);
        assert!(large.sync[2].records_bytes > 200 * 300);
    }

    #[test]
    fn a_count_of_zero_is_refused() {
        assert!(run(&[0]).is_err());
    }

    #[test]
    fn a_small_count_measures_only_the_differences_it_has() {
        let tiny = measure(5).expect("5");
        let differing: Vec<usize> = tiny.sync.iter().map(|s| s.differing).collect();
        assert_eq!(differing, vec![1]);
    }
}
