"""Load engines: `fast` (uvloop, a Protocol per connection, httptools) and `aiohttp` (the lab's
AsyncHttpClient). Both return `records.FetchResult`s and share the retry policy in `retry`; a
new engine is one module and one line in `open_engine`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from asyncbench.engines.base import Engine
    from asyncbench.tls import TlsSettings

ENGINES = ("fast", "aiohttp")
# The event loop each engine is built for: the fast engine's gain is uvloop's; the aiohttp
# engine measured no faster on uvloop (its C parser dominates).
DEFAULT_LOOP = {"fast": "uvloop", "aiohttp": "asyncio"}


def open_engine(name: str, url: str, method: str, headers: dict[str, str], data: bytes | None,
                timeout: float, retries: int, concurrency: int, bounded: bool, insecure: bool, *,
                addresses: Sequence[str] = (), connect_port: int | None = None, tls: TlsSettings | None = None) -> Engine:
    """An engine for one round of a level (not yet opened): new connections go to `addresses`
    in turn, on `connect_port` (the URL's host and port otherwise); `tls` is how https is
    checked (by default: verified, unless `insecure`)."""
    if name == "fast":
        from asyncbench.engines.fast import FastEngine

        return FastEngine(url, method=method, headers=headers, data=data, timeout=timeout, retries=retries,
                          concurrency=concurrency, insecure=insecure, addresses=addresses, connect_port=connect_port,
                          tls=tls)
    from asyncbench.engines.aiohttp import AiohttpEngine

    return AiohttpEngine(url, method=method, headers=headers, data=data, timeout=timeout, retries=retries,
                         concurrency=concurrency, bounded=bounded, insecure=insecure, addresses=addresses,
                         connect_port=connect_port, tls=tls)
