"""Errors of the image pipeline; all derive from :class:`semcodec.SemError`.

A backend error is always one line and never contains a secret: messages pass through
:func:`redact` before they are raised, because HTTP error bodies often echo the request
(including, for some servers, the API key), and URLs (``OPENAI_BASE_URL``) may carry a
``user:password@`` or an ``?api-key=``.
"""

from __future__ import annotations

import os
import re

from semcodec.display import redact_urls
from semcodec.errors import SemError

_KEY_PATTERN = re.compile(r"\b(sk|sess|rk)-[A-Za-z0-9_\-*]{6,}")


class BackendError(SemError):
    """A model backend failed for good (after retries): an API error, a malformed reply, a crash."""


class BackendUnavailableError(BackendError):
    """A backend cannot be used at all here: package missing, no API key, weights not on disk."""


def redact(message: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Make ``message`` one line and strip anything that looks like an API key or URL credentials.

    >>> redact("bad key sk-abc123456789\\nmore", ("abc123456789",))
    'bad key sk-*** more'
    >>> redact("cannot reach https://me:pw@llm.local/v1?api-key=k")
    'cannot reach https://***@llm.local/v1?api-key=***'
    """
    message = redact_urls(message)
    for secret in (*secrets, os.environ.get("OPENAI_API_KEY")):
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    message = _KEY_PATTERN.sub(lambda m: f"{m.group(1)}-***", message)
    return " ".join(message.split())
