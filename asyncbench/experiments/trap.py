"""Lab 2.2, the concurrency trap: at each level, that many simultaneous requests, no limit.

Throughput climbs with the level until the server's capacity and queue are full; past that the
server sheds requests and the success rate collapses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncbench.errors import UsageError
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

DEFAULT_LEVELS = (1, 5, 10, 25, 50, 100, 200, 500, 1000, 2000)


@dataclass
class TrapOptions:
    levels: Annotated[str, typer.Option("--levels", help="Concurrency levels, comma-separated.")] = (
        ",".join(str(level) for level in DEFAULT_LEVELS))
    requests_per_level: Annotated[int | None, typer.Option(
        "--requests-per-level", help="Requests per level. Default: the level itself, one burst.",
        show_default=False)] = None


@dataclass
class TrapConfig:
    request: RequestSpec
    levels: list[int]
    driver: Driver  # where the load is made
    requests_per_level: int | None = None  # None: the level itself, one burst
    rounds: int = 1
    cooldown: float = 1.0
    interval: float = 1.0  # seconds per row of the timeline


async def run(config: TrapConfig, events: StepEvents) -> list[LevelResult]:
    """Run the sweep with no client-side limit (and no connection-pool limit either)."""
    requests_for = {lvl: config.requests_per_level or lvl for lvl in config.levels}
    return await run_sweep(
        EXPERIMENT, config.request, config.levels, requests_for,
        bounded=False, rounds=config.rounds, cooldown=config.cooldown, events=events,
        driver=config.driver, interval=config.interval,
    )


def command(target: Target, options: TrapOptions, rounds: Rounds, request: Request, cooldown: Cooldown,
            connection: Connection, bounds: Bounds, scale: Scale, floor: Floor, outputs: Outputs, timeline: Timeline, thresholds: Thresholds,
            server: Server) -> None:
    """The concurrency trap: at each level, that many simultaneous requests with no limit.

    Throughput climbs with the level until the server is full; then it sheds requests and the
    success rate collapses.
    """
    levels = parse_int_list("--levels", options.levels)
    per_level = options.requests_per_level
    if per_level is not None:
        check_range("--requests-per-level", per_level, 1, MAX_REQUESTS)
        if per_level < levels[-1]:
            raise UsageError(f"invalid --requests-per-level {per_level}: level {levels[-1]} needs at least "
                             f"{levels[-1]} requests to have them all in flight at once")
    n_rounds = rounds.value()
    setup = load_setup(request=request, cooldown=cooldown, connection=connection, bounds=bounds, scale=scale, floor=floor,
                       outputs=outputs, thresholds=thresholds, server=server, timeline=timeline)
    config = TrapConfig(setup.spec, levels, setup.driver, per_level, n_rounds, setup.cooldown, interval=setup.timeline.interval)
    settings: dict[str, Any] = {"levels": levels, "requests_per_level": per_level, "rounds": n_rounds,
                                "cooldown_s": setup.cooldown}
    setup.sweep(EXPERIMENT, target.url, settings=settings, levels=levels, run=lambda spec, events: run(config, events))


EXPERIMENT = load_sweep("trap", step="level", axis_label="concurrency (simultaneous requests)",
                        verdict_word="concurrency", queue_wait=False, collapses=True, command=command)
