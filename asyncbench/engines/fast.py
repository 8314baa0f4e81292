"""The `fast` engine: an `asyncio.Protocol` per connection and httptools (llhttp, the parser
Node uses), HTTP/1.1 keep-alive, one request in flight per connection, meant for uvloop.

Each worker slot owns one connection: the trap's `level` workers open a connection per request
in flight, the semaphore's `limit` workers keep `limit` connections. The request's bytes are
built once per run; a response is parsed as it arrives and its body counted, never kept. A
connection the server closes (Connection: close, HTTP/1.0, a close-delimited body, an idle
timeout) is opened again by the next request of its slot.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httptools

from asyncbench import __version__
from asyncbench.engines.retry import Attempt, RetryPolicy, parse_retry_after, result
from asyncbench.records import FetchResult, error_kind

_perf = time.perf_counter
_FIRST_LETTERS = frozenset(b"ctr")  # content-length, transfer-encoding, retry-after


def build_request(url: str, method: str, headers: dict[str, str], body: bytes | None) -> bytes:
    """The request's bytes, as every attempt sends them."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    if parts.port and parts.port != default_port:
        host += f":{parts.port}"
    lines = {"host": ("Host", host), "user-agent": ("User-Agent", f"asyncbench/{__version__}"),
             "accept": ("Accept", "*/*"), "accept-encoding": ("Accept-Encoding", "identity")}
    for name, value in headers.items():
        lines[name.lower()] = (name, value)
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines["content-length"] = ("Content-Length", str(len(body or b"")))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.values()) + "\r\n"
    return head.encode("latin-1") + (body or b"")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, parse its response as it arrives, count its
    body, and tell `on_done` (None, or the exception that ended the request) when it is over."""

    __slots__ = ("transport", "parser", "on_done", "status", "body_bytes", "retry_after", "closed",
                 "head", "framed", "started", "keep_alive", "deadline", "sent_at")

    def __init__(self, head: bool) -> None:
        self.head = head  # a response to HEAD has no body, whatever its headers say
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.on_done: Callable[[BaseException | None], None] | None = None  # set while a request is in flight
        self.closed = False
        self.deadline = 0.0
        self.sent_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status: int | None = None
        self.body_bytes = 0
        self.retry_after: bytes | None = None
        self.framed = False  # Content-Length or chunked: the body's end is known
        self.started = False  # some of the response has arrived
        self.keep_alive = False  # read while the message is parsed: llhttp forgets it after

    # --- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_kind(ConnectionError("the server switched protocols"), "other"))
        except httptools.HttpParserError as exc:
            self._fail(_kind(ValueError(f"malformed response: {exc}"), "other"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_done is None:
            return
        if self.status is not None and not self.framed and not self.head:
            self._finish(None)  # a close-delimited body ends with the connection
        elif self.started:
            self._finish(ConnectionError("the connection closed in the middle of the response"))
        else:
            self._finish(ConnectionError(f"the server closed the connection before answering"
                                         f"{': ' + str(exc) if exc else ''}"))

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name[0] | 0x20 not in _FIRST_LETTERS:  # most headers (Server, Date): one test, no copy
            return
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True
        elif lowered == b"retry-after":
            self.retry_after = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # an interim response: the real one follows
            self.status = None
            return
        if self.head or self.status in (204, 304):
            self._complete()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.status is not None:
            self._complete()

    # --- the request
    def _complete(self) -> None:
        if self.on_done is not None:
            self.keep_alive = self.parser.should_keep_alive()
            if not self.keep_alive and self.transport is not None:
                self.transport.close()  # the server will not take another request on it
            self._finish(None)

    def _fail(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.close()
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        done, self.on_done = self.on_done, None
        if done is not None:
            done(exc)

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes, deadline: float, on_done: Callable[[BaseException | None], None]) -> None:
        """Send `request`; `on_done` is called once, when the whole response is in or the request
        failed (the engine's sweeper fails it with TimeoutError once `deadline` has passed)."""
        self._reset()
        if self.head:  # llhttp would wait for the body a HEAD response announces but never sends
            self.parser = httptools.HttpResponseParser(self)
        self.deadline = deadline
        self.on_done = on_done
        self.sent_at = _perf()
        assert self.transport is not None
        self.transport.write(request)

    def outcome(self, exc: BaseException | None, timeout: float) -> Attempt:
        """What the request that just ended gave."""
        if exc is None:
            status = self.status
            assert status is not None
            retry_after = parse_retry_after(self.retry_after) if status in (429, 503) else None
            return Attempt(status=status, error=error_kind(status), retry_after=retry_after,
                           body_bytes=self.body_bytes)
        return _failed(exc, timeout)

    def check_deadline(self, now: float) -> None:
        if self.on_done is not None and now >= self.deadline:
            self._fail(_kind(TimeoutError(), "timeout"))

    def close(self) -> None:
        self.on_done = None
        if self.transport is not None:
            self.transport.close()


def _kind(exc: BaseException, kind: str) -> BaseException:
    exc.kind = kind  # type: ignore[attr-defined]
    return exc


def _failed(exc: BaseException, timeout: float) -> Attempt:
    """The attempt a failure gave, by kind: timeout, other (a malformed answer), else connect."""
    if isinstance(exc, TimeoutError):
        return Attempt(error="timeout", detail=f"no complete response within {timeout:g} s")
    # A failed TLS handshake (ssl.SSLError: an OSError, and a ValueError too) is a connection
    # that could not be made: `connect`, as in the aiohttp engine.
    kind = getattr(exc, "kind", "connect" if isinstance(exc, OSError) else "other")
    return Attempt(error=kind, detail=str(exc) or type(exc).__name__)


class FastEngine:
    """Requests of one spec on `concurrency` slots, a connection per slot."""

    name = "fast"

    def __init__(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 data: bytes | None = None, timeout: float = 10.0, retries: int = 0,
                 concurrency: int = 1, insecure: bool = False) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.timeout = timeout
        self.head = method == "HEAD"
        self.request = build_request(url, method, headers or {}, data)
        self.policy = RetryPolicy(retries)
        self.ssl: ssl.SSLContext | None = None
        if self.https:
            self.ssl = ssl.create_default_context()
            if insecure:
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        self.slots: list[_Connection | None] = [None] * concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None]

    async def __aenter__(self) -> FastEngine:
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._sweeper.cancel()
        for conn in self.slots:
            if conn is not None:
                conn.close()
        self.slots = [None] * len(self.slots)

    async def _sweep(self) -> None:
        """Time out the requests past their deadline. One sweep over the slots every few ms costs
        less than a timer per request; a timeout fires at most one tick late."""
        tick = max(0.002, min(0.05, self.timeout / 20))
        while True:
            await asyncio.sleep(tick)
            now = _perf()
            for conn in self.slots:
                if conn is not None:
                    conn.check_deadline(now)

    async def fetch(self, slot: int) -> FetchResult:
        """One request (with its retries) on the connection of `slot`; never raises."""
        if self.policy.retries:
            return await self.policy.run(lambda time_left: self._attempt(slot, time_left), self.timeout)
        sent = _perf()
        attempt = await self._attempt(slot, self.timeout)
        return result(attempt, 1, sent, _perf())

    async def _attempt(self, slot: int, time_left: float) -> Attempt:
        started = _perf()
        conn = self.slots[slot]
        try:
            if conn is None or not conn.usable():
                conn = self.slots[slot] = await self._connect(time_left)
        except (OSError, TimeoutError) as exc:
            self._drop(slot)
            return _failed(exc, self.timeout)
        assert self._loop is not None
        waiter: asyncio.Future[BaseException | None] = self._loop.create_future()
        conn.send(self.request, started + time_left, waiter.set_result)
        exc = await waiter
        if exc is not None:
            self._drop(slot)
        return conn.outcome(exc, self.timeout)

    async def run(self, requests: int, record: Callable[[FetchResult], None]) -> None:
        """Send `requests` requests over the slots, each result to `record` as it completes.

        A slot starts as a coroutine (connect, retries). Once its connection is open and
        kept alive, and there are no retries to make, the connection drives itself: each
        response, as it is parsed, is recorded and the next request written at once, with no
        coroutine, future or timer per request — the way wrk does it. Anything else (a closed
        connection, an error that drops it) hands the slot back to its coroutine.
        """
        self._left = requests
        await asyncio.gather(*(self._drive(slot, record) for slot in range(len(self.slots))))

    def _take(self) -> bool:
        if self._left > 0:
            self._left -= 1
            return True
        return False

    async def _drive(self, slot: int, record: Callable[[FetchResult], None]) -> None:
        assert self._loop is not None
        while self._take():
            record(await self.fetch(slot))
            conn = self.slots[slot]
            if self.policy.retries or conn is None or not conn.usable() or not self._take():
                continue
            handed_back: asyncio.Future[bool] = self._loop.create_future()

            def on_done(exc: BaseException | None, conn: _Connection = conn,
                        handed_back: asyncio.Future[bool] = handed_back) -> None:
                now = _perf()
                if handed_back.done():  # the run was cancelled meanwhile
                    return
                status = conn.status
                if exc is None and status is not None and status < 400:  # the common case, built directly
                    record(FetchResult(True, status, now - conn.sent_at, 1, None, None, 0.0, conn.sent_at, now,
                                       None, conn.body_bytes))
                else:
                    record(result(conn.outcome(exc, self.timeout), 1, conn.sent_at, now))
                if exc is None and conn.usable() and self._take():
                    conn.send(self.request, now + self.timeout, on_done)
                else:
                    if exc is not None:
                        self._drop(slot)
                    handed_back.set_result(True)

            conn.send(self.request, _perf() + self.timeout, on_done)
            await handed_back

    async def _connect(self, time_left: float) -> _Connection:
        loop = self._loop
        assert loop is not None
        async with asyncio.timeout(time_left):
            _, conn = await loop.create_connection(
                lambda: _Connection(self.head), self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        return conn

    def _drop(self, slot: int) -> None:
        conn = self.slots[slot]
        if conn is not None:
            conn.close()
        self.slots[slot] = None
