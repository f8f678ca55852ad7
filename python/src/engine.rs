//! `dsnpu._dsnpu.Engine`: the device-resident engine driven step by step from Python — what a serving
//! loop calls (continuous batching), over [`dsnpu_model::device::Engine`].
//!
//! One engine owns a device (device 0 by default: the simulator without CANN), the weights uploaded
//! once and a paged cache of `num_blocks × block_size` tokens shared by its sequences. Sequences are
//! added (`add_sequence`) and removed (`remove_sequence`) between steps; `step` returns one
//! `(sequence id, token)` per live sequence, prefilling the new ones. `generate` runs a batch of
//! prompts to their ends on an idle engine. Errors keep the engine's contract: a rejected prompt, no
//! live sequence, a sequence that outgrows the cache, an unknown id raise `ValueError`; device memory
//! running out (weights or a cache that do not fit when loaded, a step that finds no memory)
//! `OutOfMemoryError`, a `RuntimeError`; other device failures `RuntimeError` (a failed step leaves
//! every sequence as it was).
//!
//! The object may be called and freed on any thread (the runtime binds the device's context on the
//! calling thread before each AscendCL call). It serializes its own calls: the engine sits behind a
//! mutex that every method, getters included, takes with the GIL released, so a call that overlaps
//! another on the same object waits for it while the interpreter's other threads run.

use std::path::PathBuf;
use std::sync::Mutex;

use dsnpu_model::device::{DType, EngineOptions, PhaseStats};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::model::model_err;
use super::{locked, out, Out};

/// A checkpoint resident on a device, stepped by the caller (see the module docs).
// Frozen: no method takes `&mut self`, so pyo3 keeps no borrow flag (which refused an overlapping
// call with "Already borrowed"); the mutex serializes the calls instead.
#[pyclass(module = "dsnpu._dsnpu", frozen)]
pub struct Engine {
    /// Locked by each call (`locked`): calls from several threads run one at a time.
    inner: Mutex<dsnpu_model::device::Engine>,
}

/// `{h2d_bytes, d2h_bytes, syncs}`: what crossed between host and device, and the host's waits.
fn transfers(
    py: Python<'_>,
    h2d_bytes: u64,
    d2h_bytes: u64,
    syncs: u64,
) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new_bound(py);
    d.set_item("h2d_bytes", h2d_bytes)?;
    d.set_item("d2h_bytes", d2h_bytes)?;
    d.set_item("syncs", syncs)?;
    Ok(d)
}

/// A phase's transfers, its count (`tokens` or `steps`) and seconds.
fn phase<'py>(py: Python<'py>, p: &PhaseStats, count: &str) -> PyResult<Bound<'py, PyDict>> {
    let t = &p.transfers;
    let d = transfers(py, t.h2d_bytes, t.d2h_bytes, t.syncs)?;
    d.set_item(count, p.count)?;
    d.set_item("seconds", p.seconds)?;
    Ok(d)
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (path, num_blocks = 64, block_size = 16, dtype = "f32", temperature = 0.0,
                        top_p = 1.0, seed = 0, prefix_caching = false, max_prefill_tokens = 0, device = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: PathBuf,
        num_blocks: usize,
        block_size: usize,
        dtype: &str,
        temperature: f32,
        top_p: f32,
        seed: u64,
        prefix_caching: bool,
        max_prefill_tokens: usize,
        device: i32,
    ) -> PyResult<Engine> {
        let dtype = match dtype {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            other => {
                return Err(PyValueError::new_err(format!(
                    "dtype {other:?}: expected \"f32\" or \"bf16\""
                )))
            }
        };
        let opts = EngineOptions {
            device,
            num_blocks,
            block_size,
            temperature,
            top_p,
            seed,
            dtype,
            prefix_caching,
            max_prefill_tokens,
        };
        let inner =
            dsnpu_model::device::Engine::load(&path, opts, &mut |_, _| {}).map_err(model_err)?;
        Ok(Engine {
            inner: Mutex::new(inner),
        })
    }

    /// Queues a prompt for the next step; returns its sequence id. Its sampler is seeded with `seed`,
    /// or with the engine's seed + the id when `seed` is None.
    #[pyo3(signature = (ids, seed = None))]
    fn add_sequence(&self, py: Python<'_>, ids: Vec<i32>, seed: Option<u64>) -> PyResult<u64> {
        locked(py, &self.inner, |e| match seed {
            Some(s) => e.add_sequence_seeded(&ids, s),
            None => e.add_sequence(&ids),
        })
        .map_err(model_err)
    }

    /// Forgets a sequence and frees its cache blocks.
    fn remove_sequence(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        locked(py, &self.inner, |e| e.remove_sequence(id)).map_err(model_err)
    }

    /// One token for every live sequence: `[(id, token), ...]` in id order.
    fn step(&self, py: Python<'_>) -> PyResult<Vec<(u64, i32)>> {
        locked(py, &self.inner, |e| e.step()).map_err(model_err)
    }

    /// Each prompt's new ids, run as one batch on an engine with no live sequence (prompt `i` samples
    /// with seed `seed + i`); a sequence stops after a `stop` id (included; default the config's
    /// `eos_token_id`).
    #[pyo3(signature = (prompts, max_new_tokens, stop = None))]
    fn generate(
        &self,
        py: Python<'_>,
        prompts: Vec<Vec<i32>>,
        max_new_tokens: usize,
        stop: Option<Vec<i32>>,
    ) -> PyResult<Vec<Vec<i32>>> {
        locked(py, &self.inner, |e| {
            let stop = stop.unwrap_or_else(|| e.config().eos_token_ids.clone());
            e.generate(&prompts, max_new_tokens, &stop)
        })
        .map_err(model_err)
    }

    /// Logits `f32 [len(ids), vocab_size]` of every position of `ids` (a temporary sequence, removed
    /// after), as a wire triple.
    fn forward(&self, py: Python<'_>, ids: Vec<i32>) -> PyResult<Out> {
        let (v, flat) = locked(py, &self.inner, |e| -> dsnpu_model::Result<_> {
            Ok((e.config().vocab_size, e.prompt_logits(&ids)?))
        })
        .map_err(model_err)?;
        // The engine made these logits: a shape that does not match is its failure, not the caller's.
        let logits = ndarray::Array2::from_shape_vec((ids.len(), v), flat)
            .map_err(|e| PyRuntimeError::new_err(format!("engine logits: {e}")))?;
        Ok(out(py, logits))
    }

    /// The live sequences' ids, in order.
    #[getter]
    fn live(&self, py: Python<'_>) -> Vec<u64> {
        locked(py, &self.inner, |e| e.live())
    }

    /// Cache blocks a sequence can still get.
    #[getter]
    fn free_blocks(&self, py: Python<'_>) -> usize {
        locked(py, &self.inner, |e| e.free_blocks())
    }

    #[getter]
    fn vocab_size(&self, py: Python<'_>) -> usize {
        locked(py, &self.inner, |e| e.config().vocab_size)
    }

    #[getter]
    fn eos_token_ids(&self, py: Python<'_>) -> Vec<i32> {
        locked(py, &self.inner, |e| e.config().eos_token_ids.clone())
    }

    /// Counters since load: `weight_bytes`, `cache_bytes`, `load` / `prefill` / `decode` (bytes that
    /// crossed between host and device, host waits, seconds; prompt `tokens` and decode `steps`),
    /// `prefix_hit_tokens`, `device_peak_bytes` and kernel launches by operator (`ops`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Read under the lock, turned into Python objects after it (with the GIL back).
        let (s, peak) = locked(py, &self.inner, |e| (e.stats(), e.device_peak_bytes()));
        let d = PyDict::new_bound(py);
        d.set_item("weight_bytes", s.weight_bytes)?;
        d.set_item("cache_bytes", s.cache_bytes)?;
        let load = transfers(py, s.load.h2d_bytes, s.load.d2h_bytes, s.load.syncs)?;
        load.set_item("seconds", s.load_seconds)?;
        d.set_item("load", load)?;
        d.set_item("prefill", phase(py, &s.prefill, "tokens")?)?;
        d.set_item("decode", phase(py, &s.decode, "steps")?)?;
        d.set_item("prefix_hit_tokens", s.prefix_hit_tokens)?;
        d.set_item("device_peak_bytes", peak)?;
        let ops = PyDict::new_bound(py);
        for (op, n) in &s.ops {
            ops.set_item(*op, *n)?;
        }
        d.set_item("ops", ops)?;
        Ok(d)
    }
}
