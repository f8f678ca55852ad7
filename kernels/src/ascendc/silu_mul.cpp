/*
 * silu_mul_<t> (t = f32, f16, bf16): SwiGLU, out[r, j] = silu(g) * u with g = gate_up[r, j],
 * u = gate_up[r, inter + j] and silu(g) = g / (1 + exp(-g)), computed in f32.
 *
 * Rows are split across blocks; each block walks its rows in tiles of rows_per_tile rows x cols_per_tile
 * columns (columns are chunked only when one row does not fit), with double-buffered input queues; the
 * result goes out from the gate's buffer. UB use (R = rows_per_tile, P = round_up_32(cols_per_tile *
 * sizeof(t)), F = P / sizeof(t) * 4):
 *   4 R P (gate, up queues) + R F (scratch) [+ R F (gate in f32, 16-bit t only)].
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
class KernelSiluMul {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR gateUp, GM_ADDR out, const DsnpuSiluMulTiling& t) {
        inter_ = t.inter;
        tileRows_ = t.rows_per_tile;
        tileCols_ = t.cols_per_tile;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.rows_per_block;
        rows_ = first >= t.rows ? 0 : Min(t.rows_per_block, static_cast<uint32_t>(t.rows - first));
        if (rows_ == 0 || tileRows_ == 0 || tileCols_ == 0 || inter_ == 0) {
            rows_ = 0;
            return;
        }
        GlobalTensor<T> all;
        all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(gateUp), static_cast<uint64_t>(t.rows) * 2 * inter_);
        guGm_ = all[first * 2 * inter_];
        all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out), static_cast<uint64_t>(t.rows) * inter_);
        outGm_ = all[first * inter_];

        const uint32_t chunkBytes = AlignUp(tileCols_ * sizeof(T), UB_BLOCK);
        const uint32_t f32Bytes = chunkBytes / sizeof(T) * sizeof(float);
        pipe_.InitBuffer(gQue_, BUFFER_NUM, tileRows_ * chunkBytes);
        pipe_.InitBuffer(uQue_, BUFFER_NUM, tileRows_ * chunkBytes);
        pipe_.InitBuffer(tF_, tileRows_ * f32Bytes);
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(gF_, tileRows_ * f32Bytes);
        }
    }

    __aicore__ inline void Process() {
        if (rows_ == 0) return;
        for (uint32_t r0 = 0; r0 < rows_; r0 += tileRows_) {
            const uint32_t n = Min(tileRows_, rows_ - r0);
            for (uint32_t c0 = 0; c0 < inter_; c0 += tileCols_) {
                const uint32_t w = Min(tileCols_, inter_ - c0);
                CopyIn(r0, c0, n, w);
                Compute(n, w);
                CopyOut(r0, c0, n, w);
            }
        }
        gOut_.Drain();
    }

private:
    __aicore__ inline void CopyIn(uint32_t r0, uint32_t c0, uint32_t n, uint32_t w) {
        const uint32_t bytes = w * static_cast<uint32_t>(sizeof(T));
        const DataCopyExtParams p(static_cast<uint16_t>(n), bytes,
                                  (2 * inter_ - w) * static_cast<uint32_t>(sizeof(T)), 0, 0);
        const DataCopyPadExtParams<T> noPad(false, 0, 0, T(0));
        const uint64_t at = static_cast<uint64_t>(r0) * 2 * inter_ + c0;
        gOut_.BeforeRefill();
        LocalTensor<T> g = gQue_.AllocTensor<T>();
        DataCopyPad(g, guGm_[at], p, noPad);
        gQue_.EnQue(g);
        LocalTensor<T> u = uQue_.AllocTensor<T>();
        DataCopyPad(u, guGm_[at + inter_], p, noPad);
        uQue_.EnQue(u);
    }

    __aicore__ inline void Compute(uint32_t n, uint32_t w) {
        const uint32_t total = n * (AlignUp(w * sizeof(T), UB_BLOCK) / sizeof(T));
        LocalTensor<float> tf = tF_.Get<float>();
        g_ = gQue_.DeQue<T>();
        LocalTensor<T> u = uQue_.DeQue<T>();
        if constexpr (IS_F32) {
            // silu(g) = g / (1 + exp(-g)), in place in the gate's buffer, then times u.
            Muls(tf, g_, -1.0f, total);
            Exp(tf, tf, total);
            Adds(tf, tf, 1.0f, total);
            Div(g_, g_, tf, total);
            Mul(g_, g_, u, total);
        } else {
            LocalTensor<float> gf = gF_.Get<float>();
            ToFloat(gf, g_, total);
            Muls(tf, gf, -1.0f, total);
            Exp(tf, tf, total);
            Adds(tf, tf, 1.0f, total);
            Div(gf, gf, tf, total);
            ToFloat(tf, u, total);
            Mul(gf, gf, tf, total);
            FromFloat(g_, gf, total);
        }
        uQue_.FreeTensor(u);
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
    }

    __aicore__ inline void CopyOut(uint32_t r0, uint32_t c0, uint32_t n, uint32_t w) {
        const DataCopyExtParams p(static_cast<uint16_t>(n), w * static_cast<uint32_t>(sizeof(T)), 0,
                                  (inter_ - w) * static_cast<uint32_t>(sizeof(T)), 0);
        DataCopyPad(outGm_[static_cast<uint64_t>(r0) * inter_ + c0], g_, p);
        gOut_.CopiedOut();
        gQue_.FreeTensor(g_);
    }

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> gQue_, uQue_;
    TBuf<TPosition::VECCALC> gF_, tF_;
    GlobalTensor<T> guGm_, outGm_;
    LocalTensor<T> g_;  // the tile between Compute and CopyOut
    CopyOutGuard<BUFFER_NUM> gOut_;  // the result leaves from the gate's buffer
    uint32_t rows_ = 0, inter_ = 0, tileRows_ = 0, tileCols_ = 0;
};

template <typename T>
__aicore__ inline void SiluMul(GM_ADDR gateUp, GM_ADDR out, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuSiluMulTiling, t, tiling);
    KernelSiluMul<T> op;
    op.Init(gateUp, out, t);
    op.Process();
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(silu_mul_f32)(GM_ADDR gateUp, GM_ADDR out, GM_ADDR workspace,
                                                                 GM_ADDR tiling) {
    (void)workspace;
    SiluMul<float>(gateUp, out, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(silu_mul_f16)(GM_ADDR gateUp, GM_ADDR out, GM_ADDR workspace,
                                                                 GM_ADDR tiling) {
    (void)workspace;
    SiluMul<half>(gateUp, out, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(silu_mul_bf16)(GM_ADDR gateUp, GM_ADDR out, GM_ADDR workspace,
                                                                  GM_ADDR tiling) {
    (void)workspace;
    SiluMul<bfloat16_t>(gateUp, out, tiling);
}

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/silu_mul.inc"
#endif
