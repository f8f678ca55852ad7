//! The model on the device path, `Fallback<Npu, Cpu>` on device 0 (the simulator here: the test binary
//! finds `libdsnpu_sim.so` next to itself), against the same model on the CPU references, on every
//! committed tiny checkpoint: logits within a device tolerance, the same greedy tokens (which are also
//! transformers'), and counters showing which operators really ran on the device.
//!
//! Tolerance. The device kernels compute each operator in f32 like the references but in their own
//! order (tiled reductions, fused multiply-adds), so each result may differ from the reference by about
//! one ulp (6e-8 relative) per element, more for long dot products. Through ~30 operators of 2-3 layers,
//! residuals and norms, the logits move by ~1e-6 of their scale (observed: at most 9e-7 · max|logit|).
//! We allow 1e-5 · max|logit| (≈ 1e-4 on these checkpoints): 10x the observed drift, and still 10x
//! below the 1e-3 bound against transformers, so device rounding cannot eat the model's acceptance
//! budget. Greedy ids must be identical: the guard below checks that every CPU argmax wins by more than
//! twice that tolerance, so an identical choice is implied, not lucky.

mod common;

use common::{data_dir, max_abs_diff, reference, VARIANTS};
use dsnpu_model::{DeepseekV3, GenerateOptions, Generator, ModelConfig};
use dsnpu_ops::backend::{Cpu, Fallback, Npu, Op};
use ndarray::Array2;
use std::sync::OnceLock;

/// Logits may differ from the CPU model's by this fraction of the largest |logit|.
const REL_TOLERANCE: f32 = 1e-5;

/// The operators `Npu` has kernels for; they must never fall back in these runs.
const DEVICE_OPS: [Op; 6] = [
    Op::RmsNorm,
    Op::AddRmsNorm,
    Op::Rope,
    Op::Linear,
    Op::BatchedMatmul,
    Op::SiluMul,
];

type Device = Fallback<Npu, Cpu>;

/// A device backend on device 0 with a stream of its own; the first one stays alive for the whole run,
/// keeping the device open and the kernels loaded between tests.
fn device() -> Device {
    static FIRST: OnceLock<Npu> = OnceLock::new();
    let first = FIRST.get_or_init(|| Npu::new(0).expect("open device 0 and load the kernels"));
    let npu = Npu::with_library(first.library().clone()).expect("a stream on device 0");
    Fallback::new(npu, Cpu)
}

fn models(variant: &str) -> (DeepseekV3, DeepseekV3<Device>) {
    let cpu = DeepseekV3::load(data_dir(variant)).unwrap();
    let dev = DeepseekV3::load_with_backend(data_dir(variant), device()).unwrap();
    (cpu, dev)
}

fn tolerance(cpu_logits: &Array2<f32>) -> f32 {
    REL_TOLERANCE * cpu_logits.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// The smallest gap between a row's largest and second largest logit.
fn min_argmax_margin(logits: &Array2<f32>) -> f32 {
    logits
        .rows()
        .into_iter()
        .map(|r| {
            let (mut best, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in r {
                if v > best {
                    (best, second) = (v, best);
                } else if v > second {
                    second = v;
                }
            }
            best - second
        })
        .fold(f32::INFINITY, f32::min)
}

/// Operator calls of one cache-free forward, from the architecture: embedding; per layer an input norm
/// (fused with the pending dense-MLP residual when the previous layer was dense), MLA (q: two
/// projections and a norm with q_lora, else one; kv_a and its latent norm; rope on q and k; kv_b; the
/// attention; o), a post-attention add+norm, then a dense MLP (gate_up, silu, down) or MoE (router,
/// gating, dispatch, experts, combine, and the shared MLP); the final norm and lm_head.
fn forward_calls(cfg: &ModelConfig) -> Vec<(Op, u64)> {
    let layers = cfg.num_hidden_layers as u64;
    let moe = (0..cfg.num_hidden_layers)
        .filter(|&l| cfg.is_moe_layer(l))
        .count() as u64;
    let dense = layers - moe;
    let lora = cfg.q_lora_rank.is_some() as u64;
    let q = 1 + lora; // q projections
    let (mut rms, mut add, mut pending) = (0, 0, false);
    for l in 0..cfg.num_hidden_layers {
        if pending {
            add += 1;
        } else {
            rms += 1;
        }
        rms += lora + 1; // the q_a norm (q_lora only) and the latent norm
        add += 1;
        pending = !cfg.is_moe_layer(l);
    }
    if pending {
        add += 1;
    } else {
        rms += 1;
    }
    vec![
        (Op::Embedding, 1),
        (Op::RmsNorm, rms),
        (Op::AddRmsNorm, add),
        (Op::Rope, 2 * layers),
        (Op::Linear, layers * (q + 3) + dense * 2 + moe * 3 + 1),
        (Op::SiluMul, layers),
        (Op::MlaPrefill, layers),
        (Op::MoeGatingTopk, moe),
        (Op::MoeInitRouting, moe),
        (Op::ExpertFfn, moe),
        (Op::MoeFinalizeRouting, moe),
        (Op::BatchedMatmul, 0),
        (Op::MlaCacheWrite, 0),
        (Op::MlaDecode, 0),
    ]
}

#[test]
fn device_logits_match_the_cpu_model_and_every_operator_goes_through_the_backend() {
    for variant in VARIANTS {
        let (cpu, dev) = models(variant);
        let seq = reference(variant).full_sequence();
        let want = cpu.forward(&seq).unwrap();
        let got = dev.forward(&seq).unwrap();
        let diff = max_abs_diff(&got, &want);
        let tol = tolerance(&want);
        eprintln!("{variant}: max |device - cpu| {diff:e} (tolerance {tol:e})");
        assert!(
            diff <= tol,
            "{variant}: device logits differ by {diff} > {tol}"
        );

        let counts = dev.backend().counts();
        for (op, calls) in forward_calls(dev.config()) {
            let c = counts.get(op);
            assert_eq!(
                c.primary + c.secondary,
                calls,
                "{variant}: {op} calls through the backend ({c:?})"
            );
        }
        for op in DEVICE_OPS {
            assert_eq!(
                counts.get(op).secondary,
                0,
                "{variant}: {op} fell back to the CPU"
            );
        }
        assert!(counts.get(Op::Linear).primary > 0 && counts.get(Op::RmsNorm).primary > 0);
    }
}

#[test]
fn device_greedy_tokens_match_the_cpu_model_and_transformers() {
    for variant in VARIANTS {
        let (cpu, dev) = models(variant);
        let r = reference(variant);
        let cpu_logits = cpu.forward(&r.full_sequence()).unwrap();
        let margin = min_argmax_margin(&cpu_logits);
        assert!(
            margin > 2.0 * tolerance(&cpu_logits),
            "{variant}: an argmax margin of {margin} is within device noise"
        );

        let mut opts = GenerateOptions::greedy(r.generated.len());
        opts.stop_ids = cpu.config().eos_token_ids.clone();
        let want = Generator::new(&cpu, opts.clone())
            .unwrap()
            .generate(&r.prompt)
            .unwrap();
        let got = Generator::new(&dev, opts)
            .unwrap()
            .generate(&r.prompt)
            .unwrap();
        assert_eq!(
            got, want,
            "{variant}: device greedy tokens differ from the CPU model's"
        );
        assert_eq!(
            got, r.generated,
            "{variant}: greedy tokens differ from transformers"
        );

        // Decode steps ran the absorbed path: batched_matmul (W_UK, W_UV) on the device.
        let counts = dev.backend().counts();
        assert!(counts.get(Op::BatchedMatmul).primary > 0, "{variant}");
        assert!(counts.get(Op::MlaDecode).primary + counts.get(Op::MlaDecode).secondary > 0);
        for op in DEVICE_OPS {
            assert_eq!(counts.get(op).secondary, 0, "{variant}: {op} fell back");
        }
    }
}

#[test]
fn device_incremental_decode_matches_the_cpu_model_step_by_step() {
    let (cpu, dev) = models("v3_base");
    let seq = reference("v3_base").full_sequence();
    let prompt = 4;
    let (mut cc, mut dc) = (cpu.new_cache(16, 3).unwrap(), dev.new_cache(16, 3).unwrap());
    let want = cpu.prefill(&mut cc, &[(7, &seq[..prompt])]).unwrap();
    let got = dev.prefill(&mut dc, &[(7, &seq[..prompt])]).unwrap();
    let tol = tolerance(&want[0]);
    assert!(max_abs_diff(&got[0], &want[0]) <= tol);
    for (p, &token) in seq.iter().enumerate().skip(prompt) {
        let want = cpu.decode(&mut cc, &[(7, token)]).unwrap();
        let got = dev.decode(&mut dc, &[(7, token)]).unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff <= tolerance(&want),
            "decode at position {p}: device differs by {diff}"
        );
    }
    // The device model's cache holds what the CPU model's does (written by whichever side served
    // mla_cache_write), up to the device rounding of the latents.
    for l in 0..cpu.config().num_hidden_layers {
        let (a, b) = (&cc.layer(l).unwrap().latent, &dc.layer(l).unwrap().latent);
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= REL_TOLERANCE * scale,
            "layer {l}: cache differs by {diff}"
        );
        assert!(scale > 0.0);
    }
}
