/*
 * The host kernel binary's ABI exports (dsnpu_sim_kernel.h): its version (the simulator refuses a binary
 * whose version differs from its own) and the launch hooks of the die-wide L2 replay.
 */
#include "dsnpu_kernels/entry.h"

DSNPU_HOST_ABI_EXPORTS()
