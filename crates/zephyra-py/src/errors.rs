//! Rust errors as Python exceptions.
//!
//! Each crate's error enum becomes its class in `zephyra.errors` (`ModelError`, `SaeError`, `DataError`,
//! `AnalysisError`, all subclasses of `ZephyraError`); a variant that means "this path could not be read or
//! written" becomes `ZephyraOSError` (also an `OSError`), one that means "this argument is wrong" becomes
//! `ZephyraValueError` (also a `ValueError`). The message is the error and its chain of sources, as the
//! CLI prints it.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use zephyra_analysis::AnalysisError;
use zephyra_data::DataError;
use zephyra_lm::LmError;
use zephyra_sae::SaeError;

/// The Python class an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Sae,
    Data,
    Analysis,
    Os,
    Value,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Model => "ModelError",
            Kind::Sae => "SaeError",
            Kind::Data => "DataError",
            Kind::Analysis => "AnalysisError",
            Kind::Os => "ZephyraOSError",
            Kind::Value => "ZephyraValueError",
        }
    }
}

/// `err` and its sources, joined with ": " (like anyhow's `{:#}`), without repeating a source whose text
/// the outer message already contains.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A `zephyra.errors` exception of `kind` with `message`.
pub fn raise(kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let class = py
            .import("zephyra.errors")
            .and_then(|m| m.getattr(kind.class_name()));
        match class {
            Ok(class) => match class.call1((message.clone(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            // The package's Python half is missing (a bare `_zephyra` import): still say what failed.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// `Os` for a path that could not be read or written, `Value` for a wrong argument, `otherwise` else.
fn pick(os: bool, value: bool, otherwise: Kind) -> Kind {
    if os {
        Kind::Os
    } else if value {
        Kind::Value
    } else {
        otherwise
    }
}

fn lm_kind(e: &LmError) -> Kind {
    use LmError as E;
    let os = matches!(e, E::Io { .. } | E::File(_) | E::ModelNotFound { .. });
    let value = matches!(
        e,
        E::UnknownHook { .. }
            | E::LayerOutOfRange { .. }
            | E::TokenOutOfRange { .. }
            | E::InvalidInput(_)
            | E::HookShape { .. }
    );
    pick(os, value, Kind::Model)
}

fn sae_kind(e: &SaeError) -> Kind {
    use SaeError as E;
    let value = matches!(
        e,
        E::ShapeMismatch { .. }
            | E::InvalidConfig { .. }
            | E::UnknownArchitecture(_)
            | E::ConfigMismatch { .. }
    );
    pick(matches!(e, E::Io { .. } | E::File(_)), value, Kind::Sae)
}

fn data_kind(e: &DataError) -> Kind {
    match e {
        DataError::MissingPath { .. } | DataError::Io { .. } | DataError::File(_) => Kind::Os,
        DataError::InvalidOption { .. } | DataError::CtxTooLarge { .. } => Kind::Value,
        DataError::Lm(inner) => lm_kind(inner),
        _ => Kind::Data,
    }
}

fn analysis_kind(e: &AnalysisError) -> Kind {
    match e {
        AnalysisError::Io { .. } | AnalysisError::File(_) => Kind::Os,
        AnalysisError::InvalidArgument(_)
        | AnalysisError::ShapeMismatch { .. }
        | AnalysisError::WidthMismatch { .. }
        | AnalysisError::ModelMismatch { .. } => Kind::Value,
        AnalysisError::Sae(inner) => sae_kind(inner),
        AnalysisError::Data(inner) => data_kind(inner),
        _ => Kind::Analysis,
    }
}

/// An error of the crates that has a Python class.
pub trait Raise {
    /// The Python exception, with `context` ("loading the SAE from runs/l15") before the message.
    fn raise(&self, context: &str) -> PyErr;
}

macro_rules! raise_as {
    ($error:ty, $kind:ident) => {
        impl Raise for $error {
            fn raise(&self, context: &str) -> PyErr {
                raise($kind(self), format!("{context}: {}", chain(self)))
            }
        }
    };
}

raise_as!(LmError, lm_kind);
raise_as!(SaeError, sae_kind);
raise_as!(DataError, data_kind);
raise_as!(AnalysisError, analysis_kind);

/// `Result`s of the crates as `PyResult`s.
pub trait ToPy<T> {
    /// The result with its error raised as its Python exception, `context` first.
    fn py_context(self, context: impl FnOnce() -> String) -> PyResult<T>;
}

impl<T, E: Raise> ToPy<T> for Result<T, E> {
    fn py_context(self, context: impl FnOnce() -> String) -> PyResult<T> {
        self.map_err(|e| e.raise(&context()))
    }
}
