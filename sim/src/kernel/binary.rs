//! Host kernel binaries: shared objects loaded with `dlopen`, kernels resolved with `dlsym`.
//!
//! A binary is accepted when it exports `dsnpu_sim_kernel_abi_version` returning
//! `DSNPU_SIM_KERNEL_ABI`. Binaries given as bytes are written to a temporary file, loaded, and the
//! file is deleted at once. Loading runs the object's initializers and calling a kernel runs its
//! code: kernel binaries are trusted, as device code is on the real NPU.
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
use libloading::Library;

use super::abi::{AbiVersionFn, KernelFn, ABI_VERSION_SYMBOL, DSNPU_SIM_KERNEL_ABI};
use crate::error::SimError;

pub(crate) struct Binary {
    pub id: u64,
    /// The path, or a description of the bytes it came from (for messages).
    pub origin: String,
    lib: Library,
}

/// A kernel looked up in a binary; keeps the binary loaded while it (or a launch of it) lives.
pub(crate) struct Function {
    pub id: u64,
    pub binary: Arc<Binary>,
    pub name: String,
    pub entry: KernelFn,
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
        let meta = fs::metadata(p).map_err(|e| SimError::FileOpen {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(SimError::FileOpen {
                path: path.to_string(),
                reason: "not a regular file".into(),
            });
        }
        Self::open(id, p, path.to_string())
    }

    /// `aclrtBinaryLoadFromData`.
    pub(crate) fn load_data(id: u64, data: &[u8]) -> Result<Binary, SimError> {
        if data.is_empty() {
            return Err(SimError::InvalidParam("length must not be 0".into()));
        }
        let path =
            std::env::temp_dir().join(format!("dsnpu-sim-kernel-{}-{id:x}.so", std::process::id()));
        let shown = path.display().to_string();
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&path);
            return Err(SimError::FileWrite {
                path: shown,
                reason: e.to_string(),
            });
        }
        let loaded = Self::open(
            id,
            &path,
            format!("<{} bytes of kernel binary data>", data.len()),
        );
        // The mapping survives the unlink; the file is not needed any more, loaded or not.
        let _ = fs::remove_file(&path);
        loaded
    }

    fn open(id: u64, path: &Path, origin: String) -> Result<Binary, SimError> {
        let invalid = |reason: String| SimError::InvalidBinary {
            path: origin.clone(),
            reason,
        };
        // SAFETY: loading runs the shared object's initializers; host kernel binaries are trusted
        // code by the simulator's contract (module docs).
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
        Ok(Binary {
            id,
            origin,
            lib: Library::from(lib),
        })
    }

    /// `aclrtBinaryGetFunction`: the exported kernel `name`.
    pub(crate) fn kernel(&self, name: &str) -> Result<KernelFn, SimError> {
        if name.is_empty() {
            return Err(SimError::InvalidParam(
                "kernelName must not be empty".into(),
            ));
        }
        if name.as_bytes() == &ABI_VERSION_SYMBOL[..ABI_VERSION_SYMBOL.len() - 1] {
            return Err(SimError::InvalidParam(format!(
                "{name} is the ABI version function, not a kernel"
            )));
        }
        let not_found = || SimError::KernelNotFound {
            name: name.to_string(),
            binary: self.origin.clone(),
        };
        let symbol = CString::new(name).map_err(|_| not_found())?;
        // SAFETY: by the ABI every kernel symbol has the type dsnpu_sim_kernel_fn; the pointer is
        // only called while the library is loaded (a Function holds an Arc of this Binary).
        let f = unsafe { self.lib.get::<KernelFn>(symbol.as_bytes_with_nul()) }
            .map_err(|_| not_found())?;
        Ok(*f)
    }
}
