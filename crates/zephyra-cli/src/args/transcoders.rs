//! `--transcoders DIR`: a directory of per-layer transcoders (`layer-{l}/`, each in SAELens' format, as
//! `zephyra train --transcoder --layers …` writes them), and loading them.

use std::path::PathBuf;

use anyhow::{bail, Context};
use zephyra_lm::{HookPoint, Llama};
use zephyra_sae::Sae;

/// `--transcoders DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscodersArgs {
    /// Directory holding one transcoder per layer: `layer-0/`, `layer-1/`, … (SAELens format).
    #[arg(long, value_name = "DIR")]
    pub transcoders: PathBuf,
}

/// One loaded transcoder with the hooks it reads and writes.
pub struct LoadedTranscoder {
    /// The block it replaces the MLP of.
    pub layer: usize,
    /// Its directory.
    pub dir: PathBuf,
    /// Input hook (`metadata.hook_name`).
    pub input: HookPoint,
    /// Output hook (`metadata.hook_name_out`, else `blocks.{l}.hook_mlp_out`).
    pub output: HookPoint,
    /// The weights.
    pub sae: Sae,
}

impl TranscodersArgs {
    /// Loads every `layer-{l}/` of the directory, in layer order, checked against `model`.
    pub fn load(&self, model: &Llama) -> anyhow::Result<Vec<LoadedTranscoder>> {
        let dir = &self.transcoders;
        let n_layers = model.config().n_layers;
        let mut out = Vec::new();
        for l in 0..n_layers {
            let sub = dir.join(format!("layer-{l}"));
            if !sub.join("cfg.json").is_file() {
                continue;
            }
            let sae = zephyra_sae::saelens::load(&sub)
                .with_context(|| format!("loading the transcoder in {}", sub.display()))?;
            let meta = &sae.cfg.metadata;
            let cfg_json = sub.join("cfg.json");
            // A metadata hook name, parsed for `model`; `None` when the field is absent.
            let hook = |field: &str, name: &Option<String>| -> anyhow::Result<Option<HookPoint>> {
                name.as_deref()
                    .map(|name| {
                        model.hook_point(name).with_context(|| {
                            format!("{}: metadata.{field} `{name}`", cfg_json.display())
                        })
                    })
                    .transpose()
            };
            let Some(input) = hook("hook_name", &meta.hook_name)? else {
                bail!(
                    "{} names no input hook (metadata.hook_name); a transcoder of layer {l} reads \
                     `blocks.{l}.ln2.hook_normalized`",
                    cfg_json.display()
                );
            };
            let output =
                hook("hook_name_out", &meta.hook_name_out)?.unwrap_or(HookPoint::MlpOut(l));
            if output != HookPoint::MlpOut(l) || input.layer() != Some(l) {
                bail!(
                    "{} maps `{input}` to `{output}`, not block {l}'s MLP input to `blocks.{l}.hook_mlp_out`: \
                     keep only MLP transcoders under layer-{l}/",
                    sub.display()
                );
            }
            let d = model.config().d_model;
            if sae.cfg.d_in != d || sae.cfg.d_out() != d {
                bail!(
                    "{}: the transcoder maps width {} to {}, the model's residual stream is {d} wide: use \
                     transcoders trained on this model",
                    sub.display(),
                    sae.cfg.d_in,
                    sae.cfg.d_out()
                );
            }
            out.push(LoadedTranscoder {
                layer: l,
                dir: sub,
                input,
                output,
                sae,
            });
        }
        if out.is_empty() {
            bail!(
                "{} holds no transcoders (expected layer-0/ … layer-{}/ with cfg.json); train them with \
                 `zephyra train --transcoder --layers all --out {}`",
                dir.display(),
                n_layers - 1,
                dir.display()
            );
        }
        Ok(out)
    }
}
