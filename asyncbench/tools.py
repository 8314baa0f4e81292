"""The commands that read results rather than make them: `plot` (every chart of a folder, and
the lab's trap-vs-semaphore comparison), `report` (one HTML page of a folder) and `compare`
(two runs level by level)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from asyncbench import report
from asyncbench.errors import OutputError
from asyncbench.session import check_output_dir

# --- plot --------------------------------------------------------------------------------------


def plot_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    """Every chart for a folder: the newest run of each experiment, overlays, the comparison."""
    from asyncbench import signals

    with signals.deferred():  # a Ctrl-C waits for the chart being drawn (see session.finish)
        _plot_folder(results_dir, out, all_runs)


def _plot_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    from asyncbench.experiments import registry, run_charts
    from asyncbench.results import find_runs

    experiments = registry()
    runs, skipped = find_runs(results_dir, experiments)
    for note in skipped:
        print(f"asyncbench: warning: {note}", file=sys.stderr)
    if not runs:
        raise OutputError(f"no asyncbench results to plot in {str(results_dir)!r}")
    check_output_dir(out, "--out")
    from asyncbench.plots import comparison_chart, overlay_charts

    console = report.make_console()
    newest: dict[str, Any] = {}
    by_experiment: dict[str, list[Any]] = {}
    for run in runs:  # oldest first: the last one seen is the newest
        newest[run.experiment] = run
        by_experiment.setdefault(run.experiment, []).append(run)
    written: list[Path] = []
    for name, run in list(newest.items()):
        try:
            written += run_charts(run, out)
        except (KeyError, TypeError, ValueError) as exc:
            # A file asyncbench did not write as it is (hand-edited, foreign): said, and skipped.
            print(f"asyncbench: warning: skipped {run.csv_path}: its figures cannot be charted ({exc})",
                  file=sys.stderr)
            del newest[name]
            continue
        experiment = experiments[name]
        if all_runs and experiment.load_sweep and len(by_experiment[name]) > 1:
            written += overlay_charts(by_experiment[name], out, experiment.axis_label)
    # The lab's comparison: the same load all at once (Lab 2.2) and through a semaphore (Lab 2.3).
    pair = _lab_pair(newest, console)
    if pair is not None:
        trap_run, sem_run = pair
        name = f"{trap_run.experiment}-vs-{sem_run.experiment}-{sem_run.stem.removeprefix(sem_run.experiment + '-')}"
        written.append(comparison_chart(trap_run, sem_run, out, name))
        console.print(report.comparison_table(trap_run.frame, sem_run.frame))
    if not newest:
        raise OutputError(f"nothing in {str(results_dir)!r} could be charted")
    used = ", ".join(f"{r.stem}" for r in newest.values())
    overlaid = sum(len(runs) for name, runs in by_experiment.items() if experiments[name].load_sweep)
    console.print(f"charted {used}" + (f" and overlaid {overlaid} load runs" if all_runs else ""))
    console.print(f"wrote {len(written)} charts:")
    for path in written:
        console.print(f"  {path}", soft_wrap=True)


def _lab_pair(newest: dict[str, Any], console: Any, notes: list[str] | None = None) -> tuple[Any, Any] | None:
    """The newest trap and semaphore runs, when they loaded the same target the same way: the
    lab's comparison of the same load all at once and through a semaphore. When they did not,
    what differs is said (and added to `notes`) and there is no comparison."""
    from asyncbench.compare import differences
    from asyncbench.experiments import semaphore as semaphore_lab
    from asyncbench.experiments import trap as trap_lab

    trap_run = newest.get(trap_lab.EXPERIMENT.name)
    sem_run = newest.get(semaphore_lab.EXPERIMENT.name)
    if trap_run is None or sem_run is None:
        return None
    differ = differences(trap_run.meta, sem_run.meta)
    if differ:
        why = (f"{trap_run.stem} and {sem_run.stem} are not compared: they loaded different things "
               f"({'; '.join(differ)})")
        console.print(f"note: {why}", style="yellow", markup=False, soft_wrap=True)
        if notes is not None:
            notes.append(why)
        return None
    return trap_run, sem_run


# --- report --------------------------------------------------------------------------------------


def report_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    """One HTML page for a folder: the newest run of each experiment (every run with `all_runs`),
    and the trap against the semaphore when both are there."""
    from asyncbench import signals

    with signals.deferred():  # a Ctrl-C waits for the chart being drawn (see session.finish)
        _report_folder(results_dir, out, all_runs)


def _report_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    from asyncbench import webreport
    from asyncbench.experiments import registry
    from asyncbench.results import find_runs
    from asyncbench.session import check_output_file

    check_output_file(out, "--output")
    runs, skipped = find_runs(results_dir, registry())
    for note in skipped:
        print(f"asyncbench: warning: {note}", file=sys.stderr)
    if not runs:
        raise OutputError(f"no asyncbench results to report in {str(results_dir)!r}")
    newest = {run.experiment: run for run in runs}  # oldest first: the last one seen is the newest
    chosen = runs if all_runs else sorted(newest.values(), key=lambda r: (r.started, r.stem))
    console = report.make_console()
    pair = _lab_pair(newest, console, skipped)
    webreport.write(out, webreport.render(chosen, results_dir, pair, registry(), skipped))
    console.print(f"report: {out} ({len(chosen)} run{'s' if len(chosen) != 1 else ''}"
                  f"{', the trap against the semaphore' if pair else ''})", soft_wrap=True)


# --- compare -------------------------------------------------------------------------------------


def compare_runs(baseline: Path, candidate: Path, tolerance: float, out: Path | None, fail_on_regression: bool) -> None:
    """Two results files of a sweep, level by level; ObjectiveNotMet (exit 3) on a regression
    when asked to fail on one."""
    from asyncbench import compare
    from asyncbench.errors import ObjectiveNotMet, UsageError
    from asyncbench.experiments import read_run, registry
    from asyncbench.options import check_range

    check_range("--tolerance", tolerance, 0, 10)
    runs = []
    for path, name in ((baseline, "BASELINE"), (candidate, "CANDIDATE")):
        if not path.is_file():
            raise UsageError(f"{name} {str(path)!r} is not a file")
        try:
            runs.append(read_run(path))
        except OutputError as exc:
            raise UsageError(f"{name}: {exc}") from None
    base, cand = runs
    experiments = registry()
    for run, name in ((base, "BASELINE"), (cand, "CANDIDATE")):
        if not experiments[run.experiment].load_sweep:
            raise UsageError(f"{name} {str(run.csv_path)!r} is a {run.experiment} run: compare takes sweeps "
                             "(trap, semaphore, rate)")
    console = report.make_console()
    if base.experiment != cand.experiment:
        console.print(f"[yellow]warning: comparing a {base.experiment} run with a {cand.experiment} run[/]")
    from asyncbench.compare import differences

    differ = differences(base.meta, cand.meta)
    if differ:
        console.print(f"warning: the runs loaded different things ({'; '.join(differ)}): a change may be the "
                      "setup's, not the target's", style="yellow", markup=False, soft_wrap=True)
    levels = compare.compare(base.frame.to_dict("records"), cand.frame.to_dict("records"),
                             base.meta.get("rounds") or {}, cand.meta.get("rounds") or {}, tolerance)
    if not levels:
        raise UsageError(f"the two runs share no level (baseline: {sorted(base.frame['level'])}, "
                         f"candidate: {sorted(cand.frame['level'])})")
    experiment = experiments[cand.experiment]
    console.print(report.compare_table(levels, f"{base.stem} → {cand.stem} (tolerance {tolerance * 100:g} %)",
                                       experiment.step))
    verdict = compare.overall(levels)
    worse = [lv.level for lv in levels if lv.verdict == "worse"]
    line = {"worse": f"worse: the candidate regressed at {experiment.step} {', '.join(f'{v:,}' for v in worse)}",
            "better": "better: the candidate improved and regressed nowhere",
            "no change": "no change: every difference is within the tolerance or the runs' own spread"}[verdict]
    console.print(line, style={"worse": "bold red", "better": "bold green"}.get(verdict, "bold"))
    if out is not None:
        check_output_dir(out, "--out")
        from asyncbench.plots import compare_chart

        path = compare_chart(base, cand, out, f"compare-{base.stem}-vs-{cand.stem}", experiment.axis_label)
        console.print(f"chart:   {path}", soft_wrap=True)
    if fail_on_regression and verdict == "worse":
        raise ObjectiveNotMet(f"regression at {experiment.step} {', '.join(f'{v:,}' for v in worse)}")


# --- serve ---------------------------------------------------------------------------------------


def serve_target(*, tls: bool, tls_cert: Path | None, tls_key: Path | None, **settings: Any) -> None:
    """`asyncbench serve`: the embedded target on `host:port` until Ctrl-C or SIGTERM; over TLS
    with the given certificate, or a throwaway one whose CA is written for clients to trust."""
    import tempfile

    from asyncbench.errors import TargetError, UsageError
    from asyncbench.groups import check_pem
    from asyncbench.server import ServerConfig, run_on_best_loop, serve, throwaway_certificate

    if not settings.get("stall_after"):
        settings["stall"] = 0.0
    schedule = settings.pop("capacity_schedule", None)
    if schedule is not None:
        from asyncbench.options import parse_capacity_schedule

        settings["capacity_schedule"] = parse_capacity_schedule("--capacity-schedule", schedule)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert, the certificate, and --tls-key, its private key")
    if tls and tls_cert is not None:
        raise UsageError("--tls makes a throwaway certificate: give it, or --tls-cert and --tls-key, not both")
    ca_note = ""
    if tls_cert is not None and tls_key is not None:
        check_pem(tls_cert, "--tls-cert")
        check_pem(tls_key, "--tls-key")
        settings.update(tls_cert=str(tls_cert), tls_key=str(tls_key))
    elif tls:
        folder = Path(tempfile.mkdtemp(prefix="asyncbench-serve-tls-"))
        host = settings.get("host", "127.0.0.1")
        # A wildcard address is no name to certify: the names of this machine stand in for it.
        named = [] if host in ("", "0.0.0.0", "::") else [host]
        ca, cert, key = throwaway_certificate(folder, list(dict.fromkeys([*named, "localhost", "127.0.0.1", "::1"])))
        settings.update(tls_cert=str(cert), tls_key=str(key))
        ca_note = f"  trust it with: --cacert {ca}"
    config = ServerConfig(**settings)
    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def ready(url: str) -> None:
        limit = f", rate limit {config.rate_limit:g} req/s" if config.rate_limit else ""
        if config.rpm or config.tpm:
            limit += f", /v1/embeddings at {config.rpm:g} requests and {config.tpm:g} tokens a minute"
        if config.capacity_schedule:
            limit += ", capacity schedule " + ",".join(f"{t:g}:{c}" for t, c in config.capacity_schedule)
        print(
            f"asyncbench serve: listening on {url}  (capacity {config.capacity}, queue {config.queue}, "
            f"latency {config.latency:g} s ± {config.jitter:g}, error rate {config.error_rate:g}{limit})",
            flush=True,
        )
        print("  endpoints: any path (load), POST /embed, POST /v1/embeddings, GET /stats, DELETE /stats", flush=True)
        if ca_note:
            print(ca_note, flush=True)

    try:
        run_on_best_loop(serve(config, ready))
    except OSError as exc:
        raise TargetError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    print("asyncbench serve: stopped", flush=True)
