"""The three roles a backend can play, as structural interfaces (PEP 544 protocols).

Anything with the right methods qualifies: the ``openai`` and ``hf`` backends, or a
few lines of fake in a test. Scores are floats in [0, 1], higher is closer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL.Image import Image

StepCallback = Callable[[int, int], None]
"""``callback(done, total)`` after each step of a slow generation (e.g. diffusion steps)."""


@runtime_checkable
class Captioner(Protocol):
    """Turns an image into a description a text-to-image model can repaint."""

    name: str

    def describe(self, image: Image, word_budget: int, critique: str | None = None) -> str:
        """Describe ``image`` in at most about ``word_budget`` words.

        ``critique``, when given, is feedback on an earlier attempt (that attempt's text and
        how its reconstruction differed); the new description should fix what it names.
        """
        ...


@runtime_checkable
class Generator(Protocol):
    """Paints an image from a description."""

    name: str
    honours_seed: bool
    """False for backends whose output a seed does not pin (the OpenAI images API)."""

    def generate(self, text: str, width: int, height: int, seed: int, on_step: StepCallback | None = None) -> Image:
        """Paint ``text`` with ``seed`` for a ``width``×``height`` header (the source's size).

        The backend paints at a size it supports nearest that aspect ratio; callers go
        through :func:`~.painting.paint`, which resizes to exactly ``width``×``height``.
        """
        ...


@runtime_checkable
class Critic(Protocol):
    """Judges a reconstruction against the original."""

    name: str

    def critique(self, original: Image, reconstruction: Image) -> tuple[float, str]:
        """Return ``(score, critique)``: score in [0, 1] (``nan`` if the judge gave no
        usable number) and the most important differences in words."""
        ...
