// The same copy with its flags forgotten: the store (MTE3) reads the tile the load (MTE2) writes with no
// synchronization between the two pipes, which `dsnpu kernel run` reports as a race.
//
//   dsnpu kernel build examples/kernels/racy_copy.cpp -o racy.so
//   dsnpu kernel run racy.so --kernel racy_copy_f32 --blocks 2 --arg 2048:fill=rand --arg 2048
#include "kernel_operator.h"

using namespace AscendC;

constexpr uint32_t PER_BLOCK = 256;  // f32
constexpr uint32_t TILE = 64;        // f32

extern "C" __global__ __aicore__ void racy_copy_f32(GM_ADDR x, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    (void)tiling;
    GlobalTensor<float> xGm, yGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(x) + GetBlockIdx() * PER_BLOCK, PER_BLOCK);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(y) + GetBlockIdx() * PER_BLOCK, PER_BLOCK);
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, TILE * sizeof(float));
    LocalTensor<float> tile = buf.Get<float>();
    for (uint32_t i = 0; i < PER_BLOCK; i += TILE) {
        DataCopy(tile, xGm[i], TILE);
        DataCopy(yGm[i], tile, TILE);
    }
}
