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

/// [`check_model`] against a model file: its names are its `general.name` (`general_name`), if any, then
/// its file name; a mismatch names the first.
pub fn check_model_file(
    what: &str,
    recorded: Option<&str>,
    model_path: &std::path::Path,
    general_name: Option<&str>,
) -> Result<()> {
    let file_name = model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names: Vec<&str> = general_name
        .into_iter()
        .chain([file_name.as_str()])
        .collect();
    check_model(what, recorded, &names)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_model_file_matches_by_general_name_or_file_name() {
        let file = Path::new("/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        // The file name alone, or either name when general.name says something else.
        check_model_file("sae", Some("smollm2"), file, None).unwrap();
        check_model_file("sae", Some("SmolLM2-135M"), file, Some("Llama 3")).unwrap();
        check_model_file("sae", Some("llama3"), file, Some("Llama 3")).unwrap();
        // A mismatch names general.name first, else the file name.
        let e = check_model_file("sae", Some("gemma"), file, Some("Llama 3")).unwrap_err();
        assert!(
            matches!(&e, AnalysisError::ModelMismatch { got, .. } if got == "Llama 3"),
            "{e}"
        );
        let e = check_model_file("sae", Some("gemma"), file, None).unwrap_err();
        assert!(
            matches!(&e, AnalysisError::ModelMismatch { got, .. } if got == "SmolLM2-135M-Instruct.Q4_1.gguf"),
            "{e}"
        );
    }
}
