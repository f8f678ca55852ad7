"""dsnpu.Model and the fused MLA cache write from Python.

The model cases load the committed tiny checkpoint model/tests/data/v3_base (made by
scripts/make_tiny_checkpoints.py) and compare both backends' greedy ids with the ids Hugging Face
transformers generated for it (reference.safetensors, read here with a few lines of numpy), and the
npu and cpu logits with each other. The cache-write cases compare against numpy RMSNorm and RoPE.
"""

import json
import pathlib
import struct

import numpy as np
import pytest

import dsnpu

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

CHECKPOINT = pathlib.Path(__file__).resolve().parents[2] / "model" / "tests" / "data" / "v3_base"
SAFETENSORS_DTYPES = {"I32": np.int32, "F32": np.float32, "I64": np.int64}


def read_safetensors(path):
    """{name: array} of a safetensors file (8-byte little-endian header length, JSON header, data)."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=SAFETENSORS_DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


@pytest.fixture(scope="module")
def reference():
    return read_safetensors(CHECKPOINT / "reference.safetensors")


@pytest.fixture(scope="module")
def models():
    return {b: dsnpu.Model(CHECKPOINT, backend=b, max_tokens=64) for b in ("npu", "cpu")}


@pytest.mark.parametrize("backend", ["npu", "cpu"])
def test_greedy_generation_matches_transformers(models, reference, backend):
    prompt, want = reference["prompt_ids"], reference["generated_ids"]
    got = models[backend].generate(prompt, max_new_tokens=len(want))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_npu_and_cpu_logits_agree_with_transformers(models, reference):
    prompt = reference["prompt_ids"]
    npu, cpu = models["npu"].forward(prompt), models["cpu"].forward(prompt)
    v = models["cpu"].vocab_size
    assert npu.shape == cpu.shape == (len(prompt), v)
    want = reference["logits"][: len(prompt)]
    for got in (npu, cpu):
        np.testing.assert_allclose(got, want, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(npu, cpu, atol=2e-3, rtol=2e-3)


def test_sampled_generation_is_reproducible_and_seeded(models, reference):
    prompt = reference["prompt_ids"]
    m = models["npu"]
    a = m.generate(prompt, max_new_tokens=6, temperature=1.0, seed=3)
    b = m.generate(prompt, max_new_tokens=6, temperature=1.0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 6 and ((a >= 0) & (a < m.vocab_size)).all()


def test_prefix_caching_shares_an_earlier_prompts_blocks(models, reference):
    prompt = [int(i) for i in reference["prompt_ids"]]
    plain = models["npu"]
    m = dsnpu.Model(CHECKPOINT, backend="npu", max_tokens=64, prefix_caching=True)
    # 16-token cache blocks: a 20-token system prompt has one full block to share.
    system = [(7 * i + 3) % m.vocab_size for i in range(20)]
    first = m.generate(system + prompt, max_new_tokens=4)
    assert m.prefix_hit_tokens == 0
    second = m.generate(system + prompt[:2], max_new_tokens=4)
    assert m.prefix_hit_tokens == 16
    np.testing.assert_array_equal(first, plain.generate(system + prompt, max_new_tokens=4))
    np.testing.assert_array_equal(second, plain.generate(system + prompt[:2], max_new_tokens=4))
    assert plain.prefix_hit_tokens == 0


def test_chunked_prefill_keeps_ids_and_logits(models, reference):
    prompt = reference["prompt_ids"]
    want = reference["generated_ids"]
    m = dsnpu.Model(CHECKPOINT, backend="npu", max_tokens=64, max_prefill_tokens=2)
    np.testing.assert_array_equal(m.generate(prompt, max_new_tokens=len(want)), want)
    np.testing.assert_allclose(m.forward(prompt), models["npu"].forward(prompt), atol=1e-5, rtol=1e-5)


def test_bad_model_inputs_raise(models):
    with pytest.raises(ValueError):
        models["npu"].generate([], max_new_tokens=2)
    with pytest.raises(ValueError):
        models["cpu"].generate([10**6], max_new_tokens=2)
    with pytest.raises(ValueError):
        models["npu"].generate([1, 2], max_new_tokens=100)  # beyond max_tokens=64
    for backend in ("cpu", "npu"):
        # No tokens asked for: the prompt and the options are still checked (the npu backend
        # returned [] for anything).
        with pytest.raises(ValueError, match="outside the vocabulary"):
            models[backend].generate([1, models[backend].vocab_size], max_new_tokens=0)
        with pytest.raises(ValueError, match="temperature"):
            models[backend].generate([1], max_new_tokens=0, temperature=float("nan"))
        assert list(models[backend].generate([1, 2], max_new_tokens=0)) == []
        with pytest.raises(TypeError, match="integers"):
            models[backend].generate([1.5], max_new_tokens=2)
        with pytest.raises(ValueError, match="max_new_tokens"):
            models[backend].generate([1], max_new_tokens=-1)
        with pytest.raises(ValueError, match="seed"):
            models[backend].generate([1], max_new_tokens=1, seed=-1)
    with pytest.raises(ValueError):
        dsnpu.Model(CHECKPOINT, backend="tpu")
    with pytest.raises(ValueError, match="max_tokens"):
        dsnpu.Model(CHECKPOINT, backend="cpu", max_tokens=-1)
    # A cache larger than the device is device memory running out (it was a ValueError).
    with pytest.raises(dsnpu.OutOfMemoryError, match="paged cache of 1073741824 slots") as cache:
        dsnpu.Model(CHECKPOINT, max_tokens=2**30)
    assert isinstance(cache.value, RuntimeError)
    with pytest.raises(ValueError):
        dsnpu.Model(CHECKPOINT.parent / "no-such-checkpoint", backend="cpu")


def np_cache_write(latent, rope, kv, w, pos, slots, eps, interleaved, theta=10000.0):
    """The fused cache write in float64 from the rounded inputs."""
    latent, rope = latent.astype(np.float64).copy(), rope.astype(np.float64).copy()
    blocks, bs, dl = latent.shape
    dr = rope.shape[2]
    latent, rope = latent.reshape(blocks * bs, dl), rope.reshape(blocks * bs, dr)
    kvf = kv.astype(np.float32).astype(np.float64)
    x, k = kvf[:, :dl], kvf[:, dl:]
    normed = x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + eps) * w.astype(np.float32).astype(np.float64)
    inv = theta ** (-np.arange(0, dr, 2, dtype=np.float64) / dr)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = (k[:, 0::2], k[:, 1::2]) if interleaved else (k[:, : dr // 2], k[:, dr // 2 :])
    ra, rb = a * cos - b * sin, b * cos + a * sin
    roped = np.empty_like(k)
    if interleaved:
        roped[:, 0::2], roped[:, 1::2] = ra, rb
    else:
        roped[:, : dr // 2], roped[:, dr // 2 :] = ra, rb
    for t, s in enumerate(slots):
        if s >= 0:
            latent[s], rope[s] = normed[t], roped[t]
    return latent.reshape(blocks, bs, dl), rope.reshape(blocks, bs, dr)


TOL = {"f32": (1e-4, 1e-4), "bf16": (1 / 64, 2 / 128)}
NP = {"f32": np.float32, "bf16": BF16}


@pytest.mark.parametrize("backend", ["npu", "cpu"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("interleaved", [True, False])
def test_mla_cache_write(backend, dtype, interleaved):
    rng = np.random.default_rng(7)
    t, dl, dr, blocks, bs = 5, 512, 64, 3, 16
    kv = rng.uniform(-2, 2, (t, dl + dr)).astype(NP[dtype])
    w = rng.uniform(0.5, 1.5, dl).astype(NP[dtype])
    latent = rng.uniform(-1, 1, (blocks, bs, dl)).astype(NP[dtype])
    rope = rng.uniform(-1, 1, (blocks, bs, dr)).astype(NP[dtype])
    pos = np.array([0, 9, 300, 17, 1023], dtype=np.int32)
    slots = np.array([3, 47, -1, 16, 0], dtype=np.int32)  # one token skipped, slots across blocks
    got_l, got_r = dsnpu.mla_cache_write(
        latent, rope, kv, w, pos, slots, eps=1e-6, max_positions=1024, interleaved=interleaved, backend=backend
    )
    want_l, want_r = np_cache_write(latent, rope, kv, w, pos, slots, 1e-6, interleaved)
    assert got_l.dtype == NP[dtype] and got_l.shape == latent.shape and got_r.shape == rope.shape
    atol, rtol = TOL[dtype]
    # Rows not written keep their values exactly.
    untouched = np.ones(blocks * bs, dtype=bool)
    untouched[[3, 47, 16, 0]] = False
    np.testing.assert_array_equal(got_l.reshape(-1, dl)[untouched], latent.reshape(-1, dl)[untouched])
    np.testing.assert_array_equal(got_r.reshape(-1, dr)[untouched], rope.reshape(-1, dr)[untouched])
    np.testing.assert_allclose(got_l.astype(np.float64), want_l, atol=atol, rtol=rtol)
    # Angles up to 1023 rad: the f32 table allows f32 rounding of the angle.
    np.testing.assert_allclose(got_r.astype(np.float64), want_r, atol=atol + 1e-4 * 4, rtol=rtol)


@pytest.mark.parametrize("backend", ["cpu", "npu"])
def test_mla_cache_write_keeps_the_last_row_of_a_repeated_slot(backend):
    rng = np.random.default_rng(11)
    latent, rope = np.zeros((2, 16, 512), np.float32), np.zeros((2, 16, 64), np.float32)
    kv, w = rng.uniform(-2, 2, (2, 576)).astype(np.float32), np.ones(512, np.float32)
    got_l, got_r = dsnpu.mla_cache_write(
        latent, rope, kv, w, [0, 1], [5, 5], eps=1e-6, interleaved=False, backend=backend
    )
    # Rows are written in token order: slot 5 holds token 1's row, as if token 0 were skipped.
    want_l, want_r = np_cache_write(latent, rope, kv, w, np.array([0, 1]), np.array([-1, 5]), 1e-6, False)
    atol, rtol = TOL["f32"]
    np.testing.assert_allclose(got_l.astype(np.float64), want_l, atol=atol, rtol=rtol)
    np.testing.assert_allclose(got_r.astype(np.float64), want_r, atol=atol, rtol=rtol)


def test_mla_cache_write_rejects_bad_widths_and_slots():
    latent, rope = np.zeros((2, 16, 512), np.float32), np.zeros((2, 16, 64), np.float32)
    kv, w = np.ones((2, 576), np.float32), np.ones(512, np.float32)
    with pytest.raises(ValueError):
        dsnpu.mla_cache_write(latent, rope, kv[:, :500], w, [0, 1], [5, 6], backend="npu")
    with pytest.raises(ValueError):
        dsnpu.mla_cache_write(latent, rope, kv, w, [0, 1], [5, 32], backend="npu")  # slot past the cache
