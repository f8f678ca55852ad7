/*
 * softmax_<t> (t = f32, f16, bf16): out[r, :] = softmax(x[r, :cols]) in f32, the semantics of dsnpu-ops'
 * `sampling::softmax`: m = max x; out = exp(x - m) / sum exp(x - m). A row holding NaN, or whose maximum
 * is +inf or -inf, comes out all NaN on its own (IEEE: exp(NaN) and inf - inf propagate into the sum).
 *
 * Rows are split into runs of rows_per_block per block; a row is walked cols_per_tile elements at a time
 * in two passes over GM (a row of DeepSeek-V3's vocabulary does not fit in UB): the running maximum m
 * and sum of exp(x - m) (online: when a tile raises m, the sum so far is scaled by exp(m_old - m_new);
 * tiles whose maximum is still -inf add nothing, so a leading run of masked entries stays 0), then
 * exp(x - m) * (1 / sum) written out. The per-tile sums are the vector unit's, added up in f32 tile by
 * tile (the reference adds element by element: they agree to rounding).
 * UB use (bytes, s = sizeof(t), C = cols_per_tile): round_up_32(C s) [+ C 4, 16-bit t] + C 4 (the f32
 *   result tile) + 32 (reduction result) + round_up_32(ceil(C s' / 256) * 2 * 4) (reduction work, s' = 4)
 *   + 32 (the scalar exp).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
class KernelSoftmax {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR out, const DsnpuSoftmaxTiling& t) {
        t_ = t;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.rows) * t.cols);
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out), static_cast<uint64_t>(t.rows) * t.cols);
        const uint32_t c = t.cols_per_tile;
        pipe_.InitBuffer(raw_, AlignUp(c * sizeof(T), UB_BLOCK));
        if constexpr (!IS_F32) pipe_.InitBuffer(wide_, c * sizeof(float));
        pipe_.InitBuffer(res_, UB_BLOCK);
        pipe_.InitBuffer(work_, AlignUp(CeilDiv(c * sizeof(float), 256u) * 2 * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(y_, c * sizeof(float));
        pipe_.InitBuffer(one_, UB_BLOCK);
    }

    __aicore__ inline void Process() {
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t_.rows_per_block;
        if (first >= t_.rows) return;
        const uint32_t n = Min(t_.rows_per_block, static_cast<uint32_t>(t_.rows - first));
        for (uint32_t k = 0; k < n; ++k) Row(first + k);
    }

private:
    // Tile [c0, c0 + c) of row r in f32 in UB.
    __aicore__ inline LocalTensor<float> Load(uint64_t r, uint32_t c0, uint32_t c) {
        LocalTensor<T> tile = raw_.Get<T>();
        // The previous pass's vector work on this buffer is done before the load overwrites it.
        SetFlag<HardEvent::V_MTE2>(0);
        WaitFlag<HardEvent::V_MTE2>(0);
        DataCopyPad(tile, xGm_[r * t_.cols + c0], DataCopyExtParams(1, c * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
        if constexpr (IS_F32) {
            return tile;
        } else {
            LocalTensor<float> f = wide_.Get<float>();
            Cast(f, tile, RoundMode::CAST_NONE, c);
            return f;
        }
    }

    // Element 0 of a vector result, read by the scalar unit.
    __aicore__ inline float Scalar(const LocalTensor<float>& t) {
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        const float v = t.GetValue(0);
        // The next vector instruction may overwrite it only after the read.
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        return v;
    }

    // exp(x) through the vector unit (no scalar transcendental on the AI Core).
    __aicore__ inline float VecExp(float x) {
        LocalTensor<float> e = one_.Get<float>();
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Duplicate(e, x, 8);
        Exp(e, e, 8);
        return Scalar(e);
    }

    __aicore__ inline void Row(uint64_t r) {
        const uint32_t cols = t_.cols, step = t_.cols_per_tile;
        float m = -INFINITY, sum = 0.0f;
        for (uint32_t c0 = 0; c0 < cols; c0 += step) {
            const uint32_t c = Min(step, cols - c0);
            LocalTensor<float> f = Load(r, c0, c);
            ReduceMax(res_.Get<float>(), f, work_.Get<float>(), static_cast<int32_t>(c), false);
            const float v = Scalar(res_.Get<float>());
            // NaN first in a tile stays (nothing compares larger): the row comes out NaN as it should.
            const float next = (c0 == 0 || v > m || v != v) ? v : m;
            if (next == -INFINITY) continue;  // nothing but -inf so far: the sum stays 0
            if (c0 != 0 && next != m) sum *= VecExp(m - next);
            m = next;
            LocalTensor<float> e = y_.Get<float>();
            Adds(e, f, -m, static_cast<int32_t>(c));
            Exp(e, e, static_cast<int32_t>(c));
            ReduceSum(res_.Get<float>(), e, work_.Get<float>(), static_cast<int32_t>(c));
            sum += Scalar(res_.Get<float>());
        }
        const float inv = 1.0f / sum;
        for (uint32_t c0 = 0; c0 < cols; c0 += step) {
            const uint32_t c = Min(step, cols - c0);
            LocalTensor<float> f = Load(r, c0, c);
            LocalTensor<float> e = y_.Get<float>();
            // The previous tile's store has read e before it is overwritten.
            SetFlag<HardEvent::MTE3_V>(0);
            WaitFlag<HardEvent::MTE3_V>(0);
            Adds(e, f, -m, static_cast<int32_t>(c));
            Exp(e, e, static_cast<int32_t>(c));
            Muls(e, e, inv, static_cast<int32_t>(c));
            SetFlag<HardEvent::V_MTE3>(0);
            WaitFlag<HardEvent::V_MTE3>(0);
            DataCopyPad(outGm_[r * t_.cols + c0], e,
                        DataCopyExtParams(1, c * static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
        }
        // The row's last store has read e before the next row's first pass writes it.
        SetFlag<HardEvent::MTE3_V>(0);
        WaitFlag<HardEvent::MTE3_V>(0);
    }

    DsnpuSoftmaxTiling t_{};
    GlobalTensor<T> xGm_;
    GlobalTensor<float> outGm_;
    TPipe pipe_;
    TBuf<TPosition::VECCALC> raw_, wide_, res_, work_, y_, one_;
};

}  // namespace

#define DSNPU_SOFTMAX(name, type)                                                                             \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(name)(GM_ADDR x, GM_ADDR out, GM_ADDR workspace,       \
                                                             GM_ADDR tiling) {                                \
        (void)workspace;                                                                                      \
        GET_TILING_DATA_WITH_STRUCT(DsnpuSoftmaxTiling, t, tiling);                                          \
        if (t.rows == 0 || t.cols == 0 || t.cols_per_tile == 0 || t.rows_per_block == 0) return;             \
        KernelSoftmax<type> op;                                                                               \
        op.Init(x, out, t);                                                                                   \
        op.Process();                                                                                         \
    }

DSNPU_SOFTMAX(softmax_f32, float)
DSNPU_SOFTMAX(softmax_f16, half)
DSNPU_SOFTMAX(softmax_bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/softmax.inc"
#endif
