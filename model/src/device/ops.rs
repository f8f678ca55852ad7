//! The engine's kernel calls: one method per operator on device buffers, each queued on the engine's
//! stream through its typed launcher, and counted by operator name. Nothing here synchronizes or
//! copies to or from the host: outputs are fresh buffers from the stream's pool.
//!
//! Activations are `DeviceBuffer<T>` for the compute type `T` ([`Act`]: f32 or bf16); weights are
//! [`Tensor`]s whose dtype the methods dispatch on: the same type as `T`, or with `T = f32` a 16-bit
//! type the kernels' `_f32_w<t>` forms widen tile by tile (see `device::weights`), or FP8 e4m3 with
//! block scales, which the `*_fp8` kernels dequantize tile by tile (any activation type). Any other
//! pairing is a typed error from the launcher.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use dsnpu_kernels::launch::{self, KernelElem, KernelLibrary, Launched, RowSource};
use dsnpu_kernels::{KernelError, RowLayout};
use dsnpu_ops::Float;
use dsnpu_runtime::{DeviceBuffer, Stream};
use half::{bf16, f16};

use super::tensor::{DType, Elem, Tensor};
use crate::error::{invalid_input, Result};

/// A compute (activation) type of the engine.
pub(crate) trait Act: KernelElem + Elem + Float + 'static {}
impl Act for f32 {}
impl Act for bf16 {}

/// The stream, the kernels and the per-operator launch counts.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub lib: Arc<KernelLibrary>,
    pub stream: Stream,
    /// A mutex, not a `RefCell`: the engine is `Sync` (the Python classes require it). Only the
    /// engine's own calls lock it, one at a time, so it is never contended.
    pub ops: Mutex<BTreeMap<&'static str, u64>>,
}

pub(crate) type Buf<T = f32> = DeviceBuffer<T>;

/// Runs `$body` with `$W` the Rust type of weight tensor `$w`'s dtype (f32, f16 or bf16).
macro_rules! by_weight {
    ($w:expr, $W:ident => $body:expr) => {
        match $w.dtype() {
            DType::F32 => {
                type $W = f32;
                $body
            }
            DType::BF16 => {
                type $W = bf16;
                $body
            }
            DType::F16 => {
                type $W = f16;
                $body
            }
            other => Err(invalid_input(format!(
                "a {other} weight of shape {:?}: the kernels take f32, f16 or bf16 weights",
                $w.shape()
            ))),
        }
    };
}

/// The codes and block scales of an FP8 device tensor.
fn fp8(w: &Tensor) -> Result<launch::Fp8Weights<'_>> {
    let scale = w.block_scale().ok_or_else(|| {
        invalid_input(format!(
            "an FP8 weight of shape {:?} without its block scales",
            w.shape()
        ))
    })?;
    Ok(launch::Fp8Weights {
        codes: w.device::<u8>()?,
        scale: scale.device::<f32>()?,
    })
}

impl Ctx {
    fn note<L>(
        &self,
        op: &'static str,
        r: std::result::Result<Launched<L>, KernelError>,
    ) -> Result<()> {
        r?;
        self.count(op);
        Ok(())
    }

    /// Counts one launch of `op`.
    pub fn count(&self, op: &'static str) {
        // A panic while counting leaves the counts consistent: a poisoned lock is still usable.
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        *ops.entry(op).or_default() += 1;
    }

    /// The launches by operator so far.
    pub fn op_counts(&self) -> BTreeMap<&'static str, u64> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn alloc<T: dsnpu_runtime::DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        Ok(self.stream.alloc(len)?)
    }

    /// `x [m, k] · wᵀ` with `w` a device tensor `[n, k]`.
    pub fn linear<T: Act>(&self, x: &Buf<T>, w: &Tensor, m: usize) -> Result<Buf<T>> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let mut y = self.alloc(m * n)?;
        if w.dtype() == DType::F8E4M3 {
            let r = launch::linear_fp8(&self.lib, &self.stream, x, fp8(w)?, &mut y, m, n, k);
            self.note("linear_fp8", r)?;
            return Ok(y);
        }
        let r = by_weight!(w, W => Ok(launch::linear(
            &self.lib,
            &self.stream,
            x,
            w.device::<W>()?,
            None,
            &mut y,
            m,
            n,
            k,
        )))?;
        self.note("linear", r)?;
        Ok(y)
    }

    pub fn rms_norm<T: Act>(
        &self,
        x: &Buf<T>,
        w: &Tensor,
        rows: usize,
        eps: f32,
    ) -> Result<Buf<T>> {
        let mut y = self.alloc(x.len())?;
        let r = launch::rms_norm(&self.lib, &self.stream, x, w.device()?, &mut y, rows, eps);
        self.note("rms_norm", r)?;
        Ok(y)
    }

    /// `(normed, sum)` of `x + residual`.
    pub fn add_rms_norm<T: Act>(
        &self,
        x: &Buf<T>,
        residual: &Buf<T>,
        w: &Tensor,
        rows: usize,
        eps: f32,
    ) -> Result<(Buf<T>, Buf<T>)> {
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

    pub fn silu_mul<T: Act>(&self, gate_up: &Buf<T>, rows: usize, inter: usize) -> Result<Buf<T>> {
        let mut y = self.alloc(rows * inter)?;
        let r = launch::silu_mul(&self.lib, &self.stream, gate_up, &mut y, rows, inter);
        self.note("silu_mul", r)?;
        Ok(y)
    }

    pub fn gather<T: Act>(
        &self,
        x: &Buf<T>,
        idx: Option<&DeviceBuffer<i32>>,
        src: RowSource,
    ) -> Result<Buf<T>> {
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

    /// Rows of a weight table (the embedding) picked by `idx`, in the compute type: a plain gather when
    /// the table is stored in `T`, else (f32 compute over a 16-bit table) widened on the way.
    pub fn lookup<T: Act>(
        &self,
        table: &Tensor,
        idx: &DeviceBuffer<i32>,
        src: RowSource,
    ) -> Result<Buf<T>> {
        if table.dtype() == <T as Elem>::DTYPE {
            return self.gather(table.device::<T>()?, Some(idx), src);
        }
        let mut y = self.alloc::<f32>(src.rows * src.cols)?;
        let r = by_weight!(table, W => Ok(launch::gather_rows_f32(
            &self.lib,
            &self.stream,
            table.device::<W>()?,
            Some(idx),
            &mut y,
            src,
        )))?;
        self.note("gather_rows(index)", r)?;
        // With T = f32 this is the buffer itself; any other T with a table not in T is refused.
        as_act(y)
    }

    /// An f32 copy of `x [rows, cols]` (the router's input, f32 logits of a 16-bit model).
    pub fn to_f32<T: Act>(&self, x: &Buf<T>, rows: usize, cols: usize) -> Result<Buf<f32>> {
        let mut y = self.alloc::<f32>(rows * cols)?;
        let src = RowSource {
            rows,
            inner: 1,
            cols,
            offset: 0,
            stride_a: cols,
            stride_b: 0,
            by_index: None,
        };
        let r = launch::gather_rows_f32(&self.lib, &self.stream, x, None, &mut y, src);
        self.note("gather_rows(to f32)", r)?;
        Ok(y)
    }

    /// One GEMM per group (attention head) on rows where the layouts put them: group `g`'s `rows` rows
    /// of `x` (its `k` columns at `x_rows`) times `w[g]ᵀ` (`w [G, n, k]`, 16-bit or f32, not FP8) into
    /// a new `y` laid out as `y_rows` says (`grouped_matmul_strided`: no transposes to and from
    /// group-major rows).
    pub fn per_head<T: Act>(
        &self,
        x: &Buf<T>,
        w: &Tensor,
        rows: usize,
        x_rows: RowLayout,
        y_rows: RowLayout,
    ) -> Result<Buf<T>> {
        let (groups, n, k) = (w.shape()[0], w.shape()[1], w.shape()[2]);
        let shape = launch::StridedGroupedShape {
            groups,
            rows,
            n,
            k,
            x: x_rows,
            y: y_rows,
        };
        let len = shape.extent(launch::Operand::Y).ok_or_else(|| {
            invalid_input(format!("per-head GEMM {shape:?}: y's extent overflows"))
        })?;
        let mut y = self.alloc(len)?;
        let r = by_weight!(w, W => Ok(launch::grouped_matmul_strided(
            &self.lib,
            &self.stream,
            x,
            w.device::<W>()?,
            &mut y,
            shape,
        )))?;
        self.note("grouped_matmul", r)?;
        Ok(y)
    }

    /// The routed experts' fused FFN over `x [rows, hidden]` grouped by `counts`; the three weight
    /// tensors share one dtype.
    pub fn expert_ffn<T: Act>(
        &self,
        x: &Buf<T>,
        (gate, up, down): (&Tensor, &Tensor, &Tensor),
        counts: &DeviceBuffer<i64>,
        shape: launch::FfnShape,
    ) -> Result<Buf<T>> {
        let mut y = self.alloc(shape.rows * shape.hidden)?;
        if gate.dtype() == DType::F8E4M3 {
            let list = launch::GroupList::all(counts, dsnpu_kernels::MoeList::Count);
            let r = launch::expert_ffn_fp8(
                &self.lib,
                &self.stream,
                x,
                fp8(gate)?,
                fp8(up)?,
                fp8(down)?,
                Some(list),
                &mut y,
                shape,
            );
            self.note("expert_ffn_fp8", r)?;
            return Ok(y);
        }
        let r = by_weight!(gate, W => Ok(launch::expert_ffn(
            &self.lib,
            &self.stream,
            x,
            gate.device::<W>()?,
            up.device::<W>()?,
            down.device::<W>()?,
            launch::GroupList::all(counts, dsnpu_kernels::MoeList::Count),
            &mut y,
            shape,
        )))?;
        self.note("expert_ffn", r)?;
        Ok(y)
    }

    /// A dense MLP (or shared expert) with FP8 gate, up `[inter, hidden]` and down `[hidden, inter]`:
    /// `expert_ffn_fp8` with one group of all `rows` rows and no group list.
    pub fn mlp_fp8<T: Act>(
        &self,
        x: &Buf<T>,
        (gate, up, down): (&Tensor, &Tensor, &Tensor),
        rows: usize,
    ) -> Result<Buf<T>> {
        let (inter, hidden) = (gate.shape()[0], gate.shape()[1]);
        let mut y = self.alloc(rows * hidden)?;
        let shape = launch::FfnShape {
            rows,
            groups: 1,
            max_group_rows: rows,
            hidden,
            inter,
        };
        let r = launch::expert_ffn_fp8(
            &self.lib,
            &self.stream,
            x,
            fp8(gate)?,
            fp8(up)?,
            fp8(down)?,
            None,
            &mut y,
            shape,
        );
        self.note("expert_ffn_fp8(dense)", r)?;
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

/// An f32 buffer as `Buf<T>` when `T` is f32; for any other `T` a typed error (a 16-bit table used by a
/// computation in another 16-bit type).
pub(crate) fn as_act<T: Act>(y: Buf<f32>) -> Result<Buf<T>> {
    let any: Box<dyn std::any::Any> = Box::new(y);
    any.downcast::<Buf<T>>().map(|b| *b).map_err(|_| {
        invalid_input("a weight table stored in another 16-bit type than the activations")
    })
}
