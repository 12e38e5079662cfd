//! Corpus readers: files, directories, globs and stdin, streamed one document at a time.
//!
//! | input | documents |
//! |---|---|
//! | `.txt`, `.md` (and stdin, `-`) | the whole file is one document, read in pieces of 256–512 KiB split at line ends (or whitespace, or character boundaries, in longer lines) |
//! | `.html`, `.htm` | one document per file, converted by [`html::html_to_text`] |
//! | `.jsonl` | one document per line: the string field `text` (or [`CorpusOptions::text_field`]) |
//! | `.parquet` (feature `parquet`) | one document per row of a string column |
//! | directory | every supported file below it, recursively, in byte-wise sorted path order |
//! | device, FIFO, socket (or a link to one) | skipped with a warning |
//! | glob (`data/*.jsonl`) | the matching files, sorted |
//!
//! Non-UTF-8 bytes are replaced by U+FFFD (lossy decoding); each file or line where that happened is
//! counted in [`ReadStats::n_lossy`] and logged once per file. Malformed JSONL lines are skipped, counted in
//! [`ReadStats::n_malformed_lines`] and reported with their line numbers in one warning per file.

pub mod html;
mod jsonl;
#[cfg(feature = "parquet")]
mod parquet;
mod text;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Where the Rust documentation lives below `rustc --print sysroot`.
pub const RUST_DOCS_SUBDIR: &str = "share/doc/rust/html";

/// The books of the Rust documentation read by the default corpus (API reference pages are left out).
pub const RUST_DOCS_BOOKS: &[&str] = &[
    "book",
    "rust-by-example",
    "reference",
    "nomicon",
    "edition-guide",
    "embedded-book",
    "cargo",
    "rustc",
    "rustdoc",
    "style-guide",
    "error_codes",
];

/// Options of the readers.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// The JSONL field (and parquet column) holding the text. Default `text`.
    pub text_field: String,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        Self {
            text_field: "text".to_string(),
        }
    }
}

/// The format of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text or Markdown.
    Text,
    /// HTML.
    Html,
    /// JSON Lines.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format for a file name, from its extension (case-insensitive).
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "md" | "markdown" => Some(Self::Text),
            "html" | "htm" | "xhtml" => Some(Self::Html),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            "parquet" if cfg!(feature = "parquet") => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// One input of a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Standard input, read as plain text.
    Stdin,
    /// A file and its format.
    File(PathBuf, Format),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Stdin => f.write_str("<stdin>"),
            Input::File(path, _) => write!(f, "{}", path.display()),
        }
    }
}

/// A piece of text to tokenize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The text.
    pub text: String,
    /// `false` for every piece of a long text file but the last: the next piece continues the same
    /// document, so no end-of-sequence token goes between them.
    pub ends_document: bool,
}

/// Counters kept while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadStats {
    /// Files (and stdin) opened.
    pub n_files: u64,
    /// Documents yielded (a long text file counts once).
    pub n_documents: u64,
    /// Bytes of text yielded.
    pub n_bytes: u64,
    /// Files or lines with bytes that were not UTF-8 (decoded lossily).
    pub n_lossy: u64,
    /// JSONL lines skipped as malformed or lacking the text field.
    pub n_malformed_lines: u64,
    /// HTML pages and records that yielded no text.
    pub n_empty: u64,
}

/// A list of inputs to read in order.
#[derive(Debug, Clone)]
pub struct Corpus {
    inputs: Vec<Input>,
    options: CorpusOptions,
    description: String,
}

impl Corpus {
    /// Resolves `specs` (files, directories, glob patterns, `-` for stdin) into inputs.
    ///
    /// Directories are walked recursively and their supported files taken in sorted order; unsupported files
    /// inside directories are skipped (named files with an unknown extension are an error). A path that does
    /// not exist, or a glob that matches nothing, is an error.
    pub fn from_specs(specs: &[String], options: CorpusOptions) -> Result<Self> {
        let mut inputs = Vec::new();
        for spec in specs {
            if spec == "-" {
                inputs.push(Input::Stdin);
                continue;
            }
            let path = PathBuf::from(spec);
            if path.exists() {
                add_path(&path, true, &mut inputs)?;
            } else if spec.contains(['*', '?', '[']) {
                let paths = glob::glob(spec).map_err(|e| DataError::BadGlob {
                    pattern: spec.clone(),
                    reason: e.to_string(),
                })?;
                let mut matched: Vec<PathBuf> = Vec::new();
                for entry in paths {
                    let p = entry.map_err(|e| {
                        DataError::io("reading", e.path().to_path_buf(), std::io::Error::from(e))
                    })?;
                    matched.push(p);
                }
                matched.sort();
                if matched.is_empty() {
                    return Err(DataError::EmptyGlob {
                        pattern: spec.clone(),
                    });
                }
                for p in matched {
                    add_path(&p, false, &mut inputs)?;
                }
            } else {
                return Err(DataError::MissingPath { path });
            }
        }
        let description = specs.join(" ");
        Ok(Self {
            inputs,
            options,
            description,
        })
    }

    /// The corpus of `specs` ([`from_specs`](Self::from_specs)), or the
    /// [default](Self::default_rust_docs) when there are none (`--data` omitted).
    pub fn from_specs_or_default(specs: &[String], options: CorpusOptions) -> Result<Self> {
        if specs.is_empty() {
            Self::default_rust_docs()
        } else {
            Self::from_specs(specs, options)
        }
    }

    /// The default corpus: the books of the Rust documentation installed with the toolchain
    /// ([`RUST_DOCS_BOOKS`] under `sysroot/share/doc/rust/html`), as HTML. `print.html` (each book's
    /// single-page copy) and the old `first-edition`/`second-edition`/`2018-edition` redirect trees are left out.
    pub fn rust_docs(sysroot: &Path) -> Result<Self> {
        let root = sysroot.join(RUST_DOCS_SUBDIR);
        let mut inputs = Vec::new();
        let mut books = Vec::new();
        for book in RUST_DOCS_BOOKS {
            let dir = root.join(book);
            if dir.is_dir() {
                books.push(*book);
                let mut files = Vec::new();
                walk(&dir, &mut files)?;
                for f in files {
                    let skip = f
                        .file_name()
                        .is_some_and(|n| n == "print.html" || n == "toc.html" || n == "404.html")
                        || f.components().any(|c| {
                            matches!(
                                c.as_os_str().to_str(),
                                Some("first-edition" | "second-edition" | "2018-edition")
                            )
                        });
                    if !skip && Format::from_path(&f) == Some(Format::Html) && is_regular_file(&f) {
                        inputs.push(Input::File(f, Format::Html));
                    }
                }
            }
        }
        if inputs.is_empty() {
            return Err(DataError::NoDefaultCorpus { path: root });
        }
        let description = format!("rust-docs:{} ({})", root.display(), books.join(","));
        Ok(Self {
            inputs,
            options: CorpusOptions::default(),
            description,
        })
    }

    /// The default corpus of the toolchain found by running `rustc --print sysroot` (or `$RUSTC`).
    pub fn default_rust_docs() -> Result<Self> {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let output = std::process::Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output();
        let sysroot = match output {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            _ => {
                return Err(DataError::NoDefaultCorpus {
                    path: PathBuf::from("$(rustc --print sysroot)").join(RUST_DOCS_SUBDIR),
                })
            }
        };
        Self::rust_docs(&sysroot)
    }

    /// The inputs, in reading order.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// The JSONL field / parquet column read.
    pub fn text_field(&self) -> &str {
        &self.options.text_field
    }

    /// A one-line description for manifests and logs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Reorders the inputs with a deterministic shuffle from `seed` (files are mixed before packing so that
    /// a token budget smaller than the corpus samples all of it). Stdin stays where it is if it is alone.
    pub fn shuffle_inputs(&mut self, seed: u64) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f11e_5eed_f11e);
        self.inputs.shuffle(&mut rng);
    }

    /// Streams the documents of every input in order.
    pub fn documents(&self) -> Documents {
        Documents {
            inputs: self.inputs.clone().into(),
            options: self.options.clone(),
            current: None,
            stats: ReadStats::default(),
        }
    }
}

fn add_path(path: &Path, named: bool, inputs: &mut Vec<Input>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io("reading", path, e))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files)?;
        for f in files {
            if let Some(format) = Format::from_path(&f) {
                if is_regular_file(&f) {
                    inputs.push(Input::File(f, format));
                }
            }
        }
        Ok(())
    } else if !meta.is_file() {
        warn_special(path);
        Ok(())
    } else {
        match Format::from_path(path) {
            Some(format) => {
                inputs.push(Input::File(path.to_path_buf(), format));
                Ok(())
            }
            None if named => Err(DataError::UnsupportedFile {
                path: path.to_path_buf(),
            }),
            None => Ok(()),
        }
    }
}

/// Whether `path` (symbolic links followed) is a regular file; devices, FIFOs and sockets are not (reading
/// `/dev/zero` never ends, opening a FIFO blocks): they are skipped with a warning. A path whose metadata
/// cannot be read counts as a file, so that opening it reports the error.
fn is_regular_file(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            warn_special(path);
            false
        }
        _ => true,
    }
}

fn warn_special(path: &Path) {
    tracing::warn!(
        path = %path.display(),
        "skipping `{}`: not a regular file (a device, FIFO or socket, or a link to one)",
        path.display()
    );
}

/// Every file below `dir`, recursively, sorted by path.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io("listing", dir, e))?
        .map(|e| {
            e.map(|e| e.path())
                .map_err(|err| DataError::io("listing", dir, err))
        })
        .collect::<Result<_>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, out)?;
        } else {
            out.push(entry);
        }
    }
    Ok(())
}

/// A reader of one input that yields documents.
trait DocumentReader {
    fn next_document(&mut self, stats: &mut ReadStats) -> Result<Option<Document>>;
}

/// Iterator over a corpus's documents; see [`Corpus::documents`].
pub struct Documents {
    inputs: VecDeque<Input>,
    options: CorpusOptions,
    current: Option<Box<dyn DocumentReader + Send>>,
    stats: ReadStats,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("inputs_left", &self.inputs.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Documents {
    /// Counters so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    fn open(&self, input: &Input) -> Result<Box<dyn DocumentReader + Send>> {
        Ok(match input {
            Input::Stdin => Box::new(text::TextReader::new(
                Box::new(std::io::stdin()),
                "<stdin>".into(),
            )),
            Input::File(path, format) => {
                let file =
                    std::fs::File::open(path).map_err(|e| DataError::io("opening", path, e))?;
                match format {
                    Format::Text => Box::new(text::TextReader::new(Box::new(file), path.clone())),
                    Format::Html => Box::new(text::HtmlReader::new(file, path.clone())),
                    Format::Jsonl => Box::new(jsonl::JsonlReader::new(
                        file,
                        path.clone(),
                        &self.options.text_field,
                    )),
                    #[cfg(feature = "parquet")]
                    Format::Parquet => Box::new(parquet::ParquetReader::open(
                        file,
                        path.clone(),
                        &self.options.text_field,
                    )?),
                    #[cfg(not(feature = "parquet"))]
                    Format::Parquet => {
                        return Err(DataError::UnsupportedFile { path: path.clone() })
                    }
                }
            }
        })
    }
}

impl Iterator for Documents {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(reader) = self.current.as_mut() {
                match reader.next_document(&mut self.stats) {
                    Ok(Some(doc)) => {
                        if doc.ends_document {
                            self.stats.n_documents += 1;
                        }
                        self.stats.n_bytes += doc.text.len() as u64;
                        return Some(Ok(doc));
                    }
                    Ok(None) => self.current = None,
                    Err(e) => {
                        self.current = None;
                        return Some(Err(e));
                    }
                }
            }
            let input = self.inputs.pop_front()?;
            self.stats.n_files += 1;
            match self.open(&input) {
                Ok(reader) => self.current = Some(reader),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
