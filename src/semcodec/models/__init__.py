"""Probability models: registry ids resolved to a tokenizer, a context and an exact LM."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from semcodec.errors import SemModelError
from semcodec.models import pins
from semcodec.models.exact import ExactLM, KVCache
from semcodec.models.tokenizer import TextTokenizer
from semcodec.models.weights import ENTRY_FILES, RUNTIME_VERSION, load_weights
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

    The file is used only when its arrays have the digest pinned for it in
    :mod:`semcodec.models.pins` (a wrong one is recomputed and rewritten), so starting from
    it changes no table. A profile without a pinned context is evaluated in every process
    and never cached.
    """
    model = load_model(model_id)
    name = context_file_name(model.context_ids)
    path = model.lm.w.directory / name
    pinned = pins.DERIVED.get(model.spec.weights.gguf_sha256, {}).get(name)
    if pinned is not None:
        state = _load_context(path, model.lm.n_layers, pinned)
        if state is not None:
            return state
    state = evaluate_context(model.lm, model.context_ids)
    if pinned is not None:
        actual = pins.arrays_digest(_context_arrays(state))
        if actual != pinned:
            raise SemModelError(
                f"the evaluated context {name} has sha256 {actual[:16]}…, not the pinned {pinned[:16]}…: "
                "this installation computes something else than the format says; nothing was cached"
            )
        _save_context(path, state)
    return state


def context_file_name(context_ids: Sequence[int]) -> str:
    """The cache file of an evaluated context: named by the runtime version and the token ids."""
    ids = np.asarray(context_ids, dtype="<i8")
    return f"context-{hashlib.sha256(f'rt{RUNTIME_VERSION}:'.encode() + ids.tobytes()).hexdigest()[:20]}.npz"


def evaluate_context(lm: ExactLM, context_ids: Sequence[int]) -> ContextState:
    """Run the model over a context: the state every pack and unpack of its profile starts from."""
    cache = KVCache()
    hidden = lm.forward(context_ids, cache)[-1:]
    return ContextState(tuple(cache.keys), tuple(cache.values), hidden)


def context_digest(state: ContextState) -> str:
    """What :data:`semcodec.models.pins.DERIVED` pins for a context file (its arrays' digest)."""
    return pins.arrays_digest(_context_arrays(state))


def _context_arrays(state: ContextState) -> dict[str, np.ndarray]:
    arrays = {f"k{i}": k for i, k in enumerate(state.keys)}
    arrays.update({f"v{i}": v for i, v in enumerate(state.values)})
    arrays["hidden"] = state.hidden
    return arrays


def _load_context(path: os.PathLike[str], n_layers: int, pinned: str) -> ContextState | None:
    """The saved state when its arrays have the ``pinned`` digest, else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "sha256"}  # older files recorded one
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if pins.arrays_digest(arrays) != pinned:
        return None
    try:
        keys = tuple(arrays[f"k{i}"] for i in range(n_layers))
        values = tuple(arrays[f"v{i}"] for i in range(n_layers))
        return ContextState(keys, values, arrays["hidden"])
    except KeyError:
        return None


def _save_context(path: os.PathLike[str], state: ContextState) -> None:
    """Best effort: a read-only cache only costs the recomputation next time."""
    arrays = {name: pins.little_endian(arr) for name, arr in _context_arrays(state).items()}
    folder = os.path.dirname(os.fspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".context-", suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError:
        return


CHECK_OK = "ok"
CHECK_NOT_BUILT = "not built yet (built on first use)"


def check_cache(model_id: int) -> dict[str, str]:
    """Every derived file of a model's weights checked against its pin, building nothing.

    ``{file: CHECK_OK | CHECK_NOT_BUILT | what is wrong}``: the converted entry's files, then
    the evaluated context of every profile on the same weights (``semcodec model verify``).
    """
    from semcodec.models.weights import cache_directory, check_entry
    from semcodec.registry import MODELS

    source = model_spec(model_id).weights
    directory = cache_directory(source)
    wrong = check_entry(source)
    report = {name: wrong.get(name, CHECK_OK) for name in ENTRY_FILES}
    if wrong:  # without a good entry there is no tokenizer to name the contexts by
        return report
    tokenizer = TextTokenizer(directory)
    pinned = pins.DERIVED[source.gguf_sha256]
    n_layers = int(json.loads((directory / "index.json").read_text())["config"]["n_layers"])
    for spec in MODELS.values():
        if spec.weights != source:
            continue
        name = context_file_name(tokenizer.encode_context(spec.context))
        if name not in pinned:
            report[name] = f"no digest is pinned for profile {spec.model_id}'s context (never cached)"
        elif not (directory / name).is_file():
            report[name] = CHECK_NOT_BUILT
        elif _load_context(directory / name, n_layers, pinned[name]) is None:
            report[name] = "its arrays do not have the pinned digest"
        else:
            report[name] = CHECK_OK
    return report
