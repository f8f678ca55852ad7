//! The crate's one error type.

use dsnpu_ffi::FfiError;

use crate::sim_counters::LaunchFlag;

/// Every way a runtime operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The library could not be loaded, lacks a symbol, or an AscendCL call failed.
    #[error(transparent)]
    Ffi(#[from] FfiError),
    /// `finalize` ran; AscendCL allows one initialization per process.
    #[error("AscendCL was finalized in this process and cannot be initialized again")]
    Finalized,
    #[error("device {ordinal} does not exist ({count} device(s) present)")]
    InvalidDevice { ordinal: i32, count: u32 },
    /// Device memory exhausted even after the caching allocator released every cached block.
    #[error(
        "out of memory on device {device}: requested {requested} bytes; {free} bytes free after \
         releasing {cached} cached bytes; {allocated} bytes in use by the pool"
    )]
    OutOfMemory {
        device: i32,
        requested: usize,
        free: usize,
        cached: usize,
        allocated: usize,
    },
    #[error("{op}: length mismatch: expected {expected} elements, got {actual}")]
    SizeMismatch {
        op: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A copy into elements `offset .. offset + len` of a buffer of `buffer_len` elements: past its end.
    #[error(
        "{op}: elements [{offset}, {offset} + {len}) are past the end of a buffer of {buffer_len}"
    )]
    OutOfRange {
        op: &'static str,
        offset: usize,
        len: usize,
        buffer_len: usize,
    },
    #[error("{len} elements of {elem_size} bytes overflow the address space")]
    SizeOverflow { len: usize, elem_size: usize },
    #[error("{op}: an object of device {actual} was used on device {expected}")]
    DeviceMismatch {
        op: &'static str,
        expected: i32,
        actual: i32,
    },
    #[error("elapsed time needs two events created with EventFlags::TIME_LINE")]
    EventNotTimed,
    /// A query succeeded with a value that cannot be right (no cores, a negative count).
    #[error("{call} reported {value} {what} for device {device}")]
    ImplausibleReport {
        call: &'static str,
        what: &'static str,
        value: i64,
        device: u32,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Loading a kernel binary failed; `origin` names the file (or the byte count).
    #[error("kernel binary {origin}: {source}")]
    KernelBinary {
        origin: String,
        #[source]
        source: Box<RuntimeError>,
    },
    /// A launch on a launch-blocking stream whose own report from the simulator is not clean.
    #[error("the simulator flagged the launch: {0}")]
    LaunchFlagged(#[source] LaunchFlag),
    /// Looking up or launching a kernel failed.
    #[error("kernel `{kernel}`: {source}")]
    Kernel {
        kernel: String,
        #[source]
        source: Box<RuntimeError>,
    },
}

impl RuntimeError {
    /// The AscendCL error code at the root of this error, if any.
    pub fn acl_code(&self) -> Option<i32> {
        match self {
            RuntimeError::Ffi(e) => e.acl_code(),
            RuntimeError::Kernel { source, .. } | RuntimeError::KernelBinary { source, .. } => {
                source.acl_code()
            }
            RuntimeError::LaunchFlagged(LaunchFlag::Status(code)) => Some(*code),
            _ => None,
        }
    }

    /// Whether device memory ran out: the pool's [`RuntimeError::OutOfMemory`], or `aclrtMalloc`'s own
    /// out-of-memory code from an allocation that bypasses the pool ([`crate::Stream::alloc_uncached`]),
    /// also when the error is wrapped as a kernel's. One test for callers that report both alike.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            RuntimeError::OutOfMemory { .. } => true,
            RuntimeError::Ffi(dsnpu_ffi::FfiError::Acl(e)) => {
                e.function == "aclrtMalloc" && crate::memory::pool::is_oom_code(e.code)
            }
            RuntimeError::Kernel { source, .. } | RuntimeError::KernelBinary { source, .. } => {
                source.is_out_of_memory()
            }
            _ => false,
        }
    }

    pub(crate) fn in_kernel(self, kernel: &str) -> RuntimeError {
        RuntimeError::Kernel {
            kernel: kernel.to_string(),
            source: Box::new(self),
        }
    }
}

impl From<dsnpu_ffi::LoadError> for RuntimeError {
    fn from(e: dsnpu_ffi::LoadError) -> Self {
        RuntimeError::Ffi(e.into())
    }
}

/// This crate's result type.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use dsnpu_ffi::AclError;

    #[test]
    fn acl_code_is_found_through_kernel_context() {
        let inner = RuntimeError::Ffi(AclError::new("aclrtSynchronizeStream", 507015, None).into());
        let e = inner.in_kernel("vec_add");
        assert_eq!(e.acl_code(), Some(507015));
        assert_eq!(
            e.to_string(),
            "kernel `vec_add`: aclrtSynchronizeStream failed: ACL_ERROR_RT_AICORE_EXCEPTION (507015)"
        );
        assert_eq!(RuntimeError::EventNotTimed.acl_code(), None);
    }

    #[test]
    fn out_of_memory_is_recognized_from_the_pool_and_from_acl_rt_malloc() {
        let pool = RuntimeError::OutOfMemory {
            device: 0,
            requested: 1,
            free: 0,
            cached: 0,
            allocated: 0,
        };
        assert!(pool.is_out_of_memory());
        let acl = |function, code| RuntimeError::Ffi(AclError::new(function, code, None).into());
        for code in [207001, 200000, 207018] {
            assert!(acl("aclrtMalloc", code).is_out_of_memory(), "{code}");
        }
        assert!(acl("aclrtMalloc", 207001).in_kernel("k").is_out_of_memory());
        // Pinned host memory and other codes are not device memory running out.
        assert!(!acl("aclrtMallocHost", 207001).is_out_of_memory());
        assert!(!acl("aclrtMalloc", 507015).is_out_of_memory());
        assert!(!RuntimeError::EventNotTimed.is_out_of_memory());
    }

    #[test]
    fn out_of_memory_says_requested_free_and_cached() {
        let e = RuntimeError::OutOfMemory {
            device: 0,
            requested: 100,
            free: 10,
            cached: 20,
            allocated: 30,
        };
        assert_eq!(
            e.to_string(),
            "out of memory on device 0: requested 100 bytes; 10 bytes free after releasing 20 cached \
             bytes; 30 bytes in use by the pool"
        );
    }
}
