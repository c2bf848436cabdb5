"""What ``semcodec encode`` and ``semcodec decode`` do, given their parsed options.

The parsers, the exit-code map and the one-line error messages live in the command line
(:mod:`semcodec.cli.images`, :mod:`semcodec.cli.failures`); this module never imports
them: a failing image of a folder is handed to the ``on_failure`` callback the caller
gives, which reports it and says its exit code, and every other error is raised.

Conventions match ``pack``/``unpack``: ``-`` is stdin/stdout, outputs follow
:func:`semcodec.fileio.write_output` (atomic, never clobbered without ``force``), inputs
are read with a bound (:data:`semcodec.pipeline.imaging.MAX_IMAGE_BYTES` for images, the
``.sem`` limit for files), progress goes to stderr. Importing this module is cheap: no
model library is imported until a backend is actually used.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcodec import ubpp
from semcodec.codec import MAX_FILE_BYTES
from semcodec.container import Header
from semcodec.errors import SemInputError
from semcodec.exitcodes import EXIT_OK, EXIT_PARTIAL
from semcodec.fileio import STDIO, read_input, refuse_existing, refuse_same_file, refuse_terminal_output, write_output
from semcodec.pipeline import imaging
from semcodec.pipeline.backends import (
    BackendOptions,
    BackendPool,
    auto_generator_name,
    generator_spec_for_id,
    parse_spec,
)
from semcodec.pipeline.batch import Outcome, images_in, output_names, run_all
from semcodec.pipeline.encoding import load_encode_backends
from semcodec.pipeline.image_codec import decode_image, encode_image
from semcodec.pipeline.progress import Progress
from semcodec.pipeline.ratecontrol import budget_from
from semcodec.pipeline.reflect import Candidate, Judge, ReflectSettings

if TYPE_CHECKING:
    from semcodec.pipeline.interfaces import Captioner, Critic, Generator
    from semcodec.pipeline.similarity import Metric

OnFailure = Callable[[str, BaseException], tuple[int, str]]
"""Reports one failed item of a batch (``source``, the error) and returns its exit code and message."""

def _options(args: argparse.Namespace, concurrency: int) -> BackendOptions:
    return BackendOptions.from_env(
        timeout=args.timeout,
        retries=args.retries,
        device=args.device,
        steps=args.steps,
        guidance=args.guidance,
        paint_size=args.paint_size,
        concurrency=concurrency,
    )


def _into_folder(output: str | None, source: str, suffix: str) -> str | None:
    """``-o DIR/`` (a trailing ``/``: made if missing) or an existing folder, for one input: the
    output named after the input inside it, as ``pack``/``unpack`` do; any other ``-o`` as given."""
    if output is None or output == STDIO or not (output.endswith(("/", os.sep)) or Path(output).is_dir()):
        return output
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as err:  # a file in the way: name the folder
        raise OSError(err.errno, err.strerror, output) from None
    return os.path.join(output, ("stdin" if source == STDIO else Path(source).stem) + suffix)


def _refuse_directory(output: str) -> None:
    if output != STDIO and Path(output).is_dir():
        raise SemInputError(f"{output} is a directory: -o names the output file")


def _read_image(source: str) -> bytes:
    return read_input(source, imaging.MAX_IMAGE_BYTES)


# -- encode -----------------------------------------------------------------------


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
    on_failure: OnFailure
    preread: dict[str, bytes]

    def one(self, source: str, output: str) -> Outcome:
        """Encode one image; failures become an :class:`Outcome` (the batch goes on)."""
        name = "stdin" if source == STDIO else Path(source).name
        progress = self.progress.child(name, live=False) if self.batch else self.progress
        try:
            refuse_existing(output, self.args.force)
            data = self.preread.pop(source, None)
            image = imaging.load_image(
                _read_image(source) if data is None else data, "stdin" if source == STDIO else source
            )
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
            write_output(output, encoded.data, force=self.args.force)
        except Exception as err:
            if not self.batch:
                raise
            code, message = self.on_failure(source, err)
            return Outcome(source, output, error=message, code=code)
        summary = self._summary(
            source, output, encoded.data, encoded.header, encoded.result.candidates, encoded.best, budget
        )
        best = encoded.best
        score = "" if best.score is None else f", score {best.score:.3f}"
        rounds = f", round {best.iteration} of {len(encoded.result.candidates)}" if self.settings.reflect else ""
        progress.note(
            f"→ {output}: {len(encoded.data)} bytes, {summary[ubpp.KEY]} μbpp at "
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
            ubpp.KEY: ubpp.reported(bits, header.width, header.height),
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
            "iterations": [c.summary(header) for c in candidates],
        }

    def _keeper(self, stem: str, header: Header) -> Callable[[Candidate], None]:
        folder = Path(self.args.keep_candidates)
        folder.mkdir(parents=True, exist_ok=True)

        def keep(cand: Candidate) -> None:
            base = folder / f"{stem}.r{cand.iteration}"
            write_output(f"{base}.txt", (cand.text + "\n").encode("utf-8"), force=True)
            for seed, image in cand.images.items():
                write_output(f"{base}.s{seed}.png", imaging.image_bytes(image), force=True)
            info = json.dumps(cand.summary(header), indent=2, ensure_ascii=False) + "\n"
            write_output(f"{base}.json", info.encode("utf-8"), force=True)

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
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), source)
    output = _into_folder(args.output, source, ".sem") or str(Path(source).with_suffix(".sem"))
    refuse_terminal_output(output, ".sem")
    _refuse_directory(output)
    refuse_same_file(source, output)
    refuse_existing(output, args.force)
    return [(source, output)], False


def encode(args: argparse.Namespace, on_failure: OnFailure) -> int:
    """``semcodec encode`` with parsed ``args``; returns the exit code (errors of one image raise)."""
    if args.json and args.output == STDIO:
        raise SemInputError("--json prints to stdout; it cannot be combined with -o -")
    if args.width is not None and args.height is not None:
        Header(width=args.width, height=args.height)  # validate early, with the container's message
    jobs, batch = _plan_jobs(args)
    preread: dict[str, bytes] = {}
    if not batch:  # a missing, oversized or unreadable image fails before any backend loads
        source = jobs[0][0]
        preread[source] = _read_image(source)
        imaging.load_image(preread[source], "stdin" if source == STDIO else source)
    progress = Progress(enabled=not args.quiet)
    from semcodec.registry import model_id_by_name

    model_id = model_id_by_name(str(args.model))
    settings = ReflectSettings(reflect=args.reflect, seeds=args.seeds, words=args.words, lam=args.lam)
    pool = BackendPool(_options(args, args.jobs), on_event=progress.note)

    backends = load_encode_backends(
        pool, settings, captioner=args.captioner, generator=args.generator, critic=args.critic, score=args.score,
        note=progress.note,
    )

    encoder = _Encoder(
        args,
        progress,
        backends.captioner,
        backends.generator,
        backends.critic,
        backends.metric,
        backends.judge_mode,
        settings,
        model_id,
        backends.generator_id or 0,
        backends.generator_name,
        batch,
        on_failure,
        preread,
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
        # With failures the summary is shown even with -q: it belongs with the error lines.
        (Progress() if failed else progress).note(f"{len(outcomes) - len(failed)} of {len(outcomes)} images encoded")
        return EXIT_PARTIAL if failed else EXIT_OK
    return outcomes[0].code


# -- decode -----------------------------------------------------------------------


def decode(args: argparse.Namespace) -> int:
    """``semcodec decode`` with parsed ``args``; returns the exit code (errors raise)."""
    source = args.input
    if source == STDIO and not args.output:
        raise SemInputError("a .sem file on stdin needs -o OUT.png (or -o - for stdout)")
    output = _into_folder(args.output, source, ".png") or str(Path(source).with_suffix(".png"))
    refuse_terminal_output(output, "PNG")
    _refuse_directory(output)
    refuse_same_file(source, output)
    refuse_existing(output, args.force)
    imaging.output_format(output)  # a name we cannot write is refused before any painting
    progress = Progress(enabled=not args.quiet)
    data = read_input(source, MAX_FILE_BYTES)
    pool = BackendPool(_options(args, 1), on_event=progress.note)

    def generator_for(header: Header) -> Generator:
        spec = parse_spec(args.generator) if args.generator else generator_spec_for_id(header.generator_id)
        if not args.generator and header.generator_id == 0:
            progress.note(f"the file leaves the generator to the decoder: using {auto_generator_name()}")
        progress.note(f"loading generator {spec}")
        return pool.generator(spec)

    image, text, header = decode_image(data, generator_for, progress, getattr(args, "max_tokens", None))
    write_output(output, imaging.image_bytes(image, output), force=args.force)
    progress.note(f'→ {output}: {header.width}×{header.height}, seed {header.seed}: "{text}"')
    return EXIT_OK
