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
// | repeat forms (vector_repeat.h), WholeReduceMax/Sum, Brcb | V | 8 + repeatTime * the class's cycles (GUESS: a reduction per repeat pipelines like an add) | - |
// | Gather | V | 8 + ceil(count / 8) (GUESS) | - |
// | GetValue / SetValue on UB | S | 2 (GUESS) | - |
// | GlobalTensor GetValue / SetValue | S | 100 (GUESS: scalar cache miss to GM); 30 on an L2 hit (GUESS) | - |
// | DataCopy GM->UB / UB->GM | MTE2 / MTE3 | miss bytes / share + hit bytes / l2_share | 500 (GUESS, GM latency) |
// | Matmul base step | MTE2 (A, B), M, FIX (C) | fractals: 1 per cycle for 16-bit, 2 for int8, 1/2 for f32 (GUESS) | - |
// | DataCopy GM->L1 (ND2NZ), Fixpipe L0C->GM | MTE2 / FIX | as DataCopy GM->UB / UB->GM | 500 |
// | LoadData L1->L0A/L0B | MTE1 | bytes / 256 (GUESS) | 30 (GUESS) |
// | Mmad | M | 16x16x16 fractals as the Matmul step | - |
// | SetFlag / WaitFlag | the pipe | 1 | - |
// | PipeBarrier<PIPE_X> | X | drains X, +10 (GUESS) | - |
// | PipeBarrier<PIPE_ALL> | all | drains all, +10 | - |
// | SyncAll | all | drains all, +2000 (GUESS: GM-flag barrier across cores); every block leaves at the latest block's arrival (sync.h) | - |
// `share` = HBM bytes per cycle (1.6e12 / 1.8e9) divided among the launch's concurrently running blocks
// (at most 48), capped at 128 bytes per cycle per core (GUESS). Launch latency (3 us, GUESS) is added by
// the reader of the counters (kernels/src/cost_model.rs), not here.
//
// L2 (L2Slice below). Every GM transfer (MTE2 / MTE3 DataCopy, the Matmul's A/B loads and its Fixpipe
// store, scalar GlobalTensor access) is looked up line by line in an L2 model before it is timed:
// - capacity 192 MiB per die (910B2, CANN platform_config via the project's ascend-facts), lines of
//   512 bytes (the 910B/910C GM access granule; third-party reports of Huawei's Ascend 950 announcement
//   say the granule "shrinks from 512 bytes to 128 bytes"), fully associative with LRU replacement (GUESS:
//   the associativity is not published; a set-associative model would make conflict misses depend on the
//   absolute host addresses the simulator's device memory gets, which change from run to run).
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
//   again is charged again. A written sector is valid for later reads. A write's time is all L2 (every
//   byte at `l2_share`, below): the L2 takes it, and its write-back drains to HBM behind the core's back
//   (CANN's docs on L2 cache hints describe an operator's large output being written back during the
//   next operator); the HBM bytes of those write-backs still count in the launch's HBM total, which the
//   readers of the counters hold against the die's HBM bandwidth (kernels/src/cost_model.rs).
// - hits cost `l2_share` = min(128 bytes per cycle per core, 3072 bytes per cycle of the whole L2 divided
//   among the concurrent blocks). GUESS: no L2 bandwidth is published; 128 B/cycle is the MTE cap above
//   and 3072 = 24 AI Cores x 128 B/cycle (~5.5 TB/s at 1.8 GHz), i.e. the L2 is assumed to serve every AI
//   Core's port at full rate, ~3.5x HBM. The transfer latency stays 500 cycles whether it hits or not.
// - determinism: the real L2 is shared by all cores. The model gives each block an equal private slice
//   instead (192 MiB / the launch's concurrent blocks, at most 48; the AIC and two AIVs of a 1:2 mix block
//   share their block's slice, looked up in the order the block's cooperatively run cores issue), so the
//   same launch always gets the same hits and cycles whatever the host threads' interleaving.
//   Consequences for the timing: data read by several blocks misses once per block instead of once per
//   die (pessimistic), and a slice starts empty at every block: nothing is carried between the blocks of
//   a launch or between launches. Except across a SyncAll: at each barrier the sectors every core wrote
//   so far go into a view of the die's L2 (l2_die.h, LaunchL2::reach), and until the next one a read
//   that misses a block's slice but finds its sectors in that view is a hit (another block wrote them
//   before the barrier: a split-KV decode's partials, which its combine reads). Data blocks only read
//   still misses once per block.
// - the launch's HBM counters: every core also records its lookups, and when the launch ends they are
//   replayed in a fixed order through one L2 of the die's 192 MiB (l2_die.h), so data several blocks
//   share misses once per launch there. Each block's own counters keep its slice's misses. Still
//   nothing is carried between launches.
#ifndef DSNPU_ASCENDC_HOST_COST_H
#define DSNPU_ASCENDC_HOST_COST_H

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

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
constexpr double kL2BytesPerCycle = 24 * 128;
constexpr double kMte1BytesPerCycle = 256;
constexpr double kMte1Latency = 30;

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
// A repeat-form instruction (vector_repeat.h): one 256-byte step per repeat, whatever its mask.
inline double repeats(uint64_t n, VecClass c) { return kVecIssue + static_cast<double>(n) * per_repeat(c); }
}  // namespace cost

// Bytes of one GM transfer that hit the L2 model, and bytes it moves to or from HBM (whole 32-byte sectors
// fetched by read misses, or sectors it dirties).
struct L2Split {
    uint64_t hit = 0;
    uint64_t miss = 0;
    bool write = false;  // the transfer stores: its time is all L2 (see writes above)
};

// One block's slice of the L2 (see the table above): fully associative, LRU. Two arrays: the lines with
// their LRU links, and an open-addressing index (linear probing, backward-shift deletion, at most half
// full) from line number to line. Both start small and double as lines come in, up to the slice's
// capacity: a block that touches a few KiB does not pay for zeroing a 192 MiB slice's tables (most
// launches of a small model's decode step). Once at capacity, no allocation per access.
class L2Slice {
public:
    explicit L2Slice(uint64_t capacity) { set_capacity(capacity); }
    L2Slice() = default;
    ~L2Slice() {
        std::free(index_);
        std::free(lines_);
    }
    L2Slice(const L2Slice&) = delete;
    L2Slice& operator=(const L2Slice&) = delete;

    uint64_t capacity() const { return cap_ * cost::kL2Line; }

    // Empties the slice for a new block: afterwards it behaves exactly as L2Slice(capacity) (the same
    // hits, misses and LRU victims); it only keeps its arrays, unless they are large, to save their
    // allocation and growth.
    void reset(uint64_t capacity) {
        if (lines_len_ > kKeepLines) {
            std::free(index_);
            std::free(lines_);
            index_ = nullptr;
            lines_ = nullptr;
            lines_len_ = buckets_ = 0;
        } else {
            // Each line in [0, used_) has exactly one index entry (n + 1) on its probe run from home:
            // scanning for it past entries already cleared finds it.
            for (uint64_t n = 0; n < used_; ++n) {
                uint64_t i = home(lines_[n].tag);
                while (index_[i] != n + 1) i = (i + 1) & (buckets_ - 1);
                index_[i] = 0;
            }
        }
        used_ = 0;
        head_ = tail_ = kNone;
        set_capacity(capacity);
    }

    // Looks up GM bytes [addr, addr + len) in address order, updates the slice, returns the split.
    // If its arrays cannot grow (out of host memory), the slice keeps the lines it has: LRU over fewer.
    // A read's sectors that miss here but are valid in `die` (the sectors written before the launch's last
    // SyncAll, l2_die.h) are hits: another block wrote them to the L2 before the barrier.
    L2Split access(uint64_t addr, uint64_t len, bool write, const L2Slice* die = nullptr) {
        L2Split r;
        r.write = write;
        if (len == 0) return r;
        if (used_ == 0 && !grow()) {  // no memory for even one line: everything misses
            r.miss = len;
            return r;
        }
        uint64_t a = addr;
        const uint64_t end = addr + len;
        while (a < end) {
            const uint64_t line = a / cost::kL2Line;
            const uint64_t line_end = (line + 1) * cost::kL2Line;
            const uint64_t stop = end < line_end ? end : line_end;
            // find() may move lines_ (growth): index after it returns (lines_[find()] reads lines_ first).
            const uint32_t at = find(line);
            Line& l = lines_[at];
            // The sectors [first, last] the piece [a, stop) touches, as a mask, and those it misses.
            const uint32_t first = static_cast<uint32_t>((a % cost::kL2Line) / cost::kL2Sector);
            const uint32_t last = static_cast<uint32_t>(((stop - 1) % cost::kL2Line) / cost::kL2Sector);
            const uint16_t touched = static_cast<uint16_t>(((2u << last) - 1) & ~((1u << first) - 1));
            const uint16_t missing = static_cast<uint16_t>(touched & ~(write ? l.dirty : l.valid));
            // Each sector missing from the L2 costs a whole sector; the piece's bytes in the others are hits.
            const uint16_t from_hbm =
                write || die == nullptr || missing == 0 ? missing : static_cast<uint16_t>(missing & ~die->held(line));
            uint64_t missed_bytes = 0;
            if (from_hbm != 0) {
                const uint64_t sectors = static_cast<uint64_t>(__builtin_popcount(from_hbm));
                r.miss += sectors * cost::kL2Sector;
                missed_bytes = sectors * cost::kL2Sector;
                if (from_hbm & (1u << first)) missed_bytes -= a % cost::kL2Sector;
                if (from_hbm & (1u << last)) missed_bytes -= line * cost::kL2Line + (last + 1) * cost::kL2Sector - stop;
            }
            if (missing != 0) {
                l.valid = static_cast<uint16_t>(l.valid | missing);
                if (write) l.dirty = static_cast<uint16_t>(l.dirty | missing);
            }
            r.hit += (stop - a) - missed_bytes;
            a = stop;
        }
        return r;
    }

    // The sectors of line number `line` this slice holds (a bit each), without touching the LRU order: a
    // lookup other cores may make while nothing changes the slice.
    uint16_t held(uint64_t line) const {
        if (used_ == 0) return 0;
        const uint32_t n = index_[slot_of(line)];
        return n == 0 ? 0 : lines_[n - 1].valid;
    }

private:
    static constexpr uint32_t kNone = 0xFFFFFFFFu;
    static constexpr uint64_t kKeepLines = uint64_t{1} << 14;  // reset() keeps arrays up to 384 KiB of lines

    void set_capacity(uint64_t capacity) {
        cap_ = capacity / cost::kL2Line;
        if (cap_ == 0) cap_ = 1;
        if (cap_ > kNone / 2) cap_ = kNone / 2;
    }
    struct Line {
        uint64_t tag;        // line number
        uint32_t prev, next;  // LRU list: towards the most / the least recently used
        uint16_t valid;      // one bit per 32-byte sector: in L2
        uint16_t dirty;      // one bit per 32-byte sector: written since it came in
    };

    uint64_t home(uint64_t line) const { return (line * 0x9E3779B97F4A7C15ull) >> 17 & (buckets_ - 1); }
    // The index slot holding `line`, or the empty slot where it would go.
    uint64_t slot_of(uint64_t line) const {
        uint64_t i = home(line);
        while (index_[i] != 0 && lines_[index_[i] - 1].tag != line) i = (i + 1) & (buckets_ - 1);
        return i;
    }
    void unlink(uint32_t n) {
        Line& l = lines_[n];
        if (l.prev != kNone) lines_[l.prev].next = l.next; else head_ = l.next;
        if (l.next != kNone) lines_[l.next].prev = l.prev; else tail_ = l.prev;
    }
    void push_front(uint32_t n) {
        lines_[n].prev = kNone;
        lines_[n].next = head_;
        if (head_ != kNone) lines_[head_].prev = n;
        head_ = n;
        if (tail_ == kNone) tail_ = n;
    }
    // Linear probing's deletion: later entries of the probe run move back over the hole.
    void erase_slot(uint64_t i) {
        const uint64_t mask = buckets_ - 1;
        for (;;) {
            index_[i] = 0;
            uint64_t j = i;
            for (;;) {
                j = (j + 1) & mask;
                if (index_[j] == 0) return;
                const uint64_t k = home(lines_[index_[j] - 1].tag);
                const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
                if (!stays) break;
            }
            index_[i] = index_[j];
            i = j;
        }
    }
    // The line's index in lines_, made the most recently used; a missing line takes a free entry or
    // the least recently used one's, emptied.
    uint32_t find(uint64_t line) {
        // Already the most recently used (a run of accesses to one line): nothing moves.
        if (head_ != kNone && lines_[head_].tag == line) return head_;
        uint64_t slot = slot_of(line);
        uint32_t n;
        if (index_[slot] != 0) {
            n = index_[slot] - 1;
            unlink(n);
        } else {
            if (used_ < cap_ && grow()) {
                n = static_cast<uint32_t>(used_++);
                slot = slot_of(line);  // the index may have been rebuilt
            } else {
                n = tail_;
                unlink(n);
                erase_slot(slot_of(lines_[n].tag));
                slot = slot_of(line);
            }
            lines_[n].tag = line;
            lines_[n].valid = 0;
            lines_[n].dirty = 0;
            index_[slot] = n + 1;
        }
        push_front(n);
        return n;
    }

    // Room for one more line: the lines array holds used_ + 1 and the index stays at most half full.
    // False when the host is out of memory; the slice then stops at the used_ lines it has.
    bool grow() {
        if (used_ == lines_len_) {
            uint64_t len = lines_len_ == 0 ? 64 : 2 * lines_len_;
            if (len > cap_) len = cap_;
            Line* lines = static_cast<Line*>(std::realloc(lines_, len * sizeof(Line)));
            if (lines == nullptr) return stop();
            lines_ = lines;
            lines_len_ = len;
        }
        if (2 * (used_ + 1) > buckets_) {
            const uint64_t buckets = buckets_ < 128 ? 128 : 2 * buckets_;
            uint32_t* index = static_cast<uint32_t*>(std::calloc(buckets, sizeof(uint32_t)));
            if (index == nullptr) return stop();
            std::free(index_);
            index_ = index;
            buckets_ = buckets;
            for (uint64_t n = 0; n < used_; ++n) index_[slot_of(lines_[n].tag)] = static_cast<uint32_t>(n + 1);
        }
        return true;
    }
    bool stop() {
        if (used_ > 0) cap_ = used_;
        return false;
    }

    uint32_t* index_ = nullptr;
    Line* lines_ = nullptr;
    uint64_t cap_ = 1, lines_len_ = 0, buckets_ = 0, used_ = 0;
    uint32_t head_ = kNone, tail_ = kNone;
};

// One record of a core's timeline (trace.h writes them): an instruction ('I') on `pipe` from `start`,
// occupying it `cycles`, complete `latency` after; or a wait ('W'): `pipe` stalled from `start` for
// `cycles`.
struct TraceEvent {
    char kind;
    uint8_t pipe;
    const char* op;  // a string literal (the instruction's name), or nullptr
    double start, cycles, latency;
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
    void issue(uint32_t p, double busy, double latency, const char* op = nullptr) {
        double start = free_[0];
        if (p == 0) {
            free_[0] += busy;
            done_[0] = free_[0];
        } else {
            start = free_[p] > free_[0] ? free_[p] : free_[0];
            free_[p] = start + busy;
            const double end = free_[p] + latency;
            if (end > done_[p]) done_[p] = end;
        }
        busy_[p] += busy;
        if (trace_ != nullptr) trace_->push_back({'I', static_cast<uint8_t>(p), op, start, busy, latency});
    }
    // How far the core has got: the latest time any pipe is busy until. It only grows (an instruction
    // or a wait only moves a pipe's free time later), so it orders the core's GM transfers (l2_die.h).
    double progress() const {
        double t = 0;
        for (uint32_t p = 0; p < kPipes; ++p) t = t > free_[p] ? t : free_[p];
        return t;
    }
    // When everything issued to p so far has completed.
    double done(uint32_t p) const { return done_[p] > free_[p] ? done_[p] : free_[p]; }
    // Pipe p blocks until time t (a WaitFlag; issued by the scalar unit like any instruction).
    void wait(uint32_t p, double t) {
        double s = free_[p] > free_[0] ? free_[p] : free_[0];
        if (t > s) {
            if (trace_ != nullptr) trace_->push_back({'W', static_cast<uint8_t>(p), nullptr, s, t - s, 0});
            s = t;
        }
        free_[p] = s;
        if (p == 0) done_[0] = s;
    }
    void flag_op(uint32_t p) { issue(p, cost::kFlag, 0, "flag"); }
    void drain(uint32_t p) { wait(p, done(p) + cost::kBarrier); }

    double mte_cycles(uint64_t bytes) const { return static_cast<double>(bytes) / mte_bytes_per_cycle_; }
    // A transfer split by the L2 model: a read's misses at the HBM share and its hits at the L2 share; a
    // write all at the L2 share (its write-backs are the L2's).
    double mte_cycles(const L2Split& s) const {
        if (s.write) return static_cast<double>(s.hit + s.miss) / l2_bytes_per_cycle_;
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

    // Records every instruction and wait into `events` from now on (nullptr: stops); trace.h.
    void set_trace(std::vector<TraceEvent>* events) { trace_ = events; }

private:
    static constexpr uint32_t kPipes = 7;
    double free_[kPipes] = {};  // when the pipe can start its next instruction (S: the issue point)
    double done_[kPipes] = {};  // when everything issued to the pipe has completed
    double busy_[kPipes] = {};
    double mte_bytes_per_cycle_ = 1;
    double l2_bytes_per_cycle_ = 1;
    std::vector<TraceEvent>* trace_ = nullptr;
};

}  // namespace host
}  // namespace dsnpu

#endif
