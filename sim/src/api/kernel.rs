//! Kernel binaries, argument handles and launches.
//!
//! Launches copy their arguments at call time and queue the launch on the stream; the fault of a
//! block is reported by the stream's next synchronization (see `crate::stream`). `numBlocks` must
//! be 1..=65535. Launch configuration attributes are accepted and ignored; the `reserve` argument
//! of `aclrtLaunchKernelWithConfig` must be NULL. Binaries are validated and loaded as described
//! in `crate::kernel::binary`.
use std::ffi::{c_char, c_void};
use std::sync::Arc;

use dsnpu_ffi::sys::{
    aclError, aclrtArgsHandle, aclrtBinHandle, aclrtBinaryLoadOptions, aclrtFuncHandle,
    aclrtLaunchKernelCfg, aclrtParamHandle, aclrtPlaceHolderInfo, aclrtStream,
};

use super::{c_str, host_slice, out, put};
use crate::error::SimError;
use crate::guard::acl_call;
use crate::handles::{next_handle, to_ptr};
use crate::kernel::{Binary, Function, KernelArgs, Launch, LaunchArgs};
use crate::memory::try_copy;
use crate::runtime::{runtime, Runtime};
use crate::stream::TaskKind;

/// The largest `numBlocks` a launch accepts.
pub const MAX_BLOCKS: u32 = 65_535;

fn register_binary(rt: &Runtime, o: std::ptr::NonNull<aclrtBinHandle>, bin: Binary) {
    let id = bin.id;
    rt.binaries.insert(id, Arc::new(bin));
    // SAFETY: checked non-null out-parameter (export contract).
    unsafe { put(o, to_ptr(id)) };
}

#[no_mangle]
pub unsafe extern "C" fn aclrtBinaryLoadFromFile(
    bin_path: *const c_char,
    _options: *mut aclrtBinaryLoadOptions,
    bin_handle: *mut aclrtBinHandle,
) -> aclError {
    acl_call("aclrtBinaryLoadFromFile", || {
        let o = out(bin_handle, "binHandle")?;
        // SAFETY: non-null C strings are NUL-terminated (export contract).
        let path = unsafe { c_str(bin_path, "binPath") }?;
        let rt = runtime()?;
        let bin = Binary::load_file(next_handle(), path)?;
        register_binary(&rt, o, bin);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtBinaryLoadFromData(
    data: *const c_void,
    length: usize,
    _options: *const aclrtBinaryLoadOptions,
    bin_handle: *mut aclrtBinHandle,
) -> aclError {
    acl_call("aclrtBinaryLoadFromData", || {
        let o = out(bin_handle, "binHandle")?;
        if data.is_null() {
            return Err(SimError::NullPointer("data"));
        }
        let rt = runtime()?;
        // SAFETY: `data` holds `length` bytes (export contract); it is only read during the call.
        let bytes = unsafe { host_slice(data.cast::<u8>(), length, "data") }?;
        let bin = Binary::load_data(next_handle(), bytes)?;
        register_binary(&rt, o, bin);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtBinaryUnLoad(bin_handle: aclrtBinHandle) -> aclError {
    // Functions and args handles of the binary become invalid; queued launches keep it loaded.
    acl_call("aclrtBinaryUnLoad", || {
        let rt = runtime()?;
        let bin = rt.binaries.remove(bin_handle)?;
        rt.functions.remove_where(|f| f.binary.id == bin.id);
        rt.args.remove_where(|a| a.func.binary.id == bin.id);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtBinaryGetFunction(
    bin_handle: aclrtBinHandle,
    kernel_name: *const c_char,
    func_handle: *mut aclrtFuncHandle,
) -> aclError {
    acl_call("aclrtBinaryGetFunction", || {
        let o = out(func_handle, "funcHandle")?;
        // SAFETY: non-null C strings are NUL-terminated (export contract).
        let name = unsafe { c_str(kernel_name, "kernelName") }?;
        let rt = runtime()?;
        let binary = rt.binaries.get(bin_handle)?;
        let entry = binary.kernel(name)?;
        let sync_all = binary.declares_sync_all(name);
        let coop = sync_all && binary.declares_coop(name);
        let id = next_handle();
        rt.functions.insert(
            id,
            Arc::new(Function {
                id,
                binary,
                name: name.to_string(),
                entry,
                sync_all,
                coop,
                block_nanos: std::sync::atomic::AtomicU64::new(0),
            }),
        );
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(id)) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsInit(
    func_handle: aclrtFuncHandle,
    args_handle: *mut aclrtArgsHandle,
) -> aclError {
    acl_call("aclrtKernelArgsInit", || {
        let o = out(args_handle, "argsHandle")?;
        let rt = runtime()?;
        let func = rt.functions.get(func_handle)?;
        let id = next_handle();
        rt.args.insert(id, Arc::new(KernelArgs::new(id, func)));
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(id)) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsAppend(
    args_handle: aclrtArgsHandle,
    param: *mut c_void,
    param_size: usize,
    param_handle: *mut aclrtParamHandle,
) -> aclError {
    acl_call("aclrtKernelArgsAppend", || {
        if param_size == 0 {
            return Err(SimError::InvalidParam("paramSize must not be 0".into()));
        }
        let args = runtime()?.args.get(args_handle)?;
        // SAFETY: `param` holds `paramSize` bytes (export contract); they are copied now.
        let bytes = unsafe { host_slice(param.cast::<u8>(), param_size, "param") }?;
        let handle = args.append(bytes)?;
        if let Some(o) = std::ptr::NonNull::new(param_handle) {
            // SAFETY: non-null out-parameter (export contract); the handle output is optional here.
            unsafe { put(o, to_ptr(handle)) };
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsAppendPlaceHolder(
    args_handle: aclrtArgsHandle,
    param_handle: *mut aclrtParamHandle,
) -> aclError {
    acl_call("aclrtKernelArgsAppendPlaceHolder", || {
        let o = out(param_handle, "paramHandle")?;
        let handle = runtime()?.args.get(args_handle)?.append_placeholder()?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(handle)) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsFinalize(args_handle: aclrtArgsHandle) -> aclError {
    acl_call("aclrtKernelArgsFinalize", || {
        runtime()?.args.get(args_handle)?.finalize();
        Ok(())
    })
}

fn check_launch(num_blocks: u32, cfg: *mut aclrtLaunchKernelCfg) -> Result<(), SimError> {
    if num_blocks == 0 || num_blocks > MAX_BLOCKS {
        return Err(SimError::InvalidParam(format!(
            "numBlocks {num_blocks} is not in 1..={MAX_BLOCKS}"
        )));
    }
    if !cfg.is_null() {
        // SAFETY: a non-null cfg points to an aclrtLaunchKernelCfg (export contract).
        let c = unsafe { cfg.read_unaligned() };
        if c.numAttrs > 0 && c.attrs.is_null() {
            return Err(SimError::NullPointer("cfg->attrs"));
        }
    }
    Ok(())
}

fn enqueue_launch(
    rt: &Runtime,
    func: Arc<Function>,
    num_blocks: u32,
    stream: aclrtStream,
    args: LaunchArgs,
) -> Result<(), SimError> {
    let s = rt.resolve_stream(stream)?;
    s.enqueue(TaskKind::Launch(Box::new(Launch {
        func,
        num_blocks,
        args,
    })))?;
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn aclrtLaunchKernelWithConfig(
    func_handle: aclrtFuncHandle,
    num_blocks: u32,
    stream: aclrtStream,
    cfg: *mut aclrtLaunchKernelCfg,
    args_handle: aclrtArgsHandle,
    reserve: *mut c_void,
) -> aclError {
    acl_call("aclrtLaunchKernelWithConfig", || {
        // The docs: "reserve: reserved, currently always NULL" (hicann/runtime
        // docs/api_docs/aclrtLaunchKernelWithConfig.md);
        // CANN's implementation rejects anything else with ACL_ERROR_INVALID_PARAM
        // (src/acl/aclrt_impl/kernel.cpp, aclrtLaunchKernelWithConfigImpl).
        if !reserve.is_null() {
            return Err(SimError::InvalidParam(
                "reserve is a reserved parameter and must be NULL".into(),
            ));
        }
        check_launch(num_blocks, cfg)?;
        let rt = runtime()?;
        let func = rt.functions.get(func_handle)?;
        let args = rt.args.get(args_handle)?;
        if args.func.id != func.id {
            return Err(SimError::InvalidParam(format!(
                "argsHandle {:#x} was initialized for kernel {}, not {}",
                args.id, args.func.name, func.name
            )));
        }
        let snapshot = args.snapshot()?;
        enqueue_launch(&rt, func, num_blocks, stream, snapshot)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtLaunchKernelWithHostArgs(
    func_handle: aclrtFuncHandle,
    num_blocks: u32,
    stream: aclrtStream,
    cfg: *mut aclrtLaunchKernelCfg,
    host_args: *mut c_void,
    args_size: usize,
    place_holder_array: *mut aclrtPlaceHolderInfo,
    place_holder_num: usize,
) -> aclError {
    acl_call("aclrtLaunchKernelWithHostArgs", || {
        check_launch(num_blocks, cfg)?;
        // SAFETY: `hostArgs` holds `argsSize` bytes (export contract); copied at launch time.
        let bytes =
            try_copy(unsafe { host_slice(host_args.cast::<u8>(), args_size, "hostArgs") }?)?;
        // SAFETY: the array holds `placeHolderNum` entries (export contract).
        let placeholders: Vec<(u32, u32)> = unsafe {
            host_slice(
                place_holder_array.cast_const(),
                place_holder_num,
                "placeHolderArray",
            )
        }?
        .iter()
        .map(|p| (p.addrOffset, p.dataOffset))
        .collect();
        let rt = runtime()?;
        let func = rt.functions.get(func_handle)?;
        let args = LaunchArgs::from_host(bytes, &placeholders)?;
        enqueue_launch(&rt, func, num_blocks, stream, args)
    })
}
