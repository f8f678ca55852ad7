/*
 * rope_<t> (t = f32, f16, bf16): rotary position embedding from precomputed cos/sin tables, in f32.
 *
 * For a row x of `dim` elements at position p, with c_i = cos[p, i], s_i = sin[p, i] (i < dim / 2) and the
 * pair (a, b) = (x[2i], x[2i+1]) (interleaved) or (x[i], x[i + dim/2]) (half-split):
 *   a' = a c_i - b s_i,   b' = b c_i + a s_i,
 * written to the same places of y (rows row_stride apart in x, y_row_stride in y). Any scaling (YaRN's
 * frequencies and attention factor) is already in the tables.
 *
 * Vector form (dsnpu_kernels/rope_ops.h, shared with mla_cache_write): per token the table rows are
 * expanded once (cos2, sin2), then its rows rotated: with tiling.rows_at_once = heads (a row fits one
 * 64-lane repeat, dim <= 64) all of them at once — one Gather swaps every pair of every row (offsets
 * built once per launch), and the multiplies by cos2 and sin2 and the add are one repeat-form
 * instruction each, a repeat per row with the table row read again by every repeat (its repeat stride
 * 0) — else each row with a Gather and three vector instructions (RopeRow). Tokens are split across
 * blocks and streamed in tiles of tokens_per_tile tokens (tokens_per_tile * heads rows, each padded to
 * 32 bytes in UB) through a double-buffered queue; each rotated row goes back into the buffer it came
 * from and out from there. UB use (R = tokens_per_tile * heads, P = round_up_32(dim * sizeof(t)),
 * F = P / sizeof(t) * 4, H = round_up_32(dim / 2 * 4), A = rows_at_once):
 *   2 R P (x queue) [+ R F (x in f32, 16-bit t only)] + 2 H (cos, sin rows) + 4 F (cos2, sin2, table
 *   offsets, signs) + 3 A F (two temporaries, the pairs' offsets).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/rope_ops.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
class KernelRope {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR positions, GM_ADDR cosTable, GM_ADDR sinTable, GM_ADDR y,
                                const DsnpuRopeTiling& t) {
        heads_ = t.heads;
        dim_ = t.dim;
        half_ = t.dim / 2;
        stride_ = t.row_stride;
        yStride_ = t.y_row_stride;
        layout_ = t.layout;
        tileTokens_ = t.tokens_per_tile;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.tokens_per_block;
        tokens_ = first >= t.tokens ? 0 : Min(t.tokens_per_block, static_cast<uint32_t>(t.tokens - first));
        if (tokens_ == 0 || tileTokens_ == 0 || heads_ == 0 || dim_ == 0) {
            tokens_ = 0;
            return;
        }
        first_ = static_cast<uint32_t>(first);
        const uint64_t rows = static_cast<uint64_t>(t.tokens) * heads_;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), (rows - 1) * stride_ + dim_);
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), (rows - 1) * yStride_ + dim_);
        posGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(positions), t.tokens);
        cosGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(cosTable), static_cast<uint64_t>(t.table_rows) * half_);
        sinGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sinTable), static_cast<uint64_t>(t.table_rows) * half_);

        rowBytes_ = AlignUp(dim_ * sizeof(T), UB_BLOCK);
        dimPad_ = rowBytes_ / sizeof(T);
        const uint32_t tileRows = tileTokens_ * heads_;
        const uint32_t f32Row = dimPad_ * sizeof(float);
        tableBytes_ = AlignUp(half_ * sizeof(float), UB_BLOCK);
        // A token's rows at once only as the tiling planned it, and only where a row fits one repeat.
        atOnce_ = t.rows_at_once == heads_ && dim_ <= REPEAT_F32 ? heads_ : 1;
        pipe_.InitBuffer(xQue_, BUFFER_NUM, tileRows * rowBytes_);
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(xF_, tileRows * f32Row);
        }
        pipe_.InitBuffer(cs_, 2 * tableBytes_);
        pipe_.InitBuffer(cos2_, f32Row);
        pipe_.InitBuffer(sin2_, f32Row);
        pipe_.InitBuffer(tmpA_, atOnce_ * f32Row);
        pipe_.InitBuffer(tmpB_, atOnce_ * f32Row);
        pipe_.InitBuffer(swap_, atOnce_ * f32Row);
        pipe_.InitBuffer(tidx_, f32Row);
        pipe_.InitBuffer(sign_, f32Row);
    }

    __aicore__ inline void Process() {
        if (tokens_ == 0) return;
        RopeIndices(swap_.Get<uint32_t>(), tidx_.Get<uint32_t>(), sign_.Get<float>(), dim_, layout_);
        if (atOnce_ > 1) SpreadOffsets();
        for (uint32_t t0 = 0; t0 < tokens_; t0 += tileTokens_) {
            const uint32_t n = Min(tileTokens_, tokens_ - t0);
            CopyIn(t0, n);
            Compute(t0, n);
            CopyOut(t0, n);
        }
        xOut_.Drain();
    }

private:
    static constexpr uint32_t REPEAT_F32 = 64;  // f32 lanes of one vector repeat (256 bytes)

    // The pair offsets of atOnce_ rows dimPad_ apart (row h's at h * dimPad_, each its row's own plus
    // h * dimPad_ floats; a padding lane its own offset), from row 0's (RopeIndices): the padding lanes by
    // the scalar unit, then doubling the rows built so far with one Adds each. The temporaries' padding
    // lanes are zeroed once (the repeat-form instructions leave them; the Cast reads them).
    __aicore__ inline void SpreadOffsets() {
        LocalTensor<uint32_t> swap = swap_.Get<uint32_t>();
        for (uint32_t j = dim_; j < dimPad_; ++j) swap.SetValue(j, j * static_cast<uint32_t>(sizeof(float)));
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        LocalTensor<int32_t> off = swap.ReinterpretCast<int32_t>();
        for (uint32_t done = 1; done < atOnce_;) {
            const uint32_t n = Min(done, atOnce_ - done);
            Adds(off[done * dimPad_], off, static_cast<int32_t>(done * dimPad_ * sizeof(float)),
                 static_cast<int32_t>(n * dimPad_));
            done += n;
        }
        Duplicate(tmpA_.Get<float>(), 0.0f, static_cast<int32_t>(atOnce_ * dimPad_));
        Duplicate(tmpB_.Get<float>(), 0.0f, static_cast<int32_t>(atOnce_ * dimPad_));
    }

    // Rotates the token's heads_ rows at xf (into dst for 16-bit t), all at once (header).
    __aicore__ inline void RopeToken(const LocalTensor<T>& dst, const LocalTensor<float>& xf) {
        LocalTensor<float> a = tmpA_.Get<float>(), b = tmpB_.Get<float>();
        const LocalTensor<float> cos2 = cos2_.Get<float>(), sin2 = sin2_.Get<float>();
        const uint8_t rep = static_cast<uint8_t>(dimPad_ * sizeof(float) / UB_BLOCK);
        const BinaryRepeatParams table(1, 1, 1, rep, rep, 0), rows(1, 1, 1, rep, rep, rep);
        Gather(b, xf, swap_.Get<uint32_t>(), 0, heads_ * dimPad_);
        for (uint32_t h = 0; h < heads_; h += 255) {
            const uint8_t k = static_cast<uint8_t>(Min(255u, heads_ - h));
            const uint32_t r = h * dimPad_;
            Mul(a[r], xf[r], cos2, dim_, k, table);
            Mul(b[r], b[r], sin2, dim_, k, table);
            if constexpr (IS_F32) {
                Add(xf[r], a[r], b[r], dim_, k, rows);
            } else {
                Add(a[r], a[r], b[r], dim_, k, rows);
            }
        }
        if constexpr (!IS_F32) Cast(dst, a, RoundMode::CAST_RINT, heads_ * dimPad_);
    }

    // Where the token's first row starts in x (rows `stride` apart) or y.
    __aicore__ inline uint64_t RowOffset(uint32_t token, uint32_t stride) const {
        return static_cast<uint64_t>(first_ + token) * heads_ * stride;
    }

    // n tokens' rows between GM (x's rows `stride_` apart, y's `yStride_`) and the tile (dimPad_ apart).
    __aicore__ inline DataCopyExtParams Rows(uint32_t n, bool toUb) const {
        const uint32_t gap = ((toUb ? stride_ : yStride_) - dim_) * static_cast<uint32_t>(sizeof(T));
        return DataCopyExtParams(static_cast<uint16_t>(n * heads_), dim_ * static_cast<uint32_t>(sizeof(T)),
                                 toUb ? gap : 0, toUb ? 0 : gap, 0);
    }

    __aicore__ inline void CopyIn(uint32_t t0, uint32_t n) {
        xOut_.BeforeRefill();
        LocalTensor<T> x = xQue_.AllocTensor<T>();
        DataCopyPad(x, xGm_[RowOffset(t0, stride_)], Rows(n, true), DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        xQue_.EnQue(x);
    }

    // cos2/sin2 for the token at `pos` (a position outside the table faults in the checked copy).
    __aicore__ inline void LoadTables(int32_t pos) {
        LocalTensor<float> cs = cs_.Get<float>();
        LocalTensor<float> c = cs;
        LocalTensor<float> s = cs[tableBytes_ / sizeof(float)];
        const uint64_t at = static_cast<uint64_t>(static_cast<int64_t>(pos)) * half_;
        const DataCopyExtParams row(1, half_ * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
        const DataCopyPadExtParams<float> noPad(false, 0, 0, 0.0f);
        // The previous token's Gathers read this buffer: MTE2 may refill it only after them.
        SetFlag<HardEvent::V_MTE2>(0);
        WaitFlag<HardEvent::V_MTE2>(0);
        DataCopyPad(c, cosGm_[at], row, noPad);
        DataCopyPad(s, sinGm_[at], row, noPad);
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
        RopeTables(cos2_.Get<float>(), sin2_.Get<float>(), c, s, tidx_.Get<uint32_t>(), sign_.Get<float>(), dim_);
    }

    __aicore__ inline void Compute(uint32_t t0, uint32_t n) {
        x_ = xQue_.DeQue<T>();
        LocalTensor<float> xf;
        if constexpr (IS_F32) {
            xf = x_;
        } else {
            xf = xF_.Get<float>();
            ToFloat(xf, x_, n * heads_ * dimPad_);
        }
        LocalTensor<float> cos2 = cos2_.Get<float>();
        LocalTensor<float> sin2 = sin2_.Get<float>();
        LocalTensor<float> a = tmpA_.Get<float>();
        LocalTensor<float> b = tmpB_.Get<float>();
        LocalTensor<uint32_t> swap = swap_.Get<uint32_t>();
        for (uint32_t tt = 0; tt < n; ++tt) {
            const int32_t pos = posGm_.GetValue(first_ + t0 + tt);
            LoadTables(pos);
            if (atOnce_ > 1) {
                const uint32_t r = tt * heads_ * dimPad_;
                RopeToken(x_[r], xf[r]);
                continue;
            }
            for (uint32_t h = 0; h < heads_; ++h) {
                const uint32_t r = (tt * heads_ + h) * dimPad_;
                RopeRow(x_[r], xf[r], a, b, cos2, sin2, swap, dim_);
            }
        }
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
    }

    __aicore__ inline void CopyOut(uint32_t t0, uint32_t n) {
        DataCopyPad(yGm_[RowOffset(t0, yStride_)], x_, Rows(n, false));
        xOut_.CopiedOut();
        xQue_.FreeTensor(x_);
    }

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> xQue_;
    LocalTensor<T> x_;  // the tile between Compute and CopyOut
    CopyOutGuard<BUFFER_NUM> xOut_;  // y leaves from x's buffer
    TBuf<TPosition::VECCALC> xF_, cs_, cos2_, sin2_, tmpA_, tmpB_, swap_, tidx_, sign_;
    GlobalTensor<T> xGm_, yGm_;
    GlobalTensor<int32_t> posGm_;
    GlobalTensor<float> cosGm_, sinGm_;
    uint32_t heads_ = 0, dim_ = 0, half_ = 0, stride_ = 0, yStride_ = 0, layout_ = 0, tileTokens_ = 0;
    uint32_t tokens_ = 0, first_ = 0, rowBytes_ = 0, dimPad_ = 0, tableBytes_ = 0;
    uint32_t atOnce_ = 1;  // rows rotated per instruction: heads_ or 1 (header)
};

template <typename T>
__aicore__ inline void Rope(GM_ADDR x, GM_ADDR positions, GM_ADDR cosTable, GM_ADDR sinTable, GM_ADDR y,
                            GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuRopeTiling, t, tiling);
    KernelRope<T> op;
    op.Init(x, positions, cosTable, sinTable, y, t);
    op.Process();
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(rope_f32)(GM_ADDR x, GM_ADDR positions, GM_ADDR cosTable,
                                                             GM_ADDR sinTable, GM_ADDR y, GM_ADDR workspace,
                                                             GM_ADDR tiling) {
    (void)workspace;
    Rope<float>(x, positions, cosTable, sinTable, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(rope_f16)(GM_ADDR x, GM_ADDR positions, GM_ADDR cosTable,
                                                             GM_ADDR sinTable, GM_ADDR y, GM_ADDR workspace,
                                                             GM_ADDR tiling) {
    (void)workspace;
    Rope<half>(x, positions, cosTable, sinTable, y, tiling);
}
extern "C" __global__ __aicore__ void DSNPU_KERNEL(rope_bf16)(GM_ADDR x, GM_ADDR positions, GM_ADDR cosTable,
                                                              GM_ADDR sinTable, GM_ADDR y, GM_ADDR workspace,
                                                              GM_ADDR tiling) {
    (void)workspace;
    Rope<bfloat16_t>(x, positions, cosTable, sinTable, y, tiling);
}

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/rope.inc"
#endif
