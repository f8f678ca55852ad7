/*
 * grouped_matmul_<t> and expert_ffn_<t> (t = f32, f16, bf16): GEMMs over expert groups along M, through the
 * high-level Matmul API (f32 accumulation in the cube; the contract is dsnpu-ops' moe::grouped).
 *
 *   grouped_matmul: y[r] = x[r] * w[g]^T for the rows r of group g          x [R, K], w [G, N, K], y [R, N]
 *   expert_ffn:     h[r] = t(silu(x[r] w_gate[g]^T) * (x[r] w_up[g]^T))     (gate, up and SwiGLU in f32,
 *                   y[r] = h[r] * w_down[g]^T                                h rounded to t once)
 *
 * grouped_matmul's strided form (tiling.group_rows > 0, launch::grouped_matmul_strided): groups of
 * group_rows rows each and no list; row i of group g at element g * x_group + i * x_ld of x and g * y_group
 * + i * y_ld of y (the Matmul API's SetOrgShape leading dimensions): attention's per-head products on
 * [T, H, d] activations as the model holds them.
 *
 * grouped_matmul_f32_w<t> and expert_ffn_f32_w<t>: the same with f32 activations (x, y, the h workspace)
 * and weights stored in t, each weight tile widened to f32 on its way into the cube (exact), so 16-bit
 * checkpoints computed in f32 keep their weights 16-bit in GM (see linear.cpp).
 *
 * The groups come from group_list (int64, counts or inclusive cumsum), read by every block with scalar
 * loads and clamped to [0, R], so a malformed list gives wrong rows, never an access outside x or y.
 * grouped_matmul is a cube-only kernel (KERNEL_TYPE_AIC_ONLY: each block is a cube core, no UB).
 * Work is the list of (group, m-tile, n-tile) tasks over the NON-EMPTY groups, single_m x single_n output
 * blocks in group order (n-tiles innermost, so consecutive tasks share an A panel), dealt in contiguous
 * runs: of T tasks, block b runs [T b / blocks, T (b + 1) / blocks) (GroupTasks::DealRuns), so a block
 * stays on one or two groups and their rows stay in its L2 slice. A group with no rows has no tasks and
 * costs one scalar load (two: the deal counts the tasks first); a single hot group still spreads over
 * every block (the host sizes the tiles so that even all R rows in one group make at least as many tasks
 * as there are blocks).
 *
 * expert_ffn is a 1:2 mix kernel (KERNEL_TYPE_MIX_AIC_1_2) in CANN's vector-driven form: the cube core of
 * each block only serves Matmul requests (REGIST_MATMUL_OBJ); each block's run of tasks is taken in turn
 * by its two vector cores. Phase 1: a vector core has the
 * cube run its task's gate and up GEMMs into f32 workspace tiles (IterateAll), then streams them through
 * UB (double-buffered queues, swiglu_rows rows at a time) as h = t(silu(g) * u) into the workspace.
 * SyncAll (vector cores; it orders every h row before phase 2 reads it). Phase 2: the down-GEMM tasks on h,
 * written to y by the cube. With tiling.adapt_tasks (expert_ffn, not expert_ffn_fp8) single_n1 / single_n2
 * are the widest tasks and each phase cuts its columns per launch from the group list
 * (GroupTasks::AdaptWidth): as few tiles as still give every block a task, since the Matmul API streams a
 * task's rows once per base_n columns and a narrow tile (what a hot group needs) would stream an expert's
 * rows once per tile. Workspace: the system workspace, then gate f32 [R, inter] | up f32
 * [R, inter] | h t [R, inter].
 *
 * UB use of expert_ffn per vector core (R = swiglu_rows, P = round_up(single_n1, 16)):
 *   2 R P 4 (gate queue) + 2 R P 4 (up queue) + R P 4 (scratch) + 2 R P sizeof(t) (h queue).
 * grouped_matmul uses no UB.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"
#include "dsnpu_kernels/cube_tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

// One task of a grouped GEMM: rows [row0, row0 + m) of group `group` (its rows [local, local + m)),
// columns [col0, col0 + n).
struct Task {
    uint32_t group;
    uint32_t row0;
    uint32_t local;
    uint32_t m;
    uint32_t col0;
    uint32_t n;
};

// This block's share of the (group, m-tile, n-tile) tasks, walked in order.
class GroupTasks {
public:
    // `hasList` false: one group of all `rows` rows, no list read (linear_fp8). Deals round-robin over the
    // blocks (task i on block i % GetBlockNum()) until DealRuns says otherwise.
    __aicore__ inline void Init(const GlobalTensor<int64_t>& list, uint32_t groups, uint32_t rows, uint32_t listType,
                                uint32_t singleM, uint32_t cols, uint32_t singleN, bool hasList = true) {
        hasList_ = hasList;
        list_ = list;
        groups_ = groups;
        rows_ = rows;
        listType_ = listType;
        singleM_ = singleM;
        cols_ = cols;
        singleN_ = singleN;
        nTiles_ = CeilDiv(cols, singleN);
        first_ = static_cast<uint64_t>(GetBlockIdx());
        step_ = static_cast<uint64_t>(GetBlockNum());
    }
    // Deal contiguous runs of the task order instead: cube core `core` of `cores` gets tasks
    // [T * core / cores, T * (core + 1) / cores) of the T tasks, taken in turn by its `subs` workers
    // (worker `sub`: the run's tasks sub, sub + subs, ...). A run keeps a core on one or two groups, so
    // their rows stay in its L2 slice across the run's n-tiles; T costs a scan of the group list (one
    // scalar load per group). Call before the first Next.
    __aicore__ inline void DealRuns(uint64_t cores, uint64_t core, uint64_t subs, uint64_t sub) {
        uint64_t mTiles = 0;
        uint32_t start = 0;
        for (uint32_t g = 0; g < groups_; ++g) {
            const uint32_t end = GroupEnd(g, start);
            mTiles += CeilDiv(end - start, singleM_);
            start = end;
        }
        if (adapt_) Adapt(mTiles, cores);
        const uint64_t total = mTiles * nTiles_;
        const uint64_t lo = total * core / cores;
        first_ = lo + sub;
        step_ = subs;
        last_ = total * (core + 1) / cores;
    }

    // Every group `rows` rows (the strided form of grouped_matmul): the list is not read.
    __aicore__ inline void EqualGroups(uint32_t rows) { equalRows_ = rows; }

    // Size the column tiles from this launch's groups (call before DealRuns): with M (group, m-tile)
    // pairs, the fewest tiles, at least ceil(cores / M) and ceil(cols / singleN), of equal width in whole
    // fractals (the last one narrower) whose deal leaves no block more than 10 % above an even share of
    // the columns (M = 7 on 24 blocks: 10 tiles of 208, not 4 of 512, of which 4 blocks would take two):
    // as wide as keeps the blocks even, so a group's rows are read once per tile. singleN (the tiling's)
    // is the widest; a tile is at least one 16-column fractal.
    __aicore__ inline void AdaptWidth() { adapt_ = true; }

    // The next task of this worker, or false when none is left.
    __aicore__ inline bool Next(Task& task) {
        while (true) {
            if (open_ && local_ < groupTasks_ && taskBase_ + local_ < last_) {
                const uint32_t mi = static_cast<uint32_t>(local_ / nTiles_);
                const uint32_t ni = static_cast<uint32_t>(local_ % nTiles_);
                task.group = group_;
                task.local = mi * singleM_;
                task.row0 = start_ + task.local;
                task.m = Min(singleM_, end_ - task.row0);
                task.col0 = ni * singleN_;
                task.n = Min(singleN_, cols_ - task.col0);
                local_ += step_;
                return true;
            }
            if (open_) {
                taskBase_ += groupTasks_;
                start_ = end_;
                ++group_;
            }
            if (group_ >= groups_ || taskBase_ >= last_) return false;
            end_ = GroupEnd(group_, start_);
            groupTasks_ = static_cast<uint64_t>(CeilDiv(end_ - start_, singleM_)) * nTiles_;
            // The first task of this group that is this worker's: first_ + j * step_ >= taskBase_.
            const uint64_t from = taskBase_ > first_ ? taskBase_ : first_;
            local_ = first_ + (from - first_ + step_ - 1) / step_ * step_ - taskBase_;
            open_ = true;
        }
    }

private:
    __aicore__ inline void Adapt(uint64_t mTiles, uint64_t cores) {
        constexpr uint32_t FRACTAL = 16;
        if (mTiles == 0) return;
        const uint64_t most = CeilDiv(cols_, FRACTAL);
        uint64_t tiles = CeilDiv(cols_, singleN_);
        const uint64_t spread = (cores + mTiles - 1) / mTiles;
        if (spread > tiles) tiles = spread;
        if (tiles > most) tiles = most;
        uint32_t width = singleN_;
        for (; tiles <= most; ++tiles) {
            width = Min(AlignUp(CeilDiv(cols_, static_cast<uint32_t>(tiles)), FRACTAL), singleN_);
            // The busiest block's columns (tasks dealt in runs: ceil(tasks / cores) each) within 10 % of
            // an even share of mTiles x cols.
            const uint64_t n = CeilDiv(cols_, width);
            const uint64_t busiest = (mTiles * n + cores - 1) / cores * width;
            if (busiest * cores * 10 <= 11 * mTiles * cols_) break;
        }
        singleN_ = width;
        nTiles_ = CeilDiv(cols_, singleN_);
    }

    // The end row of group g starting at row `start`, from the list clamped to [start, rows].
    __aicore__ inline uint32_t GroupEnd(uint32_t g, uint32_t start) {
        if (equalRows_ != 0) return Min(start + equalRows_, rows_);
        const int64_t v = hasList_ ? list_.GetValue(g) : static_cast<int64_t>(rows_);
        int64_t end = listType_ == DSNPU_MOE_LIST_COUNT ? static_cast<int64_t>(start) + v : v;
        end = end < static_cast<int64_t>(start) ? start : (end > static_cast<int64_t>(rows_) ? rows_ : end);
        return static_cast<uint32_t>(end);
    }

    GlobalTensor<int64_t> list_;
    uint32_t groups_ = 0, rows_ = 0, listType_ = 0, singleM_ = 1, cols_ = 0, singleN_ = 1, nTiles_ = 1;
    uint32_t equalRows_ = 0;
    uint64_t first_ = 0, step_ = 1, last_ = ~0ull;
    bool open_ = false, hasList_ = true, adapt_ = false;
    uint32_t group_ = 0, start_ = 0, end_ = 0;
    uint64_t taskBase_ = 0, groupTasks_ = 0, local_ = 0;
};

// A mix kernel's deal: a run of tasks per cube core, taken in turn by its two vector cores.
__aicore__ inline void DealRuns(GroupTasks& tasks) {
    tasks.DealRuns(static_cast<uint64_t>(GetBlockNum()), static_cast<uint64_t>(GetBlockIdx() / GetTaskRation()),
                   static_cast<uint64_t>(GetTaskRation()), static_cast<uint64_t>(GetSubBlockIdx()));
}

// Elements from the first row of a strided operand to the end of its last: row i of group g at
// g * group + i * ld, `width` long.
__aicore__ inline uint64_t StridedExtent(uint32_t groups, uint32_t group, uint32_t rows, uint32_t ld,
                                         uint32_t width) {
    return static_cast<uint64_t>(groups - 1) * group + static_cast<uint64_t>(rows - 1) * ld + width;
}

template <typename T, typename W = T>
__aicore__ inline void GroupedMatmul(GM_ADDR x, GM_ADDR w, GM_ADDR groupList, GM_ADDR y, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuGroupedMatmulTiling, t, tiling);
    if (t.single_m == 0 || t.single_n == 0 || t.rows == 0) return;
    // The strided form: equal groups, rows where x_ld / x_group (y_ld / y_group) put them (tiling.h).
    const bool strided = t.group_rows != 0;
    GlobalTensor<T> xGm, yGm;
    GlobalTensor<W> wGm;
    GlobalTensor<int64_t> listGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x),
                        strided ? StridedExtent(t.groups, t.x_group, t.group_rows, t.x_ld, t.k)
                                : static_cast<uint64_t>(t.rows) * t.k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ W*>(w), static_cast<uint64_t>(t.groups) * t.n * t.k);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y),
                        strided ? StridedExtent(t.groups, t.y_group, t.group_rows, t.y_ld, t.n)
                                : static_cast<uint64_t>(t.rows) * t.n);
    if (!strided) listGm.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(groupList), t.groups);

    TCubeTiling cube = ToCubeTiling(t.cube);
    TPipe pipe;
    Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
           MatmulType<TPosition::GM, CubeFormat::ND, T>>
        mm;
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, &cube);
    GroupTasks tasks;
    tasks.Init(listGm, t.groups, t.rows, t.list_type, t.single_m, t.n, t.single_n);
    if (strided) {
        tasks.EqualGroups(t.group_rows);
        // A's rows x_ld apart, C's y_ld apart (B as the tiling has it).
        mm.SetOrgShape(static_cast<int>(t.rows), static_cast<int>(t.n), static_cast<int>(t.x_ld),
                       static_cast<int>(t.k), static_cast<int>(t.y_ld));
    }
    tasks.DealRuns(static_cast<uint64_t>(GetBlockNum()), static_cast<uint64_t>(GetBlockIdx()), 1, 0);
    Task task;
    while (tasks.Next(task)) {
        const uint64_t g = task.group, i = task.local, r = task.row0;
        const uint64_t a = strided ? g * t.x_group + i * t.x_ld : r * t.k;
        const uint64_t c = strided ? g * t.y_group + i * t.y_ld : r * t.n;
        mm.SetTensorA(xGm[a]);
        mm.SetTensorB(wGm[(static_cast<uint64_t>(task.group) * t.n + task.col0) * t.k], true);
        mm.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mm.IterateAll(yGm[c + task.col0]);
        mm.End();
    }
}

// The SwiGLU step of expert_ffn and expert_ffn_fp8: h = t(silu(g) * u) from the f32 gate and up workspaces
// [R, inter] into the t workspace h, in tiles of up to `tileRows` rows of up to `maxCols` columns.
template <typename T>
class SwiGluStage {
public:
    __aicore__ inline void Init(TPipe& pipe, const GlobalTensor<float>& gate, const GlobalTensor<float>& up,
                                const GlobalTensor<T>& h, uint32_t inter, uint32_t maxCols, uint32_t tileRows) {
        gateWs_ = gate;
        upWs_ = up;
        hWs_ = h;
        inter_ = inter;
        capacity_ = tileRows * AlignUp(maxCols, 16);
        pipe.InitBuffer(gQue_, BUFFER_NUM, capacity_ * sizeof(float));
        pipe.InitBuffer(uQue_, BUFFER_NUM, capacity_ * sizeof(float));
        pipe.InitBuffer(tmp_, capacity_ * sizeof(float));
        pipe.InitBuffer(hQue_, BUFFER_NUM, capacity_ * sizeof(T));
    }

    // `rows` rows of `cols` columns at element `at` of the workspaces (row pitch inter), as many rows per
    // UB pass as the buffers hold at this width: a task narrower than the widest is not computed over
    // the widest's padding.
    __aicore__ inline void Rows(uint64_t at, uint32_t rows, uint32_t cols) {
        const uint32_t fit = capacity_ / AlignUp(cols, 16);
        const uint32_t perPass = fit > 0 ? fit : 1;
        for (uint32_t r0 = 0; r0 < rows; r0 += perPass) {
            Run(at + static_cast<uint64_t>(r0) * inter_, Min(perPass, rows - r0), cols);
        }
    }

private:
    // One UB pass. Rows sit in UB pad_ = round_up(cols, 16) elements apart for both f32 and t.
    __aicore__ inline void Run(uint64_t at, uint32_t rows, uint32_t cols) {
        pad_ = AlignUp(cols, 16);
        const uint32_t gmGap = (inter_ - cols);
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

    TQue<TPosition::VECIN, BUFFER_NUM> gQue_, uQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> hQue_;
    TBuf<TPosition::VECCALC> tmp_;
    GlobalTensor<float> gateWs_, upWs_;
    GlobalTensor<T> hWs_;
    uint32_t inter_ = 0, pad_ = 0, capacity_ = 0;
};

template <typename T, typename W = T>
class KernelExpertFfn {
    using MmUp = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, W, true>,
                        MatmulType<TPosition::GM, CubeFormat::ND, float>>;
    using MmDown = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>,
                          MatmulType<TPosition::GM, CubeFormat::ND, W, true>, MatmulType<TPosition::GM, CubeFormat::ND, T>>;

public:
    // Both core kinds: the GM views and the two tilings (the cube core serves with them).
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
        up = ToCubeTiling(t.cube_up);
        down = ToCubeTiling(t.cube_down);
    }

    // A vector core (after REGIST_MATMUL_OBJ made mmUp and mmDown its clients): both phases.
    __aicore__ inline void Process() {
        swiglu_.Init(pipe, gateWs_, upWs_, hWs_, t_.inter, t_.single_n1, t_.swiglu_rows);
        Task task;
        GroupTasks first;
        first.Init(listGm_, t_.groups, t_.rows, t_.list_type, t_.single_m, t_.inter, t_.single_n1);
        if (t_.adapt_tasks != 0) first.AdaptWidth();
        DealRuns(first);
        while (first.Next(task)) GateUp(task);
        // Phase 2 needs whole rows of h, produced by many vector cores.
        SyncAll();
        GroupTasks second;
        second.Init(listGm_, t_.groups, t_.rows, t_.list_type, t_.single_m, t_.hidden, t_.single_n2);
        if (t_.adapt_tasks != 0) second.AdaptWidth();
        DealRuns(second);
        while (second.Next(task)) Down(task);
    }

    TPipe pipe;
    TCubeTiling up, down;
    MmUp mmUp;
    MmDown mmDown;

private:
    __aicore__ inline void GateUp(const Task& task) {
        const uint64_t a = static_cast<uint64_t>(task.row0) * t_.hidden;
        const uint64_t b = (static_cast<uint64_t>(task.group) * t_.inter + task.col0) * t_.hidden;
        const uint64_t c = static_cast<uint64_t>(task.row0) * t_.inter + task.col0;
        mmUp.SetTensorA(xGm_[a]);
        mmUp.SetTensorB(wGateGm_[b], true);
        mmUp.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mmUp.IterateAll(gateWs_[c]);
        mmUp.End();
        mmUp.SetTensorA(xGm_[a]);
        mmUp.SetTensorB(wUpGm_[b], true);
        mmUp.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mmUp.IterateAll(upWs_[c]);
        mmUp.End();
        swiglu_.Rows(c, task.m, task.n);
    }

    __aicore__ inline void Down(const Task& task) {
        mmDown.SetTensorA(hWs_[static_cast<uint64_t>(task.row0) * t_.inter]);
        mmDown.SetTensorB(wDownGm_[(static_cast<uint64_t>(task.group) * t_.hidden + task.col0) * t_.inter], true);
        mmDown.SetTail(static_cast<int>(task.m), static_cast<int>(task.n));
        mmDown.IterateAll(yGm_[static_cast<uint64_t>(task.row0) * t_.hidden + task.col0]);
        mmDown.End();
    }

    SwiGluStage<T> swiglu_;
    GlobalTensor<T> xGm_, yGm_, hWs_;
    GlobalTensor<W> wGateGm_, wUpGm_, wDownGm_;
    GlobalTensor<float> gateWs_, upWs_;
    GlobalTensor<int64_t> listGm_;
    DsnpuExpertFfnTiling t_{};
};

template <typename T, typename W = T>
__aicore__ inline void ExpertFfn(GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y,
                                 GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuExpertFfnTiling, t, tiling);
    // The same tiling on every core: all return here, or none.
    if (t.single_m == 0 || t.single_n1 == 0 || t.single_n2 == 0 || t.swiglu_rows == 0 || t.rows == 0) return;
    KernelExpertFfn<T, W> op;
    op.Init(x, wGate, wUp, wDown, groupList, y, workspace, t);
    // The cube core serves the vector cores' Matmul requests here and returns when both are done.
    REGIST_MATMUL_OBJ(&op.pipe, GetSysWorkSpacePtr(), op.mmUp, &op.up, op.mmDown, &op.down);
    op.Process();
}

// ---------------------------------------------------------------------------------------------------------
// FP8 (e4m3) weights: linear_fp8_<t>, grouped_matmul_fp8_<t>, expert_ffn_fp8_<t> (t = the activations).
//
// Weights are e4m3 codes, one byte each, [G, N, K] (row-major, out x in, as in the checkpoint) with f32
// block scales `weight_scale_inv` [G, ceil(N/128), ceil(K/128)]: w[n, k] = e4m3(code) * scale[n/128, k/128].
// The 910B cube has no FP8 input type, so a task's B operand is dequantized PANEL_K (512) columns of K at
// a time (four scale columns, one after the other) by the vector unit into a per-vector-core panel
// [task n, <= 512] of t in the workspace, and the cube multiplies that panel (Matmul with B = the panel,
// A = x's 512 columns). The panels' products add up in L0C (Iterate with enPartialSum; C goes out once)
// when the task's C is one base tile, else in an f32 accumulator in GM (IterateAll's enAtomic). The whole
// dequantized weight never exists in GM: at most two [single_n, 512] panels per vector core (the cube
// multiplies one, in an asynchronous request, while the vector unit fills the other).
//
// Dequantization of a panel, DQ_ROWS weight rows of one scale column per UB pass (all on PIPE_V after the
// codes' MTE2 copy; the next pass's copy in and the last one's copy out overlap it):
//   codes u8 -> half (Cast, exact) -> int32 (Cast CAST_ROUND, exact) -> byte offsets (Muls 4) ->
//   Gather from a 256-entry f32 table of the e4m3 values (built once per block on the scalar unit:
//   sign, 4-bit exponent bias 7, 3-bit mantissa, subnormals, 0x7F/0xFF NaN) -> Muls by the row's block scale
//   (rows of one 128-row block at once) -> t (Cast CAST_RINT; a copy for f32) -> the panel (MTE3).
// w = e4m3 * scale is rounded to f32 once, then to t: the values the host's dequantization at load gives
// (dsnpu-model's checkpoint::fp8) rounded to t.
//
// Accumulator: with t = f32 the chunks accumulate in y (or the f32 gate/up workspace) directly; with a
// 16-bit t they accumulate in a per-vector-core f32 tile [single_m, single_n] in the workspace that the vector
// unit then rounds to t into y. Workspace per vector core (after the system workspace and expert_ffn's
// gate/up/h): two panels of round_up(single_n * 512 * sizeof(t), 32) bytes, then (16-bit t) the f32 tile
// single_m * single_n * 4.
//
// All three are 1:2 mix kernels built like expert_ffn: the vector cores take the tasks (each block's run,
// in turn; VectorWorker numbers their panels),
// dequantize the panels and drive their cube core's Matmul through REGIST_MATMUL_OBJ; expert_ffn_fp8's
// vector cores meet in SyncAll between its phases. A request is ordered after what the vector core's
// scalar unit waited for, so the PipeBarrier<PIPE_ALL> after each panel (written on MTE3) orders it
// before the cube loads it, and the reply orders C (written on FIX) before the vector core reads it.
// The two vector cores of a block take turns on the cube: one dequantizes while the other's product runs.
// UB per vector core: DQ_ROWS x 128 x (2 + 2 + 4 + 4 + 2 sizeof(t)) bytes (two code buffers, half, int32,
// f32, two output buffers) + the 1 KiB table (164,864 bytes for f32; expert_ffn_fp8 sizes its SwiGLU rows
// to the rest).

constexpr uint32_t FP8_BLOCK = 128;  // rows and columns of weight per scale (DeepSeek-V3's weight_block_size)
constexpr uint32_t DQ_ROWS = 64;     // weight rows per dequantization pass
// Columns of K per panel, i.e. per cube request (four scale blocks, dequantized one after the other):
// fewer, longer requests. Mirrored as FP8_PANEL_K in src/launch/fp8.rs (the workspace size).
constexpr uint32_t PANEL_K = 4 * FP8_BLOCK;

template <HardEvent E>
__aicore__ inline void Serialize() {
    SetFlag<E>(0);
    WaitFlag<E>(0);
}

// The f32 value of an e4m3fn byte (no infinities; S.1111.111 is NaN).
__aicore__ inline float E4m3Value(uint32_t code) {
    const uint32_t sign = (code >> 7) & 1u, exp = (code >> 3) & 0xFu, mant = code & 7u;
    union {
        uint32_t u;
        float f;
    } v;
    if (exp == 0xFu && mant == 7u) {
        v.u = 0x7FC00000u;  // quiet NaN
    } else if (exp == 0) {
        v.f = static_cast<float>(mant) * 0.001953125f;  // mant / 8 * 2^-6, exact
    } else {
        v.u = ((exp + 120u) << 23) | (mant << 20);  // 2^(exp - 7) * (1 + mant / 8)
    }
    v.u |= sign << 31;
    return v.f;
}

// The UB side of FP8 dequantization and of the f32 -> t epilogue.
template <typename T>
class Fp8Dequant {
public:
    __aicore__ inline void Init(TPipe& pipe) {
        constexpr uint32_t E = DQ_ROWS * FP8_BLOCK;
        pipe.InitBuffer(codes_, 2 * E);
        pipe.InitBuffer(halves_, E * sizeof(half));
        pipe.InitBuffer(offsets_, E * sizeof(int32_t));
        pipe.InitBuffer(values_, E * sizeof(float));
        pipe.InitBuffer(out_, 2 * E * sizeof(T));
        pipe.InitBuffer(table_, 256 * sizeof(float));
        LocalTensor<float> table = table_.Get<float>();
        for (uint32_t c = 0; c < 256; ++c) table.SetValue(c, E4m3Value(c));
        // Row padding of the codes holds defined (zero) codes, so the whole pass can be converted.
        Duplicate(codes_.Get<uint8_t>().ReinterpretCast<half>(), static_cast<half>(0.0f), static_cast<int32_t>(E));
        Serialize<HardEvent::S_V>();
        Serialize<HardEvent::V_MTE2>();
    }

    // panel[r, c] = t(e4m3(w[row0 + r, kc + c]) * scale[(row0 + r) / 128, (kc + c) / 128]) for r < rows,
    // c < kw; w is [*, k] codes, scale [*, sCols] (both from the group's start), panel compact [rows, kw].
    // Walked in items of (128 columns: one scale column, DQ_ROWS rows) with the codes and the output rows
    // double-buffered (event ids 0 and 1 per buffer): the next item's codes load (MTE2) and the previous
    // item's rows store (MTE3) run under this item's vector work.
    __aicore__ inline void Panel(const GlobalTensor<uint8_t>& w, uint32_t k, const GlobalTensor<float>& scale,
                                 uint32_t sCols, uint32_t row0, uint32_t rows, uint32_t kc, uint32_t kw,
                                 const GlobalTensor<T>& panel) {
        const uint32_t passes = CeilDiv(rows, DQ_ROWS);
        const uint32_t items = passes * CeilDiv(kw, FP8_BLOCK);
        SetFlag<HardEvent::V_MTE2>(0);  // both code buffers and both output buffers start free
        SetFlag<HardEvent::V_MTE2>(1);
        SetFlag<HardEvent::MTE3_V>(0);
        SetFlag<HardEvent::MTE3_V>(1);
        Load(w, k, row0, rows, kc, kw, passes, 0);
        for (uint32_t i = 0; i < items; ++i) {
            if (i + 1 < items) Load(w, k, row0, rows, kc, kw, passes, i + 1);
            Convert(scale, sCols, row0, rows, kc, kw, panel, passes, i);
        }
        WaitFlag<HardEvent::V_MTE2>(0);
        WaitFlag<HardEvent::V_MTE2>(1);
        WaitFlag<HardEvent::MTE3_V>(0);
        WaitFlag<HardEvent::MTE3_V>(1);
    }

    // y[r, c] (pitch ldy) = t(acc[r, c]) (pitch n) for r < m, c < n: the 16-bit epilogue.
    __aicore__ inline void Narrow(const GlobalTensor<float>& acc, uint32_t m, uint32_t n, const GlobalTensor<T>& y,
                                  uint32_t ldy) {
        LocalTensor<float> values = values_.Get<float>();
        LocalTensor<T> out = out_.Get<T>();
        for (uint32_t c0 = 0; c0 < n; c0 += FP8_BLOCK) {
            const uint32_t cw = Min(FP8_BLOCK, n - c0);
            const uint32_t fGap = (FP8_BLOCK * 4 - AlignUp(cw * 4, UB_BLOCK)) / UB_BLOCK;
            const uint32_t tGap = (FP8_BLOCK * sizeof(T) - AlignUp(cw * sizeof(T), UB_BLOCK)) / UB_BLOCK;
            for (uint32_t r0 = 0; r0 < m; r0 += DQ_ROWS) {
                const uint32_t rows = Min(DQ_ROWS, m - r0);
                DataCopyPad(values, acc[static_cast<uint64_t>(r0) * n + c0],
                            DataCopyExtParams(static_cast<uint16_t>(rows), cw * 4, (n - cw) * 4, fGap, 0),
                            DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
                Serialize<HardEvent::MTE2_V>();
                FromFloat(out, values, rows * FP8_BLOCK);
                Serialize<HardEvent::V_MTE3>();
                DataCopyPad(y[static_cast<uint64_t>(r0) * ldy + c0], out,
                            DataCopyExtParams(static_cast<uint16_t>(rows), static_cast<uint32_t>(cw * sizeof(T)), tGap,
                                              static_cast<uint32_t>((ldy - cw) * sizeof(T)), 0));
                Serialize<HardEvent::MTE3_V>();
                Serialize<HardEvent::V_MTE2>();
            }
        }
    }

private:
    // Item i of a panel: column block i / passes, rows [(i % passes) DQ_ROWS, ...).
    __aicore__ inline void Item(uint32_t i, uint32_t passes, uint32_t rows, uint32_t kw, uint32_t& r0, uint32_t& n,
                                uint32_t& c0, uint32_t& cw) {
        r0 = i % passes * DQ_ROWS;
        n = Min(DQ_ROWS, rows - r0);
        c0 = i / passes * FP8_BLOCK;
        cw = Min(FP8_BLOCK, kw - c0);
    }

    // The codes of item i into buffer i % 2 (after the vector unit is done with its last item).
    __aicore__ inline void Load(const GlobalTensor<uint8_t>& w, uint32_t k, uint32_t row0, uint32_t rows, uint32_t kc,
                                uint32_t kw, uint32_t passes, uint32_t i) {
        uint32_t r0, n, c0, cw;
        Item(i, passes, rows, kw, r0, n, c0, cw);
        const uint32_t b = i % 2;
        LocalTensor<uint8_t> codes = codes_.Get<uint8_t>()[b * DQ_ROWS * FP8_BLOCK];
        const uint32_t codeGap = (FP8_BLOCK - AlignUp(cw, UB_BLOCK)) / UB_BLOCK;
        WaitFlag<HardEvent::V_MTE2>(b);
        DataCopyPad(codes, w[static_cast<uint64_t>(row0 + r0) * k + kc + c0],
                    DataCopyExtParams(static_cast<uint16_t>(n), cw, k - cw, codeGap, 0),
                    DataCopyPadExtParams<uint8_t>(false, 0, 0, 0));
        SetFlag<HardEvent::MTE2_V>(b);
    }

    // Item i: codes -> t values (vector unit), then its rows to the panel from output buffer i % 2.
    __aicore__ inline void Convert(const GlobalTensor<float>& scale, uint32_t sCols, uint32_t row0, uint32_t rows,
                                   uint32_t kc, uint32_t kw, const GlobalTensor<T>& panel, uint32_t passes,
                                   uint32_t i) {
        uint32_t r0, n, c0, cw;
        Item(i, passes, rows, kw, r0, n, c0, cw);
        const uint32_t b = i % 2;
        LocalTensor<uint8_t> codes = codes_.Get<uint8_t>()[b * DQ_ROWS * FP8_BLOCK];
        LocalTensor<half> halves = halves_.Get<half>();
        LocalTensor<int32_t> offsets = offsets_.Get<int32_t>();
        LocalTensor<float> values = values_.Get<float>();
        LocalTensor<float> table = table_.Get<float>();
        LocalTensor<T> out = out_.Get<T>()[b * DQ_ROWS * FP8_BLOCK];
        const int32_t count = static_cast<int32_t>(n * FP8_BLOCK);
        // The scales first: scalar GM reads, before the vector work that uses them.
        const uint32_t firstBlock = (row0 + r0) / FP8_BLOCK, lastBlock = (row0 + r0 + n - 1) / FP8_BLOCK;
        float s[DQ_ROWS / FP8_BLOCK + 2];
        for (uint32_t blk = firstBlock; blk <= lastBlock; ++blk) {
            s[blk - firstBlock] = scale.GetValue(static_cast<uint64_t>(blk) * sCols + (kc + c0) / FP8_BLOCK);
        }
        WaitFlag<HardEvent::MTE2_V>(b);
        Cast(halves, codes, RoundMode::CAST_NONE, static_cast<uint32_t>(count));
        SetFlag<HardEvent::V_MTE2>(b);  // this code buffer may take the item after next
        Cast(offsets, halves, RoundMode::CAST_ROUND, static_cast<uint32_t>(count));
        Muls(offsets, offsets, static_cast<int32_t>(sizeof(float)), count);
        Gather(values, table, offsets.ReinterpretCast<uint32_t>(), 0, static_cast<uint32_t>(count));
        // One Muls per run of rows in the same 128-row block.
        for (uint32_t a = 0; a < n;) {
            const uint32_t blk = (row0 + r0 + a) / FP8_BLOCK;
            const uint32_t e = Min(n, (blk + 1) * FP8_BLOCK - row0 - r0);
            Muls(values[a * FP8_BLOCK], values[a * FP8_BLOCK], s[blk - firstBlock],
                 static_cast<int32_t>((e - a) * FP8_BLOCK));
            a = e;
        }
        WaitFlag<HardEvent::MTE3_V>(b);  // the store two items back has left this output buffer
        FromFloat(out, values, static_cast<uint32_t>(count));
        SetFlag<HardEvent::V_MTE3>(b);
        WaitFlag<HardEvent::V_MTE3>(b);
        const uint32_t outGap = (FP8_BLOCK * sizeof(T) - AlignUp(cw * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(panel[static_cast<uint64_t>(r0) * kw + c0], out,
                    DataCopyExtParams(static_cast<uint16_t>(n), static_cast<uint32_t>(cw * sizeof(T)), outGap,
                                      static_cast<uint32_t>((kw - cw) * sizeof(T)), 0));
        SetFlag<HardEvent::MTE3_V>(b);
    }

    TBuf<TPosition::VECCALC> codes_, halves_, offsets_, values_, out_, table_;
};

// One block's FP8 GEMM machinery: the dequantizer, the panel and (16-bit t) the f32 tile.
template <typename T>
class Fp8Gemm {
public:
    using Mm = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::GM, CubeFormat::ND, float>>;
    static constexpr bool kF32 = IsSame<T, float>::value;

    // Bytes of one block's share of the workspace.
    __aicore__ static inline uint64_t BlockBytes(uint32_t singleM, uint32_t singleN) {
        const uint64_t panel = AlignUp(singleN * PANEL_K * static_cast<uint32_t>(sizeof(T)), UB_BLOCK);
        return 2 * panel + (kF32 ? 0 : static_cast<uint64_t>(singleM) * singleN * sizeof(float));
    }

    __aicore__ inline void Init(TPipe& pipe, GM_ADDR blockWs, uint32_t singleM, uint32_t singleN) {
        dq_.Init(pipe);
        const uint64_t panel = AlignUp(singleN * PANEL_K * static_cast<uint32_t>(sizeof(T)), UB_BLOCK);
        for (uint32_t i = 0; i < 2; ++i) {
            panel_[i].SetGlobalBuffer(reinterpret_cast<__gm__ T*>(blockWs + i * panel),
                                      static_cast<uint64_t>(singleN) * PANEL_K);
        }
        if (!kF32) {
            tile_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(blockWs + 2 * panel),
                                  static_cast<uint64_t>(singleM) * singleN);
        }
    }

    // c[i, j] (pitch ldc, f32) = sum_k a[i, k] w[j, k] for i < m, j < n: a at the task's first row (pitch
    // k), w the codes at the task's first weight row `row0` of its group (pitch k), scale the group's
    // scales ([*, ceil(k / 128)]); `cube` is mm's tiling. When C is one base tile of it, the panels'
    // products add up in L0C (Iterate with enPartialSum) and C goes to GM once; otherwise each panel's
    // product is added to C in GM (IterateAll with enAtomic).
    __aicore__ inline void Accumulate(Mm& mm, const TCubeTiling& cube, const GlobalTensor<T>& a, uint32_t m,
                                      const GlobalTensor<uint8_t>& w, const GlobalTensor<float>& scale, uint32_t row0,
                                      uint32_t n, uint32_t k, const GlobalTensor<float>& c, uint32_t ldc) {
        const uint32_t sCols = CeilDiv(k, FP8_BLOCK);
        const bool inL0c = m <= static_cast<uint32_t>(cube.baseM) && n <= static_cast<uint32_t>(cube.baseN);
        uint32_t slot = 0;
        for (uint32_t kc = 0; kc < k; kc += PANEL_K, slot ^= 1u) {
            const uint32_t kw = Min(PANEL_K, k - kc);
            // The cube may still multiply the other slot's panel (its request is in flight); the one
            // before it, which read this slot, was waited for when that request was made.
            dq_.Panel(w, k, scale, sCols, row0, n, kc, kw, panel_[slot]);
            PipeBarrier<PIPE_ALL>();  // the panel is in GM before the cube loads it
            mm.SetOrgShape(static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), static_cast<int>(kw),
                           static_cast<int>(ldc));
            mm.SetTensorA(a[kc]);
            mm.SetTensorB(panel_[slot], true);
            mm.SetTail(static_cast<int>(m), static_cast<int>(n), static_cast<int>(kw));
            // Asynchronous: the next panel's dequantization overlaps this product (the request made
            // next waits for this one first, so the products add up in order).
            if (inL0c) {
                mm.template Iterate<false>(kc > 0);
            } else {
                mm.template IterateAll<false>(c, kc == 0 ? 0 : 1);
            }
        }
        if (inL0c) mm.GetTensorC(c);
        mm.End();
        PipeBarrier<PIPE_ALL>();  // C is in GM before the vector unit reads it
    }

    // y (pitch ldy) = the task's product, through the f32 tile for a 16-bit t.
    __aicore__ inline void Product(Mm& mm, const TCubeTiling& cube, const GlobalTensor<T>& a, uint32_t m,
                                   const GlobalTensor<uint8_t>& w, const GlobalTensor<float>& scale, uint32_t row0,
                                   uint32_t n, uint32_t k, const GlobalTensor<T>& y, uint32_t ldy) {
        if constexpr (kF32) {
            Accumulate(mm, cube, a, m, w, scale, row0, n, k, y, ldy);
        } else {
            Accumulate(mm, cube, a, m, w, scale, row0, n, k, tile_, n);
            dq_.Narrow(tile_, m, n, y, ldy);
            PipeBarrier<PIPE_ALL>();
        }
    }

    Fp8Dequant<T> dq_;
    GlobalTensor<T> panel_[2];
    GlobalTensor<float> tile_;
};

// linear_fp8 (hasList false: one group of all rows, group_list unused) and grouped_matmul_fp8: 1:2 mix
// kernels whose vector cores take the tasks, dequantize the panels and drive their cube core's Matmul.
template <typename T>
__aicore__ inline void GroupedMatmulFp8(GM_ADDR x, GM_ADDR w, GM_ADDR scale, GM_ADDR groupList, GM_ADDR y,
                                        GM_ADDR workspace, GM_ADDR tiling, bool hasList) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuGroupedMatmulTiling, t, tiling);
    if (t.single_m == 0 || t.single_n == 0 || t.rows == 0) return;
    const uint64_t sRows = CeilDiv(t.n, FP8_BLOCK), sCols = CeilDiv(t.k, FP8_BLOCK);
    GlobalTensor<T> xGm, yGm;
    GlobalTensor<uint8_t> wGm;
    GlobalTensor<float> sGm;
    GlobalTensor<int64_t> listGm;
    xGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.rows) * t.k);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(w), static_cast<uint64_t>(t.groups) * t.n * t.k);
    sGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(scale), t.groups * sRows * sCols);
    yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), static_cast<uint64_t>(t.rows) * t.n);
    if (hasList) listGm.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(groupList), t.groups);

    TCubeTiling cube = ToCubeTiling(t.cube);
    TPipe pipe;
    typename Fp8Gemm<T>::Mm mm;
    // The cube core serves the vector cores' requests here and returns when both are done.
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, &cube);
    Fp8Gemm<T> gemm;
    gemm.Init(pipe, workspace + VectorWorker() * Fp8Gemm<T>::BlockBytes(t.single_m, t.single_n), t.single_m,
              t.single_n);
    GroupTasks tasks;
    tasks.Init(listGm, t.groups, t.rows, t.list_type, t.single_m, t.n, t.single_n, hasList);
    DealRuns(tasks);
    Task task;
    while (tasks.Next(task)) {
        const uint64_t g = task.group;
        gemm.Product(mm, cube, xGm[static_cast<uint64_t>(task.row0) * t.k], task.m, wGm[g * t.n * t.k],
                     sGm[g * sRows * sCols], task.col0, task.n, t.k,
                     yGm[static_cast<uint64_t>(task.row0) * t.n + task.col0], t.n);
    }
}

template <typename T>
class KernelExpertFfnFp8 {
    using Mm = typename Fp8Gemm<T>::Mm;

public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR wGate, GM_ADDR sGate, GM_ADDR wUp, GM_ADDR sUp, GM_ADDR wDown,
                                GM_ADDR sDown, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace,
                                const DsnpuExpertFfnTiling& t) {
        t_ = t;
        const uint64_t rows = t.rows, hidden = t.hidden, inter = t.inter, groups = t.groups;
        sUpLen_ = CeilDiv(t.inter, FP8_BLOCK) * static_cast<uint64_t>(CeilDiv(t.hidden, FP8_BLOCK));
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), rows * hidden);
        wGateGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(wGate), groups * inter * hidden);
        wUpGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(wUp), groups * inter * hidden);
        wDownGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(wDown), groups * hidden * inter);
        sGateGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sGate), groups * sUpLen_);
        sUpGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sUp), groups * sUpLen_);
        sDownGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sDown), groups * sUpLen_);
        hasList_ = groupList != nullptr;  // none: one group of all rows (a dense MLP or shared expert)
        if (hasList_) listGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(groupList), t.groups);
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), rows * hidden);
        gateWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(workspace), rows * inter);
        upWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(workspace) + rows * inter, rows * inter);
        hWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(workspace + 2 * rows * inter * sizeof(float)), rows * inter);
        const uint64_t shared = (rows * inter * (8 + sizeof(T)) + UB_BLOCK - 1) / UB_BLOCK * UB_BLOCK;
        gemmWs_ = workspace + shared;
        up = ToCubeTiling(t.cube_up);
        down = ToCubeTiling(t.cube_down);
    }

    // A vector core (after REGIST_MATMUL_OBJ made mmUp and mmDown its clients): both phases.
    __aicore__ inline void Process() {
        const uint32_t singleN = t_.single_n1 > t_.single_n2 ? t_.single_n1 : t_.single_n2;
        gemm_.Init(pipe, gemmWs_ + VectorWorker() * Fp8Gemm<T>::BlockBytes(t_.single_m, singleN), t_.single_m,
                   singleN);
        swiglu_.Init(pipe, gateWs_, upWs_, hWs_, t_.inter, t_.single_n1, t_.swiglu_rows);
        Task task;
        GroupTasks first;
        first.Init(listGm_, t_.groups, t_.rows, t_.list_type, t_.single_m, t_.inter, t_.single_n1, hasList_);
        DealRuns(first);
        while (first.Next(task)) GateUp(task);
        SyncAll();  // phase 2 needs whole rows of h, produced by many vector cores
        GroupTasks second;
        second.Init(listGm_, t_.groups, t_.rows, t_.list_type, t_.single_m, t_.hidden, t_.single_n2, hasList_);
        DealRuns(second);
        while (second.Next(task)) {
            const uint64_t g = task.group;
            gemm_.Product(mmDown, down, hWs_[static_cast<uint64_t>(task.row0) * t_.inter], task.m,
                          wDownGm_[g * t_.hidden * t_.inter], sDownGm_[g * sUpLen_], task.col0, task.n, t_.inter,
                          yGm_[static_cast<uint64_t>(task.row0) * t_.hidden + task.col0], t_.hidden);
        }
    }

private:
    __aicore__ inline void GateUp(const Task& task) {
        const uint64_t g = task.group;
        const uint64_t c = static_cast<uint64_t>(task.row0) * t_.inter + task.col0;
        const GlobalTensor<T> a = xGm_[static_cast<uint64_t>(task.row0) * t_.hidden];
        const uint64_t w = g * t_.inter * t_.hidden;
        gemm_.Accumulate(mmUp, up, a, task.m, wGateGm_[w], sGateGm_[g * sUpLen_], task.col0, task.n, t_.hidden,
                         gateWs_[c], t_.inter);
        gemm_.Accumulate(mmUp, up, a, task.m, wUpGm_[w], sUpGm_[g * sUpLen_], task.col0, task.n, t_.hidden,
                         upWs_[c], t_.inter);
        swiglu_.Rows(c, task.m, task.n);
    }

public:
    TPipe pipe;
    TCubeTiling up, down;
    Mm mmUp, mmDown;

private:
    SwiGluStage<T> swiglu_;
    GlobalTensor<T> xGm_, yGm_, hWs_;
    GlobalTensor<uint8_t> wGateGm_, wUpGm_, wDownGm_;
    GlobalTensor<float> sGateGm_, sUpGm_, sDownGm_, gateWs_, upWs_;
    GlobalTensor<int64_t> listGm_;
    GM_ADDR gemmWs_ = nullptr;
    Fp8Gemm<T> gemm_;
    DsnpuExpertFfnTiling t_{};
    uint64_t sUpLen_ = 0;
    bool hasList_ = true;
};

template <typename T>
__aicore__ inline void ExpertFfnFp8(GM_ADDR x, GM_ADDR wGate, GM_ADDR sGate, GM_ADDR wUp, GM_ADDR sUp, GM_ADDR wDown,
                                    GM_ADDR sDown, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuExpertFfnTiling, t, tiling);
    // The same tiling on every core: all return here, or none.
    if (t.single_m == 0 || t.single_n1 == 0 || t.single_n2 == 0 || t.swiglu_rows == 0 || t.rows == 0) return;
    KernelExpertFfnFp8<T> op;
    op.Init(x, wGate, sGate, wUp, sUp, wDown, sDown, groupList, y, GetUserWorkspace(workspace), t);
    // The cube core serves the vector cores' Matmul requests here and returns when both are done.
    REGIST_MATMUL_OBJ(&op.pipe, GetSysWorkSpacePtr(), op.mmUp, &op.up, op.mmDown, &op.down);
    op.Process();
}

}  // namespace

#define DSNPU_GROUPED_MATMUL(suffix, type)                                                                    \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(grouped_matmul_##suffix)(                              \
        GM_ADDR x, GM_ADDR w, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {             \
        (void)workspace;                                                                                       \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY);                                                        \
        GroupedMatmul<type>(x, w, groupList, y, tiling);                                                       \
    }                                                                                                          \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(expert_ffn_##suffix)(                                  \
        GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, \
        GM_ADDR tiling) {                                                                                      \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                     \
        ExpertFfn<type>(x, wGate, wUp, wDown, groupList, y, workspace, tiling);                                \
    }

#define DSNPU_GROUPED_MATMUL_F32_W(suffix, type)                                                              \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(grouped_matmul_f32_w##suffix)(                         \
        GM_ADDR x, GM_ADDR w, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {             \
        (void)workspace;                                                                                       \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY);                                                        \
        GroupedMatmul<float, type>(x, w, groupList, y, tiling);                                                \
    }                                                                                                          \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(expert_ffn_f32_w##suffix)(                             \
        GM_ADDR x, GM_ADDR wGate, GM_ADDR wUp, GM_ADDR wDown, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, \
        GM_ADDR tiling) {                                                                                      \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                     \
        ExpertFfn<float, type>(x, wGate, wUp, wDown, groupList, y, workspace, tiling);                         \
    }

DSNPU_GROUPED_MATMUL_F32_W(f32, float)
DSNPU_GROUPED_MATMUL_F32_W(f16, half)
DSNPU_GROUPED_MATMUL_F32_W(bf16, bfloat16_t)

DSNPU_GROUPED_MATMUL(f32, float)
DSNPU_GROUPED_MATMUL(f16, half)
DSNPU_GROUPED_MATMUL(bf16, bfloat16_t)

#define DSNPU_FP8_WEIGHTS(suffix, type)                                                                          \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(linear_fp8_##suffix)(                                      \
        GM_ADDR x, GM_ADDR w, GM_ADDR scale, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {                      \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                      \
        GroupedMatmulFp8<type>(x, w, scale, nullptr, y, GetUserWorkspace(workspace), tiling, false);               \
    }                                                                                                               \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(grouped_matmul_fp8_##suffix)(                              \
        GM_ADDR x, GM_ADDR w, GM_ADDR scale, GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {   \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                      \
        GroupedMatmulFp8<type>(x, w, scale, groupList, y, GetUserWorkspace(workspace), tiling, true);              \
    }                                                                                                               \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(expert_ffn_fp8_##suffix)(                                  \
        GM_ADDR x, GM_ADDR wGate, GM_ADDR sGate, GM_ADDR wUp, GM_ADDR sUp, GM_ADDR wDown, GM_ADDR sDown,          \
        GM_ADDR groupList, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {                                        \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                      \
        ExpertFfnFp8<type>(x, wGate, sGate, wUp, sUp, wDown, sDown, groupList, y, workspace, tiling);             \
    }

DSNPU_FP8_WEIGHTS(f32, float)
DSNPU_FP8_WEIGHTS(f16, half)
DSNPU_FP8_WEIGHTS(bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/moe_grouped_matmul.inc"
#endif
