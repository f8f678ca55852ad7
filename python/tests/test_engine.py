"""dsnpu.Engine: the device-resident engine stepped from Python (continuous batching).

The cases load the committed tiny checkpoint model/tests/data/v3_base and compare with what the CPU
model (``dsnpu.Model(backend="cpu")``, the references) computes for each prompt alone.
"""

import pathlib

import numpy as np
import pytest

import dsnpu

CHECKPOINT = pathlib.Path(__file__).resolve().parents[2] / "model" / "tests" / "data" / "v3_base"
PROMPTS = [[5, 9, 14, 2], [3, 1, 4, 1, 5, 9, 2, 6, 5], [7, 7]]


@pytest.fixture(scope="module")
def cpu():
    return dsnpu.Model(CHECKPOINT, backend="cpu")


def test_sequences_joining_and_leaving_match_each_prompt_alone(cpu):
    e = dsnpu.Engine(CHECKPOINT, num_blocks=16, block_size=4)
    want = [list(cpu.generate(p, 6)) for p in PROMPTS]
    got = {}
    ids = {}
    for step in range(9):
        # Prompt 1 joins at the third step, prompt 2 at the fourth; each leaves after 6 tokens.
        for i, at in ((0, 0), (1, 2), (2, 3)):
            if step == at:
                ids[e.add_sequence(PROMPTS[i])] = i
        for sid, token in e.step():
            got.setdefault(ids[sid], []).append(token)
            if len(got[ids[sid]]) == 6:
                e.remove_sequence(sid)
    assert e.live == []
    assert e.free_blocks == 16
    for i, w in enumerate(want):
        # The CPU model stops after an eos id; the stepped engine does not.
        assert got[i][: len(w)] == w, f"prompt {i}"


def test_generate_samples_prompt_i_with_seed_plus_i(cpu):
    e = dsnpu.Engine(CHECKPOINT, num_blocks=16, block_size=4, temperature=0.8, top_p=0.9, seed=4)
    outs = e.generate(PROMPTS, 5)
    assert e.live == [] and e.free_blocks == 16
    for i, p in enumerate(PROMPTS):
        alone = cpu.generate(p, 5, temperature=0.8, top_p=0.9, seed=4 + i)
        np.testing.assert_array_equal(outs[i], alone, err_msg=f"prompt {i}")
    # An explicit seed on add_sequence samples as that prompt alone with it.
    sid = e.add_sequence(PROMPTS[1], seed=4 + 1)
    steps = [e.step()[0][1] for _ in range(len(outs[1]))]
    e.remove_sequence(sid)
    assert steps == list(outs[1])


def test_a_decode_step_uploads_metadata_and_downloads_one_id_per_sequence():
    e = dsnpu.Engine(CHECKPOINT, num_blocks=16, block_size=4)
    for p in PROMPTS:
        e.add_sequence(p)
    e.step()  # the prefills
    before = e.stats()["decode"]
    steps = 4
    for _ in range(steps):
        assert len(e.step()) == len(PROMPTS)
    after = e.stats()["decode"]
    batch = len(PROMPTS)
    assert after["steps"] - before["steps"] == steps
    assert after["syncs"] - before["syncs"] == steps
    assert after["d2h_bytes"] - before["d2h_bytes"] == 4 * batch * steps
    assert 0 < after["h2d_bytes"] - before["h2d_bytes"] <= 1024 * batch * steps
    s = e.stats()
    assert s["weight_bytes"] > 0 and s["cache_bytes"] > 0
    assert s["ops"]["mla_decode"] > 0 and s["prefill"]["tokens"] == sum(map(len, PROMPTS))


def test_forward_matches_the_cpu_logits_in_f32_and_bf16(cpu):
    ref = cpu.forward(PROMPTS[1])
    scale = float(np.abs(ref).max())
    for dtype, tol in (("f32", 1e-3), ("bf16", 5e-2)):
        e = dsnpu.Engine(CHECKPOINT, num_blocks=16, block_size=4, dtype=dtype)
        got = e.forward(PROMPTS[1]).astype(np.float32)
        assert got.shape == (len(PROMPTS[1]), e.vocab_size)
        assert np.abs(got - ref).max() <= tol * scale, dtype


def test_counts_outside_their_range_name_the_argument():
    for kwargs, name in [
        (dict(num_blocks=-1), "num_blocks"),
        (dict(block_size=2**64), "block_size"),
        (dict(seed=-5), "seed"),
        (dict(max_prefill_tokens=-1), "max_prefill_tokens"),
        (dict(device=-1), "device"),
        (dict(device=2**31), "device"),
    ]:
        with pytest.raises(ValueError, match=name):
            dsnpu.Engine(CHECKPOINT, **kwargs)
    with pytest.raises(TypeError, match="num_blocks"):
        dsnpu.Engine(CHECKPOINT, num_blocks=2.5)
    e = dsnpu.Engine(CHECKPOINT, num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="seed"):
        e.add_sequence([1, 2], seed=-1)
    with pytest.raises(ValueError, match="seq_id"):
        e.remove_sequence(-3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        e.generate([[1, 2]], max_new_tokens=-1)
    assert e.live == [] and e.free_blocks == 4


def test_errors_raise_value_error():
    with pytest.raises(ValueError, match="dtype"):
        dsnpu.Engine(CHECKPOINT, dtype="f64")
    with pytest.raises(ValueError):
        dsnpu.Engine(CHECKPOINT.parent / "no-such-checkpoint")
    with pytest.raises(ValueError, match="temperature"):
        dsnpu.Engine(CHECKPOINT, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        dsnpu.Engine(CHECKPOINT, top_p=0.0)
    # A cache larger than the device: named (was the allocator's bare RuntimeError), and device memory
    # running out like any other (it was a ValueError).
    with pytest.raises(dsnpu.OutOfMemoryError, match="paged cache of 1073741824 slots") as cache:
        dsnpu.Engine(CHECKPOINT, num_blocks=2**20, block_size=2**10)
    assert isinstance(cache.value, RuntimeError)
    assert not isinstance(cache.value, ValueError)
    # A device failure is a RuntimeError, its cause said once.
    with pytest.raises(RuntimeError) as missing:
        dsnpu.Engine(CHECKPOINT, device=7)
    assert str(missing.value).count("device 7 does not exist") == 1, str(missing.value)
    e = dsnpu.Engine(CHECKPOINT, num_blocks=2, block_size=4)
    with pytest.raises(ValueError):
        e.step()  # no live sequence
    with pytest.raises(ValueError):
        e.add_sequence([])
    with pytest.raises(ValueError):
        e.add_sequence([e.vocab_size])
    with pytest.raises(ValueError):
        e.remove_sequence(12345)
    # Two blocks of 4 tokens: a 7-token prompt fits, then outgrows the cache on its second token.
    sid = e.add_sequence([1, 2, 3, 4, 5, 6, 7])
    e.step()
    e.step()
    with pytest.raises(ValueError):
        e.step()
    with pytest.raises(ValueError, match="live"):
        e.generate([[1, 2]], 2)
    e.remove_sequence(sid)
    assert e.free_blocks == 2


def test_ids_that_are_not_token_ids_are_refused_and_zero_tokens_still_checks_the_prompts():
    e = dsnpu.Engine(CHECKPOINT, num_blocks=4, block_size=4)
    # Floats and booleans were truncated by int() into valid-looking ids (1.7 ran as token 1).
    for bad in ([1.7], [True], np.array([1.0, 2.0])):
        with pytest.raises(TypeError, match="integers"):
            e.add_sequence(bad)
    # Past int32 (and past int64) the extension failed without naming the value.
    with pytest.raises(ValueError, match="2199023255552 does not fit in int32"):
        e.add_sequence([2**41])
    with pytest.raises(ValueError, match="does not fit in int32"):
        e.add_sequence([2**70])
    with pytest.raises(TypeError, match="stop"):
        e.generate([[1]], 2, stop=[0.5])
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        e.generate([[1], [2.5]], 2)
    assert e.live == []
    # Asking for no tokens used to return before the prompts were looked at.
    with pytest.raises(ValueError, match="outside the vocabulary"):
        e.generate([[1], [e.vocab_size]], 0)
    with pytest.raises(ValueError, match="empty"):
        e.generate([[1], []], 0)
    assert [list(o) for o in e.generate([[1], [2]], 0)] == [[], []]
    assert e.live == [] and e.free_blocks == 4


def test_engine_and_model_calls_release_the_gil(runs_during):
    # Engine.generate/step/forward and Model.generate/forward held the GIL for the whole call.
    e = dsnpu.Engine(CHECKPOINT, num_blocks=64, block_size=16)
    ran, seconds = runs_during(lambda: e.generate([[1, 2, 3]] * 4, 40, stop=[]))
    assert ran >= 2, f"another thread ran {ran} times in the middle of a {seconds:.3f} s generate"
    m = dsnpu.Model(CHECKPOINT)
    ran, seconds = runs_during(lambda: m.forward(list(range(1, 60))))
    assert ran >= 2, f"another thread ran {ran} times in the middle of a {seconds:.3f} s forward"


def test_a_checkpoint_path_is_a_path():
    # Paths went through str(): None and 42 became the directories "None" and "42", and a bytes path
    # "b'/...'" (each "No such file" under a name the caller never gave).
    import os

    for cls in (dsnpu.Engine, dsnpu.Model):
        for bad in (None, 42):
            with pytest.raises(TypeError, match="os.PathLike"):
                cls(bad)
        obj = cls(os.fsencode(str(CHECKPOINT)))
        assert obj.vocab_size > 0


def test_a_prompt_of_more_than_one_dimension_is_refused(cpu):
    # Token ids were flattened: a batch of two prompts passed where one is expected ran as a single
    # prompt of their concatenation.
    e = dsnpu.Engine(CHECKPOINT, num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match=r"ids: token ids are a 1-D sequence, got shape \(2, 2\)"):
        e.add_sequence([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"prompts\[0\]: token ids are a 1-D sequence"):
        e.generate([np.array([[1, 2]])], 1)
    with pytest.raises(ValueError, match="ids: token ids are a 1-D sequence"):
        cpu.generate(np.array([[1, 2], [3, 4]]), 1)
    with pytest.raises(ValueError, match="ids: token ids are a 1-D sequence"):
        e.forward([[1, 2]])
    assert e.live == [] and e.free_blocks == 4
