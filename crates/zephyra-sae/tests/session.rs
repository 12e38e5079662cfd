//! [`TrainSession`], the one way callers set up training: the same weights as a [`Trainer`] driven by hand
//! in a pool of the configured threads, and a configuration refused before any thread is started.

use std::ops::ControlFlow;

use zephyra_sae::train::{MemorySource, TrainConfig, TrainSession, Trainer};
use zephyra_sae::{Architecture, SaeError};

fn rows() -> Vec<f32> {
    (0..600 * 6)
        .map(|i| ((i * 7919 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32)
        .collect()
}

fn config() -> TrainConfig {
    let mut cfg = TrainConfig::new(6, 24, Architecture::TopK { k: 3 }, 40, 40 * 30).unwrap();
    cfg.threads = 2;
    cfg.init_rows = 200;
    cfg
}

#[test]
fn a_session_trains_what_a_trainer_in_a_pool_of_its_threads_trains() {
    let mut src = MemorySource::new(rows(), 6, true).unwrap();
    let mut session = TrainSession::start(config(), &mut src, None, None).unwrap();
    let outcome = session
        .run(&mut src, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(outcome.finished && outcome.steps == 30);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut src = MemorySource::new(rows(), 6, true).unwrap();
    let by_hand = pool.install(|| {
        let mut t = Trainer::new(config(), &mut src, None).unwrap();
        t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
        t.inference_sae()
    });
    assert_eq!(session.trainer().inference_sae(), by_hand);
}

#[test]
fn a_bad_configuration_is_refused_before_threads_start() {
    let mut cfg = config();
    cfg.threads = 100_000;
    let mut src = MemorySource::new(rows(), 6, true).unwrap();
    let err = TrainSession::start(cfg, &mut src, None, None).unwrap_err();
    assert!(
        matches!(&err, SaeError::InvalidConfig { option, .. } if option == "--threads"),
        "{err}"
    );
}
