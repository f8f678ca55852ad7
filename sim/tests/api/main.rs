//! Integration tests of the exported AscendCL/HCCL functions, called directly from Rust.
//!
//! All tests share one simulator (one `aclInit` per process) configured with 4 devices of
//! 256 MiB and 4 cube / 8 vector cores (8 resident blocks). Device use: 0 general, 1 with 0 for
//! HCCL, 2 for out-of-memory tests, 3 for context and reset lifecycles. The NULL stream of a
//! device is shared by every test on it, so a test that provokes a fault does it on its own stream
//! (a pending fault is reported to whoever synchronizes the stream next).
#![allow(clippy::missing_safety_doc)]

mod contexts;
mod events;
mod hccl;
mod kernels;
mod memory;
mod streams;

use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut};
use std::sync::Once;

use dsnpu_ffi::sys;
use dsnpu_sim::*;

pub(crate) const MIB: usize = 1 << 20;

/// Initializes the shared simulator once.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("DSNPU_SIM_DEVICES", "4");
        std::env::set_var("DSNPU_SIM_MEM_BYTES", "256M");
        std::env::set_var("DSNPU_SIM_AICORE_NUM", "4,8");
        std::env::set_var("DSNPU_SIM_HCCL_TIMEOUT_MS", "20000");
        // SAFETY: NULL config path is allowed.
        assert_eq!(unsafe { aclInit(null()) }, 0, "{}", last_msg());
    });
}

/// Initializes and makes `device`'s default context current on this thread.
pub(crate) fn on_device(device: i32) {
    init();
    // SAFETY: plain call.
    ok(unsafe { aclrtSetDevice(device) });
}

/// The calling thread's pending error message ("" when none).
pub(crate) fn last_msg() -> String {
    // SAFETY: returns NULL or a NUL-terminated string valid until the next call.
    let p = unsafe { aclGetRecentErrMsg() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[track_caller]
pub(crate) fn ok(code: sys::aclError) {
    assert_eq!(code, sys::ACL_SUCCESS, "failed: {}", last_msg());
}

/// Asserts `code` and returns the message that explains it.
#[track_caller]
pub(crate) fn fails(code: sys::aclError, want: sys::aclError) -> String {
    let msg = last_msg();
    assert_eq!(code, want, "message: {msg}");
    assert!(!msg.is_empty(), "a failure leaves a message");
    msg
}

pub(crate) fn dev_alloc(bytes: usize) -> *mut c_void {
    let mut p = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtMalloc(&mut p, bytes, 0) });
    p
}

pub(crate) fn free(p: *mut c_void) {
    // SAFETY: plain call.
    ok(unsafe { aclrtFree(p) });
}

pub(crate) fn host_alloc(bytes: usize) -> *mut c_void {
    let mut p = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtMallocHost(&mut p, bytes) });
    p
}

pub(crate) fn h2d<T: Copy>(dst: *mut c_void, data: &[T]) {
    let bytes = std::mem::size_of_val(data);
    // SAFETY: `data` holds `bytes` bytes.
    ok(unsafe {
        aclrtMemcpy(
            dst,
            bytes,
            data.as_ptr().cast(),
            bytes,
            sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE,
        )
    });
}

pub(crate) fn d2h<T: Copy + Default>(src: *const c_void, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    let bytes = std::mem::size_of_val(out.as_slice());
    // SAFETY: `out` holds `bytes` bytes.
    ok(unsafe {
        aclrtMemcpy(
            out.as_mut_ptr().cast(),
            bytes,
            src,
            bytes,
            sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST,
        )
    });
    out
}

pub(crate) fn create_stream() -> sys::aclrtStream {
    let mut s = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtCreateStream(&mut s) });
    s
}

pub(crate) fn sync(s: sys::aclrtStream) -> sys::aclError {
    // SAFETY: plain call.
    unsafe { aclrtSynchronizeStream(s) }
}

/// The test kernel binary, loaded once per call (cheap: dlopen reuses the mapping).
pub(crate) fn test_kernels() -> sys::aclrtBinHandle {
    let path = std::ffi::CString::new(TEST_KERNELS_PATH).unwrap();
    let mut bin = null_mut();
    // SAFETY: valid C string and out-pointer.
    ok(unsafe { aclrtBinaryLoadFromFile(path.as_ptr(), null_mut(), &mut bin) });
    bin
}

pub(crate) fn function(bin: sys::aclrtBinHandle, name: &str) -> sys::aclrtFuncHandle {
    let name = std::ffi::CString::new(name).unwrap();
    let mut f = null_mut();
    // SAFETY: valid C string and out-pointer.
    ok(unsafe { aclrtBinaryGetFunction(bin, name.as_ptr(), &mut f) });
    f
}

/// Launches `func` with 8-byte arguments through the args-handle path; returns the launch code.
pub(crate) fn launch(
    func: sys::aclrtFuncHandle,
    blocks: u32,
    stream: sys::aclrtStream,
    args: &[u64],
) -> sys::aclError {
    let mut h = null_mut();
    // SAFETY: valid handles and pointers; each appended value lives during its call.
    unsafe {
        ok(aclrtKernelArgsInit(func, &mut h));
        for a in args {
            let mut v = *a;
            let mut param = null_mut();
            ok(aclrtKernelArgsAppend(
                h,
                (&mut v as *mut u64).cast(),
                8,
                &mut param,
            ));
        }
        ok(aclrtKernelArgsFinalize(h));
        aclrtLaunchKernelWithConfig(func, blocks, stream, null_mut(), h, null_mut())
    }
}

/// A device buffer holding `{ uint64_t value; }` (a tiling struct).
pub(crate) fn tiling(value: u64) -> *mut c_void {
    let t = dev_alloc(8);
    h2d(t, &[value]);
    t
}

pub(crate) fn addr(p: *const c_void) -> u64 {
    p as usize as u64
}

#[test]
fn identity_and_double_init() {
    init();
    // SAFETY: plain calls with valid out-pointers.
    unsafe {
        assert_eq!(aclInit(null()), sys::ACL_ERROR_REPEAT_INITIALIZE);
        assert!(last_msg().contains("already called"));
        let soc = CStr::from_ptr(aclrtGetSocName()).to_str().unwrap();
        assert!(soc.starts_with("dsnpu-sim"), "{soc}");
        let ver = CStr::from_ptr(dsnpu_sim_version()).to_str().unwrap();
        assert_eq!(ver, format!("dsnpu-sim {}", env!("CARGO_PKG_VERSION")));
        let (mut a, mut b, mut c) = (-1, -1, -1);
        ok(aclrtGetVersion(&mut a, &mut b, &mut c));
        let want: Vec<i32> = env!("CARGO_PKG_VERSION")
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(vec![a, b, c], want);
        let mut n = 0;
        ok(aclrtGetDeviceCount(&mut n));
        assert_eq!(n, 4);
        use sys::aclDeviceInfo::*;
        let mut v = 0i64;
        ok(aclGetDeviceCapability(
            1,
            ACL_DEVICE_INFO_AI_CORE_NUM,
            &mut v,
        ));
        assert_eq!(v, 4);
        ok(aclGetDeviceCapability(
            1,
            ACL_DEVICE_INFO_VECTOR_CORE_NUM,
            &mut v,
        ));
        assert_eq!(v, 8);
        ok(aclGetDeviceCapability(0, ACL_DEVICE_INFO_L2_SIZE, &mut v));
        assert_eq!(v, 192 << 20);
        fails(
            aclGetDeviceCapability(4, ACL_DEVICE_INFO_AI_CORE_NUM, &mut v),
            sys::ACL_ERROR_RT_INVALID_DEVICEID,
        );
        fails(
            aclGetDeviceCapability(0, ACL_DEVICE_INFO_UNDEFINED, &mut v),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        fails(
            aclGetDeviceCapability(0, ACL_DEVICE_INFO_AI_CORE_NUM, null_mut()),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        fails(
            aclrtGetDeviceCount(null_mut()),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        assert!(last_msg().is_empty(), "reading the message clears it");
        let e = CStr::from_ptr(HcclGetErrorString(sys::HcclResult::HCCL_E_TIMEOUT))
            .to_str()
            .unwrap();
        assert_eq!(e, "timeout");
    }
}
