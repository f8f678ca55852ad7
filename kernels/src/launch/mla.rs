//! Launcher of `mla_decode_<t>` (split-KV absorbed MLA decode over the paged latent cache on the cube
//! and vector cores, `src/ascendc/mla_decode.cpp`).
//!
//! A decode step computes its [`MlaDecodePlan`] once on the host from the sequence lengths (FlashMLA's
//! `get_mla_metadata`), uploads [`MlaDecodePlan::words`] once, and launches [`mla_decode`] once per
//! layer with it.

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::tiling::invalid;
use crate::{Kernel, MlaDecodeDims, MlaDecodePlan, MlaDecodeTiling, Result};

/// The shape of an MLA decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaDecodeShape {
    pub batch: usize,
    /// Query tokens per sequence (S).
    pub s_q: usize,
    pub heads: usize,
    /// Dl (kv_lora_rank): the width of a latent row, of `q_nope` and of `out`.
    pub latent_dim: usize,
    /// Dr (qk_rope_dim).
    pub rope_dim: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Columns of the block table.
    pub max_blocks: usize,
}

/// The device buffers of an MLA decode: queries `q_nope [B,S,H,Dl]` and `q_rope [B,S,H,Dr]`, the
/// cache `latent [blocks, block_size, Dl]` and `rope [blocks, block_size, Dr]`, `block_table` i32
/// `[B, max_blocks]`, `seq_lens` i32 `[B]`, and the step's plan: `plan` on the host and its
/// [`MlaDecodePlan::words`] uploaded as `plan_words`.
#[derive(Debug, Clone, Copy)]
pub struct MlaDecodeInputs<'a, T: KernelElem> {
    pub q_nope: &'a DeviceBuffer<T>,
    pub q_rope: &'a DeviceBuffer<T>,
    pub latent: &'a DeviceBuffer<T>,
    pub rope: &'a DeviceBuffer<T>,
    pub block_table: &'a DeviceBuffer<i32>,
    pub seq_lens: &'a DeviceBuffer<i32>,
    pub plan: &'a MlaDecodePlan,
    pub plan_words: &'a DeviceBuffer<i32>,
}

/// MLA decode (dsnpu-ops' `mla_decode`): `out [B,S,H,Dl]` and `lse` f32 `[B,H,S]`, softmax and
/// accumulation in f32, `out` rounded once to `T`.
///
/// The block table, the sequence lengths and the plan's words live on the device and are not checked
/// here (validate the first two on the host, as dsnpu-ops' `check_mla_decode` does, and plan with the
/// same lengths): the kernel clamps a length to `max_blocks · block_size` slots and a task to the
/// plan's chunk, and a block id outside the cache makes it fault on its checked row read on the
/// simulator (on an NPU it reads unspecified memory); nothing makes it write outside `out`, `lse` and
/// its workspace (allocated here from the stream's pool).
pub fn mla_decode<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    inputs: MlaDecodeInputs<'_, T>,
    out: &mut DeviceBuffer<T>,
    lse: &mut DeviceBuffer<f32>,
    shape: MlaDecodeShape,
    scale: f32,
) -> Result<Launched<MlaDecodeTiling>> {
    const K: &str = "mla_decode";
    let s = shape;
    let cube = lib.hardware().cube;
    let tiling = MlaDecodeTiling::new(
        MlaDecodeDims {
            batch: s.batch as u64,
            s_q: s.s_q as u64,
            heads: s.heads as u64,
            latent_dim: s.latent_dim as u64,
            rope_dim: s.rope_dim as u64,
            block_size: s.block_size as u64,
            num_blocks: s.num_blocks as u64,
            max_blocks: s.max_blocks as u64,
        },
        inputs.plan,
        scale,
        T::DTYPE,
        cube,
    )?;
    let rows = product(K, "batch * s_q", s.batch, s.s_q)?;
    let rows = product(K, "batch * s_q * heads", rows, s.heads)?;
    let slots = product(K, "num_blocks * block_size", s.num_blocks, s.block_size)?;
    let i = inputs;
    expect_len(
        K,
        "q_nope",
        i.q_nope.len(),
        product(K, "rows * Dl", rows, s.latent_dim)?,
    )?;
    expect_len(
        K,
        "q_rope",
        i.q_rope.len(),
        product(K, "rows * Dr", rows, s.rope_dim)?,
    )?;
    expect_len(
        K,
        "latent",
        i.latent.len(),
        product(K, "slots * Dl", slots, s.latent_dim)?,
    )?;
    expect_len(
        K,
        "rope",
        i.rope.len(),
        product(K, "slots * Dr", slots, s.rope_dim)?,
    )?;
    expect_len(
        K,
        "block_table",
        i.block_table.len(),
        product(K, "batch * max_blocks", s.batch, s.max_blocks)?,
    )?;
    expect_len(K, "seq_lens", i.seq_lens.len(), s.batch)?;
    expect_len(K, "plan_words", i.plan_words.len(), i.plan.words().len())?;
    expect_len(
        K,
        "out",
        out.len(),
        product(K, "rows * Dl", rows, s.latent_dim)?,
    )?;
    expect_len(K, "lse", lse.len(), rows)?;
    let symbol = Kernel::MlaDecode.symbol(T::DTYPE);
    let f = lib.function(Kernel::MlaDecode, T::DTYPE)?;
    let blocks = tiling.block_dim(cube);
    let ws_bytes = usize::try_from(tiling.workspace_bytes())
        .map_err(|_| invalid(K, "the workspace does not fit the address space"))?;
    let mut workspace = stream
        .alloc::<u8>(ws_bytes)
        .map_err(|e| device_error(symbol, e))?;
    // SAFETY: mla_decode_<t>(q_nope, q_rope, latent, rope, block_table, seq_lens, plan, out, lse,
    // workspace, tiling); every buffer holds exactly the elements the tiling's shape gives the kernel's
    // GlobalTensors (checked above: the plan's words are the plan the tiling was made from); the
    // workspace is workspace_bytes() (the system workspace, then scratch for the 2 x block_dim()
    // vector cores and the per-task partials). Cache reads through the device-resident block table are
    // bounds-checked against the cache's size on the simulator (see the docs). Written: out, lse and
    // the workspace (arg_mut). A mix launch of block_dim() <= the cube cores blocks, all resident, so
    // its vector cores meet at SyncAll.
    unsafe {
        f.builder(stream)
            .arg(i.q_nope)
            .arg(i.q_rope)
            .arg(i.latent)
            .arg(i.rope)
            .arg(i.block_table)
            .arg(i.seq_lens)
            .arg(i.plan_words)
            .arg_mut(out)
            .arg_mut(lse)
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
