//! Every conformance suite (dense, MoE, MLA × f32, f16, bf16) run on the device backend, [`Npu`] on
//! device 0: the simulator here (the test binary finds `libdsnpu_sim.so` next to itself), an NPU where
//! one and the AI Core build exist.
//!
//! The suites must pass, under the harness's default tolerances, for every operator that has a kernel:
//! rms_norm, add_rms_norm, rope, linear, batched_matmul (through the linear kernel), silu_mul, embedding
//! (`gather_rows_<t>`), argmax, sample_top_p (`sample_top_p_<t>`, ids equal to the CPU sampler's), every
//! MoE operator, mla_cache_write_fused (`mla_cache_write_<t>`), mla_decode and mla_prefill; softmax and
//! the trait's unfused mla_cache_write print skips until they have kernels.

use dsnpu_ops::backend::Npu;
use std::sync::OnceLock;

/// A backend on device 0 with a stream of its own, so concurrently running tests do not see each
/// other's faults. The first one stays alive for the whole run, which keeps the device open and the
/// kernel binary loaded between tests.
fn npu() -> Npu {
    static FIRST: OnceLock<Npu> = OnceLock::new();
    let first = FIRST.get_or_init(|| Npu::new(0).expect("open device 0 and load the kernels"));
    Npu::with_library(first.library().clone()).expect("a stream on device 0")
}

dsnpu_ops::conformance_suite!(npu());
