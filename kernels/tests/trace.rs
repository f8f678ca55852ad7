//! The cost model's timeline (`DSNPU_SIM_TRACE`, `dsnpu_host/trace.h`): a traced block's records add up
//! to its launch counters, and only the block and kernel asked for are traced.
//!
//! This test binary holds one test: the variables it sets reach no launch of another test.
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, KernelDtype, RmsNormTiling, SiluMulTiling};

#[test]
fn a_traced_block_writes_records_that_add_up_to_its_counters() {
    let path = std::env::temp_dir().join(format!("dsnpu-trace-{}.csv", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var("DSNPU_SIM_TRACE", &path);
    std::env::set_var("DSNPU_SIM_TRACE_KERNEL", "rms_norm");
    std::env::set_var("DSNPU_SIM_TRACE_BLOCK", "1");
    let four = CoreBudget {
        cores: 4,
        ub_bytes: UB_910B,
    };
    // rms_norm over 4 blocks of 2 rows (block 1 traced), then silu_mul (another kernel: not traced).
    let t = RmsNormTiling::new(8, 64, 1e-6, KernelDtype::F32, false, four).unwrap();
    assert_eq!(t.block_dim(), 4);
    let mut dev = Device::new();
    let x: Vec<f32> = (0..8 * 64).map(|i| (i % 7) as f32 - 3.0).collect();
    let (x, w, y) = (
        dev.upload(&x),
        dev.upload(&[1.0f32; 64]),
        dev.alloc(8 * 64 * 4),
    );
    let gt = dev.upload_tiling(&t);
    let out = dev.launch(
        "rms_norm_f32",
        4,
        &args(&dev, &[Some(x), Some(w), Some(y)], gt),
    );
    out.assert_ok();
    let s = SiluMulTiling::new(1, 8, KernelDtype::F32, four).unwrap();
    let (gu, o) = (dev.upload(&[0.5f32; 16]), dev.alloc(32));
    let gs = dev.upload_tiling(&s);
    dev.launch("silu_mul_f32", 1, &args(&dev, &[Some(gu), Some(o)], gs))
        .assert_ok();
    std::env::remove_var("DSNPU_SIM_TRACE");

    let text = std::fs::read_to_string(&path).expect("the trace file");
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("kind,kernel,block,core,pipe,op,start,cycles,latency")
    );
    let pipes = ["S", "V", "M", "MTE1", "MTE2", "MTE3", "FIX"];
    let (mut busy, mut end, mut waits) = ([0.0f64; 7], 0.0f64, 0);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 9, "{line}");
        assert_eq!((f[1], f[2], f[3]), ("rms_norm_f32", "1", "0"), "{line}");
        let p = pipes.iter().position(|&n| n == f[4]).expect("a pipe name");
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        let (start, cycles, latency) = (num(6), num(7), num(8));
        assert!(start >= 0.0 && cycles >= 0.0 && latency >= 0.0, "{line}");
        match f[0] {
            "I" => {
                busy[p] += cycles;
                end = end.max(start + cycles + latency);
            }
            "W" => {
                assert_eq!(f[5], "wait", "{line}");
                waits += 1;
                end = end.max(start + cycles);
            }
            k => panic!("record kind {k}: {line}"),
        }
    }
    // The counters of block 1: reserved[0] model cycles, reserved[1] 8-bit busy fractions per pipe.
    let c = out.counters[1];
    let (cycles, q8) = (c.reserved[0], c.reserved[1]);
    assert!(cycles > 0 && busy[4] > 0.0 && busy[1] > 0.0, "{busy:?}");
    assert_eq!(end.round() as u64, cycles);
    for (p, b) in busy.iter().enumerate() {
        let want = ((b / cycles as f64).min(1.0) * 255.0).round() as u64;
        assert_eq!((q8 >> (8 * p)) & 0xFF, want, "pipe {}", pipes[p]);
    }
    // The vector unit waits for its first rows (the copy's latency).
    assert!(waits > 0);
}
