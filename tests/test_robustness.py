"""Robustness of the reader: every field's range, corruption, hostile payloads, limits.

What a reader promises (README, "Security and robustness"):

* every malformed, truncated, oversized or corrupted input ends in a documented
  :class:`semcodec.SemError` subclass -- never another exception;
* a file is accepted only if it is the canonical coding of what it decodes to, so two
  different byte strings never decode to the same content, and a damaged file that is
  accepted decodes to a different (text, header) that a writer would have produced;
* with ``check=True`` a damaged payload or check value is rejected unless the 16-bit check
  collides (about 1 in 65536); the check covers the text, not the header fields.

The corruption tests run the real decoder on every truncation and every single-bit flip
of two small files. A damaged payload usually decodes to text that never ends, so those
tests lower :data:`semcodec.codec.MAX_TOKENS` (the decoder reads it at call time) to keep
each decode to a few LM steps; ``test_hostile_payload_stops_at_the_token_limit`` checks
that the limit really bounds the work.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import semcodec
import semcodec.codec
from semcodec import coding
from semcodec.container import (
    AUTO_VERSION,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    FLAG_CHECK,
    FLAG_GENERATOR,
    FLAG_MODEL,
    FLAG_SEED,
    FLAG_SIZE,
    MAGIC,
    MAX_DIMENSION,
    MAX_ID,
    MAX_SEED,
    Header,
    decode_header,
    encode_header,
    encode_varint,
)
from semcodec.errors import (
    SemError,
    SemFormatError,
    SemIntegrityError,
    SemLimitError,
    SemUnknownModelError,
    SemVersionError,
)

V1 = 1 << 6  # version 1 in the flags byte

# -- header: every field over its full range (no model) ------------------------------------


def _varint_len(value: int) -> int:
    return max(1, -(-value.bit_length() // 7))


def _edges(top: int, low: int = 0) -> st.SearchStrategy[int]:
    """Values at every varint length boundary and the ends of the range, or any value in it."""
    boundaries = {low, low + 1, top - 1, top}
    boundaries |= {v for k in range(1, 11) for v in (2 ** (7 * k) - 1, 2 ** (7 * k)) if low <= v <= top}
    return st.one_of(st.sampled_from(sorted(boundaries)), st.integers(low, top))


@given(
    model_id=_edges(MAX_ID),
    generator_id=_edges(MAX_ID),
    seed=_edges(MAX_SEED),
    width=_edges(MAX_DIMENSION, 1),
    height=_edges(MAX_DIMENSION, 1),
    check_value=st.none() | st.binary(min_size=2, max_size=2),
    payload=st.binary(max_size=6),
    version=st.sampled_from([AUTO_VERSION, 1, 2]),
)
@example(MAX_ID, MAX_ID, MAX_SEED, MAX_DIMENSION, MAX_DIMENSION, b"\xff\xff", b"", 2)
@example(0, 0, 0, DEFAULT_WIDTH, DEFAULT_HEIGHT, None, b"", 1)
@example(3, 0, 0, DEFAULT_WIDTH, DEFAULT_HEIGHT, None, b"", 2)
@example(0, 0, 0, DEFAULT_WIDTH, DEFAULT_HEIGHT, None, b"", 2)
@example(0, 0, 0, DEFAULT_WIDTH, 1, None, b"\x80", 1)
@example(5, 0, 0, DEFAULT_WIDTH, DEFAULT_HEIGHT, None, b"", AUTO_VERSION)
@example(4, 0, 0, DEFAULT_WIDTH, DEFAULT_HEIGHT, None, b"", 2)
def test_header_round_trips_every_field(
    model_id: int,
    generator_id: int,
    seed: int,
    width: int,
    height: int,
    check_value: bytes | None,
    payload: bytes,
    version: int,
) -> None:
    header = Header(model_id, generator_id, seed, width, height, check=check_value is not None, version=version)
    raw = encode_header(header, check_value or b"")
    if header.compact:  # its payload starts with the form symbol 3: first byte >= 0x80 (SPEC §4)
        payload = b"\x80" + payload
    if header.short or header.version in (4, 5):  # form and model symbols: the payload names the model (SPEC §2)
        payload = coding.encode([s for s, _ in header.form_symbols], [t for _, t in header.form_symbols])
    decoded, got_check, offset = decode_header(raw + payload)
    assert decoded == header
    assert got_check == (check_value or b"")
    assert offset == len(raw)
    # Defaults cost nothing; every other field costs its LEB128 length (computed independently).
    default_model = 0 if version == 1 else 3
    expected = 2 + 2 * (check_value is not None)
    expected += sum(_varint_len(v) for v in (generator_id, seed) if v)
    expected += _varint_len(model_id) if model_id != default_model else 0
    if (width, height) != (DEFAULT_WIDTH, DEFAULT_HEIGHT):
        expected += _varint_len(width) + _varint_len(height)
    if version != 1 and expected == 2:
        expected = 1  # the compact one-byte header
    if version == AUTO_VERSION and model_id in (0, 1, 2, 4, 5) and expected == 2 + _varint_len(model_id):
        expected = 1  # the v3 short form: the model symbol is in the payload
        assert header.version == 3
    if version == AUTO_VERSION and model_id in (6, 7, 8, 9) and expected == 2 + _varint_len(model_id):
        expected = 1  # the v4 short form: the model symbol is in the payload
        assert header.version == 4
    if version == AUTO_VERSION and model_id in (10, 11) and expected == 2 + _varint_len(model_id):
        expected = 1  # the v5 form: byte 0 is A8, the model symbol is in the payload
        assert header.version == 5 and raw == b"\xa8"
    assert len(raw) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_id", -1),
        ("model_id", MAX_ID + 1),
        ("generator_id", MAX_ID + 1),
        ("seed", -1),
        ("seed", MAX_SEED + 1),
        ("width", 0),
        ("width", MAX_DIMENSION + 1),
        ("height", 0),
        ("height", MAX_DIMENSION + 1),
        ("width", True),
        ("seed", 1.0),
    ],
)
def test_header_fields_out_of_range_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(SemLimitError, match=field):
        Header(**{field: value})  # type: ignore[arg-type]


@given(st.binary(max_size=40))
@example(bytes([MAGIC, V1 | 0x1F]) + b"\xff" * 30)
def test_decode_header_accepts_only_canonical_headers(tail: bytes) -> None:
    """Arbitrary bytes after the magic: a documented error, or a header that re-encodes to the same bytes."""
    data = bytes([MAGIC]) + tail
    try:
        header, check_value, offset = decode_header(data)
    except (SemFormatError, SemVersionError, SemLimitError, SemIntegrityError):
        return  # SemIntegrityError: a v3 short form whose form symbol is not 1 (SPEC §6)
    assert encode_header(header, check_value) == data[:offset]


_FIELD_FLAGS = [("model id", FLAG_MODEL), ("generator id", FLAG_GENERATOR), ("seed", FLAG_SEED)]


@pytest.mark.parametrize(("name", "flag"), _FIELD_FLAGS)
def test_header_field_limits_and_encodings(name: str, flag: int) -> None:
    top = MAX_SEED if flag == FLAG_SEED else MAX_ID
    head = bytes([MAGIC, V1 | flag])
    with pytest.raises(SemLimitError, match=f"{name} {top + 1} exceeds the limit {top}"):
        decode_header(head + encode_varint(top + 1))
    with pytest.raises(SemLimitError, match=f"{name} is longer than 10 bytes"):
        decode_header(head + b"\x80" * 10 + b"\x01")
    with pytest.raises(SemFormatError, match=f"{name} is not minimally encoded"):
        decode_header(head + b"\x81\x00")
    with pytest.raises(SemFormatError, match=f"{name} 0 must be omitted"):
        decode_header(head + b"\x00")
    with pytest.raises(SemFormatError, match=f"file ends inside the {name} field"):
        decode_header(head + b"\x81")


def test_resolution_limits() -> None:
    head = bytes([MAGIC, V1 | FLAG_SIZE])
    with pytest.raises(SemLimitError, match=f"width {MAX_DIMENSION + 1} exceeds the limit {MAX_DIMENSION}"):
        decode_header(head + encode_varint(MAX_DIMENSION + 1) + b"\x01")
    with pytest.raises(SemLimitError, match=f"height {2**63} exceeds"):
        decode_header(head + b"\x01" + encode_varint(2**63))
    with pytest.raises(SemFormatError, match="zero side"):
        decode_header(head + b"\x00\x01")
    with pytest.raises(SemFormatError, match="default resolution must be omitted"):
        decode_header(head + encode_varint(DEFAULT_WIDTH) + encode_varint(DEFAULT_HEIGHT))
    h, _, _ = decode_header(head + encode_varint(MAX_DIMENSION) + encode_varint(MAX_DIMENSION))
    assert (h.width, h.height) == (MAX_DIMENSION, MAX_DIMENSION)


def test_later_version_is_announced_by_the_short_forms_escape() -> None:
    """SPEC §7: v2's flag bit 5 alone (byte 1 = 0x20) is, in v3, the short form's escape symbol."""
    with pytest.raises(SemVersionError, match="later version"):
        semcodec.unpack(bytes([MAGIC, 0x20, 0x01, 0x02]))
    with pytest.raises(SemFormatError, match="one-byte form"):
        semcodec.unpack(bytes([MAGIC, 0x00, 0x81, 0x02]))


def test_v1_reserved_flag_is_the_v4_short_form() -> None:
    """v1's flag bit 5 (byte 1 = 011xxxxx) was always an error; v4 reads it as its short form
    (SPEC §7), so such bytes are a v4 payload: here one whose model symbol is the escape."""
    assert semcodec.container.one_byte_form(V1 | 0x20) == semcodec.container.FORM_V4
    with pytest.raises(SemVersionError, match="v4 short form with the escape symbol"):
        semcodec.unpack(bytes([MAGIC, V1 | 0x20, 0x01]))


def test_later_version_is_announced_by_the_v5_escape() -> None:
    """SPEC §7: a v5 file (first byte A8) whose model symbol is the escape is a later version."""
    from semcodec import coding
    from semcodec.container import MAGIC_V5, V5_MODEL_TABLE

    escape = coding.encode([0, 1], [V5_MODEL_TABLE, V5_MODEL_TABLE])
    with pytest.raises(SemVersionError, match="v5 form with the escape symbol"):
        semcodec.unpack(bytes([MAGIC_V5]) + escape)
    with pytest.raises(SemVersionError, match="later version"):
        semcodec.read_header(bytes([MAGIC_V5]) + escape)
    with pytest.raises(SemFormatError, match="too short"):
        semcodec.unpack(bytes([MAGIC_V5]))


@pytest.mark.parametrize("model_id", [12, 99, MAX_ID])
def test_unknown_model_id_is_named_before_any_model_work(model_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("semcodec.models.load_model", _must_not_run("load_model"))
    data = encode_header(Header(model_id=model_id)) + b"\x12\x34"
    for reader in (semcodec.read_header, semcodec.unpack):
        with pytest.raises(SemUnknownModelError, match=f"model id {model_id} "):
            reader(data)
    with pytest.raises(SemUnknownModelError, match=f"model id {model_id} "):
        semcodec.pack("A cat.", model_id=model_id)


@pytest.mark.parametrize("generator_id", [6, 99, MAX_ID])
def test_unknown_generator_id_is_named(generator_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §6: a generator id outside the registry is refused like an unknown model id."""
    monkeypatch.setattr("semcodec.models.load_model", _must_not_run("load_model"))
    data = encode_header(Header(generator_id=generator_id)) + b"\x12\x34"
    for reader in (semcodec.read_header, semcodec.unpack):
        with pytest.raises(SemUnknownModelError, match=f"generator id {generator_id}$"):
            reader(data)
    with pytest.raises(SemUnknownModelError, match=f"generator id {generator_id}$"):
        semcodec.pack("A cat.", generator_id=generator_id)


@pytest.mark.parametrize("data", [b"", b"\xa7", b"\x00\x40", b"GIF89a", b"\xef\xbb\xbfA cat."])
def test_not_a_sem_file(data: bytes) -> None:
    with pytest.raises(SemFormatError):
        semcodec.unpack(data)


# -- hostile payloads: limits enforced before (or while) doing work -------------------------


class _ReachedError(Exception):
    pass


def _must_not_run(name: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise _ReachedError(name)

    return fail


def test_oversize_payload_is_refused_before_loading_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("semcodec.models.load_model", _must_not_run("load_model"))
    top = semcodec.codec.MAX_PAYLOAD_BYTES
    with pytest.raises(SemLimitError, match=f"payload of {top + 1} bytes exceeds the limit {top}"):
        semcodec.unpack(bytes([MAGIC, V1]) + b"\x55" * (top + 1))
    with pytest.raises(SemLimitError):
        semcodec.unpack(bytes([MAGIC, V1]) + b"\x55" * (50 * top))
    # The largest legal payload gets past the size check (and reaches the model).
    with pytest.raises(_ReachedError):
        semcodec.unpack(bytes([MAGIC, V1]) + b"\x55" * top)


def test_hostile_payload_stops_at_the_token_limit(model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A long payload that never reaches end-of-text (and never reads past its end) stops after
    MAX_TOKENS + 1 symbols."""
    from semcodec import coding

    limit = 5
    monkeypatch.setattr(semcodec.codec, "MAX_TOKENS", limit)
    steps = collections.Counter()
    real_step = coding.StreamDecoder.step

    def counted(self: coding.StreamDecoder, f):  # type: ignore[no-untyped-def]
        steps[id(self)] += 1
        return real_step(self, f)

    monkeypatch.setattr(coding.StreamDecoder, "step", counted)
    with pytest.raises(SemLimitError, match=f"no end-of-text within {limit} tokens \\(the format's limit\\)"):
        semcodec.unpack(bytes([MAGIC, V1]) + b"\x55" * 200)
    assert list(steps.values()) == [limit + 1]


def test_short_damaged_payload_fails_fast(model) -> None:  # type: ignore[no-untyped-def]
    """An empty payload reads as zeros forever and never reaches end-of-text; the over-read
    rule (SPEC section 4) rejects it within a few tokens, long before the token limit."""
    from semcodec import coding

    steps = collections.Counter()
    real_step = coding.StreamDecoder.step

    def counted(self: coding.StreamDecoder, f):  # type: ignore[no-untyped-def]
        steps[id(self)] += 1
        return real_step(self, f)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(coding.StreamDecoder, "step", counted)
        with pytest.raises(SemIntegrityError, match="reads past"):
            semcodec.unpack(bytes([MAGIC, V1]))
    assert 0 < sum(steps.values()) < 20


def test_text_over_the_token_limit_is_refused_at_pack(model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(semcodec.codec, "MAX_TOKENS", 4)
    assert len(semcodec.codec.tokenize("one two three four")) == 4
    semcodec.pack("one two three four")
    with pytest.raises(SemLimitError, match="5 tokens; the limit is 4"):
        semcodec.pack("one two three four five")


def test_trailing_bytes_are_not_accepted(model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(semcodec.codec, "MAX_TOKENS", 12)  # junk may decode to text that never ends
    data = semcodec.pack("Hi")
    for zeros in (b"\x00", b"\x00\x00"):  # same value, so the same text: only canonicity rejects it
        with pytest.raises(SemIntegrityError, match="not the canonical coding"):
            semcodec.unpack(data + zeros)
    for junk in (b"\x01", b"\xff", b"\xff\xff"):
        with pytest.raises(SemError):
            semcodec.unpack(data + junk)


def test_lone_surrogates_are_refused_at_pack(model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(semcodec.SemInputError, match="surrogate"):
        semcodec.pack("A cat\ud800.")


# -- every truncation and every single-bit flip of two small files --------------------------

FLIP_TOKEN_LIMIT = 64
"""MAX_TOKENS while decoding damaged files (the original text is 3 tokens; damage that
sends the decoder astray is rejected by the over-read rule long before this)."""

TEXT = "A dog."
SEED = 3


@dataclass(frozen=True)
class Outcome:
    kind: str  # "error", "text" (another text), "header" (same text, other header), "same"
    bucket: str  # finer: which check caught it, or what decoded
    text: str | None = None
    header: Header | None = None
    message: str = ""


_INTEGRITY_BUCKETS = [
    ("valid range-coder stream", "integrity: range-coder stream"),
    ("reads past", "integrity: reads past the payload"),
    ("not the canonical coding", "integrity: non-canonical payload"),
    ("non-canonical token sequence", "integrity: non-canonical tokens"),
    ("not valid UTF-8", "integrity: invalid UTF-8"),
    ("integrity check failed", "integrity: check value"),
]


def _classify(result: semcodec.SemFile | SemError, original: semcodec.SemFile) -> Outcome:
    if isinstance(result, SemError):
        bucket = type(result).__name__
        if isinstance(result, SemIntegrityError):
            bucket = next((b for key, b in _INTEGRITY_BUCKETS if key in str(result)), "integrity: other")
        elif isinstance(result, SemLimitError) and "end-of-text" in str(result):
            bucket = "limit: no end-of-text"
        return Outcome("error", bucket, message=str(result))
    if result.text != original.text:
        return Outcome("text", "decoded: another text", result.text, result.header)
    if result.header != original.header:
        return Outcome("header", "decoded: same text, another header", result.text, result.header)
    return Outcome("same", "decoded: identical")


def _unpack(data: bytes) -> semcodec.SemFile | SemError:
    try:
        return semcodec.unpack(data)
    except SemError as err:  # anything else is a bug and fails the test with its traceback
        return err


@dataclass
class Damage:
    data: bytes
    original: semcodec.SemFile
    flips: dict[int, Outcome]  # bit index (byte * 8 + bit, bit 0 = least significant) -> outcome
    truncations: dict[int, Outcome]  # kept length -> outcome


def _flip(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


@pytest.fixture(scope="module")
def damage(model) -> dict[str, Damage]:  # type: ignore[no-untyped-def]
    """Decode every flip and truncation of both files in one ``unpack_many`` call (the lockstep
    batch decoder behind ``unpack``: a file's result does not depend on its batch, which
    ``test_batch_and_single_unpack_agree_on_damage`` re-checks for a sample)."""
    files = {
        # v1 files (still read forever): their explicit headers share one payload layout.
        "plain": semcodec.pack(TEXT, version=1, model_id=0),  # a7 40 | payload
        # a7 54 03 | check(2) | payload
        "seed+check": semcodec.pack(TEXT, seed=SEED, check=True, version=1, model_id=0),
    }
    assert files["plain"][2:] == files["seed+check"][5:], "both files must share the payload"
    keys, blobs = [], []
    for name, data in files.items():
        for bit in range(8 * len(data)):
            keys.append((name, "flip", bit))
            blobs.append(_flip(data, bit))
        for n in range(len(data)):
            keys.append((name, "truncation", n))
            blobs.append(data[:n])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semcodec.codec, "MAX_TOKENS", FLIP_TOKEN_LIMIT)
        results = semcodec.codec.unpack_many(blobs)
    assert len(results) == len(blobs)
    out = {name: Damage(data, semcodec.unpack(data), {}, {}) for name, data in files.items()}
    for (name, what, where), result in zip(keys, results, strict=True):
        assert isinstance(result, (semcodec.SemFile, SemError)), type(result)
        d = out[name]
        (d.flips if what == "flip" else d.truncations)[where] = _classify(result, d.original)
    return out


def test_batch_and_single_unpack_agree_on_damage(damage: dict[str, Damage], monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample (one of each cheap kind) decoded alone gives what the batch gave."""
    monkeypatch.setattr(semcodec.codec, "MAX_TOKENS", FLIP_TOKEN_LIMIT)
    d = damage["seed+check"]
    sample = [16, 24, 8 * 5, 8 * len(d.data) - 8]  # seed bit, check-value bit, first/last payload byte
    for bit in sample:
        assert _classify(_unpack(_flip(d.data, bit)), d.original) == d.flips[bit], bit
    n = len(d.data) - 1
    assert _classify(_unpack(d.data[:n]), d.original) == d.truncations[n]


def _region(name: str, bit: int) -> str:
    byte = bit // 8
    if byte == 0:
        return "magic"
    if byte == 1:
        return {7: "version", 6: "version", 5: "reserved flag"}.get(bit % 8, "flags")
    if name == "plain":
        return "payload"
    return {2: "seed", 3: "check value", 4: "check value"}.get(byte, "payload")


def test_damaged_files_statistics(damage: dict[str, Damage], capsys: pytest.CaptureFixture[str]) -> None:
    """Report what every flip and truncation did (visible in the CI log), and check the totals."""
    lines = [f"single-bit flips and truncations of pack({TEXT!r}) (token limit {FLIP_TOKEN_LIMIT} while decoding):"]
    for name, d in damage.items():
        for what, results in (("flips", d.flips), ("truncations", d.truncations)):
            by_region: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
            for key, outcome in results.items():
                region = _region(name, key) if what == "flips" else "truncation"
                by_region[region][outcome.bucket] += 1
            total = sum(sum(c.values()) for c in by_region.values())
            assert total == (8 * len(d.data) if what == "flips" else len(d.data))
            lines.append(f"  {name} ({d.data.hex()}, {len(d.data)} B): {total} {what}")
            for region, counts in by_region.items():
                lines.append(f"    {region:<13} " + ", ".join(f"{b}: {n}" for b, n in sorted(counts.items())))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_damage_never_decodes_to_the_same_content(damage: dict[str, Damage]) -> None:
    """Canonical coding: different bytes never decode to the same (text, header)."""
    for d in damage.values():
        for outcome in [*d.flips.values(), *d.truncations.values()]:
            assert outcome.kind != "same"


def test_header_byte_flips_give_the_documented_error(damage: dict[str, Damage]) -> None:
    for name, d in damage.items():
        for bit, outcome in d.flips.items():
            region = _region(name, bit)
            if region == "magic":
                assert outcome.bucket == "SemFormatError" and "not a .sem file" in outcome.message
            elif region == "version":
                # v1 bits 01 flipped read as v2 (00 explicit, 11 compact): an error, or a v2 file
                # that re-encodes to the damaged bytes (test_without_check_accepted_damage_is_canonical).
                assert outcome.kind == "error" or (outcome.header is not None and outcome.header.version == 2)
            elif region == "reserved flag":  # v1's bit 5 set: v4's short form (SPEC §7), an error or a v4 file
                assert outcome.kind == "error" or (outcome.header is not None and outcome.header.version == 4)


def test_seed_flips_change_only_the_seed(damage: dict[str, Damage]) -> None:
    """The check covers the text, not the header: a flipped seed bit is a valid file with another seed."""
    d = damage["seed+check"]
    for bit in range(16, 23):  # the seed varint's 7 value bits (bit 23 is its continuation bit)
        outcome = d.flips[bit]
        assert outcome.kind == "header", (bit, outcome)
        assert outcome.text == TEXT
        assert outcome.header == Header(seed=SEED ^ (1 << (bit - 16)), check=True, version=1, model_id=0)
    assert d.flips[23].kind in ("error", "text", "header")


def test_check_value_flips_are_caught_by_the_check(damage: dict[str, Damage]) -> None:
    d = damage["seed+check"]
    for bit in range(24, 40):
        assert d.flips[bit].bucket == "integrity: check value", (bit, d.flips[bit])


def test_with_check_no_damaged_payload_decodes(damage: dict[str, Damage]) -> None:
    """The documented guarantee of check=True (up to a 1/65536 collision, which these files do not hit)."""
    d = damage["seed+check"]
    for bit, outcome in d.flips.items():
        if _region("seed+check", bit) == "payload":
            assert outcome.kind == "error", (bit, outcome)
    for n, outcome in d.truncations.items():
        assert outcome.kind == "error", (n, outcome)
    for n in (0, 1):
        assert "too short" in d.truncations[n].message
    assert "inside the seed field" in d.truncations[2].message
    assert all("inside the integrity check" in d.truncations[n].message for n in (3, 4))


def test_clearing_the_check_flag_is_the_checks_blind_spot(damage: dict[str, Damage]) -> None:
    """Flipping the check flag off makes the check value part of the payload: from then on only the
    canonical-form checks stand guard (documented limitation). Whatever it gives, it is no longer
    a file with a check."""
    outcome = damage["seed+check"].flips[8 + FLAG_CHECK.bit_length() - 1]
    assert outcome.kind == "error" or (outcome.header is not None and not outcome.header.check)


def test_without_check_accepted_damage_is_canonical(damage: dict[str, Damage]) -> None:
    """Without a check, a damaged file either fails or decodes to content a writer would produce
    byte for byte -- which is exactly what the check exists to catch."""
    d = damage["plain"]
    decoded = [(("flip", bit), o) for bit, o in d.flips.items() if o.kind in ("text", "header")]
    decoded += [(("truncation", n), o) for n, o in d.truncations.items() if o.kind in ("text", "header")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semcodec.codec, "MAX_TOKENS", FLIP_TOKEN_LIMIT)
        for key, outcome in decoded:
            assert outcome.header is not None and outcome.text is not None
            what, where = key
            expected = bytearray(d.data)
            if what == "flip":
                expected[where // 8] ^= 1 << (where % 8)
            else:
                expected = expected[:where]
            repacked = semcodec.pack_header(outcome.text, outcome.header)
            assert repacked == bytes(expected), (key, outcome)


def test_the_check_catches_exactly_what_would_decode_silently(damage: dict[str, Damage]) -> None:
    """Both files carry the same payload, so a payload flip decodes identically in both: the flips
    that give another valid text without a check are the ones the check value rejects."""
    plain, checked = damage["plain"], damage["seed+check"]
    shift = 8 * (len(checked.data) - len(plain.data))
    silent = {bit for bit in range(16, 8 * len(plain.data)) if plain.flips[bit].kind == "text"}
    caught = {
        bit - shift
        for bit in range(16 + shift, 8 * len(checked.data))
        if checked.flips[bit].bucket == "integrity: check value"
    }
    assert silent, "no flip decodes to another text: pick files where one does, or this test is vacuous"
    assert silent == caught
    for bit in range(16, 8 * len(plain.data)):
        a, b = plain.flips[bit], checked.flips[bit + shift]
        if a.kind == "error":
            assert (a.bucket, a.message) == (b.bucket, b.message)


def test_error_messages_are_one_line(damage: dict[str, Damage]) -> None:
    for d in damage.values():
        for outcome in [*d.flips.values(), *d.truncations.values()]:
            if outcome.kind == "error":
                assert outcome.message and outcome.message.isprintable(), outcome.message
