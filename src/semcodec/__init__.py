"""semcodec: semantic image coding at micro-bits per pixel.

An image is stored as what it means: a description, arithmetic-coded with a small
language model whose probabilities are computed in exact integer arithmetic, so a
``.sem`` file decodes bit-identically on every machine.

    >>> import semcodec
    >>> data = semcodec.pack("Two dogs play in the snow.", width=512, height=512)
    >>> f = semcodec.unpack(data)
    >>> f.text, f.header.width
    ('Two dogs play in the snow.', 512)
    >>> semcodec.read_header(data).height
    512
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semcodec.codec import MAX_TOKENS, SemFile, information_bits, pack, pack_header, read_header, unpack
    from semcodec.container import FORMAT_VERSION, Header
    from semcodec.errors import (
        SemError,
        SemFormatError,
        SemInputError,
        SemIntegrityError,
        SemLimitError,
        SemModelError,
        SemUnknownModelError,
        SemVersionError,
    )

_HOMES = {
    **dict.fromkeys(("MAX_TOKENS", "SemFile", "information_bits", "pack", "pack_header", "read_header", "unpack"),
                    "semcodec.codec"),
    **dict.fromkeys(("FORMAT_VERSION", "Header"), "semcodec.container"),
    **dict.fromkeys(("SemError", "SemFormatError", "SemInputError", "SemIntegrityError", "SemLimitError",
                     "SemModelError", "SemUnknownModelError", "SemVersionError"), "semcodec.errors"),
}
"""Each public name's module, imported on first use: ``import semcodec.cli`` (the command's
start) stays free of numpy and the codec, so a Ctrl-C in the first milliseconds meets the
command line's handler, not a traceback."""


def __getattr__(name: str) -> Any:
    """A public name, or a submodule (``semcodec.container`` after ``import semcodec``), on first use."""
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"semcodec.{name}") is not None:
        value = importlib.import_module(f"semcodec.{name}")
    else:
        raise AttributeError(f"module 'semcodec' has no attribute {name!r}")
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "MAX_TOKENS",
    "Header",
    "SemError",
    "SemFile",
    "SemFormatError",
    "SemInputError",
    "SemIntegrityError",
    "SemLimitError",
    "SemModelError",
    "SemUnknownModelError",
    "SemVersionError",
    "information_bits",
    "pack",
    "pack_header",
    "read_header",
    "unpack",
]
