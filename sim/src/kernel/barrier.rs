//! `SyncAll` across the blocks of one launch, with a release that keeps it from hanging: a block
//! that fails, or returns while others wait, abandons the barrier and every waiter returns. Blocks on
//! threads of their own wait on a condition variable; blocks run cooperatively on one thread
//! ([`super::coop`]) let the others run instead.
use std::sync::{Condvar, Mutex};

use crate::sync::{lock, wait};

/// The result of one `SyncAll` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncOutcome {
    /// All blocks arrived.
    Passed,
    /// The launch is being abandoned (a block failed or left).
    Abandoned,
    /// A block already returned from the kernel, so this barrier can never complete.
    Impossible,
}

#[derive(Default)]
struct State {
    arrived: u32,
    generation: u64,
    exited: u32,
    aborted: bool,
}

pub(crate) struct BlockBarrier {
    expected: u32,
    /// The blocks run cooperatively on one thread: a waiter yields to the others.
    cooperative: bool,
    state: Mutex<State>,
    cv: Condvar,
}

impl BlockBarrier {
    pub(crate) fn new(expected: u32, cooperative: bool) -> BlockBarrier {
        BlockBarrier {
            expected,
            cooperative,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }
    }

    /// Waits until all `expected` blocks arrive, or the barrier is abandoned.
    pub(crate) fn sync(&self) -> SyncOutcome {
        let mut s = lock(&self.state);
        if s.aborted {
            return SyncOutcome::Abandoned;
        }
        if s.exited > 0 {
            s.aborted = true;
            self.cv.notify_all();
            return SyncOutcome::Impossible;
        }
        s.arrived += 1;
        if s.arrived >= self.expected {
            s.arrived = 0;
            s.generation += 1;
            self.cv.notify_all();
            return SyncOutcome::Passed;
        }
        let generation = s.generation;
        while s.generation == generation && !s.aborted {
            if self.cooperative {
                drop(s);
                super::coop::yield_block();
                s = lock(&self.state);
            } else {
                s = wait(&self.cv, s);
            }
        }
        if s.generation != generation {
            SyncOutcome::Passed
        } else {
            SyncOutcome::Abandoned
        }
    }

    /// A block returned from the kernel. True when blocks were waiting for it: they are released
    /// and the caller records the fault.
    pub(crate) fn exit(&self) -> bool {
        let mut s = lock(&self.state);
        s.exited += 1;
        if s.arrived > 0 && !s.aborted {
            s.aborted = true;
            self.cv.notify_all();
            return true;
        }
        false
    }

    /// Abandons the barrier (a block failed).
    pub(crate) fn abort(&self) {
        lock(&self.state).aborted = true;
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn all_blocks_meet_repeatedly() {
        let b = BlockBarrier::new(4, false);
        let counter = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for round in 1..=3u32 {
                        counter.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(b.sync(), SyncOutcome::Passed);
                        // Everyone incremented before anyone passed this round.
                        assert!(counter.load(Ordering::SeqCst) >= 4 * round);
                        assert_eq!(b.sync(), SyncOutcome::Passed);
                    }
                    b.exit();
                });
            }
        });
    }

    #[test]
    fn an_early_exit_releases_the_waiters() {
        let b = BlockBarrier::new(3, false);
        std::thread::scope(|s| {
            let w1 = s.spawn(|| b.sync());
            let w2 = s.spawn(|| b.sync());
            // Wait until both wait, then leave without arriving.
            while lock(&b.state).arrived < 2 {
                std::thread::yield_now();
            }
            assert!(b.exit());
            assert_eq!(w1.join().unwrap(), SyncOutcome::Abandoned);
            assert_eq!(w2.join().unwrap(), SyncOutcome::Abandoned);
        });
        let late = BlockBarrier::new(2, false);
        assert!(!late.exit(), "nobody was waiting");
        assert_eq!(late.sync(), SyncOutcome::Impossible);
        let failed = BlockBarrier::new(2, false);
        failed.abort();
        assert_eq!(failed.sync(), SyncOutcome::Abandoned);
    }

    #[test]
    fn cooperative_blocks_meet_on_one_thread() {
        let b = BlockBarrier::new(4, true);
        let counter = AtomicU32::new(0);
        super::super::coop::run(4, &|_| {
            for round in 1..=3u32 {
                counter.fetch_add(1, Ordering::SeqCst);
                assert_eq!(b.sync(), SyncOutcome::Passed);
                assert!(counter.load(Ordering::SeqCst) >= 4 * round);
            }
            b.exit();
        })
        .expect("stacks");
        // Block 0 returns without a SyncAll the others wait in: all are released.
        let b = BlockBarrier::new(3, true);
        let outcomes = Mutex::new(Vec::new());
        let left = AtomicU32::new(0);
        super::super::coop::run(3, &|i| {
            if i == 2 {
                if b.exit() {
                    left.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            let o = b.sync();
            lock(&outcomes).push(o);
            b.exit();
        })
        .expect("stacks");
        assert_eq!(left.load(Ordering::SeqCst), 1);
        assert_eq!(*lock(&outcomes), [SyncOutcome::Abandoned; 2]);
    }
}
