#!/usr/bin/env bash
# Run every fuzz target for a short, bounded time (default 20 s each, ~60 s of fuzzing in
# all, plus model loading); exit non-zero if any target finds a crash, a hang or a leak.
#
#   fuzz/run_short.sh                 # from anywhere; uses .venv/bin/python if present
#   FUZZ_SECONDS=600 fuzz/run_short.sh
#
# Findings are written to $FUZZ_ARTIFACTS (default fuzz/artifacts/) as <target>-crash-<sha1>;
# reproduce one with: python fuzz/fuzz_<target>.py fuzz/artifacts/<file>
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
SECS=${FUZZ_SECONDS:-20}
ART=${FUZZ_ARTIFACTS:-fuzz/artifacts}
SEEDS=${FUZZ_SEEDS:-8}   # smallest seeds per model-running target: the initial pass is not time-boxed
export OPENBLAS_NUM_THREADS=1 SEMCODEC_QUIET=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$ART"
if ! "$PY" -c "import atheris" 2>/dev/null; then
  echo "fuzz: atheris is not installed ($PY -m pip install atheris)" >&2
  exit 2
fi
if [[ ! -d fuzz/corpus/header || ! -d fuzz/corpus/unpack || ! -d fuzz/corpus/roundtrip ]]; then
  "$PY" fuzz/make_corpus.py || exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in header unpack roundtrip; do
  case $target in
    header) maxlen=64; seeds=(fuzz/corpus/header) ;;
    unpack) maxlen=48; seeds=() ;;
    roundtrip) maxlen=40; seeds=() ;;
  esac
  mkdir -p "$work/$target"
  if [[ $target != header ]]; then
    # copy the SEEDS smallest seeds: each one runs the LM, and libFuzzer runs them all first
    ls -S -r "fuzz/corpus/$target" | head -n "$SEEDS" | while read -r f; do cp "fuzz/corpus/$target/$f" "$work/$target/"; done
  fi
  start=$(date +%s)
  "$PY" "fuzz/fuzz_$target.py" "$work/$target" "${seeds[@]}" \
    -max_total_time="$SECS" -max_len="$maxlen" -timeout=60 -rss_limit_mb=4096 \
    -artifact_prefix="$ART/$target-" -print_final_stats=1 >"$work/$target.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$target.log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$work/$target.log" | tail -1)
  if [[ $rc -ne 0 ]]; then
    echo "fuzz_$target: FINDING (exit $rc), artifacts in $ART/:" >&2
    tail -n 40 "$work/$target.log" >&2
    status=1
  else
    echo "fuzz_$target: ok, ${execs:-?} execs in $(( $(date +%s) - start )) s, ${cov:-cov: ?}"
  fi
done
exit $status
