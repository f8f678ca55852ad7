//! `MoeGatingTopK`: which K experts each token goes to, and with what weight.
//!
//! # Contract
//! For each token `t` (a row of `logits [T,E]`, any [`Float`], read as `f32`):
//! 1. **Scores** `s[e]` in `f32`: `softmax(logits[t])` (max-subtracted) or `sigmoid(logits[t][e])`.
//! 2. **Selection scores** `b[e] = s[e] + bias[e]` (or `s[e]` without a bias). The bias (DeepSeek-V3's
//!    `e_score_correction_bias`) only steers *which* experts are picked; it never enters the weights.
//! 3. **Group limit** (DeepSeek's `group_limited_greedy`): the E experts form `n_group` contiguous groups of
//!    `E / n_group`. A group's score is the sum of its two largest `b` when a bias is given (DeepSeek-V3,
//!    `groupSelectMode = 1`; the sum of all of them if a group has a single expert), else its largest `b`
//!    (DeepSeek-V2, `groupSelectMode = 0`). The `topk_group` best groups survive (ties: lower group index);
//!    experts of other groups cannot be picked. `n_group = 1` is plain top-k.
//! 4. **Top-k** among survivors by descending `b`, ties to the lowest expert index. `ids[t]` lists them in
//!    that order (descending `b`).
//! 5. **Weights** `w[k] = s[ids[k]]` (unbiased); if `normalize`, `w[k] /= (Σ_k w + 1e-20)`; then
//!    `w[k] *= routed_scaling_factor`. All in `f32`, in that order.
//!
//! This is DeepSeek-V3's routing as Hugging Face's `DeepseekV3TopkRouter` and DeepSeek's own inference
//! code compute it, and aclnnMoeGatingTopK's parameters map onto it (`normType` = [`ScoreFunc`],
//! `groupSelectMode` = bias present, `renorm = 0`, `eps = 1e-20`). Two deliberate choices where sources
//! differ: the weights are the *unbiased* scores (aclnn's documented formula gathers the biased ones;
//! DeepSeek does not), and experts of dropped groups are excluded outright (HF fills them with 0, which a
//! negative bias could let win; DeepSeek's code uses -inf, as here).
//!
//! # Validation
//! `E ≥ 1`; `bias` has length `E`; `n_group ≥ 1` divides `E`; `1 ≤ topk_group ≤ n_group`;
//! `1 ≤ top_k ≤ topk_group · E / n_group` (enough experts survive); `routed_scaling_factor` finite; every
//! logit and bias value finite (a NaN has no place in an order, and an infinite logit makes softmax NaN).
use crate::error::{expect_shape, invalid};
use crate::{Float, OpsError, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};

const OP: &str = "moe_gating_topk";

/// Added to the weight sum before dividing, as in DeepSeek-V3 and aclnnMoeGatingTopK's `eps`.
pub const NORMALIZE_EPS: f32 = 1e-20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFunc {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatingConfig {
    pub top_k: usize,
    /// Number of expert groups (1 = plain top-k). Must divide E.
    pub n_group: usize,
    /// Groups kept per token.
    pub topk_group: usize,
    pub score: ScoreFunc,
    /// Divide the K weights by their sum (+1e-20) before scaling.
    pub normalize: bool,
    pub routed_scaling_factor: f32,
}

impl GatingConfig {
    /// DeepSeek-V3/R1's router: sigmoid, top-8 of 256 experts in 8 groups keeping 4, normalized, ×2.5.
    pub fn deepseek_v3() -> GatingConfig {
        GatingConfig {
            top_k: 8,
            n_group: 8,
            topk_group: 4,
            score: ScoreFunc::Sigmoid,
            normalize: true,
            routed_scaling_factor: 2.5,
        }
    }

    /// Check the configuration against `num_experts`; the errors name `op`.
    pub fn validate(&self, op: &'static str, num_experts: usize) -> Result<()> {
        if num_experts == 0 {
            return Err(invalid(op, "logits", "needs at least one expert (E = 0)"));
        }
        if num_experts > i32::MAX as usize {
            return Err(invalid(
                op,
                "logits",
                format!("E = {num_experts} does not fit the i32 ids"),
            ));
        }
        if num_experts.checked_rem(self.n_group) != Some(0) {
            return Err(invalid(
                op,
                "n_group",
                format!("{} does not divide E = {num_experts}", self.n_group),
            ));
        }
        if self.topk_group == 0 || self.topk_group > self.n_group {
            return Err(invalid(
                op,
                "topk_group",
                format!(
                    "{} is not in [1, n_group = {}]",
                    self.topk_group, self.n_group
                ),
            ));
        }
        let eligible = self.topk_group * (num_experts / self.n_group);
        if self.top_k == 0 || self.top_k > eligible {
            return Err(invalid(
                op,
                "top_k",
                format!(
                    "{} is not in [1, {eligible}] (experts in the {} surviving groups)",
                    self.top_k, self.topk_group
                ),
            ));
        }
        if !self.routed_scaling_factor.is_finite() {
            return Err(invalid(
                op,
                "routed_scaling_factor",
                format!("{} is not finite", self.routed_scaling_factor),
            ));
        }
        Ok(())
    }
}

/// Returns `(ids i32 [T,K], weights f32 [T,K])`, ids in descending order of biased score.
pub fn moe_gating_topk<T: Float>(
    logits: ArrayView2<T>,
    bias: Option<ArrayView1<f32>>,
    cfg: &GatingConfig,
) -> Result<(Array2<i32>, Array2<f32>)> {
    let tokens = logits.nrows();
    check_gating(OP, &logits, bias.as_ref(), cfg)?;
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());

    let k = cfg.top_k;
    let mut ids = Array2::<i32>::zeros((tokens, k));
    let mut weights = Array2::<f32>::zeros((tokens, k));
    for t in 0..tokens {
        let row: Vec<f32> = logits.row(t).iter().map(|v| v.to_f32()).collect();
        let scores = scores(&row, cfg.score);
        let select = selection_scores(&scores, bias.as_deref());
        let chosen = select_experts(&select, bias.is_some(), cfg);
        let w = weights_of(&scores, &chosen, cfg);
        for (j, (&e, &wj)) in chosen.iter().zip(&w).enumerate() {
            // `validate` bounded E by i32::MAX.
            ids[[t, j]] = e as i32;
            weights[[t, j]] = wj;
        }
    }
    Ok((ids, weights))
}

/// Step 1: `softmax` (max-subtracted) or element-wise `sigmoid`, in `f32`.
pub fn scores(logits: &[f32], func: ScoreFunc) -> Vec<f32> {
    match func {
        ScoreFunc::Sigmoid => logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
        ScoreFunc::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|&e| e / sum).collect()
        }
    }
}

/// Step 2: the scores the selection ranks by (`scores + bias`).
pub fn selection_scores(scores: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    match bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.to_vec(),
    }
}

/// Steps 3–4 for one token: the chosen expert indices, in descending selection score.
pub fn select_experts(select: &[f32], has_bias: bool, cfg: &GatingConfig) -> Vec<usize> {
    let group_size = select.len() / cfg.n_group;
    let group_scores: Vec<f32> = select
        .chunks(group_size)
        .map(|g| {
            if has_bias {
                sum_of_top2(g)
            } else {
                g.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            }
        })
        .collect();
    let kept_groups = top_indices(&group_scores, cfg.topk_group, |_| true);
    let mut eligible = vec![false; cfg.n_group];
    for g in kept_groups {
        eligible[g] = true;
    }
    top_indices(select, cfg.top_k, |e| eligible[e / group_size])
}

/// The sum of the two largest values (of the one value if there is only one).
fn sum_of_top2(group: &[f32]) -> f32 {
    top_indices(group, 2.min(group.len()), |_| true)
        .iter()
        .map(|&i| group[i])
        .sum()
}

/// The `n` indices with the largest values among those `allowed`, largest first; ties go to the lower
/// index. Repeated arg-max with a strict `>` scanning upward gives exactly that order. The caller
/// guarantees at least `n` allowed indices and no NaN.
fn top_indices(values: &[f32], n: usize, allowed: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut taken = vec![false; values.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut best: Option<usize> = None;
        for (i, &v) in values.iter().enumerate() {
            if taken[i] || !allowed(i) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => v > values[b],
            };
            if better {
                best = Some(i);
            }
        }
        match best {
            Some(b) => {
                taken[b] = true;
                out.push(b);
            }
            None => break,
        }
    }
    out
}

/// Step 5: unbiased scores of the chosen experts, normalized and scaled.
pub fn weights_of(scores: &[f32], chosen: &[usize], cfg: &GatingConfig) -> Vec<f32> {
    let mut w: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
    if cfg.normalize {
        let denom = w.iter().sum::<f32>() + NORMALIZE_EPS;
        w.iter_mut().for_each(|v| *v /= denom);
    }
    w.iter_mut().for_each(|v| *v *= cfg.routed_scaling_factor);
    w
}

/// The checks of [`moe_gating_topk`] (see the module docs), errors naming `op`: the configuration
/// against E, the bias, then every logit finite. The device backend runs the same ones.
pub fn check_gating<T: Float>(
    op: &'static str,
    logits: &ArrayView2<T>,
    bias: Option<&ArrayView1<f32>>,
    cfg: &GatingConfig,
) -> Result<()> {
    check_gating_config(op, logits.ncols(), bias, cfg)?;
    check_finite(op, "logits", logits)
}

/// The configuration against `experts`, then the bias (`[E]`, every value finite).
pub fn check_gating_config(
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

/// Every element of `a` finite, or [`OpsError::InvalidArgument`] naming `arg` and the first offender.
pub fn check_finite<T: Float>(
    op: &'static str,
    arg: &'static str,
    a: &ArrayView2<T>,
) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.to_f32().is_finite()) {
        Some(((r, c), v)) => Err(OpsError::InvalidArgument {
            op,
            arg,
            reason: format!("element [{r}, {c}] is {}, not finite", v.to_f32()),
        }),
        None => Ok(()),
    }
}
