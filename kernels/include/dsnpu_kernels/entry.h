/*
 * Common prologue of dsnpu's Ascend C kernel sources.
 *
 * A kernel is written as for the AI Core, with its entry name spelled through DSNPU_KERNEL:
 *
 *     extern "C" __global__ __aicore__ void DSNPU_KERNEL(rms_norm_f32)(GM_ADDR x, ..., GM_ADDR tiling) {...}
 *     DSNPU_HOST_ENTRY(rms_norm_f32)
 *
 * A 1:2 mix kernel (cube + vector cores, KERNEL_TYPE_MIX_AIC_1_2) is exported with DSNPU_HOST_ENTRY_MIX, a
 * kernel whose blocks meet in SyncAll with DSNPU_HOST_ENTRY_SYNC (the simulator then runs all its blocks at
 * once; other kernels' blocks may run one after another).
 *
 * For the AI Core (CANN's compiler, DSNPU_ASCENDC_HOST undefined) DSNPU_KERNEL(name) is `name` and
 * DSNPU_HOST_ENTRY vanishes. For the host kernel binary the kernel body is compiled as the internal
 * `dsnpu_host_impl_<name>` and DSNPU_HOST_ENTRY exports the simulator ABI symbol `name`, which unpacks the
 * GM addresses and calls it (dsnpu_ascendc/dsnpu_host/entry.h).
 */
#ifndef DSNPU_KERNELS_ENTRY_H
#define DSNPU_KERNELS_ENTRY_H

#ifdef DSNPU_ASCENDC_HOST
#include "ascendc_host_api.h"
#define DSNPU_KERNEL(name) dsnpu_host_impl_##name
#else
#include "kernel_operator.h"
#define DSNPU_KERNEL(name) name
#define DSNPU_HOST_ENTRY(name)
#define DSNPU_HOST_ENTRY_SYNC(name)
#define DSNPU_HOST_ENTRY_MIX(name)
#endif

#endif
