//! The MoE conformance suites (gating, dispatch, int8 dispatch, grouped matmul, expert FFN, combine, the
//! whole layer × f32, f16, bf16) on the device backend with every launch checked: no fault and zero
//! sanitizer warnings on each of them (see `npu_moe_common`). `npu_conformance.rs` runs the same suites
//! unchecked, as any backend would be run.
//!
//! The check is only as good as the counters it reads, so the last test shows that a launch the
//! sanitizer warns about does carry its warnings in them.

mod npu_backend;
mod npu_moe_common;

use dsnpu_kernels::launch::KernelLibrary;
use dsnpu_kernels::SelftestTiling;
use dsnpu_runtime::{sim_counters, Device};
use npu_backend::checked_npu;

dsnpu_ops::moe_conformance!(checked_npu());

#[test]
fn a_sanitizer_warning_reaches_the_launch_counters() {
    let device = Device::new(0).unwrap();
    let lib = KernelLibrary::get(&device).unwrap();
    let stream = device.new_stream().unwrap();
    let a = stream.upload(&[1.0f32; 64]).unwrap();
    let mut b = stream.alloc_zeroed::<f32>(64).unwrap();
    let f = lib.function_named("selftest_fault").unwrap();
    // Mode 6: a DataCopy of 13 f32 (52 bytes, not a multiple of 32) from a through UB to b, which the
    // hardware rounds down to 8 elements: a warning, not a fault.
    let tiling = SelftestTiling {
        mode: 6,
        count: 13,
        arg: 0,
        reserved: 0,
    };
    // SAFETY: selftest_fault(a, b, workspace, tiling) with a and b 64 f32 each; mode 6 with count 13
    // reads and writes at most 13 elements of each (its source), and only b is written (arg_mut).
    unsafe {
        f.builder(&stream)
            .arg(&a)
            .arg_mut(&mut b)
            .null()
            .tiling(&tiling)
            .launch(1)
    }
    .unwrap();
    stream.synchronize().unwrap();
    let c = sim_counters::last_launch_counters(&stream)
        .unwrap()
        .expect("a completed launch");
    assert_eq!((c.kernel.as_str(), c.status), ("selftest_fault", 0));
    assert!(c.warnings >= 1, "the warning was not counted: {c:?}");
    // The rounded-down copy moved 8 elements; the rest of b is untouched.
    let b = b.to_vec().unwrap();
    assert_eq!(&b[..8], &[1.0; 8]);
    assert_eq!(&b[8..], &[0.0; 56]);
}
