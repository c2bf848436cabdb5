"""The native weight products (:mod:`semcodec.models._products`, ``native/products.c``) give the
exact integers on every code path this CPU runs, at the format's bounds, with any thread
count; their entry points refuse what lies outside their proof instead of reading out of bounds.

Each path is compared with numpy's int64 products: worst cases for int16 pair sums and int32
accumulation (|x| = |w| = 127 of one sign over K = 1536, and the widest K the kernel accepts
is checked by its bound), shapes with column and inner-dimension tails (N not a multiple of 32,
K not a multiple of 4 or 16), 1 to 9 rows, and the real model: decode steps through the native
kernel give the pinned tables.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcodec.errors import SemModelError
from semcodec.models.kernels import (
    NATIVE_PATHS,
    NativeProducts,
    NumpyProducts,
    QMatrix,
    default_threads,
    native_products_module,
    panel_layout,
    products_from_name,
)

NATIVE = native_products_module()
pytestmark = pytest.mark.skipif(NATIVE is None, reason="semcodec.models._products is not built (no C compiler)")
PATHS = list(NATIVE.vector_paths()) if NATIVE is not None else []  # every code path this CPU runs


def _exact(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x.astype(np.int64) @ w.astype(np.int64)


def _run(x: np.ndarray, w: np.ndarray, path: str) -> np.ndarray:
    out = np.full((len(x), w.shape[1]), -1, np.int32)
    NATIVE.matmul(np.ascontiguousarray(x), panel_layout(w), w.sum(axis=0, dtype=np.int32), out, path)
    return out


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_worst_case_sums_are_exact(path: str, threads: int) -> None:
    """Every product +-127 * 127 of one sign over K = 1536: |sum| = 1536 * 16129 (no int16 pair
    saturates, no int32 lane wraps), and mixed signs that would saturate a pair of u8 x s8
    products with an offset of 128."""
    NATIVE.set_threads(threads)
    try:
        for m, k, n in ((1, 1536, 4096), (2, 1536, 96), (3, 576, 1000), (9, 1536, 64)):
            x = np.full((m, k), 127, np.int8)
            x[1::2] = -127
            w = np.full((k, n), 127, np.int8)
            w[:, 1::3] = -127
            got = _run(x, w, path)
            assert np.array_equal(got, _exact(x, w)), (m, k, n)
            assert abs(int(got[0, 0])) == k * 127 * 127
    finally:
        NATIVE.set_threads(1)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 9), k=st.integers(1, 80), n=st.integers(1, 200),
       threads=st.integers(1, 3))
def test_random_shapes_and_tails_are_exact(path: str, seed: int, m: int, k: int, n: int, threads: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-127, 128, (m, k)).astype(np.int8)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    x[rng.random(x.shape) < 0.2] = 127
    w[rng.random(w.shape) < 0.2] = -127
    NATIVE.set_threads(threads)
    try:
        assert np.array_equal(_run(x, w, path), _exact(x, w))
    finally:
        NATIVE.set_threads(1)


@pytest.mark.parametrize("path", PATHS)
def test_model_shapes_are_exact(path: str) -> None:
    """The step's shapes (K 576 and 1536; N 960, 576, 3072, 49152), one and several rows."""
    rng = np.random.default_rng(5)
    for k, n in ((576, 960), (576, 576), (576, 3072), (1536, 576), (576, 49152)):
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        for m in (1, 2, 5):
            x = rng.integers(-127, 128, (m, k)).astype(np.int8)
            assert np.array_equal(_run(x, w, path), _exact(x, w)), (k, n, m)


def test_arguments_outside_the_proof_are_refused() -> None:
    x, w, out = np.zeros((2, 8), np.int8), np.zeros((8, 40), np.int8), np.zeros((2, 40), np.int32)
    p, c = panel_layout(w), np.zeros(40, np.int32)
    bad_x = x.copy()
    bad_x[1, 3] = -128
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        NATIVE.matmul(bad_x, p, c, out)
    with pytest.raises(ValueError, match="shapes"):  # out of another width (the panels cover 64 columns)
        NATIVE.matmul(x, p, c, np.zeros((2, 65), np.int32))
    with pytest.raises(ValueError, match="shapes"):  # column sums of another width
        NATIVE.matmul(x, p, np.zeros(39, np.int32), out)
    with pytest.raises(ValueError, match="shapes"):  # x of another inner dimension than the panels'
        NATIVE.matmul(np.zeros((2, 13), np.int8), p, c, out)
    with pytest.raises(ValueError, match="shapes"):
        NATIVE.matmul(x, panel_layout(np.zeros((8, 40), np.int8))[:, :1], c, out)
    with pytest.raises(TypeError):
        NATIVE.matmul(x.astype(np.int16), p, c, out)
    with pytest.raises(TypeError):
        NATIVE.matmul(x, p, c, out.astype(np.int64))
    with pytest.raises(TypeError):
        NATIVE.matmul(x, w, c, out)  # (K, N) is not the kernel's layout
    with pytest.raises(TypeError):
        NATIVE.matmul(x, p, c.astype(np.int64), out)
    with pytest.raises((TypeError, ValueError, BufferError)):  # not C-contiguous
        NATIVE.matmul(x, np.asfortranarray(p), c, out)
    with pytest.raises((TypeError, ValueError, BufferError)):  # read-only output
        ro = out.copy()
        ro.flags.writeable = False
        NATIVE.matmul(x, p, c, ro)
    with pytest.raises(ValueError, match="unknown path"):
        NATIVE.matmul(x, p, c, out, "sse9")
    k = 66312  # K * 255 * 127 >= 2**31: the offset form's sums could wrap
    with pytest.raises(ValueError, match="exceeds"):
        NATIVE.matmul(np.zeros((1, k), np.int8), panel_layout(np.zeros((k, 1), np.int8)), np.zeros(1, np.int32),
                      np.zeros((1, 1), np.int32))
    with pytest.raises(ValueError):
        NATIVE.set_threads(0)
    low = np.zeros((8, 40), np.int8)
    assert NATIVE.weights_in_range(low)
    low[5, 7] = -128
    assert not NATIVE.weights_in_range(low)


def test_a_matrix_holding_minus_128_goes_to_the_fallback() -> None:
    """-128 lies outside the kernels' proof (sign(-128) wraps): such a matrix is never given to them."""
    q = np.full((64, 64), -128, np.int8)
    x = np.full((1, 64), -127, np.int8)
    products = NativeProducts(threads=1, fallback=NumpyProducts())
    assert np.array_equal(products(x, QMatrix("low", q, np.ones(64))), _exact(x, q))


def test_backend_by_name_and_default() -> None:
    assert products_from_name("native").name.startswith("native-")
    assert products_from_name(None).name.startswith("native-") or "SEMCODEC_BACKEND" in os.environ
    with pytest.raises(SemModelError, match="unknown native path"):
        NativeProducts(path="sse9")
    for path in PATHS:  # a cap picks that path (or the next narrower this CPU runs)
        assert NativeProducts(path=path, threads=1).path == path
    assert NATIVE_PATHS[-1] == "plain" and "plain" in PATHS


def test_threads_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCODEC_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("SEMCODEC_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray actor of num_cpus=1
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SEMCODEC_THREADS", "two")
    with pytest.raises(SemModelError, match="whole number"):
        default_threads()


def test_concurrent_callers_and_a_forked_child_get_exact_results() -> None:
    """Python threads share the pool (a busy pool runs a second caller alone); a forked child
    starts without the parent's workers and makes its own."""
    rng = np.random.default_rng(11)
    w = rng.integers(-127, 128, (576, 3072)).astype(np.int8)
    xs = [rng.integers(-127, 128, (1, 576)).astype(np.int8) for _ in range(4)]
    want = [_exact(x, w) for x in xs]
    NATIVE.set_threads(2)
    bad: list[int] = []

    def run(i: int) -> None:
        for _ in range(30):
            if not np.array_equal(_run(xs[i], w, PATHS[0]), want[i]):
                bad.append(i)

    try:
        workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert not bad
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply(_child_product, (xs[0], w)) is True
    finally:
        NATIVE.set_threads(1)


def _child_product(x: np.ndarray, w: np.ndarray) -> bool:
    NATIVE.set_threads(2)
    exact = _exact(x, w)
    return bool(np.array_equal(_run(x, w, "plain"), exact) and np.array_equal(_run(x, w, PATHS[0]), exact))


def test_fast_math_builds_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """bounds.h stops a -ffast-math build (crtfastmath would set flush-to-zero for the process)."""
    import shutil
    import sysconfig
    from pathlib import Path

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    native = Path(__file__).resolve().parents[1] / "src/semcodec/models/native"
    include = sysconfig.get_paths()["include"]
    for source in ("products.c", "prefix.c"):
        args = [cc, "-c", "-O2", "-I", include, str(native / source), "-o", str(tmp_path / "x.o")]
        assert subprocess.run(args, capture_output=True).returncode == 0, source
        done = subprocess.run([*args, "-ffast-math"], capture_output=True, text=True)
        assert done.returncode != 0 and "ffast-math" in done.stderr, source


def test_decode_steps_through_the_native_kernel_give_the_pinned_tables() -> None:
    """The golden cases through every native path (decode steps: one row each)."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from semcodec.models import load_model
    from semcodec.models.exact import ExactLM
    from test_exact_runtime import GOLDEN, table_digest

    model = load_model(0)
    try:
        for path in PATHS:
            products = NativeProducts(path=path, threads=2)
            lm = ExactLM(model.lm.w, products)
            for case in GOLDEN["cases"][:2]:
                context = load_model(case["model_id"]).context_ids
                cache = lm.new_cache()
                hidden = lm.forward(context, cache)[-1:]  # the prefill: many rows (onnxruntime)
                rows = [lm.tables(hidden)]
                for token in case["tokens"]:  # then one row per step: the native kernel
                    rows.append(lm.tables(lm.forward([token], cache)))
                assert table_digest(np.concatenate(rows)) == case["sha256"], (path, case["name"])
    finally:
        NATIVE.set_threads(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


_HARNESS = Path(__file__).parent / "native" / "panels_check.c"
_KERNELS = Path(__file__).parents[1] / "src" / "semcodec" / "models" / "native"


def _build(cc: str, out: Path, *flags: str) -> None:
    done = subprocess.run([cc, "-O2", "-Wall", *flags, f"-I{_KERNELS}", str(_HARNESS), str(_KERNELS / "panels.c"),
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_panel_kernels_alone_match_int64_sums(tmp_path: Path) -> None:
    """panels.c without Python (tests/native/panels_check.c): every path this CPU runs against
    int64 sums at the format's worst case, the model's shapes and random tails."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    _build(cc, tmp_path / "check")
    done = subprocess.run([str(tmp_path / "check")], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 2), done.stdout[-2000:]  # 2: plain C only (no vector path here)
    assert "plain: exact" in done.stdout
    for path in PATHS:
        assert f"{path}: exact" in done.stdout


def test_the_avxvnni_path_with_its_instruction_emulated(tmp_path: Path) -> None:
    """The AVX-VNNI path (Intel client CPUs with AVX2 and VEX vpdpbusd but no AVX-512), which no
    machine or emulator here runs (QEMU's TCG lacks AVX-VNNI): built with vpdpbusd done exactly in
    AVX2 (``SEMCODEC_EMULATE_AVXVNNI``), so that everything else the path runs (its dispatch, the
    offset form, panels and tails) is checked against int64 sums."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs an x86-64 C compiler")
    _build(cc, tmp_path / "check", "-DSEMCODEC_EMULATE_AVXVNNI")
    done = subprocess.run([str(tmp_path / "check")], capture_output=True, text=True, timeout=300)
    if "avx2: exact" not in done.stdout:
        pytest.skip("this CPU has no AVX2")
    assert done.returncode == 0, done.stdout[-2000:]
    assert "avxvnni: exact" in done.stdout


def test_the_arm64_sdot_path_under_emulation(tmp_path: Path) -> None:
    """The NEON sdot path (arm64), which no machine of this project runs natively: built with a
    cross compiler and run under qemu, on a CPU with the dot-product extension (it must run and
    be exact) and on one without it (a Cortex-A53: plain C only)."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if cc is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64 (scripts/test.sh installs both as root)")
    _build(cc, tmp_path / "check", "-static")
    done = subprocess.run([qemu, str(tmp_path / "check")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "neon: exact" in done.stdout and "plain: exact" in done.stdout
    done = subprocess.run([qemu, "-cpu", "cortex-a53", str(tmp_path / "check")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stdout[-2000:]
    assert "neon" not in done.stdout
