//! Seeded case generation: reproducible random inputs and the shape matrices the suites sweep.
//!
//! Every suite builds its inputs from a [`CaseRng`] with a fixed seed, so a failure reproduces exactly.
//! Values are drawn in `f32` and rounded once to the element type; the reference and the backend under
//! test receive the same rounded inputs.
//!
//! The shape lists deliberately include degenerate and awkward sizes: one token, one column, widths that
//! are not a multiple of 16 (a device vector unit processes 32-byte blocks, so 7, 33 and 7000 exercise the
//! tail paths), and a DeepSeek-like width.

use crate::Float;
use ndarray::{Array, Dimension, IntoDimension};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator of test inputs (ChaCha8: portable, the same stream on every platform).
#[derive(Debug, Clone)]
pub struct CaseRng {
    rng: ChaCha8Rng,
}

impl CaseRng {
    pub fn new(seed: u64) -> CaseRng {
        CaseRng {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The underlying generator, for draws this type does not wrap.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Elements uniform in `[lo, hi)`, drawn in `f32` and rounded to `T`.
    pub fn uniform<T: Float, D: Dimension>(
        &mut self,
        shape: impl IntoDimension<Dim = D>,
        lo: f32,
        hi: f32,
    ) -> Array<T, D> {
        let dim = shape.into_dimension();
        let span = hi - lo;
        Array::from_shape_simple_fn(dim, || T::from_f32(lo + span * self.rng.gen::<f32>()))
    }

    /// Elements with mean 0 and standard deviation `std` (a sum of uniforms, so bounded by `±sqrt(3)·2·std`):
    /// useful where a heavy tail is not wanted but values should cluster like activations do.
    pub fn normalish<T: Float, D: Dimension>(
        &mut self,
        shape: impl IntoDimension<Dim = D>,
        std: f32,
    ) -> Array<T, D> {
        let dim = shape.into_dimension();
        // Sum of 4 uniforms in [-1, 1): variance 4/3; scale to `std`.
        let k = std / (4.0f32 / 3.0).sqrt();
        Array::from_shape_simple_fn(dim, || {
            let s: f32 = (0..4).map(|_| self.rng.gen_range(-1.0f32..1.0)).sum();
            T::from_f32(k * s)
        })
    }

    /// `i32` elements uniform in `[lo, hi)`. Panics if the range is empty (a bug in the suite, not input).
    pub fn ints<D: Dimension>(
        &mut self,
        shape: impl IntoDimension<Dim = D>,
        lo: i32,
        hi: i32,
    ) -> Array<i32, D> {
        assert!(lo < hi, "CaseRng::ints: empty range [{lo}, {hi})");
        Array::from_shape_simple_fn(shape.into_dimension(), || self.rng.gen_range(lo..hi))
    }

    /// `i64` elements uniform in `[lo, hi)`.
    pub fn ints64<D: Dimension>(
        &mut self,
        shape: impl IntoDimension<Dim = D>,
        lo: i64,
        hi: i64,
    ) -> Array<i64, D> {
        assert!(lo < hi, "CaseRng::ints64: empty range [{lo}, {hi})");
        Array::from_shape_simple_fn(shape.into_dimension(), || self.rng.gen_range(lo..hi))
    }

    /// One `usize` in `[lo, hi]` (inclusive, so `usize_in(1, 1)` is valid).
    pub fn usize_in(&mut self, lo: usize, hi: usize) -> usize {
        self.rng.gen_range(lo..=hi)
    }

    /// One `f32` in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        self.rng.gen_range(lo..hi)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p.clamp(0.0, 1.0))
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        v.shuffle(&mut self.rng);
        v
    }

    /// `k` distinct values from `0..n`, in random order (e.g. the top-k experts of one token).
    pub fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "CaseRng::distinct: {k} > {n}");
        rand::seq::index::sample(&mut self.rng, n, k).into_vec()
    }

    /// A ragged split of `total` into `parts` non-negative sizes (zeros allowed: experts with no tokens).
    pub fn split(&mut self, total: usize, parts: usize) -> Vec<usize> {
        assert!(
            parts > 0 || total == 0,
            "CaseRng::split: {total} into 0 parts"
        );
        let mut cuts: Vec<usize> = (0..parts.saturating_sub(1))
            .map(|_| self.rng.gen_range(0..=total))
            .collect();
        cuts.sort_unstable();
        let mut sizes = Vec::with_capacity(parts);
        let mut prev = 0;
        for c in cuts {
            sizes.push(c - prev);
            prev = c;
        }
        if parts > 0 {
            sizes.push(total - prev);
        }
        sizes
    }

    /// `batch` sequence lengths in `[1, max_len]`, always including 1 and `max_len` when `batch >= 2`
    /// so both extremes are exercised.
    pub fn seq_lens(&mut self, batch: usize, max_len: usize) -> Vec<usize> {
        assert!(max_len >= 1, "CaseRng::seq_lens: max_len 0");
        let mut v: Vec<usize> = (0..batch)
            .map(|_| self.rng.gen_range(1..=max_len))
            .collect();
        if batch >= 2 {
            v[0] = 1;
            v[batch - 1] = max_len;
            v.shuffle(&mut self.rng);
        }
        v
    }
}

/// Convert `f32` values to `T`, rounding to nearest even.
pub fn cast<T: Float, D: Dimension>(a: ndarray::ArrayView<f32, D>) -> Array<T, D> {
    a.mapv(T::from_f32)
}

/// Convert `T` values to `f32` (exact).
pub fn to_f32<T: Float, D: Dimension>(a: ndarray::ArrayView<T, D>) -> Array<f32, D> {
    a.mapv(T::to_f32)
}

/// Token counts (rows) the suites sweep: a single token, a few, one not a power of two, a full tile.
pub const TOKENS: &[usize] = &[1, 2, 5, 16, 37];

/// Hidden widths: 1, tails below/above a 16-element block, a power of two, and a DeepSeek-like 7000.
pub const HIDDEN: &[usize] = &[1, 7, 16, 33, 128, 7000];

/// The `(rows, width)` matrix for row-wise operators: every token count × every width, except that the
/// widest width is paired only with small token counts so a suite stays well under a second.
pub fn row_shapes() -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for &h in HIDDEN {
        for &t in TOKENS {
            if h * t <= 64 * 1024 {
                v.push((t, h));
            }
        }
    }
    v
}

/// `(M, K, N)` for matrix products: degenerate 1×1×1, single-token GEMV, ragged tails, a long reduction.
pub const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 3),
    (2, 16, 16),
    (5, 33, 17),
    (16, 64, 48),
    (3, 7000, 5),
    (37, 129, 7),
];

/// Head counts and rotary widths for RoPE: DeepSeek-V3 uses 64 rotary dims and 128 heads.
pub const ROPE_SHAPES: &[(usize, usize, usize)] =
    &[(1, 1, 2), (3, 2, 8), (5, 4, 64), (2, 128, 64), (17, 3, 64)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Array<f32, _> = CaseRng::new(7).uniform((3, 4), -1.0, 1.0);
        let b: Array<f32, _> = CaseRng::new(7).uniform((3, 4), -1.0, 1.0);
        let c: Array<f32, _> = CaseRng::new(8).uniform((3, 4), -1.0, 1.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| (-1.0..1.0).contains(&v)));
    }

    #[test]
    fn split_sums_and_allows_zeros() {
        let mut r = CaseRng::new(1);
        for parts in 1..10 {
            let s = r.split(5, parts);
            assert_eq!(s.len(), parts);
            assert_eq!(s.iter().sum::<usize>(), 5);
        }
        assert_eq!(r.split(0, 3), vec![0, 0, 0]);
    }

    #[test]
    fn seq_lens_hit_both_extremes() {
        let v = CaseRng::new(3).seq_lens(4, 9);
        assert!(v.contains(&1) && v.contains(&9));
        assert!(v.iter().all(|&l| (1..=9).contains(&l)));
    }

    #[test]
    fn shape_matrix_has_degenerate_and_ragged_cases() {
        let rows = row_shapes();
        assert!(rows.contains(&(1, 1)));
        assert!(rows.iter().any(|&(_, h)| h % 16 != 0 && h > 16));
        assert!(rows.iter().any(|&(_, h)| h == 7000));
    }
}
