// TPipe, TQue (and TQueBind) and TBuf: local memory allocation of the host Ascend C layer.
//
// Contract: TPipe::InitBuffer hands out space linearly from address 0 of the memory its position names:
// the Unified Buffer for VECIN / VECOUT / VECCALC, and on a cube core L1 for A1 / B1 / TSCM, L0A for A2,
// L0B for B2 and L0C for CO1 (capacities 512, 64, 64 and 128 KiB). Each buffer's length is rounded up to
// the memory's alignment (32 bytes; 512 in L0A/L0B, 64 in L0C), at most 64 buffers per pipe; asking for
// more than the memory's capacity (the UB's from the simulator's context: 192 KiB on 910B/910C), for cube
// memory on a vector core or UB on the cube core, or for more buffers is a fault. The pipe records the block's UB
// high-water mark in the counters. A queue of `num` buffers cycles through them in order (num = 2 is
// double buffering); AllocTensor with every buffer taken, EnQue/FreeTensor of a tensor that is not one of
// the queue's buffers, and DeQue of an empty queue are faults (on the device they would hang or corrupt).
// Each queue buffer carries the implicit flags of its positions (pipeline.h): EnQue publishes the producer
// pipe's clock, DeQue makes the consumer wait for it, FreeTensor publishes the consumer's, and the buffer's
// next AllocTensor makes the producer wait for that. A TBuf carries none.
#ifndef DSNPU_ASCENDC_HOST_PIPE_H
#define DSNPU_ASCENDC_HOST_PIPE_H

#include <cstdint>

#include "block.h"
#include "pipeline.h"
#include "tensor.h"

namespace dsnpu {
namespace host {

constexpr uint32_t kMaxPipeBuffers = 64;
constexpr uint32_t kMaxQueBuffers = 8;

// The memory a buffer at `pos` lives in.
constexpr Mem mem_of(AscendC::TPosition pos) {
    return pos == AscendC::TPosition::A1 || pos == AscendC::TPosition::B1 || pos == AscendC::TPosition::TSCM ? Mem::kL1
           : pos == AscendC::TPosition::A2                                                                 ? Mem::kL0A
           : pos == AscendC::TPosition::B2                                                                 ? Mem::kL0B
           : pos == AscendC::TPosition::CO1                                                                ? Mem::kL0C
                                                                                                           : Mem::kUb;
}

// `len` rounded up to the alignment of `mem`.
inline uint32_t round_for(Mem mem, uint32_t len) {
    const uint32_t a = mem == Mem::kUb ? kUbBlock : kCubeAlign[static_cast<uint32_t>(mem) - 1];
    return (len + a - 1) / a * a;
}

// Reserve `num` buffers of `len` bytes (already rounded) in the cube core's memory `mem`; the first address.
inline uint32_t cube_reserve(const char* op, Mem mem, uint32_t num, uint32_t len) {
    BlockState& b = block();
    if (num == 0) fail("%s: a buffer count of 0", op);
    if (b.cube == nullptr) {
        fail("%s: a buffer in %s: this is a vector core; only the cube core (AIC) has L1 and L0", op, mem_name(mem));
    }
    if (b.ub_buffers + num > kMaxPipeBuffers) {
        fail("%s: %u more buffers would exceed the pipe's limit of %u (already %u)", op, num, kMaxPipeBuffers,
             b.ub_buffers);
    }
    const uint32_t m = static_cast<uint32_t>(mem) - 1;
    const uint64_t bytes = static_cast<uint64_t>(num) * len;
    if (b.cube_used[m] + bytes > kCubeBytes[m]) {
        fail("%s: %llu bytes on top of %u in use exceed %s's %u bytes", op, static_cast<unsigned long long>(bytes),
             b.cube_used[m], mem_name(mem), kCubeBytes[m]);
    }
    const uint32_t addr = b.cube_used[m];
    b.cube_used[m] += static_cast<uint32_t>(bytes);
    b.ub_buffers += num;
    if (b.cube_used[m] > b.cube_peak[m]) b.cube_peak[m] = b.cube_used[m];
    return addr;
}

// Reserve `num` buffers of `len` bytes (already rounded) and return the first address.
inline uint32_t ub_reserve(const char* op, uint32_t num, uint32_t len, const char* kind = "TBuf") {
    BlockState& b = block();
    if (num == 0) fail("%s: a buffer count of 0", op);
    if (b.kind == CoreKind::kAic && b.group != nullptr) {
        fail("%s: a Unified Buffer buffer on the cube core (AIC), which has none", op);
    }
    if (b.ub_buffers + num > kMaxPipeBuffers) {
        fail("%s: %u more buffers would exceed the pipe's limit of %u (already %u)", op, num, kMaxPipeBuffers,
             b.ub_buffers);
    }
    const uint64_t bytes = static_cast<uint64_t>(num) * len;
    if (b.ub_used + bytes > b.ub_capacity) {
        fail("%s: %llu bytes on top of %u in use exceed the Unified Buffer's %u bytes", op,
             static_cast<unsigned long long>(bytes), b.ub_used, b.ub_capacity);
    }
    const uint32_t addr = b.ub_used;
    b.ub_used += static_cast<uint32_t>(bytes);
    b.ub_buffers += num;
    if (b.ub_used > b.counters->ub_high_water) b.counters->ub_high_water = b.ub_used;
    if (b.ub_used > b.ub_peak) b.ub_peak = b.ub_used;
    for (uint32_t i = 0; i < num; ++i) pipeline().add_region(addr + i * len, len, kind, i);
    return addr;
}

// The buffers of one queue and where each is in its Alloc -> EnQue -> DeQue -> Free cycle.
class QueBase {
public:
    void dsnpu_init(const char* op, uint8_t num, uint32_t len) {
        if (num_ != 0) fail("%s: the queue already has buffers", op);
        if (num > kMaxQueBuffers) fail("%s: %u buffers in one queue (at most %u)", op, num, kMaxQueBuffers);
        const uint32_t rounded = round_for(mem_, len);
        const uint32_t base = mem_ == Mem::kUb ? ub_reserve(op, num, rounded, kind_) : cube_reserve(op, mem_, num, rounded);
        num_ = num;
        len_ = rounded;
        for (uint32_t i = 0; i < num_; ++i) {
            addr_[i] = base + i * rounded;
            state_[i] = kFree;
            enq_[i] = Edge{};
            freed_[i] = Edge{};
        }
    }

protected:
    // The pipes that fill (producer) and drain (consumer) the queue's buffers, and its name in messages.
    void set_pipes(uint32_t producer, uint32_t consumer, const char* kind, Mem mem) {
        producer_ = producer;
        consumer_ = consumer;
        kind_ = kind;
        mem_ = mem;
    }
    enum State : uint8_t { kFree, kHeld, kQueued };

    uint32_t alloc(const char* op) {
        if (num_ == 0) fail("%s: the queue has no buffers (missing TPipe::InitBuffer?)", op);
        for (uint32_t k = 0; k < num_; ++k) {
            const uint32_t i = (next_ + k) % num_;
            if (state_[i] == kFree) {
                state_[i] = kHeld;
                next_ = (i + 1) % num_;
                Pipeline& pl = pipeline();
                pl.cost().flag_op(producer_);
                pl.wait(producer_, freed_[i]);  // WaitFlag<consumer_producer> of the last FreeTensor
                freed_[i].valid = false;
                return i;
            }
        }
        fail("%s: all %u buffers of the queue are in use (missing FreeTensor?)", op, num_);
    }
    uint32_t find(const char* op, uint32_t ub_addr, State want) const {
        for (uint32_t i = 0; i < num_; ++i) {
            if (addr_[i] == ub_addr && state_[i] == want) return i;
        }
        fail("%s: the tensor at UB address %u is not a buffer of this queue in the expected state", op,
             ub_addr);
    }
    void enque(const char* op, uint32_t ub_addr) {
        const uint32_t i = find(op, ub_addr, kHeld);
        state_[i] = kQueued;
        pipeline().cost().flag_op(producer_);
        enq_[i] = pipeline().publish(producer_);  // SetFlag<producer_consumer>
        fifo_[(head_ + count_) % kMaxQueBuffers] = static_cast<uint8_t>(i);
        ++count_;
    }
    uint32_t deque(const char* op) {
        if (count_ == 0) fail("%s: the queue is empty (nothing was EnQue'd)", op);
        const uint32_t i = fifo_[head_];
        head_ = (head_ + 1) % kMaxQueBuffers;
        --count_;
        state_[i] = kHeld;
        pipeline().cost().flag_op(consumer_);
        pipeline().wait(consumer_, enq_[i]);  // WaitFlag<producer_consumer>
        enq_[i].valid = false;
        return i;
    }
    void release(const char* op, uint32_t ub_addr) {
        const uint32_t i = find(op, ub_addr, kHeld);
        state_[i] = kFree;
        pipeline().cost().flag_op(consumer_);
        freed_[i] = pipeline().publish(consumer_);  // SetFlag<consumer_producer>
    }

    uint32_t num_ = 0;
    uint32_t len_ = 0;
    uint32_t addr_[kMaxQueBuffers] = {};
    State state_[kMaxQueBuffers] = {};
    uint8_t fifo_[kMaxQueBuffers] = {};
    uint32_t head_ = 0;
    uint32_t count_ = 0;
    uint32_t next_ = 0;
    Edge enq_[kMaxQueBuffers];
    Edge freed_[kMaxQueBuffers];
    uint32_t producer_ = kPipeV;
    uint32_t consumer_ = kPipeV;
    const char* kind_ = "TQue";
    Mem mem_ = Mem::kUb;
};

// The pipe that fills a buffer at position `pos`, and the one that drains it.
constexpr uint32_t producer_of(AscendC::TPosition pos) {
    return pos == AscendC::TPosition::VECIN ? kPipeMte2
           : pos == AscendC::TPosition::A1 || pos == AscendC::TPosition::B1 || pos == AscendC::TPosition::TSCM ? kPipeMte2
           : pos == AscendC::TPosition::A2 || pos == AscendC::TPosition::B2 ? kPipeMte1
           : pos == AscendC::TPosition::CO1 ? kPipeM
                                            : kPipeV;
}
constexpr uint32_t consumer_of(AscendC::TPosition pos) {
    return pos == AscendC::TPosition::VECOUT ? kPipeMte3
           : pos == AscendC::TPosition::A1 || pos == AscendC::TPosition::B1 || pos == AscendC::TPosition::TSCM ? kPipeMte1
           : pos == AscendC::TPosition::A2 || pos == AscendC::TPosition::B2 ? kPipeM
           : pos == AscendC::TPosition::CO1 ? kPipeFix
                                            : kPipeV;
}
constexpr const char* position_name(AscendC::TPosition pos) {
    return pos == AscendC::TPosition::VECIN ? "TQue<VECIN>"
           : pos == AscendC::TPosition::VECOUT ? "TQue<VECOUT>"
           : pos == AscendC::TPosition::VECCALC ? "TQue<VECCALC>"
                                                : "TQue";
}

}  // namespace host
}  // namespace dsnpu

namespace AscendC {

// A queue whose buffers are filled at position `src` and drained at `dst`: TQueBind<VECIN, VECOUT> carries
// data that leaves the Unified Buffer exactly as it came in (GM -> UB -> GM, no vector work in between).
// On the host the positions only document the hand-over; the buffer discipline is that of every queue.
template <TPosition src, TPosition dst, int32_t depth, auto mask = 0>
class TQueBind : public ::dsnpu::host::QueBase {
public:
    // VECIN -> VECOUT binds GM -> UB -> GM: MTE2 fills, MTE3 drains.
    TQueBind() {
        static_assert(::dsnpu::host::mem_of(src) == ::dsnpu::host::mem_of(dst), "a queue's positions share one memory");
        set_pipes(::dsnpu::host::producer_of(src), ::dsnpu::host::consumer_of(dst),
                  src == dst ? ::dsnpu::host::position_name(src) : "TQueBind", ::dsnpu::host::mem_of(src));
    }
    template <typename T>
    __aicore__ inline LocalTensor<T> AllocTensor() {
        const uint32_t i = alloc("TQue::AllocTensor");
        return LocalTensor<T>::dsnpu_make(addr_[i], static_cast<uint32_t>(len_ / sizeof(T)), mem_);
    }
    template <typename T>
    __aicore__ inline bool EnQue(const LocalTensor<T>& tensor) {
        enque("TQue::EnQue", tensor.dsnpu_addr());
        return true;
    }
    template <typename T>
    __aicore__ inline LocalTensor<T> DeQue() {
        const uint32_t i = deque("TQue::DeQue");
        return LocalTensor<T>::dsnpu_make(addr_[i], static_cast<uint32_t>(len_ / sizeof(T)), mem_);
    }
    template <typename T>
    __aicore__ inline void FreeTensor(LocalTensor<T>& tensor) {
        release("TQue::FreeTensor", tensor.dsnpu_addr());
    }
    __aicore__ inline bool VacantInQue() const { return count_ < num_; }
    __aicore__ inline bool HasTensorInQue() const { return count_ != 0; }
};

// A queue used at one position (VECIN: filled by MTE2, drained by the vector unit; VECOUT: the reverse).
template <TPosition pos, int32_t depth = 1, auto mask = 0>
class TQue : public TQueBind<pos, pos, depth, mask> {};

template <TPosition pos = TPosition::VECCALC>
class TBuf {
public:
    template <typename T>
    __aicore__ inline LocalTensor<T> Get() const {
        check_init("TBuf::Get");
        return LocalTensor<T>::dsnpu_make(addr_, static_cast<uint32_t>(len_ / sizeof(T)), kMem);
    }
    // The first `len` elements.
    template <typename T>
    __aicore__ inline LocalTensor<T> Get(uint32_t len) const {
        check_init("TBuf::Get");
        if (static_cast<uint64_t>(len) * sizeof(T) > len_) {
            ::dsnpu::host::fail("TBuf::Get: %u elements of %zu bytes exceed the buffer's %u bytes", len,
                                sizeof(T), len_);
        }
        return LocalTensor<T>::dsnpu_make(addr_, len, kMem);
    }
    // `size` elements starting `bufOffset` bytes in.
    template <typename T>
    __aicore__ inline LocalTensor<T> GetWithOffset(uint32_t size, uint32_t bufOffset) const {
        check_init("TBuf::GetWithOffset");
        if (bufOffset + static_cast<uint64_t>(size) * sizeof(T) > len_) {
            ::dsnpu::host::fail("TBuf::GetWithOffset: %u elements at byte %u exceed the buffer's %u bytes", size,
                                bufOffset, len_);
        }
        return LocalTensor<T>::dsnpu_make(addr_ + bufOffset, size, kMem);
    }

    void dsnpu_init(uint32_t len) {
        if (init_) ::dsnpu::host::fail("TPipe::InitBuffer: the TBuf already has a buffer");
        len_ = ::dsnpu::host::round_for(kMem, len);
        addr_ = kMem == ::dsnpu::host::Mem::kUb ? ::dsnpu::host::ub_reserve("TPipe::InitBuffer", 1, len_, "TBuf")
                                                : ::dsnpu::host::cube_reserve("TPipe::InitBuffer", kMem, 1, len_);
        init_ = true;
    }

private:
    static constexpr ::dsnpu::host::Mem kMem = ::dsnpu::host::mem_of(pos);
    void check_init(const char* op) const {
        if (!init_) ::dsnpu::host::fail("%s: the TBuf has no buffer (missing TPipe::InitBuffer?)", op);
    }
    uint32_t addr_ = 0;
    uint32_t len_ = 0;
    bool init_ = false;
};

class TPipe {
public:
    // A pipe owns the whole Unified Buffer of its block (and the cube core's L1 and L0).
    __aicore__ inline TPipe() { Reset(); }

    template <class Q>
    __aicore__ inline bool InitBuffer(Q& que, uint8_t num, uint32_t len) {
        que.dsnpu_init("TPipe::InitBuffer", num, len);
        return true;
    }
    template <TPosition pos>
    __aicore__ inline bool InitBuffer(TBuf<pos>& buf, uint32_t len) {
        buf.dsnpu_init(len);
        return true;
    }
    // Releases every buffer; queues and TBufs initialised before must not be used afterwards.
    __aicore__ inline void Reset() {
        ::dsnpu::host::BlockState& b = ::dsnpu::host::block();
        b.ub_used = 0;
        b.ub_buffers = 0;
        for (uint32_t& u : b.cube_used) u = 0;
        ::dsnpu::host::pipeline().reset_regions();
    }
    __aicore__ inline void Destroy() { Reset(); }
};

}  // namespace AscendC

#endif
