//! What the MoE acceptance tests on the device share: a backend whose every launch is checked, and the
//! comparisons with the CPU reference.
//!
//! [`checked_npu`] is [`Npu`] on device 0 (the simulator here) with a launch-blocking stream: each MoE
//! kernel launch is waited for and its counters are read, and the operator fails unless the completed
//! launch is that kernel, with no fault and **zero sanitizer warnings** (`dsnpu_ops::backend::npu`'s
//! checked launches). Every test that goes through it therefore asserts a clean sanitizer on every
//! launch it makes.
#![allow(dead_code)]

use std::sync::OnceLock;

use dsnpu_ops::backend::Npu;

/// A checked backend on device 0 with a stream of its own. The first one lives for the whole run, which
/// keeps the device open and the kernels loaded between tests.
pub fn checked_npu() -> Npu {
    static FIRST: OnceLock<Npu> = OnceLock::new();
    let first = FIRST.get_or_init(|| Npu::new(0).expect("open device 0 and load the kernels"));
    let npu = Npu::with_library(first.library().clone()).expect("a stream on device 0");
    npu.stream().set_launch_blocking(true);
    npu
}
