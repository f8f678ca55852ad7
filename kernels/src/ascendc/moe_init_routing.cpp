/*
 * moe_init_routing_<t> and moe_init_routing_quant_<t> (t = f32, f16, bf16): dispatch, a multi-core counting
 * sort of the flat (token, k) pairs by expert, stable in pair order (aclnnMoeInitRoutingV2/V3; the
 * contract is dsnpu-ops' moe::routing and moe::quant).
 *
 *   expanded_x[expanded_row_idx[t*K + k]] = x[t]       (quant: the int8 codes of x[t], and its scale)
 *   expanded_row_idx[t*K + k] = -1 when ids[t, k] is outside [active_start, active_end)
 *   expert_tokens[e] = rows of expert e (0 outside the active range), as counts or inclusive cumsum
 *
 * Block b owns tokens [b * tokens_per_block, ...) and so the pairs of those tokens. Three phases, two
 * SyncAll (every launched block takes part in both; a launch of one block only drains its pipes there):
 *   A. count: stream the block's ids through UB in chunks of tokens_per_chunk tokens and count its pairs
 *      per active expert (scalar); write the histogram to workspace row b.
 *   B. prefix over blocks: block b takes experts [b * experts_per_block, ...), reads that column slice of
 *      all `blocks` histograms with one strided DataCopyPad, turns it into running sums down the blocks
 *      (vector Add) and writes back the exclusive sums (into rows 1..blocks-1; row 0's are zero) and the
 *      per-expert totals. Each block moves O(blocks * experts / blocks) words here, not the whole table.
 *   C. scatter: read the totals and this block's row of exclusive sums; the first row of expert e for
 *      this block is (rows of experts < e) + (rows of e in earlier blocks). Block 0 writes expert_tokens.
 *      Then x is streamed in tiles of tokens_per_tile rows (double-buffered TQueBind VECIN -> VECOUT: a
 *      row goes out of UB exactly as it came in) and each row is written once per active pair straight
 *      from UB; the ids chunk is overwritten in place by the row indices and written out.
 * GM traffic: x read once, every dispatched row written once, ids read once (twice only when a block's
 * ids do not fit one chunk), the row indices written once, plus O(blocks * experts) workspace words.
 * Quant: each token's row is quantized once in f32 (scale = max|x| / 127, codes = x / scale: Div, Cast to
 * half with CAST_TRUNC, Cast to int8 with CAST_ROUND; a zero row divides by 1 and gets scale 0), then its
 * codes and scale are written per pair.
 *
 * UB use (C = tokens_per_chunk, R = tokens_per_tile, XB = round_up_32(hidden * sizeof(t)),
 * E4 = round_up_32(experts * 4), E8 = round_up_32(experts * 8),
 * S = max(blocks * round_up_32(experts_per_block * 4), 2 E4 + E8)):
 *   round_up_32(C * top_k * 4) (ids / row indices) + E4 (counts, then next rows) + S (phase B / C) + 2 R XB
 *   quant adds, with F = XB / sizeof(t) * 4, Q = round_up_32(hidden):
 *   [R F (the tile in f32, 16-bit t only)] + F (scratch row) + round_up_32(hidden * 2) (half row)
 *   + 2 R Q (codes queue) + 32 R (scale slots) + 32 + round_up_32(ceil(hidden / 64) * 8) (ReduceMax).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

// Type selection without the standard library (not available to AI Core code).
template <bool C, typename A, typename B>
struct Pick {
    using type = A;
};
template <typename A, typename B>
struct Pick<false, A, B> {
    using type = B;
};

template <typename T, bool QUANT>
class KernelMoeInitRouting {
    static constexpr bool IS_F32 = IsSame<T, float>::value;
    using Out = typename Pick<QUANT, int8_t, T>::type;

public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR ids, GM_ADDR expandedX, GM_ADDR scales, GM_ADDR rowIdx,
                                GM_ADDR expertTokens, GM_ADDR workspace, const DsnpuMoeInitRoutingTiling& t) {
        t_ = t;
        block_ = static_cast<uint32_t>(GetBlockIdx());
        const uint64_t first = static_cast<uint64_t>(block_) * t.tokens_per_block;
        tokens_ = block_ >= t.blocks || first >= t.tokens
                      ? 0
                      : Min(t.tokens_per_block, static_cast<uint32_t>(t.tokens - first));
        first_ = static_cast<uint32_t>(tokens_ == 0 ? 0 : first);
        const uint64_t pairs = static_cast<uint64_t>(t.tokens) * t.top_k;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t.tokens) * t.hidden);
        idsGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(ids), pairs);
        exGm_.SetGlobalBuffer(reinterpret_cast<__gm__ Out*>(expandedX), pairs * t.hidden);
        if constexpr (QUANT) {
            scaleGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(scales), pairs);
        }
        rowIdxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(rowIdx), pairs);
        etGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(expertTokens), t.experts);
        GM_ADDR ws = GetUserWorkspace(workspace);
        histGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(ws), static_cast<uint64_t>(t.blocks) * t.experts);
        totGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(ws) + static_cast<uint64_t>(t.blocks) * t.experts,
                               t.experts);

        const uint32_t e4 = AlignUp(t.experts * sizeof(int32_t), UB_BLOCK);
        const uint32_t e8 = AlignUp(t.experts * sizeof(int64_t), UB_BLOCK);
        const uint32_t colBytes = t.blocks * AlignUp(t.experts_per_block * sizeof(int32_t), UB_BLOCK);
        rowBytes_ = AlignUp(t.hidden * sizeof(T), UB_BLOCK);
        rowElems_ = rowBytes_ / sizeof(T);
        pipe_.InitBuffer(ids_, t.tokens_per_chunk * t.top_k * sizeof(int32_t));
        pipe_.InitBuffer(perExpert_, e4);
        pipe_.InitBuffer(scratch_, colBytes > 2 * e4 + e8 ? colBytes : 2 * e4 + e8);
        pipe_.InitBuffer(xQue_, BUFFER_NUM, t.tokens_per_tile * rowBytes_);
        if constexpr (QUANT) {
            const uint32_t tile = t.tokens_per_tile;
            const uint32_t f32Row = rowElems_ * sizeof(float);
            if constexpr (!IS_F32) {
                pipe_.InitBuffer(xF_, tile * f32Row);
            }
            pipe_.InitBuffer(tmp_, f32Row);
            pipe_.InitBuffer(half_, AlignUp(t.hidden * sizeof(half), UB_BLOCK));
            codeBytes_ = AlignUp(t.hidden, UB_BLOCK);
            pipe_.InitBuffer(qQue_, BUFFER_NUM, tile * codeBytes_);
            pipe_.InitBuffer(scaleSlots_, tile * UB_BLOCK);
            pipe_.InitBuffer(red_, UB_BLOCK + AlignUp(CeilDiv(t.hidden, 64) * 2 * sizeof(float), UB_BLOCK));
        }
    }

    __aicore__ inline void Process() {
        Count();
        PhasesMeet();
        PrefixOverBlocks();
        PhasesMeet();
        if (tokens_ == 0) return;
        FirstRows();
        Scatter();
    }

private:
    // Between phases every block's workspace writes are in GM before any block reads them: SyncAll; a
    // launch of one block (a decode step of one token) only drains its own pipes, which is all SyncAll
    // would do for it, without the launch-wide barrier.
    __aicore__ inline void PhasesMeet() {
        if (GetBlockNum() == 1) {
            PipeBarrier<PIPE_ALL>();
        } else {
            SyncAll();
        }
    }

    __aicore__ inline bool Active(int32_t e) const {
        return e >= static_cast<int32_t>(t_.active_start) && e < static_cast<int32_t>(t_.active_end);
    }

    __aicore__ inline uint32_t Chunks() const { return CeilDiv(tokens_, t_.tokens_per_chunk); }

    __aicore__ inline void LoadIds(uint32_t c0, uint32_t n) {
        LocalTensor<int32_t> ids = ids_.Get<int32_t>();
        const DataCopyExtParams p(1, n * t_.top_k * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0);
        DataCopyPad(ids, idsGm_[static_cast<uint64_t>(first_ + c0) * t_.top_k], p,
                    DataCopyPadExtParams<int32_t>(false, 0, 0, 0));
        SetFlag<HardEvent::MTE2_S>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
    }

    // Phase A: this block's pairs per active expert, into workspace row block_.
    __aicore__ inline void Count() {
        if (block_ >= t_.blocks) return;
        LocalTensor<int32_t> cnt = perExpert_.Get<int32_t>();
        Duplicate(cnt, 0, static_cast<int32_t>(cnt.GetSize()));
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        LocalTensor<int32_t> ids = ids_.Get<int32_t>();
        for (uint32_t c0 = 0; c0 < tokens_; c0 += t_.tokens_per_chunk) {
            const uint32_t n = Min(t_.tokens_per_chunk, tokens_ - c0);
            LoadIds(c0, n);
            for (uint32_t i = 0; i < n * t_.top_k; ++i) {
                const int32_t e = ids.GetValue(i);
                if (Active(e)) cnt.SetValue(static_cast<uint32_t>(e), cnt.GetValue(static_cast<uint32_t>(e)) + 1);
            }
        }
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
        DataCopyPad(histGm_[static_cast<uint64_t>(block_) * t_.experts], cnt,
                    DataCopyExtParams(1, t_.experts * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0));
    }

    // Phase B: running sums down the blocks for this block's slice of experts.
    __aicore__ inline void PrefixOverBlocks() {
        const uint32_t e0 = block_ * t_.experts_per_block;
        if (t_.experts_per_block == 0 || e0 >= t_.experts) return;
        const uint32_t w = Min(t_.experts_per_block, t_.experts - e0);
        const uint32_t wBytes = w * static_cast<uint32_t>(sizeof(int32_t));
        const uint32_t pitch = AlignUp(wBytes, UB_BLOCK) / sizeof(int32_t);
        const uint32_t gmGap = (t_.experts - w) * static_cast<uint32_t>(sizeof(int32_t));
        LocalTensor<int32_t> col = scratch_.Get<int32_t>();
        DataCopyPad(col, histGm_[e0], DataCopyExtParams(static_cast<uint16_t>(t_.blocks), wBytes, gmGap, 0, 0),
                    DataCopyPadExtParams<int32_t>(false, 0, 0, 0));
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
        for (uint32_t r = 1; r < t_.blocks; ++r) {
            Add(col[r * pitch], col[r * pitch], col[(r - 1) * pitch], static_cast<int32_t>(pitch));
        }
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
        // Inclusive row r - 1 is the exclusive sum of block r.
        if (t_.blocks > 1) {
            DataCopyPad(histGm_[t_.experts + e0], col,
                        DataCopyExtParams(static_cast<uint16_t>(t_.blocks - 1), wBytes, 0, gmGap, 0));
        }
        DataCopyPad(totGm_[e0], col[(t_.blocks - 1) * pitch], DataCopyExtParams(1, wBytes, 0, 0, 0));
    }

    // Phase C, first part: the next free row of every expert for this block; block 0 writes expert_tokens.
    __aicore__ inline void FirstRows() {
        const uint32_t e4 = AlignUp(t_.experts * sizeof(int32_t), UB_BLOCK) / sizeof(int32_t);
        const DataCopyExtParams row(1, t_.experts * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0);
        const DataCopyPadExtParams<int32_t> noPad(false, 0, 0, 0);
        LocalTensor<int32_t> tot = scratch_.Get<int32_t>();
        LocalTensor<int32_t> before = tot[e4];
        DataCopyPad(tot, totGm_, row, noPad);
        if (block_ != 0) DataCopyPad(before, histGm_[static_cast<uint64_t>(block_) * t_.experts], row, noPad);
        SetFlag<HardEvent::MTE2_S>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
        LocalTensor<int32_t> next = perExpert_.Get<int32_t>();
        LocalTensor<int64_t> list = tot[2 * e4].ReinterpretCast<int64_t>();
        int32_t acc = 0;
        for (uint32_t e = 0; e < t_.experts; ++e) {
            const int32_t c = tot.GetValue(e);
            next.SetValue(e, acc + (block_ != 0 ? before.GetValue(e) : 0));
            acc += c;
            if (block_ == 0) list.SetValue(e, t_.tokens_mode == DSNPU_MOE_LIST_COUNT ? c : acc);
        }
        if (block_ == 0) {
            SetFlag<HardEvent::S_MTE3>(0);
            WaitFlag<HardEvent::S_MTE3>(0);
            DataCopyPad(etGm_, list, DataCopyExtParams(1, t_.experts * static_cast<uint32_t>(sizeof(int64_t)), 0, 0, 0));
        }
    }

    // Phase C, second part: every pair's row, in pair order.
    __aicore__ inline void Scatter() {
        LocalTensor<int32_t> ids = ids_.Get<int32_t>();
        LocalTensor<int32_t> next = perExpert_.Get<int32_t>();
        const bool resident = Chunks() == 1;  // phase A left the only chunk in UB
        for (uint32_t c0 = 0; c0 < tokens_; c0 += t_.tokens_per_chunk) {
            const uint32_t nc = Min(t_.tokens_per_chunk, tokens_ - c0);
            if (!resident) LoadIds(c0, nc);
            for (uint32_t j0 = c0; j0 < c0 + nc; j0 += t_.tokens_per_tile) {
                const uint32_t nj = Min(t_.tokens_per_tile, c0 + nc - j0);
                // Rows after the tile's last active pair are never written out, so they are not read
                // either (a caller may leave them unwritten, as ep_combine's padding rows are).
                const uint32_t live = LiveRows(j0 - c0, nj);
                LocalTensor<Out> rows;
                if (live > 0) {
                    LoadTile(j0, live);
                    rows = Prepare(live);
                }
                for (uint32_t j = 0; j < nj; ++j) {
                    for (uint32_t k = 0; k < t_.top_k; ++k) {
                        const uint32_t i = (j0 - c0 + j) * t_.top_k + k;
                        const int32_t e = ids.GetValue(i);
                        if (!Active(e)) {
                            ids.SetValue(i, -1);
                            continue;
                        }
                        const int32_t r = next.GetValue(static_cast<uint32_t>(e));
                        next.SetValue(static_cast<uint32_t>(e), r + 1);
                        ids.SetValue(i, r);
                        WriteRow(rows, j, static_cast<uint64_t>(r));
                    }
                }
                if (live > 0) Release(rows);
            }
            SetFlag<HardEvent::S_MTE3>(0);
            WaitFlag<HardEvent::S_MTE3>(0);
            DataCopyPad(rowIdxGm_[static_cast<uint64_t>(first_ + c0) * t_.top_k], ids,
                        DataCopyExtParams(1, nc * t_.top_k * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0));
            SetFlag<HardEvent::MTE3_MTE2>(0);
            WaitFlag<HardEvent::MTE3_MTE2>(0);
        }
    }

    // 1 + the last row among `n` tile rows (ids from pair `first * top_k` of the chunk in UB) with an
    // active pair, 0 when none has one.
    __aicore__ inline uint32_t LiveRows(uint32_t first, uint32_t n) {
        LocalTensor<int32_t> ids = ids_.Get<int32_t>();
        uint32_t live = 0;
        for (uint32_t j = 0; j < n; ++j) {
            for (uint32_t k = 0; k < t_.top_k; ++k) {
                if (Active(ids.GetValue((first + j) * t_.top_k + k))) live = j + 1;
            }
        }
        return live;
    }

    __aicore__ inline void LoadTile(uint32_t j0, uint32_t n) {
        LocalTensor<T> x = xQue_.template AllocTensor<T>();
        DataCopyPad(x, xGm_[static_cast<uint64_t>(first_ + j0) * t_.hidden],
                    DataCopyExtParams(static_cast<uint16_t>(n), t_.hidden * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        xQue_.EnQue(x);
    }

    // The tile's rows as they go out: x itself, or its codes (with the scales in scaleSlots_).
    __aicore__ inline LocalTensor<Out> Prepare(uint32_t n) {
        if constexpr (!QUANT) {
            (void)n;
            return xQue_.template DeQue<T>();
        } else {
            LocalTensor<T> x = xQue_.template DeQue<T>();
            LocalTensor<float> xf;
            if constexpr (IS_F32) {
                xf = x;
            } else {
                xf = xF_.Get<float>();
                ToFloat(xf, x, n * rowElems_);
            }
            LocalTensor<int8_t> q = qQue_.AllocTensor<int8_t>();
            LocalTensor<float> tmp = tmp_.Get<float>();
            LocalTensor<half> h = half_.Get<half>();
            LocalTensor<float> red = red_.Get<float>();
            LocalTensor<float> slots = scaleSlots_.Get<float>();
            const int32_t hidden = static_cast<int32_t>(t_.hidden);
            for (uint32_t j = 0; j < n; ++j) {
                LocalTensor<float> row = xf[j * rowElems_];
                Abs(tmp, row, hidden);
                ReduceMax(red, tmp, red[UB_BLOCK / sizeof(float)], hidden);
                SetFlag<HardEvent::V_S>(0);
                WaitFlag<HardEvent::V_S>(0);
                const float scale = red.GetValue(0) / 127.0f;
                slots.SetValue(j * (UB_BLOCK / sizeof(float)), scale);
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
                Duplicate(tmp, scale == 0.0f ? 1.0f : scale, hidden);
                Div(row, row, tmp, hidden);
                Cast(h, row, RoundMode::CAST_TRUNC, t_.hidden);
                Cast(q[j * codeBytes_], h, RoundMode::CAST_ROUND, t_.hidden);
            }
            xQue_.FreeTensor(x);
            qQue_.EnQue(q);
            SetFlag<HardEvent::S_MTE3>(0);
            WaitFlag<HardEvent::S_MTE3>(0);
            return qQue_.template DeQue<int8_t>();
        }
    }

    __aicore__ inline void WriteRow(const LocalTensor<Out>& rows, uint32_t j, uint64_t r) {
        if constexpr (!QUANT) {
            DataCopyPad(exGm_[r * t_.hidden], rows[j * rowElems_],
                        DataCopyExtParams(1, t_.hidden * static_cast<uint32_t>(sizeof(T)), 0, 0, 0));
        } else {
            DataCopyPad(exGm_[r * t_.hidden], rows[j * codeBytes_], DataCopyExtParams(1, t_.hidden, 0, 0, 0));
            DataCopyPad(scaleGm_[r], scaleSlots_.Get<float>()[j * (UB_BLOCK / sizeof(float))],
                        DataCopyExtParams(1, sizeof(float), 0, 0, 0));
        }
    }

    __aicore__ inline void Release(LocalTensor<Out>& rows) {
        if constexpr (!QUANT) {
            xQue_.FreeTensor(rows);
        } else {
            qQue_.FreeTensor(rows);
            // The next tile's scales are stored by the scalar unit into slots MTE3 has been reading.
            SetFlag<HardEvent::MTE3_S>(0);
            WaitFlag<HardEvent::MTE3_S>(0);
        }
    }

    using XQue = typename Pick<QUANT, TQue<TPosition::VECIN, BUFFER_NUM>,
                                           TQueBind<TPosition::VECIN, TPosition::VECOUT, BUFFER_NUM>>::type;

    TPipe pipe_;
    XQue xQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> qQue_;
    TBuf<TPosition::VECCALC> ids_, perExpert_, scratch_, xF_, tmp_, half_, scaleSlots_, red_;
    GlobalTensor<T> xGm_;
    GlobalTensor<Out> exGm_;
    GlobalTensor<float> scaleGm_;
    GlobalTensor<int32_t> idsGm_, rowIdxGm_, histGm_, totGm_;
    GlobalTensor<int64_t> etGm_;
    DsnpuMoeInitRoutingTiling t_{};
    uint32_t block_ = 0, tokens_ = 0, first_ = 0, rowBytes_ = 0, rowElems_ = 0, codeBytes_ = 0;
};

template <typename T, bool QUANT>
__aicore__ inline void MoeInitRouting(GM_ADDR x, GM_ADDR ids, GM_ADDR expandedX, GM_ADDR scales, GM_ADDR rowIdx,
                                      GM_ADDR expertTokens, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMoeInitRoutingTiling, t, tiling);
    KernelMoeInitRouting<T, QUANT> op;
    op.Init(x, ids, expandedX, scales, rowIdx, expertTokens, workspace, t);
    op.Process();
}

}  // namespace

#define DSNPU_MOE_INIT_ROUTING(suffix, type)                                                                  \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(moe_init_routing_##suffix)(                            \
        GM_ADDR x, GM_ADDR ids, GM_ADDR expandedX, GM_ADDR rowIdx, GM_ADDR expertTokens, GM_ADDR workspace,    \
        GM_ADDR tiling) {                                                                                      \
        MoeInitRouting<type, false>(x, ids, expandedX, nullptr, rowIdx, expertTokens, workspace, tiling);     \
    }                                                                                                          \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(moe_init_routing_quant_##suffix)(                      \
        GM_ADDR x, GM_ADDR ids, GM_ADDR expandedX, GM_ADDR scales, GM_ADDR rowIdx, GM_ADDR expertTokens,       \
        GM_ADDR workspace, GM_ADDR tiling) {                                                                   \
        MoeInitRouting<type, true>(x, ids, expandedX, scales, rowIdx, expertTokens, workspace, tiling);       \
    }

DSNPU_MOE_INIT_ROUTING(f32, float)
DSNPU_MOE_INIT_ROUTING(f16, half)
DSNPU_MOE_INIT_ROUTING(bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/moe_init_routing.inc"
#endif
