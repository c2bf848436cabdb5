"""The model libraries (transformers, diffusers), imported with their own chatter quieted.

transformers and diffusers log warnings meant for their developers on a logger of their
own that writes to stderr: with torchvision missing, merely importing diffusers prints
three ``[transformers] `CLIPImageProcessor` requires torchvision ...`` lines, before
semcodec's own progress or error line. A semcodec user cannot act on them, so before
either library is imported its logging is set to errors only — unless the user asked
for a level with ``TRANSFORMERS_VERBOSITY`` / ``DIFFUSERS_VERBOSITY``, which then wins.
semcodec's own messages never go through these loggers (progress and errors are
written by :mod:`semcodec.pipeline.progress` and the command line), so nothing of ours
is hidden. It is done once per process, on the first import through here, so a level a
program sets afterwards stands. Importing this module imports neither library.

    >>> quiet_libraries()  # a no-op where the libraries are not installed
    >>> math = import_quietly("math")
    >>> math.isqrt(10)
    3
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

QUIETED: dict[str, str] = {"transformers": "TRANSFORMERS_VERBOSITY", "diffusers": "DIFFUSERS_VERBOSITY"}
"""Library → the environment variable by which a user sets its log level (which we then leave alone).
transformers comes first: importing diffusers imports transformers and logs through it."""


_quieted = False


def quiet_libraries() -> None:
    """Set transformers' and diffusers' own loggers to errors only (each that is installed), once."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for library, variable in QUIETED.items():
        if os.environ.get(variable):
            continue  # the user chose a level
        try:  # the logging submodules import neither torch nor the models
            logging_module = importlib.import_module(f"{library}.utils.logging")
        except ImportError:
            continue
        logging_module.set_verbosity_error()


def import_quietly(module: str) -> ModuleType:
    """``importlib.import_module(module)`` after :func:`quiet_libraries` (ImportError propagates)."""
    quiet_libraries()
    return importlib.import_module(module)
