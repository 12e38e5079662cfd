//! The attribution-graph fixture shared by the route and browser tests: a graph of the planted model's
//! prompt through random TopK transcoders (one per layer), written as `g.json`, layer 0's features store,
//! and the model run by hand with a feature's contribution removed.

use std::sync::Arc;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use zephyra_analysis::attribution::{TraceOptions, Tracer, Transcoder};
use zephyra_analysis::features::planted::{planted, quick_options, Planted};
use zephyra_analysis::features::{compute_features, FeatureJob, FeatureStore, Provenance};
use zephyra_data::Corpus;
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Hooks};
use zephyra_sae::{Architecture, Sae, SaeConfig, SaeOf};
use zephyra_web::graph::GraphSite;
use zephyra_web::{router, AppState};

pub const PROMPT: &str = "the cat sat on";

pub struct Setup {
    pub p: Planted,
    pub tracer: Arc<Tracer>,
    pub dir: tempfile::TempDir,
    /// The graph written as `g.json`.
    pub graph: Value,
}

pub fn transcoders(p: &Planted) -> Vec<Transcoder> {
    let cfg = p.llama.config();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    (0..cfg.n_layers)
        .map(|l| {
            let (d, arch) = (cfg.d_model, Architecture::TopK { k: 4 });
            let tc = SaeConfig::transcoder(d, d, 2 * d, arch, false).unwrap();
            let sae: Sae = SaeOf::<f32>::init(tc, &mut rng).unwrap();
            Transcoder {
                layer: l,
                input: HookPoint::Ln2Normalized(l),
                name: format!("layer-{l}"),
                sae,
            }
        })
        .collect()
}

pub fn setup() -> Setup {
    let p = planted(3);
    let tracer = Tracer::new(p.llama.clone(), p.tokenizer.clone(), transcoders(&p)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let traced = tracer
        .trace(PROMPT, "g", &TraceOptions::default(), &mut |_, _| {})
        .unwrap();
    let bytes = serde_json::to_vec(&traced.file).unwrap();
    std::fs::write(dir.path().join("g.json"), &bytes).unwrap();
    let graph = serde_json::from_slice(&bytes).unwrap();
    Setup {
        p,
        tracer: Arc::new(tracer),
        dir,
        graph,
    }
}

/// Layer 0's features store: the features pass run on the transcoder at its input hook.
pub fn layer0_store(s: &Setup, out: &std::path::Path) -> FeatureStore {
    let corpus =
        Corpus::from_specs(&[s.p.corpus_path.display().to_string()], Default::default()).unwrap();
    let tc = &s.tracer.transcoders()[0];
    let job = FeatureJob {
        llama: &s.p.llama,
        tokenizer: s.p.tokenizer.clone(),
        sae: &tc.sae,
        hook: tc.input,
        corpus: &corpus,
        options: quick_options(),
        out_dir: out,
        provenance: Provenance::default(),
    };
    compute_features(&job, &mut |_| {}).unwrap();
    FeatureStore::open(out).unwrap()
}

pub fn app(s: &Setup, with_model: bool, layer0: Option<FeatureStore>) -> axum::Router {
    let n = s.p.llama.config().n_layers;
    let mut layers = vec![None; n];
    layers[0] = layer0;
    let tracer = with_model.then(|| Arc::clone(&s.tracer));
    router(AppState::graphs_only(GraphSite::new(
        s.dir.path(),
        tracer,
        layers,
    )))
}

pub fn feature_nodes(graph: &Value) -> Vec<&Value> {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["feature_type"] == "cross layer transcoder")
        .collect()
}

/// The model's last-position logits with `c · w_dec[f]` subtracted from `hook_mlp_out` of `layer` at `pos`,
/// the activation edited by hand in a replace hook.
pub fn logits_by_hand(s: &Setup, layer: usize, pos: usize, f: usize, c: f32) -> Vec<f32> {
    let tokens = s.p.tokenizer.encode(PROMPT).unwrap();
    let d = s.p.llama.config().d_model;
    let w = s.tracer.transcoders()[layer].sae.w_dec[f * d..(f + 1) * d].to_vec();
    let mut hooks = Hooks::new();
    hooks.replace(HookPoint::MlpOut(layer), move |_, t: &Tensor| {
        let dims = t.dims().to_vec();
        let mut v = t.flatten_all()?.to_vec1::<f32>()?;
        let row = &mut v[pos * d..(pos + 1) * d];
        row.iter_mut().zip(&w).for_each(|(x, w)| *x -= c * w);
        Ok(Tensor::from_vec(v, dims, t.device())?)
    });
    let out =
        s.p.llama
            .forward(&[&tokens[..]], &mut hooks, Logits::Last)
            .unwrap();
    out.logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}
