//! Kernel binaries, function lookup, and typed launches.
//!
//! A [`Module`] is a loaded kernel binary (`aclrtBinaryLoadFromFile` / `...FromData`); a
//! [`Function`] is one kernel in it, looked up by name. [`LaunchArgs`] packs the parameter list the
//! way `aclrtLaunchKernelWithHostArgs` expects it: each argument at its natural alignment, device
//! buffers as 8-byte global-memory addresses, and a `#[repr(C)]` tiling struct uploaded to device
//! memory (through the stream's pool and pinned staging, stream-ordered) and passed by address.
//!
//! Validated: every buffer and the stream are on the kernel's device; an element offset into a
//! buffer is at most its length; `num_blocks > 0`; names without interior NUL. Ordered: every
//! buffer argument (the whole buffer, whatever the offset), like any other operation on it (see the
//! memory module). Trusted (hence `unsafe fn launch`): that the arguments match the kernel's
//! parameter list and that the kernel stays inside the buffers it is given. Errors name the kernel.
//! A module is unloaded only after the streams it launched on have finished.

use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dsnpu_ffi::{result, sys};

use crate::device::{Device, DeviceCore};
use crate::error::{Result, RuntimeError};
use crate::memory::device_buffer::DeviceBuffer;
use crate::memory::repr::{as_bytes, DeviceRepr};
use crate::memory::tracker::{run_ordered, Tracker};
use crate::sim_counters;
use crate::stream::{Stream, StreamInner, WeakStream};

struct ModuleInner {
    handle: sys::aclrtBinHandle,
    origin: String,
    /// Streams that may still run this module's kernels.
    launched_on: Mutex<Vec<WeakStream>>,
    core: Arc<DeviceCore>,
}

// SAFETY: the binary handle is a process-wide AscendCL object; calls on it bind the device's
// context, and the launch list is mutex-guarded.
unsafe impl Send for ModuleInner {}
// SAFETY: as above.
unsafe impl Sync for ModuleInner {}

impl ModuleInner {
    fn note_launch(&self, stream: &Arc<StreamInner>) {
        let mut list = self.launched_on.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| !w.is_finished());
        if !list.iter().any(|w| w.is(stream)) {
            list.push(WeakStream::new(stream));
        }
    }
}

impl Drop for ModuleInner {
    fn drop(&mut self) {
        // Kernels of this binary may still be queued: wait for every stream that launched them
        // (a stream already gone has synchronized in its drop, or is waited for until it has).
        let list = std::mem::take(
            self.launched_on
                .get_mut()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let all_done = list
            .iter()
            .all(|w| w.with_live(|s| s.synchronize().is_ok()).unwrap_or(true));
        if all_done && self.core.bind().is_ok() {
            // SAFETY: the handle is live and no queued launch uses its functions any more.
            let _ = unsafe { result::kernel::binary_unload(self.handle) };
        }
    }
}

/// A loaded kernel binary.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("origin", &self.inner.origin)
            .finish()
    }
}

impl Module {
    /// Loads the kernel binary at `path` (made absolute, as AscendCL requires).
    pub fn load_file(device: &Device, path: impl AsRef<Path>) -> Result<Module> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let wrap = |e: RuntimeError| RuntimeError::KernelBinary {
            origin: origin.clone(),
            source: Box::new(e),
        };
        let abs = std::path::absolute(path)
            .map_err(|e| wrap(RuntimeError::InvalidArgument(e.to_string())))?;
        let c = path_cstring(&abs).map_err(wrap)?;
        let core = device.core().clone();
        core.bind().map_err(wrap)?;
        let handle = result::kernel::binary_load_from_file(&c).map_err(|e| wrap(e.into()))?;
        Ok(Module::from_handle(core, handle, abs.display().to_string()))
    }

    /// Loads a kernel binary from its bytes.
    pub fn load_bytes(device: &Device, bytes: &[u8]) -> Result<Module> {
        let origin = format!("<{} bytes>", bytes.len());
        let core = device.core().clone();
        let wrap = |e: RuntimeError| RuntimeError::KernelBinary {
            origin: origin.clone(),
            source: Box::new(e),
        };
        core.bind().map_err(wrap)?;
        let handle = result::kernel::binary_load_from_data(bytes).map_err(|e| wrap(e.into()))?;
        Ok(Module::from_handle(core, handle, origin))
    }

    fn from_handle(core: Arc<DeviceCore>, handle: sys::aclrtBinHandle, origin: String) -> Module {
        Module {
            inner: Arc::new(ModuleInner {
                handle,
                origin,
                launched_on: Mutex::default(),
                core,
            }),
        }
    }

    /// Where the binary came from (absolute path, or its byte count).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The kernel called `name`.
    pub fn function(&self, name: &str) -> Result<Function> {
        let lookup = || -> Result<sys::aclrtFuncHandle> {
            let c = CString::new(name).map_err(|_| {
                RuntimeError::InvalidArgument("kernel name contains a NUL byte".into())
            })?;
            self.inner.core.bind()?;
            // SAFETY: the binary handle is live while `self.inner` exists.
            Ok(unsafe { result::kernel::binary_get_function(self.inner.handle, &c)? })
        };
        let handle = lookup().map_err(|e| e.in_kernel(name))?;
        Ok(Function {
            handle,
            name: name.into(),
            module: self.inner.clone(),
        })
    }
}

fn path_cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::InvalidArgument("path contains a NUL byte".into()))
}

/// One kernel of a loaded [`Module`] (keeps the module loaded).
#[derive(Clone)]
pub struct Function {
    handle: sys::aclrtFuncHandle,
    name: Arc<str>,
    module: Arc<ModuleInner>,
}

// SAFETY: the function handle belongs to a binary kept loaded by `module`; AscendCL launches may be
// issued from any thread with the device's context bound, which `launch` does.
unsafe impl Send for Function {}
// SAFETY: as above; `&Function` only reads the handle.
unsafe impl Sync for Function {}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .finish()
    }
}

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts an argument list for a launch on `stream`.
    pub fn builder<'a>(&'a self, stream: &'a Stream) -> LaunchArgs<'a> {
        LaunchArgs {
            func: self,
            stream,
            packed: Vec::new(),
            args: 0,
            trackers: Vec::new(),
            uploads: Vec::new(),
            error: None,
        }
    }
}

/// Appends `bytes` at the next multiple of `align`, zero-filling the gap (C struct layout).
fn pack(packed: &mut Vec<u8>, bytes: &[u8], align: usize) {
    let start = packed.len().next_multiple_of(align.max(1));
    packed.resize(start, 0);
    packed.extend_from_slice(bytes);
}

/// The device address of element `offset` of `buf`; `offset <= buf.len()`, so the byte offset is at
/// most the buffer's size (which fits a `usize`) and the address stays within or one past it.
fn element_address<T: DeviceRepr>(buf: &DeviceBuffer<T>, offset: usize) -> *mut std::ffi::c_void {
    debug_assert!(offset <= buf.len());
    // A device address: never dereferenced on the host, so plain address arithmetic.
    buf.device_ptr()
        .cast::<u8>()
        .wrapping_add(offset * std::mem::size_of::<T>())
        .cast()
}

/// The argument list of one launch, in the kernel's parameter order.
pub struct LaunchArgs<'a> {
    func: &'a Function,
    stream: &'a Stream,
    packed: Vec<u8>,
    /// Arguments pushed so far (names the argument in an error).
    args: usize,
    trackers: Vec<&'a Tracker>,
    /// Tiling copies in device memory, kept until the arguments are dropped (so launching the same
    /// arguments again stays valid), then returned to the pool in stream order.
    uploads: Vec<DeviceBuffer<u8>>,
    /// The first argument error, reported by `launch`.
    error: Option<RuntimeError>,
}

impl<'a> LaunchArgs<'a> {
    fn push_bytes(&mut self, bytes: &[u8], align: usize) {
        pack(&mut self.packed, bytes, align);
        self.args += 1;
    }

    fn push_address(&mut self, addr: *mut std::ffi::c_void) {
        self.push_bytes(&(addr as u64).to_ne_bytes(), 8);
    }

    fn check_device(&mut self, core: &DeviceCore) -> bool {
        if self.error.is_some() {
            return false;
        }
        match self.func.module.core.expect_same("kernel argument", core) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// A buffer the kernel only reads, passed as its device address.
    pub fn arg<T: DeviceRepr>(&mut self, buf: &'a DeviceBuffer<T>) -> &mut Self {
        if self.check_device(buf.core()) {
            self.push_address(buf.device_ptr());
            self.trackers.push(&buf.track);
        }
        self
    }

    /// A buffer the kernel writes, passed as its device address.
    pub fn arg_mut<T: DeviceRepr>(&mut self, buf: &'a mut DeviceBuffer<T>) -> &mut Self {
        if self.check_device(buf.core()) {
            self.push_address(buf.device_ptr());
            self.trackers.push(&buf.track);
        }
        self
    }

    /// A buffer the kernel only reads, passed as the device address of its element `offset`
    /// (`offset <= len`; `len` is one past the end, for a kernel that reads nothing there). The whole
    /// buffer is ordered, as with [`LaunchArgs::arg`]. An offset past the end is reported by `launch`
    /// as [`RuntimeError::InvalidArgument`].
    pub fn arg_at<T: DeviceRepr>(&mut self, buf: &'a DeviceBuffer<T>, offset: usize) -> &mut Self {
        if self.check_device(buf.core()) && self.check_offset(buf, offset) {
            self.push_address(element_address(buf, offset));
            self.trackers.push(&buf.track);
        }
        self
    }

    /// A buffer the kernel writes, passed as the device address of its element `offset`, bounds
    /// checked as in [`LaunchArgs::arg_at`].
    pub fn arg_mut_at<T: DeviceRepr>(
        &mut self,
        buf: &'a mut DeviceBuffer<T>,
        offset: usize,
    ) -> &mut Self {
        if self.check_device(buf.core()) && self.check_offset(buf, offset) {
            self.push_address(element_address(buf, offset));
            self.trackers.push(&buf.track);
        }
        self
    }

    /// Records an error unless `offset <= buf.len()`.
    fn check_offset<T: DeviceRepr>(&mut self, buf: &DeviceBuffer<T>, offset: usize) -> bool {
        if offset <= buf.len() {
            return true;
        }
        self.error = Some(RuntimeError::InvalidArgument(format!(
            "argument {}: element offset {offset} is past the end of a buffer of {} elements",
            self.args,
            buf.len()
        )));
        false
    }

    /// A null address (an unused optional input or workspace).
    pub fn null(&mut self) -> &mut Self {
        self.push_address(std::ptr::null_mut());
        self
    }

    /// A value passed by value, at its natural alignment.
    pub fn scalar<S: DeviceRepr>(&mut self, value: S) -> &mut Self {
        self.push_bytes(
            as_bytes(std::slice::from_ref(&value)),
            std::mem::align_of::<S>(),
        );
        self
    }

    /// A tiling struct: copied to device memory on the launch's stream, passed as its address.
    pub fn tiling<S: DeviceRepr>(&mut self, tiling: &S) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let bytes = as_bytes(std::slice::from_ref(tiling));
        match self.upload(bytes) {
            Ok(buf) => {
                self.push_address(buf.device_ptr());
                self.uploads.push(buf);
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    fn upload(&self, bytes: &[u8]) -> Result<DeviceBuffer<u8>> {
        let stream = self.stream.inner();
        self.func
            .module
            .core
            .expect_same("kernel stream", stream.core())?;
        let buf = stream.pool().alloc::<u8>(self.stream, bytes.len().max(1))?;
        // SAFETY: `buf` is fresh pool memory ordered on this stream (its tracker says so) and stays
        // alive until after the launch, which is queued after the copy on the same stream.
        unsafe {
            stream
                .staging
                .upload(stream, buf.device_ptr(), buf.num_bytes(), bytes)?
        };
        Ok(buf)
    }

    /// The packed parameter bytes so far.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Queues the kernel on the stream with `num_blocks` blocks.
    ///
    /// # Safety
    /// The caller guarantees what this crate cannot check:
    /// - the arguments pushed match the kernel's parameter list in order, size and meaning (each
    ///   buffer holds the element type the kernel reads or writes there; a tiling struct has the
    ///   layout the kernel copies out of its `tiling` address);
    /// - the kernel, with `num_blocks` blocks and these arguments, accesses each buffer only within
    ///   its [`DeviceBuffer::num_bytes`] (from the element offset on, for a buffer passed with
    ///   [`LaunchArgs::arg_at`] / [`LaunchArgs::arg_mut_at`]), and writes only buffers passed with
    ///   [`LaunchArgs::arg_mut`] or [`LaunchArgs::arg_mut_at`];
    /// - any device address reached other than through these arguments is valid and ordered by the
    ///   caller.
    ///
    /// Under those conditions the launch is ordered after every earlier operation on its buffers,
    /// and later operations on them wait for it. On a launch-blocking stream
    /// ([`Stream::set_launch_blocking`]) it also waits for the kernel and, on the simulator, fails
    /// with [`RuntimeError::LaunchFlagged`] when its own report shows a failure or sanitizer warnings.
    pub unsafe fn launch(&mut self, num_blocks: u32) -> Result<()> {
        let name = self.func.name.clone();
        self.launch_inner(num_blocks)
            .map_err(|e| e.in_kernel(&name))
    }

    fn launch_inner(&mut self, num_blocks: u32) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if num_blocks == 0 {
            return Err(RuntimeError::InvalidArgument(
                "num_blocks must be at least 1".into(),
            ));
        }
        let stream = self.stream.inner();
        let module = &self.func.module;
        module.core.expect_same("kernel stream", stream.core())?;
        module.core.bind()?;
        let mut trackers = self.trackers.clone();
        trackers.extend(self.uploads.iter().map(|b| &b.track));
        let blocking = self.stream.launch_blocking();
        // Kept until a launch-blocking launch's own report is read below: another thread's launch on
        // this stream would otherwise be the last completed one.
        let _turn = stream.launch_turn();
        run_ordered(stream, &trackers, || {
            // SAFETY: the function handle is live (its module is held); the argument bytes and the
            // validity of the addresses in them are the caller's `launch` contract; every buffer is
            // ordered on this stream by `run_ordered`.
            unsafe {
                result::kernel::launch_with_host_args(
                    self.func.handle,
                    num_blocks,
                    stream.handle(),
                    &self.packed,
                )?
            };
            Ok(())
        })?;
        module.note_launch(stream);
        if blocking {
            self.stream.synchronize()?;
            sim_counters::check_own_launch(self.stream, &self.func.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::pack;

    #[test]
    fn arguments_are_packed_like_a_c_struct() {
        // struct { u8 a; u32 b; u64 c; u16 d; } → a at 0, b at 4, c at 8, d at 16.
        let mut p = Vec::new();
        pack(&mut p, &[0xAA], 1);
        pack(&mut p, &7u32.to_le_bytes(), 4);
        pack(&mut p, &9u64.to_le_bytes(), 8);
        pack(&mut p, &5u16.to_le_bytes(), 2);
        assert_eq!(p, [0xAA, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5, 0]);
    }
}
