//! Conformance suite for the fused MLA cache write ([`MlaOps::mla_cache_write_fused`]): the RMSNorm of
//! `kv[:, :Dl]` and the rope of `kv[:, Dl:]` at each token's position, scattered into the paged cache at
//! `slot_mapping` (−1 skips).
//!
//! Every case starts from a cache of random contents: the written rows are compared with the CPU
//! reference under [`Tolerance::of::<T>()`](Tolerance::of) (each is a norm or a rotation rounded to
//! `T` once), and every row not in `slot_mapping` must come back bit-identical. Cases: a hand-worked
//! write (rows whose norm and rotation are worked out here: an RMS of exactly 2 and 1, positions 0 and
//! 1 of a plain table with inverse frequency 1); both rope layouts × plain and YaRN tables × 1 to 130
//! tokens with padding slots, over several blocks; DeepSeek-V3's widths (`Dl 512`, `Dr 64`, blocks of
//! 128, its YaRN table); a call whose every slot is padding and one with no tokens. Malformed inputs (a
//! slot at or past the capacity, a negative slot other than −1, a position past the table, a `kv` of
//! the wrong width, a norm weight of the wrong length) must be rejected, leaving the cache untouched.
//! Slots never repeat: the reference keeps the last row of a repeated slot, a device scattering rows in
//! parallel refuses them (see [`PagedLatentCache`]).

use super::cases::CaseRng;
use super::dense::{deepseek_rope, ran, rejects};
use super::tolerance::{assert_close, Tolerance};
use crate::backend::{Cpu, MlaOps};
use crate::mla::{CacheWriteParams, PagedLatentCache};
use crate::rope::{RopeConfig, RopeLayout, RopeTable, YarnScaling};
use crate::{Float, Result};
use ndarray::{s, Array1, Array2, Array3};

/// The reference must accept every case the suite generates; an error there is a bug in the suite.
#[track_caller]
fn reference<R>(what: &str, r: Result<R>) -> R {
    r.unwrap_or_else(|e| panic!("{what}: reference rejected a valid case: {e}"))
}

/// One write: a cache with random contents and what to write into it (public for the device tests that
/// add counters and mutations to the suite's cases).
#[derive(Clone)]
pub struct Case<T> {
    pub cache: PagedLatentCache<T>,
    pub kv: Array2<T>,
    pub weight: Array1<T>,
    pub eps: f32,
    pub positions: Array1<i32>,
    pub slots: Array1<i32>,
    pub table: RopeTable,
    pub layout: RopeLayout,
}

impl<T: Float> Case<T> {
    pub fn params(&self) -> CacheWriteParams<'_, T> {
        CacheWriteParams {
            norm_weight: self.weight.view(),
            eps: self.eps,
            positions: self.positions.view(),
            table: &self.table,
            layout: self.layout,
        }
    }

    /// The cache after the write on `b`.
    pub fn run<B: MlaOps>(&self, b: &B) -> Result<PagedLatentCache<T>> {
        let mut c = self.cache.clone();
        b.mla_cache_write_fused(&mut c, self.kv.view(), self.params(), self.slots.view())?;
        Ok(c)
    }
}

/// A table of `positions` rows at rotary width `dim`: plain, or YaRN-scaled with an attention factor
/// other than 1 (so a backend that drops it fails).
pub fn table(dim: usize, positions: usize, yarn: bool) -> RopeTable {
    let cfg = RopeConfig {
        dim,
        theta: 10000.0,
        scaling: yarn.then_some(YarnScaling {
            factor: 40.0,
            original_max_position_embeddings: 64,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 0.7,
            mscale_all_dim: 1.0,
        }),
    };
    reference("RopeTable::new", RopeTable::new(&cfg, positions))
}

/// `tokens` distinct slots of a `blocks × block_size` cache in random order, each `-1` with
/// probability `padding`; random `kv`, weight, positions; the cache filled with random values.
#[allow(clippy::too_many_arguments)]
pub fn random_case<T: Float>(
    rng: &mut CaseRng,
    tokens: usize,
    (dl, dr): (usize, usize),
    (blocks, block_size): (usize, usize),
    table: RopeTable,
    layout: RopeLayout,
    padding: f64,
) -> Case<T> {
    let mut cache = reference(
        "PagedLatentCache::new",
        PagedLatentCache::<T>::new(blocks, block_size, dl, dr),
    );
    cache.latent = rng.uniform(cache.latent.raw_dim(), -1.0, 1.0);
    cache.rope = rng.uniform(cache.rope.raw_dim(), -1.0, 1.0);
    let order = rng.permutation(blocks * block_size);
    let slots = (0..tokens)
        .map(|i| {
            if rng.chance(padding) {
                -1
            } else {
                order[i] as i32
            }
        })
        .collect();
    Case {
        kv: rng.normalish((tokens, dl + dr), 2.0),
        weight: rng.uniform(dl, 0.5, 1.5),
        eps: 1e-6,
        positions: rng.ints(tokens, 0, table.max_positions() as i32),
        slots,
        cache,
        table,
        layout,
    }
}

/// `got` against `want` (both caches after the same write): every element within `tol`, and every row
/// not in `c.slots` bit-identical to what `c.cache` held before.
pub fn compare<T: Float>(
    what: &str,
    c: &Case<T>,
    got: &PagedLatentCache<T>,
    want: &PagedLatentCache<T>,
    tol: Tolerance,
) {
    assert_close(
        &format!("{what} latent"),
        got.latent.view(),
        want.latent.view(),
        tol,
    );
    assert_close(
        &format!("{what} rope"),
        got.rope.view(),
        want.rope.view(),
        tol,
    );
    // Independent of the reference: the rows not written keep their contents exactly. The written
    // rows are zeroed on both sides, and the rest compared bit for bit.
    let bs = c.cache.block_size();
    let mask = |a: &Array3<T>| {
        let mut a = a.clone();
        for &slot in c.slots.iter().filter(|&&s| s >= 0) {
            let (b, o) = (slot as usize / bs, slot as usize % bs);
            a.slice_mut(s![b, o, ..]).fill(T::from_f32(0.0));
        }
        a
    };
    for (part, got, before) in [
        ("latent", &got.latent, &c.cache.latent),
        ("rope", &got.rope, &c.cache.rope),
    ] {
        assert_close(
            &format!("{what} {part} rows not written"),
            mask(got).view(),
            mask(before).view(),
            Tolerance::EXACT,
        );
    }
}

pub fn mla_cache_write_fused<B: MlaOps, T: Float>(b: &B) {
    let ty = T::DTYPE;
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x4D4C_0004);

    // Hand-worked: Dl 4, Dr 2, a plain table of width 2 (inverse frequency 1: position p rotates by p
    // radians), norm weight [1, 0.5, 2, 1], two blocks of 4 slots.
    // - token 0 → slot 5 at position 0: latent [2, 2, 2, 2] has RMS 2 → normed [1, 0.5, 2, 1]; the rope
    //   part [3, -1] is not rotated at position 0;
    // - token 1 → padding (-1): nothing written;
    // - token 2 → slot 2 at position 1: latent [1, -1, 1, -1] has RMS 1 → [1, -0.5, 2, -1]; [1, 0]
    //   rotated by 1 rad is [cos 1, sin 1] (both layouts: one pair).
    let mut c = random_case::<T>(
        &mut rng,
        3,
        (4, 2),
        (2, 4),
        table(2, 4, false),
        RopeLayout::Interleaved,
        0.0,
    );
    let rows = [
        [2.0, 2.0, 2.0, 2.0, 3.0, -1.0],
        [7.0, 7.0, 7.0, 7.0, 7.0, 7.0],
        [1.0, -1.0, 1.0, -1.0, 1.0, 0.0],
    ];
    c.kv = Array2::from_shape_fn((3, 6), |(t, j)| T::from_f32(rows[t][j]));
    c.weight = [1.0, 0.5, 2.0, 1.0]
        .iter()
        .map(|&w| T::from_f32(w))
        .collect();
    c.eps = 0.0;
    c.positions = Array1::from(vec![0, 3, 1]);
    c.slots = Array1::from(vec![5, -1, 2]);
    let mut want = c.cache.clone();
    let set = |a: &mut Array3<T>, (b, o): (usize, usize), v: &[f32]| {
        for (j, &x) in v.iter().enumerate() {
            a[[b, o, j]] = T::from_f32(x);
        }
    };
    set(&mut want.latent, (1, 1), &[1.0, 0.5, 2.0, 1.0]);
    set(&mut want.rope, (1, 1), &[3.0, -1.0]);
    set(&mut want.latent, (0, 2), &[1.0, -0.5, 2.0, -1.0]);
    set(&mut want.rope, (0, 2), &[1f32.cos(), 1f32.sin()]);
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        c.layout = layout;
        let what = format!("mla_cache_write_fused<{ty}> hand-worked {layout:?}");
        if let Some(got) = ran(b, &what, c.run(b)) {
            compare(&what, &c, &got, &want, tol);
        }
    }

    // Seeded random cases against the reference.
    let mut cases = Vec::new();
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        for yarn in [false, true] {
            for (tokens, dims, blocks, padding) in [
                (1, (16, 8), (2, 4), 0.0),
                (7, (32, 16), (3, 4), 0.3),
                (37, (40, 10), (4, 16), 0.2),
                (130, (64, 32), (3, 64), 0.1),
            ] {
                let what = format!(
                    "mla_cache_write_fused<{ty}> {layout:?} yarn={yarn} T={tokens} (Dl, Dr)={dims:?} \
                     (blocks, block)={blocks:?}"
                );
                let t = table(dims.1, 300, yarn);
                cases.push((
                    what,
                    random_case::<T>(&mut rng, tokens, dims, blocks, t, layout, padding),
                ));
            }
        }
    }
    // DeepSeek-V3: Dl 512, Dr 64, blocks of 128 and its YaRN table, 40 tokens with padding.
    let ds_table = reference("RopeTable::new", RopeTable::new(&deepseek_rope(64), 4096));
    cases.push((
        format!("mla_cache_write_fused<{ty}> DeepSeek-V3 T=40 Dl=512 Dr=64 block=128"),
        random_case::<T>(
            &mut rng,
            40,
            (512, 64),
            (3, 128),
            ds_table,
            RopeLayout::Interleaved,
            0.1,
        ),
    ));
    // Every slot padding: nothing changes; no tokens at all: nothing changes.
    let mut all_padding = random_case::<T>(
        &mut rng,
        5,
        (16, 8),
        (2, 4),
        table(8, 16, false),
        RopeLayout::HalfSplit,
        0.0,
    );
    all_padding.slots.fill(-1);
    cases.push((
        format!("mla_cache_write_fused<{ty}> every slot padding"),
        all_padding,
    ));
    cases.push((
        format!("mla_cache_write_fused<{ty}> no tokens"),
        random_case::<T>(
            &mut rng,
            0,
            (16, 8),
            (2, 4),
            table(8, 16, false),
            RopeLayout::Interleaved,
            0.0,
        ),
    ));
    for (what, c) in &cases {
        let want = reference(what, c.run(&Cpu));
        if let Some(got) = ran(b, what, c.run(b)) {
            compare(what, c, &got, &want, tol);
        }
    }

    // Malformed inputs: rejected, and the cache untouched.
    let base = random_case::<T>(
        &mut rng,
        5,
        (16, 8),
        (2, 4),
        table(8, 300, false),
        RopeLayout::HalfSplit,
        0.0,
    );
    let capacity = base.cache.capacity() as i32;
    let bad_slot = |slot: i32| {
        let mut c = base.clone();
        c.slots[2] = slot;
        c
    };
    let mut bad: Vec<(String, Case<T>)> = vec![
        ("a slot == capacity".into(), bad_slot(capacity)),
        ("slot -2".into(), bad_slot(-2)),
    ];
    let mut c = base.clone();
    c.positions[4] = 300;
    bad.push(("a position past the table".into(), c));
    let mut c = base.clone();
    c.kv = c.kv.slice(s![.., ..23]).to_owned();
    bad.push(("kv [5, 23] for Dl + Dr = 24".into(), c));
    let mut c = base.clone();
    c.weight = c.weight.slice(s![..15]).to_owned();
    bad.push(("a norm weight [15] for Dl = 16".into(), c));
    for (what, c) in &bad {
        let what = format!("mla_cache_write_fused<{ty}> with {what}");
        let mut cache = c.cache.clone();
        let r = b.mla_cache_write_fused(&mut cache, c.kv.view(), c.params(), c.slots.view());
        rejects(b, &what, r);
        assert_close(
            &format!("{what}: cache untouched (latent)"),
            cache.latent.view(),
            c.cache.latent.view(),
            Tolerance::EXACT,
        );
        assert_close(
            &format!("{what}: cache untouched (rope)"),
            cache.rope.view(),
            c.cache.rope.view(),
            Tolerance::EXACT,
        );
    }
}
