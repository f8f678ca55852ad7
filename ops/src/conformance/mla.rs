//! Conformance suites for the MLA operators: run a backend over the case matrix and compare with the
//! CPU reference.
//!
//! The matrix follows what DeepSeek-V3 serving meets: block sizes 16, 64 and 128 (Ascend uses 16 or
//! 128, FlashMLA 64); one, two and four query tokens (multi-token prediction); 1, 16 and 128 heads;
//! batch 64 with ragged lengths; contexts up to 32768; a batch whose
//! sequences have different lengths — the shortest equal to S (seq_len 1 when S = 1), one ending
//! exactly on a block boundary, one ending mid-block; block tables that are shuffled and non-contiguous,
//! with unused trailing entries set to -1; small odd widths for speed plus DeepSeek's
//! `Dl = 512, Dr = 64` (decode) and `Dqk = 192, Dv = 128` (prefill).
//!
//! Every cache row a decode must not read (unused blocks, rows past a sequence's end) holds NaN, as in
//! FlashMLA's own test: a backend that lets such a row leak into a result fails.
//!
//! Besides comparing with the reference, each suite checks one invariant that does not depend on it
//! (the first visible position of a sequence sees only itself, so its output is that position's value
//! row and its `lse` is its own score), and that the backend rejects malformed input.
//!
//! Tolerances: [`Tolerance::of::<T>()`](Tolerance::of) for the outputs and, per the harness rule, also
//! for the `f32` `lse` against the CPU reference; cache writes are copies and must be bit-exact. The
//! decode is also compared with its `f64` evaluation on the same rounded inputs ([`DecodeCase::exact`]):
//! `out` element-wise under `T`'s tolerance, `lse` under `f32`'s (it is computed in `f32` from exact
//! inputs whatever `T` is), and both over the whole output with [`SystematicBound`] (relative bias and
//! RMS error), which catches a 0.1% systematic error in bf16 that the element-wise bounds absorb
//! (`tests/npu_mutation.rs` proves it).

use super::cases::CaseRng;
use super::dense::{ran, rejects};
use super::tolerance::{assert_close, assert_unbiased, SystematicBound, Tolerance};
use crate::backend::mla::MlaOps;
use crate::backend::Cpu;
use crate::mla::PagedLatentCache;
use crate::{Float, Result};
use ndarray::{s, Array1, Array2, Array3, Array4};

pub use super::mla_cache_write::mla_cache_write_fused;

/// The reference must accept every case the suites generate; an error there is a bug in the reference.
#[track_caller]
fn reference<R>(what: &str, r: Result<R>) -> R {
    r.unwrap_or_else(|e| panic!("{what}: reference rejected a valid case: {e}"))
}

/// The shape of one decode case; [`DecodeCase::build`] fills it with seeded values.
#[derive(Debug, Clone)]
pub struct DecodeSpec {
    pub block_size: usize,
    pub heads: usize,
    /// `kv_lora_rank` (Dl).
    pub latent_dim: usize,
    /// `qk_rope_dim` (Dr).
    pub rope_dim: usize,
    /// Query tokens per sequence (S).
    pub s_q: usize,
    /// One entry per sequence, each `≥ s_q`.
    pub seq_lens: Vec<usize>,
    /// Blocks in the cache that no sequence uses (they hold NaN).
    pub spare_blocks: usize,
    /// Block-table columns beyond the longest sequence's need (set to -1).
    pub extra_cols: usize,
    pub scale: f32,
}

/// A ready-to-run decode: queries, a filled cache and its block table.
#[derive(Debug, Clone)]
pub struct DecodeCase<T> {
    pub q_nope: Array4<T>,
    pub q_rope: Array4<T>,
    pub cache: PagedLatentCache<T>,
    pub block_table: Array2<i32>,
    pub seq_lens: Array1<i32>,
    pub scale: f32,
}

impl<T: Float> DecodeCase<T> {
    /// Blocks are handed out in a random order, so each sequence's blocks are shuffled and
    /// non-contiguous. Token values are uniform in `[-1, 1)`; every row no sequence covers is NaN.
    pub fn build(rng: &mut CaseRng, spec: &DecodeSpec) -> Result<DecodeCase<T>> {
        let bs = spec.block_size;
        let need: Vec<usize> = spec.seq_lens.iter().map(|l| l.div_ceil(bs)).collect();
        let num_blocks = need.iter().sum::<usize>() + spec.spare_blocks;
        let max_blocks = need.iter().copied().max().unwrap_or(0) + spec.extra_cols;
        let mut cache = PagedLatentCache::new(num_blocks, bs, spec.latent_dim, spec.rope_dim)?;
        cache.latent.fill(T::from_f32(f32::NAN));
        cache.rope.fill(T::from_f32(f32::NAN));
        let batch = spec.seq_lens.len();
        let mut block_table = Array2::from_elem((batch, max_blocks), -1i32);
        let mut free = rng.permutation(num_blocks).into_iter();
        for (b, &len) in spec.seq_lens.iter().enumerate() {
            for k in 0..need[b] {
                let block = free.next().expect("num_blocks counts every needed block");
                block_table[[b, k]] = block as i32;
                let rows = bs.min(len - k * bs);
                let lat = rng.uniform::<T, _>((rows, spec.latent_dim), -1.0, 1.0);
                let rope = rng.uniform::<T, _>((rows, spec.rope_dim), -1.0, 1.0);
                cache.latent.slice_mut(s![block, ..rows, ..]).assign(&lat);
                cache.rope.slice_mut(s![block, ..rows, ..]).assign(&rope);
            }
        }
        let q_shape = (batch, spec.s_q, spec.heads, spec.latent_dim);
        Ok(DecodeCase {
            q_nope: rng.uniform(q_shape, -1.0, 1.0),
            q_rope: rng.uniform((batch, spec.s_q, spec.heads, spec.rope_dim), -1.0, 1.0),
            cache,
            block_table,
            seq_lens: spec.seq_lens.iter().map(|&l| l as i32).collect(),
            scale: spec.scale,
        })
    }

    /// Run the decode on `backend`.
    pub fn run<B: MlaOps>(&self, backend: &B) -> Result<(Array4<T>, Array3<f32>)> {
        backend.mla_decode(
            self.q_nope.view(),
            self.q_rope.view(),
            &self.cache,
            self.block_table.view(),
            self.seq_lens.view(),
            self.scale,
        )
    }
}

impl<T: Float> DecodeCase<T> {
    /// The decode evaluated in `f64` on this case's (rounded) values: `(out [B,S,H,Dl], lse [B,H,S])`,
    /// the exact side of the systematic-error check.
    pub fn exact(&self) -> (Array4<f64>, Array3<f64>) {
        let (batch, s_q, heads, dl) = self.q_nope.dim();
        let bs = self.cache.block_size();
        let f = |v: &T| f64::from(v.to_f32());
        let scale = f64::from(self.scale);
        let mut out = Array4::zeros((batch, s_q, heads, dl));
        let mut lse = Array3::zeros((batch, heads, s_q));
        for b in 0..batch {
            let len = self.seq_lens[b] as usize;
            let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..len)
                .map(|j| {
                    let block = self.block_table[[b, j / bs]] as usize;
                    (
                        self.cache
                            .latent
                            .slice(s![block, j % bs, ..])
                            .iter()
                            .map(f)
                            .collect(),
                        self.cache
                            .rope
                            .slice(s![block, j % bs, ..])
                            .iter()
                            .map(f)
                            .collect(),
                    )
                })
                .collect();
            for si in 0..s_q {
                let visible = len - s_q + si + 1;
                for h in 0..heads {
                    let qn: Vec<f64> = self.q_nope.slice(s![b, si, h, ..]).iter().map(f).collect();
                    let qr: Vec<f64> = self.q_rope.slice(s![b, si, h, ..]).iter().map(f).collect();
                    let scores: Vec<f64> = rows[..visible]
                        .iter()
                        .map(|(l, r)| {
                            scale
                                * (qn.iter().zip(l).map(|(a, c)| a * c).sum::<f64>()
                                    + qr.iter().zip(r).map(|(a, c)| a * c).sum::<f64>())
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    lse[[b, h, si]] = m + sum.ln();
                    // Accumulated in a plain row: indexing the 4-d array per product was most of the time.
                    let mut acc = vec![0.0f64; dl];
                    for (wj, (l, _)) in w.iter().zip(&rows) {
                        acc.iter_mut()
                            .zip(l)
                            .for_each(|(a, ld)| *a += wj / sum * ld);
                    }
                    out.slice_mut(s![b, si, h, ..])
                        .iter_mut()
                        .zip(&acc)
                        .for_each(|(o, a)| *o = *a);
                }
            }
        }
        (out, lse)
    }
}

/// The decode matrix: block sizes × heads × S over small widths, plus DeepSeek's widths.
pub fn decode_specs() -> Vec<DecodeSpec> {
    let small = |block_size: usize, heads: usize, s_q: usize, seq_lens: Vec<usize>| DecodeSpec {
        block_size,
        heads,
        latent_dim: 36,
        rope_dim: 12,
        s_q,
        seq_lens,
        spare_blocks: 2,
        extra_cols: 1,
        scale: 1.0 / ((36 + 12) as f32).sqrt(),
    };
    let mut specs = Vec::new();
    for block_size in [16, 64, 128] {
        for heads in [1, 16] {
            for s_q in [1, 2, 4] {
                // Shortest possible, one block exactly full, mid-block after two blocks, one short.
                let lens = vec![s_q, block_size, 2 * block_size + 5, s_q + 3];
                specs.push(small(block_size, heads, s_q, lens));
            }
        }
    }
    // 128 heads (S·H = 256 query rows: several cube M tiles and UB slabs per task).
    specs.push(small(128, 128, 2, vec![2, 300]));
    // Batch 64 with ragged lengths 1..~250 (every sequence one chunk).
    specs.push(small(
        16,
        16,
        1,
        (0..64).map(|i| 1 + (i * 37) % 250).collect(),
    ));
    // Long contexts: 32768 and 4100 cached tokens next to short ones (many chunks per sequence; the
    // last chunk holds the S causal query positions).
    specs.push(DecodeSpec {
        heads: 4,
        ..small(128, 4, 4, vec![32768, 4, 4100, 77])
    });
    // DeepSeek-V3 widths and softmax scale (192^-0.5 · mscale²).
    specs.push(DecodeSpec {
        block_size: 64,
        heads: 16,
        latent_dim: 512,
        rope_dim: 64,
        s_q: 2,
        seq_lens: vec![2, 131],
        spare_blocks: 1,
        extra_cols: 2,
        scale: 0.1352,
    });
    specs
}

/// The paged cache write: rows land in the slots named, padding (-1) is skipped, nothing else changes.
pub fn mla_cache_write<B: MlaOps, T: Float>(b: &B) {
    let mut rng = CaseRng::new(0x4D4C_0001);
    for (block_size, dl, dr) in [(16, 36, 12), (64, 36, 12), (128, 36, 12), (64, 512, 64)] {
        let num_blocks = 3;
        let capacity = num_blocks * block_size;
        // Pre-existing contents, so a backend that clears or shifts other rows fails.
        let mut before = reference(
            "PagedLatentCache::new",
            PagedLatentCache::<T>::new(num_blocks, block_size, dl, dr),
        );
        before.latent = rng.uniform(before.latent.raw_dim(), -1.0, 1.0);
        before.rope = rng.uniform(before.rope.raw_dim(), -1.0, 1.0);
        for n in [1, block_size + 3] {
            // Distinct slots in random order (first, last and a block boundary among them), some padding.
            let mut order: Vec<usize> = rng
                .permutation(capacity)
                .into_iter()
                .filter(|&v| v != 0 && v != capacity - 1)
                .collect();
            order.splice(0..0, [capacity - 1, 0]);
            let mut slots: Vec<i32> = order.into_iter().take(n).map(|v| v as i32).collect();
            if n > 2 {
                slots[2] = -1;
            }
            let slots = Array1::from(slots);
            let latent = rng.uniform::<T, _>((n, dl), -1.0, 1.0);
            let k_rope = rng.uniform::<T, _>((n, dr), -1.0, 1.0);
            let what = format!(
                "mla_cache_write<{}> block={block_size} N={n} Dl={dl} Dr={dr}",
                T::DTYPE
            );
            let mut want = before.clone();
            reference(
                &what,
                Cpu.mla_cache_write(&mut want, latent.view(), k_rope.view(), slots.view()),
            );
            let mut got = before.clone();
            if ran(
                b,
                &what,
                b.mla_cache_write(&mut got, latent.view(), k_rope.view(), slots.view()),
            )
            .is_some()
            {
                assert_close(
                    &format!("{what} latent"),
                    got.latent.view(),
                    want.latent.view(),
                    Tolerance::EXACT,
                );
                assert_close(
                    &format!("{what} rope"),
                    got.rope.view(),
                    want.rope.view(),
                    Tolerance::EXACT,
                );
                // Independent of the reference: the written row is where the slot says.
                let (blk, off) = (
                    slots[0] as usize / block_size,
                    slots[0] as usize % block_size,
                );
                assert_close(
                    &format!("{what} last slot"),
                    got.latent.slice(s![blk, off, ..]),
                    latent.row(0),
                    Tolerance::EXACT,
                );
            }
        }
        let mut cache = before.clone();
        let one = rng.uniform::<T, _>((1, dl), -1.0, 1.0);
        let one_r = rng.uniform::<T, _>((1, dr), -1.0, 1.0);
        let bad = Array1::from(vec![capacity as i32]);
        rejects(
            b,
            "mla_cache_write to slot == capacity",
            b.mla_cache_write(&mut cache, one.view(), one_r.view(), bad.view()),
        );
    }
}

/// Absorbed decode over the paged cache.
pub fn mla_decode<B: MlaOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x4D4C_0002);
    for spec in decode_specs() {
        let case = reference("DecodeCase::build", DecodeCase::<T>::build(&mut rng, &spec));
        let what = format!(
            "mla_decode<{}> block={} H={} S={} Dl={} Dr={} seq_lens={:?}",
            T::DTYPE,
            spec.block_size,
            spec.heads,
            spec.s_q,
            spec.latent_dim,
            spec.rope_dim,
            spec.seq_lens
        );
        let (want_out, want_lse) = reference(&what, case.run(&Cpu));
        let Some((out, lse)) = ran(b, &what, case.run(b)) else {
            continue;
        };
        assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
        assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
        // Against the exact evaluation: element-wise and over the whole output (systematic errors).
        let (exact_out, exact_lse) = case.exact();
        assert_unbiased(
            &format!("{what} out vs f64"),
            out.view(),
            exact_out.view(),
            tol,
            SystematicBound::of::<T>(out.len()),
        );
        assert_unbiased(
            &format!("{what} lse vs f64"),
            lse.view(),
            exact_lse.view(),
            Tolerance::of::<f32>(),
            SystematicBound::f32(lse.len()),
        );
        // Independent of the reference: in a sequence of exactly S tokens, query 0 sees position 0 only.
        for bi in (0..spec.seq_lens.len()).filter(|&bi| spec.seq_lens[bi] == spec.s_q) {
            let block = case.block_table[[bi, 0]] as usize;
            let latent0 = case.cache.latent.slice(s![block, 0, ..]);
            let rope0 = case.cache.rope.slice(s![block, 0, ..]);
            for h in 0..spec.heads {
                let w = format!("{what} b={bi} h={h}: sole visible position");
                assert_close(&w, out.slice(s![bi, 0, h, ..]), latent0, tol);
                let q = case.q_nope.slice(s![bi, 0, h, ..]);
                let qr = case.q_rope.slice(s![bi, 0, h, ..]);
                let score: f32 = q
                    .iter()
                    .zip(latent0)
                    .map(|(a, c)| a.to_f32() * c.to_f32())
                    .sum::<f32>()
                    + qr.iter()
                        .zip(rope0)
                        .map(|(a, c)| a.to_f32() * c.to_f32())
                        .sum::<f32>();
                assert_close(
                    &format!("{w} lse"),
                    lse.slice(s![bi, h, 0..1]),
                    Array1::from(vec![case.scale * score]).view(),
                    tol,
                );
            }
        }
    }

    let spec = DecodeSpec {
        block_size: 16,
        heads: 2,
        latent_dim: 8,
        rope_dim: 4,
        s_q: 1,
        seq_lens: vec![20, 3],
        spare_blocks: 0,
        extra_cols: 0,
        scale: 0.5,
    };
    let case = reference("DecodeCase::build", DecodeCase::<T>::build(&mut rng, &spec));
    let mut bad = case.clone();
    bad.block_table[[0, 1]] = bad.cache.num_blocks() as i32;
    rejects(
        b,
        "mla_decode with a used block-table entry == num_blocks",
        bad.run(b),
    );
    let mut bad = case.clone();
    bad.seq_lens[1] = 17;
    rejects(
        b,
        "mla_decode with seq_len beyond the blocks given",
        bad.run(b),
    );
    let mut bad = case;
    bad.seq_lens[1] = 0;
    rejects(b, "mla_decode with seq_len 0", bad.run(b));
}

/// Causal attention over packed variable-length sequences: against the CPU reference and against the
/// `f64` evaluation with the systematic-error bounds ([`super::mla_prefill::check_prefill`]). Packs
/// with lengths 0, 1, 7, 17, 33, 64, 130 and 300 (1 head and 16 heads; DeepSeek's `Dqk = 192, Dv = 128`
/// on the packs up to 318 tokens).
pub fn mla_prefill<B: MlaOps, T: Float>(b: &B) {
    use super::mla_prefill::{check_prefill, PrefillCase};
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x4D4C_0003);
    let packs: [&[usize]; 5] = [&[1], &[1, 7, 0, 33], &[64], &[5, 1, 130], &[1, 17, 300]];
    for &heads in &[1usize, 16] {
        for &(dqk, dv) in &[(24usize, 16usize), (192, 128)] {
            for lens in packs {
                let case = PrefillCase::<T>::build(&mut rng, heads, (dqk, dv), lens, &[]);
                let what = format!(
                    "mla_prefill<{}> H={heads} Dqk={dqk} Dv={dv} lens={lens:?}",
                    T::DTYPE
                );
                let (q, k, v, cu) = (&case.q, &case.k, &case.v, &case.cu_q);
                let (want_out, want_lse) = reference(
                    &what,
                    Cpu.mla_prefill(q.view(), k.view(), v.view(), cu.view(), case.scale),
                );
                let Some((out, lse)) = ran(
                    b,
                    &what,
                    b.mla_prefill(q.view(), k.view(), v.view(), cu.view(), case.scale),
                ) else {
                    continue;
                };
                assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
                assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
                check_prefill(&what, &case, (&out, &lse));
            }
        }
    }
    let q = rng.uniform::<T, _>((4, 2, 8), -1.0, 1.0);
    let v = rng.uniform::<T, _>((4, 2, 6), -1.0, 1.0);
    let cu = Array1::from(vec![0, 3]);
    rejects(
        b,
        "mla_prefill with cu_seqlens ending before T",
        b.mla_prefill(q.view(), q.view(), v.view(), cu.view(), 1.0),
    );
    let cu = Array1::from(vec![0, 3, 2, 4]);
    rejects(
        b,
        "mla_prefill with decreasing cu_seqlens",
        b.mla_prefill(q.view(), q.view(), v.view(), cu.view(), 1.0),
    );
}

/// Generate `#[test]` functions running every MLA suite on `$backend` for f32, f16 and bf16, in modules
/// `mla_f32`, `mla_f16` and `mla_bf16`. `$backend` is evaluated once per test; items of the invoking
/// module are visible to it.
///
/// ```ignore
/// dsnpu_ops::mla_conformance!(dsnpu_ops::backend::Cpu);
/// ```
#[macro_export]
macro_rules! mla_conformance {
    ($backend:expr) => {
        mod mla_f32 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__mla_conformance_tests!($backend, f32);
        }
        mod mla_f16 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__mla_conformance_tests!($backend, $crate::half::f16);
        }
        mod mla_bf16 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__mla_conformance_tests!($backend, $crate::half::bf16);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __mla_conformance_tests {
    ($backend:expr, $t:ty) => {
        $crate::__mla_conformance_tests!(@each $backend, $t,
            mla_cache_write, mla_cache_write_fused, mla_decode, mla_prefill);
    };
    (@each $backend:expr, $t:ty, $($suite:ident),*) => {
        $(
            #[test]
            fn $suite() {
                $crate::conformance::mla::$suite::<_, $t>(&$backend);
            }
        )*
    };
}
