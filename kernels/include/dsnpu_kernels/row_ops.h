/*
 * Row-wise operations on a 2-D f32 tile in the UB (the online softmax of the attention kernels): `rows`
 * rows of `cols` values, row r at element r * pitch. Each is a few repeat-form instructions for the whole
 * tile — one repeat per row and 64-column segment, the rows walked by the repeat stride — where the count
 * forms need one instruction (and its issue cost) per row. Only the `cols` columns are read or written:
 * the row padding may hold anything.
 *
 * Limits (the repeat form's fields; RowTile::Valid): rows <= 255, pitch a multiple of 8 and at most
 * 8 * 255, cols <= pitch. A per-row
 * vector `v` (RowBroadcast's source, RowMax's and RowSum's destination) starts on a 32-byte boundary and
 * has round_up(rows, 8) elements; `bcast` has 8 * round_up(rows, 8), `work` 64 * rows.
 */
#ifndef DSNPU_KERNELS_ROW_OPS_H
#define DSNPU_KERNELS_ROW_OPS_H

#include "dsnpu_kernels/kernel_util.h"

namespace dsnpu_kernels {

constexpr uint32_t ROW_SEG = 64;  // f32 values of one 256-byte repeat

struct RowTile {
    uint32_t rows;
    uint32_t cols;
    uint32_t pitch;
    __aicore__ inline uint8_t RepStride() const { return static_cast<uint8_t>(pitch / 8); }
    // Within the limits above (the instructions' 8-bit fields would wrap silently otherwise): a kernel
    // checks its tiling against them once, at entry.
    __aicore__ inline bool Valid() const {
        return rows >= 1 && rows <= 255 && cols >= 1 && cols <= pitch && pitch % 8 == 0 && pitch / 8 <= 255;
    }
};

// dst[r] = max (kMax) or sum of row r. Wider rows first fold their 64-column segments into `work` (one
// instruction per segment for all rows; the first two segments in one, from a row of at least 128), then
// one WholeReduce takes each row's 64 values.
template <bool kMax>
__aicore__ inline void RowReduce(const AscendC::LocalTensor<float>& dst, const AscendC::LocalTensor<float>& src,
                                 const AscendC::LocalTensor<float>& work, RowTile t) {
    using namespace AscendC;
    const uint32_t first = Min(ROW_SEG, t.cols);
    const int32_t rows = static_cast<int32_t>(t.rows), mask = static_cast<int32_t>(first);
    if (t.cols <= ROW_SEG) {
        if (kMax) {
            WholeReduceMax(dst, src, mask, rows, 1, 1, t.RepStride(), ReduceOrder::ORDER_ONLY_VALUE);
        } else {
            WholeReduceSum(dst, src, mask, rows, 1, 1, t.RepStride());
        }
        return;
    }
    const uint8_t rep = t.RepStride();
    uint32_t c = ROW_SEG;
    if (t.cols >= 2 * ROW_SEG) {  // the first fold reads the first two whole segments
        if (kMax) {
            Max(work, src, src[ROW_SEG], ROW_SEG, static_cast<uint8_t>(t.rows), BinaryRepeatParams(1, 1, 1, 8, rep, rep));
        } else {
            Add(work, src, src[ROW_SEG], ROW_SEG, static_cast<uint8_t>(t.rows), BinaryRepeatParams(1, 1, 1, 8, rep, rep));
        }
        c = 2 * ROW_SEG;
    } else {
        Muls(work, src, 1.0f, first, static_cast<uint8_t>(t.rows), UnaryRepeatParams(1, 1, 8, rep));  // exact copy
    }
    for (; c < t.cols; c += ROW_SEG) {
        const uint32_t n = Min(ROW_SEG, t.cols - c);
        if (kMax) {
            Max(work, work, src[c], n, static_cast<uint8_t>(t.rows), BinaryRepeatParams(1, 1, 1, 8, 8, rep));
        } else {
            Add(work, work, src[c], n, static_cast<uint8_t>(t.rows), BinaryRepeatParams(1, 1, 1, 8, 8, rep));
        }
    }
    if (kMax) {
        WholeReduceMax(dst, work, mask, rows, 1, 1, 8, ReduceOrder::ORDER_ONLY_VALUE);
    } else {
        WholeReduceSum(dst, work, mask, rows, 1, 1, 8);
    }
}

__aicore__ inline void RowMax(const AscendC::LocalTensor<float>& dst, const AscendC::LocalTensor<float>& src,
                              const AscendC::LocalTensor<float>& work, RowTile t) {
    RowReduce<true>(dst, src, work, t);
}
__aicore__ inline void RowSum(const AscendC::LocalTensor<float>& dst, const AscendC::LocalTensor<float>& src,
                              const AscendC::LocalTensor<float>& work, RowTile t) {
    RowReduce<false>(dst, src, work, t);
}

// bcast's block r = v[r] eight times: the per-row operand of RowAdd / RowMul.
__aicore__ inline void RowBroadcast(const AscendC::LocalTensor<float>& bcast, const AscendC::LocalTensor<float>& v,
                                    uint32_t rows) {
    AscendC::Brcb(bcast, v, static_cast<uint8_t>(CeilDiv(rows, 8)), AscendC::BrcbRepeatParams(1, 8));
}

// tile[r, c] = tile[r, c] + bcast[r] (kMul: *) for c < cols; bcast from RowBroadcast (its block r is
// read for every data block of row r: block stride 0, repeat stride 1).
template <bool kMul>
__aicore__ inline void RowApply(const AscendC::LocalTensor<float>& tile, const AscendC::LocalTensor<float>& bcast,
                                RowTile t) {
    using namespace AscendC;
    const uint8_t rep = t.RepStride();
    for (uint32_t c = 0; c < t.cols; c += ROW_SEG) {
        const uint32_t n = Min(ROW_SEG, t.cols - c);
        const BinaryRepeatParams p(1, 1, 0, rep, rep, 1);
        if (kMul) {
            Mul(tile[c], tile[c], bcast, n, static_cast<uint8_t>(t.rows), p);
        } else {
            Add(tile[c], tile[c], bcast, n, static_cast<uint8_t>(t.rows), p);
        }
    }
}
__aicore__ inline void RowAdd(const AscendC::LocalTensor<float>& tile, const AscendC::LocalTensor<float>& bcast,
                              RowTile t) {
    RowApply<false>(tile, bcast, t);
}
__aicore__ inline void RowMul(const AscendC::LocalTensor<float>& tile, const AscendC::LocalTensor<float>& bcast,
                              RowTile t) {
    RowApply<true>(tile, bcast, t);
}

// tile[r, c] = s * tile[r, c] + bcast[r] for c < cols, one rounding (FusedMulAdd): `scale` a 32-byte block
// of s (read for every data block: block and repeat stride 0), bcast from RowBroadcast.
__aicore__ inline void RowScaleAdd(const AscendC::LocalTensor<float>& tile, const AscendC::LocalTensor<float>& scale,
                                   const AscendC::LocalTensor<float>& bcast, RowTile t) {
    const uint8_t rep = t.RepStride();
    for (uint32_t c = 0; c < t.cols; c += ROW_SEG) {
        AscendC::FusedMulAdd(tile[c], scale, bcast, Min(ROW_SEG, t.cols - c), static_cast<uint8_t>(t.rows),
                             AscendC::BinaryRepeatParams(1, 0, 0, rep, 0, 1));
    }
}

// tile = exp(tile) and tile = s * tile, and dst += src (both tiles with t's shape and pitch), over the
// cols columns only.
__aicore__ inline void TileExp(const AscendC::LocalTensor<float>& tile, RowTile t) {
    for (uint32_t c = 0; c < t.cols; c += ROW_SEG) {
        AscendC::Exp(tile[c], tile[c], Min(ROW_SEG, t.cols - c), static_cast<uint8_t>(t.rows),
                     AscendC::UnaryRepeatParams(1, 1, t.RepStride(), t.RepStride()));
    }
}
__aicore__ inline void TileMuls(const AscendC::LocalTensor<float>& tile, float s, RowTile t) {
    for (uint32_t c = 0; c < t.cols; c += ROW_SEG) {
        AscendC::Muls(tile[c], tile[c], s, Min(ROW_SEG, t.cols - c), static_cast<uint8_t>(t.rows),
                      AscendC::UnaryRepeatParams(1, 1, t.RepStride(), t.RepStride()));
    }
}
__aicore__ inline void TileAdd(const AscendC::LocalTensor<float>& dst, const AscendC::LocalTensor<float>& src,
                               RowTile t) {
    const uint8_t rep = t.RepStride();
    for (uint32_t c = 0; c < t.cols; c += ROW_SEG) {
        AscendC::Add(dst[c], dst[c], src[c], Min(ROW_SEG, t.cols - c), static_cast<uint8_t>(t.rows),
                     AscendC::BinaryRepeatParams(1, 1, 1, rep, rep, rep));
    }
}

}  // namespace dsnpu_kernels

#endif
