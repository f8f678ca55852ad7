// The AI Core's pipes as the host layer models them: which pipe each instruction issues on, the
// happens-before edges synchronization creates between pipes, the race / init / sync sanitizer built on
// them, and the cycle model (cost.h) timed along the same edges.
//
// Semantics (Ascend C documentation, cannmirror/asc-devkit docs/api/context/):
// - Every instruction issues on one pipe: S (scalar, incl. LocalTensor GetValue/SetValue), V (vector,
//   incl. UB->UB DataCopy), M (cube), MTE1 (L1->L0), MTE2 (GM->UB/L1), MTE3 (UB->GM), FIX (L0C->GM). Pipes
//   run concurrently; within one pipe instructions complete in order (same-pipe dependencies need
//   PipeBarrier<PIPE_X>, which the compiler's auto-sync inserts: PipeBarrier(ISASI).md).
// - SetFlag<HardEvent::X_Y>(id) / WaitFlag<X_Y>(id) order everything pipe X issued before the SetFlag
//   before everything pipe Y issues after the WaitFlag; they must be paired; eventID is 0..7 on A2/A3
//   (SetFlag-WaitFlag(ISASI).md). PipeBarrier<PIPE_ALL> waits for every pipe; PipeBarrier<PIPE_S> is a
//   hardware error (PipeBarrier(ISASI).md).
// - The scalar unit issues every instruction in program order, so an instruction can not start before the
//   scalar unit passed the WaitFlag<X_S> / barriers before it: what the scalar unit has waited for orders
//   every later instruction of every pipe, and so do its loads (GetValue), which complete before it goes
//   on. Scalar stores (SetValue) are NOT ordered before other pipes without S_X flags (the S_MTE3 example of
//   SetFlag-WaitFlag(ISASI).md).
// - TQue carries implicit flags per buffer (EnQue.md, DeQue.md, AllocTensor.md, FreeTensor.md, and the
//   "Pipes and synchronization" section of the project's facts): EnQue = SetFlag<producer_consumer>, DeQue =
//   its WaitFlag, FreeTensor = SetFlag<consumer_producer>, the buffer's next AllocTensor = its WaitFlag,
//   with (producer, consumer) = (MTE2, V) for VECIN, (V, MTE3) for VECOUT, (MTE2, MTE3) for
//   TQueBind<VECIN, VECOUT>. Nothing orders a VECIN buffer's MTE3 copy-out against its next MTE2 refill.
//
// The model: a vector clock per pipe (what that pipe's next instruction is ordered after), an epoch per pipe
// that advances whenever the pipe publishes its clock (SetFlag, EnQue, FreeTensor, barriers), and per
// 4-byte UB granule the tag (pipe, epoch) of its last write and of its last read by each UB-reading pipe.
// Two accesses to a granule from different pipes, one a write, with no edge between them, are a race.
//
// Checks (env DSNPU_SIM_CHECK, comma-separated, default "mem"): mem (the bounds checks of every header,
// always on), race, init, sync, or all. A finding is a fault of the block whose message starts with its
// kind ("race: ", "init: ", "sync: ").
// - init is checked like valgrind's memcheck: UB bytes carry a defined bit (set by MTE2 and by writes from
//   defined values; InitBuffer makes its bytes undefined); vector instructions propagate it element-wise;
//   a finding is raised where an undefined value is *used*: copied out to GM (MTE3), read by the scalar
//   unit (GetValue) or used as a Gather offset. Vector work on the padding lanes of a row is therefore
//   allowed, as on the device, as long as its results never leave the core. On the GM side (gm_access
//   below) a load of GM bytes nothing wrote since their allocation is the finding: the simulator poisons
//   fresh device memory and tracks what copies, memsets, collectives and kernel stores wrote.
#ifndef DSNPU_ASCENDC_HOST_PIPELINE_H
#define DSNPU_ASCENDC_HOST_PIPELINE_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "block.h"
#include "cost.h"
#include "l2_die.h"

namespace dsnpu {
namespace host {

enum Pipe : uint8_t { kPipeS = 0, kPipeV, kPipeM, kPipeMte1, kPipeMte2, kPipeMte3, kPipeFix, kPipeCount };

inline const char* pipe_name(uint32_t p) {
    static const char* const names[kPipeCount] = {"S", "V", "M", "MTE1", "MTE2", "MTE3", "FIX"};
    return p < kPipeCount ? names[p] : "?";
}

enum CheckBits : uint32_t { kCheckMem = 1, kCheckRace = 2, kCheckInit = 4, kCheckSync = 8, kCheckAll = 15 };

// Parses "mem,race,init,sync" / "all"; unknown words are ignored here (the simulator validates the
// variable at aclInit). NULL or empty means mem only.
inline uint32_t parse_checks(const char* s) {
    uint32_t bits = kCheckMem;
    if (s == nullptr) return bits;
    const char* p = s;
    while (*p != 0) {
        const char* e = p;
        while (*e != 0 && *e != ',') ++e;
        const size_t n = static_cast<size_t>(e - p);
        auto is = [&](const char* w) { return std::strlen(w) == n && std::strncmp(p, w, n) == 0; };
        if (is("race")) bits |= kCheckRace;
        if (is("init")) bits |= kCheckInit;
        if (is("sync")) bits |= kCheckSync;
        if (is("all")) bits |= kCheckAll;
        p = *e == ',' ? e + 1 : e;
    }
    return bits;
}

// The cores whose pipes a clock tracks: one plain block, or a mix block's AIC and two AIVs (mix.h).
// Core slot c's pipe p is entry c * kPipeCount + p, so cross-core flags carry clocks unchanged.
constexpr uint32_t kCoreSlots = 3;
constexpr uint32_t kClockSlots = kCoreSlots * kPipeCount;

// What a pipe's next instruction is ordered after: for each pipe (of each core), the newest epoch of it
// that is; and how many of the launch's SyncAll barriers (`barriers`): a core that passes its n-th sets n
// on all its pipes, and flags carry it on, so a mix block's cube core that waits for its vector cores
// after their SyncAll<true> is known to be past it too (the launch's GM race check between blocks,
// l2_die.h).
struct Clock {
    uint32_t e[kClockSlots] = {};
    uint32_t barriers = 0;
    void join(const Clock& o) {
        for (uint32_t i = 0; i < kClockSlots; ++i) e[i] = e[i] > o.e[i] ? e[i] : o.e[i];
        barriers = barriers > o.barriers ? barriers : o.barriers;
    }
};

// A published clock: the edge a flag or a queue buffer carries, and when (model cycles) it was set.
struct Edge {
    Clock clock;
    double time = 0;
    bool valid = false;
};

// A UB granule's access tags: (pipe << 28) | epoch, 0 = none. Readers of UB: S, V, MTE3.
struct Granule {
    uint32_t w = 0;
    uint32_t r[3] = {0, 0, 0};
};

constexpr uint32_t kGranule = 4;
constexpr uint32_t kEpochBits = 28;
constexpr uint32_t kLogSize = 2048;  // instructions remembered per pipe, to name the earlier side of a race
constexpr uint32_t kEventIds = 8;     // eventID 0..7 (SetFlag-WaitFlag(ISASI).md, A2/A3)
constexpr uint32_t kEvents = 32;

inline int reader_slot(uint32_t p) { return p == kPipeS ? 0 : p == kPipeV ? 1 : p == kPipeMte3 ? 2 : -1; }

// One remembered instruction.
// Trivial on purpose: the log is allocated uninitialized (only entries written are ever read).
struct LogEntry {
    const char* op;
    uint32_t epoch;
    uint32_t lo, hi;  // UB byte range
    bool write;
};

// A named UB region handed out by TPipe::InitBuffer, for messages.
struct UbRegion {
    uint32_t addr, len;
    const char* kind;
    uint32_t index;
};

class Pipeline {
public:
    Pipeline(uint32_t checks, uint32_t blocks_sharing_hbm) : cost_(blocks_sharing_hbm) {
        reset(checks, blocks_sharing_hbm);
    }
    Pipeline() : Pipeline(kCheckMem, 1) {}

    // The state of a new Pipeline(checks, blocks_sharing_hbm), keeping the allocations (entry.h reuses
    // a thread's pipelines from core to core).
    void reset(uint32_t checks, uint32_t blocks_sharing_hbm) {
        checks_ = checks;
        slot_ = 0;
        cost_ = CostModel(blocks_sharing_hbm);
        for (uint32_t p = 0; p < kPipeCount; ++p) {
            clock_[p] = Clock{};
            epoch_[p] = 1;
            log_next_[p] = 0;
        }
        // The race shadow and the defined bits cover the UB the block reserves (add_region grows them):
        // zeroing them for all 192 KiB per block cost more than a small kernel's whole run.
        shadow_.clear();
        defined_.clear();
        // Only entries written since (log_next_) are ever read.
        if ((checks_ & kCheckRace) && log_ == nullptr) {
            log_.reset(new LogEntry[static_cast<size_t>(kPipeCount) * kLogSize]);
        }
        std::memset(flag_set_, 0, sizeof flag_set_);
        regions_.clear();
        cur_op_ = nullptr;
        cur_pipe_ = kPipeS;
    }

    // This core's slot in the clocks (0 on a plain block and on a mix block's AIC, 1 + sub-block on its
    // AIVs); set once before the kernel runs.
    void set_slot(uint32_t slot) { slot_ = slot < kCoreSlots ? slot : 0; }
    uint32_t slot() const { return slot_; }
    uint32_t cur_pipe() const { return cur_pipe_; }
    const char* cur_op() const { return cur_op_; }
    uint32_t epoch(uint32_t p) const { return epoch_[p]; }
    const Clock& clock(uint32_t p) const { return clock_[p]; }

    bool race_on() const { return (checks_ & kCheckRace) != 0; }
    bool init_on() const { return (checks_ & kCheckInit) != 0; }
    bool sync_on() const { return (checks_ & kCheckSync) != 0; }
    const CostModel& cost() const { return cost_; }
    CostModel& cost() { return cost_; }

    // --- issuing -------------------------------------------------------------------------------------
    // An instruction on pipe `p` occupying it `busy` cycles, completing `latency` cycles after that.
    // Returns nothing; the access hooks below tag memory with the pipe's current epoch.
    void issue(uint32_t p, const char* op, double busy, double latency = 0) {
        if (p != kPipeS) clock_[p].join(clock_[kPipeS]);
        cost_.issue(p, busy, latency, op);
        cur_op_ = op;
        cur_pipe_ = p;
    }

    // The current instruction (last `issue`) reads / writes UB bytes [addr, addr + bytes).
    void ub_read(uint32_t addr, uint64_t bytes) { access(addr, bytes, false); }
    void ub_write(uint32_t addr, uint64_t bytes) { access(addr, bytes, true); }

    // --- init: defined bits ----------------------------------------------------------------------------
    bool defined(uint32_t addr, uint64_t bytes) const {
        if (!init_on()) return true;
        for (uint64_t i = 0; i < bytes; ++i) {
            if (addr + i >= defined_.size() || defined_[addr + i] == 0) return false;
        }
        return true;
    }
    void set_defined(uint32_t addr, uint64_t bytes, bool d) {
        if (!init_on()) return;
        const uint64_t end = addr + bytes < defined_.size() ? addr + bytes : defined_.size();
        if (addr < end) std::memset(&defined_[addr], d ? 1 : 0, static_cast<size_t>(end - addr));
    }
    // dst's bytes take src's defined bits (a copy; the ranges may overlap).
    void copy_defined(uint32_t dst, uint32_t src, uint64_t bytes) {
        if (!init_on() || bytes == 0) return;
        if (dst + bytes > defined_.size() || src + bytes > defined_.size()) return;
        std::memmove(&defined_[dst], &defined_[src], static_cast<size_t>(bytes));
    }
    // A use of UB bytes whose value matters (leaves the core or steers the scalar unit): a finding if any
    // of them was never written.
    void require_defined(uint32_t addr, uint64_t bytes, const char* what) {
        if (!init_on()) return;
        for (uint64_t i = 0; i < bytes; ++i) {
            if (addr + i >= defined_.size() || defined_[addr + i] == 0) {
                char where[160];
                describe(static_cast<uint32_t>(addr + i), 1, where, sizeof where);
                fail("init: %s on %s %s UB byte %llu (%s), which nothing wrote since its buffer was allocated",
                     cur_op_ != nullptr ? cur_op_ : "?", pipe_name(cur_pipe_), what,
                     static_cast<unsigned long long>(addr + i), where);
            }
        }
    }

    // --- synchronization ----------------------------------------------------------------------------------
    // Pipe `p` publishes its clock (the SetFlag half of an edge): later instructions of `p` get a new epoch.
    Edge publish(uint32_t p) {
        if (p != kPipeS) clock_[p].join(clock_[kPipeS]);  // issued in program order, like any instruction
        Edge e;
        e.clock = clock_[p];
        e.clock.e[ix(p)] = epoch_[p];
        ++epoch_[p];
        e.time = cost_.done(p);
        e.valid = true;
        return e;
    }
    // Pipe `p` waits for an edge (the WaitFlag half).
    void wait(uint32_t p, const Edge& e) {
        if (!e.valid) return;
        clock_[p].join(e.clock);
        cost_.wait(p, e.time);
    }
    // Every pipe has passed the launch's n-th SyncAll (sync.h): nothing else changes.
    void pass_barrier(uint32_t n) {
        for (uint32_t p = 0; p < kPipeCount; ++p) {
            if (clock_[p].barriers < n) clock_[p].barriers = n;
        }
    }
    // How many of the launch's SyncAll barriers some pipe of this core is ordered after: each GM access is
    // taken to be after them (program order and flags carry the count; a cube core counts its vector
    // cores' barriers once a flag or a request from them reaches it).
    uint32_t barriers() const {
        uint32_t n = 0;
        for (uint32_t p = 0; p < kPipeCount; ++p) n = n > clock_[p].barriers ? n : clock_[p].barriers;
        return n;
    }

    void set_flag(uint32_t event, uint32_t src, int32_t id, const char* name) {
        cost_.flag_op(src);
        if (id < 0 || static_cast<uint32_t>(id) >= kEventIds) {
            if (sync_on()) fail("sync: SetFlag<%s>(%d): eventID outside 0..7", name, id);
            return;
        }
        if (flag_is_set(event, static_cast<uint32_t>(id)) && sync_on()) {
            fail("sync: SetFlag<%s>(%d) while the same flag is still set (no WaitFlag in between)", name, id);
        }
        new (&flags_[event][id].edge) Edge(publish(src));
        flag_set_[event] = static_cast<uint8_t>(flag_set_[event] | (1u << id));
    }
    void wait_flag(uint32_t event, uint32_t dst, int32_t id, const char* name) {
        cost_.flag_op(dst);
        if (id < 0 || static_cast<uint32_t>(id) >= kEventIds) {
            if (sync_on()) fail("sync: WaitFlag<%s>(%d): eventID outside 0..7", name, id);
            return;
        }
        if (!flag_is_set(event, static_cast<uint32_t>(id))) {
            if (sync_on()) {
                fail("sync: WaitFlag<%s>(%d) with no SetFlag before it: the pipe would wait forever", name, id);
            }
            return;
        }
        wait(dst, flags_[event][id].edge);
        flag_set_[event] = static_cast<uint8_t>(flag_set_[event] & ~(1u << id));
    }
    // PipeBarrier<PIPE_ALL> (and what SyncAll implies): every pipe waits for every other.
    void barrier_all(double extra_cycles) {
        Edge all;
        all.valid = true;
        for (uint32_t p = 0; p < kPipeCount; ++p) {
            Edge e = publish(p);
            all.clock.join(e.clock);
            all.time = all.time > e.time ? all.time : e.time;
        }
        all.time += extra_cycles;
        for (uint32_t p = 0; p < kPipeCount; ++p) wait(p, all);
    }
    // PipeBarrier<PIPE_X> for one pipe: same-pipe order is already modelled; it costs a drain.
    void barrier_pipe(uint32_t p) { cost_.drain(p); }

    // At the kernel's end: explicit flags still set are a sync finding (SetFlag/WaitFlag must be paired).
    void finish(const char* const* event_names) {
        if (!sync_on()) return;
        for (uint32_t ev = 0; ev < kEvents; ++ev) {
            for (uint32_t id = 0; id < kEventIds; ++id) {
                if (flag_is_set(ev, id)) {
                    fail("sync: SetFlag<%s>(%u) was never waited for (flags left set at kernel end)",
                         event_names[ev], id);
                }
            }
        }
    }

    // --- UB regions, for messages ------------------------------------------------------------------------
    void add_region(uint32_t addr, uint32_t len, const char* kind, uint32_t index) {
        regions_.push_back(UbRegion{addr, len, kind, index});
        const uint64_t end = static_cast<uint64_t>(addr) + len;
        if (race_on() && shadow_.size() < end / kGranule + 1) shadow_.resize(end / kGranule + 1, Granule{});
        if (init_on()) {
            if (defined_.size() < end) defined_.resize(end, 0);
            set_defined(addr, len, false);
        }
    }
    void reset_regions() { regions_.clear(); }
    void describe(uint32_t addr, uint64_t bytes, char* out, size_t n) const {
        for (auto it = regions_.rbegin(); it != regions_.rend(); ++it) {
            if (addr >= it->addr && addr < it->addr + it->len) {
                std::snprintf(out, n, "%s buffer %u at UB [%u, %u), bytes [%u, %llu)", it->kind, it->index,
                              it->addr, it->addr + it->len, addr,
                              static_cast<unsigned long long>(addr + bytes));
                return;
            }
        }
        std::snprintf(out, n, "UB bytes [%u, %llu)", addr, static_cast<unsigned long long>(addr + bytes));
    }

private:
    static uint32_t tag(uint32_t p, uint32_t epoch) { return (p << kEpochBits) | (epoch & ((1u << kEpochBits) - 1)); }
    static uint32_t tag_pipe(uint32_t t) { return t >> kEpochBits; }
    static uint32_t tag_epoch(uint32_t t) { return t & ((1u << kEpochBits) - 1); }

    uint32_t ix(uint32_t p) const { return slot_ * kPipeCount + p; }

    // Is the access tagged `t` ordered before pipe p's current instruction?
    bool ordered(uint32_t t, uint32_t p) const {
        const uint32_t q = tag_pipe(t);
        return q == p || tag_epoch(t) <= clock_[p].e[ix(q)];
    }

    void access(uint32_t addr, uint64_t bytes, bool write) {
        if (bytes == 0 || !race_on()) return;
        const uint32_t p = cur_pipe_;
        LogEntry& le = log_[static_cast<size_t>(p) * kLogSize + (log_next_[p]++ % kLogSize)];
        le.op = cur_op_;
        le.epoch = epoch_[p];
        le.lo = addr;
        le.hi = static_cast<uint32_t>(addr + bytes);
        le.write = write;
        const uint32_t me = tag(p, epoch_[p]);
        const uint64_t g0 = addr / kGranule, g1 = (addr + bytes - 1) / kGranule;
        for (uint64_t g = g0; g <= g1 && g < shadow_.size(); ++g) {
            Granule& s = shadow_[g];
            if (s.w != 0 && !ordered(s.w, p)) report(s.w, true, addr, bytes, write, g);
            if (write) {
                // k = 0 is the scalar unit's reads: a load completes before the scalar unit issues anything
                // after it (it is in order and blocks on the value), so it is ordered before every later
                // instruction. Scalar *stores* are buffered and need S_X flags (the S_MTE3 example of
                // SetFlag-WaitFlag(ISASI).md).
                for (uint32_t k = 1; k < 3; ++k) {
                    if (s.r[k] != 0 && !ordered(s.r[k], p)) report(s.r[k], false, addr, bytes, write, g);
                }
                s.w = me;
                s.r[0] = s.r[1] = s.r[2] = 0;
            } else {
                const int k = reader_slot(p);
                if (k >= 0) s.r[k] = me;
            }
        }
    }

    [[noreturn]] void report(uint32_t other, bool other_write, uint32_t addr, uint64_t bytes, bool write,
                             uint64_t granule) {
        const uint32_t q = tag_pipe(other), e = tag_epoch(other);
        const uint32_t glo = static_cast<uint32_t>(granule * kGranule), ghi = glo + kGranule;
        // The newest remembered instruction of pipe q in that epoch that touched the granule.
        const LogEntry* found = nullptr;
        const uint32_t n = log_next_[q] < kLogSize ? log_next_[q] : kLogSize;
        for (uint32_t k = 1; k <= n; ++k) {
            const LogEntry& c = log_[static_cast<size_t>(q) * kLogSize + ((log_next_[q] - k) % kLogSize)];
            if (c.epoch == e && c.write == other_write && c.lo < ghi && glo < c.hi) {
                found = &c;
                break;
            }
        }
        char mine[160], theirs[160];
        describe(addr, bytes, mine, sizeof mine);
        if (found != nullptr) {
            describe(found->lo, found->hi - found->lo, theirs, sizeof theirs);
        } else {
            std::snprintf(theirs, sizeof theirs, "UB bytes [%u, %u) (instruction no longer in the log)", glo, ghi);
        }
        fail("race: %s on %s %s %s, and the earlier %s on %s %s %s, with no synchronization between %s and %s",
             cur_op_ != nullptr ? cur_op_ : "?", pipe_name(cur_pipe_), write ? "writes" : "reads", mine,
             found != nullptr && found->op != nullptr ? found->op : "instruction", pipe_name(q),
             other_write ? "wrote" : "read", theirs, pipe_name(q), pipe_name(cur_pipe_));
    }

    uint32_t checks_ = kCheckMem;
    uint32_t slot_ = 0;
    CostModel cost_;
    Clock clock_[kPipeCount];
    uint32_t epoch_[kPipeCount] = {};
    std::vector<Granule> shadow_;
    std::vector<uint8_t> defined_;
    std::unique_ptr<LogEntry[]> log_;
    uint32_t log_next_[kPipeCount] = {};
    // The edge of each set flag (SetFlag without its WaitFlag yet). Only a set flag's slot is ever read,
    // so the slots (28 KiB) are not initialized: zeroing them cost more than a small core's whole run.
    union FlagSlot {
        FlagSlot() {}
        Edge edge;
    };
    static_assert(kEventIds <= 8, "one bit per eventID in flag_set_");
    FlagSlot flags_[kEvents][kEventIds];
    uint8_t flag_set_[kEvents] = {};  // bit `id` of entry `event`: that flag is set
    bool flag_is_set(uint32_t event, uint32_t id) const { return ((flag_set_[event] >> id) & 1u) != 0; }
    std::vector<UbRegion> regions_;
    const char* cur_op_ = nullptr;
    uint32_t cur_pipe_ = kPipeS;
};

inline Pipeline& pipeline() { return *block().pipeline; }

// The GM side of the init check (gm_access in dsnpu_sim_kernel.h, ABI 2), and the GM race check of the
// block's cores (gm_race, gm_race.h): every GM store of the layer's
// operations marks its bytes written, every GM load asks the simulator whether something (a copy, memset,
// collective or kernel store) wrote them since allocation; if not, the simulator records an "init: " finding
// naming `op` and the block ends. Off unless DSNPU_SIM_CHECK has init and the simulator passes the callback.
// The GM side of the race check between the cores of a mix block (mix.h).
void gm_race(BlockState& b, const char* op, const void* p, uint64_t bytes, bool write);
// The data cache side of the race check (dcache.h): a read of bytes a SetValue left in a data cache
// the reader goes around; `scalar` for the core's own scalar unit (GetValue), which reads its cache.
void dcache_read(BlockState& b, const char* op, const void* p, uint64_t bytes, bool scalar);

inline void gm_access(const char* op, const void* p, uint64_t bytes, bool write, bool scalar = false) {
    if (bytes == 0) return;
    BlockState& b = block();
    if (b.gm_races != nullptr && b.pipeline != nullptr && b.pipeline->race_on()) gm_race(b, op, p, bytes, write);
    if (!write && b.dcache != nullptr) dcache_read(b, op, p, bytes, scalar);
    if (b.ctx->gm_access == nullptr || b.pipeline == nullptr || !b.pipeline->init_on()) return;
    if (b.ctx->gm_access(b.ctx->sim, op, p, static_cast<size_t>(bytes), write ? 1 : 0) != 0) throw BlockAbort{};
}
// The L2 model's verdict on GM bytes [p, p + bytes) that the next instruction moves (cost.h): updates
// the core's slice and (with `count`) the HBM counters; time the instruction with
// `pipeline().cost().mte_cycles(split)`. Scalar GlobalTensor accesses pass `count` false: they are not in
// the GM counters either, and the HBM counters are the HBM side of those.
// The access is also recorded for the launch's die-wide replay (l2_die.h), which sets the launch's HBM
// counters; the block's own counters keep its slice's misses.
inline L2Split l2_access(const void* p, uint64_t bytes, bool write, bool count = true) {
    BlockState& b = block();
    L2Split s;
    const uint64_t addr = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    if (b.l2 != nullptr) {
        s = b.l2->access(addr, bytes, write, b.launch_l2 != nullptr ? b.launch_l2->view() : nullptr);
    } else {
        s.miss = bytes;
        s.write = write;
    }
    if (b.launch_l2 != nullptr) {
        const uint32_t slot = b.group == nullptr || b.kind == CoreKind::kAic ? 0u : 1u + b.sub_block;
        // A counted write is a transfer out of UB or L0C, which the core's atomic mode governs.
        const AtomicOp atomic = write && count ? b.atomic_op : AtomicOp::kNone;
        const double now = b.pipeline != nullptr ? b.pipeline->cost().progress() : 0.0;
        // The barriers this access is after: the core's own SyncAll count, or more on a cube core whose
        // vector cores passed theirs (SyncAll<true>) and told it so.
        const uint32_t passed = b.pipeline != nullptr ? b.pipeline->barriers() : 0;
        const uint32_t epoch = passed > b.epoch ? passed : b.epoch;
        b.launch_l2->record(b.ctx->block_idx, slot, addr, bytes, write, count, epoch, now, static_cast<uint8_t>(atomic));
    }
    if (!count) return s;
    if (write) {
        b.counters->hbm_write_bytes += s.miss;
    } else {
        b.counters->hbm_read_bytes += s.miss;
    }
    return s;
}
inline void add_split(L2Split& into, const L2Split& s) {
    into.hit += s.hit;
    into.miss += s.miss;
    into.write = s.write;  // the pieces of one transfer go one way
}

inline void gm_read(const char* op, const void* p, uint64_t bytes) { gm_access(op, p, bytes, false); }
inline void gm_wrote(const char* op, const void* p, uint64_t bytes) { gm_access(op, p, bytes, true); }

// Shorthands for the instruction hooks of the other headers.
inline void issue(uint32_t p, const char* op, double busy, double latency = 0) {
    pipeline().issue(p, op, busy, latency);
}

}  // namespace host
}  // namespace dsnpu

#endif
