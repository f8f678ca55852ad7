//! Embedding lookup, softmax, argmax and seeded temperature/top-p sampling.
//!
//! Validation: `embedding` checks every id against the table (`IndexOutOfRange` naming the position);
//! `softmax` and `argmax` need rows of at least one element; the [`Sampler`] checks its parameters and
//! rejects logits it cannot turn into a distribution (NaN, `+inf`, or every entry `-inf`).
//!
//! Value conventions (documented because devices differ):
//! - `softmax` computes `exp(x - max)` / sum in `f32`. `-inf` entries get probability 0. A row containing
//!   NaN, `+inf`, or only `-inf` comes out all NaN (what PyTorch gives); the values are not an error here
//!   because attention-style callers may legitimately mask whole rows and decide themselves.
//! - `argmax` returns the lowest index among equal maxima. NaN counts as larger than every number (as in
//!   `torch.argmax` and `numpy.argmax`), so a row with NaN returns its first NaN.
use crate::error::{invalid, shape_error};
use crate::{Float, OpsError, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rows of `table` `[V, H]` at `ids` `[T]`.
pub fn embedding<T: Float>(table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
    let v = table.nrows();
    for (position, &id) in ids.iter().enumerate() {
        if id < 0 || id as usize >= v {
            return Err(OpsError::IndexOutOfRange {
                op: "embedding",
                arg: "ids",
                index: id as i64,
                position,
                bound: v as i64,
            });
        }
    }
    let mut out = Array2::<T>::default((ids.len(), table.ncols()));
    for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
        row.assign(&table.row(id as usize));
    }
    Ok(out)
}

fn nonempty_rows<T>(op: &'static str, x: &ArrayView2<T>) -> Result<()> {
    if x.ncols() == 0 {
        Err(shape_error(op, "x", x.shape(), "[T, V] with V >= 1"))
    } else {
        Ok(())
    }
}

/// Softmax of one row of `f32` values into `out` (see the module docs for non-finite inputs).
fn softmax_row(row: &[f32], out: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if row.iter().any(|v| v.is_nan()) || max == f32::INFINITY || max == f32::NEG_INFINITY {
        out.fill(f32::NAN);
        return;
    }
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v - max).exp();
        sum += *o;
    }
    // sum >= 1: the maximum contributes exp(0).
    out.iter_mut().for_each(|o| *o /= sum);
}

/// Softmax over the last axis, computed in f32.
pub fn softmax<T: Float>(x: ArrayView2<T>) -> Result<Array2<f32>> {
    nonempty_rows("softmax", &x)?;
    let mut out = Array2::<f32>::zeros(x.raw_dim());
    let mut row = vec![0f32; x.ncols()];
    let mut res = vec![0f32; x.ncols()];
    for (xr, mut or) in x.rows().into_iter().zip(out.rows_mut()) {
        row.iter_mut().zip(xr).for_each(|(r, v)| *r = v.to_f32());
        softmax_row(&row, &mut res);
        or.iter_mut().zip(&res).for_each(|(o, &r)| *o = r);
    }
    Ok(out)
}

/// Index of the first maximum of `values` (NaN above everything; see the module docs).
fn argmax_row(values: impl Iterator<Item = f32>) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, v) in values.enumerate() {
        if v.is_nan() {
            return i;
        }
        if i == 0 || v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// Index of the maximum of each row; ties pick the lowest index.
pub fn argmax<T: Float>(x: ArrayView2<T>) -> Result<Array1<i32>> {
    nonempty_rows("argmax", &x)?;
    if x.ncols() > i32::MAX as usize {
        return Err(shape_error(
            "argmax",
            "x",
            x.shape(),
            "[T, V] with V <= i32::MAX",
        ));
    }
    Ok(x.rows()
        .into_iter()
        .map(|r| argmax_row(r.iter().map(|v| v.to_f32())) as i32)
        .collect())
}

/// Temperature/top-p sampler with a seeded generator: the same seed gives the same tokens.
///
/// - `temperature == 0`: greedy, the lowest index among the maximal logits (no random draw).
/// - otherwise: `p = softmax(logits / temperature)` (in `f64`); tokens are ordered by descending `p`,
///   ties by ascending index; the nucleus keeps every token whose **preceding** cumulative probability is
///   below `top_p` (the smallest prefix reaching `top_p`, as Hugging Face's `TopPLogitsWarper`), so the most
///   likely token is always kept; one uniform draw from ChaCha8 in `[0, 1)` picks a token from the
///   renormalised nucleus.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// `temperature` 0 means greedy; `top_p` in (0, 1].
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Self> {
        const OP: &str = "Sampler::new";
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(invalid(
                OP,
                "temperature",
                format!("must be finite and >= 0, got {temperature}"),
            ));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(invalid(
                OP,
                "top_p",
                format!("must be in (0, 1], got {top_p}"),
            ));
        }
        Ok(Sampler {
            temperature,
            top_p,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    pub fn top_p(&self) -> f32 {
        self.top_p
    }

    fn check_logits<T: Float>(logits: &ArrayView1<T>) -> Result<Vec<f32>> {
        const OP: &str = "Sampler::sample";
        if logits.is_empty() {
            return Err(shape_error(OP, "logits", logits.shape(), "[V] with V >= 1"));
        }
        if logits.len() > i32::MAX as usize {
            return Err(shape_error(
                OP,
                "logits",
                logits.shape(),
                "[V] with V <= i32::MAX",
            ));
        }
        let v: Vec<f32> = logits.iter().map(|x| x.to_f32()).collect();
        if let Some(i) = v.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
            return Err(invalid(OP, "logits", format!("entry {i} is {}", v[i])));
        }
        if v.iter().all(|x| *x == f32::NEG_INFINITY) {
            return Err(invalid(OP, "logits", "every entry is -inf"));
        }
        Ok(v)
    }

    /// The tokens `sample` can return for `logits` and their probabilities (renormalised over the
    /// nucleus), most likely first. Greedy samplers return the single argmax with probability 1.
    pub fn distribution<T: Float>(&self, logits: ArrayView1<T>) -> Result<Vec<(i32, f64)>> {
        let v = Self::check_logits(&logits)?;
        if self.temperature == 0.0 {
            return Ok(vec![(argmax_row(v.iter().copied()) as i32, 1.0)]);
        }
        let t = self.temperature as f64;
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        // exp((l - max) / t): the maximum maps to 1, so the sum is >= 1 and nothing overflows.
        let weights: Vec<f64> = v.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut order: Vec<usize> = (0..v.len()).collect();
        // Stable sort: equal probabilities stay in ascending index order.
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
        let top_p = self.top_p as f64;
        let mut kept = Vec::new();
        let mut before = 0.0;
        for &i in &order {
            if before >= top_p || weights[i] == 0.0 {
                break;
            }
            let p = weights[i] / total;
            kept.push((i as i32, p));
            before += p;
        }
        let mass: f64 = kept.iter().map(|(_, p)| p).sum();
        kept.iter_mut().for_each(|(_, p)| *p /= mass);
        Ok(kept)
    }

    /// Draw one token from `logits` `[V]`.
    pub fn sample<T: Float>(&mut self, logits: ArrayView1<T>) -> Result<i32> {
        let dist = self.distribution(logits)?;
        if self.temperature == 0.0 {
            return Ok(dist[0].0);
        }
        let u: f64 = self.rng.gen();
        let mut cum = 0.0;
        for &(id, p) in &dist {
            cum += p;
            if u < cum {
                return Ok(id);
            }
        }
        // Rounding left the cumulative sum a hair under u: the last kept token.
        Ok(dist[dist.len() - 1].0)
    }
}
