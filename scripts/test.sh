#!/usr/bin/env bash
# Fresh machine -> lint, type-check, the whole test suite and short fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() { .venv/bin/pip install -q --disable-pip-version-check "$@"; }
pip_install torch==2.13.0                 # CPU wheel from this machine's disk (image-backend tests)
pip_install -e '.[dev,bench,openai,hf]' atheris
.venv/bin/semcodec model fetch
.venv/bin/ruff check src tests benchmarks fuzz
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider
if [ -f fuzz/run_short.sh ]; then bash fuzz/run_short.sh; fi
