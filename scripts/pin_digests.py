#!/usr/bin/env python3
"""Compute every pinned digest of ``semcodec.models.pins`` from scratch; print it, or --write it.

The pins are the sha256 of the runtime's tables and of every file derived from a registered
GGUF (converted weights, index, tokenizer, control tokens, each profile's evaluated context).
Run this after any change to what is cached (file format, conversion, a new profile), then
review the diff: a changed pin for an unchanged format means the arithmetic changed.

    PYTHONPATH=src python scripts/pin_digests.py            # print the block, say if it differs
    PYTHONPATH=src python scripts/pin_digests.py --write    # rewrite src/semcodec/models/pins.py
    PYTHONPATH=src python scripts/pin_digests.py --check    # exit 1 when the pins are stale

The GGUF comes from the usual place (``SEMCODEC_CACHE_DIR``, ``SEMCODEC_MODEL_FILE`` or a
download, its registry sha256 checked); the conversion is done afresh in a temporary folder,
never trusting a cached entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from semcodec.models import blas_threads, context_digest, context_file_name, evaluate_context, pins, tables
from semcodec.models.exact import MAX_POSITIONS, ExactLM
from semcodec.models.tokenizer import TextTokenizer
from semcodec.models.weights import ENTRY_FILES, _load_dir, build_cache, ensure_gguf
from semcodec.registry import MODELS, WeightsSource

PINS_FILE = Path(pins.__file__)
BEGIN, END = "# BEGIN GENERATED", "# END GENERATED"


def source_digests(source: WeightsSource, workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(table pins, derived-file pins) for one GGUF, converted from scratch in ``workdir``."""
    entry = workdir / source.key.replace("+", "-")[:40]
    build_cache(source, ensure_gguf(source), entry, check_pins=False)
    files = {name: pins.file_digest(entry / name) for name in ENTRY_FILES}
    weights = _load_dir(entry, None)
    cfg = weights.config
    table_pins = {
        key: pins.array_digest(table)
        for key, table in tables.runtime_tables(MAX_POSITIONS, cfg.hidden // cfg.n_heads, cfg.rope_theta,
                                                check=False).items()
    }
    lm, tokenizer = ExactLM(weights), TextTokenizer(entry)
    for spec in MODELS.values():
        if spec.weights == source:
            ids = tokenizer.encode_context(spec.context)
            print(f"evaluating the context of profile {spec.model_id} ({len(ids)} tokens)", file=sys.stderr)
            with blas_threads():
                files[context_file_name(ids)] = context_digest(evaluate_context(lm, ids))
    return table_pins, files


def render(table_pins: dict[str, str], derived: dict[str, dict[str, str]]) -> str:
    """The generated block of pins.py."""
    lines = [f"{BEGIN} by scripts/pin_digests.py: do not edit by hand", "TABLES: dict[str, str] = {"]
    lines += [f"    {json.dumps(k)}: {json.dumps(v)}," for k, v in sorted(table_pins.items())]
    lines += ["}", "", "DERIVED: dict[str, dict[str, str]] = {"]
    for gguf, files in sorted(derived.items()):
        key_line = f"    {json.dumps(gguf)}: {{"
        lines.append(key_line + ("  # noqa: E501 (GGUF + adapter digests)" if len(key_line) > 120 else ""))
        lines += [f"        {json.dumps(k)}: {json.dumps(v)}," for k, v in sorted(files.items())]
        lines.append("    },")
    lines += ["}", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite the generated block of {PINS_FILE.name}")
    mode.add_argument("--check", action="store_true", help="exit 1 when the pinned digests differ")
    args = parser.parse_args()

    table_pins: dict[str, str] = {}
    derived: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="semcodec-pins-") as workdir:
        for source in {spec.weights for spec in MODELS.values()}:
            t, files = source_digests(source, Path(workdir))
            table_pins.update(t)
            derived[source.key] = files
    block = render(table_pins, derived)
    text = PINS_FILE.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    current = BEGIN + rest.split(END, 1)[0] + END
    stale = current != block
    if args.write:
        if stale:
            PINS_FILE.write_text(head + block + tail, encoding="utf-8")
        print(f"{PINS_FILE}: {'rewritten' if stale else 'already up to date'}", file=sys.stderr)
        return 0
    print(block)
    print(f"{PINS_FILE}: {'STALE (run with --write)' if stale else 'up to date'}", file=sys.stderr)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
