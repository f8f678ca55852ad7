//! Conformance suite for top-p sampling ([`DenseOps::sample_top_p`]): one id per row of logits, row `r`
//! drawn by its own seeded [`Sampler`].
//!
//! The contract is exact: for the same logits and the same sampler states a backend returns the ids
//! the CPU reference returns (integers, zero tolerance) and leaves its samplers in the same state (one
//! draw consumed per row unless greedy, none on a rejected call). Every call is compared that way; the
//! sampler states are compared through the uniform each sampler would draw next. (A device kernel
//! performs the reference's f32 operations in the same order; one whose `exp` differs in the last ulp
//! could still differ where a draw lands within rounding of a boundary, and would fail here: see
//! [`Sampler`].)
//!
//! Hand-worked cases, checked against values worked out here and not only against the reference:
//! greedy samplers (temperature 0: the first maximum, no draw consumed); a tiny top_p (only the most
//! likely token survives the cut, but a draw is consumed); ties at the nucleus boundary (kept in id
//! order while the weight before them is below the cut); a cut landing exactly on a cumulative weight;
//! masked (`-inf`) tokens never drawn. Seeded random cases cover one to several rows, 1 to 9000 columns
//! (one and two of the kernel's 8192-element tiles), temperatures from 0.3 to 2 with top_p from 1e-6 to
//! 1, a ragged batch whose rows have different numbers of live (non-masked) tokens, and an empty batch.
//! Malformed inputs (NaN, `+inf`, every entry `-inf`, empty rows, one sampler too few, samplers with
//! different parameters) must be rejected without consuming a draw.

use super::cases::CaseRng;
use super::dense::{ran, rejects};
use super::tolerance::assert_equal;
use crate::backend::{Cpu, DenseOps};
use crate::sampling::{uniform, Sampler};
use crate::{Float, Result};
use ndarray::{Array1, Array2};

/// The reference must accept every case the suite generates; an error there is a bug in the suite or
/// the reference.
#[track_caller]
fn reference<R>(what: &str, r: Result<R>) -> R {
    r.unwrap_or_else(|e| panic!("{what}: reference rejected a valid case: {e}"))
}

/// `rows` samplers sharing `temperature` and `top_p`, seeded `seed`, `seed + 1`, ...
fn samplers(rows: usize, temperature: f32, top_p: f32, seed: u64) -> Vec<Sampler> {
    (0..rows)
        .map(|r| {
            reference(
                "Sampler::new",
                Sampler::new(temperature, top_p, seed + r as u64),
            )
        })
        .collect()
}

/// Each sampler's state, as the bits of the uniform it would draw next.
fn states(samplers: &[Sampler]) -> Array1<u32> {
    samplers
        .iter()
        .map(|s| s.clone().next_uniform().to_bits())
        .collect()
}

/// A matrix of `T` from rows of f32 values.
fn logits<T: Float, const N: usize>(rows: &[[f32; N]]) -> Array2<T> {
    Array2::from_shape_fn((rows.len(), N), |(r, c)| T::from_f32(rows[r][c]))
}

/// `draws` calls of `sample_top_p` on `b` and on the reference with samplers seeded alike: the ids of
/// every call must be equal, and so must the samplers' states after the last. Returns the backend's
/// ids, call after call, or `None` when the backend does not support the case.
fn compare<B: DenseOps, T: Float>(
    b: &B,
    what: &str,
    x: &Array2<T>,
    (temperature, top_p): (f32, f32),
    seed: u64,
    draws: usize,
) -> Option<Vec<Array1<i32>>> {
    let mut got_s = samplers(x.nrows(), temperature, top_p, seed);
    let mut want_s = got_s.clone();
    let mut all = Vec::with_capacity(draws);
    for d in 0..draws {
        let what = format!("{what} draw {d}");
        let want = reference(&what, Cpu.sample_top_p(&mut want_s, x.view()));
        let got = ran(b, &what, b.sample_top_p(&mut got_s, x.view()))?;
        assert_equal(&what, got.view(), want.view());
        all.push(got);
    }
    assert_equal(
        &format!("{what}: sampler states after {draws} calls"),
        states(&got_s).view(),
        states(&want_s).view(),
    );
    Some(all)
}

/// The ids the backend drew for row `r` over all calls.
fn column(all: &[Array1<i32>], r: usize) -> Vec<i32> {
    all.iter().map(|ids| ids[r]).collect()
}

pub fn sample_top_p<B: DenseOps, T: Float>(b: &B) {
    let ty = T::DTYPE;
    let n = f32::NEG_INFINITY;

    // Greedy: the first maximum of each row, and no draw consumed.
    let x = logits::<T, 4>(&[[0.5, 2.0, -1.0, 2.0], [3.0, 1.0, 3.0, 0.0]]);
    let what = format!("sample_top_p<{ty}> greedy (temperature 0)");
    let mut s = samplers(2, 0.0, 0.3, 40);
    if let Some(got) = ran(b, &what, b.sample_top_p(&mut s, x.view())) {
        assert_equal(&what, got.view(), Array1::from(vec![1, 0]).view());
        let fresh: Array1<u32> = (0..2).map(|r| uniform(40 + r, 0).to_bits()).collect();
        assert_equal(
            &format!("{what}: no draw consumed"),
            states(&s).view(),
            fresh.view(),
        );
    }
    compare(b, &what, &x, (0.0, 0.3), 40, 2);

    // top_p tiny: the nucleus is the most likely token alone, whatever the draw; one draw per call.
    let x = logits::<T, 4>(&[[0.0, 1.0, 3.0, 2.0], [5.0, -1.0, 0.0, 4.5]]);
    let what = format!("sample_top_p<{ty}> top_p 1e-6");
    let mut s = samplers(2, 1.0, 1e-6, 50);
    let mut calls = 0;
    for d in 0..4u64 {
        let w = format!("{what} draw {d}");
        if let Some(got) = ran(b, &w, b.sample_top_p(&mut s, x.view())) {
            assert_equal(&w, got.view(), Array1::from(vec![2, 0]).view());
            calls += 1;
        }
    }
    if calls == 4 {
        let after: Array1<u32> = (0..2).map(|r| uniform(50 + r, 4).to_bits()).collect();
        assert_equal(
            &format!("{what}: one draw per call"),
            states(&s).view(),
            after.view(),
        );
    }
    compare(b, &what, &x, (1.0, 1e-6), 50, 2);

    // Ties at the nucleus boundary: four tokens of weight exactly 1 and two of e^-2; top_p 0.5 of the
    // total 4 + 2e^-2 is 2.135..., so the ties are kept in id order while the weight before them is
    // below it: ids 1, 2, 4 (before = 0, 1, 2) and not 5 (before = 3), nor 0 and 3.
    let x = logits::<T, 6>(&[[-2.0, 0.0, 0.0, -2.0, 0.0, 0.0]]);
    let what = format!("sample_top_p<{ty}> ties at the nucleus boundary");
    if let Some(all) = compare(b, &what, &x, (1.0, 0.5), 3, 48) {
        let ids = column(&all, 0);
        assert!(
            ids.iter().all(|&i| [1, 2, 4].contains(&i)),
            "{what}: drew outside the nucleus {{1, 2, 4}}: {ids:?}"
        );
        assert!(
            [1, 2, 4].iter().all(|i| ids.contains(i)),
            "{what}: some nucleus token never drawn in 48 draws: {ids:?}"
        );
    }
    // A cut exactly on a cumulative weight: four equal tokens, top_p 0.5 keeps ids 0 and 1 only (the
    // weight before id 2 is exactly half of the total, not below it).
    let x = logits::<T, 4>(&[[1.0, 1.0, 1.0, 1.0]]);
    let what = format!("sample_top_p<{ty}> cut on a cumulative weight");
    if let Some(all) = compare(b, &what, &x, (0.5, 0.5), 9, 24) {
        let ids = column(&all, 0);
        assert!(ids.iter().all(|&i| i < 2), "{what}: {ids:?}");
        assert!(ids.contains(&0) && ids.contains(&1), "{what}: {ids:?}");
    }

    // Wide rows of seven tie classes (logit -(c mod 7), weights e^-k each held by ~14k tokens): the cut
    // falls inside a class, whose ties are kept in id order — on a row wider than a device's on-chip list.
    let cols = 100_000;
    let x = Array2::from_shape_fn((2, cols), |(r, c)| T::from_f32(-(((c + r) % 7) as f32)));
    for top_p in [0.5f32, 0.75, 0.999] {
        let what = format!("sample_top_p<{ty}> [2, {cols}] seven tie classes, top_p {top_p}");
        compare(b, &what, &x, (1.0, top_p), 11, 3);
    }

    // top_p 1 with masked tokens: a masked token is never drawn.
    let x = logits::<T, 5>(&[[n, 0.0, n, 0.5, n], [1.0, n, n, n, n]]);
    let what = format!("sample_top_p<{ty}> top_p 1, masked tokens");
    if let Some(all) = compare(b, &what, &x, (1.0, 1.0), 7, 24) {
        let (row0, row1) = (column(&all, 0), column(&all, 1));
        assert!(
            row0.iter().all(|&i| i == 1 || i == 3),
            "{what}: row 0 drew a masked token: {row0:?}"
        );
        assert!(row0.contains(&1) && row0.contains(&3), "{what}: {row0:?}");
        assert!(row1.iter().all(|&i| i == 0), "{what}: {row1:?}");
    }

    // Seeded random logits over the shape and parameter matrix.
    let mut rng = CaseRng::new(0x5157_000A);
    let params: [(f32, f32); 6] = [
        (0.7, 0.9),
        (1.0, 1.0),
        (2.0, 0.5),
        (0.3, 0.95),
        (0.0, 0.9),
        (1.0, 1e-6),
    ];
    // The wide rows are larger than a device's on-chip list: its search starts out streaming the row.
    for (rows, cols) in [
        (1usize, 1usize),
        (1, 7),
        (16, 33),
        (5, 1000),
        (3, 9000),
        (2, 100_000),
    ] {
        for (i, &(temperature, top_p)) in params.iter().enumerate() {
            let x = rng.normalish::<T, _>((rows, cols), 3.0);
            let what = format!(
                "sample_top_p<{ty}> [{rows}, {cols}] temperature {temperature} top_p {top_p}"
            );
            let seed = 1000 * rows as u64 + 10 * cols as u64 + i as u64;
            compare(b, &what, &x, (temperature, top_p), seed, 2);
        }
    }

    // Ragged: rows with different numbers of live tokens (1 to 300, scattered among masked ones).
    let (rows, cols) = (8, 300);
    let mut x = rng.normalish::<T, _>((rows, cols), 2.0);
    let mut live = Vec::with_capacity(rows);
    for r in 0..rows {
        let keep = if r == 0 { 1 } else { rng.usize_in(1, cols) };
        let kept = rng.distinct(cols, keep);
        for c in 0..cols {
            if !kept.contains(&c) {
                x[[r, c]] = T::from_f32(n);
            }
        }
        live.push(kept);
    }
    for &(temperature, top_p) in &[(1.0f32, 1.0f32), (0.8, 0.9), (0.0, 1.0)] {
        let what = format!(
            "sample_top_p<{ty}> ragged [{rows}, {cols}] temperature {temperature} top_p {top_p}"
        );
        if let Some(all) = compare(b, &what, &x, (temperature, top_p), 77, 3) {
            for (r, kept) in live.iter().enumerate() {
                let ids = column(&all, r);
                assert!(
                    ids.iter().all(|&i| kept.contains(&(i as usize))),
                    "{what}: row {r} drew a masked token: {ids:?}"
                );
            }
        }
    }

    // No rows: no ids.
    let x = Array2::<T>::default((0, 5));
    let what = format!("sample_top_p<{ty}> no rows");
    if let Some(got) = ran(b, &what, b.sample_top_p(&mut [], x.view())) {
        assert_equal(&what, got.view(), Array1::<i32>::zeros(0).view());
    }

    // Malformed inputs: rejected, and no draw consumed.
    let mut s = samplers(2, 1.0, 0.9, 5);
    let fresh = states(&s);
    let bad = |rows: [[f32; 3]; 2]| logits::<T, 3>(&rows);
    for (what, x) in [
        ("a NaN logit", bad([[0.0, 1.0, 2.0], [f32::NAN, 0.0, 1.0]])),
        (
            "a +inf logit",
            bad([[0.0, f32::INFINITY, 2.0], [0.0, 0.0, 1.0]]),
        ),
        ("a row of only -inf", bad([[0.0, 1.0, 2.0], [n, n, n]])),
    ] {
        rejects(
            b,
            &format!("sample_top_p<{ty}> with {what}"),
            b.sample_top_p(&mut s, x.view()),
        );
    }
    let empty = Array2::<T>::default((2, 0));
    rejects(
        b,
        "sample_top_p over empty rows",
        b.sample_top_p(&mut s, empty.view()),
    );
    let x = bad([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]);
    rejects(
        b,
        "sample_top_p with one sampler for two rows",
        b.sample_top_p(&mut s[..1], x.view()),
    );
    assert_equal(
        &format!("sample_top_p<{ty}>: rejected calls consumed no draw"),
        states(&s).view(),
        fresh.view(),
    );
    let mut mixed = samplers(1, 1.0, 0.9, 5);
    mixed.extend(samplers(1, 1.0, 0.8, 6));
    rejects(
        b,
        "sample_top_p with samplers of different top_p",
        b.sample_top_p(&mut mixed, x.view()),
    );
}
