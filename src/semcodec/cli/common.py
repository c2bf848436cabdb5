"""What every command shares: argument types, reading inputs, planning outputs, stderr lines.

    >>> int_at_least(1)("3")
    3
    >>> output_plan(["a.txt"], None, lambda s: s + ".sem", ".sem")
    [('a.txt', 'a.txt.sem')]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from semcodec.cli.failures import note, one_line
from semcodec.errors import SemError, SemFormatError, SemInputError, SemLimitError
from semcodec.exitcodes import EXIT_CODES_HELP, EXIT_OK, EXIT_PARTIAL
from semcodec.fileio import STDIO, read_input, refuse_existing, refuse_same_file

STDIO_HELP = "'-' as an input reads standard input; '-o -' writes standard output."
STDIN_DEFAULT_HELP = (
    "With no FILE, standard input is read when it is a pipe or a file, as gzip and zstd do\n"
    "(a terminal is refused); '-' reads it too. '-o -' writes standard output."
)
TOP_STDIO_HELP = (
    "'-' as an input reads standard input; '-o -' writes standard output. pack, unpack and info\n"
    "read standard input when no FILE is named and it is not a terminal. -o DIR/ (made if missing)\n"
    "or an existing folder puts each output in DIR."
)
INPUT_ONLY_HELP = (
    "With no FILE, standard input is read when it is a pipe or a file (a terminal is refused);\n'-' reads it too."
)
FORMATTER = argparse.RawDescriptionHelpFormatter


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: it reports its own leftover arguments under its own usage
    (argparse leaves them to the top-level parser, whose usage line says nothing of the command).

    ``stdin_default="inputs"`` (the destination of an optional positional): when no file is
    named, standard input is the input, as with gzip and zstd, unless it is a terminal (a usage
    error, exit 2: nobody types a ``.sem`` file, and a forgotten file name should not look like a hang).
    """

    def __init__(self, *args: Any, stdin_default: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stdin_default = stdin_default

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        if self.stdin_default and getattr(parsed, self.stdin_default, None) in (None, []):
            if _stdin_is_terminal():
                self.error("no FILE given and standard input is a terminal (name a file, pipe one in, or give -)")
            many = isinstance(getattr(parsed, self.stdin_default), list)
            setattr(parsed, self.stdin_default, [STDIO] if many else STDIO)
        return parsed, extras


def _stdin_is_terminal() -> bool:
    return sys.stdin is None or _is_terminal(sys.stdin)


def epilog(examples: str = "", notes: str = "", stdio: str = STDIO_HELP) -> str:
    """A subcommand's help footer: its examples, notes, its ``-`` convention (``stdio``; empty for a
    command that reads no input file), the exit codes."""
    head = f"examples:\n{examples.rstrip()}\n\n" if examples else ""
    more = f"{notes.rstrip()}\n\n" if notes else ""
    io = f"{stdio}\n\n" if stdio else ""
    return f"{head}{more}{io}{EXIT_CODES_HELP}"


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


def model_name(text: str) -> str:
    """argparse type: a probability model id or name (``--model``), checked while parsing, so an
    unknown one is a usage error (exit 2) like any other bad option value; the text is kept."""
    from semcodec.registry import model_id_by_name

    try:
        model_id_by_name(text)
    except SemError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def model_name_or_auto(text: str) -> str:
    """argparse type: :func:`model_name`, or ``auto`` (try every model)."""
    return text if text == "auto" else model_name(text)


def generator_name(text: str) -> str:
    """argparse type: a generator name of the registry (``pack --generator``), checked while parsing."""
    from semcodec.registry import generator_id_by_name

    try:
        generator_id_by_name(text)
    except SemError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


SCORES = ("auto", "critic", "clip", "pixel")
"""``--score`` of ``encode`` and ``bench images``: what scores a repainted candidate."""


def model_list(text: str) -> list[int]:
    """argparse type: comma-separated model ids or names."""
    from semcodec.registry import model_id_by_name

    try:
        return [model_id_by_name(part.strip()) for part in text.split(",") if part.strip()]
    except SemError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# -- inputs -----------------------------------------------------------------------------


IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"RIFF", "a WebP image"),  # with b"WEBP" at offset 8 (checked below)
)
"""Leading bytes of the image formats a user may hand to a ``.sem`` reader by mistake."""


def read_sem(path: str) -> bytes:
    """A ``.sem`` input, read with the bound every ``.sem`` reader uses; never a terminal
    (binary data is not typed in: waiting for it would look like a hang).

    The first byte is checked before the size: a photo given to ``unpack`` is "not a .sem file"
    (and, for an image, which command it wants), not "larger than the input limit"."""
    from semcodec.codec import MAX_FILE_BYTES

    if path == STDIO and sys.stdin.isatty():
        raise SemInputError("refusing to read binary .sem data from a terminal (give a file, or pipe one in)")
    if path == STDIO:
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    refuse_wrong_kind(data[:16])
    if len(data) > MAX_FILE_BYTES:  # as fileio.read_input words it
        name = "standard input" if path == STDIO else path
        raise SemLimitError(f"{name} is larger than the {MAX_FILE_BYTES}-byte input limit")
    return data


def refuse_wrong_kind(head: bytes) -> None:
    """Raise :class:`SemFormatError` when ``head`` (a file's first bytes) cannot start a ``.sem`` file;
    an image is named, with the commands that take one.

        >>> refuse_wrong_kind(b"PK\x03\x04")
        Traceback (most recent call last):
        ...
        semcodec.errors.SemFormatError: not a .sem file (first byte 0x50, expected 0xa7 or 0xa8)
    """
    from semcodec.container import MAGICS, not_a_sem_file

    if not head or head[0] in MAGICS:
        return  # (an empty input is "too short", said by the header's reader)
    for magic, kind in IMAGE_MAGIC:
        if head.startswith(magic) and (magic != b"RIFF" or head[8:12] == b"WEBP"):
            raise SemFormatError(
                f"not a .sem file: it is {kind} ('semcodec encode' describes an image into a .sem file; "
                "'semcodec decode' paints a .sem file as an image)"
            )
    raise SemFormatError(not_a_sem_file(head[0]))


def peek_sem(path: str) -> None:
    """:func:`refuse_wrong_kind` on a regular file's first bytes, for a command that reads the file
    later itself (``decode``); pipes and standard input are left unread."""
    try:
        if path == STDIO or not stat.S_ISREG(os.stat(path).st_mode):
            return
        with Path(path).open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return  # the command's own read names the problem
    refuse_wrong_kind(head)


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


def names_folder(output: str) -> bool:
    """``-o`` names a folder: it ends with ``/`` (made if missing) or is an existing folder.

    >>> names_folder("out/"), names_folder("out.sem"), names_folder(".")
    (True, False, True)
    """
    return output != STDIO and (output.endswith(("/", os.sep)) or Path(output).is_dir())


def output_plan(
    inputs: Sequence[str], output: str | None, default: Callable[[str], str], suffix: str, *, concatenate: bool = False
) -> list[tuple[str, str]]:
    """``(input, output)`` for each input, checked before any work is done.

    ``-o DIR`` (a name ending with ``/``, or an existing folder) puts each output in DIR, for
    any number of inputs, named ``<input name><suffix>`` (``.sem`` stripped first when
    unpacking; ``stdin`` for standard input); a missing DIR named with a trailing ``/`` is made
    (with its parents). Otherwise, one input: ``-o`` names the file (``-`` for stdout), or
    ``default(input)``; several: ``-o -`` only when outputs may be concatenated on stdout
    (texts; not ``.sem`` files, which carry no length). Refused: several inputs with ``-o FILE``,
    two inputs that would write the same output, an output that is one of the inputs.
    """
    many = len(inputs) > 1
    folder = output is not None and names_folder(output)
    if many and output is not None and not folder and not (output == STDIO and concatenate):
        raise SemInputError(
            f"with several inputs, -o must name a folder ({output} is not one; end it with / to have it made)"
        )
    plan: list[tuple[str, str]] = []
    for src in inputs:
        if not folder:
            target = output or default(src)
        else:
            assert output is not None
            name = Path(src).name if src != STDIO else "stdin"
            name = name[: -len(".sem")] if suffix != ".sem" and name.endswith(".sem") else name + suffix
            target = os.path.join(output, name)
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
    if folder and output is not None and not Path(output).is_dir():
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as err:  # a file in the way, no permission: name the folder
            raise OSError(err.errno, err.strerror, output) from None
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
    """A live progress line on a terminal's stderr: tokens done (``/ total`` where it is known),
    tokens per second and, with a total, the time left (``finishing`` once every token is done);
    for example ``semcodec: packing: 1024/2048 tokens, 93 tokens/s, ETA 11 s``.

    Nothing is drawn unless stderr is a terminal (logs and pipes get no ``\\r`` lines) and the
    command is not quiet, nor before the work has taken :attr:`DELAY_S` (a short text shows
    nothing); the line is redrawn at most every :attr:`INTERVAL_S`. :meth:`clear` erases it
    (before anything else is written to the terminal: a summary, an error, the text on
    standard output); the next update draws it again.

        >>> import io
        >>> line = TokenProgress("packing", stream=io.StringIO())  # not a terminal: nothing, ever
        >>> line.update(10, 20); line.close(); line.stream.getvalue()
        ''
    """

    DELAY_S = 1.5
    """Seconds of work before the line first appears."""
    INTERVAL_S = 0.25
    """Least seconds between two redraws."""

    def __init__(self, verb: str = "decoding", *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.verb = verb
        self._live = not quiet and _is_terminal(self.stream)
        self._start = time.monotonic()
        self._first: tuple[float, int] | None = None  # (time, tokens) of the first update: the rate's origin
        self._drawn_at = -math.inf
        self._width = 0  # characters of the line on screen (0: none)

    def update(self, done: int, total: int | None = None, extra: str = "") -> None:
        """``done`` tokens of ``total`` (None: not known); ``extra`` is appended to the line."""
        if not self._live:
            return
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        if now - self._start < self.DELAY_S or now - self._drawn_at < self.INTERVAL_S:
            return
        self._drawn_at = now
        parts = [f"{done}/{total} tokens" if total is not None else f"{done} token{'' if done == 1 else 's'}"]
        seconds, tokens = now - self._first[0], done - self._first[1]
        if seconds > 0 and tokens > 0:
            rate = tokens / seconds
            parts.append(f"{rate:.0f} tokens/s" if rate >= 10 else f"{rate:.1f} tokens/s")
            if total is not None:
                parts.append(f"ETA {_duration((total - done) / rate)}" if done < total else "finishing")
        if extra:
            parts.append(extra)
        self._draw(f"semcodec: {self.verb}: {', '.join(parts)}")

    def on_step(self, tokens: int, still: int) -> None:
        """:func:`semcodec.codec.unpack_many`'s ``on_step``: tokens decoded, files still decoding."""
        self.update(tokens, extra=f"{still} files still decoding" if still > 1 else "")

    def _draw(self, text: str) -> None:
        columns = _columns(self.stream)
        text = one_line(text)[: columns - 1]  # one row, or the next \r would not go back to its start
        pad = " " * max(0, self._width - len(text))
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Erase the line if it is on screen (the cursor back at the start of the row)."""
        if self._width:
            self.stream.write(f"\r{' ' * self._width}\r")
            self.stream.flush()
            self._width = 0

    close = clear


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (ValueError, AttributeError, OSError):  # closed, or replaced by something without isatty
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 80


def _duration(seconds: float) -> str:
    """``ETA`` text: ``42 s``, ``3:07``, ``1:02:03``.

    >>> _duration(41.6), _duration(187), _duration(3723)
    ('42 s', '3:07', '1:02:03')
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


__all__ = ["FORMATTER", "STDIO", "one_line", "refuse_existing"]
