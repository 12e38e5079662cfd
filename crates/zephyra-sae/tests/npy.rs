//! `.npy` reading and writing against files written by NumPy 2.4 (`tests/fixtures/numpy_*.npy`, made with
//! `np.save` on `[[1.5, -2.0], [0.25, 3.0], [-1.0, 1e-3]]` as float32, float64, Fortran order, and a
//! zeros array of shape (2, 2, 2)), plus the bad inputs the trainer must refuse.

use std::path::{Path, PathBuf};

use zephyra_sae::npy::{read_f32_matrix, write_f32_matrix, NpyFile, NpyOrder, NpySource};
use zephyra_sae::train::{ActivationSource, MemorySource};
use zephyra_sae::SaeError;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const EXPECTED: [f32; 6] = [1.5, -2.0, 0.25, 3.0, -1.0, 1e-3];

#[test]
fn reads_a_numpy_written_float32_matrix() {
    let (rows, n, d) = read_f32_matrix(&fixture("numpy_f32_3x2.npy")).unwrap();
    assert_eq!((n, d), (3, 2));
    assert_eq!(rows, EXPECTED);
}

#[test]
fn writer_produces_numpys_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.npy");
    write_f32_matrix(&out, &EXPECTED, 2).unwrap();
    let ours = std::fs::read(&out).unwrap();
    let numpy = std::fs::read(fixture("numpy_f32_3x2.npy")).unwrap();
    assert_eq!(ours, numpy);
}

fn npy_err(path: &Path) -> String {
    match NpyFile::open(path) {
        Err(e @ SaeError::Npy { .. }) => e.to_string(),
        other => panic!(
            "expected an Npy error for {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn refuses_wrong_dtype_order_rank_and_truncation() {
    let e = npy_err(&fixture("numpy_f64_3x2.npy"));
    assert!(e.contains("'<f8'") && e.contains("float32"), "{e}");
    let e = npy_err(&fixture("numpy_f32_fortran_3x2.npy"));
    assert!(e.contains("Fortran"), "{e}");
    let e = npy_err(&fixture("numpy_f32_2x2x2.npy"));
    assert!(e.contains("[2, 2, 2]") && e.contains("2 dimensions"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("numpy_f32_3x2.npy")).unwrap();
    let cut = dir.path().join("cut.npy");
    std::fs::write(&cut, &full[..full.len() - 5]).unwrap();
    let e = npy_err(&cut);
    assert!(e.contains("truncated") && e.contains("3 x 2"), "{e}");
    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"hello, this is not numpy").unwrap();
    assert!(npy_err(&junk).contains("magic"));
    let short = dir.path().join("short.npy");
    std::fs::write(&short, &full[..40]).unwrap();
    assert!(npy_err(&short).contains("header"));
    let missing = dir.path().join("missing.npy");
    assert!(matches!(NpyFile::open(&missing), Err(SaeError::Io { .. })));
}

fn big_file(dir: &Path, n: usize, d: usize) -> PathBuf {
    let rows: Vec<f32> = (0..n * d).map(|i| i as f32).collect();
    let p = dir.join("big.npy");
    write_f32_matrix(&p, &rows, d).unwrap();
    p
}

/// A 50 × 3 file of distinct values, and a shuffled, repeating source over it (seed 9).
fn shuffled_big_file(dir: &Path) -> (PathBuf, NpyOrder, NpySource) {
    let p = big_file(dir, 50, 3);
    let order = NpyOrder {
        shuffle: true,
        repeat: true,
        seed: 9,
    };
    let src = NpySource::open(&p, order).unwrap();
    (p, order, src)
}

#[test]
fn shuffled_epochs_are_permutations_and_seek_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (50, 3);
    let (p, order, mut src) = shuffled_big_file(dir.path());
    let mut epoch = vec![0.0; n * d];
    assert_eq!(src.next_rows(&mut epoch).unwrap(), n);
    let mut firsts: Vec<usize> = epoch.chunks(d).map(|r| r[0] as usize / d).collect();
    assert_ne!(firsts, (0..n).collect::<Vec<_>>(), "rows were not shuffled");
    for r in epoch.chunks(d) {
        let i = r[0] as usize;
        assert_eq!(
            r,
            [i as f32, (i + 1) as f32, (i + 2) as f32],
            "rows must stay whole"
        );
    }
    firsts.sort();
    assert_eq!(
        firsts,
        (0..n).collect::<Vec<_>>(),
        "an epoch visits every row once"
    );

    let mut buf = vec![0.0; 7 * d];
    src.next_rows(&mut buf).unwrap();
    let cursor = src.cursor();
    let mut a = vec![0.0; 80 * d];
    src.next_rows(&mut a).unwrap();
    let mut again = NpySource::open(&p, order).unwrap();
    again.seek(&cursor).unwrap();
    let mut b = vec![0.0; 80 * d];
    again.next_rows(&mut b).unwrap();
    assert_eq!(a, b);

    let mut other = NpySource::open(&p, NpyOrder { seed: 10, ..order }).unwrap();
    let e = other.seek(&cursor).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn shuffled_rows_in_memory_are_read_as_the_same_npy_file_is() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, mut file) = shuffled_big_file(dir.path());
    let (rows, _, d) = read_f32_matrix(&p).unwrap();
    let mut memory = MemorySource::new(rows, d, true)
        .unwrap()
        .shuffled(9)
        .unwrap();
    // Three passes, read in batches that straddle the pass boundaries.
    for _ in 0..10 {
        let (mut a, mut b) = (vec![0.0; 17 * d], vec![0.0; 17 * d]);
        assert_eq!(file.next_rows(&mut a).unwrap(), 17);
        assert_eq!(memory.next_rows(&mut b).unwrap(), 17);
        assert_eq!(a, b);
    }
}

#[test]
fn a_row_range_without_repeat_is_exhausted_after_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let p = big_file(dir.path(), 10, 2);
    let file = NpyFile::open(&p).unwrap();
    let mut src = NpySource::new(
        file,
        7..10,
        NpyOrder {
            shuffle: false,
            repeat: false,
            seed: 0,
        },
    )
    .unwrap();
    let mut buf = vec![0.0; 8];
    assert_eq!(src.next_rows(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..6], &[14.0, 15.0, 16.0, 17.0, 18.0, 19.0]);
    assert_eq!(src.next_rows(&mut buf).unwrap(), 0);
    let file = NpyFile::open(&p).unwrap();
    assert!(NpySource::new(
        file,
        5..11,
        NpyOrder {
            shuffle: false,
            repeat: false,
            seed: 0
        }
    )
    .is_err());
}
