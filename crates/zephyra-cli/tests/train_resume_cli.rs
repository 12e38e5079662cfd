//! `zephyra train --resume` against the options of the checkpoint (issue 12, #5): every option that
//! changes which rows are read — `--no-shuffle`, `--holdout`, `--shuffle-buffer`, the on-the-fly harvest
//! settings — is compared like the training flags, named with both values, and refused without touching
//! the run; one that does not apply to the run's source is refused too, never ignored.

mod common;

use std::path::Path;

use common::{arg, args_with, fails, ok, run, tiny_with_babble, tree, write_npy, Lcg};

fn write_acts(path: &Path) {
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15);
    write_npy(path, 1500, 16, |_, row| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = rng.centred() * (1 + j % 3) as f32;
        }
    });
}

/// Resumes `run` with `flags`; asserts a refusal naming each of `needles` and an untouched run directory.
fn refused(run_dir: &Path, flags: &[String], needles: &[&str]) {
    let before = tree(run_dir);
    let mut args = vec!["train".to_string(), "--resume".into(), arg(run_dir)];
    args.extend(flags.iter().cloned());
    let err = fails(run(&args));
    assert!(err.contains("cannot resume"), "{flags:?}: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{flags:?}: expected {needle:?} in {err}"
        );
    }
    assert!(
        tree(run_dir) == before,
        "{flags:?}: the run directory changed"
    );
}

/// Runs `zephyra LINE` with `paths` after it and asserts success.
fn succeeds(line: &str, paths: &[(&str, &Path)]) {
    ok(run(args_with(line, paths)));
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn npy_runs_refuse_another_order_or_hold_out_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("acts.npy");
    write_acts(&acts);
    let run_dir = tmp.path().join("run");
    succeeds(
        "train --arch topk --k 4 --expansion 2 --batch-rows 50 --tokens 1000 --threads 1 --holdout 300",
        &[("--acts", &acts), ("--out", &run_dir)],
    );
    refused(
        &run_dir,
        &words("--no-shuffle"),
        &["--no-shuffle: false → true"],
    );
    refused(&run_dir, &words("--holdout 100"), &["--holdout: 300 → 100"]);
    // A fraction is resolved against the file's rows: 0.1 × 1500 = 150.
    refused(&run_dir, &words("--holdout 0.1"), &["--holdout: 300 → 150"]);
    refused(
        &run_dir,
        &words("--shuffle-buffer 1000"),
        &["--shuffle-buffer: not recorded → 1000"],
    );
    refused(
        &run_dir,
        &words("--k 5 --lr 0.01 --max-grad-norm 0"),
        &[
            "--k: 4 → 5",
            "--lr: 0.003 → 0.01",
            "--max-grad-norm: 1.0 → none",
        ],
    );
    // The same values, and the intervals that may change, are accepted.
    let same = "train --holdout 300 --k 4 --metrics-every 3";
    succeeds(same, &[("--resume", &run_dir)]);
}

#[test]
fn store_and_on_the_fly_runs_refuse_other_data_options_on_resume() {
    let (tiny, tmp, data) = tiny_with_babble();
    let store = tmp.path().join("store");
    let harvest =
        "harvest --hook blocks.1.hook_resid_pre --tokens 16896 --ctx 32 --shard-contexts 8 \
                   --batch-contexts 8";
    let (model, corpus) = (("--model", tiny.path.as_path()), ("--data", data.as_path()));
    succeeds(harvest, &[model, corpus, ("--out", &store)]);
    let from_store = tmp.path().join("from_store");
    let train = "train --arch topk --k 4 --expansion 2 --batch-rows 32 --tokens 320 --threads 1 \
                 --shuffle-buffer 512";
    succeeds(train, &[("--acts", &store), ("--out", &from_store)]);
    let store_flag = ["--acts".to_string(), arg(&store)];
    let with = |line: &str| [store_flag.to_vec(), words(line)].concat();
    for (flags, needle) in [
        ("--shuffle-buffer 1000", "--shuffle-buffer: 512 → 1000"),
        ("--no-shuffle", "--no-shuffle: not recorded → true"),
        ("--holdout 10", "--holdout: not recorded → 10"),
        ("--ctx 16", "--ctx: not recorded → 16"),
    ] {
        refused(&from_store, &with(flags), &[needle]);
    }
    // Without data flags the recorded buffer (512, not the default) is used: the run resumes.
    succeeds("train", &[("--resume", &from_store), ("--acts", &store)]);

    let on_the_fly = tmp.path().join("on_the_fly");
    let on_the_fly_flags =
        format!("{train} --hook blocks.1.hook_resid_pre --ctx 32 --shard-contexts 8");
    succeeds(&on_the_fly_flags, &[model, corpus, ("--out", &on_the_fly)]);
    let model_flag = ["--model".to_string(), arg(&tiny.path)];
    refused(
        &on_the_fly,
        &[model_flag.to_vec(), words("--ctx 16 --keep-sinks")].concat(),
        &["--ctx: 32 → 16", "--keep-sinks: false → true"],
    );
    // Resuming with no flags at all harvests with the recorded model, corpus, hook and --ctx 32.
    succeeds("train", &[("--resume", &on_the_fly)]);
}
