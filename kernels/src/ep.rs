//! Expert-parallel MoE dispatch and combine over HCCL, in the convention of torch_npu's
//! `npu_moe_distribute_dispatch` / `npu_moe_distribute_combine`.
//!
//! Placement: `moe_expert_num` experts contiguous over `ep_world_size` ranks, `L = E / W` per rank
//! (expert `e` lives on rank `e / L`). Each rank holds its own tokens `x [T, H]`, their top-k ids
//! `[T, K]` (global expert ids, distinct within a token) and weights `[T, K]`.
//!
//! **Dispatch** sends each token's hidden row **once to every rank holding at least one of its
//! experts** (deduplicated per rank, as DeepEP does), optionally as dynamic int8 with one f32 scale
//! per row. The steps, and where each runs:
//! 1. host: the per-pair destination ranks with repeats of a rank within a token dropped, the send
//!    counts, and one metadata row `[token, ids × K]` per sent row (AlltoAllV needs the counts on the
//!    host anyway; this is T×K integers);
//! 2. device: `moe_init_routing` (or `_quant`) on those rank ids packs the rows by destination rank;
//! 3. HCCL AlltoAllV: the counts (i32), the metadata (i32), the rows (and the scales);
//! 4. device (float rows): `moe_init_routing` on the received rows with their local expert ids expands
//!    them to one row per (row, local expert) pair, ordered by local expert, then source rank, then
//!    source token: `expand_x`. Int8 rows are expanded on the host (no int8 row-copy kernel yet).
//!
//! Outputs: `expand_x [Rr·K, H]` (first `A` rows written, `A` = pairs this rank computes),
//! `dynamic_scale [A]` (int8 only), `expand_idx [A, 3]` = (source rank, source token, k) of each row,
//! `expert_token_nums [L + 1]` (rows per local expert, counts; the last entry is always 0, a grouped
//! matmul takes the first `L`), `ep_recv_counts [L × W]` (inclusive cumulative rows in (local expert,
//! source rank) order).
//!
//! **Combine** sends each expert output row back to its token's rank (device pack by source rank with
//! `moe_init_routing`, then AlltoAllV), where `moe_finalize_routing` applies the top-k weights:
//! `out[t] = Σ_k w[t,k] · y_k(t) (+ shared[t]) (+ residual[t])`, as the single-device layer does.
//!
//! Validated: shapes, that `E` divides over the ranks, ids in `0..E` and distinct within a token (on
//! the host copy), buffers on the communicator's device. Trusted: that every rank calls dispatch and
//! combine in the same order with the same `E`, `K`, `H` (HCCL reports count mismatches).
use dsnpu_runtime::{Communicator, DeviceBuffer, HcclElem, Stream};

use crate::launch::{
    device_error, moe_finalize_routing, moe_init_routing, moe_init_routing_quant, CombineShape,
    KernelElem, KernelLibrary, RoutingShape,
};
use crate::{KernelError, MoeList, Result};

const DISPATCH: &str = "ep_dispatch";
const COMBINE: &str = "ep_combine";

fn invalid(kernel: &'static str, reason: impl Into<String>) -> KernelError {
    KernelError::InvalidShape {
        kernel,
        reason: reason.into(),
    }
}

/// The expert-parallel group of one MoE layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpConfig {
    /// `E`: routed experts over all ranks.
    pub moe_expert_num: usize,
    /// `K`: experts per token.
    pub top_k: usize,
    /// `H`.
    pub hidden: usize,
    /// Dynamic int8 quantization of the dispatched rows (`quant_mode = 2`).
    pub quant: bool,
}

impl EpConfig {
    /// Experts per rank `L`.
    pub fn local_experts(&self, world: usize) -> Result<usize> {
        if world == 0 || self.moe_expert_num == 0 || !self.moe_expert_num.is_multiple_of(world) {
            return Err(invalid(
                DISPATCH,
                format!(
                    "{} experts do not divide over {world} ranks",
                    self.moe_expert_num
                ),
            ));
        }
        Ok(self.moe_expert_num / world)
    }
}

/// The dispatched rows.
#[derive(Debug)]
pub enum ExpandX<T: KernelElem> {
    Float(DeviceBuffer<T>),
    Int8 {
        x: DeviceBuffer<i8>,
        /// `[A]`: the dequantization scale of each row.
        dynamic_scale: DeviceBuffer<f32>,
    },
}

/// What dispatch produced, and what combine needs to send the results back.
#[derive(Debug)]
pub struct Dispatched<T: KernelElem> {
    /// `[Rr·K, H]`: the first `rows` rows are the pairs this rank computes.
    pub expand_x: ExpandX<T>,
    /// `A`: pairs this rank computes.
    pub rows: usize,
    /// `[A, 3]`: (source rank, source token, k) of each row of `expand_x`.
    pub expand_idx: Vec<[i32; 3]>,
    /// `[L + 1]` counts: rows per local expert (the last entry is 0).
    pub expert_token_nums: DeviceBuffer<i64>,
    /// `[L × W]`: inclusive cumulative rows in (local expert, source rank) order.
    pub ep_recv_counts: Vec<i64>,
    /// Rows this rank sent to each rank (one per token and destination rank).
    pub send_rows: Vec<u64>,
    /// Rows this rank received from each rank.
    pub recv_rows: Vec<u64>,
    plan: CombinePlan,
}

#[derive(Debug)]
struct CombinePlan {
    tokens: usize,
    /// `[Rr·K]`: the source rank of each expand row; `W` past row `A`.
    src_rank: DeviceBuffer<i32>,
    /// Expand rows going back to each rank.
    back_send: Vec<u64>,
    /// Pairs of this rank's tokens computed on each rank.
    back_recv: Vec<u64>,
    /// `[T·K]`: where each of this rank's pairs lands in the returned rows.
    finalize_idx: DeviceBuffer<i32>,
}

fn dev<T>(what: &'static str) -> impl Fn(T) -> KernelError
where
    T: Into<dsnpu_runtime::RuntimeError>,
{
    move |e| device_error(what, e.into())
}

fn upload<U: dsnpu_runtime::DeviceRepr>(stream: &Stream, v: &[U]) -> Result<DeviceBuffer<U>> {
    stream.upload(v).map_err(dev(DISPATCH))
}

/// Elements of `rows` rows of `width` each, per rank.
fn scaled(rows: &[u64], width: usize) -> Vec<u64> {
    rows.iter().map(|&r| r * width as u64).collect()
}

/// Dispatch (see the module docs). `x [T, H]` and `ids [T, K]` on the communicator's device; `ids`
/// is read back to the host once.
pub fn ep_dispatch<T: KernelElem + HcclElem>(
    lib: &KernelLibrary,
    comm: &Communicator,
    x: &DeviceBuffer<T>,
    ids: &DeviceBuffer<i32>,
    cfg: &EpConfig,
) -> Result<Dispatched<T>> {
    let stream = comm.stream();
    let (w, me) = (comm.size() as usize, comm.rank() as usize);
    let l = cfg.local_experts(w)?;
    let (k, h) = (cfg.top_k, cfg.hidden);
    if k == 0 || h == 0 {
        return Err(invalid(DISPATCH, "top_k and hidden must be at least 1"));
    }
    if !ids.len().is_multiple_of(k) || x.len() != ids.len() / k * h {
        return Err(invalid(
            DISPATCH,
            format!(
                "x has {} elements and ids {}: not [T, {h}] and [T, {k}]",
                x.len(),
                ids.len()
            ),
        ));
    }
    let tokens = ids.len() / k;
    let host_ids = ids.to_vec().map_err(dev(DISPATCH))?;
    for (t, row) in host_ids.chunks(k.max(1)).enumerate() {
        for (j, &e) in row.iter().enumerate() {
            if e < 0 || e as usize >= cfg.moe_expert_num {
                return Err(invalid(
                    DISPATCH,
                    format!("ids[{t},{j}] = {e} is not in 0..{}", cfg.moe_expert_num),
                ));
            }
            if row[..j].contains(&e) {
                return Err(invalid(
                    DISPATCH,
                    format!("token {t} names expert {e} twice"),
                ));
            }
        }
    }
    // 1. Destination ranks, each once per token; W marks a repeat (dropped by the routing kernel).
    let mut dest = vec![w as i32; tokens * k];
    let mut send_rows = vec![0u64; w];
    let mut meta_by_rank: Vec<Vec<i32>> = vec![Vec::new(); w];
    for t in 0..tokens {
        let row = &host_ids[t * k..(t + 1) * k];
        for j in 0..k {
            let r = row[j] as usize / l;
            if row[..j].iter().any(|&e| e as usize / l == r) {
                continue;
            }
            dest[t * k + j] = r as i32;
            send_rows[r] += 1;
            meta_by_rank[r].push(t as i32);
            meta_by_rank[r].extend_from_slice(row);
        }
    }
    let meta: Vec<i32> = meta_by_rank.concat();
    // 2. Pack the rows by destination rank on the device.
    let pairs = tokens * k;
    let shape = RoutingShape {
        tokens,
        hidden: h,
        top_k: k,
        experts: w + 1,
        active: Some(0..w),
        mode: MoeList::Count,
    };
    let dest_dev = upload(stream, &dest)?;
    let mut row_idx = stream.alloc::<i32>(pairs).map_err(dev(DISPATCH))?;
    let mut rank_tokens = stream.alloc::<i64>(w + 1).map_err(dev(DISPATCH))?;
    // 3. Counts, metadata, rows.
    let counts_out: Vec<i32> = send_rows.iter().map(|&c| c as i32).collect();
    let counts_send = upload(stream, &counts_out)?;
    let mut counts_recv = stream.alloc::<i32>(w).map_err(dev(DISPATCH))?;
    let ones = vec![1u64; w];
    comm.all_to_all_v(&counts_send, &ones, &mut counts_recv, &ones)
        .map_err(dev(DISPATCH))?;
    // A stream sync (not just the buffer's event) reports a failed exchange: a dead or mismatched
    // peer ends here with HCCL's error instead of stale counts.
    stream.synchronize().map_err(dev(DISPATCH))?;
    let recv_rows: Vec<u64> = counts_recv
        .to_vec()
        .map_err(dev(DISPATCH))?
        .into_iter()
        .map(|c| c.max(0) as u64)
        .collect();
    let rr: usize = recv_rows.iter().sum::<u64>() as usize;
    let meta_send = upload(stream, &meta)?;
    let mut meta_recv = stream.alloc::<i32>(rr * (k + 1)).map_err(dev(DISPATCH))?;
    comm.all_to_all_v(
        &meta_send,
        &scaled(&send_rows, k + 1),
        &mut meta_recv,
        &scaled(&recv_rows, k + 1),
    )
    .map_err(dev(DISPATCH))?;
    let (send_e, recv_e) = (scaled(&send_rows, h), scaled(&recv_rows, h));
    enum Received<T: KernelElem> {
        Float(DeviceBuffer<T>),
        Int8(DeviceBuffer<i8>, DeviceBuffer<f32>),
    }
    let received = if pairs == 0 {
        // Nothing to pack; the exchanges still run (every rank takes part).
        if cfg.quant {
            let (sx, ss) = (stream.alloc::<i8>(0), stream.alloc::<f32>(0));
            let (sx, ss) = (sx.map_err(dev(DISPATCH))?, ss.map_err(dev(DISPATCH))?);
            let mut rx = stream.alloc::<i8>(rr * h).map_err(dev(DISPATCH))?;
            let mut rs = stream.alloc::<f32>(rr).map_err(dev(DISPATCH))?;
            comm.all_to_all_v(&sx, &send_e, &mut rx, &recv_e)
                .map_err(dev(DISPATCH))?;
            comm.all_to_all_v(&ss, &send_rows, &mut rs, &recv_rows)
                .map_err(dev(DISPATCH))?;
            Received::Int8(rx, rs)
        } else {
            let sx = stream.alloc::<T>(0).map_err(dev(DISPATCH))?;
            let mut rx = stream.alloc::<T>(rr * h).map_err(dev(DISPATCH))?;
            comm.all_to_all_v(&sx, &send_e, &mut rx, &recv_e)
                .map_err(dev(DISPATCH))?;
            Received::Float(rx)
        }
    } else if cfg.quant {
        let mut packed = stream.alloc::<i8>(pairs * h).map_err(dev(DISPATCH))?;
        let mut scales = stream.alloc::<f32>(pairs).map_err(dev(DISPATCH))?;
        moe_init_routing_quant(
            lib,
            stream,
            x,
            &dest_dev,
            &mut packed,
            &mut scales,
            &mut row_idx,
            &mut rank_tokens,
            &shape,
        )?;
        let mut rx = stream.alloc::<i8>(rr * h).map_err(dev(DISPATCH))?;
        let mut rs = stream.alloc::<f32>(rr).map_err(dev(DISPATCH))?;
        comm.all_to_all_v(&packed, &send_e, &mut rx, &recv_e)
            .map_err(dev(DISPATCH))?;
        comm.all_to_all_v(&scales, &send_rows, &mut rs, &recv_rows)
            .map_err(dev(DISPATCH))?;
        Received::Int8(rx, rs)
    } else {
        let mut packed = stream.alloc::<T>(pairs * h).map_err(dev(DISPATCH))?;
        moe_init_routing(
            lib,
            stream,
            x,
            &dest_dev,
            &mut packed,
            &mut row_idx,
            &mut rank_tokens,
            &shape,
        )?;
        let mut rx = stream.alloc::<T>(rr * h).map_err(dev(DISPATCH))?;
        comm.all_to_all_v(&packed, &send_e, &mut rx, &recv_e)
            .map_err(dev(DISPATCH))?;
        Received::Float(rx)
    };
    // 4. Expand: one row per (received row, local expert), ordered by local expert (stable).
    stream.synchronize().map_err(dev(DISPATCH))?;
    let meta_host = meta_recv.to_vec().map_err(dev(DISPATCH))?;
    let mut src_of_row = Vec::with_capacity(rr);
    for (s, &c) in recv_rows.iter().enumerate() {
        src_of_row.extend(std::iter::repeat_n(s as i32, c as usize));
    }
    let first = (me * l) as i32;
    let mut local_ids = vec![l as i32; rr * k];
    let mut per_expert: Vec<Vec<(usize, usize)>> = vec![Vec::new(); l];
    for row in 0..rr {
        let m = &meta_host[row * (k + 1)..(row + 1) * (k + 1)];
        for j in 0..k {
            let e = m[1 + j];
            if e >= first && e < first + l as i32 {
                local_ids[row * k + j] = e - first;
                per_expert[(e - first) as usize].push((row, j));
            }
        }
    }
    let order: Vec<(usize, usize)> = per_expert.concat();
    let a = order.len();
    let expand_idx: Vec<[i32; 3]> = order
        .iter()
        .map(|&(row, j)| [src_of_row[row], meta_host[row * (k + 1)], j as i32])
        .collect();
    let mut ep_recv_counts = Vec::with_capacity(l * w);
    let mut acc = 0i64;
    for rows in &per_expert {
        for s in 0..w as i32 {
            acc += rows
                .iter()
                .filter(|&&(row, _)| src_of_row[row] == s)
                .count() as i64;
            ep_recv_counts.push(acc);
        }
    }
    let mut counts = vec![0i64; l + 1];
    for (e, rows) in per_expert.iter().enumerate() {
        counts[e] = rows.len() as i64;
    }
    let expand_rows = rr * k;
    let (expand_x, expert_token_nums) = match received {
        Received::Float(rx) if rr > 0 => {
            let mut ex = stream.alloc::<T>(expand_rows * h).map_err(dev(DISPATCH))?;
            let mut eidx = stream.alloc::<i32>(expand_rows).map_err(dev(DISPATCH))?;
            let mut etok = stream.alloc::<i64>(l + 1).map_err(dev(DISPATCH))?;
            let lid = upload(stream, &local_ids)?;
            let shape = RoutingShape {
                tokens: rr,
                hidden: h,
                top_k: k,
                experts: l + 1,
                active: Some(0..l),
                mode: MoeList::Count,
            };
            moe_init_routing(
                lib, stream, &rx, &lid, &mut ex, &mut eidx, &mut etok, &shape,
            )?;
            (ExpandX::Float(ex), etok)
        }
        Received::Float(_) => (
            ExpandX::Float(stream.alloc::<T>(0).map_err(dev(DISPATCH))?),
            upload(stream, &counts)?,
        ),
        Received::Int8(rx, rs) => {
            let (hx, hs) = (
                rx.to_vec().map_err(dev(DISPATCH))?,
                rs.to_vec().map_err(dev(DISPATCH))?,
            );
            let mut ex = vec![0i8; expand_rows * h];
            let mut es = vec![0f32; a];
            for (i, &(row, _)) in order.iter().enumerate() {
                ex[i * h..(i + 1) * h].copy_from_slice(&hx[row * h..(row + 1) * h]);
                es[i] = hs[row];
            }
            let x = upload(stream, &ex)?;
            let dynamic_scale = upload(stream, &es)?;
            (ExpandX::Int8 { x, dynamic_scale }, upload(stream, &counts)?)
        }
    };
    // Combine's plan: source rank per expand row, and where each own pair comes back.
    let mut src_rank = vec![w as i32; expand_rows];
    let mut back_send = vec![0u64; w];
    for (i, &(row, _)) in order.iter().enumerate() {
        src_rank[i] = src_of_row[row];
        back_send[src_of_row[row] as usize] += 1;
    }
    // Rank j returns this rank's pairs (t, k) with expert e on j, ordered by (e, t).
    let mut by_rank: Vec<Vec<(i32, usize, usize)>> = vec![Vec::new(); w];
    for t in 0..tokens {
        for j in 0..k {
            let e = host_ids[t * k + j];
            by_rank[e as usize / l].push((e, t, j));
        }
    }
    let mut finalize_idx = vec![-1i32; pairs];
    let mut back_recv = vec![0u64; w];
    let mut base = 0usize;
    for (r, list) in by_rank.iter_mut().enumerate() {
        list.sort();
        for (pos, &(_, t, j)) in list.iter().enumerate() {
            finalize_idx[t * k + j] = (base + pos) as i32;
        }
        back_recv[r] = list.len() as u64;
        base += list.len();
    }
    Ok(Dispatched {
        expand_x,
        rows: a,
        expand_idx,
        expert_token_nums,
        ep_recv_counts,
        send_rows,
        recv_rows,
        plan: CombinePlan {
            tokens,
            src_rank: upload(stream, &src_rank)?,
            back_send,
            back_recv,
            finalize_idx: upload(stream, &finalize_idx)?,
        },
    })
}

/// Combine (see the module docs): `y [Rr·K, H]` holds the expert outputs of `d.expand_x`'s rows (the
/// first `d.rows` are read); `weights [T, K]` f32 are this rank's tokens' top-k weights; `out [T, H]`.
#[allow(clippy::too_many_arguments)]
pub fn ep_combine<T: KernelElem + HcclElem>(
    lib: &KernelLibrary,
    comm: &Communicator,
    d: &Dispatched<T>,
    y: &DeviceBuffer<T>,
    weights: &DeviceBuffer<f32>,
    shared: Option<&DeviceBuffer<T>>,
    residual: Option<&DeviceBuffer<T>>,
    out: &mut DeviceBuffer<T>,
    cfg: &EpConfig,
) -> Result<()> {
    let stream = comm.stream();
    let (w, k, h) = (comm.size() as usize, cfg.top_k, cfg.hidden);
    let p = &d.plan;
    let expand_rows = p.src_rank.len();
    if y.len() != expand_rows * h {
        return Err(KernelError::BufferLength {
            kernel: COMBINE,
            arg: "y",
            expected: expand_rows * h,
            actual: y.len(),
        });
    }
    // Pack the expert outputs by source rank (stable: (local expert, token) order within a rank).
    let (send_e, recv_e) = (scaled(&p.back_send, h), scaled(&p.back_recv, h));
    let pairs = p.tokens * k;
    let mut back = stream.alloc::<T>(pairs * h).map_err(dev(COMBINE))?;
    if expand_rows > 0 {
        let mut packed = stream.alloc::<T>(expand_rows * h).map_err(dev(COMBINE))?;
        let mut idx = stream.alloc::<i32>(expand_rows).map_err(dev(COMBINE))?;
        let mut per_rank = stream.alloc::<i64>(w + 1).map_err(dev(COMBINE))?;
        let shape = RoutingShape {
            tokens: expand_rows,
            hidden: h,
            top_k: 1,
            experts: w + 1,
            active: Some(0..w),
            mode: MoeList::Count,
        };
        moe_init_routing(
            lib,
            stream,
            y,
            &p.src_rank,
            &mut packed,
            &mut idx,
            &mut per_rank,
            &shape,
        )?;
        comm.all_to_all_v(&packed, &send_e, &mut back, &recv_e)
            .map_err(dev(COMBINE))?;
    } else {
        let empty = stream.alloc::<T>(0).map_err(dev(COMBINE))?;
        comm.all_to_all_v(&empty, &send_e, &mut back, &recv_e)
            .map_err(dev(COMBINE))?;
    }
    if p.tokens == 0 {
        return Ok(());
    }
    moe_finalize_routing(
        lib,
        stream,
        &back,
        &p.finalize_idx,
        weights,
        shared,
        residual,
        out,
        CombineShape {
            tokens: p.tokens,
            hidden: h,
            top_k: k,
            rows: pairs,
        },
    )?;
    Ok(())
}
