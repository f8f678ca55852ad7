//! The paged cache path against the cache-free path: incremental decode (absorbed attention over the cache)
//! reproduces a full forward (expanded attention) position by position; batches of sequences of different
//! lengths decode like each sequence alone; failed steps leave the cache unchanged.

mod common;

use common::{data_dir, max_abs_diff, reference};
use dsnpu_model::{DeepseekV3, GenerateOptions, Generator, ModelError};
use ndarray::{s, Array2};

/// Expanded and absorbed attention associate the same products differently; f32 rounding stays far below this.
const PATH_TOLERANCE: f32 = 1e-4;

fn tokens(n: usize, salt: i32, vocab: usize) -> Vec<i32> {
    (0..n as i32)
        .map(|i| (i * 37 + salt * 11 + 5) % vocab as i32)
        .collect()
}

#[test]
fn incremental_decode_equals_full_forward() {
    // v3_base: interleaved rope, q_lora; v3_yarn: half-split rope, YaRN, plain q_proj; v2_lite: softmax routing.
    for variant in ["v3_base", "v3_yarn", "v2_lite"] {
        let model = DeepseekV3::load(data_dir(variant)).unwrap();
        let seq = reference(variant).full_sequence();
        let full = model.forward(&seq).unwrap();

        // Block size 3 so sequences cross block boundaries at odd places.
        let mut cache = model.new_cache(16, 3).unwrap();
        let prompt = 4;
        let pre = model.prefill(&mut cache, &[(7, &seq[..prompt])]).unwrap();
        let diff = max_abs_diff(&pre[0], &full.slice(s![..prompt, ..]).to_owned());
        assert!(
            diff <= PATH_TOLERANCE,
            "{variant}: prefill differs from forward by {diff}"
        );
        for (p, &token) in seq.iter().enumerate().skip(prompt) {
            let step = model.decode(&mut cache, &[(7, token)]).unwrap();
            let diff = max_abs_diff(&step, &full.slice(s![p..p + 1, ..]).to_owned());
            assert!(
                diff <= PATH_TOLERANCE,
                "{variant}: decode at position {p} differs by {diff}"
            );
        }
        assert_eq!(cache.seq_len(7), Some(seq.len()));
    }
}

#[test]
fn chunked_extend_equals_full_forward() {
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let seq = reference("v3_base").full_sequence();
    let full = model.forward(&seq).unwrap();
    let mut cache = model.new_cache(8, 4).unwrap();
    model.prefill(&mut cache, &[(1, &seq[..2])]).unwrap();
    // Chunks of 5 query tokens attend causally among themselves and to the cache.
    let mut p = 2;
    while p + 5 <= seq.len() {
        let out = model.extend(&mut cache, &[(1, &seq[p..p + 5])]).unwrap();
        let diff = max_abs_diff(&out[0], &full.slice(s![p..p + 5, ..]).to_owned());
        assert!(diff <= PATH_TOLERANCE, "chunk at {p} differs by {diff}");
        p += 5;
    }
}

#[test]
fn batched_sequences_of_different_lengths_match_each_alone() {
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let vocab = model.config().vocab_size;
    let seqs: Vec<Vec<i32>> = [3usize, 11, 6]
        .iter()
        .enumerate()
        .map(|(i, &n)| tokens(n + 8, i as i32, vocab))
        .collect();
    let prompts = [3usize, 11, 6];

    // Logits: a batched prefill and batched decodes against each sequence's own full forward.
    let mut cache = model.new_cache(32, 2).unwrap();
    let batch: Vec<(u64, &[i32])> = seqs
        .iter()
        .zip(prompts)
        .enumerate()
        .map(|(i, (s, p))| (i as u64, &s[..p]))
        .collect();
    let pre = model.prefill(&mut cache, &batch).unwrap();
    let fulls: Vec<Array2<f32>> = seqs.iter().map(|s| model.forward(s).unwrap()).collect();
    for (i, p) in prompts.iter().enumerate() {
        assert!(max_abs_diff(&pre[i], &fulls[i].slice(s![..*p, ..]).to_owned()) <= PATH_TOLERANCE);
    }
    for step in 0..8 {
        let batch: Vec<(u64, i32)> = seqs
            .iter()
            .zip(prompts)
            .enumerate()
            .map(|(i, (s, p))| (i as u64, s[p + step]))
            .collect();
        let out = model.decode(&mut cache, &batch).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let expected = fulls[i].slice(s![p + step..p + step + 1, ..]).to_owned();
            let got = out.slice(s![i..i + 1, ..]).to_owned();
            let diff = max_abs_diff(&got, &expected);
            assert!(diff <= PATH_TOLERANCE, "sequence {i}, step {step}: {diff}");
        }
    }
    // Small blocks and a batch make the sequences' blocks interleave in the pool.
    let b0 = cache.blocks(0).unwrap();
    let b1 = cache.blocks(1).unwrap();
    assert!(
        b0.iter().any(|x| b1.iter().any(|y| y < x)),
        "blocks should interleave: {b0:?} {b1:?}"
    );

    // Tokens: greedy generation batched and alone.
    let prompts: Vec<&[i32]> = seqs
        .iter()
        .zip([3usize, 11, 6])
        .map(|(s, p)| &s[..p])
        .collect();
    let mut opts = GenerateOptions::greedy(12);
    opts.block_size = 2;
    let gen = Generator::new(&model, opts).unwrap();
    let batched = gen.generate_batch(&prompts).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(batched[i], gen.generate(p).unwrap(), "greedy sequence {i}");
        assert_eq!(batched[i].len(), 12);
    }

    // Sampled: prompt i of a batch samples with seed + i.
    let sampled = |seed: u64| GenerateOptions {
        temperature: 0.9,
        top_p: 0.8,
        seed,
        ..GenerateOptions::greedy(12)
    };
    let batched = Generator::new(&model, sampled(40))
        .unwrap()
        .generate_batch(&prompts)
        .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = Generator::new(&model, sampled(40 + i as u64))
            .unwrap()
            .generate(p)
            .unwrap();
        assert_eq!(batched[i], alone, "sampled sequence {i}");
    }
    let greedy = Generator::new(&model, GenerateOptions::greedy(12))
        .unwrap()
        .generate_batch(&prompts)
        .unwrap();
    assert_ne!(
        batched, greedy,
        "sampling at temperature 0.9 should leave the greedy path somewhere"
    );
}

#[test]
fn generation_stops_at_a_stop_token() {
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let r = reference("v3_base");
    // Make the 4th greedy token a stop token: generation emits it and ends.
    let mut opts = GenerateOptions::greedy(16);
    opts.stop_ids = vec![r.generated[3]];
    let first = r
        .generated
        .iter()
        .position(|&t| t == r.generated[3])
        .unwrap();
    let out = Generator::new(&model, opts)
        .unwrap()
        .generate(&r.prompt)
        .unwrap();
    assert_eq!(out, r.generated[..=first].to_vec());
}

#[test]
fn failed_steps_leave_the_cache_unchanged() {
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let seq = reference("v3_base").full_sequence();
    let full = model.forward(&seq).unwrap();
    let mut cache = model.new_cache(3, 4).unwrap();
    model.prefill(&mut cache, &[(1, &seq[..4])]).unwrap();
    let free = cache.num_free_blocks();

    // A token outside the vocabulary, an unknown sequence, a sequence twice, mixed chunk lengths.
    let vocab = model.config().vocab_size as i32;
    assert!(matches!(
        model.decode(&mut cache, &[(1, vocab)]),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.decode(&mut cache, &[(9, 0)]),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.decode(&mut cache, &[(1, 3), (1, 4)]),
        Err(ModelError::InvalidInput(_))
    ));
    model.prefill(&mut cache, &[(2, &seq[..1])]).unwrap();
    assert!(model
        .extend(&mut cache, &[(1, &seq[4..6]), (2, &seq[1..2])])
        .is_err());
    model.decode(&mut cache, &[(2, seq[1])]).unwrap();
    assert_eq!(cache.num_free_blocks(), free - 1);
    // Needs 3 more blocks for sequence 1; one is free.
    let err = model.extend(&mut cache, &[(1, &seq[4..16])]).unwrap_err();
    assert!(
        matches!(err, ModelError::OutOfBlocks { needed: 3, free: 1 }),
        "{err}"
    );
    // Prefill of a sequence that already holds tokens.
    assert!(model.prefill(&mut cache, &[(1, &seq[..2])]).is_err());
    // ... also in a batch, which then registers none of its sequences.
    assert!(model
        .prefill(&mut cache, &[(5, &seq[..2]), (1, &seq[..2])])
        .is_err());
    assert_eq!(cache.seq_len(5), None);
    // A batch whose prompt is invalid (empty) registers nothing either.
    assert!(model
        .prefill(&mut cache, &[(6, &seq[..2]), (7, &[])])
        .is_err());
    assert_eq!((cache.seq_len(6), cache.seq_len(7)), (None, None));
    assert_eq!(cache.seq_len(1), Some(4));
    assert_eq!(cache.seq_len(2), Some(2));

    // The cache still serves sequence 1 correctly.
    let step = model.decode(&mut cache, &[(1, seq[4])]).unwrap();
    assert!(max_abs_diff(&step, &full.slice(s![4..5, ..]).to_owned()) <= PATH_TOLERANCE);
    cache.remove_sequence(1).unwrap();
    cache.remove_sequence(2).unwrap();
    assert_eq!(cache.num_free_blocks(), 3);
}

#[test]
fn positions_beyond_the_rope_table_are_rejected() {
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let max = model.config().max_position_embeddings;
    let long = vec![5i32; max + 1];
    assert!(matches!(
        model.forward(&long),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(model.forward(&long[..max]).is_ok());
    let gen = Generator::new(&model, GenerateOptions::greedy(2)).unwrap();
    assert!(matches!(
        gen.generate(&long[..max]),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.forward(&[]),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.forward(&[-1]),
        Err(ModelError::InvalidInput(_))
    ));
}

#[test]
fn a_block_allocator_of_more_blocks_than_u32_ids_is_refused() {
    // It used to truncate the count to 32 bits: 2^32 + 2 blocks reported that many and handed out 2.
    let n = (1usize << 32) + 2;
    match dsnpu_model::BlockAllocator::new(n) {
        Err(ModelError::InvalidInput(m)) => assert_eq!(
            m,
            "4294967298 cache blocks: block ids are u32, at most 4294967295"
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(a) => panic!("accepted: {} blocks, {} free", a.num_blocks(), a.num_free()),
    }
    let mut a = dsnpu_model::BlockAllocator::new(3).unwrap();
    assert_eq!(a.allocate(3).unwrap(), vec![0, 1, 2]);
}

#[test]
fn a_cache_made_for_another_model_is_refused() {
    // v2_lite's cache has 2 layers, v3_base 3: prefill and decode used to panic indexing layer 2.
    let v3 = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let v2 = DeepseekV3::load(data_dir("v2_lite")).unwrap();
    let mut cache = v2.new_cache(8, 4).unwrap();
    let msg = "invalid input: the cache holds 2 layers of 32 + 8 values per token, the model 3 of 32 + 8: \
               it was made for another model";
    let err = v3.prefill(&mut cache, &[(0, &[1, 2, 3][..])]).unwrap_err();
    assert!(matches!(err, ModelError::InvalidInput(_)), "{err}");
    assert_eq!(err.to_string(), msg);
    // The cache is left as it was: the sequence can be prefilled by its own model.
    assert_eq!(cache.seq_len(0), None);
    v2.prefill(&mut cache, &[(0, &[1, 2, 3][..])]).unwrap();
    assert_eq!(
        v3.decode(&mut cache, &[(0, 4)]).unwrap_err().to_string(),
        msg
    );
    assert_eq!(cache.seq_len(0), Some(3));
}
