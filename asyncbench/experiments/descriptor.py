"""What the rest of asyncbench knows of an experiment, declared once per experiment module and
registered in `asyncbench.experiments.registry()`: no other module branches on its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from asyncbench.results import Run


@dataclass(frozen=True)
class Experiment:
    """An experiment's axis, rows, words and charts.

    `step` names one finished step in messages and table headers ("level", "limit", "run",
    "phase"); `axis_label` is the swept axis on charts and `verdict_word` how the verdict
    names a value of it ("concurrency 100", "limit 100"). `required` are the CSV columns a
    results file needs to be read back, `sort_by` its row order. Load sweeps (rows of
    `LevelStats`) have a sweet spot and can be overlaid and compared; `queue_wait` says
    requests wait for a slot in the client (the wait is shown and charted); `collapses` says
    goodput falls above the sweet spot (the verdict says where). `charts` draws a run's charts.
    `completed_key` is the sidecar's count of finished steps ("levels_completed"); `row_keys`
    the columns that name a row in messages ("level 1000"). `summary` says what a run read
    back from disk concluded — its tables and verdict lines, as the terminal showed them — for
    the HTML report. `command` is the experiment's command line: a function whose parameters
    are option groups (`asyncbench.groups`), its docstring the command's help.
    """

    name: str
    step: str
    completed_key: str
    required: tuple[str, ...]
    sort_by: tuple[str, ...]
    charts: Callable[[Run, Path, float | None], list[Path]]
    axis_label: str = ""
    verdict_word: str = ""
    load_sweep: bool = False
    queue_wait: bool = False
    collapses: bool = False
    row_keys: tuple[str, ...] = ("level",)
    summary: Callable[[Run], list[Any]] | None = None
    command: Callable[..., None] | None = None


LOAD_REQUIRED = (
    "experiment", "level", "requests", "success_rate", "throughput_rps", "goodput_rps",
    "latency_p50_s", "latency_p90_s", "latency_p99_s",
)


def sweet_row(run: Run, rows: list[Any]) -> Any | None:
    """The row the sidecar named the sweet spot, if any."""
    spot = run.meta.get("sweet_spot")
    level = spot.get("level") if isinstance(spot, dict) else None
    return next((r for r in rows if r.level == level), None)


class StepEvents(Protocol):
    """How an experiment reports its steps (levels, runs, phases) as they happen; the session
    wires them to the results writer and the progress display."""

    def started(self, description: str, total: int, done: Callable[[], int], unit: str = "req",
                note: Callable[[], str] | None = None) -> None:
        """A step began: `total` units (`unit`) of work, of which `done()` are finished, and
        `note()` what else the display should say (both polled)."""
        ...

    def finished(self, result: Any) -> None:
        """A step finished, with its result."""
        ...

    def over_time(self, tag: str, level: int, intervals: list[Any]) -> None:
        """Intervals of a step still running (timeline.Interval), written as they close: a
        long step's timeline is not held until its end."""
        ...
