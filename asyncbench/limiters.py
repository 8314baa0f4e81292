"""Concurrency limits: a fixed one, and two that adapt to what the server answers.

A limiter is told of every finished request — its round-trip time, whether the server pushed
back (a 429, a 503, a timeout, a refused or reset connection), how many requests were in flight,
and when — and keeps `limit`, the number of requests that may be out at once. The clock is the
caller's (`now`, in seconds), so that each update rule can be run on synthetic samples and its
limits checked exactly.

- `Fixed(n)`: the semaphore of the labs.
- `AIMD`: additive increase while the limit is used and latency is normal, multiplicative
  decrease when the server pushes back or the latency rises well above its baseline (TCP's
  congestion control; Netflix's concurrency-limits `AIMDLimit`, with a latency signal).
- `Gradient`: per window, the limit scaled by the ratio of the long-term latency (the lowest
  recent one: Envoy's minRTT) to the short-term one (the window's mean), plus a small queue
  allowance (Netflix's `Gradient2Limit`, Envoy's adaptive concurrency filter).

`Gate` turns a limiter into what a client awaits: `async with gate:` around each request, and
`gate.done(rtt, dropped)` when it has ended.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Limiter(Protocol):
    """What a client asks of a concurrency limit."""

    @property
    def limit(self) -> int:
        """Requests that may be in flight at once, now."""
        ...

    @property
    def max_limit(self) -> int:
        """The most `limit` can ever be (the client's connection pool is sized to it)."""
        ...

    def update(self, rtt: float, dropped: bool, in_flight: int, now: float) -> None:
        """A request ended after `rtt` seconds, at `now`; `dropped` when the server pushed back
        (429, 503, a timeout, a refused connection); `in_flight` requests were out as it ended
        (itself included)."""
        ...


def _check(name: str, value: float, low: float, high: float = math.inf) -> None:
    if not (low <= value <= high) or math.isnan(value):
        bound = f"from {low:g} to {high:g}" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


class Fixed:
    """A limit that never moves: what a semaphore does."""

    def __init__(self, limit: int) -> None:
        _check("limit", limit, 1)
        self._limit = int(limit)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def max_limit(self) -> int:
        return self._limit

    def update(self, rtt: float, dropped: bool, in_flight: int, now: float) -> None:
        pass

    def __repr__(self) -> str:
        return f"Fixed({self._limit})"


class _WindowedMin:
    """The lowest value seen over the last `window` seconds, in ten buckets (memory stays flat)."""

    def __init__(self, window: float) -> None:
        self.width = window / 10
        self.buckets: deque[tuple[int, float]] = deque()

    def add(self, value: float, now: float) -> float:
        key = math.floor(now / self.width)
        buckets = self.buckets
        if buckets and buckets[-1][0] == key:
            if value < buckets[-1][1]:
                buckets[-1] = (key, value)
        else:
            buckets.append((key, value))
        while buckets[0][0] <= key - 10:
            buckets.popleft()
        return min(v for _, v in buckets)


class _Baseline:
    """The latency of the unloaded server: the lowest mean of `block` successive round trips
    seen over the last `window` seconds. A mean of many is steady where one sample, or an
    average started from one, is not (the lowest of those drifts down with the noise, and every
    ordinary latency would then look like a queue)."""

    def __init__(self, window: float, block: int) -> None:
        self.block = block
        self.samples: list[float] = []
        self.lowest = _WindowedMin(window)
        self.value: float | None = None

    def add(self, rtt: float, now: float) -> float | None:
        samples = self.samples
        samples.append(rtt)
        if len(samples) >= self.block:
            self.value = self.lowest.add(sum(samples) / len(samples), now)
            samples.clear()
        return self.value


class _Moving:
    """What the adaptive limits share: a limit kept as a real number, shown as its whole part."""

    _limit: float
    _max: int

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def max_limit(self) -> int:
        return self._max

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self.limit}, max_limit={self._max})"


class AIMD(_Moving):
    """Additive increase, multiplicative decrease.

    On each sample, at `now`:

    - a success updates the short-term latency (an exponential average of round trips,
      weight `smoothing`) and the baseline (the lowest mean of `baseline_block` successive
      round trips over the last `baseline_window` seconds; none until the first block);
    - a push-back (`dropped`), or a short-term latency above `tolerance` × baseline, is
      congestion: the limit is multiplied by `backoff` — at most once per round trip (the
      samples of requests sent before a decrease do not count again); a push-back within that
      round trip takes one from the limit (a refusal comes back fast: its place, refilled at
      once, would be refused again and again);
    - otherwise, when the limit is used (at least half of it in flight), it grows by
      `increase` / limit: `increase` per round trip of requests, doubled for every
      `probe_rtts` round trips without congestion (up to 16 ×: a capacity that rose is found in
      a second, not in minutes, as TCP BIC probes; at the knee congestion comes every few round
      trips and the step stays `increase`) — or, until the first congestion, by one per sample
      (slow start, as TCP's: it doubles every round trip; the first congestion halves it, back
      to what the last round trip did without one).

    The limit stays within [`min_limit`, `max_limit`]; `limit` is its whole part.
    """

    def __init__(self, initial: int = 10, *, min_limit: int = 1, max_limit: int = 1000, increase: float = 2.0,
                 backoff: float = 0.9, tolerance: float = 1.15, smoothing: float = 0.05,
                 baseline_window: float = 60.0, baseline_block: int = 64, probe_rtts: float = 10.0) -> None:
        _check("min_limit", min_limit, 1)
        _check("max_limit", max_limit, min_limit)
        _check("initial", initial, min_limit, max_limit)
        _check("increase", increase, 0)
        _check("backoff", backoff, 0.01, 0.999)
        _check("tolerance", tolerance, 1.0)
        _check("smoothing", smoothing, 0.001, 1.0)
        _check("baseline_window", baseline_window, 0.001)
        _check("baseline_block", baseline_block, 1)
        _check("probe_rtts", probe_rtts, 1.0)
        self._limit = float(initial)
        self.min_limit, self._max = int(min_limit), int(max_limit)
        self.increase, self.backoff, self.tolerance, self.smoothing = increase, backoff, tolerance, smoothing
        self.probe_rtts = probe_rtts
        self._calm_since: float | None = None  # the last congestion (or the first sample)
        self.short: float | None = None  # the short-term latency, seconds
        self.baseline: float | None = None  # the unloaded latency, once known
        self._baseline = _Baseline(baseline_window, int(baseline_block))
        self._hold_until = -math.inf  # no second decrease before this moment
        self.slow_start = True  # until the first congestion

    def update(self, rtt: float, dropped: bool, in_flight: int, now: float) -> None:
        if self._calm_since is None:
            self._calm_since = now
        congested = dropped
        if not dropped:
            self.short = rtt if self.short is None else self.short + self.smoothing * (rtt - self.short)
            self.baseline = self._baseline.add(rtt, now)
            congested = self.baseline is not None and self.short > self.tolerance * self.baseline
        if congested:
            self._calm_since = now
            if self.slow_start:
                # The limit doubled over the last round trip: half of it is what last went well.
                self.slow_start = False
                self._limit = max(float(self.min_limit), self._limit / 2)
                self._hold_until = now + (self.short if self.short is not None else rtt)
            elif now >= self._hold_until:
                self._limit = max(float(self.min_limit), self._limit * self.backoff)
                self._hold_until = now + (self.short if self.short is not None else rtt)
            elif dropped:
                # A push-back comes back fast: were its place refilled at once, one round trip
                # would send hundreds of requests to be refused. Each takes its place with it.
                self._limit = max(float(self.min_limit), self._limit - 1)
        elif in_flight * 2 >= self._limit:
            if self.slow_start:
                step = 1.0
            else:
                calm = (now - self._calm_since) / (self.probe_rtts * (self.short or rtt))
                step = self.increase * 2 ** min(4, int(calm)) / self._limit
            self._limit = min(float(self._max), self._limit + step)

class Gradient(_Moving):
    """A latency-gradient limit, updated once per window.

    A window lasts `window_rtts` baseline round trips (at least `min_window` seconds and
    `min_samples` samples). When it closes, at `now`:

    - short-term latency: the mean round trip of the window's successes (a mean, not a
      median: by Little's law it is what queueing lengthens; a queue served in bursts can
      leave the median where it was); long-term (the baseline): the lowest mean of
      `baseline_block` successive round trips over the last `baseline_window` seconds (until
      the first block is in, the limit only grows);
    - gradient = `tolerance` × long / short, kept within [0.5, `tolerance`];
    - new limit = limit × gradient + `queue` (the allowance that lets it probe upwards);
      a window with push-backs (429, 503, timeouts) takes at most limit × `backoff`, and each
      push-back takes one from the limit as it comes (a fast refusal is not sent again); a window
      that did not use the limit (less than half of it in flight at most) does not raise it;
    - a fall is taken at once, a rise by `smoothing` of the way — except until the first
      congestion (a latency past the tolerance, or a push-back), when it doubles (slow start;
      push-backs in the window that ends it halve it).

    At the knee the limit settles where the mean is `tolerance` × the baseline (plus the
    allowance): a server's capacity, with a tenth more queued by default.
    """

    def __init__(self, initial: int = 10, *, min_limit: int = 1, max_limit: int = 1000, tolerance: float = 1.1,
                 queue: float = 2.0, smoothing: float = 0.5, backoff: float = 0.9, window_rtts: float = 2.0,
                 min_window: float = 0.05, min_samples: int = 32, baseline_window: float = 60.0,
                 baseline_block: int = 64) -> None:
        _check("min_limit", min_limit, 1)
        _check("max_limit", max_limit, min_limit)
        _check("initial", initial, min_limit, max_limit)
        _check("tolerance", tolerance, 1.0)
        _check("queue", queue, 0)
        _check("smoothing", smoothing, 0.01, 1.0)
        _check("backoff", backoff, 0.01, 0.999)
        _check("window_rtts", window_rtts, 0.1)
        _check("min_window", min_window, 0.0)
        _check("min_samples", min_samples, 1)
        _check("baseline_window", baseline_window, 0.001)
        _check("baseline_block", baseline_block, 1)
        self._limit = float(initial)
        self.min_limit, self._max = int(min_limit), int(max_limit)
        self.tolerance, self.queue, self.smoothing, self.backoff = tolerance, queue, smoothing, backoff
        self.window_rtts, self.min_window, self.min_samples = window_rtts, min_window, int(min_samples)
        self.short: float | None = None
        self.baseline: float | None = None
        self._baseline = _Baseline(baseline_window, int(baseline_block))
        self._start: float | None = None  # when the window in progress began
        self._rtts: list[float] = []
        self._drops = 0
        self._peak_in_flight = 0
        self.slow_start = True  # until the first congestion

    def update(self, rtt: float, dropped: bool, in_flight: int, now: float) -> None:
        if self._start is None:
            self._start = now
        if dropped:
            self._drops += 1
            # A push-back takes its place with it at once (refilled, a fast refusal would be
            # sent again hundreds of times before the window closes).
            self._limit = max(float(self.min_limit), self._limit - 1)
        else:
            self._rtts.append(rtt)
            self.baseline = self._baseline.add(rtt, now)
        if in_flight > self._peak_in_flight:
            self._peak_in_flight = in_flight
        length = max(self.min_window, self.window_rtts * (self.baseline or 0.0))
        if now - self._start >= length and len(self._rtts) + self._drops >= self.min_samples:
            self._close(now)

    def _close(self, now: float) -> None:
        limit = self._limit
        new = limit
        if self._rtts:
            self.short = short = sum(self._rtts) / len(self._rtts)
            base = self.baseline
            ratio = self.tolerance if base is None else self.tolerance * base / short
            gradient = min(self.tolerance, max(0.5, ratio))
            new = limit * gradient + self.queue
            if ratio < 1.0:  # the latency is past the tolerance: a queue
                self.slow_start = False
            elif self.slow_start:
                new = 2 * limit
        if self._drops:
            new = min(new, limit * (0.5 if self.slow_start else self.backoff))
            self.slow_start = False
        if self._peak_in_flight * 2 < limit:
            new = min(new, limit)
        if new < limit or self.slow_start:
            limit = new
        else:
            limit += self.smoothing * (new - limit)
        self._limit = min(float(self._max), max(float(self.min_limit), limit))
        self._start, self._rtts, self._drops, self._peak_in_flight = now, [], 0, 0

ALGORITHMS: dict[str, Callable[..., Limiter]] = {"aimd": AIMD, "gradient": Gradient}


def make_limiter(algorithm: str, initial: int, max_limit: int) -> Limiter:
    """The limiter an algorithm's name gives (aimd, gradient, or a fixed number), with its
    defaults; ValueError naming an unknown one."""
    if algorithm.isdigit():
        return Fixed(int(algorithm))
    try:
        factory = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}: expected {' or '.join(ALGORITHMS)}") from None
    return factory(initial, max_limit=max_limit)


class Gate:
    """A limiter as a gate to await: at most `limiter.limit` holders at once, re-read on every
    entry and exit (a limit that rises lets waiters in; one that falls lets no one in until
    enough have left). FIFO: the longest waiting goes first.

    >>> gate = Gate(AIMD(10))
    >>> async with gate:
    ...     started = time.perf_counter()
    ...     result = await send()
    ...     gate.done(time.perf_counter() - started, dropped=result.status in (429, 503))
    """

    def __init__(self, limiter: Limiter, clock: Callable[[], float] = time.perf_counter) -> None:
        self.limiter = limiter
        self.clock = clock
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_flight < self.limiter.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # let in just as it was cancelled: pass the place on
            elif waiter in self._waiters:  # (one that _wake already passed over is gone from it)
                self._waiters.remove(waiter)
            raise

    def done(self, rtt: float, dropped: bool) -> None:
        """Tell the limiter how the request that holds a place ended (before leaving)."""
        self.limiter.update(rtt, dropped, self.in_flight, self.clock())

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limiter.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    async def __aenter__(self) -> Gate:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
