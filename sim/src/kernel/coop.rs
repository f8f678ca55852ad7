//! The blocks of a `SyncAll` kernel run cooperatively on the calling thread (the stream worker): each
//! on its own stack, switching only where a block waits in `SyncAll`
//! ([`BlockBarrier`](super::barrier::BlockBarrier) in cooperative mode calls [`yield_block`]). A small
//! model's `SyncAll` launches are a few microseconds of work per block; a thread per block made every
//! barrier a round of futex sleeps and wakes on every block's thread, which cost far more than the work.
//! One thread also makes such a launch's run deterministic: the blocks run round robin from block 0, each
//! until it waits or returns.
//!
//! The host Ascend C layer keeps per-block state in thread-locals; its `sync_all` puts the waiting
//! block's state back when it returns (`kernels/include/dsnpu_ascendc/dsnpu_host/entry.h`), and each
//! block takes a Unified Buffer of its own.
//!
//! On x86-64 and aarch64 a switch saves and restores only the callee-saved registers ([`context`]);
//! `swapcontext` also saves the signal mask, a system call per switch. Other targets use `ucontext`.
use std::cell::{Cell, RefCell};
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

/// Saved execution contexts: a register-only switch where there is one, `ucontext` elsewhere.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod context {
    use std::cell::Cell;
    use std::ffi::c_void;

    // dsnpu_sim_coop_switch(save, next): pushes the callee-saved registers on the current stack,
    // stores the stack pointer in *save, loads `next` (stored by an earlier switch, or a frame laid out
    // by `prepare`) and pops that context's registers, returning into it. dsnpu_sim_coop_start is a
    // new context's first return address: it calls the entry function `prepare` put in a register.
    //
    // SysV x86-64: the callee-saved set is rbx, rbp, r12-r15, rsp and the control bits of MXCSR and
    // the x87 control word (every xmm register is caller-saved); the return address is on the stack.
    // Frame from the saved stack pointer up: MXCSR and x87 CW (one 8-byte slot), r15, r14, r13, r12,
    // rbx, rbp, return address.
    #[cfg(target_arch = "x86_64")]
    std::arch::global_asm!(
        ".pushsection .text.dsnpu_sim_coop_switch,\"ax\",@progbits",
        ".globl dsnpu_sim_coop_switch",
        ".hidden dsnpu_sim_coop_switch",
        ".type dsnpu_sim_coop_switch,@function",
        ".p2align 4",
        "dsnpu_sim_coop_switch:",
        "pushq %rbp",
        "pushq %rbx",
        "pushq %r12",
        "pushq %r13",
        "pushq %r14",
        "pushq %r15",
        "subq $8, %rsp",
        "stmxcsr (%rsp)",
        "fnstcw 4(%rsp)",
        "movq %rsp, (%rdi)",
        "movq %rsi, %rsp",
        "ldmxcsr (%rsp)",
        "fldcw 4(%rsp)",
        "addq $8, %rsp",
        "popq %r15",
        "popq %r14",
        "popq %r13",
        "popq %r12",
        "popq %rbx",
        "popq %rbp",
        "ret",
        ".size dsnpu_sim_coop_switch, .-dsnpu_sim_coop_switch",
        ".globl dsnpu_sim_coop_start",
        ".hidden dsnpu_sim_coop_start",
        ".type dsnpu_sim_coop_start,@function",
        ".p2align 4",
        "dsnpu_sim_coop_start:",
        ".cfi_startproc",
        ".cfi_undefined rip",
        "callq *%r12",
        "ud2",
        ".cfi_endproc",
        ".size dsnpu_sim_coop_start, .-dsnpu_sim_coop_start",
        ".popsection",
        options(att_syntax)
    );

    // AAPCS64: the callee-saved set is x19-x28, the frame pointer x29, the link register x30 (the
    // return address), sp, and the low 64 bits of v8-v15 (d8-d15); FPCR's modes are kept too. Frame
    // from the saved stack pointer up: x19..x30 in pairs, d8..d15 in pairs, FPCR, padding to 16 bytes.
    #[cfg(target_arch = "aarch64")]
    std::arch::global_asm!(
        ".pushsection .text.dsnpu_sim_coop_switch,\"ax\",%progbits",
        ".globl dsnpu_sim_coop_switch",
        ".hidden dsnpu_sim_coop_switch",
        ".type dsnpu_sim_coop_switch,%function",
        ".p2align 4",
        "dsnpu_sim_coop_switch:",
        "hint #34",
        "sub sp, sp, #176",
        "stp x19, x20, [sp, #0]",
        "stp x21, x22, [sp, #16]",
        "stp x23, x24, [sp, #32]",
        "stp x25, x26, [sp, #48]",
        "stp x27, x28, [sp, #64]",
        "stp x29, x30, [sp, #80]",
        "stp d8, d9, [sp, #96]",
        "stp d10, d11, [sp, #112]",
        "stp d12, d13, [sp, #128]",
        "stp d14, d15, [sp, #144]",
        "mrs x9, fpcr",
        "str x9, [sp, #160]",
        "mov x9, sp",
        "str x9, [x0]",
        "mov sp, x1",
        "ldp x19, x20, [sp, #0]",
        "ldp x21, x22, [sp, #16]",
        "ldp x23, x24, [sp, #32]",
        "ldp x25, x26, [sp, #48]",
        "ldp x27, x28, [sp, #64]",
        "ldp x29, x30, [sp, #80]",
        "ldp d8, d9, [sp, #96]",
        "ldp d10, d11, [sp, #112]",
        "ldp d12, d13, [sp, #128]",
        "ldp d14, d15, [sp, #144]",
        "ldr x9, [sp, #160]",
        "msr fpcr, x9",
        "add sp, sp, #176",
        "ret",
        ".size dsnpu_sim_coop_switch, .-dsnpu_sim_coop_switch",
        ".globl dsnpu_sim_coop_start",
        ".hidden dsnpu_sim_coop_start",
        ".type dsnpu_sim_coop_start,%function",
        ".p2align 4",
        "dsnpu_sim_coop_start:",
        ".cfi_startproc",
        ".cfi_undefined x30",
        "blr x19",
        "brk #0",
        ".cfi_endproc",
        ".size dsnpu_sim_coop_start, .-dsnpu_sim_coop_start",
        ".popsection",
    );

    extern "C" {
        fn dsnpu_sim_coop_switch(save: *mut *mut c_void, next: *mut c_void);
        fn dsnpu_sim_coop_start();
    }

    /// A saved context: its stack pointer.
    pub(super) struct Context(Cell<*mut c_void>);

    impl Context {
        pub(super) fn new() -> Context {
            Context(Cell::new(std::ptr::null_mut()))
        }
    }

    /// Makes `ctx` enter `entry` on the stack `[base, base + len)` at its next switch. The entry
    /// must not return: it ends with [`finish`].
    ///
    /// # Safety
    /// The stack range is mapped, writable and used by no live context; `len` >= 4096.
    pub(super) unsafe fn prepare(
        ctx: &Context,
        base: *mut u8,
        len: usize,
        entry: extern "C" fn(),
        _link: &Context,
    ) -> std::io::Result<()> {
        // 16-byte aligned with room above it: the entry's call starts from an aligned stack.
        let top = (base as usize + len) & !15;
        let frame = (top - 256) as *mut u64;
        let mut words = [0u64; 32];
        let start = dsnpu_sim_coop_start as unsafe extern "C" fn() as usize as u64;
        #[cfg(target_arch = "x86_64")]
        {
            let mut mxcsr: u32 = 0;
            let mut fpcw: u16 = 0;
            // SAFETY: stores this thread's MXCSR and x87 control word into the two locals.
            unsafe {
                std::arch::asm!(
                    "stmxcsr [{0}]",
                    "fnstcw [{1}]",
                    in(reg) &mut mxcsr,
                    in(reg) &mut fpcw,
                    options(nostack, preserves_flags)
                )
            };
            words[0] = u64::from(mxcsr) | (u64::from(fpcw) << 32);
            words[4] = entry as usize as u64; // r12
            words[7] = start; // return address
        }
        #[cfg(target_arch = "aarch64")]
        {
            let fpcr: u64;
            // SAFETY: reads this thread's FPCR.
            unsafe { std::arch::asm!("mrs {0}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
            words[0] = entry as usize as u64; // x19
            words[11] = start; // x30
            words[20] = fpcr;
        }
        // SAFETY: `frame` .. `frame + 32` words lie inside the stack range (per the contract) and
        // are 8-byte aligned.
        unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), frame, words.len()) };
        ctx.0.set(frame.cast());
        Ok(())
    }

    /// Saves the running context in `save` and resumes `next`.
    ///
    /// # Safety
    /// `next` was saved by a switch (and not resumed since) or prepared; both outlive the switch
    /// back to `save`.
    pub(super) unsafe fn switch(save: &Context, next: &Context) {
        // SAFETY: per the contract `next` holds a valid saved stack pointer; the assembly saves
        // every callee-saved register, so to the compiler this is an ordinary call.
        unsafe { dsnpu_sim_coop_switch(save.0.as_ptr(), next.0.get()) };
    }

    /// Ends a prepared context for good: resumes `link`.
    ///
    /// # Safety
    /// As [`switch`]; nothing resumes the ending context afterwards.
    pub(super) unsafe fn finish(link: &Context) -> ! {
        let dead = Context::new();
        // SAFETY: per the contract.
        unsafe { switch(&dead, link) };
        // A finished context is never resumed.
        std::process::abort()
    }
}

/// Saved execution contexts through `ucontext` (targets without a hand-written switch).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod context {
    use std::cell::UnsafeCell;

    pub(super) struct Context(Box<UnsafeCell<libc::ucontext_t>>);

    impl Context {
        pub(super) fn new() -> Context {
            // SAFETY: ucontext_t is a plain C struct for which all-zero bytes are a valid value.
            Context(Box::new(UnsafeCell::new(unsafe { std::mem::zeroed() })))
        }
    }

    /// Makes `ctx` enter `entry` on the stack `[base, base + len)`; when `entry` returns, `link`
    /// resumes.
    ///
    /// # Safety
    /// The stack range is mapped and used by no live context; `link` outlives `ctx`.
    pub(super) unsafe fn prepare(
        ctx: &Context,
        base: *mut u8,
        len: usize,
        entry: extern "C" fn(),
        link: &Context,
    ) -> std::io::Result<()> {
        let uc = ctx.0.get();
        // SAFETY: `uc` is a boxed context that does not move; it gets the stack of the contract and
        // returns to `link`. `entry` takes no arguments.
        unsafe {
            if libc::getcontext(uc) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            (*uc).uc_stack.ss_sp = base.cast();
            (*uc).uc_stack.ss_size = len;
            (*uc).uc_link = link.0.get();
            libc::makecontext(uc, entry, 0);
        }
        Ok(())
    }

    /// Saves the running context in `save` and resumes `next`.
    ///
    /// # Safety
    /// `next` was saved by a switch (and not resumed since) or prepared; both stay in place.
    pub(super) unsafe fn switch(save: &Context, next: &Context) {
        // SAFETY: per the contract.
        unsafe { libc::swapcontext(save.0.get(), next.0.get()) };
    }

    /// Ends a prepared context: returning from its entry resumes its link.
    ///
    /// # Safety
    /// Called last in the entry function.
    pub(super) unsafe fn finish(_link: &Context) {}
}

struct Sched<'a> {
    main: context::Context,
    blocks: Vec<context::Context>,
    finished: Vec<Cell<bool>>,
    cur: Cell<usize>,
    job: &'a dyn Fn(usize),
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
    // SAFETY: the scheduler's context saved itself when it switched here and outlives the blocks;
    // nothing resumes a finished block.
    unsafe { context::finish(&sched.main) }
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
        main: context::Context::new(),
        blocks: (0..n).map(|_| context::Context::new()).collect(),
        finished: (0..n).map(|_| Cell::new(false)).collect(),
        cur: Cell::new(0),
        job,
    };
    for (i, ctx) in sched.blocks.iter().enumerate() {
        let sp = STACKS.with(|s| {
            let s = s.borrow();
            // SAFETY: within the mapping: the guard page is its first page.
            unsafe { s[i].base.cast::<u8>().add(s[i].guard) }
        });
        // SAFETY: stack `i` of this thread is mapped (BLOCK_STACK_BYTES above its guard page) and no
        // other context of this run uses it; `main` outlives the block contexts.
        unsafe { context::prepare(ctx, sp, BLOCK_STACK_BYTES, block_entry, &sched.main)? };
    }
    let outer = CURRENT.with(|c| c.replace(ptr::from_ref(&sched).cast::<Sched<'static>>()));
    let mut live = n;
    while live > 0 {
        for i in 0..n {
            if sched.finished[i].get() {
                continue;
            }
            sched.cur.set(i);
            // SAFETY: both contexts live until this function returns; block `i` was prepared above
            // and, if it ran before, was saved by yield_block. It comes back here when it yields or
            // finishes.
            unsafe { context::switch(&sched.main, &sched.blocks[i]) };
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
    // SAFETY: this code runs on block `i`'s context (only blocks of `run` call this); its state is
    // saved into its own context and the scheduler's context is live.
    unsafe { context::switch(&sched.blocks[i], &sched.main) };
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
