"""Integer matrix products for the exact runtime: one small protocol, several kernels.

Every weight matrix is int8 (``|w| <= 127``) and every activation an integer with
``|x| <= 127`` (SPEC §5, step 2), so ``x @ w`` is a sum of at most 1536 products of magnitude
``<= 127 * 127``: below ``2**24`` (exact in float32) and far below ``2**31`` (int32). Any
kernel that adds those integers without saturating or rounding gives the same result
in any order, so the kernel is a free choice: the tables never depend on it.

* :class:`NativeProducts` (``native``, the default where the optional extension
  :mod:`semcodec.models._products` is built): the products in C (AVX512-VNNI, AVX-VNNI, AVX2,
  NEON ``sdot`` on arm64, or plain C; ``native/panels.c``), on the cache's copy of each matrix
  in the kernel's own layout (:func:`panel_layout`, read in place), the columns split across
  the machine's cores; the whole step runs beside them (``native/step.c``). More rows than
  :attr:`NativeProducts.max_rows` (:data:`NATIVE_MAX_ROWS`: 128 with AVX2 and 64 with
  AVX512-VNNI, each measured to beat onnxruntime; 64 with AVX-VNNI and NEON, unmeasured) go to
  onnxruntime, called back from the native step for batches.
* :class:`OnnxProducts` (``int8``): onnxruntime's ``MatMulInteger`` on
  uint8 × int8 (MLAS, VNNI where the CPU has it), one quarter of float32's bytes.
* :class:`NumpyProducts` (``numpy``): integer-valued float32 through numpy's BLAS (the
  fallback; needs nothing beyond numpy, keeps a float32 copy of the weights).
* :class:`TorchProducts` (``torch``, ``cuda``): integer-valued float32 through torch.

``SEMCODEC_BACKEND`` picks one (:func:`products_from_name`); every one gives the same
integers, so the choice never changes a table.

    >>> import numpy as np
    >>> w = QMatrix("demo", np.array([[1, -2], [3, 4]], np.int8), np.ones(2))
    >>> x = np.array([[127, -127]], np.int8)
    >>> NumpyProducts()(x, w).tolist()
    [[-254, -762]]
    >>> (OnnxProducts()(x, w) == NumpyProducts()(x, w)).all()
    np.True_
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np

from semcodec.errors import SemModelError

PANEL_COLUMNS = 64
"""Output columns per panel of the native kernel's layout (``native/panels.h``)."""
PANEL_DEPTH = 4
"""Consecutive weight rows per quad of that layout: one int32 lane of ``vpdpbusd``."""


def panel_layout_shape(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The shape :func:`panel_layout` gives a (K, N) matrix."""
    k, n = shape
    return -(-n // PANEL_COLUMNS), -(-k // PANEL_DEPTH), PANEL_COLUMNS, PANEL_DEPTH


def panel_layout(q: np.ndarray) -> np.ndarray:
    """The native kernel's layout of a (K, N) int8 matrix (``native/panels.h``): shape
    ``(ceil(N/64), ceil(K/4), 64, 4)`` with ``panels[p, j, c, i] = q[4j + i, 64p + c]``, zero
    past K and N. Made once at conversion and stored in the cache; the same bytes reordered
    (and zero padding), so every product stays the same integer.

        >>> panel_layout(np.arange(6, dtype=np.int8).reshape(2, 3))[0, 0, :4].tolist()
        [[0, 3, 0, 0], [1, 4, 0, 0], [2, 5, 0, 0], [0, 0, 0, 0]]
    """
    k, n = q.shape
    shape = panel_layout_shape((k, n))
    padded = np.zeros((shape[1] * PANEL_DEPTH, shape[0] * PANEL_COLUMNS), np.int8)
    padded[:k, :n] = q
    # 64-byte aligned like the cache's arrays: a vector load across two cache lines costs two
    raw = np.empty(padded.size + 64, np.int8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + padded.size].reshape(shape)
    out[...] = padded.reshape(shape[1], PANEL_DEPTH, shape[0], PANEL_COLUMNS).transpose(2, 0, 3, 1)
    return out


def from_panel_layout(panels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The (K, N) matrix whose :func:`panel_layout` is ``panels`` (a new C-contiguous array)."""
    k, n = shape
    p, quads = panels.shape[:2]
    full = panels.transpose(1, 3, 0, 2).reshape(quads * PANEL_DEPTH, p * PANEL_COLUMNS)
    return np.ascontiguousarray(full[:k, :n])


class QMatrix:
    """One int8 weight matrix (K, N): ``y = x @ q`` then ``* scale`` per column.

    Stored one way or the other: as ``q`` (K, N), or, as the converted cache holds it, only in
    the native kernel's layout (``panels``, :func:`panel_layout`, with ``shape``); then ``q`` is
    made from the panels on first use (by the onnxruntime, numpy and torch backends, never by
    the native step) and kept. Compared and hashed by identity, so a kernel may key its copy
    by the matrix itself: a dict entry keeps the matrix alive, and no other matrix can take
    its key.
    """

    def __init__(self, name: str, q: np.ndarray | None, scale: np.ndarray, colsum: np.ndarray | None = None,
                 panels: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> None:
        if q is None and (panels is None or shape is None):
            raise ValueError("a matrix needs q, or its panels and shape")
        self.name = name
        self._q = q
        self.scale = scale  # (N,) float64: column n of the float matrix is q[:, n] * scale[n]
        self.panels = panels  # panel_layout(q), from the cache (made on first native use when not given)
        k, n = q.shape if q is not None else shape  # type: ignore[misc]
        self.shape: tuple[int, int] = (int(k), int(n))
        self.colsum = colsum if colsum is not None else self.q.sum(axis=0, dtype=np.int32)  # (N,) int32: over K

    @property
    def q(self) -> np.ndarray:
        """(K, N) int8, read-only."""
        if self._q is None:
            assert self.panels is not None
            self._q = from_panel_layout(self.panels, self.shape)
            self._q.flags.writeable = False
        return self._q

    def columns(self, ids: np.ndarray) -> np.ndarray:
        """``q[:, ids].T`` (len(ids), K) int8: the embedding rows of a tied head, read from the
        panels where ``q`` was not made (a token's weights lie in one panel, ~9 pages)."""
        if self._q is not None or self.panels is None:
            return self.q[:, ids].T
        ids = np.asarray(ids, dtype=np.int64)
        rows = self.panels[ids // PANEL_COLUMNS, :, ids % PANEL_COLUMNS, :]  # (len(ids), K/4, 4)
        return rows.reshape(len(ids), -1)[:, : self.shape[0]]


class Products(Protocol):
    """``x @ w.q`` for integer ``x`` (M, K) with ``|x| <= 127``: an exact integer array (M, N)."""

    name: str

    def __call__(self, x: np.ndarray, w: QMatrix) -> np.ndarray: ...


def float_products_are_exact(product: Any) -> bool:
    """Whether ``product(x, w)`` (float32 operands holding integers -> a float array) adds them
    exactly: the format's worst cases (|x| at the activation limits against |w| = 127, sums up to
    16,776,192 just below 2**24, and cancelling signs) against int64. A BLAS that accumulates
    below binary32 (binary16, bfloat16, TF32 sums) or rounds partial sums fails it (issue 22,
    item 7), as do Strassen-like schemes whose operand sums exceed the bounds."""
    rng = np.random.default_rng(22)
    for k, amax in ((576, 127), (1536, 86)):
        x = np.full((3, k), amax, np.int64)
        x[1, 1::2] = -amax
        x[2] = rng.integers(-amax, amax + 1, k)
        w = np.full((k, 72), 127, np.int64)
        w[:, 1::2] = -127
        w[:, 36:] = rng.integers(-127, 128, (k, 36))
        w[::7, 40:44] = 1  # odd partial sums near 2**24: lost by a sum rounded to fewer bits
        got = np.asarray(product(x.astype(np.float32), w.astype(np.float32)), dtype=np.float64)
        if not np.array_equal(got, (x @ w).astype(np.float64)):
            return False
    return True


class NumpyProducts:
    """Integer-valued float32 products through numpy's BLAS (float32 weights made on first use).

    Refused (:class:`SemModelError`) where a probe shows the BLAS not adding integers exactly
    (:func:`float_products_are_exact`)."""

    name = "numpy"

    def __init__(self) -> None:
        self._weights: dict[QMatrix, np.ndarray] = {}
        if not float_products_are_exact(np.matmul):
            raise SemModelError("numpy's BLAS does not add float32 integers exactly here; the exact runtime "
                                "cannot use it (choose SEMCODEC_BACKEND=native or int8)")

    def __call__(self, x: np.ndarray, w: QMatrix) -> np.ndarray:
        wf = self._weights.get(w)
        if wf is None:
            wf = self._weights[w] = w.q.astype(np.float32)
        out: np.ndarray = (x.astype(np.float32) @ wf).astype(np.int32)
        return out


def native_products_module() -> Any:
    """The compiled :mod:`semcodec.models._products`, or None where it was not built."""
    try:
        from semcodec.models import _products
    except ImportError:
        return None
    return _products


def default_threads() -> int:
    """Threads for the native products: ``$SEMCODEC_THREADS``, else ``$OMP_NUM_THREADS`` (what Ray
    gives an actor: its ``num_cpus``), else every core this process may run on."""
    for var in ("SEMCODEC_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise SemModelError(f"{var} must be a whole number, not {value!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


NATIVE_PATHS = ("neon", "vnni", "avxvnni", "avx2", "plain")
"""The native product kernel's code paths, widest first (``native/panels.c``; ``neon`` is arm64's
``sdot``, the others x86's)."""

NATIVE_MAX_ROWS = {"neon": 64, "vnni": 64, "avxvnni": 64, "avx2": 128, "plain": 1}
"""Rows a path takes before onnxruntime's MLAS wins (``benchmarks/int8_kernels.py``: every matrix
of a step, 1 thread). AVX2 (a 2-core EPYC without AVX-512, on runtime version 2's (K, N)
layout): 1 row 14.4 ms vs onnxruntime's 27.0, 16 rows 71.6 vs 79.8, 128 rows 477 vs 492.
AVX512-VNNI on the panels of version 3 (a 2-core EPYC with AVX-512, where MLAS multiplies with
VNNI too; 2026-12-07): 1 row 5.9 ms vs 14.2, 8 rows 14.9 vs 25.0, 32 rows 28.7 vs 48.9, 64 rows
52.1 vs 73.3, 128 rows 171.5 vs 143.1: MLAS from somewhere past 64 (on (K, N) it won from 3
rows). AVX-VNNI (256 bits) and NEON (``sdot``, 128 bits) run one row at a time and are
unmeasured (no such machine here; the NEON path's exactness is tested under qemu): they keep
every batch the codec makes (a prefill chunk of 32 rows, a lockstep batch of 64 files), since
handing one to MLAS first makes the (K, N) copy of every matrix from the panels (135 MB more
per process and about 0.15 s, once). The per-row AVX2 path, measured here as a stand-in, takes
2.2x MLAS's time at 64 rows; past 64, MLAS."""


class NativeProducts:
    """The native kernel (:mod:`semcodec.models._products`) for up to :attr:`max_rows` rows; more
    rows go to ``fallback`` (onnxruntime where installed, else numpy).

    ``path`` caps the code path (``neon``, ``vnni``, ``avxvnni``, ``avx2``, ``plain``; default the widest
    this CPU runs): tests and benchmarks only, every path gives the same integers. Each
    vector path is first checked against numpy's int64 products at the format's extremes
    (:meth:`_probe`): a path that disagrees is never used (the next one is). Each weight
    matrix is checked once for ``-128`` (outside the kernels' proof; never made by the
    conversion): such a matrix goes to ``fallback``.
    """

    def __init__(self, path: str | None = None, threads: int | None = None, fallback: Products | None = None,
                 max_rows: int | None = None) -> None:
        native = native_products_module()
        if native is None:
            raise SemModelError("the native backend needs the compiled extension semcodec.models._products")
        if path is not None and path not in NATIVE_PATHS:
            raise SemModelError(f"unknown native path {path!r}; choose one of {', '.join(NATIVE_PATHS)}")
        self._native = native
        runs = [p for p in native.vector_paths() if path is None or NATIVE_PATHS.index(p) >= NATIVE_PATHS.index(path)]
        self.path = next(p for p in runs if self._probe(p))
        self.threads = native.set_threads(threads or default_threads())
        self.max_rows = max_rows if max_rows is not None else NATIVE_MAX_ROWS[self.path]
        self.name = f"native-{self.path}"
        self._fallback = fallback
        self._checked: dict[QMatrix, bool] = {}
        self._panels: dict[QMatrix, np.ndarray] = {}  # made here for matrices that bring none

    def _probe(self, path: str) -> bool:
        """Whether ``path`` gives numpy's int64 products on worst-case and random operands."""
        if path == "plain":
            return True
        rng = np.random.default_rng(0)
        for m, k, n in ((1, 1536, 96), (2, 576, 67), (5, 37, 64)):
            x = np.full((m, k), 127, np.int8)
            w = np.full((k, n), 127, np.int8)
            w[:, 1::2] = -127
            x[-1] = rng.integers(-127, 128, k)
            for ww in (w, rng.integers(-127, 128, (k, n)).astype(np.int8)):
                out = np.empty((m, n), np.int32)
                self._native.matmul(x, panel_layout(ww), ww.sum(axis=0, dtype=np.int32), out, path)
                if not np.array_equal(out, x.astype(np.int64) @ ww.astype(np.int64)):
                    return False
        return True

    def panels(self, w: QMatrix) -> np.ndarray:
        """``w``'s panels: the cache's, or :func:`panel_layout` once per matrix."""
        if w.panels is not None:
            return w.panels
        made = self._panels.get(w)
        if made is None:
            made = self._panels[w] = panel_layout(np.asarray(w.q, dtype=np.int8))
        return made

    @property
    def fallback(self) -> Products:
        if self._fallback is None:
            try:
                self._fallback = OnnxProducts()
            except SemModelError:
                self._fallback = NumpyProducts()
        return self._fallback

    def takes(self, w: QMatrix) -> bool:
        """Whether the native kernel multiplies ``w`` (C-contiguous int8 without ``-128``; checked once)."""
        ok = self._checked.get(w)
        if ok is None:
            panels = self.panels(w) if w.panels is not None or w.q.dtype == np.int8 else None
            ok = self._checked[w] = (panels is not None and panels.dtype == np.int8 and panels.flags.c_contiguous
                                     and panels.shape == panel_layout_shape(w.shape)
                                     and bool(self._native.weights_in_range(panels)))
        return ok

    def __call__(self, x: np.ndarray, w: QMatrix) -> np.ndarray:
        ok = self.takes(w)
        if len(x) > self.max_rows or not ok:
            return self.fallback(x, w)
        x = np.ascontiguousarray(x, dtype=np.int8)
        out = np.empty((len(x), w.shape[1]), np.int32)
        self._native.matmul(x, self.panels(w), w.colsum, out, self.path)
        return out


class OnnxProducts:
    """onnxruntime ``MatMulInteger`` (uint8 activations × int8 weights → int32).

    Fast integer kernels multiply unsigned by signed bytes; some (AVX2 and AVX-512 without
    VNNI: ``vpmaddubsw``) add products in *saturating* int16 pairs, which would be wrong for
    ``255 * 127 * 2``. Two modes, both exact:

    * ``wide``: ``x + 128`` (in [1, 255]) times ``w``, minus ``128 * colsum(w)``; used only
      when a probe with the worst case (every pair at 255 · 127) comes out exact here;
    * ``split``: ``x⁺`` and ``x⁻`` (each in [0, 127]) as two rows, subtracted: every pair
      sum is at most ``2 * 127 * 127 = 32258``, which no kernel saturates.

    One session serves every shape (the weights are inputs, fed from the memory map).
    """

    def __init__(self, mode: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - onnxruntime is a core dependency
            raise SemModelError(f"the int8 backend needs onnxruntime ({err})") from None
        self._session = matmul_integer_session(ort)
        # The compiled session's own run: the Python wrapper's per-call checks of the feed's
        # names (always "a" and "b" here) cost more than a small product's arithmetic.
        self._run = getattr(self._session, "_sess", self._session).run
        self._offsets: dict[QMatrix, np.ndarray] = {}  # 128 * colsum, made once per matrix
        self.mode = mode or ("wide" if self._wide_is_exact() else "split")
        self.name = f"int8-{self.mode}"

    def _raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._run(["y"], {"a": a, "b": b}, None)[0]
        return out

    def _wide_is_exact(self) -> bool:
        for m, k in ((1, 576), (3, 576), (40, 1536)):
            a = np.full((m, k), 255, np.uint8)
            b = np.full((k, 80), 127, np.int8)
            b[:, 1::2] = -127
            if not np.array_equal(self._raw(a, b), a.astype(np.int32) @ b.astype(np.int32)):
                return False
        return True

    def __call__(self, x: np.ndarray, w: QMatrix) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.int8)
        if self.mode == "wide":
            shifted = np.bitwise_xor(x.view("u1"), np.uint8(0x80))  # x + 128 for int8 x (two's complement)
            offset = self._offsets.get(w)
            if offset is None:
                assert w.colsum is not None
                offset = self._offsets[w] = 128 * w.colsum
            y = self._raw(shifted, w.q)
            y -= offset
            return y
        m = len(x)
        both = np.concatenate([np.maximum(x, 0), np.maximum(-x.astype(np.int16), 0)]).astype(np.uint8)
        y = self._raw(both, w.q)
        return y[:m] - y[m:]


class TorchProducts:
    """Integer-valued float32 products through torch (CPU or CUDA): equal bits, same argument.

    TF32 is switched off although it would not matter here: |x|, |w| <= 127 need 7
    mantissa bits, which TF32 (10) and even bf16 (7) hold exactly; accumulation is float32.
    The float32 device copy of each weight is keyed by its :class:`QMatrix` (identity).
    """

    def __init__(self, device: str = "cpu") -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self._torch = torch
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"
        self._weights: dict[QMatrix, Any] = {}

        def product(x: np.ndarray, w: np.ndarray) -> np.ndarray:
            out: np.ndarray = (torch.from_numpy(x).to(self.device) @ torch.from_numpy(w).to(self.device)).cpu().numpy()
            return out

        if not float_products_are_exact(product):
            raise SemModelError(f"torch's float32 products on {self.device} do not add integers exactly here; the "
                                "exact runtime cannot use them")

    def __call__(self, x: np.ndarray, w: QMatrix) -> np.ndarray:
        torch = self._torch
        w_t = self._weights.get(w)
        if w_t is None:
            w_t = self._weights[w] = torch.from_numpy(w.q.astype(np.float32)).to(self.device)
        x_t = torch.from_numpy(x.astype(np.float32)).to(self.device)
        out: np.ndarray = (x_t @ w_t).to(torch.int32).cpu().numpy()
        return out


BACKENDS = ("native", "int8", "numpy", "torch", "cuda")
"""Names ``SEMCODEC_BACKEND`` accepts (``onnxruntime`` is an alias of ``int8``)."""


def products_from_name(name: str | None = None) -> Products:
    """The kernel ``name`` (default ``$SEMCODEC_BACKEND``, else ``native`` with onnxruntime for
    many rows, else ``int8``, else ``numpy``).

    Raises :class:`SemModelError` for an unknown name or a backend that cannot run here.
    """
    chosen = (name or os.environ.get("SEMCODEC_BACKEND") or "").strip().lower()
    if chosen == "native":
        return NativeProducts()
    if chosen in ("int8", "onnxruntime", "ort"):
        return OnnxProducts()
    if chosen == "numpy":
        return NumpyProducts()
    if chosen in ("torch", "cuda"):
        try:
            import torch
        except ImportError:
            raise SemModelError(f"backend {chosen!r} needs torch (pip install 'semcodec[hf]')") from None
        if chosen == "cuda" and not torch.cuda.is_available():
            raise SemModelError("backend 'cuda': torch sees no CUDA device")
        return TorchProducts(chosen if chosen == "cuda" else "cpu")
    if chosen:
        raise SemModelError(f"unknown backend {chosen!r}; choose one of {', '.join(BACKENDS)}")
    if native_products_module() is not None:
        return NativeProducts()
    try:
        return OnnxProducts()
    except SemModelError:
        return NumpyProducts()


def matmul_integer_session(ort: Any, batched: bool = False) -> Any:
    """An onnxruntime CPU session of :func:`_matmul_integer_model` (``ort``: the imported module),
    with as many intra-op threads as the native products (:func:`default_threads`: every core
    this process may run on unless ``$SEMCODEC_THREADS`` or a Ray actor's ``$OMP_NUM_THREADS``
    says otherwise). Until 2026-12 it took 1 unless told: a lockstep step of 64 captions, whose
    products run here, was about 15 % slower on the 2-core EPYC for it.

    Idle pool threads sleep instead of spinning: on a busy machine spinning threads starve
    each other (the same trouble as OpenBLAS's, see :func:`semcodec.models.blas_threads`).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(_matmul_integer_model(batched=batched), options, providers=["CPUExecutionProvider"])


def _matmul_integer_model(signed_a: bool = False, batched: bool = False) -> bytes:
    """The ONNX model ``y = MatMulInteger(a: uint8[M, K], b: int8[K, N]) -> int32[M, N]``
    (``a: int8`` if ``signed_a``: slower on x86, kept for the kernel benchmark; with
    ``batched``, ``a: uint8[H, M, K]``, ``b: int8[H, K, N]`` and a zero point ``z: uint8``
    for ``a``, as :mod:`semcodec.models.attention` uses it).

    Written as protobuf bytes directly (a dozen fields) so the text path needs no ``onnx``.
    """

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def fld(number: int, value: int | bytes | str) -> bytes:
        if isinstance(value, int):
            return varint(number << 3) + varint(value)
        data = value.encode() if isinstance(value, str) else value
        return varint(number << 3 | 2) + varint(len(data)) + data

    uint8, int8, int32 = 2, 3, 6  # TensorProto.DataType

    def value_info(name: str, elem_type: int, dims: tuple[str, ...]) -> bytes:
        shape = b"".join(fld(1, fld(2, d)) for d in dims)  # TensorShapeProto.dim{dim_param}
        tensor_type = fld(1, elem_type) + fld(2, shape)
        return fld(1, name) + fld(2, fld(1, tensor_type))  # ValueInfoProto{name, type{tensor_type}}

    lead: tuple[str, ...] = ("H",) if batched else ()
    inputs = ["a", "b", "z"] if batched else ["a", "b"]
    node = b"".join(fld(1, name) for name in inputs) + fld(2, "y") + fld(4, "MatMulInteger")
    graph = (fld(1, node) + fld(2, "batched_matmul_integer" if batched else "matmul_integer")
             + fld(11, value_info("a", int8 if signed_a else uint8, (*lead, "M", "K")))
             + fld(11, value_info("b", int8, (*lead, "K", "N")))
             + (fld(11, value_info("z", uint8, ())) if batched else b"")
             + fld(12, value_info("y", int32, (*lead, "M", "N"))))
    opset = fld(1, "") + fld(2, 10)
    return fld(1, 7) + fld(7, graph) + fld(8, opset)  # ir_version 7, graph, opset_import
