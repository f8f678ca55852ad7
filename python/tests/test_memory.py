"""Device memory running out is one exception, ``dsnpu.OutOfMemoryError`` (a ``RuntimeError``), wherever
it runs out: weights or a paged cache that do not fit when a checkpoint loads, or an operator's buffers.

Weights and cache were a ``ValueError`` and an operator's allocation a ``ValueError`` too (every operator
error was); a step that ran out a ``RuntimeError``. The cases that need a small device run in a process
of their own, as the simulator reads its size (``DSNPU_SIM_MEM_BYTES``) once, when it starts.
"""

import pathlib
import textwrap

import numpy as np
import pytest

import dsnpu

CHECKPOINT = pathlib.Path(__file__).resolve().parents[2] / "model" / "tests" / "data" / "v3_base"


def _oom_lines(r):
    """The lines `expect_oom` printed, of a script that ran to its end."""
    out = f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 0, out
    lines = r.stdout.splitlines()
    assert lines[-1] == "done", out
    return lines[:-1]


def test_the_exception_is_exported_and_a_runtime_error():
    assert dsnpu.OutOfMemoryError is dsnpu._dsnpu.OutOfMemoryError
    assert "OutOfMemoryError" in dsnpu.__all__
    assert issubclass(dsnpu.OutOfMemoryError, RuntimeError)
    assert not issubclass(dsnpu.OutOfMemoryError, ValueError)
    assert dsnpu.OutOfMemoryError.__module__ == "dsnpu"


# The start of every script below: `expect_oom(call)` prints the OutOfMemoryError `call()` raises, and
# ends the script with an error if it raises nothing.
PRELUDE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import dsnpu

    def expect_oom(call):
        try:
            call()
        except dsnpu.OutOfMemoryError as e:
            assert isinstance(e, RuntimeError)
            print(type(e).__name__, e)
        else:
            raise SystemExit("no OutOfMemoryError")
    """
)

# The tiny checkpoint's weights take ~600 KB in f32: on a 256 KiB device they do not fit.
WEIGHTS = PRELUDE + textwrap.dedent(
    """
    expect_oom(lambda: dsnpu.Engine(sys.argv[1], num_blocks=1, block_size=1))
    expect_oom(lambda: dsnpu.Model(sys.argv[1], max_tokens=1))
    expect_oom(lambda: dsnpu._dsnpu.Engine(sys.argv[1], num_blocks=1, block_size=1))
    print("done")
    """
)


def test_weights_that_do_not_fit_raise_out_of_memory_error(on_small_device):
    lines = _oom_lines(on_small_device("256K", WEIGHTS, CHECKPOINT))
    assert len(lines) == 3, lines
    for line in lines:
        assert line.startswith("OutOfMemoryError device memory: tensor `"), lines
        assert "does not fit: the weights need" in line, lines


# On a 2 MiB device the weights and the cache fit, but not the prefill's attention workspace (~9 MB):
# every step that prefills runs out, and a failed step leaves its sequence as it was.
STEP = PRELUDE + textwrap.dedent(
    """
    e = dsnpu.Engine(sys.argv[1], num_blocks=4, block_size=16)
    sid = e.add_sequence([1, 2, 3])
    m = dsnpu.Model(sys.argv[1], max_tokens=64)
    for call in (e.step, lambda: e.forward([1, 2, 3]), lambda: m.generate([1, 2, 3], 2)):
        expect_oom(call)
    assert e.live == [sid], e.live
    print("done")
    """
)


def test_a_step_that_runs_out_of_device_memory_raises_out_of_memory_error(on_small_device):
    # It was a RuntimeError like any device failure.
    lines = _oom_lines(on_small_device("2M", STEP, CHECKPOINT))
    assert len(lines) == 3, lines
    for line in lines:
        assert line.startswith("OutOfMemoryError kernel: "), lines
        assert ": out of memory on device 0: requested " in line, lines


# An operator whose device memory runs out (OpsError::Backend over the runtime's out-of-memory, which
# was a ValueError): on a 2 MiB device the upload of 4 MiB inputs; on a 512 KiB device the linear
# kernel's ~1 MiB workspace, with inputs of a few bytes. Before and after, what fits runs.
OPERATOR = PRELUDE + textwrap.dedent(
    """
    x, w = np.ones((4, 8), np.float32), np.ones((2, 8), np.float32)
    big = np.ones((1024, 1024), np.float32)
    if dsnpu._dsnpu.backend_name("npu") != "sim:0":
        raise SystemExit("not the simulator")
    calls = {
        "inputs": [lambda: dsnpu.linear(big, big), lambda: dsnpu.rms_norm(big, big[0])],
        "workspace": [lambda: dsnpu.linear(x, w)],
    }
    small = [lambda: dsnpu.rms_norm(x, x[0])]
    if sys.argv[1] == "inputs":
        small.append(lambda: dsnpu.linear(x, w))
    for call in small:
        call()
    for call in calls[sys.argv[1]]:
        expect_oom(call)
    # The failed calls gave their memory back; the host references need none.
    for call in small:
        call()
    assert dsnpu.linear(big, big, backend="cpu").shape == (1024, 1024)
    print("done")
    """
)


def test_an_operator_that_runs_out_of_device_memory_raises_out_of_memory_error(on_small_device):
    lines = _oom_lines(on_small_device("2M", OPERATOR, "inputs"))
    assert len(lines) == 2, lines
    assert lines[0].startswith("OutOfMemoryError linear: backend `sim:0` failed: out of memory"), lines
    assert lines[1].startswith("OutOfMemoryError rms_norm: backend `sim:0` failed: out of memory"), lines
    lines = _oom_lines(on_small_device("512K", OPERATOR, "workspace"))
    # The kernel's own error (its name first), the runtime's out-of-memory under it.
    assert lines == [lines[0]] and lines[0].startswith(
        "OutOfMemoryError linear: backend `sim:0` failed: linear_f32: out of memory"
    ), lines


def test_bad_operator_arguments_stay_value_errors():
    x, w = np.ones((2, 8), np.float32), np.ones(7, np.float32)
    for backend in ("npu", "cpu"):
        with pytest.raises(ValueError, match="rms_norm") as bad:
            dsnpu.rms_norm(x, w, backend=backend)
        assert not isinstance(bad.value, RuntimeError)
