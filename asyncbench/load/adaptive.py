"""A backlog under a concurrency limit: requests sent as fast as the limit allows, for a while.

There is always another request to send (a backlog, as a queue consumer or a batch job has):
whenever fewer than `limiter.limit` are out, more are launched — on a free kept-alive
connection, else a new one — and each that ends tells the limiter its round trip and whether
the server pushed back. Every `interval` seconds the limit, the requests in flight, the
successes and failures, the throttles and timeouts and the successes' latency are taken as one
row, handed to `on_interval` at once (so that a Ctrl-C keeps what was measured).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncbench.engines import open_engine
from asyncbench.limiters import Limiter
from asyncbench.load.open import round_facts
from asyncbench.load.spec import RequestSpec
from asyncbench.metrics import LatencyHistogram, LevelRecorder, RoundFacts
from asyncbench.records import FetchResult
from asyncbench.system import LoopLagMonitor, PeakRss, cpu_seconds

_perf = time.perf_counter


def pushed_back(result: FetchResult) -> bool:
    """Whether a failed request is the server saying "less": a 429 or 503, a timeout, a
    connection refused or reset (a 500 or a 404 is not: fewer requests would not mend it)."""
    return not result.ok and (result.status in (429, 503) or result.error in ("timeout", "connect"))


@dataclass
class Interval:
    """One interval of a run, as measured."""

    t_s: float  # its end, seconds from the start
    limit: int  # the limit at its end
    in_flight: int  # requests out at its end
    successes: int
    failures: int
    throttled: int  # 429s and 503s
    timeouts: int
    ok: LatencyHistogram  # the successes' latency


class AdaptRecorder(LevelRecorder):
    """A LevelRecorder (the run's totals) that also feeds the limiter and cuts the run into
    intervals. Every request that ends lets the limiter decide, then tops the backlog up."""

    __slots__ = ("limiter", "engine", "wake", "slice_ok", "slice_successes", "slice_failures", "slice_throttled",
                 "slice_timeouts", "sent")

    def __init__(self, limiter: Limiter, interval: float = 1.0) -> None:
        super().__init__(interval=interval)
        self.limiter = limiter
        self.engine: Any = None
        self.wake: Callable[[], None] = lambda: None
        self.sent = 0
        self._new_slice()

    def _new_slice(self) -> None:
        self.slice_ok = LatencyHistogram()
        self.slice_successes = self.slice_failures = self.slice_throttled = self.slice_timeouts = 0

    def cut(self, t_s: float) -> Interval:
        """The interval that ends now, at `t_s` from the start; a new one begins."""
        self.slice_ok.flush()
        interval = Interval(t_s=t_s, limit=self.limiter.limit, in_flight=self.engine.in_flight if self.engine else 0,
                            successes=self.slice_successes, failures=self.slice_failures,
                            throttled=self.slice_throttled, timeouts=self.slice_timeouts, ok=self.slice_ok)
        self._new_slice()
        return interval

    # --- the sink the engine records into (its open-model interface)
    def scheduled(self, intended_at: float, sent_at: float, done_at: float, body_bytes: int) -> None:
        rtt = done_at - sent_at
        self.limiter.update(rtt, False, self.engine.in_flight, done_at)
        self.slice_ok.record(rtt)
        self.slice_successes += 1
        self.success(sent_at, done_at, body_bytes)
        self.wake()

    def add(self, result: FetchResult) -> None:
        self.limiter.update(result.latency_s, pushed_back(result), self.engine.in_flight, result.done_at)
        if result.ok:
            self.slice_ok.record(result.latency_s)
            self.slice_successes += 1
        else:
            self.slice_failures += 1
            if result.status in (429, 503):
                self.slice_throttled += 1
            elif result.error == "timeout":
                self.slice_timeouts += 1
        super().add(result)
        self.wake()


async def backlog(spec: RequestSpec, recorder: AdaptRecorder, *, duration: float, interval: float,
                  on_interval: Callable[[Interval], None], max_requests: int | None = None) -> RoundFacts:
    """Send requests for `duration` seconds, at most `recorder.limiter.limit` at once (and
    `max_requests` in all, when given); each interval's row to `on_interval` as it ends. The
    requests still out when the time is up end as usual (within the timeout), and make a last,
    shorter interval."""
    rss = PeakRss()
    cpu0 = cpu_seconds()
    wall0 = _perf()
    loop = asyncio.get_running_loop()
    engine = open_engine(spec.engine, spec.url, concurrency=0, bounded=False, **spec.engine_options())
    limiter = recorder.limiter
    async with engine:
        recorder.engine = engine
        start = recorder.origin = _perf()
        stop_at = start + duration
        pending = False

        def top_up() -> None:
            nonlocal pending
            pending = False
            now = _perf()
            if now >= stop_at:
                return
            while engine.in_flight < limiter.limit and (max_requests is None or recorder.sent < max_requests):
                recorder.sent += 1
                engine.launch(now, recorder)

        def wake() -> None:
            # After the engine has let the request go (its slot free again): once per turn of
            # the loop, however many ended in it.
            nonlocal pending
            if not pending:
                pending = True
                loop.call_soon(top_up)

        recorder.wake = wake
        with LoopLagMonitor() as lag:
            top_up()
            k = 1
            while True:
                end = min(start + k * interval, stop_at)
                await asyncio.sleep(max(0.0, end - _perf()))
                on_interval(recorder.cut(end - start))
                if end >= stop_at:
                    break
                k += 1
            await engine.drain()
            tail = recorder.cut(_perf() - start)
            if tail.successes or tail.failures:
                on_interval(tail)
    recorder.note_engine(engine)
    return round_facts(rss, cpu0, wall0, lag, engine.refused_locally)
