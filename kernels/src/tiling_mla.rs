//! Tiling of the MLA decode kernel (`src/ascendc/mla_decode.cpp`): the split-KV plan
//! ([`MlaDecodePlan`], FlashMLA's `get_mla_metadata`: computed once per decode step from the sequence
//! lengths and, with [`MlaDecodePlan::for_shape`], the query rows and widths; shared by every layer) and `MlaDecodeTiling`, generated from `DsnpuMlaDecodeTiling`
//! (`include/dsnpu_kernels/tiling.h`; `tests/mla_layout.rs` compares the layout with the C compiler's).
//!
//! Contract, as for [`crate::tiling`]: [`MlaDecodePlan::new`] and [`MlaDecodeTiling::new`] validate
//! their inputs (no empty extent, a finite scale, everything within the kernel's 32-bit fields) and
//! return a tiling whose Unified Buffer plan for both phases — the formulas the kernel's source states
//! and allocates, mirrored by [`MlaDecodeTiling::ub_bytes`] — fits the budget, or a typed error. The
//! kernel trusts these values.
//!
//! Not checked here, because it lives on the device: the block table and the sequence lengths. The
//! kernel clamps a length to the block table's slots and a task to the plan's chunk, and reads cache
//! rows only through checked GM accesses (a block id outside the cache faults on the simulator);
//! callers with host copies validate them as dsnpu-ops' `check_mla_decode` does.

use crate::tiling::{invalid, round_up, to_u32, UB_BLOCK};
use crate::tiling_cube::{CubeTiling, SYS_WORKSPACE_BYTES};
use crate::{CoreBudget, KernelDtype, KernelError, Result};

pub use crate::tiling_structs::MlaDecodeTiling;

/// Most cache positions one task (one chunk of one sequence) covers in any plan: the softmax's
/// whole-slab instructions step from row to row by a repeat stride of at most 255 32-byte blocks. With
/// held keys the kernel's limit is lower and depends on the shape ([`mla_decode_max_chunk`]): a chunk's
/// rows stay in the cube core's L1 from q·Kᵀ to P·V.
pub const MLA_MAX_CHUNK: u32 = 2032;
/// Fewest positions a chunk is cut to (a cube fractal's rows): shorter chunks cost more in partial
/// results than they gain in parallelism.
pub const MLA_MIN_CHUNK: u32 = 16;
/// Most tasks whose `(m, l)` the combine holds in UB at once (a sequence with more is read in groups;
/// fewer when the UB is short).
const MLA_COMBINE_TASKS: u64 = 256;
/// Most rows of a UB slab in either phase.
const MAX_SLAB_ROWS: u64 = 64;
/// L0A / L0B bytes and L0C bytes (as f32) of the cube's base tiles.
const L0AB: u64 = 64 * 1024;
/// The cube core's L1, bytes.
const L1_BYTES: u64 = 512 * 1024;
/// One of the two buffers the kernel splits L0A (and L0B) into, and one of L0C's two, bytes.
const L0AB_BUF: u64 = 32 * 1024;
const L0C_BUF: u64 = 64 * 1024;
/// Bytes per task of the two vector cores' segment words (a 32-byte block each), in the workspace and
/// in the combine's UB.
const SEGMENT_WORDS_BYTES: u64 = 64;

/// Rows of the query panel (and of P) the cube core holds at once: up to 128.
fn panel_rows(query_rows: u64) -> u64 {
    round_up(query_rows, 16).min(128)
}

/// Elements of one cache row in L1: the latent and the rope part each rounded up to the 32-byte
/// fractal width.
fn key_width(latent_dim: u64, rope_dim: u64, sz: u64) -> u64 {
    let c0 = 32 / sz;
    round_up(latent_dim, c0) + round_up(rope_dim, c0)
}

/// P·V's tiles for 16-bit types (`(n, k)`: output columns within one L0C buffer, k steps of 16 keys
/// that fit L0A's and L0B's buffers) for a panel of `m` rows.
fn pv_tiles(m: u64, latent_dim: u64, sz: u64) -> (u64, u64) {
    let n = round_up(latent_dim, 16).min(down16(L0C_BUF / (m * 4)));
    (n, down16(L0AB_BUF / (m.max(n) * sz)))
}

/// Output tiles one P·V pass of the decode kernel sums at once: two (both L0C buffers) for streamed
/// keys with P per k step, so that each k step's P comes in once per two output tiles instead of once
/// per tile (at 128 query rows P·V has four tiles: P read twice, not four times); else one.
fn pv_pass_tiles(key_buffers: u32, p_whole: bool, pv_n: u64, latent_dim: u64) -> u64 {
    if key_buffers == 0 && !p_whole && pv_n < latent_dim {
        2
    } else {
        1
    }
}

/// The latent columns one streamed P·V staging tile holds: a pass's output tiles, at most the latent.
fn pv_pass_cols(pv_n: u64, tiles: u64, latent_dim: u64) -> u64 {
    (pv_n * tiles).min(round_up(latent_dim, 16))
}

/// Whether the decode kernel can carry P·V from one task to the next of a block for this shape (its
/// half of [`MlaDecodeTiling::carries`]' condition; the tiling adds that a block runs two tasks of one
/// sequence and that each vector core's rows fit one softmax slab): a 16-bit type with held keys, at
/// least two query rows, all of them in one P·V output tile, and the score tiles within half an L0C
/// buffer (the carried sum takes a buffer of its own).
fn carry_fits(query_rows: u64, latent_dim: u64, sz: u64, key_buffers: u32, pitch: u64) -> bool {
    let m = panel_rows(query_rows);
    sz == 2
        && key_buffers != 0
        && query_rows >= 2
        && m >= query_rows
        && pv_tiles(m, latent_dim, sz).0 >= latent_dim
        && m * pitch.min(128) * 4 <= L0C_BUF / 2
}

/// L1 bytes of the decode kernel's cube core for a chunk pitch `pitch` and `key_buffers` chunks held at
/// once: the query panel, the chunks' cache rows and (16-bit types) P, as the kernel allocates them.
/// `key_buffers` 0 (16-bit types only): the keys streamed through two staging tiles (q·Kᵀ's key tiles
/// of up to 128 rows, P·V's latent tiles) and P's k steps (two).
fn l1_bytes(
    query_rows: u64,
    latent_dim: u64,
    rope_dim: u64,
    sz: u64,
    pitch: u64,
    key_buffers: u64,
) -> u64 {
    let (m, w) = (panel_rows(query_rows), key_width(latent_dim, rope_dim, sz));
    if key_buffers == 0 {
        let layout = streamed_layout(query_rows, latent_dim, rope_dim, sz, pitch);
        return streamed_l1(
            m,
            w,
            sz,
            pitch,
            layout,
            pv_tiles(m, latent_dim, sz),
            latent_dim,
        );
    }
    m * w * sz + key_buffers * pitch * w * sz + if sz == 2 { m * pitch * sz } else { 0 }
}

/// How the cube core's L1 is laid out for streamed keys at a chunk pitch: q·Kᵀ's key tiles of `qk_n`
/// rows, and whether a task's P comes in whole (once) instead of per k step of every P·V output tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamedLayout {
    qk_n: u64,
    p_whole: bool,
}

/// Most key rows of q·Kᵀ's staging tiles: the last tile's product runs after its keys are in (at 128
/// query rows 2.3 k cycles for 128 rows), and narrower tiles leave less of it exposed (`cargo bench
/// --bench mla_kernels`, 128 heads: batch 1 context 4096 19.05 µs at 128 rows, 18.21 at 64, 18.68 at 32;
/// batch 64 context 512 65.60, 64.63, 67.15).
const MAX_STREAMED_QK_ROWS: u64 = 64;

/// Fewest key rows q·Kᵀ's staging tiles are narrowed to so that P fits whole (each tile is a copy, an
/// L0C store and a hand-over of its own; at 128 query rows 32 rows leave P room for 1184 positions).
const MIN_STREAMED_QK_ROWS: u64 = 32;

/// L1 bytes of the streamed layout: the query panel, two staging tiles (q·Kᵀ's key tiles and P·V's
/// latent tiles, a pass's columns, share them) and P, whole or two k steps of it.
fn streamed_l1(
    m: u64,
    w: u64,
    sz: u64,
    pitch: u64,
    l: StreamedLayout,
    pv: (u64, u64),
    latent_dim: u64,
) -> u64 {
    let (pv_n, pv_k) = pv;
    let tiles = pv_pass_tiles(0, l.p_whole, pv_n, latent_dim);
    let tile = (l.qk_n * w).max(pv_k * pv_pass_cols(pv_n, tiles, latent_dim));
    let p = if l.p_whole {
        m * pitch * sz
    } else {
        2 * m * pv_k * sz
    };
    m * w * sz + 2 * tile * sz + p
}

/// The streamed layout for `pitch`: P whole where P·V has more than one output tile (with one, P is
/// read once either way) and it fits beside staging tiles of at least [`MIN_STREAMED_QK_ROWS`] rows
/// (the widest that fit: at 128 query rows, chunks up to 1184 positions); else tiles of
/// [`MAX_STREAMED_QK_ROWS`] (or the chunk's) and P per k step.
fn streamed_layout(
    query_rows: u64,
    latent_dim: u64,
    rope_dim: u64,
    sz: u64,
    pitch: u64,
) -> StreamedLayout {
    let (m, w) = (panel_rows(query_rows), key_width(latent_dim, rope_dim, sz));
    let pv = pv_tiles(m, latent_dim, sz);
    let widest = pitch.min(MAX_STREAMED_QK_ROWS);
    if pv.0 < latent_dim {
        let mut qk_n = widest;
        while qk_n >= MIN_STREAMED_QK_ROWS.min(widest) {
            let l = StreamedLayout {
                qk_n,
                p_whole: true,
            };
            if streamed_l1(m, w, sz, pitch, l, pv, latent_dim) <= L1_BYTES {
                return l;
            }
            qk_n -= 16;
        }
    }
    StreamedLayout {
        qk_n: widest,
        p_whole: false,
    }
}

/// The longest chunk (a multiple of 16) the decode kernel takes for `shape` with `key_buffers`: 1 or
/// 2 chunks' rows held in L1 at once, or 0 for the keys streamed (16-bit types: any chunk up to
/// [`MLA_MAX_CHUNK`] when the staging tiles fit). 0 if not even 16 positions fit.
pub fn mla_decode_max_chunk(shape: &MlaPlanShape, key_buffers: u32) -> u32 {
    let (g, dl, dr) = (
        u64::from(shape.query_rows),
        u64::from(shape.latent_dim),
        u64::from(shape.rope_dim),
    );
    let sz = u64::from(shape.dtype.size());
    let kb = u64::from(key_buffers);
    if kb == 0 {
        let fits = sz == 2 && l1_bytes(g, dl, dr, sz, u64::from(MLA_MAX_CHUNK), 0) <= L1_BYTES;
        return if fits { MLA_MAX_CHUNK } else { 0 };
    }
    let mut c = u64::from(MLA_MAX_CHUNK);
    while c >= 16 && l1_bytes(g, dl, dr, sz, c, kb) > L1_BYTES {
        c -= 16;
    }
    if c < 16 {
        0
    } else {
        c as u32
    }
}

/// The split-KV work plan of one decode step: every sequence's visible keys cut into chunks so that
/// there are about as many (sequence, chunk) tasks as cores, even at batch 1.
///
/// Device layout ([`MlaDecodePlan::words`], int32): `[batch × 2]` (first task, task count) per
/// sequence, then `[tasks × 3]` (sequence, first position, end position) per task, tasks in sequence
/// order. It depends only on the lengths and the core count, so one upload serves every layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlaDecodePlan {
    batch: u32,
    tasks: u32,
    chunk: u32,
    key_buffers: u32,
    words: Vec<i32>,
}

/// What [`MlaDecodePlan::for_shape`] weighs when it cuts the sequences: the query rows every task
/// serves (`s_q · heads`: each writes a partial `[rows, Dl]` f32 output and `(m, l)` per row that the
/// combine reads back) and the bytes of one cache position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaPlanShape {
    /// Query rows per sequence: `s_q · heads`.
    pub query_rows: u32,
    /// Dl (kv_lora_rank).
    pub latent_dim: u32,
    /// Dr (qk_rope_dim).
    pub rope_dim: u32,
    pub dtype: KernelDtype,
}

/// HBM bytes per second of one 910B2 die (`crate::roofline`).
const PLAN_HBM_BYTES_PER_S: f64 = 1.6e12;
/// GM bytes per second one core's copy engine moves: 128 bytes per cycle at 1.8 GHz (the cap of the
/// host layer's cycle model, `include/dsnpu_ascendc/dsnpu_host/cost.h`, a GUESS there too). About
/// seven cores saturate HBM: that, not the core count, is how far a memory-bound decode needs cutting.
const PLAN_CORE_BYTES_PER_S: f64 = 128.0 * 1.8e9;
/// Multiply-adds per second of one cube core (16×16×16 per cycle at 1.8 GHz).
const PLAN_CORE_MACS_PER_S: f64 = 4096.0 * 1.8e9;
/// Seconds the combine spends on a cut sequence: a fixed part (its first partial's GM latency, the
/// division and the output's store) and a part per piece and row a vector core takes (a partial's row
/// through a double-buffered queue, scaled and added). Fitted to the host layer's cycle model (cost.h's
/// GUESSes) at batch 1, context 4096, 16 heads (a row per vector core) cut into 12 and 24 pieces (`cargo
/// bench --bench mla_kernels`: about 2.9 k and 4.0 k cycles, 90 cycles per piece), split 60 per piece
/// (its copies' latency and issue) and 30 per row (its multiply-add), which keeps 128 heads at batch 8
/// context 4096 at 48 tasks (144 model 32 % slower).
const PLAN_COMBINE_FIXED_S: f64 = 1850.0 / 1.8e9;
const PLAN_COMBINE_PER_PIECE_S: f64 = 60.0 / 1.8e9;
const PLAN_COMBINE_PER_ROW_S: f64 = 30.0 / 1.8e9;
/// Seconds of a task's fixed cost: the hand-over between its cube and vector cores (the scores out and
/// in, P and (m, l) out and in, the partial out: about eight of the host layer's 500-cycle GM
/// latencies, a GUESS there), the flags and the softmax's instruction issue. Calibrated against the
/// host layer's cycle model (`cargo bench --bench mla_kernels`, bf16, 16 heads, one key buffer).
const PLAN_TASK_FIXED_S: f64 = 5000.0 / 1.8e9;
/// Vector cycles charged per query row, and per 64 scores of a row, for a task's softmax step: the
/// chain the vector cores stand in (scores in, the softmax, P and (m, l) out) that a block's next task
/// can hide. The softmax's whole-slab instructions alone take about 20 and 8 now (`cargo bench --bench
/// mla_kernels`: at 128 heads one chunk of 256 positions, each vector core's 64 rows in about 3.4 k
/// cycles), but charged that little the estimate loses the overlap of two streamed tasks per block at
/// 128 heads (batch 1 context 32768: 24 tasks, 68.7 µs, instead of 48, 58.1): the values fitted to the
/// per-row softmax before it (64 rows × 1366 positions in about 19 k cycles) stay.
const PLAN_SOFTMAX_ROW_CYCLES: f64 = 80.0;
const PLAN_SOFTMAX_SEGMENT_CYCLES: f64 = 10.0;
/// Seconds a streamed-keys task loses per staging step (a tile's keys, or a k step's latent columns
/// and P): calibrated as `PLAN_TASK_FIXED_S`.
const PLAN_STREAM_STEP_S: f64 = 250.0 / 1.8e9;
/// Estimates within this fraction of the best are ties, broken towards fewer tasks: every task adds a
/// partial output and a hand-over that the estimate underrates as tasks grow. At 128 heads (`cargo
/// bench --bench model_decode`, `mla_kernels`): batch 16 context 4096, 96 tasks estimated 0.1 % faster
/// than 48, modelled 10 % slower; batch 1 context 512, 8 tasks 0.6 % faster than 7, modelled 4 % faster;
/// batch 1 context 32768, 48 tasks 1.5 % faster than 24, modelled 12 % faster.
const PLAN_TIE: f64 = 0.005;
/// The die's L2 (192 MiB on a 910B2, as the host layer's L2 model).
const PLAN_L2_BYTES: f64 = (192u64 << 20) as f64;
/// Bytes per second of a cube core's L1 -> L0 loads (256 bytes per cycle, cost.h's GUESS).
const PLAN_MTE1_BYTES_PER_S: f64 = 256.0 * 1.8e9;

impl MlaDecodePlan {
    /// Plans `seq_lens` (cached tokens per sequence, queries included) over `cores` cores without
    /// knowing the heads: the chunk length is the total over the cores, within [`MLA_MIN_CHUNK`,
    /// `MLA_MAX_CHUNK`]; each sequence is then cut into that many equal pieces. An empty sequence gets
    /// one empty task. Its chunks may be longer than the kernel holds in L1 for a given shape
    /// ([`MlaDecodeTiling::new`] refuses those); [`MlaDecodePlan::for_shape`] never makes one, and also
    /// weighs the partial results.
    pub fn new(seq_lens: &[usize], cores: u32) -> Result<Self> {
        let total = validate_lens(seq_lens, cores)?;
        let chunk = total
            .div_ceil(u64::from(cores))
            .clamp(u64::from(MLA_MIN_CHUNK), u64::from(MLA_MAX_CHUNK));
        Self::cut(seq_lens, chunk, 1)
    }

    /// Plans `seq_lens` for a decode of `shape` over `cores` cores (FlashMLA's `get_mla_metadata`,
    /// which also takes `s_q · h_q`): of the chunk lengths that cut the longest sequence into 1, 2, …
    /// equal pieces (within [`MLA_MIN_CHUNK`] and what the kernel holds in L1,
    /// [`mla_decode_max_chunk`]), the one with the least estimated time, the fewest tasks among
    /// estimates within half a percent of the least, then the longer chunk. The
    /// estimate is the larger of (a) every byte the plan makes the kernel move — the cache rows, the
    /// query panel once per sequence, per task its partial output and `(m, l)` (with carry only a
    /// block's last task of each sequence writes a partial; written back once: the combine reads them
    /// from the die's L2), and once per block its score scratch (written back by L2) — at HBM speed,
    /// and (b) the busiest block (each runs a contiguous run of the tasks, as the kernel deals them),
    /// each task costing the largest of the bytes its cube core loads (its cache rows once, the query
    /// panel unless the block's previous task was of the same sequence, P; for f32 the latent rows
    /// again) and stores (its partial) at one core's copy rate each, and its multiply-adds at one cube
    /// core's rate (with two key buffers, the longer of its loads and its scores–softmax–P·V chain; with
    /// streamed keys, a block's later tasks hide the softmax behind their scores); plus the combine,
    /// which reads a cut sequence's partials one piece after another for each row a vector core takes.
    /// Cutting more spreads the work over more cores but adds a partial output
    /// per piece: a memory-bound decode is cut until about seven cores saturate HBM, a cube-bound one
    /// (many heads) further, and a short context with many heads hardly at all. When one core's share
    /// of the cache is at least twice a piece's partial, the plan cuts into a piece per core at least.
    pub fn for_shape(seq_lens: &[usize], shape: MlaPlanShape, cores: u32) -> Result<Self> {
        Self::plan(seq_lens, shape, cores, &[1, 2, 0])
    }

    /// As [`MlaDecodePlan::for_shape`] with the kernel's key buffers pinned to `key_buffers` (1, 2, or
    /// 0 for streamed keys) instead of chosen by the estimate: for tests of every pipeline and for
    /// measuring them. An error when the shape leaves that pipeline no chunk (0 with f32).
    pub fn for_shape_pinned(
        seq_lens: &[usize],
        shape: MlaPlanShape,
        cores: u32,
        key_buffers: u32,
    ) -> Result<Self> {
        if key_buffers > 2 {
            return Err(invalid(
                "mla_decode plan",
                format!("{key_buffers} key buffers (0, 1 or 2)"),
            ));
        }
        Self::plan(seq_lens, shape, cores, &[key_buffers])
    }

    fn plan(
        seq_lens: &[usize],
        shape: MlaPlanShape,
        cores: u32,
        key_buffers: &[u32],
    ) -> Result<Self> {
        const K: &str = "mla_decode plan";
        validate_lens(seq_lens, cores)?;
        if shape.query_rows == 0 || shape.latent_dim == 0 {
            return Err(invalid(K, "no query rows or an empty latent"));
        }
        let longest = seq_lens.iter().copied().max().unwrap_or(0) as u64;
        let fill = fills_every_core(seq_lens, &shape, cores);
        // (estimate, chunk, key buffers, tasks) of every plan weighed.
        let mut candidates: Vec<(f64, u64, u32, u64)> = Vec::new();
        for &key_buffers in key_buffers {
            let cap = mla_decode_max_chunk(&shape, key_buffers);
            if cap == 0 {
                continue;
            }
            let (lo, hi) = (u64::from(MLA_MIN_CHUNK), u64::from(cap));
            let mut last = 0;
            // Pieces of the longest sequence: at least as many as L1 requires, and beyond four per core
            // (or a core's worth past what L1 requires: a count the blocks share evenly) nothing can
            // gain.
            let fewest = longest.div_ceil(hi).max(1);
            let most = (4 * u64::from(cores)).max(fewest + u64::from(cores));
            for pieces in fewest..=most {
                let chunk = longest.div_ceil(pieces).max(1).clamp(lo, hi);
                if chunk == last {
                    continue;
                }
                last = chunk;
                let t = plan_estimate(seq_lens, chunk, &shape, cores, key_buffers);
                candidates.push((t, chunk, key_buffers, task_count(seq_lens, chunk)));
                if chunk == lo {
                    break;
                }
            }
        }
        // Of the plans within PLAN_TIE of the best estimate, the one with the fewest tasks (then the
        // lower estimate, then the first weighed: the longer chunk, the fewer key buffers); with `fill`,
        // among the plans with a task per core if there are any.
        let pick = |filling: bool| {
            let eligible = || {
                candidates
                    .iter()
                    .filter(move |c| !filling || c.3 >= u64::from(cores))
            };
            let best = eligible().map(|c| c.0).fold(f64::INFINITY, f64::min);
            eligible()
                .filter(|c| c.0 <= best * (1.0 + PLAN_TIE))
                .min_by(|a, b| a.3.cmp(&b.3).then(a.0.total_cmp(&b.0)))
                .copied()
        };
        let chosen = if fill { pick(true) } else { None }.or_else(|| pick(false));
        let Some((_, chunk, key_buffers, _)) = chosen else {
            return Err(KernelError::DoesNotFit {
                kernel: "mla_decode",
                needed: l1_bytes(
                    u64::from(shape.query_rows),
                    u64::from(shape.latent_dim),
                    u64::from(shape.rope_dim),
                    u64::from(shape.dtype.size()),
                    16,
                    1,
                ),
                available: L1_BYTES,
            });
        };
        Self::cut(seq_lens, chunk, key_buffers)
    }

    /// Every sequence cut into `ceil(len / chunk)` equal pieces (one empty task for an empty one).
    fn cut(seq_lens: &[usize], chunk: u64, key_buffers: u32) -> Result<Self> {
        const K: &str = "mla_decode plan";
        let batch = to_u32(K, "batch", seq_lens.len() as u64)?;
        let mut seq = Vec::with_capacity(2 * seq_lens.len());
        let mut tasks = Vec::new();
        let mut longest = 0u64;
        for (b, &len) in seq_lens.iter().enumerate() {
            let len = len as u64;
            let n = len.div_ceil(chunk).max(1);
            let piece = len.div_ceil(n);
            seq.push(to_u32(K, "tasks", (tasks.len() / 3) as u64)? as i32);
            seq.push(n as i32);
            for i in 0..n {
                let (c0, c1) = ((i * piece).min(len), ((i + 1) * piece).min(len));
                longest = longest.max(c1 - c0);
                tasks.extend([b as i32, c0 as i32, c1 as i32]);
            }
        }
        let n_tasks = to_u32(K, "tasks", (tasks.len() / 3) as u64)?;
        if n_tasks > i32::MAX as u32 {
            return Err(invalid(K, "more tasks than int32 holds"));
        }
        seq.extend(tasks);
        Ok(MlaDecodePlan {
            batch,
            tasks: n_tasks,
            chunk: (longest as u32).max(1),
            key_buffers,
            words: seq,
        })
    }

    /// Sequences planned.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// (sequence, chunk) tasks.
    pub fn tasks(&self) -> u32 {
        self.tasks
    }

    /// The most tasks any one sequence was cut into.
    pub fn max_tasks_per_sequence(&self) -> u32 {
        (0..self.batch as usize)
            .map(|b| self.words[2 * b + 1].max(0) as u32)
            .max()
            .unwrap_or(0)
    }

    /// Whether every sequence is one task that sees keys: the kernel then finishes each where it was
    /// served, with no SyncAll and no combine.
    pub fn cuts_no_sequence(&self) -> bool {
        self.tasks == self.batch
            && (0..self.tasks).all(|k| self.task(k).is_some_and(|(_, c0, c1)| c1 > c0))
    }

    /// Longest chunk, positions.
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// Chunks whose cache rows the kernel's cube core holds in L1 at once: 2 lets it load and score a
    /// task while the vector cores still work on the previous one, at half the chunk length; 0 streams
    /// the keys through L1 tile by tile (read twice, for q·Kᵀ and P·V, but any chunk length: fewer
    /// partial outputs when many query rows make them large).
    pub fn key_buffers(&self) -> u32 {
        self.key_buffers
    }

    /// The plan as the kernel reads it (see the type's docs).
    pub fn words(&self) -> &[i32] {
        &self.words
    }

    /// Whether some block of `blocks` (each running its contiguous share of the tasks, as the kernel
    /// deals them) runs two consecutive tasks of one sequence: only then can it carry P·V from one
    /// task to the next ([`MlaDecodeTiling::carries`]).
    pub fn runs_a_sequence_on_a_block(&self, blocks: u32) -> bool {
        let (n, blocks) = (u64::from(self.tasks), u64::from(blocks.max(1)));
        let seq = |k: u64| self.task(k as u32).map(|(b, _, _)| b);
        (0..blocks)
            .any(|i| ((i * n / blocks + 1)..((i + 1) * n / blocks)).any(|k| seq(k) == seq(k - 1)))
    }

    /// Task `k` as (sequence, first position, end position).
    pub fn task(&self, k: u32) -> Option<(u32, u32, u32)> {
        let at = 2 * self.batch as usize + 3 * k as usize;
        let w = self.words.get(at..at + 3)?;
        Some((w[0] as u32, w[1] as u32, w[2] as u32))
    }
}

/// The sum of the lengths, after checking there are sequences and cores and every length fits int32.
fn validate_lens(seq_lens: &[usize], cores: u32) -> Result<u64> {
    const K: &str = "mla_decode plan";
    if seq_lens.is_empty() {
        return Err(invalid(K, "no sequences"));
    }
    if cores == 0 {
        return Err(invalid(K, "no cores"));
    }
    to_u32(K, "batch", seq_lens.len() as u64)?;
    let mut total = 0u64;
    for &l in seq_lens {
        if l > i32::MAX as usize {
            return Err(invalid(K, format!("sequence length {l} exceeds int32")));
        }
        total += l as u64;
    }
    Ok(total)
}

/// Cache positions per core from which every core gets a piece whatever the heads: a 128-position cache
/// block each. At 128 heads the estimate prefers fewer pieces there, by less than its error: batch 1,
/// context 4096 cut into 24 pieces modelled 16.51 µs against 16.31 for the 16 the estimate picks, and
/// batch 8 context 512 16.85 against 16.54 (`cargo bench --bench mla_kernels`, when this rule was set;
/// 15.28 and 15.82 now), while the idle cores' copy engines would sit out the cache stream. Shorter shares lose more (batch 1, context 512, 16 heads:
/// 24 pieces of 21 positions 7 % slower than 8).
const MLA_FILL_POSITIONS: u64 = 128;

/// Whether a decode of `shape` has enough cache to give every core a piece worth its partial output: a
/// share of at least [`MLA_FILL_POSITIONS`] positions, or cache rows of one core's share at least twice
/// the partial (f32 output rows and (m, l)) its piece adds.
/// Such a plan cuts into at least `cores` tasks (FlashMLA's metadata keeps every SM busy): the estimate
/// alone can prefer fewer, longer pieces by less than its own error (batch 1, context 4096, 16 heads:
/// 12 pieces estimated 8 % faster than 24, modelled 1 % slower). Below that, with many heads the partials
/// are as large as the pieces' keys, and cutting further is left to the estimate.
fn fills_every_core(seq_lens: &[usize], shape: &MlaPlanShape, cores: u32) -> bool {
    let total: u64 = seq_lens.iter().map(|&l| l as u64).sum();
    let share = total / u64::from(cores.max(1));
    let key_bytes = u64::from(shape.latent_dim + shape.rope_dim) * u64::from(shape.dtype.size());
    let partial = u64::from(shape.query_rows) * (u64::from(shape.latent_dim) + 2) * 4;
    share >= MLA_FILL_POSITIONS || share * key_bytes >= 2 * partial
}

/// Tasks of a plan cutting `seq_lens` into chunks of `chunk` positions (one for an empty sequence).
fn task_count(seq_lens: &[usize], chunk: u64) -> u64 {
    seq_lens
        .iter()
        .map(|&l| (l as u64).div_ceil(chunk).max(1))
        .sum()
}

/// Estimated seconds of a decode of `shape` cut into chunks of `chunk` positions (see
/// [`MlaDecodePlan::for_shape`]).
fn plan_estimate(
    seq_lens: &[usize],
    chunk: u64,
    shape: &MlaPlanShape,
    cores: u32,
    key_buffers: u32,
) -> f64 {
    let rows = f64::from(shape.query_rows);
    let (dl, dr) = (f64::from(shape.latent_dim), f64::from(shape.rope_dim));
    let sz = f64::from(shape.dtype.size());
    let key_bytes = (dl + dr) * sz;
    // Per task, through its core: the query panel in, the partial output and (m, l) out. From HBM: the
    // query panel once per sequence (its other tasks find it in the die's L2) and each partial once,
    // written back (the combine reads it from L2).
    let partial = rows * (dl + 2.0) * 4.0;
    let query = rows * (dl + dr) * sz;
    let key_macs = rows * (2.0 * dl + dr);
    // Each block's copy engine gets its share of HBM while the blocks stream together.
    let n_tasks = task_count(seq_lens, chunk);
    let active = n_tasks.min(u64::from(cores)).max(1) as f64;
    let core_rate = PLAN_CORE_BYTES_PER_S.min(PLAN_HBM_BYTES_PER_S / active);
    // Panels of up to 128 query rows: the keys go from L1 to L0 once per panel, for q·Kᵀ and P·V.
    let panels = (rows / 128.0).ceil();
    // The tasks as the plan cuts them, (sequence, positions), and the block that runs each (a
    // contiguous run of them, as the kernel deals them).
    let mut tasks: Vec<(usize, u64)> = Vec::new();
    for (b, &len) in seq_lens.iter().enumerate() {
        let len = len as u64;
        let n = len.div_ceil(chunk).max(1);
        let piece = len.div_ceil(n);
        tasks.extend((0..n).map(|i| (b, ((i + 1) * piece).min(len) - (i * piece).min(len))));
    }
    let blocks = tasks.len().min(cores as usize).max(1);
    let block_of: Vec<usize> = (0..blocks)
        .flat_map(|i| {
            let n = tasks.len();
            std::iter::repeat_n(i, (i + 1) * n / blocks - i * n / blocks)
        })
        .collect();
    // With carry only a block's last task of each sequence writes a partial (its segments' sum).
    let carry = carry_fits(
        u64::from(shape.query_rows),
        u64::from(shape.latent_dim),
        u64::from(shape.dtype.size()),
        key_buffers,
        round_up(chunk, 16),
    );
    let writes_partial = |k: usize| {
        !carry
            || k + 1 == tasks.len()
            || tasks[k + 1].0 != tasks[k].0
            || block_of[k + 1] != block_of[k]
    };
    let mut per_task = Vec::new();
    let mut total = seq_lens.len() as f64 * query;
    // Per sequence: its tasks and the partials they write.
    let mut pieces = vec![(0u64, 0u64); seq_lens.len()];
    for (k, &(b, _)) in tasks.iter().enumerate() {
        pieces[b].0 += 1;
        pieces[b].1 += u64::from(writes_partial(k));
    }
    // The combine after the SyncAll splits the query rows of all sequences over the vector cores
    // (contiguous runs, never a row in two) and reads each of a cut sequence's partials per row in turn.
    let rows_per_worker = (seq_lens.len() as f64 * rows / (2.0 * f64::from(cores.max(1)))).ceil();
    let mut combine: f64 = 0.0;
    // The partials of cut sequences, which the combine reads back after the SyncAll.
    let mut cut_partials = 0.0;
    for &(n, written) in &pieces {
        if n > 1 {
            combine = combine.max(
                PLAN_COMBINE_FIXED_S
                    + written as f64
                        * (PLAN_COMBINE_PER_PIECE_S + rows_per_worker * PLAN_COMBINE_PER_ROW_S),
            );
            cut_partials += written as f64 * partial;
        }
    }
    // A whole (uncut) sequence's O goes to one of its block's two whole slots, which the L2 writes back
    // to HBM once each however many of the block's tasks reuse them.
    let mut whole_slots_used = vec![0u32; blocks];
    for (k, &(b, c)) in tasks.iter().enumerate() {
        let whole = pieces[b].0 == 1 && c > 0;
        let c = c as f64;
        let partial = if writes_partial(k) { partial } else { 0.0 };
        let written_back = if whole {
            let used = &mut whole_slots_used[block_of[k]];
            *used += 1;
            if *used <= 2 {
                partial
            } else {
                0.0
            }
        } else {
            partial
        };
        total += c * key_bytes + written_back;
        // The cube core loads the rows once (they stay in L1), the query panel and P (MTE2); f32
        // loads the latent rows again for P·V (the Matmul API); its FIX pipe stores the partial.
        let again = if shape.dtype.size() == 2 {
            0.0
        } else {
            dl * sz
        };
        // Streamed keys come in again for P·V (the latent part, once per panel of rows).
        let again = if key_buffers == 0 {
            panels * dl * sz
        } else {
            again
        };
        // The query panel (up to 128 rows) stays in L1 for the block's next task of the same sequence.
        let kept = rows <= 128.0
            && k > 0
            && block_of[k - 1] == block_of[k]
            && tasks[k - 1].0 == tasks[k].0;
        let query = if kept { 0.0 } else { query };
        let loads = (c * (key_bytes + again + rows * sz) + query) / core_rate;
        // Stores land in the L2 at a core's full copy rate (the host layer's cycle model, cost.h).
        let store = partial / PLAN_CORE_BYTES_PER_S;
        let l0 = 2.0 * panels * c * key_bytes / PLAN_MTE1_BYTES_PER_S;
        let work = l0.max(c * key_macs / PLAN_CORE_MACS_PER_S).max(store) + PLAN_TASK_FIXED_S;
        // The vector cores' softmax: each of the two takes half the rows, a few passes over each
        // row's `c` scores.
        let softmax = (rows / 2.0).ceil()
            * (PLAN_SOFTMAX_ROW_CYCLES + PLAN_SOFTMAX_SEGMENT_CYCLES * c / 64.0)
            / 1.8e9;
        // One key buffer: the load, the cube's work, the softmax and the hand-over one after
        // another. Two: the keys of the next tasks load while this one's scores, softmax and P·V
        // run (P comes in between two parts of the next keys), but those three follow one another:
        // a task takes the longer of its load and that chain. (a block's first task, its later
        // ones): a block's first task overlaps nothing.
        let serial = loads + work + softmax;
        per_task.push(match key_buffers {
            2 => (serial, loads.max(work + softmax)),
            // Streamed: each tile's load overlaps the previous tile's cube work, but every staging
            // step (q·Kᵀ's key tiles, P·V's k steps per output tile) adds its own hand-over; a later
            // task's scores overlap the previous task's softmax. The k steps are counted per output
            // tile although a pass with P per k step stages two tiles at once (pv_pass_tiles): counted
            // per pass, the estimate picks plans the host layer's model finds slower (`cargo bench
            // --bench mla_kernels`, 128 heads: batch 1 context 32768 one task per block, 55.4 µs
            // against 46.9 for two; batch 8 context 4096 55.9 against 47.6).
            0 => {
                let (pv_n, pv_k) =
                    pv_tiles(panel_rows(rows as u64), u64::from(shape.latent_dim), 2);
                let qk_n = streamed_layout(
                    rows as u64,
                    u64::from(shape.latent_dim),
                    u64::from(shape.rope_dim),
                    2,
                    round_up(chunk, 16),
                )
                .qk_n;
                let steps = (c / qk_n as f64).ceil()
                    + panels * (c / pv_k as f64).ceil() * (dl / pv_n as f64).ceil();
                let cube = loads.max(work) + steps * PLAN_STREAM_STEP_S;
                (cube + softmax, cube)
            }
            _ => (serial, serial),
        });
    }
    // Partials beyond half the die's L2 are evicted before the combine reads them: from HBM again.
    if cut_partials > PLAN_L2_BYTES / 2.0 {
        total += cut_partials;
    }
    // Each block with a task dirties its score scratch slots ([rows, chunk] f32, P written over them)
    // once: L2 writes them back to HBM, however many of its tasks reuse them.
    let slots = if key_buffers == 1 { 1.0 } else { 2.0 };
    total += blocks as f64 * slots * rows * round_up(chunk, 16) as f64 * 4.0;
    // Block i runs the contiguous run of tasks [i n / blocks, (i + 1) n / blocks), as the kernel does.
    let n = per_task.len();
    let mut busy = vec![0.0f64; blocks];
    for (i, b) in busy.iter_mut().enumerate() {
        let run = &per_task[i * n / blocks..(i + 1) * n / blocks];
        *b = run
            .iter()
            .enumerate()
            .map(|(j, &(first, later))| if j == 0 { first } else { later })
            .sum();
    }
    let busiest = busy.iter().copied().fold(0.0, f64::max);
    busiest.max(total / PLAN_HBM_BYTES_PER_S) + combine
}

/// UB bytes of the softmax phase for slabs of `r` rows of `pitch` scores and `g` query rows (the
/// kernel's formula): the scores' and P's double-buffered queues (each buffer at least one row of a
/// whole sequence's O, `latent_pitch` values, which they also carry), the `(m, l)` queue (with the segment
/// word), a whole sequence's lse queue (a 32-byte block per row), the row folds (64 values per row), the
/// rows' maxima, sums, offsets and their broadcast blocks, the scale block, and 1 / l of a vector core's
/// rows of two whole sequences.
fn phase1_ub(r: u64, pitch: u64, sz: u64, latent_pitch: u64, g: u64) -> u64 {
    let elems = (r * pitch).max(latent_pitch);
    2 * elems * 4
        + 2 * elems * sz
        + 2 * (2 * round_up(4 * r, UB_BLOCK) + UB_BLOCK)
        + 2 * round_up(r, 8) * UB_BLOCK
        + 64 * r * 4
        + 11 * round_up(r, 8) * 4
        + UB_BLOCK
        + 2 * round_up(g.div_ceil(2), 8) * 4
}

/// UB bytes of the combine phase for slabs of `q` rows (the kernel's formula): the f32 accumulator, the
/// partials' and the output's double-buffered queues, the lse queue (a 32-byte block per row, rows
/// rounded up to 8), the `m` and `l` of `tasks` tasks (each task's `q` values padded to 32 bytes), their
/// weights and the folds' scratch as large, the rows' four vectors (M, M floored, L, 1 / L), and with
/// carry the tasks' segment words.
fn phase2_ub(q: u64, latent_pitch: u64, sz: u64, tasks: u64, carry: bool) -> u64 {
    let block = round_up(4 * q, UB_BLOCK);
    q * latent_pitch * 4
        + 2 * q * latent_pitch * 4
        + 2 * q * latent_pitch * sz
        + 2 * UB_BLOCK * round_up(q, 8)
        + 4 * tasks * block
        + 4 * block
        + if carry {
            tasks * SEGMENT_WORDS_BYTES
        } else {
            0
        }
}

/// The extents of an MLA decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaDecodeDims {
    pub batch: u64,
    /// Query tokens per sequence (S).
    pub s_q: u64,
    pub heads: u64,
    /// Dl (kv_lora_rank).
    pub latent_dim: u64,
    /// Dr (qk_rope_dim).
    pub rope_dim: u64,
    pub block_size: u64,
    pub num_blocks: u64,
    /// Block-table columns.
    pub max_blocks: u64,
}

/// The largest multiple of 16 (at least 16) that is `≤ v`.
fn down16(v: u64) -> u64 {
    (v / 16 * 16).max(16)
}

/// The `TCubeTiling` of one of the kernel's per-task products `[m, k] x [k, n]` (one core's whole
/// problem) with the given base block and element size.
pub(crate) fn task_cube(
    kernel: &'static str,
    mnk: (u64, u64, u64),
    base: (u64, u64, u64),
    elem: u64,
) -> Result<CubeTiling> {
    CubeTiling::without_bias(kernel, mnk, mnk, base, 1, elem)
}

impl MlaDecodeTiling {
    /// Tiles the decode of `d` planned by `plan` on `budget.cores` blocks (cube cores, each with the
    /// UB of a vector core): the rows of the UB slabs of the softmax and the combine (as many as fit,
    /// at most 64) and the cube's base tiles within L0A/L0B (64 KiB) and L0C (128 KiB as f32).
    pub fn new(
        d: MlaDecodeDims,
        plan: &MlaDecodePlan,
        scale: f32,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "mla_decode";
        let budget = budget.validate()?;
        let extents = [
            ("batch", d.batch),
            ("s_q", d.s_q),
            ("heads", d.heads),
            ("latent_dim", d.latent_dim),
            ("rope_dim", d.rope_dim),
            ("block_size", d.block_size),
            ("num_blocks", d.num_blocks),
            ("max_blocks", d.max_blocks),
        ];
        for (what, v) in extents {
            if v == 0 {
                return Err(invalid(K, format!("{what} is 0")));
            }
        }
        if !scale.is_finite() {
            return Err(invalid(K, format!("scale {scale} is not finite")));
        }
        if u64::from(plan.batch) != d.batch {
            return Err(invalid(
                K,
                format!(
                    "the plan has {} sequences, the shape {}",
                    plan.batch, d.batch
                ),
            ));
        }
        let g = d.s_q.saturating_mul(d.heads);
        to_u32(K, "s_q * heads", g)?;
        to_u32(K, "batch * s_q * heads", d.batch.saturating_mul(g))?;
        to_u32(
            K,
            "max_blocks * block_size",
            d.max_blocks.saturating_mul(d.block_size),
        )?;
        to_u32(
            K,
            "batch * max_blocks",
            d.batch.saturating_mul(d.max_blocks),
        )?;
        to_u32(
            K,
            "num_blocks * block_size * latent_dim",
            d.num_blocks
                .saturating_mul(d.block_size)
                .saturating_mul(d.latent_dim),
        )?;
        let sz = u64::from(dtype.size());
        let chunk = u64::from(plan.chunk);
        let pitch = round_up(chunk, 16);
        let latent_pitch = round_up(d.latent_dim, 16);
        let ub = u64::from(budget.ub_bytes);
        let mut softmax_rows = g.min(MAX_SLAB_ROWS);
        while softmax_rows > 0 && phase1_ub(softmax_rows, pitch, sz, latent_pitch, g) > ub {
            softmax_rows -= 1;
        }
        // The row folds of the softmax's whole-slab reductions (row_ops.h): 64 values per row.
        let work_elems = 64 * softmax_rows;
        // The cube core's L1: the query panel, the chunk's cache rows (kept from q·Kᵀ to P·V) and P.
        let key_buffers = plan.key_buffers;
        if key_buffers == 0 && sz != 2 {
            return Err(invalid(
                K,
                "streamed keys (a plan with 0 key buffers) need a 16-bit dtype",
            ));
        }
        let l1 = l1_bytes(
            g,
            d.latent_dim,
            d.rope_dim,
            sz,
            pitch,
            u64::from(key_buffers),
        );
        if l1 > L1_BYTES {
            return Err(KernelError::DoesNotFit {
                kernel: K,
                needed: l1,
                available: L1_BYTES,
            });
        }
        // q·Kᵀ tiles for the cube's basic instructions: m up to 128 query rows, n up to 128 keys (an
        // f32 tile of 64 KiB, one of L0C's two buffers), k steps whose A and B panels each fill at most
        // one of L0A's / L0B's two 32 KiB buffers (a multiple of the fractal width).
        let m = panel_rows(g);
        let c0 = 32 / sz;
        // Streamed keys narrow q·Kᵀ's staging tiles where that lets P come into L1 whole; with held
        // keys 16-bit P always does (f32's P·V reads it through the Matmul API).
        let (qk_n, p_whole) = if key_buffers == 0 {
            let l = streamed_layout(g, d.latent_dim, d.rope_dim, sz, pitch);
            (l.qk_n, l.p_whole)
        } else {
            (pitch.min(128), sz == 2)
        };
        let qk_k = (L0AB_BUF / (m.max(qk_n) * sz) / c0 * c0).max(c0);
        // P·V (16-bit): n up to the latent width within one L0C buffer, k steps of 16 keys that fit L0A
        // and L0B. f32 takes P·V through the Matmul API: its base tiles as before.
        let base_m = round_up(g, 16).min(128);
        let l0c_n = down16(2 * L0AB / (base_m * 4)).min(512);
        let mm_pv_n = round_up(d.latent_dim, 16).min(l0c_n);
        let mm_pv_k = down16(L0AB / (base_m.max(mm_pv_n) * sz)).min(256);
        let (pv_n, pv_k) = if sz == 2 {
            pv_tiles(m, d.latent_dim, sz)
        } else {
            (mm_pv_n, mm_pv_k)
        };
        let pv_pass_tiles = if sz == 2 {
            pv_pass_tiles(key_buffers, p_whole, pv_n, d.latent_dim)
        } else {
            1
        };
        let pv_cube = task_cube(K, (g, d.latent_dim, pitch), (base_m, mm_pv_n, mm_pv_k), sz)?;
        // Carry (the kernel's conditions): held keys in a 16-bit type, P·V of all rows in one L0C tile
        // (a buffer of its own: the score tiles' two take half the room each), each vector core's rows
        // (both have some) in one softmax slab; and a block with two tasks of one sequence to carry over.
        let blocks = plan.tasks.min(budget.cores).max(1);
        let carry = carry_fits(g, d.latent_dim, sz, key_buffers, pitch)
            && plan.runs_a_sequence_on_a_block(blocks)
            && softmax_rows >= g.div_ceil(2);
        // The combine's slab rows first (as many as fit with one task's (m, l)), then as many tasks'
        // (m, l) per copy as the rest of the UB holds: a sequence cut into more pieces reads them in
        // groups, each group's loads a GM round trip.
        let p2 = |q: u64, k: u64| phase2_ub(q, latent_pitch, sz, k, carry);
        let mut combine_rows = g.min(MAX_SLAB_ROWS);
        while combine_rows > 0 && p2(combine_rows, 1) > ub {
            combine_rows -= 1;
        }
        let mut combine_tasks =
            u64::from(plan.max_tasks_per_sequence()).clamp(1, MLA_COMBINE_TASKS);
        while combine_tasks > 1 && p2(combine_rows, combine_tasks) > ub {
            combine_tasks -= 1;
        }
        if softmax_rows == 0 || combine_rows == 0 {
            return Err(KernelError::DoesNotFit {
                kernel: K,
                needed: phase1_ub(1, pitch, sz, latent_pitch, g).max(p2(1, 1)),
                available: ub,
            });
        }
        // Scratch per block: two slots (one with one key buffer) of scores f32 [g, pitch], P written
        // over them; then two slots of a whole sequence's O f32 [g, Dl] (32-byte multiples).
        let blocks = u64::from(blocks);
        let slots = if key_buffers == 1 { 1 } else { 2 };
        let scratch = blocks * (slots * g * pitch + 2 * round_up(g * d.latent_dim, 8)) * 4;
        let partial_at = round_up(scratch, UB_BLOCK);
        Ok(MlaDecodeTiling {
            batch: d.batch as u32,
            s_q: d.s_q as u32,
            heads: d.heads as u32,
            latent_dim: to_u32(K, "latent_dim", d.latent_dim)?,
            rope_dim: to_u32(K, "rope_dim", d.rope_dim)?,
            block_size: to_u32(K, "block_size", d.block_size)?,
            num_blocks: to_u32(K, "num_blocks", d.num_blocks)?,
            max_blocks: d.max_blocks as u32,
            scale,
            tasks: plan.tasks,
            chunk: plan.chunk,
            pitch: pitch as u32,
            softmax_rows: softmax_rows as u32,
            combine_rows: combine_rows as u32,
            latent_pitch: latent_pitch as u32,
            work_elems: work_elems as u32,
            qk_base_m: m as u32,
            qk_base_n: qk_n as u32,
            qk_base_k: qk_k as u32,
            pv_base_m: if sz == 2 { m } else { base_m } as u32,
            pv_base_n: pv_n as u32,
            pv_base_k: pv_k as u32,
            pv_pass_tiles: pv_pass_tiles as u32,
            ws_partial_at_lo: partial_at as u32,
            ws_partial_at_hi: (partial_at >> 32) as u32,
            mutation: mutation(),
            combine_tasks: combine_tasks as u32,
            key_buffers,
            carry: u32::from(carry),
            p_whole: u32::from(p_whole),
            uncut: u32::from(plan.cuts_no_sequence()),
            pv_cube,
        })
    }

    /// The kernel's Unified Buffer use per block in its larger phase, bytes (the source's formulas).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let sz = u64::from(dtype.size());
        let (r, p) = (u64::from(self.softmax_rows), u64::from(self.pitch));
        let g = u64::from(self.s_q) * u64::from(self.heads);
        let phase1 = phase1_ub(r, p, sz, u64::from(self.latent_pitch), g);
        let phase2 = phase2_ub(
            u64::from(self.combine_rows),
            u64::from(self.latent_pitch),
            sz,
            u64::from(self.combine_tasks),
            self.carries(),
        );
        phase1.max(phase2)
    }

    /// Blocks to launch: one per task up to the cores (every block meets the combine's SyncAll).
    pub fn block_dim(&self, budget: CoreBudget) -> u32 {
        self.tasks.min(budget.cores).max(1)
    }

    /// Where the partial outputs start in the workspace, bytes.
    pub fn partial_offset(&self) -> u64 {
        u64::from(self.ws_partial_at_lo) | (u64::from(self.ws_partial_at_hi) << 32)
    }

    /// Device workspace the launch needs, bytes: the per-block score and P scratch (and two whole
    /// sequences' outputs `[S·H, Dl]` f32), then per task the
    /// f32 partial output `[S·H, Dl]`, `(m, l)` per row and the two vector cores' segment words.
    pub fn workspace_bytes(&self) -> u64 {
        let g = u64::from(self.s_q) * u64::from(self.heads);
        SYS_WORKSPACE_BYTES
            + self.partial_offset()
            + u64::from(self.tasks)
                * (g * (u64::from(self.latent_dim) + 2) * 4 + SEGMENT_WORDS_BYTES)
    }

    /// Whether the kernel sums the P·V of a block's consecutive tasks of one sequence in L0C, writing a
    /// partial output per segment instead of per task (`carry` in the kernel's source).
    pub fn carries(&self) -> bool {
        self.carry != 0
    }
}

/// The systematic error a mutation test seeds into the kernel (0 = none). Read from
/// `DSNPU_KERNEL_MUTATION=mla_decode:<n>` only in builds with the `mutation` feature, which no normal
/// build enables; `n` is 1 (softmax scale), 2 (softmax denominator) or 3 (combine weights), each off by
/// a factor 1.001.
#[cfg(feature = "mutation")]
fn mutation() -> u32 {
    crate::mutation::for_kernel("mla_decode")
}

#[cfg(not(feature = "mutation"))]
fn mutation() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUBE: CoreBudget = CoreBudget::ASCEND_910B2_CUBE;

    fn dims(batch: u64, s_q: u64, heads: u64, block_size: u64) -> MlaDecodeDims {
        MlaDecodeDims {
            batch,
            s_q,
            heads,
            latent_dim: 512,
            rope_dim: 64,
            block_size,
            num_blocks: 64,
            max_blocks: 64,
        }
    }

    #[test]
    fn batch_one_is_cut_so_every_core_has_a_chunk() {
        // 4096 positions over 24 cores: at most 171 per chunk, 24 chunks of 171 (the last 163).
        let p = MlaDecodePlan::new(&[4096], 24).unwrap();
        assert_eq!((p.tasks(), p.chunk()), (24, 171));
        assert_eq!(p.task(0), Some((0, 0, 171)));
        assert_eq!(p.task(23), Some((0, 3933, 4096)));
        assert_eq!(&p.words()[..2], &[0, 24]);
        // The chunks tile the sequence exactly.
        let mut next = 0;
        for k in 0..p.tasks() {
            let (b, c0, c1) = p.task(k).unwrap();
            assert_eq!((b, c0), (0, next));
            next = c1;
        }
        assert_eq!(next, 4096);
    }

    #[test]
    fn many_short_sequences_are_not_cut() {
        let lens: Vec<usize> = (0..64).map(|i| 100 + i).collect();
        let p = MlaDecodePlan::new(&lens, 24).unwrap();
        assert_eq!(p.tasks(), 64);
        for b in 0..64u32 {
            assert_eq!(p.task(b), Some((b, 0, 100 + b)));
            assert_eq!(
                &p.words()[2 * b as usize..2 * b as usize + 2],
                &[b as i32, 1]
            );
        }
        // Ragged: a long sequence among short ones gets the chunks, each at most MLA_MAX_CHUNK.
        let p = MlaDecodePlan::new(&[1, 32768, 5], 2).unwrap();
        let n = 32768u32.div_ceil(MLA_MAX_CHUNK) as i32;
        assert_eq!(p.chunk(), 32768u32.div_ceil(n as u32));
        assert_eq!(p.tasks(), 1 + n as u32 + 1);
        assert_eq!(&p.words()[..6], &[0, 1, 1, n, 1 + n, 1]);
    }

    fn shape(query_rows: u32) -> MlaPlanShape {
        MlaPlanShape {
            query_rows,
            latent_dim: 512,
            rope_dim: 64,
            dtype: KernelDtype::Bf16,
        }
    }

    /// Every sequence's chunks cover it exactly, in order, none longer than the plan's chunk.
    fn assert_tiles(p: &MlaDecodePlan, lens: &[usize]) {
        let mut k = 0;
        for (b, &len) in lens.iter().enumerate() {
            let (first, count) = (p.words()[2 * b], p.words()[2 * b + 1]);
            assert_eq!(first as u32, k);
            let mut next = 0;
            for _ in 0..count {
                let (sb, c0, c1) = p.task(k).unwrap();
                assert_eq!((sb, c0), (b as u32, next));
                assert!(c1 - c0 <= p.chunk());
                next = c1;
                k += 1;
            }
            assert_eq!(next as usize, len);
        }
        assert_eq!(k, p.tasks());
    }

    #[test]
    fn shaped_plans_weigh_the_partials_against_the_cores() {
        // Batch 1, 4096 positions: a piece for every core, with 16 heads (each core's 171 cache rows
        // are 197 KB, its partial output 33 KB) and with 128 (a 263 KB partial per piece, but 171
        // positions per core: MLA_FILL_POSITIONS).
        for rows in [16, 128] {
            let p = MlaDecodePlan::for_shape(&[4096], shape(rows), 24).unwrap();
            assert_eq!(p.tasks(), 24, "{rows}: {p:?}");
            assert_tiles(&p, &[4096]);
        }
        // A long context is cut at least as far as the cube core's L1 requires (each chunk's rows stay
        // there from q·Kᵀ to P·V), into a piece for every core at least.
        for rows in [16, 128] {
            let q = MlaDecodePlan::for_shape(&[32768], shape(rows), 24).unwrap();
            let cap = mla_decode_max_chunk(&shape(rows), q.key_buffers());
            assert!(q.chunk() <= cap && q.tasks() >= 24, "{rows}: {q:?}");
            assert_tiles(&q, &[32768]);
        }
        // A short context with 128 heads is cut less than the head-blind plan cuts it.
        let s = MlaDecodePlan::for_shape(&[512], shape(128), 24).unwrap();
        assert!(s.tasks() < MlaDecodePlan::new(&[512], 24).unwrap().tasks());
        // Many sequences: every core has work without cutting; L1 may still require pieces.
        for (len, rows) in [(400, 16), (512, 128)] {
            let lens = vec![len; 64];
            let p = MlaDecodePlan::for_shape(&lens, shape(rows), 24).unwrap();
            let cap = mla_decode_max_chunk(&shape(rows), p.key_buffers()) as usize;
            assert_eq!(p.tasks() as usize, 64 * len.div_ceil(cap), "{p:?}");
            assert_tiles(&p, &lens);
        }
        // Ragged, with empty sequences and the chunk cap.
        let lens = [1, 0, 100_000, 5];
        let p = MlaDecodePlan::for_shape(&lens, shape(16), 2).unwrap();
        assert!(p.chunk() <= mla_decode_max_chunk(&shape(16), p.key_buffers()));
        assert_tiles(&p, &lens);
        // The chosen plan is never estimated slower than the head-blind one (where that one fits L1) by
        // more than a tie.
        for (lens, rows) in [(vec![4096], 16), (vec![512], 128), (vec![512; 8], 128)] {
            let a = MlaDecodePlan::for_shape(&lens, shape(rows), 24).unwrap();
            let b = MlaDecodePlan::new(&lens, 24).unwrap();
            assert!(b.chunk() <= mla_decode_max_chunk(&shape(rows), 1), "{b:?}");
            let est = |p: &MlaDecodePlan| {
                plan_estimate(
                    &lens,
                    u64::from(p.chunk()),
                    &shape(rows),
                    24,
                    p.key_buffers(),
                )
            };
            assert!(est(&a) <= est(&b) * (1.0 + PLAN_TIE), "{a:?} {b:?}");
        }
        assert!(MlaDecodePlan::for_shape(&[4], shape(0), 24).is_err());
        assert!(MlaDecodePlan::for_shape(&[], shape(16), 24).is_err());
    }

    /// Near ties go to fewer tasks, clear gains to more: with 128 heads, batch 16 at context 4096 keeps
    /// three streamed tasks per sequence (six estimated 0.1 % faster, modelled 10 % slower) and batch 1
    /// at context 32768 takes two per block (estimated 1.5 % faster, modelled 12 % faster).
    #[test]
    fn near_ties_go_to_fewer_tasks() {
        let p = MlaDecodePlan::for_shape(&[4096; 16], shape(128), 24).unwrap();
        assert_eq!((p.tasks(), p.key_buffers()), (48, 0), "{p:?}");
        let p = MlaDecodePlan::for_shape(&[32768], shape(128), 24).unwrap();
        assert_eq!((p.tasks(), p.key_buffers()), (48, 0), "{p:?}");
    }

    fn sz_of(dt: KernelDtype) -> u64 {
        u64::from(dt.size())
    }

    #[test]
    fn chunks_fit_the_cube_cores_l1() {
        // bf16, 16 heads: a 16-row query panel (18 KiB) beside 416 rows of 1152 bytes and P (2 bytes per
        // row and query row); with two chunks held, 208 each.
        assert_eq!(mla_decode_max_chunk(&shape(16), 1), 416);
        assert_eq!(mla_decode_max_chunk(&shape(16), 2), 208);
        // 128 heads: a 128-row panel (144 KiB) leaves 256 rows (144 for two chunks).
        assert_eq!(mla_decode_max_chunk(&shape(128), 1), 256);
        assert_eq!(mla_decode_max_chunk(&shape(128), 2), 144);
        // 512 rows (128 heads, s_q 4): the panel and P are taken 128 rows at a time.
        assert_eq!(mla_decode_max_chunk(&shape(512), 1), 256);
        let f32_16 = MlaPlanShape {
            dtype: KernelDtype::F32,
            ..shape(16)
        };
        assert_eq!(mla_decode_max_chunk(&f32_16, 1), 208);
        // Streamed keys: any chunk in 16-bit types, none in f32.
        assert_eq!(mla_decode_max_chunk(&shape(128), 0), MLA_MAX_CHUNK);
        assert_eq!(mla_decode_max_chunk(&f32_16, 0), 0);
        assert!(MlaDecodePlan::for_shape_pinned(&[4096], f32_16, 24, 0).is_err());
        assert!(MlaDecodePlan::for_shape_pinned(&[4096], shape(16), 24, 3).is_err());
        // A plan made without the shape can exceed it: the tiling says so.
        let p = MlaDecodePlan::new(&[32768], 2).unwrap();
        assert!(matches!(
            MlaDecodeTiling::new(dims(1, 1, 16, 128), &p, 0.1, KernelDtype::Bf16, CUBE),
            Err(KernelError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn rejects_empty_plans() {
        assert!(MlaDecodePlan::new(&[], 24).is_err());
        assert!(MlaDecodePlan::new(&[3], 0).is_err());
    }

    /// Carry holds where the kernel can take it and there is something to carry: 16-bit DeepSeek widths
    /// with 16 heads and 1 or 2 query tokens under held keys with blocks running several chunks of one
    /// sequence; not with one task per block, streamed keys, f32, or 64 query rows (P·V in two tiles).
    #[test]
    fn carry_where_a_block_runs_chunks_of_one_sequence() {
        let tiling = |s_q: u64, lens: &[usize], dt: KernelDtype, kb: Option<u32>| {
            let shape = MlaPlanShape {
                query_rows: (s_q * 16) as u32,
                latent_dim: 512,
                rope_dim: 64,
                dtype: dt,
            };
            let p = match kb {
                Some(kb) => MlaDecodePlan::for_shape_pinned(lens, shape, CUBE.cores, kb),
                None => MlaDecodePlan::for_shape(lens, shape, CUBE.cores),
            }
            .unwrap();
            let t = MlaDecodeTiling::new(dims(lens.len() as u64, s_q, 16, 128), &p, 0.1, dt, CUBE)
                .unwrap();
            (p, t)
        };
        for s_q in [1, 2] {
            for kb in [1, 2] {
                let (p, t) = tiling(s_q, &[32768], KernelDtype::Bf16, Some(kb));
                assert!(p.runs_a_sequence_on_a_block(CUBE.cores), "{p:?}");
                assert!(t.carries(), "{t:?}");
                // The combine's UB holds the segment words too.
                assert!(t.ub_bytes(KernelDtype::Bf16) <= u64::from(CUBE.ub_bytes));
            }
            assert!(!tiling(s_q, &[32768], KernelDtype::Bf16, Some(0))
                .1
                .carries());
            assert!(!tiling(s_q, &[32768], KernelDtype::F32, Some(1)).1.carries());
        }
        assert!(tiling(1, &[32768], KernelDtype::F16, Some(2)).1.carries());
        assert!(!tiling(4, &[32768], KernelDtype::Bf16, Some(2)).1.carries());
        // Batch 8 at context 512: 24 tasks, one per block.
        let (p, t) = tiling(1, &[512; 8], KernelDtype::Bf16, None);
        assert_eq!(p.tasks(), CUBE.cores, "{p:?}");
        assert!(!p.runs_a_sequence_on_a_block(CUBE.cores) && !t.carries());
    }

    /// Streamed keys take P into L1 whole where P·V has several output tiles and P fits beside
    /// narrowed q·Kᵀ staging tiles (at 128 query rows: chunks up to 1184 positions), else P per k step.
    #[test]
    fn streamed_p_comes_in_whole_where_it_fits() {
        let layout = |rows: u64, pitch: u64| streamed_layout(rows, 512, 64, 2, pitch);
        let whole = |qk_n| StreamedLayout {
            qk_n,
            p_whole: true,
        };
        let per_step = StreamedLayout {
            qk_n: MAX_STREAMED_QK_ROWS,
            p_whole: false,
        };
        // 128 rows (four 128-column output tiles): the widest staging tiles, up to 64 rows, that leave
        // room for P.
        assert_eq!(layout(128, 256), whole(64));
        assert_eq!(layout(128, 688), whole(64));
        assert_eq!(layout(128, 1024), whole(48));
        assert_eq!(layout(128, 1184), whole(32));
        assert_eq!(layout(128, 1200), per_step);
        // 64 rows (two output tiles): every chunk; 16 rows (one): none, P is read once either way.
        assert_eq!(layout(64, 2032), whole(64));
        assert_eq!(layout(16, 256), per_step);
        // Each layout is what L1 holds, and the tiling carries it (held 16-bit keys: P always whole).
        for (rows, pitch) in [(128, 688), (128, 1184), (128, 1200), (64, 2032), (16, 256)] {
            let m = panel_rows(rows);
            let l = layout(rows, pitch);
            let pv = pv_tiles(m, 512, 2);
            let bytes = streamed_l1(m, key_width(512, 64, 2), 2, pitch, l, pv, 512);
            assert!(bytes <= L1_BYTES, "{rows} rows, pitch {pitch}: {bytes}");
            assert_eq!(l1_bytes(rows, 512, 64, 2, pitch, 0), bytes);
            // P per k step: each pass sums two output tiles (one at 16 rows, whose tile is the latent).
            let tiles = pv_pass_tiles(0, l.p_whole, pv.0, 512);
            assert_eq!(tiles, if l.p_whole || rows == 16 { 1 } else { 2 });
        }
        // By hand, 128 rows and P per k step: the query panel 128 x 576, two staging tiles of the wider
        // of 64 key rows x 576 (36,864) and 128 latent rows x a pass's 256 columns (32,768), and two k
        // steps of P (128 x 128), all bf16.
        assert_eq!(
            l1_bytes(128, 512, 64, 2, 1200, 0),
            (128 * 576 + 2 * 64 * 576 + 2 * 128 * 128) * 2
        );
        let shape = MlaPlanShape {
            query_rows: 128,
            latent_dim: 512,
            rope_dim: 64,
            dtype: KernelDtype::Bf16,
        };
        // Batch 8 context 4096 planned for streamed or held keys: P whole in both (chunks of 683 streamed).
        for kb in [0, 1] {
            let p = MlaDecodePlan::for_shape_pinned(&[4096; 8], shape, CUBE.cores, kb).unwrap();
            let t = MlaDecodeTiling::new(dims(8, 1, 128, 128), &p, 0.1, KernelDtype::Bf16, CUBE)
                .unwrap();
            let qk_n = if kb == 0 {
                layout(128, u64::from(t.pitch)).qk_n as u32
            } else {
                t.pitch.min(128)
            };
            assert_eq!((t.qk_base_n, t.p_whole), (qk_n, 1), "{t:?}");
        }
    }

    #[test]
    fn deepseek_widths_fit() {
        for dt in KernelDtype::ALL {
            for (batch, s_q, heads, lens) in [
                (1u64, 1u64, 16u64, vec![4096usize]),
                (1, 4, 128, vec![32768]),
                (64, 2, 128, vec![512; 64]),
            ] {
                let shape = MlaPlanShape {
                    query_rows: (s_q * heads) as u32,
                    latent_dim: 512,
                    rope_dim: 64,
                    dtype: dt,
                };
                let p = MlaDecodePlan::for_shape(&lens, shape, CUBE.cores).unwrap();
                assert!(
                    p.chunk() <= mla_decode_max_chunk(&shape, p.key_buffers()),
                    "{p:?}"
                );
                let t = MlaDecodeTiling::new(dims(batch, s_q, heads, 128), &p, 0.1352, dt, CUBE)
                    .unwrap();
                // The cube core's L1 and L0 buffers as the kernel allocates them.
                let (pitch, sz) = (u64::from(t.pitch), sz_of(dt));
                let kb = u64::from(t.key_buffers);
                assert!(
                    l1_bytes(s_q * heads, 512, 64, sz, pitch, kb) <= L1_BYTES,
                    "{t:?}"
                );
                assert!(kb > 0 || sz == 2);
                assert!(u64::from(t.qk_base_m) * u64::from(t.qk_base_n) * 4 <= L0C_BUF);
                assert!(
                    u64::from(t.qk_base_m).max(u64::from(t.qk_base_n))
                        * u64::from(t.qk_base_k)
                        * sz
                        <= L0AB_BUF
                );
                if sz == 2 {
                    assert!(u64::from(t.pv_base_m) * u64::from(t.pv_base_n) * 4 <= L0C_BUF);
                    assert!(
                        u64::from(t.pv_base_m.max(t.pv_base_n)) * u64::from(t.pv_base_k) * sz
                            <= L0AB_BUF
                    );
                    assert!(t.pv_base_k >= 16 && t.pv_base_k.is_multiple_of(16));
                }
                assert!(t.qk_base_k.is_multiple_of(32 / sz as u32));
                assert!(t.ub_bytes(dt) <= u64::from(CUBE.ub_bytes), "{t:?}");
                assert!(t.softmax_rows >= 1 && t.combine_rows >= 1, "{t:?}");
                let sz = u64::from(dt.size());
                let l0 = |a: u32, b: u32, s: u64| u64::from(a) * u64::from(b) * s;
                assert!(
                    l0(t.qk_base_m, t.qk_base_k, sz) <= L0AB
                        && l0(t.qk_base_k, t.qk_base_n, sz) <= L0AB
                );
                assert!(
                    l0(t.pv_base_m, t.pv_base_k, sz) <= L0AB
                        && l0(t.pv_base_k, t.pv_base_n, sz) <= L0AB
                );
                assert!(l0(t.pv_base_m, t.pv_base_n, 4) <= 2 * L0AB);
                assert_eq!(t.mutation, 0);
                assert!(t.workspace_bytes() > t.partial_offset());
            }
        }
    }

    #[test]
    fn rejects_what_the_kernel_cannot_take() {
        let p = MlaDecodePlan::new(&[64], 4).unwrap();
        let bad = |d: MlaDecodeDims, scale: f32| {
            matches!(
                MlaDecodeTiling::new(d, &p, scale, KernelDtype::F32, CUBE),
                Err(KernelError::InvalidShape { .. })
            )
        };
        assert!(bad(dims(1, 0, 16, 64), 1.0));
        assert!(bad(
            MlaDecodeDims {
                rope_dim: 0,
                ..dims(1, 1, 16, 64)
            },
            1.0
        ));
        assert!(bad(dims(1, 1, 16, 64), f32::NAN));
        // The plan is for one sequence.
        assert!(bad(dims(2, 1, 16, 64), 1.0));
        let tiny = CoreBudget {
            cores: 1,
            ub_bytes: 4096,
        };
        assert!(matches!(
            MlaDecodeTiling::new(dims(1, 1, 16, 64), &p, 1.0, KernelDtype::F32, tiny),
            Err(KernelError::DoesNotFit { .. })
        ));
    }
}
