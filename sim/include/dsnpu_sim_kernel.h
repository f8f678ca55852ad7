/*
 * The host kernel ABI between the dsnpu simulator and a host kernel binary.
 *
 * A host kernel binary is a shared object. The simulator loads it for aclrtBinaryLoadFromFile /
 * aclrtBinaryLoadFromData, checks `dsnpu_sim_kernel_abi_version() == DSNPU_SIM_KERNEL_ABI`, and
 * resolves a kernel for aclrtBinaryGetFunction(bin, "name") as the exported symbol `name` with the
 * type `dsnpu_sim_kernel_fn`.
 *
 * A launch of numBlocks blocks calls the kernel once per block. ABI 4: a kernel whose blocks meet in
 * `sync_all` says so by exporting, next to `name`, the object `const uint8_t name__dsnpu_sync_all = 1`
 * (DSNPU_SIM_SYNC_ALL_SUFFIX; the Ascend C host layer's DSNPU_HOST_ENTRY_SYNC does it). Its blocks run
 * all at once, up to the simulated core count (DSNPU_SIM_AICORE_NUM), so `sync_all` can meet: every one
 * on its own thread, or, if it also declares DSNPU_SIM_COOP_SUFFIX, cooperatively on one thread; a larger launch runs in waves, as the hardware does, and a `sync_all` in it fails
 * the launch instead of hanging. The blocks of any other kernel are independent: the simulator runs short
 * ones one after another on one thread (a thread handoff per block cost more than a small block's work)
 * and the rest concurrently, in any order; a `sync_all` in such a kernel fails the launch.
 * `args` points at the packed argument bytes exactly as the host passed them (aclrtLaunchKernelWithHostArgs) or as appended through
 * aclrtKernelArgsAppend: for Ascend C kernels, one 8-byte GM address per parameter, in order. The
 * bytes stay valid for the duration of the call.
 *
 * A kernel reports a fault (an out-of-bounds GM access, a UB overflow) through `fail` and then returns
 * from the block; the simulator turns it into ACL_ERROR_RT_AICORE_EXCEPTION on the launch's stream.
 */
#ifndef DSNPU_SIM_KERNEL_H
#define DSNPU_SIM_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSNPU_SIM_KERNEL_ABI 5u

/* The suffix of the object that declares a kernel's blocks meet in sync_all (see above). */
#define DSNPU_SIM_SYNC_ALL_SUFFIX "__dsnpu_sync_all"

/* The suffix of the object that declares, next to the sync_all one, that the kernel's blocks may also run
 * cooperatively: all on one thread, each on its own stack, switching only inside sync_all (so the kernel
 * keeps no per-block state in thread-locals across sync_all, or restores it). While such a kernel's
 * blocks are short the simulator runs them so instead of a thread each. */
#define DSNPU_SIM_COOP_SUFFIX "__dsnpu_coop"

/* Per-block traffic counters; the kernel adds to them, the simulator sums them per launch. */
typedef struct dsnpu_sim_counters {
    uint64_t gm_to_ub_bytes;   /* bytes read from global memory into the Unified Buffer */
    uint64_t ub_to_gm_bytes;   /* bytes written from the Unified Buffer to global memory */
    uint64_t vector_elem_ops;  /* element operations issued by vector instructions */
    uint64_t cube_macs;        /* multiply-accumulates issued to the cube unit */
    uint64_t ub_high_water;    /* this block's peak Unified Buffer use, bytes */
    /* The host layer's cycle model (kernels/include/dsnpu_ascendc/dsnpu_host/cost.h), 0 if the kernel has
     * none. Per block: its modelled cycles, and each pipe's busy fraction (S, V, M, MTE1, MTE2, MTE3, FIX
     * in bytes 0..6, 255 = always busy). In a launch's totals: the cycles of the busiest core (the blocks
     * it runs one after another summed) and the busy fractions of the longest block. */
    uint64_t model_cycles;
    uint64_t pipe_busy_q8;
    /* ABI 3. The HBM traffic of the GM traffic above under the host layer's L2 model (cost.h): the 32-byte
     * sectors that reads miss (fetched whole), and the sectors that writes dirty (each written back once).
     * The GM counters above stay all GM traffic, L2 hits included. Per block: the misses of the block's
     * own slice of the L2 (what its cycles were timed with). In a launch's totals, when the binary exports
     * the launch hooks below and dsnpu_sim_launch_end replayed the launch: the misses of the die's one
     * L2 (data several blocks read misses once); otherwise the blocks' sum. */
    uint64_t hbm_read_bytes;
    uint64_t hbm_write_bytes;
} dsnpu_sim_counters;

typedef struct dsnpu_sim_block_ctx {
    uint32_t abi_version;      /* DSNPU_SIM_KERNEL_ABI */
    uint32_t block_idx;        /* GetBlockIdx() */
    uint32_t block_num;        /* GetBlockNum() */
    uint32_t ub_capacity;      /* Unified Buffer bytes per block (196608 on 910B/910C) */
    const void *args;          /* packed kernel arguments */
    size_t args_size;          /* their length in bytes */
    dsnpu_sim_counters *counters;
    void *sim;                 /* opaque, passed back to the callbacks below */
    /* Barrier across all blocks of this launch (Ascend C SyncAll). Returns 0, or non-zero when another
     * block failed and the launch is being abandoned: the caller should return. */
    int (*sync_all)(void *sim);
    /* 0 when [ptr, ptr + len) lies inside one live device allocation, else non-zero. */
    int (*check_gm)(void *sim, const void *ptr, size_t len);
    /* Record a fault for this launch; `msg` is copied. The block should return afterwards. */
    void (*fail)(void *sim, const char *msg);
    /* A non-fatal diagnostic (e.g. an unaligned DataCopy length); `msg` is copied. */
    void (*warn)(void *sim, const char *msg);
    /* ABI 2. The GM side of the init check (DSNPU_SIM_CHECK with `init`); NULL when it is off. The kernel
     * reports each GM access of the host layer's operations: a store (`write` non-zero) marks
     * [ptr, ptr + len) written; a load of bytes nothing wrote since the allocation (no copy, memset,
     * collective or kernel store) records an "init: " fault naming `op` and returns non-zero, and the block
     * should return. Device allocations start filled with 0xFF bytes while the check is on. */
    int (*gm_access)(void *sim, const char *op, const void *ptr, size_t len, int write);
    /* ABI 5. What dsnpu_sim_launch_begin returned for this launch (NULL if the binary has no launch hooks
     * or the simulator keeps none): the kernel records its GM accesses there for the launch's HBM
     * counters. Every block of the launch gets the same pointer. */
    void *launch_l2;
} dsnpu_sim_block_ctx;

typedef void (*dsnpu_sim_kernel_fn)(const dsnpu_sim_block_ctx *ctx);

/* Exported by every host kernel binary. */
uint32_t dsnpu_sim_kernel_abi_version(void);

/* ABI 5, optional launch hooks (a binary exports both or neither). The simulator calls
 * dsnpu_sim_launch_begin(numBlocks) before a launch's first block and passes the result to every block
 * as ctx->launch_l2; after the last block returned (the launch failed or not) it calls
 * dsnpu_sim_launch_end(that pointer, the launch's summed counters) exactly once, which releases it and may
 * replace the totals' hbm_read_bytes / hbm_write_bytes with the die-wide figures; it returns 1 if it did,
 * 0 if it left them (the blocks' sums). */
void *dsnpu_sim_launch_begin(uint32_t num_blocks);
int dsnpu_sim_launch_end(void *launch, dsnpu_sim_counters *totals);

/* ---------------------------------------------------------------------------------------------
 * Simulator extensions, exported by libdsnpu_sim.so next to the AscendCL symbols (not AscendCL).
 * Return values are AscendCL codes (aclError, an int): 0 on success.
 * ------------------------------------------------------------------------------------------- */

/* What the most recent completed kernel launch on a stream did (for benchmarks). */
typedef struct dsnpu_sim_launch_counters {
    uint64_t launch_seq;       /* launches completed on this stream so far (1-based); 0 = none yet */
    uint32_t num_blocks;       /* numBlocks of that launch */
    int32_t status;            /* its aclError: 0, or the failure (ACL_ERROR_RT_AICORE_EXCEPTION for a block fault) */
    uint64_t elapsed_ns;       /* wall time from the first block starting to the last one returning */
    uint64_t warnings;         /* calls to `warn` summed over blocks */
    dsnpu_sim_counters totals; /* summed over blocks, except ub_high_water: the maximum over blocks */
    char kernel_name[128];     /* NUL-terminated, truncated to 127 bytes */
} dsnpu_sim_launch_counters;

/* "dsnpu-sim <version>"; a loader calls it to tell the simulator from a real libascendcl.so. */
const char *dsnpu_sim_version(void);

/* Copies the counters of the last launch that COMPLETED on `stream` (NULL = the default stream of the
 * calling thread's current context) into *out. Synchronize the stream first to read a given launch;
 * launch_seq tells which one it is. The stream must belong to the current context, as for any
 * stream call. */
int dsnpu_sim_last_launch_counters(void *stream, dsnpu_sim_launch_counters *out);

/* Bytes an HCCL communicator's rank has sent to / received from each peer (completed calls; a rank's
 * data to itself is not counted), into two arrays of `len` = rank size entries. Returns an HcclResult. */
int dsnpu_sim_hccl_traffic(void *comm, uint64_t *sent, uint64_t *received, uint32_t len);

#ifdef __cplusplus
}
#endif

#endif /* DSNPU_SIM_KERNEL_H */
