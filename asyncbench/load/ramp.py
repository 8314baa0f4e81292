"""Stages: the open model's offered rate — or the closed loop's number of workers — ramped
linearly from each stage's start to its target (k6's ramping-arrival-rate and ramping-VUs:
`DURATION:TARGET`, the first from a start value), on one engine so that connections are reused
from stage to stage.

Each stage's requests go to its own recorder (all timed from the ramp's start, so their
timelines make one clock); a stage is reported once its schedule is over and every request it
launched has ended, while the next one runs.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asyncbench.engines import open_engine
from asyncbench.load.open import round_facts
from asyncbench.load.spec import RequestSpec
from asyncbench.metrics import LevelRecorder, RoundFacts
from asyncbench.rates import RateRecorder
from asyncbench.records import FetchResult
from asyncbench.system import LoopLagMonitor, PeakRss, cpu_seconds

_perf = time.perf_counter
_SPIN_S = 0.001
_LOOK_S = 0.05  # the longest sleep between sends: a finished stage is looked for this often


@dataclass(frozen=True)
class Stage:
    """One stage: `duration_s` seconds from `start` to `target` (requests a second)."""

    start: float
    target: float
    duration_s: float

    @property
    def total(self) -> int:
        """Requests due in the stage: the area under its ramp."""
        return int((self.start + self.target) / 2 * self.duration_s + 1e-9)

    def due(self, k: int) -> float:
        """When the stage's `k`-th request (from 0) is due, seconds after the stage's start:
        where the ramp's integral r0·t + (r1 - r0)·t²/2D reaches k."""
        r0, r1, span = self.start, self.target, self.duration_s
        a = (r1 - r0) / (2 * span)
        if abs(a) < 1e-12:
            return k / r0
        return (-r0 + math.sqrt(max(0.0, r0 * r0 + 4 * a * k))) / (2 * a)


def stages_from(targets: Sequence[tuple[float, float]], start_rate: float) -> list[Stage]:
    """(duration, target) pairs as stages, each starting where the last ended."""
    out: list[Stage] = []
    level = start_rate
    for duration, target in targets:
        out.append(Stage(level, target, duration))
        level = target
    return out


def _start(stages: Sequence[Stage], recorders: Sequence[LevelRecorder]) -> tuple[float, list[float]]:
    """Now, as every stage's recorder's origin (one clock for the ramp), and each stage's end."""
    start = _perf()
    for recorder in recorders:
        recorder.origin = start
    return start, list(itertools.accumulate((s.duration_s for s in stages), initial=start))[1:]


class _ByStage:
    """The sink every request is launched into: each answer goes to the recorder of the stage
    it was due in (an engine binds a connection's sink when it opens it, and connections outlive
    stages)."""

    def __init__(self, ends: list[float], recorders: Sequence[RateRecorder]) -> None:
        self.ends = ends  # each stage's end, perf_counter() time
        self.recorders = recorders

    def _of(self, intended: float) -> RateRecorder:
        return self.recorders[min(bisect.bisect_right(self.ends, intended), len(self.recorders) - 1)]

    def scheduled(self, intended_at: float, sent_at: float, done_at: float, body_bytes: int) -> None:
        self._of(intended_at).scheduled(intended_at, sent_at, done_at, body_bytes)

    def success(self, sent_at: float, done_at: float, body_bytes: int) -> None:
        self._of(sent_at).success(sent_at, done_at, body_bytes)

    def add(self, result: FetchResult) -> None:
        self._of(result.intended_at or result.sent_at).add(result)


async def offer_stages(spec: RequestSpec, stages: Sequence[Stage], recorders: Sequence[RateRecorder], *,
                       max_in_flight: int, on_stage: Callable[[int, RoundFacts], None],
                       max_requests: int | None = None, max_seconds: float | None = None) -> None:
    """Offer every stage in turn on one engine; `on_stage(i, facts)` as each stage is over and its
    requests have ended. With `max_requests`/`max_seconds` (the run's bound) the schedule stops
    early; the stages it reached are reported as they are."""
    rss = PeakRss()
    cpu0 = cpu_seconds()
    wall0 = _perf()
    engine = open_engine(spec.engine, spec.url, concurrency=0, bounded=False, **spec.engine_options())
    async with engine:
        with LoopLagMonitor() as lag:
            start, ends = _start(stages, recorders)
            sink = _ByStage(ends, recorders)
            due_total = [0] * len(stages)  # requests due so far in each stage (sent or dropped)
            reported = 0
            stage_start = start
            sent_all = 0
            end_at = None if max_seconds is None else start + max_seconds

            def report_done(closed: int) -> int:
                """Report the stages, in order, whose schedule is over and requests ended."""
                nonlocal reported
                while reported < closed and recorders[reported].done >= due_total[reported]:
                    on_stage(reported, round_facts(rss, cpu0, wall0, lag, engine.refused_locally))
                    reported += 1
                return reported

            stopped = False
            for i, stage in enumerate(stages):
                recorder, total, k = recorders[i], stage.total, 0
                stage_end = stage_start + stage.duration_s
                while True:
                    now = _perf()
                    while k < total and stage_start + stage.due(k) <= now:
                        if (max_requests is not None and sent_all >= max_requests) or (
                                end_at is not None and now >= end_at):
                            stopped = True
                            break
                        if engine.in_flight >= max_in_flight:
                            recorder.dropped += 1
                        else:
                            engine.launch(stage_start + stage.due(k), sink)
                            sent_all += 1
                            if engine.in_flight > recorder.in_flight_max:
                                recorder.in_flight_max = engine.in_flight
                        k += 1
                        due_total[i] = k
                    report_done(i)
                    if stopped or (k >= total and now >= stage_end):
                        break
                    nxt = stage_start + stage.due(k) if k < total else stage_end
                    wait = min(nxt - _perf(), _LOOK_S)
                    await asyncio.sleep(wait - _SPIN_S if wait > _SPIN_S else 0)
                stage_start = stage_end
                if stopped:
                    break
            await engine.drain()
            report_done(i + 1)


def workers_at(stage: Stage, t: float) -> float:
    """The number of workers a closed-loop stage wants `t` seconds after it began."""
    if stage.duration_s <= 0:
        return stage.target
    return stage.start + (stage.target - stage.start) * min(1.0, max(0.0, t / stage.duration_s))


async def run_worker_stages(spec: RequestSpec, stages: Sequence[Stage], recorders: Sequence[LevelRecorder], *,
                            on_stage: Callable[[int, RoundFacts], None], max_requests: int | None = None,
                            max_seconds: float | None = None) -> None:
    """The closed loop with a moving number of workers: worker i sends request after request
    while the stage wants more than i workers (the number ramped linearly from each stage's
    start to its target), on one engine. A request belongs to the stage it was sent in; a stage
    is reported once it is over and its requests have ended."""
    rss = PeakRss()
    cpu0 = cpu_seconds()
    wall0 = _perf()
    most = max(1, math.ceil(max(max(s.start, s.target) for s in stages)))
    engine = open_engine(spec.engine, spec.url, concurrency=most, bounded=True, **spec.engine_options())
    async with engine:
        with LoopLagMonitor() as lag:
            start, ends = _start(stages, recorders)
            stop_at = ends[-1] if max_seconds is None else min(ends[-1], start + max_seconds)
            in_flight = [0] * len(stages)
            sent = [0]
            reported = 0

            def stage_of(moment: float) -> int:
                return min(bisect.bisect_right(ends, moment), len(stages) - 1)

            async def worker(i: int) -> None:
                while (now := _perf()) < stop_at:
                    j = stage_of(now)
                    begin = ends[j] - stages[j].duration_s
                    if i >= workers_at(stages[j], now - begin):
                        # Not wanted yet: look again soon (the number moves continuously).
                        await asyncio.sleep(min(_LOOK_S, stop_at - now))
                        continue
                    if max_requests is not None and sent[0] >= max_requests:
                        return
                    sent[0] += 1
                    in_flight[j] += 1
                    result = await engine.fetch(i)
                    recorders[stage_of(result.sent_at)].add(result)
                    in_flight[j] -= 1

            def report_done(now: float) -> None:
                nonlocal reported
                while reported < len(stages) and (ends[reported] <= now or now >= stop_at) and not in_flight[reported]:
                    on_stage(reported, round_facts(rss, cpu0, wall0, lag, engine.refused_locally))
                    reported += 1

            tasks = [asyncio.create_task(worker(i)) for i in range(most)]
            try:
                while not all(t.done() for t in tasks):
                    await asyncio.wait(tasks, timeout=_LOOK_S)
                    report_done(_perf())
                for task in tasks:
                    task.result()  # a worker's error is the run's
            finally:
                for task in tasks:
                    task.cancel()
            report_done(math.inf)
