"""Exact attention over a fixed prefix (a profile's evaluated context).

What: for one layer of a :class:`~semcodec.models.exact.SharedPrefix`, the scores
``q @ k.T`` of integer query rows against the prefix keys and the numerators ``p @ v``
of integer weights against its values, as exact integers (SPEC §5, step 4), and
:func:`attend`: the prefix's whole part of a layer's softmax attention (scores, the
row maxima, weights, their sums and the weighted values), which the caller completes
with the rows' own keys.

Why: every decoded token attends to the whole prefix, so a primed profile's context
(921 positions × 30 layers × 3 kv heads × 64) is read once per token: 85 MB as float64
images, and 85 MB of resident memory, made in every cold process (about 250 ms of page
faults). The integers are small (|k| < 2**20, |v| < 2**24 by the format; in practice
|k| < 2**15 and |v| < 2**16), so two bytes hold them:

* :class:`NativePrefix` (``semcodec.models._prefix``, a small optional C extension built at
  install; absent without a C compiler): :func:`attend` for all rows and kv heads of a
  layer in one call. Where the CPU has AVX512-VNNI or AVX-VNNI the layer is stored once as
  int16 pair layouts (21 MB for the default profile, made in about 35 ms) and multiplied
  with ``vpdpwssd`` (512- or 256-bit) into int32 sums that provably never wrap (queries and
  weights split into two digits), and where it has AVX2 alone the same pair layouts with
  ``vpmaddwd`` + ``vpaddd`` (the same integers); elsewhere int16 (or int32) rows with float64 FMA
  (AVX-512, AVX2+FMA or plain C, chosen at run time), every partial sum an integer below
  ``2**53``. A layer
  with a few entries beyond int16 clips them and adds their residuals apart
  (:data:`FIX_SHARE`). Measured (``benchmarks/prefix_attention.py``): 2.9 ms per step for
  the default profile against 10.8 ms as float64 (caches flushed), and the decode step
  1.10–1.16× model 0's instead of 1.45–1.50× (``benchmarks/runtime_speed.py``).
* :class:`Int8Prefix` (onnxruntime ``MatMulInteger``, uint8 × int8 → int32, every sum exact
  in any order), without the extension: the prefix is split once into signed byte *limbs*,
  ``k = Σ_b 256**b k_b`` with ``k_b`` in [-128, 127] (as many per layer as its largest
  value needs); each step's rows are split into ``s``-bit digits stored with a zero point
  ``z`` (``q = Σ_a 2**(s a) (q_a - z)``), and the limb products are added back with their
  powers of two in int64. No pair of products can saturate a 16-bit intermediate either:
  ``s = 8`` only where a probe shows the kernel exact at the worst case, else ``s = 7``
  (``|q_a - z| <= 64``). 26.5 MB for the default profile, made in about 45 ms; a step
  costs about what float64's does (memory, cold start: yes; step time: no).
* :class:`Float64Prefix` (numpy only, the fallback): float64 images made on first use and
  BLAS; integer sums below ``2**53`` are exact in float64.

:class:`PrefixKernels` picks one (the one place that does). Every kernel gives the same
integers for every input within the format's bounds, so the choice changes no table.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> keys = rng.integers(-2**19, 2**19, (2, 5, 3, 4), dtype=np.int32)    # (layers, T, KV, D)
    >>> values = rng.integers(-2**23, 2**23, (2, 5, 3, 4), dtype=np.int32)
    >>> q = rng.integers(-2**19, 2**19, (3, 2, 4)).astype(np.float64)     # (KV, rows, D)
    >>> p = rng.integers(0, 2**16 + 1, (3, 2, 5))                         # (KV, rows, T)
    >>> fast, plain = Int8Prefix(keys, values), Float64Prefix(keys, values)
    >>> bool((fast.scores(1, q) == plain.scores(1, q)).all())
    True
    >>> bool((fast.weigh(1, p) == plain.weigh(1, p)).all())
    True
    >>> kernels = PrefixKernels(keys, values, "int8")                      # native where it is built
    >>> table = np.append(np.arange(2**16, 0, -16), 0)                   # weights by distance, then 0
    >>> own_top = np.zeros((3, 2), np.int64)                              # the rows' maxima over their own keys
    >>> got, want = kernels.attend(1, q, own_top, table, 15), attend(plain, 1, q, own_top, table, 15)
    >>> all(bool((a == b).all()) for a, b in zip(got, want))
    True
"""

from __future__ import annotations

import sys
from contextlib import suppress
from functools import cache
from typing import TYPE_CHECKING, Protocol

import numpy as np

from semcodec.models.kernels import matmul_integer_session

if TYPE_CHECKING:
    from types import ModuleType as _NativeModule

__all__ = ["FIX_SHARE", "LIMB_MAX_ROWS", "LIMB_MIN_POSITIONS", "NATIVE_MAX_ROWS", "Float64Prefix", "Int8Prefix",
           "NativePrefix", "PrefixKernels", "PrefixProducts", "attend", "attention_weights", "native_module"]

P_MAX = 2**16
"""Largest attention weight (the E16 table's first entry): ``p`` lies in ``[0, P_MAX]``."""


def attention_weights(top: np.ndarray, scores: np.ndarray, table: np.ndarray, shift: int) -> np.ndarray:
    """SPEC §5, step 4: integer scores -> weights ``table[min((top - s + 2**(shift-1)) >> shift, len - 1)]``,
    ``top`` the row maximum (broadcast against ``scores``); ``table`` ends in 0 (the weight of
    keys beyond the table's range). ``native/prefix.c``'s ``attend`` computes the same rule."""
    idx = (top - scores + (1 << (shift - 1))) >> shift
    out: np.ndarray = table[np.minimum(idx, len(table) - 1)]
    return out


def attend(kernel: PrefixProducts, layer: int, q: np.ndarray, own_top: np.ndarray, table: np.ndarray,
           shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The prefix's part of a layer's softmax attention (SPEC §5, step 4) through ``kernel``'s products.

    ``q`` (KV, N, D) rows; ``own_top`` (KV, N) int64: each row's maximum score over the keys
    the caller holds. Returns the weighted values ``sum_t p_t v_t`` (KV, N, D) float64, the
    weights' sums ``z`` (KV, N) int64 and the row maxima over both (KV, N) int64, which the
    caller's own weights must use.
    """
    scores = kernel.scores(layer, q)
    top = np.maximum(own_top, scores.max(axis=-1, initial=np.iinfo(np.int64).min))
    p = attention_weights(top[..., None], scores, table, shift)
    return kernel.weigh(layer, p), p.sum(axis=-1), top


class PrefixProducts(Protocol):
    """Exact products of integer rows with one prefix's keys and values, layer by layer."""

    name: str
    length: int

    def scores(self, layer: int, q: np.ndarray) -> np.ndarray:
        """``q`` (KV, N, D) integer-valued with ``|q| < 2**20`` -> ``q @ k.T`` (KV, N, T) int64."""
        ...

    def weigh(self, layer: int, p: np.ndarray) -> np.ndarray:
        """``p`` (KV, N, T) integers in ``[0, P_MAX]`` -> ``p @ v`` (KV, N, D) float64 (exact integers)."""
        ...


class Float64Prefix:
    """The prefix as float64 images (made on first use) multiplied through numpy's BLAS."""

    name = "float64"

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self._keys, self._values = keys, values
        self.length = int(keys.shape[1])
        self._images: tuple[np.ndarray, np.ndarray] | None = None

    def _layer(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None:
            self._images = (
                np.ascontiguousarray(self._keys.astype(np.float64).transpose(0, 2, 3, 1)),  # (L, KV, D, T)
                np.ascontiguousarray(self._values.astype(np.float64).transpose(0, 2, 1, 3)),  # (L, KV, T, D)
            )
        return self._images[0][layer], self._images[1][layer]

    def scores(self, layer: int, q: np.ndarray) -> np.ndarray:
        out: np.ndarray = (q @ self._layer(layer)[0]).astype(np.int64)  # exact: |q.k| < 2**46
        return out

    def weigh(self, layer: int, p: np.ndarray) -> np.ndarray:
        out: np.ndarray = p.astype(np.float64) @ self._layer(layer)[1]  # exact: sums < 2**52
        return out


class NativePrefix:
    """The prefix multiplied by the native kernel (:mod:`semcodec.models._prefix`, C).

    One call per layer does the prefix's whole part of a step's attention (:meth:`attend`):
    scores, weights and weighted values for all rows and kv heads, each key/value row read
    once for the query heads that share it. Every path is exact (see ``native/prefix.c``):
    ``vnni``, ``avxvnni`` and ``avx2pairs`` multiply int16 pairs into int32 sums small enough
    never to wrap; the others add integer products in float64, every partial sum below ``2**53``.

    ``storage`` per layer, made on first use: ``"auto"`` is ``"pairs"`` where the CPU has
    AVX512-VNNI, AVX-VNNI or AVX2, else ``"int16"``; ``"pairs"``: int16 pair layouts where a layer's
    keys (values) fit (``|x| < 2**15``); ``"int16"``: int16 rows where they fit; ``"int32"``: the
    int32 layers themselves (for a memory-mapped context: in place, no copy). A layer that does
    not fit keeps int32. ``path`` caps the code path at the one a CPU of that kind runs
    (``vnni``, ``avxvnni``: no AVX-512, ``avx512``, ``avx2pairs``, ``avx2``, ``plain``; default: the widest
    this CPU runs): benchmarks and tests only, every path gives the same integers.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray, storage: str = "auto", path: str | None = None) -> None:
        native = native_module()
        if native is None:
            raise ImportError("semcodec.models._prefix is not built")
        if storage == "auto":
            storage = "pairs" if pairs_run(native) else "int16"
        if storage not in ("pairs", "int16", "int32"):
            raise ValueError(f"unknown storage {storage!r}")
        self._native, self._storage, self._path = native, storage, path
        self._keys, self._values = keys, values
        self.length = int(keys.shape[1])
        self.name = f"native-{storage}" + (f"-{path}" if path else "")
        self._layers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _layer(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """keys, their fixes, values, their fixes (see ``native/prefix.c``: PAIRS, FIXES)."""
        got = self._layers.get(layer)
        if got is None:
            got = self._layers[layer] = (*self._stored(self._keys[layer], False),
                                         *self._stored(self._values[layer], True))
        return got

    def _stored(self, x: np.ndarray, values: bool) -> tuple[np.ndarray, np.ndarray]:
        """One layer (T, KV, D) as ``storage`` says, and the (E, 4) int32 rows ``(t, h, d, residual)``
        of entries clipped into int16: at most one in :data:`FIX_SHARE` of them, else int32."""
        x = np.ascontiguousarray(x, dtype=np.int32)
        fixes = np.zeros((0, 4), np.int32)
        if self._storage == "int32" or not x.size:
            return x, fixes
        if int(x.min()) < -(2**15 - 1) or int(x.max()) > 2**15 - 1:
            narrow = np.clip(x, -(2**15 - 1), 2**15 - 1)
            where = np.nonzero(narrow != x)
            if len(where[0]) * FIX_SHARE > x.size:  # too many: int32 (|x| < 2**31: no wrap)
                return x, fixes
            fixes = np.ascontiguousarray(np.stack([*where, (x - narrow)[where]], axis=1), dtype=np.int32)
            x = narrow
        t, kv, d = x.shape  # every entry now fits int16: the assignments below cast exactly
        if self._storage == "int16" or d % 2:
            return x.astype(np.int16), fixes
        if values:  # (KV, ceil(T/2), D, 2): pairs of positions
            out = np.zeros((kv, -(-t // 2), d, 2), np.int16)
            out[..., 0] = x[0::2].transpose(1, 0, 2)
            out[:, : t // 2, :, 1] = x[1::2].transpose(1, 0, 2)
            return out, fixes
        span = -(-t // 16) * 16  # (KV, T/16, D/2, 16, 2): 16 positions' pairs of dims
        padded = np.zeros((span, kv, d), np.int16)
        padded[:t] = x
        blocks = np.empty((kv, span // 16, d // 2, 16, 2), np.int16)
        # Each pair of dims moved whole as one 4-byte unit ("|V4": raw bytes, no byte order to get wrong).
        pairs = padded.view("|V4").reshape(span // 16, 16, kv, d // 2)
        blocks.view("|V4").reshape(kv, span // 16, d // 2, 16)[...] = pairs.transpose(2, 0, 3, 1)
        return blocks, fixes

    def scores(self, layer: int, q: np.ndarray) -> np.ndarray:
        out = np.empty((q.shape[0], q.shape[1], self.length), np.int64)
        keys, key_fixes, _, _ = self._layer(layer)
        self._native.scores(keys, key_fixes, self.length, np.asarray(q, dtype=np.float64), out, self._path)
        return out

    def weigh(self, layer: int, p: np.ndarray) -> np.ndarray:
        out = np.empty((p.shape[0], p.shape[1], self._values.shape[-1]), np.float64)
        _, _, values, value_fixes = self._layer(layer)
        self._native.weigh(values, value_fixes, self.length, np.asarray(p, dtype=np.int64), out, self._path)
        return out

    def attend(self, layer: int, q: np.ndarray, own_top: np.ndarray, table: np.ndarray,
               shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`attend` in one native call: no scores or weights pass through numpy."""
        kv, n, d = q.shape
        num, z, top = np.empty((kv, n, d)), np.empty((kv, n), np.int64), np.empty((kv, n), np.int64)
        self._native.attend(*self._layer(layer), self.length, np.asarray(q, dtype=np.float64),
                            np.asarray(own_top, dtype=np.int64), table, shift, num, z, top, self._path)
        return num, z, top


FIX_SHARE = 64
"""An int16 layer may clip at most one entry in this many (their residuals are added apart);
profile 3's widest value layer clips about one in 10,000."""


class Int8Prefix:
    """The prefix as signed byte limbs, multiplied by onnxruntime's ``MatMulInteger``.

    Per layer: keys (KV, D, nk * T) int8, limb-major along the columns, and values
    (KV, T, nv * D) int8. Made on first use of each layer, from the int32 prefix.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray, bits: int | None = None) -> None:
        if keys.shape[1] * 255 * 128 >= 2**31:  # every value sum must fit int32
            raise ValueError(f"a prefix of {keys.shape[1]} positions is too long for int32 sums")
        self._keys, self._values = keys, values
        self.length = int(keys.shape[1])
        self._kernel = _kernel(bits)
        self.name = f"int8-{self._kernel.bits}bit"
        self._layers: dict[int, tuple[np.ndarray, int, np.ndarray, int]] = {}

    def _layer(self, layer: int) -> tuple[np.ndarray, int, np.ndarray, int]:
        got = self._layers.get(layer)
        if got is None:
            k = _signed_limbs(self._keys[layer].transpose(1, 2, 0))  # (nk, KV, D, T)
            v = _signed_limbs(self._values[layer].transpose(1, 0, 2))  # (nv, KV, T, D)
            got = self._layers[layer] = (
                np.ascontiguousarray(k.transpose(1, 2, 0, 3)).reshape(k.shape[1], k.shape[2], -1), len(k),
                np.ascontiguousarray(v.transpose(1, 2, 0, 3)).reshape(v.shape[1], v.shape[2], -1), len(v),
            )
        return got

    def scores(self, layer: int, q: np.ndarray) -> np.ndarray:
        keys, nk, _, _ = self._layer(layer)
        kv, n, d = q.shape
        a, nq = self._kernel.zero_point_limbs(q)  # (KV, nq * N, D) uint8
        y = self._kernel(a, keys, self._kernel.zero_point).reshape(kv, nq, n, nk, self.length)
        bits = self._kernel.bits
        # The row limbs first, in int32 while the sum cannot overflow (|y| <= D * 2**(bits-1) * 128).
        wide = d * (128 << bits) * _digit_sum(bits, nq) >= 2**31
        rows = y[:, 0].astype(np.int64) if wide else y[:, 0]
        for i in range(1, nq):
            rows = rows + (y[:, i].astype(np.int64) if wide else y[:, i]) * (1 << (bits * i))
        out = rows[:, :, 0].astype(np.int64)  # then the prefix's limbs, in int64: |q.k| < 2**46
        for i in range(1, nk):
            out += rows[:, :, i].astype(np.int64) << (8 * i)
        return out

    def weigh(self, layer: int, p: np.ndarray) -> np.ndarray:
        _, _, values, nv = self._layer(layer)
        kv, n, _ = p.shape
        a, n_p = self._kernel.unsigned_limbs(p)  # (KV, np * N, T) uint8
        y = self._kernel(a, values, 0).reshape(kv, n_p, n, nv, -1)  # (KV, np, N, nv, D)
        powers = 1 << np.arange(0, 32, dtype=np.int64)
        # int64 adds and doubles modulo 2**64, and the true sum is below 2**52: exact whatever
        # the terms (one p limb times all v limbs is at most 2**16 * 2**31 per position).
        num = np.einsum("kanbd,a,b->knd", y.astype(np.int64), powers[:: self._kernel.bits][:n_p], powers[::8][:nv])
        out: np.ndarray = num.astype(np.float64)
        return out


def _signed_limbs(x: np.ndarray) -> np.ndarray:
    """``x`` (int32) as (n, *x.shape) int8 limbs in [-128, 127] with ``x = Σ_b 256**b limb_b``,
    ``n`` as small as the largest ``|x|`` allows (at least 1)."""
    rest = np.asarray(x, dtype=np.int32)
    limbs = []
    while True:
        low = rest.astype(np.int8)  # rest mod 256 as a signed byte: the balanced digit
        limbs.append(low)
        rest = (rest - low) >> 8  # exact: rest - low is a multiple of 256
        if not rest.any():
            return np.stack(limbs)


_ZERO_POINTS = {z: np.array(z, np.uint8) for z in (0, 64, 128)}


class _MatMulInteger:
    """One onnxruntime session: ``(a - zero_point) @ b`` for a (H, M, K) uint8, b (H, K, N) int8 -> int32.

    ``bits``: 8 where a probe at the worst case (255 × ±128 in every pair) comes out exact,
    else 7 (some kernels add pairs of products in saturating int16; ``127 * 128 * 2`` fits).
    """

    def __init__(self, bits: int | None = None) -> None:
        import onnxruntime as ort

        self._session = matmul_integer_session(ort, batched=True)
        self.bits = bits or (8 if self._wide_is_exact() else 7)
        self.zero_point = 1 << (self.bits - 1)

    def __call__(self, a: np.ndarray, b: np.ndarray, zero_point: int) -> np.ndarray:
        out: np.ndarray = self._session.run(None, {"a": a, "b": b, "z": _ZERO_POINTS[zero_point]})[0]
        return out

    def _wide_is_exact(self) -> bool:
        a = np.full((3, 6, 128), 255, np.uint8)  # every pair at 255 × 127 or 255 × -128
        a[:, 3:] = np.arange(128, dtype=np.uint8) * 2
        b = np.full((3, 128, 48), 127, np.int8)
        b[..., 1::2] = -128
        return all(np.array_equal(self(a, b, z), (a.astype(np.int64) - z) @ b.astype(np.int64)) for z in (0, 128))

    def zero_point_limbs(self, q: np.ndarray) -> tuple[np.ndarray, int]:
        """Signed integer-valued rows q (KV, N, D) -> (KV, nq * N, D) uint8 ``u_a`` with
        ``q = Σ_a 2**(bits a) (u_a - zero_point)``, limb-major; and ``nq``."""
        bits, z = self.bits, self.zero_point
        span = int(np.abs(q).max(initial=0))
        nq = 1  # q + offset must lie in [0, 2**(bits nq)): -z S <= q <= (z - 1) S, S = Σ_a 2**(bits a)
        while span > (z - 1) * _digit_sum(bits, nq):
            nq += 1
        shifted = q + float(z * _digit_sum(bits, nq))  # exact: integers below 2**53
        return _limbs(shifted, bits, nq), nq

    def unsigned_limbs(self, p: np.ndarray) -> tuple[np.ndarray, int]:
        """Weights p (KV, N, T) in [0, P_MAX] -> (KV, np * N, T) uint8 limbs, limb-major; and ``np``."""
        n = -(-P_MAX.bit_length() // self.bits)
        return _limbs(p, self.bits, n), n


def _limbs(x: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Non-negative integers x (KV, N, X) below ``2**(bits n)`` -> (KV, n * N, X) uint8 digits base ``2**bits``."""
    kv, rows, cols = x.shape
    if bits == 8 and n <= 4:  # the digits are the little-endian bytes
        digits = x.astype("<u4").view("u1").reshape(kv, rows, cols, 4)[..., :n]
        return np.ascontiguousarray(digits.transpose(0, 3, 1, 2)).reshape(kv, n * rows, cols)
    ints = x.astype(np.int64)
    out = np.empty((kv, n, rows, cols), np.uint8)
    for a in range(n):
        np.bitwise_and(ints >> (bits * a), (1 << bits) - 1, out=out[:, a], casting="unsafe")
    return out.reshape(kv, n * rows, cols)


def _digit_sum(bits: int, n: int) -> int:
    """``Σ_{a<n} 2**(bits a)``: the value of n limbs that are all 1."""
    return ((1 << (bits * n)) - 1) // ((1 << bits) - 1)


@cache
def _kernel(bits: int | None = None) -> _MatMulInteger:
    """The session (one per process): ``bits`` 8 or 7 forces a limb width (tests), None probes."""
    return _MatMulInteger(bits)


LIMB_MIN_POSITIONS = 512
"""Shorter prefixes always use float64 images: their limbs save little memory, and the
per-step overhead of splitting and recombining (about 45 µs per layer) is not repaid."""

LIMB_MAX_ROWS = 4
"""Row counts (per kv head) up to this use the limbs: one file's decode step (3 rows). A batch
of steps or a prefill is compute-bound, where float64 BLAS beats four to nine limb products."""


PAIR_PATHS = frozenset({"vnni", "avxvnni", "avx2pairs"})
"""The native code paths that multiply the int16 pair layouts: where the CPU runs one, the
pair layouts are the default storage and the native kernel takes every row count (at 39 rows
per kv head, 921 positions: AVX512-VNNI 0.60× float64 BLAS, AVX-VNNI 0.87×; AVX2's
``vpmaddwd`` on the 2-core EPYC, CPU time over 30 layers: 3 rows 4.1 vs 13.3 ms, 48 rows 38 vs
50 ms, 192 rows 161 vs 196 ms; ``benchmarks/prefix_attention.py``)."""


def pairs_run(native: _NativeModule) -> bool:
    """Whether this CPU runs one of :data:`PAIR_PATHS` (``native``: the built extension)."""
    return bool(PAIR_PATHS.intersection(native.vector_paths()))


NATIVE_MAX_ROWS = 12
"""Without a pair path (int16 rows in float64 FMA: plain C, or a path capped below the pairs)
the native kernel is used for up to this many rows per kv head (4 files' steps in lockstep):
at 12 rows it costs 0.84× float64 BLAS on AVX2, at 48 rows 1.13×
(``benchmarks/prefix_attention.py``), so more rows go to float64.
With a pair path it wins at every row count measured (3 to 300) and takes them all."""


@cache
def native_module() -> _NativeModule | None:
    """The compiled :mod:`semcodec.models._prefix`, or None where it was not built (an install
    without a C compiler): the numpy/onnxruntime kernels are used then."""
    try:
        from semcodec.models import _prefix
    except ImportError:
        return None
    return _prefix


class PrefixKernels:
    """A prefix's products as :class:`semcodec.models.exact.SharedPrefix` needs them, each kernel
    made on first use. The one place that picks a kernel: ``backend == "numpy"`` uses float64
    BLAS only; else the native kernel where it is built, for every row count where the CPU
    has AVX512-VNNI or AVX-VNNI and up to :data:`NATIVE_MAX_ROWS` elsewhere; without it, the int8 limbs
    for at most :data:`LIMB_MAX_ROWS` rows over a prefix of at least
    :data:`LIMB_MIN_POSITIONS` (with onnxruntime); float64 for the rest."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, backend: str) -> None:
        self.length = int(keys.shape[1])
        self._float = Float64Prefix(keys, values)
        self._native: NativePrefix | None = None
        self._native_rows = 0  # most rows per kv head for the native kernel
        self._limbs: Int8Prefix | None = None
        native = native_module() if backend != "numpy" else None
        if native is not None:
            self._native = NativePrefix(keys, values)
            self._native_rows = sys.maxsize if pairs_run(native) else NATIVE_MAX_ROWS
        elif backend != "numpy" and self.length >= LIMB_MIN_POSITIONS:
            with suppress(ImportError):  # no onnxruntime: float64 only
                self._limbs = Int8Prefix(keys, values)
        few = self._native or self._limbs
        alone = self._native_rows == sys.maxsize  # float64 never runs
        self.name = "float64" if few is None else few.name if alone else f"{few.name}+float64"

    def _kernel(self, rows: int) -> PrefixProducts:
        if self._native is not None and rows <= self._native_rows:
            return self._native
        return self._limbs if self._limbs is not None and rows <= LIMB_MAX_ROWS else self._float

    def attend(self, layer: int, q: np.ndarray, own_top: np.ndarray, table: np.ndarray,
               shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`attend` through the kernel for ``q``'s row count (the native one in one call)."""
        kernel = self._kernel(q.shape[1])
        if isinstance(kernel, NativePrefix):
            return kernel.attend(layer, q, own_top, np.ascontiguousarray(table, dtype=np.int64), shift)
        return attend(kernel, layer, q, own_top, table, shift)

