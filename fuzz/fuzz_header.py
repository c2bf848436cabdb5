"""Fuzz the ``.sem`` header reader: ``container.decode_header`` on arbitrary bytes.

Contract checked on every input:

* only :class:`semcodec.SemError` subclasses may escape (anything else is a finding);
* a header that is accepted is canonical: re-encoding the decoded header (and its check
  value) gives back exactly the bytes that were read, so no two byte strings carry the same
  header, and the payload offset is where the header ends;
* ``read_header`` (which also resolves the model id) agrees with ``decode_header``.

Run: ``python fuzz/fuzz_header.py fuzz/corpus/header -max_total_time=600`` (see README).
"""

from __future__ import annotations

import sys

import _fuzzenv  # noqa: F401  (environment first)
import atheris

with atheris.instrument_imports(include=["semcodec"]):
    from semcodec import codec, container
    from semcodec.errors import SemError, SemUnknownModelError


def test_one_input(data: bytes) -> None:
    try:
        header, check_value, offset = container.decode_header(data)
    except SemError:
        return
    assert 1 <= offset <= len(data), (offset, len(data))  # v2: the all-defaults header is one byte
    assert len(check_value) == (2 if header.check else 0), (header, check_value)
    again = container.encode_header(header, check_value)
    assert again == data[:offset], f"non-canonical header accepted: {data[:offset].hex()} -> {again.hex()}"
    try:
        resolved = codec.read_header(data)
    except SemUnknownModelError:
        return  # read_header also resolves the model id; decode_header does not
    assert resolved == header


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
