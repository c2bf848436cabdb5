"""Parquet table jobs as careful as single files (issue #20): inputs are never removed or
replaced, joins never write through a planted symlink, the token budget reaches every
row, oversized cells are refused before they are read, one-row row groups cost linear
time, a missing column is one message naming the input, and two jobs on one output never
race.

Everything runs on the ``local`` distributor (the same :class:`~semcodec.data.jobs.PartWorker`
a Ray actor runs) on small tables written here; symlinks and victims live in ``tmp_path``.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'semcodec[ray]')")
pq = pytest.importorskip("pyarrow.parquet")

from semcodec.cli import main  # noqa: E402
from semcodec.data import jobs  # noqa: E402
from semcodec.errors import SemInputError  # noqa: E402
from semcodec.fileio import OutputExistsError  # noqa: E402

TEXTS = ["A red boat on a river.", None, "Two dogs run on a beach."]
POOLS: list[Any] = []  # memory pools a test measured with: kept, as buffers they allocated may outlive the test


def table_file(path: Path, texts: list[str | None] = TEXTS, column: str = "text", **write: Any) -> Path:
    pq.write_table(pa.table({"id": list(range(len(texts))), column: pa.array(texts, pa.string())}), path, **write)
    return path


def sem_file(path: Path, sems: list[bytes | None]) -> Path:
    pq.write_table(pa.table({"id": list(range(len(sems))), "sem": pa.array(sems, pa.binary())}), path)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 1. inputs are never removed or replaced ---------------------------------------------


def test_pack_onto_its_own_input_is_refused_and_the_input_kept(tmp_path: Path, capsys: Any) -> None:
    source = table_file(tmp_path / "in.parquet")
    before = source.read_bytes()
    assert main(["pack", str(source), "-o", str(source), "-f"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"semcodec: error: {source} is the input {source}: refusing to overwrite it"
    assert source.read_bytes() == before
    # the same file through a symlink is the same input
    link = tmp_path / "link.parquet"
    link.symlink_to(source)
    with pytest.raises(SemInputError, match="is the input"):
        jobs.pack_table(source, link, force=True, progress=False)
    assert source.read_bytes() == before and link.is_symlink()
    assert listing(tmp_path) == ["in.parquet", "link.parquet"]


def test_unpack_into_the_folder_of_its_input_parts_keeps_them(tmp_path: Path, capsys: Any) -> None:
    """``pack in.parquet -o packed/`` then ``unpack packed -o packed -f`` used to delete the parts first."""
    packed = tmp_path / "packed"
    packed.mkdir()
    parts = [sem_file(packed / f"part-00000-00000000000{i}.parquet", [b"\x00\x01"]) for i in range(2)]
    (packed / jobs.MANIFEST).write_text("{}\n")
    kept = {p: p.read_bytes() for p in parts}
    assert main(["unpack", str(packed), "-o", str(packed), "-f"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"semcodec: error: {packed} is the input {packed}: refusing to overwrite it", err
    assert {p: p.read_bytes() for p in parts} == kept and (packed / jobs.MANIFEST).exists()

    # A parts folder that merely holds an input is refused too, and so is -o OUT.parquet whose
    # staging folder OUT.parquet.parts holds the input.
    staged = tmp_path / "x.parquet.parts"
    staged.mkdir()
    inside = sem_file(staged / "part-00000-000000000000.parquet", [b"\x00"])
    with pytest.raises(SemInputError, match="holds the input"):
        jobs.unpack_table(inside, tmp_path / "x.parquet", force=True, progress=False)
    assert inside.exists()


def test_force_never_clears_a_part_that_is_a_hard_link_to_an_input(tmp_path: Path) -> None:
    source = sem_file(tmp_path / "in.parquet", [b"\x00"])
    out = tmp_path / "out"
    out.mkdir()
    os.link(source, out / "part-00000-000000000000.parquet")
    with pytest.raises(SemInputError, match="is the input"):
        jobs.unpack_table(source, out, force=True, progress=False)
    assert source.exists() and (out / "part-00000-000000000000.parquet").exists()


# -- 2. the join: unpredictable O_EXCL temp files, never through a symlink ------------------


def test_join_never_writes_through_a_planted_symlink(tmp_path: Path, model: Any) -> None:
    source = table_file(tmp_path / "in.parquet", [None, None])
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n")
    out = tmp_path / "sym.parquet"
    (tmp_path / ".sym.parquet.joining").symlink_to(victim)  # the old fixed temp name
    report = jobs.pack_table(source, out, progress=False)
    assert report.rows == 2 and report.bad_rows == 2
    assert victim.read_text() == "keep me\n"
    assert out.is_file() and not out.is_symlink()
    assert pq.read_table(out)["error"].to_pylist() == ["no text (null)"] * 2
    assert listing(tmp_path) == [".sym.parquet.joining", "in.parquet", "sym.parquet", "victim.conf"]

    # The parts folder of -o OUT.parquet is the job's own: a symlink planted there is refused.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "two.parquet.parts").symlink_to(elsewhere)
    with pytest.raises(SemInputError, match="not a folder"):
        jobs.pack_table(source, tmp_path / "two.parquet", progress=False)
    assert listing(elsewhere) == [] and not (tmp_path / "two.parquet").exists()


def test_join_replaces_the_output_only_at_the_end(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With -f an old output stays whole until the new one is complete (it used to be deleted first)."""
    source = table_file(tmp_path / "in.parquet", [None])
    out = tmp_path / "out.parquet"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        jobs.pack_table(source, out, progress=False)

    def full_disk(table: Any, path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as patch:
        patch.setattr(jobs, "write_parquet_atomic", full_disk)
        assert jobs.pack_table(source, out, force=True, progress=False).failures
    assert out.read_bytes() == b"old"
    jobs.pack_table(source, out, force=True, progress=False)
    assert pq.read_table(out).num_rows == 1
    assert listing(tmp_path) == ["in.parquet", "out.parquet"]


# -- 4. the token budget ------------------------------------------------------------------


def test_unpack_jobs_honour_max_tokens(tmp_path: Path, model: Any, capsys: Any) -> None:
    import semcodec

    text = "A small red boat with a white sail floats on a calm blue lake under a clear sky."
    source = sem_file(tmp_path / "in.parquet", [semcodec.pack(text), semcodec.pack("A cat.")])
    report = jobs.unpack_table(source, tmp_path / "five.parquet", max_tokens=5, progress=False)
    assert (report.rows, report.bad_rows) == (2, 1)
    back = pq.read_table(tmp_path / "five.parquet")
    assert back["text"].to_pylist() == [None, "A cat."]
    assert "within 5 tokens" in back["error"][0].as_py()

    assert main(["unpack", str(source), "-o", str(tmp_path / "cli.parquet"), "--max-tokens", "5", "-q"]) == 4
    assert "within 5 tokens" in pq.read_table(tmp_path / "cli.parquet")["error"][0].as_py()
    assert main(["unpack", str(source), "-o", str(tmp_path / "all.parquet"), "--max-tokens", "2048", "-q"]) == 0
    assert pq.read_table(tmp_path / "all.parquet")["text"].to_pylist() == [text, "A cat."]
    capsys.readouterr()


# -- 6. per-row byte limits before a value is read; linear time -----------------------------


def test_oversized_cells_are_refused_before_they_are_read(tmp_path: Path, model: Any) -> None:
    """4 x 40 MB strings in a 7 KB file: no row group of them is decompressed (Arrow's pool
    peaks far below one of them); each gets its message, the good row is packed."""
    big = 40 * 2**20
    source = tmp_path / "bomb.parquet"
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(source, schema, compression="zstd") as writer:
        for i in range(4):
            writer.write_table(pa.table({"id": [i], "text": pa.array(["a" * big])}, schema=schema))
        writer.write_table(pa.table({"id": [4], "text": ["A red boat."]}, schema=schema))
    assert source.stat().st_size < 64 * 1024
    home = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(home)
    POOLS.append(pool)
    pa.set_memory_pool(pool)
    try:
        report = jobs.pack_table(source, tmp_path / "out.parquet", progress=False)
    finally:
        pa.set_memory_pool(home)
    assert pool.max_memory() < 4 * 2**20, pool.max_memory()
    assert (report.rows, report.bad_rows) == (5, 4)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out["id"].to_pylist() == [0, 1, 2, 3, 4] and out["sem"][4].as_py()
    errors = out["error"].to_pylist()
    assert errors[4] is None
    assert all(e.startswith("not read: row group ") and "more than the 165888-byte limit" in e for e in errors[:4])


def test_a_value_many_rows_repeat_is_never_expanded(tmp_path: Path, model: Any) -> None:
    """One 1 MB string, dictionary-encoded for 200 rows: the footer's sizes are small (the
    dictionary holds it once), and the rows are refused without 200 copies being made."""
    n, big = 200, 2**20
    column = pa.DictionaryArray.from_arrays(pa.array([0] * (n - 1) + [1], pa.int32()), pa.array(["a" * big, "A cat."]))
    source = tmp_path / "dict.parquet"
    pq.write_table(pa.table({"text": column}), source, store_schema=False, dictionary_pagesize_limit=64 * 2**20)
    assert pq.ParquetFile(source).schema_arrow.field("text").type == pa.string()  # read as plain text by default
    home = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(home)
    POOLS.append(pool)
    pa.set_memory_pool(pool)
    try:
        report = jobs.pack_table(source, tmp_path / "out", rows_per_part=100, progress=False)
    finally:
        pa.set_memory_pool(home)
    assert pool.max_memory() < 8 * 2**20, pool.max_memory()
    assert (report.rows, report.bad_rows) == (n, n - 1)
    out = pq.read_table(tmp_path / "out")
    assert out["text"].type == pa.string() and out["text"].to_pylist() == [None] * (n - 1) + ["A cat."]
    assert out["error"][0].as_py().startswith(f"text is longer than 165888 UTF-8 bytes ({big})")
    assert out["sem"][n - 1].as_py() == __import__("semcodec").pack("A cat.")


def test_cells_over_the_limit_never_become_python_strings(model: Any) -> None:
    """The coders check lengths in Arrow first (Ray Data hands them Arrow batches)."""
    from semcodec.data import TextPacker, TextUnpacker

    long_text = "b" * 200_000
    packed = TextPacker()(pa.table({"text": [long_text, "A cat."]}))
    assert packed["error"][0].as_py().startswith("text is longer than 165888 UTF-8 bytes (200000)")
    assert packed["text"].to_pylist() == [None, "A cat."]  # not copied either
    back = TextUnpacker()(pa.table({"sem": pa.array([b"\x00" * 10_000, packed["sem"][1].as_py()])}))
    assert back["error"][0].as_py().startswith(".sem data is larger than the ")
    assert back["text"].to_pylist() == [None, "A cat."]


def test_one_row_row_groups_cost_linear_time(tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 one-row groups in 30 parts: the footer is parsed once per reader, not once per part."""
    n = 3000
    source = table_file(tmp_path / "groups.parquet", [None] * n, row_group_size=1)
    assert pq.ParquetFile(source).metadata.num_row_groups == n
    opened: list[str] = []
    real = pq.ParquetFile

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, source: Any, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("metadata") is None:  # a footer parse
                opened.append(str(source))
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", Counting)
    report = jobs.pack_table(source, tmp_path / "out", rows_per_part=100, progress=False)
    assert (report.rows, report.bad_rows, report.parts) == (n, n, 30)
    assert opened.count(str(source)) <= 2, len(opened)  # the up-front check, and the worker's reader
    assert pq.read_table(tmp_path / "out")["id"].to_pylist() == list(range(n))


def test_reader_continues_across_parts_and_restarts_anywhere(tmp_path: Path) -> None:
    from semcodec.data.tables import TableReader

    texts = [f"row {i}" for i in range(50)]
    source = str(table_file(tmp_path / "t.parquet", texts, row_group_size=7))
    reader = TableReader("text", "pack")
    got = [t for lo in range(0, 50, 6) for t in reader.read(source, lo, min(50, lo + 6))[0]["text"].to_pylist()]
    assert got == texts
    for lo, hi in [(40, 45), (3, 30), (0, 1), (49, 50), (13, 14)]:  # out of order, as Ray workers read
        assert reader.read(source, lo, hi)[0]["text"].to_pylist() == texts[lo:hi]


# -- 12. a missing column, a marker only where parts are, two jobs on one output --------------


def test_a_missing_column_names_the_input_and_leaves_nothing(tmp_path: Path, model: Any, capsys: Any) -> None:
    source = table_file(tmp_path / "in.parquet", column="caption")
    out = tmp_path / "out"
    assert main(["pack", str(source), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"semcodec: error: {source}: no column 'text' (columns: id, caption)"]
    assert not out.exists() and listing(tmp_path) == ["in.parquet"]
    with pytest.raises(SemInputError, match=r"in\.parquet: column 'id' holds int64, not text \(string\)"):
        jobs.pack_table(source, out, column="id", progress=False)
    assert not out.exists()
    # nothing was written, so nothing is locked: the corrected command runs
    assert main(["pack", str(source), "-o", str(out), "--column", "caption", "-q"]) == 4  # one null row
    assert pq.read_table(out)["caption"].to_pylist() == TEXTS


def test_no_job_marker_is_left_when_no_part_was_written(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = table_file(tmp_path / "in.parquet", [None] * 4)
    out = tmp_path / "out"
    out.mkdir()

    def full_disk(table: Any, path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(jobs, "write_parquet_atomic", full_disk)
    report = jobs.pack_table(source, out, rows_per_part=2, progress=False)
    assert len(report.failures) == 2 and report.exit_code == 4
    assert report.failures[0].startswith(f"{source} (rows 0..1): ")
    assert listing(out) == []  # the folder was there before: it stays, empty
    report = jobs.pack_table(source, tmp_path / "joined.parquet", progress=False)
    assert report.failures and listing(tmp_path) == ["in.parquet", "out"]
    monkeypatch.undo()
    # other options, same place: not "parts of a different job"
    assert jobs.pack_table(source, out, rows_per_part=3, progress=False).parts == 2


def test_a_second_job_on_a_busy_output_fails_with_one_line(tmp_path: Path, model: Any, capsys: Any) -> None:
    import fcntl

    source = table_file(tmp_path / "in.parquet", [None])
    out = tmp_path / "out.parquet"
    staging = tmp_path / "out.parquet.parts"
    staging.mkdir()
    fd = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another job holds it
        assert main(["pack", str(source), "-o", str(out), "-q"]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            f"semcodec: error: {out} is being written by another semcodec job; wait for it to finish"
        ]
        assert listing(staging) == [] and not out.exists()
    finally:
        os.close(fd)
    assert main(["pack", str(source), "-o", str(out), "-q"]) == 4
    assert not staging.exists()


def test_concurrent_identical_jobs_succeed_or_fail_cleanly(tmp_path: Path, model: Any) -> None:
    source = table_file(tmp_path / "in.parquet", [None] * 40)
    out = tmp_path / "out.parquet"
    outcomes: list[Any] = []

    def job() -> None:
        try:
            outcomes.append(jobs.pack_table(source, out, rows_per_part=2, progress=False).rows)
        except Exception as err:
            outcomes.append(err)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 40 in outcomes, outcomes
    for outcome in outcomes:
        assert outcome == 40 or isinstance(outcome, (SemInputError, OutputExistsError)), repr(outcome)
        if isinstance(outcome, SemInputError):
            assert "another semcodec job" in str(outcome)
    assert pq.read_table(out)["id"].to_pylist() == list(range(40))
    assert listing(tmp_path) == ["in.parquet", "out.parquet"]


def test_decode_jobs_honour_max_tokens(tmp_path: Path, model: Any) -> None:
    import semcodec
    from semcodec.data.images import ImageOptions

    sems = tmp_path / "sems"
    sems.mkdir()
    (sems / "long.sem").write_bytes(semcodec.pack("A small red boat with a white sail floats on a calm blue lake."))
    report = jobs.decode_folder(sems, tmp_path / "images", ImageOptions(max_tokens=5), progress=False)
    assert (report.rows, report.bad_rows) == (1, 1)
    assert "within 5 tokens" in (tmp_path / "images" / jobs.ERRORS_SIDECAR).read_text()
    assert listing(tmp_path / "images") == [jobs.ERRORS_SIDECAR]


def test_a_large_dictionary_group_is_probed_once_and_read_plain(tmp_path: Path) -> None:
    """A group of 5,000 distinct captions (a dictionary page over the per-row limit): its
    dictionary is decoded once to find its longest value, then the rows stream as plain text."""
    from semcodec.data.tables import TableReader

    texts = [f"caption {i}: a dog runs on a sunny beach by the sea" for i in range(5000)]
    source = str(table_file(tmp_path / "big.parquet", texts))
    chunk = pq.ParquetFile(source).metadata.row_group(0).column(1)
    assert chunk.has_dictionary_page and chunk.total_uncompressed_size > 165888
    reader = TableReader("text", "pack")
    got = [t for lo in range(0, 5000, 1000) for t in reader.read(source, lo, lo + 1000)[0]["text"].to_pylist()]
    assert got == texts
    assert reader._file is not None and reader._file.repeated == {0: max(len(t) for t in texts)}
    assert reader._file.dictionary_pf is not None  # opened once for the probe
