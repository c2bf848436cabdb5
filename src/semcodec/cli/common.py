"""What every command shares: argument types, reading inputs, planning outputs, stderr lines.

    >>> int_at_least(1)("3")
    3
    >>> output_plan(["a.txt"], None, lambda s: s + ".sem", ".sem")
    [('a.txt', 'a.txt.sem')]
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from semcodec.cli.failures import note, one_line
from semcodec.errors import SemError, SemInputError
from semcodec.exitcodes import EXIT_CODES_HELP, EXIT_OK, EXIT_PARTIAL
from semcodec.fileio import STDIO, read_input, refuse_existing, refuse_same_file

STDIO_HELP = "'-' as an input reads standard input; '-o -' writes standard output."
FORMATTER = argparse.RawDescriptionHelpFormatter


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: it reports its own leftover arguments under its own usage
    (argparse leaves them to the top-level parser, whose usage line says nothing of the command)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def epilog(examples: str = "", notes: str = "") -> str:
    """A subcommand's help footer: its examples, notes, the ``-`` convention, the exit codes."""
    head = f"examples:\n{examples.rstrip()}\n\n" if examples else ""
    more = f"{notes.rstrip()}\n\n" if notes else ""
    return f"{head}{more}{STDIO_HELP}\n\n{EXIT_CODES_HELP}"


# -- argument types ---------------------------------------------------------------------


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer >= ``low`` (and <= ``high``), with a one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}")
        return value

    return parse


def float_above(low: float, *, inclusive: bool) -> Callable[[str], float]:
    """argparse type: a finite float ``> low`` (``≥ low`` when ``inclusive``); nan is refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = value >= low if inclusive else value > low
        if not ok or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{value} must be a number {'≥' if inclusive else '>'} {low:g}")
        return value

    return parse


positive_float = float_above(0, inclusive=False)
non_negative_float = float_above(0, inclusive=True)


def dimension(text: str) -> int:
    """argparse type: an image width or height the header can hold."""
    from semcodec.container import MAX_DIMENSION

    return int_at_least(1, MAX_DIMENSION)(text)


def paint_size(text: str) -> tuple[int, int]:
    """argparse type for ``--paint-size WxH``.

    >>> paint_size("768x512")
    (768, 512)
    """
    from semcodec.container import MAX_DIMENSION

    width, sep, height = text.lower().partition("x")
    try:
        size = (int(width), int(height)) if sep else None
    except ValueError:
        size = None
    if size is None or not all(1 <= side <= MAX_DIMENSION for side in size):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT with sides in [1, {MAX_DIMENSION}]")
    return size


def seed(text: str) -> int:
    """argparse type: a generator seed, [0, 2**64)."""
    return int_at_least(0, 2**64 - 1)(text)


def model_list(text: str) -> list[int]:
    """argparse type: comma-separated model ids or names."""
    from semcodec.registry import model_id_by_name

    try:
        return [model_id_by_name(part.strip()) for part in text.split(",") if part.strip()]
    except SemError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# -- inputs -----------------------------------------------------------------------------


def read_sem(path: str) -> bytes:
    """A ``.sem`` input, read with the bound every ``.sem`` reader uses; never a terminal
    (binary data is not typed in: waiting for it would look like a hang)."""
    from semcodec.codec import MAX_FILE_BYTES

    if path == STDIO and sys.stdin.isatty():
        raise SemInputError("refusing to read binary .sem data from a terminal (give a file, or pipe one in)")

    return read_input(path, MAX_FILE_BYTES)


def read_text(path: str) -> str:
    """A UTF-8 text input, read with the byte bound beyond which no text fits in a file."""
    from semcodec.codec import MAX_TEXT_BYTES

    raw = read_input(path, MAX_TEXT_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        shown = "standard input" if path == STDIO else path
        raise SemInputError(f"{shown}: input is not UTF-8 ({err.reason} at byte {err.start})") from None


# -- outputs ----------------------------------------------------------------------------


def output_plan(
    inputs: Sequence[str], output: str | None, default: Callable[[str], str], suffix: str, *, concatenate: bool = False
) -> list[tuple[str, str]]:
    """``(input, output)`` for each input, checked before any work is done.

    One input: ``-o`` names the file (``-`` for stdout), else ``default(input)``. Several:
    ``-o`` must be an existing folder, each output named ``<input name><suffix>`` (``.sem``
    stripped first when unpacking), or ``-o -`` when outputs may be concatenated on
    stdout (texts; not ``.sem`` files, which carry no length). Refused: a folder as the output
    of one input, two inputs that would write the same output, an output that is one of the inputs.
    """
    many = len(inputs) > 1
    if many and output is not None and not (output == STDIO and concatenate) and not Path(output).is_dir():
        raise SemInputError(f"with several inputs, -o must be an existing directory ({output} is not)")
    if not many and output is not None and output != STDIO and Path(output).is_dir():
        raise SemInputError(f"{output} is a directory: with one input, -o names the output file")
    plan: list[tuple[str, str]] = []
    for src in inputs:
        if not many or output is None or output == STDIO:
            target = output or default(src)
        else:
            name = Path(src).name if src != STDIO else "stdin"
            name = name[: -len(".sem")] if suffix != ".sem" and name.endswith(".sem") else name + suffix
            target = str(Path(output) / name)
        plan.append((src, target))
    seen: dict[str, str] = {}
    for src, target in plan:
        if target == STDIO:
            continue
        key = os.path.normpath(os.path.abspath(target))
        if key in seen:
            raise SemInputError(
                f"{seen[key]} and {src} would both be written to {target}: give them distinct names or run them apart"
            )
        seen[key] = src
    if len(inputs) == 1:
        refuse_same_file(inputs[0], plan[0][1])
    else:  # one stat per file, not one per (input, output) pair
        by_inode = {_inode(src): src for src in inputs if _inode(src) is not None}
        for _, target in plan:
            if target != STDIO and _inode(target) in by_inode:
                refuse_same_file(by_inode[_inode(target)], target)
    return plan


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.stdin.fileno()) if path == STDIO else os.stat(path)
    except (OSError, ValueError, AttributeError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def batch_result(failures: int, total: int, verb: str) -> int:
    """The exit code of a batch, with a summary line on stderr when any file failed."""
    if not failures:
        return EXIT_OK
    note(f"semcodec: {total - failures} of {total} files {verb}; {failures} failed")
    return EXIT_PARTIAL


def say(message: str, quiet: bool = False) -> None:
    """A progress or summary line on stderr (escaped: it can hold file names and decoded text)."""
    if not quiet:
        note(message)


class TokenProgress:
    """``decoding: N tokens`` redrawn on a terminal's stderr, only once decoding takes a while."""

    def __init__(self, delay: float = 1.5) -> None:
        self._start = time.monotonic()
        self._delay = delay
        self._shown = False
        self._live = sys.stderr.isatty()

    def __call__(self, tokens: int, still: int) -> None:
        if not self._live or time.monotonic() - self._start < self._delay:
            return
        files = f", {still} file(s) still decoding" if still > 1 else ""
        print(f"\rsemcodec: decoding: {tokens} tokens{files}   ", end="", file=sys.stderr, flush=True)
        self._shown = True

    def close(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)
            self._shown = False


__all__ = ["FORMATTER", "STDIO", "one_line", "refuse_existing"]
