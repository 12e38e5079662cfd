//! Resuming: a store is reopened only if it was made with the same settings; a harvest that failed before
//! its first shard leaves no store behind.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::store::manifest::{Manifest, ManifestField, MANIFEST_FILE, SAME_ROWS};
use crate::store::ActivationStore;

/// What `out` held before a harvest, to undo a harvest that fails before its first shard: dropped without
/// [`Before::keep`] (an error returned, a panic), it removes the stores the harvest created and wrote no
/// shard into.
pub(super) struct Before {
    out: PathBuf,
    out_existed: bool,
    /// Per store: (directory, had no manifest, existed).
    dirs: Vec<(PathBuf, bool, bool)>,
    /// Set by [`Before::keep`]: the harvest succeeded.
    kept: bool,
}

impl Before {
    /// Records the state of `out` and its store directories `dirs`.
    pub(super) fn record(out: &Path, dirs: &[PathBuf]) -> Self {
        Self {
            out: out.to_path_buf(),
            out_existed: out.exists(),
            dirs: dirs
                .iter()
                .map(|d| (d.clone(), !d.join(MANIFEST_FILE).exists(), d.exists()))
                .collect(),
            kept: false,
        }
    }

    /// The harvest succeeded: keep what it wrote.
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Before {
    /// Removes the stores this harvest created and wrote no shard into (best effort: the harvest's own
    /// error is the one to report).
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for (dir, fresh, existed) in &self.dirs {
            let untouched = *fresh && Manifest::read(dir).is_ok_and(|m| m.shards.is_empty());
            if !untouched {
                continue;
            }
            if *existed {
                let _ = std::fs::remove_file(dir.join(MANIFEST_FILE));
                let _ = clean_temporaries(dir);
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        if !self.out_existed {
            let _ = std::fs::remove_dir(&self.out); // only if empty
        }
    }
}

/// Creates `dir` with a fresh manifest, or reopens an interrupted store made with the same settings.
pub(crate) fn prepare_store(dir: &Path, fresh: Manifest) -> Result<Manifest> {
    if dir.join(MANIFEST_FILE).exists() {
        let store = ActivationStore::open_partial(dir)?;
        let m = store.manifest().clone();
        // Beyond the rows themselves, what the harvest writes of them.
        let written: [ManifestField; 7] = [
            ("model precision (--precision)", |m| {
                m.model.precision.to_string()
            }),
            ("hook", |m| m.hook.clone()),
            ("d", |m| m.d.to_string()),
            ("dtype", |m| m.dtype.to_string()),
            ("target contexts (--tokens)", |m| {
                m.target_contexts.to_string()
            }),
            ("text field", |m| m.corpus.text_field.clone()),
            ("context prefix (BOS first in every context)", |m| {
                format!("{:?}", m.tokenizer.context_prefix)
            }),
        ];
        let differs = m
            .first_difference(&fresh, &SAME_ROWS)
            .or_else(|| m.first_difference(&fresh, &written));
        if let Some((field, stored, requested)) = differs {
            return Err(DataError::ResumeMismatch {
                dir: dir.to_path_buf(),
                field: field.into(),
                stored,
                requested,
            });
        }
        clean_temporaries(dir)?;
        return Ok(m);
    }
    if dir.exists() {
        let entries = std::fs::read_dir(dir).map_err(|e| DataError::io("listing", dir, e))?;
        let foreign = entries
            .filter_map(|e| e.ok())
            .find(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"));
        if let Some(entry) = foreign {
            return Err(DataError::bad_store(
                dir,
                format!("the directory is not empty (it holds `{}`) and is not an activation store; choose an empty or new --out", entry.file_name().to_string_lossy()),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io("creating", dir, e))?;
    fresh.write(dir)?;
    Ok(fresh)
}

/// Removes temporary files left by a killed writer.
fn clean_temporaries(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io("listing", dir, e))?;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_file(e.path())
                .map_err(|err| DataError::io("removing", e.path(), err))?;
        }
    }
    Ok(())
}
