// The GM race check of one AI Core (DSNPU_SIM_CHECK race): an interval map of GM bytes with the last
// instruction that wrote them and each core's last one that read them, tagged (core, pipe, epoch) as the
// pipelines' vector clocks are (pipeline.h). An access is a finding when it overlaps an earlier one, one
// of them a write, that its pipe is not ordered after:
// - between the cores of a mix block (mix.h): no cross-core flag chain from one to the other;
// - inside one core, plain or mix: another pipe, with no flag from that pipe to this one. The pipes of an
//   AI Core run independently, so an MTE2 load of GM bytes the core's MTE3 stored needs an MTE3_MTE2
//   flag, and a scalar GetValue of them an MTE3_S one (GetValue-SetValue docs: the MTE writes go around
//   the scalar unit's data cache). Instructions of one pipe are in order.
// Two atomic transfers of one operation (atomic.h) need no order between them.
// Blocks are checked against each other at the end of the launch instead (l2_die.h), since they meet
// only in SyncAll. Each range remembers one write and one read per core (the latest), so a read that a
// later read of the same core replaced is not checked against later writes: the check can miss a race,
// never invent one.
#ifndef DSNPU_ASCENDC_HOST_GM_RACE_H
#define DSNPU_ASCENDC_HOST_GM_RACE_H

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "pipeline.h"

namespace dsnpu {
namespace host {

// One GM access remembered for the race check.
struct GmTag {
    const char* op = nullptr;
    uint32_t epoch = 0;
    uint8_t slot = 0, pipe = 0;
    uint8_t atomic = 0;  // a write's AtomicOp (atomic.h): 0 for a store
    bool valid = false;
};

// A GM byte range with the same history: its last write and each core's last read.
struct GmSeg {
    uint64_t end = 0;
    GmTag w;
    GmTag r[kCoreSlots];
};

class GmRaces {
public:
    void clear() { segs_.clear(); }

    // Core `slot`'s current instruction (pipe `pipe`, epoch `epoch`, ordered after `clock`) accesses GM
    // [a, a + len); `atomic`: the AtomicOp of an atomic transfer, which needs no order with earlier ones
    // of its operation. `mix`: the core is one of a mix block's (slot names AIC / AIV 0 / AIV 1). Returns
    // an empty string or the race finding.
    std::string access(uint32_t slot, uint32_t pipe, uint32_t epoch, const Clock& clock, const char* op, uint64_t a,
                       uint64_t len, bool write, uint8_t atomic, bool mix) {
        const uint64_t b = a + len;
        split(a);
        split(b);
        GmTag me;
        me.op = op;
        me.epoch = epoch;
        me.slot = static_cast<uint8_t>(slot);
        me.pipe = static_cast<uint8_t>(pipe);
        me.atomic = atomic;
        me.valid = true;
        uint64_t cur = a;
        auto it = segs_.lower_bound(a);
        while (cur < b) {
            if (it == segs_.end() || it->first > cur) {
                GmSeg fresh;
                fresh.end = (it == segs_.end() || it->first > b) ? b : it->first;
                it = segs_.emplace_hint(it, cur, fresh);
            }
            GmSeg& s = it->second;
            const bool commute = atomic != 0 && s.w.atomic == atomic;
            if (!commute && !ordered(s.w, me, clock)) return race(me, write, s.w, true, it->first, s.end, mix);
            if (write) {
                for (uint32_t k = 0; k < kCoreSlots; ++k) {
                    if (!ordered(s.r[k], me, clock)) return race(me, write, s.r[k], false, it->first, s.end, mix);
                }
                s.w = me;
                for (uint32_t k = 0; k < kCoreSlots; ++k) s.r[k] = GmTag{};
            } else {
                s.r[slot] = me;
            }
            cur = s.end;
            ++it;
        }
        return std::string();
    }

private:
    void split(uint64_t at) {
        auto it = segs_.upper_bound(at);
        if (it == segs_.begin()) return;
        --it;
        if (it->first < at && at < it->second.end) {
            GmSeg right = it->second;
            it->second.end = at;
            segs_.emplace(at, right);
        }
    }
    // Whether `me`, ordered after `clock`, comes after the earlier access `t`: the same pipe of the same
    // core (in order), or a flag chain from t's pipe.
    static bool ordered(const GmTag& t, const GmTag& me, const Clock& clock) {
        if (!t.valid || (t.slot == me.slot && t.pipe == me.pipe)) return true;
        return t.epoch <= clock.e[t.slot * kPipeCount + t.pipe];
    }
    static std::string race(const GmTag& me, bool write, const GmTag& other, bool other_write, uint64_t lo,
                            uint64_t hi, bool mix) {
        char between[96];
        if (other.slot == me.slot) {
            std::snprintf(between, sizeof between, "no flag from %s to %s of %s", pipe_name(other.pipe),
                          pipe_name(me.pipe), core_name(me.slot, mix));
        } else {
            std::snprintf(between, sizeof between, "no cross-core flag between %s and %s",
                          core_name(other.slot, mix), core_name(me.slot, mix));
        }
        char msg[512];
        std::snprintf(msg, sizeof msg,
                      "race: %s on %s of %s %s GM bytes [%#llx, %#llx), and the earlier %s on %s of %s %s them, with "
                      "%s",
                      me.op != nullptr ? me.op : "?", pipe_name(me.pipe), core_name(me.slot, mix),
                      write ? "writes" : "reads", static_cast<unsigned long long>(lo),
                      static_cast<unsigned long long>(hi), other.op != nullptr ? other.op : "?",
                      pipe_name(other.pipe), core_name(other.slot, mix), other_write ? "wrote" : "read", between);
        return msg;
    }

    std::map<uint64_t, GmSeg> segs_;
};

// The current instruction of the core accesses GM [p, p + bytes): checked in its block's map (a mix
// group's, shared by its three cores, or a plain block's own).
inline void gm_race(BlockState& b, const char* op, const void* p, uint64_t bytes, bool write) {
    Pipeline& pl = *b.pipeline;
    const uint32_t pipe = pl.cur_pipe();
    // The core's atomic mode governs its transfers out of UB (MTE3) and L0C (FIX).
    const uint8_t atomic =
        write && (pipe == kPipeMte3 || pipe == kPipeFix) ? static_cast<uint8_t>(b.atomic_op) : uint8_t{0};
    const std::string r = b.gm_races->access(pl.slot(), pipe, pl.epoch(pipe), pl.clock(pipe), op,
                                             static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)), bytes, write,
                                             atomic, b.group != nullptr);
    if (!r.empty()) fail_msg(r.c_str());
}

}  // namespace host
}  // namespace dsnpu

#endif
