"""Shared fixtures: the embedded server in its own process on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

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


# --- the command line, run as a user runs it --------------------------------------------------

import csv  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`asyncbench ARGS` in a subprocess with a fixed 100-column, non-terminal console."""
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "asyncbench", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def result_files(results_dir: Path, experiment: str) -> tuple[Path, Path, Path]:
    """The run's CSV, JSON sidecar and -latency.csv (exactly one run in the folder)."""
    [main] = [p for p in results_dir.glob(f"{experiment}-*.csv") if not p.stem.endswith("-latency")]
    return main, main.with_suffix(".json"), main.with_name(main.stem + "-latency.csv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def nginx(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A real nginx on 127.0.0.1 answering `200 ok` on /, 404 elsewhere, logging each request."""
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )
    if binary is None:
        pytest.skip("nginx is not installed (Debian package nginx-light; .ci/run installs it)")
    root = tmp_path_factory.mktemp("nginx")
    port = free_port()
    access_log = root / "access.log"
    user = "user root;" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(
        f"""
{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {access_log};
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = / {{ return 200 "ok\\n"; }}
        location / {{ return 404; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-p", str(root), "-c", str(root / "nginx.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    # Ready when it accepts a connection (bounded: a broken config makes nginx exit at once).
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"nginx did not start: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            select.select([], [], [], 0.05)
    else:
        proc.kill()
        pytest.fail("nginx did not accept connections")
    yield {"url": url, "access_log": access_log}
    proc.terminate()
    proc.wait(timeout=10)
