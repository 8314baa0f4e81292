"""AsyncHttpClient against the real embedded server: outcomes, retries, limits, clean shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from email.utils import formatdate

import pytest
from conftest import server_stats

from asyncbench.client import AsyncHttpClient, parse_retry_after


def run(coro):
    return asyncio.run(coro)


def test_transient_faults_are_retried_to_success_and_every_attempt_is_counted(start_server):
    # A seeded server and one request at a time make the fault sequence reproducible.
    url = start_server(latency=0.0, error_rate=0.3, seed=1234)

    async def batch():
        async with AsyncHttpClient(max_concurrency=1, retries=6, backoff_base=0.002) as client:
            return await client.fetch_batch([url] * 300)

    results = run(batch())
    assert all(r.ok for r in results)
    attempts = sum(r.attempts for r in results)
    assert attempts > 300  # faults happened and were retried
    stats = server_stats(url)
    assert stats["received"] == attempts
    assert stats["errors"] == attempts - 300
    assert stats["served"] == 300


def test_faults_under_concurrency_are_counted_exactly_once(start_server):
    url = start_server(latency=0.01, error_rate=0.3)

    async def batch():
        async with AsyncHttpClient(max_concurrency=20, retries=2, backoff_base=0.002) as client:
            return await client.fetch_batch([url] * 300)

    results = run(batch())
    stats = server_stats(url)
    assert stats["received"] == sum(r.attempts for r in results)
    assert stats["served"] == sum(r.ok for r in results)
    assert all(r.error in (None, "http_5xx") for r in results)


def test_429_waits_for_retry_after(start_server):
    url = start_server(latency=0.0, rate_limit=1)

    async def two():
        async with AsyncHttpClient(max_concurrency=1, retries=3) as client:
            first = await client.fetch(url)
            second = await client.fetch(url)  # the budget is spent: 429, Retry-After: 1
            return first, second

    first, second = run(two())
    assert first.ok and first.attempts == 1
    assert second.ok and second.attempts >= 2
    assert second.latency_s >= 1.0  # it waited for Retry-After before trying again
    assert server_stats(url)["rate_limited"] == second.attempts - 1


def test_429_is_the_result_when_retries_are_off(start_server):
    url = start_server(latency=0.0, rate_limit=1)

    async def two():
        async with AsyncHttpClient(max_concurrency=1, retries=0) as client:
            return [await client.fetch(url), await client.fetch(url)]

    _, second = run(two())
    assert second.status == 429 and second.error == "http_4xx" and second.attempts == 1


def test_plain_4xx_is_not_retried(start_server):
    url = start_server(latency=0.0)

    async def one():
        async with AsyncHttpClient(retries=5) as client:
            return await client.fetch(url + "/status/404")

    r = run(one())
    assert r.status == 404 and r.error == "http_4xx" and r.attempts == 1 and not r.ok
    assert server_stats(url)["received"] == 1


def test_refused_connection_is_a_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now.

    async def one():
        async with AsyncHttpClient(retries=2, backoff_base=0.001) as client:
            return await client.fetch(f"http://127.0.0.1:{port}/")

    r = run(one())
    assert r.error == "connect" and r.status is None and not r.ok
    assert r.attempts == 3  # connection errors are worth retrying


def test_slow_response_is_a_timeout(start_server):
    url = start_server(latency=5.0)

    async def one():
        async with AsyncHttpClient(timeout=0.3) as client:
            return await client.fetch(url)

    r = run(one())
    assert r.error == "timeout" and not r.ok
    assert r.latency_s >= 0.3


@pytest.mark.parametrize("k", [1, 7, 25])
def test_max_concurrency_bounds_the_requests_in_flight(start_server, k):
    url = start_server(latency=0.05, capacity=1000, queue=0)

    async def batch():
        async with AsyncHttpClient(max_concurrency=k) as client:
            return await client.fetch_batch([url] * (6 * k))

    results = run(batch())
    assert all(r.ok for r in results)
    assert server_stats(url)["peak_in_flight"] == k


def test_unbounded_client_is_not_capped_by_the_connector(start_server):
    # aiohttp's default connector allows 100 connections; the trap must not be capped by it.
    url = start_server(latency=1.0, capacity=1000, queue=0)

    async def burst():
        async with AsyncHttpClient(max_concurrency=None, timeout=30) as client:
            return await client.fetch_batch([url] * 300)

    assert all(r.ok for r in run(burst()))
    assert server_stats(url)["peak_in_flight"] == 300


def test_queue_wait_is_recorded_apart_from_latency(start_server):
    url = start_server(latency=0.1, capacity=100)

    async def batch():
        async with AsyncHttpClient(max_concurrency=2) as client:
            return await client.fetch_batch([url] * 6)

    results = run(batch())
    # Six requests through two slots: the last pair waited for two service times.
    assert max(r.queue_wait_s for r in results) >= 0.2
    assert all(r.latency_s < 0.1 + 1.0 for r in results)
    assert min(r.queue_wait_s for r in results) < 0.1


def test_fetch_batch_keeps_order(fast_server):
    codes = [200, 404, 201, 500, 204, 418]

    async def batch():
        async with AsyncHttpClient(max_concurrency=3) as client:
            return await client.fetch_batch([f"{fast_server}/status/{c}" for c in codes])

    assert [r.status for r in run(batch())] == codes


def test_session_is_closed_on_exit_and_on_cancellation(start_server):
    url = start_server(latency=5.0)
    seen = {}

    async def cancelled():
        async with AsyncHttpClient(max_concurrency=None) as client:
            seen["session"] = client.session
            task = asyncio.ensure_future(client.fetch_batch([url] * 20))
            await asyncio.sleep(0)  # let the batch start
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return client

    client = run(cancelled())
    assert seen["session"].closed
    with pytest.raises(RuntimeError, match="not open"):
        _ = client.session


def test_client_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_concurrency"):
        AsyncHttpClient(max_concurrency=0)
    with pytest.raises(ValueError, match="timeout"):
        AsyncHttpClient(timeout=0)


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    in_ten = parse_retry_after(formatdate(time.time() + 10, usegmt=True))
    assert in_ten is not None and 5 < in_ten <= 10
