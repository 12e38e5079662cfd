//! Training a Matryoshka SAE on planted hierarchical data (issue 17, part 1): the first prefix recovers
//! the parent features, which plain BatchTopK's first latents do not; the per-prefix FVE reaches the
//! metrics and the summary.
//!
//! The data: 16 orthonormal features in 32 dimensions (a fixed random rotation), 4 parents with 3
//! children each. Each parent fires with probability ½ (magnitude in [0.8, 1.2]); when it fires exactly
//! one of its children fires too (magnitude in [0.2, 0.6]), and a child never fires without its parent
//! (the structure of Bussmann et al. 2025's toy model and SAELens' hierarchy generator).

use std::ops::ControlFlow;

use rand::{Rng, SeedableRng};
use zephyra_sae::metrics::MetricsRecord;
use zephyra_sae::train::{MemorySource, TrainConfig, Trainer};
use zephyra_sae::{Architecture, MatryoshkaWidths, SaeConfig};

const D_IN: usize = 32;
const PARENTS: usize = 4;
const CHILDREN: usize = 3;

/// 16 orthonormal directions (Gram–Schmidt of random vectors): parents first, then the children of
/// parent 0, 1, ….
fn features() -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    let mut out: Vec<Vec<f64>> = Vec::new();
    while out.len() < PARENTS * (1 + CHILDREN) {
        let mut v: Vec<f64> = (0..D_IN).map(|_| rng.random::<f64>() - 0.5).collect();
        for u in &out {
            let c: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= c * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        out.push(v);
    }
    out
}

fn rows(n: usize, seed: u64) -> Vec<f32> {
    let feats = features();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0.0f32; n * D_IN];
    for row in out.chunks_mut(D_IN) {
        for p in 0..PARENTS {
            if rng.random::<f64>() < 0.5 {
                continue;
            }
            let child = PARENTS + p * CHILDREN + rng.random_range(0..CHILDREN);
            let (a, b) = (rng.random_range(0.8..1.2), rng.random_range(0.2..0.6));
            for (j, o) in row.iter_mut().enumerate() {
                *o += (a * feats[p][j] + b * feats[child][j]) as f32;
            }
        }
    }
    out
}

fn train(arch: Architecture, dir: &std::path::Path) -> Trainer {
    let sae = SaeConfig::new(D_IN, 32, arch).unwrap();
    let mut cfg = TrainConfig::for_sae(sae, 256, 256 * 600);
    cfg.lr = 3e-3;
    cfg.init_rows = 2048;
    cfg.threads = 1;
    cfg.dead_after_tokens = 256 * 20;
    cfg.metrics_every_steps = 50;
    let mut src = MemorySource::new(rows(30_000, 5), D_IN, true).unwrap();
    let mut t = Trainer::new(cfg, &mut src, Some(dir)).unwrap();
    let out = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(out.finished);
    t
}

/// How many parents have a latent among the first `PARENTS` whose decoder direction has |cos| > 0.9
/// with them.
fn parents_in_first_prefix(t: &Trainer) -> usize {
    let sae = t.training_sae();
    let feats = features();
    (0..PARENTS)
        .filter(|&p| {
            (0..PARENTS).any(|i| {
                let w = &sae.w_dec[i * D_IN..(i + 1) * D_IN];
                let norm = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let dot: f64 = w.iter().zip(&feats[p]).map(|(&a, b)| a as f64 * b).sum();
                (dot / norm).abs() > 0.9
            })
        })
        .count()
}

#[test]
fn the_first_prefix_learns_the_parents_and_reports_its_fve() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = MatryoshkaWidths::new(&[PARENTS, 32]).unwrap();
    let m = train(
        Architecture::Matryoshka { k: 4, groups },
        &tmp.path().join("m"),
    );
    assert_eq!(
        parents_in_first_prefix(&m),
        PARENTS,
        "matryoshka's first {PARENTS} latents should be the {PARENTS} parents"
    );
    // The same budget without nesting: its first latents are whatever the initialisation made them.
    let b = train(Architecture::BatchTopK { k: 4 }, &tmp.path().join("b"));
    assert!(
        parents_in_first_prefix(&b) < PARENTS,
        "control: batchtopk's first latents should not happen to be the parents"
    );

    // Per-prefix FVE: in every metrics line and in the summary; the full prefix is the line's FVE, the
    // parents alone explain most of the variance (≈ 1.0/(1.0 + 0.17) of each active pair's energy).
    let text = std::fs::read_to_string(tmp.path().join("m/metrics.jsonl")).unwrap();
    let last: MetricsRecord = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last.fve_prefixes.len(), 2);
    assert!((last.fve_prefixes[1] - last.fve).abs() < 1e-12);
    let prefix = m.prefix_fve();
    assert_eq!(
        prefix.iter().map(|p| p.width).collect::<Vec<_>>(),
        vec![PARENTS, 32]
    );
    assert_eq!(prefix[0].fve, last.fve_prefixes[0]);
    assert!(
        prefix[0].fve > 0.6 && prefix[0].fve < prefix[1].fve && prefix[1].fve > 0.9,
        "{prefix:?}"
    );
    let summary: MetricsRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(summary.fve_prefixes.len(), 2);
    let bt = std::fs::read_to_string(tmp.path().join("b/metrics.jsonl")).unwrap();
    assert!(!bt.contains("fve_prefixes"));
    assert!(b.prefix_fve().is_empty());
}
