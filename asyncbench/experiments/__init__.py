"""One module per experiment: plain config in, plain results out, never prints. Each declares
its `EXPERIMENT` descriptor; `registry()` lists them, and is the one place that does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncbench.experiments.descriptor import Experiment
    from asyncbench.results import Run


def registry() -> dict[str, Experiment]:
    """Every experiment by name (imported on first use: `plot` needs no client)."""
    from asyncbench.experiments import find, pipeline, rate, semaphore, threads, trap

    return {e.name: e for e in (threads.EXPERIMENT, trap.EXPERIMENT, semaphore.EXPERIMENT, rate.EXPERIMENT,
                                find.EXPERIMENT, pipeline.EXPERIMENT)}


def read_run(csv_path: Path) -> Run:
    """A results file read back, as its experiment declares it."""
    from asyncbench.results import read_run as read

    return read(csv_path, registry())


def run_charts(run: Run, out_dir: Path, min_success: float | None = None) -> list[Path]:
    """Every chart of one run, as its experiment draws them."""
    return registry()[run.experiment].charts(run, out_dir, min_success)
