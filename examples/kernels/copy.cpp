// A copy kernel written as for CANN (no dsnpu macro): each block copies 256 f32 of x to y through the
// Unified Buffer, 64 at a time, with the flags that order the load (MTE2) before the store (MTE3) and
// the store before the next load overwrites the buffer.
//
//   dsnpu kernel build examples/kernels/copy.cpp -o copy.so
//   dsnpu kernel run copy.so --kernel copy_f32 --blocks 2 --arg 2048:fill=rand --arg 2048
#include "kernel_operator.h"

using namespace AscendC;

constexpr uint32_t PER_BLOCK = 256;  // f32
constexpr uint32_t TILE = 64;        // f32

extern "C" __global__ __aicore__ void copy_f32(GM_ADDR x, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
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
        SetFlag<HardEvent::MTE2_MTE3>(0);
        WaitFlag<HardEvent::MTE2_MTE3>(0);
        DataCopy(yGm[i], tile, TILE);
        SetFlag<HardEvent::MTE3_MTE2>(0);
        WaitFlag<HardEvent::MTE3_MTE2>(0);
    }
}
