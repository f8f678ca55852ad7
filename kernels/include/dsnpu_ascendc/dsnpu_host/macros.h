// Host definitions of the Ascend C kernel qualifiers and address macros.
//
// On the AI Core these are compiler keywords; on the host they vanish, so the same kernel source compiles
// as ordinary C++17. Kernels spell their entry name through DSNPU_KERNEL(name) (dsnpu_kernels/entry.h):
// on the host that becomes an internal name, and DSNPU_HOST_ENTRY(name) exports the simulator ABI symbol
// under the kernel's real name.
#ifndef DSNPU_ASCENDC_HOST_MACROS_H
#define DSNPU_ASCENDC_HOST_MACROS_H

#include <cstdint>

#define __aicore__
#define __global__
#define __gm__
#define __ubuf__
#define __inout_pipe__(pipe)
#define __in_pipe__(pipe)
#define __out_pipe__(pipe)

#ifndef GM_ADDR
#define GM_ADDR __gm__ uint8_t*
#endif

#define DSNPU_HOST_EXPORT extern "C" __attribute__((visibility("default")))

#endif
