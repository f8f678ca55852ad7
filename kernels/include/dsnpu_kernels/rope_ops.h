/*
 * Rotary position embedding of one f32 row in the UB, shared by rope_<t> and mla_cache_write_<t>.
 *
 * For a row x of `dim` elements, c_i = cos[p, i], s_i = sin[p, i] (i < dim / 2) and the pair
 * (a, b) = (x[2i], x[2i+1]) (DSNPU_ROPE_INTERLEAVED) or (x[i], x[i + dim/2]) (DSNPU_ROPE_HALF_SPLIT):
 *   a' = a c_i - b s_i,   b' = b c_i + a s_i.
 * Vector form: the position's table rows are expanded to cos2[j] = c_{i(j)} and sin2[j] = -+s_{i(j)}
 * (minus on each pair's first element) with Gather; then xs = x with each pair swapped (Gather) and
 * y = x * cos2 + xs * sin2. The index vectors (RopeIndices) are built once per launch.
 */
#ifndef DSNPU_KERNELS_ROPE_OPS_H
#define DSNPU_KERNELS_ROPE_OPS_H

#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

namespace dsnpu_kernels {

// Byte offsets of each element's pair partner (`swap`) and table entry (`tidx`), and the sign of its sin
// term (`sign`), for `dim` elements in `layout`; readable by the vector unit on return.
__aicore__ inline void RopeIndices(const AscendC::LocalTensor<uint32_t>& swap, const AscendC::LocalTensor<uint32_t>& tidx,
                                   const AscendC::LocalTensor<float>& sign, uint32_t dim, uint32_t layout) {
    const uint32_t half = dim / 2;
    for (uint32_t j = 0; j < dim; ++j) {
        uint32_t partner, entry;
        bool first;
        if (layout == DSNPU_ROPE_INTERLEAVED) {
            partner = j ^ 1u;
            entry = j / 2;
            first = (j % 2) == 0;
        } else {
            partner = j < half ? j + half : j - half;
            entry = j < half ? j : j - half;
            first = j < half;
        }
        swap.SetValue(j, partner * static_cast<uint32_t>(sizeof(float)));
        tidx.SetValue(j, entry * static_cast<uint32_t>(sizeof(float)));
        sign.SetValue(j, first ? -1.0f : 1.0f);
    }
    AscendC::SetFlag<AscendC::HardEvent::S_V>(0);
    AscendC::WaitFlag<AscendC::HardEvent::S_V>(0);
}

// cos2 and sin2 of one position from its table rows `cos` and `sin` (dim / 2 values each).
__aicore__ inline void RopeTables(const AscendC::LocalTensor<float>& cos2, const AscendC::LocalTensor<float>& sin2,
                                  const AscendC::LocalTensor<float>& cos, const AscendC::LocalTensor<float>& sin,
                                  const AscendC::LocalTensor<uint32_t>& tidx, const AscendC::LocalTensor<float>& sign,
                                  uint32_t dim) {
    AscendC::Gather(cos2, cos, tidx, 0, dim);
    AscendC::Gather(sin2, sin, tidx, 0, dim);
    AscendC::Mul(sin2, sin2, sign, dim);
}

// Rotates the f32 row `row` into `dst` (for f32 `dst` is `row` itself, rotated in place; else the result
// is rounded to T, nearest-even). `a` and `b` are `dim`-element temporaries.
template <typename T>
__aicore__ inline void RopeRow(const AscendC::LocalTensor<T>& dst, const AscendC::LocalTensor<float>& row,
                               const AscendC::LocalTensor<float>& a, const AscendC::LocalTensor<float>& b,
                               const AscendC::LocalTensor<float>& cos2, const AscendC::LocalTensor<float>& sin2,
                               const AscendC::LocalTensor<uint32_t>& swap, uint32_t dim) {
    AscendC::Gather(b, row, swap, 0, dim);
    AscendC::Mul(a, row, cos2, dim);
    AscendC::Mul(b, b, sin2, dim);
    if constexpr (IsSame<T, float>::value) {
        AscendC::Add(row, a, b, dim);
    } else {
        AscendC::Add(a, a, b, dim);
        AscendC::Cast(dst, a, AscendC::RoundMode::CAST_RINT, dim);
    }
}

}  // namespace dsnpu_kernels

#endif  // DSNPU_KERNELS_ROPE_OPS_H
