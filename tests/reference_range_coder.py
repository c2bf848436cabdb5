"""From-scratch reference of the ``.sem`` payload coder: pure Python integers, no numpy, no constriction.

It re-implements, from the algorithm description (constriction's ``stream/queue.rs``, default
preset: 32-bit words, 64-bit state, 24-bit precision), both halves of the range coder:

* :class:`RangeEncoder` -- streaming encoder that emits 32-bit words exactly like constriction's
  ``RangeEncoder`` (including the held-back "inverted" words used for carry propagation), and
  in parallel tracks the *unbounded* lower bound of the spec, from which the canonical payload
  (shortest byte string, then smallest value) is derived;
* :class:`RangeDecoder` -- streaming decoder over a byte string followed by zero bytes forever.

Tables are any sequences of ints (lists, tuples or numpy arrays; entries are read with ``int``).
It is the executable proof that the payload section of the spec is implementable without
constriction: the tests require its output to be bit-identical to :mod:`semcodec.coding`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

PRECISION = 24
TOTAL = 1 << PRECISION
WORD_BITS = 32
STATE_BITS = 64
WORD_MASK = (1 << WORD_BITS) - 1
STATE_MASK = (1 << STATE_BITS) - 1
RENORM_LIMIT = 1 << (STATE_BITS - WORD_BITS)  # range must stay >= 2**32


MAX_OVERREAD = 12  # bytes a decoder may read past the payload (SPEC section 4)


class InvalidPayloadError(Exception):
    """The decoder reached a value that no encoder can produce (quantile >= 2**24)."""


def check_table(table: Sequence[int]) -> list[int]:
    """Return ``table`` as a list of ints after checking it is a valid frequency table."""
    f = [int(x) for x in table]
    if len(f) < 2 or len(f) > TOTAL - 2:
        raise ValueError("alphabet size out of range")
    if min(f) < 1 or sum(f) != TOTAL:
        raise ValueError("entries must be >= 1 and sum to 2**24")
    return f


def symbol_interval(table: Sequence[int], symbol: int) -> tuple[int, int]:
    """``(cum, freq)``: the symbol's interval ``[cum, cum + freq)`` within ``[0, 2**24)``."""
    f = check_table(table)
    if not 0 <= symbol < len(f):
        raise ValueError("symbol outside the alphabet")
    return sum(f[:symbol]), f[symbol]


class RangeEncoder:
    """Streaming range encoder, word-for-word compatible with constriction's ``RangeEncoder``."""

    def __init__(self) -> None:
        self.lower = 0  # 64-bit, wraps
        self.range = STATE_MASK  # 2**64 - 1 until the first symbol
        self.words: list[int] = []
        # Carry handling: while the interval [lower, lower + range) straddles a multiple of
        # 2**64 ("inverted"), the word leaving the window is not final yet -- a later carry
        # may still add 1 to it.  We hold back the first such word and count the words after
        # it (each of which is then either all-ones, or all-zeros once the carry happened).
        self.held_word: int | None = None
        self.held_count = 0
        # The spec's unbounded integer lower bound and number of renormalisations.
        self.big_low = 0
        self.shifts = 0

    def _flush_held(self, carry: bool) -> None:
        assert self.held_word is not None
        if carry:
            self.words.append((self.held_word + 1) & WORD_MASK)
            self.words.extend([0] * (self.held_count - 1))
        else:
            self.words.append(self.held_word)
            self.words.extend([WORD_MASK] * (self.held_count - 1))
        self.held_word = None
        self.held_count = 0

    def encode(self, table: Sequence[int], symbol: int) -> None:
        cum, freq = symbol_interval(table, symbol)
        scale = self.range >> PRECISION
        self.range = scale * freq
        new_lower = (self.lower + scale * cum) & STATE_MASK
        self.big_low += scale * cum
        if self.held_word is not None and new_lower + self.range <= STATE_MASK:
            # The interval no longer straddles 2**64: the held words are now final.  A carry
            # happened iff the addition above wrapped around.
            self._flush_held(carry=new_lower < self.lower)
        self.lower = new_lower
        if self.range < RENORM_LIMIT:
            self.range <<= WORD_BITS
            self.big_low <<= WORD_BITS
            self.shifts += 1
            top_word = self.lower >> (STATE_BITS - WORD_BITS)
            self.lower = (self.lower << WORD_BITS) & STATE_MASK
            if self.held_word is not None:
                self.held_count += 1
            elif self.lower + self.range <= STATE_MASK:
                self.words.append(top_word)
            else:
                self.held_word = top_word
                self.held_count = 1

    def sealed_words(self) -> list[int]:
        """What constriction's ``get_compressed()`` returns: the words so far plus a flush."""
        if self.range == STATE_MASK:  # nothing encoded yet
            return []
        saved = (list(self.words), self.held_word, self.held_count)
        point = (self.lower + RENORM_LIMIT - 1) & STATE_MASK  # round lower up to a word boundary
        if self.held_word is not None:
            self._flush_held(carry=point < self.lower)
        point_word = point >> (STATE_BITS - WORD_BITS)
        upper_word = ((self.lower + self.range) & STATE_MASK) >> (STATE_BITS - WORD_BITS)
        out = [*self.words, point_word]
        if upper_word == point_word:
            out.append(0)
        self.words, self.held_word, self.held_count = saved
        return out

    def final_interval(self) -> tuple[int, int, int]:
        """``(low, rng, bits)``: ``x`` decodes to the symbols iff ``low <= x * 2**bits < low + rng``."""
        if self.range == STATE_MASK:
            return 0, 1, 0
        return self.big_low, self.range, STATE_BITS + WORD_BITS * self.shifts

    def canonical_payload(self) -> bytes:
        """Shortest byte string whose value lies in the final interval (ties: smallest value)."""
        low, rng, bits = self.final_interval()
        k = max(0, bits // 8 - MAX_OVERREAD)  # a decoder reads bits // 8 bytes in all
        while True:
            shift = bits - 8 * k
            value = -((-low) >> shift) if shift > 0 else low << -shift
            if shift <= 0 or (value << shift) < low + rng:
                return value.to_bytes(k, "big")
            k += 1


class RangeDecoder:
    """Streaming range decoder reading ``payload`` followed by zero bytes forever."""

    def __init__(self, payload: bytes, max_overread: int | None = MAX_OVERREAD) -> None:
        data = bytes(payload) + b"\x00" * (-len(payload) % 4)
        self.words = [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data), 4)]
        self.payload_bytes = len(payload)
        self.max_overread = max_overread
        self.next_word = 0
        self.lower = 0
        self.range = STATE_MASK
        self.point = (self._read() << WORD_BITS) | self._read()

    def _read(self) -> int:
        word = self.words[self.next_word] if self.next_word < len(self.words) else 0  # zeros forever
        self.next_word += 1
        return word

    def decode(self, table: Sequence[int]) -> int:
        f = check_table(table)
        scale = self.range >> PRECISION
        quantile = ((self.point - self.lower) & STATE_MASK) // scale
        if quantile >= TOTAL:
            raise InvalidPayloadError("quantile outside [0, 2**24)")
        cdf = list(accumulate(f, initial=0))  # cdf[s] = cum(f, s); cdf[-1] = 2**24
        symbol = bisect_right(cdf, quantile) - 1
        self.lower = (self.lower + scale * cdf[symbol]) & STATE_MASK
        self.range = scale * f[symbol]
        if self.range < RENORM_LIMIT:
            self.range <<= WORD_BITS
            self.lower = (self.lower << WORD_BITS) & STATE_MASK
            self.point = ((self.point << WORD_BITS) & STATE_MASK) | self._read()
            if self.max_overread is not None and 4 * self.next_word > self.payload_bytes + self.max_overread:
                raise InvalidPayloadError("decoder reads more than MAX_OVERREAD bytes past the payload")
        return symbol


def encode(symbols: Sequence[int], tables: Sequence[Sequence[int]]) -> bytes:
    """Canonical payload of ``symbols`` (``tables[i]`` codes ``symbols[i]``)."""
    if len(symbols) != len(tables):
        raise ValueError("need one table per symbol")
    enc = RangeEncoder()
    for s, f in zip(symbols, tables, strict=True):
        enc.encode(f, int(s))
    return enc.canonical_payload()


def decode_n(payload: bytes, tables: Sequence[Sequence[int]], max_overread: int | None = MAX_OVERREAD) -> list[int]:
    """Decode ``len(tables)`` symbols (may raise :class:`InvalidPayloadError`)."""
    dec = RangeDecoder(payload, max_overread)
    return [dec.decode(f) for f in tables]


def decodes_to(payload: bytes, symbols: Sequence[int], tables: Sequence[Sequence[int]]) -> bool:
    """True iff the first ``len(symbols)`` decoded symbols are exactly ``symbols``."""
    try:
        return decode_n(payload, tables) == [int(s) for s in symbols]
    except InvalidPayloadError:
        return False
