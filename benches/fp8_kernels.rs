//! The FP8-weight GEMM (`linear_fp8_bf16`: e4m3 codes + 128×128 block scales, dequantized 512 columns
//! of K at a time into a per-vector-core bf16 panel) against `linear_bf16` on bf16 weights of the same values, at
//! DeepSeek-V3 decode shapes (16 tokens), on the simulator with a 910B2's cores.
//!
//! Run: `DSNPU_SIM_CHECK=mem cargo bench --bench fp8_kernels`. Per case it prints and writes to
//! `target/bench-reports/fp8_kernels.json`: the GM bytes the kernel issued (host Ascend C layer's
//! counters) against the minimal bytes of the operator in that weight format (x, the weights as stored
//! — codes and scales for FP8 —, y, each once), the device bytes the weights occupy, and the cycle
//! model's time next to the roofline. The FP8 kernel's panel round trip (each weight element written as
//! bf16 and read back by the cube, per m-tile) counts as GM traffic; the JSON's `hbm_read_bytes` /
//! `hbm_write_bytes` are the part of it the host layer's L2 model sends to HBM. Criterion is not used:
//! the counters are the figures.

use dsnpu_kernels::bench_report::{BenchCase, BenchReport};
use dsnpu_kernels::cost_model::PipeModel;
use dsnpu_kernels::launch::{self, Fp8Weights, Hardware, KernelLibrary};
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_runtime::sim_counters;
use dsnpu_runtime::Device;
use half::bf16;

/// e4m3fn's value (no NaN is generated here).
fn e4m3(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((code >> 3) & 0xf);
    let mant = f32::from(code & 7);
    sign * if exp == 0 {
        mant / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f32.powi(exp - 7)
    }
}

fn main() {
    let device = Device::new(0).expect("device 0");
    let lib = KernelLibrary::load_with(&device, Hardware::ASCEND_910B2).expect("load kernels");
    let s = device.new_stream().expect("stream");
    let m = 16;
    let shapes = [
        ("q_a_proj", 1536usize, 7168usize),
        ("o_proj", 7168, 16384),
        ("kv_a_proj", 576, 7168),
    ];
    println!("\nFP8 vs bf16 weights, linear at m = {m}, bf16 activations; 910B2 cores (see the bench docs)\n");
    println!("| case | kernel | weight bytes on device | GM read B | GM write B | minimal B | ratio | model µs | roof µs |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut json = BenchReport::new("fp8_kernels");
    for (name, n, k) in shapes {
        let codes: Vec<u8> = (0..n * k)
            .map(|i| {
                let c = (i.wrapping_mul(2654435761) >> 7) as u8;
                if c & 0x7f == 0x7f {
                    0x38
                } else {
                    c & 0xbf // keep magnitudes moderate
                }
            })
            .collect();
        let (sn, sk) = (n.div_ceil(128), k.div_ceil(128));
        let scale: Vec<f32> = (0..sn * sk)
            .map(|i| 1e-3 * (1.0 + (i % 7) as f32))
            .collect();
        let wbf: Vec<bf16> = (0..n * k)
            .map(|i| bf16::from_f32(e4m3(codes[i]) * scale[(i / k / 128) * sk + i % k / 128]))
            .collect();
        let x: Vec<bf16> = (0..m * k)
            .map(|i| bf16::from_f32(((i % 13) as f32 - 6.0) / 8.0))
            .collect();
        let gx = s.upload(&x).expect("x");
        let (gc, gs) = (
            s.upload(&codes).expect("codes"),
            s.upload(&scale).expect("scales"),
        );
        let gw = s.upload(&wbf).expect("bf16 weights");
        let mut y = s.alloc::<bf16>(m * n).expect("y");
        let io = (2 * m * k + 2 * m * n) as u64;
        for fp8 in [true, false] {
            let (symbol, weight_bytes) = if fp8 {
                let w = Fp8Weights {
                    codes: &gc,
                    scale: &gs,
                };
                let l = launch::linear_fp8(&lib, &s, &gx, w, &mut y, m, n, k).expect("launch");
                (l.symbol, (n * k + 4 * sn * sk) as u64)
            } else {
                let l = launch::linear(&lib, &s, &gx, &gw, None, &mut y, m, n, k).expect("launch");
                (l.symbol, (2 * n * k) as u64)
            };
            s.synchronize().expect("kernel");
            let c = sim_counters::last_launch_counters(&s)
                .expect("counters")
                .expect("a launch");
            assert_eq!((c.kernel.as_str(), c.status), (symbol, 0));
            let model = sim_counters::last_launch_model(&s)
                .expect("counters")
                .expect("a launch");
            let pipes = PipeModel {
                cycles: model.cycles,
                pipe_busy: model.pipe_busy,
            };
            let t = c.totals;
            let minimal = io + weight_bytes;
            let macs = (m * n * k) as u64;
            let roof = ASCEND_910B2.roofline(minimal, macs) * 1e6;
            println!(
                "| {name} {m}x{n}x{k} | {symbol} | {weight_bytes} | {} | {} | {minimal} | {:.2} | {:.2} | {:.2} |",
                t.gm_to_ub_bytes,
                t.ub_to_gm_bytes,
                t.gm_bytes() as f64 / minimal as f64,
                pipes.model_us(),
                roof
            );
            json.cases.push(BenchCase {
                kernel: symbol.to_string(),
                shape: format!("{name} [{m}, {k}] x [{n}, {k}]^T"),
                dtype: "bf16".into(),
                gm_read_bytes: t.gm_to_ub_bytes,
                gm_write_bytes: t.ub_to_gm_bytes,
                minimal_bytes: minimal,
                cube_macs: t.cube_macs,
                vector_ops: t.vector_elem_ops,
                model_us: pipes.model_us(),
                roof_us: roof,
                bound: pipes.bound().into(),
                hbm_read_bytes: Some(t.hbm_read_bytes),
                hbm_write_bytes: Some(t.hbm_write_bytes),
            });
        }
    }
    let path = json
        .write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("write the bench report");
    println!("\nreport: {}\n", path.display());
}
