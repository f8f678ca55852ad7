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
 * and f32 accumulator acc [block_m, dv] stay on the vector core):
 *   1. cube: S[M, N] = q_nope . k_nope^T (+ q_rope . k_rope^T, accumulated) into the vector core's f32 score
 *      workspace (Matmul API, operands in GM with their token strides as the original shape);
 *   2. vector, per slab of softmax_rows rows: scale, causal mask (only tiles crossing the diagonal),
 *      m' = max(m, rowmax), p = exp(s - m'), alpha = exp(m - m'), l = alpha l + sum p; p rounded to t into
 *      the P workspace (the slab's maxima and sums are read back once per slab, its alphas from one Exp);
 *   3. cube: O[M, dv] = P . V into the f32 O workspace;
 *   4. vector: acc = alpha acc + O.
 * Then out = t(acc / l) (rows scattered with the head stride), lse = m + ln l (contiguous per head).
 * A 1:2 mix kernel: the vector cores run steps 2 and 4 and drive their cube core's Matmul for steps 1
 * and 3 (REGIST_MATMUL_OBJ; the cube core only serves), as in mla_decode.
 *
 * Workspace (bytes), the system workspace, then per vector core: S f32 [block_m, block_n] | P t [block_m, block_n] | O f32 [block_m, dv].
 * UB (R = softmax_rows, N = block_n, D = dv_pitch, sz = sizeof(t)): block_m D 4 (acc)
 *   + 2 R N 4 (score queue) + 2 R N sz (P queue) + 2 R D 4 (O queue) + 2 R D sz (out queue)
 *   + 2 * round_up(block_m 4, 32) (lse queue) + work_elems 4 + R 32 + round_up(block_m 4, 32) (the slab's
 *   reductions, a 32-byte block per row, then a vector of up to block_m values).
 *
 * Test-only mutations (tiling.mutation, 0 in every normal launch; see tiling_mla_prefill.rs): 1 scales
 * the softmax scale by 1.001, 2 the final denominator l by 1.001, 3 the P weights fed to P . V by 1.001.
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
        const uint64_t perBlock = sElems * (sizeof(float) + sizeof(T)) + oElems * sizeof(float);
        GM_ADDR mine = ws + static_cast<uint64_t>(GetBlockIdx()) * perBlock;  // per vector core
        scoresWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine), sElems);
        pWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(mine + sElems * sizeof(float)), sElems);
        oWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mine + sElems * (sizeof(float) + sizeof(T))), oElems);

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
        // The slab's reductions (a 32-byte block per row), then a vector of up to block_m values.
        pipe_.InitBuffer(small_, R * UB_BLOCK + AlignUp(t_.block_m * sizeof(float), UB_BLOCK));
        const uint32_t perHead = t_.tasks / t_.heads;  // query tiles of all sequences, for one head
        if (perHead == 0) return;
        const uint64_t lo = static_cast<uint64_t>(t_.tasks) * me / blocks;
        const uint64_t hi = static_cast<uint64_t>(t_.tasks) * (me + 1) / blocks;
        for (uint64_t k = lo; k < hi; ++k) {
            const uint32_t h = static_cast<uint32_t>(k / perHead), p = static_cast<uint32_t>(k % perHead);
            Task(h, p % 2 == 0 ? p / 2 : perHead - 1 - p / 2);
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

    // Query tile `tile` (numbered sequence by sequence) of head h.
    __aicore__ inline void Task(uint32_t h, uint32_t tile) {
        const uint32_t BM = t_.block_m, BN = t_.block_n;
        // Find the sequence and query tile of this task: tiles are numbered sequence by sequence.
        uint32_t b = 0;
        int64_t q0 = 0, q1 = 0, k0 = 0, k1 = 0;
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
        if (!found) return;
        k0 = Cu(cuKGm_, b, t_.tokens_k);
        k1 = Cu(cuKGm_, b + 1, t_.tokens_k);
        const int64_t lq = q1 - q0, lk = k1 > k0 ? k1 - k0 : 0;
        const int64_t prefix = lk - lq;  // the host checked lk >= lq
        const uint32_t i0 = tile * BM;
        const uint32_t M = Min(BM, static_cast<uint32_t>(lq) - i0);
        // Keys visible to the tile's last row: [0, prefix + i0 + M).
        int64_t kEnd = prefix + i0 + M;
        if (kEnd > lk) kEnd = lk;
        if (kEnd <= 0) return;
        const uint64_t qTok = static_cast<uint64_t>(q0) + i0;

        for (uint32_t i = 0; i < M; ++i) {
            m_[i] = NEG_INF;
            l_[i] = 0.0f;
        }
        LocalTensor<float> acc = acc_.Get<float>();
        Duplicate(acc, 0.0f, static_cast<int32_t>(M * t_.dv_pitch));

        for (int64_t c0 = 0; c0 < kEnd; c0 += BN) {
            const uint32_t N = static_cast<uint32_t>(kEnd - c0 < BN ? kEnd - c0 : BN);
            const uint64_t kTok = static_cast<uint64_t>(k0) + static_cast<uint64_t>(c0);
            // 1. S = q . k^T (nope, then rope accumulated).
            mmQk.SetOrgShape(static_cast<int>(M), static_cast<int>(BN), static_cast<int>(t_.qn_tok),
                              static_cast<int>(t_.kn_tok));
            mmQk.SetTensorA(qnGm_[t_.qn_off + qTok * t_.qn_tok + static_cast<uint64_t>(h) * t_.qn_head]);
            mmQk.SetTensorB(knGm_[t_.kn_off + kTok * t_.kn_tok + static_cast<uint64_t>(h) * t_.kn_head], true);
            mmQk.SetTail(static_cast<int>(M), static_cast<int>(N), static_cast<int>(t_.dn));
            mmQk.IterateAll(scoresWs_);
            mmQk.End();
            if (t_.dr > 0) {
                mmQk.SetOrgShape(static_cast<int>(M), static_cast<int>(BN), static_cast<int>(t_.qr_tok),
                                  static_cast<int>(t_.kr_tok));
                mmQk.SetTensorA(qrGm_[t_.qr_off + qTok * t_.qr_tok + static_cast<uint64_t>(h) * t_.qr_head]);
                mmQk.SetTensorB(krGm_[t_.kr_off + kTok * t_.kr_tok + static_cast<uint64_t>(h) * t_.kr_head], true);
                mmQk.SetTail(static_cast<int>(M), static_cast<int>(N), static_cast<int>(t_.dr));
                mmQk.IterateAll(scoresWs_, 1);
                mmQk.End();
            }
            // 2. the online softmax of the tile.
            for (uint32_t r = 0; r < M; r += t_.softmax_rows) {
                Softmax(r, Min(t_.softmax_rows, M - r), prefix + i0 - c0, N);
            }
            // P went out on MTE3: the cube may load it only after those copies (the request follows S).
            SetFlag<HardEvent::MTE3_S>(0);
            WaitFlag<HardEvent::MTE3_S>(0);
            // 3. O = P . V.
            mmPv.SetOrgShape(static_cast<int>(M), static_cast<int>(t_.v_tok), static_cast<int>(BN),
                              static_cast<int>(BN), static_cast<int>(t_.dv));
            mmPv.SetTensorA(pWs_);
            mmPv.SetTensorB(vGm_[t_.v_off + kTok * t_.v_tok + static_cast<uint64_t>(h) * t_.v_head]);
            mmPv.SetTail(static_cast<int>(M), static_cast<int>(t_.dv), static_cast<int>(N));
            mmPv.IterateAll(oWs_);
            mmPv.End();
            // 4. acc = alpha acc + O.
            for (uint32_t r = 0; r < M; r += t_.softmax_rows) Accumulate(r, Min(t_.softmax_rows, M - r));
        }
        Finish(h, qTok, M);
    }

    // Rows [r0, r0 + R) of the tile's scores; row i sees the tile's columns j < diag + i + 1.
    __aicore__ inline void Softmax(uint32_t r0, uint32_t R, int64_t diag, uint32_t N) {
        const uint32_t P = t_.block_n;
        LocalTensor<float> sc = scQue_.AllocTensor<float>();
        const uint32_t f32Gap = (P * sizeof(float) - AlignUp(N * sizeof(float), UB_BLOCK)) / UB_BLOCK;
        DataCopyPad(sc, scoresWs_[static_cast<uint64_t>(r0) * P],
                    DataCopyExtParams(static_cast<uint16_t>(R), N * static_cast<uint32_t>(sizeof(float)),
                                      (P - N) * static_cast<uint32_t>(sizeof(float)), f32Gap, 0),
                    DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        scQue_.EnQue(sc);
        sc = scQue_.DeQue<float>();
        // Row i's reductions land at red[i * PER] (a 32-byte block each), so the slab needs one V -> S
        // round trip per step, not per row; the rows' rescale factors come from one Exp over `vec`.
        constexpr uint32_t PER = UB_BLOCK / sizeof(float);
        LocalTensor<float> red = small_.Get<float>();
        LocalTensor<float> vec = red[t_.softmax_rows * PER];
        bool live[MAX_SLAB_ROWS];
        float mNew[MAX_SLAB_ROWS];
        // 1. scale, causal mask, the rows' maxima over the tile.
        for (uint32_t i = 0; i < R; ++i) {
            const uint32_t r = r0 + i;
            int64_t vis = diag + r + 1;
            if (vis > N) vis = N;
            LocalTensor<float> row = sc[i * P];
            live[i] = vis > 0;
            if (!live[i]) {  // none of this tile's keys is visible to the row
                Duplicate(row, 0.0f, static_cast<int32_t>(N));
                continue;
            }
            Muls(row, row, scale_, static_cast<int32_t>(N));
            if (vis < N) MaskFrom(row, static_cast<uint32_t>(vis), N);
            ReduceMax(red[i * PER], row, work_.Get<float>(), static_cast<int32_t>(N));
        }
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        // 2. the new running maxima; alpha = exp(m - m') for every row at once (exp(-inf) = 0 on a row's
        //    first visible tile; a row with nothing visible keeps alpha 1).
        for (uint32_t i = 0; i < R; ++i) {
            const uint32_t r = r0 + i;
            if (!live[i]) {
                vec.SetValue(i, 0.0f);
                continue;
            }
            const float tileMax = red.GetValue(i * PER);
            mNew[i] = tileMax > m_[r] ? tileMax : m_[r];
            vec.SetValue(i, m_[r] - mNew[i]);
        }
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Exp(vec, vec, static_cast<int32_t>(R));
        // 3. p = exp(s - m'), the rows' sums.
        for (uint32_t i = 0; i < R; ++i) {
            if (!live[i]) continue;
            LocalTensor<float> row = sc[i * P];
            Adds(row, row, -mNew[i], static_cast<int32_t>(N));
            Exp(row, row, static_cast<int32_t>(N));
            ReduceSum(red[i * PER], row, work_.Get<float>(), static_cast<int32_t>(N));
            if (t_.mutation == 3) Muls(row, row, MUTATE, static_cast<int32_t>(N));
        }
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        for (uint32_t i = 0; i < R; ++i) {
            const uint32_t r = r0 + i;
            const float alpha = vec.GetValue(i);
            alpha_[r] = alpha;
            if (!live[i]) continue;
            l_[r] = alpha * l_[r] + red.GetValue(i * PER);
            m_[r] = mNew[i];
        }
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
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        for (uint32_t j = vis; j < head; ++j) row.SetValue(j, NEG_INF);
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
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
        LocalTensor<float> acc = acc_.Get<float>();
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        for (uint32_t i = 0; i < R; ++i) {
            const uint32_t r = r0 + i;
            LocalTensor<float> a = acc[r * D];
            Muls(a, a, alpha_[r], static_cast<int32_t>(dv));
            Add(a, a, o[i * D], static_cast<int32_t>(dv));
        }
        oQue_.FreeTensor(o);
    }

    // out = t(acc / l), lse = m + ln l for the tile's M rows (query tokens qTok.., head h).
    __aicore__ inline void Finish(uint32_t h, uint64_t qTok, uint32_t M) {
        const uint32_t D = t_.dv_pitch, dv = t_.dv, H = t_.heads;
        LocalTensor<float> acc = acc_.Get<float>();
        for (uint32_t r = 0; r < M; ++r) {
            const float l = t_.mutation == 2 ? l_[r] * MUTATE : l_[r];
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            SetFlag<HardEvent::S_V>(0);
            WaitFlag<HardEvent::S_V>(0);
            Muls(acc[r * D], acc[r * D], inv, static_cast<int32_t>(dv));
        }
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
        // lse rows of head h are contiguous in [H, T]: one vector of M values.
        LocalTensor<float> lse = lseQue_.AllocTensor<float>();
        for (uint32_t r = 0; r < M; ++r) {
            lse.SetValue(r, l_[r] > 0.0f ? m_[r] : NEG_INF);
            lnArg_[r] = l_[r] > 0.0f ? l_[r] : 1.0f;
        }
        // ln l through the vector unit: one Ln over the tile's rows.
        LocalTensor<float> e = small_.Get<float>()[t_.softmax_rows * (UB_BLOCK / sizeof(float))];
        for (uint32_t r = 0; r < M; ++r) e.SetValue(r, lnArg_[r]);
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Ln(e, e, static_cast<int32_t>(M));
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        for (uint32_t r = 0; r < M; ++r) lse.SetValue(r, lse.GetValue(r) + e.GetValue(r));
        lseQue_.EnQue(lse);
        lse = lseQue_.DeQue<float>();
        // The values were written on the scalar unit: MTE3 waits for S, and the next scalar writes for MTE3.
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
        DataCopyPad(lseGm_[static_cast<uint64_t>(h) * t_.tokens_q + qTok], lse,
                    DataCopyExtParams(1, M * static_cast<uint32_t>(sizeof(float)), 0, 0, 0));
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
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
    TBuf<TPosition::VECCALC> acc_, work_, small_;
    GlobalTensor<T> qnGm_, qrGm_, knGm_, krGm_, vGm_, outGm_, pWs_;
    GlobalTensor<float> lseGm_, scoresWs_, oWs_;
    GlobalTensor<int32_t> cuQGm_, cuKGm_;
    DsnpuMlaPrefillTiling t_{};
    float scale_ = 1.0f;
    float m_[MAX_BLOCK_M], l_[MAX_BLOCK_M], alpha_[MAX_BLOCK_M], lnArg_[MAX_BLOCK_M];
};

template <typename T>
__aicore__ inline void MlaPrefill(GM_ADDR qNope, GM_ADDR qRope, GM_ADDR kNope, GM_ADDR kRope, GM_ADDR v, GM_ADDR cuQ,
                                  GM_ADDR cuK, GM_ADDR out, GM_ADDR lse, GM_ADDR workspace, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaPrefillTiling, t, tiling);
    if (t.heads == 0 || t.dn == 0 || t.dv == 0 || t.block_m == 0 || t.block_m > MAX_BLOCK_M || t.block_n == 0 ||
        t.softmax_rows == 0 || t.softmax_rows > MAX_SLAB_ROWS) {
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
