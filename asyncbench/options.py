"""Validation of command-line values: each parser returns a clean value or raises UsageError
naming the bad value."""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from asyncbench.errors import UsageError

MAX_LEVEL = 100_000
MAX_REQUESTS = 10_000_000
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
            expected = f"{low:g} to {high:g}"
        elif low is not None:
            expected = f"{'>=' if low_inclusive else '>'} {low:g}"
        else:
            expected = f"<= {high:g}"
        raise UsageError(f"invalid {option} {value:g}: expected {expected}")
    return value


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


def parse_data(text: str | None) -> bytes | None:
    """The request body: a literal string, or '@file' for a file's contents (as curl)."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --data file {str(path)!r}: {exc.strerror or exc}") from None
    return text.encode("utf-8")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target_url(url: str) -> str:
    """An http(s) URL whose host is a loopback address; anything else is refused.

    asyncbench generates load, and load goes only to this machine: a sweep to 2000
    simultaneous requests aimed at someone else's service is an attack, not a benchmark.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid URL {url!r}: expected http://HOST[:PORT]/PATH")
    host = parts.hostname
    if not _is_loopback(host):
        try:
            infos = socket.getaddrinfo(host, port or 80, type=socket.SOCK_STREAM)
        except OSError:
            raise UsageError(f"invalid URL {url!r}: cannot resolve host {host!r}") from None
        addresses = {info[4][0] for info in infos}
        if not addresses or not all(_is_loopback(a) for a in addresses):
            raise UsageError(
                f"refusing to send load to {host!r} ({', '.join(sorted(addresses))}): "
                "asyncbench only targets loopback addresses (127.0.0.0/8, ::1)"
            )
    return url
