//! FP8 e4m3 ("e4m3fn": no infinities, one NaN pattern per sign) and block dequantization.
//!
//! The released DeepSeek-V3/R1 checkpoints store most linear weights `W` `[N, K]` as e4m3 with a
//! `weight_scale_inv` `[ceil(N/bn), ceil(K/bk)]` (f32): `W[i, j] = q[i, j] · scale_inv[i / bn, j / bk]`. Edge
//! blocks are partial when N or K is not a multiple of the block size.

use ndarray::{Array2, ArrayView2};

/// The value of one e4m3fn byte: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is
/// subnormal (`m/8 · 2^-6`); `S.1111.111` is NaN; the largest finite value is 448.
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((byte >> 3) & 0x0f);
    let mant = f32::from(byte & 0x07);
    if exp == 0x0f && mant == 7.0 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 {
        mant / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f32.powi(exp - 7)
    };
    sign * magnitude
}

/// The first element of a block-quantized weight whose value is not finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFinite {
    pub row: usize,
    pub col: usize,
    /// The stored e4m3 byte (0x7F/0xFF is NaN).
    pub byte: u8,
    /// Its block's scale.
    pub scale: f32,
    /// `e4m3(byte) · scale`: NaN, or an infinity when the product overflows.
    pub value: f32,
}

/// `q` decoded and multiplied by its block's scale, checking each product as it is made; the first NaN or
/// infinity (a NaN byte, or a product that overflows) is returned instead. The caller has checked that
/// `scale_inv` has `[ceil(N/block[0]), ceil(K/block[1])]` entries.
pub fn dequantize_blocks(
    q: ArrayView2<u8>,
    scale_inv: ArrayView2<f32>,
    block: [usize; 2],
) -> Result<Array2<f32>, NonFinite> {
    let table: Vec<f32> = (0..=255u8).map(e4m3_to_f32).collect();
    let mut out = Vec::with_capacity(q.len());
    for ((row, col), &byte) in q.indexed_iter() {
        let scale = scale_inv[[row / block[0], col / block[1]]];
        let value = table[usize::from(byte)] * scale;
        if !value.is_finite() {
            return Err(NonFinite {
                row,
                col,
                byte,
                scale,
                value,
            });
        }
        out.push(value);
    }
    Ok(Array2::from_shape_vec(q.dim(), out).expect("one value per byte, in row-major order"))
}

/// Checks `q` as [`dequantize_blocks`] does (the first NaN byte, or product with its block's scale
/// that is not finite, is returned) without materializing the dequantized matrix: for weights that stay
/// FP8 on the device.
pub fn check_blocks(
    q: ArrayView2<u8>,
    scale_inv: ArrayView2<f32>,
    block: [usize; 2],
) -> Result<(), NonFinite> {
    let table: Vec<f32> = (0..=255u8).map(e4m3_to_f32).collect();
    for ((row, col), &byte) in q.indexed_iter() {
        let scale = scale_inv[[row / block[0], col / block[1]]];
        let value = table[usize::from(byte)] * scale;
        if !value.is_finite() {
            return Err(NonFinite {
                row,
                col,
                byte,
                scale,
                value,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_hand_worked_values() {
        // 0.0111.000 = 2^(7-7) = 1
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        // 0.1111.110 = 1.75 · 2^8 = 448, the largest finite value
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        // 1.1000.100 = -(1.5 · 2^1) = -3
        assert_eq!(e4m3_to_f32(0xc4), -3.0);
        // 0.0000.001 = 1/8 · 2^-6 = 2^-9, the smallest subnormal
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        // 0.0001.000 = 2^-6, the smallest normal
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x80), 0.0);
        assert!(e4m3_to_f32(0x7f).is_nan() && e4m3_to_f32(0xff).is_nan());
        // 0.1111.000 is finite in e4m3fn (no infinities): 2^8
        assert_eq!(e4m3_to_f32(0x78), 256.0);
    }

    #[test]
    fn partial_edge_blocks_take_their_own_scale() {
        // 3×5 weight, 2×2 blocks → scales [2, 3]; every byte is 1.0.
        let q = Array2::from_elem((3, 5), 0x38u8);
        let s = ndarray::arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let w = dequantize_blocks(q.view(), s.view(), [2, 2]).unwrap();
        let expected = ndarray::arr2(&[
            [1.0, 1.0, 2.0, 2.0, 3.0],
            [1.0, 1.0, 2.0, 2.0, 3.0],
            [4.0, 4.0, 5.0, 5.0, 6.0],
        ]);
        assert_eq!(w, expected);
    }

    #[test]
    fn nan_bytes_and_overflowing_products_are_reported_at_their_index() {
        let mut q = Array2::from_elem((3, 5), 0x38u8);
        q[[2, 3]] = 0x7f;
        q[[1, 4]] = 0xff; // the first in row-major order
        let s = ndarray::arr2(&[[1.0f32, 1.0, 1.0], [1.0, 1.0, 1.0]]);
        let bad = dequantize_blocks(q.view(), s.view(), [2, 2]).unwrap_err();
        assert_eq!((bad.row, bad.col, bad.byte), (1, 4, 0xff));
        assert!(bad.value.is_nan());
        // 448 · 1e37 overflows f32.
        let q = Array2::from_elem((1, 1), 0x7eu8);
        let s = ndarray::arr2(&[[1e37f32]]);
        let bad = dequantize_blocks(q.view(), s.view(), [1, 1]).unwrap_err();
        assert_eq!((bad.row, bad.col, bad.value), (0, 0, f32::INFINITY));
    }
}
