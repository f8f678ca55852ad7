//! Launchers of `grouped_matmul_<t>` and `expert_ffn_<t>` (`src/ascendc/moe_grouped_matmul.cpp`):
//! GEMMs over expert groups along M, the groups given by a device-resident list; and the same kernel's
//! strided form, one GEMM per attention head over rows laid out as the model holds them
//! ([`grouped_matmul_strided`]).
//!
//! The list may be a window of a longer one ([`GroupList::first`]): the per-expert counts a dispatch
//! writes for all E experts, of which a rank holds the weights of `first..first + groups`. The window
//! is checked to lie inside the list and passed as the address of its first entry (the runtime's
//! offset argument), so the launch is ordered after the list's producer like any buffer argument.
//!
//! The list's values are not checked (they live on the device): the kernels clamp every group's end to
//! `[start, rows]`, so a malformed list gives wrong rows, never an access outside `x`, `y` or the
//! workspace. Rows past the groups' total are left unwritten.

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{
    device_error, expect_len, product, weight_kernel, KernelElem, KernelLibrary, Launched,
};
use crate::tiling::invalid;
use crate::{
    ExpertFfnTiling, FfnTaskWidths, GroupedMatmulTiling, Kernel, KernelError, MoeList, Result,
    RowLayout,
};

/// `groups` consecutive entries of a device list of per-group rows, starting at entry `first`.
#[derive(Debug, Clone, Copy)]
pub struct GroupList<'a> {
    pub list: &'a DeviceBuffer<i64>,
    pub first: usize,
    /// Counts or inclusive cumulative sums (of the window: a cumsum window must start from the rows
    /// before it, which a dispatch's flat-before-the-active-range cumsum does).
    pub kind: MoeList,
}

impl<'a> GroupList<'a> {
    /// The whole of `list`.
    pub fn all(list: &'a DeviceBuffer<i64>, kind: MoeList) -> Self {
        GroupList {
            list,
            first: 0,
            kind,
        }
    }
}

/// Checks that the window's `groups` entries lie inside the list.
pub(super) fn check_window(kernel: &'static str, g: &GroupList<'_>, groups: usize) -> Result<()> {
    let end = g.first.checked_add(groups).ok_or_else(|| {
        invalid(
            kernel,
            format!("group window {} + {groups} overflows", g.first),
        )
    })?;
    if end > g.list.len() {
        return Err(KernelError::BufferLength {
            kernel,
            arg: "group_list",
            expected: end,
            actual: g.list.len(),
        });
    }
    Ok(())
}

/// The shape of a grouped GEMM: `x [rows, k]`, `w [groups, n, k]`, `y [rows, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupedShape {
    pub rows: usize,
    pub groups: usize,
    pub n: usize,
    pub k: usize,
}

/// `y[r] = x[r] · w[g]ᵀ` for the rows r of group g (dsnpu-ops' `grouped_matmul`), f32 accumulation in
/// the cube, tiled over the cube cores as (group, m-tile, n-tile) tasks of the non-empty groups.
/// `rows == 0` (or any empty dimension) is [`KernelError::InvalidShape`]: launch nothing.
/// Weights of another type than `T` need f32 activations (see [`super::linear`]).
pub fn grouped_matmul<T: KernelElem, W: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<W>,
    group_list: GroupList<'_>,
    y: &mut DeviceBuffer<T>,
    shape: GroupedShape,
) -> Result<Launched<GroupedMatmulTiling>> {
    const K: &str = "grouped_matmul";
    let GroupedShape { rows, groups, n, k } = shape;
    let cube = lib.hardware().cube;
    let tiling = GroupedMatmulTiling::new(
        rows as u64,
        groups as u64,
        n as u64,
        k as u64,
        group_list.kind,
        cube,
    )?;
    expect_len(K, "x", x.len(), product(K, "rows * k", rows, k)?)?;
    let gn = product(K, "groups * n", groups, n)?;
    expect_len(K, "w", w.len(), product(K, "groups * n * k", gn, k)?)?;
    expect_len(K, "y", y.len(), product(K, "rows * n", rows, n)?)?;
    check_window(K, &group_list, groups)?;
    // SAFETY: x holds rows x k and y rows x n elements of T, w groups x n x k of W (checked above), the
    // sizes the kernel gives its GlobalTensors in the grouped form (tiling.group_rows 0); it reads
    // `groups` i64 of the list from entry `first` on (first + groups <= its length, checked by
    // `check_window`), and the rows of a task come from the list clamped to [0, rows].
    unsafe { launch_grouped(lib, stream, K, x, w, Some(&group_list), y, tiling) }
}

/// Launches `grouped_matmul_<t>`, or `grouped_matmul_f32_w<w>` for weights of another type than T
/// (f32 activations only), with `tiling` on `list` (the grouped form) or on no list (the strided form).
/// Only y is written (arg_mut); the workspace is unused.
///
/// # Safety
/// `x`, `w` and `y` hold every element the kernel reaches under `tiling` (the grouped form: rows x k,
/// groups x n x k and rows x n; the strided form: the extents of the row layouts), `list` holds the
/// `groups` entries from its `first` on that the grouped form reads, and no two of the tiling's rows of
/// y overlap.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_grouped<T: KernelElem, W: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    kernel_name: &'static str,
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<W>,
    list: Option<&GroupList<'_>>,
    y: &mut DeviceBuffer<T>,
    tiling: GroupedMatmulTiling,
) -> Result<Launched<GroupedMatmulTiling>> {
    let (kernel, dtype) = weight_kernel(
        kernel_name,
        Kernel::GroupedMatmul,
        Kernel::GroupedMatmulF32W,
        T::DTYPE,
        W::DTYPE,
    )?;
    let symbol = kernel.symbol(dtype);
    let f = lib.function(kernel, dtype)?;
    let blocks = tiling.block_dim(lib.hardware().cube);
    let mut args = f.builder(stream);
    args.arg(x).arg(w);
    match list {
        Some(l) => args.arg_at(l.list, l.first),
        None => args.null(),
    };
    // SAFETY: grouped_matmul_<t> / grouped_matmul_f32_w<w>(x, w, group_list, y, workspace, tiling) with
    // the kernel's weight type W (picked by weight_kernel); every buffer holds what the tiling makes the
    // kernel reach (this function's contract).
    unsafe { args.arg_mut(y).null().tiling(&tiling).launch(blocks) }
        .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}

/// The shape of a strided grouped GEMM: `groups` GEMMs `y_g [rows, n] = x_g [rows, k] · w[g]ᵀ` (`w
/// [groups, n, k]`), the rows of x_g and y_g where `x` and `y` put them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StridedGroupedShape {
    pub groups: usize,
    /// Rows of every group.
    pub rows: usize,
    pub n: usize,
    pub k: usize,
    pub x: RowLayout,
    pub y: RowLayout,
}

/// An operand of a strided grouped GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    X,
    Y,
}

impl StridedGroupedShape {
    /// Elements `x` (`k` columns a row) or `y` (`n`) must hold: to the end of the last group's last
    /// row (0 without rows; `None` past `usize`).
    pub fn extent(&self, operand: Operand) -> Option<usize> {
        let (l, width) = match operand {
            Operand::X => (self.x, self.k),
            Operand::Y => (self.y, self.n),
        };
        if self.groups == 0 || self.rows == 0 {
            return Some(0);
        }
        let last_group = u64::try_from(self.groups - 1).ok()?.checked_mul(l.group)?;
        let last_row = u64::try_from(self.rows - 1).ok()?.checked_mul(l.ld)?;
        let end = last_group
            .checked_add(last_row)?
            .checked_add(width as u64)?;
        usize::try_from(end).ok()
    }
}

/// `y_g = x_g · w[g]ᵀ` for every group `g`, each group's rows read from and written to where
/// [`StridedGroupedShape::x`] / [`StridedGroupedShape::y`] say: the per-head products of absorbed MLA
/// straight on `[T, H, d]` activations (`RowLayout::token_major`), without the transposes to and from
/// `[H, T, d]` that [`grouped_matmul`] would need. The same kernels as [`grouped_matmul`] (no group
/// list: the groups are equal); f32 accumulation; weights of another type than `T` need f32
/// activations. Elements of `y` between the rows are left as they are.
pub fn grouped_matmul_strided<T: KernelElem, W: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<W>,
    y: &mut DeviceBuffer<T>,
    shape: StridedGroupedShape,
) -> Result<Launched<GroupedMatmulTiling>> {
    const K: &str = "grouped_matmul_strided";
    let StridedGroupedShape {
        groups,
        rows,
        n,
        k,
        x: xl,
        y: yl,
    } = shape;
    let cube = lib.hardware().cube;
    let tiling =
        GroupedMatmulTiling::strided(groups as u64, rows as u64, n as u64, k as u64, xl, yl, cube)?;
    for (arg, operand, len) in [("x", Operand::X, x.len()), ("y", Operand::Y, y.len())] {
        let expected = shape
            .extent(operand)
            .ok_or_else(|| invalid(K, format!("{arg}'s extent overflows")))?;
        if len < expected {
            return Err(KernelError::BufferLength {
                kernel: K,
                arg,
                expected,
                actual: len,
            });
        }
    }
    let gn = product(K, "groups * n", groups, n)?;
    expect_len(K, "w", w.len(), product(K, "groups * n * k", gn, k)?)?;
    // SAFETY: in the strided form (tiling.group_rows > 0) the kernel reads x and writes y only within
    // the extents of their row layouts (its StridedExtent, the formula of StridedGroupedShape::extent),
    // which x and y hold, and w's groups x n x k elements (checked above); it reads no list. The tiling
    // rejected layouts whose y rows overlap, so no two tasks write the same element.
    unsafe { launch_grouped(lib, stream, K, x, w, None, y, tiling) }
}

/// The shape of an expert FFN: `x [rows, hidden]`, gate/up `[groups, inter, hidden]`, down
/// `[groups, hidden, inter]`, `y [rows, hidden]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfnShape {
    pub rows: usize,
    pub groups: usize,
    /// The most rows any one group can get: `rows` when nothing better is known; with top-k routing
    /// to distinct experts, the tokens. It sizes the row tiles (fewer rows per tile allow wider base
    /// blocks, each of which reads a task's rows once); a group beyond it takes more tiles, its weights
    /// read once per tile. 0 is an error.
    pub max_group_rows: usize,
    pub hidden: usize,
    pub inter: usize,
}

/// The fused expert FFN (dsnpu-ops' `expert_ffn`): per group, `h = t(silu(x·w_gateᵀ) · (x·w_upᵀ))`
/// (gate, up and SwiGLU in f32, h rounded to T once) and `y = h·w_downᵀ`. Both phases are spread over
/// the cube cores as (group, tile) tasks of the non-empty groups, the column tiles cut by the kernel
/// from the group list (`FfnTaskWidths::PerLaunch`): a hot expert still uses every core, spread rows
/// are read in few wide tasks, and an empty expert costs a scalar load. The f32 gate/up and T h
/// workspace (`[rows, inter]` each) is
/// allocated from the stream's pool.
///
/// `rows` may exceed the groups' total (a dispatch's room for every pair): only the groups' rows are
/// computed and written. `rows == 0` is [`KernelError::InvalidShape`]: launch nothing. Weights of
/// another type than `T` need f32 activations (see [`super::linear`]).
#[allow(clippy::too_many_arguments)]
pub fn expert_ffn<T: KernelElem, W: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w_gate: &DeviceBuffer<W>,
    w_up: &DeviceBuffer<W>,
    w_down: &DeviceBuffer<W>,
    group_list: GroupList<'_>,
    y: &mut DeviceBuffer<T>,
    shape: FfnShape,
) -> Result<Launched<ExpertFfnTiling>> {
    const K: &str = "expert_ffn";
    let FfnShape {
        rows,
        groups,
        max_group_rows,
        hidden,
        inter,
    } = shape;
    let cube = lib.hardware().cube;
    let tiling = ExpertFfnTiling::new(
        rows as u64,
        groups as u64,
        max_group_rows as u64,
        hidden as u64,
        inter as u64,
        group_list.kind,
        T::DTYPE,
        cube,
        FfnTaskWidths::PerLaunch,
    )?;
    let rh = product(K, "rows * hidden", rows, hidden)?;
    expect_len(K, "x", x.len(), rh)?;
    let w = product(
        K,
        "groups * inter * hidden",
        product(K, "groups * inter", groups, inter)?,
        hidden,
    )?;
    expect_len(K, "w_gate", w_gate.len(), w)?;
    expect_len(K, "w_up", w_up.len(), w)?;
    expect_len(K, "w_down", w_down.len(), w)?;
    expect_len(K, "y", y.len(), rh)?;
    check_window(K, &group_list, groups)?;
    let (kernel, dtype) = weight_kernel(
        K,
        Kernel::ExpertFfn,
        Kernel::ExpertFfnF32W,
        T::DTYPE,
        W::DTYPE,
    )?;
    let symbol = kernel.symbol(dtype);
    let f = lib.function(kernel, dtype)?;
    let ws_bytes = usize::try_from(tiling.workspace_bytes(T::DTYPE))
        .map_err(|_| invalid(K, "the workspace does not fit the address space"))?;
    let mut workspace = stream
        .alloc::<u8>(ws_bytes)
        .map_err(|e| device_error(symbol, e))?;
    let blocks = tiling.block_dim(cube);
    // SAFETY: expert_ffn_<t> / expert_ffn_f32_w<w>(x, w_gate, w_up, w_down, group_list, y, workspace,
    // tiling); x and y hold rows x hidden elements of T, w_gate and w_up groups x inter x hidden, w_down
    // groups x hidden x inter elements of W, the kernel's weight type (checked above; the two weight
    // shapes have the same element count), the sizes the kernel gives its GlobalTensors; the workspace
    // is workspace_bytes() (the system workspace, then gate and up f32 and h in T, rows x inter each).
    // The list is read as in grouped_matmul (`groups` entries from entry `first` on). A mix launch of
    // block_dim() <= the cube cores blocks, all resident, so its vector cores meet at SyncAll. Written: y
    // and the workspace (arg_mut).
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(w_gate)
            .arg(w_up)
            .arg(w_down)
            .arg_at(group_list.list, group_list.first)
            .arg_mut(y)
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
