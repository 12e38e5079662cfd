//! Matryoshka against TopK on a planted hierarchy where the answer is known (issue 17, part 1): 4 parents
//! each with 4 mutually exclusive children, 20 orthonormal features in 32 dimensions (no superposition, so
//! every dictionary here learns every parent; the question is only whether the parent's latent keeps
//! firing when a child fires). TopK with `k` 2 has the incentive to absorb (one latent per parent+child
//! pair); Matryoshka's first prefix of 4 latents must reconstruct rows on its own, so its parent latents
//! keep firing (Bussmann et al. 2025, Chanin et al. 2024).

use std::ops::ControlFlow;

use zephyra_analysis::ground_truth::{evaluate_synth, GroundTruthFigures};
use zephyra_sae::synth::{HierarchyConfig, SynthConfig, SynthModel, TRAIN_STREAM};
use zephyra_sae::train::{MemorySource, TrainConfig, Trainer};
use zephyra_sae::{Architecture, MatryoshkaWidths, SaeConfig};

const D: usize = 32;
const ROOTS: usize = 4;
const BRANCHING: usize = 4;
const N_FEATURES: usize = ROOTS * (1 + BRANCHING);
const D_SAE: usize = 32;

fn truth() -> SynthModel {
    SynthModel::new(SynthConfig {
        n_features: N_FEATURES,
        d: D,
        orthogonal: true,
        max_prob: 0.4,
        min_prob: 0.05,
        noise_std: 0.0,
        bias_norm: 0.0,
        hierarchy: Some(HierarchyConfig {
            roots: ROOTS,
            branching: BRANCHING,
            depth: 1,
            exclusive_portion: 1.0,
        }),
        seed: 3,
        ..SynthConfig::default()
    })
    .unwrap()
}

/// 1,500 steps of 256 rows at lr 3e-3, one thread (reproducible), scored on 8 held-out blocks.
fn train(truth: &SynthModel, arch: Architecture) -> GroundTruthFigures {
    let rows: Vec<f32> = (0..32)
        .flat_map(|b| truth.block(TRAIN_STREAM, b).acts)
        .collect();
    let sae = SaeConfig::new(D, D_SAE, arch).unwrap();
    let mut cfg = TrainConfig::for_sae(sae, 256, 256 * 1500);
    cfg.lr = 3e-3;
    cfg.threads = 1;
    cfg.dead_after_tokens = 256 * 50;
    let mut src = MemorySource::new(rows, D, true).unwrap();
    let mut t = Trainer::new(cfg, &mut src, None).unwrap();
    assert!(
        t.run(&mut src, &mut |_| ControlFlow::Continue(()))
            .unwrap()
            .finished
    );
    evaluate_synth(&t.inference_sae(), truth, 8, &mut |_| {}).unwrap()
}

#[test]
fn matryoshka_keeps_parents_firing_where_topk_absorbs_them() {
    let truth = truth();
    assert_eq!(truth.hierarchy.parents.len(), ROOTS);
    let topk = train(&truth, Architecture::TopK { k: 2 });
    let groups = MatryoshkaWidths::new(&[ROOTS, D_SAE]).unwrap();
    let m = train(&truth, Architecture::Matryoshka { k: 2, groups });
    // Every parent is learned by both (matched |cos| ≥ 0.5), so the two absorption figures agree.
    for f in [&topk, &m] {
        assert_eq!(f.learned_parents, ROOTS, "{f:?}");
        assert_eq!(f.absorption_learned, f.absorption, "{f:?}");
    }
    let (a_topk, a_m) = (topk.absorption.unwrap(), m.absorption.unwrap());
    assert!(a_topk > 0.5, "topk should absorb the parents: {topk:?}");
    assert!(
        a_m < 0.5 * a_topk,
        "matryoshka should keep its parent latents firing with the children: {a_m} vs topk {a_topk}"
    );
}
