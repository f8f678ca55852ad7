//! The device backend the `npu_*` test files run on: [`Npu`] on device 0 (the simulator here), one per
//! test, on kernels loaded once per process.
#![allow(dead_code)]

use std::sync::OnceLock;

use dsnpu_ops::backend::Npu;

/// A backend on device 0 with a stream of its own, so concurrently running tests do not see each
/// other's faults. The first one made stays alive for the whole run, which keeps the device open and
/// the kernel binary loaded between tests.
pub fn npu() -> Npu {
    static FIRST: OnceLock<Npu> = OnceLock::new();
    let first = FIRST.get_or_init(|| Npu::new(0).expect("open device 0 and load the kernels"));
    Npu::with_library(first.library().clone()).expect("a stream on device 0")
}

/// [`npu`] with a launch-blocking stream: every launch is waited for and, on the simulator, fails
/// unless its own report is clean, with no fault and **zero sanitizer warnings**
/// (`dsnpu_ops::backend::npu`'s checked launches). A test that goes through it therefore asserts a
/// clean sanitizer on every launch it makes.
pub fn checked_npu() -> Npu {
    let npu = npu();
    npu.stream().set_launch_blocking(true);
    npu
}
