//! dsnpu-ops' MoE conformance suites (gating, dispatch, int8 dispatch, grouped matmul, expert FFN,
//! combine and the whole layer chained from them) run on the MoE kernels, for f32, f16 and bf16, against
//! the CPU references. The backend below validates its inputs as the references do, launches the kernels
//! on the tests' miniature simulator with five vector / three cube blocks (so every kernel splits its
//! work and the SyncAll kernels really meet), and fails on any fault or warning of the host layer.
mod common;
mod moe_common;

use std::ops::Range;

use dsnpu_kernels::{CoreBudget, GatingParams, MoeList, MoeScore};
use dsnpu_ops::backend::{Backend, MoeOps};
use dsnpu_ops::moe::grouped::group_ranges;
use dsnpu_ops::moe::{
    ExpertTokensMode, GatingConfig, GroupListType, InitRouting, InitRoutingQuant, ScoreFunc,
};
use dsnpu_ops::ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayView3};
use dsnpu_ops::{Float, OpsError, Result};
use moe_common::MoeDevice;

const UB: u32 = common::UB_910B;

/// The MoE kernels as a conformance backend.
struct KernelSim;

const DEVICE: MoeDevice = MoeDevice {
    vector: CoreBudget {
        cores: 5,
        ub_bytes: UB,
    },
    cube: CoreBudget {
        cores: 3,
        ub_bytes: UB,
    },
};

impl Backend for KernelSim {
    fn name(&self) -> String {
        "kernels-host-sim".into()
    }
}

fn failed(op: &'static str, e: String) -> OpsError {
    OpsError::Backend {
        op,
        backend: KernelSim.name(),
        source: e.into(),
    }
}

fn invalid(op: &'static str, arg: &'static str, reason: String) -> OpsError {
    OpsError::InvalidArgument { op, arg, reason }
}

fn shape(op: &'static str, arg: &'static str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(OpsError::Shape {
        op,
        arg,
        got: got.to_vec(),
        expected: format!("{expected:?}"),
    })
}

fn flat<T: Copy>(a: ArrayView2<T>) -> Vec<T> {
    a.iter().copied().collect()
}

fn list_type(t: GroupListType) -> MoeList {
    match t {
        GroupListType::Counts => MoeList::Count,
        GroupListType::Cumsum => MoeList::Cumsum,
    }
}

fn mode(m: ExpertTokensMode) -> MoeList {
    match m {
        ExpertTokensMode::Count => MoeList::Count,
        ExpertTokensMode::Cumsum => MoeList::Cumsum,
    }
}

/// The checks of `RoutingPlan::new`: ids `[T, K]`, every id in `[0, E)`, the range within `0..E`.
fn check_routing(
    op: &'static str,
    tokens: usize,
    ids: ArrayView2<i32>,
    experts: usize,
    active: &Option<Range<usize>>,
) -> Result<()> {
    shape(op, "ids", ids.shape(), &[tokens, ids.ncols()])?;
    if experts == 0 {
        return Err(invalid(op, "num_experts", "must be at least 1".into()));
    }
    if let Some(r) = active {
        if r.start > r.end || r.end > experts {
            return Err(invalid(
                op,
                "active",
                format!("{r:?} is not within 0..{experts}"),
            ));
        }
    }
    if let Some((i, &e)) = ids
        .iter()
        .enumerate()
        .find(|(_, &e)| e < 0 || e as usize >= experts)
    {
        return Err(OpsError::IndexOutOfRange {
            op,
            arg: "ids",
            index: e.into(),
            position: i,
            bound: experts as i64,
        });
    }
    Ok(())
}

impl MoeOps for KernelSim {
    fn moe_gating_topk<T: Float>(
        &self,
        logits: ArrayView2<T>,
        bias: Option<ArrayView1<f32>>,
        cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        const OP: &str = "moe_gating_topk";
        let (tokens, experts) = logits.dim();
        cfg.validate(OP, experts)?;
        if let Some(b) = &bias {
            shape(OP, "bias", b.shape(), &[experts])?;
            if b.iter().any(|v| !v.is_finite()) {
                return Err(invalid(OP, "bias", "not finite".into()));
            }
        }
        if logits.iter().any(|v| !v.to_f32().is_finite()) {
            return Err(invalid(OP, "logits", "not finite".into()));
        }
        let p = GatingParams {
            top_k: cfg.top_k as u64,
            n_group: cfg.n_group as u64,
            topk_group: cfg.topk_group as u64,
            score: match cfg.score {
                ScoreFunc::Softmax => MoeScore::Softmax,
                ScoreFunc::Sigmoid => MoeScore::Sigmoid,
            },
            has_bias: bias.is_some(),
            normalize: cfg.normalize,
            routed_scaling_factor: cfg.routed_scaling_factor,
        };
        let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());
        let (ids, w, _) = DEVICE
            .gating(&flat(logits), tokens, experts, bias.as_deref(), &p)
            .map_err(|e| failed(OP, e))?;
        let k = cfg.top_k;
        Ok((
            Array2::from_shape_vec((tokens, k), ids).expect("T*K ids"),
            Array2::from_shape_vec((tokens, k), w).expect("T*K weights"),
        ))
    }

    fn moe_init_routing<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        m: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        const OP: &str = "moe_init_routing";
        let (tokens, hidden) = x.dim();
        check_routing(OP, tokens, ids, num_experts, &active)?;
        if hidden == 0 {
            return Err(OpsError::Unsupported {
                op: OP,
                backend: self.name(),
                reason: "hidden size 0".into(),
            });
        }
        let d = DEVICE
            .init_routing(
                &flat(x),
                tokens,
                hidden,
                &flat(ids),
                ids.ncols(),
                num_experts,
                active,
                mode(m),
            )
            .map_err(|e| failed(OP, e))?;
        Ok(InitRouting {
            expanded_x: Array2::from_shape_vec((d.rows, hidden), d.expanded_x).expect("R*H"),
            expanded_row_idx: Array1::from(d.expanded_row_idx),
            expert_tokens: Array1::from(d.expert_tokens),
        })
    }

    fn moe_init_routing_quant<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        m: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        const OP: &str = "moe_init_routing_quant";
        let (tokens, hidden) = x.dim();
        check_routing(OP, tokens, ids, num_experts, &active)?;
        let d = DEVICE
            .init_routing_quant(
                &flat(x),
                tokens,
                hidden,
                &flat(ids),
                ids.ncols(),
                num_experts,
                active,
                mode(m),
            )
            .map_err(|e| failed(OP, e))?;
        Ok(InitRoutingQuant {
            expanded_x: Array2::from_shape_vec((d.rows, hidden), d.expanded_x).expect("R*H"),
            scales: Array1::from(d.scales),
            expanded_row_idx: Array1::from(d.expanded_row_idx),
            expert_tokens: Array1::from(d.expert_tokens),
        })
    }

    fn grouped_matmul<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        lt: GroupListType,
    ) -> Result<Array2<T>> {
        const OP: &str = "grouped_matmul";
        let (groups, n, k) = w.dim();
        shape(OP, "w", w.shape(), &[groups, n, x.ncols()])?;
        group_ranges(OP, group_list, lt, groups, x.nrows())?;
        let rows = x.nrows();
        if rows == 0 || n == 0 || k == 0 {
            // Nothing to launch: an empty product (k = 0 would be all zeros, not a cube case).
            return Ok(Array2::from_elem((rows, n), T::from_f32(0.0)));
        }
        let w: Vec<T> = w.iter().copied().collect();
        let (y, _) = DEVICE
            .grouped_matmul(
                &flat(x),
                rows,
                k,
                &w,
                groups,
                n,
                &group_list.to_vec(),
                list_type(lt),
            )
            .map_err(|e| failed(OP, e))?;
        Ok(Array2::from_shape_vec((rows, n), y).expect("R*N"))
    }

    fn expert_ffn<T: Float>(
        &self,
        x: ArrayView2<T>,
        w_gate: ArrayView3<T>,
        w_up: ArrayView3<T>,
        w_down: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        lt: GroupListType,
    ) -> Result<Array2<T>> {
        const OP: &str = "expert_ffn";
        let (groups, inter, hidden) = w_gate.dim();
        shape(OP, "w_gate", w_gate.shape(), &[groups, inter, x.ncols()])?;
        shape(OP, "w_up", w_up.shape(), &[groups, inter, hidden])?;
        shape(OP, "w_down", w_down.shape(), &[groups, hidden, inter])?;
        group_ranges(OP, group_list, lt, groups, x.nrows())?;
        let rows = x.nrows();
        if rows == 0 || hidden == 0 {
            return Ok(Array2::from_elem((rows, hidden), T::from_f32(0.0)));
        }
        let v = |a: ArrayView3<T>| a.iter().copied().collect::<Vec<T>>();
        let (y, _) = DEVICE
            .expert_ffn(
                &flat(x),
                rows,
                hidden,
                &v(w_gate),
                &v(w_up),
                &v(w_down),
                groups,
                inter,
                &group_list.to_vec(),
                list_type(lt),
            )
            .map_err(|e| failed(OP, e))?;
        Ok(Array2::from_shape_vec((rows, hidden), y).expect("R*H"))
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
        let (tokens, k) = weights.dim();
        let (rows, hidden) = y.dim();
        shape(
            OP,
            "expanded_row_idx",
            expanded_row_idx.shape(),
            &[tokens * k],
        )?;
        if let Some((i, &r)) = expanded_row_idx
            .iter()
            .enumerate()
            .find(|(_, &r)| r < -1 || r as i64 >= rows as i64)
        {
            return Err(OpsError::IndexOutOfRange {
                op: OP,
                arg: "expanded_row_idx",
                index: r.into(),
                position: i,
                bound: rows as i64,
            });
        }
        if let Some(e) = &shared {
            shape(OP, "shared", e.shape(), &[tokens, hidden])?;
        }
        if let Some(e) = &residual {
            shape(OP, "residual", e.shape(), &[tokens, hidden])?;
        }
        let (s, r) = (shared.map(|a| flat(a)), residual.map(|a| flat(a)));
        let (out, _) = DEVICE
            .finalize(
                &flat(y),
                rows,
                hidden,
                &expanded_row_idx.to_vec(),
                &flat(weights),
                tokens,
                k,
                s.as_deref(),
                r.as_deref(),
            )
            .map_err(|e| failed(OP, e))?;
        Ok(Array2::from_shape_vec((tokens, hidden), out).expect("T*H"))
    }
}

dsnpu_ops::moe_conformance!(KernelSim);
