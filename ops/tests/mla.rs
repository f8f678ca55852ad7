//! MLA references: hand-worked values, cross-checks between the absorbed and non-absorbed forms,
//! layout invariance of the paged cache, and typed errors for bad input.

use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::mla::{DecodeCase, DecodeSpec};
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::mla::{mla_decode, mla_prefill, PagedLatentCache};
use dsnpu_ops::OpsError;
use ndarray::{array, s, Array1, Array2, Array3, Array4};

fn f32_tol() -> Tolerance {
    Tolerance::of::<f32>()
}

/// One sequence of `latent`/`rope` rows written to consecutive slots from 0.
fn cache_with(
    block_size: usize,
    num_blocks: usize,
    latent: Array2<f32>,
    rope: Array2<f32>,
) -> PagedLatentCache<f32> {
    let mut cache =
        PagedLatentCache::new(num_blocks, block_size, latent.ncols(), rope.ncols()).unwrap();
    let slots: Array1<i32> = (0..latent.nrows() as i32).collect();
    cache
        .write(latent.view(), rope.view(), slots.view())
        .unwrap();
    cache
}

// ---------------------------------------------------------------------------------------------
// Hand-worked values.

#[test]
fn decode_two_keys_known_softmax() {
    // scale 0.5, q_nope = [1, 0], q_rope = [2].
    // token 0: latent [2, 1], rope [0]       → 0.5·(2 + 0)         = 1
    // token 1: latent [0, 3], rope [1 + ln3] → 0.5·(0 + 2 + 2·ln3) = 1 + ln3
    // weights e¹ : 3e¹ → 1/4, 3/4; out = [0.5, 0.25 + 2.25] = [0.5, 2.5]; lse = ln(4e) = 1 + ln4.
    let ln3 = 3f32.ln();
    let cache = cache_with(
        2,
        1,
        array![[2.0, 1.0], [0.0, 3.0]],
        array![[0.0], [1.0 + ln3]],
    );
    let q_nope = Array4::from_shape_vec((1, 1, 1, 2), vec![1.0f32, 0.0]).unwrap();
    let q_rope = Array4::from_shape_vec((1, 1, 1, 1), vec![2.0f32]).unwrap();
    let (out, lse) = mla_decode(
        q_nope.view(),
        q_rope.view(),
        &cache,
        array![[0]].view(),
        array![2].view(),
        0.5,
    )
    .unwrap();
    assert_close(
        "out",
        out.view(),
        Array4::from_shape_vec((1, 1, 1, 2), vec![0.5, 2.5])
            .unwrap()
            .view(),
        f32_tol(),
    );
    assert_close(
        "lse",
        lse.view(),
        Array3::from_elem((1, 1, 1), 1.0 + 4f32.ln()).view(),
        f32_tol(),
    );
}

#[test]
fn decode_causal_mask_among_two_query_tokens_and_ragged_batch() {
    // q = 0, so every visible position weighs the same: outputs are plain means and lse = ln(count).
    // Sequence 0: 3 tokens [4,0], [0,2], [2,7]; S = 2 → query 0 sees 2 tokens, query 1 all 3.
    // Sequence 1: 2 tokens [1,1], [3,-1] in block 1 → query 0 sees 1, query 1 sees 2.
    let mut cache = PagedLatentCache::<f32>::new(2, 4, 2, 1).unwrap();
    let latent = array![[4.0, 0.0], [0.0, 2.0], [2.0, 7.0], [1.0, 1.0], [3.0, -1.0]];
    let rope = Array2::from_elem((5, 1), 9.0); // Irrelevant: q_rope is 0 too.
    cache
        .write(latent.view(), rope.view(), array![0, 1, 2, 4, 5].view())
        .unwrap();
    let q = Array4::<f32>::zeros((2, 2, 2, 2));
    let qr = Array4::<f32>::zeros((2, 2, 2, 1));
    let (out, lse) = mla_decode(
        q.view(),
        qr.view(),
        &cache,
        array![[0], [1]].view(),
        array![3, 2].view(),
        1.0,
    )
    .unwrap();
    let expect_rows = [[2.0, 1.0], [2.0, 3.0], [1.0, 1.0], [2.0, 0.0]];
    let counts = [2.0f32, 3.0, 1.0, 2.0];
    for h in 0..2 {
        for (i, (b, sq)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
            let what = format!("b={b} s={sq} h={h}");
            assert_close(
                &what,
                out.slice(s![b, sq, h, ..]),
                Array1::from(expect_rows[i].to_vec()).view(),
                f32_tol(),
            );
            assert!(
                (lse[[b, h, sq]] - counts[i].ln()).abs() < 1e-6,
                "{what}: lse {}",
                lse[[b, h, sq]]
            );
        }
    }
}

#[test]
fn decode_reads_through_a_shuffled_block_table_and_ignores_garbage() {
    // Block size 2, seq_len 5 over blocks [3, 0, 2]: positions 0..5 live at
    // (3,0) (3,1) (0,0) (0,1) (2,0). Everything else — block 1, row (2,1) past the end — is NaN,
    // and the trailing table entry is -1. With q = 0 the output is the mean of the 5 latent rows.
    let mut cache = PagedLatentCache::<f32>::new(4, 2, 1, 1).unwrap();
    cache.latent.fill(f32::NAN);
    cache.rope.fill(f32::NAN);
    let values = [1.0f32, 2.0, 3.0, 4.0, 10.0];
    let slots = [6, 7, 0, 1, 4];
    let latent = Array2::from_shape_vec((5, 1), values.to_vec()).unwrap();
    cache
        .write(
            latent.view(),
            Array2::zeros((5, 1)).view(),
            Array1::from(slots.to_vec()).view(),
        )
        .unwrap();
    let q = Array4::<f32>::zeros((1, 1, 1, 1));
    let (out, lse) = mla_decode(
        q.view(),
        q.view(),
        &cache,
        array![[3, 0, 2, -1]].view(),
        array![5].view(),
        1.0,
    )
    .unwrap();
    assert!(
        (out[[0, 0, 0, 0]] - 4.0).abs() < 1e-6,
        "mean of 1,2,3,4,10 is 4, got {}",
        out[[0, 0, 0, 0]]
    );
    assert!((lse[[0, 0, 0]] - 5f32.ln()).abs() < 1e-6);
}

#[test]
fn prefill_hand_worked_two_packed_sequences() {
    // H = 1, Dqk = 1, Dv = 2, scale 1. Sequence A = tokens 0,1; sequence B = token 2.
    // token 0: sees itself: out = v0 = [4,0], lse = 7·0 = 0.
    // token 1: scores [1·0, 1·ln3] → weights 1/4, 3/4: out = [1, 3], lse = ln 4.
    // token 2: sees only itself (not A): out = v2 = [-1, 2], lse = 2·3 = 6.
    let ln3 = 3f32.ln();
    let q = Array3::from_shape_vec((3, 1, 1), vec![7.0f32, 1.0, 2.0]).unwrap();
    let k = Array3::from_shape_vec((3, 1, 1), vec![0.0f32, ln3, 3.0]).unwrap();
    let v = Array3::from_shape_vec((3, 1, 2), vec![4.0f32, 0.0, 0.0, 4.0, -1.0, 2.0]).unwrap();
    let (out, lse) =
        mla_prefill(q.view(), k.view(), v.view(), array![0, 2, 3].view(), 1.0).unwrap();
    let want = Array3::from_shape_vec((3, 1, 2), vec![4.0f32, 0.0, 1.0, 3.0, -1.0, 2.0]).unwrap();
    assert_close("out", out.view(), want.view(), f32_tol());
    assert_close(
        "lse",
        lse.view(),
        array![[0.0f32, 4f32.ln(), 6.0]].view(),
        f32_tol(),
    );
}

#[test]
fn cache_write_places_rows_and_skips_padding() {
    let mut cache = PagedLatentCache::<f32>::new(2, 3, 2, 1).unwrap();
    let latent = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let rope = array![[7.0], [8.0], [9.0]];
    // slot 4 = block 1 row 1; -1 is padding; slot 2 = block 0 row 2.
    cache
        .write(latent.view(), rope.view(), array![4, -1, 2].view())
        .unwrap();
    let mut want_latent = Array3::<f32>::zeros((2, 3, 2));
    want_latent
        .slice_mut(s![1, 1, ..])
        .assign(&array![1.0, 2.0]);
    want_latent
        .slice_mut(s![0, 2, ..])
        .assign(&array![5.0, 6.0]);
    let mut want_rope = Array3::<f32>::zeros((2, 3, 1));
    want_rope[[1, 1, 0]] = 7.0;
    want_rope[[0, 2, 0]] = 9.0;
    assert_eq!(cache.latent, want_latent);
    assert_eq!(cache.rope, want_rope);
}

// ---------------------------------------------------------------------------------------------
// Cross-checks between forms.

/// `Σ_k a[k]·b[k]` in f64.
fn dot64(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> f64 {
    a.into_iter().zip(b).map(|(x, y)| x as f64 * y as f64).sum()
}

/// Random DeepSeek-style MLA layer state for packed sequences, and the two forms of its attention.
struct Mla {
    heads: usize,
    dn: usize,
    dr: usize,
    dv: usize,
    dl: usize,
    lens: Vec<usize>,
    /// `[T, Dl]` latent and `[T, Dr]` rope key per token (rope key shared by all heads).
    c: Array2<f32>,
    k_rope: Array2<f32>,
    /// `[T, H, Dn]`, `[T, H, Dr]` per-token queries.
    q_nope: Array3<f32>,
    q_rope: Array3<f32>,
    /// `[H, Dn, Dl]` and `[H, Dv, Dl]`.
    w_uk: Array3<f32>,
    w_uv: Array3<f32>,
    scale: f32,
}

impl Mla {
    fn new(
        seed: u64,
        heads: usize,
        (dn, dr, dv, dl): (usize, usize, usize, usize),
        lens: Vec<usize>,
    ) -> Mla {
        let mut rng = CaseRng::new(seed);
        let t: usize = lens.iter().sum();
        // W of variance 1/Dl keeps k_nope and v of order one whatever Dl is.
        let w = (3.0 / dl as f32).sqrt();
        Mla {
            heads,
            dn,
            dr,
            dv,
            dl,
            c: rng.uniform((t, dl), -1.0, 1.0),
            k_rope: rng.uniform((t, dr), -1.0, 1.0),
            q_nope: rng.uniform((t, heads, dn), -1.0, 1.0),
            q_rope: rng.uniform((t, heads, dr), -1.0, 1.0),
            w_uk: rng.uniform((heads, dn, dl), -w, w),
            w_uv: rng.uniform((heads, dv, dl), -w, w),
            scale: 1.0 / ((dn + dr) as f32).sqrt(),
            lens,
        }
    }

    fn starts(&self) -> Vec<usize> {
        self.lens
            .iter()
            .scan(0, |acc, &l| Some(std::mem::replace(acc, *acc + l)))
            .collect()
    }

    /// Non-absorbed: k = [W_UK·c ‖ k_rope], v = W_UV·c per head, then packed causal attention.
    fn prefill(&self) -> (Array3<f32>, Array2<f32>) {
        let t = self.c.nrows();
        let dqk = self.dn + self.dr;
        let mut q = Array3::zeros((t, self.heads, dqk));
        let mut k = Array3::zeros((t, self.heads, dqk));
        let mut v = Array3::zeros((t, self.heads, self.dv));
        for i in 0..t {
            for h in 0..self.heads {
                q.slice_mut(s![i, h, ..self.dn])
                    .assign(&self.q_nope.slice(s![i, h, ..]));
                q.slice_mut(s![i, h, self.dn..])
                    .assign(&self.q_rope.slice(s![i, h, ..]));
                for d in 0..self.dn {
                    k[[i, h, d]] = dot64(
                        self.w_uk.slice(s![h, d, ..]).to_vec(),
                        self.c.row(i).to_vec(),
                    ) as f32;
                }
                k.slice_mut(s![i, h, self.dn..]).assign(&self.k_rope.row(i));
                for d in 0..self.dv {
                    v[[i, h, d]] = dot64(
                        self.w_uv.slice(s![h, d, ..]).to_vec(),
                        self.c.row(i).to_vec(),
                    ) as f32;
                }
            }
        }
        let mut cu = vec![0i32];
        for &l in &self.lens {
            cu.push(cu.last().unwrap() + l as i32);
        }
        mla_prefill(
            q.view(),
            k.view(),
            v.view(),
            Array1::from(cu).view(),
            self.scale,
        )
        .unwrap()
    }

    /// Absorbed: q_lat = W_UKᵀ·q_nope, decode the last `s_q` tokens of every sequence over a paged
    /// cache (shuffled blocks of `block_size`), then out = W_UV·o_lat. Returns `[B,S,H,Dv]`, `[B,H,S]`.
    fn decode(&self, s_q: usize, block_size: usize, seed: u64) -> (Array4<f32>, Array3<f32>) {
        let batch = self.lens.len();
        let need: Vec<usize> = self.lens.iter().map(|l| l.div_ceil(block_size)).collect();
        let num_blocks: usize = need.iter().sum::<usize>() + 1;
        let max_blocks = *need.iter().max().unwrap();
        let mut cache =
            PagedLatentCache::<f32>::new(num_blocks, block_size, self.dl, self.dr).unwrap();
        let mut order = CaseRng::new(seed).permutation(num_blocks).into_iter();
        let mut table = Array2::from_elem((batch, max_blocks), -1i32);
        let mut slots = vec![-1i32; self.c.nrows()];
        for (b, start) in self.starts().into_iter().enumerate() {
            for blk in 0..need[b] {
                table[[b, blk]] = order.next().unwrap() as i32;
            }
            for j in 0..self.lens[b] {
                slots[start + j] =
                    table[[b, j / block_size]] * block_size as i32 + (j % block_size) as i32;
            }
        }
        cache
            .write(
                self.c.view(),
                self.k_rope.view(),
                Array1::from(slots).view(),
            )
            .unwrap();

        let mut q_lat = Array4::zeros((batch, s_q, self.heads, self.dl));
        let mut q_rope = Array4::zeros((batch, s_q, self.heads, self.dr));
        for (b, start) in self.starts().into_iter().enumerate() {
            for sq in 0..s_q {
                let t = start + self.lens[b] - s_q + sq;
                for h in 0..self.heads {
                    for d in 0..self.dl {
                        q_lat[[b, sq, h, d]] = dot64(
                            self.w_uk.slice(s![h, .., d]).to_vec(),
                            self.q_nope.slice(s![t, h, ..]).to_vec(),
                        ) as f32;
                    }
                    q_rope
                        .slice_mut(s![b, sq, h, ..])
                        .assign(&self.q_rope.slice(s![t, h, ..]));
                }
            }
        }
        let seq_lens: Array1<i32> = self.lens.iter().map(|&l| l as i32).collect();
        let (o_lat, lse) = mla_decode(
            q_lat.view(),
            q_rope.view(),
            &cache,
            table.view(),
            seq_lens.view(),
            self.scale,
        )
        .unwrap();
        let mut out = Array4::zeros((batch, s_q, self.heads, self.dv));
        for b in 0..batch {
            for sq in 0..s_q {
                for h in 0..self.heads {
                    for d in 0..self.dv {
                        out[[b, sq, h, d]] = dot64(
                            self.w_uv.slice(s![h, d, ..]).to_vec(),
                            o_lat.slice(s![b, sq, h, ..]).to_vec(),
                        ) as f32;
                    }
                }
            }
        }
        (out, lse)
    }

    /// Absorbed decode of the last S tokens must equal the last S rows of the non-absorbed prefill.
    fn check(&self, s_q: usize, block_size: usize, tol: Tolerance) {
        let (p_out, p_lse) = self.prefill();
        let (d_out, d_lse) = self.decode(s_q, block_size, 99);
        for (b, start) in self.starts().into_iter().enumerate() {
            for sq in 0..s_q {
                let t = start + self.lens[b] - s_q + sq;
                let what = format!(
                    "H={} Dl={} lens={:?} S={s_q} block={block_size} b={b} s={sq}",
                    self.heads, self.dl, self.lens
                );
                assert_close(
                    &format!("{what} out"),
                    d_out.slice(s![b, sq, .., ..]),
                    p_out.slice(s![t, .., ..]),
                    tol,
                );
                assert_close(
                    &format!("{what} lse"),
                    d_lse.slice(s![b, .., sq]),
                    p_lse.slice(s![.., t]),
                    tol,
                );
            }
        }
    }
}

#[test]
fn absorbed_decode_equals_non_absorbed_attention_small() {
    // Both forms are exact in real arithmetic; in f32 they differ only by reassociated sums of
    // order-one terms, so the f32 tolerance applies as is.
    for s_q in [1, 2] {
        // seq_len 1 is possible only with S = 1; 9 ends mid-block for block size 4.
        let lens = if s_q == 1 {
            vec![1, 5, 9]
        } else {
            vec![2, 5, 9]
        };
        for block_size in [4, 16] {
            Mla::new(1 + s_q as u64, 3, (8, 4, 6, 12), lens.clone()).check(
                s_q,
                block_size,
                f32_tol(),
            );
        }
    }
}

#[test]
fn absorbed_decode_equals_non_absorbed_attention_deepseek_widths() {
    // DeepSeek-V3: qk_nope 128, qk_rope 64, v 128, kv_lora_rank 512; two heads, MTP S = 2,
    // block size 64 with the longer sequence ending mid-block. The 512-term reductions reassociate
    // differently in the two forms, but with order-one terms that stays within the f32 tolerance.
    Mla::new(7, 2, (128, 64, 128, 512), vec![3, 70]).check(2, 64, f32_tol());
}

#[test]
fn decode_is_invariant_to_block_size_and_block_order() {
    // The same tokens laid out contiguously and shuffled, with block sizes 16, 64, 128, must give
    // bit-identical results: the reference visits positions in the same order whatever the layout.
    let lens = [1usize, 100, 129, 40];
    let mut rng = CaseRng::new(5);
    let t: usize = lens.iter().sum();
    let (dl, dr, heads, s_q) = (20, 6, 2, 1);
    let latent = rng.uniform::<f32, _>((t, dl), -1.0, 1.0);
    let rope = rng.uniform::<f32, _>((t, dr), -1.0, 1.0);
    let q = rng.uniform::<f32, _>((lens.len(), s_q, heads, dl), -1.0, 1.0);
    let qr = rng.uniform::<f32, _>((lens.len(), s_q, heads, dr), -1.0, 1.0);
    let seq_lens: Array1<i32> = lens.iter().map(|&l| l as i32).collect();
    let mut results = Vec::new();
    for block_size in [16usize, 64, 128] {
        for shuffled in [false, true] {
            let need: Vec<usize> = lens.iter().map(|l| l.div_ceil(block_size)).collect();
            let num_blocks: usize = need.iter().sum();
            let order = if shuffled {
                rng.permutation(num_blocks)
            } else {
                (0..num_blocks).collect()
            };
            // One spare column of -1 past the longest sequence's blocks.
            let mut table = Array2::from_elem((lens.len(), need.iter().max().unwrap() + 1), -1i32);
            let mut slots = Vec::new();
            let mut next = order.into_iter();
            for (b, &len) in lens.iter().enumerate() {
                for blk in 0..need[b] {
                    table[[b, blk]] = next.next().unwrap() as i32;
                }
                slots.extend((0..len).map(|j| {
                    table[[b, j / block_size]] * block_size as i32 + (j % block_size) as i32
                }));
            }
            let mut cache = PagedLatentCache::<f32>::new(num_blocks, block_size, dl, dr).unwrap();
            cache
                .write(latent.view(), rope.view(), Array1::from(slots).view())
                .unwrap();
            results.push(
                mla_decode(
                    q.view(),
                    qr.view(),
                    &cache,
                    table.view(),
                    seq_lens.view(),
                    0.3,
                )
                .unwrap(),
            );
        }
    }
    for r in &results[1..] {
        assert_eq!(r.0, results[0].0);
        assert_eq!(r.1, results[0].1);
    }
}

#[test]
fn decode_matches_conformance_case_values_in_half_precision() {
    // bf16/f16 inputs, f32 arithmetic, one rounding on store: the result equals the f32 decode of the
    // same (already rounded) inputs, rounded once to the storage type.
    let spec = DecodeSpec {
        block_size: 16,
        heads: 4,
        latent_dim: 24,
        rope_dim: 8,
        s_q: 2,
        seq_lens: vec![2, 33],
        spare_blocks: 1,
        extra_cols: 1,
        scale: 0.2,
    };
    let case = DecodeCase::<dsnpu_ops::half::bf16>::build(&mut CaseRng::new(3), &spec).unwrap();
    let (out, lse) = case.run(&dsnpu_ops::backend::Cpu).unwrap();
    let f = |a: &Array4<dsnpu_ops::half::bf16>| a.mapv(|v| v.to_f32());
    let cache32 = PagedLatentCache {
        latent: case.cache.latent.mapv(|v| v.to_f32()),
        rope: case.cache.rope.mapv(|v| v.to_f32()),
    };
    let (out32, lse32) = mla_decode(
        f(&case.q_nope).view(),
        f(&case.q_rope).view(),
        &cache32,
        case.block_table.view(),
        case.seq_lens.view(),
        0.2,
    )
    .unwrap();
    assert_eq!(out, out32.mapv(dsnpu_ops::half::bf16::from_f32));
    assert_eq!(lse, lse32);
}

// ---------------------------------------------------------------------------------------------
// Bad input: typed errors naming the operator and the argument.

/// `(variant, op, arg)` of an error, for compact assertions.
fn kind(e: &OpsError) -> (&'static str, &'static str, &'static str) {
    match e {
        OpsError::Shape { op, arg, .. } => ("Shape", *op, *arg),
        OpsError::IndexOutOfRange { op, arg, .. } => ("IndexOutOfRange", *op, *arg),
        OpsError::InvalidArgument { op, arg, .. } => ("InvalidArgument", *op, *arg),
        other => panic!("unexpected error {other:?}"),
    }
}

/// Two sequences (6 and 4 tokens) over a 4-block cache of block size 4, H = 2, Dl = 3, Dr = 2.
/// The -1 entries are past the used blocks, so they are ignored.
fn small_decode() -> DecodeCase<f32> {
    DecodeCase {
        q_nope: Array4::zeros((2, 1, 2, 3)),
        q_rope: Array4::zeros((2, 1, 2, 2)),
        cache: PagedLatentCache::new(4, 4, 3, 2).unwrap(),
        block_table: array![[2, 0, -1], [1, -1, -1]],
        seq_lens: array![6, 4],
        scale: 1.0,
    }
}

fn decode_err(c: &DecodeCase<f32>) -> OpsError {
    let r = mla_decode(
        c.q_nope.view(),
        c.q_rope.view(),
        &c.cache,
        c.block_table.view(),
        c.seq_lens.view(),
        c.scale,
    );
    r.expect_err("malformed input accepted")
}

#[test]
fn decode_rejects_bad_input_with_typed_errors() {
    let ok = small_decode();
    let (q, _) = ok.run(&dsnpu_ops::backend::Cpu).unwrap();
    assert_eq!(q.shape(), &[2, 1, 2, 3]);

    // A used block-table entry outside the cache: the error names the value and its flat position.
    let mut c = small_decode();
    c.block_table[[0, 1]] = 4;
    match decode_err(&c) {
        OpsError::IndexOutOfRange {
            op: "mla_decode",
            arg: "block_table",
            index: 4,
            position: 1,
            bound: 4,
        } => {}
        e => panic!("unexpected {e:?}"),
    }
    // -1 inside the used range is just as bad.
    c.block_table[[0, 1]] = -1;
    assert!(matches!(
        decode_err(&c),
        OpsError::IndexOutOfRange { index: -1, .. }
    ));

    // seq_len beyond the blocks given (3 columns · 4 slots = 12), zero, negative.
    for len in [13, 0, -3] {
        let mut c = small_decode();
        c.seq_lens[1] = len;
        let e = decode_err(&c);
        assert_eq!(
            kind(&e),
            ("InvalidArgument", "mla_decode", "seq_lens"),
            "{len}: {e}"
        );
    }
    // seq_len 1 below S = 2.
    let mut c = small_decode();
    c.q_nope = Array4::zeros((2, 2, 2, 3));
    c.q_rope = Array4::zeros((2, 2, 2, 2));
    c.seq_lens[1] = 1;
    assert_eq!(
        kind(&decode_err(&c)),
        ("InvalidArgument", "mla_decode", "seq_lens")
    );

    // Shapes: latent width, S = 0, rope width, batch of block_table and of seq_lens.
    type Breaker = fn(&mut DecodeCase<f32>);
    let shape_cases: [(&str, Breaker); 5] = [
        ("q_nope", |c| c.q_nope = Array4::zeros((2, 1, 2, 4))),
        ("q_nope", |c| {
            c.q_nope = Array4::zeros((2, 0, 2, 3));
            c.q_rope = Array4::zeros((2, 0, 2, 2));
        }),
        ("q_rope", |c| c.q_rope = Array4::zeros((2, 1, 2, 3))),
        ("block_table", |c| c.block_table = array![[2, 0, -1]]),
        ("seq_lens", |c| c.seq_lens = array![6]),
    ];
    for (arg, break_it) in shape_cases {
        let mut c = small_decode();
        break_it(&mut c);
        assert_eq!(kind(&decode_err(&c)), ("Shape", "mla_decode", arg));
    }

    // A non-finite scale.
    let mut c = small_decode();
    c.scale = f32::NAN;
    assert_eq!(
        kind(&decode_err(&c)),
        ("InvalidArgument", "mla_decode", "scale")
    );

    // A hand-built cache whose parts disagree on the block count.
    let mut c = small_decode();
    c.cache.rope = Array3::zeros((3, 4, 2));
    assert_eq!(kind(&decode_err(&c)), ("Shape", "mla_decode", "cache.rope"));
}

#[test]
fn cache_rejects_bad_input_and_writes_nothing() {
    for (nb, bs, dl, dr) in [
        (0, 4, 3, 2),
        (1, 0, 3, 2),
        (1, 4, 0, 2),
        (1, 4, 3, 0),
        (usize::MAX, 2, 3, 2),
    ] {
        let e = PagedLatentCache::<f32>::new(nb, bs, dl, dr).unwrap_err();
        assert_eq!(kind(&e).0, "InvalidArgument", "{e}");
        assert_eq!(kind(&e).1, "PagedLatentCache::new");
    }
    let mut cache = PagedLatentCache::<f32>::new(2, 4, 3, 2).unwrap();
    let before = cache.clone();
    let latent = Array2::from_elem((2, 3), 1.0f32);
    let rope = Array2::from_elem((2, 2), 1.0f32);
    // The first slot is fine, the second is out of range (capacity 8, or negative but not -1):
    // the error names it, and nothing at all is written.
    for bad in [8, -2] {
        match cache
            .write(latent.view(), rope.view(), array![0, bad].view())
            .unwrap_err()
        {
            OpsError::IndexOutOfRange {
                op: "mla_cache_write",
                arg: "slot_mapping",
                index,
                position: 1,
                bound: 8,
            } => assert_eq!(index, i64::from(bad)),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(cache.latent, before.latent);
        assert_eq!(cache.rope, before.rope);
    }
    let e = cache
        .write(latent.view(), rope.view(), array![0].view())
        .unwrap_err();
    assert_eq!(kind(&e), ("Shape", "mla_cache_write", "latent"));
    let e = cache
        .write(
            latent.view(),
            Array2::zeros((2, 3)).view(),
            array![0, 1].view(),
        )
        .unwrap_err();
    assert_eq!(kind(&e), ("Shape", "mla_cache_write", "k_rope"));
}

#[test]
fn prefill_rejects_bad_input_with_typed_errors() {
    let q = Array3::<f32>::zeros((4, 2, 5));
    let v = Array3::<f32>::zeros((4, 2, 3));
    let prefill = |k: &Array3<f32>, v: &Array3<f32>, cu: Array1<i32>, scale: f32| {
        mla_prefill(q.view(), k.view(), v.view(), cu.view(), scale)
    };
    // Valid, with an empty sequence in the middle.
    prefill(&q, &v, array![0, 1, 1, 4], 1.0).unwrap();
    // Ending before T, not starting at 0, decreasing, ending past T.
    for cu in [array![0, 3], array![1, 4], array![0, 3, 2, 4], array![0, 5]] {
        let e = prefill(&q, &v, cu.clone(), 1.0).unwrap_err();
        assert_eq!(
            kind(&e),
            ("InvalidArgument", "mla_prefill", "cu_seqlens"),
            "{cu}"
        );
    }
    let e = prefill(&q, &v, Array1::zeros(0), 1.0).unwrap_err();
    assert_eq!(kind(&e), ("Shape", "mla_prefill", "cu_seqlens"));
    let e = prefill(&Array3::zeros((4, 2, 4)), &v, array![0, 4], 1.0).unwrap_err();
    assert_eq!(kind(&e), ("Shape", "mla_prefill", "k"));
    let e = prefill(&q, &Array3::zeros((4, 1, 3)), array![0, 4], 1.0).unwrap_err();
    assert_eq!(kind(&e), ("Shape", "mla_prefill", "v"));
    let e = prefill(&q, &v, array![0, 4], f32::INFINITY).unwrap_err();
    assert_eq!(kind(&e), ("InvalidArgument", "mla_prefill", "scale"));
}
