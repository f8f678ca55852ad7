// The per-kernel entry shim between the simulator's ABI (dsnpu_sim_kernel.h) and an Ascend C kernel.
//
// DSNPU_HOST_ENTRY(name) exports `extern "C" void name(const dsnpu_sim_block_ctx*)`, which checks the ABI
// version and the argument bytes (one 8-byte GM address per kernel parameter), gives the block a fresh
// Unified Buffer (filled with 0xFF so reads of never-written UB show up as NaN), installs the thread-local
// block state and calls the kernel compiled as DSNPU_KERNEL(name). Faults end the block through
// BlockAbort; any other C++ exception is reported as an internal fault. Nothing is thrown past the shim.
// Each block gets a Pipeline (pipeline.h) with the checks of DSNPU_SIM_CHECK; when the kernel returns,
// flags left set are a sync finding, and the block's modelled cycles and per-pipe busy fractions go into
// the counters (model_cycles, pipe_busy_q8).
#ifndef DSNPU_ASCENDC_HOST_ENTRY_H
#define DSNPU_ASCENDC_HOST_ENTRY_H

#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <utility>

#include "block.h"
#include "macros.h"
#include "pipeline.h"
#include "sync.h"

namespace dsnpu {
namespace host {

template <typename... Args, size_t... I>
inline void call_with_addrs(void (*fn)(Args...), const uint64_t* a, std::index_sequence<I...>) {
    fn(reinterpret_cast<Args>(static_cast<uintptr_t>(a[I]))...);
}

template <typename... Args>
inline void run_kernel(const dsnpu_sim_block_ctx* ctx, const char* name, void (*fn)(Args...)) {
    static_assert(sizeof...(Args) > 0, "Ascend C kernels take at least the tiling pointer");
    constexpr size_t n = sizeof...(Args);
    if (ctx == nullptr) return;
    dsnpu_sim_counters scratch{};
    BlockState st;
    st.ctx = ctx;
    st.ub_capacity = ctx->ub_capacity;
    st.counters = ctx->counters != nullptr ? ctx->counters : &scratch;
    uint8_t* ub = nullptr;
    std::unique_ptr<Pipeline> pipeline;
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
        ub = static_cast<uint8_t*>(::operator new(st.ub_capacity == 0 ? 1 : st.ub_capacity, std::align_val_t{64}));
        std::memset(ub, 0xFF, st.ub_capacity);
        st.ub = ub;
        pipeline.reset(new Pipeline(parse_checks(std::getenv("DSNPU_SIM_CHECK")), st.ub_capacity, ctx->block_num));
        st.pipeline = pipeline.get();
        uint64_t a[n];
        std::memcpy(a, ctx->args, sizeof a);
        call_with_addrs(fn, a, std::make_index_sequence<n>{});
        pipeline->finish(event_names());
        st.counters->model_cycles = static_cast<uint64_t>(std::llround(pipeline->cost().block_cycles()));
        st.counters->pipe_busy_q8 = pipeline->cost().busy_q8();
    } catch (const BlockAbort&) {
        // Already reported (or the launch is being abandoned by another block's fault).
    } catch (const std::exception& e) {
        char msg[512];
        std::snprintf(msg, sizeof msg, "internal: C++ exception in the host kernel: %s", e.what());
        ctx->fail(ctx->sim, msg);
    } catch (...) {
        ctx->fail(ctx->sim, "internal: unknown C++ exception in the host kernel");
    }
    if (ub != nullptr) ::operator delete(ub, std::align_val_t{64});
    t_block = saved;
}

}  // namespace host
}  // namespace dsnpu

// Export the ABI symbol `name` for the kernel defined as DSNPU_KERNEL(name) in the same translation unit.
#define DSNPU_HOST_ENTRY(name)                                              \
    DSNPU_HOST_EXPORT void name(const dsnpu_sim_block_ctx* ctx) {          \
        ::dsnpu::host::run_kernel(ctx, #name, &dsnpu_host_impl_##name);    \
    }

#endif
