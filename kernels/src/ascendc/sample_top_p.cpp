/*
 * sample_top_p_<t> (t = f32, f16, bf16): temperature/top-p sampling on the device, so a sampled decode
 * step downloads only the ids ([rows] i32) like greedy `argmax_<t>`.
 *
 * Per row r of x [rows, cols], with the uniform u[r] in [0, 1) (f32, drawn on the host by the counter-based
 * generator of dsnpu_ops::sampling, so host and device use the same value):
 *   m = max x;  w_i = exp((x_i - m) * inv_temperature)  (f32; the maximum maps to 1);  Z = sum w;
 *   the nucleus keeps token i when the weight of the tokens ranked before it (larger w, or equal w and a
 *   lower index) is below top_p * Z — the CPU Sampler's rule (Hugging Face's TopPLogitsWarper), found here
 *   without sorting: v = the smallest f32 in (0, 1] with M(v) = sum_{w_j > v} w_j < top_p * Z (the f32
 *   sum in index order; that v is the smallest kept weight), then the tokens of weight v are kept in
 *   index order while M(v) + (earlier ties) < top_p * Z;
 *   the draw walks the kept tokens in ascending index order and returns the first whose cumulative weight
 *   exceeds u * (kept weight); rounding past the end returns the last kept token.
 * A row with NaN, +inf or only -inf gets id -1 (the host turns it into an error).
 * Every step is the CPU Sampler's contract (dsnpu_ops::sampling::Sampler) operation for operation: f32
 * sums in index order, the exp evaluated as the vector Exp does; on the simulator the ids are the CPU's
 * bit for bit.
 *
 * The search for v: a bisection over the f32 bit patterns of a bracket (lo, hi] with M(lo) >= cut and M(hi)
 * < cut, where every probe also snaps the bracket to the row's weights (M only changes where v crosses a
 * weight): lo rises to just below the smallest weight above the probe (M(probe) >= cut), or hi falls to the
 * largest weight at or below it (M(probe) < cut). The bracket starts at (just below the smallest positive
 * weight, 1] and ends with the same v as the CPU's plain bisection over (0, 1] (the smallest pattern with M
 * < cut is a weight), in fewer probes; M(hi) is kept from the probe that set hi, so the ties need no pass
 * of their own. Where probes lie only changes the speed, never v: the total's pass also probes the quarters
 * of the patterns between the first tile's smallest weight and 1 (compared with the cut once the pass has
 * the total; it also copies the weights above the highest of them to the list, used if lo ends at or above
 * it and they fit), and every later pass over the row or the list probes the quarters of the bracket (three
 * sums in registers per element read instead of two more passes; one probe at a time once the bracket spans
 * fewer than four patterns). A probe's sum only sees weights above lo (the others are skipped by the index-
 * order fold, so dropping them changes no bit): once at most list_capacity weights are above lo, the next
 * pass copies them, in index order, into a Unified Buffer list, and later probes and the kept-weight sum
 * read the list (and compact it in place as lo rises) instead of re-reading the row from GM and recomputing
 * exp.
 *
 * Cost per row: a max pass (vector), one tile for the first probes' placement, the total's pass; passes of
 * three probes that stream the row while more than list_capacity weights are above lo (each a GM read of
 * the row, w on the vector unit, one scalar read per element), then passes over the shrinking list; the
 * kept weight over the list; the draw streams the row again up to the token it picks (it needs ids, the
 * list holds weights only). The sums run on the scalar unit, one element after another, because the
 * contract fixes every M(v) as an f32 sum in index order over the whole row: a vectorized or multi-core sum
 * would round differently. One block per row run.
 * UB use (bytes, s = sizeof(t), C = cols_per_tile, L = list_capacity): round_up_32(C s)
 *   [+ round_up_32(C 4), 16-bit t] + 32 (ReduceMax result) + round_up_32(ceil(C / 64) * 2 * 4) (ReduceMax
 *   work) + round_up_32(rows_per_block * 4) (the block's ids, copied out once) + round_up_32(L 4) (list).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling_sample.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
class SampleTopP {
public:
    static constexpr bool IS_F32 = IsSame<T, float>::value;

    __aicore__ inline SampleTopP(const DsnpuSampleTopPTiling& t) : t_(t) {}

    __aicore__ inline void Run(GM_ADDR x, GM_ADDR u, GM_ADDR out) {
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t_.rows_per_block;
        if (first >= t_.rows || t_.cols == 0 || t_.cols_per_tile == 0) return;
        const uint32_t n = Min(t_.rows_per_block, static_cast<uint32_t>(t_.rows - first));
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), static_cast<uint64_t>(t_.rows) * t_.cols);
        uGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(u), t_.rows);
        GlobalTensor<int32_t> outGm;
        outGm.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(out), t_.rows);
        const uint32_t tileBytes = AlignUp(t_.cols_per_tile * sizeof(T), UB_BLOCK);
        pipe_.InitBuffer(raw_, tileBytes);
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(wide_, tileBytes / sizeof(T) * sizeof(float));
        }
        pipe_.InitBuffer(res_, UB_BLOCK);
        pipe_.InitBuffer(work_, AlignUp(CeilDiv(t_.cols_per_tile, 64) * 2 * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(ids_, AlignUp(t_.rows_per_block * sizeof(int32_t), UB_BLOCK));
        if (t_.list_capacity > 0) {
            pipe_.InitBuffer(list_, AlignUp(t_.list_capacity * sizeof(float), UB_BLOCK));
        }
        LocalTensor<int32_t> found = ids_.Get<int32_t>();
        for (uint32_t k = 0; k < n; ++k) {
            const uint64_t r = first + k;
            found.SetValue(k, Row(r, uGm_.GetValue(r)));
        }
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
        DataCopyPad(outGm[first], found, DataCopyExtParams(1, n * static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0));
    }

private:
    // x[r, c0, c0 + c) widened to f32 in UB, ready for the vector unit.
    __aicore__ inline LocalTensor<float> Load(uint64_t r, uint32_t c0, uint32_t c) {
        const DataCopyPadExtParams<T> noPad(false, 0, 0, T(0));
        LocalTensor<T> tile = raw_.Get<T>();
        DataCopyPad(tile, xGm_[r * t_.cols + c0], DataCopyExtParams(1, c * static_cast<uint32_t>(sizeof(T)), 0, 0, 0),
                    noPad);
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
        if constexpr (IS_F32) {
            return tile;
        } else {
            LocalTensor<float> f = wide_.Get<float>();
            Cast(f, tile, RoundMode::CAST_NONE, c);
            return f;
        }
    }

    // The scalar unit is done reading this tile: the next load (MTE2) and vector op (V) may overwrite it.
    __aicore__ inline void TileDone() {
        SetFlag<HardEvent::V_MTE2>(0);
        WaitFlag<HardEvent::V_MTE2>(0);
        SetFlag<HardEvent::S_MTE2>(0);
        WaitFlag<HardEvent::S_MTE2>(0);
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
    }

    // The largest element of row r, compared in f32 (NaN as not larger; a NaN row is caught by the sum).
    __aicore__ inline float RowMax(uint64_t r) {
        float best = 0.0f;
        for (uint32_t c0 = 0; c0 < t_.cols; c0 += t_.cols_per_tile) {
            const uint32_t c = Min(t_.cols_per_tile, t_.cols - c0);
            LocalTensor<float> f = Load(r, c0, c);
            LocalTensor<float> m = res_.Get<float>();
            ReduceMax(m, f, work_.Get<float>(), static_cast<int32_t>(c), false);
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            const float v = m.GetValue(0);
            if (c0 == 0 || v > best) best = v;
            TileDone();
        }
        return best;
    }

    // Calls visit(index, w) for every weight of row r in index order until it returns false.
    template <typename F>
    __aicore__ inline void ForEachWeight(uint64_t r, float m, F& visit) {
        for (uint32_t c0 = 0; c0 < t_.cols; c0 += t_.cols_per_tile) {
            const uint32_t c = Min(t_.cols_per_tile, t_.cols - c0);
            LocalTensor<float> w = Load(r, c0, c);
            Adds(w, w, -m, static_cast<int32_t>(c));
            Muls(w, w, t_.inv_temperature, static_cast<int32_t>(c));
            Exp(w, w, static_cast<int32_t>(c));
            SetFlag<HardEvent::V_S>(0);
            WaitFlag<HardEvent::V_S>(0);
            bool more = true;
            for (uint32_t i = 0; i < c && more; ++i) more = visit(c0 + i, w.GetValue(i));
            TileDone();
            if (!more) return;
        }
    }

    // The nucleus predicate for the tokens in index order: above v, or a tie at v while the weight ranked
    // before it is below the cut.
    struct Kept {
        float v;
        float cut;
        float tieBefore;
        __aicore__ inline bool operator()(float w) {
            if (w > v) return true;
            if (w == v && tieBefore < cut) {
                tieBefore += w;
                return true;
            }
            return false;
        }
    };

    struct KeptMass {
        Kept kept;
        float sum;
        __aicore__ inline bool operator()(uint32_t, float w) {
            if (kept(w)) sum += w;
            return true;
        }
    };

    struct Draw {
        Kept kept;
        float target;
        float cum;
        int32_t last;
        int32_t picked;
        __aicore__ inline bool operator()(uint32_t i, float w) {
            if (!kept(w)) return true;
            last = static_cast<int32_t>(i);
            cum += w;
            if (target < cum) {
                picked = static_cast<int32_t>(i);
                return false;
            }
            return true;
        }
    };

    // One evaluation of M(mid) for the search, with what the bracket snaps to: the smallest weight above
    // mid and the largest in (lo, mid]. When compacting, the weights above lo are written to the list in
    // index order (in place when the list is the source: the write index never passes the read index).
    struct Probe {
        float mid;
        float lo;
        bool compact;
        bool inPlace;  // the list is the source: an entry that stays where it is need not be rewritten
        LocalTensor<float> list;
        float sum;
        uint32_t above;
        float minAbove;
        float maxBelow;
        uint32_t n;
        bool bad;
        __aicore__ inline bool operator()(uint32_t i, float w) {
            if (!(w >= 0.0f && w <= 1.0f)) bad = true;  // NaN: a NaN/+inf logit or an all -inf row
            if (w > mid) {
                sum += w;
                ++above;
                if (w < minAbove) minAbove = w;
            } else if (w > lo && w > maxBelow) {
                maxBelow = w;
            }
            if (compact && w > lo) {
                if (!inPlace || n != i) list.SetValue(n, w);
                ++n;
            }
            return true;
        }
    };

    // Calls visit(index, w) for the weights of row r in index order: all of them, or, once the list is
    // resident, the listed ones (every weight above the list's threshold; index is then the list position).
    template <typename F>
    __aicore__ inline void Scan(uint64_t r, float m, F& visit) {
        if (!resident_) {
            ForEachWeight(r, m, visit);
            return;
        }
        LocalTensor<float> l = list_.Get<float>();
        const uint32_t n = listLen_;
        for (uint32_t i = 0; i < n; ++i) {
            if (!visit(i, l.GetValue(i))) return;
        }
    }

    // A probe at mid over the weights above lo, writing them to the list when compact.
    __aicore__ inline Probe MakeProbe(float mid, float lo, bool compact) {
        const LocalTensor<float> list = t_.list_capacity > 0 ? list_.Get<float>() : LocalTensor<float>();
        return Probe{mid, lo, compact, false, list, 0.0f, 0u, 2.0f, -1.0f, 0u, false};
    }

    __aicore__ inline Probe Evaluate(uint64_t r, float m, float mid, float lo, uint32_t nAbove) {
        const bool compact = resident_ || nAbove <= t_.list_capacity;
        Probe p = MakeProbe(mid, lo, compact);
        p.inPlace = resident_;
        Scan(r, m, p);
        if (compact) {
            resident_ = true;
            listLen_ = p.n;
        }
        return p;
    }

    // The search's bracket: M(lo) >= cut and M(hi) < cut; mHi = M(hi); nAbove = the weights above lo.
    struct Bracket {
        uint32_t lo;
        uint32_t hi;
        float mHi;
        uint32_t nAbove;
        float cut;
        // Narrows the bracket with the probe p at mid (ignored unless mid is inside it). M(v) only changes
        // where v crosses a weight, so lo snaps up to just below the smallest weight above mid and hi down
        // to the largest weight at or below it (p saw every weight above the bracket's lo).
        __aicore__ inline void Apply(uint32_t mid, const Probe& p) {
            if (mid <= lo || mid >= hi) return;
            if (p.sum < cut) {
                hi = p.maxBelow > BitsToFloat(lo) ? FloatToBits(p.maxBelow) : mid;
                mHi = p.sum;
            } else {
                lo = p.above > 0 ? FloatToBits(p.minAbove) - 1 : mid;
                nAbove = p.above;
            }
        }
    };

    // Three probes in one pass over the row.
    struct ThreeProbes {
        Probe q[3];
        __aicore__ inline bool operator()(uint32_t i, float w) {
            q[0](i, w);
            q[1](i, w);
            q[2](i, w);
            return true;
        }
    };

    // The total's pass, which also probes three points of the bracket (its end has no cut yet: the
    // probes are compared once the pass is over).
    // It may also fill the list speculatively (spec, when the row is wider than the list) with the weights
    // above the highest probe, given up if they overflow it. The list is used when the search's lo ends at
    // or above that probe, and spares the pass that would copy it. (Lower probes would fill the list with
    // more weights, costing more writes than the pass they might spare.)
    struct TotalPass {
        Probe total;
        ThreeProbes three;
        LocalTensor<float> list;
        uint32_t cap;
        bool spec;
        uint32_t n;
        __aicore__ inline bool operator()(uint32_t i, float w) {
            total(i, w);
            three(i, w);
            if (spec && w > three.q[2].mid) {
                if (n == cap) {
                    spec = false;
                } else {
                    list.SetValue(n++, w);
                }
            }
            return true;
        }
    };

    // The smallest weight of the row's first tile (w as ForEachWeight computes it; 0 if any is 0): where
    // the total's pass places its probes, a guess of the row's smallest weight (only the speed depends
    // on it).
    __aicore__ inline float FirstTileMinWeight(uint64_t r, float m) {
        const uint32_t c = Min(t_.cols_per_tile, t_.cols);
        LocalTensor<float> w = Load(r, 0, c);
        Adds(w, w, -m, static_cast<int32_t>(c));
        Muls(w, w, t_.inv_temperature, static_cast<int32_t>(c));
        Exp(w, w, static_cast<int32_t>(c));
        Muls(w, w, -1.0f, static_cast<int32_t>(c));
        LocalTensor<float> res = res_.Get<float>();
        ReduceMax(res, w, work_.Get<float>(), static_cast<int32_t>(c), false);
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        const float v = -res.GetValue(0);
        TileDone();
        return v;
    }

    __aicore__ inline int32_t Row(uint64_t r, float u) {
        resident_ = false;
        listLen_ = 0;
        const float m = RowMax(r);
        // Probes at the quarters of the bit patterns between the first tile's smallest weight and 1.
        const float w0 = FirstTileMinWeight(r, m);
        const uint32_t one = 0x3F800000u;
        const uint32_t base = (w0 > 0.0f && w0 < 1.0f) ? FloatToBits(w0) : 1u;
        const uint32_t quarter = (one - base) / 4;
        const uint32_t mids[3] = {base + quarter, base + 2 * quarter, base + 3 * quarter};
        // Every weight is > 0 or 0, so the sum of those above 0 is the total (an exact f32 sum in index
        // order: the contract's M(0)).
        const bool compact = t_.cols <= t_.list_capacity;
        TotalPass tp{MakeProbe(0.0f, 0.0f, compact), {}, MakeProbe(0.0f, 0.0f, false).list, t_.list_capacity,
                     !compact && t_.list_capacity > 0, 0u};
        for (uint32_t k = 0; k < 3; ++k) {
            tp.three.q[k] = MakeProbe(BitsToFloat(mids[k]), 0.0f, false);
        }
        ForEachWeight(r, m, tp);
        if (compact) {
            resident_ = true;
            listLen_ = tp.total.n;
        }
        const Probe& total = tp.total;
        if (total.bad) return -1;
        const float cut = t_.top_p * total.sum;
        // From (just below the smallest positive weight, 1] (M(1) = 0: no weight exceeds 1), a bisection
        // over the bit patterns that snaps to the weights: it ends at the same smallest v with M(v) < cut
        // as the plain bisection over (0, 1] (that v is a weight), in fewer probes.
        Bracket br{FloatToBits(total.minAbove) - 1, one, 0.0f, total.above, cut};
        for (uint32_t k = 0; k < 3; ++k) br.Apply(mids[k], tp.three.q[k]);
        if (tp.spec && br.lo >= mids[2]) {
            // Every weight above lo is above the list's probe: the list holds them, in index order.
            resident_ = true;
            listLen_ = tp.n;
        }
        while (br.hi - br.lo > 1) {
            const uint32_t quarter = (br.hi - br.lo) / 4;
            if (quarter > 0) {
                // Three probes per pass over the row or the list (three sums in registers per element
                // read instead of two more passes); the first also compacts.
                const uint32_t qm[3] = {br.lo + quarter, br.lo + 2 * quarter, br.lo + 3 * quarter};
                const float lo = BitsToFloat(br.lo);
                const bool compact = resident_ || br.nAbove <= t_.list_capacity;
                ThreeProbes sp{};
                for (uint32_t k = 0; k < 3; ++k) {
                    sp.q[k] = MakeProbe(BitsToFloat(qm[k]), lo, k == 0 && compact);
                }
                sp.q[0].inPlace = resident_;
                Scan(r, m, sp);
                if (compact) {
                    resident_ = true;
                    listLen_ = sp.q[0].n;
                }
                for (uint32_t k = 0; k < 3; ++k) br.Apply(qm[k], sp.q[k]);
                continue;
            }
            const uint32_t mid = br.lo + (br.hi - br.lo) / 2;
            br.Apply(mid, Evaluate(r, m, BitsToFloat(mid), BitsToFloat(br.lo), br.nAbove));
        }
        const uint32_t hi = br.hi;
        const float mHi = br.mHi;
        const float v = BitsToFloat(hi);
        // The kept tokens all weigh at least v > lo: the list (when resident) holds them in index order.
        KeptMass km{Kept{v, cut, mHi}, 0.0f};
        Scan(r, m, km);
        // The draw needs ids: it walks the row itself, stopping at the picked token.
        Draw d{Kept{v, cut, mHi}, u * km.sum, 0.0f, -1, -1};
        ForEachWeight(r, m, d);
        return d.picked >= 0 ? d.picked : d.last;
    }

    const DsnpuSampleTopPTiling& t_;
    TPipe pipe_;
    TBuf<TPosition::VECCALC> raw_, wide_, res_, work_, ids_, list_;
    bool resident_ = false;
    uint32_t listLen_ = 0;
    GlobalTensor<T> xGm_;
    GlobalTensor<float> uGm_;
};

template <typename T>
__aicore__ inline void Sample(GM_ADDR x, GM_ADDR u, GM_ADDR out, GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuSampleTopPTiling, t, tiling);
    SampleTopP<T> op(t);
    op.Run(x, u, out);
}

}  // namespace

#define DSNPU_SAMPLE_TOP_P(name, type)                                                                         \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(name)(GM_ADDR x, GM_ADDR u, GM_ADDR out,               \
                                                             GM_ADDR workspace, GM_ADDR tiling) {             \
        (void)workspace;                                                                                      \
        Sample<type>(x, u, out, tiling);                                                                      \
    }

DSNPU_SAMPLE_TOP_P(sample_top_p_f32, float)
DSNPU_SAMPLE_TOP_P(sample_top_p_f16, half)
DSNPU_SAMPLE_TOP_P(sample_top_p_bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/sample_top_p.inc"
#endif
