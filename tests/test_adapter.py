"""semcodec.models.adapter: the exact merge of SPEC §5 step 1b, the adapter file, its pin."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from semcodec.errors import SemModelError
from semcodec.models import adapter
from semcodec.models.adapter import Factors, merge_rows
from semcodec.registry import SMOLLM2_135M_CAPTIONER, SMOLLM2_135M_DESCRIBER, WeightsSource


def _reference_merge(q: np.ndarray, s: np.ndarray, f: Factors) -> tuple[list[list[int]], list[float]]:
    """SPEC §5 step 1b in plain Python: ints for B·A, Python floats (binary64, each operation
    rounded once) for the rest, ``round`` (half to even) for rint."""
    a, b, c = f.a.tolist(), f.b.tolist(), [float(x) for x in f.c.tolist()]
    rows, scales = [], []
    for n, q_row in enumerate(q.tolist()):
        d = [sum(b[n][j] * a[j][k] for j in range(len(a))) for k in range(len(q_row))]
        r = [float(q_row[k]) * float(s[n]) + float(d[k]) * c[n] for k in range(len(q_row))]
        amax = max(abs(x) for x in r)
        scale = amax / 127 if amax > 0 else 1.0
        rows.append([max(-127, min(127, round(x / scale))) for x in r])
        scales.append(scale)
    return rows, scales


def _random_case(rng: np.random.Generator, n: int, k: int, r: int) -> tuple[np.ndarray, np.ndarray, Factors]:
    q = rng.integers(-127, 128, (n, k)).astype(np.int8)
    s = rng.uniform(1e-4, 2e-2, n)
    f = Factors(rng.integers(-127, 128, (r, k)).astype(np.int8), rng.integers(-127, 128, (n, r)).astype(np.int8),
                rng.uniform(-3e-7, 3e-7, n).astype("<f4"))
    return q, s, f


@pytest.mark.parametrize("seed", range(5))
def test_merge_is_the_specified_arithmetic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, s, f = _random_case(rng, 7, 33, 1 + seed * 3)
    if seed == 4:
        q[2] = 0  # a zero base row: the change alone sets the scale
        f.b[2] = 0  # and a row with no change at all
        q[3] = 0
        f.b[3] = 0
    merged_q, merged_s = merge_rows(q, s, f)
    want_q, want_s = _reference_merge(q, s, f)
    assert merged_q.dtype == np.int8
    assert merged_q.tolist() == want_q
    assert merged_s.tolist() == want_s  # bit for bit, not approximately
    if seed == 4:
        assert merged_q[3].tolist() == [0] * 33 and merged_s[3] == 1.0


def test_merge_changes_a_row_by_the_factors() -> None:
    """The merged row is the base row plus c·(B·A), up to one requantisation step."""
    rng = np.random.default_rng(9)
    q, s, f = _random_case(rng, 5, 64, 8)
    merged_q, merged_s = merge_rows(q, s, f)
    want = q * s[:, None] + (f.b.astype(np.int64) @ f.a.astype(np.int64)) * f.c.astype(np.float64)[:, None]
    assert np.all(np.abs(merged_q * merged_s[:, None] - want) <= merged_s[:, None] / 2 * (1 + 1e-12))


@pytest.mark.parametrize(
    "change",
    [
        lambda f: Factors(np.full_like(f.a, -128), f.b, f.c),  # int8 but outside ±127
        lambda f: Factors(f.a.astype(np.int16), f.b, f.c),  # not int8
        lambda f: Factors(f.a, f.b, np.full_like(f.c, np.nan)),  # not finite
        lambda f: Factors(f.a, f.b, f.c.astype(np.float64)),  # c must be binary32
        lambda f: Factors(f.a[:, :-1], f.b, f.c),  # wrong K
        lambda f: Factors(f.a[:1], f.b, f.c),  # rank of A and B differ
        lambda f: Factors(np.zeros((65, 33), np.int8), np.zeros((7, 65), np.int8), f.c),  # rank above 64
    ],
)
def test_factors_outside_the_spec_are_refused(change) -> None:  # type: ignore[no-untyped-def]
    q, s, f = _random_case(np.random.default_rng(1), 7, 33, 4)
    with pytest.raises(SemModelError):
        merge_rows(q, s, change(f))


def _npz(arrays: dict[str, np.ndarray], allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays, allow_pickle=allow_pickle)  # type: ignore[arg-type]
    return buf.getvalue()


def test_adapter_file_members() -> None:
    _, _, f = _random_case(np.random.default_rng(2), 7, 33, 4)
    good = {"blk.0.attn_q.weight.A": f.a, "blk.0.attn_q.weight.B": f.b, "blk.0.attn_q.weight.c": f.c}
    parsed = adapter.parse("demo", _npz(good))
    assert set(parsed.factors) == {"blk.0.attn_q.weight"}
    with pytest.raises(SemModelError, match="unexpected member"):
        adapter.parse("demo", _npz({**good, "blk.0.attn_q.weight.D": f.c}))
    with pytest.raises(SemModelError, match="lacks"):
        adapter.parse("demo", _npz({"blk.0.attn_q.weight.A": f.a}))
    with pytest.raises(SemModelError, match="cannot be read"):
        adapter.parse("demo", _npz({"blk.0.attn_q.weight.A": np.array([object()], dtype=object)}, True))
    with pytest.raises(SemModelError, match="cannot be read"):
        adapter.parse("demo", b"PK\x03\x04 not a zip")


@pytest.mark.parametrize("source", [SMOLLM2_135M_DESCRIBER, SMOLLM2_135M_CAPTIONER], ids=lambda s: s.adapter)
def test_packaged_adapter_is_pinned(source: WeightsSource) -> None:
    shipped = adapter.packaged(source.adapter, source.adapter_sha256)
    assert shipped.sha256 == source.adapter_sha256
    # Every linear layer of every block of SmolLM2-135M, at one rank, within the spec's bounds.
    shapes = {"attn_q": (576, 576), "attn_k": (192, 576), "attn_v": (192, 576), "attn_output": (576, 576),
              "ffn_gate": (1536, 576), "ffn_up": (1536, 576), "ffn_down": (576, 1536)}
    assert set(shipped.factors) == {f"blk.{i}.{m}.weight" for i in range(30) for m in shapes}
    for name, f in shipped.factors.items():
        f.check(*shapes[name.split(".")[2]], name)
    with pytest.raises(SemModelError, match="not the pinned"):
        adapter.packaged.__wrapped__(source.adapter, "0" * 64)
    with pytest.raises(SemModelError, match="missing"):
        adapter.packaged.__wrapped__("no-such-adapter", "0" * 64)


@pytest.mark.slow
def test_adapted_cache_entry_is_the_merge_of_the_base_entry() -> None:
    """The converted adapted weights are step 1b applied to step 1's rows (checked on one
    fused matrix of the first and last block: q/k/v side by side)."""
    from semcodec.models.weights import load_weights
    from semcodec.registry import SMOLLM2_135M_INSTRUCT

    base, adapted = load_weights(SMOLLM2_135M_INSTRUCT), load_weights(SMOLLM2_135M_DESCRIBER)
    shipped = adapter.packaged(SMOLLM2_135M_DESCRIBER.adapter, SMOLLM2_135M_DESCRIBER.adapter_sha256)
    for layer in (0, 29):
        rows_q, rows_s = [], []
        lo = 0
        for part, n in (("attn_q", 576), ("attn_k", 192), ("attn_v", 192)):
            q = np.asarray(base.layers[layer].qkv.q[:, lo : lo + n]).T
            s = np.asarray(base.layers[layer].qkv.scale[lo : lo + n])
            mq, ms = shipped.merge(f"blk.{layer}.{part}.weight", q, s)
            rows_q.append(mq)
            rows_s.append(ms)
            lo += n
        got = adapted.layers[layer].qkv
        assert np.array_equal(np.concatenate(rows_q).T, got.q)
        assert np.array_equal(np.concatenate(rows_s), got.scale)
        assert not np.array_equal(got.q, base.layers[layer].qkv.q)  # the adapter changed it
    assert np.array_equal(adapted.embed.q, base.embed.q)  # the tied embedding is not adapted
    assert math.isclose(float(adapted.final_norm[0]), float(base.final_norm[0]))
