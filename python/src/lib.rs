//! `dsnpu._dsnpu`: the Python extension behind the `dsnpu` package (`python/dsnpu/__init__.py`).
//!
//! Tensors cross as `(bytes, shape, dtype)` triples (little-endian elements, row-major; dtype one of
//! `f32 f16 bf16 i32 i64 i8`), so the extension needs no numpy C API: the Python layer turns numpy
//! arrays into triples and back (bf16 as `ml_dtypes.bfloat16` or `uint16` bit patterns). Each
//! operator runs on a backend named by a string: `"npu"` (dsnpu's kernels on device 0 through
//! `dsnpu_ops::backend::Npu`: the simulator without CANN; operators without a kernel are refused with
//! the backend's `Unsupported` error) or `"cpu"` (the CPU references). Validation is the operators'
//! own (`dsnpu_ops`); an `OpsError` becomes a `ValueError` with its message (its causes' texts
//! appended), a malformed triple a `ValueError` naming the argument. The exception is
//! `OpsError::Backend`, the device failing while it ran the operator: `RuntimeError`, or
//! `OutOfMemoryError` (a `RuntimeError`) when device memory ran out somewhere along its cause chain.
//!
//! `OutOfMemoryError` is the one exception for device memory running out, whatever ran out of it: an
//! operator here, or `Model` and `Engine` (weights or a paged cache that do not fit when loaded, a step
//! that finds no memory), like the C API's one `DSNPU_STATUS_OUT_OF_MEMORY`.

// pyo3 0.22's #[pyfunction] expansion converts PyErr into PyErr, which newer clippy flags in our code.
#![allow(clippy::useless_conversion)]

mod engine;
mod model;

use std::sync::{Mutex, PoisonError};

use dsnpu_model::error::out_of_memory_in_chain;
use dsnpu_ops::backend::{Backend, Cpu, DenseOps, MlaOps, MoeOps, Npu};
use dsnpu_ops::conformance::{cases, cases::CaseRng};
use dsnpu_ops::mla::{
    mla_cache_write_fused, mla_prefill_cached as cpu_mla_prefill_cached, CacheWriteParams,
    PagedLatentCache,
};
use dsnpu_ops::moe::{ExpertTokensMode, GatingConfig, GroupListType, ScoreFunc};
use dsnpu_ops::rope::{RopeConfig, RopeLayout, RopeTable};
use dsnpu_ops::{Float, OpsError};
use ndarray::{ArrayD, Dimension, IntoDimension, Ix1, Ix2, Ix3, Ix4};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod exceptions {
    // pyo3 0.22's macro tests pyo3's own `gil-refs` feature in the calling crate.
    #![allow(unexpected_cfgs)]

    use pyo3::create_exception;
    use pyo3::exceptions::PyRuntimeError;

    create_exception!(
        dsnpu,
        OutOfMemoryError,
        PyRuntimeError,
        "Device memory ran out: weights or a paged cache that do not fit, or an operator or a step \
         that found no memory. A RuntimeError, as torch.cuda.OutOfMemoryError is."
    );
}
use exceptions::OutOfMemoryError;

// pyo3 (from 0.23) requires its classes to be `Sync`, and their methods lock their state with the
// GIL released, which needs it too; the state behind the locks is `Send + Sync` itself (the model
// crate's engine keeps no `RefCell`). A field that breaks it fails the build here.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<model::Model>();
    send_sync::<engine::Engine>();
    send_sync::<dsnpu_model::device::Engine>();
    send_sync::<dsnpu_model::DeepseekV3>();
};

/// A tensor as it arrives from Python.
type In<'py> = (Bound<'py, PyBytes>, Vec<usize>, String);
/// A tensor as it returns to Python.
type Out = (PyObject, Vec<usize>, String);

/// Element types that cross the boundary.
trait Elem: Copy + Sized {
    const NAME: &'static str;
    const SIZE: usize;
    fn read(b: &[u8]) -> Self;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! elem {
    ($t:ty, $name:literal, $size:literal, |$b:ident| $read:expr, |$v:ident| $bytes:expr) => {
        impl Elem for $t {
            const NAME: &'static str = $name;
            const SIZE: usize = $size;
            fn read($b: &[u8]) -> Self {
                $read
            }
            fn write(self, out: &mut Vec<u8>) {
                let $v = self;
                out.extend_from_slice(&$bytes)
            }
        }
    };
}
elem!(
    f32,
    "f32",
    4,
    |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    |v| v.to_le_bytes()
);
elem!(
    half::f16,
    "f16",
    2,
    |b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])),
    |v| v.to_bits().to_le_bytes()
);
elem!(
    half::bf16,
    "bf16",
    2,
    |b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])),
    |v| v.to_bits().to_le_bytes()
);
elem!(
    i32,
    "i32",
    4,
    |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    |v| v.to_le_bytes()
);
elem!(
    i64,
    "i64",
    8,
    |b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    |v| v.to_le_bytes()
);
elem!(i8, "i8", 1, |b| b[0] as i8, |v| [v as u8]);

/// Decodes argument `name` as a `D`-dimensional array of `T`.
fn arr<T: Elem, D: Dimension>(name: &str, t: &In<'_>) -> PyResult<ndarray::Array<T, D>> {
    let (bytes, shape, dtype) = t;
    if dtype != T::NAME {
        return Err(PyValueError::new_err(format!(
            "{name}: dtype {dtype}, expected {}",
            T::NAME
        )));
    }
    let data = bytes.as_bytes();
    // Checked: a shape is any list of ints here, and a wrapped product must not pass for the size.
    let n = shape
        .iter()
        .try_fold(T::SIZE, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{name}: shape {shape:?} of {dtype} overflows the address space"
            ))
        })?;
    if data.len() != n {
        return Err(PyValueError::new_err(format!(
            "{name}: {} bytes for shape {shape:?} of {dtype}",
            data.len()
        )));
    }
    let v: Vec<T> = data.chunks_exact(T::SIZE).map(T::read).collect();
    let a = ArrayD::from_shape_vec(shape.clone(), v)
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))?;
    a.into_dimensionality::<D>().map_err(|_| {
        PyValueError::new_err(format!(
            "{name}: {} dimensions, expected {}",
            shape.len(),
            D::NDIM.unwrap_or(0)
        ))
    })
}

fn opt_arr<T: Elem, D: Dimension>(
    name: &str,
    t: &Option<In<'_>>,
) -> PyResult<Option<ndarray::Array<T, D>>> {
    t.as_ref().map(|t| arr(name, t)).transpose()
}

fn out<T: Elem, D: Dimension>(py: Python<'_>, a: ndarray::Array<T, D>) -> Out {
    let shape = a.shape().to_vec();
    let mut bytes = Vec::with_capacity(a.len() * T::SIZE);
    for &v in a.iter() {
        v.write(&mut bytes);
    }
    (
        PyBytes::new_bound(py, &bytes).into(),
        shape,
        T::NAME.to_string(),
    )
}

/// Runs an operator or a model call without holding the GIL: on the simulator a kernel runs on the
/// host and can take seconds, during which the interpreter's other threads should run. The arrays are
/// the extension's own copies, so nothing of Python's is touched meanwhile.
fn nogil<R: Send>(py: Python<'_>, f: impl FnOnce() -> R + Send) -> R {
    py.allow_threads(f)
}

/// Runs `f` on the state behind `state` without holding the GIL: a call that overlaps another on the
/// same object waits for it. The GIL is released before the lock is taken: a thread waiting for the
/// lock with the GIL held would block the thread holding the lock, which needs the GIL to return.
fn locked<T: Send, R: Send>(
    py: Python<'_>,
    state: &Mutex<T>,
    f: impl FnOnce(&mut T) -> R + Send,
) -> R {
    py.allow_threads(|| {
        // A call that panicked (a PanicException in Python) poisons the lock; the object stays usable,
        // as it was when pyo3's borrow flag guarded it.
        let mut guard = state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    })
}

/// `e`'s message, then its causes' texts that it does not already hold.
fn message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        // Errors that print their source (a backend's kernel error, `device: {0}`) already hold its text.
        let text = c.to_string();
        if !msg.contains(&text) {
            msg += &format!(": {text}");
        }
        src = c.source();
    }
    msg
}

fn ops_err(e: OpsError) -> PyErr {
    let msg = message(&e);
    match e {
        // The device failed while it ran the operator: not a bad argument.
        OpsError::Backend { .. } if out_of_memory_in_chain(&e) => OutOfMemoryError::new_err(msg),
        OpsError::Backend { .. } => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// The backends, by name.
enum Be {
    Cpu(Cpu),
    Npu(Npu),
}

fn backend(name: &str) -> PyResult<Be> {
    static NPU: Mutex<Option<Npu>> = Mutex::new(None);
    match name {
        "cpu" => Ok(Be::Cpu(Cpu)),
        "npu" => {
            let mut slot = NPU.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(Npu::new(0).map_err(ops_err)?);
            }
            Ok(Be::Npu(slot.clone().expect("set above")))
        }
        other => Err(PyValueError::new_err(format!(
            "backend {other:?}: expected \"npu\" or \"cpu\""
        ))),
    }
}

/// Calls `$f::<B, T>(&backend, args)` for the backend and the float dtype named.
macro_rules! dispatch {
    ($be:expr, $dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match (&$be, $dtype.as_str()) {
            (Be::Cpu(b), "f32") => $f::<_, f32>(b, $($arg),*),
            (Be::Cpu(b), "f16") => $f::<_, half::f16>(b, $($arg),*),
            (Be::Cpu(b), "bf16") => $f::<_, half::bf16>(b, $($arg),*),
            (Be::Npu(b), "f32") => $f::<_, f32>(b, $($arg),*),
            (Be::Npu(b), "f16") => $f::<_, half::f16>(b, $($arg),*),
            (Be::Npu(b), "bf16") => $f::<_, half::bf16>(b, $($arg),*),
            (_, d) => Err(PyValueError::new_err(format!("dtype {d}: expected f32, f16 or bf16"))),
        }
    };
}

/// The name the backend reports (`"cpu"`, `"sim:0"`, `"npu:0"`).
#[pyfunction]
fn backend_name(name: &str) -> PyResult<String> {
    Ok(match backend(name)? {
        Be::Cpu(b) => b.name(),
        Be::Npu(b) => b.name(),
    })
}

fn rms_norm_t<B: DenseOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    w: &In,
    eps: f32,
) -> PyResult<Out> {
    let (x, w) = (arr::<T, Ix2>("x", x)?, arr::<T, Ix1>("weight", w)?);
    Ok(out(
        py,
        nogil(py, || b.rms_norm(x.view(), w.view(), eps)).map_err(ops_err)?,
    ))
}

#[pyfunction]
fn rms_norm(py: Python<'_>, x: In, weight: In, eps: f32, backend_: &str) -> PyResult<Out> {
    dispatch!(backend(backend_)?, x.2, rms_norm_t(py, &x, &weight, eps))
}

fn add_rms_norm_t<B: DenseOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    r: &In,
    w: &In,
    eps: f32,
) -> PyResult<(Out, Out)> {
    let (x, r, w) = (
        arr::<T, Ix2>("x", x)?,
        arr::<T, Ix2>("residual", r)?,
        arr::<T, Ix1>("weight", w)?,
    );
    let (y, s) =
        nogil(py, || b.add_rms_norm(x.view(), r.view(), w.view(), eps)).map_err(ops_err)?;
    Ok((out(py, y), out(py, s)))
}

#[pyfunction]
fn add_rms_norm(
    py: Python<'_>,
    x: In,
    residual: In,
    weight: In,
    eps: f32,
    backend_: &str,
) -> PyResult<(Out, Out)> {
    dispatch!(
        backend(backend_)?,
        x.2,
        add_rms_norm_t(py, &x, &residual, &weight, eps)
    )
}

fn rope_t<B: DenseOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    pos: &In,
    table: &RopeTable,
    layout: RopeLayout,
) -> PyResult<Out> {
    let (x, pos) = (arr::<T, Ix3>("x", x)?, arr::<i32, Ix1>("positions", pos)?);
    Ok(out(
        py,
        nogil(py, || b.rope(x.view(), pos.view(), table, layout)).map_err(ops_err)?,
    ))
}

/// Plain RoPE (no YaRN scaling) with base `theta` over the last dimension of `x [T, H, D]`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn rope(
    py: Python<'_>,
    x: In,
    positions: In,
    theta: f32,
    max_positions: usize,
    interleaved: bool,
    backend_: &str,
) -> PyResult<Out> {
    let dim = x.1.last().copied().unwrap_or(0);
    let cfg = RopeConfig {
        dim,
        theta,
        scaling: None,
    };
    let table = RopeTable::new(&cfg, max_positions).map_err(ops_err)?;
    let layout = if interleaved {
        RopeLayout::Interleaved
    } else {
        RopeLayout::HalfSplit
    };
    dispatch!(
        backend(backend_)?,
        x.2,
        rope_t(py, &x, &positions, &table, layout)
    )
}

fn silu_mul_t<B: DenseOps, T: Float + Elem>(b: &B, py: Python<'_>, gu: &In) -> PyResult<Out> {
    let gu = arr::<T, Ix2>("gate_up", gu)?;
    Ok(out(
        py,
        nogil(py, || b.silu_mul(gu.view())).map_err(ops_err)?,
    ))
}

#[pyfunction]
fn silu_mul(py: Python<'_>, gate_up: In, backend_: &str) -> PyResult<Out> {
    dispatch!(backend(backend_)?, gate_up.2, silu_mul_t(py, &gate_up))
}

fn linear_t<B: DenseOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    w: &In,
    bias: &Option<In>,
) -> PyResult<Out> {
    let (x, w) = (arr::<T, Ix2>("x", x)?, arr::<T, Ix2>("w", w)?);
    let bias = opt_arr::<T, Ix1>("bias", bias)?;
    Ok(out(
        py,
        nogil(py, || {
            b.linear(x.view(), w.view(), bias.as_ref().map(|b| b.view()))
        })
        .map_err(ops_err)?,
    ))
}

#[pyfunction]
#[pyo3(signature = (x, w, bias, backend_))]
fn linear(py: Python<'_>, x: In, w: In, bias: Option<In>, backend_: &str) -> PyResult<Out> {
    dispatch!(backend(backend_)?, x.2, linear_t(py, &x, &w, &bias))
}

fn gating_t<B: MoeOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    logits: &In,
    bias: &Option<In>,
    cfg: &GatingConfig,
) -> PyResult<(Out, Out)> {
    let logits = arr::<T, Ix2>("logits", logits)?;
    let bias = opt_arr::<f32, Ix1>("bias", bias)?;
    let (ids, w) = nogil(py, || {
        b.moe_gating_topk(logits.view(), bias.as_ref().map(|b| b.view()), cfg)
    })
    .map_err(ops_err)?;
    Ok((out(py, ids), out(py, w)))
}

#[pyfunction]
#[pyo3(signature = (logits, bias, top_k, n_group, topk_group, score, normalize, routed_scaling_factor, backend_))]
#[allow(clippy::too_many_arguments)]
fn moe_gating_topk(
    py: Python<'_>,
    logits: In,
    bias: Option<In>,
    top_k: usize,
    n_group: usize,
    topk_group: usize,
    score: &str,
    normalize: bool,
    routed_scaling_factor: f32,
    backend_: &str,
) -> PyResult<(Out, Out)> {
    let score = match score {
        "softmax" => ScoreFunc::Softmax,
        "sigmoid" => ScoreFunc::Sigmoid,
        s => {
            return Err(PyValueError::new_err(format!(
                "score {s:?}: expected softmax or sigmoid"
            )))
        }
    };
    let cfg = GatingConfig {
        top_k,
        n_group,
        topk_group,
        score,
        normalize,
        routed_scaling_factor,
    };
    dispatch!(
        backend(backend_)?,
        logits.2,
        gating_t(py, &logits, &bias, &cfg)
    )
}

fn mode(cumsum: bool) -> ExpertTokensMode {
    if cumsum {
        ExpertTokensMode::Cumsum
    } else {
        ExpertTokensMode::Count
    }
}

fn list_type(cumsum: bool) -> GroupListType {
    if cumsum {
        GroupListType::Cumsum
    } else {
        GroupListType::Counts
    }
}

type Dispatched = (Out, Out, Out);

fn init_routing_t<B: MoeOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    ids: &In,
    experts: usize,
    active: Option<(usize, usize)>,
    cumsum: bool,
) -> PyResult<Dispatched> {
    let (x, ids) = (arr::<T, Ix2>("x", x)?, arr::<i32, Ix2>("ids", ids)?);
    let r = nogil(py, || {
        b.moe_init_routing(
            x.view(),
            ids.view(),
            experts,
            active.map(|(a, e)| a..e),
            mode(cumsum),
        )
    })
    .map_err(ops_err)?;
    Ok((
        out(py, r.expanded_x),
        out(py, r.expanded_row_idx),
        out(py, r.expert_tokens),
    ))
}

#[pyfunction]
#[pyo3(signature = (x, ids, num_experts, active, cumsum, backend_))]
fn moe_init_routing(
    py: Python<'_>,
    x: In,
    ids: In,
    num_experts: usize,
    active: Option<(usize, usize)>,
    cumsum: bool,
    backend_: &str,
) -> PyResult<Dispatched> {
    dispatch!(
        backend(backend_)?,
        x.2,
        init_routing_t(py, &x, &ids, num_experts, active, cumsum)
    )
}

fn init_routing_quant_t<B: MoeOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    ids: &In,
    experts: usize,
    active: Option<(usize, usize)>,
    cumsum: bool,
) -> PyResult<(Out, Out, Out, Out)> {
    let (x, ids) = (arr::<T, Ix2>("x", x)?, arr::<i32, Ix2>("ids", ids)?);
    let r = nogil(py, || {
        b.moe_init_routing_quant(
            x.view(),
            ids.view(),
            experts,
            active.map(|(a, e)| a..e),
            mode(cumsum),
        )
    })
    .map_err(ops_err)?;
    Ok((
        out(py, r.expanded_x),
        out(py, r.scales),
        out(py, r.expanded_row_idx),
        out(py, r.expert_tokens),
    ))
}

#[pyfunction]
#[pyo3(signature = (x, ids, num_experts, active, cumsum, backend_))]
fn moe_init_routing_quant(
    py: Python<'_>,
    x: In,
    ids: In,
    num_experts: usize,
    active: Option<(usize, usize)>,
    cumsum: bool,
    backend_: &str,
) -> PyResult<(Out, Out, Out, Out)> {
    dispatch!(
        backend(backend_)?,
        x.2,
        init_routing_quant_t(py, &x, &ids, num_experts, active, cumsum)
    )
}

fn grouped_t<B: MoeOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    w: &In,
    gl: &In,
    cumsum: bool,
) -> PyResult<Out> {
    let (x, w, gl) = (
        arr::<T, Ix2>("x", x)?,
        arr::<T, Ix3>("w", w)?,
        arr::<i64, Ix1>("group_list", gl)?,
    );
    Ok(out(
        py,
        nogil(py, || {
            b.grouped_matmul(x.view(), w.view(), gl.view(), list_type(cumsum))
        })
        .map_err(ops_err)?,
    ))
}

#[pyfunction]
fn grouped_matmul(
    py: Python<'_>,
    x: In,
    w: In,
    group_list: In,
    cumsum: bool,
    backend_: &str,
) -> PyResult<Out> {
    dispatch!(
        backend(backend_)?,
        x.2,
        grouped_t(py, &x, &w, &group_list, cumsum)
    )
}

#[allow(clippy::too_many_arguments)]
fn ffn_t<B: MoeOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    x: &In,
    wg: &In,
    wu: &In,
    wd: &In,
    gl: &In,
    cumsum: bool,
) -> PyResult<Out> {
    let x = arr::<T, Ix2>("x", x)?;
    let (wg, wu, wd) = (
        arr::<T, Ix3>("w_gate", wg)?,
        arr::<T, Ix3>("w_up", wu)?,
        arr::<T, Ix3>("w_down", wd)?,
    );
    let gl = arr::<i64, Ix1>("group_list", gl)?;
    let y = nogil(py, || {
        b.expert_ffn(
            x.view(),
            wg.view(),
            wu.view(),
            wd.view(),
            gl.view(),
            list_type(cumsum),
        )
    })
    .map_err(ops_err)?;
    Ok(out(py, y))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn expert_ffn(
    py: Python<'_>,
    x: In,
    w_gate: In,
    w_up: In,
    w_down: In,
    group_list: In,
    cumsum: bool,
    backend_: &str,
) -> PyResult<Out> {
    dispatch!(
        backend(backend_)?,
        x.2,
        ffn_t(py, &x, &w_gate, &w_up, &w_down, &group_list, cumsum)
    )
}

#[allow(clippy::too_many_arguments)]
fn finalize_t<B: MoeOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    y: &In,
    idx: &In,
    w: &In,
    shared: &Option<In>,
    residual: &Option<In>,
) -> PyResult<Out> {
    let (y, idx, w) = (
        arr::<T, Ix2>("y", y)?,
        arr::<i32, Ix1>("expanded_row_idx", idx)?,
        arr::<f32, Ix2>("weights", w)?,
    );
    let (sh, re) = (
        opt_arr::<T, Ix2>("shared", shared)?,
        opt_arr::<T, Ix2>("residual", residual)?,
    );
    let o = nogil(py, || {
        b.moe_finalize_routing(
            y.view(),
            idx.view(),
            w.view(),
            sh.as_ref().map(|a| a.view()),
            re.as_ref().map(|a| a.view()),
        )
    })
    .map_err(ops_err)?;
    Ok(out(py, o))
}

#[pyfunction]
#[pyo3(signature = (y, expanded_row_idx, weights, shared, residual, backend_))]
fn moe_finalize_routing(
    py: Python<'_>,
    y: In,
    expanded_row_idx: In,
    weights: In,
    shared: Option<In>,
    residual: Option<In>,
    backend_: &str,
) -> PyResult<Out> {
    dispatch!(
        backend(backend_)?,
        y.2,
        finalize_t(py, &y, &expanded_row_idx, &weights, &shared, &residual)
    )
}

#[allow(clippy::too_many_arguments)]
fn mla_decode_t<B: MlaOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    qn: &In,
    qr: &In,
    latent: &In,
    rope: &In,
    table: &In,
    lens: &In,
    scale: f32,
) -> PyResult<(Out, Out)> {
    let (qn, qr) = (arr::<T, Ix4>("q_nope", qn)?, arr::<T, Ix4>("q_rope", qr)?);
    let cache = PagedLatentCache {
        latent: arr::<T, Ix3>("latent", latent)?,
        rope: arr::<T, Ix3>("rope_cache", rope)?,
    };
    let (table, lens) = (
        arr::<i32, Ix2>("block_table", table)?,
        arr::<i32, Ix1>("seq_lens", lens)?,
    );
    let (o, lse) = nogil(py, || {
        b.mla_decode(
            qn.view(),
            qr.view(),
            &cache,
            table.view(),
            lens.view(),
            scale,
        )
    })
    .map_err(ops_err)?;
    Ok((out(py, o), out(py, lse)))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn mla_decode(
    py: Python<'_>,
    q_nope: In,
    q_rope: In,
    latent: In,
    rope_cache: In,
    block_table: In,
    seq_lens: In,
    scale: f32,
    backend_: &str,
) -> PyResult<(Out, Out)> {
    dispatch!(
        backend(backend_)?,
        q_nope.2,
        mla_decode_t(
            py,
            &q_nope,
            &q_rope,
            &latent,
            &rope_cache,
            &block_table,
            &seq_lens,
            scale
        )
    )
}

/// The conformance suites' `(rows, width)` matrix for row-wise operators.
fn mla_prefill_t<B: MlaOps, T: Float + Elem>(
    b: &B,
    py: Python<'_>,
    q: &In,
    k: &In,
    v: &In,
    cu: &In,
    scale: f32,
) -> PyResult<(Out, Out)> {
    let (q, k, v) = (
        arr::<T, Ix3>("q", q)?,
        arr::<T, Ix3>("k", k)?,
        arr::<T, Ix3>("v", v)?,
    );
    let cu = arr::<i32, Ix1>("cu_seqlens", cu)?;
    let (o, lse) = nogil(py, || {
        b.mla_prefill(q.view(), k.view(), v.view(), cu.view(), scale)
    })
    .map_err(ops_err)?;
    Ok((out(py, o), out(py, lse)))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn mla_prefill(
    py: Python<'_>,
    q: In,
    k: In,
    v: In,
    cu_seqlens: In,
    scale: f32,
    backend_: &str,
) -> PyResult<(Out, Out)> {
    dispatch!(
        backend(backend_)?,
        q.2,
        mla_prefill_t(py, &q, &k, &v, &cu_seqlens, scale)
    )
}

#[allow(clippy::too_many_arguments)]
fn mla_prefill_cached_t<T: Float + Elem>(
    be: &Be,
    py: Python<'_>,
    q: &In,
    cu_q: &In,
    caches: (&In, &In),
    table: &In,
    lens: &In,
    kv_b: &In,
    scale: f32,
) -> PyResult<(Out, Out)> {
    let (q, cu_q) = (arr::<T, Ix3>("q", q)?, arr::<i32, Ix1>("cu_q", cu_q)?);
    let cache = PagedLatentCache {
        latent: arr::<T, Ix3>("latent", caches.0)?,
        rope: arr::<T, Ix3>("rope_cache", caches.1)?,
    };
    let (table, lens) = (
        arr::<i32, Ix2>("block_table", table)?,
        arr::<i32, Ix1>("seq_lens", lens)?,
    );
    let kv_b = arr::<T, Ix2>("kv_b", kv_b)?;
    let (qv, cv, tv, lv, wv) = (
        q.view(),
        cu_q.view(),
        table.view(),
        lens.view(),
        kv_b.view(),
    );
    let (o, lse) = nogil(py, || match be {
        Be::Cpu(_) => cpu_mla_prefill_cached(qv, cv, &cache, tv, lv, wv, scale),
        Be::Npu(npu) => npu.mla_prefill_cached(qv, cv, &cache, tv, lv, wv, scale),
    })
    .map_err(ops_err)?;
    Ok((out(py, o), out(py, lse)))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn mla_prefill_cached(
    py: Python<'_>,
    q: In,
    cu_q: In,
    latent: In,
    rope_cache: In,
    block_table: In,
    seq_lens: In,
    kv_b: In,
    scale: f32,
    backend_: &str,
) -> PyResult<(Out, Out)> {
    let be = backend(backend_)?;
    let caches = (&latent, &rope_cache);
    let (c, t, l, w) = (&cu_q, &block_table, &seq_lens, &kv_b);
    match q.2.as_str() {
        "f32" => mla_prefill_cached_t::<f32>(&be, py, &q, c, caches, t, l, w, scale),
        "f16" => mla_prefill_cached_t::<half::f16>(&be, py, &q, c, caches, t, l, w, scale),
        "bf16" => mla_prefill_cached_t::<half::bf16>(&be, py, &q, c, caches, t, l, w, scale),
        d => Err(PyValueError::new_err(format!(
            "dtype {d}: expected f32, f16 or bf16"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn mla_cache_write_t<T: Float + Elem>(
    be: &Be,
    py: Python<'_>,
    caches: (&In, &In),
    kv: &In,
    weight: &In,
    positions: &In,
    slots: &In,
    eps: f32,
    (table, layout): (&RopeTable, RopeLayout),
) -> PyResult<(Out, Out)> {
    let mut cache = PagedLatentCache {
        latent: arr::<T, Ix3>("latent_cache", caches.0)?,
        rope: arr::<T, Ix3>("rope_cache", caches.1)?,
    };
    let kv = arr::<T, Ix2>("kv", kv)?;
    let weight = arr::<T, Ix1>("norm_weight", weight)?;
    let positions = arr::<i32, Ix1>("positions", positions)?;
    let slots = arr::<i32, Ix1>("slot_mapping", slots)?;
    let params = CacheWriteParams {
        norm_weight: weight.view(),
        eps,
        positions: positions.view(),
        table,
        layout,
    };
    nogil(py, || match be {
        Be::Cpu(_) => mla_cache_write_fused(&mut cache, kv.view(), params, slots.view()),
        Be::Npu(npu) => npu.mla_cache_write_fused(&mut cache, kv.view(), params, slots.view()),
    })
    .map_err(ops_err)?;
    Ok((out(py, cache.latent), out(py, cache.rope)))
}

/// The fused MLA cache write: RMSNorm (`eps`) of `kv[:, :Dl]` and plain RoPE (base `theta`, no YaRN) of
/// `kv[:, Dl:]` at `positions`, written into copies of the caches at `slot_mapping` (-1 skips).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn mla_cache_write(
    py: Python<'_>,
    latent_cache: In,
    rope_cache: In,
    kv: In,
    norm_weight: In,
    positions: In,
    slot_mapping: In,
    eps: f32,
    theta: f32,
    max_positions: usize,
    interleaved: bool,
    backend_: &str,
) -> PyResult<(Out, Out)> {
    let dim = rope_cache.1.last().copied().unwrap_or(0);
    let cfg = RopeConfig {
        dim,
        theta,
        scaling: None,
    };
    let table = RopeTable::new(&cfg, max_positions).map_err(ops_err)?;
    let layout = if interleaved {
        RopeLayout::Interleaved
    } else {
        RopeLayout::HalfSplit
    };
    let be = backend(backend_)?;
    let caches = (&latent_cache, &rope_cache);
    let (w, p, sl) = (&norm_weight, &positions, &slot_mapping);
    let rope = (&table, layout);
    match kv.2.as_str() {
        "f32" => mla_cache_write_t::<f32>(&be, py, caches, &kv, w, p, sl, eps, rope),
        "f16" => mla_cache_write_t::<half::f16>(&be, py, caches, &kv, w, p, sl, eps, rope),
        "bf16" => mla_cache_write_t::<half::bf16>(&be, py, caches, &kv, w, p, sl, eps, rope),
        d => Err(PyValueError::new_err(format!(
            "dtype {d}: expected f32, f16 or bf16"
        ))),
    }
}

#[pyfunction]
fn row_shapes() -> Vec<(usize, usize)> {
    cases::row_shapes()
}

/// The conformance suites' `(M, K, N)` matrix products.
#[pyfunction]
fn matmul_shapes() -> Vec<(usize, usize, usize)> {
    cases::MATMUL_SHAPES.to_vec()
}

/// The conformance suites' `(tokens, heads, rotary dim)` RoPE shapes.
#[pyfunction]
fn rope_shapes() -> Vec<(usize, usize, usize)> {
    cases::ROPE_SHAPES.to_vec()
}

/// `shape` values uniform in `[lo, hi)` from the suites' seeded generator (ChaCha8; the same stream
/// on every platform), drawn in f32 and rounded once to `dtype`.
#[pyfunction]
fn uniform(
    py: Python<'_>,
    seed: u64,
    shape: Vec<usize>,
    lo: f32,
    hi: f32,
    dtype: &str,
) -> PyResult<Out> {
    let size = match dtype {
        "f32" => 4,
        "f16" | "bf16" => 2,
        d => {
            return Err(PyValueError::new_err(format!(
                "dtype {d}: expected f32, f16 or bf16"
            )))
        }
    };
    // The generator trusts its shape: one whose size overflows panics in ndarray, and one that fits
    // the address space but not memory aborts the interpreter when the array is allocated. So the
    // size is checked, and its bytes reserved (and freed: the generator allocates them next), where a
    // failure is a MemoryError.
    let bytes = shape
        .iter()
        .try_fold(size, |acc: usize, &d| acc.checked_mul(d))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "uniform: shape {shape:?} of {dtype} overflows the address space"
            ))
        })?;
    Vec::<u8>::new().try_reserve_exact(bytes).map_err(|_| {
        PyMemoryError::new_err(format!(
            "uniform: {bytes} bytes for shape {shape:?} of {dtype} cannot be allocated"
        ))
    })?;
    let mut rng = CaseRng::new(seed);
    let dim = shape.clone().into_dimension();
    Ok(match dtype {
        "f32" => out(py, rng.uniform::<f32, _>(dim, lo, hi)),
        "f16" => out(py, rng.uniform::<half::f16, _>(dim, lo, hi)),
        "bf16" => out(py, rng.uniform::<half::bf16, _>(dim, lo, hi)),
        d => {
            return Err(PyValueError::new_err(format!(
                "dtype {d}: expected f32, f16 or bf16"
            )))
        }
    })
}

#[pymodule]
fn _dsnpu(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(backend_name, m)?)?;
    m.add_function(wrap_pyfunction!(rms_norm, m)?)?;
    m.add_function(wrap_pyfunction!(add_rms_norm, m)?)?;
    m.add_function(wrap_pyfunction!(rope, m)?)?;
    m.add_function(wrap_pyfunction!(silu_mul, m)?)?;
    m.add_function(wrap_pyfunction!(linear, m)?)?;
    m.add_function(wrap_pyfunction!(moe_gating_topk, m)?)?;
    m.add_function(wrap_pyfunction!(moe_init_routing, m)?)?;
    m.add_function(wrap_pyfunction!(moe_init_routing_quant, m)?)?;
    m.add_function(wrap_pyfunction!(grouped_matmul, m)?)?;
    m.add_function(wrap_pyfunction!(expert_ffn, m)?)?;
    m.add_function(wrap_pyfunction!(moe_finalize_routing, m)?)?;
    m.add_function(wrap_pyfunction!(mla_decode, m)?)?;
    m.add_function(wrap_pyfunction!(mla_prefill, m)?)?;
    m.add_function(wrap_pyfunction!(mla_prefill_cached, m)?)?;
    m.add_function(wrap_pyfunction!(mla_cache_write, m)?)?;
    m.add_function(wrap_pyfunction!(row_shapes, m)?)?;
    m.add_function(wrap_pyfunction!(matmul_shapes, m)?)?;
    m.add_function(wrap_pyfunction!(rope_shapes, m)?)?;
    m.add_function(wrap_pyfunction!(uniform, m)?)?;
    m.add(
        "OutOfMemoryError",
        m.py().get_type_bound::<OutOfMemoryError>(),
    )?;
    m.add_class::<model::Model>()?;
    m.add_class::<engine::Engine>()?;
    Ok(())
}
