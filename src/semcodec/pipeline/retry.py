"""Retrying a flaky call with capped exponential backoff and jitter.

Kept apart from any client library so the policy is the same for every remote backend
and can be tested with a fake clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        retries: extra attempts after the first (0 = try once).
        base_delay: the first wait in seconds; attempt ``n`` waits ``base_delay * 2**n``.
        max_delay: cap on one wait (also caps a server's ``Retry-After``).
    """

    retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        A server's own hint (``Retry-After``) wins when it is given, within the cap.
        Jitter (±25 %) keeps a batch of workers from retrying in lockstep.
        """
        if hint is not None and hint >= 0:
            return min(hint, self.max_delay)
        raw = self.base_delay * 2.0**attempt
        return min(self.max_delay, raw * random.uniform(0.75, 1.25))


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BaseException], bool],
    hint: Callable[[BaseException], float | None] = lambda _err: None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error occurs, or retries run out.

    The last error propagates unchanged; callers turn it into a one-line message.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if attempt >= policy.retries or not retryable(err):
                raise
            wait = policy.delay(attempt, hint(err))
            if on_retry is not None:
                on_retry(attempt + 1, err, wait)
            sleep(wait)
            attempt += 1
