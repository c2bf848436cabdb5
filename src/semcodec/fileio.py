"""Safe file I/O for the CLI: ``-`` for stdin/stdout, atomic writes, no clobbering.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a.sem", b"\\xa7\\x40")
    >>> atomic_write(d / "a.sem", b"x")
    Traceback (most recent call last):
    ...
    semcodec.fileio.OutputExistsError: a.sem already exists (use -f to overwrite)
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from semcodec.errors import SemLimitError

STDIO = "-"


class OutputExistsError(Exception):
    """Refusing to overwrite an existing output without ``force``."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path.name} already exists (use -f to overwrite)")
        self.path = path


def read_input(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """Read a whole file, or standard input for ``-``.

    With ``limit``, at most ``limit + 1`` bytes are read, and an input longer than ``limit``
    raises :class:`~semcodec.errors.SemLimitError` (``/dev/zero`` or a huge file cannot
    exhaust memory).
    """
    size = -1 if limit is None else limit + 1
    if str(path) == STDIO:
        data = sys.stdin.buffer.read(size)
    else:
        with Path(path).open("rb") as handle:
            data = handle.read(size)
    if limit is not None and len(data) > limit:
        name = "standard input" if str(path) == STDIO else str(path)
        raise SemLimitError(f"{name} is larger than the {limit}-byte input limit")
    return data


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask is process-wide, not thread-safe to probe


def atomic_write(path: str | os.PathLike[str], data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` all-or-nothing (temp file in the same folder, fsync, rename).

    ``-`` writes to standard output. An existing file is kept unless ``force``.
    """
    if str(path) == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not force and target.exists():  # appeared while we wrote: still refuse
            raise OutputExistsError(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
