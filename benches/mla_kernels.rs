//! The MLA kernels on the simulator at DeepSeek-V3 shapes (bf16, Dl 512, Dr 64, block size 128),
//! reported through the simulator's per-launch counters and written to
//! `target/bench-reports/mla_kernels.json` (`dsnpu_kernels::bench_report`).
//!
//! Run: `cargo bench --bench mla_kernels` (four to six minutes here; criterion then times one small launch,
//! which measures the simulator, not an NPU). The table has, per case:
//! - GM bytes the launch issued (counted by the host Ascend C layer, workspace traffic included) against
//!   FlashMLA's minimum: `Σ seqlen · 576 · 2` bytes of cache + the queries + the outputs (and lse);
//! - blocks launched out of the 24 cube cores of a 910B2 (each block = one cube + its vector cores);
//! - the modelled 910B2 time of the counters and the operator's roofline (`dsnpu_kernels::roofline`).
//!
//! Decode runs at batch 1, 8, 64 × context 512, 4096, 32768 × 16 and 128 heads, one query token: all
//! 18 cases. The largest takes the host's cube emulation 292 G multiply-adds (about two minutes here;
//! the three of 36 G 15 to 35 s); a case beyond `DSNPU_BENCH_MAX_MACS` host multiply-adds (default
//! 300 G) is listed as not run, for a quicker look.
//! Prefill (`mla_prefill_bf16`, expanded form: Dqk 192, Dv 128) runs one causal sequence of 4096 tokens
//! with 128 heads: the whole launch on the 24 blocks of a 910B2 (350 G host multiply-adds, about three
//! and a half minutes). Until 2026-12 the bench ran one head on one block and multiplied its counters by
//! 128; the whole launch's busiest block models 6.8 % slower (its L2 slice and HBM share are a 24th of the
//! die's, not all of it) and its HBM traffic is 4.4× that estimate (24 blocks' heads share the L2; a
//! head's 384-byte rows of `[T, H, 192]` each take a 512-byte line).
//! Its minimum: q, k, v read once, out and lse written once; its necessary work:
//! `H · T(T+1)/2 · (192 + 128)` multiply-adds.
//!
//! Why the ratios exceed 1 (the kernel's design, see its source): a held chunk's cache rows come from GM
//! once (they stay in the cube core's L1 from q·Kᵀ to P·V; streamed keys, which the plan picks for
//! long 128-head chunks, come twice), but cube and vector cores share only GM, so the scores (f32), P
//! and the f32 partial output of every chunk go through the workspace, and the combine reads every
//! chunk's partial back; held chunks are at most what L1 holds (416 positions at 16 heads, 256 at 128;
//! about half with the two-key-buffer pipeline), so long contexts have many. That measures 1.17–3.05×
//! the minimum at 16 heads and 3.1–8.5× at 128 heads (the f32 scores and partials grow with the heads;
//! the largest ratios are at batch 1 context 512, where the plan spreads a short sequence over 8 cores).
//! The host layer's L2 model (`dsnpu_host/cost.h`, `l2_die.h`: the launch's accesses replayed through the
//! die's one 192 MiB L2) splits
//! that GM traffic into L2 hits and HBM traffic (`HBM bytes`: read misses and dirtied lines' write-backs);
//! the die-level time is max(HBM bytes / 1.6 TB/s, GM bytes / L2 bandwidth (a GUESS, 5.5 TB/s), cube,
//! vector): `crate::roofline`'s `times_l2`. `core µs` is the host layer's cycle model of the launch's
//! busiest core (`dsnpu_host/cost.h`: per-transfer GM latency, scalar GM accesses, flag round trips,
//! `SyncAll`, the Matmul's base steps; launch latency excluded, as in the roofline). `model µs` is
//! the slower of the two, and `bound` names what bounds it (a pipe, or `latency` when no pipe of the
//! busiest core is busy half the time).
//! The split-KV plan is `MlaDecodePlan::for_shape` (it weighs the partial outputs against spreading
//! the work over the cores, and picks one, two or no key buffers).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dsnpu_kernels::bench_report::{BenchCase, BenchReport};
use dsnpu_kernels::cost_model::{PipeModel, CLOCK_HZ};
use dsnpu_kernels::launch::{
    self, Hardware, KernelLibrary, MlaDecodeInputs, MlaDecodeShape, MlaPrefillInputs,
};
use dsnpu_kernels::roofline::{Times, ASCEND_910B2};
use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaOperand, MlaPlanShape, MlaPrefillDims};
use dsnpu_runtime::sim_counters::{self, LaunchCounters, ModelCounters};
use dsnpu_runtime::{Device, DeviceBuffer, Stream};
use half::bf16;

const DL: usize = 512;
const DR: usize = 64;
const BLOCK: usize = 128;
const E: u64 = 2; // bf16 bytes
/// The largest decode the simulator runs in this bench by default (host multiply-adds: every case;
/// 292 G take about two minutes); `DSNPU_BENCH_MAX_MACS` sets another.
const MAX_SIM_MACS: u64 = 300_000_000_000;

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
        let shape = MlaPlanShape {
            query_rows: heads as u32,
            latent_dim: DL as u32,
            rope_dim: DR as u32,
            dtype: KernelDtype::Bf16,
        };
        let plan = MlaDecodePlan::for_shape(&lens, shape, lib.hardware().cube.cores).expect("plan");
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

/// The modelled time of a launch: the slower of the die-level model of its counters (`times_l2`) and
/// the host layer's cycle model of its busiest core (`core_us`, launch latency excluded as in the
/// roofline), with what bounds it.
fn modelled(times: &Times, core: &PipeModel, core_us: f64) -> (f64, &'static str) {
    let die = micros(times.modelled());
    if core_us > die {
        (core_us, core.bound())
    } else {
        (die, times.bound().name())
    }
}

fn row(d: &Decode, c: &LaunchCounters, m: &ModelCounters, cores: u32) -> BenchCase {
    let t = c.totals;
    let gm = t.gm_bytes();
    let times = ASCEND_910B2.times_l2(gm, t.hbm_bytes(), t.cube_macs, t.vector_elem_ops);
    let roof = ASCEND_910B2.roofline(d.minimal_bytes(), d.minimal_macs());
    let core = PipeModel {
        cycles: m.cycles,
        pipe_busy: m.pipe_busy,
    };
    let core_us = m.cycles as f64 / CLOCK_HZ * 1e6;
    let (model_us, bound) = modelled(&times, &core, core_us);
    let case = BenchCase {
        kernel: c.kernel.clone(),
        shape: d.shape(),
        dtype: "bf16".into(),
        gm_read_bytes: t.gm_to_ub_bytes,
        gm_write_bytes: t.ub_to_gm_bytes,
        minimal_bytes: d.minimal_bytes(),
        cube_macs: t.cube_macs,
        vector_ops: t.vector_elem_ops,
        model_us,
        roof_us: micros(roof),
        bound: bound.into(),
        hbm_read_bytes: Some(t.hbm_read_bytes),
        hbm_write_bytes: Some(t.hbm_write_bytes),
    };
    println!(
        "| {:<24} | {:>5} | {:>6}/{:<2} | {:>12} | {:>12} | {:>12} | {:>6.2} | {:>13} | {:>11} | {:>9.2} | {:>9.2} | {:>9.2} | {:>9.2} | {:>9.2} | {:<7} | {:>8.2} | {:>6.2} |",
        case.shape,
        d.plan.tasks(),
        c.num_blocks,
        cores,
        gm,
        t.hbm_bytes(),
        case.minimal_bytes,
        case.ratio(),
        case.cube_macs,
        case.vector_ops,
        micros(times.mem),
        micros(times.l2),
        micros(times.cube),
        core_us,
        case.model_us,
        case.bound,
        case.roof_us,
        case.model_us / case.roof_us,
    );
    case
}

/// One causal prefill of `tokens` tokens and `heads` heads in the expanded form (bf16), launched on
/// every block `lib` has and reported.
fn prefill_case(lib: &KernelLibrary, s: &Stream, tokens: usize, heads: usize) -> BenchCase {
    const DQK: usize = 192;
    const DV: usize = 128;
    let q = fill(s, tokens * heads * DQK, 11);
    let k = fill(s, tokens * heads * DQK, 12);
    let v = fill(s, tokens * heads * DV, 13);
    let cu = vec![0, tokens as i32];
    let cu_d = s.upload(&cu).expect("upload");
    let mut out = s.alloc::<bf16>(tokens * heads * DV).expect("alloc");
    let mut lse = s.alloc::<f32>(tokens * heads).expect("alloc");
    let (t, h) = (tokens as u64, heads as u64);
    let dims = MlaPrefillDims {
        heads: h,
        tokens_q: t,
        tokens_k: t,
        dn: DQK as u64,
        dr: 0,
        dv: DV as u64,
        q_nope: MlaOperand::dense(t, h, DQK as u64),
        q_rope: MlaOperand::default(),
        k_nope: MlaOperand::dense(t, h, DQK as u64),
        k_rope: MlaOperand::default(),
        v: MlaOperand::dense(t, h, DV as u64),
    };
    let inputs = MlaPrefillInputs {
        q_nope: &q,
        q_rope: &q,
        k_nope: &k,
        k_rope: &k,
        v: &v,
        cu_q: &cu_d,
        cu_k: &cu_d,
        host_cu_q: &cu,
        host_cu_k: &cu,
    };
    let l =
        launch::mla_prefill(lib, s, inputs, dims, &mut out, &mut lse, 0.1352).expect("mla_prefill");
    s.synchronize().expect("mla_prefill");
    let c = sim_counters::last_launch_counters(s)
        .expect("the simulator's counters")
        .expect("a completed launch");
    assert_eq!((c.kernel.as_str(), c.warnings), (l.symbol, 0));
    let tt = c.totals;
    let (rd, wr) = (tt.gm_to_ub_bytes, tt.ub_to_gm_bytes);
    let (hrd, hwr) = (tt.hbm_read_bytes, tt.hbm_write_bytes);
    let (macs, vops) = (tt.cube_macs, tt.vector_elem_ops);
    let minimal_bytes = t * h * (2 * DQK as u64 + 2 * DV as u64) * E + t * h * 4;
    let minimal_macs = h * t * (t + 1) / 2 * (DQK + DV) as u64;
    let times = ASCEND_910B2.times_l2(rd + wr, hrd + hwr, macs, vops);
    let roof = ASCEND_910B2.roofline(minimal_bytes, minimal_macs);
    let m = sim_counters::last_launch_model(s)
        .expect("the simulator's counters")
        .expect("a completed launch");
    let core = PipeModel {
        cycles: m.cycles,
        pipe_busy: m.pipe_busy,
    };
    let core_us = m.cycles as f64 / CLOCK_HZ * 1e6;
    let (model_us, bound) = modelled(&times, &core, core_us);
    let case = BenchCase {
        kernel: c.kernel.clone(),
        shape: format!("T={tokens} H={heads} Dqk=192 Dv=128 causal"),
        dtype: "bf16".into(),
        gm_read_bytes: rd,
        gm_write_bytes: wr,
        minimal_bytes,
        cube_macs: macs,
        vector_ops: vops,
        model_us,
        roof_us: micros(roof),
        bound: bound.into(),
        hbm_read_bytes: Some(hrd),
        hbm_write_bytes: Some(hwr),
    };
    println!(
        "| {:<32} | {:>7} | {:>14} | {:>13} | {:>12} | {:>6.2} | {:>15} | {:>13} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} | {:<7} | {:>8.1} | {:>5.1}% |",
        case.shape,
        l.tiling.tasks,
        rd + wr,
        hrd + hwr,
        case.minimal_bytes,
        case.ratio(),
        macs,
        vops,
        micros(times.mem),
        micros(times.l2),
        micros(times.cube),
        micros(times.vector),
        core_us,
        case.model_us,
        case.bound,
        case.roof_us,
        100.0 * case.roof_us / case.model_us,
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
    println!("| shape                    | tasks | blocks    |     GM bytes |    HBM bytes |    minimal B |  ratio |     cube MACs |  vector ops |  t_hbm µs |   t_l2 µs | t_cube µs | core µs   |  model µs | bound   |  roof µs | x roof |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let max_macs = std::env::var("DSNPU_BENCH_MAX_MACS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_SIM_MACS);
    for batch in [1usize, 8, 64] {
        for ctx in [512usize, 4096, 32768] {
            for heads in [16usize, 128] {
                let macs = (batch * ctx * heads * (DL + DR + DL)) as u64;
                if macs > max_macs {
                    println!(
                        "| B={batch} ctx={ctx} H={heads} S=1 | not run: {:.0} G multiply-adds, beyond DSNPU_BENCH_MAX_MACS |",
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
                let model = sim_counters::last_launch_model(&stream)
                    .expect("the simulator's counters")
                    .expect("a completed launch");
                assert_eq!((counters.kernel.as_str(), counters.warnings), (symbol, 0));
                report.cases.push(row(&d, &counters, &model, cores));
            }
        }
    }
    println!();
    println!("MLA prefill (mla_prefill_bf16, flash-style, expanded form)\n");
    println!("| shape                            |   tasks |       GM bytes |     HBM bytes |    minimal B |  ratio |       cube MACs |    vector ops |  t_hbm µs |   t_l2 µs | t_cube µs |  t_vec µs |   core µs |  model µs | bound   |  roof µs | roof/model |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    report.cases.push(prefill_case(&lib, &stream, 4096, 128));
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
