"""The image bench: describe → code → repaint each image, per reflection round, and measure.

For every image it runs ``semcodec encode``'s own encode function
(:func:`semcodec.pipeline.image_codec.encode_image`: the reflection search with the real
coder's exact bit cost, and its one cache of packed files), then, for **every** round's
candidate (not just the chosen one):

* takes the ``.sem`` file that round would store (from that same cache), unpacks it, and
  checks the text survives — the bits reported are those of that real file;
* takes the reconstruction (the image reflection painted from that text and seed, or a
  fresh painting when nothing was painted, i.e. ``--reflect 0``) — painted and resized
  by :func:`semcodec.pipeline.painting.paint`, so for a generator that honours seeds
  this is exactly what ``semcodec decode`` paints;
* scores it against the original with every available metric.

Rates (:mod:`semcodec.ubpp`): file bits per pixel × 10⁶ over the header's size — the
source image's, unless ``--width``/``--height`` say otherwise — exactly as ``semcodec
info`` and ``encode --json`` report them, and over 1024×1024. The smallest JPEG and WebP
(quality 1) of the original are measured alongside.

Backends come in as objects satisfying the pipeline's protocols, so tests can drive the
whole bench with deterministic fakes; :class:`TextCoder` is the seam for the coder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from semcodec import ubpp
from semcodec.bench.anchors import Anchor, anchors_for
from semcodec.bench.metrics import ImageMetric, MetricInfo, judge_metric, primary
from semcodec.container import Header, encode_header
from semcodec.errors import SemInputError
from semcodec.pipeline.progress import QUIET, Progress
from semcodec.pipeline.prompts import DESCRIBER_MODEL_ID
from semcodec.pipeline.reflect import DEFAULT_LAMBDA, DEFAULT_WORDS, Judge, ReflectSettings

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.pipeline.interfaces import Captioner, Critic, Generator
    from semcodec.pipeline.similarity import Metric


class TextCoder(Protocol):
    """Text ⇄ ``.sem`` bytes with a given header."""

    def pack(self, text: str, header: Header) -> bytes: ...

    def unpack_text(self, data: bytes) -> str: ...


class SemcodecCoder:
    """The real coder (:func:`semcodec.pack` / :func:`semcodec.unpack`)."""

    def pack(self, text: str, header: Header) -> bytes:
        from semcodec.pipeline.image_codec import pack_text

        return pack_text(text, header)

    def unpack_text(self, data: bytes) -> str:
        from semcodec.pipeline.image_codec import unpack_file

        return unpack_file(data).text


@dataclass(frozen=True)
class Roles:
    """The backends a bench run uses (critic optional: needed for critic scoring and revisions)."""

    captioner: Captioner
    generator: Generator
    critic: Critic | None = None


@dataclass(frozen=True)
class BenchSettings:
    """What each image is encoded with (see ``semcodec encode`` for the meaning of each)."""

    reflect: int = 0
    seeds: int = 1
    words: int = DEFAULT_WORDS
    max_bits: int | None = None
    target_ubpp: float | None = None
    lam: float = DEFAULT_LAMBDA
    model_id: int = DESCRIBER_MODEL_ID  # what encode codes with
    generator_id: int = 0
    width: int | None = None
    height: int | None = None
    score: str = "auto"
    """How reflection scores candidates: ``auto`` (CLIP if loaded, else the critic if any,
    else the pixel fallback), ``critic`` or ``metric``."""


@dataclass
class Iteration:
    """One reflection round's candidate of one image, as a real file and a real painting."""

    iteration: int
    text: str
    seed: int
    header_bits: int
    file_bits: int
    micro_bpp: float
    micro_bpp_at_1024: float
    scores: dict[str, float]
    judge_score: float | None
    judge_source: str | None
    chosen: bool = False
    image: Image | None = field(default=None, repr=False)

    @property
    def payload_bits(self) -> int:
        return self.file_bits - self.header_bits

    @property
    def words(self) -> int:
        return len(self.text.split())

    @property
    def chars(self) -> int:
        return len(self.text)

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "chosen": self.chosen,
            "text": self.text,
            "words": self.words,
            "chars": self.chars,
            "seed": self.seed,
            "header_bits": self.header_bits,
            "payload_bits": self.payload_bits,
            "file_bits": self.file_bits,
            ubpp.KEY: round(self.micro_bpp, ubpp.DIGITS),
            ubpp.KEY_AT_1024: round(self.micro_bpp_at_1024, ubpp.DIGITS),
            "scores": self.scores,
            "judge_score": self.judge_score,
            "judge_source": self.judge_source,
        }


@dataclass
class AnchorResult:
    """An anchor coding with its scores."""

    anchor: Anchor
    scores: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        a = self.anchor
        return {
            "name": a.name,
            "bytes": len(a.data),
            "bits": a.bits,
            "bpp": round(a.bpp, 5),
            "scores": self.scores,
        }


@dataclass
class ImageResult:
    """Everything measured for one image (``error`` set and lists empty if it failed)."""

    name: str
    width: int = 0
    height: int = 0
    decode_width: int = 0
    decode_height: int = 0
    iterations: list[Iteration] = field(default_factory=list)
    anchors: list[AnchorResult] = field(default_factory=list)
    original: Image | None = field(default=None, repr=False)
    seconds: float = 0.0
    error: str | None = None
    code: int = 0
    """Exit code class of ``error`` (1 bad input, 3 backend unavailable)."""
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Iteration | None:
        return next((it for it in self.iterations if it.chosen), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "decode_width": self.decode_width,
            "decode_height": self.decode_height,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "iterations": [it.to_json() for it in self.iterations],
            "anchors": [a.to_json() for a in self.anchors],
        }


@dataclass
class MeanRow:
    """Means over the images that have this row (an iteration, the chosen ones, or an anchor)."""

    label: str
    images: int
    words: float | None
    chars: float | None
    payload_bits: float | None
    file_bits: float
    micro_bpp: float
    micro_bpp_at_1024: float
    scores: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}  # field names are the JSON keys (semcodec.ubpp)


@dataclass
class ImageBench:
    """The whole run: per-image results, the metrics used, and what was skipped."""

    images: list[ImageResult]
    metrics: list[MetricInfo]
    primary: str
    notes: list[str]
    settings: dict[str, Any]

    @property
    def ok(self) -> list[ImageResult]:
        return [r for r in self.images if r.error is None]

    def means(self) -> list[MeanRow]:
        """One row per reflection round, one for the chosen candidates, one per anchor."""
        ok = self.ok
        rows: list[MeanRow] = []
        rounds = max((len(r.iterations) for r in ok), default=0)
        for k in range(rounds):
            its = [r.iterations[k] for r in ok if len(r.iterations) > k]
            rows.append(self._mean_iterations(f"round {k}", its))
        chosen = [it for r in ok if (it := r.chosen) is not None]
        if chosen and rounds > 1:
            rows.append(self._mean_iterations("chosen", chosen))
        names = [a.anchor.name for r in ok[:1] for a in r.anchors]
        for name in names:
            found = [(r, a) for r in ok for a in r.anchors if a.anchor.name == name]
            rows.append(
                MeanRow(
                    name,
                    len(found),
                    None,
                    None,
                    None,
                    _avg([a.anchor.bits for _, a in found]),
                    _avg([ubpp.micro_bpp(a.anchor.bits, r.width, r.height) for r, a in found]),
                    _avg([ubpp.micro_bpp(a.anchor.bits, 1024, 1024) for _, a in found]),
                    _avg_scores([a.scores for _, a in found]),
                )
            )
        return rows

    @staticmethod
    def _mean_iterations(label: str, its: list[Iteration]) -> MeanRow:
        return MeanRow(
            label,
            len(its),
            _avg([it.words for it in its]),
            _avg([it.chars for it in its]),
            _avg([it.payload_bits for it in its]),
            _avg([it.file_bits for it in its]),
            _avg([it.micro_bpp for it in its]),
            _avg([it.micro_bpp_at_1024 for it in its]),
            _avg_scores([it.scores for it in its]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "metrics": [vars(m) for m in self.metrics],
            "primary_metric": self.primary,
            "notes": self.notes,
            "images": [r.to_json() for r in self.images],
            "means": [m.to_json() for m in self.means()],
        }


def _avg(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _avg_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in scores[0]] if scores else []
    return {k: _avg([s[k] for s in scores if k in s]) for k in keys}


def _judge_mode(settings: BenchSettings, metrics: list[ImageMetric], critic: Critic | None) -> str:
    if settings.score == "critic":
        if critic is None:
            raise ValueError("--score critic needs a critic")
        return "critic"
    if settings.score in ("clip", "pixel"):  # `--score`, one vocabulary with `semcodec encode`
        return "metric"
    has_clip = any(m.info.key == "clip" for m in metrics)
    # As in `semcodec encode`: a real image metric when there is one; the critic beats pixels.
    return "critic" if not has_clip and critic is not None else "metric"


def _scoring_metric(settings: BenchSettings, metrics: list[ImageMetric]) -> Metric:
    """What ``--score clip|pixel`` names, else the loaded CLIP if any, else the pixel fallback."""
    if settings.score == "pixel":
        from semcodec.pipeline.similarity import PixelSimilarity

        return PixelSimilarity()
    if settings.score == "clip" and not any(m.info.key == "clip" for m in metrics):
        raise SemInputError("--score clip needs the CLIP metric (its weights on disk, and clip among --metrics)")
    return judge_metric(metrics)


def bench_image(
    name: str,
    original: Image,
    roles: Roles,
    settings: BenchSettings,
    metrics: list[ImageMetric],
    coder: TextCoder,
    progress: Progress = QUIET,
) -> ImageResult:
    """Encode ``original`` as ``semcodec encode`` does and measure every round (errors propagate)."""
    from semcodec.pipeline import imaging
    from semcodec.pipeline.image_codec import encode_image
    from semcodec.pipeline.painting import paint
    from semcodec.pipeline.ratecontrol import budget_from

    started = time.perf_counter()
    width, height = imaging.complete_size(original, settings.width, settings.height)
    header = Header(settings.model_id, settings.generator_id, 0, width, height)
    search = ReflectSettings(
        reflect=settings.reflect,
        seeds=settings.seeds,
        max_bits=budget_from(settings.max_bits, settings.target_ubpp, width, height),
        words=settings.words,
        lam=settings.lam,
    )
    judge = None
    if search.paints:
        mode = _judge_mode(settings, metrics, roles.critic)
        judge = Judge(original, mode, _scoring_metric(settings, metrics), roles.critic)
    encoded = encode_image(
        original,
        captioner=roles.captioner,
        generator=roles.generator if search.paints else None,
        judge=judge,
        header=header,
        settings=search,
        pack=coder.pack,
        progress=progress,
    )
    bound = [(m.info.key, m.bind(original)) for m in metrics]
    result = ImageResult(name, original.width, original.height, width, height, original=original)
    for cand in encoded.result.candidates:
        stored = header.with_fields(seed=cand.seed)
        data = encoded.file_for(cand)  # packed once, by the search's own cache
        decoded = coder.unpack_text(data)
        if decoded != cand.text:
            raise RuntimeError(f"round {cand.iteration}: the .sem file decodes to different text")
        image = cand.images.get(cand.seed)
        if image is None:  # nothing was painted during the search (no reflection, one seed)
            progress.note(f"round {cand.iteration}: painting with {roles.generator.name}")
            image = paint(roles.generator, decoded, stored)
        bits = 8 * len(data)
        result.iterations.append(
            Iteration(
                cand.iteration,
                cand.text,
                cand.seed,
                8 * len(encode_header(stored)),
                bits,
                ubpp.micro_bpp(bits, width, height),
                ubpp.micro_bpp(bits, 1024, 1024),
                {key: score(image) for key, score in bound},
                cand.score,
                cand.score_source,
                chosen=cand is encoded.best,
                image=image,
            )
        )
    anchors, result.notes = anchors_for(original)
    result.anchors = [AnchorResult(a, {key: score(a.image) for key, score in bound}) for a in anchors]
    result.seconds = time.perf_counter() - started
    return result


def run_image_bench(
    images: list[tuple[str, Callable[[], Image]]],
    roles: Roles,
    settings: BenchSettings,
    metrics: list[ImageMetric],
    notes: list[str],
    *,
    classify: Callable[[BaseException], tuple[int, str]] | None = None,
    coder: TextCoder | None = None,
    progress: Progress = QUIET,
    keep_images: bool = True,
) -> ImageBench:
    """Bench every ``(name, load)`` image; a failing image is recorded and the rest go on.

    ``classify(err)`` gives a failed image's exit code and one-line message (the command
    line passes its error map); without it, an image's failure is raised.

    ``keep_images=False`` drops the pictures once scored (only a report needs them): a
    hundred 1024² images with a few rounds each would otherwise hold gigabytes.
    """
    coder = coder or SemcodecCoder()
    results: list[ImageResult] = []
    for i, (name, load) in enumerate(images):
        child = progress.child(f"[{i + 1}/{len(images)}] {name}")
        try:
            result = bench_image(name, load(), roles, settings, metrics, coder, child)
        except Exception as err:  # one image's failure (a backend error, a bad file) is reported, not fatal
            if classify is None:
                raise
            code, message = classify(err)
            child.note(f"failed: {message}")
            results.append(ImageResult(name, error=message, code=code))
            continue
        if not keep_images:
            result.original = None
            for it in result.iterations:
                it.image = None
        chosen = result.chosen
        if chosen is not None:
            child.note(f"{chosen.file_bits} bits, {chosen.micro_bpp:.1f} μbpp, {result.seconds:.1f} s")
        results.append(result)
    all_notes = list(notes)
    for r in results:
        all_notes.extend(n for n in r.notes if n not in all_notes)
    if not roles.generator.honours_seed:
        all_notes.append(
            f"{roles.generator.name} ignores seeds: a later decode paints another sample of the same description"
        )
    if settings.reflect == 0 and settings.seeds == 1:
        all_notes.append("no reflection: each description was painted once, after coding")
    run_settings = {
        "captioner": roles.captioner.name,
        "generator": roles.generator.name,
        "critic": roles.critic.name if roles.critic else None,
        **{k: v for k, v in vars(settings).items()},
    }
    return ImageBench(results, [m.info for m in metrics], primary(metrics).info.key, all_notes, run_settings)
