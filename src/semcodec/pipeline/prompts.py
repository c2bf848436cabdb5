"""The instructions every vision-language backend receives, and parsing of their replies.

One wording for all backends keeps results comparable across them. The describe prompt
asks for what a text-to-image model needs (subjects, layout, colours, style) because the
description's only reader is the generator.
"""

from __future__ import annotations

import math
import re
import unicodedata

DESCRIBE = (
    "Describe this image so that a text-to-image model can repaint it as closely as possible. "
    "Name the main subjects with their attributes and positions, the setting, the colours, "
    "the lighting, the style and the composition, most important first. "
    "Use at most {words} words. Reply with the description only."
)

REVISE = (
    "\n\nAn earlier attempt was repainted and compared with this image:\n{critique}\n"
    "Write an improved description that fixes these differences, still at most {words} words."
)

CRITIQUE = (
    "The first image is an original; the second was painted from a text description of it. "
    "Rate how well the second reproduces the first (subjects, layout, colours, style) from 0 "
    "(unrelated) to 10 (identical), then name the most important differences, most important "
    "first, in at most 60 words. Reply exactly in this form:\nSCORE: <number>\nCRITIQUE: <text>"
)


DESCRIBER_MODEL_ID = 8
"""The probability model ``encode`` codes :data:`DESCRIBE`'s replies with: the describer and the
profile are a pair. The prompt asks for one line of at most ``--words`` (30) words, most
important first, so its replies read like the start of a VLM's detailed description. On that
stand-in (held-back VLM descriptions of ``shared/data`` cut to their first 30 words on one line;
``benchmarks/describer_rate.py``, the ``choose`` half) profile 8 (adapted weights, "Describe
this image in detail.") gave the smallest files: 19.3 B against 21.7 B for profile 6 (adapted
captions) and 26.2 B for profile 3 (v3's default). Re-measured with format v5's captioner (first
60 texts): profile 8 18.05 B, profile 6 20.53, profile 10 (v5's default, captions) 20.95: the
captioner is the pair of a one-sentence caption, not of this prompt's replies."""


def describe_prompt(word_budget: int, critique: str | None) -> str:
    """The user message for describing (and, with ``critique``, revising)."""
    text = DESCRIBE.format(words=word_budget)
    if critique:
        text += REVISE.format(critique=critique.strip(), words=word_budget)
    return text


def revision_note(previous: str, critique: str) -> str:
    """What the captioner is told about an earlier attempt.

    >>> revision_note("A cat.", "The cat is black.")
    'Its description was: "A cat."\\nDifferences: The cat is black.'
    """
    return f'Its description was: "{previous}"\nDifferences: {critique.strip()}'


_PREAMBLE = re.compile(r"^(assistant|description|answer)\s*:\s*", re.IGNORECASE)


def clean_description(text: str) -> str:
    """Normalise a model's reply into one line of text worth coding.

    Control characters and line breaks become spaces (they cost bits and say nothing to a
    generator), quotes around the whole reply and a leading "Assistant:" are dropped.

    >>> clean_description('  Assistant: "A red\\n\\ncat\\t on a mat."  ')
    'A red cat on a mat.'
    """
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    text = " ".join(text.split())
    text = _PREAMBLE.sub("", text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_CRITIQUE = re.compile(r"critique\s*[:=]\s*(.*)", re.IGNORECASE | re.DOTALL)


def parse_critique(reply: str) -> tuple[float, str]:
    """Read ``SCORE: n`` (0–10) and ``CRITIQUE: ...`` from a judge's reply.

    The score is returned in [0, 1]; ``nan`` when there is no number to read, so the
    caller can fall back to another metric instead of trusting a guess.

    >>> parse_critique("SCORE: 7\\nCRITIQUE: too bright")
    (0.7, 'too bright')
    >>> s, c = parse_critique("no idea")
    >>> math.isnan(s), c
    (True, 'no idea')
    """
    match = _SCORE.search(reply)
    score = min(10.0, max(0.0, float(match.group(1)))) / 10.0 if match else math.nan
    found = _CRITIQUE.search(reply)
    critique = found.group(1) if found else _SCORE.sub("", reply)
    return score, " ".join(critique.split())
