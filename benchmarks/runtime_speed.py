#!/usr/bin/env python3
"""Exact-runtime quality and speed, each figure printed as a ratio measured in the same run.

1. Quality: cross-entropy of the exact integer runtime vs the float32 reference model
   (:class:`semcodec.models.reference.FloatLM`, same GGUF) on captions (target ≤ 1.05).
2. Single-file unpack, ms per token, next to the floor: one int8 GEMV pass over every
   weight matrix with the runtime's own kernel (streaming the 134.5 MB of int8 weights
   once), and one float32 GEMV pass (what the float32 runtime streamed: 538 MB). Target:
   step ≤ 1.5 × the int8 pass. Measured in a worker process per thread count
   (``SEMCODEC_THREADS`` = ``OPENBLAS_NUM_THREADS`` = N).
3. Pack time of the same caption.
4. Many files: ``unpack_many`` on 64 captions, captions per second, vs one by one.
5. Cold-process ``semcodec unpack`` of a caption, model cached: wall seconds and peak RSS
   (targets ≤ 0.8 s, ≤ 300 MB), for a default-profile file and, alternating with it, a
   model-0 file (what the primed context costs). ``--cold-only`` runs just this.
6. Unpack ms per token of every profile next to model 0's, same process (target for the
   default profile: ≤ 1.2× model 0; a primed context makes every step attend to more
   positions). ``--profiles-only`` runs just this.
7. Where ``llama-cpp-python`` is installed: llama.cpp's ms per token on the same GGUF (Q4_1,
   the bytes it ships) and on a Q8_0 requantisation of it (the weight bytes of our int8
   runtime), in the same worker with the same thread count, one token per ``eval`` (a
   multi-token eval hit SIGILL in ggml's AMX path on one VM), after an empty context and
   after 2,000 tokens.

    OPENBLAS_NUM_THREADS=1 python benchmarks/runtime_speed.py ../shared/data/coco-captions-dev.txt --limit 50

``SEMCODEC_BACKEND`` (int8, numpy, torch, cuda) picks the kernel, as for the codec.
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

from _common import default_captions, timed

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SEMCODEC_THREADS")
"""Set together in each worker: the BLAS pool size, and the threads semcodec gives its own
kernels and BLAS (``SEMCODEC_THREADS``, default 1), so "2 threads" means 2 everywhere."""


def _captions(path: str, limit: int) -> list[str]:
    from semcodec.bench.corpus import read_corpus

    return read_corpus(path).texts[:limit]


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


def worker(caption: str, step_texts: list[str]) -> dict[str, Any]:
    """Speeds in this process (its thread count fixed by the environment it started with)."""
    import numpy as np

    import semcodec
    from semcodec.models import load_model

    model = load_model(0)
    lm = model.lm
    matrices = lm.w.matrices()
    weights = sum(m.shape[0] * m.shape[1] for m in matrices)
    # The floor: one GEMV per weight matrix with the runtime's kernel, streaming every weight once.
    int8_x = [np.ones((1, m.shape[0]), dtype=np.int8) for m in matrices]
    int8_pass = timed(lambda: [lm.products(x, m) for x, m in zip(int8_x, matrices, strict=True)], 9)
    # The same pass in float32 over (N, K) copies: what the float32 runtime streamed per token.
    f32 = [np.ascontiguousarray(m.q.T, dtype=np.float32) for m in matrices]
    f32_x = [np.ones((1, m.shape[1]), dtype=np.float32) for m in f32]
    f32_pass = timed(lambda: [x @ m.T for x, m in zip(f32_x, f32, strict=True)], 5)

    steps: list[float] = []
    for text in step_texts:
        [state] = model.decoders(1)
        model.next_tables([state])
        for token in model.tokenizer.encode(text):
            t0 = time.perf_counter()
            model.step_many([state], [token])
            model.next_tables([state])
            steps.append(time.perf_counter() - t0)
    paths, parts, by_position = step_breakdown(lm, model.tokenizer.encode(" ".join(step_texts)))
    llama = llama_cpp_steps(model.tokenizer.encode(" ".join(step_texts)))
    data = semcodec.pack(caption)
    n_symbols = semcodec.unpack(data).n_tokens + 1
    pack = timed(lambda: semcodec.pack(caption), 5)
    unpack = timed(lambda: semcodec.unpack(data), 5)
    return {
        "threads": os.environ.get("SEMCODEC_THREADS", "unset"),
        "kernel": lm.products.name,
        "weights": weights,
        "int8_pass_s": int8_pass,
        "f32_pass_s": f32_pass,
        "step_s": statistics.median(steps),
        "steps": len(steps),
        "unpack_s": unpack,
        "unpack_per_symbol_s": unpack / n_symbols,
        "pack_s": pack,
        "symbols": n_symbols,
        "paths": paths,
        "parts": parts,
        "by_position": by_position,
        "llama_cpp": llama,
    }


def llama_cpp_steps(tokens: list[int], positions: tuple[int, ...] = (0, 2000)) -> dict[str, float]:
    """llama.cpp's seconds per token (median, one token per eval, logits of each) on the
    registry's GGUF (Q4_1) and on its Q8_0 requantisation, after each of ``positions``
    tokens of context: {"Q4_1 @ 0": s, ...}; empty without ``llama_cpp``."""
    try:
        import llama_cpp
    except ImportError:
        return {}
    from semcodec.models.weights import ensure_gguf
    from semcodec.registry import SMOLLM2_135M_INSTRUCT

    threads = int(os.environ.get("SEMCODEC_THREADS", "1"))
    q4 = ensure_gguf(SMOLLM2_135M_INSTRUCT)
    q8 = Path(tempfile.gettempdir()) / f"semcodec-bench-{SMOLLM2_135M_INSTRUCT.gguf_sha256[:16]}-q8_0.gguf"
    if not q8.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        params.nthread = threads
        if llama_cpp.llama_model_quantize(str(q4).encode(), str(q8).encode(), params) != 0:
            return {}
    out: dict[str, float] = {}
    for name, path in (("Q4_1", q4), ("Q8_0", q8)):
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(positions) + 64, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        for position in positions:
            llm.reset()
            filler = (tokens * (position // max(1, len(tokens)) + 1))[:position]
            for token in filler:
                llm.eval([token])
            times = []
            for token in tokens[:16]:
                t0 = time.perf_counter()
                llm.eval([token])
                times.append(time.perf_counter() - t0)
            out[f"{name} @ {position}"] = statistics.median(times)
        del llm
    return out


class _Timed:
    """Wraps a callable and adds its wall time to ``totals[name]``."""

    def __init__(self, fn: Any, name: str, totals: dict[str, float]) -> None:
        self.fn, self.name, self.totals = fn, name, totals
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - t0


def _steps(lm: Any, tokens: list[int], position: int = 0, steps: int | None = None) -> list[float]:
    """Seconds per decode step (forward one token, then its table) after ``position`` tokens."""
    cache = lm.new_cache()
    filler = (tokens * (position // max(1, len(tokens)) + 1))[:position]
    if filler:
        lm.forward(filler, cache)
    out = []
    for token in tokens[: steps or len(tokens)]:
        t0 = time.perf_counter()
        lm.tables(lm.forward([token], cache)[-1:])
        out.append(time.perf_counter() - t0)
    return out


def step_breakdown(lm: Any, tokens: list[int], positions: tuple[int, ...] = (100, 500, 1000, 2000),
                   ) -> tuple[dict[str, float], dict[str, float], dict[int, float]]:
    """The decode step (no context) per product path, and the numpy code's step for comparison;
    the parts of the default path's step; and ms/token at positions 100, 500, 1,000, 2,000 (a
    cache filled with the same text repeated)."""
    import numpy as np

    from semcodec.models.exact import ExactLM
    from semcodec.models.kernels import NativeProducts, OnnxProducts, native_products_module

    paths: dict[str, float] = {}
    native = native_products_module()
    arms: list[Any] = [NativeProducts(path=p) for p in native.vector_paths()] if native is not None else []
    arms.append(OnnxProducts())
    for products in arms:
        arm = ExactLM(lm.w, products)
        name = products.name + (", native step" if arm._native_step_model is not None else "")
        paths[name] = statistics.median(_steps(arm, tokens, 0, 12))
        if arm._native_step_model is not None and products.name == lm.products.name:
            arm.native_step = False  # the same products under the numpy code's step (SPEC §5 in numpy)
            paths[products.name + ", numpy step"] = statistics.median(_steps(arm, tokens, 0, 12))
    timed_lm = ExactLM(lm.w, lm.products)
    totals: dict[str, float] = {}
    steps_native = timed_lm._native_step_model is not None  # (made before products is wrapped below)
    timed_lm.products = _Timed(timed_lm.products, "output head products", totals)  # type: ignore[assignment]
    if steps_native:  # every layer in one native call: its products are timed apart, below
        timed_lm._native_forward_one = _Timed(timed_lm._native_forward_one, "layers (native step)", totals)  # type: ignore[method-assign]
    else:
        timed_lm.products = _Timed(lm.products, "products", totals)  # type: ignore[assignment]
        for name in ("_attention", "_rope", "_norm", "_silu"):
            setattr(timed_lm, name, _Timed(getattr(timed_lm, name), name.strip("_"), totals))
    timed_lm._frequencies_into = _Timed(timed_lm._frequencies_into, "frequencies", totals)  # type: ignore[method-assign]
    cache = timed_lm.new_cache()
    timed_lm.forward(tokens[:1], cache)
    totals.clear()
    t0 = time.perf_counter()
    for token in tokens[1:13]:
        timed_lm.tables(timed_lm.forward([token], cache)[-1:])
    whole = time.perf_counter() - t0
    n = len(tokens[1:13])
    parts = {name: value / n for name, value in totals.items()}
    parts["step"] = whole / n
    parts["rest"] = parts["step"] - sum(v for k, v in parts.items() if k != "step")
    if steps_native:  # the layers' weight products alone (one GEMV per matrix, same kernel and threads)
        layer_mats = [m for m in lm.w.matrices() if m is not lm.w.embed]
        xs = [np.ones((1, m.shape[0]), dtype=np.int8) for m in layer_mats]
        parts["  of which the layers' weight products"] = timed(
            lambda: [lm.products(x, m) for x, m in zip(xs, layer_mats, strict=True)], 9)
    by_position = {p: statistics.median(_steps(lm, tokens, p, 5)) for p in positions}
    return paths, parts, by_position


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


def batch_unpack(texts: list[str], singles: int) -> dict[str, float]:
    """Seconds to unpack ``texts``' files all at once with ``unpack_many``, and the first
    ``singles`` of them one by one."""
    import semcodec
    from semcodec.codec import unpack_many
    from semcodec.models import load_model

    blobs = [semcodec.pack(t) for t in texts]
    semcodec.unpack(blobs[0])  # model load and first-call costs are not decoding
    t0 = time.perf_counter()
    one_by_one = [semcodec.unpack(b).text for b in blobs[:singles]]
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = unpack_many(blobs)
    together = time.perf_counter() - t0
    # The same files through the numpy code's lockstep step (what unpack_many ran before step_many).
    lm = load_model(semcodec.unpack(blobs[0]).header.model_id).lm
    lm.native_step = False
    try:
        t0 = time.perf_counter()
        numpy_batched = unpack_many(blobs)
        numpy_together = time.perf_counter() - t0
    finally:
        lm.native_step = True
    if one_by_one != texts[:singles] or any([getattr(r, "text", None) for r in b] != texts
                                            for b in (batched, numpy_batched)):
        raise RuntimeError("batch unpacking returned different texts")
    return {"files": len(texts), "singles": singles, "sequential_s": sequential, "batched_s": together,
            "numpy_batched_s": numpy_together}


# -- 5. cold process -------------------------------------------------------------------------

_COLD = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
out = subprocess.run([sys.executable, "-m", "semcodec", "unpack", sys.argv[1]], capture_output=True, text=True)
wall = time.perf_counter() - t0
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, out.returncode)
sys.stdout.write(out.stdout)
"""


def cold_unpack(caption: str, runs: int, model_ids: list[int]) -> dict[int, list[tuple[float, float]]]:
    """(wall seconds, peak RSS in MB) of ``python -m semcodec unpack FILE`` for a file of each
    model, a new process each time, the models alternating so that machine load hits all
    alike; the RSS is read by a small parent that has no other child (``RUSAGE_CHILDREN``)."""
    import semcodec

    with tempfile.TemporaryDirectory() as tmp:
        # Bytecode cached (in a folder of its own) as for an installed package: with
        # PYTHONDONTWRITEBYTECODE every run would compile semcodec's sources again (~50 ms).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        files = {}
        for m in model_ids:
            files[m] = Path(tmp) / f"caption-{m}.sem"
            files[m].write_bytes(semcodec.pack(caption, model_id=m))
            # A first, unmeasured run: bytecode written, the model cache complete (context evaluated,
            # files recorded as verified).
            subprocess.run([sys.executable, "-m", "semcodec", "unpack", str(files[m])], capture_output=True,
                           env=env, check=True)
        results: dict[int, list[tuple[float, float]]] = {m: [] for m in model_ids}
        for _ in range(runs):
            for m in model_ids:
                out = subprocess.run([sys.executable, "-c", _COLD, str(files[m])], capture_output=True, text=True,
                                     env=env, check=True)
                head, _, text = out.stdout.partition("\n")
                wall, rss_kb, code = head.split()
                if code != "0" or text != caption:
                    raise RuntimeError(f"cold unpack failed or printed the wrong text: {out.stdout!r}")
                results[m].append((float(wall), int(rss_kb) / 1024))
    return results


def cold_rows(caption: str, runs: int) -> list[list[str]]:
    from semcodec.registry import DEFAULT_MODEL_ID

    models = [DEFAULT_MODEL_ID, *([0] if DEFAULT_MODEL_ID != 0 else [])]
    measured = cold_unpack(caption, runs, models)
    rows = []
    for m in models:
        walls = measured[m]
        wall = statistics.median(w for w, _ in walls)
        rss = max(r for _, r in walls)
        tag = f"model {m}{' (default)' if m == DEFAULT_MODEL_ID else ''}"
        rows.append([f"cold `semcodec unpack`, {tag}, model cached (median of {len(walls)})", f"{wall:.2f} s",
                     "wall / 0.8 s", f"{wall / 0.8:.2f}", "≤ 1"])
        rows.append([f"cold `semcodec unpack`, {tag}, peak RSS (max)", f"{rss:.0f} MB", "RSS / 300 MB",
                     f"{rss / 300:.2f}", "≤ 1"])
    return rows


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
    parser.add_argument("--threads", default="1", help="SEMCODEC_THREADS values to measure (default 1)")
    parser.add_argument("--step-texts", type=int, default=3, help="captions decoded step by step (default 3)")
    parser.add_argument("--batch-files", type=int, default=64, help="files for unpack_many (default 64)")
    parser.add_argument("--singles", type=int, default=8, help="of those, unpacked one by one (default 8)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold `semcodec unpack` runs (default 3)")
    parser.add_argument("--no-quality", action="store_true", help="skip the cross-entropy (loads the float model)")
    parser.add_argument("--profile-texts", type=int, default=5, help="captions unpacked per profile (default 5)")
    parser.add_argument("--profile-repeats", type=int, default=3, help="rounds over the profiles (default 3)")
    parser.add_argument("--profiles-only", action="store_true", help="only the per-profile unpack speeds")
    parser.add_argument("--cold-only", action="store_true", help="only the cold `semcodec unpack` runs")
    parser.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(Path(args.worker).read_text(encoding="utf-8"))
        print(json.dumps(worker(job["caption"], job["step_texts"])))
        return 0

    from semcodec.bench.tables import render

    path = args.captions or default_captions("runtime_speed.py")
    texts = _captions(path, max(args.limit, args.batch_files))
    caption = _median_caption(texts[: args.limit])
    print(f"captions: {path}; typical caption (median length of the first {args.limit}): {caption!r}")
    env = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in (*THREAD_VARS, "SEMCODEC_BACKEND"))
    print(f"parent process (cross-entropy, batch and cold unpack): {env}\n", flush=True)

    rows: list[list[str]] = []
    if args.profiles_only:
        rows = profile_rows(texts[: args.profile_texts], args.profile_repeats)
        print(render(["measurement", "value", "ratio", "", "target"], rows, left=1))
        return 0
    rows += cold_rows(caption, args.cold_runs)  # first: nothing else is cached in the page cache's favour
    if args.cold_only:
        print(render(["measurement", "value", "ratio", "", "target"], rows, left=1))
        return 0
    if not args.no_quality:
        ce = cross_entropy(texts[: args.limit])
        per = 1 / ce["texts"]
        rows.append(["cross-entropy, exact integer runtime", f"{ce['exact_bits'] * per:.2f} bits/caption", "", "", ""])
        rows.append(["cross-entropy, float32 reference", f"{ce['float_bits'] * per:.2f} bits/caption",
                     "exact / float32", f"{ce['exact_bits'] / ce['float_bits']:.4f}", "≤ 1.05"])
    for threads in [int(t) for t in args.threads.split(",")]:
        w = run_worker(threads, caption, texts[: args.step_texts])
        tag = f"[{w['kernel']}, {threads} thread{'s' if threads > 1 else ''}]"
        floor = w["f32_pass_s"] / 4
        rows.append([f"{tag} int8 memory floor: float32 GEMV over {w['weights'] / 1e6:.1f}M weights / 4",
                     f"{1e3 * floor:.1f} ms", "", "", ""])
        rows.append([f"{tag} int8 GEMV pass, same weights, runtime kernel",
                     f"{1e3 * w['int8_pass_s']:.1f} ms", "pass / floor", f"{w['int8_pass_s'] / floor:.2f}", ""])
        for name, step in w["paths"].items():
            rows.append([f"{tag} decode step, products by {name} (no context)", f"{1e3 * step:.1f} ms",
                         "step / floor", f"{step / floor:.2f}", "≤ 1.5"])
        for name, part in w["parts"].items():
            rows.append([f"{tag} step part: {name}", f"{1e3 * part:.2f} ms", "share of step",
                         f"{part / w['parts']['step']:.2f}", ""])
        for position, step in w["by_position"].items():
            rows.append([f"{tag} decode step at position {position}", f"{1e3 * float(step):.1f} ms",
                         "step / floor", f"{float(step) / floor:.2f}", "≤ 2 at 2000"])
        for name, step in w.get("llama_cpp", {}).items():
            quant, _, position = name.partition(" @ ")
            rows.append([f"{tag} llama.cpp {quant}, same GGUF, step at position {position}", f"{1e3 * step:.1f} ms",
                         "step / floor", f"{step / floor:.2f}", ""])
        rows.append([f"{tag} float32 GEMV pass, same weights", f"{1e3 * w['f32_pass_s']:.1f} ms",
                     "float32 / int8", f"{w['f32_pass_s'] / w['int8_pass_s']:.2f}", ""])
        rows.append([f"{tag} unpack, one decode step (median of {w['steps']})", f"{1e3 * w['step_s']:.1f} ms",
                     "step / int8 pass", f"{w['step_s'] / w['int8_pass_s']:.2f}", "≤ 1.5"])
        rows.append([f"{tag} unpack, whole file per symbol ({w['symbols']} symbols)",
                     f"{1e3 * w['unpack_per_symbol_s']:.1f} ms", "per symbol / int8 pass",
                     f"{w['unpack_per_symbol_s'] / w['int8_pass_s']:.2f}", ""])
        rows.append([f"{tag} pack (batched) vs unpack, same caption",
                     f"{1e3 * w['pack_s']:.0f} / {1e3 * w['unpack_s']:.0f} ms",
                     "pack / unpack", f"{w['pack_s'] / w['unpack_s']:.3f}", "≤ 0.333"])
    batch = batch_unpack(texts[: args.batch_files], args.singles)
    batched_rate = batch["files"] / batch["batched_s"]
    single_rate = batch["singles"] / batch["sequential_s"]
    numpy_rate = batch["files"] / batch["numpy_batched_s"]
    rows.append([f"unpack_many of {batch['files']} captions, the numpy code's lockstep step",
                 f"{numpy_rate:.1f} captions/s", "", "", ""])
    rows.append([f"unpack_many of {batch['files']} captions (native step_many)", f"{batched_rate:.1f} captions/s",
                 "step_many / numpy", f"{batched_rate / numpy_rate:.2f}", ""])
    rows.append([f"unpack one by one ({batch['singles']} of them)", f"{single_rate:.1f} captions/s",
                 "batched / one by one", f"{batched_rate / single_rate:.2f}", "> 1"])
    rows += profile_rows(texts[: args.profile_texts], args.profile_repeats)
    print(render(["measurement", "value", "ratio", "", "target"], rows, left=1))
    print(
        "\nint8 pass: one product per weight matrix (each layer's qkv, o, gate_up, down and the output\n"
        "head) with the runtime's kernel, a 1-row activation, median of 9: the time to stream the int8\n"
        "weights once. float32 pass: the same with float32 (N, K) copies through numpy's BLAS.\n"
        "Decode step: append one token and compute the next frequency table (LoadedModel.step_many +\n"
        "next_tables). Whole file: semcodec.unpack; per symbol includes reading the cached context.\n"
        f"Cold unpack: a new `{Path(sys.executable).name} -m semcodec unpack` process per run (imports, weights\n"
        "mapped and checked against their pins, tokenizer, context, decode), after one unmeasured run that\n"
        "leaves the bytecode and the model cache complete; peak RSS from RUSAGE_CHILDREN of a parent with\n"
        "no other child."
    )
    return 0


if __name__ == "__main__":
    from _oneline import run_script

    sys.exit(run_script("runtime_speed", main))
