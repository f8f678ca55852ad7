//! What the model runs its operators on: any `dsnpu-ops` backend implementing the three operator
//! families. The model's logic (data arrangement between operators) is the same for every backend; only
//! the operator calls go through it. [`Cpu`] (the references) is the default; a device path is e.g.
//! `Fallback<Npu, Cpu>`, the device kernels that exist and the references for the rest.

use dsnpu_ops::backend::{DenseOps, MlaOps, MoeOps};

pub use dsnpu_ops::backend::Cpu;

/// A backend with every operator family the model calls. Implemented for every such backend.
pub trait ModelBackend: DenseOps + MoeOps + MlaOps {}

impl<B: DenseOps + MoeOps + MlaOps> ModelBackend for B {}
