"""The concurrency limiters on their own: a deterministic clock, synthetic samples, exact limits;
and the gate that turns one into what a client awaits."""

from __future__ import annotations

import asyncio

import pytest

from asyncbench import AIMD, Fixed, Gate, Gradient, Limiter
from asyncbench.limiters import make_limiter


def test_fixed_never_moves():
    limiter = Fixed(7)
    for i in range(100):
        limiter.update(0.5, i % 2 == 0, 7, float(i))
    assert limiter.limit == limiter.max_limit == 7
    assert isinstance(limiter, Limiter)


def test_aimd_slow_start_then_backoff_once_per_round_trip_and_one_per_refusal_within_it():
    aimd = AIMD(10, max_limit=1000, increase=2.0, backoff=0.9)
    for i in range(5):  # slow start: one more per sample while the limit is used
        aimd.update(0.05, False, 10, i * 0.001)
    assert aimd.limit == 15 and aimd.slow_start
    aimd.update(0.001, True, 15, 1.0)  # the first refusal ends slow start: halved, held for a round trip
    assert aimd.limit == 7 and not aimd.slow_start  # 7.5
    aimd.update(0.001, True, 15, 1.01)  # within that round trip (0.05 s): it takes its place with it
    assert aimd.limit == 6  # 6.5
    aimd.update(0.001, True, 15, 1.06)  # a round trip later: × 0.9
    expected = 6.5 * 0.9
    assert aimd.limit == int(expected) == 5
    for i in range(20):  # additive increase: `increase` / limit per sample
        aimd.update(0.05, False, 11, 1.07 + i * 0.001)
        expected += 2.0 / expected
    assert aimd.limit == int(expected) == 10
    # Ten round trips (0.5 s) without congestion: the step doubles; twenty, it doubles again.
    aimd.update(0.05, False, 11, 1.06 + 0.5)
    expected += 4.0 / expected
    aimd.update(0.05, False, 11, 1.06 + 1.0)
    expected += 8.0 / expected
    assert aimd.limit == int(expected) == 11


def test_aimd_backs_off_when_latency_rises_above_its_baseline():
    aimd = AIMD(20, smoothing=1.0, tolerance=1.5, baseline_block=4)  # short-term = the last sample
    for i in range(4):
        aimd.update(0.1, False, 20, i * 0.01)
    assert aimd.limit == 24 and aimd.baseline == pytest.approx(0.1)
    aimd.update(0.2, False, 24, 1.0)  # twice the baseline, past 1.5 ×: slow start ends, halved, held 0.2 s
    assert aimd.limit == 12
    aimd.update(0.2, False, 12, 1.1)  # still slow, within the hold: no second decrease
    assert aimd.limit == 12
    aimd.update(0.1, False, 12, 1.15)  # normal again: + 2 / 12
    assert aimd.limit == 12
    aimd.update(0.2, False, 12, 1.3)  # past the hold: × 0.9
    assert aimd.limit == int((12 + 2 / 12) * 0.9) == 10


def test_aimd_does_not_grow_a_limit_it_does_not_use_and_stays_in_its_bounds():
    aimd = AIMD(10, min_limit=2, max_limit=12)
    for i in range(50):
        aimd.update(0.05, False, 4, i * 0.001)  # 4 of 10 in flight: the limit is not what holds it back
    assert aimd.limit == 10
    for i in range(50):
        aimd.update(0.05, False, 10, 1 + i * 0.001)
    assert aimd.limit == 12
    for i in range(100):
        aimd.update(0.001, True, 12, 2 + i)
    assert aimd.limit == 2


def test_gradient_windows_exactly():
    # Times in binary fractions, so that a window's length is exact.
    g = Gradient(10, min_window=0.25, min_samples=2, baseline_block=2, window_rtts=1.0, tolerance=1.1, queue=2.0,
                 smoothing=0.5)
    g.update(0.1, False, 10, 0.0)
    g.update(0.1, False, 10, 0.25)  # window closes: no queue (gradient 1.1), slow start doubles
    assert g.limit == 20 and g.slow_start
    g.update(0.2, False, 20, 0.375)
    g.update(0.2, False, 20, 0.5)  # twice the baseline: gradient 0.55, new = 20 × 0.55 + 2, taken at once
    assert g.limit == 13 and not g.slow_start and g.baseline == pytest.approx(0.1)
    g.update(0.1, False, 13, 0.625)
    g.update(0.1, False, 13, 0.75)  # back to the baseline: 13 × 1.1 + 2 = 16.3, half the way up
    assert g.limit == 14  # 14.65
    g.update(0.001, True, 14, 0.875)  # a refusal takes its place at once
    assert g.limit == 13  # 13.65
    g.update(0.1, False, 14, 1.0)  # ... and caps the window's new limit at × 0.9
    assert g.limit == 12  # 12.285
    g.update(0.1, False, 3, 1.125)
    g.update(0.1, False, 3, 1.25)  # 3 in flight of 12: no reason to raise it
    assert g.limit == 12


def test_gradient_settles_at_the_knee_of_a_server_that_queues():
    """A server of capacity 40 and 50 ms service: above 40 in flight, latency grows as L / 40.
    The limit settles where the latency is `tolerance` × the baseline, plus the allowance."""
    g = Gradient(10)
    now = 0.0
    for _ in range(400):
        limit = g.limit
        rtt = 0.05 * max(1.0, limit / 40)
        for _ in range(limit):  # one round trip of samples
            g.update(rtt, False, limit, now)
        now += rtt
    assert 40 <= g.limit <= 48  # 1.1 × 40 + 2 = 46


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="initial must be from 1 to 5"):
        AIMD(10, max_limit=5)
    with pytest.raises(ValueError, match="backoff"):
        Gradient(backoff=1.5)
    with pytest.raises(ValueError, match="unknown algorithm 'vegas'"):
        make_limiter("vegas", 10, 100)
    assert isinstance(make_limiter("gradient", 10, 100), Gradient)


class Settable:
    """A limit the test moves by hand."""

    def __init__(self, limit: int) -> None:
        self.limit = self.max_limit = limit

    def update(self, rtt: float, dropped: bool, in_flight: int, now: float) -> None:
        pass


def test_the_gate_lets_in_what_the_limit_allows_first_come_first_served():
    async def main() -> list[int]:
        limiter = Settable(2)
        gate = Gate(limiter)
        order: list[int] = []
        release = asyncio.Event()

        async def holder(i: int) -> None:
            async with gate:
                order.append(i)
                await release.wait()

        tasks = [asyncio.create_task(holder(i)) for i in range(5)]
        while len(order) < 2:
            await asyncio.sleep(0)
        assert gate.in_flight == 2 and order == [0, 1]
        limiter.limit = 4  # the limit rises: the next one out lets the waiters in up to it
        release.set()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_gives_its_place_back():
    async def main() -> int:
        gate = Gate(Fixed(1))
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.release()
        await asyncio.wait_for(gate.acquire(), 5)  # not blocked by the cancelled one
        return gate.in_flight

    assert asyncio.run(main()) == 1


def test_waiters_cancelled_while_the_gate_is_passed_on_are_skipped():
    """A batch cancelled at once (Ctrl-C): every waiter goes, whether the gate saw it or not."""

    async def main() -> int:
        gate = Gate(Fixed(1))
        await gate.acquire()
        waiters = [asyncio.create_task(gate.acquire()) for _ in range(5)]
        await asyncio.sleep(0)
        for w in waiters[:3]:
            w.cancel()
        gate.release()  # passes over the cancelled ones: the fourth gets in
        results = await asyncio.gather(*waiters[:4], return_exceptions=True)
        assert [isinstance(r, asyncio.CancelledError) for r in results] == [True, True, True, False]
        gate.release()  # the fourth leaves: the fifth gets in
        await asyncio.wait_for(waiters[4], 5)
        return gate.in_flight

    assert asyncio.run(main()) == 1
