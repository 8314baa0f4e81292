"""Lab 2.3, controlled concurrency: the same load through an asyncio.Semaphore of each size.

All requests are submitted at once; at most `limit` are in flight. The time a request waits
for its slot is recorded apart from its latency on the wire (queue_wait_mean_s).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncbench.experiments.descriptor import StepEvents
from asyncbench.experiments.sweep import load_setup, load_sweep, run_sweep
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
from asyncbench.options import MAX_REQUESTS, check_range, parse_int_list

if TYPE_CHECKING:
    from asyncbench.experiments.sweep import LevelResult
    from asyncbench.load.driver import Driver
    from asyncbench.load.spec import RequestSpec

DEFAULT_LIMITS = (10, 25, 50, 100, 200, 500)
DEFAULT_REQUESTS = 1000


@dataclass
class SemaphoreOptions:
    limits: Annotated[str, typer.Option("--limits", help="Semaphore limits, comma-separated.")] = (
        ",".join(str(limit) for limit in DEFAULT_LIMITS))
    requests: Annotated[int, typer.Option(
        "--requests", help="Requests per limit, all submitted at once.")] = DEFAULT_REQUESTS


@dataclass
class SemaphoreConfig:
    request: RequestSpec
    limits: list[int]
    driver: Driver  # where the load is made
    requests: int = DEFAULT_REQUESTS
    rounds: int = 1
    cooldown: float = 1.0
    interval: float = 1.0  # seconds per row of the timeline


async def run(config: SemaphoreConfig, events: StepEvents) -> list[LevelResult]:
    """Run the sweep: `requests` requests through a semaphore of each limit."""
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
    limits = parse_int_list("--limits", options.limits)
    requests = options.requests
    check_range("--requests", requests, 1, MAX_REQUESTS)
    if limits[-1] > requests:
        print(f"asyncbench: warning: --requests {requests} is below limit {limits[-1]:,}: "
              f"at most {requests} requests can be in flight at once", file=sys.stderr)
    n_rounds = rounds.value()
    setup = load_setup(request=request, cooldown=cooldown, connection=connection, bounds=bounds, scale=scale, floor=floor,
                       outputs=outputs, thresholds=thresholds, server=server, timeline=timeline)
    config = SemaphoreConfig(setup.spec, limits, setup.driver, requests, n_rounds, setup.cooldown, interval=setup.timeline.interval)
    settings: dict[str, Any] = {"limits": limits, "requests": requests, "rounds": n_rounds,
                                "cooldown_s": setup.cooldown}
    setup.sweep(EXPERIMENT, target.url, settings=settings, levels=limits, run=lambda spec, events: run(config, events))


EXPERIMENT = load_sweep("semaphore", step="limit", axis_label="semaphore limit (requests in flight)",
                        verdict_word="limit", queue_wait=True, collapses=False, command=command)
