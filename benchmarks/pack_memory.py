#!/usr/bin/env python3
"""Peak memory and time of packing a long text, by prefill chunk (issue #20: a 2,048-token text ≤ 400 MB).

Each run is a fresh process: the model is loaded first (its own start-up peak is not what this
measures), then ``semcodec.pack`` of ``"1" * 2048`` (2,048 tokens: digits are one token each)
with ``semcodec.models.exact.PREFILL_CHUNK`` set; it reports the process's peak resident memory
(``VmHWM``: mapped weights, KV cache, temporaries and the allocator's slack), pack's CPU and
wall seconds, and the file's sha256 (every chunk size must give the same bytes). The chunk sizes
are run in turn, ``--repeat`` times, so a busy machine slows them alike; compare CPU seconds.

    OPENBLAS_NUM_THREADS=1 python benchmarks/pack_memory.py --chunks 128,64,32,16 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import hashlib, json, resource, sys, time
import semcodec
from semcodec.models import exact, load_model
model_id, chunk, tokens = (int(a) for a in sys.argv[1:4])
load_model(model_id)
exact.PREFILL_CHUNK = chunk
text = "1" * tokens
wall, cpu = time.perf_counter(), time.process_time()
data = semcodec.pack(text, model_id=model_id)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
try:  # this process's own peak (ru_maxrss starts at the parent's RSS: Linux carries it over exec)
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
digest = hashlib.sha256(data).hexdigest()
print(json.dumps({"rss": rss, "cpu": cpu, "wall": wall, "bytes": len(data), "sha256": digest}))
"""


def run_one(model_id: int, chunk: int, tokens: int) -> dict[str, float | str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "SEMCODEC_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": src}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(model_id), str(chunk), str(tokens)],
                          capture_output=True, text=True, env=env, check=True)
    result: dict[str, float | str] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", default="128,64,32", help="PREFILL_CHUNK values (default 128,64,32)")
    parser.add_argument("--model", type=int, default=0, help="profile id (default 0)")
    parser.add_argument("--tokens", type=int, default=2048, help="text tokens (default 2048, the format's most)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    runs: dict[int, list[dict[str, float | str]]] = {c: [] for c in chunks}
    for _ in range(args.repeat):
        for chunk in chunks:
            runs[chunk].append(run_one(args.model, chunk, args.tokens))
    print(f"model {args.model}, {args.tokens} tokens, {args.repeat} run(s) each")
    print(f"{'chunk':>5}  {'peak RSS':>14}  {'CPU s':>6}  {'wall s':>6}  file")
    for chunk in chunks:
        got = runs[chunk]
        rss = max(float(r["rss"]) for r in got)
        cpu = statistics.median(float(r["cpu"]) for r in got)
        wall = statistics.median(float(r["wall"]) for r in got)
        digests = {str(r["sha256"])[:16] for r in got}
        print(f"{chunk:>5}  {rss / 2**20:6.0f} MiB {rss / 1e6:4.0f} MB  {cpu:6.1f}  {wall:6.1f}  "
              f"{got[0]['bytes']} B {','.join(sorted(digests))}")


if __name__ == "__main__":
    main()
