#!/usr/bin/env bash
# Builds the dsnpu Python package (python/, maturin + pyo3 abi3) into a virtualenv under target/ and runs
# its pytest suite (python/tests) on the simulator. Needs python3 with venv and network access to PyPI.
#
#   scripts/python-tests.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/target/python-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "numpy>=1.23" "ml_dtypes>=0.3"
# The simulator the extension falls back to when no CANN install is found: built into target/debug, the
# profile directory the extension's loader searches. It is a dev-dependency, so it is built as the
# workspace's tests build it: with the same feature resolution, nothing is rebuilt after
# `cargo test --workspace` (`-p dsnpu-sim` resolves its dependencies' features differently and would).
cargo test --workspace --no-run --quiet
# A debug build keeps the compile short; the tests are small.
(cd python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --quiet)
# The search must reach the simulator, whatever the environment says.
env -u DSNPU_ACL_LIB -u ASCEND_HOME_PATH -u ASCEND_TOOLKIT_HOME \
    "$venv/bin/python" -m pytest -q python/tests "$@"
