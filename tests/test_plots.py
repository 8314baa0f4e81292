"""Charts from hand-built results, and `asyncbench plot` on what users throw at it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import matplotlib.image
import pytest
from conftest import run_cli

from asyncbench.client import FetchResult
from asyncbench.experiments import read_run, run_charts
from asyncbench.metrics import LevelRecorder, LevelStats, RoundFacts, latency_quantiles, summarize
from asyncbench.results import ResultsWriter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _level(experiment: str, level: int, ok: int, shed: int, latency: float) -> tuple[LevelStats, list]:
    rec = LevelRecorder()
    for i in range(ok):
        lat = latency * (1 + i / max(1, ok))
        rec.add(FetchResult(True, 200, lat, 1, None, sent_at=0.0, done_at=lat))
    for _ in range(shed):
        rec.add(FetchResult(False, 503, 0.002, 1, "http_5xx", sent_at=0.0, done_at=0.002))
    return summarize(experiment, level, [(rec, RoundFacts(50.0, 20.0, 0.001))]), latency_quantiles([rec])


def write_run(folder: Path, experiment: str, stamp: str, shape: dict[int, tuple[int, int, float]],
              server: dict | None = None) -> Path:
    """A results set as the experiments write it, from hand-picked outcomes per level."""
    from datetime import datetime

    started = datetime.strptime(stamp, "%Y%m%d-%H%M%S")
    meta = {"experiment": experiment, "target_kind": "embedded", "target": "http://127.0.0.1:1/",
            "server": server or {"capacity": 100, "queue": 400, "latency": 0.05}, "config": {"min_success": 0.99}}
    with ResultsWriter(folder, experiment, LevelStats.columns(), meta, started, latency_file=True) as w:
        rows = []
        for level, (ok, shed, latency) in shape.items():
            row, quantiles = _level(experiment, level, ok, shed, latency)
            w.write_row(asdict(row))
            w.write_quantiles(level, quantiles)
            rows.append(row)
        best = max((r for r in rows if r.success_rate >= 0.99), key=lambda r: r.goodput_rps)
        w.write_metadata(status="complete", sweet_spot={"level": best.level})
    return w.csv_path


TRAP = {1: (1, 0, 0.05), 10: (10, 0, 0.06), 100: (100, 0, 0.08), 1000: (500, 500, 0.3)}
SEM = {10: (1000, 0, 0.05), 100: (1000, 0, 0.06), 500: (1000, 0, 0.25)}


def assert_png(path: Path) -> None:
    assert path.exists(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 800 and height >= 500  # 150 dpi: readable at 100 % zoom


def test_every_chart_of_a_run_is_a_valid_png(tmp_path):

    run = read_run(write_run(tmp_path / "results", "trap", "20260101-120000", TRAP))
    out = tmp_path / "plots"
    paths = run_charts(run, out)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"trap-20260101-120000-{c}.png"
                           for c in ("throughput", "latency", "success", "distribution"))
    for path in paths:
        assert_png(path)


def test_a_run_without_its_latency_file_still_charts(tmp_path):

    csv_path = write_run(tmp_path, "semaphore", "20260101-120000", SEM)
    csv_path.with_name(csv_path.stem + "-latency.csv").unlink()
    paths = run_charts(read_run(csv_path), tmp_path / "plots")
    assert len(paths) == 3 and all(p.exists() for p in paths)


def test_plot_compares_only_when_both_experiments_are_present(tmp_path):
    results = tmp_path / "results"
    write_run(results, "trap", "20260101-120000", TRAP)
    only_trap = run_cli("plot", str(results), "--out", str(tmp_path / "a"))
    assert only_trap.returncode == 0, only_trap.stderr
    assert not list((tmp_path / "a").glob("*comparison*"))
    assert "the same" not in only_trap.stdout

    write_run(results, "semaphore", "20260101-120100", SEM)
    both = run_cli("plot", str(results), "--out", str(tmp_path / "b"))
    assert both.returncode == 0, both.stderr
    [comparison] = list((tmp_path / "b").glob("*-comparison.png"))
    assert_png(comparison)
    # The lab's point: the trap's 1,000 requests at once against the same 1,000 through each limit.
    flat = " ".join(both.stdout.split())
    assert "the same 1,000 requests: all at once (trap) vs through a semaphore" in flat
    assert "1,000 at once 834 50.0" in flat  # goodput, success rate of the trap at 1,000
    for limit in ("limit 10", "limit 100", "limit 500"):
        assert limit in flat
    written = sorted((tmp_path / "b").glob("*.png"))
    assert len(written) == 9
    for path in written:  # the command lists every file it wrote
        assert str(path.relative_to(tmp_path / "b")) in both.stdout or path.name in both.stdout


def test_newest_run_is_used_unless_all(tmp_path):
    results = tmp_path / "results"
    write_run(results, "trap", "20260101-120000", TRAP)
    write_run(results, "trap", "20260102-120000", TRAP)
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    stems = {p.name.rsplit("-", 1)[0] for p in (tmp_path / "p").glob("trap-2026*.png")}
    assert stems == {"trap-20260102-120000"}
    overlay = run_cli("plot", str(results), "--out", str(tmp_path / "q"), "--all")
    assert overlay.returncode == 0, overlay.stderr
    for chart in ("goodput", "success", "latency"):
        assert_png(tmp_path / "q" / f"trap-all-{chart}.png")


def test_all_with_pipeline_runs_charts_them_without_overlays(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    header = ("experiment,input_mb,batch_size,concurrency,chunks,successes,failures,success_rate,batches,"
              "attempts,elapsed_s,throughput_cps,latency_p50_s,latency_p99_s,peak_traced_mb,peak_rss_mb,output")
    for stamp, tput in (("20260101-120000", 300), ("20260101-130000", 320)):
        rows = [f"pipeline,1,50,{c},1024,1024,0,1,21,1024,3.2,{tput * c / 25},0.06,0.08,{0.5 + c / 50},52,x.jsonl"
                for c in (10, 25, 50)]
        (results / f"pipeline-{stamp}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    write_run(results, "trap", "20260101-120000", TRAP)
    write_run(results, "trap", "20260101-140000", TRAP)
    out = run_cli("plot", str(results), "--all", "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert_png(tmp_path / "p" / "pipeline-20260101-130000-concurrency.png")
    assert (tmp_path / "p" / "trap-all-goodput.png").exists()
    assert not list((tmp_path / "p").glob("pipeline-all-*"))


def test_malformed_and_foreign_csvs_are_skipped_with_a_warning(tmp_path):
    results = tmp_path / "results"
    write_run(results, "trap", "20260101-120000", TRAP)
    (results / "notes.csv").write_text("name,age\nann,3\n")
    (results / "trap-20260101-130000.csv").write_text("experiment,level\ntrap,\x00\x01garbage\n")
    (results / "semaphore-20260101-140000.csv").write_text("")
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    for name in ("notes.csv", "trap-20260101-130000.csv", "semaphore-20260101-140000.csv"):
        assert name in out.stderr
    assert "Traceback" not in out.stderr
    assert len(list((tmp_path / "p").glob("*.png"))) == 4


@pytest.mark.parametrize("make", ["missing", "empty", "only-foreign"])
def test_nothing_to_plot_exits_1(tmp_path, make):
    folder = tmp_path / "results"
    if make != "missing":
        folder.mkdir()
    if make == "only-foreign":
        (folder / "x.csv").write_text("a,b\n1,2\n")
    out = run_cli("plot", str(folder), "--out", str(tmp_path / "p"))
    assert out.returncode == 1
    assert str(folder) in out.stderr
    assert "Traceback" not in out.stderr


def test_experiments_render_their_charts_unless_no_plot(tmp_path):
    out = run_cli("trap", "--levels", "1,10", "--cooldown", "0", "--results-dir", str(tmp_path / "r"),
                  "--plots-dir", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    charts = sorted((tmp_path / "p").glob("*.png"))
    assert len(charts) == 5  # throughput, latency, success, distribution, timeline
    for chart in charts:
        assert_png(chart)
        assert chart.name in out.stdout
    quiet = run_cli("semaphore", "--limits", "5", "--requests", "20", "--cooldown", "0", "--no-plot",
                    "--results-dir", str(tmp_path / "r2"), "--plots-dir", str(tmp_path / "p2"))
    assert quiet.returncode == 0, quiet.stderr
    assert not (tmp_path / "p2").exists() or not list((tmp_path / "p2").iterdir())


# --- what the charts show, read off the figures themselves -------------------------------------


@pytest.fixture
def figures(monkeypatch):
    """Every figure a chart function draws, captured just before it is saved."""
    from asyncbench import plots

    captured = []
    real_save = plots._save

    def save(fig, out_dir, name):
        captured.append((name, [ax for ax in fig.axes], [t.get_text() for t in fig.texts]))
        for ax in fig.axes:
            ax._captured_labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
            leg = ax.get_legend()
            ax._captured_legend = [t.get_text() for t in leg.get_texts()] if leg else []
        return real_save(fig, out_dir, name)

    monkeypatch.setattr(plots, "_save", save)
    return captured


def _rewrite_csv(csv_path: Path, column: str, values: dict[int, str]) -> None:
    import csv

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if int(r["level"]) in values:
            r[column] = values[int(r["level"])]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_client_limited_levels_and_an_unreliable_sweet_spot_are_marked(tmp_path, figures):
    import json


    csv_path = write_run(tmp_path, "trap", "20260101-000000", TRAP)
    _rewrite_csv(csv_path, "client_limited", {100: "true", 1000: "true"})
    meta_path = csv_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sweet_spot"] = {"level": 100, "reliable": False}
    meta_path.write_text(json.dumps(meta))
    run_charts(read_run(csv_path), tmp_path / "p")
    for name, axes, _ in figures:
        if name.endswith(("-throughput", "-latency", "-success")):
            legend = " | ".join(axes[0]._captured_legend)
            assert "client-limited" in legend, name
            assert "sweet spot (100), unreliable" in legend, name
            rings = [c for c in axes[0].collections if len(c.get_offsets()) == 2]
            assert [float(x) for x, _ in rings[0].get_offsets()] == [100.0, 1000.0]


def test_axis_labels_read_like_the_tables():
    from asyncbench import plots
    from asyncbench.report import fmt_mb

    assert plots._thousands(1200) == "1,200" and plots._thousands(50) == "50" and plots._thousands(0.5) == "0.5"
    assert fmt_mb(1.41926) == "1.42" and fmt_mb(8.0) == "8" and fmt_mb(0.01) == "0.01"
    assert len(plots._log_ticks(52, 80)) >= 3  # a narrow range still gets three labels
    assert len(plots._log_ticks(1, 2000)) >= 8
    assert plots._log_ticks(1, 2000)[:4] == [1, 2, 5, 10]


def test_distribution_levels_are_told_apart(tmp_path, figures):
    from asyncbench import plots

    shape = {lv: (lv, 0, 0.05 + lv / 10_000) for lv in (1, 5, 10, 25, 50, 100, 200, 500, 1000, 2000)}
    plots.distribution_chart(read_run(write_run(tmp_path, "trap", "20260101-000000", shape)), tmp_path / "p")
    [(_, [ax], _)] = figures
    styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in ax.get_lines()]
    assert len(styles) == 10 and len(set(styles)) == 10
    assert len({color for color, _, _ in styles[:7]}) == 7  # neighbouring levels: distinct hues


def test_overlays_do_not_draw_solid_lines_across_levels_a_run_never_measured(tmp_path, figures):
    from asyncbench import plots

    a = read_run(write_run(tmp_path, "trap", "20260101-000000", {1: (1, 0, 0.05), 1000: (1000, 0, 0.3)}))
    b = read_run(write_run(tmp_path, "trap", "20260101-000001", TRAP))
    plots.overlay_charts([a, b], tmp_path / "p", "concurrency (simultaneous requests)")
    ax = figures[0][1][0]
    segments = [line for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() != "None"]
    spanning = [line for line in segments if list(line.get_xdata()) == [1.0, 1000.0]]
    assert spanning and all(line.get_linestyle() == ":" for line in spanning)
    assert any(line.get_linestyle() == "-" for line in segments)


def test_a_pipeline_with_nothing_swept_draws_no_one_dot_chart(tmp_path):
    out = run_cli("pipeline", "--generate-mb", "0.02", "--cooldown", "0", "--results-dir", str(tmp_path / "r"),
                  "--plots-dir", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    assert "charts:  none" in out.stdout
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


def test_comparison_without_the_same_requests_says_what_it_compares(tmp_path):
    results = tmp_path / "results"
    write_run(results, "trap", "20260101-120000", TRAP)
    write_run(results, "semaphore", "20260101-120100", {10: (500, 0, 0.05), 100: (500, 0, 0.06)})
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "trap level N (N requests at once) vs semaphore limit N (500 requests)" in flat
    assert "give semaphore --requests equal to a trap level" in flat


def test_trap_and_semaphore_are_compared_only_when_they_loaded_the_same_thing(tmp_path):
    results = tmp_path / "results"
    write_run(results, "trap", "20260101-120000", TRAP)
    write_run(results, "semaphore", "20260101-120100", SEM, server={"capacity": 100, "queue": 400, "latency": 0.02})
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "are not compared: they loaded different things (server latency: 0.05 vs 0.02)" in flat
    assert "the same 1,000 requests" not in flat and not list((tmp_path / "p").glob("*comparison*"))
    page = tmp_path / "report.html"
    out = run_cli("report", str(results), "-o", str(page))
    assert out.returncode == 0, out.stderr
    text = page.read_text()
    assert "not compared" in text and "the trap against the semaphore" not in text.lower().split("</nav>")[0]


@pytest.mark.parametrize(("column", "value"), [("goodput_rps", "nan"), ("latency_p99_s", "inf"), ("level", "1e309")])
def test_values_asyncbench_never_writes_are_refused_by_name(column, value, tmp_path):
    results = tmp_path / "results"
    path = write_run(results, "semaphore", "20260101-120100", SEM)
    good = tmp_path / "good"
    write_run(good, "semaphore", "20260101-120100", SEM)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(column)] = value
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 1 and f"({column} = " in out.stderr and "Traceback" not in out.stderr
    out = run_cli("report", str(results), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 1 and f"({column} = " in out.stderr
    [base] = good.glob("semaphore-*[0-9].csv")
    out = run_cli("compare", str(base), str(path), "--fail-on-regression", "--no-plot")
    assert out.returncode == 2 and f"({column} = " in out.stderr and "internal error" not in out.stderr


def test_a_sidecar_of_the_wrong_shape_is_read_for_what_it_holds(tmp_path):
    import json

    results = tmp_path / "results"
    path = write_run(results, "semaphore", "20260101-120100", SEM)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(rounds=7, usl="good", sweet_spot={"level": "x"}, server=[1], config="c")
    sidecar.write_text(json.dumps(meta))
    out = run_cli("compare", str(path), str(path), "--no-plot")
    assert out.returncode == 0 and "no change" in out.stdout, out.stderr
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
