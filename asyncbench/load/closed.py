"""The closed loop's round: N requests kept in flight by C workers, one fresh engine a round.

A round runs C workers on one fresh engine (so each round opens its own connections, as a burst
of new clients would). The N requests are submitted at once; each worker takes the next one
when its last is done. A request's queue wait is the time from submission to send: with a
semaphore it is the wait for a slot, the lesson of Lab 2.3; for the trap it is 0.
"""

from __future__ import annotations

import time

from asyncbench.engines import open_engine
from asyncbench.load.spec import RequestSpec
from asyncbench.metrics import LevelRecorder, RoundFacts
from asyncbench.system import LoopLagMonitor, PeakRss, cpu_seconds, cpu_wait_seconds

_perf = time.perf_counter


async def run_round(spec: RequestSpec, concurrency: int, requests: int, recorder: LevelRecorder, *,
                    bounded: bool, duration: float | None = None) -> RoundFacts:
    """Send `requests` requests with `concurrency` workers; record each into `recorder`. With
    `duration`, no new request is sent after that many seconds (a probe's bound)."""
    rss = PeakRss()
    cpu0, wait0 = cpu_seconds(), cpu_wait_seconds()
    wall0 = _perf()
    workers = min(concurrency, requests)
    engine = open_engine(spec.engine, spec.url, concurrency=workers, bounded=bounded, **spec.engine_options())
    async with engine:
        recorder.origin = _perf()
        if bounded:
            # All requests are submitted at once: the wait for a slot ends when one is sent.
            recorder.submitted_at = recorder.origin
        with LoopLagMonitor() as lag:
            await engine.run(requests, recorder, duration)
    recorder.note_engine(engine)
    wall = _perf() - wall0
    return RoundFacts(
        peak_rss_mb=rss.peak_mb(),
        client_cpu_pct=100.0 * (cpu_seconds() - cpu0) / wall if wall > 0 else 0.0,
        loop_lag_max_s=lag.max_lag,
        loop_late_share=lag.total_lag / wall if wall > 0 else 0.0,
        cpu_wait_pct=100.0 * (cpu_wait_seconds() - wait0) / wall if wall > 0 else 0.0,
        fd_refused=engine.refused_locally,
    )
