"""``semcodec bench text`` and ``semcodec bench images``: parsers, and calls into :mod:`semcodec.bench`."""

from __future__ import annotations

import argparse
from typing import Any

from semcodec.bench.imagecli import METRIC_KEYS
from semcodec.cli.common import (
    SCORES,
    dimension,
    epilog,
    int_at_least,
    model_list,
    model_name,
    non_negative_float,
    paint_size,
)
from semcodec.cli.failures import classify
from semcodec.exitcodes import EXIT_CODES_HELP
from semcodec.pipeline.prompts import DESCRIBER_MODEL_ID


def register(subparsers: Any) -> None:
    """Add ``bench`` (with ``text`` and ``images``) to ``ArgumentParser.add_subparsers()``."""
    from semcodec.bench.classic import ZSTD_DICT_SIZE
    from semcodec.bench.lmrate import UNPACK_LIMIT

    formatter = argparse.RawDescriptionHelpFormatter
    bench = subparsers.add_parser(
        "bench",
        help="measure rate (and image quality) against the classic anchors",
        description="Rate–quality benches: 'text' for the text codec, 'images' for the image pipeline.",
        formatter_class=formatter,
        epilog=epilog(
            "  semcodec bench text corpus.txt --limit 300\n  semcodec bench images photos/ --html report.html",
            stdio="",
        ),
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)

    p = sub.add_parser(
        "text",
        help="bytes per text of semcodec vs UTF-8, zlib, zstd (+dict), brotli; cross-entropy; speed",
        formatter_class=formatter,
        description="For each corpus (one text per line), code each of the first N texts on its own with\n"
        "every coder and model profile, and print mean bytes per text, bits per character, the ratio\n"
        "to brotli, the model's cross-entropy (the floor), the gap to it, and pack/unpack speed.",
        epilog="examples:\n"
        "  OPENBLAS_NUM_THREADS=1 semcodec bench text ../shared/data/coco-captions-dev.txt --limit 300\n\n"
        + EXIT_CODES_HELP,
    )
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help="UTF-8 text file, one text per line")
    p.add_argument("--limit", type=int_at_least(1), metavar="N", help="measure the first N texts (default: all)")
    p.add_argument(
        "--models",
        type=model_list,
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

    _add_images_parser(sub)


def _metric_set(text: str) -> set[str]:
    keys = {k.strip() for k in text.split(",") if k.strip()}
    unknown = keys - set(METRIC_KEYS)
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"metrics are a comma-separated subset of {','.join(METRIC_KEYS)}")
    return keys


def _add_images_parser(sub: Any) -> None:
    """Add ``images`` to the ``bench`` subparsers."""
    from semcodec.pipeline.reflect import DEFAULT_LAMBDA, DEFAULT_WORDS

    p = sub.add_parser(
        "images",
        help="describe → code → repaint a folder of images: bits, μbpp, similarity, JPEG/WebP anchors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For each image: describe it, code the description and repaint it, at every\n"
        "reflection round. Reports description length, payload and file bits, μbpp over the image's\n"
        "resolution and at 1024×1024, the similarity metrics available here, and the smallest\n"
        "JPEG/WebP of the image (quality 1).",
        epilog="examples:\n"
        "  semcodec bench images photos/ --captioner openai --generator openai:dall-e-3 \\\n"
        "      --reflect 2 --html report.html\n"
        "  semcodec bench images photos/ --captioner hf:HuggingFaceTB/SmolVLM-256M-Instruct \\\n"
        "      --generator hf:stabilityai/sd-turbo --reflect 1 --json > bench.json\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="DIR|IMAGE", help="folder(s) of images, or image files")
    p.add_argument("--captioner", metavar="NAME", help="openai[:MODEL] or hf[:MODEL|PATH] (default as for encode)")
    p.add_argument("--generator", metavar="NAME", help="painter (default: the captioner's backend)")
    p.add_argument("--critic", metavar="NAME", help="judge for reflection (default: the captioner's backend)")
    p.add_argument("--reflect", type=int_at_least(0), default=0, metavar="N", help="revision rounds (default 0)")
    p.add_argument("--seeds", type=int_at_least(1), default=1, metavar="K", help="generator seeds tried per round")
    p.add_argument("--words", type=int_at_least(1), default=DEFAULT_WORDS, metavar="N", help="word budget asked for")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--max-bits", type=int_at_least(1), metavar="B", help="fit each file in B bits (rate control)")
    rate.add_argument(
        "--target-ubpp",
        type=non_negative_float,
        metavar="U",
        help="fit each file in U μbpp of its source image (as for encode)",
    )
    p.add_argument("--lambda", dest="lam", type=non_negative_float, default=DEFAULT_LAMBDA, metavar="L", help="λ in J")
    p.add_argument(
        "--score",
        choices=SCORES,
        default="auto",
        help="what scores candidates, as for encode: auto = CLIP if on disk, else the critic (default auto)",
    )
    p.add_argument(
        "--model", default=str(DESCRIBER_MODEL_ID), metavar="ID", type=model_name,
        help=f"probability model id or name (default {DESCRIBER_MODEL_ID}, encode's)",
    )
    p.add_argument("--width", type=dimension, metavar="W", help="header (decoded) width (default: the image's own)")
    p.add_argument("--height", type=dimension, metavar="H", help="repaint height")
    p.add_argument("--limit", type=int_at_least(1), metavar="N", help="only the first N images (by name)")
    p.add_argument(
        "--metrics",
        type=_metric_set,
        metavar="LIST",
        help=f"subset of {','.join(METRIC_KEYS)} (default: every one available here)",
    )
    p.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML report")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    group = p.add_argument_group("backend options")
    group.add_argument("--device", metavar="DEV", help="hf (and metrics): torch device")
    group.add_argument("--steps", type=int_at_least(1), metavar="N", help="hf: diffusion steps")
    group.add_argument("--guidance", type=non_negative_float, metavar="G", help="hf: guidance scale")
    group.add_argument("--paint-size", type=paint_size, metavar="WxH", help="paint at WxH, then resize (as for decode)")
    group.add_argument("--timeout", type=non_negative_float, metavar="S", help="openai: seconds per request")
    group.add_argument("--retries", type=int_at_least(0), metavar="N", help="openai: retries on 429/5xx/timeouts")
    p.set_defaults(func=cmd_images)




def cmd_text(args: argparse.Namespace) -> int:
    """``semcodec bench text``."""
    from semcodec.bench.commands import run_text

    return run_text(args)


def cmd_images(args: argparse.Namespace) -> int:
    """``semcodec bench images``: failed images are worded and numbered by the CLI's error map."""
    from semcodec.bench.imagecli import run_images

    return run_images(args, classify)
