//! [`DenseOps`] on the device: rms_norm, add_rms_norm, rope, silu_mul and linear run their kernels;
//! batched_matmul runs the linear kernel once per batch on the host-transposed right operand;
//! embedding gathers the table's rows with `gather_rows_<t>` (ids checked on the host first) and argmax
//! runs `argmax_<t>` (rows holding NaN or an infinity, which the kernel marks -1, are answered on the
//! host by the reference); sample_top_p is [`Npu::sample`] (`sample_top_p_<t>`, `sampling.rs`); softmax runs
//! `softmax_<t>`.
//!
//! Validation is the reference's own: each method first calls the `check_*` function its reference
//! calls (in `norm`, `rope`, `linear`, `activation`), so the same inputs are rejected with the same
//! errors before anything reaches the device.

use dsnpu_kernels::launch::{self, RopeShape, RowSource};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis};

use super::{by_dtype, DevElem, Npu};
use crate::backend::DenseOps;
use crate::rope::{RopeLayout, RopeTable};
use crate::sampling::Sampler;
use crate::{activation, linear, norm, rope, sampling, Float, Result};

fn array2<T>(rows: usize, cols: usize, v: Vec<T>) -> Array2<T> {
    Array2::from_shape_vec((rows, cols), v).expect("the kernel output holds rows x cols elements")
}

impl Npu {
    fn rms_norm_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>> {
        const OP: &str = "rms_norm";
        let (rows, cols) = x.dim();
        let xd = self.upload::<T, E>(OP, x.iter())?;
        let wd = self.upload::<T, E>(OP, weight.iter())?;
        let mut yd = self.alloc::<E>(OP, rows * cols)?;
        launch::rms_norm(&self.lib, &self.stream, &xd, &wd, &mut yd, rows, eps)
            .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        Ok(array2(rows, cols, self.download::<T, E>(OP, &yd)?))
    }

    fn add_rms_norm_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        residual: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)> {
        const OP: &str = "add_rms_norm";
        let (rows, cols) = x.dim();
        let xd = self.upload::<T, E>(OP, x.iter())?;
        let rd = self.upload::<T, E>(OP, residual.iter())?;
        let wd = self.upload::<T, E>(OP, weight.iter())?;
        let mut yd = self.alloc::<E>(OP, rows * cols)?;
        let mut sd = self.alloc::<E>(OP, rows * cols)?;
        launch::add_rms_norm(
            &self.lib,
            &self.stream,
            &xd,
            &rd,
            &wd,
            &mut yd,
            &mut sd,
            rows,
            eps,
        )
        .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        let y = array2(rows, cols, self.download::<T, E>(OP, &yd)?);
        let s = array2(rows, cols, self.download::<T, E>(OP, &sd)?);
        Ok((y, s))
    }

    fn rope_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView3<T>,
        positions: ArrayView1<i32>,
        table: &RopeTable,
        layout: RopeLayout,
    ) -> Result<Array3<T>> {
        const OP: &str = "rope";
        let (tokens, heads, dim) = x.dim();
        let xd = self.upload::<T, E>(OP, x.iter())?;
        let pos: Vec<i32> = positions.iter().copied().collect();
        let pd = self.upload_raw(OP, &pos)?;
        let cos: Vec<f32> = table.cos.iter().copied().collect();
        let sin: Vec<f32> = table.sin.iter().copied().collect();
        let (cd, sd) = (self.upload_raw(OP, &cos)?, self.upload_raw(OP, &sin)?);
        let mut yd = self.alloc::<E>(OP, x.len())?;
        let layout = match layout {
            RopeLayout::Interleaved => dsnpu_kernels::RopeLayout::Interleaved,
            RopeLayout::HalfSplit => dsnpu_kernels::RopeLayout::HalfSplit,
        };
        let shape = RopeShape::dense(tokens, heads, dim, table.max_positions(), layout);
        launch::rope(&self.lib, &self.stream, &xd, &pd, &cd, &sd, &mut yd, shape)
            .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        let y = self.download::<T, E>(OP, &yd)?;
        Ok(Array3::from_shape_vec((tokens, heads, dim), y).expect("y holds x's elements"))
    }

    fn silu_mul_as<T: Float, E: DevElem>(&self, gate_up: ArrayView2<T>) -> Result<Array2<T>> {
        const OP: &str = "silu_mul";
        let (rows, width) = gate_up.dim();
        let inter = width / 2;
        let gd = self.upload::<T, E>(OP, gate_up.iter())?;
        let mut od = self.alloc::<E>(OP, rows * inter)?;
        launch::silu_mul(&self.lib, &self.stream, &gd, &mut od, rows, inter)
            .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        Ok(array2(rows, inter, self.download::<T, E>(OP, &od)?))
    }

    /// `x · wᵀ (+ bias)` for non-empty `[m, k]` x `[n, k]`; `w_rows` yields w's rows in order.
    fn linear_as<'a, T: Float, E: DevElem>(
        &self,
        op: &'static str,
        x: ArrayView2<T>,
        w: impl IntoIterator<Item = &'a T>,
        n: usize,
        bias: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>> {
        let (m, k) = x.dim();
        let xd = self.upload::<T, E>(op, x.iter())?;
        let wd = self.upload::<T, E>(op, w)?;
        let bias: Option<Vec<f32>> = bias.map(|b| b.iter().map(|v| v.to_f32()).collect());
        let bd = bias.map(|b| self.upload_raw(op, &b)).transpose()?;
        let mut yd = self.alloc::<E>(op, m * n)?;
        launch::linear(
            &self.lib,
            &self.stream,
            &xd,
            &wd,
            bd.as_ref(),
            &mut yd,
            m,
            n,
            k,
        )
        .map_err(|e| self.kernel_error(op, e))?;
        self.finish(op)?;
        Ok(array2(m, n, self.download::<T, E>(op, &yd)?))
    }
}

/// `x · wᵀ + bias` with nothing to multiply (K = 0): the bias (or zeros), rounded once, as the
/// reference computes it.
fn empty_product<T: Float>(m: usize, n: usize, bias: Option<ArrayView1<T>>) -> Array2<T> {
    Array2::from_shape_fn((m, n), |(_, j)| {
        T::from_f32(0.0 + bias.as_ref().map_or(0.0, |b| b[j].to_f32()))
    })
}

impl Npu {
    /// `table`'s rows at `ids` through `gather_rows_<t>` (a copy: exact). The ids are valid (checked by
    /// the caller).
    fn embedding_as<T: Float, E: DevElem>(
        &self,
        table: ArrayView2<T>,
        ids: ArrayView1<i32>,
    ) -> Result<Array2<T>> {
        const OP: &str = "embedding";
        let (vocab, hidden) = table.dim();
        let rows = ids.len();
        let td = self.upload::<T, E>(OP, table.iter())?;
        let ids_host: Vec<i32> = ids.iter().copied().collect();
        let idd = self.upload_raw(OP, &ids_host)?;
        let mut yd = self.alloc::<E>(OP, rows * hidden)?;
        launch::gather_rows(
            &self.lib,
            &self.stream,
            &td,
            Some(&idd),
            &mut yd,
            RowSource::lookup(rows, hidden, vocab),
        )
        .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        Ok(array2(rows, hidden, self.download::<T, E>(OP, &yd)?))
    }

    /// The first maximum of each row through `argmax_<t>`. The kernel compares in f32 and answers -1
    /// for a row holding a NaN or an infinity: those rows are answered on the host by the reference
    /// (a row's first NaN, else its first largest value).
    fn argmax_as<T: Float, E: DevElem>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
        const OP: &str = "argmax";
        let (rows, cols) = x.dim();
        let xd = self.upload::<T, E>(OP, x.iter())?;
        let mut outd = self.alloc::<i32>(OP, rows)?;
        launch::argmax(&self.lib, &self.stream, &xd, &mut outd, rows, cols)
            .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        let mut out = outd.to_vec().map_err(|e| self.fail(OP, e))?;
        for (r, o) in out.iter_mut().enumerate() {
            if *o < 0 {
                *o = crate::sampling::argmax(x.slice(ndarray::s![r..=r, ..]))?[0];
            }
        }
        Ok(Array1::from(out))
    }
}

impl Npu {
    /// Softmax of each row through `softmax_<t>` (f32 out).
    fn softmax_as<T: Float, E: DevElem>(&self, x: ArrayView2<T>) -> Result<Array2<f32>> {
        const OP: &str = "softmax";
        let (rows, cols) = x.dim();
        let host: Vec<E> = x.iter().map(|v| E::from_f32(v.to_f32())).collect();
        let xd = self.upload_raw(OP, &host)?;
        let mut outd = self.alloc::<f32>(OP, rows * cols)?;
        launch::softmax(&self.lib, &self.stream, &xd, &mut outd, rows, cols)
            .map_err(|e| self.kernel_error(OP, e))?;
        self.finish(OP)?;
        let out = outd.to_vec().map_err(|e| self.fail(OP, e))?;
        Array2::from_shape_vec((rows, cols), out).map_err(|e| self.fail(OP, e))
    }
}

impl DenseOps for Npu {
    fn rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>> {
        const OP: &str = "rms_norm";
        norm::check_rms_norm(&x, &weight, eps)?;
        if x.nrows() == 0 {
            return Ok(Array2::default(x.raw_dim()));
        }
        by_dtype!(self, OP, T, rms_norm_as(x, weight, eps))
    }

    fn add_rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        residual: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)> {
        const OP: &str = "add_rms_norm";
        norm::check_add_rms_norm(&x, &residual, &weight, eps)?;
        if x.nrows() == 0 {
            return Ok((Array2::default(x.raw_dim()), Array2::default(x.raw_dim())));
        }
        by_dtype!(self, OP, T, add_rms_norm_as(x, residual, weight, eps))
    }

    fn rope<T: Float>(
        &self,
        x: ArrayView3<T>,
        positions: ArrayView1<i32>,
        table: &RopeTable,
        layout: RopeLayout,
    ) -> Result<Array3<T>> {
        const OP: &str = "rope";
        rope::check_rope(&x, &positions, table)?;
        let (t, h, _) = x.dim();
        if t == 0 || h == 0 {
            return Ok(Array3::default(x.raw_dim()));
        }
        by_dtype!(self, OP, T, rope_as(x, positions, table, layout))
    }

    fn linear<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView2<T>,
        bias: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>> {
        const OP: &str = "linear";
        linear::check_linear(&x, &w, bias.as_ref())?;
        let (m, k) = x.dim();
        let n = w.nrows();
        if m == 0 || n == 0 || k == 0 {
            return Ok(empty_product(m, n, bias));
        }
        by_dtype!(self, OP, T, linear_as(OP, x, w.iter(), n, bias))
    }

    fn batched_matmul<T: Float>(&self, a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
        const OP: &str = "batched_matmul";
        linear::check_batched_matmul(&a, &b)?;
        let (batch, m, k) = a.dim();
        let n = b.dim().2;
        let mut c = Array3::<T>::default((batch, m, n));
        if m == 0 || n == 0 || k == 0 {
            return Ok(c);
        }
        for ((ai, bi), mut ci) in a
            .axis_iter(Axis(0))
            .zip(b.axis_iter(Axis(0)))
            .zip(c.axis_iter_mut(Axis(0)))
        {
            // b[i] is [K, N]: its transpose, iterated in logical order, is the [N, K] weight.
            let wt = bi.reversed_axes();
            let y = by_dtype!(self, OP, T, linear_as(OP, ai, wt.iter(), n, None))?;
            ci.assign(&y);
        }
        Ok(c)
    }

    fn silu_mul<T: Float>(&self, gate_up: ArrayView2<T>) -> Result<Array2<T>> {
        const OP: &str = "silu_mul";
        activation::check_silu_mul(&gate_up)?;
        let (rows, width) = gate_up.dim();
        if rows == 0 || width == 0 {
            return Ok(Array2::default((rows, width / 2)));
        }
        by_dtype!(self, OP, T, silu_mul_as(gate_up))
    }

    fn embedding<T: Float>(&self, table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
        const OP: &str = "embedding";
        // Every id is checked here: the kernel trusts its index list (an id outside the table would
        // fault on the device rather than come back as a typed error).
        sampling::check_embedding(&table, &ids)?;
        if ids.is_empty() || table.ncols() == 0 {
            return Ok(Array2::default((ids.len(), table.ncols())));
        }
        by_dtype!(self, OP, T, embedding_as(table, ids))
    }

    fn softmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array2<f32>> {
        const OP: &str = "softmax";
        sampling::check_softmax(&x)?;
        if x.nrows() == 0 {
            return Ok(Array2::zeros(x.raw_dim()));
        }
        by_dtype!(self, OP, T, softmax_as(x))
    }

    fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
        const OP: &str = "argmax";
        sampling::check_argmax(&x)?;
        if x.nrows() == 0 {
            return Ok(Array1::default(0));
        }
        by_dtype!(self, OP, T, argmax_as(x))
    }

    /// [`Npu::sample`] (`sample_top_p_<t>`, or `argmax_<t>` for greedy samplers).
    fn sample_top_p<T: Float>(
        &self,
        samplers: &mut [Sampler],
        logits: ArrayView2<T>,
    ) -> Result<Array1<i32>> {
        self.sample(logits, samplers)
    }
}
