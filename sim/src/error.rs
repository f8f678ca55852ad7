//! The simulator's one error type and its mapping onto the real AscendCL and HCCL codes.
//!
//! Every failure inside the simulator is a [`SimError`]; the export layer turns it into the code of
//! the generated bindings (`dsnpu_ffi::sys`) with [`SimError::acl_code`] or [`SimError::hccl_code`]
//! and stores its text for `aclGetRecentErrMsg`.
use dsnpu_ffi::sys;
use sys::HcclResult;

/// A failed simulator operation. The text is what `aclGetRecentErrMsg` reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A call other than `aclInit` before `aclInit`, or after `aclFinalize`.
    #[error("AscendCL is not initialized: call aclInit first (and nothing after aclFinalize)")]
    Uninitialized,
    /// A second `aclInit` in the process (AscendCL allows one).
    #[error("aclInit was already called in this process; AscendCL allows it once")]
    RepeatInit,
    /// A second `aclFinalize`.
    #[error("aclFinalize was already called")]
    RepeatFinalize,
    /// A required pointer argument was NULL.
    #[error("argument {0} must not be NULL")]
    NullPointer(&'static str),
    /// A bad argument caught by the API layer (sizes, flags, kinds, lengths).
    #[error("{0}")]
    InvalidParam(String),
    /// A bad argument caught by the runtime layer (addresses and ranges that are not valid memory).
    #[error("{0}")]
    RtParam(String),
    /// A device id outside `0..count`.
    #[error("invalid device id {id}: the simulator has {count} device(s) (DSNPU_SIM_DEVICES)")]
    InvalidDevice { id: i32, count: u32 },
    /// The calling thread has no current context.
    #[error(
        "no current context on this thread: call aclrtSetDevice or aclrtSetCurrentContext first"
    )]
    NoContext,
    /// A handle that was never created by this simulator or was already destroyed.
    #[error("invalid {kind} handle {handle:#x}: never created, or already destroyed")]
    InvalidHandle { kind: &'static str, handle: usize },
    /// A stream used from a thread whose current context is not the stream's.
    #[error(
        "stream {stream:#x} belongs to context {stream_ctx:#x} (device {device}), \
         but this thread's current context is {current:#x}"
    )]
    StreamContext {
        stream: usize,
        stream_ctx: usize,
        device: i32,
        current: usize,
    },
    /// Device memory exhausted: the real out-of-memory code.
    #[error(
        "device {device} out of memory: requested {requested} bytes ({charged} after rounding), \
         {free} of {total} bytes free"
    )]
    OutOfMemory {
        device: i32,
        requested: usize,
        charged: usize,
        free: u64,
        total: u64,
    },
    /// The host cannot back an allocation the device would have room for (device memory is host
    /// memory here): the real out-of-memory code, at once rather than a stall when it is written.
    #[error(
        "{what} out of memory: requested {requested} bytes ({charged} after rounding), but the host \
         can back only {host_free} of {host_budget} bytes more (the budget taken at aclInit from \
         MemAvailable; DSNPU_SIM_HOST_MEM_BYTES overrides it)"
    )]
    HostOutOfMemory {
        what: String,
        requested: usize,
        charged: usize,
        host_free: u64,
        host_budget: u64,
    },
    /// Host memory (pinned buffers, argument copies) could not be allocated.
    #[error("host allocation of {0} bytes failed")]
    HostAlloc(usize),
    /// `aclrtFree`/`aclrtFreeHost` of an address that is not the start of a live allocation.
    #[error("{0}")]
    BadFree(String),
    /// A queued task found memory that was freed after it was queued.
    #[error("{0}")]
    MemoryGone(String),
    /// A feature the real runtime rejects too (e.g. asynchronous host-to-host copies).
    #[error("{0}")]
    Unsupported(String),
    /// The `aclInit` configuration file cannot be read.
    #[error("cannot read the aclInit configuration file {path}: {reason}")]
    ConfigFile { path: String, reason: String },
    /// The `aclInit` configuration file is not JSON (or nests too deep).
    #[error("cannot parse the aclInit configuration file {path}: {reason}")]
    ConfigParse { path: String, reason: String },
    /// A kernel binary path that cannot be opened.
    #[error("cannot open kernel binary {path}: {reason}")]
    FileOpen { path: String, reason: String },
    /// A file that is not a host kernel binary of this ABI.
    #[error("{path} is not a usable dsnpu host kernel binary: {reason}")]
    InvalidBinary { path: String, reason: String },
    /// `aclrtBinaryGetFunction` of a name the binary does not export.
    #[error("kernel {name:?} not found in kernel binary {binary}")]
    KernelNotFound { name: String, binary: String },
    /// A block of a launch reported a fault, or could not meet its blocks in SyncAll.
    #[error("kernel {kernel} block {block}: {msg}")]
    KernelFault {
        kernel: String,
        block: u32,
        msg: String,
    },
    /// Host resources (threads) for a stream or a launch could not be created.
    #[error("{0}")]
    Resources(String),
    /// `aclrtEventElapsedTime` on an event whose record has not completed.
    #[error("{0}")]
    EventNotComplete(String),
    /// `aclrtEventElapsedTime` on an event that was never recorded or cannot be timed.
    #[error("{0}")]
    EventTimestamp(String),
    /// `aclrtEventElapsedTime` with the end recorded before the start.
    #[error("{0}")]
    EventReversal(String),
    /// A collective whose ranks did not all arrive in time.
    #[error("{0}")]
    Timeout(String),
    /// A bug in the simulator (a caught panic, a broken invariant).
    #[error("internal simulator error: {0}")]
    Internal(String),
}

impl SimError {
    /// The AscendCL code of this error.
    pub fn acl_code(&self) -> sys::aclError {
        match self {
            SimError::Uninitialized => sys::ACL_ERROR_UNINITIALIZE,
            SimError::RepeatInit => sys::ACL_ERROR_REPEAT_INITIALIZE,
            SimError::RepeatFinalize => sys::ACL_ERROR_REPEAT_FINALIZE,
            SimError::NullPointer(_) | SimError::InvalidParam(_) => sys::ACL_ERROR_INVALID_PARAM,
            SimError::RtParam(_) => sys::ACL_ERROR_RT_PARAM_INVALID,
            SimError::InvalidDevice { .. } => sys::ACL_ERROR_RT_INVALID_DEVICEID,
            SimError::NoContext => sys::ACL_ERROR_RT_CONTEXT_NULL,
            SimError::InvalidHandle { .. } => sys::ACL_ERROR_RT_INVALID_HANDLE,
            SimError::StreamContext { .. } => sys::ACL_ERROR_RT_STREAM_CONTEXT,
            SimError::OutOfMemory { .. } | SimError::HostOutOfMemory { .. } => {
                sys::ACL_ERROR_RT_MEMORY_ALLOCATION
            }
            SimError::HostAlloc(_) => sys::ACL_ERROR_BAD_ALLOC,
            SimError::BadFree(_) => sys::ACL_ERROR_RT_MEMORY_FREE,
            SimError::MemoryGone(_) => sys::ACL_ERROR_RT_DEVICE_MEM_ERROR,
            SimError::Unsupported(_) => sys::ACL_ERROR_RT_FEATURE_NOT_SUPPORT,
            SimError::FileOpen { .. } => sys::ACL_ERROR_RT_FILE_OPEN,
            SimError::InvalidBinary { .. } | SimError::ConfigFile { .. } => {
                sys::ACL_ERROR_INVALID_FILE
            }
            SimError::ConfigParse { .. } => sys::ACL_ERROR_PARSE_FILE,
            SimError::KernelNotFound { .. } => sys::ACL_ERROR_RT_KERNEL_LOOKUP,
            SimError::KernelFault { .. } => sys::ACL_ERROR_RT_AICORE_EXCEPTION,
            SimError::Resources(_) => sys::ACL_ERROR_RT_RESOURCE_ALLOC_FAIL,
            SimError::EventNotComplete(_) => sys::ACL_ERROR_RT_EVENT_NOT_COMPLETE,
            SimError::EventTimestamp(_) => sys::ACL_ERROR_RT_EVENT_TIMESTAMP_INVALID,
            SimError::EventReversal(_) => sys::ACL_ERROR_RT_EVENT_TIMESTAMP_REVERSAL,
            SimError::Timeout(_) => sys::ACL_ERROR_RT_TASK_TIMEOUT,
            SimError::Internal(_) => sys::ACL_ERROR_RT_INTERNAL_ERROR,
        }
    }

    /// The HCCL code of this error, for failures of the HCCL exports.
    pub fn hccl_code(&self) -> HcclResult::Type {
        match self {
            SimError::NullPointer(_) | SimError::InvalidHandle { .. } => HcclResult::HCCL_E_PTR,
            SimError::InvalidParam(_)
            | SimError::RtParam(_)
            | SimError::InvalidDevice { .. }
            | SimError::StreamContext { .. }
            | SimError::MemoryGone(_)
            | SimError::BadFree(_) => HcclResult::HCCL_E_PARA,
            SimError::OutOfMemory { .. }
            | SimError::HostOutOfMemory { .. }
            | SimError::HostAlloc(_) => HcclResult::HCCL_E_MEMORY,
            SimError::Unsupported(_) => HcclResult::HCCL_E_NOT_SUPPORT,
            SimError::Timeout(_) => HcclResult::HCCL_E_TIMEOUT,
            SimError::Uninitialized | SimError::NoContext => HcclResult::HCCL_E_RUNTIME,
            _ => HcclResult::HCCL_E_INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_values() {
        // Values from ascend-facts / the CANN headers, written out independently of sys.rs.
        assert_eq!(SimError::InvalidParam(String::new()).acl_code(), 100000);
        assert_eq!(SimError::Uninitialized.acl_code(), 100001);
        assert_eq!(SimError::RepeatInit.acl_code(), 100002);
        assert_eq!(SimError::RtParam(String::new()).acl_code(), 107000);
        assert_eq!(SimError::NoContext.acl_code(), 107002);
        assert_eq!(SimError::HostAlloc(1).acl_code(), 200000);
        let oom = SimError::OutOfMemory {
            device: 0,
            requested: 1,
            charged: 64,
            free: 0,
            total: 0,
        };
        assert_eq!(oom.acl_code(), 207001);
        let fault = SimError::KernelFault {
            kernel: "k".into(),
            block: 3,
            msg: "m".into(),
        };
        assert_eq!(fault.acl_code(), 507015);
        assert_eq!(fault.to_string(), "kernel k block 3: m");
        assert_eq!(SimError::Timeout(String::new()).hccl_code(), 9);
        assert_eq!(SimError::NullPointer("x").hccl_code(), 2);
    }
}
