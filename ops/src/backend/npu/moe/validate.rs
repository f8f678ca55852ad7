//! The MoE references' input checks, repeated on the host before anything reaches the device, with the
//! same operator and argument names (`crate::moe::{gating, routing, grouped, finalize, layer}` state
//! them). The kernels trust these: expert ids in range, group lists that add up to the rows, row
//! indices within `[-1, R)`.

use std::ops::Range;

use ndarray::{ArrayView1, ArrayView2};

use crate::error::{expect_shape, invalid};
use crate::moe::GatingConfig;
use crate::{Float, OpsError, Result};

/// Gating: the configuration against E, then the bias (`[E]`, finite) and the logits (finite).
pub(super) fn gating<T: Float>(
    op: &'static str,
    logits: &ArrayView2<T>,
    bias: Option<&ArrayView1<f32>>,
    cfg: &GatingConfig,
) -> Result<()> {
    gating_config(op, logits.ncols(), bias, cfg)?;
    finite(op, "logits", logits)
}

/// The configuration against `experts`, and the bias (`[E]`, finite).
pub(super) fn gating_config(
    op: &'static str,
    experts: usize,
    bias: Option<&ArrayView1<f32>>,
    cfg: &GatingConfig,
) -> Result<()> {
    cfg.validate(op, experts)?;
    if let Some(b) = bias {
        expect_shape(op, "bias", b.shape(), &[experts])?;
        if let Some((i, v)) = b.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(invalid(
                op,
                "bias",
                format!("element {i} is {v}, not finite"),
            ));
        }
    }
    Ok(())
}

/// Every element of `a` finite, or InvalidArgument naming `arg` and the first offender.
pub(super) fn finite<T: Float>(
    op: &'static str,
    arg: &'static str,
    a: &ArrayView2<T>,
) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.to_f32().is_finite()) {
        Some(((r, c), v)) => Err(invalid(
            op,
            arg,
            format!("element [{r}, {c}] is {}, not finite", v.to_f32()),
        )),
        None => Ok(()),
    }
}

/// Dispatch: `ids [tokens, K]`, at least one expert, `T*K` within i32, the active range within
/// `0..E`, every id in `[0, E)`. Returns the active range.
pub(super) fn routing(
    op: &'static str,
    tokens: usize,
    ids: &ArrayView2<i32>,
    num_experts: usize,
    active: Option<Range<usize>>,
) -> Result<Range<usize>> {
    let k = ids.ncols();
    expect_shape(op, "ids", ids.shape(), &[tokens, k])?;
    if num_experts == 0 {
        return Err(invalid(op, "num_experts", "must be at least 1"));
    }
    if tokens.checked_mul(k).is_none_or(|p| p > i32::MAX as usize) {
        return Err(invalid(
            op,
            "ids",
            format!("T*K = {tokens}*{k} does not fit the i32 row index"),
        ));
    }
    let active = active.unwrap_or(0..num_experts);
    if active.start > active.end || active.end > num_experts {
        return Err(invalid(
            op,
            "active",
            format!(
                "range {}..{} is not within 0..{num_experts}",
                active.start, active.end
            ),
        ));
    }
    if let Some((i, &e)) = ids
        .iter()
        .enumerate()
        .find(|(_, &e)| e < 0 || e as usize >= num_experts)
    {
        return Err(OpsError::IndexOutOfRange {
            op,
            arg: "ids",
            index: e.into(),
            position: i,
            bound: num_experts as i64,
        });
    }
    Ok(active)
}

/// Combine: `expanded_row_idx [T*K]` with every entry in `[-1, R)`; `shared`, `residual` `[T, H]`.
pub(super) fn combine<T>(
    op: &'static str,
    rows: usize,
    hidden: usize,
    expanded_row_idx: &ArrayView1<i32>,
    weights: &ArrayView2<f32>,
    shared: Option<&ArrayView2<T>>,
    residual: Option<&ArrayView2<T>>,
) -> Result<()> {
    let (tokens, k) = weights.dim();
    expect_shape(
        op,
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
            op,
            arg: "expanded_row_idx",
            index: r.into(),
            position: i,
            bound: rows as i64,
        });
    }
    extras(op, tokens, hidden, shared, residual)
}

/// `shared` and `residual`, when given, are `[T, H]`.
pub(super) fn extras<T>(
    op: &'static str,
    tokens: usize,
    hidden: usize,
    shared: Option<&ArrayView2<T>>,
    residual: Option<&ArrayView2<T>>,
) -> Result<()> {
    if let Some(s) = shared {
        expect_shape(op, "shared", s.shape(), &[tokens, hidden])?;
    }
    if let Some(r) = residual {
        expect_shape(op, "residual", r.shape(), &[tokens, hidden])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moe::{self, ExpertTokensMode, ScoreFunc};
    use ndarray::{array, Array2};

    /// Each check rejects exactly what the reference rejects, naming the same operator and argument.
    fn same_rejection<A, B>(ours: Result<A>, reference: Result<B>) {
        let (a, b) = (ours.err(), reference.err());
        assert_eq!(
            a.as_ref().map(|e| e.to_string()),
            b.as_ref().map(|e| e.to_string())
        );
    }

    #[test]
    fn routing_checks_match_the_reference() {
        let x = Array2::<f32>::zeros((2, 4));
        let cases: Vec<(Array2<i32>, usize, Option<Range<usize>>)> = vec![
            (array![[0, 1], [2, 3]], 4, None),
            (array![[0, 1], [2, 4]], 4, None),
            (array![[0, -1], [2, 3]], 4, Some(1..3)),
            (array![[0, 1], [2, 3]], 0, None),
            (array![[0, 1], [2, 3]], 4, Some(3..5)),
            (array![[0, 1, 2]], 4, None),
        ];
        for (ids, e, active) in cases {
            let reference = moe::moe_init_routing(
                x.view(),
                ids.view(),
                e,
                active.clone(),
                ExpertTokensMode::Count,
            );
            let ours = routing("moe_init_routing", x.nrows(), &ids.view(), e, active);
            same_rejection(ours, reference);
        }
    }

    #[test]
    fn gating_and_combine_checks_match_the_reference() {
        let cfg = GatingConfig {
            top_k: 2,
            n_group: 1,
            topk_group: 1,
            score: ScoreFunc::Sigmoid,
            normalize: true,
            routed_scaling_factor: 1.0,
        };
        let logits = array![[0.5f32, 1.0, f32::NAN, 0.0]];
        let bias = array![0.0f32, 0.1, 0.2, 0.3];
        for (l, b) in [
            (logits.clone(), None),
            (array![[0.5f32, 1.0, 2.0, 0.0]], Some(bias.clone())),
            (
                array![[0.5f32, 1.0, 2.0, 0.0]],
                Some(array![0.0f32, f32::INFINITY, 0.0, 0.0]),
            ),
            (array![[0.5f32, 1.0, 2.0, 0.0]], Some(array![0.0f32])),
        ] {
            same_rejection(
                gating(
                    "moe_gating_topk",
                    &l.view(),
                    b.as_ref().map(|b| b.view()).as_ref(),
                    &cfg,
                ),
                moe::moe_gating_topk(l.view(), b.as_ref().map(|b| b.view()), &cfg),
            );
        }
        let y = Array2::<f32>::zeros((3, 2));
        let w = Array2::<f32>::ones((2, 2));
        let extra = Array2::<f32>::zeros((2, 3));
        for (idx, shared) in [
            (array![0, -1, 2, 1], None),
            (array![0, -2, 2, 1], None),
            (array![0, 3, 2, 1], None),
            (array![0, 1, 2], None),
            (array![0, 1, 2, 1], Some(extra.view())),
        ] {
            same_rejection(
                combine(
                    "moe_finalize_routing",
                    3,
                    2,
                    &idx.view(),
                    &w.view(),
                    shared.as_ref(),
                    None,
                ),
                moe::moe_finalize_routing(y.view(), idx.view(), w.view(), shared, None),
            );
        }
    }
}
