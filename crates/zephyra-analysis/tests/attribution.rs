//! Attribution graphs on real (tiny) models: the local replacement model reproduces the model's logits,
//! every target's incoming edges plus its bias equal its value on the real pass (features and logits,
//! Llama and Gemma 3), and a circuit planted in the weights (trigger token → one MLP neuron → target
//! logit) comes out as the graph's top path.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use zephyra_analysis::attribution::capture::Holding;
use zephyra_analysis::attribution::graph::demeaned_logits;
use zephyra_analysis::attribution::paths::top_paths;
use zephyra_analysis::attribution::prune::{prune, scores};
use zephyra_analysis::attribution::trace::EMPTY_TRANSCODER;
use zephyra_analysis::attribution::{
    attribute, capture, AttributionConfig, TraceOptions, Tracer, Transcoder,
};
use zephyra_data::exclude::ExclusionRule;
use zephyra_lm::testing::{tiny_gemma, tiny_llama};
use zephyra_lm::{HookPoint, Hooks, Llama, Tokenizer};
use zephyra_sae::{Architecture, Sae, SaeConfig, SaeOf};

fn random_transcoders(model: &Llama, k: usize, seed: u64) -> Vec<(HookPoint, Sae)> {
    let cfg = model.config();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..cfg.n_layers)
        .map(|l| {
            let tc = SaeConfig::transcoder(
                cfg.d_model,
                cfg.d_model,
                2 * cfg.d_model,
                Architecture::TopK { k },
                true,
            )
            .unwrap();
            let mut sae = SaeOf::<f32>::init(tc, &mut rng).unwrap();
            for (i, w) in sae.w_skip.iter_mut().enumerate() {
                *w = 0.05 * ((i * 7919 % 101) as f32 / 50.0 - 1.0);
            }
            sae.b_dec
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = 0.01 * (i % 5) as f32);
            (HookPoint::Ln2Normalized(l), sae)
        })
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

fn check_exact(model: &Llama, tokens: &[u32]) {
    let tcs = random_transcoders(model, 6, 1);
    let active = check_exact_with(model, tokens, &tcs);
    assert!(active >= 6 * tokens.len() * model.config().n_layers / 2);
}

/// The local replacement model through `tcs` reproduces the logits, and every target's incoming edges plus
/// its bias equal its real value, holding no position and holding position 0 and token 9 (a stand-in
/// special token); returns the number of active features with nothing held.
fn check_exact_with(model: &Llama, tokens: &[u32], tcs: &[(HookPoint, Sae)]) -> usize {
    let special = |t: u32| t == 9;
    let held_rule = Holding {
        rule: ExclusionRule::default(),
        is_special: &special,
    };
    let active = check_exact_holding(model, tokens, tcs, &Holding::nothing());
    let held = check_exact_holding(model, tokens, tcs, &held_rule);
    assert!(held < active, "holding positions removes their features");
    active
}

fn check_exact_holding(
    model: &Llama,
    tokens: &[u32],
    tcs: &[(HookPoint, Sae)],
    holding: &Holding<'_>,
) -> usize {
    let refs: Vec<(HookPoint, &Sae)> = tcs.iter().map(|(h, s)| (*h, s)).collect();
    let built = capture::build(model, &refs, tokens, holding).unwrap();
    let d = model.config().d_model;
    for (p, &t) in tokens.iter().enumerate() {
        let must_hold = holding.rule.exclude_position_zero && (p == 0 || (holding.is_special)(t));
        assert!(
            !must_hold || built.local.held[p],
            "position {p} is not held"
        );
        if built.local.held[p] {
            assert!(
                built.local.active.iter().all(|a| a.pos != p),
                "a feature at held {p}"
            );
            for e in &built.local.errors {
                assert!(
                    e[p * d..(p + 1) * d].iter().all(|&x| x == 0.0),
                    "an error at held {p}"
                );
            }
        }
    }
    let max_logit = built.logits.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    assert!(
        built.max_abs_logit_error <= 1e-5 * max_logit.max(1.0),
        "frozen logits differ by {} (max |logit| {max_logit})",
        built.max_abs_logit_error
    );
    let lr = &built.local;
    let cfg = AttributionConfig {
        max_n_logits: 5,
        desired_logit_prob: 0.999,
        max_feature_nodes: None,
        batch_size: 16,
    };
    let g = attribute(lr, &cfg, &mut |_, _| {}).unwrap();
    let n = g.n_nodes();
    let feats: Vec<usize> = (0..lr.active.len()).collect();
    let (fb, lb) = lr.target_biases(&feats, &g.logit_tokens);
    for (i, a) in lr.active.iter().enumerate() {
        let sum: f64 = (0..n).map(|s| f64::from(g.edge(i, s))).sum::<f64>() + fb[i];
        assert!(
            close(sum, a.pre_activation, 1e-4),
            "feature {i} (layer {}, pos {}): Σ edges + bias = {sum}, real pre-activation {}",
            a.layer,
            a.pos,
            a.pre_activation
        );
    }
    let want = demeaned_logits(&built.logits, &g.logit_tokens);
    for k in 0..g.logit_tokens.len() {
        let t = g.logit_start() + k;
        let sum: f64 = (0..n).map(|s| f64::from(g.edge(t, s))).sum::<f64>() + lb[k];
        assert!(
            close(sum, want[k], 1e-4),
            "logit {k}: Σ edges + bias = {sum}, real {}",
            want[k]
        );
    }
    lr.active.len()
}

#[test]
fn a_layer_without_a_transcoder_is_all_error_nodes_and_the_graph_stays_exact() {
    let tiny = tiny_llama(5).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let tokens = [1, 40, 77, 250, 12, 9, 150, 60, 61, 200];
    let (n_layers, d) = (model.config().n_layers, model.config().d_model);
    assert!(n_layers >= 2);
    let mut tcs = random_transcoders(&model, 6, 1);
    let empty = Transcoder::empty(0, HookPoint::Ln2Normalized(0), d).unwrap();
    assert_eq!(empty.name, EMPTY_TRANSCODER);
    tcs[0] = (empty.input, empty.sae);
    // Every feature sits above layer 0, and still sums exactly: layer 0's whole MLP is its error nodes.
    let active = check_exact_with(&model, &tokens, &tcs);
    assert!(active >= 6 * tokens.len() * (n_layers - 1) / 2, "{active}");
    let refs: Vec<(HookPoint, &Sae)> = tcs.iter().map(|(h, s)| (*h, s)).collect();
    let built = capture::build(&model, &refs, &tokens, &Holding::nothing()).unwrap();
    assert!(built.local.active.iter().all(|a| a.layer > 0));
}

#[test]
fn the_local_replacement_model_is_exact_and_edges_sum_to_every_targets_value_llama() {
    let tiny = tiny_llama(5).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    check_exact(&model, &[1, 40, 77, 250, 12, 9, 150, 60, 61, 200]);
}

#[test]
fn the_local_replacement_model_is_exact_and_edges_sum_to_every_targets_value_gemma() {
    let tiny = tiny_gemma(6).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    check_exact(&model, &[2, 40, 77, 100, 12, 9, 150, 60]);
}

/// Rewrites `path` with `edit(name, values)` applied to every tensor (all stored as f32).
fn edit_gguf(path: &std::path::Path, edit: impl Fn(&str, &mut Vec<f32>)) {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut tensors = Vec::new();
    for (name, info) in &content.tensor_infos {
        let q = content.tensor(&mut f, name, &Device::Cpu).unwrap();
        let dims = info.shape.dims().to_vec();
        let mut v = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        edit(name, &mut v);
        let t = Tensor::from_vec(v, dims, &Device::Cpu).unwrap();
        tensors.push((name.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    drop(f);
    let meta: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut out, &meta, &refs).unwrap();
}

#[test]
fn a_circuit_planted_in_the_weights_is_the_top_path_of_its_graph() {
    // Every MLP is silenced except neuron 0 of block 0, whose gate and up rows read the (normalised)
    // embedding of the trigger token and whose down column writes the unembedding of the target token:
    // trigger → neuron → target logit, in the real model. A transcoder with one live feature reading the
    // same direction and writing the same column reproduces that neuron at the last position.
    let tiny = tiny_llama(7).unwrap();
    let model0 = Llama::load_gguf(&tiny.path).unwrap();
    let cfg = model0.config().clone();
    let (d, d_mlp) = (cfg.d_model, cfg.d_mlp);
    let (trigger, target) = (77u32, 123u32);
    let emb = |t: u32| model0.token_embedding()[t as usize * d..(t as usize + 1) * d].to_vec();
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let (e_trig, u_target) = (unit(&emb(trigger)), unit(&emb(target)));
    drop(model0);
    edit_gguf(&tiny.path, |name, v| {
        if name.contains("ffn_gate") || name.contains("ffn_up") || name.contains("ffn_down") {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
        if name == "blk.0.ffn_gate.weight" || name == "blk.0.ffn_up.weight" {
            v[..d].copy_from_slice(&e_trig); // row 0
        }
        if name == "blk.0.ffn_down.weight" {
            for (i, &u) in u_target.iter().enumerate() {
                v[i * d_mlp] = 8.0 * u; // column 0
            }
        }
    });
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let tokens = [5u32, 40, 61, 99, trigger];
    // The neuron's input at the last position.
    let mut hooks = Hooks::capturing([HookPoint::Ln2Normalized(0), HookPoint::MlpPost(0)]);
    let out = model
        .forward(&[&tokens[..]], &mut hooks, zephyra_lm::Logits::Last)
        .unwrap();
    let last = |h: HookPoint, w: usize| -> Vec<f32> {
        let v = out
            .activations
            .get(h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        v[(tokens.len() - 1) * w..tokens.len() * w].to_vec()
    };
    let x = last(HookPoint::Ln2Normalized(0), d);
    let neuron = last(HookPoint::MlpPost(0), d_mlp)[0];
    let z: f32 = x.iter().zip(&e_trig).map(|(a, b)| a * b).sum();
    assert!(
        z > 1.0 && neuron > 1.0,
        "the trigger drives the neuron: z = {z}, neuron = {neuron}"
    );
    let logits = out
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let top = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(
        top as u32, target,
        "the planted neuron makes the target the top token"
    );

    // Transcoders: layer 0 has one live ReLU feature (id 3) = the neuron, scaled to match it at the last
    // position; every other feature and layer is dead (errors hold the rest, which is zero: MLPs are off).
    let tcs: Vec<(HookPoint, Sae)> = (0..cfg.n_layers)
        .map(|l| {
            let c = SaeConfig::transcoder(d, d, 8, Architecture::Relu, false).unwrap();
            let mut sae = SaeOf::<f32>::zeros(c).unwrap();
            sae.b_enc.iter_mut().for_each(|b| *b = -1e3);
            if l == 0 {
                for (j, &e) in e_trig.iter().enumerate() {
                    sae.w_enc[j * 8 + 3] = e;
                }
                sae.b_enc[3] = 0.0;
                for (i, &u) in u_target.iter().enumerate() {
                    sae.w_dec[3 * d + i] = 8.0 * u * neuron / z;
                }
            }
            (HookPoint::Ln2Normalized(l), sae)
        })
        .collect();
    let refs: Vec<(HookPoint, &Sae)> = tcs.iter().map(|(h, s)| (*h, s)).collect();
    let built = capture::build(&model, &refs, &tokens, &Holding::nothing()).unwrap();
    let lr = &built.local;
    let last_pos = tokens.len() - 1;
    let f = lr
        .active
        .iter()
        .position(|a| a.layer == 0 && a.pos == last_pos && a.feature == 3);
    let f = f.expect("the planted feature is active at the trigger");
    let g = attribute(lr, &AttributionConfig::default(), &mut |_, _| {}).unwrap();
    assert_eq!(g.logit_tokens[0], target);
    let fi = g.features.iter().position(|a| *a == lr.active[f]).unwrap();
    let t = g.logit_start();
    let n = g.n_nodes();
    // The feature's edge into the target is the largest, and carries the logit (no error at that node).
    let strongest = (0..n)
        .max_by(|&a, &b| g.edge(t, a).abs().total_cmp(&g.edge(t, b).abs()))
        .unwrap();
    assert_eq!(
        strongest, fi,
        "the planted feature is the target's strongest input"
    );
    let err = g.error_start() + last_pos; // error of layer 0 at the last position
    assert!(
        g.edge(t, err).abs() < 1e-4 * g.edge(t, fi).abs(),
        "the transcoder matches the neuron there"
    );
    // Its own strongest input is the trigger token's embedding.
    let tok = g.token_start() + last_pos;
    let into_f = (0..n)
        .max_by(|&a, &b| g.edge(fi, a).abs().total_cmp(&g.edge(fi, b).abs()))
        .unwrap();
    assert_eq!(into_f, tok);
    let pruned = prune(&g, 0.8, 0.98).unwrap();
    assert!(pruned.node_mask[fi]);
    let paths = top_paths(&g, &pruned, t, 3, 32);
    assert_eq!(paths[0].nodes, vec![tok, fi, t], "{paths:?}");
    let s = scores(&g, Some(&pruned)).unwrap();
    assert!(s.completeness > 0.9 && s.replacement > 0.9, "{s:?}");

    // The real-model check: ablating the most influential feature (the planted one) in the model, attention
    // recomputed, lowers the target logit by about what its edge into the target predicts.
    let transcoders = tcs
        .into_iter()
        .enumerate()
        .map(|(layer, (input, sae))| Transcoder {
            layer,
            input,
            name: format!("layer-{layer}"),
            sae,
        })
        .collect();
    let tracer = Tracer::new(
        Arc::new(Llama::load_gguf(&tiny.path).unwrap()),
        Arc::new(Tokenizer::from_gguf(&tiny.path).unwrap()),
        transcoders,
    )
    .unwrap();
    // Position 0 is held as by default; not the norm clause: the silenced MLPs write zeros everywhere but
    // at the trigger, so their median norm is 0 and the clause would hold the trigger itself.
    let opts = TraceOptions {
        n_ablate: 1,
        exclusion: ExclusionRule {
            max_norm_multiple: None,
            ..ExclusionRule::default()
        },
        ..TraceOptions::default()
    };
    let traced = tracer
        .trace_tokens(&tokens, "planted", "planted", &opts, &mut |_, _| {})
        .unwrap();
    assert_eq!(traced.summary.held_positions, vec![0]);
    let check = traced.summary.check.expect("a check");
    assert_eq!(check.ablated.len(), 1);
    let a = check.ablated[0];
    assert_eq!((a.layer, a.pos, a.feature), (0, last_pos, 3));
    let edge = f64::from(g.edge(t, fi));
    assert!((check.predicted_direct + edge).abs() < 1e-9 * edge.abs().max(1.0));
    assert!(
        check.real_change < 0.0
            && (check.real_change - check.predicted_direct).abs() < 0.5 * edge.abs(),
        "{check:?}"
    );
}
