"""What is retried, how long to wait, and when to stop: one policy for every engine.

Retries only what is worth retrying — timeouts, connection errors, 5xx, and 429 — never a plain
4xx. The wait is exponential backoff with full jitter, `uniform(0, min(cap, base * 2**n))`, or
the server's Retry-After when that is longer. The request's deadline (`--timeout`) bounds it all:
a wait that would pass it is not made, and a Retry-After longer than the time left is refused.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from asyncbench.records import ErrorKind, FetchResult

_perf = time.perf_counter


def parse_retry_after(value: str | bytes | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(slots=True)
class Attempt:
    """What one attempt on the wire gave."""

    status: int | None = None
    error: ErrorKind | None = None
    detail: str | None = None
    retry_after: float | None = None  # seconds, from a 429 or 503
    body: bytes | None = None
    body_bytes: int = 0
    ttfb_s: float | None = None  # request sent → first byte of the response (None: none came)
    peer: str | None = None  # the address the attempt was sent to

    @property
    def throttled(self) -> bool:
        """The server turned this attempt away to slow the client down: a 429, or a 503 that
        said when to come back."""
        return self.status == 429 or (self.status == 503 and self.retry_after is not None)


@dataclass
class RetryPolicy:
    retries: int = 0
    backoff_base: float = 0.05
    backoff_cap: float = 5.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    @staticmethod
    def retryable(error: ErrorKind, status: int | None) -> bool:
        if error == "http_4xx":
            return status == 429
        return error != "other"

    async def run(self, send: Callable[[float], Awaitable[Attempt]], timeout: float,
                  queue_wait: float = 0.0) -> FetchResult:
        """Call `send(time_left)` until an attempt succeeds, cannot be retried, or time is up."""
        sent = _perf()
        deadline = sent + timeout
        attempts = throttled = 0
        refused: float | None = None
        while True:
            attempts += 1
            attempt = await send(max(1e-3, deadline - _perf()))
            throttled += attempt.throttled
            error = attempt.error
            if error is None or attempts > self.retries or not self.retryable(error, attempt.status):
                break
            delay = self.rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** (attempts - 1)))
            if attempt.retry_after is not None:
                if attempt.retry_after > min(self.max_retry_after, deadline - _perf()):
                    refused = attempt.retry_after
                    break
                delay = max(delay, attempt.retry_after)
            if _perf() + delay >= deadline:
                break  # no time left for another attempt
            await asyncio.sleep(delay)
        return result(attempt, attempts, sent, _perf(), refused=refused, queue_wait=queue_wait, throttled=throttled)


def result(attempt: Attempt, attempts: int, sent: float, done: float, refused: float | None = None,
           queue_wait: float = 0.0, throttled: int | None = None) -> FetchResult:
    """The record of a request whose last attempt was `attempt` (`throttled`: how many of its
    attempts were; by default, whether this one was)."""
    error = attempt.error
    detail = attempt.detail
    if error is not None and detail is None and attempt.status is not None:
        detail = f"HTTP {attempt.status}"
    if refused is not None:
        detail = f"{detail} (Retry-After {refused:g} s is longer than the time left: not retried)"
    return FetchResult(
        ok=error is None, status=attempt.status, latency_s=done - sent, attempts=attempts, error=error,
        detail=detail, queue_wait_s=queue_wait, sent_at=sent, done_at=done, body=attempt.body,
        body_bytes=attempt.body_bytes, retry_after_refused_s=refused, intended_at=sent - queue_wait,
        throttled=int(attempt.throttled) if throttled is None else throttled,
        ttfb_s=attempt.ttfb_s, peer=attempt.peer,
    )
