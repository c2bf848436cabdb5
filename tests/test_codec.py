"""Round trips of the text codec: corpus, arbitrary Unicode, header fields, refusals."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import semcodec
from semcodec import container
from semcodec.models import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _corpus(name: str, count: int, start: int = 0) -> list[str]:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present (the development corpora live in ../shared)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[start : start + count]


def test_corpus_round_trip_is_bit_exact() -> None:
    texts = _corpus("coco-captions-dev.txt", 25, 2000) + _corpus("coco-paragraphs-dev.txt", 3, 200)
    from semcodec.codec import unpack_many

    decoded = unpack_many([semcodec.pack(text) for text in texts])
    assert [d.text for d in decoded] == texts  # type: ignore[union-attr]


def test_compactness_of_a_typical_caption() -> None:
    """Issue 2: header <= 6 bytes by default (v2: 1); file - cross-entropy <= header + 2 bytes."""
    for text in _corpus("coco-captions-dev.txt", 10, 3000):
        data = semcodec.pack(text)
        header_bytes = semcodec.unpack(data).header_bytes
        assert header_bytes == 1
        floor_bytes = semcodec.information_bits(text) / 8
        assert len(data) - floor_bytes <= header_bytes + 2, (text, len(data), floor_bytes)


def test_ninety_character_caption_fits_twenty_bytes() -> None:
    text = "A large brown dog runs across a sunny park, chasing a red frisbee thrown by a young boy."
    assert 85 <= len(text) <= 95
    assert len(semcodec.pack(text)) <= 20


unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(unicode_text)
def test_arbitrary_unicode_round_trips(text: str) -> None:
    """Round trip, or a SemInputError exactly when a character's bytes have no token."""
    from semcodec.models import load_model

    missing = load_model(0).tokenizer.missing_bytes
    if missing.intersection(text.encode("utf-8")):
        with pytest.raises(semcodec.SemInputError, match="has no token"):
            semcodec.pack(text)
    else:
        assert semcodec.unpack(semcodec.pack(text)).text == text


def test_characters_without_tokens_are_refused_by_name() -> None:
    """SmolLM2's vocabulary lacks 6 control bytes and the UTF-8 lead bytes of planes 4-11."""
    for char in ("\x06", "\x1d", "\U00050000"):
        with pytest.raises(semcodec.SemInputError, match=f"U\\+{ord(char):04X}"):
            semcodec.pack(f"a{char}b")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\n\t  \r\n",
        "🐈‍⬛ 🏳️‍🌈 👩🏽‍🚀",
        "東京タワーと富士山、夕焼けの空。",
        "e\u0301 a\u0308 n\u0303 Z\u0335\u0321\u031b",
        "\x00\x01\x07\x1b[31m\x7f\x05",
        "<|im_end|> <|endoftext|> <|im_start|>assistant",
        "12345678901234567890 3.14159",
        "x" * 500,
    ],
)
def test_edge_texts_round_trip(text: str) -> None:
    assert semcodec.unpack(semcodec.pack(text)).text == text


def test_long_text_round_trips() -> None:
    text = " ".join(_corpus("coco-paragraphs-dev.txt", 3, 300))
    assert semcodec.unpack(semcodec.pack(text, model_id=2)).text == text


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(semcodec.SemInputError):
        semcodec.pack("broken \ud800 text")


def test_text_over_the_token_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from semcodec import codec

    monkeypatch.setattr(codec, "MAX_TOKENS", 8)
    with pytest.raises(semcodec.SemLimitError):
        semcodec.pack("one two three four five six seven eight nine ten eleven")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"model_id": 1},
        {"model_id": 2, "generator_id": 3},
        {"seed": 1},
        {"seed": 2**64 - 1},
        {"width": 1, "height": 1},
        {"width": 16384, "height": 16384},
        {"width": 1024, "height": 1023},
        {"generator_id": 5, "check": True},
    ],
)
def test_header_fields_round_trip_through_files(fields: dict[str, int]) -> None:
    data = semcodec.pack("A cat on a mat.", **fields)
    decoded = semcodec.unpack(data)
    assert decoded.text == "A cat on a mat."
    for key, value in fields.items():
        assert getattr(decoded.header, key) == value
    assert semcodec.read_header(data) == decoded.header


@pytest.mark.parametrize(
    "fields",
    [
        {"width": 0},
        {"height": 16385},
        {"seed": 2**64},
        {"seed": -1},
        {"model_id": -1},
        {"generator_id": 2**32},
    ],
)
def test_out_of_range_header_fields_are_refused(fields: dict[str, int]) -> None:
    with pytest.raises(semcodec.SemLimitError):
        semcodec.pack("x", **fields)


def test_unknown_model_id_is_refused_by_name() -> None:
    with pytest.raises(semcodec.SemUnknownModelError, match="77"):
        semcodec.pack("x", model_id=77)


def test_defaults_cost_nothing() -> None:
    assert container.encode_header(container.Header()) == bytes([0xA8])  # v5: model 10 in the payload
    assert container.Header().version == 5 and container.Header().model_id == 10
    assert container.encode_header(container.Header(model_id=6)) == bytes([0xA7])  # v4 short: model 6 likewise
    assert container.encode_header(container.Header(version=1, model_id=0)) == bytes([0xA7, 0x40])
    sized = container.encode_header(container.Header(model_id=3, width=512, height=512))
    assert len(sized) == 2 + 2 + 2  # v2's default model costs nothing in an explicit header
    sized = container.encode_header(container.Header(width=512, height=512))
    assert len(sized) == 2 + 1 + 2 + 2  # v5's default is stored there (SPEC §2: explicit headers are v2's)


def test_integrity_check_catches_a_changed_text() -> None:
    data = bytearray(semcodec.pack("A blue bicycle leaning on a wall.", check=True))
    header = semcodec.read_header(bytes(data))
    assert header.check
    data[2] ^= 0x01  # first byte of the check value
    with pytest.raises(semcodec.SemIntegrityError):
        semcodec.unpack(bytes(data))


def test_batch_unpack_matches_single_and_isolates_bad_files() -> None:
    from semcodec.codec import unpack_many

    texts = ["A cat on a mat.", "Two surfers ride a large wave at sunset near the rocky shore.", ""]
    blobs = [semcodec.pack(t) for t in texts]
    blobs.insert(1, b"\xa7\x40\xff\xff\xff\xff\xff")
    blobs.append(semcodec.pack("A dog.", model_id=1))
    results = unpack_many(blobs)
    assert isinstance(results[1], semcodec.SemError)
    good = [r for i, r in enumerate(results) if i != 1]
    assert [r.text for r in good] == [*texts, "A dog."]  # type: ignore[union-attr]
    assert all(r == semcodec.unpack(b) for r, b in zip(good, blobs[:1] + blobs[2:], strict=True))


# -- the API's front door: argument types, size before tokenizing, token budgets ----------------


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: semcodec.unpack("str"), "unpack() expects the .sem file as bytes"),  # type: ignore[arg-type]
        (lambda: semcodec.unpack(None), "unpack() expects the .sem file as bytes"),  # type: ignore[arg-type]
        (lambda: semcodec.pack(None), "pack() expects the text as str, not NoneType"),  # type: ignore[arg-type]
        (lambda: semcodec.pack(b"bytes"), "pack() expects the text as str, not bytes"),  # type: ignore[arg-type]
        (lambda: semcodec.read_header("x"), "read_header() expects the .sem file as bytes"),  # type: ignore[arg-type]
    ],
)
def test_wrong_argument_types_raise_type_error(call, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=re.escape(expected)):
        call()


def test_long_text_is_refused_before_tokenizing(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 MB of text used to be tokenized (gigabytes, minutes) only to be refused; now no model is touched."""
    from semcodec.codec import MAX_TEXT_BYTES

    def no_model(model_id: int) -> None:
        raise AssertionError("the model was loaded for a text refused by its size")

    monkeypatch.setattr("semcodec.models.load_model", no_model)
    started = time.perf_counter()
    for text in ("a b c d " * 12_500_000, "a" * (MAX_TEXT_BYTES + 1), "é" * (MAX_TEXT_BYTES // 2 + 1)):
        with pytest.raises(semcodec.SemLimitError, match="more than 2048 tokens"):
            semcodec.pack(text)
    assert time.perf_counter() - started < 5


def test_the_byte_bound_is_the_longest_token(model) -> None:  # type: ignore[no-untyped-def]
    from semcodec.codec import MAX_TEXT_BYTES, MAX_TOKEN_BYTES
    from semcodec.registry import MODELS

    for model_id in MODELS:
        tokenizer = load_model(model_id).tokenizer
        longest = max(len(tokenizer.token_bytes(i)) for i in range(load_model(model_id).lm.vocab_size))
        assert longest == MAX_TOKEN_BYTES
    assert MAX_TEXT_BYTES == semcodec.MAX_TOKENS * MAX_TOKEN_BYTES
    # The bound is the refusal's only cause: a text at the bound reaches the tokenizer's token limit.
    with pytest.raises(semcodec.SemLimitError, match="tokens; the limit is 2048"):
        semcodec.pack("x " * (MAX_TEXT_BYTES // 2))


def test_max_tokens_bounds_a_decode(model) -> None:  # type: ignore[no-untyped-def]
    data = semcodec.pack("A cat sleeping on a red sofa.")
    n = semcodec.unpack(data).n_tokens
    assert semcodec.unpack(data, max_tokens=n).text == "A cat sleeping on a red sofa."
    budget = f"no end-of-text within {n - 1} tokens \\(the token budget; --max-tokens N, or max_tokens=N"
    with pytest.raises(semcodec.SemLimitError, match=budget):
        semcodec.unpack(data, max_tokens=n - 1)
    with pytest.raises(semcodec.SemLimitError, match="within 1 token \\("):  # one token, not "1 tokens"
        semcodec.unpack(data, max_tokens=1)
    with pytest.raises(ValueError, match="max_tokens"):
        semcodec.unpack(data, max_tokens=semcodec.MAX_TOKENS + 1)


def test_default_token_budget_is_below_the_formats_limit(model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Untrusted input gets a budget well below the format's 2048 tokens by default, in the API
    (unpack, unpack_many) as on the command line; one constant decides it, read at call time."""
    from semcodec import codec

    assert codec.DEFAULT_MAX_TOKENS <= 1024 < semcodec.MAX_TOKENS
    data = semcodec.pack("A cat sleeping on a red sofa.")
    n = semcodec.unpack(data).n_tokens
    monkeypatch.setattr(codec, "DEFAULT_MAX_TOKENS", n - 1)
    with pytest.raises(semcodec.SemLimitError, match=f"within {n - 1} tokens \\(the token budget"):
        semcodec.unpack(data)
    (outcome,) = codec.unpack_many([data])
    assert isinstance(outcome, semcodec.SemLimitError)
    assert semcodec.unpack(data, max_tokens=semcodec.MAX_TOKENS).text == "A cat sleeping on a red sofa."


def test_unpack_many_reports_each_file_as_it_finishes(model) -> None:  # type: ignore[no-untyped-def]
    from semcodec.codec import unpack_many

    short = semcodec.pack("A dog.")
    long = semcodec.pack("A small red cat with white paws sits on a green lawn under a bright blue sky.")
    events: list[tuple[str, int]] = []
    outcomes = unpack_many(
        [long, b"junk", short],
        on_step=lambda tokens, still: events.append(("step", still)),
        on_file=lambda i, outcome: events.append(("file", i)),
    )
    files = [i for kind, i in events if kind == "file"]
    assert files == [1, 2, 0]  # the bad header at once, the short file before the long one
    short_done = events.index(("file", 2))
    assert any(kind == "step" for kind, _ in events[short_done:])  # the long file still had steps to go
    assert isinstance(outcomes[1], semcodec.SemError) and outcomes[2].text == "A dog."  # type: ignore[union-attr]


def test_empty_text_has_no_bits_per_character(model) -> None:  # type: ignore[no-untyped-def]
    assert semcodec.unpack(semcodec.pack("")).bits_per_character is None
