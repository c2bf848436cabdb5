"""Every exception a command can meet → its exit code and one line on stderr, for every command.

This is the only place that decides exit codes (the numbers come from
:mod:`semcodec.exitcodes`) and how an error is worded; ``pack``, ``unpack``, ``info``,
``model``, ``encode``, ``decode`` and ``bench`` all run through :func:`run`, and batch
items that fail go through :func:`item_failed`. Messages are one line, with control
characters escaped and credentials stripped from URLs; an internal error (a bug) says how
to get its traceback.

    >>> classify(FileNotFoundError(2, "No such file or directory", "nosuch.txt"))
    (1, 'nosuch.txt: No such file or directory')
    >>> classify(ValueError("x"))
    (70, 'internal error: ValueError: x (set SEMCODEC_DEBUG=1 for a traceback)')
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from semcodec.display import printable, redact_urls
from semcodec.errors import SemError, SemModelError
from semcodec.exitcodes import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE
from semcodec.fileio import OutputExistsError

DEBUG_HINT = "set SEMCODEC_DEBUG=1 for a traceback"

_LOCK = threading.Lock()  # batch threads report concurrently; keep each line whole


def one_line(text: str) -> str:
    """Safe to print on a terminal: one line, control characters escaped, URL credentials stripped."""
    return printable(" ".join(redact_urls(text).split()))


def _expected(err: BaseException) -> bool:
    """An error about the input or the environment, as opposed to a bug."""
    return isinstance(err, (SemError, OutputExistsError, OSError, KeyboardInterrupt, NamedError))


def _is_backend_error(err: BaseException) -> bool:
    """An image-pipeline backend failure. Looked up, not imported: importing the pipeline
    would cost every ``pack``/``unpack`` ~30 ms, and if it was never imported, no
    :class:`semcodec.pipeline.errors.BackendError` can exist."""
    errors = sys.modules.get("semcodec.pipeline.errors")
    return errors is not None and isinstance(err, errors.BackendError)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM and SIGHUP raise :class:`Terminated`;
    the handlers it replaced are put back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    before = {signum: signal.signal(signum, handler) for signum in wanted}
    try:
        yield
    finally:
        for signum, old in before.items():
            signal.signal(signum, old)


def reader_left(err: BaseException) -> bool:
    """Our standard output's reader is gone (``semcodec unpack x.sem | head -c1``): not an error,
    the command stops quietly. A named output (a FIFO) whose reader left is an error: its
    ``BrokenPipeError`` carries the name."""
    return isinstance(err, BrokenPipeError) and err.filename is None


class NamedError(Exception):
    """An error of one input, named: ``caption.txt: not a .sem file (...)`` (see :func:`named`)."""

    def __init__(self, source: str, cause: Exception) -> None:
        super().__init__(source, cause)
        self.source, self.cause = source, cause


def named(source: str, err: Exception) -> Exception:
    """``err`` to raise for the single input ``source``: a message that names no file (``not a
    .sem file``, ``corrupt payload``) will name that input (a batch names each failed input
    through :func:`item_failed`); ``-`` is standard input. A broken pipe on our stdout stays
    as it is (not an error: see :func:`run`)."""
    if reader_left(err) or not _expected(err):
        return err  # a bug keeps its own type and traceback (SEMCODEC_DEBUG=1)
    return NamedError("standard input" if source == "-" else source, err)


def classify(err: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``err``."""
    if isinstance(err, NamedError):
        code, message = classify(err.cause)
        if isinstance(err.cause, SemModelError):  # the model or its cache failed, not this input
            return code, message
        shown = one_line(err.source)
        already = message.startswith(shown) or isinstance(err.cause, OutputExistsError) or (
            isinstance(err.cause, OSError) and err.cause.filename is not None)  # names the file it is about
        return code, message if already else f"{shown}: {message}"
    if isinstance(err, Terminated):
        return 128 + err.signum, f"terminated ({err})"
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(err, SemModelError) or _is_backend_error(err):
        return EXIT_UNAVAILABLE, one_line(str(err))
    if isinstance(err, (SemError, OutputExistsError)):
        return EXIT_BAD_INPUT, one_line(str(err))
    if isinstance(err, OSError):
        detail = err.strerror or str(err)
        where = f"{os.fspath(err.filename)}: " if err.filename is not None else ""
        return EXIT_BAD_INPUT, one_line(f"{where}{detail}")
    detail = f": {err}" if str(err) else ""
    return EXIT_INTERNAL, one_line(f"internal error: {type(err).__name__}{detail} ({DEBUG_HINT})")


def report(message: str) -> None:
    """Print ``semcodec: error: MESSAGE`` on stderr."""
    with _LOCK:
        print(f"semcodec: error: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Print a non-error line (a summary) on stderr, made safe for a terminal."""
    with _LOCK:
        print(one_line(message), file=sys.stderr, flush=True)


def _debugging(err: BaseException) -> bool:
    return bool(os.environ.get("SEMCODEC_DEBUG")) and not _expected(err)


def item_failed(source: str, err: BaseException) -> tuple[int, str]:
    """Report one failed item of a batch (the batch goes on); returns its code and message.

    The message names ``source`` once: errors that already start with it are not prefixed again.
    A model error (:class:`~semcodec.errors.SemModelError`: the model cannot be fetched, is
    wrong, or its cache cannot be written) is no failure of this item: it stops the batch
    (every item needs the model) and :func:`run` reports it, exit 3, naming no input.
    """
    if isinstance(err, KeyboardInterrupt) or _debugging(err) or isinstance(err, SemModelError):
        raise err
    code, message = classify(err)
    shown = one_line(source)
    if not message.startswith(shown):
        message = f"{shown}: {message}"
    report(message)
    return code, message


def interrupted(err: KeyboardInterrupt) -> int:
    """Report an interruption (Ctrl-C, SIGTERM, SIGHUP); its exit code."""
    code, message = classify(err)
    report(message)
    return code


def run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; any error becomes one line on stderr and its exit code."""
    try:
        return command(args)
    except (KeyboardInterrupt, Exception) as err:
        if reader_left(err):  # no more output is wanted; keep the exit's flush from failing too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        if _debugging(err):
            raise
        code, message = classify(err)
        report(message)
        return code
