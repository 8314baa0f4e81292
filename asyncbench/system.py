"""Process-level facts and limits: open-file limit, peak resident memory, CPU time, loop lag."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now in force.

    Every simultaneous request holds a socket, and the default soft limit (often 1024) would
    turn a burst of 2000 into "Too many open files" rather than a measurement of the server.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRss:
    """Peak resident memory of this process over a span (one level).

    On Linux the kernel's high-water mark (VmHWM) is reset at the start of the span by writing
    "5" to /proc/self/clear_refs, so the peak is exact and costs nothing while requests run.
    Where that is not possible, the process-lifetime peak from getrusage is reported.
    """

    def __init__(self) -> None:
        self._resettable = False
        self.reset()

    def reset(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")
            self._resettable = _status_kib("VmHWM") is not None
        except OSError:
            self._resettable = False

    def peak_mb(self) -> float:
        if self._resettable:
            kib = _status_kib("VmHWM")
            if kib is not None:
                return kib / 1024
        # ru_maxrss is KiB on Linux, bytes on macOS.
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    t = os.times()
    return t.user + t.system


def cpu_wait_seconds() -> float:
    """Time the main thread (the event loop's) has spent ready to run but waiting for a CPU
    (Linux's schedstat; 0 where there is none). A client sharing its cores with a busy
    neighbour is the limit as surely as one using a whole core, but its CPU time does not say
    so: this does."""
    try:
        # The path is the main thread's: the process's pid is its main thread's id.
        fields = Path(f"/proc/self/task/{os.getpid()}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class LoopLagMonitor:
    """Measures how late the event loop wakes a task that sleeps `interval` seconds.

    A tick still waiting when the monitor exits counts too: a loop blocked until the very end
    (its lag not yet seen by the ticker) is measured at exit as the time that tick is overdue.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.total_lag = 0.0  # every tick's lateness added up: how long the loop was behind
        self._task: asyncio.Task[None] | None = None
        self._tick_started = 0.0

    async def _tick(self) -> None:
        while True:
            self._tick_started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self._record(time.perf_counter())

    def _record(self, now: float) -> None:
        lag = now - self._tick_started - self.interval
        if lag > 0:
            self.total_lag += lag
        if lag > self.max_lag:
            self.max_lag = lag

    def __enter__(self) -> LoopLagMonitor:
        self._tick_started = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._record(time.perf_counter())
            self._task.cancel()
