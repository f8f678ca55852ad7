//! dsnpu's kernels on the simulator, at DeepSeek-V3 decode shapes (bf16, 16 tokens), reported through
//! the simulator's per-launch counters.
//!
//! Run: `cargo bench --bench kernels` (add `-- --measurement-time 1 --warm-up-time 0.5` for a quick
//! pass). Before criterion's timings, a table is printed with, per kernel:
//! - the GM traffic the kernel issued (counted by the host Ascend C layer) against the **minimal**
//!   bytes the operator must move (each input read once, each output written once), and their ratio;
//! - vector element operations, cube multiply-adds, blocks and the largest block's UB high-water mark;
//! - a **modelled 910B2 time** from those counters, and the **roofline** time of the operator itself
//!   (its minimal bytes and its necessary multiply-adds under the same model).
//!
//! The model (one 910B2 die: ~1.6 TB/s HBM, 24 cube cores at 1.8 GHz doing 16×16×16 per cycle, 48
//! vector cores at 256 bytes per cycle with f32 element operations; modelled time = max of the three
//! units' times) is `dsnpu_kernels::roofline`, whose docs derive the rates. It is a bound, not a
//! prediction; the ratio between the modelled time and the roofline time is what the kernel's traffic
//! and work cost over the minimum.
//!
//! Where the ratio exceeds 1 it is the kernels' design, not noise: every block of `rms_norm` and
//! `add_rms_norm` reads the whole weight row (16 blocks → 16 copies), and `linear`'s grid blocks read
//! their rows of `x` once per 256 output columns and of `w` once per 128 output rows (the host Matmul
//! models no L1/L2 reuse). `LinearTiling` picks the grid that weighs those re-reads against using every
//! core.
//!
//! Criterion's timings measure the **simulator** (host threads running host code) and say nothing
//! about an NPU; the counters are the figures.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dsnpu_kernels::bench_report::{BenchCase, BenchReport};
use dsnpu_kernels::cost_model::PipeModel;
use dsnpu_kernels::launch::{self, Hardware, KernelLibrary, RopeShape};
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_kernels::RopeLayout;
use dsnpu_runtime::sim_counters::{self, LaunchCounters, ModelCounters};
use dsnpu_runtime::{Device, DeviceBuffer, Stream};
use half::bf16;

/// DeepSeek-V3 sizes.
const TOKENS: usize = 16;
const HIDDEN: usize = 7168;
const HEADS: usize = 128;
const ROPE_DIM: usize = 64;
const INTER: usize = 18432;
/// `kv_a_proj_with_mqa`: hidden → kv_lora_rank + rope dim.
const KV_A_OUT: usize = 512 + 64;
const E: u64 = 2; // bf16 bytes

/// One benchmarked launch: queues the kernel and returns its symbol.
type Launcher = Box<dyn FnMut() -> &'static str>;

struct Case {
    name: &'static str,
    shape: String,
    min_bytes: u64,
    min_macs: u64,
    launch: Launcher,
}

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

fn cases(lib: &std::sync::Arc<KernelLibrary>, s: &Stream) -> Vec<Case> {
    let (t, h) = (TOKENS, HIDDEN);
    let mut out = Vec::new();

    let (lib1, s1) = (lib.clone(), s.clone());
    let (x, w) = (fill(s, t * h, 1), fill(s, h, 2));
    let mut y = s.alloc::<bf16>(t * h).expect("alloc");
    out.push(Case {
        name: "rms_norm",
        shape: format!("[{t}, {h}]"),
        min_bytes: (2 * t * h + h) as u64 * E,
        min_macs: 0,
        launch: Box::new(move || {
            launch::rms_norm(&lib1, &s1, &x, &w, &mut y, t, 1e-6)
                .expect("rms_norm")
                .symbol
        }),
    });

    let (lib1, s1) = (lib.clone(), s.clone());
    let (x, r, w) = (fill(s, t * h, 3), fill(s, t * h, 4), fill(s, h, 5));
    let (mut y, mut sum) = (
        s.alloc::<bf16>(t * h).expect("alloc"),
        s.alloc::<bf16>(t * h).expect("alloc"),
    );
    out.push(Case {
        name: "add_rms_norm",
        shape: format!("[{t}, {h}]"),
        min_bytes: (4 * t * h + h) as u64 * E,
        min_macs: 0,
        launch: Box::new(move || {
            launch::add_rms_norm(&lib1, &s1, &x, &r, &w, &mut y, &mut sum, t, 1e-6)
                .expect("add_rms_norm")
                .symbol
        }),
    });

    let (lib1, s1) = (lib.clone(), s.clone());
    let table_rows = 4096;
    let half = ROPE_DIM / 2;
    let x = fill(s, t * HEADS * ROPE_DIM, 6);
    let positions: Vec<i32> = (0..t as i32).map(|i| 100 + 37 * i).collect();
    let pos = s.upload(&positions).expect("upload");
    let table: Vec<f32> = (0..table_rows * half)
        .map(|i| (i as f32 * 1e-3).cos())
        .collect();
    let (cos, sin) = (
        s.upload(&table).expect("upload"),
        s.upload(&table).expect("upload"),
    );
    let mut y = s.alloc::<bf16>(t * HEADS * ROPE_DIM).expect("alloc");
    let shape = RopeShape::dense(t, HEADS, ROPE_DIM, table_rows, RopeLayout::Interleaved);
    out.push(Case {
        name: "rope",
        shape: format!("[{t}, {HEADS}, {ROPE_DIM}]"),
        // x in, y out, the positions, and one cos and one sin row (f32) per (distinct) position.
        min_bytes: 2 * (t * HEADS * ROPE_DIM) as u64 * E + 4 * t as u64 + 2 * (t * half * 4) as u64,
        min_macs: 0,
        launch: Box::new(move || {
            launch::rope(&lib1, &s1, &x, &pos, &cos, &sin, &mut y, shape)
                .expect("rope")
                .symbol
        }),
    });

    let (lib1, s1) = (lib.clone(), s.clone());
    let gu = fill(s, t * 2 * INTER, 7);
    let mut o = s.alloc::<bf16>(t * INTER).expect("alloc");
    out.push(Case {
        name: "silu_mul",
        shape: format!("[{t}, 2 x {INTER}]"),
        min_bytes: 3 * (t * INTER) as u64 * E,
        min_macs: 0,
        launch: Box::new(move || {
            launch::silu_mul(&lib1, &s1, &gu, &mut o, t, INTER)
                .expect("silu_mul")
                .symbol
        }),
    });

    let (lib1, s1) = (lib.clone(), s.clone());
    let (m, n, k) = (t, KV_A_OUT, h);
    let (x, w) = (fill(s, m * k, 8), fill(s, n * k, 9));
    let mut y = s.alloc::<bf16>(m * n).expect("alloc");
    out.push(Case {
        name: "linear",
        shape: format!("[{m}, {k}] x [{n}, {k}]^T"),
        min_bytes: (m * k + n * k + m * n) as u64 * E,
        min_macs: (m * n * k) as u64,
        launch: Box::new(move || {
            launch::linear(&lib1, &s1, &x, &w, None, &mut y, m, n, k)
                .expect("linear")
                .symbol
        }),
    });
    out
}

fn micros(seconds: f64) -> f64 {
    seconds * 1e6
}

fn report(case: &Case, c: &LaunchCounters, m: &ModelCounters) -> BenchCase {
    let t = c.totals;
    let gm = t.gm_bytes();
    let times = ASCEND_910B2.times(gm, t.cube_macs, t.vector_elem_ops);
    let (mem, cube, vec) = (times.mem, times.cube, times.vector);
    let modelled = times.modelled();
    let bound = times.bound().name();
    let roofline = ASCEND_910B2.roofline(case.min_bytes, case.min_macs);
    let pipes = PipeModel {
        cycles: m.cycles,
        pipe_busy: m.pipe_busy,
    };
    println!(
        "| {:<12} | {:<26} | {:>6} | {:>10} | {:>10} | {:>10} | {:>5.3} | {:>10} | {:>10} | {:>7} | {:>8.2} | {:>9.2} | {:>8.2} | {:>8.2} | {:<6} | {:>7.2} | {:>6.2} | {:>8.2} | {:<7} | {:<28} |",
        case.name,
        case.shape,
        c.num_blocks,
        t.gm_to_ub_bytes,
        t.ub_to_gm_bytes,
        case.min_bytes,
        gm as f64 / case.min_bytes as f64,
        t.vector_elem_ops,
        t.cube_macs,
        t.ub_high_water,
        micros(mem),
        micros(cube),
        micros(vec),
        micros(modelled),
        bound,
        micros(roofline),
        modelled / roofline,
        pipes.model_us(),
        pipes.bound(),
        pipes.busy_summary(),
    );
    BenchCase {
        kernel: c.kernel.clone(),
        shape: case.shape.clone(),
        dtype: "bf16".into(),
        gm_read_bytes: t.gm_to_ub_bytes,
        gm_write_bytes: t.ub_to_gm_bytes,
        minimal_bytes: case.min_bytes,
        cube_macs: t.cube_macs,
        vector_ops: t.vector_elem_ops,
        model_us: pipes.model_us(),
        roof_us: micros(roofline),
        bound: pipes.bound().into(),
    }
}

fn kernels(c: &mut Criterion) {
    let device = Device::new(0).expect("device 0");
    // Tile for a real 910B2 whatever the simulator's configuration, so the counters are the NPU's.
    let lib = KernelLibrary::load_with(&device, Hardware::ASCEND_910B2).expect("load kernels");
    let stream = device.new_stream().expect("stream");
    let mut cases = cases(&lib, &stream);
    stream.synchronize().expect("uploads");

    println!("\ndsnpu kernels, DeepSeek-V3 decode shapes, bf16; modelled on one 910B2 die (see the bench docs)\n");
    println!(
        "| kernel       | shape                      | blocks |  GM read B | GM write B |  minimal B | ratio |    vec ops |  cube MACs | UB peak | t_mem µs | t_cube µs | t_vec µs | units µs | bound  | roof µs | x roof | pipes µs | bound   | busy                         |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = BenchReport::new("kernels");
    for case in &mut cases {
        let symbol = (case.launch)();
        stream.synchronize().expect("kernel");
        let counters = sim_counters::last_launch_counters(&stream)
            .expect("the simulator's counters")
            .expect("a completed launch");
        assert_eq!(counters.kernel, symbol);
        let model = sim_counters::last_launch_model(&stream)
            .expect("the simulator's counters")
            .expect("a completed launch");
        json.cases.push(report(case, &counters, &model));
    }
    println!();
    let path = json
        .write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("write the bench report");
    println!("report: {}\n", path.display());

    let mut g = c.benchmark_group("kernels_on_simulator");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for case in &mut cases {
        g.bench_function(case.name, |b| {
            b.iter(|| {
                (case.launch)();
                stream.synchronize().expect("kernel");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
