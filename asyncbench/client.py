"""AsyncHttpClient: the lab's production async HTTP client, and the engine under every experiment.

One aiohttp session per client, opened in `__aenter__` and closed (awaited) in `__aexit__`.
`fetch()` never raises for a failed request: a failure is a result with an error kind.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp

from asyncbench import __version__

ErrorKind = Literal["timeout", "connect", "http_4xx", "http_5xx", "other"]
ERROR_KINDS: tuple[str, ...] = ("timeout", "connect", "http_4xx", "http_5xx", "other")

_perf = time.perf_counter
_CHUNK = 64 * 1024  # bodies are read (and discarded, in the load engine) this much at a time


class _BodyTooLarge(Exception):
    pass


@dataclass(slots=True)
class FetchResult:
    """The outcome of one request (after any retries).

    `latency_s` runs from the first send (after any wait for the concurrency limit, which is
    `queue_wait_s`) to the moment the last attempt's body was read or it failed, backoff
    included. `sent_at` and `done_at` are `time.perf_counter()` stamps of those two moments.
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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
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


def _error_kind(status: int) -> ErrorKind | None:
    if status < 400:
        return None
    return "http_5xx" if status >= 500 else "http_4xx"


class AsyncHttpClient:
    """An async HTTP client with bounded (or unbounded) concurrency, timeouts and retries.

    >>> async with AsyncHttpClient(max_concurrency=50, timeout=10.0, retries=3) as client:
    ...     result = await client.fetch(url)
    ...     results = await client.fetch_batch([url] * 100)

    - `max_concurrency=None` is unbounded: no semaphore, and a connector with no connection
      limit (aiohttp's default of 100 would silently cap the concurrency trap at 100).
    - Retries only what is worth retrying: timeouts, connection errors, 5xx, and 429 (waiting
      at least its Retry-After); never a plain 4xx. Backoff is exponential with full jitter,
      `uniform(0, min(backoff_cap, backoff_base * 2**n))`. A request holds its concurrency slot
      through its retries, so a struggling server is not handed new work meanwhile.
    - `timeout` bounds the whole request: every attempt, backoff and Retry-After wait. A wait
      that would pass that deadline (or `max_retry_after`) is not made: the last response is
      the result, and `retry_after_refused_s` says which Retry-After was refused.
    - Bodies are read in chunks. `keep_body=False` (the load engine) counts and discards them
      and asks for no compression, so memory does not grow with a response's size; with
      `keep_body=True` a body past `max_body_bytes` fails the request (`other`).
    - One call is what goes on the wire: aiohttp's silent resend of an idempotent request on a
      reused connection is turned off, so every attempt is counted in `attempts`.
    """

    def __init__(
        self,
        max_concurrency: int | None = 100,
        timeout: float = 10.0,
        retries: int = 0,
        *,
        headers: dict[str, str] | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        max_retry_after: float = 60.0,
        keep_body: bool = True,
        max_body_bytes: int = 64 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, not {max_concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retries = retries
        self.headers = {"User-Agent": f"asyncbench/{__version__}", **(headers or {})}
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.keep_body = keep_body
        self.max_body_bytes = max_body_bytes
        self._rng = rng or random.Random()
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncHttpClient:
        connector = aiohttp.TCPConnector(
            limit=self.max_concurrency or 0,  # 0: no limit
            limit_per_host=0,
            ttl_dns_cache=300,
        )
        headers = self.headers if self.keep_body else {"Accept-Encoding": "identity", **self.headers}
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=self.keep_body,
        )
        if hasattr(self._session, "_retry_connection"):
            # Private in aiohttp (no public switch): otherwise an idempotent request that meets a
            # closed keep-alive connection is sent again, unseen, and the server counts two.
            self._session._retry_connection = False
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AsyncHttpClient is not open: use 'async with AsyncHttpClient(...)'")
        return self._session

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> FetchResult:
        """Send one request (with retries); return its result, never raise for a failure."""
        if self._semaphore is None:
            return await self._send(url, method, json, data, headers, 0.0)
        called = _perf()
        async with self._semaphore:
            return await self._send(url, method, json, data, headers, _perf() - called)

    async def fetch_batch(
        self,
        urls: Iterable[str],
        *,
        method: str = "GET",
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[FetchResult]:
        """Fetch every URL concurrently (within `max_concurrency`); every result, in order."""
        return list(
            await asyncio.gather(
                *(
                    self.fetch(u, method=method, json=json, data=data, headers=headers)
                    for u in urls
                )
            )
        )

    async def _send(
        self,
        url: str,
        method: str,
        json: Any,
        data: bytes | str | None,
        headers: dict[str, str] | None,
        queue_wait: float,
    ) -> FetchResult:
        session = self.session
        sent = _perf()
        deadline = sent + self.timeout
        attempt = 0
        refused: float | None = None
        while True:
            attempt += 1
            status: int | None = None
            body: bytes | None = None
            received = 0
            retry_after: float | None = None
            detail: str | None = None
            try:
                async with session.request(
                    method, url, json=json, data=data, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=max(1e-3, deadline - _perf())),
                ) as resp:
                    status = resp.status
                    if self.keep_body:
                        body, received = await self._read_capped(resp)
                    else:
                        async for chunk in resp.content.iter_chunked(_CHUNK):
                            received += len(chunk)
                    if status == 429 or status == 503:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                error = _error_kind(status)
            except TimeoutError:  # aiohttp's timeouts subclass it
                error, detail = "timeout", f"no complete response within {self.timeout:g} s"
            except aiohttp.ClientConnectionError as exc:
                error, detail = "connect", str(exc) or type(exc).__name__
            except _BodyTooLarge as exc:
                error, detail = "other", str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed request is data, not a crash
                error, detail = "other", f"{type(exc).__name__}: {exc}"
            if error is None or attempt > self.retries or not self._retryable(error, status):
                break
            delay = self._rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))
            if retry_after is not None:
                if retry_after > min(self.max_retry_after, deadline - _perf()):
                    refused = retry_after
                    break
                delay = max(delay, retry_after)
            if _perf() + delay >= deadline:
                break  # no time left for another attempt
            await asyncio.sleep(delay)
        done = _perf()
        if error is not None and detail is None and status is not None:
            detail = f"HTTP {status}"
        if refused is not None:
            detail = f"{detail} (Retry-After {refused:g} s is longer than the time left: not retried)"
        return FetchResult(
            ok=error is None,
            status=status,
            latency_s=done - sent,
            attempts=attempt,
            error=error,
            detail=detail,
            queue_wait_s=queue_wait,
            sent_at=sent,
            done_at=done,
            body=body if self.keep_body else None,
            body_bytes=received,
            retry_after_refused_s=refused,
        )

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> tuple[bytes, int]:
        """The body, read in chunks; _BodyTooLarge past `max_body_bytes`."""
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge(f"response body larger than {self.max_body_bytes:,} bytes")
            parts.append(chunk)
        return b"".join(parts), size

    @staticmethod
    def _retryable(error: ErrorKind, status: int | None) -> bool:
        if error == "http_4xx":
            return status == 429
        return error != "other"
