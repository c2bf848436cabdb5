"""The ``.sem`` container: header bytes in, header bytes out (``format/SPEC.md`` §2).

This module owns the format's versions, forms, flags and per-version defaults. It knows
bytes only, except for the v3 and v4 *short* forms, whose model id is the payload's second
symbol: reading it takes two steps of the range coder with fixed tables (:data:`FORM_TABLE`
and :data:`SHORT_MODEL_TABLE`; :data:`FORM_TABLE_V4` and :data:`V4_MODEL_TABLE`), never a model;
and the v5 form (first byte :data:`MAGIC_V5`), whose model id is the payload's first symbol
(:data:`V5_MODEL_TABLE`).

    >>> h = Header(model_id=3, width=512, height=512, seed=7)
    >>> raw = encode_header(h)
    >>> raw.hex()
    'a70c0780048004'
    >>> decode_header(raw + b"payload")[0] == h
    True
    >>> Header().model_id, Header().version, encode_header(Header()).hex()  # the default: v5, one byte
    (10, 5, 'a8')
    >>> Header(model_id=6).version, encode_header(Header(model_id=6)).hex()  # v4 short: id in the payload
    (4, 'a7')
    >>> encode_header(Header(model_id=3)).hex(), Header(model_id=3).compact  # v2 compact: model 3
    ('a7', True)
    >>> Header(model_id=4).version, encode_header(Header(model_id=4)).hex()  # v3 short: id in the payload
    (3, 'a7')
    >>> encode_header(Header(model_id=4, version=2)).hex(), encode_header(Header(version=1, model_id=0)).hex()
    ('a70104', 'a740')
    >>> encode_header(Header(width=512, height=512)).hex()  # an explicit header stores v5's default model
    'a7090a80048004'
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from semcodec.errors import SemFormatError, SemIntegrityError, SemLimitError, SemVersionError

MAGIC = 0xA7
"""First byte of every ``.sem`` file of v1–v4 (and of every explicit header): a UTF-8
continuation byte, so no text file starts with it."""
MAGIC_V5 = 0xA8
"""First byte of a v5 file (SPEC §2): another continuation byte. The whole header is that byte;
the payload starts at byte 1 with the v5 model symbol (no form symbol: the byte is the form)."""
MAGICS = (MAGIC, MAGIC_V5)

FORMAT_VERSION = 5
"""The newest version this build writes; it reads versions in :data:`READABLE_VERSIONS` (SPEC §7).
A v5 writer still writes v2's, v3's and v4's forms where they name the header (:attr:`Header.version`)."""

READABLE_VERSIONS = frozenset({1, 2, 3, 4, 5})
WRITABLE_VERSIONS = READABLE_VERSIONS
"""v1 and v2 stay writable so that every valid file re-encodes to its own bytes (``pack_header``)."""

DEFAULT_MODEL_IDS = {1: 0, 2: 3, 3: 3, 4: 6, 5: 10}
"""The model an absent model field means, per version (SPEC §2). v2's is the best profile of
its day; v3 keeps it (a v3 file's own form always names its model); v4's is the adapted
caption profile; v5's the captioner profile, the one ``pack`` uses when none is named (v3's,
v4's and v5's forms name their model in the payload)."""

AUTO_VERSION = 0
"""``Header(version=AUTO_VERSION)`` (the default): the smallest form, v5, v4 or v3 short, or v2 (SPEC §2)."""

V1_BITS = 0b01
"""Byte 1, bits 7–6: ``01`` v1; ``00`` v2 with explicit flags; ``1x`` v2 compact (payload from byte 1).
Bits 7–5 ``001`` (v2's flag bit 5 alone of the explicit form) are the v3 short form, ``011`` (v1's
reserved flag bit 5, never valid in a v1 file) the v4 short form."""
V2_EXPLICIT_BITS = 0b00

# SPEC §2/§4: the payload of a one-byte header starts with a form symbol whose table mirrors
# byte 1's top bits, so the byte tells the forms apart: symbol 0 = [0, 1/8) is an explicit v2
# header's byte, 2 = [1/4, 1/2) a v1 header's; a payload codes only 3 (compact, x(P) ≥ 1/2:
# byte 1 ≥ 0x80, the same interval as v2's 1-bit marker [2**23, 2**23]) or 1 (short, byte 1 = 001xxxxx).
FORM_TABLE = np.array([1 << 21, 1 << 21, 1 << 22, 1 << 23], dtype=np.int64)
FORM_SHORT = 1
FORM_COMPACT = 3

# SPEC §2/§4, v4: the same byte regions in five intervals: [0, 1/8) explicit v2, [1/8, 1/4) v3
# short, [1/4, 3/8) v1, [3/8, 1/2) v4 short (byte 1 = 011xxxxx), [1/2, 1) compact. A v4 short
# payload codes symbol 3 of this table: 3 bits.
FORM_TABLE_V4 = np.array([1 << 21, 1 << 21, 1 << 21, 1 << 21, 1 << 23], dtype=np.int64)
FORM_V4_SYMBOL = 3
FORM_V4 = 4
"""What :func:`one_byte_form` says for byte 1 = ``011xxxxx`` (a form, not a symbol of FORM_TABLE)."""

V4_MODEL_IDS = (None, 6, 7, 8, 9)
"""v4 short form: the model symbol's meaning; symbol 0 (``None``) is the escape a later version
announces itself with, as in v3."""
V4_MODEL_TABLE = np.array([1 << 14, (3 << 22) - (1 << 14), 1 << 20, 1 << 21, 1 << 20], dtype=np.int64)
"""Escape: 10 bits; id 6 (captions, the default): 0.415 bits; 7 (paragraphs) and 9 (alt text):
4 bits; 8 (descriptions): 3 bits."""

V5_MODEL_IDS = (None, 10, 11)
"""v5 form: the model symbol's meaning (the payload's first symbol); symbol 0 (``None``) is the
escape a later version announces itself with."""
V5_MODEL_TABLE = np.array([1 << 14, (1 << 24) - (1 << 14) - (1 << 21), 1 << 21], dtype=np.int64)
"""Escape: 10 bits; id 10 (captions, the default): 0.194 bits; id 11 (paragraphs): 3 bits."""
FORM_V5 = 5
"""What :attr:`Header.form` says for the v5 form (named by byte 0, not byte 1)."""

SHORT_MODEL_IDS = (None, 0, 1, 2, 4, 5)
"""v3 short form: the model symbol's meaning; symbol 0 (``None``) is the escape a later
version announces itself with (byte 1 = ``0x20``, v2's "flag bit 5 alone"). Id 3 has no
symbol: the compact form is its one encoding."""
SHORT_MODEL_TABLE = np.array([1 << 19, 1 << 19, 1 << 19, 1 << 19, 1 << 19, (1 << 24) - 5 * (1 << 19)],
                             dtype=np.int64)
"""Escape and ids 0, 1, 2, 4: 5 bits each; id 5 (paragraphs): 0.245 bits."""

FLAG_MODEL = 1 << 0
FLAG_GENERATOR = 1 << 1
FLAG_SEED = 1 << 2
FLAG_SIZE = 1 << 3
FLAG_CHECK = 1 << 4
_KNOWN_FLAGS = FLAG_MODEL | FLAG_GENERATOR | FLAG_SEED | FLAG_SIZE | FLAG_CHECK
_FLAG_NAMES = {5: "bit 5 (reserved)"}

DEFAULT_WIDTH = 1024
DEFAULT_HEIGHT = 1024
MAX_DIMENSION = 16384
"""Largest width or height a reader accepts."""
MAX_ID = 2**32 - 1
MAX_SEED = 2**64 - 1
_MAX_VARINT_BYTES = 10  # ceil(64 / 7): a longer varint is rejected before it grows


@dataclass(frozen=True)
class Header:
    """Everything a ``.sem`` header says. Defaults are free: they cost no bytes.

    Attributes:
        model_id: probability-model id (registry); pins tokenizer and context profile.
        generator_id: text-to-image generator id (registry); 0 means "decoder's choice".
        seed: generator seed.
        width, height: resolution the image is regenerated at.
        check: whether a 2-byte integrity check of the text follows the header.
    """

    model_id: int = DEFAULT_MODEL_IDS[FORMAT_VERSION]
    generator_id: int = 0
    seed: int = 0
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    check: bool = False
    version: int = AUTO_VERSION

    def __post_init__(self) -> None:
        if self.version == AUTO_VERSION:  # the smallest form: v5, v4 or v3 short where it applies, else v2
            version = (5 if _v5_form_applies(self) else 4 if _v4_form_applies(self)
                       else 3 if _short_form_applies(self) else 2)
            object.__setattr__(self, "version", version)
        if self.version not in WRITABLE_VERSIONS:
            raise SemVersionError(f"format version {self.version!r} is not one this build writes")
        for name, value, top in (
            ("model_id", self.model_id, MAX_ID),
            ("generator_id", self.generator_id, MAX_ID),
            ("seed", self.seed, MAX_SEED),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise SemLimitError(f"{name} must be an integer in [0, {top}], got {value!r}")
        for name, value in (("width", self.width), ("height", self.height)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSION:
                raise SemLimitError(f"{name} must be an integer in [1, {MAX_DIMENSION}], got {value!r}")
        if self.version == 3 and not _short_form_applies(self):
            raise SemVersionError(
                "a v3 header is the short form: model id in (0, 1, 2, 4, 5), every other field at its default"
            )
        if self.version == 4 and not _v4_form_applies(self):
            raise SemVersionError(
                "a v4 header is the short form: model id in (6, 7, 8, 9), every other field at its default"
            )
        if self.version == 5 and not _v5_form_applies(self):
            raise SemVersionError(
                "a v5 header is the one-byte form: model id in (10, 11), every other field at its default"
            )

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def compact(self) -> bool:
        """True for the v2 one-byte header (every field at its default). Its payload starts
        with the marker symbol (SPEC §4), which makes the payload's first byte ≥ 0x80."""
        return self.version == 2 and not _flags(self)

    @property
    def short(self) -> bool:
        """True for the v3 short form: the one-byte header ``A7``, and the payload starts with
        the form symbol and the model symbol (SPEC §2, §4). Its first byte is ``001xxxxx``."""
        return self.version == 3

    @property
    def form_symbols(self) -> list[tuple[int, np.ndarray]]:
        """The fixed-table symbols the payload starts with (SPEC §4): (symbol, table) pairs."""
        if self.compact:
            return [(FORM_COMPACT, FORM_TABLE)]
        if self.short:
            return [(FORM_SHORT, FORM_TABLE), (SHORT_MODEL_IDS.index(self.model_id), SHORT_MODEL_TABLE)]
        if self.version == 4:
            return [(FORM_V4_SYMBOL, FORM_TABLE_V4), (V4_MODEL_IDS.index(self.model_id), V4_MODEL_TABLE)]
        if self.version == 5:
            return [(V5_MODEL_IDS.index(self.model_id), V5_MODEL_TABLE)]
        return []

    @property
    def form(self) -> int | None:
        """The one-byte form this header takes (what :func:`one_byte_form` reads back), or None."""
        if self.compact:
            return FORM_COMPACT
        if self.short:
            return FORM_SHORT
        return {4: FORM_V4, 5: FORM_V5}.get(self.version)

    def fits(self, payload: bytes) -> bool:
        """Whether ``payload`` after this header's bytes reads back as this header's form. A
        one-byte form's payload lies in its interval up to a sliver of about 2**-41 just below it
        (the coder's first scale is 2**40 - 1, not 2**40), where the writer falls back to an
        explicit header (:func:`explicit`). The v5 form is named by byte 0, so every payload fits it."""
        if self.form in (None, FORM_V5):
            return True
        return bool(payload) and one_byte_form(payload[0]) == self.form

    def with_fields(self, **changes: int | bool) -> Header:
        """This header with ``changes``, in the smallest form of its version family (a v1 header
        stays v1): ``dataclasses.replace`` would keep a form the new fields may not fit.

        >>> Header(model_id=5).with_fields(seed=7).version, Header(model_id=5, seed=7).with_fields(seed=0).version
        (2, 3)
        """
        fields: dict[str, Any] = {"version": self.version if self.version == 1 else AUTO_VERSION, **changes}
        return replace(self, **fields)

    def explicit(self) -> Header:
        """The same fields in an explicit form, for the rare payload :meth:`fits` refuses:
        v2 explicit for a short header, v1 for the compact one (v2's explicit form cannot
        store model 3, its default)."""
        if self.short or self.version in (4, 5):
            return Header(self.model_id, version=2)
        if self.compact:
            return Header(self.model_id, version=1)
        return self


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant group first, high bit = more.

    >>> encode_varint(300).hex()
    'ac02'
    """
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int, field: str, top: int) -> tuple[int, int]:
    """Read one canonical LEB128 varint at ``pos``; return ``(value, next_pos)``."""
    value = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise SemFormatError(f"file ends inside the {field} field")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise SemFormatError(f"{field} is not minimally encoded")
            if value > top:
                raise SemLimitError(f"{field} {value} exceeds the limit {top}")
            return value, pos + i + 1
    raise SemLimitError(f"{field} is longer than {_MAX_VARINT_BYTES} bytes")


def text_check(text: str) -> bytes:
    """The optional integrity check: the low 16 bits of CRC-32 (zlib) of the UTF-8 text, big-endian."""
    return (zlib.crc32(text.encode("utf-8")) & 0xFFFF).to_bytes(2, "big")


def one_byte_form(byte1: int) -> int | None:
    """The form a file's byte 1 names when it is a one-byte header's payload (SPEC §2):
    :data:`FORM_COMPACT` (``1xxxxxxx``), :data:`FORM_SHORT` (``001xxxxx``), else None (the
    flags byte of an explicit header)."""
    if byte1 >> 7:
        return FORM_COMPACT
    if byte1 >> 5 == 0b001:
        return FORM_SHORT
    if byte1 >> 5 == 0b011:
        return FORM_V4
    return None


def _short_form_applies(header: Header) -> bool:
    return header.model_id in SHORT_MODEL_IDS and _flags(header, 2) == FLAG_MODEL


def _v4_form_applies(header: Header) -> bool:
    return header.model_id in V4_MODEL_IDS and _flags(header, 2) == FLAG_MODEL


def _v5_form_applies(header: Header) -> bool:
    return header.model_id in V5_MODEL_IDS and _flags(header, 2) == FLAG_MODEL


def _flags(header: Header, version: int | None = None) -> int:
    flags = 0
    if header.model_id != DEFAULT_MODEL_IDS[version or header.version]:
        flags |= FLAG_MODEL
    if header.generator_id:
        flags |= FLAG_GENERATOR
    if header.seed:
        flags |= FLAG_SEED
    if (header.width, header.height) != (DEFAULT_WIDTH, DEFAULT_HEIGHT):
        flags |= FLAG_SIZE
    if header.check:
        flags |= FLAG_CHECK
    return flags


def encode_header(header: Header, check_value: bytes = b"") -> bytes:
    """Serialise ``header``; ``check_value`` (2 bytes) is required iff ``header.check``."""
    flags = _flags(header)
    fields = bytearray()
    if flags & FLAG_MODEL:
        fields += encode_varint(header.model_id)
    if flags & FLAG_GENERATOR:
        fields += encode_varint(header.generator_id)
    if flags & FLAG_SEED:
        fields += encode_varint(header.seed)
    if flags & FLAG_SIZE:
        fields += encode_varint(header.width) + encode_varint(header.height)
    if header.check:
        if len(check_value) != 2:
            raise ValueError("a header with check=True needs its 2-byte check value")
        fields += check_value
    if header.form == FORM_V5:
        return bytes([MAGIC_V5])
    if header.form is not None:
        return bytes([MAGIC])
    bits = V1_BITS if header.version == 1 else V2_EXPLICIT_BITS
    return bytes([MAGIC, (bits << 6) | flags]) + bytes(fields)


def decode_header(data: bytes) -> tuple[Header, bytes, int]:
    """Parse the header at the start of ``data``.

    Returns ``(header, check_value, payload_offset)``; ``check_value`` is ``b""`` when the
    file carries no integrity check.
    """
    if len(data) < 2:
        raise SemFormatError(f"file too short for a .sem header ({len(data)} bytes)")
    if data[0] == MAGIC_V5:  # SPEC §2: the v5 form, payload from byte 1
        return Header(v5_form_model(bytes(data[1:])), version=5), b"", 1
    if data[0] != MAGIC:
        raise SemFormatError(not_a_sem_file(data[0]))
    form = one_byte_form(data[1])  # byte 1 is then the payload's first byte
    if form == FORM_COMPACT:
        return Header(DEFAULT_MODEL_IDS[2], version=2), b"", 1  # the compact form means v2's default
    if form == FORM_SHORT:
        return Header(short_form_model(bytes(data[1:])), version=3), b"", 1
    if form == FORM_V4:
        return Header(v4_form_model(bytes(data[1:])), version=4), b"", 1
    version = 1 if data[1] >> 6 == V1_BITS else 2
    flags = data[1] & 0x3F
    unknown = flags & ~_KNOWN_FLAGS
    if unknown:
        names = ", ".join(_FLAG_NAMES.get(b, f"bit {b}") for b in range(6) if unknown >> b & 1)
        raise SemFormatError(f"unknown header flag {names}")
    if version == 2 and not flags:
        raise SemFormatError("an all-defaults v2 header must be the one-byte form")
    pos = 2
    default_model = DEFAULT_MODEL_IDS[version]
    model_id = default_model
    generator_id = seed = 0
    width, height = DEFAULT_WIDTH, DEFAULT_HEIGHT
    if flags & FLAG_MODEL:
        model_id, pos = decode_varint(data, pos, "model id", MAX_ID)
        if model_id == default_model:
            raise SemFormatError(f"model id {default_model} must be omitted, not stored (v{version}'s default)")
    if flags & FLAG_GENERATOR:
        generator_id, pos = decode_varint(data, pos, "generator id", MAX_ID)
        if generator_id == 0:
            raise SemFormatError("generator id 0 must be omitted, not stored")
    if flags & FLAG_SEED:
        seed, pos = decode_varint(data, pos, "seed", MAX_SEED)
        if seed == 0:
            raise SemFormatError("seed 0 must be omitted, not stored")
    if flags & FLAG_SIZE:
        width, pos = decode_varint(data, pos, "width", MAX_DIMENSION)
        height, pos = decode_varint(data, pos, "height", MAX_DIMENSION)
        if width == 0 or height == 0:
            raise SemFormatError(f"resolution {width}x{height} has a zero side")
        if (width, height) == (DEFAULT_WIDTH, DEFAULT_HEIGHT):
            raise SemFormatError("the default resolution must be omitted, not stored")
    check_value = b""
    if flags & FLAG_CHECK:
        if pos + 2 > len(data):
            raise SemFormatError("file ends inside the integrity check")
        check_value = bytes(data[pos : pos + 2])
        pos += 2
    header = Header(model_id, generator_id, seed, width, height, bool(flags & FLAG_CHECK), version)
    return header, check_value, pos


def not_a_sem_file(first: int) -> str:
    """The message for a file whose first byte starts no ``.sem`` file."""
    return f"not a .sem file (first byte 0x{first:02x}, expected 0x{MAGIC:02x} or 0x{MAGIC_V5:02x})"


def v5_form_model(payload: bytes) -> int:
    """The model id a v5 payload names: its first symbol (SPEC §2, §4).

    >>> from semcodec import coding
    >>> v5_form_model(coding.encode([V5_MODEL_IDS.index(11)], [V5_MODEL_TABLE]))
    11
    """
    return _named_model(payload, V5_MODEL_TABLE, V5_MODEL_IDS, "v5 form")


def short_form_model(payload: bytes) -> int:
    """The model id a v3 short form's payload names: its form and model symbols (SPEC §2, §4).

    >>> from semcodec import coding
    >>> short_form_model(coding.encode([FORM_SHORT, SHORT_MODEL_IDS.index(4)], [FORM_TABLE, SHORT_MODEL_TABLE]))
    4
    """
    return _named_model(payload, SHORT_MODEL_TABLE, SHORT_MODEL_IDS, "v3 short form", (FORM_TABLE, FORM_SHORT))


def v4_form_model(payload: bytes) -> int:
    """The model id a v4 short form's payload names: its form and model symbols (SPEC §2, §4).

    >>> from semcodec import coding
    >>> v4_form_model(coding.encode([FORM_V4_SYMBOL, V4_MODEL_IDS.index(8)], [FORM_TABLE_V4, V4_MODEL_TABLE]))
    8
    """
    return _named_model(payload, V4_MODEL_TABLE, V4_MODEL_IDS, "v4 short form", (FORM_TABLE_V4, FORM_V4_SYMBOL))


def _named_model(payload: bytes, model_table: np.ndarray, model_ids: tuple[int | None, ...], form_name: str,
                 form: tuple[np.ndarray, int] | None = None) -> int:
    """A one-byte form's first symbols: its form symbol (``form``: table and symbol, checked; the
    v5 form has none), then the model it names."""
    from semcodec.coding import StreamDecoder

    stream = StreamDecoder(payload)
    if form is not None and stream.step(form[0]) != form[1]:
        raise SemIntegrityError(f"payload does not start with the {form_name}'s symbol (corrupt file)")
    model_id = model_ids[stream.step(model_table)]
    if model_id is None:  # SPEC §7: how a later version announces itself
        raise SemVersionError(f"unsupported .sem format ({form_name} with the escape symbol: a later version)")
    return model_id
