"""``semcodec bench images``: options, backends by name, and the outputs (table, JSON, HTML)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcodec.errors import SemInputError
from semcodec.registry import DEFAULT_MODEL_ID

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.bench.imagebench import Roles

METRIC_KEYS = ("clip", "dreamsim", "lpips", "pixel", "psnr64")


def _int(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value

    return parse


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} must be ≥ 0")
    return value


def _metric_set(text: str) -> set[str]:
    keys = {k.strip() for k in text.split(",") if k.strip()}
    unknown = keys - set(METRIC_KEYS)
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"metrics are a comma-separated subset of {','.join(METRIC_KEYS)}")
    return keys


def add_images_parser(sub: Any) -> None:
    """Add ``images`` to the ``bench`` subparsers."""
    from semcodec.pipeline.reflect import DEFAULT_LAMBDA, DEFAULT_WORDS

    p = sub.add_parser(
        "images",
        help="describe → code → repaint a folder of images: bits, μbpp, similarity, JPEG/WebP anchors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For each image: describe it, code the description and repaint it, at every\n"
        "reflection round. Reports description length, payload and file bits, μbpp at the image's\n"
        "resolution and at 1024×1024, the similarity metrics available here, and the smallest\n"
        "JPEG/WebP of the image (quality 1).",
        epilog="examples:\n"
        "  semcodec bench images photos/ --captioner openai --generator openai:dall-e-3 \\\n"
        "      --reflect 2 --html report.html\n"
        "  semcodec bench images photos/ --captioner hf:HuggingFaceTB/SmolVLM-256M-Instruct \\\n"
        "      --generator hf:stabilityai/sd-turbo --reflect 1 --json > bench.json",
    )
    p.add_argument("inputs", nargs="+", metavar="DIR|IMAGE", help="folder(s) of images, or image files")
    p.add_argument("--captioner", metavar="NAME", help="openai[:MODEL] or hf[:MODEL|PATH] (default as for encode)")
    p.add_argument("--generator", metavar="NAME", help="painter (default: the captioner's backend)")
    p.add_argument("--critic", metavar="NAME", help="judge for reflection (default: the captioner's backend)")
    p.add_argument("--reflect", type=_int(0), default=0, metavar="N", help="revision rounds (default 0)")
    p.add_argument("--seeds", type=_int(1), default=1, metavar="K", help="generator seeds tried per round")
    p.add_argument("--words", type=_int(1), default=DEFAULT_WORDS, metavar="N", help="word budget asked for")
    p.add_argument("--max-bits", type=_int(1), metavar="B", help="fit each file in B bits (rate control)")
    p.add_argument("--lambda", dest="lam", type=_float, default=DEFAULT_LAMBDA, metavar="L", help="λ in J")
    p.add_argument(
        "--score",
        choices=("auto", "critic", "metric"),
        default="auto",
        help="what reflection scores with: auto = CLIP if on disk, else the critic",
    )
    p.add_argument(
        "--model", default=str(DEFAULT_MODEL_ID), metavar="ID",
        help=f"probability model id or name (default {DEFAULT_MODEL_ID})",
    )
    p.add_argument("--width", type=_int(1), metavar="W", help="repaint width (default: aspect ratio, long side 1024)")
    p.add_argument("--height", type=_int(1), metavar="H", help="repaint height")
    p.add_argument("--limit", type=_int(1), metavar="N", help="only the first N images (by name)")
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
    group.add_argument("--steps", type=_int(1), metavar="N", help="hf: diffusion steps")
    group.add_argument("--guidance", type=_float, metavar="G", help="hf: guidance scale")
    group.add_argument("--timeout", type=_float, metavar="S", help="openai: seconds per request")
    group.add_argument("--retries", type=_int(0), metavar="N", help="openai: retries on 429/5xx/timeouts")
    p.set_defaults(func=run_images_command)


def image_paths(inputs: list[str], limit: int | None) -> list[Path]:
    """Images named directly, plus the images inside each folder (sorted), first ``limit`` of them."""
    from semcodec.pipeline.batch import images_in

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(images_in(path))
        elif path.is_file():
            paths.append(path)
        else:
            raise SemInputError(f"{item}: no such file or folder")
    if not paths:
        raise SemInputError(f"no images in {', '.join(inputs)}")
    return paths[:limit] if limit else paths


def build_roles(args: argparse.Namespace, say: Any) -> tuple[Roles, int]:
    """Captioner, generator and critic by name through the pipeline's backends, and the
    generator id the header should carry. (Tests replace this function with fakes.)"""
    from semcodec.bench.imagebench import Roles
    from semcodec.pipeline.backends import BackendOptions, BackendPool, generator_id_for, parse_spec

    options = BackendOptions.from_env(
        timeout=args.timeout,
        retries=args.retries,
        device=args.device,
        steps=args.steps,
        guidance=args.guidance,
        concurrency=1,
    )
    pool = BackendPool(options, on_event=say)
    default = os.environ.get("SEMCODEC_CAPTIONER") or ("openai" if os.environ.get("OPENAI_API_KEY") else "hf")
    cap_spec = parse_spec(args.captioner or default)
    gen_spec = parse_spec(args.generator or cap_spec.backend)
    say(f"loading captioner {cap_spec}")
    captioner = pool.captioner(cap_spec)
    say(f"loading generator {gen_spec}")
    generator = pool.generator(gen_spec)
    critic = None
    if args.reflect > 0 or args.score == "critic":
        critic_spec = parse_spec(args.critic) if args.critic else cap_spec
        say(f"loading critic {critic_spec}")
        critic = pool.critic(critic_spec)
    gen_id = generator_id_for(gen_spec, pool.get(gen_spec.backend).default_generator) or 0
    return Roles(captioner, generator, critic), gen_id


def _loader(path: Path) -> Any:
    def load() -> Image:
        from semcodec.pipeline.imaging import load_image

        return load_image(path.read_bytes(), path.name)

    return load


def run_images_command(args: argparse.Namespace) -> int:
    """``semcodec bench images``; returns the exit code."""
    from semcodec.pipeline.commands import classify

    try:
        return _run(args)
    except KeyboardInterrupt:
        print("semcodec bench images: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code, message = classify(err)
        print(f"semcodec bench images: error: {message}", file=sys.stderr, flush=True)
        return code


def _run(args: argparse.Namespace) -> int:
    from semcodec.bench.imagebench import BenchSettings, run_image_bench
    from semcodec.bench.imagetable import render_image_bench
    from semcodec.bench.metrics import load_metrics
    from semcodec.pipeline.imaging import pil
    from semcodec.pipeline.progress import Progress
    from semcodec.registry import model_id_by_name

    pil()
    progress = Progress(enabled=not args.quiet)
    paths = image_paths(args.inputs, args.limit)
    model_id = model_id_by_name(str(args.model))
    if args.html:
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
    progress.note("loading image metrics")
    metrics, notes = load_metrics(args.device, args.metrics)
    roles, generator_id = build_roles(args, progress.note)
    settings = BenchSettings(
        reflect=args.reflect,
        seeds=args.seeds,
        words=args.words,
        max_bits=args.max_bits,
        lam=args.lam,
        model_id=model_id,
        generator_id=generator_id,
        width=args.width,
        height=args.height,
        score=args.score,
    )
    bench = run_image_bench(
        [(p.name, _loader(p)) for p in paths],
        roles,
        settings,
        metrics,
        notes,
        progress=progress,
        keep_images=bool(args.html),
    )
    if args.json:
        import json

        print(json.dumps(bench.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render_image_bench(bench))
    if args.html:
        from semcodec.bench.report import write_html

        write_html(bench, args.html)
        progress.note(f"report written to {args.html}")
    failed = [r for r in bench.images if r.error is not None]
    if failed and len(failed) == len(bench.images):
        return failed[0].code or 1
    return 4 if failed else 0
