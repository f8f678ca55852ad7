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
 * Split k (linear_splitk_*: k_blocks > 1, the tiling's choice for few rows over a long k, where every
 * block of an n column would otherwise read all of x's rows, as many bytes as its share of w when m is
 * 64 and n is short): block (i, j, s) multiplies k slice s, [s * single_k, ...), and its cube core
 * writes that partial product (IterateAll, f32) into slice s's [m, n] plane of the workspace, then sets
 * DONE. Its vector cores wait for DONE and meet every block's at SyncAll; then all vector cores of the
 * launch share y's row segments of SPLIT_SEG columns (segment by segment): a segment's k_blocks partial
 * rows come in by one strided copy and are summed in slice order (the same sum whatever the timing),
 * the bias is added, and the sum rounded to t and written. UB per vector core: the partial rows
 * (k_blocks x 4 KiB, two buffers), the bias segment (4 KiB), the t segment (<= 4 KiB, two buffers).
 * k_blocks <= 8 and 4 m n < 2^32 (tiling.rs).
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
constexpr uint16_t DONE = 4;  // split k: the cube core's partial is in the workspace (AIC -> AIV, mode 2)
constexpr uint32_t SPLIT_SEG = 1024;  // split k: columns of one reduction unit (a row segment)

// The block's tiles in Matmul::Iterate's order (iterateOrder 0: down M first): tile `t`'s rows/columns.
struct TileWalk {
    uint32_t mt, nt, baseM, baseN, tailM, tailN;
    __aicore__ inline uint32_t Count() const { return mt * nt; }
    __aicore__ inline uint32_t M0(uint32_t t) const { return t % mt * baseM; }
    __aicore__ inline uint32_t N0(uint32_t t) const { return t / mt * baseN; }
    __aicore__ inline uint32_t Rows(uint32_t t) const { return Min(baseM, tailM - M0(t)); }
    __aicore__ inline uint32_t Cols(uint32_t t) const { return Min(baseN, tailN - N0(t)); }
};

// The cube core's Matmul of a block: x rows [m0, m0 + tailM) times w rows [n0, n0 + tailN), over k
// [k0, k0 + tailK) (the whole k unless the tiling splits it). The tiling lives as long as the object.
template <typename T, typename W>
struct BlockMatmul {
    TCubeTiling cube;
    TPipe pipe;
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
           MatmulType<TPosition::GM, CubeFormat::ND, float>>
        mm;

    __aicore__ inline void Init(const DsnpuLinearTiling& t, GM_ADDR x, GM_ADDR w, uint32_t m0, uint32_t n0,
                                uint32_t k0, uint32_t tailM, uint32_t tailN, uint32_t tailK) {
        GlobalTensor<T> xGm;
        GlobalTensor<W> wGm;
        xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.m) * t.k);
        wGm.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(w), static_cast<uint64_t>(t.n) * t.k);
        cube = ToCubeTiling(t.cube);
        mm.Init(&cube, &pipe);
        mm.SetTensorA(xGm[static_cast<uint64_t>(m0) * t.k + k0]);
        mm.SetTensorB(wGm[static_cast<uint64_t>(n0) * t.k + k0], true);
        mm.SetTail(static_cast<int>(tailM), static_cast<int>(tailN), static_cast<int>(tailK));
    }
};

template <typename T, typename W>
__aicore__ inline void LinearCube(const DsnpuLinearTiling& t, GM_ADDR x, GM_ADDR w, uint32_t m0, uint32_t n0,
                                  uint32_t tailM, uint32_t tailN, const GlobalTensor<float>& slots,
                                  uint32_t tileElems) {
    BlockMatmul<T, W> b;
    b.Init(t, x, w, m0, n0, 0, tailM, tailN, t.k);
    auto& mm = b.mm;
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

// Split k, the cube core: its block's product over the k slice [k0, k0 + tailK) into its [tailM, tailN]
// place of the slice's f32 [m, n] plane, then DONE to its vector cores.
template <typename T, typename W>
__aicore__ inline void LinearCubePartial(const DsnpuLinearTiling& t, GM_ADDR x, GM_ADDR w, uint32_t m0, uint32_t n0,
                                         uint32_t k0, uint32_t tailM, uint32_t tailN, uint32_t tailK,
                                         const GlobalTensor<float>& plane) {
    BlockMatmul<T, W> b;
    b.Init(t, x, w, m0, n0, k0, tailM, tailN, tailK);
    auto& mm = b.mm;
    mm.IterateAll(plane[static_cast<uint64_t>(m0) * t.n + n0]);
    mm.End();
    CrossCoreSetFlag<2, PIPE_FIX>(DONE);
}

// Split k, a vector core: after its cube core's DONE and the launch's SyncAll, its share of y's row
// segments: the k_blocks partials summed in slice order, the bias added, rounded to t.
template <typename T>
__aicore__ inline void LinearVectorReduce(const DsnpuLinearTiling& t, GM_ADDR bias, GM_ADDR y,
                                          const GlobalTensor<float>& planes) {
    CrossCoreWaitFlag(DONE);
    SyncAll();
    const uint32_t kb = t.k_blocks;
    const uint64_t units = static_cast<uint64_t>(t.m) * CeilDiv(t.n, SPLIT_SEG);
    const uint64_t workers = static_cast<uint64_t>(GetBlockNum()) * 2;
    const uint64_t me = static_cast<uint64_t>(GetBlockIdx());
    const uint64_t u0 = units * me / workers, u1 = units * (me + 1) / workers;
    if (u0 >= u1) return;
    const uint64_t plane = static_cast<uint64_t>(t.m) * t.n;
    GlobalTensor<T> yGm;
    GlobalTensor<float> biasGm;
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), plane);
    if (t.has_bias != 0) biasGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(bias), t.n);
    TPipe pipe;
    TQue<TPosition::VECIN, 2> inQ;
    TQue<TPosition::VECOUT, 2> outQ;
    TBuf<TPosition::VECCALC> biasBuf;
    pipe.InitBuffer(inQ, 2, kb * SPLIT_SEG * sizeof(float));
    pipe.InitBuffer(outQ, 2, SPLIT_SEG * sizeof(T));
    pipe.InitBuffer(biasBuf, SPLIT_SEG * sizeof(float));
    LocalTensor<float> biasSeg = biasBuf.Get<float>();
    uint32_t biasAt = t.n;  // the segment biasSeg holds (none yet)
    // Units segment by segment (u = segment * m + row), so that a core's consecutive rows share the bias.
    for (uint64_t u = u0; u < u1; ++u) {
        const uint32_t c0 = static_cast<uint32_t>(u / t.m) * SPLIT_SEG;
        const uint32_t row = static_cast<uint32_t>(u % t.m);
        const uint32_t cols = Min(SPLIT_SEG, t.n - c0);
        const uint64_t at = static_cast<uint64_t>(row) * t.n + c0;
        // The segment of every slice's plane, a plane apart in GM, SPLIT_SEG floats apart in UB.
        LocalTensor<float> part = inQ.AllocTensor<float>();
        const uint32_t gap = (SPLIT_SEG * sizeof(float) - AlignUp(cols * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(part, planes[at],
                    DataCopyExtParams{static_cast<uint16_t>(kb), static_cast<uint32_t>(cols * sizeof(float)),
                                      static_cast<uint32_t>((plane - cols) * sizeof(float)), gap, 0},
                    DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
        if (t.has_bias != 0 && biasAt != c0) {
            SetFlag<HardEvent::V_MTE2>(0);
            WaitFlag<HardEvent::V_MTE2>(0);  // the previous segment's Adds read the bias
            DataCopyPad(biasSeg, biasGm[c0], DataCopyExtParams{1, static_cast<uint32_t>(cols * sizeof(float)), 0, 0, 0},
                        DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
            SetFlag<HardEvent::MTE2_V>(0);
            WaitFlag<HardEvent::MTE2_V>(0);
            biasAt = c0;
        }
        inQ.EnQue(part);
        part = inQ.DeQue<float>();
        for (uint32_t s = 1; s < kb; ++s) Add(part, part, part[s * SPLIT_SEG], static_cast<int32_t>(cols));
        if (t.has_bias != 0) Add(part, part, biasSeg, static_cast<int32_t>(cols));
        LocalTensor<T> out = outQ.AllocTensor<T>();
        if constexpr (IsSame<T, float>::value) {
            DataCopy(out, part, AlignUp(cols, 8));
        } else {
            Cast(out, part, RoundMode::CAST_RINT, cols);
        }
        inQ.FreeTensor(part);
        outQ.EnQue(out);
        out = outQ.DeQue<T>();
        DataCopyPad(yGm[at], out, DataCopyExtParams{1, static_cast<uint32_t>(cols * sizeof(T)), 0, 0, 0});
        outQ.FreeTensor(out);
    }
}

template <typename T, typename W = T>
__aicore__ inline void Linear(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuLinearTiling, t, tiling);
    // The AI Core: the cube's index, or the vector core's over the ratio (GetBlockIdx.md).
    const uint32_t block = static_cast<uint32_t>(GetBlockIdx() / GetTaskRation());
    if (t.k_blocks > 1) {
        // Split k: every block of the launch has a k slice of an (m, n) block and takes part in the
        // SyncAll (the tiling sizes the launch to the grid).
        const uint32_t mn = block / t.k_blocks, s = block % t.k_blocks;
        const uint32_t m0 = mn / t.n_blocks * t.single_m, n0 = mn % t.n_blocks * t.single_n;
        const uint32_t k0 = s * t.single_k;
        GlobalTensor<float> planes;
        planes.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(GetUserWorkspace(workspace)),
                               static_cast<uint64_t>(t.k_blocks) * t.m * t.n);
        if ASCEND_IS_AIC {
            LinearCubePartial<T, W>(t, x, w, m0, n0, k0, Min(t.single_m, t.m - m0), Min(t.single_n, t.n - n0),
                                    Min(t.single_k, t.k - k0), planes[static_cast<uint64_t>(s) * t.m * t.n]);
        } else {
            LinearVectorReduce<T>(t, bias, y, planes);
        }
        return;
    }
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

// The same kernels for tilings that split k: separate symbols because only they meet in SyncAll (the
// simulator runs such a kernel's blocks all at once, linear_<t>'s one after another when they are short).
#define DSNPU_LINEAR_SPLITK(symbol, type, wtype)                                                             \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(symbol)(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR y, \
                                                               GM_ADDR workspace, GM_ADDR tiling) {          \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                   \
        Linear<type, wtype>(x, w, bias, y, workspace, tiling);                                               \
    }

DSNPU_LINEAR_SPLITK(linear_splitk_f32, float, float)
DSNPU_LINEAR_SPLITK(linear_splitk_f16, half, half)
DSNPU_LINEAR_SPLITK(linear_splitk_bf16, bfloat16_t, bfloat16_t)
DSNPU_LINEAR_SPLITK(linear_splitk_f32_wf32, float, float)
DSNPU_LINEAR_SPLITK(linear_splitk_f32_wf16, float, half)
DSNPU_LINEAR_SPLITK(linear_splitk_f32_wbf16, float, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/linear.inc"
#endif
