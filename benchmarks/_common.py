"""Helpers shared by the scripts in this folder (run as scripts, so this folder is on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one untimed warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def default_captions(script: str) -> str:
    """The development captions: ``shared/data`` inside the checkout, beside it, or below the cwd.

    Without them, exits saying ``script`` needs a captions file.
    """
    repo = Path(__file__).resolve().parent.parent
    for base in (repo / "shared" / "data", repo.parent / "shared" / "data", Path("shared") / "data"):
        if (base / "coco-captions-dev.txt").is_file():
            return str(base / "coco-captions-dev.txt")
    raise SystemExit(f"{script}: no shared/data/coco-captions-dev.txt here; pass a captions file")
