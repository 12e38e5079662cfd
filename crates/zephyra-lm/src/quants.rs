//! Dequantization of GGUF tensor data to `f32`: llama.cpp's block formats.
//!
//! The formulas are those of llama.cpp's reference dequantizers (`ggml-quants.c`,
//! `dequantize_row_q4_0` … `dequantize_row_q8_K`, MIT licence), rewritten here block by block:
//!
//! | type | values / block | bytes | layout and value |
//! |---|---|---|---|
//! | `F32` / `F16` / `BF16` | 1 | 4 / 2 / 2 | IEEE binary32 / binary16 / bfloat16 |
//! | `Q4_0` | 32 | 18 | f16 `d`, 16 bytes of nibbles: `d · (q − 8)` |
//! | `Q4_1` | 32 | 20 | f16 `d`, f16 `m`, nibbles: `d · q + m` |
//! | `Q5_0` | 32 | 22 | f16 `d`, u32 high bits, nibbles: `d · (q − 16)` |
//! | `Q5_1` | 32 | 24 | f16 `d`, f16 `m`, u32 high bits, nibbles: `d · q + m` |
//! | `Q8_0` | 32 | 34 | f16 `d`, 32 × i8: `d · q` |
//! | `Q4_K` | 256 | 144 | f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles: `d·sc·q − dmin·m` per 32 values |
//! | `Q5_K` | 256 | 176 | as `Q4_K` plus 32 bytes of fifth bits |
//! | `Q6_K` | 256 | 210 | 128 bytes low nibbles, 64 bytes 2-bit highs, 16 × i8 scales, f16 `d`: `d · sc · (q − 32)` per 16 values |
//! | `Q8_K` | 256 | 292 | f32 `d`, 256 × i8, 16 × i16 sums: `d · q` |
//!
//! In the nibble formats, the low nibbles of a 32-value group hold its first 16 (or, in the K-quants,
//! 32) values and the high nibbles the rest.

use candle_core::quantized::GgmlDType;

use crate::error::{LmError, Result};

/// Whether [`dequantize`] implements `dtype` (the others are read through candle).
pub fn is_supported(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q8_1)
}

/// Number of bytes that `n_values` values of `dtype` occupy (`n_values` a multiple of the block size).
pub fn byte_len(dtype: GgmlDType, n_values: usize) -> Result<usize> {
    let block = dtype.block_size();
    if !n_values.is_multiple_of(block) {
        return Err(LmError::InvalidInput(format!(
            "{n_values} values are not a whole number of {dtype:?} blocks of {block}"
        )));
    }
    Ok(n_values / block * dtype.type_size())
}

/// Dequantizes `bytes` (whole blocks of `dtype`) to `f32`.
///
/// Errors: a type this module does not implement ([`is_supported`]), or a byte length that is not a
/// whole number of blocks.
pub fn dequantize(dtype: GgmlDType, bytes: &[u8]) -> Result<Vec<f32>> {
    let type_size = dtype.type_size();
    if !bytes.len().is_multiple_of(type_size) {
        return Err(LmError::InvalidInput(format!(
            "{} bytes are not a whole number of {dtype:?} blocks of {type_size} bytes",
            bytes.len()
        )));
    }
    let block_fn: fn(&[u8], &mut [f32]) = match dtype {
        GgmlDType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlDType::F16 => |b, y| y[0] = f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        GgmlDType::BF16 => |b, y| y[0] = bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        GgmlDType::Q4_0 => block_q4_0,
        GgmlDType::Q4_1 => block_q4_1,
        GgmlDType::Q5_0 => block_q5_0,
        GgmlDType::Q5_1 => block_q5_1,
        GgmlDType::Q8_0 => block_q8_0,
        GgmlDType::Q4K => block_q4_k,
        GgmlDType::Q5K => block_q5_k,
        GgmlDType::Q6K => block_q6_k,
        GgmlDType::Q8K => block_q8_k,
        other => {
            return Err(LmError::InvalidInput(format!(
                "dequantizing {other:?} is not implemented"
            )))
        }
    };
    let block_size = dtype.block_size();
    let mut out = vec![0.0f32; bytes.len() / type_size * block_size];
    for (b, y) in bytes
        .chunks_exact(type_size)
        .zip(out.chunks_exact_mut(block_size))
    {
        block_fn(b, y);
    }
    Ok(out)
}

/// IEEE 754 binary16 → binary32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        // Subnormal: mant · 2^-24, exact in f32.
        (0, m) => {
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 → binary32 (the top half of the bits).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = (i32::from(q & 0x0f) - 8) as f32 * d;
        y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = f32::from(q & 0x0f) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit values of a Q5 block: low nibbles `qs`, fifth bits in `qh` (bit `j` for value `j`).
fn q5_values(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut v = [0u8; 32];
    for (j, &q) in qs.iter().enumerate() {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        v[j] = (q & 0x0f) | (h0 << 4);
        v[j + 16] = (q >> 4) | (h1 << 4);
    }
    v
}

fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (y, q) in y.iter_mut().zip(q5_values(qh, &b[6..22])) {
        *y = (i32::from(q) - 16) as f32 * d;
    }
}

fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (y, q) in y.iter_mut().zip(q5_values(qh, &b[8..24])) {
        *y = f32::from(q) * d + m;
    }
}

fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed 6-bit bytes of a Q4_K/Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Group `g`'s two (scale, min) pairs of a K-quant block, already multiplied by the block's `d` and `dmin`.
#[inline]
fn group_scales(g: usize, scales: &[u8], d: f32, dmin: f32) -> [(f32, f32); 2] {
    [2 * g, 2 * g + 1].map(|j| {
        let (sc, m) = scale_min_k4(j, scales);
        (d * f32::from(sc), dmin * f32::from(m))
    })
}

fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    // Four groups of 64 values: 32 from the low nibbles of 32 bytes, 32 from the high nibbles.
    for (g, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let [(d1, m1), (d2, m2)] = group_scales(g, scales, d, dmin);
        for (l, &q) in q.iter().enumerate() {
            y[l] = d1 * f32::from(q & 0x0f) - m1;
            y[l + 32] = d2 * f32::from(q >> 4) - m2;
        }
    }
}

fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (g, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let [(d1, m1), (d2, m2)] = group_scales(g, scales, d, dmin);
        // Group g takes its fifth bits from bits 2g and 2g + 1 of each `qh` byte.
        for (l, &q) in q.iter().enumerate() {
            let h1 = (qh[l] >> (2 * g)) & 1;
            let h2 = (qh[l] >> (2 * g + 1)) & 1;
            y[l] = d1 * f32::from((q & 0x0f) | (h1 << 4)) - m1;
            y[l + 32] = d2 * f32::from((q >> 4) | (h2 << 4)) - m2;
        }
    }
}

fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    // Two halves of 128 values: 64 bytes of low nibbles, 32 bytes of 2-bit highs, 8 scales each.
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
        let y = &mut y[128 * n..];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q1 = (ql[l] & 0x0f) | ((h & 3) << 4);
            let q2 = (ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4);
            let q3 = (ql[l] >> 4) | (((h >> 4) & 3) << 4);
            let q4 = (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4);
            for (k, q) in [q1, q2, q3, q4].into_iter().enumerate() {
                let scale = f32::from(sc[is + 2 * k] as i8);
                y[l + 32 * k] = d * scale * (i32::from(q) - 32) as f32;
            }
        }
    }
}

fn block_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in y.iter_mut().zip(&b[4..260]) {
        *y = d * f32::from(q as i8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F16_ONE: [u8; 2] = [0x00, 0x3c];
    const F16_HALF: [u8; 2] = [0x00, 0x38];

    #[test]
    fn half_floats_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc0a0), -5.0);
        let f16 = dequantize(GgmlDType::F16, &[0x00, 0x3c, 0x00, 0xc0]).unwrap();
        assert_eq!(f16, [1.0, -2.0]);
        let bf16 = dequantize(GgmlDType::BF16, &[0x80, 0x3f, 0xa0, 0xc0]).unwrap();
        assert_eq!(bf16, [1.0, -5.0]);
    }

    #[test]
    fn q4_0_and_q4_1_blocks() {
        // Byte j holds value j in its low nibble and value j+16 in its high nibble.
        let mut b = F16_HALF.to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlDType::Q4_0, &b).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(y[j + 16], 0.5 * (7.0 - j as f32));
        }
        let mut b = F16_HALF.to_vec();
        b.extend([0x00, 0xc0]); // m = -2
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlDType::Q4_1, &b).unwrap();
        assert_eq!((y[3], y[16 + 3]), (0.5 * 3.0 - 2.0, 0.5 * 12.0 - 2.0));
    }

    #[test]
    fn q5_blocks_take_the_fifth_bit_from_qh() {
        // qh: bit j for value j (j < 16), bit j + 16 for value j + 16. Set values 1 and 17.
        let qh: u32 = (1 << 1) | (1 << 17);
        let mut b = F16_ONE.to_vec();
        b.extend(qh.to_le_bytes());
        b.extend([0x21u8; 16]); // low nibble 1, high nibble 2
        let y = dequantize(GgmlDType::Q5_0, &b).unwrap();
        assert_eq!(
            (y[0], y[1], y[16], y[17]),
            (1.0 - 16.0, 17.0 - 16.0, 2.0 - 16.0, 18.0 - 16.0)
        );
        let mut b = F16_ONE.to_vec();
        b.extend(F16_HALF); // m = 0.5
        b.extend(qh.to_le_bytes());
        b.extend([0x21u8; 16]);
        let y = dequantize(GgmlDType::Q5_1, &b).unwrap();
        assert_eq!((y[0], y[1], y[16], y[17]), (1.5, 17.5, 2.5, 18.5));
    }

    #[test]
    fn q8_blocks_are_signed_bytes_times_d() {
        let mut b = F16_HALF.to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let y = dequantize(GgmlDType::Q8_0, &b).unwrap();
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);
        let mut b = 0.25f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|j| (j as u8).wrapping_add(128)));
        b.extend([0u8; 32]);
        let y = dequantize(GgmlDType::Q8K, &b).unwrap();
        assert_eq!((y[0], y[255]), (-32.0, 0.25 * 127.0));
    }

    /// Packs eight 6-bit (scale, min) pairs the way `scale_min_k4` unpacks them.
    fn pack_scales(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut q = [0u8; 12];
        for j in 0..4 {
            q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
            q[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
        }
        q
    }

    #[test]
    fn k_quant_scales_unpack() {
        let sc = [1, 2, 3, 63, 17, 33, 48, 62];
        let m = [5, 6, 7, 8, 40, 41, 1, 63];
        let q = pack_scales(sc, m);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (sc[j], m[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q4_k_and_q5_k_blocks() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 8];
        let m = [8, 7, 6, 5, 4, 3, 2, 1];
        // d = 1, dmin = 0.5; every byte holds nibbles (lo 3, hi 9).
        let mut b = F16_ONE.to_vec();
        b.extend(F16_HALF);
        b.extend(pack_scales(sc, m));
        b.extend([0x93u8; 128]);
        let y = dequantize(GgmlDType::Q4K, &b).unwrap();
        for (sub, chunk) in y.chunks(32).enumerate() {
            let q = if sub % 2 == 0 { 3.0 } else { 9.0 };
            let want = f32::from(sc[sub]) * q - 0.5 * f32::from(m[sub]);
            assert!(chunk.iter().all(|&v| v == want), "sub-block {sub}");
        }
        // Q5_K: qh byte l has bit 2g (+16 for the low half of group g) set for g = 1 only.
        let mut b = F16_ONE.to_vec();
        b.extend(F16_HALF);
        b.extend(pack_scales(sc, m));
        b.extend([0b0000_0100u8; 32]);
        b.extend([0x93u8; 128]);
        let y = dequantize(GgmlDType::Q5K, &b).unwrap();
        for (sub, chunk) in y.chunks(32).enumerate() {
            let q = if sub % 2 == 0 { 3.0 } else { 9.0 } + if sub == 2 { 16.0 } else { 0.0 };
            let want = f32::from(sc[sub]) * q - 0.5 * f32::from(m[sub]);
            assert!(chunk.iter().all(|&v| v == want), "sub-block {sub}");
        }
    }

    #[test]
    fn q6_k_block() {
        // Value i = 128n + 32k + l: low nibble from ql, two high bits from qh, scale sc[8n + l/16 + 2k].
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        let mut want = [0f32; 256];
        let scales: Vec<i8> = (0..16).map(|i| i as i8 - 8).collect();
        for (i, want) in want.iter_mut().enumerate() {
            let q = ((i * 37) % 64) as u8;
            let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let byte = 64 * n + l + if k % 2 == 1 { 32 } else { 0 };
            ql[byte] |= if k < 2 { q & 15 } else { (q & 15) << 4 };
            qh[32 * n + l] |= (q >> 4) << (2 * k);
            let scale = f32::from(scales[8 * n + l / 16 + 2 * k]);
            *want = 0.5 * scale * (f32::from(q) - 32.0);
        }
        let mut b = ql.to_vec();
        b.extend(qh);
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend(F16_HALF);
        assert_eq!(dequantize(GgmlDType::Q6K, &b).unwrap(), want);
    }

    #[test]
    fn partial_blocks_and_unsupported_types_are_errors() {
        assert!(dequantize(GgmlDType::Q8_0, &[0u8; 33]).is_err());
        assert!(dequantize(GgmlDType::Q2K, &[]).is_err());
        assert!(!is_supported(GgmlDType::Q3K) && is_supported(GgmlDType::Q6K));
        assert_eq!(byte_len(GgmlDType::Q4K, 512).unwrap(), 288);
        assert!(byte_len(GgmlDType::Q4K, 100).is_err());
    }
}
