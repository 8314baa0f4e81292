"""The embedded target seen from outside: capacity, queue, shedding, latency, faults, endpoints."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter

from conftest import server_stats

from asyncbench.client import AsyncHttpClient
from asyncbench.server import ServerConfig, embed


def test_burst_beyond_capacity_and_queue_is_shed(start_server):
    # Service time far longer than it takes to open 200 connections: the whole burst arrives
    # before any request finishes, so admission is decided by capacity + queue alone.
    url = start_server(capacity=20, queue=30, latency=2.0)

    async def burst():
        async with AsyncHttpClient(max_concurrency=None, timeout=30) as client:
            return await client.fetch_batch([url] * 200)

    results = asyncio.run(burst())
    statuses = Counter(r.status for r in results)
    assert statuses == {200: 50, 503: 150}
    assert Counter(r.error for r in results) == {None: 50, "http_5xx": 150}
    stats = server_stats(url)
    assert stats["received"] == 200
    assert stats["served"] == 50
    assert stats["shed"] == 150
    assert stats["peak_in_flight"] == 50
    assert stats["peak_in_service"] == 20
    assert stats["in_flight"] == 0


def test_light_load_takes_the_service_time(start_server):
    url = start_server(latency=0.2)

    async def sequential():
        async with AsyncHttpClient(max_concurrency=1) as client:
            return [await client.fetch(url) for _ in range(5)]

    for r in asyncio.run(sequential()):
        assert r.ok
        # Never faster than the service time; the upper bound only rules out a gross error.
        assert 0.2 <= r.latency_s < 0.2 + 1.0


def test_jitter_stays_within_its_bounds(start_server):
    url = start_server(latency=0.2, jitter=0.1, seed=7)

    async def sequential():
        async with AsyncHttpClient(max_concurrency=1) as client:
            return [await client.fetch(url) for _ in range(10)]

    latencies = [r.latency_s for r in asyncio.run(sequential())]
    assert min(latencies) >= 0.1
    assert max(latencies) < 0.3 + 1.0
    assert len({round(x, 3) for x in latencies}) > 1  # it does vary


def test_embed_is_deterministic_and_validates(start_server):
    url = start_server(latency=0.0)

    async def calls():
        async with AsyncHttpClient(max_concurrency=4) as client:
            a = await client.fetch(url + "/embed", method="POST", json={"id": 1, "text": "hello"})
            b = await client.fetch(url + "/embed", method="POST", json={"id": 2, "text": "hello"})
            bad = await client.fetch(url + "/embed", method="POST", data=b"{not json")
            missing = await client.fetch(url + "/embed", method="POST", json={"id": 3})
            return a, b, bad, missing

    a, b, bad, missing = asyncio.run(calls())
    assert a.ok and a.json()["id"] == 1
    assert a.json()["embedding"] == b.json()["embedding"] == embed("hello")
    assert embed("hello") != embed("hello!")
    assert abs(sum(v * v for v in embed("hello")) - 1.0) < 1e-4
    assert bad.status == 400 and bad.error == "http_4xx"
    assert missing.status == 400
    stats = server_stats(url)
    assert stats["bad_requests"] == 2
    assert stats["served"] == 2


def test_rate_limit_answers_429_with_retry_after(start_server):
    url = start_server(latency=0.0, rate_limit=2)
    codes = []
    retry_after = None
    for _ in range(5):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                codes.append(resp.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
            retry_after = exc.headers["Retry-After"]
    assert codes[:2] == [200, 200]
    assert 429 in codes[2:]
    assert retry_after is not None and int(retry_after) >= 1
    assert server_stats(url)["rate_limited"] == codes.count(429)


def test_stats_reset(start_server):
    url = start_server(latency=0.0)
    urllib.request.urlopen(url, timeout=10).read()
    assert server_stats(url)["received"] == 1
    req = urllib.request.Request(url + "/stats", method="DELETE")
    urllib.request.urlopen(req, timeout=10).read()
    assert server_stats(url)["received"] == 0


def test_status_endpoint(start_server):
    url = start_server()
    try:
        urllib.request.urlopen(url + "/status/418", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 418
    else:
        raise AssertionError("expected 418")


def test_invalid_settings_are_named():
    for settings, name in [({"capacity": 0}, "--capacity"), ({"error_rate": 1.5}, "--error-rate")]:
        try:
            ServerConfig(**settings).validate()
        except ValueError as exc:
            assert name in str(exc)
        else:
            raise AssertionError(f"{settings} accepted")


def test_serve_command_prints_its_url_answers_and_stops_on_sigint():
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncbench", "serve", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "serve printed nothing"
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.split("listening on ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "stopped" in out


def test_serve_rejects_bad_values_with_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "asyncbench", "serve", "--port", "0", "--capacity", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--capacity 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_embedded_server_stops_when_its_parent_dies(tmp_path):
    # The child watches its stdin; a parent that dies without stopping it must not leave it behind.
    script = (
        "from asyncbench.server import EmbeddedServer\n"
        "s = EmbeddedServer(); print(s.start(), s._proc.pid, flush=True)\n"
        "import os; os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    url, pid = out.stdout.split()
    pid = int(pid)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        # A pidfd becomes readable when the process exits: an event, not a guess at timing.
        exited, _, _ = select.select([pidfd], [], [], 30)
    finally:
        os.close(pidfd)
    if not exited:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the embedded server outlived its parent")
