//! Property test: the dense operators never panic on random shapes, indices, configurations and values
//! (NaN and infinities included). Each either returns a result of the documented shape or a typed error.
use dsnpu_ops::linear::{batched_matmul, linear};
use dsnpu_ops::norm::{add_rms_norm, rms_norm};
use dsnpu_ops::rope::{rope, RopeConfig, RopeLayout, RopeTable, YarnScaling};
use dsnpu_ops::sampling::{argmax, embedding, softmax, Sampler};
use dsnpu_ops::{activation::silu_mul, OpsError};
use ndarray::{Array1, Array2, Array3};
use proptest::prelude::*;

/// Any f32, weighted towards ordinary values but with NaN, ±inf, zero and extremes.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -4.0f32..4.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
        1 => any::<f32>(),
    ]
}

fn array1(len: usize) -> impl Strategy<Value = Array1<f32>> {
    proptest::collection::vec(value(), len).prop_map(Array1::from)
}

fn array2(r: usize, c: usize) -> impl Strategy<Value = Array2<f32>> {
    proptest::collection::vec(value(), r * c)
        .prop_map(move |v| Array2::from_shape_vec((r, c), v).unwrap())
}

fn array3(a: usize, b: usize, c: usize) -> impl Strategy<Value = Array3<f32>> {
    proptest::collection::vec(value(), a * b * c)
        .prop_map(move |v| Array3::from_shape_vec((a, b, c), v).unwrap())
}

fn ints(len: usize) -> impl Strategy<Value = Array1<i32>> {
    proptest::collection::vec(prop_oneof![4 => -2i32..12, 1 => any::<i32>()], len)
        .prop_map(Array1::from)
}

/// Small extents, 0 included: mismatches between arguments are frequent.
fn dim() -> impl Strategy<Value = usize> {
    0usize..6
}

fn typed(e: &OpsError) -> bool {
    matches!(
        e,
        OpsError::Shape { .. }
            | OpsError::IndexOutOfRange { .. }
            | OpsError::InvalidArgument { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn norms((t, h, wh, rt) in (dim(), dim(), dim(), dim()), eps in value()) {
        let x = Array2::<f32>::from_elem((t, h), 0.5);
        let w = Array1::<f32>::from_elem(wh, 1.0);
        let r = Array2::<f32>::from_elem((rt, h), 0.25);
        match rms_norm(x.view(), w.view(), eps) {
            Ok(y) => prop_assert_eq!(y.dim(), (t, h)),
            Err(e) => prop_assert!(typed(&e)),
        }
        match add_rms_norm(x.view(), r.view(), w.view(), eps) {
            Ok((y, s)) => prop_assert!(y.dim() == (t, h) && s.dim() == (t, h)),
            Err(e) => prop_assert!(typed(&e)),
        }
    }

    #[test]
    fn norm_values((x, w) in (1usize..4, 1usize..9).prop_flat_map(|(t, h)| (array2(t, h), array1(h))), eps in value()) {
        // Random values (NaN/inf included) with matching shapes: only eps can be rejected.
        match rms_norm(x.view(), w.view(), eps) {
            Ok(y) => prop_assert_eq!(y.dim(), x.dim()),
            Err(e) => {
                let eps_rejected = matches!(e, OpsError::InvalidArgument { arg: "eps", .. });
                prop_assert!(eps_rejected);
            }
        }
    }

    #[test]
    fn matmuls((m, k, n, k2) in (dim(), dim(), dim(), dim()), nb in dim(), b in dim(), b2 in dim()) {
        let x = Array2::<f32>::from_elem((m, k), 1.0);
        let w = Array2::<f32>::from_elem((n, k2), 1.0);
        let bias = Array1::<f32>::from_elem(nb, 1.0);
        match linear(x.view(), w.view(), Some(bias.view())) {
            Ok(y) => prop_assert_eq!(y.dim(), (m, n)),
            Err(e) => prop_assert!(typed(&e)),
        }
        let a = Array3::<f32>::from_elem((b, m, k), 1.0);
        let c = Array3::<f32>::from_elem((b2, k2, n), 1.0);
        match batched_matmul(a.view(), c.view()) {
            Ok(y) => prop_assert_eq!(y.dim(), (b, m, n)),
            Err(e) => prop_assert!(typed(&e)),
        }
    }

    #[test]
    fn elementwise_and_rows(x in (dim(), dim()).prop_flat_map(|(r, c)| array2(r, c))) {
        let (r, c) = x.dim();
        match silu_mul(x.view()) {
            Ok(y) => prop_assert_eq!(y.dim(), (r, c / 2)),
            Err(e) => prop_assert!(typed(&e) && c % 2 == 1),
        }
        match softmax(x.view()) {
            Ok(p) => prop_assert_eq!(p.dim(), (r, c)),
            Err(e) => prop_assert!(typed(&e) && c == 0),
        }
        match argmax(x.view()) {
            Ok(i) => {
                prop_assert_eq!(i.len(), r);
                prop_assert!(i.iter().all(|&j| j >= 0 && (j as usize) < c));
            }
            Err(e) => prop_assert!(typed(&e) && c == 0),
        }
    }

    #[test]
    fn embedding_ids((v, h) in (dim(), dim()), ids in dim().prop_flat_map(ints)) {
        let table = Array2::<f32>::from_elem((v, h), 2.0);
        match embedding(table.view(), ids.view()) {
            Ok(y) => prop_assert_eq!(y.dim(), (ids.len(), h)),
            Err(e) => {
                let bad = ids.iter().any(|&i| i < 0 || i as usize >= v);
                let out_of_range = matches!(e, OpsError::IndexOutOfRange { .. });
                prop_assert!(bad && out_of_range);
            }
        }
    }

    #[test]
    fn rope_tables(
        dim in 0usize..10,
        theta in value(),
        scaled in any::<bool>(),
        (factor, beta_fast, beta_slow, mscale, mscale_all_dim) in (value(), value(), value(), value(), value()),
        orig in 0usize..100,
        max_positions in 0usize..40,
    ) {
        let scaling = scaled.then_some(YarnScaling {
            factor,
            original_max_position_embeddings: orig,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
        });
        let cfg = RopeConfig { dim, theta, scaling };
        match RopeTable::new(&cfg, max_positions) {
            Ok(t) => prop_assert!(t.cos.dim() == (max_positions, dim / 2) && t.sin.dim() == t.cos.dim()),
            Err(e) => prop_assert!(typed(&e)),
        }
        let _ = dsnpu_ops::rope::softmax_scale_correction(&cfg);
        let _ = dsnpu_ops::rope::attention_factor(&cfg);
    }

    #[test]
    fn rope_apply(
        x in (dim(), dim(), 0usize..10).prop_flat_map(|(t, h, d)| array3(t, h, d)),
        (rows, half) in (0usize..8, 0usize..5),
        sin_rows in 0usize..8,
        positions in dim().prop_flat_map(ints),
        interleaved in any::<bool>(),
    ) {
        // Tables built by hand (the fields are public), possibly inconsistent.
        let table = RopeTable { cos: Array2::from_elem((rows, half), 0.5), sin: Array2::from_elem((sin_rows, half), 0.5) };
        let layout = if interleaved { RopeLayout::Interleaved } else { RopeLayout::HalfSplit };
        match rope(x.view(), positions.view(), &table, layout) {
            Ok(y) => prop_assert_eq!(y.dim(), x.dim()),
            Err(e) => prop_assert!(typed(&e)),
        }
    }

    #[test]
    fn sampler(
        temperature in value(),
        top_p in value(),
        seed in any::<u64>(),
        logits in dim().prop_flat_map(array1),
    ) {
        match Sampler::new(temperature, top_p, seed) {
            Ok(mut s) => match s.sample(logits.view()) {
                Ok(tok) => prop_assert!(tok >= 0 && (tok as usize) < logits.len()),
                Err(e) => prop_assert!(typed(&e)),
            },
            Err(e) => prop_assert!(typed(&e)),
        }
    }
}
