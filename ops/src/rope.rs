//! Rotary position embedding as DeepSeek-V3 uses it, with YaRN scaling.
use crate::{Float, Result};
use ndarray::{Array2, Array3, ArrayView1, ArrayView3};

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
    pub mscale: f32,
    pub mscale_all_dim: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Rotated dimension (DeepSeek-V3: `qk_rope_head_dim` = 64).
    pub dim: usize,
    pub theta: f32,
    pub scaling: Option<YarnScaling>,
}

/// Precomputed cos/sin, `[max_positions, dim/2]` each, already multiplied by YaRN's attention factor.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Array2<f32>,
    pub sin: Array2<f32>,
}

impl RopeTable {
    pub fn new(cfg: &RopeConfig, max_positions: usize) -> Result<Self> {
        let _ = (cfg, max_positions);
        todo!("contract stub")
    }
}

/// The factor DeepSeek multiplies the softmax scale by under YaRN (`mscale²`); 1 without scaling.
pub fn softmax_scale_correction(cfg: &RopeConfig) -> f32 {
    let _ = cfg;
    todo!("contract stub")
}

/// Rotate `x` `[T, H, dim]` at `positions` `[T]` (each `< table rows`).
pub fn rope<T: Float>(
    x: ArrayView3<T>,
    positions: ArrayView1<i32>,
    table: &RopeTable,
    layout: RopeLayout,
) -> Result<Array3<T>> {
    let _ = (x, positions, table, layout);
    todo!("contract stub")
}
