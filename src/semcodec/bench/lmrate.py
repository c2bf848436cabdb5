"""semcodec's side of the text table: file sizes, the model's cross-entropy, and speed.

Packing is timed as :func:`semcodec.pack` works — one batched pass of the exact LM for
the tables, then the range coder — and the same tables give the cross-entropy (the
floor no payload can beat), so the corpus is evaluated once per profile. On the texts
that are also unpacked, the bytes are checked against :func:`semcodec.pack` itself and
the unpacked text against the original: the sizes reported are those of real files
that decode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from semcodec.container import Header, encode_header
from semcodec.errors import SemError

Say = Callable[[str], None]
"""Where progress lines go (stderr in the CLI; nowhere in library use)."""

UNPACK_LIMIT = 20
"""Texts unpacked per profile by default: unpacking is sequential and ~5x slower than packing."""


def silent(_: str) -> None:
    """A :data:`Say` that says nothing."""


@dataclass
class ProfileRun:
    """One model profile over one corpus slice. Lists are per measured text; None = not coded."""

    model_id: int
    name: str
    file_bytes: list[int | None]
    info_bits: list[float | None]
    tokens: list[int | None]
    pack_seconds: float = 0.0
    unpack_seconds: float = 0.0
    unpack_tokens: int = 0
    unpack_texts: int = 0
    load_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def pack_tokens(self) -> int:
        return sum(t for t in self.tokens if t is not None)

    @property
    def pack_tokens_per_s(self) -> float | None:
        return self.pack_tokens / self.pack_seconds if self.pack_seconds > 0 else None

    @property
    def unpack_tokens_per_s(self) -> float | None:
        return self.unpack_tokens / self.unpack_seconds if self.unpack_seconds > 0 else None


def measure_profile(
    texts: list[str], model_id: int, unpack_limit: int = UNPACK_LIMIT, say: Say = silent, label: str = ""
) -> ProfileRun:
    """Pack every text with profile ``model_id``; unpack the first ``unpack_limit`` of them.

    Speeds are text tokens (end-of-text not counted) per second of wall time, model load
    excluded. A text the codec refuses (e.g. one its tokenizer cannot round-trip) is
    recorded in ``failures`` and has ``None`` entries.
    """
    import semcodec
    from semcodec import coding
    from semcodec.codec import fixed_symbols, symbol_stream
    from semcodec.models import load_model
    from semcodec.registry import model_spec

    spec = model_spec(model_id)
    started = time.perf_counter()
    load_model(model_id)
    semcodec.pack("A", model_id=model_id)  # first-call costs (allocations, caches) are not packing speed
    run = ProfileRun(model_id, spec.name, [], [], [], load_seconds=time.perf_counter() - started)
    header = Header(model_id=model_id)
    header_bytes = len(encode_header(header))
    step = max(10, len(texts) // 10)
    for i, text in enumerate(texts):
        try:
            t0 = time.perf_counter()
            symbols, rows = symbol_stream(text, header)
            tables = list(rows)  # made once: the coder and the cross-entropy below read the same rows
            payload = coding.encode(symbols, tables)
            run.pack_seconds += time.perf_counter() - t0
        except SemError as err:
            run.failures.append(f"text {i + 1}: {err}")
            run.file_bytes.append(None)
            run.info_bits.append(None)
            run.tokens.append(None)
            continue
        run.file_bytes.append(header_bytes + len(payload))
        run.info_bits.append(coding.cross_entropy_bits(symbols, tables))
        run.tokens.append(len(symbols) - fixed_symbols(header))
        if (i + 1) % step == 0 or i + 1 == len(texts):
            say(f"{label}packed {i + 1}/{len(texts)}")
    _unpack_sample(texts, run, unpack_limit, say, label)
    return run


def _unpack_sample(texts: list[str], run: ProfileRun, limit: int, say: Say, label: str) -> None:
    """Pack with the public API, check the size, unpack, check the text, and time the unpack."""
    import semcodec

    for i, text in enumerate(texts):
        if run.unpack_texts >= limit:
            break
        if run.file_bytes[i] is None:
            continue
        data = semcodec.pack(text, model_id=run.model_id)
        if len(data) != run.file_bytes[i]:
            raise RuntimeError(
                f"text {i + 1}: semcodec.pack wrote {len(data)} bytes, the bench measured {run.file_bytes[i]}"
            )
        t0 = time.perf_counter()
        decoded = semcodec.unpack(data, max_tokens=semcodec.MAX_TOKENS)  # our own file: any length the format holds
        run.unpack_seconds += time.perf_counter() - t0
        if decoded.text != text:
            raise RuntimeError(f"text {i + 1} did not survive pack/unpack")
        run.unpack_tokens += decoded.n_tokens
        run.unpack_texts += 1
    say(f"{label}unpacked {run.unpack_texts} texts")
