"""A tiny progress printer for stderr (no tqdm dependency).

On a terminal a step bar redraws one line in place; elsewhere (logs, CI, pipes) every
event is a plain line, throttled so a 50-step diffusion run does not print 50 lines a
second. One lock serialises output so concurrent batch items never interleave mid-line.
Every line is passed through :func:`semcodec.display.printable`: descriptions come from
remote models and from files, and may hold terminal escape sequences.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from semcodec.display import printable, redact_urls

_LOCK = threading.Lock()


class Progress:
    """Prints ``prefix: message`` lines; ``enabled=False`` makes every call a no-op."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        prefix: str = "",
        live: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.prefix = prefix
        # Redrawing in place only makes sense on a terminal and with one writer.
        self.live = bool(live if live is not None else getattr(self.stream, "isatty", lambda: False)())

    def child(self, prefix: str, *, live: bool | None = None) -> Progress:
        """A printer for one item of a batch: same stream, its own prefix."""
        full = f"{self.prefix}{prefix}: " if prefix else self.prefix
        return Progress(self.stream, enabled=self.enabled, prefix=full, live=self.live if live is None else live)

    def note(self, message: str) -> None:
        """One line of news (a step started, an iteration's result)."""
        if not self.enabled:
            return
        with _LOCK:
            self.stream.write(printable(redact_urls(f"{self.prefix}{message}")) + "\n")
            self.stream.flush()

    def steps(self, label: str, total: int) -> StepBar:
        """A counter for ``total`` steps of one slow operation (diffusion steps, calls)."""
        return StepBar(self, label, total)


class StepBar:
    """Counts steps; use as ``bar(i)`` with the 1-based number of the step just done."""

    _THROTTLE_S = 1.0

    def __init__(self, progress: Progress, label: str, total: int) -> None:
        self.progress = progress
        self.label = label
        self.total = max(1, total)
        self.started = time.monotonic()
        self._last_print = 0.0

    def __call__(self, done: int) -> None:
        p = self.progress
        if not p.enabled:
            return
        now = time.monotonic()
        final = done >= self.total
        if not final and not p.live and now - self._last_print < self._THROTTLE_S:
            return
        self._last_print = now
        width = 20
        filled = width * min(done, self.total) // self.total
        text = printable(
            f"{p.prefix}{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{self.total} {now - self.started:.1f}s"
        )
        with _LOCK:
            if p.live:
                p.stream.write("\r" + text + ("\n" if final else ""))
            else:
                p.stream.write(text + "\n")
            p.stream.flush()


QUIET = Progress(enabled=False)
"""A printer that prints nothing (the default for library calls)."""
