#!/usr/bin/env python3
"""Attention over a profile's context: int8 limbs vs float64 images, A/B in one process.

1. Kernels alone (``semcodec.models.attention``): one decode step's scores and weighted
   values over all 30 layers of profile 3's context, cut to several lengths, caches
   flushed between passes (135 MB read: what the weights stream does to them).
2. Whole decode steps of profiles 0 and 3, the prefix kernel switched between the two
   (``Int8Prefix`` only runs for one file's step over a prefix of at least
   ``LIMB_MIN_POSITIONS``; shorter ones use float64 either way), rounds alternated.

Both print thread CPU milliseconds (robust to other processes taking the CPU away) and,
for decode steps, wall milliseconds too; ratios come from the same run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/prefix_attention.py --rounds 4
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from semcodec.models.attention import PrefixProducts

CAPTIONS = [
    "A red double decker bus driving down a city street next to tall buildings.",
    "Two giraffes standing next to each other in a grassy field.",
]


def _step(kernel: PrefixProducts, q: np.ndarray, p: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
    return kernel.scores(layer, q[layer]), kernel.weigh(layer, p[layer])


def kernels(lengths: list[int], rounds: int) -> list[list[str]]:
    from semcodec.models import context_state
    from semcodec.models.attention import Float64Prefix, Int8Prefix

    prefix = context_state(3).prefix
    layers, _, kv, d = prefix.keys.shape
    flush = np.ones(135_000_000 // 8)
    rng = np.random.default_rng(0)
    rows = []
    for t in [n for n in lengths if n <= prefix.length]:
        keys, values = np.ascontiguousarray(prefix.keys[:, :t]), np.ascontiguousarray(prefix.values[:, :t])
        q = rng.integers(-2**15, 2**15, (layers, kv, 3, d)).astype(np.float64)
        p = rng.integers(0, 2**16 + 1, (layers, kv, 3, t))
        limbs, images = Int8Prefix(keys, values), Float64Prefix(keys, values)
        runs: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
            limbs.name: functools.partial(_step, limbs, q, p),
            images.name: functools.partial(_step, images, q, p),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for li in range(layers):  # first use builds the layouts; the results must be equal
            for a, b in zip(runs[limbs.name](li), runs[images.name](li), strict=True):
                if not np.array_equal(a, b):
                    raise RuntimeError(f"the kernels disagree at layer {li}")
        for _ in range(rounds):
            for name in random.sample(list(runs), len(runs)):
                flush.sum()
                c = time.thread_time()
                for li in range(layers):
                    runs[name](li)
                times[name].append(time.thread_time() - c)
        med = {name: statistics.median(v) for name, v in times.items()}
        rows.append([f"kernels, {t} positions, {layers} layers", *(f"{1e3 * med[n]:.2f} ms" for n in runs),
                     f"{med[limbs.name] / med[images.name]:.2f}"])
    return rows


def decode(rounds: int) -> list[list[str]]:
    from semcodec.models import context_state, load_model

    models = {m: load_model(m) for m in (0, 3)}
    for m in models:
        context_state(m)

    def run(m: int, kind: str) -> tuple[float, float]:
        model = models[m]
        model.lm._prefix_backend = kind  # "int8": limbs where they apply; "numpy": float64 images
        n, w, c = 0, time.perf_counter(), time.thread_time()
        for caption in CAPTIONS:
            [state] = model.decoders(1)
            for token in model.tokenizer.encode(caption):
                model.next_tables([state])
                model.step_many([state], [token])
                n += 1
        return (time.thread_time() - c) / n, (time.perf_counter() - w) / n

    combos = [(m, k) for m in models for k in ("int8", "numpy")]
    for m, k in combos:
        run(m, k)
    got: dict[tuple[int, str], list[tuple[float, float]]] = {c: [] for c in combos}
    for _ in range(rounds):
        for combo in random.sample(combos, len(combos)):
            got[combo].append(run(*combo))
    cpu = {c: statistics.median(x for x, _ in v) for c, v in got.items()}
    wall = {c: statistics.median(y for _, y in v) for c, v in got.items()}
    rows = []
    for k, label in (("int8", "limbs"), ("numpy", "float64")):
        for clock, took in (("cpu", cpu), ("wall", wall)):
            rows.append([f"decode step per token, prefix kernel {label} ({clock})", f"{1e3 * took[(0, k)]:.1f} ms",
                         f"{1e3 * took[(3, k)]:.1f} ms", f"{took[(3, k)] / took[(0, k)]:.2f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternated rounds per measurement (default 4)")
    parser.add_argument("--lengths", default="64,256,512,921", help="kernel prefix lengths (%(default)s)")
    args = parser.parse_args(argv)

    from semcodec.bench.tables import render

    rows = kernels([int(n) for n in args.lengths.split(",")], args.rounds)
    print(render(["measurement", "limbs", "float64", "limbs / float64"], rows, left=1))
    print()
    print(render(["measurement", "profile 0", "profile 3", "3 / 0"], decode(args.rounds), left=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
