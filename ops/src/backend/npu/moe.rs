//! [`MoeOps`] on the device: gating, dispatch (plain and int8), grouped matmul, expert FFN and combine
//! each run their kernel ([`dsnpu_kernels::launch`]); [`MoeOps::moe_layer`] runs the whole routed-expert
//! layer on the device without returning to the host between stages (see [`layer`]).
//!
//! Validation is the references' own: each method first calls the `check_*` function its reference
//! calls (`crate::moe::{gating, routing, grouped, finalize}`), before anything is uploaded, so the same
//! inputs are rejected with the same errors, and the kernels get only what they trust (ids in range, group lists that add up, row indices within `[-1, R)`). Shapes with nothing
//! to launch are answered on the host: no tokens or no pairs (empty outputs), no rows (empty or zero
//! outputs), an empty reduction (zeros), and the two degenerate cases the kernels do not take, a
//! dispatch of zero-width rows and a combine of zero pairs, by the reference itself (no row is moved
//! or multiplied there). Shapes past the kernels' limits (gating over more than 512 experts or top-k
//! above 16, sizes past their 32-bit indices) are [`OpsError::Unsupported`](crate::OpsError).
//!
//! **Checked launches.** With a launch-blocking stream ([`dsnpu_runtime::Stream::set_launch_blocking`]
//! or `DSNPU_LAUNCH_BLOCKING=1`, the debugging mode) every launch here is also checked on the
//! simulator against its counters: the completed launch must be this kernel, without a fault and
//! without a single warning of the host Ascend C layer's sanitizer; otherwise the operator fails with
//! [`OpsError::Backend`](crate::OpsError). Without it launches stay asynchronous.

mod layer;

use std::ops::Range;

use dsnpu_kernels::launch::{
    self, CombineShape, FfnShape, GroupList, GroupedShape, Launched, RoutingShape,
};
use dsnpu_kernels::{GatingParams, KernelError, MoeList, MoeScore};
use dsnpu_runtime::{sim_counters, DeviceBuffer, DeviceRepr, LaunchCounters};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayView3};

use super::{by_dtype, DevElem, Npu};
use crate::backend::MoeOps;
use crate::moe::{
    self, finalize, gating, grouped, routing, ExpertTokensMode, GatingConfig, GroupListType,
    InitRouting, InitRoutingQuant, MoeLayerParams, ScoreFunc,
};
use crate::{Float, Result};

fn array2<T>(rows: usize, cols: usize, v: Vec<T>) -> Array2<T> {
    Array2::from_shape_vec((rows, cols), v).expect("the kernel output holds rows x cols elements")
}

/// The kernels' routing parameters for `cfg`.
fn gating_params(cfg: &GatingConfig, has_bias: bool) -> GatingParams {
    GatingParams {
        top_k: cfg.top_k as u64,
        n_group: cfg.n_group as u64,
        topk_group: cfg.topk_group as u64,
        score: match cfg.score {
            ScoreFunc::Softmax => MoeScore::Softmax,
            ScoreFunc::Sigmoid => MoeScore::Sigmoid,
        },
        has_bias,
        normalize: cfg.normalize,
        routed_scaling_factor: cfg.routed_scaling_factor,
    }
}

/// What is wrong with the stream's last completed launch `c` when `symbol` was just launched and
/// waited for, if anything: another kernel (or none), a failure status, or sanitizer warnings.
fn judge(symbol: &str, c: Option<&LaunchCounters>) -> Option<String> {
    match c {
        None => Some("no completed launch on the stream".to_string()),
        Some(c) if c.kernel != symbol => Some(format!("the last completed launch is {}", c.kernel)),
        Some(c) if c.status != 0 => Some(format!("the launch failed with status {}", c.status)),
        Some(c) if c.warnings != 0 => Some(format!(
            "the sanitizer reported {} warning(s) (printed on stderr)",
            c.warnings
        )),
        Some(_) => None,
    }
}

fn list_kind(t: GroupListType) -> MoeList {
    match t {
        GroupListType::Counts => MoeList::Count,
        GroupListType::Cumsum => MoeList::Cumsum,
    }
}

fn tokens_mode(m: ExpertTokensMode) -> MoeList {
    match m {
        ExpertTokensMode::Count => MoeList::Count,
        ExpertTokensMode::Cumsum => MoeList::Cumsum,
    }
}

/// Rows a dispatch wrote, from its expert token list.
fn dispatched_rows(list: &[i64], mode: ExpertTokensMode) -> usize {
    let rows = match mode {
        ExpertTokensMode::Count => list.iter().sum::<i64>(),
        ExpertTokensMode::Cumsum => list.last().copied().unwrap_or(0),
    };
    rows.max(0) as usize
}

impl Npu {
    /// A launcher's result; with a launch-blocking stream, also the counter check (module docs).
    pub(super) fn launched<L>(
        &self,
        op: &'static str,
        r: std::result::Result<Launched<L>, KernelError>,
    ) -> Result<Launched<L>> {
        let l = r.map_err(|e| self.kernel_error(op, e))?;
        if self.stream.launch_blocking() {
            self.check_launch(op, l.symbol)?;
        }
        Ok(l)
    }

    /// A launch's `[rows, cols]` output `buf` on the host, once the launch is checked and the stream
    /// has finished.
    fn output<T: Float, E: DevElem, L>(
        &self,
        op: &'static str,
        r: std::result::Result<Launched<L>, KernelError>,
        buf: &DeviceBuffer<E>,
        (rows, cols): (usize, usize),
    ) -> Result<Array2<T>> {
        self.launched(op, r)?;
        self.finish(op)?;
        Ok(array2(rows, cols, self.download::<T, E>(op, buf)?))
    }

    /// The stream's last completed launch must be `symbol`'s, clean: no fault, no warning.
    fn check_launch(&self, op: &'static str, symbol: &'static str) -> Result<()> {
        if !sim_counters::is_simulator().unwrap_or(false) {
            return Ok(());
        }
        self.finish(op)?;
        let c = sim_counters::last_launch_counters(&self.stream).map_err(|e| self.fail(op, e))?;
        match judge(symbol, c.as_ref()) {
            None => Ok(()),
            Some(message) => Err(self.fail(
                op,
                KernelError::Device {
                    kernel: symbol.to_string(),
                    code: c.filter(|c| c.status != 0).map(|c| c.status),
                    message,
                    source: None,
                },
            )),
        }
    }

    fn gating_as<T: Float, E: DevElem>(
        &self,
        logits: ArrayView2<T>,
        bias: Option<ArrayView1<f32>>,
        cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        const OP: &str = "moe_gating_topk";
        let (tokens, experts) = logits.dim();
        let k = cfg.top_k;
        let ld = self.upload::<T, E>(OP, logits.iter())?;
        let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());
        let bd = bias.map(|b| self.upload_raw(OP, &b)).transpose()?;
        let mut ids = self.alloc::<i32>(OP, tokens * k)?;
        let mut w = self.alloc::<f32>(OP, tokens * k)?;
        let p = gating_params(cfg, bd.is_some());
        let r = launch::moe_gating_topk(
            &self.lib,
            &self.stream,
            &ld,
            bd.as_ref(),
            &mut ids,
            &mut w,
            tokens,
            experts,
            &p,
        );
        self.launched(OP, r)?;
        self.finish(OP)?;
        let ids = ids.to_vec().map_err(|e| self.fail(OP, e))?;
        let w = w.to_vec().map_err(|e| self.fail(OP, e))?;
        Ok((array2(tokens, k, ids), array2(tokens, k, w)))
    }

    /// Uploads a dispatch's inputs and allocates its outputs (`X` the row type: the element type or
    /// i8 codes); `launch_it` queues the kernel on them.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_as<T: Float, E: DevElem, X: DeviceRepr>(
        &self,
        op: &'static str,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Range<usize>,
        mode: ExpertTokensMode,
        quant: bool,
        launch_it: impl FnOnce(
            &DeviceBuffer<E>,
            &DeviceBuffer<i32>,
            &mut Dispatch<X>,
            &RoutingShape,
        ) -> Result<()>,
    ) -> Result<HostDispatch<X>> {
        let (tokens, hidden) = x.dim();
        let top_k = ids.ncols();
        let pairs = tokens * top_k;
        let xd = self.upload::<T, E>(op, x.iter())?;
        let flat: Vec<i32> = ids.iter().copied().collect();
        let idd = self.upload_raw(op, &flat)?;
        let shape = RoutingShape {
            tokens,
            hidden,
            top_k,
            experts: num_experts,
            active: Some(active),
            mode: tokens_mode(mode),
        };
        let mut d = Dispatch {
            expanded_x: self.alloc::<X>(op, pairs * hidden)?,
            scales: self.alloc::<f32>(op, if quant { pairs } else { 0 })?,
            expanded_row_idx: self.alloc::<i32>(op, pairs)?,
            expert_tokens: self.alloc::<i64>(op, num_experts)?,
        };
        launch_it(&xd, &idd, &mut d, &shape)?;
        self.finish(op)?;
        let get = |e| self.fail(op, e);
        let expert_tokens: Vec<i64> = d.expert_tokens.to_vec().map_err(get)?;
        // At most every pair (the kernel's own count; bounded so a wrong one cannot mis-shape).
        let rows = dispatched_rows(&expert_tokens, mode).min(pairs);
        let mut expanded_x = d.expanded_x.to_vec().map_err(get)?;
        expanded_x.truncate(rows * hidden);
        Ok(HostDispatch {
            expanded_x: array2(rows, hidden, expanded_x),
            scales: d.scales,
            rows,
            expanded_row_idx: Array1::from(d.expanded_row_idx.to_vec().map_err(get)?),
            expert_tokens: Array1::from(expert_tokens),
        })
    }

    fn init_routing_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Range<usize>,
        mode: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        const OP: &str = "moe_init_routing";
        let d = self.dispatch_as::<T, E, E>(
            OP,
            x,
            ids,
            num_experts,
            active,
            mode,
            false,
            |xd, idd, d, shape| {
                let r = launch::moe_init_routing(
                    &self.lib,
                    &self.stream,
                    xd,
                    idd,
                    &mut d.expanded_x,
                    &mut d.expanded_row_idx,
                    &mut d.expert_tokens,
                    shape,
                );
                self.launched(OP, r).map(drop)
            },
        )?;
        Ok(InitRouting {
            expanded_x: d.expanded_x.mapv(|v| T::from_f32(v.to_f32())),
            expanded_row_idx: d.expanded_row_idx,
            expert_tokens: d.expert_tokens,
        })
    }

    fn init_routing_quant_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Range<usize>,
        mode: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        const OP: &str = "moe_init_routing_quant";
        let d = self.dispatch_as::<T, E, i8>(
            OP,
            x,
            ids,
            num_experts,
            active,
            mode,
            true,
            |xd, idd, d, shape| {
                let r = launch::moe_init_routing_quant(
                    &self.lib,
                    &self.stream,
                    xd,
                    idd,
                    &mut d.expanded_x,
                    &mut d.scales,
                    &mut d.expanded_row_idx,
                    &mut d.expert_tokens,
                    shape,
                );
                self.launched(OP, r).map(drop)
            },
        )?;
        let mut scales = d.scales.to_vec().map_err(|e| self.fail(OP, e))?;
        scales.truncate(d.rows);
        Ok(InitRoutingQuant {
            expanded_x: d.expanded_x,
            scales: Array1::from(scales),
            expanded_row_idx: d.expanded_row_idx,
            expert_tokens: d.expert_tokens,
        })
    }

    fn grouped_matmul_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        const OP: &str = "grouped_matmul";
        let (rows, k) = x.dim();
        let (groups, n, _) = w.dim();
        let xd = self.upload::<T, E>(OP, x.iter())?;
        let wd = self.upload::<T, E>(OP, w.iter())?;
        let ld = self.upload_raw(OP, &group_list.to_vec())?;
        let mut yd = self.alloc::<E>(OP, rows * n)?;
        let r = launch::grouped_matmul(
            &self.lib,
            &self.stream,
            &xd,
            &wd,
            GroupList::all(&ld, list_kind(list_type)),
            &mut yd,
            GroupedShape { rows, groups, n, k },
        );
        self.output(OP, r, &yd, (rows, n))
    }

    #[allow(clippy::too_many_arguments)]
    fn expert_ffn_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        w_gate: ArrayView3<T>,
        w_up: ArrayView3<T>,
        w_down: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        const OP: &str = "expert_ffn";
        let (rows, hidden) = x.dim();
        let (groups, inter, _) = w_gate.dim();
        let xd = self.upload::<T, E>(OP, x.iter())?;
        let gd = self.upload::<T, E>(OP, w_gate.iter())?;
        let ud = self.upload::<T, E>(OP, w_up.iter())?;
        let dd = self.upload::<T, E>(OP, w_down.iter())?;
        let ld = self.upload_raw(OP, &group_list.to_vec())?;
        let mut yd = self.alloc::<E>(OP, rows * hidden)?;
        let r = launch::expert_ffn(
            &self.lib,
            &self.stream,
            &xd,
            &gd,
            &ud,
            &dd,
            GroupList::all(&ld, list_kind(list_type)),
            &mut yd,
            FfnShape {
                rows,
                groups,
                max_group_rows: rows,
                hidden,
                inter,
            },
        );
        self.output(OP, r, &yd, (rows, hidden))
    }

    fn finalize_as<T: Float, E: DevElem>(
        &self,
        y: ArrayView2<T>,
        expanded_row_idx: ArrayView1<i32>,
        weights: ArrayView2<f32>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        const OP: &str = "moe_finalize_routing";
        let (rows, hidden) = y.dim();
        let (tokens, top_k) = weights.dim();
        let yd = self.upload::<T, E>(OP, y.iter())?;
        let idx: Vec<i32> = expanded_row_idx.to_vec();
        let id = self.upload_raw(OP, &idx)?;
        let w: Vec<f32> = weights.iter().copied().collect();
        let wd = self.upload_raw(OP, &w)?;
        let sd = shared
            .map(|s| self.upload::<T, E>(OP, s.iter()))
            .transpose()?;
        let rd = residual
            .map(|r| self.upload::<T, E>(OP, r.iter()))
            .transpose()?;
        let mut od = self.alloc::<E>(OP, tokens * hidden)?;
        let r = launch::moe_finalize_routing(
            &self.lib,
            &self.stream,
            &yd,
            &id,
            &wd,
            sd.as_ref(),
            rd.as_ref(),
            &mut od,
            CombineShape {
                tokens,
                hidden,
                top_k,
                rows,
            },
        );
        self.output(OP, r, &od, (tokens, hidden))
    }
}

/// A dispatch's outputs on the device (`scales` is used by the int8 kernel only).
struct Dispatch<X: DeviceRepr> {
    expanded_x: DeviceBuffer<X>,
    scales: DeviceBuffer<f32>,
    expanded_row_idx: DeviceBuffer<i32>,
    expert_tokens: DeviceBuffer<i64>,
}

/// A dispatch's outputs on the host: the `rows` written rows, the scales still on the device.
struct HostDispatch<X> {
    expanded_x: Array2<X>,
    scales: DeviceBuffer<f32>,
    rows: usize,
    expanded_row_idx: Array1<i32>,
    expert_tokens: Array1<i64>,
}

impl MoeOps for Npu {
    fn moe_gating_topk<T: Float>(
        &self,
        logits: ArrayView2<T>,
        bias: Option<ArrayView1<f32>>,
        cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        const OP: &str = "moe_gating_topk";
        gating::check_gating(OP, &logits, bias.as_ref(), cfg)?;
        if logits.nrows() == 0 {
            return Ok((Array2::zeros((0, cfg.top_k)), Array2::zeros((0, cfg.top_k))));
        }
        by_dtype!(self, OP, T, gating_as(logits, bias, cfg))
    }

    fn moe_init_routing<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        const OP: &str = "moe_init_routing";
        let active = routing::check_routing(OP, x.nrows(), &ids, num_experts, active)?;
        if ids.is_empty() || x.ncols() == 0 {
            // Nothing to copy: the plan alone, as the reference makes it.
            return moe::moe_init_routing(x, ids, num_experts, Some(active), mode);
        }
        by_dtype!(
            self,
            OP,
            T,
            init_routing_as(x, ids, num_experts, active, mode)
        )
    }

    fn moe_init_routing_quant<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        const OP: &str = "moe_init_routing_quant";
        let active = routing::check_routing(OP, x.nrows(), &ids, num_experts, active)?;
        if ids.is_empty() || x.ncols() == 0 {
            return moe::moe_init_routing_quant(x, ids, num_experts, Some(active), mode);
        }
        by_dtype!(
            self,
            OP,
            T,
            init_routing_quant_as(x, ids, num_experts, active, mode)
        )
    }

    fn grouped_matmul<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        const OP: &str = "grouped_matmul";
        grouped::check_grouped_matmul(&x, &w, group_list, list_type)?;
        let n = w.dim().1;
        if x.nrows() == 0 || n == 0 || x.ncols() == 0 {
            // No rows, no columns, or an empty reduction (zeros).
            return Ok(Array2::default((x.nrows(), n)));
        }
        by_dtype!(self, OP, T, grouped_matmul_as(x, w, group_list, list_type))
    }

    fn expert_ffn<T: Float>(
        &self,
        x: ArrayView2<T>,
        w_gate: ArrayView3<T>,
        w_up: ArrayView3<T>,
        w_down: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        const OP: &str = "expert_ffn";
        grouped::check_expert_ffn(&x, &w_gate, &w_up, &w_down, group_list, list_type)?;
        let (_, inter, hidden) = w_gate.dim();
        if x.nrows() == 0 || hidden == 0 || inter == 0 {
            // No rows, no columns, or h is empty and the down product sums nothing (zeros).
            return Ok(Array2::default((x.nrows(), hidden)));
        }
        by_dtype!(
            self,
            OP,
            T,
            expert_ffn_as(x, w_gate, w_up, w_down, group_list, list_type)
        )
    }

    fn moe_finalize_routing<T: Float>(
        &self,
        y: ArrayView2<T>,
        expanded_row_idx: ArrayView1<i32>,
        weights: ArrayView2<f32>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        const OP: &str = "moe_finalize_routing";
        let (rows, hidden) = y.dim();
        finalize::check_finalize(
            rows,
            hidden,
            &expanded_row_idx,
            &weights,
            shared.as_ref(),
            residual.as_ref(),
        )?;
        if weights.is_empty() || hidden == 0 {
            // No token, no column or no pair: only the extras' sum, as the reference makes it.
            return moe::moe_finalize_routing(y, expanded_row_idx, weights, shared, residual);
        }
        by_dtype!(
            self,
            OP,
            T,
            finalize_as(y, expanded_row_idx, weights, shared, residual)
        )
    }

    fn moe_layer<T: Float>(
        &self,
        x: ArrayView2<T>,
        params: &MoeLayerParams<T>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        self.moe_layer_on_device(x, params, shared, residual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsnpu_runtime::KernelCounters;
    use std::time::Duration;

    fn counters(kernel: &str, status: i32, warnings: u64) -> LaunchCounters {
        LaunchCounters {
            launch_seq: 3,
            kernel: kernel.to_string(),
            num_blocks: 4,
            status,
            elapsed: Duration::from_micros(5),
            warnings,
            totals: KernelCounters::default(),
        }
    }

    #[test]
    fn only_a_clean_launch_of_the_same_kernel_passes() {
        let k = "moe_init_routing_bf16";
        assert_eq!(judge(k, Some(&counters(k, 0, 0))), None);
        assert_eq!(
            judge(k, Some(&counters(k, 0, 2))).as_deref(),
            Some("the sanitizer reported 2 warning(s) (printed on stderr)")
        );
        assert_eq!(
            judge(k, Some(&counters(k, 507015, 0))).as_deref(),
            Some("the launch failed with status 507015")
        );
        assert_eq!(
            judge(k, Some(&counters("linear_f32", 0, 0))).as_deref(),
            Some("the last completed launch is linear_f32")
        );
        assert!(judge(k, None).is_some());
    }

    #[test]
    fn dispatched_rows_come_from_either_list_form() {
        assert_eq!(dispatched_rows(&[2, 0, 3], ExpertTokensMode::Count), 5);
        assert_eq!(dispatched_rows(&[2, 2, 5], ExpertTokensMode::Cumsum), 5);
        assert_eq!(dispatched_rows(&[], ExpertTokensMode::Cumsum), 0);
    }
}
