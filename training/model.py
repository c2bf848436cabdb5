"""SmolLM2-135M in float torch, built from the exact runtime's own int8 weights.

The adapter must be trained on the weights the codec runs, so the base is not the GGUF's
float dequantisation but the runtime's requantised rows (SPEC §5, step 1): each matrix is
``q * scale`` read from the converted cache entry. Layouts follow the GGUF (RoPE on adjacent
pairs ``(2i, 2i+1)``, head ``h`` reads kv head ``h // group``), the same as
``semcodec.models.exact``; only the arithmetic is float.

A block reads as nanoGPT's: ``x = x + attn(norm(x)); x = x + mlp(norm(x))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


@dataclass(frozen=True)
class Config:
    n_layers: int = 30
    hidden: int = 576
    ffn: int = 1536
    n_heads: int = 9
    n_kv_heads: int = 3
    vocab: int = 49152
    rope_theta: float = 100000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg: Config, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (length, head_dim / 2) for adjacent-pair RoPE."""
    inv = cfg.rope_theta ** (-torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D) with pairs (2i, 2i+1) -> rotated, same shape."""
    pairs = x.unflatten(-1, (-1, 2))  # (B, H, T, D/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden, cfg.n_heads * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.n_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.n_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * d, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, hidden)
        d, h, kv = self.cfg.head_dim, self.cfg.n_heads, self.cfg.n_kv_heads
        q = self.q_proj(x).view(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, kv, d).transpose(1, 2)  # (B, KV, T, D)
        v = self.v_proj(x).view(b, t, kv, d).transpose(1, 2)
        q, k = apply_rope(q, cos[:t], sin[:t]), apply_rope(k, cos[:t], sin[:t])
        k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)  # head h -> kv h // group
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, h * d))


class MLP(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.self_attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.ffn_norm(x))


class SmolLM(nn.Module):
    def __init__(self, cfg: Config, max_len: int = 1024) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        cos, sin = rope_tables(cfg, max_len)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> final normed hidden states (B, T, hidden)."""
        x = self.embed(ids)
        for block in self.layers:
            x = block(x, self.cos, self.sin)
        return self.norm(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.embed.weight.T  # tied output head


# The runtime's fused matrices, unfused: (fused name, torch module path, first row, last row)
_PARTS = {
    "qkv": (("self_attn.q_proj", 0, 576), ("self_attn.k_proj", 576, 768), ("self_attn.v_proj", 768, 960)),
    "o": (("self_attn.o_proj", 0, 576),),
    "gate_up": (("mlp.gate_proj", 0, 1536), ("mlp.up_proj", 1536, 3072)),
    "down": (("mlp.down_proj", 0, 576),),
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def runtime_rows(matrix: object) -> np.ndarray:
    """A runtime QMatrix as float64 rows (N, K): ``q * scale``, what SPEC §5 step 1 means."""
    q = np.asarray(matrix.q, dtype=np.float64).T  # type: ignore[attr-defined]
    return q * np.asarray(matrix.scale, dtype=np.float64)[:, None]  # type: ignore[attr-defined]


def base_rows() -> dict[str, np.ndarray]:
    """``{"layers.{i}.self_attn.q_proj": rows (N, K) float64, ...}`` from the runtime's cache."""
    from semcodec.models.weights import load_weights
    from semcodec.registry import SMOLLM2_135M_INSTRUCT

    w = load_weights(SMOLLM2_135M_INSTRUCT)
    out: dict[str, np.ndarray] = {"embed": runtime_rows(w.embed)}
    for i, layer in enumerate(w.layers):
        for fused, parts in _PARTS.items():
            rows = runtime_rows(getattr(layer, fused))
            for path, lo, hi in parts:
                out[f"layers.{i}.{path}"] = rows[lo:hi]
        out[f"layers.{i}.attn_norm"] = np.asarray(layer.attn_norm, dtype=np.float64)
        out[f"layers.{i}.ffn_norm"] = np.asarray(layer.ffn_norm, dtype=np.float64)
    out["norm"] = np.asarray(w.final_norm, dtype=np.float64)
    return out


def build(max_len: int = 1024) -> SmolLM:
    """The float model with the runtime's base weights, frozen."""
    model = SmolLM(Config(), max_len)
    rows = base_rows()
    with torch.no_grad():
        model.embed.weight.copy_(torch.from_numpy(rows.pop("embed")).float())
        for name, value in rows.items():
            module = model.get_submodule(name)
            module.weight.copy_(torch.from_numpy(value).float())
    for p in model.parameters():
        p.requires_grad_(False)
    return model
