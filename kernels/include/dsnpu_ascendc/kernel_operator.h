// Host (clean-room) implementation of the Ascend C basic API subset dsnpu's kernels use.
//
// Kernels include "kernel_operator.h" as they would with CANN; with this directory first on the include
// path they get the host layer, which runs each block on a host thread inside the dsnpu simulator,
// checks every memory access (see the headers under dsnpu_host/ for each part's contract) and counts
// traffic. Written from the public Ascend C API documentation: same names, template parameters, argument
// order and units; no Huawei code.
#ifndef DSNPU_ASCENDC_KERNEL_OPERATOR_H
#define DSNPU_ASCENDC_KERNEL_OPERATOR_H

#include "dsnpu_host/macros.h"
#include "dsnpu_host/types.h"
#include "dsnpu_host/block.h"
#include "dsnpu_host/tensor.h"
#include "dsnpu_host/pipe.h"
#include "dsnpu_host/data_copy.h"
#include "dsnpu_host/vector.h"
#include "dsnpu_host/tiling_data.h"
#include "dsnpu_host/entry.h"

#endif
