//! Events.
use std::sync::Arc;

use dsnpu_ffi::sys::{aclError, aclrtEvent, aclrtEventRecordedStatus, aclrtStream};

use super::{out, put};
use crate::error::SimError;
use crate::event::{check_flags, elapsed_ms, Event, DEFAULT_FLAGS};
use crate::guard::acl_call;
use crate::handles::{next_handle, to_ptr};
use crate::runtime::runtime;
use crate::stream::TaskKind;

fn create(event: *mut aclrtEvent, flags: u32) -> Result<(), SimError> {
    let o = out(event, "event")?;
    let rt = runtime()?;
    rt.current_context()?;
    let id = next_handle();
    rt.events.insert(id, Arc::new(Event::new(id, flags)));
    // SAFETY: checked non-null out-parameter (export contract).
    unsafe { put(o, to_ptr(id)) };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn aclrtCreateEvent(event: *mut aclrtEvent) -> aclError {
    acl_call("aclrtCreateEvent", || create(event, DEFAULT_FLAGS))
}

#[no_mangle]
pub unsafe extern "C" fn aclrtCreateEventWithFlag(event: *mut aclrtEvent, flag: u32) -> aclError {
    acl_call("aclrtCreateEventWithFlag", || {
        check_flags(flag)?;
        create(event, flag)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyEvent(event: aclrtEvent) -> aclError {
    // Queued records and waits hold their own reference, so destroying early is harmless.
    acl_call("aclrtDestroyEvent", || {
        runtime()?.events.remove(event).map(drop)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtRecordEvent(event: aclrtEvent, stream: aclrtStream) -> aclError {
    acl_call("aclrtRecordEvent", || {
        let rt = runtime()?;
        let e = rt.events.get(event)?;
        let s = rt.resolve_stream(stream)?;
        s.enqueue_with(|| {
            let generation = e.issue();
            TaskKind::Record {
                event: e,
                generation,
            }
        })?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtQueryEventStatus(
    event: aclrtEvent,
    status: *mut aclrtEventRecordedStatus::Type,
) -> aclError {
    acl_call("aclrtQueryEventStatus", || {
        let o = out(status, "status")?;
        let value = if runtime()?.events.get(event)?.is_complete() {
            aclrtEventRecordedStatus::ACL_EVENT_RECORDED_STATUS_COMPLETE
        } else {
            aclrtEventRecordedStatus::ACL_EVENT_RECORDED_STATUS_NOT_READY
        };
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, value) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeEvent(event: aclrtEvent) -> aclError {
    acl_call("aclrtSynchronizeEvent", || {
        let e = runtime()?.events.get(event)?;
        e.wait_for(e.issued());
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtEventElapsedTime(
    ms: *mut f32,
    start: aclrtEvent,
    end: aclrtEvent,
) -> aclError {
    acl_call("aclrtEventElapsedTime", || {
        let o = out(ms, "ms")?;
        let rt = runtime()?;
        let (s, e) = (rt.events.get(start)?, rt.events.get(end)?);
        let value = elapsed_ms(&s, &e)?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, value) };
        Ok(())
    })
}
