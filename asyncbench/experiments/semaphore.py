"""Lab 2.3, controlled concurrency: the same load through an asyncio.Semaphore of each size.

All requests are submitted at once; at most `limit` are in flight. The time a request waits
for its slot is recorded apart from its latency on the wire (queue_wait_mean_s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncbench.experiments.descriptor import StepEvents, load_sweep
from asyncbench.experiments.load import LevelResult, RequestSpec, run_sweep
from asyncbench.shards import Driver

DEFAULT_LIMITS = (10, 25, 50, 100, 200, 500)
DEFAULT_REQUESTS = 1000
EXPERIMENT = load_sweep("semaphore", step="limit", axis_label="semaphore limit (requests in flight)",
                        verdict_word="limit", queue_wait=True, collapses=False)


@dataclass
class SemaphoreConfig:
    request: RequestSpec
    limits: list[int]
    requests: int = DEFAULT_REQUESTS
    rounds: int = 1
    cooldown: float = 1.0
    driver: Driver = field(default_factory=Driver)  # where the load is made


async def run(config: SemaphoreConfig, events: StepEvents) -> list[LevelResult]:
    """Run the sweep: `requests` requests through a semaphore of each limit."""
    requests_for = dict.fromkeys(config.limits, config.requests)
    return await run_sweep(
        EXPERIMENT, config.request, config.limits, requests_for,
        bounded=True, rounds=config.rounds, cooldown=config.cooldown, events=events,
        driver=config.driver,
    )
