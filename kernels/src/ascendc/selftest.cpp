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
 * selftest_sync_all(out, workspace, tiling): block i sets out[i] = i + 1, SyncAll, then
 *   out[n + i] = out[(i + 1) % n] (only correct if every block wrote before any read).
 */
#include "dsnpu_kernels/kernel_util.h"
#include "dsnpu_kernels/tiling.h"

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
    Cast(dst.Get<D>(), src.Get<float>(), static_cast<RoundMode>(t.arg), t.count);
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
    Cast(dst.Get<D>(), src.Get<float>(), RoundMode::CAST_RINT, t.count);
    Duplicate(three.Get<D>(), D(3.0f), static_cast<int32_t>(t.count));
    Div(dst.Get<D>(), dst.Get<D>(), three.Get<D>(), static_cast<int32_t>(t.count));
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
    LocalTensor<T> r = res.Get<T>();
    ReduceMax(r, src.Get<T>(), work.Get<T>(), static_cast<int32_t>(t.count), true);
    ReduceSum(r[8 * sizeof(float) / sizeof(T)], src.Get<T>(), work.Get<T>(), static_cast<int32_t>(t.count));
    bg.SetValue(0, r.GetValue(0));
    bg.SetValue(1, r.GetValue(1));
    bg.SetValue(2, r.GetValue(8 * sizeof(float) / sizeof(T)));
}

}  // namespace

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

extern "C" __global__ __aicore__ void DSNPU_KERNEL(selftest_sync_all)(GM_ADDR out, GM_ADDR workspace,
                                                                      GM_ADDR tiling) {
    (void)workspace;
    (void)tiling;
    const uint64_t n = static_cast<uint64_t>(GetBlockNum());
    const uint64_t i = static_cast<uint64_t>(GetBlockIdx());
    GlobalTensor<int32_t> o;
    o.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(out), 2 * n);
    o.SetValue(i, static_cast<int32_t>(i + 1));
    SyncAll();
    o.SetValue(n + i, o.GetValue((i + 1) % n));
}

DSNPU_HOST_ENTRY(selftest_fault)
DSNPU_HOST_ENTRY(selftest_cast)
DSNPU_HOST_ENTRY(selftest_reduce)
DSNPU_HOST_ENTRY(selftest_sync_all)
