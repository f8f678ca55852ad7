//! Seeded temperature/top-p sampling on the device: [`Npu::sample`] draws one id per row of logits with
//! one CPU [`Sampler`] per row, through `sample_top_p_<t>` (or `argmax_<t>` when the samplers are
//! greedy; a row holding -inf, which it marks, is then answered on the host), and gives the ids `Sampler::sample` gives for the same logits and sampler state: the kernel
//! performs the reference's f32 operations in the same order, so on the simulator the ids are equal
//! (the conformance suite requires it); on hardware whose `exp` differs in the last ulp they can differ
//! only where a draw or the nucleus cut lands within rounding of a boundary.
//!
//! Validation is the reference's: every row is checked by the sampler's own check (NaN, `+inf`, all
//! `-inf`, empty) before anything is uploaded, so bad rows fail with the same errors and consume no draw.
//! The samplers of one call must share their temperature and top_p (one kernel launch). On a
//! launch-blocking stream each launch is checked like the other kernels' (no fault, no sanitizer
//! warning).

use dsnpu_kernels::launch;
use ndarray::{Array1, ArrayView2};

use super::{DevElem, Npu};
use crate::sampling::{check_sample_top_p, Sampler};
use crate::{Float, OpsError, Result};

impl Npu {
    /// One id per row of `logits` `[R, V]`, row `r` drawn with `samplers[r]` (which advances by one draw
    /// unless greedy), as `samplers[r].sample(logits.row(r))` does on the host.
    pub fn sample<T: Float>(
        &self,
        logits: ArrayView2<T>,
        samplers: &mut [Sampler],
    ) -> Result<Array1<i32>> {
        const OP: &str = "sample_top_p";
        check_sample_top_p(samplers, &logits)?;
        let Some(first) = samplers.first() else {
            return Ok(Array1::zeros(0));
        };
        let (temperature, top_p) = (first.temperature(), first.top_p());
        match T::DTYPE {
            crate::DType::F32 => self.sample_as::<T, f32>(logits, samplers, temperature, top_p),
            crate::DType::F16 => {
                self.sample_as::<T, half::f16>(logits, samplers, temperature, top_p)
            }
            crate::DType::BF16 => {
                self.sample_as::<T, half::bf16>(logits, samplers, temperature, top_p)
            }
            d => Err(self.unsupported(OP, format!("no kernel for element type {d}"))),
        }
    }

    fn sample_as<T: Float, E: DevElem>(
        &self,
        logits: ArrayView2<T>,
        samplers: &mut [Sampler],
        temperature: f32,
        top_p: f32,
    ) -> Result<Array1<i32>> {
        const OP: &str = "sample_top_p";
        let (rows, cols) = logits.dim();
        let xd = self.upload::<T, E>(OP, logits.iter())?;
        let mut out = self.alloc::<i32>(OP, rows)?;
        if temperature == 0.0 {
            let r = launch::argmax(&self.lib, &self.stream, &xd, &mut out, rows, cols);
            self.launched(OP, r)?;
        } else {
            // Each sampler's next uniform, drawn for real only once the ids are back: a call that
            // fails (or answers `Unsupported`, for a shape the kernel cannot take) consumes no draw.
            let u: Vec<f32> = samplers.iter().map(|s| s.clone().next_uniform()).collect();
            let ud = self.upload_raw(OP, &u)?;
            let r = launch::sample_top_p(
                &self.lib,
                &self.stream,
                &xd,
                &ud,
                &mut out,
                rows,
                cols,
                temperature,
                top_p,
            );
            self.launched(OP, r)?;
        }
        self.finish(OP)?;
        let mut ids = out.to_vec().map_err(|e| self.fail(OP, e))?;
        if temperature == 0.0 {
            // argmax marks a row holding an infinity -1, and the checks above let -inf through: the
            // greedy sampler answers such a row on the host (it consumes no draw).
            for (r, id) in ids.iter_mut().enumerate() {
                if *id < 0 {
                    *id = samplers[r].sample(logits.row(r))?;
                }
            }
        }
        if let Some(r) = ids.iter().position(|&id| id < 0 || id as usize >= cols) {
            // The rows were checked above: the kernel broke its contract.
            return Err(OpsError::Backend {
                op: OP,
                backend: self.name.clone(),
                source: format!("row {r}: the kernel returned id {} of {cols}", ids[r]).into(),
            });
        }
        if temperature != 0.0 {
            samplers.iter_mut().for_each(|s| {
                s.next_uniform();
            });
        }
        Ok(Array1::from(ids))
    }
}
