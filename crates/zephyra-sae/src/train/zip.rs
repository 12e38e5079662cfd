//! A transcoder's training rows from two sources read in lockstep: [`ZipSource`] serves
//! `[x | y]`, `x` from the input source and `y` from the target source, row by row.
//!
//! The two sources must serve corresponding rows in the same order (two activation stores of the same
//! harvest, read with the same seed and buffer: the caller checks that their manifests agree). A source
//! that runs out before the other is an error, never a silent misalignment.

use super::{ActivationSource, Cursor};
use crate::SaeError;

/// Rows `[x | y]` zipped from an input source (`x`, width `d_in`) and a target source (`y`, width
/// `d_out`). Its cursor is [`Cursor::Zip`], holding both sources' cursors.
pub struct ZipSource {
    input: Box<dyn ActivationSource>,
    target: Box<dyn ActivationSource>,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl std::fmt::Debug for ZipSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipSource")
            .field("d_in", &self.input.d_in())
            .field("d_out", &self.target.d_in())
            .finish()
    }
}

impl ZipSource {
    /// Zips `input` and `target` (each at least one value wide).
    pub fn new(
        input: Box<dyn ActivationSource>,
        target: Box<dyn ActivationSource>,
    ) -> Result<Self, SaeError> {
        if input.d_in() == 0 || target.d_in() == 0 {
            return Err(SaeError::Source(
                format!(
                    "cannot zip sources of widths {} and {}: both must be at least 1",
                    input.d_in(),
                    target.d_in()
                )
                .into(),
            ));
        }
        Ok(Self {
            input,
            target,
            x: Vec::new(),
            y: Vec::new(),
        })
    }
}

/// Reads exactly `out.len() / d` rows unless `source` runs out; returns the rows read.
fn fill(source: &mut dyn ActivationSource, out: &mut [f32]) -> Result<usize, SaeError> {
    let d = source.d_in();
    let want = out.len() / d;
    let mut got = 0;
    while got < want {
        let n = source.next_rows(&mut out[got * d..want * d])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

impl ActivationSource for ZipSource {
    fn d_in(&self) -> usize {
        self.input.d_in() + self.target.d_in()
    }

    fn rows_per_pass(&self) -> Option<u64> {
        self.input.rows_per_pass()
    }

    fn next_rows(&mut self, out: &mut [f32]) -> Result<usize, SaeError> {
        let (dx, dy) = (self.input.d_in(), self.target.d_in());
        let want = out.len() / (dx + dy);
        self.x.resize(want * dx, 0.0);
        let n = fill(self.input.as_mut(), &mut self.x)?;
        self.y.resize(n * dy, 0.0);
        let m = fill(self.target.as_mut(), &mut self.y)?;
        if m != n {
            return Err(SaeError::Source(
                format!(
                    "the target activations ran out after {m} of the {n} rows the input activations \
                     served: the two sources do not hold the same rows (harvest both hooks in one \
                     `zephyra harvest` run)"
                )
                .into(),
            ));
        }
        for ((row, x), y) in out
            .chunks_exact_mut(dx + dy)
            .zip(self.x.chunks_exact(dx))
            .zip(self.y.chunks_exact(dy))
        {
            row[..dx].copy_from_slice(x);
            row[dx..].copy_from_slice(y);
        }
        Ok(n)
    }

    fn cursor(&self) -> Cursor {
        Cursor::Zip {
            input: Box::new(self.input.cursor()),
            target: Box::new(self.target.cursor()),
        }
    }

    fn seek(&mut self, cursor: &Cursor) -> Result<(), SaeError> {
        match cursor {
            Cursor::Zip { input, target } => {
                self.input.seek(input)?;
                self.target.seek(target)
            }
            other => Err(SaeError::Source(
                format!(
                    "the checkpoint's data cursor {other} is not that of zipped input and target \
                     activations: resume with the same --acts (and no --target-acts)"
                )
                .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::MemorySource;

    #[test]
    fn zips_row_by_row_seeks_and_refuses_misaligned_sources() {
        // x rows (0, 1), (2, 3), (4, 5); y rows (10), (11), (12).
        let x = MemorySource::new(vec![0., 1., 2., 3., 4., 5.], 2, true).unwrap();
        let y = MemorySource::new(vec![10., 11., 12.], 1, true).unwrap();
        let mut zip = ZipSource::new(Box::new(x), Box::new(y)).unwrap();
        assert_eq!(zip.d_in(), 3);
        let mut out = vec![0.0; 6];
        assert_eq!(zip.next_rows(&mut out).unwrap(), 2);
        assert_eq!(out, [0., 1., 10., 2., 3., 11.]);
        let c = zip.cursor();
        assert_eq!(c.kind(), "zip");
        let mut next = vec![0.0; 6];
        zip.next_rows(&mut next).unwrap();
        assert_eq!(next, [4., 5., 12., 0., 1., 10.]);
        zip.seek(&c).unwrap();
        let mut again = vec![0.0; 6];
        zip.next_rows(&mut again).unwrap();
        assert_eq!(again, next);
        assert!(zip.seek(&Cursor::Memory { pos: 0, epoch: 0 }).is_err());

        // A target with fewer rows than the input is an error, not a shifted pairing.
        let x = MemorySource::new(vec![0.; 6], 2, false).unwrap();
        let y = MemorySource::new(vec![1.; 2], 1, false).unwrap();
        let mut zip = ZipSource::new(Box::new(x), Box::new(y)).unwrap();
        let err = zip.next_rows(&mut [0.0; 9]).unwrap_err().to_string();
        assert!(err.contains("ran out after 2 of the 3 rows"), "{err}");
    }
}
