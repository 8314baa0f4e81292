"""Shared fixtures: the embedded server in its own process on a free port of 127.0.0.1."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from asyncbench.server import EmbeddedServer, ServerConfig


def server_stats(url: str) -> dict[str, Any]:
    """What the server saw, from its own /stats endpoint."""
    with urllib.request.urlopen(url + "/stats", timeout=10) as resp:
        return json.loads(resp.read())


CHECKOUT = Path(__file__).resolve().parent.parent


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def checkout_outputs_untouched() -> Iterator[None]:
    """Fail the session when a test wrote into the checkout's results/ or plots/."""
    before = {d: _listing(CHECKOUT / d) for d in ("results", "plots")}
    yield
    for folder, names in before.items():
        added = sorted(_listing(CHECKOUT / folder) - names)
        if added:
            pytest.fail(f"tests wrote into the checkout's {folder}/: {', '.join(added[:5])}", pytrace=False)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every command it runs) works in its own temporary folder, so the default
    results/ and plots/ land there, never in the checkout."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


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


def run_cli(*args: str, timeout: float = 300, max_file_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """`asyncbench ARGS` in a subprocess with a fixed 100-column, non-terminal console.

    `max_file_bytes` caps the size of every file it writes (RLIMIT_FSIZE), as a full disk would:
    a write past it fails with EFBIG.
    """
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "asyncbench", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
        preexec_fn=limit_files if max_file_bytes is not None else None,
    )


def run_in_pty(*args: str, columns: int = 100, timeout: float = 120,
               send_signal: tuple[str, int] | None = None, to_group: bool = False) -> tuple[int, str]:
    """`asyncbench ARGS` in a pseudo-terminal of `columns` columns, as a user types it: stdout and
    stderr are a terminal, so the live display runs. Returns (exit code, everything it printed).

    `send_signal=(text, signum)` sends `signum` once `text` has appeared in the output: to the
    process, or with `to_group` to its whole process group, as a terminal's Ctrl-C does.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "asyncbench", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not data:
                    break
                chunks.append(data)
                if send_signal and send_signal[0] in b"".join(chunks).decode("utf-8", "replace"):
                    if to_group:
                        os.killpg(proc.pid, send_signal[1])
                    else:
                        proc.send_signal(send_signal[1])
                    send_signal = None
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"asyncbench {' '.join(args)} did not finish in {timeout} s")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


def wait_for_line(stream: Any, text: str, proc: subprocess.Popen[str]) -> str:
    """Read `stream` line by line until one holds `text`: the sync point with a running command
    (it ends by itself when the command exits)."""
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"{text!r} never appeared (exit {proc.wait()}): {''.join(seen)}")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def result_files(results_dir: Path, experiment: str) -> tuple[Path, Path, Path]:
    """The run's CSV, JSON sidecar and -latency.csv (exactly one run in the folder)."""
    [main] = [p for p in results_dir.glob(f"{experiment}-*.csv") if not p.stem.endswith(("-latency", "-timeline"))]
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


# --- a raw HTTP/1.1 server that misbehaves on purpose --------------------------------------------

import socketserver  # noqa: E402


class RawServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 whose answers are written by the test, byte by byte:
    `respond(n, request_head, sock)` handles the n-th request (from 0) and returns False to close
    the connection. `requests` counts every request that reached it."""

    def __init__(self, respond: Callable[[int, bytes, socket.socket], bool], tls: Any = None) -> None:
        outer = self
        self.connections = 0
        self.requests = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer.connections += 1
                if tls is not None:
                    try:
                        self.request = tls.wrap_socket(self.request, server_side=True)
                    except OSError:
                        return  # the client refused our certificate
                try:
                    self._serve()
                except ConnectionError:
                    pass  # the client closed or reset the connection: that is its right

            def _serve(self) -> None:
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = self.request.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    outer.heads.append(head)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buf) < length:
                        buf += self.request.recv(65536)
                    outer.bodies.append(buf[:length])
                    buf = buf[length:]
                    with outer._lock:
                        n = outer.requests
                        outer.requests += 1
                    try:
                        if not respond(n, head, self.request):
                            return
                    except OSError:
                        return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 1024

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def http_response(status: int = 200, body: bytes = b"ok\n", headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 302: "Found", 429: "Too Many Requests", 503: "Service Unavailable"}.get(status, "X")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[int, bytes, socket.socket], bool]], RawServer]]:
    servers: list[RawServer] = []

    def start(respond: Callable[[int, bytes, socket.socket], bool], tls: Any = None) -> RawServer:
        servers.append(RawServer(respond, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
