"""The CLI test matrix: every command × every awkward input and output a user can give.

Each cell runs ``semcodec.cli.main`` in-process and asserts the exit code, the one-line
message (no traceback), that no file is left behind but the expected output, and that the
inputs are untouched (bytes and mtime). Device nodes (the null device's numbers, 1/3) and
FIFOs are made in the test's temporary folder; no real ``/dev`` path is written. Inputs come
from a named file, ``-``, or no name at all (standard input when it is not a terminal, as
gzip does); outputs go to a file, stdout, a device, or a folder (``-o DIR/``, made if missing). Most
cells fail before any model loads; the success cells use a caption (pack, unpack, info)
or the local OpenAI stub with a stand-in coder (encode, decode).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import semcodec
from semcodec import cli
from semcodec.bench.corpus import MAX_CORPUS_BYTES
from semcodec.codec import MAX_FILE_BYTES, MAX_TEXT_BYTES
from semcodec.container import Header

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testkit

CAPTION = "A cat sleeping on a red sofa."
ROOT_USER = os.geteuid() == 0


@dataclass(frozen=True)
class Command:
    name: str
    argv: Callable[[str, str | None], list[str]]
    writes: bool
    limit: int | None  # bytes read at most from an input
    wrong: bytes  # content of the wrong type
    wrong_message: str


def _image_limit() -> int:
    from semcodec.pipeline.imaging import MAX_IMAGE_BYTES

    return MAX_IMAGE_BYTES


COMMANDS = {
    c.name: c
    for c in [
        Command("pack", lambda i, o: ["pack", i, "-q", *(["-o", o] if o else [])], True, MAX_TEXT_BYTES,
                b"\xff\xfe\x00", "not UTF-8"),
        Command("unpack", lambda i, o: ["unpack", i, *(["-o", o] if o else [])], True, MAX_FILE_BYTES,
                b"hello", "not a .sem file"),
        Command("info", lambda i, o: ["info", i], False, MAX_FILE_BYTES, b"hello", "not a .sem file"),
        Command("encode", lambda i, o: ["encode", i, "-q", *(["-o", o] if o else [])], True, -1,
                b"hello", "not a readable image"),
        Command("decode", lambda i, o: ["decode", i, "-q", *(["-o", o] if o else [])], True, MAX_FILE_BYTES,
                b"hello", "not a .sem file"),
        Command("bench-text", lambda i, o: ["bench", "text", i, "-q"], False, MAX_CORPUS_BYTES,
                b"\xff\xfe", "not UTF-8"),
        Command("bench-images", lambda i, o: ["bench", "images", i, "-q"], False, None, b"", ""),
    ]
}  # fmt: skip

CONDITIONS = [
    "missing", "directory", "empty", "null-in", "fifo-in", "unreadable", "too-big", "wrong-type", "big-image",
    "stdin", "stdin-default", "stdin-terminal", "stdout", "null-out", "exists", "exists-force", "output-is-input",
    "out-dir", "out-new-dir",
]  # fmt: skip

DIRECTORY = {"encode": "adir: no images", "bench-images": "no images in adir"}
EMPTY = {
    "unpack": "too short", "info": "too short", "decode": "too short", "encode": "not a readable image",
    "bench-text": "no texts",
}  # fmt: skip
NEEDS_OUTPUT = {"pack", "unpack", "encode", "decode"}
SEM_READERS = {"unpack", "info", "decode"}
STDIN_DEFAULT = {"pack", "unpack", "info"}
"""Commands that read standard input when no file is named (and it is not a terminal)."""
NO_STDIN_DEFAULT = "names its input: its default output is named after it"
FOLDER_OUTPUT = {"pack": "in.x.sem", "unpack": "in.x.txt", "encode": "in.sem", "decode": "in.png"}
"""The name ``-o DIR/`` gives the output of ``in.x`` (pack and unpack add ``.sem`` or ``.txt``;
encode and decode put theirs in place of the input's extension, as without ``-o``)."""
BIG_IMAGE = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
"""A JPEG's first bytes: the cell's file is this, then zeros past the .sem input limit."""


def output_name(command: str) -> str:
    """The output file a cell names: decode writes images by extension (.png), the others any name."""
    return "out.png" if command == "decode" else "out.x"
WITHOUT_FILE_CHECKS = "bench images reads its images only after loading its backends (not run here)"


def expectation(command: str, condition: str) -> tuple[int, str | None] | str:
    """``(exit code, message part)`` of a cell (``None``: success), or why the cell does not apply."""
    cmd = COMMANDS[command]
    if condition == "missing":
        return 1, "missing.x: No such file or directory"  # every command words it as the OS does
    if condition == "directory":
        return 1, DIRECTORY.get(command, "adir: Is a directory")
    if condition == "unreadable":
        if ROOT_USER:
            return "root reads files whatever their permission bits"
        return 1, "Permission denied"
    if command == "bench-images":
        return WITHOUT_FILE_CHECKS
    if condition in ("empty", "null-in"):
        return (0, None) if command == "pack" else (1, EMPTY[command])
    if condition == "fifo-in":
        return (0, None) if command == "pack" else (1, cmd.wrong_message)
    if condition == "too-big":
        return 1, "input limit"
    if condition == "wrong-type":
        return 1, cmd.wrong_message
    if condition == "big-image":  # the first bytes are read before the size is judged
        if command in SEM_READERS:
            return 1, "not a .sem file: it is a JPEG image ('semcodec encode' describes an image"
        if command == "encode":
            return "an image is encode's input (a decodable one is the encode-stdout cell)"
        return 1, "input limit"  # a text reader's limit is the size
    if condition in ("stdin", "stdin-default"):
        if command == "bench-text":
            return "a corpus is a file (it is read twice: texts and a dictionary split)"
        if condition == "stdin-default" and command not in STDIN_DEFAULT:
            return f"{command} {NO_STDIN_DEFAULT}"
        return (0, None) if command in ("pack", "unpack", "info") else (1, cmd.wrong_message)
    if condition == "stdin-terminal":  # no file named, and standard input is a terminal: a usage error
        if command not in STDIN_DEFAULT:
            return f"{command} {NO_STDIN_DEFAULT}"
        return 2, "no FILE given and standard input is a terminal"
    # output conditions
    if command not in NEEDS_OUTPUT:
        return f"{command} writes no output file"
    if condition == "exists":
        return 1, f"{output_name(command)} already exists (use -f to overwrite)"
    if condition == "output-is-input":
        return 1, "is the input in.x: refusing to overwrite it"
    return 0, None  # stdout, null-out, exists-force, out-dir, out-new-dir


def cells() -> Iterator[object]:
    for command in COMMANDS:
        for condition in CONDITIONS:
            expected = expectation(command, condition)
            marks = [pytest.mark.skip(reason=expected)] if isinstance(expected, str) else []
            yield pytest.param(command, condition, expected, id=f"{command}-{condition}", marks=marks)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return testkit.clean_workdir(tmp_path, monkeypatch)


def valid_input(command: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A valid input for ``command``; encode/decode get the OpenAI stub and the stand-in coder."""
    if command == "pack":
        return CAPTION.encode()
    if command in ("unpack", "info"):
        request.getfixturevalue("model")
        return semcodec.pack(CAPTION)
    pytest.importorskip("openai")
    pil = pytest.importorskip("PIL.Image")
    from pipeline_fixtures import openai_server as srv
    from pipeline_fixtures.fakes import fake_pack, fake_unpack
    from semcodec.pipeline import image_codec

    stub = srv.start()
    request.addfinalizer(lambda: srv.stop(stub))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-matrix-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setattr(image_codec, "pack_text", fake_pack)
    monkeypatch.setattr(image_codec, "unpack_file", fake_unpack)
    if command == "encode":
        buf = io.BytesIO()
        pil.new("RGB", (64, 48), "red").save(buf, format="PNG")
        return buf.getvalue()
    return fake_pack(CAPTION, Header(generator_id=1, width=128, height=128))


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


class Stdin(io.TextIOWrapper):
    """Standard input holding ``data``; ``terminal``: it says it is a terminal, as a shell's would."""

    def __init__(self, data: bytes, terminal: bool = False) -> None:
        super().__init__(io.BytesIO(data))
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def make_null(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")


@contextlib.contextmanager
def fifo_fed(path: Path, data: bytes) -> Iterator[None]:
    """A FIFO at ``path`` that a thread feeds with ``data`` once a reader opens it."""
    os.mkfifo(path)

    def feed() -> None:
        with path.open("wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield
    finally:
        if writer.is_alive():  # the command never opened it: release the writer
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            writer.join(timeout=10)
            os.close(fd)


# -- the matrix -----------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "condition", "expected"), list(cells()))
def test_cell(
    command: str,
    condition: str,
    expected: tuple[int, str | None],
    workdir: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    cmd = COMMANDS[command]
    code, message = expected
    succeeds = code == 0
    source, target = "in.x", (output_name(command) if command in NEEDS_OUTPUT else None)
    good = valid_input(command, request, monkeypatch) if succeeds else b""
    feed_fifo: contextlib.AbstractContextManager[None] = contextlib.nullcontext()

    if condition == "missing":
        source = "missing.x"
    elif condition == "directory":
        source = "adir"
        (workdir / "adir").mkdir()
    elif condition == "empty":
        (workdir / source).write_bytes(b"")
    elif condition == "null-in":
        make_null(workdir / source)
    elif condition == "fifo-in":
        feed_fifo = fifo_fed(workdir / source, good if succeeds else cmd.wrong)
    elif condition == "unreadable":
        (workdir / source).write_bytes(cmd.wrong)
        (workdir / source).chmod(0)
    elif condition in ("too-big", "big-image"):
        limit = cmd.limit if cmd.limit != -1 else _image_limit()
        assert limit is not None
        with (workdir / source).open("wb") as handle:
            if condition == "big-image":
                handle.write(BIG_IMAGE)
            elif command in SEM_READERS:
                handle.write(b"\xa7")  # a .sem file's first byte: too big is all that is wrong
            handle.truncate(limit + 1)  # sparse: costs no disk
    elif condition == "wrong-type":
        (workdir / source).write_bytes(cmd.wrong)
    elif condition in ("stdin", "stdin-default", "stdin-terminal"):
        source = "-"
        stdin = good if succeeds else cmd.wrong
        monkeypatch.setattr(sys, "stdin", Stdin(stdin, terminal=condition == "stdin-terminal"))
        if command in ("encode", "decode"):
            target = output_name(command)
        if condition == "stdin-default":
            target = None  # nothing named at all: the output goes where `-`'s goes (stdout)
    else:  # output conditions: a valid input
        (workdir / source).write_bytes(good or valid_input(command, request, monkeypatch))
        if condition == "stdout":
            target = "-"
        elif condition == "null-out":
            target = "devnull"
            make_null(workdir / target)
        elif condition in ("exists", "exists-force"):
            (workdir / output_name(command)).write_bytes(b"precious")
        elif condition == "output-is-input":
            target = source
        elif condition == "out-dir":
            (workdir / "odir").mkdir()
            target = "odir"
        elif condition == "out-new-dir":
            target = "new/odir/"

    argv = cmd.argv(source, target)
    if condition in ("stdin-default", "stdin-terminal"):
        argv.remove(source)  # no file named at all
    if condition in ("exists-force", "output-is-input"):
        argv.append("-f")
    if command == "pack" and condition not in ("stdout", "stdin-default") and target is None:
        argv += ["-o", "out.x"]
    before = snapshot(workdir)
    with feed_fifo:
        try:
            result = cli.main(argv)
        except SystemExit as usage:  # argparse: usage errors exit 2 with the usage and one error line
            result = usage.code
    out, err = capsysbinary.readouterr()
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text
    assert result == code, (argv, text)
    after = snapshot(workdir)

    if not succeeds:
        lines = text.splitlines()
        if code == 2:
            assert lines[0].startswith("usage: semcodec ") and lines[-1].startswith(f"semcodec {command}: error: ")
        else:
            assert len(lines) == 1 and lines[0].startswith("semcodec: error: "), text
        assert message is not None and message in lines[-1], (message, lines[-1])
        assert after == before  # nothing left behind, inputs and any old output untouched
        assert out == b""
        return

    # success: exactly the expected output appeared, inputs untouched
    expected_files = dict(before)
    written = target if target not in (None, "-", "devnull") else None
    if condition in ("out-dir", "out-new-dir"):
        assert target is not None
        written = os.path.join(target.rstrip("/"), FOLDER_OUTPUT[command])
    if written is not None:
        assert (workdir / written).is_file()
        expected_files[written] = after[written]
        assert after[written][0] != b"precious"
    assert after == expected_files
    if target == "-" or (condition == "stdin-default" and command in ("pack", "unpack")):
        assert out  # the output went to stdout (pack of standard input writes there, as gzip does)
        if command == "unpack":
            assert out == CAPTION.encode()
    if target == "devnull":
        assert stat.S_ISCHR((workdir / "devnull").lstat().st_mode)  # written into, not replaced


BAD_VALUES = [
    ["pack", "c.txt", "--model", "99"],
    ["pack", "c.txt", "--width", "0"],
    ["pack", "c.txt", "--generator", "nosuch:painter"],
    ["unpack", "c.sem", "--max-tokens", "2049"],
    ["info", "c.sem", "--max-tokens", "-1"],
    ["model", "verify", "99"],
    ["model", "fetch", "no-such-model"],
    ["encode", "c.png", "--model", "99"],
    ["encode", "c.png", "--score", "metric"],
    ["decode", "c.sem", "--max-tokens", "x"],
    ["bench", "images", "d", "--model", "99"],
    ["bench", "images", "d", "--score", "metric"],
    ["bench", "text", "c.txt", "--models", "99"],
]


@pytest.mark.parametrize("argv", BAD_VALUES, ids=[" ".join(a) for a in BAD_VALUES])
def test_a_bad_option_value_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """One rule, gzip's: a bad option value is a usage error (exit 2, the command's usage and one
    error line naming the argument), whether argparse or the registry knows it is bad, before
    any file is read or model loaded."""
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: semcodec ")
    assert lines[-1].startswith("semcodec ") and ": error: argument " in lines[-1], lines


def test_score_takes_one_vocabulary() -> None:
    """`encode --score` and `bench images --score` take the same words."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = next(a for a in sub.choices["bench"]._actions if isinstance(a, argparse._SubParsersAction))

    def choices(p: argparse.ArgumentParser) -> object:
        return next(a.choices for a in p._actions if "--score" in a.option_strings)

    assert choices(sub.choices["encode"]) == choices(bench.choices["images"]) == ("auto", "critic", "clip", "pixel")
