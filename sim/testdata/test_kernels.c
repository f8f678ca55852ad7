/*
 * Host kernel binary used by the simulator's tests (and the runtime's): small kernels with known
 * results. Built by sim/build.rs into OUT_DIR; the path is dsnpu_sim::TEST_KERNELS_PATH.
 *
 * Argument layout: every kernel takes its arguments as consecutive 8-byte GM addresses, exactly like
 * an Ascend C kernel (`GM_ADDR a, ..., GM_ADDR tiling`), appended in order through
 * aclrtKernelArgsAppend or packed in the host args of aclrtLaunchKernelWithHostArgs. `tiling` points
 * at device memory (or at a placeholder's data) holding the struct named per kernel, little-endian.
 *
 *   vec_add(x, y, z, tiling)            tiling = { uint64_t n; }
 *       float32 z[i] = x[i] + y[i] for i < n. The n elements are split into numBlocks contiguous
 *       chunks of ceil(n / numBlocks); block b handles [b*chunk, min(n, (b+1)*chunk)).
 *       Counters per block: gm_to_ub += 8*len, ub_to_gm += 4*len, vector_elem_ops += len,
 *       ub_high_water = 12*len.
 *   write_block_idx(out, tiling)        tiling = { uint64_t n; }   out: uint32_t[n], n >= 2*numBlocks
 *       out[2*b] = b (GetBlockIdx), out[2*b + 1] = numBlocks (GetBlockNum).
 *   sync_all_sum(partials, out, tiling) tiling = { uint64_t n; }   partials: uint64_t[n], n >= numBlocks
 *       Block b writes partials[b] = b + 1, then SyncAll; then block 0 writes
 *       out[0] = sum(partials[0..numBlocks]) = numBlocks*(numBlocks+1)/2 and every block b writes
 *       out[1 + b] = partials[(b + 1) % numBlocks] (a value another block wrote before the barrier).
 *       out: uint64_t[1 + numBlocks]. Needs all blocks running at once.
 *   sync_all_undeclared(partials, out, tiling)
 *       sync_all_sum without the ABI 4 declaration that its blocks meet in sync_all: the launch must
 *       fail, naming the declaration, and must not hang.
 *   sync_abandon(out, tiling)           tiling = { uint64_t mode; }  out: uint32_t[numBlocks]
 *       Block 0 never reaches SyncAll: mode 0 = it calls fail("block 0 gave up"), mode 1 = it just
 *       returns. Every other block b calls SyncAll and writes out[b] = 1 if SyncAll returned
 *       non-zero (abandoned), 2 if it returned 0. The launch must fail and must not hang.
 *   oob_read(x, tiling)                 tiling = { uint64_t n; }   x: float[n]
 *       Checks the 4 bytes just past x[n-1] with check_gm and fails with
 *       "oob_read: GM read of 4 bytes at element <n> is outside every allocation".
 *   spin_until(flag, tiling)            tiling = { uint64_t max_ms; }  flag: uint32_t[1]
 *       Every block polls flag[0] until it is non-zero (the host sets it with aclrtMemcpy, which
 *       does not wait for streams), then returns; after max_ms milliseconds it fails with
 *       "spin_until: flag not set within <max_ms> ms". A gate for tests of asynchrony.
 *   spin_signal(started, flag, tiling)  tiling = { uint64_t max_ms; }  started, flag: uint32_t[1]
 *       Like spin_until, after checking both buffers once and setting started[0] = 1, so the host
 *       can tell the kernel is running (poll `started` with aclrtMemcpy). The flag is read through
 *       the pointer checked once, as a kernel that validated its buffer at entry would.
 *   counters_probe(unused)              no memory access
 *       Block b adds gm_to_ub 100, ub_to_gm 10, vector_elem_ops 1, cube_macs b, sets
 *       ub_high_water = 1000*(b+1), and calls warn("counters_probe warning") once.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dsnpu_sim_kernel.h"

/* The layout the simulator (sim/src/kernel/abi.rs) assumes, on LP64 targets. */
_Static_assert(sizeof(void *) != 8 || sizeof(dsnpu_sim_block_ctx) == 96, "block ctx size");
_Static_assert(sizeof(void *) != 8 || offsetof(dsnpu_sim_block_ctx, args) == 16, "args offset");
_Static_assert(sizeof(void *) != 8 || offsetof(dsnpu_sim_block_ctx, sim) == 40, "sim offset");
_Static_assert(sizeof(void *) != 8 || offsetof(dsnpu_sim_block_ctx, warn) == 72, "warn offset");
_Static_assert(sizeof(void *) != 8 || offsetof(dsnpu_sim_block_ctx, gm_access) == 80, "gm_access offset");
_Static_assert(sizeof(void *) != 8 || offsetof(dsnpu_sim_block_ctx, launch_l2) == 88, "launch_l2 offset");
_Static_assert(sizeof(dsnpu_sim_counters) == 72, "counters size");
_Static_assert(offsetof(dsnpu_sim_counters, ub_high_water) == 32, "ub_high_water offset");
_Static_assert(sizeof(dsnpu_sim_launch_counters) == 232, "launch counters size");
_Static_assert(offsetof(dsnpu_sim_launch_counters, totals) == 32, "totals offset");
_Static_assert(offsetof(dsnpu_sim_launch_counters, kernel_name) == 104, "kernel_name offset");

uint32_t dsnpu_sim_kernel_abi_version(void) { return DSNPU_SIM_KERNEL_ABI; }

/* Reads the i-th 8-byte GM address argument; fails the block when the args are too short. */
static int arg_ptr(const dsnpu_sim_block_ctx *ctx, size_t i, const char *kernel, void **out) {
    if (ctx->args == NULL || ctx->args_size < (i + 1) * 8) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: argument %zu missing (%zu argument bytes)", kernel, i, ctx->args_size);
        ctx->fail(ctx->sim, msg);
        return -1;
    }
    uint64_t v;
    memcpy(&v, (const char *)ctx->args + i * 8, sizeof v);
    *out = (void *)(uintptr_t)v;
    return 0;
}

/* Reads the first uint64_t of the tiling struct behind GM address `tiling`, checking it first. */
static int tiling_u64(const dsnpu_sim_block_ctx *ctx, const void *tiling, const char *kernel, uint64_t *out) {
    if (ctx->check_gm(ctx->sim, tiling, sizeof(uint64_t)) != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: tiling pointer %p is not device memory", kernel, tiling);
        ctx->fail(ctx->sim, msg);
        return -1;
    }
    memcpy(out, tiling, sizeof *out);
    return 0;
}

static int check(const dsnpu_sim_block_ctx *ctx, const void *p, size_t len, const char *kernel, const char *what) {
    if (ctx->check_gm(ctx->sim, p, len) != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: %s range of %zu bytes at %p is outside every allocation", kernel, what, len, p);
        ctx->fail(ctx->sim, msg);
        return -1;
    }
    return 0;
}

void vec_add(const dsnpu_sim_block_ctx *ctx) {
    void *x, *y, *z, *tiling;
    uint64_t n;
    if (arg_ptr(ctx, 0, "vec_add", &x) || arg_ptr(ctx, 1, "vec_add", &y) || arg_ptr(ctx, 2, "vec_add", &z) ||
        arg_ptr(ctx, 3, "vec_add", &tiling) || tiling_u64(ctx, tiling, "vec_add", &n)) {
        return;
    }
    uint64_t chunk = (n + ctx->block_num - 1) / ctx->block_num;
    uint64_t start = (uint64_t)ctx->block_idx * chunk;
    if (start >= n) {
        return;
    }
    uint64_t end = start + chunk < n ? start + chunk : n;
    size_t len = (size_t)(end - start);
    const float *xs = (const float *)x + start;
    const float *ys = (const float *)y + start;
    float *zs = (float *)z + start;
    if (check(ctx, xs, len * 4, "vec_add", "x") || check(ctx, ys, len * 4, "vec_add", "y") ||
        check(ctx, zs, len * 4, "vec_add", "z")) {
        return;
    }
    for (size_t i = 0; i < len; i++) {
        zs[i] = xs[i] + ys[i];
    }
    ctx->counters->gm_to_ub_bytes += 8 * (uint64_t)len;
    ctx->counters->ub_to_gm_bytes += 4 * (uint64_t)len;
    ctx->counters->vector_elem_ops += len;
    ctx->counters->ub_high_water = 12 * (uint64_t)len;
}

void write_block_idx(const dsnpu_sim_block_ctx *ctx) {
    void *out, *tiling;
    uint64_t n;
    if (arg_ptr(ctx, 0, "write_block_idx", &out) || arg_ptr(ctx, 1, "write_block_idx", &tiling) ||
        tiling_u64(ctx, tiling, "write_block_idx", &n)) {
        return;
    }
    uint64_t slot = 2 * (uint64_t)ctx->block_idx;
    if (slot + 2 > n) {
        ctx->fail(ctx->sim, "write_block_idx: out has fewer than 2*numBlocks elements");
        return;
    }
    uint32_t *o = (uint32_t *)out + slot;
    if (check(ctx, o, 8, "write_block_idx", "out")) {
        return;
    }
    o[0] = ctx->block_idx;
    o[1] = ctx->block_num;
}

/* ABI 4: the blocks of these two meet in sync_all (every other kernel here has independent blocks). */
const uint8_t sync_all_sum__dsnpu_sync_all = 1;
const uint8_t sync_abandon__dsnpu_sync_all = 1;
/* sync_all_sum keeps no state in thread-locals: its blocks may run cooperatively on one thread. */
const uint8_t sync_all_sum__dsnpu_coop = 1;

void sync_all_sum(const dsnpu_sim_block_ctx *ctx) {
    void *partials, *out, *tiling;
    uint64_t n;
    if (arg_ptr(ctx, 0, "sync_all_sum", &partials) || arg_ptr(ctx, 1, "sync_all_sum", &out) ||
        arg_ptr(ctx, 2, "sync_all_sum", &tiling) || tiling_u64(ctx, tiling, "sync_all_sum", &n)) {
        return;
    }
    uint32_t nb = ctx->block_num;
    uint64_t *p = (uint64_t *)partials;
    uint64_t *o = (uint64_t *)out;
    if (n < nb) {
        ctx->fail(ctx->sim, "sync_all_sum: partials has fewer than numBlocks elements");
        return;
    }
    if (check(ctx, p, 8 * (size_t)nb, "sync_all_sum", "partials") ||
        check(ctx, o, 8 * (size_t)(nb + 1), "sync_all_sum", "out")) {
        return;
    }
    p[ctx->block_idx] = (uint64_t)ctx->block_idx + 1;
    if (ctx->sync_all(ctx->sim) != 0) {
        return;
    }
    if (ctx->block_idx == 0) {
        uint64_t sum = 0;
        for (uint32_t b = 0; b < nb; b++) {
            sum += p[b];
        }
        o[0] = sum;
    }
    o[1 + ctx->block_idx] = p[(ctx->block_idx + 1) % nb];
}

void sync_all_undeclared(const dsnpu_sim_block_ctx *ctx) { sync_all_sum(ctx); }

void sync_abandon(const dsnpu_sim_block_ctx *ctx) {
    void *out, *tiling;
    uint64_t mode;
    if (arg_ptr(ctx, 0, "sync_abandon", &out) || arg_ptr(ctx, 1, "sync_abandon", &tiling) ||
        tiling_u64(ctx, tiling, "sync_abandon", &mode)) {
        return;
    }
    uint32_t *o = (uint32_t *)out;
    if (check(ctx, o, 4 * (size_t)ctx->block_num, "sync_abandon", "out")) {
        return;
    }
    if (ctx->block_idx == 0) {
        if (mode == 0) {
            ctx->fail(ctx->sim, "block 0 gave up");
        }
        return;
    }
    o[ctx->block_idx] = ctx->sync_all(ctx->sim) != 0 ? 1u : 2u;
}

void oob_read(const dsnpu_sim_block_ctx *ctx) {
    void *x, *tiling;
    uint64_t n;
    if (arg_ptr(ctx, 0, "oob_read", &x) || arg_ptr(ctx, 1, "oob_read", &tiling) ||
        tiling_u64(ctx, tiling, "oob_read", &n)) {
        return;
    }
    const float *past = (const float *)x + n;
    if (ctx->check_gm(ctx->sim, past, 4) != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "oob_read: GM read of 4 bytes at element %llu is outside every allocation",
                 (unsigned long long)n);
        ctx->fail(ctx->sim, msg);
    }
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void spin_until(const dsnpu_sim_block_ctx *ctx) {
    void *flag, *tiling;
    uint64_t max_ms;
    if (arg_ptr(ctx, 0, "spin_until", &flag) || arg_ptr(ctx, 1, "spin_until", &tiling) ||
        tiling_u64(ctx, tiling, "spin_until", &max_ms) || check(ctx, flag, 4, "spin_until", "flag")) {
        return;
    }
    const uint64_t start = now_ms();
    const struct timespec pause = {0, 200000}; /* 0.2 ms */
    while (__atomic_load_n((const uint32_t *)flag, __ATOMIC_ACQUIRE) == 0) {
        if (now_ms() - start > max_ms) {
            char msg[96];
            snprintf(msg, sizeof msg, "spin_until: flag not set within %llu ms", (unsigned long long)max_ms);
            ctx->fail(ctx->sim, msg);
            return;
        }
        nanosleep(&pause, NULL);
    }
}

void spin_signal(const dsnpu_sim_block_ctx *ctx) {
    void *started, *flag, *tiling;
    uint64_t max_ms;
    if (arg_ptr(ctx, 0, "spin_signal", &started) || arg_ptr(ctx, 1, "spin_signal", &flag) ||
        arg_ptr(ctx, 2, "spin_signal", &tiling) || tiling_u64(ctx, tiling, "spin_signal", &max_ms) ||
        check(ctx, started, 4, "spin_signal", "started") || check(ctx, flag, 4, "spin_signal", "flag")) {
        return;
    }
    __atomic_store_n((uint32_t *)started, 1u, __ATOMIC_RELEASE);
    const uint64_t start = now_ms();
    const struct timespec pause = {0, 200000}; /* 0.2 ms */
    while (__atomic_load_n((const uint32_t *)flag, __ATOMIC_ACQUIRE) == 0) {
        if (now_ms() - start > max_ms) {
            char msg[96];
            snprintf(msg, sizeof msg, "spin_signal: flag not set within %llu ms", (unsigned long long)max_ms);
            ctx->fail(ctx->sim, msg);
            return;
        }
        nanosleep(&pause, NULL);
    }
}

void counters_probe(const dsnpu_sim_block_ctx *ctx) {
    ctx->counters->gm_to_ub_bytes += 100;
    ctx->counters->ub_to_gm_bytes += 10;
    ctx->counters->vector_elem_ops += 1;
    ctx->counters->cube_macs += ctx->block_idx;
    ctx->counters->ub_high_water = 1000 * ((uint64_t)ctx->block_idx + 1);
    ctx->warn(ctx->sim, "counters_probe warning");
}
