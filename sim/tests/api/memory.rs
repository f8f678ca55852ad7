//! Device and pinned memory: capacity, out-of-memory, copies and bad pointers.
use std::ptr::null_mut;

use dsnpu_ffi::sys::{self, aclrtMemcpyKind as kind};
use dsnpu_sim::*;

use super::*;

fn mem_info() -> (usize, usize) {
    let (mut f, mut t) = (0, 0);
    // SAFETY: valid out-pointers.
    ok(unsafe { aclrtGetMemInfo(sys::aclrtMemAttr::ACL_HBM_MEM, &mut f, &mut t) });
    (f, t)
}

#[test]
fn out_of_memory_has_the_real_code_and_frees_restore_capacity() {
    on_device(2);
    let total = 256 * MIB;
    assert_eq!(mem_info(), (total, total));
    let mut p = null_mut();
    // SAFETY: valid out-pointer.
    let msg = fails(
        unsafe { aclrtMalloc(&mut p, total, 0) },
        sys::ACL_ERROR_RT_MEMORY_ALLOCATION,
    );
    assert!(msg.contains("device 2 out of memory"), "{msg}");
    assert!(p.is_null());
    let big = dev_alloc(200 * MIB);
    // 200 MiB is a multiple of 32, so the charge is exactly 200 MiB + 32 bytes.
    assert_eq!(mem_info().0, total - 200 * MIB - 32);
    // SAFETY: valid out-pointer.
    fails(
        unsafe { aclrtMalloc(&mut p, 100 * MIB, 0) },
        sys::ACL_ERROR_RT_MEMORY_ALLOCATION,
    );
    let small = dev_alloc(100); // charged round_up(100, 32) + 32 = 160
    assert_eq!(small as usize % 64, 0, "64-byte aligned");
    assert_eq!(mem_info().0, total - 200 * MIB - 32 - 160);
    free(big);
    free(small);
    assert_eq!(mem_info().0, total);
    let (mut f, mut t) = (1, 1);
    // SAFETY: valid out-pointers.
    ok(unsafe { aclrtGetMemInfo(sys::aclrtMemAttr::ACL_DDR_MEM, &mut f, &mut t) });
    assert_eq!((f, t), (0, 0), "the simulated device has no DDR");
    // SAFETY: valid out-pointer.
    fails(
        unsafe { aclrtMalloc(&mut p, 0, 0) },
        sys::ACL_ERROR_INVALID_PARAM,
    );
}

#[test]
fn round_trips_through_every_copy_kind() {
    on_device(0);
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let bytes = data.len() * 4;
    let a = dev_alloc(bytes);
    let b = dev_alloc(bytes);
    h2d(a, &data);
    // SAFETY: device ranges of `bytes` bytes.
    ok(unsafe { aclrtMemcpy(b, bytes, a, bytes, kind::ACL_MEMCPY_DEVICE_TO_DEVICE) });
    assert_eq!(d2h::<f32>(b, 1000), data);
    // Pinned memory, asynchronous, on a created stream.
    let s = create_stream();
    let pin_in = host_alloc(bytes);
    let pin_out = host_alloc(bytes);
    assert_eq!(pin_in as usize % 64, 0);
    // SAFETY: pinned buffers of `bytes` bytes; the stream is synchronized before reading.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), pin_in.cast::<u8>(), bytes);
        ok(aclrtMemsetAsync(a, bytes, 0, bytes, s));
        ok(aclrtMemcpyAsync(
            a,
            bytes,
            pin_in,
            bytes,
            kind::ACL_MEMCPY_HOST_TO_DEVICE,
            s,
        ));
        ok(aclrtMemcpyAsync(
            b,
            bytes,
            a,
            bytes,
            kind::ACL_MEMCPY_DEVICE_TO_DEVICE,
            s,
        ));
        ok(aclrtMemcpyAsync(
            pin_out,
            bytes,
            b,
            bytes,
            kind::ACL_MEMCPY_DEFAULT,
            s,
        ));
        ok(sync(s));
        assert_eq!(
            std::slice::from_raw_parts(pin_out.cast::<f32>(), 1000),
            &data[..]
        );
        // Pageable asynchronous copies complete before the call returns.
        let mut back = vec![0f32; 1000];
        ok(aclrtMemcpyAsync(
            back.as_mut_ptr().cast(),
            bytes,
            a,
            bytes,
            kind::ACL_MEMCPY_DEVICE_TO_HOST,
            s,
        ));
        assert_eq!(back, data);
        // Memset uses the low byte of the value.
        ok(aclrtMemset(a, bytes, 0x1_3f, 8));
        assert_eq!(d2h::<u32>(a, 2), vec![0x3f3f_3f3f, 0x3f3f_3f3f]);
        ok(aclrtFreeHost(pin_in));
        ok(aclrtFreeHost(pin_out));
        ok(aclrtDestroyStream(s));
    }
    free(a);
    free(b);
}

#[test]
fn bad_pointers_and_sizes_are_error_codes() {
    on_device(0);
    let d = dev_alloc(64);
    let pinned = host_alloc(64);
    let mut host = [0u8; 128];
    let h = host.as_mut_ptr().cast::<std::ffi::c_void>();
    // SAFETY: every call below gets pointers it may not dereference unchecked; the simulator
    // rejects them before touching memory (the host array is valid for 128 bytes).
    unsafe {
        let m = fails(
            aclrtMemcpy(h, 128, h, 64, kind::ACL_MEMCPY_DEVICE_TO_HOST),
            sys::ACL_ERROR_RT_PARAM_INVALID,
        );
        assert!(m.contains("not device memory"), "{m}");
        let m = fails(
            aclrtMemcpy(h, 128, d, 65, kind::ACL_MEMCPY_DEVICE_TO_HOST),
            sys::ACL_ERROR_RT_PARAM_INVALID,
        );
        assert!(m.contains("run past the end"), "{m}");
        // count > destMax is the runtime layer's code in CANN, not ACL_ERROR_INVALID_PARAM.
        let m = fails(
            aclrtMemcpy(d, 64, h, 65, kind::ACL_MEMCPY_HOST_TO_DEVICE),
            sys::ACL_ERROR_RT_PARAM_INVALID,
        );
        assert!(m.contains("destMax"), "{m}");
        let m = fails(aclrtMemset(d, 8, 0, 9), sys::ACL_ERROR_RT_PARAM_INVALID);
        assert!(m.contains("maxCount"), "{m}");
        // Zero bytes succeed before any other check, as in CANN 8.x.
        ok(aclrtMemcpy(
            null_mut(),
            0,
            std::ptr::null(),
            0,
            kind::ACL_MEMCPY_HOST_TO_DEVICE,
        ));
        ok(aclrtMemcpyAsync(
            null_mut(),
            0,
            std::ptr::null(),
            0,
            42,
            null_mut(),
        ));
        ok(aclrtMemset(null_mut(), 0, 0, 0));
        ok(aclrtMemsetAsync(null_mut(), 0, 0, 0, null_mut()));
        fails(
            aclrtMemcpy(null_mut(), 64, h, 8, kind::ACL_MEMCPY_HOST_TO_DEVICE),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        fails(
            aclrtMemcpy(pinned, 64, h, 8, kind::ACL_MEMCPY_HOST_TO_DEVICE),
            sys::ACL_ERROR_RT_PARAM_INVALID,
        );
        fails(aclrtMemcpy(d, 64, h, 8, 42), sys::ACL_ERROR_INVALID_PARAM);
        let m = fails(aclrtMemset(h, 128, 0, 8), sys::ACL_ERROR_RT_PARAM_INVALID);
        assert!(m.contains("neither device memory"), "{m}");
        fails(
            aclrtMemsetAsync(d.cast::<u8>().add(60).cast(), 64, 0, 8, null_mut()),
            sys::ACL_ERROR_RT_PARAM_INVALID,
        );
        let m = fails(
            aclrtMemcpyAsync(h, 128, pinned, 8, kind::ACL_MEMCPY_HOST_TO_HOST, null_mut()),
            sys::ACL_ERROR_RT_FEATURE_NOT_SUPPORT,
        );
        assert!(m.contains("host-to-host"), "{m}");
        ok(aclrtMemcpy(
            h,
            128,
            pinned,
            8,
            kind::ACL_MEMCPY_HOST_TO_HOST,
        ));
        // Frees.
        let m = fails(aclrtFree(h), sys::ACL_ERROR_RT_MEMORY_FREE);
        assert!(m.contains("never allocated"), "{m}");
        fails(
            aclrtFree(d.cast::<u8>().add(8).cast()),
            sys::ACL_ERROR_RT_MEMORY_FREE,
        );
        fails(aclrtFree(pinned), sys::ACL_ERROR_RT_MEMORY_FREE);
        fails(aclrtFreeHost(d), sys::ACL_ERROR_RT_MEMORY_FREE);
        fails(aclrtFree(null_mut()), sys::ACL_ERROR_INVALID_PARAM);
        ok(aclrtFree(d));
        fails(aclrtFree(d), sys::ACL_ERROR_RT_MEMORY_FREE);
        let m = fails(
            aclrtMemcpy(h, 128, d, 8, kind::ACL_MEMCPY_DEVICE_TO_HOST),
            sys::ACL_ERROR_RT_PARAM_INVALID,
        );
        assert!(m.contains("freed"), "{m}");
        ok(aclrtFreeHost(pinned));
        fails(aclrtMallocHost(null_mut(), 8), sys::ACL_ERROR_INVALID_PARAM);
        let mut p = null_mut();
        fails(aclrtMallocHost(&mut p, 0), sys::ACL_ERROR_INVALID_PARAM);
    }
}

#[test]
fn calls_needing_a_device_fail_without_a_current_context() {
    init();
    std::thread::spawn(|| {
        let mut p = null_mut();
        let mut dev = -1;
        // SAFETY: valid out-pointers.
        unsafe {
            let m = fails(aclrtMalloc(&mut p, 64, 0), sys::ACL_ERROR_RT_CONTEXT_NULL);
            assert!(m.contains("aclrtSetDevice"), "{m}");
            fails(aclrtGetDevice(&mut dev), sys::ACL_ERROR_RT_CONTEXT_NULL);
            fails(
                aclrtSynchronizeStream(null_mut()),
                sys::ACL_ERROR_RT_CONTEXT_NULL,
            );
            fails(aclrtSetDevice(4), sys::ACL_ERROR_RT_INVALID_DEVICEID);
            fails(aclrtSetDevice(-1), sys::ACL_ERROR_RT_INVALID_DEVICEID);
        }
    })
    .join()
    .unwrap();
}
