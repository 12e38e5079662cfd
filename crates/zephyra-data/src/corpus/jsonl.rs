//! JSON Lines: one document per line, from a string field.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use super::{text::decode_lossy, Document, DocumentReader, ReadStats};
use crate::error::{DataError, Result};

/// How many malformed line numbers a warning lists.
const MAX_LISTED: usize = 20;

pub(crate) struct JsonlReader {
    reader: BufReader<std::fs::File>,
    path: PathBuf,
    field: String,
    line_no: u64,
    n_good: u64,
    malformed: Vec<u64>,
    n_malformed: u64,
    n_lossy: u64,
    done: bool,
}

impl JsonlReader {
    pub(crate) fn new(file: std::fs::File, path: PathBuf, field: &str) -> Self {
        Self {
            reader: BufReader::with_capacity(1 << 16, file),
            path,
            field: field.to_string(),
            line_no: 0,
            n_good: 0,
            malformed: Vec::new(),
            n_malformed: 0,
            n_lossy: 0,
            done: false,
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.done = true;
        if self.n_lossy > 0 {
            tracing::warn!(path = %self.path.display(), n_lines = self.n_lossy, "lines not valid UTF-8: invalid bytes replaced by U+FFFD");
        }
        if self.n_malformed > 0 {
            let listed: Vec<String> = self.malformed.iter().map(u64::to_string).collect();
            let more = if self.n_malformed as usize > listed.len() {
                ", …"
            } else {
                ""
            };
            tracing::warn!(
                path = %self.path.display(),
                n_skipped = self.n_malformed,
                "skipped {} malformed JSONL line(s) (not a JSON object with a string field `{}`): line {}{more}",
                self.n_malformed,
                self.field,
                listed.join(", ")
            );
            if self.n_good == 0 {
                return Err(DataError::NoTextField {
                    path: self.path.clone(),
                    field: self.field.clone(),
                    n_lines: self.line_no,
                });
            }
        }
        Ok(())
    }
}

impl DocumentReader for JsonlReader {
    fn next_document(&mut self, stats: &mut ReadStats) -> Result<Option<Document>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let mut buf = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| DataError::io("reading", &self.path, e))?;
            if n == 0 {
                self.finish()?;
                return Ok(None);
            }
            self.line_no += 1;
            let (line, lossy) = decode_lossy(buf);
            if line.trim().is_empty() {
                continue;
            }
            if lossy {
                self.n_lossy += 1;
                stats.n_lossy += 1;
            }
            let text = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| {
                    v.get(&self.field)
                        .and_then(|t| t.as_str().map(str::to_string))
                });
            match text {
                Some(text) => {
                    self.n_good += 1;
                    if text.is_empty() {
                        stats.n_empty += 1;
                        continue;
                    }
                    return Ok(Some(Document {
                        text,
                        ends_document: true,
                    }));
                }
                None => {
                    self.n_malformed += 1;
                    stats.n_malformed_lines += 1;
                    if self.malformed.len() < MAX_LISTED {
                        self.malformed.push(self.line_no);
                    }
                }
            }
        }
    }
}
