"""Iterative reflection: describe → cost → paint → judge → revise, keep the best.

Each round produces a *candidate*: a description that fits the bit budget, painted with
each of ``seeds`` generator seeds, judged against the original. The next round asks the
captioner to revise the best candidate so far, showing it that candidate's description
and the judge's critique of its reconstruction.

"Best" is a rate–distortion choice. With ``score`` in [0, 1] (higher is closer) and
``bits`` the exact size of the packed file::

    J = score − λ · bits                       (maximised; ties → fewer bits)

The default λ = 0.001 per bit says 100 more bits (12.5 bytes, ~95 μbpp at 1024²) must
buy 0.1 more score. The same J picks the seed, since a larger seed costs header bytes.
Under a bit budget every candidate already fits (:mod:`~semcodec.pipeline.ratecontrol`),
so J only trades quality against the bits left unspent.

With no reflection and one seed there is nothing to choose, so nothing is painted:
``encode`` then costs one captioner call and the coder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semcodec import ubpp
from semcodec.container import Header
from semcodec.pipeline.errors import BackendError
from semcodec.pipeline.painting import paint
from semcodec.pipeline.progress import QUIET, Progress
from semcodec.pipeline.prompts import revision_note
from semcodec.pipeline.ratecontrol import CostFn, fit_description, header_bits, seed_bits

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.pipeline.interfaces import Captioner, Critic, Generator
    from semcodec.pipeline.similarity import Metric

DEFAULT_LAMBDA = 0.001
"""λ in J = score − λ·bits: score given up per bit saved."""

DEFAULT_WORDS = 30
"""Word budget asked of the captioner when no bit budget says otherwise."""


@dataclass(frozen=True)
class ReflectSettings:
    """What ``encode`` searches over.

    Attributes:
        reflect: revision rounds after the first description (candidates = reflect + 1).
        seeds: generator seeds tried per candidate (0 .. seeds−1).
        max_bits: budget for the whole file in bits, or None.
        words: word budget asked of the captioner (shrunk under ``max_bits``).
        lam: λ of the rate–distortion objective.
        max_asks: captioner calls per candidate before cutting the text.
    """

    reflect: int = 0
    seeds: int = 1
    max_bits: int | None = None
    words: int = DEFAULT_WORDS
    lam: float = DEFAULT_LAMBDA
    max_asks: int = 4

    @property
    def paints(self) -> bool:
        """Whether any image must be painted to choose (reflection or several seeds)."""
        return self.reflect > 0 or self.seeds > 1


@dataclass(frozen=True)
class Verdict:
    """A judged reconstruction."""

    score: float
    source: str
    critic_score: float | None = None
    critique: str | None = None


class Judge:
    """Scores reconstructions of one original, and explains the one to revise.

    ``mode="metric"`` scores with the similarity metric (CLIP, or the pixel fallback) and
    calls the critic only for the critique that drives a revision. ``mode="critic"``
    scores with the critic, falling back to the metric when it gives no number.
    """

    def __init__(self, original: Image, mode: str, metric: Metric, critic: Critic | None) -> None:
        if mode not in ("metric", "critic"):
            raise ValueError(f"judge mode must be 'metric' or 'critic', not {mode!r}")
        if mode == "critic" and critic is None:
            raise ValueError("judge mode 'critic' needs a critic")
        self.original = original
        self.mode = mode
        self.metric = metric
        self.critic = critic
        self._similarity = metric.bind(original)

    def judge(self, reconstruction: Image) -> Verdict:
        if self.mode == "critic":
            assert self.critic is not None
            score, critique = self.critic.critique(self.original, reconstruction)
            if not math.isnan(score):
                return Verdict(score, f"critic:{self.critic.name}", score, critique)
            fallback = self._similarity(reconstruction)
            return Verdict(fallback, f"{self.metric.name} (critic gave no score)", None, critique)
        return Verdict(self._similarity(reconstruction), self.metric.name)

    def explain(self, reconstruction: Image, verdict: Verdict) -> str:
        """The critique to revise from (the critic's, computed now if scoring skipped it)."""
        if verdict.critique is not None:
            return verdict.critique
        if self.critic is None:
            return (
                f"The reconstruction scored {verdict.score:.2f} ({verdict.source}); describe the image more precisely."
            )
        return self.critic.critique(self.original, reconstruction)[1]


@dataclass
class Candidate:
    """One round's result. ``bits`` is the whole file with this candidate's seed."""

    iteration: int
    text: str
    bits: int
    seed: int = 0
    score: float | None = None
    score_source: str | None = None
    critic_score: float | None = None
    critique: str | None = None
    seed_scores: list[float] = field(default_factory=list)
    word_budget: int = 0
    asked: int = 1
    truncated: bool = False
    images: dict[int, Image] = field(default_factory=dict, repr=False)
    verdicts: dict[int, Verdict] = field(default_factory=dict, repr=False)

    def objective(self, lam: float) -> float:
        """J = score − λ·bits (score 0 when nothing was painted)."""
        return (self.score or 0.0) - lam * self.bits

    def summary(self, header: Header) -> dict[str, Any]:
        """JSON-ready fields (no images); the rate is over ``header``'s size (the source's)."""
        return {
            "iteration": self.iteration,
            "text": self.text,
            "words": len(self.text.split()),
            "bits": self.bits,
            "bytes": (self.bits + 7) // 8,
            ubpp.KEY: ubpp.reported(self.bits, header.width, header.height),
            "seed": self.seed,
            "score": self.score,
            "score_source": self.score_source,
            "critic_score": self.critic_score,
            "seed_scores": self.seed_scores,
            "critique": self.critique,
            "word_budget": self.word_budget,
            "captioner_calls": self.asked,
            "truncated": self.truncated,
        }


@dataclass
class ReflectResult:
    candidates: list[Candidate]
    best: Candidate


def best_of(candidates: list[Candidate], lam: float) -> Candidate:
    """The candidate with the highest J; ties go to fewer bits, then the earlier round."""
    return max(candidates, key=lambda c: (c.objective(lam), -c.bits, -c.iteration))


def reflect(
    original: Image,
    *,
    captioner: Captioner,
    generator: Generator | None,
    judge: Judge | None,
    cost_bits: CostFn,
    header: Header,
    settings: ReflectSettings,
    progress: Progress = QUIET,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> ReflectResult:
    """Run the search and return every candidate and the chosen one.

    ``cost_bits`` gives the exact file size in bits for a description with ``header``
    (seed 0), and should cache when costing is slow (:class:`~.image_codec.FileCost`
    does); seeds' header bytes are added with :func:`seed_bits`. ``generator`` and
    ``judge`` may be None only when ``settings.paints`` is false.
    """
    if settings.paints and (generator is None or judge is None):
        raise ValueError("reflection or several seeds need a generator and a judge")
    cost = cost_bits
    n_seeds = settings.seeds if generator is not None and generator.honours_seed else 1
    # Reserve the header bytes of the largest seed we might store, so any choice fits.
    text_budget = None if settings.max_bits is None else settings.max_bits - seed_bits(header, n_seeds - 1)
    overhead = header_bits(header)
    words = settings.words
    candidates: list[Candidate] = []
    best: Candidate | None = None
    for round_no in range(settings.reflect + 1):
        tag = f"round {round_no}/{settings.reflect}" if settings.reflect else "describe"
        note = None if best is None else revision_note(best.text, best.critique or "")

        def describe(budget: int, note: str | None = note, tag: str = tag) -> str:
            progress.note(f"{tag}: {captioner.name} describing in ≤{budget} words")
            return captioner.describe(original, budget, note)

        try:
            fitted = fit_description(
                describe,
                cost,
                text_budget,
                words,
                overhead_bits=overhead,
                max_asks=settings.max_asks,
                progress=progress,
            )
            cand = Candidate(
                round_no,
                fitted.text,
                fitted.bits,
                word_budget=fitted.word_budget,
                asked=fitted.asked,
                truncated=fitted.truncated,
            )
            if settings.paints:
                assert generator is not None and judge is not None
                _paint_and_judge(cand, original, generator, judge, header, n_seeds, settings.lam, progress, tag)
        except BackendError as err:
            if best is None:
                raise
            # A revision is an attempt at improvement: when it fails (an API gave up, a
            # model said nothing) the candidates already paid for still stand.
            progress.note(f"{tag}: revision failed ({err}); keeping the best so far")
            break
        if fitted.asked > 1 or fitted.truncated:
            # Later rounds ask for what actually fitted, not for the budget last asked for
            # (a captioner that overshoots may have been asked for far fewer words).
            words = max(1, len(fitted.text.split()))
        candidates.append(cand)
        best = best_of(candidates, settings.lam)
        score = "" if cand.score is None else f", score {cand.score:.3f} ({cand.score_source}), seed {cand.seed}"
        progress.note(f"{tag}: {len(cand.text.split())} words, {cand.bits} bits{score}")
        critique_failed = False
        if round_no < settings.reflect and best.critique is None:
            assert judge is not None
            progress.note(f"{tag}: critiquing the best reconstruction")
            try:
                best.critique = judge.explain(best.images[best.seed], best.verdicts[best.seed])
            except BackendError as err:
                progress.note(f"{tag}: critique failed ({err}); keeping the best so far")
                critique_failed = True
        if on_candidate is not None:
            on_candidate(cand)  # after the critique, so a saved candidate includes it
        if critique_failed:
            break
    assert best is not None
    return ReflectResult(candidates, best)


def _paint_and_judge(
    cand: Candidate,
    original: Image,
    generator: Generator,
    judge: Judge,
    header: Header,
    n_seeds: int,
    lam: float,
    progress: Progress,
    tag: str,
) -> None:
    """Paint ``cand`` with each seed, judge each, keep the seed with the best J."""
    best_j = -math.inf
    for seed in range(n_seeds):
        label = f"{tag}: painting with {generator.name}" + (f", seed {seed}" if n_seeds > 1 else "")
        bar = progress.steps(label, 1)

        def on_step(done: int, total: int, bar_: Any = bar) -> None:
            bar_.total = max(1, total)
            bar_(done)

        image = paint(generator, cand.text, header.with_fields(seed=seed), on_step)
        progress.note(f"{tag}: judging seed {seed}" if n_seeds > 1 else f"{tag}: judging")
        verdict = judge.judge(image)
        cand.images[seed] = image
        cand.verdicts[seed] = verdict
        cand.seed_scores.append(verdict.score)
        j = verdict.score - lam * seed_bits(header, seed)
        if j > best_j:
            best_j = j
            cand.seed = seed
    chosen = cand.verdicts[cand.seed]
    cand.bits += seed_bits(header, cand.seed)
    cand.score = chosen.score
    cand.score_source = chosen.source
    cand.critic_score = chosen.critic_score
    cand.critique = chosen.critique
