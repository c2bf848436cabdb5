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

import ctypes
import hashlib
import json
import mmap
import os
import struct
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from semcodec.errors import SemModelError
from semcodec.fileio import temp_beside
from semcodec.models import pins, verified
from semcodec.models.exact import ExactLM, KVCache, SharedPrefix
from semcodec.models.kernels import products_from_name
from semcodec.models.tokenizer import TextTokenizer
from semcodec.models.weights import ENTRY_FILES, RUNTIME_VERSION, cache_directory, cache_lock, load_weights
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
        hidden = self._final_hidden(tokens)
        with blas_threads():
            return self.lm.tables(hidden)

    def table_rows(self, tokens: Sequence[int], progress: Callable[[int, int], None] | None = None) -> TableRows:
        """:meth:`tables`' rows, made a chunk at a time as they are read (packing a long text
        never holds every (vocab,) table at once: 403 MB at 2,049 symbols). The forward pass
        runs first, whole (``progress``: see :meth:`_final_hidden`)."""
        return TableRows(self.lm, self._final_hidden(tokens, progress))

    def _final_hidden(self, tokens: Sequence[int], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(len(tokens) + 1, hidden): the context's last state, then each token's.

        One forward pass, :data:`~semcodec.models.exact.PREFILL_CHUNK` tokens at a time
        (:meth:`ExactLM.forward_chunks`: the same bits), into one array;
        ``progress(read, len(tokens))`` after each chunk. (Making the tables of each chunk's rows
        right after it, the KV cache still held, cost 8% more CPU time and no less memory for a
        2,048-token text: the allocator faulted the tables' temporaries in afresh every time.)
        """
        start = context_state(self.spec.model_id)
        hidden = np.empty((len(tokens) + 1, start.hidden.shape[-1]), start.hidden.dtype)
        hidden[0] = start.hidden[0]
        if tokens:
            cache = self.lm.new_cache(start.prefix, len(tokens))
            with blas_threads():
                for end, part in self.lm.forward_chunks(tokens, cache):
                    hidden[end - len(part) + 1 : end + 1] = part
                    if progress is not None:
                        progress(end, len(tokens))
        return hidden

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


class TableRows(Sequence[np.ndarray]):
    """Frequency tables of final hidden states (N, hidden), row ``i`` made when first read, in
    chunks of :data:`TABLE_ROWS_CHUNK`; only the chunk last read is kept. The same rows as
    ``ExactLM.tables`` (each row depends on its own hidden state only)."""

    def __init__(self, lm: ExactLM, hidden: np.ndarray) -> None:
        self._lm, self._hidden = lm, hidden
        self._lo, self._chunk = -1, np.empty((0, 0), np.int32)

    def __len__(self) -> int:
        return len(self._hidden)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(index)
        lo = i - i % TABLE_ROWS_CHUNK
        if lo != self._lo:
            with blas_threads():
                self._chunk = self._lm.tables(self._hidden[lo : lo + TABLE_ROWS_CHUNK])
            self._lo = lo
        return self._chunk[i - lo]


TABLE_ROWS_CHUNK = 16
"""Rows of (vocab,) int32 tables :class:`TableRows` makes at once (3 MB for SmolLM2, and ~25 MB of
float64 and int64 temporaries while they are made)."""


@lru_cache(maxsize=4)
def _runtime(source: WeightsSource, backend: str) -> tuple[ExactLM, TextTokenizer]:
    """Weights and tokenizer; the weights' sha256 check runs beside the tokenizer's parsing.

    hashlib releases the GIL, so on two cores a cold start pays for the longer of the two,
    not their sum (and once a file version has matched its pin, there is no hash to pay:
    :mod:`semcodec.models.verified`). The tokenizer built meanwhile is kept only if the bytes it was built from
    have the digests the (verified) cache entry records; otherwise it is built again.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(load_weights, source)
        early: TextTokenizer | None
        try:
            early = TextTokenizer(cache_directory(source))
        except Exception:  # missing or damaged files: load_weights rebuilds them
            early = None
        products = products_from_name(backend)
        weights = loading.result()
    tokenizer = early if early is not None and early.files_sha256 == weights.files_sha256 else None
    tokenizer = tokenizer or TextTokenizer(weights.directory)
    release_free_heap()
    return ExactLM(weights, products), tokenizer


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Parsing the tokenizer (``tokenizers``' JSON) frees ~27 MB that glibc keeps resident. A
    cold unpack's peak resident memory comes later, at the end of decoding, when every
    weight page has been read, so releasing it lowers that peak by as much (~1 ms).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)


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

    The file is used only when its arrays have the digest pinned for it in
    :mod:`semcodec.models.pins` (a wrong one is recomputed and rewritten), so starting from
    it changes no table; its arrays are mapped, not read, and hashed once per file version
    (:mod:`semcodec.models.verified`). A profile without a pinned context is evaluated in every process
    and never cached.
    """
    model = load_model(model_id)
    name = context_file_name(model.context_ids)
    path = model.lm.w.directory / name
    pinned = pins.DERIVED.get(model.spec.weights.key, {}).get(name)
    if pinned is not None:
        state = _load_context(path, model.lm.n_layers, pinned)
        if state is not None:
            return state
    state = evaluate_context(model.lm, model.context_ids)
    if pinned is not None:
        actual = context_digest(state)
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
    cache = lm.new_cache()
    with blas_threads():
        hidden = lm.forward(context_ids, cache)[-1:]
    return ContextState(cache.freeze(), hidden)


def context_digest(state: ContextState) -> str:
    """What :data:`semcodec.models.pins.DERIVED` pins for a context file (its arrays' digest)."""
    return pins.arrays_digest(_context_arrays(state))


def _context_arrays(state: ContextState) -> dict[str, np.ndarray]:
    return {"keys": state.prefix.keys, "values": state.prefix.values, "hidden": state.hidden}


_CONTEXT_DTYPES = {"hidden.npy": "<f8", "keys.npy": "<i4", "values.npy": "<i4"}
"""The members of a context file and their dtypes (explicit little-endian, as written)."""


def _load_context(path: os.PathLike[str], n_layers: int, pinned: str, use_record: bool = True) -> ContextState | None:
    """The saved state when its arrays have the ``pinned`` digest, else None.

    The arrays are mapped in place, not read (:func:`_map_context`). ``use_record``: a file
    the :mod:`semcodec.models.verified` record vouches for is not hashed again (off for
    ``semcodec model verify``, which always hashes).
    """
    try:
        arrays, stat, pages = _map_context(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, struct.error):
        return None
    where, name = os.path.split(os.fspath(path))
    if use_record:
        matched = verified.matches_pin(Path(where), name, pinned, lambda: pins.arrays_digest(arrays), stat)
    else:
        matched = pins.arrays_digest(arrays) == pinned
    if not matched:
        return None
    keys, values, hidden = arrays["keys"], arrays["values"], np.array(arrays["hidden"])
    if keys.shape != values.shape or keys.ndim != 4 or len(keys) != n_layers:
        return None
    state = ContextState(SharedPrefix(keys, values), hidden)
    if hasattr(mmap, "MADV_DONTNEED"):
        # Out of this process's resident memory until read again: a digest check just read
        # all 42 MB of a default profile's keys/values. Attention's kernels read each layer's
        # arrays once, on first use (semcodec.models.attention), and those reads fetch the
        # same bytes from the page cache.
        pages.madvise(mmap.MADV_DONTNEED)
    return state


def _map_context(path: os.PathLike[str]) -> tuple[dict[str, np.ndarray], verified.FileStat, mmap.mmap]:
    """A context file's arrays, memory-mapped where they lie (read-only), the mapped file's
    numbers, and the map.

    The file is what ``np.savez`` writes: an uncompressed zip of ``.npy`` members, so each
    array's bytes sit contiguously in it. Mapping them costs nothing up front (``np.load``
    read the default profile's 42 MB into fresh memory on every start) and the pages come
    from the page cache as they are used. Anything else (a compressed or unexpected
    member, another dtype, Fortran order) raises ValueError: the context is recomputed.
    """
    arrays: dict[str, np.ndarray] = {}
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        stat = verified.file_stat(Path(path), handle.fileno())
        pages = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # holds its own reference to the file
        members = archive.infolist()
        if sorted(m.filename for m in members) != sorted(_CONTEXT_DTYPES):
            raise ValueError("not the members of a context file")
        for info in members:
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{info.filename} is compressed")
            handle.seek(info.header_offset)
            local = handle.read(30)  # the local file header: its name and extra field lengths are its own
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"{info.filename}: no local file header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            handle.seek(start)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"{info.filename}: .npy version {version}")
            offset = handle.tell()
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if fortran or dtype.str != _CONTEXT_DTYPES[info.filename] or offset - start + nbytes != info.file_size:
                raise ValueError(f"{info.filename}: not a little-endian C-order array filling its member")
            key = info.filename.removesuffix(".npy")
            count = nbytes // dtype.itemsize
            little_endian = _CONTEXT_DTYPES[info.filename]  # == dtype.str, checked above
            arrays[key] = np.frombuffer(pages, dtype=little_endian, count=count, offset=offset).reshape(shape)
    return arrays, stat, pages


def _save_context(path: os.PathLike[str], state: ContextState) -> None:
    """Best effort: a read-only cache only costs the recomputation next time."""
    arrays = {name: pins.little_endian(arr) for name, arr in _context_arrays(state).items()}
    try:
        # One writer at a time; it first removes what a writer killed midway left (cache_lock).
        with cache_lock(Path(path)), temp_beside(path) as tmp:  # a full disk or an interruption leaves no partial file
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
    except OSError:
        return


CHECK_OK = "ok"
CHECK_NOT_BUILT = "not built yet (built on first use)"
CHECK_NOT_FETCHED = "not fetched yet ('semcodec model fetch' fetches and converts it)"
VOUCHED = ("; yet verified.json vouches for this very file (a forged record, or a change below the file "
           "system): loads since it was recorded may have used it")
"""Added to a wrong file's status when the verification record claims it matched its pin."""


def _vouched(directory: Path, name: str, pinned: str | None) -> bool:
    """Whether the :mod:`verified` record vouches for file ``name`` as it is now."""
    if pinned is None:
        return False
    try:
        return verified.is_recorded(directory, name, pinned, verified.file_stat(directory / name))
    except OSError:
        return False


def check_cache(model_id: int) -> dict[str, str]:
    """Every derived file of a model's weights checked against its pin, building nothing.

    ``{file: CHECK_OK | CHECK_NOT_BUILT | CHECK_NOT_FETCHED | what is wrong}``: the converted
    entry's files, then the evaluated context of every profile on the same weights
    (``semcodec model verify``). Every file is hashed, whatever the :mod:`verified` record
    says; a wrong file the record vouches for says so (:data:`VOUCHED`).
    """
    from semcodec.models.weights import check_entry, pinned_digests
    from semcodec.registry import MODELS

    source = model_spec(model_id).weights
    directory = cache_directory(source)
    if not any(os.path.lexists(directory / name) for name in ENTRY_FILES):
        return {name: CHECK_NOT_FETCHED for name in ENTRY_FILES}  # nothing there: not wrong, just not there yet
    pinned = pinned_digests(source)
    wrong = check_entry(source)
    report = {name: wrong[name] + (VOUCHED if _vouched(directory, name, pinned.get(name)) else "")
              if name in wrong else CHECK_OK for name in ENTRY_FILES}
    if wrong:  # without a good entry there is no tokenizer to name the contexts by
        return report
    tokenizer = TextTokenizer(directory)
    n_layers = int(json.loads((directory / "index.json").read_text())["config"]["n_layers"])
    for spec in MODELS.values():
        if spec.weights != source:
            continue
        name = context_file_name(tokenizer.encode_context(spec.context))
        if name not in pinned:
            report[name] = f"no digest is pinned for profile {spec.model_id}'s context (never cached)"
        elif not (directory / name).is_file():
            report[name] = CHECK_NOT_BUILT
        elif _load_context(directory / name, n_layers, pinned[name], use_record=False) is None:
            report[name] = "its arrays do not have the pinned digest" + (
                VOUCHED if _vouched(directory, name, pinned[name]) else "")
        else:
            report[name] = CHECK_OK
    return report
