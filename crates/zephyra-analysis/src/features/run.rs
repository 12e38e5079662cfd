//! The feature-statistics pass: corpus → contexts → the data crate's pipeline iterator
//! ([`Activations`]: model to the hook, exclusion per batch) → SAE codes → accumulators, with checkpoints
//! (the iterator's position is the accumulators' context count), then logit effects and the written store.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use zephyra_data::harvest::{Activations, RowPlan};
use zephyra_data::pack::{ContextStream, PackOptions, TextEncoder, DEFAULT_SHUFFLE_CONTEXTS};
use zephyra_data::Corpus;
use zephyra_lm::{HookPoint, Llama, Tokenizer};
use zephyra_sae::{Sae, Workspace};

use super::accum::{Accumulators, Batch};
use super::logits::Unembedding;
use super::store::{self, FeatureIndex, Provenance};
use super::{Example, FeatureOptions, FeatureRecord, LatentStats, TokenValue, HIST_BINS};
use crate::error::{AnalysisError, Result};

/// File name of the checkpoint inside the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Everything a feature pass needs.
pub struct FeatureJob<'a> {
    /// The model.
    pub llama: &'a Llama,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The SAE.
    pub sae: &'a Sae,
    /// Where the SAE reads the model.
    pub hook: HookPoint,
    /// The text to read.
    pub corpus: &'a Corpus,
    /// Settings.
    pub options: FeatureOptions,
    /// Output directory (created if needed).
    pub out_dir: &'a Path,
    /// Names recorded in the index.
    pub provenance: Provenance,
}

/// Where a pass stands, handed to the progress callback after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureProgress {
    /// Tokens read so far (kept or not).
    pub n_tokens_read: u64,
    /// The token budget.
    pub max_tokens: u64,
    /// Tokens kept so far.
    pub n_tokens_kept: u64,
    /// Whether this progress comes from a resumed checkpoint (reported once, before the first batch).
    pub resumed: bool,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    fingerprint: serde_json::Value,
    acc: Accumulators,
}

fn check_options(o: &FeatureOptions, context_length: usize) -> Result<()> {
    let bad = |what: &str| Err(AnalysisError::InvalidArgument(what.to_string()));
    if o.ctx < 2 || o.ctx > context_length {
        return bad(&format!(
            "--ctx {} must be between 2 and the model's context length {context_length}",
            o.ctx
        ));
    }
    if o.batch_contexts == 0 || o.n_top == 0 {
        return bad("the batch size and the number of top contexts must be at least 1");
    }
    if o.max_tokens == 0 {
        return bad("--tokens must be at least 1");
    }
    Ok(())
}

/// Runs the pass and writes the store into `job.out_dir`; returns the index.
///
/// Resumes from `checkpoint.json` in the output directory when [`FeatureOptions::resume`] is set and the
/// checkpoint was made with the same SAE, hook, corpus and options; a checkpoint made with other settings is
/// an error (remove it, or pass `resume = false` to start over).
pub fn compute_features(
    job: &FeatureJob<'_>,
    progress: &mut dyn FnMut(&FeatureProgress),
) -> Result<FeatureIndex> {
    compute_features_until(job, &AtomicBool::new(false), progress)
}

/// [`compute_features`], stopping between batches once `cancel` is set (from another thread: Ctrl-C in the
/// Python package). What was accumulated is then checkpointed, so that a pass with
/// [`FeatureOptions::resume`] continues from it, and the result is [`AnalysisError::Interrupted`].
pub fn compute_features_until(
    job: &FeatureJob<'_>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&FeatureProgress),
) -> Result<FeatureIndex> {
    let opts = &job.options;
    let cfg = job.llama.config();
    check_options(opts, cfg.context_length)?;
    job.hook
        .validate(cfg.n_layers)
        .map_err(AnalysisError::model)?;
    let (d_in, d_sae) = (job.sae.cfg.d_in, job.sae.cfg.d_sae);
    if d_in != cfg.d_model {
        return Err(AnalysisError::WidthMismatch {
            hook: job.hook.to_string(),
            hook_width: cfg.d_model,
            sae_d_in: d_in,
        });
    }
    std::fs::create_dir_all(job.out_dir).map_err(|source| AnalysisError::Io {
        path: job.out_dir.to_path_buf(),
        source,
    })?;
    let ckpt_path = job.out_dir.join(CHECKPOINT_FILE);
    let fingerprint = serde_json::json!({
        "sae": job.provenance.sae, "model": job.provenance.model, "hook": job.hook.to_string(),
        "corpus": job.corpus.description(), "d_sae": d_sae,
        "options": FeatureOptions { resume: false, checkpoint_every: 0, ..opts.clone() },
    });
    let mut acc = Accumulators::new(d_sae);
    let mut resumed = false;
    if opts.resume && ckpt_path.exists() {
        let ck: Checkpoint = crate::file_io::read_json(&ckpt_path)?;
        if ck.fingerprint != fingerprint || ck.acc.latents.len() != d_sae {
            return Err(AnalysisError::InvalidArgument(format!(
                "{} was written by a pass with other settings (SAE, model, hook, corpus or options); \
                 delete it, or start over with --restart",
                ckpt_path.display()
            )));
        }
        acc = ck.acc;
        resumed = true;
        tracing::info!(
            n_contexts = acc.n_contexts,
            n_tokens = acc.n_tokens_read,
            "resuming feature pass"
        );
    }
    progress(&FeatureProgress {
        n_tokens_read: acc.n_tokens_read,
        max_tokens: opts.max_tokens,
        n_tokens_kept: acc.n_tokens_kept,
        resumed,
    });
    let encoder: Arc<dyn TextEncoder> = job.tokenizer.clone();
    let pack = PackOptions {
        ctx: opts.ctx,
        seed: opts.seed,
        shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS,
    };
    let stream = ContextStream::new(job.corpus.documents(), encoder.clone(), pack)?;
    let n_contexts = opts.max_tokens.div_ceil(opts.ctx as u64);
    let plan = RowPlan::per_batch(vec![job.hook], opts.batch_contexts, opts.exclusion);
    let contexts = stream.take(usize::try_from(n_contexts).unwrap_or(usize::MAX));
    let mut pass = Activations::over(Arc::new(job.llama), encoder, contexts, plan);
    pass.skip_contexts(acc.n_contexts)?;
    let mut ws = Workspace::default();
    let mut n_batches = 0usize;
    loop {
        if cancel.load(Ordering::Relaxed) {
            save_checkpoint(&ckpt_path, &fingerprint, &acc)?;
            return Err(AnalysisError::Interrupted {
                n_tokens: acc.n_tokens_read,
                checkpoint: ckpt_path,
            });
        }
        let Some(shard) = pass.next_shard(&mut |_| {})? else {
            break;
        };
        let codes = job
            .sae
            .encode_with(&shard.acts[0], shard.tokens.len(), &mut ws)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            opts.seed ^ acc.n_contexts.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let batch = Batch {
            tokens: &shard.tokens,
            keep: shard.keep(),
            codes,
            ctx: shard.ctx,
        };
        acc.add(&batch, opts, &mut rng);
        n_batches += 1;
        if opts.checkpoint_every > 0 && n_batches % opts.checkpoint_every == 0 {
            save_checkpoint(&ckpt_path, &fingerprint, &acc)?;
        }
        progress(&FeatureProgress {
            n_tokens_read: acc.n_tokens_read,
            max_tokens: opts.max_tokens,
            n_tokens_kept: acc.n_tokens_kept,
            resumed: false,
        });
    }
    if acc.n_tokens_kept == 0 {
        return Err(AnalysisError::NoTokens {
            seen: acc.n_tokens_read as usize,
        });
    }
    tracing::info!(
        n_tokens = acc.n_tokens_read,
        n_kept = acc.n_tokens_kept,
        "feature statistics accumulated"
    );
    let unembed = Unembedding::from_gguf(job.llama.path())?;
    let effects = unembed.logit_effects(&job.sae.w_dec, d_sae, opts.n_logits)?;
    let text = |id: u32| {
        job.tokenizer
            .decode(&[id])
            .unwrap_or_else(|_| format!("<{id}>"))
    };
    let fill = |mut ex: Example| {
        ex.tokens = ex.token_ids.iter().map(|&id| text(id)).collect();
        ex
    };
    let kept = acc.n_tokens_kept;
    let records = acc
        .latents
        .iter()
        .zip(effects)
        .enumerate()
        .map(|(j, (l, (pos, neg)))| {
            let tv = |v: Vec<(u32, f32)>| {
                v.into_iter()
                    .map(|(id, value)| TokenValue {
                        id,
                        token: text(id),
                        value,
                    })
                    .collect()
            };
            let mut quantiles = l.quantile_groups(4);
            for g in &mut quantiles {
                g.examples = std::mem::take(&mut g.examples)
                    .into_iter()
                    .map(fill)
                    .collect();
            }
            FeatureRecord {
                stats: LatentStats {
                    id: j as u32,
                    n_fires: l.n_fires,
                    density: l.n_fires as f64 / kept as f64,
                    mean_act: if l.n_fires == 0 {
                        0.0
                    } else {
                        (l.sum / l.n_fires as f64) as f32
                    },
                    max_act: l.max,
                },
                top: l.sorted_top().into_iter().map(fill).collect(),
                quantiles,
                histogram: if l.hist.len() == HIST_BINS {
                    l.hist.clone()
                } else {
                    vec![0; HIST_BINS]
                },
                logits_pos: tv(pos),
                logits_neg: tv(neg),
                cofire: l.top_cofire(opts.n_cofire),
                correlated: acc.correlated(j, opts.n_cofire),
            }
        });
    let index = FeatureIndex {
        version: store::FORMAT_VERSION,
        model: job.provenance.model.clone(),
        hook: job.hook.to_string(),
        sae: job.provenance.sae.clone(),
        corpus: job.corpus.description().to_string(),
        d_sae,
        n_contexts: acc.n_contexts,
        n_tokens_read: acc.n_tokens_read,
        n_tokens_kept: acc.n_tokens_kept,
        options: opts.clone(),
        hist_log10_min: 0.0,
        hist_log10_max: 0.0,
        hist_bins: 0,
        features: Vec::new(),
        records_sha256: None,
    };
    let index = store::write(job.out_dir, index, records)?;
    if ckpt_path.exists() {
        std::fs::remove_file(&ckpt_path).map_err(|source| AnalysisError::Io {
            path: ckpt_path.clone(),
            source,
        })?;
    }
    Ok(index)
}

fn save_checkpoint(path: &Path, fingerprint: &serde_json::Value, acc: &Accumulators) -> Result<()> {
    #[derive(Serialize)]
    struct Ref<'a> {
        fingerprint: &'a serde_json::Value,
        acc: &'a Accumulators,
    }
    let bytes =
        serde_json::to_vec(&Ref { fingerprint, acc }).map_err(|source| AnalysisError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    zephyra_io::write_atomic(path, &bytes)?;
    tracing::debug!(n_contexts = acc.n_contexts, "feature checkpoint written");
    Ok(())
}
