/*
 * Tiling of sample_top_p_<t> (src/ascendc/sample_top_p.cpp), in its own header so the sampling kernel's
 * registry entry stays one small block (kernels/build.rs generates its Rust struct; kernels/src/tiling_sample.rs
 * computes it).
 */
#ifndef DSNPU_KERNELS_TILING_SAMPLE_H
#define DSNPU_KERNELS_TILING_SAMPLE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* sample_top_p_<t>: out[r] = one id drawn from the nucleus of softmax(x[r, :cols] / temperature) with the
 * uniform u[r] in [0, 1) (or -1 for a row with NaN, +inf or only -inf). Rows are split into runs of
 * rows_per_block per block, each row scanned cols_per_tile at a time; once at most list_capacity weights
 * of a row can still matter to the nucleus search, they are kept in a Unified Buffer list of that many f32. */
typedef struct DsnpuSampleTopPTiling {
    uint32_t rows;
    uint32_t cols;
    uint32_t rows_per_block;
    uint32_t cols_per_tile;
    float inv_temperature;
    float top_p;
    uint32_t list_capacity;
} DsnpuSampleTopPTiling;

#ifdef __cplusplus
}
#endif

#endif
