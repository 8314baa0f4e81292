"""The embedded target: an HTTP/1.1 service (httptools on uvloop) that behaves like a real one
under load.

`capacity` requests are served at once; up to `queue` more wait for a slot; past that a
request is shed at once with 503. Each request takes `latency` seconds (± `jitter`) of service
time; `error_rate` answers 500 at random; `rate_limit` answers 429 with Retry-After past a
requests-per-second budget. `POST /embed` answers a deterministic embedding; `/status/{code}`
answers that code at once; `GET /stats` reports what the server saw; `DELETE /stats` resets it.

`EmbeddedServer` runs it in its own process on a free port, so that the load generator and the
target do not share an event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import select
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httptools

from asyncbench.ratelimit import ApiLimits, format_go_duration, tokens_of
from asyncbench.system import raise_nofile_limit

EMBEDDING_DIM = 16
_OK_BODY = b"ok\n"


@dataclass
class ServerConfig:
    """Settings of the embedded target; the defaults make the trap's lesson visible."""

    host: str = "127.0.0.1"
    port: int = 0
    latency: float = 0.05  # seconds of service time per request
    jitter: float = 0.0  # service time is uniform in latency ± jitter (never below 0)
    capacity: int = 100  # requests served at once
    queue: int = 400  # requests that may wait for a slot; past capacity + queue: 503
    error_rate: float = 0.0  # fraction of served requests answered 500
    rate_limit: float = 0.0  # requests per second before 429; 0 is off
    seed: int | None = None  # seeds the fault injection, for reproducible runs
    stall_after: int = 0  # after this many requests, freeze the whole server once; 0 is off
    stall: float = 0.0  # seconds of that freeze (a GC pause, a VM steal, a stop-the-world)
    tls_cert: str | None = None  # serve https with this certificate (PEM) ...
    tls_key: str | None = None  # ... and its key
    tls: bool = False  # serve https with a throwaway certificate (EmbeddedServer makes it)
    # (seconds from the first request, capacity from then on): a capacity that moves, as a
    # service's does when it scales, loses a neighbour's CPU or gets a slower deploy
    capacity_schedule: tuple[tuple[float, int], ...] = ()
    rpm: float = 0.0  # POST /v1/embeddings: requests per minute, enforced per second; 0 is off
    tpm: float = 0.0  # ... and tokens per minute

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        checks = [
            ("latency", self.latency >= 0 and math.isfinite(self.latency), "seconds >= 0"),
            ("jitter", self.jitter >= 0 and math.isfinite(self.jitter), "seconds >= 0"),
            ("capacity", self.capacity >= 1, "a whole number >= 1"),
            ("queue", self.queue >= 0, "a whole number >= 0"),
            ("error-rate", 0.0 <= self.error_rate <= 1.0, "a fraction from 0 to 1"),
            ("rate-limit", self.rate_limit >= 0 and math.isfinite(self.rate_limit), "req/s >= 0"),
            ("port", 0 <= self.port <= 65535, "0 to 65535"),
            ("stall-after", self.stall_after >= 0, "a whole number >= 0"),
            ("stall", 0 <= self.stall <= 60 and math.isfinite(self.stall), "seconds from 0 to 60"),
            ("rpm", self.rpm >= 0 and math.isfinite(self.rpm), "requests per minute >= 0"),
            ("tpm", self.tpm >= 0 and math.isfinite(self.tpm), "tokens per minute >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                value = getattr(self, name.replace("-", "_"))
                raise ValueError(f"invalid --{name} {value:g}: expected {expected}")


@dataclass
class ServerStats:
    """What the server saw. `in_flight` counts admitted requests: in service plus queued."""

    received: int = 0
    served: int = 0
    shed: int = 0
    errors: int = 0
    rate_limited: int = 0
    bad_requests: int = 0
    in_flight: int = 0
    in_service: int = 0
    peak_in_flight: int = 0
    peak_in_service: int = 0
    capacity: int = 0  # requests served at once, now (it moves with a capacity schedule)
    embedded_inputs: int = 0  # inputs embedded by POST /v1/embeddings (each one of a request's list)
    tokens: int = 0  # the tokens of those inputs


def embed(text: str) -> list[float]:
    """A deterministic unit vector for `text`: the same text always gets the same vector."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=EMBEDDING_DIM * 4).digest()
    raw = [v / 2**31 - 1.0 for v in struct.unpack(f"<{EMBEDDING_DIM}I", digest)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_BODY = 16 * 1024 * 1024  # a request body larger than this is refused (413)


@dataclass
class Answer:
    """A response to write: status, body, its type and any extra header lines."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _json(data: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(data).encode(), "application/json")


class TargetService:
    """The endpoints and their shared state: admission (capacity, queue), service time and
    fault injection.

    Callback-driven: a request in service is a timer, a queued one an entry in a deque — no
    task or coroutine per request, so that the target of the lesson spends a small part of a
    core at its capacity (it shares the machine with the load generator).
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self._waiting: deque[tuple[Callable[[Answer], None], Answer]] = deque()
        # --rate-limit: requests a second, a second's worth at once (the API limits' bucket, in requests)
        self._bucket = ApiLimits(rpm=config.rate_limit * 60, tpm=0) if config.rate_limit > 0 else None
        self._api = ApiLimits(config.rpm, config.tpm)
        self._random = random.Random(config.seed)
        self._loop = asyncio.get_running_loop()
        self.capacity = config.capacity
        self.stats.capacity = self.capacity
        self._schedule_timers: list[asyncio.TimerHandle] = []
        self._scheduled = False  # the capacity schedule's clock has started (at the first request)

    def _start_schedule(self) -> None:
        """The first request starts the capacity schedule's clock: each change is a timer."""
        self._scheduled = True
        for seconds, capacity in self.config.capacity_schedule:
            if seconds <= 0:
                self._set_capacity(capacity)
            else:
                self._schedule_timers.append(self._loop.call_later(seconds, self._set_capacity, capacity))

    def _set_capacity(self, capacity: int) -> None:
        """A capacity that rises serves the queue at once; one that falls lets the requests in
        service finish and starts no new one until fewer than it are in service."""
        self.capacity = self.stats.capacity = capacity
        st = self.stats
        while self._waiting and st.in_service < capacity:
            answer, served = self._waiting.popleft()
            self._start(answer, served)

    def _restart_schedule(self) -> None:
        for timer in self._schedule_timers:
            timer.cancel()
        self._schedule_timers.clear()
        self._scheduled = False
        self._set_capacity(self.config.capacity)

    def handle(self, method: str, path: str, body: bytes, answer: Callable[[Answer], None]) -> None:
        """Route one request; `answer` is called once with its response, now or later."""
        if path == "/stats":
            if method == "DELETE":
                # Keep the live gauges: requests still in the server are still in it.
                st = self.stats
                self.stats = ServerStats(in_flight=st.in_flight, in_service=st.in_service, capacity=self.capacity)
                if self.config.capacity_schedule:
                    self._restart_schedule()  # from the next request, as from the first
            answer(_json(asdict(self.stats)))
            return
        if not self._scheduled and self.config.capacity_schedule:
            self._start_schedule()
        self.stats.received += 1
        if self.stats.received == self.config.stall_after and self.config.stall > 0:
            time.sleep(self.config.stall)  # deliberately blocks the server's loop: everything waits
        if path == "/embed" and method == "POST":
            try:
                payload = json.loads(body)
                text, ident = payload["text"], payload["id"]
                if not isinstance(text, str):
                    raise TypeError("text must be a string")
            except (ValueError, KeyError, TypeError) as exc:
                self.stats.bad_requests += 1
                answer(_json({"error": f"malformed request: {exc}"}, 400))
                return
            self._admit(answer, _json({"id": ident, "embedding": embed(text)}))
            return
        if path == "/v1/embeddings" and method == "POST":
            self._embeddings(body, answer)
            return
        if path.startswith("/status/") and len(path) == 11 and path[8:].isdigit():
            code = int(path[8:])
            if not 200 <= code <= 599:
                answer(Answer(400, f"status {code} out of range\n".encode()))
            else:
                answer(Answer(code, f"status {code}\n".encode()))
            return
        self._admit(answer, Answer(200, _OK_BODY))

    def _embeddings(self, body: bytes, answer: Callable[[Answer], None]) -> None:
        """An OpenAI-compatible embeddings call: within the per-minute limits (quantized per
        second), with the x-ratelimit-* headers on every answer and 429 past a limit."""
        try:
            payload = json.loads(body)
            inputs = payload["input"]
            inputs = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
                raise TypeError("input must be a string or a non-empty list of strings")
            model = str(payload.get("model") or "")
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.bad_requests += 1
            answer(_json({"error": {"message": f"malformed request: {exc}", "type": "invalid_request_error"}}, 400))
            return
        tokens = sum(tokens_of(text) for text in inputs)
        wait = self._api.admit(tokens)
        headers = self._api.headers()
        if wait > 0:
            self.stats.rate_limited += 1
            limited = _json({"error": {"message": f"Rate limit reached: retry after {format_go_duration(wait)}",
                                       "type": "requests", "code": "rate_limit_exceeded"}}, 429)
            limited.headers = (*headers, ("retry-after", str(max(1, math.ceil(wait)))),
                               ("retry-after-ms", str(max(1, math.ceil(wait * 1000)))))
            answer(limited)
            return
        self.stats.embedded_inputs += len(inputs)
        self.stats.tokens += tokens
        served = _json({"object": "list", "model": model,
                        "data": [{"object": "embedding", "index": i, "embedding": embed(text)}
                                 for i, text in enumerate(inputs)],
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        served.headers = headers
        self._admit(answer, served)

    def _admit(self, answer: Callable[[Answer], None], served: Answer) -> None:
        """Rate limit, shed past capacity + queue, else serve now or queue for a slot."""
        cfg, st = self.config, self.stats
        if self._bucket is not None:
            wait = self._bucket.admit(0)
            if wait > 0:
                st.rate_limited += 1
                answer(Answer(429, b"rate limited\n", headers=(("Retry-After", str(max(1, math.ceil(wait)))),)))
                return
        if st.in_flight >= self.capacity + cfg.queue:
            st.shed += 1
            answer(Answer(503, b"overloaded\n", headers=(("Retry-After", "1"),)))
            return
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        if st.in_service < self.capacity:
            self._start(answer, served)
        else:
            self._waiting.append((answer, served))

    def _start(self, answer: Callable[[Answer], None], served: Answer) -> None:
        cfg, st = self.config, self.stats
        st.in_service += 1
        st.peak_in_service = max(st.peak_in_service, st.in_service)
        service = cfg.latency
        if cfg.jitter:
            service = max(0.0, service + self._random.uniform(-cfg.jitter, cfg.jitter))
        if service > 0:
            self._loop.call_later(service, self._finish, answer, served)
        else:
            self._finish(answer, served)

    def _finish(self, answer: Callable[[Answer], None], served: Answer) -> None:
        st = self.stats
        st.in_service -= 1
        st.in_flight -= 1
        if self._waiting and st.in_service < self.capacity:  # the freed slot: to the longest waiting
            next_answer, next_served = self._waiting.popleft()
            self._start(next_answer, next_served)
        if self.config.error_rate and self._random.random() < self.config.error_rate:
            st.errors += 1
            answer(Answer(500, b"injected fault\n"))
            return
        st.served += 1
        answer(served)


class _HttpConnection(asyncio.Protocol):
    """HTTP/1.1 on one connection (httptools): keep-alive, requests answered one at a time in
    the order they came (pipelining), HEAD answered without its body."""

    def __init__(self, service: TargetService) -> None:
        self.service = service
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.pending: deque[tuple[str, str, bytes, bool]] = deque()
        self.busy = False
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(Answer(400, b"protocol upgrades are not supported\n"))
        except httptools.HttpParserError as exc:
            self._refuse(Answer(400, f"malformed request: {exc}\n".encode()))

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size <= _MAX_BODY:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.body_size > _MAX_BODY:
            self._refuse(Answer(413, b"request body too large\n"))
            return
        method = self.parser.get_method().decode("latin-1")
        path = httptools.parse_url(self.url).path.decode("latin-1") if self.url else "/"
        self.pending.append((method, path, b"".join(self.body), self.parser.should_keep_alive()))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self.closed or not self.pending:
            return
        self.busy = True
        method, path, body, keep_alive = self.pending.popleft()
        self.service.handle(method, path, body, lambda answer: self._write(answer, method == "HEAD", keep_alive))

    def _write(self, answer: Answer, head: bool, keep_alive: bool) -> None:
        self.busy = False
        if self.closed or self.transport is None:
            return
        body = answer.body
        lines = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Status')}", "Server: asyncbench"]
        if answer.status in (204, 304):
            body = b""  # these carry no body, and a 204 not even its length (RFC 9110, 6.4.1)
        else:
            lines += [f"Content-Type: {answer.content_type}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in answer.headers]
        if not keep_alive:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head_bytes if head else head_bytes + body)
        if keep_alive:
            self._next()
        else:
            self.transport.close()

    def _refuse(self, answer: Answer) -> None:
        """Answer a request that cannot be read, and close: the stream cannot be trusted."""
        self.pending.clear()
        self.busy = True  # nothing more is served on this connection
        if self.transport is not None and not self.closed:
            self._write(answer, False, False)


async def serve(
    config: ServerConfig,
    on_ready: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM arrive), calling `on_ready(url)` once bound."""
    config.validate()
    raise_nofile_limit()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signal handlers can only be installed from the main thread, and not on Windows loops.
    if threading.current_thread() is threading.main_thread() and sys.platform != "win32":
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    service = TargetService(config)
    # A deep accept backlog, so a burst of thousands of connections reaches the application
    # (and its capacity/queue policy) instead of stalling in the kernel's SYN queue.
    context = None
    if config.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(config.tls_cert, config.tls_key)
        context.set_alpn_protocols(["http/1.1"])
    server = await loop.create_server(lambda: _HttpConnection(service), config.host, config.port,
                                      backlog=4096, reuse_address=True, ssl=context)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"{'https' if context else 'http'}://{shown}:{port}")
        await stop.wait()
    finally:
        server.close()


def throwaway_certificate(folder: Path, hosts: Sequence[str]) -> tuple[Path, Path, Path]:
    """A certificate for `hosts` signed by a CA made for the occasion (trustme), written to
    `folder`: (the CA to trust, the certificate, its key), as PEM files."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert(*hosts)
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ca.cert_pem.write_to_path(str(paths[0]))
    issued.private_key_and_cert_chain_pem.write_to_path(str(paths[1]))
    issued.private_key_pem.write_to_path(str(paths[2]))
    return paths


def run_on_best_loop(coro: Any) -> Any:
    """Run the server on uvloop where it is installed: it spends less of the cores it shares
    with the load generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class EmbeddedServer:
    """The target in a child process on a free port: `with EmbeddedServer(cfg) as url: ...`.

    The child exits when it is told to (SIGTERM), and also by itself when this process dies:
    it watches its stdin, which closes with us.
    """

    def __init__(self, config: ServerConfig | None = None, start_timeout: float = 30.0) -> None:
        self.config = config or ServerConfig()
        self.config.port = 0
        self.start_timeout = start_timeout
        self.url: str | None = None
        self.ca_path: Path | None = None  # with a throwaway certificate: the CA a client must trust
        self._proc: subprocess.Popen[str] | None = None
        self._scratch: str | None = None

    def start(self) -> str:
        self.config.validate()
        if self.config.tls and not self.config.tls_cert:
            self._scratch = tempfile.mkdtemp(prefix="asyncbench-tls-")
            ca, cert, key = throwaway_certificate(Path(self._scratch), [self.config.host, "localhost"])
            self.ca_path, self.config.tls_cert, self.config.tls_key = ca, str(cert), str(key)
        cmd = [sys.executable, "-m", "asyncbench.server", json.dumps(asdict(self.config))]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([self._proc.stdout], [], [], self.start_timeout)
        line = self._proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith(("http://", "https://")):
            self.stop()
            err = self._proc.stderr.read().strip() if self._proc.stderr else ""
            reason = err.splitlines()[-1] if err else "it did not report its address in time"
            raise RuntimeError(f"the embedded server did not start: {reason}")
        self.url = line.strip()
        return self.url

    def stop(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _child_main(config_json: str) -> None:
    """Entry point of the child process started by EmbeddedServer."""
    known = {f.name for f in fields(ServerConfig)}
    config = ServerConfig(**{k: v for k, v in json.loads(config_json).items() if k in known})
    config.capacity_schedule = tuple((float(t), int(c)) for t, c in config.capacity_schedule)  # JSON made them lists

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch_parent() -> None:
            sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_parent, daemon=True).start()

        def ready(url: str) -> None:
            print(url, flush=True)

        await serve(config, ready, stop)

    run_on_best_loop(main())
    os._exit(0)  # the stdin watcher thread may still be blocked in read()


if __name__ == "__main__":
    _child_main(sys.argv[1])
