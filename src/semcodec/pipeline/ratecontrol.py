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

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from semcodec.container import Header, encode_header
from semcodec.errors import SemInputError
from semcodec.pipeline.progress import QUIET, Progress

CostFn = Callable[[str], int]
"""Bits of the packed file for a description (header included, seed 0)."""

BITS_PER_WORD_GUESS = 10
"""First guess of a word's cost, only to pick the first word budget; measured after that."""

_SHRINK_MARGIN = 0.9  # ask for 10 % fewer words than proportional: captioners overshoot


def budget_from(max_bits: int | None, target_ubpp: float | None, width: int, height: int) -> int | None:
    """The file-size budget in bits from ``--max-bits`` or ``--target-ubpp``.

    >>> budget_from(None, 100.0, 1024, 1024)
    104
    >>> budget_from(None, None, 1024, 1024) is None
    True
    """
    if max_bits is not None:
        return max_bits
    if target_ubpp is not None:
        return int(target_ubpp * width * height / 1e6)
    return None


def seed_bits(header: Header, seed: int) -> int:
    """Extra header bits that storing ``seed`` costs over storing seed 0.

    >>> seed_bits(Header(), 0), seed_bits(Header(), 3), seed_bits(Header(), 300)
    (0, 8, 16)
    """
    check = b"\0\0" if header.check else b""
    with_seed = encode_header(replace(header, seed=seed), check)
    without = encode_header(replace(header, seed=0), check)
    return 8 * (len(with_seed) - len(without))


class MemoCost:
    """Caches a cost function: the same text is often costed twice (fit, then report)."""

    def __init__(self, cost: CostFn) -> None:
        self._cost = cost
        self._cache: dict[str, int] = {}
        # The LM behind the default cost is not known to be thread-safe, and is CPU-bound
        # anyway: one text at a time.
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        with self._lock:
            if text not in self._cache:
                self._cache[text] = int(self._cost(text))
            return self._cache[text]


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


def first_word_budget(word_budget: int, max_bits: int | None, empty_bits: int) -> int:
    """The word budget to ask for first: the user's, or less if the bit budget is tight."""
    if max_bits is None:
        return word_budget
    return max(1, min(word_budget, (max_bits - empty_bits) // BITS_PER_WORD_GUESS))


def fit_description(
    describe: Callable[[int], str],
    cost: CostFn,
    max_bits: int | None,
    word_budget: int,
    *,
    max_asks: int = 4,
    progress: Progress = QUIET,
) -> Fitted:
    """Describe within ``max_bits`` (``None``: no budget), re-asking then cutting."""
    if max_bits is None:
        text = describe(word_budget)
        words = len(text.split())
        return Fitted(text, cost(text), word_budget, 1, False, words)
    empty_bits = cost("")
    if empty_bits > max_bits:
        raise SemInputError(
            f"a budget of {max_bits} bits is below the smallest possible file ({empty_bits} bits "
            f"with this header and an empty description)"
        )
    budget = first_word_budget(word_budget, max_bits, empty_bits)
    text = describe(budget)
    bits = cost(text)
    asked = 1
    while bits > max_bits and asked < max_asks and budget > 1:
        # Scale the budget we asked for (not the words we got) by how far over we are: a
        # captioner that overshot its budget will likely overshoot the next one alike.
        ratio = (max_bits - empty_bits) / max(1, bits - empty_bits)
        budget = max(1, min(budget - 1, int(budget * ratio * _SHRINK_MARGIN)))
        progress.note(f"{bits} bits > budget {max_bits}: asking for at most {budget} words")
        text = describe(budget)
        bits = cost(text)
        asked += 1
    words_before = len(text.split())
    if bits <= max_bits:
        return Fitted(text, bits, budget, asked, False, words_before)
    cut, bits = truncate_to_fit(text, cost, max_bits)
    progress.note(f"cut at a word boundary: {words_before} → {len(cut.split())} words, {bits} bits")
    return Fitted(cut, bits, budget, asked, True, words_before)


def _prefix(words: list[str], k: int) -> str:
    # A prefix that ends in a comma or dash reads as broken and the LM prices its end
    # accordingly; drop the dangling punctuation.
    return " ".join(words[:k]).rstrip(",;:-–—")


def truncate_to_fit(text: str, cost: CostFn, max_bits: int) -> tuple[str, int]:
    """The longest word-boundary prefix of ``text`` whose file fits in ``max_bits``.

    Cost is not strictly monotone in the prefix length (an ending the LM finds unlikely
    costs more), so the binary search assumes monotonicity only to choose what to try;
    the prefix it returns has always been costed and fits.

    >>> cost = lambda t: 16 + 8 * len(t)
    >>> truncate_to_fit("a big red cat on a mat", cost, 16 + 8 * 10)
    ('a big red', 88)
    """
    words = text.split()
    first = _prefix(words, 1)
    first_bits = cost(first)
    if not words or first_bits > max_bits:
        raise SemInputError(
            f"a budget of {max_bits} bits is too small: the shortest description, "
            f"{first!r}, needs {first_bits} bits"
        )
    lo, lo_bits, hi = 1, first_bits, len(words)
    full_bits = cost(_prefix(words, hi))
    if full_bits <= max_bits:
        return _prefix(words, hi), full_bits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        mid_bits = cost(_prefix(words, mid))
        if mid_bits <= max_bits:
            lo, lo_bits = mid, mid_bits
        else:
            hi = mid
    return _prefix(words, lo), lo_bits
