"""What the command line says and which exit code it gives (issue 11, faults 3, 4, 8, 10, 12):
one error map for every command, bounded reads, messages that name things once, nothing
secret or raw on the terminal, library code that never imports the CLI.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import semcodec
from semcodec import cli
from semcodec.cli import failures
from semcodec.codec import MAX_FILE_BYTES
from semcodec.errors import SemInputError, SemModelError
from semcodec.exitcodes import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_UNAVAILABLE
from semcodec.fileio import OutputExistsError
from semcodec.pipeline.errors import BackendError

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testkit
from testkit import one_error_line, run_main

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "A cat sleeping on a red sofa."


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return testkit.clean_workdir(tmp_path, monkeypatch)


# -- 4: one map from exceptions to exit codes ---------------------------------------------------


@pytest.mark.parametrize(
    ("err", "code", "message"),
    [
        (SemModelError("weights missing"), EXIT_UNAVAILABLE, "weights missing"),
        (BackendError("openai failed"), EXIT_UNAVAILABLE, "openai failed"),
        (SemInputError("bad\ntext"), EXIT_BAD_INPUT, "bad text"),
        (OutputExistsError("d/x.sem"), EXIT_BAD_INPUT, "d/x.sem already exists (use -f to overwrite)"),
        (FileNotFoundError(2, "No such file or directory", "nosuch.txt"), 1, "nosuch.txt: No such file or directory"),
        (MemoryError(), EXIT_INTERNAL, "internal error: MemoryError (set SEMCODEC_DEBUG=1 for a traceback)"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_one_error_map(err: BaseException, code: int, message: str) -> None:
    assert failures.classify(err) == (code, message)


def _internal_error(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["pack", "a.txt", "-o", "a.sem"], "semcodec.cli.text.read_text"),
        (["info", "a.txt"], "semcodec.cli.text.read_sem"),
        (["model", "list"], "semcodec.registry.MODELS"),
        (["encode", "a.png", "-o", "a.sem"], "semcodec.pipeline.commands._plan_jobs"),
        (["decode", "a.sem", "-o", "a.png"], "semcodec.pipeline.commands.read_input"),
        (["bench", "text", "a.txt"], "semcodec.bench.corpus.read_corpus"),
        (["bench", "images", "a.png"], "semcodec.bench.imagecli.image_paths"),
    ],
)
def test_internal_errors_exit_70_with_the_debug_hint_for_every_command(
    argv: list[str], target: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    monkeypatch.setattr(target, _internal_error if not target.endswith("MODELS") else None)
    code, _, err = run_main(argv, capsys)
    assert code == EXIT_INTERNAL
    line = one_error_line(err)
    assert "internal error:" in line and "set SEMCODEC_DEBUG=1 for a traceback" in line
    monkeypatch.setenv("SEMCODEC_DEBUG", "1")
    with pytest.raises((RuntimeError, AttributeError, TypeError)):
        cli.main(argv)


def test_library_code_never_imports_the_cli() -> None:
    """bench/, pipeline/ and the codec never import semcodec.cli, and write no literal exit codes."""
    library = [
        p
        for p in (ROOT / "src" / "semcodec").rglob("*.py")
        if "cli" not in p.relative_to(ROOT).parts and p.name != "__main__.py"  # the entry point runs the CLI
    ]
    for path in library:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("semcodec.cli"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("semcodec.cli") for a in node.names), path
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
                assert node.value.value not in (1, 3, 4, 70, 130) or path.name not in (
                    "commands.py", "imagecli.py"
                ), (path, node.lineno)


# -- 3: bounded reads for encode and decode ----------------------------------------------------


def test_decode_reads_a_bounded_prefix(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (workdir / "huge.sem").open("wb") as handle:
        handle.write(b"\xa7")  # a .sem file's first byte: only its size is wrong
        handle.truncate(1 << 30)  # sparse: 1 GiB that costs nothing
    code, _, err = run_main(["decode", "huge.sem", "-o", "z.png"], capsys)
    assert code == 1
    assert f"huge.sem is larger than the {MAX_FILE_BYTES}-byte input limit" in one_error_line(err)
    assert sorted(p.name for p in workdir.iterdir()) == ["huge.sem"]


def test_encode_reads_a_bounded_image(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pil_image = pytest.importorskip("PIL.Image")
    from semcodec.pipeline import imaging

    with (workdir / "huge.png").open("wb") as handle:
        handle.truncate(imaging.MAX_IMAGE_BYTES + 1)
    code, _, err = run_main(["encode", "huge.png", "-o", "h.sem"], capsys)
    assert code == 1
    assert f"huge.png is larger than the {imaging.MAX_IMAGE_BYTES}-byte input limit" in one_error_line(err)
    pil_image.new("RGB", (40, 30)).save(workdir / "bomb.png")
    monkeypatch.setattr(imaging, "MAX_IMAGE_PIXELS", 1000)
    code, _, err = run_main(["encode", "bomb.png", "-o", "b.sem"], capsys)
    assert code == 1
    assert "bomb.png: 40×30 is more than the 1000-pixel image limit" in one_error_line(err)
    assert not (workdir / "b.sem").exists() and not (workdir / "h.sem").exists()


# -- 8: messages -------------------------------------------------------------------------------


def test_batch_messages_name_each_file_once(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from semcodec.codec import MAX_TEXT_BYTES

    (workdir / "big.txt").write_bytes(b"x" * (MAX_TEXT_BYTES + 1))
    (workdir / "out").mkdir()
    code, _, err = run_main(["pack", "nosuch.txt", "big.txt", "-o", "out"], capsys)
    assert code == 4
    assert err.splitlines() == [
        "semcodec: error: nosuch.txt: No such file or directory",
        f"semcodec: error: big.txt is larger than the {MAX_TEXT_BYTES}-byte input limit",
        "semcodec: 0 of 2 files packed; 2 failed",  # a summary even when every file failed
    ]


def test_a_missing_output_folder_names_the_output_not_a_temp_file(
    workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    (workdir / "x.txt").write_text(CAPTION)
    code, _, err = run_main(["pack", "x.txt", "-o", "nodir/x.sem"], capsys)
    assert code == 1
    assert one_error_line(err) == "semcodec: error: nodir/x.sem: No such file or directory"


def test_empty_text_has_no_bits_per_character(
    workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    (workdir / "empty.txt").write_bytes(b"")
    code, _, err = run_main(["pack", "empty.txt", "-o", "e.sem"], capsys)
    assert (code, err) == (0, f"empty.txt: 0 chars -> {len(semcodec.pack(''))} B\n")  # no bits/char
    code, out, _ = run_main(["info", "e.sem", "--json"], capsys)
    assert json.loads(out)["bits_per_character"] is None


@pytest.mark.parametrize("command", [["model"], ["bench"], ["bench", "text"], ["bench", "images"], ["encode"]])
def test_help_lists_exit_codes_stdio_and_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "70 internal error" in out and "examples:" in out


def test_hf_local_path_is_not_told_to_download() -> None:
    from semcodec.pipeline.backends.hf import _missing

    message = str(_missing("/nonexistent/path", OSError("x")))
    assert message.startswith("hf model folder /nonexistent/path does not exist") and "hf download" not in message
    assert "hf download acme/model" in str(_missing("acme/model", OSError("x")))


def test_no_backend_mentions_openai_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from semcodec.pipeline.backends import hf

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError, match="or set OPENAI_API_KEY to use the openai backend"):
        hf._require("no_such_module_for_semcodec")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-xxxxxxxx")
    with pytest.raises(BackendError) as caught:
        hf._require("no_such_module_for_semcodec")
    assert "OPENAI_API_KEY" not in str(caught.value)


@pytest.mark.parametrize("script", ["text_rate", "runtime_speed"])
def test_benchmark_scripts_on_a_missing_file_are_one_line(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), str(tmp_path / "nope.txt")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1
    assert done.stderr == f"{script}: error: {tmp_path / 'nope.txt'}: No such file or directory\n"


# -- 10: secrets and terminals ------------------------------------------------------------------


def test_url_credentials_never_shown(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    from semcodec.pipeline.backends import BackendOptions
    from semcodec.pipeline.backends.openai_api import OpenAIBackend

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://alice:hunter2@127.0.0.1:9/v1?api-key=SECRET42&key=K9")
    backend = OpenAIBackend(BackendOptions(retries=0, timeout=2))
    with pytest.raises(BackendError) as caught:
        backend.chat("gpt-4o", "describe", "hi", [])
    message = str(caught.value)
    assert "cannot reach" in message and "127.0.0.1" in message
    for secret in ("alice", "hunter2", "SECRET42", "K9", "sk-test-0123456789"):
        assert secret not in message


def test_terminal_escapes_are_shown_escaped_on_stderr(
    workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    from semcodec.pipeline.progress import Progress

    stream = io.StringIO()
    Progress(stream).note('→ x.png: "A cat\x1b]0;owned\x07\x1b[2J"')
    assert stream.getvalue() == '→ x.png: "A cat\\x1b]0;owned\\x07\\x1b[2J"\n'
    evil = "a\x1b[2J.txt"
    (workdir / evil).write_text(CAPTION)
    code, _, err = run_main(["pack", evil, "-o", "e.sem"], capsys)
    assert code == 0 and "\x1b" not in err and "a\\x1b[2J.txt: " in err
    code, _, err = run_main(["pack", evil, "-o", "e.sem"], capsys)
    assert code == 1 and "\x1b" not in err


# -- 12: a token budget on the command line ----------------------------------------------------


def test_unpack_max_tokens(workdir: Path, model, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    (workdir / "c.sem").write_bytes(semcodec.pack(CAPTION))
    n = semcodec.unpack((workdir / "c.sem").read_bytes()).n_tokens
    code, out, err = run_main(["unpack", "c.sem", "--max-tokens", str(n - 1)], capsys)
    assert (code, out) == (1, "")
    assert f"no end-of-text within {n - 1} tokens (the token budget; --max-tokens N" in one_error_line(err)
    assert run_main(["unpack", "c.sem", "--max-tokens", str(n)], capsys)[:2] == (0, CAPTION)
    with pytest.raises(SystemExit):
        cli.main(["unpack", "c.sem", "--max-tokens", "2049"])


@pytest.mark.parametrize("command", [["unpack"], ["info"], ["info", "--header-only"]])
def test_single_file_errors_name_the_file(
    command: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One input: a message about its content names it, as a batch would (not twice)."""
    (workdir / "text.txt").write_text("A plain text, not a .sem file.")
    code, _, err = run_main([*command, "text.txt"], capsys)
    assert code == EXIT_BAD_INPUT
    assert one_error_line(err) == "semcodec: error: text.txt: not a .sem file (first byte 0x41, expected 0xa7 or 0xa8)"
    code, _, err = run_main([*command, "missing.sem"], capsys)
    assert one_error_line(err) == "semcodec: error: missing.sem: No such file or directory"


@pytest.mark.parametrize("command", [["unpack", "-"], ["info", "-"]])
def test_binary_input_is_never_awaited_from_a_terminal(
    command: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    code, _, err = run_main(command, capsys)
    assert code == EXIT_BAD_INPUT
    assert "refusing to read binary .sem data from a terminal" in one_error_line(err)


@pytest.mark.parametrize("as_json", [True, False])
def test_info_on_a_stdout_that_cannot_encode_the_text(as_json: bool, workdir: Path, model) -> None:  # type: ignore[no-untyped-def]
    """A latin-1 terminal: escapes instead of a crash halfway through (JSON stays JSON)."""
    text = "A bus \U0001f68c \u2014 at night."
    (workdir / "bus.sem").write_bytes(semcodec.pack(text))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONIOENCODING": "latin-1", "OPENBLAS_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "semcodec", "info", "bus.sem", *(["--json"] if as_json else [])]
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, timeout=300, check=False)
    assert (done.returncode, done.stderr) == (0, b"")
    shown = done.stdout.decode("latin-1")
    if as_json:
        assert json.loads(shown)["text"] == text
    else:
        assert "A bus \\U0001f68c \\u2014 at night." in shown
