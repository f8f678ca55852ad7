"""dsnpu's operators from Python, each checked against a numpy implementation written here.

Runs on both backends: "npu" (dsnpu's kernels on device 0: the simulator in CI) and "cpu" (the
references). Inputs are rounded to the dtype first and the numpy side computes in float64 from the
rounded values; tolerances are the conformance harness's per-dtype bounds (ops/src/conformance/
tolerance.rs): |got - want| <= atol + rtol |want|.
"""

import numpy as np
import pytest

import dsnpu

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

TOL = {
    "f32": (1 / 65536, 1 / 65536),
    "f16": (1 / 1024, 2 / 1024),
    "bf16": (1 / 128, 2 / 128),
}
NP = {"f32": np.float32, "f16": np.float16, "bf16": BF16}
BACKENDS = ["npu", "cpu"]
DTYPES = ["f32", "f16", "bf16"]


def rnd(rng, shape, dtype, lo=-1.0, hi=1.0):
    """Values uniform in [lo, hi) rounded to dtype."""
    return rng.uniform(lo, hi, size=shape).astype(np.float32).astype(NP[dtype])


def f64(a):
    return np.asarray(a).astype(np.float32).astype(np.float64)


def close(got, want, dtype, widen=1.0):
    atol, rtol = TOL[dtype]
    got, want = f64(got), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    bad = np.abs(got - want) > widen * (atol + rtol * np.abs(want))
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ; worst {np.max(np.abs(got - want))}"


def silu(g):
    return g / (1.0 + np.exp(-g))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_the_npu_backend_is_a_device():
    name = dsnpu.backend_name("npu")
    assert name.startswith("sim:") or name.startswith("npu:")
    assert dsnpu.backend_name("cpu") == "cpu"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 33), (3, 7000)])
def test_rms_norm(backend, dtype, shape):
    rng = np.random.default_rng(1)
    x, w = rnd(rng, shape, dtype, -2, 2), rnd(rng, shape[1], dtype, 0.5, 1.5)
    want = f64(x) / np.sqrt(np.mean(f64(x) ** 2, axis=1, keepdims=True) + 1e-6) * f64(w)
    got = dsnpu.rms_norm(x, w, 1e-6, backend=backend)
    assert got.dtype == NP[dtype]
    close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rms_norm(backend, dtype):
    rng = np.random.default_rng(2)
    x, r, w = rnd(rng, (4, 40), dtype), rnd(rng, (4, 40), dtype), rnd(rng, 40, dtype, 0.5, 1.5)
    s = (f64(x) + f64(r)).astype(np.float32).astype(NP[dtype])
    want_y = f64(s) / np.sqrt(np.mean(f64(s) ** 2, axis=1, keepdims=True) + 1e-6) * f64(w)
    y, got_s = dsnpu.add_rms_norm(x, r, w, 1e-6, backend=backend)
    close(got_s, f64(s), dtype)
    close(y, want_y, dtype)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_rope(backend, dtype, interleaved):
    rng = np.random.default_rng(3)
    t, h, d = 5, 3, 64
    x = rnd(rng, (t, h, d), dtype, -2, 2)
    pos = np.array([0, 7, 100, 4095, 12], dtype=np.int32)
    inv = 10000.0 ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    xf = f64(x)
    a, b = (xf[..., 0::2], xf[..., 1::2]) if interleaved else (xf[..., : d // 2], xf[..., d // 2 :])
    ra, rb = a * cos - b * sin, b * cos + a * sin
    want = np.empty_like(xf)
    if interleaved:
        want[..., 0::2], want[..., 1::2] = ra, rb
    else:
        want[..., : d // 2], want[..., d // 2 :] = ra, rb
    got = dsnpu.rope(x, pos, 10000.0, 4096, interleaved=interleaved, backend=backend)
    # The table is built in f32 (angles up to 4095 rad): allow f32 rounding of the angle.
    close(got, want, dtype, widen=4.0 if dtype == "f32" else 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul(backend, dtype):
    rng = np.random.default_rng(4)
    gu = rnd(rng, (6, 2 * 33), dtype, -12, 12)
    g, u = f64(gu)[:, :33], f64(gu)[:, 33:]
    close(dsnpu.silu_mul(gu, backend=backend), silu(g) * u, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkn", [(1, 7, 3), (5, 33, 17), (3, 700, 5)])
def test_linear(backend, dtype, mkn):
    m, k, n = mkn
    rng = np.random.default_rng(5)
    s = np.sqrt(3.0 / k)
    x, w, bias = rnd(rng, (m, k), dtype), rnd(rng, (n, k), dtype, -s, s), rnd(rng, n, dtype)
    close(dsnpu.linear(x, w, backend=backend), f64(x) @ f64(w).T, dtype)
    close(dsnpu.linear(x, w, bias, backend=backend), f64(x) @ f64(w).T + f64(bias), dtype)


def test_gating_softmax_topk(backend):
    rng = np.random.default_rng(6)
    t, e, k = 9, 16, 4
    # Distinct, well-separated logits so the choice does not hinge on rounding.
    logits = np.stack([rng.permutation(e) * 0.25 for _ in range(t)]).astype(np.float32)
    ids, w = dsnpu.moe_gating_topk(logits, k, score="softmax", normalize=True, backend=backend)
    want_ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, want_ids)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    chosen = np.take_along_axis(p, want_ids, axis=1)
    close(w, chosen / chosen.sum(axis=1, keepdims=True), "f32")


def test_gating_deepseek_groups_with_bias(backend):
    rng = np.random.default_rng(7)
    t, e, k, groups, keep, scale = 4, 64, 8, 8, 4, 2.5
    logits = np.stack([rng.permutation(e) * 0.05 - 1.6 for _ in range(t)]).astype(np.float32)
    bias = (rng.permutation(e) * 0.001).astype(np.float32)
    ids, w = dsnpu.moe_gating_topk(logits, k, bias, groups, keep, "sigmoid", True, scale, backend=backend)
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    sel = s + bias
    for ti in range(t):
        gs = sel[ti].reshape(groups, -1)
        gscore = np.sort(gs, axis=1)[:, -2:].sum(axis=1)
        kept = np.argsort(-gscore, kind="stable")[:keep]
        mask = np.full(e, -np.inf)
        for g in kept:
            mask[g * (e // groups) : (g + 1) * (e // groups)] = 0
        want = np.argsort(-(sel[ti] + mask), kind="stable")[:k]
        np.testing.assert_array_equal(ids[ti], want)
        ww = s[ti, want]
        close(w[ti], ww / ww.sum() * scale, "f32")


def dispatch_reference(x, ids, e):
    pairs = ids.reshape(-1)
    order = np.argsort(pairs, kind="stable")
    row_idx = np.empty_like(order)
    row_idx[order] = np.arange(len(order))
    k = ids.shape[1]
    return x[order // k], row_idx.astype(np.int32), np.bincount(pairs, minlength=e).astype(np.int64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_init_routing(backend, dtype):
    rng = np.random.default_rng(8)
    t, h, k, e = 7, 33, 3, 8
    x = rnd(rng, (t, h), dtype)
    ids = np.stack([rng.choice(e, size=k, replace=False) for _ in range(t)]).astype(np.int32)
    want_x, want_idx, want_counts = dispatch_reference(x, ids, e)
    ex, idx, counts = dsnpu.moe_init_routing(x, ids, e, backend=backend)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_array_equal(f64(ex), f64(want_x))
    _, _, cums = dsnpu.moe_init_routing(x, ids, e, cumsum=True, backend=backend)
    np.testing.assert_array_equal(cums, np.cumsum(want_counts))


def test_init_routing_quant(backend):
    rng = np.random.default_rng(9)
    t, h, k, e = 5, 40, 2, 4
    x = rnd(rng, (t, h), "f32", -3, 3)
    ids = np.stack([rng.choice(e, size=k, replace=False) for _ in range(t)]).astype(np.int32)
    want_x, want_idx, _ = dispatch_reference(x, ids, e)
    q, scales, idx, _ = dsnpu.moe_init_routing_quant(x, ids, e, backend=backend)
    np.testing.assert_array_equal(idx, want_idx)
    want_scales = np.abs(want_x).max(axis=1) / 127
    close(scales, want_scales, "f32")
    assert q.dtype == np.int8
    assert np.all(np.abs(q.astype(np.float64) - want_x / want_scales[:, None]) <= 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_matmul(backend, dtype):
    rng = np.random.default_rng(10)
    counts = np.array([3, 0, 5, 1], dtype=np.int64)
    rows, n, kk = int(counts.sum()), 17, 33
    x, w = rnd(rng, (rows, kk), dtype), rnd(rng, (4, n, kk), dtype, -0.3, 0.3)
    want = np.concatenate([f64(x[a:b]) @ f64(w[g]).T for g, (a, b) in enumerate(zip(np.r_[0, np.cumsum(counts)[:-1]], np.cumsum(counts)))])
    close(dsnpu.grouped_matmul(x, w, counts, backend=backend), want, dtype)
    close(dsnpu.grouped_matmul(x, w, np.cumsum(counts), cumsum=True, backend=backend), want, dtype)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_expert_ffn(backend, dtype):
    rng = np.random.default_rng(11)
    counts = np.array([2, 3], dtype=np.int64)
    hid, inter = 32, 16
    x = rnd(rng, (5, hid), dtype)
    wg, wu = rnd(rng, (2, inter, hid), dtype, -0.3, 0.3), rnd(rng, (2, inter, hid), dtype, -0.3, 0.3)
    wd = rnd(rng, (2, hid, inter), dtype, -0.4, 0.4)
    want = []
    for g, (a, b) in enumerate([(0, 2), (2, 5)]):
        hh = silu(f64(x[a:b]) @ f64(wg[g]).T) * (f64(x[a:b]) @ f64(wu[g]).T)
        hh = hh.astype(np.float32).astype(NP[dtype])  # the kernel rounds h once to the dtype
        want.append(f64(hh) @ f64(wd[g]).T)
    # Two chained products: the harness's factor 2.
    close(dsnpu.expert_ffn(x, wg, wu, wd, counts, backend=backend), np.concatenate(want), dtype, widen=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finalize_routing(backend, dtype):
    rng = np.random.default_rng(12)
    t, k, h, rows = 4, 2, 24, 6
    y = rnd(rng, (rows, h), dtype)
    idx = np.array([0, 5, -1, 2, 3, 1, 4, -1], dtype=np.int32)
    w = rng.uniform(0, 1, size=(t, k)).astype(np.float32)
    shared, res = rnd(rng, (t, h), dtype), rnd(rng, (t, h), dtype)
    want = np.zeros((t, h))
    for ti in range(t):
        for ki in range(k):
            r = idx[ti * k + ki]
            if r >= 0:
                want[ti] += w[ti, ki] * f64(y[r])
    close(dsnpu.moe_finalize_routing(y, idx, w, backend=backend), want, dtype)
    close(dsnpu.moe_finalize_routing(y, idx, w, shared, res, backend=backend), want + f64(shared) + f64(res), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mla_decode(backend, dtype):
    rng = np.random.default_rng(13)
    b, s, h, dl, dr, bs, nb, mb = 2, 1, 4, 64, 16, 16, 6, 3
    lens = np.array([40, 1], dtype=np.int32)
    table = np.array([[5, 0, 2], [3, 1, 4]], dtype=np.int32)
    qn, qr = rnd(rng, (b, s, h, dl), dtype), rnd(rng, (b, s, h, dr), dtype)
    lat, rp = rnd(rng, (nb, bs, dl), dtype), rnd(rng, (nb, bs, dr), dtype)
    scale = 1 / np.sqrt(dl + dr)
    want_out = np.zeros((b, s, h, dl))
    want_lse = np.zeros((b, h, s))
    for bi in range(b):
        slots = [(table[bi, j // bs], j % bs) for j in range(lens[bi])]
        kl = np.stack([f64(lat[blk, r]) for blk, r in slots])
        kr = np.stack([f64(rp[blk, r]) for blk, r in slots])
        for hi in range(h):
            sc = scale * (kl @ f64(qn[bi, 0, hi]) + kr @ f64(qr[bi, 0, hi]))
            m = sc.max()
            p = np.exp(sc - m)
            want_out[bi, 0, hi] = (p / p.sum()) @ kl
            want_lse[bi, hi, 0] = m + np.log(p.sum())
    out, lse = dsnpu.mla_decode(qn, qr, lat, rp, table, lens, scale, backend=backend)
    close(out, want_out, dtype)
    close(lse, want_lse, dtype)


def prefill_reference(q, k, v, cu, scale):
    """Causal attention per packed sequence in float64: (out [T, H, Dv], lse [H, T])."""
    t, h, _ = q.shape
    out, lse = np.zeros((t, h, v.shape[2])), np.zeros((h, t))
    for start, end in zip(cu[:-1], cu[1:]):
        for i in range(start, end):
            for hi in range(h):
                sc = scale * (f64(k[start : i + 1, hi]) @ f64(q[i, hi]))
                m = sc.max()
                p = np.exp(sc - m)
                out[i, hi] = (p / p.sum()) @ f64(v[start : i + 1, hi])
                lse[hi, i] = m + np.log(p.sum())
    return out, lse


@pytest.mark.parametrize("dtype", DTYPES)
def test_mla_prefill(backend, dtype):
    rng = np.random.default_rng(15)
    # Three sequences of 3, 0 and 5 tokens (an empty one in the middle), DeepSeek's widths.
    cu = np.array([0, 3, 3, 8], dtype=np.int32)
    t, h, dqk, dv = 8, 2, 192, 128
    q, k, v = rnd(rng, (t, h, dqk), dtype), rnd(rng, (t, h, dqk), dtype), rnd(rng, (t, h, dv), dtype)
    scale = 1 / np.sqrt(dqk)
    want_out, want_lse = prefill_reference(q, k, v, cu, scale)
    out, lse = dsnpu.mla_prefill(q, k, v, cu, scale, backend=backend)
    assert out.dtype == NP[dtype] and lse.dtype == np.float32
    close(out, want_out, dtype)
    close(lse, want_lse, dtype)
    # Causality: the last token of a sequence does not change the earlier tokens' outputs.
    v2 = v.copy()
    v2[7] = rnd(rng, (h, dv), dtype)
    out2, _ = dsnpu.mla_prefill(q, k, v2, cu, scale, backend=backend)
    np.testing.assert_array_equal(f64(out2[:7]), f64(out[:7]))
    assert not np.array_equal(f64(out2[7]), f64(out[7]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mla_prefill_cached(backend, dtype):
    rng = np.random.default_rng(16)
    h, dn, dr, dv, dl, bs, nb = 2, 16, 16, 16, 32, 16, 4
    # Sequence 0: 20 cached tokens then 3 new (blocks 2, 0); sequence 1: 5 new tokens, no prefix (block 3).
    lens, new = np.array([23, 5], dtype=np.int32), [3, 5]
    table = np.array([[2, 0], [3, 1]], dtype=np.int32)
    cu_q = np.array([0, 3, 8], dtype=np.int32)
    q = rnd(rng, (8, h, dn + dr), dtype)
    lat, rp = rnd(rng, (nb, bs, dl), dtype), rnd(rng, (nb, bs, dr), dtype)
    kv_b = rnd(rng, (h * (dn + dv), dl), dtype, -0.3, 0.3)
    scale = 1 / np.sqrt(dn + dr)
    want_out, want_lse = np.zeros((8, h, dv)), np.zeros((h, 8))
    w = f64(kv_b).reshape(h, dn + dv, dl)
    for b in range(2):
        rows = [(table[b, p // bs], p % bs) for p in range(lens[b])]
        c = np.stack([f64(lat[blk, r]) for blk, r in rows])  # [L, Dl]
        r_ = np.stack([f64(rp[blk, r]) for blk, r in rows])  # [L, Dr]
        for hi in range(h):
            # The expanded keys and values, rounded to the dtype as the device's up-projection stores them.
            k_nope = f64((c @ w[hi, :dn].T).astype(np.float32).astype(NP[dtype]))
            v = f64((c @ w[hi, dn:].T).astype(np.float32).astype(NP[dtype]))
            k = np.concatenate([k_nope, r_], axis=1)
            for i in range(new[b]):
                t, seen = cu_q[b] + i, lens[b] - new[b] + i + 1
                sc = scale * (k[:seen] @ f64(q[t, hi]))
                m = sc.max()
                p = np.exp(sc - m)
                want_out[t, hi] = (p / p.sum()) @ v[:seen]
                want_lse[hi, t] = m + np.log(p.sum())
    out, lse = dsnpu.mla_prefill_cached(q, cu_q, lat, rp, table, lens, kv_b, scale, backend=backend)
    # widen: the reference rounds f64 sums to the dtype, the device its f32 sums (one ulp apart at most).
    close(out, want_out, dtype, widen=2.0)
    close(lse, want_lse, dtype, widen=2.0)
    # The prefix matters: without it (sequence 0 of 3 tokens only) the first outputs change.
    out0, _ = dsnpu.mla_prefill_cached(
        q[:3], cu_q[:2], lat, rp, table[:1], np.array([3], np.int32), kv_b, scale, backend=backend
    )
    assert not np.allclose(f64(out0), f64(out[:3]))


def test_mla_prefill_bad_input(backend):
    q = np.zeros((4, 2, 16), dtype=np.float32)
    v = np.zeros((4, 2, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="cu_seqlens"):
        dsnpu.mla_prefill(q, q, v, [0, 3], 0.25, backend=backend)  # ends before T
    with pytest.raises(ValueError, match="mla_prefill"):
        dsnpu.mla_prefill(q, q[:, :1], v, [0, 4], 0.25, backend=backend)  # k has one head


def test_bf16_as_uint16_bit_patterns(backend):
    rng = np.random.default_rng(14)
    x, w = rnd(rng, (3, 16), "bf16"), rnd(rng, 16, "bf16", 0.5, 1.5)
    a = dsnpu.rms_norm(x, w, backend=backend)
    b = dsnpu.rms_norm(x.view(np.uint16), w.view(np.uint16), backend=backend, dtype="bf16")
    np.testing.assert_array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16))


def test_bad_input_raises_value_error(backend):
    x = np.zeros((2, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="rms_norm"):
        dsnpu.rms_norm(x, np.ones(7, dtype=np.float32), backend=backend)
    with pytest.raises(ValueError, match="dtype"):
        dsnpu.rms_norm(x, np.ones(8, dtype=np.float16), backend=backend)
    with pytest.raises(ValueError, match="unsupported dtype"):
        dsnpu.silu_mul(np.zeros((2, 4), dtype=np.float64), backend=backend)
    with pytest.raises(ValueError, match="backend"):
        dsnpu.silu_mul(x, backend="gpu")
    # A wire triple whose shape's size wraps usize: a panic (PanicException) before it was checked.
    with pytest.raises(ValueError, match="overflows the address space"):
        dsnpu._dsnpu.rms_norm((b"", [2**62, 8], "f32"), (b"", [8], "f32"), 1e-6, backend)


def test_case_generators_are_the_suites():
    a = dsnpu.cases.uniform(7, (3, 4), -1.0, 1.0)
    assert a.dtype == np.float32 and a.shape == (3, 4)
    np.testing.assert_array_equal(a, dsnpu.cases.uniform(7, (3, 4), -1.0, 1.0))
    assert not np.array_equal(a, dsnpu.cases.uniform(8, (3, 4), -1.0, 1.0))
    assert np.all((a >= -1) & (a < 1))
    assert (1, 1) in dsnpu.cases.row_shapes() and (1, 7000) in dsnpu.cases.row_shapes()
    assert (3, 7000, 5) in dsnpu.cases.matmul_shapes()
    b = dsnpu.cases.uniform(7, (3, 4), -1.0, 1.0, dtype="bf16")
    np.testing.assert_array_equal(f64(b), f64(a.astype(BF16)))


def test_case_generator_shapes_past_memory_raise():
    # Were a PanicException (ndarray's shape overflow; a capacity overflow) and, for a shape that fits
    # the address space but not memory, an abort of the interpreter (allocation failure).
    with pytest.raises(ValueError, match=r"uniform: shape \[1099511627776, 1099511627776\] of f32 overflows"):
        dsnpu.cases.uniform(0, (2**40, 2**40))
    with pytest.raises(ValueError, match="overflows the address space"):
        dsnpu.cases.uniform(0, (2**62,), dtype="bf16")
    with pytest.raises(MemoryError, match="uniform: 562949953421312 bytes"):
        dsnpu.cases.uniform(0, (2**47,))
    with pytest.raises(ValueError, match="dtype f64"):
        dsnpu.cases.uniform(0, (2**62,), dtype="f64")
    assert dsnpu.cases.uniform(0, (0, 3)).shape == (0, 3)


def test_operator_counts_outside_their_range_name_the_argument(backend):
    # The extension's integer conversions answered these with an OverflowError ("can't convert
    # negative int to unsigned") or a bare TypeError that named no argument.
    logits = np.zeros((2, 8), dtype=np.float32)
    for kwargs, name in [
        (dict(top_k=-1), "top_k"),
        (dict(top_k=2**64), "top_k"),
        (dict(top_k=2, n_group=-1), "n_group"),
        (dict(top_k=2, topk_group=-2), "topk_group"),
    ]:
        with pytest.raises(ValueError, match=name):
            dsnpu.moe_gating_topk(logits, backend=backend, **kwargs)
    with pytest.raises(TypeError, match="top_k"):
        dsnpu.moe_gating_topk(logits, 1.5, backend=backend)
    x, ids = np.zeros((2, 8), dtype=np.float32), np.zeros((2, 2), dtype=np.int32)
    for route in (dsnpu.moe_init_routing, dsnpu.moe_init_routing_quant):
        with pytest.raises(ValueError, match="num_experts"):
            route(x, ids, -4, backend=backend)
        with pytest.raises(ValueError, match=r"active\[0\]"):
            route(x, ids, 4, active=(-1, 2), backend=backend)
        with pytest.raises(ValueError, match="active"):
            route(x, ids, 4, active=(0, 1, 2), backend=backend)
    q = np.zeros((1, 1, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="max_positions"):
        dsnpu.rope(q, [0], max_positions=-1, backend=backend)
    # A negative position is reported as the position it is, not as a max_positions never passed.
    with pytest.raises(ValueError, match="`positions` holds index -3"):
        dsnpu.rope(q, [-3], backend=backend)
    lat, rp = np.zeros((2, 4, 16), dtype=np.float32), np.zeros((2, 4, 8), dtype=np.float32)
    kv, nw = np.zeros((1, 24), dtype=np.float32), np.ones(16, dtype=np.float32)
    with pytest.raises(ValueError, match="max_positions"):
        dsnpu.mla_cache_write(lat, rp, kv, nw, [0], [0], max_positions=-1, backend=backend)
    with pytest.raises(ValueError, match="`positions` holds index -2"):
        dsnpu.mla_cache_write(lat, rp, kv, nw, [-2], [0], backend=backend)
    with pytest.raises(ValueError, match="seed"):
        dsnpu.cases.uniform(-1, (2,))
    with pytest.raises(ValueError, match=r"shape\[1\]"):
        dsnpu.cases.uniform(0, (2, -1))


def test_non_native_byte_order_is_the_same_dtype(backend):
    # A big-endian float32 array is float32: it was refused as "unsupported dtype >f4" (the lookup
    # compared byte orders too, before the conversion to little-endian that follows it).
    rng = np.random.default_rng(21)
    x, w = rnd(rng, (3, 16), "f32"), rnd(rng, 16, "f32", 0.5, 1.5)
    want = dsnpu.rms_norm(x, w, backend=backend)
    np.testing.assert_array_equal(dsnpu.rms_norm(x.astype(">f4"), w.astype(">f4"), backend=backend), want)
    h = x.astype(np.float16)
    np.testing.assert_array_equal(
        dsnpu.silu_mul(h.astype(">f2"), backend=backend), dsnpu.silu_mul(h, backend=backend)
    )
    bits = x.astype(BF16).view(np.uint16)
    np.testing.assert_array_equal(
        f64(dsnpu.rms_norm(bits.astype(">u2"), w.astype(BF16).view(np.uint16), backend=backend, dtype="bf16")),
        f64(dsnpu.rms_norm(bits, w.astype(BF16).view(np.uint16), backend=backend, dtype="bf16")),
    )
    ids = np.array([[0, 1], [2, 3], [1, 0]], dtype=">i4")
    got = dsnpu.moe_init_routing(x, ids, 4, backend=backend)
    for a, b in zip(got, dsnpu.moe_init_routing(x, ids.astype(np.int32), 4, backend=backend)):
        np.testing.assert_array_equal(a, b)


def test_a_long_operator_call_releases_the_gil(backend, runs_during):
    # The operators held the GIL while the kernels ran (on the simulator they run on the host): every
    # other Python thread stopped for the whole call.
    x, w = np.ones((128, 2048), dtype=np.float32), np.ones((512, 2048), dtype=np.float32)
    ran, seconds = runs_during(lambda: dsnpu.linear(x, w, backend=backend))
    assert ran >= 2, f"another thread ran {ran} times in the middle of a {seconds:.3f} s call"


def test_index_arguments_are_integers_that_fit(backend):
    # Index arguments were cast with np.asarray(..., dtype=np.int32): floats and booleans truncated into
    # valid-looking indices, and int64 values past int32 wrapped (2**32 + 1 ran as 1), silently.
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    ids = np.array([[0, 1], [2, 3]], dtype=np.int32)
    for bad in (ids + 0.7, ids.astype(bool)):
        with pytest.raises(TypeError, match="ids"):
            dsnpu.moe_init_routing(x, bad, 4, backend=backend)
    with pytest.raises(ValueError, match="ids: 4294967297 does not fit in int32"):
        dsnpu.moe_init_routing(x, ids.astype(np.int64) + np.int64(2**32) + 1, 6, backend=backend)
    q = np.ones((1, 1, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="positions: 4294967297 does not fit in int32"):
        dsnpu.rope(q, np.array([2**32 + 1]), max_positions=4, backend=backend)
    with pytest.raises(TypeError, match="positions"):
        dsnpu.rope(q, [0.5], max_positions=4, backend=backend)
    with pytest.raises(ValueError, match="does not fit in int32"):
        dsnpu.rope(q, [2**70], max_positions=4, backend=backend)
    y = np.ones((4, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="expanded_row_idx"):
        dsnpu.moe_finalize_routing(y, [0.0, 1.0, 2.0, 3.0], np.ones((2, 2)), backend=backend)
    xg, wg = np.ones((4, 8), dtype=np.float32), np.ones((2, 3, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="group_list"):
        dsnpu.grouped_matmul(xg, wg, [2.5, 1.5], backend=backend)
    qp, vp = np.ones((3, 2, 16), dtype=np.float32), np.ones((3, 2, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="cu_seqlens: 4294967299 does not fit in int32"):
        dsnpu.mla_prefill(qp, qp, vp, np.array([0, 2**32 + 3]), 0.1, backend=backend)
    # Integers of any width that fit, and empty lists, still pass.
    a = dsnpu.moe_init_routing(x, ids.astype(np.uint8), 4, backend=backend)
    b = dsnpu.moe_init_routing(x, ids, 4, backend=backend)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert dsnpu.rope(np.ones((0, 1, 8), dtype=np.float32), [], backend=backend).shape == (0, 1, 8)


def test_an_unsupported_dtype_names_the_argument(backend):
    # Was "unsupported dtype float64" alone, whichever of the arguments held it (np.random.rand and
    # lists of Python floats make float64).
    x, w = np.ones((2, 8), dtype=np.float32), np.ones(8, dtype=np.float32)
    with pytest.raises(ValueError, match="weight: unsupported dtype float64, expected float32, float16 or bf"):
        dsnpu.rms_norm(x, w.astype(np.float64), backend=backend)
    with pytest.raises(ValueError, match="residual: unsupported dtype float64"):
        dsnpu.add_rms_norm(x, np.ones((2, 8)), w, backend=backend)
    with pytest.raises(ValueError, match="bias: unsupported dtype float64"):
        dsnpu.linear(x, np.ones((3, 8), dtype=np.float32), bias=[1.0, 2.0, 3.0], backend=backend)


def test_operators_from_several_threads_at_once_give_the_serial_results(backend, in_threads):
    # Without the GIL held during a call, calls from several threads run at once on the shared backend.
    rng = np.random.default_rng(31)
    xs = [rnd(rng, (16, 64), "f32") for _ in range(4)]
    w, g = rnd(rng, (32, 64), "f32"), rnd(rng, 64, "f32", 0.5, 1.5)

    def calls(x):
        return (dsnpu.linear(x, w, backend=backend), dsnpu.rms_norm(x, g, backend=backend))

    want = [calls(x) for x in xs]
    bad = []

    def run(k):
        for i in range(6):
            j = (k + i) % len(xs)
            if not all(np.array_equal(a, b) for a, b in zip(calls(xs[j]), want[j])):
                bad.append((k, i))

    assert in_threads(run, 3) == []
    assert bad == []
