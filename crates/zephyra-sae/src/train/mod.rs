//! Training: the loop ([`Trainer`]), its configuration ([`TrainConfig`]), activation sources
//! ([`ActivationSource`]) and held-out evaluation ([`evaluate`]).
//!
//! One step: fill the batch buffer (dropping NaN/Inf rows), scale by the input factor, forward/backward,
//! project the decoder gradient (unit-norm decoders), clip by global norm, Adam, post-step
//! (renormalise decoders, refresh thresholds), update the batchtopk threshold estimate, update the
//! tokens-since-fired counters (the dead mask feeds AuxK and relu-unit resampling), metrics, checkpoint.
//! Data-parallel runs ([`Collective`]) split each global batch across ranks and sum the gradients.
//! Several dictionaries from one forward pass step together in a [`MultiTrainer`] ([`MultiSession`]).

mod batch;
pub mod collective;
pub mod config;
pub mod cursor;
pub mod eval;
pub mod multi;
pub mod resume;
pub mod session;
pub mod source;
pub mod summary;
mod trainer;
pub mod zip;

pub use batch::fill_batch;
pub use collective::{Collective, SingleProcess};
pub use config::{BDecInit, NonFinitePolicy, ThresholdInit, TrainConfig};
pub use cursor::Cursor;
pub use eval::{evaluate, EvalStats};
pub use multi::{Member, MultiSession, MultiTrainer, StepTimes};
pub use resume::{check_resume, DataOptions, Difference};
pub use session::TrainSession;
pub use source::{ActivationSource, MemorySource};
pub use summary::{PrefixFve, TrainSummary, SUMMARY_FILE};
pub use trainer::{Progress, RngState, RunOutcome, StateMeta, Trainer, METRICS_FILE, STATE_FORMAT};
pub use zip::ZipSource;
