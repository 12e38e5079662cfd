//! The typed files between the trainer, the CLI and the web app (issue 13): `summary.json` as
//! [`TrainSummary`] and the checkpoint's description as [`StateMeta`]. Files written before these types
//! existed (`tests/fixtures/old_run`, made by `zephyra train` with `json!` and a `serde_json::Value`
//! checkpoint; the checkpoint's `config.data` removed as in runs before data options were recorded) still
//! load, and a summary written again holds the same keys, nesting and values.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use zephyra_sae::checkpoint::{TrainingState, STATE_FILE};
use zephyra_sae::npy::{NpyFile, NpyOrder, NpySource};
use zephyra_sae::train::{TrainSummary, Trainer, SUMMARY_FILE};

fn old_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old_run")
}

fn copy_old_run() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in [STATE_FILE, SUMMARY_FILE, "metrics.jsonl", "acts.npy"] {
        std::fs::copy(old_run().join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

#[test]
fn an_old_summary_json_loads_and_is_written_back_the_same() {
    let summary = TrainSummary::read(&old_run())
        .unwrap()
        .expect("the fixture");
    // The values `zephyra train` printed for that run.
    assert_eq!(
        (
            summary.arch.as_str(),
            summary.k,
            summary.d_in,
            summary.d_sae
        ),
        ("topk", Some(2), 4, 8)
    );
    assert_eq!((summary.steps, summary.tokens, summary.threads), (4, 64, 1));
    assert!(summary.finished && summary.skipped_rows == 0);
    let held = summary.holdout.expect("a held-out evaluation");
    assert_eq!((held.n_rows, held.l0), (20, 1.85));
    assert_eq!(summary.run, Path::new("run"));
    let tmp = tempfile::tempdir().unwrap();
    summary.write(tmp.path()).unwrap();
    let json = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(SUMMARY_FILE)).unwrap()).unwrap()
    };
    // Same keys, nesting and types; values equal to the last bit of what was read.
    assert_eq!(serde_json::to_value(&summary).unwrap(), json(&old_run()));
    assert_eq!(TrainSummary::read(tmp.path()).unwrap(), Some(summary));
    assert_eq!(TrainSummary::read(&tmp.path().join("none")).unwrap(), None);
}

#[test]
fn an_old_checkpoint_loads_typed_and_resumes() {
    let tmp = copy_old_run();
    let state = TrainingState::load(tmp.path()).unwrap();
    assert_eq!(
        (state.meta.step, state.meta.tokens, state.meta.format),
        (4, 64, 1)
    );
    assert!(
        state.meta.config.data.is_empty(),
        "recorded before data options"
    );
    assert_eq!(state.meta.config.sae.d_sae, 8);
    assert_eq!(state.meta.world_size, None);
    // The order and rows `zephyra train --seed 0 --holdout 20` used on the 120-row file.
    let order = NpyOrder {
        shuffle: true,
        repeat: true,
        seed: 0x5EED_DA7A,
    };
    let file = NpyFile::open(&tmp.path().join("acts.npy")).unwrap();
    let mut src = NpySource::new(file, 0..100, order).unwrap();
    let mut t = Trainer::resume(tmp.path(), Some(&state.meta.config), &mut src).unwrap();
    assert_eq!(t.step(), 4);
    let outcome = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(outcome.finished && outcome.steps == 4);
    // Written again by the typed code, it reads back to the same description.
    let mut again = TrainingState::load(tmp.path()).unwrap();
    let pos = |c: &zephyra_sae::train::Cursor| serde_json::to_value(c).unwrap()["pos"].clone();
    assert_eq!(pos(&again.meta.cursor), pos(&state.meta.cursor));
    again.meta.cursor = state.meta.cursor.clone(); // the copy's path differs
    assert_eq!(again.meta, state.meta);
    assert_eq!(again.tensors, state.tensors);
}
