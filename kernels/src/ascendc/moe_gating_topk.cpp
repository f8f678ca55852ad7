/*
 * moe_gating_topk_<t> (t = f32, f16, bf16): which top_k experts each token goes to and with what weight
 * (aclnnMoeGatingTopK; the contract is dsnpu-ops' moe::gating, whose tie rules this follows exactly).
 *
 *   s = sigmoid(logits) or softmax(logits)            f32; the weights come from s
 *   b = s + bias (or s)                               selection scores
 *   group score = top-2 sum of b in the group (with a bias; the one value for one-expert groups) or its
 *                 max (without); the topk_group best groups survive, ties to the lower group
 *   ids = top_k of b among surviving experts, descending, ties to the lower expert
 *   w[k] = s[ids[k]]; w /= (sum w + 1e-20) if normalize; w *= routed_scaling_factor   (scalar f32)
 *
 * Tokens are split across blocks (tokens_per_block) and streamed in tiles of tokens_per_tile rows through a
 * double-buffered input queue. One DataCopyPad moves a tile as tokens x n_group blocks of one group each,
 * so in UB every group starts on a group_pad boundary (group_pad = round_up(E / n_group, 16): 32-byte
 * aligned for every t and for the f32 scores) and every reduction below works on an aligned group.
 * The score functions run over the whole tile in f32 (the padding lanes compute garbage that nothing
 * reads). Selection is per token, all with ReduceMax (which returns the lowest index among equal maxima,
 * the tie rule of the contract):
 *   - per group one ReduceMax gives its best expert (and, with a bias, a second one with that expert
 *     masked to -inf gives the top-2 sum); the best expert of every group is a candidate;
 *   - topk_group ReduceMax over the group scores pick the surviving groups; the others' candidates
 *     become -inf;
 *   - each of the top_k steps takes the ReduceMax of the candidates (lowest group on ties, which is the
 *     lowest expert because groups are contiguous), masks that expert and refreshes only its group's
 *     candidate with one more ReduceMax over the group.
 * Per token that is about 2E (E with no bias) + top_k * (n_group + E / n_group) reduced elements instead
 * of top_k passes over all E. ids and weights leave through double-buffered output queues.
 *
 * UB use (R = tokens_per_tile, G = n_group * group_pad, RW = round_up_32(n_group * 4),
 * W = round_up_32(ceil(max(E / n_group, n_group) / 64) * 8), O = round_up_32(R * top_k * 4)):
 *   2 R G sizeof(t) (logits queue) + 4 R G (scores) + 4 G (selection) [+ 4 G (bias)] + 3 RW
 *   + 32 + W (ReduceMax result and work) + 2 O (ids queue) + 2 O (weights queue).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

constexpr float NEG_INF = -__builtin_inff();
constexpr float NORMALIZE_EPS = 1e-20f;

template <typename T>
class KernelMoeGating {
public:
    __aicore__ inline void Init(GM_ADDR logits, GM_ADDR bias, GM_ADDR ids, GM_ADDR weights,
                                const DsnpuMoeGatingTiling& t) {
        t_ = t;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.tokens_per_block;
        tokens_ = first >= t.tokens ? 0 : Min(t.tokens_per_block, static_cast<uint32_t>(t.tokens - first));
        if (tokens_ == 0 || t.tokens_per_tile == 0 || t.n_group == 0 || t.top_k == 0) {
            tokens_ = 0;
            return;
        }
        first_ = static_cast<uint32_t>(first);
        groupSize_ = t.experts / t.n_group;
        rowElems_ = t.n_group * t.group_pad;
        GlobalTensor<T> all;
        all.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(logits), static_cast<uint64_t>(t.tokens) * t.experts);
        logitsGm_ = all[static_cast<uint64_t>(first) * t.experts];
        GlobalTensor<int32_t> allIds;
        allIds.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(ids), static_cast<uint64_t>(t.tokens) * t.top_k);
        idsGm_ = allIds[static_cast<uint64_t>(first) * t.top_k];
        GlobalTensor<float> allW;
        allW.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(weights), static_cast<uint64_t>(t.tokens) * t.top_k);
        wGm_ = allW[static_cast<uint64_t>(first) * t.top_k];
        if (t.has_bias != 0) {
            biasGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(bias), t.experts);
        }

        const uint32_t tile = t.tokens_per_tile;
        const uint32_t groupBytes = AlignUp(t.n_group * sizeof(float), UB_BLOCK);
        const uint32_t maxReduce = groupSize_ > t.n_group ? groupSize_ : t.n_group;
        pipe_.InitBuffer(inQue_, BUFFER_NUM, tile * rowElems_ * sizeof(T));
        pipe_.InitBuffer(scores_, tile * rowElems_ * sizeof(float));
        pipe_.InitBuffer(sel_, rowElems_ * sizeof(float));
        if (t.has_bias != 0) {
            pipe_.InitBuffer(bias_, rowElems_ * sizeof(float));
        }
        pipe_.InitBuffer(groupScore_, groupBytes);
        pipe_.InitBuffer(cand_, groupBytes);
        pipe_.InitBuffer(candIdx_, groupBytes);
        pipe_.InitBuffer(red_, UB_BLOCK + AlignUp(CeilDiv(maxReduce, 64) * 2 * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(idsQue_, BUFFER_NUM, tile * t.top_k * sizeof(int32_t));
        pipe_.InitBuffer(wQue_, BUFFER_NUM, tile * t.top_k * sizeof(float));
    }

    __aicore__ inline void Process() {
        if (tokens_ == 0) return;
        if (t_.has_bias != 0) LoadBias();
        for (uint32_t t0 = 0; t0 < tokens_; t0 += t_.tokens_per_tile) {
            const uint32_t n = Min(t_.tokens_per_tile, tokens_ - t0);
            CopyIn(t0, n);
            Compute(n);
            CopyOut(t0, n);
        }
    }

private:
    // n_group blocks of one group each (n per token), every group starting on a group_pad boundary.
    template <typename U>
    __aicore__ inline DataCopyExtParams Groups(uint32_t count) const {
        const uint32_t bytes = groupSize_ * static_cast<uint32_t>(sizeof(U));
        const uint32_t gap = (t_.group_pad * static_cast<uint32_t>(sizeof(U)) - AlignUp(bytes, UB_BLOCK)) / UB_BLOCK;
        return DataCopyExtParams(static_cast<uint16_t>(count), bytes, 0, gap, 0);
    }

    __aicore__ inline void LoadBias() {
        LocalTensor<float> b = bias_.Get<float>();
        DataCopyPad(b, biasGm_, Groups<float>(t_.n_group), DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
    }

    __aicore__ inline void CopyIn(uint32_t t0, uint32_t n) {
        LocalTensor<T> x = inQue_.AllocTensor<T>();
        DataCopyPad(x, logitsGm_[static_cast<uint64_t>(t0) * t_.experts], Groups<T>(n * t_.n_group),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        inQue_.EnQue(x);
    }

    __aicore__ inline void Compute(uint32_t n) {
        const uint32_t total = n * rowElems_;
        LocalTensor<T> x = inQue_.DeQue<T>();
        LocalTensor<float> s = scores_.Get<float>();
        ToFloat(s, x, total);
        inQue_.FreeTensor(x);
        if (t_.score_func == DSNPU_MOE_SCORE_SIGMOID) {
            // 1 / (1 + exp(-l)) over the whole tile.
            Muls(s, s, -1.0f, total);
            Exp(s, s, total);
            Adds(s, s, 1.0f, total);
            Reciprocal(s, s, total);
        } else {
            for (uint32_t i = 0; i < n; ++i) Softmax(s[i * rowElems_]);
        }
        LocalTensor<int32_t> ids = idsQue_.AllocTensor<int32_t>();
        LocalTensor<float> w = wQue_.AllocTensor<float>();
        for (uint32_t i = 0; i < n; ++i) Select(s[i * rowElems_], ids, w, i * t_.top_k);
        // ids and w were written by the scalar unit (SetValue): the queue's implicit V_MTE3 flag does not
        // cover that, so MTE3 waits for S explicitly (CopyOut).
        SetFlag<HardEvent::S_MTE3>(0);
        idsQue_.EnQue(ids);
        wQue_.EnQue(w);
    }

    // The reduction result: value, and the index bits ReduceMax stores next to it.
    __aicore__ inline float ReducedValue() {
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        return red_.Get<float>().GetValue(0);
    }
    __aicore__ inline uint32_t ReducedIndex() { return red_.Get<uint32_t>().GetValue(1); }

    __aicore__ inline void ArgMax(const LocalTensor<float>& src, uint32_t count, bool withIndex) {
        LocalTensor<float> red = red_.Get<float>();
        ReduceMax(red, src, red[UB_BLOCK / sizeof(float)], static_cast<int32_t>(count), withIndex);
    }

    // exp(l - max) / sum over one token's groups (max and sum group by group: the padding is not data).
    __aicore__ inline void Softmax(const LocalTensor<float>& row) {
        LocalTensor<float> red = red_.Get<float>();
        LocalTensor<float> work = red[UB_BLOCK / sizeof(float)];
        float mx = NEG_INF;
        for (uint32_t g = 0; g < t_.n_group; ++g) {
            ArgMax(row[g * t_.group_pad], groupSize_, false);
            const float v = ReducedValue();
            mx = v > mx ? v : mx;
        }
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Adds(row, row, -mx, static_cast<int32_t>(rowElems_));
        Exp(row, row, static_cast<int32_t>(rowElems_));
        float sum = 0.0f;
        for (uint32_t g = 0; g < t_.n_group; ++g) {
            ReduceSum(red, row[g * t_.group_pad], work, static_cast<int32_t>(groupSize_));
            sum += ReducedValue();
        }
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        LocalTensor<float> sums = sel_.Get<float>();
        Duplicate(sums, sum, static_cast<int32_t>(rowElems_));
        Div(row, row, sums, static_cast<int32_t>(rowElems_));
    }

    // Group limit, top-k and weights of one token whose scores are `s`; results at ids/w[o, o + top_k).
    __aicore__ inline void Select(const LocalTensor<float>& s, const LocalTensor<int32_t>& ids,
                                  const LocalTensor<float>& w, uint32_t o) {
        LocalTensor<float> b = sel_.Get<float>();
        if (t_.has_bias != 0) {
            Add(b, s, bias_.Get<float>(), static_cast<int32_t>(rowElems_));
        } else {
            DataCopy(b, s, rowElems_);
        }
        LocalTensor<float> groupScore = groupScore_.Get<float>();
        LocalTensor<float> cand = cand_.Get<float>();
        LocalTensor<int32_t> candIdx = candIdx_.Get<int32_t>();
        for (uint32_t g = 0; g < t_.n_group; ++g) {
            LocalTensor<float> bg = b[g * t_.group_pad];
            ArgMax(bg, groupSize_, true);
            const float v1 = ReducedValue();
            const uint32_t i1 = ReducedIndex();
            cand.SetValue(g, v1);
            candIdx.SetValue(g, static_cast<int32_t>(i1));
            float score = v1;
            if (t_.has_bias != 0 && groupSize_ > 1) {
                bg.SetValue(i1, NEG_INF);
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
                ArgMax(bg, groupSize_, false);
                score = v1 + ReducedValue();
                bg.SetValue(i1, v1);
            }
            groupScore.SetValue(g, score);
        }
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        if (t_.topk_group < t_.n_group) {
            // Kept groups are marked by setting their (finite) score to -inf; the others lose their candidate.
            for (uint32_t j = 0; j < t_.topk_group; ++j) {
                ArgMax(groupScore, t_.n_group, true);
                (void)ReducedValue();
                groupScore.SetValue(ReducedIndex(), NEG_INF);
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
            }
            for (uint32_t g = 0; g < t_.n_group; ++g) {
                if (groupScore.GetValue(g) != NEG_INF) cand.SetValue(g, NEG_INF);
            }
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
        }
        for (uint32_t k = 0; k < t_.top_k; ++k) {
            ArgMax(cand, t_.n_group, true);
            (void)ReducedValue();
            const uint32_t g = ReducedIndex();
            const uint32_t e = static_cast<uint32_t>(candIdx.GetValue(g));
            ids.SetValue(o + k, static_cast<int32_t>(g * groupSize_ + e));
            w.SetValue(o + k, s.GetValue(g * t_.group_pad + e));
            if (k + 1 < t_.top_k) {
                LocalTensor<float> bg = b[g * t_.group_pad];
                bg.SetValue(e, NEG_INF);
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
                ArgMax(bg, groupSize_, true);
                cand.SetValue(g, ReducedValue());
                candIdx.SetValue(g, static_cast<int32_t>(ReducedIndex()));
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
            }
        }
        // The weights, in the contract's order: sum in k order, divide, then scale.
        if (t_.normalize != 0) {
            float sum = 0.0f;
            for (uint32_t k = 0; k < t_.top_k; ++k) sum += w.GetValue(o + k);
            const float denom = sum + NORMALIZE_EPS;
            for (uint32_t k = 0; k < t_.top_k; ++k) w.SetValue(o + k, w.GetValue(o + k) / denom);
        }
        for (uint32_t k = 0; k < t_.top_k; ++k) {
            w.SetValue(o + k, w.GetValue(o + k) * t_.routed_scaling_factor);
        }
    }

    __aicore__ inline void CopyOut(uint32_t t0, uint32_t n) {
        const DataCopyExtParams p(1, n * t_.top_k * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0);
        const uint64_t at = static_cast<uint64_t>(t0) * t_.top_k;
        LocalTensor<int32_t> ids = idsQue_.DeQue<int32_t>();
        LocalTensor<float> w = wQue_.DeQue<float>();
        WaitFlag<HardEvent::S_MTE3>(0);
        DataCopyPad(idsGm_[at], ids, p);
        idsQue_.FreeTensor(ids);
        DataCopyPad(wGm_[at], w, p);
        wQue_.FreeTensor(w);
        // The next tiles' SetValue may land in these buffers; FreeTensor orders only V after MTE3.
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
    }

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> inQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> idsQue_, wQue_;
    TBuf<TPosition::VECCALC> scores_, sel_, bias_, groupScore_, cand_, candIdx_, red_;
    GlobalTensor<T> logitsGm_;
    GlobalTensor<float> biasGm_, wGm_;
    GlobalTensor<int32_t> idsGm_;
    DsnpuMoeGatingTiling t_{};
    uint32_t tokens_ = 0, first_ = 0, groupSize_ = 0, rowElems_ = 0;
};

template <typename T>
__aicore__ inline void MoeGating(GM_ADDR logits, GM_ADDR bias, GM_ADDR ids, GM_ADDR weights, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMoeGatingTiling, t, tiling);
    KernelMoeGating<T> op;
    op.Init(logits, bias, ids, weights, t);
    op.Process();
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(moe_gating_topk_f32)(GM_ADDR logits, GM_ADDR bias, GM_ADDR ids,
                                                                        GM_ADDR weights, GM_ADDR workspace,
                                                                        GM_ADDR tiling) {
    (void)workspace;
    MoeGating<float>(logits, bias, ids, weights, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(moe_gating_topk_f16)(GM_ADDR logits, GM_ADDR bias, GM_ADDR ids,
                                                                        GM_ADDR weights, GM_ADDR workspace,
                                                                        GM_ADDR tiling) {
    (void)workspace;
    MoeGating<half>(logits, bias, ids, weights, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(moe_gating_topk_bf16)(GM_ADDR logits, GM_ADDR bias, GM_ADDR ids,
                                                                         GM_ADDR weights, GM_ADDR workspace,
                                                                         GM_ADDR tiling) {
    (void)workspace;
    MoeGating<bfloat16_t>(logits, bias, ids, weights, tiling);
}

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/moe_gating_topk.inc"
#endif
