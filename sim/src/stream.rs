//! Streams: a FIFO of tasks run in order by one worker thread per stream.
//!
//! Tasks are copies, memsets, kernel launches, collectives, event records and event waits. A task
//! that fails stores its error in the stream; the error is *sticky until reported*: the next
//! `aclrtSynchronizeStream` (or a call that synchronizes implicitly, like an asynchronous copy from
//! pageable memory) returns it and clears it. While an error is pending the worker skips copies,
//! memsets and launches queued after the fault (their inputs may be garbage), but still completes
//! event records and collectives, so no other stream or rank waits forever. `aclrtStreamQuery`
//! reports progress only, not the error.
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::config::SimConfig;
use crate::copy::{CopyPlan, MemsetPlan};
use crate::error::SimError;
use crate::event::Event;
use crate::guard::panic_message;
use crate::hccl::CollectiveTask;
use crate::kernel::{run_launch, Launch, LaunchRecord};
use crate::memory::Memory;
use crate::sync::{lock, wait};

/// Work queued on a stream.
pub(crate) enum TaskKind {
    Copy(CopyPlan),
    Memset(MemsetPlan),
    Launch(Box<Launch>),
    Collective(Box<CollectiveTask>),
    Record { event: Arc<Event>, generation: u64 },
    Wait { event: Arc<Event>, generation: u64 },
}

/// What a stream worker needs besides its queue.
pub(crate) struct WorkerEnv {
    pub memory: Arc<Memory>,
    pub config: Arc<SimConfig>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(u64, TaskKind)>,
    submitted: u64,
    completed: u64,
    error: Option<SimError>,
    closed: bool,
    launches: u64,
    last_launch: Option<LaunchRecord>,
    /// The worker sleeps on `Shared::work` (nothing queued).
    worker_idle: bool,
    /// The smallest task number a host thread sleeps on `Shared::done` for: the worker wakes them
    /// once that task completed, not after every task (a decode step queues dozens).
    wake_at: Option<u64>,
}

struct Shared {
    state: Mutex<State>,
    /// The worker waits here for tasks (and for `closed`).
    work: Condvar,
    /// Host threads wait here for completions.
    done: Condvar,
}

pub(crate) struct Stream {
    pub id: u64,
    pub device: i32,
    /// The context the stream belongs to.
    pub ctx: u64,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

enum Outcome {
    Done,
    Failed(SimError),
    Launched(LaunchRecord, Result<(), SimError>),
}

impl Stream {
    /// Creates a stream and starts its worker.
    pub(crate) fn spawn(
        id: u64,
        device: i32,
        ctx: u64,
        env: WorkerEnv,
    ) -> Result<Arc<Stream>, SimError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name(format!("dsnpu-stream-{id:x}"))
            // The worker runs kernel blocks itself (kernel::launch, kernel::pool::run_all).
            .stack_size(crate::kernel::pool::BLOCK_STACK_BYTES)
            .spawn(move || worker_loop(&worker_shared, &env, device))
            .map_err(|e| {
                SimError::Resources(format!(
                    "cannot start the worker thread of a new stream: {e}"
                ))
            })?;
        Ok(Arc::new(Stream {
            id,
            device,
            ctx,
            shared,
            worker: Mutex::new(Some(handle)),
        }))
    }

    /// Queues the task `make` builds; `make` runs under the queue lock, after the closed check,
    /// so side effects in it (issuing an event generation) happen only for queued tasks.
    pub(crate) fn enqueue_with(&self, make: impl FnOnce() -> TaskKind) -> Result<u64, SimError> {
        let mut s = lock(&self.shared.state);
        if s.closed {
            return Err(SimError::InvalidHandle {
                kind: "stream",
                handle: self.id as usize,
            });
        }
        s.submitted += 1;
        let seq = s.submitted;
        s.queue.push_back((seq, make()));
        if s.worker_idle {
            self.shared.work.notify_one();
        }
        Ok(seq)
    }

    pub(crate) fn enqueue(&self, task: TaskKind) -> Result<u64, SimError> {
        self.enqueue_with(|| task)
    }

    /// Blocks until task `seq` (and everything before it) ran.
    pub(crate) fn wait_for(&self, seq: u64) {
        let mut s = lock(&self.shared.state);
        while s.completed < seq {
            s.wake_at = Some(s.wake_at.map_or(seq, |w| w.min(seq)));
            s = wait(&self.shared.done, s);
        }
    }

    /// Returns and clears the pending error.
    pub(crate) fn take_error(&self) -> Result<(), SimError> {
        match lock(&self.shared.state).error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `aclrtSynchronizeStream`: waits for every task queued before the call, then reports.
    pub(crate) fn synchronize(&self) -> Result<(), SimError> {
        let target = lock(&self.shared.state).submitted;
        self.wait_for(target);
        self.take_error()
    }

    /// Whether every queued task ran.
    pub(crate) fn is_idle(&self) -> bool {
        let s = lock(&self.shared.state);
        s.completed == s.submitted
    }

    /// The number of launches completed and the record of the last one.
    pub(crate) fn last_launch(&self) -> (u64, Option<LaunchRecord>) {
        let s = lock(&self.shared.state);
        (s.launches, s.last_launch.clone())
    }

    /// Stops accepting tasks, lets the worker finish the queue, and joins it. Idempotent.
    pub(crate) fn close(&self) {
        {
            let mut s = lock(&self.shared.state);
            s.closed = true;
            self.shared.work.notify_all();
        }
        let handle = lock(&self.worker).take();
        if let Some(h) = handle {
            // The worker catches task panics, so it only ends by returning; nothing to report.
            let _ = h.join();
        }
    }
}

/// The next task (waiting for one), or None once the stream is closed and drained.
fn next_task(shared: &Shared, mut s: MutexGuard<'_, State>) -> Option<(u64, TaskKind, bool)> {
    loop {
        if let Some((seq, task)) = s.queue.pop_front() {
            return Some((seq, task, s.error.is_some()));
        }
        if s.closed {
            return None;
        }
        s.worker_idle = true;
        s = wait(&shared.work, s);
        s.worker_idle = false;
    }
}

fn worker_loop(shared: &Shared, env: &WorkerEnv, device: i32) {
    let mut next = next_task(shared, lock(&shared.state));
    while let Some((seq, task, faulted)) = next {
        let outcome = catch_unwind(AssertUnwindSafe(|| run_task(task, faulted, env, device)))
            .unwrap_or_else(|p| Outcome::Failed(SimError::Internal(panic_message(p.as_ref()))));
        // One lock for the completion and the next task: the host thread queueing work contends
        // for it less.
        let mut s = lock(&shared.state);
        let failure = match outcome {
            Outcome::Done => None,
            Outcome::Failed(e) => Some(e),
            Outcome::Launched(record, result) => {
                s.launches += 1;
                s.last_launch = Some(record);
                result.err()
            }
        };
        if let Some(e) = failure {
            s.error.get_or_insert(e);
        }
        s.completed = seq;
        // Every waiter re-arms wake_at with its own target if it is not done yet.
        if s.wake_at.is_some_and(|w| w <= seq) {
            s.wake_at = None;
            shared.done.notify_all();
        }
        next = next_task(shared, s);
    }
}

fn run_task(task: TaskKind, faulted: bool, env: &WorkerEnv, device: i32) -> Outcome {
    let done = |r: Result<(), SimError>| match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed(e),
    };
    match task {
        TaskKind::Copy(_) | TaskKind::Memset(_) | TaskKind::Launch(_) if faulted => Outcome::Done,
        TaskKind::Copy(plan) => done(plan.execute(&env.memory)),
        TaskKind::Memset(plan) => done(plan.execute(&env.memory)),
        TaskKind::Launch(launch) => {
            let (result, record) = run_launch(&launch, device, &env.memory, &env.config);
            Outcome::Launched(record, result)
        }
        TaskKind::Collective(task) => done(task.run(&env.memory)),
        TaskKind::Record { event, generation } => {
            event.complete(generation);
            Outcome::Done
        }
        TaskKind::Wait { event, generation } => {
            event.wait_for(generation);
            Outcome::Done
        }
    }
}
