// GET_TILING_DATA_WITH_STRUCT: copy the host-packed tiling struct out of the kernel's `tiling` GM pointer.
//
// Contract: the struct type must be trivially copyable and laid out like the host's #[repr(C)] mirror; the
// whole struct must lie inside one live allocation (check_gm), or the block faults. CANN generates a
// GET_TILING_DATA(var, tiling) that knows the operator's registered type; dsnpu kernels name the type
// explicitly with the _WITH_STRUCT form, which CANN provides too.
#ifndef DSNPU_ASCENDC_HOST_TILING_DATA_H
#define DSNPU_ASCENDC_HOST_TILING_DATA_H

#include <cstring>
#include <type_traits>

#include "block.h"
#include "pipeline.h"

namespace dsnpu {
namespace host {

template <typename S>
inline void copy_tiling(S* out, const void* tiling) {
    static_assert(std::is_trivially_copyable<S>::value, "tiling structs are copied as bytes");
    check_gm("GET_TILING_DATA", tiling, sizeof(S));
    gm_read("GET_TILING_DATA", tiling, sizeof(S));
    std::memcpy(out, tiling, sizeof(S));
}

}  // namespace host
}  // namespace dsnpu

#define GET_TILING_DATA_WITH_STRUCT(tiling_struct, var, tiling) \
    tiling_struct var;                                          \
    ::dsnpu::host::copy_tiling<tiling_struct>(&var, (tiling))

#endif
