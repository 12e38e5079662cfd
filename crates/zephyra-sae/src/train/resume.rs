//! What `--resume` compares: every setting that changes the weights a run produces, named as the command
//! line spells it, saved value against requested value. Only the checkpoint and metrics intervals may
//! change ([`TrainConfig::checkpoint_every_tokens`], [`TrainConfig::metrics_every_steps`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::{Architecture, SaeConfig, SaeError};

/// The options outside [`TrainConfig`]'s own fields that decide which rows a run reads and in what order
/// (`--no-shuffle`, `--holdout`, `--shuffle-buffer`, the on-the-fly harvest settings …): flag → value as
/// text, recorded in the checkpoint by whoever opens the source, compared on resume like every other
/// setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataOptions(pub BTreeMap<String, String>);

impl DataOptions {
    /// Records `option` (a flag, e.g. `--shuffle-buffer`) with `value`.
    pub fn set(&mut self, option: &str, value: impl fmt::Display) {
        self.0.insert(option.to_string(), value.to_string());
    }

    /// The value recorded for `option`.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.0.get(option).map(String::as_str)
    }

    /// Whether nothing is recorded (runs started before data options were recorded, library runs).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One setting whose requested value differs from the checkpoint's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The option as the command line spells it (`--k`, `--shuffle-buffer`), or the configuration field
    /// when no flag sets it (`adam.beta2`).
    pub option: String,
    /// The checkpoint's value.
    pub saved: String,
    /// The requested value.
    pub requested: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.option, self.saved, self.requested)
    }
}

/// `a; b; c` for an error message.
pub(crate) fn list(differences: &[Difference]) -> String {
    let items: Vec<String> = differences.iter().map(Difference::to_string).collect();
    items.join("; ")
}

/// Collects the differences between two values of one option.
#[derive(Default)]
struct Diff(Vec<Difference>);

impl Diff {
    fn cmp<T: PartialEq + fmt::Debug>(&mut self, option: &str, saved: &T, requested: &T) {
        if saved != requested {
            self.0.push(Difference {
                option: option.to_string(),
                saved: text(saved),
                requested: text(requested),
            });
        }
    }
}

/// `d.cmp(option, &s.field, &r.field)` for each `option => field` pair.
macro_rules! compare {
    ($d:ident, $s:ident, $r:ident; $($option:literal => $($field:ident).+),* $(,)?) => {
        $( $d.cmp($option, &$s.$($field).+, &$r.$($field).+); )*
    };
}

/// A value as a user reads it: strings without quotes, `None` as "none", `Some(x)` as `x`.
fn text<T: fmt::Debug>(v: &T) -> String {
    let s = format!("{v:?}");
    let s = match s.strip_prefix("Some(").and_then(|r| r.strip_suffix(')')) {
        Some(inner) => inner.to_string(),
        None if s == "None" => "none".to_string(),
        None => s,
    };
    s.trim_matches('"').to_string()
}

/// Every setting of `requested` that differs from `saved`, by option name. Exhaustive by construction:
/// a field added to [`TrainConfig`] or [`SaeConfig`] does not compile here until it is compared (or
/// listed as allowed to change).
pub fn differences(saved: &TrainConfig, requested: &TrainConfig) -> Vec<Difference> {
    // Exhaustiveness: naming every field here fails to compile when one is added without a comparison.
    let TrainConfig {
        sae: _,
        batch_size: _,
        total_tokens: _,
        lr: _,
        lr_warmup_steps: _,
        lr_decay: _,
        lr_decay_start: _,
        lr_final_fraction: _,
        adam: _,
        sparsity_coeff: _,
        sparsity_warmup_steps: _,
        max_grad_norm: _,
        normalize_activations: _,
        b_dec_init: _,
        init_rows: _,
        dead_after_tokens: _,
        resample_every_steps: _,
        k_aux: _,
        aux_coeff: _,
        bandwidth: _,
        threshold_rate: _,
        jumprelu_sparsity: _,
        pre_act_coeff: _,
        jumprelu_init_threshold: _,
        threshold_lr_scale: _,
        decoder_init_norm: _,
        matryoshka_aux: _,
        non_finite: _,
        seed: _,
        threads: _,
        data: _,
        // May change on resume.
        checkpoint_every_tokens: _,
        metrics_every_steps: _,
    } = saved;
    let SaeConfig {
        d_in: _,
        d_sae: _,
        architecture: _,
        apply_b_dec_to_input: _,
        normalization_factor: _,
        metadata: _,
        transcoder: _,
    } = &saved.sae;
    let (s, r) = (saved, requested);
    let mut d = Diff::default();
    d.cmp("d_in (the activations' width)", &s.sae.d_in, &r.sae.d_in);
    let (arch, r_arch) = (s.sae.architecture, r.sae.architecture);
    d.cmp("--arch", &arch.name(), &r_arch.name());
    if arch.name() == r_arch.name() {
        d.cmp("--k", &arch.k(), &r_arch.k());
    }
    if let (Architecture::Matryoshka { groups, .. }, Architecture::Matryoshka { groups: r_g, .. }) =
        (arch, r_arch)
    {
        d.cmp("--groups", &groups.to_string(), &r_g.to_string());
    }
    compare!(d, s, r;
        "d_sae (--expansion × d_in)" => sae.d_sae,
        "apply_b_dec_to_input" => sae.apply_b_dec_to_input,
        "normalization_factor" => sae.normalization_factor,
        "metadata.model_name" => sae.metadata.model_name,
        "metadata.hook_name" => sae.metadata.hook_name,
        "metadata.context_size" => sae.metadata.context_size,
        "metadata.hook_name_out" => sae.metadata.hook_name_out,
        "transcoder (--target-acts width, --skip)" => sae.transcoder,
        "metadata" => sae.metadata.extra,
        "--batch-rows" => batch_size,
        "--tokens" => total_tokens,
        "--lr" => lr,
        "--lr-warmup" => lr_warmup_steps,
        "--lr-decay" => lr_decay,
        "lr_decay_start" => lr_decay_start,
        "lr_final_fraction" => lr_final_fraction,
        "adam.beta1" => adam.beta1,
        "adam.beta2" => adam.beta2,
        "adam.eps" => adam.eps,
        "adam.weight_decay" => adam.weight_decay,
        "--l1" => sparsity_coeff,
        "--l1-warmup" => sparsity_warmup_steps,
        "--max-grad-norm" => max_grad_norm,
        "normalize_activations (--no-normalize)" => normalize_activations,
        "--b-dec-init" => b_dec_init,
        "init_rows" => init_rows,
        "--dead-after" => dead_after_tokens,
        "resample_every_steps" => resample_every_steps,
        "k_aux" => k_aux,
        "aux_coeff" => aux_coeff,
        "--jumprelu-bandwidth" => bandwidth,
        "threshold_rate" => threshold_rate,
        "--jumprelu-sparsity" => jumprelu_sparsity,
        "--pre-act-coeff" => pre_act_coeff,
        "--jumprelu-init-threshold" => jumprelu_init_threshold,
        "--threshold-lr-scale" => threshold_lr_scale,
        "--decoder-init-norm" => decoder_init_norm,
        "--matryoshka-aux" => matryoshka_aux,
        "--non-finite" => non_finite,
        "--seed" => seed,
        "--threads" => threads,
    );
    // Data options: a requested option the checkpoint does not record (a run saved before they were
    // recorded, or one that does not apply to its source) cannot be checked, so it is refused too.
    let keys: std::collections::BTreeSet<&String> =
        s.data.0.keys().chain(r.data.0.keys()).collect();
    for k in keys {
        let (saved, requested) = (s.data.0.get(k), r.data.0.get(k));
        if saved != requested {
            d.0.push(Difference {
                option: k.clone(),
                saved: saved.cloned().unwrap_or_else(|| "not recorded".into()),
                requested: requested.cloned().unwrap_or_else(|| "not given".into()),
            });
        }
    }
    d.0
}

/// [`SaeError::ConfigMismatch`] listing every difference, unless there is none.
pub fn check_resume(saved: &TrainConfig, requested: &TrainConfig) -> Result<(), SaeError> {
    let differences = differences(saved, requested);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(SaeError::ConfigMismatch { differences })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Architecture;

    fn cfg(k: usize) -> TrainConfig {
        TrainConfig::for_sae(
            SaeConfig::new(8, 32, Architecture::TopK { k }).unwrap(),
            16,
            1600,
        )
    }

    #[test]
    fn differences_name_the_flag_and_both_values() {
        let saved = cfg(4);
        let mut requested = cfg(5);
        requested.max_grad_norm = None;
        requested.data.set("--shuffle-buffer", 1000);
        requested.checkpoint_every_tokens = 7;
        let d: Vec<String> = differences(&saved, &requested)
            .iter()
            .map(Difference::to_string)
            .collect();
        assert_eq!(
            d,
            [
                "--k: 4 → 5",
                "--max-grad-norm: 1.0 → none",
                "--shuffle-buffer: not recorded → 1000"
            ]
        );
        let mut saved = saved;
        saved.data.set("--shuffle-buffer", 262144);
        let mut same = saved.clone();
        same.metrics_every_steps = 1;
        assert!(check_resume(&saved, &same).is_ok());
        let mut other_arch = saved.clone();
        other_arch.sae.architecture = Architecture::Relu;
        assert_eq!(
            differences(&saved, &other_arch)[0].to_string(),
            "--arch: topk → relu"
        );
    }
}
