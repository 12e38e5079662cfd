//! How the crate reads and writes its files: JSON read with errors that name the file, and atomic writes
//! (the bytes go to a temporary file in the destination's directory, which is synced and then renamed over
//! the destination, so a reader never sees a half-written file).

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{AnalysisError, Result};

/// Reads and parses the JSON file `path`.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| AnalysisError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| AnalysisError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AnalysisError::Io { path, source }
    };
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn a_missing_directory_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("a.json");
        let e = write_atomic(&path, b"x").unwrap_err();
        assert!(
            matches!(&e, AnalysisError::Io { path: p, .. } if p == &dir.path().join("nope")),
            "{e}"
        );
    }

    #[test]
    fn read_json_names_the_file_on_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"[1, 2]").unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), vec![1, 2]);
        let e = read_json::<Vec<u32>>(&dir.path().join("missing.json")).unwrap_err();
        assert!(
            matches!(&e, AnalysisError::Io { path: p, .. } if p.ends_with("missing.json")),
            "{e}"
        );
        write_atomic(&path, b"{not json").unwrap();
        let e = read_json::<Vec<u32>>(&path).unwrap_err();
        assert!(
            matches!(&e, AnalysisError::Json { path: p, .. } if p == &path),
            "{e}"
        );
    }

    #[test]
    fn a_bare_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("a.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("d/a.json")), Path::new("d"));
    }
}
