//! `train --acts IN_STORE --target-acts OUT_STORE`: a transcoder's `[x | y]` rows from two activation stores
//! of one harvest (e.g. `blocks.3.ln2.hook_normalized` and `blocks.3.hook_mlp_out`, harvested together by
//! `zephyra harvest --hook … --hook …`), zipped row by row (`zephyra_sae::train::ZipSource`).
//!
//! Row `i` of one store is the same token as row `i` of the other only when both stores come from the same
//! model, corpus, contexts, seed and shard layout, and their exclusion rule kept the same positions. The
//! manifests are compared field by field before anything is read; a mismatch is refused naming the field.
//! The norm clause of the exclusion rule is decided per hook, so a pair in which it dropped rows is
//! refused too (harvest with `--keep-sinks`).

use std::path::Path;

use anyhow::{bail, Context};
use zephyra_data::source::BufferedSource;
use zephyra_data::store::manifest::{ManifestField, SAME_ROWS};
use zephyra_data::store::{ActivationStore, Manifest};
use zephyra_sae::train::ZipSource;

/// Opens both stores, checks that they hold the same rows, and zips them (both read with `seed` through a
/// shuffle buffer of `buffer_rows`, so they stay in lockstep). Returns the source and both manifests.
pub fn open(
    input: &Path,
    target: &Path,
    buffer_rows: usize,
    seed: u64,
) -> anyhow::Result<(ZipSource, Manifest, Manifest)> {
    let open = |dir: &Path, flag: &str| {
        ActivationStore::open(dir)
            .with_context(|| format!("opening the activation store {flag} {}", dir.display()))
    };
    let (a, b) = (open(input, "--acts")?, open(target, "--target-acts")?);
    check_same_rows(a.manifest(), b.manifest()).with_context(|| {
        format!(
            "--acts {} and --target-acts {}",
            input.display(),
            target.display()
        )
    })?;
    let (ma, mb) = (a.manifest().clone(), b.manifest().clone());
    let zip = ZipSource::new(
        Box::new(BufferedSource::store(a, buffer_rows, seed, true)),
        Box::new(BufferedSource::store(b, buffer_rows, seed, true)),
    )?;
    Ok((zip, ma, mb))
}

/// Whether row `i` of the store with manifest `a` is the token of row `i` of the one with manifest `b`.
pub fn check_same_rows(a: &Manifest, b: &Manifest) -> anyhow::Result<()> {
    let hint = "they are not two hooks of one harvest: harvest both in one run (`zephyra harvest --hook IN --hook OUT …`)";
    let same = |what: &str, x: String, y: String| -> anyhow::Result<()> {
        if x != y {
            bail!("the stores differ in {what} ({x} vs {y}): {hint}");
        }
        Ok(())
    };
    let counts: [ManifestField; 3] = [
        ("contexts", |m| m.n_contexts.to_string()),
        ("rows", |m| m.n_rows.to_string()),
        ("shards", |m| m.shards.len().to_string()),
    ];
    let differs = a
        .first_difference(b, &SAME_ROWS)
        .or_else(|| a.first_difference(b, &counts));
    if let Some((what, x, y)) = differs {
        same(what, x, y)?;
    }
    for (i, (sa, sb)) in a.shards.iter().zip(&b.shards).enumerate() {
        let key = |s: &zephyra_data::store::ShardInfo| {
            format!(
                "first context {}, {} contexts, {} rows",
                s.first_context, s.n_contexts, s.n_rows
            )
        };
        same(&format!("shard {i}"), key(sa), key(sb))?;
        if sa.counts.high_norm > 0 || sb.counts.high_norm > 0 {
            bail!(
                "the norm clause dropped {} rows of `{}` and {} of `{}` in shard {i}: it decides per hook, so \
                 the remaining rows need not be the same tokens; harvest both hooks again with --keep-sinks",
                sa.counts.high_norm, a.hook, sb.counts.high_norm, b.hook
            );
        }
    }
    if a.hook == b.hook {
        bail!("--acts and --target-acts are both `{}`: a transcoder predicts another hook (e.g. the MLP's output from its input)", a.hook);
    }
    Ok(())
}

/// The flag recording the target store of a transcoder run (compared on `--resume`).
const TARGET_OPTION: &str = "--target-acts";
/// The flag recording the shuffle buffer of store runs.
const BUFFER_OPTION: &str = "--shuffle-buffer";

/// A new transcoder run: `--acts IN_STORE --target-acts OUT_STORE [--skip]` (no hold-out, as for stores:
/// evaluate with `zephyra eval`).
pub(super) fn start(
    args: &super::train::Args,
    target: &Path,
) -> anyhow::Result<super::train::Opened> {
    let Some(out) = &args.out else {
        bail!("--out DIR is required (where the transcoder and its checkpoints go)")
    };
    let Some(acts) = args.source.acts.as_deref().filter(|p| p.is_dir()) else {
        bail!("--target-acts needs --acts to be an activation store directory of the same harvest (not a .npy file)")
    };
    if args.source.model.is_some() || !args.source.hook.is_empty() || args.holdout.is_some() {
        bail!("--model, --hook and --holdout do not apply with --target-acts: the stores record their model and hooks");
    }
    let seed = args.seed.unwrap_or(0);
    let (source, input, output) = open(acts, target, args.source.shuffle_buffer, seed)?;
    let d_sae = args.arch.expansion() * input.d;
    let arch = args.arch.architecture(d_sae)?;
    let sae =
        zephyra_sae::SaeConfig::transcoder(input.d, output.d, d_sae, arch, args.transcoder.skip)
            .context("--arch/--k/--expansion")?;
    let tokens = args.tokens.unwrap_or(2_000_000);
    let mut cfg = zephyra_sae::train::TrainConfig::for_sae(sae, args.batch.unwrap_or(4096), tokens);
    cfg.checkpoint_every_tokens = (tokens / 10).max(1);
    args.apply(&mut cfg)?;
    cfg.data.set(BUFFER_OPTION, args.source.shuffle_buffer);
    cfg.data.set(TARGET_OPTION, target.display());
    let meta = &mut cfg.sae.metadata;
    meta.extra.insert("acts".into(), serde_json::json!(acts));
    meta.extra
        .insert("target_acts".into(), serde_json::json!(target));
    meta.hook_name = Some(input.hook.clone());
    meta.hook_name_out = Some(output.hook.clone());
    meta.context_size = Some(input.ctx);
    meta.model_name = Path::new(&input.model.path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    let mut source: Box<dyn zephyra_sae::train::ActivationSource> = Box::new(source);
    let comm = crate::dist::collective()?;
    let session =
        zephyra_sae::train::TrainSession::start(cfg, source.as_mut(), Some(out), Some(comm))?;
    Ok((out.clone(), session, source, None))
}

/// A resumed transcoder run's source: the stores given again, or those its checkpoint cursor names.
/// `expected` is the run's configuration with the flags given now (already compared with the saved one).
pub(super) fn reopen(
    args: &super::train::Args,
    input: &zephyra_sae::train::Cursor,
    target: &zephyra_sae::train::Cursor,
    expected: &zephyra_sae::train::TrainConfig,
) -> anyhow::Result<ZipSource> {
    let path_of = |given: Option<&Path>, cursor: &zephyra_sae::train::Cursor, flag: &str| {
        match (given, cursor) {
            (Some(p), _) => Ok(p.to_path_buf()),
            (None, zephyra_sae::train::Cursor::Store { path, .. }) => Ok(path.clone()),
            (None, other) => bail!("the checkpoint's {flag} cursor {other} is not an activation store's: give {flag} again"),
        }
    };
    let acts = path_of(args.source.acts.as_deref(), input, "--acts")?;
    let target = path_of(
        args.transcoder.target_acts.as_deref(),
        target,
        TARGET_OPTION,
    )?;
    let buffer = match expected.data.get(BUFFER_OPTION) {
        Some(b) => b
            .parse()
            .with_context(|| format!("the checkpoint's {BUFFER_OPTION} {b}"))?,
        None => args.source.shuffle_buffer,
    };
    Ok(open(&acts, &target, buffer, expected.seed)?.0)
}

/// On `--resume`: the transcoder flags given, applied to the expected configuration (`--target-acts` is
/// compared with the recorded store, `--skip` with the saved shape).
pub(super) fn apply_resume_flags(
    args: &super::train::Args,
    expected: &mut zephyra_sae::train::TrainConfig,
) {
    if let Some(t) = &args.transcoder.target_acts {
        expected.data.set(TARGET_OPTION, t.display());
    }
    if args.transcoder.skip {
        if let Some(shape) = expected.sae.transcoder.as_mut() {
            shape.skip = true;
        }
    }
}
