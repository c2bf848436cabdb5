"""``semcodec encode`` and ``semcodec decode``: the image side of the command line.

:func:`register` adds both subcommands to the top-level parser's subparsers; each sets
``func`` to a callable that takes the parsed namespace and returns the exit code:

* 0 — done;
* 1 — bad input, bad option, a ``.sem`` error, or an output that exists without ``-f``;
* 3 — a backend is unavailable or failed for good (package, key, weights, API errors);
* 4 — ``encode DIR``: some images failed (each reported; the others were written).

Conventions match ``pack``/``unpack``: ``-`` is stdin/stdout, outputs are written
atomically and never overwritten without ``-f``, progress goes to stderr, an error is
one line on stderr. Importing this module is cheap: no model library is imported until
a backend is actually used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcodec.container import MAX_DIMENSION, Header
from semcodec.errors import SemError, SemInputError, SemModelError
from semcodec.exitcodes import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE
from semcodec.fileio import STDIO, OutputExistsError, atomic_write, read_input
from semcodec.pipeline import imaging
from semcodec.pipeline.backends import (
    BackendOptions,
    BackendPool,
    BackendSpec,
    auto_generator_name,
    generator_id_for,
    generator_spec_for_id,
    parse_spec,
)
from semcodec.pipeline.batch import Outcome, images_in, output_names, run_all
from semcodec.pipeline.errors import BackendError
from semcodec.pipeline.image_codec import decode_image, encode_image
from semcodec.pipeline.progress import Progress
from semcodec.pipeline.ratecontrol import budget_from
from semcodec.pipeline.reflect import DEFAULT_LAMBDA, DEFAULT_WORDS, Candidate, Judge, ReflectSettings
from semcodec.registry import DEFAULT_MODEL_ID

if TYPE_CHECKING:
    from semcodec.pipeline.interfaces import Captioner, Critic, Generator
    from semcodec.pipeline.similarity import Metric


_ERR_LOCK = threading.Lock()

_ENCODE_EXAMPLES = """\
examples:
  semcodec encode photo.jpg                          # writes photo.sem (openai if OPENAI_API_KEY is set)
  semcodec encode photo.jpg -o p.sem --reflect 3 --seeds 4 --target-ubpp 150 --json
  semcodec encode photos/ -o sems/ --jobs 8          # a folder; failures reported, the rest kept
  semcodec encode photo.jpg --captioner hf --generator hf:stabilityai/sdxl-turbo

environment: OPENAI_API_KEY, OPENAI_BASE_URL, SEMCODEC_CAPTIONER, SEMCODEC_GENERATOR,
  SEMCODEC_CLIP_MODEL, SEMCODEC_TIMEOUT/_RETRIES/_BACKOFF, HF_HOME, HF_HUB_OFFLINE,
  SEMCODEC_HF_DOWNLOAD=1 (let the hf backend download missing weights)
"""

_DECODE_EXAMPLES = """\
examples:
  semcodec decode photo.sem                          # writes photo.png with the header's generator
  semcodec decode photo.sem -o photo.webp --generator hf:stabilityai/sd-turbo
"""


# -- argument types ---------------------------------------------------------------


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer >= ``low`` (and <= ``high``), with a one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}")
        return value

    return parse


def _float_above(low: float, *, inclusive: bool) -> Callable[[str], float]:
    """A parser for finite floats ``> low`` (or ``≥ low`` when ``inclusive``); nan is refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = value >= low if inclusive else value > low
        if not ok or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{value} must be a number {'≥' if inclusive else '>'} {low:g}")
        return value

    return parse


_positive_float = _float_above(0, inclusive=False)
_non_negative_float = _float_above(0, inclusive=True)


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend options")
    group.add_argument("--timeout", type=_positive_float, metavar="S", help="seconds per API request (default 120)")
    group.add_argument(
        "--retries",
        type=int_at_least(0),
        metavar="N",
        help="retries on 429/5xx/timeouts, with backoff (default 4)",
    )
    group.add_argument("--device", metavar="DEV", help="hf: torch device (default: cuda if present, else cpu)")
    group.add_argument("--steps", type=int_at_least(1), metavar="N", help="hf: diffusion steps (default: the model's)")
    group.add_argument("--guidance", type=_non_negative_float, metavar="G", help="hf: guidance scale")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (errors still)")


def register(subparsers: Any) -> None:
    """Add ``encode`` and ``decode`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""

    enc = subparsers.add_parser(
        "encode",
        help="describe an image (or a folder of images) into a .sem file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_ENCODE_EXAMPLES + "\n" + EXIT_CODES_HELP,
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
        "(default: the captioner's backend, e.g. openai:dall-e-3, hf:stabilityai/sd-turbo)",
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
        type=_positive_float,
        metavar="U",
        help="the whole file in at most U micro-bits per pixel of the header's size",
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
        type=int_at_least(1, MAX_DIMENSION),
        metavar="W",
        help="decoded width (default: the image's aspect ratio, long side 1024)",
    )
    enc.add_argument("--height", type=int_at_least(1, MAX_DIMENSION), metavar="H", help="decoded height")
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
        type=_non_negative_float,
        default=DEFAULT_LAMBDA,
        metavar="L",
        help=f"λ in J = score − λ·bits (default {DEFAULT_LAMBDA})",
    )
    enc.add_argument(
        "--score",
        choices=("auto", "critic", "clip", "pixel"),
        default="auto",
        help="what scores candidates: auto = CLIP if on disk, else the critic (default auto)",
    )
    enc.add_argument(
        "--model", metavar="ID", default=str(DEFAULT_MODEL_ID),
        help=f"probability model id or name (default {DEFAULT_MODEL_ID}: no header byte)",
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
    enc.set_defaults(func=cmd_encode)

    dec = subparsers.add_parser(
        "decode",
        help="repaint the image a .sem file describes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_DECODE_EXAMPLES + "\n" + EXIT_CODES_HELP,
        description="Unpack IN.sem and repaint it at the header's size and seed with its generator.",
    )
    dec.add_argument("input", metavar="IN.sem|-", help=".sem file or - for stdin")
    dec.add_argument("-o", "--output", metavar="OUT", help="OUT.png (.jpg/.webp by name), - for stdout")
    dec.add_argument(
        "--generator",
        metavar="NAME",
        help="override the header's generator (openai[:MODEL], hf[:MODEL|PATH])",
    )
    _add_backend_options(dec)
    dec.set_defaults(func=cmd_decode)


def main(argv: list[str] | None = None) -> int:
    """Run ``encode``/``decode`` without the top-level CLI (tests, embedding)."""
    parser = argparse.ArgumentParser(prog="semcodec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


# -- errors -----------------------------------------------------------------------


def classify(err: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an error a command met."""
    if isinstance(err, (BackendError, SemModelError)):  # as for pack/unpack: a model is unavailable
        return EXIT_UNAVAILABLE, str(err)
    if isinstance(err, (SemError, OutputExistsError)):
        return EXIT_BAD_INPUT, str(err)
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return EXIT_BAD_INPUT, f"{where}{err.strerror or err}"
    return EXIT_BAD_INPUT, " ".join(f"internal error: {type(err).__name__}: {err}".split())


def _error(message: str) -> None:
    # The same one-line form as pack/unpack; the lock keeps batch threads' lines whole.
    with _ERR_LOCK:
        print(f"semcodec: error: {message}", file=sys.stderr, flush=True)


def _guard(run: Callable[[], int]) -> int:
    """Run a command; turn any error into one line and an exit code (never sys.exit)."""
    try:
        return run()
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as err:
        if os.environ.get("SEMCODEC_DEBUG") and not isinstance(err, (SemError, OSError, OutputExistsError)):
            raise
        code, message = classify(err)
        _error(message)
        return code


def _options(args: argparse.Namespace, concurrency: int) -> BackendOptions:
    return BackendOptions.from_env(
        timeout=args.timeout,
        retries=args.retries,
        device=args.device,
        steps=args.steps,
        guidance=args.guidance,
        concurrency=concurrency,
    )


def _refuse_existing(output: str, force: bool) -> None:
    # Checked before any work: an encode can cost paid API calls, a decode minutes of GPU.
    if output != STDIO and not force and Path(output).exists():
        raise OutputExistsError(Path(output))


# -- encode -----------------------------------------------------------------------


def cmd_encode(args: argparse.Namespace) -> int:
    """``semcodec encode``; returns the exit code."""
    return _guard(lambda: _encode(args))


def _default_captioner() -> str:
    return os.environ.get("SEMCODEC_CAPTIONER") or ("openai" if os.environ.get("OPENAI_API_KEY") else "hf")


@dataclass
class _Encoder:
    """Everything shared by the images of one ``encode`` run."""

    args: argparse.Namespace
    progress: Progress
    captioner: Captioner
    generator: Generator | None
    critic: Critic | None
    metric: Metric | None
    judge_mode: str
    settings: ReflectSettings
    model_id: int
    generator_id: int
    generator_name: str
    batch: bool

    def one(self, source: str, output: str) -> Outcome:
        """Encode one image; failures become an :class:`Outcome` (the batch goes on)."""
        name = "stdin" if source == STDIO else Path(source).name
        progress = self.progress.child(name, live=False) if self.batch else self.progress
        try:
            _refuse_existing(output, self.args.force)
            image = imaging.load_image(read_input(source), "stdin" if source == STDIO else source)
            width, height = imaging.complete_size(image, self.args.width, self.args.height)
            header = Header(self.model_id, self.generator_id, 0, width, height, self.args.check)
            budget = budget_from(self.args.max_bits, self.args.target_ubpp, width, height)
            judge = None
            if self.settings.paints:
                assert self.metric is not None
                judge = Judge(image, self.judge_mode, self.metric, self.critic)
            stem = Path(name if output == STDIO else output).stem  # unique per batch item
            keep = self._keeper(stem, header) if self.args.keep_candidates else None
            encoded = encode_image(
                image,
                captioner=self.captioner,
                generator=self.generator,
                judge=judge,
                header=header,
                settings=replace(self.settings, max_bits=budget),
                progress=progress,
                on_candidate=keep,
            )
            atomic_write(output, encoded.data, force=self.args.force)
        except Exception as err:
            if os.environ.get("SEMCODEC_DEBUG") and not isinstance(err, (SemError, OSError, OutputExistsError)):
                raise
            code, message = classify(err)
            _error(f"{source}: {message}" if self.batch and not message.startswith(source) else message)
            return Outcome(source, output, error=message, code=code)
        summary = self._summary(
            source, output, encoded.data, encoded.header, encoded.result.candidates, encoded.best, budget
        )
        best = encoded.best
        score = "" if best.score is None else f", score {best.score:.3f}"
        rounds = f", round {best.iteration} of {len(encoded.result.candidates)}" if self.settings.reflect else ""
        progress.note(
            f"→ {output}: {len(encoded.data)} bytes, {summary['ubpp']} μbpp at "
            f'{encoded.header.width}×{encoded.header.height}{rounds}{score}: "{best.text}"'
        )
        return Outcome(source, output, summary=summary)

    def _summary(
        self,
        source: str,
        output: str,
        data: bytes,
        header: Header,
        candidates: list[Candidate],
        best: Candidate,
        budget: int | None,
    ) -> dict[str, Any]:
        bits = 8 * len(data)
        return {
            "input": source,
            "output": output,
            "bytes": len(data),
            "bits": bits,
            "ubpp": round(bits / header.pixels * 1e6, 3),
            "width": header.width,
            "height": header.height,
            "seed": header.seed,
            "model_id": header.model_id,
            "generator_id": header.generator_id,
            "generator": self.generator_name,
            "captioner": self.captioner.name,
            "max_bits": budget,
            "lambda": self.settings.lam,
            "chosen": best.iteration,
            "text": best.text,
            "score": best.score,
            "score_source": best.score_source,
            "iterations": [c.summary(header.pixels) for c in candidates],
        }

    def _keeper(self, stem: str, header: Header) -> Callable[[Candidate], None]:
        folder = Path(self.args.keep_candidates)
        folder.mkdir(parents=True, exist_ok=True)

        def keep(cand: Candidate) -> None:
            base = folder / f"{stem}.r{cand.iteration}"
            atomic_write(f"{base}.txt", (cand.text + "\n").encode("utf-8"), force=True)
            for seed, image in cand.images.items():
                atomic_write(f"{base}.s{seed}.png", imaging.image_bytes(image), force=True)
            info = json.dumps(cand.summary(header.pixels), indent=2, ensure_ascii=False) + "\n"
            atomic_write(f"{base}.json", info.encode("utf-8"), force=True)

        return keep


def _plan_jobs(args: argparse.Namespace) -> tuple[list[tuple[str, str]], bool]:
    """``(source, output)`` pairs, and whether this is a folder batch."""
    source = args.input
    if source != STDIO and Path(source).is_dir():
        if not args.output or args.output == STDIO:
            raise SemInputError("encode DIR needs -o OUTDIR (a folder)")
        outdir = Path(args.output)
        if outdir.exists() and not outdir.is_dir():
            raise SemInputError(f"{outdir} exists and is not a folder")
        inputs = images_in(Path(source))
        if not inputs:
            raise SemInputError(f"{source}: no images ({', '.join(sorted(imaging.IMAGE_SUFFIXES))})")
        outdir.mkdir(parents=True, exist_ok=True)
        return [(str(i), str(o)) for i, o in zip(inputs, output_names(inputs, outdir, ".sem"), strict=True)], True
    if source == STDIO and not args.output:
        raise SemInputError("an image on stdin needs -o OUT.sem (or -o - for stdout)")
    if source != STDIO and not Path(source).exists():
        raise SemInputError(f"{source}: no such file")
    output = args.output or str(Path(source).with_suffix(".sem"))
    _refuse_existing(output, args.force)
    return [(source, output)], False


def _encode(args: argparse.Namespace) -> int:
    if args.json and args.output == STDIO:
        raise SemInputError("--json prints to stdout; it cannot be combined with -o -")
    if args.width is not None and args.height is not None:
        Header(width=args.width, height=args.height)  # validate early, with the container's message
    jobs, batch = _plan_jobs(args)
    progress = Progress(enabled=not args.quiet)
    from semcodec.registry import model_id_by_name

    model_id = model_id_by_name(str(args.model))
    settings = ReflectSettings(reflect=args.reflect, seeds=args.seeds, words=args.words, lam=args.lam)
    pool = BackendPool(_options(args, args.jobs), on_event=progress.note)

    cap_spec = parse_spec(args.captioner or _default_captioner())
    gen_spec = parse_spec(args.generator or cap_spec.backend)
    gen_backend = pool.get(gen_spec.backend)
    gen_id = generator_id_for(gen_spec, gen_backend.default_generator)
    gen_name = f"{gen_spec.backend}:{gen_spec.model or gen_backend.default_generator}"
    if gen_id is None:
        progress.note(
            f"{gen_name} has no generator id in the registry: the header leaves the generator to the "
            f"decoder (decode with --generator {gen_name})"
        )

    progress.note(f"loading captioner {cap_spec}")
    captioner = pool.captioner(cap_spec)
    generator = critic = metric = None
    judge_mode = "metric"
    if settings.paints:
        progress.note(f"loading generator {gen_name}")
        generator = pool.generator(gen_spec)
        if settings.seeds > 1 and not generator.honours_seed:
            progress.note(f"{generator.name} ignores seeds: --seeds {settings.seeds} tries one")
        metric, judge_mode = _scoring(args.score)
        if judge_mode == "critic" or settings.reflect > 0:
            critic_spec: BackendSpec = parse_spec(args.critic) if args.critic else cap_spec
            progress.note(f"loading critic {critic_spec}")
            critic = pool.critic(critic_spec)
        progress.note(f"scoring with {metric.name if judge_mode == 'metric' else 'the critic'}")

    encoder = _Encoder(
        args,
        progress,
        captioner,
        generator,
        critic,
        metric,
        judge_mode,
        settings,
        model_id,
        gen_id or 0,
        gen_name,
        batch,
    )
    outcomes = run_all(jobs, encoder.one, args.jobs if batch else 1)
    failed = [o for o in outcomes if o.error is not None]
    if args.json:
        if batch:
            report: Any = {
                "files": [o.summary for o in outcomes if o.summary is not None],
                "failed": [{"input": o.source, "error": o.error} for o in failed],
            }
            print(json.dumps(report, indent=2, ensure_ascii=False))
        elif outcomes[0].summary is not None:
            print(json.dumps(outcomes[0].summary, indent=2, ensure_ascii=False))
    if batch:
        progress.note(f"{len(outcomes) - len(failed)} of {len(outcomes)} images encoded")
        return EXIT_PARTIAL if failed else EXIT_OK
    return outcomes[0].code


def _scoring(kind: str) -> tuple[Metric, str]:
    """The metric and the judge mode for ``--score``."""
    from semcodec.pipeline.similarity import load_metric

    if kind in ("clip", "pixel"):
        return load_metric(kind), "metric"
    metric = load_metric("auto")
    if kind == "critic":
        return metric, "critic"
    # auto: a real image metric when there is one; the critic beats the pixel fallback.
    return metric, ("critic" if metric.is_fallback else "metric")


# -- decode -----------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace) -> int:
    """``semcodec decode``; returns the exit code."""
    return _guard(lambda: _decode(args))


def _decode(args: argparse.Namespace) -> int:
    source = args.input
    if source == STDIO and not args.output:
        raise SemInputError("a .sem file on stdin needs -o OUT.png (or -o - for stdout)")
    output = args.output or str(Path(source).with_suffix(".png"))
    _refuse_existing(output, args.force)
    progress = Progress(enabled=not args.quiet)
    data = read_input(source)
    pool = BackendPool(_options(args, 1), on_event=progress.note)

    def generator_for(header: Header) -> Generator:
        spec = parse_spec(args.generator) if args.generator else generator_spec_for_id(header.generator_id)
        if not args.generator and header.generator_id == 0:
            progress.note(f"the file leaves the generator to the decoder: using {auto_generator_name()}")
        progress.note(f"loading generator {spec}")
        return pool.generator(spec)

    image, text, header = decode_image(data, generator_for, progress)
    atomic_write(output, imaging.image_bytes(image, output), force=args.force)
    progress.note(f'→ {output}: {header.width}×{header.height}, seed {header.seed}: "{text}"')
    return EXIT_OK
