"""Every HTTP request of a backend bounded: a deadline for the whole request, a cap on what it receives.

httpx (``httpx``/``httpcore``, or ``httpx2``/``httpcore2`` for newer ``openai`` releases)
applies its timeouts to each socket operation: a server that sends one byte every two
seconds never trips a five-second read timeout, and a body without end is read into
memory until it runs out. Both are closed at the one place every byte passes: the
*network backend* of the connection pools. Its streams clamp each connect, read and write
to the time left before the request's deadline and count the bytes received (status
line, headers and body alike) against the cap.

The bounds are per request and per thread: :func:`bounded` opens them around one call
(the client is synchronous, so the reads happen in the calling thread), and a thread with
no bounds open (or another client) is not affected.

    >>> with bounded(timeout=5.0, max_bytes=1 << 20) as budget:
    ...     budget.max_bytes
    1048576
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_RESPONSE_BYTES = 64 << 20
"""64 MiB: a base64 PNG at 1792×1024 is under 8 MiB; a reply beyond this is not a reply."""


class ResponseTooLargeError(Exception):
    """A server sent more than the request's cap (headers and body together)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the reply exceeded {limit} bytes")
        self.limit = limit


@dataclass
class Budget:
    """What one request may still take: time until ``deadline`` (monotonic) and ``max_bytes`` received."""

    deadline: float
    max_bytes: int
    received: int = field(default=0)

    def left(self) -> float:
        return self.deadline - time.monotonic()


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("semcodec_http_budget", default=None)


@contextlib.contextmanager
def bounded(timeout: float, max_bytes: int) -> Iterator[Budget]:
    """Bound every request this thread makes inside the block to ``timeout`` seconds in all
    (from the block's start) and ``max_bytes`` received per request."""
    budget = Budget(time.monotonic() + timeout, max_bytes)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def find_cause(err: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """``err`` or the first exception of type ``kind`` in its ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _timeout(inner: float | None, budget: Budget | None, expired: type[Exception]) -> float | None:
    """``inner`` (httpx's per-operation timeout) clamped to the time the request has left."""
    if budget is None:
        return inner
    left = budget.left()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if inner is None else min(inner, left)


class _Stream:
    """A network stream whose operations honour the calling thread's :class:`Budget`."""

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner = inner
        self._core = core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = _BUDGET.get()
        data: bytes = self._inner.read(max_bytes, _timeout(timeout, budget, self._core.ReadTimeout))
        if budget is not None:
            budget.received += len(data)
            if budget.received > budget.max_bytes:
                raise ResponseTooLargeError(budget.max_bytes)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _timeout(timeout, _BUDGET.get(), self._core.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        timeout = _timeout(timeout, _BUDGET.get(), self._core.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._core)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend:
    """A network backend whose streams are :class:`_Stream`."""

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner = inner
        self._core = core

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> _Stream:
        timeout = _timeout(timeout, _BUDGET.get(), self._core.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options), self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> _Stream:
        timeout = _timeout(timeout, _BUDGET.get(), self._core.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options), self._core)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bound_client(client: Any) -> Any:
    """Route every transport of the httpx ``client`` (its own and the proxy mounts) through
    bounded streams; returns ``client``.

    Raises RuntimeError when the installed httpx keeps its pools elsewhere: better no client
    than one whose requests have no bounds.
    """
    mounts = [t for t in getattr(client, "_mounts", {}).values() if t is not None]  # None: no proxy for a host
    for transport in (getattr(client, "_transport", None), *mounts):
        pool: Any = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            raise RuntimeError(f"cannot bound requests made through {type(transport).__name__}")
        if not isinstance(backend, _Backend):
            core = importlib.import_module(type(pool).__module__.split(".")[0])
            pool._network_backend = _Backend(backend, core)
    return client
