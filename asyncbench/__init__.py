"""asyncbench: a command-line concurrency lab for HTTP services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncbench.version import __version__

__all__ = ["AIMD", "AsyncHttpClient", "FetchResult", "Fixed", "Gate", "Gradient", "Limiter", "__version__"]

if TYPE_CHECKING:
    from asyncbench.client import AsyncHttpClient, FetchResult
    from asyncbench.limiters import AIMD, Fixed, Gate, Gradient, Limiter


def __getattr__(name: str) -> Any:
    # Lazy so that `asyncbench --version` does not pay for importing aiohttp.
    if name in ("AsyncHttpClient", "FetchResult"):
        from asyncbench import client

        return getattr(client, name)
    if name in ("AIMD", "Fixed", "Gate", "Gradient", "Limiter"):
        from asyncbench import limiters

        return getattr(limiters, name)
    raise AttributeError(f"module 'asyncbench' has no attribute {name!r}")
