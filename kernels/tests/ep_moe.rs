//! Expert-parallel MoE across processes: this test binary spawns copies of itself, one rank per
//! process and virtual device. Every rank dispatches its tokens, runs its local experts' FFN on the
//! device and combines; the result must equal the single-device MoE layer on the same tokens, ids and
//! weights (dsnpu-ops' CPU reference of init routing → expert FFN over all experts → finalize), within
//! the MoE suite's tolerance. Ids include a hot expert (every token picks expert 1), a rank no token
//! routes to (the last), and, from 4 ranks on, a rank with no tokens (rank 1).
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use dsnpu_kernels::ep::{ep_combine, ep_dispatch, EpConfig, ExpandX};
use dsnpu_kernels::launch::{expert_ffn, FfnShape, GroupList, KernelLibrary};
use dsnpu_kernels::MoeList;
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::half::bf16;
use dsnpu_ops::moe::{self, ExpertTokensMode, GroupListType};
use dsnpu_ops::ndarray::{s, Array2, Array3};
use dsnpu_runtime::{Communicator, Device, RootInfo};

const H: usize = 64;
const INTER: usize = 16;
const K: usize = 3;
/// Experts per rank.
const L: usize = 4;

fn run(world: u32, scenario: &str) {
    let dir = std::env::temp_dir().join(format!(
        "dsnpu-ep-test-{scenario}-{world}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let children: Vec<_> = (0..world)
        .map(|r| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "ep_rank",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("DSNPU_TEST_RANK", r.to_string())
                .env("DSNPU_TEST_WORLD", world.to_string())
                .env("DSNPU_TEST_SCENARIO", scenario)
                .env("DSNPU_TEST_ROOT_FILE", dir.join("root"))
                .env("DSNPU_SIM_DEVICES", "1")
                .env("DSNPU_SIM_MEM_BYTES", "256M")
                .env("DSNPU_SIM_HCCL_TIMEOUT_MS", "20000")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("EP RANK DONE"),
            "rank {r} of {world}:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ep_matches_the_single_device_layer_on_2_ranks() {
    run(2, "layer");
}

#[test]
fn ep_matches_the_single_device_layer_on_4_ranks() {
    run(4, "layer");
}

#[test]
fn ep_matches_the_single_device_layer_on_8_ranks() {
    run(8, "layer");
}

#[test]
fn int8_dispatch_sends_the_reference_codes_and_scales() {
    run(2, "quant");
}

// ---------------------------------------------------------------------------------------------
// One rank.

fn tokens_of(rank: usize, world: usize) -> usize {
    if rank == 1 && world >= 4 {
        0
    } else {
        3 + rank
    }
}

/// Rank `rank`'s tokens, ids and weights (any rank can recompute any other's).
fn inputs(rank: usize, world: usize) -> (Array2<bf16>, Array2<i32>, Array2<f32>) {
    let t = tokens_of(rank, world);
    let mut rng = CaseRng::new(1000 + rank as u64);
    let x: Array2<bf16> = rng.uniform((t, H), -1.0, 1.0);
    // Expert 1 in every token; the others drawn from the experts of every rank but the last.
    let usable = L * (world - 1);
    let mut ids = Array2::<i32>::zeros((t, K));
    for tok in 0..t {
        let mut row = vec![1i32];
        while row.len() < K.min(usable) {
            let e = rng.usize_in(0, usable - 1) as i32;
            if !row.contains(&e) {
                row.push(e);
            }
        }
        for (j, e) in row.into_iter().enumerate() {
            ids[[tok, j]] = e;
        }
    }
    let w: Array2<f32> = rng.uniform((t, K), 0.1, 1.0);
    (x, ids, w)
}

fn weights(experts: usize) -> (Array3<bf16>, Array3<bf16>, Array3<bf16>) {
    let mut rng = CaseRng::new(77);
    let sc = 1.0 / (H as f32).sqrt();
    let sd = 1.0 / (INTER as f32).sqrt();
    (
        rng.uniform((experts, INTER, H), -sc, sc),
        rng.uniform((experts, INTER, H), -sc, sc),
        rng.uniform((experts, H, INTER), -sd, sd),
    )
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} unset: run by the EP tests"))
}

fn flat<T: Copy>(a: impl IntoIterator<Item = T>) -> Vec<T> {
    a.into_iter().collect()
}

#[test]
#[ignore = "one rank of the EP tests; they run it with its environment"]
fn ep_rank() {
    let rank: usize = env("DSNPU_TEST_RANK").parse().unwrap();
    let world: usize = env("DSNPU_TEST_WORLD").parse().unwrap();
    let root_file = PathBuf::from(env("DSNPU_TEST_ROOT_FILE"));
    let quant = env("DSNPU_TEST_SCENARIO") == "quant";
    let device = Device::new(0).unwrap();
    let stream = device.new_stream().unwrap();
    let root = if rank == 0 {
        let root = RootInfo::new().unwrap();
        root.write_file(&root_file).unwrap();
        root
    } else {
        RootInfo::wait_for_file(&root_file, Duration::from_secs(60)).unwrap()
    };
    let comm = Communicator::init_root(&root, world as u32, rank as u32, &stream).unwrap();
    let lib = KernelLibrary::get(&device).unwrap();
    let e_all = L * world;
    let cfg = EpConfig {
        moe_expert_num: e_all,
        top_k: K,
        hidden: H,
        quant,
    };
    let (x, ids, w) = inputs(rank, world);
    let t = x.nrows();
    let x_dev = stream.upload(&flat(x.iter().copied())).unwrap();
    let ids_dev = stream.upload(&flat(ids.iter().copied())).unwrap();
    let d = ep_dispatch(&lib, &comm, &x_dev, &ids_dev, &cfg).unwrap();
    // Sent once per (token, distinct destination rank).
    let distinct: u64 = ids
        .rows()
        .into_iter()
        .map(|r| {
            let mut ranks: Vec<i32> = r.iter().map(|&e| e / L as i32).collect();
            ranks.sort();
            ranks.dedup();
            ranks.len() as u64
        })
        .sum();
    assert_eq!(d.send_rows.iter().sum::<u64>(), distinct);
    // What this rank must compute: every pair of every rank whose expert is local, in (expert,
    // source rank, token) order.
    let mut want_idx = Vec::new();
    for e in rank * L..(rank + 1) * L {
        for s in 0..world {
            let (_, sids, _) = inputs(s, world);
            for (tok, row) in sids.rows().into_iter().enumerate() {
                if let Some(j) = row.iter().position(|&v| v == e as i32) {
                    want_idx.push([s as i32, tok as i32, j as i32]);
                }
            }
        }
    }
    assert_eq!(d.expand_idx, want_idx, "expand_idx");
    assert_eq!(d.rows, want_idx.len());
    if rank == world - 1 {
        assert_eq!(d.rows, 0, "no token routes to the last rank");
    }
    let counts = d.expert_token_nums.to_vec().unwrap();
    assert_eq!(counts.iter().sum::<i64>() as usize, d.rows);
    assert_eq!(*d.ep_recv_counts.last().unwrap() as usize, d.rows);
    if rank == 0 {
        let hot = (0..world).map(|s| tokens_of(s, world) as i64).sum::<i64>();
        assert_eq!(counts[1], hot, "the hot expert gets every token");
    }
    let rows_alloc = d.recv_rows.iter().sum::<u64>() as usize * K;
    match &d.expand_x {
        ExpandX::Int8 {
            x: ex,
            dynamic_scale,
        } => {
            let codes = ex.to_vec().unwrap();
            let scales = dynamic_scale.to_vec().unwrap();
            for (i, &[s, tok, _]) in d.expand_idx.iter().enumerate() {
                let (sx, _, _) = inputs(s as usize, world);
                let (want_codes, want_scale) = moe::quant::dynamic_quant_row(sx.row(tok as usize));
                assert_eq!(
                    &codes[i * H..(i + 1) * H],
                    want_codes.as_slice().unwrap(),
                    "row {i}"
                );
                assert_eq!(
                    scales[i].to_bits(),
                    want_scale.to_bits(),
                    "scale of row {i}"
                );
            }
        }
        ExpandX::Float(ex) => {
            let (wg, wu, wd) = weights(e_all);
            let local = |a: &Array3<bf16>| {
                flat(
                    a.slice(s![rank * L..(rank + 1) * L, .., ..])
                        .iter()
                        .copied(),
                )
            };
            let mut y = stream.alloc::<bf16>(rows_alloc * H).unwrap();
            if rows_alloc > 0 {
                let (g, u, dn) = (
                    stream.upload(&local(&wg)).unwrap(),
                    stream.upload(&local(&wu)).unwrap(),
                    stream.upload(&local(&wd)).unwrap(),
                );
                expert_ffn(
                    &lib,
                    &stream,
                    ex,
                    &g,
                    &u,
                    &dn,
                    GroupList::all(&d.expert_token_nums, MoeList::Count),
                    &mut y,
                    FfnShape {
                        rows: rows_alloc,
                        groups: L,
                        max_group_rows: rows_alloc,
                        hidden: H,
                        inter: INTER,
                    },
                )
                .unwrap();
            }
            let w_dev = stream.upload(&flat(w.iter().copied())).unwrap();
            let mut out = stream.alloc::<bf16>(t * H).unwrap();
            ep_combine(&lib, &comm, &d, &y, &w_dev, None, None, &mut out, &cfg).unwrap();
            stream.synchronize().unwrap();
            if t > 0 {
                let routed = moe::moe_init_routing(
                    x.view(),
                    ids.view(),
                    e_all,
                    None,
                    ExpertTokensMode::Count,
                )
                .unwrap();
                let ry = moe::expert_ffn(
                    routed.expanded_x.view(),
                    wg.view(),
                    wu.view(),
                    wd.view(),
                    routed.expert_tokens.view(),
                    GroupListType::Counts,
                )
                .unwrap();
                let want = moe::moe_finalize_routing(
                    ry.view(),
                    routed.expanded_row_idx.view(),
                    w.view(),
                    None,
                    None,
                )
                .unwrap();
                let got = Array2::from_shape_vec((t, H), out.to_vec().unwrap()).unwrap();
                assert_close(
                    "ep moe",
                    got.view(),
                    want.view(),
                    Tolerance::of::<bf16>().widened(2.0),
                );
            }
        }
    }
    let traffic = comm.traffic().unwrap();
    println!(
        "rank {rank}: sent {:?} received {:?}",
        traffic.sent, traffic.received
    );
    println!("EP RANK DONE");
}
