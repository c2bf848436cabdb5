"""The native frequency tables (``native/frequencies.c``) give :meth:`ExactLM.frequencies`' integers
(SPEC §5, step 6) for every kind of logit row: ties for the largest, spreads past the end of
E24, a single token, every token equal, huge and tiny magnitudes; a logit that is not finite
sends the row back to numpy, also when many rows share the thread pool; and the real model's
tables are the same either way.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from semcodec.models import tables
from semcodec.models.exact import PRECISION, ExactLM
from semcodec.models.kernels import native_products_module

NATIVE = native_products_module()
pytestmark = pytest.mark.skipif(NATIVE is None or not hasattr(NATIVE, "frequencies"),
                                reason="semcodec.models._products is not built (no C compiler)")
E24 = np.append(tables.exp_table(tables.LOGIT_EXP_SCALE_BITS), 0)
SCALE = float(1 << tables.SOFTMAX_STEP_BITS)


def _numpy(logits: np.ndarray) -> np.ndarray:
    return ExactLM.frequencies(SimpleNamespace(_logit_exp=E24), logits.copy())  # type: ignore[arg-type]


def _native(logits: np.ndarray) -> tuple[bool, np.ndarray]:
    out = np.full(logits.shape, -7, dtype=np.int32)
    return NATIVE.frequencies(np.ascontiguousarray(logits), E24, SCALE, PRECISION, out), out


def _rows(rng: np.random.Generator, vocab: int) -> np.ndarray:
    rows = [
        rng.normal(size=vocab) * 4,  # a typical spread
        rng.normal(size=vocab) * 1e4,  # most entries past the table's end
        rng.normal(size=vocab) * 1e-9,  # every entry rounds to the first step
        np.zeros(vocab),  # all tied
        np.round(rng.normal(size=vocab) * 3, 1),  # many exact ties, several for the largest
        np.full(vocab, -1e300),
        rng.normal(size=vocab) * 1e300,
    ]
    peaked = rng.normal(size=vocab)
    peaked[[min(5, vocab - 1), vocab - 1]] = 60.0  # two tokens share the top, far above the rest
    rows.append(peaked)
    half = rng.normal(size=vocab)
    half[min(3, vocab - 1)] = half.max() + 0.5 / SCALE  # (max - l) * 256 lands on halves: rint's ties to even
    rows.append(half)
    return np.stack(rows)


@pytest.mark.parametrize("vocab", [1, 2, 7, 1000, 49152])
def test_native_tables_are_numpys(vocab: int) -> None:
    logits = _rows(np.random.default_rng(vocab), vocab)
    ok, out = _native(logits)
    assert ok
    expected = _numpy(logits)
    assert np.array_equal(out, expected)
    assert (out >= 1).all() and (out.sum(axis=1, dtype=np.int64) == 1 << PRECISION).all()


def test_a_logit_that_is_not_finite_is_left_to_numpy() -> None:
    for bad in (np.nan, np.inf, -np.inf):
        logits = np.random.default_rng(1).normal(size=(3, 50))
        logits[2, 17] = bad
        ok, _ = _native(logits)
        assert not ok


@pytest.fixture
def two_threads():  # type: ignore[no-untyped-def]
    before = NATIVE.threads()
    NATIVE.set_threads(2)
    yield
    NATIVE.set_threads(before)


@pytest.mark.usefixtures("two_threads")
def test_rows_on_the_thread_pool_are_numpys() -> None:
    """Many rows are spread over the products' pool (each row alone): the same integers, and a
    single row that is not finite, wherever it lies, still sends the whole call back to numpy."""
    rng = np.random.default_rng(64)
    logits = np.concatenate([_rows(rng, 4096) for _ in range(8)])  # 72 rows
    ok, out = _native(logits)
    assert ok and np.array_equal(out, _numpy(logits))
    for at in (0, 35, len(logits) - 1):
        bad = logits.copy()
        bad[at, 100] = np.nan
        assert not _native(bad)[0]


def test_the_arguments_are_checked() -> None:
    logits = np.zeros((2, 10))
    out = np.zeros((2, 10), dtype=np.int32)
    with pytest.raises(ValueError, match="out of bounds"):
        NATIVE.frequencies(logits, E24, SCALE, PRECISION, np.zeros((3, 10), dtype=np.int32))
    with pytest.raises(ValueError, match="out of bounds"):
        NATIVE.frequencies(logits, E24, SCALE, 3, out)  # V = 10 >= 2**3: no room for the free mass
    with pytest.raises(ValueError, match="out of bounds"):
        NATIVE.frequencies(logits, -E24, SCALE, PRECISION, out)
    with pytest.raises(ValueError, match="int64"):
        NATIVE.frequencies(logits, E24.astype(np.int32), SCALE, PRECISION, out)
    with pytest.raises(ValueError, match="float64"):
        NATIVE.frequencies(logits.astype(np.float32), E24, SCALE, PRECISION, out)
    with pytest.raises(ValueError, match="int32"):
        NATIVE.frequencies(logits, E24, SCALE, PRECISION, out.astype(np.int64))
    with pytest.raises((ValueError, BufferError)):
        NATIVE.frequencies(logits, E24, SCALE, PRECISION, out[:, ::2])


def _head(acc: np.ndarray, x_scale: np.ndarray, w_scale: np.ndarray) -> tuple[bool, np.ndarray]:
    out = np.full(acc.shape, -7, dtype=np.int32)
    return NATIVE.head_frequencies(acc, x_scale, w_scale, E24, SCALE, PRECISION, out), out


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("vocab", [1, 7, 49152])
def test_head_frequencies_make_the_logits_as_matmul_does(vocab: int) -> None:
    """head_frequencies makes each logit as ExactLM._scaled does, ((double)acc * x_scale) *
    w_scale, without storing them: the same tables as numpy's, from products at the int32
    extremes and scales that are tiny, huge, subnormal or make a logit overflow (then False)."""
    rng = np.random.default_rng(vocab)
    rows = 9
    acc = rng.integers(-(2**31) + 1, 2**31 - 1, (rows, vocab), dtype=np.int64).astype(np.int32)
    acc[1] = rng.integers(-3, 4, vocab)  # ties
    x_scale = np.array([1e-9, 3.7e-5, 1.0, 1e-300, 5e-324, 0.1, 2.0**-40, 1e-7, 0.3])
    w_scale = rng.uniform(1e-4, 1e-2, vocab)
    w_scale[0] = 2.0**-30
    matrix = SimpleNamespace(scale=w_scale)  # what _scaled reads of the head
    ok, out = _head(acc, x_scale, w_scale)
    assert ok
    assert np.array_equal(out, _numpy(ExactLM._scaled(acc, x_scale[:, None], matrix)))  # type: ignore[arg-type]
    huge = x_scale.copy()
    huge[4] = 1e300  # (2**31 * 1e300) * 1e-2 overflows to inf: numpy decides
    with np.errstate(over="ignore"):
        overflows = np.isinf(ExactLM._scaled(acc[4:5], huge[4], matrix)).any()  # type: ignore[arg-type]
    if overflows:
        assert not _head(acc, huge, w_scale)[0]


def test_head_frequencies_check_their_arguments() -> None:
    acc, out = np.zeros((2, 10), np.int32), np.zeros((2, 10), np.int32)
    with pytest.raises(ValueError, match="x_scale must be"):
        NATIVE.head_frequencies(acc, np.ones(3), np.ones(10), E24, SCALE, PRECISION, out)
    with pytest.raises(ValueError, match="x_scale must be"):
        NATIVE.head_frequencies(acc, np.ones(2), np.ones(9), E24, SCALE, PRECISION, out)
    with pytest.raises(ValueError, match="int32"):
        NATIVE.head_frequencies(acc.astype(np.int64), np.ones(2), np.ones(10), E24, SCALE, PRECISION, out)
    with pytest.raises(ValueError, match="out of bounds"):
        NATIVE.head_frequencies(acc, np.ones(2), np.ones(10), E24, SCALE, PRECISION, np.zeros((3, 10), np.int32))


def test_real_model_tables_are_the_same_either_way(model) -> None:  # type: ignore[no-untyped-def]
    from semcodec.models import load_model

    lm = load_model(0).lm
    ids = load_model(0).tokenizer.encode("A man riding a wave on top of a surfboard. A dog on a beach.")
    hidden = lm.forward(ids, lm.new_cache())
    lm.native_tables = False
    try:
        expected = lm.tables(hidden)
    finally:
        lm.native_tables = True
    assert np.array_equal(lm.tables(hidden), expected)
