"""The golden vectors in format/vectors/ decode, re-encode bit-exactly, and fail as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import semcodec
from semcodec import errors

VECTORS = Path(__file__).resolve().parents[1] / "format" / "vectors"
DOC = json.loads((VECTORS / "vectors.json").read_text())


def test_vectors_are_for_this_format_version() -> None:
    assert DOC["format_version"] == semcodec.FORMAT_VERSION


@pytest.mark.parametrize("case", DOC["valid"], ids=lambda c: c["file"])
def test_valid_vector_decodes_and_reencodes(case: dict) -> None:  # type: ignore[type-arg]
    data = (VECTORS / case["file"]).read_bytes()
    assert data.hex() == case["hex"]
    decoded = semcodec.unpack(data)
    assert decoded.text == case["text"]
    for field, value in case["header"].items():
        assert getattr(decoded.header, field) == value
    assert semcodec.pack(case["text"], **case["header"]) == data


@pytest.mark.parametrize("case", DOC["invalid"], ids=lambda c: c["file"])
def test_invalid_vector_raises_documented_error(case: dict) -> None:  # type: ignore[type-arg]
    data = (VECTORS / case["file"]).read_bytes()
    error = getattr(errors, case["error"])
    assert issubclass(error, semcodec.SemError)
    with pytest.raises(error):
        semcodec.unpack(data)
