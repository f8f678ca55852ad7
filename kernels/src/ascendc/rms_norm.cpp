/*
 * rms_norm_<t> and add_rms_norm_<t> (t = f32, f16, bf16): RMSNorm over the last axis, optionally fused with
 * the residual add, computed in f32.
 *
 *   rms_norm:     y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w
 *   add_rms_norm: s = x + residual (rounded to t); y = rms_norm(s); both y and s are written.
 *
 * Rows are split across blocks (DsnpuRmsNormTiling.rows_per_block) and streamed through UB in tiles of
 * rows_per_tile rows with double-buffered input queues; each row sits in UB padded to 32 bytes, and the
 * vector work on the padding never reaches GM. Results go back into the input buffers they came from (y
 * into x's, the sum into the residual's) and are copied out from there, so no output queues are needed
 * (an MTE3_MTE2 flag per buffer, CopyOutGuard, keeps the refill behind the copy-out);
 * f32 rows are normalised in place. UB use (the host tiling's budget, bytes; R = rows_per_tile,
 * P = round_up_32(cols * sizeof(t)), F = P / sizeof(t) * 4):
 *   2 R P (x) [+ 2 R P (residual)] [+ R F (x in f32, 16-bit t only)] + F (weight) + F (scratch row)
 *   + 32 + round_up_32(ceil(cols / 64) * 4) (ReduceSum result and work).
 * DeepSeek-V3's hidden size 7168 fits one row per tile in every variant.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T, bool RESIDUAL>
class KernelRmsNorm {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR residual, GM_ADDR weight, GM_ADDR y, GM_ADDR sum,
                                const DsnpuRmsNormTiling& t) {
        cols_ = t.cols;
        eps_ = t.eps;
        tileRows_ = t.rows_per_tile;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.rows_per_block;
        rows_ = first >= t.rows ? 0 : Min(t.rows_per_block, static_cast<uint32_t>(t.rows - first));
        if (rows_ == 0 || tileRows_ == 0) {
            rows_ = 0;
            return;
        }
        const uint64_t total = static_cast<uint64_t>(t.rows) * cols_;
        const uint64_t base = first * cols_;
        GlobalTensor<T> all;
        all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), total);
        xGm_ = all[base];
        all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), total);
        yGm_ = all[base];
        if constexpr (RESIDUAL) {
            all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(residual), total);
            rGm_ = all[base];
            all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(sum), total);
            sGm_ = all[base];
        }
        wGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(weight), cols_);

        rowBytes_ = AlignUp(cols_ * sizeof(T), UB_BLOCK);
        colsPad_ = rowBytes_ / sizeof(T);
        const uint32_t f32Row = colsPad_ * sizeof(float);
        pipe_.InitBuffer(xQue_, BUFFER_NUM, tileRows_ * rowBytes_);
        if constexpr (RESIDUAL) {
            pipe_.InitBuffer(rQue_, BUFFER_NUM, tileRows_ * rowBytes_);
        }
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(xF_, tileRows_ * f32Row);
        }
        pipe_.InitBuffer(wF_, f32Row);
        pipe_.InitBuffer(tmp_, f32Row);
        pipe_.InitBuffer(red_, UB_BLOCK + AlignUp(CeilDiv(cols_, 64) * sizeof(float), UB_BLOCK));
    }

    __aicore__ inline void Process() {
        if (rows_ == 0) return;
        LoadWeight();
        for (uint32_t r0 = 0; r0 < rows_; r0 += tileRows_) {
            const uint32_t n = Min(tileRows_, rows_ - r0);
            CopyIn(r0, n);
            Compute(n);
            CopyOut(r0, n);
        }
        xOut_.Drain();
        rOut_.Drain();
    }

private:
    __aicore__ inline DataCopyExtParams Rows(uint32_t n) const {
        return DataCopyExtParams(static_cast<uint16_t>(n), cols_ * static_cast<uint32_t>(sizeof(T)), 0, 0, 0);
    }

    // The weight in f32, staged through the scratch row for 16-bit types.
    __aicore__ inline void LoadWeight() {
        LocalTensor<float> wf = wF_.Get<float>();
        if constexpr (IS_F32) {
            DataCopyPad(wf, wGm_, Rows(1), DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        } else {
            LocalTensor<T> raw = tmp_.Get<T>();
            DataCopyPad(raw, wGm_, Rows(1), DataCopyPadExtParams<T>(false, 0, 0, T(0)));
            SetFlag<HardEvent::MTE2_V>(0);
            WaitFlag<HardEvent::MTE2_V>(0);
            ToFloat(wf, raw, colsPad_);
        }
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
    }

    __aicore__ inline void CopyIn(uint32_t r0, uint32_t n) {
        const DataCopyPadExtParams<T> noPad(false, 0, 0, T(0));
        xOut_.BeforeRefill();
        LocalTensor<T> x = xQue_.AllocTensor<T>();
        DataCopyPad(x, xGm_[static_cast<uint64_t>(r0) * cols_], Rows(n), noPad);
        xQue_.EnQue(x);
        if constexpr (RESIDUAL) {
            rOut_.BeforeRefill();
            LocalTensor<T> r = rQue_.AllocTensor<T>();
            DataCopyPad(r, rGm_[static_cast<uint64_t>(r0) * cols_], Rows(n), noPad);
            rQue_.EnQue(r);
        }
    }

    __aicore__ inline void Compute(uint32_t n) {
        x_ = xQue_.DeQue<T>();
        LocalTensor<float> xf;
        if constexpr (IS_F32) {
            xf = x_;
        } else {
            xf = xF_.Get<float>();
            ToFloat(xf, x_, n * colsPad_);
        }
        LocalTensor<float> tmp = tmp_.Get<float>();
        if constexpr (RESIDUAL) {
            r_ = rQue_.DeQue<T>();
            for (uint32_t i = 0; i < n; ++i) {
                LocalTensor<float> row = xf[i * colsPad_];
                LocalTensor<T> res = r_[i * colsPad_];
                if constexpr (IS_F32) {
                    Add(row, row, res, cols_);
                    DataCopy(res, row, colsPad_);  // the sum goes out from the residual's buffer
                } else {
                    ToFloat(tmp, res, colsPad_);
                    Add(row, row, tmp, colsPad_);
                    FromFloat(res, row, colsPad_);  // the sum, rounded to T, goes out from here
                    ToFloat(row, res, colsPad_);    // and is what gets normalised
                }
            }
        }
        LocalTensor<float> w = wF_.Get<float>();
        LocalTensor<float> red = red_.Get<float>();
        LocalTensor<float> work = red[UB_BLOCK / sizeof(float)];
        for (uint32_t i = 0; i < n; ++i) {
            LocalTensor<float> row = xf[i * colsPad_];
            Mul(tmp, row, row, cols_);
            ReduceSum(red, tmp, work, cols_);
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            const float meanSq = red.GetValue(0) / static_cast<float>(cols_);
            const float rstd = 1.0f / sqrtf(meanSq + eps_);
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            Muls(row, row, rstd, cols_);
            Mul(row, row, w, cols_);
        }
        if constexpr (!IS_F32) {
            FromFloat(x_, xf, n * colsPad_);  // y goes out from x's buffer
        }
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
    }

    __aicore__ inline void CopyOut(uint32_t r0, uint32_t n) {
        DataCopyPad(yGm_[static_cast<uint64_t>(r0) * cols_], x_, Rows(n));
        xOut_.CopiedOut();
        xQue_.FreeTensor(x_);
        if constexpr (RESIDUAL) {
            DataCopyPad(sGm_[static_cast<uint64_t>(r0) * cols_], r_, Rows(n));
            rOut_.CopiedOut();
            rQue_.FreeTensor(r_);
        }
    }

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> xQue_, rQue_;
    TBuf<TPosition::VECCALC> xF_, wF_, tmp_, red_;
    GlobalTensor<T> xGm_, rGm_, wGm_, yGm_, sGm_;
    LocalTensor<T> x_, r_;  // the tile between Compute and CopyOut
    CopyOutGuard<BUFFER_NUM> xOut_{0}, rOut_{BUFFER_NUM};  // y and the sum leave from the input buffers
    uint32_t rows_ = 0, cols_ = 0, tileRows_ = 0, rowBytes_ = 0, colsPad_ = 0;
    float eps_ = 0.0f;
};

template <typename T>
__aicore__ inline void RmsNorm(GM_ADDR x, GM_ADDR weight, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuRmsNormTiling, t, tiling);
    KernelRmsNorm<T, false> op;
    op.Init(x, nullptr, weight, y, nullptr, t);
    op.Process();
}

template <typename T>
__aicore__ inline void AddRmsNorm(GM_ADDR x, GM_ADDR residual, GM_ADDR weight, GM_ADDR y, GM_ADDR sum,
                                  GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuRmsNormTiling, t, tiling);
    KernelRmsNorm<T, true> op;
    op.Init(x, residual, weight, y, sum, t);
    op.Process();
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(rms_norm_f32)(GM_ADDR x, GM_ADDR weight, GM_ADDR y,
                                                                 GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    RmsNorm<float>(x, weight, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(rms_norm_f16)(GM_ADDR x, GM_ADDR weight, GM_ADDR y,
                                                                 GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    RmsNorm<half>(x, weight, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(rms_norm_bf16)(GM_ADDR x, GM_ADDR weight, GM_ADDR y,
                                                                  GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    RmsNorm<bfloat16_t>(x, weight, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(add_rms_norm_f32)(GM_ADDR x, GM_ADDR residual, GM_ADDR weight,
                                                                     GM_ADDR y, GM_ADDR sum, GM_ADDR workspace,
                                                                     GM_ADDR tiling) {
    (void)workspace;
    AddRmsNorm<float>(x, residual, weight, y, sum, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(add_rms_norm_f16)(GM_ADDR x, GM_ADDR residual, GM_ADDR weight,
                                                                     GM_ADDR y, GM_ADDR sum, GM_ADDR workspace,
                                                                     GM_ADDR tiling) {
    (void)workspace;
    AddRmsNorm<half>(x, residual, weight, y, sum, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(add_rms_norm_bf16)(GM_ADDR x, GM_ADDR residual, GM_ADDR weight,
                                                                      GM_ADDR y, GM_ADDR sum, GM_ADDR workspace,
                                                                      GM_ADDR tiling) {
    (void)workspace;
    AddRmsNorm<bfloat16_t>(x, residual, weight, y, sum, tiling);
}

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/rms_norm.inc"
#endif
