/*
 * linear_<t> (t = f32, f16, bf16): y[m, n] = x[m, k] * w[n, k]^T (+ bias[n]), a 1:2 mix kernel as on
 * dav-c220: f32 accumulation in the cube, the bias (f32) added and the result rounded to t by the vector
 * cores.
 *
 * linear_f32_w<t> (t = f32, f16, bf16): the same with f32 x and y and weights stored in t (a 16-bit
 * checkpoint computed in f32). The weights stay 16-bit in GM; each B tile is widened to f32 on its way
 * into the cube (exact: every f16/bf16 value is an f32), so the result equals linear_f32 on the widened
 * weights while GM traffic for w is the 16-bit size. (The host Matmul converts each loaded tile; on the
 * AI Core this is the Matmul API's B type differing from A's, which this project has not run on CANN.)
 *
 * Work split (DsnpuLinearTiling): the blocks (AI Cores) form an m_blocks x n_blocks grid over y; block
 * (i, j) owns rows [i * single_m, ...) of x and rows [j * single_n, ...) of w (B transposed, as Hugging
 * Face stores weights), shrunk with SetTail at the right and bottom edges.
 * - AIC (ASCEND_IS_AIC): the Matmul of the host tiling's TCubeTiling (no bias), one baseM x baseN tile per
 *   Iterate, each written by GetTensorC as a compact f32 tile into slot (tile % 2) of the block's two
 *   workspace slots; CrossCoreSetFlag<2, PIPE_FIX>(READY + slot) then tells both vector cores. Before
 *   reusing a slot it waits for FREE + slot (set by both vector cores), and at the end for the last two.
 * - AIV (ASCEND_IS_AIV, GetSubBlockIdx 0 / 1): the same tile sequence; vector core s takes the tile's rows
 *   [s * ceil(bm / 2), ...): waits READY + slot, copies its rows in (MTE2), sets FREE + slot on PIPE_MTE2
 *   (the slot's last reader), adds the bias row, rounds to t and copies the rows out to y.
 * UB per vector core: the f32 rows (<= 64 x 256 x 4 = 64 KiB), the t rows (<= 64 KiB), the bias row
 * (1 KiB).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"
#include "dsnpu_kernels/cube_tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

constexpr uint16_t READY = 0;  // + slot: the cube wrote the slot's tile (AIC -> AIV, mode 2)
constexpr uint16_t FREE = 2;   // + slot: both vector cores read it (AIV -> AIC, mode 2)
constexpr uint32_t SLOTS = 2;

// The block's tiles in Matmul::Iterate's order (iterateOrder 0: down M first): tile `t`'s rows/columns.
struct TileWalk {
    uint32_t mt, nt, baseM, baseN, tailM, tailN;
    __aicore__ inline uint32_t Count() const { return mt * nt; }
    __aicore__ inline uint32_t M0(uint32_t t) const { return t % mt * baseM; }
    __aicore__ inline uint32_t N0(uint32_t t) const { return t / mt * baseN; }
    __aicore__ inline uint32_t Rows(uint32_t t) const { return Min(baseM, tailM - M0(t)); }
    __aicore__ inline uint32_t Cols(uint32_t t) const { return Min(baseN, tailN - N0(t)); }
};

template <typename T, typename W>
__aicore__ inline void LinearCube(const DsnpuLinearTiling& t, GM_ADDR x, GM_ADDR w, uint32_t m0, uint32_t n0,
                                  uint32_t tailM, uint32_t tailN, const GlobalTensor<float>& slots,
                                  uint32_t tileElems) {
    GlobalTensor<T> xGm;
    GlobalTensor<W> wGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.m) * t.k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(w), static_cast<uint64_t>(t.n) * t.k);
    const TCubeTiling cube = ToCubeTiling(t.cube);
    TPipe pipe;
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
           MatmulType<TPosition::GM, CubeFormat::ND, float>>
        mm;
    mm.Init(&cube, &pipe);
    mm.SetTensorA(xGm[static_cast<uint64_t>(m0) * t.k]);
    mm.SetTensorB(wGm[static_cast<uint64_t>(n0) * t.k], true);
    mm.SetTail(static_cast<int>(tailM), static_cast<int>(tailN));
    uint32_t tile = 0;
    while (mm.Iterate()) {
        const uint32_t slot = tile % SLOTS;
        if (tile >= SLOTS) CrossCoreWaitFlag(FREE + slot);
        mm.GetTensorC(slots[static_cast<uint64_t>(slot) * tileElems], 0, true);
        CrossCoreSetFlag<2, PIPE_FIX>(READY + slot);
        ++tile;
    }
    for (uint32_t last = tile > SLOTS ? tile - SLOTS : 0; last < tile; ++last) CrossCoreWaitFlag(FREE + last % SLOTS);
    mm.End();
}

template <typename T>
__aicore__ inline void LinearVector(const DsnpuLinearTiling& t, GM_ADDR bias, GM_ADDR y, uint32_t m0, uint32_t n0,
                                    const TileWalk& walk, const GlobalTensor<float>& slots, uint32_t tileElems) {
    const uint32_t sub = static_cast<uint32_t>(GetSubBlockIdx());
    const uint32_t baseN = walk.baseN;
    const uint32_t halfM = CeilDiv(walk.baseM, 2);
    const uint32_t fPitch = AlignUp(baseN * sizeof(float), UB_BLOCK) / sizeof(float);
    const uint32_t tPitch = AlignUp(baseN * sizeof(T), UB_BLOCK) / sizeof(T);
    GlobalTensor<T> yGm;
    GlobalTensor<float> biasGm;
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), static_cast<uint64_t>(t.m) * t.n);
    if (t.has_bias != 0) biasGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(bias), t.n);
    TPipe pipe;
    TQue<TPosition::VECIN, 1> inQ;
    TQue<TPosition::VECOUT, 1> outQ;
    TBuf<TPosition::VECCALC> biasBuf;
    pipe.InitBuffer(inQ, 1, halfM * fPitch * sizeof(float));
    pipe.InitBuffer(outQ, 1, halfM * tPitch * sizeof(T));
    pipe.InitBuffer(biasBuf, fPitch * sizeof(float));
    LocalTensor<float> biasRow = biasBuf.Get<float>();
    for (uint32_t tile = 0; tile < walk.Count(); ++tile) {
        const uint32_t slot = tile % SLOTS;
        const uint32_t rows = walk.Rows(tile), cols = walk.Cols(tile);
        const uint32_t r0 = Min(sub * halfM, rows);
        const uint32_t mine = Min(halfM, rows - r0);
        CrossCoreWaitFlag(READY + slot);
        if (mine == 0) {  // a tile of one row: the other core has it all, but both release the slot
            CrossCoreSetFlag<2, PIPE_MTE2>(FREE + slot);
            continue;
        }
        LocalTensor<float> acc = inQ.AllocTensor<float>();
        // UB rows at the fixed pitch: each copied row is padded to 32 bytes, plus a gap of whole blocks.
        const uint32_t fGap = (fPitch * sizeof(float) - AlignUp(cols * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        const uint32_t tGap = (tPitch * sizeof(T) - AlignUp(cols * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(acc, slots[static_cast<uint64_t>(slot) * tileElems + static_cast<uint64_t>(r0) * cols],
                    DataCopyExtParams{static_cast<uint16_t>(mine), static_cast<uint32_t>(cols * sizeof(float)), 0, fGap,
                                      0},
                    DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
        // The slot's last reader on this core is MTE2: the cube may overwrite it once both cores set this.
        CrossCoreSetFlag<2, PIPE_MTE2>(FREE + slot);
        if (t.has_bias != 0) {
            SetFlag<HardEvent::V_MTE2>(0);
            WaitFlag<HardEvent::V_MTE2>(0);  // the previous tile's Adds read the bias row
            DataCopyPad(biasRow, biasGm[n0 + walk.N0(tile)],
                        DataCopyExtParams{1, static_cast<uint32_t>(cols * sizeof(float)), 0, 0, 0},
                        DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
            SetFlag<HardEvent::MTE2_V>(0);
            WaitFlag<HardEvent::MTE2_V>(0);
        }
        inQ.EnQue(acc);
        acc = inQ.DeQue<float>();
        LocalTensor<T> out = outQ.AllocTensor<T>();
        for (uint32_t r = 0; r < mine; ++r) {
            if (t.has_bias != 0) Add(acc[r * fPitch], acc[r * fPitch], biasRow, static_cast<int32_t>(cols));
            if constexpr (IsSame<T, float>::value) {
                DataCopy(out[r * tPitch], acc[r * fPitch], fPitch);  // f32: a UB copy of the padded row
            } else {
                Cast(out[r * tPitch], acc[r * fPitch], RoundMode::CAST_RINT, cols);
            }
        }
        inQ.FreeTensor(acc);
        outQ.EnQue(out);
        out = outQ.DeQue<T>();
        DataCopyPad(yGm[static_cast<uint64_t>(m0 + walk.M0(tile) + r0) * t.n + n0 + walk.N0(tile)], out,
                    DataCopyExtParams{static_cast<uint16_t>(mine), static_cast<uint32_t>(cols * sizeof(T)), tGap,
                                      static_cast<uint32_t>((t.n - cols) * sizeof(T)), 0});
        outQ.FreeTensor(out);
    }
}

template <typename T, typename W = T>
__aicore__ inline void Linear(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuLinearTiling, t, tiling);
    // The AI Core: the cube's index, or the vector core's over the ratio (GetBlockIdx.md).
    const uint32_t block = static_cast<uint32_t>(GetBlockIdx() / GetTaskRation());
    if (t.n_blocks == 0 || block >= t.m_blocks * t.n_blocks) return;
    const uint32_t m0 = block / t.n_blocks * t.single_m;
    const uint32_t n0 = block % t.n_blocks * t.single_n;
    if (m0 >= t.m || n0 >= t.n) return;
    const uint32_t tailM = Min(t.single_m, t.m - m0);
    const uint32_t tailN = Min(t.single_n, t.n - n0);
    const uint32_t baseM = static_cast<uint32_t>(t.cube.baseM), baseN = static_cast<uint32_t>(t.cube.baseN);
    const TileWalk walk{CeilDiv(tailM, baseM), CeilDiv(tailN, baseN), baseM, baseN, tailM, tailN};
    const uint32_t tileElems = baseM * baseN;
    GlobalTensor<float> slots;
    slots.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(GetUserWorkspace(workspace)) +
                              static_cast<uint64_t>(block) * SLOTS * tileElems,
                          static_cast<uint64_t>(SLOTS) * tileElems);
    if ASCEND_IS_AIC {
        LinearCube<T, W>(t, x, w, m0, n0, tailM, tailN, slots, tileElems);
    } else {
        LinearVector<T>(t, bias, y, m0, n0, walk, slots, tileElems);
    }
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_f32)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y,
                                                               GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    Linear<float>(x, w, bias, y, workspace, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_f16)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y,
                                                               GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    Linear<half>(x, w, bias, y, workspace, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_bf16)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y,
                                                                GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    Linear<bfloat16_t>(x, w, bias, y, workspace, tiling);
}

#define DSNPU_LINEAR_F32_W(suffix, type)                                                                    \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_f32_w##suffix)(                               \
        GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {                 \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                   \
        Linear<float, type>(x, w, bias, y, workspace, tiling);                                               \
    }

DSNPU_LINEAR_F32_W(f32, float)
DSNPU_LINEAR_F32_W(f16, half)
DSNPU_LINEAR_F32_W(bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/linear.inc"
#endif
