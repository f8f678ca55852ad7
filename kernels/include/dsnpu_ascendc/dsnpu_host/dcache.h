// The scalar unit's GM data cache of one core, for the race check (DSNPU_SIM_CHECK race).
//
// On the hardware each AIC and AIV reaches GM from its scalar unit (GlobalTensor GetValue / SetValue)
// through a data cache of its own, in 64-byte lines, which DMA (DataCopy, Fixpipe, the Matmul's loads and
// stores) and the other cores go around (the GetValue, SetValue and DataCacheCleanAndInvalid pages of the
// Ascend C docs). A GetValue fills its line, and later GetValues of the line read the cache; a SetValue
// changes only the cached line, which goes out to GM, whole, when DataCacheCleanAndInvalid writes it back.
// The host layer reads and writes GM directly, so for each core it keeps the lines the scalar unit touched,
// with their bytes as the cache holds them, and reports where the hardware would give other bytes:
// - a stale read: a GetValue of cached bytes that GM no longer holds (a DMA of the core, or another core,
//   wrote them after the line was cached);
// - an unpublished write: a DMA of any core of the block, or another core's scalar unit, reads bytes a
//   SetValue left dirty in a cache (or, after a SyncAll, bytes another block's cache held dirty at it);
// - a lost write: a write-back (DataCacheCleanAndInvalid, or the kernel's end) of a line whose bytes
//   changed in GM since they were cached; the line goes out whole and overwrites them (two cores writing one
//   64-byte line with SetValue, or a DMA into a line a SetValue dirtied).
// Bytes are compared, not accesses: a write of the bytes already there changes nothing on the hardware
// either. A line's bytes are taken only where the host may read them (inside a range the simulator
// validated, or the GlobalTensor's buffer, else the accessed bytes), so a change beside them is not seen:
// the check can miss a hazard, never invent one. The cache never evicts (its capacity is not modelled:
// a kernel that counts on an eviction is wrong anyway). GUESS: the kernel's end writes every dirty line
// back. Between blocks, which meet only in SyncAll, a read is checked against the bytes other blocks'
// caches held dirty at the barrier before it (LaunchL2::unpublished); stale reads and lost writes are
// seen whichever core changed GM.
#ifndef DSNPU_ASCENDC_HOST_DCACHE_H
#define DSNPU_ASCENDC_HOST_DCACHE_H

#include <cstdint>
#include <cstring>
#include <unordered_map>

#include "block.h"
#include "pipeline.h"

namespace dsnpu {
namespace host {

// GM bytes [lo, hi), for a finding; empty when lo == hi.
struct GmRange {
    uint64_t lo = 0, hi = 0;
    bool empty() const { return lo >= hi; }
};

class DataCache {
public:
    static constexpr uint64_t kLine = 64;

    void clear() {
        lines_.clear();
        dirty_lines_ = 0;
    }
    bool has_dirty() const { return dirty_lines_ != 0; }

    // A GetValue of GM [a, a + n), whose line may be filled from [lo, hi) (a range holding the access
    // that the host may read). Returns the access if the cache holds some of its bytes as GM no longer
    // does, else an empty range.
    GmRange load(uint64_t a, uint64_t n, uint64_t lo, uint64_t hi) {
        GmRange stale;
        for (uint64_t l = line_of(a); l < a + n; l += kLine) {
            Line& line = lines_[l];
            const uint64_t s = a > l ? a : l, e = a + n < l + kLine ? a + n : l + kLine;
            for (uint64_t x = s; x < e; ++x) {
                const uint64_t bit = uint64_t{1} << (x - l);
                if ((line.valid & bit) != 0 && line.bytes[x - l] != gm_byte(x)) widen(stale, x);
            }
            fill(line, l, lo, hi);
        }
        return stale.empty() ? stale : GmRange{a, a + n};
    }

    // A SetValue of GM [a, a + n), which the host has already written: the bytes are cached and dirty.
    void store(uint64_t a, uint64_t n, uint64_t lo, uint64_t hi) {
        for (uint64_t l = line_of(a); l < a + n; l += kLine) {
            Line& line = lines_[l];
            fill(line, l, lo, hi);
            const uint64_t s = a > l ? a : l, e = a + n < l + kLine ? a + n : l + kLine;
            if (line.dirty == 0) ++dirty_lines_;
            for (uint64_t x = s; x < e; ++x) {
                const uint64_t bit = uint64_t{1} << (x - l);
                line.bytes[x - l] = gm_byte(x);
                line.valid |= bit;
                line.dirty |= bit;
            }
        }
    }

    // The cached bytes of GM [a, a + n) that are dirty: what a reader going around this cache misses.
    GmRange dirty(uint64_t a, uint64_t n) const {
        GmRange d;
        if (dirty_lines_ == 0) return d;
        for (uint64_t l = line_of(a); l < a + n; l += kLine) {
            const auto it = lines_.find(l);
            if (it == lines_.end() || it->second.dirty == 0) continue;
            const uint64_t s = a > l ? a : l, e = a + n < l + kLine ? a + n : l + kLine;
            for (uint64_t x = s; x < e; ++x) {
                if ((it->second.dirty >> (x - l)) & 1u) widen(d, x);
            }
        }
        return d;
    }

    // Every run of dirty bytes, as [lo, hi) ranges within a line, to `out`.
    template <typename F>
    void each_dirty(F&& out) const {
        if (dirty_lines_ == 0) return;
        for (const auto& [l, line] : lines_) {
            uint64_t x = 0;
            while (x < kLine) {
                if (((line.dirty >> x) & 1u) == 0) {
                    ++x;
                    continue;
                }
                const uint64_t s = x;
                while (x < kLine && ((line.dirty >> x) & 1u) != 0) ++x;
                out(l + s, l + x);
            }
        }
    }

    // DataCacheCleanAndInvalid of the bytes from `a` to the end of its line (SINGLE_CACHE_LINE), or of
    // every line (`entire`): a line with dirty bytes there writes all its cached bytes there back, and
    // they leave the cache. Returns the bytes the write-back overwrites that GM holds otherwise.
    GmRange clean(uint64_t a, bool entire) {
        GmRange lost;
        if (entire) {
            for (auto& [l, line] : lines_) write_back(line, l, l, l + kLine, lost);
            clear();
            return lost;
        }
        const uint64_t l = line_of(a);
        const auto it = lines_.find(l);
        if (it == lines_.end()) return lost;
        Line& line = it->second;
        const bool was_dirty = line.dirty != 0;
        write_back(line, l, a, l + kLine, lost);
        const uint64_t keep = (uint64_t{1} << (a - l)) - 1;  // the bytes before `a` stay
        line.valid &= keep;
        line.dirty &= keep;
        if (was_dirty && line.dirty == 0) --dirty_lines_;
        if (line.valid == 0) lines_.erase(it);
        return lost;
    }

private:
    struct Line {
        uint8_t bytes[kLine];
        uint64_t valid = 0, dirty = 0;  // a bit per byte
    };

    static uint64_t line_of(uint64_t a) { return a / kLine * kLine; }
    static uint8_t gm_byte(uint64_t x) {
        uint8_t v;
        std::memcpy(&v, reinterpret_cast<const void*>(static_cast<uintptr_t>(x)), 1);
        return v;
    }
    static void widen(GmRange& r, uint64_t x) {
        if (r.empty()) {
            r.lo = x;
            r.hi = x + 1;
        } else {
            r.hi = x + 1;
        }
    }
    // Caches the bytes of line `l` inside [lo, hi) that it does not hold yet.
    static void fill(Line& line, uint64_t l, uint64_t lo, uint64_t hi) {
        const uint64_t s = lo > l ? lo : l, e = hi < l + kLine ? hi : l + kLine;
        for (uint64_t x = s; x < e; ++x) {
            const uint64_t bit = uint64_t{1} << (x - l);
            if ((line.valid & bit) != 0) continue;
            line.bytes[x - l] = gm_byte(x);
            line.valid |= bit;
        }
    }
    // A write-back of line `l`'s bytes in [s, e) if it has dirty ones there: collects the bytes it
    // would overwrite with others.
    static void write_back(const Line& line, uint64_t l, uint64_t s, uint64_t e, GmRange& lost) {
        const uint64_t span = e - l >= kLine ? ~uint64_t{0} : (uint64_t{1} << (e - l)) - 1;
        const uint64_t mask = span & ~((uint64_t{1} << (s - l)) - 1);
        if ((line.dirty & mask) == 0) return;
        for (uint64_t x = s; x < e; ++x) {
            const uint64_t bit = uint64_t{1} << (x - l);
            if ((line.valid & bit) != 0 && line.bytes[x - l] != gm_byte(x)) widen(lost, x);
        }
    }

    std::unordered_map<uint64_t, Line> lines_;
    uint32_t dirty_lines_ = 0;
};

// --- the hooks of the GM accesses (pipeline.h, tensor.h, sync.h, entry.h) --------------------------------

// The SyncAll barriers the core's current access is after (as l2_access counts them).
inline uint32_t dcache_epoch(const BlockState& b) {
    const uint32_t passed = b.pipeline != nullptr ? b.pipeline->barriers() : 0;
    return passed > b.epoch ? passed : b.epoch;
}

// The core is at a SyncAll (before its b.epoch + 1-th barrier): the bytes its SetValues left dirty are
// what other blocks cannot see after the barrier (LaunchL2::unpublished).
inline void dcache_at_barrier(BlockState& b) {
    if (b.dcache == nullptr || b.launch_l2 == nullptr || !b.dcache->has_dirty()) return;
    b.dcache->each_dirty([&](uint64_t lo, uint64_t hi) { b.launch_l2->unpublished(b.ctx->block_idx, b.epoch + 1, lo, hi); });
}

// A read of GM [p, p + bytes) by `op` of the core: a finding if a data cache it goes around (every cache
// of the block for a DMA; the other cores' for a GetValue, which reads its own) holds some of the bytes
// dirty, or another block's held them at the SyncAll before (dcache_at_barrier).
inline void dcache_read(BlockState& b, const char* op, const void* p, uint64_t bytes, bool scalar) {
    const uint64_t a = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    const uint32_t cores = b.group != nullptr ? kCoreSlots : 1;
    const uint32_t me = b.pipeline->slot();
    for (uint32_t k = 0; k < cores; ++k) {
        if (scalar && k == me) continue;
        const DataCache* c = b.group != nullptr ? mix_dcache(b.group, k) : b.dcache;
        const GmRange d = c->dirty(a, bytes);
        if (d.empty()) continue;
        fail("race: %s of %s reads GM bytes [%#llx, %#llx), which a GlobalTensor::SetValue of %s left in "
             "its data cache: a SetValue reaches GM only when DataCacheCleanAndInvalid writes its line back",
             op, core_name(me, b.group != nullptr), static_cast<unsigned long long>(d.lo),
             static_cast<unsigned long long>(d.hi), core_name(k, b.group != nullptr));
    }
    uint32_t writer = 0;
    uint64_t lo = 0, hi = 0;
    if (b.launch_l2 != nullptr &&
        b.launch_l2->unpublished_read(b.ctx->block_idx, dcache_epoch(b), a, bytes, &writer, &lo, &hi)) {
        fail("race: %s of %s reads GM bytes [%#llx, %#llx), which a GlobalTensor::SetValue of block %u left in "
             "a data cache at the SyncAll before: a SetValue reaches GM only when DataCacheCleanAndInvalid "
             "writes its line back, and another block sees it only after the next SyncAll",
             op, core_name(me, b.group != nullptr), static_cast<unsigned long long>(lo),
             static_cast<unsigned long long>(hi), writer);
    }
}

// The bytes the core's data cache may take with an access to [a, a + n) of a GlobalTensor whose buffer
// is [lo, hi) (hi == lo: unsized): the whole line if the simulator validated it for the block, else the
// line's part of the buffer if validated, else the access.
inline GmRange dcache_fill_range(BlockState& b, uint64_t a, uint64_t n, uint64_t lo, uint64_t hi) {
    const uint64_t l = a / DataCache::kLine * DataCache::kLine;
    if (n <= DataCache::kLine && a + n <= l + DataCache::kLine) {
        if (gm_validated(b, static_cast<uintptr_t>(l), DataCache::kLine)) return GmRange{l, l + DataCache::kLine};
        const uint64_t s = lo > l ? lo : l, e = hi < l + DataCache::kLine ? hi : l + DataCache::kLine;
        if (s <= a && a + n <= e && gm_validated(b, static_cast<uintptr_t>(s), e - s)) return GmRange{s, e};
    }
    return GmRange{a, a + n};
}

// A GetValue of GM [p, p + n) (race check on): a finding if the core's data cache holds some of the
// bytes from before GM changed.
inline void dcache_get(const char* op, const void* p, uint64_t n, uint64_t lo, uint64_t hi) {
    BlockState& b = block();
    if (b.dcache == nullptr) return;
    const uint64_t a = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    const GmRange f = dcache_fill_range(b, a, n, lo, hi);
    const GmRange stale = b.dcache->load(a, n, f.lo, f.hi);
    if (stale.empty()) return;
    fail("race: %s of %s reads GM bytes [%#llx, %#llx) from its data cache, which took them before they "
         "changed in GM (a DMA or another core wrote them since): DataCacheCleanAndInvalid the line before "
         "reading it again",
         op, core_name(b.pipeline->slot(), b.group != nullptr), static_cast<unsigned long long>(stale.lo),
         static_cast<unsigned long long>(stale.hi));
}

// A SetValue of GM [p, p + n), which the host has written (race check on): the bytes are dirty in the
// core's data cache until a write-back.
inline void dcache_set(const void* p, uint64_t n, uint64_t lo, uint64_t hi) {
    BlockState& b = block();
    if (b.dcache == nullptr) return;
    const uint64_t a = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    const GmRange f = dcache_fill_range(b, a, n, lo, hi);
    b.dcache->store(a, n, f.lo, f.hi);
}

inline void dcache_lost(BlockState& b, const GmRange& lost, const char* when) {
    if (lost.empty()) return;
    fail("race: the data cache of %s writes a 64-byte line back at %s, overwriting GM bytes [%#llx, %#llx) "
         "that changed after it took the line (another core, or a DMA, wrote them): lines written with "
         "SetValue must not be shared",
         core_name(b.pipeline->slot(), b.group != nullptr), when, static_cast<unsigned long long>(lost.lo),
         static_cast<unsigned long long>(lost.hi));
}

// DataCacheCleanAndInvalid of the line holding `p` (from p on), or of the whole cache.
inline void dcache_clean(const void* p, bool entire) {
    BlockState& b = block();
    if (b.dcache == nullptr) return;
    const uint64_t a = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    dcache_lost(b, b.dcache->clean(a, entire), "DataCacheCleanAndInvalid");
}

// The kernel body returned: every dirty line goes back (GUESS, as above).
inline void dcache_end() {
    BlockState& b = block();
    if (b.dcache == nullptr || !b.dcache->has_dirty()) return;
    dcache_lost(b, b.dcache->clean(0, true), "the kernel's end");
}

}  // namespace host
}  // namespace dsnpu

#endif
