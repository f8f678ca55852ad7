//! `dsnpu._dsnpu.Model`: a DeepSeek-V3/V2 checkpoint directory loaded for `generate` and `forward`.
//!
//! - `backend="npu"`: the device-resident [`Engine`] on device 0 (the simulator without CANN): weights
//!   uploaded once, the paged cache in device memory (`max_tokens` tokens of it, shared by the calls),
//!   every operator on the device. The engine fixes its sampling options when loaded, so a `generate`
//!   with other `temperature`/`top_p`/`seed` than the loaded engine's loads it again. With
//!   `prefix_caching=True` the engine keeps the full cache blocks of earlier prompts and a later prompt
//!   that starts with the same tokens shares them instead of prefilling them again
//!   (`prefix_hit_tokens` counts the prompt tokens served so); with `max_prefill_tokens=N` a prompt
//!   goes through the model in passes of at most N tokens (chunked prefill; `forward` too).
//! - `backend="cpu"`: the host model ([`DeepseekV3`] on the CPU references) and its [`Generator`].
//!
//! Both stop after the config's `eos_token_id` (included), like `dsnpu generate`. Validation is the
//! model crate's: a bad checkpoint, an empty prompt, an id outside the vocabulary or too many positions
//! raise `ValueError` with its message; device memory running out (weights or a cache that do not fit
//! when loaded, a step that finds no memory) raises `OutOfMemoryError`, other device failures
//! `RuntimeError`. Like `Engine`, a `Model` may be called and freed on any thread, and serializes its
//! own calls: one that overlaps another waits for it (with the GIL released).

use std::path::PathBuf;
use std::sync::Mutex;

use dsnpu_model::device::{Engine, EngineOptions};
use dsnpu_model::{DeepseekV3, GenerateOptions, Generator, ModelError};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use super::{locked, message, out, Out, OutOfMemoryError};

/// Tokens per cache block of the engine.
const BLOCK_SIZE: usize = 16;

pub(crate) fn model_err(e: ModelError) -> PyErr {
    let msg = message(&e);
    // Out of memory first: weights or a cache that do not fit also count as the caller's error.
    if e.is_out_of_memory() {
        OutOfMemoryError::new_err(msg)
    } else if e.is_caller_error() {
        PyValueError::new_err(msg)
    } else {
        PyRuntimeError::new_err(msg)
    }
}

/// The engine and the sampling options it was loaded with.
struct Loaded {
    engine: Engine,
    sampling: (f32, f32, u64),
}

enum Inner {
    Cpu(Box<DeepseekV3>),
    Npu {
        dir: PathBuf,
        max_tokens: usize,
        engine: EngineChoice,
        loaded: Box<Loaded>,
    },
}

/// A checkpoint loaded on a backend (see the module docs).
// Frozen: no method takes `&mut self`, so pyo3 keeps no borrow flag (which refused an overlapping
// call with "Already borrowed"); the mutex serializes the calls instead.
#[pyclass(module = "dsnpu._dsnpu", frozen)]
pub struct Model {
    /// Locked by each call (`locked`): calls from several threads run one at a time.
    inner: Mutex<Inner>,
}

// The state behind the lock is `Send + Sync` itself, like the class (see the check in lib.rs).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Inner>();
};

/// The engine options a `Model` keeps across reloads.
#[derive(Clone, Copy)]
struct EngineChoice {
    prefix_caching: bool,
    max_prefill_tokens: usize,
}

fn load_engine(
    dir: &PathBuf,
    max_tokens: usize,
    engine: EngineChoice,
    sampling: (f32, f32, u64),
) -> PyResult<Loaded> {
    let (temperature, top_p, seed) = sampling;
    let opts = EngineOptions {
        num_blocks: max_tokens.div_ceil(BLOCK_SIZE).max(1),
        block_size: BLOCK_SIZE,
        temperature,
        top_p,
        seed,
        prefix_caching: engine.prefix_caching,
        max_prefill_tokens: engine.max_prefill_tokens,
        ..EngineOptions::default()
    };
    let engine = Engine::load(dir, opts, &mut |_, _| {}).map_err(model_err)?;
    Ok(Loaded { engine, sampling })
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, backend = "npu", max_tokens = 1024, prefix_caching = false, max_prefill_tokens = 0))]
    fn new(
        path: PathBuf,
        backend: &str,
        max_tokens: usize,
        prefix_caching: bool,
        max_prefill_tokens: usize,
    ) -> PyResult<Model> {
        let inner = match backend {
            "cpu" => Inner::Cpu(Box::new(DeepseekV3::load(&path).map_err(model_err)?)),
            "npu" => {
                if max_tokens == 0 {
                    return Err(PyValueError::new_err("max_tokens must be positive"));
                }
                let engine = EngineChoice {
                    prefix_caching,
                    max_prefill_tokens,
                };
                let loaded = Box::new(load_engine(&path, max_tokens, engine, (0.0, 1.0, 0))?);
                Inner::Npu {
                    dir: path,
                    max_tokens,
                    engine,
                    loaded,
                }
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "backend {other:?}: expected \"npu\" or \"cpu\""
                )))
            }
        };
        Ok(Model {
            inner: Mutex::new(inner),
        })
    }

    /// `"cpu"` or `"npu"`.
    #[getter]
    fn backend(&self, py: Python<'_>) -> &'static str {
        locked(py, &self.inner, |inner| match inner {
            Inner::Cpu(_) => "cpu",
            Inner::Npu { .. } => "npu",
        })
    }

    /// Prompt tokens whose cache rows the engine shared from earlier prompts (0 without
    /// `prefix_caching`, and on the cpu backend); counted since the engine was last loaded.
    #[getter]
    fn prefix_hit_tokens(&self, py: Python<'_>) -> u64 {
        locked(py, &self.inner, |inner| match inner {
            Inner::Cpu(_) => 0,
            Inner::Npu { loaded, .. } => loaded.engine.stats().prefix_hit_tokens,
        })
    }

    /// The vocabulary size (the width of `forward`'s logits).
    #[getter]
    fn vocab_size(&self, py: Python<'_>) -> usize {
        locked(py, &self.inner, |inner| match inner {
            Inner::Cpu(m) => m.config().vocab_size,
            Inner::Npu { loaded, .. } => loaded.engine.config().vocab_size,
        })
    }

    /// Up to `max_new_tokens` new ids after `ids`, greedy when `temperature` is 0.
    #[pyo3(signature = (ids, max_new_tokens, temperature = 0.0, top_p = 1.0, seed = 0))]
    fn generate(
        &self,
        py: Python<'_>,
        ids: Vec<i32>,
        max_new_tokens: usize,
        temperature: f32,
        top_p: f32,
        seed: u64,
    ) -> PyResult<Vec<i32>> {
        let run = |inner: &mut Inner| match inner {
            Inner::Cpu(model) => {
                let opts = GenerateOptions {
                    temperature,
                    top_p,
                    seed,
                    stop_ids: model.config().eos_token_ids.clone(),
                    ..GenerateOptions::greedy(max_new_tokens)
                };
                Generator::new(model, opts)
                    .and_then(|g| g.generate(&ids))
                    .map_err(model_err)
            }
            Inner::Npu {
                dir,
                max_tokens,
                engine,
                loaded,
            } => {
                // No shortcut for `max_new_tokens=0`: the options and the prompt are checked as for
                // any other count (the engine answers it with no ids).
                let need = ids.len().saturating_add(max_new_tokens);
                if need > *max_tokens {
                    return Err(PyValueError::new_err(format!(
                        "{} prompt + {max_new_tokens} new tokens exceed the model's max_tokens {max_tokens}",
                        ids.len()
                    )));
                }
                if loaded.sampling != (temperature, top_p, seed) {
                    **loaded = load_engine(dir, *max_tokens, *engine, (temperature, top_p, seed))?;
                }
                // The engine was loaded with this seed: its batch of one samples with it.
                let engine = &mut loaded.engine;
                let stop = engine.config().eos_token_ids.clone();
                let mut new = engine
                    .generate(&[ids], max_new_tokens, &stop)
                    .map_err(model_err)?;
                Ok(new.pop().unwrap_or_default())
            }
        };
        // Nothing in `run` touches a Python object: its errors are made lazily.
        locked(py, &self.inner, run)
    }

    /// Logits `f32 [len(ids), vocab_size]` of every position of `ids`, as a wire triple.
    fn forward(&self, py: Python<'_>, ids: Vec<i32>) -> PyResult<Out> {
        let run = |inner: &mut Inner| match inner {
            Inner::Cpu(model) => model.forward(&ids).map_err(model_err),
            Inner::Npu {
                max_tokens, loaded, ..
            } => {
                if ids.len() > *max_tokens {
                    return Err(PyValueError::new_err(format!(
                        "{} tokens exceed the model's max_tokens {max_tokens}",
                        ids.len()
                    )));
                }
                let v = loaded.engine.config().vocab_size;
                let flat = loaded.engine.prompt_logits(&ids).map_err(model_err)?;
                ndarray::Array2::from_shape_vec((ids.len(), v), flat)
                    .map_err(|e| PyRuntimeError::new_err(format!("engine logits: {e}")))
            }
        };
        // Nothing in `run` touches a Python object: its errors are made lazily.
        let logits = locked(py, &self.inner, run)?;
        Ok(out(py, logits))
    }
}
