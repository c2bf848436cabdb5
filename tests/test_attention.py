"""The prefix attention kernels (:mod:`semcodec.models.attention`) give the exact integers.

Every kernel is compared with int64 arithmetic on random integers within the format's
bounds (|q|, |k| <= 2**20 - 1, |v| <= 2**24 - 1, 0 <= p <= 2**16), their extremes
included, in both limb widths; then on the real default profile, where single decode
steps go through the int8 limbs and batches through float64, against packing's tables.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcodec.models import context_state, load_model
from semcodec.models.attention import (
    LIMB_MAX_ROWS,
    LIMB_MIN_POSITIONS,
    P_MAX,
    Float64Prefix,
    Int8Prefix,
    PrefixKernels,
)
from semcodec.models.exact import QK_LIMIT, V_LIMIT

pytest.importorskip("onnxruntime")

LIMB_WIDTHS = [8, 7]  # 8: kernels that add products exactly (probed); 7: any kernel


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A prefix (2 layers) and one layer's query rows and weights; some entries at the extremes."""
    seed = draw(st.integers(0, 2**32 - 1))
    t = draw(st.integers(1, 40))
    kv, d, rows = draw(st.integers(1, 3)), draw(st.sampled_from([1, 4, 64])), draw(st.integers(1, 7))
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


def test_limbs_only_for_few_rows_over_a_long_prefix() -> None:
    rng = np.random.default_rng(5)
    long_keys = rng.integers(-2**15, 2**15, (1, LIMB_MIN_POSITIONS, 1, 4), dtype=np.int32)
    kernels = PrefixKernels(long_keys, long_keys, "int8")
    assert kernels._kernel(LIMB_MAX_ROWS) is kernels._limbs is not None
    assert kernels._kernel(LIMB_MAX_ROWS + 1) is kernels._float
    assert PrefixKernels(long_keys, long_keys, "numpy")._limbs is None  # SEMCODEC_BACKEND=numpy: no onnxruntime
    short = long_keys[:, : LIMB_MIN_POSITIONS - 1]
    assert PrefixKernels(short, short, "int8")._limbs is None


@pytest.mark.parametrize("backend", ["int8", "numpy"])
def test_primed_profile_decoding_equals_packing(backend: str) -> None:
    """Profile 3 (921 context positions): one state at a time (int8 limbs unless numpy), two in
    lockstep (float64) and packing's prefill (float64) give the same tables."""
    model = load_model(3, backend)
    assert context_state(3).prefix.length >= LIMB_MIN_POSITIONS
    texts = ["A cat on a red sofa.", "Two dogs run across a beach."]
    tokens = [model.tokenizer.encode(t) for t in texts]
    packed = [model.tables(t) for t in tokens]
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
