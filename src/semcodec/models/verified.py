"""Which cached files already matched their pinned digests: one sha256 per file, not per start.

Hashing the 134 MB of converted weights and a profile's 42 MB evaluated context cost every
cold ``semcodec unpack`` about 0.15 s. So when a file's digest has matched its pin, that
fact is recorded in ``verified.json`` beside it, keyed by the pin and by the file's size,
inode, device, mtime and ctime (nanoseconds); a later load that finds the same pin and the
same five numbers skips the hash. The record is replaced atomically, is best effort (a
read-only cache just hashes every time), and only ever *saves* a check: anything it does
not recognise means "hash the file".

What the pins catch, and whether the record keeps catching it (SPEC §5):

* a wrong conversion (another numpy, decimal or tokenizers; a semcodec change without new
  pins): the build itself is checked in full, and a record names the pin it matched, so new
  pins mean new hashes;
* a changed cache file (an edit, a flipped byte, a truncation, a file copied or rebuilt
  over it): every write through the filesystem sets the ctime to the current time, which
  no program can set back (``utime`` restores the mtime only), and a replaced file has
  another inode, so the record no longer matches and the file is hashed again. A record is
  written only for files whose mtime and ctime are at least :data:`RACY_S` older than the
  moment the hash started, so a write in the same coarse clock tick as the last one cannot
  go unseen (git's "racily clean" rule; the mtime too, for file systems whose ctime is the
  creation time), and only if the file's numbers did not change while it was being hashed.

Not caught without a full check: damage below the filesystem that leaves its metadata
alone (bad sectors, bit rot in the page cache or on disk), a write through a shared
memory map whose ctime update is still pending, or someone setting the clock back and
writing the file in the same size.

The record guards against accidents, not attackers: it is not authenticated, so whoever
can write the cache entry can also rewrite ``verified.json`` with a changed file's new
numbers, and loads would then use that file unhashed. Such a writer is the user running
semcodec (who could as well change semcodec's own code), and the record is trusted only
where no one else could have written it: ``verified.json`` a regular file, it and the
entry's folder owned by this process's user and writable by neither group nor others;
anywhere else every load hashes. ``semcodec model verify`` and
``semcodec model fetch`` never consult the record: they hash every file.

    >>> import os, tempfile, time
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.bin").write_bytes(b"abc")
    >>> calls = []
    >>> def digest():
    ...     calls.append(1)
    ...     return "pin"
    >>> later = time.time() + 2 * RACY_S  # as if the file were older
    >>> matches_pin(folder, "a.bin", "pin", digest, now=later), len(calls)
    (True, 1)
    >>> matches_pin(folder, "a.bin", "pin", digest, now=later), len(calls)  # recorded
    (True, 1)
    >>> _ = (folder / "a.bin").write_bytes(b"abcd")  # a write: new ctime (and size), hashed again
    >>> matches_pin(folder, "a.bin", "pin", lambda: "other", now=later + 5)
    False
"""

from __future__ import annotations

import contextlib
import json
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from semcodec.fileio import temp_beside

RECORD_FILE = "verified.json"
"""The record's name in a cache entry (not a pinned file: it holds no model data)."""

RACY_S = 2.0
"""Seconds a file's ctime must lie before the hash started for the result to be recorded
(coarse file-system clocks tick every few milliseconds; 2 s is a wide margin)."""

_VERSION = 1

FileStat = list[int]


def file_stat(path: Path, fd: int | None = None) -> FileStat:
    """Size, inode, device, mtime and ctime (ns) of ``path`` (or of the open ``fd``)."""
    st = os.fstat(fd) if fd is not None else os.stat(path)
    return [st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns]


_MAX_RECORD_BYTES = 1 << 20
"""A record is a few hundred bytes; a larger file is not one."""


def _private(st: os.stat_result) -> bool:
    """Owned by this process's user and writable by no one else (no POSIX owners: True)."""
    if not hasattr(os, "geteuid"):
        return True
    return st.st_uid == os.geteuid() and not st.st_mode & (stat_module.S_IWGRP | stat_module.S_IWOTH)


_ignoring = False  # see ignored()


def _read(directory: Path) -> dict[str, object]:
    """The record's entries, or nothing: when it is missing or malformed, when someone other
    than this user could have written it (``verified.json`` a regular file, it and the folder
    owned by this user and writable by neither group nor others), and inside :func:`ignored`."""
    if _ignoring:
        return {}
    try:
        fd = os.open(directory / RECORD_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat_module.S_ISREG(st.st_mode) or not _private(st) or not _private(os.stat(directory)):
                return {}
            data = json.loads(handle.read(_MAX_RECORD_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("entries"), dict):
        return {}
    entries: dict[str, object] = data["entries"]
    return entries


def is_recorded(directory: Path, name: str, pinned: str, stat: FileStat) -> bool:
    """Whether the record says file ``name`` (now with ``stat``) matched ``pinned`` and is unchanged."""
    return _read(directory).get(name) == {"pin": pinned, "files": {name: stat}}


def record(directory: Path, name: str, pinned: str, stat: FileStat, started: float) -> None:
    """Record that file ``name`` matched ``pinned`` (hash begun at ``started``), unless it is racily new."""
    if max(stat[3], stat[4]) >= (started - RACY_S) * 1e9:
        return  # written too recently for its times to tell a later write apart
    try:
        if not _private(os.stat(directory)):
            return  # a record others could rewrite would never be believed
    except OSError:
        return
    entries = _read(directory)
    entries[name] = {"pin": pinned, "files": {name: stat}}
    try:
        with temp_beside(directory / RECORD_FILE) as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"version": _VERSION, "entries": entries}, handle, sort_keys=True)
            os.replace(tmp, directory / RECORD_FILE)
    except OSError:
        return  # a read-only cache: the next load hashes again


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """While the block runs, the record vouches for nothing: every file is hashed (and a file
    that matches is recorded anew). ``semcodec model fetch`` runs inside it."""
    global _ignoring
    before, _ignoring = _ignoring, True
    try:
        yield
    finally:
        _ignoring = before


def matches_pin(
    directory: Path,
    name: str,
    pinned: str,
    digest: Callable[[], str | None],
    stat: FileStat | None = None,
    now: float | None = None,
) -> bool:
    """Whether file ``name`` in ``directory`` (its digest is ``digest()``) matches ``pinned``:
    by the record when it vouches for the file, else by hashing (and recording).

    ``stat`` is the file's :func:`file_stat` taken by the caller from the descriptor it
    reads (so the record speaks of exactly the bytes in use); ``now`` is for tests.
    """
    started = time.time() if now is None else now
    try:
        before = stat if stat is not None else file_stat(directory / name)
    except OSError:
        return False
    if is_recorded(directory, name, pinned, before):
        return True
    if digest() != pinned:
        return False
    try:
        after = file_stat(directory / name)
    except OSError:
        return True  # matched; just not recordable
    if after == before:
        record(directory, name, pinned, before, started)
    return True
