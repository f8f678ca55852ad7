//! The dense operator family as a backend trait, with its [`Cpu`](super::Cpu) (the references) and
//! [`Fallback`](super::Fallback) implementations (made by `op_family!`).
//!
//! Each method has the arguments and result of the free function of the same name; see those functions
//! for the contracts. Host-side helpers that a device does not run (building a [`RopeTable`], the
//! softmax-scale correction, a single [`Sampler`]'s draw) are not part of the trait; sampling a batch
//! of rows ([`sampling::sample_top_p`], one sampler per row) is.
use super::family::op_family;
use crate::rope::{RopeLayout, RopeTable};
use crate::sampling::Sampler;
use crate::{activation, linear, norm, rope, sampling};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

op_family! {
    /// Dense operators: normalisation, rotary embedding, matrix products, activation, embedding,
    /// softmax, argmax, top-p sampling.
    pub trait DenseOps {
        /// See [`norm::rms_norm`].
        fn rms_norm(x: ArrayView2<T>, weight: ArrayView1<T>, eps: f32) -> Array2<T>
            = norm::rms_norm, RmsNorm;

        /// See [`norm::add_rms_norm`]; returns `(normed, sum)`.
        fn add_rms_norm(
            x: ArrayView2<T>,
            residual: ArrayView2<T>,
            weight: ArrayView1<T>,
            eps: f32,
        ) -> (Array2<T>, Array2<T>) = norm::add_rms_norm, AddRmsNorm;

        /// See [`rope::rope`].
        fn rope(
            x: ArrayView3<T>,
            positions: ArrayView1<i32>,
            table: &RopeTable,
            layout: RopeLayout,
        ) -> Array3<T> = rope::rope, Rope;

        /// See [`linear::linear`].
        fn linear(x: ArrayView2<T>, w: ArrayView2<T>, bias: Option<ArrayView1<T>>) -> Array2<T>
            = linear::linear, Linear;

        /// See [`linear::batched_matmul`].
        fn batched_matmul(a: ArrayView3<T>, b: ArrayView3<T>) -> Array3<T>
            = linear::batched_matmul, BatchedMatmul;

        /// See [`activation::silu_mul`].
        fn silu_mul(gate_up: ArrayView2<T>) -> Array2<T> = activation::silu_mul, SiluMul;

        /// See [`sampling::embedding`].
        fn embedding(table: ArrayView2<T>, ids: ArrayView1<i32>) -> Array2<T>
            = sampling::embedding, Embedding;

        /// See [`sampling::softmax`].
        fn softmax(x: ArrayView2<T>) -> Array2<f32> = sampling::softmax, Softmax;

        /// See [`sampling::argmax`].
        fn argmax(x: ArrayView2<T>) -> Array1<i32> = sampling::argmax, Argmax;

        /// See [`sampling::sample_top_p`]: one id per row of `logits`, row `r` drawn by `samplers[r]`
        /// (advanced by one draw unless greedy).
        fn sample_top_p(&mut samplers: [Sampler], logits: ArrayView2<T>) -> Array1<i32>
            = sampling::sample_top_p, SampleTopP;
    }
}
