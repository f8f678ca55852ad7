//! Streams.
use dsnpu_ffi::sys::{aclError, aclrtEvent, aclrtStream, aclrtStreamStatus};

use super::{out, put};
use crate::error::SimError;
use crate::guard::acl_call;
use crate::handles::to_ptr;
use crate::runtime::runtime;
use crate::stream::TaskKind;

#[no_mangle]
pub unsafe extern "C" fn aclrtCreateStream(stream: *mut aclrtStream) -> aclError {
    acl_call("aclrtCreateStream", || {
        let o = out(stream, "stream")?;
        let id = runtime()?.create_stream()?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(id)) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyStream(stream: aclrtStream) -> aclError {
    acl_call("aclrtDestroyStream", || runtime()?.destroy_stream(stream))
}

#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeStream(stream: aclrtStream) -> aclError {
    acl_call("aclrtSynchronizeStream", || {
        runtime()?.resolve_stream(stream)?.synchronize()
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtStreamQuery(
    stream: aclrtStream,
    status: *mut aclrtStreamStatus::Type,
) -> aclError {
    acl_call("aclrtStreamQuery", || {
        let o = out(status, "status")?;
        let idle = runtime()?.resolve_stream(stream)?.is_idle();
        let value = if idle {
            aclrtStreamStatus::ACL_STREAM_STATUS_COMPLETE
        } else {
            aclrtStreamStatus::ACL_STREAM_STATUS_NOT_READY
        };
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, value) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtStreamWaitEvent(stream: aclrtStream, event: aclrtEvent) -> aclError {
    acl_call("aclrtStreamWaitEvent", || {
        let rt = runtime()?;
        let s = rt.resolve_stream(stream)?;
        let e = rt.events.get(event)?;
        if !e.can_sync() {
            return Err(SimError::InvalidParam(format!(
                "event {:#x} was created without ACL_EVENT_SYNC and cannot be waited on by a stream",
                e.id
            )));
        }
        // Waits for the record issued before this call; a never-recorded event is complete.
        let generation = e.issued();
        if generation > 0 {
            s.enqueue(TaskKind::Wait {
                event: e,
                generation,
            })?;
        }
        Ok(())
    })
}
