"""Fuzz the whole decoder: ``semcodec.unpack`` on arbitrary bytes (model loaded once).

Contract checked on every input:

* only :class:`semcodec.SemError` subclasses may escape (a crash, an ``AssertionError`` from
  the range coder, a numpy error, a Rust panic ... is a finding);
* an accepted file is the canonical coding of what it decodes to: packing the decoded text
  with the decoded header gives back exactly the input bytes. So a reader never accepts two
  different files for the same content, and a writer could have produced every accepted file.

Inputs are capped at ``SEMFUZZ_MAX_LEN`` bytes (default 48) and the token limit is lowered to
``SEMFUZZ_MAX_TOKENS`` (default 16, see ``_fuzzenv.py``): each input that reaches the model
costs one context pass plus at most 17 incremental LM steps (~0.3-2 s on a small CPU).

Run: ``python fuzz/fuzz_unpack.py fuzz/corpus/unpack -max_len=48 -max_total_time=600``.
"""

from __future__ import annotations

import os
import sys

import _fuzzenv
import atheris

with atheris.instrument_imports(include=["semcodec"]):
    import semcodec
    from semcodec.errors import SemError
    from semcodec.models import load_model
    from semcodec.registry import MODELS

MAX_LEN = int(os.environ.get("SEMFUZZ_MAX_LEN", "48"))
_fuzzenv.limit_tokens()
for _model_id in MODELS:  # load once, at import, not inside the first input
    load_model(_model_id)


def test_one_input(data: bytes) -> None:
    data = data[:MAX_LEN]
    try:
        decoded = semcodec.unpack(data)
    except SemError:
        return
    again = semcodec.pack_header(decoded.text, decoded.header)
    assert again == data, (
        f"accepted a non-canonical file: {data.hex()} decodes to {decoded.text!r}, which packs to {again.hex()}"
    )
    assert decoded.header_bytes + decoded.payload_bytes == len(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
