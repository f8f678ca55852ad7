//! Run-time loading of AscendCL (a CANN install, or the workspace's simulator) and HCCL.
//!
//! Contract:
//! - The library is looked for in the order of [`search::acl_candidates`] on first use and stays
//!   loaded for the life of the process (it is never unloaded, so resolved function pointers never
//!   dangle). A failure to find it is a [`LoadError`] listing every path tried, never a panic.
//! - Each function is resolved on its first use and cached; a symbol the library lacks (an older CANN)
//!   fails only the calls that need it, with [`FfiError::Unsupported`].
//! - Trusted, not checked: that a library exporting an AscendCL name implements it with the signature
//!   of the headers `sys.rs` was generated from. (The simulator's exports are checked against those
//!   signatures by the compiler.)
//! - HCCL symbols come from the simulator itself when the simulator is loaded, else from
//!   `libhccl.so`, loaded on the first HCCL call ([`search::hccl_candidates`]).

pub mod search;

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Attempt, FfiError, LoadError};
use crate::sys;
pub use search::{Candidate, Origin, SearchEnv};

/// Exported by the simulator only: `const char *dsnpu_sim_version(void)`.
pub const SIM_VERSION_SYMBOL: &str = "dsnpu_sim_version";

/// Whether the loaded AscendCL is a CANN install or the host simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKind {
    Real,
    Simulator,
}

/// Which library was loaded, from where, and by which rule of the search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryInfo {
    pub kind: LibraryKind,
    /// The file that was loaded (resolved from the process's mappings when the system loader found it).
    pub path: PathBuf,
    pub origin: Origin,
    /// The simulator's own version string, when it is the simulator.
    pub simulator_version: Option<String>,
}

struct Loaded {
    lib: libloading::Library,
    path: PathBuf,
    origin: Origin,
}

/// Tries each candidate in order; the first that loads wins.
fn load_first(
    library: &'static str,
    candidates: &[Candidate],
    env: Vec<(&'static str, Option<String>)>,
) -> Result<Loaded, LoadError> {
    let mut attempts = Vec::new();
    for c in candidates {
        if c.origin != Origin::SystemLoader && !c.path.exists() {
            attempts.push(Attempt {
                path: c.path.clone(),
                origin: c.origin.to_string(),
                reason: "no such file".into(),
            });
            continue;
        }
        // SAFETY: loading runs the library's initialisers. The candidates are AscendCL/HCCL builds
        // or the workspace simulator, whose initialisers have no preconditions on this process.
        match unsafe { libloading::Library::new(&c.path) } {
            Ok(lib) => {
                return Ok(Loaded {
                    lib,
                    path: c.path.clone(),
                    origin: c.origin,
                })
            }
            Err(e) => attempts.push(Attempt {
                path: c.path.clone(),
                origin: c.origin.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    Err(LoadError {
        library,
        attempts,
        env,
    })
}

/// The simulator's version, if `lib` exports [`SIM_VERSION_SYMBOL`].
fn simulator_version(lib: &libloading::Library) -> Option<String> {
    // SAFETY: the simulator declares `dsnpu_sim_version` as `const char *(void)`; a real CANN does not
    // export that name, so the lookup fails and nothing is called.
    unsafe {
        let f = lib
            .get::<unsafe extern "C" fn() -> *const c_char>(b"dsnpu_sim_version\0")
            .ok()?;
        let p = f();
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// The file that holds `addr`, read from `/proc/self/maps` (for libraries the system loader found
/// by bare name).
fn mapped_file_of(addr: usize) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (lo, hi) = parts.next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        let path = parts.nth(4)?;
        (lo <= addr && addr < hi && path.starts_with('/')).then(|| PathBuf::from(path))
    })
}

fn describe(loaded: &Loaded) -> LibraryInfo {
    let version = simulator_version(&loaded.lib);
    let by_name = loaded
        .path
        .file_name()
        .is_some_and(|n| n == search::SIM_FILE);
    let kind = if version.is_some() || by_name {
        LibraryKind::Simulator
    } else {
        LibraryKind::Real
    };
    let mut path = loaded.path.clone();
    if loaded.origin == Origin::SystemLoader {
        // SAFETY: only the symbol's address is used, never called.
        let addr = unsafe { loaded.lib.get::<*const u8>(b"aclInit\0") }
            .ok()
            .map(|s| *s as usize);
        if let Some(p) = addr.and_then(mapped_file_of) {
            path = p;
        }
    }
    LibraryInfo {
        kind,
        path,
        origin: loaded.origin,
        simulator_version: version,
    }
}

/// Loads the AscendCL library the way the process-wide loader would with `env`, and reports what
/// it found, without making it the process's library. The library stays mapped (it is never
/// unloaded), so probing is safe even when the simulator is already running in this process.
pub fn probe(env: &SearchEnv) -> Result<LibraryInfo, LoadError> {
    let loaded = load_first(
        "AscendCL",
        &search::acl_candidates(env),
        env.consulted(&search::SEARCH_VARS[..4]),
    )?;
    let info = describe(&loaded);
    std::mem::forget(loaded.lib);
    Ok(info)
}

macro_rules! function_table {
    ($($name:ident : $pfn:ident),* $(,)?) => {
        /// One lazily resolved slot per bound function: `None` once resolved means "not exported".
        #[allow(non_snake_case)]
        #[derive(Default)]
        struct FunctionTable {
            $($name: OnceLock<Option<sys::$pfn>>,)*
        }

        /// Accessors for every bound function, each resolved on first use.
        #[allow(non_snake_case)]
        impl Api {
            $(
                #[doc = concat!("`", stringify!($name), "`, or `Unsupported` if the library lacks it.")]
                pub fn $name(&self) -> Result<sys::$pfn, FfiError> {
                    const NAME: &str = stringify!($name);
                    let slot = match self.table.$name.get() {
                        Some(slot) => *slot,
                        None => {
                            let (lib, _) = self.library_for(NAME)?;
                            // SAFETY: `sys::$pfn` is the header signature of `NAME` (see the module
                            // contract); the library is never unloaded, so the pointer stays valid.
                            let f = unsafe { lookup::<sys::$pfn>(lib, NAME) };
                            *self.table.$name.get_or_init(|| f)
                        }
                    };
                    slot.ok_or_else(|| FfiError::Unsupported {
                        symbol: NAME,
                        library: self.library_for(NAME).map(|(_, p)| p.to_path_buf()).unwrap_or_default(),
                    })
                }
            )*
        }
    };
}

/// # Safety
/// `T` must be the function-pointer type of `name`'s real signature.
unsafe fn lookup<T: Copy>(lib: &libloading::Library, name: &str) -> Option<T> {
    let mut cname = Vec::with_capacity(name.len() + 1);
    cname.extend_from_slice(name.as_bytes());
    cname.push(0);
    // SAFETY: forwarded to the caller.
    unsafe { lib.get::<T>(&cname).ok().map(|s| *s) }
}

/// The loaded AscendCL library (and, on demand, HCCL) with its function table.
pub struct Api {
    acl: Loaded,
    info: LibraryInfo,
    env: SearchEnv,
    /// `None`: HCCL symbols come from the AscendCL library (the simulator).
    hccl: OnceLock<Result<Option<Loaded>, LoadError>>,
    table: FunctionTable,
}

crate::for_each_acl_function!(function_table);

impl Api {
    fn load(env: SearchEnv) -> Result<Api, LoadError> {
        let acl = load_first(
            "AscendCL",
            &search::acl_candidates(&env),
            env.consulted(&search::SEARCH_VARS[..4]),
        )?;
        let info = describe(&acl);
        Ok(Api {
            acl,
            info,
            env,
            hccl: OnceLock::new(),
            table: FunctionTable::default(),
        })
    }

    /// Which library is loaded and from where.
    pub fn info(&self) -> &LibraryInfo {
        &self.info
    }

    /// A symbol of the AscendCL library outside the generated bindings (the simulator's own
    /// extensions, `dsnpu_sim_*`), looked up on each call; `Unsupported` when the library lacks it.
    ///
    /// # Safety
    /// `T` must be the function-pointer type of `name`'s real signature.
    pub unsafe fn extension<T: Copy>(&self, name: &'static str) -> Result<T, FfiError> {
        // SAFETY: the signature is the caller's promise; the library is never unloaded, so the
        // pointer stays valid for the life of the process.
        unsafe { lookup::<T>(&self.acl.lib, name) }.ok_or_else(|| FfiError::Unsupported {
            symbol: name,
            library: self.acl.path.clone(),
        })
    }

    /// The library that exports `name`, loading HCCL on the first HCCL call.
    fn library_for(&self, name: &str) -> Result<(&libloading::Library, &Path), FfiError> {
        if !name.starts_with("Hccl") || self.info.kind == LibraryKind::Simulator {
            return Ok((&self.acl.lib, &self.acl.path));
        }
        let hccl = self.hccl.get_or_init(|| {
            load_first(
                "HCCL",
                &search::hccl_candidates(&self.env, &self.info.path),
                self.env.consulted(&[
                    search::ENV_HCCL_LIB,
                    search::ENV_ASCEND_HOME,
                    search::ENV_ASCEND_TOOLKIT_HOME,
                ]),
            )
            .map(Some)
        });
        match hccl {
            Ok(Some(l)) => Ok((&l.lib, &l.path)),
            Ok(None) => Ok((&self.acl.lib, &self.acl.path)),
            Err(e) => Err(FfiError::Load(e.clone())),
        }
    }
}

static API: OnceLock<Result<Api, LoadError>> = OnceLock::new();

/// The process's AscendCL library, loaded on first use from [`SearchEnv::from_process`].
pub fn api() -> Result<&'static Api, LoadError> {
    API.get_or_init(|| Api::load(SearchEnv::from_process()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Loads a separate [`Api`] with `env`, for tools and tests that inspect another library than the
/// process's own. It is never unloaded (the memory is leaked), so its function pointers stay valid.
pub fn load_independent(env: &SearchEnv) -> Result<&'static Api, LoadError> {
    Ok(Box::leak(Box::new(Api::load(env.clone())?)))
}

/// Which library the process uses (loading it if needed).
pub fn library_info() -> Result<&'static LibraryInfo, LoadError> {
    api().map(Api::info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_lists_every_path_and_variable() {
        let env = SearchEnv::isolated()
            .with_exe_dir("/nonexistent-dsnpu/bin")
            .with_var(search::ENV_ASCEND_HOME, "/nonexistent-dsnpu/cann");
        let err = probe(&env).unwrap_err();
        assert_eq!(err.library, "AscendCL");
        let tried: Vec<_> = err
            .attempts
            .iter()
            .map(|a| a.path.display().to_string())
            .collect();
        assert_eq!(
            tried,
            [
                "/nonexistent-dsnpu/cann/lib64/libascendcl.so",
                "/nonexistent-dsnpu/bin/deps/libdsnpu_sim.so",
                "/nonexistent-dsnpu/bin/libdsnpu_sim.so",
                "/nonexistent-dsnpu/libdsnpu_sim.so",
            ]
        );
        assert!(err.attempts.iter().all(|a| a.reason == "no such file"));
        assert_eq!(
            err.env,
            vec![
                ("DSNPU_ACL_LIB", None),
                (
                    "ASCEND_HOME_PATH",
                    Some("/nonexistent-dsnpu/cann".to_string())
                ),
                ("ASCEND_TOOLKIT_HOME", None),
                ("DSNPU_SIM_LIB", None),
            ]
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_reports_the_loader_reason() {
        let dir = std::env::temp_dir().join(format!("dsnpu-ffi-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bogus = dir.join("libascendcl.so");
        std::fs::write(&bogus, b"not an ELF file").unwrap();
        let err = probe(&SearchEnv::isolated().with_var(search::ENV_ACL_LIB, &bogus)).unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(err.attempts.len(), 1);
        assert_eq!(err.attempts[0].path, bogus);
        assert_ne!(err.attempts[0].reason, "no such file");
    }

    #[test]
    fn maps_lookup_finds_this_executables_code() {
        let here = maps_lookup_finds_this_executables_code as *const () as usize;
        let exe = std::env::current_exe().unwrap();
        assert_eq!(mapped_file_of(here), Some(exe));
        assert_eq!(mapped_file_of(0), None);
    }
}
