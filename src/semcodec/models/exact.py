"""A Llama forward pass whose next-token frequency tables are exact on every machine.

Why it is exact (the argument is normative: SPEC §5):

* Every weight product multiplies integers: weights are int8 (per-output scale),
  activations are quantised per token to integers with
  ``|a| <= floor((2**24 - 1) / (127 * K))`` for inner dimension ``K``. Every partial sum
  of any summation order is an integer below ``2**24``: exact in int32 and in float32, so
  the kernel (:mod:`semcodec.models.kernels`: int8 MatMulInteger, float32 BLAS, torch),
  its blocking, threads and FMA use cannot change a single bit.
* Attention products use integer-valued float64 matrices bounded below ``2**53``; over a
  shared prefix, a native kernel's int16 products summed in int32 that cannot wrap or in
  float64 below ``2**53`` (or, without it, byte limbs multiplied exactly in int32 and added
  back in int64: :mod:`semcodec.models.attention`); the KV cache holds the integers
  themselves (int32).
* Everything else is elementwise: IEEE ``+ - * /`` and ``sqrt`` (correctly rounded
  everywhere), ``rint``, ``max``, table lookups, and sums of integers in int64 or below
  ``2**53`` in binary64 (exact in any order). No libm function runs: exp, sigmoid and the
  RoPE angles come from :mod:`semcodec.models.tables`. A single row's per-row numbers
  (scales, RMS) are Python floats: the same binary64 operations as numpy's.
* Each token's row is computed from that row alone, except attention, which is integer
  arithmetic over the cache: whole-sequence, incremental and batched evaluation agree
  bit for bit.
* Steps run in C where the native products run (``native/step.c``): a single token's
  (:meth:`ExactLM._native_forward_one`) and several rows at once, caches in lockstep and
  prefills (:meth:`ExactLM._native_forward_segments`), with the same IEEE operations in the
  same order, compiled without contraction, so the same bits (``tests/test_native_step.py``);
  this numpy code is the specification they follow, and runs where they do not (other
  kernels, no compiler, a value that is not finite).

    >>> from semcodec.models import load_model
    >>> lm = load_model(0).lm
    >>> cache = lm.new_cache()
    >>> hidden = lm.forward([504, 2365], cache)  # two tokens
    >>> lm.frequencies(lm.logits(hidden[-1:])).sum()
    np.int64(16777216)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

import numpy as np

from semcodec.models import tables
from semcodec.models.attention import PrefixKernels, attention_weights
from semcodec.models.kernels import NativeProducts, NumpyProducts, Products, QMatrix, native_products_module
from semcodec.models.weights import MAX_POSITIONS, LayerWeights, ModelConfig, ModelWeights

__all__ = ["MAX_POSITIONS", "PRECISION", "WEIGHT_MAX", "ExactLM", "KVCache", "SharedPrefix", "activation_max",
           "quantize_rows"]

PRECISION = 24
"""Frequency tables sum to ``2**PRECISION``."""

WEIGHT_MAX = 127
QK_FRACTION_BITS = 10
V_FRACTION_BITS = 12
QK_LIMIT = 2**20 - 1  # keeps |q.k| over 64 dims below 2**46
V_LIMIT = 2**24 - 1  # keeps sum_j p_j v_j below 2**16 * 2**24 * 2**12 = 2**52
ATTENTION_SHIFT = 2 * QK_FRACTION_BITS + 3 - tables.SOFTMAX_STEP_BITS
"""Scores ``q.k`` are in units of ``2**-(2 * 10 + 3)`` nat (``2**20`` for the fixed point, 8 for
``sqrt(head_dim)``); shifting by this gives the E16 table's ``2**-8`` nat steps (SPEC §5, step 4)."""

RowScalar = float | np.ndarray
"""One binary64 number per row: (N, 1) float64, or a Python float when N is 1 (:func:`_row_amax`)."""

Quantized = tuple[np.ndarray, RowScalar]
"""Activation rows ``x ~ q * scale``: q (N, K) int8, scale per row."""

Rotation = tuple[np.ndarray, np.ndarray]
"""RoPE factors of N positions, ``(cos, sin)`` each (N, heads, head_dim / 2, 2) (:meth:`ExactLM._rotation`)."""


_ULP = 2.0**-52
_ROUNDING_IN = np.tile([1.0, 1.0, -1.0, -1.0, 1.0, 1.0 + _ULP], 11)  # 66 lanes: numpy's vector loops and tail
_ROUNDING_ADD = np.tile([0.75 * _ULP, 0.25 * _ULP, -0.75 * _ULP, -0.25 * _ULP, 0.5 * _ULP, 0.5 * _ULP], 11)
_ROUNDING_WANT = np.tile([1.0 + _ULP, 1.0, -1.0 - _ULP, -1.0, 1.0, 1.0 + 2 * _ULP], 11)  # ties to even


def check_rounding() -> None:
    """Refuse to run unless binary64 arithmetic rounds to nearest, ties to even (SPEC §5.1), in
    numpy's loops and in Python floats: a library that called ``fesetround`` (upward, downward,
    toward zero) would change tables silently. A few microseconds; run once per forward pass."""
    got = _ROUNDING_IN + _ROUNDING_ADD
    one, third = 1.0, 1.0 / 3.0  # 1/3 rounds down to nearest; up, or toward zero, changes its last bit
    if not np.array_equal(got, _ROUNDING_WANT) or one + 0.75 * _ULP != one + _ULP or third * 3.0 != one:
        from semcodec.errors import SemModelError

        raise SemModelError("the floating-point rounding mode is not round-to-nearest-even (something in this "
                            "process changed it); the exact runtime refuses to compute tables")


def activation_max(inner_dim: int) -> int:
    """Largest activation magnitude that keeps every partial sum below ``2**24`` (SPEC §5, step 2)."""
    return min(127, (2**24 - 1) // (WEIGHT_MAX * inner_dim))


def _rint_clip(x: np.ndarray, limit: float | np.ndarray) -> np.ndarray:
    """``clip(rint(x), -limit, limit)``, in place on ``x`` (a temporary): ufuncs, no wrappers.

    Clipping before rounding gives the same numbers: ``limit`` is integral, so ``rint(x)``
    lies beyond it exactly when ``x`` does.
    """
    np.maximum(x, -limit, out=x)
    np.minimum(x, limit, out=x)
    return np.rint(x, out=x)


def _row_amax(x: np.ndarray) -> RowScalar:
    """``max |x|`` of each row of ``x`` (N, K): (N, 1), or a float when N is 1.

    A single row (every decode step) keeps its per-row scalars (scales, RMS) as Python
    floats: the same IEEE binary64 operations, at a fraction of a numpy call's cost.
    """
    if len(x) == 1:
        return float(np.abs(x).max())
    amax: np.ndarray = np.abs(x).max(axis=-1, keepdims=True)
    return amax


def _row_sumsq(t: np.ndarray) -> RowScalar:
    """Sum of squares of each row of integer-valued ``t``, shaped like :func:`_row_amax`'s
    result; any order or fused multiply-add gives the same integers (see :func:`rms_quantize`)."""
    if len(t) == 1:
        return float(np.dot(t[0], t[0]))
    sumsq: np.ndarray = np.square(t).sum(axis=-1, keepdims=True)
    return sumsq


def _row_scale(amax: RowScalar, steps: float) -> RowScalar:
    """``amax / steps`` per row, 1 for an all-zero row (its integers are 0 whatever the scale)."""
    if isinstance(amax, float):
        return amax / steps if amax > 0 else 1.0
    return np.where(amax > 0, amax / steps, 1.0)


def quantize_rows(x: np.ndarray, amax_int: int) -> Quantized:
    """Per-row symmetric quantisation: ``x ~ q * scale`` with integer ``|q| <= amax_int`` (SPEC §5, step 2).

    The clip can only matter through rounding: when ``scale = amax / amax_int`` is one
    normal float (relative error <= 2**-53), ``|x / scale| <= amax_int * (1 + 3 * 2**-53)``,
    below ``amax_int + 1/2``, so ``rint`` alone stays within the limit and the clip is
    skipped; otherwise (several rows, a subnormal or infinite scale) it runs.
    """
    scale = _row_scale(_row_amax(x), amax_int)
    y = x / scale
    if isinstance(scale, float) and sys.float_info.min <= scale <= sys.float_info.max:
        np.rint(y, out=y)
    else:
        _rint_clip(y, amax_int)
    return y.astype(np.int8), scale


def rms_quantize(x: np.ndarray, gain: np.ndarray, eps: float, amax_int: int) -> Quantized:
    """RMSNorm followed by activation quantisation, with an order-independent sum of squares (SPEC §5, step 3).

    ``rms`` cancels inside the quantiser, so only the scale needs it. The sum of squares is
    taken over a 16-bit integer image ``t`` of ``x``, in binary64: every ``t*t <= 2**30``, and
    every partial sum of at most 1536 of them is an integer below ``2**41``, exact in any
    order (SPEC §5.1).
    """
    step = _row_scale(_row_amax(x), 32767.0)
    t = np.divide(x, step)
    sumsq = _row_sumsq(np.rint(t, out=t))
    ms = sumsq * step * step / x.shape[-1] + eps  # ((sumsq * step) * step) / K + eps
    rms = math.sqrt(ms) if isinstance(ms, float) else np.sqrt(ms)  # both correctly rounded (IEEE)
    q, scale = quantize_rows(x * gain, amax_int)
    return q, scale / rms


class SharedPrefix:
    """Positions many caches start from (a profile's context), evaluated once and never written.

    Holds the integer keys/values (L, T, KV, D) int32; attention multiplies them through a
    :mod:`semcodec.models.attention` kernel, made on first use per backend (the native
    kernel's int16 layouts: 4 bytes per key/value pair instead of 16 as float64 images).
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys, self.values = keys, values
        self.length = keys.shape[1]
        self._products: dict[str, PrefixKernels] = {}

    def products(self, backend: str) -> PrefixKernels:
        """The exact attention kernel over these positions (``numpy``: float64 BLAS; else native or int8)."""
        kernel = self._products.get(backend)
        if kernel is None:
            kernel = self._products[backend] = PrefixKernels(self.keys, self.values, backend)
        return kernel


@dataclass
class KVCache:
    """Integer keys and values of every position evaluated so far (SPEC §5, step 4).

    Positions ``[0, prefix.length)`` live in the shared ``prefix`` (if any); this cache's
    own ``keys``/``values`` (layers, capacity, kv_heads, head_dim) int32 hold the next
    ``own`` positions. |k| < 2**20 and |v| < 2**24 fit int32: half of float64's bytes.
    """

    keys: np.ndarray
    values: np.ndarray
    own: int = 0
    prefix: SharedPrefix | None = None

    @classmethod
    def empty(cls, cfg: ModelConfig, capacity: int = 64, prefix: SharedPrefix | None = None) -> KVCache:
        shape = (cfg.n_layers, capacity, cfg.n_kv_heads, cfg.hidden // cfg.n_heads)
        return cls(np.zeros(shape, np.int32), np.zeros(shape, np.int32), 0, prefix)

    @property
    def length(self) -> int:
        """Positions evaluated so far, the prefix's included."""
        return self.own + (self.prefix.length if self.prefix is not None else 0)

    def reserve(self, more: int) -> None:
        """Room for ``more`` positions (capacity doubles: appending stays amortised O(1))."""
        need = self.own + more
        if need > self.keys.shape[1]:
            cap = max(need, 2 * self.keys.shape[1])
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = np.zeros((old.shape[0], cap, *old.shape[2:]), np.int32)
                new[:, : self.own] = old[:, : self.own]
                setattr(self, name, new)

    def freeze(self) -> SharedPrefix:
        """These positions as a prefix other caches can share (this cache must have none)."""
        assert self.prefix is None
        return SharedPrefix(self.keys[:, : self.own].copy(), self.values[:, : self.own].copy())


class ExactLM:
    """The exact runtime over converted :class:`ModelWeights`; ``products`` is the integer kernel."""

    def __init__(self, weights: ModelWeights, products: Products | None = None) -> None:
        self.w = weights
        self.products: Products = products or NumpyProducts()
        self.cfg = cfg = weights.config
        self.n_layers = cfg.n_layers
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_kv_heads
        self.head_dim = cfg.hidden // cfg.n_heads
        self.vocab_size = cfg.vocab_size
        self.amax_hidden = activation_max(cfg.hidden)
        self.amax_ffn = activation_max(cfg.ffn)
        self._logit_exp = np.append(weights.logit_exp_table, 0)
        self._attention_exp = np.append(weights.attention_exp_table, 0)
        self._prefix_backend = "numpy" if self.products.name == "numpy" else "int8"  # attention over a prefix
        self.native_step = True
        """Run steps and prefills in ``native/step.c`` where it is built and the products are native
        (the same bits as the numpy code; tests and benchmarks turn it off to compare)."""
        self.native_tables = True
        """Compute frequency tables in ``native/frequencies.c`` where it is built (the same integers
        as :meth:`frequencies`; tests and benchmarks turn it off to compare)."""

    def new_cache(self, prefix: SharedPrefix | None = None, capacity: int = 64) -> KVCache:
        """An empty cache, or one continuing after the shared ``prefix``."""
        return KVCache.empty(self.cfg, capacity, prefix)

    # -- building blocks (SPEC §5, steps 2–5) ---------------------------------------------------
    def _matmul(self, x: Quantized, w: QMatrix) -> np.ndarray:
        """``(x_q @ w_q) * x_scale * w_scale``: (N, K) -> (N, out) float64; the product is exact."""
        x_q, x_scale = x
        return self._scaled(self.products(x_q, w), x_scale, w)

    @staticmethod
    def _scaled(acc: np.ndarray, x_scale: RowScalar, w: QMatrix) -> np.ndarray:
        """``(acc * x_scale) * w_scale`` in float64: two correctly rounded products per entry, in
        that order (``native/frequencies.c`` makes the output head's logits the same way)."""
        y = acc.astype(np.float64)  # exact (a mixed-type multiply is slower)
        y *= x_scale  # in place, same order: (product * x_scale) * w_scale
        y *= w.scale
        return y

    def _norm(self, x: np.ndarray, gain: np.ndarray) -> Quantized:
        return rms_quantize(x, gain, self.cfg.rms_eps, self.amax_hidden)

    def _rotation(self, positions: np.ndarray) -> Rotation:
        """RoPE factors of ``positions`` for every head of a fused q/k/v row, made once per
        forward (every layer uses the same).

        ``cos`` repeats each pair's cosine and ``sin`` is ``(-sin, +sin)`` per pair, so that
        ``x * cos + swap(x) * sin`` is ``(even * cos - odd * sin, odd * cos + even * sin)``
        bit for bit (``a + (-b)`` is ``a - b`` in IEEE arithmetic, and ``+`` commutes). The
        value heads get cos 1 and sin 0, which leaves them as they are (``x * 1 + y * 0`` is
        ``x`` up to the sign of a zero, which rounding to an integer drops).
        """
        rotated = self.n_heads + self.n_kv_heads
        cos, sin = self.w.rope_cos[positions], self.w.rope_sin[positions]  # (N, head_dim / 2)
        shape = (len(positions), rotated + self.n_kv_heads, cos.shape[-1], 2)
        cos_f, sin_f = np.ones(shape), np.zeros(shape)
        cos_f[:, :rotated] = cos[:, None, :, None]
        sin_f[:, :rotated, :, 0] = -sin[:, None]
        sin_f[:, :rotated, :, 1] = sin[:, None]
        return cos_f, sin_f

    def _rope(self, x: np.ndarray, rotation: Rotation) -> np.ndarray:
        """Rotate adjacent pairs (GGUF's Llama layout), x: (N, heads, head_dim) -> a new array.

        The rotation's cosines and sines, for every head and pair, come from :meth:`_rotation`.
        """
        cos, sin = rotation
        pairs = x.reshape(*x.shape[:-1], -1, 2)  # (N, heads, head_dim / 2, 2)
        out = pairs * cos
        out += pairs[..., ::-1] * sin  # the pair swapped: (odd, even)
        return out.reshape(x.shape)

    @cached_property
    def _qkv_fixed_point(self) -> tuple[np.ndarray, np.ndarray]:
        """Per head of a fused q/k/v row (H + 2 KV, 1): the fixed-point scale (``2**10`` for
        queries and keys, ``2**12`` for values: exact powers of two) and the integer limit."""
        qk, v = self.n_heads + self.n_kv_heads, self.n_kv_heads
        scale = np.repeat([float(1 << QK_FRACTION_BITS), float(1 << V_FRACTION_BITS)], [qk, v])[:, None]
        limit = np.repeat([float(QK_LIMIT), float(V_LIMIT)], [qk, v])[:, None]
        return scale, limit

    @cached_property
    def _sigmoid_wrapped(self) -> np.ndarray:
        """``Sig`` indexed by ``k`` in ``[-2**14, 2**14]`` directly: negative ``k`` wrap to the end."""
        half = tables.SIGMOID_RANGE << tables.SIGMOID_STEP_BITS
        return np.roll(self.w.sigmoid_table, -half)

    def _silu(self, x: np.ndarray) -> np.ndarray:
        half = tables.SIGMOID_RANGE << tables.SIGMOID_STEP_BITS
        idx = _rint_clip(x * float(1 << tables.SIGMOID_STEP_BITS), half).astype(np.intp)
        return x * self._sigmoid_wrapped.take(idx)

    def _softmax_attend(self, qi: np.ndarray, layer: int, prefix: SharedPrefix | None,
                        k_t: np.ndarray, v: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Integer attention (SPEC §5, step 4) of query rows over the prefix's keys, then their own.

        qi: (B, KV, R, D) integer-valued float64; the own keys k_t (B, KV, D, t) and values
        v (B, KV, t, D) integer-valued float64, ``valid`` (B, 1, R, t) bool or None (all
        visible; the prefix always is). Returns (B, KV, R, D) float64. Every sum is of
        integers below 2**53, so splitting the keys into prefix and own changes no bit.
        """
        b, kvh, r, hd = qi.shape
        scores = (qi @ k_t).astype(np.int64)  # exact: < 2**46
        if valid is not None:  # hidden keys: far below any score, so their weight is the table's final 0
            scores = np.where(valid, scores, -(2**62))
        top = scores.max(axis=-1, keepdims=True)
        shift = ATTENTION_SHIFT  # distance from the row maximum in 2**-8 nat steps
        table = self._attention_exp  # E16 and one 0 past its end
        pre = prefix.products(self._prefix_backend) if prefix is not None and prefix.length else None
        if pre is not None:  # the prefix's part in one go (always visible); the row maximum spans both
            rows = qi.transpose(1, 0, 2, 3).reshape(kvh, b * r, hd)  # (KV, B * R, D)
            own_top = top[..., 0].transpose(1, 0, 2).reshape(kvh, b * r)
            pre_num, pre_z, pre_top = pre.attend(layer, rows, own_top, table, shift)
            top = pre_top.reshape(kvh, b, r).transpose(1, 0, 2)[..., None]
        p = attention_weights(top, scores, table, shift)
        z = p.sum(axis=-1, keepdims=True)
        num = p.astype(np.float64) @ v  # exact: integer sums < 2**53
        if pre is not None:
            z += pre_z.reshape(kvh, b, r).transpose(1, 0, 2)[..., None]
            num += pre_num.reshape(kvh, b, r, hd).transpose(1, 0, 2, 3)
        out: np.ndarray = num / z.astype(np.float64) / float(1 << V_FRACTION_BITS)
        return out

    def _attention(self, qi: np.ndarray, layer: int, segments: list[tuple[int, int, KVCache]]) -> np.ndarray:
        """qi: (N, H, D) integer query rows of all segments -> (N, H * D) float64.

        Each segment's rows attend causally to their cache (which already holds their keys).
        Single-token segments (decode steps) sharing one prefix go together: the prefix's
        keys once for all, their own keys padded to the longest.
        """
        n, group, hd = len(qi), self.n_heads // self.n_kv_heads, self.head_dim
        kvh = self.n_kv_heads
        out = np.empty((n, self.n_heads * hd), dtype=np.float64)
        prefix = segments[0][2].prefix
        if n > 1 and all(hi - lo == 1 and c.prefix is prefix for lo, hi, c in segments):
            owns = np.array([cache.own + 1 for _, _, cache in segments])
            t = int(owns.max())
            k = np.zeros((n, t, kvh, hd), np.int32)
            v = np.zeros((n, t, kvh, hd), np.int32)
            for b, (_, _, cache) in enumerate(segments):
                k[b, : owns[b]] = cache.keys[layer, : owns[b]]
                v[b, : owns[b]] = cache.values[layer, : owns[b]]
            seen = (np.arange(t)[None, :] < owns[:, None])[:, None, None, :]
            q4 = qi.reshape(n, kvh, group, hd)  # head h = kv * group + g
            att = self._softmax_attend(q4, layer, prefix, k.astype(np.float64).transpose(0, 2, 3, 1),
                                       v.astype(np.float64).transpose(0, 2, 1, 3), seen)
            out[:] = att.reshape(n, -1)
            return out
        for lo, hi, cache in segments:
            m, start = hi - lo, cache.own
            t = start + m
            rows = qi[lo:hi].reshape(m, kvh, group, hd).transpose(1, 0, 2, 3).reshape(1, kvh, m * group, hd)
            valid: np.ndarray | None = None  # one new token sees every key
            if m > 1:
                causal = np.arange(t)[None, :] <= (start + np.arange(m))[:, None]  # (m, t)
                valid = np.repeat(causal, group, axis=0)[None, None]  # row r is token r // group
            k_t = cache.keys[layer, :t].astype(np.float64).transpose(1, 2, 0)[None]
            v_f = cache.values[layer, :t].astype(np.float64).transpose(1, 0, 2)[None]
            att = self._softmax_attend(rows, layer, cache.prefix, k_t, v_f, valid)  # (1, KV, m * group, D)
            out[lo:hi] = att.reshape(kvh, m, group, hd).transpose(1, 0, 2, 3).reshape(m, -1)
        return out

    def _attention_block(
        self, layer: LayerWeights, li: int, x: Quantized, rotation: Rotation,
        segments: list[tuple[int, int, KVCache]],
    ) -> np.ndarray:
        """Causal self-attention of normed rows ``x`` (N, hidden) -> (N, hidden)."""
        n, heads, k_end = len(x[0]), self.n_heads, self.n_heads + self.n_kv_heads
        qkv = self._rope(self._matmul(x, layer.qkv).reshape(n, -1, self.head_dim), rotation)  # (N, H + 2 KV, D)
        scale, limit = self._qkv_fixed_point
        qkv *= scale  # q_i = rint(q * 2**10), k_i likewise, v_i = rint(v * 2**12), each clipped (SPEC §5, step 4)
        qkv_i = _rint_clip(qkv, limit)
        qi, ki, vi = qkv_i[:, :heads], qkv_i[:, heads:k_end], qkv_i[:, k_end:]
        for lo, hi, cache in segments:  # the new positions join each cache (length moves after the last layer)
            cache.keys[li, cache.own : cache.own + hi - lo] = ki[lo:hi]  # integers: the int32 store is exact
            cache.values[li, cache.own : cache.own + hi - lo] = vi[lo:hi]
        att = self._attention(qi, li, segments)
        return self._matmul(quantize_rows(att, self.amax_hidden), layer.o)

    def _mlp(self, layer: LayerWeights, x: Quantized) -> np.ndarray:
        """SwiGLU: ``down(silu(gate(x)) * up(x))``, (N, hidden) -> (N, hidden)."""
        gate_up = self._matmul(x, layer.gate_up)  # (N, 2 * ffn)
        gate, up = gate_up[:, : self.cfg.ffn], gate_up[:, self.cfg.ffn :]
        return self._matmul(quantize_rows(self._silu(gate) * up, self.amax_ffn), layer.down)

    # -- the model -------------------------------------------------------------------------
    def forward(self, tokens: Sequence[int] | np.ndarray, cache: KVCache) -> np.ndarray:
        """Evaluate ``tokens`` after the cached positions; returns final hidden states (N, hidden)."""
        return self.forward_many([(tokens, cache)])[0]

    def forward_many(self, segments: Sequence[tuple[Sequence[int] | np.ndarray, KVCache]]) -> list[np.ndarray]:
        """Evaluate several sequences at once, each continuing its own cache.

        The rows of all segments share every weight product (one pass over the weights for
        all of them); attention runs per segment. Rows never mix, so each result is
        bit-identical to evaluating its segment alone.

        A segment longer than :data:`PREFILL_CHUNK` tokens is evaluated alone, in chunks of
        that many: attention's temporaries grow with rows × positions (a 2048-token text in
        one pass peaked at 1.73 GB), and a chunk continuing the cache gives the same bits
        (each row's result depends on that row and the cache only).
        """
        check_rounding()
        if len(segments) == 1 and len(segments[0][0]) == 1 and self.native_step:
            tokens, cache = segments[0]
            hidden = self._native_forward_one(int(np.asarray(tokens).reshape(-1)[0]), cache)
            if hidden is not None:
                return [hidden]
        if len(segments) > 1 and any(len(tokens) > PREFILL_CHUNK for tokens, _ in segments):
            return [self.forward_many([segment])[0] for segment in segments]
        if len(segments) == 1 and len(segments[0][0]) > PREFILL_CHUNK:
            return [np.concatenate([hidden for _, hidden in self.forward_chunks(*segments[0])])]
        return self._forward_segments(segments)

    def forward_chunks(self, tokens: Sequence[int] | np.ndarray, cache: KVCache) -> Iterator[tuple[int, np.ndarray]]:
        """Evaluate ``tokens`` after ``cache`` :data:`PREFILL_CHUNK` at a time (the bits of one
        pass): yields ``(end, hidden)`` per chunk, ``hidden`` the final states of
        ``tokens[end - len(hidden) : end]``, so a caller can place them and report progress."""
        check_rounding()
        cache.reserve(len(tokens))  # once, exactly: doubling would hold up to twice the cache (and a copy)
        for lo in range(0, len(tokens), PREFILL_CHUNK):
            hi = min(len(tokens), lo + PREFILL_CHUNK)
            yield hi, self._forward_segments([(tokens[lo:hi], cache)])[0]

    @cached_property
    def _native_step_model(self) -> tuple[ModuleType, object, str] | None:
        """The extension, its view of these weights and the products' path for
        :meth:`_native_forward_one`, or None where the step cannot run natively: no extension,
        products that are not the native kernel's, or a matrix that kernel does not take."""
        if not isinstance(self.products, NativeProducts) or not all(map(self.products.takes, self.w.matrices())):
            return None
        native = native_products_module()
        if native is None or not hasattr(native, "step"):
            return None
        cfg, w = self.cfg, self.w
        config = (cfg.hidden, cfg.ffn, self.n_heads, self.n_kv_heads, self.head_dim, self.amax_hidden,
                  self.amax_ffn, float(cfg.rms_eps), ATTENTION_SHIFT, tables.SIGMOID_RANGE << tables.SIGMOID_STEP_BITS,
                  tables.SIGMOID_STEP_BITS)
        arrays = (w.rope_cos, w.rope_sin, w.sigmoid_table, self._attention_exp)
        products = self.products
        assert isinstance(products, NativeProducts)

        def matrix(m: QMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # the kernel's layout, as cached
            assert m.colsum is not None
            return products.panels(m), m.colsum, m.scale

        layers = [(ly.attn_norm, *matrix(ly.qkv), *matrix(ly.o), ly.ffn_norm, *matrix(ly.gate_up), *matrix(ly.down))
                  for ly in w.layers]
        try:
            return native, native.step_model(config, arrays, layers), self.products.path
        except (ValueError, TypeError, BufferError):  # a layout the step does not take: the numpy code runs
            return None

    def _prefix_attend(self, prefix: SharedPrefix | None, rows: np.ndarray, own_top: np.ndarray,
                       ) -> Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """The native step's ``attend(layer)``: the prefix kernel's (num, z, top) for the query
        rows and own maxima the step writes into ``rows`` and ``own_top``; None without a prefix."""
        if prefix is None or not prefix.length:
            return None
        kernel, table = prefix.products(self._prefix_backend), self._attention_exp

        def attend(layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            num, z, top = kernel.attend(layer, rows, own_top, table, ATTENTION_SHIFT)
            return (np.ascontiguousarray(num, np.float64), np.ascontiguousarray(z, np.int64),
                    np.ascontiguousarray(top, np.int64))

        return attend

    def _native_forward_one(self, token: int, cache: KVCache) -> np.ndarray | None:
        """One token after ``cache`` in ``native/step.c`` (the numpy code's bits): its final hidden
        state (1, hidden), or None where the step does not run natively or met a value that is
        not finite (the caller then runs the numpy code, which rewrites the cache's new row)."""
        model = self._native_step_model
        position = cache.length
        if model is None or position >= len(self.w.rope_cos):
            return None
        native, state, path = model
        cache.reserve(1)
        embed = self.w.embed
        x = embed.columns(np.array([token]))[0].astype(np.float64) * embed.scale[token]  # (hidden,): as below
        group = self.n_heads // self.n_kv_heads
        rows = np.empty((self.n_kv_heads, group, self.head_dim))  # query rows, written by the step
        own_top = np.empty((self.n_kv_heads, group), np.int64)  # their maxima over the cache's own keys
        attend = self._prefix_attend(cache.prefix, rows, own_top)
        if not native.step(state, x, position, cache.keys, cache.values, cache.own, attend, rows, own_top, path):
            return None
        cache.own += 1
        return x[None]

    def _native_forward_segments(self, segments: Sequence[tuple[np.ndarray, KVCache]]) -> list[np.ndarray] | None:
        """:meth:`_forward_segments` in ``native/step.c`` (``step_many``: the numpy code's bits for
        every row), each token a row: several caches in lockstep, a prefill, or both. The final
        hidden states per segment, or None where it does not run natively (the caches untouched)
        or met a value that is not finite (the caller then runs the numpy code, which rewrites
        every row it stores).

        The rows share every weight product: native up to the products' ``max_rows`` rows, else
        through ``self.products`` (onnxruntime's MLAS where installed), called back from C. Every
        cache must continue one shared prefix (or none), and the scores of all rows fit
        :data:`NATIVE_ROWS_POSITIONS`.
        """
        model = self._native_step_model
        prefix = segments[0][1].prefix
        caches = [cache for _, cache in segments]
        lengths = [len(tokens) for tokens, _ in segments]
        if (model is None or not hasattr(model[0], "step_many") or len({id(c) for c in caches}) < len(caches)
                or any(c.prefix is not prefix for c in caches)
                or max(c.length + n for c, n in zip(caches, lengths, strict=True)) > len(self.w.rope_cos)
                or sum(n * (c.own + n) for c, n in zip(caches, lengths, strict=True)) > NATIVE_ROWS_POSITIONS):
            return None
        native, state, path = model
        ids = np.concatenate([tokens.reshape(-1) for tokens, _ in segments])
        positions = tuple(c.length + i for c, n in zip(caches, lengths, strict=True) for i in range(n))
        for cache, n in zip(caches, lengths, strict=True):
            cache.reserve(n)
        specs = [(c.keys, c.values, c.own + i) for c, n in zip(caches, lengths, strict=True) for i in range(n)]
        m, embed = len(ids), self.w.embed
        x = np.ascontiguousarray(embed.columns(ids) * embed.scale[ids][:, None])  # (M, hidden): as below
        group = self.n_heads // self.n_kv_heads
        rows = np.empty((self.n_kv_heads, m * group, self.head_dim))  # every row's queries, written by the step
        own_top = np.empty((self.n_kv_heads, m * group), np.int64)  # their maxima over their own keys
        attend = self._prefix_attend(prefix, rows, own_top)
        products = staging = None
        if m > getattr(self.products, "max_rows", m):  # past the native kernel's rows: self.products decides
            cfg = self.cfg
            staging = np.empty(m * max(cfg.hidden, cfg.ffn, self.n_heads * self.head_dim), np.int8)
            matrices = [mat for ly in self.w.layers for mat in (ly.qkv, ly.o, ly.gate_up, ly.down)]
            batch = staging

            def products(matrix: int, k: int) -> np.ndarray:
                return np.ascontiguousarray(self.products(batch[: m * k].reshape(m, k), matrices[matrix]), np.int32)

        if not native.step_many(state, x, positions, specs, attend, rows, own_top, products, staging, path):
            return None
        out, lo = [], 0
        for cache, n in zip(caches, lengths, strict=True):
            cache.own += n
            out.append(x[lo : lo + n])
            lo += n
        return out

    def _forward_segments(self, segments: Sequence[tuple[Sequence[int] | np.ndarray, KVCache]]) -> list[np.ndarray]:
        """:meth:`forward_many` in one pass."""
        if self.native_step and len(segments) and all(len(t) for t, _ in segments):
            hidden = self._native_forward_segments([(np.asarray(t, dtype=np.int64), c) for t, c in segments])
            if hidden is not None:
                return hidden
        ids = np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1) for t, _ in segments])
        spans: list[tuple[int, int, KVCache]] = []  # rows [lo, hi) continue cache
        for tokens, cache in segments:
            lo = spans[-1][1] if spans else 0
            if cache.length + len(tokens) > len(self.w.rope_cos):
                raise ValueError(f"sequence of {cache.length + len(tokens)} positions exceeds the runtime's "
                                 f"{len(self.w.rope_cos)}")
            cache.reserve(len(tokens))
            spans.append((lo, lo + len(tokens), cache))
        positions = np.concatenate([np.arange(c.length, c.length + hi - lo) for lo, hi, c in spans])
        rotation = self._rotation(positions)
        embed = self.w.embed
        x = embed.columns(ids) * embed.scale[ids][:, None]  # (N, hidden): exact int8 -> binary64, then * scale
        for li, layer in enumerate(self.w.layers):
            x = x + self._attention_block(layer, li, self._norm(x, layer.attn_norm), rotation, spans)
            x = x + self._mlp(layer, self._norm(x, layer.ffn_norm))
        for lo, hi, cache in spans:
            cache.own += hi - lo
        return [x[lo:hi] for lo, hi, _ in spans]

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Final norm and the tied output head, (N, vocab) float64."""
        return self._matmul(self._norm(hidden, self.w.final_norm), self.w.embed)

    def frequencies(self, logits: np.ndarray) -> np.ndarray:
        """Integer frequency tables (N, vocab) int64: every entry >= 1, each row sums to 2**24 (SPEC §5, step 6).

        ``e = T[round((max - logit) * 256)]`` (0 past the table), then
        ``f = 1 + floor(e * (2**24 - V) / sum(e))`` and the rounding remainder goes to the
        first most probable token.
        """
        table = self._logit_exp  # E24 and one 0 past its end
        dist = logits.max(axis=-1, keepdims=True) - logits
        dist *= float(1 << tables.SOFTMAX_STEP_BITS)
        np.minimum(dist, len(table) - 1, out=dist)  # dist >= 0; clipping before rint: see _rint_clip
        g = table.take(np.rint(dist, out=dist).astype(np.intp))  # e, then g in place (fewer wide temporaries)
        first = np.argmax(g, axis=-1)
        total = g.sum(axis=-1, keepdims=True)
        free = (1 << PRECISION) - logits.shape[-1]
        g *= free  # e * free < 2**48
        g //= total
        g[np.arange(len(g)), first] += free - g.sum(axis=-1)
        g += 1
        return g

    def tables(self, hidden: np.ndarray) -> np.ndarray:
        """Frequency tables (N, vocab) int32 of final hidden states, in chunks of bounded memory:
        :meth:`frequencies`' arithmetic, in ``native/frequencies.c`` where it is built (two passes
        per row instead of numpy's fourteen; the same integers, ``tests/test_native_frequencies.py``)
        unless :attr:`native_tables` is off or a logit is not finite."""
        out = np.empty((len(hidden), self.vocab_size), dtype=np.int32)
        for lo in range(0, len(hidden), _TABLE_CHUNK):
            self._tables_into(hidden[lo : lo + _TABLE_CHUNK], out[lo : lo + _TABLE_CHUNK])
        return out

    def _tables_into(self, hidden: np.ndarray, rows: np.ndarray) -> None:
        """``rows[:] = self.frequencies(self.logits(hidden))``, natively where it can be: the output
        head's exact products, then each row's logits made as :meth:`_scaled` makes them and its
        table at once, rows spread over the products' threads (no (N, vocab) float64 logits)."""
        x_q, x_scale = self._norm(hidden, self.w.final_norm)  # :meth:`logits`, up to its float64 array
        acc = np.ascontiguousarray(self.products(x_q, self.w.embed), dtype=np.int32)
        native = native_products_module() if self.native_tables else None
        if native is not None:
            x_rows = np.ascontiguousarray(np.broadcast_to(np.asarray(x_scale, np.float64).reshape(-1), (len(acc),)))
            if native.head_frequencies(acc, x_rows, np.ascontiguousarray(self.w.embed.scale, np.float64),
                                       self._logit_exp, float(1 << tables.SOFTMAX_STEP_BITS), PRECISION, rows):
                return
        rows[:] = self.frequencies(self._scaled(acc, x_scale, self.w.embed))  # numpy, or a logit not finite


_TABLE_CHUNK = 64  # rows of (N, vocab) temporaries at a time: bounded memory for long texts

NATIVE_ROWS_POSITIONS = 1 << 18
"""The most row-positions (each row's own keys, summed over the rows) one native ``step_many``
call takes: its scores and weights are 16 bytes per head and row-position (38 MB here)."""

PREFILL_CHUNK = 32
"""Tokens of one segment evaluated per pass (:meth:`ExactLM.forward_many`): attention's
temporaries for 32 rows over 2,048 positions stay near 20 MB. Packing a 2,048-token text peaks
at 332 MiB RSS (384 with 128 tokens a pass, 350 with 64) in no more CPU time; 16 saves 11 MiB
more for about 10% more time (``benchmarks/pack_memory.py``)."""
