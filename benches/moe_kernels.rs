//! The MoE kernels on the simulator at DeepSeek-V3 shapes — hidden 7168, 256 routed experts, top-8 of
//! 8 groups keeping 4, expert FFN 2048, bf16, T ∈ {1, 64, 512} — run as `dsnpu-ops`' device
//! `moe_layer` chains them (router and gating in f32, then dispatch, the local experts' FFN, combine),
//! and reported through the simulator's per-launch counters.
//!
//! Run: `cargo bench --bench moe_kernels` (add `-- --measurement-time 1 --warm-up-time 0.5` for a quick
//! pass). First a table, per kernel and T:
//! - the GM traffic the kernel issued (counted by the host Ascend C layer) against the **minimal**
//!   bytes the operator must move, and their ratio (target for dispatch and combine: ≤ 1.2);
//! - cube multiply-adds, vector element operations, blocks, the largest block's UB high-water mark;
//! - the **modelled 910B2 time** of those counters and the operator's **roofline** time, under
//!   `dsnpu_kernels::roofline`'s model (max of HBM at ~1.6 TB/s, 24 cube cores, 48 vector cores).
//!
//! # What the minimum counts
//! Each input read once and each output written once, indices and weights included:
//! - router (`linear_f32`): x `[T,H]` and the router `[E,H]` in f32, the logits `[T,E]` f32;
//!   T·E·H multiply-adds.
//! - gating (`moe_gating_topk_f32`): the logits, the bias `[E]`, ids and weights `[T,K]` (4 bytes
//!   each).
//! - dispatch (`moe_init_routing_bf16`): x read once, its T·K rows written once (every expert active,
//!   so R = T·K), the ids read once, `expanded_row_idx` `[T·K]` i32 and `expert_tokens` `[E]` i64
//!   written once. Its per-block histograms in the workspace (O(blocks·E) words) are overhead.
//! - int8 dispatch: the same with 1-byte codes and a 4-byte scale per row.
//! - combine (`moe_finalize_routing_bf16`): the T·K rows read once, `expanded_row_idx` and the f32
//!   weights read once, the T output rows written once; with the shared-expert output and the residual
//!   fused in, those two `[T,H]` are read once too.
//! - expert FFN (`expert_ffn_bf16`) over the experts this rank holds (8, expert parallelism over 32
//!   ranks): the R_local dispatched rows read and their outputs written once, the gate, up and down
//!   weights of every expert that got a row read once, the group list; 3·R_local·H·I multiply-adds.
//!   The kernel's f32 gate/up and bf16 h round trip through the workspace is overhead (a fused
//!   on-chip FFN would not move it).
//!
//! Where the ratio exceeds 1 it is the design, not noise: the router's `linear` grid blocks re-read
//! their rows of x per base block of output columns (256 to 1024 wide: what L0C holds at the block's
//! rows; GM bytes count every transfer, L2 hits show only in the HBM counters, and only within a
//! block), or with k split (T 64: 8 slices) their slice of x, plus the f32 partials' round trip; every gating block reads the whole bias; and the expert FFN is tiled, as the layer launches
//! it, for the room of every pair (T·K rows) because the dispatched count stays on the device: the
//! kernel cuts its column tiles per launch from the group list (as few as keep the 24 cube cores even),
//! and the Matmul layout re-reads an expert's rows once per task and base block (row tiles as tall as
//! the T tokens an expert can get at most, up to 128 rows: 256-column bases at T 512, 512 at T 64),
//! plus the f32 workspace round trip.
//!
//! Criterion's timings afterwards measure the **simulator** (host threads running host code), not an
//! NPU; the counters are the figures. The expert FFN is timed at T = 1 only (at T = 512 one simulated
//! launch takes seconds).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dsnpu::bench::cases::values;
use dsnpu_kernels::bench_report::{BenchCase, BenchReport};
use dsnpu_kernels::cost_model::PipeModel;
use dsnpu_kernels::launch::{
    self, CombineShape, FfnShape, GroupList, Hardware, KernelLibrary, RoutingShape,
};
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_kernels::{GatingParams, MoeList, MoeScore};
use dsnpu_runtime::sim_counters::{self, KernelCounters};
use dsnpu_runtime::{Device, DeviceBuffer, DeviceRepr, Stream};
use half::bf16;

const HIDDEN: usize = 7168;
const EXPERTS: usize = 256;
const TOP_K: usize = 8;
const INTER: usize = 2048;
/// Experts whose FFN weights this rank holds.
const LOCAL: usize = 8;
const TOKENS: [usize; 3] = [1, 64, 512];
const B: u64 = 2; // bf16 bytes

/// DeepSeek-V3's router: sigmoid with the correction bias, 8 groups keeping 4, top-8, ×2.5.
const GATING: GatingParams = GatingParams {
    top_k: TOP_K as u64,
    n_group: 8,
    topk_group: 4,
    score: MoeScore::Sigmoid,
    has_bias: true,
    normalize: true,
    routed_scaling_factor: 2.5,
};

fn bf16s(s: &Stream, n: usize, seed: u32, scale: f32) -> DeviceBuffer<bf16> {
    let v: Vec<bf16> = values(n, seed, scale).map(bf16::from_f32).collect();
    s.upload(&v).expect("upload")
}

fn f32s(s: &Stream, n: usize, seed: u32, scale: f32) -> DeviceBuffer<f32> {
    let v: Vec<f32> = values(n, seed, scale).collect();
    s.upload(&v).expect("upload")
}

fn alloc<E: DeviceRepr>(s: &Stream, n: usize) -> DeviceBuffer<E> {
    s.alloc(n).expect("alloc")
}

/// What one launch counted, and what the pipe model made of it.
struct Launched {
    kernel: String,
    num_blocks: u32,
    totals: KernelCounters,
    model: PipeModel,
}

/// A launched kernel's clean counters (no fault, no sanitizer warning).
fn counters(s: &Stream, symbol: &str) -> Launched {
    s.synchronize().expect("kernel");
    let c = sim_counters::last_launch_counters(s)
        .expect("the simulator's counters")
        .expect("a completed launch");
    assert_eq!(
        (c.kernel.as_str(), c.status, c.warnings),
        (symbol, 0, 0),
        "{c:?}"
    );
    let m = sim_counters::last_launch_model(s)
        .expect("the simulator's counters")
        .expect("a completed launch");
    Launched {
        kernel: c.kernel,
        num_blocks: c.num_blocks,
        totals: c.totals,
        model: PipeModel {
            cycles: m.cycles,
            pipe_busy: m.pipe_busy,
        },
    }
}

/// One table row.
struct Row {
    kernel: &'static str,
    tokens: usize,
    min_bytes: u64,
    min_macs: u64,
    c: Launched,
}

/// One criterion case: queues its kernel (the buffers live in the closure).
struct Timed {
    name: String,
    launch: Box<dyn FnMut()>,
}

fn micros(seconds: f64) -> f64 {
    seconds * 1e6
}

fn print_row(r: &Row) -> BenchCase {
    let t = r.c.totals;
    let gm = t.gm_bytes();
    let times = ASCEND_910B2.times(gm, t.cube_macs, t.vector_elem_ops);
    let roof = ASCEND_910B2.roofline(r.min_bytes, r.min_macs);
    let m = &r.c.model;
    println!(
        "| {:<22} | {:>3} | {:>6} | {:>11} | {:>11} | {:>11} | {:>5.3} | {:>11} | {:>10} | {:>7} | {:>8.2} | {:>8.2} | {:<6} | {:>8.2} | {:>6.2} | {:>9.2} | {:<7} | {:<28} |",
        r.kernel,
        r.tokens,
        r.c.num_blocks,
        t.gm_to_ub_bytes,
        t.ub_to_gm_bytes,
        r.min_bytes,
        gm as f64 / r.min_bytes as f64,
        t.cube_macs,
        t.vector_elem_ops,
        t.ub_high_water,
        micros(times.mem),
        micros(times.modelled()),
        times.bound().name(),
        micros(roof),
        times.modelled() / roof,
        m.model_us(),
        m.bound(),
        m.busy_summary(),
    );
    BenchCase {
        kernel: r.c.kernel.clone(),
        shape: format!("T {}", r.tokens),
        dtype: "bf16".into(),
        gm_read_bytes: t.gm_to_ub_bytes,
        gm_write_bytes: t.ub_to_gm_bytes,
        minimal_bytes: r.min_bytes,
        cube_macs: t.cube_macs,
        vector_ops: t.vector_elem_ops,
        model_us: m.model_us(),
        roof_us: micros(roof),
        bound: m.bound().into(),
        hbm_read_bytes: Some(t.hbm_read_bytes),
        hbm_write_bytes: Some(t.hbm_write_bytes),
    }
}

/// Every stage of the layer at `t` tokens: the table rows, and the criterion cases.
fn stages(lib: &Arc<KernelLibrary>, s: &Stream, t: usize, rows: &mut Vec<Row>) -> Vec<Timed> {
    let (h, e, k) = (HIDDEN, EXPERTS, TOP_K);
    let pairs = t * k;
    let mut timed = Vec::new();
    let seed = t as u32;

    // Router in f32: logits of standard deviation ~1/3 from x in [-1, 1).
    let xf = f32s(s, t * h, seed, 1.0);
    let router = f32s(s, e * h, 2, (1.0 / h as f32).sqrt());
    let mut logits = alloc::<f32>(s, t * e);
    let l = launch::linear(lib, s, &xf, &router, None, &mut logits, t, e, h).expect("router");
    rows.push(Row {
        kernel: "router (linear_f32)",
        tokens: t,
        min_bytes: 4 * (t * h + e * h + t * e) as u64,
        min_macs: (t * e * h) as u64,
        c: counters(s, l.symbol),
    });

    let bias = f32s(s, e, 3, 0.1);
    let (mut ids, mut weights) = (alloc::<i32>(s, pairs), alloc::<f32>(s, pairs));
    let symbol = launch::moe_gating_topk(
        lib,
        s,
        &logits,
        Some(&bias),
        &mut ids,
        &mut weights,
        t,
        e,
        &GATING,
    )
    .expect("gating")
    .symbol;
    rows.push(Row {
        kernel: "gating (f32)",
        tokens: t,
        min_bytes: 4 * (t * e + e + 2 * pairs) as u64,
        min_macs: 0,
        c: counters(s, symbol),
    });
    {
        let (lib, s) = (lib.clone(), s.clone());
        let (mut i2, mut w2) = (alloc::<i32>(&s, pairs), alloc::<f32>(&s, pairs));
        timed.push(Timed {
            name: format!("gating_f32/T={t}"),
            launch: Box::new(move || {
                launch::moe_gating_topk(
                    &lib,
                    &s,
                    &logits,
                    Some(&bias),
                    &mut i2,
                    &mut w2,
                    t,
                    e,
                    &GATING,
                )
                .expect("gating");
            }),
        });
    }

    // Dispatch to every expert, plain and int8.
    let x = bf16s(s, t * h, seed + 10, 1.0);
    let all = RoutingShape {
        tokens: t,
        hidden: h,
        top_k: k,
        experts: e,
        active: None,
        mode: MoeList::Count,
    };
    let mut ex = alloc::<bf16>(s, pairs * h);
    let mut row_idx = alloc::<i32>(s, pairs);
    let mut counts = alloc::<i64>(s, e);
    let l = launch::moe_init_routing(lib, s, &x, &ids, &mut ex, &mut row_idx, &mut counts, &all)
        .expect("dispatch");
    let index_bytes = 4 * pairs as u64 * 2 + 8 * e as u64;
    rows.push(Row {
        kernel: "dispatch (bf16)",
        tokens: t,
        min_bytes: (t * h) as u64 * B + pairs as u64 * h as u64 * B + index_bytes,
        min_macs: 0,
        c: counters(s, l.symbol),
    });
    let mut q = alloc::<i8>(s, pairs * h);
    let mut scales = alloc::<f32>(s, pairs);
    let (mut ri2, mut c2) = (alloc::<i32>(s, pairs), alloc::<i64>(s, e));
    let l = launch::moe_init_routing_quant(
        lib,
        s,
        &x,
        &ids,
        &mut q,
        &mut scales,
        &mut ri2,
        &mut c2,
        &all,
    )
    .expect("int8 dispatch");
    rows.push(Row {
        kernel: "dispatch int8",
        tokens: t,
        min_bytes: (t * h) as u64 * B + pairs as u64 * (h as u64 + 4) + index_bytes,
        min_macs: 0,
        c: counters(s, l.symbol),
    });
    {
        let (lib, s2) = (lib.clone(), s.clone());
        let (x, ids) = (bf16s(s, t * h, seed + 10, 1.0), ids_copy(s, &ids));
        let all = all.clone();
        timed.push(Timed {
            name: format!("dispatch_bf16/T={t}"),
            launch: Box::new(move || {
                launch::moe_init_routing(&lib, &s2, &x, &ids, &mut ex, &mut ri2, &mut c2, &all)
                    .expect("dispatch");
            }),
        });
    }
    {
        let (lib, s2) = (lib.clone(), s.clone());
        let (x, ids) = (bf16s(s, t * h, seed + 10, 1.0), ids_copy(s, &ids));
        let all = all.clone();
        let (mut ri3, mut c3) = (alloc::<i32>(s, pairs), alloc::<i64>(s, e));
        timed.push(Timed {
            name: format!("dispatch_int8/T={t}"),
            launch: Box::new(move || {
                launch::moe_init_routing_quant(
                    &lib,
                    &s2,
                    &x,
                    &ids,
                    &mut q,
                    &mut scales,
                    &mut ri3,
                    &mut c3,
                    &all,
                )
                .expect("int8 dispatch");
            }),
        });
    }

    // Combine the T·K dispatched rows (standing in for the experts' outputs), alone and with the
    // shared-expert output and the residual fused in.
    let y = bf16s(s, pairs * h, seed + 20, 1.0);
    let (shared, residual) = (
        bf16s(s, t * h, seed + 30, 1.0),
        bf16s(s, t * h, seed + 40, 1.0),
    );
    let shape = CombineShape {
        tokens: t,
        hidden: h,
        top_k: k,
        rows: pairs,
    };
    let mut out = alloc::<bf16>(s, t * h);
    let pair_bytes = 8 * pairs as u64;
    let row_bytes = (pairs * h) as u64 * B + pair_bytes + (t * h) as u64 * B;
    for (name, extras) in [("combine (bf16)", false), ("combine+shared+resid", true)] {
        let (sh, re) = if extras {
            (Some(&shared), Some(&residual))
        } else {
            (None, None)
        };
        let l =
            launch::moe_finalize_routing(lib, s, &y, &row_idx, &weights, sh, re, &mut out, shape)
                .expect("combine");
        rows.push(Row {
            kernel: name,
            tokens: t,
            min_bytes: row_bytes + if extras { 2 * (t * h) as u64 * B } else { 0 },
            min_macs: 0,
            c: counters(s, l.symbol),
        });
    }
    {
        let (lib, s) = (lib.clone(), s.clone());
        timed.push(Timed {
            name: format!("combine_bf16/T={t}"),
            launch: Box::new(move || {
                launch::moe_finalize_routing(
                    &lib,
                    &s,
                    &y,
                    &row_idx,
                    &weights,
                    Some(&shared),
                    Some(&residual),
                    &mut out,
                    shape,
                )
                .expect("combine");
            }),
        });
    }

    // The FFN of this rank's experts over the rows dispatched to them.
    let local = RoutingShape {
        active: Some(0..LOCAL),
        ..all
    };
    let mut lx = alloc::<bf16>(s, pairs * h);
    let (mut lri, mut lcounts) = (alloc::<i32>(s, pairs), alloc::<i64>(s, e));
    launch::moe_init_routing(lib, s, &x, &ids, &mut lx, &mut lri, &mut lcounts, &local)
        .expect("local dispatch");
    let per_expert = lcounts.to_vec().expect("counts");
    let r_local: u64 = per_expert.iter().sum::<i64>() as u64;
    let busy = per_expert.iter().filter(|&&c| c > 0).count() as u64;
    let wscale = (3.0 / h as f32).sqrt();
    let wg = bf16s(s, LOCAL * INTER * h, 50, wscale);
    let wu = bf16s(s, LOCAL * INTER * h, 51, wscale);
    let wd = bf16s(s, LOCAL * h * INTER, 52, (3.0 / INTER as f32).sqrt());
    let mut fy = alloc::<bf16>(s, pairs * h);
    let ffn = FfnShape {
        rows: pairs,
        groups: LOCAL,
        // Top-k picks distinct experts: an expert gets each token at most once.
        max_group_rows: t,
        hidden: h,
        inter: INTER,
    };
    let list = GroupList::all(&lcounts, MoeList::Count);
    let l = launch::expert_ffn(lib, s, &lx, &wg, &wu, &wd, list, &mut fy, ffn).expect("ffn");
    rows.push(Row {
        kernel: "expert FFN (8 local)",
        tokens: t,
        min_bytes: 2 * r_local * h as u64 * B
            + busy * 3 * (INTER * h) as u64 * B
            + 8 * LOCAL as u64,
        min_macs: 3 * r_local * (h * INTER) as u64,
        c: counters(s, l.symbol),
    });
    if t == 1 {
        let (lib, s) = (lib.clone(), s.clone());
        timed.push(Timed {
            name: format!("expert_ffn_bf16/T={t}"),
            launch: Box::new(move || {
                let list = GroupList::all(&lcounts, MoeList::Count);
                launch::expert_ffn(&lib, &s, &lx, &wg, &wu, &wd, list, &mut fy, ffn).expect("ffn");
            }),
        });
    }
    timed
}

/// A device copy of an id buffer (so a criterion case owns its inputs).
fn ids_copy(s: &Stream, ids: &DeviceBuffer<i32>) -> DeviceBuffer<i32> {
    let mut c = alloc::<i32>(s, ids.len());
    s.memcpy_dtod(ids, &mut c).expect("copy");
    c
}

fn moe_kernels(c: &mut Criterion) {
    let device = Device::new(0).expect("device 0");
    // Tile for a real 910B2 whatever the simulator's configuration, so the counters are the NPU's.
    let lib = KernelLibrary::load_with(&device, Hardware::ASCEND_910B2).expect("load kernels");
    let stream = device.new_stream().expect("stream");
    let mut rows = Vec::new();
    let mut timed = Vec::new();
    for t in TOKENS {
        timed.extend(stages(&lib, &stream, t, &mut rows));
    }

    println!(
        "\ndsnpu MoE kernels, DeepSeek-V3 shapes (H {HIDDEN}, E {EXPERTS}, top-{TOP_K}, I {INTER}), bf16; \
         modelled on one 910B2 die (see the bench docs)\n"
    );
    println!(
        "| kernel                 |   T | blocks |   GM read B |  GM write B |   minimal B | ratio |   cube MACs |    vec ops | UB peak | t_mem µs | units µs | bound  |  roof µs | x roof |  pipes µs | bound   | busy                         |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = BenchReport::new("moe_kernels");
    for r in &rows {
        json.cases.push(print_row(r));
    }
    println!();
    let path = json
        .write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("write the bench report");
    println!("report: {}\n", path.display());

    let mut g = c.benchmark_group("moe_kernels_on_simulator");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for case in &mut timed {
        g.bench_function(&case.name, |b| {
            b.iter(|| {
                (case.launch)();
                stream.synchronize().expect("kernel");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, moe_kernels);
criterion_main!(benches);
