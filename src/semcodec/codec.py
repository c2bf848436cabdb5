"""Text ↔ ``.sem`` bytes: the header, the model's frequency tables and the range coder together.

    >>> import semcodec
    >>> data = semcodec.pack("A cat sleeping on a red sofa.")
    >>> len(data) < 16
    True
    >>> semcodec.unpack(data).text
    'A cat sleeping on a red sofa.'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semcodec import coding
from semcodec.container import Header, decode_header, encode_header, text_check
from semcodec.errors import SemInputError, SemIntegrityError, SemLimitError
from semcodec.registry import model_spec

MAX_TOKENS = 2048
"""Most text tokens a file may hold (the end-of-text token not counted)."""

MAX_PAYLOAD_BYTES = (MAX_TOKENS + 1) * coding.PRECISION // 8 + 8
"""No table entry is below 2**-24, so a legal payload is never longer than this."""


@dataclass(frozen=True)
class SemFile:
    """A decoded ``.sem`` file."""

    text: str
    header: Header
    n_tokens: int  # text tokens, end-of-text not counted
    header_bytes: int
    payload_bytes: int

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes

    @property
    def bits_per_character(self) -> float:
        return 8 * self.file_bytes / max(1, len(self.text))

    @property
    def micro_bpp(self) -> float:
        """File bits per pixel at the stored resolution, in millionths."""
        return 8e6 * self.file_bytes / self.header.pixels


def read_header(data: bytes) -> Header:
    """Parse and validate only the header (no model is loaded)."""
    header, _, _ = decode_header(data)
    model_spec(header.model_id)
    return header


def tokenize(text: str, model_id: int = 0) -> list[int]:
    """The model's tokens for ``text`` (raises :class:`SemInputError` if it cannot round-trip)."""
    from semcodec.models import load_model

    return load_model(model_id).tokenizer.encode(text)


def frequency_tables(text: str, model_id: int = 0) -> tuple[list[int], np.ndarray]:
    """Tokens of ``text`` plus end-of-text, and the table each is coded with (one batched pass)."""
    from semcodec.models import load_model
    from semcodec.models.exact import batch_frequencies

    model = load_model(model_id)
    tokens = model.tokenizer.encode(text)
    if len(tokens) > MAX_TOKENS:
        raise SemLimitError(f"text has {len(tokens)} tokens; the limit is {MAX_TOKENS}")
    return tokens + [model.eos_id], batch_frequencies(model.lm, model.context_ids, tokens)


def information_bits(text: str, model_id: int = 0) -> float:
    """The model's cross-entropy of ``text`` (with end-of-text), in bits: the payload's floor."""
    symbols, tables = frequency_tables(text, model_id)
    probs = tables[np.arange(len(symbols)), symbols].astype(np.float64) / 2.0**coding.PRECISION
    return float(-np.log2(probs).sum())


def pack(
    text: str,
    *,
    model_id: int = 0,
    generator_id: int = 0,
    seed: int = 0,
    width: int = 1024,
    height: int = 1024,
    check: bool = False,
) -> bytes:
    """Code ``text`` into a ``.sem`` file. Header fields at their defaults cost no bytes."""
    header = Header(model_id, generator_id, seed, width, height, check)
    model_spec(model_id)
    symbols, tables = frequency_tables(text, model_id)
    payload = coding.encode(symbols, list(tables))
    return encode_header(header, text_check(text) if check else b"") + payload


def unpack(data: bytes) -> SemFile:
    """Decode a ``.sem`` file; every failure is a :class:`semcodec.SemError`."""
    from semcodec.models import load_model
    from semcodec.models.exact import Session

    header, check_value, offset = decode_header(data)
    model_spec(header.model_id)
    payload = bytes(data[offset:])
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SemLimitError(f"payload of {len(payload)} bytes exceeds the limit {MAX_PAYLOAD_BYTES}")
    model = load_model(header.model_id)
    session = Session(model.lm, model.context_ids)

    def next_table(decoded: list[int]) -> np.ndarray:
        if decoded:
            session.append(decoded[-1])
        return session.next_frequencies()

    symbols, tables = coding.decode(payload, next_table, stop_symbol=model.eos_id, max_symbols=MAX_TOKENS + 1)
    if not coding.is_canonical(payload, symbols, tables):
        raise SemIntegrityError("payload is not the canonical coding of what it decodes to (corrupt file)")
    tokens = symbols[:-1]
    text = model.tokenizer.decode(tokens)
    try:
        canonical = model.tokenizer.encode(text) == tokens
    except SemInputError:
        canonical = False
    if not canonical:
        raise SemIntegrityError("payload decodes to a non-canonical token sequence (corrupt file)")
    if header.check and text_check(text) != check_value:
        raise SemIntegrityError("integrity check failed: the text differs from what was packed")
    return SemFile(text, header, len(tokens), offset, len(payload))
