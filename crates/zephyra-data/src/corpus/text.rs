//! Plain text / Markdown (streamed in line-aligned pieces) and HTML files.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use super::{html::html_to_text, Document, DocumentReader, ReadStats};
use crate::error::{DataError, Result};

/// Pieces of a long text file are cut at the first line end after this many bytes.
pub(crate) const PIECE_BYTES: usize = 1 << 20;

/// Decodes `bytes` as UTF-8, replacing invalid sequences; returns whether any were replaced.
pub(crate) fn decode_lossy(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}

/// A text file (or stdin): one document, yielded in pieces of about [`PIECE_BYTES`] cut at line ends.
pub(crate) struct TextReader {
    reader: BufReader<Box<dyn Read + Send>>,
    path: PathBuf,
    done: bool,
    lossy_reported: bool,
    yielded_any: bool,
}

impl TextReader {
    pub(crate) fn new(reader: Box<dyn Read + Send>, path: PathBuf) -> Self {
        Self {
            reader: BufReader::with_capacity(1 << 16, reader),
            path,
            done: false,
            lossy_reported: false,
            yielded_any: false,
        }
    }
}

impl DocumentReader for TextReader {
    fn next_document(&mut self, stats: &mut ReadStats) -> Result<Option<Document>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = Vec::new();
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| DataError::io("reading", &self.path, e))?;
            if n == 0 {
                self.done = true;
                break;
            }
            if buf.len() >= PIECE_BYTES {
                break;
            }
        }
        if self.done && buf.is_empty() {
            // End of file: close the document if a piece was yielded without ending it.
            if self.yielded_any {
                return Ok(Some(Document {
                    text: String::new(),
                    ends_document: true,
                }));
            }
            stats.n_empty += 1;
            return Ok(None);
        }
        let (text, lossy) = decode_lossy(buf);
        if lossy && !self.lossy_reported {
            self.lossy_reported = true;
            stats.n_lossy += 1;
            tracing::warn!(path = %self.path.display(), "file is not valid UTF-8: invalid bytes replaced by U+FFFD");
        }
        let ends_document = self.done
            || self
                .reader
                .fill_buf()
                .map(<[u8]>::is_empty)
                .unwrap_or(false);
        if ends_document {
            self.done = true;
        }
        self.yielded_any = !ends_document;
        Ok(Some(Document {
            text,
            ends_document,
        }))
    }
}

/// An HTML file: one document, converted to text.
pub(crate) struct HtmlReader {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl HtmlReader {
    pub(crate) fn new(file: std::fs::File, path: PathBuf) -> Self {
        Self {
            file: Some(file),
            path,
        }
    }
}

impl DocumentReader for HtmlReader {
    fn next_document(&mut self, stats: &mut ReadStats) -> Result<Option<Document>> {
        let Some(mut file) = self.file.take() else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| DataError::io("reading", &self.path, e))?;
        let (html, lossy) = decode_lossy(bytes);
        if lossy {
            stats.n_lossy += 1;
            tracing::warn!(path = %self.path.display(), "file is not valid UTF-8: invalid bytes replaced by U+FFFD");
        }
        let text = html_to_text(&html);
        if text.is_empty() {
            stats.n_empty += 1;
            return Ok(None);
        }
        Ok(Some(Document {
            text,
            ends_document: true,
        }))
    }
}
