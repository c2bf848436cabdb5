"""Build the seed corpora of the fuzz targets.

    python fuzz/make_corpus.py [OUTDIR]        # default: fuzz/corpus

Writes ``OUTDIR/header``, ``OUTDIR/unpack`` and ``OUTDIR/roundtrip``. Seeds come from the
golden vectors ``format/vectors/*.sem`` when there are any; otherwise (or in addition, with
``--pack``) from a few captions packed with every registered model, with and without the
integrity check, at a few resolutions. The header corpus also gets one synthetic header
for every combination of flags (no model needed). File names are content hashes, so
re-running is idempotent.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CAPTIONS = [
    "",
    "Hi",
    "A cat.",
    "A cat sleeping on a red sofa.",
    "Two dogs play in the snow.",
    "Un café au lait, s'il vous plaît ☕ — 東京の夜景",
]


def _write(directory: Path, data: bytes) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha1(data).hexdigest()
    if path.exists():
        return False
    path.write_bytes(data)
    return True


def synthetic_headers() -> list[bytes]:
    """One header per flag combination, with edge values (no payload, no model)."""
    from semcodec.container import MAX_DIMENSION, MAX_ID, MAX_SEED, Header, encode_header

    out = []
    for model_id, generator_id, seed, size, check in itertools.product(
        (0, 1, MAX_ID), (0, 5, MAX_ID), (0, 1, MAX_SEED), ((1024, 1024), (1, 1), (MAX_DIMENSION, 512)), (0, 1)
    ):
        header = Header(model_id, generator_id, seed, size[0], size[1], bool(check))
        out.append(encode_header(header, b"\xbe\xef" if check else b""))
    return out


def packed_files() -> list[bytes]:
    import semcodec
    from semcodec.registry import MODELS

    out = []
    for text in CAPTIONS:
        for model_id in MODELS:
            out.append(semcodec.pack(text, model_id=model_id))
        out.append(semcodec.pack(text, check=True))
        out.append(semcodec.pack(text, width=512, height=768, seed=42, generator_id=3, check=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", nargs="?", default=str(ROOT / "fuzz" / "corpus"))
    parser.add_argument("--pack", action="store_true", help="pack captions even when vectors exist")
    args = parser.parse_args(argv)
    out = Path(args.outdir)

    files = [p.read_bytes() for p in sorted((ROOT / "format" / "vectors").glob("**/*.sem"))]
    source = f"{len(files)} vectors from format/vectors"
    if not files or args.pack:
        files += packed_files()
        source += f" + {len(CAPTIONS)} captions packed with every model"
    counts = dict.fromkeys(("header", "unpack", "roundtrip"), 0)
    for data in files + synthetic_headers():
        counts["header"] += _write(out / "header", data)
    for data in files:
        counts["unpack"] += _write(out / "unpack", data)
    for text in CAPTIONS:
        raw = text.encode("utf-8")
        # fuzz_roundtrip: mode byte, header bytes, then text (see text_and_header there)
        for prefix in (b"\x00\x00\x00\x00\x00\x00", b"\x01\x01\x01\x00\x01\x02", b"\x02\x02\x00\x01\x03\x04"):
            counts["roundtrip"] += _write(out / "roundtrip", prefix + raw)
    print(f"seed corpus in {out} from {source}: " + ", ".join(f"{k} +{v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
