//! dsnpu's kernels on the simulator, at DeepSeek-V3 decode shapes (bf16, 16 tokens), reported through
//! the simulator's per-launch counters. The cases (buffers, launches, minimal bytes and multiply-adds)
//! are `dsnpu::bench::cases::dense_cases`, the ones `dsnpu bench` runs.
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
//! their rows of `x` once per base_n output columns (256 at 128 rows, up to 1024 at 16 or 32: what L0C
//! holds) and of `w` once per 128 output rows (the host Matmul
//! has no L1 reuse; L2 hits show only in the HBM counters, within a block). `LinearTiling` picks the
//! grid that weighs those re-reads against using every core, and for few rows over a long k splits k
//! too (`linear_splitk_<t>`: each block reads its slice of `x`, and the f32 partials make a round trip).
//!
//! Criterion's timings measure the **simulator** (host threads running host code) and say nothing
//! about an NPU; the counters are the figures.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dsnpu::bench::cases::{self, KernelCase, DEEPSEEK_V3};
use dsnpu_kernels::bench_report::{BenchCase, BenchReport};
use dsnpu_kernels::cost_model::PipeModel;
use dsnpu_kernels::launch::{Hardware, KernelLibrary};
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_runtime::sim_counters::{self, LaunchCounters, ModelCounters};
use dsnpu_runtime::Device;

fn micros(seconds: f64) -> f64 {
    seconds * 1e6
}

fn report(case: &KernelCase, c: &LaunchCounters, m: &ModelCounters) -> BenchCase {
    let t = c.totals;
    let gm = t.gm_bytes();
    let times = ASCEND_910B2.times(gm, t.cube_macs, t.vector_elem_ops);
    let (mem, cube, vec) = (times.mem, times.cube, times.vector);
    let modelled = times.modelled();
    let bound = times.bound().name();
    let roofline = ASCEND_910B2.roofline(case.minimal_bytes, case.minimal_macs);
    let pipes = PipeModel {
        cycles: m.cycles,
        pipe_busy: m.pipe_busy,
    };
    println!(
        "| {:<12} | {:<26} | {:>6} | {:>10} | {:>10} | {:>10} | {:>5.3} | {:>10} | {:>10} | {:>7} | {:>8.2} | {:>9.2} | {:>8.2} | {:>8.2} | {:<6} | {:>7.2} | {:>6.2} | {:>8.2} | {:<7} | {:<28} |",
        case.op,
        case.shape,
        c.num_blocks,
        t.gm_to_ub_bytes,
        t.ub_to_gm_bytes,
        case.minimal_bytes,
        gm as f64 / case.minimal_bytes as f64,
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
        minimal_bytes: case.minimal_bytes,
        cube_macs: t.cube_macs,
        vector_ops: t.vector_elem_ops,
        model_us: pipes.model_us(),
        roof_us: micros(roofline),
        bound: pipes.bound().into(),
        hbm_read_bytes: Some(t.hbm_read_bytes),
        hbm_write_bytes: Some(t.hbm_write_bytes),
    }
}

fn kernels(c: &mut Criterion) {
    let device = Device::new(0).expect("device 0");
    // Tile for a real 910B2 whatever the simulator's configuration, so the counters are the NPU's.
    let lib = KernelLibrary::load_with(&device, Hardware::ASCEND_910B2).expect("load kernels");
    let stream = device.new_stream().expect("stream");
    let mut cases =
        cases::dense_cases(&lib, &stream, &DEEPSEEK_V3, &|_| true).expect("set up the cases");
    stream.synchronize().expect("uploads");

    println!("\ndsnpu kernels, DeepSeek-V3 decode shapes, bf16; modelled on one 910B2 die (see the bench docs)\n");
    println!(
        "| kernel       | shape                      | blocks |  GM read B | GM write B |  minimal B | ratio |    vec ops |  cube MACs | UB peak | t_mem µs | t_cube µs | t_vec µs | units µs | bound  | roof µs | x roof | pipes µs | bound   | busy                         |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = BenchReport::new("kernels");
    for case in &mut cases {
        let symbol = case.launch().expect("launch");
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
        g.bench_function(case.op, |b| {
            b.iter(|| {
                case.launch().expect("launch");
                stream.synchronize().expect("kernel");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
