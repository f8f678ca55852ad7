// GlobalTensor (global memory) and LocalTensor (Unified Buffer) of the host Ascend C layer.
//
// Contract: a GlobalTensor is a GM address plus, when SetGlobalBuffer was given one, a size in elements;
// views made with operator[] remember their offset into that buffer. Every access through it (GetValue/SetValue here, DataCopy/DataCopyPad/Matmul elsewhere) is checked
// against that size and against the simulator's allocation table (check_gm). A LocalTensor is a byte
// address in one local memory (the Unified Buffer, or the cube core's L1 / L0A / L0B / L0C: cube.h) plus an
// extent in elements; every access is checked against the extent and the memory (a vector, scalar or
// UB copy operand must be in the UB; the cube instructions name theirs), and vector/copy operations also
// check the 32-byte alignment the hardware requires of UB operands. LocalTensor views made with
// operator[] shrink the extent from the front; a view past the end has extent 0.
#ifndef DSNPU_ASCENDC_HOST_TENSOR_H
#define DSNPU_ASCENDC_HOST_TENSOR_H

#include <cstdint>
#include <cstring>

#include "block.h"
#include "dcache.h"
#include "pipeline.h"
#include "types.h"

namespace AscendC {

enum class TPosition : uint8_t {
    GM = 0,
    A1,
    A2,
    B1,
    B2,
    C1,
    C2,
    CO1,
    CO2,
    VECIN,
    VECOUT,
    VECCALC,
    LCM = VECCALC,
    SPM,
    SHM = SPM,
    TSCM,
    C2PIPE2GM,
    MAX,
};
using QuePosition = TPosition;

template <typename T>
class GlobalTensor {
public:
    using PrimType = T;

    __aicore__ inline GlobalTensor() = default;

    __aicore__ inline void SetGlobalBuffer(__gm__ T* buffer, uint64_t bufferSize) {
        addr_ = buffer;
        origin_ = 0;
        root_size_ = bufferSize;
        sized_ = true;
    }
    // Without a size only the allocation table bounds accesses.
    __aicore__ inline void SetGlobalBuffer(__gm__ T* buffer) {
        addr_ = buffer;
        origin_ = 0;
        root_size_ = 0;
        sized_ = false;
    }

    __aicore__ inline const __gm__ T* GetPhyAddr() const { return addr_; }
    __aicore__ inline __gm__ T* GetPhyAddr(const uint64_t offset) const { return offset_ptr(offset); }
    __aicore__ inline uint64_t GetSize() const { return origin_ < root_size_ ? root_size_ - origin_ : 0; }

    __aicore__ inline T GetValue(const uint64_t offset) const {
        const T* p = dsnpu_span("GlobalTensor::GetValue", offset, 1);
        const bool hit = ::dsnpu::host::l2_access(p, sizeof(T), false, false).miss == 0;
        ::dsnpu::host::issue(::dsnpu::host::kPipeS, "GlobalTensor::GetValue",
                             hit ? ::dsnpu::host::cost::kScalarGmHit : ::dsnpu::host::cost::kScalarGm);
        ::dsnpu::host::gm_access("GlobalTensor::GetValue", p, sizeof(T), false, true);
        ::dsnpu::host::dcache_get("GlobalTensor::GetValue", p, sizeof(T), dsnpu_lo(), dsnpu_hi());
        T v;
        std::memcpy(&v, p, sizeof(T));
        return v;
    }
    __aicore__ inline void SetValue(const uint64_t offset, const T& value) const {
        T* p = dsnpu_span("GlobalTensor::SetValue", offset, 1);
        // A store lands in the L2 whether its sector was there or not (cost.h: writes).
        ::dsnpu::host::l2_access(p, sizeof(T), true, false);
        ::dsnpu::host::issue(::dsnpu::host::kPipeS, "GlobalTensor::SetValue", ::dsnpu::host::cost::kScalarGmHit);
        std::memcpy(p, &value, sizeof(T));
        ::dsnpu::host::gm_access("GlobalTensor::SetValue", p, sizeof(T), true, true);
        ::dsnpu::host::dcache_set(p, sizeof(T), dsnpu_lo(), dsnpu_hi());
    }

    // A view starting `offset` elements in.
    __aicore__ inline GlobalTensor operator[](const uint64_t offset) const {
        GlobalTensor r = *this;
        r.addr_ = offset_ptr(offset);
        r.origin_ = origin_ + offset;
        return r;
    }

    // Host only: the address of elements [offset, offset + count), after checking them against the
    // tensor's size and the allocation table. `op` names the Ascend C operation in a fault message.
    T* dsnpu_span(const char* op, uint64_t offset, uint64_t count) const {
        // Checked against the buffer SetGlobalBuffer described, in its element numbering (views included).
        const uint64_t first = origin_ + offset;
        if (sized_ && (first < origin_ || first > root_size_ || count > root_size_ - first)) {
            ::dsnpu::host::fail("%s: elements [%llu, %llu) are past the end of a GlobalTensor of %llu elements",
                                op, static_cast<unsigned long long>(first),
                                static_cast<unsigned long long>(first + count),
                                static_cast<unsigned long long>(root_size_));
        }
        const uint64_t byte_off = ::dsnpu::host::mul_or_fail(op, offset, sizeof(T));
        const uint64_t bytes = ::dsnpu::host::mul_or_fail(op, count, sizeof(T));
        T* p = reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(addr_) + byte_off);
        if (sized_) {
            // The whole SetGlobalBuffer range (root_size_ elements from the root address) is the extent:
            // sized_ bounds origin_ and root_size_ by what the checks above accepted.
            const uintptr_t root = reinterpret_cast<uintptr_t>(addr_) - origin_ * sizeof(T);
            ::dsnpu::host::check_gm(op, p, bytes, reinterpret_cast<const void*>(root), root_size_ * sizeof(T));
        } else {
            ::dsnpu::host::check_gm(op, p, bytes);
        }
        return p;
    }
    bool dsnpu_sized() const { return sized_; }
    // Host only: the SetGlobalBuffer range as addresses [lo, hi) (lo == hi unsized).
    uint64_t dsnpu_lo() const { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(addr_)) - origin_ * sizeof(T); }
    uint64_t dsnpu_hi() const { return sized_ ? dsnpu_lo() + root_size_ * sizeof(T) : dsnpu_lo(); }

private:
    // Address arithmetic in integers: a view may point outside any allocation until it is accessed.
    T* offset_ptr(uint64_t offset) const {
        return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(addr_) + offset * sizeof(T));
    }

    __gm__ T* addr_ = nullptr;
    uint64_t origin_ = 0;     // elements from the SetGlobalBuffer address to this view
    uint64_t root_size_ = 0;  // elements SetGlobalBuffer was given
    bool sized_ = false;
};

template <typename T>
class LocalTensor {
public:
    using PrimType = T;

    __aicore__ inline LocalTensor() = default;

    // Scalar-unit accesses (PIPE_S): ordered against other pipes only by S_X / X_S flags.
    __aicore__ inline T GetValue(const uint32_t index) const {
        T v;
        const T* p = element("LocalTensor::GetValue", index);
        ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
        pl.issue(::dsnpu::host::kPipeS, "LocalTensor::GetValue", ::dsnpu::host::cost::kScalarUb);
        const uint32_t at = addr_ + index * static_cast<uint32_t>(sizeof(T));
        pl.ub_read(at, sizeof(T));
        pl.require_defined(at, sizeof(T), "reads");
        std::memcpy(&v, p, sizeof(T));
        return v;
    }
    __aicore__ inline void SetValue(const uint32_t index, const T& value) const {
        T* p = element("LocalTensor::SetValue", index);
        ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
        pl.issue(::dsnpu::host::kPipeS, "LocalTensor::SetValue", ::dsnpu::host::cost::kScalarUb);
        const uint32_t at = addr_ + index * static_cast<uint32_t>(sizeof(T));
        pl.ub_write(at, sizeof(T));
        pl.set_defined(at, sizeof(T), true);
        std::memcpy(p, &value, sizeof(T));
    }

    // A view starting `offset` elements in.
    __aicore__ inline LocalTensor operator[](const uint32_t offset) const {
        LocalTensor r;
        r.addr_ = addr_ + offset * static_cast<uint32_t>(sizeof(T));
        r.len_ = offset <= len_ ? len_ - offset : 0;
        r.mem_ = mem_;
        return r;
    }

    // The same bytes seen as another element type.
    template <typename U>
    __aicore__ inline LocalTensor<U> ReinterpretCast() const {
        return LocalTensor<U>::dsnpu_make(addr_, static_cast<uint32_t>(len_ * sizeof(T) / sizeof(U)), mem_);
    }

    __aicore__ inline uint32_t GetSize() const { return len_; }
    __aicore__ inline uint32_t GetLength() const { return len_ * static_cast<uint32_t>(sizeof(T)); }
    // The byte address in its memory.
    __aicore__ inline uint64_t GetPhyAddr() const { return addr_; }

    // Host only.
    static LocalTensor dsnpu_make(uint32_t addr, uint32_t len, ::dsnpu::host::Mem mem = ::dsnpu::host::Mem::kUb) {
        LocalTensor t;
        t.addr_ = addr;
        t.len_ = len;
        t.mem_ = mem;
        return t;
    }
    uint32_t dsnpu_addr() const { return addr_; }
    ::dsnpu::host::Mem dsnpu_mem() const { return mem_; }
    // The host address of the first `count` elements of a tensor in the cube core's memory `want`, after
    // checking the memory and the extent. `what` names the operand.
    T* dsnpu_cube_span(const char* op, const char* what, ::dsnpu::host::Mem want, uint64_t count) const {
        namespace h = ::dsnpu::host;
        if (mem_ != want) {
            h::fail("%s: %s is in %s, the instruction takes it from %s", op, what, h::mem_name(mem_), h::mem_name(want));
        }
        if (count > len_) {
            h::fail("%s: %llu elements of %s exceed its LocalTensor extent of %u elements", op,
                    static_cast<unsigned long long>(count), what, len_);
        }
        const uint32_t m = static_cast<uint32_t>(mem_) - 1;
        return reinterpret_cast<T*>(h::block().cube + h::kCubeAt[m] + addr_);
    }
    // The host address of elements [0, count) after checking the extent and, when `aligned`, the
    // 32-byte UB alignment vector and copy instructions need. `what` names the operand.
    T* dsnpu_span(const char* op, const char* what, uint64_t count, bool aligned = true) const {
        in_ub(op, what);
        if (count > len_) {
            ::dsnpu::host::fail("%s: %llu elements of %s exceed its LocalTensor extent of %u elements", op,
                                static_cast<unsigned long long>(count), what, len_);
        }
        if (aligned && addr_ % ::dsnpu::host::kUbBlock != 0) {
            ::dsnpu::host::fail("%s: %s at UB address %u is not 32-byte aligned", op, what, addr_);
        }
        return reinterpret_cast<T*>(::dsnpu::host::block().ub + addr_);
    }

private:
    void in_ub(const char* op, const char* what) const {
        if (mem_ != ::dsnpu::host::Mem::kUb) {
            ::dsnpu::host::fail("%s: %s is in the cube core's %s; the instruction works on the Unified Buffer", op,
                                what, ::dsnpu::host::mem_name(mem_));
        }
    }
    T* element(const char* op, uint32_t index) const {
        in_ub(op, "the tensor");
        if (index >= len_) {
            ::dsnpu::host::fail("%s: index %u is outside a LocalTensor of %u elements", op, index, len_);
        }
        return reinterpret_cast<T*>(::dsnpu::host::block().ub + addr_ + index * sizeof(T));
    }

    uint32_t addr_ = 0;  // byte address in mem_
    uint32_t len_ = 0;   // extent in elements
    ::dsnpu::host::Mem mem_ = ::dsnpu::host::Mem::kUb;
};

}  // namespace AscendC

#endif
