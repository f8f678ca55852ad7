/*
 * moe_finalize_routing_<t> (t = f32, f16, bf16): combine (MoeFinalizeRouting / MoeTokenUnpermute; the
 * contract is dsnpu-ops' moe::finalize).
 *
 *   out[t] = t( sum_k weights[t, k] * y[expanded_row_idx[t*K + k]]  (+ shared[t])  (+ residual[t]) )
 *
 * accumulated in f32 in that order (each product rounded to f32, then added: the reference's arithmetic
 * exactly), an index of -1 contributing nothing. Tokens are split across blocks (tokens_per_block); a
 * block loads the indices and weights of tokens_per_tile tokens at a time (two DataCopyPad), and for each
 * token walks its row in column chunks of cols_per_tile (the whole row unless it does not fit): every
 * expert row it names streams once through a double-buffered input queue, is widened to f32, scaled and
 * added; shared and residual follow through the same queue; the sum is narrowed and leaves through a
 * double-buffered output queue (for f32 it is accumulated in the output buffer itself).
 * GM traffic: each named expert row read once, shared/residual read once, out written once, plus the
 * indices and weights.
 *
 * UB use (R = tokens_per_tile, C = cols_per_tile, P = round_up_32(C * sizeof(t)), F = round_up_32(C * 4)):
 *   2 round_up_32(R * top_k * 4) (indices, weights) + 2 P (row queue) + 2 P (out queue) + F (scratch)
 *   [+ F (accumulator, 16-bit t only)].
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
class KernelMoeFinalize {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR y, GM_ADDR rowIdx, GM_ADDR weights, GM_ADDR shared, GM_ADDR residual,
                                GM_ADDR out, const DsnpuMoeFinalizeTiling& t) {
        t_ = t;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.tokens_per_block;
        tokens_ = first >= t.tokens ? 0 : Min(t.tokens_per_block, static_cast<uint32_t>(t.tokens - first));
        if (tokens_ == 0 || t.tokens_per_tile == 0 || t.cols_per_tile == 0) {
            tokens_ = 0;
            return;
        }
        first_ = static_cast<uint32_t>(first);
        const uint64_t pairs = static_cast<uint64_t>(t.tokens) * t.top_k;
        const uint64_t elems = static_cast<uint64_t>(t.tokens) * t.hidden;
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), static_cast<uint64_t>(t.rows) * t.hidden);
        idxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(rowIdx), pairs);
        wGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(weights), pairs);
        if (t.has_shared != 0) sharedGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(shared), elems);
        if (t.has_residual != 0) residualGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(residual), elems);
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out), elems);

        const uint32_t pairBytes = t.tokens_per_tile * t.top_k * sizeof(int32_t);
        const uint32_t rowBytes = t.cols_per_tile * sizeof(T);
        const uint32_t f32Bytes = t.cols_per_tile * sizeof(float);
        pipe_.InitBuffer(idx_, pairBytes);
        pipe_.InitBuffer(w_, pairBytes);
        pipe_.InitBuffer(rowQue_, BUFFER_NUM, rowBytes);
        pipe_.InitBuffer(outQue_, BUFFER_NUM, rowBytes);
        pipe_.InitBuffer(tmp_, f32Bytes);
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(acc_, f32Bytes);
        }
    }

    __aicore__ inline void Process() {
        if (tokens_ == 0) return;
        for (uint32_t t0 = 0; t0 < tokens_; t0 += t_.tokens_per_tile) {
            const uint32_t n = Min(t_.tokens_per_tile, tokens_ - t0);
            LoadPairs(t0, n);
            for (uint32_t i = 0; i < n; ++i) {
                for (uint32_t c0 = 0; c0 < t_.hidden; c0 += t_.cols_per_tile) {
                    Combine(t0 + i, i, c0, Min(t_.cols_per_tile, t_.hidden - c0));
                }
            }
            SetFlag<HardEvent::S_MTE2>(0);
            WaitFlag<HardEvent::S_MTE2>(0);
        }
    }

private:
    __aicore__ inline void LoadPairs(uint32_t t0, uint32_t n) {
        const DataCopyExtParams p(1, n * t_.top_k * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0);
        const uint64_t at = static_cast<uint64_t>(first_ + t0) * t_.top_k;
        DataCopyPad(idx_.Get<int32_t>(), idxGm_[at], p, DataCopyPadExtParams<int32_t>(false, 0, 0, 0));
        DataCopyPad(w_.Get<float>(), wGm_[at], p, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        SetFlag<HardEvent::MTE2_S>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
    }

    // Row `src` of `gm` (hidden elements apart), columns [c0, c0 + cols), into the row queue.
    __aicore__ inline LocalTensor<T> Load(const GlobalTensor<T>& gm, uint64_t src, uint32_t c0, uint32_t cols) {
        LocalTensor<T> r = rowQue_.AllocTensor<T>();
        DataCopyPad(r, gm[src * t_.hidden + c0], DataCopyExtParams(1, cols * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        rowQue_.EnQue(r);
        return rowQue_.DeQue<T>();
    }

    // The row in f32: itself for f32, widened into the scratch row otherwise.
    __aicore__ inline LocalTensor<float> Widen(const LocalTensor<T>& r, uint32_t cols) {
        if constexpr (IS_F32) {
            return r;
        } else {
            LocalTensor<float> f = tmp_.Get<float>();
            ToFloat(f, r, cols);
            return f;
        }
    }

    __aicore__ inline void Combine(uint32_t token, uint32_t i, uint32_t c0, uint32_t cols) {
        const int32_t n = static_cast<int32_t>(cols);
        LocalTensor<T> o = outQue_.AllocTensor<T>();
        LocalTensor<float> acc;
        if constexpr (IS_F32) {
            acc = o;
        } else {
            acc = acc_.Get<float>();
        }
        LocalTensor<float> tmp = tmp_.Get<float>();
        LocalTensor<int32_t> idx = idx_.Get<int32_t>();
        LocalTensor<float> w = w_.Get<float>();
        bool any = false;
        for (uint32_t k = 0; k < t_.top_k; ++k) {
            const int32_t r = idx.GetValue(i * t_.top_k + k);
            if (r < 0) continue;
            float wt = w.GetValue(i * t_.top_k + k);
            if (t_.mutation == 1) wt *= 1.001f;  // test-only (tiling_moe.rs)
            LocalTensor<T> row = Load(yGm_, static_cast<uint64_t>(r), c0, cols);
            LocalTensor<float> v = Widen(row, cols);
            if (!any) {
                Muls(acc, v, wt, n);  // 0 + w * y, without a pass to clear acc
                any = true;
            } else {
                Muls(tmp, v, wt, n);
                Add(acc, acc, tmp, n);
            }
            rowQue_.FreeTensor(row);
        }
        if (!any) Duplicate(acc, 0.0f, n);
        if (t_.mutation == 2) Muls(acc, acc, 1.001f, n);  // test-only (tiling_moe.rs)
        const uint64_t at = static_cast<uint64_t>(first_ + token);
        if (t_.has_shared != 0) AddRow(acc, sharedGm_, at, c0, cols);
        if (t_.has_residual != 0) AddRow(acc, residualGm_, at, c0, cols);
        if (t_.mutation == 3) Muls(acc, acc, 1.001f, n);  // test-only (tiling_moe.rs)
        if constexpr (!IS_F32) {
            FromFloat(o, acc, cols);
        }
        outQue_.EnQue(o);
        o = outQue_.DeQue<T>();
        DataCopyPad(outGm_[at * t_.hidden + c0], o, DataCopyExtParams(1, cols * static_cast<uint32_t>(sizeof(T)), 0, 0, 0));
        outQue_.FreeTensor(o);
    }

    __aicore__ inline void AddRow(const LocalTensor<float>& acc, const GlobalTensor<T>& gm, uint64_t token, uint32_t c0,
                                  uint32_t cols) {
        LocalTensor<T> row = Load(gm, token, c0, cols);
        Add(acc, acc, Widen(row, cols), static_cast<int32_t>(cols));
        rowQue_.FreeTensor(row);
    }

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> rowQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> outQue_;
    TBuf<TPosition::VECCALC> idx_, w_, tmp_, acc_;
    GlobalTensor<T> yGm_, sharedGm_, residualGm_, outGm_;
    GlobalTensor<int32_t> idxGm_;
    GlobalTensor<float> wGm_;
    DsnpuMoeFinalizeTiling t_{};
    uint32_t tokens_ = 0, first_ = 0;
};

template <typename T>
__aicore__ inline void MoeFinalize(GM_ADDR y, GM_ADDR rowIdx, GM_ADDR weights, GM_ADDR shared, GM_ADDR residual,
                                   GM_ADDR out, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMoeFinalizeTiling, t, tiling);
    KernelMoeFinalize<T> op;
    op.Init(y, rowIdx, weights, shared, residual, out, t);
    op.Process();
}

}  // namespace

#define DSNPU_MOE_FINALIZE(suffix, type)                                                                     \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(moe_finalize_routing_##suffix)(                       \
        GM_ADDR y, GM_ADDR rowIdx, GM_ADDR weights, GM_ADDR shared, GM_ADDR residual, GM_ADDR out,            \
        GM_ADDR workspace, GM_ADDR tiling) {                                                                  \
        (void)workspace;                                                                                      \
        MoeFinalize<type>(y, rowIdx, weights, shared, residual, out, tiling);                                 \
    }

DSNPU_MOE_FINALIZE(f32, float)
DSNPU_MOE_FINALIZE(f16, half)
DSNPU_MOE_FINALIZE(bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/moe_finalize_routing.inc"
#endif
