"""Rate control: make a description fit a bit budget, with the real coder in the loop.

Costs are exact — the size of the packed ``.sem`` file in bits, header included — so a
budget is a promise about the file on disk, not an estimate. The strategy:

1. ask the captioner for at most ``W`` words, ``W`` guessed from the budget;
2. while the packed file is too big, ask again with a proportionally smaller ``W``
   (a re-phrased shorter description usually beats a cut one);
3. as a last resort cut the last try at a word boundary — the longest prefix that fits.
   If not even its first word fits, fail with an error that says how many bits it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from semcodec import ubpp
from semcodec.container import Header, encode_header
from semcodec.errors import SemInputError
from semcodec.pipeline.progress import QUIET, Progress

CostFn = Callable[[str], int]
"""Bits of the packed file for a description (header included, seed 0)."""

BITS_PER_WORD_GUESS = 10
"""First guess of a word's cost, only to pick the first word budget; measured after that."""

_SHRINK_MARGIN = 0.9  # ask for 10 % fewer words than proportional: captioners overshoot
_GROW_BELOW = 0.8  # an answer using less than this share of the room for text may ask for more


def budget_from(max_bits: int | None, target_ubpp: float | None, width: int, height: int) -> int | None:
    """The file-size budget in bits from ``--max-bits`` or ``--target-ubpp``.

    ``width`` × ``height`` is the header's size — the source image's, by default — so a
    budget in μbpp means what ``info`` and ``--json`` report (:mod:`semcodec.ubpp`).

    >>> budget_from(None, 100.0, 1024, 1024)
    104
    >>> budget_from(None, 264.486, 768, 512)
    104
    >>> budget_from(None, None, 1024, 1024) is None
    True
    """
    if max_bits is not None:
        return max_bits
    if target_ubpp is not None:
        return ubpp.bits_for(target_ubpp, width, height)
    return None


def seed_bits(header: Header, seed: int) -> int:
    """Extra header bits that storing ``seed`` costs over storing seed 0.

    >>> seed_bits(Header(model_id=3), 0), seed_bits(Header(model_id=3), 3)  # v2 compact -> explicit: + the flags byte
    (0, 16)
    >>> seed_bits(Header(), 3), seed_bits(Header(), 300)  # v4's one-byte form -> v2 explicit: + flags and model bytes
    (24, 32)
    """
    check = b"\0\0" if header.check else b""
    with_seed = encode_header(header.with_fields(seed=seed), check)
    without = encode_header(header.with_fields(seed=0), check)
    return 8 * (len(with_seed) - len(without))


@dataclass(frozen=True)
class Fitted:
    """A description that fits, and how it was made to."""

    text: str
    bits: int
    word_budget: int
    asked: int
    """Captioner calls made (1 = the first answer fitted)."""
    truncated: bool
    words_before_cut: int


def header_bits(header: Header) -> int:
    """Bits of ``header`` itself (seed 0): the part of every file no description can shrink.

    >>> header_bits(Header()), header_bits(Header(width=512, height=512, check=True))  # the second stores model 6
    (8, 72)
    """
    check = b"\0\0" if header.check else b""
    return 8 * len(encode_header(header.with_fields(seed=0), check))


def first_word_budget(word_budget: int, max_bits: int | None, overhead_bits: int) -> int:
    """The word budget to ask for first: the user's, or less if the bit budget is tight."""
    if max_bits is None:
        return word_budget
    return max(1, min(word_budget, (max_bits - overhead_bits) // BITS_PER_WORD_GUESS))


def _scaled(budget: int, room: int, used: int) -> int:
    """``budget`` scaled by how much of the room for text the last answer used, minus a margin.

    Scaling the budget we asked for (not the words we got) keeps a captioner that
    overshoots its budgets overshooting by the same factor next time.
    """
    return int(budget * room / max(1, used) * _SHRINK_MARGIN)


def fit_description(
    describe: Callable[[int], str],
    cost: CostFn,
    max_bits: int | None,
    word_budget: int,
    *,
    overhead_bits: int = 0,
    max_asks: int = 4,
    progress: Progress = QUIET,
) -> Fitted:
    """Describe within ``max_bits`` (``None``: no budget): re-ask shorter (or once longer), then cut.

    ``overhead_bits`` (the header, :func:`header_bits`) is the fixed part of every file; the
    rest of the budget is what words can spend, and budgets are scaled on that part only.
    """
    if max_bits is None:
        text = describe(word_budget)
        return Fitted(text, cost(text), word_budget, 1, False, len(text.split()))
    room = max_bits - overhead_bits
    if room <= 0:
        raise SemInputError(
            f"a budget of {max_bits} bits leaves nothing for the description: the header alone "
            f"takes {overhead_bits} bits"
        )
    budget = first_word_budget(word_budget, max_bits, overhead_bits)
    text = describe(budget)
    bits = cost(text)
    asked = 1
    too_long = word_budget + 1  # the smallest budget whose answer did not fit
    while bits > max_bits and asked < max_asks and budget > 1:
        too_long = min(too_long, budget)
        budget = max(1, min(budget - 1, _scaled(budget, room, bits - overhead_bits)))
        progress.note(f"{bits} bits > budget {max_bits}: asking for at most {budget} word{'s' * (budget != 1)}")
        text = describe(budget)
        bits = cost(text)
        asked += 1
    words = len(text.split())
    if bits > max_bits:
        cut, cut_bits = truncate_to_fit(text, cost, max_bits, overhead_bits)
        progress.note(f"cut at a word boundary: {words} → {len(cut.split())} words, {cut_bits} bits")
        return Fitted(cut, cut_bits, budget, asked, True, words)
    # The first guess of a word's cost is deliberately high; when the budget it set left
    # much unspent (and the captioner kept to it), ask once for more and keep it if it fits.
    bigger = min(word_budget, too_long - 1, _scaled(budget, room, bits - overhead_bits))
    if asked < max_asks and words <= budget < bigger and bits - overhead_bits < _GROW_BELOW * room:
        progress.note(f"{bits} of {max_bits} bits used: asking for at most {bigger} words")
        longer = describe(bigger)
        longer_bits = cost(longer)
        if bits < longer_bits <= max_bits:
            return Fitted(longer, longer_bits, bigger, asked + 1, False, len(longer.split()))
        asked += 1
    return Fitted(text, bits, budget, asked, False, words)


def _prefix(words: list[str], k: int) -> str:
    # A prefix that ends in a comma or dash reads as broken and the LM prices its end
    # accordingly; drop the dangling punctuation.
    return " ".join(words[:k]).rstrip(",;:-–—")


def truncate_to_fit(text: str, cost: CostFn, max_bits: int, overhead_bits: int = 0) -> tuple[str, int]:
    """The longest word-boundary prefix of ``text`` whose file fits in ``max_bits``.

    Each cost is a real pack (the slow part), so the search interpolates: bits grow
    roughly linearly with words from ``overhead_bits`` at zero words, and the next prefix
    tried is where the line through the current bracket crosses the budget — usually two
    or three packs, not log2(words). Cost is not strictly monotone in the prefix length
    (an ending the LM finds unlikely costs more), so monotonicity only guides what to try;
    the prefix returned has always been costed and fits.

    >>> cost = lambda t: 16 + 8 * len(t)
    >>> truncate_to_fit("a big red cat on a mat", cost, 16 + 8 * 10, 16)
    ('a big red', 88)
    """
    words = text.split()
    # Bracket: prefix ``lo`` fits (0 words: the anchor, never returned), prefix ``hi`` does not.
    lo, lo_bits = 0, overhead_bits
    hi, hi_bits = len(words), cost(_prefix(words, len(words)))
    if hi_bits <= max_bits:
        return _prefix(words, hi), hi_bits
    while hi - lo > 1:
        slope = (hi_bits - lo_bits) / (hi - lo)
        guess = lo + int((max_bits - lo_bits) / slope) if slope > 0 else (lo + hi) // 2
        probe = min(hi - 1, max(lo + 1, guess))
        probe_bits = cost(_prefix(words, probe))
        if probe_bits <= max_bits:
            lo, lo_bits = probe, probe_bits
        else:
            hi, hi_bits = probe, probe_bits
    if lo == 0:
        first = _prefix(words, 1)
        raise SemInputError(
            f"a budget of {max_bits} bits is too small: the shortest description, {first!r}, needs {cost(first)} bits"
        )
    return _prefix(words, lo), lo_bits
