"""Turn a trained LoRA (``adapter.pt``) into the integer factors that ship (SPEC §5, step 1b).

For each adapted matrix, peft's float factors ``A`` (r, K), ``B`` (N, r) and scaling ``α/r``
become ``A_int`` (int8, one scale for the matrix), ``B_int`` (int8, one scale per row) and a
per-row factor ``c = α/r · s_A · s_B[n]`` (binary32), after balancing each rank component so
that ``A`` and ``B`` share its magnitude (the product is unchanged; both quantise well).
Writes ``src/semcodec/models/adapters/{name}.npz`` and prints its sha256 for the registry.

    .venv/bin/python training/export_adapter.py training/run --name describer-1
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
_GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
         "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


_LORA_A = re.compile(r".*layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_A\.default\.weight")


def gguf_tensor(peft_key: str) -> str | None:
    """The GGUF matrix a peft ``lora_A`` key adapts (``blk.{i}.attn_q.weight``, ...), or None for
    any other key (its ``lora_B`` twin is the same key with ``lora_B``)."""
    m = _LORA_A.fullmatch(peft_key)
    return f"blk.{m.group(1)}.{_GGUF[m.group(2)]}.weight" if m else None


def integer_factors(a: np.ndarray, b: np.ndarray, scaling: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float A (r, K), B (N, r) -> (A_int, B_int, c) with ``c[:, None] * (B_int @ A_int) ~ scaling * B @ A``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.abs(a).max(axis=1), np.abs(b).max(axis=0)  # per rank component
    g = np.sqrt(np.where((na > 0) & (nb > 0), nb / np.where(na > 0, na, 1), 1.0))
    a, b = a * g[:, None], b / g[None, :]
    s_a = np.abs(a).max() / 127 if np.abs(a).max() > 0 else 1.0
    a_int = np.clip(np.rint(a / s_a), -127, 127).astype(np.int8)
    s_b = np.abs(b).max(axis=1) / 127
    s_b = np.where(s_b > 0, s_b, 1.0)
    b_int = np.clip(np.rint(b / s_b[:, None]), -127, 127).astype(np.int8)
    c = (scaling * s_a * s_b).astype("<f4")
    return a_int, b_int, c


def export(run: Path) -> dict[str, np.ndarray]:
    state = torch.load(run / "adapter.pt", weights_only=False)
    scaling = float(state["alpha"]) / int(state["rank"])
    lora: dict[str, torch.Tensor] = state["lora"]
    out: dict[str, np.ndarray] = {}
    for key, a in sorted(lora.items()):
        tensor = gguf_tensor(key)
        if tensor is None:
            continue
        b = lora[key.replace("lora_A", "lora_B")]
        a_int, b_int, c = integer_factors(a.numpy(), b.numpy(), scaling)
        out[f"{tensor}.A"], out[f"{tensor}.B"], out[f"{tensor}.c"] = a_int, b_int, c
    return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """What ``np.savez_compressed`` writes, with fixed member times: the same bytes on every run."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", default="describer-1")
    args = ap.parse_args()
    arrays = export(args.run)
    data = npz_bytes(arrays)
    dest = ROOT / "src" / "semcodec" / "models" / "adapters" / f"{args.name}.npz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    print(f"{dest}: {len(data)} bytes, {len(arrays) // 3} matrices, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
