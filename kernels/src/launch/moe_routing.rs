//! Launchers of `moe_init_routing_<t>` and `moe_init_routing_quant_<t>` (dispatch,
//! `src/ascendc/moe_init_routing.cpp`).
//!
//! The kernels take exactly their tiling's `block_dim()` blocks, all resident at once (they meet at
//! `SyncAll`), and a device workspace of one expert histogram per block; the launchers allocate it from
//! the stream's pool (returned in stream order when the launch is queued).

use std::ops::Range;

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, MoeInitRoutingTiling, MoeList, Result};

/// The shape of a dispatch: `x [tokens, hidden]`, `ids [tokens, top_k]` over `experts` experts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingShape {
    pub tokens: usize,
    pub hidden: usize,
    pub top_k: usize,
    pub experts: usize,
    /// The experts dispatched (expert parallelism); `None` = all.
    pub active: Option<Range<usize>>,
    /// The form of `expert_tokens`.
    pub mode: MoeList,
}

impl RoutingShape {
    /// Pairs `tokens * top_k`: the rows `expanded_x` must have room for.
    pub fn pairs(&self) -> Result<usize> {
        product(KERNEL, "tokens * top_k", self.tokens, self.top_k)
    }

    fn tiling(
        &self,
        lib: &KernelLibrary,
        quant: bool,
        dtype: crate::KernelDtype,
    ) -> Result<MoeInitRoutingTiling> {
        MoeInitRoutingTiling::new(
            self.tokens as u64,
            self.hidden as u64,
            self.top_k as u64,
            self.experts as u64,
            self.active.as_ref().map(|r| r.start as u64..r.end as u64),
            self.mode,
            quant,
            dtype,
            lib.hardware().vector,
        )
    }

    /// Checks the buffers every dispatch has: x, ids, expanded_x (as `expanded` elements per pair
    /// row), expanded_row_idx and expert_tokens.
    fn check(
        &self,
        k: &'static str,
        x: usize,
        ids: usize,
        expanded: usize,
        row_idx: usize,
        expert_tokens: usize,
    ) -> Result<usize> {
        let pairs = self.pairs()?;
        expect_len(
            k,
            "x",
            x,
            product(k, "tokens * hidden", self.tokens, self.hidden)?,
        )?;
        expect_len(k, "ids", ids, pairs)?;
        expect_len(
            k,
            "expanded_x",
            expanded,
            product(k, "pairs * hidden", pairs, self.hidden)?,
        )?;
        expect_len(k, "expanded_row_idx", row_idx, pairs)?;
        expect_len(k, "expert_tokens", expert_tokens, self.experts)?;
        Ok(pairs)
    }
}

const KERNEL: &str = "moe_init_routing";

/// Dispatch: sorts the `(token, k)` pairs stably by expert and copies `x[t]` to row
/// `expanded_row_idx[t*K+k]` of `expanded_x` (room for every pair, `[tokens * top_k, hidden]`; the first
/// R rows are written, R = pairs whose expert is active); a pair outside the active range gets index -1.
/// `expert_tokens [experts]` receives the rows per expert (0 outside the range) as counts or inclusive
/// cumulative sums. dsnpu-ops' `moe_init_routing` is the contract.
///
/// Expert ids live on the device and are not checked here: one outside `0..experts` (or the active
/// range) is dropped like an inactive one, never used as an address.
#[allow(clippy::too_many_arguments)]
pub fn moe_init_routing<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    ids: &DeviceBuffer<i32>,
    expanded_x: &mut DeviceBuffer<T>,
    expanded_row_idx: &mut DeviceBuffer<i32>,
    expert_tokens: &mut DeviceBuffer<i64>,
    shape: &RoutingShape,
) -> Result<Launched<MoeInitRoutingTiling>> {
    const K: &str = KERNEL;
    let tiling = shape.tiling(lib, false, T::DTYPE)?;
    shape.check(
        K,
        x.len(),
        ids.len(),
        expanded_x.len(),
        expanded_row_idx.len(),
        expert_tokens.len(),
    )?;
    let symbol = Kernel::MoeInitRouting.symbol(T::DTYPE);
    let f = lib.function(Kernel::MoeInitRouting, T::DTYPE)?;
    let mut workspace = stream
        .alloc::<u8>(tiling.workspace_bytes() as usize)
        .map_err(|e| device_error(symbol, e))?;
    let blocks = tiling.block_dim();
    // SAFETY: moe_init_routing_<t>(x, ids, expanded_x, expanded_row_idx, expert_tokens, workspace,
    // tiling); x holds tokens x hidden elements of T, ids and expanded_row_idx tokens x top_k i32,
    // expanded_x tokens x top_k x hidden elements of T, expert_tokens `experts` i64 (checked above),
    // the sizes the kernel gives its GlobalTensors, and the workspace the tiling's workspace_bytes()
    // (its histograms). Rows are written at indices the kernel computes from its own counts (below the
    // number of active pairs), never from unchecked ids. The kernel meets at SyncAll and gets exactly
    // block_dim() blocks, as its tiling requires. Written: expanded_x, expanded_row_idx, expert_tokens
    // and the workspace, all passed with arg_mut.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(ids)
            .arg_mut(expanded_x)
            .arg_mut(expanded_row_idx)
            .arg_mut(expert_tokens)
            .arg_mut(&mut workspace)
            .tiling(&tiling)
            .launch(blocks)
    }
    .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}

/// Dispatch with per-token dynamic int8 quantization (dsnpu-ops' `moe_init_routing_quant`): as
/// [`moe_init_routing`], with the int8 codes of `x[t]` in `expanded_x` and their dequantization scale
/// in `scales [tokens * top_k]` (the first R written).
#[allow(clippy::too_many_arguments)]
pub fn moe_init_routing_quant<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    ids: &DeviceBuffer<i32>,
    expanded_x: &mut DeviceBuffer<i8>,
    scales: &mut DeviceBuffer<f32>,
    expanded_row_idx: &mut DeviceBuffer<i32>,
    expert_tokens: &mut DeviceBuffer<i64>,
    shape: &RoutingShape,
) -> Result<Launched<MoeInitRoutingTiling>> {
    const K: &str = "moe_init_routing_quant";
    let tiling = shape.tiling(lib, true, T::DTYPE)?;
    let pairs = shape.check(
        K,
        x.len(),
        ids.len(),
        expanded_x.len(),
        expanded_row_idx.len(),
        expert_tokens.len(),
    )?;
    expect_len(K, "scales", scales.len(), pairs)?;
    let symbol = Kernel::MoeInitRoutingQuant.symbol(T::DTYPE);
    let f = lib.function(Kernel::MoeInitRoutingQuant, T::DTYPE)?;
    let mut workspace = stream
        .alloc::<u8>(tiling.workspace_bytes() as usize)
        .map_err(|e| device_error(symbol, e))?;
    let blocks = tiling.block_dim();
    // SAFETY: moe_init_routing_quant_<t>(x, ids, expanded_x, scales, expanded_row_idx, expert_tokens,
    // workspace, tiling); as in moe_init_routing, with expanded_x tokens x top_k x hidden int8 and
    // scales tokens x top_k f32 (checked above), written at the same kernel-computed rows; every
    // written buffer is passed with arg_mut; exactly block_dim() blocks for its SyncAll.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(ids)
            .arg_mut(expanded_x)
            .arg_mut(scales)
            .arg_mut(expanded_row_idx)
            .arg_mut(expert_tokens)
            .arg_mut(&mut workspace)
            .tiling(&tiling)
            .launch(blocks)
    }
    .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}
