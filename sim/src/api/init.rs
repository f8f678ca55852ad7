//! Process lifecycle and identity: `aclInit`, `aclFinalize`, `aclGetRecentErrMsg`,
//! `aclrtGetVersion`, `aclrtGetSocName`. The `aclInit` configuration file is checked like CANN
//! checks it (`crate::config::check_init_file`).
use std::ffi::c_char;

use dsnpu_ffi::sys::aclError;

use super::{out, put};
use crate::guard::{acl_call, ptr_call, take_last_error};
use crate::runtime;

/// `aclrtGetSocName`: says it is the simulator.
pub const SOC_NAME: &str = "dsnpu-sim (Ascend910B2 model)";
const SOC_NAME_C: &[u8] = b"dsnpu-sim (Ascend910B2 model)\0";

/// `aclrtGetVersion`: the simulator crate's version (major, minor, patch), not a CANN version.
pub fn sim_version() -> (i32, i32, i32) {
    let part = |s: &str| s.parse().unwrap_or(0);
    (
        part(env!("CARGO_PKG_VERSION_MAJOR")),
        part(env!("CARGO_PKG_VERSION_MINOR")),
        part(env!("CARGO_PKG_VERSION_PATCH")),
    )
}

#[no_mangle]
pub unsafe extern "C" fn aclInit(config_path: *const c_char) -> aclError {
    acl_call("aclInit", || {
        let path = if config_path.is_null() {
            None
        } else {
            // SAFETY: non-null C strings are NUL-terminated (export contract).
            Some(unsafe { super::c_str(config_path, "configPath") }?)
        };
        runtime::init(path)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclFinalize() -> aclError {
    acl_call("aclFinalize", runtime::finalize)
}

#[no_mangle]
pub unsafe extern "C" fn aclGetRecentErrMsg() -> *const c_char {
    ptr_call(take_last_error)
}

#[no_mangle]
pub unsafe extern "C" fn aclrtGetSocName() -> *const c_char {
    SOC_NAME_C.as_ptr().cast()
}

#[no_mangle]
pub unsafe extern "C" fn aclrtGetVersion(
    major: *mut i32,
    minor: *mut i32,
    patch: *mut i32,
) -> aclError {
    acl_call("aclrtGetVersion", || {
        let (a, b, c) = (
            out(major, "majorVersion")?,
            out(minor, "minorVersion")?,
            out(patch, "patchVersion")?,
        );
        let (x, y, z) = sim_version();
        // SAFETY: checked non-null out-parameters (export contract).
        unsafe {
            put(a, x);
            put(b, y);
            put(c, z);
        }
        Ok(())
    })
}
