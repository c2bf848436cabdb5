#!/usr/bin/env python3
"""Attention over a profile's context: the native kernel vs int8 limbs vs float64 images, A/B in one process.

1. Kernels alone (``semcodec.models.attention``): the prefix's whole part of one decode
   step's attention (scores, softmax weights, weighted values: :func:`attention.attend`, the
   native kernel's one call per layer) over all 30 layers of profile 3's context, cut to
   several lengths, caches flushed between passes (135 MB read: what the weights stream
   does to them). The native kernel in its default storage (int16 pairs for AVX512-VNNI or
   AVX-VNNI where the CPU has it, else int16 rows), as pairs on the AVX-VNNI path (what a
   CPU with AVX-VNNI but no AVX-512 runs), as int16 rows on the AVX2+FMA path (a CPU with
   neither) and on the int32 context in place (no copy).
2. The same at 921 positions for more query rows per kv head (3 per file: batches of
   files; a prefill): the native kernel is used for every row count, float64 BLAS only
   without it.
3. Whole decode steps of profiles 0 and 3 with the prefix kernel switched between the
   three (``PrefixKernels`` picks native when built; limbs run for one file's step over a
   prefix of at least ``LIMB_MIN_POSITIONS``, shorter ones use float64), rounds alternated;
   the native kernel also capped at the AVX-VNNI and AVX2 paths where this CPU has wider ones
   (what CPUs without AVX-512, or without AVX-VNNI too, run; the products stay this CPU's).

All print thread CPU milliseconds (robust to other processes taking the CPU away) and,
for decode steps, wall milliseconds too; ratios come from the same run. Without the
native extension (no C compiler at install) its arms are left out.

    OPENBLAS_NUM_THREADS=1 python benchmarks/prefix_attention.py --rounds 4
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

SHIFT = 15  # the softmax's distance shift (semcodec.models.exact: 2 * 10 + 3 - 8)
CAPTIONS = [
    "A red double decker bus driving down a city street next to tall buildings.",
    "Two giraffes standing next to each other in a grassy field.",
]


def _arms(keys: np.ndarray, values: np.ndarray, table: np.ndarray) -> dict[str, Callable[[int, np.ndarray], object]]:
    """name -> run(layer, q): the prefix's part of one layer's attention for rows q (KV, N, D)."""
    from semcodec.models import attention as att

    own = np.full((keys.shape[2], 1), np.iinfo(np.int64).min // 2)  # no own keys: the prefix holds the maximum
    arms: dict[str, Callable[[int, np.ndarray], object]] = {}
    if att.native_module() is not None:
        paths = att.native_module().vector_paths()  # type: ignore[union-attr]
        # the default storage; the pair layouts on AVX-VNNI (what a CPU with AVX-VNNI but no AVX-512
        # runs); int16 rows on AVX2 (a CPU with neither); the int32 context in place
        chosen = [("auto", None), ("pairs", "avxvnni"), ("int16", "avx2"), ("int32", None)]
        for storage, path in chosen:
            if path is not None and path not in paths:
                continue
            kernel = att.NativePrefix(keys, values, storage, path)
            arms[kernel.name] = lambda li, q, k=kernel: k.attend(li, q, np.broadcast_to(own, q.shape[:2]), table, SHIFT)
    for kernel in (att.Int8Prefix(keys, values), att.Float64Prefix(keys, values)):
        arms[kernel.name] = lambda li, q, k=kernel: att.attend(k, li, q, np.broadcast_to(own, q.shape[:2]), table,
                                                               SHIFT)
    return arms


def _time_arms(arms: dict[str, Callable[[int, np.ndarray], object]], q: np.ndarray, rounds: int) -> dict[str, float]:
    """Median thread seconds per arm over all layers, caches flushed before each pass, arms shuffled."""
    layers = len(q)
    flush = np.ones(135_000_000 // 8)
    results = {name: [run(li, q[li]) for li in range(layers)] for name, run in arms.items()}  # builds the layouts
    first = next(iter(results.values()))
    for name, got in results.items():  # every arm gives the same integers
        for a, b in zip(got, first, strict=True):
            if not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)):  # type: ignore[call-overload]
                raise RuntimeError(f"{name} disagrees")
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(rounds):
        for name in random.sample(list(arms), len(arms)):
            flush.sum()
            c = time.thread_time()
            for li in range(layers):
                arms[name](li, q[li])
            times[name].append(time.thread_time() - c)
    return {name: statistics.median(v) for name, v in times.items()}


def kernels(lengths: list[int], row_counts: list[int], rounds: int) -> tuple[list[str], list[list[str]]]:
    from semcodec.models import context_state, load_model

    prefix = context_state(3).prefix
    table = load_model(3).lm._attention_exp
    layers, _, kv, d = prefix.keys.shape
    rng = np.random.default_rng(0)
    rows, names = [], []
    cases = [(t, 3) for t in lengths if t <= prefix.length] + [(prefix.length, n) for n in row_counts if n != 3]
    for t, n in cases:
        keys, values = np.ascontiguousarray(prefix.keys[:, :t]), np.ascontiguousarray(prefix.values[:, :t])
        q = rng.integers(-2**13, 2**13, (layers, kv, n, d)).astype(np.float64)
        med = _time_arms(_arms(keys, values, table), q, rounds)
        names = list(med)
        base = med["float64"]
        rows.append([f"prefix attention, {t} positions, {n} rows per kv head, {layers} layers",
                     *(f"{1e3 * med[k]:.2f} ms" for k in names), *(f"{med[k] / base:.2f}" for k in names[:-1])])
    return names, rows


def decode(rounds: int) -> list[list[str]]:
    from semcodec.models import attention as att
    from semcodec.models import context_state, load_model
    from semcodec.models.exact import SharedPrefix

    models = {m: load_model(m) for m in (0, 3)}
    prefixes: dict[int, SharedPrefix] = {m: context_state(m).prefix for m in models}
    kinds: dict[str, dict[int, att.PrefixKernels]] = {}
    for m, prefix in prefixes.items():
        if att.native_module() is not None:
            kinds.setdefault("native", {})[m] = att.PrefixKernels(prefix.keys, prefix.values, "int8")
            paths = att.native_module().vector_paths()  # type: ignore[union-attr]
            # what a CPU with AVX-VNNI but no AVX-512 runs, and one with AVX2 alone (as in _arms)
            for storage, path in (("pairs", "avxvnni"), ("int16", "avx2")):
                if path in paths and paths[0] != path:
                    capped = att.PrefixKernels(prefix.keys, prefix.values, "int8")
                    capped._native = att.NativePrefix(prefix.keys, prefix.values, storage, path)
                    kinds.setdefault(f"native {path}", {})[m] = capped
        native, att.native_module = att.native_module, lambda: None  # type: ignore[assignment]
        try:  # without the extension: limbs (long prefixes) or float64
            kinds.setdefault("limbs", {})[m] = att.PrefixKernels(prefix.keys, prefix.values, "int8")
        finally:
            att.native_module = native  # type: ignore[assignment]
        kinds.setdefault("float64", {})[m] = att.PrefixKernels(prefix.keys, prefix.values, "numpy")

    def run(m: int, kind: str) -> tuple[float, float]:
        model = models[m]
        prefixes[m]._products[model.lm._prefix_backend] = kinds[kind][m]
        n, w, c = 0, time.perf_counter(), time.thread_time()
        for caption in CAPTIONS:
            [state] = model.decoders(1)
            for token in model.tokenizer.encode(caption):
                model.next_tables([state])
                model.step_many([state], [token])
                n += 1
        return (time.thread_time() - c) / n, (time.perf_counter() - w) / n

    combos = [(m, k) for m in models for k in kinds]
    for m, k in combos:
        run(m, k)
    got: dict[tuple[int, str], list[tuple[float, float]]] = {c: [] for c in combos}
    for _ in range(rounds):
        for combo in random.sample(combos, len(combos)):
            got[combo].append(run(*combo))
    for m in models:  # as they were
        prefixes[m]._products.clear()
    cpu = {c: statistics.median(x for x, _ in v) for c, v in got.items()}
    wall = {c: statistics.median(y for _, y in v) for c, v in got.items()}
    rows = []
    for k in kinds:
        for clock, took in (("cpu", cpu), ("wall", wall)):
            rows.append([f"decode step per token, prefix kernel {k} ({clock})", f"{1e3 * took[(0, k)]:.1f} ms",
                         f"{1e3 * took[(3, k)]:.1f} ms", f"{took[(3, k)] / took[(0, k)]:.2f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternated rounds per measurement (default 4)")
    parser.add_argument("--lengths", default="64,256,512,921", help="kernel prefix lengths (%(default)s)")
    parser.add_argument("--rows", default="3,12,48", help="query rows per kv head at 921 positions (%(default)s)")
    parser.add_argument("--no-decode", action="store_true", help="kernels only")
    args = parser.parse_args(argv)

    from semcodec.bench.tables import render
    from semcodec.models.attention import native_module

    if native_module() is None:
        print("semcodec.models._prefix is not built: native arms left out")
    names, rows = kernels([int(n) for n in args.lengths.split(",")], [int(n) for n in args.rows.split(",")],
                          args.rounds)
    print(render(["measurement", *names, *(f"{n} / float64" for n in names[:-1])], rows, left=1))
    if not args.no_decode:
        print()
        print(render(["measurement", "profile 0", "profile 3", "3 / 0"], decode(args.rounds), left=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
