//! Passes the cargo profile directory (`target/<profile>`) to the crate, so that the loader can find
//! the simulator cdylib that the same workspace build produced, wherever the executable itself runs.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // OUT_DIR is `<target>/<profile>/build/dsnpu-ffi-<hash>/out`; three levels up is the profile dir.
    if let Some(out) = std::env::var_os("OUT_DIR") {
        let out = PathBuf::from(out);
        if let Some(profile) = out.ancestors().nth(3) {
            println!(
                "cargo:rustc-env=DSNPU_FFI_PROFILE_DIR={}",
                profile.display()
            );
        }
    }
}
