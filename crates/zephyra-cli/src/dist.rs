//! Running under `mpirun` (cargo feature `mpi`): MPI start-up, the [`Collective`] over `MPI_COMM_WORLD`
//! that data-parallel training reduces with, and aborting the whole job when one rank fails.
//!
//! Without the feature (or when the process was not started by `mpirun`), [`collective`] is the
//! single-process no-op and everything behaves as a plain run.

use zephyra_sae::train::{Collective, SingleProcess};

/// The MPI environment for the life of `main` (finalised on drop); `None` when not under `mpirun`.
#[cfg(feature = "mpi")]
pub type Session = Option<mpi::environment::Universe>;
/// Nothing to hold without the `mpi` feature.
#[cfg(not(feature = "mpi"))]
pub type Session = Option<std::convert::Infallible>;

/// Starts MPI when this process was launched by `mpirun`/`srun` (their environment variables are set).
#[cfg(feature = "mpi")]
pub fn init() -> Session {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !launched {
        return None;
    }
    // The trainer calls MPI from one rayon worker at a time: serialized is enough.
    let (universe, _provided) = mpi::initialize_with_threading(mpi::Threading::Serialized)?;
    Some(universe)
}

/// Nothing to start without the `mpi` feature.
#[cfg(not(feature = "mpi"))]
pub fn init() -> Session {
    None
}

/// This process's rank and the number of ranks (`(0, 1)` outside `mpirun`).
pub fn rank_and_size() -> (usize, usize) {
    #[cfg(feature = "mpi")]
    if mpi::environment::is_initialized() {
        use mpi::traits::Communicator;
        let w = mpi::topology::SimpleCommunicator::world();
        return (w.rank() as usize, w.size() as usize);
    }
    (0, 1)
}

/// The collective to train with: MPI over all ranks under `mpirun`, otherwise one process. A binary
/// built without the `mpi` feature but started by `mpirun -np N` (N > 1) refuses: every rank would
/// otherwise run the whole job on its own and they would overwrite each other's files.
pub fn collective() -> anyhow::Result<Box<dyn Collective + Send>> {
    #[cfg(feature = "mpi")]
    if rank_and_size().1 > 1 {
        return Ok(Box::new(mpi_impl::MpiCollective::world()));
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = launcher_world_size().filter(|&n| n > 1) {
        anyhow::bail!(
            "started by mpirun with {n} processes, but this zephyra was built without MPI support: \
             rebuild with `cargo build --release -p zephyra-cli --features mpi` (needs OpenMPI), \
             or run without mpirun"
        );
    }
    Ok(Box::new(SingleProcess))
}

/// The world size the MPI launcher announced in the environment, if any.
#[cfg(not(feature = "mpi"))]
fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Waits for every rank (no-op in one process).
pub fn barrier() {
    #[cfg(feature = "mpi")]
    if rank_and_size().1 > 1 {
        use mpi::traits::CommunicatorCollectives;
        mpi::topology::SimpleCommunicator::world().barrier();
    }
}

/// Refuses to run a subcommand that has no parallel implementation (all but `train` and `harvest`) as more than
/// one rank: each rank would redo the whole job and overwrite the others' files.
pub fn check_parallel(command: &str, supported: bool) -> anyhow::Result<()> {
    #[cfg(feature = "mpi")]
    let size = rank_and_size().1;
    #[cfg(not(feature = "mpi"))]
    let size = launcher_world_size().unwrap_or(1);
    #[cfg(not(feature = "mpi"))]
    if size > 1 {
        anyhow::bail!(
            "started by mpirun with {size} processes, but this zephyra was built without MPI support: \
             rebuild with `cargo build --release -p zephyra-cli --features mpi` (needs OpenMPI), \
             or run `zephyra {command}` without mpirun"
        );
    }
    if size > 1 && !supported {
        anyhow::bail!(
            "`zephyra {command}` does not run under mpirun ({size} processes): only `zephyra train` and \
             `zephyra harvest` run in parallel; run `zephyra {command}` as one process"
        );
    }
    Ok(())
}

/// After `err` on this rank of a parallel job: prints it with the rank and aborts every rank
/// (`MPI_Abort`), so the others do not wait forever in a collective. Returns in a plain run.
pub fn abort_job_on_error(err: &anyhow::Error) {
    let (rank, size) = rank_and_size();
    if size <= 1 {
        return;
    }
    eprintln!("error on MPI rank {rank} of {size}: {err:#}");
    eprintln!("aborting all ranks; continue a training run with `mpirun -np {size} zephyra train --resume DIR`");
    #[cfg(feature = "mpi")]
    {
        use mpi::traits::Communicator;
        mpi::topology::SimpleCommunicator::world().abort(2);
    }
}

#[cfg(feature = "mpi")]
mod mpi_impl {
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence};
    use zephyra_sae::train::Collective;
    use zephyra_sae::SaeError;

    /// Values per MPI call (counts are C ints).
    const CHUNK: usize = 1 << 28;

    /// `MPI_COMM_WORLD` as a [`Collective`]. MPI is initialised with `Threading::Serialized`: the trainer
    /// that owns this value moves between rayon threads but makes one call at a time.
    #[derive(Debug)]
    pub struct MpiCollective {
        rank: usize,
        size: usize,
    }

    impl MpiCollective {
        pub fn world() -> Self {
            let world = SimpleCommunicator::world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Self { rank, size }
        }

        fn reduce<T: Equivalence + Copy>(&self, buf: &mut [T], op: SystemOperation) {
            let world = SimpleCommunicator::world();
            for chunk in buf.chunks_mut(CHUNK) {
                let send = chunk.to_vec();
                world.all_reduce_into(&send[..], chunk, op);
            }
        }
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.size
        }
        fn sum_f32(&self, buf: &mut [f32]) -> Result<(), SaeError> {
            self.reduce(buf, SystemOperation::sum());
            Ok(())
        }
        fn sum_f64(&self, buf: &mut [f64]) -> Result<(), SaeError> {
            self.reduce(buf, SystemOperation::sum());
            Ok(())
        }
        fn sum_u64(&self, buf: &mut [u64]) -> Result<(), SaeError> {
            self.reduce(buf, SystemOperation::sum());
            Ok(())
        }
        fn min_f64(&self, buf: &mut [f64]) -> Result<(), SaeError> {
            self.reduce(buf, SystemOperation::min());
            Ok(())
        }
        fn barrier(&self) -> Result<(), SaeError> {
            SimpleCommunicator::world().barrier();
            Ok(())
        }
    }
}
