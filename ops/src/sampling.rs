//! Embedding lookup, softmax, argmax and seeded temperature/top-p sampling.
use crate::{Float, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// Rows of `table` `[V, H]` at `ids` `[T]`.
pub fn embedding<T: Float>(table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
    let _ = (table, ids);
    todo!("contract stub")
}

/// Softmax over the last axis, computed in f32.
pub fn softmax<T: Float>(x: ArrayView2<T>) -> Result<Array2<f32>> {
    let _ = x;
    todo!("contract stub")
}

/// Index of the maximum of each row; ties pick the lowest index.
pub fn argmax<T: Float>(x: ArrayView2<T>) -> Result<Array1<i32>> {
    let _ = x;
    todo!("contract stub")
}

/// Temperature/top-p sampler with a seeded generator: the same seed gives the same tokens.
#[derive(Debug, Clone)]
pub struct Sampler {
    _private: (),
}

impl Sampler {
    /// `temperature` 0 means greedy; `top_p` in (0, 1].
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Self> {
        let _ = (temperature, top_p, seed);
        todo!("contract stub")
    }

    /// Draw one token from `logits` `[V]`.
    pub fn sample<T: Float>(&mut self, logits: ArrayView1<T>) -> Result<i32> {
        let _ = logits;
        todo!("contract stub")
    }
}
