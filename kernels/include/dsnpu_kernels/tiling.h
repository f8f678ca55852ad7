/*
 * Tiling structs of dsnpu's Ascend C kernels, shared by the kernels (C++) and the host: kernels/build.rs generates
 * the Rust structs from this header (a layout test also compares them with the C compiler's offsets).
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
 * in x and `y_row_stride` apart in y (both >= dim, so a rope slice of a wider head can be rotated in place, or
 * into rows of its own); positions int32[tokens];
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
    uint32_t rows_at_once; /* 1: a row at a time; heads: a token's rows per instruction (dim <= 64) */
    uint32_t y_row_stride;
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
/* TCubeTiling's documented fields in its order (src/tiling_cube.rs computes them; lib/matmul_intf.h). */
typedef struct DsnpuCubeTiling {
    int32_t usedCoreNum;
    int32_t M;
    int32_t N;
    int32_t Ka;
    int32_t Kb;
    int32_t singleCoreM;
    int32_t singleCoreN;
    int32_t singleCoreK;
    int32_t baseM;
    int32_t baseN;
    int32_t baseK;
    int32_t depthA1;
    int32_t depthB1;
    int32_t stepM;
    int32_t stepN;
    int32_t isBias;
    int32_t transLength;
    int32_t iterateOrder;
    int32_t shareMode;
    int32_t shareL1Size;
    int32_t shareL0CSize;
    int32_t shareUbSize;
    int32_t batchM;
    int32_t batchN;
    int32_t singleBatchM;
    int32_t singleBatchN;
    int32_t stepKa;
    int32_t stepKb;
    int32_t depthAL1CacheUB;
    int32_t depthBL1CacheUB;
    int32_t dbL0A;
    int32_t dbL0B;
    int32_t dbL0C;
} DsnpuCubeTiling;

/* linear_<t>: a 1:2 mix kernel; the cube's Matmul tiling (no bias: the vector cores add it) in `cube`.
 * k_blocks > 1 splits k too: each block's product over its single_k slice is a partial sum. */
typedef struct DsnpuLinearTiling {
    uint32_t m;
    uint32_t n;
    uint32_t k;
    uint32_t m_blocks;
    uint32_t n_blocks;
    uint32_t single_m;
    uint32_t single_n;
    uint32_t has_bias;
    uint32_t k_blocks;
    uint32_t single_k;
    DsnpuCubeTiling cube;
} DsnpuLinearTiling;

/* selftest_fault: exercises one fault (or none) of the host layer; see kernels/src/ascendc/selftest.cpp. */
typedef struct DsnpuSelftestTiling {
    uint32_t mode;
    uint32_t count;
    uint32_t arg;
    uint32_t reserved;
} DsnpuSelftestTiling;

/* ---------------------------------------------------------------------------------------------------------
 * Mixture-of-experts kernels (src/ascendc/moe_*.cpp; computed in src/tiling_moe.rs).
 * ------------------------------------------------------------------------------------------------------- */

/* Score functions of moe_gating_topk_<t>. */
#define DSNPU_MOE_SCORE_SOFTMAX 0u
#define DSNPU_MOE_SCORE_SIGMOID 1u

/* Forms of a per-expert token list, numbered as aclnn numbers them (expertTokensNumType / group_list_type):
 * inclusive cumulative sums or plain counts. */
#define DSNPU_MOE_LIST_CUMSUM 0u
#define DSNPU_MOE_LIST_COUNT 1u

/* moe_gating_topk_<t>: logits [tokens, experts] (t) and bias f32[experts] (when has_bias) -> ids
 * int32[tokens, top_k] and weights f32[tokens, top_k]. The experts form n_group groups of experts / n_group;
 * in UB every group starts on a boundary of group_pad elements (a multiple of 16). Tokens are split into runs
 * of tokens_per_block per block, walked in tiles of tokens_per_tile tokens. */
typedef struct DsnpuMoeGatingTiling {
    uint32_t tokens;
    uint32_t experts;
    uint32_t top_k;
    uint32_t n_group;
    uint32_t topk_group;
    uint32_t group_pad;
    uint32_t score_func;
    uint32_t has_bias;
    uint32_t normalize;
    float routed_scaling_factor;
    uint32_t tokens_per_block;
    uint32_t tokens_per_tile;
} DsnpuMoeGatingTiling;

/* moe_init_routing_<t> / moe_init_routing_quant_<t>: x [tokens, hidden] and ids int32[tokens, top_k] ->
 * rows sorted stably by expert. Pairs whose expert is outside [active_start, active_end) are dropped.
 * tokens_mode is a DSNPU_MOE_LIST_* form of expert_tokens (int64[experts]). The launch has exactly `blocks`
 * blocks; block b dispatches tokens [b * tokens_per_block, ...), holding the ids of tokens_per_chunk tokens
 * in UB at a time and moving x in tiles of tokens_per_tile rows, and sums the histograms of experts
 * [b * experts_per_block, ...) (a multiple of 8). Workspace: int32[(blocks + 1) * experts]. */
typedef struct DsnpuMoeInitRoutingTiling {
    uint32_t tokens;
    uint32_t hidden;
    uint32_t top_k;
    uint32_t experts;
    uint32_t active_start;
    uint32_t active_end;
    uint32_t tokens_mode;
    uint32_t blocks;
    uint32_t tokens_per_block;
    uint32_t tokens_per_chunk;
    uint32_t tokens_per_tile;
    uint32_t experts_per_block;
} DsnpuMoeInitRoutingTiling;

/* grouped_matmul_<t>: y[rows, n] = x[rows, k] * w[g, n, k]^T for the rows of group g, the groups given by
 * group_list (int64[groups], DSNPU_MOE_LIST_* form list_type). The work is the (group, m-tile, n-tile)
 * tasks of single_m x single_n output blocks over the non-empty groups, dealt round-robin to the blocks;
 * each task runs in base_m x base_n x base_k cube steps.
 * group_rows > 0 is the strided form (grouped_matmul_strided, one GEMM per attention head): every group
 * has group_rows rows (rows = groups * group_rows; the list is not read), and row i of group g starts at
 * element g * x_group + i * x_ld of x (k columns) and g * y_group + i * y_ld of y (n columns). With
 * group_rows 0 those four are 0 and the rows are contiguous: row r at r * k of x and r * n of y. */
typedef struct DsnpuGroupedMatmulTiling {
    uint32_t rows;
    uint32_t groups;
    uint32_t n;
    uint32_t k;
    uint32_t list_type;
    uint32_t single_m;
    uint32_t single_n;
    uint32_t base_m;
    uint32_t base_n;
    uint32_t base_k;
    uint32_t group_rows;
    uint32_t x_ld;
    uint32_t x_group;
    uint32_t y_ld;
    uint32_t y_group;
    DsnpuCubeTiling cube; /* one task's Matmul (single_m x single_n x k), from tiling_moe.rs */
} DsnpuGroupedMatmulTiling;

/* expert_ffn_<t>: y = (silu(x w_gate^T) * (x w_up^T)) w_down^T per group, w_gate/w_up [groups, inter, hidden],
 * w_down [groups, hidden, inter]. Phase 1 deals (group, m-tile, inter-tile) tasks of single_m x single_n1
 * (gate and up GEMMs into f32 workspace, then SwiGLU in UB tiles of swiglu_rows rows into the intermediate
 * h, rounded to t); after SyncAll, phase 2 deals (group, m-tile, hidden-tile) tasks of single_m x single_n2
 * (the down GEMM); with adapt_tasks the kernel narrows single_n1 / single_n2 per launch from the group list
 * (moe_grouped_matmul.cpp). Workspace: the system workspace, then rows * inter * (4 + 4 + sizeof(t)) bytes
 * (gate f32, up f32, h). */
typedef struct DsnpuExpertFfnTiling {
    uint32_t rows;
    uint32_t groups;
    uint32_t hidden;
    uint32_t inter;
    uint32_t list_type;
    uint32_t single_m;
    uint32_t base_m;
    uint32_t single_n1;
    uint32_t base_n1;
    uint32_t base_k1;
    uint32_t single_n2;
    uint32_t base_n2;
    uint32_t base_k2;
    uint32_t swiglu_rows;
    uint32_t adapt_tasks; /* 1: single_n1/n2 are the widest tasks, narrowed per launch until every core has one */
    DsnpuCubeTiling cube_up;   /* gate and up: single_m x single_n1 x hidden, from tiling_moe.rs */
    DsnpuCubeTiling cube_down; /* down: single_m x single_n2 x inter */
} DsnpuExpertFfnTiling;

/* moe_finalize_routing_<t>: out[t] = sum_k weights[t, k] * y[expanded_row_idx[t * top_k + k]] (+ shared[t])
 * (+ residual[t]) with y [rows, hidden] (rows may be 0), indices -1 skipped. Tokens are split into runs of
 * tokens_per_block per block, their indices and weights loaded tokens_per_tile tokens at a time, rows
 * walked in column chunks of cols_per_tile. */
typedef struct DsnpuMoeFinalizeTiling {
    uint32_t tokens;
    uint32_t hidden;
    uint32_t top_k;
    uint32_t rows;
    uint32_t has_shared;
    uint32_t has_residual;
    uint32_t tokens_per_block;
    uint32_t tokens_per_tile;
    uint32_t cols_per_tile;
    uint32_t mutation; /* test-only systematic error, 0 in normal launches (tiling_moe.rs) */
} DsnpuMoeFinalizeTiling;

/* mla_decode_<t>: split-KV absorbed MLA decode over the paged latent cache (src/ascendc/mla_decode.cpp).
 * Tasks are the (sequence, chunk) entries of the host plan, each at most `chunk` cache positions and all
 * s_q * heads query rows; `pitch` = round_up(chunk, 16) is the column pitch of the per-block score and P
 * workspaces; softmax_rows / combine_rows the rows per UB slab of the two phases; latent_pitch the UB pitch
 * of a latent row (round_up(latent_dim, 16)); work_elems the f32 work space of the reductions; qk_base_*
 * the q.K^T tiles of the cube's basic instructions (m rows, n keys, k step), pv_base_* those of P.V (f32:
 * the base tiles of pv_cube, the Matmul API's); the partial outputs start ws_partial_at (lo | hi << 32)
 * bytes into the workspace. mutation is 0 except in the mutation tests (tiling_mla.rs). */
typedef struct DsnpuMlaDecodeTiling {
    uint32_t batch;
    uint32_t s_q;
    uint32_t heads;
    uint32_t latent_dim;
    uint32_t rope_dim;
    uint32_t block_size;
    uint32_t num_blocks;
    uint32_t max_blocks;
    float scale;
    uint32_t tasks;
    uint32_t chunk;
    uint32_t pitch;
    uint32_t softmax_rows;
    uint32_t combine_rows;
    uint32_t latent_pitch;
    uint32_t work_elems;
    uint32_t qk_base_m;
    uint32_t qk_base_n;
    uint32_t qk_base_k;
    uint32_t pv_base_m;
    uint32_t pv_base_n;
    uint32_t pv_base_k;
    uint32_t pv_pass_tiles; /* output tiles of pv_base_n columns one P . latent pass sums at once: 1, or 2 (both L0C buffers) */
    uint32_t ws_partial_at_lo;
    uint32_t ws_partial_at_hi;
    uint32_t mutation;
    uint32_t combine_tasks; /* tasks whose (m, l) the combine loads into UB at once */
    uint32_t key_buffers;   /* chunks whose cache rows the cube core holds in L1 at once: 1 or 2; 0 = streamed (the plan's) */
    uint32_t carry;         /* 1: a block's consecutive tasks of one sequence sum P . latent in L0C (see mla_decode.cpp) */
    uint32_t p_whole;       /* 1: a task's P comes into the cube core's L1 once (16-bit, held keys; streamed keys where it fits) */
    uint32_t uncut;         /* 1: the plan cuts no sequence (one task each, with keys): no combine after a SyncAll */
    DsnpuCubeTiling pv_cube; /* f32 partial: [s_q * heads, latent_dim] = P [.., pitch] x cache (Matmul API) */
} DsnpuMlaDecodeTiling;

/* mla_prefill_<t>: flash-style causal attention over packed variable-length sequences (the expanded
 * MLA form). Sequence b owns queries cu_q[b]..cu_q[b+1] and keys cu_k[b]..cu_k[b+1] (its cached prefix,
 * if any, first); query i of its Lq sees keys j <= Lk - Lq + i. Every operand is addressed as
 * `off + token * tok + head * head + d` in elements (head 0 = shared by all heads): q_nope/k_nope dn
 * wide, q_rope/k_rope dr wide (dr 0 = none), v dv wide; *_len are the buffers' element counts. out is
 * [tokens_q, heads, dv], lse f32 [heads, tokens_q]. Tasks are (query tile of block_m rows, head) pairs. */
typedef struct DsnpuMlaPrefillTiling {
    uint32_t batch;
    uint32_t heads;
    uint32_t tokens_q;
    uint32_t tokens_k;
    uint32_t dn;
    uint32_t dr;
    uint32_t dv;
    uint32_t qn_tok;
    uint32_t qn_head;
    uint32_t qn_off;
    uint32_t qn_len;
    uint32_t qr_tok;
    uint32_t qr_head;
    uint32_t qr_off;
    uint32_t qr_len;
    uint32_t kn_tok;
    uint32_t kn_head;
    uint32_t kn_off;
    uint32_t kn_len;
    uint32_t kr_tok;
    uint32_t kr_head;
    uint32_t kr_off;
    uint32_t kr_len;
    uint32_t v_tok;
    uint32_t v_head;
    uint32_t v_off;
    uint32_t v_len;
    float scale;
    uint32_t tasks;
    uint32_t block_m;
    uint32_t block_n;
    uint32_t dv_pitch;
    uint32_t softmax_rows;
    uint32_t work_elems; /* f32 of the row folds: 64 per slab row (row_ops.h) */
    uint32_t qk_base_m;
    uint32_t qk_base_n;
    uint32_t qk_base_k;
    uint32_t pv_base_m;
    uint32_t pv_base_n;
    uint32_t pv_base_k;
    uint32_t mutation;
    uint32_t out_rows; /* rows of a P.V / output slab (a multiple of 8) */
    DsnpuCubeTiling qk_cube; /* scores: [block_m, block_n] over dn (tiling_mla_prefill.rs) */
    DsnpuCubeTiling pv_cube; /* output: [block_m, dv] over block_n */
} DsnpuMlaPrefillTiling;

/* mla_cache_write_<t>: the fused MLA cache write. For token t of kv [tokens, kv_stride] (the
 * kv_a_proj_with_mqa output, latent_dim latent elements then rope_dim rope elements per row): the latent
 * part RMS-normalised with weight [latent_dim] and eps, the rope part rotated at positions[t] with the f32
 * tables cos/sin [table_rows, rope_dim / 2] in `layout`, both written to row slot_mapping[t] of the
 * latent cache [num_slots, latent_dim] and the rope cache [num_slots, rope_dim]; slot -1 is skipped.
 * Tokens are split into runs of tokens_per_block per block. */
typedef struct DsnpuMlaCacheWriteTiling {
    uint32_t tokens;
    uint32_t latent_dim;
    uint32_t rope_dim;
    uint32_t kv_stride;
    uint32_t num_slots;
    uint32_t table_rows;
    uint32_t layout;
    uint32_t tokens_per_block;
    float eps;
    uint32_t reserved;
} DsnpuMlaCacheWriteTiling;

/* gather_rows_<t>: y[r, :cols] = x[src(r) .. src(r) + cols] for r < rows, r = i * inner + j, with
 * src(r) = offset + i * stride_a + j * stride_b (+ idx[r] * stride_idx when has_idx; idx i32 [rows]).
 * Embedding lookups (idx = token ids), row selection and axis permutations of activations. x holds src_len
 * elements; rows are split into runs of rows_per_block per block and copied cols_per_tile at a time, or
 * rows_per_tile whole rows at a time. */
typedef struct DsnpuGatherRowsTiling {
    uint32_t rows;
    uint32_t inner;
    uint32_t cols;
    uint32_t has_idx;
    uint32_t offset;
    uint32_t stride_a;
    uint32_t stride_b;
    uint32_t stride_idx;
    uint32_t src_len;
    uint32_t rows_per_block;
    uint32_t cols_per_tile;
    uint32_t rows_per_tile; /* rows per copy (gather_rows_<t> only); 1 unless whole rows without an index list */
} DsnpuGatherRowsTiling;

/* argmax_<t>: out[r] = the lowest index of the largest of x[r, :cols] (i32), compared in f32. Rows are
 * split into runs of rows_per_block per block, each row scanned cols_per_tile at a time. */
typedef struct DsnpuArgmaxTiling {
    uint32_t rows;
    uint32_t cols;
    uint32_t rows_per_block;
    uint32_t cols_per_tile;
} DsnpuArgmaxTiling;

/* softmax_<t>: out[r, :] = softmax(x[r, :cols]) in f32. Rows are split into runs of rows_per_block per block,
 * each row walked cols_per_tile elements at a time in two passes (running maximum and sum, output). */
typedef struct DsnpuSoftmaxTiling {
    uint32_t rows;
    uint32_t cols;
    uint32_t rows_per_block;
    uint32_t cols_per_tile;
} DsnpuSoftmaxTiling;

#ifdef __cplusplus
}
#endif

#endif
