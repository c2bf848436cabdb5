"""The general-purpose coders semcodec is compared with, one text at a time.

Each text is compressed on its own, as a ``.sem`` file holds one description: UTF-8
(no compression), zlib -9 (zlib format: 2-byte header, 4-byte Adler-32), zstd -19
(frames as the library writes them: content size, no checksum), zstd -19 with a
dictionary trained on a disjoint split (frames without the dictionary id, since the
decoder is assumed to hold the dictionary, as semcodec's decoder holds its model; the
dictionary itself, like the model, is not counted), and brotli -q11 (which has its own
built-in dictionary). Every output is decompressed and checked.

brotli and zstandard are optional (``pip install 'semcodec[bench]'``); a missing one is
skipped with a note.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from semcodec.bench.corpus import Split

ZSTD_DICT_SIZE = 112640
"""Bytes of the trained dictionary: the ``zstd --train`` default (110 KiB)."""

BROTLI = "brotli -q11"
"""Name of the coder other rows are compared with."""


@dataclass
class CoderSizes:
    """Compressed bytes of each measured text under one coder."""

    name: str
    sizes: list[int]
    note: str | None = None


@dataclass
class ClassicResults:
    """Every available coder's sizes, and why any coder is missing."""

    coders: list[CoderSizes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _checked(
    name: str, raws: list[bytes], compress: Callable[[bytes], bytes], decompress: Callable[[bytes], bytes]
) -> list[int]:
    sizes = []
    for raw in raws:
        packed = compress(raw)
        if decompress(packed) != raw:  # a bench that reports sizes of broken output is worse than none
            raise RuntimeError(f"{name} did not round-trip a text")
        sizes.append(len(packed))
    return sizes


def _optional(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def classic_sizes(texts: list[str], split: Split, dict_size: int = ZSTD_DICT_SIZE) -> ClassicResults:
    """Sizes of ``texts`` under every general-purpose coder available here.

    >>> from semcodec.bench.corpus import Fold
    >>> split = Split([Fold([0, 1], ["a dog", "a cat"])], "test")
    >>> r = classic_sizes(["a red boat", "two dogs"], split)
    >>> [(c.name, c.sizes) for c in r.coders][:2]
    [('UTF-8', [10, 8]), ('zlib -9', [18, 16])]
    """
    raws = [t.encode("utf-8") for t in texts]
    out = ClassicResults()
    out.coders.append(CoderSizes("UTF-8", [len(r) for r in raws]))
    out.coders.append(CoderSizes("zlib -9", _checked("zlib", raws, lambda r: zlib.compress(r, 9), zlib.decompress)))

    zstd = _optional("zstandard")
    if zstd is None:
        out.notes.append("zstd skipped: the zstandard package is not installed (pip install 'semcodec[bench]')")
    else:
        plain = zstd.ZstdCompressor(level=19)
        out.coders.append(
            CoderSizes("zstd -19", _checked("zstd", raws, plain.compress, zstd.ZstdDecompressor().decompress))
        )
        out.coders.extend(_zstd_dict(zstd, raws, split, dict_size, out.notes))

    brotli = _optional("brotli")
    if brotli is None:
        out.notes.append("brotli skipped: the brotli package is not installed (pip install 'semcodec[bench]')")
    else:
        out.coders.append(
            CoderSizes(BROTLI, _checked("brotli", raws, lambda r: brotli.compress(r, quality=11), brotli.decompress))
        )
    return out


def _zstd_dict(zstd: Any, raws: list[bytes], split: Split, dict_size: int, notes: list[str]) -> list[CoderSizes]:
    """zstd -19 with a dictionary per fold, each trained only on that fold's training texts."""
    sizes = [0] * len(raws)
    actual: list[int] = []
    for fold in split.folds:
        samples = [t.encode("utf-8") for t in fold.training]
        try:
            trained = zstd.train_dictionary(dict_size, samples, level=19)
        except zstd.ZstdError as err:
            notes.append(f"zstd -19 +dict skipped: too little text to train a dictionary ({len(samples)} texts; {err})")
            return []
        actual.append(len(trained.as_bytes()))
        comp = zstd.ZstdCompressor(level=19, dict_data=trained, write_dict_id=False)
        decomp = zstd.ZstdDecompressor(dict_data=trained)
        fold_sizes = _checked("zstd +dict", [raws[i] for i in fold.measured], comp.compress, decomp.decompress)
        for i, size in zip(fold.measured, fold_sizes, strict=True):
            sizes[i] = size
    kib = "/".join(f"{n / 1024:.0f}" for n in actual)
    note = f"dictionary {kib} KiB, {split.description}; not counted in the size"
    return [CoderSizes("zstd -19 +dict", sizes, note)]
