//! `MoeInitRoutingV2`: dispatch of token rows to expert-sorted order.
//!
//! # Contract
//! Inputs `x [T,H]` and `ids i32 [T,K]` (from [`moe_gating_topk`](super::moe_gating_topk)). The flat pairs
//! `i = t*K + k` are sorted **stably** by expert id, so within one expert the pairs keep `(t, k)` order.
//! - `expanded_x [R,H]`: row `r` is a copy of `x[t]` for the `r`-th pair in that order.
//! - `expanded_row_idx i32 [T*K]`: the *scatter* convention of aclnnMoeInitRoutingV2/V3 with
//!   `rowIdxType = 1`: `expanded_row_idx[t*K+k]` is the row of `expanded_x` holding pair `(t,k)`, so
//!   `expanded_x[expanded_row_idx[i]] == x[i / K]`.
//! - `expert_tokens i64 [E]`: rows per expert ([`ExpertTokensMode::Count`]) or their inclusive cumulative
//!   sum ([`ExpertTokensMode::Cumsum`]), always over all `E` experts.
//!
//! **Active range** (expert parallelism): with `active = Some(start..end)` only pairs whose expert is in
//! `[start, end)` are dispatched. Dropped pairs get `expanded_row_idx = -1`, take no row (R counts kept
//! pairs only, so `expanded_x` holds exactly the rows of experts `start..end`, in expert order, starting at
//! row 0), and experts outside the range report 0 tokens (the cumsum is flat there). This differs from
//! aclnnMoeInitRoutingV3, whose scatter-mode index leaves dropped entries *uninitialised* and whose count
//! output covers only `end - start` experts; `-1` and a full-length `[E]` list are this crate's choice, so
//! that a combine can skip dropped pairs and a grouped matmul can take the list (or its `start..end` slice)
//! directly. No capacity / drop-pad mode: routing is dropless.
//!
//! # Validation
//! `ids` has `T = x.nrows()` rows; `E ≥ 1`; every id in `[0, E)` (also those outside the active range);
//! `start ≤ end ≤ E`; `T*K` fits in `i32`.
use crate::error::{expect_shape, invalid};
use crate::{Float, OpsError, Result};
use ndarray::{Array1, Array2, ArrayView2};
use std::ops::Range;

const OP: &str = "moe_init_routing";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertTokensMode {
    /// Rows per expert (aclnn `expertTokensNumType = 1`).
    Count,
    /// Inclusive cumulative sums of the counts (`expertTokensNumType = 0`).
    Cumsum,
}

#[derive(Debug, Clone)]
pub struct InitRouting<T> {
    /// `[R, H]`: rows sorted stably by expert; R = number of pairs whose expert is active.
    pub expanded_x: Array2<T>,
    /// `[T*K]`: destination row of pair `t*K+k`, or -1 when its expert is outside the active range.
    pub expanded_row_idx: Array1<i32>,
    /// `[E]`: tokens per expert (0 outside the active range), as counts or inclusive cumsum.
    pub expert_tokens: Array1<i64>,
}

pub fn moe_init_routing<T: Float>(
    x: ArrayView2<T>,
    ids: ArrayView2<i32>,
    num_experts: usize,
    active: Option<Range<usize>>,
    mode: ExpertTokensMode,
) -> Result<InitRouting<T>> {
    let plan = RoutingPlan::new(OP, x.nrows(), ids, num_experts, active)?;
    let hidden = x.ncols();
    let mut expanded_x = Array2::<T>::default((plan.source_token.len(), hidden));
    for (r, &t) in plan.source_token.iter().enumerate() {
        expanded_x.row_mut(r).assign(&x.row(t));
    }
    Ok(InitRouting {
        expanded_x,
        expanded_row_idx: Array1::from(plan.dest_row.clone()),
        expert_tokens: plan.expert_tokens(mode),
    })
}

/// The checks of dispatch (see the module docs), errors naming `op`: `ids [tokens, K]`, `E >= 1`,
/// `T*K` within i32, the active range within `0..E`, every id in `[0, E)`. Returns the active range
/// (all experts when `None`). The device backend runs the same ones.
pub fn check_routing(
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

/// Where every (token, k) pair goes: the part of dispatch that does not touch the hidden rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingPlan {
    /// `[T*K]`: destination row of each pair, -1 if dropped.
    pub dest_row: Vec<i32>,
    /// `[R]`: the token whose row lands at each destination row.
    pub source_token: Vec<usize>,
    /// `[E]`: rows per expert (0 outside the active range).
    pub counts: Vec<i64>,
}

impl RoutingPlan {
    /// Validate the routing inputs (see the module docs) and compute the stable counting sort.
    /// `op` names the operator in errors.
    pub fn new(
        op: &'static str,
        tokens: usize,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
    ) -> Result<RoutingPlan> {
        let active = check_routing(op, tokens, &ids, num_experts, active)?;
        let k = ids.ncols();
        // Row-major flat order is exactly i = t*K + k; `check_routing` bounded T*K by i32::MAX.
        let flat: Vec<i32> = ids.iter().copied().collect();
        let pairs = flat.len();

        // Counting sort: histogram, exclusive prefix sum, then place pairs in ascending i (stable).
        let mut counts = vec![0i64; num_experts];
        for &e in &flat {
            if active.contains(&(e as usize)) {
                counts[e as usize] += 1;
            }
        }
        let mut next_row = vec![0usize; num_experts];
        let mut acc = 0usize;
        for (e, &c) in counts.iter().enumerate() {
            next_row[e] = acc;
            acc += c as usize;
        }
        let mut dest_row = vec![-1i32; pairs];
        let mut source_token = vec![0usize; acc];
        for (i, &e) in flat.iter().enumerate() {
            let e = e as usize;
            if !active.contains(&e) {
                continue;
            }
            let r = next_row[e];
            next_row[e] += 1;
            // r < acc ≤ pairs ≤ i32::MAX.
            dest_row[i] = r as i32;
            source_token[r] = i / k;
        }
        Ok(RoutingPlan {
            dest_row,
            source_token,
            counts,
        })
    }

    /// The `[E]` token list in the requested form.
    pub fn expert_tokens(&self, mode: ExpertTokensMode) -> Array1<i64> {
        match mode {
            ExpertTokensMode::Count => Array1::from(self.counts.clone()),
            ExpertTokensMode::Cumsum => {
                let mut acc = 0i64;
                self.counts
                    .iter()
                    .map(|&c| {
                        acc += c;
                        acc
                    })
                    .collect()
            }
        }
    }
}
