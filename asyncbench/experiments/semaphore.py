"""Lab 2.3, controlled concurrency: the same load through an asyncio.Semaphore of each size.

All requests are submitted at once; at most `limit` are in flight. The time a request waits
for its slot is recorded apart from its latency on the wire (queue_wait_mean_s).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncbench.errors import UsageError
from asyncbench.experiments.descriptor import StepEvents
from asyncbench.experiments.sweep import load_setup, load_sweep, run_sweep, stage_intervals
from asyncbench.groups import (
    Bounds,
    Connection,
    Cooldown,
    Floor,
    Outputs,
    Request,
    Rounds,
    Scale,
    Server,
    Target,
    Thresholds,
    Timeline,
)
from asyncbench.load.spec import check_target
from asyncbench.options import MAX_LEVEL, MAX_REQUESTS, check_range, parse_int_list, parse_stages

if TYPE_CHECKING:
    from asyncbench.experiments.sweep import LevelResult
    from asyncbench.load.driver import Driver
    from asyncbench.load.ramp import Stage
    from asyncbench.load.spec import RequestSpec
    from asyncbench.metrics import RoundFacts

DEFAULT_LIMITS = (10, 25, 50, 100, 200, 500)
DEFAULT_REQUESTS = 1000


@dataclass
class SemaphoreOptions:
    limits: Annotated[str, typer.Option("--limits", help="Semaphore limits, comma-separated.")] = (
        ",".join(str(limit) for limit in DEFAULT_LIMITS))
    requests: Annotated[int, typer.Option(
        "--requests", help="Requests per limit, all submitted at once.")] = DEFAULT_REQUESTS
    stages: Annotated[str | None, typer.Option(
        "--stages", metavar="'DUR:LIMIT,...'", help="Ramp instead of --limits/--requests: the number of workers "
        "(each sending request after request) moves linearly from each stage's start to its LIMIT over DUR (10s, "
        "1m30s), the first from --start-workers; one engine throughout, one row per stage.", show_default=False)] = None
    start_workers: Annotated[int, typer.Option(
        "--start-workers", help="Where the first of --stages starts.")] = 0


@dataclass
class SemaphoreConfig:
    request: RequestSpec
    limits: list[int]
    driver: Driver  # where the load is made
    requests: int = DEFAULT_REQUESTS
    rounds: int = 1
    cooldown: float = 1.0
    interval: float = 1.0  # seconds per row of the timeline
    stages: list[Stage] = field(default_factory=list)  # a ramp of workers instead of the limits


async def run_stages(config: SemaphoreConfig, events: StepEvents) -> list[LevelResult]:
    """The ramp's stages on one engine, each reported once it is over and its requests ended."""
    from asyncbench.experiments.sweep import LevelResult
    from asyncbench.metrics import LevelRecorder, latency_quantiles, summarize
    from asyncbench.rows import WorkerStageStats

    stages = config.stages
    recorders = [LevelRecorder(interval=config.interval) for _ in stages]
    results: list[LevelResult] = []
    seconds = sum(s.duration_s for s in stages)
    # Progress in elapsed tenths of a second: a closed loop's requests are not known ahead.
    begun = time.perf_counter()
    events.started(f"{len(stages)} stages, {seconds:g} s", round(seconds * 10),
                   lambda: min(round(seconds * 10), round((time.perf_counter() - begun) * 10)), "0.1 s")

    def on_stage(i: int, facts: RoundFacts) -> None:
        stage, recorder = stages[i], recorders[i]
        row = summarize(EXPERIMENT.name, round(stage.target), [(recorder, facts)])
        stats = WorkerStageStats(**vars(row), stage=i + 1, stage_from=round(stage.start),
                                 stage_duration_s=stage.duration_s)
        result = LevelResult(stats, latency_quantiles([recorder]),
                             timeline=stage_intervals(stats.level, stages, i, recorder))
        results.append(result)
        events.finished(result)

    await config.driver.worker_stages("stages", config.request, stages, recorders, on_stage=on_stage)
    if results:
        await check_target(config.request, f"stage {len(results)}", results[-1].stats.level, results[-1].stats)
        config.driver.check_budget(results[-1].stats.level)
    return results


async def run(config: SemaphoreConfig, events: StepEvents) -> list[LevelResult]:
    """Run the sweep: `requests` requests through a semaphore of each limit."""
    if config.stages:
        return await run_stages(config, events)
    requests_for = dict.fromkeys(config.limits, config.requests)
    return await run_sweep(
        EXPERIMENT, config.request, config.limits, requests_for,
        bounded=True, rounds=config.rounds, cooldown=config.cooldown, events=events,
        driver=config.driver, interval=config.interval,
    )


def command(target: Target, options: SemaphoreOptions, rounds: Rounds, request: Request, cooldown: Cooldown,
            connection: Connection, bounds: Bounds, scale: Scale, floor: Floor, outputs: Outputs, timeline: Timeline, thresholds: Thresholds,
            server: Server) -> None:
    """Controlled concurrency: the same load through an asyncio.Semaphore of each limit.

    Requests wait in the client for a slot (the wait is measured apart from latency) instead
    of overloading the server: success stays at 100 %.
    """
    stages = None
    if options.stages is not None:
        from asyncbench.load.ramp import stages_from

        if scale.processes != 1 or scale.cluster is not None:
            raise UsageError("--stages runs in one process: one ramp of workers; drop --processes/--cluster")
        check_range("--start-workers", options.start_workers, 0, MAX_LEVEL)
        stages = stages_from(parse_stages("--stages", options.stages, MAX_LEVEL), options.start_workers)
        if not any(max(s.start, s.target) >= 1 for s in stages):
            raise UsageError(f"invalid --stages {options.stages!r}: no stage wants a worker")
    limits = parse_int_list("--limits", options.limits)
    requests = options.requests
    check_range("--requests", requests, 1, MAX_REQUESTS)
    if limits[-1] > requests:
        print(f"asyncbench: warning: --requests {requests} is below limit {limits[-1]:,}: "
              f"at most {requests} requests can be in flight at once", file=sys.stderr)
    n_rounds = rounds.value()
    setup = load_setup(request=request, cooldown=cooldown, connection=connection, bounds=bounds, scale=scale, floor=floor,
                       outputs=outputs, thresholds=thresholds, server=server, timeline=timeline)
    config = SemaphoreConfig(setup.spec, limits, setup.driver, requests, n_rounds, setup.cooldown,
                             interval=setup.timeline.interval, stages=stages or [])
    settings: dict[str, Any] = {"limits": None if stages else limits, "requests": None if stages else requests,
                                "rounds": n_rounds, "cooldown_s": setup.cooldown,
                                "stages": options.stages, "start_workers": options.start_workers if stages else None}
    levels = [round(s.target) for s in stages] if stages else limits
    setup.sweep(EXPERIMENT, target.url, settings=settings, levels=levels, run=lambda spec, events: run(config, events))


EXPERIMENT = load_sweep("semaphore", step="limit", axis_label="semaphore limit (requests in flight)",
                        verdict_word="limit", queue_wait=True, collapses=False, command=command)
