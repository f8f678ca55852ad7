//! The device-resident engine on the simulator against transformers' outputs and against itself:
//! every variant generates transformers' greedy ids and matches its prompt logits at the reference test's
//! tolerance; a batch of three sequences of different lengths over 8 decode steps keeps to the transfer
//! budget (ids in, ids out, one host wait per step, no operator off the device); sequences joining and
//! leaving a running batch produce what each produces alone; and the errors.
mod common;

use common::*;
use dsnpu_model::device::{Engine, EngineOptions};
use dsnpu_model::ModelError;
use ndarray::Array2;

const TOLERANCE: f32 = 1e-3;

fn engine(variant: &str, num_blocks: usize) -> Engine {
    let opts = EngineOptions {
        num_blocks,
        block_size: 4,
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
fn errors_are_typed() {
    let mut e = engine("v3_base", 2);
    assert!(matches!(e.step(), Err(ModelError::NoLiveSequences)));
    assert!(e.add_sequence(&[]).is_err());
    assert!(e.add_sequence(&[10_000]).is_err());
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
