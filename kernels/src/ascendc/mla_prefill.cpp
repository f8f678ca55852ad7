/*
 * mla_prefill_<t> (t = f32, f16, bf16): flash-style causal attention over packed variable-length
 * sequences, the expanded MLA form of prefill (the contract is dsnpu-ops' mla::mla_prefill_varlen;
 * flash-attention's varlen forward with bottom-right causal alignment).
 *
 * Sequence b owns queries cu_q[b] .. cu_q[b+1] (Lq of them) and keys cu_k[b] .. cu_k[b+1] (Lk >= Lq: a
 * cached prefix of Lk - Lq keys, then the Lq new ones). Query i of the sequence, head h:
 *   score_j = scale * (q_nope[i,h] . k_nope[j,h] + q_rope[i,h] . k_rope[j,h]),  j <= Lk - Lq + i
 *   out[i,h] = t( sum_j softmax(score)_j * v[j,h] ),   lse[h,i] = ln sum_j exp(score_j)
 * Every operand is addressed as `off + token * tok + head * head_stride + d` (tiling fields), so the
 * launcher passes views without copies: q [T, H, 192] as q_nope (dn = 128) and q_rope (offset 128), the
 * kv_b_proj output [Tk, H, 128 + 128] as k_nope and v (offset 128), one shared k_rope row per key (head
 * stride 0), or the plain expanded form (dn = 192, dr = 0).
 *
 * Work: a task is (query tile of at most block_m rows of one sequence, head). Tasks are numbered head by
 * head (all query tiles of head 0, then of head 1, ...), the tiles of a head in zig-zag order (0, n-1, 1,
 * n-2, ...: a light causal tile next to a heavy one), and block b runs the contiguous run of tasks
 * [b * tasks / B, (b + 1) * tasks / B) (B blocks): the runs carry about the same work. Its two vector cores
 * take the run's pairs of tasks in turn (sub-block 0 tasks 0, 1, 4, 5, ... of the run, sub-block 1 tasks
 * 2, 3, 6, 7, ...; a pair is a light and a heavy tile), so both work on one head at a time and its keys
 * and values stay in the block's share of the L2 (a head's K and V are read from HBM about once per block
 * that touches the head, not once per query tile; with a contiguous half of the run each, the two cores
 * worked on two heads at once, whose K and V took the whole 8 MiB share, and re-read them from HBM).
 * There is no cross-block step. Per task, over key tiles of block_n keys up to the
 * tile's last visible key (flash attention: no [T, T] score matrix anywhere, the running max m, sum l
 * and f32 accumulator acc [block_m, dv] stay on the vector core, m and l as UB vectors):
 *   1. cube: S[M, N] = q_nope . k_nope^T (+ q_rope . k_rope^T, accumulated) into one of the vector core's
 *      two f32 score slots (Matmul API, operands in GM with their token strides as the original shape);
 *   2. vector, per slab of softmax_rows rows at the tile's full width block_n (the columns a row does not
 *      see, causally or past a short tile's N, set to -inf first), whole-slab instructions
 *      (dsnpu_kernels/row_ops.h; exp and the cast one instruction per slab): m' = max(m, scale rowmax),
 *      alpha = exp(m - m'), p = exp(scale s - m') (scale s - m' one FusedMulAdd when the scale is
 *      positive, else the scores scaled first), l = alpha l + sum p; p rounded to t into one of two P
 *      slots;
 *   3. cube: O[M, dv] = P . V into the f32 O workspace;
 *   4. vector: acc = alpha acc + O (one broadcast multiply, then an add per slab of out_rows rows).
 * Each key tile is a step s of one pipeline over the vector core's whole run of tasks:
 *   softmax of the first half of step s's rows   (cube: P . V of step s - 1)
 *   ask for step s + 1's scores                  (the request waits for that P . V)
 *   step 4 of step s - 1 (and its task's output if that was the task's last tile)
 *   softmax of the second half                   (cube: step s + 1's scores)
 *   ask for P . V of step s                      (the request waits for those scores)
 * The Matmul API keeps one request in flight per vector core (each request first waits for the one
 * before), so each request gets half a tile of vector work to hide behind. Score slots, P slots and alpha
 * alternate by step, m and l by task (a task's first step overlaps the last one's accumulation).
 * Then out = t(acc / l) (rows scattered with the head stride), lse = m + ln l (contiguous per head).
 * A 1:2 mix kernel: the vector cores run steps 2 and 4 and drive their cube core's Matmul for steps 1
 * and 3 (REGIST_MATMUL_OBJ; the cube core only serves).
 *
 * Workspace (bytes), the system workspace, then per vector core: S f32 [2, block_m, block_n] (two slots) |
 * P t [2, block_m, block_n] (two slots) | O f32 [block_m, dv].
 * UB (R = softmax_rows, RO = out_rows, N = block_n, D = dv_pitch, sz = sizeof(t)): block_m D 4 (acc)
 *   + 2 R N 4 (score queue) + 2 R N sz (P queue) + 2 RO D 4 (O queue) + 2 RO D sz (out queue)
 *   + 2 * round_up(block_m 4, 32) (lse queue) + work_elems 4 (= 64 R: the row folds) + 3 round_up(R, 8) 4
 *   (the slab's row maxima, sums and -m') + 32 (the scale, a block) + 6 block_m 4 (m and l of two tasks,
 *   alpha of two steps)
 *   + 32 block_m (per-row broadcast blocks). block_m, R and RO are multiples of 8.
 *
 * Test-only mutations (tiling.mutation, 0 in every normal launch; see tiling_mla_prefill.rs): 1 scales
 * the softmax scale by 1.001, 2 the final denominator l by 1.001, 3 the P weights fed to P . V by 1.001.
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
constexpr float FLT_MAX_VALUE = 3.402823466e38f;
constexpr float FLT_MIN_VALUE = 1.175494351e-38f;  // the smallest normal f32
constexpr float MUTATE = 1.001f;
constexpr uint32_t MAX_BLOCK_M = 128;
constexpr uint32_t MAX_SLAB_ROWS = 32;  // tiling_mla_prefill.rs caps softmax_rows at this

template <typename T>
class KernelMlaPrefill {
    using MmQk = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                        MatmulType<TPosition::GM, CubeFormat::ND, float>>;
    using MmPv = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T>, MatmulType<TPosition::GM, CubeFormat::ND, T>,
                        MatmulType<TPosition::GM, CubeFormat::ND, float>>;

public:
    __aicore__ inline void Init(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR kNope, GM_ADDR kRope, GM_ADDR v, GM_ADDR cuQ,
                                GM_ADDR cuK, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace,
                                const DsnpuMlaPrefillTiling& t) {
        t_ = t;
        scale_ = t.mutation == 1 ? t.scale * MUTATE : t.scale;
        qnGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(qNope), t.qn_len);
        knGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(kNope), t.kn_len);
        if (t.dr > 0) {
            qrGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(qRope), t.qr_len);
            krGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(kRope), t.kr_len);
        }
        vGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(v), t.v_len);
        cuQGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(cuQ), static_cast<uint64_t>(t.batch) + 1);
        cuKGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(cuK), static_cast<uint64_t>(t.batch) + 1);
        const uint64_t rowsOut = static_cast<uint64_t>(t.tokens_q) * t.heads;
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out), rowsOut * t.dv);
        lseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(lse), rowsOut);

        GM_ADDR ws = GetUserWorkspace(workspace);
        const uint64_t sElems = static_cast<uint64_t>(t.block_m) * t.block_n;
        const uint64_t oElems = static_cast<uint64_t>(t.block_m) * t.dv;
        const uint64_t perBlock = sElems * 2 * (sizeof(float) + sizeof(T)) + oElems * sizeof(float);
        GM_ADDR mine = ws + static_cast<uint64_t>(GetBlockIdx()) * perBlock;  // per vector core
        scoresWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine), 2 * sElems);  // two slots
        pWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(mine + 2 * sElems * sizeof(float)), 2 * sElems);
        oWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine + 2 * sElems * (sizeof(float) + sizeof(T))),
                             oElems);

        qk = ToCubeTiling(t.qk_cube);
        pv = ToCubeTiling(t.pv_cube);
    }

    // A vector core (after REGIST_MATMUL_OBJ made mmQk and mmPv its clients).
    __aicore__ inline void Process() {
        const uint64_t blocks = GetBlockNum(), block = GetBlockIdx() / GetTaskRation();
        const uint32_t R = t_.softmax_rows, RO = t_.out_rows, N = t_.block_n, D = t_.dv_pitch;
        pipe_.InitBuffer(acc_, t_.block_m * D * sizeof(float));
        pipe_.InitBuffer(scQue_, BUFFER_NUM, R * N * sizeof(float));
        pipe_.InitBuffer(pQue_, BUFFER_NUM, R * N * sizeof(T));
        pipe_.InitBuffer(oQue_, BUFFER_NUM, RO * D * sizeof(float));
        pipe_.InitBuffer(outQue_, BUFFER_NUM, RO * D * sizeof(T));
        pipe_.InitBuffer(lseQue_, BUFFER_NUM, AlignUp(t_.block_m * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(work_, t_.work_elems * sizeof(float));
        // The slab's row maxima, sums and -m' (R rounded up to 8 each); m and l of two tasks and alpha of
        // two steps (the pipeline below overlaps a task's first step with the last one's accumulation);
        // the per-row operand of RowAdd / RowMul (a 32-byte block per row).
        pipe_.InitBuffer(small_, 3 * AlignUp(R, 8) * sizeof(float) + UB_BLOCK);
        pipe_.InitBuffer(m_, 2 * t_.block_m * sizeof(float));
        pipe_.InitBuffer(l_, 2 * t_.block_m * sizeof(float));
        pipe_.InitBuffer(alpha_, 2 * t_.block_m * sizeof(float));
        pipe_.InitBuffer(bcast_, t_.block_m * UB_BLOCK);
        // The scale as a 32-byte block after the slab's three per-row vectors: FusedMulAdd's per-lane factor.
        Duplicate(small_.Get<float>()[3 * AlignUp(R, 8)], scale_, static_cast<int32_t>(UB_BLOCK / sizeof(float)));
        perHead_ = t_.tasks / t_.heads;  // query tiles of all sequences, for one head
        if (perHead_ == 0) return;
        lo_ = static_cast<uint64_t>(t_.tasks) * block / blocks;
        hi_ = static_cast<uint64_t>(t_.tasks) * (block + 1) / blocks;
        sub_ = static_cast<uint32_t>(GetSubBlockIdx());
        Step cur = Next(Step{}, lo_);
        if (!cur.valid) return;
        Begin(cur);
        Scores(cur, 0, true);
        // The steps' pipeline (header comment): step s is key tile cur.j of task cur.task.
        Step prev;
        for (uint32_t s = 0; cur.valid; ++s) {
            const Step nxt = Next(cur, cur.k + 1);
            if (cur.j == 0 && s > 0) Begin(cur);
            const uint32_t M = cur.g.M, R = t_.softmax_rows;
            const uint32_t half = Min(M, CeilDiv(CeilDiv(M, R), 2u) * R);  // whole slabs
            SoftmaxRows(cur, s, 0, half);
            if (nxt.valid) {
                Scores(nxt, (s + 1) % 2, false);
            } else {
                mmPv.WaitIterateAll();
            }
            if (prev.valid) {
                Accumulate(prev.g.M, (s + 1) % 2);
                if (prev.task != cur.task) {
                    Finish(prev, (s + 1) % 2);
                    Duplicate(acc_.Get<float>(), 0.0f, static_cast<int32_t>(M * t_.dv_pitch));
                }
            }
            SoftmaxRows(cur, s, half, M);
            // P went out on MTE3 and O came in on MTE2: the cube may read P and write O only after those
            // (the request follows the scalar unit; V waited for MTE2).
            SetFlag<HardEvent::MTE3_S>(0);
            WaitFlag<HardEvent::MTE3_S>(0);
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            ValuesTimesP(cur, s % 2);
            prev = cur;
            cur = nxt;
            if (!cur.valid) {
                mmPv.WaitIterateAll();
                Accumulate(prev.g.M, s % 2);
                Finish(prev, (s + 1) % 2);
            }
        }
        mmQk.End();
        mmPv.End();
    }

private:
    // A cumulative-length entry, clamped into [0, limit] (the host validated them; a bad one only
    // shortens the work).
    __aicore__ inline int64_t Cu(GlobalTensor<int32_t>& g, uint32_t i, int64_t limit) {
        int64_t c = g.GetValue(i);
        if (c < 0) c = 0;
        if (c > limit) c = limit;
        return c;
    }

    // Where task k (of this vector core's run, which ends at `hi`) works: its head, query rows and keys.
    struct Geometry {
        bool valid = false;  // a task with visible keys
        uint32_t h = 0, M = 0, i0 = 0;
        uint64_t qTok = 0, k0 = 0;
        int64_t prefix = 0, kEnd = 0;
        __aicore__ inline uint32_t Tiles(uint32_t bn) const { return static_cast<uint32_t>((kEnd + bn - 1) / bn); }
    };

    // One step of the run: key tile j of task k (the task-th valid task of the run).
    struct Step {
        bool valid = false;
        Geometry g;
        uint64_t k = 0;
        uint32_t j = 0, task = 0;
        // The tile's first key and its key count (the last tile may be short).
        __aicore__ inline int64_t Col0(uint32_t bn) const { return static_cast<int64_t>(j) * bn; }
        __aicore__ inline uint32_t Keys(uint32_t bn) const {
            const int64_t left = g.kEnd - Col0(bn);
            return static_cast<uint32_t>(left < bn ? left : bn);
        }
    };

    // The step after `st`: its next key tile, else the first tile of the first task from k on with keys.
    __aicore__ inline Step Next(const Step& st, uint64_t k) {
        if (st.valid && st.j + 1 < st.g.Tiles(t_.block_n)) {
            Step n = st;
            ++n.j;
            return n;
        }
        Step n;
        for (k = Own(k); k < hi_; k = Own(k + 1)) {
            n.g = Locate(k, perHead_, hi_);
            if (n.g.valid) {
                n.valid = true;
                n.k = k;
                n.task = st.valid ? st.task + 1 : 0;
                return n;
            }
        }
        return n;
    }

    // The first task from k on (k >= lo_) that this vector core runs: of its block's run, the pairs of
    // tasks (k - lo_) / 2 with the parity of its sub-block (a zig-zag pair, a light and a heavy tile,
    // carries about the same work as the next).
    __aicore__ inline uint64_t Own(uint64_t k) const {
        const uint64_t pair = (k - lo_) / 2;
        return pair % 2 == sub_ ? k : lo_ + 2 * (pair + 1);
    }

    // A task's first step: its m = -inf and l = 0 (the other task's pair may still be finishing).
    __aicore__ inline void Begin(const Step& st) {
        const uint32_t o = (st.task % 2) * t_.block_m;
        Duplicate(m_.Get<float>()[o], NEG_INF, static_cast<int32_t>(t_.block_m));
        Duplicate(l_.Get<float>()[o], 0.0f, static_cast<int32_t>(t_.block_m));
        if (st.task == 0) Duplicate(acc_.Get<float>(), 0.0f, static_cast<int32_t>(st.g.M * t_.dv_pitch));
    }

    // The online softmax of step s's rows [r0, r1), slab by slab (the scores are in).
    __aicore__ inline void SoftmaxRows(const Step& st, uint32_t s, uint32_t r0, uint32_t r1) {
        const uint32_t BN = t_.block_n;
        const int64_t c0 = st.Col0(BN);
        const uint32_t N = st.Keys(BN);
        const GlobalTensor<float> scores = scoresWs_[static_cast<uint64_t>(s % 2) * t_.block_m * BN];
        const GlobalTensor<T> p = pWs_[static_cast<uint64_t>(s % 2) * t_.block_m * BN];
        const uint32_t ml = (st.task % 2) * t_.block_m, a = (s % 2) * t_.block_m;
        for (uint32_t r = r0; r < r1; r += t_.softmax_rows) {
            Softmax(scores, p, r, Min(t_.softmax_rows, r1 - r), st.g.prefix + st.g.i0 - c0, N, ml, a);
        }
    }

    // Asks the cube for O = P . V of step st (P in slot `slot`), left in flight.
    __aicore__ inline void ValuesTimesP(const Step& st, uint32_t slot) {
        const uint32_t BN = t_.block_n;
        const int64_t c0 = st.Col0(BN);
        const uint32_t N = st.Keys(BN);
        const uint64_t kTok = st.g.k0 + static_cast<uint64_t>(c0);
        mmPv.SetOrgShape(static_cast<int>(st.g.M), static_cast<int>(t_.v_tok), static_cast<int>(BN),
                          static_cast<int>(BN), static_cast<int>(t_.dv));
        mmPv.SetTensorA(pWs_[static_cast<uint64_t>(slot) * t_.block_m * BN]);
        mmPv.SetTensorB(vGm_[t_.v_off + kTok * t_.v_tok + static_cast<uint64_t>(st.g.h) * t_.v_head]);
        mmPv.SetTail(static_cast<int>(st.g.M), static_cast<int>(t_.dv), static_cast<int>(N));
        mmPv.template IterateAll<false>(oWs_);
    }

    // Task k: head k / perHead, and query tile (numbered sequence by sequence) p = k % perHead of it in
    // zig-zag order (0, n-1, 1, n-2, ...).
    __aicore__ inline Geometry Locate(uint64_t k, uint32_t perHead, uint64_t hi) {
        Geometry g;
        if (k >= hi) return g;
        const uint32_t BM = t_.block_m;
        g.h = static_cast<uint32_t>(k / perHead);
        const uint32_t p = static_cast<uint32_t>(k % perHead);
        uint32_t tile = p % 2 == 0 ? p / 2 : perHead - 1 - p / 2;
        // Find the sequence of this query tile: tiles are numbered sequence by sequence.
        uint32_t b = 0;
        int64_t q0 = 0, q1 = 0;
        bool found = false;
        for (; b < t_.batch; ++b) {
            q0 = Cu(cuQGm_, b, t_.tokens_q);
            q1 = Cu(cuQGm_, b + 1, t_.tokens_q);
            const uint32_t lq = q1 > q0 ? static_cast<uint32_t>(q1 - q0) : 0;
            const uint32_t n = CeilDiv(lq, BM);
            if (tile < n) {
                found = true;
                break;
            }
            tile -= n;
        }
        if (!found) return g;
        const int64_t k0 = Cu(cuKGm_, b, t_.tokens_k), k1 = Cu(cuKGm_, b + 1, t_.tokens_k);
        const int64_t lq = q1 - q0, lk = k1 > k0 ? k1 - k0 : 0;
        g.prefix = lk - lq;  // the host checked lk >= lq
        g.i0 = tile * BM;
        g.M = Min(BM, static_cast<uint32_t>(lq) - g.i0);
        // Keys visible to the tile's last row: [0, prefix + i0 + M).
        g.kEnd = g.prefix + g.i0 + g.M;
        if (g.kEnd > lk) g.kEnd = lk;
        g.qTok = static_cast<uint64_t>(q0) + g.i0;
        g.k0 = static_cast<uint64_t>(k0);
        g.valid = g.kEnd > 0;
        return g;
    }

    // Asks the cube for step st's scores S = q . k^T (nope, then rope accumulated) into score slot
    // `into`: synchronously, or left in flight (with a rope part, the nope product is waited for when the
    // rope one is asked for).
    __aicore__ inline void Scores(const Step& st, uint32_t into, bool sync) {
        const uint32_t BN = t_.block_n, M = st.g.M, h = st.g.h;
        const uint64_t qTok = st.g.qTok;
        const int64_t c0 = st.Col0(BN);
        const uint32_t N = st.Keys(BN);
        const uint64_t kTok = st.g.k0 + static_cast<uint64_t>(c0);
        const GlobalTensor<float> slot = scoresWs_[static_cast<uint64_t>(into) * t_.block_m * BN];
        mmQk.SetOrgShape(static_cast<int>(M), static_cast<int>(BN), static_cast<int>(t_.qn_tok),
                          static_cast<int>(t_.kn_tok));
        mmQk.SetTensorA(qnGm_[t_.qn_off + qTok * t_.qn_tok + static_cast<uint64_t>(h) * t_.qn_head]);
        mmQk.SetTensorB(knGm_[t_.kn_off + kTok * t_.kn_tok + static_cast<uint64_t>(h) * t_.kn_head], true);
        mmQk.SetTail(static_cast<int>(M), static_cast<int>(N), static_cast<int>(t_.dn));
        if (sync && t_.dr == 0) {
            mmQk.IterateAll(slot);
        } else {
            mmQk.template IterateAll<false>(slot);
        }
        if (t_.dr > 0) {
            mmQk.SetOrgShape(static_cast<int>(M), static_cast<int>(BN), static_cast<int>(t_.qr_tok),
                              static_cast<int>(t_.kr_tok));
            mmQk.SetTensorA(qrGm_[t_.qr_off + qTok * t_.qr_tok + static_cast<uint64_t>(h) * t_.qr_head]);
            mmQk.SetTensorB(krGm_[t_.kr_off + kTok * t_.kr_tok + static_cast<uint64_t>(h) * t_.kr_head], true);
            mmQk.SetTail(static_cast<int>(M), static_cast<int>(N), static_cast<int>(t_.dr));
            if (sync) {
                mmQk.IterateAll(slot, 1);
            } else {
                mmQk.template IterateAll<false>(slot, 1);
            }
        }
    }

    // Rows [r0, r0 + R) of the tile's scores; row i sees the tile's columns j < diag + i + 1. Whole-slab
    // instructions over the slab's full width P (row_ops.h): the columns a row does not see, and those past
    // a short tile's N, are -inf first, so the max, exp and sum need no per-row masks, and the
    // elementwise steps are one instruction for the whole slab. The running max m, sum l and the rescale
    // factors alpha are UB vectors.
    // P goes to `p`; m and l are at offset ml of their buffers, alpha at offset a.
    __aicore__ inline void Softmax(const GlobalTensor<float>& scores, const GlobalTensor<T>& p, uint32_t r0,
                                   uint32_t R, int64_t diag, uint32_t N, uint32_t ml, uint32_t a) {
        const uint32_t P = t_.block_n;
        LocalTensor<float> sc = scQue_.AllocTensor<float>();
        const uint32_t f32Gap = (P * sizeof(float) - AlignUp(N * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(sc, scores[static_cast<uint64_t>(r0) * P],
                    DataCopyExtParams(static_cast<uint16_t>(R), N * static_cast<uint32_t>(sizeof(float)),
                                      (P - N) * static_cast<uint32_t>(sizeof(float)), f32Gap, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        scQue_.EnQue(sc);
        sc = scQue_.DeQue<float>();
        const RowTile tile{R, P, P};
        const uint32_t R8 = AlignUp(R, 8);
        LocalTensor<float> vecs = small_.Get<float>();
        LocalTensor<float> tileMax = vecs, tileSum = vecs[R8], negM = vecs[2 * R8];
        LocalTensor<float> m = m_.Get<float>()[ml + r0], l = l_.Get<float>()[ml + r0];
        LocalTensor<float> alpha = alpha_.Get<float>()[a + r0];
        LocalTensor<float> work = work_.Get<float>(), bcast = bcast_.Get<float>();
        // With a positive scale, max(scale s) = scale max(s) (rounding is monotonic): the row maxima come from
        // the raw scores and the scale rides on the exponent's argument, scale s - m' in one FusedMulAdd,
        // instead of a pass of its own over the slab.
        const bool fold = scale_ > 0.0f;
        // 1. scale (the N columns copied in) unless folded, then -inf from each row's first unseen column to
        //    the end of the slab (a row that sees none of the tile is all -inf: p = 0, m and l unchanged).
        if (!fold && N == P) {
            Muls(sc, sc, scale_, static_cast<int32_t>(R * P));
        } else if (!fold) {
            TileMuls(sc, scale_, RowTile{R, N, P});
        }
        if (N < P || diag + static_cast<int64_t>(r0) + 1 < static_cast<int64_t>(N)) {  // the first row sees least
            for (uint32_t i = 0; i < R; ++i) {
                int64_t vis = diag + r0 + i + 1;
                if (vis > static_cast<int64_t>(N)) vis = N;
                if (vis < static_cast<int64_t>(P)) MaskFrom(sc[i * P], vis > 0 ? static_cast<uint32_t>(vis) : 0, P);
            }
        }
        RowMax(tileMax, sc, work, tile);
        if (fold) Muls(tileMax, tileMax, scale_, static_cast<int32_t>(R));
        // 2. m' = max(m, tile max); alpha = exp(m - m'), p = exp(s - m'), with m' floored at -FLT_MAX so that a
        //    row with nothing visible yet gets alpha = exp(-inf) = 0 and p = 0 instead of NaN (its l is 0).
        Max(tileMax, tileMax, m, static_cast<int32_t>(R));
        Maxs(negM, tileMax, -FLT_MAX_VALUE, static_cast<int32_t>(R));
        Sub(alpha, m, negM, static_cast<int32_t>(R));
        Exp(alpha, alpha, static_cast<int32_t>(R));
        Adds(m, tileMax, 0.0f, static_cast<int32_t>(R));
        Muls(negM, negM, -1.0f, static_cast<int32_t>(R));
        RowBroadcast(bcast, negM, R);
        if (fold) {
            RowScaleAdd(sc, vecs[3 * AlignUp(t_.softmax_rows, 8)], bcast, tile);  // the block Process filled
        } else {
            RowAdd(sc, bcast, tile);
        }
        Exp(sc, sc, static_cast<int32_t>(R * P));
        // 3. l = alpha l + the rows' sums.
        RowSum(tileSum, sc, work, tile);
        Mul(l, l, alpha, static_cast<int32_t>(R));
        Add(l, l, tileSum, static_cast<int32_t>(R));
        if (t_.mutation == 3) Muls(sc, sc, MUTATE, static_cast<int32_t>(R * P));
        LocalTensor<T> pt = pQue_.AllocTensor<T>();
        FromFloat(pt, sc, R * P);
        scQue_.FreeTensor(sc);
        pQue_.EnQue(pt);
        pt = pQue_.DeQue<T>();
        const uint32_t tGap = (P * sizeof(T) - AlignUp(N * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(p[static_cast<uint64_t>(r0) * P], pt,
                    DataCopyExtParams(static_cast<uint16_t>(R), N * static_cast<uint32_t>(sizeof(T)), tGap,
                                      (P - N) * static_cast<uint32_t>(sizeof(T)), 0));
        pQue_.FreeTensor(pt);
    }

    // row[vis, end) = -inf (the causal mask): the scalar unit up to the next 32-byte boundary, then one
    // Duplicate (a vector instruction starts on a 32-byte boundary of UB) instead of a scalar write per key.
    __aicore__ inline void MaskFrom(const LocalTensor<float>& row, uint32_t vis, uint32_t end) {
        constexpr uint32_t PER_BLOCK = UB_BLOCK / sizeof(float);
        const uint32_t head = Min(AlignUp(vis, PER_BLOCK), end);
        if (vis < head) {
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            for (uint32_t j = vis; j < head; ++j) row.SetValue(j, NEG_INF);
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
        }
        if (head < end) Duplicate(row[head], NEG_INF, static_cast<int32_t>(end - head));
    }

    // acc = alpha acc + O for the task's M rows (alpha of slot a: the step's): the rescale as one broadcast
    // multiply, then O added in slabs of out_rows rows as it comes in.
    __aicore__ inline void Accumulate(uint32_t M, uint32_t a) {
        const uint32_t D = t_.dv_pitch, dv = t_.dv;
        LocalTensor<float> acc = acc_.Get<float>(), bcast = bcast_.Get<float>();
        RowBroadcast(bcast, alpha_.Get<float>()[a * t_.block_m], M);
        RowMul(acc, bcast, RowTile{M, dv, D});
        const uint32_t gap = (D - AlignUp(dv, 8)) * sizeof(float) / UB_BLOCK;
        for (uint32_t r0 = 0; r0 < M; r0 += t_.out_rows) {
            const uint32_t R = Min(t_.out_rows, M - r0);
            LocalTensor<float> o = oQue_.AllocTensor<float>();
            DataCopyPad(o, oWs_[static_cast<uint64_t>(r0) * dv],
                        DataCopyExtParams(static_cast<uint16_t>(R), dv * static_cast<uint32_t>(sizeof(float)), 0,
                                          gap, 0),
                        DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
            oQue_.EnQue(o);
            o = oQue_.DeQue<float>();
            if (D == dv) {
                Add(acc[r0 * D], acc[r0 * D], o, static_cast<int32_t>(R * D));
            } else {
                TileAdd(acc[r0 * D], o, RowTile{R, dv, D});
            }
            oQue_.FreeTensor(o);
        }
    }

    // out = t(acc / l), lse = m + ln l for the M rows of st's task (query tokens qTok.., head h), with alpha
    // slot `scratch` (consumed) as scratch; a row with l = 0 (nothing visible: not in a causal prefill, kept
    // safe) gets out 0 and lse -inf.
    __aicore__ inline void Finish(const Step& st, uint32_t scratch) {
        const uint32_t D = t_.dv_pitch, dv = t_.dv, H = t_.heads, M = st.g.M, h = st.g.h;
        const uint64_t qTok = st.g.qTok;
        const uint32_t ml = (st.task % 2) * t_.block_m;
        const int32_t m8 = static_cast<int32_t>(AlignUp(M, 8));
        LocalTensor<float> acc = acc_.Get<float>(), l = l_.Get<float>()[ml];
        LocalTensor<float> inv = alpha_.Get<float>()[scratch * t_.block_m];
        LocalTensor<float> bcast = bcast_.Get<float>();
        // inv = 1 / max(l, FLT_MIN): 0 * that = 0 for an empty row.
        Maxs(inv, l, FLT_MIN_VALUE, m8);
        if (t_.mutation == 2) Muls(inv, inv, MUTATE, m8);
        Reciprocal(inv, inv, m8);
        RowBroadcast(bcast, inv, M);
        RowMul(acc, bcast, RowTile{M, dv, D});
        for (uint32_t r0 = 0; r0 < M; r0 += t_.out_rows) {
            const uint32_t R = Min(t_.out_rows, M - r0);
            LocalTensor<T> ot = outQue_.AllocTensor<T>();
            FromFloat(ot, acc[r0 * D], R * D);
            outQue_.EnQue(ot);
            ot = outQue_.DeQue<T>();
            const uint32_t tGap = (D * sizeof(T) - AlignUp(dv * sizeof(T), UB_BLOCK)) / UB_BLOCK;
            DataCopyPad(outGm_[((qTok + r0) * H + h) * dv], ot,
                        DataCopyExtParams(static_cast<uint16_t>(R), dv * static_cast<uint32_t>(sizeof(T)), tGap,
                                          (H - 1) * dv * static_cast<uint32_t>(sizeof(T)), 0));
            outQue_.FreeTensor(ot);
        }
        // lse rows of head h are contiguous in [H, T]: lse = m + ln l (ln 0 = -inf), one vector of M values.
        LocalTensor<float> lse = lseQue_.AllocTensor<float>();
        Ln(lse, l, m8);
        Add(lse, lse, m_.Get<float>()[ml], m8);
        lseQue_.EnQue(lse);
        lse = lseQue_.DeQue<float>();
        DataCopyPad(lseGm_[static_cast<uint64_t>(h) * t_.tokens_q + qTok], lse,
                    DataCopyExtParams(1, M * static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
        lseQue_.FreeTensor(lse);
    }

public:
    TPipe pipe_;
    TCubeTiling qk, pv;
    MmQk mmQk;
    MmPv mmPv;

private:
    TQue<TPosition::VECIN, BUFFER_NUM> scQue_, oQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> pQue_, outQue_, lseQue_;
    TBuf<TPosition::VECCALC> acc_, work_, small_, m_, l_, alpha_, bcast_;
    GlobalTensor<T> qnGm_, qrGm_, knGm_, krGm_, vGm_, outGm_, pWs_;
    GlobalTensor<float> lseGm_, scoresWs_, oWs_;
    GlobalTensor<int32_t> cuQGm_, cuKGm_;
    DsnpuMlaPrefillTiling t_{};
    float scale_ = 1.0f;
    uint32_t perHead_ = 0;  // query tiles of all sequences, for one head
    uint64_t lo_ = 0, hi_ = 0;  // the block's run of tasks, which its two vector cores deal by pairs (Own)
    uint32_t sub_ = 0;          // this vector core's sub-block: which pairs it takes
};

template <typename T>
__aicore__ inline void MlaPrefill(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR kNope, GM_ADDR kRope, GM_ADDR v, GM_ADDR cuQ,
                                  GM_ADDR cuK, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaPrefillTiling, t, tiling);
    if (t.heads == 0 || t.dn == 0 || t.dv == 0 || t.block_m == 0 || t.block_m > MAX_BLOCK_M || t.block_n == 0 ||
        t.softmax_rows == 0 || t.softmax_rows > MAX_SLAB_ROWS || t.softmax_rows % 8 != 0 || t.block_m % 8 != 0 ||
        t.out_rows == 0 || t.out_rows % 8 != 0 || t.out_rows > t.block_m ||
        !RowTile{t.softmax_rows, t.block_n, t.block_n}.Valid() || !RowTile{t.block_m, t.dv, t.dv_pitch}.Valid()) {
        return;
    }
    KernelMlaPrefill<T> op;
    op.Init(qNope, qRope, kNope, kRope, v, cuQ, cuK, out, lse, workspace, t);
    // The cube core serves the vector cores' Matmul requests here and returns when both are done.
    REGIST_MATMUL_OBJ(&op.pipe_, GetSysWorkSpacePtr(), op.mmQk, &op.qk, op.mmPv, &op.pv);
    op.Process();
}

}  // namespace

#define DSNPU_MLA_PREFILL(suffix, type)                                                                   \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(mla_prefill_##suffix)(                             \
        GM_ADDR qNope, GM_ADDR qRope, GM_ADDR kNope, GM_ADDR kRope, GM_ADDR v, GM_ADDR cuQ, GM_ADDR cuK,   \
        GM_ADDR out, GM_ADDR lse, GM_ADDR workspace, GM_ADDR tiling) {                                    \
        KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);                                                 \
        MlaPrefill<type>(qNope, qRope, kNope, kRope, v, cuQ, cuK, out, lse, workspace, tiling);           \
    }

DSNPU_MLA_PREFILL(f32, float)
DSNPU_MLA_PREFILL(f16, half)
DSNPU_MLA_PREFILL(bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/mla_prefill.inc"
#endif
