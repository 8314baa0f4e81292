"""The embedded target: an aiohttp.web service that behaves like a real one under load.

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
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

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


class _TokenBucket:
    """A requests-per-second budget with a burst of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token; return 0 on success, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def embed(text: str) -> list[float]:
    """A deterministic unit vector for `text`: the same text always gets the same vector."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=EMBEDDING_DIM * 4).digest()
    raw = [v / 2**31 - 1.0 for v in struct.unpack(f"<{EMBEDDING_DIM}I", digest)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


class TargetService:
    """The request handlers and their shared state."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self._slots = asyncio.Semaphore(config.capacity)
        self._bucket = _TokenBucket(config.rate_limit) if config.rate_limit > 0 else None
        self._random = random.Random(config.seed)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_delete("/stats", self.handle_reset)
        app.router.add_post("/embed", self.handle_embed)
        app.router.add_route("*", r"/status/{code:\d{3}}", self.handle_status)
        app.router.add_route("*", "/{tail:.*}", self.handle_load)
        return app

    async def _serve(self) -> web.Response | None:
        """Admission, service time and fault injection shared by every load endpoint.

        Returns an error response, or None when the request was served and may be answered.
        """
        cfg, st = self.config, self.stats
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait > 0:
                st.rate_limited += 1
                return web.Response(
                    status=429,
                    text="rate limited\n",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        if st.in_flight >= cfg.capacity + cfg.queue:
            st.shed += 1
            return web.Response(status=503, text="overloaded\n", headers={"Retry-After": "1"})
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        try:
            async with self._slots:
                st.in_service += 1
                st.peak_in_service = max(st.peak_in_service, st.in_service)
                try:
                    service = cfg.latency
                    if cfg.jitter:
                        service = max(0.0, service + self._random.uniform(-cfg.jitter, cfg.jitter))
                    if service > 0:
                        await asyncio.sleep(service)
                finally:
                    st.in_service -= 1
        finally:
            st.in_flight -= 1
        if cfg.error_rate and self._random.random() < cfg.error_rate:
            st.errors += 1
            return web.Response(status=500, text="injected fault\n")
        st.served += 1
        return None

    async def handle_load(self, request: web.Request) -> web.Response:
        self.stats.received += 1
        if request.can_read_body:
            await request.read()
        failure = await self._serve()
        return failure or web.Response(body=_OK_BODY, content_type="text/plain")

    async def handle_embed(self, request: web.Request) -> web.Response:
        self.stats.received += 1
        try:
            payload = json.loads(await request.read())
            text = payload["text"]
            ident = payload["id"]
            if not isinstance(text, str):
                raise TypeError("text must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.bad_requests += 1
            return web.json_response({"error": f"malformed request: {exc}"}, status=400)
        failure = await self._serve()
        return failure or web.json_response({"id": ident, "embedding": embed(text)})

    async def handle_status(self, request: web.Request) -> web.Response:
        """Answer the status code in the path at once, like httpbin's /status/{code}."""
        self.stats.received += 1
        code = int(request.match_info["code"])
        if not 200 <= code <= 599:
            return web.Response(status=400, text=f"status {code} out of range\n")
        return web.Response(status=code, text=f"status {code}\n")

    async def handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def handle_reset(self, request: web.Request) -> web.Response:
        # Keep the live gauges: requests still in the server are still in it.
        in_flight, in_service = self.stats.in_flight, self.stats.in_service
        self.stats = ServerStats(in_flight=in_flight, in_service=in_service)
        return web.json_response(asdict(self.stats))


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
    runner = web.AppRunner(TargetService(config).app(), access_log=None, handle_signals=False)
    await runner.setup()
    # A deep accept backlog, so a burst of thousands of connections reaches the application
    # (and its capacity/queue policy) instead of stalling in the kernel's SYN queue.
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
    try:
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()


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
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.config.validate()
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
        if not line.startswith("http"):
            self.stop()
            err = self._proc.stderr.read().strip() if self._proc.stderr else ""
            reason = err.splitlines()[-1] if err else "it did not report its address in time"
            raise RuntimeError(f"the embedded server did not start: {reason}")
        self.url = line.strip()
        return self.url

    def stop(self) -> None:
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
