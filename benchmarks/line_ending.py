#!/usr/bin/env python3
"""What a final line ending costs: as ordinary text tokens vs v2's line-ending symbol.

For each caption, the exact model's bits for ``caption`` and ``caption + "\\n"`` (and
``"\\r\\n"``) coded as tokens before end-of-text, against the fixed-table symbol v2 codes
after end-of-text (SPEC §4: none 1 bit, ``\\n`` 1.19 bits, ``\\r\\n`` 4 bits).

    nice -n 5 env OPENBLAS_NUM_THREADS=1 python benchmarks/line_ending.py --limit 60 --model 3
"""

from __future__ import annotations

import argparse
import math
import sys


def main(argv: list[str] | None = None) -> int:
    from semcodec import coding
    from semcodec.bench.corpus import read_corpus
    from semcodec.codec import LINE_ENDING_TABLE, frequency_tables
    from semcodec.registry import DEFAULT_MODEL_ID

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from priming import data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--model", type=int, default=DEFAULT_MODEL_ID)
    args = parser.parse_args(argv)
    texts = read_corpus(data_dir() / "coco-captions-dev.txt").texts[3000 : 3000 + 5 * args.limit : 5]
    sums = {"": 0.0, "\n": 0.0, "\r\n": 0.0}
    for text in texts:
        for ending in sums:
            symbols, tables = frequency_tables(text + ending, args.model)
            sums[ending] += coding.cross_entropy_bits(symbols, list(tables))
    n = len(texts)
    fixed = [24 - math.log2(int(f)) for f in LINE_ENDING_TABLE]
    print(f"model {args.model}, {n} held-out captions (lines 3000.. of coco-captions-dev.txt, one per image)")
    print("| ending | as text tokens: extra bits | v2 line-ending symbol: bits |")
    print("| --- | ---: | ---: |")
    base = sums[""] / n
    print(f"| none | 0 (mean {base:.2f} bits/caption) | {fixed[0]:.2f} |")
    print(f"| \\n | {sums[chr(10)] / n - base:+.2f} | {fixed[1]:.2f} |")
    print(f"| \\r\\n | {sums[chr(13) + chr(10)] / n - base:+.2f} | {fixed[2]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
