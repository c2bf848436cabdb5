"""Small helpers shared by several test modules (not a test module itself).

Test modules reach it as the pipeline tests reach ``pipeline_fixtures``: with this folder on
``sys.path`` (``--import-mode=importlib`` does not put it there)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import testkit
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

BACKEND_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEMCODEC_CAPTIONER", "SEMCODEC_GENERATOR", "SEMCODEC_DEBUG")
"""Settings of the developer's own that would pick or reach a backend, or change what errors print."""


def last_data_byte(npz: Path, member: str) -> int:
    """File offset of the last byte of ``member``'s stored data (npz files are uncompressed zips)."""
    with zipfile.ZipFile(npz) as archive:
        info = archive.getinfo(member)
    local = npz.read_bytes()[info.header_offset : info.header_offset + 30]
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len + info.compress_size - 1


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``semcodec.cli.main(argv)`` in-process: its exit code, stdout and stderr."""
    from semcodec import cli

    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The one ``semcodec: error: ...`` line ``err`` must be (no traceback)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("semcodec: error: ") and "Traceback" not in err, err
    return lines[0]


def clean_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working folder, with none of :data:`BACKEND_ENV` set (for a ``workdir`` fixture)."""
    monkeypatch.chdir(tmp_path)
    for name in BACKEND_ENV:
        monkeypatch.delenv(name, raising=False)
    return tmp_path
