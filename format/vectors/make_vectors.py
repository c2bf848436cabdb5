"""Regenerate the golden vectors (only when the format version changes!).

    python format/vectors/make_vectors.py

Writes, for each format version, ``*.sem`` + ``vectors.json`` (valid files: text and
header values; invalid files: the error a reader must raise) and ``tables.json`` (sha256
of frequency tables): v1 in this folder, v2 in ``v2/``, v3 in ``v3/``, v4 in ``v4/``, v5 in ``v5/``.
Earlier versions' files are frozen: rerunning rewrites them byte for byte (this build still
writes v1 and v2 on request), so ``git diff`` after a run shows an earlier version's change
as a bug.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

import semcodec
from semcodec import coding
from semcodec.codec import LINE_ENDING_TABLE, frequency_tables
from semcodec.container import (
    DEFAULT_MODEL_IDS,
    FORM_SHORT,
    FORM_TABLE,
    FORM_TABLE_V4,
    FORM_V4_SYMBOL,
    SHORT_MODEL_IDS,
    SHORT_MODEL_TABLE,
    V4_MODEL_IDS,
    V4_MODEL_TABLE,
    V5_MODEL_IDS,
    V5_MODEL_TABLE,
    Header,
)
from semcodec.models import load_model
from semcodec.models.exact import ExactLM

HERE = Path(__file__).resolve().parent
V2_DIR = HERE / "v2"
V3_DIR = HERE / "v3"
V4_DIR = HERE / "v4"
V5_DIR = HERE / "v5"

VALID: list[tuple[str, str, dict[str, object]]] = [
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


PARAGRAPH = ("A plate of broccoli and meat on a table. a close up of a plate of food with broccoli Small plate "
             "of food which includes small pieces of broccoli")

VALID_V2: list[tuple[str, str, dict[str, object]]] = [
    ("caption", VALID[0][1], {}),
    ("caption-lf", VALID[0][1] + "\n", {}),
    ("caption-crlf", VALID[0][1] + "\r\n", {}),
    ("caption-two-lf", VALID[0][1] + "\n\n", {}),
    ("caption-cr", VALID[0][1] + "\r", {}),
    ("caption-check", VALID[1][1], {"check": True}),
    ("model-0", VALID[0][1], {"model_id": 0}),
    ("sized-seeded", VALID[2][1], {"width": 512, "height": 768, "seed": 42, "generator_id": 1}),
    ("extremes", VALID[3][1], {"width": 16384, "height": 1, "seed": 2**64 - 1, "generator_id": 5, "check": True}),
    ("empty", "", {}),
    ("only-lf", "\n", {}),
    ("unicode", VALID[5][1], {}),
    ("plain-profile", VALID[6][1], {"model_id": 1}),
    ("detailed-profile", VALID[7][1], {"model_id": 2}),
    ("paragraphs-profile", PARAGRAPH + "\n", {"model_id": 4}),
]


def _one_byte_file(form: list[tuple[int, np.ndarray]], body: str, model_id: int, ending: int,
                   magic: bytes = b"\xa7") -> bytes:
    """A one-byte-header file: ``form``'s (symbol, table) pairs, then ``body``'s tokens under
    ``model_id``'s tables and line ending ``ending``, coded as given (even where no encoder would)."""
    symbols, tables = frequency_tables(body, model_id)
    fixed = [*form, *zip(symbols, tables, strict=True), (ending, LINE_ENDING_TABLE)]
    return magic + coding.encode([s for s, _ in fixed], [t for _, t in fixed])


def invalid_cases_v2(good: bytes) -> list[tuple[str, bytes, str, str]]:
    payload = good[1:]
    return [
        ("bad-magic", b"\x00" + good[1:], "SemFormatError", "first byte is not 0xA7"),
        ("too-short", b"\xa7", "SemFormatError", "a header needs 2 bytes (a compact file's payload is never empty)"),
        ("explicit-all-defaults", b"\xa7\x00" + payload, "SemFormatError",
         "an all-defaults v2 header must be the one-byte form"),
        ("stored-default-model", b"\xa7\x01\x03" + payload, "SemFormatError", "model 3 is v2's default"),
        ("future-flag", b"\xa7\x20" + payload, "SemVersionError", "v2 flag bit 5 announces a later version"),
        ("unknown-model", b"\xa7\x01\x63" + payload, "SemUnknownModelError", "model id 99"),
        ("lf-as-token", _one_byte_file(Header(model_id=3).form_symbols, VALID[0][1] + "\n", 3, 0), "SemIntegrityError",
         "a final \\n coded as text tokens instead of the line-ending symbol"),
        ("cr-lf-split", _one_byte_file(Header(model_id=3).form_symbols, VALID[0][1] + "\r", 3, 1), "SemIntegrityError",
         "a final \\r\\n coded as \\r + line ending \\n"),
        ("trailing-byte", good + b"\x5a", "SemIntegrityError", "payload not canonical: an extra byte"),
    ]


PARAGRAPH_2 = ("A man standing in a kitchen next to a stove. A man cooking food on a stove in a kitchen. "
               "A person in a kitchen making food on the stove.")

VALID_V3: list[tuple[str, str, dict[str, object]]] = [
    ("paragraph", PARAGRAPH, {"model_id": 5}),
    ("paragraph-lf", PARAGRAPH_2 + "\n", {"model_id": 5}),
    ("empty", "", {"model_id": 5}),
    ("model-0", VALID[0][1], {"model_id": 0}),
    ("plain-profile", VALID[6][1], {"model_id": 1}),
    ("detailed-profile", VALID[7][1], {"model_id": 2}),
    ("paragraphs-profile", PARAGRAPH + "\n", {"model_id": 4}),
]


def invalid_cases_v3(good: bytes) -> list[tuple[str, bytes, str, str]]:
    return [
        ("escape", _one_byte_file([(FORM_SHORT, FORM_TABLE), (SHORT_MODEL_IDS.index(None), SHORT_MODEL_TABLE)],
                                  PARAGRAPH, 5, 0), "SemVersionError",
         "the short form's escape symbol announces a later version (byte 1 = 0x20)"),
        ("short-wrong-model", _one_byte_file(Header(model_id=4).form_symbols, PARAGRAPH, 5, 0), "SemIntegrityError",
         "model symbol says 4, the tokens were coded with 5's tables: not canonical"),
        ("short-form-sliver", b"\xa7\x3f" + b"\xff" * 7, "SemIntegrityError",
         "byte 1 = 001xxxxx but the form symbol decodes as 2 (no encoder writes this)"),
        ("trailing-byte", good + b"\x5a", "SemIntegrityError", "payload not canonical: an extra byte"),
    ]


DESCRIPTION = ("The image features a large white and red fire truck parked on the side of a city street. "
               "Several firefighters in uniform stand next to it.\n\nIn the background, tall brick buildings "
               "line the road under a cloudy sky.")

VALID_V4: list[tuple[str, str, dict[str, object]]] = [
    ("caption", VALID[0][1], {}),
    ("caption-lf", VALID[0][1] + "\n", {}),
    ("empty", "", {}),
    ("unicode", VALID[5][1], {}),
    ("paragraph", PARAGRAPH, {"model_id": 7}),
    ("description", DESCRIPTION, {"model_id": 8}),
    ("alt-text", "person walks along the beach at sunset .", {"model_id": 9}),
]


def invalid_cases_v4(good: bytes) -> list[tuple[str, bytes, str, str]]:
    return [
        ("escape", _one_byte_file([(FORM_V4_SYMBOL, FORM_TABLE_V4), (V4_MODEL_IDS.index(None), V4_MODEL_TABLE)],
                                  VALID[0][1], 6, 0), "SemVersionError",
         "the v4 short form's escape symbol announces a later version"),
        ("short-wrong-model", _one_byte_file(Header(model_id=8).form_symbols, VALID[0][1], 6, 0),
         "SemIntegrityError", "model symbol says 8, the tokens were coded with 6's tables: not canonical"),
        ("trailing-byte", good + b"\x5a", "SemIntegrityError", "payload not canonical: an extra byte"),
    ]


VALID_V5: list[tuple[str, str, dict[str, object]]] = [
    ("caption", VALID[0][1], {}),
    ("caption-lf", VALID[0][1] + "\n", {}),
    ("empty", "", {}),
    ("unicode", VALID[5][1], {}),
    ("paragraph", PARAGRAPH, {"model_id": 11}),
]


def invalid_cases_v5(good: bytes) -> list[tuple[str, bytes, str, str]]:
    return [
        ("escape", _one_byte_file([(V5_MODEL_IDS.index(None), V5_MODEL_TABLE)], VALID[0][1], 10, 0, b"\xa8"),
         "SemVersionError", "the v5 form's escape symbol announces a later version"),
        ("wrong-model", _one_byte_file(Header(model_id=11).form_symbols, VALID[0][1], 10, 0, b"\xa8"),
         "SemIntegrityError", "model symbol says 11, the tokens were coded with 10's tables: not canonical"),
        ("trailing-byte", good + b"\x5a", "SemIntegrityError", "payload not canonical: an extra byte"),
        ("only-magic", b"\xa8", "SemFormatError", "a file of one byte is too short for any header and payload"),
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


def batch_frequencies(lm: ExactLM, context: tuple[int, ...], tokens: list[int]) -> np.ndarray:
    """Tables of ``tokens`` and end-of-text from one pass over context + tokens (no cached context)."""
    hidden = lm.forward([*context, *tokens], lm.new_cache())
    return lm.tables(hidden[len(context) - 1 :])


def table_digest(freqs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(freqs, dtype="<i4").tobytes()).hexdigest()


def write_set(folder: Path, version: int, cases: list[tuple[str, str, dict[str, object]]],
              invalid: list[tuple[str, bytes, str, str]] | None, tables: list[tuple[int, str, str]]) -> None:
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.sem"):
        old.unlink()
    valid = []
    for name, text, fields in cases:
        fields = {"model_id": DEFAULT_MODEL_IDS[version], **fields}  # each version's default model
        data = semcodec.pack(text, **{"version": version, **fields})  # type: ignore[arg-type]
        (folder / f"{name}.sem").write_bytes(data)
        header = semcodec.read_header(data)
        valid.append({
            "file": f"{name}.sem", "text": text, "bytes": len(data), "hex": data.hex(),
            "header": {k: getattr(header, k) for k in ("model_id", "generator_id", "seed", "width", "height", "check")},
        })
    bad = []
    for name, data, error, why in invalid or invalid_cases((folder / "caption.sem").read_bytes()):
        (folder / f"invalid-{name}.sem").write_bytes(data)
        bad.append({"file": f"invalid-{name}.sem", "error": error, "why": why})
    doc = {"format_version": version, "valid": valid, "invalid": bad}
    (folder / "vectors.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    digests = []
    for model_id, name, text in tables:
        m = load_model(model_id)
        ids = m.tokenizer.encode(text)
        freqs = batch_frequencies(m.lm, m.context_ids, ids)
        digests.append({"name": name, "model_id": model_id, "text": text, "tokens": ids, "sha256": table_digest(freqs)})
    (folder / "tables.json").write_text(json.dumps({"format_version": version, "cases": digests}, indent=1) + "\n")
    print(f"v{version}: wrote {len(valid)} valid and {len(bad)} invalid vectors and {len(digests)} table digests")


def main() -> None:
    write_set(HERE, 1, VALID, None, [(0, "describe-caption", VALID[0][1]), (1, "plain-caption", VALID[6][1]),
                                    (2, "detailed-paragraph", VALID[7][1]), (0, "describe-empty", "")])
    v1_doc = json.loads((HERE / "vectors.json").read_text())
    for case in v1_doc["invalid"]:
        if case["file"] == "invalid-version-2.sem":  # a v2 reader reads bits 10 as v2 compact
            case["error"] = V1_VERSION_2_ERROR
            case["why"] = ("bits 7-6 = 10 were an unknown version to a v1 reader; a v2 reader reads a v2 "
                           "one-byte header whose payload does not decode canonically")
    reserved = next(c for c in v1_doc["invalid"] if c["file"] == "invalid-reserved-flag.sem")
    v1_doc["invalid"].remove(reserved)  # byte 1 = 0x61 (011xxxxx) is v4's short form (SPEC §7, v4)
    v1_doc["reinterpreted"] = [{
        "file": reserved["file"], "version": 4,
        "why": "v1's reserved flag bit 5 (byte 1 = 011xxxxx) is v4's short form: a v4 reader reads this "
               "v1-invalid file as a v4 file, and its random payload happens to decode canonically (SPEC §2, "
               "'Detection')",
    }]
    (HERE / "vectors.json").write_text(json.dumps(v1_doc, ensure_ascii=False, indent=1) + "\n")
    good = semcodec.pack(VALID[0][1], model_id=3)  # v2's compact form (v4's default is another)
    write_set(V2_DIR, 2, VALID_V2, invalid_cases_v2(good),
              [(3, "captions-caption", VALID[0][1]), (3, "captions-empty", ""), (4, "paragraphs-paragraph", PARAGRAPH)])
    write_set(V3_DIR, 3, VALID_V3, invalid_cases_v3(semcodec.pack(PARAGRAPH, model_id=5)),
              [(5, "paragraph-replies-paragraph", PARAGRAPH), (5, "paragraph-replies-empty", "")])
    write_set(V4_DIR, 4, VALID_V4, invalid_cases_v4(semcodec.pack(VALID[0][1], model_id=6)),
              [(6, "describer-captions-caption", VALID[0][1]), (6, "describer-captions-empty", ""),
               (7, "describer-paragraphs-paragraph", PARAGRAPH), (8, "describer-descriptions-description", DESCRIPTION),
               (9, "describer-alt-text-caption", VALID[6][1])])
    write_set(V5_DIR, 5, VALID_V5, invalid_cases_v5(semcodec.pack(VALID[0][1])),
              [(10, "captioner-captions-caption", VALID[0][1]), (10, "captioner-captions-empty", ""),
               (11, "captioner-paragraphs-paragraph", PARAGRAPH)])


V1_VERSION_2_ERROR = "SemIntegrityError"


if __name__ == "__main__":
    main()
