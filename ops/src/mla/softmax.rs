//! The f32 arithmetic both MLA references share: dot products and a max-subtracted softmax that
//! also yields the log-sum-exp.

/// `Σ a[i]·b[i]`, accumulated in order in `f32`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Replace `scores` by their softmax weights and return `ln Σ exp(scores)` (natural log).
///
/// The maximum is subtracted first so large scores do not overflow. `scores` is never empty in the
/// callers (every query sees at least its own position); an empty slice returns `-inf`.
pub(crate) fn softmax_lse(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if scores.is_empty() {
        return max;
    }
    let mut sum = 0.0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in scores.iter_mut() {
        *s /= sum;
    }
    max + sum.ln()
}

/// `out += w · row`.
pub(crate) fn axpy(out: &mut [f32], w: f32, row: &[f32]) {
    for (o, r) in out.iter_mut().zip(row) {
        *o += w * r;
    }
}
