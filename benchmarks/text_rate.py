#!/usr/bin/env python3
"""Text rate benchmark: semcodec against UTF-8, zlib -9, zstd -19 (± dictionary) and brotli -q11.

For each corpus (one text per line) it codes each of the first ``--limit`` texts on its
own and prints mean bytes per text, bits per character, the ratio to brotli, pack and
unpack tokens per second, and, for semcodec, the model's cross-entropy (the floor) and
the gap to it. Same engine as ``semcodec bench text``; like it, this script measures
every model profile by default (``--models`` picks some) and prints the run's
environment so a table can be quoted.

    OPENBLAS_NUM_THREADS=1 python benchmarks/text_rate.py ../shared/data/coco-captions-dev.txt --limit 300
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    from semcodec.bench.classic import ZSTD_DICT_SIZE
    from semcodec.bench.corpus import read_corpus
    from semcodec.bench.lmrate import UNPACK_LIMIT
    from semcodec.bench.textbench import dumps, render_text_bench, run_text_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", metavar="CORPUS")
    parser.add_argument("--limit", type=int, help="first N texts of each corpus (default: all)")
    parser.add_argument("--models", help="comma-separated model profiles (default: every profile)")
    parser.add_argument("--unpack-limit", type=int, default=UNPACK_LIMIT, help="texts unpacked per profile")
    parser.add_argument("--zstd-dict-size", type=int, default=ZSTD_DICT_SIZE)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    models = None if args.models is None else [int(m) for m in args.models.split(",")]

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    benches = []
    for path in args.corpora:
        started = time.perf_counter()
        bench = run_text_bench(
            read_corpus(path),
            limit=args.limit,
            models=models,
            unpack_limit=args.unpack_limit,
            dict_size=args.zstd_dict_size,
            say=say,
        )
        benches.append(bench)
        if not args.json:
            print(render_text_bench(bench))
            print(f"  ({time.perf_counter() - started:.0f} s)\n", flush=True)
    if args.json:
        print(dumps(benches))
    else:
        threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
        print(
            f"environment: {_cpu()}, {os.cpu_count()} logical CPUs, OPENBLAS_NUM_THREADS={threads}, "
            f"Python {platform.python_version()}"
        )
    return 0


if __name__ == "__main__":
    from _oneline import run_script

    sys.exit(run_script("text_rate", main))
