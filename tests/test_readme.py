"""The README's examples are executed: its Python session as a doctest, and the console
session of "Use" (text ↔ .sem, no network) command by command, output compared exactly.

The image sections' console sessions need an API key or GPU models and are not run here
(the pipeline tests drive the same commands against a local OpenAI stub).
"""

from __future__ import annotations

import doctest
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


def test_use_console_session_runs_as_shown(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("brotli")  # `--compare` shows brotli's size
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
    (block,) = _blocks("console", _section("Use"))
    session = _session(block)
    assert len(session) == 3
    for command, expected in session:
        done = subprocess.run(
            ["bash", "-c", command + " 2>&1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert done.stdout == expected, command


def test_limits_quoted_are_the_codes() -> None:
    """The reader limits the README quotes are the ones the code enforces (they drifted once)."""
    from semcodec.codec import MAX_FILE_BYTES, MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES, MAX_TOKENS

    quoted = " ".join(README.split())
    assert f"payload ≤ {MAX_PAYLOAD_BYTES} bytes" in quoted
    assert f"reads at most {MAX_FILE_BYTES} bytes of a `.sem`" in quoted
    assert f"≤ {MAX_TOKENS} text tokens" in quoted
    assert f"{MAX_TEXT_BYTES:,} UTF-8 bytes" in quoted
