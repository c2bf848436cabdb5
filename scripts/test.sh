#!/usr/bin/env bash
# Fresh machine -> lint, type-check, the whole test suite and short fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() { .venv/bin/pip install -q --disable-pip-version-check "$@"; }
pip_install torch==2.13.0                 # CPU wheel from this machine's disk (image-backend tests)
pip_install -e '.[dev,bench,openai,hf,ray]' atheris
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # The HTML report test opens the page in headless Chromium; it skips with a reason without it.
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "chromium could not be installed; the report test will skip"
fi
if ! command -v qemu-aarch64-static >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # The arm64 products (NEON sdot) are checked under emulation; the test skips with a reason without these.
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu \
        qemu-user-static >/dev/null) || echo "the arm64 cross tools could not be installed; that test will skip"
fi
.venv/bin/semcodec model fetch             # the default profile's weights (the captioner adapter merged)
.venv/bin/semcodec model fetch 6           # the describer adapter's weights (profiles 6-9)
.venv/bin/semcodec model fetch 3           # the base weights of profiles 0-5 (each is converted once, ~10 s)
.venv/bin/ruff check src tests benchmarks fuzz
.venv/bin/mypy
SEMCODEC_REQUIRE_MODEL=1 .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15
bash fuzz/run_short.sh
