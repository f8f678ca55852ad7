//! The AscendCL loader's search, tested with explicit environments (the process environment is
//! never changed, so other tests are unaffected).

use std::path::PathBuf;

use dsnpu_ffi::loader::{probe, search, Origin, SearchEnv};
use dsnpu_ffi::LibraryKind;

#[test]
fn a_missing_library_lists_every_path_and_variable() {
    let env = SearchEnv::isolated()
        .with_var(search::ENV_ASCEND_HOME, "/nonexistent/cann")
        .with_var(search::ENV_ASCEND_TOOLKIT_HOME, "/nonexistent/toolkit")
        .with_var(search::ENV_SIM_LIB, "/nonexistent/sim/libdsnpu_sim.so");
    let err = probe(&env).unwrap_err();
    let tried: Vec<PathBuf> = err.attempts.iter().map(|a| a.path.clone()).collect();
    assert_eq!(
        tried,
        [
            PathBuf::from("/nonexistent/cann/lib64/libascendcl.so"),
            PathBuf::from("/nonexistent/toolkit/lib64/libascendcl.so"),
            PathBuf::from("/nonexistent/sim/libdsnpu_sim.so"),
        ]
    );
    let text = err.to_string();
    for needle in [
        "/nonexistent/cann/lib64/libascendcl.so",
        "/nonexistent/toolkit/lib64/libascendcl.so",
        "/nonexistent/sim/libdsnpu_sim.so",
        "ASCEND_HOME_PATH=/nonexistent/cann",
        "DSNPU_ACL_LIB (unset)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn a_bogus_explicit_path_is_an_error_not_a_fallback() {
    let env =
        SearchEnv::from_process().with_var(search::ENV_ACL_LIB, "/nonexistent/libascendcl.so");
    let err = probe(&env).unwrap_err();
    assert_eq!(err.attempts.len(), 1);
    assert_eq!(
        err.attempts[0].path,
        PathBuf::from("/nonexistent/libascendcl.so")
    );
    assert_eq!(err.attempts[0].reason, "no such file");
    assert!(err
        .env
        .contains(&("DSNPU_ACL_LIB", Some("/nonexistent/libascendcl.so".into()))));
}

#[test]
fn the_simulator_is_found_next_to_the_test_executable() {
    // Test executables live in target/<profile>/deps, where cargo also builds libdsnpu_sim.so.
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let info = probe(&SearchEnv::isolated().with_exe_dir(&exe_dir)).unwrap();
    assert_eq!(info.kind, LibraryKind::Simulator);
    assert_eq!(info.origin, Origin::ExeDir);
    assert_eq!(info.path, exe_dir.join("libdsnpu_sim.so"));
    // The same file through DSNPU_SIM_LIB.
    let info2 = probe(&SearchEnv::isolated().with_var(search::ENV_SIM_LIB, &info.path)).unwrap();
    assert_eq!(
        (info2.kind, info2.origin),
        (LibraryKind::Simulator, Origin::EnvSimLib)
    );
}

#[test]
fn a_symbol_missing_from_the_library_fails_only_its_own_calls() {
    // The simulator's test kernel binary is a shared object without any AscendCL symbol.
    let env = SearchEnv::isolated().with_var(search::ENV_ACL_LIB, dsnpu_sim::TEST_KERNELS_PATH);
    let api = dsnpu_ffi::loader::load_independent(&env).unwrap();
    assert_eq!(api.info().kind, LibraryKind::Real);
    match api.aclrtMalloc() {
        Err(dsnpu_ffi::FfiError::Unsupported { symbol, library }) => {
            assert_eq!(symbol, "aclrtMalloc");
            assert_eq!(library, PathBuf::from(dsnpu_sim::TEST_KERNELS_PATH));
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the kernel binary does not export aclrtMalloc"),
    }
    // Asking twice gives the same answer from the cache.
    assert!(matches!(
        api.aclrtMalloc(),
        Err(dsnpu_ffi::FfiError::Unsupported { .. })
    ));
    // The process's own library (the simulator) is unaffected.
    assert!(dsnpu_ffi::loader::api().unwrap().aclrtMalloc().is_ok());
}
