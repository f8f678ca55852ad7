// Per-block state of the host Ascend C layer: the simulator's block context, this block's Unified Buffer,
// fault reporting, counters and block indices. Pipes and their synchronisation (SetFlag/WaitFlag,
// PipeBarrier, SyncAll) are in pipeline.h and sync.h.
//
// Contract: the entry shim (entry.h) installs one BlockState per kernel call on the calling thread and
// removes it afterwards; every API call of the layer reads it from the thread-local `t_block`. The
// simulator may run other blocks of a SyncAll launch on the same thread while one waits in SyncAll
// (each on its own stack); the entry shim's sync_all puts the waiting block's `t_block` back. A fault
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
class MixGroup;

// GM ranges the simulator already validated (check_gm): it pins their allocations until the launch
// ends, so an access inside one needs no second look. Filled round robin. The three cores of a mix
// block share one (they run on one thread, and validate the same kernel arguments).
struct GmValid {
    static constexpr uint32_t kRanges = 16;
    uintptr_t lo[kRanges] = {};
    uintptr_t hi[kRanges] = {};
    uint32_t next = 0;
    uint32_t last = 0;  // the range that validated the last access: looked at first
};
class L2Slice;
class LaunchL2;
class GmRaces;
class DataCache;

// The core a kernel body runs on. A plain launch runs each block on one vector core (kAiv, the only
// kind the non-mix kernels know); a mix launch (DSNPU_HOST_ENTRY_MIX, mix.h) runs each block as one
// cube core and two vector cores.
enum class CoreKind : uint8_t { kAiv = 0, kAic = 1 };

// The combination a core's transfers to GM make with what is there (atomic.h): none (a store), or an
// atomic sum, maximum or minimum.
enum class AtomicOp : uint8_t { kNone = 0, kAdd, kMax, kMin };

// The memories a LocalTensor can live in: the vector core's Unified Buffer, or one of the cube core's
// buffers (cube.h): L1 (TPosition A1/B1/TSCM), L0A (A2), L0B (B2) and L0C (CO1). The cube core's four
// are one host allocation (BlockState::cube), at the offsets below.
enum class Mem : uint8_t { kUb = 0, kL1, kL0A, kL0B, kL0C };
constexpr uint32_t kCubeMems = 4;  // L1, L0A, L0B, L0C
constexpr uint32_t kCubeBytes[kCubeMems] = {512 * 1024, 64 * 1024, 64 * 1024, 128 * 1024};
constexpr uint32_t kCubeAt[kCubeMems] = {0, 512 * 1024, 576 * 1024, 640 * 1024};
constexpr uint32_t kCubeTotal = 768 * 1024;
// Buffer alignment the hardware requires (ascend-facts: L1 32 bytes, L0A/L0B 512, L0C 64).
constexpr uint32_t kCubeAlign[kCubeMems] = {32, 512, 512, 64};
inline const char* mem_name(Mem m) {
    switch (m) {
        case Mem::kL1: return "L1";
        case Mem::kL0A: return "L0A";
        case Mem::kL0B: return "L0B";
        case Mem::kL0C: return "L0C";
        default: return "the Unified Buffer";
    }
}

struct BlockState {
    const dsnpu_sim_block_ctx* ctx = nullptr;
    uint8_t* ub = nullptr;      // this block's Unified Buffer, ub_capacity bytes, 64-byte aligned
    uint32_t ub_capacity = 0;
    uint32_t ub_used = 0;       // bytes handed out by the current TPipe
    uint32_t ub_peak = 0;       // the most ub_used has been: what the block may have written (entry.h refills it)
    uint32_t ub_buffers = 0;    // buffers handed out by the current TPipe
    // The cube core's L1, L0A, L0B and L0C (kCubeTotal bytes, Mem order); nullptr on a vector core.
    uint8_t* cube = nullptr;
    uint32_t cube_used[kCubeMems] = {};  // bytes handed out by the current TPipe, per memory
    uint32_t cube_peak[kCubeMems] = {};  // the most cube_used has been: what entry.h refills
    dsnpu_sim_counters* counters = nullptr;
    Pipeline* pipeline = nullptr;  // pipes, sanitizer and cycle model of this block (pipeline.h)
    L2Slice* l2 = nullptr;         // this core's slice of the L2 model (cost.h); nullptr: everything misses
    // The launch's die-wide L2 record (l2_die.h, ABI 5; nullptr when the simulator keeps none) and the
    // SyncAll barriers this core has passed, which order its records there.
    LaunchL2* launch_l2 = nullptr;
    uint32_t epoch = 0;
    // Mix launches (mix.h): this core's kind, its sub-block index among the group's vector cores, and
    // the group the three cores of one block share (cross-core flags, GM race shadow). Plain launches:
    // kAiv, 0, nullptr.
    CoreKind kind = CoreKind::kAiv;
    uint8_t sub_block = 0;
    MixGroup* group = nullptr;
    // The block's GM race map (gm_race.h): a plain block's own, or its mix group's.
    GmRaces* gm_races = nullptr;
    // The core's scalar data cache (dcache.h): a plain block's own, or one of its mix group's three;
    // nullptr unless DSNPU_SIM_CHECK has race.
    DataCache* dcache = nullptr;
    // The core's DMA atomic mode (SetAtomicAdd and its kin, atomic.h) and its element type.
    AtomicOp atomic_op = AtomicOp::kNone;
    uint8_t atomic_type = 0;
    // The system workspace (GetSysWorkSpacePtr): set by the mix entry from the kernel's workspace
    // argument, as CANN's framework does for operators built with a workspace; SetSysWorkspace sets it.
    uint8_t* sys_workspace = nullptr;
    // The simulator's sync_all: the core's ctx is a copy whose sync_all (entry.h) restores this thread's
    // block state after the simulator ran other blocks of the launch on this thread meanwhile.
    int (*sim_sync_all)(void* sim) = nullptr;
    // GM ranges the simulator already validated for this core; a mix core uses its group's instead.
    GmValid own_valid;
    GmValid* shared_valid = nullptr;
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

// A core of a mix block by its slot (0 the AIC, 1 + sub-block an AIV), as findings name it.
inline const char* slot_name(uint32_t s) { return s == 0 ? "AIC" : s == 1 ? "AIV 0" : "AIV 1"; }
// A core in a finding: its slot's name on a mix block, "the core" on a plain one.
inline const char* core_name(uint32_t slot, bool mix) { return mix ? slot_name(slot) : "the core"; }

// The " (on AIC)" / " (on AIV 1)" suffix of a mix core's findings; empty on a plain launch.
inline const char* core_suffix(const BlockState& b) {
    if (b.group == nullptr) return "";
    if (b.kind == CoreKind::kAic) return " (on AIC)";
    return b.sub_block == 0 ? " (on AIV 0)" : " (on AIV 1)";
}

// Mix blocks (mix.h): true for the first fault of the block's three cores, which alone is reported;
// it also releases the others' cross-core waits, which then end without a finding of their own.
bool mix_claim_fault(MixGroup* g);
// The data cache of the group's core `slot` (mix.h).
DataCache* mix_dcache(MixGroup* g, uint32_t slot);

[[noreturn]] inline void fail_msg(const char* msg) {
    BlockState& b = block();
    if (b.group != nullptr && !mix_claim_fault(b.group)) throw BlockAbort{};
    if (b.group == nullptr) {
        b.ctx->fail(b.ctx->sim, msg);
    } else {
        char full[600];
        std::snprintf(full, sizeof full, "%s%s", msg, core_suffix(b));
        b.ctx->fail(b.ctx->sim, full);
    }
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

// Whether the simulator already validated a range holding [p, p + bytes) for this block.
inline GmValid& gm_valid(BlockState& b) { return b.shared_valid != nullptr ? *b.shared_valid : b.own_valid; }

inline bool gm_validated(BlockState& b, uintptr_t p, uint64_t bytes) {
    GmValid& v = gm_valid(b);
    const uint32_t last = v.last;
    if (p >= v.lo[last] && p < v.hi[last] && bytes <= v.hi[last] - p) return true;
    for (uint32_t i = 0; i < GmValid::kRanges; ++i) {
        if (p >= v.lo[i] && p < v.hi[i] && bytes <= v.hi[i] - p) {
            v.last = i;
            return true;
        }
    }
    return false;
}

// Asks the simulator whether [p, p + bytes) lies inside one live device allocation; remembers it if so.
inline bool gm_validate(BlockState& b, uintptr_t p, uint64_t bytes) {
    if (b.ctx->check_gm(b.ctx->sim, reinterpret_cast<const void*>(p), static_cast<size_t>(bytes)) != 0) {
        return false;
    }
    GmValid& v = gm_valid(b);
    const uint32_t i = v.next++ % GmValid::kRanges;
    v.lo[i] = p;
    v.hi[i] = p + bytes;
    return true;
}

// Fail unless [p, p + bytes) lies inside one live device allocation. Zero bytes touch nothing.
// `extent` (optional) is the whole buffer the access belongs to (a GlobalTensor's SetGlobalBuffer
// range): validated once, it covers the buffer's later accesses (one simulator call instead of one per
// element for scalar GetValue loops); if it is not inside one allocation, only the access is checked.
inline void check_gm(const char* op, const void* p, uint64_t bytes, const void* extent = nullptr,
                     uint64_t extent_bytes = 0) {
    if (bytes == 0) return;
    BlockState& b = block();
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (gm_validated(b, a, bytes)) return;
    const uintptr_t e = reinterpret_cast<uintptr_t>(extent);
    if (extent != nullptr && a >= e && a - e <= extent_bytes && bytes <= extent_bytes - (a - e) &&
        gm_validate(b, e, extent_bytes)) {
        return;
    }
    if (!gm_validate(b, a, bytes)) {
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

// The core's index (GetBlockIdx.md): in a plain launch the block index, [0, numBlocks). In a mix
// launch with AIC:AIV = 1:2 the cube core of block i has index i, in [0, numBlocks), and its vector
// cores 2i and 2i + 1 (GetSubBlockIdx 0 and 1), in [0, 2 * numBlocks).
__aicore__ inline int64_t GetBlockIdx() {
    const ::dsnpu::host::BlockState& b = ::dsnpu::host::block();
    if (b.group != nullptr && b.kind == ::dsnpu::host::CoreKind::kAiv) {
        return static_cast<int64_t>(b.ctx->block_idx) * 2 + b.sub_block;
    }
    return b.ctx->block_idx;
}
// The launch's numBlocks (GetBlockNum.md): the number of logical AI Cores, on every core kind; a 1:2
// mix launch runs numBlocks cube cores and 2 * numBlocks vector cores (GetTaskRation() * numBlocks).
__aicore__ inline int64_t GetBlockNum() { return ::dsnpu::host::block().ctx->block_num; }

// The system workspace (GetSysWorkSpacePtr.md, SetSysWorkSpace.md): the first kSysWorkspaceBytes of the
// kernel's workspace argument. The mix entry sets it, as CANN's framework does for operators built
// with a workspace; plain (legacy) launches have none (nullptr) unless the kernel calls SetSysWorkspace.
constexpr uint64_t kSysWorkspaceBytes = 1024 * 1024;  // dsnpu's choice, mirrored by SYS_WORKSPACE_BYTES
__aicore__ inline GM_ADDR GetSysWorkSpacePtr() { return ::dsnpu::host::block().sys_workspace; }
__aicore__ inline void SetSysWorkspace(GM_ADDR workspace) { ::dsnpu::host::block().sys_workspace = workspace; }

// The operator's part of the workspace (GetUserWorkspace.md): CANN lays the system workspace out first,
// so the user part starts kSysWorkspaceBytes in. A launch with no system workspace set (the plain
// legacy kernels, whose launchers reserve none yet) gets its whole argument.
__aicore__ inline GM_ADDR GetUserWorkspace(GM_ADDR workspace) {
    if (workspace == nullptr || ::dsnpu::host::block().sys_workspace == nullptr) return workspace;
    return workspace + kSysWorkspaceBytes;
}

}  // namespace AscendC

#endif
