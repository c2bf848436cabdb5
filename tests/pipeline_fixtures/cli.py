"""Run the real ``semcodec`` command line in a fresh interpreter, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# One math thread per process: this 2-core machine is shared (CI, other test processes),
# and spinning BLAS/OpenMP workers then make the LM coder many times slower (measured
# 0.5 s vs 8 s for one pack). Results do not depend on it: the coder's runtime is exact.
QUIET_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any semcodec/OpenAI/HF settings of the developer's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SEMCODEC_", "HF_", "HUGGINGFACE_"))}
    env.update(QUIET_THREADS)
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def semcodec(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m semcodec ARGS`` with ``env``; text output captured."""
    return subprocess.run(
        [sys.executable, "-m", "semcodec", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
