/*
 * mla_decode_<t> (t = f32, f16, bf16): split-KV absorbed MLA decode over the paged latent cache (the
 * contract is dsnpu-ops' mla::mla_decode; FlashMLA's flash_mla_with_kvcache with get_mla_metadata).
 *
 * For sequence b (seq_lens[b] cached tokens, the last S of them the queries), query s, head h:
 *   score_j = scale * (q_nope[b,s,h] . latent_j + q_rope[b,s,h] . rope_j),  j < seq_lens[b] - S + s + 1
 *   out[b,s,h] = t( sum_j softmax(score)_j * latent_j ),   lse[b,h,s] = ln sum_j exp(score_j)
 * with position j in row j % block_size of cache block block_table[b, j / block_size].
 *
 * Work: the host plan (tiling_mla.rs, MlaDecodePlan) cuts every sequence's keys into chunks of at most
 * `chunk` positions so that there are about as many chunks as blocks, even at batch 1. The plan is an
 * int32 device buffer: [batch x 2] (first task, task count of the sequence), then [tasks x 3] (b, c0, c1).
 * Task k runs on vector core k % (2 * GetBlockNum()) (the deal of the FP8 GEMMs: consecutive tasks on
 * different cube cores first). A task serves ALL G = S * H query rows of its sequence (q rows
 * of b are contiguous, row r = s * H + h), so each cache row of the chunk is streamed once per sequence:
 *   1. cube: scores[G, C] = q_nope . latent^T + q_rope . rope^T per segment of the chunk (a run of cache
 *      blocks the block table numbers consecutively, so one block at worst), into this vector core's f32
 *      score workspace (Matmul API, operands in GM): a segment whose scores are one base tile sums both
 *      products in L0C (Iterate, Iterate(true), GetTensorC: written once); a longer one is one IterateAll
 *      per product, the rope part added in GM (fewer, larger requests);
 *   2. vector: per row, scale, causal mask (at most S - 1 positions of the last chunk), max m, p = exp(s - m),
 *      l = sum p; p rounded to t into the P workspace; (m, l) per row into the task's ml workspace;
 *   3. cube: O[G, Dl] = P . latent, per base tile of O summed over the segments in L0C (Iterate with
 *      enPartialSum), then once into the task's partial workspace (unnormalised: sum_j exp(s_j - m) latent_j).
 * Phase 2, the combine: M = max of the tasks' m, w_i = exp(m_i - M), L = sum w_i l_i, out =
 * t(sum w_i O_i / L), lse = M + ln L (tasks with l = 0 saw no visible key: skipped). The (m, l) of a row
 * slab come into UB combine_tasks tasks per copy, and their w in one Exp. A sequence served by one
 * task that sees keys (a "whole" one: the plan did not cut it) is combined at once by the vector core that
 * served it, while its partial is in that block's L2 (FlashMLA likewise finishes unsplit sequences without
 * the combine kernel); then SyncAll (vector cores), and the other sequences' rows (b, r) are split over the
 * vector cores. A 1:2 mix kernel: the vector cores run step 2 and the combine and drive
 * their cube core's Matmul for steps 1 and 3 (REGIST_MATMUL_OBJ; the cube core only serves). Rows past a
 * sequence's visible length are never read.
 *
 * Workspace (bytes, offsets in the tiling, after the system workspace): per vector core: scores f32
 * [G, pitch], P t written over them (row r of P at the start of score row r, read before: row pitch
 * pitch * 4 / sizeof(t) elements of t);
 * per task: O f32 [G, Dl] | ml f32 [G, 2]. pitch = round_up(chunk, 16).
 * UB, phase 1 (R = softmax_rows, P = pitch, sz = sizeof(t)): 2 R P 4 (scores queue) + 2 R P sz (P queue)
 *   + 2 * 32 * ceil(2 R * 4 / 32) (ml queue) + work + 32 R (the slab's reductions, a 32-byte block per row).
 * UB, phase 2 (Q = combine_rows, L = round_up(Dl, 16), K = combine_tasks): Q L 4 (acc) + 2 Q L 4 (partials
 *   queue) + 2 Q L sz (out queue) + 2 * 32 Q (lse queue) + K round_up(8 Q, 32) ((m, l) of K tasks)
 *   + K Q 4 (their weights, rounded up to 32).
 *
 * Test-only mutations (tiling.mutation, 0 in every normal launch; see tiling_mla.rs): 1 scales the
 * softmax scale by 1.001, 2 the combine's denominator L by 1.001, 3 the combine weights by 1.001.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"
#include "dsnpu_kernels/cube_tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

constexpr float NEG_INF = -__builtin_inff();
constexpr float MUTATE = 1.001f;
constexpr uint32_t MAX_SLAB_ROWS = 64;  // tiling_mla.rs caps softmax_rows and combine_rows at this

template <typename T>
class KernelMlaDecode {
    using MmQk = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                        MatmulType<TPosition::GM, CubeFormat::ND, float>>;
    using MmPv = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, T>,
                        MatmulType<TPosition::GM, CubeFormat::ND, float>>;

public:
    __aicore__ inline void Init(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable,
                                GM_ADDR seqLens, GM_ADDR plan, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace,
                                const DsnpuMlaDecodeTiling& t) {
        t_ = t;
        G_ = t.s_q * t.heads;
        scale_ = t.mutation == 1 ? t.scale * MUTATE : t.scale;
        const uint64_t rowsQ = static_cast<uint64_t>(t.batch) * G_;
        const uint64_t slots = static_cast<uint64_t>(t.num_blocks) * t.block_size;
        qNopeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(qNope), rowsQ * t.latent_dim);
        qRopeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(qRope), rowsQ * t.rope_dim);
        latentGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(latent), slots * t.latent_dim);
        ropeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(rope), slots * t.rope_dim);
        tableGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(blockTable),
                                 static_cast<uint64_t>(t.batch) * t.max_blocks);
        lensGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(seqLens), t.batch);
        planGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(plan),
                                2 * static_cast<uint64_t>(t.batch) + 3 * static_cast<uint64_t>(t.tasks));
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out), rowsQ * t.latent_dim);
        lseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(lse), rowsQ);

        GM_ADDR ws = GetUserWorkspace(workspace);
        const uint64_t scoreElems = static_cast<uint64_t>(G_) * t.pitch;
        GM_ADDR mine = ws + VectorWorker() * (scoreElems * sizeof(float));
        scoresWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine), scoreElems);
        // P row r overwrites the start of score row r (read before): 4 bytes of scratch per score, not
        // 4 + sizeof(T), for the L2 to write back.
        pPitch_ = t.pitch * static_cast<uint32_t>(sizeof(float) / sizeof(T));
        pWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(mine), static_cast<uint64_t>(G_) * pPitch_);
        GM_ADDR partial = ws + static_cast<uint64_t>(t.ws_partial_at_lo) + (static_cast<uint64_t>(t.ws_partial_at_hi) << 32);
        const uint64_t perTask = static_cast<uint64_t>(G_) * t.latent_dim;
        partialWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(partial), perTask * t.tasks);
        mlWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(partial + perTask * t.tasks * sizeof(float)),
                              2 * static_cast<uint64_t>(G_) * t.tasks);

        qk = ToCubeTiling(t.qk_cube);
        pv = ToCubeTiling(t.pv_cube);
    }

    // A vector core (after REGIST_MATMUL_OBJ made mmQk and mmPv its clients): both phases.
    __aicore__ inline void Process() {
        const uint32_t blocks = static_cast<uint32_t>(VectorWorkers());
        const uint32_t me = static_cast<uint32_t>(VectorWorker());
        if (t_.tasks > 0 && t_.softmax_rows > 0) {
            InitPhase1();
            for (uint32_t k = me; k < t_.tasks; k += blocks) Task(k);
            pipe_.Reset();
        }
        if (t_.combine_rows > 0) {
            InitPhase2();
            // The sequences this core served alone first: their one partial is still in this block's L2.
            for (uint32_t k = me; k < t_.tasks; k += blocks) {
                uint32_t b, C;
                int64_t len, c0;
                if (Span(k, b, len, c0, C) && Whole(b)) CombineRows(b, 0, G_);
            }
        }
        // The combine of the other sequences needs every task's partial results.
        SyncAll();
        if (t_.combine_rows == 0) return;
        const uint64_t rows = static_cast<uint64_t>(t_.batch) * G_;
        const uint64_t per = (rows + blocks - 1) / blocks;
        const uint64_t r0 = per * me;
        const uint64_t r1 = r0 + per < rows ? r0 + per : rows;
        // Slabs of combine_rows rows, never across a sequence.
        uint64_t r = r0;
        while (r < r1) {
            const uint32_t b = static_cast<uint32_t>(r / G_);
            const uint64_t seqEnd = static_cast<uint64_t>(b + 1) * G_;
            const uint64_t end = seqEnd < r1 ? seqEnd : r1;
            // A whole sequence was combined by the core that served it.
            if (!Whole(b)) {
                CombineRows(b, static_cast<uint32_t>(r - static_cast<uint64_t>(b) * G_),
                            static_cast<uint32_t>(end - r));
            }
            r = end;
        }
    }

    // Rows [r0, r0 + n) of sequence b, in slabs of combine_rows.
    __aicore__ inline void CombineRows(uint32_t b, uint32_t r0, uint32_t n) {
        for (uint32_t r = r0; r < r0 + n; r += t_.combine_rows) Combine(b, r, Min(t_.combine_rows, r0 + n - r));
    }

private:
    // ---------------------------------------------------------------- phase 1: one (sequence, chunk) task
    __aicore__ inline void InitPhase1() {
        const uint32_t R = t_.softmax_rows, P = t_.pitch;
        pipe_.InitBuffer(scQue_, BUFFER_NUM, R * P * sizeof(float));
        pipe_.InitBuffer(pQue_, BUFFER_NUM, R * P * sizeof(T));
        pipe_.InitBuffer(mlQue_, BUFFER_NUM, AlignUp(2 * R * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(work_, t_.work_elems * sizeof(float));
        pipe_.InitBuffer(small_, R * UB_BLOCK);  // the slab's reductions, a 32-byte block per row
    }

    __aicore__ inline int64_t SeqLen(uint32_t b) {
        // The host validated seq_lens; clamp anyway so a bad length only shortens the walk.
        int64_t len = lensGm_.GetValue(b);
        const int64_t cap = static_cast<int64_t>(t_.max_blocks) * t_.block_size;
        if (len > cap) len = cap;
        if (len < 0) len = 0;
        return len;
    }

    __aicore__ inline uint64_t Slot(uint32_t b, uint32_t pos) {
        const int32_t block = tableGm_.GetValue(static_cast<uint64_t>(b) * t_.max_blocks + pos / t_.block_size);
        // A negative block id (never after host validation) is read as a huge one: a checked fault.
        return static_cast<uint64_t>(static_cast<uint32_t>(block)) * t_.block_size + pos % t_.block_size;
    }

    // Positions from `pos` (at most `left`) whose cache rows are consecutive slots: the rest of pos's
    // block, extended over the following blocks while the block table numbers them consecutively. One
    // cube call covers such a run, so the query panel is read and the partial output written once per
    // run, not once per cache block.
    __aicore__ inline uint32_t Run(uint32_t b, uint32_t pos, uint32_t left) {
        const uint32_t bs = t_.block_size;
        uint32_t n = Min(bs - pos % bs, left);
        const uint64_t row = static_cast<uint64_t>(b) * t_.max_blocks;
        uint32_t blk = pos / bs;
        int32_t id = tableGm_.GetValue(row + blk);
        while (n < left && blk + 1 < t_.max_blocks) {
            const int32_t next = tableGm_.GetValue(row + blk + 1);
            if (id < 0 || next != id + 1) break;
            n += Min(bs, left - n);
            ++blk;
            id = next;
        }
        return n;
    }

    // Task k's sequence, first position and length (clamped to the sequence); false for a bad entry.
    __aicore__ inline bool Span(uint32_t k, uint32_t& b, int64_t& len, int64_t& c0, uint32_t& C) {
        const uint64_t at = 2 * static_cast<uint64_t>(t_.batch) + 3 * static_cast<uint64_t>(k);
        const int32_t bRaw = planGm_.GetValue(at);
        if (bRaw < 0 || static_cast<uint32_t>(bRaw) >= t_.batch) return false;
        b = static_cast<uint32_t>(bRaw);
        len = SeqLen(b);
        c0 = planGm_.GetValue(at + 1);
        int64_t c1 = planGm_.GetValue(at + 2);
        if (c1 > len) c1 = len;
        if (c1 - c0 > static_cast<int64_t>(t_.chunk)) c1 = c0 + t_.chunk;
        if (c0 < 0) c0 = 0;
        C = c1 > c0 ? static_cast<uint32_t>(c1 - c0) : 0;
        return true;
    }

    // Whether sequence b is served by one task that sees keys: the vector core that ran it combines it
    // before SyncAll, and the combine after SyncAll skips it.
    __aicore__ inline bool Whole(uint32_t b) {
        if (planGm_.GetValue(2 * static_cast<uint64_t>(b) + 1) != 1) return false;
        const int32_t first = planGm_.GetValue(2 * static_cast<uint64_t>(b));
        if (first < 0 || static_cast<uint32_t>(first) >= t_.tasks) return false;
        uint32_t tb, C;
        int64_t len, c0;
        return Span(static_cast<uint32_t>(first), tb, len, c0, C) && tb == b && C > 0;
    }

    __aicore__ inline void Task(uint32_t k) {
        uint32_t b, C;
        int64_t len, c0;
        if (!Span(k, b, len, c0, C)) return;
        const uint64_t qRow = static_cast<uint64_t>(b) * G_;
        // 1. scores = q . k^T per segment (a run of cache blocks). A segment whose scores are one base tile
        //    sums the latent and the rope products in L0C (Iterate with enPartialSum) and writes them once;
        //    a longer one takes one request per product (all its tiles each), the rope part added in GM.
        const bool oneTile = G_ <= static_cast<uint32_t>(qk.baseM);
        for (uint32_t p = 0; p < C;) {
            const uint32_t pos = static_cast<uint32_t>(c0) + p;
            const uint64_t slot = Slot(b, pos);
            const uint32_t n = Run(b, pos, C - p);
            if (oneTile && n <= static_cast<uint32_t>(qk.baseN)) {
                QkTile(qRow, slot, n);
                mmQk.GetTensorC(scoresWs_[p]);
            } else {
                QkAll(qRow, slot, n, p);
            }
            mmQk.End();
            p += n;
        }
        // 2. the row softmax of the chunk.
        for (uint32_t r = 0; r < G_; r += t_.softmax_rows) {
            Softmax(k, r, Min(t_.softmax_rows, G_ - r), len, static_cast<uint32_t>(c0), C);
        }
        // P went out on MTE3: the cube may load it only after those copies (the request follows S).
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
        // 3. O = P . latent: each base tile of O sums its products over the segments in L0C (Iterate with
        //    enPartialSum) and goes to the partial workspace once, not once per segment.
        const uint64_t oAt = static_cast<uint64_t>(k) * G_ * t_.latent_dim;
        if (C == 0) return;  // every row has l = 0: the combine skips this task
        const uint32_t Dl = t_.latent_dim;
        for (uint32_t m0 = 0; m0 < G_; m0 += t_.pv_base_m) {
            const uint32_t rows = Min(t_.pv_base_m, G_ - m0);
            for (uint32_t n0 = 0; n0 < Dl; n0 += t_.pv_base_n) {
                const uint32_t cols = Min(t_.pv_base_n, Dl - n0);
                PvTile(b, static_cast<uint32_t>(c0), C, m0, rows, n0, cols);
                mmPv.GetTensorC(partialWs_[oAt + static_cast<uint64_t>(m0) * Dl + n0]);
                mmPv.End();
            }
        }
    }

    // The operands of q_nope . latent^T (rope = false) or q_rope . rope^T for the sequence's query rows
    // (from `row`) and `cols` cache slots from `slot`.
    __aicore__ inline void QkOperands(bool rope, uint64_t row, uint64_t slot, uint32_t cols) {
        const uint32_t d = rope ? t_.rope_dim : t_.latent_dim;
        mmQk.SetOrgShape(G_, t_.pitch, d, d);
        mmQk.SetTensorA(rope ? qRopeGm_[row * d] : qNopeGm_[row * d]);
        mmQk.SetTensorB(rope ? ropeGm_[slot * d] : latentGm_[slot * d], true);
        mmQk.SetTail(static_cast<int>(G_), static_cast<int>(cols), static_cast<int>(d));
    }

    // Scores against `cols` slots that are one base tile: the latent product, then the rope product added
    // in L0C; left there for GetTensorC.
    __aicore__ inline void QkTile(uint64_t row, uint64_t slot, uint32_t cols) {
        QkOperands(false, row, slot, cols);
        mmQk.Iterate();
        QkOperands(true, row, slot, cols);
        mmQk.Iterate(true);
    }

    // Scores against `cols` slots, into score columns from `p`: each product over all its tiles, the rope
    // part added to the latent part in GM.
    __aicore__ inline void QkAll(uint64_t row, uint64_t slot, uint32_t cols, uint32_t p) {
        QkOperands(false, row, slot, cols);
        mmQk.IterateAll(scoresWs_[p]);
        mmQk.End();
        QkOperands(true, row, slot, cols);
        mmQk.IterateAll(scoresWs_[p], 1);
    }

    // The base tile [m0, m0 + rows) x [n0, n0 + cols) of P . latent over the chunk's runs, left in L0C.
    __aicore__ inline void PvTile(uint32_t b, uint32_t c0, uint32_t C, uint32_t m0, uint32_t rows, uint32_t n0,
                                  uint32_t cols) {
        const uint32_t Dl = t_.latent_dim;
        for (uint32_t p = 0; p < C;) {
            const uint32_t pos = c0 + p;
            const uint64_t slot = Slot(b, pos);
            const uint32_t n = Run(b, pos, C - p);
            mmPv.SetOrgShape(G_, Dl, pPitch_, pPitch_);
            mmPv.SetTensorA(pWs_[static_cast<uint64_t>(m0) * pPitch_ + p]);
            mmPv.SetTensorB(latentGm_[slot * Dl + n0]);
            mmPv.SetTail(static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(n));
            mmPv.Iterate(p > 0);
            p += n;
        }
    }

    // Rows [r0, r0 + R) of task k's scores: mask, max, exp, sum; P rows in t and (m, l) out.
    __aicore__ inline void Softmax(uint32_t k, uint32_t r0, uint32_t R, int64_t len, uint32_t c0, uint32_t C) {
        const uint32_t P = t_.pitch;
        LocalTensor<float> ml = mlQue_.AllocTensor<float>();
        LocalTensor<T> pt = pQue_.AllocTensor<T>();
        if (C > 0) {
            LocalTensor<float> sc = scQue_.AllocTensor<float>();
            const uint32_t f32Gap = (P * sizeof(float) - AlignUp(C * sizeof(float), UB_BLOCK)) / UB_BLOCK;
            DataCopyPad(sc, scoresWs_[static_cast<uint64_t>(r0) * P],
                        DataCopyExtParams(static_cast<uint16_t>(R), C * static_cast<uint32_t>(sizeof(float)),
                                          (P - C) * static_cast<uint32_t>(sizeof(float)), f32Gap, 0),
                        DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
            scQue_.EnQue(sc);
            sc = scQue_.DeQue<float>();
            // Row i's reductions land at red[i * PER] (a 32-byte block each): one V -> S round trip per
            // step of the slab, not per row.
            constexpr uint32_t PER = UB_BLOCK / sizeof(float);
            LocalTensor<float> red = small_.Get<float>();
            bool live[MAX_SLAB_ROWS];
            float m[MAX_SLAB_ROWS];
            // 1. scale, causal mask (at most S - 1 positions of the last chunk), the rows' maxima.
            for (uint32_t i = 0; i < R; ++i) {
                const uint32_t s = (r0 + i) / t_.heads;
                int64_t vis = len - static_cast<int64_t>(t_.s_q) + s + 1 - c0;  // visible columns of the chunk
                if (vis > C) vis = C;
                LocalTensor<float> row = sc[i * P];
                live[i] = vis > 0;
                if (!live[i]) {
                    Duplicate(row, 0.0f, static_cast<int32_t>(C));
                    continue;
                }
                Muls(row, row, scale_, static_cast<int32_t>(C));
                if (vis < C) {
                    SetFlag<HardEvent::V_S>(0);
                    WaitFlag<HardEvent::V_S>(0);
                    for (uint32_t j = static_cast<uint32_t>(vis); j < C; ++j) row.SetValue(j, NEG_INF);
                    SetFlag<HardEvent::S_V>(0);
                    WaitFlag<HardEvent::S_V>(0);
                }
                ReduceMax(red[i * PER], row, work_.Get<float>(), static_cast<int32_t>(C));
            }
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            for (uint32_t i = 0; i < R; ++i) m[i] = live[i] ? red.GetValue(i * PER) : NEG_INF;
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            // 2. p = exp(s - m), the rows' sums.
            for (uint32_t i = 0; i < R; ++i) {
                if (!live[i]) continue;
                LocalTensor<float> row = sc[i * P];
                Adds(row, row, -m[i], static_cast<int32_t>(C));
                Exp(row, row, static_cast<int32_t>(C));
                ReduceSum(red[i * PER], row, work_.Get<float>(), static_cast<int32_t>(C));
            }
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            for (uint32_t i = 0; i < R; ++i) {
                ml.SetValue(2 * i, m[i]);
                ml.SetValue(2 * i + 1, live[i] ? red.GetValue(i * PER) : 0.0f);
            }
            FromFloat(pt, sc, R * P);
            scQue_.FreeTensor(sc);
        } else {
            for (uint32_t i = 0; i < R; ++i) {
                ml.SetValue(2 * i, NEG_INF);
                ml.SetValue(2 * i + 1, 0.0f);
            }
        }
        mlQue_.EnQue(ml);
        ml = mlQue_.DeQue<float>();
        // (m, l) were written on the scalar unit: the queue's V->MTE3 edge does not cover them, so
        // MTE3 waits for S, and the next tile's scalar writes wait for this copy (MTE3->S).
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
        DataCopyPad(mlWs_[(static_cast<uint64_t>(k) * G_ + r0) * 2], ml,
                    DataCopyExtParams(1, 2 * R * static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
        mlQue_.FreeTensor(ml);
        pQue_.EnQue(pt);
        pt = pQue_.DeQue<T>();
        if (C > 0) {
            const uint32_t tGap = (P * sizeof(T) - AlignUp(C * sizeof(T), UB_BLOCK)) / UB_BLOCK;
            DataCopyPad(pWs_[static_cast<uint64_t>(r0) * pPitch_], pt,
                        DataCopyExtParams(static_cast<uint16_t>(R), C * static_cast<uint32_t>(sizeof(T)), tGap,
                                          (pPitch_ - C) * static_cast<uint32_t>(sizeof(T)), 0));
        }
        pQue_.FreeTensor(pt);
    }


    // ---------------------------------------------------------------- phase 2: combine the partials
    __aicore__ inline void InitPhase2() {
        const uint32_t Q = t_.combine_rows, L = t_.latent_pitch, K = t_.combine_tasks;
        pipe_.InitBuffer(acc_, Q * L * sizeof(float));
        pipe_.InitBuffer(oQue_, BUFFER_NUM, Q * L * sizeof(float));
        pipe_.InitBuffer(outQue_, BUFFER_NUM, Q * L * sizeof(T));
        pipe_.InitBuffer(lseQue_, BUFFER_NUM, Q * UB_BLOCK);
        pipe_.InitBuffer(mlBuf_, K * AlignUp(2 * Q * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(wBuf_, K * Q * sizeof(float));
    }

    // (m, l) of rows [r0, r0 + Q) of tasks [k0, k0 + n) into mlBuf_ (task i at i * mlPitch floats), for
    // the scalar unit: one copy instead of a scalar GM read per value.
    __aicore__ inline LocalTensor<float> LoadMl(uint32_t k0, uint32_t n, uint32_t r0, uint32_t Q) {
        LocalTensor<float> ml = mlBuf_.Get<float>();
        // The scalar reads of the previous group are done before the copy overwrites them.
        SetFlag<HardEvent::S_MTE2>(0);
        WaitFlag<HardEvent::S_MTE2>(0);
        DataCopyPad(ml, mlWs_[(static_cast<uint64_t>(k0) * G_ + r0) * 2],
                    DataCopyExtParams(static_cast<uint16_t>(n), 2 * Q * static_cast<uint32_t>(sizeof(float)),
                                      (G_ - Q) * 2 * static_cast<uint32_t>(sizeof(float)), 0, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        SetFlag<HardEvent::MTE2_S>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
        return ml;
    }

    // w[i * Q + r] = exp(m - M[r]) for task i of the loaded group (0 where l = 0: that task saw none of
    // the row's keys), one Exp for the group; readable by the scalar unit on return.
    __aicore__ inline LocalTensor<float> Weights(const LocalTensor<float>& ml, uint32_t n, uint32_t Q,
                                                 const float* mMax) {
        const uint32_t mlPitch = AlignUp(2 * Q * sizeof(float), UB_BLOCK) / sizeof(float);
        LocalTensor<float> w = wBuf_.Get<float>();
        // The previous group's Exp has been read (V_S at its end); its scalar reads are done before these writes.
        for (uint32_t i = 0; i < n; ++i) {
            for (uint32_t r = 0; r < Q; ++r) {
                const float m = ml.GetValue(i * mlPitch + 2 * r), l = ml.GetValue(i * mlPitch + 2 * r + 1);
                w.SetValue(i * Q + r, l > 0.0f ? m - mMax[r] : NEG_INF);
            }
        }
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Exp(w, w, static_cast<int32_t>(n * Q));
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        return w;
    }

    // Rows [r0, r0 + Q) of sequence b (all in b), its tasks' (m, l) taken combine_tasks at a time.
    __aicore__ inline void Combine(uint32_t b, uint32_t r0, uint32_t Q) {
        constexpr uint32_t MAXQ = 64;
        const uint32_t L = t_.latent_pitch, Dl = t_.latent_dim, K = t_.combine_tasks;
        const uint32_t mlPitch = AlignUp(2 * Q * sizeof(float), UB_BLOCK) / sizeof(float);
        int64_t first = planGm_.GetValue(2 * static_cast<uint64_t>(b));
        int64_t count = planGm_.GetValue(2 * static_cast<uint64_t>(b) + 1);
        if (first < 0) first = 0;
        if (count < 0) count = 0;
        if (first > t_.tasks) first = t_.tasks;
        if (first + count > t_.tasks) count = t_.tasks - first;
        const uint32_t k0 = static_cast<uint32_t>(first), k1 = static_cast<uint32_t>(first + count);
        // M: the row maxima over the tasks that saw keys; L = sum exp(m - M) l.
        float mMax[MAXQ], lSum[MAXQ];
        for (uint32_t r = 0; r < Q; ++r) {
            mMax[r] = NEG_INF;
            lSum[r] = 0.0f;
        }
        const bool oneGroup = k1 - k0 <= K;
        LocalTensor<float> ml;
        for (uint32_t g = k0; g < k1; g += K) {
            const uint32_t n = Min(K, k1 - g);
            ml = LoadMl(g, n, r0, Q);
            for (uint32_t i = 0; i < n; ++i) {
                for (uint32_t r = 0; r < Q; ++r) {
                    const float m = ml.GetValue(i * mlPitch + 2 * r), l = ml.GetValue(i * mlPitch + 2 * r + 1);
                    if (l > 0.0f && m > mMax[r]) mMax[r] = m;
                }
            }
        }
        LocalTensor<float> w;
        for (uint32_t g = k0; g < k1; g += K) {
            const uint32_t n = Min(K, k1 - g);
            if (!oneGroup) ml = LoadMl(g, n, r0, Q);
            w = Weights(ml, n, Q, mMax);
            for (uint32_t i = 0; i < n; ++i) {
                for (uint32_t r = 0; r < Q; ++r) lSum[r] += w.GetValue(i * Q + r) * ml.GetValue(i * mlPitch + 2 * r + 1);
            }
        }
        if (t_.mutation == 2) {
            for (uint32_t r = 0; r < Q; ++r) lSum[r] *= MUTATE;
        }
        // out = sum_k (w_k / L) O_k, the partials streamed through a double-buffered queue.
        LocalTensor<float> acc = acc_.Get<float>();
        Duplicate(acc, 0.0f, static_cast<int32_t>(Q * L));
        const uint32_t gap = (L - AlignUp(Dl, 8)) * sizeof(float) / UB_BLOCK;
        for (uint32_t g = k0; g < k1; g += K) {
            const uint32_t n = Min(K, k1 - g);
            if (!oneGroup) {
                ml = LoadMl(g, n, r0, Q);
                w = Weights(ml, n, Q, mMax);
            }
            for (uint32_t i = 0; i < n; ++i) {
                LocalTensor<float> o = oQue_.AllocTensor<float>();
                DataCopyPad(o, partialWs_[(static_cast<uint64_t>(g + i) * G_ + r0) * Dl],
                            DataCopyExtParams(static_cast<uint16_t>(Q), Dl * static_cast<uint32_t>(sizeof(float)), 0,
                                              gap, 0),
                            DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
                oQue_.EnQue(o);
                o = oQue_.DeQue<float>();
                for (uint32_t r = 0; r < Q; ++r) {
                    // This chunk saw none of the row's keys (its O was not written).
                    if (!(ml.GetValue(i * mlPitch + 2 * r + 1) > 0.0f)) continue;
                    float c = w.GetValue(i * Q + r) / lSum[r];
                    if (t_.mutation == 3) c *= MUTATE;
                    SetFlag<HardEvent::S_V>(0);
                    WaitFlag<HardEvent::S_V>(0);
                    Muls(o[r * L], o[r * L], c, static_cast<int32_t>(Dl));
                    Add(acc[r * L], acc[r * L], o[r * L], static_cast<int32_t>(Dl));
                }
                oQue_.FreeTensor(o);
            }
        }
        LocalTensor<T> out = outQue_.AllocTensor<T>();
        FromFloat(out, acc, Q * L);
        outQue_.EnQue(out);
        out = outQue_.DeQue<T>();
        const uint32_t tGap = (L * sizeof(T) - AlignUp(Dl * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(outGm_[(static_cast<uint64_t>(b) * G_ + r0) * Dl], out,
                    DataCopyExtParams(static_cast<uint16_t>(Q), Dl * static_cast<uint32_t>(sizeof(T)), tGap, 0, 0));
        outQue_.FreeTensor(out);
        // lse[b, h, s] = M + ln L, one 32-byte UB block per row.
        LocalTensor<float> lse = lseQue_.AllocTensor<float>();
        const uint32_t per = UB_BLOCK / sizeof(float);
        for (uint32_t r = 0; r < Q; ++r) {
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            Duplicate(lse[r * per], lSum[r], static_cast<int32_t>(per));
            Ln(lse[r * per], lse[r * per], static_cast<int32_t>(per));
            Adds(lse[r * per], lse[r * per], mMax[r], static_cast<int32_t>(per));
        }
        lseQue_.EnQue(lse);
        lse = lseQue_.DeQue<float>();
        for (uint32_t r = 0; r < Q; ++r) {
            const uint32_t row = r0 + r, s = row / t_.heads, h = row % t_.heads;
            const uint64_t at = (static_cast<uint64_t>(b) * t_.heads + h) * t_.s_q + s;
            DataCopyPad(lseGm_[at], lse[r * per], DataCopyExtParams(1, static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
        }
        lseQue_.FreeTensor(lse);
    }

public:
    TPipe pipe_;
    TCubeTiling qk, pv;
    MmQk mmQk;
    MmPv mmPv;

private:
    TQue<TPosition::VECIN, BUFFER_NUM> scQue_, oQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> pQue_, mlQue_, outQue_, lseQue_;
    TBuf<TPosition::VECCALC> work_, small_, acc_, mlBuf_, wBuf_;
    GlobalTensor<T> qNopeGm_, qRopeGm_, latentGm_, ropeGm_, outGm_, pWs_;
    GlobalTensor<float> lseGm_, scoresWs_, partialWs_, mlWs_;
    GlobalTensor<int32_t> tableGm_, lensGm_, planGm_;
    DsnpuMlaDecodeTiling t_{};
    uint32_t G_ = 0, pPitch_ = 0;
    float scale_ = 1.0f;
};

template <typename T>
__aicore__ inline void MlaDecode(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable,
                                 GM_ADDR seqLens, GM_ADDR plan, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace,
                                 GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaDecodeTiling, t, tiling);
    // The same tiling on every core: all return here, or none.
    if (t.s_q == 0 || t.heads == 0 || t.latent_dim == 0 || t.pitch == 0 || t.combine_rows > MAX_SLAB_ROWS ||
        t.softmax_rows > MAX_SLAB_ROWS) {
        return;
    }
    KernelMlaDecode<T> op;
    op.Init(qNope, qRope, latent, rope, blockTable, seqLens, plan, out, lse, workspace, t);
    // The cube core serves the vector cores' Matmul requests here and returns when both are done.
    REGIST_MATMUL_OBJ(&op.pipe_, GetSysWorkSpacePtr(), op.mmQk, &op.qk, op.mmPv, &op.pv);
    op.Process();
}

}  // namespace

#define DSNPU_MLA_DECODE(suffix, type)                                                                       \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(mla_decode_##suffix)(                                 \
        GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable, GM_ADDR seqLens,      \
        GM_ADDR plan, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace, GM_ADDR tiling) {                          \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                    \
        MlaDecode<type>(qNope, qRope, latent, rope, blockTable, seqLens, plan, out, lse, workspace, tiling); \
    }

DSNPU_MLA_DECODE(f32, float)
DSNPU_MLA_DECODE(f16, half)
DSNPU_MLA_DECODE(bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/mla_decode.inc"
#endif
