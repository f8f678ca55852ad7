//! [`KernelLibrary`]: the host kernel binary loaded on one device, and its kernels.
//!
//! [`KernelLibrary::get`] loads the binary embedded in this crate ([`crate::HOST_KERNELS`], through
//! `aclrtBinaryLoadFromData`) once per device and shares it while any handle to it lives;
//! [`KernelLibrary::load_with`] loads a separate copy with an explicit [`Hardware`] (a test or benchmark
//! that wants fewer cores). Functions are looked up once and cached.
//!
//! The host kernel binary is a host shared object: only the simulator can load it. On a CANN install the
//! library loads the AI Core build of the same sources instead (feature `ascend`, never run on an NPU by
//! this project); without that feature the load is refused with an explanation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use dsnpu_runtime::{sim_counters, Device, Function, Module};

use super::{device_error, Hardware};
use crate::{Kernel, KernelDtype, KernelError, Result, HOST_KERNELS};

/// The host kernel binary on one device.
pub struct KernelLibrary {
    device: Device,
    module: Module,
    hardware: Hardware,
    functions: Mutex<HashMap<String, Function>>,
}

impl std::fmt::Debug for KernelLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLibrary")
            .field("device", &self.device.ordinal())
            .field("hardware", &self.hardware)
            .finish()
    }
}

fn registry() -> &'static Mutex<HashMap<i32, Weak<KernelLibrary>>> {
    static LIBS: OnceLock<Mutex<HashMap<i32, Weak<KernelLibrary>>>> = OnceLock::new();
    LIBS.get_or_init(Mutex::default)
}

impl KernelLibrary {
    /// The library of `device` with its detected [`Hardware`], loaded on first use and shared.
    pub fn get(device: &Device) -> Result<Arc<KernelLibrary>> {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lib) = reg.get(&device.ordinal()).and_then(Weak::upgrade) {
            return Ok(lib);
        }
        let lib = Self::load_with(device, Hardware::detect(device)?)?;
        reg.insert(device.ordinal(), Arc::downgrade(&lib));
        Ok(lib)
    }

    /// A separately loaded library whose launchers tile for `hardware`: at most the cores `device`
    /// runs at once (where it reports them), since a launch of more blocks than that would wait
    /// forever at its first `SyncAll` for blocks that only start once others have finished.
    pub fn load_with(device: &Device, hardware: Hardware) -> Result<Arc<KernelLibrary>> {
        let has = device.core_counts().ok();
        for (what, b, runs) in [
            ("vector", hardware.vector, has.map(|c| c.vector)),
            ("cube", hardware.cube, has.map(|c| c.cube)),
        ] {
            if b.cores == 0 || b.ub_bytes == 0 {
                return Err(KernelError::InvalidHardware(format!(
                    "{what}: {} cores with {} bytes of UB",
                    b.cores, b.ub_bytes
                )));
            }
            if let Some(runs) = runs.filter(|&n| b.cores > n) {
                return Err(KernelError::InvalidHardware(format!(
                    "{} {what} cores, but device {} runs {runs} at once",
                    b.cores,
                    device.ordinal()
                )));
            }
        }
        let on_simulator = sim_counters::is_simulator().map_err(|e| device_error("kernels", e))?;
        let module = if on_simulator {
            Module::load_bytes(device, HOST_KERNELS)
                .map_err(|e| device_error("host kernel binary", e))?
        } else {
            load_aicore_binary(device)?
        };
        Ok(Arc::new(KernelLibrary {
            device: device.clone(),
            module,
            hardware,
            functions: Mutex::default(),
        }))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the launchers tile for.
    pub fn hardware(&self) -> Hardware {
        self.hardware
    }

    /// `kernel` instantiated for `dtype`.
    pub fn function(&self, kernel: Kernel, dtype: KernelDtype) -> Result<Function> {
        self.function_named(kernel.symbol(dtype))
    }

    /// The kernel exported as `symbol` (also the self-test kernels, `selftest_*`).
    pub fn function_named(&self, symbol: &str) -> Result<Function> {
        let mut cache = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(symbol) {
            return Ok(f.clone());
        }
        let f = self
            .module
            .function(symbol)
            .map_err(|e| device_error(symbol, e))?;
        cache.insert(symbol.to_string(), f.clone());
        Ok(f)
    }
}

/// The AI Core build of the kernels, for a CANN device.
#[cfg(feature = "ascend")]
fn load_aicore_binary(device: &Device) -> Result<Module> {
    Module::load_file(device, crate::AICORE_KERNELS_PATH)
        .map_err(|e| device_error("AI Core kernel binary", e))
}

/// Without feature `ascend` there is no binary a CANN device can run.
#[cfg(not(feature = "ascend"))]
fn load_aicore_binary(_device: &Device) -> Result<Module> {
    Err(KernelError::Device {
        kernel: "kernels".into(),
        code: None,
        message: "this AscendCL is not the dsnpu simulator, and the host kernel binary runs only there; \
                  build dsnpu-kernels with `--features ascend` (ASCEND_HOME_PATH set) for a CANN device"
            .into(),
        source: None,
    })
}
