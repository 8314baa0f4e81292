"""AsyncHttpClient: the lab's production async HTTP client, and the engine under every experiment.

One aiohttp session per client, opened in `__aenter__` and closed (awaited) in `__aexit__`.
`fetch()` never raises for a failed request: a failure is a result with an error kind.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc

from asyncbench.engines.retry import Attempt, RetryPolicy, parse_retry_after
from asyncbench.limiters import Gate, Limiter
from asyncbench.records import ERROR_KINDS, ErrorKind, FetchResult, error_kind
from asyncbench.tls import describe_failure
from asyncbench.version import __version__

__all__ = ["ERROR_KINDS", "AsyncHttpClient", "ErrorKind", "FetchResult", "parse_retry_after"]

_perf = time.perf_counter

_CHUNK = 64 * 1024  # bodies are read (and discarded, in the load engine) this much at a time
# A response's head may take this much, a line of it as much (the fast engine's bound on the
# whole head): an answer whose headers never end fails (`other`) instead of holding memory.
MAX_HEAD_BYTES = 64 * 1024


class _BodyTooLarge(Exception):
    pass


class _Routes(aiohttp.abc.AbstractResolver):
    """A resolver that answers a run's route: `routes` maps the (host, port) a URL names to the
    (address, port) connections go to — each new connection to the next in turn (round-robin,
    as the run resolved them once); any other host goes to the system's resolver."""

    def __init__(self, routes: Mapping[tuple[str, int], Sequence[tuple[str, int]]]) -> None:
        self._routes = {key: list(targets) for key, targets in routes.items()}
        self._turn = 0
        self._system = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        targets = self._routes.get((host.lower(), port))
        if not targets:
            return await self._system.resolve(host, port, family)  # type: ignore[return-value]
        i = self._turn % len(targets)
        self._turn += 1
        return [{"hostname": host, "host": address, "port": to_port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for address, to_port in targets[i:] + targets[:i]]

    async def close(self) -> None:
        await self._system.close()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """A 429's or 503's wait: `retry-after-ms` (OpenAI's, Azure's) when it parses, else
    `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if 0 <= value < 86_400:
                return value
        except ValueError:
            pass
    return parse_retry_after(headers.get("Retry-After"))


def _connect_detail(exc: BaseException, url: str) -> str:
    """aiohttp's words for a failed connection, without its "ssl:default" (what it would have
    done for TLS) on a plain http:// URL, where it only puzzles."""
    detail = str(exc) or type(exc).__name__
    if url.startswith("http://"):
        detail = re.sub(r" ssl:(?:default|None|False|True|<[^>]*>)", "", detail)
    return detail


class AsyncHttpClient:
    """An async HTTP client with bounded (or unbounded) concurrency, timeouts and retries.

    >>> async with AsyncHttpClient(max_concurrency=50, timeout=10.0, retries=3) as client:
    ...     result = await client.fetch(url)
    ...     results = await client.fetch_batch([url] * 100)

    - `max_concurrency=None` is unbounded: no semaphore, and a connector with no connection
      limit (aiohttp's default of 100 would silently cap the concurrency trap at 100).
    - `limiter=` replaces `max_concurrency` with a limit that may move: a number (fixed), or a
      `Limiter` (`AIMD`, `Gradient` from `asyncbench.limiters`) told of every attempt — its
      round trip, and whether the server pushed back (429, 503, a timeout, a refused
      connection) — that sets how many requests may be out at once.
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
        verify_tls: bool = True,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
        routes: Mapping[tuple[str, int], Sequence[tuple[str, int]]] | None = None,
        limiter: int | Limiter | None = None,
        on_response: Callable[[int, Mapping[str, str]], None] | None = None,
    ) -> None:
        if isinstance(limiter, int) and not isinstance(limiter, bool):
            max_concurrency, limiter = limiter, None
        elif limiter is not None:
            if not isinstance(limiter, Limiter):
                raise TypeError(f"limiter must be a number or a Limiter (AIMD, Gradient), not {limiter!r}")
            max_concurrency = limiter.max_limit
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, not {max_concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.headers = {"User-Agent": f"asyncbench/{__version__}", **(headers or {})}
        self.keep_body = keep_body
        self.max_body_bytes = max_body_bytes
        self.verify_tls = verify_tls
        # TLS as the run wants it (a private CA, a client certificate); else aiohttp's default
        # check, or none with verify_tls=False.
        self.ssl_context = ssl_context
        self.routes = routes
        # The retry settings live in the policy alone (shared with the fast engine).
        self.policy = RetryPolicy(retries, backoff_base, backoff_cap, max_retry_after, rng or random.Random())
        self.limiter = limiter
        self.on_response = on_response  # told of every attempt's status and headers (a rate limit's, say)
        self._gate = Gate(limiter) if limiter is not None else None
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency and limiter is None else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncHttpClient:
        routed = self.routes is not None
        connector = aiohttp.TCPConnector(
            limit=self.max_concurrency or 0,  # 0: no limit
            limit_per_host=0,
            ttl_dns_cache=300,
            # The route's resolver is asked for every new connection, to spread them.
            use_dns_cache=not routed,
            resolver=_Routes(self.routes) if routed else None,
            ssl=self.ssl_context if self.ssl_context is not None else self.verify_tls,
        )
        headers = self.headers if self.keep_body else {"Accept-Encoding": "identity", **self.headers}
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=self.keep_body,
            max_line_size=MAX_HEAD_BYTES,
            max_field_size=MAX_HEAD_BYTES,
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
    def retries(self) -> int:
        return self.policy.retries

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
        before: Callable[[], Awaitable[Any]] | None = None,
    ) -> FetchResult:
        """Send one request (with retries); return its result, never raise for a failure.
        `before` is awaited once the request holds its concurrency slot, just before it is sent
        (a rate budget waited for there is spent when the request goes, not long before)."""
        if self._gate is not None or self._semaphore is not None:
            called = _perf()
            async with self._gate if self._gate is not None else self._semaphore:  # type: ignore[union-attr]
                if before is not None:
                    await before()
                return await self._send(url, method, json, data, headers, _perf() - called)
        if before is not None:
            await before()
        return await self._send(url, method, json, data, headers, 0.0)

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

        async def attempt(time_left: float) -> Attempt:
            out = Attempt()
            asked = _perf()
            try:
                async with session.request(
                    method, url, json=json, data=data, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=time_left),
                ) as resp:
                    out.status = resp.status
                    # The head is in: what aiohttp lets one see of the first byte (a new connection's
                    # set-up counts in it: aiohttp does not say when it was made).
                    out.ttfb_s = _perf() - asked
                    out.peer = _peer(resp)
                    if self.keep_body:
                        out.body, out.body_bytes = await self._read_capped(resp)
                    else:
                        async for chunk in resp.content.iter_chunked(_CHUNK):
                            out.body_bytes += len(chunk)
                    if resp.status in (429, 503):
                        out.retry_after = _retry_after(resp.headers)
                    if self.on_response is not None:
                        self.on_response(resp.status, resp.headers)
                out.error = error_kind(resp.status)
            except aiohttp.ClientConnectorCertificateError as exc:
                out.error, out.detail = "connect", describe_failure(exc, urlsplit(url).hostname or url) or str(exc)
            except TimeoutError:  # aiohttp's timeouts subclass it
                out.error, out.detail = "timeout", f"no complete response within {self.timeout:g} s"
            except aiohttp.ClientConnectionError as exc:
                out.error, out.detail = "connect", _connect_detail(exc, url)
            except _BodyTooLarge as exc:
                out.error, out.detail = "other", str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed request is data, not a crash
                out.error, out.detail = "other", f"{type(exc).__name__}: {exc}"
            if self._gate is not None:
                self._gate.done(_perf() - asked, out.status in (429, 503) or out.error in ("timeout", "connect"))
            return out

        return await self.policy.run(attempt, self.timeout, queue_wait)

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


def _peer(resp: aiohttp.ClientResponse) -> str | None:
    """The address a response came from."""
    connection = resp.connection
    transport = connection.transport if connection is not None else None
    if transport is None:
        # A small body is read with the head, and aiohttp hands the connection back to its pool
        # before the caller sees the response; the response keeps the connection's protocol.
        protocol = getattr(resp, "_protocol", None)
        transport = getattr(protocol, "transport", None)
    peername = transport.get_extra_info("peername") if transport is not None else None
    return str(peername[0]) if peername else None
