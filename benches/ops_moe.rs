//! Criterion benches of the MoE CPU references at DeepSeek-V3 shapes: hidden 7168, 256 routed experts,
//! top-8 in 8 groups keeping 4, expert intermediate 2048, T in {1, 64, 512}. Throughput is the minimal
//! traffic of each operator in bytes (dispatch: read x once, write T·K rows; combine: read T·K rows once,
//! write T rows), the figure the device kernels of issue 6 are measured against.
//!
//! The expert FFN holds 4 experts (one expert-parallel rank of 64) in bf16 — all 256 would need ~22 GB —
//! and the whole layer routes to those 4 only, so it runs in seconds per iteration at most.
//! Not run in CI: `cargo bench --bench ops_moe`.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::moe::{
    expert_ffn, moe_finalize_routing, moe_gating_topk, moe_init_routing, moe_init_routing_quant,
    moe_layer, ExpertTokensMode, GatingConfig, GroupListType, MoeLayerParams,
};
use half::bf16;
use ndarray::{Array1, Array2, Array3};
use std::hint::black_box;

const HIDDEN: usize = 7168;
const EXPERTS: usize = 256;
const TOP_K: usize = 8;
const INTER: usize = 2048;
const LOCAL_EXPERTS: usize = 4;
const TOKENS: [usize; 3] = [1, 64, 512];
const BF16: usize = 2;

/// Realistic routing for `t` tokens: the DeepSeek-V3 gate on random logits.
fn routing(rng: &mut CaseRng, t: usize) -> (Array2<i32>, Array2<f32>) {
    let logits: Array2<f32> = rng.uniform((t, EXPERTS), -4.0, 4.0);
    let bias: Array1<f32> = rng.uniform(EXPERTS, -0.1, 0.1);
    moe_gating_topk(
        logits.view(),
        Some(bias.view()),
        &GatingConfig::deepseek_v3(),
    )
    .unwrap()
}

fn bench_gating(c: &mut Criterion) {
    let mut g = c.benchmark_group("moe_gating_topk");
    let mut rng = CaseRng::new(1);
    let bias: Array1<f32> = rng.uniform(EXPERTS, -0.1, 0.1);
    let cfg = GatingConfig::deepseek_v3();
    for t in TOKENS {
        let logits: Array2<f32> = rng.uniform((t, EXPERTS), -4.0, 4.0);
        g.throughput(Throughput::Bytes((t * EXPERTS * 4 + t * TOP_K * 8) as u64));
        g.bench_with_input(BenchmarkId::new("f32", t), &t, |b, _| {
            b.iter(|| moe_gating_topk(black_box(logits.view()), Some(bias.view()), &cfg).unwrap())
        });
    }
    g.finish();
}

fn bench_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("moe_init_routing");
    g.sample_size(10);
    let mut rng = CaseRng::new(2);
    for t in TOKENS {
        let x: Array2<bf16> = rng.uniform((t, HIDDEN), -2.0, 2.0);
        let (ids, _) = routing(&mut rng, t);
        g.throughput(Throughput::Bytes(((t + t * TOP_K) * HIDDEN * BF16) as u64));
        g.bench_with_input(BenchmarkId::new("bf16", t), &t, |b, _| {
            b.iter(|| {
                moe_init_routing(
                    black_box(x.view()),
                    ids.view(),
                    EXPERTS,
                    None,
                    ExpertTokensMode::Count,
                )
                .unwrap()
            })
        });
        // int8 dispatch: read bf16 once, write T·K int8 rows (+ a scale each).
        g.throughput(Throughput::Bytes(
            (t * HIDDEN * BF16 + t * TOP_K * (HIDDEN + 4)) as u64,
        ));
        g.bench_with_input(BenchmarkId::new("bf16->int8", t), &t, |b, _| {
            b.iter(|| {
                moe_init_routing_quant(
                    black_box(x.view()),
                    ids.view(),
                    EXPERTS,
                    None,
                    ExpertTokensMode::Count,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn bench_combine(c: &mut Criterion) {
    let mut g = c.benchmark_group("moe_finalize_routing");
    g.sample_size(10);
    let mut rng = CaseRng::new(3);
    for t in TOKENS {
        let (ids, weights) = routing(&mut rng, t);
        let x = Array2::<bf16>::zeros((t, 0));
        let idx = moe_init_routing(x.view(), ids.view(), EXPERTS, None, ExpertTokensMode::Count)
            .unwrap()
            .expanded_row_idx;
        let y: Array2<bf16> = rng.uniform((t * TOP_K, HIDDEN), -1.0, 1.0);
        let shared: Array2<bf16> = rng.uniform((t, HIDDEN), -1.0, 1.0);
        let residual: Array2<bf16> = rng.uniform((t, HIDDEN), -1.0, 1.0);
        // Read T·K rows, the shared output and the residual once; write T rows.
        g.throughput(Throughput::Bytes(
            ((t * TOP_K + 3 * t) * HIDDEN * BF16) as u64,
        ));
        g.bench_with_input(BenchmarkId::new("bf16", t), &t, |b, _| {
            b.iter(|| {
                moe_finalize_routing(
                    black_box(y.view()),
                    idx.view(),
                    weights.view(),
                    Some(shared.view()),
                    Some(residual.view()),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// Expert weights `[E, out, in]` scaled by `1/sqrt(in)`.
fn expert_weights(rng: &mut CaseRng, out: usize, inp: usize) -> Array3<bf16> {
    let s = 1.0 / (inp as f32).sqrt();
    rng.uniform((LOCAL_EXPERTS, out, inp), -s, s)
}

fn bench_expert_ffn(c: &mut Criterion) {
    let mut g = c.benchmark_group("expert_ffn");
    g.sample_size(10);
    let mut rng = CaseRng::new(4);
    let w_gate = expert_weights(&mut rng, INTER, HIDDEN);
    let w_up = expert_weights(&mut rng, INTER, HIDDEN);
    let w_down = expert_weights(&mut rng, HIDDEN, INTER);
    // Rows spread evenly over the 4 experts, and all on one (skewed routing).
    for (label, counts) in [
        ("even", vec![2i64, 2, 2, 2]),
        ("one_hot", vec![0i64, 8, 0, 0]),
    ] {
        let rows = counts.iter().sum::<i64>() as usize;
        let x: Array2<bf16> = rng.uniform((rows, HIDDEN), -1.0, 1.0);
        let gl = Array1::from(counts);
        g.throughput(Throughput::Elements((rows * 3 * 2 * INTER * HIDDEN) as u64));
        g.bench_with_input(BenchmarkId::new(label, rows), &rows, |b, _| {
            b.iter(|| {
                expert_ffn(
                    black_box(x.view()),
                    w_gate.view(),
                    w_up.view(),
                    w_down.view(),
                    gl.view(),
                    GroupListType::Counts,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn bench_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("moe_layer");
    g.sample_size(10);
    let mut rng = CaseRng::new(5);
    let router: Array2<bf16> = rng.uniform((EXPERTS, HIDDEN), -0.05, 0.05);
    let bias: Array1<f32> = rng.uniform(EXPERTS, -0.1, 0.1);
    let w_gate = expert_weights(&mut rng, INTER, HIDDEN);
    let w_up = expert_weights(&mut rng, INTER, HIDDEN);
    let w_down = expert_weights(&mut rng, HIDDEN, INTER);
    let params = MoeLayerParams {
        router: router.view(),
        bias: Some(bias.view()),
        gating: GatingConfig::deepseek_v3(),
        w_gate: w_gate.view(),
        w_up: w_up.view(),
        w_down: w_down.view(),
        local: Some(0..LOCAL_EXPERTS),
    };
    // T = 512 would route ~64 rows to the 4 local experts: seconds per iteration on the reference.
    for t in [1usize, 64] {
        let x: Array2<bf16> = rng.uniform((t, HIDDEN), -1.0, 1.0);
        let shared: Array2<bf16> = rng.uniform((t, HIDDEN), -1.0, 1.0);
        g.bench_with_input(BenchmarkId::new("bf16_4_local_experts", t), &t, |b, _| {
            b.iter(|| moe_layer(black_box(x.view()), &params, Some(shared.view()), None).unwrap())
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_gating,
    bench_dispatch,
    bench_combine,
    bench_expert_ffn,
    bench_layer
);
criterion_main!(benches);
