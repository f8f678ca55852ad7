//! `GroupedMatmul` along M and the expert FFN built on it.
//!
//! # Contract
//! The `R` rows of `x` are split into `E` consecutive groups by `group_list` (one entry per group, i.e.
//! per expert weight `w[e]`): per-group row counts ([`GroupListType::Counts`], aclnn
//! `group_list_type = 1`) or their inclusive cumulative sums ([`GroupListType::Cumsum`], type 0). Group
//! `e` owns rows `[start_e, end_e)`; empty groups cost nothing and touch nothing.
//!
//! - [`grouped_matmul`]: `y[r] = x[r] · w[e]ᵀ` with `w [E,N,K]` (`[out, in]`, as checkpoints store
//!   linear weights), dot products accumulated in `f32` and rounded once to `T`.
//! - [`expert_ffn`]: for each row, `g = x·w_gateᵀ`, `u = x·w_upᵀ` (both kept in `f32`),
//!   `h = silu(g)·u` computed in `f32` and **rounded to `T` once** (the intermediate a device stores between
//!   the two grouped GEMMs), then `y = h·w_downᵀ` accumulated in `f32` and rounded to `T`.
//!   `silu(g) = g / (1 + e^{-g})`.
//!
//! # Validation
//! Weight shapes agree with `x` (`w [E,N,K]` with `K = x.ncols()`; `w_gate`, `w_up [E,I,H]`,
//! `w_down [E,H,I]`); `group_list` has `E` entries; counts are non-negative and sum to `R`; a cumsum is
//! non-negative, non-decreasing, and ends at `R`. Rows outside every group are not allowed (aclnn leaves
//! them unwritten; here `Σ = R` is required so every output row is defined).
use crate::error::{expect_shape, invalid};
use crate::{Float, Result};
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayView3};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupListType {
    /// Inclusive cumulative sums (aclnn group_list_type 0).
    Cumsum,
    /// Per-group counts (group_list_type 1).
    Counts,
}

/// `y[rows of group e] = x[rows of group e] · w[e]ᵀ`, `x` `[R,K]`, `w` `[E,N,K]`, `group_list` `[E]`.
pub fn grouped_matmul<T: Float>(
    x: ArrayView2<T>,
    w: ArrayView3<T>,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
) -> Result<Array2<T>> {
    let ranges = check_grouped_matmul(&x, &w, group_list, list_type)?;
    let k = w.dim().2;
    let acc = grouped_matmul_f32(&rows_f32(x), k, w, &ranges);
    Ok(acc.mapv(T::from_f32))
}

/// `down(silu(gate(x)) * up(x))` per expert group; `w_gate`,`w_up` `[E,I,H]`, `w_down` `[E,H,I]`.
pub fn expert_ffn<T: Float>(
    x: ArrayView2<T>,
    w_gate: ArrayView3<T>,
    w_up: ArrayView3<T>,
    w_down: ArrayView3<T>,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
) -> Result<Array2<T>> {
    let ranges = check_expert_ffn(&x, &w_gate, &w_up, &w_down, group_list, list_type)?;
    let (_, inter, hidden) = w_gate.dim();

    let xf = rows_f32(x);
    let gate = grouped_matmul_f32(&xf, hidden, w_gate, &ranges);
    let up = grouped_matmul_f32(&xf, hidden, w_up, &ranges);
    // The one rounding of the intermediate: h is stored as T between the two GEMMs.
    let h: Vec<f32> = gate
        .iter()
        .zip(up.iter())
        .map(|(&g, &u)| T::from_f32(silu(g) * u).to_f32())
        .collect();
    let y = grouped_matmul_f32(&h, inter, w_down, &ranges);
    Ok(y.mapv(T::from_f32))
}

/// The checks of [`grouped_matmul`] (see the module docs); returns each group's row range. The device
/// backend runs the same ones.
pub fn check_grouped_matmul<T>(
    x: &ArrayView2<T>,
    w: &ArrayView3<T>,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
) -> Result<Vec<Range<usize>>> {
    const OP: &str = "grouped_matmul";
    let (groups, n, _) = w.dim();
    expect_shape(OP, "w", w.shape(), &[groups, n, x.ncols()])?;
    group_ranges(OP, group_list, list_type, groups, x.nrows())
}

/// The checks of [`expert_ffn`] (see the module docs); returns each group's row range. The device
/// backend runs the same ones.
pub fn check_expert_ffn<T>(
    x: &ArrayView2<T>,
    w_gate: &ArrayView3<T>,
    w_up: &ArrayView3<T>,
    w_down: &ArrayView3<T>,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
) -> Result<Vec<Range<usize>>> {
    check_ffn_weights(x.ncols(), w_gate, w_up, w_down)?;
    group_ranges(
        "expert_ffn",
        group_list,
        list_type,
        w_gate.dim().0,
        x.nrows(),
    )
}

/// The expert FFN's weights for `hidden` columns: `w_gate`, `w_up` `[E, I, hidden]`, `w_down`
/// `[E, hidden, I]` (errors name `expert_ffn`).
pub fn check_ffn_weights<T>(
    hidden: usize,
    w_gate: &ArrayView3<T>,
    w_up: &ArrayView3<T>,
    w_down: &ArrayView3<T>,
) -> Result<()> {
    const OP: &str = "expert_ffn";
    let (groups, inter, _) = w_gate.dim();
    expect_shape(OP, "w_gate", w_gate.shape(), &[groups, inter, hidden])?;
    expect_shape(OP, "w_up", w_up.shape(), &[groups, inter, hidden])?;
    expect_shape(OP, "w_down", w_down.shape(), &[groups, hidden, inter])
}

/// `g / (1 + e^{-g})` in `f32`.
pub fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// Validate `group_list` against `groups` weights and `rows` rows; return each group's row range.
pub fn group_ranges(
    op: &'static str,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
    groups: usize,
    rows: usize,
) -> Result<Vec<Range<usize>>> {
    expect_shape(op, "group_list", group_list.shape(), &[groups])?;
    let mut ranges = Vec::with_capacity(groups);
    let mut end: i64 = 0;
    for (e, &v) in group_list.iter().enumerate() {
        let start = end;
        end = match list_type {
            GroupListType::Counts if v < 0 => {
                return Err(invalid(
                    op,
                    "group_list",
                    format!("count {v} of group {e} is negative"),
                ));
            }
            GroupListType::Counts => start.checked_add(v).ok_or_else(|| {
                invalid(
                    op,
                    "group_list",
                    format!("counts overflow i64 at group {e}"),
                )
            })?,
            GroupListType::Cumsum if v < start => {
                return Err(invalid(
                    op,
                    "group_list",
                    format!("cumsum decreases at group {e}: {v} after {start}"),
                ));
            }
            GroupListType::Cumsum => v,
        };
        if end > rows as i64 {
            return Err(invalid(
                op,
                "group_list",
                format!("groups up to {e} hold {end} rows, more than R = {rows}"),
            ));
        }
        ranges.push(start as usize..end as usize);
    }
    if end != rows as i64 {
        return Err(invalid(
            op,
            "group_list",
            format!("groups hold {end} rows, expected R = {rows}"),
        ));
    }
    Ok(ranges)
}

/// `x` as row-major `f32` (the reference reads each element once, exactly).
fn rows_f32<T: Float>(x: ArrayView2<T>) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// `out[r, n] = Σ_k x[r, k] · w[e(r), n, k]` in `f32`; `x` row-major with `k_dim` columns.
fn grouped_matmul_f32<T: Float>(
    x: &[f32],
    k_dim: usize,
    w: ArrayView3<T>,
    ranges: &[Range<usize>],
) -> Array2<f32> {
    let rows = ranges.last().map_or(0, |r| r.end);
    let n_dim = w.dim().1;
    let mut out = Array2::<f32>::zeros((rows, n_dim));
    for (e, range) in ranges.iter().enumerate() {
        if range.is_empty() {
            continue;
        }
        // One expert's weight in f32, row-major [N, K].
        let we: Vec<f32> = w.slice(s![e, .., ..]).iter().map(|v| v.to_f32()).collect();
        for r in range.clone() {
            let xr = &x[r * k_dim..(r + 1) * k_dim];
            for (n, wn) in we.chunks_exact(k_dim.max(1)).take(n_dim).enumerate() {
                out[[r, n]] = dot(xr, wn);
            }
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
