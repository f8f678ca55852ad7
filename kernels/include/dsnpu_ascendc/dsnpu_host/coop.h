// The cores of one mix block, run cooperatively on the block's thread: each core on its own stack,
// switching only where a core cannot go on (a CrossCoreWaitFlag whose counter is empty). A block's cores
// hand each other work every few microseconds; with a thread per core every handoff was a futex sleep and
// wake, which cost more than the work. One thread also makes a block's run deterministic.
//
// On x86-64 and aarch64 a switch saves and restores only the callee-saved registers (dsnpu_coop_switch
// below): ucontext's swapcontext also saves the signal mask, a system call on every switch, which was
// most of a small mix launch's cost. Other architectures use ucontext.
//
// Each core's body must not let an exception leave it (run_core catches everything), and code that keeps
// per-core state in thread-locals must save it around yield(): yield() does so for t_block.
#ifndef DSNPU_ASCENDC_HOST_COOP_H
#define DSNPU_ASCENDC_HOST_COOP_H

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <vector>

#include "block.h"
#include "pipeline.h"

// DSNPU_COOP_UCONTEXT forces the portable path (to test it on these architectures).
#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(DSNPU_COOP_UCONTEXT)
#define DSNPU_COOP_FAST_SWITCH 1
extern "C" {
// Pushes the callee-saved registers on the current stack, stores the stack pointer in *save, loads `next`
// (a stack pointer stored by an earlier switch, or a frame laid out by CoopCores::prepare) and pops that
// context's registers: it returns into the context `next` was saved from.
__attribute__((visibility("hidden"))) void dsnpu_coop_switch(void** save, void* next);
// A new context's first return address: calls the entry function prepare put in a callee-saved register.
__attribute__((visibility("hidden"))) void dsnpu_coop_start();
}
// Each translation unit that includes this header emits the two functions; the comdat groups keep one copy.
#if defined(__x86_64__)
// SysV x86-64: the callee-saved set is rbx, rbp, r12-r15, rsp, and the control bits of MXCSR and the x87
// control word (every xmm register is caller-saved); the return address is on the stack. Frame, from
// the saved stack pointer up: MXCSR (4 bytes) and x87 CW (2 bytes) in one 8-byte slot, r15, r14, r13,
// r12, rbx, rbp, return address.
asm(R"(
    .pushsection .text.dsnpu_coop_switch,"axG",@progbits,dsnpu_coop_switch,comdat
    .weak dsnpu_coop_switch
    .hidden dsnpu_coop_switch
    .type dsnpu_coop_switch,@function
    .p2align 4
dsnpu_coop_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size dsnpu_coop_switch, .-dsnpu_coop_switch
    .popsection

    .pushsection .text.dsnpu_coop_start,"axG",@progbits,dsnpu_coop_start,comdat
    .weak dsnpu_coop_start
    .hidden dsnpu_coop_start
    .type dsnpu_coop_start,@function
    .p2align 4
dsnpu_coop_start:
    .cfi_startproc
    .cfi_undefined rip
    callq *%r12
    ud2
    .cfi_endproc
    .size dsnpu_coop_start, .-dsnpu_coop_start
    .popsection
)");
#else
// AAPCS64: the callee-saved set is x19-x28, the frame pointer x29, the link register x30 (the return
// address), sp, and the low 64 bits of v8-v15 (d8-d15); FPCR's modes are preserved too. Frame, from
// the saved stack pointer up: x19..x30 in pairs, d8..d15 in pairs, FPCR, padding to 16 bytes.
asm(R"(
    .pushsection .text.dsnpu_coop_switch,"axG",%progbits,dsnpu_coop_switch,comdat
    .weak dsnpu_coop_switch
    .hidden dsnpu_coop_switch
    .type dsnpu_coop_switch,%function
    .p2align 4
dsnpu_coop_switch:
    hint #34
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x9, [sp, #160]
    msr fpcr, x9
    add sp, sp, #176
    ret
    .size dsnpu_coop_switch, .-dsnpu_coop_switch
    .popsection

    .pushsection .text.dsnpu_coop_start,"axG",%progbits,dsnpu_coop_start,comdat
    .weak dsnpu_coop_start
    .hidden dsnpu_coop_start
    .type dsnpu_coop_start,%function
    .p2align 4
dsnpu_coop_start:
    .cfi_startproc
    .cfi_undefined x30
    blr x19
    brk #0
    .cfi_endproc
    .size dsnpu_coop_start, .-dsnpu_coop_start
    .popsection
)");
#endif
#else
#include <ucontext.h>
#endif

namespace dsnpu {
namespace host {

// A core's stack: 8 MiB like a default thread's, reserved lazily (MAP_NORESERVE), with a guard page
// below it; kept (in the thread's pool, coop_stacks) for later blocks.
class CoopStack {
public:
    static constexpr size_t kBytes = size_t{8} << 20;
    ~CoopStack() {
        if (base_ != nullptr) munmap(base_, len_);
    }
    // The usable range, mapped on first use; nullptr if the mapping failed.
    void* top_region(size_t* len) {
        if (base_ == nullptr) {
            const size_t guard = static_cast<size_t>(sysconf(_SC_PAGESIZE));
            void* p = mmap(nullptr, kBytes + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
            if (p == MAP_FAILED) return nullptr;
            if (mprotect(p, guard, PROT_NONE) != 0) {
                munmap(p, kBytes + guard);
                return nullptr;
            }
            base_ = p;
            len_ = kBytes + guard;
            guard_ = guard;
        }
        *len = kBytes;
        return static_cast<uint8_t*>(base_) + guard_;
    }

private:
    void* base_ = nullptr;
    size_t len_ = 0, guard_ = 0;
};

// Objects a thread lends to the cores it runs (their stacks, Unified Buffers, Pipelines, L2 slices, mix
// groups): the three cores of a mix block hold one each, and so does every block of a SyncAll launch the
// simulator runs cooperatively on the thread (a block waiting in SyncAll keeps what it holds). Given back
// objects are kept for later runs.
template <class T>
class IdlePool {
public:
    // An object no running core holds; nullptr if none could be allocated.
    std::unique_ptr<T> take() noexcept {
        if (!idle_.empty()) {
            std::unique_ptr<T> t = std::move(idle_.back());
            idle_.pop_back();
            return t;
        }
        try {
            idle_.reserve(held_ + 1);  // so that give() never allocates
            std::unique_ptr<T> t(new T);
            ++held_;
            return t;
        } catch (...) {
            return nullptr;
        }
    }
    void give(std::unique_ptr<T> t) noexcept { idle_.push_back(std::move(t)); }

private:
    std::vector<std::unique_ptr<T>> idle_;
    size_t held_ = 0;  // objects created: the most idle_ has to hold
};

// This thread's idle objects of type T (its Pipelines and L2 slices, entry.h and mix.h).
template <class T>
inline IdlePool<T>& thread_pool() {
    thread_local IdlePool<T> pool;
    return pool;
}

// One object leased from this thread's pool, given back when the lease ends (on the same thread: a
// core, its block and the block's scheduler all run on one thread). The holder resets it before use.
template <class T>
class Lease {
public:
    Lease() = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { release(); }
    // Takes an object (it must not hold one yet); nullptr if none could be allocated.
    T* try_take() noexcept {
        t_ = thread_pool<T>().take();
        return t_.get();
    }
    // The same, throwing std::bad_alloc instead of returning nullptr.
    T* take() {
        if (try_take() == nullptr) throw std::bad_alloc();
        return t_.get();
    }
    T* get() const { return t_.get(); }
    // Gives the object back now.
    void release() noexcept {
        if (t_ != nullptr) thread_pool<T>().give(std::move(t_));
    }

private:
    std::unique_ptr<T> t_;
};

// The stacks of one mix block's cores.
struct CoopStackSet {
    CoopStack core[kCoreSlots];
};

inline IdlePool<CoopStackSet>& coop_stacks() {
    thread_local IdlePool<CoopStackSet> pool;
    return pool;
}

class CoopCores;
inline thread_local CoopCores* t_coop = nullptr;

class CoopCores {
public:
    // Runs body(0) .. body(n - 1) (n <= kCoreSlots) to completion, round robin from core 0, each resumed
    // where it yielded. False if a stack could not be mapped (nothing ran).
    bool run(uint32_t n, const std::function<void(uint32_t)>& body) {
        std::unique_ptr<CoopStackSet> stacks = coop_stacks().take();
        if (stacks == nullptr) return false;
        body_ = &body;
        for (uint32_t s = 0; s < n; ++s) {
            if (!prepare(s, stacks->core[s])) {
                coop_stacks().give(std::move(stacks));
                return false;
            }
        }
        CoopCores* outer = t_coop;
        BlockState* block_state = t_block;
        t_coop = this;
        uint32_t live = n;
        for (uint32_t s = 0; live > 0; s = (s + 1) % n) {
            if (finished_[s]) continue;
            cur_ = s;
            switch_to(sched_, core_[s]);
            t_block = block_state;
            if (finished_[s]) --live;
        }
        t_coop = outer;
        coop_stacks().give(std::move(stacks));
        return true;
    }

    // The running core lets the others run; returns when the scheduler comes back to it.
    void yield() {
        const uint32_t me = cur_;
        BlockState* mine = t_block;
        switch_to(core_[me], sched_);
        t_block = mine;
    }

    // The scheduler running on this thread, if a mix block is being run.
    static CoopCores* current() { return t_coop; }

private:
#ifdef DSNPU_COOP_FAST_SWITCH
    struct Context {
        void* sp = nullptr;
    };
    static void switch_to(Context& save, Context& next) { dsnpu_coop_switch(&save.sp, next.sp); }

    // Lays out a frame at the top of the stack that dsnpu_coop_switch "returns" from into
    // dsnpu_coop_start, which calls entry(); the other saved registers start as zero, the floating-point
    // control registers as this thread's.
    bool prepare(uint32_t s, CoopStack& stack) {
        size_t len = 0;
        void* region = stack.top_region(&len);
        if (region == nullptr) return false;
        const uintptr_t top = (reinterpret_cast<uintptr_t>(region) + len) & ~uintptr_t{15};
        // 16-byte aligned with room above it: the entry's call starts from an aligned stack.
        uint64_t* f = reinterpret_cast<uint64_t*>(top - 256);
        std::memset(f, 0, 256);
#if defined(__x86_64__)
        uint32_t mxcsr = 0;
        uint16_t fpcw = 0;
        asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fpcw));
        f[0] = mxcsr | (static_cast<uint64_t>(fpcw) << 32);
        f[4] = reinterpret_cast<uintptr_t>(&CoopCores::entry);     // r12
        f[7] = reinterpret_cast<uintptr_t>(&dsnpu_coop_start);     // return address
#else
        uint64_t fpcr = 0;
        asm volatile("mrs %0, fpcr" : "=r"(fpcr));
        f[0] = reinterpret_cast<uintptr_t>(&CoopCores::entry);     // x19
        f[11] = reinterpret_cast<uintptr_t>(&dsnpu_coop_start);    // x30
        f[20] = fpcr;
#endif
        core_[s].sp = f;
        finished_[s] = false;
        return true;
    }
#else
    struct Context {
        ucontext_t uc{};
    };
    static void switch_to(Context& save, Context& next) { swapcontext(&save.uc, &next.uc); }

    // getcontext "returns twice" for the compiler (-Wclobbered); in its own frame nothing of the caller's
    // is live across it. The context is only ever entered through makecontext's entry point.
    __attribute__((noinline)) bool prepare(uint32_t s, CoopStack& stack) {
        size_t len = 0;
        void* sp = stack.top_region(&len);
        if (sp == nullptr) return false;
        ucontext_t& uc = core_[s].uc;
        if (getcontext(&uc) != 0) return false;
        uc.uc_stack.ss_sp = sp;
        uc.uc_stack.ss_size = len;
        uc.uc_link = &sched_.uc;
        makecontext(&uc, &CoopCores::entry, 0);
        finished_[s] = false;
        return true;
    }
#endif

    // A core's first code on its own stack. With the fast switch it never returns: when the body is done
    // it switches to the scheduler for good (nothing resumes a finished core; its stack is reused by a
    // later prepare). With ucontext, returning resumes uc_link: the scheduler.
    static void entry() {
        CoopCores* c = t_coop;
        const uint32_t slot = c->cur_;
        (*c->body_)(slot);
        c->finished_[slot] = true;
#ifdef DSNPU_COOP_FAST_SWITCH
        Context dead;
        switch_to(dead, c->sched_);
        std::abort();  // unreachable
#endif
    }

    Context sched_{};
    Context core_[kCoreSlots]{};
    bool finished_[kCoreSlots] = {};
    uint32_t cur_ = 0;
    const std::function<void(uint32_t)>* body_ = nullptr;
};

}  // namespace host
}  // namespace dsnpu

#endif
