//! Dense matrix products: `linear` (`x · wᵀ`, weights stored `[out, in]` as in Hugging Face checkpoints)
//! and `batched_matmul`.
//!
//! Validates: the inner dimensions agree and the bias has one entry per output column. Trusts the values.
//!
//! Numerics: products and sums in `f32`, one rounding on store. Each output element is the dot product
//! of two contiguous `f32` rows accumulated in a **fixed order** (eight interleaved partial sums, lane
//! `j` taking elements `k ≡ j (mod 8)`, combined pairwise, then the tail in order), so a row's result does
//! not depend on how many rows are computed with it: a token gives bit-identical outputs whether it is
//! run alone (decode) or in a batch (prefill). The bias is added in `f32` before the rounding.
//!
//! Speed: this is the reference the model runs tiny checkpoints through, so it is blocked for the cache
//! (a block of `x` rows stays hot while every weight row streams past it once, converted to `f32` a row
//! at a time) and its inner loop is written so the compiler vectorises it. No BLAS.
use crate::error::shape_error;
use crate::{Float, Result};
use ndarray::{Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

const LANES: usize = 8;
/// Rows of `x` kept hot while the weight rows stream past (and processed four at a time).
const ROW_BLOCK: usize = 32;

/// View a `LANES`-element chunk as an array, so the inner loops have a compile-time trip count and no
/// bounds checks (chunks come from `chunks_exact(LANES)`, so the conversion cannot fail).
#[inline(always)]
fn lanes(chunk: &[f32]) -> &[f32; LANES] {
    chunk
        .try_into()
        .expect("chunks_exact yields LANES elements")
}

/// Fixed-order dot product (see the module docs for the order). Also used by `norm` for sums of
/// squares.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        let (x, y) = (lanes(x), lanes(y));
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    finish(acc, at, bt)
}

/// Four dot products sharing `w`, each in exactly the order of [`dot`].
#[inline]
fn dot4(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let chunks = w
        .chunks_exact(LANES)
        .zip(x[0].chunks_exact(LANES))
        .zip(x[1].chunks_exact(LANES))
        .zip(x[2].chunks_exact(LANES))
        .zip(x[3].chunks_exact(LANES));
    for ((((wc, x0), x1), x2), x3) in chunks {
        let wc = lanes(wc);
        for (acc, xc) in acc.iter_mut().zip([x0, x1, x2, x3]) {
            let xc = lanes(xc);
            for j in 0..LANES {
                acc[j] += xc[j] * wc[j];
            }
        }
    }
    let n = w.len() / LANES * LANES;
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = finish(acc[r], &x[r][n..], &w[n..]);
    }
    out
}

#[inline]
fn finish(acc: [f32; LANES], at: &[f32], bt: &[f32]) -> f32 {
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

/// Copy a weight row into `dst` as `f32`; a contiguous row converts as a plain slice loop.
#[inline]
fn load_row<T: Float>(dst: &mut [f32], row: ArrayView1<T>) {
    match row.as_slice() {
        Some(src) => dst.iter_mut().zip(src).for_each(|(d, v)| *d = v.to_f32()),
        None => dst.iter_mut().zip(row).for_each(|(d, v)| *d = v.to_f32()),
    }
}

/// `out[m, n] = dot(x[m], w[n]) + bias[n]` with `x` already `f32`, row-major `[M, K]`.
fn gemm_nt<T: Float>(
    x: &[f32],
    m: usize,
    k: usize,
    w: ArrayView2<T>,
    bias: Option<&[f32]>,
) -> Array2<T> {
    let n = w.nrows();
    let mut out = Array2::<T>::default((m, n));
    if m == 0 || n == 0 {
        return out;
    }
    let mut wrow = vec![0f32; k];
    for m0 in (0..m).step_by(ROW_BLOCK) {
        let m1 = (m0 + ROW_BLOCK).min(m);
        for (j, wr) in w.rows().into_iter().enumerate() {
            load_row(&mut wrow, wr);
            let b = bias.map_or(0.0, |b| b[j]);
            let mut r = m0;
            while r + 4 <= m1 {
                let rows = [0, 1, 2, 3].map(|i| &x[(r + i) * k..(r + i + 1) * k]);
                let d = dot4(rows, &wrow);
                for i in 0..4 {
                    out[[r + i, j]] = T::from_f32(d[i] + b);
                }
                r += 4;
            }
            while r < m1 {
                out[[r, j]] = T::from_f32(dot(&x[r * k..(r + 1) * k], &wrow) + b);
                r += 1;
            }
        }
    }
    out
}

/// Row-major `f32` copy of a 2-D view.
fn to_f32_rows<T: Float>(a: ArrayView2<T>) -> Vec<f32> {
    a.iter().map(|v| v.to_f32()).collect()
}

/// The checks of [`linear`]: `w` is `[N, K]` with `x`'s K, `bias` (when given) is `[N]`. The device
/// backend runs the same ones.
pub fn check_linear<T>(
    x: &ArrayView2<T>,
    w: &ArrayView2<T>,
    bias: Option<&ArrayView1<T>>,
) -> Result<()> {
    const OP: &str = "linear";
    let k = x.ncols();
    if w.ncols() != k {
        return Err(shape_error(
            OP,
            "w",
            w.shape(),
            format!("[N, {k}] (K of x)"),
        ));
    }
    match bias {
        Some(b) if b.len() != w.nrows() => Err(shape_error(
            OP,
            "bias",
            b.shape(),
            format!("[{}] (N of w)", w.nrows()),
        )),
        _ => Ok(()),
    }
}

/// The checks of [`batched_matmul`]: `b` is `[B, K, N]` with `a`'s B and K. The device backend runs
/// the same ones.
pub fn check_batched_matmul<T>(a: &ArrayView3<T>, b: &ArrayView3<T>) -> Result<()> {
    let (batch, _, k) = a.dim();
    let (bb, bk, _) = b.dim();
    if bb != batch || bk != k {
        return Err(shape_error(
            "batched_matmul",
            "b",
            b.shape(),
            format!("[{batch}, {k}, N] (B and K of a)"),
        ));
    }
    Ok(())
}

/// `y = x · wᵀ (+ bias)`, `x` `[M, K]`, `w` `[N, K]` as stored in Hugging Face checkpoints.
pub fn linear<T: Float>(
    x: ArrayView2<T>,
    w: ArrayView2<T>,
    bias: Option<ArrayView1<T>>,
) -> Result<Array2<T>> {
    check_linear(&x, &w, bias.as_ref())?;
    let (m, k) = x.dim();
    let bias: Option<Vec<f32>> = bias.map(|b| b.iter().map(|v| v.to_f32()).collect());
    let xf = to_f32_rows(x);
    Ok(gemm_nt(&xf, m, k, w, bias.as_deref()))
}

/// `c[b] = a[b] · b[b]`, `a` `[B, M, K]`, `b` `[B, K, N]`.
pub fn batched_matmul<T: Float>(a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
    check_batched_matmul(&a, &b)?;
    let (batch, m, k) = a.dim();
    let n = b.dim().2;
    let mut c = Array3::<T>::default((batch, m, n));
    for ((ai, bi), mut ci) in a.outer_iter().zip(b.outer_iter()).zip(c.outer_iter_mut()) {
        let af = to_f32_rows(ai);
        // b[i] is [K, N]; its transpose [N, K] gives the weight rows the kernel streams.
        let prod = gemm_nt(&af, m, k, bi.reversed_axes(), None);
        ci.assign(&prod);
    }
    Ok(c)
}
