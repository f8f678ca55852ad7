//! Safe ownership over AscendCL: devices, streams, events, typed buffers, a stream-ordered caching
//! allocator, and kernel launches. Built on `dsnpu-ffi`'s loader and result layer, and run against
//! a CANN install or the workspace's simulator alike.
//!
//! Contracts, layer by layer (details in each module):
//! - [`init`](mod@init): `aclInit` once per process, on first use; [`finalize`] only when asked.
//! - [`device`]: every call binds the right context on the calling thread, so every type here is
//!   `Send + Sync`; a device is reset when its last user is dropped.
//! - [`memory`]: buffers know their device and length; copies check lengths and devices;
//!   asynchronous copies take only pinned [`HostBuffer`]s, which the host cannot read, write or
//!   free until the copy is done; every buffer is ordered across streams by events. The allocator
//!   reuses blocks in stream order, retries after releasing its cache on out-of-memory, and counts.
//! - [`kernel`]: loading and lookup are safe; launching is `unsafe` because the kernel's parameter
//!   list and memory accesses cannot be checked from the host.
//! - [`transfer_stats`](mod@transfer_stats): every host↔device copy and host wait, counted where it
//!   is made, per thread.
//! - [`comm`]: HCCL communicators own their stream like buffers do; collectives are ordered with the
//!   buffers' other work and check devices and lengths; the matching calls on the other ranks are
//!   trusted (HCCL reports a mismatch or a dead peer as a stream error).
//! - [`sim_counters`]: the simulator's per-launch counters and core counts, looked up only when the
//!   simulator is loaded (`Unsupported` on a CANN install).
//!
//! Trusted throughout: that the loaded library implements AscendCL's documented semantics.

pub mod comm;
pub mod device;
pub mod error;
pub mod event;
pub mod init;
pub mod kernel;
pub mod memory;
pub mod sim_counters;
pub mod stream;
pub mod transfer_stats;

pub use comm::{Communicator, HcclElem, ReduceOp, RootInfo, Traffic};
pub use device::{CoreCounts, Device, MemInfo};
pub use error::{Result, RuntimeError};
pub use event::{Event, EventFlags};
pub use init::{finalize, init, library, soc_name, version};
pub use kernel::{Function, LaunchArgs, Module};
pub use memory::device_buffer::DeviceBuffer;
pub use memory::host_buffer::HostBuffer;
pub use memory::pool::{MemPool, PoolStats};
pub use memory::repr::DeviceRepr;
pub use sim_counters::{KernelCounters, LaunchCounters, LaunchFlag};
pub use stream::{Stream, LAUNCH_BLOCKING_ENV};
pub use transfer_stats::{transfer_stats, TransferStats};

pub use dsnpu_ffi::{LibraryInfo, LibraryKind};
