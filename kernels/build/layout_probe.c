/*
 * Build-time probe: prints the C layout of every tiling struct in dsnpu_kernels/tiling.h as a Rust table,
 * which the layout test compares with the #[repr(C)] mirrors. Compiled as C to prove the header is C.
 */
#include <stddef.h>
#include <stdio.h>

#include "dsnpu_kernels/tiling.h"

#define STRUCT_BEGIN(s) printf("    (\"%s\", %zu, &[", #s, sizeof(s));
#define FIELD(s, f) printf("(\"%s\", %zu), ", #f, offsetof(s, f));
#define STRUCT_END() printf("]),\n");

int main(void) {
    printf("/// (struct, size, [(field, offset)]) as the C compiler lays out dsnpu_kernels/tiling.h.\n");
    printf("pub const C_LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[\n");

    STRUCT_BEGIN(DsnpuRmsNormTiling)
    FIELD(DsnpuRmsNormTiling, rows)
    FIELD(DsnpuRmsNormTiling, cols)
    FIELD(DsnpuRmsNormTiling, rows_per_block)
    FIELD(DsnpuRmsNormTiling, rows_per_tile)
    FIELD(DsnpuRmsNormTiling, eps)
    FIELD(DsnpuRmsNormTiling, reserved)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuRopeTiling)
    FIELD(DsnpuRopeTiling, tokens)
    FIELD(DsnpuRopeTiling, heads)
    FIELD(DsnpuRopeTiling, dim)
    FIELD(DsnpuRopeTiling, row_stride)
    FIELD(DsnpuRopeTiling, table_rows)
    FIELD(DsnpuRopeTiling, layout)
    FIELD(DsnpuRopeTiling, tokens_per_block)
    FIELD(DsnpuRopeTiling, tokens_per_tile)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuSiluMulTiling)
    FIELD(DsnpuSiluMulTiling, rows)
    FIELD(DsnpuSiluMulTiling, inter)
    FIELD(DsnpuSiluMulTiling, rows_per_block)
    FIELD(DsnpuSiluMulTiling, rows_per_tile)
    FIELD(DsnpuSiluMulTiling, cols_per_tile)
    FIELD(DsnpuSiluMulTiling, reserved)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuLinearTiling)
    FIELD(DsnpuLinearTiling, m)
    FIELD(DsnpuLinearTiling, n)
    FIELD(DsnpuLinearTiling, k)
    FIELD(DsnpuLinearTiling, m_blocks)
    FIELD(DsnpuLinearTiling, n_blocks)
    FIELD(DsnpuLinearTiling, single_m)
    FIELD(DsnpuLinearTiling, single_n)
    FIELD(DsnpuLinearTiling, base_m)
    FIELD(DsnpuLinearTiling, base_n)
    FIELD(DsnpuLinearTiling, base_k)
    FIELD(DsnpuLinearTiling, has_bias)
    FIELD(DsnpuLinearTiling, reserved)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuSelftestTiling)
    FIELD(DsnpuSelftestTiling, mode)
    FIELD(DsnpuSelftestTiling, count)
    FIELD(DsnpuSelftestTiling, arg)
    FIELD(DsnpuSelftestTiling, reserved)
    STRUCT_END()

    printf("];\n");
    printf("/// DSNPU_ROPE_INTERLEAVED and DSNPU_ROPE_HALF_SPLIT.\n");
    printf("pub const C_ROPE_LAYOUTS: (u32, u32) = (%u, %u);\n", DSNPU_ROPE_INTERLEAVED, DSNPU_ROPE_HALF_SPLIT);
    return 0;
}
