//! The node's ed25519 identity, kept in the data directory so that a
//! restarted node keeps its peer id and rejoins as itself.

use std::io::Write;
use std::path::{Path, PathBuf};

use baton_protocol::NodeId;
use baton_protocol::session::Signer;
use libp2p::identity::Keypair;

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

/// Loads the key from `data_dir`, creating the directory and a new key on
/// first start.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
                path: data_dir.to_path_buf(),
                source,
            })?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .expect("ed25519 keys always encode");
            // Written to a temporary file first so a crash never leaves half a key.
            let tmp = path.with_extension("tmp");
            let mut file = open_private(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
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
}
