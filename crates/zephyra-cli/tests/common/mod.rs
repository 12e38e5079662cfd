//! Scaffolding shared by the CLI tests: the `zephyra` binary, running it and checking how it ended, peak
//! memory of a run, and generated fixtures (float32 `.npy` files, corpora, directory listings).
//!
//! Each test file has `mod common;` and uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[path = "../../../../testdata/testdata.rs"]
pub mod testdata;

/// The `zephyra` binary with logs limited to warnings.
pub fn zephyra() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zephyra"));
    c.env("RUST_LOG", "zephyra=warn");
    c
}

/// Runs `zephyra ARGS` to completion.
pub fn run<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    zephyra()
        .args(args)
        .output()
        .expect("the zephyra binary runs")
}

/// stdout, lossily decoded.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\nstdout {}\nstderr {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts a clean failure (exit code 2, no panic) and returns stderr.
pub fn fails(out: Output) -> String {
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2, stdout {}\nstderr {err}",
        stdout(&out)
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
    err
}

/// Asserts a clean failure mentioning `needle` on stderr, with nothing on stdout.
pub fn assert_fails_with(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    assert!(out.stdout.is_empty(), "stdout stays empty: {}", stdout(out));
}

/// Owned arguments from string slices.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Arguments from a space-separated line (no quoting: paths go in separately).
pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// The arguments of `line` (as [`words`]) followed by each `FLAG PATH` pair.
pub fn args_with(line: &str, paths: &[(&str, &Path)]) -> Vec<String> {
    let mut args = words(line);
    for (flag, path) in paths {
        args.push(flag.to_string());
        args.push(path.display().to_string());
    }
    args
}

/// A path as an argument.
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// SmolLM2 from the cache (fetched on first use).
pub fn smollm2() -> PathBuf {
    zephyra_lm::fetch::resolve_model("smollm2").expect("SmolLM2 in the cache")
}

/// The 64-bit LCG (Knuth's MMIX constants) the fixtures draw from.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// Uniform in [-0.5, 0.5) from the top 24 bits.
    pub fn centred(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Writes a float32 `.npy` `[n, d]` by hand (10 bytes + a header padded to 64 + the data); `row(r, out)`
/// fills row `r`.
pub fn write_npy(path: &Path, n: usize, d: usize, mut row: impl FnMut(usize, &mut [f32])) {
    let mut bytes = npy_header(&format!("({n}, {d})"), "<f4");
    let mut values = vec![0.0f32; d];
    for r in 0..n {
        row(r, &mut values);
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// The magic, version 1.0, and padded header of a `.npy` file with dtype `descr` and `shape`.
pub fn npy_header(shape: &str, descr: &str) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// Writes `n` Markdown chapters `{stem}{i}.md` into `dir` (created): a heading and `paragraph` repeated
/// `repeat + i` times.
pub fn write_chapters(
    dir: &Path,
    stem: &str,
    heading: &str,
    paragraph: &str,
    n: usize,
    repeat: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("{stem}{i}.md")),
            format!("# {heading} {i}\n\n{}", paragraph.repeat(repeat + i)),
        )
        .unwrap();
    }
}

/// The tiny Llama of seed 4 and a temp dir whose `corpus` folder holds four files of about 7 kB of babble
/// (seed 1); returns the model, the temp dir and the corpus folder.
pub fn tiny_with_babble() -> (
    zephyra_lm::testing::TinyLlama,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let tiny = zephyra_lm::testing::tiny_llama(4).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_babble(&corpus, 4, 7000, 1);
    (tiny, tmp, corpus)
}

/// Writes `n_files` text files of about `bytes_per_file` bytes of seeded pseudo-English into `dir`
/// (created): varied enough that activations differ from token to token.
pub fn write_babble(dir: &Path, n_files: usize, bytes_per_file: usize, seed: u64) {
    const WORDS: [&str; 48] = [
        "the",
        "borrow",
        "checker",
        "compares",
        "scopes",
        "a",
        "reference",
        "lives",
        "while",
        "it",
        "is",
        "used",
        "owner",
        "drops",
        "value",
        "when",
        "goes",
        "out",
        "of",
        "scope",
        "traits",
        "define",
        "shared",
        "behaviour",
        "generic",
        "types",
        "with",
        "bounds",
        "closures",
        "capture",
        "their",
        "environment",
        "iterators",
        "are",
        "lazy",
        "and",
        "compose",
        "into",
        "pipelines",
        "memory",
        "safety",
        "without",
        "garbage",
        "collection",
        "threads",
        "send",
        "messages",
        "over",
    ];
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Lcg(seed ^ 0x9E37_79B9_7F4A_7C15);
    for f in 0..n_files {
        let mut text = String::with_capacity(bytes_per_file + 64);
        while text.len() < bytes_per_file {
            let n_words = 4 + (rng.next_u64() >> 60) as usize;
            for w in 0..n_words {
                let word = WORDS[(rng.next_u64() >> 33) as usize % WORDS.len()];
                if w == 0 {
                    let mut c = word.chars();
                    if let Some(first) = c.next() {
                        text.extend(first.to_uppercase());
                        text.push_str(c.as_str());
                    }
                } else {
                    text.push(' ');
                    text.push_str(word);
                }
            }
            text.push_str(match rng.next_u64() >> 62 {
                0 => ".\n\n",
                1 => "; ",
                _ => ". ",
            });
        }
        std::fs::write(dir.join(format!("doc{f}.txt")), text).unwrap();
    }
}

/// Every file under `dir` (recursively): path relative to `dir` → bytes, sorted by path.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Total size in bytes of the files directly in `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A `zephyra serve` process, killed when dropped (a failed assertion included).
pub struct Server {
    child: Child,
    /// The URL it printed on its first line of stdout.
    pub url: String,
}

impl Server {
    /// Runs `zephyra ARGS` and waits for the URL it prints once it listens.
    pub fn start(args: &[&str]) -> Self {
        let mut child = zephyra()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut url = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut url)
            .unwrap();
        let url = url.trim().to_string();
        Self { child, url }
    }

    /// `GET path` over a new connection: the whole HTTP/1.1 response, status line first.
    pub fn get(&self, path: &str) -> String {
        let rest = self.url.strip_prefix("http://").expect("an http URL");
        let addr = rest.split('/').next().unwrap_or(rest);
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shards listed in the manifest of the store `dir` (0 while there is none).
pub fn n_shards(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["shards"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Polls `done` every 5 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (up to `timeout`) until the training run in `run_dir` has written its first checkpoint
/// (`training_state.safetensors`), then `settle` longer so the run is past it when it is killed.
pub fn wait_for_checkpoint(run_dir: &Path, timeout: Duration, settle: Duration) {
    let state = run_dir.join("training_state.safetensors");
    wait_until("no checkpoint appeared", timeout, || state.exists());
    std::thread::sleep(settle);
}

/// The kernel's high-water mark of resident memory (`VmHWM`, KiB) of process `pid`, while it runs.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` to completion, polling its peak resident memory every 10 ms; returns the output and the
/// largest `VmHWM` seen, in bytes (a lower bound of the true peak: the last moments before exit may
/// be missed, so the commands measured also report their own peak).
pub fn output_with_polled_peak(mut cmd: Command) -> (Output, u64) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the zephyra binary starts");
    let pid = child.id();
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .map(|p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                p.read_to_end(&mut buf).unwrap();
            }
            buf
        })
    })
    .into_iter();
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = pipes.next().unwrap().join().unwrap();
    let stderr = pipes.next().unwrap().join().unwrap();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        peak_kib * 1024,
    )
}
