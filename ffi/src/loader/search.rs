//! Where the AscendCL and HCCL libraries are looked for, as a pure function of the environment.
//!
//! The environment is a value ([`SearchEnv`]) rather than the process's own variables, so that the
//! search can be tested with any setting without touching the process environment.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

/// Explicit path of the AscendCL library; when set, it is the only AscendCL candidate.
pub const ENV_ACL_LIB: &str = "DSNPU_ACL_LIB";
/// Explicit path of the HCCL library; when set, it is the only HCCL candidate.
pub const ENV_HCCL_LIB: &str = "DSNPU_HCCL_LIB";
/// Explicit path of the simulator library; when set, it replaces the simulator's default places.
pub const ENV_SIM_LIB: &str = "DSNPU_SIM_LIB";
/// A CANN install (`set_env.sh` exports it); its `lib64/` holds the libraries.
pub const ENV_ASCEND_HOME: &str = "ASCEND_HOME_PATH";
/// Older CANN installs export this instead.
pub const ENV_ASCEND_TOOLKIT_HOME: &str = "ASCEND_TOOLKIT_HOME";

/// Every variable the search reads, in the order it reads them.
pub const SEARCH_VARS: [&str; 5] = [
    ENV_ACL_LIB,
    ENV_ASCEND_HOME,
    ENV_ASCEND_TOOLKIT_HOME,
    ENV_SIM_LIB,
    ENV_HCCL_LIB,
];

pub const ACL_FILE: &str = "libascendcl.so";
pub const HCCL_FILE: &str = "libhccl.so";
pub const SIM_FILE: &str = "libdsnpu_sim.so";

/// The cargo profile directory of the build that compiled this crate (`target/<profile>`), where the
/// workspace's simulator cdylib is built.
pub const BUILD_PROFILE_DIR: Option<&str> = option_env!("DSNPU_FFI_PROFILE_DIR");

/// The inputs of a library search.
#[derive(Debug, Clone, Default)]
pub struct SearchEnv {
    vars: Vec<(&'static str, OsString)>,
    /// Directory of the running executable (the simulator is looked for around it).
    pub exe_dir: Option<PathBuf>,
    /// The build's profile directory (see [`BUILD_PROFILE_DIR`]).
    pub build_profile_dir: Option<PathBuf>,
    /// Whether to hand the bare file name to the system loader (`LD_LIBRARY_PATH`, ld.so cache).
    pub system_loader: bool,
}

impl SearchEnv {
    /// The running process's environment, executable and build directory.
    pub fn from_process() -> Self {
        let vars = SEARCH_VARS
            .iter()
            .filter_map(|&name| std::env::var_os(name).map(|v| (name, v)))
            .collect();
        SearchEnv {
            vars,
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            build_profile_dir: BUILD_PROFILE_DIR.map(PathBuf::from),
            system_loader: true,
        }
    }

    /// Nothing set, no executable or build directory, no system loader: add only what a test needs.
    pub fn isolated() -> Self {
        SearchEnv::default()
    }

    /// Sets variable `name` (one of [`SEARCH_VARS`]) for this search only.
    pub fn with_var(mut self, name: &'static str, value: impl Into<OsString>) -> Self {
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, value.into()));
        self
    }

    /// Looks for the simulator around this executable directory.
    pub fn with_exe_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.exe_dir = Some(dir.into());
        self
    }

    /// Looks for the simulator in this build profile directory.
    pub fn with_build_profile_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.build_profile_dir = Some(dir.into());
        self
    }

    /// Whether to ask the system loader for the bare file name.
    pub fn with_system_loader(mut self, on: bool) -> Self {
        self.system_loader = on;
        self
    }

    /// The value of `name`; an empty value counts as unset.
    pub fn var(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .find(|(n, v)| *n == name && !v.is_empty())
            .map(|(_, v)| v.as_os_str())
    }

    /// Each consulted variable and its value, for error reports.
    pub fn consulted(&self, names: &[&'static str]) -> Vec<(&'static str, Option<String>)> {
        names
            .iter()
            .map(|&n| (n, self.var(n).map(|v| v.to_string_lossy().into_owned())))
            .collect()
    }
}

/// Which rule of the search produced a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    EnvAclLib,
    EnvHcclLib,
    AscendHomePath,
    AscendToolkitHome,
    /// Next to the AscendCL library that was loaded (HCCL only).
    BesideAcl,
    SystemLoader,
    EnvSimLib,
    ExeDir,
    ExeDeps,
    ExeParent,
    BuildProfile,
    BuildProfileDeps,
}

impl Origin {
    /// Whether this rule points at the workspace's simulator rather than a CANN install.
    pub fn is_simulator_rule(self) -> bool {
        matches!(
            self,
            Origin::EnvSimLib
                | Origin::ExeDir
                | Origin::ExeDeps
                | Origin::ExeParent
                | Origin::BuildProfile
                | Origin::BuildProfileDeps
        )
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::EnvAclLib => "$DSNPU_ACL_LIB",
            Origin::EnvHcclLib => "$DSNPU_HCCL_LIB",
            Origin::AscendHomePath => "$ASCEND_HOME_PATH/lib64",
            Origin::AscendToolkitHome => "$ASCEND_TOOLKIT_HOME/lib64",
            Origin::BesideAcl => "next to the loaded AscendCL library",
            Origin::SystemLoader => "system loader",
            Origin::EnvSimLib => "$DSNPU_SIM_LIB",
            Origin::ExeDir => "simulator next to the executable",
            Origin::ExeDeps => "simulator in <executable dir>/deps",
            Origin::ExeParent => "simulator in <executable dir>/..",
            Origin::BuildProfile => "simulator in the build's profile dir",
            Origin::BuildProfileDeps => "simulator in the build's profile dir/deps",
        })
    }
}

/// One place to try: a path, or (for [`Origin::SystemLoader`]) a bare file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub origin: Origin,
}

fn push(out: &mut Vec<Candidate>, path: PathBuf, origin: Origin) {
    if !out.iter().any(|c| c.path == path) {
        out.push(Candidate { path, origin });
    }
}

/// The AscendCL candidates in order: `DSNPU_ACL_LIB` alone when set (an explicit choice is never
/// silently replaced by another library); otherwise the CANN install dirs, the system loader, and
/// last the simulator (`DSNPU_SIM_LIB` alone when set, else the places a cargo build puts it).
pub fn acl_candidates(env: &SearchEnv) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(explicit) = env.var(ENV_ACL_LIB) {
        push(&mut out, PathBuf::from(explicit), Origin::EnvAclLib);
        return out;
    }
    if let Some(home) = env.var(ENV_ASCEND_HOME) {
        push(
            &mut out,
            Path::new(home).join("lib64").join(ACL_FILE),
            Origin::AscendHomePath,
        );
    }
    if let Some(home) = env.var(ENV_ASCEND_TOOLKIT_HOME) {
        push(
            &mut out,
            Path::new(home).join("lib64").join(ACL_FILE),
            Origin::AscendToolkitHome,
        );
    }
    if env.system_loader {
        push(&mut out, PathBuf::from(ACL_FILE), Origin::SystemLoader);
    }
    out.extend(simulator_candidates(env));
    out
}

/// The simulator's places: `DSNPU_SIM_LIB` alone when set; else in the executable's `deps/`, next to
/// it and in its parent (test and bench executables live in `target/<profile>/deps`), and in the
/// profile dir of the build that compiled this crate. `deps/` comes first: cargo writes every build of
/// the simulator there, but copies it next to the executable only when a `cargo build` asks for it, so
/// after a `cargo test` the copy next to `target/<profile>/dsnpu` can be an older simulator.
pub fn simulator_candidates(env: &SearchEnv) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(explicit) = env.var(ENV_SIM_LIB) {
        push(&mut out, PathBuf::from(explicit), Origin::EnvSimLib);
        return out;
    }
    if let Some(dir) = &env.exe_dir {
        push(&mut out, dir.join("deps").join(SIM_FILE), Origin::ExeDeps);
        push(&mut out, dir.join(SIM_FILE), Origin::ExeDir);
        if let Some(parent) = dir.parent() {
            push(&mut out, parent.join(SIM_FILE), Origin::ExeParent);
        }
    }
    if let Some(dir) = &env.build_profile_dir {
        push(&mut out, dir.join(SIM_FILE), Origin::BuildProfile);
        push(
            &mut out,
            dir.join("deps").join(SIM_FILE),
            Origin::BuildProfileDeps,
        );
    }
    out
}

/// The HCCL candidates for a real CANN install: `DSNPU_HCCL_LIB` alone when set; else next to the
/// loaded AscendCL library, the CANN install dirs and the system loader. (With the simulator the
/// HCCL symbols are looked up in the simulator itself and this list is not used.)
pub fn hccl_candidates(env: &SearchEnv, acl_path: &Path) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(explicit) = env.var(ENV_HCCL_LIB) {
        push(&mut out, PathBuf::from(explicit), Origin::EnvHcclLib);
        return out;
    }
    if let Some(dir) = acl_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        push(&mut out, dir.join(HCCL_FILE), Origin::BesideAcl);
    }
    if let Some(home) = env.var(ENV_ASCEND_HOME) {
        push(
            &mut out,
            Path::new(home).join("lib64").join(HCCL_FILE),
            Origin::AscendHomePath,
        );
    }
    if let Some(home) = env.var(ENV_ASCEND_TOOLKIT_HOME) {
        push(
            &mut out,
            Path::new(home).join("lib64").join(HCCL_FILE),
            Origin::AscendToolkitHome,
        );
    }
    if env.system_loader {
        push(&mut out, PathBuf::from(HCCL_FILE), Origin::SystemLoader);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &[Candidate]) -> Vec<(String, Origin)> {
        c.iter()
            .map(|c| (c.path.display().to_string(), c.origin))
            .collect()
    }

    #[test]
    fn full_order_without_explicit_paths() {
        let env = SearchEnv::isolated()
            .with_exe_dir("/t/debug/deps")
            .with_build_profile_dir("/b/release")
            .with_system_loader(true)
            .with_var(ENV_ASCEND_HOME, "/cann")
            .with_var(ENV_ASCEND_TOOLKIT_HOME, "/toolkit");
        let s = |p: &str, o| (p.to_string(), o);
        assert_eq!(
            paths(&acl_candidates(&env)),
            vec![
                s("/cann/lib64/libascendcl.so", Origin::AscendHomePath),
                s("/toolkit/lib64/libascendcl.so", Origin::AscendToolkitHome),
                s("libascendcl.so", Origin::SystemLoader),
                s("/t/debug/deps/deps/libdsnpu_sim.so", Origin::ExeDeps),
                s("/t/debug/deps/libdsnpu_sim.so", Origin::ExeDir),
                s("/t/debug/libdsnpu_sim.so", Origin::ExeParent),
                s("/b/release/libdsnpu_sim.so", Origin::BuildProfile),
                s("/b/release/deps/libdsnpu_sim.so", Origin::BuildProfileDeps),
            ]
        );
    }

    #[test]
    fn explicit_acl_path_is_the_only_candidate() {
        let env = SearchEnv {
            system_loader: true,
            exe_dir: Some("/x".into()),
            ..SearchEnv::isolated()
        }
        .with_var(ENV_ACL_LIB, "/opt/my/libascendcl.so")
        .with_var(ENV_ASCEND_HOME, "/cann");
        assert_eq!(
            paths(&acl_candidates(&env)),
            vec![("/opt/my/libascendcl.so".to_string(), Origin::EnvAclLib)]
        );
    }

    #[test]
    fn explicit_sim_path_replaces_default_sim_places_and_empty_means_unset() {
        let env = SearchEnv {
            exe_dir: Some("/x/deps".into()),
            ..SearchEnv::isolated()
        }
        .with_var(ENV_SIM_LIB, "/s/libdsnpu_sim.so")
        .with_var(ENV_ACL_LIB, "");
        assert_eq!(
            paths(&acl_candidates(&env)),
            vec![("/s/libdsnpu_sim.so".to_string(), Origin::EnvSimLib)]
        );
    }

    #[test]
    fn duplicate_directories_are_tried_once() {
        // Running from target/debug: exe dir and the build profile dir coincide.
        let env = SearchEnv::isolated()
            .with_exe_dir("/t/debug")
            .with_build_profile_dir("/t/debug");
        let c = acl_candidates(&env);
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[2].path, PathBuf::from("/t/libdsnpu_sim.so"));
    }

    #[test]
    fn hccl_is_looked_for_beside_acl_first() {
        let env = SearchEnv {
            system_loader: true,
            ..SearchEnv::isolated()
        }
        .with_var(ENV_ASCEND_HOME, "/cann");
        assert_eq!(
            paths(&hccl_candidates(
                &env,
                Path::new("/usr/local/Ascend/lib64/libascendcl.so")
            )),
            vec![
                (
                    "/usr/local/Ascend/lib64/libhccl.so".to_string(),
                    Origin::BesideAcl
                ),
                ("/cann/lib64/libhccl.so".to_string(), Origin::AscendHomePath),
                ("libhccl.so".to_string(), Origin::SystemLoader),
            ]
        );
        // A bare name (system loader) has no directory to look beside.
        assert_eq!(
            hccl_candidates(&SearchEnv::isolated(), Path::new("libascendcl.so")),
            vec![]
        );
    }
}
