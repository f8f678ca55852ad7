// Host implementation of the core of Ascend C's high-level Matmul API (lib/matmul_intf.h).
//
// Contract: C[singleCoreM x singleCoreN] = A[singleCoreM x singleCoreK] * B[singleCoreK x singleCoreN]
// (+ bias[singleCoreN]) for the operands set on the object, in ND layout with leading dimensions from the
// tiling's original shape (A: Ka, or M when transposed; B: N, or Kb when transposed; C: N, or the orgKc of
// SetOrgShape when it is not 0 — B's and C's rows may then differ, as in CANN). Products are
// accumulated in f32 in ascending k, the bias added in f32, and the result rounded to C's type
// (nearest-even) — what the cube's L0C accumulator and fixpipe do. The work is walked in baseM x baseN
// output tiles with baseK steps: all at once (IterateAll) or one tile per Iterate, written by GetTensorC.
// Init checks the tiling's buffers as TCubeTiling's documented constraints state: base blocks times
// dbL0A/B/C within L0A/L0B (64 KiB) and L0C (128 KiB as f32), depthA1/depthB1 blocks plus the bias row
// within L1 (512 KiB), depth = step * (1 or 2); a violation faults the block. Every GM row segment read
// or written is checked (tensor size + allocation table).
//
// Where it runs: on a plain launch, on the calling block; in a mix launch, on the cube core: either
// called there (under ASCEND_IS_AIC, after Init), or driven from the vector cores through
// REGIST_MATMUL_OBJ as CANN does on dav-c220 (lib/matmul_intf.h of asc-devkit): on the cube core the
// macro initialises the objects, serves the vector cores' requests until both have returned, and returns
// from the calling function; on a vector core it initialises the objects as clients. A client's Set*
// calls stay local; IterateAll, Iterate, GetTensorC and End are requests (mix.h's kChanKfcRequest) that
// the cube core runs on its instance for that vector core (one per vector core, as CANN's server keeps),
// with the client's operands as they were when it asked. A request is synchronous (the vector core resumes
// after the cube served it: the reply orders the cube's MTE2, M and FIX work before the client's later
// instructions) unless made with IterateAll<false> / Iterate<false>: then it stays in flight while the
// vector core goes on, until WaitIterateAll, End or its next request of any object waits for it (one in
// flight per vector core),
// and the request is ordered after what the client's scalar unit issued or waited for, so an operand the
// client wrote to GM on MTE3 needs an MTE3_S flag before the call (the race check reports it otherwise).
// Iterate(true) (enPartialSum) adds a product to the tile still in L0C; GetTensorC moves it out once.
// C goes to GM only (GetTensorC into a LocalTensor is not implemented). A Matmul used on a vector core of
// a mix launch without REGIST_MATMUL_OBJ faults.
//
// Counters: cube_macs += m*n*k of each step (no padding to 16x16x16 fractals); GM traffic: every output
// tile streams its A and B panels (and bias) once, counted in gm_to_ub_bytes, unless the tile before it
// (in the same IterateAll, or the same run of Iterate calls) used the same panel and the tiling's depth
// holds all of its k steps (depthA1 >= stepM * k steps, depthB1 >= stepN * k steps): then it is still in
// L1 and moves nothing, as CANN's NORM Matmul keeps a fully loaded K in its CubeInBuffer (asc-devkit's
// copy_cube_in_norm.h and cube_in_buffer_normal.h: a k step's tile hits until SetTensorA/B resets the
// buffer). Each tile writes its C tile once, counted in ub_to_gm_bytes (on the device these go through
// L1/L0C, not UB).
// Cycle model (dsnpu_host/cost.h): each base step loads its A and B panels on MTE2, multiplies on M in
// 16x16x16 fractals (each padded dimension rounded up to 16) after its load, and each output tile leaves
// through FIX after its last step; L0 double buffering is assumed, so loads overlap the previous step.
#ifndef DSNPU_ASCENDC_LIB_MATMUL_INTF_H
#define DSNPU_ASCENDC_LIB_MATMUL_INTF_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../ascendc_host_api.h"

enum class CubeFormat : uint8_t {
    ND = 0,
    NZ,
    ZN,
    ZZ,
    NN,
    ND_ALIGN,
    SCALAR,
    VECTOR,
};

// TCubeTiling: the fields of CANN's documented table (TCubeTiling结构体.md), in its order, all int32; the
// reserved ones (share*, batch*) are carried but unused. dsnpu's host tiling functions fill it
// (kernels/src/tiling_cube.rs, mirrored as DsnpuCubeTiling in dsnpu_kernels/tiling.h).
struct TCubeTiling {
    int32_t usedCoreNum = 1;
    int32_t M = 0;
    int32_t N = 0;
    int32_t Ka = 0;
    int32_t Kb = 0;
    int32_t singleCoreM = 0;
    int32_t singleCoreN = 0;
    int32_t singleCoreK = 0;
    int32_t baseM = 0;
    int32_t baseN = 0;
    int32_t baseK = 0;
    int32_t depthA1 = 1;
    int32_t depthB1 = 1;
    int32_t stepM = 1;
    int32_t stepN = 1;
    int32_t isBias = 0;
    int32_t transLength = 0;
    int32_t iterateOrder = 0;
    int32_t shareMode = 0;
    int32_t shareL1Size = 0;
    int32_t shareL0CSize = 0;
    int32_t shareUbSize = 0;
    int32_t batchM = 0;
    int32_t batchN = 0;
    int32_t singleBatchM = 0;
    int32_t singleBatchN = 0;
    int32_t stepKa = 1;
    int32_t stepKb = 1;
    int32_t depthAL1CacheUB = 0;
    int32_t depthBL1CacheUB = 0;
    int32_t dbL0A = 1;
    int32_t dbL0B = 1;
    int32_t dbL0C = 1;
};

namespace AscendC {

template <TPosition POSITION, CubeFormat FORMAT, typename TYPE, bool ISTRANS = false>
struct MatmulType {
    static constexpr TPosition pos = POSITION;
    static constexpr CubeFormat format = FORMAT;
    static constexpr bool isTrans = ISTRANS;
    using T = TYPE;
};

namespace detail {
constexpr uint64_t kL1Bytes = 512 * 1024;
constexpr uint64_t kL0ABytes = 64 * 1024;
constexpr uint64_t kL0BBytes = 64 * 1024;
constexpr uint64_t kL0CBytes = 128 * 1024;
}  // namespace detail

template <class A_TYPE, class B_TYPE, class C_TYPE, class BIAS_TYPE = MatmulType<TPosition::GM, CubeFormat::ND, float>>
class Matmul {
    using A = typename A_TYPE::T;
    using B = typename B_TYPE::T;
    using C = typename C_TYPE::T;
    using Bias = typename BIAS_TYPE::T;
    static_assert(A_TYPE::format == CubeFormat::ND && B_TYPE::format == CubeFormat::ND &&
                      C_TYPE::format == CubeFormat::ND,
                  "the host Matmul implements ND layouts only");
    static_assert(A_TYPE::pos == TPosition::GM && B_TYPE::pos == TPosition::GM && C_TYPE::pos == TPosition::GM,
                  "the host Matmul implements GM operands only");

public:
    __aicore__ inline void Init(const TCubeTiling* tiling, TPipe* pipe = nullptr) {
        (void)pipe;
        const char* op = "Matmul::Init";
        if (tiling == nullptr) ::dsnpu::host::fail("%s: no tiling", op);
        t_ = *tiling;
        if (t_.M <= 0 || t_.N <= 0 || t_.Ka <= 0 || t_.Kb <= 0 || t_.singleCoreM <= 0 || t_.singleCoreN <= 0 ||
            t_.singleCoreK <= 0 || t_.baseM <= 0 || t_.baseN <= 0 || t_.baseK <= 0) {
            ::dsnpu::host::fail("%s: non-positive shape in the tiling (M %d N %d Ka %d Kb %d single %d/%d/%d base %d/%d/%d)",
                                op, t_.M, t_.N, t_.Ka, t_.Kb, t_.singleCoreM, t_.singleCoreN, t_.singleCoreK,
                                t_.baseM, t_.baseN, t_.baseK);
        }
        check_buffers(op);
        m_ = t_.singleCoreM;
        n_ = t_.singleCoreN;
        k_ = t_.singleCoreK;
        bias_on_ = t_.isBias != 0;
        init_ = true;
    }
    __aicore__ inline void SetOrgShape(int orgM, int orgN, int orgKa, int orgKb = 0, int orgKc = 0) {
        t_.M = orgM;
        t_.N = orgN;
        t_.Ka = orgKa;
        t_.Kb = orgKb == 0 ? orgKa : orgKb;
        org_kc_ = orgKc;
    }
    __aicore__ inline void SetSingleShape(int singleM, int singleN, int singleK) { SetTail(singleM, singleN, singleK); }
    __aicore__ inline void SetTensorA(const GlobalTensor<A>& gm, bool isTransposeA = false) {
        a_ = gm;
        trans_a_ = isTransposeA;
        has_a_ = true;
        panel_a_.valid = false;  // CANN's SetInput resets the operand's L1 buffer
    }
    __aicore__ inline void SetTensorB(const GlobalTensor<B>& gm, bool isTransposeB = false) {
        b_ = gm;
        trans_b_ = isTransposeB;
        has_b_ = true;
        panel_b_.valid = false;
    }
    __aicore__ inline void SetBias(const GlobalTensor<Bias>& gm) {
        bias_ = gm;
        bias_on_ = true;
        has_bias_ = true;
    }
    __aicore__ inline void DisableBias() { bias_on_ = false; }
    // Reset this core's singleCoreM/N/K (for the tail blocks); -1 keeps a value.
    __aicore__ inline void SetTail(int tailM = -1, int tailN = -1, int tailK = -1) {
        if (tailM != -1) m_ = tailM;
        if (tailN != -1) n_ = tailN;
        if (tailK != -1) k_ = tailK;
    }

    // Compute the whole C block and write it to `gm` (adding to it with enAtomic = 1). sync = false, from
    // a vector core: the request stays in flight while the vector core goes on (WaitIterateAll, the next
    // request or End waits for it); on the cube core itself the call runs in place either way.
    template <bool sync = true>
    __aicore__ inline void IterateAll(const GlobalTensor<C>& gm, uint8_t enAtomic = 0) {
        if (client_) {
            kfc_call([gm, enAtomic](Matmul& s) { s.IterateAll(gm, enAtomic); }, sync);
            return;
        }
        const char* op = "Matmul::IterateAll";
        check_ready(op);
        drop_panels();
        const int64_t ldc = org_kc_ != 0 ? org_kc_ : t_.N;
        for (int64_t m0 = 0; m0 < m_; m0 += t_.baseM) {
            const int64_t bm = std::min<int64_t>(t_.baseM, m_ - m0);
            for (int64_t n0 = 0; n0 < n_; n0 += t_.baseN) {
                const int64_t bn = std::min<int64_t>(t_.baseN, n_ - n0);
                compute_tile(op, m0, bm, n0, bn);
                store_tile(op, gm[static_cast<uint64_t>(m0 * ldc + n0)], ldc, bm, bn, enAtomic);
            }
        }
    }
    // One baseM x baseN tile of C per call, in iterateOrder (0: down M first, then along N), computed into
    // the L0C accumulator; false when the block is done.
    // enPartialSum: the product of the operands now set is added to the tile still in L0C (computed by
    // an earlier Iterate and not yet moved out by GetTensorC), as CANN documents it: only for a C of one
    // tile (singleCoreM <= baseM, singleCoreN <= baseN; here the current tail shape) and the same tile
    // extent; returns true. This is how a sum over operand pieces that are not one strided matrix (cache
    // rows in scattered pages) stays in L0C instead of going to GM and back per piece.
    // sync = false, from a vector core: as IterateAll<false>, and returns true (the result is not known
    // yet; use it for a C of one tile).
    template <bool sync = true>
    __aicore__ inline bool Iterate(bool enPartialSum = false) {
        if (client_) {
            if (!sync) {
                kfc_call([enPartialSum](Matmul& s) { (void)s.Iterate(enPartialSum); }, false);
                return true;
            }
            bool more = false;
            kfc_call([&more, enPartialSum](Matmul& s) { more = s.Iterate(enPartialSum); });
            return more;
        }
        const char* op = "Matmul::Iterate";
        check_ready(op);
        if (enPartialSum) {
            if (tile_bm_ == 0) ::dsnpu::host::fail("%s: enPartialSum without a tile in L0C (Iterate first)", op);
            if (bias_on_) ::dsnpu::host::fail("%s: enPartialSum with a bias (it would be added again)", op);
            if (m_ > t_.baseM || n_ > t_.baseN || m_ != tile_bm_ || n_ != tile_bn_ || tile_m0_ != 0 || tile_n0_ != 0) {
                ::dsnpu::host::fail("%s: enPartialSum needs C to be the one tile in L0C (C %dx%d, base %dx%d, tile "
                                    "%lldx%lld)",
                                    op, m_, n_, t_.baseM, t_.baseN, static_cast<long long>(tile_bm_),
                                    static_cast<long long>(tile_bn_));
            }
            drop_panels();
            compute_tile(op, 0, tile_bm_, 0, tile_bn_, true);
            return true;
        }
        if (iter_ == 0) drop_panels();
        const int64_t mt = (m_ + t_.baseM - 1) / t_.baseM, nt = (n_ + t_.baseN - 1) / t_.baseN;
        if (iter_ >= mt * nt) {
            iter_ = 0;
            return false;
        }
        const int64_t i = t_.iterateOrder == 0 ? iter_ % mt : iter_ / nt;
        const int64_t j = t_.iterateOrder == 0 ? iter_ / mt : iter_ % nt;
        ++iter_;
        tile_m0_ = i * t_.baseM;
        tile_n0_ = j * t_.baseN;
        tile_bm_ = std::min<int64_t>(t_.baseM, m_ - tile_m0_);
        tile_bn_ = std::min<int64_t>(t_.baseN, n_ - tile_n0_);
        compute_tile(op, tile_m0_, tile_bm_, tile_n0_, tile_bn_);
        return true;
    }
    // The tile of the last Iterate to GM through FIX: at its place in C (leading dimension N, or orgKc),
    // or with enSequentialWrite compactly at `gm` (tile rows x tile columns, row pitch = tile columns).
    __aicore__ inline void GetTensorC(const GlobalTensor<C>& gm, uint8_t enAtomic = 0, bool enSequentialWrite = false) {
        if (client_) {
            kfc_call([gm, enAtomic, enSequentialWrite](Matmul& s) { s.GetTensorC(gm, enAtomic, enSequentialWrite); });
            return;
        }
        const char* op = "Matmul::GetTensorC";
        if (tile_bm_ == 0) ::dsnpu::host::fail("%s: no tile (call Iterate first)", op);
        const int64_t ldc = enSequentialWrite ? tile_bn_ : (org_kc_ != 0 ? org_kc_ : t_.N);
        const GlobalTensor<C> at =
            enSequentialWrite ? gm : gm[static_cast<uint64_t>(tile_m0_ * ldc + tile_n0_)];
        store_tile(op, at, ldc, tile_bm_, tile_bn_, enAtomic);
        tile_bm_ = 0;
    }
    // Waits for the asynchronous request in flight (none: nothing to wait for).
    __aicore__ inline void WaitIterateAll() {
        if (client_) kfc_drain();
    }
    __aicore__ inline void End() {
        if (client_) kfc_call([](Matmul& s) { s.End(); });
        has_a_ = has_b_ = has_bias_ = false;
        iter_ = 0;
    }

    // --- the host layer's REGIST_MATMUL_OBJ (below), not Ascend C API ---------------------------------
    // This object becomes its vector core's client of the cube core's object number `index`.
    void dsnpu_bind_client(uint32_t index) {
        client_ = true;
        kfc_index_ = index;
    }
    // A tag unique to this Matmul type: a request names the type it expects the server's object to have.
    static const void* dsnpu_type_tag() {
        static const char tag = 0;
        return &tag;
    }

private:
    // The operands and shapes a client set: what a request carries to the cube core's instance, taken
    // when the request is made (an asynchronous one runs later, after the client may have set others).
    struct Operands {
        TCubeTiling t;
        GlobalTensor<A> a;
        GlobalTensor<B> b;
        GlobalTensor<Bias> bias;
        int m, n, k, org_kc;
        bool trans_a, trans_b, has_a, has_b, has_bias, bias_on;
    };
    Operands operands() const {
        return Operands{t_, a_, b_, bias_, m_, n_, k_, org_kc_, trans_a_, trans_b_, has_a_, has_b_, has_bias_, bias_on_};
    }
    void adopt(const Operands& c) {
        // New operands (a client's SetTensorA / SetTensorB between two requests) are new panels.
        if (c.a.GetPhyAddr() != a_.GetPhyAddr() || c.trans_a != trans_a_) panel_a_.valid = false;
        if (c.b.GetPhyAddr() != b_.GetPhyAddr() || c.trans_b != trans_b_) panel_b_.valid = false;
        t_ = c.t;
        a_ = c.a;
        b_ = c.b;
        bias_ = c.bias;
        m_ = c.m;
        n_ = c.n;
        k_ = c.k;
        org_kc_ = c.org_kc;
        trans_a_ = c.trans_a;
        trans_b_ = c.trans_b;
        has_a_ = c.has_a;
        has_b_ = c.has_b;
        has_bias_ = c.has_bias;
        bias_on_ = c.bias_on;
    }
    // Sends `f` to run on the cube core's instance of this object with this client's operands as they
    // are now; with `sync` waits for it, else leaves it in flight (one per vector core, whatever the
    // object: its next request, WaitIterateAll or End waits for it first, so replies come in order).
    template <class F>
    void kfc_call(F&& f, bool sync = true) {
        namespace h = ::dsnpu::host;
        kfc_drain();
        h::BlockState& b = h::block();
        const uint32_t me = h::core_slot(b);
        h::Pipeline& pl = h::pipeline();
        pl.cost().flag_op(h::kPipeS);
        std::function<void(void*)> run;
        if (sync) {
            // The client waits below, so its operands and `f` stay as they are until the cube ran it (and
            // the closure is small enough to need no allocation).
            run = [this, &f](void* server) {
                Matmul& s = *static_cast<Matmul*>(server);
                s.adopt(operands());
                f(s);
            };
        } else {
            // Runs after the client may have set other operands: from a snapshot, which the next request
            // may overwrite only after waiting for this one.
            async_ops_ = operands();
            run = [ops = &async_ops_, g = std::forward<F>(f)](void* server) {
                Matmul& s = *static_cast<Matmul*>(server);
                s.adopt(*ops);
                g(s);
            };
        }
        b.group->kfc_request(me, kfc_index_, dsnpu_type_tag(), std::move(run), pl.publish(h::kPipeS));
        b.group->kfc_in_flight(me) = true;
        if (sync) kfc_drain();
    }
    // Waits for this vector core's request in flight, if any: its scalar unit resumes after the cube's
    // work.
    void kfc_drain() {
        namespace h = ::dsnpu::host;
        h::BlockState& b = h::block();
        bool& in_flight = b.group->kfc_in_flight(h::core_slot(b));
        if (!in_flight) return;
        in_flight = false;
        h::Pipeline& pl = h::pipeline();
        h::Edge done;
        const std::string r = b.group->wait_channel(h::core_slot(b), h::kChanKfcReply, &done);
        if (r == "abort") throw h::BlockAbort{};
        if (!r.empty()) h::fail_msg(r.c_str());
        pl.cost().flag_op(h::kPipeS);
        pl.wait(h::kPipeS, done);
    }

    void check_ready(const char* op) {
        if (!init_) ::dsnpu::host::fail("%s: Init (REGIST_MATMUL_OBJ) was not called", op);
        const ::dsnpu::host::BlockState& b = ::dsnpu::host::block();
        if (b.group != nullptr && b.kind == ::dsnpu::host::CoreKind::kAiv) {
            ::dsnpu::host::fail("%s: a Matmul on a vector core of a mix launch sends its work to the cube core: "
                                "register it with REGIST_MATMUL_OBJ, or run it under ASCEND_IS_AIC",
                                op);
        }
        if (!has_a_ || !has_b_) ::dsnpu::host::fail("%s: SetTensorA/SetTensorB missing", op);
        if (bias_on_ && !has_bias_) ::dsnpu::host::fail("%s: the tiling has isBias but SetBias was not called", op);
        if (m_ <= 0 || n_ <= 0 || k_ <= 0) ::dsnpu::host::fail("%s: empty shape %dx%dx%d", op, m_, n_, k_);
    }

    // The documented TCubeTiling constraints on the cube's buffers (TCubeTiling结构体.md, table 2): L0A,
    // L0B and L0C hold their base blocks (times dbL0A/B/C), L1 holds depthA1 A blocks, depthB1 B blocks
    // and the bias row, and depthA1 = stepM * stepKa * (1 or 2), depthB1 = stepN * stepKb * (1 or 2).
    void check_buffers(const char* op) {
        auto bad_db = [](int32_t v) { return v != 1 && v != 2; };
        if (bad_db(t_.dbL0A) || bad_db(t_.dbL0B) || bad_db(t_.dbL0C) || t_.depthA1 <= 0 || t_.depthB1 <= 0 ||
            t_.stepM <= 0 || t_.stepN <= 0 || t_.stepKa <= 0 || t_.stepKb <= 0) {
            ::dsnpu::host::fail("%s: dbL0A/B/C %d/%d/%d must be 1 or 2 and depth/step positive (depthA1 %d depthB1 %d "
                                "stepM %d stepN %d stepKa %d stepKb %d)",
                                op, t_.dbL0A, t_.dbL0B, t_.dbL0C, t_.depthA1, t_.depthB1, t_.stepM, t_.stepN,
                                t_.stepKa, t_.stepKb);
        }
        const int64_t a_steps = static_cast<int64_t>(t_.stepM) * t_.stepKa;
        const int64_t b_steps = static_cast<int64_t>(t_.stepN) * t_.stepKb;
        if (t_.depthA1 != a_steps && t_.depthA1 != 2 * a_steps) {
            ::dsnpu::host::fail("%s: depthA1 %d is neither stepM * stepKa = %lld nor twice it", op, t_.depthA1,
                                static_cast<long long>(a_steps));
        }
        if (t_.depthB1 != b_steps && t_.depthB1 != 2 * b_steps) {
            ::dsnpu::host::fail("%s: depthB1 %d is neither stepN * stepKb = %lld nor twice it", op, t_.depthB1,
                                static_cast<long long>(b_steps));
        }
        const uint64_t a_blk = static_cast<uint64_t>(t_.baseM) * t_.baseK * sizeof(A);
        const uint64_t b_blk = static_cast<uint64_t>(t_.baseK) * t_.baseN * sizeof(B);
        const uint64_t l0a = a_blk * t_.dbL0A;
        const uint64_t l0b = b_blk * t_.dbL0B;
        const uint64_t l0c = static_cast<uint64_t>(t_.baseM) * t_.baseN * sizeof(float) * t_.dbL0C;
        if (l0a > detail::kL0ABytes || l0b > detail::kL0BBytes || l0c > detail::kL0CBytes) {
            ::dsnpu::host::fail("%s: base tile %dx%dx%d needs L0A %llu, L0B %llu, L0C %llu bytes (limits 65536, 65536, "
                                "131072)",
                                op, t_.baseM, t_.baseN, t_.baseK, static_cast<unsigned long long>(l0a),
                                static_cast<unsigned long long>(l0b), static_cast<unsigned long long>(l0c));
        }
        const uint64_t l1 = a_blk * t_.depthA1 + b_blk * t_.depthB1 +
                            (t_.isBias != 0 ? static_cast<uint64_t>(t_.baseN) * sizeof(Bias) : 0);
        if (l1 > detail::kL1Bytes) {
            ::dsnpu::host::fail("%s: L1 needs %llu bytes (depthA1 %d x %llu + depthB1 %d x %llu%s), the cube core has "
                                "524288",
                                op, static_cast<unsigned long long>(l1), t_.depthA1,
                                static_cast<unsigned long long>(a_blk), t_.depthB1,
                                static_cast<unsigned long long>(b_blk), t_.isBias != 0 ? " + bias" : "");
        }
    }

    // C tile [m0, m0 + bm) x [n0, n0 + bn) into acc_ (f32, + bias): the k steps of the cube, onto what
    // acc_ holds with `accumulate` (enPartialSum), else from zero.
    void compute_tile(const char* op, int64_t m0, int64_t bm, int64_t n0, int64_t bn, bool accumulate = false) {
        const int64_t lda = trans_a_ ? t_.M : t_.Ka;
        const int64_t ldb = trans_b_ ? t_.Kb : t_.N;
        dsnpu_sim_counters& ctr = ::dsnpu::host::counters();
        if (!accumulate) acc_.assign(static_cast<size_t>(bm * bn), 0.0f);
        // The A panel of rows [m0, m0 + bm) and the B panel of columns [n0, n0 + bn), whole K, held in L1
        // by the tile before when the depths hold every k step (a hit moves nothing from GM).
        const int64_t k_steps = (k_ + t_.baseK - 1) / t_.baseK;
        const bool keep_a = t_.depthA1 >= static_cast<int64_t>(t_.stepM) * k_steps;
        const bool keep_b = t_.depthB1 >= static_cast<int64_t>(t_.stepN) * k_steps;
        const bool hit_a = keep_a && panel_a_.holds(m0, bm, k_);
        const bool hit_b = keep_b && panel_b_.holds(n0, bn, k_);
        if (keep_a && !hit_a) panel_a_.begin(m0, bm, k_, k_steps);
        if (keep_b && !hit_b) panel_b_.begin(n0, bn, k_, k_steps);
        for (int64_t k0 = 0; k0 < k_; k0 += t_.baseK) {
            const int64_t bk = std::min<int64_t>(t_.baseK, k_ - k0);
            const size_t step = static_cast<size_t>(k0 / t_.baseK);
            model_load(bm, bn, bk, lda, ldb, m0, n0, k0, hit_a, hit_b);
            // A held panel's step is read where it is kept; a panel being kept is loaded there.
            std::vector<float>& af = keep_a ? panel_a_.steps[step] : af_;
            std::vector<float>& bf = keep_b ? panel_b_.steps[step] : bf_;
            if (!hit_a) load(op, a_, trans_a_, lda, m0, bm, k0, bk, af, false);  // af[i*bk + kk]
            if (!hit_b) load(op, b_, !trans_b_, ldb, n0, bn, k0, bk, bf, true);  // bf[kk*bn + j]
            // Each output accumulates in f32, in ascending k, one rounded product and one rounded sum
            // per step (the order of a dot product per output); the loop runs along j, over
            // independent outputs, so it pipelines (and vectorizes) instead of waiting on one sum.
            for (int64_t i = 0; i < bm; ++i) {
                const float* ar = &af[static_cast<size_t>(i * bk)];
                float* __restrict acc = &acc_[static_cast<size_t>(i * bn)];
                for (int64_t kk = 0; kk < bk; ++kk) {
                    const float a = ar[kk];
                    const float* __restrict br = &bf[static_cast<size_t>(kk * bn)];
                    for (int64_t j = 0; j < bn; ++j) acc[j] += a * br[j];
                }
            }
            ctr.cube_macs += static_cast<uint64_t>(bm * bn * bk);
            model_mmad(bm, bn, bk);
            if (!hit_a) ctr.gm_to_ub_bytes += static_cast<uint64_t>(bm * bk) * sizeof(A);
            if (!hit_b) ctr.gm_to_ub_bytes += static_cast<uint64_t>(bk * bn) * sizeof(B);
        }
        if (keep_a) panel_a_.valid = true;
        if (keep_b) panel_b_.valid = true;
        if (bias_on_) {
            const Bias* bp = bias_.dsnpu_span(op, static_cast<uint64_t>(n0), static_cast<uint64_t>(bn));
            (void)::dsnpu::host::l2_access(bp, static_cast<uint64_t>(bn) * sizeof(Bias), false);  // untimed, as before
            ::dsnpu::host::gm_read(op, bp, static_cast<uint64_t>(bn) * sizeof(Bias));
            for (int64_t i = 0; i < bm; ++i) {
                for (int64_t j = 0; j < bn; ++j) {
                    acc_[static_cast<size_t>(i * bn + j)] += static_cast<float>(::dsnpu::host::Elem<Bias>::to_d(bp[j]));
                }
            }
            ctr.gm_to_ub_bytes += static_cast<uint64_t>(bn) * sizeof(Bias);
        }
    }
    // acc_ (bm x bn) to GM rows of pitch ldc starting at `at`, rounded to C (+ what is there with enAtomic).
    void store_tile(const char* op, const GlobalTensor<C>& at, int64_t ldc, int64_t bm, int64_t bn, uint8_t enAtomic) {
        // The output's own enAtomic is modelled; the core's DMA atomic mode (SetAtomicAdd, atomic.h) is not.
        if (::dsnpu::host::block().atomic_op != ::dsnpu::host::AtomicOp::kNone) {
            ::dsnpu::host::fail("%s: the core's atomic mode (SetAtomicAdd and its kin) is set: Matmul output under "
                                "it is not modelled (use the output's enAtomic)",
                                op);
        }
        ::dsnpu::host::L2Split split;
        for (int64_t i = 0; i < bm; ++i) {
            ::dsnpu::host::add_split(split, ::dsnpu::host::l2_access(at.GetPhyAddr(static_cast<uint64_t>(i * ldc)),
                                                                     static_cast<uint64_t>(bn) * sizeof(C), true));
        }
        model_fix(split);
        for (int64_t i = 0; i < bm; ++i) {
            C* cp = at.dsnpu_span(op, static_cast<uint64_t>(i * ldc), static_cast<uint64_t>(bn));
            if (enAtomic) ::dsnpu::host::gm_read(op, cp, static_cast<uint64_t>(bn) * sizeof(C));
            for (int64_t j = 0; j < bn; ++j) {
                float v = acc_[static_cast<size_t>(i * bn + j)];
                if (enAtomic) v += static_cast<float>(::dsnpu::host::Elem<C>::to_d(cp[j]));
                cp[j] = ::dsnpu::host::Elem<C>::from_d(v);
            }
            ::dsnpu::host::gm_wrote(op, cp, static_cast<uint64_t>(bn) * sizeof(C));
        }
        ::dsnpu::host::counters().ub_to_gm_bytes += static_cast<uint64_t>(bm * bn) * sizeof(C);
    }

    // The cycle model of one base step: MTE2 loads (issued before the loads' GM accesses, which the race
    // check tags with it), then M, ordered after its load.
    // The L2 model sees the GM rows load() below reads, in the same order.
    // A panel held in L1 (`hit_a` / `hit_b`) loads nothing; with both held the step issues no load.
    void model_load(int64_t bm, int64_t bn, int64_t bk, int64_t lda, int64_t ldb, int64_t m0, int64_t n0, int64_t k0,
                    bool hit_a, bool hit_b) {
        namespace h = ::dsnpu::host;
        if (hit_a && hit_b) return;
        h::Pipeline& pl = h::pipeline();
        h::L2Split split;
        if (!hit_a) l2_rows(a_, trans_a_, lda, m0, bm, k0, bk, split);
        if (!hit_b) l2_rows(b_, !trans_b_, ldb, n0, bn, k0, bk, split);
        pl.issue(h::kPipeMte2, "Matmul(load A/B)", pl.cost().mte_cycles(split), h::cost::kMteLatency);
    }
    template <typename T>
    static void l2_rows(const GlobalTensor<T>& g, bool k_strided, int64_t ld, int64_t r0, int64_t rows, int64_t k0,
                        int64_t bk, ::dsnpu::host::L2Split& split) {
        namespace h = ::dsnpu::host;
        if (!k_strided) {
            for (int64_t r = 0; r < rows; ++r) {
                h::add_split(split, h::l2_access(g.GetPhyAddr(static_cast<uint64_t>((r0 + r) * ld + k0)),
                                                 static_cast<uint64_t>(bk) * sizeof(T), false));
            }
        } else {
            for (int64_t kk = 0; kk < bk; ++kk) {
                h::add_split(split, h::l2_access(g.GetPhyAddr(static_cast<uint64_t>((k0 + kk) * ld + r0)),
                                                 static_cast<uint64_t>(rows) * sizeof(T), false));
            }
        }
    }
    void model_mmad(int64_t bm, int64_t bn, int64_t bk) {
        namespace h = ::dsnpu::host;
        h::Pipeline& pl = h::pipeline();
        pl.wait(h::kPipeM, pl.publish(h::kPipeMte2));
        const double fractals = std::ceil(bm / 16.0) * std::ceil(bn / 16.0) * std::ceil(bk / 16.0);
        const double rate = sizeof(A) == 1 ? 2.0 : sizeof(A) == 4 ? 0.5 : 1.0;  // fractals per cycle (cost.h)
        pl.issue(h::kPipeM, "Matmul(Mmad)", fractals / rate);
    }
    // The output tile leaves through FIX after the cube finished it.
    void model_fix(const ::dsnpu::host::L2Split& split) {
        namespace h = ::dsnpu::host;
        h::Pipeline& pl = h::pipeline();
        pl.wait(h::kPipeFix, pl.publish(h::kPipeM));
        pl.issue(h::kPipeFix, "Matmul(Fixpipe)", pl.cost().mte_cycles(split), h::cost::kMteLatency);
    }

    // Load rows [r0, r0 + rows) x k-range [k0, k0 + bk) of an operand as f32 into out[r * bk + kk], or
    // with `k_major` into out[kk * rows + r]. `k_strided`: k runs down a stored column (A transposed, B not
    // transposed), else along a stored row.
    template <typename T>
    static void load(const char* op, const GlobalTensor<T>& g, bool k_strided, int64_t ld, int64_t r0,
                     int64_t rows, int64_t k0, int64_t bk, std::vector<float>& out, bool k_major) {
        out.resize(static_cast<size_t>(rows * bk));
        const int64_t r_step = k_major ? 1 : bk;
        const int64_t k_step = k_major ? rows : 1;
        float* o = out.data();
        if (!k_strided) {
            for (int64_t r = 0; r < rows; ++r) {
                const T* p = g.dsnpu_span(op, static_cast<uint64_t>((r0 + r) * ld + k0), static_cast<uint64_t>(bk));
                ::dsnpu::host::gm_read(op, p, static_cast<uint64_t>(bk) * sizeof(T));
                // The next k step reads the bytes after these in every row: a few cache lines per row, too
                // short a run for the host's stream prefetcher, so a decode's weight load waited on memory
                // latency row by row. Asking for them now overlaps that wait (a prefetch never faults).
                for (int64_t b = 0; b < bk * static_cast<int64_t>(sizeof(T)); b += 64) {
                    __builtin_prefetch(reinterpret_cast<const char*>(p + bk) + b, 0, 1);
                }
                for (int64_t kk = 0; kk < bk; ++kk) {
                    o[r * r_step + kk * k_step] = static_cast<float>(::dsnpu::host::Elem<T>::to_d(p[kk]));
                }
            }
        } else {
            for (int64_t kk = 0; kk < bk; ++kk) {
                const T* p = g.dsnpu_span(op, static_cast<uint64_t>((k0 + kk) * ld + r0), static_cast<uint64_t>(rows));
                ::dsnpu::host::gm_read(op, p, static_cast<uint64_t>(rows) * sizeof(T));
                for (int64_t r = 0; r < rows; ++r) {
                    o[r * r_step + kk * k_step] = static_cast<float>(::dsnpu::host::Elem<T>::to_d(p[r]));
                }
            }
        }
    }

    // One operand's panel (rows or columns [r0, r0 + rows), all of K) held in L1 across output tiles, as
    // CANN's NORM Matmul keeps it when depthA1 (depthB1) holds every k step of stepM (stepN) base blocks
    // (its CubeInBuffer: "k full load", a k step's tile hits while the buffer holds it): here within one
    // IterateAll or one run of Iterate calls, for the tiles that follow each other with the same panel.
    // Host side: the f32 values of each k step, so a hit reads nothing from GM.
    struct Panel {
        bool valid = false;
        int64_t r0 = 0, rows = 0, k = 0;
        std::vector<std::vector<float>> steps;
        bool holds(int64_t at, int64_t n, int64_t kk) const { return valid && r0 == at && rows == n && k == kk; }
        void begin(int64_t at, int64_t n, int64_t kk, int64_t k_steps) {
            valid = false;
            r0 = at;
            rows = n;
            k = kk;
            steps.resize(static_cast<size_t>(k_steps));
        }
    };
    void drop_panels() {
        panel_a_.valid = false;
        panel_b_.valid = false;
    }

    TCubeTiling t_{};
    Panel panel_a_, panel_b_;
    GlobalTensor<A> a_;
    GlobalTensor<B> b_;
    GlobalTensor<Bias> bias_;
    int m_ = 0, n_ = 0, k_ = 0, org_kc_ = 0;
    int64_t iter_ = 0, tile_m0_ = 0, tile_n0_ = 0, tile_bm_ = 0, tile_bn_ = 0;
    std::vector<float> af_, bf_, acc_;
    bool trans_a_ = false, trans_b_ = false;
    bool has_a_ = false, has_b_ = false, has_bias_ = false, bias_on_ = false, init_ = false;
    bool client_ = false;
    uint32_t kfc_index_ = 0;
    Operands async_ops_{};  // the operands of this client's asynchronous request
};

}  // namespace AscendC

// Older CANN samples spell these through the matmul namespace.
namespace matmul {
using AscendC::Matmul;
using AscendC::MatmulType;
}  // namespace matmul

// REGIST_MATMUL_OBJ(&pipe, workspace, mm, &tiling[, mm2, &t2]...): initialise Matmul objects with their
// tilings. In a mix launch, on the cube core: serve the vector cores' requests, then `return` from the
// calling (void) function, as CANN's macro does; on a vector core: the objects become clients. Elsewhere
// (a plain launch): the objects run on the calling block.
#define REGIST_MATMUL_OBJ(tpipe, workspace, ...)                                      \
    if (::dsnpu::host::kfc_serve((tpipe), (workspace), __VA_ARGS__)) return;         \
    ::dsnpu::host::regist_matmul(0, (tpipe), (workspace), __VA_ARGS__)

namespace dsnpu {
namespace host {
inline void regist_matmul(uint32_t, AscendC::TPipe*, GM_ADDR) {}
template <class MM, class... Rest>
inline void regist_matmul(uint32_t index, AscendC::TPipe* pipe, GM_ADDR ws, MM& mm, const TCubeTiling* tiling,
                          Rest&&... rest) {
    mm.Init(tiling, pipe);
    const BlockState& b = block();
    if (b.group != nullptr && b.kind == CoreKind::kAiv) mm.dsnpu_bind_client(index);
    regist_matmul(index + 1, pipe, ws, rest...);
}

// The cube core's instances of one registered object, one per vector core.
struct KfcInstancesBase {
    virtual ~KfcInstancesBase() = default;
};
template <class MM>
struct KfcInstances : KfcInstancesBase {
    explicit KfcInstances(const MM& mm) : inst{mm, mm} {}
    MM inst[2];
};

inline void kfc_instances(std::vector<MixGroup::KfcObject>&, std::vector<std::unique_ptr<KfcInstancesBase>>&,
                          AscendC::TPipe*) {}
template <class MM, class... Rest>
inline void kfc_instances(std::vector<MixGroup::KfcObject>& objects,
                          std::vector<std::unique_ptr<KfcInstancesBase>>& keep, AscendC::TPipe* pipe, MM& mm,
                          const TCubeTiling* tiling, Rest&&... rest) {
    mm.Init(tiling, pipe);
    std::unique_ptr<KfcInstances<MM>> inst(new KfcInstances<MM>(mm));
    MixGroup::KfcObject o;
    o.type = MM::dsnpu_type_tag();
    o.inst[0] = &inst->inst[0];
    o.inst[1] = &inst->inst[1];
    objects.push_back(o);
    keep.push_back(std::move(inst));
    kfc_instances(objects, keep, pipe, rest...);
}

// On the cube core of a mix launch: serve the vector cores' Matmul requests until both returned; true.
// Elsewhere false (nothing done).
template <class... Args>
inline bool kfc_serve(AscendC::TPipe* pipe, GM_ADDR workspace, Args&&... args) {
    (void)workspace;
    BlockState& b = block();
    if (b.group == nullptr || b.kind != CoreKind::kAic) return false;
    std::vector<MixGroup::KfcObject> objects;
    std::vector<std::unique_ptr<KfcInstancesBase>> keep;
    kfc_instances(objects, keep, pipe, args...);
    b.group->kfc_publish(std::move(objects));
    Pipeline& pl = pipeline();
    for (;;) {
        Edge request;
        const std::string r = b.group->wait_channel(kSlotAic, kChanKfcRequest, &request);
        if (r == "quit") break;
        if (r == "abort") throw BlockAbort{};
        if (!r.empty()) fail_msg(r.c_str());
        MixGroup::KfcRequest req = b.group->kfc_pop();
        pl.cost().flag_op(kPipeS);
        pl.wait(kPipeS, request);
        const char* why = "";
        void* inst = b.group->kfc_instance(req, &why);
        if (inst == nullptr) fail("REGIST_MATMUL_OBJ: %s (request from %s)", why, slot_name(req.from));
        req.run(inst);
        // The reply orders everything the cube did for it: its loads, multiplies and stores.
        Edge done = pl.publish(kPipeMte2);
        for (uint32_t p : {static_cast<uint32_t>(kPipeM), static_cast<uint32_t>(kPipeFix)}) {
            const Edge e = pl.publish(p);
            done.clock.join(e.clock);
            done.time = done.time > e.time ? done.time : e.time;
        }
        b.group->kfc_reply(req.from, done);
    }
    b.group->kfc_publish({});
    return true;
}
}  // namespace host
}  // namespace dsnpu

#endif
