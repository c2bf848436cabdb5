"""Shared set-up of the fuzz targets (imported before numpy or semcodec).

* one BLAS thread (the machines that run CI are small and shared);
* ``SEMFUZZ_MAX_TOKENS`` (default 16) replaces :data:`semcodec.codec.MAX_TOKENS` in the
  targets that run the language model, so that one input costs at most a second or two of
  CPU instead of the ~2049 LM steps a hostile payload may cost under the real limit. The
  limit is a parameter of the same code path (``codec.unpack`` reads it at call time), so
  what is fuzzed is the real decoder; only the point where SemLimitError fires moves.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("SEMCODEC_QUIET", "1")

FUZZ_MAX_TOKENS = int(os.environ.get("SEMFUZZ_MAX_TOKENS", "16"))


def limit_tokens() -> int:
    """Apply ``SEMFUZZ_MAX_TOKENS`` to the codec and return it."""
    import semcodec.codec

    semcodec.codec.MAX_TOKENS = FUZZ_MAX_TOKENS
    return FUZZ_MAX_TOKENS
