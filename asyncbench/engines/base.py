"""The protocol every load engine implements."""

from __future__ import annotations

from typing import Any, Protocol

from asyncbench.records import FetchResult, ScheduledSink, Sink


class Engine(Protocol):
    """Sends the requests of one spec for one round of a level, on `concurrency` worker slots.

    Opened and closed with `async with`; `fetch(slot)` sends one request (with its retries) for
    the worker of that slot and never raises for a failed request; `run` keeps every slot busy
    until the requests are sent, however the engine does it best.
    """

    name: str
    refused_locally: int  # connections not even tried because the process is out of open files

    async def __aenter__(self) -> Engine: ...

    async def __aexit__(self, *exc: Any) -> None: ...

    async def fetch(self, slot: int) -> FetchResult: ...

    async def run(self, requests: int, sink: Sink, duration: float | None = None) -> None:
        """Send `requests` requests over all the slots (a closed loop), each measured into
        `sink` (by `sink.success` for a plain success, if the engine likes, else `sink.add`);
        with `duration`, send no new request once that many seconds have passed."""
        ...

    # The open model: `launch` sends one request now and returns at once; the engine measures
    # it from `intended` (its place in the schedule). `in_flight` counts the launched requests
    # not yet ended; `drain` waits for them.
    in_flight: int

    def launch(self, intended: float, sink: ScheduledSink) -> None: ...

    async def drain(self) -> None: ...
