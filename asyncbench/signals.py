"""Ctrl-C and SIGTERM, handled one way for the whole life of a command.

The first signal asks the run to stop: a measurement in progress is cancelled (its connections
closed, every finished level kept) and, anywhere else, KeyboardInterrupt is raised; either way
the command ends with exit code 130 and a message. A second signal exits at once — but never in
the middle of writing a results file: a write in progress (`protected`) finishes first, then the
hooks registered with `on_hard_exit` mark the run's sidecar as interrupted, then the process
exits with 130.

Python runs signal handlers in the main thread between bytecodes, so the handler can interrupt a
blocking call (`interruptible`) but hands a running event loop a cancellation, thread-safely.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asyncbench.errors import ExitCode

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    def __init__(self) -> None:
        self.received = 0  # signals received so far
        self.protected = 0  # depth of file writes in progress
        self.pending = False  # a signal arrived during a protected write
        self.raise_here = 0  # depth of regions where a signal raises at once
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.hooks: list[Callable[[], None]] = []
        self.started = False  # a command has begun its work (before: a signal ends the process at once)
        self.done = False  # the command has finished: a signal now only ends the process
        self.deferring = 0  # depth of spans where a signal waits for a checkpoint (charts)


_state = _State()


def install() -> None:
    """Take over SIGINT and SIGTERM for this process (main thread only)."""
    for sig in SIGNALS:
        signal.signal(sig, _handle)


def requested() -> bool:
    """Whether a stop was asked for (a first signal arrived)."""
    return _state.received > 0


def command_done() -> None:
    """The command's work is over (everything written, said and drawn). A signal from now on,
    while the interpreter shuts down, ends the process with 130 at once: raised as
    KeyboardInterrupt there, Python would die of SIGINT (exit -2) instead."""
    _state.done = True


def command_started() -> None:
    """A command's own work begins: from now on a first signal stops it cleanly. Before (while
    the command line is parsed), nothing is measured yet and a signal ends the process at once —
    raised as KeyboardInterrupt there, the command-line parser would swallow it."""
    _state.started = True


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.write(2, b"asyncbench: interrupted\n")
    os._exit(int(ExitCode.INTERRUPTED))


def _handle(signum: int, frame: Any) -> None:
    _state.received += 1
    if _state.done or not _state.started:
        _exit_now()
    if _state.protected or (_state.deferring and _state.received < 2):
        _state.pending = True  # acted on when the write ends, or at the next checkpoint
        return
    _act()


def _act() -> None:
    if _state.received >= 2:
        _hard_exit()
    if (_state.raise_here or _state.deferring or _state.task is None or _state.loop is None
            or _state.loop.is_closed()):
        raise KeyboardInterrupt
    if _state.received == 1:
        _state.loop.call_soon_threadsafe(_state.task.cancel)


def _hard_exit() -> None:
    os.write(2, b"asyncbench: interrupted again: stopping now; finished levels are saved\n")
    for hook in reversed(_state.hooks):
        try:
            hook()
        except Exception:  # noqa: BLE001 - exiting anyway; a failed hook must not stop the exit
            pass
    os._exit(int(ExitCode.INTERRUPTED))


@contextmanager
def protected() -> Iterator[None]:
    """A span (a file write) that a signal must not cut in two: signals wait for its end."""
    _state.protected += 1
    try:
        yield
    finally:
        _state.protected -= 1
        if not _state.protected and _state.pending and not _state.deferring:
            _state.pending = False
            _act()


@contextmanager
def deferred() -> Iterator[None]:
    """A span (drawing charts, rendering a report) in which a first signal is noted and acted
    on only at a `checkpoint()` or at the span's end: raised at any moment, a KeyboardInterrupt
    can land in a finalizer or a library's callback, which prints "Exception ignored" and goes
    on as if nothing had happened. A second signal still ends the process at once."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring:
            checkpoint()


def checkpoint() -> None:
    """Act on a signal noted during a `deferred()` span (raises KeyboardInterrupt)."""
    if _state.pending and not _state.protected:
        _state.pending = False
        _act()


@contextmanager
def interruptible() -> Iterator[None]:
    """A span (a deliberate blocking call on the event loop) that a signal interrupts at once."""
    _state.raise_here += 1
    try:
        if _state.received:
            raise KeyboardInterrupt
        yield
    finally:
        _state.raise_here -= 1


@contextmanager
def measuring(task: asyncio.Task[Any], on_loop: bool = True) -> Iterator[None]:
    """While `task` runs on the current loop, a first signal cancels it.

    `on_loop`: the loop's own signal handling (a wake-up byte, handled between callbacks) stands
    in for the Python-level handler while the task runs: on uvloop the Python-level one costs a
    sixth of the request rate. Off where a blocking call must be interruptible (`interruptible`).
    """
    loop = task.get_loop()
    _state.loop, _state.task = loop, task
    if on_loop:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, _on_loop_signal)
    try:
        if _state.received:
            task.cancel()
        yield
    finally:
        _state.loop = _state.task = None
        if on_loop:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            install()  # removing the loop's handlers restored the defaults


def _on_loop_signal() -> None:
    # Run by the loop between callbacks, so never in the middle of a (synchronous) write.
    _state.received += 1
    _act()


@contextmanager
def ignored_by_children() -> Iterator[None]:
    """While processes are started (workers): SIGINT kept from them — a terminal's Ctrl-C
    reaches the whole process group, and the workers must leave it to this process, which stops
    their work and ends them. From the main thread, SIGINT is ignored for the span (a started
    Python keeps an ignored SIGINT ignored; a library may start them from threads of its own);
    from another thread, where that cannot be done, it is blocked in this thread, and a child
    inherits the block."""
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextmanager
def on_hard_exit(hook: Callable[[], None]) -> Iterator[None]:
    """Run `hook` if a second signal ends the process while this span is open."""
    _state.hooks.append(hook)
    try:
        yield
    finally:
        _state.hooks.remove(hook)
