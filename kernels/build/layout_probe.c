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

    /* The MoE structs in a table of their own (tests/moe_layout.rs compares it). */
    printf("/// The MoE tiling structs, laid out by the C compiler.\n#[allow(dead_code)]\n");
    printf("pub const C_MOE_LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[\n");

    STRUCT_BEGIN(DsnpuMoeGatingTiling)
    FIELD(DsnpuMoeGatingTiling, tokens)
    FIELD(DsnpuMoeGatingTiling, experts)
    FIELD(DsnpuMoeGatingTiling, top_k)
    FIELD(DsnpuMoeGatingTiling, n_group)
    FIELD(DsnpuMoeGatingTiling, topk_group)
    FIELD(DsnpuMoeGatingTiling, group_pad)
    FIELD(DsnpuMoeGatingTiling, score_func)
    FIELD(DsnpuMoeGatingTiling, has_bias)
    FIELD(DsnpuMoeGatingTiling, normalize)
    FIELD(DsnpuMoeGatingTiling, routed_scaling_factor)
    FIELD(DsnpuMoeGatingTiling, tokens_per_block)
    FIELD(DsnpuMoeGatingTiling, tokens_per_tile)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuMoeInitRoutingTiling)
    FIELD(DsnpuMoeInitRoutingTiling, tokens)
    FIELD(DsnpuMoeInitRoutingTiling, hidden)
    FIELD(DsnpuMoeInitRoutingTiling, top_k)
    FIELD(DsnpuMoeInitRoutingTiling, experts)
    FIELD(DsnpuMoeInitRoutingTiling, active_start)
    FIELD(DsnpuMoeInitRoutingTiling, active_end)
    FIELD(DsnpuMoeInitRoutingTiling, tokens_mode)
    FIELD(DsnpuMoeInitRoutingTiling, blocks)
    FIELD(DsnpuMoeInitRoutingTiling, tokens_per_block)
    FIELD(DsnpuMoeInitRoutingTiling, tokens_per_chunk)
    FIELD(DsnpuMoeInitRoutingTiling, tokens_per_tile)
    FIELD(DsnpuMoeInitRoutingTiling, experts_per_block)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuGroupedMatmulTiling)
    FIELD(DsnpuGroupedMatmulTiling, rows)
    FIELD(DsnpuGroupedMatmulTiling, groups)
    FIELD(DsnpuGroupedMatmulTiling, n)
    FIELD(DsnpuGroupedMatmulTiling, k)
    FIELD(DsnpuGroupedMatmulTiling, list_type)
    FIELD(DsnpuGroupedMatmulTiling, single_m)
    FIELD(DsnpuGroupedMatmulTiling, single_n)
    FIELD(DsnpuGroupedMatmulTiling, base_m)
    FIELD(DsnpuGroupedMatmulTiling, base_n)
    FIELD(DsnpuGroupedMatmulTiling, base_k)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuExpertFfnTiling)
    FIELD(DsnpuExpertFfnTiling, rows)
    FIELD(DsnpuExpertFfnTiling, groups)
    FIELD(DsnpuExpertFfnTiling, hidden)
    FIELD(DsnpuExpertFfnTiling, inter)
    FIELD(DsnpuExpertFfnTiling, list_type)
    FIELD(DsnpuExpertFfnTiling, single_m)
    FIELD(DsnpuExpertFfnTiling, base_m)
    FIELD(DsnpuExpertFfnTiling, single_n1)
    FIELD(DsnpuExpertFfnTiling, base_n1)
    FIELD(DsnpuExpertFfnTiling, base_k1)
    FIELD(DsnpuExpertFfnTiling, single_n2)
    FIELD(DsnpuExpertFfnTiling, base_n2)
    FIELD(DsnpuExpertFfnTiling, base_k2)
    FIELD(DsnpuExpertFfnTiling, swiglu_rows)
    STRUCT_END()

    STRUCT_BEGIN(DsnpuMoeFinalizeTiling)
    FIELD(DsnpuMoeFinalizeTiling, tokens)
    FIELD(DsnpuMoeFinalizeTiling, hidden)
    FIELD(DsnpuMoeFinalizeTiling, top_k)
    FIELD(DsnpuMoeFinalizeTiling, rows)
    FIELD(DsnpuMoeFinalizeTiling, has_shared)
    FIELD(DsnpuMoeFinalizeTiling, has_residual)
    FIELD(DsnpuMoeFinalizeTiling, tokens_per_block)
    FIELD(DsnpuMoeFinalizeTiling, tokens_per_tile)
    FIELD(DsnpuMoeFinalizeTiling, cols_per_tile)
    FIELD(DsnpuMoeFinalizeTiling, mutation)
    STRUCT_END()

    printf("];\n");
    printf("/// The MoE #defines of the header, by name.\n#[allow(dead_code)]\n");
    printf("pub const C_MOE_CONSTANTS: &[(&str, u32)] = &[(\"DSNPU_MOE_SCORE_SOFTMAX\", %u), "
           "(\"DSNPU_MOE_SCORE_SIGMOID\", %u), (\"DSNPU_MOE_LIST_CUMSUM\", %u), (\"DSNPU_MOE_LIST_COUNT\", %u)];\n",
           DSNPU_MOE_SCORE_SOFTMAX, DSNPU_MOE_SCORE_SIGMOID, DSNPU_MOE_LIST_CUMSUM, DSNPU_MOE_LIST_COUNT);
    /* The MLA struct in a table of its own (tests/mla_layout.rs compares it). */
    printf("/// The MLA tiling structs, laid out by the C compiler.\n#[allow(dead_code)]\n");
    printf("pub const C_MLA_LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[\n");
    STRUCT_BEGIN(DsnpuMlaDecodeTiling)
    FIELD(DsnpuMlaDecodeTiling, batch)
    FIELD(DsnpuMlaDecodeTiling, s_q)
    FIELD(DsnpuMlaDecodeTiling, heads)
    FIELD(DsnpuMlaDecodeTiling, latent_dim)
    FIELD(DsnpuMlaDecodeTiling, rope_dim)
    FIELD(DsnpuMlaDecodeTiling, block_size)
    FIELD(DsnpuMlaDecodeTiling, num_blocks)
    FIELD(DsnpuMlaDecodeTiling, max_blocks)
    FIELD(DsnpuMlaDecodeTiling, scale)
    FIELD(DsnpuMlaDecodeTiling, tasks)
    FIELD(DsnpuMlaDecodeTiling, chunk)
    FIELD(DsnpuMlaDecodeTiling, pitch)
    FIELD(DsnpuMlaDecodeTiling, softmax_rows)
    FIELD(DsnpuMlaDecodeTiling, combine_rows)
    FIELD(DsnpuMlaDecodeTiling, latent_pitch)
    FIELD(DsnpuMlaDecodeTiling, work_elems)
    FIELD(DsnpuMlaDecodeTiling, qk_base_m)
    FIELD(DsnpuMlaDecodeTiling, qk_base_n)
    FIELD(DsnpuMlaDecodeTiling, qk_base_k)
    FIELD(DsnpuMlaDecodeTiling, pv_base_m)
    FIELD(DsnpuMlaDecodeTiling, pv_base_n)
    FIELD(DsnpuMlaDecodeTiling, pv_base_k)
    FIELD(DsnpuMlaDecodeTiling, ws_partial_at_lo)
    FIELD(DsnpuMlaDecodeTiling, ws_partial_at_hi)
    FIELD(DsnpuMlaDecodeTiling, mutation)
    FIELD(DsnpuMlaDecodeTiling, reserved)
    STRUCT_END()
    STRUCT_BEGIN(DsnpuMlaCacheWriteTiling)
    FIELD(DsnpuMlaCacheWriteTiling, tokens)
    FIELD(DsnpuMlaCacheWriteTiling, latent_dim)
    FIELD(DsnpuMlaCacheWriteTiling, rope_dim)
    FIELD(DsnpuMlaCacheWriteTiling, kv_stride)
    FIELD(DsnpuMlaCacheWriteTiling, num_slots)
    FIELD(DsnpuMlaCacheWriteTiling, table_rows)
    FIELD(DsnpuMlaCacheWriteTiling, layout)
    FIELD(DsnpuMlaCacheWriteTiling, tokens_per_block)
    FIELD(DsnpuMlaCacheWriteTiling, eps)
    FIELD(DsnpuMlaCacheWriteTiling, reserved)
    STRUCT_END()
    STRUCT_BEGIN(DsnpuGatherRowsTiling)
    FIELD(DsnpuGatherRowsTiling, rows)
    FIELD(DsnpuGatherRowsTiling, inner)
    FIELD(DsnpuGatherRowsTiling, cols)
    FIELD(DsnpuGatherRowsTiling, has_idx)
    FIELD(DsnpuGatherRowsTiling, offset)
    FIELD(DsnpuGatherRowsTiling, stride_a)
    FIELD(DsnpuGatherRowsTiling, stride_b)
    FIELD(DsnpuGatherRowsTiling, stride_idx)
    FIELD(DsnpuGatherRowsTiling, src_len)
    FIELD(DsnpuGatherRowsTiling, rows_per_block)
    FIELD(DsnpuGatherRowsTiling, cols_per_tile)
    FIELD(DsnpuGatherRowsTiling, reserved)
    STRUCT_END()
    STRUCT_BEGIN(DsnpuArgmaxTiling)
    FIELD(DsnpuArgmaxTiling, rows)
    FIELD(DsnpuArgmaxTiling, cols)
    FIELD(DsnpuArgmaxTiling, rows_per_block)
    FIELD(DsnpuArgmaxTiling, cols_per_tile)
    STRUCT_END()
    printf("];\n");
    return 0;
}
