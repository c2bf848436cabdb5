#!/usr/bin/env python3
"""GPU exactness and speed: tables on CUDA equal the CPU's bit for bit, and batch unpack speed.

1. For every text in ``format/vectors/tables.json``: the frequency tables computed with the
   ``cuda`` backend (torch, float32 products of int8-valued matrices, TF32 off) against the
   pinned sha256 and against the CPU int8 kernel's tables.
2. ``unpack_many`` of the same packed captions with ``SEMCODEC_BACKEND=cuda`` and with the
   CPU kernel (``int8``), captions per second, and the texts compared.

Runs wherever torch sees a CUDA device; elsewhere it says so and exits 0.

    python benchmarks/gpu_exactness.py [CAPTIONS] --files 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cuda_unavailable(backend: str) -> str | None:
    """Why there is no CUDA device to test, or None."""
    try:
        import torch
    except ImportError:
        return "no CUDA device: torch is not installed (the optional [hf] extra)"
    if backend == "cuda" and not torch.cuda.is_available():
        return "no CUDA device: torch sees none"
    return None


def _digest(tables: object) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(tables, dtype="<i4").tobytes()).hexdigest()


def check_vectors(backend: str) -> list[list[str]]:
    """One row per vector text: pinned digest vs CUDA and CPU tables."""
    from semcodec.models import load_model
    from semcodec.models.exact import ExactLM
    from semcodec.models.kernels import products_from_name

    golden = json.loads((ROOT / "format" / "vectors" / "tables.json").read_text())
    rows = []
    for case in golden["cases"]:
        model = load_model(case["model_id"], "int8")
        cuda_lm = ExactLM(model.lm.w, products_from_name(backend))
        ctx = list(model.context_ids)
        tokens = case["tokens"]
        digests = {}
        for name, lm in (("cuda", cuda_lm), ("cpu", model.lm)):
            hidden = lm.forward([*ctx, *tokens], lm.new_cache())
            digests[name] = _digest(lm.tables(hidden[len(ctx) - 1 :]))
        same = digests["cuda"] == digests["cpu"] == case["sha256"]
        rows.append([case["name"], str(len(tokens) + 1), "identical" if same else "DIFFERENT"])
    return rows


def batch_speed(texts: list[str], device: str) -> list[list[str]]:
    import semcodec
    from semcodec.codec import unpack_many

    blobs = [semcodec.pack(t) for t in texts]
    rows = []
    rates = {}
    for backend in ("int8", device):
        os.environ["SEMCODEC_BACKEND"] = backend
        unpack_many(blobs[:2])  # load, device copies, first-call costs
        t0 = time.perf_counter()
        out = unpack_many(blobs)
        seconds = time.perf_counter() - t0
        if [getattr(r, "text", None) for r in out] != texts:
            raise RuntimeError(f"{backend}: unpack_many returned different texts")
        rates[backend] = len(texts) / seconds
        rows.append([f"unpack_many, {len(texts)} captions, {backend}", f"{rates[backend]:.1f} captions/s"])
    rows.append([f"{device} / cpu int8", f"{rates[device] / rates['int8']:.2f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captions", nargs="?", help="captions, one per line (default: shared/data's COCO captions)")
    parser.add_argument("--files", type=int, default=64, help="captions for the batch unpack (default 64)")
    parser.add_argument("--backend", default="cuda", choices=("cuda", "torch"),
                        help="device backend to check (torch: torch on the CPU, to try the script without a GPU)")
    args = parser.parse_args(argv)
    reason = cuda_unavailable(args.backend)
    if reason is not None:
        print(f"gpu_exactness: {reason}; nothing to measure here")
        return 0
    from semcodec.bench.corpus import read_corpus
    from semcodec.bench.tables import render

    path = args.captions or next(
        (str(p) for p in (ROOT / "shared" / "data" / "coco-captions-dev.txt",
                          ROOT.parent / "shared" / "data" / "coco-captions-dev.txt") if p.is_file()), None)
    if path is None:
        raise SystemExit("gpu_exactness.py: no shared/data/coco-captions-dev.txt here; pass a captions file")
    import torch

    print(f"device: {torch.cuda.get_device_name(0) if args.backend == 'cuda' else 'torch on the CPU'}")
    vectors = check_vectors(args.backend)
    print(render(["vector text", "tables", f"{args.backend} vs cpu int8 vs pinned sha256"], vectors, left=1))
    print()
    print(render(["measurement", "value"], batch_speed(read_corpus(path).texts[: args.files], args.backend), left=1))
    return 0 if all(row[2] == "identical" for row in vectors) else 1


if __name__ == "__main__":
    sys.exit(main())
