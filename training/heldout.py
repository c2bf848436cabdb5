"""Write the held-back splits of ``shared/data`` (never trained on) as ``.jsonl`` corpora.

``semcodec bench text`` and ``benchmarks/text_rate.py`` read them like any corpus:

    python training/heldout.py --out /tmp/heldout
    semcodec bench text /tmp/heldout/descriptions-vlm-report.jsonl --limit 100 --models 2,5,8

One file per corpus kind and half: ``choose`` (first half: what profiles and hyper-parameters
were picked on) and ``report`` (second half: only measured). Descriptions are split by who
wrote them: ``descriptions-vlm`` (InstructBLIP, LLaVA-1.5, MiniGPT-4, Shikra, PaLI) and
``descriptions-human`` (ImageInWords and DOCCI annotators).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora

SETS = {
    "captions-coco": ("coco-captions", None),
    "captions-flickr8k": ("flickr8k", None),
    "alt-text-cc3m": ("cc3m", None),
    "paragraphs-coco": ("coco-paragraphs", None),
    "descriptions-vlm": ("descriptions", False),
    "descriptions-human": ("descriptions", True),
}


def held_texts(name: str, part: str) -> list[corpora.Text]:
    corpus, human = SETS[name]
    texts = corpora.held(corpus, part) if human is None else [
        t for t in corpora.held(corpus, "choose") + corpora.held(corpus, "report")
        if t.source.startswith("human") == human]
    if human is not None:  # split the one kind's held-back texts in halves of their own
        half = len(texts) // 2
        texts = texts[:half] if part == "choose" else texts[half:]
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        for part in ("choose", "report"):
            texts = held_texts(name, part)
            path = args.out / f"{name}-{part}.jsonl"
            with path.open("w", encoding="utf-8") as out:
                for t in texts:
                    out.write(json.dumps({"text": t.text, "line": t.line, "source": t.source}, ensure_ascii=False)
                              + "\n")
            print(f"{path}: {len(texts)} texts")


if __name__ == "__main__":
    main()
