//! Data-parallel training through [`Collective`] without MPI: two ranks on two threads with a
//! shared-memory collective train the same SAE as one process on the same global batches (to float32
//! rounding), and both ranks end bit-identical. (The MPI implementation is tested by `zephyra-cli`'s
//! `tests/mpi.rs` under `mpirun -np 2`.)

use std::ops::ControlFlow;
use std::sync::{Arc, Barrier, Mutex};

use rand::{Rng, SeedableRng};
use zephyra_sae::train::{Collective, MemorySource, TrainConfig, Trainer};
use zephyra_sae::{Architecture, Sae, SaeConfig, SaeError};

const D_IN: usize = 12;

/// Rows with a few shared directions plus noise (so latents are learnable and some die).
fn synthetic(n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let dirs: Vec<f32> = (0..4 * D_IN).map(|_| rng.random::<f32>() - 0.5).collect();
    let mut out = Vec::with_capacity(n * D_IN);
    for _ in 0..n {
        let c: Vec<f32> = (0..4).map(|_| rng.random::<f32>() * 2.0).collect();
        for j in 0..D_IN {
            let v: f32 = (0..4).map(|i| c[i] * dirs[i * D_IN + j]).sum();
            out.push(v + 0.05 * (rng.random::<f32>() - 0.5));
        }
    }
    out
}

fn config(arch: Architecture) -> TrainConfig {
    let mut cfg = TrainConfig::for_sae(SaeConfig::new(D_IN, 48, arch).unwrap(), 40, 40 * 60);
    cfg.seed = 9;
    cfg.threads = 1;
    cfg.init_rows = 200;
    cfg.dead_after_tokens = 200;
    cfg.resample_every_steps = 20;
    cfg
}

/// Ranks on threads: each reduction writes this rank's values, waits, reduces all slots in rank order.
#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
}

#[derive(Debug)]
struct ThreadCollective {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl ThreadCollective {
    fn reduce(&self, vals: Vec<f64>, op: fn(f64, f64) -> f64) -> Vec<f64> {
        self.shared.slots.lock().unwrap()[self.rank] = vals;
        self.shared.barrier.wait();
        let out = {
            let slots = self.shared.slots.lock().unwrap();
            let mut acc = slots[0].clone();
            for s in &slots[1..] {
                assert_eq!(s.len(), acc.len(), "ranks reduced different lengths");
                for (a, &b) in acc.iter_mut().zip(s) {
                    *a = op(*a, b);
                }
            }
            acc
        };
        self.shared.barrier.wait();
        out
    }
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), SaeError> {
        // f64 sum of two f32 values is exact; rounding it back is the f32 sum.
        let r = self.reduce(buf.iter().map(|&v| v as f64).collect(), |a, b| a + b);
        buf.iter_mut().zip(r).for_each(|(d, v)| *d = v as f32);
        Ok(())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> Result<(), SaeError> {
        let r = self.reduce(buf.to_vec(), |a, b| a + b);
        buf.copy_from_slice(&r);
        Ok(())
    }
    fn sum_u64(&self, buf: &mut [u64]) -> Result<(), SaeError> {
        let r = self.reduce(buf.iter().map(|&v| v as f64).collect(), |a, b| a + b);
        buf.iter_mut().zip(r).for_each(|(d, v)| *d = v as u64);
        Ok(())
    }
    fn min_f64(&self, buf: &mut [f64]) -> Result<(), SaeError> {
        let r = self.reduce(buf.to_vec(), f64::min);
        buf.copy_from_slice(&r);
        Ok(())
    }
    fn barrier(&self) -> Result<(), SaeError> {
        self.shared.barrier.wait();
        Ok(())
    }
}

fn one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(f)
}

fn train_single(arch: Architecture, rows: &[f32]) -> Sae {
    one_thread(|| {
        let mut src = MemorySource::new(rows.to_vec(), D_IN, true).unwrap();
        let mut t = Trainer::new(config(arch), &mut src, None).unwrap();
        let out = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
        assert!(out.finished);
        t.training_sae().clone()
    })
}

fn train_parallel(arch: Architecture, rows: &[f32], world: usize) -> Vec<Sae> {
    let shared = Arc::new(Shared {
        barrier: Barrier::new(world),
        slots: Mutex::new(vec![Vec::new(); world]),
    });
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let rows = rows.to_vec();
            let comm = ThreadCollective {
                rank,
                world,
                shared: shared.clone(),
            };
            std::thread::spawn(move || {
                one_thread(move || {
                    let mut src = MemorySource::new(rows, D_IN, true).unwrap();
                    let mut t =
                        Trainer::new_with(config(arch), &mut src, None, Box::new(comm)).unwrap();
                    let out = t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
                    assert!(out.finished);
                    t.training_sae().clone()
                })
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn max_rel_diff(a: &Sae, b: &Sae) -> f64 {
    let mut worst = 0.0f64;
    for ((_, x), (_, y)) in a.params().into_iter().zip(b.params()) {
        let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6) as f64;
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() as f64 / scale);
        }
    }
    worst
}

#[test]
fn two_ranks_on_threads_match_one_process() {
    let rows = synthetic(1000);
    for arch in [
        Architecture::TopK { k: 3 },
        Architecture::Relu,
        Architecture::ReluUnit,
        Architecture::JumpRelu,
        Architecture::Gated,
    ] {
        let single = train_single(arch, &rows);
        let ranks = train_parallel(arch, &rows, 2);
        assert!(
            ranks[0] == ranks[1],
            "{arch}: the ranks diverged (they must apply identical steps)"
        );
        let diff = max_rel_diff(&single, &ranks[0]);
        assert!(
            diff < 1e-4,
            "{arch}: 2 ranks differ from 1 process by {diff}"
        );
    }
    // Three ranks (uneven 14/13/13-row slices) too.
    let three = train_parallel(Architecture::TopK { k: 3 }, &rows, 3);
    let diff = max_rel_diff(&train_single(Architecture::TopK { k: 3 }, &rows), &three[0]);
    assert!(diff < 1e-4, "3 ranks differ from 1 process by {diff}");
}

#[test]
fn resume_refuses_another_world_size() {
    let rows = synthetic(400);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cfg = config(Architecture::TopK { k: 3 });
    cfg.total_tokens = 40 * 10;
    cfg.checkpoint_every_tokens = 40 * 5;
    one_thread(|| {
        let mut src = MemorySource::new(rows.clone(), D_IN, true).unwrap();
        let mut t = Trainer::new(cfg.clone(), &mut src, Some(&run)).unwrap();
        t.run(&mut src, &mut |_| ControlFlow::Continue(())).unwrap();
    });
    let shared = Arc::new(Shared {
        barrier: Barrier::new(2),
        slots: Mutex::new(vec![Vec::new(); 2]),
    });
    let comm = ThreadCollective {
        rank: 0,
        world: 2,
        shared,
    };
    let mut src = MemorySource::new(rows, D_IN, true).unwrap();
    let err = Trainer::resume_with(&run, Some(&cfg), &mut src, Box::new(comm)).unwrap_err();
    assert!(
        matches!(&err, SaeError::ConfigMismatch { differences }
            if differences.iter().any(|d| d.to_string().starts_with("world size: 1 → 2"))),
        "{err}"
    );
}
