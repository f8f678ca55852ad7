//! Criterion benches of the MLA CPU references at DeepSeek-V3 decode shapes: 16 and 128 query heads
//! (TP 8 and TP 1), a 512 + 64 latent, a 4096-token context in 128-token blocks, one query token.
//! The references are written for clarity, so these measure the oracle's cost, not a kernel's; the
//! throughput line counts the latent cache bytes read (FlashMLA's memory-bound metric) for comparison.
//! Not run in CI: `cargo bench --bench ops_mla`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dsnpu_ops::backend::Cpu;
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::mla::{DecodeCase, DecodeSpec};
use dsnpu_ops::half::bf16;
use std::time::Duration;

const CONTEXT: usize = 4096;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("mla_decode_bf16");
    // One iteration at 128 heads is ~0.6 G multiply-adds: keep the sample count small.
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for heads in [16usize, 128] {
        let spec = DecodeSpec {
            block_size: 128,
            heads,
            latent_dim: 512,
            rope_dim: 64,
            s_q: 1,
            seq_lens: vec![CONTEXT],
            spare_blocks: 0,
            extra_cols: 0,
            scale: 0.1352,
        };
        let case =
            DecodeCase::<bf16>::build(&mut CaseRng::new(1), &spec).expect("valid bench shape");
        let cache_bytes = CONTEXT * (512 + 64) * std::mem::size_of::<bf16>();
        group.throughput(Throughput::Bytes(cache_bytes as u64));
        group.bench_with_input(BenchmarkId::new("heads", heads), &case, |b, case| {
            b.iter(|| case.run(&Cpu).expect("reference accepts the bench case"))
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
