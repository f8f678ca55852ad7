//! The fused MLA cache write (`mla_cache_write_<t>`) on the device backend against the CPU reference
//! (`mla::mla_cache_write_fused`, itself the model's unfused rms_norm + rope + write), with every launch
//! checked (launch-blocking stream: no fault and **zero sanitizer warnings**): the conformance suite in
//! f32/f16/bf16 (both rope layouts, plain and YaRN tables, padding slots, several blocks per launch), a
//! DeepSeek-width case with its traffic counters, the reference's errors (each variant), and a mutation
//! check that the comparison sees a 0.1% error in the norm weight and a wrong layout.

use std::sync::OnceLock;

use dsnpu_ops::backend::Npu;
use dsnpu_ops::conformance::tolerance::{assert_close, check_close, Tolerance};
use dsnpu_ops::conformance::{self, cases::CaseRng};
use dsnpu_ops::mla::{mla_cache_write_fused, CacheWriteParams, PagedLatentCache};
use dsnpu_ops::rope::{RopeConfig, RopeLayout, RopeTable, YarnScaling};
use dsnpu_ops::{Float, OpsError};
use dsnpu_runtime::sim_counters;
use half::{bf16, f16};
use ndarray::{s, Array1, Array2};

fn checked_npu() -> Npu {
    static FIRST: OnceLock<Npu> = OnceLock::new();
    let first = FIRST.get_or_init(|| Npu::new(0).expect("open device 0 and load the kernels"));
    let npu = Npu::with_library(first.library().clone()).expect("a stream on device 0");
    npu.stream().set_launch_blocking(true);
    npu
}

fn table(dim: usize, positions: usize, yarn: bool) -> RopeTable {
    let scaling = yarn.then_some(YarnScaling {
        factor: 40.0,
        original_max_position_embeddings: 64,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 0.7,
        mscale_all_dim: 1.0,
    });
    RopeTable::new(
        &RopeConfig {
            dim,
            theta: 10000.0,
            scaling,
        },
        positions,
    )
    .unwrap()
}

/// One random case: the cache starts with random contents (rows not written must keep them exactly).
struct Case<T> {
    cache: PagedLatentCache<T>,
    kv: Array2<T>,
    weight: Array1<T>,
    positions: Array1<i32>,
    slots: Array1<i32>,
    table: RopeTable,
    layout: RopeLayout,
}

#[allow(clippy::too_many_arguments)]
fn case<T: Float>(
    seed: u64,
    tokens: usize,
    (dl, dr): (usize, usize),
    (blocks, block_size): (usize, usize),
    layout: RopeLayout,
    yarn: bool,
    padding: f64,
) -> Case<T> {
    let mut r = CaseRng::new(seed);
    let mut cache = PagedLatentCache::<T>::new(blocks, block_size, dl, dr).unwrap();
    cache.latent = r.normalish(cache.latent.raw_dim(), 1.0);
    cache.rope = r.normalish(cache.rope.raw_dim(), 1.0);
    let capacity = blocks * block_size;
    assert!(tokens <= capacity);
    let order = r.permutation(capacity);
    let slots: Array1<i32> = (0..tokens)
        .map(|i| {
            if r.chance(padding) {
                -1
            } else {
                order[i] as i32
            }
        })
        .collect();
    let table = table(dr, 300, yarn);
    Case {
        kv: r.normalish((tokens, dl + dr), 2.0),
        weight: r.uniform(dl, 0.5, 1.5),
        positions: r.ints(tokens, 0, 300),
        slots,
        cache,
        table,
        layout,
    }
}

impl<T: Float> Case<T> {
    fn params(&self) -> CacheWriteParams<'_, T> {
        CacheWriteParams {
            norm_weight: self.weight.view(),
            eps: 1e-6,
            positions: self.positions.view(),
            table: &self.table,
            layout: self.layout,
        }
    }

    fn reference(&self) -> PagedLatentCache<T> {
        let mut c = self.cache.clone();
        mla_cache_write_fused(&mut c, self.kv.view(), self.params(), self.slots.view()).unwrap();
        c
    }

    fn device(&self, npu: &Npu) -> PagedLatentCache<T> {
        let mut c = self.cache.clone();
        npu.mla_cache_write_fused(&mut c, self.kv.view(), self.params(), self.slots.view())
            .unwrap();
        c
    }
}

/// The device cache against the reference: written rows within the dtype's tolerance, every other row
/// bit-identical to what was there.
fn compare<T: Float>(what: &str, c: &Case<T>, got: &PagedLatentCache<T>) {
    let want = c.reference();
    let tol = Tolerance::of::<T>();
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
    let bs = c.cache.block_size();
    for slot in 0..c.cache.capacity() as i32 {
        if c.slots.iter().any(|&s| s == slot) {
            continue;
        }
        let (b, o) = (slot as usize / bs, slot as usize % bs);
        for (got, was) in [
            (
                got.latent.slice(s![b, o, ..]),
                c.cache.latent.slice(s![b, o, ..]),
            ),
            (
                got.rope.slice(s![b, o, ..]),
                c.cache.rope.slice(s![b, o, ..]),
            ),
        ] {
            let same = got
                .iter()
                .zip(was)
                .all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
            assert!(
                same,
                "{what}: slot {slot} was not in slot_mapping but changed"
            );
        }
    }
}

// The conformance suite (`dsnpu_ops::conformance::mla::mla_cache_write_fused`: hand-worked rows, both
// layouts, plain and YaRN tables, padding, DeepSeek's widths, malformed inputs), which `npu_conformance`
// and `dsnpu verify` also run, here on a launch-blocking stream: every launch is also checked for
// faults and sanitizer warnings.

#[test]
fn conformance_f32() {
    conformance::mla::mla_cache_write_fused::<_, f32>(&checked_npu());
}

#[test]
fn conformance_f16() {
    conformance::mla::mla_cache_write_fused::<_, f16>(&checked_npu());
}

#[test]
fn conformance_bf16() {
    conformance::mla::mla_cache_write_fused::<_, bf16>(&checked_npu());
}

/// DeepSeek-V3's widths (Dl 512, Dr 64, block 128, its YaRN table) in bf16, 300 tokens with padding:
/// the launch writes exactly the non-padding rows, once each, and reads each row, its table rows and the
/// weight once per block.
#[test]
fn deepseek_width_bf16_with_counters() {
    let npu = checked_npu();
    let c = case::<bf16>(
        99,
        300,
        (512, 64),
        (4, 128),
        RopeLayout::Interleaved,
        true,
        0.1,
    );
    compare("deepseek bf16", &c, &c.device(&npu));
    let l = sim_counters::last_launch_counters(npu.stream())
        .unwrap()
        .expect("a completed launch");
    assert_eq!(
        (l.kernel.as_str(), l.status, l.warnings),
        ("mla_cache_write_bf16", 0, 0)
    );
    let written = c.slots.iter().filter(|&&s| s != -1).count() as u64;
    assert_eq!(l.totals.ub_to_gm_bytes, written * 576 * 2, "{l:?}");
    // Per written token: its row (576 bf16) and two table rows (32 f32 each); per block the weight.
    let blocks = u64::from(l.num_blocks);
    assert_eq!(
        l.totals.gm_to_ub_bytes,
        written * (576 * 2 + 2 * 32 * 4) + blocks * 512 * 2,
        "{l:?}"
    );
}

/// The comparison this suite makes must catch a 0.1% error in the norm weight (f32) and a wrong rope
/// layout (every dtype): the device result checked against such a mutated reference fails.
#[test]
fn the_comparison_sees_small_errors() {
    let npu = checked_npu();
    let c = case::<f32>(7, 40, (64, 32), (2, 32), RopeLayout::Interleaved, true, 0.0);
    let got = c.device(&npu);
    let mut mutated = Case {
        weight: c.weight.mapv(|w| w * 1.001),
        cache: c.cache.clone(),
        kv: c.kv.clone(),
        positions: c.positions.clone(),
        slots: c.slots.clone(),
        table: c.table.clone(),
        layout: c.layout,
    };
    let tol = Tolerance::of::<f32>();
    let want = mutated.reference();
    assert!(check_close("mutation", got.latent.view(), want.latent.view(), tol).is_err());
    mutated.weight = c.weight.clone();
    mutated.layout = RopeLayout::HalfSplit;
    let want = mutated.reference();
    assert!(check_close("mutation", got.rope.view(), want.rope.view(), tol).is_err());
    // And the unmutated reference passes, so the two failures are the mutations'.
    let want = c.reference();
    assert!(check_close("mutation", got.latent.view(), want.latent.view(), tol).is_ok());
    assert!(check_close("mutation", got.rope.view(), want.rope.view(), tol).is_ok());
}

#[test]
fn bad_inputs_are_the_references_errors() {
    let npu = checked_npu();
    let mut c = case::<f32>(3, 5, (16, 8), (2, 4), RopeLayout::HalfSplit, false, 0.0);
    c.slots[2] = 8; // capacity 8
    let mut cache = c.cache.clone();
    let e = npu
        .mla_cache_write_fused(&mut cache, c.kv.view(), c.params(), c.slots.view())
        .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::IndexOutOfRange {
                arg: "slot_mapping",
                index: 8,
                position: 2,
                ..
            }
        ),
        "{e}"
    );
    c.slots[2] = -2;
    assert!(npu
        .mla_cache_write_fused(&mut cache, c.kv.view(), c.params(), c.slots.view())
        .is_err());
    c.slots[2] = 1;
    c.positions[4] = 300; // the table has 300 rows
    let e = npu
        .mla_cache_write_fused(&mut cache, c.kv.view(), c.params(), c.slots.view())
        .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::IndexOutOfRange {
                arg: "positions",
                ..
            }
        ),
        "{e}"
    );
    c.positions[4] = 0;
    let narrow = c.kv.slice(s![.., ..23]);
    let e = npu
        .mla_cache_write_fused(&mut cache, narrow, c.params(), c.slots.view())
        .unwrap_err();
    assert!(matches!(e, OpsError::Shape { arg: "kv", .. }), "{e}");
    // Nothing was written by the rejected calls.
    assert_eq!(cache.latent, c.cache.latent);
    assert_eq!(cache.rope, c.cache.rope);
}
