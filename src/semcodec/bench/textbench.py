"""The text table: every coder's mean size on the same texts, and semcodec's distance to its floor.

Columns (one row per coder):

* ``B/text`` — mean bytes per text (for semcodec: the whole ``.sem`` file, header included);
* ``bits/char`` — total bits over total characters;
* ``×brotli`` — mean bytes relative to brotli -q11 (below 1: smaller than brotli);
* ``limit B`` — the model's cross-entropy of the text plus end-of-text, in bytes: what an
  ideal coder with the same model would need for the payload;
* ``gap B`` — ``B/text − limit B``: the header (``of which hdr``) plus the range coder's
  termination overhead;
* ``pack tok/s`` / ``unpack tok/s`` — text tokens per second (model load excluded).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from semcodec.bench import tables
from semcodec.bench.classic import BROTLI, ZSTD_DICT_SIZE, classic_sizes
from semcodec.bench.corpus import Corpus, dictionary_split
from semcodec.bench.lmrate import UNPACK_LIMIT, ProfileRun, Say, measure_profile, silent
from semcodec.container import Header, encode_header


@dataclass
class Row:
    """One coder's line of the table (None: does not apply or not measured)."""

    coder: str
    bytes_per_text: float
    bits_per_char: float
    ratio_to_brotli: float | None = None
    limit_bytes: float | None = None
    header_bytes: int | None = None
    gap_bytes: float | None = None
    pack_tokens_per_s: float | None = None
    unpack_tokens_per_s: float | None = None
    note: str | None = None


@dataclass
class TextBench:
    """The table for one corpus, with what it was measured on."""

    corpus: str
    path: str
    measured: int
    texts: int
    characters: int
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def profile_label(model_id: int) -> str:
    """``semcodec 0 (describe)`` for a registry profile.

    >>> profile_label(2)
    'semcodec 2 (detailed)'
    """
    from semcodec.registry import model_spec

    return f"semcodec {model_id} ({model_spec(model_id).name.rsplit('/', 1)[-1]})"


def run_text_bench(
    corpus: Corpus,
    *,
    limit: int | None = None,
    models: list[int] | None = None,
    unpack_limit: int = UNPACK_LIMIT,
    dict_size: int = ZSTD_DICT_SIZE,
    say: Say = silent,
) -> TextBench:
    """Measure the first ``limit`` texts of ``corpus`` with every coder and model profile."""
    from semcodec.registry import MODELS

    n = len(corpus.texts) if limit is None else min(limit, len(corpus.texts))
    texts = corpus.texts[:n]
    models = sorted(MODELS) if models is None else models
    runs: list[ProfileRun] = []
    for model_id in models:
        label = f"{corpus.name}: {profile_label(model_id)}: "
        runs.append(measure_profile(texts, model_id, unpack_limit, say, label))
    # Every coder is averaged over the same texts: those all semcodec profiles could code.
    keep = [i for i in range(n) if all(r.file_bytes[i] is not None for r in runs)]
    if not keep:
        raise ValueError(f"{corpus.name}: semcodec could code none of the {n} texts")
    split = dictionary_split(corpus, n)
    classic = classic_sizes(texts, split, dict_size)
    chars = sum(len(texts[i]) for i in keep)

    def mean(values: list[Any]) -> float:
        return float(sum(values[i] for i in keep)) / len(keep)

    rows = [Row(c.name, mean(c.sizes), 8 * sum(c.sizes[i] for i in keep) / chars, note=c.note) for c in classic.coders]
    for run in runs:
        size = mean(run.file_bytes)
        floor = mean(run.info_bits) / 8
        rows.append(
            Row(
                profile_label(run.model_id),
                size,
                8 * size * len(keep) / chars,
                limit_bytes=floor,
                header_bytes=len(encode_header(Header(model_id=run.model_id))),
                gap_bytes=size - floor,
                pack_tokens_per_s=run.pack_tokens_per_s,
                unpack_tokens_per_s=run.unpack_tokens_per_s,
            )
        )
    brotli = next((r.bytes_per_text for r in rows if r.coder == BROTLI), None)
    for row in rows:
        row.ratio_to_brotli = None if brotli is None else row.bytes_per_text / brotli
    notes = list(classic.notes)
    unpacked = "/".join(str(r.unpack_texts) for r in runs)
    notes.append(
        f"semcodec: unpack tok/s over the first {unpacked} texts; each of those was packed with "
        "semcodec.pack (same size as measured) and unpacked to the identical text"
    )
    if brotli is None:
        notes.append("×brotli not shown: brotli is not installed")
    skipped = n - len(keep)
    if skipped:
        failures = sorted({f for r in runs for f in r.failures})
        notes.append(f"{skipped} of {n} texts left out of every row: semcodec refused them ({failures[0]} ...)")
    profiles = [
        {
            "model_id": r.model_id,
            "name": r.name,
            "pack_seconds": r.pack_seconds,
            "pack_tokens": r.pack_tokens,
            "unpack_seconds": r.unpack_seconds,
            "unpack_tokens": r.unpack_tokens,
            "unpack_texts": r.unpack_texts,
            "load_seconds": r.load_seconds,
            "mean_tokens": mean(r.tokens),
            "failures": r.failures,
        }
        for r in runs
    ]
    return TextBench(corpus.name, str(corpus.path), n, len(keep), chars, rows, notes, profiles)


HEADERS = [
    "coder",
    "B/text",
    "bits/char",
    "×brotli",
    "limit B",
    "gap B",
    "of which hdr",
    "pack tok/s",
    "unpack tok/s",
]


def render_text_bench(bench: TextBench) -> str:
    """The terminal table for one corpus, with its caption and notes."""
    rows = [
        [
            r.coder,
            tables.num(r.bytes_per_text),
            tables.num(r.bits_per_char, 3),
            tables.num(r.ratio_to_brotli, 3),
            tables.num(r.limit_bytes),
            tables.num(r.gap_bytes, 2, signed=True),
            "" if r.header_bytes is None else str(r.header_bytes),
            tables.num(r.pack_tokens_per_s, 1),
            tables.num(r.unpack_tokens_per_s, 1),
        ]
        for r in bench.rows
    ]
    mean_chars = bench.characters / bench.texts
    lines = [
        f"{bench.corpus}: {bench.texts} texts (of the first {bench.measured} in the file), "
        f"{mean_chars:.1f} characters on average; each text coded on its own",
        "",
        tables.render(HEADERS, rows),
        "",
    ]
    lines += [f"  {r.coder}: {r.note}" for r in bench.rows if r.note]
    lines += [f"  note: {n}" for n in bench.notes]
    lines.append(
        "  limit B = model cross-entropy of text + end-of-text (the payload's floor);\n"
        "  gap B = B/text − limit B, of which 'hdr' bytes are the .sem header, the rest the range coder's end"
    )
    return "\n".join(lines)


def dumps(benches: list[TextBench]) -> str:
    """The ``--json`` output: one object per corpus."""
    return json.dumps({"corpora": [b.to_json() for b in benches]}, indent=2, ensure_ascii=False)
