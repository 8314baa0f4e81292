"""Shared fixtures: the embedded server in its own process on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request
from contextlib import ExitStack
from typing import Any, Callable, Iterator

import pytest

from asyncbench.server import EmbeddedServer, ServerConfig


def server_stats(url: str) -> dict[str, Any]:
    """What the server saw, from its own /stats endpoint."""
    with urllib.request.urlopen(url + "/stats", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def start_server() -> Iterator[Callable[..., str]]:
    """Start an embedded server with the given settings; every one is stopped after the test."""
    with ExitStack() as stack:

        def start(**settings: Any) -> str:
            return stack.enter_context(EmbeddedServer(ServerConfig(**settings)))

        yield start


@pytest.fixture(scope="module")
def fast_server() -> Iterator[str]:
    """A roomy, fast server shared by a module's tests that do not count its requests."""
    with EmbeddedServer(ServerConfig(latency=0.0, capacity=1000, queue=1000)) as url:
        yield url
