//! [`Fallback`] routing: a fake primary that answers some operators, says `Unsupported` for others and
//! fails for others, over a logging secondary. Checks which backend each call reached, the values
//! (hand-worked), the counters, that errors other than `Unsupported` propagate untouched, and that
//! clones share the counters across threads.

use dsnpu_ops::backend::{
    Backend, Cpu, DenseOps, Fallback, FallbackReport, MlaOps, MoeOps, Op, OpCount,
};
use dsnpu_ops::mla::{CacheWriteParams, PagedLatentCache};
use dsnpu_ops::moe::{
    ExpertTokensMode, GatingConfig, GroupListType, InitRouting, InitRoutingQuant, MoeLayerParams,
    ScoreFunc,
};
use dsnpu_ops::ndarray::{
    array, Array1, Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4,
};
use dsnpu_ops::rope::{RopeLayout, RopeTable};
use dsnpu_ops::sampling::Sampler;
use dsnpu_ops::{Float, OpsError, Result};
use std::ops::Range;
use std::sync::Mutex;

/// The CPU references behind a gate: operators in `unsupported` answer `Unsupported`, those in
/// `failing` a backend failure; the others run and are logged.
#[derive(Debug)]
struct Fake {
    name: &'static str,
    unsupported: Vec<Op>,
    failing: Vec<Op>,
    log: Mutex<Vec<Op>>,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated device fault")]
struct Fault;

impl Fake {
    fn new(name: &'static str, unsupported: &[Op], failing: &[Op]) -> Fake {
        Fake {
            name,
            unsupported: unsupported.to_vec(),
            failing: failing.to_vec(),
            log: Mutex::default(),
        }
    }

    fn gate(&self, op: Op) -> Result<()> {
        if self.unsupported.contains(&op) {
            return Err(OpsError::Unsupported {
                op: op.name(),
                backend: self.name.into(),
                reason: "fake".into(),
            });
        }
        if self.failing.contains(&op) {
            return Err(OpsError::Backend {
                op: op.name(),
                backend: self.name.into(),
                source: Box::new(Fault),
            });
        }
        self.log.lock().unwrap().push(op);
        Ok(())
    }

    fn log(&self) -> Vec<Op> {
        self.log.lock().unwrap().clone()
    }
}

impl Backend for Fake {
    fn name(&self) -> String {
        self.name.into()
    }
}

impl DenseOps for Fake {
    fn rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>> {
        self.gate(Op::RmsNorm)?;
        Cpu.rms_norm(x, w, eps)
    }
    fn add_rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        r: ArrayView2<T>,
        w: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)> {
        self.gate(Op::AddRmsNorm)?;
        Cpu.add_rms_norm(x, r, w, eps)
    }
    fn rope<T: Float>(
        &self,
        x: ArrayView3<T>,
        p: ArrayView1<i32>,
        t: &RopeTable,
        l: RopeLayout,
    ) -> Result<Array3<T>> {
        self.gate(Op::Rope)?;
        Cpu.rope(x, p, t, l)
    }
    fn linear<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView2<T>,
        b: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>> {
        self.gate(Op::Linear)?;
        Cpu.linear(x, w, b)
    }
    fn batched_matmul<T: Float>(&self, a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
        self.gate(Op::BatchedMatmul)?;
        Cpu.batched_matmul(a, b)
    }
    fn silu_mul<T: Float>(&self, g: ArrayView2<T>) -> Result<Array2<T>> {
        self.gate(Op::SiluMul)?;
        Cpu.silu_mul(g)
    }
    fn embedding<T: Float>(&self, t: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
        self.gate(Op::Embedding)?;
        Cpu.embedding(t, ids)
    }
    fn softmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array2<f32>> {
        self.gate(Op::Softmax)?;
        Cpu.softmax(x)
    }
    fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
        self.gate(Op::Argmax)?;
        Cpu.argmax(x)
    }
    fn sample_top_p<T: Float>(&self, s: &mut [Sampler], x: ArrayView2<T>) -> Result<Array1<i32>> {
        self.gate(Op::SampleTopP)?;
        Cpu.sample_top_p(s, x)
    }
}

impl MoeOps for Fake {
    fn moe_gating_topk<T: Float>(
        &self,
        l: ArrayView2<T>,
        b: Option<ArrayView1<f32>>,
        c: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        self.gate(Op::MoeGatingTopk)?;
        Cpu.moe_gating_topk(l, b, c)
    }
    fn moe_init_routing<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        e: usize,
        a: Option<Range<usize>>,
        m: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        self.gate(Op::MoeInitRouting)?;
        Cpu.moe_init_routing(x, ids, e, a, m)
    }
    fn moe_init_routing_quant<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        e: usize,
        a: Option<Range<usize>>,
        m: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        self.gate(Op::MoeInitRoutingQuant)?;
        Cpu.moe_init_routing_quant(x, ids, e, a, m)
    }
    fn grouped_matmul<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        g: ArrayView1<i64>,
        t: GroupListType,
    ) -> Result<Array2<T>> {
        self.gate(Op::GroupedMatmul)?;
        Cpu.grouped_matmul(x, w, g, t)
    }
    fn expert_ffn<T: Float>(
        &self,
        x: ArrayView2<T>,
        wg: ArrayView3<T>,
        wu: ArrayView3<T>,
        wd: ArrayView3<T>,
        g: ArrayView1<i64>,
        t: GroupListType,
    ) -> Result<Array2<T>> {
        self.gate(Op::ExpertFfn)?;
        Cpu.expert_ffn(x, wg, wu, wd, g, t)
    }
    fn moe_finalize_routing<T: Float>(
        &self,
        y: ArrayView2<T>,
        idx: ArrayView1<i32>,
        w: ArrayView2<f32>,
        s: Option<ArrayView2<T>>,
        r: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        self.gate(Op::MoeFinalizeRouting)?;
        Cpu.moe_finalize_routing(y, idx, w, s, r)
    }
    fn moe_layer<T: Float>(
        &self,
        x: ArrayView2<T>,
        p: &MoeLayerParams<T>,
        s: Option<ArrayView2<T>>,
        r: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        self.gate(Op::MoeLayer)?;
        Cpu.moe_layer(x, p, s, r)
    }
}

impl MlaOps for Fake {
    fn mla_cache_write<T: Float>(
        &self,
        c: &mut PagedLatentCache<T>,
        l: ArrayView2<T>,
        k: ArrayView2<T>,
        s: ArrayView1<i32>,
    ) -> Result<()> {
        self.gate(Op::MlaCacheWrite)?;
        Cpu.mla_cache_write(c, l, k, s)
    }
    fn mla_cache_write_fused<T: Float>(
        &self,
        c: &mut PagedLatentCache<T>,
        kv: ArrayView2<T>,
        p: CacheWriteParams<'_, T>,
        s: ArrayView1<i32>,
    ) -> Result<()> {
        self.gate(Op::MlaCacheWriteFused)?;
        Cpu.mla_cache_write_fused(c, kv, p, s)
    }
    fn mla_decode<T: Float>(
        &self,
        qn: ArrayView4<T>,
        qr: ArrayView4<T>,
        c: &PagedLatentCache<T>,
        bt: ArrayView2<i32>,
        sl: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        self.gate(Op::MlaDecode)?;
        Cpu.mla_decode(qn, qr, c, bt, sl, scale)
    }
    fn mla_prefill<T: Float>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        self.gate(Op::MlaPrefill)?;
        Cpu.mla_prefill(q, k, v, cu, scale)
    }
}

fn count(op: Op, primary: u64, secondary: u64) -> OpCount {
    OpCount {
        op,
        primary,
        secondary,
    }
}

#[test]
fn op_names_are_the_trait_methods_and_all_is_complete() {
    assert_eq!(Op::ALL.len(), Op::COUNT);
    let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), Op::COUNT, "{names:?}");
    assert_eq!(Op::MlaCacheWrite.to_string(), "mla_cache_write");
    assert_eq!(Op::MoeGatingTopk.name(), "moe_gating_topk");
    assert_eq!(Op::BatchedMatmul.name(), "batched_matmul");
}

#[test]
fn unsupported_calls_reach_the_secondary_and_the_rest_stay_on_the_primary() {
    let fb = Fallback::new(
        Fake::new("dev", &[Op::Embedding, Op::Softmax], &[]),
        Fake::new("ref", &[], &[]),
    );
    assert_eq!(fb.name(), "dev+ref");

    // [1 2]·[[3 4],[5 6]]ᵀ = [1·3+2·4, 1·5+2·6] = [11, 17].
    let y = fb
        .linear(
            array![[1.0f32, 2.0]].view(),
            array![[3.0f32, 4.0], [5.0, 6.0]].view(),
            None,
        )
        .unwrap();
    assert_eq!(y, array![[11.0f32, 17.0]]);
    // Rows 2 and 0 of the table.
    let e = fb
        .embedding(
            array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]].view(),
            array![2, 0].view(),
        )
        .unwrap();
    assert_eq!(e, array![[5.0f32, 6.0], [1.0, 2.0]]);
    // softmax([0, ln 3]) = [1/4, 3/4].
    let p = fb.softmax(array![[0.0f32, 3.0f32.ln()]].view()).unwrap();
    assert!((p[[0, 0]] - 0.25).abs() < 1e-6 && (p[[0, 1]] - 0.75).abs() < 1e-6);
    let a = fb.argmax(array![[0.5f32, 2.0, -1.0]].view()).unwrap();
    assert_eq!(a, array![1]);
    let a = fb.argmax(array![[3.0f32, 2.0]].view()).unwrap();
    assert_eq!(a, array![0]);

    assert_eq!(fb.primary().log(), vec![Op::Linear, Op::Argmax, Op::Argmax]);
    assert_eq!(fb.secondary().log(), vec![Op::Embedding, Op::Softmax]);
    let c = fb.counts();
    assert_eq!(c.get(Op::Linear), count(Op::Linear, 1, 0));
    assert_eq!(c.get(Op::Argmax), count(Op::Argmax, 2, 0));
    assert_eq!(c.get(Op::Embedding), count(Op::Embedding, 0, 1));
    assert_eq!(c.get(Op::Softmax), count(Op::Softmax, 0, 1));
    let snapshot = c.snapshot();
    assert_eq!(snapshot.len(), Op::COUNT);
    let total: u64 = snapshot.iter().map(|c| c.primary + c.secondary).sum();
    assert_eq!(total, 5, "five calls, five counted");
}

#[test]
fn moe_and_mla_families_fall_back_too() {
    let fb = Fallback::new(
        Fake::new("dev", &[Op::MoeGatingTopk, Op::MlaCacheWrite], &[]),
        Fake::new("ref", &[], &[]),
    );
    // Plain softmax top-2 of 4 experts (one group): logits [0, 3, 1, 2] pick experts 1 then 3.
    let cfg = GatingConfig {
        top_k: 2,
        n_group: 1,
        topk_group: 1,
        score: ScoreFunc::Softmax,
        normalize: false,
        routed_scaling_factor: 1.0,
    };
    let (ids, _) = fb
        .moe_gating_topk(array![[0.0f32, 3.0, 1.0, 2.0]].view(), None, &cfg)
        .unwrap();
    assert_eq!(ids, array![[1, 3]]);
    // Token 0's expert ids [1, 0]: sorted by expert, pair (0,1) lands on row 0 and (0,0) on row 1.
    let routed = fb
        .moe_init_routing(
            array![[7.0f32, 8.0]].view(),
            array![[1, 0]].view(),
            2,
            None,
            ExpertTokensMode::Count,
        )
        .unwrap();
    assert_eq!(routed.expanded_row_idx, array![1, 0]);
    assert_eq!(routed.expert_tokens, array![1i64, 1]);

    // The secondary writes the cache: slot 3 is block 1, offset 1 with block size 2.
    let mut cache = PagedLatentCache::<f32>::new(2, 2, 2, 1).unwrap();
    fb.mla_cache_write(
        &mut cache,
        array![[1.5f32, -2.0]].view(),
        array![[4.0f32]].view(),
        array![3].view(),
    )
    .unwrap();
    assert_eq!(cache.latent[[1, 1, 0]], 1.5);
    assert_eq!(cache.latent[[1, 1, 1]], -2.0);
    assert_eq!(cache.rope[[1, 1, 0]], 4.0);
    assert_eq!(cache.latent.iter().filter(|v| **v != 0.0).count(), 2);

    assert_eq!(fb.primary().log(), vec![Op::MoeInitRouting]);
    assert_eq!(
        fb.secondary().log(),
        vec![Op::MoeGatingTopk, Op::MlaCacheWrite]
    );
    let c = fb.counts();
    assert_eq!(c.get(Op::MoeGatingTopk), count(Op::MoeGatingTopk, 0, 1));
    assert_eq!(c.get(Op::MoeInitRouting), count(Op::MoeInitRouting, 1, 0));
    assert_eq!(c.get(Op::MlaCacheWrite), count(Op::MlaCacheWrite, 0, 1));
}

#[test]
fn a_primary_failure_propagates_without_trying_the_secondary() {
    let fb = Fallback::new(
        Fake::new("dev", &[], &[Op::Linear]),
        Fake::new("ref", &[], &[]),
    );
    let err = fb
        .linear(array![[1.0f32]].view(), array![[1.0f32]].view(), None)
        .unwrap_err();
    match err {
        OpsError::Backend { op, backend, .. } => {
            assert_eq!((op, backend.as_str()), ("linear", "dev"));
        }
        other => panic!("expected the primary's Backend error, got {other:?}"),
    }
    assert!(fb.secondary().log().is_empty());
    assert_eq!(fb.counts().get(Op::Linear), count(Op::Linear, 0, 0));
}

#[test]
fn a_primary_rejecting_input_is_not_retried() {
    // The primary validates like the reference: K of x (2) differs from K of w (3).
    let fb = Fallback::new(Fake::new("dev", &[], &[]), Fake::new("ref", &[], &[]));
    let err = fb
        .linear(
            array![[1.0f32, 2.0]].view(),
            array![[1.0f32, 2.0, 3.0]].view(),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            OpsError::Shape {
                op: "linear",
                arg: "w",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(fb.secondary().log().is_empty());
    assert_eq!(fb.counts().get(Op::Linear), count(Op::Linear, 0, 0));
}

#[test]
fn the_secondarys_errors_are_returned_and_not_counted() {
    let fb = Fallback::new(
        Fake::new("dev", &[Op::Embedding, Op::Argmax], &[]),
        Fake::new("ref", &[Op::Argmax], &[]),
    );
    // Id 3 is outside a 2-row table: the secondary (the reference) rejects it.
    let err = fb
        .embedding(array![[1.0f32], [2.0]].view(), array![3].view())
        .unwrap_err();
    assert!(
        matches!(
            err,
            OpsError::IndexOutOfRange {
                op: "embedding",
                index: 3,
                ..
            }
        ),
        "{err:?}"
    );
    // Neither side supports argmax: the secondary's Unsupported comes back.
    let err = fb.argmax(array![[1.0f32]].view()).unwrap_err();
    match err {
        OpsError::Unsupported { op, backend, .. } => {
            assert_eq!((op, backend.as_str()), ("argmax", "ref"));
        }
        other => panic!("expected Unsupported from the secondary, got {other:?}"),
    }
    assert!(fb
        .counts()
        .snapshot()
        .iter()
        .all(|c| c.primary + c.secondary == 0));
}

#[test]
fn clones_share_counts_across_threads_and_reset_clears_them() {
    fn assert_send_sync<X: Send + Sync>() {}
    assert_send_sync::<Fallback<Cpu, Cpu>>();

    #[derive(Debug, Clone, Copy)]
    struct NoSoftmax;
    impl Backend for NoSoftmax {
        fn name(&self) -> String {
            "dev".into()
        }
    }
    impl DenseOps for NoSoftmax {
        fn rms_norm<T: Float>(
            &self,
            x: ArrayView2<T>,
            w: ArrayView1<T>,
            e: f32,
        ) -> Result<Array2<T>> {
            Cpu.rms_norm(x, w, e)
        }
        fn add_rms_norm<T: Float>(
            &self,
            x: ArrayView2<T>,
            r: ArrayView2<T>,
            w: ArrayView1<T>,
            e: f32,
        ) -> Result<(Array2<T>, Array2<T>)> {
            Cpu.add_rms_norm(x, r, w, e)
        }
        fn rope<T: Float>(
            &self,
            x: ArrayView3<T>,
            p: ArrayView1<i32>,
            t: &RopeTable,
            l: RopeLayout,
        ) -> Result<Array3<T>> {
            Cpu.rope(x, p, t, l)
        }
        fn linear<T: Float>(
            &self,
            x: ArrayView2<T>,
            w: ArrayView2<T>,
            b: Option<ArrayView1<T>>,
        ) -> Result<Array2<T>> {
            Cpu.linear(x, w, b)
        }
        fn batched_matmul<T: Float>(
            &self,
            a: ArrayView3<T>,
            b: ArrayView3<T>,
        ) -> Result<Array3<T>> {
            Cpu.batched_matmul(a, b)
        }
        fn silu_mul<T: Float>(&self, g: ArrayView2<T>) -> Result<Array2<T>> {
            Cpu.silu_mul(g)
        }
        fn embedding<T: Float>(&self, t: ArrayView2<T>, i: ArrayView1<i32>) -> Result<Array2<T>> {
            Cpu.embedding(t, i)
        }
        fn softmax<T: Float>(&self, _x: ArrayView2<T>) -> Result<Array2<f32>> {
            Err(OpsError::Unsupported {
                op: "softmax",
                backend: "dev".into(),
                reason: "fake".into(),
            })
        }
        fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
            Cpu.argmax(x)
        }
        fn sample_top_p<T: Float>(
            &self,
            s: &mut [Sampler],
            x: ArrayView2<T>,
        ) -> Result<Array1<i32>> {
            Cpu.sample_top_p(s, x)
        }
    }

    let fb = Fallback::new(NoSoftmax, Cpu);
    let handle = fb.counts().clone();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let fb = fb.clone();
            s.spawn(move || {
                for _ in 0..25 {
                    fb.argmax(array![[1.0f32, 2.0]].view()).unwrap();
                    fb.softmax(array![[1.0f32, 2.0]].view()).unwrap();
                }
            });
        }
    });
    assert_eq!(handle.get(Op::Argmax), count(Op::Argmax, 100, 0));
    assert_eq!(handle.get(Op::Softmax), count(Op::Softmax, 0, 100));

    let report = fb.report();
    assert_eq!(
        report,
        FallbackReport {
            primary: "dev".into(),
            secondary: "cpu".into(),
            counts: handle.snapshot(),
            // The fakes copy nothing between host and device.
            transfers: vec![],
        }
    );
    assert_eq!(report.to_string(), "dev: argmax 100\ncpu: softmax 100");

    handle.reset();
    assert_eq!(fb.counts().get(Op::Argmax), count(Op::Argmax, 0, 0));
    assert_eq!(fb.report().to_string(), "dev: none\ncpu: none");
}
