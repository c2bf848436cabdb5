"""semcodec.data: tables and image folders, locally and on a local Ray cluster.

The Ray tests share one local cluster (2 CPUs, started once for this module) and run the
real coder on real captions from ``shared/data``; image tests use the real ``openai``
backend against the scripted local server (``pipeline_fixtures``), reached by the Ray
workers through the environment ``encode_dataset`` ships to them. Without Ray the Ray
tests skip with the reason; the local-distributor tests need only pyarrow.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'semcodec[ray]')")
pq = pytest.importorskip("pyarrow.parquet")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_fixtures import cli  # noqa: E402
from semcodec.data import jobs  # noqa: E402
from semcodec.data.images import ImageOptions  # noqa: E402
from semcodec.errors import SemInputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = next(
    (d / "coco-captions-dev.txt" for d in (REPO / "shared" / "data", REPO.parent / "shared" / "data")
     if (d / "coco-captions-dev.txt").is_file()),
    REPO / "shared" / "data" / "coco-captions-dev.txt",
)
KEY = "sk-data-test-abcdef0123456789"


def captions(n: int, start: int = 0) -> list[str]:
    if not CAPTIONS.is_file():
        pytest.skip(f"{CAPTIONS} not present (the development corpora live in ../shared)")
    lines = CAPTIONS.read_text(encoding="utf-8").splitlines()
    return lines[start : start + n]


def write_table(path: Path, texts: list[str | None], row_group_size: int = 5) -> Path:
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    try:
        import ray
        import ray.data
    except ImportError as err:
        pytest.skip(f"Ray Data cannot be imported here ({err}); pip install 'semcodec[ray]'")
    if ray.is_initialized():
        ray.shutdown()
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             object_store_memory=256 * 2**20, runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from pipeline_fixtures import openai_server as srv

    pytest.importorskip("openai")
    yield from srv.serving(monkeypatch, KEY, retries=0)


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# -- local distributor (pyarrow only) ----------------------------------------------------


def test_table_job_resumes_and_refuses_another_jobs_parts(tmp_path: Path, model: Any) -> None:
    texts: list[str | None] = [*captions(5, 100), None]
    source = write_table(tmp_path / "in.parquet", texts, row_group_size=4)
    out = tmp_path / "out"  # a folder: the parts are the output
    first = jobs.pack_table(source, out, rows_per_part=2, progress=False)
    names = sorted(p.name for p in out.glob("part-*.parquet"))
    assert names == ["part-00000-000000000000.parquet", "part-00000-000000000002.parquet",
                     "part-00000-000000000004.parquet"]
    assert (first.rows, first.bad_rows, first.skipped_parts, first.exit_code) == (6, 1, 0, 4)
    table = pq.read_table(out)
    assert table["id"].to_pylist() == list(range(6)) and table["text"].to_pylist() == texts
    assert table["error"].to_pylist() == [None] * 5 + ["no text (null)"]

    # A job that died after two parts: the re-run writes only the missing one.
    (out / names[1]).unlink()
    kept = {n: (out / n).stat().st_mtime_ns for n in (names[0], names[2])}
    again = jobs.pack_table(source, out, rows_per_part=2, progress=False)
    assert (again.skipped_parts, again.parts, again.rows) == (2, 3, 6)
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert pq.read_table(out).equals(table)

    # The same place, other options: refused instead of mixing two jobs' parts.
    with pytest.raises(SemInputError, match="different job"):
        jobs.pack_table(source, out, rows_per_part=3, progress=False)


def test_cli_table_round_trip_without_ray(tmp_path: Path) -> None:
    """``pack``/``unpack`` of Parquet need no Ray; ``--ray`` without Ray is one line and exit 3."""
    texts = captions(3, 200)
    source = write_table(tmp_path / "in.parquet", texts)
    (tmp_path / "noray").mkdir()
    (tmp_path / "noray" / "ray.py").write_text("raise ImportError('No module named ray')\n")
    env = cli.clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "noray"), env["PYTHONPATH"]])
    home = os.environ.get("SEMCODEC_CACHE_DIR")
    if home:
        env["SEMCODEC_CACHE_DIR"] = home
    packed, back = tmp_path / "packed.parquet", tmp_path / "back.parquet"

    refused = cli.semcodec("pack", str(source), "-o", str(packed), "--ray", env=env)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "semcodec: error: the Ray distributor needs Ray Data (No module named ray): pip install 'semcodec[ray]'"
    ]
    assert not packed.exists()

    done = cli.semcodec("pack", str(source), "-o", str(packed), "-q", env=env)
    if done.returncode == 3:
        pytest.skip(f"the model is unavailable: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert pq.read_table(packed).column_names == ["id", "text", "sem", "error"]
    assert not Path(f"{packed}.parts").exists()  # staging removed once joined
    pq.write_table(pq.read_table(packed).drop_columns(["text"]), tmp_path / "sem-only.parquet")
    done = cli.semcodec("unpack", str(tmp_path / "sem-only.parquet"), "-o", str(back), env=env)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(back)["text"].to_pylist() == texts
    assert "3 rows in 1 part(s)" in done.stderr

    again = cli.semcodec("unpack", str(tmp_path / "sem-only.parquet"), "-o", str(back), env=env)
    assert again.returncode == 1 and "already exists (use -f to overwrite)" in again.stderr


def test_cli_encode_decode_folders_locally(stub: Any, model: Any, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from semcodec.cli import main

    photos, sems, images = tmp_path / "photos", tmp_path / "sems", tmp_path / "images"
    photos.mkdir()
    (photos / "a.png").write_bytes(png((200, 30, 30)))
    (photos / "junk.png").write_bytes(b"junk")
    assert main(["encode", str(photos), "-o", str(sems), "--distributor", "local", "--captioner", "openai", "-q"]) == 4
    assert sorted(p.name for p in sems.iterdir()) == ["a.sem", "semcodec-errors.jsonl"]
    assert "junk.png" in (sems / "semcodec-errors.jsonl").read_text()
    # Re-run: the finished output is skipped (no request); only the broken image is tried again.
    calls, written = len(stub.requests), (sems / "a.sem").stat().st_mtime_ns
    assert main(["encode", str(photos), "-o", str(sems), "--distributor", "local", "--captioner", "openai", "-q"]) == 4
    assert len(stub.requests) == calls and (sems / "a.sem").stat().st_mtime_ns == written
    assert main(["decode", str(sems), "-o", str(images), "-q"]) == 0  # a folder: a dataset job
    assert [p.name for p in images.iterdir()] == ["a.png"]
    assert (images / "a.png").read_bytes().startswith(b"\x89PNG")


# -- Ray ---------------------------------------------------------------------------------


def test_pack_unpack_dataset_round_trip_is_bit_exact(ray_cluster: Any, model: Any) -> None:
    import semcodec
    from semcodec.data import pack_dataset, unpack_dataset

    n = 12
    texts = captions(n, 300)
    source = pa.table({"n": list(range(n)), "caption": texts})
    # Ray Data spreads blocks over the actors: four blocks for two workers.
    ds = ray_cluster.data.from_arrow([source.slice(i, 3) for i in range(0, n, 3)])
    packed = pack_dataset(ds, text_column="caption", workers=2, batch_size=3).to_arrow_refs()
    table = pa.concat_tables(ray_cluster.get(packed))
    assert table.column_names == ["n", "caption", "sem", "error"]
    assert table["n"].to_pylist() == list(range(n))  # order kept
    assert table["error"].null_count == n
    sems = table["sem"].to_pylist()
    assert sems[:2] == [semcodec.pack(t) for t in texts[:2]]  # the same bytes as in-process

    # Corrupt one file and null another: they get their messages, the others decode.
    sems[5] = sems[5][:1] + bytes([sems[5][1] ^ 0x01]) + sems[5][2:] + b"\x00\x00\x00"
    sems[9] = None
    sem_only = pa.table({"n": table["n"], "sem": pa.array(sems, pa.binary())})
    blocks = [sem_only.slice(i, 6) for i in range(0, n, 6)]
    # In memory and collected here: a fixed pool is safe (both actors start at once).
    back_ds = unpack_dataset(ray_cluster.data.from_arrow(blocks), workers=2, batch_size=6, fixed_pool=True)
    back = pa.concat_tables(ray_cluster.get(back_ds.to_arrow_refs()))
    assert back.column_names == ["n", "sem", "text", "error"] and back["n"].to_pylist() == list(range(n))
    errors = back["error"].to_pylist()
    assert errors[9] == "no .sem data (null)"
    assert errors[5] is not None and len(errors[5]) > 5
    good = [i for i in range(n) if i not in (5, 9)]
    assert [back["text"][i].as_py() for i in good] == [texts[i] for i in good]
    assert [errors[i] for i in good] == [None] * len(good)


def test_actor_pools_grow_unless_fixed_and_never_outnumber_the_blocks(ray_cluster: Any) -> None:
    from semcodec.data.datasets import actor_pool_args

    def sizes(args: dict[str, Any]) -> tuple[int, float, float]:
        pool = args["compute"]
        return pool.min_size, pool.max_size, args["num_cpus"]

    assert sizes(actor_pool_args(None, 1, 0)) == (1, 2, 1)  # one per cluster CPU, growing from one
    assert sizes(actor_pool_args(None, 1, 0, fixed=True)) == (2, 2, 1)
    assert sizes(actor_pool_args(4, 1, 0, fixed=True, blocks=2)) == (2, 2, 1)
    assert sizes(actor_pool_args(2, 1, 0, blocks=0)) == (1, 1, 1)
    assert sizes(actor_pool_args(8, 1, 0)) == (1, 2, 1)  # a growing pool stops where the cluster does
    assert "num_gpus" not in actor_pool_args(2, 1, 0)
    # What the 2-CPU, GPU-less cluster cannot run is refused (Ray would wait forever; see test_ray_runs).
    from semcodec.pipeline.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="needs at least 3 CPUs"):
        actor_pool_args(4, 1, 0, fixed=True, blocks=3)
    with pytest.raises(BackendUnavailableError, match="no GPU"):
        actor_pool_args(2, 1, 0.5)


def test_table_job_on_ray_resumes(ray_cluster: Any, model: Any, tmp_path: Path) -> None:
    import semcodec

    texts = captions(6, 400)
    source = write_table(tmp_path / "in.parquet", texts, row_group_size=4)
    out = tmp_path / "packed"
    report = jobs.pack_table(source, out, rows_per_part=2, distributor="ray", workers=2, progress=False)
    assert (report.rows, report.bad_rows, report.parts, report.exit_code) == (6, 0, 3, 0)
    table = pq.read_table(out)
    assert table["text"].to_pylist() == texts and table["sem"].to_pylist() == [semcodec.pack(t) for t in texts]

    missing = sorted(out.glob("part-*.parquet"))[1]
    missing.unlink()
    again = jobs.pack_table(source, out, rows_per_part=2, distributor="ray", workers=1, progress=False)
    assert (again.skipped_parts, again.rows) == (2, 6) and missing.exists()
    assert pq.read_table(out).equals(table)


def test_encode_decode_folders_on_ray(ray_cluster: Any, stub: Any, model: Any, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    photos, sems, images = tmp_path / "photos", tmp_path / "sems", tmp_path / "images"
    photos.mkdir()
    (photos / "a.png").write_bytes(png((200, 30, 30)))
    (photos / "b.png").write_bytes(png((30, 200, 30), (64, 64)))
    (photos / "broken.jpg").write_bytes(b"not an image at all")
    options = ImageOptions(captioner="openai", jobs=2)

    report = jobs.encode_folder(photos, sems, options, distributor="ray", workers=1, progress=False)
    assert (report.rows, report.bad_rows, report.exit_code) == (3, 1, 4)
    assert sorted(p.name for p in sems.iterdir()) == ["a.sem", "b.sem", "semcodec-errors.jsonl"]
    failed = [json.loads(line) for line in (sems / "semcodec-errors.jsonl").read_text().splitlines()]
    message = "broken.jpg: not a readable image (UnidentifiedImageError)"
    assert failed == [{"input": str(photos / "broken.jpg"), "error": message}]
    import semcodec

    decoded = semcodec.unpack((sems / "a.sem").read_bytes())
    assert decoded.text == "A small red cat sits on a green lawn under a blue sky."
    assert (decoded.header.width, decoded.header.height) == (48, 32)  # the source photo's own size

    report = jobs.decode_folder(sems, images, options, distributor="ray", workers=1, progress=False)
    assert (report.rows, report.bad_rows, report.exit_code) == (2, 0, 0)
    from PIL import Image

    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png"]
    assert Image.open(images / "a.png").size[0] > 0


def test_encode_decode_dataset(ray_cluster: Any, stub: Any, model: Any) -> None:
    pytest.importorskip("PIL")
    from semcodec.data import decode_dataset, encode_dataset

    rows = [{"key": "red", "image": png((200, 30, 30))}, {"key": "bad", "image": b"\x89PNG junk"}]
    options = ImageOptions(captioner="openai", generator="openai", jobs=2)
    encoded = encode_dataset(ray_cluster.data.from_items(rows), options=options, workers=1).materialize()
    red, bad = encoded.take_all()
    assert red["error"] is None and red["text"] == "A small red cat sits on a green lawn under a blue sky."
    assert bad["sem"] is None and bad["error"] == "image: not a readable image (UnidentifiedImageError)"

    ds = decode_dataset(encoded.drop_columns(["text", "error"]), options=options, image_column="repainted", workers=1)
    out = pa.concat_tables(ray_cluster.get(ds.to_arrow_refs()))
    assert out.column_names == ["key", "image", "sem", "repainted", "text", "error"]
    red, bad = out.to_pylist()
    assert red["key"] == "red" and red["error"] is None
    assert red["text"] == "A small red cat sits on a green lawn under a blue sky."
    assert red["repainted"].startswith(b"\x89PNG")
    assert bad["sem"] is None and bad["repainted"] is None and bad["error"] == "no .sem data (null)"
