"""Fuzz pack -> unpack on arbitrary text: it must give back the exact text and header.

The first byte of the input picks how the rest becomes text (so the fuzzer reaches both
well-formed and hostile Unicode):

* ``0``: the bytes decoded as UTF-8 with ``errors="ignore"``;
* ``1``: ``FuzzedDataProvider.ConsumeUnicodeNoSurrogates`` (any code point but surrogates);
* ``2``: ``FuzzedDataProvider.ConsumeUnicode`` (lone surrogates allowed: they must be refused);

then a few bytes choose the header (model id, check, seed, resolution). Contract:
``pack`` either raises :class:`semcodec.SemInputError` (text the tokenizer cannot reproduce,
lone surrogates) or :class:`semcodec.SemLimitError` (too many tokens), or it returns bytes that
``unpack`` turns back into the same text and header. Any other exception, or a different
text, is a finding.

Inputs are capped at ``SEMFUZZ_MAX_LEN`` bytes (default 40) and the token limit is
``SEMFUZZ_MAX_TOKENS`` (default 16, see ``_fuzzenv.py``).

Run: ``python fuzz/fuzz_roundtrip.py fuzz/corpus/roundtrip -max_len=40 -max_total_time=600``.
"""

from __future__ import annotations

import os
import sys

import _fuzzenv
import atheris

with atheris.instrument_imports(include=["semcodec"]):
    import semcodec
    from semcodec.errors import SemInputError, SemLimitError
    from semcodec.models import load_model
    from semcodec.registry import MODELS

MAX_LEN = int(os.environ.get("SEMFUZZ_MAX_LEN", "40"))
_fuzzenv.limit_tokens()
for _model_id in MODELS:
    load_model(_model_id)

_SIZES = (1, 2, 512, 1024, 16384)


def text_and_header(data: bytes) -> tuple[str, dict[str, int | bool]]:
    """Split one fuzz input into a text and ``pack`` keyword arguments."""
    fdp = atheris.FuzzedDataProvider(data[:MAX_LEN])
    mode = fdp.ConsumeIntInRange(0, 2)
    header: dict[str, int | bool] = {
        "model_id": fdp.ConsumeIntInRange(0, len(MODELS) - 1),
        "check": fdp.ConsumeBool(),
        "seed": fdp.ConsumeIntInRange(0, 2**64 - 1) if fdp.ConsumeBool() else 0,
        "width": fdp.PickValueInList(list(_SIZES)),
        "height": fdp.PickValueInList(list(_SIZES)),
    }
    n = fdp.remaining_bytes()
    if mode == 0:
        text = fdp.ConsumeBytes(n).decode("utf-8", errors="ignore")
    elif mode == 1:
        text = fdp.ConsumeUnicodeNoSurrogates(n)
    else:
        text = fdp.ConsumeUnicode(n)
    return text, header


def test_one_input(data: bytes) -> None:
    text, header = text_and_header(data)
    try:
        packed = semcodec.pack(text, **header)  # type: ignore[arg-type]
    except (SemInputError, SemLimitError):
        return
    decoded = semcodec.unpack(packed)
    assert decoded.text == text, f"round trip changed {text!r} into {decoded.text!r} ({packed.hex()})"
    for name, value in header.items():
        assert getattr(decoded.header, name) == value, (name, value, decoded.header)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
