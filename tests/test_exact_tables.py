"""The runtime's tables do not depend on the caller's ``decimal`` context (SPEC §5).

A program may set any ``decimal`` context (rounding mode, precision, traps, exponent
limits) before its first ``semcodec.pack``; the tables, the converted files and the
packed bytes must still be the format's. Checked in process (builders under hostile
contexts) and end to end in a subprocess with a fresh cache.
"""

from __future__ import annotations

import decimal
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semcodec import models
from semcodec.errors import SemModelError
from semcodec.models import pins, tables
from semcodec.models.exact import MAX_POSITIONS
from semcodec.registry import DEFAULT_MODEL_ID, SMOLLM2_135M_INSTRUCT

HOSTILE = {
    "round-down, 5 digits": {"rounding": decimal.ROUND_DOWN, "prec": 5},
    "round-ceiling, 12 digits, trap inexact": {
        "rounding": decimal.ROUND_CEILING, "prec": 12, "traps": [decimal.Inexact, decimal.Rounded],
    },
    "round-05up, 60 digits, narrow exponents": {"rounding": decimal.ROUND_05UP, "prec": 60, "Emin": -30, "Emax": 30},
}


def _builders() -> dict[str, object]:
    """Every table, built afresh (bypassing the per-process caches)."""
    cos, sin = tables.rope_tables(MAX_POSITIONS, 64, 100000.0)
    cos_key, sin_key = tables.rope_keys(MAX_POSITIONS, 64, 100000.0)
    return {
        "E16": tables.exp_table.__wrapped__(tables.ATTENTION_EXP_SCALE_BITS),
        "E24": tables.exp_table.__wrapped__(tables.LOGIT_EXP_SCALE_BITS),
        "Sig": tables.sigmoid_table.__wrapped__(),
        cos_key: cos,
        sin_key: sin,
    }


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_tables_ignore_the_callers_decimal_context(hostile: str) -> None:
    with decimal.localcontext(decimal.Context(**HOSTILE[hostile])):  # type: ignore[arg-type]
        built = _builders()
    assert {key: pins.array_digest(table) for key, table in built.items()} == pins.TABLES  # type: ignore[arg-type]


def test_a_wrong_table_is_refused() -> None:
    e24 = tables.exp_table(tables.LOGIT_EXP_SCALE_BITS).copy()
    tables.check_table("E24", e24)
    e24[100] += 1
    with pytest.raises(SemModelError, match=r"the table E24 has sha256 .* not the pinned"):
        tables.check_table("E24", e24)
    with pytest.raises(SemModelError, match=r"no sha256 is pinned for the table RoPE-cos/300/64/100000\.0"):
        tables.check_table("RoPE-cos/300/64/100000.0", tables.rope_tables(300, 64, 100000.0)[0])


_HOSTILE_CHILD = """
import decimal, hashlib, json, sys
for ctx in (decimal.DefaultContext, decimal.getcontext()):  # the defaults new contexts copy, and this thread's
    ctx.rounding, ctx.prec, ctx.Emin, ctx.Emax = decimal.ROUND_DOWN, 5, -9, 9
    ctx.traps[decimal.Inexact] = ctx.traps[decimal.Rounded] = True
import numpy as np
import semcodec
from semcodec.models import load_model, pins
blobs = [semcodec.pack(t).hex() for t in json.loads(sys.argv[1])]
from semcodec.registry import DEFAULT_MODEL_ID
entry = load_model(DEFAULT_MODEL_ID).lm.w.directory  # the adapted entry: the merge ran under this context too
files = {p.name: pins.file_digest(p) for p in sorted(entry.iterdir())
         if not p.name.startswith("context-") and p.name != "verified.json"}  # the record holds no model data
files.update({p.name: pins.arrays_digest(dict(np.load(p))) for p in sorted(entry.glob("context-*.npz"))})
print(json.dumps({"files": files, "blobs": blobs}))
"""


@pytest.mark.slow
def test_hostile_decimal_context_before_first_use_gives_the_same_files(
    model, model_cache_dir: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Fresh cache, hostile context set before semcodec is imported: same entry, same .sem bytes."""
    import semcodec

    gguf = model_cache_dir.parent / "gguf" / f"{SMOLLM2_135M_INSTRUCT.gguf_sha256}.gguf"
    if not gguf.is_file():
        pytest.skip(f"no cached GGUF at {gguf}")
    texts = ["A red and black boat floating on top of water.", "Two giraffes in a field, 3 birds."]
    env = dict(os.environ, SEMCODEC_CACHE_DIR=str(tmp_path / "cache"), SEMCODEC_MODEL_FILE=str(gguf),
               SEMCODEC_QUIET="1")
    proc = subprocess.run([sys.executable, "-c", _HOSTILE_CHILD, json.dumps(texts)], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    pinned = pins.DERIVED[models.load_model(DEFAULT_MODEL_ID).spec.weights.key]
    assert child["files"] == {name: pinned[name] for name in child["files"]}
    default = models.load_model(DEFAULT_MODEL_ID)
    context = models.context_file_name(default.context_ids)  # written by the child's pack
    assert set(child["files"]) == {"index.json", "weights.bin", "tokenizer.json", "control_tokens.json", context}
    assert child["blobs"] == [semcodec.pack(t).hex() for t in texts]
