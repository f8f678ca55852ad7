//! `include/dsnpu.h` is what cbindgen generates from this crate today: the test regenerates it in
//! memory and fails on any difference. `DSNPU_BLESS=1` rewrites the committed header instead.

use std::path::Path;

#[test]
fn committed_header_matches_a_fresh_generation() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = crate_dir.join("../include/dsnpu.h");
    if std::env::var_os("DSNPU_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write include/dsnpu.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != fresh {
        let (c, f) = (
            String::from_utf8_lossy(&committed),
            String::from_utf8_lossy(&fresh),
        );
        let first = c
            .lines()
            .zip(f.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(c.lines().count().min(f.lines().count()));
        panic!(
            "include/dsnpu.h differs from a fresh generation from line {} on (committed {} lines, fresh {}); \
             regenerate with DSNPU_BLESS=1 cargo test -p dsnpu-capi --test header",
            first + 1,
            c.lines().count(),
            f.lines().count()
        );
    }
}
