//! Files and settings that lie (issue 12): a header whose sizes overflow, a cfg.json or checkpoint that
//! promises more weights than its file holds, an all-NaN source that would be read forever, a thread
//! count or float setting out of range. Each is a clear error before anything of that size is allocated.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rand::SeedableRng;
use zephyra_sae::checkpoint::TrainingState;
use zephyra_sae::npy::{
    f32_header, read_f32_matrix, write_f32_matrix, NpyFile, NpyOrder, NpySource,
};
use zephyra_sae::train::{fill_batch, NonFinitePolicy, TrainConfig, Trainer};
use zephyra_sae::{saelens, Architecture, Sae, SaeConfig, SaeError};

/// A `.npy` file whose header says `shape`, followed by `data_bytes` bytes of data.
fn npy_with_shape(path: &Path, shape: &[usize], data_bytes: usize) {
    let mut bytes = f32_header(shape);
    bytes.resize(bytes.len() + data_bytes, 0);
    std::fs::write(path, bytes).unwrap();
}

const ORDER: NpyOrder = NpyOrder {
    shuffle: true,
    repeat: true,
    seed: 7,
};

#[test]
fn npy_headers_whose_byte_size_overflows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 2^62 × 2^62 × 4 and 2^62 × 576 × 4 both wrap to 0 in 64-bit arithmetic.
    for shape in [[1 << 62, 1 << 62], [1 << 62, 576]] {
        let p = dir.path().join("lying.npy");
        npy_with_shape(&p, &shape, 64);
        let err = NpyFile::open(&p).unwrap_err();
        assert!(
            matches!(err, SaeError::Npy { .. }) && err.to_string().contains("overflows"),
            "{shape:?}: {err}"
        );
        assert!(NpySource::open(&p, ORDER).is_err(), "{shape:?}");
        assert!(read_f32_matrix(&p).is_err(), "{shape:?}");
    }
    // A header that does not overflow but promises more than the file holds stays a truncation error.
    let p = dir.path().join("short.npy");
    npy_with_shape(&p, &[1000, 16], 64);
    let err = NpyFile::open(&p).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

fn small_sae() -> Sae {
    let cfg = SaeConfig::new(4, 8, Architecture::TopK { k: 2 }).unwrap();
    Sae::init(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap()
}

fn set_cfg_key(dir: &Path, key: &str, value: u64) {
    let p = dir.join("cfg.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v[key] = value.into();
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn a_cfg_json_promising_more_weights_than_the_file_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    saelens::save(&small_sae(), dir.path()).unwrap();
    // 2^40 × 8 weights: a valid-looking size (32 TiB) that the 4 × 8 weights file cannot back.
    set_cfg_key(dir.path(), "d_in", 1 << 40);
    let err = saelens::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, SaeError::ShapeMismatch { expected, got, .. }
            if expected == &[1 << 40, 8] && got == &[4, 8]),
        "{err}"
    );
    // 2^61 × 8 × 4 bytes overflows: refused by the configuration check itself.
    set_cfg_key(dir.path(), "d_in", 1 << 61);
    let err = saelens::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, SaeError::InvalidConfig { .. }) && err.to_string().contains("overflows"),
        "{err}"
    );
}

fn acts(dir: &Path, n: usize, d: usize, value: impl Fn(usize) -> f32) -> std::path::PathBuf {
    let rows: Vec<f32> = (0..n * d).map(value).collect();
    let p = dir.join("acts.npy");
    write_f32_matrix(&p, &rows, d).unwrap();
    p
}

fn train_config(d_in: usize) -> TrainConfig {
    let sae = SaeConfig::new(d_in, 16, Architecture::TopK { k: 2 }).unwrap();
    let mut cfg = TrainConfig::for_sae(sae, 16, 16 * 4);
    cfg.threads = 1;
    cfg.init_rows = 32;
    cfg
}

#[test]
fn a_checkpoint_promising_more_weights_than_it_holds_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = acts(tmp.path(), 200, 4, |i| ((i * 37 % 11) as f32 - 5.0) * 0.3);
    let run = tmp.path().join("run");
    let mut src = NpySource::open(&data, ORDER).unwrap();
    let mut t = Trainer::new(train_config(4), &mut src, Some(&run)).unwrap();
    t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    let mut state = TrainingState::load(&run).unwrap();
    // d_sae 2^32 − 1 passes the size checks; the file holds 4 × 16 encoder weights.
    state.meta.config.sae.d_sae = u32::MAX as usize;
    state.save(&run).unwrap();
    let err = Trainer::resume(&run, None, &mut NpySource::open(&data, ORDER).unwrap()).unwrap_err();
    assert!(
        matches!(err, SaeError::Checkpoint { .. }) && err.to_string().contains("param.W_enc"),
        "{err}"
    );
    assert!(err.to_string().contains("corrupt"), "{err}");
}

/// Runs `f` on another thread and fails the test if it has not returned within a generous `limit`
/// (a hang is the defect under test; nothing is timed otherwise).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: it loops forever"))
}

#[test]
fn an_all_nan_source_under_skip_stops_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = acts(tmp.path(), 50, 4, |_| f32::NAN);
    let err = within(Duration::from_secs(120), move || {
        let mut src = NpySource::open(&data, ORDER).unwrap();
        let cfg = train_config(4);
        assert_eq!(cfg.non_finite, NonFinitePolicy::Skip, "the default policy");
        Trainer::new(cfg, &mut src, None).unwrap_err()
    });
    assert!(
        matches!(err, SaeError::NoUsableRows { rows_per_pass: 50 }),
        "{err}"
    );
    assert!(err.to_string().contains("NaN"), "{err}");
}

#[test]
fn one_usable_row_per_shuffled_pass_is_enough() {
    // Row 17 of 40 is the only finite one; each epoch puts it somewhere else, so two copies can be up to
    // 2·40 − 2 rows apart. Every batch must still fill, with that row only.
    let tmp = tempfile::tempdir().unwrap();
    let d = 3;
    let data = acts(tmp.path(), 40, d, |i| {
        if i / d == 17 {
            (i % d) as f32 + 1.0
        } else {
            f32::NAN
        }
    });
    let mut src = NpySource::open(&data, ORDER).unwrap();
    let mut buf = vec![0.0; 8 * d];
    let mut skipped_total = 0;
    for _ in 0..30 {
        let (rows, skipped) = fill_batch(&mut src, &mut buf, d, NonFinitePolicy::Skip, 0).unwrap();
        assert_eq!(rows, 8);
        assert!(buf.chunks(d).all(|r| r == [1.0, 2.0, 3.0]), "{buf:?}");
        skipped_total += skipped;
    }
    // 30 batches of 8 rows = 240 usable rows = 240 epochs of 39 skipped rows (give or take the last).
    assert!(
        skipped_total > 238 * 39 && skipped_total <= 240 * 39,
        "{skipped_total}"
    );
}

fn option_of(err: SaeError) -> String {
    match err {
        SaeError::InvalidConfig { option, .. } => option,
        other => panic!("expected InvalidConfig, got {other}"),
    }
}

#[test]
fn thread_counts_beyond_four_per_core_are_refused() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let max = zephyra_sae::train::config::max_threads();
    assert_eq!(max, (4 * cores).min(1024));
    for threads in [0, max + 1, 100_000] {
        let mut cfg = train_config(4);
        cfg.threads = threads;
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains(&format!("1..={max}")), "{err}");
        assert_eq!(option_of(err), "--threads", "{threads}");
    }
    let mut cfg = train_config(4);
    cfg.threads = max;
    cfg.validate().unwrap();
}

#[test]
fn every_float_setting_is_checked_and_named() {
    type Edit = fn(&mut TrainConfig);
    let cases: [(&str, Edit); 20] = [
        ("--lr", |c| c.lr = f32::NAN),
        ("--lr", |c| c.lr = f32::INFINITY),
        ("--lr", |c| c.lr = 0.0),
        ("--l1", |c| c.sparsity_coeff = -1.0),
        ("--l1", |c| c.sparsity_coeff = f64::NAN),
        ("--max-grad-norm", |c| c.max_grad_norm = Some(f64::NAN)),
        ("--max-grad-norm", |c| c.max_grad_norm = Some(-1.0)),
        ("--max-grad-norm", |c| c.max_grad_norm = Some(f64::INFINITY)),
        ("adam.beta1", |c| c.adam.beta1 = 1.0),
        ("adam.beta2", |c| c.adam.beta2 = f32::NAN),
        ("adam.eps", |c| c.adam.eps = 0.0),
        ("adam.weight_decay", |c| c.adam.weight_decay = -0.1),
        ("lr_decay_start", |c| c.lr_decay_start = 1.5),
        ("lr_final_fraction", |c| c.lr_final_fraction = f32::NAN),
        ("aux_coeff", |c| c.aux_coeff = f64::NEG_INFINITY),
        ("bandwidth", |c| c.bandwidth = 0.0),
        ("threshold_rate", |c| c.threshold_rate = 2.0),
        ("--batch-rows", |c| c.batch_size = 0),
        ("--batch-rows", |c| c.batch_size = usize::MAX / 2),
        ("--metrics-every", |c| c.metrics_every_steps = 0),
    ];
    for (option, edit) in cases {
        let mut cfg = train_config(4);
        cfg.total_tokens = u64::MAX;
        edit(&mut cfg);
        assert_eq!(option_of(cfg.validate().unwrap_err()), option);
    }
    // The documented "off" and the edges of the ranges stay valid.
    let mut cfg = train_config(4);
    cfg.max_grad_norm = None;
    cfg.sparsity_coeff = 0.0;
    cfg.adam.beta1 = 0.0;
    cfg.lr_decay_start = 1.0;
    cfg.threshold_rate = 1.0;
    cfg.validate().unwrap();
    let err = {
        let mut cfg = train_config(4);
        cfg.max_grad_norm = Some(-1.0);
        cfg.validate().unwrap_err().to_string()
    };
    assert!(
        err.contains("--max-grad-norm -1")
            && err.contains("> 0")
            && err.contains("0 turns clipping off"),
        "{err}"
    );
}
