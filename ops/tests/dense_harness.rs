//! The harness itself can fail: suites run against deliberately broken backends must panic, and a
//! backend that reports `Unsupported` is skipped rather than failed.
use dsnpu_ops::backend::{Backend, Cpu, DenseOps};
use dsnpu_ops::conformance::dense;
use dsnpu_ops::rope::{RopeLayout, RopeTable};
use dsnpu_ops::sampling::Sampler;
use dsnpu_ops::{Float, OpsError, Result};
use half::bf16;
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

/// Delegates to the CPU reference except for the flaw it is built with.
#[derive(Clone, Copy)]
enum Flaw {
    /// Multiplies rms_norm's output by `1 + 3·rtol(T)`: just outside the tolerance for values near 1.
    ScaledNorm,
    /// Accepts a weight of the wrong length (truncating silently) instead of rejecting it.
    NoValidation,
    /// Swaps the two halves of the rotary layout.
    WrongLayout,
    /// Reports every operator as unsupported.
    Unsupported,
}

struct Broken(Flaw);

impl Backend for Broken {
    fn name(&self) -> String {
        "broken".into()
    }
}

fn unsupported<R>(op: &'static str) -> Result<R> {
    Err(OpsError::Unsupported {
        op,
        backend: "broken".into(),
        reason: "test".into(),
    })
}

impl DenseOps for Broken {
    fn rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView1<T>,
        eps: f32,
    ) -> Result<Array2<T>> {
        match self.0 {
            Flaw::Unsupported => unsupported("rms_norm"),
            Flaw::ScaledNorm => {
                let k = 1.0 + 3.0 * dsnpu_ops::conformance::tolerance::Tolerance::of::<T>().rtol;
                Ok(Cpu
                    .rms_norm(x, w, eps)?
                    .mapv(|v| T::from_f32(v.to_f32() * k)))
            }
            Flaw::NoValidation if w.len() < x.ncols() => Ok(Array2::default(x.raw_dim())),
            _ => Cpu.rms_norm(x, w, eps),
        }
    }
    fn add_rms_norm<T: Float>(
        &self,
        x: ArrayView2<T>,
        r: ArrayView2<T>,
        w: ArrayView1<T>,
        eps: f32,
    ) -> Result<(Array2<T>, Array2<T>)> {
        Cpu.add_rms_norm(x, r, w, eps)
    }
    fn rope<T: Float>(
        &self,
        x: ArrayView3<T>,
        p: ArrayView1<i32>,
        t: &RopeTable,
        l: RopeLayout,
    ) -> Result<Array3<T>> {
        let l = match (self.0, l) {
            (Flaw::Unsupported, _) => return unsupported("rope"),
            (Flaw::WrongLayout, RopeLayout::Interleaved) => RopeLayout::HalfSplit,
            (Flaw::WrongLayout, RopeLayout::HalfSplit) => RopeLayout::Interleaved,
            (_, l) => l,
        };
        Cpu.rope(x, p, t, l)
    }
    fn linear<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView2<T>,
        b: Option<ArrayView1<T>>,
    ) -> Result<Array2<T>> {
        Cpu.linear(x, w, b)
    }
    fn batched_matmul<T: Float>(&self, a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
        Cpu.batched_matmul(a, b)
    }
    fn silu_mul<T: Float>(&self, g: ArrayView2<T>) -> Result<Array2<T>> {
        Cpu.silu_mul(g)
    }
    fn embedding<T: Float>(&self, t: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
        Cpu.embedding(t, ids)
    }
    fn softmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array2<f32>> {
        Cpu.softmax(x)
    }
    fn argmax<T: Float>(&self, x: ArrayView2<T>) -> Result<Array1<i32>> {
        Cpu.argmax(x)
    }
    fn sample_top_p<T: Float>(&self, s: &mut [Sampler], x: ArrayView2<T>) -> Result<Array1<i32>> {
        Cpu.sample_top_p(s, x)
    }
}

#[test]
#[should_panic(expected = "elements differ beyond")]
fn a_value_error_just_outside_f32_tolerance_fails() {
    dense::rms_norm::<_, f32>(&Broken(Flaw::ScaledNorm));
}

#[test]
#[should_panic(expected = "elements differ beyond")]
fn a_value_error_just_outside_bf16_tolerance_fails() {
    dense::rms_norm::<_, bf16>(&Broken(Flaw::ScaledNorm));
}

#[test]
#[should_panic(expected = "accepted malformed input")]
fn a_backend_that_does_not_validate_fails() {
    dense::rms_norm::<_, f32>(&Broken(Flaw::NoValidation));
}

#[test]
#[should_panic(expected = "elements differ beyond")]
fn a_wrong_rope_layout_fails() {
    dense::rope::<_, f32>(&Broken(Flaw::WrongLayout));
}

#[test]
fn unsupported_operators_are_skipped() {
    dense::rms_norm::<_, f32>(&Broken(Flaw::Unsupported));
    dense::rope::<_, bf16>(&Broken(Flaw::Unsupported));
}

#[test]
fn the_other_suites_pass_on_a_faithful_delegate() {
    // Control for the tests above: with flaws confined to rms_norm/rope, the other suites pass.
    let b = Broken(Flaw::ScaledNorm);
    dense::linear::<_, f32>(&b);
    dense::softmax::<_, bf16>(&b);
    dense::argmax::<_, half::f16>(&b);
}
