//! Helpers shared by the integration tests: the committed tiny checkpoints and their transformers outputs.
#![allow(dead_code)]

use ndarray::{Array1, Array2};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::path::PathBuf;

/// Every variant `scripts/make_tiny_checkpoints.py` writes.
pub const VARIANTS: [&str; 5] = ["v3_base", "v3_yarn", "v3_bf16", "v3_fp8", "v2_lite"];

pub fn data_dir(variant: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(variant)
}

/// transformers' outputs for one variant (see the script's docstring).
pub struct Reference {
    pub prompt: Vec<i32>,
    pub generated: Vec<i32>,
    /// `[prompt + 15, V]`: logits over the prompt followed by the first 15 generated tokens.
    pub logits: Array2<f32>,
}

impl Reference {
    /// Prompt followed by all generated tokens but the last.
    pub fn full_sequence(&self) -> Vec<i32> {
        let mut ids = self.prompt.clone();
        ids.extend_from_slice(&self.generated[..self.generated.len() - 1]);
        ids
    }
}

pub fn reference(variant: &str) -> Reference {
    let bytes = std::fs::read(data_dir(variant).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> Vec<i32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I32);
        t.data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Reference {
        prompt: ints("prompt_ids"),
        generated: ints("generated_ids"),
        logits: Array2::from_shape_vec((t.shape()[0], t.shape()[1]), data).unwrap(),
    }
}

pub fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn row_argmax(a: &Array2<f32>) -> Array1<i32> {
    a.rows()
        .into_iter()
        .map(|r| {
            let mut best = 0;
            for (i, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = i;
                }
            }
            best as i32
        })
        .collect()
}
