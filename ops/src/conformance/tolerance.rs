//! Per-dtype tolerances and the element-wise closeness check every suite uses.
//!
//! An element passes when `|actual - expected| <= atol + rtol * |expected|` (the `numpy.isclose` rule).
//! NaN matches only NaN, and an infinity matches only the same infinity. Shapes must agree exactly.
//!
//! # Why these values
//! Both the reference and a backend compute in `f32` and round once on store, so for the same input they
//! can differ by (a) the `f32` accumulation order and (b) a store rounding that flips because of (a). A
//! flipped round-to-nearest is one ulp of the output type, and one ulp of `x` is at most `eps · |x|`
//! (`eps` = machine epsilon, the gap above 1.0). We allow **two** ulps (`rtol = 2·eps`) so that a backend
//! that rounds one intermediate to the storage type (common on devices: e.g. a gate activation kept in
//! `f16` before the multiply) still passes; `atol = eps` covers results that cancel to near zero from
//! operands of order one (the suites draw inputs of order one and scale reductions so outputs stay of order
//! one).
//!
//! | dtype | eps | rtol = 2·eps | atol = eps |
//! |---|---|---|---|
//! | f16  | 2⁻¹⁰ ≈ 9.77e-4 | 1.95e-3 | 9.77e-4 |
//! | bf16 | 2⁻⁷ ≈ 7.81e-3  | 1.56e-2 | 7.81e-3 |
//!
//! For `f32` the store rounding is negligible and (a) dominates: summing `n` terms in a different order
//! changes the result by about `sqrt(n) · eps_f32` relative to the terms' scale, which is ~1.2e-5 for the
//! largest reductions in the suites (n ≈ 10⁴). Hence `f32` uses `atol = rtol = 2⁻¹⁶ ≈ 1.53e-5` (128 ulps at
//! 1.0): tight enough to catch any wrong formula, loose enough for reordered sums.
//!
//! Integer dtypes (ids, indices, counts) must match exactly.
//!
//! When an output is a `f32` result computed from `T` inputs (softmax, MLA's `lse`, gating weights), use the
//! tolerance of `T` anyway: the inputs of both sides are identical, but a device may compute the
//! intermediate in `T` precision.

use crate::{DType, Float};
use ndarray::{ArrayView, Dimension};
use std::fmt;

/// `|actual - expected| <= atol + rtol * |expected|`, element-wise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Tolerance {
    /// Exact equality (integer outputs, or values that must be bit-identical such as copies).
    pub const EXACT: Tolerance = Tolerance {
        atol: 0.0,
        rtol: 0.0,
    };

    /// The documented default for outputs stored as `dtype` (see the module docs for the derivation).
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            // 2^-16: 128 ulps at 1.0, covers reordered f32 sums of ~10^4 terms.
            DType::F32 => Tolerance {
                atol: 1.0 / 65536.0,
                rtol: 1.0 / 65536.0,
            },
            // eps(f16) = 2^-10.
            DType::F16 => Tolerance {
                atol: 1.0 / 1024.0,
                rtol: 2.0 / 1024.0,
            },
            // eps(bf16) = 2^-7.
            DType::BF16 => Tolerance {
                atol: 1.0 / 128.0,
                rtol: 2.0 / 128.0,
            },
            DType::I32 | DType::I64 => Tolerance::EXACT,
        }
    }

    /// Shorthand for `for_dtype(T::DTYPE)`.
    pub fn of<T: Float>() -> Tolerance {
        Tolerance::for_dtype(T::DTYPE)
    }

    /// Both bounds multiplied by `factor`: for an operator whose error legitimately compounds (a chain of
    /// roundings, an exponent amplifying its input's error). A suite that widens must say why.
    pub fn widened(self, factor: f32) -> Tolerance {
        Tolerance {
            atol: self.atol * factor,
            rtol: self.rtol * factor,
        }
    }

    /// The largest allowed difference for an expected value `e`.
    pub fn allowed(&self, e: f32) -> f32 {
        self.atol + self.rtol * e.abs()
    }
}

/// Why two arrays are not close: the worst element and how many elements failed. Returned boxed: it is
/// large and only built on failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// What was compared (operator, case, argument), as given by the caller.
    pub what: String,
    /// `Some((actual, expected))` shapes when they differ; then the element fields are empty.
    pub shape: Option<(Vec<usize>, Vec<usize>)>,
    /// Number of elements outside the tolerance.
    pub bad: usize,
    /// Number of elements compared.
    pub total: usize,
    /// Multi-index of the worst element (largest `|a - e| / allowed(e)`; NaN/inf mismatches rank first).
    pub worst_index: Vec<usize>,
    pub worst_actual: f32,
    pub worst_expected: f32,
    pub tolerance: Tolerance,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((a, e)) = &self.shape {
            return write!(
                f,
                "{}: shape mismatch: actual {a:?}, expected {e:?}",
                self.what
            );
        }
        write!(
            f,
            "{}: {} of {} elements differ beyond atol={:e} rtol={:e}; worst at {:?}: actual {} expected {} \
             (|diff| {:e}, allowed {:e})",
            self.what,
            self.bad,
            self.total,
            self.tolerance.atol,
            self.tolerance.rtol,
            self.worst_index,
            self.worst_actual,
            self.worst_expected,
            (self.worst_actual - self.worst_expected).abs(),
            self.tolerance.allowed(self.worst_expected),
        )
    }
}

impl std::error::Error for Mismatch {}

/// How badly one pair misses: `None` if it passes, else a badness score (larger is worse).
fn badness(a: f32, e: f32, tol: Tolerance) -> Option<f32> {
    if a.is_nan() || e.is_nan() {
        return if a.is_nan() && e.is_nan() {
            None
        } else {
            Some(f32::INFINITY)
        };
    }
    if a.is_infinite() || e.is_infinite() {
        return if a == e { None } else { Some(f32::INFINITY) };
    }
    let diff = (a - e).abs();
    let allowed = tol.allowed(e);
    if diff <= allowed {
        None
    } else if allowed > 0.0 {
        Some(diff / allowed)
    } else {
        // Exact tolerance: rank by the raw difference (always > 0 here).
        Some(diff)
    }
}

/// Compare element-wise, both sides converted to `f32`, for arrays whose element types may differ
/// (e.g. a backend returning `T` where the reference is `f32`).
pub fn check_close_mixed<A: Float, E: Float, D: Dimension>(
    what: &str,
    actual: ArrayView<A, D>,
    expected: ArrayView<E, D>,
    tol: Tolerance,
) -> Result<(), Box<Mismatch>> {
    let mut report = Mismatch {
        what: what.to_string(),
        shape: None,
        bad: 0,
        total: expected.len(),
        worst_index: Vec::new(),
        worst_actual: 0.0,
        worst_expected: 0.0,
        tolerance: tol,
    };
    if actual.shape() != expected.shape() {
        report.shape = Some((actual.shape().to_vec(), expected.shape().to_vec()));
        return Err(Box::new(report));
    }
    let mut worst = f32::NEG_INFINITY;
    for ((idx, &e), &a) in expected.indexed_iter().zip(actual.iter()) {
        let (a, e) = (a.to_f32(), e.to_f32());
        if let Some(score) = badness(a, e, tol) {
            report.bad += 1;
            if score > worst {
                worst = score;
                report.worst_index = idx.into_pattern_vec();
                report.worst_actual = a;
                report.worst_expected = e;
            }
        }
    }
    if report.bad == 0 {
        Ok(())
    } else {
        Err(Box::new(report))
    }
}

/// Compare `actual` with `expected` element-wise under `tol` (see the module docs for the rule).
/// Also serves `f32` outputs of operators with `T` inputs: call it with `f32` arrays and `Tolerance::of::<T>()`.
pub fn check_close<T: Float, D: Dimension>(
    what: &str,
    actual: ArrayView<T, D>,
    expected: ArrayView<T, D>,
    tol: Tolerance,
) -> Result<(), Box<Mismatch>> {
    check_close_mixed(what, actual, expected, tol)
}

/// [`check_close`] that panics with the mismatch report (for tests).
#[track_caller]
pub fn assert_close<T: Float, D: Dimension>(
    what: &str,
    actual: ArrayView<T, D>,
    expected: ArrayView<T, D>,
    tol: Tolerance,
) {
    let result = check_close(what, actual.view(), expected.view(), tol);
    // Under an observer (`dsnpu verify`) a mismatch is recorded instead of raised.
    if super::observe::float_check(what, &actual, &expected, tol, &result) {
        return;
    }
    if let Err(m) = result {
        panic!("{m}");
    }
}

/// [`check_close_mixed`] that panics with the mismatch report.
#[track_caller]
pub fn assert_close_mixed<A: Float, E: Float, D: Dimension>(
    what: &str,
    actual: ArrayView<A, D>,
    expected: ArrayView<E, D>,
    tol: Tolerance,
) {
    let result = check_close_mixed(what, actual.view(), expected.view(), tol);
    if super::observe::float_check(what, &actual, &expected, tol, &result) {
        return;
    }
    if let Err(m) = result {
        panic!("{m}");
    }
}

/// Exact comparison for integer outputs (ids, row indices, counts). Reports like [`check_close`].
pub fn check_equal<I, D>(
    what: &str,
    actual: ArrayView<I, D>,
    expected: ArrayView<I, D>,
) -> Result<(), Box<Mismatch>>
where
    I: Copy + PartialEq + Into<i64>,
    D: Dimension,
{
    let mut report = Mismatch {
        what: what.to_string(),
        shape: None,
        bad: 0,
        total: expected.len(),
        worst_index: Vec::new(),
        worst_actual: 0.0,
        worst_expected: 0.0,
        tolerance: Tolerance::EXACT,
    };
    if actual.shape() != expected.shape() {
        report.shape = Some((actual.shape().to_vec(), expected.shape().to_vec()));
        return Err(Box::new(report));
    }
    for ((idx, &e), &a) in expected.indexed_iter().zip(actual.iter()) {
        if a != e {
            report.bad += 1;
            if report.bad == 1 {
                // For integers the first difference is the most useful one to show.
                report.worst_index = idx.into_pattern_vec();
                report.worst_actual = a.into() as f32;
                report.worst_expected = e.into() as f32;
            }
        }
    }
    if report.bad == 0 {
        Ok(())
    } else {
        Err(Box::new(report))
    }
}

/// [`check_equal`] that panics with the mismatch report.
#[track_caller]
pub fn assert_equal<I, D>(what: &str, actual: ArrayView<I, D>, expected: ArrayView<I, D>)
where
    I: Copy + PartialEq + Into<i64>,
    D: Dimension,
{
    let result = check_equal(what, actual.view(), expected.view());
    if super::observe::exact_check(what, &actual, &expected, &result) {
        return;
    }
    if let Err(m) = result {
        panic!("{m}");
    }
}

/// Whole-output error statistics of `actual` against an exact (`f64`) evaluation of the reference on
/// the same (already rounded) inputs. Element-wise tolerances absorb a small systematic error (a 0.1%
/// error in a scale stays below one bf16 ulp); these see it, because it does not average out:
/// - `rel_bias = Σ (a − e)·e / Σ e²`: the output's error along itself, i.e. a relative scale error of the
///   whole output (what a wrong scale, softmax denominator or weight causes);
/// - `mean_signed = Σ (a − e) / Σ |e|`: the mean signed error, relative to the mean magnitude;
/// - `rel_rms = sqrt(Σ (a − e)² / Σ e²)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorStats {
    pub n: usize,
    pub max_abs: f64,
    pub rel_bias: f64,
    pub mean_signed: f64,
    pub rel_rms: f64,
}

impl ErrorStats {
    /// The statistics over every element (NaN anywhere gives NaN statistics, which fail every bound).
    pub fn of<A: Float, D: Dimension>(
        actual: ArrayView<A, D>,
        exact: ArrayView<f64, D>,
    ) -> ErrorStats {
        let (mut ee, mut de, mut dd, mut d, mut abs_e, mut max_abs) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64);
        for (&a, &e) in actual.iter().zip(exact.iter()) {
            let diff = f64::from(a.to_f32()) - e;
            ee += e * e;
            de += diff * e;
            dd += diff * diff;
            d += diff;
            abs_e += e.abs();
            max_abs = if diff.is_nan() {
                f64::NAN
            } else {
                max_abs.max(diff.abs())
            };
        }
        let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { x };
        ErrorStats {
            n: exact.len(),
            max_abs,
            rel_bias: ratio(de, ee),
            mean_signed: ratio(d, abs_e),
            rel_rms: ratio(dd, ee).sqrt(),
        }
    }
}

/// Bounds on [`ErrorStats`] for an output whose computation rounds to a type of machine epsilon `eps`
/// (see the module docs) a bounded number of times with round-to-nearest: unbiased rounding errors
/// average out, so the bias statistics shrink as `1/√n`; `2·eps/√n` is about seven standard
/// deviations of a sum of independent roundings (each at most `eps/2` relative). `floor` is the `f32`
/// accumulation noise (reordered sums) that even exact-`f32` outputs carry. The RMS bound allows one
/// `eps` (a store rounding plus a rounded intermediate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystematicBound {
    pub bias: f64,
    pub rms: f64,
}

impl SystematicBound {
    /// Relative floor for `f32` accumulation: far below the 1e-3 errors the suites must catch.
    pub const F32_FLOOR: f64 = 1e-5;

    /// The bound for `n` elements of an output rounded through a type of epsilon `eps`.
    pub fn new(eps: f64, n: usize) -> SystematicBound {
        let n = n.max(1) as f64;
        SystematicBound {
            bias: 2.0 * eps / n.sqrt() + Self::F32_FLOOR,
            rms: eps + Self::F32_FLOOR,
        }
    }

    /// The bound for an output stored as `T`.
    pub fn of<T: Float>(n: usize) -> SystematicBound {
        Self::new(epsilon(T::DTYPE), n)
    }

    /// The bound for an `f32` result (such as `lse`) computed from inputs that are exact in `f32`.
    pub fn f32(n: usize) -> SystematicBound {
        Self::new(epsilon(DType::F32), n)
    }
}

/// Machine epsilon of a float dtype (the gap above 1.0).
pub fn epsilon(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-23),
    }
}

/// Fails unless `actual` is within `tol` of `exact` element-wise AND its whole-output statistics are
/// within `bound` (the systematic-error check; see [`ErrorStats`]).
#[track_caller]
pub fn assert_unbiased<A: Float, D: Dimension>(
    what: &str,
    actual: ArrayView<A, D>,
    exact: ArrayView<f64, D>,
    tol: Tolerance,
    bound: SystematicBound,
) {
    let exact32 = exact.mapv(|v| v as f32);
    assert_close_mixed(what, actual.view(), exact32.view(), tol);
    let st = ErrorStats::of(actual, exact);
    let ok = st.rel_bias.abs() <= bound.bias
        && st.mean_signed.abs() <= bound.bias
        && st.rel_rms <= bound.rms;
    if !ok {
        panic!("{what}: systematic error beyond {bound:?}: {st:?}");
    }
}

/// Turn an ndarray index pattern into a plain `Vec<usize>` for reports.
trait IntoPatternVec {
    fn into_pattern_vec(self) -> Vec<usize>;
}

impl<P: ndarray::IntoDimension> IntoPatternVec for P {
    fn into_pattern_vec(self) -> Vec<usize> {
        self.into_dimension().slice().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn passes_within_and_fails_beyond_the_bound() {
        let tol = Tolerance {
            atol: 0.1,
            rtol: 0.1,
        };
        // Allowed at e = 2.0: 0.1 + 0.2 = 0.3.
        let e = array![2.0f32, 0.0];
        assert!(check_close("ok", array![2.29f32, 0.09].view(), e.view(), tol).is_ok());
        let m = check_close("bad", array![2.31f32, 0.5].view(), e.view(), tol).unwrap_err();
        assert_eq!(m.bad, 2);
        assert_eq!(m.total, 2);
        // 0.5 misses by 0.5/0.1 = 5x, 2.31 by 0.31/0.3 ≈ 1.03x: the worst is index 1.
        assert_eq!(m.worst_index, vec![1]);
        assert_eq!(m.worst_actual, 0.5);
        assert_eq!(m.worst_expected, 0.0);
    }

    #[test]
    fn shape_mismatch_is_reported() {
        let a = ndarray::Array2::<f32>::zeros((2, 3));
        let e = ndarray::Array2::<f32>::zeros((3, 2));
        let m = check_close("s", a.view(), e.view(), Tolerance::EXACT).unwrap_err();
        assert_eq!(m.shape, Some((vec![2, 3], vec![3, 2])));
        assert!(m.to_string().contains("shape mismatch"));
    }

    #[test]
    fn nan_and_inf_rules() {
        let tol = Tolerance::for_dtype(DType::F32);
        let e = array![f32::NAN, f32::INFINITY, 1.0];
        assert!(check_close(
            "same",
            array![f32::NAN, f32::INFINITY, 1.0].view(),
            e.view(),
            tol
        )
        .is_ok());
        let m = check_close(
            "nan",
            array![0.0, f32::NEG_INFINITY, f32::NAN].view(),
            e.view(),
            tol,
        )
        .unwrap_err();
        assert_eq!(m.bad, 3);
    }

    #[test]
    fn documented_values() {
        // eps(f16) = 2^-10, eps(bf16) = 2^-7; rtol = 2 eps, atol = eps.
        let f16t = Tolerance::for_dtype(DType::F16);
        assert_eq!((f16t.atol, f16t.rtol), (0.0009765625, 0.001953125));
        let bf16t = Tolerance::for_dtype(DType::BF16);
        assert_eq!((bf16t.atol, bf16t.rtol), (0.0078125, 0.015625));
        // At 1.0 the bound is 2^-7 + 2·2^-7 = 3 bf16 ulps (ulp = 2^-7): three pass, four do not.
        let one = array![half::bf16::from_f32(1.0)];
        let up3 = array![half::bf16::from_f32(1.0 + 3.0 / 128.0)];
        let up4 = array![half::bf16::from_f32(1.0 + 4.0 / 128.0)];
        assert!(check_close("3ulp", up3.view(), one.view(), bf16t).is_ok());
        assert!(check_close("4ulp", up4.view(), one.view(), bf16t).is_err());
    }

    #[test]
    fn integers_compare_exactly() {
        let e = array![[1i32, 2], [3, 4]];
        assert!(check_equal("eq", e.view(), e.view()).is_ok());
        let m = check_equal("ne", array![[1i32, 2], [3, 5]].view(), e.view()).unwrap_err();
        assert_eq!((m.bad, m.worst_index.clone()), (1, vec![1, 1]));
    }
}
