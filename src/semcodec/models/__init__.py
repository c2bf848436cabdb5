"""Probability models: registry ids resolved to a tokenizer, a context and an exact LM."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from semcodec.models.exact import ExactLM, KVCache
from semcodec.models.tokenizer import TextTokenizer
from semcodec.models.weights import RUNTIME_VERSION, load_weights
from semcodec.registry import ModelSpec, WeightsSource, model_spec


@dataclass(frozen=True)
class LoadedModel:
    """Everything pack and unpack need for one model id."""

    spec: ModelSpec
    lm: ExactLM
    tokenizer: TextTokenizer
    context_ids: tuple[int, ...]
    eos_id: int


@lru_cache(maxsize=4)
def _runtime(source: WeightsSource) -> tuple[ExactLM, TextTokenizer]:
    weights = load_weights(source)
    return ExactLM(weights), TextTokenizer(weights.directory)


@lru_cache(maxsize=8)
def load_model(model_id: int) -> LoadedModel:
    """Load (once per process) the model a header id names; ids sharing weights share memory."""
    spec = model_spec(model_id)
    lm, tokenizer = _runtime(spec.weights)
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
    with threadpool_limits(limits=max(1, threads), user_api="blas"):
        yield


@dataclass(frozen=True)
class ContextState:
    """The model after reading a profile's context: what every pack and unpack starts from."""

    keys: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    hidden: np.ndarray  # final hidden state of the last context position, (1, hidden)

    def fresh_cache(self) -> KVCache:
        """A cache to continue from; the shared arrays are never written in place."""
        return KVCache(list(self.keys), list(self.values), len(self.keys[0]))


@lru_cache(maxsize=8)
def context_state(model_id: int) -> ContextState:
    """Evaluate the context once and keep it, in memory and beside the converted weights.

    The arrays are bit-for-bit what evaluating the context gives (saved raw, with their
    sha256; a mismatching file is recomputed), so starting from them changes no table.
    """
    model = load_model(model_id)
    ids = np.asarray(model.context_ids, dtype=np.int64)
    name = hashlib.sha256(f"rt{RUNTIME_VERSION}:".encode() + ids.tobytes()).hexdigest()[:20]
    path = model.lm.w.directory / f"context-i32-{name}.npz"
    state = _load_context(path, model.lm.n_layers)
    if state is None:
        state = evaluate_context(model.lm, model.context_ids)
        _save_context(path, state)
    return state


def evaluate_context(lm: ExactLM, context_ids: Sequence[int]) -> ContextState:
    """Run the model over a context (uncached): the state pack and unpack continue from."""
    cache = KVCache()
    hidden = lm.forward(context_ids, cache)[-1:]
    return ContextState(tuple(cache.keys), tuple(cache.values), hidden)


def _context_arrays(state: ContextState) -> dict[str, np.ndarray]:
    """The arrays a context file stores: keys and values as int32 (they are integers below
    2**24 in magnitude, SPEC §5.4: half of float64's bytes, same values), hidden as is."""
    arrays = {f"k{i}": _as_int32(k) for i, k in enumerate(state.keys)}
    arrays.update({f"v{i}": _as_int32(v) for i, v in enumerate(state.values)})
    arrays["hidden"] = state.hidden
    return arrays


def _as_int32(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.int32)
    if not np.array_equal(out, x):  # never: the runtime clips and rounds them (exact.py)
        raise ValueError("context keys/values are not int32 integers")
    return out


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
        ints = [arrays[f"{kind}{i}"] for kind in "kv" for i in range(n_layers)]
        hidden = arrays["hidden"]
    except KeyError:
        return None
    if any(a.dtype != np.int32 for a in ints) or hidden.dtype != np.float64:
        return None
    # int32 -> float64 is exact: the same arrays evaluate_context returns.
    floats = tuple(a.astype(np.float64) for a in ints)
    return ContextState(floats[:n_layers], floats[n_layers:], hidden)


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
