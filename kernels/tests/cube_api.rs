//! The cube core's basic instructions of the host layer (`dsnpu_host/cube.h`): DataCopy GM -> L1 with
//! the ND-to-NZ conversion, LoadData L1 -> L0A/L0B with and without fractal transposes, Mmad and Fixpipe,
//! run by `selftest_cube` (`src/ascendc/selftest_cube.cpp`) on shapes that are not multiples of 16 (the
//! padding of every layout is exercised). The expected C is computed here from the inputs: they are small
//! integers, so every product and sum is exact in f32 and the results must match bit for bit (after the
//! one rounding to the output type that Fixpipe does).
mod common;

use common::*;
use dsnpu_kernels::SelftestTiling;
use half::{bf16, f16};

/// `selftest_cube` in `mode` with A [m, k] and B ([n, k] when `b_trans`, else [k, n]) as raw elements:
/// (outcome, C as `out_elem_bytes`-byte words).
fn run<T: Pod>(
    mode: u32,
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    out_elem_bytes: usize,
) -> (Outcome, Vec<u8>) {
    let mut dev = Device::new();
    let (ga, gb) = (dev.upload(a), dev.upload(b));
    let gout = dev.upload(&vec![0u16; m * n * out_elem_bytes / 2]);
    let ws = dev.alloc(dsnpu_kernels::SYS_WORKSPACE_BYTES as usize);
    let t = dev.upload_tiling(&SelftestTiling {
        mode,
        count: ((m as u32) << 16) | k as u32,
        arg: n as u32,
        reserved: 0,
    });
    let out = dev.launch(
        "selftest_cube",
        1,
        &[
            dev.addr(ga),
            dev.addr(gb),
            dev.addr(gout),
            dev.addr(ws),
            dev.addr(t),
        ],
    );
    let words: Vec<u16> = dev.download(gout);
    (out, words.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// Small integers in [-4, 4], varied by `seed`: exact in every 16-bit type.
fn ints(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed * 13) % 9) as f32 - 4.0)
        .collect()
}

/// C = A B with B given as [n, k] (`b_trans`) or [k, n], in f64 (exact here).
fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, b_trans: bool) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|kk| {
                    let bv = if b_trans {
                        b[j * k + kk]
                    } else {
                        b[kk * n + j]
                    };
                    a[i * k + kk] as f64 * bv as f64
                })
                .sum();
        }
    }
    c
}

/// `v` exactly in half and in bf16 (small integers).
fn halves(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn bf16s(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// [`matmul`] as f32 (exact for these inputs).
fn exact(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, b_trans: bool) -> Vec<f32> {
    matmul(a, b, m, k, n, b_trans)
        .iter()
        .map(|&v| v as f32)
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

// (m, k, n): B of the third fills most of L0B (64 KiB) in 16-bit; f32 takes half its k.
const SHAPES: &[(usize, usize, usize)] = &[(30, 70, 50), (16, 16, 16), (1, 192, 128), (64, 40, 33)];
const F32_SHAPES: &[(usize, usize, usize)] =
    &[(30, 70, 50), (16, 16, 16), (1, 96, 128), (64, 40, 33)];

#[test]
fn half_with_b_transposed_in_gm_loads_b_fractals_as_they_are() {
    for &(m, k, n) in SHAPES {
        let (a, b) = (ints(m * k, 1), ints(n * k, 2));
        let (ah, bh) = (halves(&a), halves(&b));
        let (out, c) = run(0, m, k, n, &ah, &bh, 4);
        out.assert_ok();
        assert_eq!(f32s(&c), exact(&a, &b, m, k, n, true), "{m}x{k}x{n}");
        let tot = out.total();
        assert_eq!(tot.cube_macs, (m * n * k) as u64);
        // ND2NZ reads A and B once; Fixpipe writes C once.
        assert_eq!(tot.gm_to_ub_bytes, ((m * k + n * k) * 2) as u64);
        assert_eq!(tot.ub_to_gm_bytes, (m * n * 4) as u64);
    }
}

#[test]
fn half_with_b_in_gm_order_transposes_each_fractal_on_the_way_to_l0b() {
    for &(m, k, n) in SHAPES {
        let (a, b) = (ints(m * k, 3), ints(k * n, 4));
        let (ah, bh) = (halves(&a), halves(&b));
        let (out, c) = run(1, m, k, n, &ah, &bh, 4);
        out.assert_ok();
        assert_eq!(f32s(&c), exact(&a, &b, m, k, n, false), "{m}x{k}x{n}");
    }
}

#[test]
fn bf16_accumulates_in_l0c_and_fixpipe_rounds_to_bf16() {
    for &(m, k, n) in SHAPES {
        // Sums up to 2 * 16 * 192 need more than bf16's 8 significant bits: the rounding is exercised.
        let (a, b) = (ints(m * k, 5), ints(n * k, 6));
        let (ab, bb) = (bf16s(&a), bf16s(&b));
        let (out, c) = run(2, m, k, n, &ab, &bb, 2);
        out.assert_ok();
        let want: Vec<u16> = matmul(&a, &b, m, k, n, true)
            .iter()
            .map(|&v| bf16::from_f32((2.0 * v) as f32).to_bits())
            .collect();
        assert_eq!(u16s(&c), want, "{m}x{k}x{n}");
        assert_eq!(out.total().cube_macs, (2 * m * n * k) as u64);
    }
}

#[test]
fn bf16_inputs_with_a_half_result() {
    let (m, k, n) = (30, 70, 50);
    let (a, b) = (ints(m * k, 7), ints(k * n, 8));
    let (ab, bb) = (bf16s(&a), bf16s(&b));
    let (out, c) = run(3, m, k, n, &ab, &bb, 2);
    out.assert_ok();
    let want: Vec<u16> = matmul(&a, &b, m, k, n, false)
        .iter()
        .map(|&v| f16::from_f32(v as f32).to_bits())
        .collect();
    assert_eq!(u16s(&c), want);
}

#[test]
fn f32_uses_eight_column_fractals() {
    for &(m, k, n) in F32_SHAPES {
        let (a, b) = (ints(m * k, 9), ints(n * k, 10));
        let (out, c) = run(4, m, k, n, &a, &b, 4);
        out.assert_ok();
        assert_eq!(f32s(&c), exact(&a, &b, m, k, n, true), "{m}x{k}x{n}");
    }
}

#[test]
fn fixpipe_under_set_atomic_add_adds_to_gm() {
    // C out once as a store, then again with SetAtomicAdd<float>: 2 A B^T, exact in f32.
    for &(m, k, n) in SHAPES {
        let (a, b) = (ints(m * k, 5), ints(n * k, 6));
        let (ah, bh) = (halves(&a), halves(&b));
        let (out, c) = run(8, m, k, n, &ah, &bh, 4);
        out.assert_ok();
        let want: Vec<f32> = exact(&a, &b, m, k, n, true)
            .iter()
            .map(|x| 2.0 * x)
            .collect();
        assert_eq!(f32s(&c), want, "{m}x{k}x{n}");
    }
    // An atomic mode of another type than the f32 Fixpipe moves.
    let (m, k, n) = (16, 16, 16);
    let ah = halves(&ints(m * k, 1));
    let (out, _) = run(9, m, k, n, &ah, &ah, 4);
    let msg = out.only_failure();
    assert!(
        msg.starts_with("Fixpipe: the core's atomic mode (SetAtomicAdd<half>) is for another type than the 4-byte"),
        "{msg}"
    );
}

#[test]
fn misuse_is_a_fault_that_names_the_instruction() {
    let (m, k, n) = (16, 16, 16);
    let a = ints(m * k, 1);
    let ah = halves(&a);
    let (out, _) = run(5, m, k, n, &a, &a, 4);
    let msg = out.only_failure();
    assert!(
        msg.starts_with("LoadData: ifTranspose") && msg.contains("4-byte"),
        "{msg}"
    );
    let (out, _) = run(6, m, k, n, &ah, &ah, 4);
    let msg = out.only_failure();
    assert!(
        msg.starts_with("Mmad: B is in L1") && msg.contains("L0B"),
        "{msg}"
    );
    let (out, _) = run(7, m, k, n, &ah, &ah, 4);
    let msg = out.only_failure();
    assert!(
        msg.starts_with("TPipe::InitBuffer") && msg.contains("exceed L1's 524288 bytes"),
        "{msg}"
    );
}
