//! Long calls: the work runs on a thread of its own with the GIL released while the calling thread watches
//! for Ctrl-C, and an optional progress bar on stderr.
//!
//! Python runs signal handlers only on the main thread, and the libraries call their progress callbacks on
//! their worker threads, so the calling thread polls `Python::check_signals` every 50 ms (with the GIL
//! released in between, so that a Python hook called by the work can run). On a signal it raises the cancel
//! flag, which the work polls (a training step's progress callback returns `Break`, a harvest's model
//! refuses the next batch, a generation's [`Cancel::guard`] hook aborts the next forward pass, a feature
//! pass checkpoints and stops), waits for the work to stop cleanly, and raises the signal's exception
//! (`KeyboardInterrupt` for SIGINT).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use zephyra_lm::{HookPoint, Hooks, LmError, Tensor};

/// Set when the caller was interrupted: the work should stop at its next check.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Whether the work should stop.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for library calls that take one.
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }

    /// Adds to `hooks` a check that aborts the model's next forward pass once the flag is set (a generation
    /// then stops before its next token); otherwise the identity.
    pub fn guard<'a>(&'a self, hooks: &mut Hooks<'a>) {
        hooks.replace(HookPoint::ResidPre(0), move |_, x: &Tensor| {
            if self.is_set() {
                Err(LmError::InvalidInput(INTERRUPTED.into()))
            } else {
                Ok(x.clone())
            }
        });
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The message of the error a cancelled library call returns (it is replaced by the Python exception).
pub const INTERRUPTED: &str = "interrupted from Python (Ctrl-C)";

/// Runs `work` on a new thread without the GIL; see the module header. `work`'s result is returned
/// unless a signal handler raised, in which case that exception is (after `work` has stopped).
pub fn run<T: Send>(py: Python<'_>, work: impl FnOnce(&Cancel) -> T + Send) -> PyResult<T> {
    let cancel = Cancel::default();
    let mut raised: Option<PyErr> = None;
    let joined = std::thread::scope(|scope| {
        let worker = {
            let cancel = cancel.clone();
            scope.spawn(move || work(&cancel))
        };
        while !worker.is_finished() {
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            if raised.is_none() {
                if let Err(e) = py.check_signals() {
                    cancel.set();
                    raised = Some(e);
                }
            }
        }
        worker.join()
    });
    if let Some(e) = raised {
        return Err(e);
    }
    joined.map_err(|_| PyRuntimeError::new_err("the Zephyra worker thread panicked"))
}

/// A progress bar on stderr of `len` units (`template` as indicatif takes it), or a hidden one.
pub fn bar(show: bool, len: u64, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
