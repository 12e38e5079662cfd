//! Errors keep their causes as sources (issue 13): an I/O, safetensors or JSON failure is reachable
//! through `source()` with its own type, and printed once when the chain is printed (`{:#}` in the CLI).

use std::error::Error;

use zephyra_sae::checkpoint::{TrainingState, STATE_FILE};
use zephyra_sae::npy::NpyFile;
use zephyra_sae::train::TrainSummary;
use zephyra_sae::SaeError;

/// The error and its causes, `: `-separated, as anyhow's `{:#}` prints them.
fn chain(e: &dyn Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

#[test]
fn io_errors_keep_the_os_error_as_their_source_and_print_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let err = NpyFile::open(&tmp.path().join("missing.npy")).unwrap_err();
    assert!(matches!(err, SaeError::Io { .. }), "{err}");
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
    let text = chain(&err);
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
}

#[test]
fn a_damaged_checkpoint_keeps_the_safetensors_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(STATE_FILE), [1, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
    let err = TrainingState::load(tmp.path()).unwrap_err();
    assert!(
        matches!(err, SaeError::Checkpoint { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );
    let source = err.source().expect("the parser's error is kept");
    assert!(
        source
            .downcast_ref::<safetensors::SafeTensorError>()
            .is_some(),
        "{source:?}"
    );
}

#[test]
fn an_unreadable_summary_keeps_the_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("summary.json"), "{\"arch\": 3}").unwrap();
    let err = TrainSummary::read(tmp.path()).unwrap_err();
    assert!(matches!(err, SaeError::Json { .. }), "{err}");
    let json = err
        .source()
        .and_then(|s| s.downcast_ref::<serde_json::Error>());
    assert!(json.is_some_and(|e| e.is_data()), "{err:?}");
}
