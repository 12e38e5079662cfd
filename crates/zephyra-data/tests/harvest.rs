//! Harvesting into an activation store: exactness against the model, exclusion counts, resume, bad input.

mod common;

use std::sync::Arc;

use common::testdata::dir_files;
use common::*;
use zephyra_data::harvest::{model_info, HarvestConfig};
use zephyra_data::store::manifest::{Manifest, SAME_ROWS};
use zephyra_data::{ActivationStore, DataError, ExclusionRule};
use zephyra_lm::{HookPoint, Hooks, Llama};

fn forward_rows(model: &Llama, contexts: &[Vec<u32>], hook: HookPoint) -> Vec<f32> {
    let mut hooks = Hooks::capturing([hook]);
    let out = model
        .forward(contexts, &mut hooks, zephyra_lm::model::Logits::None)
        .unwrap();
    out.activations
        .get(hook)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Real model: stored rows equal the forward pass bit for bit; position 0 and specials are excluded and the
/// manifest's counts and statistics agree with the shards.
#[test]
fn real_model_store_matches_forward_and_counts() {
    let path = zephyra_lm::fetch::resolve_model("smollm2").unwrap();
    let (model, tok) = load(&path);
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let out = tempfile::tempdir().unwrap();
    let hook = HookPoint::ResidPre(15);
    let (ctx, batch, per_shard) = (32, 4, 8);
    let cfg = config(vec![hook], ctx, 24 * 32, per_shard, batch);
    let info = model_info(&path, model.as_ref()).unwrap();
    assert_eq!(
        info.sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    let summary = harvest_corpus(
        model.clone(),
        &tok,
        data.path(),
        cfg,
        info,
        tok.vocab_size(),
        out.path(),
    )
    .unwrap();
    assert_eq!(summary.n_contexts, 24);
    let store = ActivationStore::open(out.path()).unwrap();
    store.verify().unwrap();
    let m = store.manifest();
    assert!(m.complete);
    assert_eq!(
        (m.hook.as_str(), m.ctx, m.d, m.n_contexts, m.shards.len()),
        ("blocks.15.hook_resid_pre", ctx, 576, 24, 3)
    );

    let eos = zephyra_data::pack::TextEncoder::eos_token_id(tok.as_ref());
    let (mut n_special, mut n_high, mut n_rows) = (0u64, 0u64, 0u64);
    let mut sum = vec![0f64; 576];
    for s in 0..store.n_shards() {
        let shard = store.read_shard(s).unwrap();
        let contexts: Vec<Vec<u32>> = shard
            .context_tokens
            .chunks(ctx)
            .map(<[u32]>::to_vec)
            .collect();
        // Recompute every activation with the model directly, in the same batches as the harvest.
        let mut full = Vec::new();
        for b in contexts.chunks(batch) {
            full.extend(forward_rows(&model, b, hook));
        }
        // The rule, recomputed independently: norms, lower median of candidates, threshold 10x.
        let norms: Vec<f32> = full
            .chunks(576)
            .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32)
            .collect();
        let candidate = |i: usize| {
            i % ctx != 0
                && contexts[i / ctx][i % ctx] != eos
                && !tok.is_special(contexts[i / ctx][i % ctx])
        };
        let mut cand: Vec<f32> = (0..norms.len())
            .filter(|&i| candidate(i))
            .map(|i| norms[i])
            .collect();
        cand.sort_by(f32::total_cmp);
        let median = cand[(cand.len() - 1) / 2];
        let expected_rows: Vec<usize> = (0..norms.len())
            .filter(|&i| candidate(i) && norms[i] <= 10.0 * median)
            .collect();
        n_special += (0..norms.len())
            .filter(|&i| i % ctx != 0 && !candidate(i))
            .count() as u64;
        n_high += (0..norms.len())
            .filter(|&i| candidate(i) && norms[i] > 10.0 * median)
            .count() as u64;
        assert_eq!(shard.n_rows(), expected_rows.len());
        for (r, &i) in expected_rows.iter().enumerate() {
            assert_eq!(shard.position[r] as usize, i % ctx);
            assert_ne!(shard.position[r], 0, "position 0 must be excluded");
            assert_eq!(
                shard.context_index[r] as u64,
                m.shards[s].first_context + (i / ctx) as u64
            );
            assert_eq!(shard.token_ids[r], contexts[i / ctx][i % ctx]);
            assert_eq!(
                &shard.activations[r * 576..(r + 1) * 576],
                &full[i * 576..(i + 1) * 576],
                "row {r} of shard {s}"
            );
        }
        for (k, v) in shard.activations.iter().enumerate() {
            sum[k % 576] += *v as f64;
        }
        n_rows += shard.n_rows() as u64;
        // A context run alone gives the same activations up to float rounding.
        let alone = forward_rows(&model, &contexts[..1], hook);
        let max_diff = alone
            .iter()
            .zip(&full[..ctx * 576])
            .skip(576)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-2,
            "single-context forward differs by {max_diff}"
        );
    }
    let c = &m.exclusion.counts;
    assert_eq!(c.total, 24 * ctx as u64);
    assert_eq!(c.position_zero, 24);
    assert_eq!(c.special, n_special);
    assert_eq!(c.high_norm, n_high);
    assert_eq!(c.kept, n_rows);
    assert_eq!(m.n_rows, n_rows);
    assert_eq!(c.kept + c.position_zero + c.special + c.high_norm, c.total);
    for (k, s) in sum.iter().enumerate() {
        assert!(
            (s / n_rows as f64 - m.stats.mean[k]).abs() < 1e-9 * (1.0 + s.abs()),
            "mean[{k}]"
        );
    }
    // Position-0 rows are the attention sinks: with --keep-sinks they are stored and dwarf the others.
    let out2 = tempfile::tempdir().unwrap();
    let mut cfg = config(vec![hook], ctx, 8 * 32, 8, 4);
    cfg.rule = ExclusionRule::keep_all();
    harvest_corpus(
        model.clone(),
        &tok,
        data.path(),
        cfg,
        model_info(&path, model.as_ref()).unwrap(),
        tok.vocab_size(),
        out2.path(),
    )
    .unwrap();
    let all = ActivationStore::open(out2.path()).unwrap();
    assert_eq!(all.n_rows(), 8 * 32);
    let shard = all.read_shard(0).unwrap();
    let norm = |r: usize| {
        shard.activations[r * 576..(r + 1) * 576]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
    };
    assert!(
        norm(0) > 5000.0 && norm(5) < 1000.0,
        "sink {} vs {}",
        norm(0),
        norm(5)
    );
}

fn tiny() -> (
    zephyra_lm::testing::TinyLlama,
    Arc<Llama>,
    Arc<zephyra_lm::Tokenizer>,
) {
    let t = zephyra_lm::testing::tiny_llama(3).unwrap();
    let (m, tok) = load(&t.path);
    (t, m, tok)
}

/// An interrupted harvest (the model fails mid-way) resumes into the same store as an uninterrupted run,
/// several hooks at once.
#[test]
fn interrupted_harvest_resumes_to_the_same_store() {
    let (t, model, tok) = tiny();
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let hooks = vec![HookPoint::ResidPre(1), HookPoint::MlpOut(0)];
    let cfg = config(hooks.clone(), 16, 40 * 16, 6, 2);
    let info = model_info(&t.path, model.as_ref()).unwrap();
    // The tiny model's harvest of the corpus with `cfg` into `out` (a new store, or a resumed one).
    let harvest_into = |cfg: &HarvestConfig, out: &std::path::Path| {
        harvest_corpus(
            model.clone(),
            &tok,
            data.path(),
            cfg.clone(),
            info.clone(),
            1,
            out,
        )
    };
    let whole = tempfile::tempdir().unwrap();
    harvest_into(&cfg, whole.path()).unwrap();

    let part = tempfile::tempdir().unwrap();
    let err = interrupted_harvest(
        model.clone(),
        7,
        &tok,
        data.path(),
        cfg.clone(),
        info.clone(),
        part.path(),
    );
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let sub = part.path().join("blocks.1.hook_resid_pre");
    let m = Manifest::read(&sub).unwrap();
    assert!(!m.complete);
    assert_eq!(
        m.shards.len(),
        2,
        "7 batches of 2 contexts = 2 full shards of 6"
    );
    // Reading an incomplete store is refused with a hint.
    let e = ActivationStore::open(&sub).unwrap_err();
    assert!(e.to_string().contains("resume"), "{e}");
    // Resume with a different seed: refused, nothing touched.
    let before = dir_files(&sub);
    let mut other = cfg.clone();
    other.seed = 8;
    let e = harvest_into(&other, part.path()).unwrap_err();
    assert!(
        matches!(&e, DataError::ResumeMismatch { field, requested, .. } if field == "seed" && requested == "8"),
        "{e}"
    );
    assert_eq!(dir_files(&sub), before);
    // Resume for real.
    let s = harvest_into(&cfg, part.path()).unwrap();
    assert_eq!(s.resumed_shards, 2);
    for h in &hooks {
        let (a, b) = (
            dir_files(&part.path().join(h.to_string())),
            dir_files(&whole.path().join(h.to_string())),
        );
        assert_eq!(
            a.iter().map(|f| &f.0).collect::<Vec<_>>(),
            b.iter().map(|f| &f.0).collect::<Vec<_>>(),
            "{h}"
        );
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            if name.ends_with(".json") {
                assert_eq!(
                    String::from_utf8_lossy(x),
                    String::from_utf8_lossy(y),
                    "{h}/{name}"
                );
            }
            assert!(x == y, "{h}/{name} differs");
        }
    }
    // Harvesting into a complete store is refused.
    let e = harvest_into(&cfg, part.path()).unwrap_err();
    assert!(matches!(e, DataError::StoreComplete { .. }), "{e}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (t, model, tok) = tiny();
    let info = model_info(&t.path, model.as_ref()).unwrap();
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    // Harvests the corpus in `corpus` at the residual stream before each block of `layers` with the tiny
    // model into `out`; the error it must give.
    let fails =
        |corpus: &std::path::Path, layers: &[usize], ctx, n_tokens, out: &std::path::Path| {
            let hooks = layers.iter().map(|&l| HookPoint::ResidPre(l)).collect();
            let cfg = config(hooks, ctx, n_tokens, 4, 2);
            harvest_corpus(model.clone(), &tok, corpus, cfg, info.clone(), 1, out).unwrap_err()
        };
    // --ctx beyond the model's context length.
    let out = tempfile::tempdir().unwrap();
    let e = fails(data.path(), &[1], 257, 1000, out.path());
    assert!(
        matches!(
            e,
            DataError::CtxTooLarge {
                ctx: 257,
                max_ctx: 256
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--ctx 256"), "{e}");
    // A corpus with no usable text.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("a.txt"), "").unwrap();
    std::fs::write(empty.path().join("b.html"), "<script>only()</script>").unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = fails(empty.path(), &[1], 16, 1000, &out.path().join("s"));
    assert!(matches!(e, DataError::EmptyCorpus { .. }), "{e}");
    // The failed harvest leaves what it found: no store directory, no `complete: false` manifest.
    assert!(
        !out.path().join("s").exists(),
        "the failed harvest left a store"
    );
    let e = fails(empty.path(), &[1], 16, 1000, out.path());
    assert!(matches!(e, DataError::EmptyCorpus { .. }), "{e}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "--out was empty"
    );
    // A hook given twice is refused before anything is written.
    let e = fails(data.path(), &[1, 1], 16, 64, &out.path().join("dup"));
    assert!(
        e.to_string().contains("blocks.1.hook_resid_pre") && e.to_string().contains("twice"),
        "{e}"
    );
    assert!(!out.path().join("dup").exists());
    // An --out directory holding other files is not clobbered.
    let busy = tempfile::tempdir().unwrap();
    std::fs::write(busy.path().join("precious.txt"), "keep me").unwrap();
    let e = fails(data.path(), &[1], 16, 64, busy.path());
    assert!(e.to_string().contains("precious.txt"), "{e}");
    assert_eq!(
        std::fs::read_to_string(busy.path().join("precious.txt")).unwrap(),
        "keep me"
    );
    // A hook beyond the model's blocks.
    let out = tempfile::tempdir().unwrap();
    let e = fails(data.path(), &[5], 16, 64, out.path());
    assert!(e.to_string().contains("2 blocks"), "{e}");

    // Manifests that disagree with their shards.
    let good = tempfile::tempdir().unwrap();
    let cfg = config(vec![HookPoint::ResidPre(1)], 16, 12 * 16, 4, 2);
    harvest_corpus(
        model.clone(),
        &tok,
        data.path(),
        cfg,
        info.clone(),
        1,
        good.path(),
    )
    .unwrap();
    let copy = |name: &str| {
        let d = good.path().parent().unwrap().join(format!(
            "{}-{name}",
            good.path().file_name().unwrap().to_string_lossy()
        ));
        std::fs::create_dir_all(&d).unwrap();
        for (f, bytes) in dir_files(good.path()) {
            std::fs::write(d.join(f), bytes).unwrap();
        }
        d
    };
    let edited = copy("rows");
    let mut m = Manifest::read(&edited).unwrap();
    m.n_rows += 1;
    m.write(&edited).unwrap();
    let e = ActivationStore::open(&edited).unwrap_err();
    assert!(e.to_string().contains("rows"), "{e}");
    let missing = copy("missing");
    std::fs::remove_file(missing.join("shard-00001.safetensors")).unwrap();
    let e = ActivationStore::open(&missing).unwrap_err();
    assert!(
        e.to_string()
            .contains("shard-00001.safetensors` is missing"),
        "{e}"
    );
    let truncated = copy("trunc");
    let p = truncated.join("shard-00000.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let e = ActivationStore::open(&truncated).unwrap_err();
    assert!(e.to_string().contains("bytes but the manifest says"), "{e}");
    let flipped = copy("flip");
    let p = flipped.join("shard-00002.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let store = ActivationStore::open(&flipped).unwrap();
    let e = store.verify().unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    let e = ActivationStore::open(good.path().join("nope")).unwrap_err();
    assert!(matches!(e, DataError::MissingPath { .. }), "{e}");
    for d in [edited, missing, truncated, flipped] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// The stores of the hooks of one harvest hold the same token rows; a store of another seed does not, and
/// the comparison names the seed.
#[test]
fn the_hooks_of_one_harvest_have_the_same_rows() {
    let root = tempfile::tempdir().unwrap();
    let hooks = vec![HookPoint::ResidPre(1), HookPoint::MlpOut(1)];
    let out = tiny_store(root.path(), "s", hooks.clone(), 8);
    let a = Manifest::read(&out.join(hooks[0].to_string())).unwrap();
    let b = Manifest::read(&out.join(hooks[1].to_string())).unwrap();
    assert_ne!(a.hook, b.hook);
    assert_eq!(a.first_difference(&b, &SAME_ROWS), None);
    let mut c = b.clone();
    c.seed = a.seed + 1;
    c.exclusion.description.push_str(" (other)");
    let (field, mine, theirs) = a.first_difference(&c, &SAME_ROWS).unwrap();
    assert_eq!(field, "seed", "the first differing field, in table order");
    assert_eq!((mine, theirs), (a.seed.to_string(), c.seed.to_string()));
}
