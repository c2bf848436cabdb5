"""``semcodec bench text`` and ``semcodec bench images``: argparse in, exit code out.

:func:`register` adds ``bench`` to the top-level subparsers; each command returns

* 0 — done;
* 1 — bad input (a corpus or folder that cannot be read, a bad option);
* 3 — a backend or model is unavailable;
* 4 — ``bench images``: some images failed (each reported; the others are in the table).

Tables go to stdout (or ``--json``), progress to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from semcodec.errors import SemError, SemModelError
from semcodec.exitcodes import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE
from semcodec.pipeline.commands import int_at_least


def _model_list(text: str) -> list[int]:
    from semcodec.registry import model_id_by_name

    try:
        return [model_id_by_name(part.strip()) for part in text.split(",") if part.strip()]
    except SemError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _say(quiet: bool) -> Any:
    def say(message: str) -> None:
        if not quiet:
            print(f"bench: {message}", file=sys.stderr, flush=True)

    return say


def _error(message: str) -> None:
    print(f"semcodec bench: error: {message}", file=sys.stderr, flush=True)


def register(subparsers: Any) -> None:
    """Add ``bench`` (with ``text`` and ``images``) to ``ArgumentParser.add_subparsers()``."""
    from semcodec.bench.classic import ZSTD_DICT_SIZE
    from semcodec.bench.lmrate import UNPACK_LIMIT

    formatter = argparse.RawDescriptionHelpFormatter
    bench = subparsers.add_parser(
        "bench",
        help="measure rate (and image quality) against the classic anchors",
        description="Rate–quality benches: 'text' for the text codec, 'images' for the image pipeline.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)

    p = sub.add_parser(
        "text",
        help="bytes per text of semcodec vs UTF-8, zlib, zstd (+dict), brotli; cross-entropy; speed",
        formatter_class=formatter,
        description="For each corpus (one text per line), code each of the first N texts on its own with\n"
        "every coder and model profile, and print mean bytes per text, bits per character, the ratio\n"
        "to brotli, the model's cross-entropy (the floor), the gap to it, and pack/unpack speed.",
        epilog="example:\n"
        "  OPENBLAS_NUM_THREADS=1 semcodec bench text ../shared/data/coco-captions-dev.txt --limit 300",
    )
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help="UTF-8 text file, one text per line")
    p.add_argument("--limit", type=int_at_least(1), metavar="N", help="measure the first N texts (default: all)")
    p.add_argument(
        "--models",
        type=_model_list,
        metavar="IDS",
        help="comma-separated model profiles (default: every profile in the registry)",
    )
    p.add_argument(
        "--unpack-limit",
        type=int_at_least(0),
        default=UNPACK_LIMIT,
        metavar="K",
        help=f"texts unpacked (and verified) per profile for the unpack speed (default {UNPACK_LIMIT})",
    )
    p.add_argument(
        "--zstd-dict-size",
        type=int_at_least(1),
        default=ZSTD_DICT_SIZE,
        metavar="BYTES",
        help=f"size of the trained zstd dictionary (default {ZSTD_DICT_SIZE}, as zstd --train)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_text)

    from semcodec.bench.imagecli import add_images_parser

    add_images_parser(sub)


def cmd_text(args: argparse.Namespace) -> int:
    """``semcodec bench text``."""
    from semcodec.bench.corpus import read_corpus
    from semcodec.bench.textbench import dumps, render_text_bench, run_text_bench

    say = _say(args.quiet)
    try:
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
    except SemModelError as err:
        _error(str(err))
        return EXIT_UNAVAILABLE
    except (SemError, ValueError) as err:
        _error(str(err))
        return EXIT_BAD_INPUT
    if args.json:
        print(dumps(benches))
    return EXIT_OK
