//! Rotary position embedding as DeepSeek-V3 uses it, with YaRN scaling.
//!
//! # Frequencies (follows Hugging Face transformers' `_compute_yarn_parameters`, current main)
//! With `d = dim`, `base = theta` and `i = 0 .. d/2`:
//! - plain RoPE: `inv_freq[i] = base^(-2i/d)`;
//! - YaRN: `extra[i] = base^(-2i/d)`, `inter[i] = extra[i] / factor`. The correction dimension for
//!   `r` rotations over the original context `L = original_max_position_embeddings` is
//!   `c(r) = d · ln(L / (2π r)) / (2 ln base)`; `low = max(floor(c(beta_fast)), 0)`,
//!   `high = min(ceil(c(beta_slow)), d - 1)` (transformers applies the floor/ceil when the config's
//!   `truncate` is true, its default and DeepSeek-V3's case; gpt-oss's `truncate: false` is not modelled
//!   here). With `high` nudged by 0.001 when equal to `low`, `ramp[i] = clamp((i - low)/(high - low), 0, 1)`
//!   and `inv_freq[i] = inter[i] · ramp[i] + extra[i] · (1 - ramp[i])`: fast (low `i`) dimensions keep
//!   their frequency, slow ones are interpolated by `factor`.
//! - YaRN's attention factor multiplies every cos and sin: with
//!   `get_mscale(s, m) = 1 if s <= 1 else 0.1 · m · ln(s) + 1`, it is
//!   `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)` when both `mscale` and
//!   `mscale_all_dim` are non-zero, else `get_mscale(factor, 1)`. For DeepSeek-V3 (`mscale` =
//!   `mscale_all_dim` = 1) it is exactly 1.
//! - [`softmax_scale_correction`] is the separate factor DeepSeek multiplies the attention softmax scale
//!   by: `get_mscale(factor, mscale_all_dim)²` when `mscale_all_dim` is non-zero (transformers'
//!   `DeepseekV3Attention`; DeepSeek's own `inference/model.py` does the same with its `mscale` argument,
//!   which holds the config's `mscale_all_dim`). For DeepSeek-V3 it is `(0.1 · ln 40 + 1)² ≈ 1.8739`.
//!
//! Version notes. Some transformers 4.5x releases replaced `factor` by `max_position_embeddings /
//! original_max_position_embeddings` whenever the latter was present; the current code (v5,
//! `rope_parameters`) takes the config's `factor` and uses that ratio only when `factor` is absent. For
//! DeepSeek-V3 both give 40 (163840 / 4096); this module takes `factor` as given, so a caller reading an
//! old-style config computes the ratio itself. The `truncate` option (floor/ceil of the correction range)
//! only exists in newer releases; older ones always truncated, which is the behaviour implemented here.
//! Transformers applies YaRN whenever a `yarn` block is present; DeepSeek's `inference/model.py` applies it
//! only when its `max_seq_len` exceeds the original context. Here: whenever `scaling` is `Some`.
//!
//! Precision: the table is computed in `f64` and stored as `f32`. Transformers computes the angles
//! `position · inv_freq` in `f32`, which at positions near 10⁵ carries absolute errors of order 10⁻² rad;
//! this reference is accurate to `f32` rounding of the final cos/sin instead.
//!
//! # Layouts
//! - [`RopeLayout::Interleaved`] rotates pairs `(x[2i], x[2i+1])` by angle `θ_i` and writes them back in
//!   place: `y[2i] = x[2i]·cos − x[2i+1]·sin`, `y[2i+1] = x[2i+1]·cos + x[2i]·sin`. This is DeepSeek's
//!   `apply_rotary_emb` (complex multiplication of consecutive pairs). Transformers' `rope_interleave`
//!   path instead first de-interleaves q and k (evens, then odds) and applies `rotate_half`, so its output
//!   is the same numbers in the half-split order. Attention only uses `q · k` over the rotary dimensions,
//!   and q and k are permuted alike, so the scores are identical either way; keeping the layout avoids a
//!   permutation and matches the checkpoint's weight order.
//! - [`RopeLayout::HalfSplit`] rotates pairs `(x[i], x[i + d/2])` (`rotate_half`).
//!
//! # Validation
//! [`RopeTable::new`] checks the configuration (even `dim >= 2`, `theta > 1`, positive finite YaRN
//! parameters) and caps the table at [`MAX_TABLE_ELEMENTS`] per cos/sin array. [`rope`] checks that `x`'s
//! last axis is the table's `dim`, that `positions` has one entry per token, that every position is inside
//! the table, and that the table's cos and sin agree in shape.
use crate::error::{expect_shape, invalid, shape_error};
use crate::{Float, OpsError, Result};
use ndarray::{Array2, Array3, ArrayView1, ArrayView3, Axis};
use std::f64::consts::PI;

/// Where the two elements of each rotated pair sit in the head dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(x[2i], x[2i+1])` (DeepSeek's `rope_interleave`). Output keeps the same layout.
    Interleaved,
    /// Pairs `(x[i], x[i + d/2])` (`rotate_half`).
    HalfSplit,
}

/// YaRN parameters as in a Hugging Face `rope_scaling` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnScaling {
    pub factor: f32,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// 0 means absent from the config (see the module docs for how that changes the attention factor).
    pub mscale: f32,
    /// 0 means absent from the config.
    pub mscale_all_dim: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Rotated dimension (DeepSeek-V3: `qk_rope_head_dim` = 64).
    pub dim: usize,
    pub theta: f32,
    pub scaling: Option<YarnScaling>,
}

/// Largest cos (and sin) table [`RopeTable::new`] builds, in elements (`max_positions · dim/2`):
/// 2²⁷ elements = 512 MiB per array, ten times DeepSeek-V3's 163840 × 32 × 25.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 27;

/// Precomputed cos/sin, `[max_positions, dim/2]` each, already multiplied by YaRN's attention factor.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Array2<f32>,
    pub sin: Array2<f32>,
}

/// YaRN's `get_mscale(scale, mscale)`: `1` for `scale <= 1`, else `0.1 · mscale · ln(scale) + 1`.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

fn validate(cfg: &RopeConfig) -> Result<()> {
    const OP: &str = "RopeTable::new";
    if cfg.dim < 2 || cfg.dim % 2 == 1 {
        return Err(invalid(
            OP,
            "cfg.dim",
            format!("must be even and >= 2, got {}", cfg.dim),
        ));
    }
    // theta <= 1 makes every frequency 1 or larger and YaRN's correction dimension divide by ln(theta) <= 0.
    if !(cfg.theta.is_finite() && cfg.theta > 1.0) {
        return Err(invalid(
            OP,
            "cfg.theta",
            format!("must be finite and > 1, got {}", cfg.theta),
        ));
    }
    if let Some(y) = &cfg.scaling {
        let positive = |arg: &'static str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(OP, arg, format!("must be finite and > 0, got {v}")))
            }
        };
        positive("cfg.scaling.factor", y.factor)?;
        positive("cfg.scaling.beta_fast", y.beta_fast)?;
        positive("cfg.scaling.beta_slow", y.beta_slow)?;
        if y.original_max_position_embeddings == 0 {
            return Err(invalid(
                OP,
                "cfg.scaling.original_max_position_embeddings",
                "must be >= 1",
            ));
        }
        if !y.mscale.is_finite() {
            return Err(invalid(
                OP,
                "cfg.scaling.mscale",
                format!("must be finite, got {}", y.mscale),
            ));
        }
        if !y.mscale_all_dim.is_finite() {
            return Err(invalid(
                OP,
                "cfg.scaling.mscale_all_dim",
                format!("must be finite, got {}", y.mscale_all_dim),
            ));
        }
    }
    Ok(())
}

/// YaRN's `(low, high)` correction range for `cfg` (after floor/ceil and clamping), as used by the ramp.
pub fn yarn_correction_range(dim: usize, theta: f64, y: &YarnScaling) -> (f64, f64) {
    let d = dim as f64;
    let orig = y.original_max_position_embeddings as f64;
    let corr_dim = |rotations: f64| d * (orig / (rotations * 2.0 * PI)).ln() / (2.0 * theta.ln());
    let low = corr_dim(y.beta_fast as f64).floor().max(0.0);
    let high = corr_dim(y.beta_slow as f64).ceil().min(d - 1.0);
    (low, high)
}

/// The inverse frequencies `inv_freq[i]`, `i < dim/2`, of `cfg` (YaRN-blended when scaling is set).
pub fn inv_freq(cfg: &RopeConfig) -> Result<Vec<f64>> {
    validate(cfg)?;
    let d = cfg.dim as f64;
    let theta = cfg.theta as f64;
    let extra: Vec<f64> = (0..cfg.dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / d))
        .collect();
    let Some(y) = &cfg.scaling else {
        return Ok(extra);
    };
    let (low, mut high) = yarn_correction_range(cfg.dim, theta, y);
    if low == high {
        high += 0.001; // transformers' guard against a zero-width ramp
    }
    let factor = y.factor as f64;
    Ok(extra
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            (e / factor) * ramp + e * (1.0 - ramp)
        })
        .collect())
}

/// YaRN's attention factor that multiplies cos and sin (1 without scaling). See the module docs.
pub fn attention_factor(cfg: &RopeConfig) -> f32 {
    match &cfg.scaling {
        None => 1.0,
        Some(y) => {
            let f = y.factor as f64;
            let v = if y.mscale != 0.0 && y.mscale_all_dim != 0.0 {
                yarn_get_mscale(f, y.mscale as f64) / yarn_get_mscale(f, y.mscale_all_dim as f64)
            } else {
                yarn_get_mscale(f, 1.0)
            };
            v as f32
        }
    }
}

impl RopeTable {
    pub fn new(cfg: &RopeConfig, max_positions: usize) -> Result<Self> {
        let freqs = inv_freq(cfg)?;
        let half = cfg.dim / 2;
        let elements = max_positions.checked_mul(half);
        if !matches!(elements, Some(n) if n <= MAX_TABLE_ELEMENTS) {
            return Err(invalid(
                "RopeTable::new",
                "max_positions",
                format!("{max_positions} positions × {half} exceeds {MAX_TABLE_ELEMENTS} elements"),
            ));
        }
        let scale = attention_factor(cfg) as f64;
        let mut cos = Array2::<f32>::zeros((max_positions, half));
        let mut sin = Array2::<f32>::zeros((max_positions, half));
        for (p, (mut c, mut s)) in cos.outer_iter_mut().zip(sin.outer_iter_mut()).enumerate() {
            for (i, &f) in freqs.iter().enumerate() {
                let angle = p as f64 * f;
                c[i] = (angle.cos() * scale) as f32;
                s[i] = (angle.sin() * scale) as f32;
            }
        }
        Ok(RopeTable { cos, sin })
    }

    /// Number of positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.nrows()
    }

    /// The rotated dimension (twice the table's width).
    pub fn dim(&self) -> usize {
        self.cos.ncols() * 2
    }
}

/// The factor DeepSeek multiplies the softmax scale by under YaRN (`mscale²`); 1 without scaling.
pub fn softmax_scale_correction(cfg: &RopeConfig) -> f32 {
    match &cfg.scaling {
        Some(y) if y.mscale_all_dim != 0.0 => {
            let m = yarn_get_mscale(y.factor as f64, y.mscale_all_dim as f64);
            (m * m) as f32
        }
        _ => 1.0,
    }
}

/// The checks of [`rope`]: the table's halves agree, `x` is `[T, H, dim]` with the table's
/// `dim >= 1`, `positions` is `[T]` and every position is a row of the table. The device backend runs
/// the same ones.
pub fn check_rope<T>(
    x: &ArrayView3<T>,
    positions: &ArrayView1<i32>,
    table: &RopeTable,
) -> Result<()> {
    const OP: &str = "rope";
    if table.cos.shape() != table.sin.shape() {
        return Err(shape_error(
            OP,
            "table.sin",
            table.sin.shape(),
            format!("{:?} (shape of table.cos)", table.cos.shape()),
        ));
    }
    let (t, _, d) = x.dim();
    if d != table.dim() || d == 0 {
        return Err(shape_error(
            OP,
            "x",
            x.shape(),
            format!("[T, H, {}] (the table's dim)", table.dim()),
        ));
    }
    expect_shape(OP, "positions", positions.shape(), &[t])?;
    let rows = table.max_positions();
    for (i, &p) in positions.iter().enumerate() {
        if p < 0 || p as usize >= rows {
            return Err(OpsError::IndexOutOfRange {
                op: OP,
                arg: "positions",
                index: p as i64,
                position: i,
                bound: rows as i64,
            });
        }
    }
    Ok(())
}

/// Rotate `x` `[T, H, dim]` at `positions` `[T]` (each `< table rows`).
pub fn rope<T: Float>(
    x: ArrayView3<T>,
    positions: ArrayView1<i32>,
    table: &RopeTable,
    layout: RopeLayout,
) -> Result<Array3<T>> {
    check_rope(&x, &positions, table)?;
    let d = x.dim().2;
    let half = d / 2;
    // For pair i: the indices of its two elements.
    let pair = |i: usize| match layout {
        RopeLayout::Interleaved => (2 * i, 2 * i + 1),
        RopeLayout::HalfSplit => (i, i + half),
    };
    let mut y = Array3::<T>::default(x.raw_dim());
    for ((xt, mut yt), &p) in x
        .axis_iter(Axis(0))
        .zip(y.axis_iter_mut(Axis(0)))
        .zip(positions)
    {
        let (cos, sin) = (table.cos.row(p as usize), table.sin.row(p as usize));
        for (xh, mut yh) in xt.outer_iter().zip(yt.outer_iter_mut()) {
            for i in 0..half {
                let (a, b) = pair(i);
                let (x0, x1) = (xh[a].to_f32(), xh[b].to_f32());
                let (c, s) = (cos[i], sin[i]);
                yh[a] = T::from_f32(x0 * c - x1 * s);
                yh[b] = T::from_f32(x1 * c + x0 * s);
            }
        }
    }
    Ok(y)
}
