// Element types of the host Ascend C layer: `half` (IEEE binary16), `bfloat16_t`, `RoundMode`, and the
// exact conversions every vector op and Cast go through.
//
// Contract: every element type converts to `double` exactly (all of them are narrower than binary64), and
// back with an explicit rounding mode. Arithmetic on 16-bit types is done in double and rounded once, which
// is correctly rounded for + - * / (binary64 has more than 2p+2 bits for p = 11 and p = 8) — what the
// device's native half arithmetic computes. Conversions from f32 to half/bfloat16 default to round to
// nearest, ties to even.
#ifndef DSNPU_ASCENDC_HOST_TYPES_H
#define DSNPU_ASCENDC_HOST_TYPES_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace AscendC {

// Rounding of Cast. CAST_NONE rounds to nearest-even where the conversion loses precision and is exact
// otherwise; CAST_ROUND is nearest with ties away from zero; CAST_ODD is von Neumann rounding (truncate,
// then set the last bit if anything was lost), f32 -> half only.
enum class RoundMode : uint8_t {
    CAST_NONE = 0,
    CAST_RINT,
    CAST_FLOOR,
    CAST_CEIL,
    CAST_ROUND,
    CAST_TRUNC,
    CAST_ODD,
};

}  // namespace AscendC

namespace dsnpu {
namespace host {

struct FloatFormat {
    int mant_bits;  // explicit significand bits
    int emin;       // exponent of the smallest normal
    int emax;       // exponent of the largest finite
};

constexpr FloatFormat kF16{10, -14, 15};
constexpr FloatFormat kBF16{7, -126, 127};
constexpr FloatFormat kF32{23, -126, 127};

// Round a finite or infinite double to the nearest value of `fmt` chosen by `mode` (CAST_NONE = RINT).
// Returns that value as a double (exactly representable in `fmt`), or +-inf on overflow where the mode
// rounds away from the largest finite value.
inline double round_to_format(double v, AscendC::RoundMode mode, FloatFormat fmt) {
    using AscendC::RoundMode;
    if (std::isnan(v) || std::isinf(v) || v == 0.0) {
        return v;
    }
    const bool neg = v < 0;
    const double a = std::fabs(v);
    int e = 0;
    std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
    const int exp_a = e - 1;
    const int quantum = (exp_a > fmt.emin ? exp_a : fmt.emin) - fmt.mant_bits;
    const double scaled = std::ldexp(a, -quantum);  // exact: only the exponent changes
    double n = std::floor(scaled);
    const double frac = scaled - n;
    const bool odd = std::fmod(n, 2.0) != 0.0;
    switch (mode) {
        case RoundMode::CAST_NONE:
        case RoundMode::CAST_RINT:
            if (frac > 0.5 || (frac == 0.5 && odd)) n += 1;
            break;
        case RoundMode::CAST_ROUND:
            if (frac >= 0.5) n += 1;
            break;
        case RoundMode::CAST_TRUNC:
            break;
        case RoundMode::CAST_FLOOR:
            if (neg && frac > 0) n += 1;
            break;
        case RoundMode::CAST_CEIL:
            if (!neg && frac > 0) n += 1;
            break;
        case RoundMode::CAST_ODD:
            if (frac > 0 && !odd) n += 1;
            break;
    }
    double r = std::ldexp(n, quantum);
    const double max_finite = std::ldexp(2.0 - std::ldexp(1.0, -fmt.mant_bits), fmt.emax);
    if (r > max_finite) {
        const bool to_inf = mode == RoundMode::CAST_NONE || mode == RoundMode::CAST_RINT ||
                            mode == RoundMode::CAST_ROUND || (mode == RoundMode::CAST_FLOOR && neg) ||
                            (mode == RoundMode::CAST_CEIL && !neg);
        r = to_inf ? std::numeric_limits<double>::infinity() : max_finite;
    }
    return neg ? -r : r;
}

// Encode a value already representable in binary16 (or +-inf/NaN).
inline uint16_t encode_f16(double r) {
    const uint16_t sign = std::signbit(r) ? 0x8000u : 0u;
    if (std::isnan(r)) return static_cast<uint16_t>(sign | 0x7E00u);
    const double a = std::fabs(r);
    if (std::isinf(a)) return static_cast<uint16_t>(sign | 0x7C00u);
    if (a == 0.0) return sign;
    if (a >= std::ldexp(1.0, -14)) {
        int e = 0;
        std::frexp(a, &e);
        const int exp_a = e - 1;
        const uint32_t mant = static_cast<uint32_t>(std::ldexp(a, 10 - exp_a)) - 1024u;
        return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp_a + 15) << 10) | mant);
    }
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::ldexp(a, 24)));
}

inline float decode_f16(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) ? 1u : 0u;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t mant = h & 0x3FFu;
    double v;
    if (exp == 0) {
        v = std::ldexp(static_cast<double>(mant), -24);
    } else if (exp == 31) {
        v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    } else {
        v = std::ldexp(static_cast<double>(mant | 0x400u), static_cast<int>(exp) - 25);
    }
    return static_cast<float>(sign ? -v : v);
}

inline uint32_t f32_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
}

inline float f32_from_bits(uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
}

// Encode a value already representable in bfloat16 (or +-inf/NaN): its f32 pattern's upper half.
inline uint16_t encode_bf16(double r) {
    if (std::isnan(r)) {
        return static_cast<uint16_t>((std::signbit(r) ? 0x8000u : 0u) | 0x7FC0u);
    }
    return static_cast<uint16_t>(f32_bits(static_cast<float>(r)) >> 16);
}

inline float decode_bf16(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

// Fast nearest-even narrowing of an f32 to binary16 bits (the common Cast path); agrees with
// encode_f16(round_to_format(v, CAST_RINT, kF16)).
inline uint16_t f32_to_f16_rne(float f) {
    uint32_t x = f32_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    x &= 0x7FFFFFFFu;
    if (x > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);  // NaN
    if (x >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u); // >= 2^16: inf
    if (x >= 0x38800000u) {                                              // normal: >= 2^-14
        uint32_t r = x - 0x38000000u;                                    // rebias the exponent
        r += 0xFFFu + ((r >> 13) & 1u);                                  // round off 13 bits, ties to even
        return static_cast<uint16_t>(sign | (r >> 13));                  // a carry may reach inf
    }
    if (x < 0x33000000u) return sign;  // below 2^-25: zero
    const uint32_t e = x >> 23;        // 102..112
    const uint32_t m = (x & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;   // to units of 2^-24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
}

// Fast nearest-even narrowing of an f32 to bfloat16 bits.
inline uint16_t f32_to_bf16_rne(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// Nearest-even modes take the fast path when the value is an f32 (every Cast from float).
inline bool rne_from_f32(double v, AscendC::RoundMode m) {
    return (m == AscendC::RoundMode::CAST_NONE || m == AscendC::RoundMode::CAST_RINT) &&
           (std::isnan(v) || static_cast<double>(static_cast<float>(v)) == v);
}

}  // namespace host
}  // namespace dsnpu

// IEEE binary16, as the AI Core's `half`. Conversions from floating values round to nearest-even.
struct half {
    uint16_t bits;
    half() = default;
    template <typename U, typename = typename std::enable_if<std::is_arithmetic<U>::value>::type>
    half(U v)  // NOLINT: implicit like the device type
        : bits(dsnpu::host::encode_f16(dsnpu::host::round_to_format(static_cast<double>(v),
                                                                    AscendC::RoundMode::CAST_RINT,
                                                                    dsnpu::host::kF16))) {}
    operator float() const { return dsnpu::host::decode_f16(bits); }
    static half from_bits(uint16_t b) {
        half h;
        h.bits = b;
        return h;
    }
};

// bfloat16, as the AI Core's `bfloat16_t`. Conversions from floating values round to nearest-even.
struct bfloat16_t {
    uint16_t bits;
    bfloat16_t() = default;
    template <typename U, typename = typename std::enable_if<std::is_arithmetic<U>::value>::type>
    bfloat16_t(U v)  // NOLINT: implicit like the device type
        : bits(dsnpu::host::encode_bf16(dsnpu::host::round_to_format(static_cast<double>(v),
                                                                     AscendC::RoundMode::CAST_RINT,
                                                                     dsnpu::host::kBF16))) {}
    operator float() const { return dsnpu::host::decode_bf16(bits); }
    static bfloat16_t from_bits(uint16_t b) {
        bfloat16_t h;
        h.bits = b;
        return h;
    }
};

static_assert(sizeof(half) == 2 && sizeof(bfloat16_t) == 2, "16-bit element types");
static_assert(std::is_trivially_copyable<half>::value && std::is_trivially_copyable<bfloat16_t>::value,
              "element types are copied as bytes");

namespace dsnpu {
namespace host {

// Exact widening to double and mode-driven narrowing back, per element type.
template <typename T>
struct Elem;

template <>
struct Elem<float> {
    static constexpr const char* name = "float";
    static constexpr bool is_float = true;
    static double to_d(float v) { return v; }
    static float from_d(double v, AscendC::RoundMode m = AscendC::RoundMode::CAST_RINT) {
        if (m == AscendC::RoundMode::CAST_NONE || m == AscendC::RoundMode::CAST_RINT) {
            return static_cast<float>(v);  // the FPU's conversion is nearest-even
        }
        return static_cast<float>(round_to_format(v, m, kF32));
    }
};

template <>
struct Elem<half> {
    static constexpr const char* name = "half";
    static constexpr bool is_float = true;
    static double to_d(half v) { return static_cast<float>(v); }
    static half from_d(double v, AscendC::RoundMode m = AscendC::RoundMode::CAST_RINT) {
        if (rne_from_f32(v, m)) return half::from_bits(f32_to_f16_rne(static_cast<float>(v)));
        return half::from_bits(encode_f16(round_to_format(v, m, kF16)));
    }
};

template <>
struct Elem<bfloat16_t> {
    static constexpr const char* name = "bfloat16_t";
    static constexpr bool is_float = true;
    static double to_d(bfloat16_t v) { return static_cast<float>(v); }
    static bfloat16_t from_d(double v, AscendC::RoundMode m = AscendC::RoundMode::CAST_RINT) {
        if (rne_from_f32(v, m)) return bfloat16_t::from_bits(f32_to_bf16_rne(static_cast<float>(v)));
        return bfloat16_t::from_bits(encode_bf16(round_to_format(v, m, kBF16)));
    }
};

// Round `v` to an integer by `m` (CAST_NONE and CAST_ODD act as RINT), saturating to [lo, hi].
inline double round_to_integer(double v, AscendC::RoundMode m, double lo, double hi) {
    using AscendC::RoundMode;
    if (std::isnan(v)) return 0.0;
    double r;
    switch (m) {
        case RoundMode::CAST_FLOOR: r = std::floor(v); break;
        case RoundMode::CAST_CEIL: r = std::ceil(v); break;
        case RoundMode::CAST_TRUNC: r = std::trunc(v); break;
        case RoundMode::CAST_ROUND: r = std::round(v); break;
        default: r = std::nearbyint(v); break;  // default FP environment: nearest-even
    }
    return r < lo ? lo : (r > hi ? hi : r);
}

template <typename I>
struct IntElem {
    static constexpr bool is_float = false;
    static double to_d(I v) { return static_cast<double>(v); }
    static I from_d(double v, AscendC::RoundMode m = AscendC::RoundMode::CAST_RINT) {
        return static_cast<I>(round_to_integer(v, m, static_cast<double>(std::numeric_limits<I>::min()),
                                               static_cast<double>(std::numeric_limits<I>::max())));
    }
};

template <>
struct Elem<int32_t> : IntElem<int32_t> {
    static constexpr const char* name = "int32_t";
};
template <>
struct Elem<uint32_t> : IntElem<uint32_t> {
    static constexpr const char* name = "uint32_t";
};
template <>
struct Elem<int16_t> : IntElem<int16_t> {
    static constexpr const char* name = "int16_t";
};
template <>
struct Elem<uint16_t> : IntElem<uint16_t> {
    static constexpr const char* name = "uint16_t";
};
template <>
struct Elem<int8_t> : IntElem<int8_t> {
    static constexpr const char* name = "int8_t";
};
template <>
struct Elem<uint8_t> : IntElem<uint8_t> {
    static constexpr const char* name = "uint8_t";
};

// A non-deduced context, so `Adds(halfTensor, halfTensor, 1.0f, n)` picks T from the tensors.
template <typename T>
struct identity {
    using type = T;
};
template <typename T>
using nondeduced = typename identity<T>::type;

}  // namespace host
}  // namespace dsnpu

#endif
