// Vector instructions (count forms) of the host Ascend C layer: element-wise binary and scalar ops, Axpy,
// unary math, Duplicate, ReduceMax/ReduceSum, Cast and Gather.
//
// Contract: every operand is a LocalTensor whose UB address is 32-byte aligned and whose extent covers the
// `count` elements touched (a fault otherwise); a negative count is a fault. Results are computed in
// double from the exact operand values and rounded once to the element type (nearest-even), which equals
// the device's correctly rounded arithmetic for + - * / and is within an ulp for the transcendental ops.
// Each instruction adds `count` to the block's vector_elem_ops counter. Every instruction issues on PIPE_V
// (pipeline.h): it reads its sources' and writes its destination's UB bytes, and each destination element
// is defined exactly when the source elements it is computed from are.
#ifndef DSNPU_ASCENDC_HOST_VECTOR_H
#define DSNPU_ASCENDC_HOST_VECTOR_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "block.h"
#include "pipeline.h"
#include "tensor.h"
#include "types.h"

namespace AscendC {
namespace detail {

inline uint32_t checked_count(const char* op, int64_t count) {
    if (count < 0) ::dsnpu::host::fail("%s: negative count %lld", op, static_cast<long long>(count));
    return static_cast<uint32_t>(count);
}

inline void count_ops(uint64_t n) { ::dsnpu::host::counters().vector_elem_ops += n; }

using ::dsnpu::host::cost::VecClass;

// The pipe bookkeeping of an element-wise V instruction over n elements: dst[i] (DS bytes) from a[i] and,
// when given, b[i] (SS bytes each).
template <size_t DS, size_t SS>
inline void vec_elementwise(const char* op, VecClass c, uint32_t dst, uint32_t a, const uint32_t* b, uint32_t n) {
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    const size_t widest = DS > SS ? DS : SS;
    pl.issue(::dsnpu::host::kPipeV, op, ::dsnpu::host::cost::vector(static_cast<uint64_t>(n) * widest, c));
    pl.ub_read(a, static_cast<uint64_t>(n) * SS);
    if (b != nullptr) pl.ub_read(*b, static_cast<uint64_t>(n) * SS);
    pl.ub_write(dst, static_cast<uint64_t>(n) * DS);
    if (pl.init_on()) {
        for (uint32_t i = 0; i < n; ++i) {
            const bool def = pl.defined(a + i * SS, SS) && (b == nullptr || pl.defined(*b + i * SS, SS));
            pl.set_defined(dst + i * DS, DS, def);
        }
    }
}

template <typename T, typename F>
inline void binary(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b,
                   int64_t count, F f, VecClass c = VecClass::kSimple) {
    using E = ::dsnpu::host::Elem<T>;
    const uint32_t n = checked_count(op, count);
    T* d = dst.dsnpu_span(op, "dst", n);
    const T* x = a.dsnpu_span(op, "src0", n);
    const T* y = b.dsnpu_span(op, "src1", n);
    const uint32_t baddr = b.dsnpu_addr();
    vec_elementwise<sizeof(T), sizeof(T)>(op, c, dst.dsnpu_addr(), a.dsnpu_addr(), &baddr, n);
    for (uint32_t i = 0; i < n; ++i) d[i] = E::from_d(f(E::to_d(x[i]), E::to_d(y[i])));
    count_ops(n);
}

template <typename T, typename F>
inline void unary(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& a, int64_t count, F f,
                  VecClass c = VecClass::kSimple) {
    using E = ::dsnpu::host::Elem<T>;
    const uint32_t n = checked_count(op, count);
    T* d = dst.dsnpu_span(op, "dst", n);
    const T* x = a.dsnpu_span(op, "src", n);
    vec_elementwise<sizeof(T), sizeof(T)>(op, c, dst.dsnpu_addr(), a.dsnpu_addr(), nullptr, n);
    for (uint32_t i = 0; i < n; ++i) d[i] = E::from_d(f(E::to_d(x[i])));
    count_ops(n);
}

inline double max_d(double a, double b) { return (a > b || std::isnan(a)) ? a : b; }
inline double min_d(double a, double b) { return (a < b || std::isnan(a)) ? a : b; }

}  // namespace detail

template <typename T>
__aicore__ inline void Add(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                           const int32_t& count) {
    detail::binary("Add", dst, src0, src1, count, [](double a, double b) { return a + b; });
}
template <typename T>
__aicore__ inline void Sub(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                           const int32_t& count) {
    detail::binary("Sub", dst, src0, src1, count, [](double a, double b) { return a - b; });
}
template <typename T>
__aicore__ inline void Mul(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                           const int32_t& count) {
    detail::binary("Mul", dst, src0, src1, count, [](double a, double b) { return a * b; });
}
template <typename T>
__aicore__ inline void Div(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                           const int32_t& count) {
    detail::binary("Div", dst, src0, src1, count, [](double a, double b) { return a / b; },
                   detail::VecClass::kDivSqrt);
}
template <typename T>
__aicore__ inline void Max(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                           const int32_t& count) {
    detail::binary("Max", dst, src0, src1, count, detail::max_d);
}
template <typename T>
__aicore__ inline void Min(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                           const int32_t& count) {
    detail::binary("Min", dst, src0, src1, count, detail::min_d);
}

template <typename T>
__aicore__ inline void Adds(const LocalTensor<T>& dst, const LocalTensor<T>& src,
                            const ::dsnpu::host::nondeduced<T>& scalar, const int32_t& count) {
    const double s = ::dsnpu::host::Elem<T>::to_d(scalar);
    detail::unary("Adds", dst, src, count, [s](double a) { return a + s; });
}
template <typename T>
__aicore__ inline void Muls(const LocalTensor<T>& dst, const LocalTensor<T>& src,
                            const ::dsnpu::host::nondeduced<T>& scalar, const int32_t& count) {
    const double s = ::dsnpu::host::Elem<T>::to_d(scalar);
    detail::unary("Muls", dst, src, count, [s](double a) { return a * s; });
}
template <typename T>
__aicore__ inline void Maxs(const LocalTensor<T>& dst, const LocalTensor<T>& src,
                            const ::dsnpu::host::nondeduced<T>& scalar, const int32_t& count) {
    const double s = ::dsnpu::host::Elem<T>::to_d(scalar);
    detail::unary("Maxs", dst, src, count, [s](double a) { return detail::max_d(a, s); });
}
template <typename T>
__aicore__ inline void Mins(const LocalTensor<T>& dst, const LocalTensor<T>& src,
                            const ::dsnpu::host::nondeduced<T>& scalar, const int32_t& count) {
    const double s = ::dsnpu::host::Elem<T>::to_d(scalar);
    detail::unary("Mins", dst, src, count, [s](double a) { return detail::min_d(a, s); });
}

// dst = src * scalar + dst (the basic API's count form; (float, float) and (half, half) only: the
// (half, float) mixed form is not modelled). Rounded once from the exact value like the others (GUESS:
// whether the device rounds the product before the add is not documented).
template <typename T, typename U>
__aicore__ inline void Axpy(const LocalTensor<T>& dst, const LocalTensor<U>& src, const U& scalarValue,
                            const int32_t& count) {
    static_assert(std::is_same<T, U>::value, "host layer: Axpy with different dst and src types is not modelled");
    const double s = ::dsnpu::host::Elem<U>::to_d(scalarValue);
    detail::binary("Axpy", dst, src, dst, count, [s](double a, double d) { return a * s + d; });
}

template <typename T>
__aicore__ inline void Exp(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {
    detail::unary("Exp", dst, src, count, [](double a) { return std::exp(a); }, detail::VecClass::kTranscendental);
}
template <typename T>
__aicore__ inline void Ln(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {
    detail::unary("Ln", dst, src, count, [](double a) { return std::log(a); }, detail::VecClass::kTranscendental);
}
template <typename T>
__aicore__ inline void Sqrt(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {
    detail::unary("Sqrt", dst, src, count, [](double a) { return std::sqrt(a); }, detail::VecClass::kDivSqrt);
}
template <typename T>
__aicore__ inline void Rsqrt(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {
    detail::unary("Rsqrt", dst, src, count, [](double a) { return 1.0 / std::sqrt(a); }, detail::VecClass::kDivSqrt);
}
template <typename T>
__aicore__ inline void Reciprocal(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {
    detail::unary("Reciprocal", dst, src, count, [](double a) { return 1.0 / a; }, detail::VecClass::kDivSqrt);
}
template <typename T>
__aicore__ inline void Abs(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {
    detail::unary("Abs", dst, src, count, [](double a) { return std::fabs(a); });
}

template <typename T>
__aicore__ inline void Duplicate(const LocalTensor<T>& dst, const ::dsnpu::host::nondeduced<T>& scalar,
                                 const int32_t& count) {
    const uint32_t n = detail::checked_count("Duplicate", count);
    T* d = dst.dsnpu_span("Duplicate", "dst", n);
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, "Duplicate",
             ::dsnpu::host::cost::vector(static_cast<uint64_t>(n) * sizeof(T), detail::VecClass::kSimple));
    pl.ub_write(dst.dsnpu_addr(), static_cast<uint64_t>(n) * sizeof(T));
    pl.set_defined(dst.dsnpu_addr(), static_cast<uint64_t>(n) * sizeof(T), true);
    for (uint32_t i = 0; i < n; ++i) d[i] = scalar;
    detail::count_ops(n);
}

namespace detail {

// The pipe bookkeeping of a reduction: reads src, writes work and dst; dst is defined when all of src is.
inline void vec_reduce(const char* op, uint32_t dst, uint64_t dst_bytes, uint32_t src, uint64_t src_bytes,
                       uint32_t work, uint64_t work_bytes) {
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, op, ::dsnpu::host::cost::vector(src_bytes, VecClass::kReduce));
    pl.ub_read(src, src_bytes);
    pl.ub_write(work, work_bytes);
    pl.ub_write(dst, dst_bytes);
    const bool def = pl.defined(src, src_bytes);
    pl.set_defined(work, work_bytes, def);
    pl.set_defined(dst, dst_bytes, def);
}

// A reduction's index as an unsigned integer of the element's size, in an element's place (read it
// through ReinterpretCast).
template <typename T>
inline void store_index(T* at, uint32_t index) {
    if (sizeof(T) == 2) {
        const uint16_t idx = static_cast<uint16_t>(index);
        std::memcpy(at, &idx, sizeof idx);
    } else {
        std::memcpy(at, &index, sizeof index);
    }
}

// Work space the count-form reductions need: one partial result per 256-byte repeat (two with the
// index), rounded up to a 32-byte block.
template <typename T>
inline uint32_t reduce_work_elems(uint32_t count, bool with_index) {
    const uint32_t per_repeat = 256 / sizeof(T);
    const uint32_t repeats = (count + per_repeat - 1) / per_repeat;
    const uint32_t per_block = ::dsnpu::host::kUbBlock / sizeof(T);
    const uint32_t n = repeats * (with_index ? 2 : 1);
    return (n + per_block - 1) / per_block * per_block;
}

}  // namespace detail

// dst[0] = the largest of src[0, count); with calIndex, dst[1] holds the lowest index of that value as an
// unsigned integer of sizeof(T) bytes (read it through ReinterpretCast). NaN compares as not larger.
template <typename T>
__aicore__ inline void ReduceMax(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work,
                                 const int32_t count, bool calIndex = false) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "ReduceMax takes half or float");
    using E = ::dsnpu::host::Elem<T>;
    const char* op = "ReduceMax";
    const uint32_t n = detail::checked_count(op, count);
    if (n == 0) ::dsnpu::host::fail("%s: count 0", op);
    const T* s = src.dsnpu_span(op, "src", n);
    work.dsnpu_span(op, "work", detail::reduce_work_elems<T>(n, true));
    T* d = dst.dsnpu_span(op, "dst", calIndex ? 2 : 1, false);
    detail::vec_reduce(op, dst.dsnpu_addr(), (calIndex ? 2 : 1) * sizeof(T), src.dsnpu_addr(), n * sizeof(T),
                       work.dsnpu_addr(), detail::reduce_work_elems<T>(n, true) * sizeof(T));
    uint32_t best = 0;
    double best_v = E::to_d(s[0]);
    for (uint32_t i = 1; i < n; ++i) {
        const double v = E::to_d(s[i]);
        if (v > best_v) {
            best_v = v;
            best = i;
        }
    }
    d[0] = s[best];
    if (calIndex) detail::store_index(&d[1], best);
    detail::count_ops(n);
}

// dst[0] = the sum of src[0, count), added in double in order (exact unless the values span more than
// double's 53 bits) and rounded once.
template <typename T>
__aicore__ inline void ReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work,
                                 const int32_t count) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "ReduceSum takes half or float");
    using E = ::dsnpu::host::Elem<T>;
    const char* op = "ReduceSum";
    const uint32_t n = detail::checked_count(op, count);
    const T* s = src.dsnpu_span(op, "src", n);
    work.dsnpu_span(op, "work", detail::reduce_work_elems<T>(n, false));
    T* d = dst.dsnpu_span(op, "dst", 1, false);
    detail::vec_reduce(op, dst.dsnpu_addr(), sizeof(T), src.dsnpu_addr(), static_cast<uint64_t>(n) * sizeof(T),
                       work.dsnpu_addr(), detail::reduce_work_elems<T>(n, false) * sizeof(T));
    double acc = 0.0;
    for (uint32_t i = 0; i < n; ++i) acc += E::to_d(s[i]);
    d[0] = E::from_d(acc);
    detail::count_ops(n);
}

// Convert element types with `mode`. Widening conversions are exact whatever the mode; CAST_ODD applies to
// float -> half only. dst and src may be the same buffer only when the element sizes are equal.
template <typename T1, typename T2>
__aicore__ inline void Cast(const LocalTensor<T1>& dst, const LocalTensor<T2>& src, const RoundMode& mode,
                            const uint32_t count) {
    const char* op = "Cast";
    if (mode == RoundMode::CAST_ODD && !(std::is_same<T1, half>::value && std::is_same<T2, float>::value)) {
        ::dsnpu::host::fail("%s: CAST_ODD converts float to half only (here %s to %s)", op,
                            ::dsnpu::host::Elem<T2>::name, ::dsnpu::host::Elem<T1>::name);
    }
    T1* d = dst.dsnpu_span(op, "dst", count);
    const T2* s = src.dsnpu_span(op, "src", count);
    if (sizeof(T1) != sizeof(T2) && count != 0) {
        const uint64_t d0 = dst.GetPhyAddr(), d1 = d0 + static_cast<uint64_t>(count) * sizeof(T1);
        const uint64_t s0 = src.GetPhyAddr(), s1 = s0 + static_cast<uint64_t>(count) * sizeof(T2);
        if (d0 < s1 && s0 < d1) {
            ::dsnpu::host::fail("%s: dst and src overlap with different element sizes", op);
        }
    }
    detail::vec_elementwise<sizeof(T1), sizeof(T2)>(op, detail::VecClass::kSimple, dst.dsnpu_addr(),
                                                     src.dsnpu_addr(), nullptr, count);
    for (uint32_t i = 0; i < count; ++i) {
        d[i] = ::dsnpu::host::Elem<T1>::from_d(::dsnpu::host::Elem<T2>::to_d(s[i]), mode);
    }
    detail::count_ops(count);
}

// dst[i] = the element of `src` at byte offset srcBaseAddr + srcOffset[i] from src's start.
template <typename T>
__aicore__ inline void Gather(const LocalTensor<T>& dst, const LocalTensor<T>& src,
                              const LocalTensor<uint32_t>& srcOffset, const uint32_t srcBaseAddr,
                              const uint32_t count) {
    const char* op = "Gather";
    T* d = dst.dsnpu_span(op, "dst", count);
    const uint32_t* off = srcOffset.dsnpu_span(op, "srcOffset", count);
    const uint8_t* s = reinterpret_cast<const uint8_t*>(src.dsnpu_span(op, "src", 0));
    const uint64_t extent = static_cast<uint64_t>(src.GetSize()) * sizeof(T);
    const uint64_t d0 = dst.GetPhyAddr(), d1 = d0 + static_cast<uint64_t>(count) * sizeof(T);
    if (count != 0 && d0 < src.GetPhyAddr() + extent && src.GetPhyAddr() < d1) {
        ::dsnpu::host::fail("%s: dst overlaps src", op);
    }
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, op, ::dsnpu::host::cost::kVecIssue + (count + 7) / 8);
    pl.ub_read(srcOffset.dsnpu_addr(), static_cast<uint64_t>(count) * sizeof(uint32_t));
    pl.require_defined(srcOffset.dsnpu_addr(), static_cast<uint64_t>(count) * sizeof(uint32_t), "takes offsets from");
    const uint32_t sbase = src.dsnpu_addr();
    for (uint32_t i = 0; i < count; ++i) {
        const uint64_t at = static_cast<uint64_t>(srcBaseAddr) + off[i];
        if (at % sizeof(T) != 0 || at + sizeof(T) > extent) {
            ::dsnpu::host::fail("%s: offset %llu bytes (element %u) is unaligned or outside src's %llu bytes", op,
                                static_cast<unsigned long long>(at), i, static_cast<unsigned long long>(extent));
        }
        pl.ub_read(static_cast<uint32_t>(sbase + at), sizeof(T));
        const uint32_t dat = static_cast<uint32_t>(dst.dsnpu_addr() + i * sizeof(T));
        pl.ub_write(dat, sizeof(T));
        pl.set_defined(dat, sizeof(T), pl.defined(static_cast<uint32_t>(sbase + at), sizeof(T)));
        std::memcpy(&d[i], s + at, sizeof(T));
    }
    detail::count_ops(count);
}

}  // namespace AscendC

#endif
