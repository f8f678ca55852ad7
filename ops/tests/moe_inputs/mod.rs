//! The random MoE inputs the fuzz suites share (`moe_fuzz`: the reference never panics; `npu_fuzz`: the
//! device agrees with the reference): values with NaN and infinities among them, matrices of them,
//! and gating configurations valid or not.

use dsnpu_ops::moe::{GatingConfig, ScoreFunc};
use ndarray::Array2;
use proptest::prelude::*;

fn small_f32() -> impl Strategy<Value = f32> {
    prop_oneof![8 => -4.0f32..4.0, 1 => Just(0.0), 1 => Just(f32::NAN), 1 => Just(f32::INFINITY)]
}

pub fn matrix(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f32>> {
    proptest::collection::vec(small_f32(), rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).unwrap())
}

pub fn gating_config() -> impl Strategy<Value = GatingConfig> {
    (
        0usize..10,
        0usize..6,
        0usize..6,
        any::<bool>(),
        any::<bool>(),
        small_f32(),
    )
        .prop_map(
            |(top_k, n_group, topk_group, sigmoid, normalize, f)| GatingConfig {
                top_k,
                n_group,
                topk_group,
                score: if sigmoid {
                    ScoreFunc::Sigmoid
                } else {
                    ScoreFunc::Softmax
                },
                normalize,
                routed_scaling_factor: f,
            },
        )
}
