#!/usr/bin/env bash
# Fetches the AscendCL/HCCL headers shipped in the torch-npu wheel (PyPI) into
# .cache/ascend-headers/<version>/torch_npu/include (git-ignored; never committed) and prints that
# include directory. Does nothing but print it when the headers are already there.
#
# Used by scripts/regen-bindings.sh (bindgen input) and by the simulator's invalid-call C suite
# (sim/tests/invalid_calls.rs), which compiles against the vendor headers.
# Needs: python3 with pip, and network access to PyPI.
set -euo pipefail

TORCH_NPU_VERSION="${TORCH_NPU_VERSION:-2.14.0}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/ascend-headers"
inc="$cache/$TORCH_NPU_VERSION/torch_npu/include"

if [[ ! -f "$inc/third_party/acl/inc/acl/acl.h" || ! -f "$inc/third_party/hccl/inc/hccl/hccl.h" ]]; then
    mkdir -p "$cache/wheels" "$cache/$TORCH_NPU_VERSION"
    echo "fetching torch-npu $TORCH_NPU_VERSION from PyPI for its AscendCL/HCCL headers" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 -d "$cache/wheels" "torch-npu==$TORCH_NPU_VERSION" >&2
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
echo "$inc"
