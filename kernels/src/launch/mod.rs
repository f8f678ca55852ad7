//! Typed launchers: one Rust function per kernel, through `dsnpu-runtime`.
//!
//! A [`KernelLibrary`] is the host kernel binary loaded on one device (once per device, shared) with the
//! device's [`Hardware`] description (core counts and Unified Buffer size, read from the simulator's
//! configuration or from the SoC name of a CANN install). Each launcher
//! - checks that every device buffer holds exactly what the shape needs ([`KernelError::BufferLength`]),
//! - computes the tiling on the host from the shape and the hardware ([`crate::tiling`], which rejects
//!   shapes the kernel cannot take with [`KernelError::InvalidShape`] / [`KernelError::DoesNotFit`]),
//! - packs the `#[repr(C)]` tiling (uploaded to device memory by the runtime) and queues the kernel on
//!   the stream with the tiling's block count, and returns what it launched ([`Launched`]).
//!
//! Launches are asynchronous: a fault of the kernel (an AI Core exception) is reported by the next
//! synchronizing call on the stream (e.g. reading the output back), as [`KernelError::Device`] when it
//! comes through [`device_error`]. Every launcher is safe: the argument lists match the kernels'
//! parameter lists (see [`crate::Kernel`]), the buffers are sized for the shape, and each kernel's source
//! states that it reads and writes only within the extents its tiling gives it. The one input a launcher
//! cannot check is device-resident data that the kernel uses as an index (rope's positions, the MoE
//! kernels' expert ids, row indices and group lists): the kernels drop ids outside the active experts
//! and clamp group lists to their rows, and an out-of-range position or row index makes the kernel
//! fault on its checked read on the simulator (and read unspecified values on an NPU); none of them
//! makes a kernel write outside its outputs.
//!
//! Trusted: the kernels themselves (their sources document their memory accesses), and that the host
//! kernel binary embedded in this crate ([`crate::HOST_KERNELS`]) is the one built from those sources.

mod fp8;
mod hardware;
mod library;
mod linear;
mod mla;
mod mla_cache_write;
mod mla_prefill;
mod moe_finalize;
mod moe_gating;
mod moe_grouped;
mod moe_routing;
mod norm;
mod rope;
mod sample;
mod silu_mul;
mod step;

pub use fp8::{
    expert_ffn_fp8, fp8_scale_len, grouped_matmul_fp8, linear_fp8, Fp8Weights, FP8_BLOCK,
};
pub use hardware::Hardware;
pub use library::KernelLibrary;
pub use linear::linear;
pub use mla::{mla_decode, MlaDecodeInputs, MlaDecodeShape};
pub use mla_cache_write::{mla_cache_write, MlaCacheWriteInputs, MlaCacheWriteShape};
pub use mla_prefill::{
    mla_prefill, mla_prefill_from_cache, MlaCacheInputs, MlaCacheShape, MlaPrefillInputs,
};
pub use moe_finalize::{moe_finalize_routing, CombineShape};
pub use moe_gating::moe_gating_topk;
pub use moe_grouped::{
    expert_ffn, grouped_matmul, grouped_matmul_strided, FfnShape, GroupList, GroupedShape, Operand,
    StridedGroupedShape,
};
pub use moe_routing::{moe_init_routing, moe_init_routing_quant, RoutingShape};
pub use norm::{add_rms_norm, rms_norm};
pub use rope::{rope, RopeShape};
pub use sample::sample_top_p;
pub use silu_mul::silu_mul;
pub use step::{argmax, gather_rows, gather_rows_f32, softmax, RowSource};

use dsnpu_runtime::{DeviceRepr, RuntimeError};

use crate::{Kernel, KernelDtype, KernelError, Result};

/// Element types the kernels are instantiated for.
pub trait KernelElem: DeviceRepr {
    const DTYPE: KernelDtype;
}

impl KernelElem for f32 {
    const DTYPE: KernelDtype = KernelDtype::F32;
}
impl KernelElem for half::f16 {
    const DTYPE: KernelDtype = KernelDtype::F16;
}
impl KernelElem for half::bf16 {
    const DTYPE: KernelDtype = KernelDtype::Bf16;
}

/// What a launcher queued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Launched<T> {
    /// The kernel's exported symbol (`rms_norm_bf16`, ...).
    pub symbol: &'static str,
    /// Blocks launched.
    pub blocks: u32,
    /// The tiling it was launched with.
    pub tiling: T,
}

/// A runtime error of kernel `kernel` as a [`KernelError::Device`].
pub fn device_error(kernel: &str, e: RuntimeError) -> KernelError {
    KernelError::Device {
        kernel: kernel.to_string(),
        code: e.acl_code(),
        message: e.to_string(),
        source: Some(crate::RuntimeCause::new(e)),
    }
}

impl KernelError {
    /// The AscendCL error code of a [`KernelError::Device`], if it has one.
    pub fn acl_code(&self) -> Option<i32> {
        match self {
            KernelError::Device { code, .. } => *code,
            _ => None,
        }
    }
}

/// The kernel and instantiation for activations in `act` and weights in `weights`: `same` when they
/// agree, `f32_w` (f32 activations, weights widened in the kernel) for f32 activations with other weights;
/// any other pairing is [`KernelError::InvalidShape`].
fn weight_kernel(
    kernel: &'static str,
    same: Kernel,
    f32_w: Kernel,
    act: KernelDtype,
    weights: KernelDtype,
) -> Result<(Kernel, KernelDtype)> {
    if act == weights {
        Ok((same, act))
    } else if act == KernelDtype::F32 {
        Ok((f32_w, weights))
    } else {
        Err(KernelError::InvalidShape {
            kernel,
            reason: format!(
                "{act:?} activations with {weights:?} weights: mixed dtypes need f32 activations"
            ),
        })
    }
}

/// `a * b` for a shape, or InvalidShape.
fn product(kernel: &'static str, what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| KernelError::InvalidShape {
        kernel,
        reason: format!("{what} = {a} x {b} overflows"),
    })
}

/// Fails unless a buffer holds `expected` elements.
fn expect_len(
    kernel: &'static str,
    arg: &'static str,
    actual: usize,
    expected: usize,
) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(KernelError::BufferLength {
            kernel,
            arg,
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_keep_the_code_and_the_whole_message() {
        let inner = RuntimeError::Ffi(dsnpu_ffi_error(
            507015,
            "kernel rms_norm_f32 block 0: DataCopy: GM range out of bounds",
        ));
        let e = device_error("rms_norm_f32", inner);
        assert_eq!(e.acl_code(), Some(507015));
        let text = e.to_string();
        assert!(text.starts_with("rms_norm_f32: "), "{text}");
        assert!(
            text.contains("ACL_ERROR_RT_AICORE_EXCEPTION (507015)"),
            "{text}"
        );
        assert!(text.contains("block 0: DataCopy"), "{text}");
        // The runtime error is kept, typed, as the source.
        let source = std::error::Error::source(&e).expect("a source");
        let runtime = source
            .source()
            .and_then(|s| s.downcast_ref::<RuntimeError>());
        assert_eq!(runtime.and_then(RuntimeError::acl_code), Some(507015));
        assert_eq!(
            KernelError::InvalidHardware("x".into()).acl_code(),
            None,
            "only device errors carry a code"
        );
    }

    fn dsnpu_ffi_error(code: i32, msg: &str) -> dsnpu_ffi::FfiError {
        dsnpu_ffi::AclError::new("aclrtSynchronizeStream", code, Some(msg.into())).into()
    }

    #[test]
    fn lengths_and_products_are_checked() {
        assert_eq!(product("k", "rows * cols", 3, 4).unwrap(), 12);
        assert!(matches!(
            product("k", "rows * cols", usize::MAX, 2),
            Err(KernelError::InvalidShape { kernel: "k", .. })
        ));
        assert!(expect_len("k", "x", 12, 12).is_ok());
        assert_eq!(
            expect_len("k", "x", 11, 12).unwrap_err().to_string(),
            "k: argument `x` has 11 elements, the shape needs 12"
        );
    }
}
