//! Embedding lookup, softmax, argmax and seeded temperature/top-p sampling ([`Sampler`] for one row,
//! [`sample_top_p`] for a batch of rows with one sampler each: the operator the backends implement).
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

/// The validation of [`embedding`] (shared with the device backends): every id indexes a row of
/// `table`.
pub fn check_embedding<T>(table: &ArrayView2<T>, ids: &ArrayView1<i32>) -> Result<()> {
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
    Ok(())
}

/// Rows of `table` `[V, H]` at `ids` `[T]`.
pub fn embedding<T: Float>(table: ArrayView2<T>, ids: ArrayView1<i32>) -> Result<Array2<T>> {
    check_embedding(&table, &ids)?;
    let mut out = Array2::<T>::default((ids.len(), table.ncols()));
    for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
        row.assign(&table.row(id as usize));
    }
    Ok(out)
}

/// The validation of [`softmax`] (shared with the device backends): rows of at least one element.
pub fn check_softmax<T>(x: &ArrayView2<T>) -> Result<()> {
    nonempty_rows("softmax", x)
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
    check_softmax(&x)?;
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

/// The validation of [`argmax`] (shared with the device backends): rows of 1 to `i32::MAX` elements.
pub fn check_argmax<T>(x: &ArrayView2<T>) -> Result<()> {
    nonempty_rows("argmax", x)?;
    if x.ncols() > i32::MAX as usize {
        return Err(shape_error(
            "argmax",
            "x",
            x.shape(),
            "[T, V] with V <= i32::MAX",
        ));
    }
    Ok(())
}

/// Index of the maximum of each row; ties pick the lowest index.
pub fn argmax<T: Float>(x: ArrayView2<T>) -> Result<Array1<i32>> {
    check_argmax(&x)?;
    Ok(x.rows()
        .into_iter()
        .map(|r| argmax_row(r.iter().map(|v| v.to_f32())) as i32)
        .collect())
}

/// The validation of [`sample_top_p`] (shared with the device backends): one sampler per row, the
/// samplers sharing their temperature and top_p (a device draws a whole batch with one launch), and every
/// row a distribution [`Sampler::sample`] accepts (checked for all rows before any is sampled).
pub fn check_sample_top_p<T: Float>(samplers: &[Sampler], logits: &ArrayView2<T>) -> Result<()> {
    const OP: &str = "sample_top_p";
    if samplers.len() != logits.nrows() {
        return Err(invalid(
            OP,
            "samplers",
            format!("{} samplers for {} rows", samplers.len(), logits.nrows()),
        ));
    }
    let Some(first) = samplers.first() else {
        return Ok(());
    };
    let (temperature, top_p) = (first.temperature(), first.top_p());
    if samplers
        .iter()
        .any(|s| s.temperature() != temperature || s.top_p() != top_p)
    {
        return Err(invalid(
            OP,
            "samplers",
            "the samplers of one call must share temperature and top_p",
        ));
    }
    for row in logits.rows() {
        Sampler::check_logits(&row)?;
    }
    Ok(())
}

/// One id per row of `logits` `[R, V]`: row `r` drawn by `samplers[r]` exactly as
/// `samplers[r].sample(logits.row(r))` does (each sampler advances by one draw unless greedy). Every
/// row and sampler is checked first ([`check_sample_top_p`]), so a rejected call consumes no draw.
pub fn sample_top_p<T: Float>(
    samplers: &mut [Sampler],
    logits: ArrayView2<T>,
) -> Result<Array1<i32>> {
    check_sample_top_p(samplers, &logits)?;
    samplers
        .iter_mut()
        .zip(logits.rows())
        .map(|(s, row)| s.sample(row))
        .collect()
}

/// Temperature/top-p sampler with a seeded generator: the same seed gives the same tokens.
///
/// - `temperature == 0`: greedy, the lowest index among the maximal logits (no random draw).
/// - otherwise, in f32 with a fixed order of operations (the device kernel `sample_top_p_<t>` performs
///   the same operations, so on the simulator it returns the same ids bit for bit; on hardware whose
///   `exp` differs in the last ulp the two can differ only when a draw or the cut lands within rounding
///   of a boundary):
///   1. `m = max x`; weight `w_i = exp((x_i - m) * (1 / temperature))` (the subtraction and product
///      rounded to f32, the `exp` evaluated in f64 and rounded to f32); the maximum maps to 1;
///   2. `Z = M(0)` and `cut = top_p * Z`, where `M(v)` is the f32 sum, in ascending index order, of the
///      weights greater than `v`;
///   3. the nucleus keeps token `i` when the weight ranked before it (greater weights, equal weights of
///      lower index) is below `cut` — Hugging Face's `TopPLogitsWarper` rule (the smallest prefix of the
///      tokens by descending probability reaching `top_p`; the most likely token is always kept).
///      Found without sorting: `v` = the smallest f32 with `M(v) < cut` (bisection over the bit patterns
///      of `(0, 1]`; `M` is monotone, so `v` is the smallest kept weight), every weight above `v` is kept,
///      and the weights equal to `v` are kept in index order while `M(v) + (earlier ties) < cut`;
///   4. one uniform `u` in `[0, 1)` picks a token: `target = u * K` with `K` the f32 sum of the kept
///      weights in index order; the kept tokens are walked in **ascending id** order and the first
///      whose running f32 sum exceeds `target` is returned (the last kept one if none does).
/// - The uniforms are counter-based, not a stream: draw `n` (counting from 0) of a sampler seeded with
///   `seed` uses [`uniform`]`(seed, n)`; the device engine computes the same values for the kernel.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    seed: u64,
    draws: u64,
}

/// The splitmix64 finaliser: a bijection of `u64` that mixes every input bit into every output bit.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform of draw `draw` of a sampler seeded with `seed`: `mix64(mix64(seed) + (draw + 1)·φ)`
/// (φ = 0x9E3779B97F4A7C15, wrapping; the splitmix64 generator started at `mix64(seed)`), its top 24 bits
/// scaled to `[0, 1)` — exact in f32 and f64, so host and device draw the same value.
pub fn uniform(seed: u64, draw: u64) -> f32 {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
    let z = mix64(mix64(seed).wrapping_add(draw.wrapping_add(1).wrapping_mul(PHI)));
    (z >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

impl Sampler {
    /// `temperature` 0 means greedy, otherwise it must be finite with a finite reciprocal in f32 (the
    /// same bound as the device kernel's); `top_p` in (0, 1].
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Self> {
        const OP: &str = "Sampler::new";
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(invalid(
                OP,
                "temperature",
                format!("must be finite and >= 0, got {temperature}"),
            ));
        }
        // The weights scale by 1/temperature: a temperature whose reciprocal overflows f32 (below
        // ~2.9e-39) would turn the maximum's weight into 0·inf = NaN.
        if temperature != 0.0 && !(1.0 / temperature).is_finite() {
            return Err(invalid(
                OP,
                "temperature",
                format!("{temperature:e} is too small to invert in f32 (use 0 for greedy)"),
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
            seed,
            draws: 0,
        })
    }

    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    pub fn top_p(&self) -> f32 {
        self.top_p
    }

    /// The uniform of the next draw, advancing the counter (what [`sample`](Self::sample) uses when not
    /// greedy; the device engine takes it from here to sample on the device).
    pub fn next_uniform(&mut self) -> f32 {
        let u = uniform(self.seed, self.draws);
        self.draws += 1;
        u
    }

    pub(crate) fn check_logits<T: Float>(logits: &ArrayView1<T>) -> Result<Vec<f32>> {
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
    /// nucleus), most likely first (ties by id). Greedy samplers return the single argmax with
    /// probability 1.
    pub fn distribution<T: Float>(&self, logits: ArrayView1<T>) -> Result<Vec<(i32, f64)>> {
        let v = Self::check_logits(&logits)?;
        if self.temperature == 0.0 {
            return Ok(vec![(argmax_row(v.iter().copied()) as i32, 1.0)]);
        }
        let nucleus = Nucleus::new(&v, self.temperature, self.top_p);
        let kept = nucleus.kept();
        let mass: f64 = kept.iter().map(|&i| nucleus.w[i] as f64).sum();
        let mut dist: Vec<(i32, f64)> = kept
            .iter()
            .map(|&i| (i as i32, nucleus.w[i] as f64 / mass))
            .collect();
        // Stable: equal probabilities stay in ascending id order.
        dist.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(dist)
    }

    /// Draw one token from `logits` `[V]`.
    pub fn sample<T: Float>(&mut self, logits: ArrayView1<T>) -> Result<i32> {
        let v = Self::check_logits(&logits)?;
        if self.temperature == 0.0 {
            return Ok(argmax_row(v.iter().copied()) as i32);
        }
        let nucleus = Nucleus::new(&v, self.temperature, self.top_p);
        let kept = nucleus.kept();
        let total = kept.iter().fold(0f32, |s, &i| s + nucleus.w[i]);
        let target = self.next_uniform() * total;
        let mut cum = 0f32;
        for &i in &kept {
            cum += nucleus.w[i];
            if target < cum {
                return Ok(i as i32);
            }
        }
        // Rounding left the running sum at or under the target: the last kept token.
        Ok(*kept
            .last()
            .expect("the nucleus keeps the most likely token") as i32)
    }
}

/// The f32 weights of a row and its nucleus (steps 1-3 of [`Sampler`]'s contract).
struct Nucleus {
    w: Vec<f32>,
    /// The smallest kept weight.
    v: f32,
    cut: f32,
}

impl Nucleus {
    fn new(x: &[f32], temperature: f32, top_p: f32) -> Nucleus {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0f32 / temperature;
        let w: Vec<f32> = x
            .iter()
            .map(|&l| (((l - m) * inv_t) as f64).exp() as f32)
            .collect();
        let cut = top_p * mass_above(&w, 0.0);
        // M(lo) >= cut (M(0) = Z >= top_p Z) and M(hi) < cut (no weight exceeds 1, and cut > 0).
        let (mut lo, mut hi) = (0u32, 1f32.to_bits());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if mass_above(&w, f32::from_bits(mid)) < cut {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Nucleus {
            w,
            v: f32::from_bits(hi),
            cut,
        }
    }

    /// The kept ids, ascending.
    fn kept(&self) -> Vec<usize> {
        let mut tie_before = mass_above(&self.w, self.v);
        let mut kept = Vec::new();
        for (i, &w) in self.w.iter().enumerate() {
            if w > self.v {
                kept.push(i);
            } else if w == self.v && tie_before < self.cut {
                tie_before += w;
                kept.push(i);
            }
        }
        kept
    }
}

/// `M(v)`: the f32 sum, in index order, of the weights greater than `v`.
fn mass_above(w: &[f32], v: f32) -> f32 {
    w.iter().fold(0f32, |s, &w| if w > v { s + w } else { s })
}
