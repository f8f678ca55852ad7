/*
 * grouped_matmul_<t> and expert_ffn_<t> (t = f32, f16, bf16): GEMMs over expert groups along M, through the
 * high-level Matmul API (f32 accumulation in the cube; the contract is dsnpu-ops' moe::grouped).
 *
 *   grouped_matmul: y[r] = x[r] * w[g]^T for the rows r of group g          x [R, K], w [G, N, K], y [R, N]
 *   expert_ffn:     h[r] = t(silu(x[r] w_gate[g]^T) * (x[r] w_up[g]^T))     (gate, up and SwiGLU in f32,
 *                   y[r] = h[r] * w_down[g]^T                                h rounded to t once)
 *
 * grouped_matmul_f32_w<t> and expert_ffn_f32_w<t>: the same with f32 activations (x, y, the h workspace)
 * and weights stored in t, each weight tile widened to f32 on its way into the cube (exact), so 16-bit
 * checkpoints computed in f32 keep their weights 16-bit in GM (see linear.cpp).
 *
 * The groups come from group_list (int64, counts or inclusive cumsum), read by every block with scalar
 * loads and clamped to [0, R], so a malformed list gives wrong rows, never an access outside x or y.
 * Work is the list of (group, m-tile, n-tile) tasks over the NON-EMPTY groups, single_m x single_n output
 * blocks in group order (n-tiles innermost, so consecutive blocks share an A panel), dealt round-robin:
 * task i runs on block i % GetBlockNum(). A group with no rows has no tasks and costs one scalar load; a
 * single hot group still spreads over every block (the host sizes the tiles so that even all R rows in
 * one group make at least as many tasks as there are blocks).
 *
 * expert_ffn is a MIX kernel: phase 1 runs the gate and up GEMMs of a task into f32 workspace tiles, then
 * SwiGLU streams that tile through UB (double-buffered queues, swiglu_rows rows at a time) into h in
 * workspace; SyncAll; phase 2 runs the down-GEMM tasks on h. On the AI Core the cube executes the Matmul
 * calls and its vector cores the SwiGLU; the host runs both on the block's thread.
 * Workspace: gate f32 [R, inter] | up f32 [R, inter] | h t [R, inter].
 *
 * UB use of expert_ffn (R = swiglu_rows, P = round_up(single_n1, 16)):
 *   2 R P 4 (gate queue) + 2 R P 4 (up queue) + R P 4 (scratch) + 2 R P sizeof(t) (h queue).
 * grouped_matmul uses no UB.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

__aicore__ inline TCubeTiling CubeTiling(uint32_t m, uint32_t n, uint32_t k, uint32_t singleM, uint32_t singleN,
                                         uint32_t baseM, uint32_t baseN, uint32_t baseK) {
    TCubeTiling c;
    c.usedCoreNum = static_cast<int32_t>(GetBlockNum());
    c.M = static_cast<int32_t>(m);
    c.N = static_cast<int32_t>(n);
    c.Ka = static_cast<int32_t>(k);
    c.Kb = static_cast<int32_t>(k);
    c.singleCoreM = static_cast<int32_t>(singleM);
    c.singleCoreN = static_cast<int32_t>(singleN);
    c.singleCoreK = static_cast<int32_t>(k);
    c.baseM = static_cast<int32_t>(baseM);
    c.baseN = static_cast<int32_t>(baseN);
    c.baseK = static_cast<int32_t>(baseK);
    c.isBias = 0;
    return c;
}

// One task of a grouped GEMM: rows [row0, row0 + m) of group `group`, columns [col0, col0 + n).
struct Task {
    uint32_t group;
    uint32_t row0;
    uint32_t m;
    uint32_t col0;
    uint32_t n;
};

// This block's share of the (group, m-tile, n-tile) tasks, walked in order.
class GroupTasks {
public:
    __aicore__ inline void Init(const GlobalTensor<int64_t>& list, uint32_t groups, uint32_t rows, uint32_t listType,
                                uint32_t singleM, uint32_t cols, uint32_t singleN) {
        list_ = list;
        groups_ = groups;
        rows_ = rows;
        listType_ = listType;
        singleM_ = singleM;
        cols_ = cols;
        singleN_ = singleN;
        nTiles_ = CeilDiv(cols, singleN);
        blocks_ = static_cast<uint64_t>(GetBlockNum());
        block_ = static_cast<uint64_t>(GetBlockIdx());
    }

    // The next task of this block, or false when none is left.
    __aicore__ inline bool Next(Task& task) {
        while (true) {
            if (open_ && local_ < groupTasks_) {
                const uint32_t mi = static_cast<uint32_t>(local_ / nTiles_);
                const uint32_t ni = static_cast<uint32_t>(local_ % nTiles_);
                task.group = group_;
                task.row0 = start_ + mi * singleM_;
                task.m = Min(singleM_, end_ - task.row0);
                task.col0 = ni * singleN_;
                task.n = Min(singleN_, cols_ - task.col0);
                local_ += blocks_;
                return true;
            }
            if (open_) {
                taskBase_ += groupTasks_;
                start_ = end_;
                ++group_;
            }
            if (group_ >= groups_) return false;
            const int64_t v = list_.GetValue(group_);
            int64_t end = listType_ == DSNPU_MOE_LIST_COUNT ? static_cast<int64_t>(start_) + v : v;
            end = end < static_cast<int64_t>(start_) ? start_ : (end > static_cast<int64_t>(rows_) ? rows_ : end);
            end_ = static_cast<uint32_t>(end);
            groupTasks_ = static_cast<uint64_t>(CeilDiv(end_ - start_, singleM_)) * nTiles_;
            // The first task index of this group that is this block's (index = block mod blocks).
            local_ = (block_ + blocks_ - taskBase_ % blocks_) % blocks_;
            open_ = true;
        }
    }

private:
    GlobalTensor<int64_t> list_;
    uint32_t groups_ = 0, rows_ = 0, listType_ = 0, singleM_ = 1, cols_ = 0, singleN_ = 1, nTiles_ = 1;
    uint64_t blocks_ = 1, block_ = 0;
    bool open_ = false;
    uint32_t group_ = 0, start_ = 0, end_ = 0;
    uint64_t taskBase_ = 0, groupTasks_ = 0, local_ = 0;
};

template <typename T, typename W = T>
__aicore__ inline void GroupedMatmul(GM_ADDR x, GM_ADDR w, GM_ADDR groupList, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuGroupedMatmulTiling, t, tiling);
    if (t.single_m == 0 || t.single_n == 0 || t.rows == 0) return;
    GlobalTensor<T> xGm, yGm;
    GlobalTensor<W> wGm;
    GlobalTensor<int64_t> listGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.rows) * t.k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(w), static_cast<uint64_t>(t.groups) * t.n * t.k);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), static_cast<uint64_t>(t.rows) * t.n);
    listGm.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(groupList), t.groups);

    TCubeTiling cube = CubeTiling(t.rows, t.n, t.k, t.single_m, t.single_n, t.base_m, t.base_n, t.base_k);
    TPipe pipe;
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
           MatmulType<TPosition::GM, CubeFormat::ND, T>>
        mm;
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, &cube);
    GroupTasks tasks;
    tasks.Init(listGm, t.groups, t.rows, t.list_type, t.single_m, t.n, t.single_n);
    Task task;
    while (tasks.Next(task)) {
        mm.SetTensorA(xGm[static_cast<uint64_t>(task.row0) * t.k]);
        mm.SetTensorB(wGm[(static_cast<uint64_t>(task.group) * t.n + task.col0) * t.k], true);
        mm.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mm.IterateAll(yGm[static_cast<uint64_t>(task.row0) * t.n + task.col0]);
        mm.End();
    }
}

template <typename T, typename W = T>
class KernelExpertFfn {
    using MmUp = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
                        MatmulType<TPosition::GM, CubeFormat::ND, float>>;
    using MmDown = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>,
                          MatmulType<TPosition::GM, CubeFormat::ND, W, true>, MatmulType<TPosition::GM, CubeFormat::ND, T>>;

public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y,
                                GM_ADDR workspace, const DsnpuExpertFfnTiling& t) {
        t_ = t;
        const uint64_t rows = t.rows, hidden = t.hidden, inter = t.inter;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), rows * hidden);
        wGateGm_.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(wGate), t.groups * inter * hidden);
        wUpGm_.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(wUp), t.groups * inter * hidden);
        wDownGm_.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(wDown), t.groups * hidden * inter);
        listGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(groupList), t.groups);
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), rows * hidden);
        GM_ADDR ws = GetUserWorkspace(workspace);
        gateWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(ws), rows * inter);
        upWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(ws) + rows * inter, rows * inter);
        hWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(ws + 2 * rows * inter * sizeof(float)), rows * inter);

        up_ = CubeTiling(t.rows, t.inter, t.hidden, t.single_m, t.single_n1, t.base_m, t.base_n1, t.base_k1);
        down_ = CubeTiling(t.rows, t.hidden, t.inter, t.single_m, t.single_n2, t.base_m, t.base_n2, t.base_k2);
        REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmUp_, &up_, mmDown_, &down_);

        pad_ = AlignUp(t.single_n1, 16);
        const uint32_t rowsPerTile = t.swiglu_rows;
        pipe_.InitBuffer(gQue_, BUFFER_NUM, rowsPerTile * pad_ * sizeof(float));
        pipe_.InitBuffer(uQue_, BUFFER_NUM, rowsPerTile * pad_ * sizeof(float));
        pipe_.InitBuffer(tmp_, rowsPerTile * pad_ * sizeof(float));
        pipe_.InitBuffer(hQue_, BUFFER_NUM, rowsPerTile * pad_ * sizeof(T));
    }

    __aicore__ inline void Process() {
        Task task;
        GroupTasks first;
        first.Init(listGm_, t_.groups, t_.rows, t_.list_type, t_.single_m, t_.inter, t_.single_n1);
        while (first.Next(task)) GateUp(task);
        // Phase 2 needs whole rows of h, produced by many blocks.
        SyncAll<false>();
        GroupTasks second;
        second.Init(listGm_, t_.groups, t_.rows, t_.list_type, t_.single_m, t_.hidden, t_.single_n2);
        while (second.Next(task)) Down(task);
    }

private:
    __aicore__ inline void GateUp(const Task& task) {
        const uint64_t a = static_cast<uint64_t>(task.row0) * t_.hidden;
        const uint64_t b = (static_cast<uint64_t>(task.group) * t_.inter + task.col0) * t_.hidden;
        const uint64_t c = static_cast<uint64_t>(task.row0) * t_.inter + task.col0;
        mmUp_.SetTensorA(xGm_[a]);
        mmUp_.SetTensorB(wGateGm_[b], true);
        mmUp_.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mmUp_.IterateAll(gateWs_[c]);
        mmUp_.End();
        mmUp_.SetTensorA(xGm_[a]);
        mmUp_.SetTensorB(wUpGm_[b], true);
        mmUp_.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mmUp_.IterateAll(upWs_[c]);
        mmUp_.End();
        for (uint32_t r0 = 0; r0 < task.m; r0 += t_.swiglu_rows) {
            SwiGlu(c + static_cast<uint64_t>(r0) * t_.inter, Min(t_.swiglu_rows, task.m - r0), task.n);
        }
    }

    // h = t(silu(g) * u) for `rows` rows of `cols` columns at element `at` of the [R, inter] workspaces.
    // Rows sit in UB pad_ elements apart for both f32 and t (pad_ is a multiple of 16).
    __aicore__ inline void SwiGlu(uint64_t at, uint32_t rows, uint32_t cols) {
        const uint32_t gmGap = (t_.inter - cols);
        const uint32_t f32Gap = (pad_ * sizeof(float) - AlignUp(cols * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        const DataCopyExtParams in(static_cast<uint16_t>(rows), cols * static_cast<uint32_t>(sizeof(float)),
                                   gmGap * static_cast<uint32_t>(sizeof(float)), f32Gap, 0);
        const DataCopyPadExtParams<float> noPad(false, 0, 0, 0.0f);
        LocalTensor<float> g = gQue_.AllocTensor<float>();
        DataCopyPad(g, gateWs_[at], in, noPad);
        gQue_.EnQue(g);
        LocalTensor<float> u = uQue_.AllocTensor<float>();
        DataCopyPad(u, upWs_[at], in, noPad);
        uQue_.EnQue(u);

        const int32_t total = static_cast<int32_t>(rows * pad_);
        g = gQue_.DeQue<float>();
        u = uQue_.DeQue<float>();
        LocalTensor<float> tmp = tmp_.Get<float>();
        Muls(tmp, g, -1.0f, total);
        Exp(tmp, tmp, total);
        Adds(tmp, tmp, 1.0f, total);
        Div(g, g, tmp, total);
        Mul(g, g, u, total);
        uQue_.FreeTensor(u);
        LocalTensor<T> h = hQue_.AllocTensor<T>();
        FromFloat(h, g, static_cast<uint32_t>(total));
        gQue_.FreeTensor(g);
        hQue_.EnQue(h);

        h = hQue_.DeQue<T>();
        const uint32_t tGap = (pad_ * sizeof(T) - AlignUp(cols * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(hWs_[at], h,
                    DataCopyExtParams(static_cast<uint16_t>(rows), cols * static_cast<uint32_t>(sizeof(T)), tGap,
                                      gmGap * static_cast<uint32_t>(sizeof(T)), 0));
        hQue_.FreeTensor(h);
    }

    __aicore__ inline void Down(const Task& task) {
        mmDown_.SetTensorA(hWs_[static_cast<uint64_t>(task.row0) * t_.inter]);
        mmDown_.SetTensorB(wDownGm_[(static_cast<uint64_t>(task.group) * t_.hidden + task.col0) * t_.inter], true);
        mmDown_.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mmDown_.IterateAll(yGm_[static_cast<uint64_t>(task.row0) * t_.hidden + task.col0]);
        mmDown_.End();
    }

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> gQue_, uQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> hQue_;
    TBuf<TPosition::VECCALC> tmp_;
    GlobalTensor<T> xGm_, yGm_, hWs_;
    GlobalTensor<W> wGateGm_, wUpGm_, wDownGm_;
    GlobalTensor<float> gateWs_, upWs_;
    GlobalTensor<int64_t> listGm_;
    TCubeTiling up_, down_;
    MmUp mmUp_;
    MmDown mmDown_;
    DsnpuExpertFfnTiling t_{};
    uint32_t pad_ = 0;
};

template <typename T, typename W = T>
__aicore__ inline void ExpertFfn(GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y,
                                 GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuExpertFfnTiling, t, tiling);
    if (t.single_m == 0 || t.single_n1 == 0 || t.single_n2 == 0 || t.swiglu_rows == 0 || t.rows == 0) {
        SyncAll<false>();  // every block meets the others' barrier
        return;
    }
    KernelExpertFfn<T, W> op;
    op.Init(x, wGate, wUp, wDown, groupList, y, workspace, t);
    op.Process();
}

}  // namespace

#define DSNPU_GROUPED_MATMUL(suffix, type)                                                                    \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(grouped_matmul_##suffix)(                              \
        GM_ADDR x, GM_ADDR w, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {             \
        (void)workspace;                                                                                       \
        GroupedMatmul<type>(x, w, groupList, y, tiling);                                                       \
    }                                                                                                          \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(expert_ffn_##suffix)(                                  \
        GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, \
        GM_ADDR tiling) {                                                                                      \
        ExpertFfn<type>(x, wGate, wUp, wDown, groupList, y, workspace, tiling);                                \
    }

#define DSNPU_GROUPED_MATMUL_F32_W(suffix, type)                                                              \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(grouped_matmul_f32_w##suffix)(                         \
        GM_ADDR x, GM_ADDR w, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {             \
        (void)workspace;                                                                                       \
        GroupedMatmul<float, type>(x, w, groupList, y, tiling);                                                \
    }                                                                                                          \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(expert_ffn_f32_w##suffix)(                             \
        GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, \
        GM_ADDR tiling) {                                                                                      \
        ExpertFfn<float, type>(x, wGate, wUp, wDown, groupList, y, workspace, tiling);                         \
    }

DSNPU_GROUPED_MATMUL_F32_W(f32, float)
DSNPU_GROUPED_MATMUL_F32_W(f16, half)
DSNPU_GROUPED_MATMUL_F32_W(bf16, bfloat16_t)

DSNPU_GROUPED_MATMUL(f32, float)
DSNPU_GROUPED_MATMUL(f16, half)
DSNPU_GROUPED_MATMUL(bf16, bfloat16_t)

DSNPU_HOST_ENTRY(grouped_matmul_f32)
DSNPU_HOST_ENTRY(grouped_matmul_f16)
DSNPU_HOST_ENTRY(grouped_matmul_bf16)
DSNPU_HOST_ENTRY(expert_ffn_f32)
DSNPU_HOST_ENTRY(expert_ffn_f16)
DSNPU_HOST_ENTRY(expert_ffn_bf16)
DSNPU_HOST_ENTRY(grouped_matmul_f32_wf32)
DSNPU_HOST_ENTRY(grouped_matmul_f32_wf16)
DSNPU_HOST_ENTRY(grouped_matmul_f32_wbf16)
DSNPU_HOST_ENTRY(expert_ffn_f32_wf32)
DSNPU_HOST_ENTRY(expert_ffn_f32_wf16)
DSNPU_HOST_ENTRY(expert_ffn_f32_wbf16)
