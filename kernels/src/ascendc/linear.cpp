/*
 * linear_<t> (t = f32, f16, bf16): y[m, n] = x[m, k] * w[n, k]^T (+ bias[n]), through the high-level
 * Matmul API: f32 accumulation in the cube, bias (f32) added before the result is rounded to t.
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

template <typename T>
__aicore__ inline void Linear(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuLinearTiling, t, tiling);
    const uint32_t block = static_cast<uint32_t>(GetBlockIdx());
    if (t.n_blocks == 0 || block >= t.m_blocks * t.n_blocks) return;
    const uint32_t m0 = block / t.n_blocks * t.single_m;
    const uint32_t n0 = block % t.n_blocks * t.single_n;
    if (m0 >= t.m || n0 >= t.n) return;
    const uint32_t tailM = Min(t.single_m, t.m - m0);
    const uint32_t tailN = Min(t.single_n, t.n - n0);

    GlobalTensor<T> xGm, wGm, yGm;
    GlobalTensor<float> biasGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.m) * t.k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(w), static_cast<uint64_t>(t.n) * t.k);
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
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
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

DSNPU_HOST_ENTRY(linear_f32)
DSNPU_HOST_ENTRY(linear_f16)
DSNPU_HOST_ENTRY(linear_bf16)
