//! MLA prefill on the device backend with every launch checked (a launch-blocking stream: each launch
//! is waited for and fails unless it completed without a fault and with zero sanitizer warnings), at
//! DeepSeek-V3 widths, in f32, f16 and bf16, against the `f64` evaluation of the reference with the
//! systematic-error bounds (`conformance::mla_prefill::check_prefill`):
//! - the expanded form (`Dqk = 192`, `Dv = 128`) on a ragged pack of lengths 1, 17 and 300 with 16
//!   heads, 1, 17 and 130 with 128 heads (a second, partial key tile; 300 would triple the suite's time),
//!   and one 4096-token sequence (1 head; the f32 and f16 runs are ignored as slow);
//! - chunked prefill over the paged cache (`Npu::mla_prefill_cached`: dn 128, dr 64, dv 128, Dl 512,
//!   block 128, 16 heads) with and without a cached prefix per sequence.

use dsnpu_ops::backend::{MlaOps, Npu};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::mla_prefill::{check_prefill, CachedCase, CachedSpec, PrefillCase};
use dsnpu_ops::Float;
use dsnpu_runtime::sim_counters;
use half::{bf16, f16};

mod npu_backend;
use npu_backend::checked_npu;

/// The last launch was `mla_prefill_<t>`, clean, within the Unified Buffer.
fn check_counters<T: Float>(npu: &Npu) {
    let c = sim_counters::last_launch_counters(npu.stream())
        .unwrap()
        .expect("a completed launch");
    let symbol = format!("mla_prefill_{}", T::DTYPE.to_string().to_lowercase());
    assert_eq!(
        (c.kernel.as_str(), c.status, c.warnings),
        (symbol.as_str(), 0, 0)
    );
    assert!(c.totals.ub_high_water <= 196_608, "{c:?}");
    assert!(c.totals.cube_macs > 0, "{c:?}");
}

fn dense<T: Float>(heads: usize, lens: &[usize], seed: u64) {
    let npu = checked_npu();
    let mut rng = CaseRng::new(seed);
    let case = PrefillCase::<T>::build(&mut rng, heads, (192, 128), lens, &[]);
    let (out, lse) = npu
        .mla_prefill(
            case.q.view(),
            case.k.view(),
            case.v.view(),
            case.cu_q.view(),
            case.scale,
        )
        .unwrap();
    check_counters::<T>(&npu);
    let what = format!("mla_prefill<{}> H={heads} lens={lens:?}", T::DTYPE);
    check_prefill(&what, &case, (&out, &lse));
}

#[test]
fn ragged_pack_16_heads() {
    dense::<f32>(16, &[1, 17, 300], 0x5052_0001);
    dense::<f16>(16, &[1, 17, 300], 0x5052_0002);
    dense::<bf16>(16, &[1, 17, 300], 0x5052_0003);
}

#[test]
fn ragged_pack_128_heads() {
    dense::<f32>(128, &[1, 17, 130], 0x5052_0011);
    dense::<f16>(128, &[1, 17, 130], 0x5052_0012);
    dense::<bf16>(128, &[1, 17, 130], 0x5052_0013);
}

#[test]
fn one_sequence_of_4096_tokens_bf16() {
    dense::<bf16>(1, &[4096], 0x5052_0021);
}

#[test]
#[ignore = "slow (about a minute each): the f32 and f16 runs of the 4096-token sequence"]
fn one_sequence_of_4096_tokens_f32_f16() {
    dense::<f32>(1, &[4096], 0x5052_0022);
    dense::<f16>(1, &[4096], 0x5052_0023);
}

fn cached<T: Float>(heads: usize, lens: &[usize], prefix: &[usize], seed: u64) {
    let npu = checked_npu();
    let mut rng = CaseRng::new(seed);
    let spec = CachedSpec {
        heads,
        dn: 128,
        dr: 64,
        dv: 128,
        latent_dim: 512,
        block_size: 128,
    };
    let case = CachedCase::<T>::build(&mut rng, spec, lens, prefix).unwrap();
    let (out, lse) = npu
        .mla_prefill_cached(
            case.q.view(),
            case.cu_q.view(),
            &case.cache,
            case.block_table.view(),
            case.seq_lens.view(),
            case.kv_b.view(),
            case.scale,
        )
        .unwrap();
    check_counters::<T>(&npu);
    let what = format!(
        "mla_prefill_cached<{}> H={heads} lens={lens:?} prefix={prefix:?}",
        T::DTYPE
    );
    check_prefill(&what, &case.expanded(), (&out, &lse));
}

#[test]
fn cached_prefix_16_heads() {
    let (lens, prefix) = (&[1usize, 17, 300][..], &[40usize, 0, 200][..]);
    cached::<f32>(16, lens, prefix, 0x5052_0031);
    cached::<f16>(16, lens, prefix, 0x5052_0032);
    cached::<bf16>(16, lens, prefix, 0x5052_0033);
}

#[test]
fn cached_without_prefix_16_heads() {
    let (lens, prefix) = (&[1usize, 17, 300][..], &[0usize, 0, 0][..]);
    cached::<f32>(16, lens, prefix, 0x5052_0041);
    cached::<bf16>(16, lens, prefix, 0x5052_0043);
}

/// The reference's checks run first: a table entry outside the cache is rejected, not read.
#[test]
fn cached_rejects_a_block_outside_the_cache() {
    let npu = checked_npu();
    let mut rng = CaseRng::new(7);
    let spec = CachedSpec {
        heads: 2,
        dn: 8,
        dr: 8,
        dv: 8,
        latent_dim: 16,
        block_size: 16,
    };
    let mut case = CachedCase::<f32>::build(&mut rng, spec, &[3], &[20]).unwrap();
    case.block_table[[0, 1]] = case.cache.num_blocks() as i32;
    let r = npu.mla_prefill_cached(
        case.q.view(),
        case.cu_q.view(),
        &case.cache,
        case.block_table.view(),
        case.seq_lens.view(),
        case.kv_b.view(),
        case.scale,
    );
    assert!(r.is_err(), "{r:?}");
}
