"""μbpp, the codec's rate unit: one formula and one JSON key for every report and budget.

Rates in this field (PerCo, Text+Sketch, CMC-Bench) are bits over the **source image's**
pixels, and a ``.sem`` header stores the source's width × height (SPEC §2), so every
rate — ``semcodec info``, ``encode --json``, ``--target-ubpp`` budgets, ``bench images``
and :attr:`semcodec.SemFile.micro_bpp` — is file bits over the header's pixels, here.

    >>> micro_bpp(8 * 13, 768, 512)
    264.4856770833333
    >>> reported(8 * 13, 768, 512)
    264.486
    >>> bits_for(264.486, 768, 512)  # a --target-ubpp budget, in whole bits
    104
    >>> KEY, KEY_AT_1024
    ('micro_bpp', 'micro_bpp_at_1024')
"""

from __future__ import annotations

import math

KEY = "micro_bpp"
"""The JSON key of a rate in μbpp, in every JSON this project prints."""

KEY_AT_1024 = "micro_bpp_at_1024"
"""The JSON key of the same file's rate over 1024 × 1024 pixels (for comparing across sizes)."""

DIGITS = 3
"""Decimals a printed rate keeps."""


def micro_bpp(bits: float, width: int, height: int) -> float:
    """File bits per pixel of a ``width`` × ``height`` image, in millionths."""
    return 1e6 * bits / (width * height)


def reported(bits: float, width: int, height: int) -> float:
    """:func:`micro_bpp` rounded to :data:`DIGITS` decimals, as JSON reports print it."""
    return round(micro_bpp(bits, width, height), DIGITS)


def bits_for(rate: float, width: int, height: int) -> int:
    """The most whole bits a file of a ``width`` × ``height`` image may have at ``rate`` μbpp.

    Rounded down (a budget is a promise); the 9-decimal rounding first only keeps float
    error (``0.29999…``) from costing a whole bit.
    """
    return math.floor(round(rate * width * height / 1e6, 9))
