//! Host kernel binaries: shared objects loaded with `dlopen`, kernels resolved with `dlsym`.
//!
//! Every image is validated before `dlopen` sees it ([`super::elf`]): a truncated or malformed
//! file is an error code, not a SIGBUS inside the loader. The validated bytes are copied into an
//! anonymous memory file (`memfd_create`) and loaded from `/proc/self/fd/<n>`, so no temporary
//! file exists that could be left behind, and a file given by path cannot change between
//! validation and loading. The memory file stays open while the binary is loaded (its descriptor
//! number, part of the name the loader knows it by, is not reused meanwhile).
//!
//! A binary is accepted when it defines `dsnpu_sim_kernel_abi_version` itself, returning
//! `DSNPU_SIM_KERNEL_ABI`. `aclrtBinaryGetFunction` resolves only functions the binary itself
//! defines and exports (its dynamic symbol table), never a symbol of its dependencies (`abort`,
//! `memcpy`): those do not carry the kernel ABI. Loading runs the object's initializers and calling
//! a kernel runs its code: structurally valid binaries are trusted, as device code is on the NPU.
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
use libloading::Library;

use super::abi::{
    AbiVersionFn, KernelFn, LaunchBeginFn, LaunchEndFn, ABI_VERSION_SYMBOL, COOP_SUFFIX,
    DSNPU_SIM_KERNEL_ABI, LAUNCH_BEGIN_SYMBOL, LAUNCH_END_SYMBOL, SYNC_ALL_SUFFIX,
};
use super::elf;
use crate::error::SimError;

/// The largest binary accepted (the real loader has limits too; this one keeps a bad length from
/// becoming a huge copy).
pub const MAX_BINARY_BYTES: usize = 1 << 30;

pub(crate) struct Binary {
    pub id: u64,
    /// The path, or a description of the bytes it came from (for messages).
    pub origin: String,
    /// Functions the binary defines itself.
    functions: BTreeSet<String>,
    /// ABI 5: the launch hooks, if the binary exports both.
    pub launch_hooks: Option<LaunchHooks>,
    // Field order is drop order: the library is closed before its memory file.
    lib: Library,
    _memfd: File,
}

/// A binary's optional launch hooks (ABI 5, `dsnpu_sim_kernel.h`): `begin` before a launch's blocks, its
/// result handed to every block, `end` once after them with the launch's summed counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaunchHooks {
    pub begin: LaunchBeginFn,
    pub end: LaunchEndFn,
}

/// A kernel looked up in a binary; keeps the binary loaded while it (or a launch of it) lives.
/// `sync_all`: the binary declares that the kernel's blocks meet in `sync_all`, so they must run
/// concurrently (ABI 4); the blocks of other kernels are independent.
pub(crate) struct Function {
    pub id: u64,
    pub binary: Arc<Binary>,
    pub name: String,
    pub entry: KernelFn,
    pub sync_all: bool,
    /// The binary declares that the blocks of this `sync_all` kernel may run cooperatively on one
    /// thread, each on its own stack, switching only in `sync_all` ([`super::coop`]).
    pub coop: bool,
    /// `sync_all` kernels: the mean wall time per block of the last launch, in nanoseconds (0 before
    /// the first), which picks how the next runs its blocks ([`super::launch`]).
    pub block_nanos: AtomicU64,
}

fn abi_symbol_name() -> &'static str {
    // The constant is ASCII with one trailing NUL.
    std::str::from_utf8(&ABI_VERSION_SYMBOL[..ABI_VERSION_SYMBOL.len() - 1]).unwrap_or("")
}

impl Binary {
    /// `aclrtBinaryLoadFromFile`.
    pub(crate) fn load_file(id: u64, path: &str) -> Result<Binary, SimError> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(SimError::InvalidParam(format!(
                "binPath {path:?} must be an absolute path"
            )));
        }
        let open_err = |reason: String| SimError::FileOpen {
            path: path.to_string(),
            reason,
        };
        // Checked before opening, so a FIFO or a device never blocks or streams forever.
        let meta = fs::metadata(p).map_err(|e| open_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(open_err("not a regular file".into()));
        }
        if meta.len() > MAX_BINARY_BYTES as u64 {
            return Err(SimError::InvalidBinary {
                path: path.to_string(),
                reason: format!(
                    "{} bytes exceed the {MAX_BINARY_BYTES}-byte limit",
                    meta.len()
                ),
            });
        }
        let bytes = fs::read(p).map_err(|e| open_err(e.to_string()))?;
        Self::load(id, &bytes, path.to_string())
    }

    /// `aclrtBinaryLoadFromData`.
    pub(crate) fn load_data(id: u64, data: &[u8]) -> Result<Binary, SimError> {
        if data.is_empty() {
            return Err(SimError::InvalidParam("length must not be 0".into()));
        }
        if data.len() > MAX_BINARY_BYTES {
            return Err(SimError::InvalidParam(format!(
                "length {} exceeds the {MAX_BINARY_BYTES}-byte limit",
                data.len()
            )));
        }
        Self::load(
            id,
            data,
            format!("<{} bytes of kernel binary data>", data.len()),
        )
    }

    /// Validates `image`, copies it into a memory file and loads it from there.
    fn load(id: u64, image: &[u8], origin: String) -> Result<Binary, SimError> {
        let info = elf::validate(image).map_err(|reason| SimError::InvalidBinary {
            path: origin.clone(),
            reason,
        })?;
        if !info.functions.contains(abi_symbol_name()) {
            return Err(SimError::InvalidBinary {
                path: origin,
                reason: format!("it does not define {} itself", abi_symbol_name()),
            });
        }
        let memfd = memory_file(image).map_err(|e| {
            SimError::Resources(format!(
                "cannot create the in-memory file to load kernel binary {origin} from: {e}"
            ))
        })?;
        let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
        Self::open(id, Path::new(&path), origin, info.functions, memfd)
    }

    fn open(
        id: u64,
        path: &Path,
        origin: String,
        functions: BTreeSet<String>,
        memfd: File,
    ) -> Result<Binary, SimError> {
        let invalid = |reason: String| SimError::InvalidBinary {
            path: origin.clone(),
            reason,
        };
        // SAFETY: the image passed structural validation (no segment past its end); loading runs
        // the shared object's initializers, and host kernel binaries are trusted code by the
        // simulator's contract (module docs).
        let lib = unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| invalid(e.to_string()))?;
        // SAFETY: the ABI declares this symbol as `uint32_t dsnpu_sim_kernel_abi_version(void)`.
        let version_fn = unsafe { lib.get::<AbiVersionFn>(ABI_VERSION_SYMBOL) }
            .map_err(|_| invalid("it does not export dsnpu_sim_kernel_abi_version".into()))?;
        // SAFETY: a function without arguments of the declared type, from the loaded library.
        let version = unsafe { version_fn() };
        if version != DSNPU_SIM_KERNEL_ABI {
            return Err(invalid(format!(
                "it implements kernel ABI version {version}, the simulator implements {DSNPU_SIM_KERNEL_ABI}"
            )));
        }
        // SAFETY: by the ABI these symbols, if exported, have the declared types; they are only
        // called while the library is loaded (a launch holds its Function's Arc of this Binary).
        let launch_hooks = unsafe {
            match (
                lib.get::<LaunchBeginFn>(LAUNCH_BEGIN_SYMBOL),
                lib.get::<LaunchEndFn>(LAUNCH_END_SYMBOL),
            ) {
                (Ok(begin), Ok(end)) => Some(LaunchHooks {
                    begin: *begin,
                    end: *end,
                }),
                _ => None,
            }
        };
        Ok(Binary {
            id,
            origin,
            functions,
            launch_hooks,
            lib: Library::from(lib),
            _memfd: memfd,
        })
    }

    /// `aclrtBinaryGetFunction`: the kernel `name`, a function the binary itself defines.
    pub(crate) fn kernel(&self, name: &str) -> Result<KernelFn, SimError> {
        if name.is_empty() {
            return Err(SimError::InvalidParam(
                "kernelName must not be empty".into(),
            ));
        }
        for abi in [ABI_VERSION_SYMBOL, LAUNCH_BEGIN_SYMBOL, LAUNCH_END_SYMBOL] {
            if name.as_bytes() == &abi[..abi.len() - 1] {
                return Err(SimError::InvalidParam(format!(
                    "{name} is a function of the kernel ABI, not a kernel"
                )));
            }
        }
        let not_found = || SimError::KernelNotFound {
            name: name.to_string(),
            binary: self.origin.clone(),
        };
        // Only functions the binary defines: dlsym would also find its dependencies' symbols.
        if !self.functions.contains(name) {
            return Err(not_found());
        }
        let symbol = CString::new(name).map_err(|_| not_found())?;
        // SAFETY: by the ABI every kernel symbol has the type dsnpu_sim_kernel_fn; the pointer is
        // only called while the library is loaded (a Function holds an Arc of this Binary).
        let f = unsafe { self.lib.get::<KernelFn>(symbol.as_bytes_with_nul()) }
            .map_err(|_| not_found())?;
        Ok(*f)
    }
}

impl Binary {
    /// Whether the binary declares that kernel `name`'s blocks meet in `sync_all`: it exports the
    /// object `<name>__dsnpu_sync_all` and that byte is non-zero.
    pub(crate) fn declares_sync_all(&self, name: &str) -> bool {
        self.declares(name, SYNC_ALL_SUFFIX)
    }

    /// Whether the binary declares that kernel `name`'s blocks may share a thread, switching only in
    /// `sync_all`: it exports the object `<name>__dsnpu_coop` and that byte is non-zero.
    pub(crate) fn declares_coop(&self, name: &str) -> bool {
        self.declares(name, COOP_SUFFIX)
    }

    /// Whether the binary exports the `uint8_t` object `<name><suffix>` and it is non-zero.
    fn declares(&self, name: &str, suffix: &str) -> bool {
        let Ok(symbol) = CString::new(format!("{name}{suffix}")) else {
            return false;
        };
        // SAFETY: by the ABI the symbol, if exported, is a `const uint8_t`; it is read once, while
        // the library is loaded (self holds it).
        match unsafe { self.lib.get::<*const u8>(symbol.as_bytes_with_nul()) } {
            // SAFETY: a non-null address of the exported byte, valid while the library is loaded.
            Ok(p) if !p.is_null() => unsafe { **p != 0 },
            _ => false,
        }
    }
}

/// An anonymous, close-on-exec memory file holding `bytes`, positioned at its start.
fn memory_file(bytes: &[u8]) -> std::io::Result<File> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(c"dsnpu-sim-kernel".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    Ok(file)
}
