//! The whole routed-expert layer on the device (dsnpu-ops' `moe_layer` is the contract):
//!
//! ```text
//! x ─┬─ (f32) ── linear_f32 ── logits f32 [T,E] ── moe_gating_topk_f32 ── ids [T,K], weights [T,K]
//!    └─ (t) ──────────────── moe_init_routing_t (active = local) ── expanded_x [T·K,H], row idx, counts [E]
//! expanded_x, counts[local] ── expert_ffn_t ── y [T·K,H] ── moe_finalize_routing_t (+ shared, residual) ── out
//! ```
//!
//! Every input is uploaded before the first launch, every intermediate stays in device memory, and the
//! stream is synchronized once, when `out` is read back: no stage waits for the host (unless the
//! stream is launch-blocking, the checked debugging mode of the parent module).
//! - **Router** in f32 like the reference (`x` and the router as f32, f32 accumulation in the cube),
//!   so the logits are not rounded to t before gating. The reference rejects non-finite logits; they
//!   are never read back here, so `check_router_logits` decides on the host, from the inputs, with
//!   the reference's error. (Only a product within rounding of `f32::MAX` can be finite on the host
//!   and overflow in the cube's summation order; routing is then unspecified.)
//! - **Rows are not counted on the host**: the dispatch writes the local experts' rows first, and the
//!   FFN and combine are sized for the room of every pair (`T·K` rows). The FFN takes its groups from
//!   the dispatch's per-expert counts on the device, the local window of them
//!   ([`GroupList::first`]), and computes only those rows; the combine reads only rows that indices
//!   name. Rows past the dispatched ones are never read.
//! - With no local expert (an empty range) there is nothing to run between dispatch and combine; with
//!   an empty intermediate size the expert outputs are zeros.

use dsnpu_kernels::launch::{self, CombineShape, FfnShape, GroupList, RoutingShape};
use dsnpu_kernels::MoeList;
use dsnpu_runtime::DeviceBuffer;
use ndarray::{Array2, ArrayView2};

use super::super::{by_dtype, DevElem, Npu};
use super::{array2, gating_params};
use crate::moe::{finalize, gating, grouped, router_logits, MoeLayerParams};
use crate::{Float, Result};

const OP: &str = "moe_layer";

impl Npu {
    /// Validates like the reference, answers the empty cases on the host, then runs on the device.
    pub(super) fn moe_layer_on_device<T: Float>(
        &self,
        x: ArrayView2<T>,
        params: &MoeLayerParams<T>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        let (tokens, hidden) = x.dim();
        params.validate(OP, hidden)?;
        // In the reference's stage order, with its stages' names.
        gating::check_gating_config(
            "moe_gating_topk",
            params.num_experts(),
            params.bias.as_ref(),
            &params.gating,
        )?;
        check_router_logits(&x, &params.router)?;
        grouped::check_ffn_weights(hidden, &params.w_gate, &params.w_up, &params.w_down)?;
        finalize::check_extras(tokens, hidden, shared.as_ref(), residual.as_ref())?;
        if tokens == 0 || hidden == 0 {
            return Ok(Array2::default((tokens, hidden)));
        }
        by_dtype!(self, OP, T, layer_as(x, params, shared, residual))
    }

    fn layer_as<T: Float, E: DevElem>(
        &self,
        x: ArrayView2<T>,
        params: &MoeLayerParams<T>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        let (tokens, hidden) = x.dim();
        let experts = params.num_experts();
        let top_k = params.gating.top_k;
        let pairs = tokens * top_k;
        let local = params.local_range();
        let (n_local, inter, _) = params.w_gate.dim();
        let (lib, s) = (&*self.lib, &self.stream);

        // Every upload first: a host-to-device copy into a buffer of this stream waits for the work
        // queued on it, so uploading between launches would stall the pipeline.
        let xd = self.upload::<T, E>(OP, x.iter())?;
        // The f32 image of x for the router: x itself when t is f32.
        let xf_own = match as_f32(&xd) {
            Some(_) => None,
            None => Some(self.upload::<T, f32>(OP, x.iter())?),
        };
        let xf = xf_own
            .as_ref()
            .or(as_f32(&xd))
            .expect("one of the two exists");
        let router = self.upload::<T, f32>(OP, params.router.iter())?;
        let bias: Option<Vec<f32>> = params.bias.map(|b| b.to_vec());
        let bias = bias.map(|b| self.upload_raw(OP, &b)).transpose()?;
        let ffn_weights = if n_local > 0 && inter > 0 {
            Some((
                self.upload::<T, E>(OP, params.w_gate.iter())?,
                self.upload::<T, E>(OP, params.w_up.iter())?,
                self.upload::<T, E>(OP, params.w_down.iter())?,
            ))
        } else {
            None
        };
        let sd = shared
            .map(|v| self.upload::<T, E>(OP, v.iter()))
            .transpose()?;
        let rd = residual
            .map(|v| self.upload::<T, E>(OP, v.iter()))
            .transpose()?;

        // Router and gating, in f32.
        let mut logits = self.alloc::<f32>(OP, tokens * experts)?;
        let r = launch::linear(
            lib,
            s,
            xf,
            &router,
            None,
            &mut logits,
            tokens,
            experts,
            hidden,
        );
        self.launched(OP, r)?;
        let mut ids = self.alloc::<i32>(OP, pairs)?;
        let mut weights = self.alloc::<f32>(OP, pairs)?;
        let p = gating_params(&params.gating, bias.is_some());
        let r = launch::moe_gating_topk(
            lib,
            s,
            &logits,
            bias.as_ref(),
            &mut ids,
            &mut weights,
            tokens,
            experts,
            &p,
        );
        self.launched(OP, r)?;
        drop(logits);

        // Dispatch to the local experts.
        let mut expanded_x = self.alloc::<E>(OP, pairs * hidden)?;
        let mut row_idx = self.alloc::<i32>(OP, pairs)?;
        let mut counts = self.alloc::<i64>(OP, experts)?;
        let shape = RoutingShape {
            tokens,
            hidden,
            top_k,
            experts,
            active: Some(local.clone()),
            mode: MoeList::Count,
        };
        let r = launch::moe_init_routing(
            lib,
            s,
            &xd,
            &ids,
            &mut expanded_x,
            &mut row_idx,
            &mut counts,
            &shape,
        );
        self.launched(OP, r)?;
        drop((xd, xf_own, ids));

        // The local experts' FFN over the dispatched rows.
        let y = match &ffn_weights {
            Some((wg, wu, wd)) => {
                let mut y = self.alloc::<E>(OP, pairs * hidden)?;
                let list = GroupList {
                    list: &counts,
                    first: local.start,
                    kind: MoeList::Count,
                };
                let shape = FfnShape {
                    rows: pairs,
                    groups: n_local,
                    // The gating picks distinct experts: each gets a token at most once.
                    max_group_rows: tokens,
                    hidden,
                    inter,
                };
                let r = launch::expert_ffn(lib, s, &expanded_x, wg, wu, wd, list, &mut y, shape);
                self.launched(OP, r)?;
                y
            }
            // Every index is -1: the combine reads no row.
            None if n_local == 0 => self.alloc::<E>(OP, 0)?,
            // No intermediate width: every expert outputs zeros.
            None => s
                .alloc_zeroed::<E>(pairs * hidden)
                .map_err(|e| self.fail(OP, e))?,
        };
        drop((expanded_x, counts, ffn_weights));

        // Combine, with the shared experts' output and the residual fused in.
        let mut out = self.alloc::<E>(OP, tokens * hidden)?;
        let shape = CombineShape {
            tokens,
            hidden,
            top_k,
            rows: y.len() / hidden,
        };
        let r = launch::moe_finalize_routing(
            lib,
            s,
            &y,
            &row_idx,
            &weights,
            sd.as_ref(),
            rd.as_ref(),
            &mut out,
            shape,
        );
        self.launched(OP, r)?;
        self.finish(OP)?;
        Ok(array2(tokens, hidden, self.download::<T, E>(OP, &out)?))
    }
}

/// Rejects exactly what the reference's `moe_gating_topk` rejects in the router logits `x · routerᵀ`
/// (`logits`, naming the first non-finite one), without computing them when they cannot be: with every
/// input finite and `max_t Σ_j |x_tj| · max |router|`, grown by f32's rounding over `hidden + 1` steps,
/// below `f32::MAX`, no summation order overflows. Otherwise (a non-finite input, or a product that may
/// overflow) the reference's logits are computed on the host and checked as it checks them: a
/// non-finite input with no tokens (or no experts) makes no logit, and is accepted like there.
fn check_router_logits<T: Float>(x: &ArrayView2<T>, router: &ArrayView2<T>) -> Result<()> {
    let finite = |a: &ArrayView2<T>| a.iter().all(|v| v.to_f32().is_finite());
    if finite(x) && finite(router) {
        let row_sum = x
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|v| f64::from(v.to_f32().abs())).sum::<f64>())
            .fold(0.0, f64::max);
        let w_max = router
            .iter()
            .map(|v| f64::from(v.to_f32().abs()))
            .fold(0.0, f64::max);
        // Each product and partial sum rounds up by at most a factor 1 + 2^-24.
        let growth = ((x.ncols() as f64 + 1.0) * f64::from(f32::EPSILON) / 2.0).exp();
        if row_sum * w_max * growth < f64::from(f32::MAX) {
            return Ok(());
        }
    }
    let logits = router_logits(x.view(), router.view())?;
    gating::check_finite("moe_gating_topk", "logits", &logits.view())
}

/// `buf` as an f32 buffer when its element type is f32.
fn as_f32<E: DevElem>(buf: &DeviceBuffer<E>) -> Option<&DeviceBuffer<f32>> {
    (buf as &dyn std::any::Any).downcast_ref::<DeviceBuffer<f32>>()
}
