"""Shared by the benchmarks: the reference peers (wrk, a bare aiohttp loop, nginx) and asyncbench
itself, each measured the same way on the same target. Run by hand, never by CI."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        sys.exit(f"{binary} is not installed: apt-get install {package}")
    return path


def _wrk_seconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(url: str, connections: int, seconds: float, threads: int = 1) -> dict[str, float]:
    """req/s and p50 (s) from wrk --latency."""
    out = subprocess.run(
        [need("wrk", "wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _wrk_seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_s": p50}


def bare_aiohttp(url: str, workers: int, seconds: float) -> dict[str, float]:
    """A bare aiohttp loop: `workers` coroutines on one session, no instrumentation but a count."""

    async def main() -> dict[str, float]:
        done = 0
        stop_at = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=workers)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < stop_at:
                    async with session.get(url) as resp:
                        await resp.read()
                    done += 1

            start = time.perf_counter()
            cpu0 = time.process_time()
            await asyncio.gather(*(worker() for _ in range(workers)))
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0
        return {"rps": done / wall, "cpu_pct": 100 * cpu / wall}

    return asyncio.run(main())


def asyncbench_semaphore(url: str, limit: int, requests: int, extra: list[str] | None = None) -> dict[str, float]:
    """Run `asyncbench semaphore` as a user would; read its CSV row."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "asyncbench", "semaphore", url, "--limits", str(limit),
             "--requests", str(requests), "--cooldown", "0", "--no-plot", "--results-dir", tmp, *(extra or [])],
            check=True, capture_output=True, text=True,
        )
        [path] = [p for p in Path(tmp).glob("semaphore-*.csv") if not p.stem.endswith("latency")]
        with open(path, newline="") as f:
            [row] = list(csv.DictReader(f))
    return {
        "rps": float(row["throughput_rps"]),
        "p50_s": float(row["latency_p50_s"]),
        "cpu_pct": float(row["client_cpu_pct"]),
        "peak_rss_mb": float(row["peak_rss_mb"]),
        "success_rate": float(row["success_rate"]),
    }


@contextmanager
def nginx(delay_ms: int = 0) -> Iterator[str]:
    """nginx on a free 127.0.0.1 port returning 200 'hello world\\n' (optionally after `delay_ms`,
    with the echo module's echo_sleep: Debian's libnginx-mod-http-echo)."""
    with _nginx(delay_ms, tls=False) as (url, _):
        yield url


@contextmanager
def nginx_tls(delay_ms: int = 0) -> Iterator[tuple[str, Path]]:
    """nginx as `nginx()`, over TLS with a certificate for 127.0.0.1 from a throwaway CA
    (trustme) and a shared session cache: (the https URL, the CA to trust)."""
    with _nginx(delay_ms, tls=True) as (url, ca):
        assert ca is not None
        yield url, ca


@contextmanager
def _nginx(delay_ms: int, tls: bool) -> Iterator[tuple[str, Path | None]]:
    binary = need("nginx", "nginx-light")
    module = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
    if delay_ms and not os.path.exists(module):
        sys.exit("nginx's echo module is not installed: apt-get install libnginx-mod-http-echo")
    load = f"load_module {module};" if delay_ms else ""
    answer = (f'echo_sleep {delay_ms / 1000:g}; echo "hello world";' if delay_ms
              else 'return 200 "hello world\\n";')
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(tempfile.mkdtemp(prefix="asyncbench-nginx-"))
    ca = None
    ssl = ""
    if tls:
        from asyncbench.server import throwaway_certificate

        ca, cert, key = throwaway_certificate(root, ["127.0.0.1", "localhost"])
        ssl = (f"ssl_certificate {cert}; ssl_certificate_key {key}; "
               "ssl_session_cache shared:bench:10m; ssl_session_tickets on;")
    user = "user root;" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(f"""
{load}
{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log error;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    server {{
        listen 127.0.0.1:{port} backlog=4096{" ssl" if tls else ""};
        {ssl}
        location / {{ {answer} }}
    }}
}}
""")
    proc = subprocess.Popen([binary, "-p", str(root), "-c", str(root / "nginx.conf")])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/", ca
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values)
