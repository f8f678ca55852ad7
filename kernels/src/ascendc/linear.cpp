/*
 * linear_<t> (t = f32, f16, bf16): y[m, n] = x[m, k] * w[n, k]^T (+ bias[n]), through the high-level
 * Matmul API: f32 accumulation in the cube, bias (f32) added before the result is rounded to t.
 *
 * linear_f32_w<t> (t = f32, f16, bf16): the same with f32 x and y and weights stored in t (a 16-bit
 * checkpoint computed in f32). The weights stay 16-bit in GM; each B tile is widened to f32 on its way
 * into the cube (exact: every f16/bf16 value is an f32), so the result equals linear_f32 on the widened
 * weights while GM traffic for w is the 16-bit size. (The host Matmul converts each loaded tile; on the
 * AI Core this is the Matmul API's B type differing from A's, which this project has not run on CANN.)
 *
 * The blocks form an m_blocks x n_blocks grid over y (DsnpuLinearTiling); block (i, j) multiplies rows
 * [i * single_m, ...) of x by rows [j * single_n, ...) of w (B transposed, as Hugging Face stores
 * weights), shrinking its shape with SetTail at the right and bottom edges.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T, typename W = T>
__aicore__ inline void Linear(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuLinearTiling, t, tiling);
    const uint32_t block = static_cast<uint32_t>(GetBlockIdx());
    if (t.n_blocks == 0 || block >= t.m_blocks * t.n_blocks) return;
    const uint32_t m0 = block / t.n_blocks * t.single_m;
    const uint32_t n0 = block % t.n_blocks * t.single_n;
    if (m0 >= t.m || n0 >= t.n) return;
    const uint32_t tailM = Min(t.single_m, t.m - m0);
    const uint32_t tailN = Min(t.single_n, t.n - n0);

    GlobalTensor<T> xGm, yGm;
    GlobalTensor<W> wGm;
    GlobalTensor<float> biasGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.m) * t.k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(w), static_cast<uint64_t>(t.n) * t.k);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), static_cast<uint64_t>(t.m) * t.n);

    TCubeTiling cube;
    cube.usedCoreNum = static_cast<int32_t>(t.m_blocks * t.n_blocks);
    cube.M = static_cast<int32_t>(t.m);
    cube.N = static_cast<int32_t>(t.n);
    cube.Ka = static_cast<int32_t>(t.k);
    cube.Kb = static_cast<int32_t>(t.k);
    cube.singleCoreM = static_cast<int32_t>(t.single_m);
    cube.singleCoreN = static_cast<int32_t>(t.single_n);
    cube.singleCoreK = static_cast<int32_t>(t.k);
    cube.baseM = static_cast<int32_t>(t.base_m);
    cube.baseN = static_cast<int32_t>(t.base_n);
    cube.baseK = static_cast<int32_t>(t.base_k);
    cube.isBias = t.has_bias != 0 ? 1 : 0;

    TPipe pipe;
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
           MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, float>>
        mm;
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, &cube);
    mm.SetTensorA(xGm[static_cast<uint64_t>(m0) * t.k]);
    mm.SetTensorB(wGm[static_cast<uint64_t>(n0) * t.k], true);
    if (t.has_bias != 0) {
        biasGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(bias), t.n);
        mm.SetBias(biasGm[n0]);
    }
    mm.SetTail(static_cast<int>(tailM), static_cast<int>(tailN));
    mm.IterateAll(yGm[static_cast<uint64_t>(m0) * t.n + n0]);
    mm.End();
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_f32)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y,
                                                               GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    Linear<float>(x, w, bias, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_f16)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y,
                                                               GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    Linear<half>(x, w, bias, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_bf16)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y,
                                                                GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    Linear<bfloat16_t>(x, w, bias, y, tiling);
}

#define DSNPU_LINEAR_F32_W(suffix, type)                                                                    \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_f32_w##suffix)(                               \
        GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {                 \
        (void)workspace;                                                                                     \
        Linear<float, type>(x, w, bias, y, tiling);                                                          \
    }

DSNPU_LINEAR_F32_W(f32, float)
DSNPU_LINEAR_F32_W(f16, half)
DSNPU_LINEAR_F32_W(bf16, bfloat16_t)

DSNPU_HOST_ENTRY(linear_f32)
DSNPU_HOST_ENTRY(linear_f16)
DSNPU_HOST_ENTRY(linear_bf16)
DSNPU_HOST_ENTRY(linear_f32_wf32)
DSNPU_HOST_ENTRY(linear_f32_wf16)
DSNPU_HOST_ENTRY(linear_f32_wbf16)
