"""Build hook for the optional native kernels; everything else is in pyproject.toml.

Both extensions are optional: where they cannot be compiled (no C compiler) the install goes
on without them and the numpy/onnxruntime kernels are used. Their sources live in
``src/semcodec/models/native/`` (one file per kernel family, ``bounds.h`` for the shared bounds):

* ``semcodec.models._prefix`` (``prefix.c``): exact attention over a shared prefix
  (``semcodec.models.attention``);
* ``semcodec.models._products`` (``products.c``, ``panels.c``, ``step.c``, ``own_attention.c``,
  ``frequencies.c``): exact int8 x int8 -> int32 weight products for the decode step
  (``semcodec.models.kernels.NativeProducts``; the kernels in ``panels.c``), on a small pthread
  pool, the whole decode step
  around them (``ExactLM``: one row, or many in lockstep), attention over a text's own keys, and
  the frequency tables; compiled without floating-point contraction (``-ffp-contract=off``: no FMA may fuse the step's IEEE operations).

Never build them with ``-ffast-math`` (``bounds.h`` refuses to compile under it).
"""

from setuptools import Extension, setup

NATIVE = "src/semcodec/models/native"

setup(ext_modules=[
    Extension("semcodec.models._prefix", [f"{NATIVE}/prefix.c"], depends=[f"{NATIVE}/bounds.h"], optional=True),
    Extension("semcodec.models._products",
              [f"{NATIVE}/{c}" for c in ("products.c", "panels.c", "step.c", "own_attention.c", "frequencies.c")],
              depends=[f"{NATIVE}/{h}" for h in ("bounds.h", "buffers.h", "panels.h", "products.h", "step.h",
                                                 "own_attention.h", "frequencies.h")],
              extra_compile_args=["-ffp-contract=off"], extra_link_args=["-pthread"], optional=True),
])
