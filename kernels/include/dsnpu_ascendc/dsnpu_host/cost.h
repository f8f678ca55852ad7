// The cycle model of one block: each pipe an in-order server, instructions issued by the scalar unit in
// program order, edges between pipes only where the kernel synchronizes (pipeline.h feeds it the same
// flags the race checker sees). A block's time is when its last pipe finishes, so double buffering
// overlaps copy and compute exactly when the kernel's flags allow it.
//
// The table (cycles of the AI Core clock, 1.8 GHz on 910B2). Sources: the public Ascend C documentation
// (256-byte vector repeats, 16x16x16 cube fractals, 32-byte DataCopy granule), the roofline figures of
// kernels/src/roofline.rs (HBM ~1.6 TB/s per die, 24 cube / 48 vector cores). Numbers marked GUESS are not
// published; they are order-of-magnitude estimates to be replaced by measurements on an NPU.
//
// | instruction | pipe | busy cycles | latency |
// |---|---|---|---|
// | vector op (Add, Mul, Muls, Max, Cast, Duplicate, UB->UB copy) | V | 8 (GUESS, issue) + repeats * 1 | - |
// | Div, Sqrt, Rsqrt, Reciprocal | V | 8 + repeats * 2 (GUESS) | - |
// | Exp, Ln | V | 8 + repeats * 4 (GUESS) | - |
// | ReduceSum / ReduceMax | V | 8 + repeats + 16 (GUESS: log-tree tail) | - |
// | Gather | V | 8 + ceil(count / 8) (GUESS) | - |
// | GetValue / SetValue on UB | S | 2 (GUESS) | - |
// | GlobalTensor GetValue / SetValue | S | 100 (GUESS: scalar cache miss to GM); 30 on an L2 hit (GUESS) | - |
// | DataCopy GM->UB / UB->GM | MTE2 / MTE3 | miss bytes / share + hit bytes / l2_share | 500 (GUESS, GM latency) |
// | Matmul base step | MTE2 (A, B), M, FIX (C) | fractals: 1 per cycle for 16-bit, 2 for int8, 1/2 for f32 (GUESS) | - |
// | SetFlag / WaitFlag | the pipe | 1 | - |
// | PipeBarrier<PIPE_X> | X | drains X, +10 (GUESS) | - |
// | PipeBarrier<PIPE_ALL> | all | drains all, +10 | - |
// | SyncAll | all | drains all, +2000 (GUESS: GM-flag barrier across cores) | - |
// `share` = HBM bytes per cycle (1.6e12 / 1.8e9) divided among the launch's concurrently running blocks
// (at most 48), capped at 128 bytes per cycle per core (GUESS). Launch latency (3 us, GUESS) is added by
// the reader of the counters (kernels/src/cost_model.rs), not here.
//
// L2 (L2Slice below). Every GM transfer (MTE2 / MTE3 DataCopy, the Matmul's A/B loads and its Fixpipe
// store, scalar GlobalTensor access) is looked up line by line in an L2 model before it is timed:
// - capacity 192 MiB per die (910B2, CANN platform_config via the project's ascend-facts), lines of
//   512 bytes (the 910B/910C GM access granule; third-party reports of Huawei's Ascend 950 announcement
//   say the granule "shrinks from 512 bytes to 128 bytes"), 16-way set-associative (GUESS: not published),
//   set = line number modulo the set count, LRU within a set.
// - lines hold 16 sectors of 32 bytes (the DataCopy granule) with a valid and a dirty bit each; the unit of
//   HBM traffic is the sector (GUESS: the L2's fill and write-back granule is not published; whole 512-byte
//   line fills would cost more for scattered small accesses, less tag work for nothing else).
// - reads: bytes in valid sectors are hits; a sector that is not valid is fetched whole from HBM (32 bytes
//   charged as a miss, even if fewer were asked for) and becomes valid, allocating its line (LRU victim).
//   So a buffer read once costs its bytes rounded out to sectors: HBM bytes can exceed GM bytes for tiny or
//   unaligned reads, and equal them for aligned streams.
// - writes: write-allocate, write-back. A sector that a write makes dirty is charged once as 32 bytes of
//   HBM write at that moment (it is written back exactly once, whenever that happens: at its eviction or
//   after the launch); bytes rewritten in a sector already dirty are L2 hits. A line evicted and dirtied
//   again is charged again. A written sector is valid for later reads.
// - hits cost `l2_share` = min(128 bytes per cycle per core, 3072 bytes per cycle of the whole L2 divided
//   among the concurrent blocks). GUESS: no L2 bandwidth is published; 128 B/cycle is the MTE cap above
//   and 3072 = 24 AI Cores x 128 B/cycle (~5.5 TB/s at 1.8 GHz), i.e. the L2 is assumed to serve every AI
//   Core's port at full rate, ~3.5x HBM. The transfer latency stays 500 cycles whether it hits or not.
// - determinism: the real L2 is shared by all cores. The model gives each core an equal private slice
//   instead (192 MiB / the launch's concurrent blocks, at most 48; a 1:2 mix block's slice is split in three
//   for its AIC and two AIVs), looked up in that core's program order, so the same launch always gets
//   the same hits and cycles whatever the host threads' interleaving. Consequences: data read by several
//   blocks (or by the AIC and the AIVs of one mix block) misses once per core instead of once per die
//   (pessimistic), and a slice starts empty at every block: nothing is carried between the blocks of a
//   launch or between launches.
#ifndef DSNPU_ASCENDC_HOST_COST_H
#define DSNPU_ASCENDC_HOST_COST_H

#include <cmath>
#include <cstdint>
#include <cstdlib>

namespace dsnpu {
namespace host {

namespace cost {
constexpr double kClockHz = 1.8e9;
constexpr double kHbmBytesPerCycle = 1.6e12 / kClockHz;
constexpr double kMaxMteBytesPerCycle = 128;
constexpr uint32_t kMaxConcurrentCores = 48;
constexpr double kMteLatency = 500;
constexpr double kVecIssue = 8;
constexpr double kScalarUb = 2;
constexpr double kScalarGm = 100;
constexpr double kFlag = 1;
constexpr double kBarrier = 10;
constexpr double kSyncAll = 2000;
constexpr uint32_t kRepeatBytes = 256;
constexpr double kScalarGmHit = 30;
constexpr uint64_t kL2Bytes = 192ull << 20;
constexpr uint64_t kL2Line = 512;
constexpr uint64_t kL2Sector = 32;
constexpr uint32_t kL2Ways = 16;
constexpr double kL2BytesPerCycle = 24 * 128;

// Cycles per 256-byte repeat by instruction class.
enum class VecClass { kSimple, kDivSqrt, kTranscendental, kReduce };
inline double per_repeat(VecClass c) {
    switch (c) {
        case VecClass::kDivSqrt: return 2;
        case VecClass::kTranscendental: return 4;
        default: return 1;
    }
}
inline double vector(uint64_t bytes, VecClass c) {
    const double repeats = std::ceil(static_cast<double>(bytes) / kRepeatBytes);
    return kVecIssue + repeats * per_repeat(c) + (c == VecClass::kReduce ? 16 : 0);
}
}  // namespace cost

// Bytes of one GM transfer that hit the L2 model, and bytes it moves to or from HBM (whole 32-byte sectors
// fetched by read misses, or sectors it dirties).
struct L2Split {
    uint64_t hit = 0;
    uint64_t miss = 0;
};

// One core's slice of the L2 (see the table above): a fixed tag array allocated once per core, zero
// pages until touched (calloc), no allocation per access.
class L2Slice {
public:
    explicit L2Slice(uint64_t capacity) {
        sets_ = capacity / (cost::kL2Line * cost::kL2Ways);
        if (sets_ == 0) sets_ = 1;
        lines_ = static_cast<Line*>(std::calloc(sets_ * cost::kL2Ways, sizeof(Line)));
    }
    ~L2Slice() { std::free(lines_); }
    L2Slice(const L2Slice&) = delete;
    L2Slice& operator=(const L2Slice&) = delete;

    uint64_t capacity() const { return sets_ * cost::kL2Ways * cost::kL2Line; }

    // Looks up GM bytes [addr, addr + len) in address order, updates the slice, returns the split.
    // Without a tag array (the allocation failed) everything misses.
    L2Split access(uint64_t addr, uint64_t len, bool write) {
        L2Split r;
        if (len == 0) return r;
        if (lines_ == nullptr) {
            r.miss = len;
            return r;
        }
        uint64_t a = addr;
        const uint64_t end = addr + len;
        while (a < end) {
            const uint64_t line = a / cost::kL2Line;
            const uint64_t line_end = (line + 1) * cost::kL2Line;
            const uint64_t stop = end < line_end ? end : line_end;
            Line& l = find(line);
            uint64_t s = a;
            while (s < stop) {
                const uint64_t sector = (s % cost::kL2Line) / cost::kL2Sector;
                const uint64_t sec_end = line * cost::kL2Line + (sector + 1) * cost::kL2Sector;
                const uint64_t t = stop < sec_end ? stop : sec_end;
                const uint16_t bit = static_cast<uint16_t>(1u << sector);
                const uint16_t have = write ? l.dirty : l.valid;
                if (have & bit) {
                    r.hit += t - s;
                } else {
                    r.miss += cost::kL2Sector;
                    l.valid = static_cast<uint16_t>(l.valid | bit);
                    if (write) l.dirty = static_cast<uint16_t>(l.dirty | bit);
                }
                s = t;
            }
            a = stop;
        }
        return r;
    }

private:
    struct Line {
        uint64_t tag;    // line number + 1; 0 = empty
        uint64_t stamp;  // last use, for LRU
        uint16_t valid;  // one bit per 32-byte sector: in L2
        uint16_t dirty;  // one bit per 32-byte sector: written since it came in
    };
    // The way holding `line`, or the set's least recently used way, emptied and retagged.
    Line& find(uint64_t line) {
        Line* set = lines_ + (line % sets_) * cost::kL2Ways;
        Line* victim = nullptr;
        ++clock_;
        for (uint32_t w = 0; w < cost::kL2Ways; ++w) {
            if (set[w].tag == line + 1) {
                set[w].stamp = clock_;
                return set[w];
            }
            // The first empty way, else the oldest.
            if (set[w].tag == 0) {
                if (victim == nullptr || victim->tag != 0) victim = &set[w];
            } else if (victim == nullptr || (victim->tag != 0 && set[w].stamp < victim->stamp)) {
                victim = &set[w];
            }
        }
        victim->tag = line + 1;
        victim->stamp = clock_;
        victim->valid = 0;
        victim->dirty = 0;
        return *victim;
    }

    Line* lines_ = nullptr;
    uint64_t sets_ = 1;
    uint64_t clock_ = 0;
};

class CostModel {
public:
    explicit CostModel(uint32_t concurrent_blocks) {
        uint32_t n = concurrent_blocks == 0 ? 1 : concurrent_blocks;
        if (n > cost::kMaxConcurrentCores) n = cost::kMaxConcurrentCores;
        const double share = cost::kHbmBytesPerCycle / n;
        mte_bytes_per_cycle_ = share < cost::kMaxMteBytesPerCycle ? share : cost::kMaxMteBytesPerCycle;
        const double l2 = cost::kL2BytesPerCycle / n;
        l2_bytes_per_cycle_ = l2 < cost::kMaxMteBytesPerCycle ? l2 : cost::kMaxMteBytesPerCycle;
    }

    // An instruction on pipe p: starts when the pipe is free and the scalar unit has issued it.
    void issue(uint32_t p, double busy, double latency) {
        if (p == 0) {
            free_[0] += busy;
            done_[0] = free_[0];
        } else {
            const double start = free_[p] > free_[0] ? free_[p] : free_[0];
            free_[p] = start + busy;
            const double end = free_[p] + latency;
            if (end > done_[p]) done_[p] = end;
        }
        busy_[p] += busy;
    }
    // When everything issued to p so far has completed.
    double done(uint32_t p) const { return done_[p] > free_[p] ? done_[p] : free_[p]; }
    // Pipe p blocks until time t (a WaitFlag; issued by the scalar unit like any instruction).
    void wait(uint32_t p, double t) {
        double s = free_[p] > free_[0] ? free_[p] : free_[0];
        if (t > s) s = t;
        free_[p] = s;
        if (p == 0) done_[0] = s;
    }
    void flag_op(uint32_t p) { issue(p, cost::kFlag, 0); }
    void drain(uint32_t p) { wait(p, done(p) + cost::kBarrier); }

    double mte_cycles(uint64_t bytes) const { return static_cast<double>(bytes) / mte_bytes_per_cycle_; }
    // A transfer split by the L2 model: misses at the HBM share, hits at the L2 share.
    double mte_cycles(const L2Split& s) const {
        return static_cast<double>(s.miss) / mte_bytes_per_cycle_ + static_cast<double>(s.hit) / l2_bytes_per_cycle_;
    }
    double block_cycles() const {
        double t = 0;
        for (uint32_t p = 0; p < kPipes; ++p) t = t > done(p) ? t : done(p);
        return t;
    }
    double busy(uint32_t p) const { return busy_[p]; }

    // Busy fraction of each pipe over the block's time, 8 bits each (pipe p in bits 8p..8p+7), for the
    // counters' pipe_busy_q8 field.
    uint64_t busy_q8() const {
        const double t = block_cycles();
        uint64_t packed = 0;
        for (uint32_t p = 0; p < kPipes; ++p) {
            double f = t > 0 ? busy_[p] / t : 0;
            if (f > 1) f = 1;
            packed |= static_cast<uint64_t>(std::lround(f * 255)) << (8 * p);
        }
        return packed;
    }

private:
    static constexpr uint32_t kPipes = 7;
    double free_[kPipes] = {};  // when the pipe can start its next instruction (S: the issue point)
    double done_[kPipes] = {};  // when everything issued to the pipe has completed
    double busy_[kPipes] = {};
    double mte_bytes_per_cycle_ = 1;
    double l2_bytes_per_cycle_ = 1;
};

}  // namespace host
}  // namespace dsnpu

#endif
