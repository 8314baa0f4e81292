"""The load engine shared by `trap` and `semaphore`: one level = N requests at concurrency C.

A level runs C workers on one fresh client (so each level opens its own connections, as a
burst of new clients would). The N requests are submitted at once; each worker takes the next
one when its last is done. A request's queue wait is the time from submission to send: with a
semaphore it is the wait for a slot, the lesson of Lab 2.3; for the trap it is 0.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asyncbench.client import AsyncHttpClient
from asyncbench.engines import open_engine
from asyncbench.errors import TargetGone
from asyncbench.metrics import LevelRecorder, LevelStats, RoundFacts, latency_quantiles, summarize
from asyncbench.system import LoopLagMonitor, PeakRss, cpu_seconds, cpu_wait_seconds

if TYPE_CHECKING:
    from asyncbench.experiments.descriptor import Experiment, StepEvents
    from asyncbench.shards import Driver

_perf = time.perf_counter


@dataclass
class RequestSpec:
    """What every request of a run looks like."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None
    timeout: float = 10.0
    retries: int = 0
    engine: str = "fast"
    insecure: bool = False  # https without checking the certificate


@dataclass
class LevelResult:
    """A finished level: its row, its latency quantiles, each round's own figures (goodput,
    p50, p99: what `compare` needs to tell a change from the runs' own spread), and why its
    load was not all made (a shard that died), if it was not."""

    stats: LevelStats
    quantiles: list[tuple[float, float]]
    rounds: list[dict[str, float]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


async def refused(url: str) -> str | None:
    """Why the target no longer takes connections (refused twice, a tenth of a second apart),
    or None when it does. A connection that is merely slow to be accepted (a full backlog) is
    not a target gone: only an answer of "nobody here" is."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    why = None
    for attempt in range(2):
        if attempt:
            await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(2.0):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return None
        except OSError as exc:
            why = f"{host}:{port} refused new connections ({exc.strerror or type(exc).__name__})"
            continue
        writer.close()
        return None
    return why


async def check_target(spec: RequestSpec, step: str, level: int, stats: LevelStats) -> None:
    """After a step whose requests failed to connect: TargetGone if the target is no longer
    there, so that no more load is sent to nothing and no answer is drawn from it."""
    if stats.errors_connect:
        why = await refused(spec.url)
        if why is not None:
            raise TargetGone(step, level, why)


async def run_round(
    spec: RequestSpec, concurrency: int, requests: int, bounded: bool, recorder: LevelRecorder,
    duration: float | None = None,
) -> RoundFacts:
    """Send `requests` requests with `concurrency` workers; record each into `recorder`. With
    `duration`, no new request is sent after that many seconds (a probe's bound)."""
    rss = PeakRss()
    cpu0, wait0 = cpu_seconds(), cpu_wait_seconds()
    wall0 = _perf()
    workers = min(concurrency, requests)
    engine = open_engine(spec.engine, spec.url, spec.method, spec.headers, spec.data, spec.timeout,
                         spec.retries, workers, bounded, spec.insecure)
    async with engine:
        recorder.origin = _perf()
        if bounded:
            # All requests are submitted at once: the wait for a slot ends when one is sent.
            recorder.submitted_at = recorder.origin
        with LoopLagMonitor() as lag:
            await engine.run(requests, recorder, duration)
    wall = _perf() - wall0
    return RoundFacts(
        peak_rss_mb=rss.peak_mb(),
        client_cpu_pct=100.0 * (cpu_seconds() - cpu0) / wall if wall > 0 else 0.0,
        loop_lag_max_s=lag.max_lag,
        loop_late_share=lag.total_lag / wall if wall > 0 else 0.0,
        cpu_wait_pct=100.0 * (cpu_wait_seconds() - wait0) / wall if wall > 0 else 0.0,
        fd_refused=engine.refused_locally,
    )


async def run_sweep(
    experiment: Experiment,
    spec: RequestSpec,
    levels: list[int],
    requests_for: dict[int, int],
    bounded: bool,
    rounds: int,
    cooldown: float,
    events: StepEvents,
    driver: Driver,
) -> list[LevelResult]:
    """Run every level (each `rounds` times), reporting each as soon as it is finished; the
    `driver` makes each round's load (in this process, or as shards elsewhere)."""
    results: list[LevelResult] = []
    first = True
    for level in levels:
        total = requests_for[level]
        recorders = [LevelRecorder() for _ in range(rounds)]
        step = f"{experiment.step} {level:,}"
        events.started(step, total * rounds, lambda recorders=recorders: sum(driver.progress(r) for r in recorders))
        facts: list[RoundFacts] = []
        failures_before = len(driver.failures)
        for recorder in recorders:
            if not first and cooldown > 0:
                # Let the target drain what the last level left behind before measuring again.
                await asyncio.sleep(cooldown)
            first = False
            facts.append(await driver.closed(step, spec, level, total, bounded, recorder))
        stats = summarize(experiment.name, level, list(zip(recorders, facts, strict=True)))
        result = LevelResult(stats, latency_quantiles(recorders), [round_figures(r) for r in recorders],
                             driver.failures[failures_before:])
        results.append(result)
        events.finished(result)
        await check_target(spec, step, level, stats)
    return results


def round_figures(rec: LevelRecorder) -> dict[str, float]:
    """One round's goodput, p50 and p99 (of every request, and of the successes)."""
    latency = rec.latency
    return {"goodput_rps": rec.successes / rec.elapsed_s if rec.elapsed_s else 0.0,
            "latency_p50_s": latency.quantile(0.5), "latency_p99_s": latency.quantile(0.99),
            "ok_latency_p50_s": rec.ok.quantile(0.5), "ok_latency_p99_s": rec.ok.quantile(0.99)}


@dataclass
class Preflight:
    """The answer to the one request sent before a run."""

    reachable: bool
    status: int | None
    latency_s: float
    detail: str  # "HTTP 200", or why it failed
    body_excerpt: str  # the start of the response body, for a status that is an error

    @property
    def summary(self) -> str:
        return f"{self.detail} in {self.latency_s * 1000:.1f} ms"


async def preflight(spec: RequestSpec) -> Preflight:
    """One request before the sweep, shaped like the sweep's: can the target be reached, and
    what does it answer?"""
    async with AsyncHttpClient(max_concurrency=1, timeout=spec.timeout, retries=0,
                               max_body_bytes=1024 * 1024, verify_tls=not spec.insecure) as client:
        result = await client.fetch(
            spec.url, method=spec.method, data=spec.data, headers=spec.headers or None
        )
    if result.error in ("connect", "timeout"):
        return Preflight(False, None, result.latency_s, result.detail or result.error, "")
    excerpt = ""
    if result.body and result.status is not None and result.status >= 400:
        excerpt = " ".join(result.body[:200].decode("utf-8", "replace").split())
    detail = f"HTTP {result.status}" if result.status else (result.detail or "")
    return Preflight(True, result.status, result.latency_s, detail, excerpt)
