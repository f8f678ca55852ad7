//! The whole MoE layer on the device path (router → gating → dispatch → expert FFN → combine with the
//! shared-expert output and the residual, intermediates kept on the device) against the CPU reference
//! layer at DeepSeek-V3's shapes, scaled for a 2-core machine by holding only some experts' weights:
//! hidden 7168, 256 routed experts, top-8 of 8 groups keeping 4 (sigmoid with the correction bias,
//! normalized, × 2.5), expert FFN 2048, T ∈ {1, 64, 512}. This "rank" holds 4 experts (expert
//! parallelism over 64 ranks): the window of 4 that contains token 0's first expert, so the local FFN
//! always has rows (at T = 512 about 64 of them). Every launch is checked clean (no fault, zero sanitizer warnings;
//! `npu_moe_common`).
//!
//! Tokens are redrawn until their routing does not hinge on a near-tie of the f32 router logits (the
//! conformance suites' rule): a reordered f32 sum may not flip an expert choice. Tolerance: the dtype's,
//! twice (two chained GEMMs with the intermediate rounded between them, as in the suites).

mod npu_backend;
mod npu_moe_common;

use dsnpu_ops::backend::{Cpu, MoeOps};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::moe::well_separated;
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::half::{bf16, f16};
use dsnpu_ops::moe::{router_logits, GatingConfig, MoeLayerParams};
use dsnpu_ops::ndarray::{s, Array1, Array2, Array3};
use dsnpu_ops::Float;
use npu_backend::checked_npu;

const HIDDEN: usize = 7168;
const EXPERTS: usize = 256;
const INTER: usize = 2048;
/// Experts whose weights this rank holds.
const LOCAL: usize = 4;

/// `[e, out, inp]` uniform in `±gain·sqrt(3 / inp)`: a product with `inp` inputs uniform in `[-1, 1]`
/// then has a standard deviation of `gain`.
fn uniform_scaled<T: Float>(
    rng: &mut CaseRng,
    e: usize,
    out: usize,
    inp: usize,
    gain: f32,
) -> Array3<T> {
    let s = gain * (3.0 / inp as f32).sqrt();
    rng.uniform((e, out, inp), -s, s)
}

fn deepseek_layer<T: Float>(tokens: &[usize]) {
    let npu = checked_npu();
    let cfg = GatingConfig::deepseek_v3();
    let mut rng = CaseRng::new(0xDEE9_5EE4);
    // Router logits of standard deviation 1/3 (sigmoid scores well spread), expert GEMMs of order
    // one, so the routed part of the output is of order one too (far above the tolerance).
    let router: Array2<T> = uniform_scaled::<T>(&mut rng, 1, EXPERTS, HIDDEN, 1.0 / 3.0)
        .index_axis_move(dsnpu_ops::ndarray::Axis(0), 0);
    let router_f32: Vec<f32> = router.iter().map(|v| v.to_f32()).collect();
    let bias: Array1<f32> = rng.uniform(EXPERTS, -0.2, 0.2);
    let wg = uniform_scaled::<T>(&mut rng, LOCAL, INTER, HIDDEN, 1.0);
    let wu = uniform_scaled::<T>(&mut rng, LOCAL, INTER, HIDDEN, 1.0);
    let wd = uniform_scaled::<T>(&mut rng, LOCAL, HIDDEN, INTER, 4.0);
    let tol = Tolerance::of::<T>().widened(2.0);
    for &t in tokens {
        let mut x = Array2::<T>::default((t, HIDDEN));
        for mut row in x.rows_mut() {
            let drawn = (0..1000)
                .map(|_| rng.uniform::<T, _>(HIDDEN, -1.0, 1.0))
                .find(|r| {
                    let xf: Vec<f32> = r.iter().map(|v| v.to_f32()).collect();
                    let l: Vec<f32> = router_f32
                        .chunks_exact(HIDDEN)
                        .map(|w| dot(&xf, w))
                        .collect();
                    well_separated(&l, bias.as_slice(), &cfg)
                })
                .expect("a well-separated token in 1000 draws");
            row.assign(&drawn);
        }
        // The window of experts holding token 0's first choice.
        let logits0 = router_logits(x.slice(s![..1, ..]), router.view()).unwrap();
        let (ids0, _) = Cpu
            .moe_gating_topk(logits0.view(), Some(bias.view()), &cfg)
            .unwrap();
        let start = ids0[[0, 0]] as usize / LOCAL * LOCAL;
        let local = start..start + LOCAL;
        let shared = rng.uniform::<T, _>((t, HIDDEN), -1.0, 1.0);
        let residual = rng.uniform::<T, _>((t, HIDDEN), -1.0, 1.0);
        let params = MoeLayerParams {
            router: router.view(),
            bias: Some(bias.view()),
            gating: cfg,
            w_gate: wg.view(),
            w_up: wu.view(),
            w_down: wd.view(),
            local: Some(local.clone()),
        };
        let what = format!(
            "moe_layer<{}> T={t} H={HIDDEN} E={EXPERTS} I={INTER} local={local:?}",
            T::DTYPE
        );
        let want = Cpu
            .moe_layer(
                x.view(),
                &params,
                Some(shared.view()),
                Some(residual.view()),
            )
            .unwrap();
        let got = npu
            .moe_layer(
                x.view(),
                &params,
                Some(shared.view()),
                Some(residual.view()),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_close(&what, got.view(), want.view(), tol);
        // Token 0 went to a local expert: its output differs from shared + residual by far more than
        // the tolerance (the routed part was computed, not left at zero).
        let routed: f32 = (0..HIDDEN)
            .map(|h| {
                let extras = shared[[0, h]].to_f32() + residual[[0, h]].to_f32();
                (got[[0, h]].to_f32() - extras).abs()
            })
            .sum::<f32>()
            / HIDDEN as f32;
        assert!(
            routed > 10.0 * tol.atol,
            "{what}: token 0's routed part is {routed}"
        );
    }
}

/// `Σ a·b` in f32 with eight partial sums: a router logit for the redraw decision, which allows far
/// more than any summation order's difference (see the module docs).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[test]
fn deepseek_v3_layer_bf16() {
    deepseek_layer::<bf16>(&[1, 64]);
}

#[test]
fn deepseek_v3_layer_bf16_t512() {
    deepseek_layer::<bf16>(&[512]);
}

#[test]
fn deepseek_v3_layer_f16() {
    deepseek_layer::<f16>(&[1, 64]);
}

#[test]
fn deepseek_v3_layer_f32() {
    deepseek_layer::<f32>(&[1, 64]);
}

/// Router logits that are not finite are rejected as the reference rejects them (`moe_gating_topk`,
/// `logits`, the same first offender), and only then: a non-finite router with no tokens has no
/// logits (the reference answers an empty output), and finite inputs whose product overflows f32 are
/// rejected although no input is itself non-finite.
#[test]
fn router_logits_are_checked_like_the_reference() {
    let npu = checked_npu();
    let (experts, hidden, inter) = (4, 4, 2);
    let cfg = GatingConfig {
        top_k: 2,
        n_group: 1,
        topk_group: 1,
        ..GatingConfig::deepseek_v3()
    };
    let w = Array3::<f32>::from_elem((experts, inter, hidden), 0.1);
    let wd = Array3::<f32>::from_elem((experts, hidden, inter), 0.1);
    let mut nan_router = Array2::<f32>::from_elem((experts, hidden), 0.1);
    nan_router[[1, 2]] = f32::NAN;
    let ones = Array2::<f32>::ones((experts, hidden));
    let mut inf_x = Array2::<f32>::from_elem((2, hidden), 0.5);
    inf_x[[1, 3]] = f32::INFINITY;
    let cases = [
        (
            "no tokens, NaN router",
            Array2::<f32>::zeros((0, hidden)),
            &nan_router,
        ),
        (
            "NaN router",
            Array2::<f32>::from_elem((2, hidden), 0.5),
            &nan_router,
        ),
        ("infinite x", inf_x, &ones),
        (
            "overflowing product",
            Array2::<f32>::from_elem((1, hidden), 3e38),
            &ones,
        ),
    ];
    for (what, x, router) in cases {
        let params = MoeLayerParams {
            router: router.view(),
            bias: None,
            gating: cfg,
            w_gate: w.view(),
            w_up: w.view(),
            w_down: wd.view(),
            local: None,
        };
        let want = Cpu.moe_layer(x.view(), &params, None, None);
        let got = npu.moe_layer(x.view(), &params, None, None);
        match (want, got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
            (Err(a), Err(b)) => {
                assert!(
                    matches!(
                        b,
                        dsnpu_ops::OpsError::InvalidArgument {
                            op: "moe_gating_topk",
                            arg: "logits",
                            ..
                        }
                    ),
                    "{what}: {b:?}"
                );
                assert_eq!(a.to_string(), b.to_string(), "{what}");
            }
            (a, b) => panic!("{what}: the reference gives {a:?}, the device {b:?}"),
        }
    }
}
