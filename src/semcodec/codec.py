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

from semcodec import coding, ubpp
from semcodec.container import AUTO_VERSION, Header, decode_header, encode_header, text_check
from semcodec.errors import SemError, SemInputError, SemIntegrityError, SemLimitError
from semcodec.registry import DEFAULT_MODEL_ID, MODELS, generator_name, model_spec

if TYPE_CHECKING:
    from semcodec.models import DecoderState, LoadedModel

MAX_TOKENS = 2048
"""Most text tokens a file may hold (the end-of-text token not counted)."""

DEFAULT_MAX_TOKENS = 384
"""The token budget every reader applies unless told otherwise (:func:`unpack`, :func:`unpack_many`,
``semcodec unpack|info|decode`` and the dataset jobs; ``--max-tokens N`` / ``max_tokens=N`` up to
:data:`MAX_TOKENS` raises it). Decoding costs time and memory per token whatever the file's size, so
a crafted 21-byte file could otherwise cost the format's 2049 model steps. Real files stay below it:
a caption is about 15 tokens, a five-caption paragraph about 60, and of the 7,998 VLM and human
descriptions of ``shared/data`` the mean is 118 tokens and 64 have more than 384 (the longest 815;
``semcodec pack`` says when a text needs ``--max-tokens`` to unpack). At 384 the costliest profile
(5, a 1,336-token context) spends about 13 s of CPU on a crafted file on this project's 2-core
EPYC with both cores, 19 s at 512 (``README.md``, "Security and robustness")."""

MAX_PAYLOAD_BYTES = (MAX_TOKENS + 4) * coding.PRECISION // 8 + 8
"""No table entry is below 2**-24, so a legal payload is never longer than this
(text tokens, end-of-text, the line-ending symbol, and a one-byte header's form and model symbols)."""

MAX_FILE_BYTES = 32 + MAX_PAYLOAD_BYTES
"""Most bytes of a valid ``.sem`` file (the longest header, 30 B, and payload): every reader of
a ``.sem`` input reads at most this (+1 to notice more)."""

MAX_TOKEN_BYTES = 81
"""The vocabulary's longest token, in bytes (the same vocabulary for every registered model;
a test recomputes it from the tokenizer)."""

MAX_TEXT_BYTES = MAX_TOKENS * MAX_TOKEN_BYTES
"""A text of more UTF-8 bytes has more than :data:`MAX_TOKENS` tokens (no token covers more than
:data:`MAX_TOKEN_BYTES`), so it is refused before it is tokenized (SPEC §3): 165,888 bytes."""


# SPEC §4, v2: fixed-table symbols around the model's. Their tables never change. The form
# symbols a one-byte header's payload starts with are the container's (Header.form_symbols).
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
    def bits_per_character(self) -> float | None:
        """File bits per character of the text; ``None`` for an empty text (no characters to share them)."""
        return 8 * self.file_bytes / len(self.text) if self.text else None

    @property
    def micro_bpp(self) -> float:
        """File bits per pixel of the source image (the header's size), in millionths."""
        return ubpp.micro_bpp(8 * self.file_bytes, self.header.width, self.header.height)


def _require_known_ids(header: Header) -> None:
    """SPEC §6: unknown model and generator ids are rejected, by name, before any model work."""
    model_spec(header.model_id)
    generator_name(header.generator_id)


def read_header(data: bytes) -> Header:
    """Parse and validate only the header (no model is loaded)."""
    _require_bytes(data, "read_header")
    header, _, _ = decode_header(data)
    _require_known_ids(header)
    return header


def tokenize(text: str, model_id: int = DEFAULT_MODEL_ID) -> list[int]:
    """The model's tokens for ``text`` (raises :class:`SemInputError` if it cannot round-trip)."""
    from semcodec.models import load_model

    return load_model(model_id).tokenizer.encode(text)


def _require_codable_size(text: str) -> None:
    """Refuse by size before tokenizing: tokenizing 100 MB costs gigabytes for a certain refusal."""
    if not isinstance(text, str):
        raise TypeError(f"expected the text as str, not {type(text).__name__}")
    # chars ≤ UTF-8 bytes: the cheap test first, so a huge text is refused without encoding it
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise SemLimitError(
            f"text is longer than {MAX_TEXT_BYTES} UTF-8 bytes, so it has more than {MAX_TOKENS} tokens "
            f"(no token is longer than {MAX_TOKEN_BYTES} bytes)"
        )


def _require_bytes(data: object, caller: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        kind = type(data).__name__
        raise TypeError(f"{caller}() expects the .sem file as bytes (or bytearray, memoryview), not {kind}")


Progress = Callable[[int, int], None]
"""``progress(done, total)``: :func:`pack`'s callback: the model has read ``done`` of the text's
``total`` tokens (called after each chunk of :data:`~semcodec.models.exact.PREFILL_CHUNK`)."""


def frequency_tables(
    text: str, model_id: int = DEFAULT_MODEL_ID, *, progress: Progress | None = None
) -> tuple[list[int], Sequence[np.ndarray]]:
    """Tokens of ``text`` plus end-of-text, and the model's table for each (one forward pass, in
    chunks, ``progress`` called after each; the tables are made a chunk at a time as they are
    read: bounded memory for long texts)."""
    from semcodec.models import load_model

    _require_codable_size(text)
    model = load_model(model_id)
    tokens = model.tokenizer.encode(text)
    if len(tokens) > MAX_TOKENS:
        raise SemLimitError(f"text has {len(tokens)} tokens; the limit is {MAX_TOKENS}")
    return [*tokens, model.eos_id], model.table_rows(tokens, progress)


class _Chained(Sequence[np.ndarray]):
    """Several sequences of tables read as one, none of them copied (a lazy one stays lazy)."""

    def __init__(self, *parts: Sequence[np.ndarray]) -> None:
        self._parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        i = index + len(self) if index < 0 else index
        for part in self._parts:
            if 0 <= i < len(part):
                return part[i]
            i -= len(part)
        raise IndexError(index)


def symbol_stream(
    text: str, header: Header, *, progress: Progress | None = None
) -> tuple[list[int], Sequence[np.ndarray]]:
    """Every symbol the payload of ``text`` under ``header`` codes, with its table (SPEC §4).

    v1: the text's tokens and end-of-text. v2 and v3: the form symbols (one-byte headers
    only: v2 compact the form, v3 short the form and the model), the tokens of the text
    without its final line ending, end-of-text, the line ending. ``progress``: see :func:`pack`.
    """
    if header.version == 1:
        return frequency_tables(text, header.model_id, progress=progress)
    body, ending = split_line_ending(text)
    symbols, tables = frequency_tables(body, header.model_id, progress=progress)
    form = header.form_symbols
    return [*(s for s, _ in form), *symbols, ending], _Chained([t for _, t in form], tables, [LINE_ENDING_TABLE])


def fixed_symbols(header: Header) -> int:
    """Symbols of a payload that are not text tokens: end-of-text, and v2's line ending and form symbols."""
    return 1 if header.version == 1 else 2 + len(header.form_symbols)


def information_bits(text: str, model_id: int = DEFAULT_MODEL_ID) -> float:
    """The cross-entropy of ``text``'s payload symbols in bits (SPEC §4): the payload's floor."""
    symbols, tables = symbol_stream(text, Header(model_id=model_id))
    return coding.cross_entropy_bits(symbols, tables)


def budget_needed(data: bytes, text: str) -> int:
    """The token budget (``--max-tokens``, ``max_tokens=``) a reader needs for ``data``, the
    ``.sem`` file :func:`pack` made of ``text``: its text tokens under the header's model (a v2+
    file's final line ending is a symbol apart and not counted, as the readers count).

    >>> budget_needed(pack("A cat."), "A cat.")
    3
    """
    from semcodec.models import load_model

    header, _, _ = decode_header(data)
    body = text if header.version == 1 else split_line_ending(text)[0]
    return len(load_model(header.model_id).tokenizer.encode(body))


AUTO = "auto"
"""``pack(model_id=AUTO)``: try every profile, keep the smallest file."""


def pack(
    text: str,
    *,
    model_id: int | str = DEFAULT_MODEL_ID,
    generator_id: int = 0,
    seed: int = 0,
    width: int = 1024,
    height: int = 1024,
    check: bool = False,
    version: int = AUTO_VERSION,
    progress: Progress | None = None,
) -> bytes:
    """Code ``text`` into a ``.sem`` file, exactly as given (a final line ending included).

    Header fields at their defaults cost no bytes. ``model_id="auto"`` tries every
    profile and keeps the smallest file (slower, like ``zstd --ultra``). The header takes
    its smallest form (SPEC §2); ``version=1`` or ``2`` writes that version's form (every
    valid file re-encodes to its own bytes). ``text`` must be a
    ``str`` (else :class:`TypeError`); one longer than :data:`MAX_TEXT_BYTES` bytes is
    refused with :class:`SemLimitError` before it is tokenized.

    ``progress(done, total)``, if given, is called as the model reads the text: ``done`` of its
    ``total`` tokens, a chunk at a time (with ``"auto"``, every profile's laid end to end); the
    tables and the coder follow, about a sixth of the time. Packing is silent without it.
    """
    if not isinstance(text, str):
        raise TypeError(f"pack() expects the text as str, not {type(text).__name__}")
    if model_id == AUTO:
        return _smallest([
            pack(text, model_id=m, generator_id=generator_id, seed=seed, width=width, height=height,
                 check=check, version=version, progress=_nth_of(progress, i, len(MODELS)))
            for i, m in enumerate(MODELS)
        ])
    if isinstance(model_id, str):
        raise SemInputError(f"model_id must be an integer id or {AUTO!r}, got {model_id!r}")
    header = Header(model_id, generator_id, seed, width, height, check, version)
    _require_known_ids(header)
    symbols, tables = symbol_stream(text, header, progress=progress)
    payload = coding.encode(symbols, tables)
    if not header.fits(payload):  # SPEC §2: a one-byte form's sliver (p ≈ 2**-41): say it explicitly
        header = header.explicit()
        payload = coding.encode(*symbol_stream(text, header))
    return encode_header(header, text_check(text) if check else b"") + payload


def _nth_of(progress: Progress | None, nth: int, count: int) -> Progress | None:
    """``progress`` for the ``nth`` of ``count`` equal jobs: their counts laid end to end.

    >>> seen = []
    >>> _nth_of(lambda done, total: seen.append((done, total)), 1, 3)(5, 10)
    >>> seen
    [(15, 30)]
    """
    if progress is None:
        return None
    return lambda done, total: progress(nth * total + done, count * total)


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


def unpack(data: bytes, *, max_tokens: int | None = None) -> SemFile:
    """Decode a ``.sem`` file; every failure is a :class:`semcodec.SemError`.

    ``data`` must be bytes-like (else :class:`TypeError`). ``max_tokens`` is the token
    budget (default :data:`DEFAULT_MAX_TOKENS`, at most :data:`MAX_TOKENS`): a file whose
    text has more tokens is refused with :class:`SemLimitError` once its budget is spent,
    bounding what an untrusted file costs (SPEC §6: time and memory grow linearly with the
    tokens decoded). Pass ``max_tokens=MAX_TOKENS`` to read any valid file.
    """
    _require_bytes(data, "unpack")
    result = unpack_many([data], max_tokens=max_tokens)[0]
    if isinstance(result, SemError):
        raise result
    return result


BATCH_FILES = 64
"""Files decoded in lockstep at most (bounds the KV caches' memory)."""


@dataclass
class _Job:
    index: int
    header: Header
    check_value: bytes
    header_bytes: int
    payload: bytes
    stream: coding.StreamDecoder
    state: DecoderState

    @property
    def prefix(self) -> int:
        """Fixed-table symbols before the text tokens (a one-byte header's form symbols)."""
        return len(self.header.form_symbols)


def unpack_many(
    blobs: Sequence[bytes],
    on_step: Callable[[int, int], None] | None = None,
    *,
    max_tokens: int | None = None,
    on_file: Callable[[int, SemFile | SemError], None] | None = None,
) -> list[SemFile | SemError]:
    """Decode many files; one model pass per step serves every file still decoding.

    ``on_step(tokens_decoded, files_still_decoding)`` is called after every step (progress).
    ``on_file(index, outcome)`` is called as soon as file ``index`` is decoded or refused,
    so a caller can write each output without waiting for the slowest file.
    ``max_tokens`` is every file's token budget (see :func:`unpack`; default :data:`DEFAULT_MAX_TOKENS`).

    Each file's tables are bit-identical to decoding it alone (rows never mix). A bad
    file yields its :class:`SemError` in its slot; the others decode.
    """
    from semcodec.models import load_model

    limit = min(DEFAULT_MAX_TOKENS, MAX_TOKENS) if max_tokens is None else max_tokens  # (tests lower MAX_TOKENS)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_TOKENS:
        raise ValueError(f"max_tokens must be an int in [0, {MAX_TOKENS}], not {max_tokens!r}")
    results: list[SemFile | SemError | None] = [None] * len(blobs)

    def finished(i: int, outcome: SemFile | SemError) -> None:
        results[i] = outcome
        if on_file is not None:
            on_file(i, outcome)

    by_model: dict[int, list[tuple[int, Header, bytes, int, bytes]]] = {}
    for i, data in enumerate(blobs):
        _require_bytes(data, "unpack_many")
        try:
            header, check_value, offset = decode_header(data)
            _require_known_ids(header)
            payload = bytes(data[offset:])
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise SemLimitError(f"payload of {len(payload)} bytes exceeds the limit {MAX_PAYLOAD_BYTES}")
        except SemError as err:
            finished(i, err)
            continue
        by_model.setdefault(header.model_id, []).append((i, header, check_value, offset, payload))
    for model_id, items in by_model.items():
        model = load_model(model_id)
        for lo in range(0, len(items), BATCH_FILES):
            batch = items[lo : lo + BATCH_FILES]
            jobs: list[_Job] = []
            for (i, header, check, offset, payload), state in zip(batch, model.decoders(len(batch)), strict=True):
                job = _Job(i, header, check, offset, payload, coding.StreamDecoder(payload), state)
                try:  # SPEC §4: a one-byte header's form symbols come first
                    for symbol, table in header.form_symbols:
                        if job.stream.step(table) != symbol:
                            raise SemIntegrityError("payload does not start with its header's form (corrupt file)")
                except SemError as err:
                    finished(i, err)
                    continue
                jobs.append(job)
            _decode_lockstep(model, jobs, on_step, limit, lambda job, outcome: finished(job.index, outcome))
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _decode_lockstep(
    model: LoadedModel,
    jobs: list[_Job],
    on_step: Callable[[int, int], None] | None,
    limit: int,
    done: Callable[[_Job, SemFile | SemError], None],
) -> None:
    active = jobs
    decoded = 0
    while active:
        tables = model.next_tables([job.state for job in active])
        still: list[_Job] = []
        for job, table in zip(active, tables, strict=True):
            try:
                symbol = job.stream.step(table)
                if symbol == model.eos_id:
                    if job.header.version >= 2:  # SPEC §4, v2: the line ending follows end-of-text
                        job.stream.step(LINE_ENDING_TABLE)
                    outcome: SemFile | SemError = _finish(model, job)
                elif len(job.stream.symbols) - job.prefix > limit:
                    raise SemLimitError(over_budget(limit))
                else:
                    still.append(job)
                    continue
            except SemError as err:
                outcome = err
            done(job, outcome)
        decoded += len(active)
        if on_step is not None:
            on_step(decoded, len(still))
        if still:
            model.step_many([job.state for job in still], [job.stream.symbols[-1] for job in still])
        active = still


def over_budget(limit: int) -> str:
    """The refusal of a file whose text has more than ``limit`` tokens, and how to raise the limit.

    >>> over_budget(1)[:59]
    'payload decodes to no end-of-text within 1 token (the token'
    """
    noun = "token" if limit == 1 else "tokens"
    if limit >= MAX_TOKENS:
        return f"payload decodes to no end-of-text within {limit} {noun} (the format's limit)"
    return (
        f"payload decodes to no end-of-text within {limit} {noun} (the token budget; "
        f"--max-tokens N, or max_tokens=N in Python, raises it up to {MAX_TOKENS})"
    )


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
