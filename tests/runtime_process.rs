//! Process-wide behavior, in its own process: `DSNPU_LAUNCH_BLOCKING=1` makes launches report
//! kernel faults at the call site, and `finalize` ends AscendCL for the process. One test, in
//! order, since finalize is final.

use dsnpu_ffi::sys;
use dsnpu_runtime::{Device, DeviceRepr, Module, RuntimeError, LAUNCH_BLOCKING_ENV};

#[repr(C)]
#[derive(Clone, Copy)]
struct Tiling {
    n: u64,
}
// SAFETY: one u64: no padding, every bit pattern valid.
unsafe impl DeviceRepr for Tiling {}

#[test]
fn launch_blocking_from_the_environment_then_finalize() {
    // Set before the first stream exists (the default is read once).
    std::env::set_var(LAUNCH_BLOCKING_ENV, "1");
    let d = Device::new(0).unwrap();
    let m = Module::load_file(&d, dsnpu_sim::TEST_KERNELS_PATH).unwrap();
    let f = m.function("oob_read").unwrap();
    let s = d.new_stream().unwrap();
    assert!(s.launch_blocking());
    let x = s.alloc_zeroed::<f32>(128).unwrap(); // one 512-byte pool block
                                                 // SAFETY: on the simulator the out-of-bounds read is detected, not performed.
    let e = unsafe { f.builder(&s).arg(&x).tiling(&Tiling { n: 128 }).launch(2) }.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Kernel { kernel, .. } if kernel == "oob_read"),
        "{e}"
    );
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_AICORE_EXCEPTION));
    drop((x, s, f, m, d));

    dsnpu_runtime::finalize().unwrap();
    assert!(matches!(Device::new(0), Err(RuntimeError::Finalized)));
    assert!(matches!(
        dsnpu_runtime::init(),
        Err(RuntimeError::Finalized)
    ));
    dsnpu_runtime::finalize().unwrap();
}
