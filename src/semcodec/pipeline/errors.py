"""Errors of the image pipeline; all derive from :class:`semcodec.SemError`.

A backend error is always one line and never contains a secret: messages pass through
:func:`redact` before they are raised, because HTTP error bodies often echo the request
(including, for some servers, the API key), and URLs (``OPENAI_BASE_URL``) may carry a
``user:password@`` or an ``?api-key=``.
"""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import unquote, urlsplit

from semcodec.display import redact_urls
from semcodec.errors import SemError

_KEY_PATTERN = re.compile(r"\b(sk|sess|rk)-[A-Za-z0-9_\-*]{6,}")
_AUTH_PATTERN = re.compile(r"\b(Basic|Bearer|Digest|Token|Negotiate)(\s+|%20|\+)[A-Za-z0-9+/=._~\-]{4,}", re.IGNORECASE)


class BackendError(SemError):
    """A model backend failed for good (after retries): an API error, a malformed reply, a crash."""


class BackendUnavailableError(BackendError):
    """A backend cannot be used at all here: package missing, no API key, weights not on disk."""


def redact(message: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Make ``message`` one line and strip anything that looks like an API key or credentials.

    Masked: URL userinfo and secret query values, ``Basic``/``Bearer`` credentials (an
    echoed ``Authorization`` header), the given ``secrets``, ``OPENAI_API_KEY``, the user
    and password of ``OPENAI_BASE_URL``, each also in its base64 forms (a ``Basic`` header
    is base64 of ``user:password``), and ``sk-…`` keys.

    >>> redact("bad key sk-abc123456789\\nmore", ("abc123456789",))
    'bad key sk-*** more'
    >>> redact("cannot reach https://me:pw@llm.local/v1?api-key=k")
    'cannot reach https://***@llm.local/v1?api-key=***'
    >>> redact("echo: Authorization: Basic bWU6cHc=")
    'echo: Authorization: Basic ***'
    >>> redact("logged bWU6cHc= here", ("me:pw",))
    'logged *** here'
    """
    message = redact_urls(message)
    message = _AUTH_PATTERN.sub(lambda m: f"{m.group(1)} ***", message)
    for secret in sorted(_secret_forms((*secrets, *_environment_secrets())), key=len, reverse=True):
        message = message.replace(secret, "***")
    message = _KEY_PATTERN.sub(lambda m: f"{m.group(1)}-***", message)
    return " ".join(message.split())


def _environment_secrets() -> list[str | None]:
    """``OPENAI_API_KEY`` and the user, password and ``user:password`` of ``OPENAI_BASE_URL``."""
    found: list[str | None] = [os.environ.get("OPENAI_API_KEY")]
    url = os.environ.get("OPENAI_BASE_URL") or ""
    if "@" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return found
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        found += [user, password, f"{user}:{password}", f"{parts.username}:{parts.password}"]
    return found


def _secret_forms(secrets: tuple[str | None, ...]) -> set[str]:
    """Each secret (of 4+ characters) and the parts of its base64 (standard and URL-safe) that
    depend on it alone, at each of the three alignments it can have inside a longer base64 text."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        raw = secret.encode("utf-8", "surrogatepass")
        whole = base64.b64encode(raw).decode("ascii")
        forms.update((secret, whole, whole.replace("+", "-").replace("/", "_")))
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
            first, stop = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
            core = encoded[first:stop]
            if len(core) >= 6:
                forms.update((core, core.replace("+", "-").replace("/", "_")))
    return forms
