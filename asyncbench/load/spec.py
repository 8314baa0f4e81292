"""What every request of a run looks like, the one request sent before it (the pre-flight),
and the check that a target is still there after a step whose connections failed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from asyncbench.errors import TargetGone
from asyncbench.tls import TlsSettings


@dataclass
class RequestSpec:
    """What every request of a run looks like."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None
    timeout: float = 10.0
    retries: int = 0
    engine: str = "fast"
    insecure: bool = False  # https without checking the certificate
    # Where connections go (the route, resolved once for the run): its addresses in turn, on
    # connect_port; empty: the URL's host. `tls`: how https is checked and resumed.
    addresses: tuple[str, ...] = ()
    connect_port: int | None = None
    tls: TlsSettings | None = None
    # How the route is found (the session resolves it once): --resolve, --connect-to, and whether
    # a target that is not this machine may be loaded.
    resolve: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    connect_to: list[tuple[str, int | None, str, int | None]] = field(default_factory=list)
    allow_remote: bool = False

    def client_options(self) -> dict[str, Any]:
        """What the library client takes of the spec: its TLS context, and the route."""
        from urllib.parse import urlsplit

        options: dict[str, Any] = {}
        parts = urlsplit(self.url)
        if parts.scheme == "https" and self.tls is not None:
            options["ssl_context"] = self.tls.context()
        if self.addresses:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            options["routes"] = {((parts.hostname or "").lower(), port):
                                 [(a, self.connect_port or port) for a in self.addresses]}
        return options

    def engine_options(self) -> dict[str, Any]:
        """What an engine takes of the spec, by name."""
        return {"method": self.method, "headers": self.headers, "data": self.data, "timeout": self.timeout,
                "retries": self.retries, "insecure": self.insecure, "addresses": self.addresses,
                "connect_port": self.connect_port, "tls": self.tls}


async def refused(url: str) -> str | None:
    """Why the target no longer takes connections (refused twice, a tenth of a second apart),
    or None when it does. A connection that is merely slow to be accepted (a full backlog) is
    not a target gone: only an answer of "nobody here" is."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    why = None
    for attempt in range(2):
        if attempt:
            await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(2.0):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return None
        except OSError as exc:
            why = f"{host}:{port} refused new connections ({exc.strerror or type(exc).__name__})"
            continue
        writer.close()
        return None
    return why


async def check_target(spec: RequestSpec, step: str, level: int, stats: Any) -> None:
    """After a step whose requests failed to connect: TargetGone if the target is no longer
    there, so that no more load is sent to nothing and no answer is drawn from it."""
    if stats.errors_connect:
        why = await refused(spec.url)
        if why is not None:
            raise TargetGone(step, level, why)


@dataclass
class Preflight:
    """The answer to the one request sent before a run."""

    reachable: bool
    status: int | None
    latency_s: float
    detail: str  # "HTTP 200", or why it failed
    body_excerpt: str  # the start of the response body, for a status that is an error

    @property
    def summary(self) -> str:
        return f"{self.detail} in {self.latency_s * 1000:.1f} ms"


async def preflight(spec: RequestSpec) -> Preflight:
    """One request before the sweep, shaped like the sweep's: can the target be reached, and
    what does it answer?"""
    from asyncbench.client import AsyncHttpClient

    async with AsyncHttpClient(max_concurrency=1, timeout=spec.timeout, retries=0,
                               max_body_bytes=1024 * 1024, verify_tls=not spec.insecure,
                               **spec.client_options()) as client:
        result = await client.fetch(
            spec.url, method=spec.method, data=spec.data, headers=spec.headers or None
        )
    if result.error in ("connect", "timeout"):
        return Preflight(False, None, result.latency_s, result.detail or result.error, "")
    excerpt = ""
    if result.body and result.status is not None and result.status >= 400:
        excerpt = " ".join(result.body[:200].decode("utf-8", "replace").split())
    detail = f"HTTP {result.status}" if result.status else (result.detail or "")
    return Preflight(True, result.status, result.latency_s, detail, excerpt)
