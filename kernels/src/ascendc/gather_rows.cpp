/*
 * gather_rows_<t> (t = f32, f16, bf16): y[r, :cols] = x[src(r) .. src(r) + cols], r < rows, r = i * inner + j,
 *   src(r) = offset + i * stride_a + j * stride_b (+ idx[r] * stride_idx with an index list).
 * gather_rows_<t>_f32 (t = f32, f16, bf16): the same rows widened to f32 on the way (x in t, y in f32): the
 * lookup of a 16-bit embedding table by an f32 model, and the f32 copy of 16-bit activations (router
 * input, logits). Each chunk goes GM -> UB (t) -> Cast -> UB (f32) -> GM; UB use doubles accordingly.
 * One kernel for the data movement of a device-resident model step: embedding lookups (idx = token ids,
 * stride_idx = hidden), picking rows (each sequence's last token), and permutations of two leading axes
 * ([A, B, c] <-> [B, A, c] through the strides). Pure data movement, no arithmetic: GM -> UB -> GM.
 *
 * Rows are split into runs of rows_per_block per block. gather_rows_<t> moves them through a queue of two
 * tiles (the next comes in on MTE2 while one goes out on MTE3): rows_per_tile > 1 (whole rows, no index
 * list, the row stride >= cols) moves up to that many rows of one outer index per copy each way (with
 * inner 1, consecutive outer rows); otherwise each
 * row goes in chunks of cols_per_tile elements. gather_rows_<t>_f32 moves one chunk at a time through two
 * buffers (t, then f32), ordered by flags. An index outside x faults on the checked GM read (negative
 * indices read as huge unsigned ones). UB use: gather_rows_<t> 2 * rows_per_tile * round_up_32(cols_per_tile
 * * s); gather_rows_<t>_f32 round_up_32(cols_per_tile * s) + round_up_32(cols_per_tile * 4).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
__aicore__ inline void GatherRows(GM_ADDR x, GM_ADDR idx, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuGatherRowsTiling, t, tiling);
    const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.rows_per_block;
    if (first >= t.rows || t.cols == 0 || t.inner == 0 || t.cols_per_tile == 0 || t.rows_per_tile == 0) return;
    const uint32_t n = Min(t.rows_per_block, static_cast<uint32_t>(t.rows - first));
    GlobalTensor<T> xGm, yGm;
    GlobalTensor<int32_t> idxGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), t.src_len);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), static_cast<uint64_t>(t.rows) * t.cols);
    if (t.has_idx != 0) idxGm.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(idx), t.rows);
    // Two tiles in flight: the next one comes in (MTE2) while this one goes out (MTE3).
    TPipe pipe;
    TQueBind<TPosition::VECIN, TPosition::VECOUT, 2> q;
    const uint32_t pitch = AlignUp(t.cols_per_tile * sizeof(T), UB_BLOCK);
    pipe.InitBuffer(q, 2, t.rows_per_tile * pitch);
    const DataCopyPadExtParams<T> noPad(false, 0, 0, T(0));
    const uint32_t rowBytes = t.cols * static_cast<uint32_t>(sizeof(T));
    if (t.rows_per_tile > 1) {
        // Whole rows, no index list (the tiling's promise): up to rows_per_tile rows of one outer index
        // are stride_b apart in x (stride_a when inner is 1) and consecutive in y, so one copy each way
        // moves them all.
        const uint32_t stride = t.inner == 1 ? t.stride_a : t.stride_b;
        const uint32_t gap = (stride - t.cols) * static_cast<uint32_t>(sizeof(T));
        for (uint32_t k = 0; k < n;) {
            const uint32_t r = static_cast<uint32_t>(first) + k;
            const uint32_t i = r / t.inner, j = r % t.inner;
            const uint32_t m = Min(t.rows_per_tile, t.inner == 1 ? n - k : Min(t.inner - j, n - k));
            const uint64_t src = static_cast<uint64_t>(t.offset) + static_cast<uint64_t>(i) * t.stride_a +
                                 static_cast<uint64_t>(j) * t.stride_b;
            LocalTensor<T> tile = q.AllocTensor<T>();
            DataCopyPad(tile, xGm[src], DataCopyExtParams(static_cast<uint16_t>(m), rowBytes, gap, 0, 0), noPad);
            q.EnQue(tile);
            tile = q.DeQue<T>();
            DataCopyPad(yGm[static_cast<uint64_t>(r) * t.cols], tile,
                        DataCopyExtParams(static_cast<uint16_t>(m), rowBytes, 0, 0, 0));
            q.FreeTensor(tile);
            k += m;
        }
        return;
    }
    for (uint32_t k = 0; k < n; ++k) {
        const uint32_t r = static_cast<uint32_t>(first) + k;
        const uint32_t i = r / t.inner, j = r % t.inner;
        uint64_t src = static_cast<uint64_t>(t.offset) + static_cast<uint64_t>(i) * t.stride_a +
                       static_cast<uint64_t>(j) * t.stride_b;
        if (t.has_idx != 0) {
            // Through u32: a negative index becomes a huge one and faults on the checked read.
            src += static_cast<uint64_t>(static_cast<uint32_t>(idxGm.GetValue(r))) * t.stride_idx;
        }
        const uint64_t dst = static_cast<uint64_t>(r) * t.cols;
        for (uint32_t c0 = 0; c0 < t.cols; c0 += t.cols_per_tile) {
            const uint32_t c = Min(t.cols_per_tile, t.cols - c0);
            const DataCopyExtParams p(1, c * static_cast<uint32_t>(sizeof(T)), 0, 0, 0);
            LocalTensor<T> tile = q.AllocTensor<T>();
            DataCopyPad(tile, xGm[src + c0], p, noPad);
            q.EnQue(tile);
            tile = q.DeQue<T>();
            DataCopyPad(yGm[dst + c0], tile, p);
            q.FreeTensor(tile);
        }
    }
}

// gather_rows_<t>_f32: as GatherRows, each chunk widened to f32 in UB before it is copied out.
template <typename S>
__aicore__ inline void GatherRowsWiden(GM_ADDR x, GM_ADDR idx, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuGatherRowsTiling, t, tiling);
    const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.rows_per_block;
    if (first >= t.rows || t.cols == 0 || t.inner == 0 || t.cols_per_tile == 0) return;
    const uint32_t n = Min(t.rows_per_block, static_cast<uint32_t>(t.rows - first));
    GlobalTensor<S> xGm;
    GlobalTensor<float> yGm;
    GlobalTensor<int32_t> idxGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ S*>(x), t.src_len);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(y), static_cast<uint64_t>(t.rows) * t.cols);
    if (t.has_idx != 0) idxGm.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(idx), t.rows);
    TPipe pipe;
    TBuf<TPosition::VECCALC> inBuf, outBuf;
    pipe.InitBuffer(inBuf, AlignUp(t.cols_per_tile * sizeof(S), UB_BLOCK));
    pipe.InitBuffer(outBuf, AlignUp(t.cols_per_tile * sizeof(float), UB_BLOCK));
    LocalTensor<S> in = inBuf.Get<S>();
    LocalTensor<float> out = outBuf.Get<float>();
    const DataCopyPadExtParams<S> noPad(false, 0, 0, S(0));
    for (uint32_t k = 0; k < n; ++k) {
        const uint32_t r = static_cast<uint32_t>(first) + k;
        const uint32_t i = r / t.inner, j = r % t.inner;
        uint64_t src = static_cast<uint64_t>(t.offset) + static_cast<uint64_t>(i) * t.stride_a +
                       static_cast<uint64_t>(j) * t.stride_b;
        if (t.has_idx != 0) {
            src += static_cast<uint64_t>(static_cast<uint32_t>(idxGm.GetValue(r))) * t.stride_idx;
        }
        const uint64_t dst = static_cast<uint64_t>(r) * t.cols;
        for (uint32_t c0 = 0; c0 < t.cols; c0 += t.cols_per_tile) {
            const uint32_t c = Min(t.cols_per_tile, t.cols - c0);
            DataCopyPad(in, xGm[src + c0], DataCopyExtParams(1, c * static_cast<uint32_t>(sizeof(S)), 0, 0, 0),
                        noPad);
            SetFlag<HardEvent::MTE2_V>(0);
            WaitFlag<HardEvent::MTE2_V>(0);
            if constexpr (IsSame<S, float>::value) {
                Muls(out, in, 1.0f, static_cast<int32_t>(c));
            } else {
                Cast(out, in, RoundMode::CAST_NONE, c);
            }
            SetFlag<HardEvent::V_MTE3>(0);
            WaitFlag<HardEvent::V_MTE3>(0);
            DataCopyPad(yGm[dst + c0], out, DataCopyExtParams(1, c * static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
            // The next chunk's load and cast reuse both buffers.
            SetFlag<HardEvent::MTE3_MTE2>(0);
            WaitFlag<HardEvent::MTE3_MTE2>(0);
            SetFlag<HardEvent::MTE3_V>(0);
            WaitFlag<HardEvent::MTE3_V>(0);
            SetFlag<HardEvent::V_MTE2>(0);
            WaitFlag<HardEvent::V_MTE2>(0);
        }
    }
}

}  // namespace

#define DSNPU_GATHER_ROWS_F32(name, type)                                                                    \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(name)(GM_ADDR x, GM_ADDR idx, GM_ADDR y,              \
                                                             GM_ADDR workspace, GM_ADDR tiling) {            \
        (void)workspace;                                                                                     \
        GatherRowsWiden<type>(x, idx, y, tiling);                                                            \
    }

DSNPU_GATHER_ROWS_F32(gather_rows_f32_f32, float)
DSNPU_GATHER_ROWS_F32(gather_rows_f16_f32, half)
DSNPU_GATHER_ROWS_F32(gather_rows_bf16_f32, bfloat16_t)

#define DSNPU_GATHER_ROWS(name, type)                                                                        \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(name)(GM_ADDR x, GM_ADDR idx, GM_ADDR y,              \
                                                             GM_ADDR workspace, GM_ADDR tiling) {            \
        (void)workspace;                                                                                     \
        GatherRows<type>(x, idx, y, tiling);                                                                 \
    }

DSNPU_GATHER_ROWS(gather_rows_f32, float)
DSNPU_GATHER_ROWS(gather_rows_f16, half)
DSNPU_GATHER_ROWS(gather_rows_bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/gather_rows.inc"
#endif
