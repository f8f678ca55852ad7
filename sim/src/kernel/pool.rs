//! Reusable block threads. Starting a thread per block per launch costs tens of microseconds per
//! block; instead a launch borrows one idle pool thread per block (starting new ones only when none
//! is idle), hands each its block and waits until every block returned. The last block runs on the
//! calling thread itself (the stream worker, started with the same stack size), so a one-block launch
//! needs no handoff at all. Each block still has a thread of its own for the whole launch, so all
//! blocks of a wave run concurrently (`SyncAll`).
//! `aclFinalize` stops the idle threads ([`shutdown`]), so no simulator code keeps running after it.
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

use crate::sync::{lock, wait};

/// Stack of each block thread: host kernels may keep sizeable local buffers. A thread that calls
/// [`run_all`] needs at least this much too (it runs one of the blocks).
pub(crate) const BLOCK_STACK_BYTES: usize = 8 << 20;

type Job = Box<dyn FnOnce() + Send + 'static>;

enum Slot {
    Empty,
    Job(Job),
    Quit,
}

struct Worker {
    slot: Mutex<Slot>,
    cv: Condvar,
    handle: Mutex<Option<JoinHandle<()>>>,
}

static IDLE: Mutex<Vec<Arc<Worker>>> = Mutex::new(Vec::new());
/// Every worker started, idle or not, for [`shutdown`].
static ALL: Mutex<Vec<Arc<Worker>>> = Mutex::new(Vec::new());

fn worker_loop(me: &Arc<Worker>) {
    loop {
        let job = {
            let mut slot = lock(&me.slot);
            loop {
                match std::mem::replace(&mut *slot, Slot::Empty) {
                    Slot::Job(job) => break job,
                    Slot::Quit => {
                        // It may have queued itself as idle after shutdown cleared the list.
                        lock(&IDLE).retain(|w| !Arc::ptr_eq(w, me));
                        return;
                    }
                    Slot::Empty => slot = wait(&me.cv, slot),
                }
            }
        };
        // A panicking job still counts down its latch (the guard inside it drops while unwinding).
        let _ = catch_unwind(AssertUnwindSafe(job));
        lock(&IDLE).push(Arc::clone(me));
    }
}

/// An idle worker, or a new one.
fn checkout() -> io::Result<Arc<Worker>> {
    if let Some(w) = lock(&IDLE).pop() {
        return Ok(w);
    }
    let w = Arc::new(Worker {
        slot: Mutex::new(Slot::Empty),
        cv: Condvar::new(),
        handle: Mutex::new(None),
    });
    let me = Arc::clone(&w);
    let handle = thread::Builder::new()
        .name("dsnpu-block".into())
        .stack_size(BLOCK_STACK_BYTES)
        .spawn(move || worker_loop(&me))?;
    *lock(&w.handle) = Some(handle);
    lock(&ALL).push(Arc::clone(&w));
    Ok(w)
}

/// Counts the jobs of one [`run_all`] call that have not finished.
struct Latch {
    left: Mutex<usize>,
    cv: Condvar,
}

impl Latch {
    fn done(&self) {
        let mut left = lock(&self.left);
        *left -= 1;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut left = lock(&self.left);
        while *left > 0 {
            left = wait(&self.cv, left);
        }
    }
}

/// Waits for the started jobs even if the caller unwinds, so no job outlives its borrows.
struct WaitOnDrop<'a>(&'a Latch);

impl Drop for WaitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.wait();
    }
}

/// Counts its job down when dropped: after the job ran (or unwound).
struct CountDown(*const Latch);

// SAFETY: the pointer is only dereferenced to call `Latch::done`, whose state is behind a Mutex;
// the latch outlives every job (run_all waits for it before returning).
unsafe impl Send for CountDown {}

impl Drop for CountDown {
    fn drop(&mut self) {
        // SAFETY: run_all keeps the latch alive until every started job dropped its CountDown.
        unsafe { &*self.0 }.done();
    }
}

/// Runs every job on its own thread, all at the same time, and returns when all have finished: the
/// last job on the calling thread (whose stack must be at least [`BLOCK_STACK_BYTES`]), the others on
/// pool threads. If no thread can be obtained for job `i`, `abandon(i, error)` runs first (it must
/// release started jobs that wait for the others, e.g. abort their barrier), jobs `i..` are dropped
/// unstarted, and the started ones are waited for.
pub(crate) fn run_all<'env>(
    mut jobs: Vec<Box<dyn FnOnce() + Send + 'env>>,
    abandon: impl FnOnce(usize, io::Error),
) {
    let latch = Latch {
        left: Mutex::new(0),
        cv: Condvar::new(),
    };
    let _wait = WaitOnDrop(&latch);
    let Some(last) = jobs.pop() else {
        return;
    };
    for (i, job) in jobs.into_iter().enumerate() {
        let worker = match checkout() {
            Ok(w) => w,
            Err(e) => {
                abandon(i, e);
                return;
            }
        };
        *lock(&latch.left) += 1;
        let count_down = CountDown(&latch);
        let wrapped: Box<dyn FnOnce() + Send + 'env> = Box::new(move || {
            let _count_down = count_down;
            job();
        });
        // SAFETY: only the lifetime is changed. The job borrows data living for 'env, i.e. at least
        // until this function returns; `_wait` makes this function (even when unwinding) wait until
        // every started job has dropped its CountDown, which happens after the job ran and after
        // everything it captured was consumed or dropped.
        let job: Job =
            unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'env>, Job>(wrapped) };
        *lock(&worker.slot) = Slot::Job(job);
        worker.cv.notify_one();
    }
    // As on a pool thread, a panic ends only this job; `_wait` then waits for the others.
    let _ = catch_unwind(AssertUnwindSafe(last));
}

/// Stops and joins every block thread (at `aclFinalize`, when no launch runs any more; a thread
/// still finishing a job quits right after it).
pub(crate) fn shutdown() {
    let all = std::mem::take(&mut *lock(&ALL));
    lock(&IDLE).clear();
    for w in &all {
        *lock(&w.slot) = Slot::Quit;
        w.cv.notify_one();
    }
    for w in all {
        let handle = lock(&w.handle).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn jobs_run_concurrently_and_threads_are_reused() {
        let barrier = Barrier::new(4);
        let mut hits = [0u32; 4];
        for _ in 0..3 {
            let jobs: Vec<Box<dyn FnOnce() + Send + '_>> = hits
                .iter_mut()
                .map(|h| {
                    let b = &barrier;
                    Box::new(move || {
                        // Deadlocks unless all four run at once.
                        b.wait();
                        *h += 1;
                    }) as Box<dyn FnOnce() + Send + '_>
                })
                .collect();
            run_all(jobs, |i, e| panic!("no thread for job {i}: {e}"));
        }
        assert_eq!(hits, [3; 4]);
    }
}
