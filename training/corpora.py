"""The training, choosing and reporting splits of ``shared/data``, one rule per corpus.

Every split is a pure function of the corpus files (no randomness), so the held-back
texts that ``benchmarks/`` and ``semcodec bench text`` report on are the ones training
never saw:

* ``coco-captions-dev.txt``: lines 1–4000 train; 4001–5001 are held back (the README's
  caption rate table has always reported on them).
* ``coco-paragraphs-dev.txt``: lines 1–300 train (profiles 4 and 5 were primed on the first
  lines); 301–500 held back.
* ``flickr8k-captions.txt``: five captions per photo in consecutive lines; the last 10 %
  of photos (lines from 36,411) held back.
* ``cc3m-val-captions.txt``: lines 1–14,000 train; 14,001–15,833 held back.
* ``descriptions-dev.jsonl``: split by *image*, so one photo's descriptions by several
  describers never straddle the split: an image whose ``zlib.crc32`` is 0 mod 10 is held
  back (about 10 %).

"Held back" texts are split again: the first half of each ("choose") picks the
hyper-parameters and profiles, the second half ("report") is only measured.

    >>> spl = split_of("flickr8k", 36410), split_of("flickr8k", 36411)
    >>> spl
    ('train', 'held')
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

KINDS = ("captions", "paragraphs", "descriptions", "alt-text")


@dataclass(frozen=True)
class Text:
    corpus: str
    line: int  # 1-based line of the corpus file (for paragraphs made of captions: the first line)
    kind: str  # one of KINDS: which instruction it is trained under
    text: str
    source: str = ""  # descriptions: who wrote it


def split_of(corpus: str, line: int, image: str = "") -> str:
    """``train`` or ``held`` for a corpus line (1-based)."""
    if corpus == "coco-captions":
        return "train" if line <= 4000 else "held"
    if corpus == "coco-paragraphs":
        return "train" if line <= 300 else "held"
    if corpus == "flickr8k":
        return "train" if line <= 36410 else "held"
    if corpus == "cc3m":
        return "train" if line <= 14000 else "held"
    if corpus == "descriptions":
        return "held" if zlib.crc32(image.encode()) % 10 == 0 else "train"
    raise ValueError(corpus)


def load(corpus: str, data: Path = DATA) -> list[tuple[Text, str]]:
    """Every text of ``corpus`` with its split."""
    out: list[tuple[Text, str]] = []
    if corpus == "descriptions":
        with (data / "descriptions-dev.jsonl").open(encoding="utf-8") as handle:
            for i, raw in enumerate(handle, 1):
                rec = json.loads(raw)
                text = rec["text"].strip()
                if text:
                    out.append((Text(corpus, i, "descriptions", text, rec["model"]),
                                split_of(corpus, i, rec["image"])))
        return out
    files = {"coco-captions": "coco-captions-dev.txt", "coco-paragraphs": "coco-paragraphs-dev.txt",
             "flickr8k": "flickr8k-captions.txt", "cc3m": "cc3m-val-captions.txt"}
    kinds = {"coco-captions": "captions", "coco-paragraphs": "paragraphs", "flickr8k": "captions",
             "cc3m": "alt-text"}
    for i, line in enumerate((data / files[corpus]).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            out.append((Text(corpus, i, kinds[corpus], line.strip()), split_of(corpus, i)))
    return out


def grouped_paragraphs(corpus: str, split: str) -> list[Text]:
    """Five consecutive captions of one photo joined by spaces, as coco-paragraphs-dev.txt
    was made: training paragraphs from caption files (Flickr8k: five per photo)."""
    texts = [t for t, s in load(corpus) if s == split]
    return [Text(corpus, g[0].line, "paragraphs", " ".join(t.text for t in g))
            for g in (texts[i : i + 5] for i in range(0, len(texts) - 4, 5))]


def held(corpus: str, part: str) -> list[Text]:
    """The held-back texts of ``corpus``: ``choose`` (first half) or ``report`` (second half)."""
    texts = [t for t, s in load(corpus) if s == "held"]
    half = len(texts) // 2
    return texts[:half] if part == "choose" else texts[half:]
