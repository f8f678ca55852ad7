//! Entry points of the MoE kernels: gating top-k, dispatch (init routing, plain and int8), grouped
//! matmul (by a group list, or equal groups laid out with strides), the fused expert FFN, and combine
//! (finalize routing). Shapes are row-major; `T` is the dtype of the float tensors
//! (`DSNPU_DTYPE_*`); ids and row indices are `int32`, token counts and group lists `int64`, weights
//! and scales `float`.

use std::ffi::c_void;

use dsnpu_kernels::launch::{
    self, CombineShape, FfnShape, GroupList, GroupedShape, Operand, RoutingShape,
    StridedGroupedShape,
};
use dsnpu_kernels::{GatingParams, MoeList, MoeScore, RowLayout};

use crate::args::{code, device_tensors, kernel, product, size, with_dtype};
use crate::context::{context, DsnpuContext};
use crate::error::{guard, CapiError, Result};
use crate::{DSNPU_LIST_COUNT, DSNPU_LIST_CUMSUM, DSNPU_SCORE_SIGMOID, DSNPU_SCORE_SOFTMAX};

fn list_type(func: &'static str, c: i32) -> Result<MoeList> {
    Ok(
        match code(func, "list type", c, &[DSNPU_LIST_CUMSUM, DSNPU_LIST_COUNT])? {
            DSNPU_LIST_CUMSUM => MoeList::Cumsum,
            _ => MoeList::Count,
        },
    )
}

/// Gating: scores `s = softmax(logits)` or `sigmoid(logits)` per token (`score_func`
/// `DSNPU_SCORE_*`); experts are chosen by `s + bias` (`bias`: `float [experts]` or NULL) restricted
/// to the best `topk_group` of `n_group` equal groups (a group's score: the sum of its two best), the
/// `top_k` best in descending order, ties to the lower id. `weights` are the chosen `s` (without the
/// bias), divided by their sum when `normalize` is non-zero, times `routed_scaling_factor`.
/// `logits`: `T [tokens, experts]`; `ids`: `int32 [tokens, top_k]`; `weights`: `float [tokens,
/// top_k]`. The kernel takes up to 512 experts and `top_k` up to 16; `n_group` must divide `experts`.
///
/// # Safety
/// `ctx` is a live context; `stream` a live stream of its device (see the crate docs); each non-null
/// pointer addresses device memory of the size given above, valid until the stream has run the kernel.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_moe_gating_topk(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    logits: *const c_void,
    bias: *const c_void,
    ids: *mut c_void,
    weights: *mut c_void,
    tokens: i64,
    experts: i64,
    top_k: i64,
    n_group: i64,
    topk_group: i64,
    score_func: i32,
    normalize: i32,
    routed_scaling_factor: f32,
) -> i32 {
    const F: &str = "dsnpu_moe_gating_topk";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let (tokens, experts) = (size(F, "tokens", tokens)?, size(F, "experts", experts)?);
        let top_k = size(F, "top_k", top_k)?;
        let (n_group, topk_group) = (
            size(F, "n_group", n_group)?,
            size(F, "topk_group", topk_group)?,
        );
        if top_k > experts {
            return Err(CapiError::Invalid {
                func: F,
                reason: format!("top_k {top_k} > experts {experts}"),
            });
        }
        let score = match code(
            F,
            "score function",
            score_func,
            &[DSNPU_SCORE_SOFTMAX, DSNPU_SCORE_SIGMOID],
        )? {
            DSNPU_SCORE_SOFTMAX => MoeScore::Softmax,
            _ => MoeScore::Sigmoid,
        };
        let te = product(F, "tokens * experts", &[tokens, experts])?;
        let tk = product(F, "tokens * top_k", &[tokens, top_k])?;
        let p = GatingParams {
            top_k: top_k as u64,
            n_group: n_group as u64,
            topk_group: topk_group as u64,
            score,
            has_bias: !bias.is_null(),
            normalize: normalize != 0,
            routed_scaling_factor,
        };
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input logits: T [te],
                optional bias: f32 [experts],
                output ids: i32 [tk],
                output weights: f32 [tk],
            );
            launch::moe_gating_topk(ctx.lib(), &s, &logits, bias.as_ref(), &mut ids, &mut weights, tokens, experts, &p)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// The dispatch shape shared by the two init-routing entry points.
#[allow(clippy::too_many_arguments)]
fn routing_shape(
    func: &'static str,
    tokens: i64,
    hidden: i64,
    top_k: i64,
    experts: i64,
    active_start: i64,
    active_end: i64,
    list: i32,
) -> Result<RoutingShape> {
    let experts = size(func, "experts", experts)?;
    let active = if active_start < 0 && active_end < 0 {
        None
    } else {
        let (a, b) = (
            size(func, "active_start", active_start)?,
            size(func, "active_end", active_end)?,
        );
        if a > b || b > experts {
            return Err(CapiError::Invalid {
                func,
                reason: format!("active experts {a}..{b} not within 0..{experts}"),
            });
        }
        Some(a..b)
    };
    Ok(RoutingShape {
        tokens: size(func, "tokens", tokens)?,
        hidden: size(func, "hidden", hidden)?,
        top_k: size(func, "top_k", top_k)?,
        experts,
        active,
        mode: list_type(func, list)?,
    })
}

/// Dispatch: the `tokens * top_k` (token, expert) pairs of `ids` (`int32 [tokens, top_k]`, each in
/// `0..experts`: not validated) sorted stably by expert; `expanded_x` row `r` (`T [tokens * top_k,
/// hidden]`; rows past the active pairs are not written) is the token of the `r`-th pair;
/// `expanded_row_idx[t * top_k + k]` (`int32 [tokens * top_k]`) is the row of pair `(t, k)`, or -1
/// when its expert is outside the active range; `expert_tokens` (`int64 [experts]`) the rows per
/// expert (`DSNPU_LIST_COUNT`) or their inclusive cumulative sum (`DSNPU_LIST_CUMSUM`), 0 outside the
/// active range. Active range: experts `active_start..active_end` (expert parallelism), or all when
/// both are negative.
///
/// # Safety
/// As [`dsnpu_moe_gating_topk`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_moe_init_routing(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    ids: *const c_void,
    expanded_x: *mut c_void,
    expanded_row_idx: *mut c_void,
    expert_tokens: *mut c_void,
    tokens: i64,
    hidden: i64,
    top_k: i64,
    experts: i64,
    active_start: i64,
    active_end: i64,
    list_type: i32,
) -> i32 {
    const F: &str = "dsnpu_moe_init_routing";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let shape = routing_shape(
            F,
            tokens,
            hidden,
            top_k,
            experts,
            active_start,
            active_end,
            list_type,
        )?;
        let th = product(F, "tokens * hidden", &[shape.tokens, shape.hidden])?;
        let pairs = product(F, "tokens * top_k", &[shape.tokens, shape.top_k])?;
        let ph = product(F, "tokens * top_k * hidden", &[pairs, shape.hidden])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [th],
                input ids: i32 [pairs],
                output expanded_x: T [ph],
                output expanded_row_idx: i32 [pairs],
                output expert_tokens: i64 [shape.experts],
            );
            launch::moe_init_routing(ctx.lib(), &s, &x, &ids, &mut expanded_x, &mut expanded_row_idx, &mut expert_tokens, &shape)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Dispatch with int8 quantization: as [`dsnpu_moe_init_routing`], but each expanded row is stored
/// as `int8` codes (`expanded_x`: `int8 [tokens * top_k, hidden]`) with its dequantization scale
/// (`scales`: `float [tokens * top_k]`, `x ≈ code * scale`, symmetric per row: `scale = max|x| /
/// 127`).
///
/// # Safety
/// As [`dsnpu_moe_gating_topk`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_moe_init_routing_quant(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    ids: *const c_void,
    expanded_x: *mut c_void,
    scales: *mut c_void,
    expanded_row_idx: *mut c_void,
    expert_tokens: *mut c_void,
    tokens: i64,
    hidden: i64,
    top_k: i64,
    experts: i64,
    active_start: i64,
    active_end: i64,
    list_type: i32,
) -> i32 {
    const F: &str = "dsnpu_moe_init_routing_quant";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let shape = routing_shape(
            F,
            tokens,
            hidden,
            top_k,
            experts,
            active_start,
            active_end,
            list_type,
        )?;
        let th = product(F, "tokens * hidden", &[shape.tokens, shape.hidden])?;
        let pairs = product(F, "tokens * top_k", &[shape.tokens, shape.top_k])?;
        let ph = product(F, "tokens * top_k * hidden", &[pairs, shape.hidden])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [th],
                input ids: i32 [pairs],
                output expanded_x: i8 [ph],
                output scales: f32 [pairs],
                output expanded_row_idx: i32 [pairs],
                output expert_tokens: i64 [shape.experts],
            );
            launch::moe_init_routing_quant(
                ctx.lib(), &s, &x, &ids, &mut expanded_x, &mut scales, &mut expanded_row_idx, &mut expert_tokens, &shape,
            )
            .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Grouped matmul: `y[r] = x[r] · w[g]ᵀ` for the rows `r` of group `g`, groups consecutive from row
/// 0 as `group_list` (`int64 [groups]`, counts or inclusive cumsum per `list_type`; clamped to `rows`
/// by the kernel) gives them; rows after the last group are not written. `x`: `T [rows, k]`; `w`:
/// `T [groups, n, k]`; `y`: `T [rows, n]`.
///
/// # Safety
/// As [`dsnpu_moe_gating_topk`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_grouped_matmul(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    w: *const c_void,
    group_list: *const c_void,
    y: *mut c_void,
    rows: i64,
    groups: i64,
    n: i64,
    k: i64,
    list_type: i32,
) -> i32 {
    const F: &str = "dsnpu_grouped_matmul";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let shape = GroupedShape {
            rows: size(F, "rows", rows)?,
            groups: size(F, "groups", groups)?,
            n: size(F, "n", n)?,
            k: size(F, "k", k)?,
        };
        let kind = self::list_type(F, list_type)?;
        let rk = product(F, "rows * k", &[shape.rows, shape.k])?;
        let gnk = product(F, "groups * n * k", &[shape.groups, shape.n, shape.k])?;
        let rn = product(F, "rows * n", &[shape.rows, shape.n])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [rk],
                input w: T [gnk],
                input group_list: i64 [shape.groups],
                output y: T [rn],
            );
            launch::grouped_matmul(ctx.lib(), &s, &x, &w, GroupList::all(&group_list, kind), &mut y, shape)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Grouped matmul over `groups` equal groups of `rows` rows laid out with strides, with no group list:
/// `y_g = x_g · w[g]ᵀ`, row `i` of group `g` read from element `g · x_group + i · x_ld` of `x` (`k`
/// values) and written at element `g · y_group + i · y_ld` of `y` (`n` values); the elements of `y`
/// between those rows keep what they hold. `w`: `T [groups, n, k]`. `x` holds at least
/// `(groups − 1) · x_group + (rows − 1) · x_ld + k` elements, `y` the same with its strides and `n`.
/// The per-head products of absorbed MLA on `[T, H, d]` activations without transposing them: for
/// `q [T, H, 192]` times `W_UK [H, 512, 128]` on each head's first 128 columns into `[T, H, 512]`,
/// `groups = H`, `rows = T`, `n = 512`, `k = 128`, `x_ld = 192 · H`, `x_group = 192`, `y_ld = 512 · H`,
/// `y_group = 512`. Rows of `x` closer than `k` apart, and `y` layouts whose rows overlap, are
/// `DSNPU_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// As [`dsnpu_moe_gating_topk`], with the sizes above.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_grouped_matmul_strided(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    w: *const c_void,
    y: *mut c_void,
    groups: i64,
    rows: i64,
    n: i64,
    k: i64,
    x_ld: i64,
    x_group: i64,
    y_ld: i64,
    y_group: i64,
) -> i32 {
    const F: &str = "dsnpu_grouped_matmul_strided";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let stride = |name, v| size(F, name, v).map(|v| v as u64);
        let shape = StridedGroupedShape {
            groups: size(F, "groups", groups)?,
            rows: size(F, "rows", rows)?,
            n: size(F, "n", n)?,
            k: size(F, "k", k)?,
            x: RowLayout {
                ld: stride("x_ld", x_ld)?,
                group: stride("x_group", x_group)?,
            },
            y: RowLayout {
                ld: stride("y_ld", y_ld)?,
                group: stride("y_group", y_group)?,
            },
        };
        let extent = |operand, what: &str| {
            shape.extent(operand).ok_or_else(|| CapiError::Invalid {
                func: F,
                reason: format!("the extent of {what} overflows"),
            })
        };
        let (x_len, y_len) = (extent(Operand::X, "x")?, extent(Operand::Y, "y")?);
        let gnk = product(F, "groups * n * k", &[shape.groups, shape.n, shape.k])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [x_len],
                input w: T [gnk],
                output y: T [y_len],
            );
            launch::grouped_matmul_strided(ctx.lib(), &s, &x, &w, &mut y, shape)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// The fused expert FFN: per group `g` (as in [`dsnpu_grouped_matmul`]), `h = silu(x · w_gate[g]ᵀ) *
/// (x · w_up[g]ᵀ)` (f32, rounded to `T` once) and `y = h · w_down[g]ᵀ`. `x`, `y`: `T [rows, hidden]`;
/// `w_gate`, `w_up`: `T [groups, inter, hidden]`; `w_down`: `T [groups, hidden, inter]`. Workspace
/// (`[rows, inter]` f32 and `T`) comes from the context's pool, ordered on the stream.
///
/// # Safety
/// As [`dsnpu_moe_gating_topk`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_expert_ffn(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    w_gate: *const c_void,
    w_up: *const c_void,
    w_down: *const c_void,
    group_list: *const c_void,
    y: *mut c_void,
    rows: i64,
    groups: i64,
    hidden: i64,
    inter: i64,
    list_type: i32,
) -> i32 {
    const F: &str = "dsnpu_expert_ffn";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let shape = FfnShape {
            rows: size(F, "rows", rows)?,
            groups: size(F, "groups", groups)?,
            max_group_rows: size(F, "rows", rows)?,
            hidden: size(F, "hidden", hidden)?,
            inter: size(F, "inter", inter)?,
        };
        let kind = self::list_type(F, list_type)?;
        let rh = product(F, "rows * hidden", &[shape.rows, shape.hidden])?;
        let gih = product(
            F,
            "groups * inter * hidden",
            &[shape.groups, shape.inter, shape.hidden],
        )?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [rh],
                input w_gate: T [gih],
                input w_up: T [gih],
                input w_down: T [gih],
                input group_list: i64 [shape.groups],
                output y: T [rh],
            );
            launch::expert_ffn(ctx.lib(), &s, &x, &w_gate, &w_up, &w_down, GroupList::all(&group_list, kind), &mut y, shape)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Combine: `out[t] = Σ_k weights[t, k] · y[expanded_row_idx[t * top_k + k]] (+ shared[t])
/// (+ residual[t])`, in f32 in that order, rounded once; an index of -1 contributes nothing (indices
/// `>= rows` are not validated). `y`: `T [rows, hidden]`; `expanded_row_idx`: `int32 [tokens *
/// top_k]`; `weights`: `float [tokens, top_k]`; `shared`, `residual`: `T [tokens, hidden]` or NULL;
/// `out`: `T [tokens, hidden]`.
///
/// # Safety
/// As [`dsnpu_moe_gating_topk`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_moe_finalize_routing(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    y: *const c_void,
    expanded_row_idx: *const c_void,
    weights: *const c_void,
    shared: *const c_void,
    residual: *const c_void,
    out: *mut c_void,
    tokens: i64,
    hidden: i64,
    top_k: i64,
    rows: i64,
) -> i32 {
    const F: &str = "dsnpu_moe_finalize_routing";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let shape = CombineShape {
            tokens: size(F, "tokens", tokens)?,
            hidden: size(F, "hidden", hidden)?,
            top_k: size(F, "top_k", top_k)?,
            rows: size(F, "rows", rows)?,
        };
        let rh = product(F, "rows * hidden", &[shape.rows, shape.hidden])?;
        let pairs = product(F, "tokens * top_k", &[shape.tokens, shape.top_k])?;
        let th = product(F, "tokens * hidden", &[shape.tokens, shape.hidden])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input y: T [rh],
                input expanded_row_idx: i32 [pairs],
                input weights: f32 [pairs],
                optional shared: T [th],
                optional residual: T [th],
                output out: T [th],
            );
            launch::moe_finalize_routing(ctx.lib(), &s, &y, &expanded_row_idx, &weights, shared.as_ref(), residual.as_ref(), &mut out, shape)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}
