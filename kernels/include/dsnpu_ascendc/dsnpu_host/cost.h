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
// | GlobalTensor GetValue / SetValue | S | 100 (GUESS: scalar cache miss to GM) | - |
// | DataCopy GM->UB / UB->GM | MTE2 / MTE3 | bytes / share | 500 (GUESS, GM latency) |
// | Matmul base step | MTE2 (A, B), M, FIX (C) | fractals: 1 per cycle for 16-bit, 2 for int8, 1/2 for f32 (GUESS) | - |
// | SetFlag / WaitFlag | the pipe | 1 | - |
// | PipeBarrier<PIPE_X> | X | drains X, +10 (GUESS) | - |
// | PipeBarrier<PIPE_ALL> | all | drains all, +10 | - |
// | SyncAll | all | drains all, +2000 (GUESS: GM-flag barrier across cores) | - |
// `share` = HBM bytes per cycle (1.6e12 / 1.8e9) divided among the launch's concurrently running blocks
// (at most 48), capped at 128 bytes per cycle per core (GUESS). Launch latency (3 us, GUESS) is added by
// the reader of the counters (kernels/src/cost_model.rs), not here.
#ifndef DSNPU_ASCENDC_HOST_COST_H
#define DSNPU_ASCENDC_HOST_COST_H

#include <cmath>
#include <cstdint>

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

class CostModel {
public:
    explicit CostModel(uint32_t concurrent_blocks) {
        uint32_t n = concurrent_blocks == 0 ? 1 : concurrent_blocks;
        if (n > cost::kMaxConcurrentCores) n = cost::kMaxConcurrentCores;
        const double share = cost::kHbmBytesPerCycle / n;
        mte_bytes_per_cycle_ = share < cost::kMaxMteBytesPerCycle ? share : cost::kMaxMteBytesPerCycle;
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
};

}  // namespace host
}  // namespace dsnpu

#endif
