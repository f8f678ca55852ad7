//! Conformance suites for the dense operators: run a backend over the case matrix and compare with the
//! CPU reference.
//!
//! Each suite is a function generic over the backend and the element type; it panics (via
//! [`assert_close`]) on the first case that differs beyond [`Tolerance::of::<T>()`](Tolerance::of), naming
//! the operator, the case and the worst element. Besides the values, each suite checks that the backend
//! rejects one malformed input (it must validate like the reference) and, where the operator has one, an
//! invariant that does not depend on the reference (softmax rows sum to one, argmax picks a maximum).
//!
//! A backend returning [`OpsError::Unsupported`] for a case is reported on stderr as a skip; any other
//! error fails the suite.
//!
//! [`dense_conformance!`](crate::dense_conformance) turns the suites into `#[test]` functions for one
//! backend and the three float dtypes.

use super::cases::{self, CaseRng};
use super::tolerance::{assert_close, assert_equal, Tolerance};
use crate::backend::{Cpu, DenseOps};
use crate::rope::{RopeConfig, RopeLayout, RopeTable, YarnScaling};
use crate::{Float, OpsError, Result};
use ndarray::{Array1, Array2, Axis};

pub use super::sampling::sample_top_p;

/// `Some(value)` on success, `None` (after a note on stderr) when the backend does not support the case
/// and has no kernel for the op ([`Backend::has_kernel`](crate::backend::Backend::has_kernel)). Any other
/// error, and `Unsupported` from an op with a kernel, is a failure.
#[track_caller]
pub fn ran<R, B: crate::backend::Backend>(backend: &B, what: &str, r: Result<R>) -> Option<R> {
    match r {
        Ok(v) => {
            super::observe::case_started();
            Some(v)
        }
        Err(OpsError::Unsupported { op, reason, .. }) if backend.has_kernel(op) => {
            // An operator with a kernel never skips: its case fails.
            let message = format!(
                "{what} on {}: {op} has a kernel but answered unsupported: {reason}",
                backend.name()
            );
            if super::observe::case_errored(message.clone()) {
                return None;
            }
            panic!("{message}")
        }
        Err(OpsError::Unsupported { reason, .. }) => {
            if super::observe::observing() {
                super::observe::case_skipped();
            } else {
                eprintln!("skip {what} on {}: unsupported: {reason}", backend.name());
            }
            None
        }
        Err(e) => {
            let message = format!("{what} on {}: unexpected error: {e}", backend.name());
            if super::observe::case_errored(message.clone()) {
                return None;
            }
            panic!("{message}")
        }
    }
}

/// The reference must accept every case the suites generate; an error there is a bug in the reference.
#[track_caller]
fn reference<R>(what: &str, r: Result<R>) -> R {
    r.unwrap_or_else(|e| panic!("{what}: reference rejected a valid case: {e}"))
}

/// The backend must reject a malformed input with an error (any variant), not accept or panic.
#[track_caller]
pub fn rejects<R, B: crate::backend::Backend>(backend: &B, what: &str, r: Result<R>) {
    let what_on = format!("{what} on {}", backend.name());
    if super::observe::rejection(&what_on, r.is_err()) {
        return;
    }
    if r.is_ok() {
        panic!("{what} on {}: accepted malformed input", backend.name());
    }
}

/// DeepSeek-V3's YaRN block (factor 40, 4096 original positions, β 32/1, mscale 1/1) at rotary width `dim`.
pub fn deepseek_rope(dim: usize) -> RopeConfig {
    RopeConfig {
        dim,
        theta: 10000.0,
        scaling: Some(YarnScaling {
            factor: 40.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
        }),
    }
}

pub fn rms_norm<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0001);
    for (t, h) in cases::row_shapes() {
        let x = rng.uniform::<T, _>((t, h), -2.0, 2.0);
        let w = rng.uniform::<T, _>(h, 0.5, 1.5);
        for eps in [1e-6f32, 1e-2] {
            let what = format!("rms_norm<{}> T={t} H={h} eps={eps}", T::DTYPE);
            let want = reference(&what, Cpu.rms_norm(x.view(), w.view(), eps));
            if let Some(got) = ran(b, &what, b.rms_norm(x.view(), w.view(), eps)) {
                assert_close(&what, got.view(), want.view(), tol);
            }
        }
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let w = rng.uniform::<T, _>(7, -1.0, 1.0);
    rejects(
        b,
        "rms_norm with weight [7] for H=8",
        b.rms_norm(x.view(), w.view(), 1e-6),
    );
}

pub fn add_rms_norm<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0002);
    for (t, h) in cases::row_shapes() {
        let x = rng.uniform::<T, _>((t, h), -2.0, 2.0);
        let r = rng.uniform::<T, _>((t, h), -2.0, 2.0);
        let w = rng.uniform::<T, _>(h, 0.5, 1.5);
        let what = format!("add_rms_norm<{}> T={t} H={h}", T::DTYPE);
        let (want_y, want_s) =
            reference(&what, Cpu.add_rms_norm(x.view(), r.view(), w.view(), 1e-6));
        if let Some((y, s)) = ran(b, &what, b.add_rms_norm(x.view(), r.view(), w.view(), 1e-6)) {
            assert_close(&format!("{what} (sum)"), s.view(), want_s.view(), tol);
            assert_close(&format!("{what} (normed)"), y.view(), want_y.view(), tol);
        }
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let r = rng.uniform::<T, _>((3, 8), -1.0, 1.0);
    let w = rng.uniform::<T, _>(8, -1.0, 1.0);
    rejects(
        b,
        "add_rms_norm with residual [3,8] for x [2,8]",
        b.add_rms_norm(x.view(), r.view(), w.view(), 1e-6),
    );
}

pub fn rope<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0003);
    let max_pos = 8192; // beyond YaRN's original 4096, where the scaling matters.
    for &(t, heads, dim) in cases::ROPE_SHAPES {
        let plain = RopeConfig {
            dim,
            theta: 10000.0,
            scaling: None,
        };
        for cfg in [plain, deepseek_rope(dim)] {
            let table = reference("RopeTable::new", RopeTable::new(&cfg, max_pos));
            let x = rng.uniform::<T, _>((t, heads, dim), -2.0, 2.0);
            let mut pos = rng.ints(t, 0, max_pos as i32);
            pos[0] = 0;
            if t > 1 {
                pos[t - 1] = max_pos as i32 - 1;
            }
            for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
                let what = format!(
                    "rope<{}> T={t} H={heads} D={dim} {layout:?} yarn={}",
                    T::DTYPE,
                    cfg.scaling.is_some()
                );
                let want = reference(&what, Cpu.rope(x.view(), pos.view(), &table, layout));
                if let Some(got) = ran(b, &what, b.rope(x.view(), pos.view(), &table, layout)) {
                    assert_close(&what, got.view(), want.view(), tol);
                }
            }
        }
    }
    let table = reference(
        "RopeTable::new",
        RopeTable::new(
            &RopeConfig {
                dim: 8,
                theta: 10000.0,
                scaling: None,
            },
            4,
        ),
    );
    let x = rng.uniform::<T, _>((1, 1, 8), -1.0, 1.0);
    rejects(
        b,
        "rope at position 4 of a 4-row table",
        b.rope(
            x.view(),
            Array1::from(vec![4]).view(),
            &table,
            RopeLayout::Interleaved,
        ),
    );
}

pub fn linear<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0004);
    for &(m, k, n) in cases::MATMUL_SHAPES {
        // Weights of variance 1/K keep outputs of order one whatever K is (see the tolerance docs).
        let a = (3.0 / k as f32).sqrt();
        let x = rng.uniform::<T, _>((m, k), -1.0, 1.0);
        let w = rng.uniform::<T, _>((n, k), -a, a);
        let bias = rng.uniform::<T, _>(n, -1.0, 1.0);
        for with_bias in [false, true] {
            let what = format!("linear<{}> M={m} K={k} N={n} bias={with_bias}", T::DTYPE);
            let bv = with_bias.then(|| bias.view());
            let want = reference(&what, Cpu.linear(x.view(), w.view(), bv));
            if let Some(got) = ran(b, &what, b.linear(x.view(), w.view(), bv)) {
                assert_close(&what, got.view(), want.view(), tol);
            }
        }
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let w = rng.uniform::<T, _>((3, 9), -1.0, 1.0);
    rejects(
        b,
        "linear with w [3,9] for x [2,8]",
        b.linear(x.view(), w.view(), None),
    );
}

pub fn batched_matmul<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0005);
    for (batch, &(m, k, n)) in [1usize, 3, 2, 1, 4, 2, 1].iter().zip(cases::MATMUL_SHAPES) {
        let s = (3.0 / k as f32).sqrt();
        let a = rng.uniform::<T, _>((*batch, m, k), -1.0, 1.0);
        let bm = rng.uniform::<T, _>((*batch, k, n), -s, s);
        let what = format!("batched_matmul<{}> B={batch} M={m} K={k} N={n}", T::DTYPE);
        let want = reference(&what, Cpu.batched_matmul(a.view(), bm.view()));
        if let Some(got) = ran(b, &what, b.batched_matmul(a.view(), bm.view())) {
            assert_close(&what, got.view(), want.view(), tol);
        }
    }
    let a = rng.uniform::<T, _>((2, 3, 4), -1.0, 1.0);
    let bm = rng.uniform::<T, _>((2, 5, 6), -1.0, 1.0);
    rejects(
        b,
        "batched_matmul with K 4 vs 5",
        b.batched_matmul(a.view(), bm.view()),
    );
}

pub fn silu_mul<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0006);
    for (t, i) in cases::row_shapes() {
        // Gate spans the saturating regions of silu (|x| up to 12).
        let gu = rng.uniform::<T, _>((t, 2 * i), -12.0, 12.0);
        let what = format!("silu_mul<{}> T={t} I={i}", T::DTYPE);
        let want = reference(&what, Cpu.silu_mul(gu.view()));
        if let Some(got) = ran(b, &what, b.silu_mul(gu.view())) {
            assert_close(&what, got.view(), want.view(), tol);
        }
    }
    let gu = rng.uniform::<T, _>((2, 7), -1.0, 1.0);
    rejects(b, "silu_mul with an odd width", b.silu_mul(gu.view()));
}

pub fn embedding<B: DenseOps, T: Float>(b: &B) {
    let mut rng = CaseRng::new(0x5157_0007);
    for &(v, h) in &[(1usize, 1usize), (5, 7), (1000, 33), (129, 7000)] {
        let table = rng.uniform::<T, _>((v, h), -1.0, 1.0);
        for t in [1usize, 3, 64] {
            let mut ids = rng.ints(t, 0, v as i32);
            ids[0] = (v - 1) as i32;
            let what = format!("embedding<{}> V={v} H={h} T={t}", T::DTYPE);
            let want = reference(&what, Cpu.embedding(table.view(), ids.view()));
            if let Some(got) = ran(b, &what, b.embedding(table.view(), ids.view())) {
                // A gather copies: bit-exact.
                assert_close(&what, got.view(), want.view(), Tolerance::EXACT);
            }
        }
    }
    let table = rng.uniform::<T, _>((4, 2), -1.0, 1.0);
    rejects(
        b,
        "embedding id 4 of 4",
        b.embedding(table.view(), Array1::from(vec![0, 4]).view()),
    );
    rejects(
        b,
        "embedding id -1",
        b.embedding(table.view(), Array1::from(vec![-1]).view()),
    );
}

pub fn softmax<B: DenseOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x5157_0008);
    for (t, v) in cases::row_shapes() {
        let mut x = rng.uniform::<T, _>((t, v), -8.0, 8.0);
        if v > 1 {
            // A masked entry in every row: exp(-inf) = 0.
            x.column_mut(v / 2).fill(T::from_f32(f32::NEG_INFINITY));
        }
        let what = format!("softmax<{}> T={t} V={v}", T::DTYPE);
        let want = reference(&what, Cpu.softmax(x.view()));
        if let Some(got) = ran(b, &what, b.softmax(x.view())) {
            assert_close(&what, got.view(), want.view(), tol);
            // Independent of the reference: each row is a distribution.
            let sums = got.sum_axis(Axis(1));
            assert_close(
                &format!("{what} row sums"),
                sums.view(),
                Array1::<f32>::ones(t).view(),
                tol,
            );
        }
    }
    // Rows wider than one 8192-element tile of the device kernel (a vocabulary-sized row); the second
    // is masked (-inf) over its first 9000 entries, more than a whole tile.
    let mut x = rng.uniform::<T, _>((2, 20_000), -8.0, 8.0);
    x.row_mut(1)
        .iter_mut()
        .take(9000)
        .for_each(|e| *e = T::from_f32(f32::NEG_INFINITY));
    let what = format!("softmax<{}> T=2 V=20000", T::DTYPE);
    let want = reference(&what, Cpu.softmax(x.view()));
    if let Some(got) = ran(b, &what, b.softmax(x.view())) {
        assert_close(&what, got.view(), want.view(), tol);
    }
    // Hand-worked: exp(0) : exp(ln 3) = 1 : 3; a masked entry is 0; a row holding NaN, a row of only
    // -inf and a row whose maximum is +inf are all NaN.
    let (nan, ninf, inf) = (f32::NAN, f32::NEG_INFINITY, f32::INFINITY);
    let x = Array2::from_shape_vec(
        (5, 3),
        [
            [0.0, 3f32.ln(), ninf],
            [5.0, 5.0, 5.0],
            [1.0, nan, 2.0],
            [ninf, ninf, ninf],
            [1.0, inf, 2.0],
        ]
        .iter()
        .flatten()
        .map(|&e| T::from_f32(e))
        .collect(),
    )
    .expect("5 x 3 values");
    let third = 1.0 / 3.0;
    // ln 3 rounds differently in each dtype: the expected ratio follows the value the row holds.
    let ln3 = x[[0, 1]].to_f32();
    let p1 = ln3.exp() / (1.0 + ln3.exp());
    let want = Array2::from_shape_vec(
        (5, 3),
        vec![
            1.0 - p1,
            p1,
            0.0,
            third,
            third,
            third,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
        ],
    )
    .expect("5 x 3 values");
    let what = format!("softmax<{}> hand-worked rows, NaN and infinities", T::DTYPE);
    if let Some(got) = ran(b, &what, b.softmax(x.view())) {
        assert_close(&what, got.view(), want.view(), Tolerance::of::<f32>());
    }
    let x = Array2::<T>::default((2, 0));
    rejects(b, "softmax over an empty row", b.softmax(x.view()));
}

pub fn argmax<B: DenseOps, T: Float>(b: &B) {
    let mut rng = CaseRng::new(0x5157_0009);
    for (t, v) in cases::row_shapes() {
        // Few distinct values so ties are common: the lowest index must win.
        let x = rng
            .uniform::<f32, _>((t, v), 0.0, 8.0)
            .mapv(|e| T::from_f32(e.floor()));
        let what = format!("argmax<{}> T={t} V={v}", T::DTYPE);
        let want = reference(&what, Cpu.argmax(x.view()));
        if let Some(got) = ran(b, &what, b.argmax(x.view())) {
            assert_equal(&what, got.view(), want.view());
            // Independent of the reference: the chosen element is a maximum and nothing before it is.
            for (r, &i) in got.iter().enumerate() {
                let row = x.row(r);
                let best = row
                    .iter()
                    .map(|e| e.to_f32())
                    .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(
                    row[i as usize].to_f32(),
                    best,
                    "{what}: row {r} picked a non-maximum"
                );
                assert!(
                    row.iter().take(i as usize).all(|e| e.to_f32() < best),
                    "{what}: row {r} not the first maximum"
                );
            }
        }
    }
    // The value conventions, hand-worked: NaN is above every number (its first occurrence wins), a row
    // of only -inf picks index 0, +inf beats every finite value.
    let (nan, ninf, inf) = (f32::NAN, f32::NEG_INFINITY, f32::INFINITY);
    let x = Array2::from_shape_vec(
        (4, 5),
        [
            [1.0, 3.0, nan, 3.0, nan],
            [ninf, ninf, ninf, ninf, ninf],
            [2.0, inf, 5.0, inf, ninf],
            [nan, 9.0, 9.0, 9.0, 9.0],
        ]
        .iter()
        .flatten()
        .map(|&e| T::from_f32(e))
        .collect(),
    )
    .expect("4 x 5 values");
    let what = format!("argmax<{}> NaN and infinities", T::DTYPE);
    if let Some(got) = ran(b, &what, b.argmax(x.view())) {
        assert_equal(&what, got.view(), Array1::from(vec![2, 0, 1, 0]).view());
    }
    let x = Array2::<T>::default((3, 0));
    rejects(b, "argmax over an empty row", b.argmax(x.view()));
}

/// Generate `#[test]` functions running every dense suite on `$backend` for f32, f16 and bf16, in modules
/// `dense_f32`, `dense_f16` and `dense_bf16`. `$backend` is evaluated once per test; items of the
/// invoking module are visible to it.
///
/// ```ignore
/// dsnpu_ops::dense_conformance!(dsnpu_ops::backend::Cpu);
/// ```
#[macro_export]
macro_rules! dense_conformance {
    ($backend:expr) => {
        mod dense_f32 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__dense_conformance_tests!($backend, f32);
        }
        mod dense_f16 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__dense_conformance_tests!($backend, $crate::half::f16);
        }
        mod dense_bf16 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__dense_conformance_tests!($backend, $crate::half::bf16);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __dense_conformance_tests {
    ($backend:expr, $t:ty) => {
        $crate::__dense_conformance_tests!(@each $backend, $t,
            rms_norm, add_rms_norm, rope, linear, batched_matmul, silu_mul, embedding, softmax, argmax,
            sample_top_p);
    };
    (@each $backend:expr, $t:ty, $($suite:ident),*) => {
        $(
            #[test]
            fn $suite() {
                $crate::conformance::dense::$suite::<_, $t>(&$backend);
            }
        )*
    };
}
