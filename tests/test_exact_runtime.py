"""Proofs that the probability model is a pure function of (model file, profile, context)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from decimal import Context, Decimal
from pathlib import Path

import numpy as np
import pytest

from semcodec.models import load_model, tables
from semcodec.models.exact import (
    PRECISION,
    WEIGHT_MAX,
    KVCache,
    Session,
    activation_max,
    batch_frequencies,
    quantize_rows,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "format" / "vectors" / "tables.json").read_text())
CAPTIONS = [
    "A red and black boat floating on top of water.",
    "Two giraffes standing next to each other in a grassy field.",
    "A man riding a wave on top of a surfboard.",
    "a plate of food with broccoli, rice and meat",
]


def table_digest(freqs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(freqs, dtype="<i4").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model(0)


def test_tables_are_valid_frequency_tables(model) -> None:  # type: ignore[no-untyped-def]
    ids = model.tokenizer.encode(CAPTIONS[0])
    freqs = batch_frequencies(model.lm, model.context_ids, ids)
    assert freqs.shape == (len(ids) + 1, model.lm.vocab_size)
    assert (freqs >= 1).all()
    assert (freqs.astype(np.int64).sum(axis=1) == 2**PRECISION).all()


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_golden_table_hashes(model, case) -> None:  # type: ignore[no-untyped-def]
    """The tables are part of the format: any change to weights, conversion or arithmetic shows here."""
    m = load_model(case["model_id"])
    ids = m.tokenizer.encode(case["text"])
    assert ids == case["tokens"]
    freqs = batch_frequencies(m.lm, m.context_ids, ids)
    assert table_digest(freqs) == case["sha256"]


def test_whole_sequence_equals_incremental(model) -> None:  # type: ignore[no-untyped-def]
    for caption in CAPTIONS[:2]:
        ids = model.tokenizer.encode(caption)
        batch = batch_frequencies(model.lm, model.context_ids, ids)
        session = Session(model.lm, model.context_ids)
        for i, token in enumerate([*ids, model.eos_id]):
            assert np.array_equal(session.next_frequencies(), batch[i]), f"position {i} of {caption!r}"
            session.append(token)


def test_chunked_prefill_equals_whole(model) -> None:  # type: ignore[no-untyped-def]
    """Evaluating the context in uneven pieces gives the same state as one pass."""
    ids = list(model.context_ids) + model.tokenizer.encode(CAPTIONS[2])
    whole = model.lm.forward(ids, KVCache())
    cache = KVCache()
    parts = [model.lm.forward(ids[a:b], cache) for a, b in ((0, 5), (5, 6), (6, 30), (30, len(ids)))]
    assert np.array_equal(np.concatenate(parts), whole)


def test_matmul_bounds_keep_float32_exact() -> None:
    for inner in (64, 576, 1536, 4096):
        assert WEIGHT_MAX * activation_max(inner) * inner < 2**24


def test_quantize_rows_is_bounded_and_exact_on_integers() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 576)) * 50
    q, scale = quantize_rows(x, 127)
    assert np.abs(q).max() == 127
    assert np.array_equal(q, np.rint(q))
    assert np.allclose(q * scale, x, atol=float(scale.max()))


def test_exp_and_sigmoid_tables_match_correctly_rounded_values() -> None:
    ctx = Context(prec=60)
    exp24 = tables.exp_table(24)
    assert exp24[0] == 2**24
    for i in (1, 256, 1000, len(exp24) - 1):
        exact = ctx.multiply(Decimal(2**24), ctx.exp(Decimal(-i) / 256))
        assert exp24[i] == int(exact.to_integral_value())
    assert int(ctx.multiply(Decimal(2**24), ctx.exp(Decimal(-len(exp24)) / 256)).to_integral_value()) == 0
    sig = tables.sigmoid_table()
    mid = len(sig) // 2
    assert sig[mid] == 0.5
    assert sig[mid + 1024] == float(ctx.divide(1, 1 + ctx.exp(Decimal(-1))))


def test_rope_tables_against_decimal() -> None:
    cos, sin = tables.rope_tables(300, 64, 100000.0)
    ctx = Context(prec=60)
    for p, i in ((1, 0), (299, 0), (123, 17), (299, 31)):
        omega = ctx.power(Decimal(100000), ctx.divide(Decimal(-2 * i), Decimal(64)))
        angle = omega * p
        # cos/sin via numpy on the exact angle agree to float64 resolution (only a sanity
        # check: the tables themselves never use libm).
        assert abs(cos[p, i] - np.cos(float(angle))) < 1e-12
        assert abs(sin[p, i] - np.sin(float(angle))) < 1e-12


# Each child reports the BLAS its products really ran on (threadpoolctl, read inside the
# products), and a float product whose bits differ between OpenBLAS kernels
# (shared/tools/blas_kernel_check.py): proof that the kernel and thread count changed.
_SPY = """
import hashlib, json, sys
import numpy as np
from threadpoolctl import threadpool_info
from semcodec.models import exact
_seen = set()
_original = exact.NumpyProducts.__call__
def _spy(self, x_q, w_q):
    if len(_seen) < 8:
        _seen.update((i["internal_api"], i["num_threads"], i.get("architecture"))
                     for i in threadpool_info() if i["user_api"] == "blas")
    return _original(self, x_q, w_q)
exact.NumpyProducts.__call__ = _spy
def _report():
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((1536, 576)).astype(np.float32), rng.standard_normal((7, 576)).astype(np.float32)
    return {"blas": sorted(_seen), "float_product": hashlib.sha256((x @ w.T).tobytes()).hexdigest()}
"""
_CHILD = _SPY + """
from semcodec.models import blas_threads, load_model
from semcodec.models.exact import batch_frequencies
m = load_model(0)
out = {}
with blas_threads():
    for text in json.loads(sys.argv[1]):
        ids = m.tokenizer.encode(text)
        f = batch_frequencies(m.lm, m.context_ids, ids)
        out[text] = hashlib.sha256(np.ascontiguousarray(f, dtype="<i4").tobytes()).hexdigest()
print(json.dumps({"tables": out, **_report()}))
"""

# OPENBLAS_CORETYPE -> the names threadpoolctl reports for it (numpy's OpenBLAS calls Prescott "Katmai").
_ARCHITECTURES = {"Haswell": {"Haswell"}, "Prescott": {"Prescott", "Katmai"},
                  "SkylakeX": {"SkylakeX"}, "Sandybridge": {"Sandybridge"}}
# (kernel, BLAS threads) of the packing side, then of the unpacking side.
_KERNEL_PAIRS = [(("Haswell", 2), ("Prescott", 1)), (("SkylakeX", 2), ("Sandybridge", 1))]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def _require_kernels(*coretypes: str) -> None:
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("OPENBLAS_CORETYPE names x86-64 kernels")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs for 2 BLAS threads")
    needs = {"Haswell": "avx2", "SkylakeX": "avx512f", "Sandybridge": "avx"}
    missing = [ct for ct in coretypes if ct in needs and needs[ct] not in _cpu_flags()]
    if missing:
        pytest.skip(f"this CPU cannot run the OpenBLAS kernels {missing}")


def _child_env(coretype: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OPENBLAS_CORETYPE=coretype, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               SEMCODEC_THREADS=str(threads))  # blas_threads() applies SEMCODEC_THREADS during the products
    return env


def _check_blas(report: dict[str, object], coretype: str, threads: int) -> None:
    blas = report["blas"]
    assert isinstance(blas, list) and blas, report
    assert {(api, n) for api, n, _ in blas} == {("openblas", threads)}, f"{coretype}: {blas}"
    assert {arch for *_, arch in blas} <= _ARCHITECTURES[coretype], f"{coretype}: {blas}"


@pytest.mark.slow
@pytest.mark.parametrize("pair", _KERNEL_PAIRS, ids=lambda p: f"{p[0][0]}x{p[0][1]}-{p[1][0]}x{p[1][1]}")
def test_tables_identical_across_blas_kernels_and_threads(pair: tuple[tuple[str, int], ...]) -> None:
    """Float products differ between these kernels (checked here); ours must not."""
    _require_kernels(pair[0][0], pair[1][0])
    reports = []
    for coretype, threads in pair:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(CAPTIONS)],
            env=_child_env(coretype, threads),
            capture_output=True,
            text=True,
            check=True,
        )
        reports.append(json.loads(proc.stdout))
        _check_blas(reports[-1], coretype, threads)
    assert reports[0]["float_product"] != reports[1]["float_product"]  # the kernels really differ
    assert reports[0]["tables"] == reports[1]["tables"]


_PACK_CHILD = _SPY + """
import semcodec
texts = json.loads(sys.stdin.read())
blobs = [semcodec.pack(t).hex() for t in texts]
print(json.dumps({"blobs": blobs, **_report()}))
"""
_UNPACK_CHILD = _SPY + """
import semcodec
blobs = json.loads(sys.stdin.read())["blobs"]
texts = [semcodec.unpack(bytes.fromhex(b)).text for b in blobs]
print(json.dumps({"texts": texts, **_report()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("pair", _KERNEL_PAIRS, ids=lambda p: f"{p[0][0]}x{p[0][1]}-{p[1][0]}x{p[1][1]}")
def test_pack_on_one_kernel_unpack_on_another(pair: tuple[tuple[str, int], ...]) -> None:
    """Pack with 2 BLAS threads on one kernel (asserted inside the products), unpack with 1 on another."""
    _require_kernels(pair[0][0], pair[1][0])
    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-captions-dev.txt"
    texts = [line.strip() for line in corpus.read_text().splitlines()[:8]] if corpus.exists() else CAPTIONS
    (pack_ct, pack_threads), (unpack_ct, unpack_threads) = pair
    packed = subprocess.run(
        [sys.executable, "-c", _PACK_CHILD],
        input=json.dumps(texts),
        env=_child_env(pack_ct, pack_threads),
        capture_output=True,
        text=True,
        check=True,
    )
    unpacked = subprocess.run(
        [sys.executable, "-c", _UNPACK_CHILD],
        input=packed.stdout,
        env=_child_env(unpack_ct, unpack_threads),
        capture_output=True,
        text=True,
        check=True,
    )
    pack_report, unpack_report = json.loads(packed.stdout), json.loads(unpacked.stdout)
    _check_blas(pack_report, pack_ct, pack_threads)
    _check_blas(unpack_report, unpack_ct, unpack_threads)
    assert pack_report["float_product"] != unpack_report["float_product"]
    assert unpack_report["texts"] == texts


def test_numpy_and_torch_backends_agree(model) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch", reason="torch is the optional [hf] extra")
    from semcodec.models.exact import ExactLM, TorchProducts

    torch_lm = ExactLM(model.lm.w, TorchProducts("cpu"))
    for caption in CAPTIONS[:2]:
        ids = model.tokenizer.encode(caption)
        assert np.array_equal(
            batch_frequencies(torch_lm, model.context_ids, ids),
            batch_frequencies(model.lm, model.context_ids, ids),
        )


def test_cached_context_state_is_verified(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The saved context is bit-identical to evaluating it; a damaged file is not trusted."""
    import shutil

    from semcodec import models as semmodels
    from semcodec.models import pins

    state = semmodels.context_state(0)
    fresh = KVCache()
    hidden = model.lm.forward(model.context_ids, fresh)[-1:]
    assert np.array_equal(hidden, state.hidden)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.keys, state.keys, strict=True))
    pinned = pins.DERIVED[model.spec.weights.gguf_sha256]
    name = semmodels.context_file_name(model.context_ids)
    assert semmodels.context_digest(state) == pinned[name]
    saved = [p for p in sorted(model.lm.w.directory.glob("context-*.npz")) if p.name in pinned]  # not others'
    assert name in [p.name for p in saved]
    for original in saved:
        copy = tmp_path / original.name
        shutil.copyfile(original, copy)
        loaded = semmodels._load_context(copy, model.lm.n_layers, pinned[original.name])
        assert loaded is not None
        raw = bytearray(copy.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        copy.write_bytes(bytes(raw))
        assert semmodels._load_context(copy, model.lm.n_layers, pinned[original.name]) is None
