#!/usr/bin/env bash
# Regenerate ffi/src/sys.rs from the real AscendCL/HCCL headers shipped in the torch-npu wheel.
#
# The headers are fetched into .cache/ (git-ignored) and never committed. The output is
# byte-identical for the pinned wheel, bindgen and libclang versions below; `--check` fails if the
# committed file differs from a fresh generation.
#
# Needs: python3 + pip (PyPI), bindgen-cli (cargo, installed here), libclang and clang's builtin headers
# (Debian: libclang-dev, installed here when missing and running as root).
set -euo pipefail

TORCH_NPU_VERSION="2.14.0"
BINDGEN_VERSION="0.73.2"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/ascend-headers"
out="$root/ffi/src/sys.rs"
check=false
[[ "${1:-}" == "--check" ]] && check=true

if ! command -v bindgen >/dev/null || [[ "$(bindgen --version)" != "bindgen $BINDGEN_VERSION" ]]; then
    echo "installing bindgen-cli $BINDGEN_VERSION" >&2
    cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION"
fi
# What bindgen really needs from clang: a loadable libclang (found the way clang-sys finds it:
# libclang.so or libclang-<N>.so*, not libclang-cpp) and clang's resource directory with its builtin
# headers (stddef.h). Debian's libclang-dev brings both; an image that ships only libclang-cpp or LLVM
# has neither.
libclang_found() {
    local dirs=("${LIBCLANG_PATH:-}" /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib
        /usr/local/lib /usr/lib/llvm-*/lib)
    local d f
    for d in "${dirs[@]}"; do
        [[ -n "$d" && -d "$d" ]] || continue
        for f in "$d"/libclang.so "$d"/libclang.so.* "$d"/libclang-[0-9]*.so "$d"/libclang-[0-9]*.so.*; do
            [[ -e "$f" ]] && return 0
        done
    done
    return 1
}
clang_headers_found() {
    local f
    for f in /usr/lib/llvm-*/lib/clang/*/include/stddef.h /usr/lib/clang/*/include/stddef.h \
        /usr/local/lib/clang/*/include/stddef.h; do
        [[ -e "$f" ]] && return 0
    done
    return 1
}
missing_clang() {
    libclang_found || echo -n "libclang (libclang.so or libclang-<N>.so*) "
    clang_headers_found || echo -n "clang's builtin headers (clang/<version>/include/stddef.h) "
}
if [[ -n "$(missing_clang)" ]]; then
    echo "bindgen needs $(missing_clang)- installing libclang-dev" >&2
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null || true
    fi
    if [[ -n "$(missing_clang)" ]]; then
        echo "error: bindgen needs $(missing_clang)and they could not be installed." >&2
        echo "  Debian/Ubuntu: apt-get install libclang-dev (as root); elsewhere install libclang and clang's" >&2
        echo "  resource headers, and point LIBCLANG_PATH at the folder holding libclang.so." >&2
        exit 1
    fi
fi

inc="$cache/$TORCH_NPU_VERSION/torch_npu/include"
if [[ ! -f "$inc/third_party/acl/inc/acl/acl.h" ]]; then
    mkdir -p "$cache/wheels" "$cache/$TORCH_NPU_VERSION"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 -d "$cache/wheels" "torch-npu==$TORCH_NPU_VERSION"
    wheel="$(ls "$cache"/wheels/torch_npu-"$TORCH_NPU_VERSION"-*.whl | head -n1)"
    python3 - "$wheel" "$cache/$TORCH_NPU_VERSION" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(("torch_npu/include/third_party/acl/inc/", "torch_npu/include/third_party/hccl/inc/")):
            z.extract(name, dest)
PY
fi

wrapper="$cache/wrapper.hpp"
cat >"$wrapper" <<'HPP'
#include <acl/acl.h>
#include "third_party/hccl/inc/hccl/hccl.h"
HPP

functions=(
    aclInit aclFinalize
    aclrtSetDevice aclrtResetDevice aclrtGetDeviceCount aclrtGetDevice
    aclrtCreateContext aclrtDestroyContext aclrtSetCurrentContext aclrtGetCurrentContext
    aclrtCreateStream aclrtDestroyStream aclrtSynchronizeStream aclrtStreamWaitEvent aclrtStreamQuery
    aclrtCreateEvent aclrtCreateEventWithFlag aclrtRecordEvent aclrtSynchronizeEvent aclrtQueryEventStatus
    aclrtEventElapsedTime aclrtDestroyEvent
    aclrtMalloc aclrtFree aclrtMallocHost aclrtFreeHost aclrtMemcpy aclrtMemcpyAsync aclrtMemset
    aclrtMemsetAsync aclrtGetMemInfo
    aclrtBinaryLoadFromFile aclrtBinaryLoadFromData aclrtBinaryUnLoad aclrtBinaryGetFunction
    aclrtKernelArgsInit aclrtKernelArgsAppend aclrtKernelArgsAppendPlaceHolder aclrtKernelArgsFinalize
    aclrtLaunchKernelWithConfig aclrtLaunchKernelWithHostArgs
    aclrtGetVersion aclrtGetSocName aclGetRecentErrMsg
    HcclGetRootInfo HcclCommInitRootInfo HcclCommInitAll HcclCommDestroy HcclAllReduce HcclAllGather
    HcclAlltoAllV HcclGetRankSize HcclGetRankId HcclGetErrorString HcclBroadcast HcclReduceScatter
    HcclSend HcclRecv
)
allow=()
for f in "${functions[@]}"; do allow+=(--allowlist-function "^${f}\$"); done

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
{
    echo "// Generated by scripts/regen-bindings.sh from torch-npu $TORCH_NPU_VERSION's AscendCL/HCCL headers"
    echo "// with bindgen $BINDGEN_VERSION. Do not edit by hand."
    bindgen "$wrapper" \
        --no-layout-tests --no-doc-comments --use-core --merge-extern-blocks --sort-semantically \
        --default-enum-style moduleconsts --default-macro-constant-type signed \
        --no-prepend-enum-name \
        "${allow[@]}" \
        --allowlist-var '^ACL_ERROR_.*' --allowlist-var '^ACL_SUCCESS$' \
        --allowlist-var '^ACL_EVENT_.*' --allowlist-var '^ACL_STREAM_.*' \
        --allowlist-type '^aclrtMemMallocPolicy$' --allowlist-type '^aclrtMemcpyKind$' \
        --allowlist-type '^aclrtMemAttr$' --allowlist-type '^aclrtEventRecordedStatus$' \
        --allowlist-type '^aclrtLaunchKernelCfg$' --allowlist-type '^aclrtPlaceHolderInfo$' \
        --allowlist-type '^aclDataType$' --allowlist-type '^HcclDataType$' --allowlist-type '^HcclReduceOp$' \
        --allowlist-type '^HcclResult$' --allowlist-type '^HcclRootInfo$' \
        -- -x c++ -std=c++14 -I "$inc" -I "$inc/third_party/acl/inc"
} >"$tmp"
# Function-pointer types for every function, so the loader stores them and the simulator's exports
# are checked against them by the compiler.
python3 "$root/scripts/fn_pointer_types.py" "$tmp" >>"$tmp.fns"
cat "$tmp.fns" >>"$tmp"
rm -f "$tmp.fns"
rustfmt --edition 2021 "$tmp"

if $check; then
    if cmp -s "$tmp" "$out"; then
        echo "ffi/src/sys.rs is up to date"
    else
        echo "ffi/src/sys.rs differs from a fresh generation; run scripts/regen-bindings.sh" >&2
        diff -u "$out" "$tmp" | head -40 >&2
        exit 1
    fi
else
    cp "$tmp" "$out"
    echo "wrote $out"
fi
