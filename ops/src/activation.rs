//! SwiGLU activation.
use crate::{Float, Result};
use ndarray::{Array2, ArrayView2};

/// `gate_up` is `[T, 2I]`: gate in columns `..I`, up in `I..`. Returns `silu(gate) * up`, `[T, I]`.
pub fn silu_mul<T: Float>(gate_up: ArrayView2<T>) -> Result<Array2<T>> {
    let _ = gate_up;
    todo!("contract stub")
}
