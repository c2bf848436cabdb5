"""What ``semcodec bench text`` does, given its parsed options (the parser is :mod:`semcodec.cli.bench`).

Tables go to stdout (or ``--json``), progress to stderr; errors are raised for the command
line's error map to word and number.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from semcodec.exitcodes import EXIT_OK


def _say(quiet: bool) -> Any:
    def say(message: str) -> None:
        if not quiet:
            print(f"bench: {message}", file=sys.stderr, flush=True)

    return say


def run_text(args: argparse.Namespace) -> int:
    """``semcodec bench text`` with parsed ``args``; returns the exit code (errors raise)."""
    from semcodec.bench.corpus import read_corpus
    from semcodec.bench.textbench import dumps, render_text_bench, run_text_bench

    say = _say(args.quiet)
    corpora = [read_corpus(path) for path in args.corpora]
    benches = []
    for corpus in corpora:
        bench = run_text_bench(
            corpus,
            limit=args.limit,
            models=args.models,
            unpack_limit=args.unpack_limit,
            dict_size=args.zstd_dict_size,
            say=say,
        )
        benches.append(bench)
        if not args.json:
            print(render_text_bench(bench) + "\n", flush=True)
    if args.json:
        print(dumps(benches))
    return EXIT_OK
