// A 1:2 mix kernel written as for CANN: per 16 x 16 f32 block of x, y = x x^T + 1. Each block's two
// vector cores ask their cube core for 8 rows of x x^T each (the Matmul registered with
// REGIST_MATMUL_OBJ: on the cube core the macro serves the requests and returns), then add 1 to their
// rows on the vector unit.
#include "kernel_operator.h"
#include "lib/matmul_intf.h"
using namespace AscendC;
constexpr uint32_t N = 16, HALF = N / 2;

extern "C" __global__ __aicore__ void gram_plus_one_f32(GM_ADDR x, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    const uint32_t block = GetBlockIdx() / GetTaskRation();
    GlobalTensor<float> xGm, yGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(x) + block * N * N, N * N);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(y) + block * N * N, N * N);
    TCubeTiling t;  // each request: 8 x 16 x 16 in one base block
    t.M = t.N = t.Ka = t.Kb = t.singleCoreN = t.singleCoreK = t.baseM = t.baseN = t.baseK = N;
    t.singleCoreM = HALF;
    TPipe pipe;
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, float>, MatmulType<TPosition::GM, CubeFormat::ND, float, true>,
           MatmulType<TPosition::GM, CubeFormat::ND, float>>
        mm;
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, &t);
    const uint32_t r0 = GetSubBlockIdx() * HALF;
    mm.SetTensorA(xGm[r0 * N]);
    mm.SetTensorB(xGm, true);
    mm.IterateAll(yGm[r0 * N]);  // returns once the cube core wrote the rows
    mm.End();
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, HALF * N * sizeof(float));
    LocalTensor<float> rows = buf.Get<float>();
    DataCopy(rows, yGm[r0 * N], HALF * N);
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    Adds(rows, rows, 1.0f, HALF * N);
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopy(yGm[r0 * N], rows, HALF * N);
}
