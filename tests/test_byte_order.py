"""Bytes become numbers in one byte order only: little-endian files read the same everywhere.

The GGUF and the converted cache are little-endian; a native-order dtype would misread
them silently on a big-endian machine. Checked two ways: every place in ``src`` that
turns bytes into numbers names an explicit byte order (or a one-byte type), and the GGUF
reader decodes a hand-made file to the values an independent ``struct`` decoder gives.
"""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from semcodec import models
from semcodec.models import gguf, weights

SRC = Path(__file__).resolve().parent.parent / "src" / "semcodec"
_BYTES_TO_NUMBERS = {"frombuffer": 1, "fromfile": 1, "memmap": 1, "view": 0}  # call -> dtype's positional index
# Calls whose dtype is a variable, and the rule that makes it explicit (asserted below).
_CHECKED_VARIABLES = {("models/gguf.py", "np.dtype(fmt)"), ("models/weights.py", "dtype"),
                      ("models/__init__.py", "little_endian")}


def _explicit(dtype: str) -> bool:
    return dtype[:1] in "<>|" or np.dtype(dtype).itemsize == 1


def _dtype_uses(path: Path) -> list[tuple[int, str]]:
    """(line, dtype expression) of every bytes-to-numbers call in a module."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _BYTES_TO_NUMBERS:
            position = _BYTES_TO_NUMBERS[node.func.attr]
            arg = next((k.value for k in node.keywords if k.arg == "dtype"), None)
            if arg is None and len(node.args) > position:
                arg = node.args[position]
            if arg is not None:
                uses.append((node.lineno, ast.unparse(arg)))
    return uses


def test_every_bytes_to_numbers_call_names_its_byte_order() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, expr in _dtype_uses(path):
            found.append((rel, expr))
            try:
                literal = ast.literal_eval(expr)
            except ValueError:
                assert (rel, expr) in _CHECKED_VARIABLES, f"{rel}:{line}: dtype {expr} has no explicit byte order"
                continue
            assert isinstance(literal, str) and _explicit(literal), f"{rel}:{line}: dtype {expr} is native-order"
    assert ("models/gguf.py", "'<f2'") in found and len(found) >= 8  # the scan sees the reader
    assert set(found) >= _CHECKED_VARIABLES
    # ...and the variables come from explicit tables
    assert all(fmt.startswith("<") for fmt in gguf._SCALAR_FORMATS.values())
    assert all(_explicit(d) and not d.startswith("=") for d in weights._FILE_DTYPES)
    assert all(_explicit(d) and not d.startswith("=") for d in models._CONTEXT_DTYPES.values())


def test_the_scan_catches_a_native_dtype(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nx = np.frombuffer(b'', np.float32)\ny = b.view(dtype=np.float16)\n")
    assert _dtype_uses(bad) == [(2, "np.float32"), (3, "np.float16")]
    with pytest.raises(ValueError):
        ast.literal_eval("np.float32")


def test_converted_entry_records_little_endian_dtypes(model_cache_dir: Path) -> None:
    meta = json.loads((model_cache_dir / "index.json").read_text())
    assert {info["dtype"] for info in meta["tensors"].values()} <= weights._FILE_DTYPES


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _write_gguf(path: Path, tensors: list[tuple[str, tuple[int, ...], int, bytes]]) -> None:
    """A GGUF v3 with no metadata and the given (name, numpy shape, type, data) tensors."""
    infos, data = b"", b""
    for name, shape, ggml_type, blob in tensors:
        data += b"\0" * (-len(data) % 32)
        infos += _gguf_string(name) + struct.pack("<I", len(shape)) + b"".join(
            struct.pack("<Q", d) for d in reversed(shape)) + struct.pack("<IQ", ggml_type, len(data))
        data += blob
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0) + infos
    path.write_bytes(head + b"\0" * (-len(head) % 32) + data)


def test_gguf_blocks_decode_as_little_endian(tmp_path: Path) -> None:
    """Values with asymmetric byte patterns, so a byte-swapped read could not agree by chance."""
    f32 = [1.5, -2.25e-3, 3.0e7, 0.1]
    f16_bits = [0x3C01, 0xC2A7, 0x0401, 0x7BFF]  # 1.0009765625, -3.326171875, ~6.1e-05, 65504
    q4_d, q4_m, nibbles = 0x2E66, 0xB8CD, [(7 * j + 3) % 16 for j in range(32)]
    q8_d, q8_q = 0x1F3A, [(-1) ** j * ((11 * j) % 128) for j in range(32)]
    q4 = struct.pack("<HH", q4_d, q4_m) + bytes(nibbles[j] | nibbles[j + 16] << 4 for j in range(16))
    q8 = struct.pack("<H", q8_d) + struct.pack("<32b", *q8_q)
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, [
        ("f32", (2, 2), gguf.GGML_F32, struct.pack("<4f", *f32)),
        ("f16", (4,), gguf.GGML_F16, struct.pack("<4H", *f16_bits)),
        ("q4_1", (32,), gguf.GGML_Q4_1, q4),
        ("q8_0", (1, 32), gguf.GGML_Q8_0, q8),
    ])

    def half(bits: int) -> float:
        return float(struct.unpack("<e", struct.pack("<H", bits))[0])

    reader = gguf.GGUFFile(path)
    assert reader.dequantize("f32").tolist() == [[struct.unpack("<f", struct.pack("<f", v))[0] for v in f32[:2]],
                                                  [struct.unpack("<f", struct.pack("<f", v))[0] for v in f32[2:]]]
    assert reader.dequantize("f16").tolist() == [half(b) for b in f16_bits]
    assert reader.dequantize("q4_1").tolist() == [half(q4_d) * q + half(q4_m) for q in nibbles]
    assert reader.dequantize("q8_0").tolist() == [[half(q8_d) * q for q in q8_q]]
    # the same bytes read in the other order would give other numbers: the test can tell
    assert np.frombuffer(struct.pack("<4H", *f16_bits), ">f2").tolist() != [half(b) for b in f16_bits]
