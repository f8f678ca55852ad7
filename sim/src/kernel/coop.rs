//! The blocks of a `SyncAll` kernel run cooperatively on the calling thread (the stream worker): each
//! on its own stack (`ucontext`), switching only where a block waits in `SyncAll`
//! ([`BlockBarrier`](super::barrier::BlockBarrier) in cooperative mode calls [`yield_block`]). A small
//! model's `SyncAll` launches are a few microseconds of work per block; a thread per block made every
//! barrier a round of futex sleeps and wakes on every block's thread, which cost far more than the work.
//! One thread also makes such a launch's run deterministic: the blocks run round robin from block 0, each
//! until it waits or returns.
//!
//! The host Ascend C layer keeps per-block state in thread-locals; its `sync_all` puts the waiting
//! block's state back when it returns (`kernels/include/dsnpu_ascendc/dsnpu_host/entry.h`), and each
//! block takes a Unified Buffer of its own.
use std::cell::{Cell, RefCell, UnsafeCell};
use std::ffi::c_void;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use super::pool::BLOCK_STACK_BYTES;

/// A block's stack: [`BLOCK_STACK_BYTES`] like a block thread's, reserved lazily (`MAP_NORESERVE`) with
/// a guard page below it; the thread keeps its stacks for later launches.
struct Stack {
    base: *mut c_void,
    len: usize,
    guard: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = BLOCK_STACK_BYTES + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; no existing
        // memory is affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack {
            base,
            len,
            guard: page,
        };
        // SAFETY: the first page of the mapping just created; nothing uses it.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error()); // `stack` unmaps it
        }
        Ok(stack)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping this Stack created; no context runs on it any more (a Sched only lives
        // within `run`, which returns after every block finished).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

thread_local! {
    static STACKS: RefCell<Vec<Stack>> = const { RefCell::new(Vec::new()) };
    /// The scheduler of the launch this thread is running cooperatively, or null.
    static CURRENT: Cell<*const Sched<'static>> = const { Cell::new(ptr::null()) };
}

struct Sched<'a> {
    main: Box<UnsafeCell<libc::ucontext_t>>,
    /// Never grows after the contexts are made: they do not move.
    blocks: Vec<UnsafeCell<libc::ucontext_t>>,
    finished: Vec<Cell<bool>>,
    cur: Cell<usize>,
    job: &'a dyn Fn(usize),
}

fn zeroed_context() -> UnsafeCell<libc::ucontext_t> {
    // SAFETY: ucontext_t is a plain C struct for which all-zero bytes are a valid value.
    UnsafeCell::new(unsafe { std::mem::zeroed() })
}

extern "C" fn block_entry() {
    let s = CURRENT.with(Cell::get);
    // SAFETY: `run` sets CURRENT to its live Sched before entering any block context and keeps it
    // until every block finished; this entry point only ever runs inside such a context.
    let sched = unsafe { &*s };
    let i = sched.cur.get();
    // A panic ends only this block, as on a block thread.
    let _ = catch_unwind(AssertUnwindSafe(|| (sched.job)(i)));
    sched.finished[i].set(true);
    // Returning resumes uc_link: the scheduler.
}

/// Runs `job(0)` .. `job(n - 1)` each on its own stack of this thread, round robin from 0, each until
/// it returns or calls [`yield_block`]; returns when all returned. An error (no stack could be mapped)
/// means no job ran.
pub(crate) fn run(n: usize, job: &dyn Fn(usize)) -> io::Result<()> {
    STACKS.with(|stacks| -> io::Result<()> {
        let mut stacks = stacks.borrow_mut();
        while stacks.len() < n {
            stacks.push(Stack::new()?);
        }
        Ok(())
    })?;
    let sched = Sched {
        main: Box::new(zeroed_context()),
        blocks: (0..n).map(|_| zeroed_context()).collect(),
        finished: (0..n).map(|_| Cell::new(false)).collect(),
        cur: Cell::new(0),
        job,
    };
    for (i, uc) in sched.blocks.iter().enumerate() {
        let (sp, size) = STACKS.with(|s| {
            let s = s.borrow();
            // SAFETY: within the mapping: the guard page is its first page.
            (
                unsafe { s[i].base.cast::<u8>().add(s[i].guard) },
                BLOCK_STACK_BYTES,
            )
        });
        let uc = uc.get();
        // SAFETY: `uc` is a context that does not move while in use (`blocks` never grows); it gets this thread's
        // stack `i` (mapped, unused by any other context of this run) and returns to `main`, which
        // outlives it. block_entry takes no arguments.
        unsafe {
            if libc::getcontext(uc) != 0 {
                return Err(io::Error::last_os_error());
            }
            (*uc).uc_stack.ss_sp = sp.cast();
            (*uc).uc_stack.ss_size = size;
            (*uc).uc_link = sched.main.get();
            libc::makecontext(uc, block_entry, 0);
        }
    }
    let outer = CURRENT.with(|c| c.replace(ptr::from_ref(&sched).cast::<Sched<'static>>()));
    let mut live = n;
    while live > 0 {
        for i in 0..n {
            if sched.finished[i].get() {
                continue;
            }
            sched.cur.set(i);
            // SAFETY: both contexts stay in place and live until this function returns; block `i` was
            // prepared above and, if it ran before, was saved by yield_block. It comes back here
            // when it yields or returns (uc_link).
            unsafe { libc::swapcontext(sched.main.get(), sched.blocks[i].get()) };
            if sched.finished[i].get() {
                live -= 1;
            }
        }
    }
    CURRENT.with(|c| c.set(outer));
    Ok(())
}

/// Lets the other blocks of the cooperative launch run; returns when the scheduler comes back to this
/// block. False (and nothing happens) when the thread is not running a block of [`run`].
pub(crate) fn yield_block() -> bool {
    let s = CURRENT.with(Cell::get);
    if s.is_null() {
        return false;
    }
    // SAFETY: non-null CURRENT is the live Sched of the `run` this block runs in.
    let sched = unsafe { &*s };
    let i = sched.cur.get();
    // SAFETY: this code runs on block `i`'s context (only blocks of `run` call this); its saved state
    // goes into its own context (in place) and the scheduler's context is live.
    unsafe { libc::swapcontext(sched.blocks[i].get(), sched.main.get()) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_interleave_round_robin_at_yields() {
        let log = RefCell::new(Vec::new());
        for _ in 0..2 {
            log.borrow_mut().clear();
            run(3, &|i| {
                log.borrow_mut().push((i, 0));
                if i != 1 {
                    assert!(yield_block());
                }
                log.borrow_mut().push((i, 1));
            })
            .expect("stacks");
            assert_eq!(
                *log.borrow(),
                [(0, 0), (1, 0), (1, 1), (2, 0), (0, 1), (2, 1)]
            );
        }
        assert!(!yield_block(), "outside a cooperative run");
    }
}
