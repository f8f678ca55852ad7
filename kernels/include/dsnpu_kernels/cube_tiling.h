/*
 * TCubeTiling from the host tiling's DsnpuCubeTiling (include after lib/matmul_intf.h). The fields are
 * copied one by one, so the kernel does not depend on TCubeTiling's full layout, which CANN extends
 * past the documented fields dsnpu fills.
 */
#ifndef DSNPU_KERNELS_CUBE_TILING_H
#define DSNPU_KERNELS_CUBE_TILING_H

#include "dsnpu_kernels/tiling.h"

namespace dsnpu_kernels {

__aicore__ inline TCubeTiling ToCubeTiling(const DsnpuCubeTiling& c) {
    TCubeTiling t;
    t.usedCoreNum = c.usedCoreNum;
    t.M = c.M;
    t.N = c.N;
    t.Ka = c.Ka;
    t.Kb = c.Kb;
    t.singleCoreM = c.singleCoreM;
    t.singleCoreN = c.singleCoreN;
    t.singleCoreK = c.singleCoreK;
    t.baseM = c.baseM;
    t.baseN = c.baseN;
    t.baseK = c.baseK;
    t.depthA1 = c.depthA1;
    t.depthB1 = c.depthB1;
    t.stepM = c.stepM;
    t.stepN = c.stepN;
    t.isBias = c.isBias;
    t.transLength = c.transLength;
    t.iterateOrder = c.iterateOrder;
    t.shareMode = c.shareMode;
    t.shareL1Size = c.shareL1Size;
    t.shareL0CSize = c.shareL0CSize;
    t.shareUbSize = c.shareUbSize;
    t.batchM = c.batchM;
    t.batchN = c.batchN;
    t.singleBatchM = c.singleBatchM;
    t.singleBatchN = c.singleBatchN;
    t.stepKa = c.stepKa;
    t.stepKb = c.stepKb;
    t.depthAL1CacheUB = c.depthAL1CacheUB;
    t.depthBL1CacheUB = c.depthBL1CacheUB;
    t.dbL0A = c.dbL0A;
    t.dbL0B = c.dbL0B;
    t.dbL0C = c.dbL0C;
    return t;
}

}  // namespace dsnpu_kernels

#endif
