//! Streams: in-order queues of device work.
//!
//! A [`Stream`] is a cheap-to-clone handle; the AscendCL stream is synchronized and destroyed when
//! the last handle and the last buffer that used it are gone. Work is enqueued from any thread;
//! asynchronous failures (a faulting kernel) are reported by the next synchronizing call. With
//! `DSNPU_LAUNCH_BLOCKING=1` in the environment (or [`Stream::set_launch_blocking`]) every kernel
//! launch synchronizes, so such a failure is reported by the launch that caused it; on the simulator
//! the launch also reads its own report and fails on sanitizer warnings
//! ([`RuntimeError::LaunchFlagged`](crate::RuntimeError::LaunchFlagged)). Launches on one stream are
//! queued one at a time, and a launch-blocking one keeps the stream until its report is read, so
//! threads sharing a stream each see their own launch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};

use dsnpu_ffi::{result, sys};

use crate::device::{next_id, Device, DeviceCore};
use crate::error::Result;
use crate::event::Event;
use crate::memory::pool::MemPool;
use crate::memory::staging::Staging;

/// Environment variable: `1` makes every launch synchronize its stream.
pub const LAUNCH_BLOCKING_ENV: &str = "DSNPU_LAUNCH_BLOCKING";

fn launch_blocking_default() -> bool {
    static DEFAULT: OnceLock<bool> = OnceLock::new();
    *DEFAULT
        .get_or_init(|| std::env::var(LAUNCH_BLOCKING_ENV).is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Set when a dropped stream's queued work has finished (its `Drop` synchronized it).
#[derive(Default)]
pub(crate) struct Drained {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Drained {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A weak reference to a stream for bookkeeping that must not keep it alive (cached pool blocks,
/// the streams a kernel binary ran on).
///
/// A plain `Weak` is not enough: it stops upgrading as soon as the last handle is released, which
/// is *before* `StreamInner::drop` has synchronized the stream, so "gone" would not yet mean
/// "idle" and work still queued on it could race with whoever trusts that (the bug behind stale
/// kernel outputs: a cached block handed to another stream without any wait while the dropped
/// stream's tiling copy and kernel were still queued on it). [`WeakStream::upgrade_or_drained`]
/// waits for the drop's synchronization instead.
#[derive(Clone)]
pub(crate) struct WeakStream {
    stream: Weak<StreamInner>,
    drained: Arc<Drained>,
}

impl WeakStream {
    pub(crate) fn new(stream: &Arc<StreamInner>) -> WeakStream {
        WeakStream {
            stream: Arc::downgrade(stream),
            drained: stream.drained.clone(),
        }
    }

    /// The stream while any handle to it lives; otherwise `None` once its drop has waited for all
    /// its work (blocking until then if another thread is dropping it right now).
    pub(crate) fn upgrade_or_drained(&self) -> Option<Arc<StreamInner>> {
        if let Some(s) = self.stream.upgrade() {
            return Some(s);
        }
        self.drained.wait();
        None
    }

    /// `f` of the stream while a handle to it lives and it is not released ([`Stream::release`]);
    /// `None` once its work is finished: its drop synchronized it (waited for here if another thread
    /// is dropping it right now), or its release did. The release waits for `f` to return, so `f` may
    /// use the raw handle of a borrowed stream that its owner destroys once released.
    pub(crate) fn with_live<R>(&self, f: impl FnOnce(&StreamInner) -> R) -> Option<R> {
        let stream = self.upgrade_or_drained()?;
        let released = stream.released.read().unwrap_or_else(|e| e.into_inner());
        if *released {
            return None;
        }
        Some(f(&stream))
    }

    /// Whether this refers to `stream`.
    pub(crate) fn is(&self, stream: &Arc<StreamInner>) -> bool {
        std::ptr::eq(self.stream.as_ptr(), Arc::as_ptr(stream))
    }

    /// Whether the stream is gone and its work finished (without waiting).
    pub(crate) fn is_finished(&self) -> bool {
        self.stream.strong_count() == 0
            && *self.drained.done.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct StreamInner {
    handle: sys::aclrtStream,
    /// `false` for a stream borrowed from the caller ([`Stream::borrow_raw`]): never destroyed here.
    owned: bool,
    id: u64,
    launch_blocking: AtomicBool,
    /// Operations queued through the buffer trackers so far (their sequence numbers are 1, 2, ...).
    queued: AtomicU64,
    /// Every operation with a sequence number up to this one is complete (a synchronization saw it).
    completed: AtomicU64,
    pub(crate) staging: Staging,
    pool: MemPool,
    core: Arc<DeviceCore>,
    /// Set at the end of `Drop`, after the stream's work finished (see [`WeakStream`]).
    drained: Arc<Drained>,
    /// Set by [`Stream::release`] once the work is finished: the raw handle is then its owner's to
    /// destroy, so the bookkeeping that reaches the stream through a [`WeakStream`] must not touch it
    /// (it read-locks this while it does, and the release write-locks it).
    released: RwLock<bool>,
    /// Held while a launch is queued and, on a launch-blocking stream, until the launch's own report
    /// is read: another thread's launch cannot come between them (`kernel.rs`).
    launch_turn: Mutex<()>,
}

// SAFETY: the stream handle is a process-wide AscendCL object; AscendCL accepts work for one stream
// from several threads, and every call binds the owning device's context first.
unsafe impl Send for StreamInner {}
// SAFETY: as above; the shared state (`launch_blocking`, `staging`) is atomic or mutex-guarded.
unsafe impl Sync for StreamInner {}

impl StreamInner {
    pub(crate) fn handle(&self) -> sys::aclrtStream {
        self.handle
    }

    /// The stream's launch turn (see `launch_turn`); a poisoned lock guards nothing broken.
    pub(crate) fn launch_turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.launch_turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.core
    }

    pub(crate) fn pool(&self) -> &MemPool {
        &self.pool
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.core.bind()?;
        let queued = self.queued();
        crate::transfer_stats::note_sync();
        // SAFETY: the handle is live while `self` exists.
        unsafe { result::stream::synchronize(self.handle) }?;
        self.completed.fetch_max(queued, Ordering::AcqRel);
        Ok(())
    }

    /// The sequence number of the last operation queued so far.
    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Numbers an operation just queued.
    pub(crate) fn note_queued(&self) -> u64 {
        self.queued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether operation `seq` is known complete without asking the device.
    pub(crate) fn completed_through(&self, seq: u64) -> bool {
        self.completed.load(Ordering::Acquire) >= seq
    }

    /// Makes later work on `self` wait for `event`'s recorded point.
    pub(crate) fn wait_event(&self, event: &Event) -> Result<()> {
        self.core.expect_same("stream wait", event.core())?;
        self.core.bind()?;
        // SAFETY: both handles are live and on one device.
        unsafe { result::stream::wait_event(self.handle, event.handle()) }.map_err(Into::into)
    }
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        // AscendCL wants a stream's work finished before it is destroyed; errors cannot be reported
        // from drop, and the staging buffers are freed only once their copies are done. A released
        // stream is finished, and its owner may have destroyed it already.
        if !*self.released.get_mut().unwrap_or_else(|e| e.into_inner()) {
            let _ = self.synchronize();
        }
        self.staging.clear();
        if self.owned && self.core.bind().is_ok() {
            // SAFETY: the stream is live, idle, and no handle to it remains.
            let _ = unsafe { result::stream::destroy(self.handle) };
        }
        // Even when synchronizing failed: the simulator and AscendCL both report the error only
        // after every queued task has run.
        self.drained.set();
    }
}

/// A handle to an AscendCL stream.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<StreamInner>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("device", &self.inner.core.ordinal())
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Stream {
    /// A new stream on `device` that allocates from the device's default pool.
    pub fn new(device: &Device) -> Result<Stream> {
        Stream::with_pool(device, device.pool().clone())
    }

    /// A new stream whose [`Stream::alloc`] uses `pool` (which must belong to `device`).
    pub fn with_pool(device: &Device, pool: MemPool) -> Result<Stream> {
        let core = device.core().clone();
        core.expect_same("stream pool", pool.core())?;
        core.bind()?;
        let handle = result::stream::create()?;
        Ok(Stream {
            inner: Arc::new(StreamInner {
                handle,
                owned: true,
                id: next_id(),
                launch_blocking: AtomicBool::new(launch_blocking_default()),
                queued: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                staging: Staging::default(),
                pool,
                core,
                drained: Arc::default(),
                released: RwLock::new(false),
                launch_turn: Mutex::new(()),
            }),
        })
    }

    /// A handle to an AscendCL stream created by someone else (a serving stack's `aclrtStream`),
    /// allocating from `device`'s default pool. Work queued through it goes on the caller's stream in
    /// the caller's order. Dropping the last handle (and the last buffer or pool block that used it)
    /// synchronizes the stream and frees this crate's staging memory, but does not destroy it.
    ///
    /// # Safety
    /// - `handle` is a live stream created on `device` in the device's default context (the one
    ///   `aclrtSetDevice` makes current; AscendCL refuses launches on a stream of another context);
    /// - it stays live until [`Stream::release`] has returned (or, without a release, until every
    ///   handle made from it here, every buffer used on it, and the device's pool are done with it);
    ///   after the release, no handle or buffer of it queues more work;
    /// - the same raw stream is not wrapped twice at once: two wrappers would not know each other's
    ///   pending work (their ids differ), so the pool could hand one's memory to the other early.
    pub unsafe fn borrow_raw(device: &Device, handle: sys::aclrtStream) -> Result<Stream> {
        if handle.is_null() {
            return Err(crate::error::RuntimeError::InvalidArgument(
                "borrowed stream handle is null".into(),
            ));
        }
        Ok(Stream {
            inner: Arc::new(StreamInner {
                handle,
                owned: false,
                id: next_id(),
                launch_blocking: AtomicBool::new(launch_blocking_default()),
                queued: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                staging: Staging::default(),
                pool: device.pool().clone(),
                core: device.core().clone(),
                drained: Arc::default(),
                released: RwLock::new(false),
                launch_turn: Mutex::new(()),
            }),
        })
    }

    /// Waits for the stream's work, then lets go of it for good: the memory pool's bookkeeping, which
    /// may still reach the stream from other threads (a cached block it used last, handed to another
    /// stream, is ordered after it), treats it as finished from here on and never touches its handle
    /// again. Call it before `aclrtDestroyStream` on a stream of [`Stream::borrow_raw`]: merely dropping
    /// the last handle leaves a window in which another thread's allocation can still record an event
    /// on it. Queuing work through another handle of the stream afterwards breaks that contract.
    ///
    /// For a stream this crate created, it synchronizes and drops this handle (the last handle's
    /// drop destroys it). Returns the synchronization's error, if any; the stream is released either
    /// way.
    pub fn release(self) -> Result<()> {
        if self.inner.owned {
            return self.inner.synchronize();
        }
        // The write lock waits for bookkeeping that reached the stream before this call.
        let mut released = self
            .inner
            .released
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let synchronized = self.inner.synchronize();
        *released = true;
        synchronized
    }

    /// The raw AscendCL handle (for calls this crate does not wrap; the stream stays owned here).
    pub fn raw_handle(&self) -> sys::aclrtStream {
        self.inner.handle
    }

    pub(crate) fn inner(&self) -> &Arc<StreamInner> {
        &self.inner
    }

    pub(crate) fn from_inner(inner: Arc<StreamInner>) -> Stream {
        Stream { inner }
    }

    pub fn device_ordinal(&self) -> i32 {
        self.inner.core.ordinal()
    }

    /// The pool [`Stream::alloc`] uses.
    pub fn pool(&self) -> &MemPool {
        &self.inner.pool
    }

    /// Whether two handles name the same AscendCL stream.
    pub fn same_as(&self, other: &Stream) -> bool {
        self.inner.id == other.inner.id
    }

    /// Blocks until all queued work is done; reports asynchronous failures of that work.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }

    /// Whether all queued work is done, without blocking.
    pub fn is_idle(&self) -> Result<bool> {
        self.inner.core.bind()?;
        // SAFETY: the handle is live.
        Ok(unsafe { result::stream::query(self.inner.handle)? })
    }

    /// Work queued on this stream after this call waits for `event`'s recorded point.
    pub fn wait_event(&self, event: &Event) -> Result<()> {
        self.inner.wait_event(event)
    }

    /// Records `event` at the current end of this stream.
    pub fn record_event(&self, event: &Event) -> Result<()> {
        event.record(self)
    }

    /// Whether launches on this stream synchronize (see the module docs).
    pub fn launch_blocking(&self) -> bool {
        self.inner.launch_blocking.load(Ordering::Relaxed)
    }

    /// Turns synchronize-after-every-launch on or off for this stream (all its handles).
    pub fn set_launch_blocking(&self, on: bool) {
        self.inner.launch_blocking.store(on, Ordering::Relaxed)
    }
}
