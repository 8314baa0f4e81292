"""Where a run's requests go: the URL's host (its Host header and TLS server name), the host and
port connections are made to (after `--connect-to`), and the addresses, resolved once per run
(or given by `--resolve`), that connections are spread over round-robin — as wrk and oha do,
and with curl's meaning of the two options."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from asyncbench.errors import TargetError, UsageError
from asyncbench.options import is_loopback


@dataclass(frozen=True)
class Reach:
    """How a run may reach its target: `--resolve` and `--connect-to` (parsed), and whether a
    target that is not this machine may be loaded (`--allow-remote`)."""

    resolve: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    connect_to: list[tuple[str, int | None, str, int | None]] = field(default_factory=list)
    allow_remote: bool = False


@dataclass(frozen=True)
class Route:
    """The way to a URL: `host`/`port` are the URL's (the Host header, TLS's server name);
    connections go to `connect_port` on each of `addresses` in turn."""

    url: str
    host: str
    port: int
    connect_host: str
    connect_port: int
    addresses: tuple[str, ...]

    @property
    def remote(self) -> bool:
        """Whether any address is not this machine's loopback."""
        return not all(is_loopback(a) for a in self.addresses)

    @property
    def https(self) -> bool:
        return self.url.lower().startswith("https:")

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "connect_host": self.connect_host,
                "connect_port": self.connect_port, "addresses": list(self.addresses), "remote": self.remote}

    def describe(self) -> str:
        """'api.example.test (192.0.2.10, 2001:db8::10)', with the connect-to hop when there is one."""
        via = f" via {self.connect_host}:{self.connect_port}" if (self.connect_host, self.connect_port) != (
            self.host, self.port) else ""
        return f"{self.host}{via} ({', '.join(self.addresses)})"


def _host_port(text: str, option: str, whole: str) -> tuple[str, int | None]:
    """'HOST:PORT' → (host, port); '[::1]:80' for IPv6; an empty part means any."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"invalid {option} {whole!r}: expected {_FORMS[option]}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise UsageError(f"invalid {option} {whole!r}: expected {_FORMS[option]}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise UsageError(f"invalid {option} {whole!r}: {port_text!r} is not a port")
    return host.lower(), int(port_text) if port_text else None


_FORMS = {"--resolve": "HOST:PORT:ADDRESS[,ADDRESS...]", "--connect-to": "HOST:PORT:HOST2:PORT2"}


def _split_first(text: str, option: str) -> tuple[str, str]:
    """The first HOST:PORT of `text` (brackets allowed), and the rest after its colon."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"invalid {option} {text!r}: expected {_FORMS[option]}")
        head_end = text.find(":", end)
    else:
        head_end = text.find(":")
    if head_end < 0:
        raise UsageError(f"invalid {option} {text!r}: expected {_FORMS[option]}")
    second = text.find(":", head_end + 1)
    if second < 0:
        raise UsageError(f"invalid {option} {text!r}: expected {_FORMS[option]}")
    return text[:second], text[second + 1:]


def parse_resolve(items: Sequence[str]) -> dict[tuple[str, int], tuple[str, ...]]:
    """`--resolve HOST:PORT:ADDRESS[,ADDRESS...]` (repeatable) → {(host, port): addresses}."""
    out: dict[tuple[str, int], tuple[str, ...]] = {}
    for item in items:
        head, rest = _split_first(item, "--resolve")
        host, port = _host_port(head, "--resolve", item)
        if not host or port is None:
            raise UsageError(f"invalid --resolve {item!r}: expected {_FORMS['--resolve']}")
        addresses = []
        for address in rest.split(","):
            address = address.strip().strip("[]")
            try:
                addresses.append(str(ipaddress.ip_address(address)))
            except ValueError:
                raise UsageError(f"invalid --resolve {item!r}: {address!r} is not an IP address") from None
        out[(host, port)] = tuple(addresses)
    return out


def parse_connect_to(items: Sequence[str]) -> list[tuple[str, int | None, str, int | None]]:
    """`--connect-to HOST:PORT:HOST2:PORT2` (repeatable; an empty part matches any, or keeps the
    URL's) → [(host, port, host2, port2)]."""
    out = []
    for item in items:
        head, rest = _split_first(item, "--connect-to")
        host, port = _host_port(head, "--connect-to", item)
        host2, port2 = _host_port(rest, "--connect-to", item) if rest else ("", None)
        out.append((host, port, host2, port2))
    return out


def reach_target(url: str, reach: Reach) -> Route:
    """The route to `url`, and the policy on it: UsageError when it leads off this machine
    without the opt-in (before any request is sent), TargetError when its host does not
    resolve."""
    route = find_route(url, reach.resolve, reach.connect_to)
    if route.remote and not reach.allow_remote:
        raise UsageError(
            f"refusing to load {route.describe()}: it is not this machine, and asyncbench loads another "
            "only when told to: add --allow-remote (or set ASYNCBENCH_ALLOW_REMOTE=1) for a target you may load"
        )
    return route


def find_route(url: str, resolve: dict[tuple[str, int], tuple[str, ...]],
               connect_to: Sequence[tuple[str, int | None, str, int | None]]) -> Route:
    """The route to `url`: --connect-to applied first, then --resolve for where that leads, else
    DNS (once). TargetError naming the host when it does not resolve."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    connect_host, connect_port = host, port
    for from_host, from_port, to_host, to_port in connect_to:
        if (not from_host or from_host == host) and (from_port is None or from_port == port):
            connect_host, connect_port = to_host or host, to_port or port
            break
    addresses = resolve.get((connect_host, connect_port))
    if addresses is None:
        addresses = _lookup(connect_host, connect_port)
    return Route(url, host, port, connect_host, connect_port, addresses)


def _lookup(host: str, port: int) -> tuple[str, ...]:
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    if not seen:
        raise TargetError(f"cannot resolve host {host!r}: no address")
    return tuple(seen)
