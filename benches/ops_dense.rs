//! Criterion benches of the dense CPU references at DeepSeek-V3 shapes (hidden 7168, 128 heads, rotary
//! width 64). Matrix products are scaled down where the full shape would take seconds per iteration on
//! a reference implementation. Not run in CI: `cargo bench --bench ops_dense`.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::linear::linear;
use dsnpu_ops::norm::rms_norm;
use dsnpu_ops::rope::{rope, RopeConfig, RopeLayout, RopeTable, YarnScaling};
use dsnpu_ops::Float;
use half::bf16;
use ndarray::{Array1, Array2, Array3};
use std::hint::black_box;

const HIDDEN: usize = 7168;

fn bench_rms_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("rms_norm");
    g.sample_size(10);
    let mut rng = CaseRng::new(1);
    let w: Array1<bf16> = rng.uniform(HIDDEN, 0.5, 1.5);
    for t in [64usize, 512, 4096] {
        let x: Array2<bf16> = rng.uniform((t, HIDDEN), -2.0, 2.0);
        g.throughput(Throughput::Bytes(
            (2 * t * HIDDEN * bf16::DTYPE.size_in_bytes()) as u64,
        ));
        g.bench_with_input(BenchmarkId::new("bf16", t), &t, |b, _| {
            b.iter(|| rms_norm(black_box(x.view()), w.view(), 1e-6).unwrap())
        });
    }
    g.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear");
    g.sample_size(10);
    let mut rng = CaseRng::new(2);
    // (M, K, N): decode GEMV of q_a_proj (7168 -> 1536), a small prefill batch of it, and a scaled square.
    for (m, k, n) in [
        (1usize, HIDDEN, 1536usize),
        (16, HIDDEN, 1536),
        (64, 2048, 2048),
    ] {
        let x: Array2<bf16> = rng.uniform((m, k), -1.0, 1.0);
        let w: Array2<bf16> = rng.uniform((n, k), -0.02, 0.02);
        g.throughput(Throughput::Elements((2 * m * k * n) as u64)); // FLOPs
        g.bench_with_input(
            BenchmarkId::new("bf16", format!("{m}x{k}x{n}")),
            &m,
            |b, _| b.iter(|| linear(black_box(x.view()), w.view(), None).unwrap()),
        );
        let xf = x.mapv(|v| v.to_f32());
        let wf = w.mapv(|v| v.to_f32());
        g.bench_with_input(
            BenchmarkId::new("f32", format!("{m}x{k}x{n}")),
            &m,
            |b, _| b.iter(|| linear(black_box(xf.view()), wf.view(), None).unwrap()),
        );
    }
    g.finish();
}

fn bench_rope(c: &mut Criterion) {
    let mut g = c.benchmark_group("rope");
    g.sample_size(10);
    let cfg = RopeConfig {
        dim: 64,
        theta: 10000.0,
        scaling: Some(YarnScaling {
            factor: 40.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
        }),
    };
    let table = RopeTable::new(&cfg, 8192).unwrap();
    let mut rng = CaseRng::new(3);
    for t in [1usize, 64, 1024] {
        let x: Array3<bf16> = rng.uniform((t, 128, 64), -2.0, 2.0);
        let pos = rng.ints(t, 0, 8192);
        g.throughput(Throughput::Elements((t * 128 * 64) as u64));
        g.bench_with_input(BenchmarkId::new("bf16_interleaved", t), &t, |b, _| {
            b.iter(|| {
                rope(
                    black_box(x.view()),
                    pos.view(),
                    &table,
                    RopeLayout::Interleaved,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_rms_norm, bench_linear, bench_rope);
criterion_main!(benches);
