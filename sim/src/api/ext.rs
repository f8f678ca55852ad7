//! The simulator's own exports (declared in `sim/include/dsnpu_sim_kernel.h`), plus
//! `aclrtKernelArgsGetPlaceHolderBuffer`, a real AscendCL call that the generated bindings do not
//! list yet (same signature as in CANN).
use std::ffi::{c_char, c_void};

use dsnpu_ffi::sys::{aclError, aclrtArgsHandle, aclrtParamHandle, aclrtStream};

use super::{out, put};
use crate::guard::acl_call;
use crate::handles::from_ptr;
use crate::kernel::abi::LaunchCounters;
use crate::runtime::runtime;

/// `dsnpu_sim_version()`: `"dsnpu-sim <crate version>"`.
pub const SIM_VERSION: &str = concat!("dsnpu-sim ", env!("CARGO_PKG_VERSION"));
const SIM_VERSION_C: &str = concat!("dsnpu-sim ", env!("CARGO_PKG_VERSION"), "\0");

#[no_mangle]
pub unsafe extern "C" fn dsnpu_sim_version() -> *const c_char {
    SIM_VERSION_C.as_ptr().cast()
}

#[no_mangle]
pub unsafe extern "C" fn dsnpu_sim_last_launch_counters(
    stream: aclrtStream,
    out_counters: *mut LaunchCounters,
) -> aclError {
    acl_call("dsnpu_sim_last_launch_counters", || {
        let o = out(out_counters, "out")?;
        let (launches, record) = runtime()?.resolve_stream(stream)?.last_launch();
        let mut c = LaunchCounters::default();
        if let Some(r) = record {
            c.launch_seq = launches;
            c.num_blocks = r.num_blocks;
            c.status = r.status;
            c.elapsed_ns = u64::try_from(r.elapsed.as_nanos()).unwrap_or(u64::MAX);
            c.warnings = r.warnings;
            c.totals = r.counters();
            c.set_kernel_name(&r.kernel);
        }
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, c) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsGetPlaceHolderBuffer(
    args_handle: aclrtArgsHandle,
    param_handle: aclrtParamHandle,
    data_size: usize,
    buffer_addr: *mut *mut c_void,
) -> aclError {
    acl_call("aclrtKernelArgsGetPlaceHolderBuffer", || {
        let o = out(buffer_addr, "bufferAddr")?;
        let args = runtime()?.args.get(args_handle)?;
        let p = args.placeholder_buffer(from_ptr(param_handle), data_size)?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, p.cast::<c_void>()) };
        Ok(())
    })
}
