"""Text ↔ ``.sem`` bytes: the header, the model's frequency tables and the range coder together.

    >>> import semcodec
    >>> data = semcodec.pack("A cat sleeping on a red sofa.")
    >>> len(data) < 16
    True
    >>> semcodec.unpack(data).text
    'A cat sleeping on a red sofa.'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semcodec import coding
from semcodec.container import FORMAT_VERSION, Header, decode_header, encode_header, text_check
from semcodec.errors import SemError, SemInputError, SemIntegrityError, SemLimitError
from semcodec.models.exact import KVCache
from semcodec.registry import DEFAULT_MODEL_ID, MODELS, generator_name, model_spec

if TYPE_CHECKING:
    from semcodec.models import LoadedModel

MAX_TOKENS = 2048
"""Most text tokens a file may hold (the end-of-text token not counted)."""

MAX_PAYLOAD_BYTES = (MAX_TOKENS + 3) * coding.PRECISION // 8 + 8
"""No table entry is below 2**-24, so a legal payload is never longer than this
(text tokens, end-of-text, and v2's marker and line-ending symbols)."""

# SPEC §4, v2: fixed-table symbols around the model's. Their tables never change.
MARKER_TABLE = np.array([1 << 23, 1 << 23], dtype=np.int64)
"""Coded first (symbol 1) in a v2 compact file: x(P) ≥ ½, so the payload's first byte is ≥ 0x80."""
MARKER_SYMBOL = 1

LINE_ENDINGS = ("", "\n", "\r\n")
"""v2's line-ending symbol, coded after end-of-text: the text's final line ending, taken off
the text before tokenizing (a final newline costs ~1 bit instead of a token the model rarely expects)."""
LINE_ENDING_TABLE = np.array([1 << 23, (1 << 23) - (1 << 20), 1 << 20], dtype=np.int64)
"""none: 1 bit, ``\\n``: 1.19 bits, ``\\r\\n``: 4 bits."""


def split_line_ending(text: str) -> tuple[str, int]:
    """``(body, ending)`` with ``text == body + LINE_ENDINGS[ending]`` (SPEC §3, v2).

    >>> split_line_ending("A cat.\\r\\n"), split_line_ending("A cat."), split_line_ending("\\n\\n")
    (('A cat.', 2), ('A cat.', 0), ('\\n', 1))
    """
    if text.endswith("\r\n"):
        return text[:-2], 2
    if text.endswith("\n"):
        return text[:-1], 1
    return text, 0


def _canonical_ending(body: str, ending: int) -> bool:
    """The split is the encoder's: :func:`split_line_ending` of the joined text gives it back."""
    return split_line_ending(body + LINE_ENDINGS[ending]) == (body, ending)


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


def _require_known_ids(header: Header) -> None:
    """SPEC §6: unknown model and generator ids are rejected, by name, before any model work."""
    model_spec(header.model_id)
    generator_name(header.generator_id)


def read_header(data: bytes) -> Header:
    """Parse and validate only the header (no model is loaded)."""
    header, _, _ = decode_header(data)
    _require_known_ids(header)
    return header


def tokenize(text: str, model_id: int = DEFAULT_MODEL_ID) -> list[int]:
    """The model's tokens for ``text`` (raises :class:`SemInputError` if it cannot round-trip)."""
    from semcodec.models import load_model

    return load_model(model_id).tokenizer.encode(text)


def frequency_tables(text: str, model_id: int = DEFAULT_MODEL_ID) -> tuple[list[int], np.ndarray]:
    """Tokens of ``text`` plus end-of-text, and the model's table for each (one batched pass)."""
    from semcodec.models import blas_threads, context_state, load_model
    from semcodec.models.exact import tables_from_hidden

    model = load_model(model_id)
    tokens = model.tokenizer.encode(text)
    if len(tokens) > MAX_TOKENS:
        raise SemLimitError(f"text has {len(tokens)} tokens; the limit is {MAX_TOKENS}")
    with blas_threads():
        start = context_state(model_id)
        hidden = [start.hidden]
        if tokens:
            hidden.append(model.lm.forward(tokens, start.fresh_cache()))
        return [*tokens, model.eos_id], tables_from_hidden(model.lm, np.concatenate(hidden))


def symbol_stream(text: str, header: Header) -> tuple[list[int], list[np.ndarray]]:
    """Every symbol the payload of ``text`` under ``header`` codes, with its table (SPEC §4).

    v1: the text's tokens and end-of-text. v2: the marker (compact header only), the
    tokens of the text without its final line ending, end-of-text, the line ending.
    """
    if header.version == 1:
        symbols, tables = frequency_tables(text, header.model_id)
        return symbols, list(tables)
    body, ending = split_line_ending(text)
    symbols, tables = frequency_tables(body, header.model_id)
    prefix = [(MARKER_SYMBOL, MARKER_TABLE)] if header.compact else []
    fixed = [*prefix, *zip(symbols, tables, strict=True), (ending, LINE_ENDING_TABLE)]
    return [s for s, _ in fixed], [t for _, t in fixed]


def fixed_symbols(header: Header) -> int:
    """Symbols of a payload that are not text tokens: end-of-text, and v2's line ending and marker."""
    return 1 if header.version == 1 else 2 + int(header.compact)


def information_bits(text: str, model_id: int = DEFAULT_MODEL_ID) -> float:
    """The cross-entropy of ``text``'s payload symbols in bits (SPEC §4): the payload's floor."""
    symbols, tables = symbol_stream(text, Header(model_id=model_id))
    return coding.cross_entropy_bits(symbols, tables)


def pack(
    text: str,
    *,
    model_id: int | str = DEFAULT_MODEL_ID,
    generator_id: int = 0,
    seed: int = 0,
    width: int = 1024,
    height: int = 1024,
    check: bool = False,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Code ``text`` exactly (a final line ending included) into a ``.sem`` file.

    Header fields at their defaults cost no bytes. ``model_id="auto"`` tries every
    profile and keeps the smallest file (slower, like ``zstd --ultra``). ``version=1``
    writes the old format (every v1 file re-encodes to its own bytes).
    """
    if model_id == AUTO:
        return _smallest([
            pack(text, model_id=m, generator_id=generator_id, seed=seed, width=width, height=height,
                 check=check, version=version)
            for m in MODELS
        ])
    if isinstance(model_id, str):
        raise SemInputError(f"model_id must be an integer id or {AUTO!r}, got {model_id!r}")
    header = Header(model_id, generator_id, seed, width, height, check, version)
    _require_known_ids(header)
    symbols, tables = symbol_stream(text, header)
    payload = coding.encode(symbols, tables)
    return encode_header(header, text_check(text) if check else b"") + payload


AUTO = "auto"
"""``pack(model_id=AUTO)``: try every profile, keep the smallest file."""


def _smallest(files: list[bytes]) -> bytes:
    """The shortest file; ties go to the first (lowest model id): deterministic."""
    return min(files, key=len)


def pack_header(text: str, header: Header) -> bytes:
    """:func:`pack` with every field taken from ``header``: ``unpack(pack_header(f.text, f.header))``
    gives back the bytes of any valid file ``f``."""
    return pack(
        text, model_id=header.model_id, generator_id=header.generator_id, seed=header.seed,
        width=header.width, height=header.height, check=header.check, version=header.version,
    )


def unpack(data: bytes) -> SemFile:
    """Decode a ``.sem`` file; every failure is a :class:`semcodec.SemError`."""
    result = unpack_many([data])[0]
    if isinstance(result, SemError):
        raise result
    return result


BATCH_FILES = 32
"""Files decoded in lockstep at most (bounds the KV caches' memory)."""


@dataclass
class _Job:
    index: int
    header: Header
    check_value: bytes
    header_bytes: int
    payload: bytes
    stream: coding.StreamDecoder
    cache: KVCache
    hidden: np.ndarray

    @property
    def prefix(self) -> int:
        """Fixed-table symbols before the text tokens (v2 compact: the marker)."""
        return 1 if self.header.compact else 0


def unpack_many(
    blobs: Sequence[bytes], on_step: Callable[[int, int], None] | None = None
) -> list[SemFile | SemError]:
    """Decode many files; one model pass per step serves every file still decoding.

    ``on_step(tokens_decoded, files_still_decoding)`` is called after every step (progress).

    Each file's tables are bit-identical to decoding it alone (rows never mix). A bad
    file yields its :class:`SemError` in its slot; the others decode.
    """
    from semcodec.models import blas_threads, context_state, load_model

    results: list[SemFile | SemError | None] = [None] * len(blobs)
    by_model: dict[int, list[tuple[int, Header, bytes, int, bytes]]] = {}
    for i, data in enumerate(blobs):
        try:
            header, check_value, offset = decode_header(data)
            _require_known_ids(header)
            payload = bytes(data[offset:])
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise SemLimitError(f"payload of {len(payload)} bytes exceeds the limit {MAX_PAYLOAD_BYTES}")
        except SemError as err:
            results[i] = err
            continue
        by_model.setdefault(header.model_id, []).append((i, header, check_value, offset, payload))
    for model_id, items in by_model.items():
        model = load_model(model_id)
        with blas_threads():
            start = context_state(model_id)
            for lo in range(0, len(items), BATCH_FILES):
                jobs: list[_Job] = []
                for i, header, check, offset, payload in items[lo : lo + BATCH_FILES]:
                    job = _Job(i, header, check, offset, payload, coding.StreamDecoder(payload),
                               start.fresh_cache(), start.hidden)
                    try:
                        if job.prefix and job.stream.step(MARKER_TABLE) != MARKER_SYMBOL:
                            raise SemIntegrityError("payload does not start with the v2 marker (corrupt file)")
                    except SemError as err:
                        results[i] = err
                        continue
                    jobs.append(job)
                for job, outcome in _decode_lockstep(model, jobs, on_step):
                    results[job.index] = outcome
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _decode_lockstep(
    model: LoadedModel, jobs: list[_Job], on_step: Callable[[int, int], None] | None
) -> list[tuple[_Job, SemFile | SemError]]:
    done: list[tuple[_Job, SemFile | SemError]] = []
    active = jobs
    decoded = 0
    while active:
        tables = model.lm.frequencies(model.lm.logits(np.concatenate([job.hidden for job in active])))
        still: list[_Job] = []
        for job, table in zip(active, tables, strict=True):
            try:
                symbol = job.stream.step(table)
                if symbol == model.eos_id:
                    if job.header.version >= 2:
                        job.stream.step(LINE_ENDING_TABLE)
                    done.append((job, _finish(model, job)))
                elif len(job.stream.symbols) - job.prefix > MAX_TOKENS:
                    raise SemLimitError(f"payload decodes to no end-of-text within {MAX_TOKENS + 1} tokens")
                else:
                    still.append(job)
            except SemError as err:
                done.append((job, err))
        decoded += len(active)
        if on_step is not None:
            on_step(decoded, len(still))
        if still:
            outs = model.lm.forward_many([([job.stream.symbols[-1]], job.cache) for job in still])
            for job, hidden in zip(still, outs, strict=True):
                job.hidden = hidden
        active = still
    return done


def _finish(model: LoadedModel, job: _Job) -> SemFile:
    """Checks that make a decoded file trustworthy (SPEC §6), then the result."""
    symbols = job.stream.symbols
    if not job.stream.is_canonical():
        raise SemIntegrityError("payload is not the canonical coding of what it decodes to (corrupt file)")
    v2 = job.header.version >= 2
    tokens = symbols[job.prefix : -2 if v2 else -1]
    body = model.tokenizer.decode(tokens)
    try:
        canonical = model.tokenizer.encode(body) == tokens
    except SemInputError:
        canonical = False
    if not canonical:
        raise SemIntegrityError("payload decodes to a non-canonical token sequence (corrupt file)")
    text = body
    if v2:
        if not _canonical_ending(body, symbols[-1]):
            raise SemIntegrityError("payload codes a line ending the text should carry itself (corrupt file)")
        text = body + LINE_ENDINGS[symbols[-1]]
    if job.header.check and text_check(text) != job.check_value:
        raise SemIntegrityError("integrity check failed: the text differs from what was packed")
    return SemFile(text, job.header, len(tokens), job.header_bytes, len(job.payload))
