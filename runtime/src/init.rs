//! Process-wide initialization: `aclInit` exactly once, `aclFinalize` only when asked.
//!
//! AscendCL allows one `aclInit` per process. [`init`] runs it on first use (every constructor in
//! this crate calls it) and remembers the outcome; `ACL_ERROR_REPEAT_INITIALIZE` (someone else in the
//! process initialized first) counts as success. [`finalize`] is optional: after it, every
//! constructor fails with [`RuntimeError::Finalized`]. Objects still alive then fail their calls
//! with AscendCL errors; their destructors ignore those.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use dsnpu_ffi::{result, sys, FfiError, LibraryInfo};

use crate::error::{Result, RuntimeError};

static INIT: OnceLock<Result<(), FfiError>> = OnceLock::new();
static FINALIZED: AtomicBool = AtomicBool::new(false);

/// Loads the library and runs `aclInit` once per process.
pub fn init() -> Result<()> {
    if FINALIZED.load(Ordering::Acquire) {
        return Err(RuntimeError::Finalized);
    }
    INIT.get_or_init(|| match result::init(None) {
        Err(e) if e.acl_code() == Some(sys::ACL_ERROR_REPEAT_INITIALIZE) => Ok(()),
        other => other,
    })
    .clone()
    .map_err(RuntimeError::from)
}

/// Runs `aclFinalize` if this process initialized; later [`init`] calls fail. Drop every runtime
/// object first: AscendCL's own teardown order is events/streams, contexts, then devices.
pub fn finalize() -> Result<()> {
    if FINALIZED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    match INIT.get() {
        Some(Ok(())) => Ok(result::finalize()?),
        _ => Ok(()),
    }
}

/// Which AscendCL library the process loaded and from where.
pub fn library() -> Result<&'static LibraryInfo> {
    init()?;
    Ok(dsnpu_ffi::library_info().map_err(FfiError::from)?)
}

/// The runtime's version (major, minor, patch).
pub fn version() -> Result<(i32, i32, i32)> {
    init()?;
    Ok(result::version()?)
}

/// The SoC name the runtime reports (the simulator names itself).
pub fn soc_name() -> Result<Option<String>> {
    init()?;
    Ok(result::soc_name()?)
}
