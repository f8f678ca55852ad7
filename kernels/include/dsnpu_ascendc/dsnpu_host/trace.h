// The cost model's timeline of one block, written out for whoever tunes a kernel (opt in, off by
// default): with DSNPU_SIM_TRACE=FILE set, each core of block DSNPU_SIM_TRACE_BLOCK (0 unless set) of
// every launch whose kernel name starts with DSNPU_SIM_TRACE_KERNEL (every kernel if unset) appends one
// CSV line per instruction and per stall to FILE, under a header line when FILE is empty:
//
//   kind,kernel,block,core,pipe,op,start,cycles,latency
//
// kind I: an instruction `op` on `pipe` (S, V, M, MTE1, MTE2, MTE3, FIX) starting at `start` (model cycles
// since the core began), occupying the pipe `cycles`, complete `latency` after that; kind W: `pipe`
// stalled from `start` for `cycles` (a WaitFlag, a queue hand-over, a cross-core flag, SyncAll, a
// barrier). `core` is 0 on a plain block and on a mix block's AIC, 1 + the sub-block on its AIVs. A
// core's I cycles summed per pipe are its busy time and its largest start + cycles + latency its model
// cycles: the launch counters' pipe_busy_q8 and model_cycles come from the same records. Lines of
// concurrent blocks never interleave (one lock); a core that faults writes nothing.
#ifndef DSNPU_ASCENDC_HOST_TRACE_H
#define DSNPU_ASCENDC_HOST_TRACE_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "pipeline.h"

namespace dsnpu {
namespace host {

// Whether this core of `block` of a launch of `kernel` is traced (the variables above).
inline bool trace_wanted(const char* kernel, uint32_t block) {
    const char* path = std::getenv("DSNPU_SIM_TRACE");
    if (path == nullptr || *path == '\0') return false;
    const char* prefix = std::getenv("DSNPU_SIM_TRACE_KERNEL");
    if (prefix != nullptr && std::strncmp(kernel, prefix, std::strlen(prefix)) != 0) return false;
    const char* b = std::getenv("DSNPU_SIM_TRACE_BLOCK");
    const unsigned long want = b != nullptr ? std::strtoul(b, nullptr, 10) : 0;
    return block == want;
}

// Appends one core's records to DSNPU_SIM_TRACE's file (nothing if it cannot be opened).
inline void trace_append(const char* kernel, uint32_t block, uint32_t core, const std::vector<TraceEvent>& events) {
    static std::mutex lock;
    const char* path = std::getenv("DSNPU_SIM_TRACE");
    if (path == nullptr || *path == '\0') return;
    std::lock_guard<std::mutex> guard(lock);
    std::FILE* f = std::fopen(path, "a");
    if (f == nullptr) return;
    if (std::fseek(f, 0, SEEK_END) == 0 && std::ftell(f) == 0) {
        std::fputs("kind,kernel,block,core,pipe,op,start,cycles,latency\n", f);
    }
    for (const TraceEvent& e : events) {
        std::fprintf(f, "%c,%s,%u,%u,%s,%s,%.1f,%.1f,%.1f\n", e.kind, kernel, block, core, pipe_name(e.pipe),
                     e.kind == 'W' ? "wait" : (e.op != nullptr ? e.op : "?"), e.start, e.cycles, e.latency);
    }
    std::fclose(f);
}

}  // namespace host
}  // namespace dsnpu

#endif
