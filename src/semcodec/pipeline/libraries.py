"""The model libraries (transformers, diffusers), imported with their own chatter quieted.

transformers and diffusers log warnings meant for their developers on a logger of their
own that writes to stderr: with torchvision missing, merely importing diffusers prints
three ``[transformers] `CLIPImageProcessor` requires torchvision ...`` lines, before
semcodec's own progress or error line; and loading a model draws their tqdm bars
("Loading pipeline components...", "Loading weights") even under ``-q``. A semcodec user
cannot act on either, so before either library is imported its logging is set to errors
only and its loading bars are turned off — unless the user asked for a level with
``TRANSFORMERS_VERBOSITY`` / ``DIFFUSERS_VERBOSITY``, which then leaves that library as it
is. huggingface_hub's download bars (``SEMCODEC_HF_DOWNLOAD=1``) are kept as they were.
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
import warnings
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
        _without_bars(logging_module)


def _without_bars(logging_module: ModuleType) -> None:
    """Turn off a library's own tqdm bars; transformers' switch also turns off huggingface_hub's
    download bars, which are turned back on if they were on."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, enable_progress_bars

    hub_bars_were_off = are_progress_bars_disabled()
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 makes the hub refuse, with a warning
        warnings.filterwarnings("ignore", message="Cannot disable progress bars")
        logging_module.disable_progress_bar()
    if not hub_bars_were_off:
        enable_progress_bars()


def import_quietly(module: str) -> ModuleType:
    """``importlib.import_module(module)`` after :func:`quiet_libraries` (ImportError propagates)."""
    quiet_libraries()
    return importlib.import_module(module)
