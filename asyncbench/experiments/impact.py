"""`threads --impact N`: the cost side of Lab 2.1's claim — "1,000 embedding requests won't
create 1,000 threads; they'll all execute on ONE thread" — measured.

N concurrent GETs of the target, three ways, each in a fresh process (so its thread count and
its peak memory are its own, not the sum of what ran before in the same process):

- `asyncio`: N coroutines on one event loop (the lab's client);
- `thread-per-request`: a ThreadPoolExecutor of N workers, each a blocking stdlib GET;
- `default-pool`: the same blocking GETs through asyncio's default executor, as
  `loop.run_in_executor(None, ...)` (and `asyncio.to_thread`) would run them: min(32, CPUs + 4)
  workers, so the requests go in waves.

A sampler thread counts the threads alive and the resident memory every millisecond.
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported here, before any way is measured, so that no way's memory counts loading a library.

WAYS = ("asyncio", "thread-per-request", "default-pool")
_STATUS = Path("/proc/self/status")


@dataclass
class ImpactWay:
    """One way's record (the sidecar's `impact` list)."""

    way: str
    requests: int
    successes: int
    failures: int
    errors: str  # what the failures were: "connect 12, HTTP 503 4"
    threads_peak: int  # most threads alive in the process at once (the sampler not counted)
    workers: int  # threads the way was allowed to use for the requests (0: none, one event loop)
    peak_rss_mb: float  # the process's peak resident memory
    rss_growth_mb: float  # above its resident memory just before the requests
    wall_s: float
    throughput_rps: float


class _Sampler(threading.Thread):
    """Threads alive and resident memory, every millisecond, until stopped."""

    def __init__(self) -> None:
        super().__init__(name="asyncbench-sampler", daemon=True)
        self.stop = threading.Event()
        self.threads_peak = 0
        self.rss_peak_kib = 0

    def run(self) -> None:
        while not self.stop.wait(0.001):
            self.sample()

    def sample(self) -> None:
        threads, rss = _threads_and_rss()
        self.threads_peak = max(self.threads_peak, threads - 1)  # not counting this thread
        self.rss_peak_kib = max(self.rss_peak_kib, rss)


def _threads_and_rss() -> tuple[int, int]:
    """The process's threads (the kernel's count, every thread) and resident KiB."""
    try:
        fields = dict(line.split(":", 1) for line in _STATUS.read_text().splitlines() if ":" in line)
        return int(fields["Threads"]), int(fields["VmRSS"].split()[0])
    except (OSError, KeyError, ValueError):
        import resource

        return threading.active_count(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# A failure that is this machine's, not the target's: the process had no file left for a socket.
OUT_OF_FILES = "out of open files"


def _out_of_files(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
            return True
        exc = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
    return False


def _blocking_get(url: str, timeout: float) -> str | None:
    """One GET with the standard library, on the calling thread: None when it succeeded, else
    what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a checked loopback URL
            resp.read()
        return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, ConnectionError) as exc:
        if _out_of_files(exc):
            return OUT_OF_FILES
        reason = getattr(exc, "reason", exc)
        return "timeout" if isinstance(reason, TimeoutError) else "connect"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return OUT_OF_FILES if _out_of_files(exc) else "other"


def _asyncio_way(url: str, n: int, timeout: float) -> list[str | None]:
    from asyncbench.client import AsyncHttpClient

    async def main() -> list[str | None]:
        async with AsyncHttpClient(max_concurrency=None, timeout=timeout, keep_body=False) as client:
            results = await asyncio.gather(*(client.fetch(url) for _ in range(n)))
        return [None if r.ok else (f"HTTP {r.status}" if r.status else
                                   OUT_OF_FILES if "Too many open files" in (r.detail or "") else (r.error or "other"))
                for r in results]

    return asyncio.run(main())


def _thread_per_request_way(url: str, n: int, timeout: float) -> list[str | None]:
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="request") as pool:
        return list(pool.map(lambda _: _blocking_get(url, timeout), range(n)))


def _default_pool_way(url: str, n: int, timeout: float) -> list[str | None]:
    async def main() -> list[str | None]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, _blocking_get, url, timeout)
                                           for _ in range(n))))

    return asyncio.run(main())


def default_pool_size() -> int:
    """Workers in asyncio's default executor: min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


def measure(way: str, url: str, n: int, timeout: float) -> ImpactWay:
    """Run one way here, in this (fresh) process, and measure it."""
    run = {"asyncio": _asyncio_way, "thread-per-request": _thread_per_request_way,
           "default-pool": _default_pool_way}[way]
    workers = {"asyncio": 0, "thread-per-request": n, "default-pool": default_pool_size()}[way]
    sampler = _Sampler()
    _, rss_before = _threads_and_rss()
    sampler.sample()
    sampler.start()
    t0 = time.perf_counter()
    outcomes = run(url, n, timeout)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    failures = [o for o in outcomes if o is not None]
    kinds: dict[str, int] = {}
    for kind in failures:
        kinds[kind] = kinds.get(kind, 0) + 1
    return ImpactWay(
        way=way, requests=n, successes=n - len(failures), failures=len(failures),
        errors=", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])),
        threads_peak=sampler.threads_peak, workers=workers,
        peak_rss_mb=sampler.rss_peak_kib / 1024, rss_growth_mb=(sampler.rss_peak_kib - rss_before) / 1024,
        wall_s=wall, throughput_rps=n / wall if wall > 0 else 0.0,
    )


def _child(conn: Any, way: str, url: str, n: int, timeout: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C does
    from asyncbench.system import raise_nofile_limit

    raise_nofile_limit()
    try:
        conn.send(("ok", measure(way, url, n, timeout)))
    except Exception as exc:  # reported by the parent with the way's name
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def run_way(way: str, url: str, n: int, timeout: float) -> ImpactWay:
    """One way in a fresh process (spawned: nothing of this one's threads or memory carried
    over); killed if the run is cancelled."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child, way, url, n, timeout), name=f"asyncbench-impact-{way}",
                          daemon=True)
    process.start()
    child.close()
    waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asyncbench-impact")  # not the loop's pool: the lab replaces it
    try:
        status, value = await asyncio.get_running_loop().run_in_executor(waiter, parent.recv)
    except EOFError:
        process.join(5)
        raise RuntimeError(f"--impact {way}: its process ended without a result (exit {process.exitcode})") from None
    except asyncio.CancelledError:
        process.kill()
        raise
    finally:
        process.join(5)
        parent.close()
        waiter.shutdown(wait=False)
    if status != "ok":
        raise RuntimeError(f"--impact {way}: {value}")
    return value


def verdict(ways: list[ImpactWay]) -> str:
    """The seed's claim, with the measured numbers."""
    by = {w.way: w for w in ways}
    if "asyncio" not in by:
        return "no way finished"
    a = by["asyncio"]
    line = (f"{a.requests:,} concurrent requests on asyncio ran on one event loop: at most {a.threads_peak} "
            f"thread{'s' if a.threads_peak != 1 else ''} alive, +{a.rss_growth_mb:,.1f} MB, {a.wall_s:.2f} s, "
            f"{a.successes:,} ok")
    t = by.get("thread-per-request")
    if t is not None:
        line += (f"; thread-per-request needed {t.threads_peak:,} threads, +{t.rss_growth_mb:,.1f} MB, "
                 f"{t.wall_s:.2f} s")
    d = by.get("default-pool")
    if d is not None:
        line += (f"; asyncio's default pool ({d.workers} workers) ran them in waves: {d.wall_s:.2f} s "
                 f"({d.wall_s / a.wall_s:,.0f}× asyncio's)" if a.wall_s > 0 else "")
    return line
