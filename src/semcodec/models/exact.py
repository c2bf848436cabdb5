"""A Llama forward pass whose next-token frequency tables are exact on every machine.

Why it is exact (the argument is normative: SPEC §5):

* Every weight product multiplies integers: weights are int8 (per-output scale),
  activations are quantised per token to integers with
  ``|a| <= floor((2**24 - 1) / (127 * K))`` for inner dimension ``K``. Every partial sum
  of any summation order is an integer below ``2**24``: exact in int32 and in float32, so
  the kernel (:mod:`semcodec.models.kernels`: int8 MatMulInteger, float32 BLAS, torch),
  its blocking, threads and FMA use cannot change a single bit.
* Attention products use integer-valued float64 matrices bounded below ``2**53``; the KV
  cache holds the integers themselves (int32).
* Everything else is elementwise: IEEE ``+ - * /`` and ``sqrt`` (correctly rounded
  everywhere), ``rint``, ``max``, table lookups, and int64 sums (exact in any order).
  No libm function runs: exp, sigmoid and the RoPE angles come from
  :mod:`semcodec.models.tables`.
* Each token's row is computed from that row alone, except attention, which is integer
  arithmetic over the cache: whole-sequence, incremental and batched evaluation agree
  bit for bit.

    >>> from semcodec.models import load_model
    >>> lm = load_model(0).lm
    >>> cache = lm.new_cache()
    >>> hidden = lm.forward([504, 2365], cache)  # two tokens
    >>> lm.frequencies(lm.logits(hidden[-1:])).sum()
    np.int64(16777216)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semcodec.models import tables
from semcodec.models.kernels import NumpyProducts, Products, QMatrix
from semcodec.models.weights import MAX_POSITIONS, LayerWeights, ModelConfig, ModelWeights

__all__ = ["MAX_POSITIONS", "PRECISION", "WEIGHT_MAX", "ExactLM", "KVCache", "activation_max", "quantize_rows"]

PRECISION = 24
"""Frequency tables sum to ``2**PRECISION``."""

WEIGHT_MAX = 127
QK_FRACTION_BITS = 10
V_FRACTION_BITS = 12
QK_LIMIT = 2**20 - 1  # keeps |q.k| over 64 dims below 2**46
V_LIMIT = 2**24 - 1  # keeps sum_j p_j v_j below 2**16 * 2**24 * 2**12 = 2**52

Quantized = tuple[np.ndarray, np.ndarray]
"""Activation rows ``x ~ q * scale``: q (N, K) int8, scale (N, 1) float64."""


def activation_max(inner_dim: int) -> int:
    """Largest activation magnitude that keeps every partial sum below ``2**24`` (SPEC §5.2)."""
    return min(127, (2**24 - 1) // (WEIGHT_MAX * inner_dim))


def quantize_rows(x: np.ndarray, amax_int: int) -> Quantized:
    """Per-row symmetric quantisation: ``x ~ q * scale`` with integer ``|q| <= amax_int`` (SPEC §5.2)."""
    amax = np.abs(x).max(axis=-1, keepdims=True)
    scale = np.where(amax > 0, amax / amax_int, 1.0)
    q = np.rint(x / scale).clip(-amax_int, amax_int).astype(np.int8)
    return q, scale


def rms_quantize(x: np.ndarray, gain: np.ndarray, eps: float, amax_int: int) -> Quantized:
    """RMSNorm followed by activation quantisation, with an order-independent sum of squares (SPEC §5.3).

    ``rms`` cancels inside the quantiser, so only the scale needs it; the sum of squares
    is taken over a 16-bit integer image of ``x`` in int64.
    """
    amax = np.abs(x).max(axis=-1, keepdims=True)
    step = np.where(amax > 0, amax / 32767.0, 1.0)
    xi = np.rint(x / step).astype(np.int64)
    sumsq = (xi * xi).sum(axis=-1, keepdims=True).astype(np.float64)
    rms = np.sqrt(sumsq * step * step / x.shape[-1] + eps)
    q, scale = quantize_rows(x * gain, amax_int)
    return q, scale / rms


@dataclass
class KVCache:
    """Integer keys and values of every position evaluated so far (SPEC §5.4).

    ``keys``/``values``: (layers, capacity, kv_heads, head_dim) int32, positions
    ``[0, length)`` filled. |k| < 2**20 and |v| < 2**24 fit int32: half of float64's bytes.
    """

    keys: np.ndarray
    values: np.ndarray
    length: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, capacity: int = 64) -> KVCache:
        shape = (cfg.n_layers, capacity, cfg.n_kv_heads, cfg.hidden // cfg.n_heads)
        return cls(np.zeros(shape, np.int32), np.zeros(shape, np.int32))

    def reserve(self, more: int) -> None:
        """Room for ``more`` positions (capacity doubles: appending stays amortised O(1))."""
        need = self.length + more
        if need > self.keys.shape[1]:
            cap = max(need, 2 * self.keys.shape[1])
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = np.zeros((old.shape[0], cap, *old.shape[2:]), np.int32)
                new[:, : self.length] = old[:, : self.length]
                setattr(self, name, new)

    def copy(self, headroom: int = 32) -> KVCache:
        """An independent cache with the same positions (and room for ``headroom`` more)."""
        out = KVCache.empty_like(self, self.length + headroom)
        out.keys[:, : self.length] = self.keys[:, : self.length]
        out.values[:, : self.length] = self.values[:, : self.length]
        out.length = self.length
        return out

    @classmethod
    def empty_like(cls, other: KVCache, capacity: int) -> KVCache:
        shape = (other.keys.shape[0], capacity, *other.keys.shape[2:])
        return cls(np.zeros(shape, np.int32), np.zeros(shape, np.int32))


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

    def new_cache(self) -> KVCache:
        return KVCache.empty(self.cfg)

    # -- building blocks (SPEC §5.2-5.5) ---------------------------------------------------
    def _matmul(self, x: Quantized, w: QMatrix) -> np.ndarray:
        """``(x_q @ w_q) * x_scale * w_scale``: (N, K) -> (N, out) float64; the product is exact."""
        x_q, x_scale = x
        return self.products(x_q, w).astype(np.float64) * x_scale * w.scale

    def _norm(self, x: np.ndarray, gain: np.ndarray) -> Quantized:
        return rms_quantize(x, gain, self.cfg.rms_eps, self.amax_hidden)

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotate adjacent pairs (GGUF's Llama layout), x: (N, heads, head_dim)."""
        cos = self.w.rope_cos[positions][:, None, :]
        sin = self.w.rope_sin[positions][:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def _silu(self, x: np.ndarray) -> np.ndarray:
        half = tables.SIGMOID_RANGE << tables.SIGMOID_STEP_BITS
        idx = np.clip(np.rint(x * float(1 << tables.SIGMOID_STEP_BITS)), -half, half).astype(np.int64)
        return x * self.w.sigmoid_table[idx + half]

    def _softmax_attend(self, qi: np.ndarray, k: np.ndarray, v: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Integer attention (SPEC §5.4) for B independent groups of rows.

        qi: (B, KV, R, D) integer-valued float64, k/v: (B, KV, T, D) int32,
        valid: (B, 1, R, T) which keys each row sees. Returns (B, KV, R, D) float64.
        """
        scores = (qi @ k.astype(np.float64).transpose(0, 1, 3, 2)).astype(np.int64)  # exact: < 2**46
        # Distance (in 2**-8 nat steps) from the row maximum; score = q.k / (2**20 * 8).
        shift = 2 * QK_FRACTION_BITS + 3 - tables.SOFTMAX_STEP_BITS
        table = self.w.attention_exp_table
        scores = np.where(valid, scores, -(2**62))
        dist = np.where(valid, scores.max(axis=-1, keepdims=True) - scores, 0)
        idx = np.where(valid, (dist + (1 << (shift - 1))) >> shift, len(table))
        p = np.where(idx < len(table), table[np.minimum(idx, len(table) - 1)], 0)
        z = p.sum(axis=-1, keepdims=True)
        num = p.astype(np.float64) @ v.astype(np.float64)  # exact: < 2**53
        out: np.ndarray = num / z.astype(np.float64) / float(1 << V_FRACTION_BITS)
        return out

    def _attention(self, qi: np.ndarray, layer: int, segments: list[tuple[int, int, KVCache]]) -> np.ndarray:
        """qi: (N, H, D) integer query rows of all segments -> (N, H * D) float64.

        Each segment's rows attend causally to its own cache (already holding their keys).
        Single-token segments (decode steps) go together, padded to the longest cache.
        """
        n, group, hd = len(qi), self.n_heads // self.n_kv_heads, self.head_dim
        kvh = self.n_kv_heads
        out = np.empty((n, self.n_heads * hd), dtype=np.float64)
        if all(hi - lo == 1 for lo, hi, _ in segments):
            lengths = np.array([cache.length + 1 for _, _, cache in segments])
            t = int(lengths.max())
            if n == 1:
                k, v = segments[0][2].keys[layer, None, :t], segments[0][2].values[layer, None, :t]
            else:
                k = np.zeros((n, t, kvh, hd), np.int32)
                v = np.zeros((n, t, kvh, hd), np.int32)
                for b, (_, _, cache) in enumerate(segments):
                    k[b, : lengths[b]] = cache.keys[layer, : lengths[b]]
                    v[b, : lengths[b]] = cache.values[layer, : lengths[b]]
            valid = (np.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
            q4 = qi.reshape(n, kvh, group, hd)  # head h = kv * group + g
            att = self._softmax_attend(q4, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), valid)
            out[:] = att.reshape(n, -1)
            return out
        for lo, hi, cache in segments:
            m, start = hi - lo, cache.length
            t = start + m
            rows = qi[lo:hi].reshape(m, kvh, group, hd).transpose(1, 0, 2, 3).reshape(1, kvh, m * group, hd)
            causal = np.arange(t)[None, :] <= (start + np.arange(m))[:, None]  # (m, t)
            valid = np.repeat(causal, group, axis=0)[None, None]  # row r is token r // group
            k = cache.keys[layer, :t].transpose(1, 0, 2)[None]
            v = cache.values[layer, :t].transpose(1, 0, 2)[None]
            att = self._softmax_attend(rows, k, v, valid)  # (1, KV, m * group, D)
            out[lo:hi] = att.reshape(kvh, m, group, hd).transpose(1, 0, 2, 3).reshape(m, -1)
        return out

    def _attention_block(
        self, layer: LayerWeights, li: int, x: Quantized, positions: np.ndarray,
        segments: list[tuple[int, int, KVCache]],
    ) -> np.ndarray:
        """Causal self-attention of normed rows ``x`` (N, hidden) -> (N, hidden)."""
        n, hd = len(positions), self.head_dim
        qkv = self._matmul(x, layer.qkv)  # (N, (H + 2 KV) * D)
        q_end, k_end = self.n_heads * hd, (self.n_heads + self.n_kv_heads) * hd
        q = self._rope(qkv[:, :q_end].reshape(n, self.n_heads, hd), positions)
        k = self._rope(qkv[:, q_end:k_end].reshape(n, self.n_kv_heads, hd), positions)
        v = qkv[:, k_end:]
        qi = np.clip(np.rint(q * float(1 << QK_FRACTION_BITS)), -QK_LIMIT, QK_LIMIT)
        ki = np.clip(np.rint(k * float(1 << QK_FRACTION_BITS)), -QK_LIMIT, QK_LIMIT).astype(np.int32)
        vi = np.clip(np.rint(v * float(1 << V_FRACTION_BITS)), -V_LIMIT, V_LIMIT).astype(np.int32)
        for lo, hi, cache in segments:  # the new positions join each cache (length moves after the last layer)
            cache.keys[li, cache.length : cache.length + hi - lo] = ki[lo:hi]
            cache.values[li, cache.length : cache.length + hi - lo] = vi[lo:hi].reshape(hi - lo, self.n_kv_heads, hd)
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
        """
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
        embed = self.w.embed
        x = embed.q[:, ids].T.astype(np.float64) * embed.scale[ids][:, None]  # (N, hidden)
        for li, layer in enumerate(self.w.layers):
            x = x + self._attention_block(layer, li, self._norm(x, layer.attn_norm), positions, spans)
            x = x + self._mlp(layer, self._norm(x, layer.ffn_norm))
        for lo, hi, cache in spans:
            cache.length += hi - lo
        return [x[lo:hi] for lo, hi, _ in spans]

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Final norm and the tied output head, (N, vocab) float64."""
        return self._matmul(self._norm(hidden, self.w.final_norm), self.w.embed)

    def frequencies(self, logits: np.ndarray) -> np.ndarray:
        """Integer frequency tables (N, vocab) int64: every entry >= 1, each row sums to 2**24 (SPEC §5.6).

        ``e = T[round((max - logit) * 256)]`` (0 past the table), then
        ``f = 1 + floor(e * (2**24 - V) / sum(e))`` and the rounding remainder goes to the
        first most probable token.
        """
        table = self.w.logit_exp_table
        dist = np.rint((logits.max(axis=-1, keepdims=True) - logits) * float(1 << tables.SOFTMAX_STEP_BITS))
        idx = np.minimum(dist, len(table)).astype(np.int64)
        e = np.where(idx < len(table), table[np.minimum(idx, len(table) - 1)], 0)
        free = (1 << PRECISION) - logits.shape[-1]
        total = e.sum(axis=-1, keepdims=True)
        g = (e * free) // total
        rows = np.arange(len(g))
        g[rows, np.argmax(e, axis=-1)] += free - g.sum(axis=-1)
        return g + 1

    def tables(self, hidden: np.ndarray) -> np.ndarray:
        """Frequency tables (N, vocab) int32 of final hidden states, in chunks of bounded memory."""
        out = np.empty((len(hidden), self.vocab_size), dtype=np.int32)
        for lo in range(0, len(hidden), _TABLE_CHUNK):
            out[lo : lo + _TABLE_CHUNK] = self.frequencies(self.logits(hidden[lo : lo + _TABLE_CHUNK]))
        return out


_TABLE_CHUNK = 64  # rows of (N, vocab) temporaries at a time: bounded memory for long texts
