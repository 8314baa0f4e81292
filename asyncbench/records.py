"""The per-request record every engine produces and every statistic reads, and the error kinds,
declared once."""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from typing import Any, Literal

ErrorKind = Literal["timeout", "connect", "http_4xx", "http_5xx", "other"]
ERROR_KINDS: tuple[str, ...] = ("timeout", "connect", "http_4xx", "http_5xx", "other")


def error_kind(status: int) -> ErrorKind | None:
    """The error kind of an HTTP status: None below 400 (a redirect is an answer, not a failure)."""
    if status < 400:
        return None
    return "http_5xx" if status >= 500 else "http_4xx"


@dataclass(slots=True)
class FetchResult:
    """The outcome of one request (after any retries).

    `latency_s` runs from the first send (after any wait for the concurrency limit, which is
    `queue_wait_s`; a new connection's set-up counts as part of the send) to the moment the last
    attempt's body was read or it failed, backoff included. `sent_at` and `done_at` are
    `time.perf_counter()` stamps of those two moments.
    """

    ok: bool
    status: int | None
    latency_s: float
    attempts: int
    error: ErrorKind | None
    detail: str | None = None
    queue_wait_s: float = 0.0
    sent_at: float = 0.0
    done_at: float = 0.0
    body: bytes | None = None
    body_bytes: int = 0  # body bytes of the last attempt, as received (compressed if it was)
    retry_after_refused_s: float | None = None  # a Retry-After not waited for: too long

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when there is none or it is not JSON)."""
        if self.body is None:
            raise ValueError("no body")
        return jsonlib.loads(self.body)
