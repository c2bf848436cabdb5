#!/usr/bin/env python3
"""Rate of every profile on the held-back splits of ``shared/data``, against brotli -q11.

The splits are those of ``training/corpora.py`` (never trained on; ``choose`` picked the
profiles and the adapter's run, ``report`` is only measured). Each text is packed on its
own with the real codec (exact file bytes, header included) and compared with brotli
-q11 of its UTF-8. One more set stands in for what ``semcodec encode`` codes: its describe
prompt asks for at most 30 words and the reply is cleaned to one line, so each held-back
VLM description is cut to its first 30 words on one line (``descriptions-vlm-30w``).

    python benchmarks/describer_rate.py --part choose --limit 60 --models 2,3,5,6,7,8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

SETS = ("captions-coco", "captions-flickr8k", "paragraphs-coco", "descriptions-vlm", "descriptions-vlm-30w",
        "descriptions-human", "alt-text-cc3m")


def texts_of(name: str, part: str) -> list[str]:
    import heldout

    if name == "descriptions-vlm-30w":
        return [" ".join(t.text.split()[:30]) for t in heldout.held_texts("descriptions-vlm", part)]
    return [t.text for t in heldout.held_texts(name, part)]


def main() -> int:
    import brotli

    import semcodec
    from semcodec.registry import MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("choose", "report"), default="report")
    ap.add_argument("--limit", type=int, default=50, help="texts per set (the first N of the split)")
    ap.add_argument("--models", default=",".join(str(m) for m in sorted(MODELS)))
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    models = [int(m) for m in args.models.split(",")]
    print(f"held-back part {args.part!r}, first {args.limit} texts of each set; bytes per text "
          f"(file bytes, header included) and the ratio to brotli -q11")
    head = "| set | n | UTF-8 | brotli | " + " | ".join(f"model {m}" for m in models) + " | best |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for name in args.sets.split(","):
        texts = texts_of(name, args.part)[: args.limit]
        started = time.perf_counter()
        utf8 = statistics.fmean(len(t.encode()) for t in texts)
        br = statistics.fmean(len(brotli.compress(t.encode(), quality=11)) for t in texts)
        sizes = {m: statistics.fmean(len(semcodec.pack(t, model_id=m)) for t in texts) for m in models}
        best = min(sizes, key=lambda m: sizes[m])
        cells = " | ".join(f"{sizes[m]:.2f} (1/{br / sizes[m]:.2f})" for m in models)
        print(f"| {name} | {len(texts)} | {utf8:.1f} | {br:.2f} | {cells} | {best} |", flush=True)
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
