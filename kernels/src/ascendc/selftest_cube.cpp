/*
 * selftest_cube(a, w, out, workspace, tiling): the cube core's basic instructions (dsnpu_host/cube.h) on
 * one 1:2 mix block: GM -> L1 (DataCopy with Nd2NzParams), L1 -> L0A/L0B (LoadData), Mmad, L0C -> GM
 * (Fixpipe), handed over through queues at A1/B1, A2/B2 and CO1 as the asc-devkit sample
 * mmad_s8_f16_f32_with_A_B_transpose_option lays them out. DsnpuSelftestTiling {mode, count = m << 16 | k,
 * arg = n}; a is A [m, k] row-major, w is B: [n, k] row-major (B "transposed", modes 0, 2, 4) or
 * [k, n] (modes 1, 3, 5); out is C [m, n] row-major. The vector cores do nothing.
 *   0  half A, half B^T, C f32                                  -- LoadData without transpose for both
 *   1  half A, half B, C f32                                    -- B's fractals transposed by LoadData
 *   2  bfloat16_t A, B^T, C = 2 A B in bfloat16_t              -- a second Mmad accumulates, F322BF16
 *   3  bfloat16_t A, B, C half                                  -- F322F16
 *   4  float A, B^T, C f32                                      -- 8-column fractals
 *   5  float A, B: LoadData with ifTranspose on 32-bit data     -- fault
 *   6  as 0 with Mmad's B taken from an L1 tensor               -- fault (wrong memory)
 *   7  as 0 with an A1 queue of 600 KiB                          -- fault (L1 overflow)
 *   8  as 0, then C moved out again with SetAtomicAdd<float>: C = 2 A B^T (dsnpu_host/atomic.h)
 *   9  as 0 with SetAtomicAdd<half> before the f32 Fixpipe      -- fault (the mode's type)
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;

namespace {

__aicore__ inline uint32_t CeilDiv(uint32_t a, uint32_t b) { return (a + b - 1) / b; }
__aicore__ inline uint32_t AlignTo(uint32_t a, uint32_t b) { return CeilDiv(a, b) * b; }

// C = A B (twice that with `twice`), A [m, k] from a, B from w ([n, k] when `bTrans`, else [k, n]).
template <typename T, typename D>
__aicore__ inline void CubeTile(uint32_t mode, GM_ADDR a, GM_ADDR w, GM_ADDR out, uint32_t m, uint32_t k, uint32_t n,
                                bool bTrans, bool twice, QuantMode_t quant) {
    constexpr uint32_t C0 = 32 / sizeof(T);
    constexpr uint32_t FRAC = 16 * C0;  // elements of one fractal
    GlobalTensor<T> aGm, wGm;
    GlobalTensor<D> cGm;
    aGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(a), static_cast<uint64_t>(m) * k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(w), static_cast<uint64_t>(k) * n);
    cGm.SetGlobalBuffer(reinterpret_cast<__gm__ D*>(out), static_cast<uint64_t>(m) * n);
    const uint32_t mAl = AlignTo(m, 16), kAl = AlignTo(k, bTrans ? C0 : 16), nAl = AlignTo(n, 16);
    const uint32_t kBlocks = CeilDiv(k, C0), mBlocks = mAl / 16, nBlocks = nAl / 16;

    TPipe pipe;
    TQue<TPosition::A1, 1> a1;
    TQue<TPosition::B1, 1> b1;
    TQue<TPosition::A2, 1> a2;
    TQue<TPosition::B2, 1> b2;
    TQue<TPosition::CO1, 1> c1;
    pipe.InitBuffer(a1, 1, mode == 7 ? 600 * 1024 : mAl * AlignTo(k, C0) * sizeof(T));
    pipe.InitBuffer(b1, 1, kAl * nAl * sizeof(T));
    pipe.InitBuffer(a2, 1, mAl * AlignTo(k, C0) * sizeof(T));
    pipe.InitBuffer(b2, 1, AlignTo(k, 16) * nAl * sizeof(T));
    pipe.InitBuffer(c1, 1, mAl * nAl * sizeof(float));

    // GM -> L1: A as NZ [m, k]; B as NZ [n, k] (transposed) or [k, n].
    LocalTensor<T> aL1 = a1.AllocTensor<T>();
    DataCopy(aL1, aGm, Nd2NzParams(1, m, k, 0, k, mAl, 1, 0));
    a1.EnQue(aL1);
    LocalTensor<T> bL1 = b1.AllocTensor<T>();
    if (bTrans) {
        DataCopy(bL1, wGm, Nd2NzParams(1, n, k, 0, k, nAl, 1, 0));
    } else {
        DataCopy(bL1, wGm, Nd2NzParams(1, k, n, 0, n, kAl, 1, 0));
    }
    b1.EnQue(bL1);

    // L1 -> L0A (ZZ): per row of fractals, its k blocks (a column block apart in L1's NZ).
    aL1 = a1.DeQue<T>();
    LocalTensor<T> aL0 = a2.AllocTensor<T>();
    for (uint32_t i = 0; i < mBlocks; ++i) {
        LoadData(aL0[i * kBlocks * FRAC], aL1[i * FRAC],
                 LoadData2DParams(0, static_cast<uint8_t>(kBlocks), static_cast<uint16_t>(mBlocks), 0, 0, false, 0));
    }
    a1.FreeTensor(aL1);
    a2.EnQue(aL0);

    // L1 -> L0B (ZN): B^T's NZ is ZN already; B's fractals are transposed, per k block its n blocks.
    bL1 = b1.DeQue<T>();
    LocalTensor<T> bL0 = b2.AllocTensor<T>();
    if (bTrans) {
        for (uint32_t i = 0; i < kBlocks; ++i) {
            LoadData(bL0[i * nBlocks * FRAC], bL1[i * nBlocks * FRAC],
                     LoadData2DParams(0, static_cast<uint8_t>(nBlocks), 1, 0, 0, false, 0));
        }
    } else {
        const uint32_t kB16 = kAl / 16;
        for (uint32_t i = 0; i < kB16; ++i) {
            LoadData(bL0[i * nBlocks * FRAC], bL1[i * FRAC],
                     LoadData2DParams(0, static_cast<uint8_t>(nBlocks), static_cast<uint16_t>(kB16), 0, 0, true, 0));
        }
    }
    b1.FreeTensor(bL1);
    b2.EnQue(bL0);

    aL0 = a2.DeQue<T>();
    bL0 = b2.DeQue<T>();
    LocalTensor<float> cL0 = c1.AllocTensor<float>();
    MmadParams mm;
    mm.m = static_cast<uint16_t>(m);
    mm.n = static_cast<uint16_t>(n);
    mm.k = static_cast<uint16_t>(k);
    if (mode == 6) {
        // B from L1 (a1's buffer was freed but its memory is still L1): the wrong memory.
        LocalTensor<T> wrong = a1.AllocTensor<T>();
        Mmad(cL0, aL0, wrong, mm);
    }
    Mmad(cL0, aL0, bL0, mm);
    if (twice) {
        mm.cmatrixInitVal = false;
        Mmad(cL0, aL0, bL0, mm);
    }
    a2.FreeTensor(aL0);
    b2.FreeTensor(bL0);
    c1.EnQue(cL0);

    cL0 = c1.DeQue<float>();
    FixpipeParamsV220 fp(static_cast<uint16_t>(n), static_cast<uint16_t>(m), static_cast<uint16_t>(mAl), n, false);
    fp.quantPre = quant;
    if (mode == 9) SetAtomicAdd<half>();
    Fixpipe<D, float, CFG_ROW_MAJOR>(cGm, cL0, fp);
    if (mode == 8) {
        SetAtomicAdd<float>();
        Fixpipe<D, float, CFG_ROW_MAJOR>(cGm, cL0, fp);
        SetAtomicNone();
    }
    c1.FreeTensor(cL0);
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_cube)(GM_ADDR a, GM_ADDR w, GM_ADDR out, GM_ADDR workspace,
                                                                  GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    if ASCEND_IS_AIV {
        return;
    }
    const uint32_t m = t.count >> 16, k = t.count & 0xFFFF, n = t.arg;
    switch (t.mode) {
        case 0: CubeTile<half, float>(t.mode, a, w, out, m, k, n, true, false, QuantMode_t::NoQuant); break;
        case 1: CubeTile<half, float>(t.mode, a, w, out, m, k, n, false, false, QuantMode_t::NoQuant); break;
        case 2: CubeTile<bfloat16_t, bfloat16_t>(t.mode, a, w, out, m, k, n, true, true, QuantMode_t::F322BF16); break;
        case 3: CubeTile<bfloat16_t, half>(t.mode, a, w, out, m, k, n, false, false, QuantMode_t::F322F16); break;
        case 4: CubeTile<float, float>(t.mode, a, w, out, m, k, n, true, false, QuantMode_t::NoQuant); break;
        case 5: CubeTile<float, float>(t.mode, a, w, out, m, k, n, false, false, QuantMode_t::NoQuant); break;
        case 6: CubeTile<half, float>(t.mode, a, w, out, m, k, n, true, false, QuantMode_t::NoQuant); break;
        case 7: CubeTile<half, float>(t.mode, a, w, out, m, k, n, true, false, QuantMode_t::NoQuant); break;
        case 8: CubeTile<half, float>(t.mode, a, w, out, m, k, n, true, false, QuantMode_t::NoQuant); break;
        case 9: CubeTile<half, float>(t.mode, a, w, out, m, k, n, true, false, QuantMode_t::NoQuant); break;
        default: break;
    }
}

DSNPU_HOST_ENTRY_MIX(selftest_cube)
