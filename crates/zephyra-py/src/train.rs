//! `zephyra.train`: train an SAE on a numpy array (read in place), a `.npy` file or an activation store,
//! through the same `TrainSession` as `zephyra train`, resumable, interruptible with Ctrl-C.

use std::collections::HashSet;
use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use zephyra_data::source::BufferedSource;
use zephyra_data::ActivationStore;
use zephyra_sae::checkpoint::{TrainingState, STATE_FILE};
use zephyra_sae::npy::{NpyFile, NpyOrder, NpySource};
use zephyra_sae::train::{
    check_resume, evaluate, ActivationSource, MemorySource, Progress, TrainConfig, TrainSession,
};
use zephyra_sae::SaeConfig;

use crate::arrays::{self, Rows};
use crate::errors::ToPy;
use crate::interrupt::{self, Cancel};
use crate::sae::PySae;
use crate::train_options::{TrainOptions, DEFAULT_BATCH_ROWS, DEFAULT_EXPANSION, DEFAULT_TOKENS};

/// The `.npy` / in-memory record of the rows held out, under the CLI's name (runs resume across both).
const HOLDOUT: &str = "--holdout";
const NO_SHUFFLE: &str = "--no-shuffle";
/// Mixed into `seed` for the order of the rows, as `zephyra train` mixes it for a `.npy` file (an array and
/// the same rows saved as `.npy` train alike).
const SHUFFLE_SEED: u64 = 0x5EED_DA7A;

/// Where the rows come from.
enum Data<'py> {
    Memory(Rows<'py>),
    Npy(PathBuf),
    Store(PathBuf),
}

impl<'py> Data<'py> {
    fn from_py(acts: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(path) = acts.extract::<PathBuf>() {
            return if path.is_dir() {
                Ok(Data::Store(path))
            } else if path.is_file() {
                Ok(Data::Npy(path))
            } else {
                Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
                    "{}: no such file or directory (give a float32 array, a .npy file or a store made by harvest)",
                    path.display()
                )))
            };
        }
        Ok(Data::Memory(arrays::rows(acts, "acts", None)?))
    }

    /// What the worker thread reads: the array's values (borrowed) or the path.
    fn view(&self) -> PyResult<View<'_>> {
        Ok(match self {
            Data::Memory(rows) => View::Memory {
                values: rows.as_slice()?,
                width: rows.width,
            },
            Data::Npy(path) => View::Npy(path),
            Data::Store(dir) => View::Store(dir),
        })
    }
}

/// [`Data`] without the Python object: `Send`, for the worker thread.
#[derive(Clone, Copy)]
enum View<'a> {
    Memory { values: &'a [f32], width: usize },
    Npy(&'a Path),
    Store(&'a Path),
}

/// Rows held out of `n` for `holdout` (a count, or a fraction below 1) [default: min(8192, n/5)].
fn held_rows(holdout: Option<f64>, n: usize) -> PyResult<usize> {
    Ok(match holdout {
        Some(h) if h < 0.0 || !h.is_finite() => {
            return Err(PyValueError::new_err(format!("holdout={h} must be ≥ 0")))
        }
        Some(h) if h < 1.0 => (n as f64 * h).round() as usize,
        Some(h) => h as usize,
        None => 8192.min(n / 5),
    })
}

type Sources<'a> = (
    Box<dyn ActivationSource + 'a>,
    Option<Box<dyn ActivationSource + 'a>>,
);

/// The training and held-out sources of `data`.
fn open<'a>(data: View<'a>, reading: Reading, seed: u64) -> PyResult<(Sources<'a>, usize)> {
    let Reading {
        holdout,
        shuffle,
        shuffle_buffer,
    } = reading;
    let split = |n: usize| -> PyResult<usize> {
        let held = held_rows(holdout, n)?;
        if n == 0 || held >= n {
            return Err(PyValueError::new_err(format!(
                "holdout of {held} rows leaves no training rows out of {n}"
            )));
        }
        Ok(held)
    };
    Ok(match data {
        View::Memory { values, width } => {
            let n = values.len() / width.max(1);
            let held = split(n)?;
            let cut = (n - held) * width;
            let train =
                MemorySource::new(&values[..cut], width, true).py_context(|| "acts".into())?;
            let train = if shuffle {
                train
                    .shuffled(seed ^ SHUFFLE_SEED)
                    .py_context(|| "acts".into())?
            } else {
                train
            };
            let eval =
                MemorySource::new(&values[cut..], width, false).py_context(|| "acts".into())?;
            (
                (Box::new(train), (held > 0).then(|| Box::new(eval) as _)),
                held,
            )
        }
        View::Npy(path) => {
            let open = || NpyFile::open(path).py_context(|| format!("opening {}", path.display()));
            let n = open()?.n_rows();
            let held = split(n)?;
            let order = NpyOrder {
                shuffle,
                repeat: true,
                seed: seed ^ SHUFFLE_SEED,
            };
            let train = NpySource::new(open()?, 0..n - held, order)
                .py_context(|| path.display().to_string())?;
            let once = NpyOrder {
                shuffle: false,
                repeat: false,
                seed: 0,
            };
            let eval = match held {
                0 => None,
                _ => Some(Box::new(
                    NpySource::new(open()?, n - held..n, once)
                        .py_context(|| path.display().to_string())?,
                ) as _),
            };
            ((Box::new(train), eval), held)
        }
        View::Store(dir) => {
            let store = ActivationStore::open(dir)
                .py_context(|| format!("opening the activation store {}", dir.display()))?;
            (
                (
                    Box::new(BufferedSource::store(store, shuffle_buffer, seed, true)),
                    None,
                ),
                0,
            )
        }
    })
}

/// An output folder of a new run, and what it held before: a run that fails or is interrupted before its
/// first checkpoint leaves it as it was.
struct Fresh {
    dir: PathBuf,
    existed: bool,
    before: HashSet<OsString>,
}

impl Fresh {
    fn claim(dir: &Path) -> PyResult<Self> {
        let names = |d: &Path| -> HashSet<OsString> {
            std::fs::read_dir(d)
                .map(|it| it.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        };
        if dir.exists() && !dir.is_dir() {
            return Err(PyValueError::new_err(format!(
                "out={}: a file of that name exists; give a folder",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            existed: dir.is_dir(),
            before: names(dir),
        })
    }

    fn discard_unless_checkpointed(&self) {
        if self.dir.join(STATE_FILE).exists() {
            return;
        }
        if !self.existed {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if !self.before.contains(&entry.file_name()) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

/// What the SAE records about its data (`hook`, `model_name`, `context_size`; a store's own otherwise).
#[derive(Debug, Default, Clone)]
pub struct Provenance {
    pub hook: Option<String>,
    pub model_name: Option<String>,
    pub context_size: Option<usize>,
}

fn record(cfg: &mut TrainConfig, data: View<'_>, prov: &Provenance) -> PyResult<()> {
    let meta = &mut cfg.sae.metadata;
    meta.hook_name = prov.hook.clone();
    meta.model_name = prov.model_name.clone();
    meta.context_size = prov.context_size;
    if let View::Store(dir) | View::Npy(dir) = data {
        meta.extra.insert("acts".into(), serde_json::json!(dir));
    }
    if let View::Store(dir) = data {
        let store = ActivationStore::open(dir).py_context(|| dir.display().to_string())?;
        let m = store.manifest();
        meta.hook_name.get_or_insert_with(|| m.hook.clone());
        meta.context_size.get_or_insert(m.ctx);
        if meta.model_name.is_none() {
            meta.model_name = Path::new(&m.model.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// How the rows are read.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Rows held out at the end of an array or `.npy` (a count, or a fraction below 1).
    pub holdout: Option<f64>,
    /// Each pass over an array or `.npy` in its own shuffled order.
    pub shuffle: bool,
    /// Rows of a store's shuffle buffer.
    pub shuffle_buffer: usize,
}

/// The run folder: none (the SAE is only returned), a new run's, or the one of a run to resume.
#[derive(Debug, Clone)]
pub enum Folder {
    Unsaved,
    New(PathBuf),
    Resume(PathBuf),
}

impl Folder {
    /// From `train`'s `out=` and `resume=`.
    pub fn new(out: Option<PathBuf>, resume: Option<PathBuf>) -> PyResult<Self> {
        match (out, resume) {
            (Some(_), Some(_)) => Err(PyValueError::new_err(
                "give out= for a new run or resume= to continue one, not both",
            )),
            (Some(dir), None) => Ok(Folder::New(dir)),
            (None, Some(dir)) => Ok(Folder::Resume(dir)),
            (None, None) => Ok(Folder::Unsaved),
        }
    }

    /// The folder of a new run.
    fn new_run(&self) -> Option<&Path> {
        match self {
            Folder::New(dir) => Some(dir),
            _ => None,
        }
    }
}

/// Everything `train` was given besides the training options.
pub struct Job {
    pub folder: Folder,
    pub reading: Reading,
    pub provenance: Provenance,
    pub progress: bool,
    /// Sleep after each step (tests interrupt a run mid-way with it).
    pub step_delay_ms: u64,
}

/// Trains as `job` and `opts` say; see `zephyra.train`'s docstring.
pub fn train(
    py: Python<'_>,
    acts: &Bound<'_, PyAny>,
    opts: TrainOptions,
    job: Job,
) -> PyResult<PySae> {
    let data = Data::from_py(acts)?;
    let fresh = job.folder.new_run().map(Fresh::claim).transpose()?;
    let bar = interrupt::bar(
        job.progress,
        0,
        "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}",
    );
    let view = data.view()?;
    let result = interrupt::run(py, |cancel| run(view, &opts, &job, cancel, &bar));
    bar.finish_and_clear();
    let outcome = result.and_then(|r| r);
    if outcome.is_err() {
        if let Some(f) = &fresh {
            f.discard_unless_checkpointed();
        }
    }
    let (sae, summary, dir) = outcome?;
    let out = PySae::new(sae, dir);
    out.set_summary(summary);
    Ok(out)
}

type Trained = (zephyra_sae::Sae, serde_json::Value, Option<PathBuf>);

fn run(
    data: View<'_>,
    opts: &TrainOptions,
    job: &Job,
    cancel: &Cancel,
    bar: &indicatif::ProgressBar,
) -> PyResult<Trained> {
    let (mut session, (mut source, eval), dir) = match &job.folder {
        Folder::Resume(dir) => {
            let state =
                TrainingState::load(dir).py_context(|| format!("resuming {}", dir.display()))?;
            let saved = state.meta.config.clone();
            let mut expected = saved.clone();
            opts.apply_shape(&mut expected)?;
            opts.apply(&mut expected)?;
            let held: Option<f64> = saved.data.get(HOLDOUT).and_then(|h| h.parse().ok());
            let shuffle = saved.data.get(NO_SHUFFLE) != Some("true");
            let reading = Reading {
                holdout: held,
                shuffle,
                ..job.reading
            };
            let (sources, _) = open(data, reading, saved.seed)?;
            check_resume(&saved, &expected).py_context(|| format!("resuming {}", dir.display()))?;
            let mut sources = sources;
            let session = TrainSession::resume(dir, Some(&expected), sources.0.as_mut(), None)
                .py_context(|| format!("resuming {}", dir.display()))?;
            (session, sources, Some(dir.clone()))
        }
        _ => {
            let seed = opts.seed.unwrap_or(0);
            let (mut sources, held) = open(data, job.reading, seed)?;
            let d_in = sources.0.d_in();
            let expansion = opts.expansion.unwrap_or(DEFAULT_EXPANSION);
            let sae = SaeConfig::new(
                d_in,
                expansion.saturating_mul(d_in),
                opts.new_architecture()?,
            )
            .py_context(|| "arch/k/expansion".into())?;
            let tokens = opts.tokens.unwrap_or(DEFAULT_TOKENS);
            let mut cfg =
                TrainConfig::for_sae(sae, opts.batch_rows.unwrap_or(DEFAULT_BATCH_ROWS), tokens);
            cfg.checkpoint_every_tokens = (tokens / 10).max(1);
            opts.apply(&mut cfg)?;
            if !matches!(data, View::Store(_)) {
                cfg.data.set(NO_SHUFFLE, !job.reading.shuffle);
                cfg.data.set(HOLDOUT, held);
            }
            record(&mut cfg, data, &job.provenance)?;
            let out = job.folder.new_run();
            let session = TrainSession::start(cfg, sources.0.as_mut(), out, None)
                .py_context(|| "starting the training run".into())?;
            (session, sources, out.map(Path::to_path_buf))
        }
    };
    let total = session.trainer().config().total_steps();
    bar.set_length(total);
    bar.set_position(session.trainer().step());
    let mut on_step = |p: &Progress| {
        bar.set_position(p.step);
        bar.set_message(format!(
            "{:.0} tok/s  loss {:.4}  L0 {:.1}  FVE {:.3}",
            p.tokens_per_s, p.loss, p.l0, p.fve
        ));
        if job.step_delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(job.step_delay_ms));
        }
        if cancel.is_set() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let outcome = session
        .run(source.as_mut(), &mut on_step)
        .py_context(|| "training".into())?;
    if cancel.is_set() {
        return Err(PyValueError::new_err(interrupt::INTERRUPTED));
    }
    let trainer = session.trainer();
    let sae = trainer.inference_sae();
    let held = match eval {
        Some(mut e) => Some(
            session
                .install(|| evaluate(&sae, e.as_mut(), 1024, u64::MAX))
                .py_context(|| "evaluating on the held-out rows".into())?,
        ),
        None => None,
    };
    let summary = session.trainer().summary(&outcome, held);
    if let Some(dir) = &dir {
        summary
            .write(dir)
            .py_context(|| format!("writing the summary into {}", dir.display()))?;
    }
    let summary = serde_json::to_value(&summary).unwrap_or(serde_json::Value::Null);
    Ok((sae, summary, dir))
}
