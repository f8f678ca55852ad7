//! The seeded temperature/top-p sampler: greedy, determinism, nucleus truncation on hand-built
//! distributions, temperature, and bad input.
use dsnpu_ops::sampling::Sampler;
use dsnpu_ops::OpsError;
use half::bf16;
use ndarray::{array, Array1};

/// Logits whose softmax (temperature 1) is exactly `probs` (they sum to 1): `ln p`.
fn logits_of(probs: &[f64]) -> Array1<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn greedy_picks_the_first_maximum_without_drawing() {
    let mut s = Sampler::new(0.0, 1.0, 7).unwrap();
    let logits = array![0.5f32, 2.0, -1.0, 2.0];
    for _ in 0..5 {
        assert_eq!(s.sample(logits.view()).unwrap(), 1);
    }
    assert_eq!(s.distribution(logits.view()).unwrap(), vec![(1, 1.0)]);
    // top_p is irrelevant when greedy; -inf entries are just small.
    let mut s = Sampler::new(0.0, 0.01, 7).unwrap();
    assert_eq!(s.sample(array![f32::NEG_INFINITY, -3.0].view()).unwrap(), 1);
}

#[test]
fn nucleus_on_a_hand_built_distribution() {
    // p = [0.5, 0.3, 0.15, 0.05]. Cumulative probability before each token (in sorted order): 0, 0.5, 0.8,
    // 0.95. A token is kept while that is below top_p.
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let dist = |top_p: f32| {
        Sampler::new(1.0, top_p, 0)
            .unwrap()
            .distribution(logits.view())
            .unwrap()
    };

    // top_p 0.7: keeps {0, 1}, renormalised to [0.5/0.8, 0.3/0.8] = [0.625, 0.375].
    let d = dist(0.7);
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
    assert!(close(d[0].1, 0.625) && close(d[1].1, 0.375));

    // top_p 0.85: keeps {0, 1, 2} -> [0.5, 0.3, 0.15] / 0.95.
    let d = dist(0.85);
    assert_eq!(d.len(), 3);
    assert!(close(d[2].1, 0.15 / 0.95));

    // top_p 0.1: only the most likely token (it is always kept).
    assert_eq!(dist(0.1), vec![(0, 1.0)]);

    // top_p 1: everything, unchanged.
    let d = dist(1.0);
    assert_eq!(d.len(), 4);
    assert!(close(d[3].1, 0.05));
}

#[test]
fn nucleus_orders_by_probability_then_index() {
    // Unsorted input with a tie: p = [0.1, 0.4, 0.1, 0.4] -> order 1, 3, 0, 2.
    let logits = logits_of(&[0.1, 0.4, 0.1, 0.4]);
    let d = Sampler::new(1.0, 0.9, 0)
        .unwrap()
        .distribution(logits.view())
        .unwrap();
    // Cumulative before: 0, 0.4, 0.8 (< 0.9, kept), 0.9 (not < 0.9 in exact arithmetic; in floating point
    // the sum of ln/exp round trips may land a hair either side, so only the first three are asserted).
    assert_eq!(
        d.iter().take(3).map(|x| x.0).collect::<Vec<_>>(),
        vec![1, 3, 0]
    );
}

#[test]
fn sampled_frequencies_follow_the_truncated_distribution() {
    // top_p 0.7 keeps tokens 0 and 1 with probabilities 0.625 / 0.375; tokens 2 and 3 never appear.
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let mut s = Sampler::new(1.0, 0.7, 42).unwrap();
    let n = 4000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(logits.view()).unwrap() as usize] += 1;
    }
    assert_eq!(counts[2] + counts[3], 0);
    // Standard deviation of the frequency: sqrt(0.625·0.375/4000) = 0.0077; allow 5 sigma.
    let f0 = counts[0] as f64 / n as f64;
    assert!(
        (f0 - 0.625).abs() < 5.0 * 0.0077,
        "frequency of token 0: {f0}"
    );
}

#[test]
fn temperature_flattens_and_sharpens() {
    // p = [1/4, 3/4] at temperature 1 (logits [0, ln 3]). At temperature 2 the weights are
    // exp([0, ln3 / 2]) = [1, √3] -> [1/(1+√3), √3/(1+√3)] = [0.3660254, 0.6339746].
    let logits = array![0.0f32, 3f32.ln()];
    let d = Sampler::new(2.0, 1.0, 0)
        .unwrap()
        .distribution(logits.view())
        .unwrap();
    let r3 = 3f64.sqrt();
    assert_eq!(d[0].0, 1);
    assert!((d[0].1 - r3 / (1.0 + r3)).abs() < 1e-6 && (d[1].1 - 1.0 / (1.0 + r3)).abs() < 1e-6);
    // At temperature 0.5: weights [1, 9] -> [0.1, 0.9].
    let d = Sampler::new(0.5, 1.0, 0)
        .unwrap()
        .distribution(logits.view())
        .unwrap();
    assert!((d[0].1 - 0.9).abs() < 1e-6 && (d[1].1 - 0.1).abs() < 1e-6);
}

#[test]
fn same_seed_same_tokens() {
    let logits: Array1<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
    let run = |seed: u64| {
        let mut s = Sampler::new(0.8, 0.95, seed).unwrap();
        (0..64)
            .map(|_| s.sample(logits.view()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1234), run(1234));
    assert_ne!(run(1234), run(1235));
    // A clone continues the same stream.
    let mut a = Sampler::new(1.0, 1.0, 9).unwrap();
    a.sample(logits.view()).unwrap();
    let mut b = a.clone();
    assert_eq!(
        a.sample(logits.view()).unwrap(),
        b.sample(logits.view()).unwrap()
    );
}

#[test]
fn masked_tokens_are_never_sampled() {
    let logits = array![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
    let mut s = Sampler::new(1.0, 1.0, 3).unwrap();
    for _ in 0..200 {
        let t = s.sample(logits.view()).unwrap();
        assert!(t == 1 || t == 3);
    }
}

#[test]
fn works_on_half_logits() {
    let logits = array![
        bf16::from_f32(-1.0),
        bf16::from_f32(4.0),
        bf16::from_f32(1.0)
    ];
    let mut s = Sampler::new(0.0, 1.0, 0).unwrap();
    assert_eq!(s.sample(logits.view()).unwrap(), 1);
}

#[test]
fn sampler_bad_inputs() {
    let bad_new = |t: f32, p: f32, arg: &str| match Sampler::new(t, p, 0) {
        Err(OpsError::InvalidArgument {
            op: "Sampler::new",
            arg: a,
            ..
        }) => assert_eq!(a, arg),
        other => panic!("{t} {p}: {other:?}"),
    };
    bad_new(-0.1, 1.0, "temperature");
    bad_new(f32::NAN, 1.0, "temperature");
    bad_new(f32::INFINITY, 1.0, "temperature");
    // Subnormal temperatures: 1/t overflows f32 (found by tests/cli_fuzz.rs with --temperature 1e-45).
    bad_new(1e-45, 1.0, "temperature");
    bad_new(f32::MIN_POSITIVE / 8.0, 1.0, "temperature");
    // The smallest normal temperature still inverts, and samples the maximum.
    let mut cold = Sampler::new(f32::MIN_POSITIVE, 1.0, 0).unwrap();
    assert_eq!(cold.sample(array![0.5f32, 0.75, 0.25].view()).unwrap(), 1);
    bad_new(1.0, 0.0, "top_p");
    bad_new(1.0, 1.5, "top_p");
    bad_new(1.0, f32::NAN, "top_p");

    for greedy in [0.0f32, 1.0] {
        let mut s = Sampler::new(greedy, 0.9, 0).unwrap();
        assert!(matches!(
            s.sample(Array1::<f32>::zeros(0).view()),
            Err(OpsError::Shape { arg: "logits", .. })
        ));
        for bad in [
            array![0.0f32, f32::NAN],
            array![f32::INFINITY, 0.0],
            array![f32::NEG_INFINITY, f32::NEG_INFINITY],
        ] {
            assert!(
                matches!(
                    s.sample(bad.view()),
                    Err(OpsError::InvalidArgument {
                        op: "Sampler::sample",
                        arg: "logits",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
