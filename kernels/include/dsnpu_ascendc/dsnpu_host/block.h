// Per-block state of the host Ascend C layer: the simulator's block context, this block's Unified Buffer,
// fault reporting, counters and block indices. Pipes and their synchronisation (SetFlag/WaitFlag,
// PipeBarrier, SyncAll) are in pipeline.h and sync.h.
//
// Contract: the entry shim (entry.h) installs one BlockState per kernel call on the calling thread and
// removes it afterwards; every API call of the layer reads it from the thread-local `t_block`. A fault
// calls the simulator's `fail` once with a message that starts with the Ascend C operation's name, then
// throws `BlockAbort`, which only the entry shim catches: the rest of the block does not run.
#ifndef DSNPU_ASCENDC_HOST_BLOCK_H
#define DSNPU_ASCENDC_HOST_BLOCK_H

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "dsnpu_sim_kernel.h"
#include "macros.h"

namespace dsnpu {
namespace host {

// Thrown after a fault has been reported (or when SyncAll learns the launch is being abandoned).
struct BlockAbort {};

class Pipeline;

struct BlockState {
    const dsnpu_sim_block_ctx* ctx = nullptr;
    uint8_t* ub = nullptr;      // this block's Unified Buffer, ub_capacity bytes, 64-byte aligned
    uint32_t ub_capacity = 0;
    uint32_t ub_used = 0;       // bytes handed out by the current TPipe
    uint32_t ub_buffers = 0;    // buffers handed out by the current TPipe
    dsnpu_sim_counters* counters = nullptr;
    Pipeline* pipeline = nullptr;  // pipes, sanitizer and cycle model of this block (pipeline.h)
};

inline thread_local BlockState* t_block = nullptr;

inline BlockState& block() {
    if (t_block == nullptr) {
        // Only reachable by calling the layer outside a kernel launch: a programming error of the host
        // binary itself, with no simulator to report to.
        std::fprintf(stderr, "dsnpu host Ascend C: API used outside a kernel launch\n");
        std::abort();
    }
    return *t_block;
}

[[noreturn]] inline void fail_msg(const char* msg) {
    BlockState& b = block();
    b.ctx->fail(b.ctx->sim, msg);
    throw BlockAbort{};
}

// Report a fault of this block ("<Op>: <details>") and abandon it.
[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail_msg(msg);
}

// A non-fatal diagnostic.
__attribute__((format(printf, 1, 2))) inline void warn(const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    BlockState& b = block();
    b.ctx->warn(b.ctx->sim, msg);
}

inline dsnpu_sim_counters& counters() { return *block().counters; }

// Fail unless [p, p + bytes) lies inside one live device allocation. Zero bytes touch nothing.
inline void check_gm(const char* op, const void* p, uint64_t bytes) {
    if (bytes == 0) return;
    BlockState& b = block();
    if (b.ctx->check_gm(b.ctx->sim, p, static_cast<size_t>(bytes)) != 0) {
        fail("%s: GM range [%p, +%llu bytes) is not inside one live device allocation", op, p,
             static_cast<unsigned long long>(bytes));
    }
}

// a * b, failing (instead of wrapping) past 2^64.
inline uint64_t mul_or_fail(const char* op, uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        fail("%s: size %llu x %llu overflows", op, static_cast<unsigned long long>(a),
             static_cast<unsigned long long>(b));
    }
    return r;
}

constexpr uint32_t kUbBlock = 32;  // UB alignment and DataCopy granule, bytes

inline uint64_t round_up32(uint64_t n) { return (n + kUbBlock - 1) / kUbBlock * kUbBlock; }

}  // namespace host
}  // namespace dsnpu

// Hardware pipes (global, as the CCE compiler's builtin enum).
enum pipe_t {
    PIPE_S = 0,
    PIPE_V,
    PIPE_M,
    PIPE_MTE1,
    PIPE_MTE2,
    PIPE_MTE3,
    PIPE_ALL,
    PIPE_MTE4,
    PIPE_MTE5,
    PIPE_V2,
    PIPE_FIX,
};

namespace AscendC {

// Events between pipes, named producer_consumer.
enum class HardEvent : uint8_t {
    MTE2_MTE1 = 0,
    MTE1_MTE2,
    MTE1_M,
    M_MTE1,
    MTE2_V,
    V_MTE2,
    MTE3_V,
    V_MTE3,
    M_V,
    V_M,
    V_V,
    MTE3_MTE1,
    MTE1_MTE3,
    MTE1_V,
    MTE2_M,
    M_MTE2,
    V_MTE1,
    M_FIX,
    FIX_M,
    MTE3_MTE2,
    MTE2_MTE3,
    S_V,
    V_S,
    S_MTE2,
    MTE2_S,
    S_MTE3,
    MTE3_S,
    MTE2_FIX,
    FIX_MTE2,
    FIX_S,
    M_S,
    FIX_MTE3,
    MAX,
};

__aicore__ inline int64_t GetBlockIdx() { return ::dsnpu::host::block().ctx->block_idx; }
__aicore__ inline int64_t GetBlockNum() { return ::dsnpu::host::block().ctx->block_num; }

// The system workspace the Matmul API may use. The host Matmul needs none.
__aicore__ inline GM_ADDR GetSysWorkSpacePtr() { return nullptr; }

// The part of the kernel's `workspace` argument that belongs to the operator (CANN puts the system
// workspace first). The host reserves no system workspace, so it is the whole argument.
__aicore__ inline GM_ADDR GetUserWorkspace(GM_ADDR workspace) { return workspace; }

}  // namespace AscendC

#endif
