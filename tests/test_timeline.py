"""Every load run over time: the -timeline.csv (its sums are the level rows'), the HdrHistogram
log read back by the `hdrhistogram` package, the .hgrm distributions, the bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import read_csv, result_files, run_cli

from asyncbench.timeline import COLUMNS


def _timeline(results: Path, experiment: str) -> tuple[list[dict[str, str]], list[dict[str, str]], dict]:
    csv_path, json_path, _ = result_files(results, experiment)
    meta = json.loads(json_path.read_text())
    rows = read_csv(csv_path)
    timeline = read_csv(results / meta["files"]["timeline"])
    return rows, timeline, meta


def _assert_sums_are_the_rows(rows: list[dict[str, str]], timeline: list[dict[str, str]]) -> None:
    for row in rows:
        mine = [t for t in timeline if t["level"] == row["level"]]
        assert mine, row["level"]
        assert sum(int(t["successes"]) for t in mine) == int(row["successes"])
        assert sum(int(t["failures"]) for t in mine) == int(row["failures"])
        assert sum(int(t["sent"]) for t in mine) == int(row["requests"])
        times = [float(t["t_s"]) for t in mine]
        assert times == sorted(times) and int(mine[-1]["in_flight"]) == 0


def test_a_closed_loop_s_timeline_adds_up_to_its_rows_failures_too(tmp_path):
    # A server of 5 slots and no queue refuses most of level 60: failures in the timeline too.
    proc = run_cli("trap", "--levels", "1,60", "--requests-per-level", "300", "--server-capacity", "5",
                   "--server-queue", "0", "--interval", "0.2", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, _ = _timeline(tmp_path / "r", "trap")
    assert list(timeline[0]) == list(COLUMNS)
    assert int(rows[1]["failures"]) > 0
    _assert_sums_are_the_rows(rows, timeline)
    ok = [t for t in timeline if int(t["successes"])]
    assert all(0 < float(t["ok_latency_p50_s"]) <= float(t["ok_latency_p99_s"]) for t in ok)


def test_an_open_loop_s_timeline_has_an_interval_per_step_of_the_schedule(tmp_path):
    proc = run_cli("rate", "--rates", "100", "--duration", "2", "--interval", "0.5", "--no-plot",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, _ = _timeline(tmp_path / "r", "rate")
    _assert_sums_are_the_rows(rows, timeline)
    # 2 s of sends at 100/s in 0.5 s intervals: 50 due in each of the first four.
    assert [int(t["sent"]) for t in timeline[:4]] == [50, 50, 50, 50]
    assert [float(t["t_s"]) for t in timeline[:4]] == [0.5, 1.0, 1.5, 2.0]


def test_shards_merge_interval_by_interval(tmp_path):
    proc = run_cli("semaphore", "--limits", "4,20", "--requests", "400", "--processes", "2", "--interval", "0.25",
                   "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, _ = _timeline(tmp_path / "r", "semaphore")
    _assert_sums_are_the_rows(rows, timeline)


def test_the_hdr_log_reads_back_with_the_hdrhistogram_package(tmp_path):
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    log = tmp_path / "run.hlog"
    proc = run_cli("trap", "--levels", "5,20", "--requests-per-level", "200", "--interval", "0.1", "--hdr-log",
                   str(log), "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, _, meta = _timeline(tmp_path / "r", "trap")
    reader = HistogramLogReader(str(log), HdrHistogram(1, 3_600_000_000, 3))
    merged: dict[str, HdrHistogram] = {}
    while (interval := reader.get_next_interval_histogram()) is not None:
        tag = interval.get_tag()
        merged.setdefault(tag, HdrHistogram(1, 3_600_000_000, 3)).add(interval)
    assert set(merged) == {"level-5", "level-20"}
    for row in rows:
        hist = merged[f"level-{row['level']}"]
        assert hist.get_total_count() == int(row["successes"])
        # Microseconds; three significant digits on both sides.
        assert hist.get_value_at_percentile(99) / 1e6 == pytest.approx(float(row["ok_latency_p99_s"]), rel=0.01)
        assert hist.get_value_at_percentile(50) / 1e6 == pytest.approx(float(row["ok_latency_p50_s"]), rel=0.01)
    # And each level's percentile distribution, as HdrHistogram prints it, named in the sidecar.
    assert set(meta["hgrm"]) == {"level-5", "level-20"}
    for tag, name in meta["hgrm"].items():
        level = tag.removeprefix("level-")
        text = (tmp_path / "r" / name).read_text()
        assert text.split()[:4] == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        [row] = [r for r in rows if r["level"] == level]
        total = re.search(r"TotalCount\s*=\s*([0-9.]+)\]", text)
        assert total and float(total.group(1)) == int(row["successes"]), text[-200:]


@pytest.mark.parametrize(("args", "code", "named"), [
    (["--interval", "0"], 2, "--interval 0"),
    (["--interval", "abc"], 2, "--interval"),
    (["--hdr-log", "NOFOLDER/run.hlog"], 1, "NOFOLDER"),
])
def test_bad_values_are_named_and_nothing_is_sent(tmp_path, args, code, named):
    proc = run_cli("trap", "--levels", "1", *args, "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == code, proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert "pre-flight" not in proc.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_the_timeline_chart_in_the_run_in_plot_and_in_the_report(tmp_path):
    proc = run_cli("rate", "--rates", "50,150", "--duration", "1", "--interval", "0.25", "--results-dir",
                   str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "p").glob("rate-*-timeline.png"))) == 1
    again = run_cli("plot", str(tmp_path / "r"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "again").glob("rate-*-timeline.png"))) == 1
    page = run_cli("report", str(tmp_path / "r"), "-o", str(tmp_path / "page.html"))
    assert page.returncode == 0, page.stderr
    assert "alt='timeline chart'" in (tmp_path / "page.html").read_text()


def test_rate_stages_ramp_the_offered_rate_one_row_a_stage(tmp_path):
    # 200/s ramped to 800/s over 4 s, then held 1 s: each 0.5 s interval's sends (by when they
    # were due) follow the ramp's integral, whatever the machine's speed.
    proc = run_cli("rate", "--stages", "4s:800,1s:800", "--start-rate", "200", "--interval", "0.5", "--no-plot",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, meta = _timeline(tmp_path / "r", "rate")
    assert [(r["stage"], r["level"], float(r["stage_from_rps"])) for r in rows] == [("1", "800", 200.0),
                                                                                   ("2", "800", 800.0)]
    assert [int(r["requests"]) + int(r["dropped"]) for r in rows] == [2000, 800]
    for column in ("successes", "failures", "sent"):  # both stages aim at 800: their sums together
        assert sum(int(t[column]) for t in timeline) == sum(int(r[column if column != "sent" else "requests"])
                                                            for r in rows)

    def due(x: float) -> float:
        return 200 * x + 150 / 2 * x * x  # the integral of the ramp, 200 + 150 t

    ramp = [t for t in timeline if float(t["t_s"]) in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)]
    assert len(ramp) == 8
    for t in ramp:
        end = float(t["t_s"])
        expected = due(end) - due(end - 0.5)
        assert int(t["sent"]) == pytest.approx(expected, rel=0.05), (end, t["sent"], expected)
    assert set(meta["hgrm"]) == {"stage-1", "stage-2"}


@pytest.mark.parametrize(("stages", "named"), [
    ("10s", "'10s'"), ("10x:5", "'10x:5'"), ("10s:-1", "'10s:-1'"), ("0s:10", "no time"),
])
def test_bad_stages_exit_2_naming_them(tmp_path, stages, named):
    proc = run_cli("rate", "--stages", stages, "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr


def test_semaphore_stages_ramp_the_workers_one_row_a_stage(tmp_path):
    proc = run_cli("semaphore", "--stages", "1s:5,1s:30", "--interval", "0.25", "--no-plot",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, meta = _timeline(tmp_path / "r", "semaphore")
    assert [(r["stage"], r["level"], r["stage_from"]) for r in rows] == [("1", "5", "0"), ("2", "30", "5")]
    _assert_sums_are_the_rows(rows, timeline)
    first = max(int(t["in_flight"]) for t in timeline if t["level"] == "5")
    second = max(int(t["in_flight"]) for t in timeline if t["level"] == "30")
    assert first <= 5 < second <= 30  # never more workers than the ramp wants, and it grew
    assert set(meta["hgrm"]) == {"stage-1", "stage-2"}


def test_a_long_rate_writes_its_timeline_as_it_goes(tmp_path):
    import subprocess
    import sys
    import time

    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "asyncbench", "rate", "--rates", "50", "--duration", "8",
                             "--timeout", "0.5", "--interval", "0.5", "--no-plot", "--results-dir", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen_while_running = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            files = list(results.glob("*-timeline.csv"))
            if files:
                seen_while_running = max(seen_while_running, files[0].read_text().count("\n") - 1)
                if seen_while_running >= 2:
                    break
            time.sleep(0.05)  # polling a file another process writes; the assertion is on its content
        assert proc.poll() is None and seen_while_running >= 2  # rows before the level ended
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    rows, timeline, _ = _timeline(results, "rate")
    _assert_sums_are_the_rows(rows, timeline)
    assert [float(t["t_s"]) for t in timeline][:16] == [0.5 * (i + 1) for i in range(16)]


def test_adapt_writes_each_run_s_timeline_too(tmp_path):
    proc = run_cli("adapt", "--duration", "1.5", "--interval", "0.5", "--compare-static", "20", "--no-plot",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    _, json_path, _ = result_files(tmp_path / "r", "adapt")
    meta = json.loads(json_path.read_text())
    timeline = read_csv(tmp_path / "r" / meta["files"]["timeline"])
    assert {t["level"] for t in timeline} == {"1", "2"}  # the runs, by number: aimd, then static 20
    assert set(meta["hgrm"]) == {"aimd", "static-20"}
    for level, run in (("1", "aimd"), ("2", "static 20")):
        [totals] = [r for r in meta["runs"] if r["run"] == run]
        mine = [t for t in timeline if t["level"] == level]
        assert sum(int(t["successes"]) for t in mine) == totals["successes"]
        assert sum(int(t["failures"]) for t in mine) == totals["failures"]
