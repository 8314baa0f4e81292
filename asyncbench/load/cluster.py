"""Shards on the workers of a Dask distributed cluster (`--cluster ADDRESS`, or `local:N` for a
LocalCluster of N worker processes). One shard per worker, pinned to it; the start barrier and
the progress go through Dask's own coordination primitives (a Queue, a Variable, an Event on
the scheduler), so nothing but Dask's connections is needed between the machines."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asyncbench import signals
from asyncbench.load.shard import ShardError

if TYPE_CHECKING:
    from distributed import Future

    from asyncbench.load.shard import ShardJob

CONNECT_TIMEOUT_S = 5.0
WORKERS_TIMEOUT_S = 30.0  # a scheduler just started may not have its workers yet
# How often the coordinator checks that each shard's worker is still in the cluster.
MEMBERSHIP_EVERY_S = 0.5


@dataclass(frozen=True)
class Names:
    """The round's coordination objects on the scheduler."""

    events: str
    go: str
    stop: str


class ClusterBackend:
    """A Dask client; a LocalCluster too when asked for `local:N`."""

    name = "cluster"

    def __init__(self, address: str, local: int | None) -> None:
        from distributed import Client, LocalCluster

        # Dask's lines would interleave with the progress display, and its errors at shutdown
        # (a shard's wait for the start cut short by a stop) are not news: asyncbench says what
        # became of every shard itself.
        for logger in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny",
                       "distributed.core"):
            logging.getLogger(logger).setLevel(logging.CRITICAL)
        self._cluster = None
        if local is not None:
            # Ctrl-C in a terminal reaches the whole process group: the workers must leave it to
            # asyncbench, which stops their shards and closes the cluster. Started with SIGINT
            # ignored, a Python process keeps it ignored.
            with signals.ignored_by_children():
                self._cluster = LocalCluster(n_workers=local, threads_per_worker=1, processes=True, host="127.0.0.1",
                                             dashboard_address=None, silence_logs=logging.CRITICAL)
            address = self._cluster.scheduler_address
        self.address = address
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            self._close_cluster()
            raise ShardError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            self.close()
            raise ShardError(f"the Dask scheduler at {address} has no worker after {WORKERS_TIMEOUT_S:g} s "
                             f"(start some: dask worker {address})") from None
        self._futures: dict[int, tuple[str, Future]] = {}
        self._names: Names | None = None
        self._checked = 0.0

    def addresses(self) -> list[str]:
        return sorted(self.client.scheduler_info()["workers"])

    def workers(self) -> int:
        return len(self.addresses())

    def submit(self, jobs: list[ShardJob]) -> None:
        from distributed import Event, Queue, Variable

        tag = uuid.uuid4().hex[:12]
        names = self._names = Names(f"asyncbench-{tag}-events", f"asyncbench-{tag}-go", f"asyncbench-{tag}-stop")
        self._queue = Queue(names.events, client=self.client)
        self._go = Variable(names.go, client=self.client)
        self._stop = Event(names.stop, client=self.client)
        addresses = self.addresses()
        self._futures = {
            job.index: (address, self.client.submit(run_cluster_job, job, names, key=f"asyncbench-{tag}-shard-{job.index}",
                                                    workers=[address], allow_other_workers=False, pure=False,
                                                    retries=0))
            for job, address in zip(jobs, addresses, strict=False)
        }

    def events(self, timeout: float) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = list(self._queue.get(batch=True))
        for i, (address, future) in list(self._futures.items()):
            if future.status == "finished":
                out.append(("done", i, address, future.result()))
            elif future.status in ("error", "cancelled"):
                reason = future.exception() if future.status == "error" else "cancelled"
                out.append(("died", i, address, f"{type(reason).__name__}: {reason}"
                            if isinstance(reason, BaseException) else str(reason)))
            else:
                continue
            del self._futures[i]
        now = time.monotonic()
        if self._futures and now - self._checked > MEMBERSHIP_EVERY_S:
            self._checked = now
            present = set(self.addresses())
            for i, (address, future) in list(self._futures.items()):
                if address not in present:
                    # Dask would run the task again elsewhere: a shard is one moment's load, not
                    # a computation to retry, so it is reported as lost instead.
                    future.cancel()
                    out.append(("died", i, address, "its worker left the cluster"))
                    del self._futures[i]
        if not out:
            time.sleep(timeout)
        return out

    def go(self, start_at: float) -> None:
        self._go.set(start_at)

    def stop(self) -> None:
        self._stop.set()

    def abandon(self, pending: set[int]) -> None:
        # A running task cannot be killed from outside its worker; it ends with its requests,
        # which are bounded in number and by --timeout.
        for i in pending:
            if i in self._futures:
                self._futures.pop(i)[1].cancel()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self._close_cluster()

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


class _DaskChannel:
    """The shard's side: Dask's queue, variable and event, through the worker's client."""

    def __init__(self, names: Names) -> None:
        from distributed import Event, Queue, Variable

        self.queue = Queue(names.events)
        self.go = Variable(names.go)
        self.stop = Event(names.stop)

    def ready(self, index: int) -> float | None:
        self.queue.put(("ready", index))
        while True:
            try:
                return float(self.go.get(timeout=0.5))
            except TimeoutError:
                if self.stop.is_set():
                    return None

    def progress(self, index: int, done: int) -> None:
        self.queue.put(("progress", index, done))

    def stopped(self) -> bool:
        return self.stop.is_set()


def run_cluster_job(job: ShardJob, names: Names) -> dict[str, Any]:
    """The task a Dask worker runs: one shard."""
    from asyncbench.load.work import run_job

    return run_job(job, _DaskChannel(names))
