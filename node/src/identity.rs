//! The node's ed25519 identity, kept in the data directory so that a
//! restarted node keeps its peer id and rejoins as itself.

use std::io::Write;
use std::path::{Path, PathBuf};

use baton_protocol::NodeId;
use baton_protocol::session::Signer;
use libp2p::identity::Keypair;

use crate::data_dir::{open_private, read_key_file};

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data directory or key file could not be read or written.
    #[error("identity key {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file exists but holds no valid key.
    #[error(
        "identity key {path} is not a valid libp2p ed25519 key ({why}); \
         move it away to start as a new node"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Loads the key from `data_dir`, creating a new key on first start (and
/// the directory, when no [`DataDir`](crate::data_dir::DataDir) did).
///
/// A new key is written to a temporary file of a unique name, then linked
/// to its final name, which fails if that exists: of two processes racing
/// on a fresh directory, both end up with the key of the first.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match load(&path) {
        Err(IdentityError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        loaded => return loaded,
    }
    std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .expect("ed25519 keys always encode");
    let tmp = data_dir.join(format!(
        ".{KEY_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = open_private(&tmp, true)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            // The new name must survive a crash too.
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            Ok(key)
        }
        // Another process created it first: its key is the node's.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(&path),
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// Checks the key in `data_dir` without creating anything: its peer id
/// when there is a key, `None` when a start would create one.
pub fn check(data_dir: &Path) -> Result<Option<libp2p::PeerId>, IdentityError> {
    match load(&data_dir.join(KEY_FILE)) {
        Ok(key) => Ok(Some(key.public().to_peer_id())),
        Err(IdentityError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads and decodes the key at `path`.
fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = read_key_file(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidData => IdentityError::Corrupt {
            path: path.to_path_buf(),
            why: source.to_string(),
        },
        _ => IdentityError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Signs session records with the node's libp2p ed25519 key.
pub struct KeySigner {
    id: NodeId,
    key: Keypair,
}

impl KeySigner {
    /// A signer for `key`.
    pub fn new(key: Keypair) -> Self {
        let id =
            NodeId::new(&key.public().to_peer_id().to_bytes()).expect("a peer id fits a node id");
        KeySigner { id, key }
    }
}

/// Shows the id only: the secret stays out of logs.
impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner").field("id", &self.id).finish()
    }
}

impl Signer for KeySigner {
    fn id(&self) -> &NodeId {
        &self.id
    }
    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        // ed25519 signing cannot fail; other key types are never built here.
        self.key.sign(bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("baton-id-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create(&dir).unwrap();
        let second = load_or_create(&dir).unwrap();
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        std::fs::write(dir.join(KEY_FILE), b"garbage").unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("not a valid"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn racing_first_starts_agree_on_one_key() {
        let dir = std::env::temp_dir().join(format!("baton-id-race-{}", std::process::id()));
        for _ in 0..20 {
            let _ = std::fs::remove_dir_all(&dir);
            let ids: Vec<_> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| load_or_create(&dir).map(|k| k.public().to_peer_id())))
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let first = ids[0].as_ref().unwrap();
            for id in &ids {
                assert_eq!(id.as_ref().unwrap(), first, "{ids:?}");
            }
            let on_disk = load_or_create(&dir).unwrap().public().to_peer_id();
            assert_eq!(&on_disk, first);
            // No temporary file is left behind.
            let names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, [KEY_FILE], "{names:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_oversized_key_file_is_refused_without_reading_it_all() {
        let dir = std::env::temp_dir().join(format!("baton-id-big-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(KEY_FILE), vec![0u8; 1 << 20]).unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(
            err.contains("longer than 4096 bytes") && err.contains("move it away"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
