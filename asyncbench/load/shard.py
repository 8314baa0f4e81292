"""What the driver and the shard backends agree on: a shard's job (sent to other processes),
what became of it, the backend's protocol, and the error when shards cannot be run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from asyncbench.errors import AsyncbenchError

if TYPE_CHECKING:
    from asyncbench.load.spec import RequestSpec


class ShardError(AsyncbenchError):
    """The shards could not be started or reached (exit 1)."""


@dataclass
class ShardJob:
    """One shard of one round: what a worker runs. Sent to other processes (pickled)."""

    index: int
    shards: int
    spec: RequestSpec
    loop: str  # the event loop the shard runs on
    kind: str  # "closed" (a level of connections) or "open" (a rate)
    concurrency: int = 0
    requests: int = 0
    bounded: bool = False
    rate: float = 0.0  # this shard's share of the offered rate
    total: int = 0  # this shard's share of the scheduled requests
    phase_s: float = 0.0  # this shard's first send, after the common start
    arrivals: str = "constant"
    max_in_flight: int = 10_000
    seed: int | None = None
    duration: float | None = None  # closed: no new request after this many seconds
    interval: float = 1.0  # the timeline's, so that the shards' intervals merge

    @property
    def planned(self) -> int:
        return self.requests if self.kind == "closed" else self.total


@dataclass
class Outcome:
    """What became of one shard: its recorder (as a dict) and facts, or why it failed."""

    job: ShardJob
    worker: str  # "pid 1234", or a Dask worker's address
    status: str  # "ok", "died", "stopped"
    recorder: dict[str, Any] | None = None
    facts: dict[str, Any] | None = None
    reason: str = ""
    progress: int = 0  # requests it reported done, last seen

    def summary(self) -> dict[str, Any]:
        """The sidecar's view of a shard: its worker and its own counts."""
        entry: dict[str, Any] = {"shard": self.job.index + 1, "worker": self.worker, "status": self.status}
        if self.job.kind == "closed":
            entry["connections"] = self.job.concurrency
        else:
            entry["offered_rps"] = self.job.rate
        entry["requests_planned"] = self.job.planned
        if self.recorder is not None:
            rec = self.recorder
            errors = sum(rec["errors"].values())
            entry.update(requests=rec["successes"] + errors, successes=rec["successes"], failures=errors)
            span = (rec["last_done"] - rec["first_sent"]) if rec["first_sent"] is not None else 0.0
            entry["goodput_rps"] = rec["successes"] / span if span > 0 else 0.0
            if "dropped" in rec:
                entry["dropped"] = rec["dropped"]
        else:
            # Unknown: it died before saying. What it reported answered is a floor.
            entry.update(requests=None, requests_reported_answered=self.progress, reason=self.reason)
        return entry


class Backend(Protocol):
    """Where shards run: local processes or a Dask cluster. Used from one coordinating thread."""

    name: str

    def workers(self) -> int:
        """How many shards a round can run at once."""

    def addresses(self) -> list[str]:
        """The workers' addresses ("tcp://host:port"), or names ("pid 4711")."""

    def submit(self, jobs: list[ShardJob]) -> None:
        """Start the shards; each reports ("ready", i), then waits for `go`."""

    def events(self, timeout: float) -> list[tuple[Any, ...]]:
        """What happened since the last call: ("ready", i), ("progress", i, n),
        ("done", i, worker, payload), ("died", i, worker, reason)."""

    def go(self, start_at: float) -> None:
        """Release every shard, to start at wall-clock time `start_at`."""

    def stop(self) -> None:
        """Ask every shard of the round to stop now."""

    def abandon(self, pending: set[int]) -> None:
        """Shards that did not answer a stop: end them by force."""

    def close(self) -> None:
        """End the workers."""


