//! The device-resident engine on the simulator against transformers' outputs and against itself:
//! every variant generates transformers' greedy ids and matches its prompt logits at the reference test's
//! tolerance; a batch of three sequences of different lengths over 8 decode steps keeps to the transfer
//! budget (ids in, ids out, one host wait per step, no operator off the device); sequences joining and
//! leaving a running batch produce what each produces alone; and the errors.
mod common;

use common::*;
use dsnpu_model::device::{DType, Engine, EngineOptions};
use dsnpu_model::{Checkpoint, ModelError};
use ndarray::Array2;
use safetensors::Dtype;

const TOLERANCE: f32 = 1e-3;

fn engine(variant: &str, num_blocks: usize) -> Engine {
    engine_as(variant, num_blocks, DType::F32)
}

fn engine_as(variant: &str, num_blocks: usize, dtype: DType) -> Engine {
    let opts = EngineOptions {
        num_blocks,
        block_size: 4,
        dtype,
        ..EngineOptions::default()
    };
    Engine::load(data_dir(variant), opts, &mut |_, _| {}).unwrap()
}

/// Greedy ids of one prompt alone, `n` of them.
fn alone(e: &mut Engine, prompt: &[i32], n: usize) -> Vec<i32> {
    let id = e.add_sequence(prompt).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let step = e.step().unwrap();
        assert_eq!(step.len(), 1);
        out.push(step[0].1);
    }
    e.remove_sequence(id).unwrap();
    out
}

#[test]
fn every_variant_generates_transformers_ids_and_logits() {
    for variant in VARIANTS {
        let r = reference(variant);
        let mut e = engine(variant, 32);
        let ids = alone(&mut e, &r.prompt, r.generated.len());
        assert_eq!(ids, r.generated, "{variant}");
        let full = r.full_sequence();
        let logits = e.prompt_logits(&full).unwrap();
        let logits = Array2::from_shape_vec((full.len(), e.config().vocab_size), logits).unwrap();
        let diff = max_abs_diff(&logits, &r.logits);
        assert!(diff <= TOLERANCE, "{variant}: max |logit diff| {diff}");
        assert_eq!(e.free_blocks(), 32, "{variant}: every block back");
    }
}

#[test]
fn a_batch_of_three_keeps_to_the_transfer_budget() {
    let mut e = engine("v3_base", 32);
    let prompts: [&[i32]; 3] = [&[5, 9, 14], &[3, 1, 4, 1, 5, 9, 2], &[7]];
    for p in prompts {
        e.add_sequence(p).unwrap();
    }
    e.step().unwrap(); // the three prefills
    let before = e.stats();
    let steps = 8u64;
    for _ in 0..steps {
        assert_eq!(e.step().unwrap().len(), 3);
    }
    let s = e.stats();
    let d = s.decode.transfers;
    let d0 = before.decode.transfers;
    let batch = 3u64;
    let h2d = d.h2d_bytes - d0.h2d_bytes;
    assert!(
        h2d <= 1024 * batch * steps,
        "decode h2d {h2d} bytes over {steps} steps"
    );
    assert_eq!(d.d2h_bytes - d0.d2h_bytes, 4 * batch * steps);
    assert_eq!(d.syncs - d0.syncs, steps);
    assert_eq!(s.decode.count - before.decode.count, steps);
    // Every operator of a step is a kernel: the engine has no host fallback; the launch counts say which.
    for op in [
        "gather_rows(index)",
        "mla_cache_write",
        "mla_prefill",
        "mla_decode",
        "argmax",
        "expert_ffn",
    ] {
        assert!(
            s.ops.get(op).copied().unwrap_or(0) > 0,
            "{op} never ran: {:?}",
            s.ops
        );
    }
    let load = s.load.h2d_bytes as f64;
    assert!(
        load <= 1.05 * s.weight_bytes as f64 && load >= s.weight_bytes as f64,
        "load moved {load} bytes for {} bytes of weights",
        s.weight_bytes
    );
}

/// A decode step of several sequences runs attention on the query's `[T, H, dn + dr]` rows as they
/// are: per layer two `grouped_matmul` launches (`grouped_matmul_strided`, the per-head products) and
/// one `rope` (of the rope part, into rows of its own), and no `gather_rows` moving rows to and from
/// head-major order or out of the query.
#[test]
fn a_decode_step_moves_no_rows_between_token_and_head_order() {
    let mut e = engine("v3_base", 32);
    for p in [&[5, 9, 14][..], &[3, 1, 4, 1], &[7]] {
        e.add_sequence(p).unwrap();
    }
    e.step().unwrap();
    let before = e.stats().ops;
    let steps = 3u64;
    for _ in 0..steps {
        e.step().unwrap();
    }
    let after = e.stats().ops;
    let ran = |op| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    let layers = e.config().num_hidden_layers as u64;
    assert_eq!(ran("mla_decode"), layers * steps, "{after:?}");
    assert_eq!(ran("grouped_matmul"), 2 * layers * steps, "{after:?}");
    assert_eq!(ran("rope"), layers * steps, "{after:?}");
    assert_eq!(ran("gather_rows"), 0, "{after:?}");
}

#[test]
fn joining_and_leaving_reproduce_each_sequence_alone() {
    let mut e = engine("v3_base", 16);
    let a: &[i32] = &[5, 9, 14, 2];
    let b: &[i32] = &[3, 1, 4, 1, 5, 9, 2, 6, 5];
    let c: &[i32] = &[7, 7];
    let (want_a, want_b, want_c) = (
        alone(&mut e, a, 6),
        alone(&mut e, b, 5),
        alone(&mut e, c, 4),
    );
    let ia = e.add_sequence(a).unwrap();
    let (mut got_a, mut got_b, mut got_c) = (Vec::new(), Vec::new(), Vec::new());
    let mut ib = None;
    let mut ic = None;
    for step in 0..8 {
        if step == 2 {
            ib = Some(e.add_sequence(b).unwrap());
        }
        if step == 3 {
            ic = Some(e.add_sequence(c).unwrap());
        }
        for (id, t) in e.step().unwrap() {
            if id == ia {
                got_a.push(t)
            } else if Some(id) == ib {
                got_b.push(t)
            } else if Some(id) == ic {
                got_c.push(t)
            }
        }
        if got_a.len() == 6 && e.live().contains(&ia) {
            e.remove_sequence(ia).unwrap();
        }
        if got_c.len() == 4 && e.live().contains(&ic.unwrap()) {
            e.remove_sequence(ic.unwrap()).unwrap();
        }
    }
    assert_eq!(got_a, want_a);
    assert_eq!(got_b[..5], want_b[..]);
    assert_eq!(got_c, want_c);
}

#[test]
fn generate_seeds_prompt_i_with_seed_plus_i_and_cleans_up_after_an_error() {
    let prompts = vec![
        vec![5, 9, 14, 2],
        vec![3, 1, 4, 1, 5, 9, 2, 6, 5],
        vec![7, 7],
    ];
    let sampled = |seed| {
        let opts = EngineOptions {
            num_blocks: 16,
            block_size: 4,
            temperature: 0.8,
            top_p: 0.9,
            seed,
            ..EngineOptions::default()
        };
        Engine::load(data_dir("v3_base"), opts, &mut |_, _| {}).unwrap()
    };
    let mut e = sampled(11);
    let got = e.generate(&prompts, 5, &[]).unwrap();
    assert!(e.live().is_empty());
    assert_eq!(e.free_blocks(), 16);
    // Each prompt alone with seed 11 + i, and the CPU Generator's batch with seed 11.
    for (i, p) in prompts.iter().enumerate() {
        let alone = sampled(11 + i as u64)
            .generate(std::slice::from_ref(p), 5, &[])
            .unwrap();
        assert_eq!(alone[0], got[i], "prompt {i}");
    }
    let model = dsnpu_model::DeepseekV3::load(data_dir("v3_base")).unwrap();
    let opts = dsnpu_model::GenerateOptions {
        temperature: 0.8,
        top_p: 0.9,
        seed: 11,
        block_size: 4,
        ..dsnpu_model::GenerateOptions::greedy(5)
    };
    let refs: Vec<&[i32]> = prompts.iter().map(Vec::as_slice).collect();
    let cpu = dsnpu_model::Generator::new(&model, opts)
        .unwrap()
        .generate_batch(&refs)
        .unwrap();
    assert_eq!(cpu, got);
    // A stop id ends each sequence that emits it (the id included), the others run on.
    let stop = got[0][1];
    let cut: Vec<Vec<i32>> = got
        .iter()
        .map(|ids| match ids.iter().position(|&t| t == stop) {
            Some(k) => ids[..=k].to_vec(),
            None => ids.clone(),
        })
        .collect();
    assert_eq!(sampled(11).generate(&prompts, 5, &[stop]).unwrap(), cut);
    // Errors: a live sequence of the caller's; a bad prompt after good ones (those are removed).
    let id = e.add_sequence(&[1, 2]).unwrap();
    assert!(matches!(
        e.generate(&prompts, 5, &[]),
        Err(ModelError::InvalidInput(_))
    ));
    assert_eq!(e.live(), vec![id]);
    e.remove_sequence(id).unwrap();
    let bad = vec![vec![1, 2], vec![10_000]];
    assert!(matches!(
        e.generate(&bad, 5, &[]),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(e.live().is_empty());
    assert_eq!(e.free_blocks(), 16);
    // A batch that cannot reach its length is refused before it starts, in the CPU `Generator`'s words
    // (the checkpoint has 64 positions; `usize::MAX` new tokens must not wrap).
    let max = e.config().max_position_embeddings;
    for n in [max, usize::MAX] {
        match e.generate(&prompts, n, &[]) {
            Err(ModelError::InvalidInput(m)) => assert!(
                m.contains(&format!("new tokens need more than the {max} positions")),
                "{m}"
            ),
            other => panic!("{n} new tokens: {other:?}"),
        }
        assert!(e.live().is_empty());
        assert_eq!(e.free_blocks(), 16);
    }
    // The seeds go by the prompts' places, not by the engine's sequence ids (now past 5).
    assert_eq!(e.generate(&prompts, 5, &[]).unwrap(), got);
}

#[test]
fn errors_are_typed() {
    let mut e = engine("v3_base", 2);
    assert!(matches!(e.step(), Err(ModelError::NoLiveSequences)));
    assert!(e.add_sequence(&[]).is_err());
    assert!(e.add_sequence(&[10_000]).is_err());
    // A prompt larger than the whole cache is refused when added: it used to be queued and fail every
    // step with OutOfBlocks, which asks the caller to free sequences that could never make room.
    let err = e.add_sequence(&[1; 9]).unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidInput(m)
            if m == "a 9-token prompt needs 3 cache blocks of 4 tokens; the cache has 2 in all"),
        "{err}"
    );
    assert!(e.live().is_empty());
    // Two blocks of 4 tokens: a 7-token prompt fits, then it outgrows the cache on its second token.
    let id = e.add_sequence(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    e.step().unwrap();
    e.step().unwrap();
    assert!(matches!(e.step(), Err(ModelError::OutOfBlocks { .. })));
    e.remove_sequence(id).unwrap();
    assert_eq!(e.free_blocks(), 2);
    assert!(e.remove_sequence(id).is_err());
}

#[test]
fn a_checkpoint_larger_than_device_memory_is_a_typed_error() {
    // The simulator's device memory comes from DSNPU_SIM_MEM_BYTES at its first use in the process, so
    // this runs in a child process with a small device.
    if std::env::var_os("ENGINE_OOM_CHILD").is_some() {
        let e = Engine::load(
            data_dir("v3_base"),
            EngineOptions::default(),
            &mut |_, _| {},
        )
        .unwrap_err();
        match e {
            ModelError::DeviceMemory {
                tensor,
                needed,
                free,
            } => {
                assert!(needed > free, "{tensor}: {needed} vs {free}");
                assert!(!tensor.is_empty());
                println!("DEVICE-MEMORY-ERROR-OK: {tensor} {needed} {free}");
            }
            e => panic!("expected a device-memory error, got {e}"),
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_checkpoint_larger_than_device_memory_is_a_typed_error",
            "--exact",
            "--nocapture",
        ])
        .env("ENGINE_OOM_CHILD", "1")
        .env("DSNPU_SIM_MEM_BYTES", "262144")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("DEVICE-MEMORY-ERROR-OK"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cache_larger_than_device_memory_is_a_typed_error() {
    // 2^30 slots of 3 layers × (32 + 8) f32: 515 GB. It used to surface as the allocator's bare
    // out-of-memory (a device failure, RuntimeError in Python) that did not name the cache.
    let opts = EngineOptions {
        num_blocks: 1 << 20,
        block_size: 1 << 10,
        ..EngineOptions::default()
    };
    match Engine::load(data_dir("v3_base"), opts, &mut |_, _| {}) {
        Err(e @ ModelError::CacheMemory { .. }) => {
            let ModelError::CacheMemory {
                slots,
                needed,
                free,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((slots, needed), (1 << 30, 3 * (1 << 30) * 40 * 4));
            assert!(needed > free, "{needed} vs {free}");
            assert!(e.is_caller_error());
            assert!(
                e.to_string().contains("lower num_blocks or block_size"),
                "{e}"
            );
        }
        Err(e) => panic!("expected a cache-memory error, got {e}"),
        Ok(_) => panic!("a 515 GB cache loaded"),
    }
}

/// The bytes the device should hold for `variant` computed in `compute`, from the checkpoint's headers
/// alone: norm weights in the compute dtype, the router and its bias in f32, FP8 GEMM weights as stored
/// (one byte per element, plus their f32 `weight_scale_inv`) except `kv_b_proj` and the embedding
/// table, which are dequantized at load, and every other tensor (the GEMM weights; `kv_b_proj` is split
/// but keeps its element count) in its stored dtype when that is 16-bit, else in the compute dtype
/// (f32, or bf16 when computing in bf16).
fn expected_weight_bytes(variant: &str, compute: DType) -> u64 {
    let ckpt = Checkpoint::open(data_dir(variant)).unwrap();
    let layers = dsnpu_model::ModelConfig::from_file(data_dir(variant).join("config.json"))
        .unwrap()
        .num_hidden_layers;
    let mut total = 0u64;
    for name in ckpt.names() {
        let dequantized =
            |n: &str| n.ends_with("kv_b_proj.weight") || n == "model.embed_tokens.weight";
        if let Some(w) = name.strip_suffix("_scale_inv") {
            // FP8 block scales: uploaded with their codes, or folded into the dequantized weights.
            if !dequantized(w)
                && w.split('.')
                    .nth(2)
                    .is_none_or(|i| i.parse::<usize>().unwrap() < layers)
            {
                let meta = ckpt.meta(name).unwrap();
                total += 4 * meta.shape.iter().map(|&d| d as u64).product::<u64>();
            }
            continue;
        }
        // The MTP layer (layer `num_hidden_layers`) is not loaded.
        let layer = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
            .map(|i| i.parse::<usize>().unwrap());
        if layer.is_some_and(|i| i >= layers) {
            continue;
        }
        let meta = ckpt.meta(name).unwrap();
        let elems: u64 = meta.shape.iter().map(|&d| d as u64).product();
        let size = if name.ends_with("norm.weight") {
            compute.size() as u64
        } else if name.ends_with("mlp.gate.weight") || name.ends_with("e_score_correction_bias") {
            4
        } else if meta.dtype == Dtype::F8_E4M3 && !dequantized(name) {
            1
        } else if compute == DType::BF16 {
            2
        } else {
            match meta.dtype {
                Dtype::BF16 | Dtype::F16 => 2,
                _ => 4,
            }
        };
        // kv_b_proj is held twice: split per head for the absorbed decode and as stored for the
        // expanded prefill.
        let copies = if name.ends_with("kv_b_proj.weight") {
            2
        } else {
            1
        };
        total += elems * size * copies;
    }
    total
}

#[test]
fn sixteen_bit_checkpoints_keep_sixteen_bit_weights_on_the_device() {
    for (variant, compute) in [
        ("v3_bf16", DType::F32),
        ("v3_base", DType::F32),
        ("v3_bf16", DType::BF16),
        ("v3_base", DType::BF16),
    ] {
        let e = engine_as(variant, 8, compute);
        let s = e.stats();
        assert_eq!(
            s.weight_bytes,
            expected_weight_bytes(variant, compute),
            "{variant} computed in {compute}"
        );
        let load = s.load.h2d_bytes as f64;
        assert!(
            load <= 1.05 * s.weight_bytes as f64 && load >= s.weight_bytes as f64,
            "{variant} in {compute}: load moved {load} bytes for {} bytes of weights",
            s.weight_bytes
        );
    }
    // The bf16 checkpoint computed in f32 holds about half the bytes of the same model in f32.
    let (bf, f) = (
        expected_weight_bytes("v3_bf16", DType::F32),
        expected_weight_bytes("v3_base", DType::F32),
    );
    assert!((bf as f64) < 0.55 * f as f64, "{bf} vs {f}");
}

#[test]
fn fp8_checkpoints_keep_fp8_weights_on_the_device() {
    for compute in [DType::F32, DType::BF16] {
        let mut e = engine_as("v3_fp8", 8, compute);
        let s = e.stats();
        assert_eq!(
            s.weight_bytes,
            expected_weight_bytes("v3_fp8", compute),
            "v3_fp8 computed in {compute}"
        );
        let load = s.load.h2d_bytes as f64;
        assert!(
            load <= 1.05 * s.weight_bytes as f64 && load >= s.weight_bytes as f64,
            "v3_fp8 in {compute}: load moved {load} bytes for {} bytes of weights",
            s.weight_bytes
        );
        // The FP8 tensors: about one byte per element plus the scales, not their dequantized size.
        let ckpt = Checkpoint::open(data_dir("v3_fp8")).unwrap();
        let (mut fp8_elems, mut scale_elems) = (0u64, 0u64);
        for name in ckpt.names() {
            let meta = ckpt.meta(name).unwrap();
            let n: u64 = meta.shape.iter().map(|&d| d as u64).product();
            if meta.dtype == Dtype::F8_E4M3 && !name.ends_with("kv_b_proj.weight") {
                fp8_elems += n;
                scale_elems += ckpt
                    .meta(&format!("{name}_scale_inv"))
                    .unwrap()
                    .shape
                    .iter()
                    .map(|&d| d as u64)
                    .product::<u64>();
            }
        }
        assert!(fp8_elems > 0);
        eprintln!(
            "v3_fp8 in {compute}: {} weight bytes on the device; the {fp8_elems} FP8 elements take \
             {} bytes with their scales, {} dequantized",
            s.weight_bytes,
            fp8_elems + 4 * scale_elems,
            fp8_elems * compute.size() as u64
        );
        // The FP8 kernels ran: every dense projection, MLP and expert FFN is an FP8 launch.
        e.prompt_logits(&[1, 2, 3]).unwrap();
        let ops = e.stats().ops;
        for op in ["linear_fp8", "expert_ffn_fp8", "expert_ffn_fp8(dense)"] {
            assert!(
                ops.get(op).copied().unwrap_or(0) > 0,
                "{compute}: no {op} in {ops:?}"
            );
        }
    }
}

#[test]
fn bf16_compute_stays_within_five_percent_of_the_f32_logits() {
    for variant in VARIANTS {
        let r = reference(variant);
        let full = r.full_sequence();
        let want = engine(variant, 32).prompt_logits(&full).unwrap();
        let mut e = engine_as(variant, 32, DType::BF16);
        let got = e.prompt_logits(&full).unwrap();
        assert_eq!(got.len(), want.len());
        let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 5e-2 * max,
            "{variant}: bf16 logits differ by {diff}, max |logit| {max}"
        );
        // Not the f32 computation in disguise: bf16 rounding shows.
        assert!(diff > 0.0, "{variant}: bf16 logits equal the f32 ones");
        // Greedy decoding runs in bf16 too (argmax over bf16 logits on the device).
        let ids = alone(&mut e, &r.prompt, 2);
        assert_eq!(ids.len(), 2);
        // The router ran in f32 on an f32 copy of its bf16 input.
        let ops = e.stats().ops;
        assert!(
            ops.get("gather_rows(to f32)").copied().unwrap_or(0) > 0,
            "{ops:?}"
        );
    }
}

#[test]
fn prefix_caching_shares_full_prompt_blocks_and_keeps_the_ids() {
    // Blocks of 4 tokens; the prompts share their first 9 tokens, so two full blocks (8 tokens).
    let base: &[i32] = &[3, 1, 4, 1, 5, 9, 2, 6, 5];
    let p1 = [base, &[3, 5]].concat();
    let p2 = [base, &[8]].concat();
    // Its own last token is never shared: (9 - 1) / 4 = 2 blocks, like the others.
    let p3 = base.to_vec();
    let long: Vec<i32> = (0..30).map(|i| i * 37 % 127).collect();
    // Two full blocks, the second holding its last token: only the first is shared.
    let p4 = base[..8].to_vec();
    // A block's key is its tokens after its whole prefix: the tokens of p6's second block make p5's
    // first block, which shares nothing.
    let p6 = [&base[..4], &[9, 9, 9, 9], &[2]].concat();
    let p5 = [&[9, 9, 9, 9], &base[4..8], &[1]].concat();
    let mut plain = engine("v3_base", 16);
    let want: Vec<Vec<i32>> = [&p1, &p2, &p3, &long, &p4, &p5, &p6]
        .iter()
        .map(|p| alone(&mut plain, p, 5))
        .collect();
    assert_eq!(plain.stats().prefix_hit_tokens, 0);

    let opts = EngineOptions {
        num_blocks: 9,
        block_size: 4,
        prefix_caching: true,
        ..EngineOptions::default()
    };
    let mut e = Engine::load(data_dir("v3_base"), opts, &mut |_, _| {}).unwrap();
    // One after the other: the second finds the first's two full prompt blocks cached.
    assert_eq!(alone(&mut e, &p1, 5), want[0]);
    assert_eq!(
        (e.stats().prefix_hit_tokens, e.stats().prefill.count),
        (0, 11)
    );
    assert_eq!(e.free_blocks(), 9, "cached blocks count as available");
    assert_eq!(alone(&mut e, &p2, 5), want[1]);
    assert_eq!(
        (e.stats().prefix_hit_tokens, e.stats().prefill.count),
        (8, 13)
    );

    // Together: p3 joins while p1 decodes, sharing the blocks p1 holds.
    let i1 = e.add_sequence(&p1).unwrap();
    let (mut got1, mut got3, mut i3) = (Vec::new(), Vec::new(), None);
    for step in 0..7 {
        if step == 2 {
            i3 = Some(e.add_sequence(&p3).unwrap());
        }
        for (id, t) in e.step().unwrap() {
            if id == i1 && got1.len() < 5 {
                got1.push(t);
            } else if Some(id) == i3 && got3.len() < 5 {
                got3.push(t);
            }
        }
    }
    assert_eq!((got1, got3), (want[0].clone(), want[2].clone()));
    assert_eq!(e.stats().prefix_hit_tokens, 24);
    e.remove_sequence(i1).unwrap();
    e.remove_sequence(i3.unwrap()).unwrap();
    assert_eq!(e.free_blocks(), 9);
    assert_eq!(alone(&mut e, &p4, 5), want[4]);
    assert_eq!(e.stats().prefix_hit_tokens, 28);
    assert_eq!(alone(&mut e, &p6, 5), want[6]);
    assert_eq!(e.stats().prefix_hit_tokens, 32);
    assert_eq!(alone(&mut e, &p5, 5), want[5]);
    assert_eq!(e.stats().prefix_hit_tokens, 32);

    // A prompt that needs every block evicts the cached ones, and the evicted prefix is prefilled
    // again in full.
    assert_eq!(alone(&mut e, &long, 5), want[3]);
    let hits = e.stats().prefix_hit_tokens;
    assert_eq!(alone(&mut e, &p2, 5), want[1]);
    assert_eq!(e.stats().prefix_hit_tokens, hits);
    assert_eq!(e.free_blocks(), 9);
}

#[test]
fn chunked_prefill_keeps_the_ids_and_the_sampler() {
    let prompts: [Vec<i32>; 3] = [
        (0..23).map(|i| i * 11 % 127).collect(),
        vec![5, 9, 14, 2, 7, 1, 8, 3],
        vec![42],
    ];
    for temperature in [0.0, 0.8] {
        let load = |max_prefill_tokens, prefix_caching| {
            let opts = EngineOptions {
                num_blocks: 32,
                block_size: 4,
                temperature,
                top_p: 0.9,
                seed: 5,
                prefix_caching,
                max_prefill_tokens,
                ..EngineOptions::default()
            };
            Engine::load(data_dir("v3_base"), opts, &mut |_, _| {}).unwrap()
        };
        let mut whole = load(0, false);
        let want: Vec<Vec<i32>> = prompts.iter().map(|p| alone(&mut whole, p, 4)).collect();
        // Chunks of 5 (23 tokens: 5 passes, the last of 3), alone and over a cached prefix.
        let mut chunked = load(5, true);
        let syncs = chunked.stats().prefill.transfers.syncs;
        for (p, w) in prompts.iter().zip(&want) {
            assert_eq!(&alone(&mut chunked, p, 4), w, "temperature {temperature}");
        }
        let passes = 5 + 2 + 1;
        assert_eq!(
            chunked.stats().prefill.transfers.syncs - syncs,
            passes,
            "one host wait per pass"
        );
        // The fourth sequence of both engines (so the same sampler seed).
        let again: Vec<i32> = prompts[0][..20].iter().chain(&[1, 2, 3]).copied().collect();
        let want_again = alone(&mut whole, &again, 4);
        assert_eq!(alone(&mut chunked, &again, 4), want_again);
        // 20 shared tokens (five 4-token blocks), then 3 in one chunk.
        assert_eq!(chunked.stats().prefix_hit_tokens, 20);

        // The passes a step runs, announced before it (expert parallelism matches the ranks' passes
        // with it): each pass waits once.
        let waits =
            |e: &Engine| e.stats().prefill.transfers.syncs + e.stats().decode.transfers.syncs;
        let ids = [
            chunked.add_sequence(&prompts[1]).unwrap(),
            chunked
                .add_sequence(&(100..123).collect::<Vec<i32>>())
                .unwrap(),
        ];
        // prompts[1]: one cached block, 4 tokens in one pass; the new 23 tokens: 5 passes.
        for want in [1 + 5, 1] {
            assert_eq!(chunked.passes_next_step(), want);
            let before = waits(&chunked);
            chunked.step().unwrap();
            assert_eq!(waits(&chunked) - before, want as u64);
        }
        for id in ids {
            chunked.remove_sequence(id).unwrap();
        }
        assert_eq!(chunked.passes_next_step(), 0);
    }
}

#[test]
fn a_failed_step_leaves_every_sequence_as_it_was() {
    // Six blocks of 4 tokens. a decodes while b (2 blocks) and c (5 blocks) are prefilled in the same
    // step: c runs out of blocks after a's decode and b's prefill succeeded. Both are undone, so once c
    // is gone the step is redone whole and a and b continue as they would alone.
    let a: &[i32] = &[5, 9, 14, 2];
    let b: &[i32] = &[3, 1, 4, 1, 5, 9, 2, 6];
    let c: Vec<i32> = (0..20).collect();
    let mut e = engine("v3_base", 6);
    let (want_a, want_b) = (alone(&mut e, a, 4), alone(&mut e, b, 3));
    let ia = e.add_sequence(a).unwrap();
    let first = e.step().unwrap();
    let (ib, ic) = (e.add_sequence(b).unwrap(), e.add_sequence(&c).unwrap());
    let free = e.free_blocks();
    assert!(matches!(e.step(), Err(ModelError::OutOfBlocks { .. })));
    assert_eq!(e.free_blocks(), free, "the step's blocks are back");
    e.remove_sequence(ic).unwrap();
    let (mut got_a, mut got_b) = (vec![first[0].1], Vec::new());
    for _ in 0..3 {
        for (id, t) in e.step().unwrap() {
            if id == ia {
                got_a.push(t);
            } else if id == ib {
                got_b.push(t);
            }
        }
    }
    assert_eq!((got_a, got_b), (want_a, want_b));
}

#[test]
fn every_rank_of_an_ep_group_refuses_a_bad_prompt() {
    // Rank 0 alone used to check the prompt of prompt_logits (and a prompt's owner alone whether the
    // cache holds it, in generate): it failed at once while the other rank waited in a collective for
    // it until HCCL's timeout. Two ranks need two simulated devices, which the simulator
    // reads at its first use in the process: this runs in a child process with a 5 s timeout.
    if std::env::var_os("EP_PROMPT_CHILD").is_some() {
        let root = std::env::temp_dir().join(format!("dsnpu-ep-prompt-{}", std::process::id()));
        let _ = std::fs::remove_file(&root);
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let group = dsnpu_model::device::EpGroup {
                        rank,
                        world: 2,
                        local_rank: rank,
                        root_file: root,
                    };
                    let opts = EngineOptions {
                        num_blocks: 4,
                        block_size: 4,
                        ..EngineOptions::default()
                    };
                    let mut ep = dsnpu_model::device::EpEngine::load(
                        data_dir("v3_base"),
                        opts,
                        group,
                        &mut |_, _| {},
                    )
                    .unwrap();
                    let start = std::time::Instant::now();
                    let err = ep.prompt_logits(&[1, 200]).unwrap_err();
                    // Prompt 1 (rank 1's) needs 5 of the 4 blocks of 4 tokens.
                    let gen = ep.generate(&[vec![1], vec![1; 20]], 2, &[]).unwrap_err();
                    (err.to_string(), gen.to_string(), start.elapsed())
                })
            })
            .collect();
        for (rank, h) in ranks.into_iter().enumerate() {
            let (err, gen, took) = h.join().unwrap();
            assert_eq!(
                err, "invalid input: prompt token 1 is 200, outside the vocabulary of 128",
                "rank {rank}"
            );
            assert_eq!(
                gen,
                "invalid input: a 20-token prompt needs 5 cache blocks of 4 tokens; the cache has 4 in all",
                "rank {rank}"
            );
            assert!(took.as_secs() < 4, "rank {rank} took {took:?}");
        }
        let _ = std::fs::remove_file(&root);
        println!("EP-PROMPT-OK");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "every_rank_of_an_ep_group_refuses_a_bad_prompt",
            "--exact",
            "--nocapture",
        ])
        .env("EP_PROMPT_CHILD", "1")
        .env("DSNPU_SIM_DEVICES", "2")
        .env("DSNPU_SIM_HCCL_TIMEOUT_MS", "5000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("EP-PROMPT-OK"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_ep_rank_outside_its_group_has_no_experts() {
    // It used to give experts 20..24 of 8 for rank 5 of 2, and overflow for rank usize::MAX.
    for rank in [2, 5, usize::MAX] {
        let group = dsnpu_model::device::EpGroup {
            rank,
            world: 2,
            local_rank: 0,
            root_file: "unused".into(),
        };
        let err = group.experts(8).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid input: rank {rank} of a 2-rank group")
        );
    }
    let group = dsnpu_model::device::EpGroup {
        rank: 1,
        world: 2,
        local_rank: 1,
        root_file: "unused".into(),
    };
    assert_eq!(group.experts(8).unwrap(), 4..8);
}
