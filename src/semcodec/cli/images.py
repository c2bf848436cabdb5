"""``semcodec encode`` and ``semcodec decode``: parsers, and calls into :mod:`semcodec.pipeline.commands`."""

from __future__ import annotations

import argparse
from typing import Any

from semcodec.cli import datasets
from semcodec.cli.common import (
    FORMATTER,
    SCORES,
    dimension,
    epilog,
    int_at_least,
    model_name,
    non_negative_float,
    paint_size,
    peek_sem,
    positive_float,
)
from semcodec.cli.failures import item_failed
from semcodec.pipeline.prompts import DESCRIBER_MODEL_ID
from semcodec.pipeline.reflect import DEFAULT_LAMBDA, DEFAULT_WORDS

_ENCODE_EXAMPLES = """\
  semcodec encode photo.jpg                          # writes photo.sem (openai if OPENAI_API_KEY is set)
  semcodec encode photo.jpg -o p.sem --reflect 3 --seeds 4 --target-ubpp 150 --json
  semcodec encode photos/ -o sems/ --jobs 8          # a folder; failures reported, the rest kept
  semcodec encode photo.jpg --captioner hf --generator hf:stabilityai/sdxl-turbo
"""

_ENCODE_ENVIRONMENT = """\
environment: OPENAI_API_KEY, OPENAI_BASE_URL, SEMCODEC_CAPTIONER, SEMCODEC_GENERATOR,
  SEMCODEC_CLIP_MODEL, SEMCODEC_TIMEOUT/_RETRIES/_BACKOFF, HF_HOME, HF_HUB_OFFLINE,
  SEMCODEC_HF_DOWNLOAD=1 (let the hf backend download missing weights)
"""

_DECODE_EXAMPLES = """\
  semcodec decode photo.sem                          # writes photo.png with the header's generator
  semcodec decode photo.sem -o photo.webp --generator hf:stabilityai/sd-turbo
"""



def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend options")
    group.add_argument("--timeout", type=positive_float, metavar="S", help="seconds per API request (default 120)")
    group.add_argument(
        "--retries",
        type=int_at_least(0),
        metavar="N",
        help="retries on 429/5xx/timeouts, with backoff (default 4)",
    )
    group.add_argument("--device", metavar="DEV", help="hf: torch device (default: cuda if present, else cpu)")
    group.add_argument("--steps", type=int_at_least(1), metavar="N", help="hf: diffusion steps (default: the model's)")
    group.add_argument("--guidance", type=non_negative_float, metavar="G", help="hf: guidance scale")
    group.add_argument(
        "--paint-size",
        type=paint_size,
        metavar="WxH",
        help="paint at WxH, then resize to the header's size (default: the generator's size nearest "
        "the header's aspect ratio)",
    )
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (errors still)")



def register(subparsers: Any) -> None:
    """Add ``encode`` and ``decode`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""

    enc = subparsers.add_parser(
        "encode",
        help="describe an image (or a folder of images) into a .sem file",
        formatter_class=FORMATTER,
        epilog=epilog(_ENCODE_EXAMPLES, _ENCODE_ENVIRONMENT),
        description=(
            "Describe IMAGE with a vision-language model and pack the description into a .sem file. "
            "With --reflect/--seeds, repaint and judge candidates and keep the best by J = score − λ·bits."
        ),
    )
    enc.add_argument("input", metavar="IMAGE|DIR|-", help="image file, folder of images, or - for stdin")
    enc.add_argument("-o", "--output", metavar="OUT", help="OUT.sem, OUTDIR for a folder, - for stdout")
    enc.add_argument(
        "--captioner",
        metavar="NAME",
        help="openai[:MODEL] or hf[:MODEL|PATH] (default: openai "
        "if OPENAI_API_KEY is set, else hf; or $SEMCODEC_CAPTIONER)",
    )
    enc.add_argument(
        "--generator",
        metavar="NAME",
        help="generator painted with and stored in the header "
        "(default: the captioner's backend, e.g. openai:dall-e-3, hf:stabilityai/sd-turbo); a local copy "
        "of a registered model is hf:ID=FOLDER (e.g. hf:stabilityai/sd-turbo=./sd-turbo: its settings and "
        "id), or its folder in the Hugging Face cache",
    )
    enc.add_argument("--critic", metavar="NAME", help="judge for reflection (default: the captioner)")
    enc.add_argument(
        "--reflect",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="revision rounds: paint, judge, revise (default 0: describe once, paint nothing)",
    )
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument("--max-bits", type=int_at_least(1), metavar="B", help="the whole file in at most B bits")
    rate.add_argument(
        "--target-ubpp",
        type=positive_float,
        metavar="U",
        help="the whole file in at most U micro-bits per pixel of the source image (the header's size)",
    )
    enc.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=1,
        metavar="K",
        help="generator seeds tried per candidate; the best is stored (default 1)",
    )
    enc.add_argument(
        "--width",
        type=dimension,
        metavar="W",
        help="decoded width, stored in the header; rates count over it (default: the image's own)",
    )
    enc.add_argument("--height", type=dimension, metavar="H", help="decoded height")
    enc.add_argument(
        "--words",
        type=int_at_least(1),
        default=DEFAULT_WORDS,
        metavar="N",
        help=f"word budget asked of the captioner (default {DEFAULT_WORDS})",
    )
    enc.add_argument(
        "--lambda",
        dest="lam",
        type=non_negative_float,
        default=DEFAULT_LAMBDA,
        metavar="L",
        help=f"λ in J = score − λ·bits (default {DEFAULT_LAMBDA})",
    )
    enc.add_argument(
        "--score",
        choices=SCORES,
        default="auto",
        help="what scores candidates: auto = CLIP if on disk, else the critic (default auto)",
    )
    enc.add_argument(
        "--model", metavar="ID", default=str(DESCRIBER_MODEL_ID), type=model_name,
        help=f"probability model id or name (default {DESCRIBER_MODEL_ID}: the profile measured best for the "
        "describe prompt's replies; 'semcodec model list' shows them all)",
    )
    enc.add_argument("--check", action="store_true", help="store a 2-byte integrity check")
    enc.add_argument("--keep-candidates", metavar="DIR", help="save each round's description, images and score")
    enc.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    enc.add_argument(
        "--jobs",
        type=int_at_least(1),
        default=4,
        metavar="J",
        help="images encoded at once for a folder; bounds API requests in flight (default 4)",
    )
    _add_backend_options(enc)
    datasets.add_options(enc, "encode")
    enc.set_defaults(func=cmd_encode)

    dec = subparsers.add_parser(
        "decode",
        help="repaint the image a .sem file describes",
        formatter_class=FORMATTER,
        epilog=epilog(_DECODE_EXAMPLES),
        description="Unpack IN.sem and repaint it with its generator and seed, at a size the generator "
        "supports, then resize it to the header's size (the source image's).",
    )
    dec.add_argument("input", metavar="IN.sem|DIR|-", help=".sem file, folder of .sem files, or - for stdin")
    dec.add_argument(
        "-o", "--output", metavar="OUT", help="OUT.png, .jpg or .webp (format by extension), - for PNG on stdout"
    )
    dec.add_argument(
        "--generator",
        metavar="NAME",
        help="override the header's generator (openai[:MODEL], hf[:MODEL|PATH|ID=PATH])",
    )
    from semcodec.codec import DEFAULT_MAX_TOKENS, MAX_TOKENS

    dec.add_argument(
        "--max-tokens", type=int_at_least(0, MAX_TOKENS), default=DEFAULT_MAX_TOKENS, metavar="N",
        help=f"token budget: refuse a file whose text has more than N tokens (default {DEFAULT_MAX_TOKENS}, "
        f"for untrusted input; at most {MAX_TOKENS})",
    )
    _add_backend_options(dec)
    datasets.add_options(dec, "decode")
    dec.set_defaults(func=cmd_decode)




def cmd_encode(args: argparse.Namespace) -> int:
    """``semcodec encode``: failed images of a folder are reported by the CLI's error map."""
    from semcodec.pipeline.commands import encode

    if datasets.wants_dataset_job(args):
        return datasets.run(args, "encode")
    return encode(args, on_failure=item_failed)


def cmd_decode(args: argparse.Namespace) -> int:
    """``semcodec decode``."""
    from semcodec.pipeline.commands import decode

    if datasets.wants_dataset_job(args):
        return datasets.run(args, "decode")
    peek_sem(args.input)  # an image given to decode: say so, not "larger than the input limit"
    return decode(args)
