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

}  // namespace dsnpu_kernels

#endif
