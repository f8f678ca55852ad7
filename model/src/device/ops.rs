//! The engine's kernel calls: one method per operator on device buffers, each queued on the engine's
//! stream through its typed launcher, and counted by operator name. Nothing here synchronizes or
//! copies to or from the host: outputs are fresh buffers from the stream's pool.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use dsnpu_kernels::launch::{self, KernelLibrary, Launched, RowSource};
use dsnpu_kernels::KernelError;
use dsnpu_runtime::{DeviceBuffer, Stream};

use super::tensor::Tensor;
use crate::error::Result;

/// The stream, the kernels and the per-operator launch counts.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub lib: Arc<KernelLibrary>,
    pub stream: Stream,
    pub ops: RefCell<BTreeMap<&'static str, u64>>,
}

pub(crate) type Buf = DeviceBuffer<f32>;

impl Ctx {
    fn note<L>(
        &self,
        op: &'static str,
        r: std::result::Result<Launched<L>, KernelError>,
    ) -> Result<()> {
        r?;
        *self.ops.borrow_mut().entry(op).or_default() += 1;
        Ok(())
    }

    pub fn alloc<T: dsnpu_runtime::DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        Ok(self.stream.alloc(len)?)
    }

    /// `x [m, k] · wᵀ` with `w` a device tensor `[n, k]`.
    pub fn linear(&self, x: &Buf, w: &Tensor, m: usize) -> Result<Buf> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let mut y = self.alloc(m * n)?;
        let r = launch::linear(
            &self.lib,
            &self.stream,
            x,
            w.device()?,
            None,
            &mut y,
            m,
            n,
            k,
        );
        self.note("linear", r)?;
        Ok(y)
    }

    pub fn rms_norm(&self, x: &Buf, w: &Tensor, rows: usize, eps: f32) -> Result<Buf> {
        let mut y = self.alloc(x.len())?;
        let r = launch::rms_norm(&self.lib, &self.stream, x, w.device()?, &mut y, rows, eps);
        self.note("rms_norm", r)?;
        Ok(y)
    }

    /// `(normed, sum)` of `x + residual`.
    pub fn add_rms_norm(
        &self,
        x: &Buf,
        residual: &Buf,
        w: &Tensor,
        rows: usize,
        eps: f32,
    ) -> Result<(Buf, Buf)> {
        let mut y = self.alloc(x.len())?;
        let mut s = self.alloc(x.len())?;
        let r = launch::add_rms_norm(
            &self.lib,
            &self.stream,
            x,
            residual,
            w.device()?,
            &mut y,
            &mut s,
            rows,
            eps,
        );
        self.note("add_rms_norm", r)?;
        Ok((y, s))
    }

    pub fn silu_mul(&self, gate_up: &Buf, rows: usize, inter: usize) -> Result<Buf> {
        let mut y = self.alloc(rows * inter)?;
        let r = launch::silu_mul(&self.lib, &self.stream, gate_up, &mut y, rows, inter);
        self.note("silu_mul", r)?;
        Ok(y)
    }

    pub fn gather(&self, x: &Buf, idx: Option<&DeviceBuffer<i32>>, src: RowSource) -> Result<Buf> {
        let mut y = self.alloc(src.rows * src.cols)?;
        let r = launch::gather_rows(&self.lib, &self.stream, x, idx, &mut y, src);
        self.note(
            if idx.is_some() {
                "gather_rows(index)"
            } else {
                "gather_rows"
            },
            r,
        )?;
        Ok(y)
    }

    /// `y [rows, n]` with rows grouped by `counts` (i64 `[groups]`), group `g` times `w[g]ᵀ` (`w [G, n, k]`).
    pub fn grouped(
        &self,
        x: &Buf,
        w: &Tensor,
        counts: &DeviceBuffer<i64>,
        rows: usize,
    ) -> Result<Buf> {
        let (groups, n, k) = (w.shape()[0], w.shape()[1], w.shape()[2]);
        let mut y = self.alloc(rows * n)?;
        let r = launch::grouped_matmul(
            &self.lib,
            &self.stream,
            x,
            w.device()?,
            launch::GroupList::all(counts, dsnpu_kernels::MoeList::Count),
            &mut y,
            launch::GroupedShape { rows, groups, n, k },
        );
        self.note("grouped_matmul", r)?;
        Ok(y)
    }

    pub fn note_launch<L>(
        &self,
        op: &'static str,
        r: std::result::Result<Launched<L>, KernelError>,
    ) -> Result<()> {
        self.note(op, r)
    }
}
