"""Typed errors raised by the core, and the exit codes the CLI maps them to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RUN_FAILED = 1  # the run could not be done: unreachable target, unwritable output, ...
    USAGE = 2  # bad usage or bad input
    OBJECTIVE_NOT_MET = 3  # the run was done, and a threshold or objective failed
    INTERRUPTED = 130  # Ctrl-C, after saving what was measured


class AsyncbenchError(Exception):
    """Base of every error asyncbench reports to the user as one line."""

    exit_code: ExitCode = ExitCode.RUN_FAILED


class UsageError(AsyncbenchError):
    """Bad input: an option value, a URL, a header, a file."""

    exit_code = ExitCode.USAGE


class TargetError(AsyncbenchError):
    """The target could not be reached or started."""


class TargetGone(TargetError):
    """The target stopped accepting connections in the middle of a run, at `step` (the step's
    name and value, "limit 20"): the steps it answered are kept, the run fails (exit 1)."""

    def __init__(self, step: str, level: int, detail: str) -> None:
        super().__init__(f"the target went away during {step}: {detail}")
        self.step, self.level, self.detail = step, level, detail


class RunStopped(AsyncbenchError):
    """A bound of the run (--max-requests, --max-duration) was reached: the run stops, keeping
    what finished, as the user asked (exit 0). `level`: the step it cut short, if one was."""

    exit_code = ExitCode.OK

    def __init__(self, reason: str, level: int | None) -> None:
        super().__init__(reason)
        self.reason, self.level = reason, level


class RunFailed(AsyncbenchError):
    """The run was done and its results written, but part of its load could not be made."""


class OutputError(AsyncbenchError):
    """Results or charts could not be written or read."""


class Interrupted(AsyncbenchError):
    """Ctrl-C (or SIGTERM) stopped a run after what had finished was saved."""

    exit_code = ExitCode.INTERRUPTED


class ObjectiveNotMet(AsyncbenchError):
    """The run was done and its results written, but a `--fail-if` threshold (or an objective)
    failed: CI's "no"."""

    exit_code = ExitCode.OBJECTIVE_NOT_MET
