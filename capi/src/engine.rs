//! [`DsnpuEngine`]: a DeepSeek checkpoint resident on a device, stepped by the caller — the model-level
//! entry point for a C or C++ serving loop (continuous batching), over
//! [`dsnpu_model::device::Engine`].
//!
//! # Contract
//! - [`dsnpu_engine_load`] opens the device of [`DsnpuEngineOptions::device`], uploads the checkpoint's
//!   weights once and allocates the paged cache (`num_blocks × block_size` tokens) there. Unlike the
//!   kernel entry points, the engine owns its device memory and stream.
//! - Sequences are added ([`dsnpu_engine_add_sequence`]) and removed
//!   ([`dsnpu_engine_remove_sequence`]) between steps; [`dsnpu_engine_step`] returns one
//!   `(sequence id, token)` per live sequence, in id order, prefilling the sequences added since the
//!   last step, and waits for the device once per pass. With `temperature > 0` each sequence samples
//!   top-p with its own seed (the engine's seed + its id, or the one given).
//! - Errors: a status and [`dsnpu_last_error`](crate::dsnpu_last_error): a bad checkpoint, a rejected
//!   prompt, a step with no live sequence or an unknown id are `DSNPU_STATUS_INVALID_ARGUMENT`; a
//!   sequence that outgrows the cache is `DSNPU_STATUS_OUT_OF_BLOCKS` (free a sequence and step
//!   again); weights or a paged cache larger than the device's free memory, or a step whose buffers
//!   do not fit, `DSNPU_STATUS_OUT_OF_MEMORY` (as for a kernel's workspace); AscendCL failures
//!   `DSNPU_STATUS_DEVICE`. A failed step leaves every sequence as it was before it.
//! - An engine is used by one thread at a time, which need not be the one that loaded it: every device
//!   call binds the device's context on the calling thread, its destroy included.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use dsnpu_model::device::{DType, Engine, EngineOptions};
use dsnpu_model::SeqId;

use crate::args::{code, host_ptr, host_slice, model, size};
use crate::error::{guard, CapiError, Result};
use crate::{DSNPU_DTYPE_BF16, DSNPU_DTYPE_F32};

/// A checkpoint loaded onto a device with its paged cache (opaque to C).
pub struct DsnpuEngine {
    engine: Engine,
}

/// What [`dsnpu_engine_load`] builds; [`dsnpu_engine_options_default`] fills the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DsnpuEngineOptions {
    /// Device ordinal.
    pub device: i32,
    /// Compute dtype: `DSNPU_DTYPE_F32` (the transformers-pinned numerics) or `DSNPU_DTYPE_BF16`.
    pub dtype: i32,
    /// Cache blocks shared by all sequences, and tokens per block.
    pub num_blocks: u64,
    pub block_size: u64,
    /// 0: greedy; else top-p sampling with `top_p` in (0, 1].
    pub temperature: f32,
    pub top_p: f32,
    /// Sequence `id` samples with `seed + id` unless added with a seed of its own.
    pub seed: u64,
    /// Non-zero: prompts that start with the full cache blocks of earlier ones share them.
    pub prefix_caching: i32,
    /// Most prompt tokens per prefill pass (0: a whole prompt in one pass).
    pub max_prefill_tokens: u64,
}

impl DsnpuEngineOptions {
    fn engine_options(&self, func: &'static str) -> Result<EngineOptions> {
        let dtype = match code(
            func,
            "engine dtype (F32 or BF16)",
            self.dtype,
            &[DSNPU_DTYPE_F32, DSNPU_DTYPE_BF16],
        )? {
            DSNPU_DTYPE_F32 => DType::F32,
            _ => DType::BF16,
        };
        let size = |what: &'static str, v: u64| {
            usize::try_from(v).map_err(|_| CapiError::Invalid {
                func,
                reason: format!("`{what}` = {v} does not fit a usize"),
            })
        };
        Ok(EngineOptions {
            device: self.device,
            num_blocks: size("num_blocks", self.num_blocks)?,
            block_size: size("block_size", self.block_size)?,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            dtype,
            prefix_caching: self.prefix_caching != 0,
            max_prefill_tokens: size("max_prefill_tokens", self.max_prefill_tokens)?,
        })
    }
}

/// Writes `what` through a non-null out pointer.
///
/// # Safety
/// `out` is null (an error) or valid for writing one `T`.
unsafe fn put<T>(func: &'static str, arg: &'static str, out: *mut T, what: T) -> Result<()> {
    host_ptr(func, arg, out)?;
    // SAFETY: non-null and aligned (checked above), writable (the caller's contract).
    unsafe { out.write(what) };
    Ok(())
}

/// The engine behind a C pointer.
///
/// # Safety
/// `engine` is null or a pointer from [`dsnpu_engine_load`] not yet destroyed, used by no other
/// thread.
unsafe fn engine_mut<'a>(func: &'static str, engine: *mut DsnpuEngine) -> Result<&'a mut Engine> {
    // A misaligned pointer cannot be an engine; catching it costs nothing.
    host_ptr(func, "engine", engine)?;
    crate::handles::check(func, "engine", "engine", engine)?;
    // SAFETY: non-null, aligned and live (checked above), used by no other thread (the contract).
    Ok(unsafe { &mut (*engine).engine })
}

/// Fills `*out` with the defaults: device 0, f32, 64 blocks of 16 tokens, greedy (top_p 1, seed 0),
/// no prefix caching, whole-prompt prefill passes.
///
/// # Safety
/// `out` is null (an error) or valid for writing one `DsnpuEngineOptions`.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_options_default(out: *mut DsnpuEngineOptions) -> i32 {
    const F: &str = "dsnpu_engine_options_default";
    guard(F, || {
        let d = EngineOptions::default();
        let opts = DsnpuEngineOptions {
            device: d.device,
            dtype: DSNPU_DTYPE_F32,
            num_blocks: d.num_blocks as u64,
            block_size: d.block_size as u64,
            temperature: d.temperature,
            top_p: d.top_p,
            seed: d.seed,
            prefix_caching: i32::from(d.prefix_caching),
            max_prefill_tokens: d.max_prefill_tokens as u64,
        };
        // SAFETY: the caller's contract.
        unsafe { put(F, "out", out, opts) }
    })
}

/// Loads the checkpoint directory `path` (a Hugging Face `config.json` and safetensors) onto the
/// device of `opts` (NULL: the defaults) and stores the engine in `*out` (NULL when it fails).
///
/// # Safety
/// `path` is null (an error) or a NUL-terminated string (any bytes: a path need not be UTF-8);
/// `opts` is null or points to a `DsnpuEngineOptions`; `out` is null (an error) or valid for writing
/// one pointer.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_load(
    path: *const c_char,
    opts: *const DsnpuEngineOptions,
    out: *mut *mut DsnpuEngine,
) -> i32 {
    const F: &str = "dsnpu_engine_load";
    guard(F, || {
        // SAFETY: writable if non-null (the caller's contract).
        unsafe { crate::args::clear_out(F, out) }?;
        host_ptr(F, "path", path)?;
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        let path = unsafe { CStr::from_ptr(path) };
        // A path is bytes (it need not be UTF-8).
        let path = Path::new(OsStr::from_bytes(path.to_bytes()));
        let opts = if opts.is_null() {
            EngineOptions::default()
        } else {
            host_ptr(F, "opts", opts)?;
            // SAFETY: non-null and aligned (checked above), a valid options struct (the caller's
            // contract).
            unsafe { &*opts }.engine_options(F)?
        };
        let engine = Engine::load(path, opts, &mut |_, _| {}).map_err(model(F))?;
        let boxed = crate::handles::register(DsnpuEngine { engine });
        // SAFETY: non-null and aligned (checked above), writable (the caller's contract).
        unsafe { out.write(boxed) };
        Ok(())
    })
}

/// Frees the engine's device memory and closes its device when nothing else of this library uses it.
/// `engine` must not be used afterwards: a destroyed engine passed again (here or to any entry point)
/// is `DSNPU_STATUS_INVALID_ARGUMENT`, unless a later load got the same address. NULL is a no-op.
///
/// # Safety
/// `engine` is null or a pointer from [`dsnpu_engine_load`], used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_destroy(engine: *mut DsnpuEngine) -> i32 {
    const F: &str = "dsnpu_engine_destroy";
    guard(F, || {
        if !engine.is_null() {
            // No engine is misaligned: refused rather than handed to the allocator.
            host_ptr(F, "engine", engine)?;
            // SAFETY: a live one came from dsnpu_engine_load; no other thread uses it (the
            // contract). A destroyed one is refused.
            drop(unsafe { crate::handles::take(F, "engine", "engine", engine) }?);
        }
        Ok(())
    })
}

/// The prompt `ids[0 .. len)` as a slice.
///
/// # Safety
/// `ids` is null (an error) or valid for reading `len` ids.
unsafe fn prompt<'a>(func: &'static str, ids: *const i32, len: i64) -> Result<&'a [i32]> {
    let n = size(func, "len", len)?;
    // SAFETY: readable for `len` ids (the caller's contract); the rest is checked there.
    unsafe { host_slice(func, "ids", ids, n) }
}

/// Both `add_sequence` entry points: the prompt queued, its sampler seeded with `seed` (the engine's
/// seed + its id when None), its id through `out_id`.
///
/// # Safety
/// As [`dsnpu_engine_add_sequence`].
unsafe fn add(
    func: &'static str,
    engine: *mut DsnpuEngine,
    ids: *const i32,
    len: i64,
    seed: Option<u64>,
    out_id: *mut u64,
) -> i32 {
    guard(func, || {
        // SAFETY: the caller's contract.
        let (e, p) = unsafe { (engine_mut(func, engine)?, prompt(func, ids, len)?) };
        host_ptr(func, "out_id", out_id)?;
        let id = match seed {
            Some(s) => e.add_sequence_seeded(p, s),
            None => e.add_sequence(p),
        }
        .map_err(model(func))?;
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { put(func, "out_id", out_id, id) }
    })
}

/// Queues the prompt `ids[0 .. len)` for the next step (sampling with the engine's seed + its id);
/// stores its sequence id in `*out_id`.
///
/// # Safety
/// `engine` as in [`dsnpu_engine_step`]; `ids` is readable for `len` ids; `out_id` is writable.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_add_sequence(
    engine: *mut DsnpuEngine,
    ids: *const i32,
    len: i64,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { add("dsnpu_engine_add_sequence", engine, ids, len, None, out_id) }
}

/// [`dsnpu_engine_add_sequence`] with the sequence's sampler seeded with `seed` itself (a prompt
/// added with the same seed to an engine with the same options samples the same ids).
///
/// # Safety
/// As [`dsnpu_engine_add_sequence`].
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_add_sequence_seeded(
    engine: *mut DsnpuEngine,
    ids: *const i32,
    len: i64,
    seed: u64,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        add(
            "dsnpu_engine_add_sequence_seeded",
            engine,
            ids,
            len,
            Some(seed),
            out_id,
        )
    }
}

/// Forgets sequence `id` and frees its cache blocks.
///
/// # Safety
/// `engine` as in [`dsnpu_engine_step`].
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_remove_sequence(engine: *mut DsnpuEngine, id: u64) -> i32 {
    const F: &str = "dsnpu_engine_remove_sequence";
    guard(F, || {
        // SAFETY: the caller's contract.
        let e = unsafe { engine_mut(F, engine) }?;
        e.remove_sequence(id as SeqId).map_err(model(F))
    })
}

/// One token for every live sequence: `ids[i]`, `tokens[i]` for `i < *out_count`, in id order.
/// `capacity` must be at least the number of live sequences ([`dsnpu_engine_live_count`]); if it is
/// smaller, nothing is stepped, `*out_count` says how many are live and the status is
/// `DSNPU_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `engine` is null or a live engine used by no other thread; `ids` and `tokens` are writable for
/// `capacity` elements; `out_count` is writable.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_step(
    engine: *mut DsnpuEngine,
    ids: *mut u64,
    tokens: *mut i32,
    capacity: i64,
    out_count: *mut i64,
) -> i32 {
    const F: &str = "dsnpu_engine_step";
    guard(F, || {
        // SAFETY: the caller's contract.
        let e = unsafe { engine_mut(F, engine) }?;
        host_ptr(F, "ids", ids)?;
        host_ptr(F, "tokens", tokens)?;
        host_ptr(F, "out_count", out_count)?;
        let live = e.live().len();
        let capacity_ok = usize::try_from(capacity).is_ok_and(|c| c >= live);
        if !capacity_ok {
            // SAFETY: non-null and aligned (checked above), writable (the caller's contract).
            unsafe { out_count.write(live as i64) };
            return Err(CapiError::Invalid {
                func: F,
                reason: format!("`capacity` is {capacity}, {live} sequences are live"),
            });
        }
        let step = e.step().map_err(model(F))?;
        // The engine returns one token per live sequence; checked, since the writes below rely on it.
        if step.len() > live {
            return Err(CapiError::Invalid {
                func: F,
                reason: format!(
                    "a step returned {} tokens for {live} live sequences",
                    step.len()
                ),
            });
        }
        for (i, (id, t)) in step.iter().enumerate() {
            // SAFETY: i < step.len() <= live <= capacity (checked above), the extent the caller made
            // writable.
            unsafe {
                ids.add(i).write(*id);
                tokens.add(i).write(*t);
            }
        }
        // SAFETY: non-null and aligned (checked above), writable (the caller's contract).
        unsafe { out_count.write(step.len() as i64) };
        Ok(())
    })
}

/// Stores `value(engine)` in `*out`: the getters below.
///
/// # Safety
/// `engine` as in [`dsnpu_engine_step`]; `out` is null (an error) or writable.
unsafe fn get(
    func: &'static str,
    engine: *mut DsnpuEngine,
    out: *mut i64,
    value: impl FnOnce(&Engine) -> usize,
) -> i32 {
    guard(func, || {
        // SAFETY: the caller's contract.
        let e = unsafe { engine_mut(func, engine) }?;
        let v = value(e) as i64;
        // SAFETY: the caller's contract.
        unsafe { put(func, "out", out, v) }
    })
}

/// Stores the number of live sequences in `*out`.
///
/// # Safety
/// `engine` as in [`dsnpu_engine_step`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_live_count(engine: *mut DsnpuEngine, out: *mut i64) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { get("dsnpu_engine_live_count", engine, out, |e| e.live().len()) }
}

/// Stores the cache blocks a sequence can still get in `*out`.
///
/// # Safety
/// `engine` as in [`dsnpu_engine_step`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_free_blocks(engine: *mut DsnpuEngine, out: *mut i64) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { get("dsnpu_engine_free_blocks", engine, out, Engine::free_blocks) }
}

/// Stores the model's vocabulary size in `*out`.
///
/// # Safety
/// `engine` as in [`dsnpu_engine_step`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_engine_vocab_size(engine: *mut DsnpuEngine, out: *mut i64) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        get("dsnpu_engine_vocab_size", engine, out, |e| {
            e.config().vocab_size
        })
    }
}
