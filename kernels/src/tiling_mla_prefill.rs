//! Tiling of the MLA prefill kernel (`src/ascendc/mla_prefill.cpp`): `MlaPrefillTiling`, generated from
//! `DsnpuMlaPrefillTiling` (`include/dsnpu_kernels/tiling.h`; `tests/mla_layout.rs` compares the
//! layout with the C compiler's) and its computation.
//!
//! Contract, as for [`crate::tiling`]: [`MlaPrefillTiling::new`] validates everything the kernel
//! trusts — the host copies of the cumulative lengths (start at 0, non-decreasing, end at the token
//! counts, every sequence with at least as many keys as queries), every operand view inside its buffer
//! (its last element `off + (tokens − 1)·tok + (heads − 1)·head + width − 1` below its length), no
//! empty width, a finite scale, all within the kernel's 32-bit fields — and returns a tiling whose
//! Unified Buffer plan (the formula the kernel's source states, [`MlaPrefillTiling::ub_bytes`]) fits
//! the budget, or a typed error. The device copies of the cumulative lengths must equal the host
//! copies given here (the launcher's caller uploads them); the kernel clamps what it reads to the
//! token counts, so a mismatch can only make it skip or misplace work inside its own outputs.

use crate::tiling::{invalid, round_up, to_u32, UB_BLOCK};
use crate::tiling_cube::SYS_WORKSPACE_BYTES;
use crate::tiling_mla::task_cube;
use crate::{CoreBudget, KernelDtype, KernelError, Result};

pub use crate::tiling_structs::MlaPrefillTiling;

/// Query rows of a task (the kernel's per-row state arrays hold this many).
pub const MLA_PREFILL_MAX_BLOCK_M: u64 = 128;
/// Keys per tile: 512 quarters the f32 P·V tile's workspace round trip per key against 128 (it is once
/// per key tile) and halves the query tile's reloads (once per 256-key base step), at 256 KiB of f32
/// scores per block in the workspace.
const BLOCK_N: u64 = 512;
/// Most rows of a UB slab.
const MAX_SLAB_ROWS: u64 = 32;
/// L0A / L0B bytes of the cube's base tiles.
const L0AB: u64 = 64 * 1024;

/// f32 values per row of the slab's fold work (one 256-byte repeat: row_ops.h).
const ROW_FOLD: u64 = 64;

/// Rows of a P·V / output slab: the O and out queues are a small part of the UB, so the score slab
/// gets the rest (the softmax's instructions each cover one slab: more rows, fewer instructions).
const OUT_ROWS: u64 = 8;

/// The kernel's UB bytes per vector core for `bm` query rows, `r` score slab rows, `ro` output slab rows,
/// `n` keys per tile, value rows `dp` apart and `sz`-byte elements (the source's formula): acc, the
/// score / P / O / out queues, the lse queue, the fold work, the slab's three per-row vectors and the
/// scale block, m and l of two tasks and alpha of two steps, and the per-row broadcast blocks.
fn ub_formula(bm: u64, r: u64, ro: u64, n: u64, dp: u64, sz: u64) -> u64 {
    bm * dp * 4
        + 2 * r * n * (4 + sz)
        + 2 * ro * dp * (4 + sz)
        + 2 * round_up(bm * 4, UB_BLOCK)
        + ROW_FOLD * r * 4
        + 3 * round_up(r, 8) * 4
        + UB_BLOCK
        + 6 * bm * 4
        + bm * UB_BLOCK
}

/// How the kernel addresses one operand: element `d` of token `t`, head `h` is at
/// `off + t·tok + h·head + d` of a buffer of `len` elements (`head` 0: one row shared by every head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MlaOperand {
    pub tok: u64,
    pub head: u64,
    pub off: u64,
    pub len: u64,
}

impl MlaOperand {
    /// A dense `[tokens, heads, width]` buffer.
    pub fn dense(tokens: u64, heads: u64, width: u64) -> MlaOperand {
        MlaOperand {
            tok: heads * width,
            head: width,
            off: 0,
            len: tokens * heads * width,
        }
    }
}

/// The extents and operand views of an MLA prefill. `q_rope`/`k_rope` are ignored when `dr` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaPrefillDims {
    pub heads: u64,
    pub tokens_q: u64,
    pub tokens_k: u64,
    /// Width of the `q_nope · k_nope` part (192 for the plain expanded form, 128 for DeepSeek's split).
    pub dn: u64,
    /// Width of the `q_rope · k_rope` part (0 = none).
    pub dr: u64,
    pub dv: u64,
    pub q_nope: MlaOperand,
    pub q_rope: MlaOperand,
    pub k_nope: MlaOperand,
    pub k_rope: MlaOperand,
    pub v: MlaOperand,
}

/// The largest multiple of 16 (at least 16) that is `≤ v`.
fn down16(v: u64) -> u64 {
    (v / 16 * 16).max(16)
}

/// `cu` must be `[0, …, total]`, non-decreasing; returns the per-sequence lengths.
fn lengths(what: &'static str, cu: &[i32], total: u64) -> Result<Vec<u64>> {
    const K: &str = "mla_prefill";
    if cu.first() != Some(&0) {
        return Err(invalid(
            K,
            format!("{what} must start at 0: {:?}", cu.first()),
        ));
    }
    let mut out = Vec::with_capacity(cu.len() - 1);
    for (i, w) in cu.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(invalid(
                K,
                format!("{what} decreases at {}: {} then {}", i + 1, w[0], w[1]),
            ));
        }
        out.push((w[1] - w[0]) as u64);
    }
    let last = *cu.last().expect("starts with 0") as u64;
    if last != total {
        return Err(invalid(
            K,
            format!("{what} ends at {last}, not at the {total} tokens"),
        ));
    }
    Ok(out)
}

impl MlaPrefillTiling {
    /// Tiles the prefill of `d` over the sequences `cu_q` / `cu_k` (host copies, `[B + 1]` each).
    pub fn new(
        d: MlaPrefillDims,
        cu_q: &[i32],
        cu_k: &[i32],
        scale: f32,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "mla_prefill";
        let budget = budget.validate()?;
        for (what, v) in [("heads", d.heads), ("dn", d.dn), ("dv", d.dv)] {
            if v == 0 {
                return Err(invalid(K, format!("{what} is 0")));
            }
        }
        if !scale.is_finite() {
            return Err(invalid(K, format!("scale {scale} is not finite")));
        }
        if cu_q.len() != cu_k.len() || cu_q.len() < 2 {
            return Err(invalid(
                K,
                format!(
                    "cu_q has {} entries, cu_k {}: both need B + 1 ≥ 2",
                    cu_q.len(),
                    cu_k.len()
                ),
            ));
        }
        let lq = lengths("cu_q", cu_q, d.tokens_q)?;
        let lk = lengths("cu_k", cu_k, d.tokens_k)?;
        for (b, (q, k)) in lq.iter().zip(&lk).enumerate() {
            if k < q {
                return Err(invalid(
                    K,
                    format!("sequence {b} has {q} queries but only {k} keys"),
                ));
            }
        }
        let mut views = vec![
            ("q_nope", d.q_nope, d.tokens_q, d.dn),
            ("k_nope", d.k_nope, d.tokens_k, d.dn),
            ("v", d.v, d.tokens_k, d.dv),
        ];
        if d.dr > 0 {
            views.push(("q_rope", d.q_rope, d.tokens_q, d.dr));
            views.push(("k_rope", d.k_rope, d.tokens_k, d.dr));
        }
        for (what, o, tokens, width) in views {
            to_u32(K, what, o.len)?;
            if tokens == 0 {
                continue;
            }
            let last = (tokens - 1)
                .checked_mul(o.tok)
                .and_then(|x| x.checked_add((d.heads - 1).checked_mul(o.head)?))
                .and_then(|x| x.checked_add(o.off + width));
            if last.is_none_or(|l| l > o.len) {
                return Err(invalid(
                    K,
                    format!("the {what} view {o:?} of width {width} reaches past its buffer"),
                ));
            }
            for (f, v) in [("tok", o.tok), ("head", o.head), ("off", o.off)] {
                to_u32(K, &format!("{what}.{f}"), v)?;
            }
        }
        to_u32(K, "tokens_q * heads * dv", d.tokens_q * d.heads * d.dv)?;

        let sz = u64::from(dtype.size());
        let dv_pitch = round_up(d.dv, 16);
        let ub = u64::from(budget.ub_bytes);
        let ub_of = |bm: u64, r: u64| ub_formula(bm, r, OUT_ROWS, BLOCK_N, dv_pitch, sz);
        // Slab rows and block_m stay multiples of 8: the per-row vectors of a slab start on 32-byte
        // boundaries (row_ops.h).
        let mut block_m = MLA_PREFILL_MAX_BLOCK_M;
        let mut rows = MAX_SLAB_ROWS;
        while ub_of(block_m, rows) > ub {
            if rows > 8 {
                rows /= 2;
            } else if block_m > 16 {
                block_m /= 2;
            } else {
                return Err(KernelError::DoesNotFit {
                    kernel: K,
                    needed: ub_of(block_m, rows),
                    available: ub,
                });
            }
        }
        let tasks: u64 = lq.iter().map(|&l| l.div_ceil(block_m)).sum::<u64>() * d.heads;
        let base_m = round_up(block_m, 16).min(128);
        // 256 keys per base step (L0C: 128 x 256 f32 = 128 KiB, all of it), so the query tile is loaded
        // once per 256 keys.
        let qk_base_n = BLOCK_N.min(256);
        let qk_base_k = down16(L0AB / (base_m.max(qk_base_n) * sz)).min(256);
        let pv_base_n = round_up(d.dv, 16).min(256);
        let pv_base_k = down16(L0AB / (base_m.max(pv_base_n) * sz)).min(256);
        let qk_cube = task_cube(
            K,
            (block_m, BLOCK_N, d.dn),
            (base_m, qk_base_n, qk_base_k),
            sz,
        )?;
        let pv_cube = task_cube(
            K,
            (block_m, d.dv, BLOCK_N),
            (base_m, pv_base_n, pv_base_k),
            sz,
        )?;
        let u = |what: &str, v: u64| to_u32(K, what, v);
        Ok(MlaPrefillTiling {
            batch: u("batch", lq.len() as u64)?,
            heads: u("heads", d.heads)?,
            tokens_q: u("tokens_q", d.tokens_q)?,
            tokens_k: u("tokens_k", d.tokens_k)?,
            dn: u("dn", d.dn)?,
            dr: u("dr", d.dr)?,
            dv: u("dv", d.dv)?,
            qn_tok: d.q_nope.tok as u32,
            qn_head: d.q_nope.head as u32,
            qn_off: d.q_nope.off as u32,
            qn_len: d.q_nope.len as u32,
            qr_tok: u("q_rope.tok", d.q_rope.tok)?,
            qr_head: u("q_rope.head", d.q_rope.head)?,
            qr_off: u("q_rope.off", d.q_rope.off)?,
            qr_len: u("q_rope.len", d.q_rope.len)?,
            kn_tok: d.k_nope.tok as u32,
            kn_head: d.k_nope.head as u32,
            kn_off: d.k_nope.off as u32,
            kn_len: d.k_nope.len as u32,
            kr_tok: u("k_rope.tok", d.k_rope.tok)?,
            kr_head: u("k_rope.head", d.k_rope.head)?,
            kr_off: u("k_rope.off", d.k_rope.off)?,
            kr_len: u("k_rope.len", d.k_rope.len)?,
            v_tok: d.v.tok as u32,
            v_head: d.v.head as u32,
            v_off: d.v.off as u32,
            v_len: d.v.len as u32,
            scale,
            tasks: u("tasks", tasks)?,
            block_m: block_m as u32,
            block_n: BLOCK_N as u32,
            dv_pitch: u("dv_pitch", dv_pitch)?,
            softmax_rows: rows as u32,
            work_elems: (ROW_FOLD * rows) as u32,
            qk_base_m: base_m as u32,
            qk_base_n: qk_base_n as u32,
            qk_base_k: qk_base_k as u32,
            pv_base_m: base_m as u32,
            pv_base_n: pv_base_n as u32,
            pv_base_k: pv_base_k as u32,
            mutation: mutation(),
            out_rows: OUT_ROWS as u32,
            qk_cube,
            pv_cube,
        })
    }

    /// The kernel's Unified Buffer use per block, bytes (the source's formula).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let sz = u64::from(dtype.size());
        let (bm, r, ro, n, dp) = (
            u64::from(self.block_m),
            u64::from(self.softmax_rows),
            u64::from(self.out_rows),
            u64::from(self.block_n),
            u64::from(self.dv_pitch),
        );
        ub_formula(bm, r, ro, n, dp, sz)
    }

    /// Blocks to launch: one per task up to the cores.
    pub fn block_dim(&self, budget: CoreBudget) -> u32 {
        self.tasks.min(budget.cores).max(1)
    }

    /// Device workspace the launch (a mix launch) needs for `blocks` blocks, bytes: the system
    /// workspace, then per vector core (two per block) two tiles' f32 scores (the next tile's are
    /// computed while the vector core works on this one), the `t` P of two tiles (the next tile's is
    /// written while the cube reads this one's), and the f32 P·V of one tile.
    pub fn workspace_bytes(&self, dtype: KernelDtype, blocks: u32) -> u64 {
        let (bm, n) = (u64::from(self.block_m), u64::from(self.block_n));
        let per = bm * n * 2 * (4 + u64::from(dtype.size())) + bm * u64::from(self.dv) * 4;
        SYS_WORKSPACE_BYTES + 2 * u64::from(blocks) * per
    }
}

/// The systematic error a mutation test seeds into the kernel (0 = none). Read from
/// `DSNPU_KERNEL_MUTATION=mla_prefill:<n>` only in builds with the `mutation` feature, which no normal
/// build enables; `n` is 1 (softmax scale), 2 (softmax denominator) or 3 (the P weights of P·V), each
/// off by a factor 1.001.
#[cfg(feature = "mutation")]
fn mutation() -> u32 {
    crate::mutation::for_kernel("mla_prefill")
}

#[cfg(not(feature = "mutation"))]
fn mutation() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUBE: CoreBudget = CoreBudget::ASCEND_910B2_CUBE;

    fn dense(tq: u64, tk: u64, heads: u64) -> MlaPrefillDims {
        MlaPrefillDims {
            heads,
            tokens_q: tq,
            tokens_k: tk,
            dn: 192,
            dr: 0,
            dv: 128,
            q_nope: MlaOperand::dense(tq, heads, 192),
            q_rope: MlaOperand::default(),
            k_nope: MlaOperand::dense(tk, heads, 192),
            k_rope: MlaOperand::default(),
            v: MlaOperand::dense(tk, heads, 128),
        }
    }

    #[test]
    fn deepseek_widths_fit_in_every_dtype() {
        for dtype in KernelDtype::ALL {
            let t = MlaPrefillTiling::new(
                dense(4096, 4096, 128),
                &[0, 4096],
                &[0, 4096],
                0.1352,
                dtype,
                CUBE,
            )
            .unwrap();
            assert_eq!((t.block_m, t.block_n), (128, 512));
            // The output side's slabs stay small, so the score slabs get the UB: 16 rows with a
            // 16-bit dtype, 8 in f32.
            let slab = if dtype.size() == 4 { 8 } else { 16 };
            assert_eq!((t.softmax_rows, t.out_rows), (slab, 8), "{dtype:?}");
            assert_eq!(t.tasks, 32 * 128);
            assert!(t.ub_bytes(dtype) <= 196_608, "{t:?}");
            assert_eq!(t.block_dim(CUBE), 24);
        }
    }

    #[test]
    fn tasks_count_query_tiles_per_sequence_and_head() {
        let t = MlaPrefillTiling::new(
            dense(318, 318 + 40, 16),
            &[0, 1, 18, 318],
            &[0, 1, 58, 358],
            1.0,
            KernelDtype::Bf16,
            CUBE,
        )
        .unwrap();
        assert_eq!(t.tasks, (1 + 1 + 3) * 16);
    }

    #[test]
    fn rejects_what_the_kernel_cannot_take() {
        let ok =
            |d, q: &[i32], k: &[i32]| MlaPrefillTiling::new(d, q, k, 1.0, KernelDtype::F32, CUBE);
        assert!(ok(dense(4, 4, 2), &[0, 4], &[0, 4]).is_ok());
        assert!(
            ok(dense(4, 4, 2), &[0, 3], &[0, 4]).is_err(),
            "cu_q short of T"
        );
        assert!(ok(dense(4, 4, 2), &[1, 4], &[1, 4]).is_err(), "not from 0");
        assert!(ok(dense(4, 4, 2), &[0, 3, 2, 4], &[0, 3, 2, 4]).is_err());
        assert!(ok(dense(4, 3, 2), &[0, 4], &[0, 3]).is_err(), "fewer keys");
        let mut d = dense(4, 4, 2);
        d.v.len -= 1;
        assert!(ok(d, &[0, 4], &[0, 4]).is_err(), "v view past its buffer");
        let mut d = dense(4, 4, 2);
        d.dr = 64;
        assert!(ok(d, &[0, 4], &[0, 4]).is_err(), "an empty rope view");
        assert!(MlaPrefillTiling::new(
            dense(4, 4, 2),
            &[0, 4],
            &[0, 4],
            f32::NAN,
            KernelDtype::F32,
            CUBE
        )
        .is_err());
    }
}
