//! The FP8-weight GEMMs (`linear_fp8_<t>`, `grouped_matmul_fp8_<t>`, `expert_ffn_fp8_<t>`) through their
//! launchers, the runtime and the simulator with every sanitizer check on (`.cargo/config.toml`): each
//! result against a CPU reference that decodes the same e4m3 codes itself (sign, exponent bias 7,
//! subnormals), multiplies by the 128×128 block scales in f32, rounds to the activation type and
//! accumulates in f64. Shapes are ragged (N and K not multiples of 128) and span several 128-blocks in
//! both directions; the codes include zero, negative zero, every subnormal, ±448 and negative values.
//! Each launch must finish with status 0 and no sanitizer warning.

use std::sync::Arc;

use dsnpu_kernels::launch::{
    self, FfnShape, Fp8Weights, GroupList, GroupedShape, Hardware, KernelElem, KernelLibrary,
};
use dsnpu_kernels::{KernelError, MoeList};
use dsnpu_runtime::{sim_counters, Device, DeviceBuffer, Stream};
use half::{bf16, f16};

fn setup(hw: Hardware) -> (Arc<KernelLibrary>, Stream) {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::load_with(&dev, hw).unwrap();
    let s = dev.new_stream().unwrap();
    (lib, s)
}

/// The last launch on `s` completed cleanly: no fault, no sanitizer warning.
fn assert_clean(s: &Stream, symbol: &str) {
    s.synchronize().unwrap();
    let c = sim_counters::last_launch_counters(s).unwrap().unwrap();
    assert_eq!((c.kernel.as_str(), c.status, c.warnings), (symbol, 0, 0));
}

/// An activation type: conversions and the relative size of half an ulp.
trait Act: KernelElem + Copy {
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    const EPS: f64;
}
impl Act for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    const EPS: f64 = 6e-8;
}
impl Act for f16 {
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const EPS: f64 = 4.9e-4;
}
impl Act for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const EPS: f64 = 3.9e-3;
}

/// e4m3fn decoded from its fields, in f64 (written here independently of the model's decoder).
fn e4m3(code: u8) -> f64 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((code >> 3) & 0xf);
    let mant = f64::from(code & 7);
    assert!(code & 0x7f != 0x7f, "NaN codes are never generated");
    sign * if exp == 0 {
        mant / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f64.powi(exp - 7)
    }
}

/// A small deterministic generator (64-bit LCG).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn unit(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
}

/// An FP8 weight on the host: codes `[groups, n, k]`, scales `[groups, ceil(n/128), ceil(k/128)]`.
struct HostFp8 {
    codes: Vec<u8>,
    scale: Vec<f32>,
    n: usize,
    k: usize,
}

impl HostFp8 {
    /// Random finite codes with the special ones sprinkled in (zero, -0, all subnormals, ±448), and
    /// block scales of varied magnitude (one negative).
    fn random(groups: usize, n: usize, k: usize, seed: u64) -> Self {
        let mut r = Rng(seed);
        let specials = [
            0x00u8, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x81, 0x87, 0x7e, 0xfe, 0x08,
            0x88,
        ];
        let codes = (0..groups * n * k)
            .map(|i| {
                if i % 7 == 3 {
                    specials[(i / 7) % specials.len()]
                } else {
                    loop {
                        let c = (r.next() & 0xff) as u8;
                        if c & 0x7f != 0x7f {
                            break c;
                        }
                    }
                }
            })
            .collect();
        let sl = groups * n.div_ceil(128) * k.div_ceil(128);
        let scale = (0..sl)
            .map(|i| {
                let m =
                    2f32.powi(-((r.next() % 10) as i32) - 4) * (1.0 + (r.next() % 8) as f32 / 8.0);
                if i == 1 {
                    -m
                } else {
                    m
                }
            })
            .collect();
        HostFp8 { codes, scale, n, k }
    }

    /// The dequantized weight as the device sees it: `e4m3 · scale` rounded to f32, then to `T`.
    fn dequant<T: Act>(&self) -> Vec<f64> {
        let (sn, sk) = (self.n.div_ceil(128), self.k.div_ceil(128));
        (0..self.codes.len())
            .map(|i| {
                let (g, r, c) = (i / (self.n * self.k), i / self.k % self.n, i % self.k);
                let s = self.scale[(g * sn + r / 128) * sk + c / 128];
                let w = (e4m3(self.codes[i]) * f64::from(s)) as f32;
                T::from_f32(w).to_f64()
            })
            .collect()
    }

    fn upload(&self, s: &Stream) -> (DeviceBuffer<u8>, DeviceBuffer<f32>) {
        (
            s.upload(&self.codes).unwrap(),
            s.upload(&self.scale).unwrap(),
        )
    }
}

fn random_act<T: Act>(len: usize, seed: u64) -> Vec<T> {
    let mut r = Rng(seed);
    (0..len).map(|_| T::from_f32(r.unit() * 2.0)).collect()
}

/// `(value, sum of |terms|)` of row `i` of `x [*, k]` times row `j` of `w [*, k]`.
fn dot(x: &[f64], w: &[f64], k: usize, i: usize, j: usize) -> (f64, f64) {
    (0..k).fold((0.0, 0.0), |(s, a), kk| {
        let p = x[i * k + kk] * w[j * k + kk];
        (s + p, a + p.abs())
    })
}

/// `got` within f32 accumulation over `k` terms plus the rounding to `T` of the result.
fn check<T: Act>(what: &str, got: &[T], want: &[f64], scale: &[f64], k: usize) {
    assert_eq!(got.len(), want.len(), "{what}");
    let mut nonzero = 0;
    for (i, ((g, w), a)) in got.iter().zip(want).zip(scale).enumerate() {
        let g = g.to_f64();
        let tol = a * (k as f64 * 6e-8) + w.abs() * T::EPS + 1e-30;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
        nonzero += usize::from(*w != 0.0);
    }
    assert!(nonzero > want.len() / 2, "{what}: a degenerate reference");
}

fn linear_case<T: Act>(lib: &KernelLibrary, s: &Stream, m: usize, n: usize, k: usize, seed: u64) {
    let w = HostFp8::random(1, n, k, seed);
    let x: Vec<T> = random_act(m * k, seed + 1);
    let (codes, scale) = w.upload(s);
    let gx = s.upload(&x).unwrap();
    let mut gy = s.alloc::<T>(m * n).unwrap();
    let l = launch::linear_fp8(
        lib,
        s,
        &gx,
        Fp8Weights {
            codes: &codes,
            scale: &scale,
        },
        &mut gy,
        m,
        n,
        k,
    )
    .unwrap();
    assert_clean(s, l.symbol);
    let xf: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let wf = w.dequant::<T>();
    let (mut want, mut abs) = (Vec::new(), Vec::new());
    for i in 0..m {
        for j in 0..n {
            let (v, a) = dot(&xf, &wf, k, i, j);
            want.push(v);
            abs.push(a);
        }
    }
    check(
        &format!("{} {m}x{n}x{k}", l.symbol),
        &gy.to_vec().unwrap(),
        &want,
        &abs,
        k,
    );
}

fn linear_all<T: Act>() {
    let (lib, s) = setup(Hardware::with_cores(4, 8));
    for (i, &(m, n, k)) in [(5, 300, 200), (1, 129, 257), (33, 64, 384), (3, 16, 16)]
        .iter()
        .enumerate()
    {
        linear_case::<T>(&lib, &s, m, n, k, 100 + i as u64);
    }
}

#[test]
fn linear_fp8_matches_the_dequantized_reference_in_every_dtype() {
    linear_all::<f32>();
    linear_all::<f16>();
    linear_all::<bf16>();
}

fn grouped_case<T: Act>(lib: &KernelLibrary, s: &Stream) {
    let (groups, n, k) = (3, 136, 260);
    let counts = [4i64, 0, 7];
    let rows = 11;
    let w = HostFp8::random(groups, n, k, 7);
    let x: Vec<T> = random_act(rows * k, 8);
    let (codes, scale) = w.upload(s);
    let gx = s.upload(&x).unwrap();
    let list = s.upload(&counts).unwrap();
    let mut gy = s.alloc::<T>(rows * n).unwrap();
    let shape = GroupedShape { rows, groups, n, k };
    let l = launch::grouped_matmul_fp8(
        lib,
        s,
        &gx,
        Fp8Weights {
            codes: &codes,
            scale: &scale,
        },
        GroupList::all(&list, MoeList::Count),
        &mut gy,
        shape,
    )
    .unwrap();
    assert_clean(s, l.symbol);
    let xf: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let wf = w.dequant::<T>();
    let (mut want, mut abs) = (Vec::new(), Vec::new());
    let mut row = 0;
    for (g, &c) in counts.iter().enumerate() {
        for _ in 0..c {
            for j in 0..n {
                let (v, a) = dot(&xf, &wf, k, row, g * n + j);
                want.push(v);
                abs.push(a);
            }
            row += 1;
        }
    }
    check(l.symbol, &gy.to_vec().unwrap(), &want, &abs, k);
}

#[test]
fn grouped_matmul_fp8_matches_the_dequantized_reference_in_every_dtype() {
    let (lib, s) = setup(Hardware::with_cores(4, 8));
    grouped_case::<f32>(&lib, &s);
    grouped_case::<f16>(&lib, &s);
    grouped_case::<bf16>(&lib, &s);
}

/// With a list: three experts, one empty, one row past the groups' total (left as it was). Without
/// (`dense`): one group of every row, as a dense MLP or shared expert runs.
fn ffn_case<T: Act>(lib: &KernelLibrary, s: &Stream, dense: bool) {
    let (hidden, inter) = (144, 136);
    let (counts, rows): (Vec<i64>, usize) = if dense {
        (vec![7], 7)
    } else {
        (vec![3, 0, 5], 9)
    };
    let groups = counts.len();
    let gate = HostFp8::random(groups, inter, hidden, 11);
    let up = HostFp8::random(groups, inter, hidden, 12);
    let down = HostFp8::random(groups, hidden, inter, 13);
    let x: Vec<T> = random_act(rows * hidden, 14);
    let (gc, gs) = gate.upload(s);
    let (uc, us) = up.upload(s);
    let (dc, ds) = down.upload(s);
    let gx = s.upload(&x).unwrap();
    let list = s.upload(&counts).unwrap();
    let sentinel = T::from_f32(-7.0);
    let mut gy = s.upload(&vec![sentinel; rows * hidden]).unwrap();
    let shape = FfnShape {
        rows,
        groups,
        max_group_rows: rows,
        hidden,
        inter,
    };
    let l = launch::expert_ffn_fp8(
        lib,
        s,
        &gx,
        Fp8Weights {
            codes: &gc,
            scale: &gs,
        },
        Fp8Weights {
            codes: &uc,
            scale: &us,
        },
        Fp8Weights {
            codes: &dc,
            scale: &ds,
        },
        (!dense).then(|| GroupList::all(&list, MoeList::Count)),
        &mut gy,
        shape,
    )
    .unwrap();
    assert_clean(s, l.symbol);
    let xf: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let (wg, wu, wd) = (gate.dequant::<T>(), up.dequant::<T>(), down.dequant::<T>());
    let (mut want, mut abs) = (Vec::new(), Vec::new());
    let mut row = 0;
    for (g, &c) in counts.iter().enumerate() {
        for _ in 0..c {
            // h rounded to T once, as the kernel does; its rounding is in the tolerance below.
            let h: Vec<f64> = (0..inter)
                .map(|j| {
                    let gv = dot(&xf, &wg, hidden, row, g * inter + j).0;
                    let uv = dot(&xf, &wu, hidden, row, g * inter + j).0;
                    let v = gv / (1.0 + (-gv).exp()) * uv;
                    T::from_f32(v as f32).to_f64()
                })
                .collect();
            for j in 0..hidden {
                let (v, a) = dot(&h, &wd, inter, 0, g * hidden + j);
                want.push(v);
                // Each h may sit one rounding of T (and the f32 gate/up sums) away from the kernel's.
                abs.push(a * (1.0 + 2.0 * T::EPS / (inter as f64 * 6e-8)));
            }
            row += 1;
        }
    }
    let got = gy.to_vec().unwrap();
    let used = row * hidden;
    check(l.symbol, &got[..used], &want, &abs, inter + hidden);
    assert!(
        got[used..].iter().all(|v| v.to_f64() == -7.0),
        "{}: rows past the total were written",
        l.symbol
    );
}

#[test]
fn expert_ffn_fp8_matches_the_dequantized_reference_in_every_dtype() {
    let (lib, s) = setup(Hardware::with_cores(3, 6));
    for dense in [false, true] {
        ffn_case::<f32>(&lib, &s, dense);
        ffn_case::<f16>(&lib, &s, dense);
        ffn_case::<bf16>(&lib, &s, dense);
    }
    // Several groups need their list.
    let z = s.upload(&[0u8; 2 * 16 * 16]).unwrap();
    let sc = s.upload(&[1.0f32; 2]).unwrap();
    let w = Fp8Weights {
        codes: &z,
        scale: &sc,
    };
    let x = s.upload(&[0.0f32; 16]).unwrap();
    let mut y = s.alloc::<f32>(16).unwrap();
    let shape = FfnShape {
        rows: 1,
        groups: 2,
        max_group_rows: 1,
        hidden: 16,
        inter: 16,
    };
    assert!(matches!(
        launch::expert_ffn_fp8(&lib, &s, &x, w, w, w, None, &mut y, shape),
        Err(KernelError::InvalidShape {
            kernel: "expert_ffn_fp8",
            ..
        })
    ));
}

#[test]
fn scales_of_the_wrong_shape_are_typed_errors() {
    let (lib, s) = setup(Hardware::with_cores(2, 4));
    let (m, n, k) = (2, 130, 129);
    let x = s.upload(&vec![0.0f32; m * k]).unwrap();
    let codes = s.upload(&vec![0u8; n * k]).unwrap();
    // [ceil(130/128), ceil(129/128)] = [2, 2] scales; 1 is short.
    let short = s.upload(&[1.0f32]).unwrap();
    let mut y = s.alloc::<f32>(m * n).unwrap();
    let e = launch::linear_fp8(
        &lib,
        &s,
        &x,
        Fp8Weights {
            codes: &codes,
            scale: &short,
        },
        &mut y,
        m,
        n,
        k,
    )
    .unwrap_err();
    assert_eq!(
        e,
        KernelError::BufferLength {
            kernel: "linear_fp8",
            arg: "scale",
            expected: 4,
            actual: 1,
        }
    );
    assert_eq!(launch::fp8_scale_len(3, 130, 129), 12);
}

/// The GM traffic of `linear_fp8_bf16` with one m-tile, exactly: every weight element is dequantized
/// once into the block's bf16 panel (2 bytes written, read back by the cube), the f32 tile is written
/// once (the K panels' products add up in L0C: C is one base tile), y once; the codes are read once (1 byte each). Printed next to
/// `linear_bf16` on bf16 weights of the same shape: in the simulator's GM counters the panel's round
/// trip makes the FP8 GEMM move more bytes than the 16-bit one (on an NPU the small panel would stay in
/// L2; the counters do not model L2).
#[test]
fn an_fp8_weight_is_dequantized_once_per_m_tile_through_a_panel() {
    let (lib, s) = setup(Hardware::with_cores(1, 2));
    let (m, n, k) = (1, 256, 512);
    let w = HostFp8::random(1, n, k, 3);
    let (codes, scale) = w.upload(&s);
    let x = s.upload(&random_act::<bf16>(m * k, 4)).unwrap();
    let mut y = s.alloc::<bf16>(m * n).unwrap();
    let l = launch::linear_fp8(
        &lib,
        &s,
        &x,
        Fp8Weights {
            codes: &codes,
            scale: &scale,
        },
        &mut y,
        m,
        n,
        k,
    )
    .unwrap();
    assert_clean(&s, l.symbol);
    let c = sim_counters::last_launch_counters(&s)
        .unwrap()
        .unwrap()
        .totals;
    let nk = (n * k) as u64;
    let (m, n) = (m as u64, n as u64);
    assert_eq!(c.ub_to_gm_bytes, nk * 2 + m * n * 4 + m * n * 2);
    // In: the codes and the panel once each, plus x and the f32 tile (a few KiB).
    assert!(
        c.gm_to_ub_bytes >= nk * 3 && c.gm_to_ub_bytes <= nk * 3 + 8192,
        "{c:?}"
    );

    let wb: Vec<bf16> = w
        .dequant::<bf16>()
        .iter()
        .map(|&v| bf16::from_f64(v))
        .collect();
    let wb = s.upload(&wb).unwrap();
    let l = launch::linear(&lib, &s, &x, &wb, None, &mut y, 1, 256, 512).unwrap();
    assert_clean(&s, l.symbol);
    let b = sim_counters::last_launch_counters(&s)
        .unwrap()
        .unwrap()
        .totals;
    eprintln!(
        "1x256x512: linear_fp8_bf16 GM in {} out {} bytes (codes {nk}); linear_bf16 GM in {} out {} bytes",
        c.gm_to_ub_bytes, c.ub_to_gm_bytes, b.gm_to_ub_bytes, b.ub_to_gm_bytes
    );
}
