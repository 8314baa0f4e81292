"""One module per experiment: its options, its command, its plan, its run, its rows, its table and
its charts. Each declares its `EXPERIMENT` descriptor; `registry()` lists them — in the order
the command line shows them — and is the one place that does: adding an experiment is one
module and one name in that list."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncbench.experiments.descriptor import Experiment
    from asyncbench.results import Run


def registry() -> dict[str, Experiment]:
    """Every experiment by name (imported on first use: `plot` needs no client)."""
    from asyncbench.experiments import adapt, find, pipeline, rate, semaphore, threads, trap

    return {m.EXPERIMENT.name: m.EXPERIMENT for m in (trap, semaphore, rate, find, adapt, pipeline, threads)}


def read_run(csv_path: Path) -> Run:
    """A results file read back, as its experiment declares it."""
    from asyncbench.results import read_run as read

    return read(csv_path, registry())


def run_charts(run: Run, out_dir: Path, min_success: float | None = None) -> list[Path]:
    """Every chart of one run, as its experiment draws them."""
    return registry()[run.experiment].charts(run, out_dir, min_success)
