//! Streams: asynchrony, ordering, sticky faults, context checks, threads sharing a device.
use std::ffi::c_void;
use std::ptr::null_mut;

use dsnpu_ffi::sys::{self, aclrtMemcpyKind as kind};
use dsnpu_sim::kernel::abi::LaunchCounters;
use dsnpu_sim::*;

use super::*;

/// A gate: a spin_until launch on a stream that holds it until [`Gate::open`].
pub(crate) struct Gate {
    flag: *mut c_void,
    tiling: *mut c_void,
}

impl Gate {
    pub(crate) fn block(s: sys::aclrtStream, bin: sys::aclrtBinHandle) -> Gate {
        let flag = dev_alloc(4);
        h2d(flag, &[0u32]);
        let tiling = tiling(10_000);
        ok(launch(
            function(bin, "spin_until"),
            1,
            s,
            &[addr(flag), addr(tiling)],
        ));
        Gate { flag, tiling }
    }

    /// Lets the stream go on: aclrtMemcpy does not wait for streams, so it reaches the kernel.
    pub(crate) fn open(&self) {
        h2d(self.flag, &[1u32]);
    }
}

impl Drop for Gate {
    /// Drop only after the gated stream was synchronized.
    fn drop(&mut self) {
        free(self.flag);
        free(self.tiling);
    }
}

pub(crate) fn query(s: sys::aclrtStream) -> sys::aclrtStreamStatus::Type {
    let mut st = 99;
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtStreamQuery(s, &mut st) });
    st
}

#[test]
fn async_copies_are_asynchronous_and_ordered() {
    on_device(0);
    let bin = test_kernels();
    let s = create_stream();
    let n = 4096usize;
    let bytes = n * 4;
    let data: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let pin_in = host_alloc(bytes);
    let pin_out = host_alloc(bytes);
    let (a, b) = (dev_alloc(bytes), dev_alloc(bytes));
    let gate = Gate::block(s, bin);
    // SAFETY: pinned buffers of `bytes` bytes, read only after the stream is synchronized (or
    // while the gate provably holds the copies back).
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), pin_in.cast::<u8>(), bytes);
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
            kind::ACL_MEMCPY_DEVICE_TO_HOST,
            s,
        ));
        // The calls returned while the stream is still held at the gate: nothing ran yet.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            query(s),
            sys::aclrtStreamStatus::ACL_STREAM_STATUS_NOT_READY
        );
        assert!(std::slice::from_raw_parts(pin_out.cast::<u32>(), n)
            .iter()
            .all(|&v| v == 0));
        gate.open();
        ok(sync(s));
        assert_eq!(query(s), sys::aclrtStreamStatus::ACL_STREAM_STATUS_COMPLETE);
        assert_eq!(
            std::slice::from_raw_parts(pin_out.cast::<u32>(), n),
            &data[..]
        );
        ok(aclrtFreeHost(pin_in));
        ok(aclrtFreeHost(pin_out));
        ok(aclrtDestroyStream(s));
    }
    drop(gate);
    free(a);
    free(b);
}

#[test]
fn a_fault_is_sticky_until_synchronize_and_the_device_stays_usable() {
    on_device(0);
    let bin = test_kernels();
    let s = create_stream();
    let x = dev_alloc(16 * 4);
    let t = tiling(16);
    let out = dev_alloc(4);
    h2d(out, &[7u32]);
    ok(launch(function(bin, "oob_read"), 2, s, &[addr(x), addr(t)]));
    // Queued after the fault: skipped while the fault is pending.
    // SAFETY: device buffers of 4 bytes.
    ok(unsafe { aclrtMemsetAsync(out, 4, 0, 4, s) });
    let msg = fails(sync(s), sys::ACL_ERROR_RT_AICORE_EXCEPTION);
    assert!(msg.contains("kernel oob_read block "), "{msg}");
    assert!(msg.contains("GM read of 4 bytes at element 16"), "{msg}");
    assert_eq!(
        d2h::<u32>(out, 1),
        vec![7],
        "the memset after the fault did not run"
    );
    ok(sync(s));
    // The device and the stream work again.
    // SAFETY: `out` is a live 4-byte device allocation and `s` a live stream of this context.
    ok(unsafe { aclrtMemsetAsync(out, 4, 0, 4, s) });
    ok(sync(s));
    assert_eq!(d2h::<u32>(out, 1), vec![0]);
    let mut c = LaunchCounters::default();
    // SAFETY: valid out-pointer of the counters type.
    ok(unsafe { dsnpu_sim_last_launch_counters(s, &mut c) });
    assert_eq!(c.status, sys::ACL_ERROR_RT_AICORE_EXCEPTION);
    assert_eq!(c.kernel_name(), "oob_read");
    // SAFETY: plain call.
    ok(unsafe { aclrtDestroyStream(s) });
    for p in [x, t, out] {
        free(p);
    }
}

#[test]
fn the_null_stream_is_the_default_stream_of_the_current_context() {
    on_device(0);
    let d = dev_alloc(8);
    let src = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let mut back = [0u8; 8];
    // SAFETY: 8-byte buffers.
    unsafe {
        ok(aclrtMemcpyAsync(
            d,
            8,
            src.as_ptr().cast(),
            8,
            kind::ACL_MEMCPY_HOST_TO_DEVICE,
            null_mut(),
        ));
        ok(aclrtMemcpyAsync(
            back.as_mut_ptr().cast(),
            8,
            d,
            8,
            kind::ACL_MEMCPY_DEVICE_TO_HOST,
            null_mut(),
        ));
        ok(aclrtSynchronizeStream(null_mut()));
    }
    assert_eq!(back, src);
    free(d);
}

#[test]
fn streams_are_bound_to_their_context() {
    on_device(0);
    let s = create_stream();
    let stream_addr = s as usize;
    std::thread::spawn(move || {
        let s = stream_addr as sys::aclrtStream;
        let mut ctx = null_mut();
        // SAFETY: valid out-pointers and handles.
        unsafe {
            ok(aclrtCreateContext(&mut ctx, 0));
            let m = fails(aclrtSynchronizeStream(s), sys::ACL_ERROR_RT_STREAM_CONTEXT);
            assert!(m.contains("current context"), "{m}");
            fails(
                aclrtSynchronizeStream(0x1234usize as sys::aclrtStream),
                sys::ACL_ERROR_RT_INVALID_HANDLE,
            );
            ok(aclrtDestroyContext(ctx));
        }
    })
    .join()
    .unwrap();
    // SAFETY: plain calls.
    unsafe {
        ok(aclrtDestroyStream(s));
        fails(aclrtDestroyStream(s), sys::ACL_ERROR_RT_INVALID_HANDLE);
        fails(aclrtDestroyStream(null_mut()), sys::ACL_ERROR_INVALID_PARAM);
    }
}

#[test]
fn four_threads_share_one_device() {
    on_device(0);
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                on_device(0);
                let s = create_stream();
                let data: Vec<u32> = (0..10_000).map(|i| i * 4 + t).collect();
                let bytes = data.len() * 4;
                let (a, b) = (dev_alloc(bytes), dev_alloc(bytes));
                let mut back = vec![0u32; data.len()];
                for _ in 0..20 {
                    // SAFETY: buffers of `bytes` bytes; pageable copies complete in the call.
                    unsafe {
                        ok(aclrtMemcpyAsync(
                            a,
                            bytes,
                            data.as_ptr().cast(),
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
                            back.as_mut_ptr().cast(),
                            bytes,
                            b,
                            bytes,
                            kind::ACL_MEMCPY_DEVICE_TO_HOST,
                            s,
                        ));
                    }
                    ok(sync(s));
                    assert_eq!(back, data);
                    back.iter_mut().for_each(|v| *v = 0);
                }
                free(a);
                free(b);
                // SAFETY: plain call.
                ok(unsafe { aclrtDestroyStream(s) });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
