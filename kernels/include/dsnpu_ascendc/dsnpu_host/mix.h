// Mix (cube + vector) kernels as on dav-c220 (910B/910C, the "separated" architecture): core kinds,
// sub-block indices, cross-core flags, and the GM race check between the cores of one AI Core group.
//
// Semantics (asc-devkit docs; docs/api/context/ in older trees, docs/zh/api/SIMD-API/基础API/ in newer):
// - A 1:2 mix launch (KERNEL_TYPE_MIX_AIC_1_2) of numBlocks blocks runs numBlocks cube cores (AIC) and
//   2 * numBlocks vector cores (AIV). GetBlockIdx is [0, numBlocks) on the AIC and [0, 2 * numBlocks) on
//   the AIV (GetBlockIdx.md); GetBlockNum is numBlocks on both (GetBlockNum.md); GetSubBlockIdx is 0 or 1
//   on the two AIVs of one AI Core, 0 on the AIC (GetSubBlockIdx(ISASI).md); GetTaskRation /
//   GetTaskRatio / GetSubBlockNum return 1 on the AIC and 2 on the AIV (GetTaskRation.md,
//   GetSubBlockNum(ISASI).md). The AIC has no Unified Buffer.
// - CrossCoreSetFlag<modeId, pipe>(flagId) / CrossCoreWaitFlag(flagId) (CrossCoreSetFlag(ISASI).md,
//   CrossCoreWaitFlag(ISASI).md): flagId 0..10 on A2/A3, each a counter of the waiting core, set at most
//   15 times. Mode 2 (AIC <-> AIV in one AI Core): a set on the AIC releases one wait on each AIV; a wait
//   on the AIC proceeds once both AIVs have set. Mode 1 (the two AIVs of one AI Core): a wait proceeds once
//   both AIVs have set. Mode 0 (all cores of one kind across AI Cores) is not modelled (a fault). The set
//   issues on `pipe`, so it orders what that pipe did before it; the wait blocks every later instruction
//   of the waiting core ("CrossCoreWaitFlag之后的所有指令都将被阻塞").
//
// The model: the three cores of a block run cooperatively on the block's thread (coop.h, entry.h) and
// share a MixGroup; a core switches out only in a wait whose counter is empty. A set
// publishes the setting pipe's clock (pipeline.h) into the waiting core's counter queue; a wait pops it
// and joins it into the scalar unit's clock, which orders every later instruction of the core. Clocks
// carry all three cores' pipes, so the same vector clocks order GM accesses across cores:
// - race (GM): every GM access of a mix core is tagged (core, pipe, epoch) in a per-group interval map
//   (gm_race.h); two accesses to overlapping GM bytes from different cores of the group, one a write,
//   with no cross-core flag chain between them, are a finding that names both instructions, and so are
//   two of one core on different pipes with no flag between them. Blocks are checked against each other
//   at the end of the launch (l2_die.h).
// - sync: a CrossCoreWaitFlag that can never be satisfied (every other core of the group has returned
//   or waits itself with nothing to release it: a hang on the device), a counter set more than 15 times
//   without a wait, a flagId outside 0..10, and flags left set when all three cores have returned.
//
// Two more channels use the same counters, beside the 11 user flags:
// - Matmul requests (REGIST_MATMUL_OBJ in a mix kernel, lib/matmul_intf.h): the cube core runs a server
//   loop and each vector core's Matmul calls become requests to it ("KFC" messages in CANN). A request
//   carries the vector core's scalar clock (what the scalar unit issued or waited for before the call);
//   the reply carries the cube's MTE2, M and FIX clocks after it served the request. The server returns
//   when both vector cores have returned.
// - SyncAll in a mix launch (sync.h): the cores that take part (the two AIVs, or all three with
//   SyncAll<false>) meet here first, each carrying its pipes' clocks, then the block meets the others in
//   the simulator's barrier. A core that returns while another waits here is a sync finding.
#ifndef DSNPU_ASCENDC_HOST_MIX_H
#define DSNPU_ASCENDC_HOST_MIX_H

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block.h"
#include "coop.h"
#include "dcache.h"
#include "gm_race.h"
#include "pipeline.h"

namespace dsnpu {
namespace host {

constexpr uint32_t kCrossFlags = 11;     // flagId 0..10 (A2/A3)
// Internal channels after the user flags (see above).
constexpr uint32_t kChanKfcRequest = kCrossFlags;      // towards the AIC: a vector core's Matmul request
constexpr uint32_t kChanKfcReply = kCrossFlags + 1;    // towards an AIV: its request was served
constexpr uint32_t kChanSyncAll = kCrossFlags + 2;     // towards a core waiting in SyncAll: all arrived
constexpr uint32_t kChannels = kCrossFlags + 3;
constexpr uint32_t kCrossFlagMax = 15;   // sets a counter holds
constexpr uint32_t kSlotAic = 0;         // core slots: AIC, AIV 0, AIV 1

inline uint32_t core_slot(const BlockState& b) {
    return b.kind == CoreKind::kAic ? kSlotAic : 1u + b.sub_block;
}

// A FIFO of released edges that allocates nothing until its first push (a group has 132, mostly unused).
class EdgeQueue {
public:
    bool empty() const { return head_ == v_.size(); }
    size_t size() const { return v_.size() - head_; }
    const Edge& front() const { return v_[head_]; }
    void pop_front() { ++head_; }
    // Empty, keeping the allocation (most of a group's queues are never used: no store for them).
    void clear() {
        if (!v_.empty()) {
            v_.clear();
            head_ = 0;
        }
    }
    void push_back(const Edge& e) {
        if (empty()) {
            v_.clear();
            head_ = 0;
        }
        v_.push_back(e);
    }

private:
    std::vector<Edge> v_;
    size_t head_ = 0;
};

// The shared state of one mix block's three cores. They run on one thread (coop.h), so nothing here
// needs a lock.
class MixGroup {
public:
    enum class State : uint8_t { kRunning, kWaiting, kDone };

    // The state of a new MixGroup (entry.h reuses a thread's groups from block to block): every member
    // below, keeping the queues' allocations.
    void reset() {
        for (uint32_t k = 0; k < kCoreSlots; ++k) {
            state_[k] = State::kRunning;
            waiting_[k] = 0;
        }
        aborted_ = false;
        for (auto& per_core : ready_) {
            for (EdgeQueue& q : per_core) q.clear();
        }
        for (auto& per_core : pending_) {
            for (auto& per_flag : per_core) {
                for (EdgeQueue& q : per_flag) q.clear();
            }
        }
        kfc_objects_.clear();
        kfc_queue_.clear();
        for (bool& f : kfc_in_flight_) f = false;
        sync_arrived_ = 0;
        sync_edge_ = Edge{};
        l2_.release();
        std::memset(sets_, 0, sizeof sets_);
        gm_races_.clear();
        for (DataCache& c : dcaches_) c.clear();
        gm_valid_ = GmValid{};
    }
    // The GM ranges the block's cores validated (block.h).
    GmValid* gm_valid() { return &gm_valid_; }

    // --- cross-core flags -----------------------------------------------------------------------------
    // Returns an empty string, or the sync finding.
    std::string set(uint32_t from, uint32_t mode, uint32_t flag, const Edge& e) {
        char msg[256];
        if (flag >= kCrossFlags) {
            std::snprintf(msg, sizeof msg, "sync: CrossCoreSetFlag(%u): flagId outside 0..10", flag);
            return msg;
        }
        ++sets_[from][flag];
        if (mode == 2 && from == kSlotAic) {
            for (uint32_t r = 1; r < kCoreSlots; ++r) {
                if (!push(r, flag, e, msg, sizeof msg)) return msg;
            }
        } else if (mode == 2) {
            pending_[kSlotAic][flag][from].push_back(e);
            if (!pair(kSlotAic, flag, msg, sizeof msg)) return msg;
        } else if (mode == 1 && from != kSlotAic) {
            for (uint32_t r = 1; r < kCoreSlots; ++r) {
                pending_[r][flag][from].push_back(e);
                if (!pair(r, flag, msg, sizeof msg)) return msg;
            }
        } else {
            std::snprintf(msg, sizeof msg,
                          "sync: CrossCoreSetFlag<%u>(%u) on %s: the host layer models mode 2 (AIC <-> AIV) and "
                          "mode 1 (AIV <-> AIV) within one AI Core only",
                          mode, flag, slot_name(from));
            return msg;
        }
        return std::string();
    }

    // Returns once a set releases `slot`'s wait on `flag` (the other cores run meanwhile); the released edge goes to *out. Returns an empty
    // string, "abort" when another core faulted, or the sync finding of a wait that can never complete.
    std::string wait(uint32_t slot, uint32_t flag, Edge* out) {
        if (flag >= kCrossFlags) {
            char msg[128];
            std::snprintf(msg, sizeof msg, "sync: CrossCoreWaitFlag(%u): flagId outside 0..10", flag);
            return msg;
        }
        return wait_channel(slot, flag, out);
    }

    // wait() on any channel, user flag or internal. An AIC waiting for Matmul requests returns "quit"
    // once both vector cores have returned with none left.
    std::string wait_channel(uint32_t slot, uint32_t flag, Edge* out) {
        char msg[512];
        state_[slot] = State::kWaiting;
        waiting_[slot] = flag;
        for (;;) {
            if (aborted_) return "abort";
            EdgeQueue& q = ready_[slot][flag];
            if (!q.empty()) {
                *out = q.front();
                q.pop_front();
                state_[slot] = State::kRunning;
                return std::string();
            }
            if (flag == kChanKfcRequest && state_[1] == State::kDone && state_[2] == State::kDone) {
                state_[slot] = State::kRunning;
                return "quit";
            }
            // A server with nothing to serve never reports: a vector core stuck waiting on it does.
            if (flag != kChanKfcRequest && stuck(slot)) {
                const uint32_t o1 = (slot + 1) % kCoreSlots, o2 = (slot + 2) % kCoreSlots;
                if (flag == kChanSyncAll) {
                    std::snprintf(msg, sizeof msg,
                                  "sync: SyncAll on %s is reached by some cores of its AI Core only (%s: %s, %s: "
                                  "%s); the core would hang",
                                  slot_name(slot), slot_name(o1), describe(o1), slot_name(o2), describe(o2));
                } else if (flag == kChanKfcReply) {
                    std::snprintf(msg, sizeof msg,
                                  "sync: the Matmul request of %s is never served (AIC: %s); the core would hang",
                                  slot_name(slot), describe(kSlotAic));
                } else {
                    std::snprintf(msg, sizeof msg,
                                  "sync: CrossCoreWaitFlag(%u) can never be satisfied: no core of this AI Core "
                                  "that is still running will set it (%s: %s, %s: %s); the core would hang",
                                  flag, slot_name(o1), describe(o1), slot_name(o2), describe(o2));
                }
                return msg;
            }
            // Another core has to run first: a set may still come (stuck() said so).
            CoopCores* coop = CoopCores::current();
            if (coop == nullptr) return "internal: a cross-core wait outside a mix block's scheduler";
            coop->yield();
        }
    }

    // --- Matmul requests (lib/matmul_intf.h) ---------------------------------------------------------
    // The cube core's server objects: `index` in REGIST_MATMUL_OBJ's order, one instance per vector core.
    struct KfcObject {
        const void* type = nullptr;  // the Matmul type's tag (Matmul::dsnpu_type_tag)
        void* inst[2] = {nullptr, nullptr};
    };
    void kfc_publish(std::vector<KfcObject> objects) { kfc_objects_ = std::move(objects); }
    // Vector core `from` asks the cube core to run `run` on its instance of object `index` (of type
    // `type`); the caller waits on kChanKfcReply, at once or (an asynchronous request, kfc_in_flight)
    // before its next request of any object, so at most two queue: one per vector core.
    void kfc_request(uint32_t from, uint32_t index, const void* type, std::function<void(void*)> run,
                     const Edge& e) {
        kfc_queue_.push_back(KfcRequest{from, index, type, std::move(run)});
        ready_[kSlotAic][kChanKfcRequest].push_back(e);
    }
    // The cube core's next request (after wait_channel(kSlotAic, kChanKfcRequest) returned its edge).
    struct KfcRequest {
        uint32_t from = 0, index = 0;
        const void* type = nullptr;
        std::function<void(void*)> run;
    };
    KfcRequest kfc_pop() {
        KfcRequest r = std::move(kfc_queue_.front());
        kfc_queue_.erase(kfc_queue_.begin());
        return r;
    }
    // The instance serving `r`, or nullptr (with the reason in *why) when the server has no such object.
    void* kfc_instance(const KfcRequest& r, const char** why) const {
        if (r.index >= kfc_objects_.size()) {
            *why = "the vector core registered more Matmul objects than the cube core";
            return nullptr;
        }
        if (kfc_objects_[r.index].type != r.type) {
            *why = "the vector core's Matmul object has another type than the cube core's at the same position";
            return nullptr;
        }
        return kfc_objects_[r.index].inst[r.from == 2 ? 1 : 0];
    }
    void kfc_reply(uint32_t to, const Edge& e) { ready_[to][kChanKfcReply].push_back(e); }
    // Whether vector core `slot` has a request whose reply it has not waited for yet.
    bool& kfc_in_flight(uint32_t slot) { return kfc_in_flight_[slot]; }

    // --- the block's slice of the L2 model (cost.h), shared by its three cores ------------------------
    L2Slice* l2(uint64_t capacity) {
        if (l2_.get() == nullptr) l2_.take()->reset(capacity);
        return l2_.get();
    }

    // --- SyncAll of a mix launch (sync.h) ---------------------------------------------------------------
    // Core `slot` arrives with `e`; true when it is the last of `parties` (a bit per slot), and then
    // *all is every arrival joined. The others wait on kChanSyncAll for release_sync_all.
    bool arrive_sync_all(uint32_t slot, uint32_t parties, const Edge& e, Edge* all) {
        sync_arrived_ |= 1u << slot;
        sync_edge_.clock.join(e.clock);
        sync_edge_.time = sync_edge_.time > e.time ? sync_edge_.time : e.time;
        sync_edge_.valid = true;
        if ((sync_arrived_ & parties) != parties) return false;
        *all = sync_edge_;
        return true;
    }
    // The last core came through the launch-wide barrier, which every block leaves at `leave` (sync.h):
    // release the others of `parties`.
    void release_sync_all(uint32_t slot, uint32_t parties, double leave) {
        if (leave > sync_edge_.time) sync_edge_.time = leave;
        for (uint32_t k = 0; k < kCoreSlots; ++k) {
            if (k != slot && (parties & (1u << k)) != 0) ready_[k][kChanSyncAll].push_back(sync_edge_);
        }
        sync_arrived_ = 0;
        sync_edge_ = Edge{};
    }

    // A core returned (or faulted: `abort`).
    void done(uint32_t slot, bool abort) {
        state_[slot] = State::kDone;
        if (abort) aborted_ = true;
    }
    // The first fault of the block claims the report; every wait is released.
    bool claim_fault() {
        const bool first = !aborted_;
        aborted_ = true;
        return first;
    }

    // After all three cores returned: a Matmul request never waited for, the first flag left set, or
    // empty.
    std::string leftover() {
        char msg[256];
        for (uint32_t r = 0; r < kCoreSlots; ++r) {
            if (kfc_in_flight_[r]) {
                std::snprintf(msg, sizeof msg,
                              "sync: %s returned with an asynchronous Matmul request it never waited for "
                              "(WaitIterateAll or End first)",
                              slot_name(r));
                return msg;
            }
        }
        for (uint32_t r = 0; r < kCoreSlots; ++r) {
            for (uint32_t f = 0; f < kCrossFlags; ++f) {
                size_t n = ready_[r][f].size();
                for (uint32_t s = 0; s < kCoreSlots; ++s) n += pending_[r][f][s].size();
                if (n != 0) {
                    std::snprintf(msg, sizeof msg,
                                  "sync: CrossCoreSetFlag(%u) towards %s was never waited for (%zu set%s left at "
                                  "kernel end)",
                                  f, slot_name(r), n, n == 1 ? "" : "s");
                    return msg;
                }
            }
        }
        return std::string();
    }

    // The GM race map the group's three cores share (gm_race.h).
    GmRaces* gm_races() { return &gm_races_; }
    // The data cache of core `slot` (dcache.h).
    DataCache* dcache(uint32_t slot) { return &dcaches_[slot]; }

private:
    // Pushes a released edge to `r`'s counter; false (with msg) past 15 sets.
    bool push(uint32_t r, uint32_t flag, const Edge& e, char* msg, size_t n) {
        if (ready_[r][flag].size() >= kCrossFlagMax) {
            std::snprintf(msg, n,
                          "sync: CrossCoreSetFlag(%u) towards %s set %u times with no CrossCoreWaitFlag: the "
                          "counter holds %u",
                          flag, slot_name(r), kCrossFlagMax + 1, kCrossFlagMax);
            return false;
        }
        ready_[r][flag].push_back(e);
        return true;
    }
    // Releases `r`'s wait when both AIVs have a pending set.
    bool pair(uint32_t r, uint32_t flag, char* msg, size_t n) {
        EdgeQueue& a = pending_[r][flag][1];
        EdgeQueue& b = pending_[r][flag][2];
        if (a.size() > kCrossFlagMax || b.size() > kCrossFlagMax) {
            std::snprintf(msg, n, "sync: CrossCoreSetFlag(%u) towards %s set more than %u times with no wait", flag,
                          slot_name(r), kCrossFlagMax);
            return false;
        }
        while (!a.empty() && !b.empty()) {
            Edge e = a.front();
            e.clock.join(b.front().clock);
            e.time = e.time > b.front().time ? e.time : b.front().time;
            a.pop_front();
            b.pop_front();
            if (!push(r, flag, e, msg, n)) return false;
        }
        return true;
    }
    // No other core can ever release `slot`.
    bool stuck(uint32_t slot) const {
        for (uint32_t k = 0; k < kCoreSlots; ++k) {
            if (k == slot) continue;
            if (state_[k] == State::kRunning) return false;
            if (state_[k] == State::kWaiting && !ready_[k][waiting_[k]].empty()) return false;
        }
        return true;
    }
    const char* describe(uint32_t k) const {
        switch (state_[k]) {
            case State::kDone: return "returned";
            case State::kWaiting:
                return waiting_[k] == kChanKfcRequest ? "serves Matmul requests"
                       : waiting_[k] == kChanSyncAll  ? "waits in SyncAll"
                       : waiting_[k] == kChanKfcReply ? "waits for its Matmul request"
                                                      : "waits too";
            default: return "running";
        }
    }

    State state_[kCoreSlots] = {State::kRunning, State::kRunning, State::kRunning};
    uint32_t waiting_[kCoreSlots] = {};
    bool aborted_ = false;
    EdgeQueue ready_[kCoreSlots][kChannels];
    EdgeQueue pending_[kCoreSlots][kCrossFlags][kCoreSlots];
    std::vector<KfcObject> kfc_objects_;
    std::vector<KfcRequest> kfc_queue_;
    bool kfc_in_flight_[kCoreSlots] = {};
    uint32_t sync_arrived_ = 0;
    Edge sync_edge_;
    Lease<L2Slice> l2_;
    uint32_t sets_[kCoreSlots][kCrossFlags] = {};

    GmRaces gm_races_;
    DataCache dcaches_[kCoreSlots];
    GmValid gm_valid_;
};

inline bool mix_claim_fault(MixGroup* g) { return g->claim_fault(); }
inline DataCache* mix_dcache(MixGroup* g, uint32_t slot) { return g->dcache(slot); }

inline MixGroup* mix_group_or_fail(const char* op) {
    BlockState& b = block();
    if (b.group == nullptr) {
        fail("%s: cross-core flags need a mix launch (the kernel's entry is DSNPU_HOST_ENTRY, not "
             "DSNPU_HOST_ENTRY_MIX)",
             op);
    }
    return b.group;
}

inline uint32_t pipe_index(pipe_t p) {
    switch (p) {
        case PIPE_S: return kPipeS;
        case PIPE_V: return kPipeV;
        case PIPE_M: return kPipeM;
        case PIPE_MTE1: return kPipeMte1;
        case PIPE_MTE2: return kPipeMte2;
        case PIPE_MTE3: return kPipeMte3;
        case PIPE_FIX: return kPipeFix;
        default: return kPipeCount;
    }
}

}  // namespace host
}  // namespace dsnpu

namespace AscendC {

enum CoreType : uint8_t { AIC = 1, AIV = 2 };

__aicore__ inline int64_t GetSubBlockIdx() { return ::dsnpu::host::block().sub_block; }
// Vector cores per AI Core on an AIV of a 1:2 mix launch, else 1 (GetTaskRation.md / GetTaskRatio.md).
__aicore__ inline int64_t GetTaskRation() {
    const ::dsnpu::host::BlockState& b = ::dsnpu::host::block();
    return b.group != nullptr && b.kind == ::dsnpu::host::CoreKind::kAiv ? 2 : 1;
}
__aicore__ inline int64_t GetTaskRatio() { return GetTaskRation(); }
__aicore__ inline int64_t GetSubBlockNum() { return GetTaskRation(); }

template <uint8_t modeId, pipe_t pipe>
__aicore__ inline void CrossCoreSetFlag(uint16_t flagId) {
    namespace h = ::dsnpu::host;
    h::MixGroup* g = h::mix_group_or_fail("CrossCoreSetFlag");
    const uint32_t p = h::pipe_index(pipe);
    if (p == h::kPipeCount) h::fail("CrossCoreSetFlag: pipe %d is not one pipe", static_cast<int>(pipe));
    h::Pipeline& pl = h::pipeline();
    pl.cost().flag_op(p);
    const h::Edge e = pl.publish(p);
    const std::string r = g->set(h::core_slot(h::block()), modeId, flagId, e);
    if (!r.empty()) h::fail_msg(r.c_str());
}

template <uint8_t modeId = 0, pipe_t pipe = PIPE_S>
__aicore__ inline void CrossCoreWaitFlag(uint16_t flagId) {
    namespace h = ::dsnpu::host;
    h::MixGroup* g = h::mix_group_or_fail("CrossCoreWaitFlag");
    h::Edge e;
    const std::string r = g->wait(h::core_slot(h::block()), flagId, &e);
    if (r == "abort") throw h::BlockAbort{};
    if (!r.empty()) h::fail_msg(r.c_str());
    // Every later instruction of the core waits: the scalar unit issues them all after this.
    h::Pipeline& pl = h::pipeline();
    pl.cost().flag_op(h::kPipeS);
    pl.wait(h::kPipeS, e);
}

}  // namespace AscendC

// Kernel types (设置Kernel类型.md). The host entry decides how a kernel runs (DSNPU_HOST_ENTRY: plain,
// DSNPU_HOST_ENTRY_MIX: 1:2 mix); KERNEL_TASK_TYPE_DEFAULT checks that the kernel's declaration agrees.
enum KernelMetaType : uint8_t {
    KERNEL_TYPE_AIV_ONLY,
    KERNEL_TYPE_AIC_ONLY,
    KERNEL_TYPE_MIX_AIV_1_0,
    KERNEL_TYPE_MIX_AIC_1_0,
    KERNEL_TYPE_MIX_AIC_1_1,
    KERNEL_TYPE_MIX_AIC_1_2,
};

namespace dsnpu {
namespace host {
// KERNEL_TYPE_AIC_ONLY on a plain launch: the block is a cube core from here on (no Unified Buffer, so
// any UB use faults), as a cube-only kernel runs on the AIC of each AI Core.
inline void declare_kernel_type(KernelMetaType type) {
    const bool mix = block().group != nullptr;
    if (type == KERNEL_TYPE_AIC_ONLY && !mix) {
        BlockState& b = block();
        if (b.ub_used != 0) fail("KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY) after the block used its UB");
        b.kind = CoreKind::kAic;
        b.ub_capacity = 0;
    }
    if (type == KERNEL_TYPE_MIX_AIC_1_2 && !mix) {
        fail("KERNEL_TASK_TYPE_DEFAULT: the kernel is KERNEL_TYPE_MIX_AIC_1_2 but exported with DSNPU_HOST_ENTRY");
    }
    if (type != KERNEL_TYPE_MIX_AIC_1_2 && mix) {
        fail("KERNEL_TASK_TYPE_DEFAULT: the host layer runs mix kernels as KERNEL_TYPE_MIX_AIC_1_2 only (type %d)",
             static_cast<int>(type));
    }
}
}  // namespace host
}  // namespace dsnpu

#define KERNEL_TASK_TYPE_DEFAULT(type) ::dsnpu::host::declare_kernel_type(type)

// The core kind a kernel body runs on (CANN spells these as macros over the core type).
#define g_coreType                                                                                             \
    (::dsnpu::host::block().kind == ::dsnpu::host::CoreKind::kAic ? ::AscendC::AIC : ::AscendC::AIV)
#define ASCEND_IS_AIC (g_coreType == ::AscendC::AIC)
#define ASCEND_IS_AIV (g_coreType == ::AscendC::AIV)

#endif
