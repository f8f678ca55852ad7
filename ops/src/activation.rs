//! SwiGLU activation on a fused gate/up tensor (`npu_swiglu` / vLLM's `SiluAndMul`).
//!
//! Validates: `gate_up` is `[T, 2I]` with an even width (`I = 0` gives an empty `[T, 0]`). Trusts the
//! values. Computes `silu(g) = g / (1 + e^-g)` and the product in `f32`, rounding once; for very
//! negative `g`, `e^-g` overflows to infinity and `silu` correctly tends to `-0`.
use crate::{Float, Result};
use ndarray::{s, Array2, ArrayView2, Zip};

/// The check of [`silu_mul`]: `gate_up` is `[T, 2I]` (an even width). The device backend runs the
/// same one.
pub fn check_silu_mul<T>(gate_up: &ArrayView2<T>) -> Result<()> {
    if gate_up.ncols() % 2 == 1 {
        return Err(crate::error::shape_error(
            "silu_mul",
            "gate_up",
            gate_up.shape(),
            "[T, 2I] (even width)",
        ));
    }
    Ok(())
}

/// `gate_up` is `[T, 2I]`: gate in columns `..I`, up in `I..`. Returns `silu(gate) * up`, `[T, I]`.
pub fn silu_mul<T: Float>(gate_up: ArrayView2<T>) -> Result<Array2<T>> {
    check_silu_mul(&gate_up)?;
    let width = gate_up.ncols();
    let i = width / 2;
    let gate = gate_up.slice(s![.., ..i]);
    let up = gate_up.slice(s![.., i..]);
    Ok(Zip::from(&gate).and(&up).map_collect(|&g, &u| {
        let g = g.to_f32();
        T::from_f32(g / (1.0 + (-g).exp()) * u.to_f32())
    }))
}
