//! Plain text / Markdown (streamed in bounded pieces) and HTML files.
//!
//! A text file is cut into pieces of about [`PIECE_BYTES`]: at the first line end at or after that many
//! bytes; in a line longer than [`MAX_PIECE_BYTES`], before the first ASCII whitespace after
//! [`PIECE_BYTES`] (so that a word keeps its leading space, as byte-level BPE tokenizers expect); in a run
//! of that many bytes without whitespace, at the last UTF-8 character boundary before
//! [`MAX_PIECE_BYTES`]. Memory is bounded by one piece (plus what is read ahead), whatever the file's line
//! structure.

use std::io::Read;
use std::path::PathBuf;

use super::{html::html_to_text, Document, DocumentReader, ReadStats};
use crate::error::{DataError, Result};

/// Pieces of a long text file are cut at the first line end after this many bytes. Tokenizing a piece
/// takes about 200 bytes of memory per byte of text, so a piece is small.
pub(crate) const PIECE_BYTES: usize = 1 << 18;
/// No piece is longer than this: a longer line is cut at whitespace or a character boundary.
pub(crate) const MAX_PIECE_BYTES: usize = 2 * PIECE_BYTES;

/// Decodes `bytes` as UTF-8, replacing invalid sequences; returns whether any were replaced.
pub(crate) fn decode_lossy(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}

/// Where the piece at the start of `buf` ends (see the module docs); `eof`: nothing follows `buf`.
fn piece_end(buf: &[u8], eof: bool) -> usize {
    let window = &buf[..buf.len().min(MAX_PIECE_BYTES)];
    if let Some(i) = window
        .get(PIECE_BYTES - 1..)
        .and_then(|tail| tail.iter().position(|&b| b == b'\n'))
    {
        return PIECE_BYTES + i;
    }
    if eof && buf.len() <= MAX_PIECE_BYTES {
        return buf.len();
    }
    if let Some(i) = window
        .get(PIECE_BYTES..)
        .and_then(|tail| tail.iter().position(u8::is_ascii_whitespace))
    {
        return PIECE_BYTES + i;
    }
    // No whitespace: back up over UTF-8 continuation bytes (at most three) to a character boundary.
    let mut end = window.len();
    while end > window.len() - 4 && buf.get(end).is_some_and(|&b| b & 0xC0 == 0x80) {
        end -= 1;
    }
    end
}

/// A text file (or stdin): one document, yielded in pieces of about [`PIECE_BYTES`] (see the module docs).
pub(crate) struct TextReader {
    reader: Box<dyn Read + Send>,
    path: PathBuf,
    /// Bytes read and not yet yielded.
    buf: Vec<u8>,
    eof: bool,
    done: bool,
    lossy_reported: bool,
    yielded_any: bool,
}

impl TextReader {
    pub(crate) fn new(reader: Box<dyn Read + Send>, path: PathBuf) -> Self {
        Self {
            reader,
            path,
            buf: Vec::new(),
            eof: false,
            done: false,
            lossy_reported: false,
            yielded_any: false,
        }
    }

    /// Reads until more than [`MAX_PIECE_BYTES`] bytes are buffered or the input ends.
    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 1 << 16];
        while !self.eof && self.buf.len() <= MAX_PIECE_BYTES {
            match self.reader.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::io("reading", &self.path, e)),
            }
        }
        Ok(())
    }
}

impl DocumentReader for TextReader {
    fn next_document(&mut self, stats: &mut ReadStats) -> Result<Option<Document>> {
        if self.done {
            return Ok(None);
        }
        self.fill()?;
        if self.eof && self.buf.is_empty() {
            self.done = true;
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
        let end = piece_end(&self.buf, self.eof);
        let rest = self.buf.split_off(end);
        let piece = std::mem::replace(&mut self.buf, rest);
        let (text, lossy) = decode_lossy(piece);
        if lossy && !self.lossy_reported {
            self.lossy_reported = true;
            stats.n_lossy += 1;
            tracing::warn!(path = %self.path.display(), "file is not valid UTF-8: invalid bytes replaced by U+FFFD");
        }
        let ends_document = self.eof && self.buf.is_empty();
        self.done = ends_document;
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
