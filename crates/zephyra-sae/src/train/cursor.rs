//! Where an [`ActivationSource`](super::ActivationSource) stands: the typed [`Cursor`] stored in
//! checkpoints.
//!
//! Wire format: a JSON object tagged by `kind`, the one checkpoints have held since the first version
//! (so old checkpoints resume):
//! ```text
//! {"kind": "memory", "pos": int, "epoch": int}
//! {"kind": "npy", "path": str, "n_rows": int, "d_in": int, "start": int, "end": int,
//!  "order": {"shuffle": bool, "repeat": bool, "seed": int}, "epoch": int, "pos": int}
//! {"kind": "store", "path": str, "epoch": int, "window": int, "offset": int}
//! {"kind": "stream", "epoch": int, "window": int, "offset": int}
//! {"kind": "zip", "input": cursor, "target": cursor}
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::npy::NpyOrder;

/// The position of a source, one variant per kind of source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Cursor {
    /// A [`MemorySource`](super::MemorySource).
    Memory {
        /// Rows of the current epoch already served.
        pos: u64,
        /// Epoch (0-based).
        epoch: u64,
    },
    /// An [`NpySource`](crate::npy::NpySource): the file and row range it reads, and where it stands.
    Npy {
        /// The `.npy` file.
        path: PathBuf,
        /// Rows in the file.
        n_rows: u64,
        /// Row width.
        d_in: u64,
        /// First row of the range read.
        start: u64,
        /// End (exclusive) of the range read.
        end: u64,
        /// How the rows are walked.
        order: NpyOrder,
        /// Epoch (0-based).
        epoch: u64,
        /// Rows of the current epoch already served.
        pos: u64,
    },
    /// An activation store read through a shuffle buffer.
    Store {
        /// The store directory.
        path: PathBuf,
        /// Epoch (0-based).
        epoch: u64,
        /// Window inside the epoch.
        window: u64,
        /// Rows of that window already served.
        offset: u64,
    },
    /// Rows harvested on the fly, through a shuffle buffer.
    Stream {
        /// Epoch (always 0: a single pass).
        epoch: u64,
        /// Window inside the epoch.
        window: u64,
        /// Rows of that window already served.
        offset: u64,
    },
    /// A transcoder's [`ZipSource`](super::ZipSource): the input's and the target's cursors.
    Zip {
        /// The input source's position.
        input: Box<Cursor>,
        /// The target source's position.
        target: Box<Cursor>,
    },
}

impl Cursor {
    /// The `kind` tag: `memory`, `npy`, `store`, `stream` or `zip`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cursor::Memory { .. } => "memory",
            Cursor::Npy { .. } => "npy",
            Cursor::Store { .. } => "store",
            Cursor::Stream { .. } => "stream",
            Cursor::Zip { .. } => "zip",
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cursors as the code before the typed cursor wrote them (`json!` objects, keys in that order).
    const WRITTEN_BEFORE: [&str; 4] = [
        r#"{"kind":"memory","pos":6,"epoch":1}"#,
        r#"{"kind":"npy","path":"/data/acts.npy","n_rows":1000,"d_in":64,"start":0,"end":900,"order":{"shuffle":true,"repeat":true,"seed":7},"epoch":2,"pos":15}"#,
        r#"{"kind":"store","epoch":1,"window":3,"offset":4096,"path":"/data/store"}"#,
        r#"{"kind":"stream","epoch":0,"window":2,"offset":17}"#,
    ];

    #[test]
    fn cursors_of_old_checkpoints_read_back_and_write_the_same_json() {
        let expected = [
            Cursor::Memory { pos: 6, epoch: 1 },
            Cursor::Npy {
                path: "/data/acts.npy".into(),
                n_rows: 1000,
                d_in: 64,
                start: 0,
                end: 900,
                order: NpyOrder {
                    shuffle: true,
                    repeat: true,
                    seed: 7,
                },
                epoch: 2,
                pos: 15,
            },
            Cursor::Store {
                path: "/data/store".into(),
                epoch: 1,
                window: 3,
                offset: 4096,
            },
            Cursor::Stream {
                epoch: 0,
                window: 2,
                offset: 17,
            },
        ];
        for (json, want) in WRITTEN_BEFORE.iter().zip(&expected) {
            let got: Cursor = serde_json::from_str(json).unwrap();
            assert_eq!(&got, want, "{json}");
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                serde_json::from_str::<serde_json::Value>(json).unwrap(),
                "the same JSON object is written"
            );
        }
        let unknown = serde_json::from_str::<Cursor>(r#"{"kind":"tape","pos":1}"#);
        assert!(unknown.is_err());
    }
}
