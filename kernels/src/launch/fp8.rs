//! Launchers of the FP8-weight GEMMs `linear_fp8_<t>`, `grouped_matmul_fp8_<t>` and `expert_ffn_fp8_<t>`
//! (`src/ascendc/moe_grouped_matmul.cpp`): weights stay FP8 e4m3 codes on the device with their f32
//! 128×128 block scales (`weight_scale_inv`), and the kernels dequantize them tile by tile (512 columns
//! of K of a task's rows at a time, one 128-column scale block after the other, on the vector unit, into a per-vector-core panel of the activation type
//! that the cube multiplies). The dequantized weight never exists whole in device memory: the workspace
//! holds one `[single_n, 512]` panel ([`FP8_PANEL_K`] columns) per vector core (plus, for 16-bit
//! activations, its f32 accumulator tile).
//!
//! `<t>` is the activations' type (f32, f16 or bf16); the panel is `t`, so with 16-bit activations the
//! dequantized values are rounded to `t` (what dequantizing at load to a 16-bit device copy gives).
//! The codes are not checked for NaN (0x7F/0xFF) here: a checkpoint loader rejects them before upload.

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::moe_grouped::check_window;
use super::{device_error, expect_len, product, FfnShape, GroupList, GroupedShape, KernelElem};
use super::{KernelLibrary, Launched};
use crate::tiling::{invalid, round_up};
use crate::{
    CoreBudget, ExpertFfnTiling, FfnTaskWidths, GroupedMatmulTiling, Kernel, KernelDtype, MoeList,
    Result, SYS_WORKSPACE_BYTES,
};

/// Rows and columns of weight per block scale (DeepSeek-V3's `weight_block_size`).
pub const FP8_BLOCK: usize = 128;

/// Columns of K the kernels dequantize into a panel per cube request (`PANEL_K` in the source).
const FP8_PANEL_K: u64 = 4 * FP8_BLOCK as u64;

/// Weight rows the kernels dequantize per Unified Buffer pass (`DQ_ROWS` in the source).
const DQ_ROWS: u64 = 64;

/// An FP8 weight on the device: e4m3 codes and their f32 block scales.
#[derive(Debug, Clone, Copy)]
pub struct Fp8Weights<'a> {
    /// e4m3 codes, one byte each, `[groups, n, k]` row-major.
    pub codes: &'a DeviceBuffer<u8>,
    /// f32 `[groups, ceil(n / 128), ceil(k / 128)]`: `w[n, k] = e4m3(code) · scale[n / 128, k / 128]`.
    pub scale: &'a DeviceBuffer<f32>,
}

/// Elements of the block scales of `groups` weights `[n, k]`.
pub fn fp8_scale_len(groups: usize, n: usize, k: usize) -> usize {
    groups
        .saturating_mul(n.div_ceil(FP8_BLOCK))
        .saturating_mul(k.div_ceil(FP8_BLOCK))
}

/// Unified Buffer the dequantization takes per vector core (two code buffers, half, int32 offsets, f32
/// values and two buffers of `t` panel rows of a pass, plus the 256-entry f32 table).
fn dequant_ub_bytes(dtype: KernelDtype) -> u64 {
    DQ_ROWS * FP8_BLOCK as u64 * (2 + 2 + 4 + 4 + 2 * u64::from(dtype.size())) + 256 * 4
}

/// One vector core's workspace: two `[single_n, 512]` panels in `dtype` (one dequantized while the cube
/// multiplies the other), then (16-bit) the f32
/// `[single_m, single_n]` accumulator tile (`Fp8Gemm::BlockBytes` in the source).
fn block_bytes(dtype: KernelDtype, single_m: u32, single_n: u32) -> u64 {
    let panel = round_up(
        u64::from(single_n) * FP8_PANEL_K * u64::from(dtype.size()),
        32,
    );
    let tile = if dtype == KernelDtype::F32 {
        0
    } else {
        u64::from(single_m) * u64::from(single_n) * 4
    };
    2 * panel + tile
}

fn check_weights(
    kernel: &'static str,
    w: &Fp8Weights<'_>,
    groups: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let gn = product(kernel, "groups * n", groups, n)?;
    expect_len(
        kernel,
        "w",
        w.codes.len(),
        product(kernel, "groups * n * k", gn, k)?,
    )?;
    expect_len(kernel, "scale", w.scale.len(), fp8_scale_len(groups, n, k))
}

fn workspace(
    kernel: &'static str,
    symbol: &'static str,
    stream: &Stream,
    bytes: u64,
) -> Result<DeviceBuffer<u8>> {
    let bytes = usize::try_from(bytes)
        .map_err(|_| invalid(kernel, "the workspace does not fit the address space"))?;
    stream
        .alloc::<u8>(bytes.max(1))
        .map_err(|e| device_error(symbol, e))
}

/// `y [m, n] = x [m, k] · wᵀ` with FP8 weights `w [n, k]` (see the module docs), f32 accumulation in the
/// cube, tiled like a grouped GEMM of one group over the cube cores. No bias.
#[allow(clippy::too_many_arguments)]
pub fn linear_fp8<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: Fp8Weights<'_>,
    y: &mut DeviceBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Launched<GroupedMatmulTiling>> {
    let shape = GroupedShape {
        rows: m,
        groups: 1,
        n,
        k,
    };
    fp8_gemm(lib, stream, x, w, None, y, shape)
}

/// [`super::grouped_matmul`] with FP8 weights `w [groups, n, k]` and their block scales.
pub fn grouped_matmul_fp8<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: Fp8Weights<'_>,
    group_list: GroupList<'_>,
    y: &mut DeviceBuffer<T>,
    shape: GroupedShape,
) -> Result<Launched<GroupedMatmulTiling>> {
    fp8_gemm(lib, stream, x, w, Some(group_list), y, shape)
}

/// Both FP8 GEMMs: `linear_fp8_<t>` without a group list (`shape.groups` is then 1: one group of all
/// rows), else `grouped_matmul_fp8_<t>`.
fn fp8_gemm<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: Fp8Weights<'_>,
    group_list: Option<GroupList<'_>>,
    y: &mut DeviceBuffer<T>,
    shape: GroupedShape,
) -> Result<Launched<GroupedMatmulTiling>> {
    let (kernel, name) = match group_list {
        None => (Kernel::LinearFp8, "linear_fp8"),
        Some(_) => (Kernel::GroupedMatmulFp8, "grouped_matmul_fp8"),
    };
    let GroupedShape { rows, groups, n, k } = shape;
    let cube = lib.hardware().cube;
    let list_kind = group_list.as_ref().map_or(MoeList::Count, |l| l.kind);
    // A task's time is mostly its dequantization, on the vector core that takes it: tile for the
    // vector cores (two per cube core) so that every one of them gets a task where the shape allows.
    let workers = CoreBudget {
        cores: 2 * cube.cores,
        ..cube
    };
    let tiling = GroupedMatmulTiling::new(
        rows as u64,
        groups as u64,
        n as u64,
        k as u64,
        list_kind,
        workers,
    )?;
    expect_len(name, "x", x.len(), product(name, "rows * k", rows, k)?)?;
    expect_len(name, "y", y.len(), product(name, "rows * n", rows, n)?)?;
    check_weights(name, &w, groups, n, k)?;
    if let Some(list) = &group_list {
        check_window(name, list, groups)?;
    }
    let symbol = kernel.symbol(T::DTYPE);
    let f = lib.function(kernel, T::DTYPE)?;
    let blocks = tiling.block_dim(cube);
    // The system workspace, then one panel (and tile) per vector core: two per block.
    let ws_bytes = SYS_WORKSPACE_BYTES
        + 2 * u64::from(blocks) * block_bytes(T::DTYPE, tiling.single_m, tiling.single_n);
    let mut ws = workspace(name, symbol, stream, ws_bytes)?;
    let mut b = f.builder(stream);
    b.arg(x).arg(w.codes).arg(w.scale);
    if let Some(list) = &group_list {
        b.arg_at(list.list, list.first);
    }
    // SAFETY: linear_fp8_<t>(x, w, scale, y, workspace, tiling) or grouped_matmul_fp8_<t>(x, w, scale,
    // group_list, y, workspace, tiling); x holds rows x k and y rows x n elements of T, w groups x n x k
    // bytes and scale groups x ceil(n/128) x ceil(k/128) f32 (checked above), the sizes the kernel
    // gives its GlobalTensors; a list is read as in grouped_matmul (`groups` entries from `first` on,
    // checked by check_window; rows clamped to [0, rows]); without one, groups is 1 and no list is
    // read. A 1:2 mix launch. Written: y and the workspace (arg_mut): the system workspace, then
    // block_bytes() for each of the 2·`blocks` vector cores (worker i uses [i·b, (i+1)·b) after it).
    unsafe { b.arg_mut(y).arg_mut(&mut ws).tiling(&tiling).launch(blocks) }
        .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}

/// [`super::expert_ffn`] with FP8 gate, up (`[groups, inter, hidden]`) and down (`[groups, hidden,
/// inter]`) weights and their block scales. The workspace holds the system workspace and the f32 gate/up
/// and `t` h `[rows, inter]` as for the 16-bit kernel, then one FP8 panel (and f32 tile) per vector core.
///
/// `group_list` `None`: one group of all `rows` rows, no list read (`groups` must be 1): a dense MLP
/// or a shared expert, whose gate and up cannot be stacked into one FP8 matrix unless `inter` is a
/// multiple of 128 (their block scales would straddle the seam).
#[allow(clippy::too_many_arguments)]
pub fn expert_ffn_fp8<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    gate: Fp8Weights<'_>,
    up: Fp8Weights<'_>,
    down: Fp8Weights<'_>,
    group_list: Option<GroupList<'_>>,
    y: &mut DeviceBuffer<T>,
    shape: FfnShape,
) -> Result<Launched<ExpertFfnTiling>> {
    const K: &str = "expert_ffn_fp8";
    let FfnShape {
        rows,
        groups,
        max_group_rows,
        hidden,
        inter,
    } = shape;
    let kind = match &group_list {
        Some(g) => g.kind,
        None if groups == 1 => MoeList::Count,
        None => {
            return Err(invalid(
                K,
                format!("{groups} groups without a group list (only one group may go without)"),
            ))
        }
    };
    let cube = lib.hardware().cube;
    // The SwiGLU's rows share the UB with the dequantization's buffers.
    let ub = u64::from(cube.ub_bytes)
        .checked_sub(dequant_ub_bytes(T::DTYPE))
        .ok_or_else(|| invalid(K, "the Unified Buffer cannot hold the FP8 dequantization"))?;
    let budget = CoreBudget {
        cores: cube.cores,
        ub_bytes: ub as u32,
    };
    let tiling = ExpertFfnTiling::new(
        rows as u64,
        groups as u64,
        max_group_rows as u64,
        hidden as u64,
        inter as u64,
        kind,
        T::DTYPE,
        budget,
        FfnTaskWidths::Fixed,
    )?;
    let rh = product(K, "rows * hidden", rows, hidden)?;
    expect_len(K, "x", x.len(), rh)?;
    expect_len(K, "y", y.len(), rh)?;
    check_weights(K, &gate, groups, inter, hidden)?;
    check_weights(K, &up, groups, inter, hidden)?;
    check_weights(K, &down, groups, hidden, inter)?;
    if let Some(g) = &group_list {
        check_window(K, g, groups)?;
    }
    let symbol = Kernel::ExpertFfnFp8.symbol(T::DTYPE);
    let f = lib.function(Kernel::ExpertFfnFp8, T::DTYPE)?;
    let blocks = tiling.block_dim(budget);
    let shared = round_up(tiling.intermediate_bytes(T::DTYPE), 32);
    let single_n = tiling.single_n1.max(tiling.single_n2);
    let ws_bytes = SYS_WORKSPACE_BYTES
        + shared
        + 2 * u64::from(blocks) * block_bytes(T::DTYPE, tiling.single_m, single_n);
    let mut ws = workspace(K, symbol, stream, ws_bytes)?;
    // SAFETY: expert_ffn_fp8_<t>(x, w_gate, s_gate, w_up, s_up, w_down, s_down, group_list, y,
    // workspace, tiling); x and y hold rows x hidden elements of T, the codes groups x inter x hidden
    // bytes each and the scales their block counts (checked above), the sizes the kernel gives its
    // GlobalTensors; the list, when given, is read as in expert_ffn (checked by check_window); without
    // one (null) the kernel reads none and takes all rows as its one group. A mix launch of
    // block_dim() <= the cube cores blocks, all resident, so its vector cores meet at SyncAll. Written:
    // y and the workspace: the system workspace, gate/up f32 and h in T ([rows, inter] each, rounded up
    // to 32 bytes), then block_bytes() per vector core (two per block).
    unsafe {
        let mut args = f.builder(stream);
        args.arg(x)
            .arg(gate.codes)
            .arg(gate.scale)
            .arg(up.codes)
            .arg(up.scale)
            .arg(down.codes)
            .arg(down.scale);
        match group_list {
            Some(g) => args.arg_at(g.list, g.first),
            None => args.null(),
        };
        args.arg_mut(y)
            .arg_mut(&mut ws)
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
