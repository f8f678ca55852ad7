/*
 * mla_decode_<t> (t = f32, f16, bf16): absorbed MLA decode over the paged latent cache (the contract is
 * dsnpu-ops' mla::mla_decode; FlashMLA / FusedInferAttentionScore with a query rope part).
 *
 * For sequence b (seq_lens[b] cached tokens, the last S of them the queries), query s, head h:
 *   score_j = scale * (q_nope[b,s,h] . latent_j + q_rope[b,s,h] . rope_j),  j < seq_lens[b] - S + s + 1
 *   out[b,s,h] = t( sum_j softmax(score)_j * latent_j ),   lse[b,h,s] = ln sum_j exp(score_j)
 * with position j in row j % block_size of cache block block_table[b, j / block_size]. Keys are
 * latent || rope, values the latent itself.
 *
 * Vector cores only (no cube / Matmul): a first kernel, memory-bound at decode sizes. Work split: one
 * task per (batch, query token, group of heads_per_task heads), tasks_per_block consecutive tasks per
 * block. A task loads its G query rows once (widened to f32), then streams the visible cache rows
 * through a double-buffered input queue, rows_per_tile at a time and never across a cache block (one
 * DataCopyPad of the latent rows and one of the rope rows per tile, through the block table): the next
 * tile is in flight while the current one is scored. Every tile is shared by the G heads. Per head, an
 * online softmax in f32: the tile's scores (a Mul and a ReduceSum per row and part), the running max m
 * and sum l, the accumulator rescaled by exp(m_old - m_new) before the tile's p_j * latent_j are added.
 * At the end acc / l is narrowed to t and lse = m + ln l; both leave through one output buffer.
 * Rows past a sequence's visible length are never read (they may hold anything, NaN included).
 * GM traffic per task: its G query rows, the visible latent and rope rows once, G output rows and G lse.
 *
 * UB rows are padded to 32 bytes: L = latent_stride, R = rope_stride elements of t (the same pitches
 * are used for the f32 copies). UB use (G = heads_per_task, N = rows_per_tile, sz = sizeof(t)):
 *   2 N (L+R) sz (tile queue) + G (L+R) sz (query queue) + G L sz + 32 G (output queue)
 *   + G L 4 (accumulators) + G score_stride 4 (scores) + max(L, R) 4 (products) + work_elems 4 + 64
 *   [+ N (L+R) 4 (tile in f32) + G (L+R) 4 (queries in f32), 16-bit t only].
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

constexpr float NEG_INF = -__builtin_inff();

template <typename T>
class KernelMlaDecode {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable,
                                GM_ADDR seqLens, GM_ADDR out, GM_ADDR lse, const DsnpuMlaDecodeTiling& t) {
        t_ = t;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.tasks_per_block;
        tasks_ = first >= t.tasks ? 0 : Min(t.tasks_per_block, static_cast<uint32_t>(t.tasks - first));
        if (tasks_ == 0 || t.heads_per_task == 0 || t.rows_per_tile == 0) {
            tasks_ = 0;
            return;
        }
        first_ = static_cast<uint32_t>(first);
        groups_ = CeilDiv(t.heads, t.heads_per_task);
        const uint64_t rowsQ = static_cast<uint64_t>(t.batch) * t.s_q * t.heads;
        const uint64_t slots = static_cast<uint64_t>(t.num_blocks) * t.block_size;
        qNopeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(qNope), rowsQ * t.latent_dim);
        qRopeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(qRope), rowsQ * t.rope_dim);
        latentGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(latent), slots * t.latent_dim);
        ropeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(rope), slots * t.rope_dim);
        tableGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(blockTable),
                                 static_cast<uint64_t>(t.batch) * t.max_blocks);
        lensGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(seqLens), t.batch);
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out), rowsQ * t.latent_dim);
        lseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(lse), rowsQ);

        const uint32_t G = t.heads_per_task, N = t.rows_per_tile;
        const uint32_t row = t.latent_stride + t.rope_stride;  // elements of a padded key row
        pipe_.InitBuffer(kvQue_, BUFFER_NUM, N * row * sizeof(T));
        pipe_.InitBuffer(qQue_, 1, G * row * sizeof(T));
        pipe_.InitBuffer(outQue_, 1, G * t.latent_stride * sizeof(T) + G * UB_BLOCK);
        pipe_.InitBuffer(acc_, G * t.latent_stride * sizeof(float));
        pipe_.InitBuffer(score_, G * t.score_stride * sizeof(float));
        pipe_.InitBuffer(tmp_, (t.latent_stride > t.rope_stride ? t.latent_stride : t.rope_stride) * sizeof(float));
        pipe_.InitBuffer(work_, t.work_elems * sizeof(float));
        pipe_.InitBuffer(small_, 2 * UB_BLOCK);
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(kvF_, N * row * sizeof(float));
            pipe_.InitBuffer(qF_, G * row * sizeof(float));
        }
    }

    __aicore__ inline void Process() {
        for (uint32_t i = 0; i < tasks_; ++i) Task(first_ + i);
    }

private:
    // Task index = ((b * S) + s) * groups + g.
    __aicore__ inline void Task(uint32_t task) {
        const uint32_t g = task % groups_;
        const uint32_t bs = task / groups_;
        const uint32_t s = bs % t_.s_q, b = bs / t_.s_q;
        const uint32_t h0 = g * t_.heads_per_task;
        const uint32_t G = Min(t_.heads_per_task, t_.heads - h0);
        // The host validated seq_lens; clamp anyway so a bad length only shortens the walk.
        int64_t len = lensGm_.GetValue(b);
        const int64_t cap = static_cast<int64_t>(t_.max_blocks) * t_.block_size;
        if (len > cap) len = cap;
        int64_t visible = len - static_cast<int64_t>(t_.s_q) + s + 1;
        if (visible < 0) visible = 0;
        const uint32_t vis = static_cast<uint32_t>(visible);

        const uint64_t qRow = (static_cast<uint64_t>(b) * t_.s_q + s) * t_.heads + h0;
        LocalTensor<float> q = LoadQueries(qRow, G);
        LocalTensor<float> acc = acc_.Get<float>();
        Duplicate(acc, 0.0f, static_cast<int32_t>(G * t_.latent_stride));
        for (uint32_t h = 0; h < G; ++h) {
            m_[h] = NEG_INF;
            l_[h] = 0.0f;
        }
        if (vis > 0) {
            uint32_t pos = 0;
            uint32_t n = Issue(b, pos, vis);
            while (n > 0) {
                const uint32_t next = pos + n;
                const uint32_t n2 = next < vis ? Issue(b, next, vis) : 0;  // prefetch
                LocalTensor<T> tile = kvQue_.DeQue<T>();
                Attend(q, acc, Widen(tile, n), n, G);
                kvQue_.FreeTensor(tile);
                pos = next;
                n = n2;
            }
        }
        Finish(acc, G, qRow, b, s, h0);
        if constexpr (IS_F32) {
            qQue_.FreeTensor(q);
        }
    }

    // The G query rows (latent part at [h * L], rope part at [G * L + h * R]) in f32.
    __aicore__ inline LocalTensor<float> LoadQueries(uint64_t qRow, uint32_t G) {
        LocalTensor<T> raw = qQue_.AllocTensor<T>();
        const uint32_t ropeAt = t_.heads_per_task * t_.latent_stride;
        DataCopyPad(raw, qNopeGm_[qRow * t_.latent_dim],
                    DataCopyExtParams(G, t_.latent_dim * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        DataCopyPad(raw[ropeAt], qRopeGm_[qRow * t_.rope_dim],
                    DataCopyExtParams(G, t_.rope_dim * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        qQue_.EnQue(raw);
        raw = qQue_.DeQue<T>();
        if constexpr (IS_F32) {
            return raw;  // freed at the end of the task
        } else {
            LocalTensor<float> f = qF_.Get<float>();
            ToFloat(f, raw, G * t_.latent_stride);
            ToFloat(f[ropeAt], raw[ropeAt], G * t_.rope_stride);
            qQue_.FreeTensor(raw);
            return f;
        }
    }

    // Queues the load of the tile starting at visible position pos: at most rows_per_tile rows, all in
    // pos's cache block, none past vis. Returns its row count.
    __aicore__ inline uint32_t Issue(uint32_t b, uint32_t pos, uint32_t vis) {
        const uint32_t off = pos % t_.block_size;
        uint32_t n = Min(t_.rows_per_tile, t_.block_size - off);
        n = Min(n, vis - pos);
        const int32_t block = tableGm_.GetValue(static_cast<uint64_t>(b) * t_.max_blocks + pos / t_.block_size);
        // A negative block id (never after host validation) is read as a huge one: a checked fault.
        const uint64_t slot = static_cast<uint64_t>(static_cast<uint32_t>(block)) * t_.block_size + off;
        LocalTensor<T> tile = kvQue_.AllocTensor<T>();
        DataCopyPad(tile, latentGm_[slot * t_.latent_dim],
                    DataCopyExtParams(static_cast<uint16_t>(n), t_.latent_dim * static_cast<uint32_t>(sizeof(T)), 0,
                                      0, 0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        DataCopyPad(tile[t_.rows_per_tile * t_.latent_stride], ropeGm_[slot * t_.rope_dim],
                    DataCopyExtParams(static_cast<uint16_t>(n), t_.rope_dim * static_cast<uint32_t>(sizeof(T)), 0, 0,
                                      0),
                    DataCopyPadExtParams<T>(false, 0, 0, T(0)));
        kvQue_.EnQue(tile);
        return n;
    }

    // The tile in f32 (latent rows at [j * L], rope rows at [N * L + j * R]).
    __aicore__ inline LocalTensor<float> Widen(const LocalTensor<T>& tile, uint32_t n) {
        if constexpr (IS_F32) {
            return tile;
        } else {
            LocalTensor<float> f = kvF_.Get<float>();
            const uint32_t ropeAt = t_.rows_per_tile * t_.latent_stride;
            ToFloat(f, tile, n * t_.latent_stride);
            ToFloat(f[ropeAt], tile[ropeAt], n * t_.rope_stride);
            return f;
        }
    }

    // dst[0] after a reduction, on the scalar unit.
    __aicore__ inline float Scalar(const LocalTensor<float>& r) {
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        return r.GetValue(0);
    }

    __aicore__ inline float Dot(const LocalTensor<float>& a, const LocalTensor<float>& b, uint32_t count) {
        LocalTensor<float> tmp = tmp_.Get<float>();
        LocalTensor<float> red = small_.Get<float>();
        Mul(tmp, a, b, static_cast<int32_t>(count));
        ReduceSum(red, tmp, work_.Get<float>(), static_cast<int32_t>(count));
        return Scalar(red);
    }

    // exp(x) through the vector unit (no scalar transcendental on the AI Core).
    __aicore__ inline float VecExp(float x) {
        LocalTensor<float> e = small_.Get<float>()[UB_BLOCK / sizeof(float)];
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Duplicate(e, x, 8);
        Exp(e, e, 8);
        return Scalar(e);
    }

    // One tile of n rows for the G heads: online-softmax update of m, l and the accumulators.
    __aicore__ inline void Attend(const LocalTensor<float>& q, const LocalTensor<float>& acc,
                                  const LocalTensor<float>& kv, uint32_t n, uint32_t G) {
        const uint32_t L = t_.latent_stride, R = t_.rope_stride;
        const uint32_t qRope = t_.heads_per_task * L, kRope = t_.rows_per_tile * L;
        const int32_t dl = static_cast<int32_t>(t_.latent_dim);
        LocalTensor<float> tmp = tmp_.Get<float>();
        LocalTensor<float> red = small_.Get<float>();
        for (uint32_t h = 0; h < G; ++h) {
            LocalTensor<float> sc = score_.Get<float>()[h * t_.score_stride];
            for (uint32_t j = 0; j < n; ++j) {
                const float d = Dot(q[h * L], kv[j * L], t_.latent_dim) + Dot(q[qRope + h * R], kv[kRope + j * R], t_.rope_dim);
                sc.SetValue(j, t_.scale * d);
            }
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            ReduceMax(red, sc, work_.Get<float>(), static_cast<int32_t>(n));
            const float tileMax = Scalar(red);
            const float mOld = m_[h];
            const float mNew = tileMax > mOld ? tileMax : mOld;
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            Adds(sc, sc, -mNew, static_cast<int32_t>(n));
            Exp(sc, sc, static_cast<int32_t>(n));
            ReduceSum(red, sc, work_.Get<float>(), static_cast<int32_t>(n));
            const float tileSum = Scalar(red);
            const float alpha = VecExp(mOld - mNew);  // 0 on the first tile (mOld = -inf)
            m_[h] = mNew;
            l_[h] = l_[h] * alpha + tileSum;
            LocalTensor<float> a = acc[h * L];
            Muls(a, a, alpha, dl);
            for (uint32_t j = 0; j < n; ++j) {
                const float p = sc.GetValue(j);
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
                Muls(tmp, kv[j * L], p, dl);
                Add(a, a, tmp, dl);
            }
        }
    }

    // out rows = t(acc / l), lse = m + ln l; one output buffer, two copies out.
    __aicore__ inline void Finish(const LocalTensor<float>& acc, uint32_t G, uint64_t qRow, uint32_t b, uint32_t s,
                                  uint32_t h0) {
        const uint32_t L = t_.latent_stride;
        LocalTensor<T> o = outQue_.AllocTensor<T>();
        LocalTensor<float> lse = o[t_.heads_per_task * L].template ReinterpretCast<float>();
        LocalTensor<float> e = small_.Get<float>()[UB_BLOCK / sizeof(float)];
        for (uint32_t h = 0; h < G; ++h) {
            LocalTensor<float> a = acc[h * L];
            const float l = l_[h];
            // l >= 1 whenever a row was seen (the max term is exp(0)); with none, out is 0 and lse -inf.
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            Muls(a, a, inv, static_cast<int32_t>(t_.latent_dim));
            Duplicate(e, l, 8);
            Ln(e, e, 8);
            Adds(lse[h * (UB_BLOCK / sizeof(float))], e, m_[h], 8);
        }
        FromFloat(o, acc, G * L);
        outQue_.EnQue(o);
        o = outQue_.DeQue<T>();
        DataCopyPad(outGm_[qRow * t_.latent_dim], o,
                    DataCopyExtParams(G, t_.latent_dim * static_cast<uint32_t>(sizeof(T)), 0, 0, 0));
        // lse[b, h, s] for h in [h0, h0 + G): S floats apart in GM, one 32-byte UB block each.
        const uint64_t at = (static_cast<uint64_t>(b) * t_.heads + h0) * t_.s_q + s;
        DataCopyPad(lseGm_[at], lse,
                    DataCopyExtParams(G, static_cast<uint32_t>(sizeof(float)), 0,
                                      (t_.s_q - 1) * static_cast<uint32_t>(sizeof(float)), 0));
        outQue_.FreeTensor(o);
    }

    static constexpr uint32_t MAX_GROUP = 128;

    TPipe pipe_;
    TQue<TPosition::VECIN, BUFFER_NUM> kvQue_;
    TQue<TPosition::VECIN, 1> qQue_;
    TQue<TPosition::VECOUT, 1> outQue_;
    TBuf<TPosition::VECCALC> acc_, score_, tmp_, work_, small_, kvF_, qF_;
    GlobalTensor<T> qNopeGm_, qRopeGm_, latentGm_, ropeGm_, outGm_;
    GlobalTensor<int32_t> tableGm_, lensGm_;
    GlobalTensor<float> lseGm_;
    DsnpuMlaDecodeTiling t_{};
    uint32_t tasks_ = 0, first_ = 0, groups_ = 1;
    float m_[MAX_GROUP] = {};
    float l_[MAX_GROUP] = {};
};

template <typename T>
__aicore__ inline void MlaDecode(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable,
                                 GM_ADDR seqLens, GM_ADDR out, GM_ADDR lse, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaDecodeTiling, t, tiling);
    if (t.heads_per_task > 128) return;  // the tiling never plans more (MLA_MAX_GROUP on the host)
    KernelMlaDecode<T> op;
    op.Init(qNope, qRope, latent, rope, blockTable, seqLens, out, lse, t);
    op.Process();
}

}  // namespace

#define DSNPU_MLA_DECODE(suffix, type)                                                                        \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(mla_decode_##suffix)(                                  \
        GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable, GM_ADDR seqLens,       \
        GM_ADDR out, GM_ADDR lse, GM_ADDR workspace, GM_ADDR tiling) {                                         \
        (void)workspace;                                                                                       \
        MlaDecode<type>(qNope, qRope, latent, rope, blockTable, seqLens, out, lse, tiling);                    \
    }

DSNPU_MLA_DECODE(f32, float)
DSNPU_MLA_DECODE(f16, half)
DSNPU_MLA_DECODE(bf16, bfloat16_t)

DSNPU_HOST_ENTRY(mla_decode_f32)
DSNPU_HOST_ENTRY(mla_decode_f16)
DSNPU_HOST_ENTRY(mla_decode_bf16)
