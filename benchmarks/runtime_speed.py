#!/usr/bin/env python3
"""Exact-runtime quality and speed, each figure printed as a ratio measured in the same run.

1. Quality: cross-entropy of the exact integer runtime vs the float32 reference model
   (:class:`semcodec.models.reference.FloatLM`, same GGUF) on captions (target ≤ 1.05).
2. Per-token unpack time vs one float32 GEMV over all the model's weight matrices
   (the memory-bound floor for streaming the model once; target ≤ 2), measured with
   ``OPENBLAS_NUM_THREADS=1`` and ``=2`` (and the same ``SEMCODEC_THREADS``) — each in a
   fresh worker process, since OpenBLAS reads the variable when it loads.
3. Batch pack time vs unpack time of the same caption (target ≤ 1/3).
4. Many files: ``unpack_many`` (one model pass per step for all files) vs one by one.
5. Cold-process ``semcodec unpack`` of a caption, model cached (target < 2 s wall).
6. Unpack ms per token of every profile next to model 0's, same process (target for the
   default profile: ≤ 1.2× model 0; a primed context makes every step attend to more
   positions). ``--profiles-only`` runs just this.

    OPENBLAS_NUM_THREADS=1 python benchmarks/runtime_speed.py ../shared/data/coco-captions-dev.txt --limit 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SEMCODEC_THREADS")
"""Set together in each worker: the BLAS pool size, and the cap semcodec's pack/unpack apply
themselves (``semcodec.models.blas_threads``, default 1), so "2 threads" means 2 everywhere."""


def _captions(path: str, limit: int) -> list[str]:
    from semcodec.bench.corpus import read_corpus

    return read_corpus(path).texts[:limit]


def _default_captions() -> str:
    """The development captions: ``shared/data`` inside the checkout or beside it."""
    repo = Path(__file__).resolve().parent.parent
    for base in (repo / "shared" / "data", repo.parent / "shared" / "data", Path("shared") / "data"):
        if (base / "coco-captions-dev.txt").is_file():
            return str(base / "coco-captions-dev.txt")
    raise SystemExit("runtime_speed.py: no shared/data/coco-captions-dev.txt here; pass a captions file")


def _median_caption(texts: list[str]) -> str:
    """The caption of median token count: a typical caption, not a cherry-picked one."""
    from semcodec.models import load_model

    tok = load_model(0).tokenizer
    ranked = sorted(texts, key=lambda t: len(tok.encode(t)))
    return ranked[len(ranked) // 2]


# -- 1. cross-entropy ------------------------------------------------------------------


def cross_entropy(texts: list[str]) -> dict[str, float]:
    """Total bits of ``texts`` (+ end-of-text each) under the exact runtime and float32."""
    import numpy as np

    from semcodec.codec import frequency_tables
    from semcodec.coding import cross_entropy_bits
    from semcodec.models import load_model
    from semcodec.models.reference import FloatLM
    from semcodec.models.weights import ensure_gguf
    from semcodec.registry import model_spec

    model = load_model(0)
    ref = FloatLM(ensure_gguf(model_spec(0).weights))
    ctx = list(model.context_ids)
    exact = floating = 0.0
    for text in texts:
        symbols, tables = frequency_tables(text, 0)  # the model's bits only, as the float side
        exact += cross_entropy_bits(symbols, list(tables))
        tokens = model.tokenizer.encode(text)
        logp = ref.log_probs(ctx + tokens)
        rows = np.arange(len(ctx) - 1, len(ctx) + len(tokens))
        floating += float(-logp[rows, [*tokens, model.eos_id]].sum() / np.log(2))
    return {"texts": len(texts), "exact_bits": exact, "float_bits": floating}


# -- 2./3. the worker, run once per thread count --------------------------------------------


def _timed(fn: Any, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one untimed warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(caption: str, step_texts: list[str]) -> dict[str, Any]:
    """Speeds in this process (its thread count fixed by the environment it started with)."""
    import numpy as np

    import semcodec
    from semcodec.models import load_model
    from semcodec.models.exact import Session

    model = load_model(0)
    w = model.lm.w
    matrices = [w.embed_q] + [
        m for layer in w.layers for m in (layer.wq, layer.wk, layer.wv, layer.wo, layer.wg, layer.wu, layer.wd)
    ]
    weights = sum(m.size for m in matrices)
    # One GEMV per matrix, float32 like the runtime's products: streaming every weight once.
    vectors = [np.ones((1, m.shape[1]), dtype=np.float32) for m in matrices]
    gemv = _timed(lambda: [v @ m.T for v, m in zip(vectors, matrices, strict=True)], 9)

    steps: list[float] = []
    for text in step_texts:
        session = Session(model.lm, model.context_ids)
        session.next_frequencies()
        for token in model.tokenizer.encode(text):
            t0 = time.perf_counter()
            session.append(token)
            session.next_frequencies()
            steps.append(time.perf_counter() - t0)
    data = semcodec.pack(caption)
    n_symbols = semcodec.unpack(data).n_tokens + 1
    pack = _timed(lambda: semcodec.pack(caption), 5)
    unpack = _timed(lambda: semcodec.unpack(data), 5)
    return {
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        "weights": weights,
        "gemv_s": gemv,
        "step_s": statistics.median(steps),
        "steps": len(steps),
        "unpack_s": unpack,
        "unpack_per_symbol_s": unpack / n_symbols,
        "pack_s": pack,
        "symbols": n_symbols,
    }


def run_worker(threads: int, caption: str, step_texts: list[str]) -> dict[str, Any]:
    env = {**os.environ, **{var: str(threads) for var in THREAD_VARS}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as job:
        json.dump({"caption": caption, "step_texts": step_texts}, job)
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", job.name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(job.name)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- 4. many files at once -----------------------------------------------------------------


def batch_unpack(texts: list[str]) -> dict[str, float]:
    """Seconds to unpack ``texts``' files one by one, and all at once with ``unpack_many``."""
    import semcodec
    from semcodec.codec import unpack_many

    blobs = [semcodec.pack(t) for t in texts]
    semcodec.unpack(blobs[0])  # model load and first-call costs are not decoding
    t0 = time.perf_counter()
    singles = [semcodec.unpack(b).text for b in blobs]
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = unpack_many(blobs)
    together = time.perf_counter() - t0
    if singles != texts or [getattr(r, "text", None) for r in batched] != texts:
        raise RuntimeError("batch unpacking returned different texts")
    return {"files": len(texts), "sequential_s": sequential, "batched_s": together}


# -- 5. cold process -------------------------------------------------------------------------


def cold_unpack(caption: str, runs: int) -> list[float]:
    """Wall seconds of ``python -m semcodec unpack FILE`` in a new process each time."""
    import semcodec

    with tempfile.TemporaryDirectory() as tmp:
        sem = Path(tmp) / "caption.sem"
        sem.write_bytes(semcodec.pack(caption))
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "semcodec", "unpack", str(sem)],
                capture_output=True,
                text=True,
                check=True,
            )
            walls.append(time.perf_counter() - t0)
            if out.stdout.rstrip("\n") != caption:
                raise RuntimeError("cold unpack printed the wrong text")
    return walls


# -- 6. every profile -----------------------------------------------------------------------


def profile_speeds(texts: list[str], repeats: int) -> dict[int, dict[str, float]]:
    """Median unpack seconds per text token of each profile (context cached, model loaded),
    over ``texts``, alternating profiles in each round so machine load hits all alike."""
    import semcodec
    from semcodec.models import context_state
    from semcodec.registry import MODELS

    files = {m: [semcodec.pack(t, model_id=m) for t in texts] for m in MODELS}
    for m in MODELS:
        context_state(m)
        semcodec.unpack(files[m][0])
    times: dict[int, list[float]] = {m: [] for m in MODELS}
    tokens = {m: sum(semcodec.unpack(f).n_tokens + 1 for f in files[m]) for m in MODELS}
    for _ in range(repeats):
        for m in MODELS:
            t0 = time.perf_counter()
            for f in files[m]:
                semcodec.unpack(f)
            times[m].append(time.perf_counter() - t0)
    return {
        m: {"per_token_s": statistics.median(times[m]) / tokens[m], "bytes": sum(map(len, files[m])) / len(texts)}
        for m in MODELS
    }


def profile_rows(texts: list[str], repeats: int) -> list[list[str]]:
    from semcodec.models import load_model
    from semcodec.registry import DEFAULT_MODEL_ID

    speeds = profile_speeds(texts, repeats)
    base = speeds[0]["per_token_s"]
    rows = []
    for m, sp in speeds.items():
        ctx = len(load_model(m).context_ids)
        tag = " (default)" if m == DEFAULT_MODEL_ID else ""
        rows.append([
            f"unpack per token, profile {m}{tag}, context {ctx} tokens ({sp['bytes']:.1f} B/file)",
            f"{1e3 * sp['per_token_s']:.1f} ms",
            "vs profile 0",
            f"{sp['per_token_s'] / base:.2f}",
            "≤ 1.2" if m == DEFAULT_MODEL_ID else "",
        ])
    return rows


# -- report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "captions", nargs="?", metavar="CORPUS", help="captions, one per line (default: shared/data's COCO captions)"
    )
    parser.add_argument("--limit", type=int, default=50, help="captions for the cross-entropy (default 50)")
    parser.add_argument("--threads", default="1,2", help="OPENBLAS_NUM_THREADS values to measure (default 1,2)")
    parser.add_argument("--step-texts", type=int, default=3, help="captions decoded step by step (default 3)")
    parser.add_argument("--batch-files", type=int, default=10, help="files for the batch unpack (default 10)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold `semcodec unpack` runs (default 3)")
    parser.add_argument("--profile-texts", type=int, default=5, help="captions unpacked per profile (default 5)")
    parser.add_argument("--profile-repeats", type=int, default=3, help="rounds over the profiles (default 3)")
    parser.add_argument("--profiles-only", action="store_true", help="only the per-profile unpack speeds")
    parser.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(Path(args.worker).read_text(encoding="utf-8"))
        print(json.dumps(worker(job["caption"], job["step_texts"])))
        return 0

    from semcodec.bench.tables import render

    texts = _captions(args.captions or _default_captions(), args.limit)
    caption = _median_caption(texts)
    print(f"captions: first {len(texts)} of {args.captions}; typical caption (median length): {caption!r}")
    env = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in ("OPENBLAS_NUM_THREADS", "SEMCODEC_THREADS"))
    print(f"parent process (cross-entropy, batch and cold unpack): {env}\n", flush=True)

    rows: list[list[str]] = []
    if args.profiles_only:
        rows = profile_rows(texts[: args.profile_texts], args.profile_repeats)
        print(render(["measurement", "value", "ratio", "", "target"], rows, left=1))
        return 0
    ce = cross_entropy(texts)
    per = 1 / ce["texts"]
    rows.append(["cross-entropy, exact integer runtime", f"{ce['exact_bits'] * per:.2f} bits/caption", "", "", ""])
    rows.append(
        [
            "cross-entropy, float32 reference",
            f"{ce['float_bits'] * per:.2f} bits/caption",
            "exact / float32",
            f"{ce['exact_bits'] / ce['float_bits']:.4f}",
            "≤ 1.05",
        ]
    )
    for threads in [int(t) for t in args.threads.split(",")]:
        w = run_worker(threads, caption, texts[: args.step_texts])
        tag = f"[{threads} thread{'s' if threads > 1 else ''}]"
        rows.append(
            [
                f"{tag} float32 GEMV over {w['weights'] / 1e6:.1f}M weights",
                f"{1e3 * w['gemv_s']:.1f} ms",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                f"{tag} unpack, one decode step (median of {w['steps']})",
                f"{1e3 * w['step_s']:.1f} ms",
                "step / GEMV",
                f"{w['step_s'] / w['gemv_s']:.2f}",
                "≤ 2",
            ]
        )
        rows.append(
            [
                f"{tag} unpack, whole file per symbol ({w['symbols']} symbols)",
                f"{1e3 * w['unpack_per_symbol_s']:.1f} ms",
                "per symbol / GEMV",
                f"{w['unpack_per_symbol_s'] / w['gemv_s']:.2f}",
                "",
            ]
        )
        rows.append(
            [
                f"{tag} pack (batched) vs unpack, same caption",
                f"{1e3 * w['pack_s']:.0f} / {1e3 * w['unpack_s']:.0f} ms",
                "pack / unpack",
                f"{w['pack_s'] / w['unpack_s']:.3f}",
                "≤ 0.333",
            ]
        )
    batch = batch_unpack(texts[: args.batch_files])
    rows.append(
        [
            f"unpack_many of {batch['files']} captions vs one by one",
            f"{batch['batched_s']:.2f} / {batch['sequential_s']:.2f} s",
            "batched / sequential",
            f"{batch['batched_s'] / batch['sequential_s']:.3f}",
            "< 1",
        ]
    )
    rows += profile_rows(texts[: args.profile_texts], args.profile_repeats)
    walls = cold_unpack(caption, args.cold_runs)
    wall = statistics.median(walls)
    rows.append(
        [
            f"cold `semcodec unpack`, model cached (median of {len(walls)})",
            f"{wall:.2f} s",
            "wall / 2 s",
            f"{wall / 2:.2f}",
            "< 1",
        ]
    )
    print(render(["measurement", "value", "ratio", "", "target"], rows, left=1))
    print(
        "\nGEMV: one float32 matrix–vector product per weight matrix (embedding/output head and every\n"
        "layer's q, k, v, o, gate, up, down), median of 9 sweeps: the time to stream the weights once.\n"
        "Decode step: append one token to the KV cache and compute the next frequency table (Session,\n"
        "at the worker's thread count). Whole file: semcodec.unpack, SEMCODEC_THREADS = the worker's count;\n"
        "per symbol includes evaluating the context.\n"
        "Cold unpack: a new "
        f"`{Path(sys.executable).name} -m semcodec unpack` process per run (imports, model load, decode)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
