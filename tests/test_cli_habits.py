"""The habits of gzip and zstd (issue #21, items 1-4) and the default token budget (issue #20, item 4).

* No FILE named: standard input is the input when it is a pipe or a file, and a terminal is a
  usage error (checked with real pipes and a real pseudo-terminal, in a child process).
* ``-o DIR``: a trailing ``/`` or an existing folder means a folder, for any number of inputs;
  a missing one named with ``/`` is made.
* A ``.sem`` reader judges the first byte before the size, and names an image.
* Messages: the token budget counts right and says how to raise it; help says only what the
  command has; bad option values are usage errors (exit 2, in test_cli_matrix).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import semcodec
from semcodec import cli, codec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testkit import clean_workdir, one_error_line, run_main

CAPTION = "A cat sleeping on a red sofa."


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return clean_workdir(tmp_path, monkeypatch)


def semcodec_process(*args: str, stdin: int | None = None, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``python -m semcodec ARGS`` in a child, with ``stdin`` (a file descriptor) as its standard input."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "semcodec", *args], stdin=stdin, capture_output=True, cwd=cwd,
                          env=env, timeout=300, check=False)


# -- 1: standard input is the default -------------------------------------------------------


def test_no_file_reads_a_pipe_or_a_redirected_file(workdir: Path, model) -> None:  # type: ignore[no-untyped-def]
    """`semcodec pack < t.txt > t.sem`, `cat t.sem | semcodec unpack`, `semcodec info < t.sem`."""
    (workdir / "t.txt").write_text(CAPTION + "\n")
    with (workdir / "t.txt").open("rb") as text:
        packed = semcodec_process("pack", "-q", stdin=text.fileno(), cwd=workdir)
    assert (packed.returncode, packed.stderr) == (0, b"")
    assert semcodec.unpack(packed.stdout).text == CAPTION + "\n"  # pack of stdin writes stdout, as gzip does
    (workdir / "t.sem").write_bytes(packed.stdout)
    read, write = os.pipe()
    os.write(write, packed.stdout)
    os.close(write)
    try:
        unpacked = semcodec_process("unpack", stdin=read, cwd=workdir)
    finally:
        os.close(read)
    assert (unpacked.returncode, unpacked.stdout, unpacked.stderr) == (0, (CAPTION + "\n").encode(), b"")
    with (workdir / "t.sem").open("rb") as sem:
        info = semcodec_process("info", "--json", "--header-only", stdin=sem.fileno(), cwd=workdir)
    assert info.returncode == 0 and b'"file_bytes": ' in info.stdout
    assert sorted(p.name for p in workdir.iterdir()) == ["t.sem", "t.txt"]


@pytest.mark.parametrize("command", ["pack", "unpack", "info"])
def test_no_file_and_a_terminal_is_a_usage_error(command: str, workdir: Path) -> None:
    """Nothing named and standard input a terminal (a real pseudo-terminal): exit 2 at once, no waiting."""
    main_fd, terminal = os.openpty()
    try:
        done = semcodec_process(command, stdin=terminal, cwd=workdir)
    finally:
        os.close(terminal)
        os.close(main_fd)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert lines[0].startswith(f"usage: semcodec {command}")
    assert lines[-1] == (
        f"semcodec {command}: error: no FILE given and standard input is a terminal "
        "(name a file, pipe one in, or give -)"
    )
    assert done.stdout == b"" and list(workdir.iterdir()) == []


# -- 2: -o DIR ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "made"),
    [
        (["pack", "c1.txt", "-o", "one/"], ["one/c1.txt.sem"]),  # a glob that matched one file
        (["pack", "c1.txt", "c2.txt", "-o", "new/deeper/"], ["new/deeper/c1.txt.sem", "new/deeper/c2.txt.sem"]),
        (["pack", "c1.txt", "-o", "there"], ["there/c1.txt.sem"]),  # an existing folder, no slash
        (["pack", "-", "-o", "one/"], ["one/stdin.sem"]),
        (["unpack", "c1.sem", "-o", "texts/"], ["texts/c1"]),
        (["unpack", "c1.sem", "c2.sem", "-o", "texts/"], ["texts/c1", "texts/c2"]),
        (["pack", "c1.txt", "-o", "plain"], ["plain"]),  # no slash, no folder: the output file
    ],
    ids=lambda v: " ".join(v) if v and v[0] in ("pack", "unpack") else "",
)
def test_o_dir_means_a_folder_for_any_number_of_inputs(
    argv: list[str], made: list[str], workdir: Path, model, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("c1", "c2"):
        (workdir / f"{name}.txt").write_text(f"{CAPTION} ({name})")
        (workdir / f"{name}.sem").write_bytes(semcodec.pack(f"{CAPTION} ({name})"))
    (workdir / "there").mkdir()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CAPTION.encode())))
    before = {p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file()}
    code, out, err = run_main([*argv, *(["-q"] if argv[0] == "pack" else [])], capsys)
    assert (code, out, err) == (0, "", "")
    after = {p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file()}
    assert after - before == set(made)
    for path in made:
        data = (workdir / path).read_bytes()
        text = semcodec.unpack(data).text if argv[0] == "pack" else data.decode()
        assert text.startswith(CAPTION)


def test_o_dir_refusals(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "a.txt").write_text(CAPTION)
    (workdir / "b.txt").write_text(CAPTION)
    (workdir / "afile").write_text("precious")
    code, _, err = run_main(["pack", "a.txt", "-o", "afile/"], capsys)  # a file where the folder should be
    assert code == 1 and one_error_line(err).startswith("semcodec: error: afile/: ")
    code, _, err = run_main(["pack", "a.txt", "b.txt", "-o", "newname"], capsys)  # several inputs, no folder
    assert code == 1
    assert "with several inputs, -o must name a folder (newname is not one; end it with / to have it made)" in (
        one_error_line(err))
    assert sorted(p.name for p in workdir.iterdir()) == ["a.txt", "afile", "b.txt"]
    assert (workdir / "afile").read_text() == "precious"


# -- 3: the wrong kind of input ---------------------------------------------------------------

IMAGES = {
    "JPEG": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",
    "PNG": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "GIF": b"GIF89a\x01\x00\x01\x00",
    "WebP": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
}


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("kind", list(IMAGES))
@pytest.mark.parametrize("command", ["unpack", "info", "decode"])
def test_an_image_given_to_a_sem_reader_is_named(
    command: str, kind: str, size: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`unpack cat.jpg` says the file is an image and which commands take images, whatever its size
    (the first byte is judged before the size limit); no model is loaded for it."""
    data = IMAGES[kind] + bytes(20 if size == "small" else 50_000)
    (workdir / "cat.img").write_bytes(data)
    argv = [command, "cat.img", *(["-o", "cat.png"] if command == "decode" else [])]
    code, out, err = run_main(argv, capsys)
    assert (code, out) == (1, "")
    line = one_error_line(err)
    assert f"not a .sem file: it is a {kind} image ('semcodec encode' describes an image into a .sem file; " \
        "'semcodec decode' paints a .sem file as an image)" in line
    assert "input limit" not in line
    assert sorted(p.name for p in workdir.iterdir()) == ["cat.img"]


def test_large_non_sem_file_is_not_a_sem_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "big.bin").write_bytes(b"PK\x03\x04" + bytes(codec.MAX_FILE_BYTES))
    code, _, err = run_main(["unpack", "big.bin"], capsys)
    assert code == 1
    assert one_error_line(err) == "semcodec: error: big.bin: not a .sem file (first byte 0x50, expected 0xa7 or 0xa8)"


# -- 4: messages and help --------------------------------------------------------------------


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [["info"], ["model"], ["model", "list"], ["model", "fetch"], ["model", "verify"],
                                  ["bench"]])
def test_help_mentions_no_option_the_command_lacks(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(argv, capsys)
    assert "-o -" not in text and "'-o" not in text


def test_each_model_action_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    helps = {action: help_of(["model", action], capsys) for action in ("fetch", "verify", "list")}
    top = help_of(["model"], capsys)
    assert len({top, *helps.values()}) == 4
    for action, text in helps.items():
        assert text.startswith(f"usage: semcodec model {action}")
    assert "[MODEL]" not in helps["list"].splitlines()[0]


@pytest.mark.parametrize("command", ["unpack", "info", "decode"])
def test_every_sem_reader_documents_the_default_budget(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_of([command], capsys).split())
    assert f"--max-tokens N token budget: refuse a file whose text has more than N tokens (default " \
        f"{codec.DEFAULT_MAX_TOKENS}, for untrusted input; at most {codec.MAX_TOKENS}" in text


# -- #20 item 4: a token budget by default, on every reader ----------------------------------


def test_the_default_budget_is_the_codec_constant(
    workdir: Path, model, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    """`unpack` and `info` refuse a text over the default budget and say how to raise it."""
    data = semcodec.pack(CAPTION)
    (workdir / "c.sem").write_bytes(data)
    n = semcodec.unpack(data).n_tokens
    monkeypatch.setattr(codec, "DEFAULT_MAX_TOKENS", n - 1)  # read when the parser is built
    for argv in (["unpack", "c.sem"], ["info", "c.sem"]):
        code, out, err = run_main(argv, capsys)
        assert (code, out) == (1, "")
        assert one_error_line(err) == (
            f"semcodec: error: c.sem: payload decodes to no end-of-text within {n - 1} tokens (the token budget; "
            f"--max-tokens N, or max_tokens=N in Python, raises it up to {codec.MAX_TOKENS})"
        )
        code, out, _ = run_main([*argv, "--max-tokens", str(n)], capsys)
        assert code == 0 and CAPTION in out
    assert run_main(["info", "c.sem", "--header-only"], capsys)[0] == 0  # no decoding, no budget needed


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_pack_says_when_a_text_needs_a_larger_budget(
    workdir: Path, model, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quiet: list[str]  # type: ignore[no-untyped-def]
) -> None:
    """A text over the readers' default budget is packed, with one note naming the option and
    value that unpack it (under -q too: it is about the file just written); a text within it
    gets none."""
    (workdir / "c.txt").write_text(CAPTION + "\n", encoding="utf-8")
    n = semcodec.unpack(semcodec.pack(CAPTION + "\n")).n_tokens
    monkeypatch.setattr(codec, "DEFAULT_MAX_TOKENS", n)
    code, _, err = run_main(["pack", "c.txt", *quiet], capsys)
    assert code == 0 and "note" not in err  # exactly at the budget: fine
    monkeypatch.setattr(codec, "DEFAULT_MAX_TOKENS", n - 1)
    code, _, err = run_main(["pack", "c.txt", "-f", *quiet], capsys)
    assert code == 0
    assert [line for line in err.splitlines() if "note" in line] == [
        f"semcodec: note: c.txt: {n} tokens, more than readers' default budget of {n - 1}: "
        f"unpack it with --max-tokens {n} (max_tokens={n} in Python)"]
    assert run_main(["unpack", "c.txt.sem"], capsys)[0] == 1
    code, out, _ = run_main(["unpack", "c.txt.sem", "--max-tokens", str(n)], capsys)
    assert code == 0 and out == CAPTION + "\n"


def test_decode_honours_max_tokens(
    workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    """The budget is spent before any generator is loaded or anything painted."""
    pytest.importorskip("PIL.Image")
    (workdir / "c.sem").write_bytes(semcodec.pack(CAPTION))
    code, _, err = run_main(["decode", "c.sem", "-o", "c.png", "--max-tokens", "1", "--generator", "nosuch:x"], capsys)
    assert code == 1
    assert "no end-of-text within 1 token (the token budget; --max-tokens N" in one_error_line(err)
    assert sorted(p.name for p in workdir.iterdir()) == ["c.sem"]
