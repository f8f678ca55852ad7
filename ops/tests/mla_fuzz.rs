//! Random shapes and indices into the MLA operators: every call returns `Ok` or a typed error, never
//! panics; an `Ok` result has the documented shapes and, for finite inputs, finite values.

use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::mla::{mla_decode, mla_prefill, PagedLatentCache};
use ndarray::{Array1, Array2, Array3, Array4};
use proptest::prelude::*;

/// Mostly near-valid integers: a value in `[lo, hi]` with the edges over-represented.
fn pick(rng: &mut CaseRng, lo: i32, hi: i32) -> i32 {
    match rng.usize_in(0, 5) {
        0 => lo,
        1 => hi,
        _ => lo + rng.usize_in(0, (hi - lo).max(0) as usize) as i32,
    }
}

/// An extent in `0..hi`, mostly non-zero so that cases get past the shape checks often.
fn dim(hi: usize) -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 6 => 1usize..hi]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn cache_write_never_panics(
        (nb, bs, dl, dr) in (0usize..4, 0usize..5, 0usize..4, 0usize..3),
        (n, dl_in, dr_in) in (0usize..6, 0usize..5, 0usize..4),
        slots_len in 0usize..7,
        seed in any::<u64>(),
    ) {
        let mut rng = CaseRng::new(seed);
        let cap = (nb * bs) as i32;
        let slots: Array1<i32> = (0..slots_len).map(|_| pick(&mut rng, -2, cap + 1)).collect();
        let latent = rng.uniform::<f32, _>((n, dl_in), -1.0, 1.0);
        let rope = rng.uniform::<f32, _>((n, dr_in), -1.0, 1.0);
        let mut cache = match PagedLatentCache::<f32>::new(nb, bs, dl, dr) {
            Ok(c) => c,
            // Also feed a hand-built cache with the raw (possibly empty) shapes.
            Err(_) => PagedLatentCache { latent: Array3::zeros((nb, bs, dl)), rope: Array3::zeros((nb, bs, dr)) },
        };
        let before = cache.clone();
        if cache.write(latent.view(), rope.view(), slots.view()).is_err() {
            prop_assert_eq!(&cache.latent, &before.latent);
            prop_assert_eq!(&cache.rope, &before.rope);
        }
    }

    #[test]
    fn decode_never_panics(
        (nb, bs, dl, dr, rope_blocks) in (dim(4), dim(5), dim(4), dim(3), dim(4)),
        (batch, s_q, heads, dl_q, dr_q) in (dim(4), dim(3), dim(3), dim(5), dim(4)),
        (table_rows, cols, lens_len) in (dim(4), dim(4), dim(4)),
        consistent in any::<bool>(),
        scale in prop_oneof![1 => Just(f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(0.0f32), 6 => -4.0f32..4.0],
        seed in any::<u64>(),
    ) {
        let mut rng = CaseRng::new(seed);
        // Half the cases agree on every shape so the index and length checks get exercised.
        let (rope_blocks, dl_q, dr_q, table_rows, lens_len) =
            if consistent { (nb, dl, dr, batch, batch) } else { (rope_blocks, dl_q, dr_q, table_rows, lens_len) };
        // Finite cache contents everywhere, so any Ok result must be finite.
        let cache = PagedLatentCache::<f32> {
            latent: rng.uniform((nb, bs, dl), -1.0, 1.0),
            rope: rng.uniform((rope_blocks, bs, dr), -1.0, 1.0),
        };
        let table = Array2::from_shape_simple_fn((table_rows, cols), || pick(&mut rng, -2, nb as i32 + 1));
        let max_len = (cols * bs) as i32 + 2;
        let lens: Array1<i32> = (0..lens_len).map(|_| pick(&mut rng, -1, max_len)).collect();
        let q = rng.uniform::<f32, _>((batch, s_q, heads, dl_q), -1.0, 1.0);
        let qr = rng.uniform::<f32, _>((batch, s_q, heads, dr_q), -1.0, 1.0);
        if let Ok((out, lse)) = mla_decode(q.view(), qr.view(), &cache, table.view(), lens.view(), scale) {
            prop_assert_eq!(out.shape(), &[batch, s_q, heads, dl][..]);
            prop_assert_eq!(lse.shape(), &[batch, heads, s_q][..]);
            prop_assert!(out.iter().chain(lse.iter()).all(|v| v.is_finite()));
        }
    }

    #[test]
    fn decode_valid_shapes_random_indices_never_panic(
        (nb, bs, batch, cols) in (1usize..5, 1usize..5, 1usize..4, 1usize..4),
        s_q in 1usize..3,
        seed in any::<u64>(),
    ) {
        // Shapes always consistent, so only the index checks stand between the input and the cache.
        let mut rng = CaseRng::new(seed);
        let mut cache = PagedLatentCache::<f32>::new(nb, bs, 3, 2).unwrap();
        cache.latent = rng.uniform(cache.latent.raw_dim(), -1.0, 1.0);
        cache.rope = rng.uniform(cache.rope.raw_dim(), -1.0, 1.0);
        let table = Array2::from_shape_simple_fn((batch, cols), || pick(&mut rng, -1, nb as i32));
        let lens: Array1<i32> = (0..batch).map(|_| pick(&mut rng, 0, (cols * bs) as i32 + 1)).collect();
        let q = Array4::from_elem((batch, s_q, 2, 3), 0.25f32);
        let qr = Array4::from_elem((batch, s_q, 2, 2), -0.5f32);
        let r = mla_decode(q.view(), qr.view(), &cache, table.view(), lens.view(), 1.0);
        // Accepted exactly when every length and every used entry is in range.
        let valid = (0..batch).all(|b| {
            let l = lens[b];
            l >= s_q as i32
                && l as usize <= cols * bs
                && (0..(l as usize).div_ceil(bs)).all(|k| (0..nb as i32).contains(&table[[b, k]]))
        });
        prop_assert_eq!(r.is_ok(), valid, "lens {:?} table {:?}: {:?}", lens, table, r.as_ref().err());
    }

    #[test]
    fn prefill_never_panics(
        (t, heads, dqk, dv) in (0usize..7, 0usize..3, 0usize..4, 0usize..4),
        (tk, hk, dk, tv, hv) in (0usize..7, 0usize..3, 0usize..4, 0usize..7, 0usize..3),
        consistent in any::<bool>(),
        cu_len in 0usize..5,
        scale in prop_oneof![Just(1.0f32), Just(f32::NAN), -2.0f32..2.0],
        seed in any::<u64>(),
    ) {
        let mut rng = CaseRng::new(seed);
        // Half the cases use matching k/v shapes so the cu_seqlens checks get exercised.
        let (kshape, vshape) = if consistent { ((t, heads, dqk), (t, heads, dv)) } else { ((tk, hk, dk), (tv, hv, dv)) };
        let q = rng.uniform::<f32, _>((t, heads, dqk), -1.0, 1.0);
        let k = rng.uniform::<f32, _>(kshape, -1.0, 1.0);
        let v = rng.uniform::<f32, _>(vshape, -1.0, 1.0);
        let mut cu: Vec<i32> = (0..cu_len).map(|_| pick(&mut rng, -1, t as i32 + 1)).collect();
        if consistent && rng.chance(0.7) {
            // Anchored at 0 and T, so only the interior can be wrong (unsorted, negative, beyond T)...
            cu.insert(0, 0);
            cu.push(t as i32);
            if rng.chance(0.5) {
                // ...or a valid packing: sorted interior cuts within [0, T].
                cu.iter_mut().for_each(|c| *c = (*c).clamp(0, t as i32));
                cu.sort_unstable();
            }
        }
        let cu = Array1::from(cu);
        if let Ok((out, lse)) = mla_prefill(q.view(), k.view(), v.view(), cu.view(), scale) {
            prop_assert_eq!(out.shape(), &[t, heads, dv][..]);
            prop_assert_eq!(lse.shape(), &[heads, t][..]);
            prop_assert!(out.iter().chain(lse.iter()).all(|x| x.is_finite()));
        }
    }
}
