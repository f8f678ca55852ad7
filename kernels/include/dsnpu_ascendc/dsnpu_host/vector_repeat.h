// Vector instructions in their repeat form ("tensor high-dimensional slicing" in asc-devkit's pages): an
// instruction runs `repeatTime` repeats of one 256-byte step each; within a repeat the first `mask`
// elements (continuous mask mode) are taken from data blocks (32 bytes) `blkStride` blocks apart, and
// consecutive repeats start `repStride` blocks apart. One instruction can so walk the rows of a padded
// 2-D tile (a repeat per row, rep stride = the row pitch in blocks), broadcast a 32-byte block to every
// block of a repeat (blk stride 0), or reduce every repeat to one value (WholeReduceMax / WholeReduceSum),
// where the count forms (vector.h) need an instruction per row.
//
// Here: the binary forms of Add, Sub, Mul, Max, Min and FusedMulAdd with BinaryRepeatParams; Adds, Muls, Maxs, Exp, Ln with
// UnaryRepeatParams; WholeReduceMax (ReduceOrder ORDER_VALUE_INDEX or ORDER_ONLY_VALUE), WholeReduceSum;
// Brcb (each of 8 source elements per repeat fills one 32-byte destination block). Not here: the bitwise
// mask mode (mask[2]), isSetMask = false with SetVectorMask, counter mode.
//
// Contract: mask in [1, 256 / sizeof(T)] (0 elements or 0 repeats is a NOP, as on Atlas A2), every element
// touched inside its LocalTensor (a fault names the operand), source and destination operands in the UB
// and 32-byte aligned (a WholeReduce destination only to its element size). Repeats run in order, each
// reading all its sources before writing; results are computed as in vector.h (double, rounded once; a
// WholeReduceSum adds its repeat's values in double in order and rounds once). Cost (cost.h): the issue plus one 256-byte
// step per repeat times the class's per-repeat cycles, whatever the mask (a repeat takes its step even
// when the mask leaves lanes idle); vector_elem_ops counts the elements computed. The pipe bookkeeping
// (pipeline.h) records each data block an operand touches.
#ifndef DSNPU_ASCENDC_HOST_VECTOR_REPEAT_H
#define DSNPU_ASCENDC_HOST_VECTOR_REPEAT_H

#include <cstdint>
#include <cstring>

#include "block.h"
#include "pipeline.h"
#include "tensor.h"
#include "types.h"
#include "vector.h"

namespace AscendC {

struct BinaryRepeatParams {
    BinaryRepeatParams() = default;
    BinaryRepeatParams(uint8_t dstBlk, uint8_t src0Blk, uint8_t src1Blk, uint8_t dstRep, uint8_t src0Rep,
                       uint8_t src1Rep)
        : dstBlkStride(dstBlk),
          src0BlkStride(src0Blk),
          src1BlkStride(src1Blk),
          dstRepStride(dstRep),
          src0RepStride(src0Rep),
          src1RepStride(src1Rep) {}
    uint32_t blockNumber = 8;
    uint8_t dstBlkStride = 1;
    uint8_t src0BlkStride = 1;
    uint8_t src1BlkStride = 1;
    uint8_t dstRepStride = 8;
    uint8_t src0RepStride = 8;
    uint8_t src1RepStride = 8;
};

struct UnaryRepeatParams {
    UnaryRepeatParams() = default;
    UnaryRepeatParams(uint16_t dstBlk, uint16_t srcBlk, uint8_t dstRep, uint8_t srcRep)
        : dstBlkStride(dstBlk), srcBlkStride(srcBlk), dstRepStride(dstRep), srcRepStride(srcRep) {}
    uint32_t blockNumber = 8;
    uint16_t dstBlkStride = 1;
    uint16_t srcBlkStride = 1;
    uint8_t dstRepStride = 8;
    uint8_t srcRepStride = 8;
};

struct BrcbRepeatParams {
    BrcbRepeatParams() = default;
    BrcbRepeatParams(uint16_t dstBlk, uint16_t dstRep) : dstRepStride(dstRep), dstBlkStride(dstBlk) {}
    uint16_t dstRepStride = 8;
    uint16_t dstBlkStride = 1;
};

enum class ReduceOrder { ORDER_VALUE_INDEX, ORDER_INDEX_VALUE, ORDER_ONLY_VALUE, ORDER_ONLY_INDEX };

namespace detail {

// One operand's walk: element i of repeat r is at element offset (r rep + (i / per) blk) per + i % per.
struct Walk {
    uint32_t blk;
    uint32_t rep;
};

template <typename T>
constexpr uint32_t kPerBlock = ::dsnpu::host::kUbBlock / sizeof(T);
template <typename T>
constexpr uint32_t kPerRepeat = 256 / sizeof(T);

template <typename T>
inline uint64_t walk_offset(Walk w, uint32_t r, uint32_t i) {
    constexpr uint32_t per = kPerBlock<T>;
    return (static_cast<uint64_t>(r) * w.rep + static_cast<uint64_t>(i / per) * w.blk) * per + i % per;
}

// Elements of the operand's tensor the walk reaches (its last element + 1), for the extent check.
template <typename T>
inline uint64_t walk_extent(Walk w, uint32_t mask, uint32_t repeats) {
    uint64_t end = 0;
    for (uint32_t i = 0; i < mask; i += kPerBlock<T>) {
        const uint32_t last = i + kPerBlock<T> - 1 < mask - 1 ? i + kPerBlock<T> - 1 : mask - 1;
        const uint64_t a = walk_offset<T>(w, repeats - 1, last) + 1, b = walk_offset<T>(w, 0, last) + 1;
        end = a > end ? a : end;
        end = b > end ? b : end;
    }
    return end;
}

inline void check_mask(const char* op, uint64_t mask, uint32_t per_repeat) {
    if (mask > per_repeat) {
        ::dsnpu::host::fail("%s: mask %llu exceeds the %u elements of a 256-byte repeat", op,
                            static_cast<unsigned long long>(mask), per_repeat);
    }
}

// The pipe bookkeeping of one repeat's data blocks of an operand: read or written, and defined bits.
template <typename T>
inline void walk_access(const LocalTensor<T>& t, Walk w, uint32_t r, uint32_t mask, bool write) {
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    for (uint32_t i = 0; i < mask; i += kPerBlock<T>) {
        const uint32_t n = mask - i < kPerBlock<T> ? mask - i : kPerBlock<T>;
        const uint32_t at = t.dsnpu_addr() + static_cast<uint32_t>(walk_offset<T>(w, r, i) * sizeof(T));
        if (write) {
            pl.ub_write(at, n * sizeof(T));
        } else {
            pl.ub_read(at, n * sizeof(T));
        }
    }
}

template <typename T>
inline bool walk_defined(const LocalTensor<T>& t, Walk w, uint32_t r, uint32_t i) {
    return ::dsnpu::host::pipeline().defined(
        t.dsnpu_addr() + static_cast<uint32_t>(walk_offset<T>(w, r, i) * sizeof(T)), sizeof(T));
}

template <typename T>
inline void walk_set_defined(const LocalTensor<T>& t, Walk w, uint32_t r, uint32_t i, bool d) {
    ::dsnpu::host::pipeline().set_defined(
        t.dsnpu_addr() + static_cast<uint32_t>(walk_offset<T>(w, r, i) * sizeof(T)), sizeof(T), d);
}

// dst = f(src0, src1) (src1 null: f(src0); kDstIn: f(src0, src1, dst)) over `repeats` repeats of `mask` elements.
template <typename T, typename F, bool kDstIn = false>
inline void repeat_elementwise(const char* op, const LocalTensor<T>& dst, Walk dw, const LocalTensor<T>& a, Walk aw,
                               const LocalTensor<T>* b, Walk bw, uint64_t mask64, uint32_t repeats, F f,
                               VecClass c) {
    using E = ::dsnpu::host::Elem<T>;
    check_mask(op, mask64, kPerRepeat<T>);
    const uint32_t mask = static_cast<uint32_t>(mask64);
    if (mask == 0 || repeats == 0) return;
    T* d = dst.dsnpu_span(op, "dst", walk_extent<T>(dw, mask, repeats));
    const T* x = a.dsnpu_span(op, b != nullptr ? "src0" : "src", walk_extent<T>(aw, mask, repeats));
    const T* y = b != nullptr ? b->dsnpu_span(op, "src1", walk_extent<T>(bw, mask, repeats)) : nullptr;
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, op, ::dsnpu::host::cost::repeats(repeats, c));
    T out[kPerRepeat<T>];
    bool def[kPerRepeat<T>];
    for (uint32_t r = 0; r < repeats; ++r) {
        walk_access(a, aw, r, mask, false);
        if (b != nullptr) walk_access(*b, bw, r, mask, false);
        if (kDstIn) walk_access(dst, dw, r, mask, false);
        walk_access(dst, dw, r, mask, true);
        for (uint32_t i = 0; i < mask; ++i) {
            const double u = E::to_d(x[walk_offset<T>(aw, r, i)]);
            const double v = y != nullptr ? E::to_d(y[walk_offset<T>(bw, r, i)]) : 0.0;
            if constexpr (kDstIn) {
                out[i] = E::from_d(f(u, v, E::to_d(d[walk_offset<T>(dw, r, i)])));
            } else {
                out[i] = E::from_d(f(u, v));
            }
            if (pl.init_on()) {
                def[i] = walk_defined(a, aw, r, i) && (b == nullptr || walk_defined(*b, bw, r, i)) &&
                         (!kDstIn || walk_defined(dst, dw, r, i));
            }
        }
        for (uint32_t i = 0; i < mask; ++i) {
            d[walk_offset<T>(dw, r, i)] = out[i];
            if (pl.init_on()) walk_set_defined(dst, dw, r, i, def[i]);
        }
    }
    count_ops(static_cast<uint64_t>(mask) * repeats);
}

// dst = src0 * dst + src1 over `repeats` repeats of `mask` elements (FusedMulAdd): the destination is
// also a source, walked by its own strides; rounded once from the exact value (GUESS, as Axpy: whether
// the device rounds the product first is not documented).
template <typename T>
inline void repeat_fma(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& src0,
                       const LocalTensor<T>& src1, uint64_t mask, uint32_t repeats, const BinaryRepeatParams& p) {
    auto fma = [](double a, double b, double d) { return a * d + b; };
    repeat_elementwise<T, decltype(fma), true>(op, dst, Walk{p.dstBlkStride, p.dstRepStride}, src0,
                                               Walk{p.src0BlkStride, p.src0RepStride}, &src1,
                                               Walk{p.src1BlkStride, p.src1RepStride}, mask, repeats, fma,
                                               VecClass::kSimple);
}

template <typename T, typename F>
inline void repeat_binary(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& src0,
                          const LocalTensor<T>& src1, uint64_t mask, uint8_t repeatTime, const BinaryRepeatParams& p,
                          F f, VecClass c = VecClass::kSimple) {
    repeat_elementwise(op, dst, Walk{p.dstBlkStride, p.dstRepStride}, src0, Walk{p.src0BlkStride, p.src0RepStride},
                       &src1, Walk{p.src1BlkStride, p.src1RepStride}, mask, repeatTime, f, c);
}

template <typename T, typename F>
inline void repeat_unary(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask,
                         uint8_t repeatTime, const UnaryRepeatParams& p, F f, VecClass c = VecClass::kSimple) {
    repeat_elementwise(
        op, dst, Walk{p.dstBlkStride, p.dstRepStride}, src, Walk{p.srcBlkStride, p.srcRepStride},
        static_cast<const LocalTensor<T>*>(nullptr), Walk{0, 0},
        mask, repeatTime, [f](double a, double) { return f(a); }, c);
}

// dst[r * dstRepStride] = reduce(the repeat's `mask` elements), for every repeat r (order: see callers).
template <typename T, typename F>
inline void whole_reduce(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& src, int32_t mask32,
                         int32_t repeats32, int32_t dstRepStride, int32_t srcBlkStride, int32_t srcRepStride,
                         uint32_t dstPer, F reduce) {
    using E = ::dsnpu::host::Elem<T>;
    if (mask32 < 0 || repeats32 < 0 || dstRepStride < 0 || srcBlkStride < 0 || srcRepStride < 0) {
        ::dsnpu::host::fail("%s: negative mask, repeat count or stride", op);
    }
    check_mask(op, static_cast<uint64_t>(mask32), kPerRepeat<T>);
    const uint32_t mask = static_cast<uint32_t>(mask32), repeats = static_cast<uint32_t>(repeats32);
    if (mask == 0 || repeats == 0) return;
    if (repeats > 255) ::dsnpu::host::fail("%s: %u repeats (at most 255)", op, repeats);
    const Walk sw{static_cast<uint32_t>(srcBlkStride), static_cast<uint32_t>(srcRepStride)};
    const T* s = src.dsnpu_span(op, "src", walk_extent<T>(sw, mask, repeats));
    const uint64_t dstEnd = static_cast<uint64_t>(repeats - 1) * dstRepStride * dstPer + dstPer;
    T* d = dst.dsnpu_span(op, "dst", dstEnd, false);
    if (dst.GetPhyAddr() % (dstPer * sizeof(T)) != 0) {
        ::dsnpu::host::fail("%s: dst at UB address %llu is not aligned to its %u-byte result", op,
                            static_cast<unsigned long long>(dst.GetPhyAddr()),
                            static_cast<unsigned>(dstPer * sizeof(T)));
    }
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, op, ::dsnpu::host::cost::repeats(repeats, VecClass::kSimple));
    double vals[kPerRepeat<T>];
    for (uint32_t r = 0; r < repeats; ++r) {
        walk_access(src, sw, r, mask, false);
        bool def = true;
        for (uint32_t i = 0; i < mask; ++i) {
            vals[i] = E::to_d(s[walk_offset<T>(sw, r, i)]);
            if (pl.init_on()) def = def && walk_defined(src, sw, r, i);
        }
        const uint64_t at = static_cast<uint64_t>(r) * dstRepStride * dstPer;
        const uint32_t addr = dst.dsnpu_addr() + static_cast<uint32_t>(at * sizeof(T));
        pl.ub_write(addr, dstPer * sizeof(T));
        pl.set_defined(addr, dstPer * sizeof(T), def);
        reduce(vals, mask, &d[at]);
    }
    count_ops(static_cast<uint64_t>(mask) * repeats);
}

}  // namespace detail

#define DSNPU_REPEAT_BINARY(NAME, EXPR, CLASS)                                                                    \
    template <typename T>                                                                                         \
    __aicore__ inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1, \
                                uint64_t mask, const uint8_t repeatTime, const BinaryRepeatParams& repeatParams) { \
        detail::repeat_binary(#NAME, dst, src0, src1, mask, repeatTime, repeatParams,                              \
                              [](double a, double b) { return EXPR; }, detail::VecClass::CLASS);                  \
    }
DSNPU_REPEAT_BINARY(Add, a + b, kSimple)
DSNPU_REPEAT_BINARY(Sub, a - b, kSimple)
DSNPU_REPEAT_BINARY(Mul, a * b, kSimple)
DSNPU_REPEAT_BINARY(Max, detail::max_d(a, b), kSimple)
DSNPU_REPEAT_BINARY(Min, detail::min_d(a, b), kSimple)
#undef DSNPU_REPEAT_BINARY

// dst = src0 * dst + src1 (Atlas A2: half, float). The count form is not modelled.
template <typename T>
__aicore__ inline void FusedMulAdd(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                                   uint64_t mask, const uint8_t repeatTime, const BinaryRepeatParams& repeatParams) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "FusedMulAdd takes half or float");
    detail::repeat_fma("FusedMulAdd", dst, src0, src1, mask, repeatTime, repeatParams);
}

#define DSNPU_REPEAT_SCALAR(NAME, EXPR)                                                                           \
    template <typename T>                                                                                         \
    __aicore__ inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src,                             \
                                const ::dsnpu::host::nondeduced<T>& scalar, uint64_t mask, const uint8_t repeatTime, \
                                const UnaryRepeatParams& repeatParams) {                                          \
        const double s = ::dsnpu::host::Elem<T>::to_d(scalar);                                                    \
        detail::repeat_unary(#NAME, dst, src, mask, repeatTime, repeatParams, [s](double a) { return EXPR; });   \
    }
DSNPU_REPEAT_SCALAR(Adds, a + s)
DSNPU_REPEAT_SCALAR(Muls, a * s)
DSNPU_REPEAT_SCALAR(Maxs, detail::max_d(a, s))
#undef DSNPU_REPEAT_SCALAR

template <typename T>
__aicore__ inline void Exp(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask,
                           const uint8_t repeatTime, const UnaryRepeatParams& repeatParams) {
    detail::repeat_unary("Exp", dst, src, mask, repeatTime, repeatParams, [](double a) { return std::exp(a); },
                         detail::VecClass::kTranscendental);
}
template <typename T>
__aicore__ inline void Ln(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask,
                          const uint8_t repeatTime, const UnaryRepeatParams& repeatParams) {
    detail::repeat_unary("Ln", dst, src, mask, repeatTime, repeatParams, [](double a) { return std::log(a); },
                         detail::VecClass::kTranscendental);
}

// Per repeat, the largest of its `mask` elements (NaN compares as not larger; ties: the lowest index):
// ORDER_ONLY_VALUE writes the value at dst[r * dstRepStride]; ORDER_VALUE_INDEX the value and its index
// within the repeat (an unsigned integer of sizeof(T) bytes) at dst[2 r dstRepStride], one element after it.
template <typename T>
__aicore__ inline void WholeReduceMax(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t mask,
                                      const int32_t repeatTime, const int32_t dstRepStride,
                                      const int32_t srcBlkStride, const int32_t srcRepStride,
                                      ReduceOrder order = ReduceOrder::ORDER_VALUE_INDEX) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "WholeReduceMax takes half or float");
    if (order != ReduceOrder::ORDER_VALUE_INDEX && order != ReduceOrder::ORDER_ONLY_VALUE) {
        ::dsnpu::host::fail("WholeReduceMax: only ORDER_VALUE_INDEX and ORDER_ONLY_VALUE are modelled");
    }
    const bool withIndex = order == ReduceOrder::ORDER_VALUE_INDEX;
    detail::whole_reduce("WholeReduceMax", dst, src, mask, repeatTime, dstRepStride, srcBlkStride, srcRepStride,
                         withIndex ? 2 : 1, [withIndex](const double* v, uint32_t n, T* out) {
                             uint32_t best = 0;
                             for (uint32_t i = 1; i < n; ++i) {
                                 if (v[i] > v[best]) best = i;
                             }
                             out[0] = ::dsnpu::host::Elem<T>::from_d(v[best]);
                             if (withIndex) detail::store_index(&out[1], best);
                         });
}

// Per repeat, the sum of its `mask` elements, added in double in order and rounded once (exact unless the
// values span more than double's 53 bits), at dst[r dstRepStride].
template <typename T>
__aicore__ inline void WholeReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t mask,
                                      const int32_t repeatTime, const int32_t dstRepStride,
                                      const int32_t srcBlkStride, const int32_t srcRepStride) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "WholeReduceSum takes half or float");
    detail::whole_reduce("WholeReduceSum", dst, src, mask, repeatTime, dstRepStride, srcBlkStride, srcRepStride, 1,
                         [](const double* v, uint32_t n, T* out) {
                             double acc = 0.0;
                             for (uint32_t i = 0; i < n; ++i) acc += v[i];
                             out[0] = ::dsnpu::host::Elem<T>::from_d(acc);
                         });
}

// Per repeat r, the 8 elements src[8 r .. 8 r + 8): element j fills data block j of the repeat (block
// j * dstBlkStride, a stride of 0 taken as 1 as the API page says; repeat r at r * dstRepStride blocks).
// 16- and 32-bit types; src and dst must not overlap (a fault).
template <typename T>
__aicore__ inline void Brcb(const LocalTensor<T>& dst, const LocalTensor<T>& src, const uint8_t repeatTime,
                            const BrcbRepeatParams& repeatParams) {
    static_assert(sizeof(T) == 2 || sizeof(T) == 4, "Brcb takes 16- or 32-bit elements");
    const char* op = "Brcb";
    const uint32_t repeats = repeatTime;
    if (repeats == 0) return;
    constexpr uint32_t per = detail::kPerBlock<T>;
    const detail::Walk dw{repeatParams.dstBlkStride == 0 ? 1u : repeatParams.dstBlkStride,
                          repeatParams.dstRepStride};
    const uint64_t srcElems = static_cast<uint64_t>(repeats) * 8;
    const uint64_t dstElems = detail::walk_extent<T>(dw, 8 * per, repeats);
    const T* s = src.dsnpu_span(op, "src", srcElems);
    T* d = dst.dsnpu_span(op, "dst", dstElems);
    const uint64_t s0 = src.GetPhyAddr(), s1 = s0 + srcElems * sizeof(T);
    const uint64_t d0 = dst.GetPhyAddr(), d1 = d0 + dstElems * sizeof(T);
    if (s0 < d1 && d0 < s1) ::dsnpu::host::fail("%s: dst overlaps src", op);
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, op, ::dsnpu::host::cost::repeats(repeats, detail::VecClass::kSimple));
    for (uint32_t r = 0; r < repeats; ++r) {
        const uint32_t sat = src.dsnpu_addr() + static_cast<uint32_t>(r * 8 * sizeof(T));
        pl.ub_read(sat, 8 * sizeof(T));
        T v[8];
        bool def[8];
        for (uint32_t j = 0; j < 8; ++j) {
            v[j] = s[r * 8 + j];
            def[j] = pl.defined(sat + j * static_cast<uint32_t>(sizeof(T)), sizeof(T));
        }
        for (uint32_t j = 0; j < 8; ++j) {
            const uint64_t at = detail::walk_offset<T>(dw, r, j * per);
            const uint32_t addr = dst.dsnpu_addr() + static_cast<uint32_t>(at * sizeof(T));
            pl.ub_write(addr, ::dsnpu::host::kUbBlock);
            pl.set_defined(addr, ::dsnpu::host::kUbBlock, def[j]);
            for (uint32_t e = 0; e < per; ++e) d[at + e] = v[j];
        }
    }
    detail::count_ops(static_cast<uint64_t>(repeats) * 8 * per);
}

}  // namespace AscendC

#endif
