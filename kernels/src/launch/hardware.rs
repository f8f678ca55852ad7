//! What a device offers the kernels: vector and cube cores and the Unified Buffer per core.
//!
//! The core counts come from the device itself (`aclGetDeviceCapability`: on the simulator its
//! configuration, `DSNPU_SIM_AICORE_NUM`), so a launch never asks for more blocks than the device runs
//! at once; a CANN too old to answer falls back to the SoC name (`aclrtGetSocName`) and the per-SoC
//! table below (CANN's `platform_config`, per die). Every 910B/910C vector core has 192 KiB of UB,
//! which is also what the simulator gives each block.

use dsnpu_runtime::Device;

use super::device_error;
use crate::{CoreBudget, KernelError, Result};

/// Unified Buffer bytes per vector core on 910B/910C (and per simulated block).
const UB_BYTES: u32 = 196_608;

/// Cores and Unified Buffer of one device (one die).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    /// Vector cores (AIV): the budget of the vector kernels.
    pub vector: CoreBudget,
    /// Cube cores (AIC): the budget of the matrix kernels.
    pub cube: CoreBudget,
}

impl Hardware {
    /// One 910B2 die: 24 cube cores, 48 vector cores, 192 KiB of UB each.
    pub const ASCEND_910B2: Hardware = Hardware::with_cores(24, 48);

    /// `cube` cube and `vector` vector cores with 910B/910C's Unified Buffer.
    pub const fn with_cores(cube: u32, vector: u32) -> Hardware {
        Hardware {
            vector: CoreBudget {
                cores: vector,
                ub_bytes: UB_BYTES,
            },
            cube: CoreBudget {
                cores: cube,
                ub_bytes: UB_BYTES,
            },
        }
    }

    /// The hardware of a CANN SoC name (`Ascend910B2`, ...), if it is one dsnpu knows.
    pub fn for_soc(name: &str) -> Option<Hardware> {
        let name = name.trim();
        let (cube, vector) = match name {
            "Ascend910B1" | "Ascend910B2" | "Ascend910B2C" => (24, 48),
            "Ascend910B3" | "Ascend910B4" | "Ascend910B4-1" => (20, 40),
            // 910C packages (Ascend910_93xx): two dies of 24 cube and 48 vector cores; a device is one die.
            n if n.starts_with("Ascend910_93") => (24, 48),
            _ => return None,
        };
        Some(Hardware::with_cores(cube, vector))
    }

    /// The hardware of `device`: the core counts it reports, else the table entry of its SoC name.
    pub fn detect(device: &Device) -> Result<Hardware> {
        let asked = match device.core_counts() {
            Ok(c) => return Ok(Hardware::with_cores(c.cube, c.vector)),
            Err(e) => e,
        };
        let soc = dsnpu_runtime::soc_name()
            .map_err(|e| device_error("hardware detection", e))?
            .unwrap_or_default();
        Hardware::for_soc(&soc).ok_or_else(|| {
            KernelError::InvalidHardware(format!(
                "the device did not report its cores ({asked}) and SoC {soc:?} is not in the table: \
                 give the core counts with KernelLibrary::load_with"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soc_table() {
        assert_eq!(
            Hardware::for_soc("Ascend910B2"),
            Some(Hardware::ASCEND_910B2)
        );
        assert_eq!(
            Hardware::for_soc("Ascend910B2"),
            Some(Hardware {
                vector: CoreBudget::ASCEND_910B2_VECTOR,
                cube: CoreBudget::ASCEND_910B2_CUBE,
            })
        );
        let b4 = Hardware::for_soc("Ascend910B4").unwrap();
        assert_eq!((b4.cube.cores, b4.vector.cores), (20, 40));
        assert_eq!(b4.vector.ub_bytes, 192 * 1024);
        assert_eq!(
            Hardware::for_soc("Ascend910_9391"),
            Some(Hardware::ASCEND_910B2)
        );
        assert_eq!(Hardware::for_soc("Ascend310P3"), None);
        assert_eq!(Hardware::for_soc(""), None);
    }
}
