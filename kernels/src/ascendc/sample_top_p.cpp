/*
 * sample_top_p_<t> (t = f32, f16, bf16): temperature/top-p sampling on the device, so a sampled decode
 * step downloads only the ids ([rows] i32) like greedy `argmax_<t>`.
 *
 * Per row r of x [rows, cols], with the uniform u[r] in [0, 1) (f32, drawn on the host by the counter-based
 * generator of dsnpu_ops::sampling, so host and device use the same value):
 *   m = max x;  w_i = exp((x_i - m) * inv_temperature)  (f32; the maximum maps to 1);  Z = sum w;
 *   the nucleus keeps token i when the weight of the tokens ranked before it (larger w, or equal w and a
 *   lower index) is below top_p * Z — the CPU Sampler's rule (Hugging Face's TopPLogitsWarper), found here
 *   without sorting: bisection over the f32 bit patterns in (0, 1] for the smallest v with
 *   M(v) = sum_{w_j > v} w_j < top_p * Z (that v is the smallest kept weight), then the tokens of weight v
 *   are kept in index order while M(v) + (earlier ties) * v < top_p * Z;
 *   the draw walks the kept tokens in ascending index order and returns the first whose cumulative weight
 *   exceeds u * (kept weight); rounding past the end returns the last kept token.
 * A row with NaN, +inf or only -inf gets id -1 (the host turns it into an error).
 * Every step is the CPU Sampler's contract (dsnpu_ops::sampling::Sampler) operation for operation: f32
 * sums in index order, the exp evaluated as the vector Exp does; on the simulator the ids are the CPU's
 * bit for bit.
 *
 * Cost: 35 passes over the row (max, total, 30 bisection steps, the tie prefix, the kept weight, the draw) (each re-reads the row and recomputes w with the vector unit);
 * the sums and comparisons run on the scalar unit. A first version: correct on every shape, slow for a
 * 129k vocabulary on real hardware (a vector compare/select would move the passes to the vector unit).
 * UB use (bytes, s = sizeof(t), C = cols_per_tile): round_up_32(C s) [+ round_up_32(C 4), 16-bit t]
 *   + 32 (ReduceMax result) + round_up_32(ceil(C / 64) * 2 * 4) (ReduceMax work)
 *   + round_up_32(rows_per_block * 4) (the block's ids, copied out once).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling_sample.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

__aicore__ inline float BitsToFloat(uint32_t b) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = b;
    return v.f;
}

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

    // sum of the weights above v (f32, index order).
    struct Above {
        float v;
        float sum;
        bool bad;
        __aicore__ inline bool operator()(uint32_t, float w) {
            if (!(w >= 0.0f && w <= 1.0f)) bad = true;  // NaN: a NaN/+inf logit or an all -inf row
            if (w > v) sum += w;
            return true;
        }
    };

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

    __aicore__ inline float Mass(uint64_t r, float m, float v, bool* bad) {
        Above a{v, 0.0f, false};
        ForEachWeight(r, m, a);
        if (bad != nullptr) *bad = a.bad;
        return a.sum;
    }

    __aicore__ inline int32_t Row(uint64_t r, float u) {
        const float m = RowMax(r);
        bool bad = false;
        // Every weight is > 0 or 0, so the sum of those above 0 is the total.
        const float z = Mass(r, m, 0.0f, &bad);
        if (bad) return -1;
        const float cut = t_.top_p * z;
        // Invariant: M(lo) >= cut (M(0) = z >= top_p z) and M(hi) < cut (M(1) = 0: no weight exceeds 1).
        uint32_t lo = 0, hi = 0x3F800000u;
        while (hi - lo > 1) {
            const uint32_t mid = lo + (hi - lo) / 2;
            if (Mass(r, m, BitsToFloat(mid), nullptr) < cut) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        const float v = BitsToFloat(hi);
        const float before = Mass(r, m, v, nullptr);
        KeptMass km{Kept{v, cut, before}, 0.0f};
        ForEachWeight(r, m, km);
        Draw d{Kept{v, cut, before}, u * km.sum, 0.0f, -1, -1};
        ForEachWeight(r, m, d);
        return d.picked >= 0 ? d.picked : d.last;
    }

    const DsnpuSampleTopPTiling& t_;
    TPipe pipe_;
    TBuf<TPosition::VECCALC> raw_, wide_, res_, work_, ids_;
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

DSNPU_HOST_ENTRY(sample_top_p_f32)
DSNPU_HOST_ENTRY(sample_top_p_f16)
DSNPU_HOST_ENTRY(sample_top_p_bf16)
