//! The one value parser behind every float flag (and the bound on `--max-tokens`): a value outside its
//! range, NaN or an infinity is refused by clap with the flag's name and the valid range, e.g.
//! `invalid value 'inf' for '--temperature <T>': must be a finite number ≥ 0`.

use std::str::FromStr;

/// The range a float flag accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// Any finite number (either sign).
    Finite,
    /// Finite and ≥ 0.
    NonNegative,
    /// Finite and > 0.
    Positive,
    /// In (0, 1].
    UnitOpenClosed,
}

impl Range {
    fn describe(self) -> &'static str {
        match self {
            Range::Finite => "a finite number",
            Range::NonNegative => "a finite number ≥ 0",
            Range::Positive => "a finite number > 0",
            Range::UnitOpenClosed => "a number in (0, 1]",
        }
    }

    fn contains(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Finite => true,
                Range::NonNegative => v >= 0.0,
                Range::Positive => v > 0.0,
                Range::UnitOpenClosed => v > 0.0 && v <= 1.0,
            }
    }
}

/// A float type a flag can hold.
pub trait Float: FromStr + Copy + Into<f64> + Send + Sync + Clone + 'static {}
impl Float for f32 {}
impl Float for f64 {}

/// Parses `s` as a `T` in `range` (the value is checked after rounding to `T`: `1e40` is an f32 infinity).
pub fn parse<T: Float>(s: &str, range: Range) -> Result<T, String> {
    let value: T = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number; expected {}", range.describe()))?;
    if range.contains(value.into()) {
        Ok(value)
    } else {
        Err(format!("must be {}", range.describe()))
    }
}

/// Any finite number.
pub fn finite<T: Float>(s: &str) -> Result<T, String> {
    parse(s, Range::Finite)
}

/// A finite number ≥ 0.
pub fn non_negative<T: Float>(s: &str) -> Result<T, String> {
    parse(s, Range::NonNegative)
}

/// A finite number > 0.
pub fn positive<T: Float>(s: &str) -> Result<T, String> {
    parse(s, Range::Positive)
}

/// A number in (0, 1].
pub fn unit_open_closed<T: Float>(s: &str) -> Result<T, String> {
    parse(s, Range::UnitOpenClosed)
}

/// Most tokens any command generates: far beyond any model's context length, far below an overflow.
pub const MAX_GENERATED_TOKENS: u64 = 1 << 20;

/// `--max-tokens`: 0..=[`MAX_GENERATED_TOKENS`].
pub fn max_tokens() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_GENERATED_TOKENS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_non_finite_and_out_of_range_values() {
        for s in ["nan", "NaN", "inf", "-inf", "1e40"] {
            assert!(finite::<f32>(s).is_err(), "{s}");
        }
        assert_eq!(finite::<f32>("-2.5"), Ok(-2.5));
        assert_eq!(non_negative::<f64>("0"), Ok(0.0));
        assert_eq!(
            non_negative::<f64>("-1"),
            Err("must be a finite number ≥ 0".to_string())
        );
        assert!(positive::<f32>("0").is_err());
        assert_eq!(positive::<f32>("1e-4"), Ok(1e-4));
        assert_eq!(unit_open_closed::<f32>("1"), Ok(1.0));
        assert!(unit_open_closed::<f32>("0").is_err());
        assert!(unit_open_closed::<f32>("1.01").is_err());
        assert!(finite::<f32>("x").unwrap_err().contains("not a number"));
    }
}
