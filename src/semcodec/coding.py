"""Arithmetic (range) coding of token streams with exact integer frequency tables.

A language model gives, for every position, a *frequency table*: a 1-D integer array
``f`` of length ``V`` (``2 <= V <= 2**24 - 2``) with every ``f[i] >= 1`` and
``f.sum() == 2**PRECISION``.  The coder codes symbol ``s`` with exactly the interval
``[cum(f, s), cum(f, s) + f[s])`` of ``[0, 2**24)``, where ``cum(f, s) = f[0] + ... + f[s-1]``;
no rescaling or re-quantisation happens anywhere, so the table *is* the file format.

The arithmetic is constriction's default range coder (``constriction.stream.queue``:
32-bit words, 64-bit state, 24-bit precision).  Its words are serialised big-endian.
Given ``probabilities = f - 1`` (floats; integers below ``2**24`` are exact even in
float32), constriction's ``Categorical(..., perfect=False)`` / ``lazy=True`` models
reproduce ``f`` exactly: their left cumulative for symbol ``i`` is
``floor(sum(p[:i]) * scale) + i`` with ``scale = (2**24 - V) / sum(p) == 1.0``.

Termination: the payload is the *shortest* byte string that, read as a big-endian
fraction followed by zero bytes forever, decodes to the symbols without the decoder
reading more than ``MAX_OVERREAD`` bytes past its end; among strings of that length, the
numerically smallest one.  So a canonical payload ends in ``0x00`` only when that minimum
length forces it (dropping a trailing zero keeps the value, so a shorter string would qualify).

Example:

    >>> import numpy as np
    >>> f = np.array([2**23, 2**22, 2**22 - 1, 1], dtype=np.int64)
    >>> payload = encode([0, 1, 3], [f, f, f])
    >>> payload.hex()
    '5fffffe0'
    >>> symbols, used = decode(payload, lambda prefix: f, stop_symbol=3, max_symbols=10)
    >>> symbols
    [0, 1, 3]
    >>> is_canonical(payload, [0, 1, 3], [f, f, f])
    True
    >>> is_canonical(payload + b"\\x00", [0, 1, 3], [f, f, f])
    False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import constriction
import numpy as np

from .errors import SemIntegrityError, SemLimitError

__all__ = [
    "MAX_ALPHABET",
    "PRECISION",
    "StreamDecoder",
    "cross_entropy_bits",
    "decode",
    "encode",
    "is_canonical",
    "validate_table",
]

PRECISION: Final[int] = 24
"""Bits of precision of every frequency table: each table sums to ``2**PRECISION``."""

TOTAL: Final[int] = 1 << PRECISION
MAX_ALPHABET: Final[int] = TOTAL - 2
"""Largest alphabet size ``V`` (constriction rejects ``V >= 2**24 - 1``)."""

MAX_OVERREAD: Final[int] = 12
"""A decoder may read at most this many bytes past the payload's end (SPEC §4).

Legitimate payloads never need more (the encoder makes sure), so a damaged file is
rejected a few tokens after its decoding goes astray instead of running to the token limit.
"""

_WORD_BITS: Final[int] = 32
_STATE_BITS: Final[int] = 64
_STATE_MASK: Final[int] = (1 << _STATE_BITS) - 1

_Categorical: Any = constriction.stream.model.Categorical
_RangeEncoder: Any = constriction.stream.queue.RangeEncoder
_RangeDecoder: Any = constriction.stream.queue.RangeDecoder


def validate_table(f: np.ndarray) -> None:
    """Raise :class:`ValueError` unless ``f`` is a valid frequency table.

    Valid: a 1-D integer numpy array of length ``2 <= V <= MAX_ALPHABET`` whose entries
    are all ``>= 1`` and sum to exactly ``2**PRECISION``.

    >>> import numpy as np
    >>> validate_table(np.array([2**23, 2**23]))
    >>> validate_table(np.array([2**24 - 1, 2]))
    Traceback (most recent call last):
    ...
    ValueError: frequency table sums to 16777217, expected 2**24 = 16777216
    """
    if not isinstance(f, np.ndarray):
        raise ValueError(f"frequency table must be a numpy array, got {type(f).__name__}")
    if f.ndim != 1:
        raise ValueError(f"frequency table must be 1-D, got shape {f.shape}")
    if f.dtype.kind not in "iu":
        raise ValueError(f"frequency table must have an integer dtype, got {f.dtype}")
    n = f.shape[0]
    if not 2 <= n <= MAX_ALPHABET:
        raise ValueError(f"frequency table has {n} entries; need 2 <= V <= {MAX_ALPHABET}")
    lo = int(f.min())
    hi = int(f.max())
    if lo < 1:
        raise ValueError(f"frequency table has an entry {lo} < 1")
    if hi >= TOTAL:
        raise ValueError(f"frequency table has an entry {hi} >= 2**{PRECISION}")
    # Entries are in [1, 2**24) and V < 2**24, so the int64 sum cannot overflow.
    total = int(f.sum(dtype=np.int64))
    if total != TOTAL:
        raise ValueError(f"frequency table sums to {total}, expected 2**{PRECISION} = {TOTAL}")


def cross_entropy_bits(symbols: Sequence[int], tables: Sequence[np.ndarray]) -> float:
    """Information content ``sum(-log2(f[s] / 2**24))`` of ``symbols`` under ``tables``, in bits.

    >>> import numpy as np
    >>> cross_entropy_bits([0, 1], [np.array([2**23, 2**23])] * 2)
    2.0
    """
    return float(sum(PRECISION - math.log2(int(f[s])) for s, f in zip(symbols, tables, strict=True)))


def _symbol_interval(s: int, f: np.ndarray) -> tuple[int, int]:
    """Validate ``f`` and ``s`` and return ``(cum(f, s), f[s])``."""
    validate_table(f)
    s = int(s)
    if not 0 <= s < f.shape[0]:
        raise ValueError(f"symbol {s} is outside the alphabet 0..{f.shape[0] - 1}")
    return int(f[:s].sum(dtype=np.int64)), int(f[s])


def _interval_model(cum: int, freq: int) -> tuple[int, Any]:
    """A constriction model with 2 or 3 entries in which one entry has interval ``[cum, cum+freq)``.

    The range coder only sees ``(cum, freq)`` of the coded symbol, so coding entry ``idx`` of this
    small model is bit-identical to coding ``s`` with the full table, but costs O(1) instead of O(V).
    Entries are passed as ``weight - 1`` so that constriction's scale is exactly 1.0 (see module doc).
    """
    rest = TOTAL - cum - freq
    weights = [w for w in (cum, freq, rest) if w > 0]
    idx = 1 if cum > 0 else 0
    probs = np.array(weights, dtype=np.float64) - 1.0
    return idx, _Categorical(probs, perfect=False)


def _final_interval(symbols: Sequence[int], tables: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """``(low, rng, bits)`` of ``symbols`` under ``tables`` (validated); see :func:`_interval_of`."""
    if len(symbols) != len(tables):
        raise ValueError(f"{len(symbols)} symbols but {len(tables)} tables")
    return _interval_of([_symbol_interval(s, f) for s, f in zip(symbols, tables, strict=True)])


def _interval_of(intervals: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """Run constriction's RangeEncoder over ``(cum, freq)`` pairs and return ``(low, rng, bits)``.

    A value ``x`` in ``[0, 1)`` (the payload read as a big-endian fraction) decodes to
    the symbols iff ``low <= x * 2**bits < low + rng``.  For zero symbols returns ``(0, 1, 0)``.
    """
    if not intervals:
        return 0, 1, 0
    enc = _RangeEncoder()
    for cum, freq in intervals:
        idx, model = _interval_model(cum, freq)
        enc.encode(idx, model)
    pos, (lower, rng) = enc.pos()
    pos, lower, rng = int(pos), int(lower), int(rng)
    # Sealed words: `pos` words (including held-back carry words), then the top word of
    # `point = smallest multiple of 2**32 >= low` (in the 64-bit window), maybe one zero word.
    words = np.asarray(enc.get_compressed(), dtype=np.uint32)
    if words.shape[0] not in (pos + 1, pos + 2):  # pragma: no cover - constriction invariant
        raise AssertionError(f"unexpected constriction output: {words.shape[0]} words at pos {pos}")
    bits = _WORD_BITS * pos + _STATE_BITS
    point = int.from_bytes(words[: pos + 1].astype(">u4").tobytes(), "big") << _WORD_BITS
    # 0 <= point - low < 2**32 and low == lower (mod 2**64):
    low = point - ((point - lower) & _STATE_MASK)
    return low, rng, bits


def _shortest_payload(low: int, rng: int, bits: int) -> bytes:
    """The ``k``-byte big-endian string of value ``v`` with ``low <= v * 2**(bits - 8k) < low + rng``.

    Minimal ``k >= bits // 8 - MAX_OVERREAD`` first, then minimal ``v``.
    """
    high = low + rng

    def smallest(k: int) -> int | None:
        shift = bits - 8 * k
        if shift <= 0:
            return low << -shift
        v = -((-low) >> shift)  # ceil(low / 2**shift)
        return v if (v << shift) < high else None

    # A decoder reads bits // 8 bytes in all; it may read at most MAX_OVERREAD past the end.
    min_k = max(0, bits // 8 - MAX_OVERREAD)
    # Start near the information content (bits - log2(rng)); the predicate is monotone in k.
    k = max(min_k, (bits - rng.bit_length()) // 8)
    if smallest(k) is None:
        while smallest(k) is None:
            k += 1
    else:
        while k > min_k and smallest(k - 1) is not None:
            k -= 1
    v = smallest(k)
    assert v is not None
    return v.to_bytes(k, "big")


def encode(symbols: Sequence[int], tables: Sequence[np.ndarray]) -> bytes:
    """Range-code ``symbols`` (``tables[i]`` is the frequency table for ``symbols[i]``).

    Returns the canonical payload: the shortest byte string that decodes to ``symbols``
    (ties: the numerically smallest) that a decoder can read without going more than
    :data:`MAX_OVERREAD` bytes past its end.  Zero symbols give ``b""``.

    >>> import numpy as np
    >>> f = np.array([2**24 - 3, 1, 1, 1], dtype=np.int64)
    >>> encode([0] * 100, [f] * 100)
    b''
    >>> encode([1, 2], [f, f]).hex()  # two symbols of probability 2**-24: 48 bits
    'fffffdfffdff'
    """
    low, rng, bits = _final_interval(symbols, tables)
    return _shortest_payload(low, rng, bits)


def is_canonical(payload: bytes, symbols: Sequence[int], tables: Sequence[np.ndarray]) -> bool:
    """True iff ``encode(symbols, tables) == payload`` (no model calls; O(V) per symbol).

    >>> import numpy as np
    >>> f = np.array([2**23, 2**23], dtype=np.int64)
    >>> is_canonical(encode([1, 0, 1], [f] * 3), [1, 0, 1], [f] * 3)
    True
    """
    return encode(symbols, tables) == bytes(payload)


def _payload_words(payload: bytes) -> np.ndarray:
    """Payload as big-endian u32 words, zero-padded to a multiple of 4 bytes (native uint32 array).

    constriction's RangeDecoder reads a missing word as 0 (it shifts ``point`` left and ORs
    nothing in), so words past the end need not be materialised: the decoder sees the payload
    followed by zero bytes forever.
    """
    data = bytes(payload)
    data += b"\x00" * (-len(data) % 4)
    return np.frombuffer(data, dtype=">u4").astype(np.uint32)


def decode(
    payload: bytes,
    next_table: Callable[[list[int]], np.ndarray],
    *,
    stop_symbol: int,
    max_symbols: int,
) -> tuple[list[int], list[np.ndarray]]:
    """Decode symbols one at a time until ``stop_symbol`` (included in the result).

    ``next_table(symbols_so_far)`` is called with a fresh copy of the symbols decoded so far and
    must return the frequency table for the next symbol.  Returns ``(symbols, tables_used)``.

    Raises :class:`~semcodec.errors.SemLimitError` if ``max_symbols`` symbols were decoded without
    ``stop_symbol``, :class:`~semcodec.errors.SemIntegrityError` if the payload hits a value no
    encoder can produce, and :class:`ValueError` if ``next_table`` returns an invalid table.
    The payload is *not* checked to be canonical here; use :func:`is_canonical` for that.

    >>> import numpy as np
    >>> f = np.array([2**23, 2**22, 2**22], dtype=np.int64)
    >>> decode(encode([1, 0, 2], [f] * 3), lambda prefix: f, stop_symbol=2, max_symbols=5)[0]
    [1, 0, 2]
    >>> decode(b"", lambda prefix: f, stop_symbol=2, max_symbols=5)
    Traceback (most recent call last):
    ...
    semcodec.errors.SemLimitError: payload decodes to no end-of-text within 5 tokens
    """
    stream = StreamDecoder(payload, keep_tables=True)
    while len(stream.symbols) < max_symbols:
        if stream.step(next_table(list(stream.symbols))) == stop_symbol:
            return stream.symbols, stream.tables
    raise SemLimitError(f"payload decodes to no end-of-text within {max_symbols} tokens")


class StreamDecoder:
    """Decode one symbol per :meth:`step`, for callers that interleave many streams.

    :func:`decode` is this in a loop; a batch decoder keeps one ``StreamDecoder`` per file
    and feeds each the table its model computed for it in a shared forward pass. Only the
    ``(cum, freq)`` of each decoded symbol is kept (``keep_tables`` keeps the whole tables),
    which is all :meth:`is_canonical` needs.

    >>> import numpy as np
    >>> f = np.array([2**23, 2**22, 2**22], dtype=np.int64)
    >>> stream = StreamDecoder(encode([1, 2], [f, f]))
    >>> stream.step(f), stream.step(f), stream.symbols, stream.is_canonical()
    (1, 2, [1, 2], True)
    """

    def __init__(self, payload: bytes, keep_tables: bool = False) -> None:
        self.payload = bytes(payload)
        self._decoder = _RangeDecoder(_payload_words(self.payload))
        self._buf = np.empty(0, dtype=np.float32)
        self._range = _STATE_MASK
        self._words_read = 2  # the decoder's initial point
        self._keep_tables = keep_tables
        self.symbols: list[int] = []
        self.intervals: list[tuple[int, int]] = []
        self.tables: list[np.ndarray] = []

    def step(self, f: np.ndarray) -> int:
        """Decode the next symbol with table ``f`` (validated); returns it."""
        validate_table(f)
        if self._buf.shape != f.shape:
            self._buf = np.empty(f.shape, dtype=np.float32)
        # f - 1 as float32 is exact (entries < 2**24); constriction's lazy model copies it.
        np.subtract(f, 1, out=self._buf, casting="unsafe")
        model = _Categorical(self._buf, lazy=True)
        try:
            s = int(self._decoder.decode(model))
        except AssertionError as err:
            # constriction signals q >= 2**24 ("invalid compressed data") with AssertionError.
            raise SemIntegrityError(
                f"payload is not a valid range-coder stream (failed at token {len(self.symbols)})"
            ) from err
        cum, freq = int(f[:s].sum(dtype=np.int64)), int(f[s])
        # Mirror the decoder's renormalisation to count the words it has read (SPEC §4).
        self._range = (self._range >> PRECISION) * freq
        if self._range < 1 << _WORD_BITS:
            self._range <<= _WORD_BITS
            self._words_read += 1
            if 4 * self._words_read > len(self.payload) + MAX_OVERREAD:
                raise SemIntegrityError(
                    f"payload ends before its end-of-text (token {len(self.symbols)} reads past it): corrupt file"
                )
        self.symbols.append(s)
        self.intervals.append((cum, freq))
        if self._keep_tables:
            self.tables.append(f)
        return s

    def is_canonical(self) -> bool:
        """True iff re-encoding the decoded symbols gives the payload back byte for byte."""
        low, rng, bits = _interval_of(self.intervals)
        return _shortest_payload(low, rng, bits) == self.payload
