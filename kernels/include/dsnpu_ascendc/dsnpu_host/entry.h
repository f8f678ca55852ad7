// The per-kernel entry shim between the simulator's ABI (dsnpu_sim_kernel.h) and an Ascend C kernel.
//
// DSNPU_HOST_ENTRY(name) exports `extern "C" void name(const dsnpu_sim_block_ctx*)`, which checks the ABI
// version and the argument bytes (one 8-byte GM address per kernel parameter), gives the block a
// Unified Buffer all 0xFF (so reads of never-written UB show up as NaN), installs the thread-local
// block state and calls the kernel compiled as DSNPU_KERNEL(name). Faults end the block through
// BlockAbort; any other C++ exception is reported as an internal fault. Nothing is thrown past the shim.
// DSNPU_HOST_ENTRY_MIX(name) exports a 1:2 mix kernel: each block runs as one cube core and two vector
// cores, run cooperatively on the block's thread (coop.h, mix.h). Each block (each core) gets a Pipeline (pipeline.h) with the checks of DSNPU_SIM_CHECK; when the kernel returns,
// flags left set are a sync finding, and the block's modelled cycles and per-pipe busy fractions go into
// the counters (model_cycles, pipe_busy_q8). Each block also gets its slice of the L2 model (cost.h), empty
// at the start of the block and shared by a mix block's three cores; the block's HBM counters
// (hbm_read_bytes, hbm_write_bytes) count each core's misses there, and every lookup is also recorded in
// the launch's LaunchL2 (ctx->launch_l2, l2_die.h), whose replay through the die's one L2 gives the
// launch's HBM totals (DSNPU_HOST_ABI_EXPORTS' dsnpu_sim_launch_end).
#ifndef DSNPU_ASCENDC_HOST_ENTRY_H
#define DSNPU_ASCENDC_HOST_ENTRY_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include <functional>
#include <string>

#include "block.h"
#include "coop.h"
#include "macros.h"
#include "gm_race.h"
#include "mix.h"
#include "pipeline.h"
#include "sync.h"
#include "trace.h"

namespace dsnpu {
namespace host {

// The parameter count of a kernel (the generated entries check it against kernels/src/registry.rs).
template <typename... Args>
constexpr size_t arity(void (*)(Args...)) {
    return sizeof...(Args);
}

template <typename... Args, size_t... I>
inline void call_with_addrs(void (*fn)(Args...), const uint64_t* a, std::index_sequence<I...>) {
    fn(reinterpret_cast<Args>(static_cast<uintptr_t>(a[I]))...);
}

// The L2 slice of one block (cost.h): the die's L2 divided among the launch's concurrent blocks (at most
// 48). The three cores of a mix block share their block's slice (MixGroup::l2): the L2 is shared by every
// core of the die, and in a mix kernel the cube core does most of the loading.
inline uint64_t l2_slice_bytes(uint32_t block_num) {
    uint64_t n = block_num == 0 ? 1 : block_num;
    if (n > cost::kMaxConcurrentCores) n = cost::kMaxConcurrentCores;
    return cost::kL2Bytes / n;
}

// A Unified Buffer kept from block to block: allocating and filling 192 KiB per block was most of a small
// launch's cost. Every block still finds all of it 0xFF, because each block refills the bytes it reserved
// (its high-water mark) before it gives the buffer back.
class ThreadUb {
public:
    ~ThreadUb() {
        if (p_ != nullptr) ::operator delete(p_, std::align_val_t{64});
    }
    // At least `len` bytes, all 0xFF. Throws std::bad_alloc.
    uint8_t* get(uint32_t len) {
        if (len > len_ || p_ == nullptr) {
            uint8_t* p = static_cast<uint8_t*>(::operator new(len == 0 ? 1 : len, std::align_val_t{64}));
            std::memset(p, 0xFF, len);
            if (p_ != nullptr) ::operator delete(p_, std::align_val_t{64});
            p_ = p;
            len_ = len;
        }
        return p_;
    }
    void refill(uint64_t used) { refill(0, used); }
    // Bytes [at, at + len) (clipped to the buffer) back to 0xFF.
    void refill(uint64_t at, uint64_t len) {
        if (at >= len_) return;
        std::memset(p_ + at, 0xFF, len < len_ - at ? len : len_ - at);
    }

private:
    uint8_t* p_ = nullptr;
    uint32_t len_ = 0;
};

// The Unified Buffers of this thread not in use (IdlePool, coop.h): a vector core takes one for its run.
inline IdlePool<ThreadUb>& thread_ubs() {
    thread_local IdlePool<ThreadUb> ubs;
    return ubs;
}

// The cube cores' L1/L0 memories of this thread not in use: a pool of their own, so that a cube core's
// 768 KiB never comes from a 192 KiB Unified Buffer, which it would regrow and refill whenever it took one
// a vector core had used last (a 60-token `generate` of a hidden-64 model on the simulator: 0.107 s, now
// 0.095 s).
inline IdlePool<ThreadUb>& thread_cubes() {
    thread_local IdlePool<ThreadUb> cubes;
    return cubes;
}

// The sync_all of a core's ctx: the simulator may run other blocks on this thread while this one waits
// (a SyncAll launch's blocks run cooperatively, each on its own stack), so the thread-local state of the
// layer is this block's again when it returns.
inline int sync_all_keep_state(void* sim) {
    BlockState* mine = t_block;
    CoopCores* coop = t_coop;
    const int r = mine->sim_sync_all(sim);
    t_block = mine;
    t_coop = coop;
    return r;
}

// One core's run of the kernel body: its BlockState (on this thread), Unified Buffer, Pipeline, L2 slice
// and counters. `group` is nullptr on a plain launch. Returns whether the body ended in a fault.

template <typename... Args>
inline bool run_core(const dsnpu_sim_block_ctx* ctx, const char* name, void (*fn)(Args...), MixGroup* group,
                     CoreKind kind, uint8_t sub_block, dsnpu_sim_counters* counters,
                     Lease<Pipeline>* keep) {
    constexpr size_t n = sizeof...(Args);
    BlockState st;
    st.ctx = ctx;
    st.kind = kind;
    st.sub_block = sub_block;
    st.group = group;
    if (group != nullptr) st.shared_valid = group->gm_valid();
    // The AIC has L1/L0 buffers, no Unified Buffer.
    st.ub_capacity = kind == CoreKind::kAic ? 0 : ctx->ub_capacity;
    st.counters = counters;
    uint8_t* ub = nullptr;
    std::unique_ptr<ThreadUb> ub_keep, cube_keep;
    dsnpu_sim_block_ctx own{};
    Lease<L2Slice> l2;
    Lease<GmRaces> races;
    Lease<DataCache> dcache;
    bool faulted = false;
    BlockState* saved = t_block;
    t_block = &st;
    try {
        if (ctx->abi_version != DSNPU_SIM_KERNEL_ABI) {
            fail("entry: simulator ABI %u, kernel binary ABI %u", ctx->abi_version, DSNPU_SIM_KERNEL_ABI);
        }
        if (ctx->args_size != n * sizeof(uint64_t) || (n != 0 && ctx->args == nullptr)) {
            fail("entry: kernel %s takes %zu 8-byte GM addresses, the launch passed %zu argument bytes", name, n,
                 ctx->args_size);
        }
        own = *ctx;
        own.sync_all = &sync_all_keep_state;
        st.sim_sync_all = ctx->sync_all;
        st.ctx = &own;
        st.launch_l2 = static_cast<LaunchL2*>(ctx->launch_l2);
        if (st.ub_capacity > 0) {
            ub_keep = thread_ubs().take();
            if (ub_keep == nullptr) throw std::bad_alloc();
            ub = ub_keep->get(st.ub_capacity);
            st.ub = ub;
        }
        if (kind == CoreKind::kAic) {
            // L1, L0A, L0B and L0C (cube.h).
            cube_keep = thread_cubes().take();
            if (cube_keep == nullptr) throw std::bad_alloc();
            st.cube = cube_keep->get(kCubeTotal);
        }
        Pipeline* pipeline = keep->take();
        pipeline->reset(parse_checks(std::getenv("DSNPU_SIM_CHECK")), ctx->block_num);
        if (group != nullptr) {
            st.l2 = group->l2(l2_slice_bytes(ctx->block_num));
            st.gm_races = group->gm_races();
        } else {
            st.l2 = l2.take();
            st.gm_races = races.take();
            st.gm_races->clear();
            st.l2->reset(l2_slice_bytes(ctx->block_num));
        }
        const uint32_t slot = group == nullptr ? 0 : core_slot(st);
        if (pipeline->race_on()) {
            if (group != nullptr) {
                st.dcache = group->dcache(slot);
            } else {
                st.dcache = dcache.take();
                st.dcache->clear();
            }
        }
        pipeline->set_slot(slot);
        st.pipeline = pipeline;
        std::vector<TraceEvent> trace;
        const bool traced = trace_wanted(name, ctx->block_idx);
        if (traced) pipeline->cost().set_trace(&trace);
        uint64_t a[n];
        std::memcpy(a, ctx->args, sizeof a);
        // A mix operator's workspace argument (second to last) starts with the system workspace.
        if (group != nullptr && n >= 2) st.sys_workspace = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(a[n - 2]));
        call_with_addrs(fn, a, std::make_index_sequence<n>{});
        dcache_end();
        pipeline->finish(event_names());
        counters->model_cycles = static_cast<uint64_t>(std::llround(pipeline->cost().block_cycles()));
        counters->pipe_busy_q8 = pipeline->cost().busy_q8();
        if (traced) {
            pipeline->cost().set_trace(nullptr);
            trace_append(name, ctx->block_idx, slot, trace);
        }
    } catch (const BlockAbort&) {
        // Already reported (or the launch is being abandoned by another block's fault).
        faulted = true;
    } catch (const std::exception& e) {
        char msg[512];
        std::snprintf(msg, sizeof msg, "internal: C++ exception in the host kernel: %s", e.what());
        ctx->fail(ctx->sim, msg);
        faulted = true;
    } catch (...) {
        ctx->fail(ctx->sim, "internal: unknown C++ exception in the host kernel");
        faulted = true;
    }
    if (ub_keep != nullptr) {
        if (ub != nullptr) ub_keep->refill(st.ub_peak);
        thread_ubs().give(std::move(ub_keep));
    }
    if (cube_keep != nullptr) {
        // What the next core finds in L1/L0 is 0xFF again, whatever this one left there.
        for (uint32_t m = 0; m < kCubeMems; ++m) cube_keep->refill(kCubeAt[m], st.cube_peak[m]);
        thread_cubes().give(std::move(cube_keep));
    }
    t_block = saved;
    return faulted;
}

// A block of the launch has returned: the last one (of a launch no block of which faulted) checks the
// launch's GM accesses for races between blocks (LaunchL2::cross_block_race) when DSNPU_SIM_CHECK has race.
// A launch whose records overflowed (l2_die.h: kMaxRecords; its HBM counters are then the blocks' sums,
// which the simulator reports) is not checked.
// The finding names the bytes by the kernel argument they are in (the one whose address is the closest
// at or below them: arguments are GM buffers, the workspace usually second to last).
inline void block_returned(const dsnpu_sim_block_ctx* ctx, bool faulted) {
    LaunchL2* l = static_cast<LaunchL2*>(ctx->launch_l2);
    if (l == nullptr || !l->block_returned(ctx->block_num, faulted)) return;
    if ((parse_checks(std::getenv("DSNPU_SIM_CHECK")) & kCheckRace) == 0) return;
    LaunchL2::BlockRace r;
    try {
        r = l->cross_block_race();
    } catch (const std::bad_alloc&) {
        return;  // not checked, as with dropped records
    }
    if (!r.found) return;
    const size_t n = ctx->args != nullptr ? ctx->args_size / sizeof(uint64_t) : 0;
    size_t arg = n;
    uint64_t base = 0;
    for (size_t i = 0; i < n; ++i) {
        uint64_t a;
        std::memcpy(&a, static_cast<const uint8_t*>(ctx->args) + i * sizeof a, sizeof a);
        if (a != 0 && a <= r.lo && (arg == n || a > base)) {
            arg = i;
            base = a;
        }
    }
    char where[96] = "";  // fits the format with three 20-digit numbers
    if (arg < n) {
        std::snprintf(where, sizeof where, " (argument %zu of %zu, offset %llu)", arg, n,
                      static_cast<unsigned long long>(r.lo - base));
    }
    // How each touched the bytes: a store, a read, or an atomic transfer (named by its mode's call).
    const auto how = [](bool write, uint8_t atomic) -> const char* {
        if (!write) return "read";
        if (atomic == 0) return "written";
        return atomic == 1 ? "SetAtomicAdd-updated" : atomic == 2 ? "SetAtomicMax-updated" : "SetAtomicMin-updated";
    };
    char msg[400];
    std::snprintf(msg, sizeof msg,
                  "race: GM bytes [0x%llx, 0x%llx)%s are %s by block %u and %s by block %u with no SyncAll "
                  "between them (after %u barriers): blocks are ordered only by SyncAll",
                  static_cast<unsigned long long>(r.lo), static_cast<unsigned long long>(r.hi), where,
                  how(true, r.writer_atomic), r.writer, how(r.other_writes, r.other_atomic), r.other, r.epoch);
    ctx->fail(ctx->sim, msg);
}

template <typename... Args>
inline void run_kernel(const dsnpu_sim_block_ctx* ctx, const char* name, void (*fn)(Args...)) {
    static_assert(sizeof...(Args) > 0, "Ascend C kernels take at least the tiling pointer");
    if (ctx == nullptr) return;
    dsnpu_sim_counters scratch{};
    Lease<Pipeline> pipeline;
    const bool faulted = run_core(ctx, name, fn, nullptr, CoreKind::kAiv, 0,
                                  ctx->counters != nullptr ? ctx->counters : &scratch, &pipeline);
    block_returned(ctx, faulted);
}

// A block of a 1:2 mix launch: its AIC and two AIVs, each on its own stack on this thread, sharing a MixGroup
// (mix.h). The block's counters are the three cores' sums (high-water mark: the largest); its modelled
// cycles are the slowest core's, and each pipe's busy fraction is the busiest core's over that time, so
// cube work shows on the AIC's M/MTE1/FIX and vector work on the AIVs' V. Each core shares HBM as one
// block of the launch would (the cube and vector cores of one AI Core are counted once: a
// simplification that favours kernels whose cores stream at the same time).
template <typename... Args>
inline void run_mix_kernel(const dsnpu_sim_block_ctx* ctx, const char* name, void (*fn)(Args...)) {
    static_assert(sizeof...(Args) > 0, "Ascend C kernels take at least the tiling pointer");
    if (ctx == nullptr) return;
    // The ABI checks once for the block, before its cores start (each core would repeat them).
    constexpr size_t n = sizeof...(Args);
    if (ctx->abi_version != DSNPU_SIM_KERNEL_ABI || ctx->args_size != n * sizeof(uint64_t) || ctx->args == nullptr) {
        Lease<Pipeline> pipeline;
        dsnpu_sim_counters scratch{};
        run_core(ctx, name, fn, nullptr, CoreKind::kAiv, 0, &scratch, &pipeline);  // reports and returns
        return;
    }
    // The group goes back to the pool reset, holding no L2 slice: the thread's pools are destroyed at
    // thread exit in an order of their own, so an idle object must not hold another pool's.
    struct GroupLease {
        Lease<MixGroup> lease;
        ~GroupLease() {
            if (lease.get() != nullptr) lease.get()->reset();
        }
    } group_lease;
    if (group_lease.lease.try_take() == nullptr) {
        ctx->fail(ctx->sim, "internal: out of host memory for the block's mix group");
        return;
    }
    // New, or given back reset.
    MixGroup& group = *group_lease.lease.get();
    dsnpu_sim_counters c[kCoreSlots]{};
    Lease<Pipeline> pl[kCoreSlots];
    bool faulted[kCoreSlots] = {false, false, false};
    auto core = [&](uint32_t slot) {
        const CoreKind kind = slot == 0 ? CoreKind::kAic : CoreKind::kAiv;
        const uint8_t sub = slot == 0 ? 0 : static_cast<uint8_t>(slot - 1);
        faulted[slot] = run_core(ctx, name, fn, &group, kind, sub, &c[slot], &pl[slot]);
        group.done(slot, faulted[slot]);
    };
    CoopCores coop;
    if (!coop.run(kCoreSlots, core)) {
        ctx->fail(ctx->sim, "internal: cannot map the stacks of the block's cores");
        return;
    }
    bool block_faulted = faulted[0] || faulted[1] || faulted[2];
    if (!block_faulted) {
        const std::string left = group.leftover();
        if (!left.empty() && (parse_checks(std::getenv("DSNPU_SIM_CHECK")) & kCheckSync) != 0) {
            ctx->fail(ctx->sim, left.c_str());
            block_faulted = true;
        }
    }
    block_returned(ctx, block_faulted);
    dsnpu_sim_counters& out = *(ctx->counters != nullptr ? ctx->counters : &c[0]);
    if (&out == &c[0]) return;
    double t = 0;
    for (uint32_t s = 0; s < kCoreSlots; ++s) {
        out.gm_to_ub_bytes += c[s].gm_to_ub_bytes;
        out.ub_to_gm_bytes += c[s].ub_to_gm_bytes;
        out.vector_elem_ops += c[s].vector_elem_ops;
        out.cube_macs += c[s].cube_macs;
        out.hbm_read_bytes += c[s].hbm_read_bytes;
        out.hbm_write_bytes += c[s].hbm_write_bytes;
        out.ub_high_water = out.ub_high_water > c[s].ub_high_water ? out.ub_high_water : c[s].ub_high_water;
        const Pipeline* p = pl[s].get();
        if (p != nullptr) t = t > p->cost().block_cycles() ? t : p->cost().block_cycles();
    }
    out.model_cycles = static_cast<uint64_t>(std::llround(t));
    uint64_t packed = 0;
    for (uint32_t p = 0; p < kPipeCount; ++p) {
        double f = 0;
        for (uint32_t s = 0; s < kCoreSlots; ++s) {
            const Pipeline* q = pl[s].get();
            if (q != nullptr && t > 0) f = f > q->cost().busy(p) / t ? f : q->cost().busy(p) / t;
        }
        if (f > 1) f = 1;
        packed |= static_cast<uint64_t>(std::lround(f * 255)) << (8 * p);
    }
    out.pipe_busy_q8 = packed;
}

}  // namespace host
}  // namespace dsnpu

// The functions every host kernel binary exports once (dsnpu_sim_kernel.h): its ABI version, and the
// launch hooks of ABI 5 — a LaunchL2 (l2_die.h) handed to the launch's blocks, replayed when they are done
// into the launch's HBM counters.
#define DSNPU_HOST_ABI_EXPORTS()                                                                         \
    DSNPU_HOST_EXPORT uint32_t dsnpu_sim_kernel_abi_version(void) { return DSNPU_SIM_KERNEL_ABI; }      \
    DSNPU_HOST_EXPORT void* dsnpu_sim_launch_begin(uint32_t num_blocks) {                               \
        return new (std::nothrow)::dsnpu::host::LaunchL2(num_blocks);                                   \
    }                                                                                                    \
    DSNPU_HOST_EXPORT int dsnpu_sim_launch_end(void* launch, dsnpu_sim_counters* totals) {              \
        ::dsnpu::host::LaunchL2* l = static_cast<::dsnpu::host::LaunchL2*>(launch);                     \
        int replayed = 0;                                                                                \
        if (l != nullptr && totals != nullptr) {                                                         \
            try {                                                                                        \
                replayed = l->replay(&totals->hbm_read_bytes, &totals->hbm_write_bytes) ? 1 : 0;        \
            } catch (...) {                                                                              \
            }                                                                                            \
        }                                                                                                \
        delete l;                                                                                        \
        return replayed;                                                                                 \
    }

// Export the ABI symbol `name` for the kernel defined as DSNPU_KERNEL(name) in the same translation unit.
#define DSNPU_HOST_ENTRY(name)                                              \
    DSNPU_HOST_EXPORT void name(const dsnpu_sim_block_ctx* ctx) {          \
        ::dsnpu::host::run_kernel(ctx, #name, &dsnpu_host_impl_##name);    \
    }

// The same for a kernel whose blocks meet in SyncAll: also exports `name__dsnpu_sync_all` (ABI 4), so
// the simulator runs all its blocks at once. The blocks of a kernel without it may run one after another,
// and a SyncAll in them fails the launch.
// It also declares the blocks cooperative (`name__dsnpu_coop`): the simulator may run them all on one thread,
// switching in SyncAll, which restores this layer's thread-local state (sync_all_keep_state).
#define DSNPU_HOST_ENTRY_SYNC(name)                                         \
    DSNPU_HOST_EXPORT const uint8_t name##__dsnpu_sync_all = 1;            \
    DSNPU_HOST_EXPORT const uint8_t name##__dsnpu_coop = 1;                \
    DSNPU_HOST_ENTRY(name)

// The same for a 1:2 mix kernel (KERNEL_TYPE_MIX_AIC_1_2): every block runs one AIC and two AIVs.
#define DSNPU_HOST_ENTRY_MIX(name)                                          \
    DSNPU_HOST_EXPORT void name(const dsnpu_sim_block_ctx* ctx) {          \
        ::dsnpu::host::run_mix_kernel(ctx, #name, &dsnpu_host_impl_##name); \
    }

// A mix kernel whose cores meet in SyncAll (sync.h): a mix entry that also declares SyncAll (ABI 4).
// Its blocks are cooperative too (`name__dsnpu_coop`): each holds its own core stacks (coop.h) while it
// waits in SyncAll, and sync_all_keep_state restores the waiting core's thread-local state.
#define DSNPU_HOST_ENTRY_MIX_SYNC(name)                                     \
    DSNPU_HOST_EXPORT const uint8_t name##__dsnpu_sync_all = 1;            \
    DSNPU_HOST_EXPORT const uint8_t name##__dsnpu_coop = 1;                \
    DSNPU_HOST_ENTRY_MIX(name)

#endif
