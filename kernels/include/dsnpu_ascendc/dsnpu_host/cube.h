// The cube core's basic instructions: GM -> L1 with the ND-to-NZ conversion (DataCopy with Nd2NzParams),
// L1 -> L0A/L0B (LoadData with LoadData2DParams), the matrix multiply (Mmad) and L0C -> GM (Fixpipe with
// FixpipeParamsV220), as on dav-c220 (910B/910C).
//
// Layouts (asc-devkit examples/03_libraries/01_matrix/mmad_s8_f16_f32_with_A_B_transpose_option, the
// DataCopy ND2NZ, LoadData, Mmad and Fixpipe API pages). C0 = 32 / sizeof(T) elements; a fractal is 16 x C0
// elements, 512 bytes (L0C: 16 x 16 f32, 1 KiB).
// - L1, NZ: the fractals of a matrix stored column block by column block ("N"), rows inside one fractal
//   contiguous, C0 elements each ("Z"). ND2NZ writes element (r, c) of ND matrix i to
//   i * dstNzMatrixStride + (c / C0) * dstNzC0Stride * C0 + r * dstNzNStride * C0 + c % C0 (strides in
//   elements, C0 units and C0 units); the tail of a last column block past dValue is written as 0.
// - L0A, ZZ: A[m, k] as fractals in row-block order, k blocks of C0 inside each row of fractals, each
//   fractal row-major: element (i, kk) at ((i / 16) * ceil(k / C0) + kk / C0) * 16 * C0 + (i % 16) * C0 + kk % C0.
// - L0B, ZN: B[k, n] as fractals of C0 k by 16 n in k-block order, 16-column blocks inside, each fractal
//   column-major (the C0 k of one column contiguous): element (kk, j) at
//   ((kk / C0) * ceil(n / 16) + j / 16) * 16 * C0 + (j % 16) * C0 + kk % C0. An L1 NZ matrix of B^T [n, k]
//   (B "transposed" in GM) has this layout already (LoadData without transpose); an L1 NZ B [k, n] needs
//   each 16 x 16 fractal transposed on the way (LoadData with ifTranspose, 16-bit types only: f32 needs
//   LoadData3DV2 or LoadDataWithTranspose, not modelled, a fault here).
// - L0C, NZ: C[m, n] f32 as 16 x 16 fractals in column-block order: element (i, j) at
//   ((j / 16) * ceil(m / 16) + i / 16) * 256 + (i % 16) * 16 + j % 16.
// - Mmad(C, A, B, {m, n, k}) reads ceil(m / 16) x ceil(k / C0) fractals of A and ceil(k / C0) x ceil(n / 16) of B
//   from the operands' first addresses and writes (cmatrixInitVal) or adds to (otherwise) the
//   ceil(m / 16) x ceil(n / 16) fractals of C; padded rows and columns compute whatever the padding holds,
//   and the k sum runs over exactly k. Products are summed in f32 in ascending k, as the Matmul model.
// - Fixpipe(dst, C, {nSize, mSize, srcStride, dstStride}) writes C's [mSize, nSize] corner to GM row-major
//   (row pitch dstStride elements), rounding f32 to the destination type when quantPre asks for it
//   (F322F16, F322BF16; NoQuant keeps f32); srcStride is the distance between C's column blocks in rows of
//   a fractal (16 f32): the M16 = ceil(m / 16) * 16 of the Mmad.
// Checks: every operand must be in the memory its instruction reads or writes (a fault names it), every
// access within the operand's extent, every GM access within the GlobalTensor and the allocation table;
// LoadData's repeatTimes 1..255, Mmad's m, n, k 1..4095. Not modelled: bias, ReLU-free quantization modes
// other than the three above, unit flags, and the race / initialisation checks inside L1 and L0 (the UB
// has them; here only the pipes' ordering is timed).
// Pipes and cost (cost.h): ND2NZ on MTE2 (as a DataCopy: the L2 model, 500 cycles latency), LoadData on
// MTE1 (kMte1BytesPerCycle, GUESS), Mmad on M (16 x 16 x 16 fractals per cycle as the Matmul model), Fixpipe
// on FIX (as a GM store). The hand-overs between them are the kernel's: queues at A1/B1 (MTE2 -> MTE1),
// A2/B2 (MTE1 -> M) and CO1 (M -> FIX) or SetFlag/WaitFlag. Counters: gm_to_ub_bytes gets the GM bytes
// ND2NZ reads, ub_to_gm_bytes those Fixpipe writes (as the Matmul model counts its loads and stores),
// cube_macs m * n * k per Mmad.
#ifndef DSNPU_ASCENDC_HOST_CUBE_H
#define DSNPU_ASCENDC_HOST_CUBE_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "atomic.h"
#include "block.h"
#include "pipeline.h"
#include "tensor.h"
#include "types.h"

namespace AscendC {

struct Nd2NzParams {
    __aicore__ Nd2NzParams() = default;
    __aicore__ Nd2NzParams(uint16_t ndNumIn, uint16_t nValueIn, uint16_t dValueIn, uint16_t srcNdMatrixStrideIn,
                           uint16_t srcDValueIn, uint16_t dstNzC0StrideIn, uint16_t dstNzNStrideIn,
                           uint16_t dstNzMatrixStrideIn)
        : ndNum(ndNumIn), nValue(nValueIn), dValue(dValueIn), srcNdMatrixStride(srcNdMatrixStrideIn),
          srcDValue(srcDValueIn), dstNzC0Stride(dstNzC0StrideIn), dstNzNStride(dstNzNStrideIn),
          dstNzMatrixStride(dstNzMatrixStrideIn) {}
    uint16_t ndNum = 0;
    uint16_t nValue = 0;             // rows
    uint16_t dValue = 0;             // columns (elements)
    uint16_t srcNdMatrixStride = 0;  // elements between ND matrices
    uint16_t srcDValue = 0;          // elements between rows
    uint16_t dstNzC0Stride = 0;      // C0 units (32 bytes) between column blocks
    uint16_t dstNzNStride = 0;       // C0 units between rows
    uint16_t dstNzMatrixStride = 0;  // elements between NZ matrices
};

struct LoadData2DParams {
    __aicore__ LoadData2DParams() = default;
    __aicore__ LoadData2DParams(uint16_t startIndexIn, uint8_t repeatTimesIn, uint16_t srcStrideIn, uint8_t sidIn,
                                uint16_t dstGapIn, bool ifTransposeIn, uint8_t addrModeIn)
        : startIndex(startIndexIn), repeatTimes(repeatTimesIn), srcStride(srcStrideIn), sid(sidIn),
          dstGap(dstGapIn), ifTranspose(ifTransposeIn), addrMode(addrModeIn) {}
    uint16_t startIndex = 0;  // fractals (512 bytes) into the source
    uint8_t repeatTimes = 0;  // fractals moved
    uint16_t srcStride = 0;   // fractals between the starts of consecutive source fractals
    uint8_t sid = 0;
    uint16_t dstGap = 0;      // fractals between the end of one destination fractal and the next
    bool ifTranspose = false;
    uint8_t addrMode = 0;
};

struct MmadParams {
    __aicore__ MmadParams() = default;
    __aicore__ MmadParams(uint16_t mIn, uint16_t nIn, uint16_t kIn, bool isBiasIn, int32_t fmOffsetIn,
                          bool enSsparseIn, bool enWinogradAIn, bool enWinogradBIn)
        : m(mIn), n(nIn), k(kIn), isBias(isBiasIn), fmOffset(fmOffsetIn), enSsparse(enSsparseIn),
          enWinogradA(enWinogradAIn), enWinogradB(enWinogradBIn) {}
    uint16_t m = 0;
    uint16_t n = 0;
    uint16_t k = 0;
    bool isBias = false;
    int32_t fmOffset = 0;
    bool enSsparse = false;
    bool enWinogradA = false;
    bool enWinogradB = false;
    uint8_t unitFlag = 0;
    bool kDirectionAlign = false;
    bool cmatrixSource = false;
    bool cmatrixInitVal = true;  // C = A B; false: C += A B
};

enum class QuantMode_t : uint8_t { NoQuant = 0, F322F16, F322BF16 };

struct FixpipeParamsV220 {
    __aicore__ FixpipeParamsV220() = default;
    __aicore__ FixpipeParamsV220(uint16_t nSizeIn, uint16_t mSizeIn, uint16_t srcStrideIn, uint32_t dstStrideIn,
                                 bool reluEnIn)
        : nSize(nSizeIn), mSize(mSizeIn), srcStride(srcStrideIn), dstStride(dstStrideIn), reluEn(reluEnIn) {}
    uint16_t nSize = 0;
    uint16_t mSize = 0;
    uint16_t srcStride = 0;  // rows (of 16 f32) between C's column blocks in L0C
    uint32_t dstStride = 0;  // elements between GM rows
    QuantMode_t quantPre = QuantMode_t::NoQuant;
    uint64_t deqScalar = 0;
    uint16_t ndNum = 1;
    uint16_t srcNdStride = 0;
    uint16_t dstNdStride = 0;
    bool reluEn = false;
    uint8_t unitFlag = 0;
    bool isChannelSplit = false;
};

enum class CO2Layout : uint8_t { NZ = 0, ROW_MAJOR, COLUMN_MAJOR };
struct FixpipeConfig {
    CO2Layout format;
};
constexpr FixpipeConfig CFG_NZ = {CO2Layout::NZ};
constexpr FixpipeConfig CFG_ROW_MAJOR = {CO2Layout::ROW_MAJOR};

namespace detail {
template <typename T>
constexpr uint32_t c0() {
    return 32 / sizeof(T);
}
inline uint32_t ceil_div(uint32_t a, uint32_t b) { return (a + b - 1) / b; }
}  // namespace detail

// GM -> L1 with the ND-to-NZ conversion (on MTE2).
template <typename T>
__aicore__ inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const Nd2NzParams& p) {
    namespace h = ::dsnpu::host;
    constexpr const char* op = "DataCopy(ND2NZ)";
    constexpr uint32_t C0 = detail::c0<T>();
    if (p.ndNum == 0 || p.nValue == 0 || p.dValue == 0) return;
    if (p.nValue > 16384) h::fail("%s: nValue %u is above 16384", op, p.nValue);
    const uint32_t blocks = detail::ceil_div(p.dValue, C0);
    // The last element written, to check the destination extent once.
    const uint64_t last = static_cast<uint64_t>(p.ndNum - 1) * p.dstNzMatrixStride +
                          static_cast<uint64_t>(blocks - 1) * p.dstNzC0Stride * C0 +
                          static_cast<uint64_t>(p.nValue - 1) * p.dstNzNStride * C0 + C0;
    T* d = dst.dsnpu_cube_span(op, "the destination", h::Mem::kL1, last);
    h::L2Split split;
    const uint64_t row_bytes = static_cast<uint64_t>(p.dValue) * sizeof(T);
    for (uint32_t nd = 0; nd < p.ndNum; ++nd) {
        for (uint32_t r = 0; r < p.nValue; ++r) {
            const uint64_t at = static_cast<uint64_t>(nd) * p.srcNdMatrixStride + static_cast<uint64_t>(r) * p.srcDValue;
            h::add_split(split, h::l2_access(src.GetPhyAddr(at), row_bytes, false));
        }
    }
    h::Pipeline& pl = h::pipeline();
    pl.issue(h::kPipeMte2, op, pl.cost().mte_cycles(split), h::cost::kMteLatency);
    for (uint32_t nd = 0; nd < p.ndNum; ++nd) {
        for (uint32_t r = 0; r < p.nValue; ++r) {
            const uint64_t at = static_cast<uint64_t>(nd) * p.srcNdMatrixStride + static_cast<uint64_t>(r) * p.srcDValue;
            const T* s = src.dsnpu_span(op, at, p.dValue);
            h::gm_read(op, s, row_bytes);
            for (uint32_t b = 0; b < blocks; ++b) {
                T* o = d + static_cast<uint64_t>(nd) * p.dstNzMatrixStride + static_cast<uint64_t>(b) * p.dstNzC0Stride * C0 +
                       static_cast<uint64_t>(r) * p.dstNzNStride * C0;
                const uint32_t c0 = b * C0;
                const uint32_t n = p.dValue - c0 < C0 ? p.dValue - c0 : C0;
                std::memcpy(o, s + c0, n * sizeof(T));
                if (n < C0) std::memset(static_cast<void*>(o + n), 0, (C0 - n) * sizeof(T));
            }
        }
    }
    h::counters().gm_to_ub_bytes += static_cast<uint64_t>(p.ndNum) * p.nValue * row_bytes;
}

// L1 -> L0A or L0B, fractal by fractal (on MTE1).
template <typename T>
__aicore__ inline void LoadData(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LoadData2DParams& p) {
    namespace h = ::dsnpu::host;
    constexpr const char* op = "LoadData";
    constexpr uint32_t kFrac = 512 / sizeof(T);  // elements of one fractal
    if (p.repeatTimes == 0) h::fail("%s: repeatTimes 0 (1..255)", op);
    if (p.ifTranspose && sizeof(T) != 2) {
        h::fail("%s: ifTranspose transposes 16 x 16 fractals of 16-bit types; a %zu-byte type needs LoadData3DV2 or "
                "LoadDataWithTranspose, which this layer does not model",
                op, sizeof(T));
    }
    if (dst.dsnpu_mem() != h::Mem::kL0A && dst.dsnpu_mem() != h::Mem::kL0B) {
        h::fail("%s: the destination is in %s, the instruction writes L0A or L0B", op, h::mem_name(dst.dsnpu_mem()));
    }
    const uint64_t src_end = (static_cast<uint64_t>(p.startIndex) + static_cast<uint64_t>(p.repeatTimes - 1) * p.srcStride + 1) * kFrac;
    const uint64_t dst_end = (static_cast<uint64_t>(p.repeatTimes - 1) * (1 + p.dstGap) + 1) * kFrac;
    const T* s = src.dsnpu_cube_span(op, "the source", h::Mem::kL1, src_end);
    T* d = dst.dsnpu_cube_span(op, "the destination", dst.dsnpu_mem(), dst_end);
    h::Pipeline& pl = h::pipeline();
    pl.issue(h::kPipeMte1, op, static_cast<double>(p.repeatTimes) * 512.0 / h::cost::kMte1BytesPerCycle,
             h::cost::kMte1Latency);
    for (uint32_t i = 0; i < p.repeatTimes; ++i) {
        const T* f = s + (static_cast<uint64_t>(p.startIndex) + static_cast<uint64_t>(i) * p.srcStride) * kFrac;
        T* o = d + static_cast<uint64_t>(i) * (1 + p.dstGap) * kFrac;
        if (!p.ifTranspose) {
            std::memcpy(o, f, 512);
        } else {
            for (uint32_t r = 0; r < 16; ++r) {
                for (uint32_t c = 0; c < 16; ++c) o[c * 16 + r] = f[r * 16 + c];
            }
        }
    }
}

// C (L0C, f32) = or += A (L0A) x B (L0B), on M.
template <typename T, typename U, typename S>
__aicore__ inline void Mmad(const LocalTensor<T>& c, const LocalTensor<U>& a, const LocalTensor<S>& b, const MmadParams& p) {
    namespace h = ::dsnpu::host;
    constexpr const char* op = "Mmad";
    static_assert(sizeof(T) == 4, "Mmad accumulates in f32 (or s32) in L0C");
    static_assert(sizeof(U) == sizeof(S), "Mmad's A and B have one element type");
    constexpr uint32_t C0 = detail::c0<U>();
    if (p.m == 0 || p.n == 0 || p.k == 0 || p.m > 4095 || p.n > 4095 || p.k > 4095) {
        h::fail("%s: m, n, k = %u, %u, %u (each 1..4095)", op, p.m, p.n, p.k);
    }
    if (p.isBias || p.cmatrixSource) h::fail("%s: a bias (isBias, cmatrixSource) is not modelled", op);
    const uint32_t mb = detail::ceil_div(p.m, 16), nb = detail::ceil_div(p.n, 16), kb = detail::ceil_div(p.k, C0);
    const U* pa = a.dsnpu_cube_span(op, "A", h::Mem::kL0A, static_cast<uint64_t>(mb) * kb * 16 * C0);
    const S* pb = b.dsnpu_cube_span(op, "B", h::Mem::kL0B, static_cast<uint64_t>(kb) * nb * 16 * C0);
    float* pc = reinterpret_cast<float*>(c.dsnpu_cube_span(op, "C", h::Mem::kL0C, static_cast<uint64_t>(mb) * nb * 256));
    h::Pipeline& pl = h::pipeline();
    const double fractals = static_cast<double>(mb) * nb * std::ceil(p.k / 16.0);
    const double rate = sizeof(U) == 1 ? 2.0 : sizeof(U) == 4 ? 0.5 : 1.0;  // fractals per cycle (cost.h)
    pl.issue(h::kPipeM, op, fractals / rate);
    // Unpack A [M, k] and B [k, N] to f32 row-major once, then accumulate each output in ascending k
    // (one rounded product and one rounded sum per step, as the Matmul model), along rows of outputs.
    const uint32_t M = mb * 16, N = nb * 16, K = p.k;
    thread_local std::vector<float> af, bf, cf;
    af.resize(static_cast<size_t>(M) * K);
    bf.resize(static_cast<size_t>(K) * N);
    cf.resize(static_cast<size_t>(M) * N);
    for (uint32_t i = 0; i < M; ++i) {
        for (uint32_t kk = 0; kk < K; ++kk) {
            af[static_cast<size_t>(i) * K + kk] = static_cast<float>(h::Elem<U>::to_d(
                pa[(static_cast<uint64_t>(i / 16) * kb + kk / C0) * 16 * C0 + (i % 16) * C0 + kk % C0]));
        }
    }
    for (uint32_t kk = 0; kk < K; ++kk) {
        for (uint32_t j = 0; j < N; ++j) {
            bf[static_cast<size_t>(kk) * N + j] = static_cast<float>(h::Elem<S>::to_d(
                pb[(static_cast<uint64_t>(kk / C0) * nb + j / 16) * 16 * C0 + (j % 16) * C0 + kk % C0]));
        }
    }
    auto at = [&](uint32_t i, uint32_t j) -> float& {
        return pc[(static_cast<uint64_t>(j / 16) * mb + i / 16) * 256 + (i % 16) * 16 + j % 16];
    };
    for (uint32_t i = 0; i < M; ++i) {
        float* __restrict c = &cf[static_cast<size_t>(i) * N];
        for (uint32_t j = 0; j < N; ++j) c[j] = p.cmatrixInitVal ? 0.0f : at(i, j);
        for (uint32_t kk = 0; kk < K; ++kk) {
            const float x = af[static_cast<size_t>(i) * K + kk];
            const float* __restrict y = &bf[static_cast<size_t>(kk) * N];
            for (uint32_t j = 0; j < N; ++j) c[j] += x * y[j];
        }
        for (uint32_t j = 0; j < N; ++j) at(i, j) = c[j];
    }
    h::counters().cube_macs += static_cast<uint64_t>(p.m) * p.n * p.k;
}

// L0C -> GM, NZ to row-major, f32 rounded as quantPre says (on FIX).
template <typename T, typename U, const FixpipeConfig& config = CFG_ROW_MAJOR>
__aicore__ inline void Fixpipe(const GlobalTensor<T>& dst, const LocalTensor<U>& src, const FixpipeParamsV220& p) {
    namespace h = ::dsnpu::host;
    constexpr const char* op = "Fixpipe";
    static_assert(sizeof(U) == 4, "Fixpipe moves f32 (or s32) results out of L0C");
    static_assert(config.format == CO2Layout::ROW_MAJOR, "only the NZ-to-ND (CFG_ROW_MAJOR) form is modelled");
    if (p.mSize == 0 || p.nSize == 0) return;
    if (p.ndNum != 1) h::fail("%s: ndNum %u (only 1 is modelled)", op, p.ndNum);
    const bool want_f32 = p.quantPre == QuantMode_t::NoQuant;
    const bool ok = want_f32 ? sizeof(T) == 4
                             : (p.quantPre == QuantMode_t::F322F16 && std::is_same<T, half>::value) ||
                                   (p.quantPre == QuantMode_t::F322BF16 && std::is_same<T, bfloat16_t>::value);
    if (!ok) h::fail("%s: quantPre %u does not produce the destination's %zu-byte type", op, static_cast<unsigned>(p.quantPre), sizeof(T));
    if (p.srcStride < p.mSize) h::fail("%s: srcStride %u is less than mSize %u", op, p.srcStride, p.mSize);
    if (p.dstStride < p.nSize) h::fail("%s: dstStride %u is less than nSize %u", op, p.dstStride, p.nSize);
    const uint32_t nb = detail::ceil_div(p.nSize, 16);
    const float* pc = reinterpret_cast<const float*>(
        src.dsnpu_cube_span(op, "the source", h::Mem::kL0C, static_cast<uint64_t>(nb - 1) * p.srcStride * 16 + static_cast<uint64_t>(p.srcStride) * 16));
    h::L2Split split;
    for (uint32_t i = 0; i < p.mSize; ++i) {
        h::add_split(split, h::l2_access(dst.GetPhyAddr(static_cast<uint64_t>(i) * p.dstStride),
                                         static_cast<uint64_t>(p.nSize) * sizeof(T), true));
    }
    h::Pipeline& pl = h::pipeline();
    pl.issue(h::kPipeFix, op, pl.cost().mte_cycles(split), h::cost::kMteLatency);
    // With the core's atomic mode set (atomic.h) each row goes through a staging row.
    const bool atomic = h::block().atomic_op != h::AtomicOp::kNone;
    std::vector<T> staged(atomic ? p.nSize : 0);
    for (uint32_t i = 0; i < p.mSize; ++i) {
        T* o = dst.dsnpu_span(op, static_cast<uint64_t>(i) * p.dstStride, p.nSize);
        T* row = atomic ? staged.data() : o;
        for (uint32_t j = 0; j < p.nSize; ++j) {
            float v = pc[static_cast<uint64_t>(j / 16) * p.srcStride * 16 + i * 16 + j % 16];
            if (p.reluEn && v < 0.0f) v = 0.0f;
            if constexpr (sizeof(T) == 4) {
                std::memcpy(&row[j], &v, 4);
            } else {
                row[j] = h::Elem<T>::from_d(v);
            }
        }
        const uint64_t bytes = static_cast<uint64_t>(p.nSize) * sizeof(T);
        if (atomic) {
            h::atomic_reads(op, o, bytes);
            h::gm_store<T>(op, o, row, bytes);
        }
        h::gm_wrote(op, o, bytes);
    }
    h::counters().ub_to_gm_bytes += static_cast<uint64_t>(p.mSize) * p.nSize * sizeof(T);
}

}  // namespace AscendC

#endif
