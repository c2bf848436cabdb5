"""What ``semcodec bench images`` does: backends by name, the run, and its outputs (table, JSON, HTML).

The parser is :mod:`semcodec.cli.bench`; failed images are worded and numbered by the
``classify`` callback the command line passes in (this module never imports the CLI).
"""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcodec.errors import SemInputError
from semcodec.exitcodes import EXIT_OK, EXIT_PARTIAL

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.bench.imagebench import Roles

METRIC_KEYS = ("clip", "dreamsim", "lpips", "pixel", "psnr64")

Classify = Callable[[BaseException], tuple[int, str]]


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
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), item)
    if not paths:
        raise SemInputError(f"no images in {', '.join(inputs)}")
    return paths[:limit] if limit else paths


def build_roles(args: argparse.Namespace, say: Any) -> tuple[Roles, int]:
    """Captioner, generator and critic by name through the pipeline's backends, and the
    generator id the header should carry. (Tests replace this function with fakes.)"""
    from semcodec.bench.imagebench import Roles
    from semcodec.pipeline.backends import BackendOptions, BackendPool, generator_id_for, parse_spec
    from semcodec.pipeline.encoding import default_captioner

    options = BackendOptions.from_env(
        timeout=args.timeout,
        retries=args.retries,
        device=args.device,
        steps=args.steps,
        guidance=args.guidance,
        paint_size=args.paint_size,
        concurrency=1,
    )
    pool = BackendPool(options, on_event=say)
    cap_spec = parse_spec(args.captioner or default_captioner())
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
        from semcodec.fileio import read_input
        from semcodec.pipeline.imaging import MAX_IMAGE_BYTES, load_image

        return load_image(read_input(path, MAX_IMAGE_BYTES), path.name)

    return load


def run_images(args: argparse.Namespace, classify: Classify) -> int:
    """``semcodec bench images`` with parsed ``args``; returns the exit code (errors raise)."""
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
        target_ubpp=args.target_ubpp,
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
        classify=classify,
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
    if failed:
        progress.note(f"{len(bench.images) - len(failed)} of {len(bench.images)} images benched; {len(failed)} failed")
    if failed and len(failed) == len(bench.images):
        return failed[0].code
    return EXIT_PARTIAL if failed else EXIT_OK
