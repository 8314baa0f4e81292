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


def test_histogram_quantiles_are_within_a_tenth_of_a_percent():
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-3, 1.2) for _ in range(20_000))
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        exact = values[max(0, int(q * len(values)) - 1)]
        assert hist.quantile(q) == pytest.approx(exact, rel=0.001)
    assert hist.quantile(1.0) == values[-1]
    assert hist.mean == pytest.approx(sum(values) / len(values))
    assert hist.count == len(values)


def test_percentiles_are_never_outside_what_was_measured():
    # nginx echo_sleep 0.02: every latency a little above 20 ms. A 1 % bucket's midpoint would
    # report 19.8 ms; three significant digits never go below the fastest request.
    values = [0.0200 + i * 0.0000005 for i in range(1000)]
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    for q in (0.001, 0.01, 0.5, 0.99, 0.999, 1.0):
        assert values[0] <= hist.quantile(q) <= values[-1]
    assert hist.quantile(0.5) == pytest.approx(values[499], rel=0.001)
    one = LatencyHistogram()
    one.record(0.0123)
    assert one.quantile(0.5) == one.quantile(0.99) == 0.0123


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
    assert row.ok_latency_p50_s == pytest.approx(0.1, rel=0.001) and row.ok_latency_max_s == pytest.approx(0.1)


def test_fast_failures_do_not_hide_in_the_latency_of_successes():
    # An overloaded level: 2 served in 50 ms, 98 shed with a 503 in 0.2 ms.
    rec = LevelRecorder()
    for _ in range(2):
        rec.add(_result(True, 0.05, 0.0))
    for _ in range(98):
        rec.add(_result(False, 0.0002, 0.0, error="http_5xx", status=503))
    row = summarize("trap", 100, [(rec, RoundFacts(50.0, 10.0, 0.0))])
    assert row.latency_p50_s == pytest.approx(0.0002, rel=0.001)  # every request, as the contract says
    assert row.ok_latency_p50_s == pytest.approx(0.05, rel=0.001)  # what a served request took
    assert row.ok_latency_p99_s == pytest.approx(0.05, rel=0.001) and row.ok_latency_max_s == pytest.approx(0.05)
    nothing = LevelRecorder()
    nothing.add(_result(False, 0.0002, 0.0, error="http_5xx", status=503))
    row = summarize("trap", 1, [(nothing, RoundFacts(50.0, 10.0, 0.0))])
    assert row.ok_latency_p50_s == 0.0 and row.ok_latency_max_s == 0.0


def test_throttled_attempts_are_counted_retried_ones_too():
    from asyncbench.engines.retry import Attempt, result

    rec = LevelRecorder()
    retried = _result(True, 0.3, 0.0)
    retried.attempts, retried.throttled = 3, 2  # two 429s, then served
    rec.add(retried)
    rec.add(result(Attempt(status=429, error="http_4xx"), 1, 0.0, 0.001))  # a 429: throttled
    rec.add(result(Attempt(status=503, error="http_5xx", retry_after=1.0), 1, 0.0, 0.001))  # said when to return
    rec.add(result(Attempt(status=503, error="http_5xx"), 1, 0.0, 0.001))  # shed: not throttled
    row = summarize("semaphore", 1, [(rec, RoundFacts(50.0, 10.0, 0.0))])
    assert row.throttled == 4 and row.attempts == 6
    assert LevelRecorder.from_dict(rec.to_dict()).throttled == 4


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


def _row(level: int, goodput: float, success: float, lag: float = 0.0, requests: int | None = None,
         elapsed: float = 10.0):
    """A sustained level (10 requests per slot, 0.1 s each) unless `requests` says otherwise,
    `elapsed` seconds long."""
    rec = LevelRecorder()
    rec.add(_result(True, 0.1, 0.0))
    row = summarize("semaphore", level, [(rec, RoundFacts(1.0, 1.0, lag))])
    row.goodput_rps, row.success_rate, row.elapsed_s = goodput, success, elapsed
    row.requests = 10 * level if requests is None else requests
    return row


def test_sweet_spot_is_the_knee_of_goodput_above_the_floor():
    rows = [_row(10, 100, 1.0), _row(50, 300, 1.0), _row(100, 300, 0.995), _row(500, 900, 0.6)]
    assert sweet_spot(rows, 0.99).level == 50
    assert sweet_spot(rows, 0.5).level == 500
    assert sweet_spot(rows, 1.0).level == 50
    assert sweet_spot([_row(10, 1, 0.2)], 0.99) is None
    # Within 5 % of the best is as good (the knee): the lower level wins; beyond it, the higher goodput.
    assert sweet_spot([_row(100, 1600, 1.0), _row(200, 1670, 1.0)], 0.99).level == 100
    assert sweet_spot([_row(100, 1500, 1.0), _row(200, 1670, 1.0)], 0.99).level == 200
    # The default semaphore's limits 100 and 200, both at the server's capacity (measured), in
    # either order of noise: the answer does not flip.
    for g100, g200 in ((1658, 1700), (1700, 1658)):
        rows = [_row(50, 888, 1.0, elapsed=1.13), _row(100, g100, 1.0, elapsed=0.6), _row(200, g200, 1.0, elapsed=0.59),
                _row(500, 1566, 1.0, elapsed=0.64)]
        assert sweet_spot(rows, 0.99).level == 100
    # A short level (0.5 s of 0.1 s requests) is known to 20 %: 16 % apart is a tie.
    assert sweet_spot([_row(100, 1400, 1.0, elapsed=0.5), _row(200, 1670, 1.0)], 0.99).level == 100
    # A level measured coarsely (its loop 100 ms late over its 1 s) is known to 10 %: 7 % is a tie.
    assert sweet_spot([_row(100, 1550, 1.0), _row(200, 1670, 1.0, lag=0.1, elapsed=1.0)], 0.99).level == 100
    assert sweet_spot([_row(100, 1400, 1.0), _row(200, 1670, 1.0, lag=0.1, elapsed=1.0)], 0.99).level == 200
    # So is a level sent as one burst (as many requests as the level): 8 % apart is a tie.
    assert sweet_spot([_row(100, 1460, 1.0, requests=100), _row(200, 1580, 1.0, requests=200)], 0.99).level == 100
    assert sweet_spot([_row(100, 1300, 1.0, requests=100), _row(200, 1580, 1.0, requests=200)], 0.99).level == 200
    # A level named excluded (the target went away during it) is never the answer.
    assert sweet_spot([_row(100, 1300, 1.0), _row(200, 1580, 1.0)], 0.99, excluded=[200]).level == 100


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
    for hist in ("ok", "failed"):
        assert a[hist].pop("total") == pytest.approx(b[hist].pop("total"), rel=1e-12)
    assert a == b
    assert merged.elapsed_s == pytest.approx(whole.elapsed_s, abs=1e-9)
