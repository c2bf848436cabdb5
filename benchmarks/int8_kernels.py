#!/usr/bin/env python3
"""Which int8 kernel: one pass over SmolLM2-135M-shaped weights with each candidate.

Random int8 matrices of the runtime's shapes (30 layers × qkv 576→960, o 576→576,
gate_up 576→3072, down 1536→576, and the 576→49152 output head: 134.5M weights), one
product per matrix with M activation rows, median of 5 passes, all in this process:

* float32 BLAS (numpy), weights as float32 (N, K) — the runtime before int8 kernels;
* onnxruntime ``MatMulInteger`` uint8 × int8 and int8 × int8 (weights fed per call);
* numpy int8 → int32 (``np.matmul`` with ``dtype=np.int32``: no BLAS);
* torch ``_int_mm`` on the CPU (if torch is installed; it needs M > 16 on some builds);
* semcodec's native kernel on its panel layout (``native/products.c``), every path this CPU
  runs, one thread (the layout made once, as the cache stores it).

Each result is checked equal to the exact int64 product.

    OPENBLAS_NUM_THREADS=1 python benchmarks/int8_kernels.py --rows 1,2,64
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
from _common import timed

SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576)] * 30 + [(576, 49152)]


def candidates(weights: list[np.ndarray]) -> dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]]:
    """name -> function(activations int8 (M, K) per matrix) -> int products per matrix."""
    import onnxruntime as ort

    from semcodec.models.kernels import _matmul_integer_model

    f32 = [np.ascontiguousarray(w.T, dtype=np.float32) for w in weights]
    colsums = [w.sum(0, dtype=np.int32) for w in weights]  # stored in the cache by the runtime
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    u8s8 = ort.InferenceSession(_matmul_integer_model(), options, providers=["CPUExecutionProvider"])
    s8s8 = ort.InferenceSession(_matmul_integer_model(signed_a=True), options, providers=["CPUExecutionProvider"])
    out: dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]] = {
        "float32 BLAS (numpy)": lambda xs: [x.astype(np.float32) @ w.T for x, w in zip(xs, f32, strict=True)],
        "onnxruntime MatMulInteger u8×s8": lambda xs: [
            u8s8.run(None, {"a": x.view(np.uint8) ^ np.uint8(0x80), "b": w})[0] - 128 * c
            for x, w, c in zip(xs, weights, colsums, strict=True)
        ],
        "onnxruntime MatMulInteger s8×s8": lambda xs: [
            s8s8.run(None, {"a": x, "b": w})[0] for x, w in zip(xs, weights, strict=True)
        ],
        "numpy int8→int32 matmul": lambda xs: [
            np.matmul(x, w, dtype=np.int32) for x, w in zip(xs, weights, strict=True)
        ],
    }
    from semcodec.models.kernels import native_products_module, panel_layout

    native = native_products_module()
    if native is not None:
        native.set_threads(1)
        panels = [panel_layout(w) for w in weights]
        for path in native.vector_paths():
            def run(xs: list[np.ndarray], path: str = path) -> list[np.ndarray]:
                outs = []
                for x, p, c, w in zip(xs, panels, colsums, weights, strict=True):
                    y = np.empty((len(x), w.shape[1]), np.int32)
                    native.matmul(x, p, c, y, path)
                    outs.append(y)
                return outs

            out[f"semcodec native panels, {path}"] = run
    try:
        import torch
    except ImportError:
        return out
    torch.set_num_threads(1)
    tw = [torch.from_numpy(w) for w in weights]
    out["torch._int_mm (CPU)"] = lambda xs: [
        torch._int_mm(torch.from_numpy(x), w).numpy() for x, w in zip(xs, tw, strict=True)
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,2,64", help="activation rows M to measure (default 1,2,64)")
    parser.add_argument("--skip-slow", action="store_true", help="skip numpy int8 matmul (minutes per pass)")
    args = parser.parse_args(argv)
    from semcodec.bench.tables import render

    rng = np.random.default_rng(0)
    weights = [rng.integers(-127, 128, shape, dtype=np.int8) for shape in SHAPES]
    print(f"{sum(w.size for w in weights) / 1e6:.1f}M int8 weights in {len(weights)} matrices\n")
    kernels = candidates(weights)
    if args.skip_slow:
        kernels.pop("numpy int8→int32 matmul")
    rows = []
    for m in [int(r) for r in args.rows.split(",")]:
        xs = [rng.integers(-127, 128, (m, k), dtype=np.int8) for k, _ in SHAPES]
        base = None
        for name, fn in kernels.items():
            try:
                got = fn(xs)
                exact = all(
                    np.array_equal(np.asarray(g, dtype=np.int64), x.astype(np.int64) @ w.astype(np.int64))
                    for g, x, w in zip(got[:3], xs[:3], weights[:3], strict=True)
                )
                seconds = timed(lambda fn=fn, xs=xs: fn(xs), 3 if "numpy int8" in name else 5)
            except Exception as err:  # a kernel that refuses a shape is a result too
                rows.append([f"M={m}", name, f"fails: {str(err)[:50]}", "", ""])
                continue
            base = base or seconds
            rows.append([f"M={m}", name, f"{1e3 * seconds:.1f} ms", f"{seconds / base:.2f}", "yes" if exact else "NO"])
    print(render(["rows", "kernel", "one pass", "/ float32", "exact"], rows, left=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
