"""The open loop's offer: requests launched on a schedule, whatever the server does.

`total` requests are due at fixed spacing (or Poisson arrivals); each is launched when due — on
a free kept-alive connection, else a new one — and measured from the moment it was due, so a
server that stalls cannot slow the sending down and hide the stall (coordinated omission). When
`max_in_flight` requests are out, a due request is dropped and counted, never silently skipped.
"""

from __future__ import annotations

import asyncio
import random
import time

from asyncbench.engines import open_engine
from asyncbench.load.spec import RequestSpec
from asyncbench.metrics import RoundFacts
from asyncbench.rates import RateRecorder
from asyncbench.system import LoopLagMonitor, PeakRss, cpu_seconds

_perf = time.perf_counter
# Within this much of its due time a send is made by yielding to the loop rather than by a
# timer: the loop's timers have a millisecond's grain, the schedule needs better.
_SPIN_S = 0.001


async def offer(spec: RequestSpec, rate: float, total: int, recorder: RateRecorder, *, arrivals: str,
                max_in_flight: int, rng: random.Random, phase_s: float = 0.0) -> RoundFacts:
    """Offer `total` requests at `rate` per second, the first `phase_s` after the start (a
    shard's place in a schedule shared with others); measure each into `recorder`."""
    rss = PeakRss()
    cpu0 = cpu_seconds()
    wall0 = _perf()
    engine = open_engine(spec.engine, spec.url, concurrency=0, bounded=False, **spec.engine_options())
    poisson = arrivals == "poisson"
    async with engine:
        with LoopLagMonitor() as lag:
            start = recorder.origin = _perf()
            start += phase_s
            due, sent = start, 0
            while sent < total:
                now = _perf()
                while sent < total and due <= now:
                    if engine.in_flight >= max_in_flight:
                        recorder.dropped += 1
                    else:
                        engine.launch(due, recorder)
                        if engine.in_flight > recorder.in_flight_max:
                            recorder.in_flight_max = engine.in_flight
                    sent += 1
                    due = due + rng.expovariate(rate) if poisson else start + sent / rate
                if sent < total:
                    wait = due - _perf()
                    await asyncio.sleep(wait - _SPIN_S if wait > _SPIN_S else 0)
            await engine.drain()
    recorder.note_engine(engine)
    return round_facts(rss, cpu0, wall0, lag, engine.refused_locally)


def round_facts(rss: PeakRss, cpu0: float, wall0: float, lag: LoopLagMonitor, refused: int) -> RoundFacts:
    """What a round of the open model (or a backlog) cost the client since `wall0`."""
    wall = _perf() - wall0
    return RoundFacts(peak_rss_mb=rss.peak_mb(),
                      client_cpu_pct=100.0 * (cpu_seconds() - cpu0) / wall if wall > 0 else 0.0,
                      loop_lag_max_s=lag.max_lag, loop_late_share=lag.total_lag / wall if wall > 0 else 0.0,
                      fd_refused=refused)
