//! `zephyra.train`'s keyword arguments and how they become a [`TrainConfig`], option by option as the CLI's
//! `zephyra train` flags do: on a new run on top of [`TrainConfig::for_sae`]'s defaults, on a resume on top
//! of the saved configuration (the library's `check_resume` then names every option that differs).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use zephyra_sae::train::TrainConfig;
use zephyra_sae::Architecture;

/// Default `arch`, `k`, `expansion`, `batch_rows` and `tokens`: the CLI's.
pub const DEFAULT_K: usize = 32;
pub const DEFAULT_EXPANSION: usize = 16;
pub const DEFAULT_BATCH_ROWS: usize = 4096;
pub const DEFAULT_TOKENS: u64 = 2_000_000;

/// Every training option; `None` = the default on a new run, the saved value on a resume.
#[derive(Debug, Default, Clone)]
pub struct TrainOptions {
    pub arch: Option<String>,
    pub k: Option<usize>,
    pub expansion: Option<usize>,
    pub batch_rows: Option<usize>,
    pub tokens: Option<u64>,
    pub lr: Option<f32>,
    pub l1: Option<f64>,
    pub l0_coeff: Option<f64>,
    pub l1_warmup: Option<u64>,
    pub lr_warmup: Option<u64>,
    pub lr_decay: Option<String>,
    pub max_grad_norm: Option<f64>,
    pub normalize: Option<bool>,
    pub b_dec_init: Option<String>,
    pub dead_after: Option<u64>,
    pub decoder_init_norm: Option<f32>,
    pub non_finite: Option<String>,
    pub seed: Option<u64>,
    pub threads: Option<usize>,
    pub checkpoint_every: Option<u64>,
    pub metrics_every: Option<u64>,
}

fn bad(name: &str, value: &str, allowed: &str) -> PyErr {
    PyValueError::new_err(format!("{name}={value:?}: use one of {allowed}"))
}

/// `arch` with `k`.
pub fn architecture(arch: &str, k: usize) -> PyResult<Architecture> {
    Ok(match arch {
        "topk" => Architecture::TopK { k },
        "batchtopk" => Architecture::BatchTopK { k },
        "relu" => Architecture::Relu,
        "relu-unit" => Architecture::ReluUnit,
        "jumprelu" => Architecture::JumpRelu,
        "gated" => Architecture::Gated,
        other => {
            return Err(bad(
                "arch",
                other,
                "\"topk\", \"batchtopk\", \"relu\", \"relu-unit\", \"jumprelu\", \"gated\"",
            ))
        }
    })
}

/// `value` as the variant of `T` that serde names so (`"cosine"` → `Decay::Cosine`: the names of the
/// configuration files), or an error listing the `allowed` names.
fn named<T: serde::de::DeserializeOwned>(name: &str, value: &str, allowed: &str) -> PyResult<T> {
    serde_json::from_value(serde_json::Value::from(value)).map_err(|_| bad(name, value, allowed))
}

fn positive(name: &str, v: f64) -> PyResult<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!("{name}={v} must be > 0")))
    }
}

fn non_negative(name: &str, v: f64) -> PyResult<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!("{name}={v} must be ≥ 0")))
    }
}

impl TrainOptions {
    /// The architecture of a new run.
    pub fn new_architecture(&self) -> PyResult<Architecture> {
        architecture(
            self.arch.as_deref().unwrap_or("topk"),
            self.k.unwrap_or(DEFAULT_K),
        )
    }

    /// On a resume: the shape options given, applied to the saved configuration so that the comparison
    /// names each one that differs.
    pub fn apply_shape(&self, cfg: &mut TrainConfig) -> PyResult<()> {
        let saved = cfg.sae.architecture;
        if let Some(a) = &self.arch {
            cfg.sae.architecture = architecture(a, self.k.or(saved.k()).unwrap_or(DEFAULT_K))?;
        } else if let (Some(k), Some(_)) = (self.k, saved.k()) {
            cfg.sae.architecture = match saved {
                Architecture::BatchTopK { .. } => Architecture::BatchTopK { k },
                _ => Architecture::TopK { k },
            };
        }
        if let Some(e) = self.expansion {
            cfg.sae.d_sae = e.saturating_mul(cfg.sae.d_in);
        }
        if let Some(b) = self.batch_rows {
            cfg.batch_size = b;
        }
        if let Some(t) = self.tokens {
            cfg.total_tokens = t;
        }
        Ok(())
    }

    /// `l1` or `l0_coeff`, whichever `arch` penalises; the other is refused, naming the right one.
    fn sparsity_coeff(&self, arch: Architecture) -> PyResult<Option<f64>> {
        let name = arch.name();
        let (wrong, right) = match arch {
            Architecture::JumpRelu => (self.l1.map(|_| "l1"), self.l0_coeff),
            Architecture::TopK { .. } | Architecture::BatchTopK { .. } => (
                self.l1.map(|_| "l1").or(self.l0_coeff.map(|_| "l0_coeff")),
                None,
            ),
            _ => (self.l0_coeff.map(|_| "l0_coeff"), self.l1),
        };
        if let Some(given) = wrong {
            let hint = match arch {
                Architecture::JumpRelu => "jumprelu penalises L0: use l0_coeff",
                Architecture::TopK { .. } | Architecture::BatchTopK { .. } => {
                    "k sets its sparsity: drop l1/l0_coeff"
                }
                _ => "it penalises L1: use l1",
            };
            return Err(PyValueError::new_err(format!(
                "{given} does not apply to {name}; {hint}"
            )));
        }
        if let Some(v) = right {
            non_negative("the sparsity coefficient", v)?;
        }
        Ok(right)
    }

    /// Applies every option given on top of `cfg`.
    pub fn apply(&self, cfg: &mut TrainConfig) -> PyResult<()> {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        if let Some(lr) = self.lr {
            positive("lr", f64::from(lr))?;
        }
        if let Some(m) = self.max_grad_norm {
            non_negative("max_grad_norm", m)?;
        }
        set(&mut cfg.lr, self.lr);
        set(
            &mut cfg.sparsity_coeff,
            self.sparsity_coeff(cfg.sae.architecture)?,
        );
        set(&mut cfg.sparsity_warmup_steps, self.l1_warmup);
        set(&mut cfg.lr_warmup_steps, self.lr_warmup);
        if let Some(d) = &self.lr_decay {
            cfg.lr_decay = named("lr_decay", d, "\"constant\", \"linear\", \"cosine\"")?;
        }
        set(
            &mut cfg.max_grad_norm,
            self.max_grad_norm.map(|v| (v > 0.0).then_some(v)),
        );
        if self.normalize == Some(false) {
            cfg.normalize_activations = false;
        }
        if let Some(b) = &self.b_dec_init {
            let allowed = "\"geometric-median\", \"mean\", \"zeros\"";
            cfg.b_dec_init = named("b_dec_init", b, allowed)?;
        }
        set(&mut cfg.dead_after_tokens, self.dead_after);
        if let Some(norm) = self.decoder_init_norm {
            non_negative("decoder_init_norm", f64::from(norm))?;
            // 0 = unit-norm rows, as the CLI's `--decoder-init-norm 0`; the library's validation refuses
            // it for the architectures without the TopK family's selection.
            cfg.decoder_init_norm = (norm > 0.0).then_some(norm);
        }
        if let Some(p) = &self.non_finite {
            cfg.non_finite = named("non_finite", p, "\"skip\", \"error\"")?;
        }
        set(&mut cfg.seed, self.seed);
        set(&mut cfg.threads, self.threads);
        set(&mut cfg.checkpoint_every_tokens, self.checkpoint_every);
        set(&mut cfg.metrics_every_steps, self.metrics_every);
        Ok(())
    }
}
