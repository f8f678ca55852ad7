/*
 * Small helpers shared by dsnpu's Ascend C kernels (device-neutral: only Ascend C API calls).
 */
#ifndef DSNPU_KERNELS_KERNEL_UTIL_H
#define DSNPU_KERNELS_KERNEL_UTIL_H

#include "dsnpu_kernels/entry.h"

namespace dsnpu_kernels {

constexpr int32_t BUFFER_NUM = 2;  // double buffering of every in/out queue
constexpr uint32_t UB_BLOCK = 32;  // UB alignment, bytes

template <typename A, typename B>
struct IsSame {
    static constexpr bool value = false;
};
template <typename A>
struct IsSame<A, A> {
    static constexpr bool value = true;
};

__aicore__ inline constexpr uint32_t CeilDiv(uint32_t a, uint32_t b) { return (a + b - 1) / b; }
__aicore__ inline constexpr uint32_t AlignUp(uint32_t a, uint32_t b) { return CeilDiv(a, b) * b; }
__aicore__ inline constexpr uint32_t Min(uint32_t a, uint32_t b) { return a < b ? a : b; }

// An f32's bit pattern and back.
__aicore__ inline uint32_t FloatToBits(float f) {
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    return v.u;
}
__aicore__ inline float BitsToFloat(uint32_t b) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = b;
    return v.f;
}

// The vector cores of a 1:2 mix launch as workers: vector core s of block b is worker s * blocks + b
// of 2 * blocks, so a deal of tasks i % workers reaches different cube cores first.
__aicore__ inline uint64_t VectorWorker() {
    return static_cast<uint64_t>(AscendC::GetSubBlockIdx()) * static_cast<uint64_t>(AscendC::GetBlockNum()) +
           static_cast<uint64_t>(AscendC::GetBlockIdx() / AscendC::GetTaskRation());
}
__aicore__ inline uint64_t VectorWorkers() {
    return static_cast<uint64_t>(AscendC::GetBlockNum()) * static_cast<uint64_t>(AscendC::GetTaskRation());
}

// Widen `count` elements to f32 (a UB-to-UB copy for f32 itself: count * 4 must be a multiple of 32).
template <typename T>
__aicore__ inline void ToFloat(const AscendC::LocalTensor<float>& dst, const AscendC::LocalTensor<T>& src,
                               uint32_t count) {
    if constexpr (IsSame<T, float>::value) {
        AscendC::DataCopy(dst, src, count);
    } else {
        AscendC::Cast(dst, src, AscendC::RoundMode::CAST_NONE, count);
    }
}

// Narrow `count` f32 elements to T, nearest-even (a UB-to-UB copy for f32: count * 4 a multiple of 32).
template <typename T>
__aicore__ inline void FromFloat(const AscendC::LocalTensor<T>& dst, const AscendC::LocalTensor<float>& src,
                                 uint32_t count) {
    if constexpr (IsSame<T, float>::value) {
        AscendC::DataCopy(dst, src, count);
    } else {
        AscendC::Cast(dst, src, AscendC::RoundMode::CAST_RINT, count);
    }
}

// Results computed in place in a VECIN queue's buffer and copied out from there: the queue's implicit
// flags order MTE2 refills only after the vector unit (FreeTensor = V_MTE2), not after the MTE3 copy-out,
// so each buffer's copy-out must be waited for before MTE2 refills it (facts: "Pipes and
// synchronization"). Buffers are handed out round-robin, so tile i uses slot i % depth; each slot has
// its own MTE3_MTE2 event ID (`firstEvent` + slot), and the copy-out of one tile still overlaps the
// next tile's load.
template <int32_t DEPTH>
class CopyOutGuard {
public:
    __aicore__ inline explicit CopyOutGuard(int32_t firstEvent = 0) : first_(firstEvent) {}
    // Before the AllocTensor + DataCopy that refills the next buffer.
    __aicore__ inline void BeforeRefill() {
        const uint32_t slot = next_ % DEPTH;
        if (pending_[slot]) {
            AscendC::WaitFlag<AscendC::HardEvent::MTE3_MTE2>(first_ + static_cast<int32_t>(slot));
            pending_[slot] = false;
        }
    }
    // After the DataCopy that copies the tile out (tiles are copied out in the order they came in).
    __aicore__ inline void CopiedOut() {
        const uint32_t slot = next_ % DEPTH;
        AscendC::SetFlag<AscendC::HardEvent::MTE3_MTE2>(first_ + static_cast<int32_t>(slot));
        pending_[slot] = true;
        ++next_;
    }
    // At the end: no flag may be left set.
    __aicore__ inline void Drain() {
        for (uint32_t slot = 0; slot < DEPTH; ++slot) {
            if (pending_[slot]) {
                AscendC::WaitFlag<AscendC::HardEvent::MTE3_MTE2>(first_ + static_cast<int32_t>(slot));
                pending_[slot] = false;
            }
        }
    }

private:
    int32_t first_;
    uint32_t next_ = 0;
    bool pending_[DEPTH] = {};
};

}  // namespace dsnpu_kernels

#endif
