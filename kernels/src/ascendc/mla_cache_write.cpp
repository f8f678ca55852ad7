/*
 * mla_cache_write_<t> (t = f32, f16, bf16): the fused MLA cache write (vllm-ascend's
 * npu_kv_rmsnorm_rope_cache), all arithmetic in f32.
 *
 * For token i of kv [tokens, kv_stride] (the kv_a_proj_with_mqa output: Dl latent elements, then Dr rope
 * elements), with slot = slot_mapping[i] (i32; -1 = padding, skipped):
 *   latent_cache[slot, :] = kv[i, :Dl] / sqrt(mean(kv[i, :Dl]^2) + eps) * weight       (RMSNorm)
 *   rope_cache[slot, :]   = rope(kv[i, Dl:Dl+Dr], positions[i])                          (as rope_<t>)
 * Both results are rounded to t once. The rope pairs are (x[2j], x[2j+1]) (interleaved) or (x[j], x[j+Dr/2])
 * (half-split), a' = a c_j - b s_j, b' = b c_j + a s_j with c, s the f32 table rows at the position (any
 * YaRN scaling already in the tables). Nothing else is written, and no row is read back.
 *
 * Tokens are split across blocks in runs of tokens_per_block and handled one at a time: the two parts of
 * the row are copied into UB (each padded to 32 bytes), normalised / rotated there, and copied out to the
 * cache rows. Slots must not repeat within one launch (blocks scatter in parallel). A slot or position
 * outside the caches / tables faults on the checked GM access; other negative slots than -1 are read as
 * huge unsigned slots and fault the same way.
 *
 * UB use (bytes; s = sizeof(t), Pl = round_up_32(Dl s), Pr = round_up_32(Dr s), Fl = Pl / s * 4,
 * Fr = Pr / s * 4, H = round_up_32(Dr / 2 * 4)):
 *   Pl + Pr [+ Fl + Fr (f32 images, 16-bit t only)] + 2 Fl (weight, scratch)
 *   + 32 + round_up_32(ceil(Dl / 64) * 4) (ReduceSum) + 2 H (cos, sin rows) + 7 Fr (rope work).
 * DeepSeek-V3 (Dl 512, Dr 64) needs about 10 KiB.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/rope_ops.h"
#include "dsnpu_kernels/tiling.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

template <typename T>
class KernelMlaCacheWrite {
    static constexpr bool IS_F32 = IsSame<T, float>::value;

public:
    __aicore__ inline void Init(GM_ADDR kv, GM_ADDR weight, GM_ADDR positions, GM_ADDR cosTable,
                                GM_ADDR sinTable, GM_ADDR slots, GM_ADDR latentCache, GM_ADDR ropeCache,
                                const DsnpuMlaCacheWriteTiling& t) {
        dl_ = t.latent_dim;
        dr_ = t.rope_dim;
        half_ = t.rope_dim / 2;
        stride_ = t.kv_stride;
        layout_ = t.layout;
        eps_ = t.eps;
        const uint64_t first = static_cast<uint64_t>(GetBlockIdx()) * t.tokens_per_block;
        tokens_ = first >= t.tokens ? 0 : Min(t.tokens_per_block, static_cast<uint32_t>(t.tokens - first));
        if (tokens_ == 0 || dl_ == 0 || dr_ == 0 || stride_ < dl_ + dr_) {
            tokens_ = 0;
            return;
        }
        first_ = static_cast<uint32_t>(first);
        kvGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(kv), static_cast<uint64_t>(t.tokens) * stride_);
        wGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(weight), dl_);
        posGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(positions), t.tokens);
        slotGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(slots), t.tokens);
        const uint64_t table = static_cast<uint64_t>(t.table_rows) * half_;
        cosGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(cosTable), table);
        sinGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sinTable), table);
        latGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(latentCache), static_cast<uint64_t>(t.num_slots) * dl_);
        ropeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(ropeCache), static_cast<uint64_t>(t.num_slots) * dr_);

        const uint32_t latBytes = AlignUp(dl_ * sizeof(T), UB_BLOCK);
        const uint32_t ropeBytes = AlignUp(dr_ * sizeof(T), UB_BLOCK);
        latPad_ = latBytes / sizeof(T);
        ropePad_ = ropeBytes / sizeof(T);
        const uint32_t latF = latPad_ * sizeof(float);
        const uint32_t ropeF = ropePad_ * sizeof(float);
        tableBytes_ = AlignUp(half_ * sizeof(float), UB_BLOCK);
        pipe_.InitBuffer(lat_, latBytes);
        pipe_.InitBuffer(rope_, ropeBytes);
        if constexpr (!IS_F32) {
            pipe_.InitBuffer(latF_, latF);
            pipe_.InitBuffer(ropeF_, ropeF);
        }
        pipe_.InitBuffer(wF_, latF);
        pipe_.InitBuffer(tmp_, latF);
        pipe_.InitBuffer(red_, UB_BLOCK + AlignUp(CeilDiv(dl_, 64) * sizeof(float), UB_BLOCK));
        pipe_.InitBuffer(cs_, 2 * tableBytes_);
        pipe_.InitBuffer(cos2_, ropeF);
        pipe_.InitBuffer(sin2_, ropeF);
        pipe_.InitBuffer(tmpA_, ropeF);
        pipe_.InitBuffer(tmpB_, ropeF);
        pipe_.InitBuffer(swap_, ropeF);
        pipe_.InitBuffer(tidx_, ropeF);
        pipe_.InitBuffer(sign_, ropeF);
    }

    __aicore__ inline void Process() {
        if (tokens_ == 0) return;
        RopeIndices(swap_.Get<uint32_t>(), tidx_.Get<uint32_t>(), sign_.Get<float>(), dr_, layout_);
        LoadWeight();
        for (uint32_t i = 0; i < tokens_; ++i) {
            const uint32_t token = first_ + i;
            const int32_t slot = slotGm_.GetValue(token);
            if (slot == -1) continue;
            CopyIn(token, posGm_.GetValue(token));
            Normalize();
            Rotate();
            CopyOut(static_cast<uint32_t>(slot));
        }
    }

private:
    __aicore__ inline DataCopyExtParams Row(uint32_t n) const {
        return DataCopyExtParams(1, n * static_cast<uint32_t>(sizeof(T)), 0, 0, 0);
    }

    // The norm weight in f32, staged through the scratch row for 16-bit types.
    __aicore__ inline void LoadWeight() {
        LocalTensor<float> wf = wF_.Get<float>();
        if constexpr (IS_F32) {
            DataCopyPad(wf, wGm_, Row(dl_), DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        } else {
            LocalTensor<T> raw = tmp_.Get<T>();
            DataCopyPad(raw, wGm_, Row(dl_), DataCopyPadExtParams<T>(false, 0, 0, T(0)));
            SetFlag<HardEvent::MTE2_V>(0);
            WaitFlag<HardEvent::MTE2_V>(0);
            ToFloat(wf, raw, latPad_);
        }
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
    }

    // The token's two row parts and its table rows (a position outside the table faults here).
    __aicore__ inline void CopyIn(uint32_t token, int32_t pos) {
        const DataCopyPadExtParams<T> noPad(false, 0, 0, T(0));
        const uint64_t row = static_cast<uint64_t>(token) * stride_;
        DataCopyPad(lat_.Get<T>(), kvGm_[row], Row(dl_), noPad);
        DataCopyPad(rope_.Get<T>(), kvGm_[row + dl_], Row(dr_), noPad);
        LocalTensor<float> cs = cs_.Get<float>();
        const uint64_t at = static_cast<uint64_t>(static_cast<int64_t>(pos)) * half_;
        const DataCopyExtParams tableRow(1, half_ * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
        const DataCopyPadExtParams<float> noPadF(false, 0, 0, 0.0f);
        DataCopyPad(cs, cosGm_[at], tableRow, noPadF);
        DataCopyPad(cs[tableBytes_ / sizeof(float)], sinGm_[at], tableRow, noPadF);
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
    }

    __aicore__ inline void Normalize() {
        LocalTensor<T> lat = lat_.Get<T>();
        LocalTensor<float> row;
        if constexpr (IS_F32) {
            row = lat;
        } else {
            row = latF_.Get<float>();
            ToFloat(row, lat, latPad_);
        }
        LocalTensor<float> tmp = tmp_.Get<float>();
        LocalTensor<float> red = red_.Get<float>();
        LocalTensor<float> work = red[UB_BLOCK / sizeof(float)];
        Mul(tmp, row, row, dl_);
        ReduceSum(red, tmp, work, dl_);
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        const float meanSq = red.GetValue(0) / static_cast<float>(dl_);
        const float rstd = 1.0f / sqrtf(meanSq + eps_);
        SetFlag<HardEvent::S_V>(0);
        WaitFlag<HardEvent::S_V>(0);
        Muls(row, row, rstd, dl_);
        Mul(row, row, wF_.Get<float>(), dl_);
        if constexpr (!IS_F32) {
            FromFloat(lat, row, latPad_);
        }
    }

    __aicore__ inline void Rotate() {
        LocalTensor<float> cs = cs_.Get<float>();
        LocalTensor<float> cos2 = cos2_.Get<float>();
        LocalTensor<float> sin2 = sin2_.Get<float>();
        RopeTables(cos2, sin2, cs, cs[tableBytes_ / sizeof(float)], tidx_.Get<uint32_t>(), sign_.Get<float>(), dr_);
        LocalTensor<T> rp = rope_.Get<T>();
        LocalTensor<float> row;
        if constexpr (IS_F32) {
            row = rp;
        } else {
            row = ropeF_.Get<float>();
            ToFloat(row, rp, ropePad_);
        }
        RopeRow(rp, row, tmpA_.Get<float>(), tmpB_.Get<float>(), cos2, sin2, swap_.Get<uint32_t>(), dr_);
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
    }

    __aicore__ inline void CopyOut(uint32_t slot) {
        DataCopyPad(latGm_[static_cast<uint64_t>(slot) * dl_], lat_.Get<T>(), Row(dl_));
        DataCopyPad(ropeGm_[static_cast<uint64_t>(slot) * dr_], rope_.Get<T>(), Row(dr_));
        // The next token's rows land in the same UB buffers.
        SetFlag<HardEvent::MTE3_MTE2>(0);
        WaitFlag<HardEvent::MTE3_MTE2>(0);
    }

    TPipe pipe_;
    TBuf<TPosition::VECCALC> lat_, rope_, latF_, ropeF_, wF_, tmp_, red_, cs_, cos2_, sin2_, tmpA_, tmpB_, swap_,
        tidx_, sign_;
    GlobalTensor<T> kvGm_, wGm_, latGm_, ropeGm_;
    GlobalTensor<int32_t> posGm_, slotGm_;
    GlobalTensor<float> cosGm_, sinGm_;
    uint32_t dl_ = 0, dr_ = 0, half_ = 0, stride_ = 0, layout_ = 0, tokens_ = 0, first_ = 0;
    uint32_t latPad_ = 0, ropePad_ = 0, tableBytes_ = 0;
    float eps_ = 0.0f;
};

template <typename T>
__aicore__ inline void MlaCacheWrite(GM_ADDR kv, GM_ADDR weight, GM_ADDR positions, GM_ADDR cosTable,
                                     GM_ADDR sinTable, GM_ADDR slots, GM_ADDR latentCache, GM_ADDR ropeCache,
                                     GM_ADDR tiling) {
    GET_TILING_DATA_WITH_STRUCT(DsnpuMlaCacheWriteTiling, t, tiling);
    KernelMlaCacheWrite<T> op;
    op.Init(kv, weight, positions, cosTable, sinTable, slots, latentCache, ropeCache, t);
    op.Process();
}

}  // namespace

#define DSNPU_MLA_CACHE_WRITE(name, type)                                                                     \
    extern "C" __global__ __aicore__ void DSNPU_KERNEL(name)(GM_ADDR kv, GM_ADDR weight, GM_ADDR positions,   \
                                                             GM_ADDR cosTable, GM_ADDR sinTable, GM_ADDR slots, \
                                                             GM_ADDR latentCache, GM_ADDR ropeCache,          \
                                                             GM_ADDR workspace, GM_ADDR tiling) {             \
        (void)workspace;                                                                                      \
        MlaCacheWrite<type>(kv, weight, positions, cosTable, sinTable, slots, latentCache, ropeCache, tiling); \
    }

DSNPU_MLA_CACHE_WRITE(mla_cache_write_f32, float)
DSNPU_MLA_CACHE_WRITE(mla_cache_write_f16, half)
DSNPU_MLA_CACHE_WRITE(mla_cache_write_bf16, bfloat16_t)

#ifdef DSNPU_ASCENDC_HOST
// The host entry points of this file's kernels, generated from kernels/src/registry.rs.
#include "dsnpu_entries/mla_cache_write.inc"
#endif
