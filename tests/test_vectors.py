"""The golden vectors in format/vectors/ (v1), format/vectors/v2/, v3/, v4/ and v5/ decode,
re-encode bit-exactly, and fail as documented. Earlier versions' files keep decoding forever (SPEC §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import semcodec
from semcodec import errors

VECTORS = Path(__file__).resolve().parents[1] / "format" / "vectors"
DOCS = {1: VECTORS, 2: VECTORS / "v2", 3: VECTORS / "v3", 4: VECTORS / "v4", 5: VECTORS / "v5"}
LOADED = {v: json.loads((folder / "vectors.json").read_text()) for v, folder in DOCS.items()}
VALID = [(v, case) for v, doc in LOADED.items() for case in doc["valid"]]
INVALID = [(v, case) for v, doc in LOADED.items() for case in doc["invalid"]]


def _id(item: tuple[int, dict]) -> str:  # type: ignore[type-arg]
    return f"v{item[0]}/{item[1]['file']}"


def test_vectors_cover_every_readable_version() -> None:
    assert {doc["format_version"] for doc in LOADED.values()} == set(semcodec.container.READABLE_VERSIONS)
    assert LOADED[semcodec.FORMAT_VERSION]["format_version"] == semcodec.FORMAT_VERSION


@pytest.mark.parametrize("item", VALID, ids=_id)
def test_valid_vector_decodes_and_reencodes(item: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    version, case = item
    data = (DOCS[version] / case["file"]).read_bytes()
    assert data.hex() == case["hex"]
    decoded = semcodec.unpack(data)
    assert decoded.text == case["text"]
    assert decoded.header.version == version
    for field, value in case["header"].items():
        assert getattr(decoded.header, field) == value
    assert semcodec.pack(case["text"], version=version, **case["header"]) == data
    assert semcodec.pack_header(decoded.text, decoded.header) == data


@pytest.mark.parametrize("item", INVALID, ids=_id)
def test_invalid_vector_raises_documented_error(item: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    version, case = item
    data = (DOCS[version] / case["file"]).read_bytes()
    error = getattr(errors, case["error"])
    assert issubclass(error, semcodec.SemError)
    with pytest.raises(error):
        semcodec.unpack(data)


@pytest.mark.parametrize("case", LOADED[1].get("reinterpreted", []), ids=lambda c: c["file"])
def test_v1_invalid_file_a_later_version_reads(case: dict) -> None:  # type: ignore[type-arg]
    """A file no v1 reader accepted, whose first bytes a later version gave a meaning (SPEC §7)."""
    data = (DOCS[1] / case["file"]).read_bytes()
    assert data[1] >> 5 == 0b011 and semcodec.container.one_byte_form(data[1]) == semcodec.container.FORM_V4
    assert semcodec.unpack(data).header.version == case["version"]
