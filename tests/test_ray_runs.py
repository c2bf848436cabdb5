"""Ray runs that keep secrets, fail fast and stay quiet (issue #20 items 3 and 11, issue #21 item 5).

* No credential reaches Ray's session folder (its logs, its runtime environments): an image
  job with a fake ``OPENAI_API_KEY`` and a base URL holding ``user:password`` runs against
  the local OpenAI-compatible stub, then every file Ray left is searched for the secrets
  and their base64 forms.
* A resource request the cluster cannot meet (GPUs on a machine without one, a chain of
  pools with no CPU left for reading, a fixed pool larger than the cluster) is one line,
  at once, instead of a job that waits forever.
* A command-line Ray job prints only semcodec's own lines (no ``core_worker.cc`` error, no
  token-authentication notice).

Ray's temporary folder is a fresh short folder (Unix socket paths are limited to 107 bytes).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from semcodec.data.datasets import pool_size
from semcodec.pipeline.errors import BackendUnavailableError

KEY = "sk-ray-leak-7c1d9e3f5a2b4860"
USER, PASSWORD = "carol", "pw-4d6f8a0c2e"


def secret_forms() -> list[str]:
    """The secrets and the base64 forms a log could hold them in."""
    forms = [KEY, KEY.removeprefix("sk-"), PASSWORD]
    for text in (KEY, f"{USER}:{PASSWORD}", PASSWORD):
        forms.append(base64.b64encode(text.encode()).decode().rstrip("="))
    return forms


def leaks(folder: Path) -> list[str]:
    """``file: secret`` for every secret form found in any file under ``folder`` (binary too)."""
    found = []
    needles = [s.encode() for s in secret_forms()]
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path.relative_to(folder)}: {n.decode()}" for n in needles if n in data]
    return found


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# -- sizing pools (no Ray needed) -------------------------------------------------------------


def test_pools_fit_the_cluster_or_fail_with_one_line() -> None:
    two = {"CPU": 2.0}
    assert pool_size(two, None, 1, 0) == 2  # default: one per CPU
    assert pool_size(two, None, 1, 0, upstream=(0.0, 0, True)) == 1  # a CPU left for the reads
    assert pool_size(two, 8, 1, 0) == 2  # a growing pool stops where the cluster does
    assert pool_size({"CPU": 16.0, "GPU": 2.0}, None, 1, 1) == 2
    with pytest.raises(BackendUnavailableError) as info:
        pool_size(two, None, 1, 1)
    assert str(info.value) == (
        "each Ray worker asks for 1 GPU, and the Ray cluster has no GPU (2 CPUs, 0 GPUs): "
        "drop the GPU request (--gpus) or join a cluster with GPUs"
    )
    with pytest.raises(BackendUnavailableError, match=r"^each Ray worker asks for 4 CPUs, and the Ray cluster has 2 "):
        pool_size(two, None, 4, 0)
    # The README's chain on 2 CPUs: pack's pool, then unpack's, reading Parquet.
    with pytest.raises(BackendUnavailableError) as info:
        pool_size(two, None, 1, 0, upstream=(1.0, 1, True))
    assert str(info.value) == (
        "this chain of 2 actor pools needs at least 3 CPUs (1 for each pool's first worker and 1 for the tasks "
        "that read the input), and the Ray cluster has 2: give Ray more CPUs or materialize() the dataset "
        "between the pools"
    )
    with pytest.raises(BackendUnavailableError) as info:
        pool_size(two, 3, 1, 0, fixed=True)
    assert str(info.value) == "this actor pool needs at least 3 CPUs (3 for the pool's workers), and the Ray " \
        "cluster has 2: give Ray more CPUs or ask for fewer workers"
    assert "\n" not in str(info.value)


# -- one local Ray cluster for the in-process tests ------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[Any, Path]]:
    try:
        import ray
        import ray.data
    except ImportError as err:
        pytest.skip(f"Ray Data cannot be imported here ({err}); pip install 'semcodec[ray]'")
    if ray.is_initialized():
        ray.shutdown()
    temp = Path(tempfile.mkdtemp(prefix="sr", dir="/tmp"))
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             object_store_memory=256 * 2**20, runtime_env={"env_vars": env}, _temp_dir=str(temp))
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray, temp
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The OpenAI stub, reached through a base URL that carries ``user:password``; set after
    the cluster started, so its workers can only get the settings from the job itself."""
    pytest.importorskip("openai")
    pytest.importorskip("PIL")
    from pipeline_fixtures import openai_server as srv

    for server in srv.serving(monkeypatch, KEY, retries=0):
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url.replace("http://", f"http://{USER}:{PASSWORD}@"))
        yield server


def test_an_image_job_on_ray_leaves_no_secret_in_the_session_folder(
    ray_cluster: tuple[Any, Path], stub: Any, model: Any, tmp_path: Path
) -> None:
    from pipeline_fixtures import openai_server as srv
    from semcodec.data import encode_dataset, jobs
    from semcodec.data.images import ImageOptions

    ray, temp = ray_cluster
    photos, sems = tmp_path / "photos", tmp_path / "sems"
    photos.mkdir()
    (photos / "a.png").write_bytes(png((200, 30, 30)))
    (photos / "b.png").write_bytes(png((30, 200, 30)))
    options = ImageOptions(captioner="openai", jobs=1)
    report = jobs.encode_folder(photos, sems, options, distributor="ray", workers=1, progress=False)
    assert (report.rows, report.bad_rows, report.exit_code) == (2, 0, 0)
    rows = encode_dataset(ray.data.from_items([{"image": png((9, 9, 9))}]), options=options, workers=1).take_all()
    assert rows[0]["error"] is None
    # The workers reached the stub with the driver's key (and the URL's user:password).
    calls = stub.calls(srv.CHAT)
    assert len(calls) == 3 and {c.headers["authorization"] for c in calls} == {
        "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    }
    time.sleep(1.0)  # let Ray's agents flush their logs
    assert leaks(temp) == []


def test_gpus_the_cluster_lacks_fail_at_once(ray_cluster: tuple[Any, Path], tmp_path: Path) -> None:
    from semcodec.data import decode_dataset, jobs
    from semcodec.data.images import ImageOptions

    ray, _ = ray_cluster
    sems = tmp_path / "sems"
    sems.mkdir()
    (sems / "a.sem").write_bytes(b"\x00" * 8)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"^each Ray worker asks for 1 GPU, and the Ray cluster has no GPU"):  # noqa: E501
        jobs.decode_folder(sems, tmp_path / "out", ImageOptions(generator="openai"), distributor="ray",
                           num_gpus=1, progress=False)
    with pytest.raises(BackendUnavailableError, match="no GPU"):
        decode_dataset(ray.data.from_items([{"sem": b"x"}]), num_gpus=1)
    assert time.monotonic() - t0 < 10


def test_the_readme_chain_on_two_cpus_fails_at_once(ray_cluster: tuple[Any, Path], tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from semcodec.data import pack_dataset, unpack_dataset

    ray, _ = ray_cluster
    folder = tmp_path / "captions"
    folder.mkdir()
    pq.write_table(pa.table({"caption": ["A red boat.", "Two dogs."]}), folder / "a.parquet")
    ds = ray.data.read_parquet(str(folder), override_num_blocks=2)
    t0 = time.monotonic()
    packed = pack_dataset(ds, text_column="caption", workers=2)
    with pytest.raises(BackendUnavailableError, match=r"^this chain of 2 actor pools needs at least 3 CPUs"):
        unpack_dataset(packed.drop_columns(["caption"]))
    assert time.monotonic() - t0 < 10


# -- the command line ----------------------------------------------------------------------------


def test_a_ray_encode_from_the_command_line_is_quiet_and_keeps_secrets(model: Any, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("openai")
    pytest.importorskip("PIL")
    from pipeline_fixtures import cli
    from pipeline_fixtures import openai_server as srv

    temp = Path(tempfile.mkdtemp(prefix="sc", dir="/tmp"))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(png((200, 30, 30)))
    for server in srv.running():
        url = server.base_url.replace("http://", f"http://{USER}:{PASSWORD}@")
        env = cli.clean_env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=url, RAY_TMPDIR=str(temp))
        env.pop("TMPDIR", None)
        try:
            done = cli.semcodec("encode", str(photos), "-o", str(tmp_path / "sems"), "--ray", "--workers", "1",
                                env=env)
            assert done.returncode == 0, done.stderr
            assert (tmp_path / "sems" / "a.sem").is_file()
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert lines and all(line.startswith("semcodec: ") for line in lines), done.stderr
            assert leaks(temp) == []
            assert any(temp.rglob("session_*")), os.listdir(temp)  # the session folder was searched
        finally:
            shutil.rmtree(temp, ignore_errors=True)
