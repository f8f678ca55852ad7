//! Observing a suite instead of letting it panic: what [`runner`](super::runner) and `dsnpu verify`
//! use to report cases run, passed and the worst error of every operator.
//!
//! The suites are written as tests: each comparison ([`assert_close`](super::tolerance::assert_close),
//! [`assert_equal`](super::tolerance::assert_equal), ...) panics on a mismatch and each case starts
//! with [`ran`](super::dense::ran). Those functions also report to this module. While [`observe`] runs a
//! suite on the current thread, a comparison that fails is recorded (and the suite goes on to its next
//! case) instead of panicking, and every comparison, passing or not, updates the worst error seen.
//! Outside [`observe`] nothing changes: the hooks find no observer and the suites panic as before.
//!
//! A *case* is one call of the operator under test (one `ran`) with the comparisons that follow it, or
//! one malformed input the backend must reject. It passes when all its comparisons pass. Anything else
//! that panics inside the suite (an invariant check written with `assert!`) ends the suite and counts
//! as a failure of the case it interrupted.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::{ArrayView, Dimension};

use super::tolerance::{Mismatch, Tolerance};
use crate::Float;

/// The comparison that came closest to (or went furthest past) its tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct WorstError {
    /// The comparison's label (operator, case, argument).
    pub what: String,
    /// `|actual - expected|` at the worst element.
    pub abs_error: f32,
    /// What the tolerance allowed there (`atol + rtol·|expected|`; 0 for exact comparisons).
    pub allowed: f32,
    /// `abs_error / allowed`: at most 1 passes. Infinite for a NaN/infinity mismatch or any
    /// difference under an exact tolerance.
    pub ratio: f32,
}

/// What [`observe`] saw while a suite ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Cases run to a verdict (skips not included).
    pub cases: usize,
    /// Cases whose every comparison passed.
    pub passed: usize,
    /// Cases the backend answered `Unsupported`.
    pub skipped: usize,
    /// Of `cases`, those that offered a malformed input the backend had to reject (no kernel runs).
    pub rejections: usize,
    /// Comparisons made.
    pub checks: usize,
    /// The largest [`WorstError::ratio`] over all comparisons, `None` if none was made.
    pub worst: Option<WorstError>,
    /// One message per failed case (mismatch reports, unexpected errors, a panic).
    pub failures: Vec<String>,
    /// The case in progress: `Some(still passing)`.
    open: Option<bool>,
}

impl Observation {
    /// Every case run passed and nothing else failed.
    pub fn all_passed(&self) -> bool {
        self.failures.is_empty() && self.passed == self.cases
    }

    fn close_case(&mut self) {
        if let Some(ok) = self.open.take() {
            self.cases += 1;
            if ok {
                self.passed += 1;
            }
        }
    }

    fn fail(&mut self, message: String) {
        match self.open {
            Some(_) => self.open = Some(false),
            // A failure outside a case is a case of its own.
            None => self.cases += 1,
        }
        self.failures.push(message);
    }

    fn note_worst(&mut self, w: WorstError) {
        self.checks += 1;
        // NaN ratios never happen (see `worst_of`), so `>` is a total order here.
        if self.worst.as_ref().is_none_or(|cur| w.ratio > cur.ratio) {
            self.worst = Some(w);
        }
    }
}

thread_local! {
    static OBSERVER: RefCell<Option<Observation>> = const { RefCell::new(None) };
}

/// Runs `suite` on this thread with an observer installed and returns what it saw. A panic inside
/// `suite` is caught and recorded as a failure (with its message); it does not propagate. Observers
/// do not nest: an inner `observe` replaces the outer one for its duration and restores it after.
pub fn observe(suite: impl FnOnce()) -> Observation {
    let outer = OBSERVER.with(|o| o.borrow_mut().replace(Observation::default()));
    let result = catch_unwind(AssertUnwindSafe(suite));
    let mut seen = OBSERVER
        .with(|o| std::mem::replace(&mut *o.borrow_mut(), outer))
        .unwrap_or_default();
    if let Err(payload) = result {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_string());
        seen.fail(format!("suite stopped: {msg}"));
    }
    seen.close_case();
    seen
}

/// Whether an observer is installed on this thread.
pub fn observing() -> bool {
    OBSERVER.with(|o| o.borrow().is_some())
}

fn with<R>(f: impl FnOnce(&mut Observation) -> R) -> Option<R> {
    OBSERVER.with(|o| o.borrow_mut().as_mut().map(f))
}

/// A new case starts (the operator under test was called and answered).
pub(crate) fn case_started() {
    with(|o| {
        o.close_case();
        o.open = Some(true);
    });
}

/// The operator under test answered `Unsupported`.
pub(crate) fn case_skipped() {
    with(|o| {
        o.close_case();
        o.skipped += 1;
    });
}

/// The operator under test failed with an error other than `Unsupported`. Returns whether an observer
/// recorded it (otherwise the caller panics as a test would).
pub(crate) fn case_errored(message: String) -> bool {
    with(|o| {
        o.close_case();
        o.open = Some(true);
        o.fail(message);
    })
    .is_some()
}

/// A malformed input was offered: `rejected` says whether the backend refused it as it must. Returns
/// whether an observer recorded it.
pub(crate) fn rejection(what: &str, rejected: bool) -> bool {
    with(|o| {
        o.close_case();
        o.open = Some(true);
        o.rejections += 1;
        o.note_worst(WorstError {
            what: what.to_string(),
            abs_error: 0.0,
            allowed: 0.0,
            ratio: if rejected { 0.0 } else { f32::INFINITY },
        });
        if !rejected {
            o.fail(format!("{what}: accepted malformed input"));
        }
    })
    .is_some()
}

/// A float comparison was made. Returns whether an observer recorded it (then the caller must not
/// panic on a mismatch).
pub(crate) fn float_check<A: Float, E: Float, D: Dimension>(
    what: &str,
    actual: &ArrayView<A, D>,
    expected: &ArrayView<E, D>,
    tol: Tolerance,
    result: &Result<(), Box<Mismatch>>,
) -> bool {
    if !observing() {
        return false;
    }
    let pairs = actual
        .iter()
        .zip(expected.iter())
        .map(|(a, e)| (a.to_f32(), e.to_f32()));
    let worst = worst_of(what, pairs, tol, actual.shape() == expected.shape());
    record(worst, result)
}

/// An exact (integer) comparison was made. Returns whether an observer recorded it.
pub(crate) fn exact_check<I: Copy + Into<i64>, D: Dimension>(
    what: &str,
    actual: &ArrayView<I, D>,
    expected: &ArrayView<I, D>,
    result: &Result<(), Box<Mismatch>>,
) -> bool {
    if !observing() {
        return false;
    }
    let pairs = actual
        .iter()
        .zip(expected.iter())
        .map(|(&a, &e)| (a.into() as f32, e.into() as f32));
    let worst = worst_of(
        what,
        pairs,
        Tolerance::EXACT,
        actual.shape() == expected.shape(),
    );
    record(worst, result)
}

fn record(worst: WorstError, result: &Result<(), Box<Mismatch>>) -> bool {
    with(|o| {
        o.note_worst(worst);
        if let Err(m) = result {
            o.fail(m.to_string());
        }
    })
    .is_some()
}

/// The element with the largest `|a - e| / allowed(e)` (the rule of [`super::tolerance`]).
fn worst_of(
    what: &str,
    pairs: impl Iterator<Item = (f32, f32)>,
    tol: Tolerance,
    same_shape: bool,
) -> WorstError {
    let mut worst = WorstError {
        what: what.to_string(),
        abs_error: 0.0,
        allowed: tol.allowed(0.0),
        ratio: if same_shape { 0.0 } else { f32::INFINITY },
    };
    if !same_shape {
        return worst;
    }
    for (a, e) in pairs {
        let allowed = tol.allowed(e);
        let (diff, ratio) = if a.is_nan() || e.is_nan() || a.is_infinite() || e.is_infinite() {
            let same = (a.is_nan() && e.is_nan()) || a == e;
            (
                if same { 0.0 } else { f32::INFINITY },
                if same { 0.0 } else { f32::INFINITY },
            )
        } else {
            let diff = (a - e).abs();
            let ratio = if allowed > 0.0 {
                diff / allowed
            } else if diff > 0.0 {
                f32::INFINITY
            } else {
                0.0
            };
            (diff, ratio)
        };
        if ratio > worst.ratio {
            worst.abs_error = diff;
            worst.allowed = allowed;
            worst.ratio = ratio;
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::tolerance::{assert_close, assert_equal};
    use ndarray::array;

    #[test]
    fn a_failing_comparison_is_recorded_not_raised() {
        let tol = Tolerance {
            atol: 0.1,
            rtol: 0.0,
        };
        let seen = observe(|| {
            case_started();
            assert_close("good", array![1.0f32].view(), array![1.05f32].view(), tol);
            case_started();
            assert_close("bad", array![1.0f32].view(), array![1.5f32].view(), tol);
            case_skipped();
            case_started();
            assert_equal("ids", array![1i32, 2].view(), array![1i32, 2].view());
        });
        assert_eq!((seen.cases, seen.passed, seen.skipped), (3, 2, 1));
        assert_eq!(seen.checks, 3);
        assert_eq!(seen.failures.len(), 1);
        assert!(seen.failures[0].starts_with("bad:"), "{:?}", seen.failures);
        let w = seen.worst.unwrap();
        assert_eq!(w.what, "bad");
        assert!((w.abs_error - 0.5).abs() < 1e-6 && (w.ratio - 5.0).abs() < 1e-4);
        assert!(!observing(), "the observer is removed afterwards");
    }

    #[test]
    fn a_panic_ends_the_suite_as_a_failure() {
        let seen = observe(|| {
            case_started();
            panic!("invariant broken");
        });
        assert_eq!((seen.cases, seen.passed), (1, 0));
        assert!(seen.failures[0].contains("invariant broken"));
        assert!(!seen.all_passed());
    }

    #[test]
    fn accepted_malformed_input_fails_its_case() {
        let seen = observe(|| {
            assert!(rejection("x", true));
            assert!(rejection("y", false));
        });
        assert_eq!((seen.cases, seen.passed, seen.rejections), (2, 1, 2));
        assert_eq!(seen.worst.unwrap().ratio, f32::INFINITY);
    }

    #[test]
    #[should_panic(expected = "differ beyond")]
    fn without_an_observer_comparisons_still_panic() {
        let tol = Tolerance::EXACT;
        assert_close("p", array![1.0f32].view(), array![2.0f32].view(), tol);
    }
}
