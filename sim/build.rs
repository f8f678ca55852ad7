//! Builds `testdata/test_kernels.c` into a host kernel binary (a shared object) in OUT_DIR and passes
//! its absolute path to the crate as `DSNPU_SIM_TEST_KERNELS` (exposed as `TEST_KERNELS_PATH`).
//!
//! The `cc` crate only picks the C compiler and its target flags here: the object has to be a shared
//! library, which `cc::Build::compile` does not produce.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = manifest.join("testdata").join("test_kernels.c");
    let include = manifest.join("include");
    let output = out_dir.join("libdsnpu_sim_test_kernels.so");

    println!("cargo:rerun-if-changed=testdata/test_kernels.c");
    println!("cargo:rerun-if-changed=include/dsnpu_sim_kernel.h");
    println!("cargo:rerun-if-changed=build.rs");

    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.args(["-shared", "-fPIC", "-O2", "-std=c11", "-Wall", "-Wextra"])
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&output);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(
        status.success(),
        "compiling {} into {} failed ({status}): {cmd:?}",
        source.display(),
        output.display()
    );
    println!(
        "cargo:rustc-env=DSNPU_SIM_TEST_KERNELS={}",
        output.display()
    );
}
