//! Tiling of the fused MLA cache write (`src/ascendc/mla_cache_write.cpp`): `MlaCacheWriteTiling`, generated from
//! `DsnpuMlaCacheWriteTiling` (`include/dsnpu_kernels/tiling.h`; `tests/mla_layout.rs` compares the
//! layout with the C compiler's), computed from the shape and the hardware budget.
//!
//! Contract, as for [`crate::tiling`]: [`MlaCacheWriteTiling::new`] validates the shape (no empty
//! extent, an even rope width, a row wide enough for both parts, a finite non-negative eps, everything
//! within the kernel's 32-bit fields) and returns a tiling whose Unified Buffer plan (the formula the
//! kernel's source states, mirrored by [`MlaCacheWriteTiling::ub_bytes`]) fits the budget, or a typed
//! error. Not checked here, because they live on the device: the slots and the positions (an entry
//! outside the caches or the tables faults on the kernel's checked GM access).

use crate::tiling::{invalid, round_up, split, to_u32, UB_BLOCK};
use crate::{CoreBudget, KernelDtype, KernelError, Result, RopeLayout};

pub use crate::tiling_structs::MlaCacheWriteTiling;

/// The extents of a fused cache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaCacheWriteDims {
    pub tokens: u64,
    /// Dl (kv_lora_rank).
    pub latent_dim: u64,
    /// Dr (qk_rope_dim), even.
    pub rope_dim: u64,
    /// Elements from one kv row to the next (`>= Dl + Dr`).
    pub kv_stride: u64,
    /// Rows of each cache (`num_blocks · block_size`).
    pub num_slots: u64,
    /// Rows of the cos and sin tables.
    pub table_rows: u64,
}

impl MlaCacheWriteTiling {
    /// Tokens split evenly over the budget's cores.
    pub fn new(
        d: MlaCacheWriteDims,
        layout: RopeLayout,
        eps: f32,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "mla_cache_write";
        let budget = budget.validate()?;
        for (what, v) in [
            ("tokens", d.tokens),
            ("latent_dim", d.latent_dim),
            ("rope_dim", d.rope_dim),
            ("num_slots", d.num_slots),
            ("table_rows", d.table_rows),
        ] {
            if v == 0 {
                return Err(invalid(K, format!("{what} is 0")));
            }
        }
        if d.rope_dim % 2 == 1 {
            return Err(invalid(K, format!("rope dim {} is odd", d.rope_dim)));
        }
        if d.kv_stride < d.latent_dim + d.rope_dim {
            return Err(invalid(
                K,
                format!(
                    "kv row stride {} is shorter than latent {} + rope {}",
                    d.kv_stride, d.latent_dim, d.rope_dim
                ),
            ));
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(invalid(
                K,
                format!("eps {eps} is not a finite non-negative number"),
            ));
        }
        to_u32(
            K,
            "tokens * kv_stride",
            d.tokens.saturating_mul(d.kv_stride),
        )?;
        to_u32(
            K,
            "num_slots * latent_dim",
            d.num_slots.saturating_mul(d.latent_dim),
        )?;
        to_u32(
            K,
            "table elements",
            d.table_rows.saturating_mul(d.rope_dim / 2),
        )?;
        // The kernel's slot index is an i32 (-1 = skip).
        if d.num_slots > i32::MAX as u64 {
            return Err(invalid(K, format!("{} slots exceed i32", d.num_slots)));
        }
        let tokens = to_u32(K, "tokens", d.tokens)?;
        let (tokens_per_block, _) = split(tokens, budget.cores);
        let t = MlaCacheWriteTiling {
            tokens,
            latent_dim: to_u32(K, "latent_dim", d.latent_dim)?,
            rope_dim: to_u32(K, "rope_dim", d.rope_dim)?,
            kv_stride: to_u32(K, "kv_stride", d.kv_stride)?,
            num_slots: to_u32(K, "num_slots", d.num_slots)?,
            table_rows: to_u32(K, "table_rows", d.table_rows)?,
            layout: layout as u32,
            tokens_per_block,
            eps,
            reserved: 0,
        };
        let needed = t.ub_bytes(dtype);
        if needed > u64::from(budget.ub_bytes) {
            return Err(KernelError::DoesNotFit {
                kernel: K,
                needed,
                available: u64::from(budget.ub_bytes),
            });
        }
        Ok(t)
    }

    /// The kernel's Unified Buffer use per block, bytes (the formula of its source).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let s = u64::from(dtype.size());
        let pl = round_up(u64::from(self.latent_dim) * s, UB_BLOCK);
        let pr = round_up(u64::from(self.rope_dim) * s, UB_BLOCK);
        let (fl, fr) = (pl / s * 4, pr / s * 4);
        let h = round_up(u64::from(self.rope_dim / 2) * 4, UB_BLOCK);
        let widened = if dtype == KernelDtype::F32 {
            0
        } else {
            fl + fr
        };
        let reduce = UB_BLOCK + round_up(u64::from(self.latent_dim).div_ceil(64) * 4, UB_BLOCK);
        pl + pr + widened + 2 * fl + reduce + 2 * h + 7 * fr
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.tokens.div_ceil(self.tokens_per_block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> MlaCacheWriteDims {
        MlaCacheWriteDims {
            tokens: 100,
            latent_dim: 512,
            rope_dim: 64,
            kv_stride: 576,
            num_slots: 1024,
            table_rows: 4096,
        }
    }

    #[test]
    fn deepseek_shape_splits_tokens_and_fits() {
        let b = CoreBudget::ASCEND_910B2_VECTOR;
        let t =
            MlaCacheWriteTiling::new(dims(), RopeLayout::Interleaved, 1e-6, KernelDtype::Bf16, b)
                .unwrap();
        assert_eq!((t.tokens_per_block, t.block_dim()), (3, 34));
        // bf16: Pl 1024, Pr 128, Fl 2048, Fr 256: 1024 + 128 + 2304 + 4096 + 64 + 256 + 1792.
        assert_eq!(t.ub_bytes(KernelDtype::Bf16), 9664);
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let b = CoreBudget::ASCEND_910B2_VECTOR;
        let f = |d: MlaCacheWriteDims, eps: f32| {
            MlaCacheWriteTiling::new(d, RopeLayout::HalfSplit, eps, KernelDtype::F32, b)
        };
        assert!(f(
            MlaCacheWriteDims {
                tokens: 0,
                ..dims()
            },
            1e-6
        )
        .is_err());
        assert!(f(
            MlaCacheWriteDims {
                rope_dim: 63,
                kv_stride: 575,
                ..dims()
            },
            1e-6
        )
        .is_err());
        assert!(f(
            MlaCacheWriteDims {
                kv_stride: 575,
                ..dims()
            },
            1e-6
        )
        .is_err());
        assert!(f(dims(), f32::NAN).is_err());
        let tiny = CoreBudget {
            cores: 1,
            ub_bytes: 1024,
        };
        assert!(matches!(
            MlaCacheWriteTiling::new(dims(), RopeLayout::HalfSplit, 1e-6, KernelDtype::F32, tiny),
            Err(KernelError::DoesNotFit { .. })
        ));
    }
}
