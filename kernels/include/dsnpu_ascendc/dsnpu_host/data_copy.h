// DataCopy and DataCopyPad between global memory and the Unified Buffer.
//
// Contract (from the Ascend C API documentation):
// - DataCopy(dst, src, count) moves count * sizeof(T) bytes, which the hardware silently rounds DOWN to a
//   multiple of 32; the host does the same and reports it with a warning. The UB operand must be 32-byte
//   aligned. DataCopy(dst, src, DataCopyParams) moves blockCount blocks of blockLen 32-byte units with
//   gaps of srcStride/dstStride 32-byte units.
// - DataCopyPad takes DataCopyExtParams {blockCount, blockLen (bytes), srcStride, dstStride, rsv}: strides
//   are gaps between consecutive blocks, in bytes on the GM side and in 32-byte blocks on the UB side. In
//   UB each block starts on a 32-byte boundary and occupies round_up_32(leftPad + blockLen + rightPad)
//   bytes; with isPad the left/right padding elements are set to paddingValue (each at most 32 bytes).
//   blockCount 0 or blockLen 0 moves nothing.
// Every GM access is checked against the GlobalTensor's size and the allocation table, every UB access
// against the LocalTensor's extent. Bytes moved are added to the block's gm_to_ub / ub_to_gm counters.
// Pipes (pipeline.h): GM -> UB issues on MTE2 and writes (defines) the UB bytes it fills; UB -> GM issues
// on MTE3, reads its UB bytes and requires them defined; UB -> UB issues on V. Under the init check GM loads
// must read bytes something wrote, and GM stores mark theirs written (gm_access, pipeline.h). A store
// obeys the core's atomic mode (atomic.h).
#ifndef DSNPU_ASCENDC_HOST_DATA_COPY_H
#define DSNPU_ASCENDC_HOST_DATA_COPY_H

#include <cstdint>
#include <cstring>

#include "atomic.h"
#include "block.h"
#include "pipeline.h"
#include "tensor.h"

namespace AscendC {

struct DataCopyParams {
    __aicore__ DataCopyParams() = default;
    __aicore__ DataCopyParams(uint16_t count, uint16_t len, uint16_t srcStrideIn, uint16_t dstStrideIn)
        : blockCount(count), blockLen(len), srcStride(srcStrideIn), dstStride(dstStrideIn) {}
    uint16_t blockCount = 1;
    uint16_t blockLen = 0;  // 32-byte units
    uint16_t srcStride = 0;
    uint16_t dstStride = 0;
};

struct DataCopyExtParams {
    __aicore__ DataCopyExtParams() = default;
    __aicore__ DataCopyExtParams(uint16_t count, uint32_t len, uint32_t srcStrideIn, uint32_t dstStrideIn,
                                 uint32_t rsvIn)
        : blockCount(count), blockLen(len), srcStride(srcStrideIn), dstStride(dstStrideIn), rsv(rsvIn) {}
    uint16_t blockCount = 0;
    uint32_t blockLen = 0;  // bytes
    uint32_t srcStride = 0;
    uint32_t dstStride = 0;
    uint32_t rsv = 0;
};

template <typename T>
struct DataCopyPadExtParams {
    __aicore__ DataCopyPadExtParams() = default;
    __aicore__ DataCopyPadExtParams(bool isPadValue, uint8_t leftPadValue, uint8_t rightPadValue, T padValue)
        : isPad(isPadValue), leftPadding(leftPadValue), rightPadding(rightPadValue), paddingValue(padValue) {}
    bool isPad = false;
    uint8_t leftPadding = 0;   // elements
    uint8_t rightPadding = 0;  // elements
    T paddingValue = T();
};

namespace detail {

template <typename T>
inline uint64_t rounded_copy_bytes(const char* dir, uint32_t count) {
    const uint64_t bytes = static_cast<uint64_t>(count) * sizeof(T);
    const uint64_t copied = bytes / ::dsnpu::host::kUbBlock * ::dsnpu::host::kUbBlock;
    if (copied != bytes) {
        ::dsnpu::host::warn(
            "DataCopy: %s length of %u elements (%llu bytes) is not a multiple of 32 bytes; the hardware "
            "copies %llu",
            dir, count, static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(copied));
    }
    return copied;
}

}  // namespace detail

// GM -> UB.
template <typename T>
__aicore__ inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const uint32_t count) {
    const uint64_t bytes = detail::rounded_copy_bytes<T>("GM->UB", count);
    const uint64_t n = bytes / sizeof(T);
    T* d = dst.dsnpu_span("DataCopy", "the UB destination", n);
    const T* s = src.dsnpu_span("DataCopy", 0, n);
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    const ::dsnpu::host::L2Split split = ::dsnpu::host::l2_access(s, bytes, false);
    pl.issue(::dsnpu::host::kPipeMte2, "DataCopy", pl.cost().mte_cycles(split), ::dsnpu::host::cost::kMteLatency);
    pl.ub_write(dst.dsnpu_addr(), bytes);
    pl.set_defined(dst.dsnpu_addr(), bytes, true);
    ::dsnpu::host::gm_read("DataCopy", s, bytes);
    std::memcpy(d, s, bytes);
    ::dsnpu::host::counters().gm_to_ub_bytes += bytes;
}

// UB -> GM.
template <typename T>
__aicore__ inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const uint32_t count) {
    const uint64_t bytes = detail::rounded_copy_bytes<T>("UB->GM", count);
    const uint64_t n = bytes / sizeof(T);
    const T* s = src.dsnpu_span("DataCopy", "the UB source", n);
    T* d = dst.dsnpu_span("DataCopy", 0, n);
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    const ::dsnpu::host::L2Split split = ::dsnpu::host::l2_access(d, bytes, true);
    pl.issue(::dsnpu::host::kPipeMte3, "DataCopy", pl.cost().mte_cycles(split), ::dsnpu::host::cost::kMteLatency);
    pl.ub_read(src.dsnpu_addr(), bytes);
    pl.require_defined(src.dsnpu_addr(), bytes, "copies to GM");
    ::dsnpu::host::atomic_reads("DataCopy", d, bytes);
    ::dsnpu::host::gm_store<T>("DataCopy", d, s, bytes);
    ::dsnpu::host::gm_wrote("DataCopy", d, bytes);
    ::dsnpu::host::counters().ub_to_gm_bytes += bytes;
}

// UB -> UB (e.g. VECIN -> VECOUT).
template <typename T>
__aicore__ inline void DataCopy(const LocalTensor<T>& dst, const LocalTensor<T>& src, const uint32_t count) {
    const uint64_t bytes = detail::rounded_copy_bytes<T>("UB->UB", count);
    const uint64_t n = bytes / sizeof(T);
    T* d = dst.dsnpu_span("DataCopy", "the UB destination", n);
    const T* s = src.dsnpu_span("DataCopy", "the UB source", n);
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    pl.issue(::dsnpu::host::kPipeV, "DataCopy", ::dsnpu::host::cost::vector(bytes, ::dsnpu::host::cost::VecClass::kSimple));
    pl.ub_read(src.dsnpu_addr(), bytes);
    pl.ub_write(dst.dsnpu_addr(), bytes);
    pl.copy_defined(dst.dsnpu_addr(), src.dsnpu_addr(), bytes);
    std::memmove(d, s, bytes);
}

namespace detail {

// Move blocks between GM (byte pitch) and UB (32-byte-block pitch). `to_ub` picks the direction.
template <typename T>
inline void block_copy(const char* op, bool to_ub, const LocalTensor<T>& ub, const GlobalTensor<T>& gm,
                       uint32_t blocks, uint64_t block_bytes, uint64_t gm_gap, uint64_t ub_gap, uint64_t ub_block,
                       uint64_t ub_lead) {
    if (blocks == 0 || block_bytes == 0) return;
    const uint64_t gm_pitch = block_bytes + gm_gap;
    const uint64_t ub_pitch = ub_block + ub_gap;
    const uint64_t gm_span = (blocks - 1) * gm_pitch + block_bytes;
    const uint64_t ub_span = (blocks - 1) * ub_pitch + ub_block;
    if (gm_span % sizeof(T) != 0 || ub_span % sizeof(T) != 0) {
        ::dsnpu::host::fail("%s: a %llu-byte block or stride is not a whole number of %zu-byte elements", op,
                            static_cast<unsigned long long>(block_bytes), sizeof(T));
    }
    uint8_t* u = reinterpret_cast<uint8_t*>(
        ub.dsnpu_span(op, to_ub ? "the UB destination" : "the UB source", ub_span / sizeof(T)));
    uint8_t* g = reinterpret_cast<uint8_t*>(gm.dsnpu_span(op, 0, gm_span / sizeof(T)));
    const uint64_t moved = static_cast<uint64_t>(blocks) * block_bytes;
    ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
    ::dsnpu::host::L2Split split;
    for (uint32_t i = 0; i < blocks; ++i) {
        ::dsnpu::host::add_split(split, ::dsnpu::host::l2_access(g + i * gm_pitch, block_bytes, !to_ub));
    }
    pl.issue(to_ub ? ::dsnpu::host::kPipeMte2 : ::dsnpu::host::kPipeMte3, op, pl.cost().mte_cycles(split),
             ::dsnpu::host::cost::kMteLatency);
    for (uint32_t i = 0; i < blocks; ++i) {
        uint8_t* ub_p = u + i * ub_pitch + ub_lead;
        uint8_t* gm_p = g + i * gm_pitch;
        const uint32_t at = static_cast<uint32_t>(ub.dsnpu_addr() + i * ub_pitch + ub_lead);
        if (to_ub) {
            pl.ub_write(at, block_bytes);
            pl.set_defined(at, block_bytes, true);
            ::dsnpu::host::gm_read(op, gm_p, block_bytes);
            std::memcpy(ub_p, gm_p, block_bytes);
        } else {
            pl.ub_read(at, block_bytes);
            pl.require_defined(at, block_bytes, "copies to GM");
            ::dsnpu::host::atomic_reads(op, gm_p, block_bytes);
            ::dsnpu::host::gm_store<T>(op, gm_p, ub_p, block_bytes);
            ::dsnpu::host::gm_wrote(op, gm_p, block_bytes);
        }
    }
    if (to_ub) {
        ::dsnpu::host::counters().gm_to_ub_bytes += moved;
    } else {
        ::dsnpu::host::counters().ub_to_gm_bytes += moved;
    }
}

}  // namespace detail

// GM -> UB, blocks of whole 32-byte units on both sides.
template <typename T>
__aicore__ inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p) {
    const uint64_t len = static_cast<uint64_t>(p.blockLen) * ::dsnpu::host::kUbBlock;
    detail::block_copy("DataCopy", true, dst, src, p.blockCount, len,
                       static_cast<uint64_t>(p.srcStride) * ::dsnpu::host::kUbBlock,
                       static_cast<uint64_t>(p.dstStride) * ::dsnpu::host::kUbBlock, len, 0);
}

// UB -> GM, blocks of whole 32-byte units on both sides.
template <typename T>
__aicore__ inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p) {
    const uint64_t len = static_cast<uint64_t>(p.blockLen) * ::dsnpu::host::kUbBlock;
    detail::block_copy("DataCopy", false, src, dst, p.blockCount, len,
                       static_cast<uint64_t>(p.dstStride) * ::dsnpu::host::kUbBlock,
                       static_cast<uint64_t>(p.srcStride) * ::dsnpu::host::kUbBlock, len, 0);
}

// GM -> UB with byte-granular blocks, each padded to 32 bytes in UB.
template <typename T>
__aicore__ inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p,
                                   const DataCopyPadExtParams<T>& pad) {
    const char* op = "DataCopyPad";
    if (p.blockCount == 0 || p.blockLen == 0) return;
    const uint64_t left = static_cast<uint64_t>(pad.leftPadding) * sizeof(T);
    const uint64_t right = static_cast<uint64_t>(pad.rightPadding) * sizeof(T);
    if (left > ::dsnpu::host::kUbBlock || right > ::dsnpu::host::kUbBlock) {
        ::dsnpu::host::fail("%s: padding of %u/%u elements exceeds 32 bytes", op, pad.leftPadding,
                            pad.rightPadding);
    }
    const uint64_t ub_block = ::dsnpu::host::round_up32(left + p.blockLen + right);
    detail::block_copy(op, true, dst, src, p.blockCount, p.blockLen, p.srcStride,
                       static_cast<uint64_t>(p.dstStride) * ::dsnpu::host::kUbBlock, ub_block, left);
    if (pad.isPad && (left != 0 || right != 0)) {
        uint8_t* u = reinterpret_cast<uint8_t*>(dst.dsnpu_span(op, "the UB destination", 0));
        const uint64_t pitch = ub_block + static_cast<uint64_t>(p.dstStride) * ::dsnpu::host::kUbBlock;
        for (uint32_t i = 0; i < p.blockCount; ++i) {
            uint8_t* row = u + i * pitch;
            for (uint32_t k = 0; k < pad.leftPadding; ++k) {
                std::memcpy(row + k * sizeof(T), &pad.paddingValue, sizeof(T));
            }
            uint8_t* tail = row + left + p.blockLen;
            for (uint32_t k = 0; k < pad.rightPadding; ++k) {
                std::memcpy(tail + k * sizeof(T), &pad.paddingValue, sizeof(T));
            }
            // The padding is written by the same MTE2 instruction.
            const uint32_t at = static_cast<uint32_t>(dst.dsnpu_addr() + i * pitch);
            ::dsnpu::host::Pipeline& pl = ::dsnpu::host::pipeline();
            pl.ub_write(at, left);
            pl.set_defined(at, left, true);
            pl.ub_write(static_cast<uint32_t>(at + left + p.blockLen), right);
            pl.set_defined(static_cast<uint32_t>(at + left + p.blockLen), right, true);
        }
    }
}

// UB -> GM with byte-granular blocks; each UB block starts on a 32-byte boundary.
template <typename T>
__aicore__ inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p) {
    if (p.blockCount == 0 || p.blockLen == 0) return;
    const uint64_t ub_block = ::dsnpu::host::round_up32(p.blockLen);
    detail::block_copy("DataCopyPad", false, src, dst, p.blockCount, p.blockLen, p.dstStride,
                       static_cast<uint64_t>(p.srcStride) * ::dsnpu::host::kUbBlock, ub_block, 0);
}

}  // namespace AscendC

#endif
