"""What a whole run may send: at most `--max-requests` attempts (every level, round and retry)
and nothing new after `--max-duration` seconds from its first request.

The driver sizes each round to what is left — a round of requests that may each be retried
`retries` times gets at most what is left divided by 1 + retries, so its attempts cannot pass
the bound — and gives it the time that is left; when a round had to be cut, or nothing is left,
the run stops (`RunStopped`) with the steps it finished kept.
"""

from __future__ import annotations

import time

from asyncbench.errors import RunStopped

_perf = time.perf_counter


class Budget:
    """The bound of a run, and what it has spent."""

    def __init__(self, max_requests: int | None = None, max_duration: float | None = None) -> None:
        self.max_requests = max_requests
        self.max_duration = max_duration
        self.spent = 0  # attempts sent
        self.started: float | None = None  # perf_counter() of the first round
        self.cut: tuple[str, str] | None = None  # the step a bound cut short, and why
        self._capped = False  # the round in progress was given less than it asked for

    @property
    def bounded(self) -> bool:
        return self.max_requests is not None or self.max_duration is not None

    def left(self) -> int | None:
        return None if self.max_requests is None else max(0, self.max_requests - self.spent)

    def seconds_left(self) -> float | None:
        if self.max_duration is None:
            return None
        if self.started is None:
            return self.max_duration
        return max(0.0, self.started + self.max_duration - _perf())

    def reason(self) -> str:
        """Which bound was reached (or is the nearer, when one is)."""
        seconds = self.seconds_left()
        if self.max_duration is not None and (seconds is not None and seconds <= 0 or self.max_requests is None):
            return f"--max-duration {self.max_duration:g} s reached"
        if self.max_requests is not None:
            return f"--max-requests {self.max_requests:,} reached"
        return "the run's bound was reached"

    def allow(self, step: str, requests: int, retries: int, duration: float | None) -> tuple[int, float | None]:
        """What a round of `requests` may send (with `retries` each) and for how long; RunStopped
        when nothing more may be sent."""
        if self.started is None:
            self.started = _perf()
        allowed, seconds = requests, duration
        left = self.left()
        if left is not None:
            allowed = min(requests, left // (1 + retries))
        remaining = self.seconds_left()
        if remaining is not None:
            seconds = remaining if seconds is None else min(seconds, remaining)
        if allowed <= 0 or (seconds is not None and seconds <= 0):
            raise RunStopped(f"{self.reason()} before {step}", None)
        self._capped = allowed < requests or (remaining is not None and seconds == remaining)
        return allowed, seconds

    def spend(self, step: str, attempts: int, planned: int, sent: int) -> None:
        """A round sent `attempts` attempts, `sent` of the `planned` requests its step wanted:
        fewer, and the step was cut short by a bound."""
        self.spent += attempts
        if self._capped and sent < planned and self.cut is None:
            self.cut = (step, self.reason())

    def check(self, step: str, level: int) -> None:
        """After a step has been written: RunStopped if a bound cut it short or is reached."""
        if self.cut is not None:
            cut_step, reason = self.cut
            self.cut = None
            raise RunStopped(f"{reason} during {cut_step}", level)
