//! Tilings of the mixture-of-experts kernels (`src/ascendc/moe_*.cpp`): the structs generated from
//! `DsnpuMoeGatingTiling`, `DsnpuMoeInitRoutingTiling`, `DsnpuGroupedMatmulTiling`,
//! `DsnpuExpertFfnTiling` and `DsnpuMoeFinalizeTiling` (`include/dsnpu_kernels/tiling.h`; a test
//! compares the layouts with the C compiler's), computed from shapes and the hardware budget.
//!
//! Contract, as for [`crate::tiling`]: each `new` validates the shape against what its kernel takes and
//! returns a tiling whose Unified Buffer plan — the formula the kernel's source states and allocates,
//! mirrored by `ub_bytes()` — fits the budget, or a typed error. `block_dim()` is the number of blocks to
//! launch (for `moe_init_routing` exactly that many: its workspace holds one histogram per block) and
//! `workspace_bytes()` the device workspace the launch must pass (0: none). The kernels trust these
//! values.
//!
//! Not checked here, because it lives on the device: expert ids, row indices and group lists. The
//! kernels bound every access they make through them: an id outside the active expert range is dropped,
//! a row index is checked against `rows` by the simulator (undefined on an NPU, like any out-of-range
//! index), a group list is clamped to `[0, rows]` (a malformed one gives wrong rows, never a stray
//! access). Launchers with host copies of these should validate them as `dsnpu-ops` does.

use std::ops::Range;

use crate::tiling::{
    invalid, largest_fit, round_up, split, to_u32, FRACTAL, GM_BYTES_PER_CORE_CYCLE,
    MAX_ROWS_PER_COPY, UB_BLOCK,
};
use crate::tiling_cube::{wide_bases, CubeTiling, SYS_WORKSPACE_BYTES};
use crate::{CoreBudget, KernelDtype, KernelError, Result};

pub use crate::tiling_structs::{
    ExpertFfnTiling, GroupedMatmulTiling, MoeFinalizeTiling, MoeGatingTiling, MoeInitRoutingTiling,
};

/// How gating turns logits into scores (`DSNPU_MOE_SCORE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MoeScore {
    /// `softmax` over the experts (max-subtracted).
    Softmax = 0,
    /// Element-wise `sigmoid`.
    Sigmoid = 1,
}

/// The form of a per-expert token list (`DSNPU_MOE_LIST_*`, numbered like aclnn's
/// `expertTokensNumType` / `group_list_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MoeList {
    /// Inclusive cumulative sums.
    Cumsum = 0,
    /// Rows per expert.
    Count = 1,
}

/// The routing configuration of `moe_gating_topk` (dsnpu-ops' `GatingConfig`, plus whether a
/// correction bias is passed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatingParams {
    pub top_k: u64,
    pub n_group: u64,
    pub topk_group: u64,
    pub score: MoeScore,
    pub has_bias: bool,
    pub normalize: bool,
    pub routed_scaling_factor: f32,
}

/// Largest expert count `moe_gating_topk` takes.
pub const GATING_MAX_EXPERTS: u64 = 512;
/// Largest top-k `moe_gating_topk` takes.
pub const GATING_MAX_TOP_K: u64 = 16;

impl MoeGatingTiling {
    /// Logits `[tokens, experts]` routed by `p`.
    pub fn new(
        tokens: u64,
        experts: u64,
        p: &GatingParams,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "moe_gating_topk";
        let budget = budget.validate()?;
        if tokens == 0 {
            return Err(invalid(K, "no tokens"));
        }
        if experts == 0 || experts > GATING_MAX_EXPERTS {
            return Err(invalid(
                K,
                format!("{experts} experts (the kernel takes 1..={GATING_MAX_EXPERTS})"),
            ));
        }
        if p.n_group == 0 || !experts.is_multiple_of(p.n_group) {
            return Err(invalid(
                K,
                format!("n_group {} does not divide {experts} experts", p.n_group),
            ));
        }
        if p.topk_group == 0 || p.topk_group > p.n_group {
            return Err(invalid(
                K,
                format!("topk_group {} is not in 1..={}", p.topk_group, p.n_group),
            ));
        }
        let eligible = p.topk_group * (experts / p.n_group);
        if p.top_k == 0 || p.top_k > eligible.min(GATING_MAX_TOP_K) {
            return Err(invalid(
                K,
                format!(
                    "top_k {} is not in 1..={} (experts of the kept groups, at most {GATING_MAX_TOP_K})",
                    p.top_k,
                    eligible.min(GATING_MAX_TOP_K)
                ),
            ));
        }
        if !p.routed_scaling_factor.is_finite() {
            return Err(invalid(
                K,
                format!(
                    "routed_scaling_factor {} is not finite",
                    p.routed_scaling_factor
                ),
            ));
        }
        let tokens = to_u32(K, "tokens", tokens)?;
        to_u32(K, "tokens * experts", u64::from(tokens) * experts)?;
        let mut t = MoeGatingTiling {
            tokens,
            experts: experts as u32,
            top_k: p.top_k as u32,
            n_group: p.n_group as u32,
            topk_group: p.topk_group as u32,
            group_pad: round_up(experts / p.n_group, 16) as u32,
            score_func: p.score as u32,
            has_bias: u32::from(p.has_bias),
            normalize: u32::from(p.normalize),
            routed_scaling_factor: p.routed_scaling_factor,
            tokens_per_block: 0,
            tokens_per_tile: 0,
        };
        let (per_block, _) = split(tokens, budget.cores);
        t.tokens_per_block = per_block;
        // A tile moves tokens x n_group blocks in one DataCopyPad.
        let cap = per_block.min(MAX_ROWS_PER_COPY / t.n_group).max(1);
        // ub_bytes is affine in the tile but for the rounding of the two output queues (4 x < 32 bytes).
        let fixed = t.ub_plan(dtype, 0) + 4 * (UB_BLOCK - 1);
        let per = t.ub_plan(dtype, 1) - t.ub_plan(dtype, 0);
        t.tokens_per_tile = largest_fit(K, fixed, per, cap, budget.ub_bytes)?;
        Ok(t)
    }

    /// UB bytes with a tile of `tile` tokens, as the kernel allocates them (see its source). The output
    /// queues' rounding makes it not quite affine, so the affine part is computed separately.
    fn ub_plan(&self, dtype: KernelDtype, tile: u64) -> u64 {
        let g = u64::from(self.n_group) * u64::from(self.group_pad);
        let groups = round_up(u64::from(self.n_group) * 4, UB_BLOCK);
        let reduce = u64::from((self.experts / self.n_group).max(self.n_group));
        let work = round_up(reduce.div_ceil(64) * 2 * 4, UB_BLOCK);
        let bias = if self.has_bias != 0 { 4 * g } else { 0 };
        let out = tile * u64::from(self.top_k) * 4;
        2 * tile * g * u64::from(dtype.size())
            + 4 * tile * g
            + 4 * g
            + bias
            + 3 * groups
            + UB_BLOCK
            + work
            + 4 * out
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let tile = u64::from(self.tokens_per_tile);
        let out = tile * u64::from(self.top_k) * 4;
        self.ub_plan(dtype, tile) - 4 * out + 4 * round_up(out, UB_BLOCK)
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.tokens.div_ceil(self.tokens_per_block)
    }

    /// Device workspace the launch needs: none.
    pub fn workspace_bytes(&self) -> u64 {
        0
    }
}

/// Pairs of ids a routing block holds in UB at once (16 KiB of int32), at most.
const ROUTING_CHUNK_PAIRS: u64 = 4096;

impl MoeInitRoutingTiling {
    /// `x [tokens, hidden]`, `ids [tokens, top_k]` over `experts` experts, keeping those in `active`
    /// (all when `None`); `quant` selects the int8 kernel's plan.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: u64,
        hidden: u64,
        top_k: u64,
        experts: u64,
        active: Option<Range<u64>>,
        mode: MoeList,
        quant: bool,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        let k = Self::name(quant);
        let budget = budget.validate()?;
        if tokens == 0 || hidden == 0 || top_k == 0 || experts == 0 {
            return Err(invalid(
                k,
                format!("empty shape: {tokens} tokens, hidden {hidden}, top_k {top_k}, {experts} experts"),
            ));
        }
        let active = active.unwrap_or(0..experts);
        if active.start > active.end || active.end > experts {
            return Err(invalid(
                k,
                format!(
                    "active range {}..{} is not within 0..{experts}",
                    active.start, active.end
                ),
            ));
        }
        if tokens.saturating_mul(top_k) > i32::MAX as u64 {
            return Err(invalid(
                k,
                format!("{tokens} x {top_k} pairs do not fit the int32 row index"),
            ));
        }
        let tokens = to_u32(k, "tokens", tokens)?;
        let hidden = to_u32(k, "hidden", hidden)?;
        let top_k = to_u32(k, "top_k", top_k)?;
        let experts = to_u32(k, "experts", experts)?;
        to_u32(k, "row bytes", u64::from(hidden) * u64::from(dtype.size()))?;
        to_u32(k, "expert_tokens bytes", u64::from(experts) * 8)?;
        let (tokens_per_block, blocks) = split(tokens, budget.cores);
        if blocks > MAX_ROWS_PER_COPY {
            return Err(invalid(
                k,
                format!("{blocks} blocks exceed {MAX_ROWS_PER_COPY} histogram rows per copy"),
            ));
        }
        to_u32(
            k,
            "workspace words",
            (u64::from(blocks) + 1) * u64::from(experts),
        )?;
        let mut t = MoeInitRoutingTiling {
            tokens,
            hidden,
            top_k,
            experts,
            active_start: active.start as u32,
            active_end: active.end as u32,
            tokens_mode: mode as u32,
            blocks,
            tokens_per_block,
            tokens_per_chunk: tokens_per_block
                .min((ROUTING_CHUNK_PAIRS / u64::from(top_k)).max(1) as u32),
            tokens_per_tile: 0,
            experts_per_block: round_up(u64::from(experts.div_ceil(blocks)), 8) as u32,
        };
        // Shrink the ids chunk until at least one row tile fits next to it.
        loop {
            let (fixed, per_row) = t.ub_plan(dtype, quant);
            if fixed + per_row <= u64::from(budget.ub_bytes) || t.tokens_per_chunk == 1 {
                let cap = t.tokens_per_chunk.min(MAX_ROWS_PER_COPY);
                t.tokens_per_tile = largest_fit(k, fixed, per_row, cap, budget.ub_bytes)?;
                return Ok(t);
            }
            t.tokens_per_chunk = t.tokens_per_chunk.div_ceil(2);
        }
    }

    fn name(quant: bool) -> &'static str {
        if quant {
            "moe_init_routing_quant"
        } else {
            "moe_init_routing"
        }
    }

    /// UB bytes as (independent of the tile, per tile row), as the kernel allocates them.
    fn ub_plan(&self, dtype: KernelDtype, quant: bool) -> (u64, u64) {
        let s = u64::from(dtype.size());
        let hidden = u64::from(self.hidden);
        let experts = u64::from(self.experts);
        let xb = round_up(hidden * s, UB_BLOCK);
        let e4 = round_up(experts * 4, UB_BLOCK);
        let e8 = round_up(experts * 8, UB_BLOCK);
        let columns =
            u64::from(self.blocks) * round_up(u64::from(self.experts_per_block) * 4, UB_BLOCK);
        let ids = round_up(
            u64::from(self.tokens_per_chunk) * u64::from(self.top_k) * 4,
            UB_BLOCK,
        );
        let mut fixed = ids + e4 + columns.max(2 * e4 + e8);
        let mut per_row = 2 * xb;
        if quant {
            let f = xb / s * 4;
            fixed += f
                + round_up(hidden * 2, UB_BLOCK)
                + UB_BLOCK
                + round_up(hidden.div_ceil(64) * 8, UB_BLOCK);
            per_row += if dtype == KernelDtype::F32 { 0 } else { f }
                + 2 * round_up(hidden, UB_BLOCK)
                + UB_BLOCK;
        }
        (fixed, per_row)
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype, quant: bool) -> u64 {
        let (fixed, per_row) = self.ub_plan(dtype, quant);
        fixed + per_row * u64::from(self.tokens_per_tile)
    }

    /// Blocks to launch: exactly this many.
    pub fn block_dim(&self) -> u32 {
        self.blocks
    }

    /// Device workspace: one int32 histogram of the experts per block, plus the per-expert totals.
    pub fn workspace_bytes(&self) -> u64 {
        (u64::from(self.blocks) + 1) * u64::from(self.experts) * 4
    }

    /// Rows `expanded_x` must have room for: every pair (only the active ones are written).
    pub fn max_rows(&self) -> u64 {
        u64::from(self.tokens) * u64::from(self.top_k)
    }
}

/// Rows per task of the grouped GEMMs: the cube's sweet spot for one L0A tile.
const GROUPED_SINGLE_M: u64 = 128;

/// Choose single_m for `rows` rows split into groups, of which one holds at most `group_rows`, and
/// `n` output columns on `cores` blocks: as many as the fullest group's rows up to 128, fewer only
/// when n alone cannot make `cores` tiles for that group (splitting m re-reads the weights, splitting
/// n re-reads only the rows). Fewer rows per tile allow wider base blocks ([`wide_bases`]: 1024
/// columns at 16 or 32 rows, 256 at 128), each of which streams a task's rows once.
fn grouped_single_m(rows: u64, group_rows: u64, n: u64, cores: u32) -> u64 {
    let cores = u64::from(cores);
    let max_n_tiles = n.div_ceil(FRACTAL);
    let single_m = round_up(group_rows, FRACTAL)
        .min(GROUPED_SINGLE_M)
        .min(rows);
    if group_rows.div_ceil(single_m) * max_n_tiles < cores {
        let m_tiles = cores.div_ceil(max_n_tiles);
        return round_up(group_rows.div_ceil(m_tiles), FRACTAL).min(single_m);
    }
    single_m
}

/// One GEMM phase of a grouped kernel as the tile choice models it: every task runs `gemms` products
/// `[m, k] x [k, n]` of `elem`-byte inputs and moves `out_bytes` per output element besides.
#[derive(Debug, Clone, Copy)]
struct GroupedPhase {
    n: u64,
    k: u64,
    gemms: u64,
    elem: u64,
    out_bytes: u64,
}

impl GroupedPhase {
    /// Modelled cycles of one task of `m x n` outputs with the bases of (single_m, single_n): the max of
    /// the cube (16x16x16 per cycle) and the GM traffic of the Matmul API, which streams the A panel
    /// once per base_n columns and the B panel once per base_m rows, at the per-core share of HBM.
    fn task_cycles(&self, m: u64, n: u64, single_m: u64, single_n: u64) -> f64 {
        let (base_m, base_n, _) = base_sizes(single_m, single_n, self.k);
        let pad = |v: u64| round_up(v, FRACTAL) as f64;
        let cube = self.gemms as f64 * pad(m) * pad(n) * pad(self.k) / (FRACTAL.pow(3)) as f64;
        let panels =
            m * self.k * n.div_ceil(u64::from(base_n)) + n * self.k * m.div_ceil(u64::from(base_m));
        let bytes = (self.gemms * panels * self.elem + m * n * self.out_bytes) as f64;
        cube.max(bytes / GM_BYTES_PER_CORE_CYCLE)
    }

    /// Modelled cycles of the slowest block when the groups' rows are `(count, rows)` runs of equal
    /// groups: the round-robin deal gives it ceil(tasks / cores) tasks, charged as full tiles.
    fn slowest_block(
        &self,
        groups: &[(u64, u64)],
        single_m: u64,
        single_n: u64,
        cores: u64,
    ) -> f64 {
        let m_tiles: u64 = groups
            .iter()
            .map(|&(count, rows)| count * rows.div_ceil(single_m))
            .sum();
        let largest = groups
            .iter()
            .filter(|&&(count, _)| count > 0)
            .map(|&(_, rows)| rows)
            .max()
            .unwrap_or(0);
        let tasks = m_tiles * self.n.div_ceil(single_n);
        tasks.div_ceil(cores) as f64
            * self.task_cycles(
                largest.min(single_m),
                single_n.min(self.n),
                single_m,
                single_n,
            )
    }
}

/// Choose single_n (whole 16-column fractals, at most `max_n`) for `rows` rows in `groups` groups
/// tiled by `single_m`, weighing the slowest block's cube work against its GM traffic (narrow tiles
/// re-read each group's rows once per tile, wide ones leave cores idle). The rows' split is not known
/// when tiling (it stays on the device), so each width is scored on two splits — one group holding
/// every row, and the rows spread evenly over every group — by its modelled time over the best
/// width's for that split, and the width with the smallest worse ratio wins (ties: wider). Widths that
/// give a hot group fewer tasks than `cores` are taken only when none gives as many. Empty groups have
/// no tasks, so they cost nothing whatever the width.
fn grouped_single_n(
    rows: u64,
    groups: u64,
    single_m: u64,
    phase: GroupedPhase,
    max_n: u64,
    cores: u32,
) -> u64 {
    let cores = u64::from(cores);
    let n = phase.n;
    let g = groups.min(rows).max(1);
    let splits: [&[(u64, u64)]; 2] = [
        &[(1, rows)],
        &[(rows % g, rows / g + 1), (g - rows % g, rows / g)],
    ];
    let widths: Vec<u64> = (1..=n.div_ceil(FRACTAL).min(8 * cores))
        .map(|n_tiles| round_up(n.div_ceil(n_tiles), FRACTAL).min(n))
        .filter(|&w| w <= max_n.max(FRACTAL.min(n)))
        .collect();
    let busy = |w: u64| rows.div_ceil(single_m) * n.div_ceil(w) >= cores;
    let any_busy = widths.iter().any(|&w| busy(w));
    let candidates: Vec<u64> = widths
        .into_iter()
        .filter(|&w| busy(w) || !any_busy)
        .collect();
    let times: Vec<[f64; 2]> = candidates
        .iter()
        .map(|&w| splits.map(|split| phase.slowest_block(split, single_m, w, cores)))
        .collect();
    let best = |i: usize| {
        times
            .iter()
            .map(|t| t[i])
            .fold(f64::INFINITY, f64::min)
            .max(f64::MIN_POSITIVE)
    };
    let best = [best(0), best(1)];
    candidates
        .iter()
        .zip(&times)
        .map(|(&w, t)| ((t[0] / best[0]).max(t[1] / best[1]), w))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map_or(n.min(max_n), |(_, w)| w)
}

/// Base (cube step) sizes within L0A/L0B 64 KiB and L0C 128 KiB (as f32) for every element type.
fn base_sizes(single_m: u64, single_n: u64, k: u64) -> (u32, u32, u32) {
    (
        round_up(single_m, FRACTAL).min(128) as u32,
        round_up(single_n, FRACTAL).min(256) as u32,
        round_up(k, FRACTAL).min(64) as u32,
    )
}

/// [`wide_bases`] as the tiling's u32 fields.
fn wide_base_sizes(single_m: u64, single_n: u64, k: u64) -> (u32, u32, u32) {
    let (m, n, kk) = wide_bases(single_m, single_n, k);
    (m as u32, n as u32, kk as u32)
}

/// The `TCubeTiling` of one grouped GEMM task (`single_m x single_n x k` out of `[rows, n, k]`), sized
/// for 4-byte inputs: an upper bound for every element type the kernels take (f32, f16, bf16, and the
/// FP8 kernels' dequantized panels), so the Matmul's own check with its real types passes as well.
#[allow(clippy::too_many_arguments)]
fn grouped_cube(
    kernel: &'static str,
    rows: u64,
    n: u64,
    k: u64,
    single_m: u64,
    single_n: u64,
    base: (u32, u32, u32),
    cores: u32,
) -> Result<CubeTiling> {
    let base = (u64::from(base.0), u64::from(base.1), u64::from(base.2));
    CubeTiling::without_bias(
        kernel,
        (rows, n, k),
        (single_m, single_n, k),
        base,
        u64::from(cores),
        4,
    )
}

/// Upper bound of the tasks of a grouped GEMM. With `g` non-empty groups of m_i rows,
/// sum ceil(m_i / single_m) = sum (floor((m_i - 1) / single_m) + 1) <= floor((rows - g) / single_m) + g,
/// which grows with g, so g = min(groups, rows) bounds it; times the n-tiles.
fn max_tasks(rows: u64, groups: u64, single_m: u64, n: u64, single_n: u64) -> u64 {
    let g = groups.min(rows);
    ((rows - g) / single_m + g) * n.div_ceil(single_n)
}

fn check_gemm_dims(kernel: &'static str, dims: &[(&str, u64)]) -> Result<()> {
    for &(what, v) in dims {
        if v == 0 {
            return Err(invalid(
                kernel,
                format!("{what} is 0 (launch nothing for an empty product)"),
            ));
        }
        if v > i32::MAX as u64 {
            return Err(invalid(
                kernel,
                format!("{what} = {v} exceeds the cube tiling's int32"),
            ));
        }
    }
    Ok(())
}

impl GroupedMatmulTiling {
    /// `y [rows, n] = x [rows, k] · w[g] [n, k]ᵀ` over `groups` groups given as `list`, on
    /// `budget.cores` cube cores. Empty products (`rows == 0`) are an error: launch nothing.
    pub fn new(
        rows: u64,
        groups: u64,
        n: u64,
        k: u64,
        list: MoeList,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "grouped_matmul";
        let budget = budget.validate()?;
        check_gemm_dims(K, &[("rows", rows), ("groups", groups), ("n", n), ("k", k)])?;
        let single_m = grouped_single_m(rows, rows, n, budget.cores);
        // The tiling does not know the element type: modelled as 2-byte (bf16 / f16) inputs.
        let phase = GroupedPhase {
            n,
            k,
            gemms: 1,
            elem: 2,
            out_bytes: 2,
        };
        let single_n = grouped_single_n(rows, groups, single_m, phase, n, budget.cores);
        let (base_m, base_n, base_k) = base_sizes(single_m, single_n, k);
        let cube = grouped_cube(
            K,
            rows,
            n,
            k,
            single_m,
            single_n,
            (base_m, base_n, base_k),
            budget.cores,
        )?;
        Ok(GroupedMatmulTiling {
            rows: rows as u32,
            groups: groups as u32,
            n: n as u32,
            k: k as u32,
            list_type: list as u32,
            single_m: single_m as u32,
            single_n: single_n as u32,
            base_m,
            base_n,
            base_k,
            group_rows: 0,
            x_ld: 0,
            x_group: 0,
            y_ld: 0,
            y_group: 0,
            cube,
        })
    }

    /// The strided form (`grouped_matmul_strided`): `groups` equal groups of `group_rows` rows, row `i`
    /// of group `g` at element `g · x.group + i · x.ld` of x (its `k` columns) and `g · y.group + i ·
    /// y.ld` of y (`n` columns); tiled as the grouped form of `groups · group_rows` rows. The rows of x
    /// may overlap (they are only read); y's must not: its rows are disjoint either token-major
    /// (`y.group ≥ n` and `y.ld` past the last group's row: `[T, H, n]` written per head) or group-major
    /// (`y.ld ≥ n` and `y.group` past the last row).
    pub fn strided(
        groups: u64,
        group_rows: u64,
        n: u64,
        k: u64,
        x: RowLayout,
        y: RowLayout,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "grouped_matmul_strided";
        check_gemm_dims(K, &[("groups", groups), ("group_rows", group_rows)])?;
        let rows = groups
            .checked_mul(group_rows)
            .ok_or_else(|| invalid(K, "groups x group_rows overflows"))?;
        if x.ld < k {
            return Err(invalid(
                K,
                format!("x rows {} apart overlap their {k} columns", x.ld),
            ));
        }
        if y.ld < n {
            return Err(invalid(
                K,
                format!("y rows {} apart overlap their {n} columns", y.ld),
            ));
        }
        // Each token's groups side by side within ld, or each group's rows within group.
        let spans = |step: u64, count: u64| step.checked_mul(count - 1)?.checked_add(n);
        let token_major = y.group >= n && spans(y.group, groups).is_some_and(|e| y.ld >= e);
        let group_major = spans(y.ld, group_rows).is_some_and(|e| y.group >= e);
        if !(token_major || group_major) {
            return Err(invalid(
                K,
                format!(
                    "y rows of {groups} groups x {group_rows} at (group {}, ld {}) overlap: {n} columns \
                     need the groups' rows side by side within ld or each group's rows within group",
                    y.group, y.ld
                ),
            ));
        }
        // The leading dimensions go to the Matmul API's int32 SetOrgShape.
        check_gemm_dims(K, &[("x.ld", x.ld), ("y.ld", y.ld)])?;
        let mut t = Self::new(rows, groups, n, k, MoeList::Count, budget)?;
        t.group_rows = to_u32(K, "group_rows", group_rows)?;
        t.x_ld = to_u32(K, "x.ld", x.ld)?;
        t.x_group = to_u32(K, "x.group", x.group)?;
        t.y_ld = to_u32(K, "y.ld", y.ld)?;
        t.y_group = to_u32(K, "y.group", y.group)?;
        Ok(t)
    }

    /// Blocks to launch: the cores, or fewer when there cannot be that many tasks.
    pub fn block_dim(&self, budget: CoreBudget) -> u32 {
        let tasks = max_tasks(
            u64::from(self.rows),
            u64::from(self.groups),
            u64::from(self.single_m),
            u64::from(self.n),
            u64::from(self.single_n),
        );
        tasks.min(u64::from(budget.cores)).max(1) as u32
    }

    /// Device workspace the launch needs: none.
    pub fn workspace_bytes(&self) -> u64 {
        0
    }
}

/// Where the rows of a strided grouped GEMM's operand are: row `i` of group `g` starts at element
/// `g · group + i · ld`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLayout {
    /// Elements between a group's consecutive rows.
    pub ld: u64,
    /// Elements between the first rows of consecutive groups.
    pub group: u64,
}

impl RowLayout {
    /// `[T, G, width]` stored token-major, group `g` the `width` columns at `g · stride` of each
    /// token's `groups · stride` (an attention head's slice of `[T, H, d]`, `stride = d`).
    pub fn token_major(groups: u64, stride: u64) -> Self {
        RowLayout {
            ld: groups.saturating_mul(stride),
            group: stride,
        }
    }
}

/// How an expert FFN's tasks are cut along the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnTaskWidths {
    /// By the kernel per launch, from the group list (`expert_ffn_<t>`): the rows' split over the
    /// groups stays on the device, so the kernel cuts the columns as few times as keeps every core busy
    /// and even (`GroupTasks::AdaptWidth` in moe_grouped_matmul.cpp); a group's rows are then read once
    /// per task and 256-to-1024-column base block ([`wide_bases`]). single_n1 / single_n2 are the
    /// widest tasks.
    PerLaunch,
    /// On the host (`expert_ffn_fp8_<t>`, whose per-core workspace holds single_n-wide weight panels):
    /// chosen by the cost model for both a hot group and evenly spread rows (`grouped_single_n`).
    Fixed,
}

impl ExpertFfnTiling {
    /// `x [rows, hidden]` through `groups` experts with gate/up `[groups, inter, hidden]` and down
    /// `[groups, hidden, inter]`, on `budget.cores` cores (cube cores, each with the UB of a vector core
    /// for the SwiGLU), with tasks cut as `widths` says. `max_group_rows` bounds the rows any one group
    /// gets (`rows` when nothing better is known; top-k routing to distinct experts: the tokens): it
    /// sizes the row tiles, and a group beyond it only takes more of them (its weights read once per
    /// tile). Empty inputs (`rows == 0`) and a bound of 0 are errors: launch nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rows: u64,
        groups: u64,
        max_group_rows: u64,
        hidden: u64,
        inter: u64,
        list: MoeList,
        dtype: KernelDtype,
        budget: CoreBudget,
        widths: FfnTaskWidths,
    ) -> Result<Self> {
        let adapt = widths == FfnTaskWidths::PerLaunch;
        const K: &str = "expert_ffn";
        let budget = budget.validate()?;
        check_gemm_dims(
            K,
            &[
                ("rows", rows),
                ("groups", groups),
                ("hidden", hidden),
                ("inter", inter),
            ],
        )?;
        to_u32(K, "hidden * 4", hidden * 4)?;
        to_u32(K, "inter * 4", inter * 4)?;
        if max_group_rows == 0 {
            return Err(invalid(
                K,
                "max_group_rows is 0 (rows when no smaller bound is known)",
            ));
        }
        // One SwiGLU row of single_n1 columns must fit in UB.
        let per_col = Self::swiglu_bytes_per_col(dtype);
        let max_cols = u64::from(budget.ub_bytes) / per_col / FRACTAL * FRACTAL;
        if max_cols == 0 {
            return Err(KernelError::DoesNotFit {
                kernel: K,
                needed: per_col * FRACTAL,
                available: u64::from(budget.ub_bytes),
            });
        }
        // Both phases share single_m (the kernel tiles h's rows as it tiled x's).
        let single_m = grouped_single_m(rows, max_group_rows.min(rows), inter, budget.cores);
        let elem = u64::from(dtype.size());
        // Phase 1: gate and up from x; their f32 tiles are written, read back by the SwiGLU, and h
        // written. Phase 2: down from h.
        let gate_up = GroupedPhase {
            n: inter,
            k: hidden,
            gemms: 2,
            elem,
            out_bytes: 4 * 4 + elem,
        };
        let down = GroupedPhase {
            n: hidden,
            k: inter,
            gemms: 1,
            elem,
            out_bytes: elem,
        };
        let (single_n1, single_n2, (base_m, base_n1, base_k1), (_, base_n2, base_k2)) = if adapt {
            let (n1, n2) = (inter.min(max_cols), hidden);
            (
                n1,
                n2,
                wide_base_sizes(single_m, n1, hidden),
                wide_base_sizes(single_m, n2, inter),
            )
        } else {
            let n1 = grouped_single_n(rows, groups, single_m, gate_up, max_cols, budget.cores);
            let n2 = grouped_single_n(rows, groups, single_m, down, hidden, budget.cores);
            (
                n1,
                n2,
                base_sizes(single_m, n1, hidden),
                base_sizes(single_m, n2, inter),
            )
        };
        let per_row = round_up(single_n1, FRACTAL) * per_col;
        let cap = single_m.min(u64::from(MAX_ROWS_PER_COPY)) as u32;
        let swiglu_rows = largest_fit(K, 0, per_row, cap, budget.ub_bytes)?;
        let cube_up = grouped_cube(
            K,
            rows,
            inter,
            hidden,
            single_m,
            single_n1,
            (base_m, base_n1, base_k1),
            budget.cores,
        )?;
        let cube_down = grouped_cube(
            K,
            rows,
            hidden,
            inter,
            single_m,
            single_n2,
            (base_m, base_n2, base_k2),
            budget.cores,
        )?;
        Ok(ExpertFfnTiling {
            rows: rows as u32,
            groups: groups as u32,
            hidden: hidden as u32,
            inter: inter as u32,
            list_type: list as u32,
            single_m: single_m as u32,
            base_m,
            single_n1: single_n1 as u32,
            base_n1,
            base_k1,
            single_n2: single_n2 as u32,
            base_n2,
            base_k2,
            swiglu_rows,
            adapt_tasks: u32::from(adapt),
            cube_up,
            cube_down,
        })
    }

    /// gate and up queues (2 x 2 x f32), scratch f32, h queue (2 x t).
    fn swiglu_bytes_per_col(dtype: KernelDtype) -> u64 {
        2 * 2 * 4 + 4 + 2 * u64::from(dtype.size())
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        round_up(u64::from(self.single_n1), FRACTAL)
            * Self::swiglu_bytes_per_col(dtype)
            * u64::from(self.swiglu_rows)
    }

    /// Blocks to launch: the cores, or fewer when neither phase can have that many tasks.
    pub fn block_dim(&self, budget: CoreBudget) -> u32 {
        let (rows, groups, m) = (
            u64::from(self.rows),
            u64::from(self.groups),
            u64::from(self.single_m),
        );
        // An adapting kernel may cut the columns down to 16-wide tiles.
        let narrowest = |n: u32| {
            if self.adapt_tasks != 0 {
                FRACTAL
            } else {
                u64::from(n)
            }
        };
        let tasks = max_tasks(
            rows,
            groups,
            m,
            u64::from(self.inter),
            narrowest(self.single_n1),
        )
        .max(max_tasks(
            rows,
            groups,
            m,
            u64::from(self.hidden),
            narrowest(self.single_n2),
        ));
        tasks.min(u64::from(budget.cores)).max(1) as u32
    }

    /// Gate and up in f32 and the intermediate h in t, `[rows, inter]` each: the user workspace.
    pub fn intermediate_bytes(&self, dtype: KernelDtype) -> u64 {
        u64::from(self.rows) * u64::from(self.inter) * (8 + u64::from(dtype.size()))
    }

    /// Device workspace of `expert_ffn` (a mix kernel): the system workspace, then
    /// [`Self::intermediate_bytes`].
    pub fn workspace_bytes(&self, dtype: KernelDtype) -> u64 {
        SYS_WORKSPACE_BYTES + self.intermediate_bytes(dtype)
    }
}

/// Tokens whose indices and weights a combine block loads at once, at most.
const FINALIZE_TILE_TOKENS: u32 = 256;

impl MoeFinalizeTiling {
    /// `out [tokens, hidden]` from `y [rows, hidden]` (`rows` may be 0), `top_k` pairs per token.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: u64,
        hidden: u64,
        top_k: u64,
        rows: u64,
        has_shared: bool,
        has_residual: bool,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "moe_finalize_routing";
        let budget = budget.validate()?;
        if tokens == 0 || hidden == 0 || top_k == 0 {
            return Err(invalid(
                K,
                format!("empty shape: {tokens} tokens, hidden {hidden}, top_k {top_k}"),
            ));
        }
        if tokens.saturating_mul(top_k) > i32::MAX as u64 || rows > i32::MAX as u64 {
            return Err(invalid(
                K,
                format!("{tokens} x {top_k} pairs or {rows} rows do not fit the int32 row index"),
            ));
        }
        let tokens = to_u32(K, "tokens", tokens)?;
        let hidden = to_u32(K, "hidden", hidden)?;
        let (tokens_per_block, _) = split(tokens, budget.cores);
        let mut t = MoeFinalizeTiling {
            tokens,
            hidden,
            top_k: top_k as u32,
            rows: rows as u32,
            has_shared: u32::from(has_shared),
            has_residual: u32::from(has_residual),
            tokens_per_block,
            tokens_per_tile: tokens_per_block.min(FINALIZE_TILE_TOKENS),
            cols_per_tile: hidden,
            mutation: finalize_mutation(),
        };
        let ub = u64::from(budget.ub_bytes);
        // The whole row when it fits, else the widest chunk of whole 64-element groups (32-byte blocks
        // for every type); the index/weight tile shrinks only if not even 64 columns fit next to it.
        while t.ub_bytes(dtype) > ub {
            t.cols_per_tile = 64;
            let fixed = t.ub_bytes(dtype) - 64 * Self::bytes_per_col(dtype);
            if fixed + 64 * Self::bytes_per_col(dtype) <= ub {
                let fit = (ub - fixed) / Self::bytes_per_col(dtype) / 64 * 64;
                t.cols_per_tile = fit.min(u64::from(hidden)) as u32;
            } else if t.tokens_per_tile > 1 {
                t.tokens_per_tile = t.tokens_per_tile.div_ceil(2);
                t.cols_per_tile = hidden;
            } else {
                return Err(KernelError::DoesNotFit {
                    kernel: K,
                    needed: t.ub_bytes(dtype),
                    available: ub,
                });
            }
        }
        Ok(t)
    }

    /// Row and out queues (2 + 2 of t), scratch f32 [+ accumulator f32]: exact for multiples of 64.
    fn bytes_per_col(dtype: KernelDtype) -> u64 {
        4 * u64::from(dtype.size()) + if dtype == KernelDtype::F32 { 4 } else { 8 }
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let pairs = round_up(
            u64::from(self.tokens_per_tile) * u64::from(self.top_k) * 4,
            UB_BLOCK,
        );
        let cols = u64::from(self.cols_per_tile);
        let row = round_up(cols * u64::from(dtype.size()), UB_BLOCK);
        let f = round_up(cols * 4, UB_BLOCK);
        let acc = if dtype == KernelDtype::F32 { 0 } else { f };
        2 * pairs + 4 * row + f + acc
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.tokens.div_ceil(self.tokens_per_block)
    }

    /// Device workspace the launch needs: none.
    pub fn workspace_bytes(&self) -> u64 {
        0
    }
}

/// The systematic error a mutation test seeds into `moe_finalize_routing` (0 = none): read from
/// `DSNPU_KERNEL_MUTATION=moe_finalize_routing:<n>` only with the `mutation` feature; `n` is 1 (every
/// routing weight), 2 (the routed sum) or 3 (the whole output), each off by a factor 1.001.
#[cfg(feature = "mutation")]
fn finalize_mutation() -> u32 {
    crate::mutation::for_kernel("moe_finalize_routing")
}

#[cfg(not(feature = "mutation"))]
fn finalize_mutation() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: CoreBudget = CoreBudget::ASCEND_910B2_VECTOR;
    const C: CoreBudget = CoreBudget::ASCEND_910B2_CUBE;

    fn deepseek() -> GatingParams {
        GatingParams {
            top_k: 8,
            n_group: 8,
            topk_group: 4,
            score: MoeScore::Sigmoid,
            has_bias: true,
            normalize: true,
            routed_scaling_factor: 2.5,
        }
    }

    #[test]
    fn gating_plan_at_deepseek_shapes() {
        for dt in KernelDtype::ALL {
            let t = MoeGatingTiling::new(4096, 256, &deepseek(), dt, V).unwrap();
            // 4096 tokens over 48 cores: 86 per block, 48 blocks; groups of 32 need no padding.
            assert_eq!(
                (t.tokens_per_block, t.block_dim(), t.group_pad),
                (86, 48, 32)
            );
            assert!(t.tokens_per_tile >= 1 && t.ub_bytes(dt) <= u64::from(V.ub_bytes));
            assert!(t.tokens_per_tile * t.n_group <= MAX_ROWS_PER_COPY);
        }
        // Groups of 20 sit 32 elements apart; E = 512, K = 16 is the limit.
        let p = GatingParams {
            top_k: 16,
            n_group: 16,
            topk_group: 8,
            ..deepseek()
        };
        assert_eq!(
            MoeGatingTiling::new(3, 320, &p, KernelDtype::F16, V)
                .unwrap()
                .group_pad,
            32
        );
        assert!(MoeGatingTiling::new(3, 512, &p, KernelDtype::F32, V).is_ok());
    }

    #[test]
    fn gating_rejects_what_the_kernel_cannot_take() {
        let bad = |e: u64, p: GatingParams| {
            matches!(
                MoeGatingTiling::new(4, e, &p, KernelDtype::Bf16, V),
                Err(KernelError::InvalidShape { .. })
            )
        };
        assert!(bad(1024, deepseek()));
        assert!(bad(250, deepseek())); // 8 groups do not divide 250
        assert!(bad(
            256,
            GatingParams {
                top_k: 17,
                n_group: 1,
                topk_group: 1,
                ..deepseek()
            }
        ));
        assert!(bad(
            16,
            GatingParams {
                top_k: 9,
                n_group: 4,
                topk_group: 2,
                ..deepseek()
            }
        ));
        assert!(bad(
            256,
            GatingParams {
                topk_group: 9,
                ..deepseek()
            }
        ));
        assert!(bad(
            256,
            GatingParams {
                routed_scaling_factor: f32::INFINITY,
                ..deepseek()
            }
        ));
        assert!(MoeGatingTiling::new(0, 256, &deepseek(), KernelDtype::Bf16, V).is_err());
    }

    #[test]
    fn routing_plan_and_workspace() {
        for quant in [false, true] {
            for dt in KernelDtype::ALL {
                let t = MoeInitRoutingTiling::new(
                    512,
                    7168,
                    8,
                    256,
                    None,
                    MoeList::Count,
                    quant,
                    dt,
                    V,
                )
                .unwrap();
                // 512 tokens over 48 cores: 11 per block, 47 blocks; 256 experts in slices of 8.
                assert_eq!((t.tokens_per_block, t.block_dim()), (11, 47));
                assert_eq!(t.experts_per_block, 8);
                assert_eq!(t.workspace_bytes(), 48 * 256 * 4);
                assert_eq!((t.active_start, t.active_end), (0, 256));
                assert!(t.tokens_per_tile >= 1 && t.ub_bytes(dt, quant) <= u64::from(V.ub_bytes));
            }
        }
        // Phase B's slices cover every expert.
        let t = MoeInitRoutingTiling::new(
            9,
            16,
            2,
            100,
            Some(10..90),
            MoeList::Cumsum,
            false,
            KernelDtype::F32,
            V,
        )
        .unwrap();
        assert!(t.experts_per_block.is_multiple_of(8) && t.experts_per_block * t.blocks >= 100);
        let bad = |r: Range<u64>| {
            MoeInitRoutingTiling::new(
                9,
                16,
                2,
                100,
                Some(r),
                MoeList::Count,
                false,
                KernelDtype::F32,
                V,
            )
            .is_err()
        };
        #[allow(clippy::reversed_empty_ranges)] // a reversed range is what is being rejected
        let reversed = 60..50;
        assert!(bad(50..101) && bad(reversed));
        assert!(MoeInitRoutingTiling::new(
            1 << 30,
            16,
            8,
            100,
            None,
            MoeList::Count,
            false,
            KernelDtype::F32,
            V
        )
        .is_err());
    }

    #[test]
    fn one_hot_group_still_makes_a_task_per_core() {
        // (rows, n): decode, prefill, narrow outputs that force splitting m.
        for (rows, n) in [
            (8, 2048),
            (8, 7168),
            (4096, 2048),
            (4096, 7168),
            (256, 128),
            (96, 512),
        ] {
            let t = GroupedMatmulTiling::new(rows, 8, n, 7168, MoeList::Count, C).unwrap();
            let (m, sn) = (u64::from(t.single_m), u64::from(t.single_n));
            let tasks = rows.div_ceil(m) * n.div_ceil(sn);
            assert!(
                tasks >= 24,
                "rows {rows} n {n}: {m} x {sn} gives {tasks} tasks"
            );
            assert!(sn.is_multiple_of(FRACTAL) || sn == n);
            assert!(m <= GROUPED_SINGLE_M);
        }
        let t = GroupedMatmulTiling::new(4096, 256, 2048, 7168, MoeList::Count, C).unwrap();
        assert!(t.base_m * t.base_k * 4 <= 65_536 && t.base_k * t.base_n * 4 <= 65_536);
        assert!(t.base_m * t.base_n * 4 <= 131_072);
        assert_eq!(t.block_dim(C), 24);
        // Eight rows of one group and a 16-wide output cannot feed 24 cores.
        let t = GroupedMatmulTiling::new(8, 1, 16, 64, MoeList::Count, C).unwrap();
        assert_eq!(t.block_dim(C), 1);
        assert!(GroupedMatmulTiling::new(0, 4, 16, 16, MoeList::Count, C).is_err());
    }

    #[test]
    fn static_expert_ffn_tiles_do_not_re_read_the_rows_per_narrow_tile() {
        // DeepSeek-V3 at T = 512 on a rank of 8 experts: room for 512 x 8 = 4096 rows; routed, they
        // average 512 x 8 / 256 = 16 rows per expert.
        let (rows, groups, hidden, inter) = (4096u64, 8u64, 7168u64, 2048u64);
        let t = ExpertFfnTiling::new(
            rows,
            groups,
            rows,
            hidden,
            inter,
            MoeList::Count,
            KernelDtype::Bf16,
            C,
            FfnTaskWidths::Fixed,
        )
        .unwrap();
        let (m, n1, n2) = (
            u64::from(t.single_m),
            u64::from(t.single_n1),
            u64::from(t.single_n2),
        );
        // The Matmul API streams a task's A panel once per 256-column base block, so x is read at
        // least 2048 / 256 = 8 times per gate or up product; the tiles must not add to that (16-wide
        // tiles read it 128 times).
        let x_reads = inter.div_ceil(n1) * n1.div_ceil(u64::from(t.base_n1));
        assert_eq!(x_reads, 8, "{t:?}");
        // Phase 1 GM bytes of the 8 x 16 split, from first principles: every gate and up weight once
        // (8 experts x 2 x 2048 x 7168 bf16) and x once per read, against the weights alone.
        let weights = groups * 2 * inter * hidden * 2;
        let x = 2 * groups * 16 * hidden * 2 * x_reads;
        assert!((weights + x) as f64 / weights as f64 <= 1.07);
        // Every core still gets a task: from one hot expert holding all 4096 rows (32 m-tiles) in
        // both phases, and from the typical 8 x 16 split.
        assert_eq!(m, 128);
        assert!(rows.div_ceil(m) * inter.div_ceil(n1) >= 24);
        assert!(rows.div_ceil(m) * hidden.div_ceil(n2) >= 24);
        assert!(groups * inter.div_ceil(n1) >= 24, "{t:?}");
        assert!(groups * hidden.div_ceil(n2) >= 24, "{t:?}");
        assert_eq!(t.block_dim(C), 24);

        // Decode: 8 rows, one hot expert still spreads over every core in both phases.
        let t = ExpertFfnTiling::new(
            8,
            8,
            8,
            hidden,
            inter,
            MoeList::Count,
            KernelDtype::Bf16,
            C,
            FfnTaskWidths::Fixed,
        )
        .unwrap();
        assert_eq!(t.single_m, 8);
        assert!(inter.div_ceil(u64::from(t.single_n1)) >= 24, "{t:?}");
        assert!(hidden.div_ceil(u64::from(t.single_n2)) >= 24, "{t:?}");

        // The SwiGLU's UB caps the gate/up width: 28 bytes per f32 column in 896 bytes = 32 columns.
        let small = CoreBudget {
            cores: 2,
            ub_bytes: 896,
        };
        for widths in [FfnTaskWidths::Fixed, FfnTaskWidths::PerLaunch] {
            let t = ExpertFfnTiling::new(
                64,
                2,
                64,
                64,
                256,
                MoeList::Count,
                KernelDtype::F32,
                small,
                widths,
            )
            .unwrap();
            assert!(t.single_n1 <= 32 && t.single_n1.is_multiple_of(16), "{t:?}");
            assert!(t.ub_bytes(KernelDtype::F32) <= 896);
        }
    }

    #[test]
    fn adapting_expert_ffn_tiles_are_as_wide_as_the_buffers_allow() {
        // The kernel picks the task widths per launch (moe_traffic.rs measures them); the host gives the
        // widest and bases as wide as L0C / L0B take at the task's rows, so a group's rows stream once
        // per 256 to 1024 columns.
        let (groups, hidden, inter) = (8u64, 7168u64, 2048u64);
        for (rows, base_m, base_n, base_k) in [(8u64, 16, 1024, 16), (128, 128, 256, 64)] {
            let t = ExpertFfnTiling::new(
                rows,
                groups,
                rows,
                hidden,
                inter,
                MoeList::Count,
                KernelDtype::Bf16,
                C,
                FfnTaskWidths::PerLaunch,
            )
            .unwrap();
            assert_eq!(t.adapt_tasks, 1);
            assert_eq!((t.single_n1, t.single_n2), (2048, 7168), "{t:?}");
            assert_eq!((t.base_m, t.base_n1, t.base_k1), (base_m, base_n, base_k));
            assert_eq!((t.base_n2, t.base_k2), (base_n, base_k));
            for c in [&t.cube_up, &t.cube_down] {
                c.validate("expert_ffn", 4, 4).unwrap();
            }
            // One hot group still spreads over every core: the kernel may cut 16-column tiles.
            assert_eq!(t.block_dim(C), 24);
        }
        let t = ExpertFfnTiling::new(
            64,
            4,
            64,
            64,
            48,
            MoeList::Count,
            KernelDtype::F32,
            C,
            FfnTaskWidths::PerLaunch,
        )
        .unwrap();
        // 64 rows in 16-row m-tiles (so that 24 cores can have work); narrow columns stay whole.
        assert_eq!((t.single_m, t.single_n1, t.base_n1), (16, 48, 48));
        // At most ((64 - 4) / 16 + 4) m-tiles x 4 16-column tiles of down = 28 tasks: every core.
        assert_eq!(t.block_dim(C), 24);
    }

    #[test]
    fn grouped_tilings_carry_their_cube_tiling() {
        // The Matmul's TCubeTiling comes from the host tiling: one task's block, the tiling's bases,
        // within the cube's buffers for every element type (4-byte inputs bound them all).
        for (rows, groups, n, k) in [
            (1, 1, 16, 16),
            (128, 8, 2048, 7168),
            (4096, 256, 7168, 2048),
        ] {
            let g = GroupedMatmulTiling::new(rows, groups, n, k, MoeList::Count, C).unwrap();
            let c = g.cube;
            assert_eq!(
                (c.M, c.N, c.Ka, c.singleCoreM, c.singleCoreN, c.singleCoreK),
                (
                    rows as i32,
                    n as i32,
                    k as i32,
                    g.single_m as i32,
                    g.single_n as i32,
                    k as i32
                )
            );
            assert_eq!(
                (c.baseM, c.baseN, c.baseK),
                (g.base_m as i32, g.base_n as i32, g.base_k as i32)
            );
            for bytes in [2, 4] {
                c.validate("grouped_matmul", bytes, bytes).unwrap();
            }
            let f = ExpertFfnTiling::new(
                rows,
                groups,
                rows,
                k,
                n,
                MoeList::Count,
                KernelDtype::F32,
                C,
                FfnTaskWidths::PerLaunch,
            )
            .unwrap();
            assert_eq!(f.cube_up.singleCoreN, f.single_n1 as i32);
            assert_eq!(f.cube_down.singleCoreN, f.single_n2 as i32);
            assert_eq!((f.cube_up.Ka, f.cube_down.Ka), (k as i32, n as i32));
            f.cube_up.validate("expert_ffn", 4, 4).unwrap();
            f.cube_down.validate("expert_ffn", 4, 4).unwrap();
        }
    }

    #[test]
    fn expert_ffn_fits_and_sizes_its_workspace() {
        for dt in KernelDtype::ALL {
            let t = ExpertFfnTiling::new(
                4096,
                256,
                4096,
                7168,
                2048,
                MoeList::Count,
                dt,
                C,
                FfnTaskWidths::PerLaunch,
            )
            .unwrap();
            assert!(t.swiglu_rows >= 1 && t.ub_bytes(dt) <= u64::from(C.ub_bytes));
            assert_eq!(
                t.workspace_bytes(dt),
                SYS_WORKSPACE_BYTES + 4096 * 2048 * (8 + u64::from(dt.size()))
            );
        }
        // A UB too small for even one 16-column SwiGLU row.
        let tiny = CoreBudget {
            cores: 2,
            ub_bytes: 256,
        };
        assert!(matches!(
            ExpertFfnTiling::new(
                8,
                2,
                8,
                64,
                64,
                MoeList::Count,
                KernelDtype::F32,
                tiny,
                FfnTaskWidths::PerLaunch,
            ),
            Err(KernelError::DoesNotFit { .. })
        ));
        // A bound of 0 rows per group is refused; a bound above `rows` is taken as `rows`.
        let b2 = CoreBudget::ASCEND_910B2_CUBE;
        let ffn = |bound| {
            ExpertFfnTiling::new(
                128,
                8,
                bound,
                7168,
                2048,
                MoeList::Count,
                KernelDtype::Bf16,
                b2,
                FfnTaskWidths::PerLaunch,
            )
        };
        assert!(matches!(ffn(0), Err(KernelError::InvalidShape { .. })));
        assert_eq!(ffn(1000).unwrap(), ffn(128).unwrap());
        // 16 rows per expert at most (16 tokens, top-k to distinct experts): 16-row tiles, whose base
        // blocks reach 1024 columns (256 for 128-row tiles).
        let (bounded, open) = (ffn(16).unwrap(), ffn(128).unwrap());
        assert_eq!((bounded.single_m, open.single_m), (16, 128));
        assert_eq!((bounded.base_n2, open.base_n2), (1024, 256));
    }

    #[test]
    fn finalize_chunks_columns_only_when_a_row_does_not_fit() {
        let t =
            MoeFinalizeTiling::new(512, 7168, 8, 4096, true, true, KernelDtype::Bf16, V).unwrap();
        assert_eq!(
            (t.cols_per_tile, t.tokens_per_tile, t.block_dim()),
            (7168, 11, 47)
        );
        let small = CoreBudget {
            cores: 1,
            ub_bytes: 8192,
        };
        let t =
            MoeFinalizeTiling::new(3, 7000, 8, 24, false, false, KernelDtype::F32, small).unwrap();
        assert!(t.cols_per_tile < 7000 && t.cols_per_tile.is_multiple_of(64));
        assert!(t.ub_bytes(KernelDtype::F32) <= 8192);
        // y may have no rows at all.
        assert!(MoeFinalizeTiling::new(3, 16, 2, 0, true, false, KernelDtype::F16, V).is_ok());
        assert!(MoeFinalizeTiling::new(3, 0, 2, 0, true, false, KernelDtype::F16, V).is_err());
    }
}
