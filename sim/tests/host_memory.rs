//! How simulated device memory uses the host: bounded by what the host can back (207001 at once
//! past it), committed only when written, and returned to the host when freed even while an
//! unrelated kernel runs.
//!
//! Each test measures its own process (VmRSS from /proc/self/status, `aclInit` with the default
//! configuration), so each re-runs this test binary as a child filtered to itself; the parent
//! only checks that the child passed.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_void, CStr, CString};
use std::process::Command;
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use dsnpu_ffi::sys::{self, aclrtMemcpyKind as kind};
use dsnpu_sim::*;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const CHILD_VAR: &str = "DSNPU_SIM_HOST_MEMORY_CHILD";

/// Runs `body` in a child process (this binary, filtered to `name`); true in the child.
fn run_isolated(name: &str, body: fn()) {
    if std::env::var(CHILD_VAR).as_deref() == Ok(name) {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .env_remove("DSNPU_SIM_MEM_BYTES")
        .env_remove("DSNPU_SIM_HOST_MEM_BYTES")
        .env_remove("DSNPU_SIM_DEVICES")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child {name} failed: {}", out.status);
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
}

fn last_msg() -> String {
    // SAFETY: NULL or a NUL-terminated string valid until the next call on this thread.
    let p = unsafe { aclGetRecentErrMsg() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[track_caller]
fn ok(code: sys::aclError) {
    assert_eq!(code, 0, "{}", last_msg());
}

fn setup() {
    // SAFETY: plain calls.
    unsafe {
        ok(aclInit(null()));
        ok(aclrtSetDevice(0));
    }
}

/// Resident set size of this process, bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn mem_available() -> usize {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemAvailable in /proc/meminfo");
    kb * 1024
}

fn mem_info() -> (usize, usize) {
    let (mut f, mut t) = (0, 0);
    // SAFETY: valid out-pointers.
    ok(unsafe { aclrtGetMemInfo(sys::aclrtMemAttr::ACL_HBM_MEM, &mut f, &mut t) });
    (f, t)
}

/// `aclrtMalloc(size)` and how long it took.
fn timed_malloc(size: usize) -> (sys::aclError, *mut c_void, Duration) {
    let mut p = null_mut();
    let t = Instant::now();
    // SAFETY: valid out-pointer.
    let rc = unsafe { aclrtMalloc(&mut p, size, 0) };
    (rc, p, t.elapsed())
}

fn free(p: *mut c_void) {
    // SAFETY: plain call.
    ok(unsafe { aclrtFree(p) });
}

fn memset(p: *mut c_void, len: usize, value: i32) {
    // SAFETY: plain call; the simulator validates the range.
    ok(unsafe { aclrtMemset(p, len, value, len) });
}

#[test]
fn allocating_past_what_the_host_can_back_fails_within_a_second() {
    run_isolated(
        "allocating_past_what_the_host_can_back_fails_within_a_second",
        || {
            // Read right before aclInit takes its estimate: other processes may change it later.
            let available = mem_available();
            setup();
            let (free_b, total) = mem_info();
            println!("aclrtGetMemInfo: {free_b} free of {total}; host MemAvailable {available}");
            assert_eq!(total, 64 * GIB, "the modeled device capacity");
            assert!(
                free_b < available + 256 * MIB,
                "free {free_b} must be what the host can back"
            );
            // Past what is free: the OOM code, promptly.
            let (rc, p, took) = timed_malloc(free_b + MIB);
            println!("allocating {} bytes: {rc} in {took:?}", free_b + MIB);
            assert_eq!(rc, sys::ACL_ERROR_RT_MEMORY_ALLOCATION, "{}", last_msg());
            assert!(p.is_null());
            assert!(took < Duration::from_secs(1), "{took:?}");
            assert!(last_msg().contains("host can back"), "{}", last_msg());
            // All that is free is delivered, promptly, and commits nothing yet (free is a multiple
            // of 32, so `free - 32` bytes are charged exactly `free`).
            assert_eq!(free_b % 32, 0);
            let before = rss();
            let (rc, p, took) = timed_malloc(free_b - 32);
            println!("allocating {} bytes: {rc} in {took:?}", free_b - 32);
            ok(rc);
            assert!(took < Duration::from_secs(1), "{took:?}");
            assert!(rss() < before + 64 * MIB);
            assert_eq!(mem_info().0, 0);
            let (rc, _, took) = timed_malloc(1);
            assert_eq!(rc, sys::ACL_ERROR_RT_MEMORY_ALLOCATION);
            assert!(took < Duration::from_secs(1));
            free(p);
            assert_eq!(mem_info().0, free_b);
            // The case: two 14 GiB allocations each return within a second, success
            // exactly when aclrtGetMemInfo said it fits.
            let mut held = Vec::new();
            for i in 0..2 {
                let (f, _) = mem_info();
                let (rc, p, took) = timed_malloc(14 * GIB);
                println!("14 GiB allocation {}: {rc} in {took:?} ({f} free)", i + 1);
                assert!(took < Duration::from_secs(1), "{took:?}");
                if f >= 14 * GIB + 32 {
                    ok(rc);
                    held.push(p);
                } else {
                    assert_eq!(rc, sys::ACL_ERROR_RT_MEMORY_ALLOCATION);
                }
            }
            held.into_iter().for_each(free);
        },
    );
}

#[test]
fn a_2_gib_allocation_commits_no_host_memory_until_written() {
    run_isolated(
        "a_2_gib_allocation_commits_no_host_memory_until_written",
        || {
            setup();
            let before = rss();
            let (rc, p, took) = timed_malloc(2 * GIB);
            ok(rc);
            let allocated = rss();
            println!(
                "2 GiB aclrtMalloc took {took:?}; VmRSS {} -> {} MiB",
                before / MIB,
                allocated / MIB
            );
            assert!(
                allocated < before + 8 * MIB,
                "allocating committed {} bytes",
                allocated - before
            );
            // Untouched memory reads as zeros.
            let mut back = vec![0xffu8; 4096];
            // SAFETY: valid host buffer of 4096 bytes; the device range is checked.
            ok(unsafe {
                aclrtMemcpy(
                    back.as_mut_ptr().cast(),
                    4096,
                    p.cast::<u8>().add(GIB).cast(),
                    4096,
                    kind::ACL_MEMCPY_DEVICE_TO_HOST,
                )
            });
            assert!(back.iter().all(|&b| b == 0));
            // Writing commits what is written (so the measurement can see commits at all).
            memset(p, 256 * MIB, 0x5a);
            let written = rss();
            println!("after writing 256 MiB: VmRSS {} MiB", written / MIB);
            assert!(
                written >= allocated + 250 * MIB,
                "{written} after writing 256 MiB"
            );
            free(p);
            let freed = rss();
            println!("after aclrtFree: VmRSS {} MiB", freed / MIB);
            assert!(
                freed < before + 16 * MIB,
                "freeing returned the memory: {freed}"
            );
        },
    );
}

fn load_kernel(name: &str) -> sys::aclrtFuncHandle {
    let path = CString::new(TEST_KERNELS_PATH).unwrap();
    let name = CString::new(name).unwrap();
    let mut bin = null_mut();
    let mut f = null_mut();
    // SAFETY: valid C strings and out-pointers.
    unsafe {
        ok(aclrtBinaryLoadFromFile(path.as_ptr(), null_mut(), &mut bin));
        ok(aclrtBinaryGetFunction(bin, name.as_ptr(), &mut f));
    }
    f
}

/// Launches `spin_signal(started, flag, tiling{max_ms})` on `stream` and waits until it runs.
fn launch_spinner(
    f: sys::aclrtFuncHandle,
    stream: sys::aclrtStream,
    flag: *mut c_void,
    max_ms: u64,
) -> *mut c_void {
    let (rc, started, _) = timed_malloc(4);
    ok(rc);
    let (rc, tiling, _) = timed_malloc(8);
    ok(rc);
    // SAFETY: valid host buffers and checked device ranges.
    unsafe {
        ok(aclrtMemcpy(
            tiling,
            8,
            (&max_ms as *const u64).cast(),
            8,
            kind::ACL_MEMCPY_HOST_TO_DEVICE,
        ));
        let mut args = [started as u64, flag as u64, tiling as u64];
        ok(aclrtLaunchKernelWithHostArgs(
            f,
            1,
            stream,
            null_mut(),
            args.as_mut_ptr().cast(),
            24,
            null_mut(),
            0,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut v = 0u32;
        // SAFETY: valid 4-byte host buffer; the device range is checked.
        ok(unsafe {
            aclrtMemcpy(
                (&mut v as *mut u32).cast(),
                4,
                started,
                4,
                kind::ACL_MEMCPY_DEVICE_TO_HOST,
            )
        });
        if v == 1 {
            return started;
        }
        assert!(Instant::now() < deadline, "the kernel never started");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stream_busy(s: sys::aclrtStream) -> bool {
    let mut status = 0;
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtStreamQuery(s, &mut status) });
    status != sys::aclrtStreamStatus::ACL_STREAM_STATUS_COMPLETE
}

#[test]
fn freed_memory_returns_to_the_host_while_an_unrelated_kernel_runs() {
    run_isolated(
        "freed_memory_returns_to_the_host_while_an_unrelated_kernel_runs",
        || {
            setup();
            let f = load_kernel("spin_signal");
            let mut s = null_mut();
            // SAFETY: valid out-pointer.
            ok(unsafe { aclrtCreateStream(&mut s) });
            let (rc, flag, _) = timed_malloc(4);
            ok(rc);
            // Fresh device memory is not zeros (poisoned under the init check): clear the flag.
            memset(flag, 4, 0);
            launch_spinner(f, s, flag, 60_000);
            // The case: 48 x 32 MiB written and freed during a 1-block kernel.
            let before = rss();
            let blocks: Vec<*mut c_void> = (0..48)
                .map(|_| {
                    let (rc, p, _) = timed_malloc(32 * MIB);
                    ok(rc);
                    memset(p, 32 * MIB, 1);
                    p
                })
                .collect();
            let written = rss();
            blocks.into_iter().for_each(free);
            let freed = rss();
            println!(
                "48 x 32 MiB during a running kernel: VmRSS {} -> {} -> {} MiB",
                before / MIB,
                written / MIB,
                freed / MIB
            );
            assert!(written >= before + 1500 * MIB, "{written}");
            assert!(stream_busy(s), "the kernel still runs");
            assert!(
                freed < before + 32 * MIB,
                "the freed memory went back to the host: {freed}"
            );
            // Let the kernel finish.
            let one = 1u32;
            // SAFETY: valid 4-byte host buffer; the device range is checked.
            ok(unsafe {
                aclrtMemcpy(
                    flag,
                    4,
                    (&one as *const u32).cast(),
                    4,
                    kind::ACL_MEMCPY_HOST_TO_DEVICE,
                )
            });
            // SAFETY: plain call.
            ok(unsafe { aclrtSynchronizeStream(s) });
        },
    );
}

#[test]
fn memory_a_running_kernel_uses_stays_mapped_when_freed() {
    run_isolated(
        "memory_a_running_kernel_uses_stays_mapped_when_freed",
        || {
            setup();
            let f = load_kernel("spin_signal");
            let mut s = null_mut();
            // SAFETY: valid out-pointer.
            ok(unsafe { aclrtCreateStream(&mut s) });
            // Large enough to be its own mapping: unmapping it under the kernel would SIGSEGV.
            let (rc, flag, _) = timed_malloc(8 * MIB);
            ok(rc);
            // Fresh device memory is not zeros (poisoned under the init check): clear the flag.
            memset(flag, 8 * MIB, 0);
            launch_spinner(f, s, flag, 300);
            free(flag);
            // The kernel keeps polling the freed (still mapped) flag and times out normally.
            // SAFETY: plain call.
            let rc = unsafe { aclrtSynchronizeStream(s) };
            let msg = last_msg();
            assert_eq!(rc, sys::ACL_ERROR_RT_AICORE_EXCEPTION, "{msg}");
            assert!(msg.contains("flag not set within 300 ms"), "{msg}");
        },
    );
}
