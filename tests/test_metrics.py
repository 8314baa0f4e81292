"""Statistics on hand-built inputs with exact expected outputs."""

from __future__ import annotations

import random

import pytest

from asyncbench.client import FetchResult
from asyncbench.metrics import (
    LatencyHistogram,
    LevelRecorder,
    RoundFacts,
    summarize,
    sweet_spot,
    warnings_for,
)


def test_histogram_quantiles_are_within_one_percent():
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-3, 1.2) for _ in range(20_000))
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        exact = values[max(0, int(q * len(values)) - 1)]
        assert hist.quantile(q) == pytest.approx(exact, rel=0.011)
    assert hist.quantile(1.0) == values[-1]
    assert hist.mean == pytest.approx(sum(values) / len(values))
    assert hist.count == len(values)


def test_histogram_memory_does_not_grow_with_samples():
    hist = LatencyHistogram()
    buckets = len(hist.counts)
    for i in range(100_000):
        hist.record(0.001 * (1 + i % 500))
    assert len(hist.counts) == buckets


def test_histogram_merge_equals_recording_together():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(1, 1000):
        (a if i % 2 else b).record(i / 1000)
        both.record(i / 1000)
    a.merge(b)
    assert list(a.counts) == list(both.counts) and a.count == both.count
    assert a.quantile(0.5) == both.quantile(0.5)


def _result(ok: bool, latency: float, sent: float, error=None, status=200) -> FetchResult:
    return FetchResult(ok=ok, status=status, latency_s=latency, attempts=1, error=error,
                       sent_at=sent, done_at=sent + latency)


def test_summarize_counts_rates_and_littles_law():
    rec = LevelRecorder()
    # 8 successes of 0.1 s and 2 shed at once, all sent at t=0: elapsed 0.1 s.
    for _ in range(8):
        rec.add(_result(True, 0.1, 0.0))
    for _ in range(2):
        rec.add(_result(False, 0.001, 0.0, error="http_5xx", status=503))
    row = summarize("trap", 10, [(rec, RoundFacts(50.0, 10.0, 0.0))])
    assert (row.requests, row.successes, row.failures, row.errors_http_5xx) == (10, 8, 2, 2)
    assert row.success_rate == 0.8
    assert row.elapsed_s == pytest.approx(0.1)
    assert row.throughput_rps == pytest.approx(100.0)
    assert row.goodput_rps == pytest.approx(80.0)
    assert row.latency_mean_s == pytest.approx(0.0802)
    assert row.littles_l == pytest.approx(100.0 * 0.0802)
    assert row.efficiency == pytest.approx(row.littles_l / 10)
    assert row.latency_max_s == pytest.approx(0.1)
    assert not row.client_limited


def test_rounds_pool_counts_and_take_the_median_rate():
    rounds = []
    for elapsed in (1.0, 2.0, 4.0):
        rec = LevelRecorder()
        for _ in range(10):
            rec.add(_result(True, elapsed, 0.0))
        rounds.append((rec, RoundFacts(10.0, 5.0, 0.0)))
    row = summarize("trap", 10, rounds)
    assert row.requests == 30 and row.rounds == 3
    assert row.goodput_rps == pytest.approx(5.0)  # the median of 10, 5, 2.5
    assert (row.goodput_min_rps, row.goodput_max_rps) == (pytest.approx(2.5), pytest.approx(10.0))
    assert any("varied" in n for n in warnings_for(row, 0.99))


def test_client_saturation_is_flagged():
    rec = LevelRecorder()
    rec.add(_result(True, 0.1, 0.0))
    row = summarize("trap", 1000, [(rec, RoundFacts(10.0, 99.0, 0.4, loop_late_share=0.6))])
    assert row.client_limited
    assert any("the client was the limit" in n for n in warnings_for(row, 0.99))
    # One stall (the connection storm at the start) in a loop that then keeps up is not.
    row = summarize("trap", 1000, [(rec, RoundFacts(10.0, 99.0, 0.4, loop_late_share=0.1))])
    assert not row.client_limited


def _row(level: int, goodput: float, success: float, lag: float = 0.0, requests: int | None = None):
    """A sustained level (10 requests per slot) unless `requests` says otherwise; 0.1 s long."""
    rec = LevelRecorder()
    rec.add(_result(True, 0.1, 0.0))
    row = summarize("semaphore", level, [(rec, RoundFacts(1.0, 1.0, lag))])
    row.goodput_rps, row.success_rate = goodput, success
    row.requests = 10 * level if requests is None else requests
    return row


def test_sweet_spot_is_best_goodput_above_the_floor_ties_to_lowest():
    rows = [_row(10, 100, 1.0), _row(50, 300, 1.0), _row(100, 300, 0.995), _row(500, 900, 0.6)]
    assert sweet_spot(rows, 0.99).level == 50
    assert sweet_spot(rows, 0.5).level == 500
    assert sweet_spot(rows, 1.0).level == 50
    assert sweet_spot([_row(10, 1, 0.2)], 0.99) is None
    # Within 2 % is a tie (noise): the lower level wins; beyond it, the higher goodput does.
    assert sweet_spot([_row(100, 1657, 1.0), _row(200, 1670, 1.0)], 0.99).level == 100
    assert sweet_spot([_row(100, 1600, 1.0), _row(200, 1670, 1.0)], 0.99).level == 200
    # A level measured coarsely (its loop 10 ms late over its 0.1 s) is known to 10 %: 4 % is a tie.
    assert sweet_spot([_row(100, 1600, 1.0), _row(200, 1670, 1.0, lag=0.01)], 0.99).level == 100
    assert sweet_spot([_row(100, 1400, 1.0), _row(200, 1670, 1.0, lag=0.01)], 0.99).level == 200
    # So is a level sent as one burst (as many requests as the level): 8 % apart is a tie.
    assert sweet_spot([_row(100, 1460, 1.0, requests=100), _row(200, 1580, 1.0, requests=200)], 0.99).level == 100
    assert sweet_spot([_row(100, 1300, 1.0, requests=100), _row(200, 1580, 1.0, requests=200)], 0.99).level == 200


def test_shards_merge_exactly_and_survive_serialization():
    import json
    import random

    from asyncbench.metrics import LevelRecorder

    rng = random.Random(7)
    # Each shard runs on its own clock (another process, another machine): its times count
    # from its own start, which is all a merge needs.
    whole = LevelRecorder(origin=50.0)
    shards = [LevelRecorder(origin=1000.0 * k) for k in range(3)]
    for i in range(3000):
        latency = rng.lognormvariate(-3, 0.8)
        status = rng.choice([200, 200, 200, 503, 429])
        ok = status < 400
        sent = i * 0.001
        shard = shards[i % 3]
        result = FetchResult(ok, status, latency, 1, None if ok else ("http_5xx" if status >= 500 else "http_4xx"),
                             sent_at=50.0 + sent, done_at=50.0 + sent + latency, body_bytes=100)
        whole.add(result)
        if ok and i % 2:  # the engines' hot path, recording a plain success without a record
            shard.success(shard.origin + sent, shard.origin + sent + latency, 100)
        else:
            result.sent_at, result.done_at = shard.origin + sent, shard.origin + sent + latency
            shard.add(result)
    merged = LevelRecorder()
    for shard in shards:
        merged.merge(LevelRecorder.from_dict(json.loads(json.dumps(shard.to_dict()))))
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        assert merged.latency.quantile(q) == whole.latency.quantile(q)
    a, b = merged.to_dict(), whole.to_dict()
    # Sums of floats depend on their order, and times on the clock they were taken from:
    # those match to rounding, everything else exactly.
    for key in ("first_sent", "last_done"):
        assert a.pop(key) == pytest.approx(b.pop(key), abs=1e-9)
    assert a["latency"].pop("total") == pytest.approx(b["latency"].pop("total"), rel=1e-12)
    assert a == b
    assert merged.elapsed_s == pytest.approx(whole.elapsed_s, abs=1e-9)
