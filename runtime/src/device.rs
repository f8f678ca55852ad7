//! Devices and per-thread context binding.
//!
//! AscendCL keeps a *current context* per thread, and most calls act on it. Every object of this
//! crate remembers its device's context and binds it on the calling thread before each call
//! (`DeviceCore::bind`), so objects can move between and be shared by threads. A thread-local
//! cache skips the bind when the thread is already on that context; code that changes the current
//! context through the raw FFI must call [`Device::bind_to_thread`] again before using this crate.
//!
//! A device is opened (`aclrtSetDevice`, whose default context the crate uses) by the first
//! [`Device::new`] for its ordinal and reset (`aclrtResetDevice`) when the last object that needs it
//! (device handle, stream, event, buffer, kernel binary) is dropped.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use dsnpu_ffi::{result, sys};

use crate::error::{Result, RuntimeError};
use crate::event::{Event, EventFlags};
use crate::init::init;
use crate::memory::pool::MemPool;
use crate::stream::Stream;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Id of the `DeviceCore` whose context is current on this thread (0: none known).
    static BOUND: Cell<u64> = const { Cell::new(0) };
}

/// A unique id for streams and devices (never reused, unlike handle addresses).
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// An opened device and its default context. Every object that makes AscendCL calls on the device
/// holds an `Arc` of it, so the device is reset only after all of them are gone.
pub(crate) struct DeviceCore {
    ordinal: i32,
    ctx: sys::aclrtContext,
    id: u64,
}

// SAFETY: the context handle is a process-wide AscendCL object that may be made current on any
// thread; this type only ever passes it to aclrtSetCurrentContext.
unsafe impl Send for DeviceCore {}
// SAFETY: as above; the struct is immutable after construction.
unsafe impl Sync for DeviceCore {}

impl DeviceCore {
    fn open(ordinal: i32) -> Result<Arc<DeviceCore>> {
        result::device::set(ordinal)?;
        let ctx = match result::device::current_context() {
            Ok(ctx) => ctx,
            Err(e) => {
                let _ = result::device::reset(ordinal);
                return Err(e.into());
            }
        };
        let core = DeviceCore {
            ordinal,
            ctx,
            id: next_id(),
        };
        BOUND.with(|b| b.set(core.id));
        Ok(Arc::new(core))
    }

    pub(crate) fn ordinal(&self) -> i32 {
        self.ordinal
    }

    /// Makes this device's context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<()> {
        if BOUND.with(Cell::get) != self.id {
            // SAFETY: `ctx` is the default context of a device this core keeps open.
            unsafe { result::device::set_current_context(self.ctx)? };
            BOUND.with(|b| b.set(self.id));
        }
        Ok(())
    }

    /// Whether `other` is this very device state.
    pub(crate) fn is(&self, other: &DeviceCore) -> bool {
        self.id == other.id
    }

    /// Fails with `DeviceMismatch` unless `other` is this device.
    pub(crate) fn expect_same(&self, op: &'static str, other: &DeviceCore) -> Result<()> {
        if self.id == other.id {
            Ok(())
        } else {
            Err(RuntimeError::DeviceMismatch {
                op,
                expected: self.ordinal,
                actual: other.ordinal,
            })
        }
    }
}

impl Drop for DeviceCore {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; a failed reset leaves the device open until exit.
        let _ = self.bind();
        let _ = result::device::reset(self.ordinal);
        BOUND.with(|b| {
            if b.get() == self.id {
                b.set(0)
            }
        });
    }
}

pub(crate) struct DeviceShared {
    core: Arc<DeviceCore>,
    pool: MemPool,
}

#[derive(Default)]
struct Registry {
    devices: HashMap<i32, Weak<DeviceShared>>,
    cores: HashMap<i32, Weak<DeviceCore>>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Free and total device memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub free: usize,
    pub total: usize,
}

/// The compute cores of a device (`aclGetDeviceCapability`). On the 910B/910C's separated
/// architecture an AI Core is one cube core with its vector cores, so `cube` counts AI Cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreCounts {
    pub cube: u32,
    pub vector: u32,
}

/// A handle to one device. Cheap to clone; all handles of an ordinal share one state and one
/// default memory pool.
#[derive(Clone)]
pub struct Device {
    shared: Arc<DeviceShared>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.ordinal())
            .finish()
    }
}

impl Device {
    /// Number of devices (initializes AscendCL if needed).
    pub fn count() -> Result<u32> {
        init()?;
        Ok(result::device::count()?)
    }

    /// Opens device `ordinal` (validated against [`Device::count`]).
    pub fn new(ordinal: i32) -> Result<Device> {
        let count = Device::count()?;
        if ordinal < 0 || ordinal as u32 >= count {
            return Err(RuntimeError::InvalidDevice { ordinal, count });
        }
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = reg.devices.get(&ordinal).and_then(Weak::upgrade) {
            return Ok(Device { shared });
        }
        let core = match reg.cores.get(&ordinal).and_then(Weak::upgrade) {
            Some(core) => core,
            None => {
                let core = DeviceCore::open(ordinal)?;
                reg.cores.insert(ordinal, Arc::downgrade(&core));
                core
            }
        };
        let shared = Arc::new(DeviceShared {
            pool: MemPool::from_core(core.clone()),
            core,
        });
        reg.devices.insert(ordinal, Arc::downgrade(&shared));
        Ok(Device { shared })
    }

    pub fn ordinal(&self) -> i32 {
        self.shared.core.ordinal
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.shared.core
    }

    /// Makes this device's context current on the calling thread (needed only before raw FFI calls).
    pub fn bind_to_thread(&self) -> Result<()> {
        self.shared.core.bind()
    }

    /// Free and total HBM of this device.
    pub fn mem_info(&self) -> Result<MemInfo> {
        self.shared.core.bind()?;
        let (free, total) = result::device::mem_info(sys::aclrtMemAttr::ACL_HBM_MEM)?;
        Ok(MemInfo { free, total })
    }

    /// The device's AI Core (cube) and vector core counts: how many blocks of a kernel run at once.
    /// `Unsupported` from a CANN too old to export `aclGetDeviceCapability`.
    pub fn core_counts(&self) -> Result<CoreCounts> {
        use sys::aclDeviceInfo::{ACL_DEVICE_INFO_AI_CORE_NUM, ACL_DEVICE_INFO_VECTOR_CORE_NUM};
        let id = self.ordinal() as u32; // non-negative: checked in `Device::new`
        let count = |info, what| -> Result<u32> {
            let value = result::device::capability(id, info)?;
            u32::try_from(value)
                .ok()
                .filter(|&n| n > 0)
                .ok_or(RuntimeError::ImplausibleReport {
                    call: "aclGetDeviceCapability",
                    what,
                    value,
                    device: id,
                })
        };
        Ok(CoreCounts {
            cube: count(ACL_DEVICE_INFO_AI_CORE_NUM, "AI Cores")?,
            vector: count(ACL_DEVICE_INFO_VECTOR_CORE_NUM, "vector cores")?,
        })
    }

    /// The device's stream-ordered caching allocator, shared by every stream that allocates from
    /// it by default.
    pub fn pool(&self) -> &MemPool {
        &self.shared.pool
    }

    /// A new stream on this device.
    pub fn new_stream(&self) -> Result<Stream> {
        Stream::new(self)
    }

    /// A new event on this device.
    pub fn new_event(&self, flags: EventFlags) -> Result<Event> {
        Event::new(self, flags)
    }
}
