"""Lab 2.2, the concurrency trap: at each level, that many simultaneous requests, no limit.

Throughput climbs with the level until the server's capacity and queue are full; past that the
server sheds requests and the success rate collapses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncbench.experiments.descriptor import StepEvents, load_sweep
from asyncbench.experiments.load import LevelResult, RequestSpec, run_sweep
from asyncbench.shards import Driver

DEFAULT_LEVELS = (1, 5, 10, 25, 50, 100, 200, 500, 1000, 2000)
EXPERIMENT = load_sweep("trap", step="level", axis_label="concurrency (simultaneous requests)",
                        verdict_word="concurrency", queue_wait=False, collapses=True)


@dataclass
class TrapConfig:
    request: RequestSpec
    levels: list[int]
    requests_per_level: int | None = None  # None: the level itself, one burst
    rounds: int = 1
    cooldown: float = 1.0
    driver: Driver = field(default_factory=Driver)  # where the load is made


async def run(config: TrapConfig, events: StepEvents) -> list[LevelResult]:
    """Run the sweep with no client-side limit (and no connection-pool limit either)."""
    requests_for = {lvl: config.requests_per_level or lvl for lvl in config.levels}
    return await run_sweep(
        EXPERIMENT, config.request, config.levels, requests_for,
        bounded=False, rounds=config.rounds, cooldown=config.cooldown, events=events,
        driver=config.driver,
    )
