// SetFlag / WaitFlag, PipeBarrier, SyncAll and DataCacheCleanAndInvalid of the host Ascend C layer: the
// edges of pipeline.h.
//
// HardEvent X_Y names the source pipe X and the destination pipe Y: "MTE2_V: PIPE_V waits for PIPE_MTE2"
// (asc-devkit docs/api/context/SetFlag-WaitFlag(ISASI).md). SyncAll makes every block of the launch meet
// (the simulator's barrier) and, like PipeBarrier<PIPE_ALL>, drains this block's pipes first, so GM
// written by MTE3 before it is visible to every block after it (SyncAll.md).
#ifndef DSNPU_ASCENDC_HOST_SYNC_H
#define DSNPU_ASCENDC_HOST_SYNC_H

#include <string>

#include "block.h"
#include "mix.h"
#include "pipeline.h"
#include "tensor.h"

namespace dsnpu {
namespace host {

struct EventPipes {
    uint8_t src, dst;
    const char* name;
};

// Indexed by HardEvent (block.h), in its order.
inline const EventPipes& event_pipes(uint32_t ev) {
    static const EventPipes table[] = {
        {kPipeMte2, kPipeMte1, "MTE2_MTE1"}, {kPipeMte1, kPipeMte2, "MTE1_MTE2"}, {kPipeMte1, kPipeM, "MTE1_M"},
        {kPipeM, kPipeMte1, "M_MTE1"},       {kPipeMte2, kPipeV, "MTE2_V"},       {kPipeV, kPipeMte2, "V_MTE2"},
        {kPipeMte3, kPipeV, "MTE3_V"},       {kPipeV, kPipeMte3, "V_MTE3"},       {kPipeM, kPipeV, "M_V"},
        {kPipeV, kPipeM, "V_M"},             {kPipeV, kPipeV, "V_V"},             {kPipeMte3, kPipeMte1, "MTE3_MTE1"},
        {kPipeMte1, kPipeMte3, "MTE1_MTE3"}, {kPipeMte1, kPipeV, "MTE1_V"},       {kPipeMte2, kPipeM, "MTE2_M"},
        {kPipeM, kPipeMte2, "M_MTE2"},       {kPipeV, kPipeMte1, "V_MTE1"},       {kPipeM, kPipeFix, "M_FIX"},
        {kPipeFix, kPipeM, "FIX_M"},         {kPipeMte3, kPipeMte2, "MTE3_MTE2"}, {kPipeMte2, kPipeMte3, "MTE2_MTE3"},
        {kPipeS, kPipeV, "S_V"},             {kPipeV, kPipeS, "V_S"},             {kPipeS, kPipeMte2, "S_MTE2"},
        {kPipeMte2, kPipeS, "MTE2_S"},       {kPipeS, kPipeMte3, "S_MTE3"},       {kPipeMte3, kPipeS, "MTE3_S"},
        {kPipeMte2, kPipeFix, "MTE2_FIX"},   {kPipeFix, kPipeMte2, "FIX_MTE2"},   {kPipeFix, kPipeS, "FIX_S"},
        {kPipeM, kPipeS, "M_S"},             {kPipeFix, kPipeMte3, "FIX_MTE3"},
    };
    static_assert(sizeof(table) / sizeof(table[0]) == kEvents, "one entry per HardEvent");
    return table[ev < kEvents ? ev : 0];
}

inline const char* const* event_names() {
    static const char* names[kEvents];
    static bool init = [] {
        for (uint32_t i = 0; i < kEvents; ++i) names[i] = event_pipes(i).name;
        return true;
    }();
    (void)init;
    return names;
}

// The launch-wide half of SyncAll, for the core that takes its block through the simulator's barrier:
// publishes the block's arrival (`arrival`, modelled cycles since the block started) and returns once
// every block has arrived, with the latest arrival in *leave: a barrier lets every block go on only when
// the slowest is there. Block 0 then brings the launch's view of the die's L2 up to the barrier
// (LaunchL2::reach) while the others wait in a second barrier of the simulator (no cost in the model).
// Non-zero: the launch is being abandoned.
inline int launch_sync_all(BlockState& b, double arrival, double* leave) {
    *leave = arrival;
    LaunchL2* l = b.launch_l2;
    if (l != nullptr) l->arrive(b.epoch, arrival);
    if (b.ctx->sync_all(b.ctx->sim) != 0) return 1;
    if (l == nullptr) return 0;
    *leave = l->latest(b.epoch);
    if (b.ctx->block_idx == 0) l->reach(b.epoch);
    return b.ctx->sync_all(b.ctx->sim);
}

}  // namespace host
}  // namespace dsnpu

namespace AscendC {

template <HardEvent event>
__aicore__ inline void SetFlag(int32_t eventID) {
    static_assert(static_cast<uint32_t>(event) < ::dsnpu::host::kEvents, "a pipe-to-pipe HardEvent");
    const auto& e = ::dsnpu::host::event_pipes(static_cast<uint32_t>(event));
    ::dsnpu::host::pipeline().set_flag(static_cast<uint32_t>(event), e.src, eventID, e.name);
}
template <HardEvent event>
__aicore__ inline void WaitFlag(int32_t eventID) {
    static_assert(static_cast<uint32_t>(event) < ::dsnpu::host::kEvents, "a pipe-to-pipe HardEvent");
    const auto& e = ::dsnpu::host::event_pipes(static_cast<uint32_t>(event));
    ::dsnpu::host::pipeline().wait_flag(static_cast<uint32_t>(event), e.dst, eventID, e.name);
}

template <pipe_t pipe>
__aicore__ inline void PipeBarrier() {
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    if constexpr (pipe == PIPE_ALL) {
        pl.barrier_all(::dsnpu::host::cost::kBarrier);
    } else if constexpr (pipe == PIPE_S) {
        // "Scalar pipes are synchronized by hardware; PipeBarrier<PIPE_S>() raises a hardware error."
        if (pl.sync_on()) ::dsnpu::host::fail("sync: PipeBarrier<PIPE_S> is a hardware error");
    } else {
        constexpr uint32_t p = pipe == PIPE_V      ? ::dsnpu::host::kPipeV
                               : pipe == PIPE_M    ? ::dsnpu::host::kPipeM
                               : pipe == PIPE_MTE1 ? ::dsnpu::host::kPipeMte1
                               : pipe == PIPE_MTE2 ? ::dsnpu::host::kPipeMte2
                               : pipe == PIPE_MTE3 ? ::dsnpu::host::kPipeMte3
                               : pipe == PIPE_FIX  ? ::dsnpu::host::kPipeFix
                                                   : ::dsnpu::host::kPipeV;
        pl.barrier_pipe(p);
    }
}

// All blocks of the launch meet here. If another block failed, the launch is being abandoned and this
// block stops too (without reporting a fault of its own). A block that returns while others wait in
// SyncAll is reported by the simulator ("sync: ...").
//
// In a mix launch (SyncAll.md): SyncAll<true>() (the default) makes the vector cores of every block meet,
// SyncAll<false>() every cube and vector core. The cores of one block that take part meet first (mix.h:
// each carries its pipes' clocks to the others, so GM written before the barrier by one core is ordered
// before the others' accesses after it); the last one takes the block through the launch's barrier.
// SyncAll<true> on a cube core is a fault. A cube core serving Matmul requests (REGIST_MATMUL_OBJ) never
// reaches a SyncAll<false>: the vector cores waiting there are a sync finding, as the hang they are.
template <bool isAIVOnly = true>
__aicore__ inline void SyncAll() {
    namespace h = ::dsnpu::host;
    h::BlockState& b = h::block();
    h::pipeline().barrier_all(h::cost::kSyncAll);
    h::dcache_at_barrier(b);
    if (b.group != nullptr) {
        if (isAIVOnly && b.kind == h::CoreKind::kAic) {
            h::fail("SyncAll<true> (vector cores only) called on the cube core of a mix launch");
        }
        const uint32_t me = h::core_slot(b);
        const uint32_t parties = isAIVOnly ? 0b110u : 0b111u;
        h::Pipeline& pl = h::pipeline();
        h::Edge all;
        if (b.group->arrive_sync_all(me, parties, pl.publish(h::kPipeS), &all)) {
            // The block's other parties wait on this thread: nothing else of the block can run meanwhile.
            double leave = all.time;
            if (h::launch_sync_all(b, all.time, &leave) != 0) {
                h::mix_claim_fault(b.group);
                throw h::BlockAbort{};
            }
            if (leave > all.time) all.time = leave;
            b.group->release_sync_all(me, parties, all.time);
        } else {
            const std::string r = b.group->wait_channel(me, h::kChanSyncAll, &all);
            if (r == "abort") throw h::BlockAbort{};
            if (!r.empty()) h::fail_msg(r.c_str());
        }
        for (uint32_t p = 0; p < h::kPipeCount; ++p) pl.wait(p, all);
        ++b.epoch;
        pl.pass_barrier(b.epoch);
        return;
    }
    h::Edge all = h::pipeline().publish(h::kPipeS);
    double leave = all.time;
    if (h::launch_sync_all(b, all.time, &leave) != 0) {
        throw h::BlockAbort{};
    }
    if (leave > all.time) {
        all.time = leave;
        for (uint32_t p = 0; p < h::kPipeCount; ++p) h::pipeline().wait(p, all);
    }
    ++b.epoch;
    h::pipeline().pass_barrier(b.epoch);
}

// The scalar unit reaches GM through a per-core data cache that DMA (DataCopy, Fixpipe) bypasses: a
// GetValue of bytes another core wrote must be preceded by this, or it may read a stale line
// (DataCacheCleanAndInvalid.md, asc_dcci.md), and a SetValue reaches GM only when this writes its line
// back. The host layer's GetValue and SetValue go to GM directly; the race check keeps the cache's lines
// to find where the hardware would differ (dcache.h). This costs the scalar unit a GM round trip.
enum class CacheLine : uint8_t { SINGLE_CACHE_LINE, ENTIRE_DATA_CACHE };
enum class DcciDst : uint8_t { CACHELINE_ALL, CACHELINE_UB, CACHELINE_OUT, CACHELINE_ATOMIC };

template <typename T, CacheLine entire, DcciDst dst>
__aicore__ inline void DataCacheCleanAndInvalid(const GlobalTensor<T>& line) {
    ::dsnpu::host::issue(::dsnpu::host::kPipeS, "DataCacheCleanAndInvalid", ::dsnpu::host::cost::kScalarGm);
    ::dsnpu::host::dcache_clean(line.GetPhyAddr(), entire == CacheLine::ENTIRE_DATA_CACHE);
}

}  // namespace AscendC

#endif
