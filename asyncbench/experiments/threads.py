"""Lab 2.1: is asyncio single-threaded or multi-threaded, parallel or concurrent?

Four phases of `tasks` coroutines gathered on one event loop, each recording the thread it ran
on and when it started and ended:

- concurrent:  each awaits a GET of the target — they overlap while waiting on the network;
- blocking:    each calls time.sleep inside the coroutine — the loop is stuck, they serialize;
- nonblocking: each awaits asyncio.sleep — they overlap;
- to_thread:   each awaits asyncio.to_thread(time.sleep, ...) — the blocking call moves to worker
               threads, whose names are recorded, and the loop stays free.

A ticker task that wakes every 10 ms measures how late the loop was in each phase.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncbench import signals
from asyncbench.client import AsyncHttpClient
from asyncbench.experiments.descriptor import Experiment, StepEvents
from asyncbench.experiments.impact import WAYS, ImpactWay, run_way
from asyncbench.experiments.impact import default_pool_size as default_pool_size  # the lab's, re-exported
from asyncbench.system import LoopLagMonitor


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    from asyncbench import plots

    impact = plots.impact_chart(run, out_dir)
    return [plots.threads_timeline(run, out_dir), *([impact] if impact else [])]


def _summary(run: Any) -> list[Any]:
    from types import SimpleNamespace

    from rich.text import Text

    from asyncbench import report

    phases = run.meta.get("summary")
    shown: list[Any] = []
    if isinstance(phases, list) and phases:
        shown.append(report.phase_summary_table([SimpleNamespace(**p) for p in phases]))
    if run.meta.get("verdict"):
        shown.append(Text(str(run.meta["verdict"]), style="bold"))
    ways = run.meta.get("impact")
    if isinstance(ways, list) and ways:
        n = int(ways[0]["requests"])
        shown.append(report.impact_table([SimpleNamespace(**w) for w in ways], f"{n:,} concurrent GETs, three ways"))
        shown.append(Text(str(run.meta.get("impact_verdict", "")), style="bold"))
    return shown


PHASES = ("concurrent", "blocking", "nonblocking", "to_thread")
_perf = time.perf_counter


EXPERIMENT = Experiment(
    name="threads", completed_key="phases_completed", step="phase",
    required=("experiment", "phase", "task_id", "thread_name", "start_s", "end_s"), sort_by=(),
    charts=_charts, row_keys=("phase", "task_id"), summary=_summary,
)


@dataclass
class TaskRecord:
    """One CSV row of `threads`: one task in one phase. Times are seconds from the phase's start."""

    experiment: str
    phase: str
    task_id: int
    thread_name: str  # where the work ran: the loop's thread, or a worker thread for to_thread
    coroutine_thread: str  # where the coroutine itself ran
    start_s: float
    end_s: float
    duration_s: float
    ok: bool  # concurrent: the GET succeeded; other phases: always true


@dataclass
class PhaseRun:
    phase: str
    records: list[TaskRecord]
    wall_s: float
    loop_lag_max_s: float


@dataclass
class ThreadsConfig:
    url: str
    tasks: int = 10
    sleep: float = 0.2
    timeout: float = 10.0
    impact: int = 0  # after the phases, this many concurrent GETs three ways (0: not)
    on_way: Callable[[ImpactWay], None] | None = None  # each way's record, as soon as it is measured


async def _phase(name: str, tasks: int, body: Callable[[], Awaitable[tuple[str, bool]]]) -> PhaseRun:
    with LoopLagMonitor() as lag:
        t0 = _perf()

        async def task(i: int) -> TaskRecord:
            start = _perf() - t0
            coroutine_thread = threading.current_thread().name
            thread_name, ok = await body()
            end = _perf() - t0
            return TaskRecord(EXPERIMENT.name, name, i, thread_name, coroutine_thread, start, end, end - start, ok)

        records = list(await asyncio.gather(*(task(i) for i in range(tasks))))
        wall = _perf() - t0
    return PhaseRun(name, records, wall, lag.max_lag)


async def run(config: ThreadsConfig, events: StepEvents) -> list[PhaseRun]:
    """Run the four phases in order, reporting each as it finishes."""
    loop = asyncio.get_running_loop()
    # One worker per task, so to_thread can overlap them all; the default pool has only
    # min(32, CPUs + 4) workers and would run the tasks in waves.
    executor = ThreadPoolExecutor(max_workers=config.tasks, thread_name_prefix="asyncio-worker")
    loop.set_default_executor(executor)
    results: list[PhaseRun] = []
    async with AsyncHttpClient(max_concurrency=None, timeout=config.timeout, keep_body=False) as client:

        async def concurrent() -> tuple[str, bool]:
            result = await client.fetch(config.url)
            return threading.current_thread().name, result.ok

        async def blocking() -> tuple[str, bool]:
            try:
                with signals.interruptible():  # Ctrl-C must not wait for tasks × sleep seconds
                    time.sleep(config.sleep)  # deliberately blocks the event loop: the lesson
            except KeyboardInterrupt:
                # The run is being stopped: end this task as cancelled, so that the stop travels
                # up as every other stop does (raised inside a task, it would be left there unseen).
                raise asyncio.CancelledError from None
            return threading.current_thread().name, True

        async def nonblocking() -> tuple[str, bool]:
            await asyncio.sleep(config.sleep)
            return threading.current_thread().name, True

        def sleep_in_worker() -> str:
            time.sleep(config.sleep)
            return threading.current_thread().name

        async def to_thread() -> tuple[str, bool]:
            return await asyncio.to_thread(sleep_in_worker), True

        for name, body in zip(PHASES, (concurrent, blocking, nonblocking, to_thread), strict=True):
            phase = await _phase(name, config.tasks, body)
            results.append(phase)
            events.finished(phase)
    executor.shutdown(wait=False)
    if config.impact:
        for way in WAYS:
            measured = await run_way(way, config.url, config.impact, config.timeout)
            if config.on_way is not None:
                config.on_way(measured)
    return results
