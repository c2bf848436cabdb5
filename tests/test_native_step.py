"""The native decode step (``native/step.c``, :meth:`ExactLM._native_forward_one`) gives the numpy
code's bits: the same final hidden state and the same integer keys and values in the cache, on
every code path this CPU runs, with and without a shared prefix, at any cache length.

Random tiny models reach what the real one rarely does (every scale from subnormal to huge, a
cache that grows past its capacity); the real model checks real steps, a long cache and the
golden tables. A value that is not finite sends the step back to the numpy code.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from semcodec.models import tables
from semcodec.models.exact import ExactLM, KVCache, SharedPrefix
from semcodec.models.kernels import NativeProducts, QMatrix, native_products_module
from semcodec.models.weights import LayerWeights, ModelConfig, ModelWeights

NATIVE = native_products_module()
pytestmark = pytest.mark.skipif(NATIVE is None or not hasattr(NATIVE, "step"),
                                reason="semcodec.models._products is not built (no C compiler)")
PATHS = [p for p in NATIVE.vector_paths() if p in ("vnni", "avx2", "plain")] if NATIVE is not None else []
"""The step's own parts have an AVX-512 path (taken with the "vnni" products), an AVX2 + FMA path
and a plain one; the other product paths are the products' own tests' business
(test_native_products.py)."""


@cache
def _real_tables(positions: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The format's own sigmoid, E16 and E24 tables, and RoPE for 16-dim heads."""
    cos, sin = tables.rope_tables(positions, 16, 10000.0)
    return (tables.sigmoid_table(), tables.exp_table(tables.ATTENTION_EXP_SCALE_BITS),
            tables.exp_table(tables.LOGIT_EXP_SCALE_BITS), np.stack([cos, sin]))


def _matrix(rng: np.random.Generator, name: str, k: int, n: int, scale: float) -> QMatrix:
    q = rng.integers(-127, 128, (k, n)).astype(np.int8)
    return QMatrix(name, q, rng.uniform(0.5, 2.0, n) * scale)


def _tiny_weights(seed: int, embed_scale: float = 0.02, weight_scale: float = 0.01, positions: int = 64,
                  ) -> ModelWeights:
    """Two layers, 6 query heads over 2 kv heads of 16 dims (hidden 96), ffn 80, 50 tokens."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(n_layers=2, hidden=96, ffn=80, n_heads=6, n_kv_heads=2, vocab_size=50, rope_theta=10000.0,
                      rms_eps=1e-5)
    sigmoid, e16, e24, rope = _real_tables(positions)
    layers = [LayerWeights(attn_norm=rng.uniform(0.2, 3.0, 96), qkv=_matrix(rng, f"l{i}.qkv", 96, 160, weight_scale),
                           o=_matrix(rng, f"l{i}.o", 96, 96, weight_scale), ffn_norm=rng.uniform(0.2, 3.0, 96),
                           gate_up=_matrix(rng, f"l{i}.gate_up", 96, 160, weight_scale),
                           down=_matrix(rng, f"l{i}.down", 80, 96, weight_scale))
              for i in range(cfg.n_layers)]
    return ModelWeights(config=cfg, embed=_matrix(rng, "embed", 96, 50, embed_scale), final_norm=np.ones(96),
                        layers=layers, rope_cos=rope[0], rope_sin=rope[1], sigmoid_table=sigmoid,
                        attention_exp_table=e16, logit_exp_table=e24, directory=Path("."), files_sha256={})


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


def _same_cache(a: KVCache, b: KVCache) -> bool:
    n = a.own
    return (n == b.own and np.array_equal(a.keys[:, :n], b.keys[:, :n])
            and np.array_equal(a.values[:, :n], b.values[:, :n]))


def _copy(cache: KVCache) -> KVCache:
    """An independent cache with the same keys, values and prefix."""
    return KVCache(cache.keys.copy(), cache.values.copy(), cache.own, cache.prefix)


def _frozen_prefix(lm: ExactLM, rng: np.random.Generator, length: int) -> SharedPrefix:
    """A shared prefix of ``length`` random tokens, evaluated by the numpy code (which it leaves on)."""
    lm.native_step = False
    start = lm.new_cache()
    lm.forward(rng.integers(0, 50, length), start)
    return start.freeze()


def _step_both(lm: ExactLM, token: int, native: KVCache, numpy: KVCache) -> tuple[np.ndarray, np.ndarray]:
    lm.native_step = True
    a = lm.forward([token], native)
    lm.native_step = False
    b = lm.forward([token], numpy)
    return a, b


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prefixed", [False, True])
def test_random_models_step_as_numpy(path: str, seed: int, prefixed: bool) -> None:
    lm = ExactLM(_tiny_weights(seed), NativeProducts(path=path, threads=2))
    assert lm._native_step_model is not None
    rng = np.random.default_rng(seed)
    prefix = _frozen_prefix(lm, rng, 7) if prefixed else None
    native, numpy = lm.new_cache(prefix, 2), lm.new_cache(prefix, 2)  # capacity 2: the cache grows while stepping
    for token in rng.integers(0, 50, 40):
        a, b = _step_both(lm, int(token), native, numpy)
        assert _same_bits(a, b)
        assert _same_cache(native, numpy)
    assert native.own == 40


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prefixed", [False, True])
def test_random_models_step_as_numpy_over_many_blocks(path: str, prefixed: bool) -> None:
    """A cache of 600 own positions: the own keys are cut into blocks (step.c's OWN_BLOCK, 128)
    shared out among two threads, and the last block is partial; the blocks' sums join exactly.
    Small weights keep the scores close, so every block carries weight (larger ones give one
    position all of it)."""
    lm = ExactLM(_tiny_weights(5, weight_scale=0.0005, positions=640), NativeProducts(path=path, threads=2))
    rng = np.random.default_rng(5)
    lm.native_step = False
    prefix = _frozen_prefix(lm, rng, 9) if prefixed else None
    filled = lm.new_cache(prefix, 620)
    lm.forward(rng.integers(0, 50, 600), filled)
    native, numpy = _copy(filled), _copy(filled)
    for token in rng.integers(0, 50, 5):
        a, b = _step_both(lm, int(token), native, numpy)
        assert _same_bits(a, b)
    assert _same_cache(native, numpy) and native.own == 605


def test_a_step_run_from_within_attend_leaves_the_outer_steps_scratch_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """step.c keeps one buffer of scores and weights per thread, live across the attend call. An
    attend that itself runs a step (of a longer cache, which would grow the buffer) must not touch
    it: the outer step still gives the numpy code's bits."""
    lm = ExactLM(_tiny_weights(6, positions=640), NativeProducts(path=PATHS[0]))
    rng = np.random.default_rng(6)
    prefix = _frozen_prefix(lm, rng, 9)
    other = lm.new_cache(None, 600)
    lm.forward(rng.integers(0, 50, 500), other)
    outer_native, outer_numpy = lm.new_cache(prefix), lm.new_cache(prefix)
    for token in rng.integers(0, 50, 6):
        _step_both(lm, int(token), outer_native, outer_numpy)
    kernel = prefix.products(lm._prefix_backend)
    real_attend = kernel.attend
    nested = []

    def attend_and_step(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert lm._native_forward_one(int(rng.integers(0, 50)), other) is not None
        nested.append(other.own)
        return real_attend(*args, **kwargs)

    monkeypatch.setattr(kernel, "attend", attend_and_step)
    for token in rng.integers(0, 50, 3):
        a, b = _step_both(lm, int(token), outer_native, outer_numpy)
        assert _same_bits(a, b)
    assert _same_cache(outer_native, outer_numpy)
    assert len(nested) == 3 * 2 * 2  # one per layer, in the native step and in the numpy one


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("embed_scale", [1e-306, 1e-150, 1e150])
def test_extreme_scales_step_as_numpy(embed_scale: float, path: str) -> None:
    """Rows near the subnormal range (a quantisation scale that is not normal: the clipped
    branch) and huge rows give the numpy code's bits too."""
    lm = ExactLM(_tiny_weights(3, embed_scale=embed_scale), NativeProducts(path=path))
    native, numpy = lm.new_cache(), lm.new_cache()
    for token in range(12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a, b = _step_both(lm, token, native, numpy)
        assert np.array_equal(a, b, equal_nan=True)
        assert _same_cache(native, numpy)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dim", [0, 1, 2, 3, 50, 95])
def test_one_infinite_value_anywhere_in_a_row_is_seen(path: str, dim: int) -> None:
    """A row finite but for one entry (in each lane of the vector loops): the step, alone or in
    lockstep, declines it, as it declines a row of inf. (The checks are layered: a NaN that one
    check missed would reach the next row scale, so this asserts the outcome, not which check.)"""
    w = _tiny_weights(10)
    w.embed.q[:, 1] = 0
    w.embed.q[dim, 1] = 127
    w.embed.scale[1] = 1e308  # 127 * 1e308 = inf, the rest 0
    lm = ExactLM(w, NativeProducts(path=path))
    cache = lm.new_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert lm._native_forward_one(1, cache) is None and cache.own == 0
        assert lm._native_forward_segments([(np.array([1]), lm.new_cache()), (np.array([2]), lm.new_cache())]) is None
    assert lm._native_forward_one(2, cache) is not None  # a finite row steps


def test_a_value_that_is_not_finite_goes_back_to_numpy() -> None:
    """Rows of inf (127 * 1e308) leave the format's arithmetic; the step declines them untouched
    and the numpy code decides what happens (here it fails on the NaN's sigmoid index)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lm = ExactLM(_tiny_weights(4, embed_scale=1e308), NativeProducts(path=PATHS[0]))
        c = lm.new_cache()
        assert lm._native_forward_one(1, c) is None and c.own == 0
        outcomes = []
        for native in (True, False):
            lm.native_step = native
            with pytest.raises(Exception) as err:
                lm.forward([1], lm.new_cache())
            outcomes.append((type(err.value), str(err.value)))
    assert outcomes[0] == outcomes[1]


def test_the_step_is_used_only_with_native_products() -> None:
    from semcodec.models.kernels import NumpyProducts

    assert ExactLM(_tiny_weights(5), NumpyProducts())._native_step_model is None
    w = _tiny_weights(5)
    w.layers[1].down.q[0, 0] = -128  # outside the products' proof: that matrix goes to the fallback
    assert ExactLM(w, NativeProducts(path=PATHS[0]))._native_step_model is None


def test_step_refuses_what_does_not_match_its_model() -> None:
    lm = ExactLM(_tiny_weights(6), NativeProducts(path=PATHS[0]))
    native, state, _ = lm._native_step_model  # type: ignore[misc]
    c = lm.new_cache(capacity=4)
    x = np.zeros(96)
    rows, top = np.empty((2, 3, 16)), np.empty((2, 3), np.int64)
    with pytest.raises(ValueError, match="do not match"):
        native.step(state, np.zeros(95), 0, c.keys, c.values, 0, None, rows, top)
    with pytest.raises(ValueError, match="out of range"):
        native.step(state, x, 0, c.keys, c.values, 4, None, rows, top)  # index past the capacity
    with pytest.raises(ValueError, match="out of range"):
        native.step(state, x, 64, c.keys, c.values, 0, None, rows, top)  # past the RoPE table
    with pytest.raises(ValueError, match="wrong type"):
        native.step(state, x, 0, c.keys.astype(np.int64), c.values, 0, None, rows, top)
    with pytest.raises(TypeError, match="callable"):
        native.step(state, x, 0, c.keys, c.values, 0, 3, rows, top)
    with pytest.raises(ValueError, match="unknown path"):
        native.step(state, x, 0, c.keys, c.values, 0, None, rows, top, "sse9")
    with pytest.raises(ZeroDivisionError):  # an error raised by attend reaches the caller
        native.step(state, x, 0, c.keys, c.values, 0, lambda layer: 1 / 0, rows, top)
    with pytest.raises(ValueError, match="wrong type or size"):
        native.step(state, x, 0, c.keys, c.values, 0, lambda layer: (np.zeros(3), np.zeros(3), np.zeros(3)), rows, top)
    good = (np.zeros((2, 3, 16)), np.zeros((2, 3), np.int64))
    for lie in (np.full((2, 3), -2**50, np.int64), np.full((2, 3), 2**47, np.int64)):  # below own maxima; past 2**46
        with pytest.raises(ValueError, match="outside their bounds"):
            native.step(state, x, 0, c.keys, c.values, 0, lambda layer, lie=lie: (*good, lie), rows, top)
    with pytest.raises(ValueError, match="outside their bounds"):  # a negative weight sum
        native.step(state, x, 0, c.keys, c.values, 0,
                    lambda layer: (good[0], np.full((2, 3), -1, np.int64), np.full((2, 3), 2**40, np.int64)), rows, top)
    with pytest.raises(ValueError, match="step_model"):
        native.step_model((96, 80, 6, 4, 16, 127, 127, 1e-5, 15, 16384, 10), (), [])  # 6 heads over 4 kv heads


@pytest.mark.parametrize("path", PATHS)
def test_real_model_steps_as_numpy_after_a_long_cache(model, path: str) -> None:  # type: ignore[no-untyped-def]
    """Model 0's weights and primed context; 300 positions of own cache (filled in one pass),
    then steps on two copies."""
    from semcodec.models import context_state

    lm = ExactLM(model.lm.w, NativeProducts(path=path))
    start = context_state(0)
    rng = np.random.default_rng(7)
    filled = lm.new_cache(start.prefix, 320)
    lm.native_step = False
    lm.forward(rng.integers(0, lm.vocab_size, 300), filled)
    native, numpy = _copy(filled), _copy(filled)
    for token in rng.integers(0, lm.vocab_size, 4):
        a, b = _step_both(lm, int(token), native, numpy)
        assert _same_bits(a, b)
    assert _same_cache(native, numpy) and native.own == 304


def test_decoding_uses_the_native_step(model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Where the products are native, a decode step goes through step.c (and the golden tables
    of test_exact_runtime and the vectors are computed through it)."""
    if not isinstance(model.lm.products, NativeProducts):
        pytest.skip(f"the default backend here is {model.lm.products.name}")
    calls = []
    real = model.lm._native_forward_one
    monkeypatch.setattr(model.lm, "_native_forward_one", lambda t, c: calls.append(t) or real(t, c))
    state = model.decoders(1)[0]
    model.step_many([state], [504])
    assert calls == [504]


def _many_both(lm: ExactLM, tokens: list[list[int]], native: list[KVCache], numpy: list[KVCache]) -> None:
    """Each cache continued by its tokens, all in one forward_many: step_many on ``native``, the
    numpy code on ``numpy``; the same bits in every row and every cache."""
    ran = []
    real = lm._native_forward_segments

    def counted(segments: list[tuple[np.ndarray, KVCache]]) -> list[np.ndarray] | None:
        hidden = real(segments)
        ran.append(hidden is not None)
        return hidden

    lm._native_forward_segments = counted  # type: ignore[method-assign]
    lm.native_step = True
    a = lm.forward_many(list(zip(tokens, native, strict=True)))
    lm.native_step = False
    b = lm.forward_many(list(zip(tokens, numpy, strict=True)))
    del lm._native_forward_segments
    assert ran == [True]  # step_many ran (and did not decline)
    assert all(_same_bits(x, y) for x, y in zip(a, b, strict=True))
    assert all(_same_cache(x, y) for x, y in zip(native, numpy, strict=True))


def _caches(lm: ExactLM, rng: np.random.Generator, prefix: object, lengths: tuple[int, ...],
            ) -> tuple[list[KVCache], list[KVCache]]:
    """Two copies of caches of these lengths (filled by the numpy code), small capacities (they grow)."""
    native, numpy = [], []
    lm.native_step = False
    for length in lengths:
        cache = lm.new_cache(prefix, 2)  # type: ignore[arg-type]
        if length:
            lm.forward(rng.integers(0, 50, length), cache)
        native.append(_copy(cache))
        numpy.append(cache)
    return native, numpy


def _tiny_lm(path: str, max_rows: int, prefixed: bool, rng: np.random.Generator) -> tuple[ExactLM, object]:
    lm = ExactLM(_tiny_weights(7, weight_scale=0.0005, positions=640),
                 NativeProducts(path=path, threads=2, max_rows=max_rows))
    return lm, _frozen_prefix(lm, rng, 9) if prefixed else None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prefixed", [False, True])
@pytest.mark.parametrize("max_rows", [1, 64])
def test_random_models_step_many_as_numpy(path: str, prefixed: bool, max_rows: int) -> None:
    """Five caches of different lengths (one past a block of own keys) step together, the
    products native (max_rows 64) or called back through the fallback (max_rows 1)."""
    rng = np.random.default_rng(7)
    lm, prefix = _tiny_lm(path, max_rows, prefixed, rng)
    native, numpy = _caches(lm, rng, prefix, (0, 1, 5, 30, 300))
    for _ in range(4):
        _many_both(lm, [[int(t)] for t in rng.integers(0, 50, len(native))], native, numpy)
    assert [c.own for c in native] == [4, 5, 9, 34, 304]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prefixed", [False, True])
@pytest.mark.parametrize("max_rows", [1, 64])
def test_random_models_prefill_as_numpy(path: str, prefixed: bool, max_rows: int) -> None:
    """Several tokens per cache (a prefill: rows of one cache at consecutive indices, each seeing
    the keys of the rows before it and none after), alone and beside other caches' segments."""
    rng = np.random.default_rng(11)
    lm, prefix = _tiny_lm(path, max_rows, prefixed, rng)
    native, numpy = _caches(lm, rng, prefix, (0, 3, 250))
    _many_both(lm, [list(rng.integers(0, 50, 32))], native[:1], numpy[:1])
    _many_both(lm, [list(rng.integers(0, 50, n)) for n in (2, 1, 9)], native, numpy)
    _many_both(lm, [list(rng.integers(0, 50, n)) for n in (1, 7, 1)], native, numpy)
    assert [c.own for c in native] == [35, 11, 260]


def test_step_many_declines_what_it_cannot_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two segments continuing the same cache, caches over different prefixes, or more scores
    than NATIVE_ROWS_POSITIONS go to the numpy code; a row that is not finite sends every row
    back to it. step_many itself refuses rows of one cache that do not take consecutive indices."""
    from semcodec.models import exact

    lm = ExactLM(_tiny_weights(8), NativeProducts(path=PATHS[0]))
    one, two = np.array([1]), np.array([2])
    shared = lm.new_cache()
    assert lm._native_forward_segments([(one, shared), (two, shared)]) is None
    start = lm.new_cache()
    lm.native_step = False
    lm.forward([3, 4], start)
    assert lm._native_forward_segments([(one, lm.new_cache()), (two, lm.new_cache(start.freeze()))]) is None
    monkeypatch.setattr(exact, "NATIVE_ROWS_POSITIONS", 10)
    assert lm._native_forward_segments([(np.arange(4), lm.new_cache())]) is None  # 4 rows * up to 4 keys
    assert lm._native_forward_segments([(np.arange(3), lm.new_cache())]) is not None
    native, state, path = lm._native_step_model  # type: ignore[misc]
    c = lm.new_cache()
    x = np.zeros((2, 96))
    with pytest.raises(ValueError, match="consecutive"):
        native.step_many(state, x, (0, 2), [(c.keys, c.values, 0), (c.keys, c.values, 2)], None,
                         np.empty((2, 6, 16)), np.empty((2, 6), np.int64), None, None, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        huge = ExactLM(_tiny_weights(4, embed_scale=1e308), NativeProducts(path=PATHS[0]))
        caches = [huge.new_cache(), huge.new_cache()]
        assert huge._native_forward_segments([(one, caches[0]), (two, caches[1])]) is None
        assert [c.own for c in caches] == [0, 0]


def test_real_model_steps_many_as_numpy(model) -> None:  # type: ignore[no-untyped-def]
    """Model 0's weights and primed context, eight captions' caches in lockstep, products past
    the native kernel's rows (onnxruntime where installed)."""
    from semcodec.models import context_state

    lm = ExactLM(model.lm.w, NativeProducts(path=PATHS[0]))
    start = context_state(0)
    rng = np.random.default_rng(9)
    native, numpy = [], []
    lm.native_step = False
    for length in rng.integers(0, 20, 8):
        cache = lm.new_cache(start.prefix)
        if length:
            lm.forward(rng.integers(0, lm.vocab_size, int(length)), cache)
        native.append(_copy(cache))
        numpy.append(cache)
    for _ in range(3):
        _many_both(lm, [[int(t)] for t in rng.integers(0, lm.vocab_size, 8)], native, numpy)
    _many_both(lm, [list(rng.integers(0, lm.vocab_size, 12)), [5]], native[:2], numpy[:2])  # a prefill beside a step
