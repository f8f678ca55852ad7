//! What one benchmarked case yields on each kind of device.
//!
//! - Simulator ([`modelled`]): one launch, then the simulator's counters of it (GM bytes, cube
//!   multiply-adds, vector element operations) and its pipe model, turned into the bench-report case
//!   (`dsnpu_kernels::bench_report::BenchCase`): `model_us` is the pipe model's time
//!   (`dsnpu_kernels::cost_model`), `roof_us` the operator's roofline (`dsnpu_kernels::roofline`).
//!   Nothing here is a measured time: the simulator's wall time says nothing about an NPU.
//! - Real device ([`measured`]): warm-up launches, then repeats each bracketed by timeline events on
//!   the stream; the median of the events' elapsed times, and the throughput the operator's minimal
//!   bytes and multiply-adds reach in it. A device has no counters, so the traffic columns are unknown.
//!
//! Trusted: the case's minimal bytes and multiply-adds (see `super::cases`). Checked: that the launch
//! completed without a fault and that the counters are of the case's kernel.

use dsnpu_kernels::bench_report::BenchCase;
use dsnpu_kernels::cost_model::PipeModel;
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_runtime::sim_counters;
use dsnpu_runtime::{Device, EventFlags, RuntimeError, Stream};

use super::cases::{CaseError, KernelCase};

/// Why a case yielded no figures.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error("{op}: the simulator recorded no completed launch")]
    NoCounters { op: &'static str },
    #[error("{op}: the last launch was {found} (status {status}), not {expected}")]
    WrongLaunch {
        op: &'static str,
        expected: &'static str,
        found: String,
        status: i32,
    },
}

impl From<RuntimeError> for MeasureError {
    fn from(e: RuntimeError) -> Self {
        MeasureError::Case(e.into())
    }
}

impl From<dsnpu_kernels::KernelError> for MeasureError {
    fn from(e: dsnpu_kernels::KernelError) -> Self {
        MeasureError::Case(e.into())
    }
}

/// The figures of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Figures {
    /// Simulator counters and modelled times.
    Modelled(BenchCase),
    /// Event-timed launches on a device.
    Measured(Timed),
}

/// A case timed on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub kernel: String,
    pub shape: String,
    pub dtype: String,
    pub minimal_bytes: u64,
    pub minimal_macs: u64,
    /// Median of the repeats, microseconds.
    pub wall_us: f64,
    pub roof_us: f64,
}

impl Timed {
    /// Minimal bytes over the median time, GB/s.
    pub fn gb_per_s(&self) -> f64 {
        self.minimal_bytes as f64 / self.wall_us * 1e-3
    }

    /// Necessary FLOPs (2 per multiply-add) over the median time, TFLOPS.
    pub fn tflops(&self) -> f64 {
        2.0 * self.minimal_macs as f64 / self.wall_us * 1e-6
    }
}

fn roof_us(case: &KernelCase) -> f64 {
    ASCEND_910B2.roofline(case.minimal_bytes, case.minimal_macs) * 1e6
}

/// One launch on the simulator and its counters as a bench-report case.
pub fn modelled(case: &mut KernelCase, stream: &Stream) -> Result<BenchCase, MeasureError> {
    let symbol = case.launch()?;
    stream.synchronize()?;
    let c = sim_counters::last_launch_counters(stream)?
        .ok_or(MeasureError::NoCounters { op: case.op })?;
    if c.kernel != symbol || c.status != 0 {
        return Err(MeasureError::WrongLaunch {
            op: case.op,
            expected: symbol,
            found: c.kernel,
            status: c.status,
        });
    }
    let m =
        sim_counters::last_launch_model(stream)?.ok_or(MeasureError::NoCounters { op: case.op })?;
    let pipes = PipeModel {
        cycles: m.cycles,
        pipe_busy: m.pipe_busy,
    };
    Ok(BenchCase {
        kernel: c.kernel,
        shape: case.shape.clone(),
        dtype: case.dtype.into(),
        gm_read_bytes: c.totals.gm_to_ub_bytes,
        gm_write_bytes: c.totals.ub_to_gm_bytes,
        minimal_bytes: case.minimal_bytes,
        cube_macs: c.totals.cube_macs,
        vector_ops: c.totals.vector_elem_ops,
        model_us: pipes.model_us(),
        roof_us: roof_us(case),
        bound: pipes.bound().into(),
        hbm_read_bytes: Some(c.totals.hbm_read_bytes),
        hbm_write_bytes: Some(c.totals.hbm_write_bytes),
    })
}

/// `warmup` launches, then `repeats` launches each timed by a pair of timeline events; the median.
pub fn measured(
    case: &mut KernelCase,
    device: &Device,
    stream: &Stream,
    warmup: usize,
    repeats: usize,
) -> Result<Timed, MeasureError> {
    let mut symbol = "";
    for _ in 0..warmup {
        symbol = case.launch()?;
    }
    stream.synchronize()?;
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let start = device.new_event(EventFlags::TIME_LINE)?;
        let end = device.new_event(EventFlags::TIME_LINE)?;
        start.record(stream)?;
        symbol = case.launch()?;
        end.record(stream)?;
        end.synchronize()?;
        times.push(f64::from(start.elapsed_ms(&end)?) * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(Timed {
        kernel: symbol.into(),
        shape: case.shape.clone(),
        dtype: case.dtype.into(),
        minimal_bytes: case.minimal_bytes,
        minimal_macs: case.minimal_macs,
        wall_us: times[times.len() / 2],
        roof_us: roof_us(case),
    })
}
