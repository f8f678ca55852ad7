//! Events: status, host synchronization, elapsed time, cross-stream waits, flags.
use std::ptr::null_mut;
use std::time::Duration;

use dsnpu_ffi::sys::{self, aclrtEventRecordedStatus as st, aclrtMemcpyKind as kind};
use dsnpu_sim::*;

use super::streams::{query, Gate};
use super::*;

fn event(flags: Option<u32>) -> sys::aclrtEvent {
    let mut e = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe {
        match flags {
            None => aclrtCreateEvent(&mut e),
            Some(f) => aclrtCreateEventWithFlag(&mut e, f),
        }
    });
    e
}

fn status(e: sys::aclrtEvent) -> sys::aclrtEventRecordedStatus::Type {
    let mut s = 99;
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtQueryEventStatus(e, &mut s) });
    s
}

#[test]
fn records_complete_in_stream_order_and_time_the_work_between() {
    on_device(0);
    let bin = test_kernels();
    let s = create_stream();
    let (start, end) = (
        event(None),
        event(Some(
            (sys::ACL_EVENT_TIME_LINE | sys::ACL_EVENT_SYNC) as u32,
        )),
    );
    assert_eq!(
        status(end),
        st::ACL_EVENT_RECORDED_STATUS_COMPLETE,
        "never recorded counts as complete"
    );
    // SAFETY: valid handles.
    unsafe {
        ok(aclrtRecordEvent(start, s));
        let gate = Gate::block(s, bin);
        ok(aclrtRecordEvent(end, s));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(status(end), st::ACL_EVENT_RECORDED_STATUS_NOT_READY);
        let mut ms = 0f32;
        fails(
            aclrtEventElapsedTime(&mut ms, start, end),
            sys::ACL_ERROR_RT_EVENT_NOT_COMPLETE,
        );
        gate.open();
        ok(aclrtSynchronizeEvent(end));
        assert_eq!(status(end), st::ACL_EVENT_RECORDED_STATUS_COMPLETE);
        ok(aclrtEventElapsedTime(&mut ms, start, end));
        // The gate held the stream for at least the 40 ms the host slept.
        assert!((35.0..10_000.0).contains(&ms), "{ms} ms");
        let mut back = 0f32;
        fails(
            aclrtEventElapsedTime(&mut back, end, start),
            sys::ACL_ERROR_RT_EVENT_TIMESTAMP_REVERSAL,
        );
        ok(sync(s));
        drop(gate);
        ok(aclrtDestroyEvent(start));
        ok(aclrtDestroyEvent(end));
        fails(aclrtDestroyEvent(end), sys::ACL_ERROR_RT_INVALID_HANDLE);
        ok(aclrtDestroyStream(s));
    }
}

#[test]
fn a_stream_waits_for_an_event_recorded_on_another() {
    on_device(0);
    let bin = test_kernels();
    let (producer, consumer) = (create_stream(), create_stream());
    let e = event(Some(sys::ACL_EVENT_SYNC as u32));
    let data: Vec<u64> = (0..512).map(|i| i * i + 3).collect();
    let bytes = data.len() * 8;
    let d = dev_alloc(bytes);
    let pinned = host_alloc(bytes);
    // SAFETY: pinned/device buffers of `bytes` bytes; pinned memory is read after synchronizing.
    unsafe {
        let gate = Gate::block(producer, bin);
        ok(aclrtMemcpyAsync(
            d,
            bytes,
            data.as_ptr().cast(),
            bytes,
            kind::ACL_MEMCPY_HOST_TO_DEVICE,
            null_mut(),
        ));
        // The pageable copy above ran on the default stream; the producer now overwrites `d`
        // with zeros after the gate, then signals.
        ok(aclrtMemsetAsync(d, bytes, 0, bytes, producer));
        ok(aclrtRecordEvent(e, producer));
        ok(aclrtStreamWaitEvent(consumer, e));
        ok(aclrtMemcpyAsync(
            pinned,
            bytes,
            d,
            bytes,
            kind::ACL_MEMCPY_DEVICE_TO_HOST,
            consumer,
        ));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            query(consumer),
            sys::aclrtStreamStatus::ACL_STREAM_STATUS_NOT_READY,
            "held by the wait"
        );
        gate.open();
        ok(sync(consumer));
        // The consumer's copy ran after the producer's memset.
        assert!(std::slice::from_raw_parts(pinned.cast::<u64>(), 512)
            .iter()
            .all(|&v| v == 0));
        ok(sync(producer));
        drop(gate);
        // A wait issued before any record does not block.
        let fresh = event(None);
        ok(aclrtStreamWaitEvent(consumer, fresh));
        ok(sync(consumer));
        ok(aclrtFreeHost(pinned));
        for x in [e, fresh] {
            ok(aclrtDestroyEvent(x));
        }
        ok(aclrtDestroyStream(producer));
        ok(aclrtDestroyStream(consumer));
    }
    free(d);
}

#[test]
fn event_flags_limit_what_an_event_can_do() {
    on_device(0);
    let timing_only = event(Some(sys::ACL_EVENT_TIME_LINE as u32));
    let sync_only = event(Some(sys::ACL_EVENT_SYNC as u32));
    let mut e = null_mut();
    // SAFETY: valid handles and out-pointers.
    unsafe {
        let m = fails(
            aclrtStreamWaitEvent(null_mut(), timing_only),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        assert!(m.contains("ACL_EVENT_SYNC"), "{m}");
        ok(aclrtRecordEvent(sync_only, null_mut()));
        ok(aclrtRecordEvent(timing_only, null_mut()));
        ok(aclrtSynchronizeStream(null_mut()));
        let mut ms = 0f32;
        let m = fails(
            aclrtEventElapsedTime(&mut ms, sync_only, timing_only),
            sys::ACL_ERROR_RT_EVENT_TIMESTAMP_INVALID,
        );
        assert!(m.contains("ACL_EVENT_TIME_LINE"), "{m}");
        fails(
            aclrtCreateEventWithFlag(&mut e, 0),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        fails(
            aclrtCreateEventWithFlag(&mut e, 0x4000),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        fails(
            aclrtRecordEvent(null_mut(), null_mut()),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        ok(aclrtDestroyEvent(timing_only));
        ok(aclrtDestroyEvent(sync_only));
    }
}
