//! Launcher of `mla_cache_write_<t>` (the fused MLA cache write, `src/ascendc/mla_cache_write.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, MlaCacheWriteDims, MlaCacheWriteTiling, Result, RopeLayout};

/// The shape of a fused cache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaCacheWriteShape {
    pub tokens: usize,
    /// Dl (kv_lora_rank).
    pub latent_dim: usize,
    /// Dr (qk_rope_dim).
    pub rope_dim: usize,
    /// Rows of each cache (`num_blocks · block_size`).
    pub num_slots: usize,
    /// Rows of the cos and sin tables.
    pub table_rows: usize,
    pub layout: RopeLayout,
}

/// The device buffers of a fused cache write: `kv [tokens, Dl + Dr]` (the `kv_a_proj_with_mqa`
/// output), the `kv_a_layernorm` weight `[Dl]`, positions and slots i32 `[tokens]`, the f32 rope tables
/// `[table_rows, Dr / 2]`.
#[derive(Debug, Clone, Copy)]
pub struct MlaCacheWriteInputs<'a, T: KernelElem> {
    pub kv: &'a DeviceBuffer<T>,
    pub norm_weight: &'a DeviceBuffer<T>,
    pub positions: &'a DeviceBuffer<i32>,
    pub cos: &'a DeviceBuffer<f32>,
    pub sin: &'a DeviceBuffer<f32>,
    pub slot_mapping: &'a DeviceBuffer<i32>,
}

/// RMSNorm (`eps`) of each token's latent part into `latent_cache [num_slots, Dl]` and rope of its
/// rope part at its position into `rope_cache [num_slots, Dr]`, at row `slot_mapping[t]` (−1 skips the
/// token), f32 arithmetic, each result rounded to `T` once. Slots must not repeat.
///
/// Slots and positions live on the device and are not checked here (validate them on the host): an
/// entry outside the caches or the tables makes the kernel fault on its checked access on the
/// simulator (on an NPU it reaches unspecified memory). Only the two caches are written.
pub fn mla_cache_write<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    inputs: MlaCacheWriteInputs<'_, T>,
    latent_cache: &mut DeviceBuffer<T>,
    rope_cache: &mut DeviceBuffer<T>,
    shape: MlaCacheWriteShape,
    eps: f32,
) -> Result<Launched<MlaCacheWriteTiling>> {
    const K: &str = "mla_cache_write";
    let s = shape;
    let width = s.latent_dim.saturating_add(s.rope_dim);
    let tiling = MlaCacheWriteTiling::new(
        MlaCacheWriteDims {
            tokens: s.tokens as u64,
            latent_dim: s.latent_dim as u64,
            rope_dim: s.rope_dim as u64,
            kv_stride: width as u64,
            num_slots: s.num_slots as u64,
            table_rows: s.table_rows as u64,
        },
        s.layout,
        eps,
        T::DTYPE,
        lib.hardware().vector,
    )?;
    let i = inputs;
    expect_len(
        K,
        "kv",
        i.kv.len(),
        product(K, "tokens * (Dl + Dr)", s.tokens, width)?,
    )?;
    expect_len(K, "norm_weight", i.norm_weight.len(), s.latent_dim)?;
    expect_len(K, "positions", i.positions.len(), s.tokens)?;
    expect_len(K, "slot_mapping", i.slot_mapping.len(), s.tokens)?;
    let table = product(K, "table_rows * Dr / 2", s.table_rows, s.rope_dim / 2)?;
    expect_len(K, "cos", i.cos.len(), table)?;
    expect_len(K, "sin", i.sin.len(), table)?;
    expect_len(
        K,
        "latent_cache",
        latent_cache.len(),
        product(K, "slots * Dl", s.num_slots, s.latent_dim)?,
    )?;
    expect_len(
        K,
        "rope_cache",
        rope_cache.len(),
        product(K, "slots * Dr", s.num_slots, s.rope_dim)?,
    )?;
    let symbol = Kernel::MlaCacheWrite.symbol(T::DTYPE);
    let f = lib.function(Kernel::MlaCacheWrite, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: mla_cache_write_<t>(kv, weight, positions, cos, sin, slot_mapping, latent_cache,
    // rope_cache, workspace, tiling); every buffer holds exactly the elements the tiling's shape gives the
    // kernel's GlobalTensors (checked above), so every access through a device-resident slot or position
    // is bounds-checked against its tensor on the simulator. Only the two caches are written (arg_mut,
    // distinct buffers as `&mut` guarantees); the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(i.kv)
            .arg(i.norm_weight)
            .arg(i.positions)
            .arg(i.cos)
            .arg(i.sin)
            .arg(i.slot_mapping)
            .arg_mut(latent_cache)
            .arg_mut(rope_cache)
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
