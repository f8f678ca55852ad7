// The cores of one mix block, run cooperatively on the block's thread: each core on its own stack
// (ucontext), switching only where a core cannot go on (a CrossCoreWaitFlag whose counter is empty). A
// block's cores hand each other work every few microseconds; with a thread per core every handoff was a
// futex sleep and wake, which cost more than the work. One thread also makes a block's run deterministic.
//
// Each core's body must not let an exception leave it (run_core catches everything), and code that keeps
// per-core state in thread-locals must save it around yield(): yield() does so for t_block.
#ifndef DSNPU_ASCENDC_HOST_COOP_H
#define DSNPU_ASCENDC_HOST_COOP_H

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "block.h"
#include "pipeline.h"

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

// Objects a thread lends to the cores it runs (their stacks, their Unified Buffers): the three cores of a
// mix block hold one each, and so does every block of a SyncAll launch the simulator runs cooperatively on
// the thread (a block waiting in SyncAll keeps what it holds). Given back objects are kept for later runs.
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
            swapcontext(&sched_, &core_[s]);
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
        swapcontext(&core_[me], &sched_);
        t_block = mine;
    }

    // The scheduler running on this thread, if a mix block is being run.
    static CoopCores* current() { return t_coop; }

private:
    // getcontext "returns twice" for the compiler (-Wclobbered); in its own frame nothing of the caller's
    // is live across it. The context is only ever entered through makecontext's entry point.
    __attribute__((noinline)) bool prepare(uint32_t s, CoopStack& stack) {
        size_t len = 0;
        void* sp = stack.top_region(&len);
        if (sp == nullptr) return false;
        ucontext_t& uc = core_[s];
        if (getcontext(&uc) != 0) return false;
        uc.uc_stack.ss_sp = sp;
        uc.uc_stack.ss_size = len;
        uc.uc_link = &sched_;
        makecontext(&uc, reinterpret_cast<void (*)()>(&CoopCores::trampoline), 1, static_cast<int>(s));
        finished_[s] = false;
        return true;
    }

    static void trampoline(int slot) {
        CoopCores* c = t_coop;
        (*c->body_)(static_cast<uint32_t>(slot));
        c->finished_[slot] = true;
        // Returning resumes uc_link: the scheduler.
    }

    ucontext_t sched_{};
    ucontext_t core_[kCoreSlots]{};
    bool finished_[kCoreSlots] = {};
    uint32_t cur_ = 0;
    const std::function<void(uint32_t)>* body_ = nullptr;
};

}  // namespace host
}  // namespace dsnpu

#endif
