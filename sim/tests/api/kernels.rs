//! Kernel binaries and launches with the test kernels of sim/testdata/test_kernels.c.
use std::ffi::CString;
use std::ptr::{null, null_mut};

use dsnpu_ffi::sys;
use dsnpu_sim::kernel::abi::LaunchCounters;
use dsnpu_sim::*;

use super::*;

fn counters(s: sys::aclrtStream) -> LaunchCounters {
    let mut c = LaunchCounters::default();
    // SAFETY: valid out-pointer.
    ok(unsafe { dsnpu_sim_last_launch_counters(s, &mut c) });
    c
}

#[test]
fn vec_add_splits_rows_over_blocks_and_reports_counters() {
    on_device(0);
    let bin = test_kernels();
    let f = function(bin, "vec_add");
    let s = create_stream();
    let n = 1000usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
    let y: Vec<f32> = (0..n).map(|i| 100.0 - i as f32).collect();
    let (dx, dy, dz) = (dev_alloc(n * 4), dev_alloc(n * 4), dev_alloc(n * 4));
    h2d(dx, &x);
    h2d(dy, &y);
    let t = tiling(n as u64);
    assert_eq!(counters(s).launch_seq, 0, "no launch yet");
    ok(launch(f, 7, s, &[addr(dx), addr(dy), addr(dz), addr(t)]));
    ok(sync(s));
    let z: Vec<f32> = d2h(dz, n);
    let want: Vec<f32> = (0..n).map(|i| 100.0 - 0.75 * i as f32).collect();
    assert_eq!(z, want);
    let c = counters(s);
    assert_eq!((c.launch_seq, c.num_blocks, c.status), (1, 7, 0));
    assert_eq!(c.kernel_name(), "vec_add");
    assert_eq!(c.totals.gm_to_ub_bytes, 8 * n as u64);
    assert_eq!(c.totals.ub_to_gm_bytes, 4 * n as u64);
    assert_eq!(c.totals.vector_elem_ops, n as u64);
    // ceil(1000 / 7) = 143 rows in the largest chunk, 12 bytes per row.
    assert_eq!(c.totals.ub_high_water, 12 * 143);
    // SAFETY: plain calls.
    unsafe {
        ok(aclrtDestroyStream(s));
        ok(aclrtBinaryUnLoad(bin));
        fails(
            aclrtKernelArgsInit(f, &mut null_mut()),
            sys::ACL_ERROR_RT_INVALID_HANDLE,
        );
    }
    for p in [dx, dy, dz, t] {
        free(p);
    }
}

fn block_indices(blocks: u32) {
    let bin = test_kernels();
    let s = create_stream();
    let out = dev_alloc(blocks as usize * 8);
    // SAFETY: device buffer of blocks * 8 bytes.
    ok(unsafe { aclrtMemset(out, blocks as usize * 8, 0xff, blocks as usize * 8) });
    let t = tiling(2 * blocks as u64);
    ok(launch(
        function(bin, "write_block_idx"),
        blocks,
        s,
        &[addr(out), addr(t)],
    ));
    ok(sync(s));
    // SAFETY: plain call.
    ok(unsafe { aclrtDestroyStream(s) });
    let got: Vec<u32> = d2h(out, 2 * blocks as usize);
    let want: Vec<u32> = (0..blocks).flat_map(|b| [b, blocks]).collect();
    assert_eq!(got, want);
    free(out);
    free(t);
}

#[test]
fn every_block_sees_its_index_including_launches_in_waves() {
    on_device(0);
    block_indices(1);
    block_indices(5);
    block_indices(20); // 8 resident blocks: three waves
}

#[test]
fn sync_all_meets_all_blocks_and_never_hangs() {
    on_device(0);
    let bin = test_kernels();
    let f = function(bin, "sync_all_sum");
    let s = create_stream();
    let blocks = 8u32;
    let partials = dev_alloc(8 * 16);
    let out = dev_alloc(8 * 17);
    let t = tiling(16);
    ok(launch(f, blocks, s, &[addr(partials), addr(out), addr(t)]));
    ok(sync(s));
    let got: Vec<u64> = d2h(out, 1 + blocks as usize);
    assert_eq!(got[0], 36, "1 + 2 + ... + 8");
    for b in 0..blocks as usize {
        assert_eq!(
            got[1 + b],
            ((b + 1) % 8 + 1) as u64,
            "block {b} read its neighbour's partial"
        );
    }
    // More blocks than run at once: SyncAll fails the launch instead of deadlocking.
    ok(launch(f, 12, s, &[addr(partials), addr(out), addr(t)]));
    let m = fails(sync(s), sys::ACL_ERROR_RT_AICORE_EXCEPTION);
    assert!(
        m.contains("SyncAll needs all 12 blocks running at once"),
        "{m}"
    );
    // A kernel that does not declare its SyncAll (ABI 4) may have its blocks run one after another:
    // its SyncAll fails the launch, naming the declaration, instead of hanging.
    let u = function(bin, "sync_all_undeclared");
    ok(launch(u, 4, s, &[addr(partials), addr(out), addr(t)]));
    let m = fails(sync(s), sys::ACL_ERROR_RT_AICORE_EXCEPTION);
    assert!(
        m.contains("SyncAll in a kernel that does not declare it")
            && m.contains("sync_all_undeclared__dsnpu_sync_all"),
        "{m}"
    );
    // A block that fails or leaves releases the blocks waiting in SyncAll.
    let g = function(bin, "sync_abandon");
    let marks = dev_alloc(4 * 6);
    for mode in [0u64, 1] {
        let t = tiling(mode);
        h2d(marks, &[0u32; 6]);
        ok(launch(g, 6, s, &[addr(marks), addr(t)]));
        let m = fails(sync(s), sys::ACL_ERROR_RT_AICORE_EXCEPTION);
        if mode == 0 {
            assert!(
                m.contains("kernel sync_abandon block 0: block 0 gave up"),
                "{m}"
            );
        } else {
            assert!(m.contains("kernel sync_abandon block "), "{m}");
            assert!(m.contains("SyncAll"), "{m}");
        }
        assert_eq!(
            d2h::<u32>(marks, 6)[1..],
            [1, 1, 1, 1, 1],
            "every waiter was released with non-zero"
        );
        free(t);
    }
    for p in [partials, out, t, marks] {
        free(p);
    }
    // SAFETY: plain call.
    ok(unsafe { aclrtDestroyStream(s) });
}

#[test]
fn counters_are_summed_over_blocks() {
    on_device(0);
    let s = create_stream();
    ok(launch(
        function(test_kernels(), "counters_probe"),
        4,
        s,
        &[0],
    ));
    ok(sync(s));
    let c = counters(s);
    assert_eq!(c.totals.gm_to_ub_bytes, 400);
    assert_eq!(c.totals.ub_to_gm_bytes, 40);
    assert_eq!(c.totals.vector_elem_ops, 4);
    assert_eq!(c.totals.cube_macs, 6, "0 + 1 + 2 + 3");
    assert_eq!(c.totals.ub_high_water, 4000, "max, not sum");
    assert_eq!(c.warnings, 4);
    // SAFETY: plain call.
    ok(unsafe { aclrtDestroyStream(s) });
}

#[test]
fn host_args_with_a_placeholder_and_binaries_from_bytes() {
    on_device(0);
    let bytes = std::fs::read(TEST_KERNELS_PATH).unwrap();
    let mut bin = null_mut();
    // SAFETY: `bytes` holds the binary; valid out-pointer.
    ok(unsafe {
        aclrtBinaryLoadFromData(bytes.as_ptr().cast(), bytes.len(), null_mut(), &mut bin)
    });
    let f = function(bin, "vec_add");
    let s = create_stream();
    let n = 64usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let (dx, dz) = (dev_alloc(n * 4), dev_alloc(n * 4));
    h2d(dx, &x);
    // Args: x, y (= x), z, tiling pointer patched to the `n` stored behind the pointers.
    let mut blob: Vec<u64> = vec![addr(dx), addr(dx), addr(dz), 0, n as u64];
    let mut ph = [sys::aclrtPlaceHolderInfo {
        addrOffset: 24,
        dataOffset: 32,
    }];
    // SAFETY: the blob holds 40 bytes; one placeholder entry.
    ok(unsafe {
        aclrtLaunchKernelWithHostArgs(
            f,
            3,
            s,
            null_mut(),
            blob.as_mut_ptr().cast(),
            40,
            ph.as_mut_ptr(),
            1,
        )
    });
    ok(sync(s));
    let want: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    assert_eq!(d2h::<f32>(dz, n), want);
    // The same through an args handle with a placeholder whose data is the tiling.
    let mut h = null_mut();
    // SAFETY: valid handles; the appended values live during each call.
    unsafe {
        ok(aclrtKernelArgsInit(f, &mut h));
        for a in [addr(dx), addr(dx), addr(dz)] {
            let mut v = a;
            ok(aclrtKernelArgsAppend(
                h,
                (&mut v as *mut u64).cast(),
                8,
                null_mut(),
            ));
        }
        let mut p = null_mut();
        ok(aclrtKernelArgsAppendPlaceHolder(h, &mut p));
        let mut buf = null_mut();
        ok(aclrtKernelArgsGetPlaceHolderBuffer(h, p, 8, &mut buf));
        buf.cast::<u64>().write_unaligned(n as u64);
        fails(
            aclrtLaunchKernelWithConfig(f, 2, s, null_mut(), h, null_mut()),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        ok(aclrtKernelArgsFinalize(h));
        ok(aclrtMemset(dz, n * 4, 0, n * 4));
        ok(aclrtLaunchKernelWithConfig(
            f,
            2,
            s,
            null_mut(),
            h,
            null_mut(),
        ));
        let mut v = 0u64;
        fails(
            aclrtKernelArgsAppend(h, (&mut v as *mut u64).cast(), 8, null_mut()),
            sys::ACL_ERROR_INVALID_PARAM,
        );
    }
    ok(sync(s));
    assert_eq!(d2h::<f32>(dz, n), want);
    // Bad host placeholders are rejected at the call.
    let mut bad = [sys::aclrtPlaceHolderInfo {
        addrOffset: 36,
        dataOffset: 0,
    }];
    // SAFETY: as above.
    fails(
        unsafe {
            aclrtLaunchKernelWithHostArgs(
                f,
                1,
                s,
                null_mut(),
                blob.as_mut_ptr().cast(),
                40,
                bad.as_mut_ptr(),
                1,
            )
        },
        sys::ACL_ERROR_INVALID_PARAM,
    );
    free(dx);
    free(dz);
    // SAFETY: plain calls.
    unsafe {
        ok(aclrtBinaryUnLoad(bin));
        ok(aclrtDestroyStream(s));
    }
}

#[test]
fn bad_binaries_names_and_launches_are_error_codes() {
    on_device(0);
    let bin = test_kernels();
    let f = function(bin, "write_block_idx");
    let s = create_stream();
    let mut h = null_mut();
    let name = CString::new("no_such_kernel").unwrap();
    let rel = CString::new("relative/kernels.so").unwrap();
    let missing = CString::new("/nonexistent/dsnpu/kernels.so").unwrap();
    let junk = b"definitely not an ELF shared object";
    // SAFETY: valid C strings, buffers and out-pointers.
    unsafe {
        let m = fails(
            aclrtBinaryGetFunction(bin, name.as_ptr(), &mut h),
            sys::ACL_ERROR_RT_KERNEL_LOOKUP,
        );
        assert!(m.contains("no_such_kernel"), "{m}");
        fails(
            aclrtBinaryLoadFromFile(rel.as_ptr(), null_mut(), &mut h),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        let m = fails(
            aclrtBinaryLoadFromFile(missing.as_ptr(), null_mut(), &mut h),
            sys::ACL_ERROR_RT_FILE_OPEN,
        );
        assert!(m.contains("/nonexistent/dsnpu/kernels.so"), "{m}");
        fails(
            aclrtBinaryLoadFromData(junk.as_ptr().cast(), junk.len(), null(), &mut h),
            sys::ACL_ERROR_INVALID_FILE,
        );
        let lib = CString::new(std::env::current_exe().unwrap().to_str().unwrap()).unwrap();
        let m = fails(
            aclrtBinaryLoadFromFile(lib.as_ptr(), null_mut(), &mut h),
            sys::ACL_ERROR_INVALID_FILE,
        );
        assert!(
            m.contains("dsnpu_sim_kernel_abi_version") || m.contains("not a usable"),
            "{m}"
        );
        fails(
            launch(f, 0, null_mut(), &[0, 0]),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        fails(
            launch(f, 65_536, null_mut(), &[0, 0]),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        let bogus = 0x40usize as sys::aclrtFuncHandle;
        fails(
            aclrtLaunchKernelWithHostArgs(
                bogus,
                1,
                null_mut(),
                null_mut(),
                null_mut(),
                0,
                null_mut(),
                0,
            ),
            sys::ACL_ERROR_RT_INVALID_HANDLE,
        );
        // A launch whose pointers are garbage fails in the kernel's checks, not in a crash.
        ok(launch(f, 2, s, &[0xdead_0000, 0xbeef_0000]));
        let m = fails(sync(s), sys::ACL_ERROR_RT_AICORE_EXCEPTION);
        assert!(m.contains("tiling pointer"), "{m}");
        ok(aclrtDestroyStream(s));
    }
}
