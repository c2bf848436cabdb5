"""The ``semcodec`` command line as a user meets it: exit codes, ``-``, no clobbering,
atomic outputs, untouched inputs, batches that carry on, one-line errors.

Most tests call :func:`semcodec.cli.main` in-process (the model loads once); the ones about
the process itself (pipes, tracebacks, exit status, environment) run ``python -m semcodec``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path

import pytest

import semcodec
from semcodec import cli
from semcodec.errors import SemModelError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testkit import one_error_line, run_main

CAPTION = "A cat sleeping on a red sofa."


class TerminalStdin(io.TextIOWrapper):
    """Standard input that is a terminal (nothing piped in), as in an interactive shell."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(b""))

    def isatty(self) -> bool:
        return True


def run_process(
    argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    # This checkout's sources, whatever the cwd (a relative PYTHONPATH=src would pick up an installed copy).
    src = str(Path(__file__).resolve().parents[1] / "src")
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "SEMCODEC_QUIET": "1", "PYTHONPATH": src, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "semcodec", *argv],
        input=stdin,
        capture_output=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and mtime (ns), hidden temp files included."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def packed(model) -> bytes:  # type: ignore[no-untyped-def]
    return semcodec.pack(CAPTION)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMCODEC_QUIET", "1")
    yield tmp_path


# -- help, version, usage errors ------------------------------------------------------------


def _commands() -> list[str]:
    sub = cli.build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_main_help_documents_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for code, meaning in [(0, "success"), (1, "bad input"), (2, "usage error"), (3, "unavailable"), (4, "batch")]:
        assert any(line.split()[:1] == [str(code)] and meaning in line for line in out.splitlines()), (code, out)
    for command in ("pack", "unpack", "info"):
        assert command in out


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: semcodec {command}")
    if command in ("pack", "unpack", "info"):
        assert "exit codes:" in out and "4  a batch" in out


@pytest.mark.parametrize("argv", [["pack", "--help"], ["unpack", "--help"], ["info", "--help"], ["unpack"],
                                  ["pack", "x", "--bogus"], ["unpack", "--max-tokens", "x", "f"]])
def test_text_commands_parse_the_same_with_the_text_parser_alone(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() parses pack/unpack/info with their parsers alone (a faster start): same help, errors, codes."""
    monkeypatch.setattr(sys, "stdin", TerminalStdin())  # `unpack` alone is then a usage error
    results = []
    for text_only in (False, True):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser(text_only=text_only).parse_args(argv)
        results.append((exc.value.code, capsys.readouterr()))
    assert results[0] == results[1]


def test_unpack_imports_neither_the_image_pipeline_nor_the_benches(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Their imports would slow every cold `semcodec unpack` (checked in a fresh interpreter)."""
    sem = tmp_path / "caption.sem"
    sem.write_bytes(semcodec.pack(CAPTION))
    code = ("import sys\nfrom semcodec.cli import main\nassert main(['unpack', sys.argv[1], '-o', sys.argv[2]]) == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith(('semcodec.pipeline', 'semcodec.bench'))))")
    done = subprocess.run([sys.executable, "-c", code, str(sem), str(tmp_path / "out.txt")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == CAPTION


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert f"semcodec {semcodec.__version__}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["pack"],
        ["unpack"],
        ["info"],
        ["pack", "x.txt", "--bogus"],
        ["pack", "x.txt", "--width", "0"],
        ["pack", "x.txt", "--height", "16385"],
        ["pack", "x.txt", "--width", "wide"],
        ["pack", "x.txt", "--seed", "-1"],
        ["pack", "x.txt", "--seed", str(2**64)],
        ["model", "destroy"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", TerminalStdin())  # no FILE and a terminal: nothing to read
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: semcodec") and "error:" in err
    assert list(workdir.iterdir()) == []




@pytest.mark.parametrize(
    "argv",
    [["info", "a.sem", "b.sem"], ["pack", "x.txt", "--bogus"], ["encode", "x.png", "--bogus"],
     ["bench", "text", "x.txt", "--bogus"]],
)
def test_leftover_arguments_are_reported_under_the_commands_usage(
    argv: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(argv[: 2 if argv[0] == "bench" else 1])
    assert err.startswith(f"usage: semcodec {command} [-h]"), err
    assert f"semcodec {command}: error: unrecognized arguments: {argv[-1]}\n" in err


# -- the model command ----------------------------------------------------------------------


def test_every_place_names_the_same_default_model(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`model list`, `model --help` and the registry agree with what `pack` really uses when no
    model is named: registry.DEFAULT_MODEL_ID."""
    from semcodec.registry import DEFAULT_MODEL_ID, MODELS

    assert not [spec.model_id for spec in MODELS.values() if "default" in spec.summary]  # said in one place
    code, out, _ = run_main(["model", "list"], capsys)
    assert code == 0
    marked = [line for line in out.splitlines() if "[default]" in line]
    assert [line.split()[:2] for line in marked] == [[str(DEFAULT_MODEL_ID), MODELS[DEFAULT_MODEL_ID].name]]
    assert "[default of format v1 files]" in out.splitlines()[0]  # model 0: what a v1 file without the field means
    names = [line.index(spec.name) for line, spec in zip(out.splitlines(), MODELS.values(), strict=True)]
    assert len(set(names)) == 1  # one- and two-digit ids: the names still start in one column
    with pytest.raises(SystemExit):
        cli.main(["model", "--help"])
    help_text = capsys.readouterr().out
    assert f"# model {DEFAULT_MODEL_ID}, the default" in help_text
    assert "model 0, the default" not in help_text
    with pytest.raises(SystemExit):
        cli.main(["model", "fetch", "--help"])
    assert f"(default {DEFAULT_MODEL_ID})" in capsys.readouterr().out

    Path("caption.txt").write_text(CAPTION, encoding="utf-8")
    assert run_main(["pack", "caption.txt"], capsys)[0] == 0
    assert semcodec.read_header(Path("caption.txt.sem").read_bytes()).model_id == DEFAULT_MODEL_ID


def test_the_model_command_takes_ids_or_names_as_pack_does(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`model verify|fetch MODEL` resolves MODEL with pack's rule (registry.model_id_by_name)."""
    from semcodec import models
    from semcodec.registry import DEFAULT_MODEL_ID, MODELS

    checked: list[int] = []

    def check_cache(model_id: int) -> dict[str, str]:  # what verify would check, recorded (nothing read)
        checked.append(model_id)
        return {}

    monkeypatch.setattr(models, "check_cache", check_cache)
    for argv in (["model", "verify", MODELS[5].name], ["model", "verify", "2"], ["model", "verify"]):
        code, _, err = run_main(argv, capsys)
        assert code == 0, err
    assert checked == [5, 2, DEFAULT_MODEL_ID]
    for argv in (["model", "verify", "captions"], ["pack", "--model", "captions", "x.txt"]):
        with pytest.raises(SystemExit) as exc:  # a bad option value: a usage error (exit 2), as gzip's
            cli.main(argv)
        assert exc.value.code == 2
        last = capsys.readouterr().err.splitlines()[-1]  # the same error from both commands
        assert ": error: argument " in last and "unknown probability model 'captions' (known: " in last
    assert checked == [5, 2, DEFAULT_MODEL_ID]

# -- pack / unpack / info on files ----------------------------------------------------------


def test_pack_then_unpack_files(workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "caption.txt").write_text(CAPTION + "\n", encoding="utf-8")
    before = snapshot(workdir)
    code, out, err = run_main(["pack", "caption.txt"], capsys)
    assert (code, out) == (0, "")
    with_newline = semcodec.pack(CAPTION + "\n")  # byte-exact: the final newline is coded too
    assert err.startswith(f"caption.txt: {len(CAPTION) + 1} chars -> {len(with_newline)} B")
    assert (workdir / "caption.txt.sem").read_bytes() == with_newline
    after = snapshot(workdir)
    assert after["caption.txt"] == before["caption.txt"]  # input untouched, mtime included
    assert set(after) == {"caption.txt", "caption.txt.sem"}

    code, out, err = run_main(["unpack", "caption.txt.sem"], capsys)  # default: stdout
    assert (code, out, err) == (0, CAPTION + "\n", "")
    code, out, err = run_main(["unpack", "caption.txt.sem", "-o", "back.txt"], capsys)
    assert (code, out, err) == (0, "", "")
    assert (workdir / "back.txt").read_bytes() == (workdir / "caption.txt").read_bytes()
    assert snapshot(workdir)["caption.txt.sem"] == after["caption.txt.sem"]


def test_pack_header_options_reach_the_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "c.txt").write_bytes(CAPTION.encode())
    code, _, _ = run_main(
        [
            "pack",
            "c.txt",
            "-o",
            "c.sem",
            "--width",
            "512",
            "--height",
            "256",
            "--seed",
            "7",
            "--check",
            "--generator",
            "openai:dall-e-3",
            "--model",
            "smollm2-135m-instruct/plain",
            "-q",
        ],
        capsys,
    )
    assert code == 0
    data = (workdir / "c.sem").read_bytes()
    assert semcodec.read_header(data) == semcodec.Header(1, 1, 7, 512, 256, True)
    assert semcodec.unpack(data).text == CAPTION


def test_stdin_and_stdout_in_process(
    workdir: Path, packed: bytes, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed)))
    assert cli.main(["unpack", "-", "-o", "-"]) == 0
    assert capsysbinary.readouterr().out == CAPTION.encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CAPTION.encode())))
    assert cli.main(["pack", "-", "-o", "-", "-q"]) == 0
    assert capsysbinary.readouterr().out == packed
    assert list(workdir.iterdir()) == []


def test_stdin_and_stdout_pipes(workdir: Path, packed: bytes) -> None:
    """``printf ... | semcodec pack - | semcodec unpack -`` in real processes."""
    first = run_process(["pack", "-", "-q"], stdin=CAPTION.encode(), cwd=workdir)
    assert (first.returncode, first.stdout, first.stderr) == (0, packed, b"")
    second = run_process(["unpack", "-"], stdin=first.stdout, cwd=workdir)
    assert (second.returncode, second.stdout, second.stderr) == (0, CAPTION.encode(), b"")
    assert list(workdir.iterdir()) == []


def test_refuses_to_overwrite_without_force(workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "c.txt").write_text(CAPTION, encoding="utf-8")
    (workdir / "c.txt.sem").write_bytes(b"precious")
    (workdir / "c.sem").write_bytes(packed)
    (workdir / "out.txt").write_bytes(b"precious too")
    before = snapshot(workdir)
    for argv in (["pack", "c.txt"], ["unpack", "c.sem", "-o", "out.txt"]):
        code, out, err = run_main(argv, capsys)
        assert (code, out) == (1, "")
        assert "already exists (use -f to overwrite)" in one_error_line(err)
        assert snapshot(workdir) == before
    assert run_main(["pack", "c.txt", "-f", "-q"], capsys)[0] == 0
    assert (workdir / "c.txt.sem").read_bytes() == packed
    assert run_main(["unpack", "c.sem", "-o", "out.txt", "-f"], capsys)[0] == 0
    assert (workdir / "out.txt").read_text(encoding="utf-8") == CAPTION


def test_failed_unpack_leaves_no_output(workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "bad.sem").write_bytes(packed + b"\x00")  # trailing byte: not canonical
    (workdir / "kept.txt").write_bytes(b"old text\n")
    before = snapshot(workdir)
    code, out, err = run_main(["unpack", "bad.sem", "-o", "new.txt"], capsys)
    assert (code, out) == (1, "")
    assert "canonical" in one_error_line(err)
    code, out, err = run_main(["unpack", "bad.sem", "-o", "kept.txt", "-f"], capsys)
    assert (code, out) == (1, "")
    one_error_line(err)
    assert snapshot(workdir) == before  # no new.txt, no temp file, kept.txt as it was


@pytest.mark.parametrize("failure", ["fsync", "replace", "interrupt"])
def test_failed_write_leaves_nothing_behind(
    failure: str, workdir: Path, packed: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write that fails midway (disk full, rename refused, Ctrl-C) leaves no partial or temp file
    and keeps an existing target intact, even with -f."""
    (workdir / "c.sem").write_bytes(packed)
    (workdir / "old.txt").write_bytes(b"old text\n")
    before = snapshot(workdir)
    from semcodec import fileio

    def boom(*args: object) -> None:
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, failure if failure != "interrupt" else "replace", boom)
    for target in ("new.txt", "old.txt"):
        code, _, err = run_main(["unpack", "c.sem", "-o", target, "-f"], capsys)
        assert code == (130 if failure == "interrupt" else 1)
        line = one_error_line(err)
        assert ("interrupted" if failure == "interrupt" else "No space left on device") in line
        assert snapshot(workdir) == before


def test_batch_unpack_continues_past_bad_files(
    workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    other = semcodec.pack("Two dogs play in the snow.")
    (workdir / "a.sem").write_bytes(packed)
    (workdir / "bad.sem").write_bytes(b"\xa7\x20" + packed[2:])  # v2 flag bit 5: a later version
    (workdir / "worse.sem").write_bytes(packed + b"\x00")  # not canonical
    (workdir / "good.sem").write_bytes(other)
    (workdir / "out").mkdir()
    inputs = snapshot(workdir)
    code, out, err = run_main(
        ["unpack", "a.sem", "bad.sem", "missing.sem", "worse.sem", "good.sem", "-o", "out/"], capsys
    )
    assert (code, out) == (4, "")
    *errors, summary = err.splitlines()
    assert summary == "semcodec: 2 of 5 files unpacked; 3 failed"
    lines = sorted(errors)  # unreadable files are reported first, then undecodable ones
    assert len(lines) == 3 and "Traceback" not in err, err
    assert lines[0].startswith("semcodec: error: bad.sem: ") and "later version" in lines[0]
    assert lines[1] == "semcodec: error: missing.sem: No such file or directory"  # errno text once
    assert lines[2].startswith("semcodec: error: worse.sem: ") and "canonical" in lines[2]
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["a", "good"]
    assert (workdir / "out" / "a").read_text(encoding="utf-8") == CAPTION
    assert (workdir / "out" / "good").read_text(encoding="utf-8") == "Two dogs play in the snow."
    assert {k: v for k, v in snapshot(workdir).items() if not k.startswith("out")} == inputs


def test_batch_pack_continues_past_bad_files(workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "a.txt").write_text(CAPTION, encoding="utf-8")
    (workdir / "latin1.txt").write_bytes("Caf\xe9".encode("latin-1"))
    (workdir / "c.txt").write_text("A dog.", encoding="utf-8")
    (workdir / "out").mkdir()
    (workdir / "out" / "c.txt.sem").write_bytes(b"precious")
    code, out, err = run_main(["pack", "a.txt", "latin1.txt", "c.txt", "-o", "out", "-q"], capsys)
    assert (code, out) == (4, "")
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith("semcodec: error: latin1.txt: ") and "not UTF-8" in lines[0]
    assert lines[1] == "semcodec: error: c.txt: out/c.txt.sem already exists (use -f to overwrite)"
    assert lines[2] == "semcodec: 1 of 3 files packed; 2 failed"
    assert (workdir / "out" / "a.txt.sem").read_bytes() == packed
    assert (workdir / "out" / "c.txt.sem").read_bytes() == b"precious"
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["a.txt.sem", "c.txt.sem"]


def test_batch_needs_an_existing_directory(workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "a.sem").write_bytes(packed)
    code, out, err = run_main(["unpack", "a.sem", "a.sem", "-o", "nowhere"], capsys)
    assert (code, out) == (1, "")
    assert "-o must name a folder (nowhere is not one; end it with / to have it made)" in one_error_line(err)
    assert sorted(p.name for p in workdir.iterdir()) == ["a.sem"]


# -- bad input: exit 1, one line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "content", "message"),
    [
        (["unpack", "f.sem"], b"GIF89a", "not a .sem file"),
        (["unpack", "f.sem"], b"\xa7", "too short"),
        (["unpack", "f.sem"], b"\xa7\x20\x01", "later version"),
        (["unpack", "f.sem"], b"\xa7\x00\x01", "one-byte form"),
        (["unpack", "f.sem"], b"\xa7\x60\x01", "escape symbol"),  # v1's flag bit 5: the v4 short form (SPEC §7)
        (["unpack", "f.sem"], b"\xa7\x41\x63\x01", "model id 99"),
        (["unpack", "f.sem"], b"\xa7\x42\x09\x01", "generator id 9"),
        (["unpack", "f.sem"], b"\xa7\x48\x80\x81\x01\x01", "width 16512 exceeds"),
        (["unpack", "f.sem"], b"\xa7\x40" + b"\x55" * 7000, "input limit"),
        (["info", "f.sem"], b"\xa7\x40" + b"\x55" * 7000, "input limit"),
        (["info", "f.sem", "--header-only"], b"\xa7\x50\x01", "integrity check"),
        (["pack", "f.sem"], b"\xff\xfe", "not UTF-8"),
        (["pack", "f.sem", "-o", "g.sem"], b"x" * (128 * 2048 + 1), "input limit"),
        (["unpack", "missing.sem"], None, "No such file"),
        (["unpack", "."], None, "directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    argv: list[str], content: bytes | None, message: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if content is not None:
        (workdir / "f.sem").write_bytes(content)
    before = snapshot(workdir)
    code, out, err = run_main(argv, capsys)
    assert (code, out) == (1, "")
    assert message in one_error_line(err)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("command", ["unpack", "info", "pack", "decode"])
def test_endless_input_is_refused(command: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero device (our own node with /dev/zero's numbers, 1/5) is read up to the input limit,
    not until memory runs out."""
    import stat

    try:
        os.mknod(workdir / "zero", stat.S_IFCHR | 0o444, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    argv = [command, "zero", "-o", "z.png"] if command in ("pack", "decode") else [command, "zero"]
    code, out, err = run_main(argv, capsys)
    assert (code, out) == (1, "")
    # a .sem reader judges the first byte before the size (a zero is no .sem file); the rest, the size
    expected = "not a .sem file (first byte 0x00" if command in ("unpack", "info") else "input limit"
    assert expected in one_error_line(err)
    assert sorted(p.name for p in workdir.iterdir()) == ["zero"]


def test_process_errors_have_no_traceback(workdir: Path, packed: bytes) -> None:
    (workdir / "bad.sem").write_bytes(packed[:-1] + bytes([packed[-1] ^ 0x40]))
    (workdir / "junk.sem").write_bytes(b"\x00junk")
    for argv in (["unpack", "junk.sem"], ["info", "junk.sem", "--json"], ["unpack", "nonexistent.sem"]):
        result = run_process(argv, cwd=workdir)
        assert result.returncode == 1, result
        assert result.stdout == b""
        one_error_line(result.stderr.decode())


def test_model_unavailable_exits_3(tmp_path: Path, packed: bytes) -> None:
    """No cached weights and a model file that fails verification: exit 3, one line, nothing cached."""
    (tmp_path / "f.sem").write_bytes(packed)
    (tmp_path / "fake.gguf").write_bytes(b"GGUF" + b"\x00" * 1000)
    cache = tmp_path / "cache"
    env = {"SEMCODEC_CACHE_DIR": str(cache), "SEMCODEC_MODEL_FILE": str(tmp_path / "fake.gguf")}
    result = run_process(["unpack", "f.sem"], env=env, cwd=tmp_path)
    assert result.returncode == 3, result
    assert "sha256" in one_error_line(result.stderr.decode())
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    # A model file that does not exist is the same kind of failure.
    env["SEMCODEC_MODEL_FILE"] = str(tmp_path / "no-such.gguf")
    result = run_process(["unpack", "f.sem"], env=env, cwd=tmp_path)
    assert result.returncode == 3, result
    assert "no-such.gguf" in one_error_line(result.stderr.decode())


def test_model_unavailable_in_process_exits_3(
    workdir: Path, packed: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "f.sem").write_bytes(packed)

    def unavailable(model_id: int) -> None:
        raise SemModelError("weights missing")

    monkeypatch.setattr("semcodec.models.load_model", unavailable)
    code, out, err = run_main(["unpack", "f.sem"], capsys)
    assert (code, out) == (3, "")
    assert "weights missing" in one_error_line(err)
    # info --header-only needs no model at all
    code, out, err = run_main(["info", "f.sem", "--header-only"], capsys)
    assert (code, err) == (0, "")


def test_interrupt_exits_130_without_output(
    workdir: Path, packed: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "f.sem").write_bytes(packed)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("semcodec.codec.unpack_many", interrupted)
    code, out, err = run_main(["unpack", "f.sem", "-o", "f.txt"], capsys)
    assert (code, out) == (130, "")
    assert "interrupted" in one_error_line(err)
    assert sorted(p.name for p in workdir.iterdir()) == ["f.sem"]


# -- info -----------------------------------------------------------------------------------

INFO_FIELDS = {
    "format_version",
    "file_bytes",
    "header_bytes",
    "payload_bytes",
    "payload_bits",
    "model_id",
    "model",
    "generator_id",
    "generator",
    "seed",
    "width",
    "height",
    "integrity_check",
    "micro_bpp",
    "micro_bpp_at_1024",
}


def test_info_json_fields(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = semcodec.pack(CAPTION, model_id=3, generator_id=1, seed=7, width=512, height=256, check=True)
    (workdir / "c.sem").write_bytes(data)
    code, out, err = run_main(["info", "c.sem", "--json"], capsys)
    assert (code, err) == (0, "")
    info = json.loads(out)
    assert set(info) == INFO_FIELDS | {"characters", "tokens", "bits_per_character", "text"}
    header_bytes = len(semcodec.container.encode_header(semcodec.read_header(data), b"\0\0"))
    assert info == info | {
        "format_version": 2,
        "file_bytes": len(data),
        "header_bytes": header_bytes,
        "payload_bytes": len(data) - header_bytes,
        "payload_bits": 8 * (len(data) - header_bytes),
        "model_id": 3,
        "model": "smollm2-135m-instruct/captions",
        "generator_id": 1,
        "generator": "openai:dall-e-3",
        "seed": 7,
        "width": 512,
        "height": 256,
        "integrity_check": data[header_bytes - 2 : header_bytes].hex(),
        "text": CAPTION,
        "characters": len(CAPTION),
        "tokens": len(semcodec.codec.tokenize(CAPTION)),
    }
    assert info["micro_bpp"] == pytest.approx(8e6 * len(data) / (512 * 256), abs=1e-3)
    assert info["micro_bpp_at_1024"] == pytest.approx(8e6 * len(data) / 1024**2, abs=1e-3)
    assert info["bits_per_character"] == pytest.approx(8 * len(data) / len(CAPTION), abs=1e-4)

    code, out, err = run_main(["info", "c.sem", "--json", "--header-only"], capsys)
    assert (code, err) == (0, "")
    assert set(json.loads(out)) == INFO_FIELDS


def test_info_does_not_print_terminal_escapes(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile file's text can hold escape sequences (set the window title, rewrite the screen):
    ``info`` shows them escaped; ``--json`` escapes them anyway; ``unpack`` writes the exact text."""
    text = "A cat\x1b]0;owned\x07 on a mat\u202e."
    (workdir / "e.sem").write_bytes(semcodec.pack(text))
    code, out, _ = run_main(["info", "e.sem"], capsys)
    assert code == 0
    assert out.isprintable() or all(c.isprintable() or c == "\n" for c in out)
    assert "A cat\\x1b]0;owned\\x07 on a mat\\u202e." in out
    code, out, _ = run_main(["info", "e.sem", "--json"], capsys)
    assert json.loads(out)["text"] == text and "\x1b" not in out
    code, out, _ = run_main(["unpack", "e.sem"], capsys)
    assert out == text


def test_outputs_get_the_usual_file_mode(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Atomic writes go through a private temp file; the result still gets 0666 & ~umask."""

    from semcodec import fileio

    (workdir / "m.txt").write_text("A red kite over a beach.\n")
    assert run_main(["pack", "m.txt", "-o", "m.sem"], capsys)[0] == 0
    assert (workdir / "m.sem").stat().st_mode & 0o777 == 0o666 & ~fileio._UMASK


# -- progress lines ---------------------------------------------------------------------------

LONG = "A harbour at dusk: small fishing boats moored along a stone quay, gulls over the masts, and a man coiling rope."


class TerminalStderr(io.StringIO):
    """Standard error that is a terminal (what a person watching the command sees)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> TerminalStderr:
    """A stderr that is a terminal (a test puts it in place: ``with redirect_stderr(terminal)``, since
    pytest sets its own stderr again when the test starts); the progress line drawn at once and on
    every update; the forward pass 4 tokens at a time (so that a sentence makes several updates)."""
    from semcodec.cli.common import TokenProgress
    from semcodec.models import exact

    monkeypatch.setattr(TokenProgress, "DELAY_S", 0.0)
    monkeypatch.setattr(TokenProgress, "INTERVAL_S", 0.0)
    monkeypatch.setattr(exact, "PREFILL_CHUNK", 4)
    return TerminalStderr()


def _drawn(err: str) -> list[str]:
    """The progress lines drawn on the terminal (each starts with a carriage return)."""
    return [part.rstrip() for part in err.split("\r") if part.strip().startswith("semcodec: ")]


def test_pack_shows_progress_on_a_terminal(workdir: Path, terminal: TerminalStderr, model) -> None:  # type: ignore[no-untyped-def]
    (workdir / "long.txt").write_text(LONG)
    with redirect_stderr(terminal):
        assert cli.main(["pack", "long.txt", "--model", "0"]) == 0
    total = len(model.tokenizer.encode(LONG))
    err = terminal.getvalue()
    lines = _drawn(err)
    assert lines[0] == f"semcodec: packing: 4/{total} tokens"  # no rate yet: the first update is its origin
    assert all(line.startswith("semcodec: packing: ") for line in lines)
    assert any(" tokens/s, ETA " in line for line in lines), lines
    assert lines[-1].startswith(f"semcodec: packing: {total}/{total} tokens, ") and lines[-1].endswith(" finishing")
    # Erased (spaces over it, the cursor back at the row's start) before the summary line.
    width = len(err.split("\r")[-3])
    summary = f"long.txt: {len(LONG)} chars -> {(workdir / 'long.txt.sem').stat().st_size} B"
    assert err.endswith(f"\r{' ' * width}\r{summary}" + err.rsplit(summary, 1)[1])
    assert (workdir / "long.txt.sem").read_bytes() == semcodec.pack(LONG, model_id=0)


def test_unpack_shows_progress_on_a_terminal(workdir: Path, terminal: TerminalStderr, capsys) -> None:  # type: ignore[no-untyped-def]
    (workdir / "long.sem").write_bytes(semcodec.pack(LONG))
    with redirect_stderr(terminal):
        assert cli.main(["unpack", "long.sem"]) == 0
    assert capsys.readouterr().out == LONG
    err = terminal.getvalue()
    lines = _drawn(err)
    assert lines[0] == "semcodec: decoding: 1 token"
    assert any(line.endswith(" tokens/s") for line in lines), lines  # the budget is no total: no ETA
    assert not any("ETA" in line for line in lines)
    assert err.endswith("\r") and not err.split("\r")[-2].strip()  # erased before the text was written


def test_batch_unpack_progress_counts_files(workdir: Path, terminal: TerminalStderr, capsys) -> None:  # type: ignore[no-untyped-def]
    (workdir / "a.sem").write_bytes(semcodec.pack(LONG))
    (workdir / "b.sem").write_bytes(semcodec.pack(CAPTION))
    with redirect_stderr(terminal):
        assert cli.main(["unpack", "a.sem", "b.sem", "-o", "out/"]) == 0
    lines = _drawn(terminal.getvalue())
    assert lines[0] == "semcodec: decoding: 2 tokens, 2 files still decoding"
    assert any(line.endswith(", 2 files still decoding") and "tokens/s" in line for line in lines)
    assert (workdir / "out" / "a").read_text() == LONG


@pytest.mark.parametrize("argv", [["pack", "long.txt", "-f", "-q"], ["unpack", "long.sem", "-q"]])
def test_no_progress_with_quiet(workdir: Path, terminal: TerminalStderr, argv: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    (workdir / "long.txt").write_text(LONG)
    (workdir / "long.sem").write_bytes(semcodec.pack(LONG))
    with redirect_stderr(terminal):
        assert cli.main(argv) == 0
    assert terminal.getvalue() == ""


def test_no_progress_off_a_terminal(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe or a log gets the summary line only: no carriage returns, however long the work."""
    from semcodec.cli.common import TokenProgress

    monkeypatch.setattr(TokenProgress, "DELAY_S", 0.0)
    monkeypatch.setattr(TokenProgress, "INTERVAL_S", 0.0)
    (workdir / "long.txt").write_text(LONG)
    code, _, err = run_main(["pack", "long.txt"], capsys)
    assert code == 0 and "\r" not in err and "packing" not in err and err.startswith("long.txt: ")
    code, out, err = run_main(["unpack", "long.txt.sem"], capsys)
    assert (code, out, err) == (0, LONG, "")


def test_library_calls_are_silent_unless_given_a_callback(terminal: TerminalStderr, model) -> None:  # type: ignore[no-untyped-def]
    with redirect_stderr(terminal):
        data = semcodec.pack(LONG, model_id=0)
        assert semcodec.unpack(data).text == LONG
        assert terminal.getvalue() == ""
        seen: list[tuple[int, int]] = []
        assert semcodec.pack(LONG, model_id=0, progress=lambda done, total: seen.append((done, total))) == data
    total = len(model.tokenizer.encode(LONG))
    assert [done for done, _ in seen] == [*range(4, total, 4), total] and {t for _, t in seen} == {total}
    assert terminal.getvalue() == ""


def test_progress_line_on_a_real_terminal(workdir: Path) -> None:
    """Through a pseudo-terminal: the line is drawn, then erased before the summary."""
    import pty

    (workdir / "long.txt").write_text(LONG)
    script = ("from semcodec.cli.common import TokenProgress as P; P.DELAY_S = P.INTERVAL_S = 0\n"
              "from semcodec.models import exact; exact.PREFILL_CHUNK = 4\n"
              "from semcodec.cli import main; raise SystemExit(main(['pack', 'long.txt', '--model', '0']))")
    controller, terminal = pty.openpty()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "SEMCODEC_QUIET": "1", "PYTHONPATH": src}
    try:
        done = subprocess.run([sys.executable, "-c", script], stderr=terminal, cwd=workdir, env=env, timeout=300,
                              check=False)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    text = shown.decode().replace("\r\n", "\n")  # the terminal's own newline translation
    assert "\rsemcodec: packing: 4/" in text and " tokens/s, ETA " in text
    assert text.rstrip("\n").endswith(f"\rlong.txt: {len(LONG)} chars -> {(workdir / 'long.txt.sem').stat().st_size} B"
                                      + text.rstrip("\n").rsplit(" B", 1)[1])
