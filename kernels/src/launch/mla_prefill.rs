//! Launchers of `mla_prefill_<t>` (flash-style causal MLA prefill over packed variable-length
//! sequences in the expanded form, cube and vector cores, `src/ascendc/mla_prefill.cpp`).
//!
//! - [`mla_prefill`] runs the kernel on views of existing buffers (see [`MlaOperand`]): the plain
//!   expanded form `q, k [T, H, 192]`, `v [T, H, 128]`, or DeepSeek's split form.
//! - [`mla_prefill_from_cache`] is chunked prefill / prefix reuse: every key of a sequence — its cached
//!   prefix and the new tokens, all already in the paged latent cache — is read through the key slots
//!   (the block table resolved on the host), expanded, and attended by the new queries.
//!
//! # How the cached prefix is expanded (the trade-off)
//! The paged cache holds the 512-wide normalised latent and the 64-wide roped key of each token; the
//! expanded form needs `k_nope = W_UK·latent` and `v = W_UV·latent` per head. Two ways:
//! 1. absorb `W_UK` into the queries for the prefix keys (as decode does) and attend over the latent
//!    directly: no workspace, but the prefix part then costs 576 + 512 multiply-adds per (query, key,
//!    head) instead of 192 + 128 (3.4×), and the kernel would need two score paths with different widths;
//! 2. **expand the keys with the existing kernels into a GM workspace** first: `gather_rows` picks the
//!    latent and rope rows by slot (`[Tk, 512]`, `[Tk, 64]`), `linear` multiplies the latent by
//!    `kv_b_proj [H·(128 + 128), 512]` into `kv [Tk, H, 256]`, and the prefill kernel reads `k_nope` and
//!    `v` as strided views of `kv` and the shared rope row by a head stride of 0. It costs
//!    `Tk·H·256` elements of workspace and one up-projection of `Tk·512·H·256` multiply-adds (the same
//!    FLOPs a prefill spends anyway on its new tokens), and keeps one kernel with one score path.
//!
//! This module does 2: correct, simple, and compute-efficient for long prompts; its cost is the
//! workspace and re-expanding a long cached prefix on every chunk (a prefix of P keys costs `P·H·256`
//! elements each time). The new tokens are read back from the cache too (the cache write runs first,
//! as in vLLM's chunked prefill), so new and cached keys take one path.

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use super::{gather_rows, linear, RowSource};
use crate::tiling::invalid;
use crate::tiling_mla_prefill::{MlaOperand, MlaPrefillDims, MlaPrefillTiling};
use crate::{Kernel, Result};

/// The device buffers of a prefill and the host copies of the cumulative lengths (which must equal
/// the device ones: the tiling is computed from the host copies). `q_rope` and `k_rope` are read only
/// when the shape's `dr` is not 0 (pass any buffer, e.g. `q_nope`, otherwise).
#[derive(Debug, Clone, Copy)]
pub struct MlaPrefillInputs<'a, T: KernelElem> {
    pub q_nope: &'a DeviceBuffer<T>,
    pub q_rope: &'a DeviceBuffer<T>,
    pub k_nope: &'a DeviceBuffer<T>,
    pub k_rope: &'a DeviceBuffer<T>,
    pub v: &'a DeviceBuffer<T>,
    /// i32 `[B + 1]`: queries of sequence b are `cu_q[b] .. cu_q[b + 1]`.
    pub cu_q: &'a DeviceBuffer<i32>,
    /// i32 `[B + 1]`: keys of sequence b (cached prefix first) are `cu_k[b] .. cu_k[b + 1]`.
    pub cu_k: &'a DeviceBuffer<i32>,
    pub host_cu_q: &'a [i32],
    pub host_cu_k: &'a [i32],
}

/// MLA prefill (dsnpu-ops' `mla_prefill_varlen`): `out [Tq, H, dv]` and `lse` f32 `[H, Tq]`, softmax and
/// accumulation in f32, `out` rounded once to `T`. The operand views' lengths must be the buffers'
/// (checked here), and the tiling checks every view against its length; only `out`, `lse` and the
/// workspace (from the stream's pool) are written.
pub fn mla_prefill<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    inputs: MlaPrefillInputs<'_, T>,
    dims: MlaPrefillDims,
    out: &mut DeviceBuffer<T>,
    lse: &mut DeviceBuffer<f32>,
    scale: f32,
) -> Result<Launched<MlaPrefillTiling>> {
    const K: &str = "mla_prefill";
    let i = inputs;
    let d = dims;
    expect_len(K, "q_nope", i.q_nope.len(), d.q_nope.len as usize)?;
    expect_len(K, "k_nope", i.k_nope.len(), d.k_nope.len as usize)?;
    expect_len(K, "v", i.v.len(), d.v.len as usize)?;
    if d.dr > 0 {
        expect_len(K, "q_rope", i.q_rope.len(), d.q_rope.len as usize)?;
        expect_len(K, "k_rope", i.k_rope.len(), d.k_rope.len as usize)?;
    }
    expect_len(K, "cu_q", i.cu_q.len(), i.host_cu_q.len())?;
    expect_len(K, "cu_k", i.cu_k.len(), i.host_cu_k.len())?;
    let cube = lib.hardware().cube;
    let tiling = MlaPrefillTiling::new(d, i.host_cu_q, i.host_cu_k, scale, T::DTYPE, cube)?;
    let rows = product(K, "tokens_q * heads", d.tokens_q as usize, d.heads as usize)?;
    expect_len(
        K,
        "out",
        out.len(),
        product(K, "rows * dv", rows, d.dv as usize)?,
    )?;
    expect_len(K, "lse", lse.len(), rows)?;
    let symbol = Kernel::MlaPrefill.symbol(T::DTYPE);
    let f = lib.function(Kernel::MlaPrefill, T::DTYPE)?;
    let blocks = tiling.block_dim(cube);
    let ws_bytes = usize::try_from(tiling.workspace_bytes(T::DTYPE, blocks))
        .map_err(|_| invalid(K, "the workspace does not fit the address space"))?;
    let mut workspace = stream
        .alloc::<u8>(ws_bytes)
        .map_err(|e| device_error(symbol, e))?;
    // SAFETY: mla_prefill_<t>(q_nope, q_rope, k_nope, k_rope, v, cu_q, cu_k, out, lse, workspace,
    // tiling); each operand buffer holds exactly the `len` elements the tiling gives its GlobalTensor
    // (checked above; the rope buffers are not bound when dr is 0), and the tiling checked that every
    // view's last element lies inside its length; cu_q/cu_k hold B + 1 i32 (their values are clamped by
    // the kernel); out holds Tq·H·dv and lse Tq·H elements; the workspace is workspace_bytes() for
    // `blocks` blocks of the mix launch. Written: out, lse and the workspace (arg_mut). No SyncAll.
    unsafe {
        f.builder(stream)
            .arg(i.q_nope)
            .arg(i.q_rope)
            .arg(i.k_nope)
            .arg(i.k_rope)
            .arg(i.v)
            .arg(i.cu_q)
            .arg(i.cu_k)
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

/// The widths of a prefill from the paged cache (DeepSeek-V3: 128, 64, 128, 512).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaCacheShape {
    pub heads: usize,
    /// qk_nope_head_dim.
    pub dn: usize,
    /// qk_rope_head_dim.
    pub dr: usize,
    /// v_head_dim.
    pub dv: usize,
    /// kv_lora_rank.
    pub latent_dim: usize,
    /// Slots of the cache (`num_blocks · block_size`).
    pub num_slots: usize,
    /// New tokens (queries).
    pub tokens_q: usize,
    /// How `q_nope` (dn wide) and `q_rope` (dr wide, rotated) are laid out in their buffers.
    pub q_nope: MlaOperand,
    pub q_rope: MlaOperand,
}

/// Elements of [`mla_prefill_from_cache`]'s scratch buffers for `keys` keys: the gathered latent and
/// rope rows and the expanded `kv [keys, H, dn + dv]` (`kv_width` = `H·(dn + dv)` per key), every
/// size a checked product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheScratch {
    kv_width: usize,
    latent: usize,
    rope: usize,
    kv: usize,
}

impl CacheScratch {
    fn new(s: &MlaCacheShape, keys: usize) -> Result<CacheScratch> {
        const K: &str = "mla_prefill";
        let head_width =
            s.dn.checked_add(s.dv)
                .ok_or_else(|| invalid(K, format!("dn + dv = {} + {} overflows", s.dn, s.dv)))?;
        let kv_width = product(K, "H * (dn + dv)", s.heads, head_width)?;
        Ok(CacheScratch {
            kv_width,
            latent: product(K, "keys * Dl", keys, s.latent_dim)?,
            rope: product(K, "keys * dr", keys, s.dr)?,
            kv: product(K, "keys * H * (dn + dv)", keys, kv_width)?,
        })
    }
}

/// The inputs of [`mla_prefill_from_cache`]: the new tokens' queries (`q_nope`, and `q_rope` rotated,
/// as the shape's views describe: both views of one `[Tq, H, dn + dr]` buffer, or two buffers), the cache `latent [slots, Dl]` and `rope [slots, dr]`, `kv_b [H·(dn + dv), Dl]`
/// (kv_b_proj as stored), and for every key of every sequence (prefix then new tokens, in order) its
/// cache slot, i32 `[Tk]` (the block table resolved on the host: `block·block_size + offset`).
#[derive(Debug, Clone, Copy)]
pub struct MlaCacheInputs<'a, T: KernelElem, W: KernelElem = T> {
    pub q_nope: &'a DeviceBuffer<T>,
    pub q_rope: &'a DeviceBuffer<T>,
    pub latent: &'a DeviceBuffer<T>,
    pub rope: &'a DeviceBuffer<T>,
    /// `kv_b_proj` as stored; its dtype may differ from the activations' (the `linear` kernel widens
    /// 16-bit weight tiles for f32 activations).
    pub kv_b: &'a DeviceBuffer<W>,
    pub key_slots: &'a DeviceBuffer<i32>,
    pub cu_q: &'a DeviceBuffer<i32>,
    pub cu_k: &'a DeviceBuffer<i32>,
    pub host_cu_q: &'a [i32],
    pub host_cu_k: &'a [i32],
}

/// Chunked prefill over the paged cache (see the module docs): gathers the keys' latent and rope rows
/// by slot, expands the latent with `kv_b` (the `linear` kernel) into a workspace `kv [Tk, H, dn + dv]`,
/// and runs [`mla_prefill`] with the query views and `k_nope`/`v` as views of `kv`.
/// Returns the prefill's launch (the three helper launches precede it on the stream). Slot values live
/// on the device and are not checked here: one outside the cache faults on the gather's checked read
/// (simulator).
pub fn mla_prefill_from_cache<T: KernelElem, W: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    inputs: MlaCacheInputs<'_, T, W>,
    shape: MlaCacheShape,
    out: &mut DeviceBuffer<T>,
    lse: &mut DeviceBuffer<f32>,
    scale: f32,
) -> Result<Launched<MlaPrefillTiling>> {
    const K: &str = "mla_prefill";
    let s = shape;
    let i = inputs;
    let tk = i.key_slots.len();
    let tq = s.tokens_q;
    expect_len(
        K,
        "latent",
        i.latent.len(),
        product(K, "slots * Dl", s.num_slots, s.latent_dim)?,
    )?;
    expect_len(
        K,
        "rope",
        i.rope.len(),
        product(K, "slots * dr", s.num_slots, s.dr)?,
    )?;
    let scratch = CacheScratch::new(&s, tk)?;
    let kv_w = scratch.kv_width;
    expect_len(
        K,
        "kv_b",
        i.kv_b.len(),
        product(K, "kv_b", kv_w, s.latent_dim)?,
    )?;
    if tk == 0 {
        return Err(invalid(K, "no keys"));
    }
    let map = |e| device_error(K, e);
    let mut lat = stream.alloc::<T>(scratch.latent).map_err(map)?;
    gather_rows(
        lib,
        stream,
        i.latent,
        Some(i.key_slots),
        &mut lat,
        RowSource::lookup(tk, s.latent_dim, s.num_slots),
    )?;
    let mut k_rope = stream.alloc::<T>(scratch.rope).map_err(map)?;
    gather_rows(
        lib,
        stream,
        i.rope,
        Some(i.key_slots),
        &mut k_rope,
        RowSource::lookup(tk, s.dr, s.num_slots),
    )?;
    let mut kv = stream.alloc::<T>(scratch.kv).map_err(map)?;
    linear(
        lib,
        stream,
        &lat,
        i.kv_b,
        None,
        &mut kv,
        tk,
        kv_w,
        s.latent_dim,
    )?;
    let (h, dn, dr, dv) = (s.heads as u64, s.dn as u64, s.dr as u64, s.dv as u64);
    let kv_len = kv.len() as u64;
    let dims = MlaPrefillDims {
        heads: h,
        tokens_q: tq as u64,
        tokens_k: tk as u64,
        dn,
        dr,
        dv,
        q_nope: s.q_nope,
        q_rope: s.q_rope,
        k_nope: MlaOperand {
            tok: h * (dn + dv),
            head: dn + dv,
            off: 0,
            len: kv_len,
        },
        k_rope: MlaOperand {
            tok: dr,
            head: 0,
            off: 0,
            len: k_rope.len() as u64,
        },
        v: MlaOperand {
            tok: h * (dn + dv),
            head: dn + dv,
            off: dn,
            len: kv_len,
        },
    };
    mla_prefill(
        lib,
        stream,
        MlaPrefillInputs {
            q_nope: i.q_nope,
            q_rope: i.q_rope,
            k_nope: &kv,
            k_rope: &k_rope,
            v: &kv,
            cu_q: i.cu_q,
            cu_k: i.cu_k,
            host_cu_q: i.host_cu_q,
            host_cu_k: i.host_cu_k,
        },
        dims,
        out,
        lse,
        scale,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelError;

    fn shape(heads: usize, dn: usize, dv: usize, latent_dim: usize) -> MlaCacheShape {
        MlaCacheShape {
            heads,
            dn,
            dr: 64,
            dv,
            latent_dim,
            num_slots: 256,
            tokens_q: 4,
            q_nope: MlaOperand::default(),
            q_rope: MlaOperand::default(),
        }
    }

    #[test]
    fn scratch_sizes_of_deepseek_v3() {
        let s = CacheScratch::new(&shape(128, 128, 128, 512), 10).unwrap();
        assert_eq!(
            s,
            CacheScratch {
                kv_width: 128 * 256,
                latent: 10 * 512,
                rope: 10 * 64,
                kv: 10 * 128 * 256,
            }
        );
    }

    /// Each size that overflows is an `InvalidShape` naming it (no launch could hold such buffers, so
    /// only this function reaches these extents).
    #[test]
    fn scratch_sizes_that_overflow_are_invalid_shapes() {
        let named = |s: MlaCacheShape, keys: usize| match CacheScratch::new(&s, keys) {
            Err(KernelError::InvalidShape { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(named(shape(1, usize::MAX, 1, 512), 1).starts_with("dn + dv = "));
        assert!(named(shape(1 << 44, 1 << 20, 1 << 20, 512), 1).starts_with("H * (dn + dv) = "));
        assert!(named(shape(1, 128, 128, 1 << 40), 1 << 30).starts_with("keys * Dl = "));
        assert!(named(shape(1 << 20, 128, 128, 1), 1 << 40).starts_with("keys * H * (dn + dv) = "));
        let mut s = shape(1, 128, 128, 1);
        s.dr = 1 << 40;
        assert!(named(s, 1 << 30).starts_with("keys * dr = "));
    }
}
