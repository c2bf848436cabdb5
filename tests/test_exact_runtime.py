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
GOLDEN = {
    "cases": [
        case
        for folder in ("", "v2")  # v1's profiles 0-2, v2's primed profiles 3 and 4
        for case in json.loads((ROOT / "format" / "vectors" / folder / "tables.json").read_text())["cases"]
    ]
}
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


_CHILD = """
import hashlib, json, sys
import numpy as np
from semcodec.models import load_model
from semcodec.models.exact import batch_frequencies
m = load_model(0)
out = {}
for text in json.loads(sys.argv[1]):
    ids = m.tokenizer.encode(text)
    f = batch_frequencies(m.lm, m.context_ids, ids)
    out[text] = hashlib.sha256(np.ascontiguousarray(f, dtype="<i4").tobytes()).hexdigest()
print(json.dumps(out))
"""


def _child_env(coretype: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OPENBLAS_CORETYPE=coretype, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return env


@pytest.mark.slow
def test_tables_identical_across_blas_kernels_and_threads() -> None:
    """Float products differ between these kernels (shared/tools/blas_kernel_check.py); ours must not."""
    results = []
    for coretype, threads in (("Haswell", 2), ("Prescott", 1)):
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(CAPTIONS)],
            env=_child_env(coretype, threads),
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout))
    assert results[0] == results[1]


_PACK_CHILD = """
import json, sys, semcodec
texts = json.loads(sys.stdin.read())
print(json.dumps([semcodec.pack(t).hex() for t in texts]))
"""
_UNPACK_CHILD = """
import json, sys, semcodec
blobs = json.loads(sys.stdin.read())
print(json.dumps([semcodec.unpack(bytes.fromhex(b)).text for b in blobs]))
"""


@pytest.mark.slow
def test_pack_on_one_kernel_unpack_on_another() -> None:
    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-captions-dev.txt"
    texts = [line.strip() for line in corpus.read_text().splitlines()[:12]] if corpus.exists() else CAPTIONS
    packed = subprocess.run(
        [sys.executable, "-c", _PACK_CHILD],
        input=json.dumps(texts),
        env=_child_env("Haswell", 2),
        capture_output=True,
        text=True,
        check=True,
    )
    unpacked = subprocess.run(
        [sys.executable, "-c", _UNPACK_CHILD],
        input=packed.stdout,
        env=_child_env("Prescott", 1),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(unpacked.stdout) == texts


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

    state = semmodels.context_state(0)
    fresh = KVCache()
    hidden = model.lm.forward(model.context_ids, fresh)[-1:]
    assert np.array_equal(hidden, state.hidden)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.keys, state.keys, strict=True))
    saved = sorted(model.lm.w.directory.glob("context-i32-*.npz"))
    assert saved
    for original in saved:
        copy = tmp_path / original.name
        shutil.copyfile(original, copy)
        loaded = semmodels._load_context(copy, model.lm.n_layers)
        assert loaded is not None
        raw = bytearray(copy.read_bytes())
        raw[_last_data_byte(copy, "k0.npy")] ^= 0x10  # a key's bits (not zip metadata np.load skips)
        copy.write_bytes(bytes(raw))
        assert semmodels._load_context(copy, model.lm.n_layers) is None


def _last_data_byte(npz: Path, member: str) -> int:
    """File offset of the last byte of ``member``'s stored data (npz files are uncompressed zips)."""
    import struct
    import zipfile

    with zipfile.ZipFile(npz) as archive:
        info = archive.getinfo(member)
    local = npz.read_bytes()[info.header_offset : info.header_offset + 30]
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len + info.compress_size - 1
