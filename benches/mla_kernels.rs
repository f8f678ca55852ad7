//! The MLA kernels on the simulator at DeepSeek-V3 shapes (bf16, Dl 512, Dr 64, block size 128),
//! reported through the simulator's per-launch counters and written to
//! `target/bench-reports/mla_kernels.json` (`dsnpu_kernels::bench_report`).
//!
//! Run: `cargo bench --bench mla_kernels` (about three minutes; criterion then times one small launch,
//! which measures the simulator, not an NPU). The table has, per case:
//! - GM bytes the launch issued (counted by the host Ascend C layer, workspace traffic included) against
//!   FlashMLA's minimum: `Σ seqlen · 576 · 2` bytes of cache + the queries + the outputs (and lse);
//! - blocks launched out of the 24 cube cores of a 910B2 (each block = one cube + its vector cores);
//! - the modelled 910B2 time of the counters and the operator's roofline (`dsnpu_kernels::roofline`).
//!
//! Decode runs at batch 1, 8, 64 × context 512, 4096, 32768 × 16 and 128 heads, one query token. Four
//! cases are not run — batch 8 at context 32768 and batch 64 at context 4096 with 128 heads, and batch
//! 64 at context 32768 — because the host's cube emulation would need 36 G to 290 G multiply-adds
//! (minutes to an hour on the simulator); they are listed as not run.
//! Prefill has no kernel yet (listed as not built).
//!
//! Why the ratios exceed 1 (the kernel's design under the host Matmul API, see the kernel's source):
//! the cube's operands come from GM, so the latent rows are streamed twice (q·Kᵀ and P·V), the query
//! panel once per cache-block segment, and the scores, P and the f32 partial outputs of every chunk
//! go through the workspace (on an NPU most of that would stay in L1/L2, which the model does not see).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dsnpu_kernels::bench_report::{BenchCase, BenchReport};
use dsnpu_kernels::launch::{self, Hardware, KernelLibrary, MlaDecodeInputs, MlaDecodeShape};
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_kernels::MlaDecodePlan;
use dsnpu_runtime::sim_counters::{self, LaunchCounters};
use dsnpu_runtime::{Device, DeviceBuffer, Stream};
use half::bf16;

const DL: usize = 512;
const DR: usize = 64;
const BLOCK: usize = 128;
const E: u64 = 2; // bf16 bytes
/// The largest decode the simulator runs in this bench (host multiply-adds; ~5 G take seconds).
const MAX_SIM_MACS: u64 = 6_000_000_000;

fn fill(s: &Stream, n: usize, seed: u32) -> DeviceBuffer<bf16> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let v: Vec<bf16> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bf16::from_f32((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
        })
        .collect();
    s.upload(&v).expect("upload")
}

/// A decode ready to launch: batch sequences of `ctx` cached tokens each, `heads` heads, S = 1.
struct Decode {
    batch: usize,
    ctx: usize,
    heads: usize,
    q_nope: DeviceBuffer<bf16>,
    q_rope: DeviceBuffer<bf16>,
    latent: DeviceBuffer<bf16>,
    rope: DeviceBuffer<bf16>,
    table: DeviceBuffer<i32>,
    lens: DeviceBuffer<i32>,
    plan: MlaDecodePlan,
    words: DeviceBuffer<i32>,
    out: DeviceBuffer<bf16>,
    lse: DeviceBuffer<f32>,
}

impl Decode {
    fn new(lib: &KernelLibrary, s: &Stream, batch: usize, ctx: usize, heads: usize) -> Decode {
        let per_seq = ctx.div_ceil(BLOCK);
        let blocks = batch * per_seq;
        // Sequence b owns blocks b, b + batch, ...: interleaved, not contiguous.
        let table: Vec<i32> = (0..batch)
            .flat_map(|b| (0..per_seq).map(move |k| (k * batch + b) as i32))
            .collect();
        let lens = vec![ctx; batch];
        let plan = MlaDecodePlan::new(&lens, lib.hardware().cube.cores).expect("plan");
        let rows = batch * heads;
        Decode {
            batch,
            ctx,
            heads,
            q_nope: fill(s, rows * DL, 1),
            q_rope: fill(s, rows * DR, 2),
            latent: fill(s, blocks * BLOCK * DL, 3),
            rope: fill(s, blocks * BLOCK * DR, 4),
            table: s.upload(&table).expect("upload"),
            lens: s
                .upload(&lens.iter().map(|&l| l as i32).collect::<Vec<_>>())
                .expect("upload"),
            words: s.upload(plan.words()).expect("upload"),
            plan,
            out: s.alloc(rows * DL).expect("alloc"),
            lse: s.alloc(rows).expect("alloc"),
        }
    }

    fn launch(&mut self, lib: &KernelLibrary, s: &Stream) -> &'static str {
        let shape = MlaDecodeShape {
            batch: self.batch,
            s_q: 1,
            heads: self.heads,
            latent_dim: DL,
            rope_dim: DR,
            block_size: BLOCK,
            num_blocks: self.batch * self.ctx.div_ceil(BLOCK),
            max_blocks: self.ctx.div_ceil(BLOCK),
        };
        let inputs = MlaDecodeInputs {
            q_nope: &self.q_nope,
            q_rope: &self.q_rope,
            latent: &self.latent,
            rope: &self.rope,
            block_table: &self.table,
            seq_lens: &self.lens,
            plan: &self.plan,
            plan_words: &self.words,
        };
        launch::mla_decode(lib, s, inputs, &mut self.out, &mut self.lse, shape, 0.1352)
            .expect("mla_decode")
            .symbol
    }

    /// FlashMLA's minimum: the cache rows once, the queries once, the outputs (and lse) once.
    fn minimal_bytes(&self) -> u64 {
        let rows = (self.batch * self.heads) as u64;
        (self.batch * self.ctx) as u64 * (DL + DR) as u64 * E
            + rows * (DL + DR) as u64 * E
            + rows * DL as u64 * E
            + rows * 4
    }

    fn minimal_macs(&self) -> u64 {
        (self.batch * self.ctx * self.heads) as u64 * (DL + DR + DL) as u64
    }

    fn shape(&self) -> String {
        format!("B={} ctx={} H={} S=1", self.batch, self.ctx, self.heads)
    }
}

fn micros(seconds: f64) -> f64 {
    seconds * 1e6
}

fn row(d: &Decode, c: &LaunchCounters, cores: u32) -> BenchCase {
    let t = c.totals;
    let gm = t.gm_bytes();
    let times = ASCEND_910B2.times(gm, t.cube_macs, t.vector_elem_ops);
    let roof = ASCEND_910B2.roofline(d.minimal_bytes(), d.minimal_macs());
    let case = BenchCase {
        kernel: c.kernel.clone(),
        shape: d.shape(),
        dtype: "bf16".into(),
        gm_read_bytes: t.gm_to_ub_bytes,
        gm_write_bytes: t.ub_to_gm_bytes,
        minimal_bytes: d.minimal_bytes(),
        cube_macs: t.cube_macs,
        vector_ops: t.vector_elem_ops,
        model_us: micros(times.modelled()),
        roof_us: micros(roof),
        bound: times.bound().name().into(),
    };
    println!(
        "| {:<24} | {:>5} | {:>6}/{:<2} | {:>12} | {:>12} | {:>6.2} | {:>13} | {:>11} | {:>9.2} | {:>9.2} | {:>9.2} | {:<6} | {:>8.2} | {:>6.2} |",
        case.shape,
        d.plan.tasks(),
        c.num_blocks,
        cores,
        gm,
        case.minimal_bytes,
        case.ratio(),
        case.cube_macs,
        case.vector_ops,
        micros(times.mem),
        micros(times.cube),
        case.model_us,
        case.bound,
        case.roof_us,
        case.model_us / case.roof_us,
    );
    case
}

fn mla_kernels(c: &mut Criterion) {
    let device = Device::new(0).expect("device 0");
    // Tile for a real 910B2 whatever the simulator's configuration, so the counters are the NPU's.
    let lib = KernelLibrary::load_with(&device, Hardware::ASCEND_910B2).expect("load kernels");
    let stream = device.new_stream().expect("stream");
    let cores = lib.hardware().cube.cores;
    let mut report = BenchReport::new("mla_kernels");

    println!("\nMLA decode (mla_decode_bf16, split-KV), Dl 512, Dr 64, block 128; modelled on one 910B2 die\n");
    println!("| shape                    | tasks | blocks    |     GM bytes |    minimal B |  ratio |     cube MACs |  vector ops |  t_mem µs | t_cube µs |  model µs | bound  |  roof µs | x roof |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for batch in [1usize, 8, 64] {
        for ctx in [512usize, 4096, 32768] {
            for heads in [16usize, 128] {
                let macs = (batch * ctx * heads * (DL + DR + DL)) as u64;
                if macs > MAX_SIM_MACS {
                    println!(
                        "| B={batch} ctx={ctx} H={heads} S=1 | not run: {:.0} G multiply-adds, beyond a few minutes on the simulator |",
                        macs as f64 / 1e9
                    );
                    continue;
                }
                let mut d = Decode::new(&lib, &stream, batch, ctx, heads);
                let symbol = d.launch(&lib, &stream);
                stream.synchronize().expect("mla_decode");
                let counters = sim_counters::last_launch_counters(&stream)
                    .expect("the simulator's counters")
                    .expect("a completed launch");
                assert_eq!((counters.kernel.as_str(), counters.warnings), (symbol, 0));
                report.cases.push(row(&d, &counters, cores));
            }
        }
    }
    println!("| prefill T=4096 H=128     | not built: no prefill kernel yet |");
    println!();
    let path = report
        .write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("write the bench report");
    println!("report: {}\n", path.display());

    let mut d = Decode::new(&lib, &stream, 1, 4096, 16);
    let mut g = c.benchmark_group("mla_kernels_on_simulator");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("mla_decode_bf16/B=1 ctx=4096 H=16", |b| {
        b.iter(|| {
            d.launch(&lib, &stream);
            stream.synchronize().expect("kernel");
        })
    });
    g.finish();
}

criterion_group!(benches, mla_kernels);
criterion_main!(benches);
