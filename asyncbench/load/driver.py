"""Where a level's load is made: in this process, in N local worker processes, or on the
workers of a Dask cluster — behind one `Driver`, so the experiments never know how many shards
ran.

A sharded round splits the level (connections and requests for the closed loop, the arrival
schedule for the open model), has every shard connect to its worker and report ready, then
sends them one start time (the barrier: a burst stays a burst), and merges what they recorded
exactly — counts add, histograms merge, percentiles come from the merged histogram.

    experiment ─► Driver.closed/open ─► split ─► backend (processes | cluster) ─► shards (work.py)
                                     ◄─ merge ◄─ outcomes ◄────────────────────────────┘
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from asyncbench.errors import UsageError
from asyncbench.load.budget import Budget
from asyncbench.load.shard import Backend, Outcome, ShardError, ShardJob
from asyncbench.metrics import LevelRecorder, RoundFacts
from asyncbench.tls import TlsFacts

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from asyncbench.load.adaptive import AdaptRecorder, Interval
    from asyncbench.load.ramp import Stage
    from asyncbench.load.spec import RequestSpec
    from asyncbench.rates import RateRecorder

# Shards start this long after the last one reported ready: time for the start message to
# reach every worker before the moment it names.
START_MARGIN_S = 0.1
# A shard that has not reported ready by then is taken for dead (a worker busy importing on a
# loaded machine is counted in seconds, not minutes).
READY_TIMEOUT_S = 60.0
# After a stop, how long shards get to end their requests and answer before they are killed.
STOP_GRACE_S = 5.0


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares as even as whole numbers allow (the first ones get the rest)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def split_closed(spec: RequestSpec, loop: str, concurrency: int, requests: int, bounded: bool,
                 workers: int, duration: float | None = None) -> list[ShardJob]:
    """A closed-loop level as shards: connections split evenly, requests in proportion to them
    (so a one-burst level stays one request per connection in every shard)."""
    n = max(1, min(workers, concurrency, requests))
    conns = split(concurrency, n)
    shares = _proportional(requests, conns)
    return [ShardJob(i, n, spec, loop, "closed", concurrency=c, requests=r, bounded=bounded, duration=duration)
            for i, (c, r) in enumerate(zip(conns, shares, strict=True))]


def split_open(spec: RequestSpec, loop: str, rate: float, total: int, arrivals: str, max_in_flight: int,
               seed: int | None, workers: int) -> list[ShardJob]:
    """An offered rate as shards: with constant arrivals, shard i sends requests i, i+N, i+2N,
    ... of the one schedule (so together they keep its spacing); Poisson arrivals split into N
    independent Poisson streams of rate/N, whose sum is again Poisson at the full rate."""
    n = max(1, min(workers, total))
    counts = split(total, n)
    in_flight = split(max_in_flight, n)
    return [ShardJob(i, n, spec, loop, "open", rate=rate / n, total=counts[i],
                     phase_s=0.0 if arrivals == "poisson" else i / rate, arrivals=arrivals,
                     max_in_flight=max(1, in_flight[i]), seed=None if seed is None else seed * 1000 + i)
            for i in range(n)]


def _proportional(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders), summing to `total`."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [math.floor(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)[: total - sum(shares)]:
        shares[i] += 1
    return shares


def merge_facts(facts: list[RoundFacts]) -> RoundFacts:
    """The round's facts from its shards': each is one process's, so the worst one tells
    whether a process (and so the client) was the limit."""
    return RoundFacts(
        peak_rss_mb=max(f.peak_rss_mb for f in facts),
        client_cpu_pct=max(f.client_cpu_pct for f in facts),
        loop_lag_max_s=max(f.loop_lag_max_s for f in facts),
        loop_late_share=max(f.loop_late_share for f in facts),
        cpu_wait_pct=max(f.cpu_wait_pct for f in facts),
        fd_refused=sum(f.fd_refused for f in facts),
    )


class Driver:
    """Runs rounds in this process (the default); subclasses run them as shards."""

    processes = 1
    sharded = False

    def __init__(self, loop: str = "asyncio", budget: Budget | None = None) -> None:
        self.loop = loop
        self.budget = budget or Budget()  # what the whole run may send (--max-requests, --max-duration)
        self.log: list[dict[str, Any]] = []  # per sharded round: the step and its shards
        self.failures: list[str] = []  # shards that failed, said for the user
        self.addresses: dict[str, int] = {}  # requests sent to each address, over the run
        self.tls = TlsFacts()  # the run's TLS handshakes
        self._rngs: dict[int | None, Any] = {}  # one arrival schedule per seed, across rates

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """The sidecar's `scale`: how the load was made."""
        return {"processes": 1, "cluster": None}

    def remote_hosts(self) -> list[str]:
        """Hosts of workers on other machines (none but a cluster's)."""
        return []

    def progress(self, recorder: LevelRecorder) -> int:
        """Requests of the round filling `recorder` that are done (or dropped) so far."""
        return recorder.done

    async def closed(self, step: str, spec: RequestSpec, concurrency: int, requests: int, recorder: LevelRecorder, *,
                     bounded: bool, duration: float | None = None) -> RoundFacts:
        """One round of `concurrency` connections sending `requests` requests (none new after
        `duration` seconds, when given), into `recorder` — within the run's budget (RunStopped
        when nothing more may be sent)."""
        allowed, seconds = self.budget.allow(step, requests, spec.retries, duration)
        facts = await self._closed(step, spec, min(concurrency, allowed), allowed, recorder, bounded=bounded,
                                   duration=seconds)
        self._spent(step, recorder, requests)
        return facts

    async def open(self, step: str, spec: RequestSpec, *, rate: float, total: int, arrivals: str, max_in_flight: int,
                   seed: int | None, recorder: RateRecorder) -> RoundFacts:
        """`total` requests offered at `rate` per second, into `recorder` — within the run's
        budget: a schedule cut to the requests and the time that are left."""
        allowed, seconds = self.budget.allow(step, total, spec.retries, None)
        if seconds is not None:
            allowed = max(1, min(allowed, int(rate * seconds)))
        facts = await self._open(step, spec, rate=rate, total=allowed, arrivals=arrivals, max_in_flight=max_in_flight,
                                 seed=seed, recorder=recorder)
        self._spent(step, recorder, total)
        return facts

    async def adaptive(self, step: str, spec: RequestSpec, recorder: AdaptRecorder, *, duration: float,
                       interval: float, on_interval: Callable[[Interval], None]) -> RoundFacts:
        """A backlog under `recorder.limiter` for `duration` seconds, each interval to
        `on_interval` — within the run's budget: cut to the requests and the time that are left
        (always in this process: a limit that adapts is one client's)."""
        from asyncbench.load.adaptive import backlog

        left = self.budget.left()
        allowed, seconds = self.budget.allow(step, left if left is not None else 1, spec.retries, duration)
        most = allowed if left is not None else None
        run_for = duration if seconds is None else min(duration, seconds)
        facts = await backlog(spec, recorder, duration=run_for, interval=interval, on_interval=on_interval,
                              max_requests=most)
        self.budget.spent += recorder.attempts
        if (most is not None and recorder.sent >= most) or run_for < duration:
            self.budget.cut = (step, self.budget.reason())
        self._tally(recorder)
        return facts

    async def stages(self, step: str, spec: RequestSpec, stages: Sequence[Stage], recorders: Sequence[RateRecorder], *,
                     max_in_flight: int, on_stage: Callable[[int, RoundFacts], None]) -> None:
        """The stages of a ramp on one engine, each to `on_stage` as it is over — within the
        run's budget (always in this process: one schedule whose rate moves is one client's)."""
        from asyncbench.load.ramp import offer_stages

        planned = sum(s.total for s in stages)
        duration = sum(s.duration_s for s in stages)
        allowed, seconds = self.budget.allow(step, planned, spec.retries, duration)
        await offer_stages(spec, stages, recorders, max_in_flight=max_in_flight, on_stage=on_stage,
                           max_requests=allowed if allowed < planned else None,
                           max_seconds=seconds if seconds is not None and seconds < duration else None)
        for recorder in recorders:
            self.budget.spent += recorder.attempts
            self._tally(recorder)
        if sum(r.done for r in recorders) < planned and self.budget.bounded:
            self.budget.cut = (step, self.budget.reason())

    async def worker_stages(self, step: str, spec: RequestSpec, stages: Sequence[Stage],
                            recorders: Sequence[LevelRecorder], *, on_stage: Callable[[int, RoundFacts], None]) -> None:
        """The closed loop's stages (a moving number of workers) on one engine, each to
        `on_stage` as it is over — within the run's budget, in this process."""
        from asyncbench.load.ramp import run_worker_stages

        duration = sum(s.duration_s for s in stages)
        left = self.budget.left()
        allowed, seconds = self.budget.allow(step, left if left is not None else 1, spec.retries, duration)
        await run_worker_stages(spec, stages, recorders, on_stage=on_stage,
                                max_requests=allowed if left is not None else None,
                                max_seconds=seconds if seconds is not None and seconds < duration else None)
        for recorder in recorders:
            self.budget.spent += recorder.attempts
            self._tally(recorder)
        if self.budget.bounded and ((left is not None and sum(r.count for r in recorders) >= allowed)
                                    or (seconds is not None and seconds < duration)):
            self.budget.cut = (step, self.budget.reason())

    def _spent(self, step: str, recorder: LevelRecorder, planned: int) -> None:
        self.budget.spend(step, recorder.attempts, planned, recorder.done)
        self._tally(recorder)

    def _tally(self, recorder: LevelRecorder) -> None:
        """Where a round's requests went, and the TLS they met, into the run's."""
        for address, n in recorder.addresses.items():
            self.addresses[address] = self.addresses.get(address, 0) + n
        self.tls.merge(recorder.tls)

    def check_budget(self, level: int) -> None:
        """After a step is written: RunStopped if a bound of the run cut it short."""
        self.budget.check(f"level {level}", level)

    async def _closed(self, step: str, spec: RequestSpec, concurrency: int, requests: int, recorder: LevelRecorder, *,
                      bounded: bool, duration: float | None = None) -> RoundFacts:
        from asyncbench.load.closed import run_round

        return await run_round(spec, concurrency, requests, recorder, bounded=bounded, duration=duration)

    async def _open(self, step: str, spec: RequestSpec, *, rate: float, total: int, arrivals: str, max_in_flight: int,
                    seed: int | None, recorder: RateRecorder) -> RoundFacts:
        import random

        from asyncbench.load.open import offer

        rng = self._rngs.get(seed)
        if rng is None:
            rng = self._rngs[seed] = random.Random(seed)
        return await offer(spec, rate, total, recorder, arrivals=arrivals, max_in_flight=max_in_flight, rng=rng)


class ShardedDriver(Driver):
    """Runs each round as shards on a backend, one per worker, and merges them."""

    sharded = True

    def __init__(self, backend_factory: Any, loop: str, scale: dict[str, Any], budget: Budget | None = None) -> None:
        super().__init__(loop, budget)
        self._factory = backend_factory
        self._backend: Backend | None = None
        self._scale = scale
        self._live: dict[int, dict[int, int]] = {}  # id(recorder) → shard → requests done

    def __enter__(self) -> ShardedDriver:
        self._backend = self._factory()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def describe(self) -> dict[str, Any]:
        backend = self._backend
        return {**self._scale, "workers": backend.workers() if backend else None}

    def progress(self, recorder: LevelRecorder) -> int:
        return super().progress(recorder) + sum(self._live.get(id(recorder), {}).values())

    def remote_hosts(self) -> list[str]:
        return remote_hosts(self._backend.addresses() if self._backend is not None else [])

    async def _closed(self, step: str, spec: RequestSpec, concurrency: int, requests: int, recorder: LevelRecorder, *,
                      bounded: bool, duration: float | None = None) -> RoundFacts:
        jobs = split_closed(spec, self.loop, concurrency, requests, bounded, self._workers(), duration=duration)
        return await self._round(step, jobs, recorder)

    async def _open(self, step: str, spec: RequestSpec, *, rate: float, total: int, arrivals: str, max_in_flight: int,
                    seed: int | None, recorder: RateRecorder) -> RoundFacts:
        jobs = split_open(spec, self.loop, rate=rate, total=total, arrivals=arrivals, max_in_flight=max_in_flight,
                          seed=seed, workers=self._workers())
        return await self._round(step, jobs, recorder)

    def _workers(self) -> int:
        assert self._backend is not None, "the driver is used outside its `with`"
        return self._backend.workers()

    async def _round(self, step: str, jobs: list[ShardJob], recorder: LevelRecorder) -> RoundFacts:
        assert self._backend is not None
        jobs = [replace(job, interval=recorder.timeline.interval) for job in jobs]
        live = self._live.setdefault(id(recorder), {})
        stop = threading.Event()
        coordinator = _Coordinator(self._backend, jobs, live, stop)
        thread = asyncio.get_running_loop().run_in_executor(None, coordinator.run)
        try:
            outcomes = await asyncio.shield(thread)
        except asyncio.CancelledError:
            stop.set()  # Ctrl-C: every shard stops; this round is not kept, as in one process
            await asyncio.wait([thread], timeout=STOP_GRACE_S + 5)
            raise
        finally:
            self._live.pop(id(recorder), None)
        facts: list[RoundFacts] = []
        for outcome in outcomes:
            if outcome.status == "ok":
                assert outcome.recorder is not None and outcome.facts is not None
                shard = type(recorder).from_dict(outcome.recorder)
                recorder.merge(shard)
                facts.append(RoundFacts(**outcome.facts))
            else:
                # What it last reported is a floor, not a count: it was reported up to a progress
                # interval before the end, and requests in flight then went unreported.
                failure = (f"{step}: shard {outcome.job.index + 1} of {len(jobs)} ({outcome.worker}) {outcome.status}: "
                           f"{outcome.reason}; it had reported {outcome.progress:,} of its {outcome.job.planned:,} "
                           "requests answered, and how many more it sent is not known; the row holds the other "
                           "shards' requests only")
                self.failures.append(failure)
                # Said at once too: the run goes on, and the conclusion comes only at its end.
                print(f"asyncbench: warning: {failure}", file=sys.stderr, flush=True)
        self.log.append({"step": step, "shards": [o.summary() for o in outcomes]})
        if not facts:
            raise ShardError(f"{step}: every shard failed: " + "; ".join(o.reason for o in outcomes))
        return merge_facts(facts)


@dataclass
class _Coordinator:
    """One sharded round, driven from a thread: submit, wait until every shard is ready, start
    them together, follow their progress, collect what they recorded."""

    backend: Backend
    jobs: list[ShardJob]
    live: dict[int, int]
    stop: threading.Event
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def run(self) -> list[Outcome]:
        backend, n = self.backend, len(self.jobs)
        backend.submit(self.jobs)
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(ready) + len(self.outcomes) < n:
            for event in backend.events(0.05):
                if event[0] == "ready":
                    ready.add(event[1])
                else:
                    self._handle(event)
            if self.stop.is_set():
                return self._stop_all()
            if time.monotonic() > deadline:
                late = set(range(n)) - ready - set(self.outcomes)
                backend.abandon(late)  # not left waiting for a start that will not come
                for i in late:
                    self.outcomes[i] = Outcome(self.jobs[i], "?", "died",
                                               reason=f"not ready after {READY_TIMEOUT_S:g} s")
                break
        if ready:
            backend.go(time.time() + START_MARGIN_S)
        while len(self.outcomes) < n:
            for event in backend.events(0.05):
                self._handle(event)
            if self.stop.is_set():
                return self._stop_all()
        return [self.outcomes[i] for i in range(n)]

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind, i = event[0], event[1]
        if kind == "progress":
            self.live[i] = event[2]
        elif kind == "done":
            worker, payload = event[2], event[3]
            self.outcomes[i] = Outcome(self.jobs[i], worker, payload["status"], recorder=payload.get("recorder"),
                                       facts=payload.get("facts"), reason=payload.get("reason", ""),
                                       progress=self.live.get(i, 0))
            self.live.pop(i, None)
        elif kind == "died" and i not in self.outcomes:
            self.outcomes[i] = Outcome(self.jobs[i], event[2], "died", reason=event[3],
                                       progress=self.live.get(i, 0))
            self.live.pop(i, None)

    def _stop_all(self) -> list[Outcome]:
        self.backend.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        while len(self.outcomes) < len(self.jobs) and time.monotonic() < deadline:
            for event in self.backend.events(0.05):
                if event[0] != "ready":
                    self._handle(event)
        pending = set(range(len(self.jobs))) - set(self.outcomes)
        if pending:
            self.backend.abandon(pending)
        return [o for _, o in sorted(self.outcomes.items())]


def remote_hosts(addresses: list[str]) -> list[str]:
    """The hosts of worker addresses ("tcp://10.0.0.7:40123", "pid 4711") that are not this
    machine's loopback."""
    from asyncbench.options import is_loopback

    hosts = set()
    for address in addresses:
        if "://" not in address:
            continue  # a local process
        host = address.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        if host and not is_loopback(host):
            hosts.add(host)
    return sorted(hosts)


def parse_cluster(address: str) -> tuple[str, int | None]:
    """`local:N` → ("local", N); `tcp://host:port` (or `host:port`) → (address, None)."""
    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or not 1 <= int(count) <= 256:
            raise UsageError(f"invalid --cluster {address!r}: expected local:N with N from 1 to 256, "
                             "or a scheduler address such as tcp://10.0.0.5:8786")
        return "local", int(count)
    rest = address.split("://", 1)[1] if "://" in address else address
    if "@" in rest:
        from asyncbench.redact import redact_url

        raise UsageError(f"invalid --cluster {redact_url(address)!r}: a Dask scheduler address has no user part "
                         "(user@): Dask secures its connections with TLS certificates instead")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"invalid --cluster {address!r}: expected a scheduler address such as "
                         "tcp://10.0.0.5:8786, or local:N")
    return address if "://" in address else f"tcp://{address}", None


def make_driver(processes: int, cluster: str | None, loop: str, budget: Budget | None = None) -> Driver:
    """The driver the options ask for (validated; nothing is started until `with`)."""
    from asyncbench.options import check_range

    check_range("--processes", processes, 1, 256)
    if cluster is not None:
        if processes != 1:
            raise UsageError("--processes and --cluster do not go together: a cluster's workers are its processes")
        address, local = parse_cluster(cluster)
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--cluster needs Dask distributed: pip install 'asyncbench[cluster]'") from None
        from asyncbench.load.cluster import ClusterBackend

        return ShardedDriver(lambda: ClusterBackend(address, local), loop,
                             {"processes": None, "cluster": cluster}, budget)
    if processes == 1:
        return Driver(loop, budget)
    from asyncbench.load.processes import ProcessBackend

    return ShardedDriver(lambda: ProcessBackend(processes), loop, {"processes": processes, "cluster": None}, budget)
