//! MLA on the device backend with every launch checked (a launch-blocking stream: each `mla_decode`
//! launch is waited for and fails unless it completed without a fault and with **zero sanitizer
//! warnings**): the MLA conformance suite (decode and prefill on the device in f32/f16/bf16; the
//! trait's cache write has no kernel and prints skips), a hand-worked decode, and a DeepSeek-width decode
//! (H = 16, Dl = 512, Dr = 64, ~1024 cached tokens) against the CPU reference with its launch
//! counters.

use dsnpu_ops::backend::{Cpu, MlaOps, Npu};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::mla::{DecodeCase, DecodeSpec};
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::mla::PagedLatentCache;
use dsnpu_ops::Float;
use dsnpu_runtime::sim_counters;
use half::bf16;
use ndarray::{Array1, Array2, Array3, Array4, Axis};

mod npu_backend;
use npu_backend::checked_npu;

dsnpu_ops::mla_conformance!(checked_npu());

/// Two cached positions, scale 1, with scores 0 and ln 3 by construction: p = (1/4, 3/4), so
/// out = latent0 / 4 + 3 latent1 / 4 and lse = ln(1 + 3).
#[test]
fn hand_worked_two_position_decode() {
    let npu = checked_npu();
    let (dl, dr) = (8, 8);
    let mut cache = PagedLatentCache::<f32>::new(2, 16, dl, dr).unwrap();
    cache.latent.fill(f32::NAN); // rows the decode must not read
    cache.rope.fill(f32::NAN);
    let ln3 = 3f32.ln();
    // Block 1 holds the sequence: row 0 scores q·k = 0, row 1 scores ln 3 (from its rope part).
    let lat0 = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0];
    let lat1 = [0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 4.0, 0.0];
    let rope0 = [0.0; 8];
    let rope1 = [ln3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    for d in 0..8 {
        cache.latent[[1, 0, d]] = lat0[d];
        cache.latent[[1, 1, d]] = lat1[d];
        cache.rope[[1, 0, d]] = rope0[d];
        cache.rope[[1, 1, d]] = rope1[d];
    }
    // q_nope = e0 (latent column 0 is 0 in both rows), q_rope = e0.
    let mut q_nope = Array4::<f32>::zeros((1, 1, 1, dl));
    q_nope[[0, 0, 0, 0]] = 1.0;
    let q_rope = q_nope.clone();
    let table = Array2::from_shape_vec((1, 2), vec![1, -1]).unwrap();
    let lens = Array1::from(vec![2]);
    let (out, lse) = npu
        .mla_decode(
            q_nope.view(),
            q_rope.view(),
            &cache,
            table.view(),
            lens.view(),
            1.0,
        )
        .unwrap();
    let want: Vec<f32> = (0..8).map(|d| 0.25 * lat0[d] + 0.75 * lat1[d]).collect();
    for d in 0..8 {
        assert!(
            (out[[0, 0, 0, d]] - want[d]).abs() < 1e-6,
            "d={d}: {} vs {}",
            out[[0, 0, 0, d]],
            want[d]
        );
    }
    assert!(
        (lse[[0, 0, 0]] - 4f32.ln()).abs() < 1e-6,
        "{}",
        lse[[0, 0, 0]]
    );
}

/// DeepSeek-V3 widths: 16 heads, Dl 512, Dr 64, block size 128, ~1024 cached tokens (one query
/// token; two query tokens over two ragged sequences), in f32 (tight tolerance) and bf16, against the
/// CPU reference; then the launch's own counters: the right kernel, no warning, a UB high-water mark
/// within 192 KiB, the output rows and lse values written back, every visible row read, one block per
/// chunk of the split-KV plan.
#[test]
fn deepseek_width_decode_matches_the_reference() {
    deepseek_width::<f32>("mla_decode_f32");
    deepseek_width::<bf16>("mla_decode_bf16");
}

/// A decode at DeepSeek-V3's widths as at TP8 (16 heads, latent 512, rope 64, block 128).
fn deepseek_spec(s_q: usize, seq_lens: Vec<usize>) -> DecodeSpec {
    DecodeSpec {
        block_size: 128,
        heads: 16,
        latent_dim: 512,
        rope_dim: 64,
        s_q,
        seq_lens,
        spare_blocks: 1,
        extra_cols: 1,
        scale: 0.1352,
    }
}

fn deepseek_width<T: Float>(symbol: &str) {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0x4D4C_0DEC);
    for (s_q, seq_lens) in [(1usize, vec![1024usize]), (2, vec![1000, 1031])] {
        let spec = deepseek_spec(s_q, seq_lens.clone());
        let case = DecodeCase::<T>::build(&mut rng, &spec).unwrap();
        let (want_out, want_lse) = case.run(&Cpu).unwrap();
        let (out, lse) = case.run(&npu).unwrap();
        let what = format!("deepseek mla_decode S={s_q} seq_lens={seq_lens:?}");
        let tol = Tolerance::of::<T>();
        assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
        assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);

        let c = sim_counters::last_launch_counters(npu.stream())
            .unwrap()
            .expect("a completed launch");
        assert_eq!((c.kernel.as_str(), c.status, c.warnings), (symbol, 0, 0));
        assert!(c.totals.ub_high_water <= 196_608, "{c:?}");
        let rows = (seq_lens.len() * s_q * 16) as u64;
        let sz = std::mem::size_of::<T>() as u64;
        // At least the out rows of 512 and one f32 lse per (b, s, h) (plus the split-KV workspace).
        assert!(
            c.totals.ub_to_gm_bytes >= rows * 512 * sz + rows * 4,
            "{c:?}"
        );
        // The backend launches the split-KV plan of this shape: one block per chunk up to the cores,
        // every sequence in at least one chunk and no chunk longer than the plan's.
        let cores = npu.library().hardware().cube.cores;
        let shape = dsnpu_kernels::MlaPlanShape {
            query_rows: (s_q * 16) as u32,
            latent_dim: 512,
            rope_dim: 64,
            // The plan weighs only the element size.
            dtype: match sz {
                4 => dsnpu_kernels::KernelDtype::F32,
                _ => dsnpu_kernels::KernelDtype::Bf16,
            },
        };
        let plan = dsnpu_kernels::MlaDecodePlan::for_shape(&seq_lens, shape, cores).unwrap();
        assert_eq!(c.num_blocks, plan.tasks().min(cores), "{c:?}");
        assert!(plan.tasks() >= seq_lens.len() as u32, "{plan:?}");
        // At least every visible cache row once and every query row once.
        let visible: u64 = seq_lens.iter().map(|&l| (l - s_q + 1) as u64).sum();
        assert!(
            c.totals.gm_to_ub_bytes >= (visible + rows) * 576 * sz,
            "{c:?}"
        );
    }
}

/// The kernel covers a run of consecutively numbered cache blocks with one cube call: relabel a
/// shuffled case's blocks so each sequence's blocks are consecutive except that every third block
/// skips an (unused, NaN) id, and the next sequence's first block follows the previous one's last —
/// so runs cross block and chunk boundaries, break mid-sequence, and would run into the neighbour's
/// rows if a run were not cut at the chunk's end. Checked against the CPU reference in f32 and bf16,
/// at block sizes 16 and 64 with one and two query tokens.
#[test]
fn consecutive_block_runs_match_the_reference() {
    consecutive_runs::<f32>();
    consecutive_runs::<bf16>();
}

fn consecutive_runs<T: Float>() {
    let npu = checked_npu();
    let mut rng = CaseRng::new(11);
    for (block_size, s_q) in [(16usize, 1usize), (64, 2)] {
        let seq_lens = vec![700, s_q, 130, 1000];
        let need: Vec<usize> = seq_lens.iter().map(|l| l.div_ceil(block_size)).collect();
        let skips: usize = need.iter().map(|n| n / 3).sum();
        let spec = DecodeSpec {
            block_size,
            heads: 16,
            latent_dim: 40,
            rope_dim: 8,
            s_q,
            seq_lens: seq_lens.clone(),
            spare_blocks: skips + 1,
            extra_cols: 1,
            scale: 0.3,
        };
        let case = DecodeCase::<T>::build(&mut rng, &spec).unwrap();
        let mut run = case.clone();
        run.cache.latent.fill(T::from_f32(f32::NAN));
        run.cache.rope.fill(T::from_f32(f32::NAN));
        let mut next = 0usize;
        for (b, &n) in need.iter().enumerate() {
            for k in 0..n {
                if k % 3 == 2 {
                    next += 1; // an unused NaN block breaks the run
                }
                let old = case.block_table[[b, k]] as usize;
                run.block_table[[b, k]] = next as i32;
                let (lat, rope) = (
                    case.cache.latent.index_axis(Axis(0), old),
                    case.cache.rope.index_axis(Axis(0), old),
                );
                run.cache.latent.index_axis_mut(Axis(0), next).assign(&lat);
                run.cache.rope.index_axis_mut(Axis(0), next).assign(&rope);
                next += 1;
            }
        }
        let (want_out, want_lse) = run.run(&Cpu).unwrap();
        let (out, lse) = run.run(&npu).unwrap();
        let what = format!("consecutive runs bs={block_size} S={s_q}");
        let tol = Tolerance::of::<T>();
        assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
        assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
    }
}

/// The kernel's dimensions of a decode case (its tiling, as the backend computes it).
fn kernel_dims<T: Float>(spec: &DecodeSpec, case: &DecodeCase<T>) -> dsnpu_kernels::MlaDecodeDims {
    dsnpu_kernels::MlaDecodeDims {
        batch: spec.seq_lens.len() as u64,
        s_q: spec.s_q as u64,
        heads: spec.heads as u64,
        latent_dim: spec.latent_dim as u64,
        rope_dim: spec.rope_dim as u64,
        block_size: spec.block_size as u64,
        num_blocks: case.cache.latent.shape()[0] as u64,
        max_blocks: case.block_table.ncols() as u64,
    }
}

/// `case` decoded on `npu` under `plan` (the checked backend fails the launch on any fault or sanitizer
/// finding).
fn decode_with_plan<T: Float>(
    npu: &Npu,
    case: &DecodeCase<T>,
    plan: &dsnpu_kernels::MlaDecodePlan,
) -> dsnpu_ops::Result<(Array4<T>, Array3<f32>)> {
    npu.mla_decode_with_plan(
        case.q_nope.view(),
        case.q_rope.view(),
        &case.cache,
        case.block_table.view(),
        case.seq_lens.view(),
        case.scale,
        Some(plan),
    )
}

/// The kernel's pipelines — one chunk's cache rows in the cube core's L1 at a time, two (the next task
/// loaded and scored while the vector cores still work on the previous one), or none (the keys
/// streamed through L1 tile by tile, 16-bit types) — against the CPU reference: plans pinned to each ([`dsnpu_kernels::MlaDecodePlan::for_shape_pinned`]) on a
/// ragged batch whose long sequences are cut into many chunks, so a block runs several tasks in a row
/// and reuses its score slots; f32 (P·V through the Matmul API) and bf16 (P·V from L1).
#[test]
fn every_key_buffer_pipeline_matches_the_reference() {
    let long = DecodeSpec {
        block_size: 64,
        ..deepseek_spec(2, vec![9000, 2, 4000, 65])
    };
    pinned::<f32>(&long, true);
    pinned::<bf16>(&long, true);
    // 64 query rows: P·V's output in two column tiles of 256 (the streamed latent tiles start at a
    // column offset).
    let wide = DecodeSpec {
        heads: 64,
        s_q: 1,
        seq_lens: vec![1200, 3, 500],
        ..long
    };
    pinned::<bf16>(&wide, false);
}

/// A plan that cuts no sequence (one task each, planned for one core) tells the kernel so
/// (`tiling.uncut`): every block finishes the sequences it served and none waits at a SyncAll for a
/// combine phase. Against the CPU reference, with that plan and with one for every core that cuts the
/// long sequence (the combine after the SyncAll); f32 and bf16.
#[test]
fn a_plan_that_cuts_no_sequence_needs_no_combine_phase() {
    uncut_and_cut::<f32>();
    uncut_and_cut::<bf16>();
}

fn uncut_and_cut<T: Float>() {
    use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaDecodeTiling};
    let npu = checked_npu();
    let spec = deepseek_spec(2, vec![37, 100, 5]);
    let case = DecodeCase::<T>::build(&mut CaseRng::new(23), &spec).unwrap();
    let (want_out, want_lse) = case.run(&Cpu).unwrap();
    let budget = npu.library().hardware().cube;
    let dims = kernel_dims(&spec, &case);
    // The cut plan is for at least two cores (on a one-core device one block runs all its tasks).
    for (cores, uncut) in [(1, 1), (budget.cores.max(2), 0)] {
        let plan = MlaDecodePlan::new(&spec.seq_lens, cores).unwrap();
        // The flag depends on the plan alone, whatever the type.
        let t = MlaDecodeTiling::new(dims, &plan, spec.scale, KernelDtype::Bf16, budget).unwrap();
        assert_eq!(
            (plan.tasks() == 3, t.uncut),
            (uncut == 1, uncut),
            "{plan:?}"
        );
        let (out, lse) = decode_with_plan(&npu, &case, &plan).unwrap();
        let what = format!("{} tasks", plan.tasks());
        let tol = Tolerance::of::<T>();
        assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
        assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
    }
}

/// Sequences the plan does not cut ("whole": one task each) finish without the combine: the cube core
/// writes their P·latent into one of its block's two whole slots, used in turn, and the vector cores
/// divide their rows by l after their next task. 61 sequences (one cut, it is longer than a chunk) on
/// the 24 cube cores put three or more whole tasks in a block, beside cut ones, so the slots are reused
/// while the previous one is still being finished; S 1 and 2 (the lse's strided runs), a narrow latent,
/// every key-buffer pipeline (with carry where the keys are held in bf16), f32 and bf16, against the CPU
/// reference.
#[test]
fn whole_sequences_finish_through_the_blocks_two_slots() {
    use dsnpu_kernels::KernelDtype;
    whole_sequences::<f32>(KernelDtype::F32, &[1, 2]);
    whole_sequences::<bf16>(KernelDtype::Bf16, &[0, 1, 2]);
}

fn whole_sequences<T: Float>(dtype: dsnpu_kernels::KernelDtype, key_buffers: &[u32]) {
    use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaDecodeTiling, MlaPlanShape};
    let npu = checked_npu();
    let budget = npu.library().hardware().cube;
    // Short ragged sequences, and one the plan must cut (longer than MLA_MAX_CHUNK).
    let lens: Vec<usize> = (0..60).map(|i| 2 + (i * 37) % 90).chain([2500]).collect();
    // DeepSeek widths with S 1 and 2, and one query row of a latent 36 wide (a slot of 36 values: the
    // slots' 32-byte rounding matters).
    let narrow = DecodeSpec {
        block_size: 16,
        heads: 1,
        latent_dim: 36,
        rope_dim: 12,
        ..deepseek_spec(1, lens.clone())
    };
    for spec in [
        deepseek_spec(1, lens.clone()),
        deepseek_spec(2, lens),
        narrow,
    ] {
        let s_q = spec.s_q;
        let case = DecodeCase::<T>::build(&mut CaseRng::new(31), &spec).unwrap();
        let (want_out, want_lse) = case.run(&Cpu).unwrap();
        let shape = MlaPlanShape {
            query_rows: (s_q * spec.heads) as u32,
            latent_dim: spec.latent_dim as u32,
            rope_dim: spec.rope_dim as u32,
            dtype,
        };
        for &kb in key_buffers {
            let plan =
                MlaDecodePlan::for_shape_pinned(&spec.seq_lens, shape, budget.cores, kb).unwrap();
            // Each sequence's (first task, task count) leads the plan's words; block c runs tasks
            // [T c / n, T (c + 1) / n) of T on n blocks.
            let words = plan.words();
            let whole: Vec<bool> = (0..spec.seq_lens.len())
                .map(|b| words[2 * b + 1] == 1)
                .collect();
            assert!(whole.contains(&false), "{plan:?}");
            let (t, n) = (
                plan.tasks() as usize,
                plan.tasks().min(budget.cores) as usize,
            );
            let first = |k: usize| words[2 * spec.seq_lens.len() + 3 * k] as usize;
            let most = (0..n)
                .map(|c| {
                    (t * c / n..t * (c + 1) / n)
                        .filter(|&k| whole[first(k)])
                        .count()
                })
                .max();
            assert!(most >= Some(3), "{plan:?}");
            // Held keys in bf16 at 16 heads carry P·latent across a block's tasks of one sequence.
            let t =
                MlaDecodeTiling::new(kernel_dims(&spec, &case), &plan, spec.scale, dtype, budget)
                    .unwrap();
            let carry = dtype == KernelDtype::Bf16 && kb != 0 && spec.heads == 16;
            assert_eq!(t.carries(), carry, "{t:?}");
            let (out, lse) = decode_with_plan(&npu, &case, &plan).unwrap();
            let what = format!("S {s_q}, {} heads, {kb} key buffers", spec.heads);
            let tol = Tolerance::of::<T>();
            assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
            assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
        }
    }
}

/// Streamed keys at 128 query rows (P·V in four output tiles of 128 columns): P comes into the cube
/// core's L1 whole where it fits beside narrowed q·Kᵀ staging tiles (short chunks), and per k step of
/// each pass of two output tiles where it does not (a chunk of 1500 positions; with a 320-wide latent
/// the second pass has one tile, of 64 columns); each against the CPU reference.
#[test]
fn streamed_keys_take_p_whole_or_per_step() {
    use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaDecodeTiling, MlaPlanShape};
    let npu = checked_npu();
    let budget = npu.library().hardware().cube;
    // Planned for two cores the long sequence is cut in two (chunks of 750: P whole beside 64-row
    // staging tiles, six k steps of P·V); for one core it stays whole (1500: P per k step).
    for (latent_dim, cores, whole) in [(512, 2, 1), (512, 1, 0), (320, 1, 0)] {
        let spec = DecodeSpec {
            heads: 128,
            latent_dim,
            ..deepseek_spec(1, vec![1500, 37])
        };
        let case = DecodeCase::<bf16>::build(&mut CaseRng::new(21), &spec).unwrap();
        let (want_out, want_lse) = case.run(&Cpu).unwrap();
        let shape = MlaPlanShape {
            query_rows: 128,
            latent_dim: latent_dim as u32,
            rope_dim: 64,
            dtype: KernelDtype::Bf16,
        };
        let plan = MlaDecodePlan::for_shape_pinned(&spec.seq_lens, shape, cores, 0).unwrap();
        let dims = kernel_dims(&spec, &case);
        let t = MlaDecodeTiling::new(dims, &plan, spec.scale, KernelDtype::Bf16, budget).unwrap();
        assert_eq!(
            (
                t.key_buffers,
                t.p_whole,
                t.qk_base_n,
                t.pv_base_n,
                t.pv_pass_tiles
            ),
            (0, whole, 64, 128, 2 - whole),
            "{t:?}"
        );
        let (out, lse) = decode_with_plan(&npu, &case, &plan).unwrap();
        let what = format!("streamed, latent {latent_dim}, P whole {whole}");
        let tol = Tolerance::of::<bf16>();
        assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
        assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
    }
}

/// `spec` decoded under each pipeline's plan; `many_tasks`: each held-keys plan has more tasks than
/// blocks and the streamed one chunks longer than L1 holds.
fn pinned<T: Float>(spec: &DecodeSpec, many_tasks: bool) {
    use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaPlanShape};
    let npu = checked_npu();
    let mut rng = CaseRng::new(12);
    let case = DecodeCase::<T>::build(&mut rng, spec).unwrap();
    let (want_out, want_lse) = case.run(&Cpu).unwrap();
    let cores = npu.library().hardware().cube.cores;
    let plan_shape = MlaPlanShape {
        query_rows: (spec.s_q * spec.heads) as u32,
        latent_dim: 512,
        rope_dim: 64,
        // The plan weighs only the element size.
        dtype: match std::mem::size_of::<T>() {
            4 => KernelDtype::F32,
            _ => KernelDtype::Bf16,
        },
    };
    // Streamed keys (0) exist for 16-bit types only.
    let pipelines: &[u32] = if plan_shape.dtype == KernelDtype::F32 {
        &[1, 2]
    } else {
        &[1, 2, 0]
    };
    for &key_buffers in pipelines {
        // The streamed plan is made for at most 16 cores: for some core counts (20) the planner
        // cuts this batch into chunks L1 could hold; for up to 16 it never does.
        let plan_cores = if many_tasks && key_buffers == 0 {
            cores.min(16)
        } else {
            cores
        };
        let plan =
            MlaDecodePlan::for_shape_pinned(&spec.seq_lens, plan_shape, plan_cores, key_buffers)
                .unwrap();
        assert_eq!(plan.key_buffers(), key_buffers);
        if many_tasks && key_buffers == 0 {
            // Streamed: chunks longer than L1 could hold.
            let held = dsnpu_kernels::mla_decode_max_chunk(&plan_shape, 1);
            assert!(plan.chunk() > held, "{plan:?}");
        } else if many_tasks {
            assert!(plan.tasks() > cores, "several tasks per block: {plan:?}");
        }
        let (out, lse) = decode_with_plan(&npu, &case, &plan).unwrap();
        let what = format!(
            "pinned {key_buffers} key buffer(s), {}",
            std::any::type_name::<T>()
        );
        assert_close(
            &format!("{what} out"),
            out.view(),
            want_out.view(),
            Tolerance::of::<T>(),
        );
        assert_close(
            &format!("{what} lse"),
            lse.view(),
            want_lse.view(),
            Tolerance::of::<T>(),
        );
    }
    // A plan made for other lengths is refused before anything runs.
    let mut other = spec.seq_lens.clone();
    other[0] += 1;
    let plan = MlaDecodePlan::for_shape(&other, plan_shape, cores).unwrap();
    let r = decode_with_plan(&npu, &case, &plan);
    assert!(
        matches!(r, Err(dsnpu_ops::OpsError::InvalidArgument { .. })),
        "{r:?}"
    );
}

/// Carry (a block sums the P·V of its consecutive chunks of one sequence in L0C, with each row's
/// exp offset fixed at the first scores its segment sees): scores that rise along the sequence, far
/// past what P holds relative to the first chunks' maxima (f16 overflows beyond e^11, bf16 beyond
/// e^88), must start new segments. The keys grow with their position (×1 at the start, ×61 at the
/// end); with one query token only heads 0..7 see the rise (the other heads' queries are scaled down,
/// so only one vector core's rows ask for a new segment), with two every head of the first token does
/// (both vector cores' rows). The rise is asserted first, then f16 and bf16 against the CPU
/// reference under both held-keys pipelines.
#[test]
fn carried_segments_restart_when_the_scores_rise() {
    rising::<half::f16>();
    rising::<bf16>();
}

fn rising<T: Float>() {
    use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaPlanShape};
    let npu = checked_npu();
    let cores = npu.library().hardware().cube.cores;
    let mut rng = CaseRng::new(13);
    for s_q in [1usize, 2] {
        let spec = deepseek_spec(s_q, vec![16000, 300]);
        let mut case = DecodeCase::<T>::build(&mut rng, &spec).unwrap();
        let bs = spec.block_size;
        // Sequence 0's keys grow; sequence 1 (one task) keeps its values.
        let len = spec.seq_lens[0];
        for pos in 0..len {
            let grow = 1.0 + 60.0 * pos as f32 / len as f32;
            let (blk, row) = (case.block_table[[0, pos / bs]] as usize, pos % bs);
            for v in case.cache.latent.slice_mut(ndarray::s![blk, row, ..]) {
                *v = T::from_f32(v.to_f32() * grow);
            }
            for v in case.cache.rope.slice_mut(ndarray::s![blk, row, ..]) {
                *v = T::from_f32(v.to_f32() * grow);
            }
        }
        if s_q == 1 {
            for h in 8..16 {
                case.q_nope
                    .slice_mut(ndarray::s![.., .., h, ..])
                    .mapv_inplace(|v| T::from_f32(v.to_f32() * 0.02));
                case.q_rope
                    .slice_mut(ndarray::s![.., .., h, ..])
                    .mapv_inplace(|v| T::from_f32(v.to_f32() * 0.02));
            }
        }
        // Head 0 of sequence 0's first token: the last 256 positions' best score beats the first 256's
        // by far more than P holds in f16 or bf16 relative to the first.
        let score = |pos: usize| -> f64 {
            let (blk, row) = (case.block_table[[0, pos / bs]] as usize, pos % bs);
            let dot = |q: ndarray::ArrayView1<T>, k: ndarray::ArrayView1<T>| -> f64 {
                q.iter()
                    .zip(k)
                    .map(|(a, b)| f64::from(a.to_f32()) * f64::from(b.to_f32()))
                    .sum()
            };
            let qn = case.q_nope.slice(ndarray::s![0, 0, 0, ..]);
            let qr = case.q_rope.slice(ndarray::s![0, 0, 0, ..]);
            let kn = case.cache.latent.slice(ndarray::s![blk, row, ..]);
            let kr = case.cache.rope.slice(ndarray::s![blk, row, ..]);
            f64::from(case.scale) * (dot(qn, kn) + dot(qr, kr))
        };
        let best = |r: std::ops::Range<usize>| r.map(score).fold(f64::MIN, f64::max);
        let rise = best(16000 - s_q - 256..16000 - s_q) - best(0..256);
        assert!(rise > 100.0, "the scores rise by {rise}");

        let (want_out, want_lse) = case.run(&Cpu).unwrap();
        let shape = MlaPlanShape {
            query_rows: (s_q * spec.heads) as u32,
            latent_dim: 512,
            rope_dim: 64,
            dtype: KernelDtype::Bf16,
        };
        for key_buffers in [1, 2] {
            let plan =
                MlaDecodePlan::for_shape_pinned(&spec.seq_lens, shape, cores, key_buffers).unwrap();
            assert!(plan.tasks() > cores, "several tasks per block: {plan:?}");
            let (out, lse) = decode_with_plan(&npu, &case, &plan).unwrap();
            let what = format!(
                "rising scores S={s_q}, {key_buffers} key buffer(s), {}",
                std::any::type_name::<T>()
            );
            // Widened: values up to 61 times the usual size meet P's rounding (the same with every task
            // writing its own partial). A missing new segment is inf or NaN in f16 (and in bf16 past
            // e^88), a misplaced partial an error of the values' size.
            let tol = Tolerance::of::<T>().widened(4.0);
            assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
            assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
        }
    }
}

/// A sequence cut into more tasks than the combine holds `(m, l)` records of at once (256): the combine
/// walks its tasks in groups, each group's records and (with carry) segment words loaded together, and
/// only the partials that end a segment are read. 16 heads, two key buffers (chunks of about 200
/// positions in bf16, so about 300 tasks; shorter in f32), against the CPU reference: bf16 carries,
/// f32 does not (every task's partial read, the first ones asked for with the records).
#[test]
fn a_sequence_of_more_tasks_than_one_combine_group() {
    more_tasks_than_one_combine_group::<bf16>(dsnpu_kernels::KernelDtype::Bf16);
    more_tasks_than_one_combine_group::<f32>(dsnpu_kernels::KernelDtype::F32);
}

fn more_tasks_than_one_combine_group<T: Float>(dtype: dsnpu_kernels::KernelDtype) {
    use dsnpu_kernels::{MlaDecodePlan, MlaPlanShape};
    let npu = checked_npu();
    let cores = npu.library().hardware().cube.cores;
    let spec = deepseek_spec(1, vec![60000]);
    let case = DecodeCase::<T>::build(&mut CaseRng::new(14), &spec).unwrap();
    let shape = MlaPlanShape {
        query_rows: 16,
        latent_dim: 512,
        rope_dim: 64,
        dtype,
    };
    let plan = MlaDecodePlan::for_shape_pinned(&spec.seq_lens, shape, cores, 2).unwrap();
    assert!(plan.tasks() > 256, "{plan:?}");
    let (want_out, want_lse) = case.run(&Cpu).unwrap();
    let (out, lse) = decode_with_plan(&npu, &case, &plan).unwrap();
    let tol = Tolerance::of::<T>();
    let what = format!("{} tasks, {dtype:?}", plan.tasks());
    assert_close(&format!("{what} out"), out.view(), want_out.view(), tol);
    assert_close(&format!("{what} lse"), lse.view(), want_lse.view(), tol);
}

/// A shape the reference takes but no decode plan fits (a latent row too wide for L1) is
/// `Unsupported`, like the launcher's shape errors, so `Fallback(Npu, Cpu)` answers it on the CPU.
#[test]
fn a_shape_no_plan_fits_is_unsupported_and_falls_back() {
    use dsnpu_ops::backend::Fallback;
    use dsnpu_ops::OpsError;
    let npu = checked_npu();
    let dl = 100_000;
    let mut cache = PagedLatentCache::<f32>::new(1, 2, dl, 1).unwrap();
    cache
        .latent
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i % 5) as f32 * 0.1);
    let q = Array4::<f32>::from_elem((1, 1, 1, dl), 0.001);
    let qr = Array4::<f32>::zeros((1, 1, 1, 1));
    let table = Array2::<i32>::zeros((1, 1));
    let lens = Array1::from(vec![2]);
    let args = (q.view(), qr.view(), &cache, table.view(), lens.view(), 1.0);
    let e = npu
        .mla_decode(args.0, args.1, args.2, args.3, args.4, args.5)
        .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::Unsupported {
                op: "mla_decode",
                ..
            }
        ),
        "{e:?}"
    );
    let (out, lse) = Fallback::new(npu, Cpu)
        .mla_decode(args.0, args.1, args.2, args.3, args.4, args.5)
        .unwrap();
    let (want_out, want_lse) = Cpu
        .mla_decode(args.0, args.1, args.2, args.3, args.4, args.5)
        .unwrap();
    assert_eq!((out, lse), (want_out, want_lse));
}
