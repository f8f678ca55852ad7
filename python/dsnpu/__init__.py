"""dsnpu's DeepSeek-V3 operators on numpy arrays.

Each operator runs on ``backend="npu"`` (dsnpu's kernels on device 0 of whatever AscendCL loaded: a
CANN install, or dsnpu's simulator, found like the Rust crates find it; operators without a kernel
raise ``ValueError`` naming the backend's ``Unsupported`` reason) or ``backend="cpu"`` (the CPU
reference implementations the conformance suites use as the oracle).

Float tensors are ``float32``, ``float16`` or bfloat16: ``ml_dtypes.bfloat16`` arrays when
``ml_dtypes`` is installed, or ``uint16`` arrays of bf16 bit patterns passed with ``dtype="bf16"``.
Results come back in the inputs' type (bf16 results as ``ml_dtypes.bfloat16`` when available, else
``uint16`` bit patterns). Ids and row indices are ``int32``, token counts and group lists ``int64``
(any integer array whose values fit; floats and booleans raise ``TypeError``).
Invalid inputs raise ``ValueError`` with the operator's message. The device failing while it runs an
operator raises ``RuntimeError``; device memory running out, here or in ``Model`` and ``Engine`` (weights
or a paged cache that do not fit, a step that finds no memory), raises :class:`OutOfMemoryError`, a
``RuntimeError``.
"""

import os

import numpy as np

from . import _dsnpu

try:  # optional: a real bfloat16 numpy dtype
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    ml_dtypes = None
    BFLOAT16 = None

OutOfMemoryError = _dsnpu.OutOfMemoryError

__all__ = [
    "OutOfMemoryError",
    "backend_name",
    "rms_norm",
    "add_rms_norm",
    "rope",
    "silu_mul",
    "linear",
    "moe_gating_topk",
    "moe_init_routing",
    "moe_init_routing_quant",
    "grouped_matmul",
    "expert_ffn",
    "moe_finalize_routing",
    "mla_decode",
    "mla_prefill",
    "mla_prefill_cached",
    "mla_cache_write",
    "Model",
    "Engine",
    "cases",
]

_CODES = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(np.int32): "i32",
    np.dtype(np.int64): "i64",
    np.dtype(np.int8): "i8",
}
_TYPES = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i64": np.int64, "i8": np.int8}


def _wire(a, dtype=None, what=None):
    """A numpy array as the extension's (bytes, shape, dtype) triple; ``what`` names the argument in
    errors."""
    a = np.asarray(a)
    # Looked up in native byte order: a big-endian float32 is float32 (converted to little-endian below).
    native = a.dtype.newbyteorder("=")
    if dtype == "bf16" or (BFLOAT16 is not None and native == BFLOAT16):
        if native not in (np.dtype(np.uint16), BFLOAT16):
            raise ValueError(
                f"{what or 'a tensor'}: bf16 tensors must be ml_dtypes.bfloat16 or uint16 bit patterns, got {a.dtype}"
            )
        bits = np.ascontiguousarray(a).astype(native).view(np.uint16)
        return (bits.astype("<u2").tobytes(), list(a.shape), "bf16")
    code = _CODES.get(native)
    if code is None:
        raise ValueError(
            f"{what or 'a tensor'}: unsupported dtype {a.dtype}, expected float32, float16 or bfloat16"
            " (ml_dtypes.bfloat16, or uint16 bit patterns with dtype='bf16')"
        )
    return (np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes(), list(a.shape), code)


def _require_integers(a, flat, what):
    """Raises ``TypeError`` unless the array ``a`` (``flat``: its elements) holds integers; floats and
    booleans would otherwise be truncated into valid-looking values."""
    if a.dtype == object:  # integers beyond int64 make an object array
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in flat):
            raise TypeError(f"{what} must be integers")
    elif flat.size and a.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got {a.dtype}")


def _token_ids(ids, what="ids"):
    """A prompt (any array-like of integers) as a list of Python ints, refusing what is not one: floats
    and booleans would otherwise be truncated by ``int()`` into valid-looking ids, and ids past int32 would
    fail in the extension without saying which argument held them. More than one dimension is refused
    too: flattened, a batch of prompts would run as one."""
    a = np.asarray(ids)
    if a.ndim > 1:
        raise ValueError(f"{what}: token ids are a 1-D sequence, got shape {a.shape}")
    flat = a.reshape(-1)
    _require_integers(a, flat, f"{what}: token ids")
    out = [int(i) for i in flat]
    for i in out:
        if not -(2**31) <= i < 2**31:
            raise ValueError(f"{what}: token id {i} does not fit in int32")
    return out


def _count(value, what, bits=64):
    """``value`` as a Python int in ``0 .. 2**bits``: the extension's conversions refuse the rest with an
    ``OverflowError`` or ``TypeError`` that does not say which argument held it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    v = int(value)
    if not 0 <= v < 2**bits:
        raise ValueError(f"{what} must be in 0 .. 2**{bits}, got {v}")
    return v


def _index(a, what, dtype=np.int32):
    """An index argument (ids, positions, slots, lengths, offsets, group lists) as an array of ``dtype``,
    refusing what is not one: ``np.asarray(a, dtype=...)`` truncates floats and booleans into
    valid-looking indices and wraps integers past the type (2**32 + 1 as int32 is 1)."""
    a = np.asarray(a)
    flat = a.reshape(-1)
    _require_integers(a, flat, f"{what}: indices")
    if flat.size:
        info = np.iinfo(dtype)
        for v in (flat.min(), flat.max()):
            if not info.min <= int(v) <= info.max:
                raise ValueError(f"{what}: {int(v)} does not fit in {np.dtype(dtype).name}")
    return a.astype(dtype)


def _path(path):
    """A checkpoint directory as the extension takes it: ``str``, ``bytes`` (decoded as the file system
    does, so that any path round-trips) or ``os.PathLike``; anything else a ``TypeError`` (``str()``
    made the directories "None" and "b'/...'")."""
    return os.fsdecode(path)


def _active(active):
    """The active expert range ``(start, end)`` of the init-routing operators as two counts, or None."""
    if active is None:
        return None
    if not isinstance(active, (tuple, list)) or len(active) != 2:
        raise ValueError(f"active must be a (start, end) pair of expert ids, got {active!r}")
    return (_count(active[0], "active[0]"), _count(active[1], "active[1]"))


def _max_positions(max_positions, positions):
    """The rope table's rows: ``max_positions``, or by default enough for the largest position (at least
    one row, so that a negative position is reported as a position)."""
    if max_positions is None:
        return max(int(positions.max()) + 1, 1) if positions.size else 1
    return _count(max_positions, "max_positions")


def _opt(a, dtype=None, what=None):
    return None if a is None else _wire(a, dtype, what)


def _array(t):
    data, shape, code = t
    if code == "bf16":
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint16).reshape(shape)
        return bits.view(BFLOAT16) if BFLOAT16 is not None else bits
    return np.frombuffer(data, dtype=np.dtype(_TYPES[code]).newbyteorder("<")).astype(_TYPES[code]).reshape(shape)


def backend_name(backend="npu"):
    """What the backend calls itself: "cpu", "sim:0" (the simulator) or "npu:0"."""
    return _dsnpu.backend_name(backend)


def rms_norm(x, weight, eps=1e-6, backend="npu", dtype=None):
    """``x [T, H] / sqrt(mean(x**2, -1) + eps) * weight [H]``, in f32, rounded once."""
    return _array(_dsnpu.rms_norm(_wire(x, dtype, "x"), _wire(weight, dtype, "weight"), eps, backend))


def add_rms_norm(x, residual, weight, eps=1e-6, backend="npu", dtype=None):
    """``(rms_norm(s) * weight, s)`` with ``s = x + residual`` rounded to the dtype."""
    y, s = _dsnpu.add_rms_norm(
        _wire(x, dtype, "x"), _wire(residual, dtype, "residual"), _wire(weight, dtype, "weight"), eps, backend
    )
    return _array(y), _array(s)


def rope(x, positions, theta=10000.0, max_positions=None, interleaved=False, backend="npu", dtype=None):
    """Rotary embedding of ``x [T, heads, D]`` at ``positions [T]`` (no YaRN scaling): pairs
    ``(x[2i], x[2i+1])`` when ``interleaved``, else ``(x[i], x[i + D/2])``; frequency
    ``theta ** (-2i / D)``."""
    positions = _index(positions, "positions")
    max_positions = _max_positions(max_positions, positions)
    return _array(_dsnpu.rope(_wire(x, dtype, "x"), _wire(positions), theta, max_positions, interleaved, backend))


def silu_mul(gate_up, backend="npu", dtype=None):
    """``silu(g) * u`` for ``gate_up [T, 2I] = [g | u]``."""
    return _array(_dsnpu.silu_mul(_wire(gate_up, dtype, "gate_up"), backend))


def linear(x, w, bias=None, backend="npu", dtype=None):
    """``x [M, K] @ w[N, K].T (+ bias [N])``."""
    return _array(_dsnpu.linear(_wire(x, dtype, "x"), _wire(w, dtype, "w"), _opt(bias, dtype, "bias"), backend))


def moe_gating_topk(
    logits,
    top_k,
    bias=None,
    n_group=1,
    topk_group=1,
    score="sigmoid",
    normalize=True,
    routed_scaling_factor=1.0,
    backend="npu",
    dtype=None,
):
    """DeepSeek-V3 routing of ``logits [T, E]``: ``(ids int32 [T, top_k], weights float32 [T, top_k])``."""
    b = None if bias is None else _wire(np.asarray(bias, dtype=np.float32))
    ids, w = _dsnpu.moe_gating_topk(
        _wire(logits, dtype, "logits"),
        b,
        _count(top_k, "top_k"),
        _count(n_group, "n_group"),
        _count(topk_group, "topk_group"),
        score,
        normalize,
        routed_scaling_factor,
        backend,
    )
    return _array(ids), _array(w)


def moe_init_routing(x, ids, num_experts, active=None, cumsum=False, backend="npu", dtype=None):
    """Dispatch: ``(expanded_x, expanded_row_idx, expert_tokens)`` (see dsnpu_ops::moe)."""
    ids = _index(ids, "ids")
    experts, active = _count(num_experts, "num_experts"), _active(active)
    r = _dsnpu.moe_init_routing(_wire(x, dtype, "x"), _wire(ids), experts, active, cumsum, backend)
    return tuple(_array(t) for t in r)


def moe_init_routing_quant(x, ids, num_experts, active=None, cumsum=False, backend="npu", dtype=None):
    """Dispatch with int8 rows: ``(codes int8, scales float32, expanded_row_idx, expert_tokens)``."""
    ids = _index(ids, "ids")
    experts, active = _count(num_experts, "num_experts"), _active(active)
    r = _dsnpu.moe_init_routing_quant(_wire(x, dtype, "x"), _wire(ids), experts, active, cumsum, backend)
    return tuple(_array(t) for t in r)


def grouped_matmul(x, w, group_list, cumsum=False, backend="npu", dtype=None):
    """``y[r] = x[r] @ w[g].T`` for the rows of group ``g`` (``group_list`` counts or cumsums)."""
    gl = _index(group_list, "group_list", np.int64)
    return _array(_dsnpu.grouped_matmul(_wire(x, dtype, "x"), _wire(w, dtype, "w"), _wire(gl), cumsum, backend))


def expert_ffn(x, w_gate, w_up, w_down, group_list, cumsum=False, backend="npu", dtype=None):
    """Per group: ``(silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T``."""
    gl = _index(group_list, "group_list", np.int64)
    return _array(
        _dsnpu.expert_ffn(
            _wire(x, dtype, "x"),
            _wire(w_gate, dtype, "w_gate"),
            _wire(w_up, dtype, "w_up"),
            _wire(w_down, dtype, "w_down"),
            _wire(gl),
            cumsum,
            backend,
        )
    )


def moe_finalize_routing(y, expanded_row_idx, weights, shared=None, residual=None, backend="npu", dtype=None):
    """Combine: ``sum_k weights[t,k] * y[idx[t*K+k]] (+ shared) (+ residual)``; index -1 drops a pair."""
    idx = _index(expanded_row_idx, "expanded_row_idx")
    w = np.asarray(weights, dtype=np.float32)
    return _array(
        _dsnpu.moe_finalize_routing(
            _wire(y, dtype, "y"),
            _wire(idx),
            _wire(w),
            _opt(shared, dtype, "shared"),
            _opt(residual, dtype, "residual"),
            backend,
        )
    )


def mla_decode(q_nope, q_rope, latent, rope_cache, block_table, seq_lens, scale, backend="npu", dtype=None):
    """MLA decode over a paged latent cache: ``(out [B,S,H,Dl], lse float32 [B,H,S])``."""
    return tuple(
        _array(t)
        for t in _dsnpu.mla_decode(
            _wire(q_nope, dtype, "q_nope"),
            _wire(q_rope, dtype, "q_rope"),
            _wire(latent, dtype, "latent"),
            _wire(rope_cache, dtype, "rope_cache"),
            _wire(_index(block_table, "block_table")),
            _wire(_index(seq_lens, "seq_lens")),
            scale,
            backend,
        )
    )


def mla_prefill(q, k, v, cu_seqlens, scale, backend="npu", dtype=None):
    """MLA prefill in the expanded form: causal attention over packed variable-length sequences.

    ``q``, ``k`` ``[T, H, Dqk]`` (DeepSeek-V3: 192), ``v`` ``[T, H, Dv]`` (128), ``cu_seqlens`` int32
    ``[B + 1]`` (flash-attention's varlen layout: sequence ``b`` owns tokens ``cu_seqlens[b] ..
    cu_seqlens[b + 1]``; starts at 0, never decreases, ends at ``T``). Token ``t`` attends to the tokens
    of its own sequence up to itself, scores ``scale * q . k`` in float32. Returns ``(out [T, H, Dv],
    lse float32 [H, T])`` with ``lse`` the natural log of the softmax denominator.
    """
    return tuple(
        _array(t)
        for t in _dsnpu.mla_prefill(
            _wire(q, dtype, "q"),
            _wire(k, dtype, "k"),
            _wire(v, dtype, "v"),
            _wire(_index(cu_seqlens, "cu_seqlens")),
            scale,
            backend,
        )
    )


def mla_prefill_cached(q, cu_q, latent, rope_cache, block_table, seq_lens, kv_b, scale, backend="npu", dtype=None):
    """Chunked prefill from the paged latent cache: new tokens attend to their sequence's cached prefix
    and, causally, to each other.

    The cache (``latent [blocks, block_size, Dl]``, ``rope_cache [blocks, block_size, Dr]``) already holds
    every key of sequence ``b`` (its prefix, then its new tokens: the cache write runs first) at positions
    ``0 .. seq_lens[b]``, position ``p`` in row ``p % block_size`` of block ``block_table[b, p //
    block_size]``. Each key is expanded per head with ``kv_b [H * (dn + dv), Dl]`` (kv_b_proj as stored:
    per head ``dn`` key rows, then ``dv`` value rows): ``k = [W_UK c || rope]``, ``v = W_UV c``, rounded
    to the dtype. ``q [Tq, H, dn + Dr]`` with ``cu_q`` int32 ``[B + 1]`` as in :func:`mla_prefill`; query
    ``i`` of a sequence's ``Lq`` sees positions ``<= seq_lens[b] - Lq + i``. Returns ``(out [Tq, H, dv],
    lse float32 [H, Tq])``.
    """
    return tuple(
        _array(t)
        for t in _dsnpu.mla_prefill_cached(
            _wire(q, dtype, "q"),
            _wire(_index(cu_q, "cu_q")),
            _wire(latent, dtype, "latent"),
            _wire(rope_cache, dtype, "rope_cache"),
            _wire(_index(block_table, "block_table")),
            _wire(_index(seq_lens, "seq_lens")),
            _wire(kv_b, dtype, "kv_b"),
            scale,
            backend,
        )
    )


def mla_cache_write(
    latent_cache,
    rope_cache,
    kv,
    norm_weight,
    positions,
    slot_mapping,
    eps=1e-6,
    theta=10000.0,
    max_positions=None,
    interleaved=True,
    backend="npu",
    dtype=None,
):
    """The fused MLA cache write (``kv_a_layernorm`` + rope of ``k_pe`` + paged scatter).

    ``kv [T, Dl + Dr]`` (the ``kv_a_proj_with_mqa`` output), ``norm_weight [Dl]``, ``positions`` and
    ``slot_mapping`` int32 ``[T]`` (slot ``-1`` skips a token; slots must not repeat), caches
    ``latent_cache [blocks, block_size, Dl]`` and ``rope_cache [blocks, block_size, Dr]``. Returns the
    updated ``(latent_cache, rope_cache)`` (new arrays; the inputs are not modified): at row
    ``slot_mapping[t]``, RMSNorm(``eps``) of ``kv[t, :Dl]`` and plain RoPE (base ``theta``, no YaRN;
    ``interleaved`` pairs or half-split) of ``kv[t, Dl:]`` at ``positions[t]``.
    """
    positions = _index(positions, "positions")
    max_positions = _max_positions(max_positions, positions)
    r = _dsnpu.mla_cache_write(
        _wire(latent_cache, dtype, "latent_cache"),
        _wire(rope_cache, dtype, "rope_cache"),
        _wire(kv, dtype, "kv"),
        _wire(norm_weight, dtype, "norm_weight"),
        _wire(positions),
        _wire(_index(slot_mapping, "slot_mapping")),
        eps,
        theta,
        max_positions,
        interleaved,
        backend,
    )
    return tuple(_array(t) for t in r)


class Model:
    """A DeepSeek-V3/V2 checkpoint directory (``config.json`` + safetensors) loaded for inference.

    ``backend="npu"``: the device-resident engine on device 0 (the simulator without CANN), with a
    paged cache of ``max_tokens`` tokens; ``backend="cpu"``: the host model on the CPU references.
    Both compute in float32 and stop after the config's ``eos_token_id`` (included).
    ``prefix_caching=True`` (npu): the engine keeps the full cache blocks of earlier prompts, and a
    prompt that starts with the same tokens shares them instead of prefilling them again.
    ``max_prefill_tokens=N`` (npu): a prompt goes through the model in passes of at most N tokens
    (chunked prefill, ``forward`` too); 0 is one pass. Bad input raises ``ValueError``; device memory
    running out (weights or a cache that do not fit, a step) :class:`OutOfMemoryError`; other device
    failures ``RuntimeError``. A model may be used and freed on any thread; calls from several threads
    run one at a time (the extension object serializes them: a call waits for the one before it).
    """

    def __init__(
        self, path, backend="npu", max_tokens=1024, prefix_caching=False, max_prefill_tokens=0
    ):
        args = (
            _path(path),
            backend,
            _count(max_tokens, "max_tokens"),
            prefix_caching,
            _count(max_prefill_tokens, "max_prefill_tokens"),
        )
        self._model = _dsnpu.Model(*args)

    @property
    def backend(self):
        return self._model.backend

    @property
    def prefix_hit_tokens(self):
        """Prompt tokens whose cache rows were shared from earlier prompts (prefix caching)."""
        return self._model.prefix_hit_tokens

    @property
    def vocab_size(self):
        return self._model.vocab_size

    def generate(self, ids, max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0):
        """Up to ``max_new_tokens`` new token ids (``int32``) after the prompt ``ids``; greedy at 0."""
        args = (
            _token_ids(ids), _count(max_new_tokens, "max_new_tokens"), temperature, top_p, _count(seed, "seed")
        )
        new = self._model.generate(*args)
        return np.asarray(new, dtype=np.int32)

    def forward(self, ids):
        """Logits ``float32 [len(ids), vocab_size]`` of every position of the prompt ``ids``."""
        ids = _token_ids(ids)
        return _array(self._model.forward(ids))


class Engine:
    """The device-resident engine stepped by the caller: the API a serving loop drives.

    Loads a checkpoint onto ``device`` (the simulator without CANN) with a paged cache of
    ``num_blocks * block_size`` tokens shared by its sequences; ``dtype`` is the compute dtype
    (``"f32"`` or ``"bf16"``). Sequences join (``add_sequence``) and leave (``remove_sequence``) between
    steps; ``step()`` returns ``[(id, token), ...]`` for every live sequence, prefilling the new ones.
    With ``temperature > 0`` each sequence samples top-p with its own seed (``seed + id`` unless given).
    ``prefix_caching`` and ``max_prefill_tokens`` are the engine options of ``Model``. Rejected input,
    no live sequence, a sequence outgrowing the cache or an unknown id raise ``ValueError``; device memory
    running out (weights or a cache that do not fit, a step) :class:`OutOfMemoryError`; other device
    failures ``RuntimeError`` (a failed step leaves every sequence as it was). An engine may be used and
    freed on any thread; calls from several threads run one at a time (the extension object serializes
    them: a call waits for the one before it).
    """

    def __init__(
        self,
        path,
        num_blocks=64,
        block_size=16,
        dtype="f32",
        temperature=0.0,
        top_p=1.0,
        seed=0,
        prefix_caching=False,
        max_prefill_tokens=0,
        device=0,
    ):
        args = (
            _path(path),
            _count(num_blocks, "num_blocks"),
            _count(block_size, "block_size"),
            dtype,
            temperature,
            top_p,
            _count(seed, "seed"),
            prefix_caching,
            _count(max_prefill_tokens, "max_prefill_tokens"),
            _count(device, "device", bits=31),
        )
        self._engine = _dsnpu.Engine(*args)

    def add_sequence(self, ids, seed=None):
        """Queues the prompt ``ids`` for the next step; returns its sequence id."""
        args = (_token_ids(ids), None if seed is None else _count(seed, "seed"))
        return self._engine.add_sequence(*args)

    def remove_sequence(self, seq_id):
        """Forgets a sequence and frees its cache blocks."""
        seq_id = _count(seq_id, "seq_id")
        self._engine.remove_sequence(seq_id)

    def step(self):
        """One new token for every live sequence: ``[(id, token), ...]`` in id order."""
        return self._engine.step()

    def generate(self, prompts, max_new_tokens=16, stop=None):
        """Each prompt's new ids (``int32`` arrays), run as one batch on an engine with no live sequence.

        Prompt ``i`` samples with seed ``seed + i``; a sequence stops after a ``stop`` id (included;
        default the config's ``eos_token_id``).
        """
        prompts = [_token_ids(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        stop = None if stop is None else _token_ids(stop, "stop")
        max_new_tokens = _count(max_new_tokens, "max_new_tokens")
        new = self._engine.generate(prompts, max_new_tokens, stop)
        return [np.asarray(ids, dtype=np.int32) for ids in new]

    def forward(self, ids):
        """Logits ``float32 [len(ids), vocab_size]`` of every position of the prompt ``ids``."""
        ids = _token_ids(ids)
        return _array(self._engine.forward(ids))

    @property
    def live(self):
        """The live sequences' ids."""
        return self._engine.live

    @property
    def free_blocks(self):
        """Cache blocks a sequence can still get."""
        return self._engine.free_blocks

    @property
    def vocab_size(self):
        return self._engine.vocab_size

    @property
    def eos_token_ids(self):
        return self._engine.eos_token_ids

    def stats(self):
        """Counters since load (a dict): bytes between host and device, host waits and seconds per
        phase (``load``, ``prefill`` with its ``tokens``, ``decode`` with its ``steps``),
        ``weight_bytes``, ``cache_bytes``, ``prefix_hit_tokens``, ``device_peak_bytes`` and kernel
        launches by operator (``ops``)."""
        return self._engine.stats()


class cases:
    """The conformance suites' case generators."""

    row_shapes = staticmethod(_dsnpu.row_shapes)
    matmul_shapes = staticmethod(_dsnpu.matmul_shapes)
    rope_shapes = staticmethod(_dsnpu.rope_shapes)

    @staticmethod
    def uniform(seed, shape, lo=-1.0, hi=1.0, dtype="f32"):
        """Seeded values uniform in ``[lo, hi)`` (the suites' ChaCha8 stream), rounded to ``dtype``."""
        dims = [_count(d, f"shape[{i}]") for i, d in enumerate(shape)]
        return _array(_dsnpu.uniform(_count(seed, "seed"), dims, lo, hi, dtype))
