"""Shared fixtures and settings for the whole test suite.

* A deterministic hypothesis profile (``semcodec``) is loaded for every run: examples are
  derived from each test's name (``derandomize=True``), nothing is read from or written to
  an example database, and there is no per-example deadline (the machines that run CI are
  shared and slow; the exact LM runs at tens of milliseconds per token). Select another
  profile with ``HYPOTHESIS_PROFILE=...``.
* ``model`` (session scope) loads the default probability model once. When the weights are
  not cached and cannot be fetched, tests that need it are skipped with the reason, unless
  ``SEMCODEC_REQUIRE_MODEL=1`` (set it in CI), which turns the skip into a failure.
* ``model_cache_dir`` (session scope) is the directory of the real, already-built cache
  entry, for tests that copy it somewhere and tamper with the copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "semcodec",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "semcodec"))


@pytest.fixture(scope="session")
def model():  # type: ignore[no-untyped-def]
    """Model 0 (the default of format v1 files, not of new ones), loaded once per test session."""
    from semcodec.errors import SemModelError
    from semcodec.models import load_model

    try:
        return load_model(0)
    except SemModelError as err:
        if os.environ.get("SEMCODEC_REQUIRE_MODEL") == "1":
            pytest.fail(f"the default model is required (SEMCODEC_REQUIRE_MODEL=1) but unavailable: {err}")
        pytest.skip(f"the default model is unavailable: {err}")


@pytest.fixture(scope="session")
def model_cache_dir(model) -> Path:  # type: ignore[no-untyped-def]
    """The directory holding the converted weights of the default model (read-only for tests)."""
    directory: Path = model.lm.w.directory
    return directory
