"""Many inputs at once: a bounded thread pool that keeps going past failures.

Threads (not processes) because the slow part of an API-backed encode is waiting on the
network; the backends bound their own requests in flight and serialise local models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcodec.pipeline.imaging import IMAGE_SUFFIXES


@dataclass
class Outcome:
    """What became of one input: a summary, or the one-line error and its exit code."""

    source: str
    output: str
    summary: dict[str, Any] | None = None
    error: str | None = None
    code: int = 0


def images_in(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def output_names(inputs: list[Path], outdir: Path, suffix: str) -> list[Path]:
    """``OUTDIR/<stem><suffix>``; inputs sharing a stem (a.jpg, a.png) keep their extension.

    >>> [p.name for p in output_names([Path("a.jpg"), Path("a.png"), Path("b.jpg")], Path("o"), ".sem")]
    ['a.jpg.sem', 'a.png.sem', 'b.sem']
    """
    stems = [p.stem for p in inputs]
    return [outdir / ((p.name if stems.count(p.stem) > 1 else p.stem) + suffix) for p in inputs]


def run_all(
    jobs: Iterable[tuple[str, str]],
    work: Callable[[str, str], Outcome],
    concurrency: int,
) -> list[Outcome]:
    """Run ``work(source, output)`` for each job, at most ``concurrency`` at a time, in order."""
    jobs = list(jobs)
    if concurrency <= 1 or len(jobs) <= 1:
        return [work(src, out) for src, out in jobs]
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="semcodec-encode")
    try:
        futures = [pool.submit(work, src, out) for src, out in jobs]
        return [f.result() for f in futures]
    except BaseException:
        # Ctrl-C: start nothing new; the items in flight finish their current call
        # (outputs are atomic, so nothing half-written is left behind).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
