//! `mpirun -np 2 zephyra …` end to end (cargo feature `mpi`, system OpenMPI): data-parallel training gives
//! the weights of a 1-process run with the same global batch and seed (to float32 rounding of the
//! allreduce), a killed rank fails the job clearly and `--resume` completes it exactly, and a 2-rank
//! harvest writes the same store as a 1-process harvest.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    args_with, fails, ok, run, tree, wait_for_checkpoint, write_chapters, write_npy, Lcg,
};
use zephyra_sae::Sae;

const D_IN: usize = 16;

/// `mpirun -np N zephyra` with the settings a root container needs (documented in the README).
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env("RUST_LOG", "zephyra=warn")
    .arg(env!("CARGO_BIN_EXE_zephyra"));
    c
}

/// Rows with correlated columns from a seeded LCG: column `j` follows one of three bases.
fn write_acts(path: &Path, n: usize, d: usize) {
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15);
    write_npy(path, n, d, |_, row| {
        let base = [rng.centred(), rng.centred(), rng.centred()];
        for (j, v) in row.iter_mut().enumerate() {
            *v = base[j % 3] * (1 + j % 5) as f32 + 0.3 * rng.centred() + 0.1;
        }
    });
}

fn train_args(acts: &Path, out: &Path, arch: &str) -> Vec<String> {
    args_with(
        &format!(
            "train --arch {arch} --k 4 --expansion 4 --batch-rows 64 --tokens 6400 \
             --checkpoint-every 1600 --metrics-every 5 --threads 1 --seed 5 --holdout 400 \
             --dead-after 640 --quiet"
        ),
        &[("--acts", acts), ("--out", out)],
    )
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("acts.npy");
    write_acts(&acts, 3000, D_IN);
    (tmp, acts)
}

/// Largest |a−b| over all parameters, relative to the largest |a| of that tensor.
fn max_rel_diff(a: &Sae, b: &Sae) -> f64 {
    let mut worst = 0.0f64;
    for ((name, x), (_, y)) in a.params().into_iter().zip(b.params()) {
        assert_eq!(x.len(), y.len(), "{name}");
        let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6) as f64;
        for (p, q) in x.iter().zip(y) {
            assert!(q.is_finite(), "{name} has a non-finite value");
            worst = worst.max((p - q).abs() as f64 / scale);
        }
    }
    worst
}

fn load(dir: &Path) -> Sae {
    zephyra_sae::saelens::load(dir).unwrap()
}

/// 100 steps of 64 rows: 2 ranks × 32 rows reproduce 1 process × 64 rows. The only difference is the
/// order of float32 additions (two half-batch gradients summed vs one GEMM over the batch), which Adam
/// carries forward: measured ≈ 3e-7 of each tensor's scale; the tolerance 1e-5 is far below what a
/// different seed changes (checked below).
#[test]
fn two_ranks_train_the_same_weights_as_one_process() {
    let (tmp, acts) = setup();
    for arch in ["topk", "relu"] {
        let one = tmp.path().join(format!("one-{arch}"));
        let two = tmp.path().join(format!("two-{arch}"));
        ok(run(train_args(&acts, &one, arch)));
        let text = ok(mpirun(2)
            .args(train_args(&acts, &two, arch))
            .arg("--json")
            .output()
            .unwrap());
        // Only rank 0 prints and writes the summary.
        assert_eq!(text.trim().lines().count(), 1, "{text}");
        let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(summary["steps"], 100);
        assert_eq!(summary["tokens"], 6400);
        let diff = max_rel_diff(&load(&one), &load(&two));
        eprintln!("{arch}: 2 ranks vs 1 process, max relative difference {diff:.2e}");
        assert!(
            diff < 1e-5,
            "{arch}: 2 ranks differ from 1 process by {diff}"
        );

        // The same metrics lines (loss, L0, FVE reduced over ranks) up to rounding.
        let lines = |d: &Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(d.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (m1, m2) = (lines(&one), lines(&two));
        assert_eq!(m1.len(), 20);
        assert_eq!(m1.len(), m2.len());
        for (a, b) in m1.iter().zip(&m2) {
            assert_eq!(a["step"], b["step"]);
            assert_eq!(a["tokens"], b["tokens"]);
            for key in ["loss", "l0", "fve", "dead_fraction"] {
                let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-3 * x.abs().max(1e-3),
                    "{arch} step {}: {key} {x} vs {y}",
                    a["step"]
                );
            }
        }
    }
    // The tolerance is meaningful: another seed lands far outside it.
    let other = tmp.path().join("other-seed");
    let mut args = train_args(&acts, &other, "topk");
    let at = args.iter().position(|a| a == "--seed").unwrap();
    args[at + 1] = "6".into();
    ok(run(args));
    let diff = max_rel_diff(&load(&tmp.path().join("one-topk")), &load(&other));
    assert!(
        diff > 1e-2,
        "a different seed only moved the weights by {diff}"
    );
}

/// Children of `parent` whose environment says they are MPI rank `rank`.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let mut stack = vec![parent];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the `(comm)`: state, ppid, …
            let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
            let ppid: u32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if ppid != p {
                continue;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()) {
                return Some(pid);
            }
            stack.push(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_fails_the_job_and_resume_completes_it() {
    let (tmp, acts) = setup();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(mpirun(2)
        .args(train_args(&acts, &a, "topk"))
        .output()
        .unwrap());

    let child = mpirun(2)
        .args(train_args(&acts, &b, "topk"))
        .args(["--step-delay-ms", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&b, Duration::from_secs(120), Duration::from_millis(200));
    let state = b.join("training_state.safetensors");
    let pid = rank_pid(child.id(), 1).expect("rank 1 of the job is running");
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the job survived a killed rank");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "mpirun did not say which rank died: {stderr}"
    );
    assert!(
        !b.join("summary.json").exists(),
        "the run finished before the rank was killed: the test proves nothing"
    );

    // A different world size is refused, nothing touched.
    let before = std::fs::read(&state).unwrap();
    let err = fails(run(["train", "--resume", b.to_str().unwrap()]));
    assert!(err.contains("world size: 2 → 1"), "{err}");
    assert_eq!(std::fs::read(&state).unwrap(), before);

    ok(mpirun(2)
        .args(["train", "--quiet", "--resume", b.to_str().unwrap()])
        .output()
        .unwrap());
    for f in ["sae_weights.safetensors", "training_state.safetensors"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs between the uninterrupted and the killed-and-resumed 2-rank run"
        );
    }
}

/// Subcommands without a parallel implementation refuse to run as several ranks (instead of every rank
/// redoing the whole job into the same files).
#[test]
fn commands_without_a_parallel_path_refuse_to_run_under_mpirun() {
    let res = mpirun(2)
        .args([
            "tokenize",
            "--model",
            "/nonexistent.gguf",
            "--text",
            "hello",
        ])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("`zephyra tokenize` does not run under mpirun (2 processes)"),
        "{err}"
    );
}

fn write_corpus(dir: &Path) {
    let para =
        "Message passing splits the work between processes that share nothing but messages. \
        Each rank computes its part and the results are combined with collective operations.\n";
    write_chapters(dir, "part", "Part", para, 4, 6);
}

fn harvest_args(data: &Path, out: &Path) -> Vec<String> {
    args_with(
        "harvest --model smollm2 --hook blocks.2.hook_resid_pre --hook blocks.4.hook_mlp_out \
         --tokens 1120 --ctx 32 --shard-contexts 4 --batch-contexts 2 --threads 1 --quiet",
        &[("--data", data), ("--out", out)],
    )
}

/// Up to 35 contexts in shards of 4 (the corpus decides; at least 5 shards), two hooks: 2 ranks write exactly the files of a
/// 1-process harvest (shards and manifests byte for byte), and leave no rank directories behind.
#[test]
fn two_rank_harvest_writes_the_one_process_store() {
    zephyra_lm::fetch::resolve_model("smollm2").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("corpus");
    write_corpus(&data);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(run(harvest_args(&data, &one)));
    let text = ok(mpirun(2)
        .args(harvest_args(&data, &two))
        .arg("--json")
        .output()
        .unwrap());
    assert_eq!(text.trim().lines().count(), 1, "only rank 0 prints: {text}");
    let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let (a, b) = (tree(&one), tree(&two));
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.iter().filter(|n| n.ends_with(".safetensors")).count() >= 2 * 5,
        "too few shards for the test to mean anything: {names:?}"
    );
    assert_eq!(
        names,
        b.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "different files"
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between 1 process and 2 ranks");
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(one.join("blocks.2.hook_resid_pre/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["n_contexts"], manifest["n_contexts"]);
    assert!(manifest["shards"].as_array().unwrap().len() >= 5);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".rank-"))
        .collect();
    assert!(leftovers.is_empty(), "rank directories left: {leftovers:?}");
}

/// Several dictionaries under `mpirun -np 2`: each SAE of a two-hook run matches the 1-process run's to
/// float32 rounding (the same reason and tolerance as one SAE above: two half-batch gradients summed,
/// here in one allreduce carrying both dictionaries), and only rank 0 prints, once per dictionary.
#[test]
fn two_ranks_train_several_dictionaries_like_one_process() {
    let (tiny, tmp, corpus) = common::tiny_with_babble();
    let args = |out: &Path| {
        args_with(
            "train --hook blocks.1.hook_resid_pre --hook blocks.0.hook_mlp_out --arch topk --k 4 \
             --expansion 2 --batch-rows 64 --tokens 1920 --threads 1 --seed 5 --ctx 32 \
             --shard-contexts 8 --batch-contexts 8 --shuffle-buffer 1024 --quiet",
            &[("--model", &tiny.path), ("--data", &corpus), ("--out", out)],
        )
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(run(args(&one)));
    let text = ok(mpirun(2).args(args(&two)).output().unwrap());
    assert_eq!(
        text.trim().lines().count(),
        2,
        "rank 0 prints one line per SAE: {text}"
    );
    for hook in ["blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"] {
        let diff = max_rel_diff(&load(&one.join(hook)), &load(&two.join(hook)));
        eprintln!("{hook}: 2 ranks vs 1 process, max relative difference {diff:.2e}");
        assert!(
            diff < 1e-5,
            "{hook}: 2 ranks differ from 1 process by {diff}"
        );
    }
}
