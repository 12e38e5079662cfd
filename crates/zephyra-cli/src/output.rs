//! Output directories that a failed command leaves as it found them.
//!
//! [`OutputDir::claim`] checks the path a flag names (a directory, or nothing yet) and records what is
//! already there; [`OutputDir::discard_new`] removes what the command added (and the directory itself if the
//! command created it). A command that fails calls it unless what it wrote is worth keeping (`train` keeps a
//! run with a checkpoint, which `--resume` continues).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// An output directory and what it held before the command.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    existed: bool,
    before: HashSet<OsString>,
}

impl OutputDir {
    /// Checks that `path` (given by `flag`) is a directory or does not exist yet, and records its entries.
    pub fn claim(flag: &str, path: &Path) -> anyhow::Result<Self> {
        let existed = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() || path.is_dir() => true,
            Ok(_) => bail!(
                "{flag} {}: a file of that name exists, and {flag} names a directory; choose another path or remove the file",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("{flag} {}", path.display())))
            }
        };
        let before = if existed {
            entries(path)?
        } else {
            HashSet::new()
        };
        Ok(Self {
            path: path.to_path_buf(),
            existed,
            before,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes every entry added since [`OutputDir::claim`], and the directory if it did not exist then.
    /// Best effort: what cannot be removed is reported as a warning.
    pub fn discard_new(&self) {
        let now = match entries(&self.path) {
            Ok(now) => now,
            Err(_) => return, // never created, or gone
        };
        for name in now.difference(&self.before) {
            let p = self.path.join(name);
            let removed = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %p.display(), error = %e, "could not remove a partial output");
            }
        }
        if !self.existed {
            if let Err(e) = std::fs::remove_dir(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the output directory");
            }
        }
    }
}

fn entries(dir: &Path) -> anyhow::Result<HashSet<OsString>> {
    let mut names = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        names.insert(entry?.file_name());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_removes_only_what_was_added() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("out");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("kept.txt"), "x").expect("write");
        let out = OutputDir::claim("--out", &dir).expect("claim");
        std::fs::write(dir.join(".training.1.tmp.png"), "x").expect("write");
        std::fs::create_dir(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("sub/a"), "x").expect("write");
        out.discard_new();
        let left: Vec<_> = entries(&dir).expect("list").into_iter().collect();
        assert_eq!(left, vec![OsString::from("kept.txt")]);
    }

    #[test]
    fn discard_removes_a_directory_it_created() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("new");
        let out = OutputDir::claim("--out", &dir).expect("claim");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("metrics.jsonl"), "").expect("write");
        out.discard_new();
        assert!(!dir.exists());
    }

    #[test]
    fn a_file_in_the_way_is_refused_naming_the_flag() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let err = OutputDir::claim("--out", &file).expect_err("a file");
        assert!(err.to_string().starts_with("--out "), "{err}");
    }
}
