//! How the crate reads and writes its files: JSON read with errors that name the file; files written with
//! [`zephyra_io::write_atomic`] (a reader never sees a half-written file).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// Writes `value` to `path` as pretty JSON with a final newline, atomically.
pub(crate) fn write_json_pretty<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| AnalysisError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    Ok(zephyra_io::write_atomic(path, text.as_bytes())?)
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
    fn pretty_json_ends_with_a_newline_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        write_json_pretty(&path, &vec![1u32, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  1,\n  2\n]\n");
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), vec![1, 2]);
    }

    #[test]
    fn a_bare_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("a.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("d/a.json")), Path::new("d"));
    }
}
