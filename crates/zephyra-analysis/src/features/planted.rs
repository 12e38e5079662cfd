//! Test fixture (feature `test-util`): the tiny random Llama of `zephyra_lm::testing` with an SAE whose
//! latent 0 is planted by hand to fire on exactly one token and to promote exactly that token.
//!
//! At `blocks.0.hook_resid_pre` the residual stream is the token embedding `e_x`. Latent 0 has encoder
//! column `2 e_t / ‖e_t‖²` and bias −1, so it is ReLU-active with value exactly 1 on token `t` and (checked
//! when `t` is chosen) inactive on every other token; its decoder row is `e_t ⊘ g` (`g` the final norm's
//! scale), so its logit effect `W_U (g ⊙ d_0) = E e_t` is largest at `t` (also checked). Latents 1–3 never
//! fire (zero encoder, bias −1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zephyra_data::Corpus;

use zephyra_lm::testing::{tiny_llama, TinyLlama};
use zephyra_lm::{HookPoint, Llama, Tokenizer};
use zephyra_sae::{Architecture, Sae, SaeConfig};

use super::{
    compute_features, FeatureIndex, FeatureJob, FeatureOptions, FeatureProgress, Provenance,
};

/// The fixture.
pub struct Planted {
    /// The tiny model (its temp dir lives as long as this value).
    pub tiny: TinyLlama,
    /// The model.
    pub llama: Arc<Llama>,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The SAE (4 latents, latent 0 planted).
    pub sae: Arc<Sae>,
    /// `blocks.0.hook_resid_pre`.
    pub hook: HookPoint,
    /// The token latent 0 fires on.
    pub token: u32,
    /// A temp dir holding `corpus.txt`.
    pub corpus_dir: tempfile::TempDir,
    /// `corpus.txt`.
    pub corpus_path: PathBuf,
    /// Its text.
    pub text: String,
}

/// Quick settings for passes over the fixture: 16-token contexts, 5 top examples, no checkpoints.
pub fn quick_options() -> FeatureOptions {
    FeatureOptions {
        ctx: 16,
        n_top: 5,
        checkpoint_every: 0,
        ..Default::default()
    }
}

impl Planted {
    /// Runs the features pass of `sae` (the planted SAE or a variant of it) over the fixture's corpus at
    /// its hook into `out_dir`. Panics if the fixture's own corpus cannot be opened (a fixture error).
    pub fn compute_features(
        &self,
        sae: &Sae,
        options: FeatureOptions,
        out_dir: &Path,
        provenance: Provenance,
        progress: &mut dyn FnMut(&FeatureProgress),
    ) -> crate::Result<FeatureIndex> {
        let corpus = Corpus::from_specs(
            &[self.corpus_path.display().to_string()],
            Default::default(),
        )
        .expect("opening the planted corpus");
        let job = FeatureJob {
            llama: &self.llama,
            tokenizer: self.tokenizer.clone(),
            sae,
            hook: self.hook,
            corpus: &corpus,
            options,
            out_dir,
            provenance,
        };
        compute_features(&job, progress)
    }
}

const WORDS: [&str; 16] = [
    "the", "cat", "box", "sat", "on", "a", "mat", "fix", "and", "then", "six", "dogs", "ran",
    "mix", "in", "water",
];

/// Builds the fixture from the tiny model of `seed`. Panics if the planted token cannot be chosen
/// (a fixture error, not a test outcome).
pub fn planted(seed: u64) -> Planted {
    let tiny = tiny_llama(seed).expect("writing the tiny model");
    let weights = zephyra_lm::gguf::load(&tiny.path).expect("reading the tiny model");
    let embed = &weights.tensors["token_embd.weight"].data;
    let g = &weights.tensors["output_norm.weight"].data;
    let d = weights.config.d_model;
    let vocab = weights.config.vocab_size;
    let row = |i: usize| &embed[i * d..(i + 1) * d];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    // Candidate: the byte tokens of the letters of "x", "b", "f", "s", "m" (byte b has id 3 + b).
    let token = [b'x', b'b', b'f', b's', b'm']
        .iter()
        .map(|&b| 3 + u32::from(b))
        .find(|&t| {
            let et = row(t as usize);
            let n2 = dot(et, et);
            (0..vocab)
                .filter(|&v| v != t as usize)
                .all(|v| 2.0 * dot(row(v), et) / n2 - 1.0 < -0.05 && dot(row(v), et) < 0.9 * n2)
                && g.iter().all(|x| x.abs() > 1e-3)
        })
        .expect("no candidate token is separable in this tiny model; try another seed");
    let et = row(token as usize).to_vec();
    let n2 = dot(&et, &et);
    let mut cfg = SaeConfig::new(d, 4, Architecture::Relu).expect("SAE config");
    cfg.apply_b_dec_to_input = false;
    cfg.metadata.hook_name = Some("blocks.0.hook_resid_pre".into());
    let mut sae = Sae::zeros(cfg).expect("SAE");
    let d_sae = 4;
    for i in 0..d {
        sae.w_enc[i * d_sae] = 2.0 * et[i] / n2;
        sae.w_dec[i] = et[i] / g[i];
    }
    sae.b_enc = vec![-1.0; d_sae];
    let llama = Llama::load_gguf(&tiny.path).expect("loading the tiny model");
    let tokenizer = Tokenizer::from_gguf(&tiny.path).expect("tokenizer");
    let corpus_dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::new();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    for i in 0..600 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(WORDS[(state >> 60) as usize]);
        text.push(if i % 11 == 10 { '\n' } else { ' ' });
    }
    let corpus_path = corpus_dir.path().join("corpus.txt");
    std::fs::write(&corpus_path, &text).expect("writing the corpus");
    Planted {
        tiny,
        llama: Arc::new(llama),
        tokenizer: Arc::new(tokenizer),
        sae: Arc::new(sae),
        hook: HookPoint::ResidPre(0),
        token,
        corpus_dir,
        corpus_path,
        text,
    }
}
