// The die's L2 for a launch's HBM counters (kernel ABI 5, dsnpu_sim_kernel.h).
//
// Each block times its GM transfers against a private slice of the L2 model (cost.h), so that its cycles
// do not depend on how the host threads interleave; but the 910B's L2 is one cache shared by every core
// of the die, and slices count data that several blocks read (a GEMM's activations, a query panel, a
// partial result that another block combines) as a miss per block. So every core also records the GM
// transfers it looks up — address, length, read or write, the SyncAll barriers the access comes after
// (its epoch: the core's own count, or on a mix block's cube core the count its vector cores' flags
// carry, pipeline.h) and how far its modelled pipes have got (CostModel::progress) — and
// dsnpu_sim_launch_end (which the simulator calls once every block has returned, when the launch's
// counters are read) replays the records of all cores in one order through a single L2 of the die's
// capacity, with the same lines, sectors and write-back rules as a slice. The launch's HBM counters are
// that replay's misses.
//
// The order is deterministic: by epoch, then wave (blocks beyond the concurrently running ones start after
// them), then time, then core. A core's own records are in that order already (its progress only grows),
// so the replay merges the cores' streams. The times of different blocks are each block's own clock from
// its start: blocks are taken to start together, as a wave does on the device.
//
// At each SyncAll the write records so far go into a view of the die's L2 that the blocks' slices look
// their misses up in after the barrier (LaunchL2::reach, cost.h), and the barrier's arrival times
// (arrive, latest) make every block leave it when the last one arrives (sync.h).
//
// The same records are the GM race check between blocks (DSNPU_SIM_CHECK race): the last block to return
// looks for accesses of different blocks in the same epoch that overlap, one a write
// (cross_block_race, entry.h).
//
// Accesses adjacent to the core's previous record (same direction, epoch and counting) extend it. A launch
// that records more than kMaxRecords transfers (or cannot allocate them) keeps the per-block sums instead;
// dsnpu_sim_launch_end reports which.
#ifndef DSNPU_ASCENDC_HOST_L2_DIE_H
#define DSNPU_ASCENDC_HOST_L2_DIE_H

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <queue>
#include <vector>

#include "cost.h"

namespace dsnpu {
namespace host {

// One GM transfer as a core looked it up in its slice, in 16 bytes: the address in the low 48 bits of
// `key` (user-space addresses), then a write bit, a counted bit (in the HBM counters: scalar GlobalTensor
// accesses only move lines), the epoch (SyncAll barriers the core has passed, saturating at 2^12 - 1) and
// in the top two bits the atomic operation of a write (AtomicOp, atomic.h: 0 for a store);
// the core's progress (CostModel::progress, cycles since its block started) as a float, which orders
// records to about one part in 10^7.
struct L2Record {
    uint64_t key;
    uint32_t len;
    float time;

    static constexpr uint64_t kAddrMask = (uint64_t{1} << 48) - 1;
    static constexpr uint64_t kWrite = uint64_t{1} << 48, kCounted = uint64_t{1} << 49;
    static constexpr uint32_t kEpochShift = 50, kMaxEpoch = (1u << 12) - 1, kAtomicShift = 62;
    uint64_t addr() const { return key & kAddrMask; }
    uint64_t flags() const { return key & ~kAddrMask; }
    bool write() const { return (key & kWrite) != 0; }
    bool counted() const { return (key & kCounted) != 0; }
    uint32_t epoch() const { return static_cast<uint32_t>(key >> kEpochShift) & kMaxEpoch; }
    uint8_t atomic() const { return static_cast<uint8_t>(key >> kAtomicShift); }
};

class LaunchL2 {
public:
    // Record capacity per launch (16 bytes each): 256 MiB in all. The streams' capacity grows by
    // doubling, so this holds ~8 M records: the expert FFN at 512 tokens of DeepSeek-V3 records 5.0 M
    // (its Matmul records every row of every weight panel).
    static constexpr uint64_t kMaxRecords = uint64_t{1} << 24;
    // Record capacity kept for later launches once theirs are released: 32 MiB.
    static constexpr uint64_t kPooledRecords = uint64_t{1} << 21;
    // Record streams per block: a mix block's AIC and two AIVs (a plain block uses the first).
    static constexpr uint32_t kCoresPerBlock = 3;

    explicit LaunchL2(uint32_t blocks) : blocks_(blocks), cores_(static_cast<size_t>(blocks) * kCoresPerBlock) {}
    ~LaunchL2() {
        for (std::vector<L2Record>& v : cores_) give_back(std::move(v));
    }
    LaunchL2(const LaunchL2&) = delete;
    LaunchL2& operator=(const LaunchL2&) = delete;

    // Core `slot` of block `block` looked up [addr, addr + len). Called by that core only: each core has
    // its own stream, so cores on different threads never touch the same vector.
    void record(uint32_t block, uint32_t slot, uint64_t addr, uint64_t len, bool write, bool counted,
                uint32_t epoch, double time, uint8_t atomic = 0) noexcept {
        if (len == 0 || block >= blocks_ || slot >= kCoresPerBlock || (addr & ~L2Record::kAddrMask) != 0 ||
            dropped_.load(std::memory_order_relaxed)) {
            return;
        }
        std::vector<L2Record>& v = cores_[static_cast<size_t>(block) * kCoresPerBlock + slot];
        const uint64_t e = epoch < L2Record::kMaxEpoch ? epoch : L2Record::kMaxEpoch;
        const uint64_t flags = (write ? L2Record::kWrite : 0) | (counted ? L2Record::kCounted : 0) |
                               (e << L2Record::kEpochShift) |
                               (static_cast<uint64_t>(atomic & 3u) << L2Record::kAtomicShift);
        if (!v.empty()) {
            L2Record& last = v.back();
            if (last.flags() == flags && last.addr() + last.len == addr && last.len + len <= UINT32_MAX) {
                last.len += static_cast<uint32_t>(len);
                return;
            }
        }
        try {
            if (v.size() == v.capacity()) {
                // The shared count moves only when a stream grows: no contention per record.
                const uint64_t before = v.capacity();
                if (before == 0) v = take_pooled();
                if (v.size() == v.capacity()) v.reserve(v.capacity() < 1024 ? 1024 : 2 * v.capacity());
                const uint64_t grown = v.capacity() - before;
                if (reserved_.fetch_add(grown, std::memory_order_relaxed) + grown > kMaxRecords) {
                    dropped_.store(true, std::memory_order_relaxed);
                    return;
                }
            }
            while (len > UINT32_MAX) {  // never from one transfer; kept exact anyway
                v.push_back(L2Record{addr | flags, UINT32_MAX, static_cast<float>(time)});
                addr += UINT32_MAX;
                len -= UINT32_MAX;
            }
            v.push_back(L2Record{addr | flags, static_cast<uint32_t>(len), static_cast<float>(time)});
        } catch (const std::bad_alloc&) {
            dropped_.store(true, std::memory_order_relaxed);
        }
    }

    // Replays every record through one L2 of the die's capacity and sets the HBM bytes read and written;
    // false (and nothing set) if records were dropped.
    bool replay(uint64_t* read, uint64_t* written) {
        if (dropped_.load()) return false;
        // Blocks of one wave run together: as many as the L2 slices are cut for (entry.h).
        const uint32_t wave = blocks_ < cost::kMaxConcurrentCores ? (blocks_ == 0 ? 1 : blocks_) : cost::kMaxConcurrentCores;
        struct Cursor {
            uint32_t core;
            size_t next;
        };
        auto later = [&](const Cursor& a, const Cursor& b) {
            const L2Record& x = cores_[a.core][a.next];
            const L2Record& y = cores_[b.core][b.next];
            if (x.epoch() != y.epoch()) return x.epoch() > y.epoch();
            const uint32_t wx = a.core / kCoresPerBlock / wave, wy = b.core / kCoresPerBlock / wave;
            if (wx != wy) return wx > wy;
            if (x.time != y.time) return x.time > y.time;
            return a.core > b.core;
        };
        std::priority_queue<Cursor, std::vector<Cursor>, decltype(later)> heads(later);
        for (uint32_t c = 0; c < cores_.size(); ++c) {
            if (!cores_[c].empty()) heads.push(Cursor{c, 0});
        }
        L2Slice die(cost::kL2Bytes);
        uint64_t r = 0, w = 0;
        while (!heads.empty()) {
            Cursor cur = heads.top();
            heads.pop();
            const L2Record& rec = cores_[cur.core][cur.next];
            const L2Split s = die.access(rec.addr(), rec.len, rec.write());
            if (rec.counted()) (rec.write() ? w : r) += s.miss;
            if (++cur.next < cores_[cur.core].size()) heads.push(cur);
        }
        *read = r;
        *written = w;
        return true;
    }

    // --- the GM race check between blocks -------------------------------------------------------------------
    // A block of the launch returned (every block calls this once, whatever became of it); true for the
    // last of `blocks`, which then sees every core's records complete (the other blocks' pushes happen
    // before their calls here).
    // `faulted`: the block reported a fault (then the launch has failed already and nobody checks).
    bool block_returned(uint32_t blocks, bool faulted) {
        if (faulted) any_fault_.store(true, std::memory_order_relaxed);
        return returned_.fetch_add(1, std::memory_order_acq_rel) + 1 == blocks &&
               !any_fault_.load(std::memory_order_relaxed);
    }

    // Blocks synchronize with each other only at SyncAll: two GM accesses of different blocks between the
    // same two barriers (the records' epochs; a cube core's epoch counts the barriers of its vector cores
    // that reached it, pipeline.h) are unordered, and if they overlap and one is a write, what the other sees, or
    // which write lands last, depends on timing (a race, as the device would have it). The first such
    // pair, lowest epoch and address first (`found` false when there is none, or when records were
    // dropped: not checked). After block_returned said this is the last block.
    //
    // Atomic transfers of one operation (atomic.h) commute: two of them are no race; an atomic transfer
    // and a store or a read are.
    //
    // Each core's records are sorted and merged into intervals per (epoch, kind: read, store, or atomic
    // operation); then per epoch one sweep in address order keeps, for each kind, the two
    // furthest-reaching intervals of different blocks: an interval overlaps one of another block that
    // started before it exactly when it starts below the furthest of those that is not its own block's.
    struct BlockRace {
        bool found = false;
        uint64_t lo = 0, hi = 0;  // the bytes both touch
        uint32_t epoch = 0;       // barriers both come after
        uint32_t writer = 0, other = 0;
        bool other_writes = false;
        uint8_t writer_atomic = 0, other_atomic = 0;  // AtomicOp of each (0: a store or a read)
    };
    BlockRace cross_block_race() const {
        if (dropped_.load()) return {};
        // kind: 0 a read, 1 a store, 2 + (AtomicOp - 1) an atomic transfer.
        static constexpr uint8_t kKinds = 5;
        struct Iv {
            uint64_t lo, hi;
            uint32_t epoch, block;
            uint8_t kind;
            bool write() const { return kind != 0; }
            uint8_t atomic() const { return kind >= 2 ? static_cast<uint8_t>(kind - 1) : 0; }
        };
        std::vector<Iv> all;
        std::vector<Iv> mine;
        for (size_t c = 0; c < cores_.size(); ++c) {
            const uint32_t block = static_cast<uint32_t>(c / kCoresPerBlock);
            mine.clear();
            for (const L2Record& r : cores_[c]) {
                const uint8_t kind = !r.write() ? 0 : r.atomic() == 0 ? 1 : static_cast<uint8_t>(1 + r.atomic());
                mine.push_back(Iv{r.addr(), r.addr() + r.len, r.epoch(), block, kind});
            }
            std::sort(mine.begin(), mine.end(), [](const Iv& a, const Iv& b) {
                if (a.epoch != b.epoch) return a.epoch < b.epoch;
                if (a.kind != b.kind) return a.kind < b.kind;
                return a.lo < b.lo;
            });
            for (const Iv& v : mine) {
                if (!all.empty() && all.back().block == block && all.back().epoch == v.epoch &&
                    all.back().kind == v.kind && v.lo <= all.back().hi) {
                    if (v.hi > all.back().hi) all.back().hi = v.hi;
                } else {
                    all.push_back(v);
                }
            }
        }
        std::sort(all.begin(), all.end(), [](const Iv& a, const Iv& b) {
            if (a.epoch != b.epoch) return a.epoch < b.epoch;
            return a.lo < b.lo;
        });
        constexpr uint32_t kNone = UINT32_MAX;
        // The two intervals reaching furthest whose blocks differ.
        struct Reach {
            Iv top{0, 0, 0, kNone, 0}, second{0, 0, 0, kNone, 0};
            // top: the furthest of all; second: the furthest of the other blocks'.
            void add(const Iv& v) {
                if (v.block == top.block) {
                    if (v.hi > top.hi) top = v;
                } else if (v.hi > top.hi) {
                    second = top;
                    top = v;
                } else if (v.hi > second.hi) {
                    second = v;
                }
            }
            // An interval of another block than v's that overlaps v (starting no later), or nullptr.
            const Iv* other(const Iv& v) const {
                if (top.block != kNone && top.block != v.block && top.hi > v.lo) return &top;
                if (second.block != kNone && second.block != v.block && second.hi > v.lo) return &second;
                return nullptr;
            }
        };
        Reach reach[kKinds];
        uint32_t epoch = kNone;
        for (const Iv& v : all) {
            if (v.epoch != epoch) {
                for (Reach& r : reach) r = Reach{};
                epoch = v.epoch;
            }
            const Iv* o = nullptr;
            for (uint8_t k = 0; k < kKinds && o == nullptr; ++k) {
                // Reads do not race with reads, nor atomic transfers with those of their own operation.
                if ((k == 0 && v.kind == 0) || (k >= 2 && k == v.kind)) continue;
                o = reach[k].other(v);
            }
            if (o != nullptr) {
                const Iv& w = o->write() ? *o : v;
                const Iv& x = o->write() ? v : *o;
                BlockRace r;
                r.found = true;
                r.lo = v.lo > o->lo ? v.lo : o->lo;
                r.hi = v.hi < o->hi ? v.hi : o->hi;
                r.epoch = v.epoch;
                r.writer = w.block;
                r.other = x.block;
                r.other_writes = x.write();
                r.writer_atomic = w.atomic();
                r.other_atomic = x.atomic();
                return r;
            }
            reach[v.kind].add(v);
        }
        return {};
    }

    // --- SyncAll (sync.h) ---------------------------------------------------------------------------------
    // The core that takes its block through SyncAll number `epoch` arrives at modelled time `time` (its
    // block's cycles since it started). Before the simulator's barrier.
    void arrive(uint32_t epoch, double time) {
        std::lock_guard<std::mutex> g(barrier_mu_);
        double& t = latest_[epoch % 2];
        t = t > time ? t : time;
    }
    // After every block arrived at SyncAll `epoch`: the latest arrival, when every block leaves it.
    double latest(uint32_t epoch) {
        std::lock_guard<std::mutex> g(barrier_mu_);
        return latest_[epoch % 2];
    }
    // After every block arrived at SyncAll `epoch` and before any goes on (one core of the launch, between
    // the simulator's two barriers, sync.h): the sectors every core wrote up to this barrier (its write
    // records of the epochs up to it, core after core) go into `view_`, the L2 as the blocks' slices see
    // it until the next SyncAll (view()): data another block wrote before the barrier is in the die's L2
    // (write-back: dirty lines stay until evicted). What blocks only read is left out — it would mean
    // replaying every read in time order, a cost on every SyncAll launch's wall time (the decode's combine
    // reads partials the cube cores wrote) — so such data still misses once per block, as before. Also
    // clears the arrival time of the next SyncAll, whose slot nobody reads now (the reads of it for
    // SyncAll epoch - 1 were before this barrier).
    // Safe without a lock: at this moment every other core of the launch waits in the barrier or in its
    // block (a mix block's cores run on the thread of the core waiting in the barrier, mix.h), so no
    // stream grows and no slice reads the view. A launch that dropped records gets no view.
    void reach(uint32_t epoch) {
        {
            std::lock_guard<std::mutex> g(barrier_mu_);
            latest_[(epoch + 1) % 2] = 0;
        }
        if (dropped_.load()) {
            view_on_ = false;
            return;
        }
        try {
            if (view_cursor_.size() != cores_.size()) view_cursor_.assign(cores_.size(), 0);
            for (size_t c = 0; c < cores_.size(); ++c) {
                const std::vector<L2Record>& v = cores_[c];
                size_t& k = view_cursor_[c];
                for (; k < v.size() && v[k].epoch() <= epoch; ++k) {
                    if (v[k].write()) view_.access(v[k].addr(), v[k].len, true);
                }
            }
            view_on_ = true;
        } catch (const std::bad_alloc&) {
            view_on_ = false;
        }
    }
    // The sectors written before the last SyncAll the launch passed (nullptr before the first, or when
    // records were dropped).
    const L2Slice* view() const { return view_on_ ? &view_ : nullptr; }

    // GM bytes [lo, hi) that a SetValue of `block` left in a data cache of its cores when they passed
    // their `epoch`-th SyncAll (dcache.h): until its next barrier, a read of them by another block does not
    // see them, whether or not the block writes them back meanwhile (that write-back is unordered with it).
    void unpublished(uint32_t block, uint32_t epoch, uint64_t lo, uint64_t hi) {
        std::lock_guard<std::mutex> g(unpublished_mu_);
        unpublished_.push_back(Unpublished{block, epoch, lo, hi});
        any_unpublished_.store(true, std::memory_order_release);
    }
    // The first of those bytes in [a, a + n) of a block other than `block`, left there at barrier `epoch`:
    // true with the writer and the range.
    bool unpublished_read(uint32_t block, uint32_t epoch, uint64_t a, uint64_t n, uint32_t* writer, uint64_t* lo,
                          uint64_t* hi) {
        if (!any_unpublished_.load(std::memory_order_acquire)) return false;
        std::lock_guard<std::mutex> g(unpublished_mu_);
        for (const Unpublished& u : unpublished_) {
            if (u.block == block || u.epoch != epoch || u.hi <= a || a + n <= u.lo) continue;
            *writer = u.block;
            *lo = u.lo > a ? u.lo : a;
            *hi = u.hi < a + n ? u.hi : a + n;
            return true;
        }
        return false;
    }

private:
    // Released launches' record vectors, kept (emptied) up to kPooledRecords of capacity: a decode step
    // is hundreds of launches, and fresh vectors would fault their pages in every time.
    struct Pool {
        std::mutex mu;
        std::vector<std::vector<L2Record>> free;
        uint64_t capacity = 0;
    };
    static Pool& pool() {
        static Pool* p = new Pool();  // never destroyed: launches may end during static destruction
        return *p;
    }
    static std::vector<L2Record> take_pooled() {
        Pool& p = pool();
        std::lock_guard<std::mutex> g(p.mu);
        if (p.free.empty()) return {};
        std::vector<L2Record> v = std::move(p.free.back());
        p.free.pop_back();
        p.capacity -= v.capacity();
        return v;
    }
    static void give_back(std::vector<L2Record>&& v) {
        if (v.capacity() == 0) return;
        v.clear();
        Pool& p = pool();
        std::lock_guard<std::mutex> g(p.mu);
        if (p.capacity + v.capacity() > kPooledRecords) return;  // v is freed on return
        p.capacity += v.capacity();
        try {
            p.free.push_back(std::move(v));
        } catch (const std::bad_alloc&) {
            p.capacity -= v.capacity();
        }
    }

    uint32_t blocks_;
    std::vector<std::vector<L2Record>> cores_;
    std::atomic<uint32_t> returned_{0};
    std::atomic<bool> any_fault_{false};
    std::atomic<uint64_t> reserved_{0};
    std::atomic<bool> dropped_{false};
    // SyncAll: the latest arrival at the current barrier and the next (by the epoch's parity), and the
    // sectors written up to the last barrier with each core's first record not yet looked at.
    std::mutex barrier_mu_;
    double latest_[2] = {0, 0};
    L2Slice view_{cost::kL2Bytes};
    std::vector<size_t> view_cursor_;
    bool view_on_ = false;
    struct Unpublished {
        uint32_t block, epoch;
        uint64_t lo, hi;
    };
    std::mutex unpublished_mu_;
    std::vector<Unpublished> unpublished_;
    std::atomic<bool> any_unpublished_{false};
};

}  // namespace host
}  // namespace dsnpu

#endif
