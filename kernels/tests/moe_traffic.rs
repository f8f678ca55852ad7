//! GM traffic and work distribution of the MoE kernels from the host layer's counters, on a 910B2 die's
//! budget (48 vector / 24 cube cores): exact byte counts on cases small enough to work out by hand;
//! dispatch and combine at DeepSeek-V3 shapes within 1.2x of the least traffic each must move (a design
//! property: x read once, every row written once, O(blocks x experts) histogram words); the int8
//! dispatch writing half the row bytes; a hot expert spread over every cube core; empty experts costing
//! nothing. `cargo test --test moe_traffic -- --nocapture` prints the figures.
mod common;
mod moe_common;

use dsnpu_kernels::{CoreBudget, MoeList};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::moe::{routing_ids, IdDraw, RoutingCase};
use dsnpu_ops::half::{bf16, f16};
use dsnpu_ops::moe::{self, ExpertTokensMode};
use dsnpu_ops::ndarray::Array2;
use moe_common::{combine_minimal_bytes, dispatch_minimal_bytes, MoeDevice};

const B2: MoeDevice = MoeDevice {
    vector: CoreBudget::ASCEND_910B2_VECTOR,
    cube: CoreBudget::ASCEND_910B2_CUBE,
};
const ONE: MoeDevice = MoeDevice {
    vector: CoreBudget {
        cores: 1,
        ub_bytes: common::UB_910B,
    },
    cube: CoreBudget {
        cores: 1,
        ub_bytes: common::UB_910B,
    },
};

#[test]
fn dispatch_bytes_by_hand() {
    // 4 tokens of 16 f32, top-2 of 8 experts, one block. Reads: ids 32, x 4 x 64, then the histogram
    // column (8 x 4) and the totals (8 x 4). Writes: the histogram 32, the totals 32, 8 rows x 64, the row
    // indices 32, expert_tokens 8 x 8.
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let ids = [0, 1, 2, 3, 4, 5, 6, 7];
    let d = ONE
        .init_routing(&x, 4, 16, &ids, 2, 8, None, MoeList::Count)
        .unwrap();
    let c = d.launch.outcome.total();
    assert_eq!(c.gm_to_ub_bytes, 32 + 256 + 32 + 32);
    assert_eq!(c.ub_to_gm_bytes, 32 + 32 + 512 + 32 + 64);
    assert_eq!(d.expanded_row_idx, (0..8).collect::<Vec<i32>>());
}

#[test]
fn combine_bytes_by_hand() {
    // 2 tokens of 16 f32, top-2, indices [0, -1, 1, 2]: reads indices 16 + weights 16 + 3 rows x 64;
    // writes 2 rows x 64. out[0] = 0.5 y[0]; out[1] = 2 y[1] + 3 y[2].
    let y: Vec<f32> = (0..48).map(|i| i as f32).collect();
    let (out, launch) = ONE
        .finalize(
            &y,
            3,
            16,
            &[0, -1, 1, 2],
            &[0.5, 9.0, 2.0, 3.0],
            2,
            2,
            None,
            None,
        )
        .unwrap();
    let c = launch.outcome.total();
    assert_eq!((c.gm_to_ub_bytes, c.ub_to_gm_bytes), (16 + 16 + 192, 128));
    for j in 0..16 {
        assert_eq!(out[j], 0.5 * j as f32);
        assert_eq!(out[16 + j], 2.0 * (16 + j) as f32 + 3.0 * (32 + j) as f32);
    }
}

fn deepseek_ids(tokens: usize, active: Option<std::ops::Range<usize>>) -> Vec<i32> {
    let case = RoutingCase {
        tokens,
        hidden: 7168,
        top_k: 8,
        experts: 256,
        active,
        ids: IdDraw::Distinct,
    };
    routing_ids(&mut CaseRng::new(0x7AF + tokens as u64), &case)
        .into_iter()
        .collect()
}

#[test]
fn dispatch_moves_close_to_the_minimum() {
    let (hidden, experts) = (7168, 256);
    for tokens in [1usize, 64, 512] {
        let x: Array2<bf16> = CaseRng::new(tokens as u64).uniform((tokens, hidden), -2.0, 2.0);
        let x: Vec<bf16> = x.into_iter().collect();
        let ids = deepseek_ids(tokens, None);
        let d = B2
            .init_routing(&x, tokens, hidden, &ids, 8, experts, None, MoeList::Count)
            .unwrap();
        let min = dispatch_minimal_bytes(tokens, hidden, 8, experts, d.rows, 2, 2, false);
        let q = B2
            .init_routing_quant(&x, tokens, hidden, &ids, 8, experts, None, MoeList::Count)
            .unwrap();
        let qmin = dispatch_minimal_bytes(tokens, hidden, 8, experts, q.rows, 2, 1, true);
        let (got, qgot) = (d.launch.gm_bytes(), q.launch.gm_bytes());
        println!(
            "dispatch T={tokens} H={hidden} K=8 E={experts} bf16 on {} blocks: {got} B vs minimal {min} B = {:.4}x; \
             int8: {qgot} B vs minimal {qmin} B = {:.4}x",
            d.launch.blocks,
            got as f64 / min as f64,
            qgot as f64 / qmin as f64
        );
        assert!(got as f64 <= 1.2 * min as f64 && got >= min);
        assert!(qgot as f64 <= 1.2 * qmin as f64 && qgot >= qmin);
        // x is read exactly once: all reads beyond it are ids and O(blocks x experts) histogram words.
        let reads = d.launch.outcome.total().gm_to_ub_bytes;
        let words = 4 * (tokens * 8 + 3 * (d.launch.blocks as usize + 1) * experts) as u64;
        assert!(
            reads >= (tokens * hidden * 2) as u64 && reads <= (tokens * hidden * 2) as u64 + words
        );
        // The codes halve the row bytes the dispatch writes (plus a 4-byte scale per row).
        let (w, qw) = (
            d.launch.outcome.total().ub_to_gm_bytes,
            q.launch.outcome.total().ub_to_gm_bytes,
        );
        let rows = d.rows as u64;
        assert_eq!(w - qw, rows * hidden as u64 - rows * 4);
    }
}

#[test]
fn combine_moves_close_to_the_minimum() {
    let (hidden, experts) = (7168, 256);
    for (tokens, extras) in [(1usize, false), (64, true), (512, true)] {
        let active = (tokens == 64).then_some(0..32);
        let ids = deepseek_ids(tokens, active.clone());
        let ids = Array2::from_shape_vec((tokens, 8), ids).unwrap();
        let empty = Array2::<f16>::default((tokens, 0));
        let plan = moe::moe_init_routing(
            empty.view(),
            ids.view(),
            experts,
            active,
            ExpertTokensMode::Count,
        )
        .unwrap();
        let rows = plan.expert_tokens.sum() as usize;
        let mut rng = CaseRng::new(0xC0 + tokens as u64);
        let y: Vec<f16> = rng.uniform::<f16, _>(rows * hidden, -1.0, 1.0).to_vec();
        let w: Vec<f32> = rng.uniform::<f32, _>(tokens * 8, 0.0, 1.0).to_vec();
        let extra: Vec<f16> = rng.uniform::<f16, _>(tokens * hidden, -1.0, 1.0).to_vec();
        let e = extras.then_some(extra.as_slice());
        let (_, launch) = B2
            .finalize(
                &y,
                rows,
                hidden,
                &plan.expanded_row_idx.to_vec(),
                &w,
                tokens,
                8,
                e,
                e,
            )
            .unwrap();
        let min = combine_minimal_bytes(tokens, hidden, 8, rows, if extras { 2 } else { 0 }, 2);
        let got = launch.gm_bytes();
        println!(
            "combine T={tokens} H={hidden} K=8 f16 ({rows} rows named, shared+residual={extras}) on {} blocks: \
             {got} B vs minimal {min} B = {:.4}x",
            launch.blocks,
            got as f64 / min as f64
        );
        // Every named row is read once and nothing else is moved: exactly the minimum.
        assert_eq!(got, min);
    }
}

#[test]
fn a_hot_expert_uses_every_cube_core_and_empty_experts_cost_nothing() {
    // 256 rows, all in group 5 of 16, times [512, 64] weights, on 24 cube cores.
    let (rows, groups, n, k) = (256, 16, 512, 64);
    let mut rng = CaseRng::new(0x407);
    let x: Vec<f16> = rng.uniform::<f16, _>(rows * k, -1.0, 1.0).to_vec();
    let w: Vec<f16> = rng.uniform::<f16, _>(groups * n * k, -0.1, 0.1).to_vec();
    let mut counts = vec![0i64; groups];
    counts[5] = rows as i64;
    let (y, hot) = B2
        .grouped_matmul(&x, rows, k, &w, groups, n, &counts, MoeList::Count)
        .unwrap();
    assert_eq!(hot.blocks, 24);
    let per_block: Vec<u64> = hot.outcome.counters.iter().map(|c| c.cube_macs).collect();
    assert!(
        per_block.iter().all(|&m| m > 0),
        "idle cube cores: {per_block:?}"
    );
    assert_eq!(per_block.iter().sum::<u64>(), (rows * n * k) as u64);
    println!("hot expert: multiply-adds per cube core {per_block:?}");
    // The same rows against expert 5's weights alone: the 15 empty experts changed nothing — same
    // output, same work and traffic on every block.
    let w5 = &w[5 * n * k..6 * n * k];
    let (y1, alone) = B2
        .grouped_matmul(&x, rows, k, w5, 1, n, &[rows as i64], MoeList::Count)
        .unwrap();
    assert_eq!(y, y1);
    // Traffic and work only: the cycle model (the `reserved` words) does charge the scalar reads of the
    // longer group list, and the L2 model's HBM counts depend on where the weights sit relative to its
    // 512-byte lines (expert 5's rows inside `w` and in its own buffer start at different offsets in a
    // line), not on the empty experts.
    let traffic = |cs: &[common::Counters]| -> Vec<common::Counters> {
        cs.iter()
            .map(|c| common::Counters {
                reserved: [0; 2],
                hbm_read_bytes: 0,
                hbm_write_bytes: 0,
                ..*c
            })
            .collect()
    };
    assert_eq!(
        traffic(&hot.outcome.counters),
        traffic(&alone.outcome.counters)
    );

    // The fused FFN too: both phases give every core work.
    let (hidden, inter) = (512, 384);
    let ffn = random_ffn_on_b2(&mut rng, rows, groups, hidden, inter, &counts, rows);
    let macs: Vec<u64> = ffn.outcome.counters.iter().map(|c| c.cube_macs).collect();
    assert!(macs.iter().all(|&m| m > 0), "idle cube cores: {macs:?}");
    assert_eq!(macs.iter().sum::<u64>(), (3 * rows * hidden * inter) as u64);
}

#[test]
fn expert_ffn_reads_a_groups_rows_once_per_task_when_rows_are_spread() {
    // 8 experts with 16 rows each (a decode batch of 16 spread over the rank's experts) on 24 cube cores:
    // the kernel cuts each phase's columns into 3 tiles per expert (8 x 3 = 24 tasks), 176 columns of
    // the 512 intermediate ones and 352 of the 1024 hidden ones. Not knowing how many rows one expert
    // may get, the tiling takes 128-row tiles, whose bases are 256 columns wide, so a task streams its
    // rows once per gate or up product (176 <= 256) and twice for down (352 > 256).
    // (The tiling fixed on the host, as expert_ffn_fp8 keeps it, cuts 64-column tiles for a hot
    // expert's sake and reads x 8 x 2 x 8 times.)
    spread_experts_read_their_rows(128, 2);
}

#[test]
fn expert_ffn_reads_a_tasks_rows_once_when_groups_are_bounded_by_the_tokens() {
    // The same, tiled knowing that no expert gets more than 16 rows (top-k routing of 16 tokens to
    // distinct experts): 16-row tiles, whose bases are as wide as L0A/L0B hold at 16 rows (512 columns
    // for gate and up, 1024 for down), so a task streams its rows once for down too.
    spread_experts_read_their_rows(16, 1);
    // A group beyond the bound (all 128 rows in one expert) is still computed, in 16-row tiles, each
    // reading that expert's weights: correct, only slower.
    let (rows, groups, hidden, inter) = (128usize, 8usize, 1024usize, 512usize);
    let mut hot = vec![0i64; groups];
    hot[3] = rows as i64;
    let ffn = random_ffn_on_b2(&mut CaseRng::new(7), rows, groups, hidden, inter, &hot, 16);
    let macs: u64 = ffn.outcome.counters.iter().map(|c| c.cube_macs).sum();
    assert_eq!(macs, (3 * rows * hidden * inter) as u64);
    let expert_weights = (3 * inter * hidden * 2) as u64;
    assert!(ffn.outcome.total().gm_to_ub_bytes >= 8 * expert_weights);
}

/// 8 experts x 16 rows, hidden 1024, intermediate 512 on the 910B2's 24 cube cores, tiled for groups of
/// at most `max_group_rows` rows: the bytes read and written equal a by-hand count, with each down task
/// streaming its 16 rows of h `down_bases` times. By hand, bytes read:
///   gate + up weights 8 x 2 x 512 x 1024 x 2, down weights 8 x 1024 x 512 x 2 (once each: 16 rows are
///   one tile of rows);
///   x: 8 experts x 3 tasks x 2 products x 16 x 1024 x 2; h: 8 x 3 tasks x down_bases x 16 x 512 x 2;
///   the SwiGLU's f32 gate and up: 2 x 128 x 512 x 4.
/// Written: gate and up f32 2 x 128 x 512 x 4, h 128 x 512 x 2, y 128 x 1024 x 2.
fn spread_experts_read_their_rows(max_group_rows: usize, down_bases: usize) {
    let (rows, groups, hidden, inter) = (128usize, 8usize, 1024usize, 512usize);
    let counts = vec![16i64; groups];
    let ffn = random_ffn_on_b2(
        &mut CaseRng::new(0x5eed),
        rows,
        groups,
        hidden,
        inter,
        &counts,
        max_group_rows,
    );
    let c = ffn.outcome.total();
    let weights = (groups * 2 * inter * hidden * 2 + groups * hidden * inter * 2) as u64;
    let x_reads = (groups * 3 * 2 * 16 * hidden * 2) as u64;
    let h_reads = (groups * 3 * down_bases * 16 * inter * 2) as u64;
    let f32_tiles = (2 * rows * inter * 4) as u64;
    println!(
        "expert_ffn 8 x 16 rows, at most {max_group_rows} per expert: read {} bytes, written {}",
        c.gm_to_ub_bytes, c.ub_to_gm_bytes
    );
    assert_eq!(c.gm_to_ub_bytes, weights + x_reads + h_reads + f32_tiles);
    assert_eq!(
        c.ub_to_gm_bytes,
        f32_tiles + (rows * inter * 2 + rows * hidden * 2) as u64
    );
    let macs: Vec<u64> = ffn.outcome.counters.iter().map(|c| c.cube_macs).collect();
    assert!(macs.iter().all(|&m| m > 0), "idle cube cores: {macs:?}");
}

/// `expert_ffn` (f16, gate = up) on the 910B2 budget with random x and weights, tiled for groups of at
/// most `max_group_rows` rows: its launch.
fn random_ffn_on_b2(
    rng: &mut CaseRng,
    rows: usize,
    groups: usize,
    hidden: usize,
    inter: usize,
    counts: &[i64],
    max_group_rows: usize,
) -> moe_common::Launch {
    let x: Vec<f16> = rng.uniform::<f16, _>(rows * hidden, -1.0, 1.0).to_vec();
    let wg: Vec<f16> = rng
        .uniform::<f16, _>(groups * inter * hidden, -0.05, 0.05)
        .to_vec();
    let wd: Vec<f16> = rng
        .uniform::<f16, _>(groups * hidden * inter, -0.05, 0.05)
        .to_vec();
    B2.expert_ffn(
        &x,
        rows,
        hidden,
        &wg,
        &wg,
        &wd,
        groups,
        inter,
        counts,
        MoeList::Count,
        max_group_rows,
    )
    .unwrap()
    .1
}

#[test]
fn expert_ffn_cuts_narrow_columns_into_fractals_for_a_hot_expert() {
    // 64 rows, all in expert 0 of 2, intermediate 32 and hidden 48 on 24 cube cores: 16-row m-tiles
    // (4 of them), and at most one 16-column fractal per tile, so phase 1 can make 4 x 2 = 8 tasks and
    // phase 2 4 x 3 = 12, each on a block of its own (the launch has 15: every task count the groups
    // could need), so at least 12 blocks get work (the whole-width tiles would give 4 and 4).
    let (rows, groups, hidden, inter) = (64usize, 2usize, 48usize, 32usize);
    let counts = vec![rows as i64, 0];
    let ffn = random_ffn_on_b2(
        &mut CaseRng::new(0x40),
        rows,
        groups,
        hidden,
        inter,
        &counts,
        rows,
    );
    let busy = ffn
        .outcome
        .counters
        .iter()
        .filter(|c| c.cube_macs > 0)
        .count();
    assert_eq!(ffn.blocks, 15);
    assert!(busy >= 12, "{busy} busy blocks: {:?}", ffn.outcome.counters);
    let macs: u64 = ffn.outcome.counters.iter().map(|c| c.cube_macs).sum();
    assert_eq!(macs, (3 * rows * hidden * inter) as u64);
}
