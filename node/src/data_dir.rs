//! The data directory: created private (0700), held by one node at a time
//! through an advisory lock on `batond.lock` that names the holder's pid,
//! and the secret files of a node (identity and network keys) read through
//! a size cap, with a warning when others may read them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// File in the data directory that the running node holds locked.
pub const LOCK_FILE: &str = "batond.lock";

/// Largest key file read: keys are tens of bytes, so anything longer is a
/// wrong path (`/dev/zero`, a log file) and reading on would only waste memory.
pub const MAX_KEY_FILE: u64 = 4096;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory or its lock file could not be created or opened.
    #[error("data directory {path}: {source} (choose another with --data-dir)")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another batond ({holder}): two processes with one \
         identity would both serve its sessions; stop that one first, or give this node its \
         own --data-dir"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// `pid N` as the holder wrote it, or why that is unknown.
        holder: String,
    },
}

/// A data directory held by this process until dropped (the kernel also
/// drops the lock when the process dies, `kill -9` included).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: Lock,
}

#[cfg(unix)]
struct Lock(nix::fcntl::Flock<File>);

#[cfg(not(unix))]
struct Lock(File);

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lock")
    }
}

impl DataDir {
    /// Creates the directory (mode 0700) if needed and locks it, or says
    /// which process holds it.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        create_private_dir(path).map_err(io)?;
        warn_if_exposed(path, Secret::DataDir);
        let lock_path = path.join(LOCK_FILE);
        let file = open_private(&lock_path, false).map_err(|source| DataDirError::Io {
            path: lock_path.clone(),
            source,
        })?;
        let lock = lock(file).map_err(|(mut file, source)| {
            if source.kind() != io::ErrorKind::WouldBlock {
                return DataDirError::Io {
                    path: lock_path.clone(),
                    source,
                };
            }
            let mut text = String::new();
            let holder = match (&mut file).take(64).read_to_string(&mut text) {
                Ok(_) if text.trim().starts_with("pid ") => text.trim().to_string(),
                _ => format!("its pid is not in {}", lock_path.display()),
            };
            DataDirError::InUse {
                dir: path.to_path_buf(),
                holder,
            }
        })?;
        let mut file: &File = lock.file();
        file.set_len(0)
            .and_then(|()| writeln!(file, "pid {}", std::process::id()))
            .map_err(|source| DataDirError::Io {
                path: lock_path,
                source,
            })?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn lock(file: File) -> Result<Lock, (File, io::Error)> {
    use nix::fcntl::{Flock, FlockArg};
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map(Lock)
        .map_err(|(file, errno)| (file, io::Error::from(errno)))
}

#[cfg(not(unix))]
fn lock(file: File) -> Result<Lock, (File, io::Error)> {
    Ok(Lock(file))
}

impl Lock {
    fn file(&self) -> &File {
        &self.0
    }
}

/// Creates `path` and its missing parents with mode 0700.
fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Opens a file for writing that only its owner may read: created with
/// mode 0600, or, with `create_new`, failing if it exists.
pub fn open_private(path: &Path, create_new: bool) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(false);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Reads a key file of at most [`MAX_KEY_FILE`] bytes; a longer one is an
/// `InvalidData` error, found after reading one byte past the cap.
pub fn read_key_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {MAX_KEY_FILE} bytes: a key file holds a few dozen"),
        ));
    }
    Ok(bytes)
}

/// A secret that [`warn_if_exposed`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// The data directory, which holds the identity key.
    DataDir,
    /// The node's identity key.
    IdentityKey,
    /// The overlay's network key file (`--network-key-file`).
    NetworkKey,
}

impl Secret {
    /// The warning for this secret readable by others: what a copy gives.
    fn exposed_warning(self) -> &'static str {
        match self {
            Secret::DataDir => {
                "the data directory is readable by other users: a copy of a key lets its \
                 holder act as this node; chmod go-rwx it"
            }
            Secret::IdentityKey => {
                "the identity key is readable by other users: a copy of a key lets its holder \
                 act as this node; chmod go-rwx it"
            }
            Secret::NetworkKey => {
                "the network key file is readable by other users: a copy of it lets its \
                 holder join the overlay; chmod go-rwx it"
            }
        }
    }
}

/// Logs a warning when users other than the owner may read `path`.
pub fn warn_if_exposed(path: &Path, what: Secret) {
    if let Some(mode) = exposed_mode(path) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            "{}",
            what.exposed_warning()
        );
    }
}

/// The permission bits of `path` when group or others have any access.
#[cfg(unix)]
fn exposed_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn exposed_mode(_path: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("baton-datadir-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_created_private_with_its_parents() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp("private");
        let dir = root.join("a/b");
        let held = DataDir::open(&dir).unwrap();
        assert_eq!(held.path(), dir);
        for path in [&root.join("a"), &dir] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        }
        assert_eq!(exposed_mode(&dir), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(exposed_mode(&dir), Some(0o755));
        drop(held);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_held_directory_is_refused_naming_the_holder_until_released() {
        let dir = temp("lock");
        let first = DataDir::open(&dir).unwrap();
        let err = DataDir::open(&dir).unwrap_err();
        let pid = format!("pid {}", std::process::id());
        assert!(
            matches!(&err, DataDirError::InUse { holder, .. } if *holder == pid),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("in use by another batond ({pid})"))
                && message.contains("--data-dir"),
            "{message}"
        );
        drop(first);
        let again = DataDir::open(&dir).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_exposed_secret_says_what_a_copy_gives() {
        let network = Secret::NetworkKey.exposed_warning();
        assert!(
            network.starts_with("the network key file is readable by other users")
                && network.contains("lets its holder join the overlay")
                && !network.contains("act as this node"),
            "{network}"
        );
        for secret in [Secret::IdentityKey, Secret::DataDir] {
            let w = secret.exposed_warning();
            assert!(w.contains("lets its holder act as this node"), "{w}");
        }
        assert!(
            Secret::IdentityKey
                .exposed_warning()
                .starts_with("the identity key is readable")
        );
    }

    #[test]
    fn key_files_are_read_through_a_cap() {
        let dir = temp("cap");
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok");
        std::fs::write(&ok, vec![7u8; MAX_KEY_FILE as usize]).unwrap();
        assert_eq!(read_key_file(&ok).unwrap().len(), MAX_KEY_FILE as usize);
        let big = dir.join("big");
        std::fs::write(&big, vec![7u8; MAX_KEY_FILE as usize + 1]).unwrap();
        let err = read_key_file(&big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
        // An endless file ends at the cap, at once.
        #[cfg(unix)]
        assert_eq!(
            read_key_file(Path::new("/dev/zero")).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
