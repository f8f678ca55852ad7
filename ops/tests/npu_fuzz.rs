//! The device backend against the CPU oracle on random, often malformed, MoE inputs (the shapes,
//! indices and configurations of `moe_fuzz`, NaN and infinities included): for every input both
//! reject it with the same variant naming the same operator and argument, or both accept it with the
//! same results (ids exact, values within 1e-3), or the device answers `Unsupported` (a shape its
//! kernels cannot take). The device may not be stricter or looser than the reference. Every launch is
//! checked (launch-blocking stream: no fault, zero sanitizer warnings). Quantized dispatch values of
//! non-finite rows are unspecified (`moe::quant`), so only its routing is compared there.

use dsnpu_ops::backend::{Cpu, MoeOps};
use dsnpu_ops::moe::{ExpertTokensMode, GroupListType, MoeLayerParams};
use dsnpu_ops::OpsError;
use ndarray::{Array1, Array2, Array3};
use proptest::prelude::*;

mod moe_inputs;
use moe_inputs::{gating_config, matrix};

mod npu_backend;
use npu_backend::checked_npu as npu;

/// What a rejection names: the variant, the operator and the argument.
fn named(e: &OpsError) -> Option<(&'static str, &'static str, &'static str)> {
    match e {
        OpsError::Shape { op, arg, .. } => Some(("Shape", op, arg)),
        OpsError::IndexOutOfRange { op, arg, .. } => Some(("IndexOutOfRange", op, arg)),
        OpsError::InvalidArgument { op, arg, .. } => Some(("InvalidArgument", op, arg)),
        OpsError::Unsupported { .. } | OpsError::Backend { .. } => None,
    }
}

fn close(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> bool {
    let (a, b): (Vec<f32>, Vec<f32>) = (a.into_iter().collect(), b.into_iter().collect());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            (x.is_nan() && y.is_nan())
                || x == y
                || (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()))
        })
}

/// The device's answer `got` agrees with the reference's `want` (module docs).
fn agree<T: std::fmt::Debug>(
    what: &str,
    want: Result<T, OpsError>,
    got: Result<T, OpsError>,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), TestCaseError> {
    match (&want, &got) {
        (_, Err(OpsError::Unsupported { .. })) => Ok(()),
        (Ok(a), Ok(b)) if same(a, b) => Ok(()),
        (Err(a), Err(b)) if named(a).is_some() && named(a) == named(b) => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "{what}: the reference gives {want:?}, the device {got:?}"
        ))),
    }
}

fn flat<T: Copy>(a: &Array2<T>) -> Vec<T> {
    a.iter().copied().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn gating(
        (t, e) in (0usize..5, 0usize..13),
        seed in matrix(5, 13),
        bias_len in 0usize..14,
        cfg in gating_config(),
    ) {
        let npu = npu();
        let logits = seed.slice(ndarray::s![..t, ..e]).to_owned();
        let bias = Array1::from_iter((0..bias_len).map(|i| i as f32 * 0.01));
        let b = (bias_len % 2 == 0).then(|| bias.view());
        agree(
            &format!("gating {logits:?} bias {b:?} {cfg:?}"),
            Cpu.moe_gating_topk(logits.view(), b, &cfg),
            npu.moe_gating_topk(logits.view(), b, &cfg),
            |a, b| a.0 == b.0 && close(flat(&a.1), flat(&b.1)),
        )?;
    }

    #[test]
    fn dispatch(
        (t, h, k) in (0usize..6, 0usize..5, 0usize..4),
        ids in proptest::collection::vec(-2i32..10, 24),
        experts in 0usize..9,
        active in proptest::option::of((0usize..10, 0usize..10)),
        extra_row in any::<bool>(),
        x in matrix(6, 5),
        cumsum in any::<bool>(),
    ) {
        let npu = npu();
        let x = x.slice(ndarray::s![..t, ..h]).to_owned();
        let id_rows = if extra_row { t + 1 } else { t };
        let ids = Array2::from_shape_vec((id_rows, k), ids[..id_rows * k].to_vec()).unwrap();
        let active = active.map(|(a, b)| a..b);
        let mode = if cumsum { ExpertTokensMode::Cumsum } else { ExpertTokensMode::Count };
        let what = format!("dispatch x {x:?} ids {ids:?} experts {experts} active {active:?} {mode:?}");
        agree(
            &what,
            Cpu.moe_init_routing(x.view(), ids.view(), experts, active.clone(), mode),
            npu.moe_init_routing(x.view(), ids.view(), experts, active.clone(), mode),
            |a, b| {
                a.expanded_row_idx == b.expanded_row_idx
                    && a.expert_tokens == b.expert_tokens
                    && close(flat(&a.expanded_x), flat(&b.expanded_x))
            },
        )?;
        let finite = x.iter().all(|v| v.is_finite());
        agree(
            &what,
            Cpu.moe_init_routing_quant(x.view(), ids.view(), experts, active.clone(), mode),
            npu.moe_init_routing_quant(x.view(), ids.view(), experts, active, mode),
            |a, b| {
                a.expanded_row_idx == b.expanded_row_idx
                    && a.expert_tokens == b.expert_tokens
                    && (!finite || (a.expanded_x == b.expanded_x && close(a.scales.to_vec(), b.scales.to_vec())))
            },
        )?;
    }

    #[test]
    fn grouped(
        (r, k, n, e) in (0usize..6, 0usize..4, 0usize..4, 0usize..4),
        group_list in proptest::collection::vec(-2i64..7, 0..5),
        cumsum in any::<bool>(),
        x in matrix(6, 4),
        wk in 0usize..5,
    ) {
        let npu = npu();
        let x = x.slice(ndarray::s![..r, ..k]).to_owned();
        let w = Array3::<f32>::from_elem((e, n, wk), 0.5);
        let wd = Array3::<f32>::from_elem((e, wk, n), 0.25);
        let gl = Array1::from(group_list);
        let lt = if cumsum { GroupListType::Cumsum } else { GroupListType::Counts };
        let what = format!("x {x:?} w {:?} groups {gl:?} {lt:?}", w.dim());
        agree(
            &format!("grouped_matmul {what}"),
            Cpu.grouped_matmul(x.view(), w.view(), gl.view(), lt),
            npu.grouped_matmul(x.view(), w.view(), gl.view(), lt),
            |a, b| close(flat(a), flat(b)),
        )?;
        agree(
            &format!("expert_ffn {what}"),
            Cpu.expert_ffn(x.view(), w.view(), w.view(), wd.view(), gl.view(), lt),
            npu.expert_ffn(x.view(), w.view(), w.view(), wd.view(), gl.view(), lt),
            |a, b| close(flat(a), flat(b)),
        )?;
    }

    #[test]
    fn combine(
        (r, h, t, k) in (0usize..5, 0usize..4, 0usize..4, 0usize..4),
        idx in proptest::collection::vec(-3i32..7, 0..14),
        shared_rows in proptest::option::of(0usize..5),
        y in matrix(5, 4),
        with_residual in any::<bool>(),
    ) {
        let npu = npu();
        let y = y.slice(ndarray::s![..r, ..h]).to_owned();
        let w = Array2::<f32>::from_elem((t, k), 0.5);
        let shared = shared_rows.map(|rows| Array2::<f32>::from_elem((rows, h), 0.25));
        let residual = Array2::<f32>::ones((t, h));
        let residual = with_residual.then(|| residual.view());
        let idx = Array1::from(idx);
        agree(
            &format!("combine y {y:?} idx {idx:?} weights {:?} shared {shared:?}", w.dim()),
            Cpu.moe_finalize_routing(y.view(), idx.view(), w.view(), shared.as_ref().map(|s| s.view()), residual),
            npu.moe_finalize_routing(y.view(), idx.view(), w.view(), shared.as_ref().map(|s| s.view()), residual),
            |a, b| close(flat(a), flat(b)),
        )?;
    }

    #[test]
    fn layer(
        (t, h, e, i, e_local) in (0usize..4, 1usize..5, 1usize..9, 0usize..3, 0usize..9),
        local in proptest::option::of((0usize..9, 0usize..9)),
        cfg in gating_config(),
        x in matrix(4, 4),
        router_nan in any::<bool>(),
        plain_top_k in any::<bool>(),
    ) {
        let npu = npu();
        // Half the cases route (plain top-k within E), so the values and the logits get checked.
        let mut cfg = cfg;
        if plain_top_k {
            (cfg.n_group, cfg.topk_group, cfg.top_k) = (1, 1, 1 + cfg.top_k % e);
            cfg.routed_scaling_factor = 1.0;
        }
        let x = x.slice(ndarray::s![..t, ..h.min(4)]).to_owned();
        let mut router = Array2::<f32>::from_shape_fn((e, x.ncols()), |(a, b)| ((a * 7 + b * 3) % 5) as f32 * 0.1);
        if router_nan {
            router[[e - 1, 0]] = f32::NAN;
        }
        let w = Array3::<f32>::from_elem((e_local, i, x.ncols()), 0.1);
        let wd = Array3::<f32>::from_elem((e_local, x.ncols(), i), 0.1);
        let params = MoeLayerParams {
            router: router.view(),
            bias: None,
            gating: cfg,
            w_gate: w.view(),
            w_up: w.view(),
            w_down: wd.view(),
            local: local.map(|(a, b)| a..b),
        };
        agree(
            &format!("layer x {x:?} router {router:?} ffn {:?} local {local:?} {cfg:?}", w.dim()),
            Cpu.moe_layer(x.view(), &params, None, None),
            npu.moe_layer(x.view(), &params, None, None),
            |a, b| close(flat(a), flat(b)),
        )?;
    }
}
