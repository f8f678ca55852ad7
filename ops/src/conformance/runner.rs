//! The conformance suites as a program: run one operator's suite for one dtype on a backend and get a
//! [`SuiteReport`] (cases run, passed, skipped, worst error against its tolerance, time) instead of a
//! panic. `dsnpu verify` is a loop over [`run_suite`].
//!
//! The suites are the ones `conformance_suite!` turns into tests, run under an
//! [`observe`](super::observe) observer, so a report counts exactly the cases and comparisons the tests
//! make.
//!
//! [`Mutant`] wraps a backend and corrupts one operator's results (the first element of its first
//! output). It exists to show that a suite, and `dsnpu verify`, fail when a kernel is wrong.

use std::time::Instant;

use ndarray::{
    Array, Array1, Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4,
};
use ndarray::{Dimension, IntoDimension};
use std::ops::Range;

use super::observe::{observe, Observation};
use super::{dense, mla, moe};
use crate::backend::{Backend, DenseOps, MlaOps, MoeOps, Op};
use crate::mla::{CacheWriteParams, PagedLatentCache};
use crate::moe::{
    ExpertTokensMode, GatingConfig, GroupListType, InitRouting, InitRoutingQuant, MoeLayerParams,
};
use crate::rope::{RopeLayout, RopeTable};
use crate::sampling::Sampler;
use crate::{DType, Float, Result};

/// The float dtypes every suite runs in.
pub const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// One suite's outcome for one dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteReport {
    pub op: Op,
    pub dtype: DType,
    pub seen: Observation,
    /// Wall time of the suite (reference computations included).
    pub seconds: f64,
}

impl SuiteReport {
    /// Every case that ran passed (a suite whose every case was skipped passes vacuously: check
    /// [`SuiteReport::ran_nothing`]).
    pub fn passed(&self) -> bool {
        self.seen.all_passed()
    }

    /// The backend answered `Unsupported` to every case that computes something (it may still have
    /// rejected malformed inputs, which needs no kernel).
    pub fn ran_nothing(&self) -> bool {
        self.seen.cases == self.seen.rejections && self.seen.skipped > 0
    }
}

/// The operator named `name` (as [`Op::name`] spells it).
pub fn op_named(name: &str) -> Option<Op> {
    Op::ALL.into_iter().find(|op| op.name() == name)
}

/// Runs `op`'s conformance suite on `backend` in `dtype` (one of [`DTYPES`]; an integer dtype runs
/// nothing and reports nothing run).
pub fn run_suite<B: DenseOps + MoeOps + MlaOps>(backend: &B, op: Op, dtype: DType) -> SuiteReport {
    let start = Instant::now();
    let seen = observe(|| match dtype {
        DType::F32 => suite::<B, f32>(backend, op),
        DType::F16 => suite::<B, half::f16>(backend, op),
        DType::BF16 => suite::<B, half::bf16>(backend, op),
        DType::I32 | DType::I64 => {}
    });
    SuiteReport {
        op,
        dtype,
        seen,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn suite<B: DenseOps + MoeOps + MlaOps, T: Float>(b: &B, op: Op) {
    match op {
        Op::RmsNorm => dense::rms_norm::<B, T>(b),
        Op::AddRmsNorm => dense::add_rms_norm::<B, T>(b),
        Op::Rope => dense::rope::<B, T>(b),
        Op::Linear => dense::linear::<B, T>(b),
        Op::BatchedMatmul => dense::batched_matmul::<B, T>(b),
        Op::SiluMul => dense::silu_mul::<B, T>(b),
        Op::Embedding => dense::embedding::<B, T>(b),
        Op::Softmax => dense::softmax::<B, T>(b),
        Op::Argmax => dense::argmax::<B, T>(b),
        Op::SampleTopP => dense::sample_top_p::<B, T>(b),
        Op::MoeGatingTopk => moe::moe_gating_topk::<B, T>(b),
        Op::MoeInitRouting => moe::moe_init_routing::<B, T>(b),
        Op::MoeInitRoutingQuant => moe::moe_init_routing_quant::<B, T>(b),
        Op::GroupedMatmul => moe::grouped_matmul::<B, T>(b),
        Op::ExpertFfn => moe::expert_ffn::<B, T>(b),
        Op::MoeFinalizeRouting => moe::moe_finalize_routing::<B, T>(b),
        Op::MoeLayer => moe::moe_layer::<B, T>(b),
        Op::MlaCacheWrite => mla::mla_cache_write::<B, T>(b),
        Op::MlaCacheWriteFused => mla::mla_cache_write_fused::<B, T>(b),
        Op::MlaDecode => mla::mla_decode::<B, T>(b),
        Op::MlaPrefill => mla::mla_prefill::<B, T>(b),
    }
}

/// A backend whose operator `broken` returns a corrupted result: the first element of its first
/// output is moved by 1 (a float, ids and indices too), far beyond any tolerance. Every other
/// operator, and errors, pass through unchanged.
#[derive(Debug, Clone)]
pub struct Mutant<B> {
    pub inner: B,
    pub broken: Op,
}

impl<B> Mutant<B> {
    pub fn new(inner: B, broken: Op) -> Mutant<B> {
        Mutant { inner, broken }
    }

    /// A cache write's output is the first slot it wrote: its first latent element is moved by 1.
    fn corrupt_slot<T: Float>(
        &self,
        op: Op,
        cache: &mut PagedLatentCache<T>,
        slot_mapping: ArrayView1<i32>,
    ) {
        if op != self.broken {
            return;
        }
        if let Some(&slot) = slot_mapping.iter().find(|&&s| s >= 0) {
            let bs = cache.block_size();
            let (b, r) = (slot as usize / bs, slot as usize % bs);
            let at = [b, r, 0].into_dimension();
            if let Some(x) = cache.latent.get_mut(at) {
                *x = T::from_f32(x.to_f32() + 1.0);
            }
        }
    }

    fn corrupt<A: Corrupt>(&self, op: Op, r: Result<A>) -> Result<A> {
        r.map(|mut v| {
            if op == self.broken {
                v.corrupt();
            }
            v
        })
    }
}

/// A result whose first element can be moved.
trait Corrupt {
    fn corrupt(&mut self);
}

fn bump<T: Float, D: Dimension>(a: &mut Array<T, D>) {
    if let Some(x) = a.iter_mut().next() {
        *x = T::from_f32(x.to_f32() + 1.0);
    }
}

impl<T: Float, D: Dimension> Corrupt for Array<T, D> {
    fn corrupt(&mut self) {
        bump(self)
    }
}

impl Corrupt for Array1<i32> {
    fn corrupt(&mut self) {
        if let Some(x) = self.iter_mut().next() {
            *x = x.wrapping_add(1);
        }
    }
}

impl Corrupt for Array2<i32> {
    fn corrupt(&mut self) {
        if let Some(x) = self.iter_mut().next() {
            *x = x.wrapping_add(1);
        }
    }
}

impl<A: Corrupt, B> Corrupt for (A, B) {
    fn corrupt(&mut self) {
        self.0.corrupt()
    }
}

impl<T: Float> Corrupt for InitRouting<T> {
    fn corrupt(&mut self) {
        bump(&mut self.expanded_x)
    }
}

impl Corrupt for InitRoutingQuant {
    fn corrupt(&mut self) {
        bump(&mut self.scales)
    }
}

impl Corrupt for () {
    fn corrupt(&mut self) {}
}

impl<B: Backend> Backend for Mutant<B> {
    fn name(&self) -> String {
        format!("{} (with {} broken)", self.inner.name(), self.broken)
    }
}

impl<B: DenseOps> DenseOps for Mutant<B> {
    fn rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>> {
        self.corrupt(Op::RmsNorm, self.inner.rms_norm(x, w, eps))
    }

    fn add_rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        residual: ArrayView2<T>,
        weight: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)> {
        let r = self.inner.add_rms_norm(x, residual, weight, eps);
        self.corrupt(Op::AddRmsNorm, r)
    }

    fn rope<T: Float>(
        &self,
        x: ArrayView3<T>,
        positions: ArrayView1<i32>,
        table: &RopeTable,
        layout: RopeLayout,
    ) -> Result<Array3<T>> {
        self.corrupt(Op::Rope, self.inner.rope(x, positions, table, layout))
    }

    fn linear<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView2<T>,
        bias: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>> {
        self.corrupt(Op::Linear, self.inner.linear(x, w, bias))
    }

    fn batched_matmul<T: Float>(&self, a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
        self.corrupt(Op::BatchedMatmul, self.inner.batched_matmul(a, b))
    }

    fn silu_mul<T: Float>(&self, gate_up: ArrayView2<T>) -> Result<Array2<T>> {
        self.corrupt(Op::SiluMul, self.inner.silu_mul(gate_up))
    }

    fn embedding<T: Float>(&self, table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
        self.corrupt(Op::Embedding, self.inner.embedding(table, ids))
    }

    fn softmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array2<f32>> {
        self.corrupt(Op::Softmax, self.inner.softmax(x))
    }

    fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
        self.corrupt(Op::Argmax, self.inner.argmax(x))
    }

    fn sample_top_p<T: Float>(
        &self,
        samplers: &mut [Sampler],
        logits: ArrayView2<T>,
    ) -> Result<Array1<i32>> {
        let r = self.inner.sample_top_p(samplers, logits);
        self.corrupt(Op::SampleTopP, r)
    }
}

impl<B: MoeOps> MoeOps for Mutant<B> {
    fn moe_gating_topk<T: Float>(
        &self,
        logits: ArrayView2<T>,
        bias: Option<ArrayView1<f32>>,
        cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        let r = self.inner.moe_gating_topk(logits, bias, cfg);
        self.corrupt(Op::MoeGatingTopk, r)
    }

    fn moe_init_routing<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        let r = self
            .inner
            .moe_init_routing(x, ids, num_experts, active, mode);
        self.corrupt(Op::MoeInitRouting, r)
    }

    fn moe_init_routing_quant<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        let r = self
            .inner
            .moe_init_routing_quant(x, ids, num_experts, active, mode);
        self.corrupt(Op::MoeInitRoutingQuant, r)
    }

    fn grouped_matmul<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        let r = self.inner.grouped_matmul(x, w, group_list, list_type);
        self.corrupt(Op::GroupedMatmul, r)
    }

    fn expert_ffn<T: Float>(
        &self,
        x: ArrayView2<T>,
        w_gate: ArrayView3<T>,
        w_up: ArrayView3<T>,
        w_down: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        let r = self
            .inner
            .expert_ffn(x, w_gate, w_up, w_down, group_list, list_type);
        self.corrupt(Op::ExpertFfn, r)
    }

    fn moe_finalize_routing<T: Float>(
        &self,
        y: ArrayView2<T>,
        expanded_row_idx: ArrayView1<i32>,
        weights: ArrayView2<f32>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        let r = self
            .inner
            .moe_finalize_routing(y, expanded_row_idx, weights, shared, residual);
        self.corrupt(Op::MoeFinalizeRouting, r)
    }

    fn moe_layer<T: Float>(
        &self,
        x: ArrayView2<T>,
        params: &MoeLayerParams<T>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        let r = self.inner.moe_layer(x, params, shared, residual);
        self.corrupt(Op::MoeLayer, r)
    }
}

impl<B: MlaOps> MlaOps for Mutant<B> {
    fn mla_cache_write<T: Float>(
        &self,
        cache: &mut PagedLatentCache<T>,
        latent: ArrayView2<T>,
        k_rope: ArrayView2<T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        self.inner
            .mla_cache_write(cache, latent, k_rope, slot_mapping)?;
        self.corrupt_slot(Op::MlaCacheWrite, cache, slot_mapping);
        Ok(())
    }

    fn mla_cache_write_fused<T: Float>(
        &self,
        cache: &mut PagedLatentCache<T>,
        kv: ArrayView2<T>,
        params: CacheWriteParams<'_, T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        self.inner
            .mla_cache_write_fused(cache, kv, params, slot_mapping)?;
        self.corrupt_slot(Op::MlaCacheWriteFused, cache, slot_mapping);
        Ok(())
    }

    fn mla_decode<T: Float>(
        &self,
        q_nope: ArrayView4<T>,
        q_rope: ArrayView4<T>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        let r = self
            .inner
            .mla_decode(q_nope, q_rope, cache, block_table, seq_lens, scale);
        self.corrupt(Op::MlaDecode, r)
    }

    fn mla_prefill<T: Float>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu_seqlens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        let r = self.inner.mla_prefill(q, k, v, cu_seqlens, scale);
        self.corrupt(Op::MlaPrefill, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    #[test]
    fn the_reference_passes_its_own_suites() {
        for op in [
            Op::RmsNorm,
            Op::MoeGatingTopk,
            Op::MlaDecode,
            Op::MlaCacheWriteFused,
        ] {
            let r = run_suite(&Cpu, op, DType::BF16);
            assert!(r.passed(), "{op}: {:?}", r.seen.failures);
            assert!(
                r.seen.cases > 3 && r.seen.skipped == 0,
                "{op}: {:?}",
                r.seen
            );
            let w = r.seen.worst.expect("comparisons were made");
            assert!(w.ratio <= 1.0, "{w:?}");
        }
    }

    #[test]
    fn a_mutant_fails_only_its_operator() {
        for broken in [
            Op::Rope,
            Op::MoeInitRoutingQuant,
            Op::MlaCacheWrite,
            Op::MlaCacheWriteFused,
            Op::Argmax,
            Op::SampleTopP,
        ] {
            let m = Mutant::new(Cpu, broken);
            let r = run_suite(&m, broken, DType::F32);
            assert!(!r.passed(), "{broken} passed although broken");
            assert!(r.seen.passed < r.seen.cases, "{broken}: {:?}", r.seen);
            let other = run_suite(&m, Op::SiluMul, DType::F32);
            assert!(other.passed(), "{:?}", other.seen.failures);
        }
    }

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(op_named(op.name()), Some(op));
        }
        assert_eq!(op_named("nope"), None);
    }
}
