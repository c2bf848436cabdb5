"""In-process stand-ins for the backends and the coder, for fast, exact unit tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from semcodec.container import Header, decode_header, encode_header, text_check

SENTENCE = [
    "a",
    "small",
    "red",
    "cat",
    "sits",
    "on",
    "a",
    "green",
    "lawn",
    "under",
    "a",
    "bright",
    "blue",
    "sky",
    "near",
    "an",
    "old",
    "wooden",
    "fence",
]


@dataclass
class FakeCaptioner:
    """Answers with the first ``word_budget + overshoot`` words of a fixed sentence.

    ``overshoot`` imitates captioners that ignore their budget; every call is recorded.
    """

    overshoot: int = 0
    name: str = "fake:captioner"
    calls: list[tuple[int, str | None]] = field(default_factory=list)
    sentence: list[str] = field(default_factory=lambda: list(SENTENCE))

    def describe(self, image: Any, word_budget: int, critique: str | None = None) -> str:
        self.calls.append((word_budget, critique))
        words = self.sentence[: word_budget + self.overshoot]
        if critique:  # a revision says something different, so candidates differ
            words = [*words[:-1], f"v{len(self.calls)}"]
        return " ".join(words)


@dataclass
class FakeGenerator:
    """Paints a solid colour derived from the text length and the seed."""

    honours_seed: bool = True
    name: str = "fake:generator"
    calls: list[tuple[str, int, int, int]] = field(default_factory=list)

    def generate(self, text: str, width: int, height: int, seed: int, on_step: Any = None) -> Any:
        from PIL import Image

        self.calls.append((text, width, height, seed))
        if on_step:
            on_step(1, 1)
        shade = (len(text) * 7 + seed * 40) % 256
        return Image.new("RGB", (width, height), (shade, 0, 0))


@dataclass
class FakeCritic:
    """Scores with ``score_of(reconstruction)``; ``nan`` imitates a judge with no number."""

    score_of: Callable[[Any], float] = lambda image: 0.5
    name: str = "fake:critic"
    calls: int = 0

    def critique(self, original: Any, reconstruction: Any) -> tuple[float, str]:
        self.calls += 1
        return self.score_of(reconstruction), f"critique {self.calls}"


@dataclass
class TableMetric:
    """A metric whose score is looked up from the reconstruction's red value."""

    table: dict[int, float]
    name: str = "fake-metric"
    is_fallback: bool = False

    def bind(self, original: Any) -> Callable[[Any], float]:
        return lambda image: self.table.get(image.getpixel((0, 0))[0], 0.0)


def word_cost(header_bits: int = 16, per_word: int = 10) -> Callable[[str], int]:
    """A cost function: a fixed header plus ``per_word`` bits a word."""
    return lambda text: header_bits + per_word * len(text.split())


def fake_pack(text: str, header: Header) -> bytes:
    """An honest stand-in for semcodec.pack: the real header, then the UTF-8 text (after a 0x80
    byte when the header is v2's one-byte form, as the real payload's marker makes it ≥ 0x80)."""
    marker = b"\x80" if header.compact else b""
    return encode_header(header, text_check(text) if header.check else b"") + marker + text.encode("utf-8")


def fake_unpack(data: bytes, max_tokens: int | None = None) -> Any:
    header, _check, offset = decode_header(data)
    offset += 1 if header.compact else 0
    return SimpleNamespace(text=data[offset:].decode("utf-8"), header=header)


def isnan(x: float | None) -> bool:
    return x is not None and math.isnan(x)
