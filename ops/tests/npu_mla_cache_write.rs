//! The fused MLA cache write (`mla_cache_write_<t>`) on the device backend against the CPU reference
//! (`mla::mla_cache_write_fused`, itself the model's unfused rms_norm + rope + write), with every launch
//! checked (launch-blocking stream: no fault and **zero sanitizer warnings**): the conformance suite in
//! f32/f16/bf16 (both rope layouts, plain and YaRN tables, padding slots, several blocks per launch), a
//! DeepSeek-width case with its traffic counters, the reference's errors (each variant), and a mutation
//! check that the comparison sees a 0.1% error in the norm weight and a wrong layout.

use dsnpu_ops::backend::Cpu;
use dsnpu_ops::conformance::mla_cache_write::{self, random_case, table, Case};
use dsnpu_ops::conformance::tolerance::{check_close, Tolerance};
use dsnpu_ops::conformance::{self, cases::CaseRng};
use dsnpu_ops::mla::PagedLatentCache;
use dsnpu_ops::rope::RopeLayout;
use dsnpu_ops::{Float, OpsError};
use dsnpu_runtime::sim_counters;
use half::{bf16, f16};
use ndarray::s;

mod npu_backend;
use npu_backend::checked_npu;

/// A suite case (`conformance::mla_cache_write::random_case`) from `seed`, with a 300-row table.
#[allow(clippy::too_many_arguments)]
fn case<T: Float>(
    seed: u64,
    tokens: usize,
    (dl, dr): (usize, usize),
    blocks: (usize, usize),
    layout: RopeLayout,
    yarn: bool,
    padding: f64,
) -> Case<T> {
    let mut rng = CaseRng::new(seed);
    random_case(
        &mut rng,
        tokens,
        (dl, dr),
        blocks,
        table(dr, 300, yarn),
        layout,
        padding,
    )
}

/// The device cache against the reference, as the suite compares them.
fn compare<T: Float>(what: &str, c: &Case<T>, got: &PagedLatentCache<T>) {
    let want = c.run(&Cpu).unwrap();
    mla_cache_write::compare(what, c, got, &want, Tolerance::of::<T>());
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
    compare("deepseek bf16", &c, &c.run(&npu).unwrap());
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
    let got = c.run(&npu).unwrap();
    let mut mutated = c.clone();
    mutated.weight = c.weight.mapv(|w| w * 1.001);
    let tol = Tolerance::of::<f32>();
    let want = mutated.run(&Cpu).unwrap();
    assert!(check_close("mutation", got.latent.view(), want.latent.view(), tol).is_err());
    mutated.weight = c.weight.clone();
    mutated.layout = RopeLayout::HalfSplit;
    let want = mutated.run(&Cpu).unwrap();
    assert!(check_close("mutation", got.rope.view(), want.rope.view(), tol).is_err());
    // And the unmutated reference passes, so the two failures are the mutations'.
    let want = c.run(&Cpu).unwrap();
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

/// A slot that repeats keeps the last token's row, as in the reference (which writes in token order),
/// instead of being refused or raced over by the kernel's blocks.
#[test]
fn a_repeated_slot_keeps_the_last_row_like_the_reference() {
    let npu = checked_npu();
    let mut c = case::<f32>(11, 6, (16, 8), (2, 4), RopeLayout::HalfSplit, false, 0.0);
    c.slots = ndarray::array![5, 1, 5, -1, 1, 5];
    let got = c.run(&npu).unwrap();
    compare("repeated slots", &c, &got);
    // The rows of slot 5 are token 5's, not token 0's or 2's (and slot 1's token 4's).
    let mut only_last = c.clone();
    only_last.slots = ndarray::array![-1, -1, -1, -1, 1, 5];
    compare("only the last writers", &only_last, &got);
}
