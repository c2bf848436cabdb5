"""The plain float32 forward pass of the same GGUF: the quality yardstick, never the codec.

Its probabilities depend on summation order (BLAS kernel, threads, batch vs. cache), so
files coded with it would not decode everywhere; benchmarks use it to measure what the
exact runtime's integer arithmetic costs in cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semcodec.models.gguf import GGUFFile
from semcodec.models.weights import _config_from_gguf


class FloatLM:
    """SmolLM2-style Llama in float32 numpy, whole-sequence evaluation only."""

    def __init__(self, gguf_path: Path) -> None:
        gguf = GGUFFile(gguf_path)
        self.cfg = _config_from_gguf(gguf.metadata)

        def get(name: str) -> np.ndarray:
            return gguf.dequantize(name).astype(np.float32)

        self.embed = get("token_embd.weight")
        self.final_norm = get("output_norm.weight")
        self.layers = [
            {key: get(f"blk.{i}.{key}.weight") for key in (
                "attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                "ffn_gate", "ffn_up", "ffn_down")}
            for i in range(self.cfg.n_layers)
        ]

    def _norm(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.cfg.rms_eps) * g).astype(np.float32)

    def log_probs(self, tokens: Sequence[int]) -> np.ndarray:
        """Natural-log next-token distributions after each position, (N, vocab)."""
        cfg = self.cfg
        n = len(tokens)
        hd = cfg.hidden // cfg.n_heads
        group = cfg.n_heads // cfg.n_kv_heads
        inv = cfg.rope_theta ** (-np.arange(0, hd, 2) / hd)
        ang = np.arange(n)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

        def rope(t: np.ndarray) -> np.ndarray:
            out = np.empty_like(t)
            out[..., 0::2] = t[..., 0::2] * cos - t[..., 1::2] * sin
            out[..., 1::2] = t[..., 0::2] * sin + t[..., 1::2] * cos
            return out

        mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
        x = self.embed[np.asarray(tokens)]
        for layer in self.layers:
            h = self._norm(x, layer["attn_norm"])
            q = rope((h @ layer["attn_q"].T).reshape(n, cfg.n_heads, hd))
            k = rope((h @ layer["attn_k"].T).reshape(n, cfg.n_kv_heads, hd))
            v = (h @ layer["attn_v"].T).reshape(n, cfg.n_kv_heads, hd)
            att = np.empty((n, cfg.n_heads, hd), dtype=np.float32)
            for head in range(cfg.n_heads):
                s = q[:, head] @ k[:, head // group].T / np.sqrt(hd) + mask
                p = np.exp(s - s.max(axis=1, keepdims=True))
                att[:, head] = (p / p.sum(axis=1, keepdims=True)) @ v[:, head // group]
            x = x + att.reshape(n, -1) @ layer["attn_output"].T
            h = self._norm(x, layer["ffn_norm"])
            gate = h @ layer["ffn_gate"].T
            x = x + (gate / (1 + np.exp(-gate)) * (h @ layer["ffn_up"].T)) @ layer["ffn_down"].T
        logits = self._norm(x, self.final_norm) @ self.embed.T
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
