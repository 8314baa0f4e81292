"""Validation of command-line values: each parser returns a clean value or raises UsageError
naming the bad value."""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import re
import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

from asyncbench.errors import UsageError
from asyncbench.redact import redact_url

MAX_LEVEL = 100_000
MAX_REQUESTS = 10_000_000
MIB = 1024 * 1024
MAX_BODY_BYTES = 64 * MIB  # a request body is held in memory and sent by every request
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token (method, header name)


def parse_int_list(option: str, text: str, minimum: int = 1, maximum: int = MAX_LEVEL) -> list[int]:
    """'1,10,100' → [1, 10, 100]; sorted, without duplicates."""
    values: list[int] = []
    for item in text.split(","):
        item = item.strip().replace("_", "")
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"invalid {option} value {item!r} in {text!r}: expected whole numbers separated by commas") from None
        if not minimum <= value <= maximum:
            raise UsageError(f"invalid {option} value {value} in {text!r}: expected {minimum} to {maximum:,}")
        values.append(value)
    return sorted(set(values))


def check_range(option: str, value: float, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True) -> float:
    """`value` unchanged if it lies in the range, else a UsageError naming it."""
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if low is not None and high is not None:
            expected = f"{_show(low)} to {_show(high)}" if low_inclusive else f"more than {_show(low)}, at most {_show(high)}"
        elif low is not None:
            expected = f"{'>=' if low_inclusive else '>'} {_show(low)}"
        else:
            expected = f"<= {_show(high)}"
        raise UsageError(f"invalid {option} {_show(value)}: expected {expected}")
    return value


def _show(value: float | None) -> str:
    """A value as the user would write it: whole numbers whole (1000000, not 1e+06)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e15):
        return str(int(value))
    return repr(value) if math.isfinite(value) else str(value)


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' → ('Name', 'value')."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not _TOKEN.match(name):
        shown = name if sep else text
        raise UsageError(f"invalid header {shown!r}: expected 'Name: value'")
    if "\n" in value or "\r" in value:
        raise UsageError(f"invalid header {name!r}: its value has a line break")
    return name, value.strip()


def parse_headers(items: list[str] | None) -> dict[str, str]:
    return dict(parse_header(h) for h in items or [])


def parse_method(text: str) -> str:
    if not _TOKEN.match(text):
        raise UsageError(f"invalid --method {text!r}")
    return text.upper()


def check_readable_file(path: Path, max_bytes: int | None = None) -> int:
    """The size of `path` when it is a regular file (of at most `max_bytes`); OSError otherwise.

    Checked without opening it: opening a FIFO blocks until a writer comes, and a device such as
    /dev/zero reads without end.
    """
    st = os.stat(path)  # follows a symbolic link to what it names
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise OSError(errno.EINVAL, f"not a regular file ({kind})")
    if max_bytes is not None and st.st_size > max_bytes:
        raise OSError(errno.EFBIG, f"{st.st_size / MIB:,.1f} MiB, more than the {max_bytes / MIB:g} MiB allowed")
    return st.st_size


def parse_data(text: str | None) -> bytes | None:
    """The request body: a literal string, or '@file' for a regular file's contents (as curl),
    at most MAX_BODY_BYTES."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            check_readable_file(path, MAX_BODY_BYTES)
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --data file {str(path)!r}: {exc.strerror or exc}") from None
        if len(data) > MAX_BODY_BYTES:  # it grew since the check
            raise UsageError(f"cannot read --data file {str(path)!r}: more than {MAX_BODY_BYTES / MIB:g} MiB")
        return data
    data = text.encode("utf-8")
    if len(data) > MAX_BODY_BYTES:
        raise UsageError(f"invalid --data: {len(data) / MIB:,.1f} MiB, more than {MAX_BODY_BYTES / MIB:g} MiB")
    return data


def check_utf8_args(args: list[str]) -> None:
    """Command-line arguments must be text: a byte that is not UTF-8 is bad input, named."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UsageError(f"invalid argument '{shown}': not valid UTF-8 "
                             "(for a binary request body, use --data @FILE)") from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _legacy_ipv4(host: str) -> str | None:
    """The dotted-quad form of a shorthand IPv4 address ('127.1', '2130706433', '0x7f.0.0.1'),
    which the system resolver accepts but HTTP clients do not; None for anything else."""
    try:
        ipaddress.ip_address(host)
        return None  # already canonical
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None  # a name, not an address


def check_target_url(url: str) -> str:
    """An http(s) URL with a host; UsageError naming what is wrong with it. Whether its host may
    be loaded (this machine, or another with --allow-remote) is the route's to say
    (`load.route`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = ""
        if "://" not in url:
            hint = f" (did you mean {redact_url('http://' + url)!r}?)"
        raise UsageError(f"invalid URL {redact_url(url)!r}: expected http://HOST[:PORT]/PATH{hint}")
    host = parts.hostname
    canonical = _legacy_ipv4(host)
    if canonical is not None:
        raise UsageError(f"invalid URL {url!r}: {host!r} is a shorthand IPv4 address; write it as {canonical}")
    del port  # parsed for its check: a port that is not a number is refused above
    return url


def parse_capacity_schedule(option: str, text: str) -> tuple[tuple[float, int], ...]:
    """'0:100,10:50,20:150' → ((0.0, 100), (10.0, 50), (20.0, 150)): seconds from the start and
    the capacity from then on; times increasing, capacities whole numbers >= 1."""
    entries: list[tuple[float, int]] = []
    for item in text.split(","):
        item = item.strip()
        when, sep, cap = item.partition(":")
        try:
            if not sep:
                raise ValueError
            seconds, capacity = float(when), int(cap.strip().replace("_", ""))
        except ValueError:
            raise UsageError(f"invalid {option} entry {item!r} in {text!r}: expected SECONDS:CAPACITY, "
                             "e.g. '0:100,10:50,20:150'") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise UsageError(f"invalid {option} entry {item!r}: the time must be seconds >= 0")
        if capacity < 1:
            raise UsageError(f"invalid {option} entry {item!r}: the capacity must be at least 1")
        if entries and seconds <= entries[-1][0]:
            raise UsageError(f"invalid {option} entry {item!r}: times must increase ({_show(seconds)} after "
                             f"{_show(entries[-1][0])})")
        entries.append((seconds, capacity))
    return tuple(entries)


def parse_stages(option: str, text: str, maximum: float) -> list[tuple[float, float]]:
    """'10s:100,30s:1000,10s:0' → [(10.0, 100.0), (30.0, 1000.0), (10.0, 0.0)]: each stage's
    duration (Go's form: 10s, 1m30s, 500ms; a bare number is seconds) and its target, at most
    `maximum`. The stages must last longer than nothing in all."""
    from asyncbench.ratelimit import parse_go_duration

    stages: list[tuple[float, float]] = []
    for item in text.split(","):
        duration_text, sep, target_text = item.strip().partition(":")
        try:
            if not sep:
                raise ValueError
            duration = float(duration_text) if re.fullmatch(r"[0-9.]+", duration_text.strip()) else (
                parse_go_duration(duration_text))
            target = float(target_text)
        except ValueError:
            raise UsageError(f"invalid {option} stage {item.strip()!r}: expected DURATION:TARGET, e.g. 30s:100") from None
        if not math.isfinite(duration) or duration < 0 or duration > 24 * 3600:
            raise UsageError(f"invalid {option} stage {item.strip()!r}: a duration from 0 to 24h")
        if not math.isfinite(target) or target < 0 or target > maximum:
            raise UsageError(f"invalid {option} stage {item.strip()!r}: a target from 0 to {maximum:,.0f}")
        stages.append((duration, target))
    if sum(d for d, _ in stages) <= 0:
        raise UsageError(f"invalid {option} {text!r}: the stages last no time in all")
    return stages
