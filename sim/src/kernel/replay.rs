//! The die-wide L2 replay of a launch (kernel ABI 5): the binary's `dsnpu_sim_launch_begin` gives the
//! launch's blocks an object to record their GM accesses in, and `dsnpu_sim_launch_end` replays them
//! through the die's one L2 into the launch's HBM counters (the host layer's `l2_die.h`).
//!
//! The replay costs about as much as the blocks' own L2 lookups, and only benchmarks read the counters,
//! so it runs lazily: a launch's record keeps the recorded accesses until the counters are read
//! (`dsnpu_sim_last_launch_counters`), which replays them once, or until the stream's next launch
//! completes, which releases them unreplayed.
use std::ffi::c_void;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::abi::Counters;
use super::binary::{Binary, LaunchHooks};
use crate::sync::lock;

enum State {
    /// What `begin` returned, not yet given to `end`.
    Recorded(usize),
    /// `end` ran: the die-wide HBM bytes (read, written), or None if it kept the blocks' sums.
    Replayed(Option<(u64, u64)>),
}

/// One launch's recorded accesses, replayed at most once.
pub(crate) struct PendingReplay {
    hooks: LaunchHooks,
    /// The hooks are the binary's code: it stays loaded while this lives.
    _binary: Arc<Binary>,
    state: Mutex<State>,
}

impl PendingReplay {
    /// Calls the binary's `begin` for a launch of `blocks` blocks; None if the binary has no hooks.
    pub(crate) fn begin(binary: &Arc<Binary>, blocks: u32) -> Option<PendingReplay> {
        let hooks = binary.launch_hooks?;
        // SAFETY: the binary's ABI 5 hook (binary.rs resolved it with this type); the result goes to
        // the launch's blocks and then to `end` exactly once (Self::hbm or Drop).
        let launch = unsafe { (hooks.begin)(blocks) } as usize;
        Some(PendingReplay {
            hooks,
            _binary: Arc::clone(binary),
            state: Mutex::new(State::Recorded(launch)),
        })
    }

    /// The address every block of the launch gets as `launch_l2`.
    pub(crate) fn launch_l2(&self) -> *mut c_void {
        match *lock(&self.state) {
            State::Recorded(p) => p as *mut c_void,
            State::Replayed(_) => std::ptr::null_mut(),
        }
    }

    /// The launch's HBM bytes (read, written) in the die's one L2, replayed on the first call; None if
    /// the binary kept the blocks' sums (it recorded too much, or had no memory).
    /// Call only after every block of the launch returned.
    pub(crate) fn hbm(&self) -> Option<(u64, u64)> {
        let mut state = lock(&self.state);
        if let State::Recorded(p) = *state {
            let mut totals = Counters::default();
            // SAFETY: `p` came from this binary's `begin` and is given to `end` once (the state
            // changes here, under the lock); the caller guarantees the blocks are done with it.
            let replayed = unsafe { (self.hooks.end)(p as *mut c_void, &mut totals) } == 1;
            *state = State::Replayed(
                replayed.then_some((totals.hbm_read_bytes, totals.hbm_write_bytes)),
            );
        }
        match *state {
            State::Replayed(r) => r,
            State::Recorded(_) => None,
        }
    }
}

impl Drop for PendingReplay {
    fn drop(&mut self) {
        if let State::Recorded(p) = *lock(&self.state) {
            // SAFETY: as in `hbm`; a null `totals` only releases the record.
            unsafe { (self.hooks.end)(p as *mut c_void, std::ptr::null_mut()) };
        }
    }
}

impl fmt::Debug for PendingReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingReplay")
    }
}
