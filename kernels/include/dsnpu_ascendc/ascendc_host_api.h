// Host (clean-room) implementation of the Ascend C basic API subset dsnpu's kernels use.
//
// Kernels include it through dsnpu_kernels/entry.h, which takes CANN's "kernel_operator.h" when built for
// the AI Core and this file for the host kernel binary (DSNPU_ASCENDC_HOST). The host layer runs each block
// on a host thread inside the dsnpu simulator, checks every memory access (see the headers under dsnpu_host/ for each part's contract) and counts
// traffic. Written from the public Ascend C API documentation: same names, template parameters, argument
// order and units; no Huawei code.
#ifndef DSNPU_ASCENDC_KERNEL_OPERATOR_H
#define DSNPU_ASCENDC_KERNEL_OPERATOR_H

#include "dsnpu_host/macros.h"
#include "dsnpu_host/types.h"
#include "dsnpu_host/block.h"
#include "dsnpu_host/pipeline.h"
#include "dsnpu_host/tensor.h"
#include "dsnpu_host/pipe.h"
#include "dsnpu_host/sync.h"
#include "dsnpu_host/atomic.h"
#include "dsnpu_host/data_copy.h"
#include "dsnpu_host/cube.h"
#include "dsnpu_host/vector.h"
#include "dsnpu_host/vector_repeat.h"
#include "dsnpu_host/tiling_data.h"
#include "dsnpu_host/entry.h"

#endif
