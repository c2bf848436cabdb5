"""The README's examples are executed: its Python session as a doctest, the console session
of "Use" (text ↔ .sem, no network) command by command, output compared exactly, the image
sections' examples that need no API key or model weights (their error lines and exit codes),
and the Datasets section's console and Python examples on a local Ray cluster (slow).

Not run: the image sessions that describe or paint (they need an API key, or model weights
and a GPU; the pipeline tests drive the same commands against a local OpenAI stub), the two
dataset image jobs for the same reason, and the shell blocks of setup and development.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(kind: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", text, flags=re.M | re.S)


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def _session(block: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a ``$ ``-prompted console block."""
    pairs: list[tuple[str, str]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), lines[i]
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        pairs.append((command, "\n".join(output) + ("\n" if output else "")))
    return pairs


def test_python_session_is_a_passing_doctest(model) -> None:  # type: ignore[no-untyped-def]
    (block,) = _blocks("pycon", _section("Use"))
    test = doctest.DocTestParser().get_doctest(block, {}, "README.md", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 6


def _shell_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a README session: ``semcodec`` on PATH is this checkout's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "semcodec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m semcodec "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT / "src"),
        "OPENBLAS_NUM_THREADS": "1",
    }
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEMCODEC_CAPTIONER", "SEMCODEC_GENERATOR", "SEMCODEC_DEBUG"):
        env.pop(name, None)
    return env


def test_use_console_session_runs_as_shown(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("brotli")  # `--compare` shows brotli's size
    env = _shell_env(tmp_path)
    (block,) = _blocks("console", _section("Use"))
    session = _session(block)
    assert len(session) == 4
    for command, expected in session:
        done = subprocess.run(
            ["bash", "-c", command + " 2>&1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert done.stdout == expected, command


def test_image_examples_without_a_key_run_as_shown(tmp_path: Path) -> None:
    """The image sections' examples that need no API key and no weights (what a missing key or
    model says, and its exit code) print the error line shown ("abridged": the progress lines
    before it are left out) and exit as the following `echo $?` says."""
    pytest.importorskip("openai")
    pytest.importorskip("PIL.Image").new("RGB", (64, 48), "orange").save(tmp_path / "cat.jpg")
    env = _shell_env(tmp_path)
    env["HF_HUB_OFFLINE"] = "1"
    session = [pair for title in ("With an API key", "With local models")
               for block in _blocks("console", _subsection(title)) for pair in _session(block)]
    ran = 0
    for i, (command, expected) in enumerate(session):
        lines = expected.splitlines()
        if not lines or not all(line.startswith("semcodec: error: ") for line in lines):
            continue  # it describes or paints: an API key, or weights and a GPU
        if "hf:" in command:
            pytest.importorskip("transformers")
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        errors = [line.replace(str(Path.home()), "~") for line in done.stderr.splitlines()
                  if line.startswith("semcodec: error: ")]
        assert errors == lines, command
        if i + 1 < len(session) and session[i + 1][0] == "echo $?":
            assert f"{done.returncode}\n" == session[i + 1][1], command
        ran += 1
    assert ran == 2


def _subsection(title: str) -> str:
    start = README.index(f"\n### {title}\n")
    end = README.find("\n### ", start + 1)
    return README[start : end if end >= 0 else None]


@pytest.fixture
def captions(tmp_path: Path) -> list[str]:
    """The Datasets examples' inputs: ``captions.parquet`` (column ``caption``), a folder ``captions/``
    of one part (column ``text``, the CLI's default), and ``photos/`` with one image."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = ["A cat sleeping on a red sofa.", "Two dogs play in the snow.", "A red boat on a river."]
    pq.write_table(pa.table({"caption": texts}), tmp_path / "captions.parquet")
    (tmp_path / "captions").mkdir()
    pq.write_table(pa.table({"text": texts}), tmp_path / "captions" / "part-0.parquet")
    (tmp_path / "photos").mkdir()
    pytest.importorskip("PIL.Image").new("RGB", (32, 32), "red").save(tmp_path / "photos" / "a.png")
    return texts


def _ray_or_skip() -> None:
    try:
        import ray.data  # noqa: F401
    except Exception as err:  # pragma: no cover - Ray is an extra
        pytest.skip(f"Ray Data cannot be imported here ({err}); pip install 'semcodec[ray]'")


RAY_DID_NOT_START = "node timed out during startup"
"""Ray's own words when its local node cannot start in time (an overloaded machine): not the example's fault."""


def _skip_if_ray_did_not_start(stderr: str) -> None:
    if RAY_DID_NOT_START in stderr:
        pytest.skip("the local Ray cluster did not start in time on this (overloaded) machine")


@pytest.mark.slow
def test_datasets_console_runs_as_shown(model, tmp_path: Path, captions: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The table jobs of the Datasets section, on a local Ray cluster and in this process; the
    image jobs need an API key or a GPU and are left out (and only they)."""
    _ray_or_skip()
    import pyarrow.parquet as pq

    env = _shell_env(tmp_path)
    (block,) = _blocks("console", _section("Datasets: Parquet tables and image folders, here or on a Ray cluster"))
    session = _session(block)
    left_out = [command for command, _ in session if " encode " in command or " decode " in command]
    assert len(left_out) == 2
    for command, expected in session:
        if command in left_out:
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        if done.returncode:
            _skip_if_ray_did_not_start(done.stderr)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert expected == "", command  # the README shows no output: the results are checked below
    assert pq.read_table(tmp_path / "back.parquet").column("text").to_pylist() == captions
    parts = sorted((tmp_path / "packed").glob("*.parquet"))
    assert parts and pq.read_table(parts[0]).column("error").to_pylist() == [None] * len(captions)


@pytest.mark.slow
def test_datasets_python_example_runs(model, tmp_path: Path, captions: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The Datasets section's Python example, run as written, then its last table dataset
    materialised: every caption comes back. Its image dataset is only planned (Ray Data is
    lazy), so it needs no API key. The cluster gets 4 logical CPUs: the section says a chain of
    pools needs one CPU per pool plus one for the read tasks (this machine may have 2)."""
    _ray_or_skip()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": captions}), tmp_path / "captions" / "part-0.parquet")  # its column
    (block,) = _blocks("python", _section("Datasets: Parquet tables and image folders, here or on a Ray cluster"))
    script = (
        "import json, ray\n"
        "ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)\n"
        "ray.data.DataContext.get_current().enable_progress_bars = False\n"
        f"{block}"
        "print(json.dumps(sorted(row['text'] for row in texts.take_all())))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_shell_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        _skip_if_ray_did_not_start(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert json.loads(printed[-1]) == sorted(captions)


def test_limits_quoted_are_the_codes() -> None:
    """The reader limits the README quotes are the ones the code enforces (they drifted once)."""
    from semcodec.codec import DEFAULT_MAX_TOKENS, MAX_FILE_BYTES, MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES, MAX_TOKENS

    quoted = " ".join(README.split())
    assert f"more than {DEFAULT_MAX_TOKENS} tokens (`semcodec.codec.DEFAULT_MAX_TOKENS`" in quoted
    assert f"{DEFAULT_MAX_TOKENS + 1} steps (the budget, {DEFAULT_MAX_TOKENS} tokens," in quoted
    assert f"payload ≤ {MAX_PAYLOAD_BYTES} bytes" in quoted
    assert f"reads at most {MAX_FILE_BYTES} bytes of a `.sem`" in quoted
    assert f"≤ {MAX_TOKENS} text tokens" in quoted
    assert f"{MAX_TEXT_BYTES:,} UTF-8 bytes" in quoted
