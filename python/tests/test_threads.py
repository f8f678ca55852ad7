"""dsnpu.Engine and dsnpu.Model across threads: freed wherever they are dropped, usable from any thread.

They were bound to the thread that made them (pyo3 ``unsendable``): dropped on another thread (a thread
pool's worker, the cyclic GC running there), pyo3 refused to drop them and leaked them, device memory
included; and a call from another thread raised ``RuntimeError``. Calls from several threads at once run
one at a time: each extension object waits for the call before (pyo3 refused the overlapping one).
"""

import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np

import dsnpu

CHECKPOINT = pathlib.Path(__file__).resolve().parents[2] / "model" / "tests" / "data" / "v3_base"
PROMPTS = [[5, 9, 14, 2], [3, 1, 4, 1, 5, 9, 2, 6, 5], [7, 7]]

# A device of 40 MiB (a fresh process: the simulator reads its settings once). Each round loads an
# engine whose cache alone takes ~40% of it (2048 blocks of 16 tokens, 480 bytes a token), uses it, and
# drops its last reference on a thread of its own. Freed, every round fits; leaked, the third load
# finds no room.
DEVICE_BYTES = "40M"
BLOCKS = 2048
DROP_ELSEWHERE = textwrap.dedent(
    """
    import gc, sys, threading
    import dsnpu

    kind, path, rounds, BLOCKS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for r in range(rounds):
        if kind == "engine":
            obj = dsnpu.Engine(path, num_blocks=BLOCKS, block_size=16)
            obj.generate([[1, 2, 3]], 2)
            used = obj.stats()["cache_bytes"]
        else:
            obj = dsnpu.Model(path, max_tokens=BLOCKS * 16)
            obj.generate([1, 2, 3], 2)
            used = None
        box = [obj]
        del obj

        def drop():
            box.pop()
            gc.collect()

        t = threading.Thread(target=drop)
        t.start()
        t.join()
        assert not box
        print(f"round {r} freed (cache {used} bytes)", flush=True)
    print("done", flush=True)
    """
)


def _small_device(script, *args):
    """``script`` run by this interpreter in a process of its own on a simulated device of
    ``DEVICE_BYTES``."""
    env = dict(os.environ, DSNPU_SIM_MEM_BYTES=DEVICE_BYTES)
    for var in ("DSNPU_ACL_LIB", "ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


def _check_freed(kind):
    r = _small_device(DROP_ELSEWHERE, kind, CHECKPOINT, 6, BLOCKS)
    out = f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 0, out
    assert r.stdout.splitlines()[-1] == "done", out
    # pyo3's words when it refused to drop an object on a thread other than its own (and leaked it).
    assert "dropped on another thread" not in r.stderr, out


def test_an_engine_dropped_on_another_thread_frees_its_device_memory():
    _check_freed("engine")


def test_a_model_dropped_on_another_thread_frees_its_device_memory():
    _check_freed("model")


def test_the_drop_check_sees_a_leak():
    # The budget is tight enough that engines kept alive do not fit: the check above can fail.
    script = textwrap.dedent(
        """
        import sys
        import dsnpu

        kept = []
        for r in range(3):
            kept.append(dsnpu.Engine(sys.argv[1], num_blocks=int(sys.argv[2]), block_size=16))
            print(f"round {r} loaded", flush=True)
        """
    )
    r = _small_device(script, CHECKPOINT, BLOCKS)
    assert r.returncode != 0, r.stdout
    # Two fit; the third does not.
    assert r.stdout.splitlines() == ["round 0 loaded", "round 1 loaded"], r.stdout
    assert "device memory: the paged cache" in r.stderr, r.stderr


def _in_another_thread(f):
    """``f()`` run on a thread of its own: its result, or what it raised (a BaseException: pyo3's
    ``PanicException`` is not an ``Exception``)."""
    box = {}

    def run():
        try:
            box["value"] = f()
        except BaseException as e:  # noqa: B036 - the point is to see a PanicException too
            # Its traceback holds `run`'s frame, which holds `box`: a cycle for the cyclic GC.
            e.__traceback__ = None
            box["raised"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "raised" in box:
        raise AssertionError(f"raised on the other thread: {box['raised']!r}")
    return box["value"]


def _stepped(e, prompts, steps):
    # Seeded explicitly: by default a sequence samples with the engine's seed + its id, a new one each time.
    ids = {e.add_sequence(p, seed=100 + i): i for i, p in enumerate(prompts)}
    got = {i: [] for i in ids.values()}
    for _ in range(steps):
        for sid, token in e.step():
            got[ids[sid]].append(token)
    for sid in ids:
        e.remove_sequence(sid)
    return got


def test_an_engine_used_from_another_thread_gives_its_owner_threads_ids():
    # Greedy and sampled: both depend only on the engine's own state, not on the calling thread.
    for opts in ({}, {"temperature": 0.8, "top_p": 0.9, "seed": 3}):
        e = dsnpu.Engine(CHECKPOINT, num_blocks=16, block_size=4, **opts)
        want_gen = e.generate(PROMPTS, 5)
        want_steps = _stepped(e, PROMPTS, 4)
        want_logits = e.forward(PROMPTS[1])
        got_gen = _in_another_thread(lambda: e.generate(PROMPTS, 5))
        got_steps = _in_another_thread(lambda: _stepped(e, PROMPTS, 4))
        got_logits = _in_another_thread(lambda: e.forward(PROMPTS[1]))
        for w, g in zip(want_gen, got_gen):
            np.testing.assert_array_equal(g, w)
        assert got_steps == want_steps
        np.testing.assert_array_equal(got_logits, want_logits)
        assert _in_another_thread(lambda: (e.live, e.free_blocks)) == ([], 16)
        assert _in_another_thread(e.stats)["decode"]["steps"] == e.stats()["decode"]["steps"]
        # And back on the thread that made it.
        for w, g in zip(want_gen, e.generate(PROMPTS, 5)):
            np.testing.assert_array_equal(g, w)


def test_a_model_used_from_another_thread_gives_its_owner_threads_ids():
    for backend in ("npu", "cpu"):
        m = dsnpu.Model(CHECKPOINT, backend=backend, max_tokens=64)
        want = m.generate(PROMPTS[1], 6)
        want_logits = m.forward(PROMPTS[0])
        np.testing.assert_array_equal(_in_another_thread(lambda: m.generate(PROMPTS[1], 6)), want)
        np.testing.assert_array_equal(_in_another_thread(lambda: m.forward(PROMPTS[0])), want_logits)
        assert _in_another_thread(lambda: m.vocab_size) == m.vocab_size
        # A reload with other sampling options on another thread, then used back on this one.
        sampled = _in_another_thread(lambda: m.generate(PROMPTS[0], 4, temperature=0.8, seed=2))
        np.testing.assert_array_equal(m.generate(PROMPTS[0], 4, temperature=0.8, seed=2), sampled)


def test_calls_from_several_threads_at_once_run_one_at_a_time(in_threads):
    # The GIL is released during a call, so two threads' calls overlap: pyo3 refused the second
    # ("Already borrowed"); the extension objects under the Python classes serialize them now.
    e = dsnpu.Engine(CHECKPOINT, num_blocks=64, block_size=4)
    m = dsnpu.Model(CHECKPOINT, max_tokens=64)
    want = [list(x) for x in e.generate(PROMPTS, 8, stop=[])]
    want_m = list(m.generate(PROMPTS[1], 8))
    results = []
    start = threading.Barrier(4)

    def work(k):
        start.wait()
        for _ in range(3):
            if k % 2:
                results.append(("e", [list(x) for x in e.generate(PROMPTS, 8, stop=[])]))
            else:
                results.append(("m", list(m.generate(PROMPTS[1], 8))))

    assert in_threads(work, 4) == []
    assert len(results) == 12
    for kind, got in results:
        assert got == (want if kind == "e" else want_m)
    assert e.live == []


def test_the_extension_objects_serialize_their_own_calls(in_threads):
    # The extension classes themselves, without the Python classes over them (which used to take a lock
    # of their own): calls from several threads overlap, as each releases the GIL, and pyo3 refused
    # the second ("Already borrowed"). Each object now waits for the call before, getters included.
    raw = dsnpu._dsnpu
    e = raw.Engine(str(CHECKPOINT), num_blocks=64, block_size=4)
    m = raw.Model(str(CHECKPOINT), max_tokens=64)
    want = e.generate(PROMPTS, 8, [])
    want_m = m.generate(PROMPTS[1], 8)
    want_logits = m.forward(PROMPTS[0])
    steps = e.stats()["decode"]["steps"]
    results = []
    start = threading.Barrier(6)

    def work(k):
        start.wait()
        for _ in range(3):
            if k % 3 == 0:
                results.append(("e", e.generate(PROMPTS, 8, [])))
            elif k % 3 == 1:
                results.append(("m", m.generate(PROMPTS[1], 8)))
                results.append(("f", m.forward(PROMPTS[0])))
            else:
                # A generate adds and removes its sequences within one call: a getter that waits
                # for it never sees them.
                for _ in range(20):
                    results.append(("live", (e.live, e.free_blocks, m.vocab_size)))
                    results.append(("stats", e.stats()["decode"]["steps"] % steps))

    assert in_threads(work, 6) == []
    assert len(results) == 2 * 3 + 2 * 6 + 2 * 3 * 40
    expected = {"e": want, "m": want_m, "f": want_logits, "live": ([], 64, m.vocab_size), "stats": 0}
    for kind, got in results:
        assert got == expected[kind], kind
    assert e.stats()["decode"]["steps"] == steps * 7
