//! Hostile and careless command lines (issue 12, items 10–13): every one fails cleanly (exit 2, one line
//! naming the flag and what to do) and leaves the file system as it found it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{arg, args_with, fails, run, stderr, words, write_npy, zephyra};
use zephyra_lm::testing::{tiny_llama, write_truncated};

/// A temporary directory holding `acts.npy`: 512 rows of width 16 with values that vary (a trainable,
/// finite input).
fn with_rows() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let acts = dir.path().join("acts.npy");
    let mut lcg = common::Lcg(7);
    write_npy(&acts, 512, 16, |_, row| {
        row.iter_mut().for_each(|v| *v = lcg.centred())
    });
    (dir, acts)
}

/// The entries of `dir`, sorted (empty if it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `zephyra train` of a small SAE on `acts` into `out`, with `flags`.
fn train(acts: &Path, out: &Path, flags: &str) -> Output {
    run(args_with(
        &format!("train --k 4 --expansion 2 --batch-rows 64 --tokens 640 --threads 1 --holdout 0 --quiet {flags}"),
        &[("--acts", acts), ("--out", out)],
    ))
}

/// Runs `zephyra LINE` (space-separated words) and returns its stderr, asserting a clean failure.
fn fails_on(line: &str) -> String {
    fails(run(words(line)))
}

const STEER: &str = "steer --sae x --feature 0 --prompt p";
const GE0: &str = "must be a finite number ≥ 0";
const GT0: &str = "must be a finite number > 0";

#[test]
fn max_tokens_beyond_any_context_is_refused_not_wrapped() {
    for cmd in [
        "generate --prompt hi",
        "steer --sae x --feature 0 --strength 1 --prompt hi",
    ] {
        let err = fails_on(&format!("{cmd} --max-tokens 18446744073709551615"));
        assert!(
            err.contains("'--max-tokens") && err.contains("0..=1048576"),
            "{err}"
        );
    }
}

#[test]
fn float_flags_refuse_non_finite_and_out_of_range_values_naming_flag_and_range() {
    let steer_with_strength = format!("{STEER} --strength 1");
    let cases: &[(&str, &str, &str, &str)] = &[
        ("generate --prompt hi", "--temperature", "inf", GE0),
        ("generate --prompt hi", "--temperature", "-1", GE0),
        (
            "generate --prompt hi",
            "--top-p",
            "2",
            "must be a number in (0, 1]",
        ),
        (
            "generate --prompt hi",
            "--top-p",
            "nan",
            "must be a number in (0, 1]",
        ),
        (STEER, "--strength", "nan", "must be a finite number"),
        (&steer_with_strength, "--temperature", "inf", GE0),
        ("train --acts x.npy", "--lr", "-1", GT0),
        ("train --acts x.npy", "--lr", "inf", GT0),
        ("train --acts x.npy", "--l1", "-5", GE0),
        ("train --acts x.npy", "--l0-coeff", "inf", GE0),
        ("train --acts x.npy", "--max-grad-norm", "NaN", GE0),
        ("train --acts x.npy", "--max-grad-norm", "-1", GE0),
        ("train --acts x.npy", "--holdout", "inf", GE0),
        ("train --model smollm2", "--max-norm-multiple", "0", GT0),
        (
            "harvest --hook blocks.0.hook_resid_pre --out x",
            "--max-norm-multiple",
            "nan",
            GT0,
        ),
    ];
    for (cmd, flag, value, range) in cases {
        let err = fails_on(&format!("{cmd} {flag} {value}"));
        assert!(
            err.contains(&format!("'{value}' for '{flag}")) && err.contains(range),
            "{cmd} {flag} {value}: {err}"
        );
    }
}

#[test]
fn renamed_flags_fail_naming_the_new_one() {
    let rows = "use `--batch-rows`";
    let contexts = "use `--batch-contexts`";
    let cases: &[(&str, &str)] = &[
        ("train --acts x.npy --batch 64", rows),
        ("encode --sae s --acts a --out o --batch 8", rows),
        ("bench train --batch 8", rows),
        ("bench stream --batch 8", rows),
        (
            "harvest --hook blocks.0.hook_resid_pre --out x --batch 8",
            contexts,
        ),
        ("features --sae s --batch 8", contexts),
        ("eval --sae s --batch 8", contexts),
        ("bench forward --batch 8", contexts),
        ("train --model smollm2 --harvest-batch 8", contexts),
        ("bench stream --harvest-batch 8", contexts),
        (
            "train --acts x.npy --sparsity 5",
            "use `--l1` (relu, relu-unit, gated) or `--l0-coeff` (jumprelu)",
        ),
        (
            "eval --sae s --json out.json",
            "`--json FILE` was renamed: use `--out FILE`",
        ),
    ];
    for (cmd, needle) in cases {
        let err = fails_on(cmd);
        assert!(err.contains(needle), "{cmd}: {err}");
    }
}

#[test]
fn sparsity_coefficients_are_named_per_architecture() {
    let (dir, acts) = with_rows();
    let out = dir.path().join("run");
    for (flags, needle) in [
        ("--arch jumprelu --l1 3", "use --l0-coeff"),
        ("--arch relu --l0-coeff 0.01", "use --l1"),
        ("--arch topk --l1 3", "--k sets its sparsity"),
    ] {
        let err = fails(train(&acts, &out, flags));
        assert!(err.contains(needle), "{flags}: {err}");
        assert!(
            !out.exists(),
            "{flags}: the refused run left {}",
            out.display()
        );
    }
}

#[test]
fn an_os_error_is_printed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    for cmd in ["eval", "encode", "features"] {
        let mut args = vec![cmd.to_string(), "--sae".into(), arg(&missing)];
        if cmd == "encode" {
            args.extend(["--acts", "a.npy", "--out", "o.safetensors"].map(String::from));
        }
        let err = fails(run(&args));
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{cmd}: {err}"
        );
        assert!(err.contains("cfg.json"), "{cmd}: {err}");
    }
}

#[test]
fn an_out_path_that_is_a_file_is_blamed_on_the_flag() {
    let (dir, acts) = with_rows();
    let file = dir.path().join("taken");
    std::fs::write(&file, "mine").expect("write");
    let err = fails(train(&acts, &file, ""));
    assert!(err.contains(&format!("--out {}", file.display())), "{err}");
    assert!(!err.contains("os error 17"), "{err}");
    for cmd in [
        "harvest --hook blocks.0.hook_resid_pre --tokens 64 --out",
        "features --sae x --out",
    ] {
        let mut line = words(cmd);
        line.push(arg(&file));
        let err = fails(run(line));
        assert!(
            err.contains(&format!("--out {}", file.display())),
            "{cmd}: {err}"
        );
    }
    assert_eq!(std::fs::read(&file).expect("read"), b"mine");
}

#[test]
fn an_empty_npy_is_reported_as_empty_not_as_a_holdout_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acts = dir.path().join("empty.npy");
    write_npy(&acts, 0, 16, |_, _| {});
    let out = dir.path().join("run");
    let err = fails(train(&acts, &out, ""));
    assert!(err.contains("holds no rows"), "{err}");
    assert!(!err.contains("--holdout"), "{err}");
    assert!(!out.exists());
}

#[test]
fn inspect_refuses_a_gguf_whose_tensor_data_is_cut_short() {
    let tiny = tiny_llama(5).expect("tiny model");
    let size = std::fs::metadata(&tiny.path).expect("stat").len() as usize;
    let cut = tiny.dir.path().join("cut.gguf");
    // Past the header (the first kilobytes), short of the last tensor's end.
    write_truncated(&tiny.path, &cut, size - 64).expect("truncate");
    let out = run(["inspect", "--model", cut.to_str().expect("utf-8")]);
    assert!(
        out.stdout.is_empty(),
        "nothing printed for a truncated file"
    );
    let err = fails(out);
    assert!(
        err.contains("truncated") && err.contains(&format!("{}", size - 64)),
        "{err}"
    );
    // The whole file still inspects.
    common::ok(run([
        "inspect",
        "--model",
        tiny.path.to_str().expect("utf-8"),
    ]));
}

#[test]
fn gguf_errors_are_one_line_with_rust_backtrace_set() {
    let tiny = tiny_llama(5).expect("tiny model");
    let cut = tiny.dir.path().join("head.gguf");
    write_truncated(&tiny.path, &cut, 200).expect("truncate");
    let out = zephyra()
        .env("RUST_BACKTRACE", "1")
        .args(["inspect", "--model", cut.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    let err = fails(out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("truncated or corrupt GGUF"), "{err}");
}

#[test]
fn a_failed_training_run_leaves_no_run_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zeros = dir.path().join("zeros.npy");
    write_npy(&zeros, 512, 16, |_, row| row.fill(0.0));
    let nan = dir.path().join("nan.npy");
    let mut lcg = common::Lcg(3);
    write_npy(&nan, 512, 16, |r, row| {
        row.iter_mut().for_each(|v| *v = lcg.centred());
        if r == 5 {
            row[3] = f32::NAN;
        }
    });
    for (acts, flags, needle) in [
        (&zeros, "", "all zero"),
        (&nan, "--non-finite error", "non-finite"),
    ] {
        let out = dir.path().join("run");
        let err = fails(train(acts, &out, flags));
        assert!(err.contains(needle), "{err}");
        assert!(!out.exists(), "{flags}: left {:?}", listing(&out));
        // An existing directory keeps what it held, and only that.
        let mine = dir.path().join("mine");
        std::fs::create_dir_all(&mine).expect("mkdir");
        std::fs::write(mine.join("notes.txt"), "keep").expect("write");
        fails(train(acts, &mine, flags));
        assert_eq!(listing(&mine), vec!["notes.txt".to_string()]);
    }
}

#[test]
fn a_failed_plot_leaves_no_temporary_files() {
    let (dir, acts) = with_rows();
    let runs = dir.path().join("run");
    common::ok(train(&acts, &runs, "--metrics-every 1"));
    // A directory where the curve's PNG goes: drawing succeeds, the final rename fails.
    let plots = dir.path().join("plots");
    std::fs::create_dir_all(plots.join("training.png")).expect("mkdir");
    let out = run(["plot", "--run", &arg(&runs), "--out", &arg(&plots)]);
    let err = stderr(&out);
    fails(out);
    assert!(err.contains("training.png"), "{err}");
    assert_eq!(
        listing(&plots),
        vec!["training.png".to_string()],
        "only what was there"
    );
    // With nothing in the way, the same command writes its plots.
    std::fs::remove_dir(plots.join("training.png")).expect("rmdir");
    common::ok(run(["plot", "--run", &arg(&runs), "--out", &arg(&plots)]));
    assert!(plots.join("training.png").is_file());
}

#[test]
fn harvest_refuses_a_hook_given_twice_before_writing_anything() {
    let tiny = tiny_llama(5).expect("tiny model");
    let corpus = tiny.dir.path().join("corpus.txt");
    std::fs::write(&corpus, "the cat sat on the mat. ".repeat(40)).expect("write");
    let out = tiny.dir.path().join("store");
    let hook = "blocks.0.hook_resid_pre";
    let err = fails(run(args_with(
        &format!("harvest --hook {hook} --hook blocks.1.hook_resid_pre --hook {hook} --tokens 64 --ctx 16"),
        &[("--model", &tiny.path), ("--data", &corpus), ("--out", &out)],
    )));
    assert!(
        err.contains(&format!("--hook {hook} is given twice")),
        "{err}"
    );
    assert!(!out.exists(), "left {:?}", listing(&out));
}
