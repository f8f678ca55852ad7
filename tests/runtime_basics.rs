//! The runtime against the simulator, through the real dynamic-loading path: initialization,
//! devices, copies, stream ordering, events, error codes, and threads sharing a device.
//!
//! The simulator is configured (before the first AscendCL call) with two 1 GiB devices.

use std::sync::Once;
use std::time::{Duration, Instant};

use dsnpu_ffi::sys;
use dsnpu_runtime::{
    Device, DeviceBuffer, Event, EventFlags, HostBuffer, LibraryKind, RuntimeError, Stream,
};

const GIB: usize = 1 << 30;

fn setup() -> Device {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        std::env::set_var("DSNPU_SIM_DEVICES", "2");
        std::env::set_var("DSNPU_SIM_MEM_BYTES", "1G");
    });
    Device::new(0).expect("device 0 of the simulator")
}

#[test]
fn initializes_once_and_reports_the_simulator() {
    setup();
    dsnpu_runtime::init().unwrap();
    dsnpu_runtime::init().unwrap();
    let lib = dsnpu_runtime::library().unwrap();
    assert_eq!(lib.kind, LibraryKind::Simulator);
    assert!(lib.path.is_absolute(), "{:?}", lib.path);
    assert_eq!(lib.path.file_name().unwrap(), "libdsnpu_sim.so");
    let soc = dsnpu_runtime::soc_name().unwrap().unwrap_or_default();
    assert!(
        soc.to_lowercase().contains("sim"),
        "SoC name {soc:?} should say it is the simulator"
    );
    dsnpu_runtime::version().unwrap();
}

#[test]
fn device_count_memory_info_and_invalid_ordinals() {
    let d = setup();
    assert_eq!(Device::count().unwrap(), 2);
    let info = d.mem_info().unwrap();
    assert_eq!(info.total, GIB);
    assert!(info.free <= info.total);
    let d1 = Device::new(1).unwrap();
    assert_eq!(d1.ordinal(), 1);
    assert_eq!(d1.mem_info().unwrap().total, GIB);
    for bad in [2, -1] {
        match Device::new(bad) {
            Err(RuntimeError::InvalidDevice { ordinal, count: 2 }) => assert_eq!(ordinal, bad),
            other => panic!("Device::new({bad}) gave {other:?}"),
        }
    }
}

#[test]
fn synchronous_round_trips_and_size_checks() {
    let d = setup();
    let s = d.new_stream().unwrap();
    let host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let mut a = s.upload(&host).unwrap();
    assert_eq!(a.len(), 1000);
    assert_eq!(a.num_bytes(), 4000);
    assert_eq!(a.to_vec().unwrap(), host);

    let mut b = s.alloc::<f32>(1000).unwrap();
    s.memcpy_dtod(&a, &mut b).unwrap();
    assert_eq!(b.to_vec().unwrap(), host);

    let mut short = s.alloc::<f32>(999).unwrap();
    match s.memcpy_dtod(&a, &mut short) {
        Err(RuntimeError::SizeMismatch {
            expected: 999,
            actual: 1000,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.copy_from_host(&host[..10]),
        Err(RuntimeError::SizeMismatch {
            expected: 1000,
            actual: 10,
            ..
        })
    ));
    let mut small = [0f32; 3];
    assert!(matches!(
        a.copy_to_host(&mut small),
        Err(RuntimeError::SizeMismatch { .. })
    ));

    // Empty buffers need no device memory and copy nothing.
    let e = s.alloc::<u64>(0).unwrap();
    assert!(e.is_empty());
    assert_eq!(e.to_vec().unwrap(), Vec::<u64>::new());
}

#[test]
fn a_copy_at_an_offset_writes_only_its_range() {
    let d = setup();
    let s = d.new_stream().unwrap();
    let mut a = s.upload(&[0u32; 10]).unwrap();
    a.copy_from_host_at(3, &[7, 8, 9]).unwrap();
    a.copy_from_host_at(9, &[1]).unwrap();
    a.copy_from_host_at(10, &[]).unwrap();
    assert_eq!(a.to_vec().unwrap(), [0, 0, 0, 7, 8, 9, 0, 0, 0, 1]);
    // Past the end, or an end that overflows: refused, nothing written.
    for (offset, len) in [(8, 3), (11, 0), (usize::MAX, 1)] {
        match a.copy_from_host_at(offset, &vec![5; len]) {
            Err(RuntimeError::OutOfRange {
                offset: o,
                len: l,
                buffer_len: 10,
                ..
            }) if (o, l) == (offset, len) => {}
            other => panic!("offset {offset}, len {len}: {other:?}"),
        }
    }
    assert_eq!(a.to_vec().unwrap(), [0, 0, 0, 7, 8, 9, 0, 0, 0, 1]);
}

#[test]
fn buffers_of_another_device_are_rejected() {
    let d0 = setup();
    let d1 = Device::new(1).unwrap();
    let s0 = d0.new_stream().unwrap();
    let s1 = d1.new_stream().unwrap();
    let a = s1.upload(&[1u32, 2, 3]).unwrap();
    let mut b = s0.alloc::<u32>(3).unwrap();
    match s0.memcpy_dtod(&a, &mut b) {
        Err(RuntimeError::DeviceMismatch {
            expected: 0,
            actual: 1,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The same copy on device 1's stream, into device 1 memory, works.
    let mut c = s1.alloc::<u32>(3).unwrap();
    s1.memcpy_dtod(&a, &mut c).unwrap();
    assert_eq!(c.to_vec().unwrap(), [1, 2, 3]);
}

#[test]
fn async_copies_run_in_stream_order() {
    let d = setup();
    let s = d.new_stream().unwrap();
    let n = 1 << 20;
    let values: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let src = HostBuffer::from_slice(&d, &values).unwrap();
    let mut dev = s.alloc::<u32>(n).unwrap();
    let mut copy = s.alloc::<u32>(n).unwrap();
    let mut out_copy = HostBuffer::<u32>::new(&d, n).unwrap();
    let mut out_zeroed = HostBuffer::<u32>::new(&d, n).unwrap();
    // Nothing synchronizes between these: only stream order makes the results right.
    s.memcpy_htod(&src, &mut dev).unwrap();
    s.memcpy_dtod(&dev, &mut copy).unwrap();
    s.memset_zeros(&mut dev).unwrap();
    s.memcpy_dtoh(&copy, &mut out_copy).unwrap();
    s.memcpy_dtoh(&dev, &mut out_zeroed).unwrap();
    assert_eq!(out_copy.as_slice().unwrap(), &values[..]);
    assert!(out_zeroed.as_slice().unwrap().iter().all(|&v| v == 0));
    s.memset_bytes(&mut dev, 0xA5).unwrap();
    s.memcpy_dtoh(&dev, &mut out_zeroed).unwrap();
    assert!(out_zeroed
        .as_slice()
        .unwrap()
        .iter()
        .all(|&v| v == 0xA5A5_A5A5));
    // Host access waited for the copies; the pinned source can be rewritten and reused.
    src.as_slice().unwrap();
    let mut src = src;
    src.as_mut_slice().unwrap().fill(7);
    s.memcpy_htod(&src, &mut dev).unwrap();
    assert!(dev.to_vec().unwrap().iter().all(|&v| v == 7));
}

#[test]
fn a_buffer_used_on_a_second_stream_waits_for_the_first() {
    let d = setup();
    let s1 = d.new_stream().unwrap();
    let s2 = d.new_stream().unwrap();
    let n = 4 << 20; // 16 MiB: the copy takes long enough to be overtaken if unordered.
    let ones = HostBuffer::from_slice(&d, &vec![1u32; n]).unwrap();
    let mut dev = s1.alloc_zeroed::<u32>(n).unwrap();
    s1.memcpy_htod(&ones, &mut dev).unwrap();
    let mut out = HostBuffer::<u32>::new(&d, n).unwrap();
    s2.memcpy_dtoh(&dev, &mut out).unwrap();
    assert!(dev.last_stream().unwrap().same_as(&s2));
    assert!(out.as_slice().unwrap().iter().all(|&v| v == 1));
}

#[test]
fn explicit_event_waits_order_streams() {
    let d = setup();
    let s1 = d.new_stream().unwrap();
    let s2 = d.new_stream().unwrap();
    let n = 8 << 20;
    let src = HostBuffer::from_slice(&d, &vec![3u32; n]).unwrap();
    let mut dev = s1.alloc::<u32>(n).unwrap();
    let e1 = Event::new(&d, EventFlags::SYNC).unwrap();
    let e2 = Event::new(&d, EventFlags::SYNC).unwrap();
    s1.memcpy_htod(&src, &mut dev).unwrap();
    e1.record(&s1).unwrap();
    s2.wait_event(&e1).unwrap();
    e2.record(&s2).unwrap();
    e2.synchronize().unwrap();
    // s2 passed its wait, so s1's copy (before e1) is done.
    assert!(e1.is_complete().unwrap());
    s1.synchronize().unwrap();
    assert!(s1.is_idle().unwrap());
    // A never-recorded event counts as complete.
    assert!(Event::new(&d, EventFlags::SYNC)
        .unwrap()
        .is_complete()
        .unwrap());
}

#[test]
fn events_measure_elapsed_time() {
    let d = setup();
    let s = d.new_stream().unwrap();
    let flags = EventFlags::TIME_LINE | EventFlags::SYNC;
    let start = Event::new(&d, flags).unwrap();
    let end = Event::new(&d, flags).unwrap();
    let host_start = Instant::now();
    start.record(&s).unwrap();
    start.synchronize().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    end.record(&s).unwrap();
    end.synchronize().unwrap();
    let host_ms = host_start.elapsed().as_secs_f32() * 1e3;
    let ms = start.elapsed_ms(&end).unwrap();
    // Both records lie within the host's window, and the host slept 30 ms between them.
    assert!(
        ms >= 29.9 && ms <= host_ms,
        "elapsed {ms} ms, host saw {host_ms} ms"
    );

    let untimed = Event::new(&d, EventFlags::SYNC).unwrap();
    untimed.record(&s).unwrap();
    assert!(matches!(
        start.elapsed_ms(&untimed),
        Err(RuntimeError::EventNotTimed)
    ));
}

#[test]
fn bad_pointers_and_sizes_give_error_codes() {
    let d = setup();
    d.bind_to_thread().unwrap();
    use dsnpu_ffi::result::memory;
    // A pointer that was never allocated.
    let bogus = 0x7000_dead_0000usize as *mut std::ffi::c_void;
    // SAFETY: the simulator validates the pointer against its allocation table and fails.
    let e = unsafe { memory::free(bogus) }.unwrap_err();
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_MEMORY_FREE));
    let acl = match &e {
        dsnpu_ffi::FfiError::Acl(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(acl.name, Some("ACL_ERROR_RT_MEMORY_FREE"));
    assert!(
        acl.message.as_deref().is_some_and(|m| !m.is_empty()),
        "aclGetRecentErrMsg explains: {acl:?}"
    );

    let p = memory::malloc(64, sys::aclrtMemMallocPolicy::ACL_MEM_MALLOC_HUGE_FIRST).unwrap();
    let host = [0u8; 128];
    // count larger than destMax.
    // SAFETY: the simulator rejects count > destMax before touching memory.
    let e = unsafe {
        memory::memcpy(
            p,
            64,
            host.as_ptr().cast(),
            128,
            sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE,
        )
    }
    .unwrap_err();
    // The runtime layer's code, as in CANN (rtMemcpy rejects it, not the ACL layer).
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_PARAM_INVALID));
    // A range running past the end of the allocation.
    let mut back = [0u8; 128];
    // SAFETY: the simulator rejects a device range that straddles the allocation's end.
    let e = unsafe {
        memory::memcpy(
            back.as_mut_ptr().cast(),
            128,
            p,
            128,
            sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST,
        )
    }
    .unwrap_err();
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_PARAM_INVALID));
    // Zero-size allocation.
    let e = memory::malloc(0, 0).unwrap_err();
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_INVALID_PARAM));
    // SAFETY: `p` came from malloc above and nothing uses it.
    unsafe { memory::free(p) }.unwrap();
    // Freeing twice is an error, not a crash.
    // SAFETY: the simulator knows `p` is no longer allocated.
    assert_eq!(
        unsafe { memory::free(p) }.unwrap_err().acl_code(),
        Some(sys::ACL_ERROR_RT_MEMORY_FREE)
    );

    // Through the runtime: a size that overflows.
    let s = d.new_stream().unwrap();
    assert!(matches!(
        s.alloc::<u64>(usize::MAX / 2),
        Err(RuntimeError::SizeOverflow { .. })
    ));
}

#[test]
fn four_threads_share_one_device() {
    let d = setup();
    let shared_stream = d.new_stream().unwrap();
    let shared: DeviceBuffer<u64> = shared_stream
        .upload(&(0..4096u64).collect::<Vec<_>>())
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (d, shared, shared_stream) = (&d, &shared, &shared_stream);
            scope.spawn(move || {
                // Each thread: its own stream, plus the shared stream and the shared buffer.
                let own: Stream = d.new_stream().unwrap();
                for i in 0..25u64 {
                    let values: Vec<u64> =
                        (0..1000).map(|k| t * 1_000_000 + i * 1000 + k).collect();
                    let a = own.upload(&values).unwrap();
                    let mut b = shared_stream.alloc::<u64>(1000).unwrap();
                    shared_stream.memcpy_dtod(&a, &mut b).unwrap();
                    assert_eq!(b.to_vec().unwrap(), values);
                    let seen = shared.to_vec().unwrap();
                    assert_eq!(seen[4095], 4095);
                    let mut copy = own.alloc::<u64>(4096).unwrap();
                    own.memcpy_dtod(shared, &mut copy).unwrap();
                    assert_eq!(copy.to_vec().unwrap()[t as usize * 1000], t * 1000);
                }
            });
        }
    });
    shared_stream.synchronize().unwrap();
}

#[test]
fn hccl_calls_go_through_the_simulator() {
    use dsnpu_ffi::result::hccl;
    setup();
    let text = hccl::error_string(sys::HcclResult::HCCL_E_PARA).unwrap();
    assert!(text.is_some_and(|t| !t.is_empty()));
    let comms = hccl::comm_init_all(&[0, 1]).unwrap();
    assert_eq!(comms.len(), 2);
    for (rank, &comm) in comms.iter().enumerate() {
        // SAFETY: communicators just created by HcclCommInitAll.
        unsafe {
            assert_eq!(hccl::rank_size(comm).unwrap(), 2);
            assert_eq!(hccl::rank_id(comm).unwrap(), rank as u32);
        }
    }
    for comm in comms {
        // SAFETY: live communicator with no queued collective; not used after.
        unsafe { hccl::comm_destroy(comm) }.unwrap();
    }
    // A null communicator is an HCCL error code, with the library's explanation.
    // SAFETY: the simulator looks handles up in a table; null is rejected.
    let e = unsafe { hccl::rank_size(std::ptr::null_mut()) }.unwrap_err();
    match e {
        dsnpu_ffi::FfiError::Hccl(h) => {
            assert_eq!(h.code, sys::HcclResult::HCCL_E_PTR);
            assert_eq!(h.name, Some("HCCL_E_PTR"));
        }
        other => panic!("{other}"),
    }
}
