//! dsnpu-sim: a host simulator of AscendCL and HCCL (ranks in one or many processes).
//!
//! Built as a cdylib (`libdsnpu_sim.so`), it exports the AscendCL C functions that
//! `dsnpu_ffi::sys` binds, with the exact generated signatures (checked at compile time in
//! [`api`]), so the runtime runs the same dynamic-loading code path with or without an NPU. The
//! rlib exposes the same functions to Rust for tests, plus [`TEST_KERNELS_PATH`].
//!
//! # Contract
//!
//! **Validated** — every argument derived from the caller that the simulator can check:
//! NULL pointers; handles (streams, events, contexts, binaries, functions, args, communicators:
//! opaque numbers looked up in tables, so a stale or forged handle is an error code, never a
//! dereference); device ids; sizes and flags; every device or pinned range of a copy, memset,
//! free or collective against the allocation table (never allocated, freed, partially outside an
//! allocation, wrong memory kind for the copy direction); kernel GM accesses that kernels report
//! through `check_gm`; the stream's context against the calling thread's current context;
//! `numBlocks` (1..=65535); the structure of kernel binaries (ELF headers, segment and section
//! ranges inside the given length) and the kernel ABI version they define; the `aclInit`
//! configuration file (a regular JSON file). Failures return the real
//! AscendCL (or HCCL) code and leave a message for `aclGetRecentErrMsg` on the calling thread.
//! No export unwinds: panics become `ACL_ERROR_RT_INTERNAL_ERROR`, poisoned locks are recovered.
//!
//! **Trusted** — what cannot be checked: the extent of host memory the simulator did not
//! allocate (pageable buffers of copies, argument blobs, out-parameters), and the code of
//! structurally valid kernel binaries, which is host code run in-process (as device code is
//! trusted on the NPU): a kernel that writes outside what it checked corrupts memory, as it
//! would on the device.
//!
//! **Not modeled** — timing (copies and kernels run at host speed; event times are host wall
//! clock), device-side caches, memory bandwidth, link bandwidth (HCCL moves bytes through `/dev/shm` at
//! host speed), graph capture, binary load options and launch attributes (accepted, ignored),
//! and reclaiming memory on `aclrtResetDevice` (allocations live until freed or `aclFinalize`).
//! Device memory reads as zeros rather than uninitialized (with the `init` check of `DSNPU_SIM_CHECK`
//! on, allocations of up to 64 MiB are filled with `0xFF` instead). The host budget is an estimate taken
//! once: memory other processes take later is not seen (`DSNPU_SIM_HOST_MEM_BYTES` overrides it). A launch with more blocks than
//! simulated cores runs in waves, as on the hardware; `SyncAll` then fails the launch.
//!
//! # Configuration
//! Read once at `aclInit` from the environment; see [`config`].
//!
//! # Streams, memory, launches
//! * Each stream (and each context's default stream, the NULL stream) runs its tasks in order on
//!   its own worker thread; asynchronous calls return at once. A task's failure is *sticky until
//!   reported*: the next `aclrtSynchronizeStream` of that stream returns it and clears it; copies,
//!   memsets and launches queued behind the fault are skipped until then, event records still
//!   complete. A stream is usable only where its context is current (`ACL_ERROR_RT_STREAM_CONTEXT`).
//! * `aclrtMalloc` charges `round_up(size, 32) + 32` bytes, returns 64-byte aligned memory that
//!   reads as zeros and commits host memory only when written (lazy anonymous mappings); only the
//!   requested `size` bytes are valid. Allocations are bounded by the device capacity and by what
//!   the host can back (estimated at `aclInit`): past either, 207001 at once, never a stall or an
//!   OOM kill; `aclrtGetMemInfo` reports the smaller room as free. Asynchronous copies from or to
//!   pageable host memory complete before the call returns (and report the stream's pending
//!   error, like a synchronize); asynchronous host-to-host copies are rejected.
//!   `aclrtMemcpy`/`aclrtMemset` run at once on the calling thread, unordered with streams;
//!   zero-byte copies and memsets succeed before any check (CANN 8.x). Freed memory returns to
//!   the host as soon as no task that validated it (a copy, a collective, a kernel block through
//!   `check_gm` or its arguments) is still running; unrelated work does not hold it.
//! * Kernel binaries are validated as ELF shared objects before they are loaded (from an
//!   in-memory file, never a temporary file); `aclrtBinaryGetFunction` resolves only functions
//!   the binary itself defines.
//! * A launch copies its arguments and runs its blocks: a kernel that declares `SyncAll` (kernel ABI
//!   4) every block of a wave at once, on one (pooled) thread per block, or, while its blocks are
//!   short and the binary declares them cooperative (`<name>__dsnpu_coop`, as the Ascend C host layer
//!   does), all on the stream worker, each on its own stack, switching in `SyncAll`; any other
//!   kernel's short blocks one after another on the stream worker, the rest as waves. It fails with
//!   `ACL_ERROR_RT_AICORE_EXCEPTION` (`"kernel <name> block <i>: <msg>"`) when a block reports a
//!   fault or `SyncAll` cannot complete (or is called by a kernel that did not declare it). `dsnpu_sim_last_launch_counters`
//!   reports the last completed launch of a stream. The kernel ABI is
//!   `sim/include/dsnpu_sim_kernel.h`, mirrored in [`kernel::abi`].
//!
//! # Reported identity
//! `aclrtGetSocName` returns `"dsnpu-sim (Ascend910B2 model)"`; `aclrtGetVersion` returns the
//! simulator crate's version (0.1.0 now), not a CANN version; `dsnpu_sim_version()` returns
//! `"dsnpu-sim <version>"` so a loader can tell it loaded the simulator. `aclGetDeviceCapability`
//! reports the configured cube (AI Core) and vector cores and the 910B2's 192 MiB of L2.

pub mod api;
pub mod config;
mod context;
mod copy;
mod error;
mod event;
mod guard;
mod handles;
mod hccl;
pub mod kernel;
mod memory;
mod runtime;
mod stream;
mod sync;

pub use api::*;
pub use error::SimError;

/// Absolute path of the test kernel binary built from `sim/testdata/test_kernels.c` (its kernels
/// and their argument layouts are documented in that file).
pub const TEST_KERNELS_PATH: &str = env!("DSNPU_SIM_TEST_KERNELS");
