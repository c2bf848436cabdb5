"""The primed profiles (ids 3, 4) are as exact as the others; v2 codes every text byte for byte.

Exactness: whole-sequence and incremental tables agree after the long primed contexts,
and the cached context (keys/values stored as int32, its digest pinned) gives the tables a
fresh evaluation gives. Format: a final line ending round-trips through the line-ending symbol,
``model_id="auto"`` keeps the smallest file, and v1 files are still written and read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import semcodec
from semcodec.codec import split_line_ending
from semcodec.models import (
    ContextState,
    _load_context,
    _save_context,
    context_digest,
    context_file_name,
    context_state,
    evaluate_context,
    load_model,
    pins,
)
from semcodec.registry import DEFAULT_MODEL_ID, MODELS

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testkit

PRIMED = [3, 4]
TEXTS = {3: "Two giraffes standing next to each other in a grassy field.",
         4: "A plate of food on a table. A close up of broccoli and rice. Some meat on a white plate."}


def _tables(model_id: int, state: ContextState, text: str) -> np.ndarray:
    m = load_model(model_id)
    tokens = m.tokenizer.encode(text)
    hidden = m.lm.forward(tokens, m.lm.new_cache(state.prefix))
    return m.lm.tables(np.concatenate([state.hidden, hidden]))


@pytest.mark.parametrize("model_id", PRIMED)
def test_cached_context_equals_fresh_evaluation(model, model_id: int) -> None:  # type: ignore[no-untyped-def]
    """The int32 file (or the in-memory copy of it) is bit-identical to evaluating the context."""
    m = load_model(model_id)
    fresh = evaluate_context(m.lm, m.context_ids)
    cached = context_state(model_id)
    assert np.array_equal(fresh.hidden, cached.hidden)
    for a, b in ((fresh.prefix.keys, cached.prefix.keys), (fresh.prefix.values, cached.prefix.values)):
        assert a.dtype == b.dtype == np.int32 and np.array_equal(a, b)
    assert np.array_equal(_tables(model_id, fresh, TEXTS[model_id]), _tables(model_id, cached, TEXTS[model_id]))


@pytest.mark.parametrize("model_id", PRIMED)
def test_whole_sequence_equals_incremental_after_priming(model, model_id: int) -> None:  # type: ignore[no-untyped-def]
    m = load_model(model_id)
    state = context_state(model_id)
    tokens = m.tokenizer.encode(TEXTS[model_id])[:12]
    batch = _tables(model_id, state, m.tokenizer.decode(tokens))
    cache = m.lm.new_cache(state.prefix)
    hidden = state.hidden
    for i, token in enumerate([*tokens, m.eos_id]):
        row = m.lm.tables(hidden)[0]
        assert np.array_equal(row, batch[i]), f"profile {model_id}, position {i}"
        hidden = m.lm.forward([token], cache)


def test_context_file_is_int32_and_verified(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    m = load_model(DEFAULT_MODEL_ID)
    state = context_state(DEFAULT_MODEL_ID)
    pinned = pins.DERIVED[m.spec.weights.key][context_file_name(m.context_ids)]
    assert context_digest(state) == pinned
    path = tmp_path / "context.npz"
    _save_context(path, state)
    with np.load(path) as data:
        assert data["keys"].dtype == np.int32 and data["values"].dtype == np.int32
    loaded = _load_context(path, m.lm.n_layers, pinned)
    assert loaded is not None
    assert np.array_equal(loaded.prefix.keys, state.prefix.keys)
    assert np.array_equal(loaded.prefix.values, state.prefix.values)
    raw = bytearray(path.read_bytes())
    raw[testkit.last_data_byte(path, "values.npy")] ^= 0x10
    path.write_bytes(bytes(raw))
    assert _load_context(path, m.lm.n_layers, pinned) is None


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n", "\r", "\r\n\n", "\n\r\n"])
@pytest.mark.parametrize("model_id", [DEFAULT_MODEL_ID, 0, 4])
def test_final_line_endings_round_trip_exactly(model, model_id: int, ending: str) -> None:  # type: ignore[no-untyped-def]
    text = "A cat on a mat." + ending
    data = semcodec.pack(text, model_id=model_id)
    assert semcodec.unpack(data).text == text
    assert semcodec.unpack(data).header.model_id == model_id


def test_a_final_newline_costs_at_most_one_byte(model) -> None:  # type: ignore[no-untyped-def]
    text = "A red and black boat floating on top of water."
    plain, lf = semcodec.information_bits(text), semcodec.information_bits(text + "\n")
    assert lf - plain < 0.2  # 1.19 bits against 1 bit for no ending
    assert len(semcodec.pack(text + "\n")) <= len(semcodec.pack(text)) + 1


def test_split_line_ending_is_what_decoding_accepts() -> None:
    for text in ["", "\n", "\r", "\r\n", "a\r\r\n", "a\n\r", "a\n\n"]:
        body, ending = split_line_ending(text)
        assert body + ["", "\n", "\r\n"][ending] == text
        assert split_line_ending(body + ["", "\n", "\r\n"][ending]) == (body, ending)


def test_default_header_is_one_byte_and_payload_starts_high(model) -> None:  # type: ignore[no-untyped-def]
    for text in ["", "A.", "A cat on a mat.\n"]:
        data = semcodec.pack(text, model_id=3)  # v2's compact form: byte 1 = 1xxxxxxx
        assert data[0] == 0xA7 and data[1] >= 0x80
        assert semcodec.unpack(data).header_bytes == 1
        data = semcodec.pack(text, model_id=6)  # v4's default, profile 6: the v4 short form, byte 1 = 011xxxxx
        assert data[0] == 0xA7 and data[1] >> 5 == 0b011
        assert semcodec.unpack(data).header == semcodec.Header(model_id=6, version=4)
        data = semcodec.pack(text)  # v5's default, profile 10: the v5 form, byte 0 = A8, model symbol first
        assert data[0] == 0xA8 and semcodec.unpack(data).header_bytes == 1
        assert semcodec.unpack(data).header == semcodec.Header(model_id=10, version=5)


def test_model_zero_is_stored_explicitly_in_v2(model) -> None:  # type: ignore[no-untyped-def]
    data = semcodec.pack("A cat.", model_id=0, version=2)
    assert data[:3] == bytes([0xA7, 0x01, 0x00])
    assert semcodec.unpack(data).header.model_id == 0


@pytest.mark.parametrize("model_id", [0, 1, 2, 4, 5])
def test_other_profiles_take_the_v3_short_form(model_id: int) -> None:
    """SPEC §2: one header byte, then a payload whose first byte is 001xxxxx (form symbol 1)
    and whose model symbol names the profile; the v2 explicit form of the same file is longer."""
    text = "A man riding a wave on top of a surfboard. A surfer riding a large wave in the ocean."
    data = semcodec.pack(text, model_id=model_id)
    assert data[0] == 0xA7 and data[1] >> 5 == 0b001
    decoded = semcodec.unpack(data)
    assert (decoded.text, decoded.header.model_id, decoded.header.version, decoded.header_bytes) == (
        text, model_id, 3, 1)
    assert semcodec.read_header(data) == decoded.header
    assert len(semcodec.pack(text, model_id=model_id, version=2)) > len(data)


def test_a_payload_outside_its_form_falls_back_to_an_explicit_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §2: a one-byte form's payload can land (p ≈ 2**-41) in the sliver just below its
    interval; the writer then says the same fields explicitly (forced here: the first
    encoding is replaced by a payload whose first byte belongs to another form)."""
    from semcodec import codec, coding

    real = coding.encode
    calls = []

    def encode_once_astray(symbols, tables):  # type: ignore[no-untyped-def]
        calls.append(len(symbols))
        payload = real(symbols, tables)
        return (b"\x1f" + payload[1:]) if len(calls) == 1 else payload

    monkeypatch.setattr(codec.coding, "encode", encode_once_astray)
    for model_id, head in ((5, bytes([0xA7, 0x01, 0x05])), (3, bytes([0xA7, 0x41, 0x03]))):
        calls.clear()
        data = semcodec.pack("A cat on a mat.", model_id=model_id)
        assert data[:3] == head and len(calls) == 2
        monkeypatch.setattr(codec.coding, "encode", real)
        assert semcodec.unpack(data).text == "A cat on a mat."
        monkeypatch.setattr(codec.coding, "encode", encode_once_astray)


def test_v1_is_still_written_on_request_and_read(model) -> None:  # type: ignore[no-untyped-def]
    data = semcodec.pack("A cat.\n", version=1, model_id=0)
    assert data[:2] == bytes([0xA7, 0x40])
    decoded = semcodec.unpack(data)
    assert decoded.text == "A cat.\n" and decoded.header.version == 1
    assert semcodec.pack_header(decoded.text, decoded.header) == data


def test_auto_keeps_the_smallest_file(model) -> None:  # type: ignore[no-untyped-def]
    text = TEXTS[3]
    sizes = {m: len(semcodec.pack(text, model_id=m)) for m in MODELS}
    best = semcodec.pack(text, model_id="auto")
    assert len(best) == min(sizes.values())
    chosen = semcodec.unpack(best).header.model_id
    assert chosen == min(m for m, size in sizes.items() if size == len(best))
    assert semcodec.unpack(best).text == text


def test_auto_is_refused_where_an_id_is_needed() -> None:
    with pytest.raises(semcodec.SemInputError, match="auto"):
        semcodec.pack("A cat.", model_id="Auto")


def test_incremental_and_batch_unpack_agree_for_primed_profiles(model) -> None:  # type: ignore[no-untyped-def]
    from semcodec.codec import unpack_many

    blobs = [semcodec.pack(TEXTS[m] + "\n", model_id=m) for m in PRIMED]
    batched = unpack_many(blobs)
    assert [r.text for r in batched] == [TEXTS[m] + "\n" for m in PRIMED]  # type: ignore[union-attr]
    assert all(r == semcodec.unpack(b) for r, b in zip(batched, blobs, strict=True))


def test_kv_cache_is_untouched_by_decoding(model) -> None:  # type: ignore[no-untyped-def]
    """The shared context arrays are never written in place (every file starts from them)."""
    state = context_state(DEFAULT_MODEL_ID)
    before = state.prefix.keys.copy(), state.prefix.values.copy()
    semcodec.unpack(semcodec.pack("A dog on a beach."))
    assert np.array_equal(before[0], state.prefix.keys) and np.array_equal(before[1], state.prefix.values)


def test_cli_pack_auto_and_info_version(model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import json

    from semcodec import cli

    src = tmp_path / "c.txt"
    src.write_text(TEXTS[3], encoding="utf-8")
    assert cli.main(["pack", str(src), "-o", str(tmp_path / "c.sem"), "--model", "auto", "-q"]) == 0
    data = (tmp_path / "c.sem").read_bytes()
    assert data == semcodec.pack(TEXTS[3], model_id="auto")
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "c.sem"), "--json", "--header-only"]) == 0
    info = json.loads(capsys.readouterr().out)
    header = semcodec.read_header(data)
    assert (info["format_version"], info["model_id"]) == (header.version, header.model_id)
    (tmp_path / "v1.sem").write_bytes(semcodec.pack("A cat.", version=1, model_id=0))
    assert cli.main(["info", str(tmp_path / "v1.sem"), "--json", "--header-only"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 1
    pack_help = cli.build_parser()._subparsers._group_actions[0].choices["pack"].format_help()  # type: ignore[union-attr]
    assert "zstd --ultra" in " ".join(pack_help.split())
