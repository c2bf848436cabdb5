"""Probability models: registry ids resolved to a tokenizer, a context and an exact LM.

The codec sees only :class:`LoadedModel`'s stepping interface: :meth:`LoadedModel.tables`
(every table of a text at once, for packing) and decoder states advanced together with
:meth:`LoadedModel.next_tables` / :meth:`LoadedModel.step_many` (for unpacking).

    >>> model = load_model(0)
    >>> tokens = model.tokenizer.encode("A cat.")
    >>> packed = model.tables(tokens)  # one row per token, and one for end-of-text
    >>> [state] = model.decoders(1)
    >>> rows = []
    >>> for token in [*tokens, model.eos_id]:
    ...     rows.append(model.next_tables([state])[0])
    ...     model.step_many([state], [token])
    >>> bool((packed == rows).all())
    True
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

from semcodec.models.exact import ExactLM, KVCache, SharedPrefix
from semcodec.models.kernels import products_from_name
from semcodec.models.tokenizer import TextTokenizer
from semcodec.models.weights import RUNTIME_VERSION, cache_dir, load_weights
from semcodec.registry import ModelSpec, WeightsSource, model_spec


@dataclass
class DecoderState:
    """One text being decoded: its cache and the hidden state its next table comes from."""

    cache: KVCache
    hidden: np.ndarray  # (1, hidden)


@dataclass(frozen=True)
class LoadedModel:
    """Everything pack and unpack need for one model id, and the stepping interface."""

    spec: ModelSpec
    lm: ExactLM
    tokenizer: TextTokenizer
    context_ids: tuple[int, ...]
    eos_id: int

    def tables(self, tokens: Sequence[int]) -> np.ndarray:
        """(len(tokens) + 1, vocab) int32: row i codes ``tokens[i]`` after the context and
        ``tokens[:i]``; the last row codes end-of-text. One batched pass."""
        with blas_threads():
            start = context_state(self.spec.model_id)
            hidden = [start.hidden]
            if tokens:
                hidden.append(self.lm.forward(tokens, self.lm.new_cache(start.prefix, len(tokens))))
            return self.lm.tables(np.concatenate(hidden))

    def decoders(self, n: int) -> list[DecoderState]:
        """``n`` fresh decoder states, each just after the context."""
        start = context_state(self.spec.model_id)
        return [DecoderState(self.lm.new_cache(start.prefix, 32), start.hidden) for _ in range(n)]

    def next_tables(self, states: Sequence[DecoderState]) -> np.ndarray:
        """(len(states), vocab) int32: the table of each state's next symbol."""
        with blas_threads():
            return self.lm.tables(np.concatenate([s.hidden for s in states]))

    def step_many(self, states: Sequence[DecoderState], tokens: Sequence[int]) -> None:
        """Append ``tokens[i]`` to ``states[i]``, all in one pass over the weights."""
        if not states:
            return
        with blas_threads():
            outs = self.lm.forward_many([([t], s.cache) for s, t in zip(states, tokens, strict=True)])
        for state, hidden in zip(states, outs, strict=True):
            state.hidden = hidden


@lru_cache(maxsize=4)
def _runtime(source: WeightsSource, backend: str) -> tuple[ExactLM, TextTokenizer]:
    """Weights and tokenizer; the weights' sha256 check runs beside the tokenizer's parsing.

    hashlib releases the GIL, so on two cores a cold start pays for the longer of the two,
    not their sum. The tokenizer built meanwhile is kept only if the bytes it was built from
    have the digests the (verified) cache entry records; otherwise it is built again.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(load_weights, source)
        early: TextTokenizer | None
        try:
            early = TextTokenizer(cache_dir(source))
        except Exception:  # missing or damaged files: load_weights rebuilds them
            early = None
        products = products_from_name(backend)
        weights = loading.result()
    if early is not None and early.files_sha256 == weights.files_sha256:
        return ExactLM(weights, products), early
    return ExactLM(weights, products), TextTokenizer(weights.directory)


def load_model(model_id: int, backend: str | None = None) -> LoadedModel:
    """Load (once per process) the model a header id names; ids sharing weights share memory.

    ``backend`` names the product kernel (:func:`semcodec.models.kernels.products_from_name`;
    default ``$SEMCODEC_BACKEND``): every backend gives the same tables.
    """
    return _load_model(model_id, (backend or os.environ.get("SEMCODEC_BACKEND") or "").strip().lower())


@lru_cache(maxsize=8)
def _load_model(model_id: int, backend: str) -> LoadedModel:
    spec = model_spec(model_id)
    lm, tokenizer = _runtime(spec.weights, backend)
    context = tuple(tokenizer.encode_context(spec.context))
    return LoadedModel(spec, lm, tokenizer, context, tokenizer.token_id(spec.eos_token))


@contextmanager
def blas_threads() -> Iterator[None]:
    """BLAS threads for model work: ``$SEMCODEC_THREADS``, default 1.

    The results are the same for any count (that is the point of the exact runtime), so
    this is only about speed: one token at a time is a chain of small matrix products a
    second thread barely helps, and on a busy machine OpenBLAS threads spin-wait each other
    to a crawl (measured: a pack 0.47 s with 1 thread, 8.3 s with 2 under load).
    """
    threads = int(os.environ.get("SEMCODEC_THREADS", "1"))
    with _threadpools().limit(limits=max(1, threads), user_api="blas"):
        yield


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    """Scanned once: a fresh scan per call cost 2.5 ms (twice per decoded token)."""
    return ThreadpoolController()


@dataclass(frozen=True)
class ContextState:
    """The model after reading a profile's context: what every pack and unpack starts from."""

    prefix: SharedPrefix  # every text's cache continues after it
    hidden: np.ndarray  # final hidden state of the last context position, (1, hidden)


@lru_cache(maxsize=8)
def context_state(model_id: int) -> ContextState:
    """Evaluate the context once and keep it, in memory and beside the converted weights.

    The arrays are bit-for-bit what evaluating the context gives (saved raw, with their
    sha256; a mismatching file is recomputed), so starting from them changes no table.
    """
    model = load_model(model_id)
    ids = np.asarray(model.context_ids, dtype=np.int64)
    name = hashlib.sha256(f"rt{RUNTIME_VERSION}:".encode() + ids.tobytes()).hexdigest()[:20]
    path = model.lm.w.directory / f"context-{name}.npz"
    state = _load_context(path, model.lm.n_layers)
    if state is None:
        cache = model.lm.new_cache()
        with blas_threads():
            hidden = model.lm.forward(model.context_ids, cache)[-1:]
        state = ContextState(cache.freeze(), hidden)
        _save_context(path, state)
    return state


def _context_arrays(state: ContextState) -> dict[str, np.ndarray]:
    return {"keys": state.prefix.keys, "values": state.prefix.values, "hidden": state.hidden}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _load_context(path: os.PathLike[str], n_layers: int) -> ContextState | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    stored = arrays.pop("sha256", None)
    if stored is None or str(stored) != _digest(arrays):
        return None
    try:
        keys, values, hidden = arrays["keys"], arrays["values"], arrays["hidden"]
    except KeyError:
        return None
    if keys.dtype != np.int32 or keys.shape != values.shape or keys.ndim != 4 or len(keys) != n_layers:
        return None
    return ContextState(SharedPrefix(keys, values), hidden)


def _save_context(path: os.PathLike[str], state: ContextState) -> None:
    """Best effort: a read-only cache only costs the recomputation next time."""
    arrays = _context_arrays(state)
    folder = os.path.dirname(os.fspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".context-", suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, sha256=np.array(_digest(arrays)), **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError:
        return
