"""``semcodec bench text`` and ``benchmarks/text_rate.py`` on tiny slices of real corpora.

The real model codes every semcodec row (a handful of short texts, so a few seconds);
the general-purpose coders are checked exactly, including the disjoint dictionary split
and the notes that replace a missing optional coder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from semcodec import cli
from semcodec.bench import classic
from semcodec.bench.corpus import Corpus, dictionary_split, read_corpus

REPO = Path(__file__).resolve().parent.parent
DATA = next(
    (d for d in (REPO / "shared" / "data", REPO.parent / "shared" / "data") if (d / "coco-captions-dev.txt").is_file()),
    REPO / "shared" / "data",
)
CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs play in the snow.",
    "A red boat on a river with a city behind it.",
    "A plate of broccoli and meat on a table.",
    "A cat sleeping on a red sofa.",
    "A clock tower in front of a park.",
]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "captions.txt"
    # Blank lines and CRLF endings are not texts / not part of a text.
    path.write_bytes(("\r\n".join(CAPTIONS[:3]) + "\r\n\r\n" + "\n".join(CAPTIONS[3:]) + "\n").encode())
    return path


def test_corpus_reading_and_disjoint_split(corpus_file: Path) -> None:
    corpus = read_corpus(corpus_file)
    assert corpus.texts == CAPTIONS
    for n in (1, 3, 5, 6):
        split = dictionary_split(corpus, n)
        covered = sorted(i for fold in split.folds for i in fold.measured)
        assert covered == list(range(n))
        for fold in split.folds:
            measured = {corpus.texts[i] for i in fold.measured}
            assert fold.training and not measured & set(fold.training)


def test_classic_coders_are_exact_and_missing_ones_are_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = Corpus(Path("c.txt"), CAPTIONS * 40)  # enough text to train a dictionary
    split = dictionary_split(corpus, 4)
    result = classic.classic_sizes(CAPTIONS[:4], split, dict_size=4096)
    sizes = {c.name: c.sizes for c in result.coders}
    assert sizes["UTF-8"] == [len(t.encode()) for t in CAPTIONS[:4]]
    assert sizes["zlib -9"] == [len(zlib.compress(t.encode(), 9)) for t in CAPTIONS[:4]]
    pytest.importorskip("zstandard")
    assert "zstd -19 +dict" in sizes and "texts 5-240" in (result.coders[3].note or "")

    real = classic._optional
    monkeypatch.setattr(classic, "_optional", lambda m: None if m == "brotli" else real(m))
    result = classic.classic_sizes(CAPTIONS[:4], split)
    assert classic.BROTLI not in [c.name for c in result.coders]
    assert any("brotli skipped" in n and "semcodec[bench]" in n for n in result.notes)


def test_bench_text_table(corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Profile 1 is covered (with unpacking) by the JSON test; here the two chat profiles, no unpacking.
    code = cli.main(["bench", "text", str(corpus_file), "--limit", "2", "--models", "0,2", "--unpack-limit", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "captions.txt: 2 texts" in out
    for row in ("UTF-8", "zlib -9", "semcodec 0 (describe)", "semcodec 2 (detailed)"):
        assert row in out
    assert "limit B" in out and "unpack tok/s" in out


def test_bench_text_json_matches_real_files(corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import semcodec

    code = cli.main(
        ["bench", "text", str(corpus_file), "--limit", "2", "--models", "1", "--unpack-limit", "1", "--json"]
    )
    assert code == 0
    (bench,) = json.loads(capsys.readouterr().out)["corpora"]
    rows = {r["coder"]: r for r in bench["rows"]}
    sem = rows["semcodec 1 (plain)"]
    real = [len(semcodec.pack(t, model_id=1)) for t in CAPTIONS[:2]]
    assert sem["bytes_per_text"] == pytest.approx(sum(real) / 2)
    floor = sum(semcodec.information_bits(t, 1) for t in CAPTIONS[:2]) / 2 / 8
    assert sem["limit_bytes"] == pytest.approx(floor)
    assert sem["gap_bytes"] == pytest.approx(sem["bytes_per_text"] - floor)
    assert 0 <= sem["gap_bytes"] - sem["header_bytes"] < 2  # the coder is within a byte or two of its floor
    assert sem["pack_tokens_per_s"] > 0 and sem["unpack_tokens_per_s"] > 0
    if classic.BROTLI in rows:
        assert sem["ratio_to_brotli"] == pytest.approx(sem["bytes_per_text"] / rows[classic.BROTLI]["bytes_per_text"])
    assert bench["texts"] == 2 and bench["characters"] == sum(len(t) for t in CAPTIONS[:2])


@pytest.mark.skipif(not DATA.is_dir(), reason="shared/data (the development corpora) is not on this machine")
def test_text_rate_script_on_shared_data() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "text_rate.py"),
            str(DATA / "coco-captions-dev.txt"),
            str(DATA / "coco-paragraphs-dev.txt"),
            "--limit",
            "2",
            "--unpack-limit",
            "0",
            "--models",
            "1",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "coco-captions-dev.txt: 2 texts" in out.stdout and "coco-paragraphs-dev.txt: 2 texts" in out.stdout
    assert re.search(r"trained on texts 3-\d+ of the same file, none of them measured", out.stdout)
    assert "semcodec 1 (plain)" in out.stdout


def test_bench_text_bad_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert cli.main(["bench", "text", str(empty)]) == 1
    assert "no texts" in capsys.readouterr().err
