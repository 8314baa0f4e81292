"""The `aiohttp` engine: the lab's AsyncHttpClient, kept for fidelity to the labs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from asyncbench.client import AsyncHttpClient
from asyncbench.records import FetchResult, ScheduledSink, Sink
from asyncbench.tls import TlsSettings


class AiohttpEngine:
    """One AsyncHttpClient per round: unbounded for the trap (a connection per request in
    flight), a semaphore and a pool of `concurrency` connections otherwise."""

    name = "aiohttp"

    def __init__(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 data: bytes | None = None, timeout: float = 10.0, retries: int = 0,
                 concurrency: int = 1, bounded: bool = True, insecure: bool = False, *,
                 addresses: Sequence[str] = (), connect_port: int | None = None, tls: TlsSettings | None = None) -> None:
        self.url, self.method, self.data, self.concurrency = url, method, data, concurrency
        self.headers = headers or None
        routes = None
        if addresses:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            routes = {((parts.hostname or "").lower(), port): [(a, connect_port or port) for a in addresses]}
        context = tls.context() if tls is not None and url.startswith("https:") else None
        self.client = AsyncHttpClient(max_concurrency=concurrency if bounded else None, timeout=timeout,
                                      retries=retries, keep_body=False, verify_tls=not insecure,
                                      ssl_context=context, routes=routes)
        self.sent_to: dict[str, int] = {}  # requests sent to each address (aiohttp does not time its set-up)
        self.in_flight = 0
        self.refused_locally = 0  # aiohttp says no such thing: its failures are the server's or the OS's
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Future[None] | None = None

    async def __aenter__(self) -> AiohttpEngine:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.close()

    async def fetch(self, slot: int) -> FetchResult:
        record = await self.client.fetch(self.url, method=self.method, data=self.data, headers=self.headers)
        if record.peer is not None:
            self.sent_to[record.peer] = self.sent_to.get(record.peer, 0) + record.attempts
        return record

    async def run(self, requests: int, sink: Sink, duration: float | None = None) -> None:
        """`requests` requests shared by `concurrency` workers, each result into `sink`; with
        `duration`, no new request is sent once that many seconds have passed."""
        tickets = iter(range(requests))
        add = sink.add
        loop = asyncio.get_running_loop()
        until = None if duration is None else loop.time() + duration

        async def worker() -> None:
            for _ in tickets:
                if until is not None and loop.time() >= until:
                    return
                add(await self.fetch(0))

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def launch(self, intended: float, sink: ScheduledSink) -> None:
        """Send one request now (a task of its own), measured from `intended` into `sink`."""
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._one(intended, sink))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, intended: float, sink: ScheduledSink) -> None:
        record = await self.fetch(0)
        record.intended_at = intended
        sink.add(record)
        self.in_flight -= 1
        if not self.in_flight and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Wait for every launched request to end (each is bounded by the timeout)."""
        if self.in_flight:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
