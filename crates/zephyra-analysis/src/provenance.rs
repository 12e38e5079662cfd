//! Provenance checks: an SAE (or the activation store it was trained on) must come from the model and hook
//! it is evaluated, explained or served with.

use zephyra_lm::HookPoint;

use crate::error::{AnalysisError, Result};

/// Lower-case letters and digits only: `SmolLM2-135M-Instruct` → `smollm2135minstruct`.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Checks that the model an SAE (or store) records, `recorded`, is the one given: it matches when, letters
/// and digits only and case folded, one of the model's names (`general.name`, the file name) contains the
/// recorded name or the other way round (`smollm2` matches `SmolLM2-135M-Instruct.Q4_1.gguf`). Nothing
/// recorded: accepted (with a warning).
pub fn check_model(what: &str, recorded: Option<&str>, model_names: &[&str]) -> Result<()> {
    let Some(rec) = recorded.filter(|r| !r.trim().is_empty()) else {
        tracing::warn!(what, "no model recorded; cannot check that it matches");
        return Ok(());
    };
    let r = squash(rec);
    let given: Vec<String> = model_names
        .iter()
        .map(|n| squash(n))
        .filter(|n| !n.is_empty())
        .collect();
    if r.is_empty()
        || given
            .iter()
            .any(|g| g.contains(&r) || r.contains(g.as_str()))
    {
        return Ok(());
    }
    Err(AnalysisError::ModelMismatch {
        what: what.to_string(),
        expected: rec.to_string(),
        got: model_names.first().copied().unwrap_or("?").to_string(),
    })
}

/// Checks that the activation store an SAE was trained on (`store_dir`, from its `metadata.acts`) was
/// harvested from this model file (same sha256) at this hook. A path that is not a store (an `.npy` file,
/// a store since deleted) is not checked.
pub fn check_store(
    store_dir: &std::path::Path,
    model_path: &std::path::Path,
    hook: HookPoint,
) -> Result<()> {
    use zephyra_data::store::manifest::{Manifest, MANIFEST_FILE};
    if !store_dir.join(MANIFEST_FILE).is_file() {
        return Ok(());
    }
    let manifest = Manifest::read(store_dir).map_err(AnalysisError::Data)?;
    let sha = zephyra_io::sha256_file(model_path)?;
    let what = format!(
        "the activation store {} the SAE was trained on",
        store_dir.display()
    );
    if !manifest.model.sha256.eq_ignore_ascii_case(&sha) {
        return Err(AnalysisError::ModelMismatch {
            what,
            expected: format!("{} (sha256 {})", manifest.model.path, manifest.model.sha256),
            got: format!("{} (sha256 {sha})", model_path.display()),
        });
    }
    if manifest.hook != hook.to_string() {
        return Err(AnalysisError::InvalidArgument(format!(
            "{what} holds hook `{}` but the eval is at `{hook}`: pass --hook {}",
            manifest.hook, manifest.hook
        )));
    }
    Ok(())
}
