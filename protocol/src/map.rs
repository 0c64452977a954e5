//! The replicated session map: `session id -> signed Record`, merged so that
//! every node converges whatever the order, grouping or repetition of
//! delivery, and changed only by nodes with authority over a session, over
//! a history that really happened.
//!
//! # What travels: deltas
//!
//! The unit of replication is a [`Delta`]: a signed [`Record`] together with
//! the signed version it superseded (`prev`; absent only for a creation). The
//! predecessor is the writer's credential. Deltas ride on SWIM messages as
//! application payloads ([`Delta::encode`]) and in anti-entropy exchanges
//! ([`SyncMessage`], protocol `/baton/sync/2`), where each session travels as
//! its [chain](Map::chain): its creation, the deltas that opened each epoch,
//! and its current delta.
//!
//! # Acceptance, one hop: a pure function of the delta
//!
//! A delta is *legitimate* ([`check`]) when both records are well formed
//! ([`validate`]), both signatures verify against their writers' ed25519 keys
//! ([`verify`]), and the new version is one of ([`authorize`]):
//!
//! - a **creation**: no predecessor, epoch 1, version 0, active, written by its
//!   own primary;
//! - an **update** by the predecessor's primary: same epoch, same primary,
//!   higher version (new backups, client, parameters, or `Closed`);
//! - a **handover** by the predecessor's primary: epoch + 1, version 0, another
//!   node named primary (a transfer);
//! - a **claim** by one of the predecessor's backups: epoch + 1, version 0, the
//!   claimer itself primary (a takeover).
//!
//! A closed predecessor has no successor, and the service and start time of a
//! session never change. Whether the primary is dead or has left is checked by
//! the claiming backup, in its own membership view, before it writes; a
//! receiver cannot check it (its view may differ) and must not.
//!
//! # Acceptance, the chain rule: members that lie
//!
//! The one-hop check says nothing of whether the predecessor ever existed: a
//! member with a valid key can sign a predecessor of its own making (naming
//! itself backup or primary, at any epoch), write on it a claim, an update or
//! a handover to anyone, and every signature verifies. So a replica adopts a
//! legitimate delta only when its predecessor is *linked* to the history the
//! replica holds for the session ([`Map::apply`]): it is
//!
//! - a version this replica accepted or verified before, or
//! - written by a node this replica knows as primary of that epoch (an
//!   update or a claim of that primary's own), or
//! - the first version of an epoch, written by a node this replica knows as
//!   primary of the epoch before (a handover).
//!
//! A version is known once a linked delta carried it, as its record or as its
//! predecessor, current or stale: stale deltas are verified too when they
//! bring something new. Per session the replica keeps, bounded: the short
//! fingerprints of the versions it knows ([`MAX_KNOWN`]), the `(epoch,
//! primary)` pairs they name ([`MAX_PRIMARIES`]), the creation (the *root*),
//! and per `(epoch, primary)` the delta that opened that epoch
//! ([`MAX_OPENERS`], those on the current version's chain forgotten last).
//! A creation never supersedes anything: a second one for a held session is
//! refused, whatever its rank.
//!
//! Honest deltas overtake each other. A legitimate delta that does not link
//! is refused ([`Rejection::Unlinked`], counted in [`Stats`]) and waits in a
//! pool ([`MAX_PENDING_PER_SESSION`] per session, [`MAX_PENDING`] in all, the
//! oldest dropped first, and by [`Map::gc`] after [`PENDING_TTL_MS`]); it is
//! retried whenever the session's history here grows, so it is adopted as
//! soon as what it cites arrives. Anti-entropy repairs whatever the pool lost:
//! it sends chains, which link in order at a replica that missed epochs, as
//! long as it missed fewer than [`MAX_OPENERS`]; one further behind on a
//! session stays behind on it.
//!
//! The rule depends on what the replica holds, but only monotonically: what
//! links once stays linked, and the current version is the greatest linked
//! one. Replicas that received the same honest deltas, directly or in
//! chains, hold the same map.
//!
//! # Merge: the greatest linked version wins
//!
//! Versions of one session are totally ordered by [`precedence`]: higher
//! epoch, then higher primary id (among concurrent claims or handovers of the
//! same epoch, the one naming the higher node id wins, however many updates
//! each branch wrote since), then higher version, then higher writer id, then
//! the SHA-256 of the signed record (only an equivocating writer reaches it).
//! Every legitimate successor ranks above its predecessor. A replica holds, per
//! session, the greatest linked delta it has received (ties on the record
//! broken by the greater linked predecessor), so its state is the maximum of
//! a set: merging is commutative, associative and idempotent. A node that
//! claimed and lost a tie sees it as [`Applied::Superseded`] naming another
//! primary.
//!
//! # Trust model
//!
//! Members are authenticated, admitted providers (libp2p Noise and the
//! admission handshake), run by independent operators: any of them may lie.
//! Signatures make every version attributable to its writer whoever relays
//! it, so relays cannot alter or invent versions. The authority rule stops
//! writers that the version they supersede does not name: a non-backup
//! claiming, a backup claiming without raising the epoch, a deposed primary
//! writing on top of the takeover or skipping epochs, anyone reopening a
//! closed session. The chain rule stops members inventing the version they
//! supersede: made-up predecessors, epoch jumps, hand-overs by a primary that
//! never was, second creations of a held session. What remains:
//!
//! - **Trust on first use.** The first legitimate delta a replica receives
//!   for a session it never heard of is believed: there is nothing to link
//!   it to. So is the first creation that roots such an entry, if it has
//!   the session's service and start time and no other epoch 1 primary is
//!   known. A liar that reaches a replica before the session does can plant
//!   a made-up history there, and that replica then refuses the real one as
//!   unlinked for good: its digest keeps differing from its peers' and its
//!   `rejected_unlinked` keeps counting, which is how it shows. Honest creations
//!   and placements are gossiped at once, so the liar must win a race
//!   against the epidemic for each replica; two creations racing for one id
//!   split replicas the same way. Session ids are random (128 bits), so
//!   honest creations never collide.
//! - **A role held is a role held.** A member that was legitimately primary
//!   of an epoch can write any version of that epoch and hand it over, also
//!   after being deposed: its handover at the takeover's epoch is
//!   indistinguishable from a genuine concurrent one, and resolved like one
//!   by the tie rule. A backup can claim whenever it likes.
//! - **The pool can be flooded.** A liar can fill a session's pool with
//!   deltas that never link; honest ones then wait for anti-entropy.
//!
//! Every lie carries its author's signature: evidence to expel it.
//!
//! # Tombstones
//!
//! Closing is an update like any other, so a close wins wherever its version
//! does. [`Map::gc`] drops tombstones [`Config::tombstone_ttl_ms`] after this
//! node stored them, and then remembers, for one more TTL, the rank and hash of
//! what it dropped, so that older versions still in flight do not resurrect the
//! session. A replica cut off for longer than the TTL from every node that saw
//! the close can bring the session back: size the TTL above the longest
//! partition to heal from.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::NodeId;
use crate::session::{Record, SessionState, Signer};

mod link;
#[cfg(test)]
mod tests;

use link::{History, Pool, Short, short};
pub use link::{
    MAX_KNOWN, MAX_OPENERS, MAX_PENDING, MAX_PENDING_PER_SESSION, MAX_PRIMARIES, PENDING_TTL_MS,
};

/// The bytes that precede the 32-byte public key in the peer id of an ed25519
/// key: an identity multihash (`0x00`, length 36) of the protobuf-encoded key
/// (field 1 = type Ed25519, field 2 = 32 bytes of key).
pub const ED25519_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// The longest session id, in characters of `[A-Za-z0-9_-]`.
pub const MAX_ID_CHARS: usize = 64;
/// The longest service name, in characters.
pub const MAX_SERVICE_CHARS: usize = 32;
/// The most service parameters a session may have.
pub const MAX_PARAMS: usize = 32;
/// The longest parameter name, in bytes.
pub const MAX_PARAM_KEY_BYTES: usize = 64;
/// The longest parameter value, in bytes.
pub const MAX_PARAM_VALUE_BYTES: usize = 1024;
/// The longest client locator, in bytes.
pub const MAX_CLIENT_BYTES: usize = 128;
/// The longest location key, in bytes.
pub const MAX_LOCATION_BYTES: usize = 64;
/// The most backups a session may have.
pub const MAX_BACKUPS: usize = 8;
/// The longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;

/// `reason` as a record may carry it: whole when it fits in
/// [`MAX_REASON_BYTES`], else cut at a character boundary and ended with
/// `…`, so that the cut shows.
pub fn fit_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mark = "…";
    let mut end = MAX_REASON_BYTES - mark.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &reason[..end])
}

/// How long a tombstone is kept by default: 10 minutes.
pub const DEFAULT_TOMBSTONE_TTL_MS: u64 = 10 * 60 * 1000;

/// The number of buckets of a [`Digest`].
pub const BUCKETS: usize = 256;

/// The largest encoded [`SyncMessage`] accepted, in bytes.
pub const MAX_SYNC_BYTES: usize = 4 * 1024 * 1024;

/// The bytes of encoded deltas one [`SyncMessage::Records`] carries at
/// most: [`MAX_SYNC_BYTES`] less room for the enum and array headers.
pub(crate) const RECORDS_BUDGET: usize = MAX_SYNC_BYTES - 64;

/// The most deltas one [`SyncMessage::Records`] carries.
pub const MAX_RECORDS_PER_MESSAGE: usize = 256;

/// The largest encoded [`Delta`] accepted, in bytes: it must fit, as an
/// application payload, in one SWIM message.
pub const MAX_DELTA_BYTES: usize = crate::wire::MAX_MESSAGE_BYTES;

// ---------------------------------------------------------------------------
// Keys and signatures
// ---------------------------------------------------------------------------

/// An ed25519 signing key and the node id (libp2p peer id bytes) it implies,
/// for tests and the simulator. The node signs with libp2p's own keypair;
/// both produce plain ed25519 signatures over the bytes, so they interoperate.
pub struct LocalKey {
    key: SigningKey,
    id: NodeId,
}

impl LocalKey {
    /// The key whose secret is `seed` (an ed25519 secret key is 32 bytes).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = node_id_of(&key.verifying_key().to_bytes());
        LocalKey { key, id }
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

/// Shows the id only: the secret stays out of logs.
impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").field("id", &self.id).finish()
    }
}

impl Signer for LocalKey {
    fn id(&self) -> &NodeId {
        &self.id
    }

    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.key.sign(bytes).to_bytes().to_vec()
    }
}

/// The node id (libp2p peer id bytes) of an ed25519 public key.
pub fn node_id_of(public_key: &[u8; 32]) -> NodeId {
    let mut bytes = [0u8; 38];
    bytes[..6].copy_from_slice(&ED25519_PEER_ID_PREFIX);
    bytes[6..].copy_from_slice(public_key);
    NodeId::new(&bytes).expect("38 bytes make a valid node id")
}

/// The ed25519 public key named by a node id, if it is the peer id of an
/// ed25519 key (the only kind Baton nodes use).
pub fn public_key_of(id: &NodeId) -> Option<[u8; 32]> {
    let key = id.as_bytes().strip_prefix(&ED25519_PEER_ID_PREFIX[..])?;
    key.try_into().ok()
}

/// Whether `record.signature` is `record.writer`'s ed25519 signature of
/// [`Record::signing_bytes`]. False for anything malformed, never a panic.
pub fn verify(record: &Record) -> bool {
    verify_bytes(record, &record.signing_bytes())
}

fn verify_bytes(record: &Record, signing_bytes: &[u8]) -> bool {
    verify_signed(&record.writer, &record.signature, signing_bytes)
}

/// Whether `signature` is `signer`'s ed25519 signature of `message`. False
/// for anything malformed, never a panic.
pub fn verify_signed(signer: &NodeId, signature: &[u8], message: &[u8]) -> bool {
    let Some(public) = public_key_of(signer) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&public) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    // Strict: rejects weak keys and non-canonical encodings, so that a version
    // cannot be re-signed into a second valid form by a relay.
    key.verify_strict(message, &signature).is_ok()
}

/// SHA-256 of the signed record: the last tie-break of [`precedence`] and
/// the record's contribution to a [`Digest`].
fn fingerprint(record: &Record) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(record.signing_bytes());
    hash.update(&record.signature);
    hash.finalize().into()
}

/// The first 8 bytes of the SHA-256 of a session id, big-endian: how
/// anti-entropy names a session. Stable across builds and platforms.
pub fn id_hash(id: &str) -> u64 {
    let hash = Sha256::digest(id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(head)
}

/// The digest bucket of a session id: the first byte of its SHA-256.
pub fn bucket_of(id: &str) -> u8 {
    bucket_of_hash(id_hash(id))
}

fn bucket_of_hash(id_hash: u64) -> u8 {
    id_hash.to_be_bytes()[0]
}

// ---------------------------------------------------------------------------
// Validation, authority, order
// ---------------------------------------------------------------------------

/// Why a delta was not accepted. Each is counted in [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A signature does not verify against its writer's key: the record was
    /// forged or altered on the way.
    BadSignature {
        /// The session.
        id: String,
        /// The node the record claims wrote it.
        writer: NodeId,
    },
    /// A record breaks a limit or a format rule.
    Invalid(String),
    /// The writer had no authority to write this version over the one it
    /// supersedes.
    NoAuthority {
        /// The session.
        id: String,
        /// The node that wrote the version.
        writer: NodeId,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// Well formed and authorized by the version it cites, but that version
    /// is not one this replica can vouch for (the chain rule): the history
    /// in between has not arrived yet, or the writer made it up. Kept aside
    /// a while in case the history arrives; a creation that contradicts the
    /// one held is refused outright.
    Unlinked {
        /// The session.
        id: String,
        /// The node that wrote the version.
        writer: NodeId,
        /// Why it does not link.
        why: &'static str,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadSignature { id, writer } => write!(
                f,
                "session {id}: the signature does not verify against the key of writer {writer}; \
                 the record was forged or altered on the way"
            ),
            Rejection::Invalid(why) => write!(f, "invalid session record: {why}"),
            Rejection::NoAuthority { id, writer, why } => write!(
                f,
                "session {id}: node {writer} has no authority to write this version: {why}"
            ),
            Rejection::Unlinked { id, writer, why } => write!(
                f,
                "session {id}: the version node {writer} wrote does not link to the history \
                 held here ({why}); if it is genuine, anti-entropy brings the versions in between"
            ),
        }
    }
}

impl std::error::Error for Rejection {}

/// At most 64 characters of untrusted text, quoted and escaped, for messages.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// Checks a record's formats and limits, whatever its signature and
/// authority: a hostile peer's input gets a clear [`Rejection::Invalid`].
pub fn validate(record: &Record) -> Result<(), Rejection> {
    let invalid = |why: String| Err(Rejection::Invalid(why));
    let id = &record.id;
    if id.is_empty()
        || id.len() > MAX_ID_CHARS
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return invalid(format!(
            "session id {} must be 1 to {MAX_ID_CHARS} characters of A-Z, a-z, 0-9, '_' and '-'",
            shown(id)
        ));
    }
    let service = record.service.chars().count();
    if service == 0 || service > MAX_SERVICE_CHARS {
        return invalid(format!(
            "session {id}: service name {} must be 1 to {MAX_SERVICE_CHARS} characters",
            shown(&record.service)
        ));
    }
    if record.params.len() > MAX_PARAMS {
        return invalid(format!(
            "session {id}: {} parameters, at most {MAX_PARAMS} allowed",
            record.params.len()
        ));
    }
    for (key, value) in &record.params {
        if key.len() > MAX_PARAM_KEY_BYTES {
            return invalid(format!(
                "session {id}: parameter name {} is {} bytes, at most {MAX_PARAM_KEY_BYTES} allowed",
                shown(key),
                key.len()
            ));
        }
        if value.len() > MAX_PARAM_VALUE_BYTES {
            return invalid(format!(
                "session {id}: parameter {} is {} bytes, at most {MAX_PARAM_VALUE_BYTES} allowed",
                shown(key),
                value.len()
            ));
        }
    }
    if record.client.len() > MAX_CLIENT_BYTES {
        return invalid(format!(
            "session {id}: client locator is {} bytes, at most {MAX_CLIENT_BYTES} allowed",
            record.client.len()
        ));
    }
    if record.location.len() > MAX_LOCATION_BYTES {
        return invalid(format!(
            "session {id}: location key is {} bytes, at most {MAX_LOCATION_BYTES} allowed",
            record.location.len()
        ));
    }
    if record.backups.len() > MAX_BACKUPS {
        return invalid(format!(
            "session {id}: {} backups, at most {MAX_BACKUPS} allowed",
            record.backups.len()
        ));
    }
    if record.backups.contains(&record.primary) {
        return invalid(format!(
            "session {id}: primary {} is also listed as a backup",
            record.primary
        ));
    }
    let distinct: BTreeSet<&NodeId> = record.backups.iter().collect();
    if distinct.len() != record.backups.len() {
        return invalid(format!("session {id}: a backup is listed twice"));
    }
    if record.reason.len() > MAX_REASON_BYTES {
        return invalid(format!(
            "session {id}: reason is {} bytes, at most {MAX_REASON_BYTES} allowed",
            record.reason.len()
        ));
    }
    if record.epoch == 0 {
        return invalid(format!("session {id}: epochs start at 1"));
    }
    if record.signature.is_empty() {
        return invalid(format!("session {id}: the record is not signed"));
    }
    Ok(())
}

/// Whether `record`'s writer had authority to write it over `prev`, the
/// version it supersedes (`None`: a creation). The rules are in the module
/// documentation. Signatures are not checked here: see [`check`].
pub fn authorize(record: &Record, prev: Option<&Record>) -> Result<(), Rejection> {
    let deny = |why: &'static str| {
        Err(Rejection::NoAuthority {
            id: record.id.clone(),
            writer: record.writer.clone(),
            why,
        })
    };
    let Some(prev) = prev else {
        if record.writer != record.primary {
            return deny("a session is created by its own primary");
        }
        if record.epoch != 1 || record.version != 0 {
            return deny(
                "only a creation (epoch 1, version 0) travels without the version it supersedes",
            );
        }
        if record.state != SessionState::Active {
            return deny("a session is created active");
        }
        return Ok(());
    };
    if prev.state == SessionState::Closed {
        return deny("a closed session has no successor");
    }
    if record.service != prev.service || record.started_ms != prev.started_ms {
        return deny("the service and start time of a session never change");
    }
    if record.epoch == prev.epoch {
        if record.writer != prev.primary {
            return deny("within an epoch, only the primary writes");
        }
        if record.primary != prev.primary {
            return deny("a change of primary must raise the epoch by one");
        }
        if record.version <= prev.version {
            return deny("an update must raise the version");
        }
        return Ok(());
    }
    if Some(record.epoch) != prev.epoch.checked_add(1) {
        return deny("the epoch must stay or rise by exactly one");
    }
    if record.version != 0 {
        return deny("a new epoch starts at version 0");
    }
    if record.state != SessionState::Active {
        return deny("a takeover or handover leaves the session active");
    }
    if record.writer == prev.primary {
        if record.primary == prev.primary {
            return deny("a new epoch must name another primary");
        }
        return Ok(());
    }
    if prev.backups.contains(&record.writer) {
        if record.primary != record.writer {
            return deny("a backup may claim a session for itself only");
        }
        return Ok(());
    }
    deny("the writer is neither the primary nor a backup of the version it supersedes")
}

/// Whether a delta is legitimate, one hop: both records valid, both
/// signatures good, the writer authorized by the predecessor. A pure
/// function of the delta; [`Map::apply`] adds the chain rule (the
/// predecessor must be one the replica can vouch for).
pub fn check(delta: &Delta) -> Result<(), Rejection> {
    check_with(delta, &Verifier::default())
}

/// [`check`] with signatures verified by `verifier`.
pub fn check_with(delta: &Delta, verifier: &Verifier) -> Result<(), Rejection> {
    let record = &delta.record;
    validate(record)?;
    if let Some(prev) = &delta.prev {
        validate(prev)?;
        if prev.id != record.id {
            return Err(Rejection::Invalid(format!(
                "session {}: the superseded version is of session {}",
                record.id, prev.id
            )));
        }
    }
    for r in std::iter::once(record).chain(delta.prev.as_ref()) {
        if !verifier.verify(r) {
            return Err(Rejection::BadSignature {
                id: r.id.clone(),
                writer: r.writer.clone(),
            });
        }
    }
    authorize(record, delta.prev.as_ref())
}

pub(crate) type Rank<'a> = (u64, &'a NodeId, u64, &'a NodeId);

pub(crate) fn rank(record: &Record) -> Rank<'_> {
    (
        record.epoch,
        &record.primary,
        record.version,
        &record.writer,
    )
}

/// The total order of the versions of one session (the merge order): epoch,
/// then primary id, then version, then writer id, then the SHA-256 of the
/// signed record. `Equal` only for identical records.
pub fn precedence(a: &Record, b: &Record) -> Ordering {
    rank(a)
        .cmp(&rank(b))
        .then_with(|| fingerprint(a).cmp(&fingerprint(b)))
}

/// Orders the predecessors of one record: none first.
fn prev_precedence(a: Option<&Record>, b: Option<&Record>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => precedence(a, b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

// ---------------------------------------------------------------------------
// Deltas
// ---------------------------------------------------------------------------

/// A version of a session with the version it superseded, signed both: what
/// travels between nodes. `prev` is `None` only for a creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The new version.
    #[serde(rename = "r")]
    pub record: Record,
    /// The version it superseded: the writer's credential.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Record>,
}

impl From<Record> for Delta {
    fn from(record: Record) -> Self {
        Delta { record, prev: None }
    }
}

impl Delta {
    /// The session.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Encodes to CBOR, to ride on a SWIM message as an application payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        ciborium::into_writer(self, &mut out).expect("CBOR encoding into a Vec cannot fail");
        out
    }

    /// Decodes through the [`MAX_DELTA_BYTES`] cap. Says nothing about the
    /// delta's legitimacy: [`Map::apply`] checks that.
    pub fn decode(bytes: &[u8]) -> Result<Delta, DecodeError> {
        decode_capped(bytes, MAX_DELTA_BYTES)
    }
}

// ---------------------------------------------------------------------------
// The map
// ---------------------------------------------------------------------------

/// Checks record signatures: [`verify`] by default. A simulator running a
/// thousand replicas of the same records in one process passes one that
/// remembers what it verified, so each signature is checked once, not once
/// per replica.
#[derive(Clone)]
pub struct Verifier {
    records: std::sync::Arc<dyn Fn(&Record) -> bool + Send + Sync>,
    signed: SignedCheck,
}

type SignedCheck = std::sync::Arc<dyn Fn(&NodeId, &[u8], &[u8]) -> bool + Send + Sync>;

impl Verifier {
    /// A verifier that asks `f` about records, and checks other signed
    /// messages (performance summaries) with [`verify_signed`].
    pub fn new(f: impl Fn(&Record) -> bool + Send + Sync + 'static) -> Self {
        Verifier {
            records: std::sync::Arc::new(f),
            signed: std::sync::Arc::new(verify_signed),
        }
    }

    /// This verifier, checking other signed messages with `g(signer,
    /// signature, message)`.
    pub fn with_signed(
        mut self,
        g: impl Fn(&NodeId, &[u8], &[u8]) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.signed = std::sync::Arc::new(g);
        self
    }

    /// Whether the record's signature is its writer's.
    pub fn verify(&self, record: &Record) -> bool {
        (self.records)(record)
    }

    /// Whether `signature` is `signer`'s signature of `message`.
    pub fn verify_message(&self, signer: &NodeId, signature: &[u8], message: &[u8]) -> bool {
        (self.signed)(signer, signature, message)
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(verify)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier")
    }
}

/// Settings of a [`Map`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a tombstone is kept after this node stored it, and how long
    /// its rank is remembered after that, in milliseconds.
    pub tombstone_ttl_ms: u64,
    /// How record signatures are checked.
    pub verifier: Verifier,
}

impl Default for Config {
    /// [`DEFAULT_TOMBSTONE_TTL_MS`], real verification.
    fn default() -> Self {
        Config {
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL_MS,
            verifier: Verifier::default(),
        }
    }
}

/// What [`Map::apply`] did with a legitimate delta: how the session's
/// current version changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The first version of this session here.
    New,
    /// Replaced `previous`, by this delta or by waiting ones it linked (see
    /// [`Map::delta`] for what is current now). If `previous` named this node
    /// primary and the new version does not, this node lost the session (a
    /// takeover, a handover, or a concurrent claim that won the tie) and
    /// must stop serving it.
    Superseded {
        /// The version replaced.
        previous: Box<Record>,
    },
    /// Not newer than what this node holds (or than a collected tombstone),
    /// or a creation that roots the session: the current version is
    /// unchanged. Not an error.
    Stale,
}

/// Counters of what [`Map::apply`] saw from peers (local writes excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// New sessions and newer versions stored.
    pub accepted: u64,
    /// Deltas that were not newer.
    pub stale: u64,
    /// Deltas with a signature that does not verify.
    pub rejected_signature: u64,
    /// Deltas whose writer had no authority.
    pub rejected_authority: u64,
    /// Deltas breaking a format rule or a limit.
    pub rejected_invalid: u64,
    /// Deltas citing a version this replica cannot vouch for, and creations
    /// contradicting the one held ([`Rejection::Unlinked`]).
    pub rejected_unlinked: u64,
}

/// Why a local write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// `open` of an id this node already holds (or closed recently).
    Exists {
        /// The session.
        id: String,
    },
    /// No such session here.
    Unknown {
        /// The session.
        id: String,
    },
    /// The session is closed.
    Closed {
        /// The session.
        id: String,
    },
    /// Only the primary may do this.
    NotPrimary {
        /// The session.
        id: String,
        /// Its current primary.
        primary: NodeId,
    },
    /// Only a backup may claim.
    NotBackup {
        /// The session.
        id: String,
    },
    /// The new version would be rejected (a bad argument, or a signer whose
    /// key does not match its id).
    Rejected(Rejection),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Exists { id } => write!(
                f,
                "session {id} already exists (or was closed recently): choose another id"
            ),
            WriteError::Unknown { id } => write!(f, "no session {id} is known here"),
            WriteError::Closed { id } => write!(f, "session {id} is closed"),
            WriteError::NotPrimary { id, primary } => write!(
                f,
                "session {id} is hosted by {primary}: ask that node, only the primary may do this"
            ),
            WriteError::NotBackup { id } => write!(
                f,
                "this node is not a backup of session {id}, so it cannot take it over"
            ),
            WriteError::Rejected(why) => write!(f, "the new version would be rejected: {why}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// What [`Map::open`] needs to create a session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewSession {
    /// Session id: 1 to 64 characters of `[A-Za-z0-9_-]`.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Service parameters.
    pub params: BTreeMap<String, String>,
    /// The client's locator.
    pub client: String,
    /// The client's location key.
    pub location: String,
    /// Backups, in order; the opening node is the primary.
    pub backups: Vec<NodeId>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The current version with its credential (shared with `history` when
    /// it opened its epoch).
    delta: Arc<Delta>,
    fingerprint: [u8; 32],
    id_hash: u64,
    /// When this node stored the version (for tombstone collection).
    since_ms: u64,
    /// What the chain rule links new versions to.
    history: History,
}

impl Entry {
    /// The current delta preceded by what a peer needs to link it: the
    /// creation and the epoch openers, oldest first, without repeats.
    fn chain(&self) -> impl Iterator<Item = &Delta> {
        let current = &self.delta;
        self.history
            .chain()
            .filter(move |d| !Arc::ptr_eq(d, current) && d.record != current.record)
            .chain(std::iter::once(current))
            .map(|d| &**d)
    }
}

/// What remains of a collected tombstone: enough to recognise older versions.
#[derive(Debug, Clone)]
struct Grave {
    epoch: u64,
    primary: NodeId,
    version: u64,
    writer: NodeId,
    fingerprint: [u8; 32],
    id_hash: u64,
    collected_ms: u64,
}

impl Grave {
    fn cmp_record(&self, record: &Record) -> Ordering {
        (self.epoch, &self.primary, self.version, &self.writer)
            .cmp(&rank(record))
            .then_with(|| self.fingerprint.cmp(&fingerprint(record)))
    }
}

/// The replicated session map of one node. Sans-IO: time comes in as
/// `now_ms`, deltas come in through [`Map::apply`], and the caller spreads
/// what the write helpers return.
#[derive(Debug, Clone)]
pub struct Map {
    config: Config,
    entries: BTreeMap<String, Entry>,
    graves: BTreeMap<String, Grave>,
    /// Versions waiting for the history they cite.
    pool: Pool,
    /// Per bucket, the wrapping sum of the fingerprints (first 8 bytes) of
    /// its records and graves: the digest, kept up to date.
    sums: Box<[u64; BUCKETS]>,
    stats: Stats,
}

fn digest_term(fingerprint: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&fingerprint[..8]);
    u64::from_le_bytes(head)
}

impl Map {
    /// An empty map.
    pub fn new(config: Config) -> Self {
        Map {
            config,
            entries: BTreeMap::new(),
            graves: BTreeMap::new(),
            pool: Pool::default(),
            sums: Box::new([0; BUCKETS]),
            stats: Stats::default(),
        }
    }

    /// Applies a delta from a peer: stores it if it is legitimate, linked
    /// to the history this replica holds (the chain rule), and newer than
    /// what this replica holds. A legitimate delta that does not link waits
    /// in a bounded pool ([`Rejection::Unlinked`]) and is retried whenever
    /// its session makes progress here, so the answer describes the
    /// session's current version: `Superseded` when it changed in this
    /// call, whichever delta made it change. Versions this replica already
    /// knows cost a lookup; others are verified even when stale, to learn
    /// the history they show.
    pub fn apply(&mut self, delta: Delta, now_ms: u64) -> Result<Applied, Rejection> {
        let result = self.try_apply(delta, now_ms);
        let stats = &mut self.stats;
        match &result {
            // Adoptions are counted where they happen: one call may adopt
            // waiting versions too.
            Ok(Applied::New | Applied::Superseded { .. }) => {}
            Ok(Applied::Stale) => stats.stale += 1,
            Err(Rejection::BadSignature { .. }) => stats.rejected_signature += 1,
            Err(Rejection::NoAuthority { .. }) => stats.rejected_authority += 1,
            Err(Rejection::Invalid(_)) => stats.rejected_invalid += 1,
            Err(Rejection::Unlinked { .. }) => stats.rejected_unlinked += 1,
        }
        result
    }

    fn try_apply(&mut self, delta: Delta, now_ms: u64) -> Result<Applied, Rejection> {
        // Bounds the id before it is used as a key.
        validate(&delta.record)?;
        let record = &delta.record;
        let Some(entry) = self.entries.get(&record.id) else {
            if let Some(grave) = self.graves.get(&record.id)
                && grave.cmp_record(record) != Ordering::Less
            {
                return Ok(Applied::Stale);
            }
            // A session never heard of: trusted on first use.
            check_with(&delta, &self.config.verifier)?;
            self.stats.accepted += 1;
            return Ok(self.insert(delta, now_ms));
        };
        // The version held, byte for byte (the common case: each delta
        // reaches a node many times): its fingerprint is known, so the
        // record need not be serialized and hashed again.
        let fp = if *record == entry.delta.record {
            entry.fingerprint
        } else {
            fingerprint(record)
        };
        let order = rank(record)
            .cmp(&rank(&entry.delta.record))
            .then_with(|| fp.cmp(&entry.fingerprint));
        match order {
            // The same version: only a greater credential could change
            // what is forwarded.
            Ordering::Equal
                if prev_precedence(delta.prev.as_ref(), entry.delta.prev.as_ref())
                    != Ordering::Greater =>
            {
                return Ok(Applied::Stale);
            }
            Ordering::Less if entry.history.knows(&short(&fp)) && !entry.history.wants(&delta) => {
                return Ok(Applied::Stale);
            }
            _ => {}
        }
        let Some(prev) = &delta.prev else {
            return self.root(delta, now_ms);
        };
        check_with(&delta, &self.config.verifier)?;
        let prev_fp = short(&fingerprint(prev));
        if !entry.history.links(prev, &prev_fp) {
            if order == Ordering::Equal {
                // A credential this replica cannot vouch for is not one to
                // forward; the version itself is held already.
                return Ok(Applied::Stale);
            }
            let rejection = Rejection::Unlinked {
                id: record.id.clone(),
                writer: record.writer.clone(),
                why: "it cites a version this node has not seen, written by none of the \
                      primaries it knows",
            };
            self.pool.add(delta, prev_fp, now_ms);
            return Err(rejection);
        }
        let id = record.id.clone();
        let adopted = self.merge_linked(delta, fp, prev_fp, now_ms);
        let unlocked = self.retry_pending(&id, now_ms);
        Ok(match adopted.or(unlocked) {
            Some(previous) => Applied::Superseded {
                previous: Box::new(previous),
            },
            None => Applied::Stale,
        })
    }

    /// A creation for a session held here. It never becomes current: it
    /// roots an entry trusted on first use when it agrees with it, is a
    /// copy of the root, or contradicts the session held.
    fn root(&mut self, delta: Delta, now_ms: u64) -> Result<Applied, Rejection> {
        let id = delta.record.id.clone();
        let Some(entry) = self.entries.get(&id) else {
            return Ok(Applied::Stale);
        };
        let conflict = |why| {
            Err(Rejection::Unlinked {
                id: delta.record.id.clone(),
                writer: delta.record.writer.clone(),
                why,
            })
        };
        if entry
            .history
            .root()
            .is_some_and(|root| root.record == delta.record)
        {
            return Ok(Applied::Stale);
        }
        check_with(&delta, &self.config.verifier)?;
        if entry.history.root().is_some() {
            return conflict("the session was created otherwise");
        }
        let current = &entry.delta.record;
        if delta.record.service != current.service || delta.record.started_ms != current.started_ms
        {
            return conflict("the creation names another service or start time");
        }
        if entry.history.other_creator(&delta.record.primary).is_some() {
            return conflict("another node created the session");
        }
        let fp = short(&fingerprint(&delta.record));
        let delta = Arc::new(delta);
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.history.learn(&delta, fp, None, &entry.delta.record);
        }
        Ok(match self.retry_pending(&id, now_ms) {
            Some(previous) => Applied::Superseded {
                previous: Box::new(previous),
            },
            None => Applied::Stale,
        })
    }

    /// Takes in a checked delta whose predecessor this replica vouches for:
    /// learns it, and makes it current if it outranks the current version
    /// (or, for the same version, if its credential is greater). Returns
    /// the version it replaced.
    fn merge_linked(
        &mut self,
        delta: Delta,
        fp: [u8; 32],
        prev_fp: Short,
        now_ms: u64,
    ) -> Option<Record> {
        let entry = self.entries.get_mut(&delta.record.id)?;
        let order = rank(&delta.record)
            .cmp(&rank(&entry.delta.record))
            .then_with(|| fp.cmp(&entry.fingerprint));
        let delta = Arc::new(delta);
        let mut replaced = None;
        match order {
            Ordering::Greater => {
                let sum = &mut self.sums[usize::from(bucket_of_hash(entry.id_hash))];
                *sum = sum
                    .wrapping_add(digest_term(&fp))
                    .wrapping_sub(digest_term(&entry.fingerprint));
                let old = std::mem::replace(&mut entry.delta, Arc::clone(&delta));
                entry.fingerprint = fp;
                entry.since_ms = now_ms;
                self.stats.accepted += 1;
                replaced = Some(old.record.clone());
            }
            Ordering::Equal
                if prev_precedence(delta.prev.as_ref(), entry.delta.prev.as_ref())
                    == Ordering::Greater =>
            {
                // Keep the greater credential, so replicas agree on what
                // they forward.
                entry.delta = Arc::clone(&delta);
            }
            _ => {}
        }
        entry
            .history
            .learn(&delta, short(&fp), Some(prev_fp), &entry.delta.record);
        replaced
    }

    /// Takes in the waiting versions of `id` that now link, until none
    /// does. Returns the version replaced first, if any was.
    fn retry_pending(&mut self, id: &str, now_ms: u64) -> Option<Record> {
        let mut first = None;
        loop {
            let history = &self.entries.get(id)?.history;
            let Some((delta, prev_fp)) = self.pool.take_linked(id, history) else {
                return first;
            };
            let fp = fingerprint(&delta.record);
            if let Some(replaced) = self.merge_linked(delta, fp, prev_fp, now_ms) {
                first.get_or_insert(replaced);
            }
        }
    }

    /// Stores a delta that opens a session here (a creation, a version
    /// trusted on first use, or a resurrection over a collected tombstone),
    /// or that supersedes the current version by a local write.
    fn insert(&mut self, delta: Delta, now_ms: u64) -> Applied {
        let id = delta.record.id.clone();
        let fingerprint = fingerprint(&delta.record);
        let prev_fp = delta.prev.as_ref().map(|p| short(&self::fingerprint(p)));
        let id_hash = id_hash(&id);
        let sum = &mut self.sums[usize::from(bucket_of_hash(id_hash))];
        *sum = sum.wrapping_add(digest_term(&fingerprint));
        if let Some(grave) = self.graves.remove(&id) {
            *sum = sum.wrapping_sub(digest_term(&grave.fingerprint));
        }
        let delta = Arc::new(delta);
        let (history, applied) = match self.entries.remove(&id) {
            Some(old) => {
                *sum = sum.wrapping_sub(digest_term(&old.fingerprint));
                let previous = Box::new(old.delta.record.clone());
                (old.history, Applied::Superseded { previous })
            }
            None => (History::default(), Applied::New),
        };
        let mut entry = Entry {
            delta: Arc::clone(&delta),
            fingerprint,
            id_hash,
            since_ms: now_ms,
            history,
        };
        entry
            .history
            .learn(&delta, short(&fingerprint), prev_fp, &delta.record);
        self.entries.insert(id, entry);
        applied
    }

    /// The current version of a session (active or a tombstone).
    pub fn get(&self, id: &str) -> Option<&Record> {
        self.entries.get(id).map(|e| &e.delta.record)
    }

    /// The current version of a session with its credential, to forward.
    pub fn delta(&self, id: &str) -> Option<&Delta> {
        self.entries.get(id).map(|e| &*e.delta)
    }

    /// The current version of a session preceded by what a replica that
    /// missed versions needs to link it (the creation and the deltas that
    /// opened each epoch, oldest first): what anti-entropy sends.
    pub fn chain(&self, id: &str) -> Vec<Delta> {
        self.entries
            .get(id)
            .map(|e| e.chain().cloned().collect())
            .unwrap_or_default()
    }

    /// Every current version, tombstones included, by session id.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.entries.values().map(|e| &e.delta.record)
    }

    /// Every current version with its credential, by session id.
    pub fn deltas(&self) -> impl Iterator<Item = &Delta> {
        self.entries.values().map(|e| &*e.delta)
    }

    /// The sessions that run (not closed), by session id.
    pub fn active(&self) -> impl Iterator<Item = &Record> {
        self.iter().filter(|r| r.state == SessionState::Active)
    }

    /// Number of sessions held, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What [`Map::apply`] has seen.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many collected tombstones this replica still keeps the rank of
    /// (until a second TTL has passed, see [`Map::gc`]).
    pub fn graves(&self) -> usize {
        self.graves.len()
    }

    /// How many versions wait for the history they cite, in all.
    pub fn pending(&self) -> usize {
        self.pool.len()
    }

    /// The versions of a session that wait for the history they cite,
    /// oldest first.
    pub fn pending_of(&self, id: &str) -> impl Iterator<Item = &Delta> {
        self.pool.of(id)
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Collects tombstones stored at least a TTL ago, and forgets the ranks of
    /// those collected at least a TTL ago; drops versions that waited
    /// [`PENDING_TTL_MS`] for their history. Returns how many tombstones it
    /// collected. Call it every few seconds or less often; spurious calls are
    /// harmless.
    pub fn gc(&mut self, now_ms: u64) -> usize {
        self.pool.expire(now_ms);
        let ttl = self.config.tombstone_ttl_ms;
        let sums = &mut self.sums;
        self.graves.retain(|_, grave| {
            let keep = now_ms < grave.collected_ms.saturating_add(ttl);
            if !keep {
                let sum = &mut sums[usize::from(bucket_of_hash(grave.id_hash))];
                *sum = sum.wrapping_sub(digest_term(&grave.fingerprint));
            }
            keep
        });
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.delta.record.state == SessionState::Closed
                    && now_ms >= e.since_ms.saturating_add(ttl)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.pool.drop_session(id);
            if let Some(entry) = self.entries.remove(id) {
                // The grave keeps the fingerprint, so the digest is unchanged
                // and peers still holding the tombstone see no difference.
                let record = &entry.delta.record;
                self.graves.insert(
                    id.clone(),
                    Grave {
                        epoch: record.epoch,
                        primary: record.primary.clone(),
                        version: record.version,
                        writer: record.writer.clone(),
                        fingerprint: entry.fingerprint,
                        id_hash: entry.id_hash,
                        collected_ms: now_ms,
                    },
                );
            }
        }
        expired.len()
    }

    // -- Local writes ------------------------------------------------------

    /// Creates a session with `signer` as its primary. Returns the delta to
    /// spread, already applied here.
    pub fn open(
        &mut self,
        signer: &dyn Signer,
        session: NewSession,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        if self.entries.contains_key(&session.id) || self.graves.contains_key(&session.id) {
            return Err(WriteError::Exists { id: session.id });
        }
        let record = Record {
            id: session.id,
            service: session.service,
            params: session.params,
            client: session.client,
            location: session.location,
            primary: signer.id().clone(),
            backups: session.backups,
            epoch: 1,
            version: 0,
            state: SessionState::Active,
            started_ms: now_ms,
            updated_ms: now_ms,
            reason: "open".to_owned(),
            writer: signer.id().clone(),
            signature: Vec::new(),
        };
        self.commit(signer, record, None, now_ms)
    }

    /// The primary replaces the backups (version + 1).
    pub fn update_backups(
        &mut self,
        signer: &dyn Signer,
        id: &str,
        backups: Vec<NodeId>,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        self.successor(signer, id, true, now_ms, |record| {
            record.version = record.version.saturating_add(1);
            record.backups = backups;
            record.reason = "backups".to_owned();
        })
    }

    /// The primary closes the session (version + 1): the tombstone wins
    /// wherever it spreads, until collected.
    pub fn close(
        &mut self,
        signer: &dyn Signer,
        id: &str,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        self.close_because(signer, id, "close", now_ms)
    }

    /// [`close`](Self::close), saying why in the tombstone.
    pub fn close_because(
        &mut self,
        signer: &dyn Signer,
        id: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        self.successor(signer, id, true, now_ms, |record| {
            record.version = record.version.saturating_add(1);
            record.state = SessionState::Closed;
            record.reason = fit_reason(reason);
        })
    }

    /// A backup takes the session over (epoch + 1, itself primary). The
    /// caller decides when: only when the primary is dead or has left in its
    /// own membership view. If another backup claimed the same epoch, the
    /// higher node id wins everywhere; the loser learns it from
    /// [`Applied::Superseded`].
    pub fn claim(
        &mut self,
        signer: &dyn Signer,
        id: &str,
        reason: &str,
        new_backups: Vec<NodeId>,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        if !self.writable(id)?.backups.contains(signer.id()) {
            return Err(WriteError::NotBackup { id: id.to_owned() });
        }
        let claimer = signer.id().clone();
        self.successor(signer, id, false, now_ms, |record| {
            record.epoch = record.epoch.saturating_add(1);
            record.version = 0;
            record.primary = claimer;
            record.backups = new_backups;
            record.reason = fit_reason(reason);
        })
    }

    /// The primary names another node primary (epoch + 1): a transfer.
    pub fn handover(
        &mut self,
        signer: &dyn Signer,
        id: &str,
        to: NodeId,
        reason: &str,
        new_backups: Vec<NodeId>,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        self.successor(signer, id, true, now_ms, |record| {
            record.epoch = record.epoch.saturating_add(1);
            record.version = 0;
            record.primary = to;
            record.backups = new_backups;
            record.reason = fit_reason(reason);
        })
    }

    fn writable(&self, id: &str) -> Result<&Record, WriteError> {
        let record = self
            .get(id)
            .ok_or_else(|| WriteError::Unknown { id: id.to_owned() })?;
        if record.state == SessionState::Closed {
            return Err(WriteError::Closed { id: id.to_owned() });
        }
        Ok(record)
    }

    /// Writes the next version of a live session: `edit` turns a copy of the
    /// current version into it; `by_primary` requires the signer to be the
    /// current primary.
    fn successor(
        &mut self,
        signer: &dyn Signer,
        id: &str,
        by_primary: bool,
        now_ms: u64,
        edit: impl FnOnce(&mut Record),
    ) -> Result<Delta, WriteError> {
        let prev = self.writable(id)?;
        if by_primary {
            self.require_primary(signer, prev)?;
        }
        let prev = prev.clone();
        let mut record = prev.clone();
        edit(&mut record);
        self.commit(signer, record, Some(prev), now_ms)
    }

    fn require_primary(&self, signer: &dyn Signer, record: &Record) -> Result<(), WriteError> {
        if signer.id() != &record.primary {
            return Err(WriteError::NotPrimary {
                id: record.id.clone(),
                primary: record.primary.clone(),
            });
        }
        Ok(())
    }

    /// Signs, checks like a peer would, and stores.
    fn commit(
        &mut self,
        signer: &dyn Signer,
        mut record: Record,
        prev: Option<Record>,
        now_ms: u64,
    ) -> Result<Delta, WriteError> {
        record.updated_ms = now_ms;
        record.sign(signer);
        let delta = Delta { record, prev };
        validate(&delta.record).map_err(WriteError::Rejected)?;
        authorize(&delta.record, delta.prev.as_ref()).map_err(WriteError::Rejected)?;
        if !verify(&delta.record) {
            return Err(WriteError::Rejected(Rejection::BadSignature {
                id: delta.record.id.clone(),
                writer: delta.record.writer.clone(),
            }));
        }
        self.insert(delta.clone(), now_ms);
        Ok(delta)
    }

    // -- Anti-entropy --------------------------------------------------------

    /// A summary of the whole map in [`BUCKETS`] buckets (sessions by the
    /// first byte of the SHA-256 of their id), each an order-independent hash
    /// of its versions. Kept up to date on every change: cheap to take.
    pub fn digest(&self) -> Digest {
        Digest {
            sums: self.sums.clone(),
        }
    }

    /// The buckets in which `remote` differs from this map.
    pub fn diff(&self, remote: &Digest) -> Vec<u8> {
        (0..=u8::MAX)
            .filter(|&b| self.sums[usize::from(b)] != remote.sums[usize::from(b)])
            .collect()
    }

    /// The [chains](Map::chain) of the sessions in `buckets`, to send to a
    /// peer. Collected tombstones are not sent.
    pub fn records_in(&self, buckets: &[u8]) -> Vec<Delta> {
        let wanted = bucket_set(buckets);
        self.entries
            .values()
            .filter(|e| wanted[usize::from(bucket_of_hash(e.id_hash))])
            .flat_map(Entry::chain)
            .cloned()
            .collect()
    }

    /// What this node holds in `buckets`, one 16-byte line per version:
    /// sent instead of the records themselves when the buckets are full.
    pub fn versions_in(&self, buckets: &[u8]) -> Versions {
        let wanted = bucket_set(buckets);
        let versions = self
            .entries
            .values()
            .map(|e| (e.id_hash, &e.fingerprint))
            .chain(self.graves.values().map(|g| (g.id_hash, &g.fingerprint)))
            .filter(|(h, _)| wanted[usize::from(bucket_of_hash(*h))])
            .map(|(h, fp)| (h, digest_term(fp)))
            .collect();
        Versions {
            buckets: buckets.to_vec(),
            versions,
        }
    }

    /// Compares a peer's [`Versions`] with this map: returns the deltas to
    /// send it (the [chains](Map::chain) of this node's versions it does
    /// not hold) and the id hashes to
    /// ask it for (its versions this node does not hold). Where both hold
    /// different versions of a session, both send theirs and the older one
    /// is stale on arrival.
    pub fn reconcile(&self, remote: &Versions) -> (Vec<Delta>, Vec<u64>) {
        let covered = bucket_set(&remote.buckets);
        let theirs: std::collections::HashMap<u64, u64> = remote.versions.iter().copied().collect();
        let mut ours = std::collections::HashMap::new();
        let mut send = Vec::new();
        for e in self.entries.values() {
            if !covered[usize::from(bucket_of_hash(e.id_hash))] {
                continue;
            }
            let term = digest_term(&e.fingerprint);
            ours.insert(e.id_hash, term);
            if theirs.get(&e.id_hash) != Some(&term) {
                send.extend(e.chain().cloned());
            }
        }
        for g in self.graves.values() {
            ours.insert(g.id_hash, digest_term(&g.fingerprint));
        }
        let want = remote
            .versions
            .iter()
            .filter(|(h, term)| ours.get(h) != Some(term))
            .map(|(h, _)| *h)
            .collect();
        (send, want)
    }

    /// The [chains](Map::chain) of the sessions with these id hashes
    /// (answering [`SyncMessage::WantIds`]).
    pub fn records_named(&self, id_hashes: &[u64]) -> Vec<Delta> {
        let wanted: BTreeSet<u64> = id_hashes.iter().copied().collect();
        self.entries
            .values()
            .filter(|e| wanted.contains(&e.id_hash))
            .flat_map(Entry::chain)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Anti-entropy messages
// ---------------------------------------------------------------------------

fn bucket_set(buckets: &[u8]) -> [bool; BUCKETS] {
    let mut set = [false; BUCKETS];
    for &b in buckets {
        set[usize::from(b)] = true;
    }
    set
}

/// The versions a node holds in some buckets: per session, the hash of its
/// id ([`id_hash`]) and of its signed current version (the term it adds to
/// its [`Digest`]). On the wire, 16 bytes per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// The buckets covered: a session of these buckets that is not listed
    /// is one the sender does not hold.
    pub buckets: Vec<u8>,
    /// `(id hash, version hash)` of each session held.
    pub versions: Vec<(u64, u64)>,
}

impl Serialize for Versions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(with = "serde_bytes")]
            b: &'a [u8],
            #[serde(with = "serde_bytes")]
            v: Vec<u8>,
        }
        let mut packed = Vec::with_capacity(self.versions.len() * 16);
        for (id, version) in &self.versions {
            packed.extend_from_slice(&id.to_be_bytes());
            packed.extend_from_slice(&version.to_be_bytes());
        }
        Wire {
            b: &self.buckets,
            v: packed,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Versions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "serde_bytes")]
            b: Vec<u8>,
            #[serde(with = "serde_bytes")]
            v: Vec<u8>,
        }
        let wire = Wire::deserialize(d)?;
        if wire.v.len() % 16 != 0 {
            return Err(serde::de::Error::custom(
                "versions must be 16 bytes each (id hash, version hash)",
            ));
        }
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_be_bytes(w)
        };
        Ok(Versions {
            buckets: wire.b,
            versions: wire
                .v
                .chunks_exact(16)
                .map(|c| (word(&c[..8]), word(&c[8..])))
                .collect(),
        })
    }
}

/// A summary of a map: per bucket, the wrapping sum of the first 8 bytes of
/// the SHA-256 of each signed version in it. Two maps holding the same
/// versions have equal digests; on the wire, 2048 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Digest {
    sums: Box<[u64; BUCKETS]>,
}

impl Digest {
    /// One number for the whole digest (FNV-1a over the bucket sums): two
    /// maps with equal roots are equal (up to hash collisions), so a sync
    /// between equal maps costs 8 bytes instead of the 2 KiB digest.
    pub fn root(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for sum in self.sums.iter() {
            for b in sum.to_be_bytes() {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.sums.iter().filter(|&&s| s != 0).count();
        write!(f, "Digest({used} non-empty buckets)")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(BUCKETS * 8);
        for sum in self.sums.iter() {
            bytes.extend_from_slice(&sum.to_be_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        if bytes.len() != BUCKETS * 8 {
            return Err(serde::de::Error::custom(format!(
                "a digest is {} bytes, got {}",
                BUCKETS * 8,
                bytes.len()
            )));
        }
        let mut sums = Box::new([0u64; BUCKETS]);
        for (sum, chunk) in sums.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *sum = u64::from_be_bytes(word);
        }
        Ok(Digest { sums })
    }
}

/// The messages of the anti-entropy protocol `/baton/sync/2`.
///
/// The initiator sends its `Digest`. The responder compares it with its own
/// ([`Map::diff`]); if buckets differ it answers in one of two ways:
///
/// - by buckets, when they hold few sessions: `Want(buckets)` followed by
///   its own `Records` of those buckets ([`Map::records_in`],
///   [`SyncMessage::records`]); the initiator answers the `Want` with its
///   `Records` of the same buckets. One round trip; but every session of a
///   differing bucket travels, both ways.
/// - by versions, when they are full: `Versions` of those buckets
///   ([`Map::versions_in`], 16 bytes a session). The initiator answers with
///   the `Records` the responder lacks and `WantIds` for those it lacks itself
///   ([`Map::reconcile`]); the responder sends these ([`Map::records_named`]).
///   Two round trips; only differing sessions travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// The sender's digest.
    #[serde(rename = "d")]
    Digest(Digest),
    /// The root of the sender's digest ([`Digest::root`]): a receiver whose
    /// root is the same answers `Want([])` and the exchange ends; otherwise
    /// it answers with its full `Digest`.
    #[serde(rename = "o")]
    Root(u64),
    /// The buckets the sender wants the receiver's records of.
    #[serde(rename = "w")]
    Want(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Deltas, at most [`MAX_RECORDS_PER_MESSAGE`].
    #[serde(rename = "r")]
    Records(Vec<Delta>),
    /// The sender's versions in the buckets that differ.
    #[serde(rename = "v")]
    Versions(Versions),
    /// The sessions, by id hash, the sender wants the receiver's records of.
    #[serde(rename = "i")]
    WantIds(Vec<u64>),
}

impl SyncMessage {
    /// Splits deltas into `Records` messages of at most
    /// [`MAX_RECORDS_PER_MESSAGE`] deltas and [`MAX_SYNC_BYTES`] bytes.
    pub fn records(deltas: Vec<Delta>) -> Vec<SyncMessage> {
        const BUDGET: usize = RECORDS_BUDGET;
        let mut out = Vec::new();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for delta in deltas {
            let size = delta.encode().len();
            if !chunk.is_empty()
                && (chunk.len() == MAX_RECORDS_PER_MESSAGE || bytes + size > BUDGET)
            {
                out.push(SyncMessage::Records(std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += size;
            chunk.push(delta);
        }
        if !chunk.is_empty() {
            out.push(SyncMessage::Records(chunk));
        }
        out
    }

    /// Encodes to CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        ciborium::into_writer(self, &mut out).expect("CBOR encoding into a Vec cannot fail");
        out
    }

    /// Decodes through the [`MAX_SYNC_BYTES`] cap and the count limits; never
    /// panics. The deltas' legitimacy is checked by [`Map::apply`].
    pub fn decode(bytes: &[u8]) -> Result<SyncMessage, DecodeError> {
        let message: SyncMessage = decode_capped(bytes, MAX_SYNC_BYTES)?;
        match &message {
            SyncMessage::Want(buckets) | SyncMessage::Versions(Versions { buckets, .. })
                if buckets.len() > BUCKETS =>
            {
                return Err(DecodeError::Limit(format!(
                    "{} buckets listed, there are {BUCKETS}",
                    buckets.len()
                )));
            }
            SyncMessage::Records(deltas) if deltas.len() > MAX_RECORDS_PER_MESSAGE => {
                return Err(DecodeError::Limit(format!(
                    "{} records, at most {MAX_RECORDS_PER_MESSAGE} allowed",
                    deltas.len()
                )));
            }
            _ => {}
        }
        Ok(message)
    }
}

/// Why bytes could not be decoded into a [`Delta`] or a [`SyncMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is larger than the cap.
    TooLarge {
        /// Its size in bytes.
        len: usize,
        /// The cap in bytes.
        limit: usize,
    },
    /// The bytes are not a well-formed message.
    Malformed(String),
    /// Well-formed, but breaks a count limit.
    Limit(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, limit } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the limit of {limit} bytes"
                )
            }
            DecodeError::Malformed(why) => write!(f, "malformed session-map message: {why}"),
            DecodeError::Limit(why) => write!(f, "session-map message breaks a limit: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn decode_capped<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let mut reader = bytes;
    let value: T =
        ciborium::from_reader(&mut reader).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the end of the message",
            reader.len()
        )));
    }
    Ok(value)
}
