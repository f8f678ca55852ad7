"""Shared helpers of the dsnpu Python tests."""

import os
import subprocess
import sys
import threading
import time

import pytest


def _runs_during(call):
    """How often another Python thread ran in the middle half of ``call()`` (it wakes every millisecond),
    and how long the call took: a call that holds the GIL throughout lets it run 0 times there."""
    ticks, stop = [], threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    quarter = (t1 - t0) / 4
    return sum(1 for s in ticks if t0 + quarter < s < t1 - quarter), t1 - t0


@pytest.fixture
def runs_during():
    return _runs_during


def _in_threads(work, n):
    """Runs ``work(k)`` for k = 0 .. n-1 on ``n`` threads at once; returns what they raised."""
    errors = []

    def run(k):
        try:
            work(k)
        except BaseException as err:  # noqa: B036
            err.__traceback__ = None  # no reference cycle through the thread's frames
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.fixture
def in_threads():
    return _in_threads


def _on_small_device(device_bytes, script, *args):
    """``script`` run by this interpreter in a process of its own on a simulated device of
    ``device_bytes`` (``DSNPU_SIM_MEM_BYTES``: the simulator reads it once, when it starts)."""
    env = dict(os.environ, DSNPU_SIM_MEM_BYTES=str(device_bytes))
    for var in ("DSNPU_ACL_LIB", "ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def on_small_device():
    return _on_small_device
