//! Rotary embedding: hand-derived rotations, YaRN frequencies against closed forms, the attention factor,
//! DeepSeek's softmax-scale correction, layout equivalence and bad input.
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::rope::{
    attention_factor, inv_freq, rope, softmax_scale_correction, yarn_correction_range, RopeConfig,
    RopeLayout, RopeTable, YarnScaling,
};
use dsnpu_ops::OpsError;
use half::bf16;
use ndarray::{array, Array1, Array3};

const F32: Tolerance = Tolerance {
    atol: 1e-6,
    rtol: 1e-6,
};

fn plain(dim: usize) -> RopeConfig {
    RopeConfig {
        dim,
        theta: 10000.0,
        scaling: None,
    }
}

fn yarn(dim: usize, factor: f32, orig: usize, mscale: f32, mscale_all_dim: f32) -> RopeConfig {
    RopeConfig {
        dim,
        theta: 10000.0,
        scaling: Some(YarnScaling {
            factor,
            original_max_position_embeddings: orig,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale,
            mscale_all_dim,
        }),
    }
}

#[test]
fn plain_rotation_at_position_one() {
    // dim 4, theta 1e4: inv_freq = [1, 1e4^(-2/4)] = [1, 0.01]; at position 1 the angles are 1 and 0.01 rad.
    let table = RopeTable::new(&plain(4), 2).unwrap();
    let (c1, s1, c2, s2) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
    let x = Array3::from_shape_vec((1, 1, 4), vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
    let pos = array![1];

    // Interleaved pairs (x0,x1) = (1,0) and (x2,x3) = (0,1):
    // (1,0) -> (cos 1, sin 1); (0,1) -> (-sin .01, cos .01).
    let y = rope(x.view(), pos.view(), &table, RopeLayout::Interleaved).unwrap();
    let want = Array3::from_shape_vec((1, 1, 4), vec![c1, s1, -s2, c2]).unwrap();
    assert_close("interleaved", y.view(), want.view(), F32);

    // Half-split pairs (x0,x2) = (1,0) at angle 1 and (x1,x3) = (0,1) at angle 0.01:
    // y0 = cos 1, y2 = sin 1, y1 = -sin .01, y3 = cos .01.
    let y = rope(x.view(), pos.view(), &table, RopeLayout::HalfSplit).unwrap();
    let want = Array3::from_shape_vec((1, 1, 4), vec![c1, -s2, s1, c2]).unwrap();
    assert_close("half-split", y.view(), want.view(), F32);
}

#[test]
fn position_zero_is_identity_and_heads_share_the_angle() {
    let table = RopeTable::new(&plain(8), 4).unwrap();
    let mut rng = CaseRng::new(1);
    let x: Array3<f32> = rng.uniform((2, 3, 8), -1.0, 1.0);
    let y = rope(
        x.view(),
        array![0, 0].view(),
        &table,
        RopeLayout::Interleaved,
    )
    .unwrap();
    assert_eq!(y, x);
    // Position 3, pair 0 (angle 3 rad): every head rotates by the same angle.
    let x = Array3::from_shape_fn((1, 3, 8), |(_, _, d)| if d == 0 { 1.0f32 } else { 0.0 });
    let y = rope(x.view(), array![3].view(), &table, RopeLayout::Interleaved).unwrap();
    for h in 0..3 {
        assert!(
            (y[[0, h, 0]] - 3f32.cos()).abs() < 1e-6 && (y[[0, h, 1]] - 3f32.sin()).abs() < 1e-6
        );
    }
}

#[test]
fn layouts_agree_after_deinterleaving() {
    // Transformers' rope_interleave path: de-interleave (evens then odds), then rotate_half. Our interleaved
    // output, de-interleaved, must equal the half-split rotation of the de-interleaved input, exactly.
    let cfg = yarn(64, 40.0, 4096, 1.0, 1.0);
    let table = RopeTable::new(&cfg, 10_000).unwrap();
    let mut rng = CaseRng::new(2);
    let x: Array3<f32> = rng.uniform((5, 4, 64), -2.0, 2.0);
    let pos = array![0, 1, 17, 4095, 9999];
    let deint = |a: &Array3<f32>| {
        Array3::from_shape_fn(a.raw_dim(), |(t, h, d)| {
            if d < 32 {
                a[[t, h, 2 * d]]
            } else {
                a[[t, h, 2 * (d - 32) + 1]]
            }
        })
    };
    let inter = rope(x.view(), pos.view(), &table, RopeLayout::Interleaved).unwrap();
    let half = rope(deint(&x).view(), pos.view(), &table, RopeLayout::HalfSplit).unwrap();
    assert_eq!(deint(&inter), half);
}

#[test]
fn scores_depend_only_on_relative_position() {
    // RoPE's defining property: <R(p)q, R(p')k> depends on p - p' only. With DeepSeek's YaRN block the
    // attention factor is 1, so the rotation is orthogonal and norms are kept too.
    let cfg = yarn(64, 40.0, 4096, 1.0, 1.0);
    let table = RopeTable::new(&cfg, 300).unwrap();
    let mut rng = CaseRng::new(3);
    let q: Array3<f32> = rng.uniform((1, 1, 64), -1.0, 1.0);
    let k: Array3<f32> = rng.uniform((1, 1, 64), -1.0, 1.0);
    let score = |pq: i32, pk: i32| {
        let rq = rope(q.view(), array![pq].view(), &table, RopeLayout::Interleaved).unwrap();
        let rk = rope(k.view(), array![pk].view(), &table, RopeLayout::Interleaved).unwrap();
        rq.iter().zip(rk.iter()).map(|(a, b)| a * b).sum::<f32>()
    };
    let s0 = score(7, 0);
    assert!(
        (score(107, 100) - s0).abs() < 1e-4,
        "{} vs {s0}",
        score(107, 100)
    );
    assert!((score(299, 292) - s0).abs() < 1e-4);
    let rq = rope(q.view(), array![250].view(), &table, RopeLayout::HalfSplit).unwrap();
    let n = |a: &Array3<f32>| a.iter().map(|v| v * v).sum::<f32>();
    assert!((n(&rq) - n(&q)).abs() < 1e-4);
}

#[test]
fn yarn_inv_freq_small_config_by_hand() {
    // dim 8, theta 1e4, factor 4, original context 64, beta 32/1.
    // Correction dim c(r) = 8·ln(64/(2πr)) / (2·ln 1e4) = 0.434294·ln(10.185916/r):
    //   c(32) = 0.434294·ln(0.318310) = -0.4972 -> floor -1 -> clamp 0 = low;
    //   c(1)  = 0.434294·ln(10.185916) = 1.0080 -> ceil 2 = high.
    // ramp = clamp(i/2, 0, 1) = [0, 0.5, 1, 1]; extra = 1e4^(-i/4) = [1, 0.1, 0.01, 0.001];
    // inv_freq = extra·(1 - ramp) + extra/4·ramp = [1, 0.05 + 0.0125, 0.0025, 0.00025].
    let cfg = yarn(8, 4.0, 64, 1.0, 0.0);
    let s = cfg.scaling.unwrap();
    assert_eq!(yarn_correction_range(8, 10000.0, &s), (0.0, 2.0));
    let f = inv_freq(&cfg).unwrap();
    let want = [1.0, 0.0625, 0.0025, 0.00025];
    for (i, (g, w)) in f.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * w, "inv_freq[{i}] = {g}, want {w}");
    }
    // Attention factor with mscale_all_dim absent: get_mscale(4) = 0.1·ln 4 + 1 = 1.1386294361.
    assert!((attention_factor(&cfg) - 1.138_629_4).abs() < 1e-6);
    // The table at position 0 is cos = factor, sin = 0; at position 1 row i is factor·(cos, sin)(inv_freq[i]).
    let table = RopeTable::new(&cfg, 2).unwrap();
    assert!(table
        .cos
        .row(0)
        .iter()
        .all(|&c| (c - 1.138_629_4).abs() < 1e-6));
    assert!(table.sin.row(0).iter().all(|&s| s == 0.0));
    assert!((table.cos[[1, 1]] - 1.138_629_4 * 0.0625f32.cos()).abs() < 1e-6);
    assert!((table.sin[[1, 1]] - 1.138_629_4 * 0.0625f32.sin()).abs() < 1e-6);
}

#[test]
fn yarn_deepseek_v3_frequencies() {
    // DeepSeek-V3: dim 64, factor 40, original 4096, beta 32/1.
    // c(32) = 64·ln(4096/(64π)) / (2 ln 1e4) = 64·3.014183/18.420681 = 10.4725 -> low 10;
    // c(1)  = 64·ln(4096/(2π)) / (2 ln 1e4) = 64·6.479894/18.420681 = 22.5134 -> high 23.
    let cfg = yarn(64, 40.0, 4096, 1.0, 1.0);
    assert_eq!(
        yarn_correction_range(64, 10000.0, &cfg.scaling.unwrap()),
        (10.0, 23.0)
    );
    let f = inv_freq(&cfg).unwrap();
    let extra = |i: usize| 10000f64.powf(-(i as f64) / 32.0);
    // Up to `low` the original frequencies, from `high` on divided by 40, in between the ramp (i-10)/13.
    assert_eq!(f.len(), 32);
    for (i, &fi) in f.iter().enumerate() {
        if i <= 10 {
            assert!((fi - extra(i)).abs() <= 1e-15, "i={i}");
        } else if i >= 23 {
            assert!((fi - extra(i) / 40.0).abs() <= 1e-15, "i={i}");
        } else {
            // Strictly between the two: interpolation is partial.
            assert!(fi < extra(i) && fi > extra(i) / 40.0, "i={i}");
        }
    }
    let r = 5.0 / 13.0; // i = 15
    assert!((f[15] - (extra(15) / 40.0 * r + extra(15) * (1.0 - r))).abs() <= 1e-15);
    // mscale = mscale_all_dim = 1: the attention factor is exactly 1 ...
    assert_eq!(attention_factor(&cfg), 1.0);
    // ... and the softmax scale is multiplied by (0.1·ln 40 + 1)² = 1.368888² = 1.873854.
    assert!((softmax_scale_correction(&cfg) - 1.873_854).abs() < 1e-5);
    // DeepSeek-V3's full scale: 192^-0.5 · 1.873854 = 0.135234.
    assert!((192f32.powf(-0.5) * softmax_scale_correction(&cfg) - 0.135_234).abs() < 1e-5);
}

#[test]
fn attention_factor_and_correction_variants() {
    let ln4 = 4f32.ln();
    // Both mscales set: ratio (1 + 0.1·ln4) / (1 + 0.0707·ln4).
    let cfg = yarn(8, 4.0, 64, 1.0, 0.707);
    assert!((attention_factor(&cfg) - (1.0 + 0.1 * ln4) / (1.0 + 0.0707 * ln4)).abs() < 1e-6);
    assert!((softmax_scale_correction(&cfg) - (1.0 + 0.0707 * ln4).powi(2)).abs() < 1e-5);
    // mscale_all_dim absent: no softmax correction.
    assert_eq!(softmax_scale_correction(&yarn(8, 4.0, 64, 1.0, 0.0)), 1.0);
    // factor <= 1: get_mscale is 1.
    assert_eq!(attention_factor(&yarn(8, 1.0, 64, 1.0, 0.0)), 1.0);
    assert_eq!(softmax_scale_correction(&yarn(8, 0.5, 64, 1.0, 1.0)), 1.0);
    // No scaling at all.
    assert_eq!(attention_factor(&plain(8)), 1.0);
    assert_eq!(softmax_scale_correction(&plain(8)), 1.0);
}

#[test]
fn yarn_table_scales_x_at_position_zero() {
    // With attention factor a = 1.1386294 (see above), rope at position 0 multiplies x by a.
    let table = RopeTable::new(&yarn(4, 4.0, 64, 1.0, 0.0), 1).unwrap();
    let x = Array3::from_shape_vec((1, 1, 4), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let y = rope(x.view(), array![0].view(), &table, RopeLayout::HalfSplit).unwrap();
    let a = 1.138_629_4f32;
    let want = Array3::from_shape_vec((1, 1, 4), vec![a, 2.0 * a, 3.0 * a, 4.0 * a]).unwrap();
    assert_close("yarn pos 0", y.view(), want.view(), F32);
}

#[test]
fn rope_in_bf16_rounds_once() {
    // (1, 0) at angle 1: cos 1 = 0.5403023 -> bf16 0.5390625 (138/256); sin 1 = 0.8414710 -> 0.83984375 (215/256).
    let table = RopeTable::new(&plain(2), 2).unwrap();
    let x = Array3::from_shape_vec((1, 1, 2), vec![bf16::ONE, bf16::ZERO]).unwrap();
    let y = rope(x.view(), array![1].view(), &table, RopeLayout::Interleaved).unwrap();
    assert_eq!(
        (y[[0, 0, 0]].to_f32(), y[[0, 0, 1]].to_f32()),
        (138.0 / 256.0, 215.0 / 256.0)
    );
}

#[test]
fn rope_bad_inputs() {
    let table = RopeTable::new(&plain(8), 4).unwrap();
    let x = Array3::<f32>::zeros((2, 1, 8));
    match rope(
        x.view(),
        array![0, 4].view(),
        &table,
        RopeLayout::Interleaved,
    ) {
        Err(OpsError::IndexOutOfRange {
            op: "rope",
            arg: "positions",
            index: 4,
            position: 1,
            bound: 4,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rope(
            x.view(),
            array![-1, 0].view(),
            &table,
            RopeLayout::HalfSplit
        ),
        Err(OpsError::IndexOutOfRange { index: -1, .. })
    ));
    assert!(matches!(
        rope(x.view(), array![0].view(), &table, RopeLayout::HalfSplit),
        Err(OpsError::Shape {
            arg: "positions",
            ..
        })
    ));
    assert!(matches!(
        rope(
            Array3::<f32>::zeros((2, 1, 6)).view(),
            array![0, 0].view(),
            &table,
            RopeLayout::HalfSplit
        ),
        Err(OpsError::Shape { arg: "x", .. })
    ));
    let mut broken = table.clone();
    broken.sin = ndarray::Array2::zeros((3, 4));
    assert!(matches!(
        rope(
            x.view(),
            array![0, 0].view(),
            &broken,
            RopeLayout::HalfSplit
        ),
        Err(OpsError::Shape {
            arg: "table.sin",
            ..
        })
    ));
}

#[test]
fn rope_table_bad_configs() {
    let bad = |cfg: RopeConfig, arg: &str| match RopeTable::new(&cfg, 8) {
        Err(OpsError::InvalidArgument {
            op: "RopeTable::new",
            arg: a,
            ..
        }) => assert_eq!(a, arg),
        other => panic!("{arg}: {other:?}"),
    };
    bad(RopeConfig { dim: 7, ..plain(8) }, "cfg.dim");
    bad(RopeConfig { dim: 0, ..plain(8) }, "cfg.dim");
    bad(
        RopeConfig {
            theta: 1.0,
            ..plain(8)
        },
        "cfg.theta",
    );
    bad(
        RopeConfig {
            theta: f32::NAN,
            ..plain(8)
        },
        "cfg.theta",
    );
    let with = |f: fn(&mut YarnScaling)| {
        let mut c = yarn(8, 4.0, 64, 1.0, 1.0);
        f(c.scaling.as_mut().unwrap());
        c
    };
    bad(with(|y| y.factor = 0.0), "cfg.scaling.factor");
    bad(with(|y| y.factor = f32::INFINITY), "cfg.scaling.factor");
    bad(with(|y| y.beta_fast = -1.0), "cfg.scaling.beta_fast");
    bad(with(|y| y.beta_slow = 0.0), "cfg.scaling.beta_slow");
    bad(
        with(|y| y.original_max_position_embeddings = 0),
        "cfg.scaling.original_max_position_embeddings",
    );
    bad(with(|y| y.mscale = f32::NAN), "cfg.scaling.mscale");
    bad(
        with(|y| y.mscale_all_dim = f32::NEG_INFINITY),
        "cfg.scaling.mscale_all_dim",
    );
    // A table too large to allocate is refused, not attempted.
    assert!(matches!(
        RopeTable::new(&plain(64), usize::MAX / 2),
        Err(OpsError::InvalidArgument {
            arg: "max_positions",
            ..
        })
    ));
    // Zero positions is a valid, empty table; rope with no tokens then succeeds.
    let empty = RopeTable::new(&plain(4), 0).unwrap();
    let y = rope(
        Array3::<f32>::zeros((0, 2, 4)).view(),
        Array1::<i32>::zeros(0).view(),
        &empty,
        RopeLayout::Interleaved,
    );
    assert_eq!(y.unwrap().dim(), (0, 2, 4));
}
