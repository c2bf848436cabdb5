"""Regenerate the golden vectors (only when the format version changes!).

    python format/vectors/make_vectors.py

Writes ``*.sem`` + ``vectors.json`` (valid files: text and header values; invalid files:
the error a reader must raise) and ``tables.json`` (sha256 of frequency tables).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

import semcodec
from semcodec.container import FORMAT_VERSION
from semcodec.models import load_model
from semcodec.models.exact import batch_frequencies

HERE = Path(__file__).resolve().parent

VALID = [
    ("caption", "A red and black boat floating on top of water.", {}),
    ("caption-check", "Two giraffes standing next to each other in a grassy field.", {"check": True}),
    ("sized-seeded", "A man riding a wave on top of a surfboard.",
     {"width": 512, "height": 768, "seed": 42, "generator_id": 1}),
    ("extremes", "A clock tower.",
     {"width": 16384, "height": 1, "seed": 2**64 - 1, "generator_id": 5, "check": True}),
    ("empty", "", {}),
    ("unicode", "Un café à Paris — 東京の夜景 🌃, e\u0301 combining.", {}),
    ("plain-profile", "Large clock tower sitting in front of a park.", {"model_id": 1}),
    ("detailed-profile",
     "A young child squats down in front of a bowl. A little boy kneeling down while attempting "
     "to stick his hand in a bowl of water.", {"model_id": 2}),
]


def invalid_cases(good: bytes) -> list[tuple[str, bytes, str, str]]:
    return [
        ("bad-magic", b"\x00" + good[1:], "SemFormatError", "first byte is not 0xA7"),
        ("version-2", bytes([good[0], (2 << 6) | (good[1] & 0x3F)]) + good[2:], "SemVersionError",
         "format version 2 is unknown to a v1 reader"),
        ("reserved-flag", bytes([good[0], good[1] | 0x20]) + good[2:], "SemFormatError", "flag bit 5 is reserved"),
        ("unknown-model", bytes([0xA7, 0x41, 0x63]) + good[2:], "SemUnknownModelError", "model id 99"),
        ("truncated-header", bytes([0xA7, 0x48, 0x80]), "SemFormatError", "file ends inside the width field"),
        ("non-minimal-varint", bytes([0xA7, 0x44, 0x87, 0x00]) + good[2:], "SemFormatError",
         "seed 7 written in two bytes"),
        ("stored-default-size", bytes([0xA7, 0x48, 0x80, 0x08, 0x80, 0x08]) + good[2:], "SemFormatError",
         "1024x1024 stored although it is the default"),
        ("trailing-byte", good + b"\x5a", "SemIntegrityError", "payload not canonical: an extra byte"),
    ]


def table_digest(freqs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(freqs, dtype="<i4").tobytes()).hexdigest()


def main() -> None:
    for old in HERE.glob("*.sem"):
        old.unlink()
    valid = []
    for name, text, fields in VALID:
        data = semcodec.pack(text, **fields)
        (HERE / f"{name}.sem").write_bytes(data)
        header = semcodec.read_header(data)
        valid.append({
            "file": f"{name}.sem", "text": text, "bytes": len(data), "hex": data.hex(),
            "header": {k: getattr(header, k) for k in ("model_id", "generator_id", "seed", "width", "height", "check")},
        })
    good = (HERE / "caption.sem").read_bytes()
    invalid = []
    for name, data, error, why in invalid_cases(good):
        (HERE / f"invalid-{name}.sem").write_bytes(data)
        invalid.append({"file": f"invalid-{name}.sem", "error": error, "why": why})
    doc = {"format_version": FORMAT_VERSION, "valid": valid, "invalid": invalid}
    (HERE / "vectors.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")

    cases = []
    for model_id, name, text in ((0, "describe-caption", VALID[0][1]), (1, "plain-caption", VALID[6][1]),
                                 (2, "detailed-paragraph", VALID[7][1]), (0, "describe-empty", "")):
        m = load_model(model_id)
        ids = m.tokenizer.encode(text)
        freqs = batch_frequencies(m.lm, m.context_ids, ids)
        cases.append({"name": name, "model_id": model_id, "text": text, "tokens": ids, "sha256": table_digest(freqs)})
    (HERE / "tables.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(valid)} valid and {len(invalid)} invalid vectors and {len(cases)} table digests")


if __name__ == "__main__":
    main()
