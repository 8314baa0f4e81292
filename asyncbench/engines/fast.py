"""The `fast` engine: an `asyncio.Protocol` per connection and httptools (llhttp, the parser
Node uses), HTTP/1.1 keep-alive, one request in flight per connection, meant for uvloop.

Each worker slot owns one connection: the trap's `level` workers open a connection per request
in flight, the semaphore's `limit` workers keep `limit` connections. The request's bytes are
built once per run; a response is parsed as it arrives and its body counted, never kept. A
connection the server closes (Connection: close, HTTP/1.0, a close-delimited body, an idle
timeout) is opened again by the next request of its slot.

New connections go to the run's addresses in turn (resolved once, for the run). Over TLS the
engine does the handshake itself, over memory buffers (`_Tls`): so that it can time it apart
from the TCP connect, and resume the session of an earlier connection (asyncio's own TLS
cannot be handed a session). Where the time went is counted per round: connections opened,
their TCP and TLS set-up, and each request's time to first byte.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools

from asyncbench.engines.retry import Attempt, RetryPolicy, parse_retry_after, result
from asyncbench.metrics import LatencyHistogram
from asyncbench.records import FetchResult, ScheduledSink, Sink, error_kind
from asyncbench.tls import TlsFacts, TlsSettings
from asyncbench.version import __version__

_perf = time.perf_counter

# The most a response's head (status line and headers) may take, as nginx's large header
# buffers and the aiohttp engine (engines/aiohttp.py) allow: past it, an answer whose headers
# never end would hold memory without bound.
MAX_HEAD_BYTES = 64 * 1024
# Open files kept for asyncbench itself (results, charts, its pipes and libraries) under the
# open-file limit: connections past the rest fail as `connect`, not the run's own files.
RESERVED_FDS = 64


class _Sockets:
    """How many of this process's connections are open, against how many it may have."""

    open = 0

    @staticmethod
    def budget() -> int:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (1 << 30) if soft == resource.RLIM_INFINITY else max(1, soft - RESERVED_FDS)


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


class _Head:
    """What a response's head said, parsed again from its bytes for the rare answer that needs
    it (a close-delimited body, a Retry-After)."""

    def __init__(self, data: bytes) -> None:
        self.fields: dict[bytes, bytes] = {}
        self.status: int | None = None  # set once a final (not 1xx) head is complete
        self._parser = httptools.HttpResponseParser(self)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            pass  # what was parsed before the error is what the request saw

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields[name.lower()] = value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status < 200:
            self.status = status

    @property
    def framed(self) -> bool:
        """Whether the body's end is known (Content-Length, chunked) rather than the close."""
        return b"content-length" in self.fields or b"chunked" in self.fields.get(b"transfer-encoding", b"").lower()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, parse its response as it arrives, count its
    body, and tell `on_done` (None, or the exception that ended the request) when it is over.

    The parser calls back only per body piece and at the end of the message: per-header or
    end-of-head callbacks would cost a tenth of the client's time. The rare answers that need
    a header (a close-delimited body, a Retry-After) parse it from the bytes of the head, kept
    until the body starts.
    """

    __slots__ = ("transport", "parser", "on_done", "status", "body_bytes", "closed", "keep_alive",
                 "deadline", "sent_at", "chunks", "collecting", "head_bytes", "finished", "unsolicited",
                 "first_byte", "requests", "address", "retired", "made_at")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.on_done: Callable[[BaseException | None], None] | None = None  # set while a request is in flight
        self.closed = False
        self.deadline = 0.0
        self.sent_at = 0.0
        self.chunks: list[bytes] = []  # what arrived of the response until its body started
        self.status: int | None = None  # set when the response is complete
        self.body_bytes = 0
        self.keep_alive = False
        self.collecting = False
        self.head_bytes = 0  # bytes received while the head was not yet over
        # A response that ended in this piece of data: told once the whole piece is parsed, so
        # that bytes after its end (a body longer than its Content-Length) fail it instead.
        self.finished: Callable[[BaseException | None], None] | None = None
        self.unsolicited = False  # a response came that no request asked for
        self.first_byte = 0.0  # when the first byte of the response in flight arrived
        self.requests = 0  # requests sent on this connection
        self.address = ""  # the address it is connected to
        self.retired = False  # its requests are counted into the engine's per-address tally
        self.made_at = 0.0  # when its TCP connection was made (before any TLS handshake)

    # --- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if not self.made_at:
            self.made_at = _perf()

    def data_received(self, data: bytes) -> None:
        if self.collecting:
            if not self.head_bytes:
                self.first_byte = _perf()
            self.chunks.append(data)
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_kind(ConnectionError("the server switched protocols"), "other"))
            return
        except httptools.HttpParserError as exc:
            if self.finished is not None:  # the response was over, and more came after it
                self._out_of_step("bytes after the end of the response (a body longer than its Content-Length?)")
            else:
                self._fail(_kind(ValueError(f"malformed response: {exc}"), "other"))
            return
        if self.unsolicited:
            self._out_of_step("a response no request asked for")
            return
        finished = self.finished
        if finished is not None:
            self.finished = None
            finished(None)
        elif self.collecting and self.on_done is not None and self.head_bytes > MAX_HEAD_BYTES:
            self._fail(_kind(ValueError(f"the response's head is over {MAX_HEAD_BYTES // 1024} KiB "
                                        "(its headers never end?)"), "other"))

    def _out_of_step(self, what: str) -> None:
        """The stream no longer lines up with the requests: fail the response it carried (or
        the request in flight) and close the connection, so the next request starts clean."""
        done = self.finished or self.on_done
        self.finished = self.on_done = None
        self.unsolicited = False
        if self.transport is not None:
            self.transport.close()
        if done is not None:
            done(_kind(ValueError(f"the connection is out of step: {what}"), "other"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        _Sockets.open -= 1
        if self.on_done is None:
            return
        head = _Head(b"".join(self.chunks))
        if head.status is not None and not head.framed and not isinstance(self, _HeadConnection):
            self.status = head.status
            self._finish(None)  # a close-delimited body ends with the connection
        elif self.chunks:
            self._finish(ConnectionError("the connection closed in the middle of the response"))
        else:
            self._finish(ConnectionError(f"the server closed the connection before answering"
                                         f"{': ' + str(exc) if exc else ''}"))

    # --- httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.collecting = False

    def on_message_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim response: the real one follows
            return
        done = self.on_done
        if done is None:
            self.unsolicited = True
            return
        self.status = status
        self.on_done = None
        self.keep_alive = parser.should_keep_alive()
        if not self.keep_alive and self.transport is not None:
            self.transport.close()  # the server will not take another request on it
        self.finished = done  # told when the data it came in is all parsed (data_received)

    # --- the request
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

    def send(self, request: bytes, timeout: float, on_done: Callable[[BaseException | None], None]) -> None:
        """Send `request`; `on_done` is called once, when the whole response is in or the request
        failed (the engine's sweeper fails it with TimeoutError once `timeout` has passed).
        The engine's steady state does the same inline."""
        self.status = None
        self.body_bytes = 0
        self.collecting = True
        self.head_bytes = 0
        self.requests += 1
        self.chunks.clear()
        self.on_done = on_done
        self.sent_at = now = _perf()
        self.deadline = now + timeout
        self.transport.write(request)  # type: ignore[union-attr]

    def outcome(self, exc: BaseException | None, timeout: float) -> Attempt:
        """What the request that just ended gave."""
        if exc is None:
            status = self.status
            assert status is not None
            retry_after = None
            if status == 429 or status == 503:
                retry_after = parse_retry_after(_Head(b"".join(self.chunks)).fields.get(b"retry-after"))
            return Attempt(status=status, error=error_kind(status), retry_after=retry_after,
                           body_bytes=self.body_bytes, ttfb_s=self.first_byte - self.sent_at, peer=self.address)
        return _failed(exc, timeout)

    def check_deadline(self, now: float) -> None:
        if self.on_done is not None and now >= self.deadline:
            self._fail(_kind(TimeoutError(), "timeout"))

    def close(self) -> None:
        self.on_done = None
        if self.transport is not None:
            self.transport.close()


class _HeadConnection(_Connection):
    """A connection for HEAD requests: the response ends with its head, whatever the head says
    of a body (llhttp, not knowing the request, would wait for it)."""

    __slots__ = ()

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:
            return
        done = self.on_done
        if done is not None:
            self.status = status
            self.on_done = None
            self.keep_alive = parser.should_keep_alive()
            # A fresh parser for the next response: this one expects the announced body.
            self.parser = httptools.HttpResponseParser(self)
            if not self.keep_alive and self.transport is not None:
                self.transport.close()
            done(None)

    def on_message_complete(self) -> None:
        pass  # the end of a HEAD response is the end of its head


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


# TLS sessions to resume, by server name and port: kept for the process, so that a new round's
# first connection resumes too.
_SESSIONS: dict[tuple[int, str, int], ssl.SSLSession] = {}


class _TlsTransport:
    """What a TLS connection's HTTP protocol writes through: its requests become TLS records on
    the real transport; closing is the real transport's."""

    __slots__ = ("raw", "tls", "outgoing")

    def __init__(self, raw: asyncio.Transport, tls: ssl.SSLObject, outgoing: ssl.MemoryBIO) -> None:
        self.raw, self.tls, self.outgoing = raw, tls, outgoing

    def write(self, data: bytes) -> None:
        self.tls.write(data)
        self.raw.write(self.outgoing.read())

    def close(self) -> None:
        self.raw.close()

    def is_closing(self) -> bool:
        return self.raw.is_closing()


class _Tls(asyncio.Protocol):
    """The TLS layer under an HTTP connection: the handshake over memory buffers (timed, and
    resuming an earlier session when allowed), then each record decrypted into the connection.
    `ready` is resolved when the handshake is done (or set to why it failed)."""

    __slots__ = ("conn", "context", "hostname", "key", "resume", "ready", "raw", "incoming", "outgoing", "tls",
                 "started", "handshake_s", "saved")

    def __init__(self, conn: _Connection, context: ssl.SSLContext, hostname: str, port: int, resume: bool,
                 ready: asyncio.Future[None]) -> None:
        self.conn, self.context, self.hostname, self.key = conn, context, hostname, (id(context), hostname, port)
        self.resume, self.ready = resume, ready
        self.raw: asyncio.Transport | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls: ssl.SSLObject | None = None
        self.started = self.handshake_s = 0.0
        self.saved = False  # this connection's session is kept for others to resume

    def connection_made(self, transport: Any) -> None:
        self.raw = transport
        self.conn.made_at = _perf()  # the TCP connection, apart from the handshake to come
        session = _SESSIONS.get(self.key) if self.resume else None
        try:
            self.tls = self.context.wrap_bio(self.incoming, self.outgoing, server_hostname=self.hostname,
                                             session=session)
        except (ValueError, ssl.SSLError) as exc:
            transport.close()
            if not self.ready.done():
                self.ready.set_exception(exc)
            return
        self.started = _perf()
        self._handshake()

    def _handshake(self) -> None:
        tls, raw = self.tls, self.raw
        assert tls is not None and raw is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            if self.outgoing.pending:
                raw.write(self.outgoing.read())
            return
        except (ssl.SSLError, OSError) as exc:
            if self.outgoing.pending:
                raw.write(self.outgoing.read())
            raw.close()
            if not self.ready.done():
                self.ready.set_exception(exc)
            return
        if self.outgoing.pending:
            raw.write(self.outgoing.read())
        self.handshake_s = _perf() - self.started
        self.conn.connection_made(_TlsTransport(raw, tls, self.outgoing))
        if not self.ready.done():
            self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.ready.done():
            self._handshake()
            if not self.ready.done() or self.ready.exception() is not None:
                return
        tls, conn = self.tls, self.conn
        assert tls is not None
        try:
            while True:
                chunk = tls.read(65536)
                if not chunk:  # close_notify: the server ends the connection
                    if self.raw is not None:
                        self.raw.close()
                    break
                conn.data_received(chunk)
                if not self.incoming.pending and not tls.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            conn._fail(_kind(ConnectionError(f"TLS: {exc.reason or exc}"), "other"))
            return
        if self.outgoing.pending and self.raw is not None:  # a key update, a ticket acknowledgement
            self.raw.write(self.outgoing.read())
        if self.resume and not self.saved:
            # A TLS 1.3 server sends its ticket after the handshake: the session can be resumed
            # once one has come (a TLS 1.2 session, at once).
            session = tls.session
            if session is not None and (session.has_ticket or tls.version() != "TLSv1.3"):
                _SESSIONS[self.key] = session
                self.saved = True

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("the server closed the connection during the TLS handshake"))
            return
        self.conn.connection_lost(exc)


class FastEngine:
    """Requests of one spec on `concurrency` slots, a connection per slot."""

    name = "fast"

    def __init__(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 data: bytes | None = None, timeout: float = 10.0, retries: int = 0,
                 concurrency: int = 1, insecure: bool = False, *, addresses: Sequence[str] = (),
                 connect_port: int | None = None, tls: TlsSettings | None = None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        # Where connections go: the run's addresses in turn (resolved once), on the port the
        # route says; the Host header and TLS's server name stay the URL's.
        self.addresses = tuple(addresses) or (self.host,)
        self.connect_port = connect_port or self.port
        self._turn = 0
        self.timeout = timeout
        self.head = method == "HEAD"
        self.request = build_request(url, method, headers or {}, data)
        self.policy = RetryPolicy(retries)
        self.ssl: ssl.SSLContext | None = None
        self.tls_resume = False
        if self.https:
            settings = tls or TlsSettings(insecure=insecure)
            self.ssl = settings.context()
            self.tls_resume = settings.resume
        # Where the time went, this round: connections opened, their set-up, the handshakes.
        self.opened = 0
        self.connect_total = 0.0
        self.tls_total = 0.0
        self.tls_facts = TlsFacts()
        self.sent_to: dict[str, int] = {}  # requests sent to each address
        self.ttfb = LatencyHistogram()  # send → first byte, of the successes the hot path records
        self.slots: list[_Connection | None] = [None] * concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None]
        # The open model: slots made as needed, reused once free.
        self.in_flight = 0
        self._free: list[int] = []
        self._intended: list[float] = [0.0] * concurrency
        self._open_done: list[Callable[[BaseException | None], None] | None] = [None] * concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Future[None] | None = None

    async def __aenter__(self) -> FastEngine:
        self._loop = asyncio.get_running_loop()
        self._budget = _Sockets.budget()
        self.refused_locally = 0  # connections not even tried: past the open-file limit
        self._sweeper = self._loop.create_task(self._sweep())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in self.slots:
            if conn is not None:
                self._retire(conn)
                conn.close()
        self.slots = [None] * len(self.slots)
        # A transport closes its socket on the loop's next turn: let it, so the descriptors are
        # free before the results are written.
        await asyncio.sleep(0)

    def _retire(self, conn: _Connection) -> None:
        """Count a connection's requests into the per-address tally, once."""
        if not conn.retired:
            conn.retired = True
            self.sent_to[conn.address] = self.sent_to.get(conn.address, 0) + conn.requests

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
                if conn is not None:
                    self._retire(conn)
                conn = self.slots[slot] = await self._connect(time_left)
        except (OSError, TimeoutError) as exc:
            self._drop(slot)
            return _failed(exc, self.timeout)
        assert self._loop is not None
        waiter: asyncio.Future[BaseException | None] = self._loop.create_future()
        conn.send(self.request, time_left - (_perf() - started), waiter.set_result)
        exc = await waiter
        if exc is not None:
            self._drop(slot)
        return conn.outcome(exc, self.timeout)

    async def run(self, requests: int, sink: Sink, duration: float | None = None) -> None:
        """Send `requests` requests over the slots, each measured into `sink` as it completes;
        with `duration`, no new request is sent once that many seconds have passed (those in
        flight end as usual, within the timeout).

        A slot starts as a coroutine (connect, retries). Once its connection is open and
        kept alive, and there are no retries to make, the connection drives itself: each
        response, as it is parsed, is recorded and the next request written at once, with no
        coroutine, future, timer or record object per request — the way wrk does it. Anything
        else (a closed connection, an error that drops it) hands the slot back to its coroutine.
        """
        self._left = requests
        assert self._loop is not None
        # A timer, not a check per request: the hot path stays as it is.
        stop = None if duration is None else self._loop.call_later(duration, self._stop_sending)
        try:
            await asyncio.gather(*(self._drive(slot, sink) for slot in range(len(self.slots))))
        finally:
            if stop is not None:
                stop.cancel()

    def _stop_sending(self) -> None:
        self._left = 0

    async def _drive(self, slot: int, sink: Sink) -> None:
        assert self._loop is not None
        add, success, request, timeout = sink.add, sink.success, self.request, self.timeout
        ttfb = self.ttfb.pending  # LatencyHistogram.record, inlined (flushed when the round ends)
        while self._left > 0:
            self._left -= 1
            add(await self.fetch(slot))
            conn = self.slots[slot]
            if self.policy.retries or conn is None or not conn.usable() or self._left <= 0:
                continue
            self._left -= 1
            handed_back: asyncio.Future[bool] = self._loop.create_future()

            def on_done(exc: BaseException | None, conn: _Connection = conn,
                        handed_back: asyncio.Future[bool] = handed_back) -> None:
                now = _perf()
                if handed_back.done():  # the run was cancelled meanwhile
                    return
                status = conn.status
                if exc is None and status is not None and status < 400:
                    success(conn.sent_at, now, conn.body_bytes)
                    ttfb.append(conn.first_byte - conn.sent_at)
                    if len(ttfb) >= 4096:
                        self.ttfb.flush()
                else:
                    add(result(conn.outcome(exc, timeout), 1, conn.sent_at, now))
                if exc is None and conn.keep_alive and not conn.closed and self._left > 0:
                    self._left -= 1
                    # conn.send(request, timeout, on_done), inlined: the hot path
                    conn.status = None
                    conn.body_bytes = 0
                    conn.collecting = True
                    conn.head_bytes = 0
                    conn.requests += 1
                    conn.chunks.clear()
                    conn.on_done = on_done
                    conn.sent_at = sent = _perf()
                    conn.deadline = sent + timeout
                    conn.transport.write(request)  # type: ignore[union-attr]
                else:
                    if exc is not None:
                        self._drop(slot)
                    handed_back.set_result(True)

            conn.send(request, timeout, on_done)
            await handed_back

    # --- the open model: requests launched on a schedule, whatever came back -----------------------

    def launch(self, intended: float, sink: ScheduledSink) -> None:
        """Send one request now — on a free kept-alive connection, else a new one — measured from
        `intended` (its place in the schedule) into `sink`. Never waits."""
        self.in_flight += 1
        slot = self._free.pop() if self._free else self._new_slot(sink)
        self._intended[slot] = intended
        conn = self.slots[slot]
        if conn is not None and not self.policy.retries and conn.usable():
            conn.send(self.request, self.timeout, self._open_done[slot])  # type: ignore[arg-type]
            return
        assert self._loop is not None
        task = self._loop.create_task(self._launch_task(slot, sink))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_slot(self, sink: ScheduledSink) -> int:
        slot = len(self.slots)
        self.slots.append(None)
        self._intended.append(0.0)
        timeout, scheduled, add = self.timeout, sink.scheduled, sink.add

        def done(exc: BaseException | None) -> None:  # made once per slot, not per request
            now = _perf()
            conn = self.slots[slot]
            assert conn is not None
            status = conn.status
            if exc is None and status is not None and status < 400:
                scheduled(self._intended[slot], conn.sent_at, now, conn.body_bytes)
                self.ttfb.record(conn.first_byte - conn.sent_at)
            else:
                record = result(conn.outcome(exc, timeout), 1, conn.sent_at, now)
                record.intended_at = self._intended[slot]
                add(record)
            if exc is not None or not conn.keep_alive:
                self._drop(slot)
            self._release(slot)

        self._open_done.append(done)
        return slot

    async def _launch_task(self, slot: int, sink: ScheduledSink) -> None:
        """A request that needs a coroutine: a new connection, or retries."""
        record = await self.fetch(slot)
        record.intended_at = self._intended[slot]
        sink.add(record)
        conn = self.slots[slot]
        if conn is not None and not conn.keep_alive:
            self._drop(slot)
        self._release(slot)

    def _release(self, slot: int) -> None:
        self._free.append(slot)
        self.in_flight -= 1
        if not self.in_flight and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Wait for every launched request to end (each is bounded by the timeout)."""
        if self.in_flight:
            assert self._loop is not None
            self._drained = self._loop.create_future()
            await self._drained

    async def _connect(self, time_left: float) -> _Connection:
        loop = self._loop
        assert loop is not None
        if _Sockets.open >= self._budget:
            self.refused_locally += 1
            raise OSError(errno.EMFILE, f"too many open files: the open-file limit (ulimit -n) leaves "
                                        f"{self._budget:,} connections, {RESERVED_FDS} more being kept for "
                                        "asyncbench's own files")
        _Sockets.open += 1  # counted from the attempt: the socket exists before it connects
        try:
            return await self._open_connection(loop, time_left)
        except BaseException:
            _Sockets.open -= 1
            raise

    async def _open_connection(self, loop: asyncio.AbstractEventLoop, time_left: float) -> _Connection:
        first = self._turn % len(self.addresses)
        self._turn += 1
        conn = (_HeadConnection if self.head else _Connection)()
        started = _perf()
        async with asyncio.timeout(time_left):
            layer: _Tls | None = None
            ready: asyncio.Future[None] = loop.create_future()
            # An address that cannot be reached (an IPv6 route that is not there, one host of
            # several down) hands the connection to the next, as curl and Go's dialer do: the
            # request fails only when none of them answers.
            turn = self.addresses[first:] + self.addresses[:first]
            for i, address in enumerate(turn):
                conn.address = address
                if self.ssl is not None:
                    layer = _Tls(conn, self.ssl, self.host, self.port, self.tls_resume, ready)
                protocol: asyncio.Protocol = conn if layer is None else layer
                try:
                    await loop.create_connection(lambda p=protocol: p, address, self.connect_port)
                    break
                except OSError:
                    if i == len(turn) - 1:
                        raise
            self.connect_total += conn.made_at - started
            if layer is not None:
                try:
                    await ready
                finally:
                    if not ready.done():
                        ready.cancel()
                        if layer.raw is not None:
                            layer.raw.close()
                self.tls_total += layer.handshake_s
                self.tls_facts.record(layer.tls)
        self.opened += 1
        return conn

    def _drop(self, slot: int) -> None:
        conn = self.slots[slot]
        if conn is not None:
            self._retire(conn)
            conn.close()
        self.slots[slot] = None
