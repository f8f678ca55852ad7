//! Launcher of `moe_gating_topk_<t>` (`src/ascendc/moe_gating_topk.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::tiling::invalid;
use crate::{GatingParams, Kernel, MoeGatingTiling, Result};

/// Routes `tokens` rows of `logits [tokens, experts]`: writes the `p.top_k` chosen expert ids of each
/// token (descending selection score, ties to the lower expert) to `ids` and their weights to `weights`
/// (both `[tokens, top_k]`), as dsnpu-ops' `moe_gating_topk` defines them. `bias` is the f32 correction
/// bias `[experts]` (selection only); `p.has_bias` must say whether one is given.
///
/// Shapes the kernel cannot take (more than 512 experts, top-k above 16, groups that do not divide the
/// experts, ...) are [`crate::KernelError::InvalidShape`]. The logits are not checked for NaN (a NaN
/// gives unspecified ids within `0..experts`, never an access outside the buffers).
#[allow(clippy::too_many_arguments)]
pub fn moe_gating_topk<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    logits: &DeviceBuffer<T>,
    bias: Option<&DeviceBuffer<f32>>,
    ids: &mut DeviceBuffer<i32>,
    weights: &mut DeviceBuffer<f32>,
    tokens: usize,
    experts: usize,
    p: &GatingParams,
) -> Result<Launched<MoeGatingTiling>> {
    const K: &str = "moe_gating_topk";
    if p.has_bias != bias.is_some() {
        return Err(invalid(
            K,
            format!(
                "has_bias is {} but a bias is {}",
                p.has_bias,
                if bias.is_some() { "given" } else { "missing" }
            ),
        ));
    }
    let tiling = MoeGatingTiling::new(
        tokens as u64,
        experts as u64,
        p,
        T::DTYPE,
        lib.hardware().vector,
    )?;
    expect_len(
        K,
        "logits",
        logits.len(),
        product(K, "tokens * experts", tokens, experts)?,
    )?;
    let pairs = product(K, "tokens * top_k", tokens, p.top_k as usize)?;
    expect_len(K, "ids", ids.len(), pairs)?;
    expect_len(K, "weights", weights.len(), pairs)?;
    if let Some(b) = bias {
        expect_len(K, "bias", b.len(), experts)?;
    }
    let symbol = Kernel::MoeGatingTopK.symbol(T::DTYPE);
    let f = lib.function(Kernel::MoeGatingTopK, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: moe_gating_topk_<t>(logits, bias, ids, weights, workspace, tiling) with T the kernel's
    // element type; logits hold tokens x experts elements of T, bias (passed exactly when has_bias is
    // set) experts f32, ids and weights tokens x top_k i32 / f32 (checked above): the sizes the kernel
    // gives its GlobalTensors. Block b reads and writes only the rows of its tokens_per_block tokens,
    // clipped to `tokens`. Only ids and weights are written (arg_mut); the workspace is unused.
    unsafe {
        let mut args = f.builder(stream);
        args.arg(logits);
        match bias {
            Some(b) => args.arg(b),
            None => args.null(),
        };
        args.arg_mut(ids)
            .arg_mut(weights)
            .null()
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
