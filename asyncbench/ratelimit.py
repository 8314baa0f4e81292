"""Rate limits as an OpenAI-style API meters them: requests and tokens per minute, enforced
quantized (a bucket refilled continuously at a sixtieth of the limit per second and holding at
most one second's share, so that a run of a few seconds already meets the limit), the token rule,
and the Go durations (`1s`, `6m0s`, `12ms`) its `x-ratelimit-reset-*` headers are written in.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping

BYTES_PER_TOKEN = 4  # the stated rule: about 4 bytes of UTF-8 text make a token


def tokens_of(text: str) -> int:
    """The tokens a text costs: ⌈its UTF-8 bytes / 4⌉, at least 1."""
    return max(1, -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN))


_UNITS = (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9))
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")


def format_go_duration(seconds: float) -> str:
    """Seconds as Go's time.Duration prints them: '0s', '12ms', '1.5s', '6m0s', '1h0m0s'."""
    ns = round(max(0.0, seconds) * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(ns / 1e3) + "µs"
    if ns < 1_000_000_000:
        return _trim(ns / 1e6) + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _trim(rest / 1e9) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def parse_go_duration(text: str) -> float:
    """'6m0s' → 360.0, '12ms' → 0.012, '1h2m3.5s' → 3723.5; ValueError for what is not one."""
    text = text.strip()
    if text in ("0", ""):
        if text == "0":
            return 0.0
        raise ValueError("an empty duration")
    units = dict(_UNITS)
    total, at = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != at:
            break
        total += float(match.group(1)) * units[match.group(2)]
        at = match.end()
    if at != len(text) or at == 0:
        raise ValueError(f"not a Go duration: {text!r}")
    return total


class Quantized:
    """A per-minute limit enforced per second: a bucket of one second's share (`per_minute` /
    60), refilled continuously. A cost larger than the bucket can hold is let through when the
    bucket is full (it goes into debt, repaid by the refill) rather than never."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # refilled per second
        self.capacity = max(1.0, self.rate)  # one second's share
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> float:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` could be taken (0: now)."""
        level = self._refill()
        need = min(cost, self.capacity)
        return 0.0 if level >= need else (need - level) / self.rate

    def take(self, cost: float) -> None:
        self._refill()
        self.level -= cost

    def remaining(self) -> int:
        return max(0, math.floor(self._refill()))

    def lower_to(self, level: float) -> None:
        """Never more than `level` now (what the server says it has left)."""
        self.level = min(self._refill(), level)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self._refill()) / self.rate)


class ApiLimits:
    """Requests and tokens per minute together: a request passes only within both."""

    def __init__(self, rpm: float, tpm: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = Quantized(rpm, clock) if rpm > 0 else None
        self.tokens = Quantized(tpm, clock) if tpm > 0 else None

    def admit(self, tokens: int) -> float:
        """Take one request and `tokens` if both are there (0.0), else the seconds to wait."""
        wait = max(self.requests.wait_for(1) if self.requests else 0.0,
                   self.tokens.wait_for(tokens) if self.tokens else 0.0)
        if wait > 0:
            return wait
        if self.requests:
            self.requests.take(1)
        if self.tokens:
            self.tokens.take(tokens)
        return 0.0

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The x-ratelimit-* headers of an answer, as the OpenAI API writes them."""
        out: list[tuple[str, str]] = []
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                out += [(f"x-ratelimit-limit-{name}", f"{bucket.per_minute:g}"),
                        (f"x-ratelimit-remaining-{name}", str(bucket.remaining())),
                        (f"x-ratelimit-reset-{name}", format_go_duration(bucket.reset_s()))]
        return tuple(out)


class ClientBudget:
    """What a client may send to a metered API: its own `rpm`/`tpm` budget (the same quantized
    buckets as the server's, so that it slows before the server says no), and a mirror of the
    server's buckets kept from what it says — `x-ratelimit-limit-*` sizes them, every
    `x-ratelimit-remaining-*` lowers them to the server's count (never raises: answers come back
    out of order) — so that many requests waiting at once go out at the server's pace rather
    than all together. A 429 pauses every send for its `retry-after-ms` (or `retry-after`).
    Headers that do not parse are counted (`bad_headers`) and not trusted."""

    def __init__(self, rpm: float = 0.0, tpm: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.own = ApiLimits(rpm, tpm, clock)
        self.server: dict[str, Quantized] = {}  # the mirror, by "requests" / "tokens"
        self.clock = clock
        self.paused_until = 0.0
        self.bad_headers = 0
        self.throttled = 0  # 429s seen
        self.waited_budget = 0.0  # seconds requests waited for the client's own budget (summed)
        self.waited_server = 0.0  # ... and for the server's (its headers, a Retry-After)

    def binding(self, requests_per_min: float, tokens_per_min: float) -> str | None:
        """Which limit the achieved rates ran at (within a tenth): "budget" when it is the
        client's own (also when the server's is the same: the budget is what one would change),
        "server" when it is the server's lower one, None when neither was reached."""
        for name, achieved in (("requests", requests_per_min), ("tokens", tokens_per_min)):
            own = getattr(self.own, name)
            theirs = self.server.get(name)
            limits = [b.per_minute for b in (own, theirs) if b is not None]
            if not limits or achieved < 0.9 * min(limits):
                continue
            return "budget" if own is not None and own.per_minute <= min(limits) else "server"
        return None

    def _buckets(self, tokens: int) -> tuple[list[tuple[Quantized, int]], list[tuple[Quantized, int]]]:
        own = [(b, c) for b, c in ((self.own.requests, 1), (self.own.tokens, tokens)) if b is not None]
        server = [(b, c) for name, c in (("requests", 1), ("tokens", tokens)) if (b := self.server.get(name))]
        return own, server

    async def acquire(self, tokens: int) -> float:
        """Wait until a request of `tokens` may go, and take it; the seconds waited."""
        import asyncio

        waited = 0.0
        while True:
            pause = self.paused_until - self.clock()
            own, server = self._buckets(tokens)
            mine = max((b.wait_for(c) for b, c in own), default=0.0)
            theirs = max([pause, *(b.wait_for(c) for b, c in server)])
            if mine <= 0 and theirs <= 0:
                for b, c in own + server:
                    b.take(c)
                return waited
            if mine >= theirs:
                self.waited_budget += mine
            else:
                self.waited_server += theirs
            wait = max(mine, theirs)
            waited += wait
            await asyncio.sleep(wait)

    def reconcile(self, estimated: int, reported: int) -> None:
        """The server's count of a request's tokens (`usage`) replaces the estimate."""
        if reported != estimated:
            for bucket in (self.own.tokens, self.server.get("tokens")):
                if bucket is not None:
                    bucket.take(reported - estimated)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """An answer's rate-limit headers into the mirror; a 429's wait into a pause."""
        now = self.clock()
        if status == 429:
            self.throttled += 1
            wait = self._number(headers, "retry-after-ms", 1e-3) or self._number(headers, "retry-after", 1.0)
            if wait:
                self.paused_until = max(self.paused_until, now + wait)
        for name in ("requests", "tokens"):
            limit = self._number(headers, f"x-ratelimit-limit-{name}", 1.0)
            remaining = self._number(headers, f"x-ratelimit-remaining-{name}", 1.0)
            reset = headers.get(f"x-ratelimit-reset-{name}")
            if reset is not None:
                try:
                    parse_go_duration(reset)
                except ValueError:
                    self.bad_headers += 1
            if not limit:
                continue
            bucket = self.server.get(name)
            if bucket is None or bucket.per_minute != limit:
                bucket = self.server[name] = Quantized(limit, self.clock)
            if remaining is not None:
                bucket.lower_to(remaining)

    def _number(self, headers: Mapping[str, str], name: str, unit: float) -> float | None:
        value = headers.get(name)
        if value is None:
            return None
        try:
            number = float(value) * unit
            if not 0 <= number < 1e12:
                raise ValueError
            return number
        except ValueError:
            self.bad_headers += 1
            return None
