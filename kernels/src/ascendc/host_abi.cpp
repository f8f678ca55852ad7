/*
 * The host kernel binary's ABI marker (dsnpu_sim_kernel.h): the simulator refuses a binary whose version
 * differs from its own.
 */
#include "dsnpu_kernels/entry.h"

DSNPU_HOST_EXPORT uint32_t dsnpu_sim_kernel_abi_version(void) { return DSNPU_SIM_KERNEL_ABI; }
