//! The process-wide simulator state and its lifecycle: `aclInit` creates it (reading the
//! configuration once), `aclFinalize` drains and drops it. AscendCL allows one `aclInit` per
//! process; after `aclFinalize` every call fails with `ACL_ERROR_UNINITIALIZE` and a new `aclInit`
//! with `ACL_ERROR_REPEAT_INITIALIZE`.
use std::sync::{Arc, Mutex, RwLock};

use crate::config::SimConfig;
use crate::context::Context;
use crate::error::SimError;
use crate::event::Event;
use crate::handles::Registry;
use crate::hccl::Comm;
use crate::kernel::{Binary, Function, KernelArgs};
use crate::memory::Memory;
use crate::stream::{Stream, WorkerEnv};
use crate::sync::{read, write};

/// The default context of a device, shared by every thread that calls `aclrtSetDevice`.
#[derive(Default)]
pub(crate) struct DefaultContext {
    /// Its handle, 0 while the device is not set.
    pub id: u64,
    /// `aclrtSetDevice` calls not yet matched by `aclrtResetDevice`.
    pub refs: u32,
}

pub(crate) struct Runtime {
    pub config: Arc<SimConfig>,
    pub memory: Arc<Memory>,
    pub defaults: Vec<Mutex<DefaultContext>>,
    pub contexts: Registry<Context>,
    pub streams: Registry<Stream>,
    pub events: Registry<Event>,
    pub binaries: Registry<Binary>,
    pub functions: Registry<Function>,
    pub args: Registry<KernelArgs>,
    pub comms: Registry<Comm>,
}

enum Phase {
    Uninit,
    Ready(Arc<Runtime>),
    Finalized,
}

static PHASE: RwLock<Phase> = RwLock::new(Phase::Uninit);

/// The initialized simulator.
pub(crate) fn runtime() -> Result<Arc<Runtime>, SimError> {
    match &*read(&PHASE) {
        Phase::Ready(rt) => Ok(Arc::clone(rt)),
        _ => Err(SimError::Uninitialized),
    }
}

/// `aclInit`: `config_path`, when given, must name a readable JSON file (see
/// [`crate::config::check_init_file`]; its settings are ignored).
pub(crate) fn init(config_path: Option<&str>) -> Result<(), SimError> {
    let mut phase = write(&PHASE);
    if !matches!(*phase, Phase::Uninit) {
        return Err(SimError::RepeatInit);
    }
    if let Some(path) = config_path.filter(|p| !p.is_empty()) {
        crate::config::check_init_file(path)?;
    }
    let config = SimConfig::from_env()?;
    *phase = Phase::Ready(Arc::new(Runtime::new(config)));
    Ok(())
}

/// `aclFinalize`: drains every stream and releases everything.
pub(crate) fn finalize() -> Result<(), SimError> {
    let rt = {
        let mut phase = write(&PHASE);
        match std::mem::replace(&mut *phase, Phase::Finalized) {
            Phase::Ready(rt) => rt,
            Phase::Uninit => {
                *phase = Phase::Uninit;
                return Err(SimError::Uninitialized);
            }
            Phase::Finalized => return Err(SimError::RepeatFinalize),
        }
    };
    rt.shutdown();
    crate::kernel::pool::shutdown();
    Ok(())
}

impl Runtime {
    fn new(config: SimConfig) -> Runtime {
        let host_budget = config
            .host_mem_bytes
            .unwrap_or_else(crate::memory::host::backable_bytes);
        let mut memory = Memory::new(config.devices, config.mem_bytes, host_budget);
        memory.set_init_check(config.init_check);
        let memory = Arc::new(memory);
        Runtime {
            defaults: (0..config.devices)
                .map(|_| Mutex::new(DefaultContext::default()))
                .collect(),
            config: Arc::new(config),
            memory,
            contexts: Registry::new("context"),
            streams: Registry::new("stream"),
            events: Registry::new("event"),
            binaries: Registry::new("binary"),
            functions: Registry::new("function"),
            args: Registry::new("args"),
            comms: Registry::new("comm"),
        }
    }

    /// What a new stream worker needs.
    pub(crate) fn worker_env(&self) -> WorkerEnv {
        WorkerEnv {
            memory: Arc::clone(&self.memory),
            config: Arc::clone(&self.config),
        }
    }

    /// Checks a device id.
    pub(crate) fn check_device(&self, id: i32) -> Result<usize, SimError> {
        usize::try_from(id)
            .ok()
            .filter(|&d| d < self.defaults.len())
            .ok_or(SimError::InvalidDevice {
                id,
                count: self.config.devices,
            })
    }

    fn shutdown(&self) {
        for s in self.streams.remove_where(|_| true) {
            s.close();
        }
        for c in self.contexts.remove_where(|_| true) {
            c.default_stream.close();
        }
        self.comms.remove_where(|_| true);
        self.events.remove_where(|_| true);
        self.args.remove_where(|_| true);
        self.functions.remove_where(|_| true);
        self.binaries.remove_where(|_| true);
    }
}
