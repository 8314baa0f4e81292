"""Shards on local worker processes (`--processes N`): N processes started once per run with
`spawn` (a fork would copy the parent's threads and event loop half-made), each talking to the
coordinator over a pipe. A worker that dies is replaced before the next round."""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from asyncbench import signals
from asyncbench.load.work import run_job

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from asyncbench.load.shard import ShardJob


class ProcessBackend:
    """N local processes, one shard each per round."""

    name = "processes"

    def __init__(self, count: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[tuple[BaseProcess, Connection]] = [self._spawn(i) for i in range(count)]
        self._running: set[int] = set()  # shards of this round not yet done or dead

    def _spawn(self, slot: int) -> tuple[BaseProcess, Connection]:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=serve, args=(child,), name=f"asyncbench-worker-{slot + 1}", daemon=True)
        with signals.ignored_by_children():  # from its first moment, not only once it runs `serve`
            process.start()
        child.close()
        return process, parent

    def workers(self) -> int:
        return len(self._slots)

    def addresses(self) -> list[str]:
        return [f"pid {process.pid}" for process, _ in self._slots]

    def submit(self, jobs: list[ShardJob]) -> None:
        for slot, (process, conn) in enumerate(self._slots):
            if not process.is_alive():  # died in an earlier round: a fresh one takes its place
                conn.close()
                self._slots[slot] = self._spawn(slot)
        self._running = set()
        for job in jobs:
            self._slots[job.index][1].send(("job", job))
            self._running.add(job.index)

    def events(self, timeout: float) -> list[tuple[Any, ...]]:
        conns = {self._slots[i][1]: i for i in self._running}
        sentinels = {self._slots[i][0].sentinel: i for i in self._running}
        ready = wait([*conns, *sentinels], timeout)
        out: list[tuple[Any, ...]] = []
        for obj in ready:
            i = conns.get(obj)  # type: ignore[call-overload]
            if i is None:
                continue
            conn, worker = self._slots[i][1], f"pid {self._slots[i][0].pid}"
            try:
                while conn.poll():
                    message = conn.recv()
                    if message[0] == "done":
                        out.append(("done", i, worker, message[1]))
                        self._running.discard(i)
                    elif message[0] == "progress":
                        out.append(("progress", i, message[1]))
                    else:
                        out.append((message[0], i))
            except (EOFError, OSError):
                pass  # the sentinel says how it ended
        for obj in ready:
            i = sentinels.get(obj)  # type: ignore[call-overload]
            if i is not None and i in self._running:
                process = self._slots[i][0]
                process.join(1)
                out.append(("died", i, f"pid {process.pid}", _how_it_ended(process.exitcode)))
                self._running.discard(i)
        return out

    def go(self, start_at: float) -> None:
        self._send_all(("go", start_at))

    def stop(self) -> None:
        self._send_all(("stop",))

    def _send_all(self, message: tuple[Any, ...]) -> None:
        for i in self._running:
            try:
                self._slots[i][1].send(message)
            except OSError:
                pass  # dead: its sentinel reports it

    def abandon(self, pending: set[int]) -> None:
        for i in pending:
            self._slots[i][0].kill()
            self._slots[i][0].join(5)
        self._running -= pending

    def close(self) -> None:
        for _process, conn in self._slots:
            try:
                conn.send(("quit",))
            except OSError:
                pass
        for process, conn in self._slots:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
            conn.close()


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with code {code}"


class _PipeChannel:
    """The shard's side of the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._stop = False

    def ready(self, index: int) -> float | None:
        self.conn.send(("ready",))
        while True:
            try:
                message = self.conn.recv()
            except EOFError:
                return None
            if message[0] == "go":
                return float(message[1])
            if message[0] in ("stop", "quit"):
                return None

    def progress(self, index: int, done: int) -> None:
        self.conn.send(("progress", done))

    def stopped(self) -> bool:
        try:
            while not self._stop and self.conn.poll():
                self._stop = self.conn.recv()[0] in ("stop", "quit")
        except (EOFError, OSError):
            self._stop = True  # the coordinator is gone
        return self._stop


def serve(conn: Connection) -> None:
    """A worker process: run the jobs it is sent until told to quit or its coordinator goes."""
    # Ctrl-C in a terminal reaches the whole process group: the coordinator alone decides
    # what happens (it tells the shards to stop, and keeps the finished levels).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "quit":
            return
        if message[0] != "job":
            continue  # a stop or start meant for a round already over
        try:
            payload = run_job(message[1], _PipeChannel(conn))
        except Exception as exc:  # a shard's failure is reported, with its reason, not lost
            payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        try:
            conn.send(("done", payload))
        except OSError:
            return
