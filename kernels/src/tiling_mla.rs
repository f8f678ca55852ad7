//! Tiling of the MLA decode kernel (`src/ascendc/mla_decode.cpp`): the `#[repr(C)]` mirror of
//! `DsnpuMlaDecodeTiling` (`include/dsnpu_kernels/tiling.h`; `tests/mla_layout.rs` compares the layout
//! with the C compiler's), computed from the shape and the hardware budget.
//!
//! Contract, as for [`crate::tiling`]: [`MlaDecodeTiling::new`] validates the shape (no empty extent, a
//! finite scale, everything within the kernel's 32-bit fields) and returns a tiling whose Unified Buffer
//! plan — the formula the kernel's source states and allocates, mirrored by
//! [`MlaDecodeTiling::ub_bytes`] — fits the budget, or a typed error. The kernel trusts these values.
//!
//! Not checked here, because it lives on the device: the block table and the sequence lengths. The
//! kernel clamps a length to the block table's slots and reads cache rows only through checked GM
//! accesses (a block id outside the cache faults on the simulator); callers with host copies validate
//! them as dsnpu-ops' `check_mla_decode` does.

use crate::tiling::{impl_tiling, invalid, round_up, split, to_u32, Tiling, UB_BLOCK};
use crate::{CoreBudget, KernelDtype, KernelError, Result};

/// Most heads one task handles (the kernel keeps their running max and sum in fixed arrays).
pub const MLA_MAX_GROUP: u32 = 128;
/// Most cache rows one tile holds.
pub const MLA_MAX_TILE_ROWS: u32 = 128;

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

/// Tiling of `mla_decode_<t>` (`DsnpuMlaDecodeTiling`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaDecodeTiling {
    pub batch: u32,
    pub s_q: u32,
    pub heads: u32,
    pub latent_dim: u32,
    pub rope_dim: u32,
    pub block_size: u32,
    pub num_blocks: u32,
    pub max_blocks: u32,
    pub scale: f32,
    pub heads_per_task: u32,
    pub rows_per_tile: u32,
    pub tasks: u32,
    pub tasks_per_block: u32,
    pub latent_stride: u32,
    pub rope_stride: u32,
    pub score_stride: u32,
    pub work_elems: u32,
    pub reserved: u32,
}

impl MlaDecodeTiling {
    /// Plans the tasks (batch × query token × head group) and the tile for `d`.
    ///
    /// Heads are grouped so that there are at least as many tasks as cores when the heads allow it
    /// (each group re-reads the sequence's cache rows, so the groups are as large as that permits);
    /// then the tile shrinks, and if need be the group, until the Unified Buffer plan fits.
    pub fn new(
        d: MlaDecodeDims,
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
        let rows = d.batch.saturating_mul(d.s_q).saturating_mul(d.heads);
        to_u32(K, "batch * s_q * heads", rows)?;
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
        let sz = u64::from(dtype.size());
        let per_block = UB_BLOCK / sz;
        let latent_stride = to_u32(K, "latent_dim", round_up(d.latent_dim, per_block))?;
        let rope_stride = to_u32(K, "rope_dim", round_up(d.rope_dim, per_block))?;
        let heads = d.heads as u32; // <= rows, checked above
                                    // Groups per (batch, query token) wanted to give every core a task.
        let pairs = d.batch * d.s_q;
        let want_groups = u64::from(budget.cores).div_ceil(pairs).max(1);
        let mut group = (d.heads.div_ceil(want_groups) as u32).clamp(1, MLA_MAX_GROUP);
        let mut t = MlaDecodeTiling {
            batch: d.batch as u32,
            s_q: d.s_q as u32,
            heads,
            latent_dim: to_u32(K, "latent_dim", d.latent_dim)?,
            rope_dim: to_u32(K, "rope_dim", d.rope_dim)?,
            block_size: to_u32(K, "block_size", d.block_size)?,
            num_blocks: to_u32(K, "num_blocks", d.num_blocks)?,
            max_blocks: d.max_blocks as u32,
            scale,
            heads_per_task: group,
            rows_per_tile: d.block_size.min(u64::from(MLA_MAX_TILE_ROWS)) as u32,
            tasks: 0,
            tasks_per_block: 0,
            latent_stride,
            rope_stride,
            score_stride: 0,
            work_elems: 0,
            reserved: 0,
        };
        let ub = u64::from(budget.ub_bytes);
        loop {
            t.heads_per_task = group;
            t.score_stride = round_up(u64::from(t.rows_per_tile), 8) as u32;
            // ReduceMax's work space with the index (2 partials per 64-float repeat), the largest count.
            let count = t.latent_dim.max(t.rope_dim).max(t.rows_per_tile);
            t.work_elems = round_up(2 * u64::from(count).div_ceil(64), 8) as u32;
            if t.ub_bytes(dtype) <= ub {
                break;
            }
            if t.rows_per_tile > 1 {
                t.rows_per_tile = t.rows_per_tile.div_ceil(2);
            } else if group > 1 {
                group = group.div_ceil(2);
            } else {
                return Err(KernelError::DoesNotFit {
                    kernel: K,
                    needed: t.ub_bytes(dtype),
                    available: ub,
                });
            }
        }
        let groups = heads.div_ceil(t.heads_per_task);
        t.tasks = to_u32(K, "tasks", pairs * u64::from(groups))?;
        t.tasks_per_block = split(t.tasks, budget.cores).0;
        Ok(t)
    }

    /// The kernel's Unified Buffer use per block, bytes (the formula of its source).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let sz = u64::from(dtype.size());
        let (g, n) = (
            u64::from(self.heads_per_task),
            u64::from(self.rows_per_tile),
        );
        let (l, r) = (u64::from(self.latent_stride), u64::from(self.rope_stride));
        let row = l + r;
        let widened = if dtype == KernelDtype::F32 {
            0
        } else {
            n * row * 4 + g * row * 4
        };
        2 * n * row * sz
            + g * row * sz
            + g * l * sz
            + UB_BLOCK * g
            + g * l * 4
            + g * u64::from(self.score_stride) * 4
            + l.max(r) * 4
            + round_up(u64::from(self.work_elems) * 4, UB_BLOCK)
            + 2 * UB_BLOCK
            + widened
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.tasks.div_ceil(self.tasks_per_block)
    }

    /// Device workspace the launch needs: none.
    pub fn workspace_bytes(&self) -> u64 {
        0
    }
}

impl_tiling!(MlaDecodeTiling);

#[cfg(test)]
mod tests {
    use super::*;

    const V: CoreBudget = CoreBudget::ASCEND_910B2_VECTOR;

    fn dims(batch: u64, s_q: u64, heads: u64, block_size: u64) -> MlaDecodeDims {
        MlaDecodeDims {
            batch,
            s_q,
            heads,
            latent_dim: 512,
            rope_dim: 64,
            block_size,
            num_blocks: 64,
            max_blocks: 16,
        }
    }

    #[test]
    fn deepseek_widths_fit_and_feed_every_core() {
        for dt in KernelDtype::ALL {
            // One sequence, 16 heads: 48 cores want 48 groups, so one head per task, 16 tasks.
            let t = MlaDecodeTiling::new(dims(1, 1, 16, 64), 0.1352, dt, V).unwrap();
            assert_eq!((t.heads_per_task, t.tasks, t.block_dim()), (1, 16, 16));
            assert!(t.ub_bytes(dt) <= u64::from(V.ub_bytes));
            // 16 sequences x 2 query tokens = 32 pairs: 2 groups of 8 heads each, 64 tasks.
            let t = MlaDecodeTiling::new(dims(16, 2, 16, 128), 0.1352, dt, V).unwrap();
            assert_eq!((t.heads_per_task, t.tasks), (8, 64));
            assert_eq!((t.tasks_per_block, t.block_dim()), (2, 32));
            assert!(t.ub_bytes(dt) <= u64::from(V.ub_bytes), "{t:?}");
            assert!(t.rows_per_tile >= 8, "{t:?}");
            // 512 f32 / 64 bf16 elements are already whole 32-byte blocks.
            assert_eq!((t.latent_stride, t.rope_stride), (512, 64));
        }
    }

    #[test]
    fn odd_widths_pad_rows_to_32_bytes() {
        let d = MlaDecodeDims {
            latent_dim: 36,
            rope_dim: 12,
            ..dims(4, 1, 1, 16)
        };
        let t = MlaDecodeTiling::new(d, 0.5, KernelDtype::F32, V).unwrap();
        assert_eq!((t.latent_stride, t.rope_stride), (40, 16));
        let t = MlaDecodeTiling::new(d, 0.5, KernelDtype::Bf16, V).unwrap();
        assert_eq!((t.latent_stride, t.rope_stride), (48, 16));
        assert_eq!((t.rows_per_tile, t.score_stride), (16, 16));
        // ReduceMax over at most 36 floats: one repeat, 2 partials, one 8-float block.
        assert_eq!(t.work_elems, 8);
    }

    #[test]
    fn a_small_ub_shrinks_the_tile_then_the_group() {
        let small = CoreBudget {
            cores: 1,
            ub_bytes: 40_000,
        };
        let t = MlaDecodeTiling::new(dims(1, 1, 16, 128), 1.0, KernelDtype::F16, small).unwrap();
        assert!(t.ub_bytes(KernelDtype::F16) <= 40_000, "{t:?}");
        assert!(t.heads_per_task < 16 && t.rows_per_tile == 1, "{t:?}");
        let tiny = CoreBudget {
            cores: 1,
            ub_bytes: 4096,
        };
        assert!(matches!(
            MlaDecodeTiling::new(dims(1, 1, 16, 128), 1.0, KernelDtype::F16, tiny),
            Err(KernelError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn rejects_what_the_kernel_cannot_take() {
        let bad = |d: MlaDecodeDims, scale: f32| {
            matches!(
                MlaDecodeTiling::new(d, scale, KernelDtype::F32, V),
                Err(KernelError::InvalidShape { .. })
            )
        };
        assert!(bad(dims(0, 1, 16, 64), 1.0));
        assert!(bad(dims(1, 0, 16, 64), 1.0));
        assert!(bad(
            MlaDecodeDims {
                rope_dim: 0,
                ..dims(1, 1, 16, 64)
            },
            1.0
        ));
        assert!(bad(dims(1, 1, 16, 64), f32::NAN));
        assert!(bad(dims(1 << 20, 1 << 10, 16, 64), 1.0));
    }
}
