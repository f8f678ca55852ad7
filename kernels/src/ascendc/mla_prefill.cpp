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
 * n-2, ...: a light causal tile next to a heavy one), and vector core i (GetBlockIdx, 2 per block) runs
 * the contiguous run of tasks [i * tasks / W, (i + 1) * tasks / W), W = 2 * blocks: the runs carry about
 * the same work, and a block's two vector cores work on neighbouring runs of one head's keys and values,
 * which then stay in L2 (a head's K and V are read from HBM about once per block that touches the head,
 * not once per query tile). There is no cross-block step. Per task, over key tiles of block_n keys up to the
 * tile's last visible key (flash attention: no [T, T] score matrix anywhere, the running max m, sum l
 * and f32 accumulator acc [block_m, dv] stay on the vector core, m and l as UB vectors):
 *   1. cube: S[M, N] = q_nope . k_nope^T (+ q_rope . k_rope^T, accumulated) into one of the vector core's
 *      two f32 score slots (Matmul API, operands in GM with their token strides as the original shape);
 *   2. vector, per slab of softmax_rows rows, whole-slab instructions (dsnpu_kernels/row_ops.h: a repeat
 *      per row and 64-column segment, not an instruction per row): scale, causal mask (only tiles
 *      crossing the diagonal), m' = max(m, rowmax), alpha = exp(m - m'), p = exp(s - m'), l = alpha l +
 *      sum p; p rounded to t into the P workspace;
 *   3. cube: O[M, dv] = P . V into the f32 O workspace;
 *   4. vector: acc = alpha acc + O (a broadcast multiply and an add per slab).
 * Pipelined: step 1 of tile j + 1 (after a task's last tile, of the next task's first tile) is asked for
 * (asynchronously) before the vector core starts on tile j, step 3 of tile j is left in flight while the
 * vector core goes on, and step 4 of tile j runs at the start of tile j + 1, so the cube works while the
 * vector core does (the Matmul API keeps one request in flight per vector core: each request first
 * waits for the one before). The two score slots alternate across the vector core's whole run.
 * Then out = t(acc / l) (rows scattered with the head stride), lse = m + ln l (contiguous per head).
 * A 1:2 mix kernel: the vector cores run steps 2 and 4 and drive their cube core's Matmul for steps 1
 * and 3 (REGIST_MATMUL_OBJ; the cube core only serves).
 *
 * Workspace (bytes), the system workspace, then per vector core: S f32 [2, block_m, block_n] (two slots) |
 * P t [block_m, block_n] | O f32 [block_m, dv].
 * UB (R = softmax_rows, N = block_n, D = dv_pitch, sz = sizeof(t)): block_m D 4 (acc)
 *   + 2 R N 4 (score queue) + 2 R N sz (P queue) + 2 R D 4 (O queue) + 2 R D sz (out queue)
 *   + 2 * round_up(block_m 4, 32) (lse queue) + work_elems 4 (= 64 R: the row folds) + 3 round_up(R, 8) 4
 *   (the slab's row maxima, sums and -m') + 3 block_m 4 (m, l, alpha) + 32 block_m (per-row broadcast
 *   blocks). block_m and R are multiples of 8.
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
        const uint64_t perBlock = sElems * (2 * sizeof(float) + sizeof(T)) + oElems * sizeof(float);
        GM_ADDR mine = ws + static_cast<uint64_t>(GetBlockIdx()) * perBlock;  // per vector core
        scoresWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine), 2 * sElems);  // two slots
        pWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(mine + 2 * sElems * sizeof(float)), sElems);
        oWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine + sElems * (2 * sizeof(float) + sizeof(T))),
                             oElems);

        qk = ToCubeTiling(t.qk_cube);
        pv = ToCubeTiling(t.pv_cube);
    }

    // A vector core (after REGIST_MATMUL_OBJ made mmQk and mmPv its clients).
    __aicore__ inline void Process() {
        const uint32_t blocks = static_cast<uint32_t>(VectorWorkers());
        const uint32_t me = static_cast<uint32_t>(GetBlockIdx());
        const uint32_t R = t_.softmax_rows, N = t_.block_n, D = t_.dv_pitch;
        pipe_.InitBuffer(acc_, t_.block_m * D * sizeof(float));
        pipe_.InitBuffer(scQue_, BUFFER_NUM, R * N * sizeof(float));
        pipe_.InitBuffer(pQue_, BUFFER_NUM, R * N * sizeof(T));
        pipe_.InitBuffer(oQue_, BUFFER_NUM, R * D * sizeof(float));
        pipe_.InitBuffer(outQue_, BUFFER_NUM, R * D * sizeof(T));
        pipe_.InitBuffer(lseQue_, BUFFER_NUM, AlignUp(t_.block_m * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(work_, t_.work_elems * sizeof(float));
        // The slab's row maxima, sums and -m' (R rounded up to 8 each); the task's m, l and alpha; the
        // per-row operand of RowAdd / RowMul (a 32-byte block per row).
        pipe_.InitBuffer(small_, 3 * AlignUp(R, 8) * sizeof(float));
        pipe_.InitBuffer(m_, t_.block_m * sizeof(float));
        pipe_.InitBuffer(l_, t_.block_m * sizeof(float));
        pipe_.InitBuffer(alpha_, t_.block_m * sizeof(float));
        pipe_.InitBuffer(bcast_, t_.block_m * UB_BLOCK);
        const uint32_t perHead = t_.tasks / t_.heads;  // query tiles of all sequences, for one head
        if (perHead == 0) return;
        const uint64_t lo = static_cast<uint64_t>(t_.tasks) * me / blocks;
        const uint64_t hi = static_cast<uint64_t>(t_.tasks) * (me + 1) / blocks;
        // Each task asks for the next one's first scores before its own last tile (Task).
        Geometry cur = Locate(lo, perHead, hi), next;
        bool asked = false;
        for (uint64_t k = lo; k < hi; ++k) {
            next = Locate(k + 1, perHead, hi);
            asked = Task(cur, next, asked);
            cur = next;
        }
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

    // Task g, whose first tile's scores were asked for already when `asked`; returns whether it asked for
    // the next task's (task n's) first scores.
    __aicore__ inline bool Task(const Geometry& g, const Geometry& n, bool asked) {
        if (!g.valid) return false;
        const uint32_t BN = t_.block_n, M = g.M, h = g.h;
        const uint64_t qTok = g.qTok, k0 = g.k0;
        const int64_t kEnd = g.kEnd, prefix = g.prefix;
        const uint32_t i0 = g.i0;

        Duplicate(m_.Get<float>(), NEG_INF, static_cast<int32_t>(t_.block_m));
        Duplicate(l_.Get<float>(), 0.0f, static_cast<int32_t>(t_.block_m));
        LocalTensor<float> acc = acc_.Get<float>();
        Duplicate(acc, 0.0f, static_cast<int32_t>(M * t_.dv_pitch));

        // Pipelined over the key tiles: while the vector core works on tile j, the cube computes tile
        // j + 1's scores (into the other score slot; after the last tile, the next task's first), then
        // tile j's P . V; tile j's O is added to acc at the start of tile j + 1 (one request in flight per
        // vector core: each request waits for the last).
        const uint32_t tiles = g.Tiles(BN);
        if (!asked) Scores(h, qTok, M, k0, 0, kEnd, slot_, true);
        bool askedNext = false;
        for (uint32_t j = 0; j < tiles; ++j) {
            const int64_t c0 = static_cast<int64_t>(j) * BN;
            const uint32_t N = static_cast<uint32_t>(kEnd - c0 < BN ? kEnd - c0 : BN);
            const uint32_t mine = (slot_ + j) % 2;
            if (j + 1 < tiles) {
                Scores(h, qTok, M, k0, j + 1, kEnd, 1 - mine, false);  // waits for P . V of j - 1
            } else if (n.valid) {
                Scores(n.h, n.qTok, n.M, n.k0, 0, n.kEnd, 1 - mine, false);
                askedNext = true;
            } else {
                mmPv.WaitIterateAll();
            }
            if (j > 0) {  // acc = alpha acc + O of tile j - 1 (its alpha, before tile j's softmax replaces it)
                for (uint32_t r = 0; r < M; r += t_.softmax_rows) Accumulate(r, Min(t_.softmax_rows, M - r));
            }
            // The online softmax of tile j (its scores are in: the request after them waited for them).
            const GlobalTensor<float> scores = scoresWs_[static_cast<uint64_t>(mine) * t_.block_m * BN];
            for (uint32_t r = 0; r < M; r += t_.softmax_rows) {
                Softmax(scores, r, Min(t_.softmax_rows, M - r), prefix + i0 - c0, N);
            }
            // P went out on MTE3: the cube may load it only after those copies (the request follows S).
            SetFlag<HardEvent::MTE3_S>(0);
            WaitFlag<HardEvent::MTE3_S>(0);
            // O = P . V (in flight while the vector core goes on).
            const uint64_t kTok = k0 + static_cast<uint64_t>(c0);
            mmPv.SetOrgShape(static_cast<int>(M), static_cast<int>(t_.v_tok), static_cast<int>(BN),
                              static_cast<int>(BN), static_cast<int>(t_.dv));
            mmPv.SetTensorA(pWs_);
            mmPv.SetTensorB(vGm_[t_.v_off + kTok * t_.v_tok + static_cast<uint64_t>(h) * t_.v_head]);
            mmPv.SetTail(static_cast<int>(M), static_cast<int>(t_.dv), static_cast<int>(N));
            mmPv.template IterateAll<false>(oWs_);
        }
        slot_ = (slot_ + tiles) % 2;  // the next task's first tile: the slot after this task's last
        mmPv.WaitIterateAll();
        for (uint32_t r = 0; r < M; r += t_.softmax_rows) Accumulate(r, Min(t_.softmax_rows, M - r));
        if (!askedNext) {
            mmQk.End();
            mmPv.End();
        }
        Finish(h, qTok, M);
        return askedNext;
    }

    // Asks the cube for key tile j's scores S = q . k^T (nope, then rope accumulated) into score slot `into`:
    // synchronously, or left in flight (with a rope part, the nope product is waited for when the rope
    // one is asked for).
    __aicore__ inline void Scores(uint32_t h, uint64_t qTok, uint32_t M, uint64_t k0, uint32_t j, int64_t kEnd,
                                  uint32_t into, bool sync) {
        const uint32_t BN = t_.block_n;
        const int64_t c0 = static_cast<int64_t>(j) * BN;
        const uint32_t N = static_cast<uint32_t>(kEnd - c0 < BN ? kEnd - c0 : BN);
        const uint64_t kTok = k0 + static_cast<uint64_t>(c0);
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
    // instructions (row_ops.h); the running max m, sum l and the rescale factors alpha are UB vectors.
    __aicore__ inline void Softmax(const GlobalTensor<float>& scores, uint32_t r0, uint32_t R, int64_t diag,
                                   uint32_t N) {
        const uint32_t P = t_.block_n;
        LocalTensor<float> sc = scQue_.AllocTensor<float>();
        const uint32_t f32Gap = (P * sizeof(float) - AlignUp(N * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(sc, scores[static_cast<uint64_t>(r0) * P],
                    DataCopyExtParams(static_cast<uint16_t>(R), N * static_cast<uint32_t>(sizeof(float)),
                                      (P - N) * static_cast<uint32_t>(sizeof(float)), f32Gap, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        scQue_.EnQue(sc);
        sc = scQue_.DeQue<float>();
        const RowTile tile{R, N, P};
        const uint32_t R8 = AlignUp(R, 8);
        LocalTensor<float> vecs = small_.Get<float>();
        LocalTensor<float> tileMax = vecs, tileSum = vecs[R8], negM = vecs[2 * R8];
        LocalTensor<float> m = m_.Get<float>()[r0], l = l_.Get<float>()[r0], alpha = alpha_.Get<float>()[r0];
        LocalTensor<float> work = work_.Get<float>(), bcast = bcast_.Get<float>();
        // 1. scale, causal mask (a row that sees none of the tile is all -inf: p = 0, m and l unchanged).
        TileMuls(sc, scale_, tile);
        if (diag + static_cast<int64_t>(r0) + 1 < static_cast<int64_t>(N)) {  // the slab's first row sees least
            for (uint32_t i = 0; i < R; ++i) {
                const int64_t vis = diag + r0 + i + 1;
                if (vis < static_cast<int64_t>(N)) MaskFrom(sc[i * P], vis > 0 ? static_cast<uint32_t>(vis) : 0, N);
            }
        }
        RowMax(tileMax, sc, work, tile);
        // 2. m' = max(m, tile max); alpha = exp(m - m'), p = exp(s - m'), with m' floored at -FLT_MAX so that a
        //    row with nothing visible yet gets alpha = exp(-inf) = 0 and p = 0 instead of NaN (its l is 0).
        Max(tileMax, tileMax, m, static_cast<int32_t>(R));
        Maxs(negM, tileMax, -FLT_MAX_VALUE, static_cast<int32_t>(R));
        Sub(alpha, m, negM, static_cast<int32_t>(R));
        Exp(alpha, alpha, static_cast<int32_t>(R));
        Adds(m, tileMax, 0.0f, static_cast<int32_t>(R));
        Muls(negM, negM, -1.0f, static_cast<int32_t>(R));
        RowBroadcast(bcast, negM, R);
        RowAdd(sc, bcast, tile);
        TileExp(sc, tile);
        // 3. l = alpha l + the rows' sums.
        RowSum(tileSum, sc, work, tile);
        Mul(l, l, alpha, static_cast<int32_t>(R));
        Add(l, l, tileSum, static_cast<int32_t>(R));
        if (t_.mutation == 3) TileMuls(sc, MUTATE, tile);
        LocalTensor<T> pt = pQue_.AllocTensor<T>();
        FromFloat(pt, sc, R * P);
        scQue_.FreeTensor(sc);
        pQue_.EnQue(pt);
        pt = pQue_.DeQue<T>();
        const uint32_t tGap = (P * sizeof(T) - AlignUp(N * sizeof(T), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(pWs_[static_cast<uint64_t>(r0) * P], pt,
                    DataCopyExtParams(static_cast<uint16_t>(R), N * static_cast<uint32_t>(sizeof(T)), tGap,
                                      (P - N) * static_cast<uint32_t>(sizeof(T)), 0));
        pQue_.FreeTensor(pt);
    }

    // row[vis, N) = -inf (the causal mask): the scalar unit up to the next 32-byte boundary, then one
    // Duplicate (a vector instruction starts on a 32-byte boundary of UB) instead of a scalar write per key.
    __aicore__ inline void MaskFrom(const LocalTensor<float>& row, uint32_t vis, uint32_t N) {
        constexpr uint32_t PER_BLOCK = UB_BLOCK / sizeof(float);
        const uint32_t head = Min(AlignUp(vis, PER_BLOCK), N);
        if (vis < head) {
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            for (uint32_t j = vis; j < head; ++j) row.SetValue(j, NEG_INF);
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
        }
        if (head < N) Duplicate(row[head], NEG_INF, static_cast<int32_t>(N - head));
    }

    // acc[r] = alpha[r] acc[r] + O[r] for rows [r0, r0 + R).
    __aicore__ inline void Accumulate(uint32_t r0, uint32_t R) {
        const uint32_t D = t_.dv_pitch, dv = t_.dv;
        LocalTensor<float> o = oQue_.AllocTensor<float>();
        const uint32_t gap = (D - AlignUp(dv, 8)) * sizeof(float) / UB_BLOCK;
        DataCopyPad(o, oWs_[static_cast<uint64_t>(r0) * dv],
                    DataCopyExtParams(static_cast<uint16_t>(R), dv * static_cast<uint32_t>(sizeof(float)), 0, gap, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        oQue_.EnQue(o);
        o = oQue_.DeQue<float>();
        LocalTensor<float> acc = acc_.Get<float>()[r0 * D], bcast = bcast_.Get<float>();
        const RowTile tile{R, dv, D};
        RowBroadcast(bcast, alpha_.Get<float>()[r0], R);
        RowMul(acc, bcast, tile);
        TileAdd(acc, o, tile);
        oQue_.FreeTensor(o);
    }

    // out = t(acc / l), lse = m + ln l for the tile's M rows (query tokens qTok.., head h); a row with l = 0
    // (nothing visible: not in a causal prefill, kept safe) gets out 0 and lse -inf.
    __aicore__ inline void Finish(uint32_t h, uint64_t qTok, uint32_t M) {
        const uint32_t D = t_.dv_pitch, dv = t_.dv, H = t_.heads;
        const int32_t m8 = static_cast<int32_t>(AlignUp(M, 8));
        LocalTensor<float> acc = acc_.Get<float>(), l = l_.Get<float>(), inv = alpha_.Get<float>();
        LocalTensor<float> bcast = bcast_.Get<float>();
        // inv = 1 / max(l, FLT_MIN): 0 * that = 0 for an empty row.
        Maxs(inv, l, FLT_MIN_VALUE, m8);
        if (t_.mutation == 2) Muls(inv, inv, MUTATE, m8);
        Reciprocal(inv, inv, m8);
        RowBroadcast(bcast, inv, M);
        RowMul(acc, bcast, RowTile{M, dv, D});
        for (uint32_t r0 = 0; r0 < M; r0 += t_.softmax_rows) {
            const uint32_t R = Min(t_.softmax_rows, M - r0);
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
        Add(lse, lse, m_.Get<float>(), m8);
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
    uint32_t slot_ = 0;  // the score slot of the next task's first tile
};

template <typename T>
__aicore__ inline void MlaPrefill(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR kNope, GM_ADDR kRope, GM_ADDR v, GM_ADDR cuQ,
                                  GM_ADDR cuK, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaPrefillTiling, t, tiling);
    if (t.heads == 0 || t.dn == 0 || t.dv == 0 || t.block_m == 0 || t.block_m > MAX_BLOCK_M || t.block_n == 0 ||
        t.softmax_rows == 0 || t.softmax_rows > MAX_SLAB_ROWS || t.softmax_rows % 8 != 0 || t.block_m % 8 != 0 ||
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
