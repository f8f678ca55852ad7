/*
 * Self-test kernels of the host Ascend C layer: one correct path and one fault per mode, plus probes of
 * Cast rounding, the reductions and SyncAll. Tests launch them directly; they are compiled for the host
 * kernel binary only (their faults are deliberate).
 *
 * selftest_fault(a, b, workspace, tiling), DsnpuSelftestTiling {mode, count, arg}:
 *   0  copy `count` f32 from a to b through UB (DataCopyPad both ways)       -- no fault
 *   1  TPipe::InitBuffer of `count` bytes                                    -- UB overflow if > capacity
 *   2  DataCopy of `count` f32 from a, a's GlobalTensor without a size        -- GM read past the allocation
 *   3  b sized `arg` elements, DataCopyPad of `count` f32 UB -> b              -- write past the tensor
 *   4  Add over `count` + 8 elements of a `count`-element TBuf                -- LocalTensor overflow
 *   5  a sized `arg` elements, GlobalTensor::GetValue(arg)                    -- scalar read past the tensor
 *   6  DataCopy of `count` f32 a -> UB -> b with count * 4 not 32-aligned    -- warning, rounded down
 *   7  block 0 faults as in 3; the others SyncAll and then write b[idx] = 1  -- the others must stop
 *   8  DeQue on a queue nothing was EnQue'd to                               -- queue misuse
 * selftest_cast(a, b, workspace, tiling): `count` f32 from a -> b as half (mode 0), bfloat16_t (1) or
 *   int32_t (2), rounding with RoundMode `arg`; modes 3 (half) and 4 (bfloat16_t) instead narrow with
 *   CAST_RINT and then divide by 3 in that type (16-bit arithmetic, rounded once from the exact quotient).
 * selftest_reduce(a, b, workspace, tiling): over `count` elements of a (f32 for mode 0, half for mode 1):
 *   b[0] = ReduceMax value, b[1] = its index bits, b[2] = ReduceSum.
 * selftest_repeat(a, b, workspace, tiling): the repeat forms of the vector instructions (dsnpu_host/
 *   vector_repeat.h) and the row helpers built on them (dsnpu_kernels/row_ops.h). Row modes (f32): a tile
 *   of `count` rows of `arg & 0xffff` columns at a row pitch of `arg >> 16` elements (the whole pitch, row
 *   padding included, is copied in and, for the modes writing the tile, back out):
 *   0  a = tile; b[r] = RowMax of row r (`count` f32)
 *   1  a = tile; b[r] = RowSum of row r
 *   2  a = tile then v (`count` f32); RowBroadcast of v, RowAdd: b = the tile, tile[r][c] + v[r]
 *   3  as 2 with RowMul: tile[r][c] * v[r]
 *   4  a = tile; TileExp: b = the tile
 *   5  a = tile; TileMuls by the f32 whose bits are `reserved`: b = the tile
 *   6  a = dst tile then src tile; TileAdd: b = dst
 *   7  as 2 with RowScaleAdd by the f32 whose bits are `reserved`: s * tile[r][c] + v[r] (FusedMulAdd)
 *   Instruction modes 10 + op (f32) and 110 + op (half): a = src0, src1, dst (`count` elements each,
 *   each copied into a LocalTensor of its own), b = dst after one instruction (all `count` elements);
 *   arg = mask | repeatTime << 8 | dstBlkStride << 16 | src0BlkStride << 24, reserved = src1BlkStride |
 *   dstRepStride << 8 | src0RepStride << 16 | src1RepStride << 24 (src0: the source of a one-source op).
 *   op 0-4   Add, Sub, Mul, Max, Min (BinaryRepeatParams)
 *   op 5-7   Adds, Muls, Maxs with the scalar src1[0] (UnaryRepeatParams)
 *   op 8, 9  Exp, Ln (UnaryRepeatParams)
 *   op 10    WholeReduceMax(dst, src0, mask, repeatTime, dstRepStride, src0BlkStride, src0RepStride,
 *            ORDER_VALUE_INDEX); op 11 the same with ORDER_ONLY_VALUE
 *   op 12    WholeReduceSum with the same operands
 *   op 13    Brcb(dst, src0, repeatTime, BrcbRepeatParams(dstBlkStride, dstRepStride))
 *   op 14    Axpy(dst, src0, src1[0], count): the count form over all `count` elements (arg ignored)
 *   Operands outside the instruction's contract (a mask above a repeat, a walk past a LocalTensor)
 *   are the faults to expect.
 * selftest_sync_all(out, workspace, tiling): mode 0: block i sets out[i] = i + 1, SyncAll, then
 *   out[n + i] = out[(i + 1) % n] (only correct if every block wrote before any read), each int32 moved by
 *   DMA (ExchangeInts: the blocks' scalar data caches would need DataCacheCleanAndInvalid on both sides,
 *   and blocks writing one 64-byte line with SetValue overwrite each other's). Modes 1-3 probe the
 *   cycle model's SyncAll; out is 3n regions of `count` f32 (count a multiple of 8, one UB buffer):
 *   1  block 0 copies region 0 to UB and back, then every block SyncAlls (the others arrive at once)
 *   2  block i fills region i with i + 1, SyncAll, copies region (i + 1) % n to region n + i
 *   3  as 2, but copies region 2n + (i + 1) % n (which no block wrote) to region n + i
 *   Modes 4-5 seed races between blocks (DSNPU_SIM_CHECK race; mode 2 is their synchronized variant):
 *   4  as 2 without the SyncAll: block i reads region (i + 1) % n while block i + 1 may still write it
 *   5  every block fills region 0 with i + 1 (which value stays depends on timing), then SyncAll
 *   Modes 6-7 pass a SetValue between blocks (the scalar data cache, dsnpu_host/dcache.h; count a
 *   multiple of 16: a region per 64-byte line):
 *   6  block i writes the first f32 of region i with SetValue, SyncAll, then copies region (i + 1) % n
 *      to region n + i by DMA: the SetValue is still in block i's data cache   -- race
 *   7  as 6 with a DataCacheCleanAndInvalid of the line after the SetValue     -- none
 *   Modes 8-10 add into one region from every block (DMA atomics, dsnpu_host/atomic.h):
 *   8  every block adds i + 1 to region 0 (SetAtomicAdd<float>), SyncAll, then copies region 0 to
 *      region n + i: each holds region 0's first values plus n (n + 1) / 2       -- none
 *   9  as 8 without the SyncAll: a block reads region 0 while others add to it  -- race
 *   10 as 8 but block 0 stores i + 1 into region 0 instead of adding             -- race
 * selftest_defect(a, b, workspace, tiling): seeded defects for the sanitizer (DSNPU_SIM_CHECK), each with
 *   the finding it must raise; modes >= 100 are the correctly synchronized variants, which compute
 *   b[i] = 2 a[i] for i < count (count a multiple of 8, at most 4096) and raise nothing.
 *   1 / 101  DataCopy a -> UB (MTE2), Muls (V) with no / an MTE2_V flag          -- race
 *   2 / 102  Muls (V), DataCopy UB -> b (MTE3) with no / a V_MTE3 flag            -- race
 *   3 / 103  SetValue (S) of every element, DataCopy out with no / an S_MTE3 flag  -- race
 *   4 / 104  tiles of 8 through a depth-2 VECIN queue, computed in place and copied
 *            out from it, with no / a per-buffer MTE3_MTE2 flag before the refill  -- race
 *   5 / 105  Muls reads a buffer, MTE2 reloads it with no / a V_MTE2 flag          -- race
 *   6        DataCopy to b from a TBuf nothing wrote                               -- init
 *   7        GetValue of a TBuf element nothing wrote                              -- init
 *   8        WaitFlag<MTE2_V> with no SetFlag                                      -- sync
 *   9        SetFlag<V_MTE3> never waited for                                      -- sync
 *   10       SetFlag with eventID 8 (0..7 exist)                                   -- sync
 *   11       PipeBarrier<PIPE_S> (a hardware error)                                -- sync
 *   12       Add on a LocalTensor view 4 bytes into a buffer (not 32-byte aligned) -- mem
 *   13       Matmul base tile 256x256x128 of f32 (L0A 128 KiB > 64 KiB)             -- mem
 *   14       block 0 returns without the SyncAll the other blocks wait in          -- sync (simulator)
 *   15       b += 2 a: reads its output b back from GM before writing it; a finding only when nothing
 *            wrote b since its allocation (the GM side of init, simulator); after a copy or memset
 *            into b it is the correct variant and computes b + 2 a                  -- init (simulator)
 *   16 / 116 b = 2 a by MTE3, then b read back by MTE2 (and written again) with no / an MTE3_MTE2
 *            flag: GM ordering inside one core                                     -- race (GM)
 *   17 / 117 as 16, b[0] read back by the scalar unit with no / an MTE3_S flag     -- race (GM)
 *   The scalar unit's data cache (dsnpu_host/dcache.h):
 *   18 / 118 b = a by MTE3, b[0] read by the scalar unit (its line cached), b = 2 a by MTE3, b[0] read
 *            again with no / a DataCacheCleanAndInvalid first: a stale read          -- race (GM)
 *   19 / 119 b = 2 a by SetValue, then read back by MTE2 (and written again) with no / a
 *            DataCacheCleanAndInvalid of every line of b first: an unpublished write -- race (GM)
 *   20 / 120 b = a by MTE3, b[0] = 2 a[0] by SetValue, b = 2 a by MTE3; the kernel's end writes b[0]'s
 *            line back over b[1..16) unless a DataCacheCleanAndInvalid follows the SetValue: a lost
 *            write                                                                    -- race (GM)
 *   106      the 1 / 101 pipeline with PipeBarrier<PIPE_ALL> instead of flags
 * selftest_mix(a, w, out, workspace, tiling): a 1:2 mix kernel (one cube and two vector cores per block);
 *   a and w are 16 x 16 f32, out 16 x 16 f32 (modes 0-3) or 12 int32 per block (mode 4). The cube core
 *   computes C = a * w^T (Matmul, one 16x16x16 tile) into the user workspace (after the 1 MiB system
 *   workspace); vector core s copies rows [8s, 8s + 8) of C in, doubles them and writes out = 2 C.
 *   0  CrossCoreSetFlag<2, PIPE_FIX>(0) after GetTensorC, CrossCoreWaitFlag(0) before the copy in -- none
 *   1  no cross-core flag: the vector cores read the tile the cube writes            -- race (GM)
 *   2  as 0, then the vector cores wait for flag 1, which nobody sets                 -- sync
 *   3  as 0, and the cube sets flag 0 a second time that nobody waits for             -- sync
 *   4  every core writes {GetBlockIdx, GetBlockNum, GetSubBlockIdx, GetTaskRation} to out[16 * core]
 *      with SetValue (a 64-byte line per core: on the device, cores writing one line with SetValue
 *      overwrite each other's), core = 3 * block + (0 for the AIC, 1 + GetSubBlockIdx for an AIV) -- none
 * selftest_kfc(a, w, out, workspace, tiling): a 1:2 mix kernel whose vector cores drive the cube core's
 *   Matmul through REGIST_MATMUL_OBJ, and SyncAll in a mix launch. a and w are 16 x 16 f32; per block the
 *   user workspace holds C (16 x 16 f32) and a copy of a (16 x 16); out is 16 x 16 f32 per block (modes
 *   0-3, 6-13) or 4 * blocks int32 (modes 4, 5). Vector core s of every block asks for rows [8s, 8s + 8)
 *   of C = a * w^T (IterateAll into the workspace), copies them in, doubles them and writes them to out.
 *   0  as above                                                                       -- none
 *   1  A is the vector core's own copy of its rows of a, written by MTE3 just before the request with
 *      no MTE3_S flag: the cube core's load of it is unordered                         -- race (GM)
 *   2  as 1 with SetFlag/WaitFlag<MTE3_S> before the request                          -- none
 *   3  as 0, then vector core 0 waits for cross-core flag 0, which the serving cube core never sets
 *                                                                                     -- sync
 *   4  no Matmul: vector core v (GetBlockIdx) writes out[v] = v + 1 by DMA (ExchangeInts), SyncAll, then
 *      out[n + v] = out[(v + 1) % n], n = 2 * blocks (only right if all wrote first)  -- none
 *   5  as 4 but vector core 1 of each block returns before the SyncAll                 -- sync
 *   6  a Matmul used on a vector core without REGIST_MATMUL_OBJ                        -- fault
 *   7  as 0, then SyncAll<false>, which the serving cube core never reaches            -- sync
 *   8  as 0, but C is two products over the k halves (Iterate, then Iterate(true) on the second
 *      operand pair: summed in L0C), moved out once by GetTensorC                      -- none
 *   9  as 8 without the first Iterate: nothing in L0C to add to                        -- fault
 *   10 IterateAll<false> (asynchronous) on the vector core's own copy of its rows of a, which it
 *      overwrites (MTE3) before WaitIterateAll: the cube core's load of it is unordered  -- race (GM)
 *   11 as 10 with WaitIterateAll before the overwrite                                  -- none
 *   12 as 10, returning right after the asynchronous request                           -- sync
 *   13 as 0 with base tiles 16 x 8: each request's two output tiles share its A rows, which (K in one
 *      step, depthA1 1) stay in L1: A comes from GM once per request, B once per tile      -- none
 *   14 the vector cores copy their rows of a into the block's workspace copy (MTE3, MTE3_S flag),
 *      SyncAll, then ask for C from the NEXT block's copy: the cube core's load of it comes after the
 *      barrier through the request (the race check between blocks counts it as such)    -- none
 *   15 as 14 without the SyncAll: the cube core reads what another block's vector core writes
 *                                                                                     -- race (between blocks)
 *   16 no Matmul: both vector cores of every block add (GetBlockIdx + 1) to out[0..8) with
 *      SetAtomicAdd<float>, with no flag between them                                -- none
 *   17 as 16 but AIV 1 stores instead of adding                                      -- race (GM)
 * selftest_cost(a, b, workspace, tiling): kernels that isolate one effect of the cycle model; `count` f32
 *   (a multiple of `arg`, the tile length, itself a multiple of 8):
 *   0  copy a -> b through a depth-1 TQueBind<VECIN, VECOUT> in tiles            -- copy in/out serialized
 *   1  the same with depth 2 (double buffering)                                   -- loads overlap stores
 *   2  depth 2 with a PipeBarrier<PIPE_ALL> after every tile                      -- the overlap is gone
 *   3  b[0] = max of a by a scalar GetValue loop                                   -- scalar bound
 *   4  b[0] = max of a by one ReduceMax                                            -- vectorized
 * selftest_l2(a, b, workspace, tiling): the L2 model (dsnpu_host/cost.h, l2_die.h). Block i streams its own
 *   region of `count` tiles of 32 KiB (8192 f32), starting at the first 512-byte boundary of a (and of b)
 *   plus i * count * 32 KiB, `mode` times in a row (mode 0 = once) through a depth-2 queue; with arg bit 0
 *   every tile is also written back to the same place in b; with arg bit 1 every block reads block 0's
 *   region of a instead of its own; with arg bit 2 (and bit 0) only the first tile is read, and written to
 *   every tile of b (a stream of stores). Nothing is computed: only the traffic matters.
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/row_ops.h"
#include "dsnpu_kernels/tiling.h"
#include "lib/matmul_intf.h"

using namespace AscendC;
using namespace dsnpu_kernels;

namespace {

__aicore__ inline void CopyThrough(GlobalTensor<float>& dst, GlobalTensor<float>& src, uint32_t count) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, count * sizeof(float));
    LocalTensor<float> t = buf.Get<float>();
    const DataCopyExtParams p(1, count * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
    DataCopyPad(t, src, p, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
    SetFlag<HardEvent::MTE2_MTE3>(0);
    WaitFlag<HardEvent::MTE2_MTE3>(0);
    DataCopyPad(dst, t, p);
}

__aicore__ inline void Fault(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    GlobalTensor<float> ag, bg;
    switch (t.mode) {
        case 0: {
            ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), t.count);
            bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), t.count);
            CopyThrough(bg, ag, t.count);
            break;
        }
        case 1: {
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, t.count);
            break;
        }
        case 2: {
            ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a));
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, t.count * sizeof(float));
            DataCopy(buf.Get<float>(), ag, t.count);
            break;
        }
        case 3:
        case 7: {
            if (t.mode == 7 && GetBlockIdx() != 0) {
                SyncAll();
                bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b));
                bg.SetValue(static_cast<uint64_t>(GetBlockIdx()), 1.0f);
                break;
            }
            ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), t.count);
            bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), t.arg);
            CopyThrough(bg, ag, t.count);
            break;
        }
        case 4: {
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, t.count * sizeof(float));
            LocalTensor<float> v = buf.Get<float>();
            Add(v, v, v, static_cast<int32_t>(t.count + 8));
            break;
        }
        case 5: {
            ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), t.arg);
            bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), 1);
            bg.SetValue(0, ag.GetValue(t.arg));
            break;
        }
        case 6: {
            ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), t.count);
            bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), t.count);
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, t.count * sizeof(float));
            DataCopy(buf.Get<float>(), ag, t.count);
            SetFlag<HardEvent::MTE2_MTE3>(0);
            WaitFlag<HardEvent::MTE2_MTE3>(0);
            DataCopy(bg, buf.Get<float>(), t.count);
            break;
        }
        case 8: {
            TPipe pipe;
            TQue<TPosition::VECIN, 2> q;
            pipe.InitBuffer(q, 2, 64);
            LocalTensor<float> v = q.DeQue<float>();
            (void)v;
            break;
        }
        default:
            break;
    }
}

template <typename D>
__aicore__ inline void CastProbe(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    GlobalTensor<float> ag;
    GlobalTensor<D> bg;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), t.count);
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ D*>(b), t.count);
    TPipe pipe;
    TBuf<TPosition::VECCALC> src, dst;
    pipe.InitBuffer(src, t.count * sizeof(float));
    pipe.InitBuffer(dst, t.count * sizeof(D));
    const DataCopyExtParams in(1, t.count * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
    DataCopyPad(src.Get<float>(), ag, in, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    Cast(dst.Get<D>(), src.Get<float>(), static_cast<RoundMode>(t.arg), t.count);
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    const DataCopyExtParams out(1, t.count * static_cast<uint32_t>(sizeof(D)), 0, 0, 0);
    DataCopyPad(bg, dst.Get<D>(), out);
}

template <typename D>
__aicore__ inline void DivProbe(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    GlobalTensor<float> ag;
    GlobalTensor<D> bg;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), t.count);
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ D*>(b), t.count);
    TPipe pipe;
    TBuf<TPosition::VECCALC> src, dst, three;
    pipe.InitBuffer(src, t.count * sizeof(float));
    pipe.InitBuffer(dst, t.count * sizeof(D));
    pipe.InitBuffer(three, t.count * sizeof(D));
    const DataCopyExtParams in(1, t.count * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
    DataCopyPad(src.Get<float>(), ag, in, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    Cast(dst.Get<D>(), src.Get<float>(), RoundMode::CAST_RINT, t.count);
    Duplicate(three.Get<D>(), D(3.0f), static_cast<int32_t>(t.count));
    Div(dst.Get<D>(), dst.Get<D>(), three.Get<D>(), static_cast<int32_t>(t.count));
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    const DataCopyExtParams out(1, t.count * static_cast<uint32_t>(sizeof(D)), 0, 0, 0);
    DataCopyPad(bg, dst.Get<D>(), out);
}

template <typename T>
__aicore__ inline void ReduceProbe(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    GlobalTensor<T> ag, bg;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(a), t.count);
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(b), 3);
    TPipe pipe;
    TBuf<TPosition::VECCALC> src, res, work;
    pipe.InitBuffer(src, t.count * sizeof(T));
    pipe.InitBuffer(res, 64);
    pipe.InitBuffer(work, t.count * sizeof(T) + 64);
    const DataCopyExtParams in(1, t.count * static_cast<uint32_t>(sizeof(T)), 0, 0, 0);
    DataCopyPad(src.Get<T>(), ag, in, DataCopyPadExtParams<T>(false, 0, 0, T(0)));
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    LocalTensor<T> r = res.Get<T>();
    ReduceMax(r, src.Get<T>(), work.Get<T>(), static_cast<int32_t>(t.count), true);
    ReduceSum(r[8 * sizeof(float) / sizeof(T)], src.Get<T>(), work.Get<T>(), static_cast<int32_t>(t.count));
    SetFlag<HardEvent::V_S>(0);
    WaitFlag<HardEvent::V_S>(0);
    bg.SetValue(0, r.GetValue(0));
    bg.SetValue(1, r.GetValue(1));
    bg.SetValue(2, r.GetValue(8 * sizeof(float) / sizeof(T)));
}


// b = 2 a through one TBuf, with the synchronization `mode` asks for.
__aicore__ inline void DefectPipeline(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, uint32_t mode) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, n * sizeof(float));
    LocalTensor<float> t = buf.Get<float>();
    DataCopy(t, ag, n);
    if (mode == 101 || mode == 2 || mode == 102) {
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
    } else if (mode == 106) {
        PipeBarrier<PIPE_ALL>();
    }
    Muls(t, t, 2.0f, static_cast<int32_t>(n));
    if (mode == 101 || mode == 1 || mode == 102) {
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
    } else if (mode == 106) {
        PipeBarrier<PIPE_ALL>();
    }
    DataCopy(bg, t, n);
}

// b = 2 a written element by element by the scalar unit.
__aicore__ inline void DefectScalar(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, bool sync) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, n * sizeof(float));
    LocalTensor<float> t = buf.Get<float>();
    for (uint32_t i = 0; i < n; ++i) t.SetValue(i, 2.0f * ag.GetValue(i));
    if (sync) {
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
    }
    DataCopy(bg, t, n);
}

// b = 2 a in tiles of 8 through a double-buffered VECIN queue whose buffers are also copied out.
__aicore__ inline void DefectQueueReuse(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, bool sync) {
    TPipe pipe;
    TQue<TPosition::VECIN, 2> q;
    pipe.InitBuffer(q, 2, 8 * sizeof(float));
    CopyOutGuard<2> guard;
    for (uint32_t i = 0; i < n; i += 8) {
        if (sync) guard.BeforeRefill();
        LocalTensor<float> x = q.AllocTensor<float>();
        DataCopy(x, ag[i], 8);
        q.EnQue(x);
        x = q.DeQue<float>();
        Muls(x, x, 2.0f, 8);
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
        DataCopy(bg[i], x, 8);
        if (sync) guard.CopiedOut();
        q.FreeTensor(x);
    }
    if (sync) guard.Drain();
}

// b = 2 a, the table buffer reloaded after a vector read of its previous contents (as rope's tables).
__aicore__ inline void DefectReload(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, bool sync) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> in, out;
    pipe.InitBuffer(in, n * sizeof(float));
    pipe.InitBuffer(out, n * sizeof(float));
    LocalTensor<float> t = in.Get<float>();
    LocalTensor<float> o = out.Get<float>();
    Duplicate(t, 0.0f, static_cast<int32_t>(n));
    Muls(o, t, 2.0f, static_cast<int32_t>(n));  // reads the old contents
    if (sync) {
        SetFlag<HardEvent::V_MTE2>(0);
        WaitFlag<HardEvent::V_MTE2>(0);
    }
    DataCopy(t, ag, n);
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    Muls(o, t, 2.0f, static_cast<int32_t>(n));
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopy(bg, o, n);
}

// b += 2 a, reading b's old contents from GM first (seeded defect 15 on an output nothing wrote).
__aicore__ inline void AccumulateInto(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> in, acc;
    pipe.InitBuffer(in, n * sizeof(float));
    pipe.InitBuffer(acc, n * sizeof(float));
    LocalTensor<float> x = in.Get<float>();
    LocalTensor<float> y = acc.Get<float>();
    DataCopy(x, ag, n);
    DataCopy(y, bg, n);
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    Muls(x, x, 2.0f, static_cast<int32_t>(n));
    Add(y, y, x, static_cast<int32_t>(n));
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopy(bg, y, n);
}

// b = 2 a, then b read back from GM and written again (mode 16/116: by MTE2 and MTE3; 17/117: b[0] by the
// scalar unit, written back as it was), with or without the flag that orders the read after the
// core's own MTE3 store.
__aicore__ inline void DefectReadBack(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, uint32_t mode) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> in, back;
    pipe.InitBuffer(in, n * sizeof(float));
    pipe.InitBuffer(back, n * sizeof(float));
    LocalTensor<float> t = in.Get<float>();
    LocalTensor<float> u = back.Get<float>();
    DataCopy(t, ag, n);
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    Muls(t, t, 2.0f, static_cast<int32_t>(n));
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopy(bg, t, n);
    if (mode == 16 || mode == 116) {
        if (mode == 116) {
            SetFlag<HardEvent::MTE3_MTE2>(0);
            WaitFlag<HardEvent::MTE3_MTE2>(0);
        }
        DataCopy(u, bg, n);
        SetFlag<HardEvent::MTE2_MTE3>(0);
        WaitFlag<HardEvent::MTE2_MTE3>(0);
        DataCopy(bg, u, n);
        return;
    }
    if (mode == 117) {
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
        DataCacheCleanAndInvalid<float, CacheLine::SINGLE_CACHE_LINE, DcciDst::CACHELINE_OUT>(bg);
    }
    bg.SetValue(0, bg.GetValue(0));
}

// Modes 18-20 and 118-120 (the data cache): b = 2 a in the end, the scalar unit's GM accesses with or
// without the DataCacheCleanAndInvalid the hardware needs.
__aicore__ inline void DefectDataCache(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, uint32_t mode) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> in;
    pipe.InitBuffer(in, n * sizeof(float));
    LocalTensor<float> t = in.Get<float>();
    const bool clean = mode >= 100;
    const auto dcci = [](const GlobalTensor<float>& line) {
        DataCacheCleanAndInvalid<float, CacheLine::SINGLE_CACHE_LINE, DcciDst::CACHELINE_OUT>(line);
    };
    if (mode % 100 == 19) {
        for (uint32_t i = 0; i < n; ++i) bg.SetValue(i, 2.0f * ag.GetValue(i));
        if (clean) {
            for (uint32_t i = 0; i < n; i += 16) dcci(bg[i]);
        }
        SetFlag<HardEvent::S_MTE2>(0);
        WaitFlag<HardEvent::S_MTE2>(0);
        DataCopy(t, bg, n);
        SetFlag<HardEvent::MTE2_MTE3>(0);
        WaitFlag<HardEvent::MTE2_MTE3>(0);
        DataCopy(bg, t, n);
        return;
    }
    // b = a.
    DataCopy(t, ag, n);
    SetFlag<HardEvent::MTE2_MTE3>(0);
    WaitFlag<HardEvent::MTE2_MTE3>(0);
    DataCopy(bg, t, n);
    SetFlag<HardEvent::MTE3_S>(0);
    WaitFlag<HardEvent::MTE3_S>(0);
    if (mode % 100 == 18) {
        (void)bg.GetValue(0);
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
    } else {
        bg.SetValue(0, 2.0f * ag.GetValue(0));
        if (clean) dcci(bg);
        SetFlag<HardEvent::S_MTE3>(0);
        WaitFlag<HardEvent::S_MTE3>(0);
    }
    // b = 2 a.
    SetFlag<HardEvent::MTE3_V>(0);
    WaitFlag<HardEvent::MTE3_V>(0);
    Muls(t, t, 2.0f, static_cast<int32_t>(n));
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopy(bg, t, n);
    if (mode % 100 == 18) {
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
        if (clean) dcci(bg);
        (void)bg.GetValue(0);
    }
}

__aicore__ inline void Defect(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    GlobalTensor<float> ag, bg;
    const uint32_t n = t.count;
    if (n == 0 || n % 8 != 0 || n > 4096) return;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), n);
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), n);
    switch (t.mode) {
        case 1: case 101: case 2: case 102: case 106: DefectPipeline(ag, bg, n, t.mode); break;
        case 3: case 103: DefectScalar(ag, bg, n, t.mode == 103); break;
        case 4: case 104: DefectQueueReuse(ag, bg, n, t.mode == 104); break;
        case 5: case 105: DefectReload(ag, bg, n, t.mode == 105); break;
        case 16: case 116: case 17: case 117: DefectReadBack(ag, bg, n, t.mode); break;
        case 18: case 118: case 19: case 119: case 20: case 120: DefectDataCache(ag, bg, n, t.mode); break;
        case 6: {
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, n * sizeof(float));
            DataCopy(bg, buf.Get<float>(), n);
            break;
        }
        case 7: {
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, n * sizeof(float));
            bg.SetValue(0, buf.Get<float>().GetValue(n - 1));
            break;
        }
        case 8: WaitFlag<HardEvent::MTE2_V>(3); break;
        case 9: SetFlag<HardEvent::V_MTE3>(2); break;
        case 10: SetFlag<HardEvent::V_MTE3>(8); break;
        case 11: PipeBarrier<PIPE_S>(); break;
        case 12: {
            TPipe pipe;
            TBuf<TPosition::VECCALC> buf;
            pipe.InitBuffer(buf, (n + 8) * sizeof(float));
            LocalTensor<float> v = buf.Get<float>();
            Duplicate(v, 1.0f, static_cast<int32_t>(n + 8));
            LocalTensor<float> w = v[1];
            Add(w, w, w, static_cast<int32_t>(n));
            break;
        }
        case 13: {
            TCubeTiling tiling;
            tiling.M = tiling.singleCoreM = 256;
            tiling.N = tiling.singleCoreN = 256;
            tiling.Ka = tiling.Kb = tiling.singleCoreK = 128;
            tiling.baseM = 256;
            tiling.baseN = 256;
            tiling.baseK = 128;
            Matmul<MatmulType<TPosition::GM, CubeFormat::ND, float>, MatmulType<TPosition::GM, CubeFormat::ND, float>,
                   MatmulType<TPosition::GM, CubeFormat::ND, float>>
                mm;
            TPipe pipe;
            REGIST_MATMUL_OBJ(&pipe, nullptr, mm, &tiling);
            break;
        }
        case 14:
            if (GetBlockIdx() != 0) SyncAll();
            break;
        case 15: AccumulateInto(ag, bg, n); break;
        default:
            break;
    }
}

template <int32_t DEPTH>
__aicore__ inline void CostCopy(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, uint32_t tile,
                                bool barrier) {
    TPipe pipe;
    TQueBind<TPosition::VECIN, TPosition::VECOUT, DEPTH> q;
    pipe.InitBuffer(q, DEPTH, tile * sizeof(float));
    for (uint32_t i = 0; i < n; i += tile) {
        LocalTensor<float> x = q.template AllocTensor<float>();
        DataCopy(x, ag[i], tile);
        q.EnQue(x);
        x = q.template DeQue<float>();
        DataCopy(bg[i], x, tile);
        q.FreeTensor(x);
        if (barrier) PipeBarrier<PIPE_ALL>();
    }
}

__aicore__ inline void CostMax(GlobalTensor<float>& ag, GlobalTensor<float>& bg, uint32_t n, bool scalar) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> in, red, work;
    pipe.InitBuffer(in, n * sizeof(float));
    pipe.InitBuffer(red, 32);
    pipe.InitBuffer(work, n * sizeof(float));
    LocalTensor<float> x = in.Get<float>();
    DataCopy(x, ag, n);
    float m;
    if (scalar) {
        SetFlag<HardEvent::MTE2_S>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
        m = x.GetValue(0);
        for (uint32_t i = 1; i < n; ++i) {
            const float v = x.GetValue(i);
            if (v > m) m = v;
        }
    } else {
        SetFlag<HardEvent::MTE2_V>(0);
        WaitFlag<HardEvent::MTE2_V>(0);
        ReduceMax(red.Get<float>(), x, work.Get<float>(), static_cast<int32_t>(n));
        SetFlag<HardEvent::V_S>(0);
        WaitFlag<HardEvent::V_S>(0);
        m = red.Get<float>().GetValue(0);
    }
    bg.SetValue(0, m);
}

__aicore__ inline void Cost(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    GlobalTensor<float> ag, bg;
    const uint32_t n = t.count, tile = t.arg;
    if (tile == 0 || tile % 8 != 0 || n % tile != 0 || n > 16384) return;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), n);
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), n);
    switch (t.mode) {
        case 0: CostCopy<1>(ag, bg, n, tile, false); break;
        case 1: CostCopy<2>(ag, bg, n, tile, false); break;
        case 2: CostCopy<2>(ag, bg, n, tile, true); break;
        case 3: CostMax(ag, bg, n, true); break;
        case 4: CostMax(ag, bg, n, false); break;
        default: break;
    }
}
}  // namespace

namespace {
constexpr uint32_t L2_TILE = 8192;  // f32 per tile: 32 KiB

// The element offset of the first 512-byte boundary at or after p.
__aicore__ inline uint64_t LineAligned(GM_ADDR p) {
    const uint64_t at = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    return (((at + 511) & ~static_cast<uint64_t>(511)) - at) / sizeof(float);
}

__aicore__ inline void L2Stream(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    const uint32_t tiles = t.count, passes = t.mode == 0 ? 1 : t.mode;
    if (tiles == 0 || tiles > 65536) return;
    const uint64_t region = static_cast<uint64_t>(tiles) * L2_TILE;
    const uint64_t blocks = static_cast<uint64_t>(GetBlockNum());
    GlobalTensor<float> ag, bg;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), blocks * region + 128);
    const bool write = (t.arg & 1) != 0, shared = (t.arg & 2) != 0, stores = write && (t.arg & 4) != 0;
    ag = ag[LineAligned(a) + (shared ? 0 : static_cast<uint64_t>(GetBlockIdx()) * region)];
    if (write) {
        bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), blocks * region + 128);
        bg = bg[LineAligned(b) + static_cast<uint64_t>(GetBlockIdx()) * region];
    }
    TPipe pipe;
    TQueBind<TPosition::VECIN, TPosition::VECOUT, 2> q;
    pipe.InitBuffer(q, 2, L2_TILE * sizeof(float));
    if (stores) {
        LocalTensor<float> x = q.AllocTensor<float>();
        DataCopy(x, ag, L2_TILE);
        q.EnQue(x);
        x = q.DeQue<float>();
        for (uint32_t p = 0; p < passes; ++p) {
            for (uint32_t i = 0; i < tiles; ++i) DataCopy(bg[static_cast<uint64_t>(i) * L2_TILE], x, L2_TILE);
        }
        q.FreeTensor(x);
        return;
    }
    for (uint32_t p = 0; p < passes; ++p) {
        for (uint32_t i = 0; i < tiles; ++i) {
            LocalTensor<float> x = q.AllocTensor<float>();
            DataCopy(x, ag[static_cast<uint64_t>(i) * L2_TILE], L2_TILE);
            q.EnQue(x);
            x = q.DeQue<float>();
            if (write) DataCopy(bg[static_cast<uint64_t>(i) * L2_TILE], x, L2_TILE);
            q.FreeTensor(x);
        }
    }
}
}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_l2)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    L2Stream(a, b, t);
}

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_cost)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                  GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    Cost(a, b, t);
}

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_defect)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                    GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    Defect(a, b, t);
}

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_fault)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                   GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    Fault(a, b, t);
}

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_cast)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                  GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    if (t.mode == 0) {
        CastProbe<half>(a, b, t);
    } else if (t.mode == 1) {
        CastProbe<bfloat16_t>(a, b, t);
    } else if (t.mode == 2) {
        CastProbe<int32_t>(a, b, t);
    } else if (t.mode == 3) {
        DivProbe<half>(a, b, t);
    } else {
        DivProbe<bfloat16_t>(a, b, t);
    }
}

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_reduce)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                    GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    if (t.mode == 0) {
        ReduceProbe<float>(a, b, t);
    } else {
        ReduceProbe<half>(a, b, t);
    }
}

namespace {

// selftest_repeat: see the header.
constexpr uint32_t kRowModes = 8;

__aicore__ inline void RowProbe(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    const RowTile tile{t.count, t.arg & 0xffff, t.arg >> 16};
    if (tile.rows == 0 || tile.pitch == 0) return;  // the limits of row_ops.h are the caller's to keep
    const uint32_t rows8 = AlignUp(tile.rows, 8), elems = tile.rows * tile.pitch;
    const bool reduce = t.mode <= 1, perRow = t.mode == 2 || t.mode == 3 || t.mode == 7, twoTiles = t.mode == 6;
    GlobalTensor<float> ag, bg;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), elems + (perRow ? tile.rows : twoTiles ? elems : 0));
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(b), reduce ? tile.rows : elems);
    TPipe pipe;
    TBuf<TPosition::VECCALC> xBuf, yBuf, vBuf, bcastBuf, workBuf;
    pipe.InitBuffer(xBuf, elems * sizeof(float));
    pipe.InitBuffer(yBuf, (twoTiles ? elems : 8) * sizeof(float));
    pipe.InitBuffer(vBuf, rows8 * sizeof(float));
    pipe.InitBuffer(bcastBuf, 8 * rows8 * sizeof(float));
    pipe.InitBuffer(workBuf, ROW_SEG * tile.rows * sizeof(float));
    LocalTensor<float> x = xBuf.Get<float>(), y = yBuf.Get<float>(), v = vBuf.Get<float>();
    LocalTensor<float> bcast = bcastBuf.Get<float>(), work = workBuf.Get<float>();
    const DataCopyPadExtParams<float> pad(false, 0, 0, 0.0f);
    const DataCopyExtParams whole(1, elems * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
    const DataCopyExtParams perRowVec(1, tile.rows * static_cast<uint32_t>(sizeof(float)), 0, 0, 0);
    DataCopyPad(x, ag, whole, pad);
    if (perRow) DataCopyPad(v, ag[elems], perRowVec, pad);
    if (twoTiles) DataCopyPad(y, ag[elems], whole, pad);
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    switch (t.mode) {
        case 0: RowMax(v, x, work, tile); break;
        case 1: RowSum(v, x, work, tile); break;
        case 2:
            RowBroadcast(bcast, v, tile.rows);
            RowAdd(x, bcast, tile);
            break;
        case 3:
            RowBroadcast(bcast, v, tile.rows);
            RowMul(x, bcast, tile);
            break;
        case 4: TileExp(x, tile); break;
        case 5: TileMuls(x, BitsToFloat(t.reserved), tile); break;
        case 7:
            Duplicate(y, BitsToFloat(t.reserved), 8);  // the scale block
            RowBroadcast(bcast, v, tile.rows);
            RowScaleAdd(x, y, bcast, tile);
            break;
        default: TileAdd(x, y, tile); break;
    }
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    if (reduce) {
        DataCopyPad(bg, v, perRowVec);
    } else {
        DataCopyPad(bg, x, whole);
    }
}

template <typename T>
__aicore__ inline void RepeatInstr(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t, uint32_t op) {
    const uint32_t n = t.count;
    if (n == 0) return;
    GlobalTensor<T> ag, bg;
    ag.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(a), 3 * static_cast<uint64_t>(n));
    bg.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(b), n);
    TPipe pipe;
    TBuf<TPosition::VECCALC> b0, b1, bd;
    pipe.InitBuffer(b0, n * sizeof(T));
    pipe.InitBuffer(b1, n * sizeof(T));
    pipe.InitBuffer(bd, n * sizeof(T));
    LocalTensor<T> s0 = b0.Get<T>(), s1 = b1.Get<T>(), d = bd.Get<T>();
    const DataCopyExtParams p(1, n * static_cast<uint32_t>(sizeof(T)), 0, 0, 0);
    const DataCopyPadExtParams<T> pad(false, 0, 0, T(0));
    DataCopyPad(s0, ag, p, pad);
    DataCopyPad(s1, ag[n], p, pad);
    DataCopyPad(d, ag[2 * static_cast<uint64_t>(n)], p, pad);
    SetFlag<HardEvent::MTE2_V>(0);
    WaitFlag<HardEvent::MTE2_V>(0);
    T s = T(0);
    if ((op >= 5 && op <= 7) || op == 14) {
        SetFlag<HardEvent::MTE2_S>(0);
        WaitFlag<HardEvent::MTE2_S>(0);
        s = s1.GetValue(0);
    }
    const uint8_t mask = static_cast<uint8_t>(t.arg), rep = static_cast<uint8_t>(t.arg >> 8);
    const uint8_t dstBlk = static_cast<uint8_t>(t.arg >> 16), src0Blk = static_cast<uint8_t>(t.arg >> 24);
    const uint8_t src1Blk = static_cast<uint8_t>(t.reserved), dstRep = static_cast<uint8_t>(t.reserved >> 8);
    const uint8_t src0Rep = static_cast<uint8_t>(t.reserved >> 16), src1Rep = static_cast<uint8_t>(t.reserved >> 24);
    const BinaryRepeatParams bp(dstBlk, src0Blk, src1Blk, dstRep, src0Rep, src1Rep);
    const UnaryRepeatParams up(dstBlk, src0Blk, dstRep, src0Rep);
    switch (op) {
        case 0: Add(d, s0, s1, mask, rep, bp); break;
        case 1: Sub(d, s0, s1, mask, rep, bp); break;
        case 2: Mul(d, s0, s1, mask, rep, bp); break;
        case 3: Max(d, s0, s1, mask, rep, bp); break;
        case 4: Min(d, s0, s1, mask, rep, bp); break;
        case 5: Adds(d, s0, s, mask, rep, up); break;
        case 6: Muls(d, s0, s, mask, rep, up); break;
        case 7: Maxs(d, s0, s, mask, rep, up); break;
        case 8: Exp(d, s0, mask, rep, up); break;
        case 9: Ln(d, s0, mask, rep, up); break;
        case 10:
        case 11:
            WholeReduceMax(d, s0, mask, rep, dstRep, src0Blk, src0Rep,
                           op == 10 ? ReduceOrder::ORDER_VALUE_INDEX : ReduceOrder::ORDER_ONLY_VALUE);
            break;
        case 12: WholeReduceSum(d, s0, mask, rep, dstRep, src0Blk, src0Rep); break;
        case 13: Brcb(d, s0, rep, BrcbRepeatParams(dstBlk, dstRep)); break;
        default: Axpy(d, s0, s, static_cast<int32_t>(n)); break;
    }
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopyPad(bg, d, p);
}

__aicore__ inline void RepeatProbe(GM_ADDR a, GM_ADDR b, const DsnpuSelftestTiling& t) {
    if (t.mode < kRowModes) {
        RowProbe(a, b, t);
    } else if (t.mode >= 10 && t.mode <= 24) {
        RepeatInstr<float>(a, b, t, t.mode - 10);
    } else if (t.mode >= 110 && t.mode <= 124) {
        RepeatInstr<half>(a, b, t, t.mode - 110);
    }
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_repeat)(GM_ADDR a, GM_ADDR b, GM_ADDR workspace,
                                                                    GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    RepeatProbe(a, b, t);
}

namespace {

// selftest_sync_all modes 1-5 (the header): regions of `count` f32 of out, copied through UB.
__aicore__ inline void SyncAllTiming(GM_ADDR out, const DsnpuSelftestTiling& t) {
    const uint64_t n = static_cast<uint64_t>(GetBlockNum());
    const uint64_t i = static_cast<uint64_t>(GetBlockIdx());
    const uint32_t count = t.count;
    GlobalTensor<float> o;
    o.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out), 3 * n * count);
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, count * sizeof(float));
    LocalTensor<float> u = buf.Get<float>();
    if (t.mode == 1) {
        if (i == 0) {  // the others arrive at once
            DataCopy(u, o, count);
            SetFlag<HardEvent::MTE2_MTE3>(0);
            WaitFlag<HardEvent::MTE2_MTE3>(0);
            DataCopy(o, u, count);
        }
        SyncAll();
        return;
    }
    if (t.mode >= 8 && t.mode <= 10) {
        Duplicate(u, static_cast<float>(i + 1), static_cast<int32_t>(count));
        SetFlag<HardEvent::V_MTE3>(0);
        WaitFlag<HardEvent::V_MTE3>(0);
        if (t.mode != 10 || i != 0) SetAtomicAdd<float>();
        DataCopy(o, u, count);
        SetAtomicNone();
        if (t.mode != 9) SyncAll();
        SetFlag<HardEvent::MTE3_MTE2>(0);
        WaitFlag<HardEvent::MTE3_MTE2>(0);
        DataCopy(u, o, count);
        SetFlag<HardEvent::MTE2_MTE3>(0);
        WaitFlag<HardEvent::MTE2_MTE3>(0);
        DataCopy(o[(n + i) * count], u, count);
        return;
    }
    if (t.mode == 6 || t.mode == 7) {
        o.SetValue(i * count, static_cast<float>(i + 1));
        if (t.mode == 7) DataCacheCleanAndInvalid<float, CacheLine::SINGLE_CACHE_LINE, DcciDst::CACHELINE_OUT>(o[i * count]);
        SyncAll();
        DataCopy(u, o[(i + 1) % n * count], count);
        SetFlag<HardEvent::MTE2_MTE3>(0);
        WaitFlag<HardEvent::MTE2_MTE3>(0);
        DataCopy(o[(n + i) * count], u, count);
        return;
    }
    Duplicate(u, static_cast<float>(i + 1), static_cast<int32_t>(count));
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    DataCopy(o[(t.mode == 5 ? 0 : i) * count], u, count);
    if (t.mode == 5) {
        SyncAll();
        return;
    }
    if (t.mode != 4) SyncAll();
    const uint64_t from = (t.mode == 3 ? 2 * n : 0) + (i + 1) % n;
    SetFlag<HardEvent::MTE3_MTE2>(0);
    WaitFlag<HardEvent::MTE3_MTE2>(0);
    DataCopy(u, o[from * count], count);
    SetFlag<HardEvent::MTE2_MTE3>(0);
    WaitFlag<HardEvent::MTE2_MTE3>(0);
    DataCopy(o[(n + i) * count], u, count);
}

}  // namespace

namespace {

// Core `me` of `n` (all of which call this) writes o[me] = me + 1, SyncAll, then o[n + me] = o[(me + 1) % n]:
// every int32 by DMA (DataCopyPad of 4 bytes), which no scalar data cache holds (dsnpu_host/dcache.h).
__aicore__ inline void ExchangeInts(const GlobalTensor<int32_t>& o, uint32_t me, uint32_t n) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, 3 * 32);
    LocalTensor<int32_t> put = buf.Get<int32_t>(), got = put[8], fwd = put[16];
    const DataCopyExtParams one(1, static_cast<uint32_t>(sizeof(int32_t)), 0, 0, 0);
    put.SetValue(0, static_cast<int32_t>(me + 1));
    SetFlag<HardEvent::S_MTE3>(0);
    WaitFlag<HardEvent::S_MTE3>(0);
    DataCopyPad(o[me], put, one);
    SyncAll();
    DataCopyPad(got, o[(me + 1) % n], one, DataCopyPadExtParams<int32_t>(false, 0, 0, 0));
    SetFlag<HardEvent::MTE2_S>(0);
    WaitFlag<HardEvent::MTE2_S>(0);
    fwd.SetValue(0, got.GetValue(0));
    SetFlag<HardEvent::S_MTE3>(0);
    WaitFlag<HardEvent::S_MTE3>(0);
    DataCopyPad(o[static_cast<uint64_t>(n) + me], fwd, one);
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_sync_all)(GM_ADDR out, GM_ADDR workspace,
                                                                      GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    if (t.mode != 0) {
        SyncAllTiming(out, t);
        return;
    }
    const uint32_t n = static_cast<uint32_t>(GetBlockNum());
    GlobalTensor<int32_t> o;
    o.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(out), 2 * static_cast<uint64_t>(n));
    ExchangeInts(o, static_cast<uint32_t>(GetBlockIdx()), n);
}


namespace {

// selftest_mix: see the header.
__aicore__ inline void MixProbe(GM_ADDR out) {
    GlobalTensor<int32_t> o;
    const int64_t block = GetBlockIdx() / GetTaskRation();
    const int64_t core = 3 * block + (ASCEND_IS_AIC ? 0 : 1 + GetSubBlockIdx());
    o.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(out) + 16 * core, 4);
    o.SetValue(0, static_cast<int32_t>(GetBlockIdx()));
    o.SetValue(1, static_cast<int32_t>(GetBlockNum()));
    o.SetValue(2, static_cast<int32_t>(GetSubBlockIdx()));
    o.SetValue(3, static_cast<int32_t>(GetTaskRation()));
}

__aicore__ inline void MixTile(uint32_t mode, GM_ADDR a, GM_ADDR w, GM_ADDR out, GM_ADDR workspace) {
    constexpr uint32_t kN = 16;
    GlobalTensor<float> ws;
    ws.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(GetUserWorkspace(workspace)), kN * kN);
    const bool flags = mode != 1;
    if ASCEND_IS_AIC {
        GlobalTensor<float> aGm, wGm;
        aGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), kN * kN);
        wGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(w), kN * kN);
        TCubeTiling t;
        t.M = t.N = t.Ka = t.Kb = t.singleCoreM = t.singleCoreN = t.singleCoreK = kN;
        t.baseM = t.baseN = t.baseK = kN;
        TPipe pipe;
        Matmul<MatmulType<TPosition::GM, CubeFormat::ND, float>, MatmulType<TPosition::GM, CubeFormat::ND, float, true>,
               MatmulType<TPosition::GM, CubeFormat::ND, float>>
            mm;
        mm.Init(&t, &pipe);
        mm.SetTensorA(aGm);
        mm.SetTensorB(wGm, true);
        while (mm.Iterate()) mm.GetTensorC(ws, 0, true);
        mm.End();
        if (flags) CrossCoreSetFlag<2, PIPE_FIX>(0);
        if (mode == 3) CrossCoreSetFlag<2, PIPE_FIX>(0);
        return;
    }
    const uint32_t r0 = static_cast<uint32_t>(GetSubBlockIdx()) * (kN / 2);
    GlobalTensor<float> o;
    o.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out), kN * kN);
    TPipe pipe;
    TQue<TPosition::VECIN, 1> inQ;
    TQue<TPosition::VECOUT, 1> outQ;
    pipe.InitBuffer(inQ, 1, kN / 2 * kN * sizeof(float));
    pipe.InitBuffer(outQ, 1, kN / 2 * kN * sizeof(float));
    if (flags) CrossCoreWaitFlag(0);
    LocalTensor<float> x = inQ.AllocTensor<float>();
    DataCopyPad(x, ws[r0 * kN], DataCopyExtParams{kN / 2, kN * sizeof(float), 0, 0, 0},
                DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
    inQ.EnQue(x);
    x = inQ.DeQue<float>();
    LocalTensor<float> y = outQ.AllocTensor<float>();
    Muls(y, x, 2.0f, kN / 2 * kN);
    inQ.FreeTensor(x);
    outQ.EnQue(y);
    y = outQ.DeQue<float>();
    DataCopyPad(o[r0 * kN], y, DataCopyExtParams{kN / 2, kN * sizeof(float), 0, 0, 0});
    outQ.FreeTensor(y);
    if (mode == 2) CrossCoreWaitFlag(1);
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_mix)(GM_ADDR a, GM_ADDR w, GM_ADDR out, GM_ADDR workspace,
                                                                 GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    if (t.mode == 4) {
        MixProbe(out);
    } else {
        MixTile(t.mode, a, w, out, workspace);
    }
}

namespace {

// selftest_kfc: see the header.
using KfcMm = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, float>,
                     MatmulType<TPosition::GM, CubeFormat::ND, float, true>, MatmulType<TPosition::GM, CubeFormat::ND, float>>;
constexpr uint32_t kKfcN = 16;

__aicore__ inline TCubeTiling KfcTiling() {
    TCubeTiling t;
    t.M = t.N = t.Ka = t.Kb = t.singleCoreN = t.singleCoreK = kKfcN;
    t.singleCoreM = kKfcN / 2;
    t.baseM = t.baseN = t.baseK = kKfcN;
    return t;
}

// Vector core `sub` copies `rows` rows of f32 from `src` into UB, optionally doubles them, writes `dst`.
__aicore__ inline void KfcRows(TPipe& pipe, const GlobalTensor<float>& src, const GlobalTensor<float>& dst,
                               bool twice) {
    constexpr uint32_t rows = kKfcN / 2;
    TQue<TPosition::VECIN, 1> inQ;
    TQue<TPosition::VECOUT, 1> outQ;
    pipe.InitBuffer(inQ, 1, rows * kKfcN * sizeof(float));
    pipe.InitBuffer(outQ, 1, rows * kKfcN * sizeof(float));
    LocalTensor<float> x = inQ.AllocTensor<float>();
    DataCopyPad(x, src, DataCopyExtParams{rows, kKfcN * sizeof(float), 0, 0, 0},
                DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
    inQ.EnQue(x);
    x = inQ.DeQue<float>();
    LocalTensor<float> y = outQ.AllocTensor<float>();
    Muls(y, x, twice ? 2.0f : 1.0f, rows * kKfcN);
    inQ.FreeTensor(x);
    outQ.EnQue(y);
    y = outQ.DeQue<float>();
    DataCopyPad(dst, y, DataCopyExtParams{rows, kKfcN * sizeof(float), 0, 0, 0});
    outQ.FreeTensor(y);
}

__aicore__ inline void KfcSyncAll(uint32_t mode, GM_ADDR out) {
    if ASCEND_IS_AIC {
        return;
    }
    const uint32_t n = static_cast<uint32_t>(GetBlockNum() * 2), v = static_cast<uint32_t>(GetBlockIdx());
    GlobalTensor<int32_t> o;
    o.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(out), 2 * n);
    if (mode == 5 && GetSubBlockIdx() == 1) return;
    ExchangeInts(o, v, n);
}

// Modes 16 and 17: the vector cores add into one row of out (atomic.h).
__aicore__ inline void KfcAtomicAdd(uint32_t mode, GM_ADDR out) {
    if ASCEND_IS_AIC {
        return;
    }
    GlobalTensor<float> o;
    o.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out), 8);
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, 8 * sizeof(float));
    LocalTensor<float> u = buf.Get<float>();
    Duplicate(u, static_cast<float>(GetBlockIdx() + 1), 8);
    SetFlag<HardEvent::V_MTE3>(0);
    WaitFlag<HardEvent::V_MTE3>(0);
    if (mode == 16 || GetSubBlockIdx() == 0) SetAtomicAdd<float>();
    DataCopy(o, u, 8);
    SetAtomicNone();
}

__aicore__ inline void KfcMatmul(uint32_t mode, GM_ADDR a, GM_ADDR w, GM_ADDR out, GM_ADDR workspace) {
    const uint32_t block = static_cast<uint32_t>(GetBlockIdx() / GetTaskRation());
    const uint64_t tile = static_cast<uint64_t>(kKfcN) * kKfcN;
    GlobalTensor<float> aGm, wGm, cWs, aWs, o;
    aGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(a), tile);
    wGm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(w), tile);
    cWs.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(GetUserWorkspace(workspace)) + 2 * tile * block, tile);
    aWs.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(GetUserWorkspace(workspace)) + 2 * tile * block + tile, tile);
    o.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out) + tile * block, tile);
    TPipe pipe;
    TCubeTiling tiling = KfcTiling();
    if (mode == 13) tiling.baseN = kKfcN / 2;
    KfcMm mm;
    if (mode == 6) {
        if ASCEND_IS_AIC {
            return;
        }
        mm.Init(&tiling, &pipe);
        mm.SetTensorA(aGm);
        mm.SetTensorB(wGm, true);
        mm.IterateAll(cWs);
        return;
    }
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, &tiling);
    const uint64_t r0 = static_cast<uint64_t>(GetSubBlockIdx()) * (kKfcN / 2) * kKfcN;
    GlobalTensor<float> aRows = aGm[r0];
    if (mode == 1 || mode == 2) {
        KfcRows(pipe, aGm[r0], aWs[r0], false);  // the operand, written on MTE3
        if (mode == 2) {
            SetFlag<HardEvent::MTE3_S>(0);
            WaitFlag<HardEvent::MTE3_S>(0);
        }
        aRows = aWs[r0];
    }
    if (mode == 14 || mode == 15) {
        KfcRows(pipe, aGm[r0], aWs[r0], false);
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
        if (mode == 14) SyncAll();
        const uint32_t next = (block + 1) % static_cast<uint32_t>(GetBlockNum());
        GlobalTensor<float> theirs;
        theirs.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(GetUserWorkspace(workspace)) + 2 * tile * next + tile,
                               tile);
        aRows = theirs[r0];
    }
    if (mode == 10 || mode == 11 || mode == 12) {
        // An asynchronous request on the vector core's own copy of A, which it then overwrites.
        KfcRows(pipe, aGm[r0], aWs[r0], false);
        SetFlag<HardEvent::MTE3_S>(0);
        WaitFlag<HardEvent::MTE3_S>(0);
        mm.SetTensorA(aWs[r0]);
        mm.SetTensorB(wGm, true);
        mm.template IterateAll<false>(cWs[r0]);
        if (mode == 12) return;  // never waited for
        if (mode == 11) mm.WaitIterateAll();
        KfcRows(pipe, aGm[r0], aWs[r0], true);
        mm.WaitIterateAll();
        mm.End();
        KfcRows(pipe, cWs[r0], o[r0], true);
        return;
    }
    if (mode == 8 || mode == 9) {
        // The k halves as two operand pairs, summed in L0C (enPartialSum), moved out once.
        constexpr int half = static_cast<int>(kKfcN / 2);
        mm.SetTail(-1, -1, half);
        mm.SetTensorA(aRows);
        mm.SetTensorB(wGm, true);
        if (mode == 8) mm.Iterate();
        mm.SetTensorA(aRows[half]);
        mm.SetTensorB(wGm[half], true);
        mm.Iterate(true);
        mm.GetTensorC(cWs[r0]);
    } else {
        mm.SetTensorA(aRows);
        mm.SetTensorB(wGm, true);
        mm.IterateAll(cWs[r0]);
    }
    mm.End();
    KfcRows(pipe, cWs[r0], o[r0], true);
    if (mode == 3 && GetSubBlockIdx() == 0) CrossCoreWaitFlag(0);
    if (mode == 7) SyncAll<false>();
}

}  // namespace

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_kfc)(GM_ADDR a, GM_ADDR w, GM_ADDR out, GM_ADDR workspace,
                                                                 GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    GET_TILING_DATA_WITH_STRUCT(DsnpuSelftestTiling, t, tiling);
    if (t.mode == 16 || t.mode == 17) {
        KfcAtomicAdd(t.mode, out);
    } else if (t.mode == 4 || t.mode == 5) {
        KfcSyncAll(t.mode, out);
    } else {
        KfcMatmul(t.mode, a, w, out, workspace);
    }
}

DSNPU_HOST_ENTRY_SYNC(selftest_fault)
DSNPU_HOST_ENTRY_SYNC(selftest_defect)
DSNPU_HOST_ENTRY(selftest_cost)
DSNPU_HOST_ENTRY(selftest_l2)
DSNPU_HOST_ENTRY(selftest_cast)
DSNPU_HOST_ENTRY(selftest_reduce)
DSNPU_HOST_ENTRY(selftest_repeat)
DSNPU_HOST_ENTRY_SYNC(selftest_sync_all)
DSNPU_HOST_ENTRY_MIX(selftest_mix)
DSNPU_HOST_ENTRY_MIX_SYNC(selftest_kfc)
