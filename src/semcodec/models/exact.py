"""A Llama forward pass whose next-token frequency tables are exact on every machine.

Why it is exact (the argument is normative: SPEC §5):

* Every matrix product multiplies integer-valued float32 matrices: weights are int8
  (per-row scale), activations are quantised per token to integers with
  ``|a| <= floor((2**24 - 1) / (127 * K))`` for inner dimension ``K``. Every partial sum
  of any summation order is an integer below ``2**24``, so float32 represents it exactly:
  the BLAS kernel, thread count, blocking and FMA use cannot change a single bit.
* Attention products use integer-valued float64 matrices bounded below ``2**53``.
* Everything else is elementwise: IEEE ``+ - * /`` and ``sqrt`` (correctly rounded
  everywhere), ``rint``, ``max``, table lookups, and int64 sums (exact in any order).
  No libm function runs: exp, sigmoid and the RoPE angles come from
  :mod:`semcodec.models.tables`.
* Each token's row is computed from that row alone, except attention, which is integer
  arithmetic over the cache: whole-sequence and incremental evaluation agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from semcodec.models import tables
from semcodec.models.weights import ModelWeights

PRECISION = 24
"""Frequency tables sum to ``2**PRECISION``."""

WEIGHT_MAX = 127
QK_FRACTION_BITS = 10
V_FRACTION_BITS = 12
QK_LIMIT = 2**20 - 1  # keeps |q.k| over 64 dims below 2**46
V_LIMIT = 2**24 - 1  # keeps sum_j p_j v_j below 2**16 * 2**24 * 2**12 = 2**52
MAX_POSITIONS = 4096 + 256
"""Context plus text tokens the runtime supports (the codec's limits stay below)."""


def activation_max(inner_dim: int) -> int:
    """Largest activation magnitude that keeps every float32 partial sum exact."""
    return min(127, (2**24 - 1) // (WEIGHT_MAX * inner_dim))


def quantize_rows(x: np.ndarray, amax_int: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantisation: ``x ~ q * scale`` with integer ``|q| <= amax_int``."""
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    scale = np.where(amax > 0, amax / amax_int, 1.0)
    q = np.clip(np.rint(x / scale), -amax_int, amax_int).astype(np.float32)
    return q, scale


class NumpyProducts:
    """Integer-valued float32 products through numpy's BLAS."""

    name = "numpy"

    def __call__(self, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
        return x_q @ w_q.T


class TorchProducts:
    """The same products through torch (CPU or CUDA): equal bits, by the same argument.

    TF32 is switched off although it would not matter here: |x_q|, |w_q| <= 127 need 7
    mantissa bits, which TF32 (10) and even bf16 (7) hold exactly; accumulation is float32.
    """

    def __init__(self, device: str = "cpu") -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self._torch = torch
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"
        self._weights: dict[int, object] = {}

    def __call__(self, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
        torch = self._torch
        key = id(w_q)
        w_t = self._weights.get(key)
        if w_t is None:
            w_t = torch.from_numpy(np.ascontiguousarray(w_q)).to(self.device)
            self._weights[key] = w_t
        x_t = torch.from_numpy(np.ascontiguousarray(x_q)).to(self.device)
        out: np.ndarray = (x_t @ w_t.T).cpu().numpy()  # type: ignore[attr-defined]
        return out


def exact_matmul(
    x_q: np.ndarray, x_scale: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray,
    products: NumpyProducts | TorchProducts | None = None,
) -> np.ndarray:
    """``(x_q @ w_q.T) * x_scale * w_scale``; the product is exact (see module docstring)."""
    product = (products or _NUMPY)(x_q, w_q)
    return product.astype(np.float64) * x_scale * w_scale


_NUMPY = NumpyProducts()


def rms_quantize(x: np.ndarray, gain: np.ndarray, eps: float, amax_int: int) -> tuple[np.ndarray, np.ndarray]:
    """RMSNorm followed by activation quantisation, with an order-independent sum of squares.

    ``rms`` cancels inside the quantiser, so only the scale needs it; the sum of squares
    is taken over a 16-bit integer image of ``x`` in int64.
    """
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    step = np.where(amax > 0, amax / 32767.0, 1.0)
    xi = np.rint(x / step).astype(np.int64)
    sumsq = np.sum(xi * xi, axis=-1, keepdims=True).astype(np.float64)
    rms = np.sqrt(sumsq * step * step / x.shape[-1] + eps)
    q, scale = quantize_rows(x * gain, amax_int)
    return q, scale / rms


@dataclass
class KVCache:
    """Integer keys and values (as float64) of every position evaluated so far."""

    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    length: int = 0


class ExactLM:
    """The exact runtime over converted :class:`ModelWeights`."""

    def __init__(self, weights: ModelWeights, products: NumpyProducts | TorchProducts | None = None) -> None:
        self.w = weights
        self.products = products or _NUMPY
        cfg = weights.config
        self.n_layers = cfg.n_layers
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_kv_heads
        self.head_dim = cfg.hidden // cfg.n_heads
        self.vocab_size = cfg.vocab_size
        self.eps = cfg.rms_eps
        self.amax_hidden = activation_max(cfg.hidden)
        self.amax_ffn = activation_max(cfg.ffn)
        self.cos, self.sin = weights.rope_cos, weights.rope_sin
        self.sigmoid = weights.sigmoid_table
        self.attn_exp = weights.attention_exp_table
        self.logit_exp = weights.logit_exp_table

    # -- building blocks -------------------------------------------------------------
    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotate adjacent pairs (GGUF's Llama layout), x: (N, heads, head_dim)."""
        cos = self.cos[positions][:, None, :]
        sin = self.sin[positions][:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def _silu(self, x: np.ndarray) -> np.ndarray:
        half = tables.SIGMOID_RANGE << tables.SIGMOID_STEP_BITS
        idx = np.clip(np.rint(x * float(1 << tables.SIGMOID_STEP_BITS)), -half, half).astype(np.int64)
        return x * self.sigmoid[idx + half]

    def _attention(self, q: np.ndarray, k_all: np.ndarray, v_all: np.ndarray, start: int) -> np.ndarray:
        """q: (N, H, D) float; k_all/v_all: (T, KV, D) integer-valued; causal from ``start``."""
        n = q.shape[0]
        t = k_all.shape[0]
        qi = np.clip(np.rint(q * float(1 << QK_FRACTION_BITS)), -QK_LIMIT, QK_LIMIT)
        group = self.n_heads // self.n_kv_heads
        # Distance (in 2**-8 nat steps) from the row maximum; score = q.k / (2**20 * 8).
        shift = 2 * QK_FRACTION_BITS + 3 - tables.SOFTMAX_STEP_BITS
        causal = np.arange(t)[None, :] <= (start + np.arange(n))[:, None]
        out = np.empty(q.shape, dtype=np.float64)
        table = self.attn_exp
        for h in range(self.n_heads):
            kv = h // group
            scores = (qi[:, h, :] @ k_all[:, kv, :].T).astype(np.int64)  # exact: < 2**46
            scores = np.where(causal, scores, -(2**62))
            dist = np.where(causal, scores.max(axis=1, keepdims=True) - scores, 0)
            idx = np.where(causal, (dist + (1 << (shift - 1))) >> shift, len(table))
            p = np.where(idx < len(table), table[np.minimum(idx, len(table) - 1)], 0)
            z = p.sum(axis=1, keepdims=True)
            num = p.astype(np.float64) @ v_all[:, kv, :]  # exact: < 2**53
            out[:, h, :] = num / z.astype(np.float64) / float(1 << V_FRACTION_BITS)
        return out

    # -- the model ---------------------------------------------------------------------
    def forward(self, tokens: Sequence[int] | np.ndarray, cache: KVCache) -> np.ndarray:
        """Evaluate ``tokens`` after the cached positions; returns final hidden states (N, hidden)."""
        return self.forward_many([(tokens, cache)])[0]

    def forward_many(self, segments: Sequence[tuple[Sequence[int] | np.ndarray, KVCache]]) -> list[np.ndarray]:
        """Evaluate several sequences at once, each continuing its own cache.

        The rows of all segments share every weight matrix product (one pass over the
        weights for all of them); attention runs per segment. Rows never mix, so each
        result is bit-identical to evaluating its segment alone.
        """
        w = self.w
        ids = np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1) for t, _ in segments])
        bounds: list[tuple[int, int, int]] = []  # (row_lo, row_hi, start position)
        row = 0
        for tokens, cache in segments:
            n_seg = len(tokens)
            if cache.length + n_seg > len(self.cos):
                raise ValueError(f"sequence of {cache.length + n_seg} positions exceeds the runtime's {len(self.cos)}")
            bounds.append((row, row + n_seg, cache.length))
            row += n_seg
        n = len(ids)
        positions = np.concatenate([np.arange(s, s + hi - lo) for lo, hi, s in bounds])
        x = w.embed_q[ids].astype(np.float64) * w.embed_scale[ids][:, None]
        hd = self.head_dim
        for li, layer in enumerate(w.layers):
            a_q, a_s = rms_quantize(x, layer.attn_norm, self.eps, self.amax_hidden)
            q = exact_matmul(a_q, a_s, layer.wq, layer.wq_scale, self.products).reshape(n, self.n_heads, hd)
            k = exact_matmul(a_q, a_s, layer.wk, layer.wk_scale, self.products).reshape(n, self.n_kv_heads, hd)
            v = exact_matmul(a_q, a_s, layer.wv, layer.wv_scale, self.products).reshape(n, self.n_kv_heads, hd)
            q = self._rope(q, positions)
            k = self._rope(k, positions)
            ki = np.clip(np.rint(k * float(1 << QK_FRACTION_BITS)), -QK_LIMIT, QK_LIMIT)
            vi = np.clip(np.rint(v * float(1 << V_FRACTION_BITS)), -V_LIMIT, V_LIMIT)
            att = np.empty((n, self.n_heads * hd), dtype=np.float64)
            for (lo, hi, start), (_, cache) in zip(bounds, segments, strict=True):
                if li < len(cache.keys):
                    cache.keys[li] = np.concatenate([cache.keys[li], ki[lo:hi]])
                    cache.values[li] = np.concatenate([cache.values[li], vi[lo:hi]])
                else:
                    cache.keys.append(ki[lo:hi])
                    cache.values.append(vi[lo:hi])
                att[lo:hi] = self._attention(q[lo:hi], cache.keys[li], cache.values[li], start).reshape(hi - lo, -1)
            o_q, o_s = quantize_rows(att, self.amax_hidden)
            x = x + exact_matmul(o_q, o_s, layer.wo, layer.wo_scale, self.products)
            m_q, m_s = rms_quantize(x, layer.ffn_norm, self.eps, self.amax_hidden)
            gate = exact_matmul(m_q, m_s, layer.wg, layer.wg_scale, self.products)
            up = exact_matmul(m_q, m_s, layer.wu, layer.wu_scale, self.products)
            d_q, d_s = quantize_rows(self._silu(gate) * up, self.amax_ffn)
            x = x + exact_matmul(d_q, d_s, layer.wd, layer.wd_scale, self.products)
        for (lo, hi, start), (_, cache) in zip(bounds, segments, strict=True):
            cache.length = start + hi - lo
        return [x[lo:hi] for lo, hi, _ in bounds]

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Final norm and the tied output head, (N, vocab) float64."""
        h_q, h_s = rms_quantize(hidden, self.w.final_norm, self.eps, self.amax_hidden)
        return exact_matmul(h_q, h_s, self.w.embed_q, self.w.embed_scale, self.products)

    def frequencies(self, logits: np.ndarray) -> np.ndarray:
        """Integer frequency tables (N, vocab) int64: every entry >= 1, each row sums to 2**24.

        ``e = T[round((max - logit) * 256)]`` (0 past the table), then
        ``f = 1 + floor(e * (2**24 - V) / sum(e))`` and the rounding remainder goes to the
        first most probable token.
        """
        table = self.logit_exp
        dist = np.rint((logits.max(axis=-1, keepdims=True) - logits) * float(1 << tables.SOFTMAX_STEP_BITS))
        idx = np.minimum(dist, len(table)).astype(np.int64)
        e = np.where(idx < len(table), table[np.minimum(idx, len(table) - 1)], 0)
        free = (1 << PRECISION) - logits.shape[-1]
        total = e.sum(axis=-1, keepdims=True)
        g = (e * free) // total
        rows = np.arange(len(g))
        g[rows, np.argmax(e, axis=-1)] += free - g.sum(axis=-1)
        return g + 1


class Session:
    """Incremental evaluation: the decoder's view (one token at a time, KV cache)."""

    def __init__(self, lm: ExactLM, context: Sequence[int]) -> None:
        self.lm = lm
        self.cache = KVCache()
        self._last_hidden = lm.forward(context, self.cache)[-1:]

    def next_frequencies(self) -> np.ndarray:
        return self.lm.frequencies(self.lm.logits(self._last_hidden))[0]

    def append(self, token: int) -> None:
        self._last_hidden = self.lm.forward([token], self.cache)


def batch_frequencies(lm: ExactLM, context: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """The encoder's view: tables for ``tokens`` (and one more position) in one pass.

    Row ``i`` is the table for ``tokens[i]`` given ``context + tokens[:i]``; the last row
    follows the whole text (it codes end-of-text).
    """
    cache = KVCache()
    seq = list(context) + list(tokens)
    return tables_from_hidden(lm, lm.forward(seq, cache)[len(context) - 1 :])


def tables_from_hidden(lm: ExactLM, hidden: np.ndarray) -> np.ndarray:
    """Frequency tables (N, vocab) int32 of final hidden states, in chunks of bounded memory."""
    out = np.empty((len(hidden), lm.vocab_size), dtype=np.int32)
    for lo in range(0, len(hidden), _TABLE_CHUNK):
        out[lo : lo + _TABLE_CHUNK] = lm.frequencies(lm.logits(hidden[lo : lo + _TABLE_CHUNK]))
    return out


_TABLE_CHUNK = 64  # rows of (N, vocab) temporaries at a time: bounded memory for long texts
