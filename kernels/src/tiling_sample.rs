//! Tiling of the top-p sampling kernel `sample_top_p_<t>` (`src/ascendc/sample_top_p.cpp`), the
//! struct generated from `DsnpuSampleTopPTiling` (`include/dsnpu_kernels/tiling_sample.h`;
//! `tests/mla_layout.rs` compares the layouts with the C compiler's).
//!
//! Contract, as for [`crate::tiling`]: the constructor validates the shape (no empty extent, ids within
//! i32) and the parameters (temperature finite and > 0 — greedy is `argmax_<t>` —, top_p in (0, 1]) and
//! returns a tiling whose Unified Buffer plan fits the budget, or a typed error.

use crate::tiling::{invalid, round_up, UB_BLOCK};
use crate::tiling_step::{arg_scan_ub, check_ub, row_scan};
use crate::{CoreBudget, KernelDtype, Result};

pub use crate::tiling_structs::SampleTopPTiling;

impl SampleTopPTiling {
    pub fn new(
        rows: u64,
        cols: u64,
        temperature: f32,
        top_p: f32,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "sample_top_p";
        let budget = budget.validate()?;
        let (rows, cols, rows_per_block, cols_per_tile) = row_scan(K, rows, cols, true, budget)?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(invalid(
                K,
                format!("temperature must be finite and > 0 (0 is argmax), got {temperature}"),
            ));
        }
        let inv_temperature = 1.0 / temperature;
        if !inv_temperature.is_finite() {
            return Err(invalid(
                K,
                format!("temperature {temperature} is too small to invert in f32"),
            ));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(invalid(K, format!("top_p must be in (0, 1], got {top_p}")));
        }
        let mut t = SampleTopPTiling {
            rows,
            cols,
            rows_per_block,
            cols_per_tile,
            inv_temperature,
            top_p,
            list_capacity: 0,
        };
        let needed = t.ub_bytes(dtype);
        check_ub(K, needed, budget)?;
        // The rest of the budget, in whole 32-byte blocks of f32, no more than a row.
        let spare = (u64::from(budget.ub_bytes) - needed) / UB_BLOCK * (UB_BLOCK / 4);
        t.list_capacity = spare.min(u64::from(t.cols)) as u32;
        Ok(t)
    }

    /// The kernel's Unified Buffer use per block, bytes (the formula of its source).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        arg_scan_ub(self.cols_per_tile, self.rows_per_block, dtype)
            + round_up(u64::from(self.list_capacity) * 4, UB_BLOCK)
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling_step::STEP_MAX_TILE;

    const B: CoreBudget = CoreBudget::ASCEND_910B2_VECTOR;

    #[test]
    fn validates_parameters_and_fits_a_deepseek_vocabulary() {
        let t = SampleTopPTiling::new(64, 129_280, 0.7, 0.9, KernelDtype::Bf16, B).unwrap();
        assert_eq!((t.block_dim(), t.cols_per_tile), (32, STEP_MAX_TILE));
        assert_eq!(t.inv_temperature, 1.0 / 0.7f32);
        assert!(t.ub_bytes(KernelDtype::Bf16) <= 192 * 1024);
        // The list takes what the tiles leave: more than a quarter of a 129k row, less than the budget.
        assert!(t.list_capacity > 129_280 / 4, "{}", t.list_capacity);
        assert!(t.ub_bytes(KernelDtype::Bf16) + UB_BLOCK > 192 * 1024);
        let small = SampleTopPTiling::new(2, 100, 1.0, 0.5, KernelDtype::F32, B).unwrap();
        assert_eq!(small.list_capacity, 100);
        let bad = |temp: f32, p: f32| SampleTopPTiling::new(1, 8, temp, p, KernelDtype::F32, B);
        assert!(bad(0.0, 0.9).is_err());
        assert!(bad(f32::NAN, 0.9).is_err());
        assert!(bad(1e-39, 0.9).is_err());
        assert!(bad(1.0, 0.0).is_err());
        assert!(bad(1.0, 1.5).is_err());
        assert!(bad(1.0, 1.0).is_ok());
        assert!(SampleTopPTiling::new(0, 8, 1.0, 1.0, KernelDtype::F32, B).is_err());
    }
}
