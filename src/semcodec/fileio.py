"""Careful file I/O: ``-`` is stdin/stdout, reads are bounded, regular files are written
atomically and never clobbered, devices and FIFOs are written into (never replaced).

    >>> import os, tempfile
    >>> home = os.getcwd(); os.chdir(tempfile.mkdtemp())
    >>> write_output("a.sem", b"\\xa7\\x40")
    >>> write_output("a.sem", b"x")
    Traceback (most recent call last):
    ...
    semcodec.fileio.OutputExistsError: a.sem already exists (use -f to overwrite)
    >>> read_input("a.sem", limit=2)
    b'\\xa7@'
    >>> os.chdir(home)

The rules, and why:

* A **regular file** is written to a temp file in the same folder, fsynced, then put in
  place. Without ``force`` it is put in place with a no-replace primitive (a hard link, or
  ``renameat2(RENAME_NOREPLACE)``), so of many writers racing for one name exactly one
  wins and the others get :class:`OutputExistsError`; no output is silently lost. With
  ``force`` it atomically replaces the old file (``os.replace``).
* Anything else that exists — a character device (``/dev/null``), a FIFO, a socket, or
  the very file our standard output already is (``/dev/stdout``, ``/proc/self/fd/1``) —
  is **opened and written into**, as ``cat > x`` would, with or without ``force``:
  replacing ``/dev/null`` with a regular file would break the system.
* Messages name the whole path the user gave, never a temp file's name.
* Temp files are made only by :func:`temp_beside`: ``O_EXCL`` under an unpredictable name,
  so a symlink planted where a temp file will be is never written through.
* An **input is never removed or replaced**: commands compare outputs (and folders that
  will hold outputs) with their inputs by device and inode (:func:`refuse_inputs`).

:func:`write_output` writes bytes held in memory; :func:`output_stream` gives a writer
(a Parquet join) a file to stream into, placed by the same rules.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from semcodec.errors import SemInputError, SemLimitError

STDIO = "-"


class OutputExistsError(Exception):
    """Refusing to overwrite an existing output without ``force``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(f"{os.fspath(path)} already exists (use -f to overwrite)")
        self.path = Path(path)


def read_input(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """Read a whole file, or standard input for ``-``.

    With ``limit``, at most ``limit + 1`` bytes are read, and an input longer than ``limit``
    raises :class:`~semcodec.errors.SemLimitError` (``/dev/zero`` or a huge file cannot
    exhaust memory).
    """
    size = -1 if limit is None else limit + 1
    if os.fspath(path) == STDIO:
        data = sys.stdin.buffer.read(size)
    else:
        with Path(path).open("rb") as handle:
            data = handle.read(size)
    if limit is not None and len(data) > limit:
        name = "standard input" if os.fspath(path) == STDIO else os.fspath(path)
        raise SemLimitError(f"{name} is larger than the {limit}-byte input limit")
    return data


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` (``-`` = stdin for ``a``, stdout for ``b``) are one existing file."""
    try:
        sa = os.fstat(sys.stdin.fileno()) if os.fspath(a) == STDIO else os.stat(a)
        sb = os.fstat(sys.stdout.fileno()) if os.fspath(b) == STDIO else os.stat(b)
    except (OSError, ValueError, AttributeError):  # missing, or stdio replaced by a test harness
        return False
    return stat.S_ISREG(sa.st_mode) and os.path.samestat(sa, sb)


def refuse_same_file(source: str, target: str) -> None:
    """Raise :class:`SemInputError` when writing ``target`` would overwrite the input ``source``."""
    if same_file(source, target):
        shown = "standard input" if source == STDIO else source
        raise SemInputError(f"{target} is the input {shown}: refusing to overwrite it")


def _stat(path: str | os.PathLike[str]) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def refuse_inputs(
    inputs: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str], *, folder: bool = False
) -> None:
    """Raise :class:`SemInputError` when writing ``target`` could remove or replace an input:
    ``target`` is one of ``inputs`` (the same file by device and inode, through any link), or,
    with ``folder`` (``target`` will hold outputs and leftovers may be cleared there), it is an
    input folder or the folder that holds one of ``inputs``."""
    st = _stat(target)
    if st is None:
        return
    for source in inputs:
        if os.fspath(source) == STDIO:
            continue
        own = _stat(source)
        if own is not None and os.path.samestat(st, own):
            raise SemInputError(f"{os.fspath(target)} is the input {os.fspath(source)}: refusing to overwrite it")
        if folder:
            holder = _stat(os.path.dirname(os.path.realpath(source)))
            if holder is not None and os.path.samestat(st, holder):
                raise SemInputError(
                    f"{os.fspath(target)} holds the input {os.fspath(source)}: refusing to write outputs there"
                )


def refuse_terminal_output(path: str | os.PathLike[str], what: str) -> None:
    """Raise :class:`SemInputError` when binary ``what`` data (``.sem``, PNG) would go to
    standard output and that is a terminal: garbage there, and raised before any work."""
    if os.fspath(path) == STDIO and sys.stdout.isatty():
        raise SemInputError(f"refusing to write binary {what} data to a terminal (use -o FILE)")


def refuse_existing(path: str | os.PathLike[str], force: bool) -> None:
    """Raise :class:`OutputExistsError` early, before costly work, when a regular file is in the
    way of an output and ``force`` is off. (:func:`write_output` decides again, atomically.)"""
    if force or os.fspath(path) == STDIO:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and not _is_stdout(st):
        raise OutputExistsError(path)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask is process-wide, not thread-safe to probe


def write_output(path: str | os.PathLike[str], data: bytes, force: bool = False, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` by the rules above (``-`` writes to standard output).

    A regular file gets ``mode`` (the permission bits of the input it was made from, as gzip
    and zstd do: a private input gives a private output), or the mode a plain ``open()``
    would give."""
    if os.fspath(path) == STDIO:
        _write_stdout(data)
        return
    target = os.fspath(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
    if st is not None and _is_stdout(st):
        _write_stdout(data)
    elif st is not None and not stat.S_ISREG(st.st_mode):
        _write_into(target, data)
    elif st is not None and not force:
        raise OutputExistsError(target)
    else:
        try:
            with temp_beside(target) as tmp:  # removed after a link or a failure; gone after a replace
                _fill(tmp, data, mode)
                if force:
                    os.replace(tmp, target)
                else:
                    _place_new(tmp, target)
        except OSError as err:  # every failure names the output, never the temp file, never nothing
            if err.filename is not None and os.fspath(err.filename) == target:
                raise
            raise OSError(err.errno, err.strerror, target) from None


@contextlib.contextmanager
def output_stream(path: str | os.PathLike[str], force: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to stream an output into, put in place at the end of the block by the rules
    above (as :func:`write_output` puts bytes): a regular file is a new private temp file beside
    ``path`` (``O_EXCL``, unpredictable name, never through a symlink), fsynced and then linked or
    (``force``) renamed over ``path``; an error in the block leaves nothing and ``path`` as it
    was. A device or FIFO is opened and written into. ``-`` is not a path here."""
    target = os.fspath(path)
    if target == STDIO:
        raise ValueError("output_stream() takes a path, not '-' (standard output)")
    st = _stat(target)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
    if st is not None and (_is_stdout(st) or not stat.S_ISREG(st.st_mode)):
        try:
            handle = os.fdopen(os.open(target, os.O_WRONLY | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)), "wb")
        except OSError as err:
            raise OSError(err.errno, err.strerror, target) from None
        with handle:
            yield handle
        return
    if st is not None and not force:
        raise OutputExistsError(target)
    in_block = False
    try:
        with temp_beside(target) as tmp:
            fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(fd, (0o666 & ~_UMASK) if mode is None else mode)
                in_block = True
                yield handle
                in_block = False
                handle.flush()
                os.fsync(fd)
            if force:
                os.replace(tmp, target)
            else:
                _place_new(tmp, target)
    except OSError as err:  # name the output, never the temp file; an error naming another file is left as it is
        named = err.filename is not None and (in_block or os.fspath(err.filename) == target)
        if named or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, target) from None


def _is_stdout(st: os.stat_result) -> bool:
    try:
        return os.path.samestat(st, os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


def _write_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise  # the reader left (`| head`): no name, the command line exits quietly
    except OSError as err:  # a full disk behind `> file`: say where
        raise OSError(err.errno, err.strerror, "standard output") from None


def permission_bits(path: str | os.PathLike[str]) -> int | None:
    """The permission bits of a regular file (``None`` for ``-``, devices, FIFOs, a missing file):
    what an output made from it gets."""
    if os.fspath(path) == STDIO:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None


def _write_into(target: str, data: bytes) -> None:
    """Open an existing non-regular file (device, FIFO) for writing and write all of ``data``."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))  # a FIFO waits for a reader
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as err:  # name the target (a FIFO's reader leaving is an error, not our stdout closing)
        raise OSError(err.errno, err.strerror, target) from None


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def temp_beside(target: str | os.PathLike[str], *, folder: bool = False) -> Iterator[str]:
    """A new, empty, private temp file (or folder, with ``folder``) next to ``target``, named
    ``.<target's name>.<random>.tmp``; gone after the block unless the block moved it away
    (``os.replace``, or linked it and let it go).

    Its name is listed before it exists and removed in a ``finally``, so whatever ends the
    block — an error, Ctrl-C, or SIGTERM made an exception by the command line — at any
    instant leaves nothing behind. Every temp file semcodec makes goes through here: outputs
    (:func:`write_output`) and the model cache alike.

        >>> import tempfile
        >>> home = tempfile.mkdtemp()
        >>> with temp_beside(os.path.join(home, "a.sem")) as tmp:
        ...     os.path.basename(tmp).startswith(".a.sem."), os.path.exists(tmp)
        (True, True)
        >>> os.listdir(home)
        []
    """
    parent = os.path.dirname(os.fspath(target)) or "."
    made: list[str] = []
    try:
        for _ in range(100):
            made.append(os.path.join(parent, f".{os.path.basename(os.fspath(target))}.{secrets.token_hex(8)}.tmp"))
            try:
                if folder:
                    os.mkdir(made[-1], 0o700)
                else:
                    os.close(os.open(made[-1], _NEW_FILE, 0o600))
                break
            except FileExistsError:
                made.pop()  # not ours (a 2**-64 chance): never removed
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", parent)
        yield made[-1]
    finally:
        for name in made:
            if folder:
                shutil.rmtree(name, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)


def _fill(tmp: str, data: bytes, mode: int | None) -> None:
    """Write and fsync ``data`` into the temp file ``tmp``, with ``mode`` or a plain ``open()``'s."""
    with open(tmp, "wb") as handle:
        os.fchmod(handle.fileno(), (0o666 & ~_UMASK) if mode is None else mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _place_new(tmp: str, target: str) -> None:
    """Give ``tmp`` the name ``target`` only if nothing has it (atomic; no check-then-rename race)."""
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        raise OutputExistsError(target) from None
    except OSError as err:
        if err.errno not in _NO_LINKS:  # a file system without hard links falls through
            raise  # write_output names the output
    if _rename_noreplace(tmp, target):
        return
    # Last resort (no links, no renameat2): claim the name exclusively, then replace the
    # empty placeholder. Still no clobbering; a reader may briefly see an empty file.
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise OutputExistsError(target) from None
    os.replace(tmp, target)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _rename_noreplace(tmp: str, target: str) -> bool:
    """``renameat2(RENAME_NOREPLACE)`` through libc; False where the kernel or libc lacks it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise OutputExistsError(target)
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), target)
