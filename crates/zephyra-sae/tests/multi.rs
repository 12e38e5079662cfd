//! Several dictionaries stepped together ([`MultiSession`]), SAEs and a skip transcoder: each ends with bit
//! for bit the weights it trains alone with the same seed and rows (the same step code on the same threads: exact, no rounding
//! to explain), and a multi-dictionary run stopped and resumed equals an uninterrupted one.

use std::ops::ControlFlow;
use std::path::Path;

use zephyra_sae::train::{
    ActivationSource, Member, MemorySource, MultiSession, SingleProcess, TrainConfig, TrainSession,
};
use zephyra_sae::{Architecture, Sae, SaeConfig};

/// Rows of width `d`, different for each `salt`.
fn rows(d: usize, salt: usize) -> Vec<f32> {
    (0..700 * d)
        .map(|i| (((i + salt) * 7919 % 101) as f32 / 50.0 - 1.0) * (1 + (i + salt) % 3) as f32)
        .collect()
}

/// Four dictionaries of different shapes and architectures (the last a skip transcoder 6 → 8 reading
/// rows `[x | y]` of 14), the same rows per step and steps.
fn configs() -> Vec<(TrainConfig, Vec<f32>)> {
    let shapes = [
        SaeConfig::new(6, 24, Architecture::TopK { k: 3 }),
        SaeConfig::new(6, 12, Architecture::Relu),
        SaeConfig::new(8, 32, Architecture::BatchTopK { k: 4 }),
        SaeConfig::transcoder(6, 8, 16, Architecture::TopK { k: 2 }, true),
    ];
    configs_of(shapes, 0, |cfg| {
        cfg.seed = 4;
        cfg.checkpoint_every_tokens = 40 * 10;
    })
}

/// A run of 30 steps of 40 rows on 2 threads for each of `shapes`, its rows salted from `salt`, the
/// configuration then adjusted by `adjust`.
fn configs_of(
    shapes: impl IntoIterator<Item = Result<SaeConfig, zephyra_sae::SaeError>>,
    salt: usize,
    adjust: impl Fn(&mut TrainConfig),
) -> Vec<(TrainConfig, Vec<f32>)> {
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, sae)| {
            let sae = sae.unwrap();
            let d = sae.row_width();
            let mut cfg = TrainConfig::for_sae(sae, 40, 40 * 30);
            cfg.threads = 2;
            cfg.init_rows = 200;
            adjust(&mut cfg);
            (cfg, rows(d, salt + i))
        })
        .collect()
}

fn sources(cfgs: &[(TrainConfig, Vec<f32>)]) -> Vec<Box<dyn ActivationSource>> {
    cfgs.iter()
        .map(|(cfg, r)| {
            Box::new(MemorySource::new(r.clone(), cfg.sae.row_width(), true).unwrap())
                as Box<dyn ActivationSource>
        })
        .collect()
}

/// New runs of every dictionary of `cfgs` under `root/d{i}`.
fn start_members(cfgs: &[(TrainConfig, Vec<f32>)], root: &Path) -> Vec<Member> {
    cfgs.iter()
        .enumerate()
        .map(|(i, (cfg, _))| Member::Start(cfg.clone(), root.join(format!("d{i}"))))
        .collect()
}

fn one_process() -> Box<dyn zephyra_sae::train::Collective + Send> {
    Box::new(SingleProcess)
}

/// Trains every dictionary of [`configs`] together under `root`, stopping after `stop_at` steps.
fn train_together(root: &Path, stop_at: Option<u64>) -> Vec<Sae> {
    let cfgs = configs();
    let members = start_members(&cfgs, root);
    let mut src = sources(&cfgs);
    let mut session = MultiSession::new(members, &mut src, &one_process).unwrap();
    let outcomes = session
        .run(&mut src, &mut |_, p| {
            if Some(p.step) == stop_at {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    assert!(outcomes.iter().all(|o| o.finished == stop_at.is_none()));
    session
        .trainers()
        .iter()
        .map(|t| t.inference_sae())
        .collect()
}

#[test]
fn each_dictionary_trained_together_equals_it_trained_alone() {
    let root = tempfile::tempdir().unwrap();
    let together = train_together(root.path(), None);
    for (i, (cfg, r)) in configs().into_iter().enumerate() {
        let mut src = MemorySource::new(r, cfg.sae.row_width(), true).unwrap();
        let dir = root.path().join(format!("alone{i}"));
        let mut alone = TrainSession::start(cfg, &mut src, Some(&dir), None).unwrap();
        let outcome = alone
            .run(&mut src, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(outcome.finished && outcome.steps == 30);
        assert_eq!(
            together[i],
            alone.trainer().inference_sae(),
            "dictionary {i}"
        );
        // The files too: the same final checkpoint and weights in each run directory.
        for file in ["sae_weights.safetensors", "cfg.json"] {
            let a = std::fs::read(root.path().join(format!("d{i}")).join(file)).unwrap();
            let b = std::fs::read(dir.join(file)).unwrap();
            assert!(a == b, "dictionary {i}: {file} differs");
        }
    }
    // Different dictionaries really differ (the comparison above is not vacuous).
    assert_ne!(together[0], together[1]);
}

/// Dictionaries whose steps use every part of the step workspace, in shapes that grow and shrink from one
/// to the next: relu-unit resampling its dead latents from the row errors, jumprelu's band, gated's own
/// path, matryoshka's prefixes, a skip transcoder's AuxK on dead latents, relu. Trained together they
/// share one workspace (each step finds another dictionary's buffers in it); each still ends bit for bit
/// as trained alone with a workspace of its own.
#[test]
fn dictionaries_sharing_one_step_workspace_equal_them_trained_alone() {
    let groups = zephyra_sae::MatryoshkaWidths::new(&[8, 20, 32]).unwrap();
    let shapes = [
        SaeConfig::new(8, 64, Architecture::ReluUnit),
        SaeConfig::new(6, 12, Architecture::JumpRelu),
        SaeConfig::new(8, 48, Architecture::Gated),
        SaeConfig::new(6, 32, Architecture::Matryoshka { k: 3, groups }),
        SaeConfig::transcoder(6, 8, 96, Architecture::TopK { k: 4 }, true),
        SaeConfig::new(6, 16, Architecture::Relu),
    ];
    let cfgs = configs_of(shapes, 10, |cfg| {
        cfg.seed = 5;
        // Latents die within a few steps: relu-unit resamples them, AuxK trains them.
        cfg.dead_after_tokens = 40;
        if cfg.sae.architecture == Architecture::ReluUnit {
            (cfg.lr, cfg.sparsity_coeff) = (5e-2, 5.0);
            cfg.resample_every_steps = 4;
        }
    });
    let root = tempfile::tempdir().unwrap();
    let mut src = sources(&cfgs);
    let mut session =
        MultiSession::new(start_members(&cfgs, root.path()), &mut src, &one_process).unwrap();
    let outcomes = session
        .run(&mut src, &mut |_, _| ControlFlow::Continue(()))
        .unwrap();
    assert!(outcomes.iter().all(|o| o.finished && o.steps == 30));
    let alone = |cfg: TrainConfig, r: Vec<f32>| {
        let mut src = MemorySource::new(r, cfg.sae.row_width(), true).unwrap();
        let mut t = TrainSession::start(cfg, &mut src, None, None).unwrap();
        assert!(
            t.run(&mut src, &mut |_| ControlFlow::Continue(()))
                .unwrap()
                .finished
        );
        t.trainer().inference_sae()
    };
    for (i, (cfg, r)) in cfgs.iter().enumerate() {
        assert_eq!(
            session.trainers()[i].inference_sae(),
            alone(cfg.clone(), r.clone()),
            "dictionary {i} ({})",
            cfg.sae.architecture
        );
    }
    // The resampling really happened (the row errors it reads are in play).
    let (mut no_resampling, r) = cfgs[0].clone();
    no_resampling.resample_every_steps = 0;
    assert_ne!(
        session.trainers()[0].inference_sae(),
        alone(no_resampling, r)
    );
}

#[test]
fn a_resumed_multi_dictionary_run_equals_an_uninterrupted_one() {
    let whole = tempfile::tempdir().unwrap();
    let expected = train_together(whole.path(), None);

    let part = tempfile::tempdir().unwrap();
    // Stopped at step 15: the checkpoints of step 10 remain.
    train_together(part.path(), Some(15));
    let cfgs = configs();
    let members = cfgs
        .iter()
        .enumerate()
        .map(|(i, (cfg, _))| Member::Resume(part.path().join(format!("d{i}")), Some(cfg.clone())))
        .collect();
    let mut src = sources(&cfgs);
    let mut session = MultiSession::new(members, &mut src, &one_process).unwrap();
    assert!(session.trainers().iter().all(|t| t.step() == 10));
    let outcomes = session
        .run(&mut src, &mut |_, _| ControlFlow::Continue(()))
        .unwrap();
    assert!(outcomes.iter().all(|o| o.finished && o.steps == 30));
    let resumed: Vec<Sae> = session
        .trainers()
        .iter()
        .map(|t| t.inference_sae())
        .collect();
    assert_eq!(resumed, expected);
}

#[test]
fn dictionaries_that_cannot_advance_together_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut cfgs = configs();
    cfgs[1].0.batch_size = 20;
    let members = start_members(&cfgs, root.path());
    let mut src = sources(&cfgs);
    let err = MultiSession::new(members, &mut src, &one_process).unwrap_err();
    assert!(err.to_string().contains("same rows per step"), "{err}");
}

/// Records every reduction of rank 0 of a 2-rank job (returning this rank's values: enough to count).
#[derive(Debug)]
struct Recording(std::sync::Arc<std::sync::Mutex<Vec<(&'static str, usize)>>>);

impl Recording {
    fn log(&self, op: &'static str, len: usize) -> Result<(), zephyra_sae::SaeError> {
        self.0.lock().unwrap().push((op, len));
        Ok(())
    }
}

impl zephyra_sae::train::Collective for Recording {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        2
    }
    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), zephyra_sae::SaeError> {
        self.log("sum_f32", buf.len())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> Result<(), zephyra_sae::SaeError> {
        self.log("sum_f64", buf.len())
    }
    fn sum_u64(&self, buf: &mut [u64]) -> Result<(), zephyra_sae::SaeError> {
        self.log("sum_u64", buf.len())
    }
    fn min_f64(&self, buf: &mut [f64]) -> Result<(), zephyra_sae::SaeError> {
        self.log("min_f64", buf.len())
    }
    fn barrier(&self) -> Result<(), zephyra_sae::SaeError> {
        self.log("barrier", 0)
    }
}

#[test]
fn one_allreduce_carries_every_dictionarys_gradients() {
    let root = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let comm =
        || -> Box<dyn zephyra_sae::train::Collective + Send> { Box::new(Recording(log.clone())) };
    let cfgs = configs();
    let members = start_members(&cfgs, root.path());
    let mut src = sources(&cfgs);
    let mut session = MultiSession::new(members, &mut src, &comm).unwrap();
    session
        .run(&mut src, &mut |_, p| {
            if p.step == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    let n_params: usize = session
        .trainers()
        .iter()
        .map(|t| {
            t.training_sae()
                .params()
                .iter()
                .map(|(_, v)| v.len())
                .sum::<usize>()
        })
        .sum();
    let latents: usize = cfgs.iter().map(|(c, _)| c.sae.d_sae).sum();
    let calls = log.lock().unwrap().clone();
    // Per step, for the four dictionaries together: one gradient sum, one of the stats (8 values and the
    // row sums of the target, d_out wide, each), one minimum, one of the fire counts.
    let step = vec![
        ("sum_f32", n_params),
        ("sum_f64", (8 + 6) * 2 + (8 + 8) * 2),
        ("min_f64", 4),
        ("sum_u64", latents),
    ];
    assert_eq!(calls, [step.clone(), step.clone(), step].concat());
}
