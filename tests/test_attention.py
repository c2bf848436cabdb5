"""The prefix attention kernels (:mod:`semcodec.models.attention`) give the exact integers.

Every kernel is compared with int64 arithmetic on random integers within the format's
bounds (|q|, |k| <= 2**20 - 1, |v| <= 2**24 - 1, 0 <= p <= 2**16), their extremes
included: the limbs in both widths, the native kernel (where it is built) in every code
path this CPU runs, with int16 and int32 storage; then on the real default profile, where
decode steps go through the native kernel (or the int8 limbs without it) and a prefill
through float64, against packing's tables.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcodec.models import context_state, load_model
from semcodec.models.attention import (
    LIMB_MAX_ROWS,
    LIMB_MIN_POSITIONS,
    NATIVE_MAX_ROWS,
    P_MAX,
    Float64Prefix,
    Int8Prefix,
    NativePrefix,
    PrefixKernels,
    _MatMulInteger,
    attend,
    native_module,
)
from semcodec.models.exact import QK_LIMIT, V_LIMIT

pytest.importorskip("onnxruntime")

LIMB_WIDTHS = [8, 7]  # 8: kernels that add products exactly (probed); 7: any kernel
NATIVE = native_module()
needs_native = pytest.mark.skipif(NATIVE is None, reason="semcodec.models._prefix is not built (no C compiler)")
PATHS = list(NATIVE.vector_paths()) if NATIVE is not None else []  # every code path this CPU runs


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A prefix (2 layers) and one layer's query rows and weights; some entries at the extremes."""
    seed = draw(st.integers(0, 2**32 - 1))
    t = draw(st.integers(1, 40))
    kv, d, rows = draw(st.integers(1, 3)), draw(st.sampled_from([1, 4, 8, 12, 40, 64])), draw(st.integers(1, 13))
    k_span = draw(st.sampled_from([127, 128, 2**15, QK_LIMIT]))  # limb counts 1, 2, 2 and 3
    q_span = draw(st.sampled_from([127, 2**15, QK_LIMIT]))
    v_span = draw(st.sampled_from([127, 2**16, V_LIMIT]))  # up to 4 limbs
    rng = np.random.default_rng(seed)
    keys = rng.integers(-k_span, k_span + 1, (2, t, kv, d), dtype=np.int32)
    values = rng.integers(-v_span, v_span + 1, (2, t, kv, d), dtype=np.int32)
    q = rng.integers(-q_span, q_span + 1, (kv, rows, d)).astype(np.float64)
    p = rng.integers(0, P_MAX + 1, (kv, rows, t))
    for arr, top in ((keys, k_span), (values, v_span), (q, q_span), (p, P_MAX)):
        flat = arr.reshape(-1)
        pick = rng.random(flat.shape) < 0.2
        flat[pick] = rng.choice([-top, top], size=int(pick.sum())) if arr is not p else top
    return keys, values, q, p


def _exact(keys: np.ndarray, values: np.ndarray, q: np.ndarray, p: np.ndarray, layer: int) -> tuple[np.ndarray, ...]:
    """int64 products: |q.k| < 2**46 and p.v sums < 2**52 cannot overflow."""
    k = keys[layer].astype(np.int64).transpose(1, 2, 0)  # (KV, D, T)
    v = values[layer].astype(np.int64).transpose(1, 0, 2)  # (KV, T, D)
    return q.astype(np.int64) @ k, p.astype(np.int64) @ v


@pytest.mark.parametrize("bits", LIMB_WIDTHS)
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_int8_limbs_are_exact(bits: int, case: tuple[np.ndarray, ...]) -> None:
    keys, values, q, p = case
    kernel = Int8Prefix(keys, values, bits=bits)
    if bits == 8 and _MatMulInteger().bits != 8:
        # The runtime picks 8-bit limbs only where its probe finds the kernel exact (not on
        # AVX2 without VNNI, whose u8 x s8 pairs saturate in int16): 7 bits is what runs here.
        pytest.skip("8-bit limbs saturate in this CPU's onnxruntime kernel; the runtime uses 7")
    for layer in (0, 1):
        scores, sums = _exact(keys, values, q, p, layer)
        got = kernel.scores(layer, q)
        assert got.dtype == np.int64 and np.array_equal(got, scores)
        weighed = kernel.weigh(layer, p)
        assert weighed.dtype == np.float64 and np.array_equal(weighed, sums.astype(np.float64))


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_float64_fallback_is_exact(case: tuple[np.ndarray, ...]) -> None:
    keys, values, q, p = case
    kernel = Float64Prefix(keys, values)
    scores, sums = _exact(keys, values, q, p, 1)
    assert np.array_equal(kernel.scores(1, q), scores)
    assert np.array_equal(kernel.weigh(1, p), sums.astype(np.float64))


@pytest.mark.parametrize("bits", LIMB_WIDTHS)
def test_every_extreme_at_once(bits: int) -> None:
    """All keys, queries, values and weights at their bounds, in every sign pattern."""
    t, kv, d = 33, 2, 64
    keys = np.full((1, t, kv, d), QK_LIMIT, np.int32)
    keys[:, ::2] = -QK_LIMIT
    values = np.full((1, t, kv, d), V_LIMIT, np.int32)
    values[:, 1::3] = -V_LIMIT
    q = np.array([np.full(d, QK_LIMIT), np.full(d, -QK_LIMIT), np.resize([QK_LIMIT, -QK_LIMIT], d)], np.float64)
    q = np.broadcast_to(q, (kv, 3, d)).copy()
    p = np.broadcast_to(np.array([P_MAX, 0, 1]).reshape(1, 3, 1), (kv, 3, t)).copy()
    scores, sums = _exact(keys, values, q, p, 0)
    kernel = Int8Prefix(keys, values, bits=bits)
    assert np.array_equal(kernel.scores(0, q), scores)
    assert np.array_equal(kernel.weigh(0, p), sums.astype(np.float64))


STORAGES = ["pairs", "int16", "int32"]


@needs_native
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_native_is_exact(case: tuple[np.ndarray, ...]) -> None:
    """Every storage (int16 pairs or rows where a layer fits, int32 otherwise or always), every
    code path, through the separate products and through the fused attention."""
    assert NATIVE is not None
    keys, values, q, p = case
    t = keys.shape[1]
    table = np.append(np.arange(P_MAX, P_MAX - 3000, -1), 0)  # descending weights in [0, P_MAX], then 0
    for layer in (0, 1):
        scores, sums = _exact(keys, values, q, p, layer)
        own = np.random.default_rng(layer).integers(-2**46, 2**46, q.shape[:2])
        expected = attend(Float64Prefix(keys, values), layer, q, own, table, 15)
        for storage in STORAGES:
            kernel = NativePrefix(keys, values, storage)
            got = kernel.scores(layer, q)
            assert got.dtype == np.int64 and np.array_equal(got, scores)
            weighed = kernel.weigh(layer, p)
            assert weighed.dtype == np.float64 and np.array_equal(weighed, sums.astype(np.float64))
            keys_, key_fixes, values_, value_fixes = stored = kernel._layer(layer)
            for path in PATHS:
                got = np.empty_like(scores)
                NATIVE.scores(keys_, key_fixes, t, q, got, path)
                assert np.array_equal(got, scores), (storage, path)
                weighed = np.empty(sums.shape)
                NATIVE.weigh(values_, value_fixes, t, p[..., ::-1][..., ::-1], weighed, path)  # strided rows
                assert np.array_equal(weighed, sums.astype(np.float64)), (storage, path)
                num, z, top = np.empty(sums.shape), np.empty(own.shape, np.int64), np.empty(own.shape, np.int64)
                NATIVE.attend(*stored, t, q, own, table, 15, num, z, top, path)
                for a, b in zip((num, z, top), expected, strict=True):
                    assert a.dtype == b.dtype and np.array_equal(a, b), (storage, path)


@needs_native
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows", [1, 3, 4, 12])
def test_native_every_extreme_at_once(path: str, rows: int) -> None:
    """Keys and values of narrow layers at ±(2**15 - 1), of wide ones at ±QK_LIMIT and ±V_LIMIT;
    queries at ±QK_LIMIT and weights at P_MAX: the largest sums the bounds allow."""
    assert NATIVE is not None
    t, kv, d = 37, 3, 64
    keys = np.full((2, t, kv, d), QK_LIMIT, np.int32)
    keys[:, ::2] = -QK_LIMIT
    values = np.full((2, t, kv, d), V_LIMIT, np.int32)
    values[:, 1::3] = -V_LIMIT
    keys[0], values[0] = np.sign(keys[0]) * (2**15 - 1), np.sign(values[0]) * (2**15 - 1)
    q = np.resize(np.array([QK_LIMIT, -QK_LIMIT, QK_LIMIT, QK_LIMIT], np.float64), (kv, rows, d))
    p = np.full((kv, rows, t), P_MAX)
    p[:, ::2, 1::3] = 0
    for storage in STORAGES:
        kernel = NativePrefix(keys, values, storage)
        assert [kernel._layer(i)[0].dtype for i in (0, 1)] == [np.int32 if storage == "int32" else np.int16, np.int32]
        for layer in (0, 1):
            scores, sums = _exact(keys, values, q, p, layer)
            got, weighed = np.empty_like(scores), np.empty(sums.shape)
            k, k_fixes, v, v_fixes = kernel._layer(layer)
            NATIVE.scores(k, k_fixes, t, q, got, path)
            NATIVE.weigh(v, v_fixes, t, p, weighed, path)
            assert np.array_equal(got, scores) and np.array_equal(weighed, sums.astype(np.float64)), storage


@needs_native
def test_native_storage_and_bounds() -> None:
    """int16 exactly where a layer's integers fit, the int32 layer itself (no copy) otherwise;
    arguments of the wrong type or beyond the exact bounds are refused."""
    assert NATIVE is not None
    keys = np.zeros((4, 16, 1, 4), np.int32)  # 64 entries per layer
    keys[1, 0, 0, 0], keys[2, 0, 0, 0], keys[3, :2, 0, 0] = -(2**15 - 1), -(2**15), 2**15
    for storage in ("pairs", "int16"):
        kernel = NativePrefix(keys, keys, storage)
        assert [kernel._layer(i)[0].dtype for i in range(4)] == [np.int16, np.int16, np.int16, np.int32]
        assert [kernel._layer(i)[1].tolist() for i in range(4)] == [[], [], [[0, 0, 0, -1]], []]  # one in 64 at most
        assert np.shares_memory(kernel._layer(3)[0], keys)
    pairs, rows = NativePrefix(keys, keys, "pairs")._layer(0), NativePrefix(keys, keys, "int16")._layer(0)
    assert pairs[0].shape == (1, 1, 2, 16, 2)  # (KV, T/16, D/2, 16, 2)
    assert pairs[2].shape == (1, 8, 4, 2)  # (KV, T/2, D, 2)
    assert rows[0].shape == rows[2].shape == (16, 1, 4)
    assert np.shares_memory(NativePrefix(keys, keys, "int32")._layer(0)[0], keys)
    with pytest.raises(ValueError, match="storage"):
        NativePrefix(keys, keys, "int8")
    keys = keys[:, :8]
    q, out, none = np.zeros((1, 3, 4)), np.zeros((1, 3, 8), np.int64), np.zeros((0, 4), np.int32)
    with pytest.raises(TypeError):
        NATIVE.scores(keys[0].astype(np.float64), none, 8, q, out)
    with pytest.raises(TypeError):
        NATIVE.scores(keys[0], none, 9, q, out)  # the length must match
    with pytest.raises(ValueError):
        NATIVE.scores(keys[0], none, 8, q.astype(np.int64), out)  # q must be float64
    with pytest.raises(ValueError):
        NATIVE.scores(keys[0], none, 8, q, out[:, :2])  # out must match
    with pytest.raises(ValueError):
        NATIVE.scores(keys[0], none, 8, q, out, "sse9")
    with pytest.raises(TypeError):
        NATIVE.weigh(pairs[0], none, 16, np.zeros((1, 3, 16), np.int64), np.zeros((1, 3, 4)))  # keys' layout
    with pytest.raises(ValueError, match="fixes"):
        NATIVE.scores(keys[0], np.array([[8, 0, 0, 1]], np.int32), 8, q, out)  # t = 8 is past the layer
    k, k_fixes, v, v_fixes = NativePrefix(keys, keys, "pairs")._layer(0)
    num, pair = np.zeros((1, 3, 4)), np.zeros((1, 3), np.int64)
    for path in PATHS:
        for bad in (P_MAX + 1, -1):  # a weight beyond P_MAX would break the digits' bounds; none is negative
            with pytest.raises(ValueError, match="table"):
                NATIVE.attend(k, k_fixes, v, v_fixes, 8, q, pair, np.array([bad, 0]), 15, num, pair.copy(),
                              pair.copy(), path)
    wide_rows = np.random.default_rng(0).integers(-(2**15 - 1), 2**15, (1, 50, 3, 64), dtype=np.int32)
    k, k_fixes, v, v_fixes = NativePrefix(wide_rows, wide_rows, "pairs")._layer(0)
    big_q = np.full((3, 3, 64), 2.0**24)  # beyond QK_LIMIT (SPEC §5 step 4): refused, never read (#20 item 9)
    big_p = np.full((3, 3, 50), 2**20)  # beyond P_MAX: refused likewise
    got, weighed = np.empty((3, 3, 50), np.int64), np.empty((3, 3, 64))
    with pytest.raises(ValueError, match="queries"):
        NATIVE.scores(k, k_fixes, 50, big_q, got)
    with pytest.raises(ValueError):
        NATIVE.weigh(v, v_fixes, 50, big_p, weighed)
    edge_q = np.full((3, 3, 64), 2.0**20 - 1)  # the format's largest query: the pair kernels' plain loop, exact
    edge_p = np.full((3, 3, 50), 2**16)  # and its largest weight
    scores, sums = _exact(wide_rows, wide_rows, edge_q, edge_p, 0)
    NATIVE.scores(k, k_fixes, 50, edge_q, got)
    NATIVE.weigh(v, v_fixes, 50, edge_p, weighed)
    assert np.array_equal(got, scores) and np.array_equal(weighed, sums.astype(np.float64))
    long = np.zeros((8192, 1, 4), np.int16)  # T * 2**40 would reach 2**53
    with pytest.raises(ValueError, match="exact bounds"):
        NATIVE.scores(long, none, 8192, q, np.zeros((1, 3, 8192), np.int64))


@needs_native
@pytest.mark.parametrize("seed", range(4))
def test_native_int16_with_a_few_clipped(seed: int) -> None:
    """Layers of small integers with a few entries at the format's bounds: int16 (pairs or rows)
    with those entries' residuals added apart, as exact as int32."""
    assert NATIVE is not None
    rng = np.random.default_rng(seed)
    t, kv, d, rows = int(rng.integers(20, 300)), 3, 64, int(rng.integers(1, 10))
    keys = rng.integers(-(2**15 - 1), 2**15, (1, t, kv, d), dtype=np.int32)
    values = rng.integers(-(2**15 - 1), 2**15, (1, t, kv, d), dtype=np.int32)
    for arr, top in ((keys, QK_LIMIT), (values, V_LIMIT)):
        flat = arr.reshape(-1)
        picks = rng.choice(flat.size, flat.size // 200, replace=False)
        flat[picks] = rng.choice([-top, top, 2**15, -(2**15)], len(picks))
    q = rng.integers(-QK_LIMIT, QK_LIMIT + 1, (kv, rows, d)).astype(np.float64)
    p = rng.integers(0, P_MAX + 1, (kv, rows, t))
    scores, sums = _exact(keys, values, q, p, 0)
    own = rng.integers(-2**46, 2**46, (kv, rows))
    table = np.append(np.arange(P_MAX, 0, -7), 0)
    expected = attend(Float64Prefix(keys, values), 0, q, own, table, 15)
    for storage in ("pairs", "int16"):
        k, k_fixes, v, v_fixes = stored = NativePrefix(keys, values, storage)._layer(0)
        assert k.dtype == v.dtype == np.int16 and len(k_fixes) == len(v_fixes) == keys.size // 200
        for path in PATHS:
            got, weighed = np.empty_like(scores), np.empty(sums.shape)
            NATIVE.scores(k, k_fixes, t, q, got, path)
            NATIVE.weigh(v, v_fixes, t, p, weighed, path)
            assert np.array_equal(got, scores) and np.array_equal(weighed, sums.astype(np.float64)), (storage, path)
            num, z, top = np.empty(sums.shape), np.empty(own.shape, np.int64), np.empty(own.shape, np.int64)
            NATIVE.attend(*stored, t, q, own, table, 15, num, z, top, path)
            assert all(np.array_equal(a, b) for a, b in zip((num, z, top), expected, strict=True)), (storage, path)


@needs_native
def test_native_for_every_step_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row count on a pair path (AVX512-VNNI, AVX-VNNI or AVX2's vpmaddwd; the pair layouts
    by default); without one, up to NATIVE_MAX_ROWS (then float64 BLAS) on int16 rows."""
    assert NATIVE is not None
    rng = np.random.default_rng(5)
    keys = rng.integers(-2**15, 2**15, (1, LIMB_MIN_POSITIONS, 1, 4), dtype=np.int32)
    assert PrefixKernels(keys, keys, "numpy")._native is None  # SEMCODEC_BACKEND=numpy: float64 only
    for paths in (("vnni", "avx512", "avx2pairs", "avx2", "plain"), ("avxvnni", "avx2pairs", "avx2", "plain"),
                  ("avx2pairs", "avx2", "plain"), ("avx2", "plain")):
        monkeypatch.setattr(NATIVE, "vector_paths", lambda paths=paths: paths)
        kernels = PrefixKernels(keys, keys, "int8")
        assert kernels._limbs is None and kernels._kernel(3) is kernels._native is not None
        assert kernels._native._storage == ("int16" if paths[0] == "avx2" else "pairs")
        if paths[0] != "avx2":
            assert all(kernels._kernel(rows) is kernels._native for rows in (NATIVE_MAX_ROWS + 1, 300))
            assert kernels._float._images is None  # never made
        else:
            assert kernels._kernel(NATIVE_MAX_ROWS) is kernels._native
            assert kernels._kernel(NATIVE_MAX_ROWS + 1) is kernels._float


@pytest.fixture
def without_native(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The extension as if it were not built: importing it fails."""
    monkeypatch.setitem(sys.modules, "semcodec.models._prefix", None)  # import raises ImportError
    monkeypatch.delattr(sys.modules["semcodec.models"], "_prefix", raising=False)  # else `from` finds it
    native_module.cache_clear()
    yield
    native_module.cache_clear()


@pytest.mark.usefixtures("without_native")
def test_limbs_only_for_few_rows_over_a_long_prefix() -> None:
    assert native_module() is None
    rng = np.random.default_rng(5)
    long_keys = rng.integers(-2**15, 2**15, (1, LIMB_MIN_POSITIONS, 1, 4), dtype=np.int32)
    kernels = PrefixKernels(long_keys, long_keys, "int8")
    assert kernels._kernel(LIMB_MAX_ROWS) is kernels._limbs is not None
    assert kernels._kernel(LIMB_MAX_ROWS + 1) is kernels._float
    assert PrefixKernels(long_keys, long_keys, "numpy")._limbs is None  # SEMCODEC_BACKEND=numpy: no onnxruntime
    short = long_keys[:, : LIMB_MIN_POSITIONS - 1]
    assert PrefixKernels(short, short, "int8")._limbs is None
    with pytest.raises(ImportError):
        NativePrefix(long_keys, long_keys)


@pytest.mark.parametrize(("backend", "native"), [("int8", True), ("int8", False), ("numpy", True)])
def test_primed_profile_decoding_equals_packing(backend: str, native: bool, request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Profile 3 (921 context positions): one state at a time, two in lockstep and packing's
    prefill give the same tables (all through the native kernel; without it the int8 limbs
    for single steps and float64 otherwise; numpy: float64 only), and the same as float64's."""
    prefix = context_state(3).prefix
    if not native:
        request.getfixturevalue("without_native")
        monkeypatch.setattr(prefix, "_products", {})  # kernels made anew, without the extension
    elif backend != "numpy" and NATIVE is None:
        pytest.skip("semcodec.models._prefix is not built")
    model = load_model(3, backend)
    assert prefix.length >= LIMB_MIN_POSITIONS
    used = prefix.products(model.lm._prefix_backend).name
    assert used == "float64" if backend == "numpy" else used.startswith("native-" if native else "int8-"), used
    texts = ["A cat on a red sofa.", "Two dogs run across a beach."]
    tokens = [model.tokenizer.encode(t) for t in texts]
    packed = [model.tables(t) for t in tokens]
    if backend != "numpy":  # the same tables with float64 BLAS over the prefix
        key = model.lm._prefix_backend
        kept, prefix._products[key] = prefix._products[key], PrefixKernels(prefix.keys, prefix.values, "numpy")
        try:
            assert all(np.array_equal(model.tables(t), want) for t, want in zip(tokens, packed, strict=True))
        finally:
            prefix._products[key] = kept
    for i, toks in enumerate(tokens):
        [state] = model.decoders(1)
        for j, token in enumerate([*toks, model.eos_id]):
            assert np.array_equal(model.next_tables([state])[0], packed[i][j]), (backend, i, j)
            model.step_many([state], [token])
    states = model.decoders(2)
    for j in range(min(map(len, tokens))):
        rows = model.next_tables(states)
        assert np.array_equal(rows[0], packed[0][j]) and np.array_equal(rows[1], packed[1][j]), (backend, j)
        model.step_many(states, [tokens[0][j], tokens[1][j]])


@needs_native
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("storage", ["pairs", "int16", "int32"])
def test_native_entry_points_refuse_arguments_outside_the_bounds(path: str, storage: str) -> None:
    """|q| >= 2**20, NaN, fractions, p outside [0, 2**16], an own maximum beyond a score's bound
    or a shift outside [1, 40] raise ValueError on every path (they used to index the table out of
    bounds: issue 20, item 9); arguments within the bounds still give float64's integers."""
    rng = np.random.default_rng(9)
    keys = rng.integers(-2**15 + 1, 2**15, (1, 40, 2, 64), dtype=np.int32)
    values = rng.integers(-2**15 + 1, 2**15, (1, 40, 2, 64), dtype=np.int32)
    native, plain = NativePrefix(keys, values, storage, path), Float64Prefix(keys, values)
    table = np.append(np.arange(2**16, 0, -16), 0).astype(np.int64)
    q = rng.integers(-QK_LIMIT, QK_LIMIT + 1, (2, 3, 64)).astype(np.float64)
    own = np.zeros((2, 3), np.int64)
    got, want = native.attend(0, q, own, table, 15), attend(plain, 0, q, own, table, 15)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    for bad in (2.0**20, -(2.0**20), 2.0**62, np.nan, np.inf, 0.5):
        wrong = q.copy()
        wrong[1, 2, 5] = bad
        with pytest.raises(ValueError, match="queries"):
            native.attend(0, wrong, own, table, 15)
        with pytest.raises(ValueError, match="queries"):
            native.scores(0, wrong)
    for top in (2**46 + 1, 2**62, np.iinfo(np.int64).max):
        high = own.copy()
        high[0, 1] = top
        with pytest.raises(ValueError, match="own_max"):
            native.attend(0, q, high, table, 15)
    for shift in (0, 41, 63, 64, -1):
        with pytest.raises(ValueError, match="shift"):
            native.attend(0, q, own, table, shift)
    p = rng.integers(0, P_MAX + 1, (2, 3, 40))
    assert np.array_equal(native.weigh(0, p), plain.weigh(0, p))
    for bad_p in (-1, P_MAX + 1, 2**62):
        wrong_p = p.copy()
        wrong_p[0, 0, 7] = bad_p
        with pytest.raises(ValueError, match="weights"):
            native.weigh(0, wrong_p)
