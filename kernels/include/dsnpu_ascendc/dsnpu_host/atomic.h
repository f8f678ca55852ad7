// DMA atomics of the host Ascend C layer: SetAtomicAdd / SetAtomicMax / SetAtomicMin / SetAtomicType /
// SetAtomicNone (DisableDmaAtomic).
//
// Contract (SetAtomicAdd.md, SetAtomicType.md, asc_set_atomic_add.md): the calls set a mode of the core,
// on the scalar pipe, that every later transfer to GM out of the Unified Buffer (DataCopy / DataCopyPad,
// MTE3) or L0C (Fixpipe, FIX) obeys until SetAtomicNone: instead of storing, the transfer combines each
// element with the one in GM (sum, larger, smaller) and stores the result, atomically with respect to
// every other core's atomic transfers. Types on 910B: int8_t, int16_t, half, bfloat16_t, int32_t, float;
// a transfer whose element type is not the mode's is a fault here (the device would reinterpret the
// bytes). The Matmul API's own enAtomic output (lib/matmul_intf.h) does not look at this mode, and a
// Matmul output while it is set is a fault rather than a guess.
// GUESS: the combination is computed exactly and rounded to the element type to nearest-even (integers
// saturate), as the vector unit's arithmetic is here; the device's rounding of half / bfloat16_t sums is
// not published.
//
// The checks: an atomic transfer reads GM (the init check sees it as a read of the destination) and
// writes it. The race check treats two atomic transfers of the same operation as ordered with each
// other, whichever cores or blocks make them and in whatever order, and an atomic transfer as a write
// against every other access: a plain store, or a read, unordered with an atomic one is still a race.
// The cost model times an atomic transfer as the store it replaces.
#ifndef DSNPU_ASCENDC_HOST_ATOMIC_H
#define DSNPU_ASCENDC_HOST_ATOMIC_H

#include <cstdint>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "block.h"
#include "pipeline.h"
#include "types.h"

namespace dsnpu {
namespace host {

// The element types an atomic mode names (BlockState::atomic_type).
template <typename T>
constexpr uint8_t atomic_type_of() {
    if constexpr (std::is_same<T, float>::value) return 1;
    if constexpr (std::is_same<T, half>::value) return 2;
    if constexpr (std::is_same<T, bfloat16_t>::value) return 3;
    if constexpr (std::is_same<T, int32_t>::value) return 4;
    if constexpr (std::is_same<T, int16_t>::value) return 5;
    if constexpr (std::is_same<T, int8_t>::value) return 6;
    return 0;
}
inline const char* atomic_type_name(uint8_t t) {
    static const char* const names[] = {"none", "float", "half", "bfloat16_t", "int32_t", "int16_t", "int8_t"};
    return t < sizeof names / sizeof names[0] ? names[t] : "?";
}
inline const char* atomic_op_name(AtomicOp op) {
    switch (op) {
        case AtomicOp::kAdd: return "SetAtomicAdd";
        case AtomicOp::kMax: return "SetAtomicMax";
        case AtomicOp::kMin: return "SetAtomicMin";
        default: return "none";
    }
}

// Host memory is shared by the blocks' threads: one lock makes every atomic transfer whole.
inline std::mutex& atomic_lock() {
    static std::mutex* m = new std::mutex();  // never destroyed: launches may end during static destruction
    return *m;
}

// Stores `bytes` at `d` from `s` by the core's atomic mode (a plain copy when none is set); an atomic
// transfer moves whole elements of T. `op` names the instruction in a fault.
template <typename T>
inline void gm_store(const char* op, void* dst, const void* src, uint64_t bytes) {
    BlockState& b = block();
    if (b.atomic_op == AtomicOp::kNone) {
        std::memcpy(dst, src, bytes);
        return;
    }
    if (b.atomic_type != atomic_type_of<T>()) {
        fail("%s: the core's atomic mode (%s<%s>) is for another type than the %zu-byte elements it moves", op,
             atomic_op_name(b.atomic_op), atomic_type_name(b.atomic_type), sizeof(T));
    }
    if constexpr (atomic_type_of<T>() != 0) {
        if (bytes % sizeof(T) != 0) {
            fail("%s: an atomic transfer of %llu bytes is not a whole number of %zu-byte elements", op,
                 static_cast<unsigned long long>(bytes), sizeof(T));
        }
        T* d = static_cast<T*>(dst);
        const T* s = static_cast<const T*>(src);
        const uint64_t n = bytes / sizeof(T);
        std::lock_guard<std::mutex> g(atomic_lock());
        for (uint64_t i = 0; i < n; ++i) {
            const double x = Elem<T>::to_d(d[i]), y = Elem<T>::to_d(s[i]);
            const double r = b.atomic_op == AtomicOp::kAdd   ? x + y
                             : b.atomic_op == AtomicOp::kMax ? (x > y ? x : y)
                                                             : (x < y ? x : y);
            d[i] = Elem<T>::from_d(r);
        }
    }
}

// Before an atomic transfer to GM [p, p + bytes): its read of the destination, for the init check.
inline void atomic_reads(const char* op, const void* p, uint64_t bytes) {
    BlockState& b = block();
    if (b.atomic_op == AtomicOp::kNone || b.ctx->gm_access == nullptr || b.pipeline == nullptr ||
        !b.pipeline->init_on()) {
        return;
    }
    if (b.ctx->gm_access(b.ctx->sim, op, p, static_cast<size_t>(bytes), 0) != 0) throw BlockAbort{};
}

template <typename T>
inline void set_atomic(AtomicOp op) {
    static_assert(atomic_type_of<T>() != 0, "atomic types: int8_t, int16_t, half, bfloat16_t, int32_t, float");
    BlockState& b = block();
    issue(kPipeS, atomic_op_name(op), cost::kFlag);
    b.atomic_op = op;
    b.atomic_type = atomic_type_of<T>();
}

}  // namespace host
}  // namespace dsnpu

namespace AscendC {

template <typename T>
__aicore__ inline void SetAtomicAdd() {
    ::dsnpu::host::set_atomic<T>(::dsnpu::host::AtomicOp::kAdd);
}
template <typename T>
__aicore__ inline void SetAtomicMax() {
    ::dsnpu::host::set_atomic<T>(::dsnpu::host::AtomicOp::kMax);
}
template <typename T>
__aicore__ inline void SetAtomicMin() {
    ::dsnpu::host::set_atomic<T>(::dsnpu::host::AtomicOp::kMin);
}
// The type of the current operation (SetAtomicType.md: the Add/Max/Min calls set it too).
template <typename T>
__aicore__ inline void SetAtomicType() {
    static_assert(::dsnpu::host::atomic_type_of<T>() != 0, "atomic types: int8_t, int16_t, half, bfloat16_t, int32_t, float");
    ::dsnpu::host::issue(::dsnpu::host::kPipeS, "SetAtomicType", ::dsnpu::host::cost::kFlag);
    ::dsnpu::host::block().atomic_type = ::dsnpu::host::atomic_type_of<T>();
}
__aicore__ inline void SetAtomicNone() {
    ::dsnpu::host::issue(::dsnpu::host::kPipeS, "SetAtomicNone", ::dsnpu::host::cost::kFlag);
    ::dsnpu::host::block().atomic_op = ::dsnpu::host::AtomicOp::kNone;
    ::dsnpu::host::block().atomic_type = 0;
}
__aicore__ inline void DisableDmaAtomic() { SetAtomicNone(); }

}  // namespace AscendC

#endif
