#!/usr/bin/env python3
"""Pack throughput over Ray Data: 1 and 2 local workers against the in-process path.

The same ``n`` captions (default 500, the first of ``shared/data/coco-captions-dev.txt``) are
packed three ways, and every way must produce the same bytes:

* in-process: one :class:`semcodec.data.TextPacker` (the model already loaded; the timing
  is the coder alone);
* Ray, 1 and 2 workers: :func:`semcodec.data.pack_dataset` on a local cluster with one CPU
  per worker, the captions in blocks of ``--block`` rows; the wall time includes starting
  the actor pool (each worker loads the model), which is also timed on its own (one block
  per worker) and printed, so the steady-state rate can be read off.

Goal: 2 workers ≥ 1.7× one worker's captions/s on a 2-core machine. Every thread knob is 1
(``SEMCODEC_THREADS`` and the BLAS pools) so one worker is one core.

    PYTHONPATH=src python benchmarks/dataset_throughput.py --n 120
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from _common import default_captions

THREADS = {"SEMCODEC_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _ray_pack(ray: Any, table: Any, workers: int, block: int) -> tuple[float, list[bytes]]:
    import pyarrow as pa

    from semcodec.data import pack_dataset

    blocks = [table.slice(i, block) for i in range(0, table.num_rows, block)]
    start = time.perf_counter()
    ds = pack_dataset(ray.data.from_arrow(blocks), workers=workers, batch_size=block)
    out = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return time.perf_counter() - start, out["sem"].to_pylist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captions", nargs="?", help="one caption per line (default: shared/data's COCO captions)")
    parser.add_argument("--n", type=int, default=500, help="captions packed by every path (default 500)")
    parser.add_argument("--block", type=int, default=10, help="rows per Ray block and batch (default 10)")
    args = parser.parse_args()
    os.environ.update(THREADS)

    import pyarrow as pa
    import ray

    from semcodec.bench.corpus import read_corpus
    from semcodec.data import TextPacker

    texts = read_corpus(args.captions or default_captions("dataset_throughput.py")).texts[: args.n]
    table = pa.table({"text": texts})
    packer = TextPacker()  # loads the model (not timed)
    start = time.perf_counter()
    local = packer(table)["sem"].to_pylist()
    t_local = time.perf_counter() - start

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": THREADS})
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        rows: list[tuple[str, int, float, float]] = [("in-process", 0, t_local, 0.0)]
        for workers in (1, 2):
            startup, _ = _ray_pack(ray, table.slice(0, workers), workers, 1)  # pool start + model load
            wall, sems = _ray_pack(ray, table, workers, args.block)
            if sems != local:
                print(f"MISMATCH: Ray with {workers} worker(s) packed different bytes", file=sys.stderr)
                return 1
            rows.append((f"ray, {workers} worker(s)", workers, wall, startup))
    finally:
        ray.shutdown()

    n = len(texts)
    rate = {name: n / t for name, _, t, _ in rows}
    one = rate["ray, 1 worker(s)"]
    print(f"pack throughput, {n} captions, blocks of {args.block} rows, {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f} at the end)")
    head = f"{'path':<20} {'wall s':>8} {'pool start s':>13} {'captions/s':>11}"
    print(f"{head} {'vs in-process':>14} {'vs 1 worker':>12}")
    for name, workers, t, startup in rows:
        start_col = f"{startup:.1f}" if workers else "-"
        print(f"{name:<20} {t:>8.1f} {start_col:>13} {rate[name]:>11.2f} {rate[name] / rate['in-process']:>13.2f}x "
              f"{rate[name] / one:>11.2f}x")
    ratio = rate["ray, 2 worker(s)"] / one
    print(f"goal: 2 workers >= 1.7x one worker: {ratio:.2f}x -> {'met' if ratio >= 1.7 else 'NOT met'}")
    print("all paths produced identical .sem bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
