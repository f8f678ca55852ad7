//! The kernel sanitizer through the whole stack: the host kernel binary loaded by the simulator through
//! the runtime. A kernel that overflows the Unified Buffer, one that reads past its GM allocation and one
//! that writes past a tensor each fail with ACL_ERROR_RT_AICORE_EXCEPTION and a message naming the
//! kernel, block and operation; the process carries on and the device stays usable (the next launch on
//! the same stream works).
//!
//! The faulting kernels are the host layer's self-tests (`selftest_fault`, modes documented in
//! `kernels/src/ascendc/selftest.cpp`); the last test faults a real kernel through its typed launcher.

use std::sync::Arc;

use dsnpu_ffi::sys;
use dsnpu_kernels::launch::{self, KernelLibrary, RopeShape};
use dsnpu_kernels::{KernelError, RopeLayout, SelftestTiling};
use dsnpu_runtime::{Device, DeviceBuffer, LaunchFlag, RuntimeError, Stream};

const AICORE_EXCEPTION: i32 = sys::ACL_ERROR_RT_AICORE_EXCEPTION;

fn setup() -> (Arc<KernelLibrary>, Stream) {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::get(&dev).unwrap();
    let stream = dev.new_stream().unwrap();
    (lib, stream)
}

/// Runs `selftest_fault(a, b, workspace, {mode, count, arg})` on one block and waits for it.
fn selftest(
    lib: &KernelLibrary,
    s: &Stream,
    a: &DeviceBuffer<f32>,
    b: &mut DeviceBuffer<f32>,
    (mode, count, arg): (u32, u32, u32),
) -> Result<(), RuntimeError> {
    let f = lib.function_named("selftest_fault").unwrap();
    let tiling = SelftestTiling {
        mode,
        count,
        arg,
        reserved: 0,
    };
    // SAFETY: selftest_fault takes (a, b, workspace, tiling). Its faulting modes are deliberate: the
    // host Ascend C layer checks every GM and UB access *before* it happens and reports a violation to
    // the simulator instead of performing it, so no byte outside `a` and `b` is read or written.
    unsafe {
        f.builder(s)
            .arg(a)
            .arg_mut(b)
            .null()
            .tiling(&tiling)
            .launch(1)?
    };
    s.synchronize()
}

/// 64 ones in `a` and 64 zeros in `b`, each an exact `aclrtMalloc` of 256 bytes (not a pool block,
/// which would round up to 512 and hide a read just past the end).
fn buffers(s: &Stream) -> (DeviceBuffer<f32>, DeviceBuffer<f32>) {
    let mut a = s.alloc_uncached::<f32>(64).unwrap();
    a.copy_from_host(&[1.0; 64]).unwrap();
    let mut b = s.alloc_uncached::<f32>(64).unwrap();
    b.copy_from_host(&[0.0; 64]).unwrap();
    (a, b)
}

/// The fault's code is the AI Core exception and its message names the kernel, the block and `what`.
fn assert_fault(e: &RuntimeError, what: &str) -> String {
    assert_eq!(e.acl_code(), Some(AICORE_EXCEPTION), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("ACL_ERROR_RT_AICORE_EXCEPTION (507015)"),
        "{text}"
    );
    assert!(text.contains("kernel selftest_fault block 0: "), "{text}");
    assert!(text.contains(what), "{text}");
    text
}

/// The stream and device still work: the correct mode copies `count` elements of `a` into `b`.
fn assert_usable(
    lib: &KernelLibrary,
    s: &Stream,
    a: &DeviceBuffer<f32>,
    b: &mut DeviceBuffer<f32>,
) {
    selftest(lib, s, a, b, (0, 13, 0)).expect("a good launch after the fault");
    let got = b.to_vec().unwrap();
    assert_eq!(&got[..13], &[1.0; 13]);
    assert_eq!(&got[13..], &[0.0; 51]);
}

#[test]
fn ub_overflow_fails_the_launch_and_the_device_stays_usable() {
    let (lib, s) = setup();
    let (a, mut b) = buffers(&s);
    // One byte more than the 192 KiB Unified Buffer (rounded up to 32 by InitBuffer: 196640).
    let e = selftest(&lib, &s, &a, &mut b, (1, 196_609, 0)).unwrap_err();
    assert_fault(
        &e,
        "TPipe::InitBuffer: 196640 bytes on top of 0 in use exceed the Unified Buffer's 196608 bytes",
    );
    // Exactly the capacity fits.
    selftest(&lib, &s, &a, &mut b, (1, 196_608, 0)).unwrap();
    assert_usable(&lib, &s, &a, &mut b);
}

#[test]
fn reading_past_the_gm_allocation_fails_the_launch() {
    let (lib, s) = setup();
    let (a, mut b) = buffers(&s);
    // `a` is 256 bytes; a DataCopy of 128 f32 (512 bytes) from it leaves the allocation.
    let e = selftest(&lib, &s, &a, &mut b, (2, 128, 0)).unwrap_err();
    let text = assert_fault(&e, "DataCopy: GM range");
    assert!(
        text.contains("+512 bytes) is not inside one live device allocation"),
        "{text}"
    );
    // 64 f32 is exactly the allocation.
    selftest(&lib, &s, &a, &mut b, (2, 64, 0)).unwrap();
    assert_usable(&lib, &s, &a, &mut b);
}

#[test]
fn writing_past_a_tensor_fails_before_any_byte_moves() {
    let (lib, s) = setup();
    let (a, mut b) = buffers(&s);
    // `b`'s GlobalTensor has 8 elements; writing 16 faults on the bounds check.
    let e = selftest(&lib, &s, &a, &mut b, (3, 16, 8)).unwrap_err();
    assert_fault(
        &e,
        "DataCopyPad: elements [0, 16) are past the end of a GlobalTensor of 8 elements",
    );
    assert_eq!(b.to_vec().unwrap(), vec![0.0; 64], "nothing was written");
    assert_usable(&lib, &s, &a, &mut b);
}

#[test]
fn a_typed_launch_that_faults_names_its_kernel_and_the_next_one_works() {
    let (lib, s) = setup();
    // rope at position 3 of a 3-row table: the kernel's checked table read faults.
    let shape = RopeShape::dense(2, 1, 4, 3, RopeLayout::HalfSplit);
    let x = s.upload(&[1.0f32; 8]).unwrap();
    let pos = s.upload(&[0i32, 3]).unwrap();
    let cos = s.upload(&[0.5f32; 6]).unwrap();
    let sin = s.upload(&[0.5f32; 6]).unwrap();
    let mut y = s.alloc_zeroed::<f32>(8).unwrap();
    let launched = launch::rope(&lib, &s, &x, &pos, &cos, &sin, &mut y, shape).unwrap();
    assert_eq!(launched.symbol, "rope_f32");
    let e = launch::device_error(launched.symbol, s.synchronize().unwrap_err());
    assert_eq!(e.acl_code(), Some(AICORE_EXCEPTION));
    let KernelError::Device {
        kernel, message, ..
    } = &e
    else {
        panic!("not a device error: {e:?}");
    };
    assert_eq!(kernel, "rope_f32");
    assert!(
        message.contains("kernel rope_f32 block 1: DataCopyPad: elements [6, 8) are past the end of a GlobalTensor of 6 elements"),
        "{message}"
    );

    // The same stream runs the next kernel: RMSNorm of the row [3, 4] with unit weight:
    // mean square (9 + 16) / 2 = 12.5, so y = [3, 4] / sqrt(12.5).
    let x = s.upload(&[3.0f32, 4.0]).unwrap();
    let w = s.upload(&[1.0f32, 1.0]).unwrap();
    let mut y = s.alloc::<f32>(2).unwrap();
    launch::rms_norm(&lib, &s, &x, &w, &mut y, 1, 0.0).unwrap();
    s.synchronize().unwrap();
    let r = 12.5f32.sqrt();
    let got = y.to_vec().unwrap();
    assert!(
        (got[0] - 3.0 / r).abs() < 1e-6 && (got[1] - 4.0 / r).abs() < 1e-6,
        "{got:?}"
    );
}

/// Runs `selftest_defect(a, b, workspace, {mode, 64})` on `blocks` blocks and waits for it.
fn defect(
    lib: &KernelLibrary,
    s: &Stream,
    a: &DeviceBuffer<f32>,
    b: &mut DeviceBuffer<f32>,
    mode: u32,
    blocks: u32,
) -> Result<(), RuntimeError> {
    let f = lib.function_named("selftest_defect").unwrap();
    let tiling = SelftestTiling {
        mode,
        count: 64,
        arg: 0,
        reserved: 0,
    };
    // SAFETY: selftest_defect takes (a, b, workspace, tiling) and touches at most `count` f32 of a and
    // b, both 64 elements; its defects are in the ordering of UB accesses (which the host layer reports,
    // executing them in program order) or in flags, never out of bounds.
    unsafe {
        f.builder(s)
            .arg(a)
            .arg_mut(b)
            .null()
            .tiling(&tiling)
            .launch(blocks)?
    };
    s.synchronize()
}

#[test]
fn sanitizer_findings_fail_the_launch_with_their_kind() {
    // The workspace's .cargo/config.toml turns every check on for cargo commands.
    let (lib, s) = setup();
    let (a, mut b) = buffers(&s);
    let e = defect(&lib, &s, &a, &mut b, 4, 1).unwrap_err();
    assert_eq!(e.acl_code(), Some(AICORE_EXCEPTION), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(
            "kernel selftest_defect block 0: race: DataCopy on MTE2 writes TQue<VECIN> buffer 0"
        ),
        "{text}"
    );
    let e = defect(&lib, &s, &a, &mut b, 8, 1).unwrap_err();
    assert!(
        e.to_string().contains("block 0: sync: WaitFlag<MTE2_V>(3)"),
        "{e}"
    );
    // SyncAll reached by blocks 1..3 only: the simulator reports it as a sync finding.
    let e = defect(&lib, &s, &a, &mut b, 14, 4).unwrap_err();
    assert_eq!(e.acl_code(), Some(AICORE_EXCEPTION), "{e}");
    assert!(e.to_string().contains(": sync: "), "{e}");
    // The synchronized variant runs clean on the same stream and computes b = 2a.
    defect(&lib, &s, &a, &mut b, 104, 1).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![2.0; 64]);
}

#[test]
fn a_launch_blocking_launch_fails_on_its_own_sanitizer_warnings() {
    // Mode 6 copies 13 f32 (52 bytes, not a multiple of 32): the sanitizer warns twice and the
    // launch completes.
    let (lib, s) = setup();
    let (a, mut b) = buffers(&s);
    s.set_launch_blocking(false);
    selftest(&lib, &s, &a, &mut b, (6, 13, 0)).unwrap();

    s.set_launch_blocking(true);
    let e = selftest(&lib, &s, &a, &mut b, (6, 13, 0)).unwrap_err();
    assert!(
        matches!(
            &e,
            RuntimeError::Kernel { kernel, source }
                if kernel == "selftest_fault"
                    && matches!(**source, RuntimeError::LaunchFlagged(LaunchFlag::Warnings(2)))
        ),
        "{e}"
    );
    assert_eq!(e.acl_code(), None, "{e}");
    // A clean launch on the same stream passes its check.
    selftest(&lib, &s, &a, &mut b, (0, 16, 0)).unwrap();
}
