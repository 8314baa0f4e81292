"""The per-request record every engine produces and every statistic reads, and the error kinds,
declared once."""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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

    Three moments, as `time.perf_counter()` stamps: `intended_at`, when the request was meant
    to go (its submission; in an open model, its place in the schedule), `sent_at`, when its
    first attempt was sent (after any wait for the concurrency limit: `queue_wait_s` is
    `sent_at - intended_at`), and `done_at`, when the last attempt's body was read or it failed.
    `latency_s` is `done_at - sent_at`: a new connection's set-up and any backoff count in it.
    `throttled` counts the attempts (retried ones included) that the server turned away to slow
    the client down: a 429, or a 503 with a Retry-After.
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
    intended_at: float = 0.0
    throttled: int = 0  # attempts the server answered 429, or 503 with a Retry-After
    ttfb_s: float | None = None  # the last attempt's request sent → first byte of its response
    peer: str | None = None  # the address the last attempt went to

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when there is none or it is not JSON)."""
        if self.body is None:
            raise ValueError("no body")
        return jsonlib.loads(self.body)


class Sink(Protocol):
    """Where an engine puts what it measured: every request once, by one of the two methods."""

    def add(self, result: FetchResult) -> None:
        """Any request: a failure, a retried one, one measured by a coroutine."""
        ...

    def success(self, sent_at: float, done_at: float, body_bytes: int) -> None:
        """A request that succeeded at its first attempt, with no wait for a slot other than the
        sink knows of: the hot path of a fast engine, which builds no `FetchResult` for it (and
        keeps its time to first byte itself: see `LevelRecorder.note_engine`)."""
        ...


class ScheduledSink(Sink, Protocol):
    """A sink for the open model, where each request has its place in a schedule."""

    def scheduled(self, intended_at: float, sent_at: float, done_at: float, body_bytes: int) -> None:
        """A request that succeeded at its first attempt: meant to leave at `intended_at`, sent
        at `sent_at`, done at `done_at` (the hot path, as `Sink.success`)."""
        ...


def format_statuses(statuses: dict[int, int]) -> str:
    """{503: 120, 429: 4} → '503:120 429:4', most frequent first."""
    return " ".join(f"{code}:{n}" for code, n in sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0])))


def parse_statuses(text: Any) -> dict[int, int]:
    """'503:120 429:4' → {503: 120, 429: 4} (empty for an empty or missing cell)."""
    out: dict[int, int] = {}
    for item in str(text or "").split():
        code, _, n = item.partition(":")
        if code.isdigit() and n.isdigit():
            out[int(code)] = int(n)
    return out
