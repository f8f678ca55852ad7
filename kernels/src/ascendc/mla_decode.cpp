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
 * `chunk` positions (for key_buffers 1 or 2, short enough that the chunks' cache rows fit in the cube
 * core's L1 beside a query panel and P; key_buffers 0, below, streams them). The plan is an int32 device
 * buffer: [batch x 2] (first task, task count of the sequence), then [tasks x 3] (b, c0, c1). AI Core i
 * of n (GetBlockNum()) runs the contiguous run of tasks [i * tasks / n, (i + 1) * tasks / n): its cube
 * core and both its vector cores, so consecutive tasks of a core are mostly consecutive chunks of one
 * sequence (its query panel stays in L1). A task serves ALL G = S * H query rows of its sequence (q rows
 * of b are contiguous, row r = s * H + h), so each cache row of the chunk comes from GM once per
 * sequence (once only when held):
 *   1. cube: the chunk's latent and rope rows into L1 (ND2NZ, one copy per run of consecutive cache slots:
 *      one block at worst) as K [C, Dl' + Dr] (Dl' = Dl rounded up to the 32-byte fractal width), the
 *      query panel of up to qk_base_m rows beside it; scores [G, C] = q . K^T in L0C tiles of
 *      qk_base_m x qk_base_n over k steps of qk_base_k (LoadData, Mmad), each tile to the block's f32
 *      score workspace (Fixpipe); then CrossCoreSetFlag(S) to both vector cores;
 *   2. vector core s of the block, rows [s * G1, (s + 1) * G1) (G1 = ceil(G / 2)): per row, scale, causal
 *      mask (at most S - 1 positions of the last chunk), max m, p = exp(s - m), l = sum p (a positive scale
 *      folded: m = scale max(raw), exp's argument scale raw - m in one FusedMulAdd); p rounded to t
 *      into the P workspace over the scores; (m, l) per row into the task's ml workspace;
 *      CrossCoreSetFlag(P);
 *   3. cube, after both flags: O [G, Dl] = P . latent from the same L1 rows (16-bit t: P into L1 by ND2NZ,
 *      the latent fractals transposed by LoadData on their way to L0B; O in L0C tiles of pv_base_m x
 *      pv_base_n, summed over k steps of pv_base_k positions), each tile once into the task's partial
 *      workspace (unnormalised: sum_j exp(s_j - m) latent_j; a whole sequence's into a whole slot,
 *      below). f32 has no transposing LoadData here: its P . latent is the Matmul API on the cube core
 *      (operands in GM: the latent rows come from GM again).
 * With key_buffers 0 (16-bit t; the plan picks it where long chunks pay, e.g. many query rows whose
 * partials would outweigh the keys) the chunk is not held: q . K^T stages each tile of qk_base_n keys
 * into L1 (two staging buffers), and P . latent stages per k step the latent rows' columns of a pass
 * (pv_pass_tiles output tiles of pv_base_n columns, summed at once in L0C's two buffers), so the latent
 * part comes from GM twice (as the old Matmul-API kernel read it), but a chunk can be any length. P
 * comes into L1 whole where the tiling found room for it (p_whole: narrower q . K^T tiles), else per k
 * step with the latent columns, once per pass (two passes of two tiles at 128 query rows: P read twice,
 * not four times as with a pass per tile; batch 8, context 32768: 334.7 -> 311.6 us modelled). The
 * cube core computes task j's scores before task j - 1's P . latent, so the vector cores' softmax of
 * task j - 1 overlaps them (two score slots per block). The two phases still run one after the other on
 * the cube core (task j's keys on MTE2, then task j - 1's products on M): interleaving them, with staging
 * tiles and L0C buffers of their own, was measured and does not pay. MTE2 carries both the keys from HBM
 * and P . latent's latent tiles and P from the L2 (78 % busy at 128 heads, batch 8, context 4096), and
 * task j's softmax loses the cover of task j - 1's whole P . latent: 49.7 us against 47.6 at the best
 * split of 48 tasks. A third score slot gives the softmax its cover back, but the latent's second read is
 * then two tasks after the first and misses the L2 at long contexts (batch 64, context 32768: twice the
 * HBM bytes).
 * Carry (tiling.carry: 16-bit t, held keys, O of all G rows in one L0C tile, each vector core's rows in
 * one softmax slab): the tasks a block runs of one sequence (a "group") sum their P . latent in one L0C
 * tile, written once per segment instead of once per task. The rows' exp offset is then a reference r
 * fixed at the first scores a segment sees for the row (its max), and p = exp(s - r) may exceed 1: while
 * every new max of a vector core's rows stays within CARRY_HEADROOM of r (P <= e^8, within f16's range),
 * the segment goes on; else that vector core asks for a new one (the rows take new references). A task's
 * (m, l) record is then (r, its own sum of p), and each vector core writes a word per task: 1 if it
 * starts a segment (its group's first task, or a new reference). Before task k's P . latent the cube core
 * reads both words; if either is set it writes the sum so far as the partial of the segment's last task
 * first. A task ends a segment if it is its sequence's last or the next task starts one: only those have
 * a partial, and the combine reads only those.
 * After its last task the cube core sets flag O, which the vector cores wait for before phase 2.
 * Phase 2, the combine: M = max of the tasks' m, w_i = exp(m_i - M), L = sum w_i l_i, out =
 * t(sum w_i O_i / L), lse = M + ln L (a task that saw no visible key has m = -inf, w = 0: skipped). The m
 * and l of a row slab come into UB combine_tasks tasks per copy (a task's rows a 32-byte-aligned run), and
 * the vector unit reduces them over the tasks (folds in halves: M, then L) and computes every w / L at
 * once; the scalar unit only reads those factors for the Axpy of each partial. The partials come in batches
 * through a double-buffered queue, the first (of the tasks that end a segment whatever the scores do)
 * asked for before the (m, l) are waited for, each next one before the current is added.
 * A sequence served by one task that sees keys (a "whole" one: the plan did not cut it) needs no combine
 * and no partial: its task's softmax sees every key of its rows, so in step 2 the vector cores write its
 * lse = m + ln l to the output and keep 1 / l; the cube core's step 3 writes P . latent into one of the
 * block's two whole slots (used in turn, so the L2 writes back two per block, not one partial per task)
 * and sets flag W; and each vector core, after its next task's softmax (or after its last task), divides
 * its rows of that O by l and writes them to out (step 4, FinishWhole), while the cube core works on.
 * P stays unnormalised (its row maxima exactly 1), as for every task: rounding p / l to t instead would
 * round every row's largest weight too. (FlashMLA likewise finishes unsplit sequences without the
 * combine kernel.) After SyncAll (vector cores) the other sequences' rows (b, r) are split
 * over the vector cores (fewer rows than vector cores: (row, column segment) pairs, the lse by segment
 * 0's core); when the plan cut no sequence (tiling.uncut) there are none, and no SyncAll. Rows past a
 * sequence's visible length are never read.
 *
 * Workspace (bytes, offsets in the tiling, after the system workspace): per block, two slots (one with
 * key_buffers 1) of scores f32 [G, pitch], P t written over them (row r of P at the start of score row r, read before: row pitch
 * pitch * 4 / sizeof(t) elements of t), then its two whole slots, O f32 [G, Dl] each (rounded up to
 * 32 bytes); per task: O f32 [G, Dl] | ml f32 [2, G] (m of every row, then l) | the segment words,
 * f32 [2, 8] (vector core v's at 8 v). pitch = round_up(chunk, 16).
 * L1 (cube core; M = qk_base_m, W = Dl' + Dr', the latent and rope widths rounded up to the fractal width
 * 32 / sizeof(t), B = key_buffers): M W sz (query panel) + B pitch W sz (the chunks' rows) + M pitch sz
 * (P, 16-bit t only); with B = 0: M W sz + 2 max(qk_base_n W, pv_base_k N) sz (staging; N, a pass's
 * columns, = min(pv_pass_tiles pv_base_n, round_up(Dl, 16))) + M pitch sz (P whole) or 2 M pv_base_k sz
 * (P's k steps, double-buffered). With B = 2 the cube core loads task j's rows (while
 * the vector cores work on task j - 1's softmax), then takes task j - 1's P . latent, then task j's
 * scores (the score and P workspaces then have two slots per block); the block's last task takes its
 * scores before task j - 1's P . latent (no keys load after it);
 * L0A / L0B two 32 KiB buffers each, L0C two 64 KiB (tiling_mla.rs sizes the tiles to them); with carry
 * two 32 KiB for the score tiles and one 64 KiB for the segment's sum.
 * UB, phase 1 (R = softmax_rows, P = pitch, sz = sizeof(t), E = max(R P, round_up(Dl, 16)): the scores
 *   and P buffers also carry a whole sequence's O rows in step 4): 2 E 4 (scores queue) + 2 E sz (P queue)
 *   + 2 * (2 * 32 * ceil(R * 4 / 32) + 32) (ml queue: m, l, then the segment word) + 2 * 32 round_up(R, 8)
 *   (a whole sequence's lse queue, a block per row) + 2 * 4 round_up(ceil(G / 2), 8) (1 / l of this core's
 *   rows of two whole sequences)
 *   + 64 R 4 (work: the row folds) + 11 round_up(R, 8) 4 (the rows' maxima, sums, offsets, broadcasts)
 *   + 32 (the scale, a block).
 * UB, phase 2 (Q = combine_rows, L = round_up(Dl, 16), K = combine_tasks): Q L 4 (acc) + 2 Q L 4 (partials
 *   queue) + 2 Q L sz (out queue) + 2 * 32 round_up(Q, 8) (lse queue) + 2 K B (m and l of K tasks, B =
 *   round_up(4 Q, 32)) + 2 K B (their weights, the folds' scratch) + 4 B (the rows' M, M floored, L, 1 / L)
 *   [+ 64 K with carry: the segment words of K tasks].
 *
 * Test-only mutations (tiling.mutation, 0 in every normal launch; see tiling_mla.rs): 1 scales the
 * softmax scale by 1.001, 2 the combine's denominator L by 1.001, 3 the combine weights by 1.001 (for a
 * whole sequence: 2 its l, 3 its weight 1 / l).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/row_ops.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"
#include "dsnpu_kernels/cube_tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

constexpr float NEG_INF = -__builtin_inff();
constexpr float MUTATE = 1.001f;
constexpr float FLT_MAX_VALUE = 3.402823466e38f;
constexpr float FLT_MIN_VALUE = 1.175494351e-38f;  // the smallest normal f32
constexpr uint32_t MAX_SLAB_ROWS = 64;  // tiling_mla.rs caps softmax_rows and combine_rows at this
// Cross-core flags: the scores of a task are in the workspace (cube -> vector cores), its P and (m, l)
// are (vector cores -> cube), every partial of the block is written (cube -> vector cores, once).
constexpr uint16_t FLAG_S = 0, FLAG_P = 1, FLAG_O = 2;
// A whole sequence's O is in the block's whole slot (cube -> vector cores, once per such task).
constexpr uint16_t FLAG_W = 3;
constexpr uint32_t L0AB_BUF = 32 * 1024;  // one of L0A's (L0B's) two buffers
constexpr uint32_t L0C_BUF = 64 * 1024;   // one of L0C's two buffers
// Carry: how far (in the scores' units) a row's max may rise above its segment's reference before the
// segment ends: p <= e^8 = 2981, well within f16 (65504), and no f32 sum comes near overflow.
constexpr float CARRY_HEADROOM = 8.0f;
constexpr uint32_t SEG_WORDS = 16;  // f32 per task: each vector core's segment word in its own 32 bytes
constexpr uint32_t MLA_COMBINE_TASKS_MAX = 256;  // tiling_mla.rs caps combine_tasks at this
constexpr uint32_t MAX_PASS_TILES = 2;  // P . latent output tiles summed at once: one per L0C buffer

template <typename T>
class KernelMlaDecode {
    static constexpr uint32_t C0 = 32 / sizeof(T);  // elements of a fractal row
    static constexpr uint32_t FRAC = 16 * C0;       // elements of a fractal
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
        // Score slots per block (two unless one key buffer): task j of the block uses slot j % Slots().
        scoreElems_ = static_cast<uint64_t>(G_) * t.pitch;
        // Then two slots of a whole sequence's O f32 [G, Dl] (WholeSlot).
        const uint64_t wholeElems = AlignUp(static_cast<uint64_t>(G_) * t.latent_dim, 8);
        GM_ADDR mine = ws + Block() * (scoreElems_ * Slots() + 2 * wholeElems) * sizeof(float);
        scoresWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine), scoreElems_ * Slots());
        wholeWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine) + scoreElems_ * Slots(), 2 * wholeElems);
        // P row r overwrites the start of score row r (read before): 4 bytes of scratch per score, not
        // 4 + sizeof(T), for the L2 to write back.
        pPitch_ = t.pitch * static_cast<uint32_t>(sizeof(float) / sizeof(T));
        pWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(mine), static_cast<uint64_t>(G_) * pPitch_ * Slots());
        GM_ADDR partial = ws + static_cast<uint64_t>(t.ws_partial_at_lo) + (static_cast<uint64_t>(t.ws_partial_at_hi) << 32);
        const uint64_t perTask = static_cast<uint64_t>(G_) * t.latent_dim;
        partialWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(partial), perTask * t.tasks);
        GM_ADDR mlAt = partial + perTask * t.tasks * sizeof(float);
        mlWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mlAt), 2 * static_cast<uint64_t>(G_) * t.tasks);
        segWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mlAt + 2 * static_cast<uint64_t>(G_) * t.tasks *
                                                                          sizeof(float)),
                               static_cast<uint64_t>(SEG_WORDS) * t.tasks);

        pv = ToCubeTiling(t.pv_cube);
        // Vector core s of the block takes query rows [s * G1, (s + 1) * G1) of every task.
        const uint32_t g1 = (G_ + 1) / 2;
        myRow0_ = static_cast<uint32_t>(GetSubBlockIdx()) * g1;
        if (myRow0_ > G_) myRow0_ = G_;
        myRows_ = Min(g1, G_ - myRow0_);
    }

    // The AI Core (block) of this core.
    __aicore__ inline uint32_t Block() const { return static_cast<uint32_t>(GetBlockIdx() / GetTaskRation()); }
    // Its run of tasks [First(), Last()): a contiguous share of the plan's tasks, block c's starting at
    // RunStart(c).
    __aicore__ inline uint32_t RunStart(uint64_t c) const {
        return static_cast<uint32_t>(static_cast<uint64_t>(t_.tasks) * c / GetBlockNum());
    }
    __aicore__ inline uint32_t First() const { return RunStart(Block()); }
    __aicore__ inline uint32_t Last() const { return RunStart(Block() + 1); }

    // Score slots per block: two where consecutive tasks overlap (two key buffers, streamed keys), one with
    // one key buffer.
    __aicore__ inline uint32_t Slots() const { return t_.key_buffers == 1 ? 1 : 2; }

    // Whether the block's tasks of one sequence sum P . latent in L0C (see the head of the file).
    __aicore__ inline bool Carry() const { return t_.carry != 0; }

    // Task j of this block works in score slot j % Slots(): where its scores and P start.
    __aicore__ inline void UseSlot(uint32_t j) {
        const uint64_t s = j % Slots();
        scoreAt_ = s * scoreElems_;
        pAt_ = s * static_cast<uint64_t>(G_) * pPitch_;
    }

    // ================================================================ the cube core: steps 1 and 3
    // With two key buffers the tasks overlap: task j's keys are loaded while the vector cores still work
    // on task j - 1's softmax, whose P . latent follows, then task j's scores.
    __aicore__ inline void CubeProcess() {
        CubeInit();
        Pending prev;
        uint32_t j = 0, prevB = 0;
        const uint32_t last = Last();
        for (uint32_t k = First(); k < last; ++k) {
            Pending cur;
            if (!Span(k, cur.b, cur.len, cur.c0, cur.C)) continue;  // the vector cores skip it too
            cur.k = k;
            cur.groupStart = j == 0 || cur.b != prevB;
            prevB = cur.b;
            cur.j = j++;
            // Whether the block's next task is of the same sequence.
            uint32_t nb = 0, nC = 0;
            int64_t nLen = 0, nC0 = 0;
            cur.groupEnd = !(k + 1 < last && Span(k + 1, nb, nLen, nC0, nC) && nb == cur.b);
            // The block's last task, after another: no keys load after its own, so its scores go before
            // the previous task's P . latent (as with streamed keys), and the vector cores' softmax of it
            // overlaps that product instead of following it.
            const bool scoresFirst = t_.key_buffers == 2 && k + 1 == last && prev.valid && cur.C > 0;
            if (scoresFirst) {
                cur.keys = kL1_.AllocTensor<T>();
                StageKeys(cur, 0, cur.C);
                kL1_.EnQue(cur.keys);
                cur.keys = kL1_.DeQue<T>();
            } else if (t_.key_buffers == 2) {
                // The previous task's P . latent goes between this task's keys and its scores, so that
                // MTE1 (in program order) need not wait for these keys before it, and the next task's
                // keys (into the buffer it reads) need not wait for this task's scores. Its P comes in
                // between two parts of these keys: the first part goes in while the vector cores still
                // work on that P, the second while P . latent reads its rows from L1.
                LocalTensor<T> ahead;
                if (cur.C > 0) {
                    cur.keys = kL1_.AllocTensor<T>();
                    const uint32_t first = prev.valid ? KeysBeforeP(cur.C) : cur.C;
                    StageKeys(cur, 0, first);
                    if (prev.valid) ahead = WaitP(prev);
                    StageKeys(cur, first, cur.C);
                    kL1_.EnQue(cur.keys);
                } else if (prev.valid) {
                    ahead = WaitP(prev);
                }
                if (prev.valid) Finish(prev, ahead);
                prev.valid = false;
                if (cur.C > 0) cur.keys = kL1_.DeQue<T>();
            } else if (cur.C > 0 && !Streamed()) {
                cur.keys = kL1_.AllocTensor<T>();
                StageKeys(cur, 0, cur.C);
                kL1_.EnQue(cur.keys);
                cur.keys = kL1_.DeQue<T>();
            }
            UseSlot(cur.j);
            if (cur.C > 0) {
                // One query panel that the block's next task (often the next chunk of the same sequence)
                // reads too stays in L1 for it.
                const bool keep = G_ <= t_.qk_base_m && !cur.groupEnd;
                for (uint32_t m0 = 0; m0 < G_; m0 += t_.qk_base_m) {
                    Scores(cur, m0, Min(t_.qk_base_m, G_ - m0));
                }
                if (!keep) DropQueryPanel();
            }
            CrossCoreSetFlag<2, PIPE_FIX>(FLAG_S);
            if (Streamed() || scoresFirst) {
                // The previous task's P . latent after this task's scores: the vector cores' softmax of
                // that task ran while the cube computed them.
                if (prev.valid) Finish(prev, WaitP(prev));
                prev = cur;
                prev.valid = true;
            } else if (t_.key_buffers == 1) {
                Finish(cur, WaitP(cur));
            } else {
                prev = cur;
                prev.valid = true;
            }
        }
        if (prev.valid) Finish(prev, WaitP(prev));
        DropQueryPanel();
        // Every partial of this block is written: the vector cores may combine.
        CrossCoreSetFlag<2, PIPE_FIX>(FLAG_O);
    }

    // ================================================================ a vector core: step 2, phase 2
    __aicore__ inline void Process() {
        const uint32_t workers = static_cast<uint32_t>(VectorWorkers());
        const uint32_t me = static_cast<uint32_t>(VectorWorker());
        const uint32_t last = Last();
        InitPhase1();
        uint32_t j = 0;
        for (uint32_t k = First(); k < last; ++k) Task(k, j);
        if (wholePending_) FinishWhole();
        WaitMlCopy();
        pipe_.Reset();
        CrossCoreWaitFlag(FLAG_O);
        // No sequence cut (the plan's words say so): every row is finished by now (whole sequences end in
        // phase 1).
        if (t_.uncut != 0) return;
        InitPhase2();
        // The combine of the other sequences needs every task's partial results.
        SyncAll();
        const uint64_t rows = static_cast<uint64_t>(t_.batch) * G_;
        if (rows < workers) {
            CombineSegment(rows, workers, me);
            return;
        }
        const uint64_t per = (rows + workers - 1) / workers;
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

    // Fewer rows than vector cores: each row's latent columns are cut into segments of whole 16-column
    // groups, a (row, segment) per vector core, so that every vector core reads a share of the
    // partials instead of some reading whole rows while the others wait.
    __aicore__ inline void CombineSegment(uint64_t rows, uint32_t workers, uint32_t me) {
        const uint32_t Dl = t_.latent_dim;
        const uint32_t segs = static_cast<uint32_t>(workers / rows);
        const uint32_t width = AlignUp((Dl + segs - 1) / segs, 16);
        const uint64_t row = me / segs;
        const uint32_t c0 = (me % segs) * width;
        if (row >= rows || c0 >= Dl) return;
        const uint32_t b = static_cast<uint32_t>(row / G_);
        if (!Whole(b)) Combine(b, static_cast<uint32_t>(row - static_cast<uint64_t>(b) * G_), 1, c0, Min(width, Dl - c0));
    }

    // Rows [r0, r0 + n) of sequence b, in slabs of combine_rows.
    __aicore__ inline void CombineRows(uint32_t b, uint32_t r0, uint32_t n) {
        for (uint32_t r = r0; r < r0 + n; r += t_.combine_rows) Combine(b, r, Min(t_.combine_rows, r0 + n - r));
    }

private:
    // ---------------------------------------------------------------- phase 1: one (sequence, chunk) task
    __aicore__ inline void InitPhase1() {
        const uint32_t R = t_.softmax_rows, P = t_.pitch;
        // The score and P buffers also take a whole sequence's O rows (f32 in, t out): at least one row.
        const uint32_t elems = R * P > t_.latent_pitch ? R * P : t_.latent_pitch;
        pipe_.InitBuffer(scQue_, BUFFER_NUM, elems * sizeof(float));
        pipe_.InitBuffer(pQue_, BUFFER_NUM, elems * sizeof(T));
        // A slab's m, then its l (a block-aligned run each), then the segment word.
        pipe_.InitBuffer(mlQue_, BUFFER_NUM, 2 * AlignUp(R * sizeof(float), UB_BLOCK) + UB_BLOCK);
        // A whole sequence's lse, a 32-byte block per row.
        pipe_.InitBuffer(wholeLseQue_, BUFFER_NUM, AlignUp(R, 8) * UB_BLOCK);
        pipe_.InitBuffer(work_, t_.work_elems * sizeof(float));  // 64 R: the row folds
        // The slab's row maxima, sums and negated offsets (AlignUp(R, 8) each), their broadcast blocks (8 each),
        // then the scale as a 32-byte block (FusedMulAdd's per-lane factor, Softmax).
        pipe_.InitBuffer(small_, 11 * AlignUp(R, 8) * sizeof(float) + UB_BLOCK);
        Duplicate(small_.Get<float>()[11 * AlignUp(R, 8)], scale_, static_cast<int32_t>(UB_BLOCK / sizeof(float)));
        // 1 / l of this core's rows of the two whole-sequence tasks in flight (FinishWhole).
        pipe_.InitBuffer(invL_, 2 * AlignUp(myRows_, 8) * sizeof(float));
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

    // Whether sequence b is served by one task that sees keys: that task finishes it in phase 1 (its
    // lse and then its output written by the vector cores, FinishWhole), and the combine skips it.
    __aicore__ inline bool Whole(uint32_t b) {
        if (planGm_.GetValue(2 * static_cast<uint64_t>(b) + 1) != 1) return false;
        const int32_t first = planGm_.GetValue(2 * static_cast<uint64_t>(b));
        if (first < 0 || static_cast<uint32_t>(first) >= t_.tasks) return false;
        uint32_t tb, C;
        int64_t len, c0;
        return Span(static_cast<uint32_t>(first), tb, len, c0, C) && tb == b && C > 0;
    }
    // Whether task k (of sequence b, C keys) is the one task of a whole sequence: Whole(b) as seen from the
    // task, in two scalar reads (both core kinds ask it of every task, and must agree).
    __aicore__ inline bool WholeTask(uint32_t k, uint32_t b, uint32_t C) {
        return C > 0 && planGm_.GetValue(2 * static_cast<uint64_t>(b) + 1) == 1 &&
               planGm_.GetValue(2 * static_cast<uint64_t>(b)) == static_cast<int32_t>(k);
    }

    // Step 2 of task k (the block's j-th valid one, counted here) on this vector core: its rows of the
    // scores the cube core wrote.
    __aicore__ inline void Task(uint32_t k, uint32_t& j) {
        uint32_t b, C;
        int64_t len, c0;
        // The cube core skips a bad entry too (the same plan words): no flags, no slot for it.
        if (!Span(k, b, len, c0, C)) return;
        const bool groupStart = j == 0 || b != prevB_;
        prevB_ = b;
        UseSlot(j++);
        // Read while the cube core works.
        const bool whole = WholeTask(k, b, C);
        if (whole) invAt_ = (wholeSeen_++ % 2) * AlignUp(myRows_, 8);
        CrossCoreWaitFlag(FLAG_S);
        // Each slab's scores are asked for before the previous slab's softmax, so that their GM latency
        // overlaps it (the score queue holds two slabs).
        const uint32_t end = myRow0_ + myRows_, R = t_.softmax_rows;
        if (C > 0 && myRows_ > 0) LoadScores(myRow0_, Min(R, myRows_), C);
        for (uint32_t r = myRow0_; r < end; r += R) {
            const uint32_t next = r + R < end ? Min(R, end - r - R) : 0;
            Softmax(k, b, r, Min(R, end - r), len, static_cast<uint32_t>(c0), C, groupStart, whole, next);
        }
        // P and (m, l) went out on MTE3: the set orders them before the cube core's loads.
        CrossCoreSetFlag<2, PIPE_MTE3>(FLAG_P);
        // The previous whole sequence's O is out by now or soon (the cube core computes it while this
        // task's softmax runs): finish it before the next task's scores.
        if (wholePending_) FinishWhole();
        if (whole) {
            wholePending_ = true;
            wholeB_ = b;
        }
    }

    // Step 4 of the block's oldest whole-sequence task not finished (sequence wholeB_ of the latest,
    // one at most pending): this core's rows of its O, from the block's whole slot, times 1 / l
    // (Softmax kept them), rounded to t into out, in slabs of the score buffers' size. Every vector core
    // takes flag W, with rows or without.
    __aicore__ inline void FinishWhole() {
        const uint32_t w = wholeDone_++, Dl = t_.latent_dim, L = t_.latent_pitch;
        // The sequence's one partial enters out with weight 1 / l: mutation 3 (the combine weights) scales it.
        const float weight = t_.mutation == 3 ? MUTATE : 1.0f;
        wholePending_ = false;
        CrossCoreWaitFlag(FLAG_W);
        if (myRows_ == 0) return;
        const GlobalTensor<float> o = WholeSlot(w);
        const LocalTensor<float> inv = invL_.Get<float>()[(w % 2) * AlignUp(myRows_, 8)];
        const uint32_t room = t_.softmax_rows * t_.pitch, per = room > L ? room / L : 1;
        const uint32_t f32Gap = (L * sizeof(float) - AlignUp(Dl * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        const uint32_t tGap = (L * sizeof(T) - AlignUp(Dl * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        for (uint32_t i = 0; i < myRows_; i += per) {
            const uint32_t n = Min(per, myRows_ - i), r = myRow0_ + i;
            LocalTensor<float> rows = scQue_.AllocTensor<float>();
            DataCopyPad(rows, o[static_cast<uint64_t>(r) * Dl],
                        DataCopyExtParams(static_cast<uint16_t>(n), Dl * static_cast<uint32_t>(sizeof(float)), 0,
                                          f32Gap, 0),
                        DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
            scQue_.EnQue(rows);
            rows = scQue_.DeQue<float>();
            for (uint32_t q = 0; q < n; ++q) {
                Muls(rows[q * L], rows[q * L], inv.GetValue(i + q) * weight, static_cast<int32_t>(Dl));
            }
            LocalTensor<T> out = pQue_.AllocTensor<T>();
            FromFloat(out, rows, n * L);
            scQue_.FreeTensor(rows);
            pQue_.EnQue(out);
            out = pQue_.DeQue<T>();
            DataCopyPad(outGm_[(static_cast<uint64_t>(wholeB_) * G_ + r) * Dl], out,
                        DataCopyExtParams(static_cast<uint16_t>(n), Dl * static_cast<uint32_t>(sizeof(T)), tGap, 0, 0));
            pQue_.FreeTensor(out);
        }
    }

    // ---------------------------------------------------------------- the cube core's buffers and steps
    // Widths in L1 (elements): the latent part rounded up to the fractal width, then the rope part.
    __aicore__ inline uint32_t LatentW() const { return AlignUp(t_.latent_dim, C0); }
    __aicore__ inline uint32_t KeyW() const { return LatentW() + AlignUp(t_.rope_dim, C0); }

    // Whether the chunk's keys are streamed through L1 tile by tile (key_buffers 0, 16-bit t) instead
    // of held there from q . K^T to P . V.
    __aicore__ inline bool Streamed() const { return t_.key_buffers == 0; }
    // Whether a task's P comes into L1 whole, once (16-bit t: with held keys, and with streamed keys where
    // the tiling found room), instead of per k step of each P . V output tile.
    __aicore__ inline bool PWhole() const { return t_.p_whole != 0; }

    __aicore__ inline void CubeInit() {
        const uint32_t M = t_.qk_base_m, P = t_.pitch, W = KeyW();
        pipe_.InitBuffer(qL1_, 1, M * W * sizeof(T));
        if (Streamed()) {
            // Two staging tiles: q . K^T's key tiles (qk_base_n rows, all columns) and P . V's latent
            // tiles (pv_base_k rows, pv_base_n columns); P whole, or per k step (also two).
            // (A pass's columns: pv_pass_tiles output tiles, at most the latent's, tiling_mla.rs pv_pass_cols.)
            const uint32_t passCols = Min(t_.pv_base_n * t_.pv_pass_tiles, AlignUp(t_.latent_dim, 16));
            const uint32_t qkTile = t_.qk_base_n * W, pvTile = t_.pv_base_k * passCols;
            const uint32_t tile = qkTile > pvTile ? qkTile : pvTile;
            pipe_.InitBuffer(kL1_, 2, tile * sizeof(T));
            if (PWhole()) {
                pipe_.InitBuffer(pL1_, 1, M * P * sizeof(T));
            } else {
                pipe_.InitBuffer(pL1_, 2, M * t_.pv_base_k * sizeof(T));
            }
        } else {
            pipe_.InitBuffer(kL1_, static_cast<uint8_t>(t_.key_buffers), P * W * sizeof(T));
            if constexpr (sizeof(T) == 2) pipe_.InitBuffer(pL1_, 1, M * P * sizeof(T));
        }
        pipe_.InitBuffer(l0a_, 2, L0AB_BUF);
        pipe_.InitBuffer(l0b_, 2, L0AB_BUF);
        // With carry a segment's sum holds a buffer of its own: the score tiles keep two, in half the room.
        if (Carry()) {
            pipe_.InitBuffer(l0c_, 2, L0C_BUF / 2);
            pipe_.InitBuffer(carryL0c_, 1, L0C_BUF);
        } else {
            pipe_.InitBuffer(l0c_, 2, L0C_BUF);
        }
        if constexpr (sizeof(T) == 4) mmPv.Init(&pv);
    }

    // A task whose scores are out and whose P . latent is still to do.
    struct Pending {
        uint32_t k = 0, j = 0, b = 0, C = 0;
        int64_t len = 0, c0 = 0;
        LocalTensor<T> keys;
        bool valid = false;
        bool groupStart = false, groupEnd = false;  // the block's first / last task of its sequence
        bool whole = false;  // the one task of a whole sequence (WholeTask; WaitP sets it)
    };

    // Rows of a chunk of C keys loaded before the previous task's P (two key buffers): about three
    // quarters, for the vector cores' softmax of that task to end within the first part's load and P .
    // latent's reads of the other buffer within the second's (`cargo bench --bench mla_kernels`, batch
    // 64, context 4096, 16 heads: 70 % and 80 % within 0.2 %, 60 % 4 % slower, no split 11 % slower).
    __aicore__ inline uint32_t KeysBeforeP(uint32_t C) const { return Min(C, AlignUp(C * 3 / 4, 16)); }

    // Rows [r0, r1) of task t's chunk into its keys buffer in L1, K [C, KeyW()] in NZ with rows padded
    // to pitch (nothing when r0 >= r1).
    __aicore__ inline void StageKeys(const Pending& t, uint32_t r0, uint32_t r1) {
        if (r0 < r1) {
            Stage(t.keys[r0 * C0], t.b, static_cast<uint32_t>(t.c0) + r0, r1 - r0, t_.pitch, 0, t_.latent_dim, true);
        }
    }

    // Waits for task t's P from the vector cores; with P whole loads its first row panel into L1 for
    // Finish, so that the load is issued now, in MTE2's program order (else an empty tensor). Finds out
    // first (its scalar reads overlapping the wait) whether t is a whole sequence's task.
    __aicore__ inline LocalTensor<T> WaitP(Pending& t) {
        t.whole = WholeTask(t.k, t.b, t.C);
        CrossCoreWaitFlag(FLAG_P);
        LocalTensor<T> pm;
        if constexpr (sizeof(T) == 2) {
            if (t.C > 0 && PWhole()) {
                UseSlot(t.j);
                const uint32_t rows = Min(t_.pv_base_m, G_);
                pm = LoadP(0, rows, AlignUp(rows, 16), 0, t.C);
            }
        }
        return pm;
    }

    // Step 3 of task `t`, after WaitP(t) returned `ahead`. With carry t's P . latent joins its segment's
    // sum in L0C (carry_), which goes out once, as the partial of the segment's last task: before t's
    // product if t starts a new segment, after it if t is the last of its group. A whole sequence's O
    // goes to the block's whole slot instead, and flag W tells the vector cores.
    __aicore__ inline void Finish(const Pending& t, const LocalTensor<T>& ahead) {
        if (Carry() && carrying_ && (t.groupStart || NewSegmentAsked(t.k))) FlushCarry();
        // C = 0: every row has l = 0, and the combine skips this task (or it only extends a segment).
        if (t.C > 0) {
            UseSlot(t.j);
            const GlobalTensor<float> o = t.whole ? WholeSlot(wholeDone_)
                                                  : partialWs_[static_cast<uint64_t>(t.k) * G_ * t_.latent_dim];
            if constexpr (sizeof(T) == 2) {
                if (Carry()) {
                    if (!carrying_) carry_ = carryL0c_.AllocTensor<float>();
                    Output(t, 0, G_, o, ahead, &carry_, !carrying_);
                    carrying_ = true;
                    carryWhole_ = t.whole;
                } else {
                    for (uint32_t m0 = 0; m0 < G_; m0 += t_.pv_base_m) {
                        Output(t, m0, Min(t_.pv_base_m, G_ - m0), o, ahead, nullptr, true);
                    }
                }
            } else {
                OutputMatmul(t, o);
            }
            if (t.whole && !Carry()) WholeOut();
            if (!Streamed()) {
                LocalTensor<T> keys = t.keys;
                kL1_.FreeTensor(keys);
            }
            // A later task's scores overwrite the P these loads read (MTE2, then FIX).
            SetFlag<HardEvent::MTE2_FIX>(0);
            WaitFlag<HardEvent::MTE2_FIX>(0);
        }
        if (Carry()) {
            carryK_ = t.k;
            if (t.groupEnd && carrying_) FlushCarry();
        }
    }

    // The block's slot for the O of its w-th whole-sequence task (two, used in turn: the vector cores
    // finish one while the cube core writes the next), in the block's scratch after its score slots.
    __aicore__ inline GlobalTensor<float> WholeSlot(uint32_t w) const {
        return wholeWs_[static_cast<uint64_t>(w % 2) * AlignUp(static_cast<uint64_t>(G_) * t_.latent_dim, 8)];
    }

    // A whole sequence's O is out (FIX): flag W to the vector cores, which finish it (FinishWhole).
    __aicore__ inline void WholeOut() {
        CrossCoreSetFlag<2, PIPE_FIX>(FLAG_W);
        ++wholeDone_;
    }

    // Whether either vector core asked task k to start a segment (its words are out: both set flag P
    // after writing them). Scalar reads of GM another core wrote: the data cache line goes first.
    __aicore__ inline bool NewSegmentAsked(uint32_t k) {
        bool asked = false;
        for (uint32_t v = 0; v < 2; ++v) {
            const GlobalTensor<float> word = segWs_[static_cast<uint64_t>(k) * SEG_WORDS + 8 * v];
            DataCacheCleanAndInvalid<float, CacheLine::SINGLE_CACHE_LINE, DcciDst::CACHELINE_OUT>(word);
            asked = asked || word.GetValue(0) != 0.0f;
        }
        return asked;
    }

    // The segment's sum to the partial of its last task so far (carryK_), or a whole sequence's to its
    // slot; frees the L0C tile.
    __aicore__ inline void FlushCarry() {
        const GlobalTensor<float> o = carryWhole_ ? WholeSlot(wholeDone_)
                                                  : partialWs_[static_cast<uint64_t>(carryK_) * G_ * t_.latent_dim];
        Store(carryL0c_, carry_, o, G_, t_.latent_dim, AlignUp(G_, 16), t_.latent_dim);
        carrying_ = false;
        if (carryWhole_) WholeOut();
    }

    // Cache rows [pos0, pos0 + n) of sequence b, latent columns [col, col + cols) (and the whole rope
    // part with `rope`), into `dst` as NZ with row pitch `pitch`: one ND2NZ per run and part.
    __aicore__ inline void Stage(const LocalTensor<T>& dst, uint32_t b, uint32_t pos0, uint32_t n, uint32_t pitch,
                                 uint32_t col, uint32_t cols, bool rope) {
        const uint32_t Dl = t_.latent_dim, Dr = t_.rope_dim;
        for (uint32_t p = 0; p < n;) {
            const uint32_t pos = pos0 + p;
            const uint64_t slot = Slot(b, pos);
            const uint32_t r = Run(b, pos, n - p);
            DataCopy(dst[p * C0], latentGm_[slot * Dl + col],
                     Nd2NzParams(1, static_cast<uint16_t>(r), static_cast<uint16_t>(cols), 0, static_cast<uint16_t>(Dl),
                                 static_cast<uint16_t>(pitch), 1, 0));
            if (rope && Dr > 0) {
                DataCopy(dst[(LatentW() / C0 * pitch + p) * C0], ropeGm_[slot * Dr],
                         Nd2NzParams(1, static_cast<uint16_t>(r), static_cast<uint16_t>(Dr), 0,
                                     static_cast<uint16_t>(Dr), static_cast<uint16_t>(pitch), 1, 0));
            }
            p += r;
        }
    }

    // A [r16 rows, kBlocks fractal columns] from the NZ matrix `nz` (r16 rows), its first fractal `at`
    // elements in, into an L0A buffer in ZZ (each 16-row block's fractals, a column block of the NZ
    // apart), queued for Multiply.
    __aicore__ inline void LoadA(const LocalTensor<T>& nz, uint32_t at, uint32_t r16, uint32_t kBlocks) {
        LocalTensor<T> a = l0a_.AllocTensor<T>();
        for (uint32_t i = 0; i < r16 / 16; ++i) {
            LoadData(a[i * kBlocks * FRAC], nz[at + i * 16 * C0],
                     LoadData2DParams(0, static_cast<uint8_t>(kBlocks), static_cast<uint16_t>(r16 / 16), 0, 0, false, 0));
        }
        l0a_.EnQue(a);
    }

    // acc [m, n] = (init) or += the queued L0A and L0B operands over k; frees them.
    __aicore__ inline void Multiply(LocalTensor<float>& acc, uint32_t m, uint32_t n, uint32_t k, bool init) {
        LocalTensor<T> a = l0a_.DeQue<T>();
        MultiplyB(acc, a, m, n, k, init);
        l0a_.FreeTensor(a);
    }
    // The same with A already taken from L0A's queue (the caller frees it): frees only the L0B operand.
    __aicore__ inline void MultiplyB(LocalTensor<float>& acc, const LocalTensor<T>& a, uint32_t m, uint32_t n,
                                     uint32_t k, bool init) {
        LocalTensor<T> bt = l0b_.DeQue<T>();
        MmadParams mp;
        mp.m = static_cast<uint16_t>(m);
        mp.n = static_cast<uint16_t>(n);
        mp.k = static_cast<uint16_t>(k);
        mp.cmatrixInitVal = init;
        Mmad(acc, a, bt, mp);
        l0b_.FreeTensor(bt);
    }

    // The finished L0C tile acc [rows, cols] (r16 rows in L0C) of `que` to f32 rows of `pitch` at `dst`;
    // frees it.
    template <typename Que>
    __aicore__ inline void Store(Que& que, LocalTensor<float>& acc, const GlobalTensor<float>& dst, uint32_t rows,
                                 uint32_t cols, uint32_t r16, uint32_t pitch) {
        que.EnQue(acc);
        acc = que.template DeQue<float>();
        Fixpipe<float, float, CFG_ROW_MAJOR>(dst, acc,
                                             FixpipeParamsV220(static_cast<uint16_t>(cols), static_cast<uint16_t>(rows),
                                                               static_cast<uint16_t>(r16), pitch, false));
        que.FreeTensor(acc);
    }

    // Scores of query rows [m0, m0 + rows) against task t's C keys (held in L1, or staged tile by tile),
    // into the block's score workspace.
    __aicore__ inline void Scores(const Pending& t, uint32_t m0, uint32_t rows) {
        const uint32_t b = t.b, C = t.C;
        const uint32_t Dl = t_.latent_dim, P = t_.pitch, W = KeyW();
        const uint32_t r16 = AlignUp(rows, 16);
        const LocalTensor<T> q = QueryPanel(b, m0, rows);
        const uint32_t KT = t_.qk_base_k;
        for (uint32_t n0 = 0; n0 < C; n0 += t_.qk_base_n) {
            const uint32_t cols = Min(t_.qk_base_n, C - n0);
            const uint32_t nBlocks = AlignUp(cols, 16) / 16;
            // The keys of this tile: rows n0.. of the held chunk, or the tile staged alone.
            LocalTensor<T> keys = t.keys;
            uint32_t kp = P, kn0 = n0;
            if (Streamed()) {
                keys = kL1_.AllocTensor<T>();
                kp = AlignUp(cols, 16);
                kn0 = 0;
                Stage(keys, b, static_cast<uint32_t>(t.c0) + n0, cols, kp, 0, Dl, true);
                kL1_.EnQue(keys);
                keys = kL1_.DeQue<T>();
            }
            LocalTensor<float> acc = l0c_.AllocTensor<float>();
            for (uint32_t k0 = 0; k0 < W; k0 += KT) {
                const uint32_t kt = Min(KT, W - k0), kBlocks = kt / C0;
                LoadA(q, k0 / C0 * r16 * C0, r16, kBlocks);
                LocalTensor<T> bt = l0b_.AllocTensor<T>();
                // K's NZ is K^T's ZN: per k fractal column, the tile's row blocks as they are.
                for (uint32_t kb = 0; kb < kBlocks; ++kb) {
                    LoadData(bt[kb * nBlocks * FRAC], keys[((k0 / C0 + kb) * kp + kn0) * C0],
                             LoadData2DParams(0, static_cast<uint8_t>(nBlocks), 1, 0, 0, false, 0));
                }
                l0b_.EnQue(bt);
                Multiply(acc, rows, cols, kt, k0 == 0);
            }
            if (Streamed()) kL1_.FreeTensor(keys);
            Store(l0c_, acc, scoresWs_[scoreAt_ + static_cast<uint64_t>(m0) * P + n0], rows, cols, r16, P);
        }
    }

    // Query rows [m0, m0 + rows) of sequence b in L1 as NZ (rows padded to 16): loaded unless they are
    // the panel still held (CubeProcess keeps it for a next task of the same sequence, and drops it as
    // soon as it is not: the release orders the next load after the MTE1 work issued before it).
    __aicore__ inline LocalTensor<T> QueryPanel(uint32_t b, uint32_t m0, uint32_t rows) {
        if (qHeld_ && qB_ == b && qM0_ == m0) return q_;
        DropQueryPanel();
        const uint32_t Dl = t_.latent_dim, Dr = t_.rope_dim, r16 = AlignUp(rows, 16);
        const uint64_t qRow = static_cast<uint64_t>(b) * G_ + m0;
        q_ = qL1_.AllocTensor<T>();
        DataCopy(q_, qNopeGm_[qRow * Dl],
                 Nd2NzParams(1, static_cast<uint16_t>(rows), static_cast<uint16_t>(Dl), 0, static_cast<uint16_t>(Dl),
                             static_cast<uint16_t>(r16), 1, 0));
        if (Dr > 0) {
            DataCopy(q_[LatentW() / C0 * r16 * C0], qRopeGm_[qRow * Dr],
                     Nd2NzParams(1, static_cast<uint16_t>(rows), static_cast<uint16_t>(Dr), 0,
                                 static_cast<uint16_t>(Dr), static_cast<uint16_t>(r16), 1, 0));
        }
        qL1_.EnQue(q_);
        q_ = qL1_.DeQue<T>();
        qHeld_ = true;
        qB_ = b;
        qM0_ = m0;
        return q_;
    }
    __aicore__ inline void DropQueryPanel() {
        if (qHeld_) qL1_.FreeTensor(q_);
        qHeld_ = false;
    }

    // P rows [m0, m0 + rows), columns [k0, k0 + kt) into pL1_ as NZ (rows padded to r16).
    __aicore__ inline LocalTensor<T> LoadP(uint32_t m0, uint32_t rows, uint32_t r16, uint32_t k0, uint32_t kt) {
        LocalTensor<T> pm = pL1_.AllocTensor<T>();
        DataCopy(pm, pWs_[pAt_ + static_cast<uint64_t>(m0) * pPitch_ + k0],
                 Nd2NzParams(1, static_cast<uint16_t>(rows), static_cast<uint16_t>(kt), 0, static_cast<uint16_t>(pPitch_),
                             static_cast<uint16_t>(r16), 1, 0));
        pL1_.EnQue(pm);
        return pL1_.DeQue<T>();
    }

    // O rows [m0, m0 + rows) = P . latent over task t's C keys (16-bit t), into `o` (the task's partial or
    // a whole slot). Held keys: both operands are read from L1; streamed: per k step the latent rows' pass
    // columns are staged.
    // P comes into L1 whole (PWhole) or per k step with the latent, once per pass: a pass sums
    // pv_pass_tiles output tiles of pv_base_n columns at once, one L0C buffer each, so each k step's P
    // and its L0A copy serve them all.
    // `ahead`: the first row panel's P, loaded by WaitP (P whole). With `carry` (one output tile) the
    // product is summed into that L0C tile (over what it holds unless `init`) and stays there.
    __aicore__ inline void Output(const Pending& t, uint32_t m0, uint32_t rows, const GlobalTensor<float>& o,
                                  const LocalTensor<T>& ahead, LocalTensor<float>* carry, bool init) {
        const uint32_t Dl = t_.latent_dim, P = t_.pitch, C = t.C, TN = t_.pv_base_n;
        const uint32_t r16 = AlignUp(rows, 16);
        const uint32_t passN = TN * t_.pv_pass_tiles;  // 1 or 2 tiles (MlaDecode checks; 1 with carry)
        LocalTensor<T> pm;
        if (PWhole()) pm = m0 == 0 ? ahead : LoadP(m0, rows, r16, 0, C);
        const uint32_t KT = t_.pv_base_k;
        for (uint32_t n0 = 0; n0 < Dl; n0 += passN) {
            const uint32_t span = Min(passN, Dl - n0), tiles = CeilDiv(span, TN);
            LocalTensor<float> acc[MAX_PASS_TILES];  // L0C's two buffers
            for (uint32_t i = 0; i < tiles; ++i) acc[i] = carry != nullptr ? *carry : l0c_.AllocTensor<float>();
            for (uint32_t k0 = 0; k0 < C; k0 += KT) {
                const uint32_t kt = Min(KT, C - k0), kBlocks = AlignUp(kt, 16) / 16;
                // Where this k step's P and latent fractals are: in the held buffers at column (row) k0,
                // or in freshly staged tiles at 0.
                LocalTensor<T> keys = t.keys;
                uint32_t pk0 = k0, kk0 = k0, kp = P, kn0 = n0;
                if (!PWhole()) {
                    pm = LoadP(m0, rows, r16, k0, kt);
                    pk0 = 0;
                }
                if (Streamed()) {
                    keys = kL1_.AllocTensor<T>();
                    kp = kBlocks * 16;
                    kk0 = 0;
                    kn0 = 0;
                    Stage(keys, t.b, static_cast<uint32_t>(t.c0) + k0, kt, kp, n0, span, false);
                    kL1_.EnQue(keys);
                    keys = kL1_.DeQue<T>();
                }
                LoadA(pm, pk0 / 16 * r16 * 16, r16, kBlocks);
                // latent [C, Dl] is B as stored: each 16 x 16 fractal transposed, per 16 keys the tile's
                // column blocks (a column block of the NZ apart). Every tile's B before the products, so
                // that the staging buffers are free as early as with one tile.
                for (uint32_t i = 0; i < tiles; ++i) {
                    const uint32_t nBlocks = AlignUp(Min(TN, span - i * TN), 16) / 16;
                    const uint32_t col0 = (kn0 + i * TN) / 16;
                    LocalTensor<T> bt = l0b_.AllocTensor<T>();
                    for (uint32_t kb = 0; kb < kBlocks; ++kb) {
                        LoadData(bt[kb * nBlocks * FRAC], keys[(col0 * kp + kk0 + kb * 16) * 16],
                                 LoadData2DParams(0, static_cast<uint8_t>(nBlocks), static_cast<uint16_t>(kp / 16), 0,
                                                  0, true, 0));
                    }
                    l0b_.EnQue(bt);
                }
                if (Streamed()) kL1_.FreeTensor(keys);
                if (!PWhole()) pL1_.FreeTensor(pm);
                LocalTensor<T> a = l0a_.DeQue<T>();
                for (uint32_t i = 0; i < tiles; ++i) {
                    MultiplyB(acc[i], a, rows, Min(TN, span - i * TN), kt, k0 == 0 && init);
                }
                l0a_.FreeTensor(a);
            }
            if (carry == nullptr) {
                for (uint32_t i = 0; i < tiles; ++i) {
                    Store(l0c_, acc[i], o[static_cast<uint64_t>(m0) * Dl + n0 + i * TN], rows, Min(TN, span - i * TN),
                          r16, Dl);
                }
            }
        }
        if (PWhole()) pL1_.FreeTensor(pm);
    }

    // O = P . latent of task t for f32 through the Matmul API on this cube core, operands in GM: per base
    // tile of O the products of the chunk's runs summed in L0C (Iterate with enPartialSum), written once
    // into `o`.
    __aicore__ inline void OutputMatmul(const Pending& t, const GlobalTensor<float>& o) {
        const uint32_t Dl = t_.latent_dim, b = t.b, c0 = static_cast<uint32_t>(t.c0), C = t.C;
        for (uint32_t m0 = 0; m0 < G_; m0 += t_.pv_base_m) {
            const uint32_t rows = Min(t_.pv_base_m, G_ - m0);
            for (uint32_t n0 = 0; n0 < Dl; n0 += t_.pv_base_n) {
                const uint32_t cols = Min(t_.pv_base_n, Dl - n0);
                for (uint32_t p = 0; p < C;) {
                    const uint32_t pos = c0 + p;
                    const uint64_t slot = Slot(b, pos);
                    const uint32_t n = Run(b, pos, C - p);
                    mmPv.SetOrgShape(G_, Dl, pPitch_, pPitch_);
                    mmPv.SetTensorA(pWs_[pAt_ + static_cast<uint64_t>(m0) * pPitch_ + p]);
                    mmPv.SetTensorB(latentGm_[slot * Dl + n0]);
                    mmPv.SetTail(static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(n));
                    mmPv.Iterate(p > 0);
                    p += n;
                }
                mmPv.GetTensorC(o[static_cast<uint64_t>(m0) * Dl + n0]);
                mmPv.End();
            }
        }
    }

    // Score rows [r0, r0 + R) of the task's C columns into a buffer of scQue_, queued for Softmax.
    __aicore__ inline void LoadScores(uint32_t r0, uint32_t R, uint32_t C) {
        const uint32_t P = t_.pitch;
        LocalTensor<float> sc = scQue_.AllocTensor<float>();
        const uint32_t f32Gap = (P * sizeof(float) - AlignUp(C * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(sc, scoresWs_[scoreAt_ + static_cast<uint64_t>(r0) * P],
                    DataCopyExtParams(static_cast<uint16_t>(R), C * static_cast<uint32_t>(sizeof(float)),
                                      (P - C) * static_cast<uint32_t>(sizeof(float)), f32Gap, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        scQue_.EnQue(sc);
    }

    // Rows [r0, r0 + R) of task k's scores (sequence b), which LoadScores queued (C > 0; this first asks
    // it for the next slab's `nextRows` rows): mask, max, exp, sum; P rows in t and (m, l) out. With carry
    // (R = all of this vector core's rows), exp's offset is the rows' segment reference (see the head of
    // the file) and the task's segment word goes out too. The task of a `whole` sequence (WholeTask) sees
    // every key its rows see: instead of (m, l) its rows' lse go to the output, and 1 / l to invL_.
    __aicore__ inline void Softmax(uint32_t k, uint32_t b, uint32_t r0, uint32_t R, int64_t len, uint32_t c0,
                                   uint32_t C, bool groupStart, bool whole, uint32_t nextRows) {
        const uint32_t P = t_.pitch;
        const uint32_t RP = AlignUp(R, 8);  // in ml: m at 0, l at RP, the segment word at 2 RP
        LocalTensor<float> ml;
        if (!whole) ml = mlQue_.AllocTensor<float>();
        LocalTensor<T> pt = pQue_.AllocTensor<T>();
        bool fresh = groupStart;
        if (C > 0) {
            LocalTensor<float> sc = scQue_.DeQue<float>();
            if (nextRows > 0) LoadScores(r0 + R, nextRows, C);
            // Whole-slab instructions (dsnpu_kernels/row_ops.h): one per 64-column segment for all R rows,
            // where per-row instructions would pay their issue R times. small_ holds the rows' maxima,
            // sums and negated exp offsets (a vector of V each) and their broadcast blocks.
            const RowTile tile{R, C, P};
            const uint32_t V = AlignUp(R, 8);
            LocalTensor<float> vec = small_.Get<float>();
            LocalTensor<float> rowMax = vec, rowSum = vec[V], negOffset = vec[2 * V], bcast = vec[3 * V];
            LocalTensor<float> work = work_.Get<float>();
            bool live[MAX_SLAB_ROWS];
            float m[MAX_SLAB_ROWS];
            // 1. scale, causal mask (at most S - 1 positions of the last chunk; -inf over a row that sees
            // none, whose offset is then 0 and its p 0), the rows' maxima. A positive scale is not a pass
            // of its own: max(scale s) = scale max(s) (rounding is monotonic), so the maxima come from the
            // raw scores and scale s - offset is one FusedMulAdd in step 2.
            const bool fold = scale_ > 0.0f;
            if (!fold) TileMuls(sc, scale_, tile);
            int64_t vis[MAX_SLAB_ROWS];
            bool partial = false;
            for (uint32_t i = 0; i < R; ++i) {
                const uint32_t s = (r0 + i) / t_.heads;
                vis[i] = len - static_cast<int64_t>(t_.s_q) + s + 1 - c0;  // visible columns of the chunk
                if (vis[i] > C) vis[i] = C;
                live[i] = vis[i] > 0;
                if (!live[i]) Duplicate(sc[i * P], NEG_INF, static_cast<int32_t>(C));
                partial = partial || (live[i] && vis[i] < C);
            }
            if (partial) {
                SetFlag<HardEvent::V_S>(0);
                WaitFlag<HardEvent::V_S>(0);
                for (uint32_t i = 0; i < R; ++i) {
                    for (int64_t j = live[i] ? vis[i] : C; j < C; ++j) sc.SetValue(i * P + static_cast<uint32_t>(j), NEG_INF);
                }
                SetFlag<HardEvent::S_V>(0);
                WaitFlag<HardEvent::S_V>(0);
            }
            RowMax(rowMax, sc, work, tile);
            if (fold) Muls(rowMax, rowMax, scale_, static_cast<int32_t>(R));
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            for (uint32_t i = 0; i < R; ++i) m[i] = live[i] ? rowMax.GetValue(i) : NEG_INF;
            // The exp offsets: the maxima, or with carry the segment's references (a new segment when a
            // row's max rose past its reference's headroom).
            if (Carry()) {
                for (uint32_t i = 0; i < R; ++i) {
                    if (live[i] && mRef_[i] > NEG_INF && m[i] > mRef_[i] + CARRY_HEADROOM) fresh = true;
                }
                for (uint32_t i = 0; i < R; ++i) {
                    if (fresh) mRef_[i] = NEG_INF;
                    if (live[i] && mRef_[i] == NEG_INF) mRef_[i] = m[i];
                    m[i] = mRef_[i];
                }
            }
            for (uint32_t i = 0; i < R; ++i) negOffset.SetValue(i, live[i] ? -m[i] : 0.0f);
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            // 2. p = exp(s - m), the rows' sums.
            RowBroadcast(bcast, negOffset, R);
            if (fold) {
                RowScaleAdd(sc, vec[11 * AlignUp(t_.softmax_rows, 8)], bcast, tile);  // the block Init filled
            } else {
                RowAdd(sc, bcast, tile);
            }
            TileExp(sc, tile);
            RowSum(rowSum, sc, work, tile);
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            if (whole) {
                KeepInverse(r0, tile.rows, live, rowMax, rowSum);
            } else {
                WaitMlCopy();
                for (uint32_t i = 0; i < R; ++i) {
                    ml.SetValue(i, m[i]);
                    ml.SetValue(RP + i, live[i] ? rowSum.GetValue(i) : 0.0f);
                }
            }
            FromFloat(pt, sc, R * P);
            scQue_.FreeTensor(sc);
            if (whole) WriteLse(b, r0, R, rowSum);
        } else {
            WaitMlCopy();
            for (uint32_t i = 0; i < R; ++i) {
                if (Carry() && fresh) mRef_[i] = NEG_INF;
                ml.SetValue(i, Carry() ? mRef_[i] : NEG_INF);
                ml.SetValue(RP + i, 0.0f);
            }
        }
        if (Carry() && !whole) ml.SetValue(2 * RP, fresh ? 1.0f : 0.0f);
        // P first: the (m, l) copy below waits for its own completion, which P's need not.
        pQue_.EnQue(pt);
        pt = pQue_.DeQue<T>();
        if (C > 0) {
            const uint32_t tGap = (P * sizeof(T) - AlignUp(C * sizeof(T), UB_BLOCK)) / UB_BLOCK;
            DataCopyPad(pWs_[pAt_ + static_cast<uint64_t>(r0) * pPitch_], pt,
                        DataCopyExtParams(static_cast<uint16_t>(R), C * static_cast<uint32_t>(sizeof(T)), tGap,
                                          (pPitch_ - C) * static_cast<uint32_t>(sizeof(T)), 0));
        }
        pQue_.FreeTensor(pt);
        if (whole) return;
        mlQue_.EnQue(ml);
        ml = mlQue_.DeQue<float>();
        // (m, l) were written on the scalar unit: the queue's V->MTE3 edge does not cover them, so
        // MTE3 waits for S, and the next slab's scalar writes wait for this copy (MTE3->S, WaitMlCopy:
        // there, not here, so that the scalar unit goes on issuing meanwhile).
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
        // Task k's m of all G rows, then their l (the combine reads a row slab of each across tasks).
        const DataCopyExtParams run(1, R * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
        DataCopyPad(mlWs_[static_cast<uint64_t>(k) * 2 * G_ + r0], ml, run);
        DataCopyPad(mlWs_[static_cast<uint64_t>(k) * 2 * G_ + G_ + r0], ml[RP], run);
        if (Carry()) {
            DataCopyPad(segWs_[static_cast<uint64_t>(k) * SEG_WORDS + 8 * static_cast<uint64_t>(GetSubBlockIdx())], ml[2 * RP],
                        DataCopyExtParams(1, static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
        }
        SetFlag<HardEvent::MTE3_S>(0);
        mlCopyPending_ = true;
        mlQue_.FreeTensor(ml);
    }

    // A whole sequence's rows [r0, r0 + R): 1 / l into invL_ for FinishWhole (0 for a row that sees no
    // key: its O is 0), and rowSum = lse = m + ln l (rowMax holds m: -inf, l = 0 for such a row). Mutation
    // 2 (the denominator) scales l by 1.001 here as in the combine.
    __aicore__ inline void KeepInverse(uint32_t r0, uint32_t R, const bool* live, const LocalTensor<float>& rowMax,
                                       const LocalTensor<float>& rowSum) {
        const float mutate = t_.mutation == 2 ? MUTATE : 1.0f;
        const LocalTensor<float> inv = invL_.Get<float>();
        for (uint32_t i = 0; i < R; ++i) {
            inv.SetValue(invAt_ + r0 - myRow0_ + i, live[i] ? 1.0f / (rowSum.GetValue(i) * mutate) : 0.0f);
        }
        const int32_t n = static_cast<int32_t>(R);
        if (mutate != 1.0f) Muls(rowSum, rowSum, mutate, n);
        Ln(rowSum, rowSum, n);
        Add(rowSum, rowSum, rowMax, n);
    }

    // lse[b, h, s] of rows [r0, r0 + R) of sequence b from `lse` (R values): a 32-byte block per row,
    // one copy per run of rows of one query position s (consecutive heads, s_q floats apart in GM).
    __aicore__ inline void WriteLse(uint32_t b, uint32_t r0, uint32_t R, const LocalTensor<float>& lse) {
        LocalTensor<float> blocks = wholeLseQue_.AllocTensor<float>();
        Brcb(blocks, lse, static_cast<uint8_t>(CeilDiv(R, 8)), BrcbRepeatParams(1, 8));
        wholeLseQue_.EnQue(blocks);
        blocks = wholeLseQue_.DeQue<float>();
        const uint32_t H = t_.heads, per = UB_BLOCK / sizeof(float);
        for (uint32_t i = 0; i < R;) {
            const uint32_t row = r0 + i, s = row / H, h = row % H, n = Min(R - i, H - h);
            DataCopyPad(lseGm_[(static_cast<uint64_t>(b) * H + h) * t_.s_q + s], blocks[i * per],
                        DataCopyExtParams(static_cast<uint16_t>(n), static_cast<uint32_t>(sizeof(float)), 0,
                                          (t_.s_q - 1) * static_cast<uint32_t>(sizeof(float)), 0));
            i += n;
        }
        wholeLseQue_.FreeTensor(blocks);
    }

    // Waits for the last (m, l) copy (SetFlag MTE3_S at its issue) before the scalar unit writes
    // (m, l) again, or before phase 1's buffers go.
    __aicore__ inline void WaitMlCopy() {
        if (mlCopyPending_) WaitFlag<HardEvent::MTE3_S>(0);
        mlCopyPending_ = false;
    }


    // ---------------------------------------------------------------- phase 2: combine the partials
    __aicore__ inline void InitPhase2() {
        const uint32_t Q = t_.combine_rows, L = t_.latent_pitch, K = t_.combine_tasks;
        pipe_.InitBuffer(acc_, Q * L * sizeof(float));
        pipe_.InitBuffer(oQue_, BUFFER_NUM, Q * L * sizeof(float));
        pipe_.InitBuffer(outQue_, BUFFER_NUM, Q * L * sizeof(T));
        pipe_.InitBuffer(lseQue_, BUFFER_NUM, AlignUp(Q, 8) * UB_BLOCK);
        // The (m, l) of K tasks (m then l, a task's Q values padded to whole 32-byte blocks); their weights and
        // the folds' scratch, the same size; then the rows' M, floored M, L and 1 / L (a block each).
        const uint32_t QP = AlignUp(Q, 8);
        pipe_.InitBuffer(mlBuf_, 2 * K * QP * sizeof(float));
        pipe_.InitBuffer(wBuf_, (2 * K * QP + 4 * QP) * sizeof(float));
        if (Carry()) pipe_.InitBuffer(segBuf_, K * SEG_WORDS * sizeof(float));
    }

    // Whether task g + i of a sequence whose tasks end at k1 ends a segment whatever its scores: without
    // carry every task; with carry the sequence's last task and a block's last (the next task starts a
    // block: its cube core's group, and so a segment, starts there). Ends() says for certain.
    __aicore__ inline bool Predicted(uint32_t g, uint32_t i, uint32_t k1) const {
        const uint32_t next = g + i + 1;
        if (!Carry() || next >= k1) return true;
        // Whether the first run that starts at or after `next` starts there.
        const uint64_t tasks = t_.tasks, blocks = GetBlockNum();
        return RunStart((static_cast<uint64_t>(next) * blocks + tasks - 1) / tasks) == next;
    }

    // With carry: the segment words of tasks [k0 + 1, k0 + 1 + n) of a sequence whose tasks end at k1 into
    // segBuf_, for Ends (one copy, waited for with LoadMl's); nothing without carry (every task has its
    // partial).
    __aicore__ inline void LoadSegments(uint32_t k0, uint32_t n, uint32_t k1) {
        const uint32_t m = k0 + 1 + n <= k1 ? n : k1 - k0 - 1;
        if (!Carry() || m == 0) return;
        // Each word (the first 4 bytes of its 32, the rest never written) into a 32-byte block of its own.
        DataCopyPad(segBuf_.Get<float>(), segWs_[static_cast<uint64_t>(k0 + 1) * SEG_WORDS],
                    DataCopyExtParams(static_cast<uint16_t>(2 * m), static_cast<uint32_t>(sizeof(float)),
                                      UB_BLOCK - static_cast<uint32_t>(sizeof(float)), 0, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
    }

    // Whether task k0 + i (of the group LoadSegments loaded) ends a segment, so that its partial holds
    // the segment's sum: always without carry; with carry, the sequence's last task or one whose next
    // task starts a segment.
    __aicore__ inline bool Ends(uint32_t k0, uint32_t i, uint32_t k1) {
        if (!Carry() || k0 + i + 1 >= k1) return true;
        const LocalTensor<float> seg = segBuf_.Get<float>();
        return seg.GetValue(i * SEG_WORDS) != 0.0f || seg.GetValue(i * SEG_WORDS + 8) != 0.0f;
    }

    // m and l of rows [r0, r0 + Q) of tasks [k0, k0 + n): task i's m at i * QP of mlBuf_, its l at
    // i * QP of its second half (QP = Q rounded up to 8: whole 32-byte blocks per task, padded with -inf
    // and 0), for the vector unit; with `k1` (the sequence's end) the group's segment words too
    // (LoadSegments). WaitMl waits for them.
    __aicore__ inline void LoadMl(uint32_t k0, uint32_t n, uint32_t r0, uint32_t Q, uint32_t k1 = 0) {
        IssueMl(k0, n, r0, Q, k1);
        WaitMl();
    }

    // LoadMl's copies and the flags WaitMl waits for: copies issued in between (the first partials) are
    // not waited for, and their GM latency overlaps that of the (m, l).
    __aicore__ inline void IssueMl(uint32_t k0, uint32_t n, uint32_t r0, uint32_t Q, uint32_t k1) {
        const uint32_t QP = AlignUp(Q, 8);
        const LocalTensor<float> m = mlBuf_.Get<float>(), l = m[MlHalf()];
        // The previous group's vector and scalar reads are done before the copies overwrite them.
        SetFlag<HardEvent::V_MTE2>(0);
        WaitFlag<HardEvent::V_MTE2>(0);
        SetFlag<HardEvent::S_MTE2>(0);
        WaitFlag<HardEvent::S_MTE2>(0);
        const DataCopyExtParams rows(static_cast<uint16_t>(n), Q * static_cast<uint32_t>(sizeof(float)),
                                     (2 * G_ - Q) * static_cast<uint32_t>(sizeof(float)), 0, 0);
        const uint8_t pad = static_cast<uint8_t>(QP - Q);
        const uint64_t at = static_cast<uint64_t>(k0) * 2 * G_ + r0;
        DataCopyPad(m, mlWs_[at], rows, DataCopyPadExtParams<float>(pad > 0, 0, pad, NEG_INF));
        DataCopyPad(l, mlWs_[at + G_], rows, DataCopyPadExtParams<float>(pad > 0, 0, pad, 0.0f));
        if (k1 > 0) LoadSegments(k0, n, k1);
        SetFlag<HardEvent::MTE2_V>(0);
        SetFlag<HardEvent::MTE2_S>(0);
    }
    __aicore__ inline void WaitMl() {
        WaitFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
    }
    // Where the l of a group start in mlBuf_ (and the folds' scratch in wBuf_): after the m of as many
    // tasks as the buffer holds at combine_rows.
    __aicore__ inline uint32_t MlHalf() const { return t_.combine_tasks * AlignUp(t_.combine_rows, 8); }

    // Partials of rows [r0, r0 + Q), latent columns [c0, c0 + nc), of the np tasks ends[0 .. np) (of the
    // group at g) into a buffer of oQue_, queued.
    __aicore__ inline void LoadPartials(uint32_t g, const uint32_t* ends, uint32_t np, uint32_t r0, uint32_t Q,
                                        uint32_t c0, uint32_t nc) {
        const uint32_t L = t_.latent_pitch, Dl = t_.latent_dim;
        const uint32_t gap = (L - AlignUp(nc, 8)) * sizeof(float) / UB_BLOCK;
        LocalTensor<float> o = oQue_.AllocTensor<float>();
        for (uint32_t e = 0; e < np; ++e) {
            DataCopyPad(o[e * Q * L], partialWs_[(static_cast<uint64_t>(g + ends[e]) * G_ + r0) * Dl + c0],
                        DataCopyExtParams(static_cast<uint16_t>(Q), nc * static_cast<uint32_t>(sizeof(float)),
                                          (Dl - nc) * static_cast<uint32_t>(sizeof(float)), gap, 0),
                        DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        }
        oQue_.EnQue(o);
    }

    // buf[r] = max (or sum) over tasks i < n of buf[i * QP + r], for r < QP: a fold in halves, each step
    // one instruction over the upper tasks into the lower ones.
    __aicore__ inline void FoldTasks(const LocalTensor<float>& buf, uint32_t n, uint32_t QP, bool max) {
        for (uint32_t cnt = n; cnt > 1;) {
            const uint32_t h = cnt / 2;
            const LocalTensor<float> upper = buf[(cnt - h) * QP];
            if (max) {
                Max(buf, buf, upper, static_cast<int32_t>(h * QP));
            } else {
                Add(buf, buf, upper, static_cast<int32_t>(h * QP));
            }
            cnt -= h;
        }
    }

    // dst[i * QP + r] = a[i * QP + r] - v[r] (sub) or * v[r], tasks i < n: one repeat per task, v read
    // again by each (its repeat stride 0); with QP = 8 (a task's rows one block) eight tasks per repeat,
    // v's block read for each of them (its block stride 0 too), the last repeat masked to the tasks left.
    __aicore__ inline void EachTask(const LocalTensor<float>& dst, const LocalTensor<float>& a,
                                    const LocalTensor<float>& v, uint32_t n, uint32_t QP, bool sub) {
        const auto op = [&](uint32_t at, uint64_t mask, uint32_t repeats, const BinaryRepeatParams& p) {
            for (uint32_t i = 0; i < repeats; i += 255) {
                const uint8_t k = static_cast<uint8_t>(Min(255u, repeats - i));
                const uint32_t o = at + i * p.dstRepStride * 8;
                if (sub) {
                    Sub(dst[o], a[o], v, mask, k, p);
                } else {
                    Mul(dst[o], a[o], v, mask, k, p);
                }
            }
        };
        if (QP == 8) {
            const uint32_t full = n / 8, rest = n % 8;
            const BinaryRepeatParams p(1, 1, 0, 8, 8, 0);
            if (full > 0) op(0, 64, full, p);
            if (rest > 0) op(full * 64, rest * 8, 1, p);
            return;
        }
        const uint8_t rep = static_cast<uint8_t>(QP / 8);
        op(0, QP, n, BinaryRepeatParams(1, 1, 1, rep, rep, 0));
    }

    // The loaded group's weights w[i * QP + r] = exp(m - M'[r]) (M' the rows' maxima floored at -FLT_MAX,
    // so a task that saw none of a row's keys, m = -inf, weighs 0, never NaN).
    __aicore__ inline LocalTensor<float> Weights(uint32_t n, uint32_t QP, const LocalTensor<float>& mFloor) {
        const LocalTensor<float> w = wBuf_.Get<float>();
        EachTask(w, mlBuf_.Get<float>(), mFloor, n, QP, true);
        Exp(w, w, static_cast<int32_t>(n * QP));
        return w;
    }

    // Tasks whose (m, l) of Q rows the combine loads at once: the tiling's combine_tasks are sized for
    // slabs of combine_rows; a slab of fewer rows fits more in the same buffers (with carry the segment
    // words' buffer, one block per task, keeps combine_tasks), up to the ends' array.
    __aicore__ inline uint32_t GroupTasks(uint32_t Q) const {
        const uint32_t K = t_.combine_tasks, R = t_.combine_rows;
        if (Carry() || Q >= R) return K;
        return Min(MLA_COMBINE_TASKS_MAX, K * AlignUp(R, 8) / AlignUp(Q, 8));
    }

    // Rows [r0, r0 + Q) of sequence b (all in b), latent columns [c0, c0 + nc) (all of them unless
    // given; the lse with column 0), its tasks' (m, l) taken GroupTasks(Q) at a time. The (m, l) are
    // reduced over the tasks on the vector unit (FoldTasks): M = max m, w = exp(m - M), L = sum w l;
    // the scalar unit only reads each partial's weight w / L.
    __aicore__ inline void Combine(uint32_t b, uint32_t r0, uint32_t Q, uint32_t c0 = 0, uint32_t nc = 0) {
        const uint32_t L = t_.latent_pitch, Dl = t_.latent_dim, K = GroupTasks(Q), QP = AlignUp(Q, 8);
        if (nc == 0) nc = Dl;
        int64_t first = planGm_.GetValue(2 * static_cast<uint64_t>(b));
        int64_t count = planGm_.GetValue(2 * static_cast<uint64_t>(b) + 1);
        if (first < 0) first = 0;
        if (count < 0) count = 0;
        if (first > t_.tasks) first = t_.tasks;
        if (first + count > t_.tasks) count = t_.tasks - first;
        const uint32_t k0 = static_cast<uint32_t>(first), k1 = static_cast<uint32_t>(first + count);
        const LocalTensor<float> mv = mlBuf_.Get<float>(), lv = mv[MlHalf()];
        const LocalTensor<float> scratch = wBuf_.Get<float>()[MlHalf()];
        // The rows' M, M floored at -FLT_MAX, L and 1 / max(L, FLT_MIN) (a task that saw none of a row's
        // keys has w = 0, so a row no task saw gets weights 0 and L = 0, out 0 and lse -inf).
        const LocalTensor<float> mMax = scratch[MlHalf()], mFloor = mMax[QP], lSum = mFloor[QP], lInv = lSum[QP];
        const int32_t qp = static_cast<int32_t>(QP);
        const bool oneGroup = k1 - k0 <= K;
        const uint32_t perCopy = t_.combine_rows / Q > 0 ? t_.combine_rows / Q : 1;
        // With one group, the first partials are asked for before the (m, l) are waited for, so that the
        // two GM latencies overlap (the weights do not decide which partials to load): up to perCopy of
        // the tasks that end a segment whatever the scores did (Predicted), in order.
        uint32_t ends[MLA_COMBINE_TASKS_MAX];
        const bool early = oneGroup && k1 > k0;
        uint32_t asked = 0;  // ends already asked for (the first batch)
        Duplicate(mMax, NEG_INF, qp);
        for (uint32_t g = k0; g < k1; g += K) {
            const uint32_t n = Min(K, k1 - g);
            if (early) {
                IssueMl(g, n, r0, Q, k1);
                for (uint32_t i = 0; i < n && asked < perCopy; ++i) {
                    if (Predicted(g, i, k1)) ends[asked++] = i;
                }
                LoadPartials(g, ends, asked, r0, Q, c0, nc);
                WaitMl();
            } else {
                LoadMl(g, n, r0, Q, oneGroup ? k1 : 0);
            }
            Adds(scratch, mv, 0.0f, static_cast<int32_t>(n * QP));
            FoldTasks(scratch, n, QP, true);
            Max(mMax, mMax, scratch, qp);
        }
        Maxs(mFloor, mMax, -FLT_MAX_VALUE, qp);
        Duplicate(lSum, 0.0f, qp);
        for (uint32_t g = k0; g < k1; g += K) {
            const uint32_t n = Min(K, k1 - g);
            if (!oneGroup) LoadMl(g, n, r0, Q);
            const LocalTensor<float> w = Weights(n, QP, mFloor);
            Mul(scratch, w, lv, static_cast<int32_t>(n * QP));
            FoldTasks(scratch, n, QP, false);
            Add(lSum, lSum, scratch, qp);
        }
        if (t_.mutation == 2) Muls(lSum, lSum, MUTATE, qp);
        Maxs(lInv, lSum, FLT_MIN_VALUE, qp);
        Reciprocal(lInv, lInv, qp);
        // out = sum_k (w_k / L) O_k over the tasks that end a segment (every task without carry), the
        // partials streamed through a double-buffered queue of combine_rows rows: a slab of fewer rows
        // takes several tasks' partials per buffer, their copies in flight together.
        LocalTensor<float> acc = acc_.Get<float>();
        Duplicate(acc, 0.0f, static_cast<int32_t>(Q * L));
        for (uint32_t g = k0; g < k1; g += K) {
            const uint32_t n = Min(K, k1 - g);
            if (!oneGroup) LoadMl(g, n, r0, Q, k1);
            // c = w / L per task and row, for the scalar unit (the Axpy factors); one group's w are still
            // where the sum of L left them.
            const LocalTensor<float> c = oneGroup ? wBuf_.Get<float>() : Weights(n, QP, mFloor);
            EachTask(c, c, lInv, n, QP, false);
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            // The ends in the order their partials are consumed (oQue_ is FIFO): those asked for early
            // first, then the others.
            uint32_t nEnds = asked;
            for (uint32_t i = 0; i < n; ++i) {
                const bool wasAsked = asked > 0 && i <= ends[asked - 1] && Predicted(g, i, k1);
                if (!wasAsked && Ends(g, i, k1)) ends[nEnds++] = i;
            }
            // Batch by batch, the next batch's copies in flight while this one is added.
            uint32_t np = early ? asked : Min(perCopy, nEnds);
            if (!early && np > 0) LoadPartials(g, ends, np, r0, Q, c0, nc);
            for (uint32_t e0 = 0; e0 < nEnds;) {
                const uint32_t e1 = e0 + np;
                const uint32_t nextNp = e1 < nEnds ? Min(perCopy, nEnds - e1) : 0;
                if (nextNp > 0) LoadPartials(g, &ends[e1], nextNp, r0, Q, c0, nc);
                LocalTensor<float> o = oQue_.DeQue<float>();
                for (uint32_t e = 0; e < np; ++e) {
                    const uint32_t i = ends[e0 + e];
                    // Predicted, yet extended by the next task (not expected: see Predicted).
                    if (e0 + e < asked && !Ends(g, i, k1)) continue;
                    for (uint32_t r = 0; r < Q; ++r) {
                        float f = c.GetValue(i * QP + r);
                        // This segment saw none of the row's keys (its O was not written), or weighs nothing.
                        if (f == 0.0f) continue;
                        if (t_.mutation == 3) f *= MUTATE;
                        SetFlag<HardEvent::S_V>(0);
                        WaitFlag<HardEvent::S_V>(0);
                        Axpy(acc[r * L], o[(e * Q + r) * L], f, static_cast<int32_t>(nc));
                    }
                }
                oQue_.FreeTensor(o);
                e0 = e1;
                np = nextNp;
            }
            // The factors' scalar reads are done before the next group's vector writes.
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
        }
        LocalTensor<T> out = outQue_.AllocTensor<T>();
        FromFloat(out, acc, Q * L);
        outQue_.EnQue(out);
        out = outQue_.DeQue<T>();
        const uint32_t tGap = (L * sizeof(T) - AlignUp(nc * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(outGm_[(static_cast<uint64_t>(b) * G_ + r0) * Dl + c0], out,
                    DataCopyExtParams(static_cast<uint16_t>(Q), nc * static_cast<uint32_t>(sizeof(T)), tGap,
                                      (Dl - nc) * static_cast<uint32_t>(sizeof(T)), 0));
        outQue_.FreeTensor(out);
        if (c0 > 0) return;  // the lse is column 0's
        // lse[b, h, s] = M + ln L (ln 0 = -inf for a row no task saw), then a 32-byte UB block per row.
        Ln(lSum, lSum, qp);
        Add(lSum, lSum, mFloor, qp);
        LocalTensor<float> lse = lseQue_.AllocTensor<float>();
        const uint32_t per = UB_BLOCK / sizeof(float);
        Brcb(lse, lSum, static_cast<uint8_t>(QP / 8), BrcbRepeatParams(1, 8));
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
    TCubeTiling pv;
    MmPv mmPv;

private:
    TQue<TPosition::A1, 1> qL1_;
    LocalTensor<T> q_;  // the query panel held in qL1_ (QueryPanel): rows [qM0_, ..) of sequence qB_
    bool qHeld_ = false;
    uint32_t qB_ = 0, qM0_ = 0;
    TQue<TPosition::A1, 2> pL1_;
    TQue<TPosition::B1, 2> kL1_;
    TQue<TPosition::A2, 2> l0a_;
    TQue<TPosition::B2, 2> l0b_;
    TQue<TPosition::CO1, 2> l0c_;
    TQue<TPosition::CO1, 1> carryL0c_;
    TQue<TPosition::VECIN, BUFFER_NUM> scQue_, oQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> pQue_, mlQue_, wholeLseQue_, outQue_, lseQue_;
    TBuf<TPosition::VECCALC> work_, small_, invL_, acc_, mlBuf_, wBuf_, segBuf_;
    GlobalTensor<T> qNopeGm_, qRopeGm_, latentGm_, ropeGm_, outGm_, pWs_;
    GlobalTensor<float> lseGm_, scoresWs_, partialWs_, mlWs_, segWs_, wholeWs_;
    GlobalTensor<int32_t> tableGm_, lensGm_, planGm_;
    DsnpuMlaDecodeTiling t_{};
    uint32_t G_ = 0, pPitch_ = 0, myRow0_ = 0, myRows_ = 0;
    // Carry, vector cores: the sequence of the previous task, this core's rows' segment references.
    uint32_t prevB_ = 0;
    float mRef_[MAX_SLAB_ROWS] = {};
    // Whole sequences, vector cores: the tasks seen and finished, where the latest's 1 / l go in invL_,
    // and whether (and of which sequence) one is still to finish.
    uint32_t wholeSeen_ = 0, invAt_ = 0, wholeB_ = 0;
    bool wholePending_ = false;
    // Carry, cube core: the segment's sum in L0C (while carrying_), and its last task so far.
    LocalTensor<float> carry_;
    bool carrying_ = false, carryWhole_ = false;
    uint32_t wholeDone_ = 0;  // whole-sequence tasks this core finished (its share of them, both core kinds)
    bool mlCopyPending_ = false;  // a (m, l) copy's MTE3_S flag is set and not yet waited for
    uint32_t carryK_ = 0;
    uint64_t scoreElems_ = 0, scoreAt_ = 0, pAt_ = 0;
    float scale_ = 1.0f;
};

template <typename T>
__aicore__ inline void MlaDecode(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR latent, GM_ADDR rope, GM_ADDR blockTable,
                                 GM_ADDR seqLens, GM_ADDR plan, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace,
                                 GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaDecodeTiling, t, tiling);
    // The same tiling on every core: all return here, or none.
    if (t.s_q == 0 || t.heads == 0 || t.latent_dim == 0 || t.pitch == 0 || t.combine_rows > MAX_SLAB_ROWS ||
        t.softmax_rows > MAX_SLAB_ROWS || t.softmax_rows == 0 || t.combine_rows == 0 ||
        !RowTile{t.softmax_rows, t.pitch, t.pitch}.Valid() || t.work_elems < 64 * t.softmax_rows ||
        (t.key_buffers == 0 && sizeof(T) != 2) || t.key_buffers > 2 || t.combine_tasks > MLA_COMBINE_TASKS_MAX ||
        (sizeof(T) != 2 && t.p_whole != 0) || (sizeof(T) == 2 && t.key_buffers != 0 && t.p_whole == 0) ||
        (t.carry != 0 && (sizeof(T) != 2 || t.key_buffers == 0 || t.s_q * t.heads < 2 ||
                          t.pv_base_m < t.s_q * t.heads || t.pv_base_n < t.latent_dim ||
                          t.qk_base_m * t.qk_base_n * 4 > L0C_BUF / 2 ||
                          t.softmax_rows < (t.s_q * t.heads + 1) / 2)) || t.qk_base_m == 0 || t.qk_base_n == 0 || t.qk_base_k == 0 || t.pv_base_m == 0 ||
        t.pv_base_n == 0 || t.pv_base_k == 0 || t.pv_pass_tiles == 0 || t.pv_pass_tiles > MAX_PASS_TILES ||
        (t.pv_pass_tiles > 1 && t.carry != 0)) {
        return;
    }
    KernelMlaDecode<T> op;
    op.Init(qNope, qRope, latent, rope, blockTable, seqLens, plan, out, lse, workspace, t);
    if ASCEND_IS_AIC {
        op.CubeProcess();
    } else {
        op.Process();
    }
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
