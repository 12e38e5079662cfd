//! Files the way every Zephyra crate writes and checks them.
//!
//! | item | responsibility |
//! | --- | --- |
//! | [`write_atomic`] | replace a file in one step: a reader sees the old bytes or the new ones, never half |
//! | [`sha256_file`] | hex sha256 of a file, streamed |
//! | [`sha256_hex`] | hex sha256 of bytes in memory |
//! | [`Error`] | what was being done, on which path, and the OS error |
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("summary.json");
//! zephyra_io::write_atomic(&path, b"{}\n")?;
//! assert_eq!(std::fs::read(&path)?, b"{}\n");
//! assert_eq!(zephyra_io::sha256_file(&path)?, zephyra_io::sha256_hex(b"{}\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} `{}`: {source}", path.display())]
pub struct Error {
    /// What was being done ("writing", "renaming into", …).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl Error {
    /// `action` on `path` failed with the OS error given to the returned closure.
    fn new(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error {
            action,
            path,
            source,
        }
    }
}

/// Writes `bytes` to `path` atomically.
///
/// The bytes go to a temporary file in `path`'s directory (created if missing), which is synced to disk,
/// made readable by all (mode 0644 less the umask, like any file the user creates; temporary files start
/// at 0600) and renamed over `path`; then the directory is synced so that the rename itself survives a
/// crash. On error nothing is left behind and an existing `path` keeps its old contents.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::new("creating the directory", dir))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(Error::new("creating a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(Error::new("writing", path))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::new("syncing", path))?;
    tmp.persist(path)
        .map_err(|e| Error::new("renaming into", path)(e.error))?;
    sync_dir(dir)
}

/// Syncs a directory's entries (where the platform can).
fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::new("syncing the directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Hex sha256 of the contents of `path`, read in a stream.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut file = std::fs::File::open(path).map_err(Error::new("opening", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(Error::new("reading", path))?;
    Ok(hex(&hasher.finalize()))
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
