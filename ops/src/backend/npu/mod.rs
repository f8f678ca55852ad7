//! The device backend: the operators run as dsnpu's Ascend C kernels through `dsnpu-runtime`, on the
//! simulator here and (once the AI Core build exists) on an NPU.
//!
//! Each method validates its arguments exactly as the CPU reference does (same operator, same
//! argument named), copies the host arrays to device buffers, launches the kernel through its typed
//! launcher ([`dsnpu_kernels::launch`]), synchronizes the stream (so a kernel fault surfaces here, as
//! [`OpsError::Backend`]) and copies the result back. Cases with nothing to compute (no rows, an empty
//! reduction) are answered on the host, as the kernels take no empty shapes. A shape the reference
//! accepts but a kernel cannot take (more than 4095 heads, sizes past the kernels' 32-bit indices) is
//! [`OpsError::Unsupported`], and so is the one operator without a kernel: the trait's unfused MLA cache
//! write (`mla`; the fused `mla_cache_write_fused`, MLA decode and prefill have their kernels).
//! Embedding, argmax and softmax run the step kernels `gather_rows_<t>`, `argmax_<t>` and `softmax_<t>`
//! (`dense`);
//! `sample_top_p` draws ids with the CPU `Sampler`'s contract through the top-p sampling kernel
//! ([`Npu::sample`], `sampling`). The MoE family's whole layer runs on the device without returning to
//! the host between its stages (`moe`).
//!
//! Element types: `f32`, `f16` and `bf16` map to the kernels of that type. Values cross as their
//! `f32` images (`T -> f32 -> kernel type` and back), which is exact for those three types.
//!
//! **Checked launches.** On a launch-blocking stream ([`dsnpu_runtime::Stream::set_launch_blocking`]
//! or `DSNPU_LAUNCH_BLOCKING=1`, the debugging mode) every launch waits for its kernel and, on the
//! simulator, reads its own report: a fault or a single warning of the host Ascend C layer's sanitizer
//! fails the operator with [`OpsError::Backend`] (the runtime's
//! [`LaunchFlagged`](dsnpu_runtime::RuntimeError::LaunchFlagged)). Without it launches stay
//! asynchronous.
//!
//! An [`Npu`] owns one stream; clones share it. Several threads may use one `Npu`, but a fault of one
//! call may then be reported to another call synchronizing the same stream (on a launch-blocking
//! stream each launch's own check still sees only its own launch): give each thread its own
//! ([`Npu::new`] shares the device's loaded kernels and memory pool, and costs one stream).

mod dense;
mod mla;
mod mla_cache_write;
mod mla_prefill;
mod moe;
mod sampling;

use std::sync::Arc;

use dsnpu_kernels::launch::{KernelLibrary, Launched};
use dsnpu_kernels::KernelError;
use dsnpu_runtime::{sim_counters, Device, DeviceBuffer, DeviceRepr, Stream};
use half::{bf16, f16};

use super::Backend;
use crate::{Float, OpsError, Result};

/// Operators on one device through dsnpu's kernels.
#[derive(Debug, Clone)]
pub struct Npu {
    lib: Arc<KernelLibrary>,
    stream: Stream,
    name: String,
}

impl Npu {
    /// Device `ordinal` (the simulator's when it is the loaded library), with its kernels loaded once
    /// per device and a stream of its own.
    pub fn new(ordinal: i32) -> Result<Npu> {
        const OP: &str = "Npu::new";
        let name = format!("npu:{ordinal}");
        let device = Device::new(ordinal).map_err(|e| backend_error(OP, &name, e))?;
        let lib = KernelLibrary::get(&device).map_err(|e| backend_error(OP, &name, e))?;
        Npu::with_library(lib)
    }

    /// A backend with a stream of its own on `lib`'s device, tiling for `lib`'s hardware.
    pub fn with_library(lib: Arc<KernelLibrary>) -> Result<Npu> {
        const OP: &str = "Npu::with_library";
        let ordinal = lib.device().ordinal();
        let sim = sim_counters::is_simulator().unwrap_or(false);
        let name = format!("{}:{ordinal}", if sim { "sim" } else { "npu" });
        let stream = lib
            .device()
            .new_stream()
            .map_err(|e| backend_error(OP, &name, e))?;
        Ok(Npu { lib, stream, name })
    }

    /// The loaded kernels (and the hardware they tile for).
    pub fn library(&self) -> &Arc<KernelLibrary> {
        &self.lib
    }

    /// The stream every operator of this backend runs on.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    fn fail(
        &self,
        op: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> OpsError {
        backend_error(op, &self.name, e)
    }

    /// A launcher's result (on a launch-blocking stream the runtime has checked the launch: module docs).
    fn launched<L>(
        &self,
        op: &'static str,
        r: std::result::Result<Launched<L>, KernelError>,
    ) -> Result<Launched<L>> {
        r.map_err(|e| self.kernel_error(op, e))
    }

    /// A launcher's error: shapes the kernel cannot take are `Unsupported`, the rest backend failures.
    fn kernel_error(&self, op: &'static str, e: KernelError) -> OpsError {
        match e {
            KernelError::InvalidShape { .. }
            | KernelError::DoesNotFit { .. }
            | KernelError::CubeBufferOverflow { .. } => self.unsupported(op, e.to_string()),
            e => self.fail(op, e),
        }
    }

    fn unsupported(&self, op: &'static str, reason: impl Into<String>) -> OpsError {
        OpsError::Unsupported {
            op,
            backend: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// `values` (in their logical order) converted to the kernel type and copied to the device.
    fn upload<'a, T: Float, E: DevElem>(
        &self,
        op: &'static str,
        values: impl IntoIterator<Item = &'a T>,
    ) -> Result<DeviceBuffer<E>> {
        let host: Vec<E> = values
            .into_iter()
            .map(|v| E::from_f32(v.to_f32()))
            .collect();
        self.upload_raw(op, &host)
    }

    fn upload_raw<E: DeviceRepr>(&self, op: &'static str, host: &[E]) -> Result<DeviceBuffer<E>> {
        self.stream.upload(host).map_err(|e| self.fail(op, e))
    }

    fn alloc<E: DeviceRepr>(&self, op: &'static str, len: usize) -> Result<DeviceBuffer<E>> {
        self.stream.alloc(len).map_err(|e| self.fail(op, e))
    }

    /// Waits for the queued kernels; a fault of any of them is this operator's error.
    fn finish(&self, op: &'static str) -> Result<()> {
        self.stream.synchronize().map_err(|e| self.fail(op, e))
    }

    /// A device buffer's contents as `T`, in order.
    fn download<T: Float, E: DevElem>(
        &self,
        op: &'static str,
        buf: &DeviceBuffer<E>,
    ) -> Result<Vec<T>> {
        let v = buf.to_vec().map_err(|e| self.fail(op, e))?;
        Ok(v.into_iter().map(|e| T::from_f32(e.to_f32())).collect())
    }
}

/// The operators of the backend traits that have no device kernel yet (they answer `Unsupported`).
const NO_KERNEL_OPS: &[&str] = &["mla_cache_write"];

impl Backend for Npu {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn has_kernel(&self, op: &str) -> bool {
        !NO_KERNEL_OPS.contains(&op)
    }
}

fn backend_error(
    op: &'static str,
    backend: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> OpsError {
    OpsError::Backend {
        op,
        backend: backend.to_string(),
        source: Box::new(e),
    }
}

/// The element types the kernels take: the kernel type is also an operator [`Float`].
trait DevElem: dsnpu_kernels::launch::KernelElem + Float {}
impl DevElem for f32 {}
impl DevElem for f16 {}
impl DevElem for bf16 {}

/// Calls `$self.$method::<$t, E>(args)` with `E` the kernel type of `$t`.
macro_rules! by_dtype {
    ($self:ident, $op:expr, $t:ty, $method:ident ( $($arg:expr),* $(,)? )) => {
        match <$t as $crate::Float>::DTYPE {
            $crate::DType::F32 => $self.$method::<$t, f32>($($arg),*),
            $crate::DType::F16 => $self.$method::<$t, half::f16>($($arg),*),
            $crate::DType::BF16 => $self.$method::<$t, half::bf16>($($arg),*),
            d => Err($self.unsupported($op, format!("no kernel for element type {d}"))),
        }
    };
}
use by_dtype;
