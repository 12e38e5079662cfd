//! How the crate reads its files: JSON read with errors that name the file. Files are written with
//! [`zephyra_io::write_atomic`] (a reader never sees a half-written file).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_json_names_the_file_on_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"[1, 2]").unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), vec![1, 2]);
        let e = read_json::<Vec<u32>>(&dir.path().join("missing.json")).unwrap_err();
        assert!(
            matches!(&e, AnalysisError::Io { path: p, .. } if p.ends_with("missing.json")),
            "{e}"
        );
        std::fs::write(&path, b"{not json").unwrap();
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
