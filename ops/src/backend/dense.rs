//! The dense operator family as a backend trait, and its [`Cpu`] implementation (the references).
//!
//! Each method has the arguments and result of the free function of the same name; see those functions
//! for the contracts. Host-side helpers that a device does not run (building a [`RopeTable`], the
//! softmax-scale correction, the [`Sampler`](crate::sampling::Sampler)) are not part of the trait.
use super::{Backend, Cpu};
use crate::rope::{RopeLayout, RopeTable};
use crate::{activation, linear, norm, rope, sampling, Float, Result};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

/// Dense operators: normalisation, rotary embedding, matrix products, activation, embedding, softmax,
/// argmax.
pub trait DenseOps: Backend {
    /// See [`norm::rms_norm`].
    fn rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>>;

    /// See [`norm::add_rms_norm`]; returns `(normed, sum)`.
    fn add_rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        residual: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)>;

    /// See [`rope::rope`].
    fn rope<T: Float>(
        &self,
        x: ArrayView3<T>,
        positions: ArrayView1<i32>,
        table: &RopeTable,
        layout: RopeLayout,
    ) -> Result<Array3<T>>;

    /// See [`linear::linear`].
    fn linear<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView2<T>,
        bias: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>>;

    /// See [`linear::batched_matmul`].
    fn batched_matmul<T: Float>(&self, a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>>;

    /// See [`activation::silu_mul`].
    fn silu_mul<T: Float>(&self, gate_up: ArrayView2<T>) -> Result<Array2<T>>;

    /// See [`sampling::embedding`].
    fn embedding<T: Float>(&self, table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>>;

    /// See [`sampling::softmax`].
    fn softmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array2<f32>>;

    /// See [`sampling::argmax`].
    fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>>;
}

impl DenseOps for Cpu {
    fn rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>> {
        norm::rms_norm(x, weight, eps)
    }

    fn add_rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        residual: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)> {
        norm::add_rms_norm(x, residual, weight, eps)
    }

    fn rope<T: Float>(
        &self,
        x: ArrayView3<T>,
        positions: ArrayView1<i32>,
        table: &RopeTable,
        layout: RopeLayout,
    ) -> Result<Array3<T>> {
        rope::rope(x, positions, table, layout)
    }

    fn linear<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView2<T>,
        bias: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>> {
        linear::linear(x, w, bias)
    }

    fn batched_matmul<T: Float>(&self, a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
        linear::batched_matmul(a, b)
    }

    fn silu_mul<T: Float>(&self, gate_up: ArrayView2<T>) -> Result<Array2<T>> {
        activation::silu_mul(gate_up)
    }

    fn embedding<T: Float>(&self, table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
        sampling::embedding(table, ids)
    }

    fn softmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array2<f32>> {
        sampling::softmax(x)
    }

    fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
        sampling::argmax(x)
    }
}
