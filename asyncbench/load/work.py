"""A shard in its worker: report ready, wait for the common start time, run the round with
the engines every experiment uses, report progress while it runs, stop when told to, and
return what it recorded (JSON-ready, for an exact merge)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from asyncbench.load.shard import ShardJob

# How often a running shard says how far it got, and looks for a stop.
PROGRESS_EVERY_S = 0.2


class Channel(Protocol):
    """How a shard talks to the coordinator (a pipe, or Dask's queue, variable and event)."""

    def ready(self, index: int) -> float | None:
        """Say the shard is ready; wait for the start time (None: stop instead)."""

    def progress(self, index: int, done: int) -> None:
        """Say how many requests are done (or dropped) so far."""

    def stopped(self) -> bool:
        """Whether the coordinator asked the shard to stop."""


def run_job(job: ShardJob, channel: Channel) -> dict[str, Any]:
    """Run one shard to its end; its status, recorder and facts as a JSON-ready dict."""
    from asyncbench.metrics import LevelRecorder
    from asyncbench.rates import RateRecorder

    recorder = (RateRecorder(interval=job.interval) if job.kind == "open"
                else LevelRecorder(interval=job.interval))
    start_at = channel.ready(job.index)
    if start_at is None:
        return {"status": "stopped", "reason": "stopped before it started"}
    coro = _shard(job, recorder, channel, start_at)
    if job.loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


async def _until(moment: float) -> None:
    """Wait until wall-clock `moment`: a timer to a millisecond before (the loop's timers have a
    millisecond's grain), then yielding to the loop, so that shards start within a fraction of one."""
    while (left := moment - time.time()) > 0:
        await asyncio.sleep(left - 0.001 if left > 0.001 else 0)


async def _shard(job: ShardJob, recorder: Any, channel: Channel, start_at: float) -> dict[str, Any]:
    from asyncbench.load.closed import run_round
    from asyncbench.load.open import offer

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    finished = threading.Event()
    told_to_stop = threading.Event()

    def watch() -> None:
        # A thread, so that a channel whose calls block (Dask's) never holds up the event loop.
        while not finished.wait(PROGRESS_EVERY_S):
            try:
                channel.progress(job.index, recorder.done)
                stop = channel.stopped()
            except Exception:  # noqa: BLE001 - the coordinator (or the worker's client) is gone: stop
                stop = True
            if stop:
                told_to_stop.set()
                loop.call_soon_threadsafe(task.cancel)
                return

    watcher = threading.Thread(target=watch, name=f"asyncbench-shard-{job.index + 1}-watch", daemon=True)
    watcher.start()
    try:
        await _until(start_at)
        if job.kind == "closed":
            facts = await run_round(job.spec, job.concurrency, job.requests, recorder, bounded=job.bounded,
                                    duration=job.duration)
        else:
            facts = await offer(job.spec, job.rate, job.total, recorder, arrivals=job.arrivals,
                                max_in_flight=job.max_in_flight, rng=random.Random(job.seed), phase_s=job.phase_s)
    except asyncio.CancelledError:
        if told_to_stop.is_set():
            return {"status": "stopped", "reason": "stopped"}
        raise
    finally:
        finished.set()
        watcher.join()
    return {"status": "ok", "recorder": recorder.to_dict(), "facts": asdict(facts)}
