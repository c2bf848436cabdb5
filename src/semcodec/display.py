"""What may be shown to a person: text with control characters escaped, URLs without credentials.

Text that came from a file or a remote model (a decoded description, a file name, an
error body) can hold terminal escape sequences (``ESC]0;title BEL`` sets a window title,
``ESC[2J`` clears the screen) or bidirectional overrides; URLs in messages can carry a
``user:password@`` or an ``?api-key=``. Every line semcodec prints about such things goes
through these two helpers, in the library (progress) and the command line alike.

    >>> printable("A cat\\x1b]0;owned\\x07 on a mat\\u202e.")
    'A cat\\\\x1b]0;owned\\\\x07 on a mat\\\\u202e.'
    >>> redact_urls("cannot reach https://bob:hunter2@api.example.com/v1?api-key=abc&x=1")
    'cannot reach https://***@api.example.com/v1?api-key=***&x=1'
"""

from __future__ import annotations

import re

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#@]*@")
_SECRET_PARAM = re.compile(
    r"([?&;](?:api[-_]?key|key|token|access[-_]?token|auth|authorization|secret|password|passwd|pwd|sig|signature|"
    r"code|session|sessionid|x-api-key)=)[^&;#\s]*",
    re.IGNORECASE,
)


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, format characters) escaped.

    >>> printable("tab\\there, é and ü stay")
    'tab\\\\there, é and ü stay'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def redact_url(url: str) -> str:
    """One URL without its ``user:password@`` part and with secret-looking query values masked.

    >>> redact_url("http://localhost:8000/v1")
    'http://localhost:8000/v1'
    >>> redact_url("https://u:p@h/x?token=t0k&key=k&q=1")
    'https://***@h/x?token=***&key=***&q=1'
    """
    url = _USERINFO.sub(r"\1***@", url)
    return _SECRET_PARAM.sub(r"\1***", url)


def redact_urls(text: str) -> str:
    """Every URL inside ``text`` passed through :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
