/*
 * Tiling structs of dsnpu's Ascend C kernels, shared by the kernels (C++) and the host (Rust mirrors in
 * kernels/src/tiling.rs, checked field by field against this header by a layout test).
 *
 * Plain C, fixed-width fields, no padding: the host packs one of these into device memory and passes its
 * address as the kernel's last argument; the kernel copies it out with GET_TILING_DATA_WITH_STRUCT. The
 * kernels trust the values (the host computed them from validated shapes); a wrong value can only make
 * the kernel fault on a checked access, never touch memory outside its tensors.
 */
#ifndef DSNPU_KERNELS_TILING_H
#define DSNPU_KERNELS_TILING_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* rms_norm_<t> / add_rms_norm_<t>: rows of `cols` elements, split into runs of rows_per_block rows per block
 * (block b starts at row b * rows_per_block), each run walked in tiles of rows_per_tile rows. */
typedef struct DsnpuRmsNormTiling {
    uint32_t rows;
    uint32_t cols;
    uint32_t rows_per_block;
    uint32_t rows_per_tile;
    float eps;
    uint32_t reserved;
} DsnpuRmsNormTiling;

/* rope_<t>: x and y are [tokens, heads, dim] with consecutive (token, head) rows `row_stride` elements apart
 * (row_stride >= dim, so a rope slice of a wider head can be rotated in place); positions int32[tokens];
 * cos and sin f32[table_rows, dim / 2]. Tokens are split into runs of tokens_per_block per block, walked in
 * tiles of tokens_per_tile tokens. layout: DSNPU_ROPE_INTERLEAVED or DSNPU_ROPE_HALF_SPLIT. */
#define DSNPU_ROPE_INTERLEAVED 0u
#define DSNPU_ROPE_HALF_SPLIT 1u
typedef struct DsnpuRopeTiling {
    uint32_t tokens;
    uint32_t heads;
    uint32_t dim;
    uint32_t row_stride;
    uint32_t table_rows;
    uint32_t layout;
    uint32_t tokens_per_block;
    uint32_t tokens_per_tile;
} DsnpuRopeTiling;

/* silu_mul_<t>: gate_up [rows, 2 * inter] -> out [rows, inter]. Rows split into runs of rows_per_block per
 * block; each run walked in tiles of rows_per_tile rows x cols_per_tile columns. */
typedef struct DsnpuSiluMulTiling {
    uint32_t rows;
    uint32_t inter;
    uint32_t rows_per_block;
    uint32_t rows_per_tile;
    uint32_t cols_per_tile;
    uint32_t reserved;
} DsnpuSiluMulTiling;

/* linear_<t>: y[m, n] = x[m, k] * w[n, k]^T (+ bias f32[n] when has_bias). Blocks form an m_blocks x
 * n_blocks grid (block b -> row b / n_blocks, column b % n_blocks), each computing a single_m x single_n
 * block of y (less at the edges) in base_m x base_n x base_k cube steps. */
typedef struct DsnpuLinearTiling {
    uint32_t m;
    uint32_t n;
    uint32_t k;
    uint32_t m_blocks;
    uint32_t n_blocks;
    uint32_t single_m;
    uint32_t single_n;
    uint32_t base_m;
    uint32_t base_n;
    uint32_t base_k;
    uint32_t has_bias;
    uint32_t reserved;
} DsnpuLinearTiling;

/* selftest_fault: exercises one fault (or none) of the host layer; see kernels/src/ascendc/selftest.cpp. */
typedef struct DsnpuSelftestTiling {
    uint32_t mode;
    uint32_t count;
    uint32_t arg;
    uint32_t reserved;
} DsnpuSelftestTiling;

#ifdef __cplusplus
}
#endif

#endif
