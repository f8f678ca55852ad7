//! Launchers of `gather_rows_<t>`, `gather_rows_<t>_f32`, `argmax_<t>` and `softmax_<t>` (`src/ascendc/gather_rows.cpp`, `argmax.cpp`, `softmax.cpp`): the
//! data movement and greedy sampling of a device-resident model step.

use dsnpu_runtime::{DeviceBuffer, DeviceRepr, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{ArgmaxTiling, GatherRowsDims, GatherRowsTiling, Kernel, Result, SoftmaxTiling};

/// Where each output row of a gather comes from (see [`GatherRowsDims`]): with `r = i·inner + j`,
/// `y[r] = x[offset + i·stride_a + j·stride_b (+ idx[r]·stride_idx) ..][..cols]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSource {
    pub rows: usize,
    pub inner: usize,
    pub cols: usize,
    pub offset: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    /// `Some((stride, rows it may select))` with an index list.
    pub by_index: Option<(usize, usize)>,
}

impl RowSource {
    /// Whether the gather would copy a `[rows, cols]` source as it is (no index list, every row where
    /// it already is): a caller can use the source instead of launching.
    pub fn is_identity(&self) -> bool {
        self.by_index.is_none()
            && self.offset == 0
            && self.inner >= 1
            && self.rows.is_multiple_of(self.inner)
            && (self.inner == 1 || self.stride_b == self.cols)
            && (self.rows == self.inner || Some(self.stride_a) == self.inner.checked_mul(self.cols))
    }

    /// `[a, b, c]` (row-major, rows `stride` apart within a `[a, b, stride]` source, starting at
    /// `offset`) to `[b, a, c]`.
    pub fn swap_leading(a: usize, b: usize, c: usize, stride: usize, offset: usize) -> RowSource {
        RowSource {
            rows: a * b,
            inner: a,
            cols: c,
            offset,
            stride_a: stride,
            stride_b: b * stride,
            by_index: None,
        }
    }

    /// Rows of `cols` picked from a `[table_rows, cols]` table by an index list of `rows` entries.
    pub fn lookup(rows: usize, cols: usize, table_rows: usize) -> RowSource {
        RowSource {
            rows,
            inner: 1,
            cols,
            offset: 0,
            stride_a: 0,
            stride_b: 0,
            by_index: Some((cols, table_rows)),
        }
    }
}

/// Copies the rows `src` describes from `x` into `y [rows, cols]`; `idx` (i32 `[rows]`) is required
/// exactly when `src.by_index` is set. Index values live on the device and are not checked here: one
/// outside the source faults on the kernel's checked read (simulator). Only `y` is written.
pub fn gather_rows<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    idx: Option<&DeviceBuffer<i32>>,
    y: &mut DeviceBuffer<T>,
    src: RowSource,
) -> Result<Launched<GatherRowsTiling>> {
    gather(lib, stream, x, idx, y, src, Kernel::GatherRows)
}

/// [`gather_rows`] into f32 rows from a source of any kernel type (`gather_rows_<s>_f32`, widened
/// exactly on the way): the lookup of a 16-bit embedding table by an f32 model, the f32 copy of
/// 16-bit activations.
pub fn gather_rows_f32<S: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<S>,
    idx: Option<&DeviceBuffer<i32>>,
    y: &mut DeviceBuffer<f32>,
    src: RowSource,
) -> Result<Launched<GatherRowsTiling>> {
    gather(lib, stream, x, idx, y, src, Kernel::GatherRowsF32)
}

/// `kernel` (GatherRows with `S == D`, GatherRowsF32 with `D = f32`) instantiated for `S`.
fn gather<S: KernelElem, D: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<S>,
    idx: Option<&DeviceBuffer<i32>>,
    y: &mut DeviceBuffer<D>,
    src: RowSource,
    kernel: Kernel,
) -> Result<Launched<GatherRowsTiling>> {
    const K: &str = "gather_rows";
    if idx.is_some() != src.by_index.is_some() {
        return Err(crate::KernelError::InvalidShape {
            kernel: K,
            reason: "an index list is passed exactly when rows are picked by index".into(),
        });
    }
    // The widening kernel holds a chunk twice in UB (source type and f32): tile for f32 in half the UB.
    let mut budget = lib.hardware().vector;
    let tile_dtype = if kernel == Kernel::GatherRowsF32 {
        budget.ub_bytes /= 2;
        crate::KernelDtype::F32
    } else {
        S::DTYPE
    };
    let tiling = GatherRowsTiling::new(
        GatherRowsDims {
            rows: src.rows as u64,
            inner: src.inner as u64,
            cols: src.cols as u64,
            offset: src.offset as u64,
            stride_a: src.stride_a as u64,
            stride_b: src.stride_b as u64,
            stride_idx: src.by_index.map(|(s, _)| s as u64),
            src_len: x.len() as u64,
            idx_rows: src.by_index.map_or(0, |(_, n)| n as u64),
        },
        tile_dtype,
        budget,
    )?;
    expect_len(
        K,
        "y",
        y.len(),
        product(K, "rows * cols", src.rows, src.cols)?,
    )?;
    if let Some(i) = idx {
        expect_len(K, "idx", i.len(), src.rows)?;
    }
    let symbol = kernel.symbol(S::DTYPE);
    let f = lib.function(kernel, S::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: gather_rows_<s>(x, idx, y, workspace, tiling) with y in S, or gather_rows_<s>_f32 with y
    // in f32 (the callers pair `kernel` with D); the tiling gives x's GlobalTensor exactly x.len()
    // elements (src_len) and y rows x cols (checked), idx `rows` i32 when has_idx (checked; null
    // otherwise and then never read); every read is a checked GM access, so a bad index faults rather
    // than leaving x. UB: two tiles of rows_per_tile rows of cols_per_tile elements of S (gather_rows_<s>),
    // or cols_per_tile elements of S and of f32 in half the UB (the widening kernel). Only y is
    // written (arg_mut); the workspace is unused.
    unsafe {
        let mut a = f.builder(stream);
        a.arg(x);
        match idx {
            Some(i) => a.arg(i),
            None => a.null(),
        };
        a.arg_mut(y).null().tiling(&tiling).launch(blocks)
    }
    .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}

/// `out[r]` = the lowest index of the largest of `x[r, :cols]`, compared in f32 (`x [rows, cols]`,
/// `out` i32 `[rows]`), or -1 when the row holds a NaN or an infinity.
pub fn argmax<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<i32>,
    rows: usize,
    cols: usize,
) -> Result<Launched<ArgmaxTiling>> {
    const K: &str = "argmax";
    let tiling = ArgmaxTiling::new(rows as u64, cols as u64, T::DTYPE, lib.hardware().vector)?;
    expect_len(K, "x", x.len(), product(K, "rows * cols", rows, cols)?)?;
    expect_len(K, "out", out.len(), rows)?;
    let blocks = tiling.block_dim();
    // SAFETY: x holds rows x cols elements of T and out rows i32 (checked above), the extents
    // argmax_<t> gives its GlobalTensors.
    unsafe { launch_row_kernel(lib, stream, Kernel::Argmax, x, out, tiling, blocks) }
}

/// `out[r, :]` = softmax of `x[r, :cols]` in f32 (`x [rows, cols]`, `out` f32 `[rows, cols]`); the
/// semantics of `dsnpu_ops::sampling::softmax`.
pub fn softmax<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<Launched<SoftmaxTiling>> {
    const K: &str = "softmax";
    let tiling = SoftmaxTiling::new(rows as u64, cols as u64, T::DTYPE, lib.hardware().vector)?;
    let n = product(K, "rows * cols", rows, cols)?;
    expect_len(K, "x", x.len(), n)?;
    expect_len(K, "out", out.len(), n)?;
    let blocks = tiling.block_dim();
    // SAFETY: x holds rows x cols elements of T and out rows x cols f32 (checked above), the extents
    // softmax_<t> gives its GlobalTensors.
    unsafe { launch_row_kernel(lib, stream, Kernel::Softmax, x, out, tiling, blocks) }
}

/// Launches a row kernel `kernel_<t>(x, out, workspace, tiling)` (argmax, softmax) on `blocks` blocks:
/// only `out` is written, the workspace is unused (null).
///
/// # Safety
/// `x` and `out` hold at least the elements `tiling` makes the kernel address.
unsafe fn launch_row_kernel<T: KernelElem, O: DeviceRepr, L: DeviceRepr>(
    lib: &KernelLibrary,
    stream: &Stream,
    kernel: Kernel,
    x: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<O>,
    tiling: L,
    blocks: u32,
) -> Result<Launched<L>> {
    let symbol = kernel.symbol(T::DTYPE);
    let f = lib.function(kernel, T::DTYPE)?;
    // SAFETY: the caller guarantees the extents of x and out; only out is written (arg_mut); the
    // workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg_mut(out)
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

#[cfg(test)]
mod tests {
    use super::RowSource;

    /// The source row each output row reads, by the formula of [`RowSource`].
    fn sources(s: &RowSource) -> Vec<usize> {
        (0..s.rows)
            .map(|r| s.offset + (r / s.inner) * s.stride_a + (r % s.inner) * s.stride_b)
            .collect()
    }

    #[test]
    fn identity_is_exactly_the_in_place_layouts() {
        let cases = [
            (RowSource::swap_leading(4, 1, 8, 8, 0), true), // [H, 1, d] -> [1, H, d]
            (RowSource::swap_leading(1, 3, 8, 8, 0), true), // [1, T, d] -> [T, 1, d]
            (RowSource::swap_leading(2, 3, 8, 8, 0), false),
            (RowSource::swap_leading(4, 1, 8, 10, 0), false), // q_nope of [1, H, dn + dr]
            (RowSource::swap_leading(4, 1, 8, 8, 2), false),
            (RowSource::lookup(3, 8, 3), false),
        ];
        for (s, want) in cases {
            assert_eq!(s.is_identity(), want, "{s:?}");
            // Independently: an identity reads row r from r·cols for every r.
            let in_place = s.by_index.is_none()
                && sources(&s)
                    .iter()
                    .enumerate()
                    .all(|(r, &src)| src == r * s.cols);
            assert_eq!(in_place, want, "{s:?}");
        }
    }
}
