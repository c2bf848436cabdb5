"""Every error that reading, validating or decoding a ``.sem`` file can raise.

All of them derive from :class:`SemError`, so a caller needs one ``except``::

    >>> import semcodec
    >>> try:
    ...     semcodec.read_header(b"not a sem file")
    ... except semcodec.SemError as err:
    ...     print(type(err).__name__)
    SemFormatError
"""

from __future__ import annotations


class SemError(Exception):
    """Base class of every semcodec error a user can meet."""


class SemFormatError(SemError):
    """The bytes are not a well-formed ``.sem`` file (bad magic, truncated, trailing junk)."""


class SemVersionError(SemError):
    """The file declares a format version this reader does not implement."""


class SemUnknownModelError(SemError):
    """A model or generator id is not in this build's registry."""


class SemLimitError(SemError):
    """A declared size or a decoded length exceeds a reader limit."""


class SemIntegrityError(SemError):
    """The payload decoded, but the integrity check or the canonical-form check failed."""


class SemInputError(SemError):
    """The text (or option) given to the encoder cannot be coded losslessly."""


class SemModelError(SemError):
    """The model weights are missing, corrupt, or could not be fetched."""
