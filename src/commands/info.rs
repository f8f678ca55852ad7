//! `dsnpu info`: which AscendCL library was loaded and from where, the runtime version, the SoC, and
//! each device's memory.

use crate::error::CliError;
use dsnpu_runtime::{Device, LibraryKind};
use std::fmt::Write as _;

#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {}

pub fn run(_args: &InfoArgs) -> Result<(), CliError> {
    print!("{}", report()?);
    Ok(())
}

/// The text `run` prints.
pub fn report() -> Result<String, CliError> {
    let lib = dsnpu_runtime::library()?;
    let mut out = String::new();
    let kind = match lib.kind {
        LibraryKind::Real => "real (CANN)",
        LibraryKind::Simulator => "simulator",
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "AscendCL library: {kind}");
    let _ = writeln!(out, "  path:   {}", lib.path.display());
    let _ = writeln!(out, "  found:  {}", lib.origin);
    if let Some(v) = &lib.simulator_version {
        let _ = writeln!(out, "  simulator version: {v}");
    }
    let (major, minor, patch) = dsnpu_runtime::version()?;
    let _ = writeln!(out, "runtime version: {major}.{minor}.{patch}");
    let soc = dsnpu_runtime::soc_name()?.unwrap_or_else(|| "(unknown)".into());
    let _ = writeln!(out, "SoC: {soc}");
    let count = Device::count()?;
    let _ = writeln!(out, "devices: {count}");
    for ordinal in 0..count {
        let device = Device::new(ordinal as i32)?;
        let mem = device.mem_info()?;
        // An older CANN without aclGetDeviceCapability still gets the rest of the report.
        let cores = match device.core_counts() {
            Ok(c) => format!("{} AI Cores (cube), {} vector cores", c.cube, c.vector),
            Err(e) => format!("cores unknown ({e})"),
        };
        let _ = writeln!(
            out,
            "  device {ordinal}: memory {} free / {} total; {cores}",
            human_bytes(mem.free),
            human_bytes(mem.total)
        );
    }
    Ok(out)
}

fn human_bytes(n: usize) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    format!("{:.2} GiB ({n} bytes)", n as f64 / GIB)
}
