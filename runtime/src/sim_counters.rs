//! What the simulator counted: per-launch traffic counters and the simulated core counts.
//!
//! These are extensions exported by `libdsnpu_sim.so` next to the AscendCL symbols
//! (`sim/include/dsnpu_sim_kernel.h`), not AscendCL. They are looked up only when the loaded library
//! is the simulator, on each call; with a CANN install every function here returns
//! [`FfiError::Unsupported`] (inside [`RuntimeError::Ffi`]) without touching the library.
//!
//! Validated: the stream's context is bound before the call, the simulator's return code is checked.
//! Trusted: that the simulator fills the structs as its header declares (their layout is asserted
//! below with the header's numbers).

use std::ffi::c_char;
use std::time::Duration;

use dsnpu_ffi::{loader, result, sys, AclError, FfiError, LibraryKind};

use crate::error::{Result, RuntimeError};
use crate::init::library;
use crate::stream::Stream;

const LAST_LAUNCH_SYMBOL: &str = "dsnpu_sim_last_launch_counters";

/// `dsnpu_sim_counters`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawCounters {
    gm_to_ub_bytes: u64,
    ub_to_gm_bytes: u64,
    vector_elem_ops: u64,
    cube_macs: u64,
    ub_high_water: u64,
    model_cycles: u64,
    pipe_busy_q8: u64,
    hbm_read_bytes: u64,
    hbm_write_bytes: u64,
}

/// `dsnpu_sim_launch_counters`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawLaunchCounters {
    launch_seq: u64,
    num_blocks: u32,
    status: i32,
    elapsed_ns: u64,
    warnings: u64,
    totals: RawCounters,
    kernel_name: [c_char; 128],
}

// The header's layout (the simulator asserts the same numbers on its side).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<RawCounters>() == 72);
    assert!(offset_of!(RawCounters, ub_high_water) == 32);
    assert!(offset_of!(RawCounters, hbm_read_bytes) == 56);
    assert!(size_of::<RawLaunchCounters>() == 232);
    assert!(offset_of!(RawLaunchCounters, totals) == 32);
    assert!(offset_of!(RawLaunchCounters, kernel_name) == 104);
};

type LastLaunchFn = unsafe extern "C" fn(sys::aclrtStream, *mut RawLaunchCounters) -> sys::aclError;

/// Traffic and work of one launch, summed over its blocks (the UB high-water mark is the largest
/// block's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Bytes read from global memory into the Unified Buffer (or, for cube work, into L1).
    pub gm_to_ub_bytes: u64,
    /// Bytes written back to global memory.
    pub ub_to_gm_bytes: u64,
    /// Element operations issued by vector instructions.
    pub vector_elem_ops: u64,
    /// Multiply-accumulates issued to the cube unit.
    pub cube_macs: u64,
    /// The largest Unified Buffer use of any block, bytes.
    pub ub_high_water: u64,
    /// HBM bytes read for the reads of `gm_to_ub_bytes` that missed the host layer's L2 model (whole
    /// 32-byte sectors, so it can exceed `gm_to_ub_bytes` for tiny or unaligned reads).
    pub hbm_read_bytes: u64,
    /// HBM bytes written back for the 32-byte sectors the writes of `ub_to_gm_bytes` dirtied (once each).
    pub hbm_write_bytes: u64,
}

impl KernelCounters {
    /// All global-memory traffic, both directions.
    pub fn gm_bytes(&self) -> u64 {
        self.gm_to_ub_bytes.saturating_add(self.ub_to_gm_bytes)
    }

    /// The HBM traffic of the L2 model, both directions.
    pub fn hbm_bytes(&self) -> u64 {
        self.hbm_read_bytes.saturating_add(self.hbm_write_bytes)
    }
}

/// The pipes of the host layer's cycle model, in the order of `pipe_busy_q8`.
pub const MODEL_PIPES: [&str; 7] = ["S", "V", "M", "MTE1", "MTE2", "MTE3", "FIX"];

/// What the host kernel layer's cycle model says about a launch
/// (`kernels/include/dsnpu_ascendc/dsnpu_host/cost.h`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelCounters {
    /// Cycles of the busiest core (its blocks one after another), without launch latency.
    pub cycles: u64,
    /// Busy fraction of each pipe of the longest block, in [`MODEL_PIPES`] order.
    pub pipe_busy: [f64; 7],
}

/// The last completed launch of a stream, as the simulator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchCounters {
    /// Launches completed on the stream so far (1-based): which launch this is.
    pub launch_seq: u64,
    /// The kernel's name (truncated to 127 bytes by the simulator).
    pub kernel: String,
    pub num_blocks: u32,
    /// The launch's `aclError`: 0, or the failure (`ACL_ERROR_RT_AICORE_EXCEPTION` for a fault).
    pub status: i32,
    /// Host wall time from the first block starting to the last returning (simulator time, not a
    /// device estimate).
    pub elapsed: Duration,
    /// Non-fatal diagnostics of the launch (unaligned `DataCopy` lengths, ...).
    pub warnings: u64,
    pub totals: KernelCounters,
}

/// Whether the process's AscendCL library is the simulator.
pub fn is_simulator() -> Result<bool> {
    Ok(library()?.kind == LibraryKind::Simulator)
}

/// Looks up a simulator extension, or `Unsupported` when a CANN install is loaded.
///
/// # Safety
/// `T` must be the function-pointer type of `name`'s signature in the simulator's header.
pub(crate) unsafe fn extension<T: Copy>(name: &'static str) -> Result<T> {
    let info = library()?;
    if info.kind != LibraryKind::Simulator {
        return Err(FfiError::Unsupported {
            symbol: name,
            library: info.path.clone(),
        }
        .into());
    }
    let api = loader::api()?;
    // SAFETY: forwarded to the caller.
    Ok(unsafe { api.extension::<T>(name)? })
}

fn check(function: &'static str, code: sys::aclError) -> Result<()> {
    if code == sys::ACL_SUCCESS {
        Ok(())
    } else {
        Err(RuntimeError::Ffi(
            AclError::new(function, code, result::recent_err_msg()).into(),
        ))
    }
}

/// The cycle model of the last launch that completed on `stream` (as [`last_launch_counters`]).
pub fn last_launch_model(stream: &Stream) -> Result<Option<ModelCounters>> {
    let Some(raw) = raw_last_launch(stream)? else {
        return Ok(None);
    };
    let mut pipe_busy = [0.0; 7];
    for (i, f) in pipe_busy.iter_mut().enumerate() {
        *f = ((raw.totals.pipe_busy_q8 >> (8 * i)) & 0xFF) as f64 / 255.0;
    }
    Ok(Some(ModelCounters {
        cycles: raw.totals.model_cycles,
        pipe_busy,
    }))
}

fn raw_last_launch(stream: &Stream) -> Result<Option<RawLaunchCounters>> {
    // SAFETY: the header declares `int dsnpu_sim_last_launch_counters(void *, dsnpu_sim_launch_counters *)`.
    let f = unsafe { extension::<LastLaunchFn>(LAST_LAUNCH_SYMBOL)? };
    let inner = stream.inner();
    inner.core().bind()?;
    let mut raw = RawLaunchCounters {
        launch_seq: 0,
        num_blocks: 0,
        status: 0,
        elapsed_ns: 0,
        warnings: 0,
        totals: RawCounters::default(),
        kernel_name: [0; 128],
    };
    // SAFETY: the stream handle is live and belongs to the context just bound; `raw` is a valid
    // out-parameter of the declared type for the duration of the call.
    check(LAST_LAUNCH_SYMBOL, unsafe { f(inner.handle(), &mut raw) })?;
    Ok((raw.launch_seq != 0).then_some(raw))
}

/// The counters of the last launch that **completed** on `stream`, or `None` if none has.
///
/// This does not wait: synchronize the stream first to read a given launch (`launch_seq` tells
/// which one was read). A failed launch is reported too, with its status.
pub fn last_launch_counters(stream: &Stream) -> Result<Option<LaunchCounters>> {
    let Some(raw) = raw_last_launch(stream)? else {
        return Ok(None);
    };
    let name: Vec<u8> = raw
        .kernel_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let t = raw.totals;
    Ok(Some(LaunchCounters {
        launch_seq: raw.launch_seq,
        kernel: String::from_utf8_lossy(&name).into_owned(),
        num_blocks: raw.num_blocks,
        status: raw.status,
        elapsed: Duration::from_nanos(raw.elapsed_ns),
        warnings: raw.warnings,
        totals: KernelCounters {
            gm_to_ub_bytes: t.gm_to_ub_bytes,
            ub_to_gm_bytes: t.ub_to_gm_bytes,
            vector_elem_ops: t.vector_elem_ops,
            cube_macs: t.cube_macs,
            ub_high_water: t.ub_high_water,
            hbm_read_bytes: t.hbm_read_bytes,
            hbm_write_bytes: t.hbm_write_bytes,
        },
    }))
}

/// What is wrong with a launch on a launch-blocking stream, by the simulator's report read right
/// after it (inside [`RuntimeError::LaunchFlagged`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchFlag {
    #[error("the simulator recorded no completed launch on the stream")]
    Missing,
    /// The stream's last completed launch is another kernel's: the launch turn was not kept.
    #[error("the stream's last completed launch is `{0}`")]
    OtherKernel(String),
    #[error("the launch failed with status {0}")]
    Status(i32),
    #[error("the sanitizer reported {0} warning(s) (printed on stderr)")]
    Warnings(u64),
}

/// The simulator keeps this many bytes of a kernel's name.
const SIM_NAME_BYTES: usize = 127;

/// What is wrong with `report`, the stream's last completed launch read right after `kernel` was
/// launched and waited for, if anything.
pub(crate) fn judge(kernel: &str, report: Option<&LaunchCounters>) -> Option<LaunchFlag> {
    let Some(c) = report else {
        return Some(LaunchFlag::Missing);
    };
    let kept = &kernel.as_bytes()[..kernel.len().min(SIM_NAME_BYTES)];
    if c.kernel.as_bytes() != kept {
        Some(LaunchFlag::OtherKernel(c.kernel.clone()))
    } else if c.status != 0 {
        Some(LaunchFlag::Status(c.status))
    } else if c.warnings != 0 {
        Some(LaunchFlag::Warnings(c.warnings))
    } else {
        None
    }
}

/// On the simulator, the report of the launch of `kernel` that just completed on `stream` must be
/// clean; elsewhere there is no report to read.
pub(crate) fn check_own_launch(stream: &Stream, kernel: &str) -> Result<()> {
    if !is_simulator()? {
        return Ok(());
    }
    match judge(kernel, last_launch_counters(stream)?.as_ref()) {
        None => Ok(()),
        Some(flag) => Err(RuntimeError::LaunchFlagged(flag)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kernel: &str, status: i32, warnings: u64) -> LaunchCounters {
        LaunchCounters {
            launch_seq: 1,
            kernel: kernel.to_string(),
            num_blocks: 1,
            status,
            elapsed: Duration::ZERO,
            warnings,
            totals: KernelCounters::default(),
        }
    }

    #[test]
    fn a_launch_is_judged_by_its_own_report() {
        assert_eq!(judge("argmax_f32", Some(&report("argmax_f32", 0, 0))), None);
        assert_eq!(judge("argmax_f32", None), Some(LaunchFlag::Missing));
        assert_eq!(
            judge("argmax_f32", Some(&report("linear_f32", 0, 0))),
            Some(LaunchFlag::OtherKernel("linear_f32".into()))
        );
        assert_eq!(
            judge("argmax_f32", Some(&report("argmax_f32", 507015, 0))),
            Some(LaunchFlag::Status(507015))
        );
        assert_eq!(
            judge("argmax_f32", Some(&report("argmax_f32", 0, 2))),
            Some(LaunchFlag::Warnings(2))
        );
        // The simulator keeps 127 bytes of a name.
        let long = "k".repeat(200);
        assert_eq!(judge(&long, Some(&report(&long[..127], 0, 0))), None);
        assert_eq!(
            RuntimeError::LaunchFlagged(LaunchFlag::Status(507015)).acl_code(),
            Some(507015)
        );
    }

    #[test]
    fn gm_bytes_add_both_directions() {
        let c = KernelCounters {
            gm_to_ub_bytes: 192,
            ub_to_gm_bytes: 128,
            ..Default::default()
        };
        assert_eq!(c.gm_bytes(), 320);
        let h = KernelCounters {
            hbm_read_bytes: 64,
            hbm_write_bytes: 32,
            ..c
        };
        assert_eq!(h.hbm_bytes(), 96);
        let big = KernelCounters {
            gm_to_ub_bytes: u64::MAX,
            ub_to_gm_bytes: 1,
            ..Default::default()
        };
        assert_eq!(big.gm_bytes(), u64::MAX);
    }
}
