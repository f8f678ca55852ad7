/*
 * argmax_<t> (t = f32, f16, bf16): out[r] = the lowest index of the largest of x[r, :cols], compared in f32
 * (greedy sampling on the device: only the ids, [rows] i32, go back to the host).
 *
 * Rows are split into runs of rows_per_block per block; a row is scanned cols_per_tile elements at a time:
 * ReduceMax with its index over the tile (the lowest index of the tile's maximum), and a later tile replaces
 * the running best only when strictly larger, so ties keep the lowest index overall. A row holding a NaN or
 * an infinity gets -1 instead (each tile's x - x, summed: 0 when every element is finite, NaN otherwise), so
 * that greedy decoding on the device cannot return an id from non-finite logits unnoticed; the caller
 * decides (the ops backend answers such rows on the host as the reference does, the model engine refuses
 * the step).
 * UB use (bytes, s = sizeof(t), C = cols_per_tile): round_up_32(C s) [+ round_up_32(C 4), 16-bit t]
 *   + 32 (result) + round_up_32(ceil(C / 64) * 2 * 4) (ReduceMax work) + round_up_32(rows_per_block * 4)
 *   (the block's ids, copied out once).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
__aicore__ inline void Argmax(GM_ADDR x, GM_ADDR out, GM_ADDR tiling) {
    constexpr bool IS_F32 = IsSame<T, float>::value;
    GET_TILING_DATA_WITH_STRUCT(DsnpuArgmaxTiling, t, tiling);
    const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.rows_per_block;
    if (first >= t.rows || t.cols == 0 || t.cols_per_tile == 0) return;
    const uint32_t n = Min(t.rows_per_block, static_cast<uint32_t>(t.rows - first));
    GlobalTensor<T> xGm;
    GlobalTensor<int32_t> outGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.rows) * t.cols);
    outGm.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(out), t.rows);
    TPipe pipe;
    TBuf<TPosition::VECCALC> raw, wide, res, work, ids;
    const uint32_t tileBytes = AlignUp(t.cols_per_tile * sizeof(T), UB_BLOCK);
    pipe.InitBuffer(raw, tileBytes);
    if constexpr (!IS_F32) {
        pipe.InitBuffer(wide, tileBytes / sizeof(T) * sizeof(float));
    }
    pipe.InitBuffer(res, UB_BLOCK);
    pipe.InitBuffer(work, AlignUp(CeilDiv(t.cols_per_tile, 64) * 2 * sizeof(float), UB_BLOCK));
    pipe.InitBuffer(ids, AlignUp(t.rows_per_block * sizeof(int32_t), UB_BLOCK));
    LocalTensor<int32_t> found = ids.Get<int32_t>();
    const DataCopyPadExtParams<T> noPad(false, 0, 0, T(0));
    for (uint32_t k = 0; k < n; ++k) {
        const uint64_t r = first + k;
        float best = 0.0f;
        int32_t bestIdx = -1;
        bool finite = true;
        for (uint32_t c0 = 0; c0 < t.cols && finite; c0 += t.cols_per_tile) {
            const uint32_t c = Min(t.cols_per_tile, t.cols - c0);
            LocalTensor<T> tile = raw.Get<T>();
            DataCopyPad(tile, xGm[r * t.cols + c0], DataCopyExtParams(1, c * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                        noPad);
            SetFlag<HardEvent::MTE2_V>(0);
            WaitFlag<HardEvent::MTE2_V>(0);
            LocalTensor<float> f;
            if constexpr (IS_F32) {
                f = tile;
            } else {
                f = wide.Get<float>();
                Cast(f, tile, RoundMode::CAST_NONE, c);
            }
            LocalTensor<float> m = res.Get<float>();
            ReduceMax(m, f, work.Get<float>(), static_cast<int32_t>(c), true);
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            const float v = m.GetValue(0);
            const uint32_t at = m.template ReinterpretCast<uint32_t>().GetValue(1);
            if (bestIdx < 0 || v > best) {
                best = v;
                bestIdx = static_cast<int32_t>(c0 + at);
            }
            // The tile is no longer needed: x - x in place, summed into m (read above).
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            Sub(f, f, f, static_cast<int32_t>(c));
            ReduceSum(m, f, work.Get<float>(), static_cast<int32_t>(c));
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            const float sum = m.GetValue(0);
            finite = sum == sum;
            // The next tile's load overwrites what the vector unit just read.
            SetFlag<HardEvent::V_MTE2>(0);
            WaitFlag<HardEvent::V_MTE2>(0);
        }
        found.SetValue(k, finite ? bestIdx : -1);
    }
    SetFlag<HardEvent::S_MTE3>(0);
    WaitFlag<HardEvent::S_MTE3>(0);
    DataCopyPad(outGm[first], found, DataCopyExtParams(1, n * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0));
}

}  // namespace

#define DSNPU_ARGMAX(name, type)                                                                              \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(name)(GM_ADDR x, GM_ADDR out, GM_ADDR workspace,       \
                                                             GM_ADDR tiling) {                                \
        (void)workspace;                                                                                      \
        Argmax<type>(x, out, tiling);                                                                         \
    }

DSNPU_ARGMAX(argmax_f32, float)
DSNPU_ARGMAX(argmax_f16, half)
DSNPU_ARGMAX(argmax_bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/argmax.inc"
#endif
