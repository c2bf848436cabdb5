"""A minimal GGUF (v2/v3) reader: metadata, tensor directory, and exact dequantisation.

Only what the registry's models use is implemented (F32, F16, Q4_1, Q8_0). Dequantisation
uses elementwise IEEE operations on exactly representable values, so it gives the same
bits on every machine. GGUF is little-endian: every multi-byte number is read with an
explicit little-endian dtype (``<f4``, ``<f2``, ``<u4``...), never the machine's order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semcodec.errors import SemModelError

_GGUF_MAGIC = b"GGUF"
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

GGML_F32, GGML_F16, GGML_Q4_1, GGML_Q8_0 = 0, 1, 3, 8
_BLOCK = 32
_BLOCK_BYTES = {GGML_Q4_1: 20, GGML_Q8_0: 34}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: rows first (GGUF stores the fastest dimension first)
    ggml_type: int
    offset: int  # absolute offset in the file

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))


class GGUFFile:
    """Parsed GGUF: ``metadata`` dict and ``tensors`` directory; data read lazily via mmap."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._raw = np.memmap(self.path, dtype="u1", mode="r")
        self._pos = 0
        try:
            self.metadata, self.tensors = self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
            raise SemModelError(f"{self.path.name} is not a valid GGUF file ({err})") from None

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._raw):
            raise ValueError("unexpected end of file")
        out = self._raw[self._pos : self._pos + n].tobytes()
        self._pos += n
        return out

    def _scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        return self._take(self._scalar("<Q")).decode("utf-8")

    def _value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self._scalar(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            item_type = self._scalar("<I")
            count = self._scalar("<Q")
            if item_type in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[item_type]
                size = struct.calcsize(fmt)
                return list(np.frombuffer(self._take(size * count), dtype=np.dtype(fmt)).tolist())
            return [self._value(item_type) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")

    def _parse(self) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
        if self._take(4) != _GGUF_MAGIC:
            raise ValueError("bad magic")
        version = self._scalar("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}")
        n_tensors = self._scalar("<Q")
        n_kv = self._scalar("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            metadata[key] = self._value(self._scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._scalar("<I")
            dims = [self._scalar("<Q") for _ in range(n_dims)]
            ggml_type = self._scalar("<I")
            offset = self._scalar("<Q")
            infos.append((name, tuple(reversed(dims)), ggml_type, offset))
        alignment = int(metadata.get("general.alignment", 32))
        data_start = -(-self._pos // alignment) * alignment
        tensors = {
            name: TensorInfo(name, shape, ggml_type, data_start + offset)
            for name, shape, ggml_type, offset in infos
        }
        return metadata, tensors

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float64, shape ``info.shape``: ``d * q + m`` (Q4_1), ``d * q`` (Q8_0)."""
        info = self.tensors[name]
        n = info.n_elements
        if info.ggml_type == GGML_F32:
            values = np.frombuffer(self._raw, "<f4", n, info.offset).astype(np.float64)
        elif info.ggml_type == GGML_F16:
            values = np.frombuffer(self._raw, "<f2", n, info.offset).astype(np.float64)
        elif info.ggml_type in _BLOCK_BYTES:
            n_blocks = n // _BLOCK
            size = _BLOCK_BYTES[info.ggml_type]
            blocks = np.frombuffer(self._raw, "u1", n_blocks * size, info.offset).reshape(n_blocks, size)
            d = blocks[:, 0:2].copy().view("<f2").astype(np.float64)
            if info.ggml_type == GGML_Q4_1:
                m = blocks[:, 2:4].copy().view("<f2").astype(np.float64)
                packed = blocks[:, 4:20]
                q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float64)
                values = (d * q + m).reshape(-1)
            else:
                q = blocks[:, 2:34].copy().view("i1").astype(np.float64)
                values = (d * q).reshape(-1)
        else:
            raise SemModelError(f"tensor {name}: GGML type {info.ggml_type} is not supported")
        return values.reshape(info.shape)
