"""The engine contract: `fast` and `aiohttp` mean the same thing by every figure they record.

Each test runs against a real server on 127.0.0.1 — the embedded server, nginx, or a raw socket
server that answers exactly as the test says — once per engine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess

import pytest
from conftest import http_response, read_csv, result_files, run_cli, server_stats

from asyncbench.engines import ENGINES, open_engine

pytestmark = pytest.mark.parametrize("engine", ENGINES)


def fetch_all(engine: str, url: str, n: int = 1, concurrency: int = 1, **spec) -> list:
    """`n` requests, one after another on each of `concurrency` slots, on a fresh engine."""
    settings = {"method": "GET", "headers": {}, "data": None, "timeout": 5.0, "retries": 0,
                "bounded": True, "insecure": False, **spec}

    async def run() -> list:
        async with open_engine(engine, url, concurrency=concurrency, **settings) as e:
            results = []
            for i in range(n):
                results.append(await e.fetch(i % concurrency))
            return results

    return asyncio.run(run())


def test_counts_equal_the_servers_own(engine, start_server, tmp_path):
    # A service time longer than the burst takes to arrive: admission is exactly the capacity.
    trap_url = start_server(latency=0.5, capacity=50, queue=0)
    trap = run_cli("trap", trap_url, "--engine", engine, "--levels", "10,80", "--cooldown", "0", "--no-plot",
                   "--results-dir", str(tmp_path / "t"))
    assert trap.returncode == 0, trap.stderr
    rows = {int(r["level"]): r for r in read_csv(result_files(tmp_path / "t", "trap")[0])}
    assert int(rows[80]["errors_http_5xx"]) == 30 and int(rows[80]["successes"]) == 50
    stats = server_stats(trap_url)
    assert stats["received"] == 10 + 80 + 1  # + the pre-flight
    assert stats["shed"] == 30
    sem_url = start_server(latency=0.01, capacity=1000, queue=0)
    sem = run_cli("semaphore", sem_url, "--engine", engine, "--limits", "5,20", "--requests", "200",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "s"))
    assert sem.returncode == 0, sem.stderr
    stats = server_stats(sem_url)
    assert stats["received"] == stats["served"] == 400 + 1
    assert stats["peak_in_flight"] <= 20
    meta = json.loads(result_files(tmp_path / "s", "semaphore")[1].read_text())
    assert meta["engine"] == engine


def test_the_trap_opens_a_connection_per_request_and_the_semaphore_keeps_its_limit(engine, raw_server, tmp_path):
    server = raw_server(lambda n, head, sock: sock.sendall(http_response(200)) or True)
    out = run_cli("trap", server.url, "--engine", engine, "--levels", "30", "--cooldown", "0", "--no-plot",
                  "--results-dir", str(tmp_path / "t"))
    assert out.returncode == 0, out.stderr
    assert server.connections == 30 + 1  # + the pre-flight's
    before = server.connections
    out = run_cli("semaphore", server.url, "--engine", engine, "--limits", "4", "--requests", "200",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stderr
    assert server.connections - before == 4 + 1  # keep-alive: 4 connections carry 200 requests


def test_method_headers_and_body_reach_the_target(engine, raw_server):
    server = raw_server(lambda n, head, sock: sock.sendall(http_response(201)) or True)
    [r] = fetch_all(engine, server.url + "items?x=1", method="PUT", headers={"X-Trace": "t-1"}, data=b'{"a": 1}')
    assert r.ok and r.status == 201
    head = server.heads[0].decode()
    assert head.startswith("PUT /items?x=1 HTTP/1.1\r\n")
    assert "X-Trace: t-1" in head
    assert server.bodies[0] == b'{"a": 1}'


def test_redirects_are_answers_not_followed(engine, raw_server):
    server = raw_server(lambda n, head, sock: sock.sendall(http_response(302, b"", {"Location": "/elsewhere"})) or True)
    [r] = fetch_all(engine, server.url)
    assert r.ok and r.status == 302 and r.attempts == 1
    assert server.requests == 1


@pytest.mark.parametrize(("answer", "body_bytes"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 11),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", 11),
])
def test_framed_bodies_are_read_to_the_end_on_a_kept_connection(engine, answer, body_bytes, raw_server):
    server = raw_server(lambda n, head, sock: sock.sendall(answer) or True)
    results = fetch_all(engine, server.url, n=3)
    assert [(r.ok, r.body_bytes) for r in results] == [(True, body_bytes)] * 3
    assert server.connections == 1


def test_a_close_delimited_body_and_connection_close_reconnect(engine, raw_server):
    def respond(n: int, head: bytes, sock) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world, till the end")
        return False  # close: the end of the body

    server = raw_server(respond)
    results = fetch_all(engine, server.url, n=4)
    assert [(r.ok, r.body_bytes) for r in results] == [(True, 25)] * 4
    assert server.connections == 4


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\nonly part of it",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Le",
])
def test_a_body_cut_short_by_the_close_is_an_error_not_a_success(engine, answer, raw_server):
    server = raw_server(lambda n, head, sock: sock.sendall(answer) or False)
    [r] = fetch_all(engine, server.url)
    assert not r.ok and r.error in ("connect", "other"), r


def _longer_than_its_length(n, head, sock) -> bool:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nokXTRA-BYTES")  # 9 bytes past its end
    return True


def _two_mb_of_headers(n, head, sock) -> bool:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: " + b"a" * (2 * 1024 * 1024) + b"\r\n\r\nok")
    return True


def _hundred_thousand_headers(n, head, sock) -> bool:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(100_000))
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + fields + b"\r\nok")
    return True


@pytest.mark.parametrize("answer", [_longer_than_its_length, _two_mb_of_headers, _hundred_thousand_headers],
                         ids=["body-past-content-length", "2-MB-of-headers", "100000-headers"])
def test_malformed_answers_are_failures_in_both_engines(engine, answer, raw_server):
    # A stream out of step with its requests, or a head past 64 KiB, is not a success: both
    # engines fail each such answer as `other`, and the next request starts on a clean connection.
    server = raw_server(answer)
    results = fetch_all(engine, server.url, n=3)
    assert [(r.ok, r.error) for r in results] == [(False, "other")] * 3, [r.detail for r in results]
    assert server.requests == 3


def test_headers_that_never_end_fail_in_bounded_memory(engine, raw_server, tmp_path):
    def endless(n, head, sock) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(16 * 1024):  # up to 1 GiB of one header, unless the client hangs up first
            sock.sendall(b"a" * 65536)
        return False

    server = raw_server(endless)
    out = run_cli("trap", server.url, "--engine", engine, "--levels", "1", "--timeout", "30", "--no-plot",
                  "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "trap")[0])
    assert row["errors_other"] == "1"
    assert float(row["peak_rss_mb"]) < 300  # one request held 1.65 GB before the head was bounded


def test_the_steady_state_records_what_single_requests_record(engine, raw_server):
    # `run` (the path the CLI takes: a connection that drives itself) against the same answers
    # `fetch` gets: a kept connection, a close-delimited one, errors.
    answers = [http_response(200, b"hello"), http_response(503, b"busy"), http_response(200, b"again"),
               b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited"]

    def respond(n: int, head: bytes, sock) -> bool:
        answer = answers[n % len(answers)]
        sock.sendall(answer)
        return b"Connection: close" not in answer

    server = raw_server(respond)

    class Sink:
        def __init__(self) -> None:
            self.seen: list[tuple[bool, int | None, int]] = []

        def add(self, r) -> None:
            self.seen.append((r.ok, r.status, r.body_bytes))

        def success(self, sent_at: float, done_at: float, body_bytes: int) -> None:
            assert done_at >= sent_at
            self.seen.append((True, None, body_bytes))

    async def run() -> Sink:
        sink = Sink()
        async with open_engine(engine, server.url, "GET", {}, None, 5.0, 0, 1, True, False) as e:
            await e.run(12, sink)
        return sink

    seen = asyncio.run(run()).seen
    # A plain success may be recorded without its status: compare what every engine records.
    assert [(ok, body) for ok, _, body in seen] == [(True, 5), (False, 4), (True, 5), (True, 15)] * 3
    assert [status for ok, status, _ in seen if not ok] == [503] * 3
    assert server.requests == 12 and server.connections == 3


@pytest.mark.parametrize(("path", "method"), [("", "HEAD"), ("status/204", "GET"), ("status/304", "GET")])
def test_head_204_and_304_have_no_body(engine, path, method, start_server):
    url = start_server(latency=0.0) + "/" + path
    results = fetch_all(engine, url, n=3, method=method)
    assert all(r.ok and r.body_bytes == 0 for r in results), results


def test_errors_by_kind(engine, raw_server, start_server):
    refused = fetch_all(engine, "http://127.0.0.1:1/")[0]
    assert refused.error == "connect"
    garbage = raw_server(lambda n, head, sock: sock.sendall(b"NOT HTTP AT ALL\r\n\r\n") or False)
    assert fetch_all(engine, garbage.url)[0].error in ("other", "connect")
    reset = raw_server(lambda n, head, sock: False)  # read the request, close without a word
    assert fetch_all(engine, reset.url)[0].error == "connect"
    url = start_server(latency=0.0)
    assert fetch_all(engine, url + "/status/404")[0].error == "http_4xx"
    assert fetch_all(engine, url + "/status/500")[0].error == "http_5xx"


def test_a_timeout_bounds_the_recorded_latency(engine, raw_server):
    silent = raw_server(lambda n, head, sock: sock.recv(1) is None)  # reads, never answers
    [r] = fetch_all(engine, silent.url, timeout=0.3)
    assert r.error == "timeout"
    assert 0.3 <= r.latency_s < 3.0


def test_retries_honour_retry_after(engine, raw_server):
    def respond(n: int, head: bytes, sock) -> bool:
        sock.sendall(http_response(503, b"busy", {"Retry-After": "0"}) if n < 2 else http_response(200))
        return True

    server = raw_server(respond)
    [r] = fetch_all(engine, server.url, retries=3)
    assert r.ok and r.attempts == 3 and server.requests == 3
    never = raw_server(lambda n, head, sock: sock.sendall(http_response(404)) or True)
    [r] = fetch_all(engine, never.url, retries=3)
    assert r.error == "http_4xx" and r.attempts == 1  # a plain 4xx is never retried


@pytest.fixture
def tls_context(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_with_a_self_signed_certificate(engine, raw_server, tls_context, tmp_path):
    server = raw_server(lambda n, head, sock: sock.sendall(http_response(200)) or True, tls=tls_context)
    [refused] = fetch_all(engine, server.url)
    assert refused.error == "connect" and "certificate" in (refused.detail or "").lower()
    results = fetch_all(engine, server.url, n=3, insecure=True)
    assert all(r.ok for r in results)
    out = run_cli("semaphore", server.url, "--engine", engine, "--insecure", "--limits", "2", "--requests", "10",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert "success" in out.stdout


def test_the_same_trap_success_rates_on_nginx(engine, nginx, tmp_path):
    out = run_cli("trap", nginx["url"] + "/", "--engine", engine, "--levels", "1,50,200", "--cooldown", "0",
                  "--no-plot", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert all(float(r["success_rate"]) == 1.0 for r in read_csv(result_files(tmp_path, "trap")[0]))
